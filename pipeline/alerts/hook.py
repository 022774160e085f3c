"""The service's alert hook: the detectors and the alert lifecycle, once per closed tick.

:class:`ServiceAlerts` is the service's :class:`pipeline.service.hooks.AlertHook`. For every
closed tick it runs the detectors, merges their scores (:func:`models.anomaly.base.combine`,
Bonferroni) and advances :class:`pipeline.alerts.lifecycle.AlertManager`; the service publishes
the ``firing``/``resolved`` messages it returns to ``roadcast.alerts`` (key = sensor
id), stores them and counts them (``alerts_published``) in the same batch as the
tick's forecasts, before the batch's offsets are committed.
:func:`pipeline.alerts.build.build_alerting` chooses the detectors.

Rules and grouping
------------------
The rules are :class:`pipeline.alerts.lifecycle.AlertRules`' defaults, the ones
``benchmarks/anomaly.py`` scores on the simulated network's incidents. Alerts of
graph neighbours within ``group_window`` share an incident key (``group_key``,
``incident:<first sensor>@<start>``). The v1 wire schema has no field for it, so it
travels as the Kafka header ``group`` of the alert record and
as the ``group_key`` column of the store's ``alerts`` table: no wire change, and
consumers that do not care never see it. Neighbours come from
``<bundles>/detectors/neighbours.json`` (:mod:`pipeline.alerts.saved`); without it only
alerts of the same sensor are grouped.

``alert_id`` is ``<sensor>:<detector>@<first_seen>``: a replayed tick re-creates the
same ids and the store's upsert (``alert_id``, ``status``) makes duplicates harmless.
The hook's state is not saved but re-derived from the store (:meth:`ServiceAlerts.restore`,
:mod:`pipeline.alerts.restore`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from models.anomaly.base import Detection, StreamingDetector, combine
from models.anomaly.interval import ForecastIntervalDetector
from pipeline.alerts.config import AlertingConfig, AlertingError
from pipeline.alerts.lifecycle import AlertEvent, AlertManager
from pipeline.alerts.restore import replay_start_ms, stored_forecasts, stored_readings
from pipeline.service.liveness import DETECTOR as SENSOR_DOWN

if TYPE_CHECKING:
    from pipeline.service.hooks import AlertRestore, TickContext

log = logging.getLogger("roadcast.alerting")


@dataclass
class DetectorSlot:
    """One detector as the service runs it.

    make : a fresh detector (the state is re-derived by replaying, never saved).
    cols : the service column of each detector sensor; None: the same order.
    forecaster : for the interval detector, whose forecasts it observes.
    span : missing ticks that still matter after a gap (horizon or window).
    calibration : how it was calibrated, for the logs.
    warmup : ticks the forecaster's input window needs: the forecasts issued before the
        hook has seen that many are not judged (made from a window of a reading or two).
    """

    name: str
    make: Callable[[], StreamingDetector]
    cols: np.ndarray | None
    forecaster: str | None
    span: int
    calibration: str
    detector: StreamingDetector | None = None
    warmup: int = 0


class ServiceAlerts:
    """The service's alert hook (see the module docstring).

    Build it with :func:`pipeline.alerts.build.build_alerting`; ``slots`` are the
    detectors, ``sensor_ids`` the service's sensors in its column order.
    """

    def __init__(
        self,
        slots: Sequence[DetectorSlot],
        sensor_ids: Sequence[str],
        freq: pd.Timedelta,
        config: AlertingConfig,
        neighbours: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        if not slots:
            raise AlertingError("no detectors to run")
        self.slots = list(slots)
        self.sensor_ids = tuple(sensor_ids)
        self.freq = pd.Timedelta(freq)
        self.config = replace(config, rules=config.rules.at_tick(self.freq))
        self.neighbours = {k: list(v) for k, v in (neighbours or {}).items()}
        self.manager = AlertManager(self.sensor_ids, self.config.rules, self.neighbours)
        self._last: int | None = None  # index (ts // freq) of the last tick seen
        self._first: int | None = None  # index of the first tick seen
        self._warmup = max(s.warmup for s in self.slots)  # a gap this long empties the window
        self._reset()

    def describe(self) -> dict[str, Any]:
        """What runs, for the service's start-up log line."""
        return {
            "detectors": {s.name: s.calibration for s in self.slots},
            "forecaster": next((s.forecaster for s in self.slots if s.forecaster), None),
            "grouping": "graph neighbours" if self.neighbours else "same sensor only",
        }

    def _reset(self) -> None:
        for slot in self.slots:
            slot.detector = slot.make()
        self.manager = AlertManager(self.sensor_ids, self.config.rules, self.neighbours)
        self._last = None
        self._first = None

    # --- per tick ---------------------------------------------------------------------

    def __call__(self, context: TickContext) -> list[AlertEvent]:
        issued = {name: fc.mean for name, fc in context.issued.items()}
        tick = context.tick
        return self._step(tick.ts, tick.values, tick.mask, issued)

    def _step(
        self,
        ts: pd.Timestamp,
        values: np.ndarray,
        mask: np.ndarray,
        issued: Mapping[str, np.ndarray | None],
    ) -> list[AlertEvent]:
        index = int(pd.Timestamp(ts).value // self.freq.value)
        if self._last is not None:
            if index <= self._last:
                return []  # a tick seen already (a replay): the state already has it
            gap = index - self._last - 1
            if gap >= self._warmup:
                self._first = index
            for back in range(min(gap, max(s.span for s in self.slots)), 0, -1):
                self._skip(pd.Timestamp(ts) - back * self.freq)
        self._last = index
        self._first = index if self._first is None else self._first
        seen = index - self._first + 1
        detections = [self._run(slot, ts, values, mask, issued, seen) for slot in self.slots]
        return self.manager.evaluate(combine(detections))

    def _run(
        self,
        slot: DetectorSlot,
        ts: pd.Timestamp,
        values: np.ndarray,
        mask: np.ndarray,
        issued: Mapping[str, np.ndarray | None],
        seen: int,
    ) -> Detection:
        detector = slot.detector
        assert detector is not None
        own_values = values if slot.cols is None else values[slot.cols]
        own_mask = mask if slot.cols is None else mask[slot.cols]
        detection = detector.update(pd.Timestamp(ts), own_values, own_mask)
        if isinstance(detector, ForecastIntervalDetector):
            mean = issued.get(slot.forecaster or "")
            horizon = detector.config.horizon
            if mean is None or mean.shape[0] < horizon or seen < slot.warmup:
                mean = np.full((horizon, detector.n_nodes), np.nan)  # [horizon, node]
            # Observed even when missing, so forecasts stay matched to their ticks.
            detector.observe_forecast(mean[:horizon])
        return detection if slot.cols is None else self._widen(detection, slot.cols)

    def _skip(self, ts: pd.Timestamp) -> None:
        """A tick nobody reported for: the detectors see it as missing everywhere."""
        for slot in self.slots:
            detector = slot.detector
            assert detector is not None
            n = len(detector.sensor_ids)
            detector.update(ts, np.full(n, np.nan), np.zeros(n, bool))
            if isinstance(detector, ForecastIntervalDetector):
                detector.observe_forecast(np.full((detector.config.horizon, n), np.nan))

    def _widen(self, detection: Detection, cols: np.ndarray) -> Detection:
        """A detection of some sensors as one of all the service's sensors."""
        n = len(self.sensor_ids)

        def spread(values: np.ndarray | None, fill: float) -> np.ndarray | None:
            if values is None:
                return None
            out = np.full(n, fill, np.float32)  # [node]
            out[cols] = values
            return out

        reasons: tuple[str, ...] = ()
        if detection.reasons:
            wide = [""] * n
            for col, reason in zip(cols.tolist(), detection.reasons, strict=True):
                wide[col] = reason
            reasons = tuple(wide)
        score = spread(detection.score, 0.0)
        observed = spread(detection.observed, np.nan)
        assert score is not None and observed is not None
        return Detection(
            detection.detector,
            detection.ts,
            score,
            observed,
            spread(detection.expected, np.nan),
            spread(detection.lower, np.nan),
            spread(detection.upper, np.nan),
            reasons,
        )

    # --- restore ----------------------------------------------------------------------

    @property
    def history_ticks(self) -> int:
        """Closed ticks before the newest that :meth:`restore` replays (at the least)."""
        return self.config.history_ticks

    def restore(self, source: AlertRestore) -> None:
        """Re-derive the state from the store: replay the recent ticks without publishing."""
        self._reset()
        if source.last_closed is None:
            return
        # Sensor-down alerts are the service's own (pipeline.service.liveness), not replayed.
        stored_open = [r for r in source.store.open_alerts() if r.detector != SENSOR_DOWN]
        since_ms = replay_start_ms(source.last_closed, stored_open, self.freq, self.config)
        ticks_ms = source.store.closed_ticks(since_ms)
        if len(ticks_ms) == 0:
            return
        # The warm-up counts from the store's first tick, as it did when that tick was live.
        first_ms = source.store.first_closed_tick()
        self._first = (
            int(ticks_ms[0] if first_ms is None else first_ms) * 1_000_000 // self.freq.value
        )
        values, mask = stored_readings(source, len(self.sensor_ids), int(ticks_ms[0]), ticks_ms)
        forecasts = stored_forecasts(source, self._forecast_requests(), int(ticks_ms[0]), self.freq)
        for t, ms in enumerate(ticks_ms.tolist()):
            issued = {name: by_tick.get(ms) for name, by_tick in forecasts.items()}
            self._step(pd.Timestamp(ms, unit="ms", tz="UTC"), values[t], mask[t], issued)
        firing = {k for k, state in self.manager.active().items() if state == "firing"}
        stored = {row.dedup_key for row in stored_open}
        log.info(
            "alerts_restored",
            extra={
                "fields": {
                    "replayed_ticks": len(ticks_ms),
                    "firing": len(firing),
                    "firing_in_store": len(stored),
                    "not_rederived": sorted(stored - firing)[:20],
                }
            },
        )

    def _forecast_requests(self) -> list[tuple[str, np.ndarray | None, int]]:
        """``(forecaster, service columns or None, horizon)`` of every interval detector."""
        out = []
        for slot in self.slots:
            detector = slot.detector
            if slot.forecaster is None or not isinstance(detector, ForecastIntervalDetector):
                continue
            out.append((slot.forecaster, slot.cols, detector.config.horizon))
        return out
