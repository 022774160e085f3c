"""Many pre-encoded records into kafka-python's producer at once (the service's fast path).

The service publishes one forecast per model and sensor at every tick: 1242 records a
tick on ``los-loop``. ``KafkaProducer.send`` costs 20-35 us a record in pure Python
(argument checks, size estimate, a lock, ``DefaultRecordBatchBuilder.append`` with its
per-byte varint writes, one ``FutureRecordMetadata`` per record), so sending a tick took
longer than everything else the service does for it. :class:`BulkAppender` writes a
whole list of records for one partition into the producer's open batch in one step:
each record is the same v2 record bytes ``append`` would write (attributes, timestamp
delta, offset delta, key, value, no headers; lengths as zig-zag varints), joined once,
under the same partition lock the producer's sender takes to drain a batch. About
1 us a record, measured on this machine; the broker receives byte-identical batches
(their CRC is computed by kafka-python when the batch is closed, as always).

What it relies on
-----------------
This reaches into kafka-python's internals (``KafkaProducer._accumulator``, its
per-partition deques and locks, ``MemoryRecordsBuilder`` and ``DefaultRecordBatchBuilder``
fields), so it is used only when :func:`supported` recognises the installed version
(3.0.x, message format v2, no transactions) and every attribute it touches exists;
otherwise the caller falls back to ``send()``. ``tests/test_record_batches.py`` checks
both paths against the real broker (keys, values, partitions, order).

Delivery is reported per batch rather than per record: :meth:`BulkAppender.append`
returns the produce future of each batch it wrote into, and a record is acknowledged
exactly when its batch is. When no open batch has room (or the sender is draining it),
one record goes through the producer's own ``append``, which opens a new batch, and the
rest follow into it. A batch that the broker rejects as too large is split by
kafka-python without our records' futures: its produce future then never succeeds, so
the caller sees a failure and replays (at-least-once), never a silent loss.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kafka import KafkaProducer

_VARINT_CACHE = 1 << 14  # small lengths and offsets: precomputed varints
_ATTRIBUTES = b"\x00"
_NO_HEADERS = b"\x00"


def _varint(value: int) -> bytes:
    """Kafka's zig-zag varint of ``value`` (what ``kafka.record.util.encode_varint`` writes)."""
    from kafka.record.util import encode_varint

    out = bytearray()
    encode_varint(value, out.append)
    return bytes(out)


_VARINTS: list[bytes] = []


def _varints() -> list[bytes]:
    if not _VARINTS:
        _VARINTS.extend(_varint(i) for i in range(_VARINT_CACHE))
    return _VARINTS


def supported(producer: KafkaProducer) -> bool:
    """True when this kafka-python producer has the internals :class:`BulkAppender` uses."""
    try:
        import kafka
        from kafka.record.default_records import DefaultRecordBatchBuilder
        from kafka.record.memory_records import MemoryRecordsBuilder
    except ImportError:
        return False
    if not str(getattr(kafka, "__version__", "")).startswith("3.0."):
        return False
    accumulator = getattr(producer, "_accumulator", None)
    config = getattr(producer, "config", {})
    transactional = getattr(producer, "_transaction_manager", None)
    if transactional is not None and transactional.is_transactional():
        return False
    needed_slots = {"_buffer", "_num_records", "_last_offset", "_first_timestamp"}
    return (
        accumulator is not None
        and hasattr(accumulator, "_tp_lock")
        and hasattr(accumulator, "_batches")
        and hasattr(accumulator, "append")
        and config.get("message_version", 2) >= 2
        and needed_slots <= set(DefaultRecordBatchBuilder.__slots__)
        and {"_builder", "_next_offset", "_closed"} <= set(MemoryRecordsBuilder.__slots__)
    )


class BulkAppender:
    """Appends lists of ``(key, value)`` records of one partition to a producer's batches.

    Parameters
    ----------
    producer : a ``KafkaProducer`` for which :func:`supported` is True.
    """

    def __init__(self, producer: KafkaProducer) -> None:
        if not supported(producer):
            raise RuntimeError(
                "this kafka-python producer lacks the internals of the bulk path; "
                "send records one by one with producer.send()"
            )
        self.producer = producer
        self._accumulator: Any = producer._accumulator  # type: ignore[attr-defined]
        self._varints = _varints()

    def append(self, tp: Any, records: Sequence[tuple[bytes, bytes]]) -> list[Any]:
        """Queue ``records`` (non-empty ``bytes`` keys and values) on partition ``tp``.

        Returns the futures to check after ``flush()``: batch produce futures for the
        records written in bulk, record futures for any that went through ``append``.
        """
        futures: list[Any] = []
        done = 0
        now_ms = int(time.time() * 1000)
        accumulator = self._accumulator
        while done < len(records):
            with accumulator._tp_lock(tp):
                queue = accumulator._batches[tp]
                if queue:
                    batch = queue[-1]
                    written = self._write(batch, records, done, now_ms)
                    if written:
                        done += written
                        futures.append(batch.produce_future)
            if done < len(records):  # no open batch, or it is full: open one the usual way
                key, value = records[done]
                future = accumulator.append(tp, now_ms, key, value, [])[0]
                futures.append(future)
                done += 1
        return futures

    def _write(
        self, batch: Any, records: Sequence[tuple[bytes, bytes]], start: int, now_ms: int
    ) -> int:
        """Write as many of ``records[start:]`` as fit into ``batch``; how many it wrote.

        Called with the partition lock held, so the sender cannot close the batch now.
        """
        builder_records = batch.records
        if builder_records._closed or builder_records._builder is None:
            return 0
        builder = builder_records._builder
        first_ts = builder._first_timestamp
        if first_ts is None:  # an empty batch: let append() set its header fields
            return 0
        varints = self._varints
        cached = len(varints)
        delta = now_ms - first_ts
        ts_delta = varints[delta] if 0 <= delta < cached else _varint(delta)
        room = builder._batch_size - len(builder._buffer)
        offset = builder_records._next_offset
        parts: list[bytes] = []
        size = largest = 0
        index = start
        join = b"".join
        while index < len(records):
            key, value = records[index]
            body = join(
                (
                    _ATTRIBUTES,
                    ts_delta,
                    varints[offset] if offset < cached else _varint(offset),
                    varints[len(key)] if len(key) < cached else _varint(len(key)),
                    key,
                    varints[len(value)] if len(value) < cached else _varint(len(value)),
                    value,
                    _NO_HEADERS,
                )
            )
            length = len(body)
            head = varints[length] if length < cached else _varint(length)
            record_size = len(head) + length
            if size + record_size > room:
                break
            parts.append(head)
            parts.append(body)
            size += record_size
            largest = max(largest, record_size)
            offset += 1
            index += 1
        written = index - start
        if not written:
            return 0
        builder._buffer += join(parts)
        builder._num_records += written
        builder._last_offset = offset - 1
        if builder._max_timestamp is None or builder._max_timestamp < now_ms:
            builder._max_timestamp = now_ms
        builder_records._next_offset = offset
        batch.max_record_size = max(batch.max_record_size, largest)
        batch.last_append = time.monotonic()
        return written
