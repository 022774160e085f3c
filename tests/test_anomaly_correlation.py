"""Multi-sensor correlation detector (ConvLSTM, Albattah and Rassam) on the simulated
body-sensor stream: context anomalies (normal alone, abnormal together), spikes and
level shifts are flagged; clean data stays quiet; score_batch == streaming. The contract
every detector keeps: tests/test_detectors_contract.py."""

from __future__ import annotations

import numpy as np
import pytest

from models.anomaly.base import DetectorError
from models.anomaly.correlation import (
    ConvLSTMCell,
    CorrelationConfig,
    CorrelationDetector,
    correlation_matrices,
)
from tests.body_network import CHANNELS, simulate_body

FLAG = 0.99  # a detector "flags" a tick at this score (p <= 0.01)
QUIET = 0.02  # share of clean ticks allowed at FLAG or above (calibrated: 0.01)
CONFIG = CorrelationConfig(corr_window=30, sequence=6, hidden=16, epochs=10, seed=0)


@pytest.fixture(scope="module")
def case():
    train = simulate_body(1500, 2, seed=1)
    valid = simulate_body(800, 2, seed=4)
    anomalies = [("context", 0, 400, 60), ("spike", 1, 700, 1), ("level_shift", 0, 1000, 200)]
    test = simulate_body(1400, 2, seed=2, anomalies=anomalies)
    clean = simulate_body(1400, 2, seed=3)
    return CorrelationDetector(CONFIG).fit(train, valid=valid), test, clean


def test_simulated_context_anomaly_is_normal_alone() -> None:
    normal = simulate_body(1500, 1, seed=5)
    odd = simulate_body(1500, 1, seed=5, anomalies=[("context", 0, 600, 120)])
    hr_normal = normal.values[:, 0, 0]
    hr_odd = odd.values[600:720, 0, 0]
    # every replayed heart rate lies within the person's usual range...
    assert hr_odd.min() >= np.percentile(hr_normal, 0.5) - 1
    assert hr_odd.max() <= np.percentile(hr_normal, 99.5) + 1
    # ...but no longer matches the R-R interval
    mats = correlation_matrices(odd.values, odd.mask, 30)
    assert np.nanmedian(mats[100:600, 0, 0, 3]) < -0.8
    assert mats[719, 0, 0, 3] > -0.5
    assert odd.events[0].kind == "context" and odd.features == CHANNELS


def test_correlation_matrices_match_numpy() -> None:
    panel = simulate_body(200, 2, seed=0)
    mats = correlation_matrices(panel.values, panel.mask, 30)
    assert np.isnan(mats[28]).all()
    expected = np.corrcoef(panel.values[100:130, 1, :].astype(np.float64).T)
    np.testing.assert_allclose(mats[129, 1], expected, atol=1e-4)
    constant = np.ones((40, 1, 2))
    constant[:, 0, 1] = np.arange(40)
    c = correlation_matrices(constant, np.ones_like(constant, bool), 10)
    assert c[20, 0, 0, 1] == 0.0 and c[20, 0, 0, 0] == 1.0


def test_convlstm_cell_shapes() -> None:
    import torch

    cell = ConvLSTMCell(1, 8, 3, 4)
    x = torch.randn(2, 1, 4, 4)  # [batch, channels, rows, cols]
    h = torch.zeros(2, 8, 4, 4)
    h2, c2 = cell(x, (h, h.clone()))
    assert h2.shape == c2.shape == (2, 8, 4, 4)


def test_flags_context_spike_shift_and_stays_quiet(case) -> None:
    detector, test, clean = case
    scores = detector.score_batch(test).score  # == streaming, see test_score_batch_equals_streaming
    spans = {"context": (0, 400, 460), "spike": (1, 700, 701), "level_shift": (0, 1000, 1001)}
    for kind, (person, start, stop) in spans.items():
        window = scores[start : stop + CONFIG.corr_window, person]
        assert window.max() >= FLAG, f"missed the {kind}"
    quiet = detector.score_batch(clean).score
    assert (quiet >= FLAG).mean() <= QUIET  # calibrated: 1 % of normal ticks, plus slack


def test_reason_names_the_broken_pair(case) -> None:
    detector, test, _ = case
    part = test.slice(0, 470)
    batch = detector.score_panel(part)
    t = 400 + int(np.argmax(batch.score[400:470, 0]))
    assert "heart_rate" in batch.reasons[t][0]
    assert "correlation of" in batch.reasons[t][0]


def test_score_batch_equals_streaming(case) -> None:
    detector, test, _ = case
    values = test.values.copy()
    values[300:305, 0, 1] = np.nan  # missing readings are filled the same way in both
    part = (
        type(test)
        .from_values(values, test.timestamps, test.sensor_ids, features=test.features)
        .slice(0, 480)
    )
    stream = detector.score_panel(part).score
    np.testing.assert_allclose(detector.score_batch(part).score, stream, atol=1e-5)
    # the state a batch leaves behind continues exactly like the stream's
    detector.score_batch(part.slice(0, 450))
    cont = [
        detector.update(part.timestamps[t], part.values[t], part.mask[t]).score
        for t in range(450, 480)
    ]
    np.testing.assert_allclose(np.stack(cont), stream[450:480], atol=1e-5)


def test_needs_several_channels(daily_series) -> None:
    panel, _ = daily_series(2, 0)
    with pytest.raises(DetectorError, match="at least 2 channels"):
        CorrelationDetector(CONFIG).fit(panel)
    with pytest.raises(DetectorError, match="kernel"):
        CorrelationConfig(kernel=2)
    with pytest.raises(DetectorError, match="training"):
        CorrelationDetector(CONFIG).fit(simulate_body(200, 1, seed=0))
