"""A matrix of road distances given as ``--adjacency`` (STGCN's PeMSD7 ``W_228.csv``) is
read as DCRNN's thresholded Gaussian kernel graph, with a note; weight matrices are
read as before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.forecasters.comparison import TrainPlan, check_graphs
from pipeline.data.cells import DatasetError
from pipeline.data.datasets import load_dataset
from pipeline.data.distance_kernel import distance_kernel, matrix_graph
from pipeline.data.graph import GraphError, RoadGraph
from pipeline.data.graph_csv import read_adjacency_csv

# Six sensors on a road (metres): two groups, 0-3 and 4-5, 7.5 km apart.
POSITION_M = np.array([0.0, 500.0, 1000.0, 1500.0, 9000.0, 9500.0])
METRES = np.abs(POSITION_M[:, None] - POSITION_M[None, :])
IDS = [f"s{k}" for k in range(len(POSITION_M))]
# exp(-(d / sigma)^2) >= 0.1 with sigma = std of the 36 entries (3,987 m): d <= 6,050 m.
GROUP_LINKS = {(i, j) for g in ([0, 1, 2, 3], [4, 5]) for i in g for j in g if i != j}


def write_matrix(path: Path, matrix: np.ndarray, *, header: bool = True) -> Path:
    lines = [",".join(IDS[: len(matrix)])] if header else []
    lines += [",".join(f"{v:g}" for v in row) for row in matrix]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_readings(path: Path, steps: int) -> Path:
    """A wide CSV of ``steps`` 5-minute readings of the sensors ``IDS``."""
    stamps = pd.date_range("2024-03-01", periods=steps, freq="5min", tz="UTC")
    values = 50 + np.random.default_rng(0).normal(0, 1, (steps, len(IDS)))
    frame = pd.DataFrame(values, columns=IDS)
    frame.insert(0, "time", stamps)
    frame.to_csv(path, index=False)
    return path


def links(graph: RoadGraph) -> set[tuple[int, int]]:
    src, dst = np.asarray(graph.edge_index)
    return set(zip(src.tolist(), dst.tolist(), strict=True))


def by_link(graph: RoadGraph, values: np.ndarray) -> dict[tuple[int, int], float]:
    src, dst = np.asarray(graph.edge_index)
    return {(s, d): float(v) for s, d, v in zip(src, dst, np.asarray(values), strict=True)}


@pytest.mark.parametrize(
    ("scale", "unit", "header"),
    [(1.0, "metres", True), (1e-3, "kilometres", True), (1.0, "metres", False)],
)
def test_a_distance_matrix_becomes_the_kernel_graph(tmp_path, scale, unit, header):
    path = write_matrix(tmp_path / "W.csv", METRES * scale, header=header)
    graph = read_adjacency_csv(path, IDS)
    assert links(graph) == GROUP_LINKS
    sigma = METRES.std()
    weight = by_link(graph, graph.edge_weight)
    assert weight[(0, 1)] == pytest.approx(np.exp(-((500 / sigma) ** 2)), rel=1e-6)
    assert weight[(0, 3)] == pytest.approx(np.exp(-((1500 / sigma) ** 2)), rel=1e-6)
    km = by_link(graph, graph.distance_km)
    assert km[(0, 3)] == pytest.approx(1.5) and km[(5, 4)] == pytest.approx(0.5)
    (note,) = graph.notes
    assert note.startswith("note: W.csv: a 6 x 6 matrix with a zero diagonal")
    assert f"road distances in {unit}" in note and "14 of the 30 pairs are linked" in note
    assert "an edge list src,dst,weight" in note


def test_the_unit_is_read_from_the_distances_between_neighbours(tmp_path):
    """Two towns 50 km apart, sensors 1 km apart in each: most pairs are 50 km, which the
    edge-list rule would take for metres; each sensor's nearest neighbour is 1 km."""
    position_km = np.array([0.0, 1.0, 2.0, 50.0, 51.0, 52.0])
    matrix = np.abs(position_km[:, None] - position_km[None, :])
    graph = read_adjacency_csv(write_matrix(tmp_path / "W.csv", matrix), IDS)
    assert "road distances in kilometres" in graph.notes[0]
    km = by_link(graph, graph.distance_km)
    assert km[(0, 2)] == pytest.approx(2.0) and (0, 3) not in km


def test_a_distance_matrix_is_read_directed_as_written(tmp_path):
    """``A[i, j]`` is the road from i to j: a long way back drops only that direction."""
    one_way = METRES.copy()
    one_way[1, 0] = 9500.0
    graph = read_adjacency_csv(write_matrix(tmp_path / "W.csv", one_way), IDS)
    assert (0, 1) in links(graph) and (1, 0) not in links(graph)


