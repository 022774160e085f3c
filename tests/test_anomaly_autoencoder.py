"""LSTM-autoencoder detector: the lecture's architecture, flags spike / level shift /
context anomaly, quiet on clean data, score_batch == streaming. The contract every
detector keeps: tests/test_detectors_contract.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.anomaly.autoencoder import AutoencoderConfig, AutoencoderDetector, LSTMAutoencoder
from models.anomaly.base import DetectorError

FLAG = 0.99  # a detector "flags" a tick at this score (p <= 0.01)
QUIET = 0.02  # share of clean ticks allowed at FLAG or above (calibrated: 0.01)
SMALL = AutoencoderConfig(window=12, epochs=10, patience=3, seed=0)


@pytest.fixture(scope="module")
def case(daily_series):
    train, _ = daily_series(3, 1)
    valid, _ = daily_series(1, 4)  # a whole day: calibration sees every phase of the cycle
    test, spans = daily_series(2, 2, [("spike", 150, 1), ("shift", 300, 36), ("context", 450, 24)])
    clean, _ = daily_series(2, 3)
    detector = AutoencoderDetector(SMALL).fit(train, valid=valid)
    return detector, train, test, spans, clean


def test_architecture_is_the_lectures() -> None:
    model = LSTMAutoencoder(n_features=2, window=10, encoder=64, bottleneck=32, dropout=0.2)
    assert (model.encode1.hidden_size, model.encode2.hidden_size) == (64, 32)
    assert model.decode.hidden_size == 64 and model.out.out_features == 2
    x = torch.randn(5, 10, 2)  # [batch, window, feature]
    assert model(x).shape == (5, 10, 2)


def test_training_reduces_the_loss(case) -> None:
    detector = case[0]
    assert detector.train_loss[-1] < detector.train_loss[0]


def test_flags_spike_shift_context_and_stays_quiet(case) -> None:
    detector, _, test, spans, clean = case
    # score_batch is the streaming result in one batch (see the next test)
    scores = detector.score_batch(test).score[:, 0]
    for kind, (start, stop) in spans.items():
        # a window is anomalous while the anomaly is in it: up to `window` steps later
        assert scores[start : stop + SMALL.window].max() >= FLAG, f"missed the {kind}"
    quiet = detector.score_batch(clean).score[:, 0]
    assert (quiet >= FLAG).mean() <= QUIET  # calibrated: 1 % of normal ticks, plus slack


def test_score_batch_equals_streaming(case) -> None:
    detector, _, test, _, _ = case
    part = test.slice(0, 320)  # holds the spike and the start of the level shift
    stream = detector.score_panel(part)
    batch = detector.score_batch(part)
    np.testing.assert_allclose(batch.score, stream.score, atol=1e-5)
    np.testing.assert_allclose(batch.expected, stream.expected, rtol=1e-4, equal_nan=True)
    detector.score_batch(part.slice(0, 290))  # the state it leaves continues the stream
    cont = [
        detector.update(part.timestamps[t], part.values[t], part.mask[t]).score
        for t in range(290, 320)
    ]
    np.testing.assert_allclose(np.stack(cont), stream.score[290:320], atol=1e-5)


def test_reason_and_expected_value(case) -> None:
    detector, _, test, spans, _ = case
    batch = detector.score_panel(test.slice(0, 200))
    start = spans["spike"][0]
    t = start + int(np.argmax(batch.score[start : start + SMALL.window, 0]))
    assert "reconstructed with error" in batch.reasons[t][0]
    assert abs(batch.expected[t, 0] - 60) < 25  # a normal window ends near the daily level


def test_missing_readings_and_bad_settings(case) -> None:
    detector, _, test, _, _ = case
    values = test.values.copy()
    values[50:53] = np.nan
    gappy = type(test).from_values(values, test.timestamps, test.sensor_ids).slice(0, 100)
    scores = detector.score_panel(gappy).score
    assert np.isfinite(scores).all()
    with pytest.raises(DetectorError, match="window"):
        AutoencoderConfig(window=1)
    with pytest.raises(DetectorError, match="training"):
        AutoencoderDetector(SMALL).fit(test.slice(0, 20))
