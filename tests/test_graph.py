"""RoadGraph: constructors, k-hop support, free-flow reachability, sparsity at scale."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from models.panel import GraphLike
from pipeline.data.graph import DEFAULT_FREE_FLOW_KMH, GraphError, RoadGraph, haversine_km


def chain(n: int, km: float | None = 1.0) -> RoadGraph:
    """0 <-> 1 <-> ... <-> n-1, every link ``km`` long."""
    s = np.arange(n - 1)
    dist = None if km is None else np.full(2 * (n - 1), km)
    return RoadGraph.from_edges(np.r_[s, s + 1], np.r_[s + 1, s], num_nodes=n, distance_km=dist)


def dense_support(adj: np.ndarray, k: int) -> np.ndarray:
    """Reference: clamp((A + I)^k, 1) computed densely (small graphs only)."""
    a = (adj != 0).astype(np.int64)
    np.fill_diagonal(a, 1)
    out = np.eye(len(a), dtype=np.int64)
    for _ in range(k):
        out = np.minimum(out @ a, 1)
    return out


def as_pairs(mask: np.ndarray) -> np.ndarray:
    """Dense [target, source] 0/1 matrix -> [2, E] (source, target) sorted by (target, source)."""
    target, source = np.nonzero(mask)
    return np.stack([source, target]).astype(np.int64)


def test_implements_graphlike_and_edge_convention():
    adj = np.zeros((3, 3))
    adj[2, 0] = 0.5  # A[i, j]: link j -> i, so 0 -> 2
    graph = RoadGraph.from_adjacency(adj)
    assert isinstance(graph, GraphLike)
    assert graph.num_nodes == 3
    np.testing.assert_array_equal(graph.edge_index, [[0], [2]])
    assert graph.edge_index.dtype == np.int64
    assert graph.edge_weight.dtype == np.float32
    np.testing.assert_allclose(graph.edge_weight, [0.5])
    x = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(graph.adjacency() @ x, adj @ x)


def test_adjacency_diagonal_dropped_and_sparse_input_equal():
    rng = np.random.default_rng(0)
    adj = (rng.random((6, 6)) < 0.4) * rng.random((6, 6))
    np.fill_diagonal(adj, 1.0)
    dense = RoadGraph.from_adjacency(adj)
    sparse = RoadGraph.from_adjacency(sp.csr_matrix(adj))
    assert not (dense.edge_index[0] == dense.edge_index[1]).any()
    assert dense.num_edges == int((adj != 0).sum() - 6)
    np.testing.assert_array_equal(dense.edge_index, sparse.edge_index)
    np.testing.assert_array_equal(dense.edge_weight, sparse.edge_weight)


def test_edges_sorted_by_target_then_source_and_read_only():
    graph = RoadGraph.from_edges([2, 0, 1, 2], [0, 1, 0, 1], num_nodes=3, weight=[1, 2, 3, 4])
    np.testing.assert_array_equal(graph.edge_index, [[1, 2, 0, 2], [0, 0, 1, 1]])
    np.testing.assert_allclose(graph.edge_weight, [3, 1, 2, 4])
    with pytest.raises(ValueError):
        graph.edge_index[0, 0] = 5


@settings(max_examples=40)
@given(
    n=st.integers(1, 9),
    density=st.floats(0.0, 0.6),
    k=st.integers(0, 4),
    seed=st.integers(0, 10_000),
)
def test_hops_equal_dense_clamped_power(n, density, k, seed):
    rng = np.random.default_rng(seed)
    adj = (rng.random((n, n)) < density).astype(float)
    graph = RoadGraph.from_adjacency(adj)
    np.testing.assert_array_equal(graph.hops(k), as_pairs(dense_support(adj, k)))


def test_hops_include_self_loops_and_are_cached():
    graph = chain(5)
    h1 = graph.hops(1)
    assert graph.hops(1) is h1
    pairs = set(map(tuple, h1.T))
    assert all((i, i) in pairs for i in range(5))
    assert (0, 1) in pairs and (1, 0) in pairs and (0, 2) not in pairs
    assert graph.hops(0).shape == (2, 5)


def test_directed_hops_follow_link_direction():
    graph = RoadGraph.from_edges([0, 1], [1, 2], num_nodes=3)  # 0 -> 1 -> 2
    pairs = set(map(tuple, graph.hops(2).T))
    assert (0, 2) in pairs  # 2 hears from 0 in two hops
    assert (2, 0) not in pairs


def test_free_flow_reachability_uses_road_distance():
    graph = chain(10, km=1.0)  # 1 km links
    # 3 minutes at 60 km/h = 3 km: three links each way.
    reach = graph.free_flow_reachability(3.0, 60.0)
    pairs = set(map(tuple, reach.T))
    assert (0, 3) in pairs and (0, 4) not in pairs and (5, 2) in pairs
    # k hops AND reachable: 5 hops would allow (0, 5), the 3 km budget does not.
    limited = set(map(tuple, graph.hops(5, minutes=3.0, free_flow_kmh=60.0).T))
    assert (0, 3) in limited and (0, 5) not in limited
    assert limited <= set(map(tuple, graph.hops(5).T))
    assert all((i, i) in limited for i in range(10))


def test_ffr_shortest_path_not_direct_link():
    # 0 -> 2 directly is 10 km, via 1 it is 2 km: Dijkstra must take the detour.
    graph = RoadGraph.from_edges([0, 0, 1], [2, 1, 2], num_nodes=3, distance_km=[10, 1, 1])
    pairs, km = graph.road_distances(5.0)
    lookup = {tuple(p): d for p, d in zip(pairs.T, km, strict=True)}
    assert lookup[(0, 2)] == pytest.approx(2.0)
    assert lookup[(0, 0)] == 0.0
    assert (2, 0) not in lookup  # directed


def test_distances_from_coordinates_by_haversine():
    coords = np.array([[34.0, -118.0], [34.0, -118.01], [34.0, -118.02]])
    graph = RoadGraph.from_coordinates(coords, [0, 1], [1, 2], both_directions=True)
    assert graph.has_distances
    assert graph.num_edges == 4
    np.testing.assert_allclose(graph.distance_km, 0.922, atol=1e-3)
    assert graph.is_symmetric
    # 1 minute at 60 km/h = 1 km: neighbours yes, two links (1.84 km) no.
    pairs = set(map(tuple, graph.free_flow_reachability(1.0, 60.0).T))
    assert (0, 1) in pairs and (0, 2) not in pairs


def test_haversine_known_distance():
    # Los Angeles City Hall to Santa Monica Pier, about 24 km as the crow flies.
    assert float(haversine_km(34.0537, -118.2427, 34.0094, -118.4973)) == pytest.approx(23.9, 0.02)


def test_without_distances_ffr_counts_hops():
    graph = chain(8, km=None)
    assert not graph.has_distances
    # Default link 1 km; 2.4 minutes at 100 km/h = 4 km -> four hops.
    pairs = set(map(tuple, graph.free_flow_reachability(2.4).T))
    assert (0, 4) in pairs and (0, 5) not in pairs
    assert DEFAULT_FREE_FLOW_KMH == 100.0
    wide = RoadGraph.from_edges([0, 1], [1, 2], num_nodes=3, default_link_km=10.0)
    assert (0, 1) not in set(map(tuple, wide.free_flow_reachability(2.4).T))


def test_zero_length_link_still_connects():
    graph = RoadGraph.from_edges([0], [1], num_nodes=2, distance_km=[0.0])
    assert (0, 1) in set(map(tuple, graph.free_flow_reachability(0.0).T))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_nodes": 2, "edge_index": [[0], [5]]}, "outside 0..1"),
        ({"num_nodes": 2, "edge_index": [[0, 0], [1, 1]]}, "duplicate link 0 -> 1"),
        ({"num_nodes": 2, "edge_index": [0, 1]}, r"\[2, E\]"),
        ({"num_nodes": 2, "edge_index": [[0], [1]], "edge_weight": [np.nan]}, "edge_weight"),
        ({"num_nodes": 2, "edge_index": [[0], [1]], "edge_weight": [1, 2]}, "2 entries"),
        ({"num_nodes": 2, "edge_index": [[0], [1]], "edge_weight": [1e39]}, "within float32"),
        ({"num_nodes": 2, "edge_index": [[0], [1]], "distance_km": [-1]}, "distance_km"),
        ({"num_nodes": 2, "edge_index": [[0], [1]], "coords": [[0, 0]]}, "coords"),
        ({"num_nodes": 2, "edge_index": [[0], [1]], "coords": [[0, 0], [95, 0]]}, "latitude"),
        ({"num_nodes": 2, "edge_index": [[0.5], [1]]}, "integer"),
    ],
)
def test_bad_construction_raises_graph_error(kwargs, message):
    with pytest.raises(GraphError, match=message):
        RoadGraph(**kwargs)


def test_bad_adjacency_and_hops_arguments():
    with pytest.raises(GraphError, match="square"):
        RoadGraph.from_adjacency(np.zeros((2, 3)))
    with pytest.raises(GraphError, match="NaN"):
        RoadGraph.from_adjacency(np.array([[0, np.nan], [1, 0]]))
    graph = chain(3)
    with pytest.raises(GraphError, match="k must be"):
        graph.hops(-1)
    with pytest.raises(GraphError, match="needs minutes"):
        graph.hops(1, free_flow_kmh=80.0)
    with pytest.raises(GraphError, match="free_flow_kmh"):
        graph.hops(1, minutes=5.0, free_flow_kmh=0.0)
    with pytest.raises(GraphError, match="minutes"):
        graph.hops(1, minutes=float("nan"))


def test_empty_graph():
    graph = RoadGraph(4, np.zeros((2, 0), dtype=np.int64))
    assert graph.num_edges == 0
    assert graph.hops(3, minutes=5.0).shape == (2, 4)


def test_20k_network_hops_and_ffr_stay_sparse():
    """3-hop neighbourhoods and FFR of 20,000 sensors without any N x N dense array."""
    n, side = 20_000, 200
    idx = np.arange(n).reshape(n // side, side)
    a = np.r_[idx[:, :-1].ravel(), idx[:-1, :].ravel()]
    b = np.r_[idx[:, 1:].ravel(), idx[1:, :].ravel()]
    graph = RoadGraph.from_edges(
        np.r_[a, b], np.r_[b, a], num_nodes=n, distance_km=np.full(2 * len(a), 0.8)
    )
    tracemalloc.start()
    try:
        h3 = graph.hops(3)
        h3_ffr = graph.hops(3, minutes=1.0)  # 1.67 km at 100 km/h: two links of 0.8 km
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    dense_bytes = n * n * 8
    assert peak < dense_bytes / 20, f"peak {peak / 1e6:.0f} MB looks like a dense N x N array"
    # Interior node of a grid: 25 sensors within 3 hops, 13 within 2 (the FFR budget).
    counts3 = np.bincount(h3[1], minlength=n)
    counts_ffr = np.bincount(h3_ffr[1], minlength=n)
    centre = idx[50, 100]
    assert counts3[centre] == 25
    assert counts_ffr[centre] == 13
