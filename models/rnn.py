"""Network-wide LSTM and GRU forecasters (the recurrent baselines of the TGC-LSTM paper).

At each input step the network sees one vector: every sensor's scaled value and
observed flag, plus the calendar features (time of day, weekend) once. The shared
``GatedCell``/``run_cell`` of ``models.recurrent`` runs over the window (gates as in
the seed lecture's equations) and a linear head maps the last hidden state to the next
``horizon`` steps of every sensor. With ``residual=True`` the head predicts the change
from the last observed value of each sensor (persistence plus a learned correction),
which trains faster and is never worse than persistence at the start of training.
Training, scaling and missing-value handling are the engine's (``models.training``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import torch
from torch import Tensor, nn

from models.base import BatchForecast, ForecasterBase
from models.bundle import (
    forecaster_config,
    read_model_bundle,
    restore_forecaster,
    save_bundle,
)
from models.evaluation import finish_fit
from models.panel import SensorPanel
from models.recurrent import CellKind, GatedCell, run_cell
from models.training import (
    InputSpec,
    Scaler,
    TrainConfig,
    TrainHistory,
    fit_network,
    load_module_tensors,
    module_tensors,
    predict_network,
    resolve_device,
    seeded,
)
from models.windows import check_2d, check_origins


class NetworkRNN(nn.Module):
    """``[batch, window, node, feature]`` -> ``[batch, horizon, node]`` (scaled units).

    Parameters
    ----------
    n_nodes : sensors in the network.
    spec : the input features (``models.training.InputSpec``).
    hidden : size of the recurrent state.
    horizon : steps forecast.
    kind : ``"lstm"`` or ``"gru"``.
    dropout : dropout on the input vector and on the last hidden state.
    residual : add each sensor's last input value to the output.
    """

    def __init__(
        self,
        n_nodes: int,
        spec: InputSpec,
        *,
        hidden: int,
        horizon: int,
        kind: CellKind,
        dropout: float = 0.0,
        residual: bool = True,
    ) -> None:
        super().__init__()
        names = spec.names
        node_idx = [names.index(n) for n in names if n not in spec.time_names]
        time_idx = [names.index(n) for n in spec.time_names]
        self.register_buffer("node_idx", torch.tensor(node_idx), persistent=False)
        self.register_buffer("time_idx", torch.tensor(time_idx, dtype=torch.long),
                             persistent=False)
        self.n_nodes = n_nodes
        self.horizon = horizon
        self.residual = residual
        self.cell = GatedCell(n_nodes * len(node_idx) + len(time_idx), hidden, kind)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, horizon * n_nodes)

    def forward(self, x: Tensor) -> Tensor:
        batch, window, nodes, _ = x.shape
        per_node = x.index_select(-1, self.node_idx).reshape(batch, window, -1)  # [b, w, n*f]
        calendar = x[:, :, 0].index_select(-1, self.time_idx)  # [batch, window, time_feature]
        inputs = self.drop(torch.cat([per_node, calendar], dim=-1))  # [batch, window, input]
        _, state = run_cell(self.cell, inputs)
        out = self.head(self.drop(state[0])).view(batch, self.horizon, nodes)  # [b, h, node]
        if self.residual:
            out = out + x[:, -1, :, 0].unsqueeze(1)
        return out


class RecurrentForecaster(ForecasterBase):
    """Shared code of the LSTM and GRU forecasters (``KIND`` picks the cell)."""

    KIND: ClassVar[CellKind] = "lstm"
    DEFAULT_TRAIN: ClassVar[TrainConfig] = TrainConfig()

    def __init__(
        self,
        *,
        window: int = 12,
        horizon: int = 12,
        level: float = 0.9,
        hidden: int = 128,
        dropout: float = 0.0,
        residual: bool = True,
        time_of_day: bool = True,
        day_of_week: bool = False,
        mask: bool = True,
        train: TrainConfig | None = None,
    ) -> None:
        if window < 1 or horizon < 1 or hidden < 1:
            raise ValueError(f"window, horizon and hidden must be >= 1, got {window}, "
                             f"{horizon}, {hidden}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if not 0.0 < level < 1.0:
            raise ValueError(f"interval level must be in (0, 1), got {level}")
        self.window = window
        self.horizon = horizon
        self.level = level
        self.hidden = hidden
        self.dropout = dropout
        self.residual = residual
        self.spec = InputSpec(time_of_day=time_of_day, day_of_week=day_of_week, mask=mask)
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
                residual=self.residual,
            )

    def fit(self, panel: SensorPanel, *, valid: SensorPanel | None = None) -> Self:
        check_2d(panel, self.name)
        self.sensor_ids = panel.sensor_ids
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
        self.device = resolve_device(self.train.device)
        finish_fit(self, panel, valid)
        return self

    def predict_batch(self, panel: SensorPanel, origins: np.ndarray) -> BatchForecast:
        self.check_panel(panel)
        if self.module is None or self.scaler is None:
            raise RuntimeError(f"{self.name}: call fit() or load() before predicting")
        origins = check_origins(panel, origins, self.window)
        mean = predict_network(
            self.module,
            panel,
            origins,
            window=self.window,
            scaler=self.scaler,
            spec=self.spec,
            device=self.device,
        )
        return self.with_intervals(origins, mean)

    def describe(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "horizon": self.horizon,
            "level": self.level,
            "hidden": self.hidden,
            "dropout": self.dropout,
            "residual": self.residual,
            "time_of_day": self.spec.time_of_day,
            "day_of_week": self.spec.day_of_week,
            "mask": self.spec.mask,
        }

    def save(self, directory: str | Path) -> None:
        if self.module is None or self.scaler is None:
            raise RuntimeError(f"{self.name}: call fit() before save()")
        config = forecaster_config(
            self,
            self.describe(),
            scaler=self.scaler.to_dict(),
            inputs=list(self.spec.names),
            train=self.train.to_dict(),
            history=None if self.history is None else self.history.to_dict(),
        )
        save_bundle(directory, config=config, tensors=module_tensors(self.module))

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        """Rebuild from a bundle; the module goes to ``auto`` (CUDA when present, else CPU),
        whatever device it was trained on."""
        bundle = read_model_bundle(directory, cls.name)
        config = bundle.config
        train = replace(TrainConfig.from_dict(config["train"]), device="auto")
        model = cls(**config["hyper"], train=train)
        restore_forecaster(model, config)
        model.scaler = Scaler.from_dict(config["scaler"])
        module = model._build(len(model.sensor_ids))
        load_module_tensors(module, bundle.tensors)
        model.device = resolve_device("auto")
        model.module = module.to(model.device).eval()
        return model


class LSTMForecaster(RecurrentForecaster):
    """Network-wide LSTM (registered as ``"lstm"``)."""

    name: ClassVar[str] = "lstm"
    KIND: ClassVar[CellKind] = "lstm"


class GRUForecaster(RecurrentForecaster):
    """Network-wide GRU (registered as ``"gru"``)."""

    name: ClassVar[str] = "gru"
    KIND: ClassVar[CellKind] = "gru"
