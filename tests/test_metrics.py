"""Metrics against hand-computed values, masking and the pooled/step convention."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.metrics import error_metrics, report_horizons, score_batch


def test_error_metrics_by_hand():
    actual = np.array([10.0, 20.0, np.nan, 40.0])
    predicted = np.array([12.0, 17.0, 999.0, 40.0])
    m = error_metrics(actual, predicted)
    # errors on scored targets: +2, -3, 0
    assert m["count"] == 3
    assert m["mae"] == pytest.approx(5.0 / 3.0)
    assert m["rmse"] == pytest.approx(math.sqrt(13.0 / 3.0))
    assert m["mape"] == pytest.approx((0.2 + 0.15 + 0.0) / 3.0 * 100.0)
    assert m["accuracy"] == pytest.approx(1.0 - math.sqrt(13.0) / math.sqrt(100 + 400 + 1600))
    mean = 70.0 / 3.0
    sst = (10 - mean) ** 2 + (20 - mean) ** 2 + (40 - mean) ** 2
    assert m["r2"] == pytest.approx(1.0 - 13.0 / sst)


def test_mape_skips_targets_below_the_floor():
    m = error_metrics(np.array([0.5, 10.0]), np.array([5.0, 11.0]))
    assert m["mape"] == pytest.approx(10.0)  # only the 10.0 target counts
    m = error_metrics(np.array([0.5, 10.0]), np.array([5.0, 11.0]), mape_floor=0.1)
    assert m["mape"] == pytest.approx((9.0 + 0.1) / 2 * 100.0)
    assert math.isnan(error_metrics(np.array([0.2]), np.array([0.3]))["mape"])


def test_nothing_scored_gives_nan_not_a_crash():
    m = error_metrics(np.array([np.nan, np.nan]), np.array([1.0, 2.0]))
    assert m["count"] == 0 and math.isnan(m["rmse"])


def test_nan_prediction_on_an_observed_target_is_an_error():
    with pytest.raises(ValueError, match="NaN/inf where the target is observed"):
        error_metrics(np.array([1.0, 2.0]), np.array([1.0, np.nan]))
    # ... but NaN where the target is missing is fine (it is not scored).
    error_metrics(np.array([1.0, np.nan]), np.array([1.0, np.nan]))


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        error_metrics(np.zeros(3), np.zeros(4))


def test_score_batch_pools_steps_one_to_h_and_reports_single_steps():
    actual = np.zeros((2, 4, 1))
    predicted = np.zeros((2, 4, 1))
    predicted[:, 0] = 1.0  # error 1 at step 1
    predicted[:, 3] = 2.0  # error 2 at step 4
    scores = score_batch(actual + 10.0, predicted + 10.0, horizons=(1, 2, 4))
    assert set(scores) == {"pooled", "step"}
    assert set(scores["pooled"]) == {"1", "2", "4"}
    assert scores["step"]["1"]["mae"] == pytest.approx(1.0)
    assert scores["step"]["2"]["mae"] == pytest.approx(0.0)
    assert scores["step"]["4"]["rmse"] == pytest.approx(2.0)
    assert scores["pooled"]["2"]["mae"] == pytest.approx(0.5)
    assert scores["pooled"]["4"]["rmse"] == pytest.approx(math.sqrt((1 + 4) / 4))
    assert scores["pooled"]["4"]["count"] == 8


def test_score_batch_rejects_horizons_beyond_the_forecast():
    with pytest.raises(ValueError, match=r"horizons \[5\] outside 1..4"):
        score_batch(np.zeros((1, 4, 2)), np.zeros((1, 4, 2)), horizons=(3, 5))
    with pytest.raises(ValueError, match=r"\[n, horizon, node\]"):
        score_batch(np.zeros((4, 2)), np.zeros((4, 2)))


def test_report_horizons():
    assert report_horizons(12) == (3, 6, 9, 12)
    assert report_horizons(4) == (3, 4)
    assert report_horizons(2) == (2,)
