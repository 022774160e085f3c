"""NAB's windowedGaussian baseline as a streaming detector: hand-computed scores, the
sliding window, spikes and level shifts, fit versus start, typed errors. The contract
every detector keeps: tests/test_detectors_contract.py."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from models.anomaly.base import DetectorError, empty_head
from models.anomaly.gaussian import GaussianConfig, WindowedGaussianDetector, gaussian_scores
from models.panel import SensorPanel

FREQ = pd.Timedelta("5min")


def head(*sensor_ids: str) -> SensorPanel:
    return empty_head(sensor_ids, FREQ)


def panel_of(values: np.ndarray) -> SensorPanel:
    values = np.asarray(values, dtype=np.float32)
    if values.ndim == 1:
        values = values[:, None]
    stamps = pd.date_range("2024-01-01", periods=len(values), freq=FREQ, tz="UTC")
    return SensorPanel.from_values(values, stamps, tuple(f"s{i}" for i in range(values.shape[1])))


def q(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def test_scores_by_hand() -> None:
    # first reading: nothing seen; second: a constant window of 1 (std 1e-6); third: the
    # window [1, 2] has mean 1.5 and std 0.5, so 3 lies 3 standard deviations out
    scores = gaussian_scores(np.array([1.0, 2.0, 3.0, 1.5]))
    assert scores[0] == 0.0
    assert scores[1] == 1.0
    assert scores[2] == pytest.approx(1.0 - q(3.0))
    mean, std = 2.0, math.sqrt(2.0 / 3.0)  # window [1, 2, 3]
    assert scores[3] == pytest.approx(1.0 - q(abs(1.5 - mean) / std))


def test_full_window_slides_by_whole_steps() -> None:
    config = GaussianConfig(window=4, step=2)
    detector = WindowedGaussianDetector(config).start(head("s"))
    for v in [1.0, 2.0, 3.0, 4.0]:  # the window fills: mean 2.5
        detector.score_and_learn(np.array([v]))
    assert detector._mean[0] == pytest.approx(2.5)
    detector.score_and_learn(np.array([10.0]))  # buffered, the mean waits for a full step
    assert detector._mean[0] == pytest.approx(2.5)
    detector.score_and_learn(np.array([12.0]))  # window [3, 4, 10, 12]
    assert detector._mean[0] == pytest.approx(7.25)


def test_flags_spikes_and_level_shifts_and_stays_calm_on_noise() -> None:
    rng = np.random.default_rng(0)
    values = 60 + rng.normal(0, 1, 800)
    clean = gaussian_scores(values)
    values[500] = 20.0  # a sudden speed drop
    values[650:] += 8.0  # a level shift
    scores = gaussian_scores(values)
    assert scores[500] > 0.999999 and scores[650] > 0.9999
    assert np.quantile(clean[50:], 0.99) < 0.999


def test_start_ignores_the_head_rows_and_matches_nab_run() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(0, 1, (300, 2))
    panel = panel_of(values)
    detector = WindowedGaussianDetector().start(panel.slice(0, 100))
    a = detector.score_panel(panel).score
    assert (a[0] == 0).all()  # nothing learned from the head: the first row is unscored
    streamed = gaussian_scores(values[:, 0])
    np.testing.assert_allclose(a[:, 0], streamed, atol=1e-6)  # float32 Detection scores


def test_fit_fills_the_window() -> None:
    rng = np.random.default_rng(2)
    train = panel_of(rng.normal(5, 1, (200, 2)))
    test = panel_of(rng.normal(5, 1, (50, 2)))
    detector = WindowedGaussianDetector().fit(train)
    assert detector.score_panel(test).score[0].min() > 0.0  # the first reading is scored


def test_missing_readings_are_not_scored_nor_learned() -> None:
    detector = WindowedGaussianDetector().start(head("s"))
    stamp = pd.Timestamp("2024-01-01", tz="UTC")
    detector.update(stamp, np.array([1.0]), np.array([True]))
    d = detector.update(stamp, np.array([np.nan]), np.array([False]))
    assert d.score[0] == 0.0 and len(detector._windows[0]) == 1


def test_gaussian_rejects_misuse() -> None:
    with pytest.raises(DetectorError, match="step <= window"):
        GaussianConfig(window=10, step=20)
    detector = WindowedGaussianDetector().start(head("a", "b"))
    with pytest.raises(DetectorError, match="shape"):
        detector.score_and_learn(np.zeros(3))
    with pytest.raises(DetectorError, match="at least one sensor"):
        WindowedGaussianDetector().start(head())
