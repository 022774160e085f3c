"""Forecast error metrics on the original scale, masked, per step and pooled.

Conventions (T-GCN's, so that numbers sit beside the published ones):

* ``actual`` and ``predicted`` are ``[n, horizon, node]``; a NaN in ``actual`` is a
  missing target and is never scored.
* ``step`` metrics at horizon ``h`` use step ``h`` only (the forecast ``h`` steps ahead);
  ``pooled`` metrics at ``h`` use every step ``1..h`` together (what T-GCN reports as
  "15 minutes" for ``h = 3`` on 5-minute data).
* MAE, RMSE; MAPE in percent, skipping targets with ``|y| < mape_floor`` (default 1.0,
  i.e. 1 mph on speed data: readings that close to zero are stopped traffic or faulty
  sensors, and dividing by them would let a handful dominate the mean); T-GCN's
  "accuracy" ``1 - ||Y - Ŷ||_F / ||Y||_F``; and R² ``1 - SSE / SST`` around the mean
  of the scored targets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_HORIZONS = (3, 6, 9, 12)
MAPE_FLOOR = 1.0


def error_metrics(
    actual: np.ndarray, predicted: np.ndarray, *, mape_floor: float = MAPE_FLOOR
) -> dict[str, float]:
    """MAE, RMSE, MAPE (%), accuracy and R² over every observed target of ``actual``.

    Arrays of any (equal) shape; NaN in ``actual`` = not scored. Returns NaN metrics
    when nothing is scored (and a NaN MAPE when no target is above ``mape_floor``).

    Raises
    ------
    ValueError
        When the shapes differ, or a prediction is NaN/inf where a target is observed.
    """
    actual = np.asarray(actual, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    if actual.shape != predicted.shape:
        raise ValueError(f"actual {actual.shape} and predicted {predicted.shape} differ in shape")
    scored = np.isfinite(actual)
    if (scored & ~np.isfinite(predicted)).any():
        raise ValueError(
            f"{int((scored & ~np.isfinite(predicted)).sum())} predictions are NaN/inf where the "
            "target is observed; the model must forecast every sensor (check its missing-value "
            "handling)"
        )
    y = actual[scored]
    err = predicted[scored] - y
    nan = float("nan")
    if y.size == 0:
        return {"mae": nan, "rmse": nan, "mape": nan, "accuracy": nan, "r2": nan, "count": 0}
    sse = float(np.sum(err**2))
    big = np.abs(y) >= mape_floor
    mape = float(np.mean(np.abs(err[big] / y[big])) * 100.0) if big.any() else nan
    norm_y = float(np.sqrt(np.sum(y**2)))
    sst = float(np.sum((y - y.mean()) ** 2))
    return {
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(sse / y.size)),
        "mape": mape,
        "accuracy": float(1.0 - np.sqrt(sse) / norm_y) if norm_y > 0 else nan,
        "r2": 1.0 - sse / sst if sst > 0 else nan,
        "count": int(y.size),
    }


def score_batch(
    actual: np.ndarray,
    predicted: np.ndarray,
    horizons: Sequence[int] = DEFAULT_HORIZONS,
    *,
    mape_floor: float = MAPE_FLOOR,
) -> dict[str, dict[str, dict[str, float]]]:
    """Per-step and pooled metrics at each horizon (in steps).

    Parameters
    ----------
    actual, predicted : ``[n, horizon, node]`` on the original scale (NaN actual = missing).
    horizons : steps to report; each must be in ``1..horizon``.

    Returns
    -------
    ``{"pooled": {"3": {"mae":, "rmse":, "mape":, "accuracy":, "r2":, "count":}, ...},
    "step": {"3": {...}, ...}}``, keyed by the horizon as a string.
    """
    actual = np.asarray(actual)
    predicted = np.asarray(predicted)
    if actual.ndim != 3:
        raise ValueError(f"actual must be [n, horizon, node], got {actual.shape}")
    if actual.shape != predicted.shape:
        raise ValueError(f"actual {actual.shape} and predicted {predicted.shape} differ in shape")
    steps = actual.shape[1]
    bad = [h for h in horizons if not 1 <= h <= steps]
    if bad:
        raise ValueError(f"horizons {bad} outside 1..{steps}; forecast further or drop them")
    pooled = {
        str(h): error_metrics(actual[:, :h], predicted[:, :h], mape_floor=mape_floor)
        for h in horizons
    }
    step = {
        str(h): error_metrics(actual[:, h - 1], predicted[:, h - 1], mape_floor=mape_floor)
        for h in horizons
    }
    return {"pooled": pooled, "step": step}


def interval_metrics(
    actual: np.ndarray, lower: np.ndarray, upper: np.ndarray, hours: np.ndarray | None = None
) -> dict[str, float]:
    """How prediction intervals held, over every observed target of ``actual``
    (``[n, horizon, node]``, NaN = not scored): ``coverage`` (the share inside
    ``[lower, upper]``), ``width`` (mean ``upper - lower``) and, given the targets'
    ``hours`` of the day (``[n, horizon]``), ``coverage_worst_hour``: the lowest coverage
    of any hour holding at least 1 % of the targets."""
    scored = np.isfinite(actual)
    nan = float("nan")
    if not scored.any():
        return {"coverage": nan, "width": nan, "coverage_worst_hour": nan}
    inside = (actual >= lower) & (actual <= upper)
    out = {
        "coverage": float(inside[scored].mean()),
        "width": float(np.mean((upper - lower)[scored])),
        "coverage_worst_hour": nan,
    }
    if hours is not None:
        at = np.broadcast_to(hours[:, :, None], actual.shape)[scored]
        hit = inside[scored]
        counts = np.bincount(at, minlength=24)
        shares = np.bincount(at, weights=hit, minlength=24) / np.maximum(counts, 1)
        enough = counts >= 0.01 * hit.size
        out["coverage_worst_hour"] = float(shares[enough].min()) if enough.any() else nan
    return out


def report_horizons(horizon: int, wanted: Sequence[int] = DEFAULT_HORIZONS) -> tuple[int, ...]:
    """The ``wanted`` horizons a ``horizon``-step model can report, plus ``horizon`` itself."""
    chosen = [h for h in wanted if h <= horizon]
    if horizon not in chosen:
        chosen.append(horizon)
    return tuple(sorted(chosen))
