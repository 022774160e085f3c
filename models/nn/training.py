"""Training and prediction of every neural forecaster's network (LSTM, GRU, TGC-LSTM).

A model supplies an ``nn.Module``; :func:`fit_network` scales the data, assembles input
windows (:mod:`models.nn.inputs`), trains with a masked loss in the shared loop
(:func:`models.nn.loop.train_loop`) and :func:`predict_network` forecasts.

Module contract
---------------
``module(x)`` takes ``x`` float32 ``[batch, window, node, feature]`` (the features of
:class:`~models.nn.inputs.InputSpec`) and returns ``[batch, horizon, node]`` in *scaled*
units (``(value - mean) / std`` per sensor).

Training
--------
:func:`fit_network` minimises the masked MSE (or MAE / Huber) in scaled units: missing
targets contribute nothing. ``extra_loss(module)`` is added to every batch loss
(TGC-LSTM's L1/L2 regularisers). AdamW; gradients are clipped; the learning rate
follows ``plateau`` (halved when the validation loss stalls), ``cosine`` or ``none``;
early stopping watches the validation loss only and the best-validation weights are
restored at the end. Without a validation panel all epochs run and the last weights are
kept (no early stopping, no plateau schedule).

Devices: ``device="auto"`` picks CUDA when present. The panel is held as one tensor
``[time, node]`` (plus the mask and the time features) and batches are gathered by
indexing it, which on a 2-core CPU is faster than a ``DataLoader`` with workers. On CUDA
that tensor is moved to the GPU once when it fits (no per-batch copies at all),
otherwise it stays in pinned host memory and each gathered batch is copied with
``non_blocking=True``. ``amp`` turns on mixed precision on CUDA
(:class:`~models.nn.loop.MixedPrecision`).

Reproducibility: build the module inside ``with seeded(config.seed):``
(:func:`models.nn.devices.seeded`) so its initial weights depend on the seed only;
:func:`fit_network` seeds the batch order and dropout the same way.
``deterministic=True`` additionally turns on ``torch.use_deterministic_algorithms`` for
the duration of the fit (CPU).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, ReduceLROnPlateau

from models.forecasters.base import window_origins
from models.nn.devices import resolve_device
from models.nn.inputs import InputSpec, PanelTensors, Scaler, checked_origins
from models.nn.loop import BatchLoss, LoopSettings, MixedPrecision, train_loop
from models.panel import SensorPanel

LrSchedule = Literal["plateau", "cosine", "none"]
LossKind = Literal["mse", "mae", "huber"]

# Keep the panel on the GPU when its tensors take less than this; else pinned host memory.
_DEVICE_RESIDENT_BYTES = 2 * 1024**3
# A validation loss is an improvement when it is lower by more than this share of the best.
_REL_GAIN = 1e-7


@dataclass(frozen=True)
class TrainConfig:
    """How :func:`fit_network` trains (everything a model's bundle records)."""

    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 10  # epochs without validation improvement before stopping
    grad_clip: float = 5.0  # max global gradient norm; 0 disables clipping
    seed: int = 0
    device: str = "auto"
    deterministic: bool = False
    lr_schedule: LrSchedule = "plateau"
    progress: bool = True
    amp: bool = True  # mixed precision, CUDA only
    loss: LossKind = "mse"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(
                f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}"
            )
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.lr_schedule not in ("plateau", "cosine", "none"):
            raise ValueError(
                f"lr_schedule must be plateau, cosine or none, got {self.lr_schedule!r}"
            )
        if self.loss not in ("mse", "mae", "huber"):
            raise ValueError(f"loss must be mse, mae or huber, got {self.loss!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return cls(**data)


@dataclass
class TrainHistory:
    """What happened during :func:`fit_network` (losses are in scaled units)."""

    train_loss: list[float] = field(default_factory=list)
    valid_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    best_epoch: int = 0  # 1-based epoch whose weights were kept; 0 = last (no validation)
    best_valid_loss: float | None = None
    stopped_early: bool = False
    seconds: float = 0.0
    device: str = "cpu"

    @property
    def epochs_run(self) -> int:
        return len(self.train_loss)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "epochs_run": self.epochs_run}


