"""The Forecaster contract, checked for EVERY model in ``models.forecasters.registry.MODELS``.

A new model joins these tests by being registered. Panels are tiny (hourly steps, so
a seasonal day is 24 steps) and neural models train for 2 epochs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.bundle import MANIFEST, WEIGHTS, BundleError, read_bundle
from models.forecasters.base import Forecast, window_origins
from models.forecasters.factory import build_model, is_stochastic
from models.forecasters.registry import MODELS, load_model
from models.panel import SensorPanel, chronological_split
from pipeline.data.graph import RoadGraph

NAMES = sorted(MODELS)
WINDOW, HORIZON, N_NODES, N_TIME = 6, 3, 6, 300


def make_graph(n: int) -> RoadGraph:
    """A two-way chain with coordinates (a small corridor)."""
    coords = np.stack([34.0 + 0.01 * np.arange(n), np.full(n, -118.2)], axis=1)
    return RoadGraph.from_coordinates(
        coords, np.arange(n - 1), np.arange(1, n), both_directions=True
    )


def make_panel(missing: float = 0.0, seed: int = 0, n_time: int = N_TIME) -> SensorPanel:
    """Daily-periodic speeds with noise; ``missing`` share of readings NaN, and one sensor
    silent for a long stretch."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_time)
    base = 55 + 8 * np.sin(2 * np.pi * t / 24)[:, None] + np.arange(N_NODES)[None, :]
    values = (base + rng.normal(0, 1.5, (n_time, N_NODES))).astype(np.float32)
    if missing:
        values[rng.random(values.shape) < missing] = np.nan
        values[40:90, 2] = np.nan
    stamps = pd.date_range("2024-03-01", periods=n_time, freq="1h", tz="UTC")
    return SensorPanel.from_values(
        values, stamps, [f"s{i}" for i in range(N_NODES)], graph=make_graph(N_NODES), name="toy"
    )


def build(name: str, seed: int = 0):
    return build_model(
        name, window=WINDOW, horizon=HORIZON, seed=seed, device="cpu", epochs=2, progress=False
    )


_FITTED: dict[str, object] = {}


def fitted(name: str):
    """One fit per model on the clean panel, shared by the read-only tests."""
    if name not in _FITTED:
        split = chronological_split(make_panel())
        _FITTED[name] = build(name).fit(split.train, valid=split.valid)
    return _FITTED[name]


def test_registry_holds_the_core_models():
    assert {"persistence", "seasonal", "ar", "lstm", "gru"} <= set(MODELS)
    for name, cls in MODELS.items():
        assert cls.name == name


@pytest.mark.parametrize("name", NAMES)
def test_forecast_has_horizon_steps_and_intervals(name):
    model = fitted(name)
    panel = make_panel()
    forecast = model.predict(panel.slice(panel.n_time - model.window - 5, panel.n_time))
    assert isinstance(forecast, Forecast)
    assert forecast.horizon == HORIZON == model.horizon
    assert forecast.mean.shape == (HORIZON, N_NODES)
    assert len(forecast.targets) == HORIZON
    assert forecast.targets[0] == panel.timestamps[-1] + panel.freq
    assert np.isfinite(forecast.mean).all()
    assert forecast.lower is not None and forecast.upper is not None
    assert (forecast.lower <= forecast.mean).all() and (forecast.mean <= forecast.upper).all()


@pytest.mark.parametrize("name", NAMES)
def test_fit_and_predict_do_not_mutate_inputs(name):
    panel = make_panel(missing=0.1)
    values, mask = panel.values.copy(), panel.mask.copy()
    split = chronological_split(panel)
    model = build(name).fit(split.train, valid=split.valid)
    origins = window_origins(panel.n_time, model.window, 0, targets=False)[-5:]
    model.predict_batch(panel, origins)
    model.predict(panel.slice(panel.n_time - model.window, panel.n_time))
    np.testing.assert_array_equal(panel.values, values)
    np.testing.assert_array_equal(panel.mask, mask)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_forecast(name):
    split = chronological_split(make_panel())
    first = build(name, seed=3).fit(split.train, valid=split.valid)
    second = build(name, seed=3).fit(split.train, valid=split.valid)
    origins = window_origins(split.test.n_time, first.window, HORIZON)
    a = first.predict_batch(split.test, origins).mean
    b = second.predict_batch(split.test, origins).mean
    np.testing.assert_array_equal(a, b)
    if is_stochastic(name):
        other = build(name, seed=4).fit(split.train, valid=split.valid)
        assert not np.array_equal(other.predict_batch(split.test, origins).mean, a)