def test_sensors_at_the_same_place_are_the_strongest_link(tmp_path):
    """An off-diagonal 0 in a distance matrix is a distance (both directions of a freeway
    at one post mile): w = exp(0) = 1, as in gen_adj_mx and STGCN's weight_matrix."""
    same = np.array([0.0, 0.0, 800.0, 1500.0, 2000.0, 9000.0])
    matrix = np.abs(same[:, None] - same[None, :])
    graph = read_adjacency_csv(write_matrix(tmp_path / "W.csv", matrix), IDS)
    assert by_link(graph, graph.edge_weight)[(0, 1)] == 1.0
    assert by_link(graph, graph.distance_km)[(1, 0)] == 0.0
    assert "all but 2 other entries above 0" in graph.notes[0]


def _kernel_weights() -> np.ndarray:
    """DCRNN's adj_mx for METRES: the kernel with its diagonal of 1s."""
    weights = np.exp(-np.square(METRES / METRES.std()))
    return np.where(weights < 0.1, 0.0, weights)


def _ring() -> np.ndarray:
    ring = np.zeros((6, 6))
    for k in range(6):
        ring[k, (k + 1) % 6] = ring[(k + 1) % 6, k] = 1.0
    return ring


RNG = np.random.default_rng(3)
NOT_DISTANCES = {
    "0/1 links": _ring(),
    "dense weights in [0, 1]": RNG.uniform(0.05, 1.0, (6, 6)) * (1 - np.eye(6)),
    "correlations, diagonal 1": np.corrcoef(RNG.normal(size=(6, 40))).clip(0, None),
    "DCRNN kernel weights": _kernel_weights(),
    "dense counts, no zero diagonal": RNG.integers(2, 60, (6, 6)).astype(float),
    "road lanes: weights above 1, mostly 0": _ring() * 3,
}


@pytest.mark.parametrize("name", list(NOT_DISTANCES))
def test_weight_matrices_are_read_as_weights(tmp_path, name):
    matrix = NOT_DISTANCES[name]
    graph = read_adjacency_csv(write_matrix(tmp_path / "A.csv", matrix), IDS)
    assert distance_kernel(matrix, "A.csv") is None
    expected = RoadGraph.from_adjacency(matrix.T)
    assert links(graph) == links(expected) and graph.notes == ()
    weights = by_link(expected, expected.edge_weight)
    assert by_link(graph, graph.edge_weight) == pytest.approx(weights, rel=1e-5)


def test_two_sensors_are_read_as_weights(tmp_path):
    """One distance both ways is 2 sigma: the kernel would always drop it."""
    path = write_matrix(tmp_path / "A.csv", np.array([[0.0, 5.0], [5.0, 0.0]]))
    graph = read_adjacency_csv(path, IDS[:2])
    assert links(graph) == {(0, 1), (1, 0)} and graph.notes == ()


def test_a_distance_matrix_the_kernel_leaves_without_links_is_refused(tmp_path):
    """Five sensors all 1 km apart: d / sigma = 2.5 for every pair, so w < 0.1."""
    matrix = 1000.0 * (1 - np.eye(5))
    path = write_matrix(tmp_path / "W.csv", matrix)
    with pytest.raises(DatasetError, match=r"W\.csv: read as road distances, .* no link is left"):
        read_adjacency_csv(path, IDS[:5])


def test_a_numpy_matrix_gives_the_same_graph_as_the_csv(tmp_path):
    """matrix_graph is what a ``.npy`` adjacency can be read with."""
    from_csv = read_adjacency_csv(write_matrix(tmp_path / "W.csv", METRES), IDS)
    from_npy = matrix_graph(METRES, "W.csv")
    assert links(from_npy) == links(from_csv) and from_npy.notes == from_csv.notes
    np.testing.assert_allclose(from_npy.distance_km, from_csv.distance_km)
    plain = matrix_graph(_ring(), "A.npy")
    assert links(plain) == links(RoadGraph.from_adjacency(_ring())) and plain.notes == ()


