"""Prediction intervals whose width follows the hour of the day.

Split-conformal half-widths (:func:`conformal_halfwidth`) are one
width per step and sensor. Forecast errors are not: a commuter road's are largest at the
rush hours, a substation's with rooftop solar around noon, and nearly nil at night, so one
width over-covers the night and under-covers the peaks. Here the validation residuals set
a scale per hour of the day (UTC) and sensor, and the conformal quantile is taken of the
residuals divided by that scale (normalised conformal prediction, Papadopoulos et al.
2008; Lei et al. 2018): the interval at a target is ``halfwidth * scale[hour, sensor]``.

The scale is each sensor's mean absolute residual at that hour over its mean at every hour,
shrunk toward the network's own ratio at that hour when a sensor has few residuals there
(:data:`SHRINK` residuals' worth of weight), and clipped to ``[1/CLIP, CLIP]``.

The conformal quantile is taken of each residual divided by the scale fitted on the
other half of the validation days (even days' residuals by the odd days' scale, and the
reverse, :func:`cross_scale`): a scale fitted on the residuals it divides would make them
look smaller than new ones, and the intervals would cover less than their level.

Where the hour of the day says nothing about the errors (a network whose rows are not on
the clock, errors as large at night as by day), a scale fitted on a few days only adds
noise. So it is kept only when it earns its place on the validation part itself
(:func:`cross_scale`): fitted on the even days and scored on the odd ones, and the
reverse, it must lower the interval score (Gneiting and Raftery 2007) by at least
:data:`MIN_GAIN` against one width at every hour.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

HOURS = 24
SHRINK = 200.0  # residuals at an hour before a sensor's own ratio outweighs the network's
CLIP = 5.0
MIN_GAIN = 0.01  # the cross-fitted interval score must fall by this share
_HOUR_NS = 3_600_000_000_000
_DAY_NS = 24 * _HOUR_NS


def target_hours(
    timestamps: pd.DatetimeIndex, origins: np.ndarray, horizon: int, step: pd.Timedelta
) -> np.ndarray:
    """The UTC hour of the day of each target, int64 ``[n, horizon]``: target ``k`` of
    origin ``o`` is ``timestamps[o] + (k + 1) * step``."""
    issued = timestamps.as_unit("ns").asi8[np.asarray(origins, dtype=np.int64)]  # ns, UTC
    ahead = (np.arange(1, horizon + 1, dtype=np.int64) * int(step.value))[None, :]
    return ((issued[:, None] + ahead) // _HOUR_NS) % HOURS


def conformal_halfwidth(
    residuals: np.ndarray,
    level: float,
    *,
    min_count: int = 10,
    scale: np.ndarray | None = None,
) -> np.ndarray:
    """Split-conformal half-widths from validation residuals.

    ``residuals`` is ``[n, horizon, node]`` (NaN where the target was missing). Returns
    float32 ``[horizon, node]``: the ``ceil((n+1) level) / n`` empirical quantile of
    ``|residual|`` (divided by ``scale``, ``[n, horizon, node]``, when given: normalised
    conformal, :mod:`models.forecasters.intervals`) per step and sensor. A sensor with
    fewer than ``min_count`` scored residuals at a step takes the pooled quantile of that
    step, so intervals exist for every sensor.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"interval level must be in (0, 1), got {level}")
    abs_res = np.abs(residuals.astype(np.float64))
    if scale is not None:
        abs_res = abs_res / scale
    count = np.isfinite(abs_res).sum(axis=0)  # [horizon, node]
    q = np.minimum(1.0, np.ceil((count + 1) * level) / np.maximum(count, 1))
    per_sensor = np.full(count.shape, np.nan)
    for h in range(abs_res.shape[1]):
        col = abs_res[:, h, :]
        sorted_col = np.sort(col, axis=0)  # NaN sorts last
        idx = np.clip(np.ceil(q[h] * count[h]).astype(int) - 1, 0, None)
        ok = count[h] >= min_count
        per_sensor[h, ok] = sorted_col[idx[ok], np.nonzero(ok)[0]]
        pooled = col[np.isfinite(col)]
        fallback = (
            np.quantile(pooled, min(1.0, level * (1 + 1 / max(len(pooled), 1))))
            if len(pooled)
            else 0.0
        )
        per_sensor[h, ~ok] = fallback
    return per_sensor.astype(np.float32)