@pytest.mark.parametrize("name", NAMES)
def test_save_load_gives_identical_predictions(name, tmp_path: Path):
    model = fitted(name)
    model.save(tmp_path / "bundle")
    loaded = load_model(tmp_path / "bundle")
    assert type(loaded) is type(model)
    assert loaded.sensor_ids == model.sensor_ids
    assert (loaded.window, loaded.horizon) == (model.window, model.horizon)
    panel = make_panel(seed=5)
    origins = window_origins(panel.n_time, model.window, HORIZON)[-20:]
    before, after = model.predict_batch(panel, origins), loaded.predict_batch(panel, origins)
    np.testing.assert_array_equal(before.mean, after.mean)
    np.testing.assert_array_equal(before.lower, after.lower)
    np.testing.assert_array_equal(before.upper, after.upper)


@pytest.mark.parametrize("name", NAMES)
def test_bundle_config_records_what_the_design_asks(name, tmp_path: Path):
    model = fitted(name)
    model.save(tmp_path / "b")
    bundle = read_bundle(tmp_path / "b")
    config = bundle.config
    for key in ("model", "format_version", "sensor_ids", "window", "horizon", "fingerprint"):
        assert key in config, key
    assert config["model"] == name
    assert config["sensor_ids"] == list(model.sensor_ids)
    manifest = json.loads((tmp_path / "b" / MANIFEST).read_text())
    assert set(manifest["files"]) == {p.name for p in (tmp_path / "b").iterdir()} - {MANIFEST}


def _corrupt(directory: Path) -> str:
    """Flip one byte in the weights (or the params / config when the model has none)."""
    for name in (WEIGHTS, "params.json", "config.json"):
        path = directory / name
        if path.is_file():
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0x01
            path.write_bytes(bytes(data))
            return name
    raise AssertionError("bundle has no file to corrupt")


@pytest.mark.parametrize("name", NAMES)
def test_corrupted_bundle_is_refused(name, tmp_path: Path):
    fitted(name).save(tmp_path / "b")
    corrupted = _corrupt(tmp_path / "b")
    with pytest.raises(BundleError, match=f"{corrupted}.*corrupted"):
        load_model(tmp_path / "b")


@pytest.mark.parametrize("name", NAMES)
def test_other_format_version_is_refused(name, tmp_path: Path):
    fitted(name).save(tmp_path / "b")
    manifest_path = tmp_path / "b" / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["format_version"] = 99
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="format version 99"):
        load_model(tmp_path / "b")


@pytest.mark.parametrize("name", NAMES)
def test_window_with_other_sensors_is_refused(name):
    model = fitted(name)
    panel = make_panel()
    window = panel.slice(panel.n_time - model.window, panel.n_time)
    renamed = SensorPanel.from_values(
        np.array(window.values), window.timestamps, [f"x{i}" for i in range(N_NODES)]
    )
    with pytest.raises(ValueError, match="do not match the trained bundle"):
        model.predict(renamed)
    reordered = window.select(list(reversed(window.sensor_ids)))
    with pytest.raises(ValueError, match="another order"):
        model.predict(reordered)


@pytest.mark.parametrize("name", NAMES)
def test_missing_values_train_and_predict_without_nan(name):
    panel = make_panel(missing=0.15, seed=1)
    split = chronological_split(panel)
    model = build(name).fit(split.train, valid=split.valid)
    origins = window_origins(panel.n_time, model.window, 0, targets=False)
    batch = model.predict_batch(panel, origins)
    assert np.isfinite(batch.mean).all()
    assert batch.lower is not None and np.isfinite(batch.lower).all()
    # A window whose last readings are all missing still gets a forecast.
    holes = np.array(panel.values)
    holes[-3:, :] = np.nan
    blind = SensorPanel.from_values(holes, panel.timestamps, panel.sensor_ids, graph=panel.graph)
    assert np.isfinite(model.predict(blind.slice(panel.n_time - model.window, None)).mean).all()