@dataclass(frozen=True)
class _Placement:
    """Where a fit keeps the panel tensors: on ``device`` when ``resident``, else in
    pinned host memory, from which every gathered batch is copied asynchronously."""

    device: torch.device
    resident: bool

    @classmethod
    def choose(cls, device: torch.device, nbytes: int) -> _Placement:
        return cls(device, device.type != "cuda" or nbytes < _DEVICE_RESIDENT_BYTES)

    @property
    def index_device(self) -> torch.device:
        """Where batch indices live: with the data."""
        return self.device if self.resident else torch.device("cpu")

    def hold(self, data: PanelTensors) -> PanelTensors:
        if self.device.type != "cuda":
            return data
        return data.to(self.device) if self.resident else data.pin()

    def batch(self, t: Tensor) -> Tensor:
        """A gathered batch on the device."""
        # A batch gathered from pinned host memory is not pinned itself: pin it so the
        # copy is asynchronous.
        if not self.resident:
            t = t.pin_memory()
        return t.to(self.device, non_blocking=True)


def _loss_terms(pred: Tensor, target: Tensor, mask: Tensor, kind: LossKind) -> Tensor:
    """Elementwise loss where the target is observed, 0 elsewhere: ``[batch, horizon, node]``."""
    diff = pred.float() - target
    if kind == "mse":
        err = diff * diff
    elif kind == "mae":
        err = diff.abs()
    else:
        err = nn.functional.huber_loss(pred.float(), target, reduction="none", delta=1.0)
    return torch.where(mask, err, torch.zeros_like(err))


