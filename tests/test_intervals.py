"""Intervals whose width follows the hour of the day (models/forecasters/intervals.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.forecasters.baselines import Persistence
from models.forecasters.evaluation import backtest
from models.forecasters.intervals import conformal_halfwidth, hour_scale, target_hours
from models.forecasters.registry import load_model
from models.metrics import interval_metrics
from models.panel import SensorPanel


def noisy_noon(days: int = 30, sensors: int = 3, seed: int = 0) -> SensorPanel:
    """Hourly readings whose noise is five times larger from 10:00 to 14:00 (UTC)."""
    times = pd.date_range("2024-03-01", periods=24 * days, freq="h", tz="UTC").as_unit("us")
    sd = np.where((times.hour >= 10) & (times.hour <= 14), 5.0, 1.0)[:, None]
    rng = np.random.default_rng(seed)
    values = 50.0 + sd * rng.standard_normal((len(times), sensors))
    return SensorPanel.from_values(values, times, tuple(f"s{k}" for k in range(sensors)))


def test_target_hours_are_the_utc_hours_of_each_target_whatever_the_time_unit() -> None:
    times = pd.date_range("2024-03-01 22:00", periods=6, freq="30min", tz="UTC").as_unit("us")
    hours = target_hours(times, np.array([0, 3]), 3, pd.Timedelta("30min"))
    np.testing.assert_array_equal(hours, [[22, 23, 23], [0, 0, 1]])


def test_the_scale_follows_the_hours_with_larger_errors_and_is_none_for_daily_steps() -> None:
    panel = noisy_noon()
    hours = target_hours(panel.timestamps, np.arange(panel.n_time - 1), 1, pd.Timedelta("1h"))
    residuals = panel.values[1:, None, :] - panel.values[:-1, None, :]  # [n, 1, node]
    scale = hour_scale(residuals, hours)
    assert scale is not None and scale.shape == (24, 3)
    assert (scale[12] > 2.0).all() and (scale[3] < 0.6).all()
    daily = np.zeros_like(hours)  # every target at midnight
    assert hour_scale(residuals, daily) is None


def test_intervals_by_hour_cover_the_noisy_hours_as_well_as_the_quiet_ones(tmp_path) -> None:
    panel = noisy_noon()
    train, valid = panel.slice(0, 24 * 18), panel.slice(24 * 18, 24 * 24)
    model = Persistence(window=1, horizon=1).fit(train, valid=valid)
    assert model.hour_scale is not None
    test = backtest(model, panel, start=24 * 24, inputs_inside=1)
    hours = target_hours(panel.timestamps, test.forecast.origins, 1, pd.Timedelta("1h"))
    lower, upper = test.forecast.lower, test.forecast.upper
    by_hour = interval_metrics(test.actual, lower, upper, hours)
    # The same validation residuals, one width at every hour.
    fitted = backtest(model, panel, start=24 * 18, stop=24 * 24, inputs_inside=0)
    plain = conformal_halfwidth(fitted.actual - fitted.forecast.mean, 0.9)
    mean = test.forecast.mean
    one_width = interval_metrics(test.actual, mean - plain, mean + plain, hours)
    assert by_hour["coverage_worst_hour"] > one_width["coverage_worst_hour"] + 0.2
    assert abs(by_hour["coverage"] - 0.9) < 0.06
    assert by_hour["width"] < one_width["width"]  # narrower on the many quiet hours
    assert test.metrics["pooled"]["1"]["coverage"] == by_hour["coverage"]
    model.save(tmp_path / "p")
    loaded = load_model(tmp_path / "p")
    np.testing.assert_array_equal(loaded.hour_scale, model.hour_scale)
    again = loaded.predict_batch(panel, test.forecast.origins)
    np.testing.assert_array_equal(again.upper, upper)


def test_interval_metrics_count_only_observed_targets() -> None:
    actual = np.array([[[1.0, np.nan]], [[5.0, 2.0]]])  # [n=2, horizon=1, node=2]
    lower, upper = np.zeros_like(actual), np.full_like(actual, 3.0)
    scores = interval_metrics(actual, lower, upper)
    assert scores["coverage"] == 2 / 3 and scores["width"] == 3.0
    assert np.isnan(scores["coverage_worst_hour"])
