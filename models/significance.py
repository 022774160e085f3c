"""Is one model's test error really lower than another's? Paired tests over test windows.

The Diebold-Mariano test (Diebold & Mariano 1995) on the per-window loss differential
``d_t = L_a,t - L_b,t``: ``L`` is the squared error of a window averaged over its
observed targets (every sensor, steps ``1..h``: the pooled MSE whose root the reports
show as pooled RMSE).

**Variance and reference distribution.** Two windows up to ``lag = h + window - 1``
origins apart share targets or inputs, so ``d_t`` is autocorrelated at least that far
(a triangular autocorrelation, plus the daily rhythm of the errors' size). The variance
of its mean is the equal-weighted cosine (EWC) estimate of Lazarus, Lewis, Stock &
Watson (2018, "HAR inference: recommendations for practice"): ``Omega = mean_j
Lambda_j^2`` over ``j = 1..B`` with ``Lambda_j = sqrt(2/n) sum_t cos(pi j (t - 1/2) / n)
d_t``, and the statistic ``sqrt(n) mean(d) / sqrt(Omega)`` is compared with a t
distribution with ``B`` degrees of freedom, exact under fixed-b asymptotics. Their
rule ``B = 0.4 n^(2/3)`` assumes short memory; with our overlap the cosines it uses
reach frequencies where the differential's spectrum has already fallen, so here ``B =
floor(0.4 n / (lag + 1))``, at most ``0.4 n^(2/3)`` (:func:`ewc_degrees`).

Rejection rates (%) at a nominal 5 % of equal-skill pairs, 2,000 replications
(``python -m tests.test_significance``; "old": Newey-West with bandwidth ``2 * lag``,
the Harvey-Leybourne-Newbold factor and t(n-1); "LLSW": EWC with ``B = 0.4 n^(2/3)``):

==================================  =================  =================  ===============
n = 200 / 380 / 2000 windows        old                LLSW               this rule
==================================  =================  =================  ===============
moving sums, lag 14                 9.1 / 8.0 / 6.8    7.7 / 6.7 / 5.1    5.1 / 4.9 / 5.0
moving sums, lag 23                 10.2 / 8.7 / 8.4   15.0 / 11.2 / 7.6  5.9 / 4.9 / 5.9
daily-cycle window losses, lag 14   3.2 / 4.2 / 5.4    4.0 / 4.4 / 4.9    1.7 / 3.6 / 4.6
daily-cycle window losses, lag 23   2.5 / 2.9 / 5.4    4.9 / 4.4 / 5.1    1.3 / 2.1 / 3.8
==================================  =================  =================  ===============

Power is lower at a few hundred windows (moving sums 2.5 standard errors apart, n = 380:
62 / 58 % against 74 / 73 % for the old rule, whose size is 8-9 %); docs/decisions.md
("Paired tests") has the whole table. Fewer than ``MIN_DF`` degrees of freedom
(``5 (lag + 1)`` windows: 75 at lag 14, 120 at lag 23) give no verdict (``p`` NaN,
reason "too few windows").

Verdicts are two-sided at ``ALPHA`` on the p-value named by ``verdict_p``: ``"ahead (p <
0.05)"``, ``"behind (p < 0.05)"`` or ``"no significant difference"``, the last with a
``reason`` when the test could not be made or its p-value was not enough
(``"too few windows"``, ``"seeds disagree"``...). Degenerate inputs: differences within
rounding of the losses (``RELATIVE_TOLERANCE``, whatever their units) give p = 1; a gap
the same in every window gives p = 0 (the ordering is sure, not noise; shown as
``p < 1e-16`` by :func:`p_text`); an infinite loss is an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np

ALPHA = 0.05
# Loss differences this small relative to the losses are rounding, not a difference.
RELATIVE_TOLERANCE = 1e-9
# Fewer EWC degrees of freedom than this give no verdict.
MIN_DF = 2
METHOD = "ewc"
K = TypeVar("K")


@dataclass(frozen=True)
class PairedTest:
    """The Diebold-Mariano test of model a against model b (negative = a better).

    ``p_adjusted`` is the family-wise adjusted p-value (None: not adjusted, the verdict
    uses ``p_value``); ``seeds_agree`` False makes a significant result "no significant
    difference" (reason "seeds disagree"); ``reason`` says why no test could be made.
    """

    mean_difference: float  # mean of L_a - L_b (squared original units)
    statistic: float  # sqrt(n) mean / sqrt(EWC long-run variance)
    p_value: float
    lag: int  # how far apart windows share targets or inputs (h + window - 1)
    windows: int
    p_adjusted: float | None = None
    adjustment: str = "none"
    seeds_agree: bool = True
    reason: str | None = None
    df: int | None = None  # EWC degrees of freedom B: the t distribution's
    method: str = METHOD

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
        the family-wise one, ``verdict_p`` names the one the verdict uses, ``hac_lag``
        the overlap lag and ``df`` the EWC degrees of freedom it gave."""
        return {
            "mean_loss_difference": self.mean_difference,
            "dm_statistic": self.statistic,
            "p_value": self.p_value,
            "hac_lag": self.lag,
            "windows": self.windows,
            "verdict": self.verdict,
            "p_value_adjusted": self.verdict_p,
            "p_adjustment": self.adjustment,
            "verdict_p": "p_value" if self.p_adjusted is None else "p_value_adjusted",
            "seeds_agree": self.seeds_agree,
            "verdict_reason": self.verdict_reason,
            "df": self.df,
            "method": self.method,
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


def ewc_degrees(n: int, lag: int) -> int:
    """EWC degrees of freedom ``B`` for ``n`` windows that share data up to ``lag``
    apart: ``floor(0.4 n / (lag + 1))``, at most Lazarus et al.'s ``floor(0.4 n^(2/3))``."""
    by_overlap = (2 * n) // (5 * (int(lag) + 1))
    llsw = int(0.4 * n ** (2.0 / 3.0) + 1e-9)  # 1e-9: 0.4 * 1000^(2/3) is 39.999...
    return max(0, min(by_overlap, llsw))


def min_windows(lag: int) -> int:
    """The fewest windows whose test has ``MIN_DF`` degrees of freedom at ``lag``."""
    n = max(3, -(-5 * MIN_DF * (int(lag) + 1) // 2))
    while ewc_degrees(n, lag) < MIN_DF:
        n += 1
    return n


def ewc_long_run_variance(d: np.ndarray, degrees: int) -> float:
    """Lazarus et al.'s equal-weighted cosine estimate of ``d``'s long-run variance
    (``n`` times the variance of its mean) from its first ``degrees`` cosine transforms."""
    from scipy.fft import dct

    n = len(d)
    # DCT-II: y_j = 2 sum_t d_t cos(pi j (t + 1/2) / n), in O(n log n) and O(n) memory.
    transforms = dct(d - d.mean(), type=2)[1 : degrees + 1] * np.sqrt(2.0 / n) / 2.0
    return float(np.mean(transforms**2))


def p_text(p: float) -> str:
    """``p = 0.0123`` for reports; ``p < 1e-16`` below double precision's resolution."""
    return "p < 1e-16" if p < 1e-16 else f"p = {p:.3g}"


def diebold_mariano(loss_a: np.ndarray, loss_b: np.ndarray, lag: int) -> PairedTest:
    """Diebold-Mariano test of ``loss_a`` against ``loss_b`` (paired per window): ``lag``
    is how far apart windows still share targets or inputs (``h + window - 1``) and
    sets the EWC degrees of freedom (:func:`ewc_degrees`). Windows where either loss is
    NaN are dropped."""
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
    lag = int(lag)
    kept = np.isfinite(a) & np.isfinite(b)
    d = (a - b)[kept]
    n = len(d)
    degrees = ewc_degrees(n, lag)
    mean = float(d.mean()) if n else float("nan")
    nan = float("nan")
    if degrees < MIN_DF:
        why = (
            "no window with both losses"
            if n == 0
            else f"too few windows ({n} < {min_windows(lag)})"
        )
        return PairedTest(mean, nan, nan, lag, n, reason=why, df=degrees)
    scale = max(float(np.abs(a[kept]).mean()), float(np.abs(b[kept]).mean()))
    tolerance = RELATIVE_TOLERANCE * scale
    if float(np.abs(d).max()) <= tolerance:  # identical forecasts, up to rounding
        return PairedTest(mean, 0.0, 1.0, lag, n, df=degrees)
    if float(np.ptp(d)) <= tolerance:  # the same gap in every window: a sure ordering
        return PairedTest(mean, float(np.copysign(np.inf, mean)), 0.0, lag, n, df=degrees)
    long_run = ewc_long_run_variance(d, degrees)
    if not (np.isfinite(long_run) and long_run > 0):
        why = f"the loss differential's variance is {long_run:g} (losses too large?)"
        return PairedTest(mean, nan, nan, lag, n, reason=why, df=degrees)
    statistic = float(np.sqrt(n) * mean / np.sqrt(long_run))
    p_value = float(2.0 * stats.t.sf(abs(statistic), df=degrees))
    return PairedTest(mean, statistic, p_value, lag, n, df=degrees)


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
