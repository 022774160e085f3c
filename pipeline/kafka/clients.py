"""kafka-python clients built from :class:`~pipeline.settings.Settings`.

Every client gets the connection and security options of ``settings.kafka_config()``
plus defaults chosen for a streaming service, measured against the embedded Tansu
broker and kafka-python 3.0 on a 2-core machine (``benchmarks/kafka_io.py``):

- Consumers: ``session_timeout_ms=6000`` and ``heartbeat_interval_ms=1000``. Joining a
  group takes about half the session timeout with Tansu (23 s with kafka-python's
  45 s default, 3 s with 6 s); 6 s is also the smallest value a stock Apache Kafka
  accepts (``group.min.session.timeout.ms``). ``fetch_max_wait_ms=20`` instead of 500:
  a quiet topic otherwise adds up to half a second to every tick's latency.
  ``enable_auto_commit=False``: the service commits only after it has published and
  stored (at-least-once). ``auto_offset_reset="earliest"``: a new group reads what is
  already there instead of silently skipping it. ``allow_auto_create_topics=False``: a
  topic a consumer asks for is not created with the broker's defaults (partitions,
  retention); :func:`ensure_topics` creates the project's topics with their settings.
  ``isolation_level="read_committed"``: records of a transaction their producer aborted
  (Kafka Connect or Flink with exactly-once) are never read as readings; without
  transactions it reads exactly what ``read_uncommitted`` reads. The embedded Tansu broker
  accepts transactions but returns aborted records to both levels (checked with
  kafka-python 3.0.12: abort two records, commit one, read three either way), so only a
  real Kafka cluster filters them.
- Producers: ``linger_ms=5`` and ``batch_size=256 KiB`` batch a replay's burst into
  fewer requests at the cost of at most 5 ms latency. kafka-python 3.0 already
  defaults to ``acks="all"`` with the idempotent producer, which we keep.

Checksums: kafka-python computes a CRC32C over every record batch it produces and (with
``check_crcs``) consumes. Without the ``crc32c`` package (``kafka-python[crc32c]``) it
falls back to pure Python at about 6 MB/s, which caps 1 KiB messages near 5,000/s on
either side; with it, the same benchmark reads about ten times faster.
:func:`crc32c_backend` says which one is in use; the factories log a warning once when
it is the slow one.

Any default can be overridden per call with keyword arguments (kafka-python's names).
kafka-python 3.0 has no ``NoBrokersAvailable``: an unreachable bootstrap raises
``kafka.errors.KafkaTimeoutError`` after ``bootstrap_timeout_ms``; the factories here
turn it (and any other error of connection setup, e.g. a failed SASL login) into
:class:`KafkaUnavailable`, which names the servers, the likely cause and the setting
to fix.

Deadlines: kafka-python bounds the TCP connect and the SASL exchange, not the TLS
handshake, which hangs against a plaintext listener. With SSL or SASL_SSL the
factories pass an ``ssl_context`` from :func:`pipeline.kafka.security.tls_context`,
whose handshakes fail after the connection timeout
(``min(bootstrap_timeout_ms, socket_connection_setup_timeout_ms)``) with the cause.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from pipeline.kafka.security import ConnectFailures, DeadlineTLSContext, tls_context
from pipeline.settings import Settings, shown

if TYPE_CHECKING:
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

CONSUMER_DEFAULTS: Final[dict[str, Any]] = {
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "fetch_max_wait_ms": 20,
    "enable_auto_commit": False,
    "auto_offset_reset": "earliest",
    "max_poll_records": 500,
    "allow_auto_create_topics": False,
    "isolation_level": "read_committed",
}
PRODUCER_DEFAULTS: Final[dict[str, Any]] = {
    "linger_ms": 5,
    "batch_size": 256 * 1024,
}
ADMIN_DEFAULTS: Final[dict[str, Any]] = {}
# The name brokers log, quota and list (consumer groups' members) for every client here,
# instead of kafka-python's "kafka-python-<version>".
CLIENT_ID: Final = "roadcast"
# How long a factory waits for the first broker before giving up.
BOOTSTRAP_TIMEOUT_MS: Final = 10_000
# kafka-python's default deadline for setting up one connection.
CONNECTION_SETUP_TIMEOUT_MS: Final = 10_000
# How long closing a producer may wait for records in flight (kafka-python waits for ever
# by default, e.g. for a broker that went away mid-replay): :func:`close_producer`.
PRODUCER_CLOSE_TIMEOUT_S: Final = 10.0


class KafkaUnavailable(ConnectionError):
    """No broker answered at the configured bootstrap servers."""


_warned_slow_crc = False


def crc32c_backend() -> str:
    """``"c"`` when kafka-python's checksums use the ``crc32c`` package, else ``"python"``."""
    from kafka.record import util

    return "python" if util.crc32c_c is None else "c"


