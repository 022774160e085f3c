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
