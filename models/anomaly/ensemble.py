"""An ensemble's alarm rule: calibrated detector scores merged into one, and a rest period.

Every detector reports ``score = 1 - p`` with ``p`` a calibrated p-value, so detectors
of different kinds can be merged by one rule fixed in advance:

**Weighted Bonferroni.** Member ``i`` gets a share ``alpha_i`` of the total false-alarm
budget ``A = sum_i alpha_i``; the merged p-value is ``min(1, min_i p_i * A / alpha_i)``
and the ensemble fires when it is ``<= A``, i.e. when *any* member ``i`` reaches
``p_i <= alpha_i``. With valid member p-values the merged one is valid too, whatever
their dependence, so a threshold on it bounds the false-alarm rate. A member that is
not scored yet (NaN) does not take part.

**Rest period.** After a firing, the same sensor stays quiet for ``rest`` ticks (its
score is reported as 0), as an alert that already fired would: one anomaly, one alarm.
NAB charges every detected row outside its windows, so an alarm repeated through an
episode costs false positives there (contextOSE's ``restPeriod`` does the same).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from models.anomaly.base import DetectorError


@dataclass(frozen=True)
class AlarmRule:
    """Which members an ensemble merges, their false-alarm shares, and its rest period.

    alphas : ``(member, alpha_i)`` pairs, each ``alpha_i`` in (0, 1).
    rest : ticks a sensor stays quiet after a firing (0: never).
    """

    alphas: tuple[tuple[str, float], ...]
    rest: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "alphas", tuple((str(n), float(a)) for n, a in self.alphas))
        if not self.alphas:
            raise DetectorError("an alarm rule needs at least one member")
        names = [n for n, _ in self.alphas]
        if len(set(names)) != len(names):
            raise DetectorError(f"members appear twice in {names}")
        if any(not 0.0 < a < 1.0 for _, a in self.alphas):
            raise DetectorError(f"every alpha must be in (0, 1), got {self.alphas}")
        if self.rest < 0:
            raise DetectorError(f"rest must be >= 0 ticks, got {self.rest}")

    @property
    def members(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.alphas)

    @property
    def budget(self) -> float:
        """``A``: the merged p-value at which the ensemble fires."""
        return float(sum(a for _, a in self.alphas))

    @property
    def threshold(self) -> float:
        """The merged score at which the ensemble fires, ``1 - A``."""
        return 1.0 - self.budget


def merged_pvalues(rule: AlarmRule, pvalues: Mapping[str, np.ndarray]) -> np.ndarray:
    """The weighted-Bonferroni p-values of ``rule``'s members (arrays of one shape).

    NaN p-values (a member not scoring yet) are left out; where no member scores, 1.
    """
    missing = [n for n in rule.members if n not in pvalues]
    if missing:
        raise DetectorError(f"no p-values of members {missing}; got {sorted(pvalues)}")
    budget = rule.budget
    scaled = [np.asarray(pvalues[n], dtype=np.float64) * (budget / a) for n, a in rule.alphas]
    stacked = np.stack(scaled)
    merged = np.fmin.reduce(stacked, axis=0)
    return np.minimum(1.0, np.where(np.isnan(merged), 1.0, merged))


class RestPeriod:
    """Streaming rest period of ``n_nodes`` sensors: quiet for ``rest`` ticks after a firing."""

    def __init__(self, n_nodes: int, threshold: float, rest: int) -> None:
        if n_nodes < 1 or rest < 0:
            raise DetectorError(f"need n_nodes >= 1 and rest >= 0, got {n_nodes}, {rest}")
        self.threshold = threshold
        self.rest = rest
        self._quiet = np.zeros(n_nodes, np.int64)  # ticks of rest left per sensor

    def reset(self) -> None:
        self._quiet[:] = 0

    def __call__(self, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(reported score, fired)`` ``[node]`` of this tick's merged scores."""
        score = np.asarray(score, dtype=np.float64)
        resting = self._quiet > 0
        fired = ~resting & (score >= self.threshold)
        self._quiet = np.where(resting, self._quiet - 1, 0)
        self._quiet[fired] = self.rest
        return np.where(resting, 0.0, score), fired


def ensemble_series(
    rule: AlarmRule, pvalues: Mapping[str, np.ndarray], rest: int | None = None
) -> np.ndarray:
    """Reported scores ``[row]`` of one sensor's member p-values ``[row]``, in row order.

    ``rest`` overrides ``rule.rest`` (NAB scales it with the file's probation).
    """
    merged = merged_pvalues(rule, pvalues)
    score = 1.0 - merged
    period = RestPeriod(1, rule.threshold, rule.rest if rest is None else rest)
    out = np.empty_like(score)
    for t in range(len(score)):
        out[t] = period(score[t : t + 1])[0][0]
    return out


def fired_rows(score: np.ndarray, threshold: float, rest: int) -> np.ndarray:
    """Rows that fire with a rest period: the first ``score >= threshold``, then the first
    one more than ``rest`` rows later, and so on (as :class:`RestPeriod`)."""
    candidates = np.nonzero(np.asarray(score) >= threshold)[0]
    out: list[int] = []
    ready = -1
    for t in candidates.tolist():
        if t >= ready:
            out.append(t)
            ready = t + rest + 1
    return np.asarray(out, dtype=np.int64)
