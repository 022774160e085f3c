"""The detector contract, checked for EVERY detector in ``models.anomaly.registry.DETECTORS``.

A new detector joins these tests by being registered and given a small setting in
:func:`build`. Each one is checked both fitted (``fit`` on training data, calibrated on
validation data) and started (``start`` on the rows before the stream, calibrating
online). Panels are tiny: 3 sensors on a 5-minute grid with a 4-hour cycle; the neural
detectors train for 2 epochs; the interval detector judges a fitted persistence
forecaster's forecasts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.anomaly.autoencoder import AutoencoderConfig, AutoencoderDetector
from models.anomaly.base import (
    Detection,
    DetectionBatch,
    DetectorError,
    StreamingDetector,
    empty_head,
    stack,
)
from models.anomaly.changepoint import ChangepointConfig, ChangepointDetector
from models.anomaly.context import ContextConfig, ContextDetector
from models.anomaly.correlation import CorrelationConfig, CorrelationDetector
from models.anomaly.extreme import ExtremeConfig, ExtremeDetector
from models.anomaly.gan import GanConfig, GanDetector
from models.anomaly.gaussian import GaussianConfig, WindowedGaussianDetector
from models.anomaly.interval import ForecastIntervalDetector, IntervalConfig
from models.anomaly.registry import DETECTORS, load_detector
from models.anomaly.spectral import SpectralConfig, SpectralDetector
from models.bundle import read_bundle
from models.forecasters.base import Forecaster
from models.forecasters.registry import model_class
from models.panel import SensorPanel

NAMES = sorted(DETECTORS)
MODES = ("fit", "start")
N_NODES = 3
FREQ = pd.Timedelta("5min")
CUT = 100  # a tick of the test panel after every detector's warm-up
# [time, node, channel] panels for detectors of several channels per sensor
CHANNELS = {"correlation": 2}


def make_panel(name: str, n_time: int, seed: int, spikes: tuple[int, ...] = ()) -> SensorPanel:
    """A 4-hour cycle per sensor plus noise (a second channel follows the first), with
    +40 spikes (beyond the range of every sensor) at ``spikes``."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_time)
    level = 60 + 10 * np.sin(2 * np.pi * t / 48)[:, None] + 2 * np.arange(N_NODES)[None, :]
    values = level + rng.normal(0, 1, (n_time, N_NODES))  # [time, node]
    for s in spikes:
        values[s] += 40.0
    channels = CHANNELS.get(name, 1)
    if channels > 1:
        second = 100 - 0.8 * values + rng.normal(0, 0.5, values.shape)
        values = np.stack([values, second][:channels], axis=2)  # [time, node, channel]
    stamps = pd.date_range("2024-03-01", periods=n_time, freq=FREQ, tz="UTC")
    return SensorPanel.from_values(values, stamps, [f"s{i}" for i in range(N_NODES)])


def persistence(train: SensorPanel) -> Forecaster:
    model = model_class("persistence")(window=1, horizon=3)  # type: ignore[call-arg]
    model.fit(train)
    return model


def unprepared(name: str, forecaster_data: SensorPanel | None = None) -> StreamingDetector:
    """Detector ``name`` with a small setting, neither fitted nor started (the interval
    detector's forecaster is fitted on ``forecaster_data``, default a short panel)."""
    if name == "interval":
        forecaster = persistence(forecaster_data or make_panel(name, 50, 1))
        return ForecastIntervalDetector(
            forecaster, IntervalConfig(horizon=3, capacity=256, min_count=5)
        )
    if name == "autoencoder":
        return AutoencoderDetector(
            AutoencoderConfig(window=6, encoder=8, bottleneck=4, epochs=2, min_count=5)
        )
    if name == "correlation":
        return CorrelationDetector(
            CorrelationConfig(corr_window=6, sequence=2, hidden=4, epochs=2, min_count=5)
        )
    if name == "gaussian":
        return WindowedGaussianDetector(GaussianConfig(window=50, step=10))
    if name == "context":
        return ContextDetector(ContextConfig(window=4, scales=(1, 3), memory=64, min_count=5))
    if name == "extreme":
        return ExtremeDetector(ExtremeConfig(capacity=128, min_count=5))
    if name == "changepoint":
        return ChangepointDetector(ChangepointConfig(max_run=32, min_count=5))
    if name == "spectral":
        return SpectralDetector(SpectralConfig(window=16, local=5, min_count=5))
    if name == "gan":
        return GanDetector(GanConfig(window=6, hidden=8, code=4, epochs=2, min_count=5))
    raise AssertionError(f"give the new detector {name!r} a small setting in unprepared()")


