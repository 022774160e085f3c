"""The forecasting service's Kafka loop, and :func:`serve` (``roadcast serve``).

:class:`ForecastService` is a :class:`pipeline.service.processor.PollProcessor` driven by
a consumer group with manual commits: poll, process, flush, store, commit; it adopts new
partition assignments, recovers from a batch the broker did not take, re-creates missing
topics while idle and logs its counters. ``docs/service.md`` describes the data flow and
the delivery guarantees.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.forecasters.base import Forecaster
from pipeline.kafka.outbox import Outbox, PublishError
from pipeline.service.config import ServiceConfig
from pipeline.service.hooks import AlertHook, RestorableAlertHook
from pipeline.service.latency import percentiles
from pipeline.service.partitions import RebalanceListener
from pipeline.service.processor import PollProcessor, PollReport
from pipeline.service.runtime import (
    install_signal_handlers,
    restore_signal_handlers,
    set_torch_threads,
    track_gc,
    tune_gc,
    untrack_gc,
)
from pipeline.service.store_rows import Batch
from pipeline.settings import Settings

if TYPE_CHECKING:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.consumer.fetcher import ConsumerRecord

    from pipeline.alerts.config import AlertingConfig

log = logging.getLogger("roadcast.service")

# The service's producer. Every batch ends with a flush, so records need not linger to be
# batched: a long linger keeps kafka-python's network thread idle (and off the GIL) while
# the batch's forecasts are encoded and queued, then the flush sends them in a few large
# requests (measurements in docs/decisions.md). ``max_block_ms``: how long a send may wait
# for metadata (a topic a fresh broker lacks) before the batch is abandoned and replayed.
PRODUCER_CONFIG: dict[str, int] = {"linger_ms": 1000, "batch_size": 1 << 20, "max_block_ms": 10_000}
# Counters shown in the periodic "stats" log line.
_STATS = (
    "consumed", "valid", "dead_lettered", "late", "duplicate", "conflict", "ticks_closed",
    "forecasts_published", "alerts_published", "redelivered",
)  # fmt: skip


class ForecastService(PollProcessor):
    """The service: a :class:`PollProcessor` fed by a Kafka consumer; :meth:`run` is the loop.

    Parameters
    ----------
    settings : bootstrap servers, topics, consumer group, store path.
    config : tick grid, lateness, batching.
    models : ``{name: model}`` to forecast with (see :func:`pipeline.model_dir.load_bundles`).
    alert_hook : optional detector pipeline called for every closed tick.
    """

    def __init__(
        self,
        settings: Settings,
        config: ServiceConfig,
        models: Mapping[str, Forecaster],
        *,
        alert_hook: AlertHook | None = None,
    ) -> None:
        super().__init__(settings, config, models, alert_hook=alert_hook)
        self._logged_stage_s: dict[str, float] = {}
        self._logged_ticks = 0

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
        report, batch = self.process(records, outbox, highwater=_highwater(consumer))
        with self._timed("flush"):
            outbox.flush(self.config.flush_timeout_s)
        with self._timed("store"):
            self.finish(report, batch, flushed_at_ms=time.time_ns() // 1_000_000)
        for tp, part in records.items():
            if part:
                self.partitions.pending_commit[tp] = part[-1].offset + 1
        with self._timed("commit"):
            self.commit(consumer)
        return report

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

    def run(
        self, *, stop: threading.Event | None = None, handle_signals: bool = True
    ) -> dict[str, int]:
        """Consume until ``stop`` is set (or SIGTERM/SIGINT arrives); returns the counters.

        Raises
        ------
        pipeline.kafka.clients.KafkaUnavailable
            When no broker answers at start-up.
        """
        from kafka.errors import KafkaError

        from pipeline.kafka.clients import ensure_topics, make_consumer

        stop = stop or threading.Event()
        previous = install_signal_handlers(stop) if handle_signals else {}
        consumer = None
        outbox = None
        gc_hook = None
        try:
            set_torch_threads(self.config.torch_threads)
            self.warm_up()
            if self.config.tune_gc:
                tune_gc()
            gc_hook = track_gc(self.stage_s)  # after the start-up collection: pauses while serving
            ensure_topics(self.settings)
            consumer = make_consumer(
                self.settings,
                group_id=self.settings.consumer_group,
                max_poll_records=self.config.poll_records,
            )
            consumer.subscribe(
                [self.settings.topic_readings],
                listener=RebalanceListener(self.partitions, consumer),
            )
            outbox = self._new_outbox()
            self._log_started()
            last_stats = last_check = time.monotonic()
            while not stop.is_set():
                try:
                    records = consumer.poll(timeout_ms=self.config.poll_timeout_ms)
                except KafkaError as exc:  # the client reconnects by itself: wait and retry
                    log.warning("poll_failed", extra={"fields": {"error": str(exc)}})
                    stop.wait(1.0)
                    continue
                if self.partitions.changed and not self._adopt(consumer, records):
                    stop.wait(1.0)
                    continue
                now = time.monotonic()
                if records:
                    try:
                        self.handle(records, outbox, consumer)
                    except PublishError as exc:
                        log.error("publish_failed", extra={"fields": {"error": str(exc)}})
                        outbox = self.recover(consumer, outbox, stop)
                elif now - last_check >= self.config.topic_check_every_s:
                    last_check = now
                    self._check_topics()
                if now - last_stats >= self.config.stats_every_s:
                    last_stats = now
                    self._log_stats()
        finally:
            if gc_hook is not None:
                untrack_gc(gc_hook)
            if consumer is not None:
                self.commit(consumer)
                consumer.close()
            if outbox is not None:
                outbox.close(self.config.flush_timeout_s)
            restore_signal_handlers(previous)
            self._log_stats()
            log.info("stopped", extra={"fields": {"counters": dict(self.counters)}})
            self.store.close()
        return dict(self.counters)

    def _adopt(
        self,
        consumer: KafkaConsumer,
        records: Mapping[TopicPartition, Sequence[ConsumerRecord]],
    ) -> bool:
        """Adopt a new assignment before processing ``records``; False (and the records
        handed back to the consumer) when the broker did not answer."""
        from kafka.errors import KafkaError

        from pipeline.kafka.clients import KafkaUnavailable

        try:
            self.partitions.adopt(
                consumer, self._describe_topic, self.store.offsets, time.monotonic()
            )
            return True
        except (KafkaError, KafkaUnavailable) as exc:
            log.warning("assignment_deferred", extra={"fields": {"error": str(exc)}})
            for tp, part in records.items():  # not processed: read them again next time
                if part and tp in consumer.assignment():
                    consumer.seek(tp, part[0].offset)
            return False

    def _new_outbox(self) -> Outbox:
        from pipeline.kafka.clients import make_producer

        return Outbox(
            make_producer(self.settings, **PRODUCER_CONFIG), bulk=self.config.bulk_publish
        )

    def recover(self, consumer: KafkaConsumer, outbox: Outbox, stop: threading.Event) -> Outbox:
        """Forget a batch the broker did not take: state from the store, the consumer back
        to the stored offsets, missing topics re-created, a new producer (the old one may
        hold a dead broker's producer id). Returns the new outbox."""
        from kafka.errors import KafkaError

        from pipeline.kafka.clients import KafkaUnavailable

        outbox.close(1.0)
        self.partitions.pending_commit.clear()
        self.restore()
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
        self.store.write(Batch(counters={"recoveries": 1}))
        self.counters["recoveries"] += 1
        while True:
            self._check_topics()
            try:
                return self._new_outbox()
            except KafkaUnavailable as exc:
                log.warning("broker_unreachable", extra={"fields": {"error": str(exc)}})
                if stop.wait(1.0):
                    raise

    def _describe_topic(self, topic: str) -> str:
        """``topic@<topic id>``: a re-created topic (fresh broker) gets another key.

        Raises ``KafkaError`` or ``KafkaUnavailable`` when the broker does not answer.
        """
        from pipeline.kafka.clients import make_admin

        admin = make_admin(self.settings)
        try:
            described = admin.describe_topics([topic])
        finally:
            admin.close()
        topic_id = described[0].get("topic_id") if described else None
        return f"{topic}@{topic_id}" if topic_id else topic

    def _check_topics(self) -> None:
        from kafka.errors import KafkaError

        from pipeline.kafka.clients import KafkaUnavailable, ensure_topics

        try:
            created = ensure_topics(self.settings)
        except (KafkaError, KafkaUnavailable, OSError) as exc:
            log.warning("broker_unreachable", extra={"fields": {"error": str(exc)}})
            return
        if created:
            self.store.write(Batch(counters={"topics_recreated": len(created)}))
            self.counters["topics_recreated"] += len(created)
            log.warning("topics_recreated", extra={"fields": {"topics": created}})

    def _log_started(self) -> None:
        fields = {
            "bootstrap": self.settings.bootstrap_servers,
            "topic": self.settings.topic_readings,
            "group": self.settings.consumer_group,
            "models": [m.name for m in self.models],
            "sensors": len(self.sensor_ids),
            "window": self.window,
            "tick": str(self.config.tick),
            "store": str(self.settings.store_path),
        }
        if isinstance(self.alert_hook, RestorableAlertHook):
            fields["alerts"] = self.alert_hook.describe()
        elif self.alert_hook is not None:
            fields["alerts"] = "custom hook"
        log.info("started", extra={"fields": fields})

    def _log_stats(self) -> None:
        fields: dict[str, Any] = {k: self.counters.get(k, 0) for k in _STATS}
        for name, value in percentiles(self.latencies).items():
            fields[f"latency_{name}_ms"] = None if np.isnan(value) else round(value, 1)
        fields["open_ticks"] = len(self.assembler.open_ticks)
        ticks = self.counters.get("ticks_closed", 0) - self._logged_ticks
        if ticks > 0:  # where the time of a tick went since the last stats line
            fields["ms_per_tick"] = {
                k: round(1000 * (v - self._logged_stage_s.get(k, 0.0)) / ticks, 2)
                for k, v in sorted(self.stage_s.items())
            }
        self._logged_stage_s = dict(self.stage_s)
        self._logged_ticks = self.counters.get("ticks_closed", 0)
        log.info("stats", extra={"fields": fields})


def _highwater(consumer: KafkaConsumer) -> Callable[[TopicPartition], int | None]:
    """The consumer's last known high watermark of a partition (None when unknown)."""

    def highwater(tp: TopicPartition) -> int | None:
        try:
            return consumer.highwater(tp)
        except Exception:  # no longer assigned (a rebalance in between): unknown
            return None

    return highwater


def serve(
    settings: Settings,
    config: ServiceConfig,
    *,
    model_dir: Path | None = None,
    stop: threading.Event | None = None,
    alert_hook: AlertHook | None = None,
    alerting: AlertingConfig | None = None,
) -> dict[str, int]:
    """Load the bundles and run the service until stopped (``roadcast serve``).

    Parameters
    ----------
    settings : connection, topics, consumer group, store path, default model dir.
    config : the service's behaviour.
    model_dir : bundles to load (default ``settings.model_dir``).
    stop : set it to stop the service from another thread.
    alert_hook : your own anomaly detectors, called per closed tick.
    alerting : the built-in detectors and alert rules (:mod:`pipeline.alerts.build`; what
        ``roadcast serve`` uses, on by default there); None: none of them.
    """
    from pipeline.model_dir import load_bundles, union_sensors

    if alert_hook is not None and alerting is not None and alerting.enabled:
        raise ValueError("pass either alert_hook or alerting, not both")
    stop = stop or threading.Event()
    # Before the slow part (loading torch and the bundles): a SIGTERM during start-up
    # must stop the service cleanly too, not kill it.
    previous = install_signal_handlers(stop)
    try:
        directory = model_dir or settings.model_dir
        models = load_bundles(directory, only=config.only or None)
        if alerting is not None:
            from pipeline.alerts.build import build_alerting

            alert_hook = build_alerting(
                directory, models, union_sensors(dict(models)), config.tick, alerting
            )
        service = ForecastService(settings, config, models, alert_hook=alert_hook)
        return service.run(stop=stop, handle_signals=False)
    finally:
        restore_signal_handlers(previous)
