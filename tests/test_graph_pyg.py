"""torch-geometric as the graph currency: RoadGraph <-> Data, panels on a Data, and
PyTorch Geometric Temporal's static-graph temporal signal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch_geometric.data import Data

from models.graph import GraphError, PyGGraph
from models.panel import GraphLike, SensorPanel
from pipeline.data.graph import RoadGraph
from pipeline.data.simulate import simulate_network
from pipeline.data.temporal_signal import StaticSignal, from_signal, to_signal


def small_graph() -> RoadGraph:
    coords = np.array([[34.0, -118.0], [34.01, -118.0], [34.02, -118.01], [34.03, -118.0]])
    return RoadGraph.from_coordinates(
        coords, [0, 1, 2, 0], [1, 2, 3, 3], weight=[1.0, 0.5, 2.0, 0.25], both_directions=True
    )


def test_road_graph_round_trips_through_pyg_data():
    graph = small_graph()
    data = graph.to_pyg()
    assert isinstance(data, Data) and data.num_nodes == 4
    assert data.edge_index.dtype == torch.int64 and data.edge_weight.dtype == torch.float32
    np.testing.assert_array_equal(data.edge_index.numpy(), graph.edge_index)
    np.testing.assert_allclose(data.edge_km.numpy(), graph.distance_km)
    np.testing.assert_allclose(data.pos.numpy(), graph.coords)
    back = RoadGraph.from_pyg(data)
    np.testing.assert_array_equal(back.edge_index, graph.edge_index)
    np.testing.assert_array_equal(back.edge_weight, graph.edge_weight)
    for k in (1, 2, 3):
        np.testing.assert_array_equal(back.hops(k, minutes=1.0), graph.hops(k, minutes=1.0))
    with pytest.raises(GraphError, match="duplicate link"):
        RoadGraph.from_pyg(Data(edge_index=torch.tensor([[0, 0], [1, 1]]), num_nodes=2))


@pytest.mark.parametrize("lengths", ["edge_km", "pos", "none"])
def test_a_pyg_data_is_a_graph_of_the_models(lengths):
    graph = small_graph()
    data = graph.to_pyg()
    if lengths != "edge_km":
        del data.edge_km
    if lengths == "none":
        del data.pos
    wrapped = PyGGraph(data)
    assert isinstance(wrapped, GraphLike) and wrapped.to_pyg() is data
    assert wrapped.has_distances == (lengths != "none")
    reference = graph if lengths != "none" else RoadGraph.from_edges(*graph.edge_index, num_nodes=4)
    for k in (1, 3):
        np.testing.assert_array_equal(wrapped.hops(k), reference.hops(k))
        np.testing.assert_array_equal(wrapped.hops(k, minutes=0.8), reference.hops(k, minutes=0.8))
    with pytest.raises(GraphError, match="outside"):
        PyGGraph(Data(edge_index=torch.tensor([[0], [5]]), num_nodes=2))


def test_tgclstm_trains_on_a_panel_whose_graph_is_a_pyg_data():
    from models.forecasters.tgclstm import TGCLSTM
    from models.nn.training import TrainConfig

    panel = simulate_network(12, days=1, seed=2)
    data = panel.graph.to_pyg()
    bare = SensorPanel(panel.values, panel.mask, panel.timestamps, panel.sensor_ids, graph=data)
    assert isinstance(bare.graph, PyGGraph)
    train = TrainConfig(epochs=1, progress=False, device="cpu")
    small = {"hidden": 4, "graph_hidden": 2, "embed": 1, "window": 6, "horizon": 2}
    on_data = TGCLSTM(train=train, **small).fit(bare.slice(0, 200))
    on_road = TGCLSTM(train=train, **small).fit(panel.slice(0, 200))
    assert on_data.graph_info["edges_per_hop"] == on_road.graph_info["edges_per_hop"]
    assert on_data.graph_info["ffr"] == "road distances"  # edge_km travelled with the Data


def test_panel_round_trips_through_a_static_graph_temporal_signal():
    panel = simulate_network(8, days=0.5, seed=1)
    values = panel.values.copy()
    values[[3, 40], [1, 5]] = np.nan  # missing readings stay missing
    panel = SensorPanel.from_values(
        values, panel.timestamps, panel.sensor_ids, graph=panel.graph, name="sim"
    )
    signal = to_signal(panel, window=6, horizon=3)
    assert isinstance(signal, StaticSignal) and len(signal) == panel.n_time - 8
    snapshot = signal[0]  # what PyTorch Geometric Temporal's loaders yield
    assert snapshot.x.shape == (8, 2, 6) and snapshot.y.shape == (8, 3)
    assert snapshot.edge_attr.shape == (panel.graph.num_edges,)
    np.testing.assert_array_equal(snapshot.edge_index.numpy(), panel.graph.edge_index)
    assert sum(1 for _ in signal) == len(signal)
    back = from_signal(
        signal, start=panel.timestamps[0], freq=panel.freq, sensor_ids=panel.sensor_ids
    )
    np.testing.assert_array_equal(back.mask, panel.mask)
    np.testing.assert_array_equal(back.values, panel.values)
    assert back.timestamps.equals(panel.timestamps)
    np.testing.assert_array_equal(back.graph.edge_index, panel.graph.edge_index)


def test_reads_a_one_step_signal_and_refuses_broken_ones():
    rng = np.random.default_rng(0)
    series = rng.normal(size=(5, 30)).astype(np.float32)  # [node, time]
    lags = 4
    signal = StaticSignal(
        np.array([[0, 1, 2, 3], [1, 2, 3, 4]]),
        np.ones(4, dtype=np.float32),
        [series[:, s : s + lags] for s in range(30 - lags)],  # [node, lags]
        [series[:, s + lags] for s in range(30 - lags)],  # [node]: one step ahead
    )
    panel = from_signal(signal, freq="1D")
    np.testing.assert_allclose(panel.values, series.T)
    assert panel.freq == pd.Timedelta("1D") and panel.graph.num_nodes == 5
    shuffled = StaticSignal(
        signal.edge_index, signal.edge_weight, signal.features[::-1], signal.targets
    )
    with pytest.raises(ValueError, match="not the window after"):
        from_signal(shuffled)
    with pytest.raises(ValueError, match="feature snapshots"):
        StaticSignal(signal.edge_index, signal.edge_weight, signal.features, [])
    no_graph = SensorPanel.from_values(
        series.T, pd.date_range("2024-01-01", periods=30, freq="5min", tz="UTC"), list("abcde")
    )
    with pytest.raises(ValueError, match="needs the panel's road graph"):
        to_signal(no_graph)


def small_panel(graph: object) -> SensorPanel:
    values = np.random.default_rng(0).normal(50, 5, (30, 3)).astype(np.float32)
    timestamps = pd.date_range("2024-01-01", periods=30, freq="5min", tz="UTC")
    return SensorPanel.from_values(values, timestamps, ["a", "b", "c"], graph=graph)


def window_signal(series: np.ndarray, lags: int = 4, horizon: int = 1, **kw) -> StaticSignal:
    """Stride-1 windows of ``series`` [node, time]: targets [node] for horizon 1."""
    starts = range(series.shape[1] - lags - horizon + 1)
    targets = [series[:, s + lags : s + lags + horizon] for s in starts]
    return StaticSignal(
        kw.get("edge_index", np.array([[0, 1], [1, 2]])),
        kw.get("edge_weight"),
        [series[:, s : s + lags] for s in starts],
        [t[:, 0] for t in targets] if horizon == 1 else targets,
    )


def test_a_signal_without_edge_weight_gets_weights_of_one():
    data = Data(edge_index=torch.tensor([[0, 1], [1, 2]]), num_nodes=3)
    signal = to_signal(small_panel(data), window=4, horizon=3)
    np.testing.assert_array_equal(signal.edge_weight, [1.0, 1.0])
    series = small_panel(None).values.T
    back = from_signal(window_signal(series))  # edge_weight None
    np.testing.assert_array_equal(to_signal(back, window=2, horizon=1).edge_weight, [1.0, 1.0])


def test_from_signal_checks_the_targets_against_the_features():
    series = small_panel(None).values.T  # [3, 30]
    good = window_signal(series, horizon=3)
    np.testing.assert_allclose(from_signal(good).values, series.T)
    ahead = StaticSignal(
        good.edge_index, None, good.features, [series[:, s + 6] for s in range(len(good))]
    )
    with pytest.raises(ValueError, match="disagree"):
        from_signal(ahead)
    one = window_signal(series)
    for bad in (np.full(3, 1e6, np.float32), np.zeros(5, np.float32), np.zeros((3, 2))):
        targets = list(one.targets)
        targets[2] = bad
        with pytest.raises(ValueError, match=r"targets\[2\]"):
            from_signal(StaticSignal(one.edge_index, None, one.features, targets))
    gappy = series.copy()
    gappy[1, 10] = np.nan  # missing in the features; the targets may still hold it
    targets = [t.copy() for t in window_signal(gappy).targets]
    targets[6][1] = series[1, 10]
    panel = from_signal(StaticSignal(one.edge_index, None, window_signal(gappy).features, targets))
    assert np.isnan(panel.values[10, 1]) and panel.mask.sum() == series.size - 1


@pytest.mark.parametrize("huge", [np.inf, -np.inf, 1e39, 1e300])
def test_a_signal_reading_float32_cannot_hold_is_refused_not_made_missing(huge):
    """Such readings became NaN (missing) with only numpy's overflow warning to show."""
    series = small_panel(None).values.T.astype(np.float64)
    series[1, 12] = huge
    with pytest.raises(ValueError, match=r"float32 cannot hold.* of node 1 at step 12"):
        from_signal(window_signal(series))