def _warn_if_slow_crc() -> None:
    global _warned_slow_crc
    if not _warned_slow_crc and crc32c_backend() == "python":
        _warned_slow_crc = True
        logging.getLogger(__name__).warning(
            "kafka-python computes CRC32C in pure Python (about 6 MB/s); "
            "`pip install crc32c` (or kafka-python[crc32c]) makes produce and consume "
            "several times faster"
        )


def _config(settings: Settings, defaults: dict[str, Any], overrides: dict[str, Any]) -> dict:
    _warn_if_slow_crc()
    config = {
        "bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS,
        "client_id": CLIENT_ID,
        **settings.kafka_config(),
    }
    config.update(defaults)
    config.update(overrides)
    if config["security_protocol"] in ("SSL", "SASL_SSL") and "ssl_context" not in config:
        setup_ms = config.get("socket_connection_setup_timeout_ms", CONNECTION_SETUP_TIMEOUT_MS)
        timeout_ms = min(config["bootstrap_timeout_ms"], setup_ms)
        config["ssl_context"] = tls_context(settings, timeout_ms / 1000)
    return config


def _build(settings: Settings, config: dict[str, Any], build: Any, *args: Any) -> Any:
    """``build(*args, **config)``; a failed connection setup becomes :class:`KafkaUnavailable`."""
    from kafka.errors import KafkaError

    context = config.get("ssl_context")
    failures = ConnectFailures(context if isinstance(context, DeadlineTLSContext) else None)
    try:
        with failures:
            return build(*args, **config)
    except KafkaError as exc:
        cause = failures.cause(config, exc)
        servers = shown(settings.bootstrap_servers)
        if cause is None:
            name, text = type(exc).__name__, str(exc)
            detail = text if text.startswith(name) else f"{name}: {text}"
            raise KafkaUnavailable(
                f"no Kafka broker answered at {servers} ({detail}); start one with "
                "`roadcast broker` and export the ROADCAST_BOOTSTRAP_SERVERS line it prints, "
                "or set ROADCAST_BOOTSTRAP_SERVERS (and the security settings) to a reachable "
                "cluster"
            ) from exc
        raise KafkaUnavailable(f"cannot connect to Kafka at {servers}: {cause}") from exc


def make_producer(settings: Settings, **overrides: Any) -> KafkaProducer:
    """A ``KafkaProducer`` (bytes in, bytes out) with :data:`PRODUCER_DEFAULTS` and the
    settings' ``compression`` (``compression_type``).

    Raises
    ------
    KafkaUnavailable
        When no broker answers within ``bootstrap_timeout_ms`` or the connection setup
        fails (TLS, SASL); the message names the likely cause.
    SettingsError
        When the TLS files of the settings cannot be loaded.
    """
    from kafka import KafkaProducer

    defaults = dict(PRODUCER_DEFAULTS)
    if settings.compression != "none":
        defaults["compression_type"] = settings.compression
    producer: KafkaProducer = _build(
        settings, _config(settings, defaults, overrides), KafkaProducer
    )
    return producer


