"""Network-wide LSTM and GRU forecasters (the recurrent baselines of the TGC-LSTM paper).

At each input step the network sees one vector: every sensor's scaled value and
observed flag, plus the calendar features (time of day, weekend) once. The shared
``GatedCell``/``run_cell`` of ``models.nn.recurrent`` runs over the window (gates as in
the seed lecture's equations) and a linear head maps the last hidden state to the next
``horizon`` steps of every sensor.

A network-wide state of ``hidden`` units cannot carry every sensor's current value when
there are more sensors than units, so the output adds a per-sensor *skip* from the
input window (``skip``): ``"last"`` adds the last value (the network learns a
correction to persistence), ``"linear"`` adds a learned linear map of each sensor's own
``window`` values to its ``horizon`` outputs, initialised to persistence (the
"autoregressive highway" of LSTNet, Lai et al., SIGIR 2018): a per-sensor AR part that
can decay towards the network's forecast at long horizons; ``"none"`` adds nothing.

The defaults were chosen on the los-loop validation part only (``docs/decisions.md``,
LSTM and GRU forecasters). Training is :func:`models.nn.training.fit_network`; scaling
and missing-value handling are :mod:`models.nn.inputs`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, Self

import torch

from models.bundle import read_model_bundle
from models.forecasters.base import restore_forecaster
from models.forecasters.network import NetworkForecaster
from models.forecasters.windows import check_2d
from models.nn.devices import seeded
from models.nn.inputs import SATURDAY_SUNDAY, InputSpec, Scaler, weekend_inputs
from models.nn.recurrent import CellKind
from models.nn.rnn_net import NetworkRNN, SkipKind
from models.nn.training import TrainConfig, TrainHistory, fit_network
from models.nn.weights import load_module_tensors
from models.panel import SensorPanel


class RecurrentForecaster(NetworkForecaster):
    """Shared code of the LSTM and GRU forecasters (``KIND`` picks the cell)."""

    KIND: ClassVar[CellKind] = "lstm"
    # Chosen on the los-loop *validation* part (docs/decisions.md).
    DEFAULT_TRAIN: ClassVar[TrainConfig] = TrainConfig(epochs=200, patience=20, loss="huber")

    def __init__(
        self,
        *,
        window: int = 12,
        horizon: int = 12,
        level: float = 0.9,
        hidden: int = 128,
        dropout: float = 0.6,
        skip: SkipKind = "linear",
        time_of_day: bool = True,
        day_of_week: bool | None = None,
        mask: bool = True,
        weekend_shift: int | None = None,
        rest_days: Sequence[int] | None = None,
        train: TrainConfig | None = None,
    ) -> None:
        if window < 1 or horizon < 1 or hidden < 1:
            raise ValueError(
                f"window, horizon and hidden must be >= 1, got {window}, {horizon}, {hidden}"
            )
        if skip not in ("linear", "last", "none"):
            raise ValueError(f"skip must be 'linear', 'last' or 'none', got {skip!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if not 0.0 < level < 1.0:
            raise ValueError(f"interval level must be in (0, 1), got {level}")
        self.window = window
        self.horizon = horizon
        self.level = level
        self.hidden = hidden
        self.dropout = dropout
        self.skip: SkipKind = skip
        # The weekend flag (None: decided on the training part, see weekend_inputs).
        days = None if rest_days is None else tuple(int(d) for d in rest_days)
        self.weekend = (day_of_week, weekend_shift, days)
        on, shift = (False, 0) if day_of_week is None else (day_of_week, weekend_shift or 0)
        self.spec = InputSpec(time_of_day, on, mask, shift if on else 0, days or SATURDAY_SUNDAY)
        self.train = train if train is not None else self.DEFAULT_TRAIN
        self.sensor_ids = ()
        self.halfwidth = None
        self.module: NetworkRNN | None = None
        self.scaler: Scaler | None = None
        self.history: TrainHistory | None = None
        self.device = torch.device("cpu")
        self.fingerprint: str | None = None
        self.valid_metrics: dict[str, Any] | None = None

    def _build(self, n_nodes: int) -> NetworkRNN:
        with seeded(self.train.seed):
            return NetworkRNN(
                n_nodes,
                self.spec,
                hidden=self.hidden,
                horizon=self.horizon,
                kind=self.KIND,
                dropout=self.dropout,
                skip=self.skip,
                window=self.window,
            )

    def fit(self, panel: SensorPanel, *, valid: SensorPanel | None = None) -> Self:
        check_2d(panel, self.name)
        self.sensor_ids = panel.sensor_ids
        wanted, shift, days = self.weekend
        on, shift, days = weekend_inputs(wanted, shift, panel, self.horizon, days)
        self.spec = replace(self.spec, day_of_week=on, weekend_shift=shift, rest_days=days)
        self.scaler = Scaler.fit(panel)
        self.module = self._build(panel.n_nodes)
        self.history = fit_network(
            self.module,
            panel,
            valid,
            window=self.window,
            horizon=self.horizon,
            scaler=self.scaler,
            spec=self.spec,
            config=self.train,
        )
        self.finish_network_fit(panel, valid, self.train.device)
        return self

    def network(self) -> NetworkRNN | None:
        return self.module

    def input_spec(self) -> InputSpec:
        return self.spec

    def describe(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "horizon": self.horizon,
            "level": self.level,
            "hidden": self.hidden,
            "dropout": self.dropout,
            "skip": self.skip,
            "time_of_day": self.spec.time_of_day,
            "day_of_week": self.spec.day_of_week,
            "mask": self.spec.mask,
            "weekend_shift": self.spec.weekend_shift,
            "rest_days": list(self.spec.rest_days),
        }

    def save(self, directory: str | Path) -> None:
        history = None if self.history is None else self.history.to_dict()
        self.save_network(directory, self.train, history=history)

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        """Rebuild from a bundle; the module goes to ``auto`` (CUDA when present, else CPU),
        whatever device it was trained on."""
        bundle = read_model_bundle(directory, cls.name)
        config = bundle.config
        train = replace(TrainConfig.from_dict(config["train"]), device="auto")
        model = cls(**{"weekend_shift": 0, **config["hyper"]}, train=train)  # 0: older bundles
        restore_forecaster(model, config)
        model.scaler = Scaler.from_dict(config["scaler"])
        module = model._build(len(model.sensor_ids))
        load_module_tensors(module, bundle.tensors)
        model.module = model.place_loaded(module)
        return model


class LSTMForecaster(RecurrentForecaster):
    """Network-wide LSTM (registered as ``"lstm"``)."""

    name: ClassVar[str] = "lstm"
    KIND: ClassVar[CellKind] = "lstm"


class GRUForecaster(RecurrentForecaster):
    """Network-wide GRU (registered as ``"gru"``)."""

    name: ClassVar[str] = "gru"
    KIND: ClassVar[CellKind] = "gru"
