"""Detectors and sensor neighbours saved in the model directory (``<bundles>/detectors/``).

``roadcast train`` (when it serves its models) and ``roadcast demo`` calibrate the
interval detector offline on the served forecaster's validation residuals
(:func:`calibrate_served`, :func:`calibrate_interval`) and record the road graph's direct
neighbours for incident grouping (:func:`save_neighbours`); the service reads both back
when it builds its alerting (:func:`saved_forecaster`, :func:`read_neighbours`). Without
them it calibrates online, on the stream's first forecasts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from models.anomaly.interval import ForecastIntervalDetector, IntervalConfig
from models.forecasters.base import Forecaster
from models.panel import SensorPanel
from pipeline.alerts.config import AlertingConfig, AlertingError
from pipeline.model_dir import DETECTORS_DIR

NEIGHBOURS_FILE = "neighbours.json"


def detectors_dir(model_dir: str | Path) -> Path:
    """Where saved detectors live: ``<bundles>/detectors`` (``bundles/`` when ``model_dir``
    is a ``roadcast train`` output, else ``model_dir`` itself)."""
    root = Path(model_dir)
    bundles = root / "bundles" if (root / "bundles").is_dir() else root
    return bundles / DETECTORS_DIR


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
    if config is None:
        config = replace(AlertingConfig().interval, horizon=min(3, forecaster.horizon))
    detector = ForecastIntervalDetector(forecaster, config, self_forecast=False)
    detector.fit(train.select(forecaster.sensor_ids), valid=valid.select(forecaster.sensor_ids))
    target = detectors_dir(model_dir) / "interval"
    detector.save(target)
    return target


def calibrate_served(
    model_dir: str | Path, panel: SensorPanel, train: SensorPanel, valid: SensorPanel
) -> tuple[str, Path]:
    """Calibrate the interval detector on the served model the service alerts on by
    default (:func:`pipeline.alerts.config.choose_forecaster`) over ``train``/``valid``,
    the parts it was fitted and validated on, and save ``panel``'s neighbours. Returns the
    forecaster's name and the detector's directory."""
    from pipeline.alerts.config import choose_forecaster
    from pipeline.model_dir import load_bundles

    models = load_bundles(model_dir)
    name = choose_forecaster(list(models))
    path = calibrate_interval(model_dir, models[name], train, valid)
    save_neighbours(model_dir, panel)
    return name, path


def save_neighbours(model_dir: str | Path, panel: SensorPanel) -> Path | None:
    """Write the road graph's direct neighbours of every sensor (for incident grouping);
    None (and an earlier network's file removed) when ``panel`` has no graph."""
    from pipeline.alerts.lifecycle import neighbours_from_graph

    path = detectors_dir(model_dir) / NEIGHBOURS_FILE
    if panel.graph is None:
        path.unlink(missing_ok=True)
        return None
    neighbours = neighbours_from_graph(panel.graph, list(panel.sensor_ids))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({k: sorted(v) for k, v in neighbours.items()}) + "\n")
    return path


def saved_interval_forecaster(model_dir: str | Path) -> str | None:
    """The forecaster a saved interval detector was calibrated on (None: none saved)."""
    return saved_forecaster(detectors_dir(model_dir) / "interval")


def saved_forecaster(path: Path) -> str | None:
    """The forecaster the interval detector saved in ``path`` judges (None: none there)."""
    config = path / "config.json"
    if not config.is_file():
        return None
    try:
        return str(json.loads(config.read_text())["forecaster"])
    except (ValueError, KeyError):
        return None


def read_neighbours(model_dir: Path, sensor_ids: Sequence[str]) -> dict[str, list[str]]:
    """The saved neighbours among ``sensor_ids`` (empty when none were saved)."""
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
