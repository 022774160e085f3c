"""One poll batch with Kafka around it, and what happens when it fails.

:class:`BatchHandler` is a :class:`pipeline.service.processor.PollProcessor` that takes a
poll batch end to end: process, flush the outbox, store, commit
(:meth:`BatchHandler.handle`). :class:`pipeline.service.loop.ForecastService` drives it
from a consumer.

No record stops the service. A batch that fails is handled by what failed
(:meth:`BatchHandler.handle_safely`):

- the broker did not take its output (:class:`PublishError`): state back from the store,
  the batch replayed (:meth:`BatchHandler.recover`); dead letters the broker refused
  for what they are go minimal on the replay, then are only reported;
- the store or the broker failed (:func:`is_systemic`): the same, after a backoff that
  doubles up to :data:`RETRY_MAX_S` (counted as ``batch_retries``, logged);
- anything else may be one record's doing: the batch is split in halves until the
  record that fails alone is found, and that record goes to the dead-letter topic
  (``processing_error``) while the others are processed as usual
  (:meth:`BatchHandler.isolate`). The normal path pays nothing for this.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from models.forecasters.base import Forecaster
from pipeline.kafka.dead_letters import BROKER_DEFAULT_MAX_MESSAGE_BYTES
from pipeline.kafka.outbox import Outbox, PublishError
from pipeline.service.config import ServiceConfig
from pipeline.service.decoding import PROCESSING_ERROR, describe_error, record_error
from pipeline.service.health import Health
from pipeline.service.hooks import AlertHook, RestorableAlertHook
from pipeline.service.model_set import Versioned
from pipeline.service.processor import PollProcessor, PollReport
from pipeline.service.store import StoreError, failure_hint
from pipeline.service.store_rows import Batch
from pipeline.settings import Settings

if TYPE_CHECKING:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.consumer.fetcher import ConsumerRecord

    from pipeline.service.metrics import ServiceMetrics

log = logging.getLogger("roadcast.service")

# The service's producer. Every batch ends with a flush, so records need not linger to be
# batched: a long linger keeps kafka-python's network thread idle (and off the GIL) while
# the batch's forecasts are encoded and queued, then the flush sends them in a few large
# requests (measurements in docs/decisions.md). ``max_block_ms``: how long a send may wait
# for metadata (a topic a fresh broker lacks) before the batch is abandoned and replayed.
PRODUCER_CONFIG: dict[str, int] = {"linger_ms": 1000, "batch_size": 1 << 20, "max_block_ms": 10_000}
# A batch that failed for a reason not about one record is retried after RETRY_FIRST_S,
# then twice as long each time, at most RETRY_MAX_S: a store or broker outage is waited
# out without a busy loop, and a short one costs little.
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0
# /healthz reports the loop stalled when it has not beaten for the flush deadline plus
# this margin: one batch may legitimately wait that long for the broker's acknowledgement.
STALL_MARGIN_S = 30.0
# The store is pruned at most once an hour of event time, a day of it at most per batch
# (a store of months catches up a day per batch instead of stalling one batch).
PRUNE_EVERY_MS = 3_600_000
PRUNE_SPAN_MS = 86_400_000


class BatchHandler(PollProcessor):
    """A :class:`PollProcessor` that handles poll batches with Kafka: publishes, stores and
    commits them, and recovers the ones that fail (see the module docstring).

    Parameters
    ----------
    settings, config, models, alert_hook, versions, metrics : as :class:`PollProcessor`.
    health : the liveness and readiness it reports (:mod:`pipeline.service.health`).
    """

    def __init__(
        self,
        settings: Settings,
        config: ServiceConfig,
        models: Mapping[str, Forecaster],
        *,
        alert_hook: AlertHook | None = None,
        versions: Mapping[str, Versioned] | None = None,
        metrics: ServiceMetrics | None = None,
        health: Health | None = None,
    ) -> None:
        super().__init__(
            settings, config, models, alert_hook=alert_hook, versions=versions, metrics=metrics
        )
        self.health = health or Health()
        self.health.stall_after_s = config.flush_timeout_s + STALL_MARGIN_S
        self.progress = self.health.progress
        self._store_error: str | None = None  # the last store transaction's failure
        self._unsettled = False  # a failed batch waits for its replay: no swap before it
        self._failures = 0  # batches failed in a row, for the backoff
        self._traced_error: str | None = None  # the last failure logged with its traceback
        self._unstored: Counter[str] = Counter()  # see _count
        self._pruned_ms = -(2**62)  # the last cutoff applied to the store
        # The dead-letter topic's max.message.bytes, read at start (ForecastService.run).
        self.max_message_bytes = BROKER_DEFAULT_MAX_MESSAGE_BYTES

    def handle(
        self,
        records: Mapping[TopicPartition, Sequence[ConsumerRecord]],
        outbox: Outbox,
        consumer: KafkaConsumer,
    ) -> PollReport:
        """One poll batch end to end: process, flush, store, commit.

        Raises
        ------
        PublishError
            When the broker did not take the batch's output: nothing was stored or
            committed, the caller recovers (:meth:`recover`).
        """
        self.health.beat()
        report, batch = self.process(records, outbox, highwater=_highwater(consumer))
        with self._timed("flush"):
            outbox.flush(self.config.flush_timeout_s)
        with self._timed("store"):
            self._store(report, batch)
        for tp, part in records.items():
            if part:
                self.partitions.pending_commit[tp] = part[-1].offset + 1
        with self._timed("commit"):
            self.commit(consumer)
        self._unsettled = False
        self.prune_store()
        return report

    def kept_ms(self) -> int | None:
        """Event time the store keeps before the newest closed tick: the retention
        (``config.retain``), never less than the ticks a restart reads back (the models'
        window, a restorable alert hook's history); None: everything."""
        if self.config.retain is None:
            return None
        hook = self.alert_hook
        floor = max(self.window, hook.history_ticks if isinstance(hook, RestorableAlertHook) else 0)
        return max(int(self.config.retain.value // 1_000_000), floor * self.freq_ms)

    def prune_store(self) -> None:
        """Delete what the store holds from before :meth:`kept_ms`, at most once an hour
        of event time and a day of the store per call. A failure is logged and retried
        with a later batch."""
        keep_ms, last = self.kept_ms(), self.assembler.last_closed
        if keep_ms is None or last is None:
            return
        cutoff = int(self.asm_config.tick_ns(last)) // 1_000_000 - keep_ms
        if cutoff < self._pruned_ms + PRUNE_EVERY_MS:
            return
        try:
            with self._timed("prune"):
                self._pruned_ms, removed = self.store.prune(cutoff, span_ms=PRUNE_SPAN_MS)
        except (sqlite3.Error, OSError) as exc:
            log.warning("store_prune_failed", extra={"fields": {"error": describe_error(exc)}})
            self._count("store_prunes_failed")
            return
        if self.metrics is not None:
            self.metrics.pruned_rows(removed)
        if any(removed.values()):
            log.info("store_pruned", extra={"fields": {"before_ms": self._pruned_ms, **removed}})

    def _store(self, report: PollReport, batch: Batch) -> None:
        """:meth:`finish`, with the failure counters of the loop that are not stored yet."""
        batch.counters.update(self._unstored)
        try:
            self.finish(report, batch, flushed_at_ms=time.time_ns() // 1_000_000)
        except (sqlite3.Error, OSError) as exc:
            hint = failure_hint(exc)
            self._store_error = f"the last store transaction failed: {describe_error(exc)}" + (
                f"; {hint}" if hint else ""
            )
            raise
        self._store_error = None
        self._unstored.clear()

    def _count(self, name: str, n: int = 1) -> None:
        """Count a failure now (stats, metrics) and in the store with the next stored batch."""
        self.counters[name] += n
        self._unstored[name] += n
        if self.metrics is not None:
            self.metrics.count(name, n)

    def commit(self, consumer: KafkaConsumer) -> None:
        """Commit the stored-but-uncommitted offsets (a failure is retried next batch)."""
        pending = self.partitions.pending_commit
        if not pending:
            return
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata

        offsets = {tp: OffsetAndMetadata(o, "", -1) for tp, o in pending.items()}
        try:
            consumer.commit(offsets)
        except KafkaError as exc:
            # The store already holds the batch: a redelivery is skipped, nothing is lost.
            log.warning("commit_failed", extra={"fields": {"error": str(exc)}})
            return
        pending.clear()

    def handle_safely(
        self,
        records: Mapping[TopicPartition, Sequence[ConsumerRecord]],
        outbox: Outbox,
        consumer: KafkaConsumer,
        stop: threading.Event,
    ) -> Outbox:
        """:meth:`handle`, with every failure handled (see the module docstring); returns
        the outbox to go on with (a new one after a failure)."""
        try:
            self.handle(records, outbox, consumer)
        except PublishError as exc:
            log.error("publish_failed", extra={"fields": {"error": str(exc)}})
            if exc.unsendable:  # the replay sends these differently: no need to wait
                self.decoder.note_refused(exc.unsendable)
                return self.recover(consumer, outbox, stop)
            return self._retry(consumer, outbox, stop, exc)
        except Exception as exc:
            if is_systemic(exc):
                return self._retry(consumer, outbox, stop, exc)
            return self.isolate(records, outbox, consumer, stop, exc)
        self._failures = 0
        self._traced_error = None
        return outbox

    def _retry(
        self, consumer: KafkaConsumer, outbox: Outbox, stop: threading.Event, exc: Exception
    ) -> Outbox:
        """Wait (doubling each time in a row), then recover: the batch is replayed."""
        self._failures += 1
        delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (self._failures - 1))
        self._count("batch_retries")
        error = describe_error(exc)
        fields: dict[str, object] = {"error": error, **self._store_fields(exc)}
        fields |= {"retry_in_s": delay, "failures_in_a_row": self._failures}
        # The traceback once per error (every time at debug level): a lasting outage
        # repeats the error with every retry.
        traced = error != self._traced_error or log.isEnabledFor(logging.DEBUG)
        self._traced_error = error
        log.error(
            "batch_failed",
            extra={"fields": fields},
            exc_info=exc if traced and not isinstance(exc, PublishError) else None,
        )
        outbox.abort()
        self.health.expect_pause(delay)
        stop.wait(delay)
        return self.recover(consumer, outbox, stop)

    def _store_fields(self, exc: BaseException) -> dict[str, str]:
        """``store`` and, for the known SQLite and OS errors, ``cause`` (the likely cause
        and what to do) of a failure that is the store's; nothing for others."""
        hint = failure_hint(exc)
        if hint is None and not isinstance(exc, sqlite3.Error | StoreError):
            return {}
        fields = {"store": str(self.settings.store_path)}
        return fields | ({"cause": hint} if hint is not None else {})

    def isolate(
        self,
        records: Mapping[TopicPartition, Sequence[ConsumerRecord]],
        outbox: Outbox,
        consumer: KafkaConsumer,
        stop: threading.Event,
        exc: Exception,
    ) -> Outbox:
        """Find the record that makes a batch fail and dead-letter it; process the rest.

        The batch is processed again in halves, from the state the store holds; a half
        that fails is split again, until one record fails on its own. That record goes
        to the dead-letter topic (``processing_error``, with the error). A failure of
        the store or the broker on the way ends the search: the batch is retried.
        """
        flat = [(tp, r) for tp, part in records.items() for r in part]
        if not flat:  # no record to blame (a tick closed on its grace)
            return self._retry(consumer, outbox, stop, exc)
        log.error(
            "batch_failed",
            extra={"fields": {"error": describe_error(exc), "action": "isolating the record"}},
            exc_info=True,
        )
        self._count("batch_isolations")
        outbox = self._fresh_state(outbox, stop)
        chunks = [(flat, True)]  # (records in poll order, known to fail), tried in order
        while chunks:
            chunk, failed = chunks.pop(0)
            if not chunk:
                continue
            try:
                if not failed:
                    self.handle(_batch_of(chunk), outbox, consumer)
                    continue
                if len(chunk) == 1:  # the culprit: alone, it failed
                    self._reject(*chunk[0], outbox, consumer, exc)
                    continue
            except PublishError as failure:
                log.error("publish_failed", extra={"fields": {"error": str(failure)}})
                return self.recover(consumer, outbox, stop)
            except Exception as failure:
                if failed or is_systemic(failure):  # rejecting a record failed: not its doing
                    return self._retry(consumer, outbox, stop, failure)
                exc = failure
                outbox = self._fresh_state(outbox, stop)
                chunks.insert(0, (chunk, True))
                continue
            middle = len(chunk) // 2
            chunks[:0] = [(chunk[:middle], False), (chunk[middle:], False)]
        self._failures = 0
        return outbox

    def _fresh_state(self, outbox: Outbox, stop: threading.Event) -> Outbox:
        """Drop a failed attempt: its unsent output, its state (back to the store's)."""
        outbox.abort()
        self.partitions.pending_commit.clear()
        self._restore_until_it_works(stop)
        return self._outbox_when_reachable(stop)

    def _reject(
        self,
        tp: TopicPartition,
        record: ConsumerRecord,
        outbox: Outbox,
        consumer: KafkaConsumer,
        exc: Exception,
    ) -> None:
        """Dead-letter ``record`` (``processing_error``), flush, store and commit it."""
        report, batch = PollReport(records=1), Batch()
        key = self.partitions.key(tp)
        if self.partitions.fresh(tp, [record]):
            report.counts["consumed"] += 1
            detail = record_error(exc)
            self.decoder.dead_letter(outbox, record, PROCESSING_ERROR, detail, report.counts)
        else:
            report.counts["redelivered"] += 1
        batch.offsets[key] = max(self.partitions.next_offset.get(key, 0), record.offset + 1)
        outbox.flush(self.config.flush_timeout_s)
        self._store(report, batch)
        self.partitions.pending_commit[tp] = record.offset + 1
        self.commit(consumer)

    def _new_outbox(self) -> Outbox:
        from pipeline.kafka.clients import make_producer

        limit = self.max_message_bytes
        config = {**PRODUCER_CONFIG, "batch_size": min(PRODUCER_CONFIG["batch_size"], limit)}
        producer = make_producer(self.settings, **config, max_request_size=limit)
        return Outbox(producer, bulk=self.config.bulk_publish, max_message_bytes=limit)

    def recover(self, consumer: KafkaConsumer, outbox: Outbox, stop: threading.Event) -> Outbox:
        """Forget a batch the broker did not take: state from the store, the consumer back
        to the stored offsets, missing topics re-created, a new producer (the old one may
        hold a dead broker's producer id). Returns the new outbox."""
        from kafka.errors import KafkaError

        outbox.abort()  # what the failed batch queued: the replay sends it again
        self.partitions.pending_commit.clear()
        self._restore_until_it_works(stop)
        rewound: dict[TopicPartition, int | None] = {}
        for tp in consumer.assignment():
            offset = self.partitions.next_offset.get(self.partitions.key(tp))
            if offset is None:  # nothing of it stored yet: where the group left it
                try:
                    offset = consumer.committed(tp, timeout_ms=5000)
                except KafkaError:  # broker away: replay it all (at least once)
                    offset = None
            if offset is not None:
                consumer.seek(tp, offset)
            else:
                consumer.seek_to_beginning(tp)
            rewound[tp] = offset
        self.partitions.rewound(rewound, time.monotonic())
        self._count("recoveries")
        self._unsettled = True
        return self._outbox_when_reachable(stop)

    def _outbox_when_reachable(self, stop: threading.Event) -> Outbox:
        """A new outbox once a broker answers (missing topics re-created first)."""
        from pipeline.kafka.clients import KafkaUnavailable

        while True:
            self._check_topics()
            try:
                return self._new_outbox()
            except KafkaUnavailable as exc:
                log.warning("broker_unreachable", extra={"fields": {"error": str(exc)}})
                self.health.expect_pause(1.0)
                if stop.wait(1.0):
                    raise

    def _restore_until_it_works(self, stop: threading.Event) -> None:
        """:meth:`restore` (from a store at the path again when its file was deleted or
        replaced, :meth:`reopen_store`), retried with the backoff while the store fails
        (raises the error when ``stop`` is set meanwhile)."""
        delay = RETRY_FIRST_S
        while True:
            try:
                if not self.reopen_store():
                    self.restore()
                return
            except Exception as exc:
                fields = {"error": describe_error(exc), **self._store_fields(exc)}
                log.error("restore_failed", extra={"fields": fields})
                self.health.expect_pause(delay)
                if stop.wait(delay):
                    raise
                delay = min(RETRY_MAX_S, 2 * delay)

    def _check_topics(self) -> bool:
        """Create the service's topics that are missing; True when any was."""
        from kafka.errors import KafkaError

        from pipeline.kafka.clients import KafkaUnavailable, ensure_topics

        try:
            created = ensure_topics(self.settings)
        except (KafkaError, KafkaUnavailable, OSError) as exc:
            log.warning("broker_unreachable", extra={"fields": {"error": str(exc)}})
            return False
        if created:  # stored with the next batch: a store failure here must not stop the loop
            self._count("topics_recreated", len(created))
            log.warning("topics_recreated", extra={"fields": {"topics": created}})
        return bool(created)

    def renew_producer(self, outbox: Outbox, stop: threading.Event) -> Outbox:
        """A new producer between batches (nothing is pending then) once the broker has
        lost the service's topics: a restarted broker lost the old producer's id too, and
        the first batch sent with it would fail."""
        outbox.abort()
        return self._outbox_when_reachable(stop)


def is_systemic(exc: BaseException) -> bool:
    """Whether an error is the store's or the broker's rather than one record's: I/O,
    memory, Kafka, and SQLite errors other than a row it refused (constraints, types)."""
    from kafka.errors import KafkaError

    if isinstance(exc, OSError | MemoryError | KafkaError):
        return True
    refused_row = (
        sqlite3.IntegrityError, sqlite3.DataError, sqlite3.ProgrammingError, sqlite3.InterfaceError
    )  # fmt: skip
    return isinstance(exc, sqlite3.Error) and not isinstance(exc, refused_row)


def _batch_of(
    chunk: Sequence[tuple[TopicPartition, ConsumerRecord]],
) -> dict[TopicPartition, list[ConsumerRecord]]:
    """Records in poll order -> records per partition (order kept)."""
    batch: dict[TopicPartition, list[ConsumerRecord]] = {}
    for tp, record in chunk:
        batch.setdefault(tp, []).append(record)
    return batch


def _highwater(consumer: KafkaConsumer) -> Callable[[TopicPartition], int | None]:
    """The consumer's last known high watermark of a partition (None when unknown)."""

    def highwater(tp: TopicPartition) -> int | None:
        try:
            return consumer.highwater(tp)
        except Exception:  # no longer assigned (a rebalance in between): unknown
            return None

    return highwater
