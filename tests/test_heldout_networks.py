"""The generated held-out networks read as ``roadcast train csv:`` reads them, with the
notes a user of such data should get."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.heldout_networks import main
from models.forecasters.comparison import TrainPlan, check_graphs, check_readings
from models.nn.inputs import weekend_inputs
from pipeline.data.datasets import load_dataset

PLAN = TrainPlan(models=("tgclstm",), window=12, horizon=12, seeds=1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    out = tmp_path_factory.mktemp("heldout")
    main(["--out", str(out), "--data", str(shared_data)])
    return out


@pytest.mark.parametrize(
    ("name", "adjacency", "shape", "noted"),
    [
        ("water", "water_edges.csv", (5760, 60), ["runs one way"]),
        ("highway", "highway_edges.csv", (7200, 150), ["repeat the same reading", "runs one way"]),
        ("air", "air_adj.csv", (5760, 40), ["miss at least 10%"]),
        ("hourly", "hourly_adj.csv", (2904, 40), []),
        ("corridor", "corridor_edges.csv", (3360, 60), ["runs one way"]),
        ("parking", "parking_edges.csv", (6048, 80), []),
    ],
)
def test_a_generated_network_loads_with_its_notes(
    folder: Path, name: str, adjacency: str, shape: tuple[int, int], noted: list[str]
) -> None:
    panel = load_dataset(f"csv:{folder / name}.csv", adjacency=folder / adjacency)
    assert (panel.n_time, panel.n_nodes) == shape and panel.graph is not None
    notes = " | ".join([*check_readings(panel), *check_graphs(panel, PLAN)])
    assert all(text in notes for text in noted), notes


@pytest.mark.parametrize(
    ("name", "reads_flag"),
    [("hourly", True), ("corridor", True), ("parking", True), ("air", False)],
)
def test_the_weekend_input_is_read_where_weekends_differ(
    folder: Path, name: str, reads_flag: bool
) -> None:
    """The networks the weekend input was found and checked on keep what it was chosen on."""
    panel = load_dataset(f"csv:{folder / name}.csv")
    training = panel.slice(0, int(0.7 * panel.n_time))
    expected = (True, 12, (5, 6)) if reads_flag else (False, 0, (5, 6))
    assert weekend_inputs(None, None, training, 12) == expected


@pytest.mark.parametrize(
    ("name", "adjacency", "shape", "noted"),
    [
        ("bikes", "bikes_edges.csv", (4032, 60), ["repeat the same reading"]),
        ("feeders", "feeders_adj.csv", (4368, 50), []),
    ],
)
def test_the_bikes_and_feeders_networks_load_with_their_notes(
    tmp_path: Path, name: str, adjacency: str, shape: tuple[int, int], noted: list[str]
) -> None:
    from benchmarks.heldout_bikes_feeders import main as make

    make(["--out", str(tmp_path)])
    panel = load_dataset(f"csv:{tmp_path / name}.csv", adjacency=tmp_path / adjacency)
    assert (panel.n_time, panel.n_nodes) == shape and panel.graph is not None
    notes = " | ".join([*check_readings(panel), *check_graphs(panel, PLAN)])
    assert all(text in notes for text in noted), notes
    assert bool(notes) is bool(noted), notes


def test_the_heldout_anomaly_categories_are_labelled_as_nab_labels_them(tmp_path: Path) -> None:
    """Every file has its windows, each window holds its label, and no label lies in the
    probation (NAB's first 15 %, at most 750 rows)."""
    import json

    import pandas as pd

    from benchmarks.heldout_anomalies import main as make

    make(["--out", str(tmp_path)])
    categories = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert categories == ["machineTemperature", "serviceLatency", "taxiDemand"]
    for category in categories:
        windows = json.loads((tmp_path / f"{category}_windows.json").read_text())
        labels = json.loads((tmp_path / f"{category}_labels.json").read_text())
        files = sorted(f"{category}/{p.name}" for p in (tmp_path / category).glob("*.csv"))
        assert sorted(windows) == files == sorted(labels)
        for name in files:
            stamps = pd.to_datetime(pd.read_csv(tmp_path / name)["timestamp"])
            probation_end = stamps.iloc[min(750, int(0.15 * len(stamps)))]
            for label in labels[name]:
                at = pd.Timestamp(label)
                assert at > probation_end, (name, label)
                assert any(pd.Timestamp(a) <= at <= pd.Timestamp(b) for a, b in windows[name])


def test_the_sparse_and_signed_networks_load_as_their_kinds(tmp_path: Path) -> None:
    """Tiny versions: counts are whole, mostly zero and never negative; net power crosses
    zero, and its offset timestamps run hourly through the change to summer time."""
    import numpy as np

    from benchmarks.heldout_sparse_signed import make_counters, make_substations

    make_counters(tmp_path, n=12, weeks=3)
    make_substations(tmp_path, n=10, weeks=4)
    counters = load_dataset(
        f"csv:{tmp_path / 'counters.csv'}", adjacency=tmp_path / "counters_knn.csv"
    )
    assert (counters.n_time, counters.n_nodes) == (3 * 7 * 96, 12)
    assert counters.graph is not None and counters.graph.edge_index.shape[1] == 3 * 12
    seen = counters.values[counters.mask]
    assert (seen >= 0).all() and (seen == np.round(seen)).all() and (seen == 0).mean() > 0.4
    assert not counters.mask.all()  # counters offline for days
    grid = load_dataset(
        f"csv:{tmp_path / 'substations.csv'}", adjacency=tmp_path / "grid_lines.csv"
    )
    assert (grid.n_time, grid.n_nodes) == (4 * 7 * 24, 10)  # 31 March: no gap, no repeat
    assert grid.freq is not None and grid.freq.total_seconds() == 3600
    net = grid.values[grid.mask]
    assert (net < 0).any() and (net > 0).any()
    notes = " | ".join([*check_readings(grid), *check_graphs(grid, PLAN)])
    assert "runs one way" in notes, notes


def test_a_counter_that_stopped_counting_is_named_and_quiet_nights_are_not(tmp_path: Path) -> None:
    """C131 reads 0 for four days; every counter reads 0 through its quiet nights."""
    from benchmarks.heldout_sparse_signed import main as make

    make(["--out", str(tmp_path)])
    counters = load_dataset(f"csv:{tmp_path / 'counters.csv'}")
    notes = [n for n in check_readings(counters) if "read 0 for" in n]
    assert len(notes) == 1 and "1 sensor(s)" in notes[0] and "'C131'" in notes[0], notes
    substations = load_dataset(f"csv:{tmp_path / 'substations.csv'}")
    assert not [n for n in check_readings(substations) if "read 0 for" in n]