def build(name: str, mode: str) -> StreamingDetector:
    """Detector ``name`` fitted on training data, or started on the rows before the stream."""
    train, valid = make_panel(name, 240, 1), make_panel(name, 120, 2)
    if mode == "start":
        head = train.slice(0, 120)
        return unprepared(name, head).start(head)
    return unprepared(name, train).fit(train, valid=valid)


_BUILT: dict[tuple[str, str], StreamingDetector] = {}


def built(name: str, mode: str) -> StreamingDetector:
    """One detector per name and mode, shared (every check starts with a reset)."""
    if (name, mode) not in _BUILT:
        _BUILT[name, mode] = build(name, mode)
    return _BUILT[name, mode]


def stream(detector: StreamingDetector, panel: SensorPanel) -> list[Detection]:
    """``update`` over every tick of ``panel``, without resetting first."""
    return [
        detector.update(panel.timestamps[t], panel.values[t], panel.mask[t])
        for t in range(panel.n_time)
    ]


def assert_same(a: DetectionBatch, b: DetectionBatch) -> None:
    np.testing.assert_array_equal(a.score, b.score)
    np.testing.assert_array_equal(a.observed, b.observed)
    for attr in ("expected", "lower", "upper"):
        x, y = getattr(a, attr), getattr(b, attr)
        assert (x is None) == (y is None), attr
        if x is not None:
            np.testing.assert_array_equal(x, y)
    assert a.reasons == b.reasons


def test_registry_holds_the_detectors_under_their_names() -> None:
    assert {
        "interval",
        "autoencoder",
        "correlation",
        "gaussian",
        "context",
        "extreme",
        "changepoint",
        "spectral",
        "gan",
    } <= set(DETECTORS)
    for name, cls in DETECTORS.items():
        assert cls.name == name
        assert issubclass(cls, StreamingDetector)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", NAMES)
def test_scores_are_in_unit_interval(name: str, mode: str) -> None:
    detector = built(name, mode)
    test = make_panel(name, 160, 3, spikes=(130,))
    batch = detector.score_panel(test)
    assert batch.detector == name and batch.sensor_ids == test.sensor_ids
    assert batch.score.shape == (test.n_time, N_NODES) and batch.score.dtype == np.float32
    assert np.isfinite(batch.score).all()
    assert (batch.score >= 0.0).all() and (batch.score <= 1.0).all()
    assert (batch.score[CUT:] > 0.0).any()  # warmed up: scoring
    assert len(batch.reasons) == test.n_time


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", NAMES)
def test_batch_equals_streaming(name: str, mode: str) -> None:
    detector = built(name, mode)
    test = make_panel(name, 160, 3, spikes=(130,))
    batch = detector.score_panel(test)
    detector.reset()
    assert_same(stack(stream(detector, test), test.sensor_ids), batch)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", NAMES)
def test_no_look_ahead(name: str, mode: str) -> None:
    detector = built(name, mode)
    test = make_panel(name, 160, 3)
    full = detector.score_panel(test).score
    np.testing.assert_array_equal(detector.score_panel(test.slice(0, CUT)).score, full[:CUT])
    changed = test.values.copy()
    changed[CUT:] = 50.0 - changed[CUT:]  # a different future
    future = SensorPanel.from_values(changed, test.timestamps, test.sensor_ids)
    other = detector.score_panel(future).score
    np.testing.assert_array_equal(other[:CUT], full[:CUT])
    assert not np.array_equal(other[CUT:], full[CUT:])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", NAMES)
