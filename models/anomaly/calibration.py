"""Conformal p-values for anomaly statistics, with an extrapolated tail.

A detector computes a nonconformity statistic ``a`` (larger = more anomalous) per row
(a sensor, or a sensor and a forecast horizon). :class:`ConformalPool` keeps the
statistics seen on normal data for each row and turns a new statistic into the
conformal p-value::

    p = (1 + #{pool >= a}) / (n + 1)

which is uniformly distributed (a valid p-value) when ``a`` comes from the same
distribution as the pool: split-conformal calibration, as
:func:`models.forecasters.base.conformal_halfwidth` does for forecast intervals. Its smallest value
is ``1 / (n + 1)``, so it cannot say *how far* beyond the largest calibration statistic
``a`` lies. Beyond the pool's maximum the p-value therefore keeps falling
exponentially, with the scale of the pool's upper tail (maximum minus 90 % quantile)::

    p = 1 / (n + 1) * exp(-(a - max) / (max - q90))

so a reading twice as far outside the normal range scores higher than one just outside
it (a light-tailed, exponential tail model; it only orders extreme values, it does not
claim exact probabilities there).

That is ``tail="max"``. Its p-values cannot fall below ``1 / (n + 1)`` while the pool
holds one statistic as large, so anomalies in the calibration data (an incident in the
validation weeks, or earlier alarms when calibrating online) hide later anomalies of the
same size. ``tail="pot"`` (peaks over threshold, as SPOT: Siffer et al., "Anomaly detection
in streams with extreme value theory", KDD 2017) reads the upper tail from the 90 %, 95 %
and 97.5 % quantiles instead, which a few contaminating statistics barely move: above the
90 % quantile ``u`` the p-value is a generalised Pareto tail through q95, whose shape is
Pickands' estimate ``k = log2((q97.5 - q95) / (q95 - u))`` averaged with the same estimate
from the quantile triples (q80, q90, q95) and (q85, q92.5, q96.25), each kept in [0, 1]
(one triple's estimate is noisy: on 800 exponential statistics its standard deviation is
0.23, the average's 0.11; no quantile above q97.5 enters, so contamination stays out)::

    p = 0.1 * (1 + (2**k - 1) * x) ** (-1 / k),   x = (a - u) / (q95 - u)

(``0.1 * 2**-x`` at ``k = 0``), and below ``u`` the conformal rank as before. A heavy
tail keeps its false-alarm rate (an exponential tail through q90 and q95 alone raised
several times the nominal rate on real traffic residuals, ``benchmarks/alert_rate.py``).
Rows whose quantiles tie (discrete statistics) keep the "max" tail. It is model-based
above ``u``: valid as far as the tail is generalised Pareto.

Pools are filled from validation data (:meth:`ConformalPool.extend`) and, for detectors
that keep learning while they stream (NAB's protocol), from every scored tick
(:meth:`ConformalPool.append`, first in first out beyond ``capacity``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np

from models.anomaly.base import DetectorError

TAIL_QUANTILE = 0.9
# The tail scale is re-estimated after this many appends (a quantile per row per tick
# would dominate the cost of a large network); the maximum is kept exact.
TAIL_REFRESH = 64
# Ring buffers start this wide and double up to ``capacity`` as statistics arrive: a
# pool calibrated on a few hundred validation steps scans and stores only those.
FIRST_WIDTH = 64
# ``tail="pot"``: the generalised Pareto tail runs from the TAIL_QUANTILE through these.
POT_QUANTILES = (0.95, 0.975)
# Its shape is the mean of Pickands' estimates from the quantile triples (q, (1+q)/2,
# (3+q)/4) of these q (the last triple is the tail's own).
PICKANDS_FROM = (0.8, 0.85, TAIL_QUANTILE)
# The generalised Pareto shape is kept in [0, MAX_SHAPE]: no lighter than exponential, no
# heavier than a tail whose mean is just infinite.
MAX_SHAPE = 1.0
# Quantiles closer than this share of their size count as tied (no tail spread between
# them): relative, so a series scored in any unit gets the same p-values.
RELATIVE_TIE = 1e-9
Tail = Literal["max", "pot"]
TAILS: tuple[Tail, ...] = ("max", "pot")


class ConformalPool:
    """Calibration statistics for ``n_rows`` independent rows, at most ``capacity`` each.

    Parameters
    ----------
    n_rows : rows (e.g. sensors x horizons).
    capacity : statistics kept per row; older ones are dropped first.
    min_count : rows with fewer statistics give NaN p-values (not scored yet).
    tail : beyond the pool, ``"max"`` or ``"pot"`` (module doc).
    """

    def __init__(
        self, n_rows: int, capacity: int = 4096, min_count: int = 20, tail: Tail = "max"
    ) -> None:
        if n_rows < 1 or capacity < 2 or min_count < 1:
            raise DetectorError(
                f"ConformalPool needs n_rows >= 1, capacity >= 2, min_count >= 1, "
                f"got {n_rows}, {capacity}, {min_count}"
            )
        check_tail(tail)
        self.n_rows = n_rows
        self.capacity = capacity
        self.min_count = min_count
        self.tail = tail
        # [row, width <= capacity], ring buffers; every column past the width is NaN.
        self._data = np.full((n_rows, min(capacity, FIRST_WIDTH)), np.nan)
        self._seen = np.zeros(n_rows, dtype=np.int64)  # [row], statistics ever appended
        self._anchor = np.full(n_rows, np.nan)  # [row]: the maximum, or q90 where _pot
        self._scale = np.full(n_rows, np.nan)  # [row], tail scale
        self._pot = np.zeros(n_rows, dtype=bool)  # [row]: the peaks-over-threshold tail
        self._shape = np.zeros(n_rows)  # [row]: its generalised Pareto shape
        self._since_refresh = 0

    @property
    def counts(self) -> np.ndarray:
        """int64 ``[row]``: statistics currently held per row."""
        return np.minimum(self._seen, self.capacity)

    def _grow(self, needed: int) -> None:
        """Widen the buffers to hold ``needed`` statistics per row (at most ``capacity``)."""
        width = self._data.shape[1]
        needed = min(needed, self.capacity)
        if needed <= width:
            return
        wider = min(self.capacity, max(needed, 2 * width))
        pad = np.full((self.n_rows, wider - width), np.nan)
        self._data = np.concatenate([self._data, pad], axis=1)

    def _order_stats(self, rows: np.ndarray, ranks: Callable[[int], list[int]]) -> np.ndarray:
        """``[len(rows), k]``: the ``ranks(n)``-th smallest statistics of each row of
        ``rows`` holding ``n`` (rows grouped by ``n``; a partition, not a sort, per group)."""
        counts = self.counts[rows]
        out = np.empty((len(rows), len(ranks(1))))
        for n in np.unique(counts).tolist():
            same = counts == n
            wanted = ranks(n)
            part = np.partition(self._data[rows[same]], sorted(set(wanted)), axis=1)
            out[same] = part[:, wanted]
        return out

    def _refresh(self) -> None:
        filled = np.flatnonzero(self.counts > 0)
        self._anchor = np.full(self.n_rows, np.nan)
        self._scale = np.full(self.n_rows, np.nan)
        self._pot = np.zeros(self.n_rows, dtype=bool)
        self._shape = np.zeros(self.n_rows)
        if len(filled):
            levels: tuple[float, ...] = (TAIL_QUANTILE,)
            if self.tail == "pot":
                levels += (*POT_QUANTILES, *_triples(PICKANDS_FROM[:-1]))

            def ranks(n: int) -> list[int]:
                out = [n - 1]
                for level in levels:
                    below = int(np.floor(level * (n - 1)))
                    out += [below, min(below + 1, n - 1)]
                return out

            stats = self._order_stats(filled, ranks)
            n = self.counts[filled]
            q = [
                _quantile(stats[:, 1 + 2 * i], stats[:, 2 + 2 * i], level, n)
                for i, level in enumerate(levels)
            ]
            anchor, spread = stats[:, 0], stats[:, 0] - q[0]  # the maximum, max - q90
            if self.tail == "pot":
                # The generalised Pareto tail from q90, one unit = q95 - q90.
                tiny = RELATIVE_TIE * np.abs(q[0])  # relative: the same at any unit
                d1, d2 = q[1] - q[0], q[2] - q[1]
                pot = (d1 > tiny) & (d2 > tiny)  # else (tied quantiles) the "max" tail
                own = _pickands(q[0], q[1], q[2], tiny, np.zeros(len(filled)))
                shapes = [own] + [
                    _pickands(q[i], q[i + 1], q[i + 2], tiny, own) for i in range(3, len(q), 3)
                ]
                self._shape[filled] = np.mean(shapes, axis=0)
                anchor, spread = np.where(pot, q[0], anchor), np.where(pot, d1, spread)
                self._pot[filled] = pot
            self._anchor[filled] = anchor
            # A constant pool has no spread: any larger value is then far outside it. The
            # floor is relative to the anchor, so a series in any unit scores the same.
            floor = np.maximum(RELATIVE_TIE * np.abs(anchor), np.finfo(np.float64).tiny)
            self._scale[filled] = np.maximum(spread, floor)
        self._since_refresh = 0

    def extend(self, stats: np.ndarray) -> None:
        """Add many statistics ``[n, row]`` (NaN entries are skipped)."""
        stats = np.asarray(stats, dtype=np.float64)
        if stats.ndim != 2 or stats.shape[1] != self.n_rows:
            raise DetectorError(f"expected statistics [n, {self.n_rows}], got {stats.shape}")
        self._grow(int((self._seen + np.isfinite(stats).sum(axis=0)).max()))
        for row in range(self.n_rows):
            col = stats[:, row]
            col = col[np.isfinite(col)][-self.capacity :]
            if not len(col):
                continue
            start = int(self._seen[row] % self.capacity)
            idx = (start + np.arange(len(col))) % self.capacity
            self._data[row, idx] = col
            self._seen[row] += len(col)
        self._refresh()

    def append(self, stat: np.ndarray) -> None:
        """Add one statistic per row ``[row]`` (NaN entries are skipped)."""
        stat = np.asarray(stat, dtype=np.float64)
        if stat.shape != (self.n_rows,):
            raise DetectorError(f"expected statistics [{self.n_rows}], got {stat.shape}")
        rows = np.nonzero(np.isfinite(stat))[0]
        if not len(rows):
            return
        self._grow(int(self._seen[rows].max()) + 1)
        self._data[rows, self._seen[rows] % self.capacity] = stat[rows]
        self._seen[rows] += 1
        self._since_refresh += 1
        if self._since_refresh >= TAIL_REFRESH or np.isnan(self._anchor[rows]).any():
            self._refresh()
        else:
            peak = rows[~self._pot[rows]]  # rows whose anchor is their maximum
            self._anchor[peak] = np.fmax(self._anchor[peak], stat[peak])

    def pvalues(self, stat: np.ndarray) -> np.ndarray:
        """float64 ``[row]`` conformal p-values of ``stat`` ``[row]`` (NaN: not scored)."""
        stat = np.asarray(stat, dtype=np.float64)
        if stat.shape != (self.n_rows,):
            raise DetectorError(f"expected statistics [{self.n_rows}], got {stat.shape}")
        n = self.counts
        at_least = (self._data >= stat[:, None]).sum(axis=1)  # NaN compares False
        p = (1.0 + at_least) / (n + 1.0)
        scored = np.isfinite(stat) & (n > 0)
        pot = scored & self._pot & (stat > self._anchor)
        with np.errstate(over="ignore"):  # far beyond a constant pool: p 0
            if pot.any():
                p[pot] = (1.0 - TAIL_QUANTILE) * _pareto_tail(
                    (stat[pot] - self._anchor[pot]) / self._scale[pot], self._shape[pot]
                )
            beyond = scored & ~self._pot & (at_least == 0)
            if beyond.any():
                excess = (stat[beyond] - self._anchor[beyond]) / self._scale[beyond]
                p[beyond] *= np.exp(-np.maximum(excess, 0.0))
        p[~np.isfinite(stat) | (n < self.min_count)] = np.nan
        return p

    def quantile(self, level: float) -> np.ndarray:
        """float64 ``[row]``: the split-conformal ``ceil((n+1) level) / n`` quantile."""
        if not 0.0 < level < 1.0:
            raise DetectorError(f"level must be in (0, 1), got {level}")
        out = np.full(self.n_rows, np.nan)
        rows = np.flatnonzero(self.counts >= self.min_count)
        if len(rows):

            def rank(n: int) -> list[int]:
                return [max(min(int(np.ceil((n + 1) * level)), n) - 1, 0)]

            out[rows] = self._order_stats(rows, rank)[:, 0]
        return out

    # --- persistence ------------------------------------------------------------------

    def state(self, prefix: str) -> dict[str, np.ndarray]:
        """Arrays that rebuild this pool with :meth:`from_state` (for safetensors)."""
        return {
            f"{prefix}.data": self._data.copy(),
            f"{prefix}.seen": self._seen.copy(),
            f"{prefix}.shape": np.array(
                [self.n_rows, self.capacity, self.min_count, TAILS.index(self.tail)]
            ),
        }

    @classmethod
    def from_state(cls, tensors: dict[str, np.ndarray], prefix: str) -> ConformalPool:
        """The pool saved by :meth:`state` under ``prefix``."""
        try:
            shape = [int(x) for x in tensors[f"{prefix}.shape"]]
            n_rows, capacity, min_count = shape[:3]
            tail = shape[3] if len(shape) > 3 else 0  # written before the setting: "max"
            data = np.asarray(tensors[f"{prefix}.data"], dtype=np.float64)
            seen = np.asarray(tensors[f"{prefix}.seen"], dtype=np.int64)
        except KeyError as exc:
            raise DetectorError(
                f"saved detector lacks calibration array {exc}; it was written by another "
                "version: fit and save it again"
            ) from None
        held = int(np.minimum(seen, capacity).max(initial=0))
        if (
            data.ndim != 2
            or data.shape[0] != n_rows
            or not held <= data.shape[1] <= capacity
            or seen.shape != (n_rows,)
        ):
            raise DetectorError(f"calibration arrays of {prefix!r} have inconsistent shapes")
        if not 0 <= tail < len(TAILS):
            raise DetectorError(f"calibration {prefix!r} has an unknown tail code {tail}")
        pool = cls(n_rows, capacity, min_count, TAILS[tail])
        pool._data = data.copy()
        pool._seen = seen.copy()
        pool._refresh()
        return pool


def check_tail(tail: str) -> Tail:
    """``tail`` if it is one of :data:`TAILS`, else a DetectorError naming them."""
    if tail not in TAILS:
        raise DetectorError(f"tail must be one of {', '.join(TAILS)}, got {tail!r}")
    return tail  # type: ignore[return-value]


def _quantile(low: np.ndarray, high: np.ndarray, level: float, counts: np.ndarray) -> np.ndarray:
    """np.quantile's default ("linear") between the order statistics ``low`` and ``high``
    around ``level (n - 1)``, with numpy's own interpolation formula."""
    position = level * (counts - 1)
    t = position - np.floor(position)
    return np.where(t >= 0.5, high - (high - low) * (1 - t), low + (high - low) * t)


