"""Online level correction: follow a sensor whose level moved after training.

A model that sees a 12-step window cannot tell a lasting shift (a recalibrated sensor, a
work zone for days) from an incident, so it keeps returning the sensor to its learnt
level. Here each sensor's forecast at step ``k`` is raised by the recent mean of its own
step-``k`` errors ``y - yhat``: an exponentially weighted mean (half-life
:data:`HALF_LIFE_H` hours) of the errors whose targets are already observed, applied
only where it exceeds :data:`GATE_C` times its standard error. That standard error
counts the errors' weight (at least :data:`MIN_EFFECTIVE` errors' worth, gathered over
at least one half-life: a shift is a change that lasts, and the errors of a fresh start's
first hour, a congestion coming on, cannot tell one from an incident) and is widened
by ``sqrt((1 + rho) / (1 - rho))`` for their lag-1 autocorrelation ``rho``: step-``k``
errors of neighbouring origins share ``k - 1`` targets, so taken as independent the
gate would open on ordinary noise. Where nothing moved the gate stays shut and the
forecast is the model's.

The rule and its settings were chosen on development networks (simulated and los-loop,
shifts injected into their test parts) and checked once on a held-out network
(``benchmarks/level_shift.py``; docs/results.md, "Level shifts"): at most 0.2 % worse
where nothing shifted, 32 % better at 12 steps on recalibrated sensors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from models.forecasters.base import Forecaster

HALF_LIFE_H = 6.0
GATE_C = 3.0
MIN_EFFECTIVE = 12.0  # errors' worth of weight before the gate may open
# A cell silent this many half-lives starts its wait afresh (below the service's replay
# reach of four, so a service restored from its store decides as the running one did).
RESTART_HALF_LIVES = 3.0
MAX_RHO = 0.98


class LevelState:
    """Weighted moments of errors ``[..., node]`` arriving in order, one array per origin.

    ``half_life`` is in origins; ``gate`` is ``"ar1"`` (the rule above), ``"iid"`` (the
    errors taken as independent) or None (the plain weighted mean, always applied). A
    gate opens only on :data:`MIN_EFFECTIVE` errors' effective weight gathered over at
    least ``half_life`` origins since the cell's first error (the first after a silence of
    :data:`RESTART_HALF_LIVES`).
    """

    def __init__(self, shape: tuple[int, ...], half_life: float, gate: str | None = "ar1"):
        if not half_life > 0:
            raise ValueError(f"the half-life must be positive, got {half_life}")
        if gate not in ("ar1", "iid", None):
            raise ValueError(f"gate must be 'ar1', 'iid' or None, got {gate!r}")
        self.decay = 0.5 ** (1.0 / half_life)
        self.gate = gate
        self.half_life = half_life
        self.w = np.zeros(shape)  # sum of weights
        self.w2 = np.zeros(shape)  # sum of squared weights
        self.s1 = np.zeros(shape)
        self.s2 = np.zeros(shape)
        self.wp = np.zeros(shape)  # weight of lag-1 pairs
        self.sp = np.zeros(shape)
        self.prev = np.full(shape, np.nan)
        self.age = np.zeros(shape)  # origins since the cell's first error (0: none yet)
        self.quiet = np.zeros(shape)  # origins since the cell's last error

    def update(self, errors: np.ndarray) -> None:
        """Fold in the next origin's errors (NaN: none: the weights still decay)."""
        d = self.decay
        seen = np.isfinite(errors)
        x = np.where(seen, errors, 0.0)
        paired = seen & np.isfinite(self.prev)
        self.w = d * self.w + seen
        self.w2 = d * d * self.w2 + seen
        self.s1 = d * self.s1 + x
        self.s2 = d * self.s2 + x * x
        self.wp = d * self.wp + paired
        self.sp = d * self.sp + np.where(paired, x * np.where(paired, self.prev, 0.0), 0.0)
        self.prev = np.where(seen, errors, self.prev)
        again = seen & (self.quiet >= RESTART_HALF_LIVES * self.half_life)
        self.age = np.where(again, 1.0, np.where((self.age > 0) | seen, self.age + 1, 0.0))
        self.quiet = np.where(seen, 0.0, self.quiet + 1)

    def skip(self, origins: int) -> None:
        """As ``origins`` updates without errors: every weight decays, nothing is added."""
        if origins > 0:
            d = self.decay**origins
            self.w, self.w2 = d * self.w, d * d * self.w2
            self.s1, self.s2, self.wp, self.sp = d * self.s1, d * self.s2, d * self.wp, d * self.sp
            self.age = np.where(self.age > 0, self.age + origins, 0.0)
            self.quiet = self.quiet + origins

    def correction(self) -> np.ndarray:
        """What to add to the next forecasts: the gated weighted mean (0 where shut)."""
        w = self.w
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(w > 0, self.s1 / w, 0.0)
            if self.gate is None:
                return mean
            var = np.maximum(np.where(w > 0, self.s2 / w, 0.0) - mean**2, 0.0)
            effective = np.where(self.w2 > 0, w**2 / self.w2, 0.0)
            se2 = np.where(effective > 0, var / effective, np.inf)
            if self.gate == "ar1":
                cov = np.where(self.wp > 0, self.sp / self.wp, 0.0) - mean**2
                rho = np.clip(np.where(var > 0, cov / var, 0.0), 0.0, MAX_RHO)
                se2 = se2 * (1.0 + rho) / (1.0 - rho)
            lasting = (effective >= MIN_EFFECTIVE) & (self.age >= self.half_life)
            on = lasting & (mean**2 > GATE_C**2 * se2)
        return np.where(on, mean, 0.0)


