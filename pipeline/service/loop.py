"""The forecasting service's Kafka loop, and :func:`serve` (``roadcast serve``).

:class:`ForecastService` is a :class:`pipeline.service.batches.BatchHandler` (one batch
with Kafka around it, and what happens when it fails) driven by a consumer group with
manual commits: it polls, hands each batch over, adopts new partition assignments, swaps
models in (hot reload), re-creates missing topics while idle, reports its health, lag
and counters. ``docs/service.md`` describes the data flow and the delivery guarantees.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.forecasters.base import Forecaster
from pipeline.kafka.dead_letters import topic_max_message_bytes
from pipeline.service.batches import BatchHandler, _highwater
from pipeline.service.config import ServiceConfig
from pipeline.service.decoding import describe_error
from pipeline.service.health import Endpoints, Health, broker_check, start_endpoints, store_check
from pipeline.service.hooks import AlertHook, RestorableAlertHook
from pipeline.service.joining import CANCEL_WAIT_S, GroupJoin, subscribed_consumer
from pipeline.service.latency import percentiles
from pipeline.service.model_set import Versioned
from pipeline.service.partitions import PartitionTracker
from pipeline.service.runtime import (
    count_uncommitted,
    install_signal_handlers,
    restore_signal_handlers,
    set_torch_threads,
    track_gc,
    tune_gc,
    untrack_gc,
)
from pipeline.settings import Settings

if TYPE_CHECKING:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.consumer.fetcher import ConsumerRecord

    from pipeline.alerts.config import AlertingConfig
    from pipeline.registry.watch import ServingWatcher
    from pipeline.service.metrics import ServiceMetrics

log = logging.getLogger("roadcast.service")

# How long a consumer replaced by a new one may take to leave the group.
CLOSE_TIMEOUT_MS = 5000

# Counters shown in the periodic "stats" log line.
_STATS = (
    "consumed", "valid", "dead_lettered", "late", "duplicate", "conflict", "ticks_closed",
    "forecasts_published", "alerts_published", "redelivered", "recoveries", "batch_retries",
)  # fmt: skip


class ForecastService(BatchHandler):
    """The service: a :class:`BatchHandler` fed by a Kafka consumer; :meth:`run` is the loop.

    Parameters
    ----------
    settings : bootstrap servers, topics, consumer group, store path.
    config : tick grid, lateness, batching.
    models : ``{name: model}`` to forecast with (see :func:`pipeline.model_dir.load_bundles`).
    alert_hook : optional detector pipeline called for every closed tick.
    versions : each model's version (see :class:`PollProcessor`).
    watcher : the model directory's serving set, polled between batches: a new set is
        swapped in at a tick boundary (hot reload, :meth:`reload`); None: never.
    metrics : the Prometheus metrics to keep up to date (None: none).
    health : the liveness and readiness the loop reports (:mod:`pipeline.service.health`).
    joining : the consumer group join started before the models loaded (:func:`serve`);
        None: :meth:`run` starts it.
    """

    def __init__(
        self,
        settings: Settings,
        config: ServiceConfig,
        models: Mapping[str, Forecaster],
        *,
        alert_hook: AlertHook | None = None,
        versions: Mapping[str, Versioned] | None = None,
        watcher: ServingWatcher | None = None,
        metrics: ServiceMetrics | None = None,
        health: Health | None = None,
        joining: GroupJoin | None = None,
    ) -> None:
        super().__init__(
            settings, config, models, alert_hook=alert_hook, versions=versions,
            metrics=metrics, health=health,
        )  # fmt: skip
        self.joining = joining
        if joining is not None:  # its rebalance listener updates this tracker
            self.partitions = joining.partitions
        self.watcher = watcher
        self._logged_stage_s: dict[str, float] = {}
        self._logged_ticks = 0
        self._partition_count: dict[str, int] = {}  # per topic, from _describe_topic
        # Partitions of the readings topic the consumer knew when its assignment was
        # adopted, and since when the topic has had others (see _rejoin_if_stale).
        self._known_partitions: int | None = 0  # None: this kafka-python does not say
        self._known_for = -1  # the assignment (PartitionTracker.assignments) it is of
        self._stale_since: float | None = None
        # Per partition: the offset after the last record polled, and the last committed.
        self._polled_to: dict[TopicPartition, int] = {}
        self._committed_to: dict[TopicPartition, int] = {}

    def uncommitted(self) -> int:
        """Readings polled and not committed: what Kafka redelivers should the process
        stop now (a second stop signal, :func:`pipeline.service.runtime.stop_now`).
        Safe to call from another thread."""
        polled, committed = dict(self._polled_to), dict(self._committed_to)
        return sum(max(0, end - committed.get(tp, end)) for tp, end in polled.items())

    def _note_polled(self, records: Mapping[TopicPartition, Sequence[ConsumerRecord]]) -> None:
        for tp, part in records.items():
            if part:  # the first poll of a partition starts where the group committed
                self._committed_to.setdefault(tp, part[0].offset)
                self._polled_to[tp] = max(self._polled_to.get(tp, 0), part[-1].offset + 1)

    def commit(self, consumer: KafkaConsumer) -> None:
        """:meth:`BatchHandler.commit`, remembering what was committed (:meth:`uncommitted`)."""
        pending = dict(self.partitions.pending_commit)
        super().commit(consumer)
        if pending and not self.partitions.pending_commit:
            self._committed_to.update(pending)

    def reload(self) -> bool:
        """Swap in the serving set the watcher has loaded, if any: between batches, so at
        a tick boundary with everything before it stored, and never while a failed batch
        waits for its replay. True when the models were swapped."""
        if self.watcher is None or self._unsettled or self._failures:
            return False
        refusals = self.watcher.refusals
        loaded = self.watcher.poll()
        if loaded is not None and (reason := self.swap_models(loaded.models, loaded.versions)):
            self.watcher.refused(reason)
            loaded = None
        if self.watcher.refusals > refusals:  # a set that did not load, or was not swapped in
            self._count("model_swaps_refused")
        if loaded is None:
            return False
        self.watcher.swapped(loaded)
        self._count("model_swaps")
        return True

    def run(
        self, *, stop: threading.Event | None = None, handle_signals: bool = True
    ) -> dict[str, int]:
        """Consume until ``stop`` is set (or SIGTERM/SIGINT arrives); returns the counters.
        A stop during start-up ends it at once (``stopped_before_start``), without waiting
        for the group join or a broker.

        Raises
        ------
        pipeline.kafka.clients.KafkaUnavailable
            When no broker answers at start-up.
        """
        from kafka.errors import KafkaError

        from pipeline.kafka.clients import ensure_topics
        from pipeline.kafka.unreadable import poll_readable

        stop = stop or threading.Event()
        previous = install_signal_handlers(stop) if handle_signals else {}
        count_uncommitted(self.uncommitted)
        # The group join (seconds) runs while the models warm up (pipeline/service/joining.py).
        joining = self.joining or GroupJoin(
            self.settings, self.partitions, self.config.poll_records, stop
        )
        self.joining = None
        consumer = None
        outbox = None
        gc_hook = None
        started = False
        try:
            set_torch_threads(self.config.torch_threads)
            self.warm_up()
            if self.config.tune_gc:
                tune_gc()
            gc_hook = track_gc(self.stage_s)  # after the start-up collection: pauses while serving
            if not joining.joined():
                return dict(self.counters)
            consumer, pending = joining.result()
            ensure_topics(self.settings)
            self.max_message_bytes = topic_max_message_bytes(self.settings, self.settings.topic_dlq)
            outbox = self._new_outbox()
            self._add_checks(consumer)
            if stop.is_set():
                return dict(self.counters)
            self._log_started()
            started = True
            last_stats = last_check = time.monotonic()
            while not stop.is_set():
                self.health.beat()
                try:
                    records = pending or poll_readable(consumer, self.poll_timeout_ms())
                    pending = {}
                except KafkaError as exc:  # the client reconnects by itself: wait and retry
                    log.warning("poll_failed", extra={"fields": {"error": str(exc)}})
                    stop.wait(1.0)
                    continue
                if self.partitions.changed and not self._adopt(consumer, records):
                    stop.wait(1.0)
                    continue
                if self.metrics is not None:
                    with self._timed("metrics"):
                        self.metrics.record_lag(self._lags(consumer))
                now = time.monotonic()
                if self.partitions.join_stalled(now, self.config.rejoin_after_s):
                    consumer = self._rejoin(consumer, now)
                self._note_polled(records)
                if records or self.grace_due(_highwater(consumer)):  # a tick's grace is over
                    outbox = self.handle_safely(records, outbox, consumer, stop)
                    self.reload()
                elif not self.reload() and now - last_check >= self.config.topic_check_every_s:
                    last_check = now
                    if self._check_topics():
                        outbox = self.renew_producer(outbox, stop)
                    if self._check_readings_topic(consumer):
                        consumer = self._rejoin_if_stale(consumer, now)
                if now - last_stats >= self.config.stats_every_s:
                    last_stats = now
                    self._log_stats()
        finally:
            self.health.stopping = True
            joining.cancel()  # when it did not hand its consumer over
            if gc_hook is not None:
                untrack_gc(gc_hook)
            if consumer is not None:
                self.commit(consumer)
                consumer.close()
            if outbox is not None:
                outbox.close(self.config.flush_timeout_s)
            restore_signal_handlers(previous)
            count_uncommitted(None)
            if self.watcher is not None:
                self.watcher.close()
            if stop.is_set() and not started:
                hint = "a stop was requested during start-up; nothing was consumed"
                log.info("stopped_before_start", extra={"fields": {"hint": hint}})
            else:
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
            if self._known_for != self.partitions.assignments:  # a new assignment
                topic = self.settings.topic_readings
                self._known_partitions = _cached_partitions(consumer, topic)
                self._known_for = self.partitions.assignments
                self._stale_since = None
            self._warn_if_partial()
            return True
        except (KafkaError, KafkaUnavailable) as exc:
            log.warning("assignment_deferred", extra={"fields": {"error": str(exc)}})
            for tp, part in records.items():  # not processed: read them again next time
                if part and tp in consumer.assignment():
                    consumer.seek(tp, part[0].offset)
            return False

    def _rejoin_if_stale(self, consumer: KafkaConsumer, now: float) -> KafkaConsumer:
        """:meth:`_rejoin` when the assignment was adopted while the consumer knew other
        partitions of the readings topic than it has had for ``rejoin_after_s`` (re-created
        or grown): kafka-python 3.0.12 does not redo such an assignment, and a lone member
        kept the old partitions for good."""
        every = self._partition_count.get(self.settings.topic_readings, 0)
        if not every or self._known_partitions in (None, every):
            self._stale_since = None
            return consumer
        if self._stale_since is None:
            self._stale_since = now
        if now - self._stale_since < self.config.rejoin_after_s:
            return consumer
        hint = (
            f"the assignment was made when the group knew {self._known_partitions} partitions "
            f"of {self.settings.topic_readings}, which has {every}; a new consumer joins afresh"
        )
        fresh = self._rejoin(consumer, now, since=self._stale_since, hint=hint)
        self._stale_since = None if fresh is not consumer else now
        return fresh

    def _rejoin(
        self,
        consumer: KafkaConsumer,
        now: float,
        *,
        since: float | None = None,
        hint: str = "the rebalance assigned nothing; a new consumer joins the group afresh",
    ) -> KafkaConsumer:
        """A new consumer in place of one whose rebalance, under way since ``since``
        (default ``partitions.rebalancing_since``), assigned nothing for ``rejoin_after_s``
        (:mod:`pipeline.service.partitions`), or whose assignment is stale (``hint`` says
        which); the old one leaves the group. The old one is kept, and the clock
        restarted, when no broker answers."""
        from pipeline.kafka.clients import KafkaUnavailable

        waited = now - (since or self.partitions.rebalancing_since or now)
        self.partitions.rebalancing_since = now if since is None else None
        try:
            fresh = subscribed_consumer(self.settings, self.partitions, self.config.poll_records)
        except KafkaUnavailable as exc:
            log.warning("broker_unreachable", extra={"fields": {"error": str(exc)}})
            return consumer
        try:
            consumer.close(timeout_ms=CLOSE_TIMEOUT_MS)
        except Exception as exc:  # the old member is dropped by the broker at its session end
            log.warning("consumer_close_failed", extra={"fields": {"error": describe_error(exc)}})
        self._count("group_rejoins")
        fields = {"waited_s": round(waited, 1), "group": self.settings.consumer_group}
        log.warning("group_rejoin", extra={"fields": fields | {"hint": hint}})
        return fresh

    def _warn_if_partial(self) -> None:
        """Warn when this instance holds only some partitions of the readings topic (as
        the broker described it while the assignment was adopted): another member of its
        group reads the rest, so this one forecasts from part of the network, publishes
        forecasts for every sensor and reports the other sensors down."""
        topic = self.settings.topic_readings
        mine = {tp.partition for tp in self.partitions.assigned if tp.topic == topic}
        every = self._partition_count.get(topic, 0)
        if mine and len(mine) < every:
            hint = (
                f"another member of group {self.settings.consumer_group} reads the rest: "
                "each instance then forecasts from part of the network, publishes "
                "forecasts for every sensor and reports the other sensors down; run one "
                "instance per group (see the README's scaling section)"
            )
            fields = {"topic": topic, "assigned": sorted(mine), "partitions": every}
            log.warning("partial_assignment", extra={"fields": fields | {"hint": hint}})

    def _check_readings_topic(self, consumer: KafkaConsumer) -> bool:
        """Adopt the assignment again when the readings topic was deleted and created anew
        since it was adopted (its id changed): the consumer's positions belong to the old
        log, and a broker that answers a fetch past a log's end with nothing (Tansu) would
        leave the new log's first records unread. No rebalance need follow a deletion, so
        the loop looks while idle; :meth:`PartitionTracker.adopt` then reads the new log
        from its start, and fresh metadata starts a rebalance if its partitions differ.
        True when the topic is the one adopted (its partition count just described)."""
        from kafka.errors import KafkaError

        from pipeline.kafka.clients import KafkaUnavailable

        topic = self.settings.topic_readings
        adopted = self.partitions.topic_keys.get(topic)
        if adopted is None or self.partitions.changed:
            return False
        try:
            if self._describe_topic(topic) == adopted:
                return True
            consumer.topics()  # fresh metadata: kafka-python rejoins if the partitions differ
        except (KafkaError, KafkaUnavailable) as exc:
            log.warning("broker_unreachable", extra={"fields": {"error": str(exc)}})
            return False
        self.partitions.changed = True
        return False

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
        self._partition_count[topic] = len(described[0].get("partitions") or []) if described else 0
        return f"{topic}@{topic_id}" if topic_id else topic

    def _add_checks(self, consumer: KafkaConsumer) -> None:
        """The readiness checks of ``/readyz`` (:class:`pipeline.service.health.Health`)."""

        def group() -> str | None:
            if not self.partitions.assigned:
                return f"no partition of {self.settings.topic_readings} assigned yet"
            return "adopting a new assignment" if self.partitions.changed else None

        self.health.add_check("models", lambda: None if self.models else "no model loaded")
        self.health.add_check("group", group)
        self.health.add_check("broker", broker_check(self.settings))
        self.health.add_check(
            "store",
            store_check(
                self.settings.store_path, lambda: self.store.replaced() or self._store_error
            ),
        )

    def _lags(self, consumer: KafkaConsumer) -> dict[tuple[str, int], int]:
        """Records not yet processed per assigned partition, from the consumer's last
        known high watermarks (no broker round trip); partitions without one are left out."""
        lags = {}
        highwater = _highwater(consumer)
        for tp in list(self.partitions.assigned):
            high = highwater(tp)
            if high is not None:
                position = self.partitions.position.get(tp, 0)
                lags[(tp.topic, tp.partition)] = max(0, high - position)
        return lags

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
        fields["sensors_down"] = int(self.assembler.down.sum())
        ticks = self.counters.get("ticks_closed", 0) - self._logged_ticks
        if ticks > 0:  # where the time of a tick went since the last stats line
            fields["ms_per_tick"] = {
                k: round(1000 * (v - self._logged_stage_s.get(k, 0.0)) / ticks, 2)
                for k, v in sorted(self.stage_s.items())
            }
        self._logged_stage_s = dict(self.stage_s)
        self._logged_ticks = self.counters.get("ticks_closed", 0)
        log.info("stats", extra={"fields": fields})


def _cached_partitions(consumer: KafkaConsumer, topic: str) -> int | None:
    """How many partitions of ``topic`` the consumer's metadata holds, without a broker
    round trip (kafka-python's ``partitions_for_topic`` fetches, with no deadline, a topic
    it does not hold); None when this kafka-python keeps its metadata elsewhere."""
    cluster = getattr(consumer, "_cluster", None)
    if cluster is None or not hasattr(cluster, "partitions_for_topic"):
        return None
    return len(cluster.partitions_for_topic(topic) or ())


def serve(
    settings: Settings,
    config: ServiceConfig,
    *,
    model_dir: Path | None = None,
    stop: threading.Event | None = None,
    alert_hook: AlertHook | None = None,
    alerting: AlertingConfig | None = None,
    endpoints: Endpoints | None = None,
    joining: GroupJoin | None = None,
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
    endpoints : ``/metrics``, ``/healthz``, ``/readyz`` already serving (the caller closes
        them); None: started here when ``settings.metrics_enabled``.
    joining : the group join, started as early as the caller could (with ``stop``); None:
        started here, before the bundles load.

    Raises
    ------
    pipeline.service.health.EndpointError
        When the endpoints cannot listen on ``ROADCAST_METRICS_HOST:PORT``.
    pipeline.service.store.StoreError
        When another service holds the store (before the group join starts).
    pipeline.model_dir.BundleDirError
        When ``config.only``, ``config.tick`` or ``alerting``'s forecaster do not fit the
        bundles (before anything starts, when ``joining`` is None), or a bundle fails to
        load.
    """
    from pipeline.model_dir import BundleDirError, union_sensors
    from pipeline.registry.watch import ServingWatcher, load_serving, option_problem
    from pipeline.service.store import StoreLock

    if alert_hook is not None and alerting is not None and alerting.enabled:
        raise ValueError("pass either alert_hook or alerting, not both")
    stop = stop or threading.Event()
    directory = model_dir or settings.model_dir
    forecaster = alerting.judged if alerting is not None else None
    if joining is None and (  # refused before anything listens or joins the group
        problem := option_problem(directory, config.only, config.tick, forecaster)
    ):
        raise BundleDirError(problem)
    own = endpoints is None and settings.metrics_enabled
    if own:  # first: a taken port fails at once, and /healthz answers during start-up
        endpoints = start_endpoints(settings)
    try:  # before the join: a second service on the store never touches the group
        store_lock = StoreLock(settings.store_path)
    except BaseException:
        if own and endpoints is not None:
            endpoints.close()
        raise
    # Before the slow part (loading torch and the bundles): a SIGTERM during start-up
    # must stop the service cleanly too, not kill it.
    previous = install_signal_handlers(stop)
    # The group join takes seconds: it runs while the models load (joining.py).
    joining = joining or GroupJoin(
        settings, PartitionTracker(idle_s=config.partition_idle_s), config.poll_records, stop
    )
    try:
        loaded = load_serving(directory, only=config.only or None, tick=config.tick)
        models = loaded.models
        if alerting is not None:
            from pipeline.alerts.build import build_alerting

            alert_hook = build_alerting(
                directory, models, union_sensors(dict(models)), config.tick, alerting
            )
        watcher = None
        if config.reload_every_s is not None:
            watcher = ServingWatcher(
                directory,
                loaded.ids(),
                only=config.only,
                every_s=config.reload_every_s,
                tick=config.tick,
            )
        service = ForecastService(
            settings, config, models, alert_hook=alert_hook, versions=loaded.versions,
            watcher=watcher,
            metrics=endpoints.metrics if endpoints is not None else None,
            health=endpoints.health if endpoints is not None else None,
            joining=joining,
        )  # fmt: skip
        return service.run(stop=stop, handle_signals=False)
    finally:
        joining.cancel(wait_s=CANCEL_WAIT_S)
        restore_signal_handlers(previous)
        store_lock.release()
        if own and endpoints is not None:
            endpoints.close()