def _scheduler(
    config: TrainConfig, optimizer: torch.optim.Optimizer, validated: bool
) -> LRScheduler | ReduceLROnPlateau | None:
    if config.lr_schedule == "cosine":
        return CosineAnnealingLR(optimizer, T_max=config.epochs)
    if config.lr_schedule == "plateau" and validated:
        return ReduceLROnPlateau(
            optimizer, mode="min", factor=0.5, patience=max(1, config.patience // 3)
        )
    return None


def fit_network(
    module: nn.Module,
    train: SensorPanel,
    valid: SensorPanel | None,
    *,
    window: int,
    horizon: int,
    scaler: Scaler,
    spec: InputSpec,
    config: TrainConfig,
    extra_loss: Callable[[nn.Module], Tensor] | None = None,
) -> TrainHistory:
    """Train ``module`` in place on every window of ``train``; return the history.

    Parameters
    ----------
    module : follows the module contract of this module's docstring. It is moved to
        ``resolve_device(config.device)`` and left there, in eval mode, holding the
        best-validation weights (the last weights without ``valid``).
    train, valid : training and validation panels (same sensors). Windows are taken
        inside each panel: input ``window`` steps and ``horizon`` target steps.
    scaler : fitted on the training part (:meth:`Scaler.fit`).
    extra_loss : added to every batch loss (e.g. weight regularisers).

    Raises
    ------
    ValueError
        When ``train`` has no complete window, or the panels' sensors differ.
    """
    device = resolve_device(config.device)
    if valid is not None and valid.sensor_ids != train.sensor_ids:
        raise ValueError("train and valid panels must have the same sensors in the same order")
    train_origins_np = window_origins(train.n_time, window, horizon)
    if len(train_origins_np) == 0:
        raise ValueError(
            f"training panel of {train.n_time} steps has no window of {window} inputs + "
            f"{horizon} targets; use more data or a smaller --window/--horizon"
        )
    valid_origins_np = (
        window_origins(valid.n_time, window, horizon) if valid is not None else np.empty(0)
    )
    train_data = PanelTensors.build(train, scaler, spec)
    valid_data = (
        PanelTensors.build(valid, scaler, spec)
        if len(valid_origins_np) and valid is not None
        else None
    )
    # One decision for both parts, so that the batch indices live where the data live.
    place = _Placement.choose(
        device, train_data.nbytes + (valid_data.nbytes if valid_data is not None else 0)
    )
    train_data = place.hold(train_data)
    train_origins = torch.from_numpy(train_origins_np).to(place.index_device)
    precision = MixedPrecision.choose(device, config.amp)

    def masked_sum(data: PanelTensors, origins: Tensor) -> tuple[Tensor, Tensor]:
        """Summed loss of the windows at ``origins`` and the number of observed targets."""
        x = place.batch(data.inputs(origins, window, spec))
        y, m = (place.batch(t) for t in data.targets(origins, horizon))
        with precision.autocast():
            pred = module(x)
        return _loss_terms(pred, y, m, config.loss).sum(), m.sum()

    def batch_loss(rows: Tensor) -> BatchLoss:
        total, n_obs = masked_sum(train_data, train_origins[rows])
        loss = total / n_obs.clamp(min=1)
        if extra_loss is not None:
            loss = loss + extra_loss(module)
        return BatchLoss(loss, total, n_obs)

    valid_score: Callable[[], float] | None = None
    if valid_data is not None:
        held = place.hold(valid_data)
        valid_origins = torch.from_numpy(valid_origins_np.astype(np.int64)).to(place.index_device)

        def valid_loss() -> float:
            """Mean masked loss over all validation windows."""
            module.eval()
            total = torch.zeros((), device=device)
            count = torch.zeros((), device=device)
            step = max(config.batch_size, 256)
            with torch.no_grad():
                for start in range(0, len(valid_origins), step):
                    part, n_obs = masked_sum(held, valid_origins[start : start + step])
                    total += part
                    count += n_obs
            return float((total / count.clamp(min=1)).item())

        valid_score = valid_loss

    module.to(device)
    optimizer = torch.optim.AdamW(
        module.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    generator = torch.Generator().manual_seed(config.seed)

    def order() -> Tensor:
        return torch.randperm(len(train_origins), generator=generator).to(place.index_device)

    settings = LoopSettings(
        epochs=config.epochs,
        batch_size=config.batch_size,
        seed=config.seed,
        patience=config.patience,
        rel_gain=_REL_GAIN,
        grad_clip=config.grad_clip,
        deterministic=config.deterministic,
        progress=config.progress,
    )
    started = time.perf_counter()
    result = train_loop(
        module,
        optimizer,
        order=order,
        batch_loss=batch_loss,
        valid_score=valid_score,
        settings=settings,
        device=device,
        scheduler=_scheduler(config, optimizer, valid_score is not None),
        precision=precision,
    )
    return TrainHistory(
        train_loss=result.train_loss,
        valid_loss=result.valid_score,
        lr=result.lr,
        best_epoch=result.best_epoch,
        best_valid_loss=result.best_score,
        stopped_early=result.stopped_early,
        seconds=time.perf_counter() - started,
        device=str(device),
    )


def predict_network(
    module: nn.Module,
    panel: SensorPanel,
    origins: np.ndarray,
    *,
    window: int,
    scaler: Scaler,
    spec: InputSpec,
    device: torch.device,
    batch_size: int = 256,
) -> np.ndarray:
    """Forecasts of ``module`` at ``origins`` of ``panel``: float32 ``[n, horizon, node]``,
    on the original scale (float32 arithmetic, no autocast)."""
    origins = checked_origins(origins, window, panel.n_time)
    data = PanelTensors.build(panel, scaler, spec)
    module.eval()
    chunks: list[np.ndarray] = []
    with torch.no_grad():
        for start in range(0, len(origins), batch_size):
            idx = torch.from_numpy(origins[start : start + batch_size])
            x = data.inputs(idx, window, spec)
            if device.type == "cuda":
                x = x.pin_memory()
            pred = module(x.to(device, non_blocking=True))  # [batch, horizon, node]
            chunks.append(pred.float().cpu().numpy())
    if not chunks:
        return np.empty((0, 0, panel.n_nodes), dtype=np.float32)  # [0, horizon?, node]
    return scaler.inverse(np.concatenate(chunks, axis=0))  # [n, horizon, node]
