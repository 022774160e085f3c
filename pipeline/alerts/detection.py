"""Anomaly alerts inside the forecasting service: detectors + the alert lifecycle as a hook.

:class:`ServiceAlerts` is the service's :class:`pipeline.service.hooks.AlertHook`. For every
closed tick it runs the detectors, merges their scores (:func:`models.anomaly.base.combine`,
Bonferroni) and advances :class:`pipeline.alerts.lifecycle.AlertManager`; the service publishes
the ``firing``/``resolved`` messages it returns to ``roadcast.alerts`` (key = sensor
id), stores them and counts them (``alerts_published``) in the same batch as the
tick's forecasts, before the batch's offsets are committed.

Detectors
---------
``interval`` (on by default)
    :class:`models.anomaly.interval.ForecastIntervalDetector` judging each reading
    against the forecasts the service itself published for it 1..3 ticks earlier
    (``self_forecast=False``: nothing is forecast twice), by default those of ``ar``
    (else ``persistence``, else the first model): the forecasters the alert rules were
    chosen on (``python -m benchmarks.anomaly``). Its calibration, as
    :mod:`models.anomaly.interval` documents:

    * a detector saved in the model directory (``<bundles>/detectors/interval``,
      written by :func:`calibrate_interval`, which ``roadcast demo`` runs): split-conformal
      on the forecaster's residuals on the validation part of the training data. Scores
      from the first tick.
    * otherwise it calibrates on the stream (the detector's ``start``, NAB's protocol):
      no extra training, but a sensor is scored only once ``min_count`` (20) of its
      residuals per horizon have been seen, about 25 ticks after the start.
``autoencoder`` (when ``<bundles>/detectors/autoencoder`` holds a fitted one)
    :class:`models.anomaly.autoencoder.AutoencoderDetector` on the rolling window.

``--detectors`` picks them (``auto``: ``interval`` plus every other one saved;
``none``: no alerts).

Rules and grouping
------------------
The rules are :class:`pipeline.alerts.lifecycle.AlertRules`' defaults, the ones
``benchmarks/anomaly.py`` scores on the simulated network's incidents. Alerts of
graph neighbours within ``group_window`` share an incident key (``group_key``,
``incident:<first sensor>@<start>``). The v1 wire schema has no field for it, so it
travels as the Kafka header ``group`` of the alert record and as the ``group_key``
column of the store's ``alerts`` table: no wire change, and consumers that do not care
never see it. Neighbours come from ``<bundles>/detectors/neighbours.json`` (written
with the calibration from the data set's road graph); without it only alerts of the
same sensor are grouped.

At-least-once and restarts
--------------------------
``alert_id`` is ``<sensor>:<detector>@<first_seen>``: a replayed tick re-creates the
same ids and the store's upsert (``alert_id``, ``status``) makes duplicates harmless.
The hook's state (the detectors' recent forecasts, the alert lifecycle, online
calibration) is not saved: it is **re-derived from the store** whenever the service
restores its state (start-up, and after a batch the broker did not take). The ticks
of the last ``history_ticks`` (and back to the first tick of every alert the store
still shows firing, at most ``max_history_ticks``) are replayed from the stored
readings and the stored forecasts through the same code path, without publishing.
An alert still firing is thus resolved later under its original ``alert_id``. What
the replay cannot reproduce exactly: readings as they were at the tick's close are
stored, but the forecasts are the published values (7 significant digits), so a score
right at the threshold may land on the other side; and online calibration restarts
from the replayed ticks only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from models.anomaly.base import Detection, StreamingDetector, combine
from models.anomaly.interval import ForecastIntervalDetector, IntervalConfig
from models.forecasters.base import Forecaster
from models.panel import SensorPanel
from pipeline.alerts.lifecycle import AlertEvent, AlertManager, AlertRules

if TYPE_CHECKING:
    from pipeline.service.hooks import AlertRestore, TickContext

log = logging.getLogger("roadcast.alerting")

DETECTORS_DIR = "detectors"
NEIGHBOURS_FILE = "neighbours.json"
GROUP_HEADER = "group"
AUTO = "auto"
NONE = "none"
SERVICE_DETECTORS = ("interval", "autoencoder")
PREFERRED_FORECASTERS = ("ar", "persistence")
# Calibration residuals kept per sensor and horizon. The p-value of a reading compares
# it with all of them at every tick, so the pool is sized to the validation data rather
# than the detector's default 4096 (one 1024-wide pool: 0.5 ms a tick for 207 sensors).
SERVICE_CAPACITY = 1024


class AlertingError(ValueError):
    """Alerting cannot be set up as asked; the message names the fix."""


@dataclass(frozen=True)
class AlertingConfig:
    """How the service raises alerts.

    Attributes
    ----------
    detectors : ``("auto",)``, ``("none",)`` or names from :data:`SERVICE_DETECTORS`.
    forecaster : the model whose forecasts the interval detector judges (None: the saved
        detector's, else the first of :data:`PREFERRED_FORECASTERS` loaded, else the
        first model by name).
    rules : the alert lifecycle (the benchmark's defaults).
    interval : the interval detector's settings when it calibrates on the stream.
    history_ticks : ticks replayed from the store to re-derive the state on restore.
    max_history_ticks : the most ticks replayed to reach the start of open alerts.
    """

    detectors: tuple[str, ...] = (AUTO,)
    forecaster: str | None = None
    rules: AlertRules = field(default_factory=AlertRules)
    interval: IntervalConfig = field(
        default_factory=lambda: IntervalConfig(horizon=3, capacity=SERVICE_CAPACITY)
    )
    history_ticks: int = 576
    max_history_ticks: int = 8640

    def __post_init__(self) -> None:
        names = tuple(d.strip() for d in self.detectors if d.strip())
        if not names:
            raise AlertingError("no detectors given; pass --detectors auto, none or interval")
        special = {AUTO, NONE} & set(names)
        if special and len(names) > 1:
            raise AlertingError(f"--detectors {','.join(names)}: use auto or none alone")
        unknown = sorted(set(names) - {AUTO, NONE, *SERVICE_DETECTORS})
        if unknown:
            raise AlertingError(
                f"unknown detector(s) {unknown} for the service; choose from "
                f"{', '.join(SERVICE_DETECTORS)} (or auto, none)"
            )
        if self.history_ticks < 0 or self.max_history_ticks < self.history_ticks:
            raise AlertingError(
                "history_ticks must be >= 0 and max_history_ticks >= history_ticks, got "
                f"{self.history_ticks}, {self.max_history_ticks}"
            )
        object.__setattr__(self, "detectors", names)

    @property
    def enabled(self) -> bool:
        return self.detectors != (NONE,)

    @classmethod
    def parse(cls, detectors: str, forecaster: str | None = None) -> AlertingConfig:
        """From the CLI's comma-separated ``--detectors`` and ``--alert-model``."""
        return cls(detectors=tuple(detectors.split(",")), forecaster=forecaster or None)


def detectors_dir(model_dir: str | Path) -> Path:
    """Where saved detectors live: ``<bundles>/detectors`` (``bundles/`` when ``model_dir``
    is a ``roadcast train`` output, else ``model_dir`` itself)."""
    root = Path(model_dir)
    bundles = root / "bundles" if (root / "bundles").is_dir() else root
    return bundles / DETECTORS_DIR


# ------------------------------------------------------------------ calibration (offline)


def choose_forecaster(names: Sequence[str], requested: str | None = None) -> str:
    """The model whose forecasts the interval detector judges (see :class:`AlertingConfig`)."""
    if not names:
        raise AlertingError("no forecaster loaded; the interval detector needs one")
    if requested is not None:
        if requested not in names:
            raise AlertingError(
                f"--alert-model {requested!r} is not loaded; loaded models: {sorted(names)}"
            )
        return requested
    for name in PREFERRED_FORECASTERS:
        if name in names:
            return name
    return sorted(names)[0]


def calibrate_interval(
    model_dir: str | Path,
    forecaster: Forecaster,
    train: SensorPanel,
    valid: SensorPanel,
    *,
    config: IntervalConfig | None = None,
) -> Path:
    """Calibrate the interval detector on ``forecaster``'s validation residuals and save it
    where the service finds it (``<bundles>/detectors/interval``).

    ``train`` and ``valid`` must be the parts ``forecaster`` was trained and validated on
    (never test data). Returns the detector's directory.
    """
    config = config or IntervalConfig(horizon=min(3, forecaster.horizon), capacity=1024)
    detector = ForecastIntervalDetector(forecaster, config, self_forecast=False)
    detector.fit(train.select(forecaster.sensor_ids), valid=valid.select(forecaster.sensor_ids))
    target = detectors_dir(model_dir) / "interval"
    detector.save(target)
    return target


def save_neighbours(model_dir: str | Path, panel: SensorPanel) -> Path | None:
    """Write the road graph's direct neighbours of every sensor (for incident grouping);
    None when ``panel`` has no graph."""
    from pipeline.alerts.lifecycle import neighbours_from_graph

    if panel.graph is None:
        return None
    neighbours = neighbours_from_graph(panel.graph, list(panel.sensor_ids))
    path = detectors_dir(model_dir) / NEIGHBOURS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({k: sorted(v) for k, v in neighbours.items()}) + "\n")
    return path


