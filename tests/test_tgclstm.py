"""TGC-LSTM: the sparse layer against its dense definition, the network, the forecaster."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from models.forecasters.tgclstm import TGCLSTM, TGCLSTMConfig, TGCLSTMNet
from models.nn.devices import seeded
from models.nn.inputs import InputSpec
from models.nn.rnn_net import NetworkRNN
from models.nn.sparse_graph import NeighbourScale, SparseHopConv
from models.nn.tgclstm_net import time_locked_dropout
from models.nn.training import TrainConfig
from models.panel import SensorPanel
from pipeline.data.graph import RoadGraph


def random_hops(n: int, k: int, density: float, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """K random nested patterns with self loops, as pair lists and as a dense mask [K, N, N]
    (mask[k, i, j] = 1 when j feeds i at hop k+1), the way clamp(Ã^k) ⊙ FFR looks."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((k, n, n), dtype=bool)
    current = np.eye(n, dtype=bool)
    for h in range(k):
        current = current | (rng.random((n, n)) < density)
        masks[h] = current
    hops = []
    for h in range(k):
        target, source = np.nonzero(masks[h])
        order = rng.permutation(len(source))  # the layer must not rely on the input order
        hops.append(np.stack([source[order], target[order]]))
    return hops, masks


def dense_reference(weights: torch.Tensor, masks: np.ndarray, x: torch.Tensor) -> torch.Tensor:
    """``GC^k = (W^k ⊙ Ã^k ⊙ FFR) x`` for every hop with dense [K, N, N] weights, the
    paper's definition: ``x`` [..., node, f] -> [..., node, K * f] (hop-major)."""
    masked = weights * torch.from_numpy(masks).to(weights.dtype)  # [K, N, N]
    out = torch.einsum("kij,...jf->...ikf", masked, x)  # [..., node, K, f]
    return out.reshape(*x.shape[:-1], -1)


def sparse_to_dense(conv: SparseHopConv) -> torch.Tensor:
    """The layer's per-edge weights scattered into [K, N, N] (differentiably)."""
    n, k = conv.num_nodes, conv.num_hops
    dense = torch.zeros(k, n, n, dtype=conv.weight.dtype)
    return dense.index_put((conv.hop_of_edge() - 1, conv.targets(), conv.col), conv.weight)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sparse_layer_equals_dense_reference_values_and_gradients(seed):
    n, k = 23, 3
    hops, masks = random_hops(n, k, density=0.12, seed=seed)
    conv = SparseHopConv(hops, n)
    assert conv.num_edges == int(masks.sum())  # one weight per reachable pair and hop
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.num_edges, generator=gen))
    x = torch.randn(4, 5, n, 2, generator=gen, requires_grad=True)  # [batch, time, node, f]
    upstream = torch.randn(4, 5, n, k * 2, generator=gen)

    out = conv(x)
    (out * upstream).sum().backward()
    grad_x, grad_w = x.grad.clone(), conv.weight.grad.clone()

    x.grad = None
    dense_w = torch.randn(k, n, n, generator=gen)
    with torch.no_grad():  # the dense weights equal the sparse ones on the pattern
        dense_w[torch.from_numpy(masks)] = 0.0
        dense_w += sparse_to_dense(conv).detach()
    dense_w.requires_grad_(True)
    ref = dense_reference(dense_w, masks, x)
    (ref * upstream).sum().backward()

    assert out.shape == (4, 5, n, k * 2)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # no weight gradient: PyG's spmm instead of the CSR kernel
        torch.testing.assert_close(conv(x), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad_x, x.grad, atol=1e-5, rtol=1e-5)
    # The dense gradient on the reachable pairs is the sparse gradient; off them it is 0.
    hop, tgt, src = conv.hop_of_edge() - 1, conv.targets(), conv.col
    torch.testing.assert_close(grad_w, dense_w.grad[hop, tgt, src], atol=1e-5, rtol=1e-5)
    assert float(dense_w.grad[torch.from_numpy(~masks)].abs().max()) == 0.0


