"""New extremes: a reading beyond every value seen so far, by a share of their range.

Numenta's NAB detector reports such a *spatial anomaly* with score 1 whatever its model
says, "to account for the human labelling bias for spatial values larger than what has
been seen so far" (``nab/detectors/numenta/numenta_detector.py``): people label the first
value outside the range they have seen. The rule, per sensor: with ``lo`` and ``hi`` the
smallest and largest readings *before* this tick, the reading ``x`` is a new extreme
when ``x > hi + tol (hi - lo)`` or ``x < lo - tol (hi - lo)``, ``tol = 0.05`` as NAB's.
Nothing is flagged until two different values were seen; missing readings are skipped.
"""

from __future__ import annotations

import numpy as np

from models.anomaly.base import DetectorError

NAB_TOLERANCE = 0.05


class RangeExceedance:
    """Streaming new-extreme check of ``n_nodes`` sensors (see module doc)."""

    def __init__(self, n_nodes: int, tolerance: float = NAB_TOLERANCE) -> None:
        if n_nodes < 1 or tolerance < 0:
            raise DetectorError(
                f"RangeExceedance needs n_nodes >= 1 and tolerance >= 0, got {n_nodes}, {tolerance}"
            )
        self.n_nodes = n_nodes
        self.tolerance = tolerance
        self.reset()

    def reset(self) -> None:
        """Forget the range seen."""
        self.low = np.full(self.n_nodes, np.nan)  # [node]
        self.high = np.full(self.n_nodes, np.nan)  # [node]

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """bool ``[node]``: which readings of this tick are new extremes; then learn them."""
        x = np.asarray(values, dtype=np.float64)
        if x.shape != (self.n_nodes,):
            raise DetectorError(
                f"values have shape {x.shape}, the range check tracks ({self.n_nodes},)"
            )
        spread = self.high - self.low  # NaN until a value was seen
        margin = self.tolerance * spread
        with np.errstate(invalid="ignore"):
            outside = (spread > 0) & ((x > self.high + margin) | (x < self.low - margin))
        seen = np.isfinite(x)
        self.low = np.where(seen, np.fmin(self.low, x), self.low)
        self.high = np.where(seen, np.fmax(self.high, x), self.high)
        return outside & seen