def test_reset_forgets_the_stream(name: str, mode: str) -> None:
    """After ``reset`` a detector scores as it did right after fit/start, whatever it
    streamed before (online calibration included)."""
    detector = built(name, mode)
    test = make_panel(name, 160, 3)
    expected = detector.score_panel(test).score
    stream(detector, make_panel(name, 120, 4, spikes=(30, 60, 61, 90)))
    detector.reset()
    np.testing.assert_array_equal(np.stack([d.score for d in stream(detector, test)]), expected)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip(name: str, mode: str, tmp_path: Path) -> None:
    detector = built(name, mode)
    test = make_panel(name, 160, 3, spikes=(130,))
    stream(detector, make_panel(name, 60, 4, spikes=(30,)))  # what is saved is the fit
    detector.save(tmp_path / name)
    assert read_bundle(tmp_path / name).config["model"] == f"detector:{name}"
    loaded = load_detector(tmp_path / name)
    assert type(loaded) is type(detector) and loaded.sensor_ids == detector.sensor_ids
    if isinstance(loaded, ForecastIntervalDetector):
        assert isinstance(detector, ForecastIntervalDetector) and detector.forecaster is not None
        loaded.attach(detector.forecaster)  # the interval detector's documented extra
    assert_same(loaded.score_panel(test), detector.score_panel(test))


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_is_a_detector_error(name: str) -> None:
    """Refused ticks raise DetectorError and leave the stream as it was."""
    detector = built(name, "fit")
    test = make_panel(name, 40, 3)
    expected = detector.score_panel(test).score
    detector.reset()
    first = stream(detector, test.slice(0, 20))
    ts, values = test.timestamps[20], test.values[20]
    wider = np.concatenate([values, values[:1]])
    with pytest.raises(DetectorError, match="shape"):
        detector.update(ts, wider, np.ones(wider.shape, bool))
    with pytest.raises(DetectorError, match="shape"):
        detector.update(ts, values, np.ones(N_NODES + 1, bool))
    nan = values.copy()
    nan[0] = np.nan
    with pytest.raises(DetectorError, match="non-finite"):
        detector.update(ts, nan, np.ones(nan.shape, bool))
    rest = stream(detector, test.slice(20, 40))
    np.testing.assert_array_equal(np.stack([d.score for d in first + rest]), expected)
    with pytest.raises(DetectorError, match="sensors"):
        renamed = SensorPanel.from_values(test.values, test.timestamps, ["a", "b", "c"])
        detector.score_panel(renamed)


@pytest.mark.parametrize("name", NAMES)
def test_unprepared_detector_refuses_to_stream_or_save(name: str, tmp_path: Path) -> None:
    fresh = unprepared(name)
    test = make_panel(name, 5, 3)
    with pytest.raises(DetectorError, match=r"fit\(\)|start\(\)"):
        fresh.update(test.timestamps[0], test.values[0], test.mask[0])
    with pytest.raises(DetectorError, match="fit"):
        fresh.save(tmp_path / "x")


@pytest.mark.parametrize("name", NAMES)
def test_start_with_an_empty_head_starts_or_names_the_fix(name: str) -> None:
    """``start`` needs only a head: an empty one either suffices (the detector learns
    from the stream alone) or is refused with a DetectorError."""
    head = empty_head([f"s{i}" for i in range(N_NODES)], FREQ, CHANNELS.get(name))
    try:
        started = unprepared(name).start(head)
    except DetectorError:
        return
    test = make_panel(name, 60, 3)
    scores = started.score_panel(test).score
    assert (scores >= 0).all() and (scores <= 1).all()
