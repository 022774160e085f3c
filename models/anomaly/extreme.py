"""New extremes: a reading beyond the range of the sensor's earlier readings.

People label the first value outside the range they have seen. Numenta's NAB detector
scores such a "spatial anomaly" 1 whatever its model says when it leaves the range seen so
far by more than 5 % of that range (:mod:`models.anomaly.range`). This detector keeps the
rule and gives it a p-value. Per sensor, with ``lo`` and ``hi`` the smallest and largest
of the ``n`` readings before this tick (at most ``memory``), a reading is a *new extreme*
when

    ``x > hi + tolerance (hi - lo)``  or  ``x < lo - tolerance (hi - lo)``.

Under exchangeable readings the chance that the newest of ``n + 1`` readings is the
largest is ``1 / (n + 1)``, so ``p = min(1, 2 / (n + 1))`` for a new extreme (either
side; exceeding by a tolerance is rarer still, so the p-value is valid and conservative)
and ``p = 1`` otherwise. An alarm at ``p <= alpha`` thus fires on new extremes once
``2 / alpha - 1`` readings were seen. The statistic (the exceedance as a share of the
range) orders the extremes in reasons and in the calibration pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np

from models.anomaly.base import DetectorError
from models.anomaly.online import OnlineConfig, OnlineDetector
from models.anomaly.range import NAB_TOLERANCE
from models.panel import SensorPanel


@dataclass(frozen=True, kw_only=True)
class ExtremeConfig(OnlineConfig):
    """Settings of :class:`ExtremeDetector`.

    memory : readings per sensor that define its range. tolerance : share of the range a
    new extreme must exceed it by (NAB's 5 %). Calibration:
    :class:`models.anomaly.online.OnlineConfig` (only ``min_count`` matters here: readings
    needed before a sensor is scored).
    """

    memory: int = 4096
    tolerance: float = NAB_TOLERANCE

    def __post_init__(self) -> None:
        if self.memory < 2 or self.tolerance < 0:
            raise DetectorError(
                f"need memory >= 2 and tolerance >= 0, got {self.memory}, {self.tolerance}"
            )


class ExtremeDetector(OnlineDetector):
    """Flags readings beyond the range of the sensor's earlier readings (module doc)."""

    name: ClassVar[str] = "extreme"

    def __init__(self, config: ExtremeConfig | None = None) -> None:
        self.config = config or ExtremeConfig()
        super().__init__()

    @classmethod
    def _from_settings(cls, settings: dict[str, Any]) -> Self:
        return cls(ExtremeConfig(**settings))

    def _prepare(self, head: SensorPanel | None) -> None:
        n = self.n_nodes
        self._recent = np.full((n, self.config.memory), np.nan)  # ring buffer of readings
        self._count = np.zeros(n, np.int64)  # readings ever seen
        self._low = np.full(n, np.nan)  # range of the readings in the ring
        self._high = np.full(n, np.nan)

    def _arrays(self) -> dict[str, np.ndarray]:
        return {
            "recent": self._recent.copy(),
            "count": self._count.copy(),
            "low": self._low.copy(),
            "high": self._high.copy(),
        }

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        if arrays["recent"].shape != (self.n_nodes, self.config.memory):
            raise ValueError("the saved readings do not match the sensors")
        self._recent = arrays["recent"].astype(np.float64)
        self._count = arrays["count"].astype(np.int64)
        self._low = arrays["low"].astype(np.float64)
        self._high = arrays["high"].astype(np.float64)

    def _step(self, x: np.ndarray) -> np.ndarray:
        c = self.config
        spread = self._high - self._low  # NaN before the first reading
        with np.errstate(invalid="ignore"):
            excess = np.fmax(x - self._high, self._low - x) / np.where(spread > 0, spread, np.nan)
            stats = np.where(np.isfinite(x) & (spread > 0), excess, np.nan)
            stats = np.where(
                np.isfinite(x) & (spread == 0), np.where(x == self._high, -1.0, np.inf), stats
            )
        rows = np.nonzero(np.isfinite(x))[0]
        if len(rows):
            slot = self._count[rows] % c.memory
            evicted = self._recent[rows, slot]
            self._recent[rows, slot] = x[rows]
            self._count[rows] += 1
            self._low[rows] = np.fmin(self._low[rows], x[rows])
            self._high[rows] = np.fmax(self._high[rows], x[rows])
            # A reading leaving the ring may have been an extreme: recompute those ranges.
            stale = rows[(evicted == self._low[rows]) | (evicted == self._high[rows])]
            if len(stale):
                self._low[stale] = np.nanmin(self._recent[stale], axis=1)
                self._high[stale] = np.nanmax(self._recent[stale], axis=1)
        return np.where(np.isinf(stats), np.finfo(np.float64).max, stats)

    def _pvalues(self, stats: np.ndarray) -> np.ndarray:
        seen = np.minimum(self._count - 1, self.config.memory)  # readings before this tick
        extreme = stats > self.config.tolerance
        p = np.where(extreme, np.minimum(1.0, 2.0 / np.maximum(seen + 1.0, 1.0)), 1.0)
        return np.where(np.isfinite(stats) & (seen >= self.config.min_count), p, np.nan)

    def _reason(self, i: int, x: float, p: float) -> str:
        seen = min(int(self._count[i]) - 1, self.config.memory)
        return f"{x:.4g} is beyond the range of the last {seen} readings of this sensor (p={p:.2g})"
