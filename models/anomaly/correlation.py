"""Multi-sensor correlation detector: a ConvLSTM predicts the next correlation matrix.

After Albattah and Rassam, "A Correlation-Based Anomaly Detection Model for Wireless
Body Area Networks Using Convolutional Long Short-Term Memory Neural Network" (the seed
lecture). A node carries several channels (heart rate, SpO2, body temperature, an ECG
feature; or speed, occupancy and flow at one road station). Each tick, the Pearson
correlation matrix ``C_t`` ``[channel, channel]`` of the node's last ``corr_window``
readings is computed; a ConvLSTM reads the previous ``sequence`` matrices as one-channel
images and predicts ``C_t``. Its squared prediction error (off-diagonal entries) is the
statistic; the conformal p-value against the errors on validation data gives the score.

This catches *context* anomalies that no single channel shows: each value normal alone,
abnormal together (a heart rate that rises while the R-R interval does not shorten).
Spikes and level shifts in one channel also change the window's correlations, for as
long as they stay in the window.

ConvLSTM cell (the lecture's equations 8-13, Shi et al. 2015), ``*`` a convolution and
``∘`` the Hadamard product with the peephole weights ``W_c``::

    i_t = σ(W_xi * X_t + W_hi * H_{t-1} + W_ci ∘ C_{t-1} + b_i)
    f_t = σ(W_xf * X_t + W_hf * H_{t-1} + W_cf ∘ C_{t-1} + b_f)
    C_t = f_t ∘ C_{t-1} + i_t ∘ tanh(W_xc * X_t + W_hc * H_{t-1} + b_c)
    o_t = σ(W_xo * X_t + W_ho * H_{t-1} + W_co ∘ C_t + b_o)
    H_t = o_t ∘ tanh(C_t)

The gates are convolutions over the matrix, so this cell cannot be the dense
:class:`models.nn.recurrent.GatedCell`; it keeps that cell's gate order and forget-gate
bias of 1.
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
    split_valid,
    train_network,
)
from models.nn.devices import resolve_device, seeded
from models.panel import SensorPanel


@dataclass(frozen=True)
class CorrelationConfig(NetworkDetectorConfig):
    """Settings of :class:`CorrelationDetector`.

    corr_window : readings per correlation matrix. sequence : past matrices the ConvLSTM
    reads, ``stride`` ticks apart (default ``corr_window``: disjoint past windows, so the
    prediction of the current window's matrix shares no reading with its input and says
    what the correlations *should* be, not what they were a minute ago). hidden, kernel :
    ConvLSTM channels and kernel size. Training, calibration and device settings:
    :class:`models.anomaly.neural.NetworkDetectorConfig` (early stopping on the mean
    statistic of the validation samples).
    """

    corr_window: int = 30
    sequence: int = 6
    stride: int | None = None
    hidden: int = 16
    kernel: int = 3

    def __post_init__(self) -> None:
        if self.corr_window < 3:
            raise DetectorError(f"corr_window must be >= 3 readings, got {self.corr_window}")
        if self.sequence < 1 or self.hidden < 1 or self.kernel < 1 or self.kernel % 2 == 0:
            raise DetectorError("sequence and hidden must be >= 1 and kernel odd")
        if self.stride is not None and self.stride < 1:
            raise DetectorError(f"stride must be >= 1, got {self.stride}")

    @property
    def step(self) -> int:
        """Ticks between the matrices the ConvLSTM reads."""
        return self.corr_window if self.stride is None else self.stride

    @property
    def history(self) -> int:
        """Ticks before the first scored one: a full window and ``sequence`` past ones."""
        return self.corr_window - 1 + self.sequence * self.step


def correlation_matrices(values: np.ndarray, mask: np.ndarray, window: int) -> np.ndarray:
    """Pearson correlations of the channels over sliding windows.

    ``values``/``mask`` ``[time, node, channel]`` -> float32 ``[time, node, channel,
    channel]``; entry ``t`` uses readings ``t-window+1 .. t`` (NaN for ``t < window-1``).
    Missing readings are filled with the last observed one of the same channel; a channel
    that is constant in the window correlates 0 with the others (1 with itself).
    """
    observed = np.where(mask, values.astype(np.float64), np.nan)  # float64: moments cancel
    t_len, n_nodes, ch = values.shape
    filled = pd.DataFrame(observed.reshape(t_len, n_nodes * ch)).ffill()
    x = np.nan_to_num(filled.to_numpy().reshape(values.shape), nan=0.0)  # [time, node, ch]
    out = np.full((t_len, n_nodes, ch, ch), np.nan, dtype=np.float32)
    if t_len < window:
        return out
    # Sliding sums give every window's moments at once.
    csum = np.concatenate([np.zeros((1, n_nodes, ch)), np.cumsum(x, axis=0)])
    outer = x[:, :, :, None] * x[:, :, None, :]  # [time, node, ch, ch]
    osum = np.concatenate([np.zeros((1, n_nodes, ch, ch)), np.cumsum(outer, axis=0)])
    s1 = (csum[window:] - csum[:-window]) / window  # [n, node, ch]
    s2 = (osum[window:] - osum[:-window]) / window  # [n, node, ch, ch]
    cov = s2 - s1[:, :, :, None] * s1[:, :, None, :]
    var = np.clip(np.diagonal(cov, axis1=2, axis2=3), 0.0, None)  # [n, node, ch]
    scale = np.sqrt(var[:, :, :, None] * var[:, :, None, :])
    tiny = 1e-9 * (1.0 + np.abs(s1[:, :, :, None] * s1[:, :, None, :]))
    corr = np.where(scale > tiny, cov / np.where(scale > tiny, scale, 1.0), 0.0)
    corr = np.clip(corr, -1.0, 1.0)
    eye = np.eye(ch, dtype=bool)
    corr[:, :, eye] = 1.0
    out[window - 1 :] = corr
    return out


class ConvLSTMCell(nn.Module):
    """One ConvLSTM step over ``[batch, channels, rows, cols]`` maps, with peepholes."""

    def __init__(self, in_channels: int, hidden: int, kernel: int, size: int) -> None:
        super().__init__()
        self.hidden = hidden
        # Fused gates [i, f, o, c̃] from the concatenated input and hidden maps.
        self.conv = nn.Conv2d(in_channels + hidden, 4 * hidden, kernel, padding=kernel // 2)
        self.peep_i = nn.Parameter(torch.zeros(hidden, size, size))
        self.peep_f = nn.Parameter(torch.zeros(hidden, size, size))
        self.peep_o = nn.Parameter(torch.zeros(hidden, size, size))
        bias = self.conv.bias
        assert bias is not None
        with torch.no_grad():
            bias.zero_()
            bias[hidden : 2 * hidden].fill_(1.0)  # remember by default

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, c = state
        gates = self.conv(torch.cat([x, h], dim=1))  # [batch, 4 * hidden, rows, cols]
        gi, gf, go, gc = gates.chunk(4, dim=1)
        i = torch.sigmoid(gi + self.peep_i * c)
        f = torch.sigmoid(gf + self.peep_f * c)
        c_new = f * c + i * torch.tanh(gc)
        o = torch.sigmoid(go + self.peep_o * c_new)
        return o * torch.tanh(c_new), c_new


class CorrelationPredictor(nn.Module):
    """``[batch, sequence, ch, ch]`` past matrices -> ``[batch, ch, ch]`` the next one."""

    def __init__(self, channels: int, hidden: int, kernel: int) -> None:
        super().__init__()
        self.cell = ConvLSTMCell(1, hidden, kernel, channels)
        self.head = nn.Conv2d(hidden, 1, 1)

    def forward(self, seq: Tensor) -> Tensor:
        batch, steps, rows, cols = seq.shape
        h = seq.new_zeros((batch, self.cell.hidden, rows, cols))  # [batch, hidden, ch, ch]
        c = torch.zeros_like(h)
        for t in range(steps):
            h, c = self.cell(seq[:, t : t + 1], (h, c))
        return torch.tanh(self.head(h))[:, 0]  # [batch, ch, ch], correlations in [-1, 1]


class CorrelationDetector(StreamingDetector):
    """ConvLSTM correlation-matrix detector for ``[time, node, channel]`` panels."""

    name: ClassVar[str] = "correlation"

    def __init__(self, config: CorrelationConfig | None = None) -> None:
        self.config = config or CorrelationConfig()
        self.sensor_ids: tuple[str, ...] = ()
        self.channels: tuple[str, ...] = ()
        self.n_channels = 0
        self.module: CorrelationPredictor | None = None
        self.errors: ConformalPool | None = None
        self._fitted_errors: ConformalPool | None = None  # what reset returns to
        self.train_loss: list[float] = []
        self.entry_scale = np.ones((0, 0))  # [ch, ch], typical error of each entry
        self._buffer: deque[tuple[np.ndarray, np.ndarray]] = deque()
        self._matrices: deque[np.ndarray] = deque()
        self._last = np.empty((0, 0))

    @property
    def n_nodes(self) -> int:
        return len(self.sensor_ids)

    def _check_panel(self, panel: SensorPanel) -> None:
        if panel.values.ndim != 3 or panel.values.shape[2] < 2:
            raise DetectorError(
                "the correlation detector needs a [time, node, channel] panel with at least "
                "2 channels (e.g. heart rate and SpO2, or speed and occupancy); "
                f"got values of shape {panel.values.shape}"
            )

    def _samples(self, panel: SensorPanel) -> tuple[np.ndarray, np.ndarray]:
        """Training pairs: past matrices ``[n, sequence, ch, ch]`` and the next ``[n, ch, ch]``,
        node-major (samples of node 0 first)."""
        c = self.config
        mats = correlation_matrices(panel.values, panel.mask, c.corr_window)  # [t, node, ch, ch]
        targets = np.arange(c.history, panel.n_time)
        if not len(targets):
            empty = np.empty((0, c.sequence, self.n_channels, self.n_channels), np.float32)
            return empty, empty[:, 0]
        idx = targets[:, None] - c.step * np.arange(c.sequence, 0, -1)[None, :]  # [n, sequence]
        seq = mats[idx].transpose(2, 0, 1, 3, 4)  # [node, n, sequence, ch, ch]
        tgt = mats[targets].transpose(1, 0, 2, 3)  # [node, n, ch, ch]
        return (
            seq.reshape(-1, c.sequence, self.n_channels, self.n_channels),
            tgt.reshape(-1, self.n_channels, self.n_channels),
        )

    def _predict(self, seq: np.ndarray) -> np.ndarray:
        assert self.module is not None
        device = next(self.module.parameters()).device
        self.module.eval()
        out = np.empty((len(seq), self.n_channels, self.n_channels), np.float32)
        with torch.no_grad():
            for s in range(0, len(seq), 4096):
                x = torch.as_tensor(seq[s : s + 4096], dtype=torch.float32, device=device)
                out[s : s + 4096] = self.module(x).cpu().numpy()
        return out

    def _statistic(self, predicted: np.ndarray, actual: np.ndarray) -> np.ndarray:
        """Mean squared prediction error of the off-diagonal entries, each in units of its
        typical error on training data: a pair that is normally stable (heart rate and
        R-R interval) counts more when it breaks than a pair that is always noisy."""
        off = ~np.eye(self.n_channels, dtype=bool)
        scaled = (predicted - actual) / self.entry_scale  # [n, ch, ch]
        return (scaled**2)[:, off].mean(axis=1)  # [n]

    def fit(self, panel: SensorPanel, *, valid: SensorPanel | None = None) -> Self:
        """Train the ConvLSTM on ``panel``, calibrate on ``valid`` (default: last 20 %)."""
        self.record_grid(panel)
        self._check_panel(panel)
        c = self.config
        panel, valid = split_valid(panel, valid)
        self.sensor_ids = tuple(panel.sensor_ids)
        self.n_channels = panel.values.shape[2]
        self.channels = tuple(panel.features) or tuple(f"ch{i}" for i in range(self.n_channels))
        seq, tgt = self._samples(panel)
        v_seq, v_tgt = self._samples(valid)
        if len(seq) == 0 or len(v_seq) == 0:
            need = c.history + 1
            raise DetectorError(
                f"correlation detector needs more than {need} training and validation steps, "
                f"got {panel.n_time} and {valid.n_time}; use a shorter corr_window or sequence"
            )
        rng = np.random.default_rng(c.seed)
        if len(seq) > c.max_windows:
            pick = rng.choice(len(seq), c.max_windows, replace=False)
            seq, tgt = seq[pick], tgt[pick]
        device = resolve_device(c.device)
        with seeded(c.seed):
            self.module = CorrelationPredictor(self.n_channels, c.hidden, c.kernel).to(device)
        self.entry_scale = np.ones((self.n_channels, self.n_channels))
        self._train(seq, tgt, v_seq, v_tgt, device, rng)
        fit_rmse = np.sqrt(np.mean((self._predict(seq) - tgt) ** 2, axis=0))  # [ch, ch]
        self.entry_scale = np.maximum(fit_rmse, 1e-3)
        self.errors = ConformalPool(self.n_nodes, c.capacity, c.min_count)
        stat = self._statistic(self._predict(v_seq), v_tgt)
        self.errors.extend(stat.reshape(self.n_nodes, -1).T)
        self._fitted_errors = deepcopy(self.errors)
        self.reset()
        return self

    def _train(
        self,
        seq: np.ndarray,
        tgt: np.ndarray,
        v_seq: np.ndarray,
        v_tgt: np.ndarray,
        device: torch.device,
        rng: np.random.Generator,
    ) -> None:
        module = self.module
        assert module is not None
        x = torch.as_tensor(seq, dtype=torch.float32, device=device)
        y = torch.as_tensor(tgt, dtype=torch.float32, device=device)

        def batch_loss(b: Tensor) -> Tensor:
            return ((module(x[b]) - y[b]) ** 2).mean()

        def valid_score() -> float:
            return float(np.mean(self._statistic(self._predict(v_seq), v_tgt)))

        self.train_loss = train_network(
            module, len(x), batch_loss, valid_score, self.config, rng, device, min_gain=1e-7
        )

    # --- streaming --------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the recent readings and matrices and what the stream calibrated."""
        self._buffer.clear()
        self._matrices.clear()
        self._last = np.full((self.n_nodes, self.n_channels), np.nan)  # [node, ch]
        if self._fitted_errors is not None:
            self.errors = deepcopy(self._fitted_errors)

    def score_batch(self, panel: SensorPanel) -> DetectionBatch:
        """What :meth:`score_panel` returns (without reasons), with every matrix and
        prediction computed in one batch; only the calibration pool is updated tick by
        tick. The streaming state is left at the end of ``panel``."""
        if self.module is None or self.errors is None:
            raise DetectorError("the correlation detector is not fitted; call fit() or start()")
        self._check_panel(panel)
        c = self.config
        mats = correlation_matrices(panel.values, panel.mask, c.corr_window)
        score = np.zeros((panel.n_time, self.n_nodes), np.float32)  # [time, node]
        targets = np.arange(c.history, panel.n_time)
        if len(targets):
            idx = targets[:, None] - c.step * np.arange(c.sequence, 0, -1)[None, :]
            seq = mats[idx].transpose(0, 2, 1, 3, 4)  # [n, node, sequence, ch, ch]
            flat = seq.reshape(-1, c.sequence, self.n_channels, self.n_channels)
            predicted = self._predict(flat)
            actual = mats[targets].reshape(-1, self.n_channels, self.n_channels)
            stats = self._statistic(predicted, actual).reshape(len(targets), self.n_nodes)
            for k, target in enumerate(targets):
                p = self.errors.pvalues(stats[k])
                score[target] = np.where(np.isfinite(p), 1.0 - p, 0.0)
                if c.online:
                    self.errors.append(stats[k])
        # Leave the streaming state where a tick-by-tick run would have left it.
        self.reset()
        tail = max(panel.n_time - c.history - 1, 0)
        if tail:
            before = np.where(panel.mask[:tail], panel.values[:tail], np.nan)
            last = pd.DataFrame(before.reshape(tail, -1).astype(np.float64)).ffill()
            self._last = last.to_numpy()[-1].reshape(self.n_nodes, self.n_channels)
        for t in range(tail, panel.n_time):
            x, m = check_tick(panel.values[t], panel.mask[t], self.n_nodes, self.n_channels)
            self._last = np.where(m, x, self._last)
            filled = np.where(m, x, self._last)
            self._buffer.append((filled, np.isfinite(filled)))
            while len(self._buffer) > c.corr_window:
                self._buffer.popleft()
            if len(self._buffer) == c.corr_window:
                self._matrices.append(mats[t])
                while len(self._matrices) > c.sequence * c.step:
                    self._matrices.popleft()
        f = min(c.feature, self.n_channels - 1)
        observed = np.where(panel.mask[:, :, f], panel.values[:, :, f], np.nan)
        return DetectionBatch(
            self.name, panel.timestamps, panel.sensor_ids, score, observed.astype(np.float32)
        )

    def update(self, ts: pd.Timestamp, values: np.ndarray, mask: np.ndarray) -> Detection:
        """Score the correlation matrix of the window ending at this tick."""
        if self.module is None or self.errors is None:
            raise DetectorError("the correlation detector is not fitted; call fit() or start()")
        c = self.config
        x, m = check_tick(values, mask, self.n_nodes, self.n_channels)
        # A missing reading repeats the channel's last observed one, even from before the
        # window: the same filling as correlation_matrices over a whole panel.
        self._last = np.where(m, x, self._last)
        filled = np.where(m, x, self._last)
        self._buffer.append((filled, np.isfinite(filled)))
        while len(self._buffer) > c.corr_window:
            self._buffer.popleft()
        observed = x[:, min(c.feature, self.n_channels - 1)].astype(np.float32)
        score = np.zeros(self.n_nodes, np.float32)
        if len(self._buffer) < c.corr_window:
            return Detection(self.name, pd.Timestamp(ts), score, observed)
        vals = np.stack([v for v, _ in self._buffer])  # [window, node, ch]
        msk = np.stack([k for _, k in self._buffer])
        current = correlation_matrices(vals, msk, c.corr_window)[-1]  # [node, ch, ch]
        stat = np.full(self.n_nodes, np.nan)
        predicted = np.full_like(current, np.nan)
        span = c.sequence * c.step
        if len(self._matrices) == span:
            past = list(self._matrices)
            # Matrices step, 2 step, ... sequence step ticks ago, oldest first.
            seq = np.stack([past[span - k * c.step] for k in range(c.sequence, 0, -1)], axis=1)
            predicted = self._predict(seq)  # [node, ch, ch]
            stat = self._statistic(predicted, current)
            p = self.errors.pvalues(stat)
            score = np.where(np.isfinite(p), 1.0 - p, 0.0).astype(np.float32)
            if c.online:
                self.errors.append(stat)
        self._matrices.append(current)
        while len(self._matrices) > span:
            self._matrices.popleft()
        reasons = word_reasons(score, lambda i: self._reason(current[i], predicted[i]))
        return Detection(self.name, pd.Timestamp(ts), score, observed, None, None, None, reasons)

    def _reason(self, actual: np.ndarray, predicted: np.ndarray) -> str:
        diff = np.abs(actual - predicted)
        np.fill_diagonal(diff, -1.0)
        a, b = np.unravel_index(int(np.argmax(diff)), diff.shape)
        return (
            f"correlation of {self.channels[a]} and {self.channels[b]} over the last "
            f"{self.config.corr_window} readings is {actual[a, b]:+.2f}, expected "
            f"{predicted[a, b]:+.2f}"
        )

    # --- persistence ------------------------------------------------------------------

    def save(self, directory: str | Path) -> None:
        """ConvLSTM weights and fitted calibration pool (safetensors) plus config (JSON)."""
        if self.module is None or self._fitted_errors is None:
            raise DetectorError("fit the correlation detector before saving it")
        tensors = network_tensors(self.module)
        tensors.update(self._fitted_errors.state("errors"))
        tensors["entry_scale"] = self.entry_scale.astype(np.float32)
        save_detector_bundle(
            directory,
            self,
            window=self.config.history + 1,
            settings=describe_config(self.config),
            tensors=tensors,
            channels=list(self.channels),
        )

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        """A saved detector, on the CPU."""
        bundle = read_detector_bundle(directory, cls.name)
        config = CorrelationConfig(**{**bundle.config["detector"], "device": "cpu"})
        detector = cls(config)
        detector.sensor_ids = tuple(bundle.config["sensor_ids"])
        detector.channels = tuple(bundle.config["channels"])
        detector.n_channels = len(detector.channels)
        module = CorrelationPredictor(detector.n_channels, config.hidden, config.kernel)
        load_network_tensors(module, bundle.tensors)
        detector.module = module
        detector.errors = ConformalPool.from_state(bundle.tensors, "errors")
        detector._fitted_errors = deepcopy(detector.errors)
        # float32, as fit computes it: the loaded detector's scores are the same numbers
        detector.entry_scale = bundle.tensor("entry_scale").astype(np.float32)
        detector.reset()
        return detector

    def start(self, head: SensorPanel) -> Self:
        """Fit on ``head``'s rows and keep calibrating online from then on."""
        self.config = replace(self.config, online=True)
        return self.fit(head)
