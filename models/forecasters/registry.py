"""The one registry of forecasting models: ``{name: class}``.

Add a model by importing its class here; there is no runtime registration.
"""

from __future__ import annotations

from pathlib import Path

from models.bundle import BundleError, read_bundle
from models.forecasters.ar import AutoRegressive
from models.forecasters.base import Forecaster
from models.forecasters.baselines import Persistence, Seasonal
from models.forecasters.rnn import GRUForecaster, LSTMForecaster
from models.forecasters.tgclstm import TGCLSTM

MODELS: dict[str, type[Forecaster]] = {
    "persistence": Persistence,
    "seasonal": Seasonal,
    "ar": AutoRegressive,
    "lstm": LSTMForecaster,
    "gru": GRUForecaster,
    "tgclstm": TGCLSTM,
}


def model_class(name: str) -> type[Forecaster]:
    """The class registered as ``name``, or a ValueError listing the known names."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}"
        ) from None


def load_model(directory: str | Path) -> Forecaster:
    """Rebuild the model saved in ``directory``, whatever its kind (via the registry)."""
    bundle = read_bundle(directory)
    try:
        cls = model_class(bundle.model)
    except ValueError as exc:
        raise BundleError(f"bundle {directory}: {exc}") from None
    try:
        return cls.load(directory)
    except BundleError:
        raise
    except Exception as exc:  # fields its loader expects are missing, mistyped or too large
        detail = " ".join(str(exc).split())[:500]
        raise BundleError(
            f"bundle {directory} cannot be rebuilt as a {bundle.model!r} model "
            f"({type(exc).__name__}: {detail}); retrain it or copy the bundle again"
        ) from None