@pytest.mark.parametrize("name", NAMES)
def test_bundle_loads_on_cpu_whatever_device_it_was_trained_on(name, tmp_path: Path):
    """A bundle stores host arrays only (safetensors has no device field), and loading puts
    the weights on the device of *this* machine. A CPU-side check: the bundle's recorded
    training device is set to ``cuda`` by hand, and loading must ignore it. The real CUDA
    round trip (train on CUDA, load on CPU) is in tests/test_gpu.py."""
    import torch

    model = fitted(name)
    model.save(tmp_path / "b")
    config_path = tmp_path / "b" / "config.json"
    config = json.loads(config_path.read_text())
    if "train" in config:  # pretend the bundle was trained on a GPU
        config["train"]["device"] = "cuda"
        config_path.write_text(json.dumps(config))
        manifest_path = tmp_path / "b" / MANIFEST
        manifest = json.loads(manifest_path.read_text())
        import hashlib

        manifest["files"]["config.json"] = hashlib.sha256(config_path.read_bytes()).hexdigest()
        manifest_path.write_text(json.dumps(manifest))
    bundle = read_bundle(tmp_path / "b")
    assert all(isinstance(v, np.ndarray) for v in bundle.tensors.values())
    loaded = load_model(tmp_path / "b")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    for attr in ("module", "net"):
        module = getattr(loaded, attr, None)
        if isinstance(module, torch.nn.Module):
            assert {p.device.type for p in module.parameters()} == {expected}
    panel = make_panel()
    assert np.isfinite(loaded.predict(panel.slice(panel.n_time - loaded.window, None)).mean).all()


@pytest.mark.parametrize("name", NAMES)
def test_loading_a_bundle_as_another_model_is_refused(name, tmp_path: Path):
    fitted(name).save(tmp_path / "b")
    other = next(cls for n, cls in MODELS.items() if n != name)
    with pytest.raises(BundleError, match=f"holds a '{name}' model"):
        other.load(tmp_path / "b")


@pytest.mark.parametrize("name", NAMES)
def test_a_quantity_never_negative_in_training_is_never_forecast_negative(name, tmp_path: Path):
    """Counts that drop to zero every night, falling steeply into it: a model may
    extrapolate the fall below zero, the floor stops it. A sensor that went below zero in
    training keeps no floor, and the floors survive a save and load."""
    rng = np.random.default_rng(2)
    t = np.arange(N_TIME)
    counts = np.maximum(
        0.0, 40 * np.sin(2 * np.pi * t / 24)[:, None] + rng.normal(0, 3, (N_TIME, N_NODES))
    )
    counts[:, 5] -= 20.0  # a quantity that may be negative
    stamps = pd.date_range("2024-03-01", periods=N_TIME, freq="1h", tz="UTC")
    panel = SensorPanel.from_values(
        counts.astype(np.float32),
        stamps,
        [f"s{i}" for i in range(N_NODES)],
        graph=make_graph(N_NODES),
        name="counts",
    )
    split = chronological_split(panel)
    model = build(name).fit(split.train, valid=split.valid)
    np.testing.assert_array_equal(model.floor, [0, 0, 0, 0, 0, -np.inf])
    model.save(tmp_path / "b")
    loaded = load_model(tmp_path / "b")
    np.testing.assert_array_equal(loaded.floor, model.floor)
    origins = window_origins(panel.n_time, model.window, 0, targets=False)
    for forecaster in (model, loaded):
        batch = forecaster.predict_batch(panel, origins)
        assert batch.mean[..., :5].min() >= 0.0 and batch.lower[..., :5].min() >= 0.0
        assert (batch.lower <= batch.mean).all() and (batch.mean <= batch.upper).all()