def test_signal_nodes_and_ids_are_checked():
    series = small_panel(None).values.T
    with pytest.raises(ValueError, match="no nodes"):
        from_signal(window_signal(series[:0], edge_index=np.zeros((2, 0), np.int64)))
    with pytest.raises(ValueError, match=r"sensor id .b.nx. holds a control"):
        from_signal(window_signal(series), sensor_ids=["a", "b\nx", "c"])


@pytest.mark.parametrize(
    "edge_index", [[[0.7, 1.9], [1.2, 2.5]], [[True, False], [False, True]]], ids=["float", "bool"]
)
def test_edge_index_must_hold_integer_node_numbers(edge_index):
    tensor = torch.tensor(edge_index)
    message = "edge_index must hold integer node numbers"
    with pytest.raises(GraphError, match=message):
        small_panel(Data(edge_index=tensor, num_nodes=3))
    with pytest.raises(GraphError, match=message):
        RoadGraph.from_pyg(Data(edge_index=tensor, num_nodes=3))
    with pytest.raises(GraphError, match=message):
        RoadGraph(3, np.array(edge_index))
    with pytest.raises(GraphError, match=message):
        from_signal(window_signal(small_panel(None).values.T, edge_index=np.array(edge_index)))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"edge_index": [[0, 0], [1, 1]], "edge_weight": [1.0, 5.0]}, "duplicate link"),
        ({"edge_weight": torch.tensor([1e39], dtype=torch.float64)}, "within float32"),
        ({"pos": [[np.nan, 0.0], [0.0, 0.0], [0.0, 0.0]]}, "not .latitude, longitude"),
        ({"pos": [[500.0, 900.0], [0.0, 0.0], [0.0, 0.0]]}, "not .latitude, longitude"),
        ({"pos": [[1.0, 1.0], [0.0, 0.0]]}, r"pos must be \[node, 2\]"),
        ({"pos": [1.0, 1.0, 0.0]}, r"pos must be \[node, 2\]"),
        ({"edge_weight": [1.0, 2.0]}, "edge_weight has 2 entries for 1 links"),
        ({"edge_attr": torch.tensor([1.0, 2.0])}, "edge_attr has 2 entries for 1 links"),
        ({"edge_attr": torch.tensor([-1.0])}, r"edge_attr\[0\] = -1.0"),
        ({"edge_km": [np.inf]}, r"edge_km\[0\] = inf"),
    ],
)
def test_pyg_graphs_are_validated_like_road_graphs(fields, message):
    fields = {"edge_index": [[0], [2]], **fields}
    data = Data(
        num_nodes=3, **{k: v if torch.is_tensor(v) else torch.tensor(v) for k, v in fields.items()}
    )
    with pytest.raises(GraphError, match=message):
        PyGGraph(data)
    with pytest.raises(GraphError, match=message):
        RoadGraph.from_pyg(data)


