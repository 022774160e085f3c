"""Bayesian online changepoint detection: how surprising a reading is under a model of
level shifts.

Adams and MacKay, "Bayesian online changepoint detection" (2007), per sensor: the series
is a sequence of segments, each with its own unknown mean and variance (a Normal-Gamma
prior), and a new segment starts at any tick with probability ``1 / hazard``. The
posterior over the *run length* (ticks since the last change, truncated at ``max_run``)
is updated exactly at every tick, each run length predicting the next reading with a
Student-t. The statistic is the reading's *surprise*: ``-log`` of its two-sided tail
probability under the predictive mixture over run lengths (compared to 1e-9), large for a
spike and for the first readings after a level or variance shift, until the posterior
moves to the new segment; a reading at the predicted level has surprise 0. It becomes a
conformal p-value against earlier surprises (:mod:`models.anomaly.online`).

The prior of a new segment is centred on the sensor's running mean, its scale the
running variance (so the detector is unit-free); before two readings it uses the head's
variance when ``start``/``fit`` were given rows, else 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
from scipy.special import gammaln, logsumexp, stdtr

from models.anomaly.base import DetectorError
from models.anomaly.online import OnlineConfig, OnlineDetector, series_2d
from models.panel import SensorPanel

# The smallest prior variance, relative to the squared running mean (a constant series).
_MIN_VARIANCE = 1e-12


@dataclass(frozen=True, kw_only=True)
class ChangepointConfig(OnlineConfig):
    """Settings of :class:`ChangepointDetector`.

    hazard : expected ticks between changes. max_run : run lengths tracked (longer runs
    share the last one). prior_strength : pseudo-observations of the prior variance.
    """

    hazard: float = 250.0
    max_run: int = 300
    prior_strength: float = 1.0

    def __post_init__(self) -> None:
        if self.hazard <= 1.0 or self.max_run < 2 or self.prior_strength <= 0:
            raise DetectorError(
                f"need hazard > 1, max_run >= 2 and prior_strength > 0, got {self.hazard}, "
                f"{self.max_run}, {self.prior_strength}"
            )


class ChangepointDetector(OnlineDetector):
    """Scores each reading by its surprise under Bayesian online changepoint detection."""

    name: ClassVar[str] = "changepoint"

    def __init__(self, config: ChangepointConfig | None = None) -> None:
        self.config = config or ChangepointConfig()
        super().__init__()

    @classmethod
    def _from_settings(cls, settings: dict[str, Any]) -> Self:
        return cls(ChangepointConfig(**settings))

    def _prepare(self, head: SensorPanel | None) -> None:
        n, r = self.n_nodes, self.config.max_run
        variance = np.ones(n)
        if head is not None and head.n_time > 1:
            values, mask = series_2d(head)
            seen = np.where(mask, values, np.nan).astype(np.float64)
            enough = np.isfinite(seen).sum(axis=0) > 1
            if enough.any():
                variance[enough] = np.nanvar(seen[:, enough], axis=0)
        self._head_variance = np.maximum(variance, _MIN_VARIANCE)
        self._log_run = np.full((n, r), -np.inf)  # [node, run]: log posterior
        self._mu = np.zeros((n, r))
        self._kappa = np.ones((n, r))
        self._alpha = np.ones((n, r))
        self._beta = np.ones((n, r))
        self._moments = np.zeros((n, 3))  # running count, mean, M2 (Welford)

    def _arrays(self) -> dict[str, np.ndarray]:
        return {
            "head_variance": self._head_variance.copy(),
            "log_run": self._log_run.copy(),
            "mu": self._mu.copy(),
            "kappa": self._kappa.copy(),
            "alpha": self._alpha.copy(),
            "beta": self._beta.copy(),
            "moments": self._moments.copy(),
        }

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        n, r = self.n_nodes, self.config.max_run
        for key in ("log_run", "mu", "kappa", "alpha", "beta"):
            if arrays[key].shape != (n, r):
                raise ValueError(f"{key} has shape {arrays[key].shape}, expected {(n, r)}")
        if arrays["moments"].shape != (n, 3) or arrays["head_variance"].shape != (n,):
            raise ValueError("running moments do not match the sensors")
        self._head_variance = arrays["head_variance"].astype(np.float64)
        self._log_run = arrays["log_run"].astype(np.float64)
        self._mu = arrays["mu"].astype(np.float64)
        self._kappa = arrays["kappa"].astype(np.float64)
        self._alpha = arrays["alpha"].astype(np.float64)
        self._beta = arrays["beta"].astype(np.float64)
        self._moments = arrays["moments"].astype(np.float64)

    def _prior(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and variance of a new segment's prior for sensors ``rows``."""
        count, mean, m2 = self._moments[rows].T
        variance = np.where(count > 1, m2 / np.maximum(count - 1, 1), self._head_variance[rows])
        floor = _MIN_VARIANCE * np.maximum(1.0, mean**2)
        return mean, np.maximum(variance, floor)

    def _step(self, x: np.ndarray) -> np.ndarray:
        c = self.config
        rows = np.nonzero(np.isfinite(x))[0]
        stats = np.full(self.n_nodes, np.nan)
        if not len(rows):
            return stats
        xr = x[rows][:, None]  # [row, 1]
        fresh = self._moments[rows, 0] == 0
        if fresh.any():  # a sensor's first reading: one segment starting now
            first = rows[fresh]
            self._moments[first] = np.column_stack([np.zeros(len(first)), x[first], 0.0 * x[first]])
            self._log_run[first] = -np.inf
            self._log_run[first, 0] = 0.0
            _, variance = self._prior(first)
            self._mu[first] = x[first][:, None]
            self._kappa[first] = 1.0
            self._alpha[first] = c.prior_strength
            self._beta[first] = c.prior_strength * variance[:, None]
        mu, kappa = self._mu[rows], self._kappa[rows]
        alpha, beta = self._alpha[rows], self._beta[rows]
        # Student-t predictive per run: df 2 alpha, scale^2 beta (kappa + 1) / (alpha kappa)
        scale2 = beta * (kappa + 1.0) / (alpha * kappa)
        df = 2.0 * alpha
        z2 = (xr - mu) ** 2 / (df * scale2)
        log_pred = (
            gammaln((df + 1.0) / 2.0)
            - gammaln(df / 2.0)
            - 0.5 * np.log(math.pi * df * scale2)
            - (df + 1.0) / 2.0 * np.log1p(z2)
        )  # [row, run]
        joint = self._log_run[rows] + log_pred
        tail = 2.0 * stdtr(df, -np.sqrt(z2 * df))  # [row, run]: P(|X - mu| >= |x - mu|)
        weight = np.exp(self._log_run[rows])
        surprise = -np.log(np.clip((weight * tail).sum(axis=1), 1e-300, 1.0))
        stats[rows] = np.where(fresh, np.nan, np.round(surprise, 9))
        log_h = -math.log(c.hazard)
        log_1mh = math.log1p(-1.0 / c.hazard)
        grown = joint + log_1mh
        new = np.empty_like(joint)
        new[:, 0] = logsumexp(joint + log_h, axis=1)
        new[:, 1:] = grown[:, :-1]
        new[:, -1] = np.logaddexp(grown[:, -2], grown[:, -1])  # the longest runs share a bin
        self._log_run[rows] = new - logsumexp(new, axis=1)[:, None]
        # Posterior of each run after this reading, shifted by one; run 0 takes the prior.
        mu_n = (kappa * mu + xr) / (kappa + 1.0)
        beta_n = beta + kappa * (xr - mu) ** 2 / (2.0 * (kappa + 1.0))
        count, mean, m2 = self._moments[rows].T
        count = count + 1.0
        delta = x[rows] - mean
        mean = mean + delta / count
        m2 = m2 + delta * (x[rows] - mean)
        self._moments[rows] = np.column_stack([count, mean, m2])
        prior_mean, prior_var = self._prior(rows)
        # The last bin holds the longest runs: it keeps the statistics of the heavier part.
        from_below = grown[:, -2] > grown[:, -1]
        for name, updated, start in (
            ("_mu", mu_n, prior_mean),
            ("_kappa", kappa + 1.0, np.ones(len(rows))),
            ("_alpha", alpha + 0.5, np.full(len(rows), c.prior_strength)),
            ("_beta", beta_n, c.prior_strength * prior_var),
        ):
            array = getattr(self, name)
            shifted = np.empty_like(updated)
            shifted[:, 0] = start
            shifted[:, 1:] = updated[:, :-1]
            shifted[:, -1] = np.where(from_below, updated[:, -2], updated[:, -1])
            array[rows] = shifted
        return stats

    def _reason(self, i: int, x: float, p: float) -> str:
        run = int(np.argmax(self._log_run[i]))
        return (
            f"{x:.4g} is surprising under a model of level shifts (p={p:.2g}); most likely "
            f"ticks since the last change: {run}"
        )
