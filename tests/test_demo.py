"""The demo, end to end on a small panel: broker -> replay -> consumer group -> summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.demo import run_demo
from models.panel import SensorPanel


def panel(steps: int = 12, sensors: int = 5) -> SensorPanel:
    rng = np.random.default_rng(0)
    values = rng.uniform(20, 70, size=(steps, sensors)).astype(np.float32)  # [time, node]
    values[3, 1] = np.nan
    ts = pd.date_range("2024-03-04", periods=steps, freq="5min", tz="UTC")
    return SensorPanel.from_values(values, ts, [f"s{i}" for i in range(sensors)], name="tiny")


@pytest.mark.integration
def test_demo_reads_back_everything_it_replayed(tmp_path: Path) -> None:
    lines: list[str] = []
    summary = run_demo(panel(), out=tmp_path, limit=10, progress=False, log=lines.append)
    assert summary["messages_produced"] == 10 * 5 - 1
    assert summary["messages_consumed"] == summary["messages_produced"]
    assert summary["lost"] == 0 and summary["invalid"] == 0
    assert summary["sensors_seen"] == 5 and summary["steps"] == 10
    assert summary["first_ts"] == "2024-03-04T00:00:00Z"
    assert summary["last_ts"] == "2024-03-04T00:45:00Z"
    assert summary["commits"] >= 1
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert (tmp_path / "broker.log").is_file()
    assert any("replayed 49 readings" in line for line in lines)


@pytest.mark.integration
def test_demo_cli_on_a_small_simulated_network(tmp_path: Path) -> None:
    pytest.importorskip("pipeline.datasets")
    from typer.testing import CliRunner

    from flows.cli import app

    result = CliRunner().invoke(
        app,
        ["demo", "--data", "simulated:sensors=10,days=0.1", "--limit", "3", "--out", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["lost"] == 0 and summary["sensors"] == 10 and summary["steps"] == 3
