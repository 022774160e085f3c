"""Records the Kafka client cannot parse, and a poll that moves past them.

kafka-python (3.0.12) parses a fetched record batch record by record. A record it cannot
parse (a record whose lengths do not add up, a checksum that does not match, a batch that
does not decompress or uses a codec whose library is not installed; a header key that is
not UTF-8 is read, see :mod:`pipeline.kafka.header_keys`) makes ``poll()`` raise once;
every later ``poll()`` then spins at full CPU on the broken batch and never returns. A
hostile producer could stop the service with one record.

:func:`poll_readable` is ``consumer.poll`` that instead returns such a record as an
:class:`UnreadableRecord` (its position and the error: its bytes cannot be had from this
client) and moves the consumer past it. Records after it in the same batch cannot be
parsed either: each comes back as its own :class:`UnreadableRecord`, one per poll, so
every offset of the partition is accounted for. The service dead-letters them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kafka import KafkaConsumer, TopicPartition

log = logging.getLogger("roadcast.service")


@dataclass(frozen=True)
class UnreadableRecord:
    """A record the client could not parse: only where it is, and why, are known.

    It has the fields of a ``ConsumerRecord`` the service reads (``key``, ``value`` and
    ``headers`` empty; ``timestamp`` -1, unknown).
    """

    topic: str
    partition: int
    offset: int
    error: str
    key: bytes | None = None
    value: bytes = b""
    timestamp: int = -1
    headers: tuple[Any, ...] = ()


def _take_broken(consumer: KafkaConsumer) -> tuple[TopicPartition, int | None] | None:
    """After ``poll()`` raised: the partition and offset of the record the client could
    not parse, with the broken batch dropped from the fetcher (offset None: the partition
    is no longer assigned, its next owner meets the record); None when no batch broke."""
    fetcher = getattr(consumer, "_fetcher", None)
    part = getattr(fetcher, "_next_partition_records", None)
    if not part:
        return None
    tp = part.topic_partition
    part.drain()
    fetcher._next_partition_records = None  # type: ignore[union-attr]
    if tp not in consumer.assignment():
        return tp, None
    return tp, max(int(part.next_fetch_offset), int(consumer.position(tp) or 0))


def poll_readable(consumer: KafkaConsumer, timeout_ms: int) -> dict[Any, list[Any]]:
    """``consumer.poll(timeout_ms=...)``, with a record the client cannot parse returned
    as an :class:`UnreadableRecord` (the consumer moved past it) instead of an error.

    Raises what ``poll()`` raises for anything else (an unreachable broker...).
    """
    from kafka.errors import CorruptRecordError, KafkaError, UnsupportedCodecError

    try:
        return consumer.poll(timeout_ms=timeout_ms)
    except Exception as exc:
        # Parsing raises CorruptRecordError, UnsupportedCodecError (a batch compressed with
        # a codec whose library is not installed) or a plain error of a codec; any other
        # Kafka error is about the broker or the group, not a record.
        parsing = (CorruptRecordError, UnsupportedCodecError)
        about_a_record = isinstance(exc, parsing) or not isinstance(exc, KafkaError)
        broken = _take_broken(consumer) if about_a_record else None
        if broken is None:
            raise
        tp, offset = broken
        if offset is None:
            return {}
        consumer.seek(tp, offset + 1)
        error = (
            f"the Kafka client cannot parse this record ({type(exc).__name__}: {str(exc)[:300]}); "
            "it, or a record before it in its batch, is malformed: read it from the "
            "source topic with another tool"
        )
        log.error(
            "record_unreadable",
            extra={"fields": {"partition": f"{tp.topic}[{tp.partition}]", "offset": offset}},
        )
        return {tp: [UnreadableRecord(tp.topic, tp.partition, offset, error)]}
