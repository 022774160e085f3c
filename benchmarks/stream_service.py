"""The service under measurement for :mod:`benchmarks.stream`: run in a thread, fed by a
paced replay, and what its throughput and latency phases measured."""

from __future__ import annotations

import cProfile
import threading
import time
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Any

import numpy as np

from models.forecasters.base import Forecaster
from models.panel import SensorPanel
from pipeline.service.config import ServiceConfig
from pipeline.settings import Settings


def produce(settings: Settings, panel: SensorPanel, speedup: float) -> int:
    """Replay ``panel`` into the readings topic at ``speedup`` (0: at once); the count."""
    from pipeline.kafka.clients import make_producer
    from pipeline.kafka.replay import replay

    producer = make_producer(settings)
    try:
        return replay(
            panel, producer, settings.topic_readings, speedup=speedup, progress=False
        ).messages
    finally:
        producer.close()


class Running:
    """A service in a thread, optionally profiled, with its start and end instants."""

    def __init__(self, service: Any, profile: cProfile.Profile | None = None) -> None:
        self.service = service
        self.stop = threading.Event()
        self.profile = profile
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="roadcast-service", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        if self.profile is not None:
            self.profile.enable()
        try:
            self.service.run(stop=self.stop, handle_signals=False)
        except BaseException as exc:
            self.error = exc
        finally:
            if self.profile is not None:
                self.profile.disable()

    def wait(self, condition: Any, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if self.error is not None:
                raise RuntimeError(f"the service failed: {self.error!r}") from self.error
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}: {dict(self.service.counters)}")
            time.sleep(0.002)

    def settle(self, progress: Any, target: int, settle_s: float) -> None:
        """Wait until ``progress() >= target`` or it has not moved for ``settle_s``."""
        last, since = progress(), time.monotonic()
        while last < target:
            if self.error is not None:
                raise RuntimeError(f"the service failed: {self.error!r}") from self.error
            time.sleep(0.01)
            now, current = time.monotonic(), progress()
            if current != last:
                last, since = current, now
            elif now - since > settle_s:
                return

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=120)
        if self.error is not None:
            raise RuntimeError(f"the service failed: {self.error!r}") from self.error


def service_throughput(
    settings: Settings,
    models: dict[str, Forecaster],
    expected: int,
    profile: cProfile.Profile | None,
    alert_hook: Any = None,
    metrics: Any = None,
    config: Any = None,
) -> tuple[float, dict[str, Any]]:
    """Readings/s of the service over the same messages, first batch to last
    (``metrics``: a :class:`pipeline.service.metrics.ServiceMetrics` to keep up to date;
    ``config``: the service's :class:`pipeline.service.config.ServiceConfig`)."""
    from pipeline.service.config import ServiceConfig
    from pipeline.service.loop import ForecastService

    service = ForecastService(
        settings, config or ServiceConfig(), models, alert_hook=alert_hook, metrics=metrics
    )
    running = Running(service, profile)
    try:
        running.wait(lambda: service.counters["consumed"] > 0, 120, "the first batch")
        first, at_first = time.perf_counter(), service.counters["consumed"]
        running.wait(lambda: service.counters["consumed"] >= expected, 1800, "every reading")
        last = time.perf_counter()
    finally:
        running.close()
    counters = dict(service.counters) | {"ms_per_tick": per_tick(service)}
    return (expected - at_first) / (last - first), counters


def per_tick(service: Any) -> dict[str, float]:
    """Milliseconds per closed tick spent in each stage of the service."""
    ticks = max(1, service.counters["ticks_closed"])
    return {k: round(1000 * v / ticks, 2) for k, v in sorted(service.stage_s.items())}


@dataclass
class LatencyRun:
    """What a latency phase measured (see :func:`service_latency`)."""

    latencies: list[float]  # ms per closed tick, in time order
    counters: dict[str, Any]
    produced: int
    unclosed: list[str]  # steps with readings that did not close (ISO times)
    open_ticks: list[str]  # ticks still open in the service at the end
    spread_ms: list[float]  # per closed tick: newest - oldest Kafka timestamp of its readings


def service_latency(
    settings: Settings,
    models: dict[str, Forecaster],
    panel: SensorPanel,
    interval_s: float,
    alert_hook: Any = None,
    config: ServiceConfig | None = None,
    settle_s: float = 30.0,
) -> LatencyRun:
    """Per-tick latencies (ms) with the producer pacing one step per ``interval_s``; ends
    when every step with a reading has closed or none closed for ``settle_s``."""
    from pipeline.service.loop import ForecastService
    from pipeline.service.store import Store

    service = ForecastService(settings, config or ServiceConfig(), models, alert_hook=alert_hook)
    expected = panel.timestamps[panel.mask.any(axis=1)]  # steps somebody reported for
    running = Running(service)
    try:
        running.wait(lambda: bool(service.partitions.assigned), 120, "the group join")
        speedup = panel.freq.total_seconds() / interval_s
        produced = produce(settings, panel, speedup)
        running.settle(lambda: service.counters["ticks_closed"], len(expected), settle_s)
    finally:
        running.close()
    tick_time = service.asm_config.tick_time
    open_ticks = [tick_time(t).isoformat() for t in service.assembler.open_ticks]
    with Store(settings.store_path, readonly=True) as store:
        ticks = store.last_ticks(len(expected) + len(open_ticks) + 1)
        readings = store.readings_since(0, corrected=False)
    closed_ms = {t.ts_ms for t in ticks}
    unclosed = [ts.isoformat() for ts in expected if ts.value // 1_000_000 not in closed_ms]
    order = np.argsort(readings.ts_ms, kind="stable")
    ts_ms, arrived = readings.ts_ms[order], readings.arrived_ms[order]
    starts = np.flatnonzero(np.r_[True, ts_ms[1:] != ts_ms[:-1]]) if len(ts_ms) else ()
    bounds = [int(i) for i in starts] + [len(ts_ms)]
    spread = [
        float(np.ptp(arrived[a:b])) for a, b in pairwise(bounds) if int(ts_ms[a]) in closed_ms
    ]
    latencies = [t.latency_ms for t in ticks if t.latency_ms is not None]
    counters = dict(service.counters) | {"ms_per_tick": per_tick(service)}
    return LatencyRun(latencies, counters, produced, unclosed, open_ticks, spread)


def with_missingness(
    panel: SensorPanel, silent: float, gaps: float, seed: int = 0
) -> tuple[SensorPanel, list[str]]:
    """``panel`` with ``silent`` of its sensors never reporting and ``gaps`` of the other
    readings dropped at random; returns it and the silent sensors."""
    rng = np.random.default_rng(seed)
    cols = rng.choice(panel.n_nodes, size=round(silent * panel.n_nodes), replace=False)
    keep = rng.random(panel.mask.shape) >= gaps  # [time, node]
    keep[:, cols] = False
    return replace(panel, mask=panel.mask & keep), [panel.sensor_ids[c] for c in sorted(cols)]
