"""HTM's anomaly likelihood: how unusual the recent *level* of a raw anomaly score is.

Ahmad, Lavin, Purdy and Agha, "Unsupervised real-time anomaly detection for streaming
data" (Neurocomputing, 2017), the post-processing of Numenta's NAB detector. A raw
score ``s_t`` (any per-tick anomaly score; HTM uses its prediction error) is turned into
a likelihood in three streaming steps, per sensor:

1. **Short-term level.** ``m_t``, the mean of the last ``averaging_window`` raw scores.
2. **Long-term distribution.** A normal distribution fitted to the short-term means of
   the last ``historic_window`` ticks (skipping the first ``learning_period`` ones), its
   mean at least 0.03 and variance at least 0.0003 (so that an almost always quiet
   score does not make every blip an alarm); refitted every ``reestimation_period``
   ticks.
3. **Likelihood.** ``L_t = 1 - Q(|m_t - mean| / std)`` (two-sided normal tail). A
   likelihood in the red zone (``L >= red``) right after another red one is lowered to
   ``yellow``: an episode alarms once, at its onset.

The score reported is NAB's log-likelihood ``log(1.0000000001 - L) / log(1e-10)`` in
[0, 1] (0.5 while the detector is still learning). Defaults are nupic's; NAB's detector
sets ``learning_period = floor(probation / 2)`` and ``estimation_samples = probation -
learning_period`` (:meth:`LikelihoodConfig.for_nab`). nupic's special case for
perfectly flat *metric values* is not reproduced: this class sees scores only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import erfc

from models.anomaly.base import DetectorError

# nupic's null distribution: before enough history, every level is ordinary.
NULL_MEAN, NULL_STD = 0.5, 1000.0
MIN_MEAN, MIN_VARIANCE = 0.03, 0.0003
LOG_DENOMINATOR = math.log(1.0 - 0.9999999999)


@dataclass(frozen=True)
class LikelihoodConfig:
    """Settings of :class:`AnomalyLikelihood` (nupic's defaults).

    learning_period : ticks whose short-term means are left out of the fit.
    estimation_samples : further ticks before the first likelihood is reported.
    historic_window : raw scores kept for the fit.
    reestimation_period : ticks between fits.
    averaging_window : raw scores in the short-term mean.
    red, yellow : the alarm level and what a repeated alarm is lowered to.
    """

    learning_period: int = 288
    estimation_samples: int = 100
    historic_window: int = 8640
    reestimation_period: int = 100
    averaging_window: int = 10
    red: float = 0.99999
    yellow: float = 0.999

    def __post_init__(self) -> None:
        if min(self.learning_period, self.estimation_samples) < 0:
            raise DetectorError("learning_period and estimation_samples must be >= 0")
        if min(self.historic_window, self.reestimation_period, self.averaging_window) < 1:
            raise DetectorError(
                "historic_window, reestimation_period and averaging_window must be >= 1"
            )
        if not 0.0 < self.yellow < self.red < 1.0:
            raise DetectorError(f"need 0 < yellow < red < 1, got {self.yellow}, {self.red}")

    @classmethod
    def for_nab(cls, probation: int) -> LikelihoodConfig:
        """NAB's setting for a file whose probationary period is ``probation`` rows."""
        learning = max(probation, 0) // 2
        return cls(learning_period=learning, estimation_samples=max(probation, 0) - learning)


def tail_probability(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Two-sided normal tail ``Q(|x - mean| / std)`` (the probability of a value as far)."""
    z = np.abs(x - mean) / std
    return 0.5 * erfc(z / math.sqrt(2.0))


def log_likelihood(likelihood: np.ndarray) -> np.ndarray:
    """NAB's log scale: 0.5 -> 0.03, 0.999 -> 0.3, 0.99999 -> 0.5, 1 -> 1."""
    return np.log(1.0000000001 - likelihood) / LOG_DENOMINATOR


class AnomalyLikelihood:
    """Streaming anomaly likelihood of ``n_nodes`` raw scores (see module doc).

    Call it once per tick with the raw scores ``[node]`` (NaN where a sensor was not
    scored); it returns the log-likelihood scores ``[node]`` for that tick, from that
    tick and the past only.
    """

    def __init__(self, n_nodes: int, config: LikelihoodConfig | None = None) -> None:
        if n_nodes < 1:
            raise DetectorError(f"AnomalyLikelihood needs n_nodes >= 1, got {n_nodes}")
        self.n_nodes = n_nodes
        self.config = config or LikelihoodConfig()
        self.reset()

    def reset(self) -> None:
        """Forget every score seen."""
        c = self.config
        self._history = np.full((c.historic_window, self.n_nodes), np.nan)  # [window, node]
        self._recent = np.full((c.averaging_window, self.n_nodes), np.nan)  # [avg, node]
        self._iteration = 0
        self._mean: np.ndarray | None = None  # [node]
        self._std = np.full(self.n_nodes, NULL_STD)  # [node]
        self._previous = np.ones(self.n_nodes)  # [node], last unfiltered tail probability

    def _ordered_history(self) -> np.ndarray:
        c = self.config
        count = min(self._iteration, c.historic_window)
        start = (self._iteration - count) % c.historic_window
        idx = (start + np.arange(count)) % c.historic_window
        return self._history[idx]  # [count, node], oldest first

    def _estimate(self) -> None:
        c = self.config
        history = self._ordered_history()
        shifted_out = max(0, self._iteration - c.historic_window)
        skip = min(self._iteration, max(0, c.learning_period - shifted_out))
        # Short-term means of the history, the first ones over fewer scores, as nupic's.
        filled = np.isfinite(history)
        sums = np.cumsum(np.where(filled, history, 0.0), axis=0)  # [count, node]
        counts = np.cumsum(filled, axis=0)
        k = c.averaging_window
        sums[k:] = sums[k:] - sums[:-k]
        counts[k:] = counts[k:] - counts[:-k]
        with np.errstate(invalid="ignore", divide="ignore"):
            means = sums / counts  # [count, node]
        part = means[skip:]
        mean = np.full(self.n_nodes, NULL_MEAN)
        std = np.full(self.n_nodes, NULL_STD)
        enough = np.isfinite(part).sum(axis=0) >= 2  # [node]; an empty part gives zeros
        if enough.any():
            fitted_mean = np.nanmean(part[:, enough], axis=0)
            fitted_var = np.nanvar(part[:, enough], axis=0)
            mean[enough] = np.maximum(fitted_mean, MIN_MEAN)
            std[enough] = np.sqrt(np.maximum(fitted_var, MIN_VARIANCE))
        self._mean, self._std = mean, std
        last = means[-1] if len(means) else np.full(self.n_nodes, np.nan)
        self._previous = np.where(np.isfinite(last), tail_probability(last, mean, std), 1.0)
        self._recent = (
            history[-k:]
            if len(history) >= k
            else np.vstack([np.full((k - len(history), self.n_nodes), np.nan), history])
        )

    def likelihood(self, raw: np.ndarray) -> np.ndarray:
        """The filtered likelihood ``[node]`` of this tick (0.5 while learning)."""
        raw = np.asarray(raw, dtype=np.float64)
        if raw.shape != (self.n_nodes,):
            raise DetectorError(
                f"raw scores have shape {raw.shape}, the likelihood tracks ({self.n_nodes},)"
            )
        c = self.config
        out = np.full(self.n_nodes, 0.5)
        if self._iteration >= c.learning_period + c.estimation_samples:
            if self._mean is None or self._iteration % c.reestimation_period == 0:
                self._estimate()
            assert self._mean is not None
            self._recent = np.vstack([self._recent[1:], raw[None, :]])
            filled = np.isfinite(self._recent)
            count = filled.sum(axis=0)
            total = np.where(filled, self._recent, 0.0).sum(axis=0)
            level = np.where(count > 0, total / np.maximum(count, 1), np.nan)  # [node]
            tail = tail_probability(level, self._mean, self._std)
            tail = np.where(np.isfinite(tail), tail, 1.0)
            red = 1.0 - c.red
            filtered = np.where((tail <= red) & (self._previous <= red), 1.0 - c.yellow, tail)
            self._previous = tail
            out = np.where(np.isfinite(raw), 1.0 - filtered, 0.0)
        self._history[self._iteration % c.historic_window] = raw
        self._iteration += 1
        return out

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        """The log-likelihood score ``[node]`` in [0, 1] of this tick."""
        return np.clip(log_likelihood(self.likelihood(raw)), 0.0, 1.0)
