"""Bundles: atomic writes, manifest checks, typed errors that name the fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.bundle import (
    FORMAT_VERSION,
    MANIFEST,
    BundleError,
    read_bundle,
    read_model_bundle,
    save_bundle,
)
from models.forecasters.registry import load_model

CONFIG = {"model": "persistence", "sensor_ids": ["a", "b"], "window": 3, "horizon": 2}


def test_round_trip_of_config_tensors_and_params(tmp_path: Path):
    tensors = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "i": np.array([1, 2])}
    save_bundle(tmp_path / "b", config=CONFIG, tensors=tensors, params={"coef": [0.5, 0.25]})
    bundle = read_bundle(tmp_path / "b")
    assert bundle.config["format_version"] == FORMAT_VERSION
    assert bundle.config["sensor_ids"] == ["a", "b"]
    np.testing.assert_array_equal(bundle.tensor("w"), tensors["w"])
    assert bundle.tensors["i"].dtype == tensors["i"].dtype
    assert bundle.params == {"coef": [0.5, 0.25]}
    with pytest.raises(BundleError, match="no tensor 'x'"):
        bundle.tensor("x")


def test_saving_again_replaces_the_bundle_and_leaves_no_temporary_dirs(tmp_path: Path):
    save_bundle(tmp_path / "b", config=CONFIG, tensors={"w": np.zeros(3, np.float32)})
    save_bundle(tmp_path / "b", config={**CONFIG, "window": 5})
    bundle = read_bundle(tmp_path / "b")
    assert bundle.config["window"] == 5 and bundle.tensors == {}
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def test_a_failed_save_leaves_the_old_bundle_intact(tmp_path: Path):
    save_bundle(tmp_path / "b", config=CONFIG, params={"x": 1.0})
    with pytest.raises(BundleError, match="NaN or infinity"):
        save_bundle(tmp_path / "b", config=CONFIG, params={"x": float("nan")})
    assert read_bundle(tmp_path / "b").params == {"x": 1.0}
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def test_bad_inputs_to_save(tmp_path: Path):
    with pytest.raises(BundleError, match=r"lacks \['window', 'horizon'\]"):
        save_bundle(tmp_path / "b", config={"model": "x", "sensor_ids": []})
    with pytest.raises(BundleError, match="not numpy arrays"):
        save_bundle(tmp_path / "b", config=CONFIG, tensors={"w": [1.0, 2.0]})  # type: ignore[dict-item]
    with pytest.raises(BundleError, match="not JSON-serialisable"):
        save_bundle(tmp_path / "b", config={**CONFIG, "x": object()})


def test_missing_bundle_and_missing_file_are_refused(tmp_path: Path):
    with pytest.raises(BundleError, match=r"no model bundle at .*roadcast train"):
        read_bundle(tmp_path / "nothing")
    save_bundle(tmp_path / "b", config=CONFIG, params={"x": 1})
    (tmp_path / "b" / "params.json").unlink()
    with pytest.raises(BundleError, match=r"missing params\.json"):
        read_bundle(tmp_path / "b")


def test_edited_config_is_refused_as_corrupted(tmp_path: Path):
    save_bundle(tmp_path / "b", config=CONFIG)
    path = tmp_path / "b" / "config.json"
    path.write_text(path.read_text().replace('"window": 3', '"window": 4'))
    with pytest.raises(BundleError, match=r"config\.json is corrupted"):
        read_bundle(tmp_path / "b")


def test_garbled_manifest_is_refused(tmp_path: Path):
    save_bundle(tmp_path / "b", config=CONFIG)
    (tmp_path / "b" / MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_bundle(tmp_path / "b")


def test_config_with_other_format_version_is_refused_even_with_a_valid_manifest(tmp_path: Path):
    import hashlib

    save_bundle(tmp_path / "b", config=CONFIG)
    cfg = tmp_path / "b" / "config.json"
    data = json.loads(cfg.read_text())
    data["format_version"] = 2
    cfg.write_text(json.dumps(data))
    manifest = json.loads((tmp_path / "b" / MANIFEST).read_text())
    manifest["files"]["config.json"] = hashlib.sha256(cfg.read_bytes()).hexdigest()
    (tmp_path / "b" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="format version 2"):
        read_bundle(tmp_path / "b")


def test_unknown_model_and_wrong_model_are_refused(tmp_path: Path):
    save_bundle(tmp_path / "b", config={**CONFIG, "model": "prophet"})
    with pytest.raises(BundleError, match="unknown model 'prophet'"):
        load_model(tmp_path / "b")
    with pytest.raises(BundleError, match="holds a 'prophet' model, not 'ar'"):
        read_model_bundle(tmp_path / "b", "ar")


def test_no_pickle_and_no_torch_load_in_the_model_layer():
    source = "".join(p.read_text() for p in Path("models").glob("*.py"))
    assert "import pickle" not in source
    for line in source.splitlines():
        if "torch.load(" in line:
            assert "weights_only=True" in line, line


def rehash(directory: Path, **changes) -> None:
    """Edit ``config.json`` and re-hash it in the manifest, as a careless edit would."""
    import hashlib

    cfg = directory / "config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), **changes}))
    manifest = json.loads((directory / MANIFEST).read_text())
    manifest["files"]["config.json"] = hashlib.sha256(cfg.read_bytes()).hexdigest()
    (directory / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"window": "12"}, "window"),
        ({"horizon": 1.5}, "horizon"),
        ({"horizon": -1}, "horizon"),
        ({"window": 0}, "window"),
        ({"horizon": 0}, "horizon"),
        ({"sensor_ids": "a,b"}, "sensor_ids"),
        ({"sensor_ids": ["a", 2]}, "sensor_ids"),
        ({"sensor_ids": ["a", "a"]}, "sensor_ids"),
        ({"model": 7}, "model"),
        ({"level": "0.9"}, "level"),
        ({"floor": [float("nan"), 0.0]}, "floor"),
        ({"floor": [0.0, float("inf")]}, "floor"),
        ({"floor": [0.0]}, "floor"),
        ({"floor": [0.0, True]}, "floor"),
        ({"floor": 0.0}, "floor"),
        ({"halfwidth": [[float("nan"), 1.0], [1.0, 1.0]]}, "halfwidth"),
        ({"halfwidth": [[1.0, 1.0]]}, "halfwidth"),
        ({"halfwidth": [[-1.0, 0.0], [0.0, 0.0]]}, "halfwidth"),
        ({"halfwidth": 2.0}, "halfwidth"),
        ({"hour_scale": [[1.0, 1.0]] * 23}, "hour_scale"),
        ({"hour_scale": [[1.0, float("inf")]] * 24}, "hour_scale"),
        ({"hour_scale": [[1.0, -1.0]] * 24}, "hour_scale"),
    ],
)
def test_rehashed_config_with_a_wrong_type_names_bundle_and_field(tmp_path: Path, changes, field):
    import pandas as pd

    from models.forecasters.baselines import Persistence
    from models.panel import SensorPanel
    from pipeline.model_dir import load_bundles

    bundle = tmp_path / "bundles" / "persistence"
    panel = SensorPanel.from_values(
        np.arange(40, dtype=np.float64).reshape(20, 2),
        pd.date_range("2024-01-01", periods=20, freq="5min", tz="UTC"),
        ("a", "b"),
    )
    Persistence(window=3, horizon=2).fit(panel).save(bundle)
    load_bundles(tmp_path)  # loads before the edit
    rehash(bundle, **changes)
    with pytest.raises(BundleError) as info:
        load_bundles(tmp_path)
    assert str(bundle) in str(info.value) and f"field {field!r}" in str(info.value)


@pytest.mark.parametrize("floor", [None, [None, 0.0], [0, -5.5]])
def test_a_floor_of_null_or_one_finite_number_or_null_per_sensor_loads(tmp_path: Path, floor):
    save_bundle(tmp_path / "b", config={**CONFIG, "floor": floor})
    assert read_bundle(tmp_path / "b").config["floor"] == floor


def test_network_weights_that_are_not_finite_are_refused_naming_the_weight(tmp_path: Path):
    """A diverged fit or an edited file: every forecast would be NaN, served as 'no
    forecast' for every sensor without a word."""
    import hashlib

    import pandas as pd
    from safetensors.numpy import load_file, save_file

    from models.forecasters.rnn import LSTMForecaster
    from models.nn.training import TrainConfig
    from models.panel import SensorPanel
    from pipeline.model_dir import load_bundles

    bundle = tmp_path / "bundles" / "lstm"
    panel = SensorPanel.from_values(
        np.sin(np.arange(160, dtype=np.float64) / 5).reshape(80, 2),
        pd.date_range("2024-01-01", periods=80, freq="5min", tz="UTC"),
        ("a", "b"),
    )
    LSTMForecaster(window=4, horizon=2, hidden=4, train=TrainConfig(epochs=1)).fit(panel).save(
        bundle
    )
    load_bundles(tmp_path)  # loads before the edit
    weights = bundle / "weights.safetensors"
    arrays = load_file(str(weights))
    name = sorted(arrays)[0]
    arrays[name] = np.full_like(arrays[name], np.nan)
    save_file(arrays, str(weights))
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["files"]["weights.safetensors"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=rf"{bundle}.*weight '{name}' holds NaN"):
        load_bundles(tmp_path)
