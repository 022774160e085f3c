"""Spectral residual: how salient the latest reading is in the spectrum of the recent window.

Ren et al., "Time-Series Anomaly Detection Service at Microsoft" (KDD 2019), the
spectral-residual (SR) saliency map, run on the last ``window`` readings of each sensor
at every tick:

1. extend the window by ``extend`` estimated points so that the latest real point is not
   at the edge of the transform; they repeat the reading before the latest (the paper
   extrapolates the latest reading's gradient, which makes the estimated points a larger
   spike than a spike in the latest reading itself and hides it);
2. Fourier transform; the *spectral residual* is the log amplitude minus its moving
   average over ``smooth`` frequencies;
3. the saliency map is the magnitude of the inverse transform of
   ``exp(residual + i phase)``: large where the series does what its spectrum does not
   explain;
4. the statistic of the latest reading is its saliency relative to the mean saliency of
   the ``local`` points before it, ``(S_t - mean) / mean``.

The statistic becomes a conformal p-value against earlier ticks'
(:mod:`models.anomaly.online`). A window with a missing reading is not scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
from scipy.ndimage import uniform_filter1d

from models.anomaly.base import DetectorError
from models.anomaly.online import OnlineConfig, OnlineDetector
from models.panel import SensorPanel

_EPS = 1e-8


@dataclass(frozen=True, kw_only=True)
class SpectralConfig(OnlineConfig):
    """Settings of :class:`SpectralDetector` (the paper's values but the window).

    window : readings transformed. extend : estimated points appended. smooth :
    frequencies of the log-amplitude average. local : saliencies the latest is compared to.
    """

    window: int = 64
    extend: int = 5
    smooth: int = 3
    local: int = 21

    def __post_init__(self) -> None:
        if self.window < 4 or self.extend < 1 or self.smooth < 1:
            raise DetectorError(
                f"need window >= 4, extend >= 1 and smooth >= 1, got {self.window}, "
                f"{self.extend}, {self.smooth}"
            )
        if not 1 <= self.local < self.window:
            raise DetectorError(f"local must be in [1, window), got {self.local}")


def saliency(windows: np.ndarray, extend: int, smooth: int) -> np.ndarray:
    """Spectral-residual saliency ``[row, window]`` of ``windows`` ``[row, window]``."""
    estimate = windows[:, -2:-1]  # the reading before the latest
    series = np.concatenate([windows, np.repeat(estimate, extend, axis=1)], axis=1)
    spectrum = np.fft.fft(series, axis=1)
    amplitude = np.abs(spectrum)
    log_amplitude = np.log(amplitude + _EPS)
    residual = log_amplitude - uniform_filter1d(log_amplitude, smooth, axis=1, mode="nearest")
    phase = spectrum / np.maximum(amplitude, _EPS)
    return np.abs(np.fft.ifft(np.exp(residual) * phase, axis=1))[:, : windows.shape[1]]


class SpectralDetector(OnlineDetector):
    """Scores the latest reading by its spectral-residual saliency (module doc)."""

    name: ClassVar[str] = "spectral"

    def __init__(self, config: SpectralConfig | None = None) -> None:
        self.config = config or SpectralConfig()
        super().__init__()

    @classmethod
    def _from_settings(cls, settings: dict[str, Any]) -> Self:
        return cls(SpectralConfig(**settings))

    def _prepare(self, head: SensorPanel | None) -> None:
        self._recent = np.full((self.n_nodes, self.config.window), np.nan)  # oldest first

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"recent": self._recent.copy()}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        if arrays["recent"].shape != (self.n_nodes, self.config.window):
            raise ValueError("the saved window does not match the sensors")
        self._recent = arrays["recent"].astype(np.float64)

    def _step(self, x: np.ndarray) -> np.ndarray:
        c = self.config
        self._recent = np.roll(self._recent, -1, axis=1)
        self._recent[:, -1] = x
        stats = np.full(self.n_nodes, np.nan)
        full = np.isfinite(self._recent).all(axis=1)
        if not full.any():
            return stats
        windows = self._recent[full]
        # Centred and scaled per window: the saliency then does not depend on units.
        centred = windows - windows.mean(axis=1, keepdims=True)
        spread = np.abs(centred).max(axis=1, keepdims=True)
        centred = centred / np.where(spread > 0, spread, 1.0)
        s = saliency(centred, c.extend, c.smooth)
        before = s[:, -1 - c.local : -1].mean(axis=1)
        stats[full] = np.where(before > _EPS, (s[:, -1] - before) / np.maximum(before, _EPS), 0.0)
        return stats

    def _reason(self, i: int, x: float, p: float) -> str:
        return (
            f"{x:.4g} stands out of the spectrum of the last {self.config.window} readings "
            f"(p={p:.2g})"
        )
