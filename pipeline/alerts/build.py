"""Building the service's alert hook: which detectors run, and how each is calibrated.

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
      written by :func:`pipeline.alerts.saved.calibrate_interval`, which ``roadcast
      demo`` runs): split-conformal on the forecaster's residuals on the validation part
      of the training data. Scores from the first tick.
    * otherwise it calibrates on the stream (the detector's ``start``, NAB's protocol):
      no extra training, but a sensor is scored only once ``min_count`` (20) of its
      residuals per horizon have been seen, about 25 ticks after the start.
``autoencoder`` (when ``<bundles>/detectors/autoencoder`` holds a fitted one)
    :class:`models.anomaly.autoencoder.AutoencoderDetector` on the rolling window.

``--detectors`` picks them (``auto``: ``interval`` plus every other one saved;
``none``: no alerts).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from models.anomaly.base import StreamingDetector, empty_head
from models.anomaly.interval import ForecastIntervalDetector
from models.bundle import other_step, step_text
from models.forecasters.base import Forecaster
from pipeline.alerts.config import (
    AUTO,
    SERVICE_DETECTORS,
    AlertingConfig,
    AlertingError,
    choose_forecaster,
)
from pipeline.alerts.hook import DetectorSlot, ServiceAlerts
from pipeline.alerts.saved import detectors_dir, read_neighbours, saved_forecaster

log = logging.getLogger("roadcast.alerting")


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
    # The registry imports the neural detectors (torch): only when alerting is on.
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
    slots: list[DetectorSlot] = []
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
        probe = _same_step(load_detector(path), path, freq)
        window = int(getattr(getattr(probe, "config", None), "window", 1) or 1)
        slots.append(
            DetectorSlot(
                name=name,
                make=lambda path=path: load_detector(path),  # type: ignore[misc]
                cols=_columns(probe.sensor_ids, column),
                forecaster=None,
                span=window,
                calibration=f"saved in {path}",
            )
        )
    neighbours = read_neighbours(root, sensor_ids) if root is not None else {}
    return ServiceAlerts(slots, sensor_ids, freq, config, neighbours)


def _same_step(detector: StreamingDetector, path: Path, freq: pd.Timedelta) -> StreamingDetector:
    """``detector``, refused when it was fitted on data of another step than the ticks."""
    if (step_s := other_step(detector, freq)) is not None:
        raise AlertingError(
            f"the saved detector in {path} was fitted on {step_text(step_s)} steps, but the "
            f"service's tick is {step_text(freq.total_seconds())}: refit it on data of this "
            "step, or serve with --tick matching it"
        )
    return detector


def _columns(detector_sensors: Sequence[str], column: Mapping[str, int]) -> np.ndarray | None:
    """The service column of each detector sensor (None: the service's own order)."""
    missing = [s for s in detector_sensors if s not in column]
    if missing:
        raise AlertingError(
            f"the saved detector watches sensors the loaded models do not forecast "
            f"({missing[:5]}...); recalibrate it with these bundles"
        )
    cols = np.array([column[s] for s in detector_sensors], dtype=np.int64)
    same = len(cols) == len(column) and bool((cols == np.arange(len(cols))).all())
    return None if same else cols


def _interval_slot(
    saved: Path | None,
    models: Mapping[str, Forecaster],
    column: Mapping[str, int],
    freq: pd.Timedelta,
    config: AlertingConfig,
) -> DetectorSlot:
    """The interval detector: the saved calibration when it fits, else on the stream."""
    from models.anomaly.registry import load_detector

    path = saved / "interval" if saved is not None else None
    calibrated = saved_forecaster(path) if path is not None else None
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

        probe = _same_step(load(), path, freq)
        assert isinstance(probe, ForecastIntervalDetector)
        return DetectorSlot(
            name="interval",
            make=load,
            cols=_columns(probe.sensor_ids, column),
            forecaster=name,
            span=probe.config.horizon,
            calibration=f"validation residuals of {name} (saved in {path})",
            warmup=forecaster.window,
        )
    interval = config.interval
    if forecaster.horizon < interval.horizon:
        interval = replace(interval, horizon=forecaster.horizon)

    def start() -> StreamingDetector:
        detector = ForecastIntervalDetector(forecaster, interval, self_forecast=False)
        return detector.start(empty_head(forecaster.sensor_ids, freq))

    return DetectorSlot(
        name="interval",
        make=start,
        cols=_columns(forecaster.sensor_ids, column),
        forecaster=name,
        span=interval.horizon,
        calibration=f"online on the stream's residuals of {name} (scores after "
        f"{interval.min_count} ticks)",
        warmup=forecaster.window,
    )