def test_data_info_and_training_say_the_matrix_was_read_as_distances(tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    write_readings(tmp_path / "V.csv", 300)
    write_matrix(tmp_path / "W.csv", METRES, header=False)
    said = "is read as road distances in metres"
    result = CliRunner().invoke(
        app, ["data", "info", f"csv:{tmp_path / 'V.csv'}", "--adjacency", str(tmp_path / "W.csv")]
    )
    assert result.exit_code == 0, result.output
    assert said in " ".join(result.output.split())
    panel = load_dataset(f"csv:{tmp_path / 'V.csv'}", adjacency=tmp_path / "W.csv")
    notes = check_graphs(panel, TrainPlan(models=("tgclstm",), seeds=1))
    assert any(said in note for note in notes)
    assert not any("every pair" in note for note in notes)


def test_a_numpy_adjacency_of_distances_is_read_as_the_csv_is(tmp_path):
    """``--adjacency W.npy`` (the data's column order) goes through the same rule."""
    write_readings(tmp_path / "V.csv", 50)
    np.save(tmp_path / "W.npy", METRES)
    graph = load_dataset(f"csv:{tmp_path / 'V.csv'}", adjacency=tmp_path / "W.npy").graph
    assert graph is not None and links(graph) == GROUP_LINKS
    (note,) = graph.notes
    assert note.startswith("note: W.npy: a 6 x 6 matrix with a zero diagonal")


# ------------------------------------------------- the user says what a matrix holds


def test_an_od_count_matrix_read_as_distances_is_read_as_weights_when_told(tmp_path):
    counts = np.random.default_rng(1).integers(5, 200, (6, 6)).astype(float)
    np.fill_diagonal(counts, 0)  # trips within a station not counted
    path = write_matrix(tmp_path / "od.csv", counts)
    data = write_readings(tmp_path / "v.csv", 40)
    guessed = load_dataset(f"csv:{data}", adjacency=path).graph
    assert guessed is not None and "add ,kind=weights to the --adjacency path" in guessed.notes[0]
    told = load_dataset(f"csv:{data}", adjacency=Path(f"{path},kind=weights")).graph
    assert told is not None and told.notes == () and told.num_edges == 30
    assert by_link(told, told.edge_weight)[(0, 1)] == counts[0, 1]


def test_a_sparse_distance_matrix_is_read_as_roads_when_told(tmp_path):
    roads = np.zeros((6, 6))
    for i in range(5):  # a chain of roads, 0 elsewhere: no road
        roads[i, i + 1] = roads[i + 1, i] = 400.0 + 100 * i
    path = write_matrix(tmp_path / "W.csv", roads)
    assert links(read_adjacency_csv(path, IDS)) == {tuple(e) for e in np.argwhere(roads > 0)}
    graph = read_adjacency_csv(path, IDS, kind="distances")
    assert links(graph) == {tuple(e) for e in np.argwhere(roads > 0)}  # no road stays none
    assert set(by_link(graph, graph.edge_weight).values()) == {1.0}  # as src,dst,cost reads
    assert by_link(graph, graph.distance_km)[(0, 1)] == pytest.approx(0.4)
    assert "road lengths in metres (kind=distances; median 600)" in graph.notes[0]
    with pytest.raises(DatasetError, match="no entry above 0 off its diagonal: no road"):
        read_adjacency_csv(
            write_matrix(tmp_path / "Z.csv", np.zeros((6, 6))), IDS, kind="distances"
        )


def test_a_dense_matrix_told_to_be_distances_is_the_kernel_graph_as_guessed(tmp_path):
    path = write_matrix(tmp_path / "W.csv", METRES)
    told, guessed = read_adjacency_csv(path, IDS, kind="distances"), read_adjacency_csv(path, IDS)
    assert links(told) == links(guessed) == GROUP_LINKS
    np.testing.assert_allclose(told.edge_weight, guessed.edge_weight)


@pytest.mark.parametrize(
    ("suffix", "message"),
    [
        (",kind=lengths", "kind='lengths'; use kind=weights or kind=distances"),
        (",colour=red", "unknown option 'colour'; known: kind"),
        (",kind=distances,kind=weights", "option 'kind' given twice"),
    ],
)
def test_a_bad_adjacency_option_is_one_line(tmp_path, suffix, message):
    path = write_matrix(tmp_path / "W.csv", METRES)
    data = write_readings(tmp_path / "v.csv", 40)
    with pytest.raises(DatasetError, match=message):
        load_dataset(f"csv:{data}", adjacency=Path(f"{path}{suffix}"))


def test_kind_is_refused_for_an_edge_list_and_negative_distances(tmp_path):
    edges = tmp_path / "edges.csv"
    edges.write_text("src,dst,weight\ns0,s1,1\ns1,s0,1\n")
    with pytest.raises(DatasetError, match="kind=distances is for a square matrix; an edge list"):
        read_adjacency_csv(edges, IDS, kind="distances")
    signed = METRES.copy()
    signed[0, 1] = -5.0
    with pytest.raises(GraphError, match="kind=distances: every entry must be a finite distance"):
        matrix_graph(signed, "W", kind="distances")


def test_a_sparse_npz_of_distances_and_a_path_with_a_comma(tmp_path):
    import scipy.sparse

    data = write_readings(tmp_path / "v.csv", 40)
    roads = np.zeros((6, 6))
    roads[0, 1] = roads[1, 0] = 500.0
    roads[4, 5] = roads[5, 4] = 700.0
    scipy.sparse.save_npz(tmp_path / "roads.npz", scipy.sparse.csr_matrix(roads))
    told = Path(f"{tmp_path / 'roads.npz'},kind=distances")
    graph = load_dataset(f"csv:{data}", adjacency=told).graph
    assert graph is not None and links(graph) == {(0, 1), (1, 0), (4, 5), (5, 4)}
    assert "the 6 x 6 sparse matrix is read as road lengths" in graph.notes[0]
    assert by_link(graph, graph.distance_km)[(4, 5)] == pytest.approx(0.7)
    scipy.sparse.save_npz(tmp_path / "dense.npz", scipy.sparse.csr_matrix(METRES))
    dense = load_dataset(f"csv:{data}", adjacency=tmp_path / "dense.npz").graph
    assert dense is not None and links(dense) == GROUP_LINKS  # stored sparse, read by the rules
    odd = write_matrix(tmp_path / "a,kind=b.csv", METRES)  # a file that exists keeps its commas
    assert links(load_dataset(f"csv:{data}", adjacency=odd).graph) == GROUP_LINKS