def test_neighbour_scale_equals_dense_product():
    n = 17
    hops, masks = random_hops(n, 3, density=0.1, seed=4)
    scale = NeighbourScale(hops[-1], n)
    with torch.no_grad():
        scale.weight.copy_(torch.randn(n))
    out = scale()
    ref = torch.from_numpy(masks[-1]).float() @ scale.weight
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    (out * torch.arange(n)).sum().backward()
    torch.testing.assert_close(
        scale.weight.grad, torch.from_numpy(masks[-1]).float().T @ torch.arange(n).float()
    )


def test_layer_starts_as_neighbourhood_mean():
    hops, masks = random_hops(9, 2, density=0.3, seed=5)
    conv = SparseHopConv(hops, 9)
    x = torch.randn(3, 9, 1)
    out = conv(x)  # [3, 9, 2]
    for h in range(2):
        expected = (torch.from_numpy(masks[h]).float() @ x[..., 0].T).T
        expected = expected / torch.from_numpy(masks[h].sum(1)).float()
        torch.testing.assert_close(out[..., h], expected.float(), atol=1e-5, rtol=1e-5)


def test_hops_round_trip_through_the_saved_state():
    hops, masks = random_hops(11, 3, density=0.2, seed=6)
    net = TGCLSTMNet(hops, 11, spec=SPEC, horizon=3, hidden=4, embed=2)
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    back = TGCLSTMNet.hops_from_state(state)
    assert len(back) == 3
    for h, pairs in enumerate(back):
        rebuilt = np.zeros((11, 11), dtype=bool)
        rebuilt[pairs[1], pairs[0]] = True
        assert np.array_equal(rebuilt, masks[h])


SPEC = InputSpec(time_of_day=False, day_of_week=False, mask=True)  # value, mask
FULL = InputSpec(time_of_day=True, day_of_week=False, mask=True)  # value, tod x2, mask


@pytest.mark.parametrize("form", ["hybrid", "paper", "shared"])
@pytest.mark.parametrize("skip", ["linear", "last"])
def test_network_shapes_and_persistence_start(form, skip):
    n, horizon = 8, 4
    hops, _ = random_hops(n, 3, density=0.2, seed=7)
    net = TGCLSTMNet(
        hops, n, spec=FULL, horizon=horizon, hidden=5, graph_hidden=3, embed=2, form=form,
        skip=skip, window=6,
    )  # fmt: skip
    if net.lstm is not None:
        with torch.no_grad():
            net.lstm.head.weight.zero_()  # the LSTM path's head is random: silence it here
            net.lstm.head.bias.zero_()
    x = torch.randn(2, 6, n, FULL.n_features)  # [batch, window, node, feature]
    out = net(x)
    assert out.shape == (2, horizon, n)
    # Zero graph head + a skip that starts as persistence: the untrained network
    # forecasts the last input value.
    torch.testing.assert_close(out, x[:, -1:, :, 0].expand(-1, horizon, -1))
    with torch.no_grad():
        net.graph.head.weight.normal_()
    loss = net(x).pow(2).mean() + net.penalty(1e-3, 1e-3)
    loss.backward()
    assert net.conv.weight.grad is not None and net.neighbour.weight.grad is not None


@pytest.mark.parametrize("skip", ["linear", "none"])
def test_hybrid_form_starts_as_the_lstm_of_the_same_seed(skip):
    """The graph path enters through a zero head: at initialisation the hybrid TGC-LSTM is
    the network-wide LSTM (same weights for the same seed, same forecasts)."""
    n = 7
    hops, _ = random_hops(n, 3, density=0.3, seed=3)
    with seeded(5):
        lstm = NetworkRNN(n, FULL, hidden=6, horizon=3, kind="lstm", skip=skip, window=5)
    with seeded(5):
        net = TGCLSTMNet(hops, n, spec=FULL, horizon=3, window=5, hidden=6, skip=skip)
    x = torch.randn(4, 5, n, FULL.n_features)
    lstm.eval(), net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), lstm(x))
    # Training moves the graph path: its head gets a gradient from the first step.
    net.train()
    net(x).pow(2).mean().backward()
    assert float(net.graph.head.weight.grad.abs().sum()) > 0


