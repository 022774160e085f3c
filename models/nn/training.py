"""THE training engine of every neural forecaster (LSTM, GRU, TGC-LSTM).

A model supplies an ``nn.Module``; this module scales the data, assembles input
windows, trains with a masked loss, early-stops on the validation part and predicts.

Module contract
---------------
``module(x)`` takes ``x`` float32 ``[batch, window, node, feature]`` and returns
``[batch, horizon, node]`` in *scaled* units (``(value - mean) / std`` per sensor).
The features are, in this order (see :attr:`InputSpec.names`):

``value``
    the scaled reading. A missing reading is filled with the last observed value of
    the same sensor *inside the window*; when the window holds no observation of that
    sensor it is 0, the sensor's training mean. Filling is window-local so that a
    forecast depends only on its ``window`` input steps (the same numbers in a
    backtest over a long panel and in the streaming service).
``tod_sin``, ``tod_cos`` (``time_of_day``)
    the time of day of the step (UTC clock of the panel) on the unit circle, so that
    23:55 and 00:00 are neighbours.
``weekend`` (``day_of_week``)
    1.0 on Saturday and Sunday. Traffic differs mainly between working days and
    weekends; a cyclic weekday code would ask a week-long data set (los-loop) to
    extrapolate to weekdays it never saw in training.
``mask`` (``mask``)
    1.0 where the reading was observed, 0.0 where it was filled.

Time features are the same for every node (they are broadcast over the node axis);
a network-wide model may read them from node 0.

Training
--------
:func:`fit_network` minimises the masked MSE (or MAE / Huber) in scaled units:
missing targets contribute nothing. ``extra_loss(module)`` is added to every batch
loss (TGC-LSTM's L1/L2 regularisers). Gradients are clipped; the learning rate follows
``plateau`` (halved when the validation loss stalls), ``cosine`` or ``none``; early
stopping watches the validation loss only and the best-validation weights are
restored at the end. Without a validation panel all epochs run and the last weights
are kept (no early stopping, no plateau schedule).

GPU design: ``device="auto"`` picks CUDA when present. The panel is held as one tensor
``[time, node]`` (plus the mask and the time features) and batches are gathered by
indexing it, which on a 2-core CPU is faster than a ``DataLoader`` with workers. On
CUDA that tensor is moved to the GPU once when it fits (no per-batch copies at all),
otherwise it stays in pinned host memory and each gathered batch is copied with
``non_blocking=True``. Mixed precision uses ``torch.autocast``: bfloat16 where the GPU
supports it (no loss scaling, hence no host synchronisation), else float16 with a
``GradScaler`` (whose overflow check synchronises once per step; unavoidable with
float16). Losses are accumulated on the device and read back once per epoch: there
is no ``.item()`` per batch.

Reproducibility: build the module inside ``with seeded(config.seed):`` so its initial
weights depend on the seed only; :func:`fit_network` seeds the batch order and dropout
the same way. ``deterministic=True`` additionally turns on
``torch.use_deterministic_algorithms`` for the duration of the fit (CPU).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from models.forecasters.base import window_origins
from models.panel import SensorPanel

LrSchedule = Literal["plateau", "cosine", "none"]
LossKind = Literal["mse", "mae", "huber"]

# Keep the panel on the GPU when its tensors take less than this; else pinned host memory.
_DEVICE_RESIDENT_BYTES = 2 * 1024**3


def resolve_device(spec: str) -> torch.device:
    """``"auto"`` (CUDA when present, else CPU), ``"cpu"`` or ``"cuda"`` / ``"cuda:N"``.

    Raises
    ------
    ValueError
        For an unknown spec, or ``cuda`` on a machine without a usable CUDA device.
    """
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {spec!r} requested but CUDA is not available (torch "
                f"{torch.__version__}); use --device cpu or --device auto, or install a CUDA "
                "build of torch"
            )
        return torch.device(spec)
    raise ValueError(f"unknown device {spec!r}; use 'auto', 'cpu' or 'cuda'")


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's global RNGs seeded by ``seed``, then restore them.

    Build a module inside it so that its initial weights depend only on ``seed``.
    """
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@dataclass(frozen=True, eq=False)
class Scaler:
    """Per-sensor standardisation fitted on observed training values only.

    ``mean`` and ``std`` are float32 ``[node]``. A sensor with no observation gets mean 0
    and std 1; a constant sensor gets std 1 (so its scaled value is 0, not a division
    by zero).
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, panel: SensorPanel) -> Scaler:
        """Masked per-sensor mean and standard deviation of ``panel`` (the training part)."""
        if panel.values.ndim != 2:
            raise ValueError(
                f"the neural models take [time, node] panels, got {panel.values.shape}; "
                "select one feature first"
            )
        values = np.where(panel.mask, panel.values, 0.0).astype(np.float64)
        count = panel.mask.sum(axis=0)  # [node]
        mean = values.sum(axis=0) / np.maximum(count, 1)
        var = (np.where(panel.mask, panel.values - mean, 0.0) ** 2).sum(axis=0) / np.maximum(
            count, 1
        )
        std = np.sqrt(var)
        std = np.where((count > 1) & (std > 1e-6), std, 1.0)
        mean = np.where(count > 0, mean, 0.0)
        return cls(mean=mean.astype(np.float32), std=std.astype(np.float32))

    def transform(self, values: np.ndarray) -> np.ndarray:
        """Scale ``values`` ``[..., node]`` (NaN stays NaN)."""
        return ((values - self.mean) / self.std).astype(np.float32)

    def inverse(self, scaled: np.ndarray) -> np.ndarray:
        """Back to the original scale: ``scaled * std + mean`` for ``[..., node]``."""
        return (scaled * self.std + self.mean).astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-ready form for ``config.json`` (float32 values round-trip exactly)."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scaler:
        """Inverse of :meth:`to_dict`."""
        mean = np.asarray(data["mean"], dtype=np.float32)
        std = np.asarray(data["std"], dtype=np.float32)
        if mean.shape != std.shape or mean.ndim != 1:
            raise ValueError(f"scaler mean {mean.shape} and std {std.shape} must be [node]")
        return cls(mean=mean, std=std)


@dataclass(frozen=True)
class InputSpec:
    """Which input features the module sees (feature 0 is always the scaled value)."""

    time_of_day: bool = True
    day_of_week: bool = True
    mask: bool = True

    @property
    def names(self) -> tuple[str, ...]:
        """Feature names in order along the last axis of the input."""
        names = ["value"]
        if self.time_of_day:
            names += ["tod_sin", "tod_cos"]
        if self.day_of_week:
            names.append("weekend")
        if self.mask:
            names.append("mask")
        return tuple(names)

    @property
    def n_features(self) -> int:
        return len(self.names)

    @property
    def time_names(self) -> tuple[str, ...]:
        """The features that are the same for every node (the calendar ones)."""
        return tuple(n for n in self.names if n in ("tod_sin", "tod_cos", "weekend"))

    def to_dict(self) -> dict[str, bool]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        return cls(**{k: bool(v) for k, v in data.items()})


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


# --------------------------------------------------------------------------- inputs


def time_features(timestamps: pd.DatetimeIndex, spec: InputSpec) -> np.ndarray:
    """Calendar features of each step: float32 ``[time, len(spec.time_names)]``."""
    cols: list[np.ndarray] = []
    if spec.time_of_day:
        seconds = (
            timestamps.hour.to_numpy() * 3600
            + timestamps.minute.to_numpy() * 60
            + timestamps.second.to_numpy()
        )
        phase = 2.0 * np.pi * seconds / 86400.0
        cols += [np.sin(phase), np.cos(phase)]
    if spec.day_of_week:
        cols.append((timestamps.day_of_week.to_numpy() >= 5).astype(np.float64))
    if not cols:
        return np.zeros((len(timestamps), 0), dtype=np.float32)  # [time, 0]
    return np.stack(cols, axis=1).astype(np.float32)  # [time, time_feature]


@dataclass(frozen=True, eq=False)
class PanelTensors:
    """A panel as the tensors batches are gathered from.

    ``values`` float32 ``[time, node]`` scaled, 0 where missing; ``mask`` bool
    ``[time, node]``; ``calendar`` float32 ``[time, time_feature]``.
    """

    values: Tensor
    mask: Tensor
    calendar: Tensor
    complete: bool = False  # no missing reading at all: the fill can be skipped

    @classmethod
    def build(cls, panel: SensorPanel, scaler: Scaler, spec: InputSpec) -> PanelTensors:
        if panel.values.ndim != 2:
            raise ValueError(
                f"the neural models take [time, node] panels, got {panel.values.shape}; "
                "select one feature first"
            )
        if scaler.mean.shape[0] != panel.n_nodes:
            raise ValueError(
                f"scaler has {scaler.mean.shape[0]} sensors, panel has {panel.n_nodes}; "
                "use the panel the model was trained on (panel.select(model.sensor_ids))"
            )
        scaled = np.where(panel.mask, scaler.transform(panel.values), 0.0)  # [time, node]
        return cls(
            values=torch.from_numpy(np.ascontiguousarray(scaled, dtype=np.float32)),
            mask=torch.from_numpy(np.array(panel.mask, dtype=bool)),  # writable copy
            calendar=torch.from_numpy(time_features(panel.timestamps, spec)),
            complete=bool(panel.mask.all()),
        )

    @property
    def nbytes(self) -> int:
        return sum(t.element_size() * t.numel() for t in (self.values, self.mask, self.calendar))

    def to(self, device: torch.device) -> PanelTensors:
        return PanelTensors(
            self.values.to(device), self.mask.to(device), self.calendar.to(device), self.complete
        )

    def pin(self) -> PanelTensors:
        return PanelTensors(
            self.values.pin_memory(),
            self.mask.pin_memory(),
            self.calendar.pin_memory(),
            self.complete,
        )

    def _rows(self, table: Tensor, steps: Tensor) -> Tensor:
        """``table[steps]`` for int64 ``steps`` ``[batch, k]``: ``[batch, k, ...]``
        (``index_select`` on the flat index is several times faster than fancy indexing)."""
        return table.index_select(0, steps.reshape(-1)).view(*steps.shape, *table.shape[1:])

    def inputs(self, origins: Tensor, window: int, spec: InputSpec) -> Tensor:
        """Input windows ending at ``origins`` (int64 ``[batch]``).

        Returns float32 ``[batch, window, node, feature]``.
        """
        offsets = torch.arange(-window + 1, 1, device=origins.device)
        steps = origins[:, None] + offsets  # [batch, window]
        vals = self._rows(self.values, steps)  # [batch, window, node]
        seen = self._rows(self.mask, steps)  # [batch, window, node]
        if self.complete:
            filled = vals
        else:
            # Window-local forward fill: index of the last observed step so far, -1 if none.
            pos = torch.arange(window, device=origins.device).view(1, window, 1)
            last = torch.where(seen, pos, torch.full_like(pos, -1)).cummax(dim=1).values
            filled = torch.gather(vals, 1, last.clamp(min=0))  # [batch, window, node]
            filled = torch.where(last >= 0, filled, torch.zeros_like(filled))
        parts = [filled.unsqueeze(-1)]
        if self.calendar.shape[1]:
            cal = self._rows(self.calendar, steps)  # [batch, window, time_feature]
            parts.append(cal.unsqueeze(2).expand(-1, -1, vals.shape[2], -1))
        if spec.mask:
            parts.append(seen.unsqueeze(-1).to(filled.dtype))
        return torch.cat(parts, dim=-1)  # [batch, window, node, feature]

    def targets(self, origins: Tensor, horizon: int) -> tuple[Tensor, Tensor]:
        """Scaled targets after ``origins`` and their mask, both ``[batch, horizon, node]``."""
        steps = origins[:, None] + torch.arange(1, horizon + 1, device=origins.device)
        return self._rows(self.values, steps), self._rows(self.mask, steps)  # [b, h, node] x2


def _check_origins(origins: np.ndarray, window: int, n_time: int) -> np.ndarray:
    origins = np.asarray(origins, dtype=np.int64)
    if origins.ndim != 1:
        raise ValueError(f"origins must be a 1-D array of step indices, got {origins.shape}")
    if len(origins) and (origins.min() < window - 1 or origins.max() >= n_time):
        raise ValueError(
            f"origins must lie in [{window - 1}, {n_time - 1}] so that a {window}-step input "
            f"window fits the panel; got [{origins.min()}, {origins.max()}]"
        )
    return origins


def make_inputs(
    panel: SensorPanel, origins: np.ndarray, window: int, scaler: Scaler, spec: InputSpec
) -> np.ndarray:
    """The module's input for each origin: float32 ``[n, window, node, feature]``.

    ``origins`` are indices of the last input step of each window in ``panel``.
    Missing readings are filled as the module docstring says and flagged by ``mask``.
    """
    origins = _check_origins(origins, window, panel.n_time)
    tensors = PanelTensors.build(panel, scaler, spec)
    return tensors.inputs(torch.from_numpy(origins), window, spec).numpy()


# --------------------------------------------------------------------------- training


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


def _state_copy(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _valid_loss(
    module: nn.Module,
    data: PanelTensors,
    origins: Tensor,
    *,
    window: int,
    horizon: int,
    spec: InputSpec,
    config: TrainConfig,
    device: torch.device,
    to_device: Callable[[Tensor], Tensor],
    autocast: Callable[[], contextlib.AbstractContextManager[Any]],
) -> Tensor:
    """Mean masked loss over all validation windows, as a 0-d device tensor."""
    module.eval()
    total = torch.zeros((), device=device)
    count = torch.zeros((), device=device)
    with torch.no_grad():
        for start in range(0, len(origins), max(config.batch_size, 256)):
            idx = origins[start : start + max(config.batch_size, 256)]
            x = to_device(data.inputs(idx, window, spec))
            y, m = (to_device(t) for t in data.targets(idx, horizon))
            with autocast():
                pred = module(x)
            total += _loss_terms(pred, y, m, config.loss).sum()
            count += m.sum()
    return total / count.clamp(min=1)


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
    use_valid = len(valid_origins_np) > 0

    train_data = PanelTensors.build(train, scaler, spec)
    valid_data = (
        PanelTensors.build(valid, scaler, spec) if use_valid and valid is not None else None
    )
    # One decision for both parts, so that the batch indices live where the data live.
    total_bytes = train_data.nbytes + (valid_data.nbytes if valid_data is not None else 0)
    resident = device.type != "cuda" or total_bytes < _DEVICE_RESIDENT_BYTES
    if device.type == "cuda":
        move = (lambda d: d.to(device)) if resident else (lambda d: d.pin())
        train_data = move(train_data)
        valid_data = move(valid_data) if valid_data is not None else None
    index_device = device if resident else torch.device("cpu")

    def to_device(t: Tensor) -> Tensor:
        # A batch gathered from pinned host memory is not pinned itself: pin it so the
        # copy is asynchronous.
        if not resident:
            t = t.pin_memory()
        return t.to(device, non_blocking=True)

    train_origins = torch.from_numpy(train_origins_np).to(index_device)
    valid_origins = torch.from_numpy(valid_origins_np.astype(np.int64)).to(index_device)

    use_amp = config.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    grad_scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    def autocast() -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp)

    module.to(device)
    optimizer = torch.optim.AdamW(
        module.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    scheduler: Any = None
    if config.lr_schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    elif config.lr_schedule == "plateau" and use_valid:
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=0.5, patience=max(1, config.patience // 3)
        )

    history = TrainHistory(device=str(device))
    best_state: dict[str, Tensor] | None = None
    best_loss = math.inf
    stale = 0
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(config.seed)

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        disable=not config.progress,
        transient=True,
    )
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    try:
        if config.deterministic:
            torch.use_deterministic_algorithms(True)
        with seeded(config.seed), progress:
            task = progress.add_task(f"train {type(module).__name__}", total=config.epochs, info="")
            for epoch in range(1, config.epochs + 1):
                module.train()
                perm = torch.randperm(len(train_origins), generator=generator).to(index_device)
                loss_sum = torch.zeros((), device=device)
                count_sum = torch.zeros((), device=device)
                for start in range(0, len(perm), config.batch_size):
                    idx = train_origins[perm[start : start + config.batch_size]]
                    x = to_device(train_data.inputs(idx, window, spec))
                    y, m = (to_device(t) for t in train_data.targets(idx, horizon))
                    with autocast():
                        pred = module(x)
                    terms = _loss_terms(pred, y, m, config.loss)
                    n_obs = m.sum()
                    batch_sum = terms.sum()
                    loss = batch_sum / n_obs.clamp(min=1)
                    if extra_loss is not None:
                        loss = loss + extra_loss(module)
                    optimizer.zero_grad(set_to_none=True)
                    grad_scaler.scale(loss).backward()
                    if config.grad_clip > 0:
                        grad_scaler.unscale_(optimizer)
                        nn.utils.clip_grad_norm_(module.parameters(), config.grad_clip)
                    grad_scaler.step(optimizer)
                    grad_scaler.update()
                    loss_sum += batch_sum.detach()
                    count_sum += n_obs
                # One host synchronisation per epoch.
                history.train_loss.append(float((loss_sum / count_sum.clamp(min=1)).item()))
                history.lr.append(float(optimizer.param_groups[0]["lr"]))
                info = f"train {history.train_loss[-1]:.4f}"
                if use_valid and valid_data is not None:
                    v_loss = float(
                        _valid_loss(
                            module,
                            valid_data,
                            valid_origins,
                            window=window,
                            horizon=horizon,
                            spec=spec,
                            config=config,
                            device=device,
                            to_device=to_device,
                            autocast=autocast,
                        ).item()
                    )
                    history.valid_loss.append(v_loss)
                    info += f"  valid {v_loss:.4f}"
                    if v_loss < best_loss - 1e-7 * abs(
                        best_loss if math.isfinite(best_loss) else 0
                    ):
                        best_loss = v_loss
                        best_state = _state_copy(module)
                        history.best_epoch = epoch
                        stale = 0
                    else:
                        stale += 1
                    info += f"  best {best_loss:.4f}@{history.best_epoch}"
                    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                        scheduler.step(v_loss)
                if scheduler is not None and not isinstance(
                    scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau
                ):
                    scheduler.step()
                progress.update(task, advance=1, info=info)
                if use_valid and stale >= config.patience:
                    history.stopped_early = True
                    break
    finally:
        torch.use_deterministic_algorithms(deterministic_before)
    if best_state is not None:
        module.load_state_dict(best_state)
        history.best_valid_loss = best_loss
    module.eval()
    history.seconds = time.perf_counter() - started
    return history


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
    origins = _check_origins(origins, window, panel.n_time)
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


# --------------------------------------------------------------------------- weights


def module_tensors(module: nn.Module) -> dict[str, np.ndarray]:
    """The module's state as CPU numpy arrays (for ``save_bundle``; GPU tensors are copied
    to the host first so a CUDA-trained bundle loads anywhere)."""
    return {
        k: v.detach().to("cpu").contiguous().numpy().copy() for k, v in module.state_dict().items()
    }


def load_module_tensors(module: nn.Module, tensors: dict[str, np.ndarray]) -> None:
    """Load arrays from a bundle into ``module`` (strict: every key must match).

    Raises
    ------
    ValueError
        When keys or shapes differ (a bundle from another architecture or version).
    """
    state = {k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(
            f"bundle weights do not fit the {type(module).__name__} architecture ({exc}); "
            "retrain the bundle with this version"
        ) from None
