"""Build a registered model by name from command-line style options.

Conventions a model class follows to be built here (no introspection):

* its constructor takes keyword hyper-parameters with defaults, including ``window``,
  ``horizon`` and ``level``;
* a neural model sets the class constant ``DEFAULT_TRAIN: ClassVar[TrainConfig]`` and
  takes ``train: TrainConfig`` in its constructor; the seed, device, epochs and
  progress options replace those fields of ``DEFAULT_TRAIN``. A model without
  ``DEFAULT_TRAIN`` is deterministic: one fit serves every seed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from models.forecasters.base import Forecaster
from models.forecasters.registry import model_class
from models.nn.training import TrainConfig


def default_train(name: str) -> TrainConfig | None:
    """The model's default training configuration, or None for a non-neural model."""
    return getattr(model_class(name), "DEFAULT_TRAIN", None)


def is_stochastic(name: str) -> bool:
    """True when fits with different seeds differ (neural models)."""
    return default_train(name) is not None


def build_model(
    name: str,
    *,
    window: int = 12,
    horizon: int = 12,
    level: float = 0.9,
    seed: int = 0,
    device: str = "auto",
    epochs: int | None = None,
    progress: bool | None = None,
    epoch_windows: int | None = None,
    train: dict[str, Any] | None = None,
    **overrides: Any,
) -> Forecaster:
    """A fresh, unfitted ``name`` model.

    Parameters
    ----------
    window, horizon, level : passed to every model.
    seed, device, epochs, progress, epoch_windows : training options of neural models
        (ignored by the others); ``epochs=None`` keeps the model's default,
        ``epoch_windows=None`` trains every window each epoch.
    train : further ``TrainConfig`` fields for neural models, e.g. ``{"lr": 3e-3}``.
    overrides : other constructor keywords of that model (e.g. ``hidden=64``).

    Raises
    ------
    ValueError
        For an unknown model name, or training options given to a non-neural model.
    """
    cls = model_class(name)
    kwargs: dict[str, Any] = {"window": window, "horizon": horizon, "level": level, **overrides}
    base = default_train(name)
    if base is not None:
        changes: dict[str, Any] = {"seed": seed, "device": device, **(train or {})}
        if epochs is not None:
            changes["epochs"] = epochs
        if progress is not None:
            changes["progress"] = progress
        if epoch_windows is not None:
            changes["epoch_windows"] = epoch_windows
        kwargs["train"] = replace(base, **changes)
    elif train:
        raise ValueError(f"model {name!r} is not trained by gradient descent; drop {train}")
    return cls(**kwargs)  # type: ignore[call-arg]