def test_hybrid_graph_cell_is_shared_by_default_and_dense_on_request():
    assert TGCLSTMConfig().graph_cell == "shared"
    hops, _ = random_hops(6, 2, density=0.3, seed=1)
    shared = TGCLSTMNet(hops, 6, spec=SPEC, graph_hidden=3)
    assert shared.graph.cell.hidden_size == 3  # a state per sensor, gates shared
    dense = TGCLSTMNet(hops, 6, spec=SPEC, graph_cell="dense")
    assert dense.graph.cell.hidden_size == 6  # the paper's cell: one unit per sensor
    with pytest.raises(ValueError, match="graph_cell must be"):
        TGCLSTMConfig(graph_cell="sparse")  # type: ignore[arg-type]


@pytest.mark.parametrize(("before", "after", "kept"), [(1.0, 0.9, True), (1.0, 1.0, False)])
def test_hybrid_trains_the_lstm_then_keeps_the_graph_path_only_if_validation_gains(
    before, after, kept
):
    from models.nn.training import TrainHistory

    hops, _ = random_hops(6, 2, density=0.3, seed=4)
    net = TGCLSTMNet(hops, 6, spec=SPEC, window=4, horizon=2, hidden=3)
    stages: list[set[str]] = []

    def train(module, member):
        trained = {n for n, p in module.named_parameters() if p.requires_grad}
        stages.append(trained)
        with torch.no_grad():
            module.graph.head.weight.add_(1.0)  # stage 2 "learns" a graph path
        loss = before if len(stages) == 1 else after
        return TrainHistory(
            train_loss=[loss], valid_loss=[loss], best_epoch=1, best_valid_loss=loss
        )

    history = TGCLSTM._fit_hybrid(net, train, 0, validated=True)
    assert all(not n.startswith(("graph.", "conv.")) for n in stages[0])  # the LSTM alone
    assert stages[1] and all(n.startswith(("graph.", "conv.")) for n in stages[1])
    assert net.use_graph is kept
    assert bool(net.graph.head.weight.abs().sum() > 0) is kept  # dropped = zero head
    assert history.best_valid_loss == min(before, after) and len(history.valid_loss) == 2
    assert all(p.requires_grad for p in net.parameters())


def test_paper_form_has_one_unit_per_sensor_and_dense_gates():
    n = 9
    hops, _ = random_hops(n, 3, density=0.2, seed=2)
    net = TGCLSTMNet(hops, n, spec=FULL, horizon=2, window=4, form="paper")
    cell = net.graph.cell
    assert cell.hidden_size == n  # the paper's hidden size N
    # Gate input: K graph convolutions and the mask of every sensor, the calendar once.
    assert cell.input_proj.in_features == n * (3 + 1) + 2
    assert net.lstm is None


def test_penalty_is_l1_of_graph_weights_plus_l2_of_neighbour_weights():
    hops, _ = random_hops(6, 2, density=0.3, seed=8)
    net = TGCLSTMNet(hops, 6, spec=SPEC, hidden=3, embed=0)
    expected = 0.5 * net.conv.weight.abs().sum() + 0.25 * net.neighbour.weight.pow(2).sum()
    torch.testing.assert_close(net.penalty(0.5, 0.25), expected)