def corrections(errors: np.ndarray, half_life: float, gate: str | None = "ar1") -> np.ndarray:
    """The correction ``[n, horizon, node]`` to add to forecasts at consecutive origins.

    ``errors[j, k - 1]`` is ``y - yhat`` of origin ``j`` at step ``k`` (NaN: missing); it
    is observed from origin ``j + k`` on, so origin ``i``'s correction at step ``k`` uses
    the step-``k`` errors of origins ``j <= i - k`` only (no look-ahead).
    """
    n, horizon = errors.shape[:2]
    state = LevelState(errors.shape[1:], half_life, gate)
    after = np.zeros(errors.shape)
    for j in range(n):
        state.update(errors[j])
        after[j] = state.correction()
    out = np.zeros(errors.shape)
    for k in range(1, horizon + 1):
        if n > k:
            out[k:, k - 1] = after[: n - k, k - 1]
    return out


class OnlineLevel:
    """The correction of one model as its forecasts' targets close (the service's).

    :meth:`record` keeps the model's own forecast issued at a tick (``[horizon, node]``,
    before any correction); :meth:`observe` scores the held forecasts that target a
    closing tick and folds their errors in; :meth:`correction` is what to add to a new
    one. Errors of steps whose forecast was not issued (a gap, a restart) count as missing.
    """

    def __init__(self, horizon: int, nodes: int, half_life_ticks: float) -> None:
        self.horizon = horizon
        self.state = LevelState((horizon, nodes), half_life_ticks)
        self._issued: dict[int, np.ndarray] = {}
        self._last: int | None = None

    def record(self, tick: int, mean: np.ndarray) -> None:
        """Hold ``mean`` (the uncorrected forecast issued at ``tick``) until its targets close."""
        self._issued[tick] = np.asarray(mean, dtype=np.float32)
        for old in [t for t in self._issued if t < tick - self.horizon]:
            del self._issued[old]

    def observe(self, tick: int, values: np.ndarray, mask: np.ndarray) -> None:
        """Fold in the errors of the held forecasts targeting ``tick`` (``[node]`` row of
        observed ``values`` where ``mask``); every tick since the last one decays the
        weights once, as an origin with no error would."""
        if self._last is not None and tick <= self._last:
            return  # closed before (a redelivery): already folded in
        if self._last is not None:
            self.state.skip(tick - self._last - 1)
        self._last = tick
        errors = np.full(self.state.w.shape, np.nan)
        observed = np.where(mask, values, np.nan).astype(np.float64)
        for k in range(1, self.horizon + 1):
            issued = self._issued.get(tick - k)
            if issued is not None:
                errors[k - 1] = observed - issued[k - 1]
        self.state.update(errors)

    def correction(self) -> np.ndarray:
        """What to add now to a forecast ``[horizon, node]`` (0 where the gate is shut)."""
        return self.state.correction()


def follow_level(
    level: OnlineLevel,
    model: Forecaster,
    tick: int,
    mean: np.ndarray,
    lower: np.ndarray | None,
    upper: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The forecast ``model`` issued at ``tick`` (``[horizon, node]``) moved by ``level``'s
    correction, its interval with it (all three kept above the model's floor, so the
    interval still holds the forecast); ``level`` holds the
    model's own forecast, whose errors it learns from. The service's forecasts and the
    forecast flow's are corrected by it."""
    level.record(tick, mean)
    shift = level.correction().astype(mean.dtype)
    if not shift.any():
        return mean, lower, upper
    floored = getattr(model, "floored", lambda values: values)
    return (
        floored(mean + shift),
        None if lower is None else floored(lower + shift),
        None if upper is None else floored(upper + shift),
    )