def hour_scale(residuals: np.ndarray, hours: np.ndarray) -> np.ndarray | None:
    """float32 ``[HOURS, node]`` scale of the absolute ``residuals`` (``[n, horizon,
    node]``, NaN = not scored) at the targets' ``hours`` (``[n, horizon]``); None when the
    targets fall on fewer than two hours of the day (a daily or coarser step) or no
    residual is scored."""
    abs_res = np.abs(residuals.astype(np.float64))
    scored = np.isfinite(abs_res)
    if not scored.any() or len(np.unique(hours)) < 2:
        return None
    # Each step and sensor in units of its own mean error: steps further ahead err more
    # (a sensor with no scored residual, never read in the validation part, has none).
    total_err = np.where(scored, abs_res, 0.0).sum(axis=0, keepdims=True)  # [1, h, node]
    mean = total_err / np.maximum(scored.sum(axis=0, keepdims=True), 1)
    unit = np.where(scored & (mean > 0), abs_res / np.where(mean > 0, mean, 1.0), np.nan)
    n_nodes = residuals.shape[2]
    total = np.zeros((HOURS, n_nodes))
    count = np.zeros((HOURS, n_nodes))
    flat_hours = np.broadcast_to(hours[:, :, None], unit.shape).reshape(-1)
    flat_unit = unit.reshape(-1)
    flat_node = np.broadcast_to(np.arange(n_nodes), unit.shape).reshape(-1)
    ok = np.isfinite(flat_unit)
    np.add.at(total, (flat_hours[ok], flat_node[ok]), flat_unit[ok])
    np.add.at(count, (flat_hours[ok], flat_node[ok]), 1.0)
    network = total.sum(axis=1) / np.maximum(count.sum(axis=1), 1.0)  # [HOURS]
    network = np.where(count.sum(axis=1) > 0, network, 1.0)
    scale = (total + SHRINK * network[:, None]) / (count + SHRINK)
    return np.clip(scale, 1.0 / CLIP, CLIP).astype(np.float32)


def scale_at(scale: np.ndarray, hours: np.ndarray) -> np.ndarray:
    """``scale`` (``[HOURS, node]``) at the targets' ``hours`` (``[n, horizon]``):
    ``[n, horizon, node]``."""
    return scale[hours]


def interval_score(actual: np.ndarray, lower: np.ndarray, upper: np.ndarray, level: float) -> float:
    """Mean interval score of central ``level`` intervals over the observed targets of
    ``actual``: the width plus ``2 / (1 - level)`` times how far a target falls outside
    (lower is better; NaN when nothing is observed)."""
    scored = np.isfinite(actual)
    if not scored.any():
        return float("nan")
    y, lo, hi = actual[scored], lower[scored], upper[scored]
    outside = np.maximum(lo - y, 0.0) + np.maximum(y - hi, 0.0)
    return float(np.mean(hi - lo + 2.0 / (1.0 - level) * outside))


def cross_scale(
    residuals: np.ndarray, hours: np.ndarray, issued_ns: np.ndarray, level: float
) -> np.ndarray | None:
    """``[n, horizon, node]``: each residual's scale fitted on the residuals of the
    forecasts issued on days of the other parity, when that scale earns its place; None
    when either half holds no scale or it does not.

    Earning its place: fitted on the even days' residuals and scoring the odd days' (and
    the reverse), widths scaled by hour must beat one width per step and sensor fitted on
    the same rows, together by :data:`MIN_GAIN` of the interval score.
    ``residuals`` ``[n, horizon, node]``, ``hours`` ``[n, horizon]``, ``issued_ns`` ``[n]``.
    """
    fold = (np.asarray(issued_ns) // _DAY_NS) % 2
    out = np.ones(residuals.shape)
    totals = {"plain": 0.0, "scaled": 0.0}
    for part in (0, 1):
        fit, held = fold == part, fold != part
        scale = hour_scale(residuals[fit], hours[fit]) if fit.any() and held.any() else None
        if scale is None:
            return None
        out[held] = scale_at(scale, hours[held])
        actual = residuals[held]  # the forecast is 0 in residual units
        plain = conformal_halfwidth(residuals[fit], level)
        width = conformal_halfwidth(residuals[fit], level, scale=scale_at(scale, hours[fit]))
        for rule, half in (("plain", plain), ("scaled", width * out[held])):
            half = np.broadcast_to(half, actual.shape)
            score = interval_score(actual, -half, half, level)
            if not np.isfinite(score):
                return None
            totals[rule] += score
    return out if totals["scaled"] < (1.0 - MIN_GAIN) * totals["plain"] else None