def test_bad_inputs_are_refused_with_clear_errors():
    hops, _ = random_hops(5, 2, density=0.3, seed=9)
    one = InputSpec(time_of_day=False, day_of_week=False, mask=False)
    net = TGCLSTMNet(hops, 5, spec=one, horizon=2, hidden=3)
    with pytest.raises(ValueError, match=r"expected x \[batch, 12, 5, 1\]"):
        net(torch.randn(2, 12, 6, 1))
    with pytest.raises(ValueError, match=r"expected x \[batch, 12, 5, 1\]"):
        net(torch.randn(2, 4, 5, 1))  # the linear skip has one weight per input step
    with pytest.raises(ValueError, match="skip must be"):
        TGCLSTMNet(hops, 5, spec=one, skip="persistence")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="refers to node"):
        SparseHopConv([np.array([[0, 7], [0, 1]])], 5)
    with pytest.raises(ValueError, match="duplicate"):
        SparseHopConv([np.array([[0, 0], [1, 1]])], 5)
    with pytest.raises(ValueError, match=r"\[2, E\]"):
        SparseHopConv([np.array([0, 1, 2])], 5)
    with pytest.raises(ValueError, match="graph_cell='shared'"):
        TGCLSTMNet(hops, 5, spec=one, form="paper", dense_max_nodes=4)
    with pytest.raises(ValueError, match="dense_max_nodes"):
        TGCLSTMNet(hops, 5, spec=one, graph_cell="dense", dense_max_nodes=4)
    with pytest.raises(ValueError, match="form must be"):
        TGCLSTMNet(hops, 5, spec=one, form="sparse")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unknown TGC-LSTM option"):
        TGCLSTM(hiden=3)
    with pytest.raises(ValueError, match="hops"):
        TGCLSTMConfig(hops=0)
    with pytest.raises(ValueError, match="ffr_minutes"):
        TGCLSTMConfig(ffr_minutes=-1.0)
    with pytest.raises(ValueError, match="form must be"):
        TGCLSTMConfig(form="dense")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="graph_dropout"):
        TGCLSTMConfig(graph_dropout=1.0)


# ---------------------------------------------------------------------- the forecaster


