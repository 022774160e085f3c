"""The one training loop of every network: forecasters and neural detectors.

Each epoch visits the samples in a fresh order, steps the optimiser on every batch and
then, with a validation score (lower is better), keeps the best weights and stops after
``patience`` epochs without a gain; the best weights are restored at the end. The caller
brings the optimiser, the learning-rate schedule, the loss and the sources of
randomness; the loop fixes the order in which they are used, so a seeded fit is
reproducible.

An observer (hyper-parameter search with pruning) sees every validation score through
:func:`observe_epochs`, a context in which :func:`train_loop` calls it after each
validated epoch; the observer may stop the fit by raising.

Mixed precision (:class:`MixedPrecision`) is for CUDA: bfloat16 where the GPU supports
it (no loss scaling, hence no host synchronisation), else float16 with a ``GradScaler``
(whose overflow check synchronises once per step; unavoidable with float16). Training
losses are summed on the device and read back once per epoch.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from models.nn.devices import seeded
from models.nn.weights import state_copy


@dataclass(frozen=True)
class MixedPrecision:
    """Autocast settings of a fit: ``enabled`` only on CUDA, in ``dtype``."""

    device_type: str
    dtype: torch.dtype
    enabled: bool

    @classmethod
    def choose(cls, device: torch.device, amp: bool) -> MixedPrecision:
        """bfloat16 where the GPU supports it, else float16; off unless ``amp`` on CUDA."""
        use = amp and device.type == "cuda"
        dtype = torch.bfloat16 if use and torch.cuda.is_bf16_supported() else torch.float16
        return cls(device.type, dtype, use)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The context a forward pass runs in."""
        return torch.autocast(device_type=self.device_type, dtype=self.dtype, enabled=self.enabled)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Loss scaling for float16; a pass-through otherwise."""
        return torch.amp.GradScaler("cuda", enabled=self.enabled and self.dtype == torch.float16)


NO_AUTOCAST = MixedPrecision.choose(torch.device("cpu"), amp=False)

EpochObserver = Callable[[int, float], None]
_OBSERVER: ContextVar[EpochObserver | None] = ContextVar("epoch_observer", default=None)


@contextlib.contextmanager
def observe_epochs(observer: EpochObserver) -> Iterator[None]:
    """Inside this context every :func:`train_loop` calls ``observer(epoch, score)`` after
    each validated epoch (1-based epoch, the validation score); an exception it raises
    (e.g. ``optuna.TrialPruned``) ends the fit and propagates."""
    token = _OBSERVER.set(observer)
    try:
        yield
    finally:
        _OBSERVER.reset(token)


class BatchLoss(NamedTuple):
    """One batch's loss, and its share of the epoch's mean training loss.

    ``loss`` is minimised. ``total`` is a sum of ``n_terms`` loss terms; ``n_terms`` is a
    device tensor when it is only known there (observed targets), then the epoch mean is
    taken on the device; else an int, and the mean is taken on the host.
    """

    loss: Tensor
    total: Tensor
    n_terms: Tensor | int


@dataclass(frozen=True)
class LoopSettings:
    """How :func:`train_loop` runs.

    epochs, batch_size : at most ``epochs`` passes over the samples, in batches.
    seed : of torch's global RNGs (dropout) during the loop.
    patience : validated epochs without a gain before stopping.
    min_gain, rel_gain : a score is a gain when it is below the best one by more than
        ``min_gain + rel_gain * |best|``.
    grad_clip : max global gradient norm; 0 disables clipping.
    deterministic : ``torch.use_deterministic_algorithms`` during the loop.
    progress : show a transient progress bar.
    """

    epochs: int
    batch_size: int
    seed: int
    patience: int
    min_gain: float = 0.0
    rel_gain: float = 0.0
    grad_clip: float = 0.0
    deterministic: bool = False
    progress: bool = False

    def gains(self, score: float, best: float) -> bool:
        """Whether ``score`` beats ``best`` by the required margin."""
        margin = self.min_gain + self.rel_gain * abs(best) if math.isfinite(best) else 0.0
        return score < best - margin


@dataclass
class LoopResult:
    """What :func:`train_loop` did, one entry per epoch run."""

    train_loss: list[float] = field(default_factory=list)
    valid_score: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)  # the learning rate during the epoch
    best_epoch: int = 0  # 1-based epoch whose weights were restored; 0 = none (last kept)
    best_score: float | None = None
    stopped_early: bool = False


def train_loop(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    order: Callable[[], Tensor],
    batch_loss: Callable[[Tensor], BatchLoss],
    valid_score: Callable[[], float] | None,
    settings: LoopSettings,
    device: torch.device,
    scheduler: LRScheduler | ReduceLROnPlateau | None = None,
    precision: MixedPrecision = NO_AUTOCAST,
    after_step: Callable[[Tensor], None] | None = None,
) -> LoopResult:
    """Train ``module`` in place; leave it in eval mode with the best weights.

    Parameters
    ----------
    order : a fresh order of the sample indices (1-D tensor), called once per epoch.
    batch_loss : the loss of the samples at the given indices (a slice of ``order``).
    valid_score : the score of the current weights, called after every epoch; None runs
        all epochs and keeps the last weights.
    device : where the epoch's loss sums are kept.
    scheduler : stepped once per epoch, a plateau schedule with the validation score.
    precision : the loss scaling of mixed precision (the caller autocasts its forward).
    after_step : called with the batch's indices after each optimiser step: a second
        model's own step, e.g. a GAN's discriminator (its optimiser is the caller's).
    """
    if isinstance(scheduler, ReduceLROnPlateau) and valid_score is None:
        raise ValueError("a plateau learning-rate schedule needs a validation score")
    grad_scaler = precision.grad_scaler()
    result = LoopResult()
    best, stale = math.inf, 0
    best_state: dict[str, Tensor] | None = None
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    try:
        if settings.deterministic:
            torch.use_deterministic_algorithms(True)
        label = f"train {type(module).__name__}"
        with seeded(settings.seed), _progress_bar(settings.progress, label, settings.epochs) as bar:
            for epoch in range(1, settings.epochs + 1):
                module.train()
                train_loss = _train_epoch(
                    module,
                    optimizer,
                    grad_scaler,
                    order(),
                    batch_loss,
                    settings,
                    device,
                    after_step,
                )
                result.train_loss.append(train_loss)
                result.lr.append(float(optimizer.param_groups[0]["lr"]))
                info = f"train {train_loss:.4f}"
                if valid_score is not None:
                    score = valid_score()
                    result.valid_score.append(score)
                    if settings.gains(score, best):
                        best, best_state, stale = score, state_copy(module), 0
                        result.best_epoch = epoch
                    else:
                        stale += 1
                    info += f"  valid {score:.4f}  best {best:.4f}@{result.best_epoch}"
                    if isinstance(scheduler, ReduceLROnPlateau):
                        scheduler.step(score)
                    observer = _OBSERVER.get()
                    if observer is not None:
                        observer(epoch, score)
                if scheduler is not None and not isinstance(scheduler, ReduceLROnPlateau):
                    scheduler.step()
                bar(info)
                if valid_score is not None and stale >= settings.patience:
                    result.stopped_early = True
                    break
    finally:
        torch.use_deterministic_algorithms(deterministic_before)
    if best_state is not None:
        module.load_state_dict(best_state)
        result.best_score = best
    module.eval()
    return result


def _train_epoch(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    grad_scaler: torch.amp.GradScaler,
    samples: Tensor,
    batch_loss: Callable[[Tensor], BatchLoss],
    settings: LoopSettings,
    device: torch.device,
    after_step: Callable[[Tensor], None] | None = None,
) -> float:
    """One optimiser step per batch of ``samples``; the epoch's mean training loss."""
    loss_sum = torch.zeros((), device=device)
    device_terms = torch.zeros((), device=device)
    host_terms = 0
    for start in range(0, len(samples), settings.batch_size):
        batch_rows = samples[start : start + settings.batch_size]
        batch = batch_loss(batch_rows)
        optimizer.zero_grad(set_to_none=True)
        grad_scaler.scale(batch.loss).backward()
        if settings.grad_clip > 0:
            grad_scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(module.parameters(), settings.grad_clip)
        grad_scaler.step(optimizer)
        grad_scaler.update()
        if after_step is not None:
            after_step(batch_rows)
        loss_sum += batch.total.detach()
        if isinstance(batch.n_terms, Tensor):
            device_terms += batch.n_terms
        else:
            host_terms += batch.n_terms
    # The one host synchronisation of the epoch.
    if host_terms:
        return float(loss_sum) / host_terms
    return float((loss_sum / device_terms.clamp(min=1)).item())


@contextlib.contextmanager
def _progress_bar(enabled: bool, label: str, epochs: int) -> Iterator[Callable[[str], None]]:
    """A transient progress bar over the epochs; yields the call that advances it."""
    if not enabled:
        yield lambda info: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        transient=True,
    ) as progress:
        task = progress.add_task(label, total=epochs, info="")
        yield lambda info: progress.update(task, advance=1, info=info)
