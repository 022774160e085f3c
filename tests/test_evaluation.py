"""The backtest protocol: which windows are scored, history before the part, joins."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.forecasters.baselines import Persistence, Seasonal
from models.forecasters.evaluation import backtest, finish_fit, join_panels, part_origins
from models.panel import SensorPanel, chronological_split


def panel_of(n: int = 120, nodes: int = 2) -> SensorPanel:
    rng = np.random.default_rng(0)
    values = (50 + rng.normal(0, 1, (n, nodes))).astype(np.float32)
    stamps = pd.date_range("2024-01-01", periods=n, freq="1h", tz="UTC")
    return SensorPanel.from_values(values, stamps, [f"s{i}" for i in range(nodes)])


def test_part_origins_keep_inputs_and_targets_inside_the_part():
    origins = part_origins(100, start=80, stop=None, window=4, horizon=3, inputs_inside=4)
    assert origins[0] == 83 and origins[-1] == 96  # inputs 80..83; last targets 97..99
    # validation style: only the targets must be inside
    origins = part_origins(100, start=80, stop=90, window=4, horizon=3, inputs_inside=0)
    assert origins[0] == 79 and origins[-1] == 86
    # a model needing a long history cannot start before it has one
    assert part_origins(100, start=2, stop=None, window=10, horizon=3, inputs_inside=0)[0] == 9
    assert len(part_origins(100, start=95, stop=None, window=4, horizon=6, inputs_inside=4)) == 0
    with pytest.raises(ValueError, match="not inside"):
        part_origins(100, start=90, stop=120, window=4, horizon=3, inputs_inside=0)


def test_models_with_different_windows_are_scored_on_the_same_targets():
    panel = panel_of(24 * 6)
    split = chronological_split(panel, test=0.2, valid=0.1)
    start = split.train.n_time + split.valid.n_time
    short = Persistence(window=6, horizon=3).fit(split.train)
    long = Seasonal(horizon=3).fit(split.train)  # window = 24 steps, longer than the part
    assert long.window > panel.n_time - start - 6
    a = backtest(short, panel, start=start, inputs_inside=6)
    b = backtest(long, panel, start=start, inputs_inside=6)
    np.testing.assert_array_equal(a.forecast.origins, b.forecast.origins)
    np.testing.assert_array_equal(a.actual, b.actual)
    assert a.forecast.origins[0] == start + 5
    assert a.predict_ms_per_window > 0 and a.predict_ms_single > 0
    assert set(a.metrics["pooled"]) == {"3"}


def test_backtest_refuses_other_sensors_and_empty_parts():
    panel = panel_of()
    model = Persistence(window=4, horizon=3).fit(panel)
    with pytest.raises(ValueError, match="sensors differ"):
        backtest(model, panel.select(["s1", "s0"]), start=80)
    with pytest.raises(ValueError, match="no window of 12 inputs"):
        backtest(model, panel, start=110, inputs_inside=12)
    with pytest.raises(ValueError, match="input window of 4 steps and 3 targets need 7 steps"):
        backtest(model, panel.slice(0, 6), start=2, inputs_inside=0)


def test_join_panels_checks_continuity_and_sensors():
    panel = panel_of()
    joined = join_panels(panel.slice(0, 50), panel.slice(50, 120))
    np.testing.assert_array_equal(joined.values, panel.values)
    assert joined.timestamps.equals(panel.timestamps) and joined.timestamps.freq is not None
    with pytest.raises(ValueError, match="not consecutive"):
        join_panels(panel.slice(0, 50), panel.slice(60, 120))
    with pytest.raises(ValueError, match="same sensors"):
        join_panels(panel.slice(0, 50), panel.slice(50, 120).select(["s1", "s0"]))


def test_finish_fit_calibrates_on_validation_and_records_metrics():
    panel = panel_of()
    split = chronological_split(panel)
    model = Persistence(window=4, horizon=3)
    model.fit(split.train, valid=split.valid)
    assert model.halfwidth is not None and model.halfwidth.shape == (3, 2)
    assert model.valid_metrics is not None and "3" in model.valid_metrics["pooled"]
    assert model.fingerprint == split.train.fingerprint()
    model.fit(split.train)  # refit without validation forgets the old intervals
    assert model.halfwidth is None and model.valid_metrics is None
    finish_fit(model, split.train, split.valid.slice(0, 2))  # too short for a horizon
    assert model.valid_metrics is None