def ring_panel(n: int = 6, steps: int = 240, *, coords: bool = True, seed: int = 0) -> SensorPanel:
    """A small ring road whose congestion wave moves from sensor to sensor."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps)[:, None]
    phase = np.arange(n)[None, :] * 3
    values = 60 - 15 * np.sin(2 * np.pi * (t - phase) / 48) + rng.normal(0, 1, (steps, n))
    values[rng.random(values.shape) < 0.03] = np.nan  # some missing readings
    src = np.arange(n)
    dst = (src + 1) % n
    xy = np.stack([34 + 0.01 * np.cos(2 * np.pi * src / n), -118 + 0.01 * np.sin(src)], 1)
    graph = (
        RoadGraph.from_coordinates(xy, src, dst, both_directions=True)
        if coords
        else RoadGraph.from_edges(
            np.concatenate([src, dst]), np.concatenate([dst, src]), num_nodes=n
        )
    )
    ts = pd.date_range("2024-01-01", periods=steps, freq="5min", tz="UTC")
    return SensorPanel.from_values(
        values, ts, [f"s{i}" for i in range(n)], graph=graph, coords=xy if coords else None
    )


SMALL = {"hidden": 8, "graph_hidden": 4, "embed": 2, "window": 6, "horizon": 3}
TRAIN = TrainConfig(epochs=2, progress=False, device="cpu")


@pytest.mark.parametrize("form", ["hybrid", "paper", "shared"])
def test_forecaster_fits_predicts_and_round_trips(tmp_path, form):
    panel = ring_panel()
    train, valid = panel.slice(0, 180), panel.slice(180, 240)
    model = TGCLSTM(train=TRAIN, form=form, **SMALL).fit(train, valid=valid)
    assert model.graph_info["form"] == form
    forecast = model.predict(valid)
    assert forecast.mean.shape == (3, 6)
    assert np.isfinite(forecast.mean).all() and forecast.lower is not None

    model.save(tmp_path / "b")
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert config["graph"]["ffr"] == "road distances"
    assert config["graph"]["ffr_minutes"] == 5.0
    assert len(config["coords"]) == 6
    loaded = TGCLSTM.load(tmp_path / "b")
    again = loaded.predict(valid)
    np.testing.assert_array_equal(forecast.mean, again.mean)
    np.testing.assert_array_equal(forecast.lower, again.lower)
    assert loaded.net.form == model.net.form
    influence = loaded.influence()
    assert set(influence) == {"hop", "source", "target", "weight"}
    assert len(influence["weight"]) == sum(config["graph"]["edges_per_hop"])


def test_hybrid_takes_a_fitted_lstm_as_its_first_stage():
    """Given the LSTM forecaster fitted with its LSTM settings and seed, the hybrid skips
    its first stage and ends exactly where training both stages itself ends."""
    from models.forecasters.rnn import LSTMForecaster

    panel = ring_panel()
    train, valid = panel.slice(0, 180), panel.slice(180, 240)
    own = TGCLSTM(train=TRAIN, **SMALL).fit(train, valid=valid)
    first = LSTMForecaster(train=TRAIN, **own.first_stage_settings()).fit(train, valid=valid)
    shared = TGCLSTM(train=TRAIN, **SMALL).fit(train, valid=valid, lstm=first)
    assert shared.history.valid_loss == own.history.valid_loss
    np.testing.assert_allclose(shared.predict(valid).mean, own.predict(valid).mean, rtol=1e-5)
    other = LSTMForecaster(train=replace(TRAIN, seed=1), **own.first_stage_settings())
    other.fit(train, valid=valid)
    with pytest.raises(ValueError, match="not this hybrid's first stage"):
        TGCLSTM(train=TRAIN, **SMALL).fit(train, valid=valid, lstm=other)


def test_second_stage_trains_the_graph_path_on_the_lstm_path_in_eval_mode():
    """The frozen LSTM path makes, while the graph path trains, the forecasts it makes at
    prediction time (no dropout), so the graph path learns to correct those."""
    hops, _ = random_hops(6, 2, density=0.3, seed=4)
    net = TGCLSTMNet(hops, 6, spec=SPEC, window=4, horizon=2, hidden=3, dropout=0.5)
    net.train_only("graph")
    net.train()
    assert not net.lstm.training and net.graph.training
    x = torch.randn(2, 4, 6, SPEC.n_features)
    torch.testing.assert_close(net.lstm(x), net.lstm(x))  # deterministic: no dropout
    net.train_only("lstm")
    net.train()
    assert net.lstm.training


def test_graph_without_distances_falls_back_to_hop_counts_and_says_so(tmp_path):
    panel = ring_panel(coords=False)
    model = TGCLSTM(train=replace(TRAIN, epochs=1), **SMALL).fit(panel.slice(0, 200))
    assert model.graph_info["ffr"].startswith("hop-count fallback")
    model.save(tmp_path / "b")
    assert "hop-count" in json.loads((tmp_path / "b" / "config.json").read_text())["graph"]["ffr"]


def test_paper_form_is_refused_above_dense_max_nodes():
    with pytest.raises(ValueError, match="dense_max_nodes"):
        TGCLSTM(train=TRAIN, form="paper", dense_max_nodes=3, **SMALL).fit(ring_panel())


def test_forecaster_refuses_a_panel_without_graph():
    panel = ring_panel()
    bare = SensorPanel(panel.values, panel.mask, panel.timestamps, panel.sensor_ids)
    with pytest.raises(ValueError, match="needs a road graph"):
        TGCLSTM(train=TRAIN, **SMALL).fit(bare)


# ---------------------------------------------------------------------- explain


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """A tiny trained TGC-LSTM bundle with coordinates, one without, and an LSTM bundle."""
    from models.forecasters.rnn import LSTMForecaster

    root = tmp_path_factory.mktemp("bundles")
    with_xy, without_xy = ring_panel(n=8), ring_panel(n=8, coords=False)
    TGCLSTM(train=TRAIN, **SMALL).fit(with_xy.slice(0, 200)).save(root / "xy")
    TGCLSTM(train=TRAIN, **SMALL).fit(without_xy.slice(0, 200)).save(root / "plain")
    LSTMForecaster(window=6, horizon=3, hidden=4, train=TRAIN).fit(with_xy).save(root / "lstm")
    return root


def test_explain_writes_table_and_map_from_coordinates(bundles, tmp_path):
    from flows.explain import explain

    result = explain(bundles / "xy", out=tmp_path, top=3)
    assert result.layout == "coordinates"
    table = pd.read_csv(result.csv)
    assert list(table.columns[:5]) == ["target", "rank", "source", "influence", "share"]
    assert {"hop_1", "hop_2", "hop_3", "distance_km"} <= set(table.columns)
    assert (table.groupby("target")["rank"].max() <= 3).all()
    assert (table["target"] != table["source"]).all()
    # Ranked by influence, which is Σ_k |W_gc^k| over the hop columns.
    hops = table[["hop_1", "hop_2", "hop_3"]].abs().sum(axis=1)
    np.testing.assert_allclose(table["influence"], hops, rtol=1e-5)
    for _, rows in table.groupby("target"):
        assert rows["influence"].is_monotonic_decreasing
    assert result.png.stat().st_size > 10_000
    assert result.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_explain_one_sensor_without_coordinates_uses_a_graph_layout(bundles, tmp_path):
    from flows.explain import explain

    result = explain(bundles / "plain", out=tmp_path, sensor="s2", top=4)
    assert result.layout == "graph layout"
    table = pd.read_csv(result.csv)
    assert set(table["target"]) == {"s2"} and len(table) <= 4
    assert "distance_km" not in table.columns
    assert result.png.is_file()


def test_explain_refuses_unknown_sensor_and_other_models(bundles, tmp_path):
    from flows.explain import explain
    from models.bundle import BundleError

    with pytest.raises(ValueError, match="not in this bundle"):
        explain(bundles / "xy", out=tmp_path, sensor="nope")
    with pytest.raises(ValueError, match="--top"):
        explain(bundles / "xy", out=tmp_path, top=0)
    with pytest.raises(BundleError, match="holds a 'lstm' model"):
        explain(bundles / "lstm", out=tmp_path)
    with pytest.raises(BundleError, match="no model bundle"):
        explain(tmp_path / "missing", out=tmp_path)
    blocked = tmp_path / "blocked"
    (blocked / "influence_map.png").mkdir(parents=True)  # the table was written, then it failed
    with pytest.raises(IsADirectoryError, match=r"influence_map\.png: it is a folder"):
        explain(bundles / "xy", out=blocked)
    assert not (blocked / "influence.csv").exists()


def test_explain_refuses_a_model_whose_training_dropped_its_graph_path(bundles, tmp_path):
    from flows.explain import influence_table, load_tgclstm

    model = load_tgclstm(bundles / "xy")
    for m in range(model.config.ensemble):
        model.net.member(m).use_graph = False  # as a hybrid whose graph path was not kept
    with pytest.raises(ValueError, match="dropped its graph path"):
        influence_table(model)


def test_explain_command_prints_the_table(bundles, tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    runner = CliRunner()
    result = runner.invoke(
        app,
        ["explain", str(bundles / "xy"), "--sensor", "s1", "--top", "2", "--out", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    assert "learned influence" in result.output and "s1" in result.output
    assert (tmp_path / "influence.csv").is_file() and (tmp_path / "influence_map.png").is_file()
    bad = runner.invoke(app, ["explain", str(bundles / "lstm"), "--out", str(tmp_path)])
    assert bad.exit_code == 1 and "tgclstm" in bad.output
    empty = runner.invoke(app, ["explain", str(bundles / "xy"), "--out", " "])
    assert empty.exit_code == 2 and "is empty" in empty.output


# ---------------------------------------------------------------------- real data


@pytest.mark.slow
def test_trains_on_los_loop_and_validation_loss_falls(shared_data):
    from models.forecasters.base import target_windows, window_origins
    from models.metrics import score_batch
    from models.panel import chronological_split
    from pipeline.data.datasets import load_dataset

    panel = load_dataset("los-loop", data_dir=shared_data)
    assert panel.graph is not None and panel.coords is not None
    split = chronological_split(panel, test=0.2, valid=0.1)
    train = TrainConfig(epochs=4, patience=4, progress=False, device="cpu", lr=2e-3)
    model = TGCLSTM(hidden=16, embed=4, train=train).fit(split.train, valid=split.valid)
    losses = model.history.valid_loss  # the LSTM stage's 4 epochs, then the graph path's
    assert len(losses) == 8 and min(losses[1:4]) < losses[0]
    assert model.history.best_valid_loss <= min(losses[:4])
    assert model.graph_info["ffr"] == "road distances"
    # Better than persistence on the validation windows already.
    origins = window_origins(split.valid.n_time, model.window, model.horizon)
    actual = target_windows(split.valid.values, origins, model.horizon)
    ours = score_batch(actual, model.predict_batch(split.valid, origins).mean)
    last = np.repeat(split.valid.values[origins][:, None], model.horizon, axis=1)
    persistence = score_batch(actual, last)
    assert ours["pooled"]["12"]["rmse"] < persistence["pooled"]["12"]["rmse"]


def test_input_dropout_keeps_one_mask_per_sequence():
    hops, _ = random_hops(6, 2, density=0.3, seed=10)
    del hops
    inputs = torch.ones(4, 7, 6, 5)  # [batch, time, node, gate input]
    dropped = time_locked_dropout(inputs, 0.5, training=True)
    assert set(dropped.unique().tolist()) == {0.0, 2.0}  # inverted dropout scaling
    assert torch.equal(dropped, dropped[:, :1].expand_as(dropped))  # same mask every step
    assert torch.equal(time_locked_dropout(inputs, 0.5, training=False), inputs)


@pytest.mark.parametrize("form", ["hybrid", "paper", "shared"])
def test_network_runs_under_autocast_with_float32_sparse_products(form):
    hops, _ = random_hops(9, 3, density=0.2, seed=11)
    net = TGCLSTMNet(hops, 9, spec=SPEC, horizon=3, hidden=4, embed=2, form=form)
    with torch.no_grad():
        net.graph.head.weight.normal_()  # a non-trivial forecast, not just the skip
    x = torch.randn(3, 12, 9, 2)
    reference = net(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = net(x)
        gc = net.conv(x[..., :1])
    assert gc.dtype == torch.float32  # the sparse product left autocast alone
    assert torch.isfinite(mixed).all()
    torch.testing.assert_close(mixed.float(), reference, atol=0.1, rtol=0.05)


def test_backward_never_allocates_a_dense_node_by_node_matrix():
    """torch's own backward through a CSR constructor densifies the gradient ([rows, cols]);
    the layer's must stay O(edges): no single allocation near N x N floats."""
    from torch.profiler import ProfilerActivity, profile

    n = 3000
    rng = np.random.default_rng(12)
    key = np.unique(rng.integers(0, n, 8 * n) * n + rng.integers(0, n, 8 * n))
    pairs = np.stack([key % n, key // n])
    conv = SparseHopConv([pairs, pairs, pairs], n)
    scale = NeighbourScale(pairs, n)
    x = torch.randn(4, n, 1, requires_grad=True)  # [batch, node, feature]
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        (conv(x).sum() + scale().sum()).backward()
    largest = max(event.cpu_memory_usage for event in prof.events())
    assert conv.weight.grad is not None and scale.weight.grad is not None
    assert largest < n * n, f"an op allocated {largest / 2**20:.0f} MiB"


def test_ensemble_averages_independent_members_and_round_trips(tmp_path):
    panel = ring_panel()
    train, valid = panel.slice(0, 180), panel.slice(180, 240)
    model = TGCLSTM(train=replace(TRAIN, seed=1), ensemble=2, **SMALL).fit(train, valid=valid)
    members = model.net.members
    assert len(members) == 2 and len(model.histories) == 2
    assert [model.member_seed(m) for m in (0, 1)] == [2, 3]
    assert not torch.equal(members[0].conv.weight, members[1].conv.weight)
    x = torch.randn(3, 6, 6, model.config.inputs.n_features)
    with torch.no_grad():
        torch.testing.assert_close(model.net(x), (members[0](x) + members[1](x)) / 2)
    model.save(tmp_path / "b")
    loaded = TGCLSTM.load(tmp_path / "b")
    origins = np.arange(10, 50)
    np.testing.assert_array_equal(
        model.predict_batch(valid, origins).mean, loaded.predict_batch(valid, origins).mean
    )
    expected = (members[0].conv.weight + members[1].conv.weight).detach().numpy() / 2
    np.testing.assert_allclose(loaded.influence()["weight"], expected, rtol=1e-6)
