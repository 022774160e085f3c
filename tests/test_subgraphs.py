"""Training past memory: METIS parts with halos, stitched forecasts, the subgraph fit."""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from models.forecasters.tgclstm import TGCLSTM
from models.nn.devices import seeded
from models.nn.inputs import InputSpec
from models.nn.subgraphs import partition, receptive_field
from models.nn.tgclstm_net import TGCLSTMNet
from models.nn.training import TrainConfig
from pipeline.data.simulate import simulate_network

FULL = InputSpec(time_of_day=True, day_of_week=False, mask=True)


def grid_hops(side: int, k: int = 3) -> tuple[list[np.ndarray], int]:
    """K-hop patterns of a side x side grid of two-way links (as ``RoadGraph.hops``)."""
    from pipeline.data.graph import RoadGraph

    idx = np.arange(side * side).reshape(side, side)
    a = np.r_[idx[:, :-1].ravel(), idx[:-1, :].ravel()]
    b = np.r_[idx[:, 1:].ravel(), idx[1:, :].ravel()]
    graph = RoadGraph.from_edges(np.r_[a, b], np.r_[b, a], num_nodes=side * side)
    return [np.asarray(graph.hops(h)) for h in range(1, k + 1)], side * side


def test_parts_cover_every_sensor_once_and_halos_hold_the_receptive_field():
    hops, n = grid_hops(12)
    parts = partition(hops, n, 30)
    assert parts.method == "METIS"
    cores = torch.cat([p.core_ids for p in parts.parts])
    assert sorted(cores.tolist()) == list(range(n))  # every sensor is core exactly once
    field = receptive_field(hops, n)
    for part in parts.parts:
        assert torch.equal(part.nodes[part.core], part.core_ids)
        reads = field[0][torch.isin(field[1], part.core_ids)]  # sources read by the core
        assert torch.isin(reads, part.nodes).all()
    summary = parts.describe()
    assert summary["parts"] == len(parts.parts) >= 4 and 0 < summary["halo_share"] < 3


def test_metis_unavailable_warns_and_falls_back(monkeypatch):
    monkeypatch.setitem(sys.modules, "pymetis", None)  # import pymetis now fails
    hops, n = grid_hops(10)
    with pytest.warns(UserWarning, match=r"METIS is unavailable .*pip install pymetis"):
        parts = partition(hops, n, 25)
    assert parts.method.startswith("reverse Cuthill-McKee")
    cores = torch.cat([p.core_ids for p in parts.parts])
    assert sorted(cores.tolist()) == list(range(n)) and len(parts.parts) == 4


@pytest.mark.parametrize("form", ["shared", "hybrid"])
def test_whole_graph_forecast_equals_the_stitched_part_forecasts(form):
    """The halo holds every source a core sensor reads: the parts' forecasts, stitched,
    are the whole graph's (the hybrid's LSTM path is the global offset)."""
    hops, n = grid_hops(9)
    with seeded(0):
        net = TGCLSTMNet(hops, n, spec=FULL, horizon=3, window=5, form=form, hidden=6, embed=2)
    with torch.no_grad():
        net.graph.head.weight.normal_()  # a graph path that adds something
        net.skip_weight.normal_()
    net.eval()
    if net.lstm is not None:
        net.lstm.requires_grad_(False)  # frozen, as in the second stage
    x = torch.randn(4, 5, n, FULL.n_features)
    parts = partition(hops, n, 20)
    with torch.no_grad():
        whole = net(x)
        stitched = torch.empty_like(whole)
        offset = net.global_offset(x)
        for part in parts.parts:
            out = net.forward_part(x[:, :, part.nodes], part)
            stitched[..., part.core_ids] = (
                out if offset is None else out + offset[..., part.core_ids]
            )
    torch.testing.assert_close(stitched, whole, atol=1e-5, rtol=1e-5)


