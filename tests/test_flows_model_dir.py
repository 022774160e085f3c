"""The model directory: champion by validation, the network file, and bundle discovery
from a ``roadcast train`` output (one ``ROADCAST_MODEL_DIR`` for flows and service)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from models.panel import SensorPanel
from pipeline.model_dir import (
    BundleDirError,
    ChampionError,
    bundles_dir,
    choose_champion,
    discover_bundles,
    load_bundles,
    promote,
    read_champion,
    read_network,
    write_network,
)


def _panel(coords: bool = True) -> SensorPanel:
    values = np.arange(40, dtype=np.float32).reshape(10, 4)  # [time, node]
    stamps = pd.date_range("2024-03-04", periods=10, freq="5min", tz="UTC")
    xy = np.c_[34.0 + 0.01 * np.arange(4), -118.2 + 0.02 * np.arange(4)]
    return SensorPanel.from_values(
        values, stamps, [f"s{i}" for i in range(4)], coords=xy if coords else None, name="toy"
    )


def test_champion_is_the_best_validation_score_never_the_test_one(tmp_path):
    document = {
        "dataset": "toy",
        "horizon": 12,
        "models": {
            "ar": {"valid_rmse": [4.0], "pooled": {"12": {"rmse": 9.0}}},
            "gru": {"valid_rmse": [5.0, 3.5, None], "pooled": {"12": {"rmse": 1.0}}},
            "seasonal": {"valid_rmse": [None], "pooled": {"12": {"rmse": 0.5}}},
        },
    }
    champion = choose_champion(document)
    assert champion.champion == "gru" and champion.scores == {
        "ar": 4.0, "gru": 3.5, "seasonal": None,
    }  # fmt: skip
    assert champion.challengers == ("ar", "seasonal")
    (tmp_path / "bundles").mkdir()
    path = promote(tmp_path, champion)
    assert path == tmp_path / "bundles" / "champion.json"
    assert read_champion(tmp_path) == champion == read_champion(tmp_path / "bundles")
    assert bundles_dir(tmp_path) == tmp_path / "bundles"
    path.write_text("{not json")
    with pytest.raises(ChampionError, match="delete it or retrain"):
        read_champion(tmp_path)
    with pytest.raises(ChampionError, match="validation part"):
        choose_champion({"horizon": 3, "models": {"ar": {"valid_rmse": [None]}}})
    assert read_champion(tmp_path / "elsewhere") is None


def test_network_file_round_trip(tmp_path):
    panel = _panel()
    write_network(tmp_path, panel)
    network = read_network(tmp_path)
    assert network.sensor_ids == panel.sensor_ids and network.dataset == "toy"
    np.testing.assert_array_equal(network.coords, panel.coords)
    write_network(tmp_path, _panel(coords=False))
    assert read_network(tmp_path).coords is None
    (tmp_path / "network.json").write_text(json.dumps({"sensor_ids": ["a"], "coords": [[1]]}))
    assert read_network(tmp_path) is None  # a bad file costs the map, nothing else


def test_the_service_finds_the_bundles_of_a_train_output(tmp_path):
    from models.forecasters.baselines import Persistence

    panel = _panel()
    model = Persistence(window=2, horizon=3)
    model.fit(panel)
    model.save(tmp_path / "bundles" / "persistence")
    write_network(tmp_path / "bundles", panel)  # files next to bundles are not bundles
    assert discover_bundles(tmp_path) == [tmp_path / "bundles" / "persistence"]
    assert discover_bundles(tmp_path / "bundles") == discover_bundles(tmp_path)
    assert list(load_bundles(tmp_path)) == ["persistence"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BundleDirError, match="no model bundles"):
        load_bundles(empty)
