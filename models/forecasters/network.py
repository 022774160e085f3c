"""What the forecasters around one torch network share (LSTM/GRU, TGC-LSTM).

Each trains its network with :func:`models.nn.training.fit_network` and says which module
and which :class:`~models.nn.inputs.InputSpec` it uses (:meth:`NetworkForecaster.network`,
:meth:`NetworkForecaster.input_spec`); prediction, the end of ``fit``, the bundle's common
keys and the placement of a loaded network are the same for all of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from models.bundle import save_bundle
from models.forecasters.base import BatchForecast, ForecasterBase, forecaster_config
from models.forecasters.evaluation import finish_fit
from models.forecasters.windows import check_origins
from models.nn.devices import resolve_device
from models.nn.inputs import InputSpec, Scaler
from models.nn.training import TrainConfig, predict_network
from models.nn.weights import module_tensors
from models.panel import SensorPanel

M = TypeVar("M", bound=nn.Module)


class NetworkForecaster(ForecasterBase):
    """A forecaster whose ``predict_batch`` runs one trained network on scaled inputs."""

    scaler: Scaler | None = None
    device: torch.device  # where the network predicts

    def network(self) -> nn.Module | None:
        """The trained network, or None before ``fit``/``load``."""
        raise NotImplementedError(f"{type(self).__name__} must implement network")

    def input_spec(self) -> InputSpec:
        """The inputs the network reads at each step."""
        raise NotImplementedError(f"{type(self).__name__} must implement input_spec")

    def predict_batch(self, panel: SensorPanel, origins: np.ndarray) -> BatchForecast:
        """Forecasts ``[n, horizon, node]`` from each origin of ``panel`` (original scale)."""
        self.check_panel(panel)
        module = self.network()
        if module is None or self.scaler is None:
            raise RuntimeError(f"{self.name}: call fit() or load() before predicting")
        origins = check_origins(panel, origins, self.window)
        mean = predict_network(
            module,
            panel,
            origins,
            window=self.window,
            scaler=self.scaler,
            spec=self.input_spec(),
            device=self.device,
        )
        return self.with_intervals(origins, mean, panel)

    def finish_network_fit(
        self, panel: SensorPanel, valid: SensorPanel | None, device: str
    ) -> None:
        """The end of ``fit``, once the network is trained on ``device`` (a
        :class:`TrainConfig` device spec): predict there, then
        :func:`models.forecasters.evaluation.finish_fit` (intervals, fingerprint, validation
        metrics)."""
        self.device = resolve_device(device)
        finish_fit(self, panel, valid)

    def save_network(self, directory: str | Path, train: TrainConfig, **extra: Any) -> None:
        """Save the network's weights and ``config.json`` with the scaler, inputs and
        ``train`` options, then ``extra`` keys (in that order)."""
        module = self.network()
        if module is None or self.scaler is None:
            raise RuntimeError(f"{self.name}: call fit() before save()")
        config = forecaster_config(
            self,
            self.describe(),
            scaler=self.scaler.to_dict(),
            inputs=list(self.input_spec().names),
            train=train.to_dict(),
            **extra,
        )
        save_bundle(directory, config=config, tensors=module_tensors(module))

    def place_loaded(self, module: M) -> M:
        """``module`` (weights just loaded) in eval mode on ``auto`` (CUDA when present,
        else CPU), whatever device it was trained on; predictions then run there."""
        self.device = resolve_device("auto")
        return module.to(self.device).eval()
