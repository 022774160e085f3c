"""Dead letters: records the service cannot use, copied to the dead-letter topic with why.

A dead letter keeps the original key, value and headers and says in headers of its own
why it failed and where it came from (:func:`dead_letter_headers`); an original header
named like one of those is kept as ``original.<name>``. It never exceeds what the broker
takes in one record: the topic's ``max.message.bytes``, which the service also gives
its producer as ``max_request_size`` (:func:`topic_max_message_bytes`). When the
original does not fit with its headers, :func:`fit_dead_letter` cuts the value (and, if
need be, drops the key) and adds headers that say so:

- ``truncated``: what was cut (``value``, ``key`` or ``key,value``);
- ``source.value.size`` / ``source.value.sha256``: the whole original value, so that it
  can be found in the source topic and checked;
- ``source.key.size`` / ``source.key.sha256``: the same for a dropped key;
- ``source.value``: ``null`` when the original was a tombstone without a key, or one
  whose key was dropped (Kafka clients send no record with neither).

A *minimal* dead letter keeps only the headers (an empty value, the key when small): the
service's fallback when a broker refused the full one (see :mod:`pipeline.kafka.outbox`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from pipeline.settings import Settings

log = logging.getLogger("roadcast.outbox")

# Kafka's default ``max.message.bytes`` of a topic (1 MiB plus a batch header).
BROKER_DEFAULT_MAX_MESSAGE_BYTES: Final = 1_048_588
# A key longer than this is dropped from a minimal dead letter (ids are short).
_MINIMAL_KEY_BYTES: Final = 256
_DETAIL_BYTES: Final = 1000
# The original record's headers are kept up to this many bytes together.
_ORIGINAL_HEADER_BYTES: Final = 16_384
# Names of the headers a dead letter adds: ``error``, ``truncated`` and ``error.*`` /
# ``source.*``; an original header of such a name gets ``ORIGINAL_PREFIX`` in front.
_RESERVED: Final = ("error", "truncated")
_RESERVED_PREFIXES: Final = ("error.", "source.")
ORIGINAL_PREFIX: Final = "original."

Headers = list[tuple[str, bytes]]


def dead_letter_headers(
    reason: str,
    detail: str,
    topic: str,
    partition: int,
    offset: int,
    *,
    timestamp_ms: int | None = None,
    original: Sequence[tuple[str, bytes | None]] = (),
) -> Headers:
    """Kafka headers of a dead letter: the original record's own headers (tracing ids,
    the producer's), then why it failed and where it came from.

    ``error`` is the machine-readable reason (``bad_json``, ``unknown_sensor``...),
    ``error.message`` the human explanation, ``source.*`` the original position and
    record timestamp (ms). An original header named like these (``error``, ``error.*``,
    ``source.*``, ``truncated``) is kept as ``original.<name>``, so that each of these
    names is roadcast's alone, whichever header of a name a reader takes. Original
    headers over ``_ORIGINAL_HEADER_BYTES`` together are left out, and
    ``source.headers.dropped`` says how many.
    """
    kept: Headers = [(_unreserved(k), v if v is not None else b"") for k, v in original]
    extra: Headers = []
    if sum(len(k) + len(v) for k, v in kept) > _ORIGINAL_HEADER_BYTES:
        kept, extra = [], [("source.headers.dropped", str(len(original)).encode())]
    if timestamp_ms is not None and timestamp_ms >= 0:
        extra.append(("source.timestamp", str(timestamp_ms).encode()))
    return [
        *kept,
        ("error", reason.encode()),
        ("error.message", detail[:_DETAIL_BYTES].encode("utf-8", "replace")),
        ("source.topic", topic.encode()),
        ("source.partition", str(partition).encode()),
        ("source.offset", str(offset).encode()),
        *extra,
    ]


def _unreserved(name: str) -> str:
    """``name``, or ``original.<name>`` when a dead letter's own headers use it."""
    reserved = name in _RESERVED or name.startswith(_RESERVED_PREFIXES)
    return ORIGINAL_PREFIX + name if reserved else name


@dataclass(frozen=True)
class DeadLetter:
    """A dead letter as it will be sent (``cut``: whether anything of the original was)."""

    key: bytes | None
    value: bytes | None
    headers: Headers
    cut: bool


def record_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """The size kafka-python checks against ``max_request_size``: a one-record batch."""
    from kafka.record.default_records import DefaultRecordBatchBuilder

    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers))


def _describe(data: bytes, what: str) -> Headers:
    return [
        (f"source.{what}.size", str(len(data)).encode()),
        (f"source.{what}.sha256", hashlib.sha256(data).hexdigest().encode()),
    ]


def fit_dead_letter(
    key: bytes | None,
    value: bytes | None,
    headers: Headers,
    max_bytes: int,
    *,
    minimal: bool = False,
) -> DeadLetter:
    """The dead letter of ``(key, value)`` with ``headers``, at most ``max_bytes`` as a record.

    Unchanged when it fits (the usual case: one size estimate). Otherwise the value is
    cut to what fits, and the key dropped when the key alone leaves no room; with
    ``minimal`` the value is always emptied. See the module docstring for the headers.
    When even the headers exceed ``max_bytes`` the result is still too large: the
    producer refuses it and the caller reports it.
    """
    if value is None and key is None:
        value, headers = b"", [*headers, ("source.value", b"null")]
    if not minimal and record_size(key, value, headers) <= max_bytes:
        return DeadLetter(key, value, headers, cut=False)
    extra: Headers = []
    cut: list[str] = []
    if key is not None and len(key) > (_MINIMAL_KEY_BYTES if minimal else max_bytes // 2):
        extra += _describe(key, "key")
        cut.append("key")
        key = None
        if value is None:  # a tombstone whose key went: a record needs one of the two
            value, extra = b"", [*extra, ("source.value", b"null")]
    flag = ("truncated", b"key,value")  # the longest the flag header gets
    if value and (minimal or record_size(key, value, [*headers, *extra, flag]) > max_bytes):
        extra += _describe(value, "value")
        cut.append("value")
    if not cut:
        return DeadLetter(key, value, headers, cut=False)
    out = [*headers, *extra, ("truncated", ",".join(cut).encode())]
    if "value" in cut and value is not None:
        room = 0 if minimal else max_bytes - record_size(key, b"", out) - 8  # varints grow
        value = value[: max(room, 0)]
    return DeadLetter(key, value, out, cut=True)


def topic_max_message_bytes(settings: Settings, topic: str) -> int:
    """The topic's ``max.message.bytes``, or Kafka's default when the broker does not say.

    Brokers that keep no topic configs (the embedded Tansu) answer with none; an
    unreachable broker is left to the caller's next request to report.
    """
    from kafka.admin import ConfigResource, ConfigResourceType

    from pipeline.kafka.clients import make_admin

    name = "max.message.bytes"
    try:
        admin = make_admin(settings)
        try:
            # Every config, not just ours: Tansu drops the connection on a filtered request.
            resource = ConfigResource(ConfigResourceType.TOPIC, topic)
            described = admin.describe_configs([resource], config_filter="all")
        finally:
            admin.close()
        entry = described.get("topic", {}).get(topic, {}).get(name) or {}
        value = int(entry.get("value") or 0)
    except Exception as exc:  # no answer, or an answer we cannot read: the default
        log.warning("topic_config_unknown", extra={"fields": {"topic": topic, "error": repr(exc)}})
        return BROKER_DEFAULT_MAX_MESSAGE_BYTES
    return value if value > 0 else BROKER_DEFAULT_MAX_MESSAGE_BYTES
