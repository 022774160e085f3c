"""One settings object for the whole product.

Sources, highest priority first: keyword arguments, ``ROADCAST_*`` environment
variables, a TOML file (``ROADCAST_CONFIG``, else ``./roadcast.toml`` when present),
defaults. Secrets are ``SecretStr``: they never appear in logs, reprs or errors.

>>> Settings(bootstrap_servers="kafka-1:9092,kafka-2:9092").kafka_config()["bootstrap_servers"]
['kafka-1:9092', 'kafka-2:9092']
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "ROADCAST_"
DEFAULT_CACHE = Path.home() / ".cache" / "roadcast"


class SettingsError(ValueError):
    """Invalid settings: the message names the environment variable to fix."""


class Settings(BaseSettings):
    """roadcast settings (see the README's "Configuration" section)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    # Kafka
    bootstrap_servers: str = "127.0.0.1:9092"
    topic_readings: str = "roadcast.readings"
    topic_dlq: str = "roadcast.readings.dlq"
    topic_forecasts: str = "roadcast.forecasts"
    topic_alerts: str = "roadcast.alerts"
    consumer_group: str = "roadcast"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_password: SecretStr | None = None
    ssl_check_hostname: bool = True
    # Local state
    data_dir: Path = DEFAULT_CACHE / "data"
    model_dir: Path = DEFAULT_CACHE / "models"
    store_path: Path = DEFAULT_CACHE / "roadcast.sqlite"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",") if s.strip()]
        for server in servers:
            host, sep, port = server.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected HOST:PORT[,HOST:PORT...], got {server!r}")
        if not servers:
            raise ValueError("at least one HOST:PORT is needed")
        return ",".join(servers)

    @field_validator("data_dir", "model_dir", "store_path")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return Path(os.path.expanduser(str(value)))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = os.environ.get(f"{ENV_PREFIX}CONFIG") or (
            "roadcast.toml" if Path("roadcast.toml").is_file() else None
        )
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file:
            if not Path(toml_file).is_file():
                raise SettingsError(f"{ENV_PREFIX}CONFIG: no such file {toml_file}")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(toml_file)))
        return tuple(sources)

    def kafka_config(self) -> dict[str, Any]:
        """Connection and security keyword arguments for kafka-python clients."""
        config: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol.startswith("SASL"):
            config["sasl_mechanism"] = self.sasl_mechanism or "PLAIN"
            config["sasl_plain_username"] = self.sasl_username
            if self.sasl_password is not None:
                config["sasl_plain_password"] = self.sasl_password.get_secret_value()
        if self.security_protocol.endswith("SSL"):
            config["ssl_check_hostname"] = self.ssl_check_hostname
            for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
                if (path := getattr(self, key)) is not None:
                    config[key] = str(path)
            if self.ssl_password is not None:
                config["ssl_password"] = self.ssl_password.get_secret_value()
        return config

    @property
    def topics(self) -> dict[str, str]:
        return {
            "readings": self.topic_readings,
            "dlq": self.topic_dlq,
            "forecasts": self.topic_forecasts,
            "alerts": self.topic_alerts,
        }


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment (and TOML file), with ``overrides`` on top.

    Raises :class:`SettingsError` with one line per invalid field, each naming the
    ``ROADCAST_`` variable to fix; secret values are never echoed.
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            lines.append(f"{ENV_PREFIX}{field.upper()}: {err['msg']}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None
