"""Header keys that are not UTF-8, read the way Kafka's Java client reads them.

Kafka's protocol types a header key as a UTF-8 string, but brokers store whatever bytes a
producer sent. The Java client decodes such a key with U+FFFD in place of each invalid
byte and hands the record over; kafka-python (3.0.x) raises instead, and since it reads a
fetched batch record by record, every later record of that batch cannot be read either.
One hostile header would cost the service every reading batched with it.

:func:`install` makes kafka-python's consumers decode a header key that is not UTF-8
with replacement characters, as the Java client does: the record, and the records after
it, are read. Only the failing record is read again, with a lenient buffer; valid batches
take kafka-python's own path unchanged. It replaces the batch class kafka-python's
``MemoryRecords`` builds, so it is installed only when that class is the one it knows.
"""

from __future__ import annotations

from typing import Any, SupportsIndex


class _Replacing(bytearray):
    """Bytes whose ``decode`` replaces invalid UTF-8 instead of raising."""

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return super().decode(encoding, "replace")


class _ReplacingSlices(bytearray):
    """A record batch's buffer whose slices are :class:`_Replacing`."""

    def __getitem__(self, index: SupportsIndex | slice) -> Any:
        item = super().__getitem__(index)
        return _Replacing(item) if isinstance(index, slice) else item


def install() -> bool:
    """Read header keys that are not UTF-8 leniently in every consumer of this process.

    Returns whether it is installed (False for a kafka-python it does not recognise).
    Calling it again does nothing.
    """
    from kafka.record import memory_records
    from kafka.record.default_records import DefaultRecordBatch

    current = memory_records.DefaultRecordBatch
    if getattr(current, "lenient_header_keys", False):
        return True
    if current is not DefaultRecordBatch or not hasattr(DefaultRecordBatch, "_read_msg"):
        return False

    class LenientHeaderKeys(DefaultRecordBatch):  # type: ignore[misc]
        lenient_header_keys = True

        def _read_msg(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return super()._read_msg(*args, **kwargs)
            except UnicodeDecodeError:
                # Only header keys are decoded; the position moves only on success.
                strict: bytearray = self._buffer  # type: ignore[has-type]
                self._buffer: bytearray = _ReplacingSlices(strict)
                try:
                    return super()._read_msg(*args, **kwargs)
                finally:
                    self._buffer = strict

    memory_records.DefaultRecordBatch = LenientHeaderKeys
    return True
