"""LSTM-autoencoder detector: how badly the recent window of a sensor is reconstructed.

Architecture (the seed lecture's Keras model, built from the project's one recurrent
cell, :class:`models.nn.recurrent.GatedCell`, so that it shares the LSTM equations of the
forecasters)::

    LSTM 64 (every step) -> Dropout 0.2 -> LSTM 32 (last state) -> RepeatVector(window)
        -> LSTM 64 (every step) -> Dropout 0.2 -> Dense(features) at every step

The autoencoder is trained on windows of ``window`` steps of every sensor (one shared
model, values standardised per sensor and feature on training data), so that it learns
what normal windows look like. The statistic of a window is its mean absolute
reconstruction error over the observed entries; its conformal p-value against the
errors of the validation windows of the same sensor (the calibrated threshold) gives
the score ``1 - p``. ``expected`` is the reconstruction of the window's last step: what a
normal window would have ended with.

Streaming: the detector keeps the last ``window`` ticks; a sensor is scored once it has
a full window. Missing entries are filled with the last observed value of the window
(or the sensor's training mean) and left out of the error.
"""

from __future__ import annotations

from collections import deque
from copy import deepcopy
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar, Self

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from models.anomaly.base import (
    Detection,
    DetectionBatch,
    DetectorError,
    StreamingDetector,
    check_tick,
    describe_config,
    read_detector_bundle,
    save_detector_bundle,
    word_reasons,
)
from models.anomaly.calibration import ConformalPool
from models.anomaly.neural import (
    NetworkDetectorConfig,
    load_network_tensors,
    network_tensors,
    split_windows,
    standardizer,
    train_network,
)
from models.nn.devices import resolve_device, seeded
from models.nn.recurrent import GatedCell, run_cell
from models.panel import SensorPanel


