"""The one registry of forecasting models: ``{name: class}``.

Add a model by importing its class here; there is no runtime registration.
"""

from __future__ import annotations

from models.ar import AutoRegressive
from models.base import Forecaster
from models.baselines import Persistence, Seasonal
from models.rnn import GRUForecaster, LSTMForecaster
from models.tgclstm import TGCLSTM

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