def _triples(starts: tuple[float, ...]) -> tuple[float, ...]:
    """The levels ``q, (1 + q) / 2, (3 + q) / 4`` of each ``q`` in ``starts``, in a row."""
    return tuple(level for q in starts for level in (q, (1 + q) / 2, (3 + q) / 4))


def _pickands(
    low: np.ndarray, mid: np.ndarray, high: np.ndarray, tiny: np.ndarray, tied: np.ndarray
) -> np.ndarray:
    """Pickands' generalised Pareto shape ``log2((high - mid) / (mid - low))`` from three
    quantiles at levels ``q, (1+q)/2, (3+q)/4``, kept in [0, MAX_SHAPE]; ``tied`` where
    two of them tie."""
    d1, d2 = mid - low, high - mid
    ok = (d1 > tiny) & (d2 > tiny)
    shape = np.log2(np.where(ok, d2, 1.0) / np.where(ok, d1, 1.0))
    return np.where(ok, np.clip(shape, 0.0, MAX_SHAPE), tied)


def _pareto_tail(excess: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """P(X > u + excess) / P(X > u) of a generalised Pareto tail whose 95 % quantile lies
    one unit above its 90 % (``excess`` in that unit): ``2 ** -excess`` at shape 0."""
    heavy = shape > 1e-6
    k = np.where(heavy, shape, 1.0)
    pareto = (1.0 + (np.exp2(k) - 1.0) * excess) ** (-1.0 / k)
    return np.where(heavy, pareto, np.exp2(-excess))
