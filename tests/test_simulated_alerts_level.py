"""The alert benchmark's ``--level-half-life``: its forecast-based detectors judge the
forecasts the service judges (each model's own moved by its level correction), ``off``
is the benchmark's earlier protocol, and the rule fixed for the comparison."""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.simulated_alerts import SERVICE_LEVEL, level_loss, main, served_scores
from models.anomaly.interval import ForecastIntervalDetector
from models.panel import SensorPanel
from pipeline.alerts.config import SERVICE_ALERT_P, AlertingConfig
from pipeline.alerts.hook import DetectorSlot, ServiceAlerts
from pipeline.service.config import ServiceConfig
from pipeline.service.processor import PollProcessor
from pipeline.settings import Settings
from tests.service_support import SHIFT_AT, feed_steps, shifted_panel

WINDOW = 3  # AR(3): the service's first forecast has WINDOW - 1 missing ticks before it


class Recording(ServiceAlerts):
    """The service's alert hook, keeping the score each detector gave every tick."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.scores: dict[pd.Timestamp, np.ndarray] = {}

    def _run(self, slot, ts, values, mask, issued, seen):
        detection = super()._run(slot, ts, values, mask, issued, seen)
        self.scores[pd.Timestamp(ts)] = detection.score.copy()
        return detection


@pytest.fixture(scope="module")
def world():
    """AR(3) and its interval detector (the service's settings) fitted on 6 sensors
    reading 50 plus noise; the streamed part, sensor 0 recalibrated 40 % high in it."""
    from models.forecasters.ar import AutoRegressive

    panel, train_end = shifted_panel()
    train, valid = panel.slice(0, train_end - 40), panel.slice(train_end - 40, train_end)
    model = AutoRegressive(window=WINDOW, horizon=3)
    model.fit(train, valid=valid)
    detector = ForecastIntervalDetector(model, AlertingConfig().interval, self_forecast=False)
    detector.fit(train, valid=valid)
    return model, detector, panel.slice(train_end, panel.n_time)


def _served(
    world, tmp_path: Path, half_life: pd.Timedelta | None
) -> dict[pd.Timestamp, np.ndarray]:
    """The scores the service's alert hook gave each closed tick of the streamed part."""
    model, detector, live = world
    slot = DetectorSlot("interval", lambda: deepcopy(detector), None, "ar", 3, "test")
    hook = Recording([slot], live.sensor_ids, live.freq, AlertingConfig())
    config = ServiceConfig(allowed_lateness="0min", durable=False, level_half_life=half_life)
    settings = Settings(store_path=tmp_path / f"{half_life}.sqlite")
    processor = PollProcessor(settings, config, {"ar": model}, alert_hook=hook, clock=lambda: 0.0)
    feed_steps(processor, live, range(live.n_time))
    processor.store.close()
    return hook.scores


def _benchmark(world, half_life: pd.Timedelta | None) -> np.ndarray:
    """The benchmark's scores of the streamed part, the service's empty window before it."""
    _, detector, live = world
    before = pd.date_range(end=live.timestamps[0] - live.freq, periods=WINDOW - 1, freq=live.freq)
    n = len(live.sensor_ids)
    panel = SensorPanel(
        values=np.concatenate([np.full((WINDOW - 1, n), np.nan, np.float32), live.values]),
        mask=np.concatenate([np.zeros((WINDOW - 1, n), bool), live.mask]),
        timestamps=before.append(live.timestamps),
        sensor_ids=live.sensor_ids,
    )
    start = WINDOW - 1
    scores, _ = served_scores(
        deepcopy(detector), panel, start, half_life, level_from=start, forecasts_from=start
    )
    return scores


@pytest.mark.parametrize("half_life", [SERVICE_LEVEL, None], ids=["6h", "off"])
def test_the_benchmark_scores_each_tick_as_the_service_s_alert_hook(
    world, tmp_path, half_life
) -> None:
    served = _served(world, tmp_path, half_life)
    _, _, live = world
    got = _benchmark(world, half_life)
    assert len(served) >= live.n_time - 1  # the last tick may stay open
    for t, ts in enumerate(live.timestamps[: len(served)]):
        np.testing.assert_allclose(got[t], served[ts], atol=1e-6, err_msg=str(ts))


def test_with_the_correction_a_recalibrated_sensor_stops_being_judged_abnormal(world) -> None:
    """Sensor 0 reads 40 % high from SHIFT_AT on: judged against the model's own forecasts
    it stays abnormal; against the corrected ones it is normal again once its level is
    learnt, and the other sensors' scores do not change."""
    threshold = 1.0 - SERVICE_ALERT_P
    own, corrected = _benchmark(world, None), _benchmark(world, SERVICE_LEVEL)
    late = slice(SHIFT_AT + 60, None)
    assert (own[late, 0] >= threshold).all()
    assert (corrected[late, 0] < threshold).mean() > 0.9
    assert (corrected[: SHIFT_AT + 1] == own[: SHIFT_AT + 1]).all()  # nothing moved yet


def test_off_is_the_self_forecasting_detector_the_benchmark_ran_before() -> None:
    from models.forecasters.registry import model_class
    from models.panel import chronological_split
    from pipeline.data.simulate import simulate_network

    panel = simulate_network(12, 3.0, seed=3, incidents_per_day=3.0, faults_per_day=1.0)
    split = chronological_split(panel, test=1 / 3, valid=0.2)
    forecaster = model_class("ar")(window=12, horizon=3)
    forecaster.fit(split.train, valid=split.valid)
    detector = ForecastIntervalDetector(forecaster, AlertingConfig().interval)
    detector.fit(split.train, valid=split.valid)
    before = detector.score_panel(split.test).score.astype(np.float64)
    start = split.train.n_time + split.valid.n_time
    scores, moved = served_scores(detector, panel, start, None, level_from=split.train.n_time)
    np.testing.assert_array_equal(scores, before)
    assert moved == 0.0 and detector.self_forecast  # handed back as it was


def test_the_rule_fixed_for_the_comparison() -> None:
    off = {"incident_recall": 0.95, "precision_single": 0.97, "median_delay_steps": 0.0}
    assert level_loss(off, dict(off)) == []
    assert level_loss(off, {**off, "incident_recall": 0.93, "precision_single": 0.95}) == []
    lost = level_loss(off, {**off, "incident_recall": 0.92, "median_delay_steps": 1.0})
    assert [line.split()[0] for line in lost] == ["incident_recall", "median_delay_steps"]
    assert level_loss(off, {**off, "median_delay_steps": 0.5}) == []
    assert level_loss(off, {**off, "precision_single": None})  # no alert at all


def test_a_half_life_without_a_unit_is_refused_in_one_line(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--quick", "--level-half-life", "6"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--level-half-life" in err and "6s or 6min" in err
