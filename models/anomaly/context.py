"""Context novelty: how far the recent pattern of a sensor is from every earlier one.

The idea of NAB's strongest streaming detectors (contextOSE's "contexts", ARTime's
adaptive-resonance categories, KNN-CAD's nearest neighbours): an anomaly is a recent
*shape* of the series that has not been seen before, at some time scale. Per sensor and
time scale ``s``:

* the **context** of tick ``t`` is the last ``window`` blocks of ``s`` readings, each
  block reduced to its mean: ``window * s`` ticks seen at resolution ``s``;
* its **statistic** is the Chebyshev (largest per-block) distance to the nearest
  context among the last ``memory`` ones of the same sensor and scale, leaving out
  those that overlap it (a series is always close to itself a tick ago);
* that distance becomes a conformal p-value against the distances of earlier ticks
  (:mod:`models.anomaly.online`): the p-value is unchanged by any change of units.

Several scales see spikes (``s = 1``) and slower changes of shape (large ``s``); their
p-values are merged as ``min(1, 2 * mean_s p_s)``, twice the arithmetic mean, which is a
valid p-value whatever the dependence between the scales (Vovk and Wang, "Combining
p-values via averaging", Biometrika 2020). The mean rewards agreement across scales.

Cost per tick: ``scales * nodes * memory * window`` comparisons.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np

from models.anomaly.base import DetectorError
from models.anomaly.online import OnlineConfig, OnlineDetector
from models.panel import SensorPanel


@dataclass(frozen=True, kw_only=True)
class ContextConfig(OnlineConfig):
    """Settings of :class:`ContextDetector`.

    window : blocks per context. scales : block lengths in ticks, one statistic each.
    memory : contexts kept per sensor and scale. Calibration:
    :class:`models.anomaly.online.OnlineConfig`.
    """

    window: int = 8
    scales: tuple[int, ...] = (1, 3, 12)
    memory: int = 1000

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", tuple(int(s) for s in self.scales))
        if self.window < 1 or self.memory < 1 or not self.scales or min(self.scales) < 1:
            raise DetectorError(
                f"need window >= 1, memory >= 1 and scales >= 1, got {self.window}, "
                f"{self.memory}, {self.scales}"
            )


class ContextDetector(OnlineDetector):
    """Flags recent patterns unlike any earlier one, at several time scales (module doc)."""

    name: ClassVar[str] = "context"

    def __init__(self, config: ContextConfig | None = None) -> None:
        self.config = config or ContextConfig()
        self.n_stats = len(self.config.scales)
        super().__init__()

    @classmethod
    def _from_settings(cls, settings: dict[str, Any]) -> Self:
        return cls(ContextConfig(**settings))

    @property
    def span(self) -> int:
        """Ticks the longest context covers."""
        return self.config.window * max(self.config.scales)

    def _prepare(self, head: SensorPanel | None) -> None:
        c, n = self.config, self.n_nodes
        k = len(c.scales)
        self._recent = np.full((n, self.span), np.nan)  # [node, span], oldest first
        self._memory = np.full((k, n, c.memory, c.window), np.nan, np.float32)
        self._stamp = np.full((k, n, c.memory), -1, np.int64)  # tick of each context
        self._count = np.zeros((k, n), np.int64)  # contexts stored per scale and sensor
        self._tick = np.zeros(1, np.int64)

    def _arrays(self) -> dict[str, np.ndarray]:
        return {
            "recent": self._recent.copy(),
            "memory": self._memory.copy(),
            "stamp": self._stamp.copy(),
            "count": self._count.copy(),
            "tick": self._tick.copy(),
        }

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        c, n, k = self.config, self.n_nodes, len(self.config.scales)
        shapes = {
            "recent": (n, self.span),
            "memory": (k, n, c.memory, c.window),
            "stamp": (k, n, c.memory),
            "count": (k, n),
            "tick": (1,),
        }
        for key, shape in shapes.items():
            if arrays[key].shape != shape:
                raise ValueError(f"{key} has shape {arrays[key].shape}, expected {shape}")
        self._recent = arrays["recent"].astype(np.float64)
        self._memory = arrays["memory"].astype(np.float32)
        self._stamp = arrays["stamp"].astype(np.int64)
        self._count = arrays["count"].astype(np.int64)
        self._tick = arrays["tick"].astype(np.int64)

    def _context(self, scale: int) -> np.ndarray:
        """``[node, window]`` block means of the recent readings (NaN: an empty block)."""
        w = self.config.window
        blocks = self._recent[:, -w * scale :].reshape(self.n_nodes, w, scale)
        seen = np.isfinite(blocks)
        count = seen.sum(axis=2)
        total = np.where(seen, blocks, 0.0).sum(axis=2)
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    def _step(self, x: np.ndarray) -> np.ndarray:
        c = self.config
        self._recent = np.roll(self._recent, -1, axis=1)
        self._recent[:, -1] = x
        tick = int(self._tick[0])
        stats = np.full((len(c.scales), self.n_nodes), np.nan)
        nodes = np.arange(self.n_nodes)
        for k, scale in enumerate(c.scales):
            if tick + 1 < c.window * scale:
                continue  # not a whole context yet
            context = self._context(scale)  # [node, window]
            usable = np.isfinite(context).all(axis=1) & np.isfinite(x)  # [node]
            if not usable.any():
                continue
            past = self._stamp[k]  # [node, memory]
            valid = (past >= 0) & (past <= tick - c.window * scale)
            enough = valid.sum(axis=1) >= c.window
            with np.errstate(over="ignore"):  # near float32's range: inf, as far as can be
                here = context[:, None, :].astype(np.float32)
                distance = np.abs(self._memory[k] - here).max(axis=2)
            nearest = np.where(valid, distance, np.inf).min(axis=1)  # [node]
            stats[k] = np.where(usable & enough, nearest, np.nan)
            slot = self._count[k] % c.memory  # [node]
            keep = nodes[usable]
            self._memory[k, keep, slot[keep]] = context[keep]
            self._stamp[k, keep, slot[keep]] = tick
            self._count[k, keep] += 1
        self._tick[0] = tick + 1
        return stats.reshape(-1)

    def _merge(self, p: np.ndarray) -> np.ndarray:
        seen = np.isfinite(p)
        count = seen.sum(axis=0)
        mean = np.where(seen, p, 0.0).sum(axis=0) / np.maximum(count, 1)
        return np.where(count > 0, np.minimum(1.0, 2.0 * mean), np.nan)

    def _reason(self, i: int, x: float, p: float) -> str:
        scales = ", ".join(str(s) for s in self.config.scales)
        return (
            f"the last readings ({x:.4g} now) form a pattern unlike the earlier ones of this "
            f"sensor at scales of {scales} ticks (p={p:.2g})"
        )