def test_part_gradients_equal_the_whole_graph_gradient_on_the_core():
    """A loss on one part's core gets the same weight gradients by subgraph as through
    the whole graph: what the subgraph step trains is the whole-graph model."""
    hops, n = grid_hops(8)
    with seeded(1):
        net = TGCLSTMNet(hops, n, spec=FULL, horizon=2, window=4, form="shared", embed=2)
    with torch.no_grad():
        net.graph.head.weight.normal_()
    x = torch.randn(3, 4, n, FULL.n_features)
    part = partition(hops, n, 16).parts[0]
    net.forward_part(x[:, :, part.nodes], part).pow(2).sum().backward()
    by_part = {k: p.grad.clone() for k, p in net.named_parameters()}
    net.zero_grad()
    net(x)[..., part.core_ids].pow(2).sum().backward()
    for name, param in net.named_parameters():
        torch.testing.assert_close(by_part[name], param.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_dense_forms_refuse_to_train_by_subgraph():
    hops, n = grid_hops(5)
    net = TGCLSTMNet(hops, n, spec=FULL, form="paper")
    part = partition(hops, n, 10).parts[0]
    with pytest.raises(ValueError, match="only the shared graph cell trains by subgraph"):
        net.forward_part(torch.randn(1, 12, part.n_sub, FULL.n_features), part)
    hybrid = TGCLSTMNet(hops, n, spec=FULL)
    with pytest.raises(ValueError, match="LSTM path reads every sensor"):
        hybrid.global_offset(torch.randn(1, 12, n, FULL.n_features))
    panel = simulate_network(40, days=1, seed=0)
    model = TGCLSTM(form="paper", subgraph_nodes=20, dense_max_nodes=100)
    with pytest.raises(ValueError, match="cannot train by subgraph"):
        model.fit(panel)


@pytest.mark.parametrize("form", ["shared", "hybrid"])
def test_forecaster_trains_by_subgraph_and_predicts_the_whole_graph(tmp_path, form):
    panel = simulate_network(60, days=1, seed=3)
    train, valid = panel.slice(0, 220), panel.slice(220, 288)
    config = TrainConfig(epochs=2, batch_size=32, progress=False, device="cpu")
    small = {"hidden": 8, "graph_hidden": 4, "embed": 2, "window": 6, "horizon": 3}
    model = TGCLSTM(train=config, form=form, subgraph_nodes=20, **small).fit(train, valid=valid)
    info = model.graph_info["subgraphs"]
    assert info["parts"] >= 3 and info["method"] == "METIS"
    history = model.history
    assert history.best_valid_loss is not None and np.isfinite(history.valid_loss).all()
    forecast = model.predict(valid)
    assert forecast.mean.shape == (3, 60) and np.isfinite(forecast.mean).all()
    # The same fit without parts trains the same model differently, not another model.
    whole = TGCLSTM(train=config, form=form, subgraph_nodes=0, **small).fit(train, valid=valid)
    assert "subgraphs" not in whole.graph_info
    model.save(tmp_path / "b")
    loaded = TGCLSTM.load(tmp_path / "b")
    np.testing.assert_allclose(loaded.predict(valid).mean, forecast.mean, rtol=1e-5, atol=1e-4)


def test_subgraph_validation_loss_equals_the_whole_graph_one():
    """Validation by part (used while training by subgraph) scores the same model as
    validation on the whole graph."""
    from models.nn.inputs import PanelTensors, Scaler
    from models.nn.loop import NO_AUTOCAST
    from models.nn.training import _PartSteps, _Placement

    panel = simulate_network(50, days=1, seed=4)
    hops = [np.asarray(panel.graph.hops(k)) for k in (1, 2, 3)]
    with seeded(2):
        net = TGCLSTMNet(hops, 50, spec=FULL, horizon=3, window=6, form="shared", embed=2)
    with torch.no_grad():
        net.graph.head.weight.normal_()
    net.eval()
    data = PanelTensors.build(panel, Scaler.fit(panel), FULL)
    config = replace(TrainConfig(), loss="mse")
    steps = _PartSteps(
        net, partition(hops, 50, 12), _Placement(torch.device("cpu"), True), NO_AUTOCAST,
        6, 3, FULL, config,
    )  # fmt: skip
    origins = torch.arange(10, 60)
    with torch.no_grad():
        total, count = steps.whole_batch(data, origins)
        y, m = data.targets(origins, 3)
        pred = net(data.inputs(origins, 6, FULL))
        ref = torch.where(m, (pred - y) ** 2, torch.zeros_like(y)).sum()
    assert int(count) == int(m.sum())
    torch.testing.assert_close(total, ref, rtol=1e-5, atol=1e-4)
