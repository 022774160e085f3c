"""Is one model's test error really lower than another's? Paired tests over test windows.

The Diebold-Mariano test (Diebold & Mariano 1995) on the per-window loss differential
``d_t = L_a,t - L_b,t``: ``L`` is the squared error of a window averaged over its
observed targets (every sensor, steps ``1..h``: the pooled MSE whose root the reports
show as pooled RMSE).

**Variance.** Two windows up to ``lag = h + window - 1`` origins apart share targets or
inputs, so ``d_t`` is autocorrelated at least that far. Its mean's variance is a
Newey-West (Bartlett kernel) estimate whose bandwidth is ``2 * lag``: at bandwidth
``lag`` the Bartlett weights shrink the autocovariances that overlapping windows make
(a triangular autocorrelation out to ``lag``) to about a third of their sum, and the
test rejected 12-24 % of equal-skill pairs at a nominal 5 %. The Bartlett estimate is
never negative (a weighted sum of periodogram ordinates with Fejer weights), unlike the
rectangular kernel of the original test, so no fallback is needed. statsmodels computes
it (an OLS of ``d`` on a constant, no degrees-of-freedom correction).

**Small samples.** The statistic is multiplied by the Harvey, Leybourne & Newbold (1997)
factor ``sqrt((n + 1 - 2k + k(k - 1)/n) / n)`` and compared with a t distribution with
``n - 1`` degrees of freedom. HLN derive it for ``k - 1`` autocovariances; here
``k = bandwidth + 1``, the number of lags the kernel spans, not the forecast horizon:
the factor corrects the bias of estimating ``2k - 1`` autocovariances around an
estimated mean, which grows with the lags used. With Bartlett weights that bias is
smaller than with HLN's equal weights, so the factor is conservative; it is 0.92 at
n = 380 windows, lag 14, and tends to 1 as n grows. Since the factor equals
``(n - k)(n - k + 1) / n^2``, it vanishes as ``n`` nears ``k``: fewer than ``2k``
windows give no verdict (``p`` NaN). On simulated overlapping-window losses of equal
skill this rejects about 7-11 % at a nominal 5 % (n 100-380; against 12-24 % before),
still above 5 %: the verdicts are then adjusted for the family of tests and checked
against the seeds (:mod:`models.forecasters.claims`).

Verdicts are two-sided at ``ALPHA`` on the p-value named by ``verdict_p``: ``"ahead (p <
0.05)"``, ``"behind (p < 0.05)"`` or ``"no significant difference"``, the last with a
``reason`` when the test could not be made or its p-value was not enough
(``"too few windows"``, ``"seeds disagree"``...). Degenerate inputs: differences within
rounding of the losses (``RELATIVE_TOLERANCE``, whatever their units) give p = 1; a gap
the same in every window gives p = 0 (the ordering is sure, not noise); an infinite
loss is an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np

ALPHA = 0.05
# Loss differences this small relative to the losses are rounding, not a difference.
RELATIVE_TOLERANCE = 1e-9
K = TypeVar("K")


@dataclass(frozen=True)
class PairedTest:
    """The Diebold-Mariano test of model a against model b (negative = a better).

    ``p_adjusted`` is the family-wise adjusted p-value (None: not adjusted, the verdict
    uses ``p_value``); ``seeds_agree`` False makes a significant result "no significant
    difference" (reason "seeds disagree"); ``reason`` says why no test could be made.
    """

    mean_difference: float  # mean of L_a - L_b (squared original units)
    statistic: float  # HLN-corrected
    p_value: float
    lag: int  # the Bartlett bandwidth used
    windows: int
    hln_factor: float = float("nan")
    p_adjusted: float | None = None
    adjustment: str = "none"
    seeds_agree: bool = True
    reason: str | None = None

    @property
    def verdict_p(self) -> float:
        """The p-value the verdict uses: the adjusted one when there is one."""
        return self.p_value if self.p_adjusted is None else self.p_adjusted

    @property
    def verdict_reason(self) -> str | None:
        """Why the verdict is "no significant difference" beyond a large p (None: it is not,
        or p decided it)."""
        if self.reason is not None:
            return self.reason
        if np.isfinite(self.verdict_p) and self.verdict_p < ALPHA and not self.seeds_agree:
            return "seeds disagree"
        return None

    @property
    def verdict(self) -> str:
        """``"ahead (p < 0.05)"`` when a's loss is significantly lower, ``"behind (p <
        0.05)"`` when higher, else ``"no significant difference"``."""
        p = self.verdict_p
        if self.verdict_reason is not None or not np.isfinite(p) or p >= ALPHA:
            return "no significant difference"
        return f"ahead (p < {ALPHA:g})" if self.mean_difference < 0 else f"behind (p < {ALPHA:g})"

    def to_dict(self) -> dict[str, float | int | str | bool | None]:
        """The ``metrics.json`` entry: ``p_value`` is the raw p-value, ``p_value_adjusted``
        the family-wise one, ``verdict_p`` names the one the verdict uses."""
        return {
            "mean_loss_difference": self.mean_difference,
            "dm_statistic": self.statistic,
            "p_value": self.p_value,
            "hac_lag": self.lag,
            "windows": self.windows,
            "verdict": self.verdict,
            "hln_factor": self.hln_factor,
            "p_value_adjusted": self.verdict_p,
            "p_adjustment": self.adjustment,
            "verdict_p": "p_value" if self.p_adjusted is None else "p_value_adjusted",
            "seeds_agree": self.seeds_agree,
            "verdict_reason": self.verdict_reason,
        }