@dataclass(frozen=True)
class AutoencoderConfig(NetworkDetectorConfig):
    """Settings of :class:`AutoencoderDetector` (defaults: the lecture's architecture).

    window : steps per window. encoder / bottleneck : LSTM sizes (64, 32).
    dropout : after the first encoder and the decoder LSTM. Training, calibration and
    device settings: :class:`models.anomaly.neural.NetworkDetectorConfig` (early
    stopping on the mean reconstruction error of the validation windows).
    """

    window: int = 12
    encoder: int = 64
    bottleneck: int = 32
    dropout: float = 0.2

    def __post_init__(self) -> None:
        if self.window < 2:
            raise DetectorError(f"window must be >= 2 steps, got {self.window}")
        if min(self.encoder, self.bottleneck, self.epochs, self.batch_size) < 1:
            raise DetectorError("encoder, bottleneck, epochs and batch_size must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise DetectorError(f"dropout must be in [0, 1), got {self.dropout}")


class LSTMAutoencoder(nn.Module):
    """``x`` ``[batch, window, feature]`` -> its reconstruction, same shape."""

    def __init__(
        self, n_features: int, window: int, encoder: int, bottleneck: int, dropout: float
    ) -> None:
        super().__init__()
        self.window = window
        self.encode1 = GatedCell(n_features, encoder)
        self.encode2 = GatedCell(encoder, bottleneck)
        self.decode = GatedCell(bottleneck, encoder)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(encoder, n_features)

    def forward(self, x: Tensor) -> Tensor:
        h1, _ = run_cell(self.encode1, x)  # [batch, window, encoder]
        _, state = run_cell(self.encode2, self.drop(h1))
        code = state[0]  # [batch, bottleneck]: the whole window in one vector
        repeated = code[:, None, :].expand(-1, x.shape[1], -1)  # [batch, window, bottleneck]
        h3, _ = run_cell(self.decode, repeated)  # [batch, window, encoder]
        return self.out(self.drop(h3))  # [batch, window, feature]


def _as_3d(panel: SensorPanel) -> tuple[np.ndarray, np.ndarray]:
    if panel.values.ndim == 3:
        return panel.values.astype(np.float64), panel.mask
    return panel.values[:, :, None].astype(np.float64), panel.mask[:, :, None]


def _fill(windows: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Scaled windows ``[n, window, feature]``: missing entries take the last observed
    value of the window, else 0 (the training mean)."""
    observed = np.where(mask, windows, 0.0)
    steps = np.arange(windows.shape[1])[None, :, None]
    last = np.where(mask, steps, 0)
    np.maximum.accumulate(last, axis=1, out=last)  # index of the last observation so far
    return np.take_along_axis(observed, last, axis=1)


class AutoencoderDetector(StreamingDetector):
    """Reconstruction-error detector (see module doc)."""

    name: ClassVar[str] = "autoencoder"

    def __init__(self, config: AutoencoderConfig | None = None) -> None:
        self.config = config or AutoencoderConfig()
        self.sensor_ids: tuple[str, ...] = ()
        self.n_features = 1
        self.mean = np.zeros((0, 1))  # [node, feature]
        self.std = np.ones((0, 1))  # [node, feature]
        self.module: LSTMAutoencoder | None = None
        self.errors: ConformalPool | None = None
        self._fitted_errors: ConformalPool | None = None  # what reset returns to
        self.train_loss: list[float] = []
        self._buffer: deque[tuple[np.ndarray, np.ndarray]] = deque()

    @property
    def n_nodes(self) -> int:
        return len(self.sensor_ids)

    # --- windows ----------------------------------------------------------------------

    def _windows(self, panel: SensorPanel) -> tuple[np.ndarray, np.ndarray]:
        """Every full window of every sensor: scaled values and mask ``[n, window, feature]``,
        sensor-major (windows of sensor 0 first)."""
        values, mask = _as_3d(panel)
        scaled = (values - self.mean[None]) / self.std[None]  # [time, node, feature]
        w = self.config.window
        n = panel.n_time - w + 1
        if n < 1:
            return np.empty((0, w, self.n_features)), np.empty((0, w, self.n_features), bool)
        idx = np.arange(n)[:, None] + np.arange(w)[None, :]  # [n, window]
        win = scaled[idx].transpose(2, 0, 1, 3).reshape(-1, w, self.n_features)
        msk = mask[idx].transpose(2, 0, 1, 3).reshape(-1, w, self.n_features)
        return win, msk

    def _errors(self, win: np.ndarray, msk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Window statistics ``[n]`` (masked mean absolute error) and reconstructions."""
        assert self.module is not None
        device = next(self.module.parameters()).device
        self.module.eval()
        recon = np.empty_like(win)
        with torch.no_grad():
            for start in range(0, len(win), 4096):
                x = torch.as_tensor(
                    _fill(win[start : start + 4096], msk[start : start + 4096]),
                    dtype=torch.float32,
                    device=device,
                )
                recon[start : start + 4096] = self.module(x).cpu().numpy()
        err = np.abs(recon - np.where(msk, win, 0.0)) * msk
        count = msk.sum(axis=(1, 2))
        stat = np.where(count > 0, err.sum(axis=(1, 2)) / np.maximum(count, 1), np.nan)
        return stat, recon

    # --- fitting ----------------------------------------------------------------------

    def fit(self, panel: SensorPanel, *, valid: SensorPanel | None = None) -> Self:
        """Train on ``panel``'s windows, calibrate on ``valid``'s (default: last 20 %)."""
        self.record_grid(panel)
        c = self.config
        panel, valid = split_windows(panel, valid, c.window, "autoencoder")
        self.sensor_ids = tuple(panel.sensor_ids)
        values, mask = _as_3d(panel)
        self.n_features = values.shape[2]
        self.mean, self.std = standardizer(values, mask)  # [node, feature]
        device = resolve_device(c.device)
        with seeded(c.seed):
            self.module = LSTMAutoencoder(
                self.n_features, c.window, c.encoder, c.bottleneck, c.dropout
            ).to(device)
        train_w, train_m = self._windows(panel)
        keep = train_m.any(axis=(1, 2))
        train_w, train_m = train_w[keep], train_m[keep]
        rng = np.random.default_rng(c.seed)
        if len(train_w) > c.max_windows:
            pick = rng.choice(len(train_w), c.max_windows, replace=False)
            train_w, train_m = train_w[pick], train_m[pick]
        valid_w, valid_m = self._windows(valid)
        self._train(train_w, train_m, valid_w, valid_m, device, rng)
        self.errors = ConformalPool(self.n_nodes, c.capacity, c.min_count)
        self._calibrate(valid)
        self._fitted_errors = deepcopy(self.errors)
        self.reset()
        return self

    def _train(
        self,
        win: np.ndarray,
        msk: np.ndarray,
        valid_w: np.ndarray,
        valid_m: np.ndarray,
        device: torch.device,
        rng: np.random.Generator,
    ) -> None:
        module = self.module
        assert module is not None
        x_all = torch.as_tensor(_fill(win, msk), dtype=torch.float32, device=device)
        m_all = torch.as_tensor(msk, dtype=torch.float32, device=device)
        target = torch.where(
            m_all > 0, torch.as_tensor(win, dtype=torch.float32, device=device).nan_to_num(), 0.0
        )

        def batch_loss(b: Tensor) -> Tensor:
            recon = module(x_all[b])  # [batch, window, feature]
            return (((recon - target[b]) ** 2) * m_all[b]).sum() / m_all[b].sum().clamp(min=1.0)

        def valid_score() -> float:
            stat, _ = self._errors(valid_w, valid_m)
            return float(np.nanmean(stat)) if np.isfinite(stat).any() else float("inf")

        self.train_loss = train_network(
            module,
            len(win),
            batch_loss,
            valid_score if len(valid_w) else None,
            self.config,
            rng,
            device,
            min_gain=1e-6,
        )

    def _calibrate(self, valid: SensorPanel) -> None:
        """Add the reconstruction errors of ``valid``'s windows to the calibration pools."""
        if self.errors is None or self.module is None:
            raise DetectorError("fit the autoencoder detector before calibrating it")
        win, msk = self._windows(valid)
        stat, _ = self._errors(win, msk)
        per_node = stat.reshape(self.n_nodes, -1).T  # [n_windows, node]
        self.errors.extend(per_node)

    def start(self, head: SensorPanel) -> Self:
        """Fit on ``head``'s rows (NAB's probationary rows) and keep calibrating online."""
        self.config = replace(self.config, online=True)
        return self.fit(head)

    # --- streaming --------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the recent window and what the stream calibrated."""
        self._buffer.clear()
        if self._fitted_errors is not None:
            self.errors = deepcopy(self._fitted_errors)

    def update(self, ts: pd.Timestamp, values: np.ndarray, mask: np.ndarray) -> Detection:
        """Score the window that ends with this tick."""
        if self.module is None or self.errors is None:
            raise DetectorError("the autoencoder detector is not fitted; call fit() or start()")
        values = np.asarray(values, dtype=np.float64)
        mask = np.asarray(mask, dtype=bool)
        if values.ndim == 1:
            values, mask = values[:, None], mask[:, None]
        x, m = check_tick(values, mask, self.n_nodes, self.n_features)
        self._buffer.append((x, m))
        while len(self._buffer) > self.config.window:
            self._buffer.popleft()
        f = self.config.feature if self.n_features > 1 else 0
        observed = x[:, f].astype(np.float32)
        score = np.zeros(self.n_nodes, np.float32)
        expected = np.full(self.n_nodes, np.nan, np.float32)
        if len(self._buffer) < self.config.window:
            return Detection(self.name, pd.Timestamp(ts), score, observed, expected)
        vals = np.stack([v for v, _ in self._buffer], axis=1)  # [node, window, feature]
        msk = np.stack([k for _, k in self._buffer], axis=1)
        scaled = (np.nan_to_num(vals) - self.mean[:, None, :]) / self.std[:, None, :]
        stat, recon = self._errors(scaled, msk)  # [node], [node, window, feature]
        p = self.errors.pvalues(stat)
        score = np.where(np.isfinite(p), 1.0 - p, 0.0).astype(np.float32)
        expected = (recon[:, -1, f] * self.std[:, f] + self.mean[:, f]).astype(np.float32)
        if self.config.online:
            self.errors.append(stat)
        reasons = word_reasons(
            score,
            lambda i: (
                f"the last {self.config.window} readings are reconstructed with error "
                f"{stat[i]:.3g} (std units), more than {1 - p[i]:.1%} of normal windows; "
                f"a normal window would end near {expected[i]:.4g}"
            ),
        )
        return Detection(
            self.name, pd.Timestamp(ts), score, observed, expected, None, None, reasons
        )

    def score_batch(self, panel: SensorPanel) -> DetectionBatch:
        """What :meth:`score_panel` returns (without reasons), with every window
        reconstructed in one batch: the statistic of a window does not depend on the
        state, only the calibration pool does, and it is updated tick by tick."""
        if self.module is None or self.errors is None:
            raise DetectorError("the autoencoder detector is not fitted; call fit() or start()")
        self.reset()
        w, f = self.config.window, (self.config.feature if self.n_features > 1 else 0)
        values, mask = _as_3d(panel)
        score = np.zeros((panel.n_time, self.n_nodes), np.float32)  # [time, node]
        expected = np.full((panel.n_time, self.n_nodes), np.nan, np.float32)
        if panel.n_time >= w:
            win, msk = self._windows(panel)
            stat, recon = self._errors(win, msk)
            n = panel.n_time - w + 1
            stats = stat.reshape(self.n_nodes, n).T  # [n, node]
            last = recon[:, -1, f].reshape(self.n_nodes, n).T  # [n, node]
            expected[w - 1 :] = last * self.std[:, f] + self.mean[:, f]
            for k in range(n):
                p = self.errors.pvalues(stats[k])
                score[k + w - 1] = np.where(np.isfinite(p), 1.0 - p, 0.0)
                if self.config.online:
                    self.errors.append(stats[k])
        for t in range(max(panel.n_time - w, 0), panel.n_time):
            self._buffer.append((np.where(mask[t], values[t], np.nan), mask[t]))
        observed = np.where(mask[:, :, f], values[:, :, f], np.nan).astype(np.float32)
        return DetectionBatch(
            self.name, panel.timestamps, panel.sensor_ids, score, observed, expected
        )

    # --- persistence ------------------------------------------------------------------

    def save(self, directory: str | Path) -> None:
        """Weights, scaler and fitted calibration pools (safetensors) plus config (JSON)."""
        if self.module is None or self._fitted_errors is None:
            raise DetectorError("fit the autoencoder detector before saving it")
        tensors = network_tensors(self.module)
        tensors.update(self._fitted_errors.state("errors"))
        tensors["scaler.mean"] = self.mean.astype(np.float64)
        tensors["scaler.std"] = self.std.astype(np.float64)
        save_detector_bundle(
            directory,
            self,
            window=self.config.window,
            settings=describe_config(self.config),
            tensors=tensors,
            n_features=self.n_features,
        )

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        """A saved detector, on the CPU whatever device it was trained on."""
        bundle = read_detector_bundle(directory, cls.name)
        config = AutoencoderConfig(**{**bundle.config["detector"], "device": "cpu"})
        detector = cls(config)
        detector.sensor_ids = tuple(bundle.config["sensor_ids"])
        detector.n_features = int(bundle.config["n_features"])
        detector.mean = bundle.tensor("scaler.mean")
        detector.std = bundle.tensor("scaler.std")
        module = LSTMAutoencoder(
            detector.n_features, config.window, config.encoder, config.bottleneck, config.dropout
        )
        load_network_tensors(module, bundle.tensors)
        detector.module = module
        detector.errors = ConformalPool.from_state(bundle.tensors, "errors")
        detector._fitted_errors = deepcopy(detector.errors)
        return detector