def saved_interval_forecaster(model_dir: str | Path) -> str | None:
    """The forecaster a saved interval detector was calibrated on (None: none saved)."""
    return _saved_forecaster(detectors_dir(model_dir) / "interval")


def _saved_forecaster(path: Path) -> str | None:
    config = path / "config.json"
    if not config.is_file():
        return None
    try:
        return str(json.loads(config.read_text())["forecaster"])
    except (ValueError, KeyError):
        return None


# ------------------------------------------------------------------ the hook


@dataclass
class _Slot:
    """One detector as the service runs it."""

    name: str
    make: Callable[[], StreamingDetector]
    cols: np.ndarray | None  # service column of each detector sensor; None: same order
    forecaster: str | None  # the interval detector: whose forecasts it observes
    span: int  # missing ticks that still matter after a gap (horizon or window)
    calibration: str  # how it was calibrated, for the logs
    detector: StreamingDetector | None = None


class ServiceAlerts:
    """The service's alert hook (see the module docstring).

    Build it with :func:`build_alerting`; ``slots`` are the detectors, ``sensor_ids``
    the service's sensors in its column order.
    """

    def __init__(
        self,
        slots: Sequence[_Slot],
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
        self.config = config
        self.neighbours = {k: list(v) for k, v in (neighbours or {}).items()}
        self.manager = AlertManager(self.sensor_ids, config.rules, self.neighbours)
        self._last: int | None = None  # index (ts // freq) of the last tick seen
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
            for back in range(min(gap, max(s.span for s in self.slots)), 0, -1):
                self._skip(pd.Timestamp(ts) - back * self.freq)
        self._last = index
        detections = [self._run(slot, ts, values, mask, issued) for slot in self.slots]
        return self.manager.evaluate(combine(detections))

    def _run(
        self,
        slot: _Slot,
        ts: pd.Timestamp,
        values: np.ndarray,
        mask: np.ndarray,
        issued: Mapping[str, np.ndarray | None],
    ) -> Detection:
        detector = slot.detector
        assert detector is not None
        own_values = values if slot.cols is None else values[slot.cols]
        own_mask = mask if slot.cols is None else mask[slot.cols]
        detection = detector.update(pd.Timestamp(ts), own_values, own_mask)
        if isinstance(detector, ForecastIntervalDetector):
            mean = issued.get(slot.forecaster or "")
            horizon = detector.config.horizon
            if mean is None or mean.shape[0] < horizon:  # the model failed at this tick
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

    def restore(self, source: AlertRestore) -> None:
        """Re-derive the state from the store: replay the recent ticks without publishing."""
        from pipeline.kafka.schema import SchemaError, decode_alert

        self._reset()
        if source.last_closed is None:
            return
        freq_ms = int(self.freq.value // 1_000_000)
        last_ms = int(pd.Timestamp(source.last_closed).value // 1_000_000)
        since_ms = last_ms - self.config.history_ticks * freq_ms
        floor_ms = last_ms - self.config.max_history_ticks * freq_ms
        stored_open = source.store.open_alerts()
        for row in stored_open:
            try:
                first = pd.Timestamp(decode_alert(row.payload).first_seen)
            except SchemaError:
                continue
            start_ms = int(first.value // 1_000_000) - int(
                self.config.rules.group_window.value // 1_000_000
            )
            since_ms = max(floor_ms, min(since_ms, start_ms - freq_ms))
        ticks_ms = source.store.closed_ticks(since_ms)
        if len(ticks_ms) == 0:
            return
        values, mask = self._stored_readings(source, int(ticks_ms[0]), ticks_ms)
        forecasts = self._stored_forecasts(source, int(ticks_ms[0]))
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

    def _stored_readings(
        self, source: AlertRestore, since_ms: int, ticks_ms: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Readings as they were when each tick closed, ``[tick, node]`` in service order."""
        rows = source.store.readings_since(since_ms, corrected=False)
        n = len(self.sensor_ids)
        values = np.full((len(ticks_ms), n), np.nan, np.float32)  # [tick, node]
        col_of = {int(s): c for c, s in enumerate(np.asarray(source.store_ids).tolist())}
        cols = np.array([col_of.get(int(s), -1) for s in rows.sensors.tolist()], np.int64)
        pos = np.searchsorted(ticks_ms, rows.ts_ms)
        found = (cols >= 0) & (pos < len(ticks_ms))
        found[found] &= ticks_ms[pos[found]] == rows.ts_ms[found]
        values[pos[found], cols[found]] = rows.values[found]
        return values, np.isfinite(values)

    def _stored_forecasts(
        self, source: AlertRestore, since_ms: int
    ) -> dict[str, dict[int, np.ndarray]]:
        """Per interval forecaster: ``{issued ms: mean [horizon, node]}`` as published."""
        out: dict[str, dict[int, np.ndarray]] = {}
        store_ids = np.asarray(source.store_ids)
        for slot in self.slots:
            detector = slot.detector
            if slot.forecaster is None or not isinstance(detector, ForecastIntervalDetector):
                continue
            sensors = store_ids if slot.cols is None else store_ids[slot.cols]
            horizon = detector.config.horizon
            # Forecasts issued up to `horizon` ticks before the first replayed tick target it.
            start = since_ms - horizon * int(self.freq.value // 1_000_000)
            issued, means, _, _ = source.store.recent_forecasts(
                slot.forecaster, start, sensors, horizon
            )
            out[slot.forecaster] = {ms: means[k] for k, ms in enumerate(issued.tolist())}
        return out


# ------------------------------------------------------------------ construction


def _read_neighbours(model_dir: Path, sensor_ids: Sequence[str]) -> dict[str, list[str]]:
    path = detectors_dir(model_dir) / NEIGHBOURS_FILE
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
    except ValueError as exc:
        raise AlertingError(f"{path} is not valid JSON ({exc}); delete it or recalibrate") from None
    known = set(sensor_ids)
    return {
        str(k): [str(s) for s in v if str(s) in known] for k, v in raw.items() if str(k) in known
    }


def _columns(detector_sensors: Sequence[str], column: Mapping[str, int]) -> np.ndarray | None:
    missing = [s for s in detector_sensors if s not in column]
    if missing:
        raise AlertingError(
            f"the saved detector watches sensors the loaded models do not forecast "
            f"({missing[:5]}...); recalibrate it with these bundles"
        )
    cols = np.array([column[s] for s in detector_sensors], dtype=np.int64)
    same = len(cols) == len(column) and bool((cols == np.arange(len(cols))).all())
    return None if same else cols


def build_alerting(
    model_dir: str | Path | None,
    models: Mapping[str, Forecaster],
    sensor_ids: Sequence[str],
    freq: pd.Timedelta,
    config: AlertingConfig | None = None,
) -> ServiceAlerts | None:
    """The alert hook for a service forecasting with ``models`` (None when disabled).

    Parameters
    ----------
    model_dir : where saved detectors are looked for (None: calibrate on the stream).
    models : the loaded forecasters, ``{name: model}``.
    sensor_ids : the service's sensors, in its column order.
    freq : the tick grid.
    config : which detectors, which forecaster, the rules.

    Raises
    ------
    AlertingError
        A detector asked for by name that cannot run (e.g. no saved autoencoder).
    """
    from models.anomaly.registry import load_detector

    config = config or AlertingConfig()
    if not config.enabled:
        return None
    root = Path(model_dir) if model_dir is not None else None
    saved = detectors_dir(root) if root is not None else None
    column = {s: i for i, s in enumerate(sensor_ids)}
    names = list(config.detectors)
    if names == [AUTO]:
        names = ["interval"] + [
            n for n in SERVICE_DETECTORS[1:] if saved is not None and (saved / n).is_dir()
        ]
    slots: list[_Slot] = []
    for name in names:
        if name == "interval":
            slots.append(_interval_slot(saved, models, column, freq, config))
            continue
        if saved is None or not (saved / name / "config.json").is_file():
            raise AlertingError(
                f"no saved {name} detector in {saved}; fit one and save it there, or leave "
                f"it out of --detectors"
            )
        path = saved / name
        probe = load_detector(path)
        window = int(getattr(getattr(probe, "config", None), "window", 1) or 1)
        slots.append(
            _Slot(
                name=name,
                make=lambda path=path: load_detector(path),  # type: ignore[misc]
                cols=_columns(probe.sensor_ids, column),
                forecaster=None,
                span=window,
                calibration=f"saved in {path}",
            )
        )
    neighbours = _read_neighbours(root, sensor_ids) if root is not None else {}
    return ServiceAlerts(slots, sensor_ids, freq, config, neighbours)


def _interval_slot(
    saved: Path | None,
    models: Mapping[str, Forecaster],
    column: Mapping[str, int],
    freq: pd.Timedelta,
    config: AlertingConfig,
) -> _Slot:
    """The interval detector: the saved calibration when it fits, else on the stream."""
    from models.anomaly.registry import load_detector

    path = saved / "interval" if saved is not None else None
    calibrated = _saved_forecaster(path) if path is not None else None
    if calibrated is not None and calibrated not in models:
        log.warning(
            "saved_detector_unused",
            extra={"fields": {"detector": str(path), "forecaster": calibrated}},
        )
        calibrated = None  # its forecaster is not loaded (--only): calibrate on the stream
    name = choose_forecaster(list(models), config.forecaster or calibrated)
    forecaster = models[name]
    if path is not None and calibrated == name:

        def load() -> StreamingDetector:
            detector = load_detector(path)
            assert isinstance(detector, ForecastIntervalDetector)
            detector.attach(forecaster)
            detector.self_forecast = False  # the service supplies the forecasts
            return detector

        probe = load()
        assert isinstance(probe, ForecastIntervalDetector)
        return _Slot(
            name="interval",
            make=load,
            cols=_columns(probe.sensor_ids, column),
            forecaster=name,
            span=probe.config.horizon,
            calibration=f"validation residuals of {name} (saved in {path})",
        )
    interval = config.interval
    if forecaster.horizon < interval.horizon:
        from dataclasses import replace

        interval = replace(interval, horizon=forecaster.horizon)

    def start() -> StreamingDetector:
        detector = ForecastIntervalDetector(forecaster, interval, self_forecast=False)
        return detector.start(tuple(forecaster.sensor_ids), freq)

    return _Slot(
        name="interval",
        make=start,
        cols=_columns(forecaster.sensor_ids, column),
        forecaster=name,
        span=interval.horizon,
        calibration=f"online on the stream's residuals of {name} (scores after "
        f"{interval.min_count} ticks)",
    )