def make_consumer(
    settings: Settings,
    *topics: str,
    group_id: str | None = None,
    **overrides: Any,
) -> KafkaConsumer:
    """A ``KafkaConsumer`` in ``group_id`` (default ``settings.consumer_group``).

    Parameters
    ----------
    settings
        Connection and security options.
    *topics
        Topics to subscribe to; none to ``assign()`` partitions yourself.
    group_id
        The consumer group; pass ``""`` for no group (no commits, manual assignment).
    **overrides
        Any kafka-python consumer option, on top of :data:`CONSUMER_DEFAULTS`.

    Raises
    ------
    KafkaUnavailable
        When no broker answers within ``bootstrap_timeout_ms`` or the connection setup
        fails (TLS, SASL); the message names the likely cause.
    SettingsError
        When the TLS files of the settings cannot be loaded.
    """
    from kafka import KafkaConsumer

    from pipeline.kafka import header_keys

    header_keys.install()
    group = settings.consumer_group if group_id is None else (group_id or None)
    config = _config(settings, CONSUMER_DEFAULTS, {"group_id": group, **overrides})
    consumer: KafkaConsumer = _build(settings, config, KafkaConsumer, *topics)
    return consumer


def make_admin(settings: Settings, **overrides: Any) -> KafkaAdminClient:
    """A ``KafkaAdminClient``.

    Raises
    ------
    KafkaUnavailable
        When no broker answers within ``bootstrap_timeout_ms`` or the connection setup
        fails (TLS, SASL); the message names the likely cause.
    SettingsError
        When the TLS files of the settings cannot be loaded.
    """
    from kafka import KafkaAdminClient

    admin: KafkaAdminClient = _build(
        settings, _config(settings, ADMIN_DEFAULTS, overrides), KafkaAdminClient
    )
    return admin


def ensure_topics(
    settings: Settings,
    *,
    partitions: int = 3,
    replication_factor: int = 1,
    topics: Iterable[str] | None = None,
    timeout_s: float = 10.0,
) -> list[str]:
    """Create the topics that do not exist yet; idempotent.

    Parameters
    ----------
    settings
        Connection options; its four ``topics`` are created unless ``topics`` is given.
    partitions
        Partitions of each new topic. Keys are sensor ids, so each sensor stays ordered
        whatever the count; more partitions let more service instances share the load.
    replication_factor
        1 for the embedded broker; 3 is usual on a production cluster.
    topics
        Topic names to ensure instead of ``settings.topics``.
    timeout_s
        How long to wait for new topics to appear in the metadata.

    Returns
    -------
    list[str]
        The topics created by this call (empty when all existed).

    Raises
    ------
    ValueError
        For ``partitions`` or ``replication_factor`` below 1.
    KafkaUnavailable
        When no broker answers.
    """
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    if partitions < 1 or replication_factor < 1:
        raise ValueError(
            f"partitions and replication_factor must be >= 1, got {partitions}, "
            f"{replication_factor}"
        )
    wanted = list(dict.fromkeys(topics if topics is not None else settings.topics.values()))
    admin = make_admin(settings)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        created: list[str] = []
        for topic in missing:
            try:
                admin.create_topics(
                    [NewTopic(topic, partitions, replication_factor)],
                    timeout_ms=int(timeout_s * 1000),
                )
                created.append(topic)
            except TopicAlreadyExistsError:
                pass  # another process created it between list and create: fine
        if created:
            admin.wait_for_topics(created, timeout_ms=int(timeout_s * 1000))
        return created
    finally:
        admin.close()


def close_producer(producer: KafkaProducer, timeout_s: float = PRODUCER_CLOSE_TIMEOUT_S) -> None:
    """Close ``producer`` within ``timeout_s``, dropping what the broker has not
    acknowledged by then (the caller has already reported it as failed).

    kafka-python's ``close(timeout)`` raises when its flush times out and leaves the
    producer open (its ``__del__`` then raises again); this closes it regardless.
    """
    from kafka.errors import KafkaError

    try:
        producer.close(timeout=timeout_s)
    except KafkaError:
        sender = getattr(producer, "_sender", None)
        if sender is not None:
            sender.force_close()
            sender.join(timeout_s)
        producer._closed = True  # type: ignore[attr-defined]  # no second try in __del__
