"""One model folder, one sensor network: bundles of different networks are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from models.forecasters.baselines import Persistence, Seasonal
from models.panel import SensorPanel
from pipeline.model_dir import BundleDirError, load_bundles, write_network


def panel(sensors: tuple[str, ...]) -> SensorPanel:
    values = np.arange(30 * len(sensors), dtype=np.float64).reshape(30, len(sensors))
    stamps = pd.date_range("2024-01-01", periods=30, freq="5min", tz="UTC")
    return SensorPanel.from_values(values, stamps, sensors, name="test")


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """A bundles folder holding a persistence bundle of a, b, c and a seasonal one of a, b, d."""
    root = tmp_path / "bundles"
    Persistence(window=3, horizon=2).fit(panel(("a", "b", "c"))).save(root / "persistence")
    Seasonal(horizon=2, period=4).fit(panel(("a", "b", "d"))).save(root / "seasonal")
    return root


def test_bundles_of_two_networks_are_refused_naming_both(mixed: Path) -> None:
    with pytest.raises(BundleDirError) as info:
        load_bundles(mixed)
    text = str(info.value)
    assert str(mixed / "persistence") in text and str(mixed / "seasonal") in text
    assert "different sensor networks" in text and "(c)" in text and "(d)" in text
    assert list(load_bundles(mixed, only=["seasonal"])) == ["seasonal"]


def test_bundles_of_another_network_than_network_json_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "bundles"
    Persistence(window=3, horizon=2).fit(panel(("a", "b"))).save(root / "persistence")
    write_network(tmp_path, panel(("a", "b")))  # the same network: fine
    assert list(load_bundles(tmp_path)) == ["persistence"]
    write_network(tmp_path, panel(("a", "x", "y")))
    with pytest.raises(BundleDirError, match=r"network\.json .*data set 'test'"):
        load_bundles(tmp_path)


def test_serve_refuses_them_before_connecting(mixed: Path) -> None:
    result = CliRunner().invoke(
        app, ["serve", "--models", str(mixed), "--bootstrap", "127.0.0.1:1"]
    )
    assert result.exit_code == 1
    assert "forecast different sensor networks" in " ".join(result.output.split())


def test_a_model_directory_that_is_a_file_is_named_as_a_file(tmp_path: Path) -> None:
    path = tmp_path / "bundles"
    path.write_text("not a folder")
    with pytest.raises(BundleDirError, match="is a file, not a folder"):
        load_bundles(path)
    with pytest.raises(BundleDirError, match="does not exist"):
        load_bundles(tmp_path / "missing")