def test_pyg_fields_may_be_numpy_arrays_or_lists():
    data = Data(edge_index=np.array([[0], [2]]), edge_weight=[2.0], num_nodes=3)
    for graph in (PyGGraph(data), RoadGraph.from_pyg(data), small_panel(data).graph):
        np.testing.assert_array_equal(graph.edge_index, [[0], [2]])
        np.testing.assert_array_equal(graph.edge_weight, [2.0])


def test_edge_attr_of_a_snapshot_carries_the_weights():
    graph = RoadGraph(3, [[0, 1], [1, 2]], [2.0, 3.0])
    snapshot = to_signal(small_panel(graph), window=4, horizon=3)[0]
    assert snapshot.edge_weight is None and snapshot.edge_attr is not None
    np.testing.assert_array_equal(RoadGraph.from_pyg(snapshot).edge_weight, [2.0, 3.0])
    np.testing.assert_array_equal(small_panel(snapshot).graph.edge_weight, [2.0, 3.0])
    features = Data(edge_index=graph.to_pyg().edge_index, edge_attr=torch.ones(2, 4), num_nodes=3)
    np.testing.assert_array_equal(PyGGraph(features).edge_weight, [1.0, 1.0])  # not weights


def test_to_signal_exports_the_validated_graph():
    data = Data(
        edge_index=torch.tensor([[0, 0, 1], [0, 1, 1]]),
        edge_weight=torch.tensor([1.0, 2.0, 3.0]),
        num_nodes=3,
    )
    signal = to_signal(small_panel(data), window=4, horizon=3)
    np.testing.assert_array_equal(signal.edge_index, [[0], [1]])
    np.testing.assert_array_equal(signal.edge_weight, [2.0])


def test_signal_options_are_checked():
    series = small_panel(None).values.T
    signal = window_signal(series)
    for freq in ("-5min", "0min", "often", 5):
        with pytest.raises(ValueError, match="freq"):
            from_signal(signal, freq=freq)
    stacked = StaticSignal(
        signal.edge_index, None, [np.stack([f, f], 1) for f in signal.features], signal.targets
    )
    for feature, bad in ((5, stacked), (-1, stacked), (1.0, stacked), (3, signal)):
        with pytest.raises(ValueError, match="feature"):
            from_signal(bad, feature=feature)
    np.testing.assert_allclose(from_signal(stacked, feature=1).values, series.T)
    with pytest.raises(ValueError, match="features"):
        from_signal(object())
    panel = small_panel(RoadGraph(3, [[0], [1]]))
    for option in ({"window": 2.5}, {"window": "4"}, {"horizon": True}, {"horizon": 0}):
        with pytest.raises(ValueError, match=next(iter(option))):
            to_signal(panel, **option)
