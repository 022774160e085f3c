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

Subgraphs: with ``parts`` (a :class:`~models.nn.subgraphs.Partition`), each step trains
one part on a batch of windows: the inputs of the part's sensors (core and halo) are
gathered, ``module.forward_part(x, part)`` forecasts its core, and the loss is taken on
the core only; ``module.global_offset(x)`` (the frozen part of the forecast that reads
every sensor, or None) is computed once per batch of windows on the whole graph and
added. An epoch visits every part with every window; its cost is one pass over the
graph plus the halos, and a step's memory is one part's. Validation runs by part too.

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
from models.nn.sparse_graph import prepare_parts
from models.nn.subgraphs import Partition
from models.panel import SensorPanel

LrSchedule = Literal["plateau", "cosine", "none"]
LossKind = Literal["mse", "mae", "huber"]

# Keep the panel on the GPU when its tensors take less than this; else pinned host memory.
_DEVICE_RESIDENT_BYTES = 2 * 1024**3
# A validation loss is an improvement when it is lower by more than this share of the best.
_REL_GAIN = 1e-7
# predict_network's batches hold at most this many (window x sensor) rows: 256 windows
# up to 1,000 sensors, fewer above, so that a 20,000-sensor network predicts in bounded memory.
_PREDICT_ROWS = 256 * 1000


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
    # At most this many training windows per epoch, a fresh random draw each epoch (None:
    # every window): shorter epochs on long histories, at some cost in accuracy
    # (docs/decisions.md, "Epochs of long histories").
    epoch_windows: int | None = None

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
        if self.epoch_windows is not None and self.epoch_windows < 1:
            raise ValueError(f"epoch_windows must be >= 1 or None, got {self.epoch_windows}")

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
    parts: Partition | None = None,
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
    parts : train by subgraph (module docstring); the module then has ``forward_part``
        and ``global_offset``.

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

    generator = torch.Generator().manual_seed(config.seed)

    drawn = len(train_origins) if config.epoch_windows is None else config.epoch_windows

    def order() -> Tensor:
        windows = torch.randperm(len(train_origins), generator=generator)[:drawn]
        return windows.to(place.index_device)

    steps_per_batch = config.batch_size
    if parts is not None:
        by_part = _PartSteps(module, parts, place, precision, window, horizon, spec, config)
        order = by_part.order_for(len(train_origins), generator, drawn)

        def batch_loss(rows: Tensor) -> BatchLoss:
            total, n_obs = by_part.step(train_data, train_origins, int(rows[0]))
            loss = total / n_obs.clamp(min=1)
            if extra_loss is not None:
                loss = loss + extra_loss(module)
            return BatchLoss(loss, total, n_obs)

        steps_per_batch = 1  # one (batch of windows, part) per step

    valid_score: Callable[[], float] | None = None
    if valid_data is not None:
        held = place.hold(valid_data)
        valid_origins = torch.from_numpy(valid_origins_np.astype(np.int64)).to(place.index_device)

        def valid_loss() -> float:
            """Mean masked loss over all validation windows."""
            module.eval()
            total = torch.zeros((), device=device)
            count = torch.zeros((), device=device)
            step = max(config.batch_size, 256) if parts is None else config.batch_size
            with torch.no_grad():
                for start in range(0, len(valid_origins), step):
                    chunk = valid_origins[start : start + step]
                    if parts is None:
                        part, n_obs = masked_sum(held, chunk)
                    else:
                        part, n_obs = by_part.whole_batch(held, chunk)
                    total += part
                    count += n_obs
            return float((total / count.clamp(min=1)).item())

        valid_score = valid_loss

    module.to(device)
    if parts is not None:
        prepare_parts(module, by_part.module_parts.parts)
    optimizer = torch.optim.AdamW(
        module.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    settings = LoopSettings(
        epochs=config.epochs,
        batch_size=steps_per_batch,
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
    on the original scale (float32 arithmetic, no autocast); at most ``batch_size``
    windows at a time, fewer on large networks (``_PREDICT_ROWS``)."""
    origins = checked_origins(origins, window, panel.n_time)
    data = PanelTensors.build(panel, scaler, spec)
    batch_size = max(1, min(batch_size, _PREDICT_ROWS // max(panel.n_nodes, 1)))
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


class _PartSteps:
    """The steps of an epoch trained by subgraph: each is (a batch of windows, a part).

    The parts of one batch of windows are visited one after the other (in a fresh order),
    so that the module's global offset is computed once per batch of windows.
    """

    def __init__(
        self,
        module: nn.Module,
        parts: Partition,
        place: _Placement,
        precision: MixedPrecision,
        window: int,
        horizon: int,
        spec: InputSpec,
        config: TrainConfig,
    ) -> None:
        for name in ("forward_part", "global_offset"):
            if not callable(getattr(module, name, None)):
                raise TypeError(f"{type(module).__name__} cannot train by subgraph: no {name}")
        self.module, self.place, self.precision = module, place, precision
        # Index tensors where the data live (gathering) and where the module runs; built
        # once, as the module keeps per-part patterns.
        self.parts = parts.to(place.index_device)
        self.module_parts = parts.to(place.device)
        self.window, self.horizon, self.spec, self.config = window, horizon, spec, config
        self.batches: list[Tensor] = []
        self._offset: tuple[int, Tensor | None] | None = None

    def order_for(
        self, n_windows: int, generator: torch.Generator, drawn: int
    ) -> Callable[[], Tensor]:
        """The loop's ``order``: a fresh list of step numbers ``batch * n_parts + part``
        over ``drawn`` of the ``n_windows`` windows."""
        n_parts = len(self.parts.parts)

        def order() -> Tensor:
            windows = torch.randperm(n_windows, generator=generator)[:drawn]
            # One copy per epoch to where the window origins live, none per step.
            on_index = windows.to(self.place.index_device)
            self.batches = list(on_index.split(self.config.batch_size))
            self._offset = None
            steps = [
                b * n_parts + p
                for b in range(len(self.batches))
                for p in torch.randperm(n_parts, generator=generator).tolist()
            ]
            return torch.tensor(steps, dtype=torch.long)

        return order

    def step(self, data: PanelTensors, origins: Tensor, step: int) -> tuple[Tensor, Tensor]:
        """Summed loss and observed targets of one training step."""
        batch, part = divmod(step, len(self.parts.parts))
        chunk = origins[self.batches[batch]]
        if self._offset is None or self._offset[0] != batch:
            self._offset = (batch, self._global(data, chunk))
        return self._part_loss(data, chunk, part, self._offset[1])

    def whole_batch(self, data: PanelTensors, origins: Tensor) -> tuple[Tensor, Tensor]:
        """Summed loss and observed targets of the windows at ``origins`` over every part."""
        offset = self._global(data, origins)
        sums = [self._part_loss(data, origins, p, offset) for p in range(len(self.parts.parts))]
        return sum(s[0] for s in sums), sum(s[1] for s in sums)  # type: ignore[return-value]

    def _global(self, data: PanelTensors, origins: Tensor) -> Tensor | None:
        with torch.no_grad(), self.precision.autocast():
            x = self.place.batch(data.inputs(origins, self.window, self.spec))
            offset: Tensor | None = self.module.global_offset(x)  # type: ignore[operator]
        return offset

    def _part_loss(
        self, data: PanelTensors, origins: Tensor, index: int, offset: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        part, on_module = self.parts.parts[index], self.module_parts.parts[index]
        x = self.place.batch(data.inputs(origins, self.window, self.spec, part.nodes))
        y, m = (self.place.batch(t) for t in data.targets(origins, self.horizon, part.core_ids))
        with self.precision.autocast():
            pred = self.module.forward_part(x, on_module)  # type: ignore[operator]
        if offset is not None:
            pred = pred + offset.index_select(-1, on_module.core_ids)
        return _loss_terms(pred, y, m, self.config.loss).sum(), m.sum()
