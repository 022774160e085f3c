"""The held-out networks of ``benchmarks.heldout_shifts``: generated the same every time,
read as ``roadcast train csv:`` reads them, and holding the properties they are made for
(shifts inside the test part, a detector installed late, noise as large as the signal)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from benchmarks.heldout_shifts import main, make_noisy, make_recalibrated, make_short
from models.forecasters.comparison import TrainPlan, check_graphs, check_readings, split_panel
from pipeline.data.datasets import load_dataset
from pipeline.data.graph import RoadGraph

PLAN = TrainPlan(models=("tgclstm",), window=12, horizon=12, seeds=1)
NETWORKS = [
    ("recalibrated", "recalibrated_edges.csv", (8064, 60), []),
    ("noisy", "noisy_adj.csv", (5040, 80), []),
    ("short", "short_links.csv", (1440, 100), ["'D-0457' 49% missing", "runs one way"]),
]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, Any]]]:
    out = tmp_path_factory.mktemp("shifts")
    facts = {
        "recalibrated": make_recalibrated(out),
        "noisy": make_noisy(out),
        "short": make_short(out),
    }
    return out, facts


def test_the_generator_writes_the_same_files_every_time(
    made: tuple[Path, dict[str, dict[str, Any]]], tmp_path: Path
) -> None:
    main(["--out", str(tmp_path)])
    first = sorted(p.name for p in made[0].iterdir())
    assert first == sorted(p.name for p in tmp_path.iterdir()) and len(first) == 6
    for name in first:
        assert (made[0] / name).read_bytes() == (tmp_path / name).read_bytes(), name


@pytest.mark.parametrize(("name", "adjacency", "shape", "noted"), NETWORKS)
def test_a_shifted_network_loads_and_splits_as_roadcast_train_reads_it(
    made: tuple[Path, dict[str, dict[str, Any]]],
    name: str,
    adjacency: str,
    shape: tuple[int, int],
    noted: list[str],
) -> None:
    folder = made[0]
    panel = load_dataset(f"csv:{folder / name}.csv", adjacency=folder / adjacency)
    assert (panel.n_time, panel.n_nodes) == shape and panel.graph is not None
    assert panel.freq is not None
    notes = " | ".join([*check_readings(panel), *check_graphs(panel, PLAN)])
    assert all(text in notes for text in noted), notes
    assert bool(notes) is bool(noted), notes
    split_panel(panel, PLAN)  # no sensor the training part cannot learn


def test_the_short_networks_links_are_read_from_its_own_header(
    made: tuple[Path, dict[str, dict[str, Any]]],
) -> None:
    """``Detector,Next detector,Spacing (m)``: 180 street segments, lengths in metres."""
    folder, facts = made
    panel = load_dataset(f"csv:{folder / 'short.csv'}", adjacency=folder / "short_links.csv")
    graph = panel.graph
    assert isinstance(graph, RoadGraph) and graph.num_edges == facts["short"]["links"] == 180
    lengths = pd.read_csv(folder / "short_links.csv")["Spacing (m)"].to_numpy() / 1000
    kept = graph.distance_km
    assert kept is not None
    np.testing.assert_allclose(np.sort(kept), np.sort(lengths), rtol=1e-6)


def test_every_change_of_the_recalibrated_network_lies_inside_the_test_part(
    made: tuple[Path, dict[str, dict[str, Any]]],
) -> None:
    folder, facts = made
    fact = facts["recalibrated"]
    panel = load_dataset(f"csv:{folder / 'recalibrated.csv'}")
    test_from = panel.n_time - split_panel(panel, PLAN).test.n_time
    assert fact["test_start"] == test_from
    data = pd.read_csv(folder / "recalibrated.csv", index_col=0)
    true = fact["true"]
    for sensor, (at, rel) in fact["level_steps"].items():
        assert test_from < at < panel.n_time - 288, sensor
        k = data.columns.get_loc(sensor)
        before = data[sensor].to_numpy()[:at] / np.clip(true[:at, k], 3, 85)
        after = data[sensor].to_numpy()[at:] / true[at:, k]
        assert abs(np.median(before) - 1) < 0.005 and abs(np.median(after) - (1 + rel)) < 0.005
        assert 0.1 <= abs(rel) <= 0.2
    sensor, at, gain = fact["gain"]
    assert test_from < at < panel.n_time - 288
    k = data.columns.get_loc(sensor)
    swing = [np.std(data[sensor].to_numpy()[part]) / np.std(true[part, k]) for part in
             (slice(0, at), slice(at, None))]  # fmt: skip
    assert abs(swing[0] - 1) < 0.02 and abs(swing[1] - gain) < 0.05
    zone, start, end = fact["work_zone"]
    assert test_from < start and end <= panel.n_time and end - start == 4 * 288
    inside = data[zone].to_numpy()[start:end]
    assert np.percentile(inside, 99) < 53 and np.median(data[zone].to_numpy()[:start]) > 60


def test_the_late_detector_is_empty_before_day_3_and_reads_after(
    made: tuple[Path, dict[str, dict[str, Any]]],
) -> None:
    folder, facts = made
    sensor, first = facts["short"]["late"]
    panel = load_dataset(f"csv:{folder / 'short.csv'}")
    split = split_panel(panel, PLAN)
    k = panel.sensor_ids.index(sensor)
    seen = panel.mask.reshape(panel.n_time, panel.n_nodes, -1)[:, k, 0]
    assert not seen[:first].any() and seen[first:].all()
    assert 2 * 288 <= first < 3 * 288 and first < split.train.n_time  # learnt from day 3
    others = np.delete(panel.mask.reshape(panel.n_time, panel.n_nodes, -1)[..., 0], k, axis=1)
    assert others.all()
    days = pd.DatetimeIndex(panel.timestamps).day_of_week
    assert panel.n_time == 5 * 288 and (days < 5).all()


def test_the_noisy_networks_noise_is_as_large_as_its_signal(
    made: tuple[Path, dict[str, dict[str, Any]]],
) -> None:
    """Signal-to-noise variance ratio near 1 per sensor, and the last reading explains
    less of the next than a smooth daily profile does."""
    folder, facts = made
    snr = facts["noisy"]["snr"]
    assert snr.min() >= 0.6 and snr.max() <= 1.5 and 0.85 <= np.median(snr) <= 1.15
    data = pd.read_csv(folder / "noisy.csv", index_col=0, parse_dates=True)
    values = data.to_numpy()
    persistence = np.sqrt(np.mean((values[1:] - values[:-1]) ** 2))
    train = len(values) * 7 // 10
    slot = data.index.hour * 6 + data.index.minute // 10
    profile = data.iloc[:train].groupby(slot[:train]).mean()
    daily = np.sqrt(np.mean((values[train:] - profile.loc[slot[train:]].to_numpy()) ** 2))
    assert daily < 0.85 * persistence, (daily, persistence)


@pytest.mark.parametrize(
    ("column", "km"),
    [("Spacing [m]", 2.5), ("distance_ft", 0.762), ("Feet", 0.762), ("gap (yd)", 2.286)],
)
def test_an_edge_lists_lengths_are_read_in_the_unit_its_own_header_names(
    tmp_path: Path, column: str, km: float
) -> None:
    from pipeline.data.graph_csv import read_adjacency_csv

    path = tmp_path / "links.csv"
    path.write_text(f"Detector,Next detector,{column}\na,b,2500\n")
    graph = read_adjacency_csv(path, ["a", "b", "c"])
    assert graph.distance_km is not None
    np.testing.assert_allclose(graph.distance_km, [km], rtol=1e-6)
    np.testing.assert_allclose(graph.edge_weight, [1.0])


@pytest.mark.parametrize(
    ("column", "km"), [("metres apart", 2.5), ("spacing", 2.5), ("Travel time (s)", None)]
)
def test_lengths_or_costs_in_the_users_words_are_not_read_as_weights(
    tmp_path: Path, column: str, km: float | None
) -> None:
    """Read as weights, the farthest links would be the strongest: a length in the user's
    words is read as a length (a unit word in the name, else metres for a median link of
    2,500), a travel time is refused naming it."""
    from pipeline.data.cells import DatasetError
    from pipeline.data.graph_csv import read_adjacency_csv

    path = tmp_path / "links.csv"
    path.write_text(f"Detector,Next detector,{column}\na,b,2500\n")
    if km is None:
        with pytest.raises(DatasetError, match=rf"(?i)column '{re.escape(column)}' looks like"):
            read_adjacency_csv(path, ["a", "b", "c"])
        return
    graph = read_adjacency_csv(path, ["a", "b", "c"])
    np.testing.assert_allclose(graph.distance_km, [km], rtol=1e-6)
    np.testing.assert_allclose(graph.edge_weight, [1.0])
