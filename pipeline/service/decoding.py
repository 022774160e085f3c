"""Records of the readings topic -> readings as columns for the tick assembler.

:class:`ReadingDecoder` decodes each record (:func:`pipeline.kafka.schema.decode_readings_partial`),
maps its sensors to the assembler's columns and collects the valid readings of a poll batch
in :class:`DecodedReadings`. A record that breaks the schema, or names a sensor that no
loaded model knows, goes whole to the dead-letter topic with the reason in its headers
(a batch-form record whose other sensors are valid and known goes there too, and those
readings are used);
so does one that fails in any other way here (``processing_error``), and one the Kafka
client could not parse (:class:`pipeline.kafka.unreadable.UnreadableRecord`, also
``processing_error``): no record stops the service. Dead letters stay within the broker's
limits (:meth:`pipeline.kafka.outbox.Outbox.send_dead_letter`); one the broker refused is
sent minimal on the replay, and then only reported (:attr:`ReadingDecoder.refused`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pipeline.data.readers import id_spelling, nfc, spelling_index
from pipeline.kafka.dead_letters import dead_letter_headers
from pipeline.kafka.outbox import Outbox, Source, report_unsendable
from pipeline.kafka.schema import SchemaError, decode_readings_partial
from pipeline.kafka.unreadable import UnreadableRecord

if TYPE_CHECKING:
    from kafka import TopicPartition
    from kafka.consumer.fetcher import ConsumerRecord

log = logging.getLogger("roadcast.service")

# Unknown sensors logged by name (a warning each, the first time), then only counted.
UNKNOWN_LOGGED = 20

UNKNOWN_HINT = (
    "sensor {sensor!r} is not in the loaded model bundles; retrain with it or send it to "
    "another topic"
)

# Dead-letter reasons the service adds to the schema's (pipeline.kafka.schema.REASONS).
UNKNOWN_SENSOR = "unknown_sensor"
FUTURE_TIMESTAMP = "future_timestamp"
PROCESSING_ERROR = "processing_error"  # the service failed on the record: see error.message

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
    # Batch-form messages some of whose sensors were invalid or unknown: index in
    # `messages` -> dead-letter (reason, detail). Their valid readings are used.
    partial: dict[int, tuple[str, str]] = field(default_factory=dict)


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
        # Source records whose dead letter the broker refused -> times refused. Once:
        # the replay sends it minimal; twice: it is reported and not sent again.
        self.refused: dict[Source, int] = {}
        self._unknown: set[str] = set()
        self._key_warned = False
        self._spellings: dict[str, str | None] | None = None  # id_spelling -> the one id

    def _hint(self, sensor: str) -> str:
        """Why ``sensor`` is dead-lettered: unknown, or a known id written otherwise."""
        if self._spellings is None:
            self._spellings = spelling_index(self.column)
        twin = self._spellings.get(id_spelling(sensor))
        if twin is None:
            return UNKNOWN_HINT.format(sensor=sensor[:80])
        how = "in another Unicode form" if nfc(twin) == nfc(sensor) else "as another number"
        return (
            f"sensor {sensor[:80]!a} is not in the loaded model bundles, which have "
            f"{twin[:80]!a}: the same id written {how}; send the id as the bundles write it"
        )

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
        if isinstance(record, UnreadableRecord):
            self.dead_letter(outbox, record, PROCESSING_ERROR, record.error, counts)
            return
        column = self.column
        try:
            readings, rejected = decode_readings_partial(record.value)
            unknown: list[str] = []
            try:
                rows = [(column[r.sensor], self._ns(r.ts), r.value) for r in readings]
            except KeyError:  # a sensor no loaded model knows: keep the others
                rows = [
                    (column[r.sensor], self._ns(r.ts), r.value)
                    for r in readings
                    if r.sensor in column
                ]
                unknown = [r.sensor for r in readings if r.sensor not in column]
        except SchemaError as exc:
            self.dead_letter(outbox, record, exc.reason, exc.detail, counts)
            return
        except Exception as exc:  # a record must not stop the service, whatever it holds
            self.dead_letter(outbox, record, PROCESSING_ERROR, record_error(exc), counts)
            return
        problem = self._problem(rejected, unknown, used=len(rows)) if rejected or unknown else None
        if problem is not None and not rows:
            self.dead_letter(outbox, record, *problem, counts)
            return
        if (
            len(readings) == 1
            and record.key is not None
            and record.key != readings[0].sensor.encode()
        ):
            self._key_mismatch(record.key, readings[0].sensor, counts)
        index = len(decoded.messages)
        if problem is not None:  # dead-lettered once the assembler took its valid readings
            decoded.partial[index] = problem
        decoded.messages.append(record)
        decoded.partition.append(tp)
        for col, ts_ns, value in rows:
            decoded.cols.append(col)
            decoded.ts_ns.append(ts_ns)
            decoded.values.append(value)
            decoded.record_ms.append(record.timestamp)
            decoded.owner.append(index)

    def _problem(
        self, rejected: Sequence[SchemaError], unknown: Sequence[str], *, used: int
    ) -> tuple[str, str]:
        """The dead-letter reason and detail of a record with invalid or unknown sensors;
        ``used``: how many of its readings the service takes anyway (batch form)."""
        for sensor in unknown:
            self._warn_unknown(sensor[:80], self._hint(sensor))
        if rejected:
            reason, detail = rejected[0].reason, rejected[0].detail
        else:
            reason, detail = UNKNOWN_SENSOR, self._hint(unknown[0])
        more = len(rejected) + len(unknown) - 1
        if more:
            detail += f"; {more} more sensor{'s' if more > 1 else ''} of this record rejected"
        if used:
            detail += f"; its other {used} reading{'s were' if used > 1 else ' was'} used"
        return reason, detail

    def _key_mismatch(self, key: bytes, sensor: str, counts: Counter[str]) -> None:
        """Count a reading keyed other than by its sensor (kept: the reading is valid) and
        say so once: Kafka orders a sensor's readings only when its key is the sensor, and
        a second value for a tick is taken as the later one."""
        counts["key_mismatch"] += 1
        if not self._key_warned:
            self._key_warned = True
            hint = (
                "key each reading by its sensor id: readings of one sensor under several keys "
                "reach several partitions, and their order (which value of a tick wins) is lost"
            )
            log.warning(
                "key_mismatch",
                extra={"fields": {"key": repr(key[:80]), "sensor": sensor[:80], "hint": hint}},
            )

    def _warn_unknown(self, sensor: str, detail: str) -> None:
        """A warning the first time a sensor no model knows sends a reading (a producer
        that names sensors differently, or a network grown since training); the first
        :data:`UNKNOWN_LOGGED` by name, then one line saying the rest are counted."""
        if sensor in self._unknown or len(self._unknown) > UNKNOWN_LOGGED:
            return
        self._unknown.add(sensor)
        if len(self._unknown) <= UNKNOWN_LOGGED:
            log.warning("unknown_sensor", extra={"fields": {"sensor": sensor, "hint": detail}})
        else:
            more = "further unknown sensors are dead-lettered without a log line each"
            log.warning("unknown_sensors_many", extra={"fields": {"hint": more}})

    def dead_letter(
        self,
        outbox: Outbox,
        record: ConsumerRecord,
        reason: str,
        detail: str,
        counts: Counter[str],
    ) -> None:
        """Send ``record`` as it came to the dead-letter topic, with the reason in headers
        (cut to the broker's limit; minimal, or only reported, once the broker refused it)."""
        source = (record.topic, record.partition, record.offset)
        refused = self.refused.get(source, 0) if self.refused else 0
        headers = dead_letter_headers(
            reason, detail, *source, timestamp_ms=record.timestamp, original=record.headers or ()
        )
        counts["dead_lettered"] += 1
        counts[f"dead_lettered.{reason}"] += 1
        if refused >= 2:
            report_unsendable(source, record.value, "refused by the broker twice")
            counts["dead_letters_unsent"] += 1
            return
        sent = outbox.send_dead_letter(
            self.dlq_topic, record.key, record.value, headers, source, minimal=refused == 1
        )
        if not sent:
            counts["dead_letters_unsent"] += 1

    def note_refused(self, sources: Sequence[Source]) -> None:
        """Remember dead letters the broker refused (see :attr:`refused`)."""
        if len(self.refused) > 10_000:  # bounded: old entries are long committed
            self.refused.clear()
        for source in sources:
            self.refused[source] = self.refused.get(source, 0) + 1

    def _ns(self, ts: datetime) -> int:
        """ns since the epoch, exact (a float timestamp would round); cached per instant."""
        cached = self._ts_cache.get(ts)
        if cached is None:
            if len(self._ts_cache) > 4096:
                self._ts_cache.clear()
            cached = (ts - _EPOCH) // _ONE_US * 1000
            self._ts_cache[ts] = cached
        return cached


def describe_error(exc: BaseException) -> str:
    """``Type: message`` of an unexpected error, for logs."""
    return f"{type(exc).__name__}: {exc}"


def record_error(exc: BaseException) -> str:
    """A dead letter's ``error.message`` for a record the service failed on."""
    return f"the service failed on this record: {describe_error(exc)}"
