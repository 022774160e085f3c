"""A module's weights as bundle arrays, and copies of them during training."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn


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
        When keys or shapes differ (a bundle from another architecture or version), or
        a weight is NaN or infinite (a diverged fit, or an edited file).
    """
    for name, array in tensors.items():
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            raise ValueError(
                f"bundle weight {name!r} holds NaN or infinite values (a diverged fit or an "
                "edited file); retrain the model"
            )
    state = {k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(
            f"bundle weights do not fit the {type(module).__name__} architecture "
            f"({' '.join(str(exc).split())[:300]}); "
            "retrain the bundle with this version"
        ) from None


def state_copy(module: nn.Module) -> dict[str, Tensor]:
    """A detached copy of the module's state, on its device (to restore the best weights)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}
