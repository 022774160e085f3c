"""Records of the readings topic -> readings as columns for the tick assembler.

:class:`ReadingDecoder` decodes each record (:func:`pipeline.kafka.schema.decode_readings`),
maps its sensors to the assembler's columns and collects the valid readings of a poll batch
in :class:`DecodedReadings`. A record that breaks the schema, or names a sensor that no
loaded model knows, goes whole to the dead-letter topic with the reason in its headers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pipeline.kafka.outbox import Outbox, dead_letter_headers
from pipeline.kafka.schema import SchemaError, decode_readings

if TYPE_CHECKING:
    from kafka import TopicPartition
    from kafka.consumer.fetcher import ConsumerRecord

# Dead-letter reasons the service adds to the schema's (pipeline.kafka.schema.REASONS).
UNKNOWN_SENSOR = "unknown_sensor"
FUTURE_TIMESTAMP = "future_timestamp"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


@dataclass
class DecodedReadings:
    """The valid readings of a batch as columns, and the messages they came from."""

    cols: list[int] = field(default_factory=list)
    ts_ns: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    record_ms: list[int] = field(default_factory=list)
    owner: list[int] = field(default_factory=list)  # index in `messages` of each reading
    messages: list[Any] = field(default_factory=list)  # ConsumerRecord
    partition: list[Any] = field(default_factory=list)  # TopicPartition of each message


class ReadingDecoder:
    """Decodes records into :class:`DecodedReadings`; dead-letters the ones it cannot use.

    Parameters
    ----------
    column : the assembler column of every known sensor.
    dlq_topic : where invalid records go.
    """

    def __init__(self, column: Mapping[str, int], dlq_topic: str) -> None:
        self.column = column
        self.dlq_topic = dlq_topic
        self._ts_cache: dict[datetime, int] = {}

    def decode(
        self,
        tp: TopicPartition,
        record: ConsumerRecord,
        decoded: DecodedReadings,
        outbox: Outbox,
        counts: Counter[str],
    ) -> None:
        """Append the readings of ``record`` to ``decoded``, or dead-letter it."""
        counts["consumed"] += 1
        try:
            readings = decode_readings(record.value)
        except SchemaError as exc:
            self.dead_letter(outbox, record, exc.reason, exc.detail, counts)
            return
        column = self.column
        unknown = next((r.sensor for r in readings if r.sensor not in column), None)
        if unknown is not None:
            detail = (
                f"sensor {unknown[:80]!r} is not in the loaded model bundles; retrain with it "
                "or send it to another topic"
            )
            self.dead_letter(outbox, record, UNKNOWN_SENSOR, detail, counts)
            return
        index = len(decoded.messages)
        decoded.messages.append(record)
        decoded.partition.append(tp)
        for reading in readings:
            decoded.cols.append(column[reading.sensor])
            decoded.ts_ns.append(self._ns(reading.ts))
            decoded.values.append(reading.value)
            decoded.record_ms.append(record.timestamp)
            decoded.owner.append(index)

    def dead_letter(
        self,
        outbox: Outbox,
        record: ConsumerRecord,
        reason: str,
        detail: str,
        counts: Counter[str],
    ) -> None:
        """Send ``record`` as it came to the dead-letter topic, with the reason in headers."""
        headers = dead_letter_headers(reason, detail, record.topic, record.partition, record.offset)
        outbox.send(self.dlq_topic, record.key, record.value, headers)
        counts["dead_lettered"] += 1
        counts[f"dead_lettered.{reason}"] += 1

    def _ns(self, ts: datetime) -> int:
        """ns since the epoch, exact (a float timestamp would round); cached per instant."""
        cached = self._ts_cache.get(ts)
        if cached is None:
            if len(self._ts_cache) > 4096:
                self._ts_cache.clear()
            cached = (ts - _EPOCH) // _ONE_US * 1000
            self._ts_cache[ts] = cached
        return cached
