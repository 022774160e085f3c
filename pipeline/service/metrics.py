"""The service's Prometheus metrics (``prometheus-client``), one registry per instance.

:class:`ServiceMetrics` owns a :class:`~prometheus_client.CollectorRegistry` of its own
(not the library's global one), so several services can run in one process (tests,
benchmarks) and each ``/metrics`` shows one service. ``docs/service.md`` lists the
metrics; the HTTP endpoint is :mod:`pipeline.service.health`.

Nothing is updated per record: the processor hands over a poll batch's counters and
store rows once the batch is stored (:meth:`ServiceMetrics.record_batch`), the loop its
partitions' lag once per poll (:meth:`ServiceMetrics.record_lag`); the store's size, the
loaded models and the time spent per stage are read when Prometheus scrapes.

Counters count what this process did since it started, as Prometheus expects: a restart
starts them at zero again and ``rate()``/``increase()`` treat the drop as a counter
reset. The totals across restarts are in the store (``roadcast status``). Gauges that
must be right after a restart (the last closed tick) are seeded from the store.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.kafka.schema import REASONS, STATUSES
from pipeline.service.decoding import FUTURE_TIMESTAMP, PROCESSING_ERROR, UNKNOWN_SENSOR
from pipeline.service.store_rows import AccuracyRows, Batch, TickRow
from pipeline.service.ticks import COMPLETE, GRACE, WATERMARK

PREFIX = "roadcast"
# No `<counter>_created` / `<histogram>_created` series (process-wide): Prometheus stores
# each as one more series, typed gauge in the text format and carrying the counter's help
# text, for a value (the counter's creation time) that process_start_time_seconds holds.
disable_created_metrics()
# Tick latency buckets (seconds): a complete tick is forecast within tens of ms, one
# closed by the grace (2 s) just after it, one closed by the watermark minutes later.
LATENCY_BUCKETS_S = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip
# Live MAE is over the forecasts whose targets are the last MAE_TICKS closed ticks:
# 288 five-minute ticks, a day, as `roadcast status` shows it.
MAE_TICKS = 288
# Service counters (pipeline.service.processor / loop) that are errors, by kind.
_ERROR_KINDS = (
    "batch_retries", "recoveries", "batch_isolations", "alert_hook_errors", "alerts_invalid",
    "dead_letters_unsent", "topics_recreated", "forecasts_nonfinite", "group_rejoins",
    "store_prunes_failed", "clock_suspect_batches",
)  # fmt: skip
# The ``reason`` of a dead letter: the schema's, and the service's own.
DEAD_LETTER_REASONS = (
    *sorted(REASONS), UNKNOWN_SENSOR, FUTURE_TIMESTAMP, PROCESSING_ERROR,
)  # fmt: skip


class ServiceMetrics:
    """The metrics of one service instance, in :attr:`registry`.

    Parameters
    ----------
    mae_ticks : how many target ticks the live MAE gauge covers.
    process : also export the process' CPU, memory and start time (``process_*``).
    """

    def __init__(self, *, mae_ticks: int = MAE_TICKS, process: bool = True) -> None:
        if mae_ticks < 1:
            raise ValueError(f"mae_ticks must be >= 1, got {mae_ticks}")
        self.registry = CollectorRegistry()
        reg = self.registry

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(f"{PREFIX}_{name}", doc, labels, registry=reg)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(f"{PREFIX}_{name}", doc, labels, registry=reg)

        self.consumed = counter("records_consumed", "Records read from the readings topic.")
        self.redelivered = counter(
            "records_redelivered", "Records Kafka delivered again that the store already held."
        )
        self.valid = counter("readings_valid", "Records that decoded into valid readings.")
        self.late = counter("readings_late", "Readings that arrived after their tick closed.")
        self.duplicate = counter("readings_duplicate", "Readings received twice (same value).")
        self.conflict = counter(
            "readings_conflict", "Readings received twice with different values."
        )
        self.key_mismatch = counter(
            "readings_key_mismatch",
            "Readings whose Kafka key is not their sensor (per-sensor order not kept).",
        )
        self.dead_letters = counter(
            "dead_letters",
            "Records dead-lettered, by reason (those the broker never took are counted in "
            'roadcast_errors_total{kind="dead_letters_unsent"} too).',
            ("reason",),
        )
        self.forecasts = counter(
            "forecasts_published",
            "Forecasts published (one per model, sensor and tick, whatever the wire), by model.",
            ("model",),
        )
        self.alerts = counter(
            "alerts_published", "Alert records published, by status.", ("status",)
        )
        self.ticks = counter(
            "ticks_closed", "Ticks closed, by the rule that closed them.", ("reason",)
        )
        self.model_errors = counter(
            "model_errors",
            "Forecast runs (one or more closed ticks) a model raised on, by model.",
            ("model",),
        )
        self.errors = counter("errors", "Failures the service recovered from, by kind.", ("kind",))
        self.model_swaps = counter(
            "model_swaps", "Hot reloads of the serving set, by result (swapped, refused).",
            ("result",),
        )  # fmt: skip
        self.latency = Histogram(
            f"{PREFIX}_tick_latency_seconds",
            "From a tick's last reading (Kafka timestamp) to its forecasts acknowledged.",
            buckets=LATENCY_BUCKETS_S,
            registry=reg,
        )
        self.lag = gauge(
            "consumer_lag_records",
            "Records of a partition not yet processed (high watermark - position).",
            ("topic", "partition"),
        )
        self.pruned = counter(
            "store_pruned_rows", "Rows the store's retention deleted, by table.", ("table",)
        )
        self.sensors_down = gauge("sensors_down", "Sensors currently down.")
        build = gauge(
            "build_info", "The roadcast version this service runs (value 1).", ("version",)
        )
        build.labels(roadcast_version()).set(1)
        self.open_ticks = gauge("open_ticks", "Ticks waiting to close.")
        self._accuracy = _Accuracy(mae_ticks)  # error sums kept in arrays, exported at scrapes
        reg.register(self._accuracy)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        # Each label value known in advance starts at 0: rate() and increase() see an
        # event even when it is the first of its kind (a series born at 1 shows none).
        for metric, values in (
            (self.errors, _ERROR_KINDS),
            (self.dead_letters, DEAD_LETTER_REASONS),
            (self.ticks, (COMPLETE, GRACE, WATERMARK)),
            (self.alerts, STATUSES),
            (self.model_swaps, tuple(_SWAPS.values())),
        ):
            for value in values:
                self._child(metric, value)
        self._lag_keys: set[tuple[str, str]] = set()
        self._sources = _Sources()
        reg.register(self._sources)
        self._state = _State()  # exported once known (configure()), never as a made-up 0
        reg.register(self._state)
        if process:
            from prometheus_client import PlatformCollector, ProcessCollector

            ProcessCollector(registry=reg)
            PlatformCollector(registry=reg)

    # ------------------------------------------------------------------ set-up
    def configure(
        self, *, tick_s: float, sensors: int, store: Path, last_tick: TickRow | None
    ) -> None:
        """The service's tick, sensor count and store; the newest stored tick (None: a new
        store, the last close is then the start, so a service that never closes one is
        noticed)."""
        state = self._state.values
        state["tick_interval_seconds"] = tick_s
        state["sensors"] = sensors
        self._state.store = store
        self._accuracy.tick_ms = round(tick_s * 1000)
        if last_tick is None:
            state["last_tick_closed_timestamp_seconds"] = time.time()
        else:  # a store written before closing times were kept: the tick's own time
            closed = last_tick.closed_ms or last_tick.ts_ms
            state["last_tick_closed_timestamp_seconds"] = closed / 1000
            state["last_tick_event_timestamp_seconds"] = last_tick.ts_ms / 1000

    def loaded_models(self, source: Callable[[], Iterable[tuple[str, str]]]) -> None:
        """Where ``roadcast_model_info{model, version}`` comes from: ``(name, version)``
        of every model the service forecasts with, read at each scrape. Each model's
        ``roadcast_model_errors_total`` starts at 0, so that ``increase()`` sees its first
        failure (a series born at 1 shows no increase)."""
        self._sources.models = source
        for name, _ in source():
            self._child(self.model_errors, name)

    def stage_seconds(self, source: Callable[[], Mapping[str, float]]) -> None:
        """Where ``roadcast_stage_seconds_total{stage}`` comes from (seconds per stage)."""
        self._sources.stages = source

    def alert_delivery(self, source: Callable[[], Mapping[str, Any]]) -> None:
        """Where the alert delivery metrics come from (:meth:`AlertDelivery.stats`)."""
        self._sources.delivery = source

    # ------------------------------------------------------------------ updates
    def record_batch(
        self, counts: Mapping[str, int], batch: Batch, *, sensors_down: int, open_ticks: int
    ) -> None:
        """A stored poll batch: its counters (``PollReport.counts``) and store rows."""
        for name, value in counts.items():
            if value:
                self._count(name, value)
        for rows in batch.forecasts:
            self._child(self.forecasts, rows.model).inc(len(rows.sensors))
            self._child(self.model_errors, rows.model)  # at 0: a model swapped in
        for tick in batch.ticks:
            if tick.latency_ms is not None:
                self.latency.observe(tick.latency_ms / 1000)
        if batch.ticks:
            newest = max(batch.ticks, key=lambda t: t.ts_ms)
            closed = max(t.closed_ms for t in batch.ticks)
            self._state.values["last_tick_closed_timestamp_seconds"] = closed / 1000
            self._state.values["last_tick_event_timestamp_seconds"] = newest.ts_ms / 1000
        if batch.accuracy:
            self._accuracy.add(batch.accuracy)
        self.sensors_down.set(sensors_down)
        self.open_ticks.set(open_ticks)

    def count(self, name: str, value: int = 1) -> None:
        """A service counter counted outside a batch (the loop's failures)."""
        self._count(name, value)

    def _count(self, name: str, value: int) -> None:
        head, _, label = name.partition(".")
        if label:
            target = _LABELLED.get(head)
            if target is not None:
                self._child(getattr(self, target), label).inc(value)
        elif head in _ERROR_KINDS:
            self._child(self.errors, head).inc(value)
        elif (target := _PLAIN.get(head)) is not None:
            getattr(self, target).inc(value)
        elif head in _SWAPS:
            self.model_swaps.labels(_SWAPS[head]).inc(value)

    def pruned_rows(self, removed: Mapping[str, int]) -> None:
        """Rows one prune of the store deleted, per table."""
        for table, rows in removed.items():
            self._child(self.pruned, table).inc(rows)

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once (``labels()`` takes a lock and checks
        its arguments every time)."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def record_lag(self, lags: Mapping[tuple[str, int], int]) -> None:
        """Each assigned partition's lag (records); partitions no longer assigned go."""
        keys = set()
        for (topic, partition), lag in lags.items():
            key = (topic, str(partition))
            keys.add(key)
            self._child(self.lag, *key).set(lag)
        for key in self._lag_keys - keys:
            self.lag.remove(*key)
            self._children.pop((id(self.lag), key), None)
        self._lag_keys = keys


# Counter names of the service -> attribute of ServiceMetrics.
_PLAIN = {
    "consumed": "consumed",
    "redelivered": "redelivered",
    "valid": "valid",
    "late": "late",
    "duplicate": "duplicate",
    "conflict": "conflict",
    "key_mismatch": "key_mismatch",
}
# Hot reload (pipeline/registry/watch.py) -> the ``result`` label of model_swaps.
_SWAPS = {"model_swaps": "swapped", "model_swaps_refused": "refused"}
_LABELLED = {
    "dead_lettered": "dead_letters",
    "alerts_published": "alerts",
    "ticks_closed": "ticks",
    "model_errors": "model_errors",
}


class _Accuracy(Collector):
    """Live accuracy per model and step (horizon): error sums since the start (counters)
    and over the last ``ticks`` target ticks (the live MAE), in arrays updated once per
    batch and turned into metrics when Prometheus scrapes."""

    def __init__(self, ticks: int) -> None:
        self.ticks = ticks
        self.tick_ms = 300_000
        self._lock = threading.Lock()
        # model -> (target tick held by each slot [ticks], n [ticks, step], abs [ticks, step])
        self._rings: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._totals: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # model -> (n, abs) [step]

    def add(self, rows: Iterable[AccuracyRows]) -> None:
        """Add the error sums of a stored batch."""
        with self._lock:
            for acc in rows:
                if len(acc.steps):
                    self._add(acc)

    def _add(self, acc: AccuracyRows) -> None:
        width = int(acc.steps.max())
        held, n, total = self._ring(acc.model, width)
        ticks = acc.targets_ms // self.tick_ms
        slots = ticks % self.ticks
        old = held[slots] != ticks  # slots of older ticks: those leave the window
        if old.any():
            stale = slots[old]
            held[stale] = ticks[old]
            n[stale] = 0
            total[stale] = 0.0
        columns = acc.steps - 1
        np.add.at(n, (slots, columns), acc.n)
        np.add.at(total, (slots, columns), acc.sum_abs)
        counts, sums = self._totals.get(acc.model, (np.zeros(0, np.int64), np.zeros(0)))
        counts, sums = _widen(counts, n.shape[1]), _widen(sums, n.shape[1])
        np.add.at(counts, columns, acc.n)
        np.add.at(sums, columns, acc.sum_abs)
        self._totals[acc.model] = (counts, sums)

    def _ring(self, model: str, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ring = self._rings.get(model)
        if ring is None or ring[1].shape[1] < width:
            held = np.full(self.ticks, -(2**62), np.int64)
            n = np.zeros((self.ticks, width), np.int64)
            total = np.zeros((self.ticks, width), np.float64)
            if ring is not None:  # a wider horizon than seen so far: keep what is held
                held[:] = ring[0]
                n[:, : ring[1].shape[1]] = ring[1]
                total[:, : ring[2].shape[1]] = ring[2]
            ring = self._rings[model] = (held, n, total)
        return ring

    def describe(self) -> Iterator[Metric]:
        yield from self._families({}, {})

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            totals = {m: (n.copy(), a.copy()) for m, (n, a) in self._totals.items()}
            window = {m: (n.sum(axis=0), a.sum(axis=0)) for m, (_, n, a) in self._rings.items()}
        yield from self._families(totals, window)

    def _families(
        self,
        totals: Mapping[str, tuple[np.ndarray, np.ndarray]],
        window: Mapping[str, tuple[np.ndarray, np.ndarray]],
    ) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily

        labels = ("model", "horizon")
        errors = CounterMetricFamily(
            f"{PREFIX}_forecast_abs_error",
            "Sum of absolute errors of scored forecasts, by model and horizon (steps).",
            labels=labels,
        )
        scored = CounterMetricFamily(
            f"{PREFIX}_forecast_scored",
            "Forecast values scored against readings, by model and horizon (steps).",
            labels=labels,
        )
        mae = GaugeMetricFamily(
            f"{PREFIX}_live_mae",
            f"MAE of the forecasts targeting the last {self.ticks} closed ticks, by model and "
            "horizon (since the service started).",
            labels=labels,
        )
        for model, (n, total) in sorted(totals.items()):
            for i in np.flatnonzero(n).tolist():
                errors.add_metric((model, str(i + 1)), float(total[i]))
                scored.add_metric((model, str(i + 1)), float(n[i]))
        for model, (n, total) in sorted(window.items()):
            for i in np.flatnonzero(n).tolist():
                mae.add_metric((model, str(i + 1)), float(total[i] / n[i]))
        yield from (errors, scored, mae)


def _widen(values: np.ndarray, width: int) -> np.ndarray:
    """``values`` padded with zeros to ``width``."""
    if len(values) >= width:
        return values
    return np.concatenate([values, np.zeros(width - len(values), values.dtype)])


class _Sources(Collector):
    """Metrics read when Prometheus scrapes: the loaded models, the stage times and the
    alert delivery beside the service."""

    def __init__(self) -> None:
        self.models: Callable[[], Iterable[tuple[str, str]]] = tuple
        self.stages: Callable[[], Mapping[str, float]] = dict
        self.delivery: Callable[[], Mapping[str, Any]] = dict

    def describe(self) -> Iterator[Metric]:
        yield from self._families({}, ())
        yield from _delivery_families({})

    def collect(self) -> Iterator[Metric]:
        yield from self._families(dict(self.stages()), list(self.models()))
        yield from _delivery_families(self.delivery())

    @staticmethod
    def _families(
        stages: Mapping[str, float], models: Iterable[tuple[str, str]]
    ) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily

        info = GaugeMetricFamily(
            f"{PREFIX}_model_info",
            "The models the service forecasts with (value 1), with their versions.",
            labels=("model", "version"),
        )
        for name, version in models:
            info.add_metric((name, version or "unversioned"), 1.0)
        yield info
        stage = CounterMetricFamily(
            f"{PREFIX}_stage_seconds",
            "Seconds the service spent in each stage of its work (decode, predict.<model>, "
            "encode, flush, store, ...).",
            labels=("stage",),
        )
        for name, seconds in sorted(stages.items()):
            stage.add_metric((name,), seconds)
        yield stage


# Per-receiver counters of pipeline.alerts.lanes -> the ``result`` label.
DELIVERY_RESULTS = ("delivered", "rejected", "retries", "resends", "resend_failures")


def _delivery_families(stats: Mapping[str, Any]) -> Iterator[Metric]:
    """``roadcast_alert_deliveries_total{receiver, result}`` and
    ``roadcast_alert_delivery_backlog{receiver}`` from :meth:`AlertDelivery.stats`."""
    from prometheus_client.core import CounterMetricFamily

    done = CounterMetricFamily(
        f"{PREFIX}_alert_deliveries",
        "Alerts sent to each receiver, by result (delivered, rejected for good, retries, "
        "resends of firing alerts, failed resends).",
        labels=("receiver", "result"),
    )
    for receiver, counts in sorted(stats.get("receivers", {}).items()):
        for result in DELIVERY_RESULTS:
            done.add_metric((receiver, result), float(counts.get(result, 0)))
    yield done
    backlog = GaugeMetricFamily(
        f"{PREFIX}_alert_delivery_backlog",
        "Alerts waiting for a receiver (queued or in flight).",
        labels=("receiver",),
    )
    for receiver, waiting in sorted(stats.get("backlog", {}).items()):
        backlog.add_metric((receiver,), float(waiting))
    yield backlog


def delivery_registry(source: Callable[[], Mapping[str, Any]]) -> CollectorRegistry:
    """A registry of the alert delivery metrics alone, for a ``roadcast alerts deliver``
    that runs apart from the service: the per-receiver families read from ``source``
    (:meth:`AlertDelivery.stats`) at each scrape, and the process' own."""
    from prometheus_client import ProcessCollector

    class _Delivery(Collector):
        def describe(self) -> Iterator[Metric]:
            yield from _delivery_families({})

        def collect(self) -> Iterator[Metric]:
            yield from _delivery_families(source())

    registry = CollectorRegistry()
    registry.register(_Delivery())
    ProcessCollector(registry=registry)
    return registry


# The gauges of _State, and their help texts.
_STATE_DOCS = {
    "last_tick_closed_timestamp_seconds": "Wall-clock time the newest tick closed.",
    "last_tick_event_timestamp_seconds": "Event time of the newest closed tick.",
    "tick_interval_seconds": "The service's tick (time step).",
    "sensors": "Sensors the loaded models forecast.",
    "store_size_bytes": "Size of the SQLite store (with its WAL).",
}


class _State(Collector):
    """Gauges of the service's set-up and progress, exported only once they are known."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}
        self.store: Path | None = None

    def describe(self) -> Iterator[Metric]:
        for name, doc in _STATE_DOCS.items():
            yield GaugeMetricFamily(f"{PREFIX}_{name}", doc)

    def collect(self) -> Iterator[Metric]:
        values = dict(self.values)
        if self.store is not None:
            values["store_size_bytes"] = store_bytes(self.store)
        for name, doc in _STATE_DOCS.items():
            family = GaugeMetricFamily(f"{PREFIX}_{name}", doc)
            if name in values:
                family.add_metric((), values[name])
            yield family


def roadcast_version() -> str:
    """The installed roadcast package's version (``unknown`` when run from a tree that is
    not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("roadcast")
    except PackageNotFoundError:
        return "unknown"


def store_bytes(path: Path) -> int:
    """Bytes of a SQLite database with its ``-wal`` and ``-shm`` files (0 when absent)."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            total += os.stat(f"{path}{suffix}").st_size
    return total
