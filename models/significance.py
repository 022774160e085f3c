"""Is one model's test error really lower than another's? Paired tests over test windows.

The Diebold-Mariano test (Diebold & Mariano 1995) on the per-window loss differential
``d_t = L_a,t - L_b,t``: ``L`` is the squared error of a window averaged over its
observed targets (every sensor, steps ``1..h``: the pooled MSE whose root the reports
show as pooled RMSE). Consecutive windows share targets and inputs, so ``d_t`` is
autocorrelated; its mean's variance is the HAC (Newey-West, Bartlett kernel) estimate
with ``lag`` at least the horizon plus the input window, and the statistic is compared to a
t distribution with ``n - 1`` degrees of freedom (Harvey, Leybourne & Newbold 1997).
statsmodels computes the HAC variance (an OLS of ``d`` on a constant).

Verdicts are two-sided at ``ALPHA``: ``"ahead (p < 0.05)"``, ``"behind (p < 0.05)"``
or ``"no significant difference"``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ALPHA = 0.05


@dataclass(frozen=True)
class PairedTest:
    """The Diebold-Mariano test of model a against model b (negative = a better)."""

    mean_difference: float  # mean of L_a - L_b (squared original units)
    statistic: float
    p_value: float
    lag: int
    windows: int

    @property
    def verdict(self) -> str:
        """``"ahead (p < 0.05)"`` when a's loss is significantly lower, ``"behind (p <
        0.05)"`` when higher, else ``"no significant difference"``."""
        if not np.isfinite(self.p_value) or self.p_value >= ALPHA:
            return "no significant difference"
        return f"ahead (p < {ALPHA:g})" if self.mean_difference < 0 else f"behind (p < {ALPHA:g})"

    def to_dict(self) -> dict[str, float | int | str]:
        return {
            "mean_loss_difference": self.mean_difference,
            "dm_statistic": self.statistic,
            "p_value": self.p_value,
            "hac_lag": self.lag,
            "windows": self.windows,
            "verdict": self.verdict,
        }


def window_losses(actual: np.ndarray, forecast: np.ndarray, steps: int) -> np.ndarray:
    """Mean squared error of each window over its observed targets in steps ``1..steps``:
    float64 ``[n]`` from ``actual`` and ``forecast`` ``[n, horizon, node]`` (NaN actual =
    missing; a window with nothing observed is NaN)."""
    if actual.shape != forecast.shape or actual.ndim != 3:
        raise ValueError(
            f"actual {actual.shape} and forecast {forecast.shape} must both be [n, horizon, node]"
        )
    a = np.asarray(actual[:, :steps], dtype=np.float64)
    err = np.where(np.isfinite(a), np.asarray(forecast[:, :steps], dtype=np.float64) - a, np.nan)
    flat = (err**2).reshape(len(a), -1)
    seen = np.isfinite(flat).sum(axis=1)
    total = np.nansum(flat, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(seen > 0, total / np.maximum(seen, 1), np.nan)


def diebold_mariano(loss_a: np.ndarray, loss_b: np.ndarray, lag: int) -> PairedTest:
    """Diebold-Mariano test of ``loss_a`` against ``loss_b`` (paired per window) with a
    Newey-West variance of ``lag`` lags; windows where either loss is NaN are dropped."""
    import statsmodels.api as sm
    from scipy import stats

    a, b = np.asarray(loss_a, dtype=np.float64), np.asarray(loss_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(
            f"paired losses must be two 1-D arrays of one length, got {a.shape}, {b.shape}"
        )
    d = (a - b)[np.isfinite(a) & np.isfinite(b)]
    n = len(d)
    if n < 3:
        return PairedTest(
            float(np.mean(d)) if n else float("nan"), float("nan"), float("nan"), lag, n
        )
    mean = float(d.mean())
    if np.allclose(d, d[0]):  # no variation: identical forecasts, or a constant gap
        p = 1.0 if d[0] == 0 else 0.0
        return PairedTest(mean, float("inf") * np.sign(mean) if p == 0 else 0.0, p, lag, n)
    lags = max(0, min(int(lag), n - 2))
    fit = sm.OLS(d, np.ones(n)).fit(cov_type="HAC", cov_kwds={"maxlags": lags})
    se = float(np.sqrt(fit.cov_params()[0, 0]))
    statistic = mean / se if se > 0 else float("inf") * np.sign(mean)
    p_value = float(2.0 * stats.t.sf(abs(statistic), df=n - 1))
    return PairedTest(mean, float(statistic), p_value, lags, n)