def window_losses(actual: np.ndarray, forecast: np.ndarray, steps: int) -> np.ndarray:
    """Mean squared error of each window over its observed targets in steps ``1..steps``:
    float64 ``[n]`` from ``actual`` and ``forecast`` ``[n, horizon, node]`` (NaN actual =
    missing; a window with nothing observed is NaN). A NaN/inf forecast of an observed
    target is a ValueError, as in :func:`models.metrics.score_batch`."""
    if actual.shape != forecast.shape or actual.ndim != 3:
        raise ValueError(
            f"actual {actual.shape} and forecast {forecast.shape} must both be [n, horizon, node]"
        )
    a = np.asarray(actual[:, :steps], dtype=np.float64)
    f = np.asarray(forecast[:, :steps], dtype=np.float64)
    bad = np.isfinite(a) & ~np.isfinite(f)
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} forecasts are NaN/inf where the target is observed (first in "
            f"window {int(np.argwhere(bad)[0][0])}); the model must forecast every sensor"
        )
    err = np.where(np.isfinite(a), f - a, np.nan)
    flat = (err**2).reshape(len(a), -1)
    seen = np.isfinite(flat).sum(axis=1)
    total = np.nansum(flat, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(seen > 0, total / np.maximum(seen, 1), np.nan)


def hln_factor(n: int, k: int) -> float:
    """Harvey, Leybourne & Newbold's ``sqrt((n + 1 - 2k + k(k - 1)/n) / n)`` for ``n``
    windows and a variance over ``k - 1`` lags (0 when ``n <= k``)."""
    return float(np.sqrt(max(0.0, (n + 1 - 2 * k + k * (k - 1) / n) / n)))


def diebold_mariano(loss_a: np.ndarray, loss_b: np.ndarray, lag: int) -> PairedTest:
    """Diebold-Mariano test of ``loss_a`` against ``loss_b`` (paired per window): ``lag``
    is how far apart windows still share targets or inputs (``h + window - 1``); the
    Newey-West bandwidth is twice that. Windows where either loss is NaN are dropped."""
    import statsmodels.api as sm
    from scipy import stats

    a, b = np.asarray(loss_a, dtype=np.float64), np.asarray(loss_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(
            f"paired losses must be two 1-D arrays of one length, got {a.shape}, {b.shape}"
        )
    if np.isinf(a).any() or np.isinf(b).any():
        raise ValueError(
            f"{int(np.isinf(a).sum() + np.isinf(b).sum())} window losses are infinite; a "
            "forecast overflowed (check the model's output scale)"
        )
    if int(lag) < 0:
        raise ValueError(f"the HAC lag must be 0 or more, got {lag}")
    kept = np.isfinite(a) & np.isfinite(b)
    d = (a - b)[kept]
    n = len(d)
    bandwidth = 2 * int(lag)
    k = bandwidth + 1
    mean = float(d.mean()) if n else float("nan")
    nan = float("nan")
    if n < max(3, 2 * k):
        why = "no window with both losses" if n == 0 else f"too few windows ({n} < {2 * k})"
        return PairedTest(mean, nan, nan, bandwidth, n, reason=why)
    scale = max(float(np.abs(a[kept]).mean()), float(np.abs(b[kept]).mean()))
    tolerance = RELATIVE_TOLERANCE * scale
    factor = hln_factor(n, k)
    if float(np.abs(d).max()) <= tolerance:  # identical forecasts, up to rounding
        return PairedTest(mean, 0.0, 1.0, bandwidth, n, factor)
    if float(np.ptp(d)) <= tolerance:  # the same gap in every window: a sure ordering
        return PairedTest(mean, float(np.copysign(np.inf, mean)), 0.0, bandwidth, n, factor)
    fit = sm.OLS(d, np.ones(n)).fit(cov_type="HAC", cov_kwds={"maxlags": bandwidth})
    variance = float(fit.cov_params()[0, 0])
    if not (np.isfinite(variance) and variance > 0):
        why = f"the loss differential's variance is {variance:g} (losses too large?)"
        return PairedTest(mean, nan, nan, bandwidth, n, factor, reason=why)
    statistic = mean / np.sqrt(variance) * factor
    p_value = float(2.0 * stats.t.sf(abs(statistic), df=n - 1))
    return PairedTest(mean, float(statistic), p_value, bandwidth, n, factor)


def holm_family(tests: Mapping[K, PairedTest]) -> dict[K, PairedTest]:
    """``tests`` with their p-values Holm-Bonferroni adjusted over the whole family (the
    tests with a p-value; the others are left unadjusted), so that all the family's
    verdicts together call a difference where there is none with probability at most
    ``ALPHA``, whatever their dependence."""
    from statsmodels.stats.multitest import multipletests

    tested = [key for key, test in tests.items() if np.isfinite(test.p_value)]
    if not tested:
        return dict(tests)
    adjusted = multipletests([tests[key].p_value for key in tested], method="holm")[1]
    how = f"holm over {len(tested)} tests"
    out = dict(tests)
    for key, p in zip(tested, adjusted, strict=True):
        out[key] = replace(tests[key], p_adjusted=float(p), adjustment=how)
    return out
