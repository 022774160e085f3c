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

Pools are filled from validation data (:meth:`ConformalPool.extend`) and, for detectors
that keep learning while they stream (NAB's protocol), from every scored tick
(:meth:`ConformalPool.append`, first in first out beyond ``capacity``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from models.anomaly.base import DetectorError

TAIL_QUANTILE = 0.9
# The tail scale is re-estimated after this many appends (a quantile per row per tick
# would dominate the cost of a large network); the maximum is kept exact.
TAIL_REFRESH = 64
# Ring buffers start this wide and double up to ``capacity`` as statistics arrive: a
# pool calibrated on a few hundred validation steps scans and stores only those.
FIRST_WIDTH = 64


class ConformalPool:
    """Calibration statistics for ``n_rows`` independent rows, at most ``capacity`` each.

    Parameters
    ----------
    n_rows : rows (e.g. sensors x horizons).
    capacity : statistics kept per row; older ones are dropped first.
    min_count : rows with fewer statistics give NaN p-values (not scored yet).
    """

    def __init__(self, n_rows: int, capacity: int = 4096, min_count: int = 20) -> None:
        if n_rows < 1 or capacity < 2 or min_count < 1:
            raise DetectorError(
                f"ConformalPool needs n_rows >= 1, capacity >= 2, min_count >= 1, "
                f"got {n_rows}, {capacity}, {min_count}"
            )
        self.n_rows = n_rows
        self.capacity = capacity
        self.min_count = min_count
        # [row, width <= capacity], ring buffers; every column past the width is NaN.
        self._data = np.full((n_rows, min(capacity, FIRST_WIDTH)), np.nan)
        self._seen = np.zeros(n_rows, dtype=np.int64)  # [row], statistics ever appended
        self._max = np.full(n_rows, np.nan)  # [row]
        self._scale = np.full(n_rows, np.nan)  # [row], tail scale
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
        self._max = np.full(self.n_rows, np.nan)
        self._scale = np.full(self.n_rows, np.nan)
        if len(filled):

            def ranks(n: int) -> list[int]:
                below = int(np.floor(TAIL_QUANTILE * (n - 1)))
                return [below, min(below + 1, n - 1), n - 1]

            low, high, top = self._order_stats(filled, ranks).T
            # np.quantile's default ("linear"), with numpy's own interpolation formula.
            position = TAIL_QUANTILE * (self.counts[filled] - 1)
            t = position - np.floor(position)
            q = np.where(t >= 0.5, high - (high - low) * (1 - t), low + (high - low) * t)
            self._max[filled] = top
            # A constant pool has no spread: any larger value is then far outside it.
            self._scale[filled] = np.maximum(top - q, 1e-9 * np.maximum(1.0, np.abs(top)))
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
        if self._since_refresh >= TAIL_REFRESH or np.isnan(self._max[rows]).any():
            self._refresh()
        else:
            self._max[rows] = np.fmax(self._max[rows], stat[rows])

    def pvalues(self, stat: np.ndarray) -> np.ndarray:
        """float64 ``[row]`` conformal p-values of ``stat`` ``[row]`` (NaN: not scored)."""
        stat = np.asarray(stat, dtype=np.float64)
        if stat.shape != (self.n_rows,):
            raise DetectorError(f"expected statistics [{self.n_rows}], got {stat.shape}")
        n = self.counts
        at_least = (self._data >= stat[:, None]).sum(axis=1)  # NaN compares False
        p = (1.0 + at_least) / (n + 1.0)
        beyond = (at_least == 0) & np.isfinite(stat) & (n > 0)
        if beyond.any():
            excess = (stat[beyond] - self._max[beyond]) / self._scale[beyond]
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
            f"{prefix}.shape": np.array([self.n_rows, self.capacity, self.min_count]),
        }

    @classmethod
    def from_state(cls, tensors: dict[str, np.ndarray], prefix: str) -> ConformalPool:
        """The pool saved by :meth:`state` under ``prefix``."""
        try:
            n_rows, capacity, min_count = (int(x) for x in tensors[f"{prefix}.shape"])
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
        pool = cls(n_rows, capacity, min_count)
        pool._data = data.copy()
        pool._seen = seen.copy()
        pool._refresh()
        return pool
