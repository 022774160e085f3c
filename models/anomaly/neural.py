"""What the neural detectors share: their settings, bundle weights and training.

The LSTM autoencoder (:mod:`models.anomaly.autoencoder`) and the ConvLSTM correlation
detector (:mod:`models.anomaly.correlation`) differ in their network, samples and loss,
but train alike in :func:`models.nn.loop.train_loop`: Adam with gradient clipping over
mini-batches shuffled by a numpy generator, and early stopping on a validation score,
keeping the best weights.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from models.anomaly.base import DetectorError
from models.nn.loop import BatchLoss, LoopSettings, train_loop
from models.nn.weights import load_module_tensors, module_tensors
from models.panel import SensorPanel

# Weights sit under this prefix in a detector bundle, beside its calibration pools.
_PREFIX = "module."
# Max global gradient norm of every detector network.
_GRAD_CLIP = 1.0


def standardizer(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread over time (axis 0) of the observed ``values``; a series with no
    reading, or a constant one, gets mean 0 and spread 1 without a warning."""
    with warnings.catch_warnings(action="ignore", category=RuntimeWarning):
        observed = np.where(mask, values, np.nan)
        mean, std = np.nanmean(observed, axis=0), np.nanstd(observed, axis=0)
    return np.nan_to_num(mean, nan=0.0), np.where(np.isfinite(std) & (std > 1e-9), std, 1.0)


@dataclass(frozen=True, kw_only=True)
class NetworkDetectorConfig:
    """Settings every neural detector has (keyword-only, after the detector's own ones).

    epochs, batch_size, lr, patience : training (Adam, early stopping on the validation
    score). max_windows : training samples drawn at most (large networks). seed : of the
    weights and the sampling. online : keep calibrating on the stream. capacity,
    min_count : of the calibration pools. feature : the feature reported as
    observed/expected for 3-D panels. device : ``"cpu"``, ``"cuda"`` or ``"auto"``.
    """

    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    patience: int = 5
    max_windows: int = 20000
    seed: int = 0
    online: bool = False
    capacity: int = 4096
    min_count: int = 20
    feature: int = 0
    device: str = "cpu"


def network_tensors(module: nn.Module) -> dict[str, np.ndarray]:
    """The network's weights as bundle tensors (CPU numpy), named ``module.<parameter>``."""
    return {f"{_PREFIX}{k}": v for k, v in module_tensors(module).items()}


def load_network_tensors(module: nn.Module, tensors: dict[str, np.ndarray]) -> None:
    """Load the ``module.*`` tensors of a bundle into ``module`` and leave it in eval mode.

    Raises
    ------
    ValueError
        When the weights do not fit the network (another architecture or version).
    """
    own = {k.removeprefix(_PREFIX): v for k, v in tensors.items() if k.startswith(_PREFIX)}
    load_module_tensors(module, own)
    module.eval()


def split_valid(panel: SensorPanel, valid: SensorPanel | None) -> tuple[SensorPanel, SensorPanel]:
    """``(panel, valid)``, or when ``valid`` is None the first 80 % and last 20 % of ``panel``."""
    if valid is not None:
        return panel, valid
    cut = int(panel.n_time * 0.8)
    return panel.slice(0, cut), panel.slice(cut, panel.n_time)


def split_windows(
    panel: SensorPanel, valid: SensorPanel | None, window: int, who: str
) -> tuple[SensorPanel, SensorPanel]:
    """:func:`split_valid`, refused unless the training part has more than ``window`` steps
    and the validation part at least ``window`` (``who`` names the detector in the error)."""
    panel, valid = split_valid(panel, valid)
    if panel.n_time < window + 1 or valid.n_time < window:
        raise DetectorError(
            f"{who} needs more than {window} training and {window} validation "
            f"steps, got {panel.n_time} and {valid.n_time}; use a shorter window"
        )
    return panel, valid


def train_network(
    module: nn.Module,
    n_samples: int,
    batch_loss: Callable[[Tensor], Tensor],
    valid_score: Callable[[], float] | None,
    config: NetworkDetectorConfig,
    rng: np.random.Generator,
    device: torch.device,
    *,
    min_gain: float,
) -> list[float]:
    """Train ``module`` in place and return the mean training loss of each epoch.

    Parameters
    ----------
    n_samples : how many training samples there are.
    batch_loss : the loss of the samples at the given indices (a 1-D index tensor).
    valid_score : the validation score of the current weights (lower is better), or
        None to train all ``config.epochs`` without early stopping.
    rng : shuffles the samples each epoch.
    min_gain : how much lower a validation score must be to count as better; after
        ``config.patience`` epochs without one, training stops.

    The weights of the best validation score are restored at the end, and the module is
    left in eval mode.
    """

    def batch(rows: Tensor) -> BatchLoss:
        loss = batch_loss(rows)
        return BatchLoss(loss, loss.detach() * len(rows), len(rows))

    settings = LoopSettings(
        epochs=config.epochs,
        batch_size=config.batch_size,
        seed=config.seed,
        # Training stops only after an epoch without a gain: a patience below 1 acts as 1.
        patience=max(config.patience, 1),
        min_gain=min_gain,
        grad_clip=_GRAD_CLIP,
    )
    result = train_loop(
        module,
        torch.optim.Adam(module.parameters(), lr=config.lr),
        order=lambda: torch.as_tensor(rng.permutation(n_samples), device=device),
        batch_loss=batch,
        valid_score=valid_score,
        settings=settings,
        device=device,
    )
    return result.train_loss
