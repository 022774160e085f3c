"""The training engine: scaler, input assembly, masked loss, the training loop, devices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from models.forecasters.base import window_origins
from models.nn.devices import resolve_device, seeded
from models.nn.inputs import InputSpec, PanelTensors, Scaler, checked_origins
from models.nn.loop import BatchLoss, LoopSettings, train_loop
from models.nn.training import TrainConfig, fit_network, predict_network
from models.nn.weights import load_module_tensors, module_tensors
from models.panel import SensorPanel


def panel_from(
    values: np.ndarray, start: str = "2024-03-01 23:00", freq: str = "1h"
) -> SensorPanel:
    stamps = pd.date_range(start, periods=len(values), freq=freq, tz="UTC")
    return SensorPanel.from_values(values, stamps, [f"s{i}" for i in range(values.shape[1])])


class Bias(nn.Module):
    """Predicts a learnable constant per (step, node), ignoring its input."""

    def __init__(self, horizon: int, nodes: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(horizon, nodes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(x.shape[0], -1, -1) + 0.0 * x[:, :1, :, 0]


class Tiny(nn.Module):
    """A small MLP over the flattened window (enough to overfit)."""

    def __init__(self, window: int, nodes: int, features: int, horizon: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(window * nodes * features, 64),
            nn.Tanh(),
            nn.Linear(64, horizon * nodes),
        )
        self.shape = (horizon, nodes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(x.shape[0], *self.shape)


def test_scaler_is_masked_per_sensor_and_round_trips():
    values = np.array([[1.0, 10.0, np.nan], [3.0, np.nan, np.nan], [5.0, 10.0, np.nan]])
    scaler = Scaler.fit(panel_from(values))
    np.testing.assert_allclose(scaler.mean, [3.0, 10.0, 0.0])
    np.testing.assert_allclose(
        scaler.std, [np.sqrt(8 / 3), 1.0, 1.0], rtol=1e-6
    )  # constant, unseen -> 1
    again = Scaler.from_dict(scaler.to_dict())
    np.testing.assert_array_equal(again.mean, scaler.mean)
    np.testing.assert_array_equal(again.std, scaler.std)
    x = np.array([[2.0, 11.0, 4.0]], dtype=np.float32)
    np.testing.assert_allclose(scaler.inverse(scaler.transform(x)), x, rtol=1e-6)


@pytest.mark.parametrize("unit", [1e-12, 1.0, 1e12])
def test_scaler_standardises_a_network_in_any_unit(unit):
    """An absolute floor on the standard deviation left sensors measured in small units
    unscaled (inputs near 0 for the network); a corrupted saved scaler is refused."""
    values = np.array([[1.0, 7.0, 5.0], [3.0, 7.0, 5.0], [5.0, 7.0, 5.0 + 1e-7]]) * unit
    scaler = Scaler.fit(panel_from(values))
    np.testing.assert_allclose(scaler.std, [np.sqrt(8 / 3) * unit, 1.0, 1.0], rtol=1e-5)
    with pytest.raises(ValueError, match="std finite and above 0"):
        Scaler.from_dict({"mean": [0.0], "std": [0.0]})


def make_inputs(
    panel: SensorPanel, origins: np.ndarray, window: int, scaler: Scaler, spec: InputSpec
) -> np.ndarray:
    """The network's input for each origin: float32 ``[n, window, node, feature]``."""
    origins = checked_origins(origins, window, panel.n_time)
    tensors = PanelTensors.build(panel, scaler, spec)
    return tensors.inputs(torch.from_numpy(origins), window, spec).numpy()


