"""One settings object for the whole product.

Sources, highest priority first: keyword arguments, ``ROADCAST_*`` environment
variables, a TOML file (``ROADCAST_CONFIG``, else ``./roadcast.toml`` when present),
defaults. Secrets are ``SecretStr``: they never appear in logs, reprs or errors.

>>> Settings(bootstrap_servers="kafka-1:9092,kafka-2:9092").kafka_config()["bootstrap_servers"]
['kafka-1:9092', 'kafka-2:9092']
"""

from __future__ import annotations

import base64
import difflib
import ipaddress
import os
import re
import string
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from models.nn.device_names import device_spec

ENV_PREFIX = "ROADCAST_"
DEFAULT_CACHE = Path.home() / ".cache" / "roadcast"
# ROADCAST_* variables that are not settings: the TOML file, the CLI's --debug, and the
# test suite's and benchmarks' own knobs.
OTHER_VARIABLES = frozenset(
    f"{ENV_PREFIX}{name}" for name in ("CONFIG", "DEBUG", "TEST_WAIT_S", "BENCH_RESULTS")
)
# Kafka's legal topic (and, here, group) names: 1-249 of these characters, not . or ..
_KAFKA_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
# A bootstrap server: [SCHEME://]HOST:PORT, HOST a name, an IPv4 address or a bracketed
# IPv6 one (the Kafka clients ignore the scheme).
_SCHEME = re.compile(r"^[A-Za-z_]+://")
_HOST = re.compile(r"\[[0-9A-Fa-f:.]+(%[\w.-]+)?\]|[\w.-]+")
_BARE_IPV6 = re.compile(r"[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(%[\w.-]+)?")
_PORT = re.compile(r"\d+")
# A host name: dot-separated labels of letters, digits, - and _ (compose service names),
# neither starting nor ending with -; a final dot allowed.
_LABEL = r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"{_LABEL}(\.{_LABEL})*\.?")
SHOWN_CHARS = 40  # an echoed value is cut after this many characters


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
    # Producers' compression.type (consumers read every codec whatever this is)
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"
    # Local state
    data_dir: Path = DEFAULT_CACHE / "data"
    model_dir: Path = DEFAULT_CACHE / "models"
    store_path: Path = DEFAULT_CACHE / "roadcast.sqlite"
    device: str = "auto"  # auto, cpu, cuda or cuda:N (models.nn.device_names)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Alert delivery (pipeline/alerts/delivery.py): off while no URL is set
    alertmanager_urls: str = ""
    webhook_urls: str = ""
    webhook_secret: SecretStr | None = None
    alert_timeout_s: float = Field(10.0, gt=0, le=3600, allow_inf_nan=False)
    alert_resend_interval_s: float = Field(
        60.0,
        ge=1,
        le=86400,
        allow_inf_nan=False,
        description="Seconds between resends of a firing alert to Alertmanager (valid for 4 "
        "intervals). At least 1 s: each resend is a request per firing alert, and "
        "Alertmanager's own timers (group_wait, group_interval) count in seconds, so shorter "
        "intervals (a typo of ms for s) only flood it.",
    )
    alert_generator_url: str = "roadcast://alerts/{alert_id}"
    # Forecasts on Kafka (pipeline/kafka/forecast_wire.py): v1 a JSON record per sensor
    # and model, v2 one compact frame per model and tick (pipeline/kafka/frames.py)
    forecast_wire: Literal["v1", "v2"] = "v1"
    # Training fan-out (flows/fanout.py): a Dask scheduler address, "local" for a
    # LocalCluster, unset for the train flow's sequential fits
    dask_address: str | None = None
    dask_fallback_local: bool = False  # an address that does not answer: use a LocalCluster
    # deadline to reach the scheduler
    dask_timeout_s: float = Field(10.0, gt=0, le=3600, allow_inf_nan=False)
    # The service's HTTP endpoints (pipeline/service/health.py): /metrics for Prometheus,
    # /healthz and /readyz; 9478: in the exporters' range 9100-9999, unused by the compose
    # file's other services (docs/decisions.md, "Service metrics")
    metrics_enabled: bool = True
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9478
    # Drift watcher (flows/drift_flow.py, pipeline/drift.py): live MAE over the last
    # window of ticks against the validation MAE and the ticks before it; the defaults
    # were chosen on validation data (benchmarks/drift.py, docs/decisions.md)
    drift_ratio: float = Field(2.0, gt=1, allow_inf_nan=False)
    drift_baseline_ratio: float = Field(2.1, gt=1, allow_inf_nan=False)
    drift_min_count: int = Field(500, ge=1, le=10**7)
    drift_window_ticks: int = Field(24, ge=1, le=10**7)
    drift_baseline_ticks: int = Field(72, ge=1, le=10**7)
    # no second event for the same version sooner
    drift_cooldown_h: float = Field(24.0, ge=0, le=24 * 365, allow_inf_nan=False)

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        return device_spec(value).group(0)

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, value: str) -> str:
        return bootstrap_servers(value)

    @field_validator("topic_readings", "topic_dlq", "topic_forecasts", "topic_alerts")
    @classmethod
    def _topic(cls, value: str) -> str:
        return _kafka_name(value, "topic")

    @field_validator("consumer_group")
    @classmethod
    def _group(cls, value: str) -> str:
        return _kafka_name(value, "consumer group")

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        topics = list(self.topics.values())
        if len(set(topics)) < len(topics):
            raise ValueError(f"the four topics must differ, got {self.topics}")
        sasl = self.security_protocol.startswith("SASL") and self.sasl_mechanism != "OAUTHBEARER"
        if sasl and (not self.sasl_username or self.sasl_password is None):
            raise ValueError(
                f"{self.security_protocol} needs ROADCAST_SASL_USERNAME and ROADCAST_SASL_PASSWORD"
            )
        if self.security_protocol.endswith("SSL"):
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
                path = getattr(self, name)
                if path is not None and (why := _not_a_file(Path(path).expanduser())):
                    raise ValueError(f"{ENV_PREFIX}{name.upper()}: {why}")
            if self.ssl_keyfile is not None and self.ssl_certfile is None:
                raise ValueError("ROADCAST_SSL_KEYFILE needs ROADCAST_SSL_CERTFILE")
        return self

    @field_validator("alertmanager_urls", "webhook_urls")
    @classmethod
    def _urls(cls, value: str, info: ValidationInfo) -> str:
        urls = [u.strip() for u in value.split(",") if u.strip()]
        for url in urls:
            if problem := url_problem(url, alertmanager=info.field_name == "alertmanager_urls"):
                raise ValueError(f"{problem}, got {shown_url(url)}")
        return ",".join(urls)

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            text = value.get_secret_value().removeprefix("whsec_")
            try:
                key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
            except ValueError:
                key = b""
            if len(key) < 16:
                raise ValueError(
                    "expected whsec_ followed by the base64 of at least 16 random bytes "
                    "(a Standard Webhooks secret; see the README)"
                )
        return value

    @field_validator("alert_generator_url")
    @classmethod
    def _generator_url(cls, value: str) -> str:
        parsed = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(value)]
        fields = {f for f, _, _ in parsed if f is not None}
        if any(spec or conv for f, spec, conv in parsed if f is not None):
            raise ValueError(f"placeholders take no conversion or format spec, got {shown(value)}")
        if not fields <= {"sensor", "detector", "alert_id"}:
            raise ValueError(
                "placeholders may be {sensor}, {detector}, {alert_id}; got "
                + ", ".join(shown(f) for f in sorted(fields))
            )
        sample = value.format(sensor="s", detector="d", alert_id="a")
        if not _ABSOLUTE_URI.fullmatch(sample):  # Alertmanager refuses every alert otherwise
            raise ValueError(
                "expected an absolute URI such as https://grafana.example/d/x?var-sensor="
                f"{{sensor}} (a scheme, no spaces, %XX escapes only), got {shown(value)}"
            )
        return value

    @field_validator("dask_address")
    @classmethod
    def _dask_address(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if value.lower() == "local":
            return "local"
        scheme, sep, rest = value.partition("://")
        if not sep:
            scheme, rest = "tcp", value
        host, colon, port = rest.rpartition(":")
        expected = f"expected local or [tcp://]HOST:PORT of a Dask scheduler, got {shown(value)}"
        if scheme.lower() not in ("tcp", "tls", "ws", "wss") or not _HOST.fullmatch(host):
            if colon and _BARE_IPV6.fullmatch(host):  # Dask would misread it too
                raise ValueError(f"write an IPv6 address in brackets, [ADDR]:PORT: {shown(value)}")
            raise ValueError(expected)
        if not (port.isascii() and _PORT.fullmatch(port)):
            raise ValueError(f"{expected} (the port must be a number)")
        if not 1 <= int(port) <= 65535:
            raise ValueError(f"port {shown(int(port))} of {shown(value)} is outside 1-65535")
        return f"{scheme.lower()}://{rest}" if sep else value

    @field_validator("metrics_port")
    @classmethod
    def _metrics_port(cls, value: int) -> int:
        if not 1 <= value <= 65535:
            raise ValueError(f"port {shown(value)} is outside 1-65535")
        return value

    @field_validator("metrics_host")
    @classmethod
    def _metrics_host(cls, value: str) -> str:
        host = value.strip().removeprefix("[").removesuffix("]")
        if not host or any(c.isspace() or c in "/?#@" for c in host):
            raise ValueError(f"expected an address to listen on, e.g. 0.0.0.0, got {shown(value)}")
        return host

    @field_validator(
        "metrics_port", "alert_timeout_s", "alert_resend_interval_s", "dask_timeout_s",
        "drift_ratio", "drift_baseline_ratio", "drift_min_count", "drift_window_ticks",
        "drift_baseline_ticks", "drift_cooldown_h", mode="before",
    )  # fmt: skip
    @classmethod
    def _not_boolean(cls, value: Any) -> Any:
        if isinstance(value, bool):  # a TOML true would otherwise count as 1
            raise ValueError(f"expected a number, got {str(value).lower()}")
        return value

    @field_validator("data_dir", "model_dir", "store_path", mode="before")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError("the path is empty")
        return value

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
        toml_file = toml_path()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file:
            sources.append(InitSettingsSource(settings_cls, read_toml(Path(toml_file))))
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


def read_toml(path: Path) -> dict[str, Any]:
    """The table of a TOML settings file, which may start with a UTF-8 byte order mark."""
    name = shown(path)
    if why := _not_a_file(path):
        raise SettingsError(f"{ENV_PREFIX}CONFIG: {why}")
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{name}: invalid TOML: {exc}") from None
    except RecursionError:  # arrays or inline tables nested past Python's recursion limit
        raise SettingsError(f"{name}: invalid TOML: nested too deeply") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{name}: cannot read it ({exc})") from None
    seen: dict[str, str] = {}
    for key in table:  # settings' names ignore case, so one of these would silently win
        if (other := seen.setdefault(key.lower(), key)) != key:
            raise SettingsError(f"{name}: {shown(other)} and {shown(key)} name the same setting")
    return table


def _not_a_file(path: Path) -> str | None:
    """Why ``path`` is no file to read (``no such file NAME``, ``NAME is a folder, not a
    file``, ...), or None when it is one."""
    if not str(path).strip() or str(path) == ".":
        return "empty; name a file"
    name = shown(path)
    try:
        if path.is_file():
            return None
        if path.is_dir():
            return f"{name} is a folder, not a file"
        return f"{name} is not a regular file" if path.exists() else f"no such file {name}"
    except OSError:  # a name too long, for one
        return f"no such file {name}"


def shown(value: object) -> str:
    """``value`` for an error message, cut after ``SHOWN_CHARS`` characters with an
    ellipsis; a string is quoted, anything else (a path, a number) is not."""
    text = value if isinstance(value, str) else str(value)
    cut = text[:SHOWN_CHARS] + ("..." if len(text) > SHOWN_CHARS else "")
    return repr(cut) if isinstance(value, str) else cut


# RFC 3986's absolute URI, loosely: a scheme, then printable ASCII with valid escapes.
_ABSOLUTE_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:(?:[!#-$&-;=?-~]|%[0-9A-Fa-f]{2})+")


def _kafka_name(value: str, what: str) -> str:
    name = value.strip()
    if not name:
        raise ValueError(f"the {what} name is empty")
    if not _KAFKA_NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(
            f"{shown(name)} is not a legal {what} name (1-249 of A-Z a-z 0-9 . _ -, not . or ..)"
        )
    if what == "topic" and name.startswith("__"):
        raise ValueError(f"{shown(name)}: topic names starting with __ are Kafka's internal ones")
    return name


def _closest(name: str, candidates: list[str]) -> str:
    match = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f"; did you mean {match[0]}?" if match else ""


def _setting_hint(key: str, fields: list[str]) -> str:
    """The closest setting to an unknown key; a key spelled as its variable
    (``ROADCAST_STORE_PATH``) gets the setting's own name."""
    name = key.lower()
    bare = name.removeprefix(ENV_PREFIX.lower())
    if bare and bare != name:
        return f"{_closest(bare, fields)} (a TOML key has no {ENV_PREFIX} prefix)"
    return _closest(name, fields)


def unknown_variables(environ: dict[str, str] | None = None) -> list[str]:
    """One line per ``ROADCAST_*`` variable that is not a setting, with the closest name."""
    env = os.environ if environ is None else environ
    known = [f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields]
    lines = []
    for variable in sorted(env):
        upper = variable.upper()
        if upper.startswith(ENV_PREFIX) and upper not in known and upper not in OTHER_VARIABLES:
            suggestion = _closest(upper, [*known, *OTHER_VARIABLES])
            lines.append(f"{variable}: not a roadcast setting{suggestion}")
    return lines


def load_settings(given_as: Mapping[str, str] | None = None, /, **overrides: Any) -> Settings:
    """Settings from the environment (and TOML file), with ``overrides`` on top.

    Raises :class:`SettingsError`: one line, or a line per invalid field, each naming the
    ``ROADCAST_`` variable to fix, the TOML key, or for an override what ``given_as``
    calls it (a command's option, ``{"bootstrap_servers": "--bootstrap"}``), else
    ``FIELD (as given)``; for a misspelled variable or TOML key, the closest valid name.
    Secret values are never echoed.
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    lines = unknown_variables()
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        fields = list(Settings.model_fields)
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else ""
            if err["type"] == "extra_forbidden":
                lines.append(f"unknown setting {shown(field)}{_setting_hint(field, fields)}")
            else:
                message = str(err["msg"]).removeprefix("Value error, ") + _unit(field)
                where = _source(field, overrides, given_as or {})
                lines.append(f"{where}: {message}" if field else message)
    else:
        if not lines:
            return settings
    if len(lines) == 1:
        raise SettingsError(f"invalid settings: {lines[0]}")
    raise SettingsError("invalid settings:\n  " + "\n  ".join(lines))


def _unit(field: str) -> str:
    """The unit a numeric setting is read in, named by its suffix (``_s``: seconds)."""
    return " (the value is in seconds, e.g. 30)" if field.endswith("_s") else ""


def _source(field: str, overrides: dict[str, Any], given_as: Mapping[str, str]) -> str:
    """Where the value of ``field`` came from, as the user would find it: the command line
    (the option ``given_as`` names), the ``ROADCAST_`` variable, or the TOML file's key."""
    variable = f"{ENV_PREFIX}{field.upper()}"
    if field in overrides:
        return given_as.get(field) or f"{field} (as given)"
    if variable in os.environ:
        return variable
    toml = toml_path()
    return f"{field} in {shown(toml)}" if toml else variable


def toml_path() -> str | None:
    """The TOML settings file: ``ROADCAST_CONFIG``, else ``roadcast.toml`` here if present."""
    return os.environ.get(f"{ENV_PREFIX}CONFIG") or (
        "roadcast.toml" if Path("roadcast.toml").is_file() else None
    )


def _valid_host(host: str) -> bool:
    """Whether ``host`` (a URL's host, IDNA-encoded, without brackets) is a hostname, an
    IPv4 address or an IPv6 one. A name's last label is not all digits (``1.2.3``)."""
    if ":" in host:
        try:
            ipaddress.IPv6Address(unquote(host))  # a zone id comes as %25 in a URL
        except ValueError:
            return False
        return True
    if _HOSTNAME.fullmatch(host) is None or len(host.rstrip(".")) > 253:
        return False
    if host.rstrip(".").rpartition(".")[2].isdigit():
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
    return True


def url_problem(url: str, *, alertmanager: bool = False) -> str | None:
    """Why ``url`` cannot be an alert receiver's address, or None. The reason never
    repeats the URL (its user info, path or query may hold a secret)."""
    import httpx

    try:
        parts = urlsplit(url)
    except ValueError:  # a bracketed host that is no IPv6 address
        return "not a usable URL (the host in [] is not an IPv6 address)"
    try:
        port_ok = parts.port != 0  # .port raises for one not a number in 0-65535
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "expected http(s)://HOST[:PORT][/PATH][,...]"
    if not port_ok:
        if (port := _url_port(parts.netloc)) is not None:
            return f"port {port} is outside 1-65535"
        return "expected http(s)://HOST[:PORT][/PATH][,...] (the port must be a number)"
    try:
        host = httpx.Request("POST", url).url.raw_host.decode("ascii")
    except (httpx.InvalidURL, UnicodeError, ValueError) as exc:
        return f"not a usable URL ({type(exc).__name__}: {exc})"
    if not _valid_host(host):
        return "the host is not a valid hostname, IPv4 address or [IPv6] address"
    path = parts.path.rstrip("/")
    if alertmanager and "/api/" in f"{path}/" and not path.endswith("/api/v2/alerts"):
        return (
            "give Alertmanager's address (http://HOST:9093) or its /api/v2/alerts, not another "
            "path under /api: roadcast speaks Alertmanager's API v2"
        )
    return None


def shown_url(url: str) -> str:
    """``scheme://host[:port]``, then ``/...`` when the URL goes on: a URL without the
    parts that may hold a secret (user info, path, query)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "an address that is not a URL"
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        port = f":{_url_port(parts.netloc) or '?'}"
    if not parts.scheme or not parts.hostname:
        return "an address without scheme and host"
    more = "/..." if parts.path.strip("/") or parts.query or parts.fragment else ""
    return f"{parts.scheme}://{parts.hostname}{port}{more}"


def _url_port(netloc: str) -> str | None:
    """The port of a URL's ``netloc`` as written and cut as :func:`shown` cuts it; None
    unless it is digits."""
    host_port = netloc.rpartition("@")[2].rpartition("]")[2]  # past user info, [IPv6]
    port = host_port.rpartition(":")[2] if ":" in host_port else ""
    return shown(port)[1:-1] if port.isascii() and port.isdigit() else None


def bootstrap_servers(value: str) -> str:
    """``HOST:PORT[,HOST:PORT...]`` checked and normalised (no spaces, no empty items).

    Raises
    ------
    ValueError
        Naming the server that is not ``HOST:PORT`` or whose port is out of range.
    """
    servers = [s.strip() for s in value.split(",") if s.strip()]
    for server in servers:
        host, sep, port = _SCHEME.sub("", server).rpartition(":")
        if not sep or not _HOST.fullmatch(host) or not _PORT.fullmatch(port):
            if _BARE_IPV6.fullmatch(host):  # Kafka clients would read it all as the host
                raise ValueError(f"write an IPv6 address in brackets, [ADDR]:PORT: {shown(server)}")
            raise ValueError(f"expected HOST:PORT[,HOST:PORT...], got {shown(server)}")
        if not 1 <= int(port) <= 65535:
            raise ValueError(f"port {shown(int(port))} of {shown(server)} is outside 1-65535")
    if not servers:
        raise ValueError("at least one HOST:PORT is needed")
    return ",".join(servers)
