"""Tick latency: from a tick's last reading to its forecasts being published.

The clock starts at the Kafka record timestamp of the newest reading of the tick (set
by the producer when it sent the reading, ``CreateTime``) and stops when the producer
has flushed the last forecast of that tick, so it covers the broker, the wait for the
poll, assembly, every model and publishing. Producer and service clocks are the same
machine's here; across machines the number includes their clock offset.

Each closed tick's latency is stored with the tick (``ticks.latency_ms``), so exact
percentiles come from the store; :class:`LatencyHistogram` gives the fixed-bucket view
(Prometheus-style, cumulative) that ``roadcast status`` prints and that stays small
for a long-running service.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

DEFAULT_BUCKETS_MS: tuple[float, ...] = (
    5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000,
)  # fmt: skip


def percentiles(samples: Iterable[float], qs: Sequence[float] = (50, 99)) -> dict[str, float]:
    """Exact percentiles (linear interpolation) as ``{"p50": ..., "p99": ...}``.

    NaN for every percentile when there are no samples.
    """
    values = np.asarray(list(samples), dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {f"p{q:g}": math.nan for q in qs}
    return {f"p{q:g}": float(np.percentile(values, q)) for q in qs}


@dataclass
class LatencyHistogram:
    """Counts of latencies at or below each bucket bound (the last bucket is +inf)."""

    bounds_ms: tuple[float, ...] = DEFAULT_BUCKETS_MS
    counts: list[int] = field(default_factory=list)
    total: int = 0

    def __post_init__(self) -> None:
        if list(self.bounds_ms) != sorted(set(self.bounds_ms)) or not self.bounds_ms:
            raise ValueError(f"bucket bounds must be increasing and non-empty: {self.bounds_ms}")
        if not self.counts:
            self.counts = [0] * (len(self.bounds_ms) + 1)

    def add(self, samples_ms: Iterable[float]) -> None:
        """Count finite samples (NaN, an unknown latency, is ignored)."""
        values = np.asarray(list(samples_ms), dtype=np.float64)
        values = values[np.isfinite(values)]
        index = np.searchsorted(np.asarray(self.bounds_ms), values, side="left")
        for i, n in zip(*np.unique(index, return_counts=True), strict=True):
            self.counts[int(i)] += int(n)
        self.total += int(values.size)

    def rows(self) -> list[tuple[str, int, int]]:
        """``(bucket label, count, cumulative count)`` for printing."""
        labels = [f"<= {b:g} ms" for b in self.bounds_ms] + [f"> {self.bounds_ms[-1]:g} ms"]
        out, running = [], 0
        for label, count in zip(labels, self.counts, strict=True):
            running += count
            out.append((label, count, running))
        return out
