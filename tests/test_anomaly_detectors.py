"""What each online detector is for (context, extreme, changepoint, spectral, gan): it
flags the anomaly it is built for, stays calibrated on clean data, and gives defined
scores on constant, all-zero and gappy series. The contract every detector keeps (no
look-ahead, batch = streaming, save/load, reset, bad ticks):
tests/test_detectors_contract.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.anomaly.base import StreamingDetector, empty_head
from models.anomaly.changepoint import ChangepointConfig, ChangepointDetector
from models.anomaly.context import ContextConfig, ContextDetector
from models.anomaly.extreme import ExtremeDetector
from models.anomaly.gan import GanConfig, GanDetector
from models.anomaly.spectral import SpectralDetector, saliency
from models.panel import SensorPanel

FREQ = pd.Timedelta("5min")


def panel_of(values: np.ndarray) -> SensorPanel:
    values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    stamps = pd.date_range("2024-01-01", periods=len(values), freq=FREQ, tz="UTC")
    return SensorPanel.from_values(values, stamps, [f"s{i}" for i in range(values.shape[1])])


def started(detector: StreamingDetector, n_nodes: int = 1) -> StreamingDetector:
    return detector.start(empty_head([f"s{i}" for i in range(n_nodes)], FREQ))


def daily(n: int, seed: int, noise: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 50 + 10 * np.sin(2 * np.pi * np.arange(n) / 96) + rng.normal(0, noise, n)


ONLINE = {
    "context": lambda: ContextDetector(ContextConfig(scales=(1, 4), memory=800)),
    "extreme": ExtremeDetector,
    "changepoint": ChangepointDetector,
    "spectral": SpectralDetector,
}


@pytest.mark.parametrize("name", sorted(ONLINE))
def test_clean_data_is_calibrated(name: str) -> None:
    """On an unchanging noisy cycle a threshold on the score is a false-alarm rate."""
    detector = started(ONLINE[name]())
    score = detector.score_panel(panel_of(daily(1500, 1))).score[:, 0]
    scored = score[500:]
    assert (scored >= 0.99).mean() < 0.03  # p <= 0.01 about 1 % of the time
    assert (scored >= 0.5).mean() < 0.6


@pytest.mark.parametrize("name", sorted(ONLINE))
def test_a_spike_is_the_most_anomalous_tick(name: str) -> None:
    values = daily(1200, 2)
    values[1000] += 40.0
    score = started(ONLINE[name]()).score_panel(panel_of(values)).score[:, 0]
    # context merges its scales by their mean p-value: a one-tick spike is diluted at 4
    assert score[1000] >= (0.9 if name == "context" else 0.99)
    assert score[1000] == score[600:].max()


def test_context_flags_a_pattern_never_seen_at_the_normal_level() -> None:
    """The cycle runs four times as fast for a while: no value is extreme, the shape is new."""
    values = daily(1500, 3)
    t = np.arange(1200, 1296)
    values[t] = 50 + 10 * np.sin(2 * np.pi * (1200 + 4 * (t - 1200)) / 96)
    score = started(ONLINE["context"]()).score_panel(panel_of(values)).score[:, 0]
    assert score[1200:1296].max() >= 0.9
    assert score[1200:1296].max() == score[600:].max()
    extreme = started(ExtremeDetector()).score_panel(panel_of(values)).score[:, 0]
    assert extreme[1200:1296].max() < 0.99  # the level itself is not unusual


def test_changepoint_flags_a_level_shift_at_its_onset() -> None:
    rng = np.random.default_rng(4)
    values = np.concatenate([rng.normal(10, 1, 800), rng.normal(16, 1, 400)])
    score = started(ChangepointDetector()).score_panel(panel_of(values)).score[:, 0]
    assert score[800:803].max() >= 0.99
    assert (score[900:] >= 0.99).mean() < 0.05  # the new level is learned


def test_changepoint_run_length_posterior_stays_normalised() -> None:
    detector = ChangepointDetector(ChangepointConfig(max_run=20))
    started(detector).score_panel(panel_of(np.random.default_rng(5).normal(0, 1, 200)))
    total = np.exp(detector._log_run).sum(axis=1)
    np.testing.assert_allclose(total, 1.0)


def test_spectral_saliency_peaks_at_a_spike() -> None:
    window = np.zeros((1, 64))
    window[0, 40] = 1.0
    assert int(np.argmax(saliency(window, 5, 3)[0])) == 40


@pytest.mark.parametrize("name", sorted(ONLINE))
@pytest.mark.parametrize("series", ["constant", "zeros", "gaps"])
def test_constant_zero_and_gappy_series_give_defined_scores(name: str, series: str) -> None:
    n = 400
    values = {"constant": np.full(n, 7.0), "zeros": np.zeros(n), "gaps": daily(n, 6)}[series]
    mask = np.ones(n, bool)
    if series == "gaps":
        mask[100:180] = False  # a missing stretch
    stamps = pd.date_range("2024-01-01", periods=n, freq=FREQ, tz="UTC")
    panel = SensorPanel(
        values=np.where(mask, values, np.nan)[:, None].astype(np.float32),
        mask=mask[:, None],
        timestamps=stamps,
        sensor_ids=("s0",),
    )
    score = started(ONLINE[name]()).score_panel(panel).score[:, 0]
    assert np.isfinite(score).all() and (score >= 0).all() and (score <= 1).all()
    if series != "gaps":
        assert (score == 0).all()  # nothing ever differs: nothing is anomalous
    else:
        assert (score[100:180] == 0).all()  # missing readings are not scored


def test_context_sensors_are_judged_independently() -> None:
    both = np.column_stack([daily(900, 7), daily(900, 8)])
    alone = started(ONLINE["context"]()).score_panel(panel_of(both[:, :1])).score[:, 0]
    pair = started(ONLINE["context"](), 2).score_panel(panel_of(both)).score[:, 0]
    np.testing.assert_array_equal(alone, pair)


def test_gan_trained_on_normal_windows_flags_an_abnormal_one() -> None:
    values = daily(700, 9, noise=0.5)
    values[620:626] = values[619] + np.array([15, -15, 15, -15, 15, -15])  # oscillation
    head = panel_of(values[:400])
    detector = GanDetector(GanConfig(window=16, epochs=20, seed=0)).start(head)
    assert len(detector.train_loss) >= 1
    batch = detector.score_batch(panel_of(values))
    streamed = detector.score_panel(panel_of(values))
    np.testing.assert_allclose(batch.score, streamed.score, atol=1e-5)
    score = batch.score[:, 0]
    assert score[620:640].max() >= 0.99
    assert score[620:640].max() == score[450:].max()


def test_gan_uses_nab_range_when_given() -> None:
    values = daily(300, 10)
    plain = GanDetector(GanConfig(window=8, epochs=1)).start(panel_of(values))
    ranged = GanDetector(GanConfig(window=8, epochs=1, value_range=(0.0, 100.0)))
    ranged.start(panel_of(values))
    assert plain.offset[0] == pytest.approx(values[:240].mean())  # its training rows
    assert (ranged.offset[0], ranged.scale[0]) == (0.0, 100.0)
