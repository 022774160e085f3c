"""GAN detector (BeatGAN-style): reconstruction error plus a critic's score of each window.

The seed lecture's generative adversarial network, used for anomaly detection as BeatGAN
(Zhou et al., IJCAI 2019) and TadGAN (Geiger et al., 2020) do:

* the **generator** is an autoencoder of windows of ``window`` readings (an MLP
  ``window -> hidden -> code -> hidden -> window``); it learns to reproduce normal
  windows;
* the **discriminator** (critic) tells real windows from the generator's
  reconstructions; its last hidden layer gives window *features*;
* training alternates, per batch, a generator step on ``reconstruction MSE +
  adversarial * feature-matching loss`` (the distance between the critic's features of a
  window and of its reconstruction, BeatGAN's adversarial loss) and a discriminator step
  on the binary cross-entropy of real against reconstructed windows (the shared loop's
  ``after_step`` hook, :func:`models.nn.loop.train_loop`);
* the **statistic** of a window is its reconstruction MSE plus ``critic`` times the
  critic's feature distance (TadGAN combines the two the same way), a conformal p-value
  against normal windows (:class:`models.anomaly.calibration.ConformalPool`) gives
  ``score = 1 - p``.

Trained on the past only: ``fit`` on training windows (calibrated on validation windows),
``start(head)`` on the head's windows (NAB's probationary rows; its last 20 % calibrate
and the stream keeps calibrating). Values are standardised per sensor on the training
rows, or scaled by ``value_range`` (NAB's min/max convention) when it is given.
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
)
from models.anomaly.online import series_2d
from models.nn.devices import resolve_device, seeded
from models.nn.loop import BatchLoss, LoopSettings, train_loop
from models.panel import SensorPanel


@dataclass(frozen=True)
class GanConfig(NetworkDetectorConfig):
    """Settings of :class:`GanDetector`.

    window : readings per window. hidden, code : generator sizes (the critic uses
    ``hidden`` and ``hidden // 2``). adversarial : weight of the feature-matching loss in
    the generator's loss. critic : weight of the feature distance in the statistic.
    value_range : ``(min, max)`` to scale every sensor by (NAB's convention), else each
    sensor is standardised on its training rows. Training and calibration:
    :class:`models.anomaly.neural.NetworkDetectorConfig`.
    """

    window: int = 32
    hidden: int = 32
    code: int = 8
    adversarial: float = 1.0
    critic: float = 1.0
    value_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.value_range is not None:
            object.__setattr__(self, "value_range", tuple(float(v) for v in self.value_range))
        if self.window < 2 or min(self.hidden, self.code, self.epochs, self.batch_size) < 1:
            raise DetectorError(
                "need window >= 2 and hidden, code, epochs and batch_size >= 1, got "
                f"{self.window}, {self.hidden}, {self.code}, {self.epochs}, {self.batch_size}"
            )
        if self.hidden < 2 or self.adversarial < 0 or self.critic < 0:
            raise DetectorError("need hidden >= 2 and non-negative adversarial and critic weights")


class WindowGan(nn.Module):
    """Generator (an autoencoder of windows) and critic, ``[batch, window]`` in and out."""

    def __init__(self, window: int, hidden: int, code: int) -> None:
        super().__init__()
        act = nn.LeakyReLU(0.2)
        self.generator = nn.Sequential(
            nn.Linear(window, hidden), act, nn.Linear(hidden, code), act,
            nn.Linear(code, hidden), act, nn.Linear(hidden, window),
        )  # fmt: skip
        self.features = nn.Sequential(
            nn.Linear(window, hidden), act, nn.Linear(hidden, hidden // 2), act
        )
        self.judge = nn.Linear(hidden // 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        """The generator's reconstruction of ``x``."""
        return self.generator(x)

    def critic(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The critic's features ``[batch, hidden // 2]`` and real-vs-fake logits ``[batch]``."""
        f = self.features(x)
        return f, self.judge(f)[:, 0]


def _fill(windows: np.ndarray) -> np.ndarray:
    """Windows ``[n, window]`` with NaN replaced by the last observed value (else 0)."""
    seen = np.isfinite(windows)
    steps = np.where(seen, np.arange(windows.shape[1])[None, :], 0)
    np.maximum.accumulate(steps, axis=1, out=steps)
    filled = np.take_along_axis(np.where(seen, windows, 0.0), steps, axis=1)
    return np.where(np.take_along_axis(seen, steps, axis=1), filled, 0.0)


class GanDetector(StreamingDetector):
    """Scores the window ending at each tick by reconstruction and critic (module doc)."""

    name: ClassVar[str] = "gan"

    def __init__(self, config: GanConfig | None = None) -> None:
        self.config = config or GanConfig()
        self.sensor_ids: tuple[str, ...] = ()
        self.offset = np.zeros(0)  # [node]
        self.scale = np.ones(0)  # [node]
        self.module: WindowGan | None = None
        self._copy: WindowGan | None = None
        self.pool: ConformalPool | None = None
        self._fitted_pool: ConformalPool | None = None
        self.train_loss: list[float] = []
        self._recent: deque[np.ndarray] = deque()

    @property
    def n_nodes(self) -> int:
        return len(self.sensor_ids)

    # --- windows ----------------------------------------------------------------------

    def _windows(self, panel: SensorPanel) -> np.ndarray:
        """Scaled windows ``[time - window + 1, node, window]`` (NaN where missing)."""
        values, mask = series_2d(panel)
        x = (np.where(mask, values, np.nan) - self.offset) / self.scale  # [time, node]
        w = self.config.window
        n = panel.n_time - w + 1
        if n < 1:
            return np.empty((0, self.n_nodes, w))
        idx = np.arange(n)[:, None] + np.arange(w)[None, :]
        return x[idx].transpose(0, 2, 1)  # [n, node, window]

    def _statistics(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Statistic ``[n]`` of scaled windows ``[n, window]`` (NaN: nothing observed)
        and each reconstruction's last value."""
        mse, feat, last = self._parts(windows)
        with np.errstate(over="ignore"):
            total = mse + self.config.critic * feat
        total = np.minimum(total, np.finfo(np.float32).max)  # a huge window is huge, not inf
        return total.astype(np.float32).astype(np.float64), last

    def _parts(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Reconstruction MSE, critic feature distance and last reconstructed value ``[n]``."""
        assert self.module is not None
        # In float64 on the CPU: a window's statistic must not depend on how many windows
        # share its batch (streaming scores one window, score_batch thousands).
        module = self._scorer()
        seen = np.isfinite(windows)
        mse_all = np.full(len(windows), np.nan)
        feat_all = np.full(len(windows), np.nan)
        last = np.full(len(windows), np.nan)
        with torch.no_grad():
            for start in range(0, len(windows), 4096):
                part = windows[start : start + 4096]
                x = torch.as_tensor(_fill(part), dtype=torch.float64)
                recon = module(x)
                real, _ = module.critic(x)
                fake, _ = module.critic(recon)
                m = torch.as_tensor(seen[start : start + 4096], dtype=torch.float64)
                count = m.sum(dim=1)
                mse = (((recon - x) ** 2) * m).sum(dim=1) / count.clamp(min=1.0)
                feat = ((real - fake) ** 2).mean(dim=1)
                some = count.numpy() > 0
                mse_all[start : start + len(part)] = np.where(some, mse.numpy(), np.nan)
                feat_all[start : start + len(part)] = np.where(some, feat.numpy(), np.nan)
                last[start : start + len(part)] = recon[:, -1].numpy()
        return mse_all, feat_all, last

    def _scorer(self) -> WindowGan:
        """A float64 CPU copy of the trained network, made once per training."""
        assert self.module is not None
        if self._copy is None:
            self._copy = deepcopy(self.module).to("cpu").double().eval()
        return self._copy

    # --- fitting ----------------------------------------------------------------------

    def _scaler(self, panel: SensorPanel) -> None:
        c = self.config
        if c.value_range is not None:
            low, high = c.value_range
            self.offset = np.full(self.n_nodes, low)
            self.scale = np.full(self.n_nodes, high - low if high > low else 1.0)
            return
        mean, spread = standardizer(*series_2d(panel))
        self.offset, self.scale = mean.astype(np.float64), spread.astype(np.float64)

    def fit(self, panel: SensorPanel, *, valid: SensorPanel | None = None) -> Self:
        """Train on ``panel``'s windows, calibrate on ``valid``'s (default: last 20 %)."""
        self.record_grid(panel)
        c = self.config
        panel, valid = split_windows(panel, valid, c.window, "the GAN")
        self.sensor_ids = tuple(panel.sensor_ids)
        self._scaler(panel)
        device = resolve_device(c.device)
        with seeded(c.seed):
            self.module = WindowGan(c.window, c.hidden, c.code).to(device)
        self._copy = None
        train = self._windows(panel).reshape(-1, c.window)
        train = train[np.isfinite(train).any(axis=1)]
        rng = np.random.default_rng(c.seed)
        if len(train) > c.max_windows:
            train = train[rng.choice(len(train), c.max_windows, replace=False)]
        valid_windows = self._windows(valid).reshape(-1, c.window)
        self._train(train, valid_windows, device, rng)
        self.pool = ConformalPool(self.n_nodes, c.capacity, c.min_count)
        stat, _ = self._statistics(valid_windows)
        self.pool.extend(stat.reshape(-1, self.n_nodes))
        self._fitted_pool = deepcopy(self.pool)
        self.reset()
        return self

    def _train(
        self, train: np.ndarray, valid: np.ndarray, device: torch.device, rng: np.random.Generator
    ) -> None:
        module, c = self.module, self.config
        assert module is not None
        x_all = torch.as_tensor(_fill(train), dtype=torch.float32, device=device)
        m_all = torch.as_tensor(np.isfinite(train), dtype=torch.float32, device=device)
        generator = torch.optim.Adam(module.generator.parameters(), lr=c.lr, betas=(0.5, 0.999))
        critic_params = [*module.features.parameters(), *module.judge.parameters()]
        critic = torch.optim.Adam(critic_params, lr=c.lr, betas=(0.5, 0.999))
        bce = nn.BCEWithLogitsLoss()

        def generator_loss(rows: Tensor) -> BatchLoss:
            x, m = x_all[rows], m_all[rows]
            recon = module(x)
            mse = (((recon - x) ** 2) * m).sum() / m.sum().clamp(min=1.0)
            real, _ = module.critic(x)
            fake, _ = module.critic(recon)
            loss = mse + c.adversarial * ((real.detach() - fake) ** 2).mean()
            return BatchLoss(loss, loss.detach() * len(rows), len(rows))

        def critic_step(rows: Tensor) -> None:
            x = x_all[rows]
            with torch.no_grad():
                recon = module(x)
            _, real = module.critic(x)
            _, fake = module.critic(recon)
            loss = bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake))
            critic.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(critic_params, 1.0)
            critic.step()

        def valid_score() -> float:  # how well normal windows are reconstructed
            self._copy = None
            mse, _, _ = self._parts(valid)
            return float(np.nanmean(mse)) if np.isfinite(mse).any() else float("inf")

        settings = LoopSettings(
            epochs=c.epochs,
            batch_size=c.batch_size,
            seed=c.seed,
            patience=max(c.patience, 1),
            min_gain=1e-6,
            grad_clip=1.0,
        )
        self._copy = None
        result = train_loop(
            module,
            generator,
            order=lambda: torch.as_tensor(rng.permutation(len(train)), device=device),
            batch_loss=generator_loss,
            valid_score=valid_score if len(valid) else None,
            settings=settings,
            device=device,
            after_step=critic_step,
        )
        self.train_loss = result.train_loss
        self._copy = None

    def start(self, head: SensorPanel) -> Self:
        """Train on ``head``'s rows (NAB's probationary rows) and keep calibrating online."""
        self.config = replace(self.config, online=True)
        return self.fit(head)

    # --- streaming --------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the recent window and what the stream calibrated."""
        self._recent.clear()
        if self._fitted_pool is not None:
            self.pool = deepcopy(self._fitted_pool)

    def _scored(self, stat: np.ndarray) -> np.ndarray:
        assert self.pool is not None
        p = self.pool.pvalues(stat)
        if self.config.online:
            self.pool.append(stat)
        return p

    def update(self, ts: pd.Timestamp, values: np.ndarray, mask: np.ndarray) -> Detection:
        """Score the window that ends with this tick."""
        if self.module is None or self.pool is None:
            raise DetectorError("the gan detector is not fitted; call fit() or start()")
        x, _ = check_tick(values, mask, self.n_nodes)
        self._recent.append((x - self.offset) / self.scale)
        while len(self._recent) > self.config.window:
            self._recent.popleft()
        score = np.zeros(self.n_nodes)
        expected = np.full(self.n_nodes, np.nan)
        p = np.full(self.n_nodes, np.nan)
        if len(self._recent) == self.config.window:
            stat, last = self._statistics(np.stack(list(self._recent), axis=1))  # [node, window]
            p = self._scored(stat)
            score = np.where(np.isfinite(p), 1.0 - p, 0.0)
            expected = last * self.scale + self.offset
        reasons = word_reasons(
            score,
            lambda i: (
                f"the last {self.config.window} readings are reconstructed and judged as "
                f"unlike normal windows (p={p[i]:.2g}); a normal window would end near "
                f"{expected[i]:.4g}"
            ),
        )
        return Detection(
            self.name,
            pd.Timestamp(ts),
            score.astype(np.float32),
            x.astype(np.float32),
            expected.astype(np.float32),
            reasons=reasons,
        )

    def score_batch(self, panel: SensorPanel) -> DetectionBatch:
        """:meth:`score_panel`'s scores (without reasons), every window judged in one batch."""
        if self.module is None or self.pool is None:
            raise DetectorError("the gan detector is not fitted; call fit() or start()")
        self.reset()
        w = self.config.window
        windows = self._windows(panel)  # [n, node, window]
        score = np.zeros((panel.n_time, self.n_nodes), np.float32)
        expected = np.full((panel.n_time, self.n_nodes), np.nan, np.float32)
        if len(windows):
            stat, last = self._statistics(windows.reshape(-1, w))
            stats = stat.reshape(len(windows), self.n_nodes)
            expected[w - 1 :] = last.reshape(len(windows), self.n_nodes) * self.scale + self.offset
            for k in range(len(windows)):
                p = self._scored(stats[k])
                score[k + w - 1] = np.where(np.isfinite(p), 1.0 - p, 0.0)
        values, mask = series_2d(panel)
        observed = np.where(mask, values, np.nan)
        for t in range(max(panel.n_time - w, 0), panel.n_time):
            self._recent.append((observed[t] - self.offset) / self.scale)
        return DetectionBatch(
            self.name,
            panel.timestamps,
            panel.sensor_ids,
            score,
            observed.astype(np.float32),
            expected,
        )

    # --- persistence ------------------------------------------------------------------

    def save(self, directory: str | Path) -> None:
        """Weights, scaler and fitted calibration pool (safetensors) plus config (JSON)."""
        if self.module is None or self._fitted_pool is None:
            raise DetectorError("fit the gan detector before saving it")
        tensors = network_tensors(self.module)
        tensors.update(self._fitted_pool.state("pool"))
        tensors["scaler.offset"] = self.offset.astype(np.float64)
        tensors["scaler.scale"] = self.scale.astype(np.float64)
        save_detector_bundle(
            directory,
            self,
            window=self.config.window,
            settings=describe_config(self.config),
            tensors=tensors,
        )

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        """A saved detector, on the CPU whatever device it was trained on."""
        bundle = read_detector_bundle(directory, cls.name)
        settings = {**bundle.config["detector"], "device": "cpu"}
        config = GanConfig(**settings)
        detector = cls(config)
        detector.sensor_ids = tuple(bundle.config["sensor_ids"])
        detector.offset = bundle.tensor("scaler.offset")
        detector.scale = bundle.tensor("scaler.scale")
        module = WindowGan(config.window, config.hidden, config.code)
        try:
            load_network_tensors(module, bundle.tensors)
        except ValueError as exc:
            raise DetectorError(f"{directory}: {exc}; fit and save the detector again") from None
        detector.module = module
        detector.pool = ConformalPool.from_state(bundle.tensors, "pool")
        detector._fitted_pool = deepcopy(detector.pool)
        return detector