def test_make_inputs_fills_inside_the_window_and_flags_it():
    values = np.array([[1.0], [np.nan], [3.0], [np.nan], [np.nan], [6.0]], dtype=np.float32)
    panel = panel_from(values)
    scaler = Scaler(mean=np.array([0.0], np.float32), std=np.array([1.0], np.float32))
    spec = InputSpec(time_of_day=True, day_of_week=True, mask=True)
    assert spec.names == ("value", "tod_sin", "tod_cos", "weekend", "mask")
    x = make_inputs(panel, np.array([2, 4, 5]), 3, scaler, spec)  # [3, 3, 1, 5]
    assert x.shape == (3, 3, 1, 5)
    np.testing.assert_array_equal(x[0, :, 0, 0], [1.0, 1.0, 3.0])
    np.testing.assert_array_equal(x[1, :, 0, 0], [3.0, 3.0, 3.0])
    np.testing.assert_array_equal(x[2, :, 0, 0], [0.0, 0.0, 6.0])  # nothing earlier in window
    np.testing.assert_array_equal(x[2, :, 0, 4], [0.0, 0.0, 1.0])
    # step 0 is Friday 23:00; step 1 Saturday 00:00 (weekend, angle 0)
    np.testing.assert_allclose(x[0, 1, 0, 1:4], [0.0, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(
        x[0, 0, 0, 1:4], [np.sin(2 * np.pi * 23 / 24), np.cos(2 * np.pi * 23 / 24), 0.0], atol=1e-6
    )
    with pytest.raises(ValueError, match="origins must lie in"):
        make_inputs(panel, np.array([1]), 3, scaler, spec)
    assert make_inputs(panel, np.array([5]), 3, scaler, InputSpec(False, False, False)).shape == (
        1,
        3,
        1,
        1,
    )


def test_masked_loss_ignores_missing_targets():
    rng = np.random.default_rng(0)
    values = rng.normal(50, 5, (60, 3)).astype(np.float32)
    values[rng.random(values.shape) < 0.3] = np.nan
    panel = panel_from(values)
    scaler = Scaler.fit(panel)
    window, horizon = 4, 2
    config = TrainConfig(epochs=1, batch_size=7, lr=1e-12, progress=False, device="cpu")
    history = fit_network(
        Bias(horizon, 3),
        panel,
        None,
        window=window,
        horizon=horizon,
        scaler=scaler,
        spec=InputSpec(),
        config=config,
    )
    origins = window_origins(panel.n_time, window, horizon)
    steps = origins[:, None] + np.arange(1, horizon + 1)
    scaled = scaler.transform(values)[steps]  # [n, horizon, node], NaN where missing
    expected = np.nanmean(scaled.astype(np.float64) ** 2)  # the bias stays ~0
    assert history.train_loss[0] == pytest.approx(expected, rel=1e-5)
    assert np.isfinite(history.train_loss).all()


class Counting(Bias):
    """:class:`Bias` that counts the windows its forward passes see."""

    def __init__(self, horizon: int, nodes: int) -> None:
        super().__init__(horizon, nodes)
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += x.shape[0]
        return super().forward(x)


@pytest.mark.parametrize(("cap", "expected"), [(None, 55), (100, 55), (20, 20)])
def test_an_epoch_draws_at_most_epoch_windows_windows(cap, expected):
    values = np.random.default_rng(0).normal(50, 5, (60, 3)).astype(np.float32)
    panel = panel_from(values)  # 55 windows of 4 inputs + 2 targets
    module = Counting(2, 3)
    config = TrainConfig(epochs=3, batch_size=7, progress=False, device="cpu", epoch_windows=cap)
    fit_network(
        module, panel, None, window=4, horizon=2, scaler=Scaler.fit(panel), spec=InputSpec(),
        config=config,
    )  # fmt: skip
    assert module.seen == 3 * expected


def test_epoch_windows_reaches_the_neural_models_of_a_plan_only():
    from models.forecasters.comparison import TrainPlan
    from models.forecasters.factory import build_model

    assert build_model("lstm", epoch_windows=5).train.epoch_windows == 5  # type: ignore[attr-defined]
    assert build_model("lstm").train.epoch_windows is None  # type: ignore[attr-defined]
    build_model("ar", epoch_windows=5)  # ignored, as epochs is
    with pytest.raises(ValueError, match="--epoch-windows must be >= 1"):
        TrainPlan(epoch_windows=0)


def _valid_mse(module, valid, scaler, window, horizon):
    origins = window_origins(valid.n_time, window, horizon)
    pred = predict_network(
        module,
        valid,
        origins,
        window=window,
        scaler=scaler,
        spec=InputSpec(),
        device=torch.device("cpu"),
    )
    steps = origins[:, None] + np.arange(1, horizon + 1)
    actual = valid.values[steps]
    return float(np.nanmean(((pred - actual) / scaler.std) ** 2))


def test_early_stopping_restores_the_best_validation_weights():
    rng = np.random.default_rng(1)
    values = rng.normal(50, 5, (160, 4)).astype(np.float32)  # noise: overfitting is certain
    train, valid = panel_from(values[:120]), panel_from(values[120:], start="2024-03-06 23:00")
    scaler = Scaler.fit(train)
    window, horizon = 4, 2
    with seeded(0):
        module = Tiny(window, 4, InputSpec().n_features, horizon)
    config = TrainConfig(
        epochs=60,
        batch_size=16,
        lr=0.01,
        patience=5,
        progress=False,
        device="cpu",
        lr_schedule="none",
    )
    history = fit_network(
        module,
        train,
        valid,
        window=window,
        horizon=horizon,
        scaler=scaler,
        spec=InputSpec(),
        config=config,
    )
    best = int(np.argmin(history.valid_loss))
    assert history.best_epoch == best + 1
    assert history.stopped_early and history.epochs_run == history.best_epoch + config.patience
    assert history.best_valid_loss == pytest.approx(min(history.valid_loss))
    assert history.valid_loss[-1] > history.best_valid_loss  # the last weights were worse ...
    # ... and the module holds the best ones
    assert _valid_mse(module, valid, scaler, window, horizon) == pytest.approx(
        history.best_valid_loss, rel=1e-4
    )
    assert not module.training


def test_extra_loss_is_added_and_schedules_run():
    values = np.random.default_rng(2).normal(0, 1, (50, 2)).astype(np.float32)
    panel = panel_from(values)
    scaler = Scaler.fit(panel)
    for schedule in ("plateau", "cosine", "none"):
        module = Bias(2, 2)
        config = TrainConfig(epochs=3, lr=0.1, progress=False, device="cpu", lr_schedule=schedule)
        fit_network(
            module,
            panel,
            panel,
            window=3,
            horizon=2,
            scaler=scaler,
            spec=InputSpec(),
            config=config,
            extra_loss=lambda m: 100.0 * m.bias.abs().sum(),
        )
        assert module.bias.abs().max() < 0.2  # the L1 term dominates and pins it near 0


def test_cosine_schedule_decays_the_learning_rate():
    values = np.random.default_rng(3).normal(0, 1, (40, 2)).astype(np.float32)
    panel = panel_from(values)
    config = TrainConfig(epochs=4, lr=0.1, progress=False, device="cpu", lr_schedule="cosine")
    history = fit_network(
        Bias(2, 2),
        panel,
        None,
        window=3,
        horizon=2,
        scaler=Scaler.fit(panel),
        spec=InputSpec(),
        config=config,
    )
    assert history.lr[0] == pytest.approx(0.1) and history.lr[-1] < history.lr[0]
    assert history.best_epoch == 0 and history.best_valid_loss is None


def test_deterministic_mode_is_reproducible_and_restores_the_global_flag():
    values = np.random.default_rng(4).normal(0, 1, (80, 3)).astype(np.float32)
    panel = panel_from(values)
    scaler = Scaler.fit(panel)
    config = TrainConfig(epochs=3, progress=False, device="cpu", deterministic=True, seed=7)
    outputs = []
    for _ in range(2):
        with seeded(config.seed):
            module = Tiny(3, 3, InputSpec().n_features, 2)
        fit_network(
            module,
            panel,
            panel,
            window=3,
            horizon=2,
            scaler=scaler,
            spec=InputSpec(),
            config=config,
        )
        outputs.append(module_tensors(module))
    for key in outputs[0]:
        np.testing.assert_array_equal(outputs[0][key], outputs[1][key])
    assert not torch.are_deterministic_algorithms_enabled()


def test_training_needs_a_complete_window():
    panel = panel_from(np.zeros((5, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="has no window"):
        fit_network(
            Bias(3, 2),
            panel,
            None,
            window=4,
            horizon=3,
            scaler=Scaler.fit(panel),
            spec=InputSpec(),
            config=TrainConfig(progress=False, device="cpu"),
        )


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for spec in ("tpu", "cudax", "cuda:abc", "cuda:-1"):  # torch raised RuntimeError there
        with pytest.raises(ValueError, match="unknown device"):
            resolve_device(spec)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_train_config_rejects_bad_values():
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="step")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="epoch_windows"):
        TrainConfig(epoch_windows=0)
    assert TrainConfig.from_dict(TrainConfig(lr=0.5).to_dict()) == TrainConfig(lr=0.5)


def test_module_tensors_are_host_copies_and_load_strictly():
    module = Bias(2, 3)
    arrays = module_tensors(module)
    assert isinstance(arrays["bias"], np.ndarray)
    with torch.no_grad():
        module.bias.add_(1.0)
    assert arrays["bias"].max() == 0.0  # a copy, not a view of the live weights
    fresh = Bias(2, 3)
    load_module_tensors(fresh, arrays)
    assert float(fresh.bias.detach().abs().sum()) == 0.0
    with pytest.raises(ValueError, match="do not fit the Bias architecture"):
        load_module_tensors(Bias(3, 3), arrays)


class Scalar(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))


def test_loop_batches_its_order_and_restores_the_weights_of_the_best_real_gain():
    module = Scalar()
    seen: list[list[int]] = []
    weights: list[float] = []
    scores = iter([3.0, 2.0, 1.995, 2.5, 0.0])  # 1.995 is not a gain of more than 0.01

    def batch_loss(rows: torch.Tensor) -> BatchLoss:
        seen.append(rows.tolist())
        loss = (module.w - 1.0) ** 2
        return BatchLoss(loss, loss.detach() * len(rows), len(rows))

    def valid_score() -> float:
        weights.append(float(module.w.detach()))
        return next(scores)

    settings = LoopSettings(epochs=5, batch_size=2, seed=0, patience=2, min_gain=0.01)
    result = train_loop(
        module,
        torch.optim.SGD(module.parameters(), lr=0.1),
        order=lambda: torch.tensor([4, 0, 3, 1, 2]),
        batch_loss=batch_loss,
        valid_score=valid_score,
        settings=settings,
        device=torch.device("cpu"),
    )
    assert seen[:3] == [[4, 0], [3, 1], [2]]
    assert result.best_epoch == 2 and result.best_score == 2.0
    assert result.stopped_early and len(result.train_loss) == 4
    assert result.valid_score == [3.0, 2.0, 1.995, 2.5]
    assert float(module.w.detach()) == weights[1] and not module.training
    # The epoch mean weighs every batch by its count: three batches, one weight value each.
    assert result.train_loss[0] == pytest.approx((1.0 * 2 + 0.8**2 * 2 + 0.64**2) / 5)


def test_loop_without_validation_runs_every_epoch_and_refuses_a_plateau_schedule():
    module = Scalar()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)

    def batch_loss(rows: torch.Tensor) -> BatchLoss:
        loss = (module.w - 1.0) ** 2
        return BatchLoss(loss, loss.detach(), torch.ones(()))

    settings = LoopSettings(epochs=3, batch_size=4, seed=0, patience=1)
    result = train_loop(
        module,
        optimizer,
        order=lambda: torch.arange(4),
        batch_loss=batch_loss,
        valid_score=None,
        settings=settings,
        device=torch.device("cpu"),
    )
    assert len(result.train_loss) == 3 and not result.stopped_early
    assert result.best_epoch == 0 and result.best_score is None
    with pytest.raises(ValueError, match="plateau"):
        train_loop(
            module,
            optimizer,
            order=lambda: torch.arange(4),
            batch_loss=batch_loss,
            valid_score=None,
            settings=settings,
            device=torch.device("cpu"),
            scheduler=torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer),
        )


def test_a_cuda_index_beyond_the_machine_s_devices_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"'cuda:7': this machine has 1 CUDA device\(s\), 0-0"):
        resolve_device("cuda:7")
    assert resolve_device("cuda:0") == torch.device("cuda:0")
