"""What the neural detectors share: their training settings and their training loop.

The LSTM autoencoder (:mod:`models.anomaly.autoencoder`) and the ConvLSTM correlation
detector (:mod:`models.anomaly.correlation`) differ in their network, samples and loss,
but train alike: Adam with gradient clipping over shuffled mini-batches, and early
stopping on a validation score, keeping the best weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from models.nn.training import load_module_tensors, module_tensors, seeded
from models.panel import SensorPanel

# Weights sit under this prefix in a detector bundle, beside its calibration pools.
_PREFIX = "module."


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
    optim = torch.optim.Adam(module.parameters(), lr=config.lr)
    best, best_state, stale = float("inf"), None, 0
    train_loss: list[float] = []
    with seeded(config.seed):
        for _ in range(config.epochs):
            module.train()
            order = torch.as_tensor(rng.permutation(n_samples), device=device)
            total = torch.zeros((), device=device)
            for start in range(0, n_samples, config.batch_size):
                b = order[start : start + config.batch_size]
                loss = batch_loss(b)
                optim.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(module.parameters(), 1.0)
                optim.step()
                total += loss.detach() * len(b)
            train_loss.append(float(total) / max(n_samples, 1))
            if valid_score is None:
                continue
            score = valid_score()
            if score < best - min_gain:
                best, stale = score, 0
                best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
            else:
                stale += 1
                if stale >= config.patience:
                    break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return train_loss
