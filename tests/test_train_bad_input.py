"""``roadcast train`` on bad input: a clear one-line message naming the sensor or setting,
no traceback, nothing written half-way."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.train_models import train_models
from models.forecasters.comparison import TrainPlan, check_graphs, check_readings
from models.panel import SensorPanel
from pipeline.data.graph import RoadGraph

PLAN = TrainPlan(models=("persistence", "ar"), window=6, horizon=3, seeds=1, progress=False)


def panel(values: np.ndarray, graph: RoadGraph | None = None) -> SensorPanel:
    stamps = pd.date_range("2024-03-01", periods=len(values), freq="5min", tz="UTC")
    ids = [f"s{i}" for i in range(values.shape[1])]
    return SensorPanel.from_values(values.astype(np.float32), stamps, ids, graph=graph)


def readings(n: int = 300, nodes: int = 4) -> np.ndarray:
    rng = np.random.default_rng(0)
    return 50 + np.sin(np.arange(n) / 20)[:, None] * 5 + rng.normal(0, 1, (n, nodes))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda v: v.__setitem__((slice(None), 2), np.nan), r"no reading .*\['s2'\]"),
        (lambda v: v.__setitem__((slice(None), 1), 7.0), r"one constant value .*\['s1'\]"),
        (lambda v: v.__setitem__((slice(0, 240), 3), np.nan), r"no reading in the training"),
    ],
)
def test_sensors_no_model_can_learn_are_named(tmp_path: Path, change, message):
    values = readings()
    change(values)
    with pytest.raises(ValueError, match=message):
        train_models(panel(values), PLAN, tmp_path / "out", log=lambda _: None)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("rows", "message"), [(1, "too few to split"), (20, "no test window")])
def test_data_too_short_say_so_not_that_sensors_are_stuck(tmp_path: Path, rows, message):
    """One row (or a few repeating rows) said every sensor was "stuck or dead: drop it"."""
    values = readings(rows)
    values[:] = values[0]
    with pytest.raises(ValueError, match=message):
        train_models(panel(values), PLAN, tmp_path / "out", log=lambda _: None)
    assert not (tmp_path / "out").exists()


def test_a_sensor_without_a_link_is_named_for_graph_models(tmp_path: Path):
    graph = RoadGraph.from_edges([0, 1, 1, 2], [1, 0, 2, 1], num_nodes=4)  # s3 has no link
    plan = TrainPlan(models=("persistence", "tgclstm"), window=6, horizon=3, seeds=1, epochs=1)
    lines: list[str] = []
    document = train_models(panel(readings(), graph), plan, tmp_path / "out", log=lines.append)
    assert any("no link in the graph" in line and "['s3']" in line for line in lines)
    assert "tgclstm" in document["models"]  # a note, not a refusal: los-loop has such a sensor
    bare = TrainPlan(models=("tgclstm",), window=6, horizon=3, seeds=1, epochs=1)
    with pytest.raises(ValueError, match="needs a road graph"):
        train_models(panel(readings()), bare, tmp_path / "none", log=lambda _: None)
    assert not (tmp_path / "none").exists()


def test_a_reading_far_beyond_the_rest_is_noted_naming_the_sensor():
    values = readings()
    assert check_readings(panel(values)) == []
    values[100, 2] = 1e30
    (note,) = check_readings(panel(values))
    assert note.startswith("note: sensor 's2' has 1 reading(s) over 1000 times") and "1e+30" in note
    assert "2024-03-01 08:20:00" in note


def test_zeros_among_fractional_readings_are_noted_as_possible_missing_readings():
    """METR-LA-style data (0 = no reading) trained and scored on the zeros, silently."""
    values = readings()
    values[::25, 1] = 0.0  # 4 % of s1's readings
    (note,) = check_readings(panel(values))
    assert note.startswith("note: 1 sensor(s) ('s1') read exactly 0 in 4.0% of their readings")
    assert "METR-LA" in note
    counts = np.round(np.abs(readings()))
    counts[::25, :] = 0.0  # whole numbers: a count of 0 is a reading
    assert check_readings(panel(counts)) == []


def test_data_info_gives_the_notes_training_would(tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    values = readings()
    values[::25, 1] = 0.0
    frame = pd.DataFrame(values, columns=[f"s{i}" for i in range(values.shape[1])])
    frame.insert(0, "time", pd.date_range("2024-03-01", periods=len(frame), freq="5min", tz="UTC"))
    frame.to_csv(tmp_path / "zeros.csv", index=False)
    result = CliRunner().invoke(app, ["data", "info", f"csv:{tmp_path / 'zeros.csv'}"])
    assert result.exit_code == 0, result.output
    assert "note: 1 sensor(s) ('s1') read exactly 0" in " ".join(result.output.split())


def test_a_validation_part_of_few_windows_is_noted():
    from models.forecasters.comparison import split_panel, validation_notes

    plan = TrainPlan(models=("ar",), window=6, horizon=12, valid=0.1, test=0.4, seeds=1)
    split = split_panel(panel(readings(200)), plan)  # validation part: 12 steps
    (note,) = validation_notes(split, plan)
    assert note.startswith("note: the validation part has 12 steps, 1 window(s) of --horizon 12")
    assert validation_notes(split_panel(panel(readings(2000)), plan), plan) == []
    values = readings(2000)
    values[1200:, 1] = np.nan  # s1 is silent through the test part (the last 40 %)
    (silent,) = validation_notes(split_panel(panel(values), plan), plan)
    assert silent.startswith("note: 1 sensor(s) have no reading in the test part, e.g. ['s1']")


def test_a_graph_in_separate_parts_is_noted():
    plan = TrainPlan(models=("tgclstm",), window=6, horizon=3, seeds=1)
    split = RoadGraph.from_edges([0, 1, 2, 3, 3, 4], [1, 0, 3, 2, 4, 3], num_nodes=5)
    notes = check_graphs(panel(readings(nodes=5), split), plan)
    assert notes == [
        "note: the graph falls into 2 separate parts (3, 2 sensors): graph models pass "
        "nothing between them (is a link missing from the adjacency?)"
    ]
    both_ways = RoadGraph.from_edges(
        [0, 1, 2, 3, 1, 2, 3, 4], [1, 2, 3, 4, 0, 1, 2, 3], num_nodes=5
    )
    assert check_graphs(panel(readings(nodes=5), both_ways), plan) == []


def test_a_graph_whose_links_all_run_one_way_is_noted():
    """A pipe or road table listing each link once was read as one-way links silently."""
    plan = TrainPlan(models=("tgclstm",), window=6, horizon=3, seeds=1)
    chain = RoadGraph.from_edges([0, 1, 2, 3], [1, 2, 3, 4], num_nodes=5)
    (note,) = check_graphs(panel(readings(nodes=5), chain), plan)
    assert note.startswith("note: each of the graph's 4 links runs one way") and "both" in note
    mixed = RoadGraph.from_edges([0, 1, 2, 3, 1], [1, 2, 3, 4, 0], num_nodes=5)
    assert check_graphs(panel(readings(nodes=5), mixed), plan) == []


def test_a_graph_linking_every_pair_is_noted_as_a_likely_distance_matrix():
    plan = TrainPlan(models=("tgclstm",), window=6, horizon=3, seeds=1)
    src, dst = np.nonzero(1 - np.eye(4))
    (note,) = check_graphs(
        panel(readings(nodes=4), RoadGraph.from_edges(src, dst, num_nodes=4)), plan
    )
    assert note.startswith("note: every pair of the 4 sensors is linked") and "distances" in note
    ring = RoadGraph.from_edges([0, 1, 2, 3, 1, 2, 3, 0], [1, 2, 3, 0, 0, 1, 2, 3], num_nodes=4)
    assert check_graphs(panel(readings(nodes=4), ring), plan) == []


def test_sensors_missing_many_readings_are_named_with_their_share():
    values = readings(300, 4)
    values[::4, 2] = np.nan  # 25 %
    values[:20, 1] = np.nan  # 7 %: below the trigger
    (note,) = check_readings(panel(values))
    assert note.startswith("note: 1 sensor(s) miss at least 10% of their readings ('s2' 25%")


def test_a_reading_repeated_for_hours_is_noted_as_a_possibly_frozen_sensor():
    values = readings(300, 4)
    values[100:140, 3] = values[99, 3]  # 41 readings of 5 minutes: over 3 hours
    values[200:230, 0] = values[199, 0]  # 31: not enough
    values[:, 1] = np.round(values[:, 1])
    values[10:60, 1] = 0.0  # a run of zeros (whole numbers: no zeros note) is a quiet reading
    (note,) = check_readings(panel(values))
    assert note.startswith("note: 1 sensor(s) repeat the same reading for 36 steps or more")
    assert "'s3' 41 steps" in note


@pytest.mark.integration
def test_cli_names_the_sensor_and_writes_nothing(tmp_path: Path):
    """``roadcast train`` as a user runs it (a process of its own, Prefect's temporary
    server): one line naming the sensor, exit 1, no traceback, nothing written."""
    import os
    import subprocess
    import sys

    values = readings(200, 3)
    values[:, 1] = 5.0
    csv = tmp_path / "flow.csv"
    frame = pd.DataFrame(values, columns=["a", "b", "c"])
    frame.insert(0, "step", np.arange(len(frame)))  # a row counter: recognised as the index
    frame.to_csv(csv, index=False)
    out = tmp_path / "run"
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "flows.cli", "train", f"csv:{csv}", "--models", "persistence",
         "--out", str(out), "--no-progress"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    output = run.stdout + run.stderr
    assert run.returncode == 1, output[-3000:]
    assert "['b']" in output and "Traceback" not in output
    assert not (out / "metrics.json").exists() and not (out / "bundles").exists()


def test_unsupported_names_why_a_model_cannot_run_on_the_data():
    from models.forecasters.comparison import unsupported
    from models.panel import chronological_split

    values = readings(400).astype(np.float32)
    stamps = pd.date_range("2024-03-01", periods=400, freq="7min", tz="UTC")
    odd = SensorPanel.from_values(values, stamps, [f"s{i}" for i in range(4)])
    split = chronological_split(odd)
    assert "a day is not a whole number of" in str(unsupported("seasonal", split, PLAN))
    assert unsupported("ar", split, PLAN) is None
    assert "needs a road graph" in str(unsupported("tgclstm", split, PLAN))
    tiny = chronological_split(panel(readings(10)))
    assert "6 inputs and 3 targets need 9 steps" in str(unsupported("lstm", tiny, PLAN))


def test_a_horizon_beyond_the_reported_ones_is_reported_too(tmp_path: Path):
    plan = TrainPlan(models=("persistence",), window=6, horizon=15, seeds=1, progress=False)
    document = train_models(panel(readings(600)), plan, tmp_path / "out", log=lambda _: None)
    assert list(document["models"]["persistence"]["pooled"]) == ["3", "6", "9", "12", "15"]


def test_a_sensor_whose_readings_span_beyond_float32_errors_is_refused_naming_it(tmp_path: Path):
    """Readings within float32 (+-3.3e38) whose differences are not: forecast errors
    overflowed to inf and the message blamed the model."""
    values = readings(200, 3)
    values[:, 1] = np.where(np.arange(200) % 2, 3.3e38, -3.3e38)
    with pytest.raises(ValueError, match=r"sensor 's1': readings span 6.6e\+38"):
        train_models(panel(values), PLAN, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_data_info_and_training_say_what_unit_a_unitless_length_column_was_read_in(tmp_path):
    """DCRNN's ``from,to,cost`` (metres, no unit in the name) is read, and both ``roadcast
    data info`` and the graph check of training say it was taken as metres."""
    from typer.testing import CliRunner

    from flows.cli import app
    from models.forecasters.comparison import check_graphs
    from pipeline.data.datasets import load_dataset

    values = readings()
    ids = [f"s{i}" for i in range(values.shape[1])]
    frame = pd.DataFrame(values, columns=ids)
    frame.insert(0, "time", pd.date_range("2024-03-01", periods=len(frame), freq="5min", tz="UTC"))
    frame.to_csv(tmp_path / "d.csv", index=False)
    links = "".join(f"{a},{b},1500\n{b},{a},1500\n" for a, b in itertools.pairwise(ids))
    (tmp_path / "cost.csv").write_text("from,to,cost\n" + links)
    said = "column 'cost' has no unit; its links (median 1500) are read as metres"
    result = CliRunner().invoke(
        app,
        ["data", "info", f"csv:{tmp_path / 'd.csv'}", "--adjacency", str(tmp_path / "cost.csv")],
    )
    assert result.exit_code == 0, result.output
    assert said in " ".join(result.output.split())
    panel = load_dataset(f"csv:{tmp_path / 'd.csv'}", adjacency=tmp_path / "cost.csv")
    np.testing.assert_allclose(panel.graph.distance_km, 1.5)
    plan = TrainPlan(models=("tgclstm",), seeds=1)
    assert any(said in note for note in check_graphs(panel, plan))
