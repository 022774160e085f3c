"""Persistence and seasonal naive, by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.forecasters.baselines import Persistence, Seasonal, period_steps
from models.panel import SensorPanel


def panel_of(values: np.ndarray, freq: str = "1h") -> SensorPanel:
    stamps = pd.date_range("2024-01-01", periods=len(values), freq=freq, tz="UTC")
    return SensorPanel.from_values(values, stamps, [f"s{i}" for i in range(values.shape[1])])


def test_persistence_repeats_the_last_observed_value():
    values = np.array([[1.0, 5.0], [2.0, np.nan], [3.0, np.nan], [np.nan, np.nan]])
    panel = panel_of(values)
    model = Persistence(window=3, horizon=2).fit(panel)
    batch = model.predict_batch(panel, np.array([2, 3]))
    np.testing.assert_array_equal(batch.mean[0], [[3.0, 5.0], [3.0, 5.0]])
    # origin 3: sensor 0 falls back to step 2; sensor 1 has nothing in the window -> mean 5
    np.testing.assert_array_equal(batch.mean[1], [[3.0, 5.0], [3.0, 5.0]])
    assert batch.lower is None  # no validation part, no intervals


def test_seasonal_uses_the_value_one_period_earlier():
    t = np.arange(24 * 4, dtype=np.float32)
    values = np.stack([t, 100 + t % 24], axis=1)
    values[24 * 3 + 1, 1] = np.nan  # a missing seasonal value
    panel = panel_of(values)
    model = Seasonal(horizon=3).fit(panel)
    assert model.window == 24  # under two weeks of data: a day
    origin = 24 * 4 - 1 - 3 + 0  # any origin with a full day behind it
    batch = model.predict_batch(panel, np.array([origin]))
    expected_s0 = [origin + h - 24 for h in (1, 2, 3)]
    np.testing.assert_array_equal(batch.mean[0, :, 0], expected_s0)
    fixed = Seasonal(horizon=3).fit(panel).predict_batch(panel, np.array([24 * 4 - 1]))
    # step 24*4 -> 24*3 (observed); step 24*4+1 -> 24*3+1 (missing) -> persistence value
    assert fixed.mean[0, 0, 1] == 100.0
    assert fixed.mean[0, 1, 1] == values[-1, 1]


def test_period_rules():
    five = pd.Timedelta("5min")
    assert period_steps(five, None, 288 * 13) == 288
    assert period_steps(five, None, 288 * 14) == 288 * 7
    assert period_steps(five, "week", 10) == 2016
    assert period_steps(five, 7, 10) == 7
    with pytest.raises(ValueError, match="whole number"):
        period_steps(pd.Timedelta("7min"), "day", 10)
    with pytest.raises(ValueError, match="'day', 'week'"):
        period_steps(five, "month", 10)  # type: ignore[arg-type]


def test_seasonal_horizon_longer_than_period_is_refused():
    panel = panel_of(np.ones((50, 1), dtype=np.float32))
    with pytest.raises(ValueError, match="shorter than the horizon"):
        Seasonal(horizon=5, period=4).fit(panel)


def test_multi_feature_panels_are_refused_with_the_fix():
    values = np.ones((30, 2, 2), dtype=np.float32)
    stamps = pd.date_range("2024-01-01", periods=30, freq="1h", tz="UTC")
    panel = SensorPanel.from_values(values, stamps, ["a", "b"])
    with pytest.raises(ValueError, match="select one feature"):
        Persistence().fit(panel)


@pytest.mark.parametrize("missing", [0.0, 0.3, 0.97])
def test_last_observed_matches_the_window_fill(missing: float):
    from models.forecasters.windows import fill_forward, gather, last_observed

    rng = np.random.default_rng(5)
    values = rng.normal(size=(80, 6)).astype(np.float32)
    values[rng.random(values.shape) < missing] = np.nan
    values[:, 2] = np.nan  # a sensor never observed
    panel = panel_of(values)
    fallback = np.arange(6, dtype=np.float64) + 100
    origins = np.arange(9, 80)
    windowed, mask = gather(panel, origins, 10)
    expected = fill_forward(windowed, mask, fallback)[:, -1, :]
    np.testing.assert_array_equal(last_observed(panel, origins, 10, fallback), expected)
