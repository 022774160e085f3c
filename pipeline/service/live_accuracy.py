"""Live accuracy: score each model's forecasts as the ticks they target close.

The service keeps, per model, the forecasts issued during the last ``horizon + 1``
ticks (bounded memory: ``horizon x node`` floats per tick and model). When tick ``t`` closes
with its observed values, every forecast whose step ``h`` targets ``t`` (issued at
``t - h``) is scored on the observed sensors, and the error sums per model and step
go to the store's ``accuracy`` table; rolling MAE/RMSE over any span are then sums
of sums. Values are scored as known at close; a later correction is picked up by
:meth:`pipeline.service.store.Store.score`, which re-joins everything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Targeted:
    """Earlier forecasts of one model whose target is one tick.

    ``steps`` int64 ``[m]`` (1-based); ``mean``/``lower``/``upper`` float32 ``[m, node]``
    (bounds None when the model has none).
    """

    steps: np.ndarray
    mean: np.ndarray
    lower: np.ndarray | None
    upper: np.ndarray | None


@dataclass(frozen=True)
class StepErrors:
    """Error sums of one model at one target tick, per step (arrays ``[m]``)."""

    model: str
    steps: np.ndarray
    n: np.ndarray
    sum_abs: np.ndarray
    sum_sq: np.ndarray


class LiveScorer:
    """Recent forecasts of every model and their errors at close.

    Parameters
    ----------
    horizons : ``{model name: horizon}``.
    """

    def __init__(self, horizons: dict[str, int]) -> None:
        self.horizons = dict(horizons)
        # model -> issued tick -> (mean, lower, upper), each [horizon, node]
        self._issued: dict[
            str, dict[int, tuple[np.ndarray, np.ndarray | None, np.ndarray | None]]
        ] = {m: {} for m in self.horizons}

    def record(
        self,
        model: str,
        tick: int,
        mean: np.ndarray,
        lower: np.ndarray | None = None,
        upper: np.ndarray | None = None,
    ) -> None:
        """Keep the forecast ``model`` issued at ``tick`` (``[horizon, node]``)."""
        horizon = self.horizons[model]
        if mean.ndim != 2 or mean.shape[0] != horizon:
            raise ValueError(f"{model}: forecast shape {mean.shape} is not [{horizon}, node]")
        ring = self._issued[model]
        ring[tick] = (mean, lower, upper)
        # Keep ticks tick - horizon .. tick: the tick being closed right now is still
        # the target of the one issued ``horizon`` ticks before it.
        for old in [t for t in ring if t < tick - horizon]:
            del ring[old]

    def adopt(self, other: LiveScorer, model: str) -> None:
        """Hold the forecasts ``other`` holds for ``model`` (a scorer replaced by this one
        at a hot reload, for a model whose horizon and sensors did not change)."""
        self._issued[model] = other._issued[model]

    def targeted(self, model: str, tick: int) -> Targeted:
        """The forecasts of ``model`` still held whose target is ``tick``."""
        ring = self._issued[model]
        steps = [h for h in range(1, self.horizons[model] + 1) if tick - h in ring]
        if not steps:
            return Targeted(np.empty(0, np.int64), np.empty((0, 0), np.float32), None, None)
        rows = [ring[tick - h] for h in steps]
        mean = np.stack([r[0][h - 1] for r, h in zip(rows, steps, strict=True)])  # [m, node]
        lower = upper = None
        lows = [r[1] for r in rows]
        highs = [r[2] for r in rows]
        if all(a is not None for a in lows) and all(b is not None for b in highs):
            lower = np.stack([a[h - 1] for a, h in zip(lows, steps, strict=True)])  # type: ignore[index]
            upper = np.stack([b[h - 1] for b, h in zip(highs, steps, strict=True)])  # type: ignore[index]
        return Targeted(np.asarray(steps, np.int64), mean, lower, upper)

    def score(
        self, model: str, tick: int, values: np.ndarray, mask: np.ndarray
    ) -> StepErrors | None:
        """Errors of ``model``'s held forecasts that target ``tick``, on observed sensors.

        ``values``/``mask`` are the tick's ``[node]`` row in the model's sensor order;
        None when no held forecast targets ``tick``.
        """
        hit = self.targeted(model, tick)
        if len(hit.steps) == 0:
            return None
        ok = mask[None, :] & np.isfinite(hit.mean)  # [m, node]
        err = np.where(ok, hit.mean.astype(np.float64) - values[None, :], 0.0)  # [m, node]
        return StepErrors(
            model=model,
            steps=hit.steps,
            n=ok.sum(axis=1).astype(np.int64),
            sum_abs=np.abs(err).sum(axis=1),
            sum_sq=(err * err).sum(axis=1),
        )
