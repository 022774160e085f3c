"""Scoring a fitted model on a part of a panel: validation and test backtests.

Protocol: a part (validation or test) is a range
``[start, stop)`` of time steps of a longer panel that also holds the history before
it. A window is scored when its ``horizon`` targets lie inside the part and its last
``inputs_inside`` input steps do too. For the test part ``inputs_inside`` is the
protocol window (12 on los-loop: input and targets inside the test part, as T-GCN
does); a model that needs a longer history (seasonal naive: a day; AR with p > 12)
reads it from before the part, as it would in service, so every model is scored on
exactly the same target windows. For validation ``inputs_inside = 0``: every window
whose targets are validation steps (inputs may come from the end of the training
part), which gives the most residuals for the conformal intervals.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from models.bundle import grid_offset, step_seconds
from models.forecasters.base import BatchForecast, Forecaster, ForecasterBase, target_windows
from models.forecasters.intervals import (
    conformal_halfwidth,
    cross_scale,
    hour_scale,
    target_hours,
)
from models.metrics import DEFAULT_HORIZONS, interval_metrics, report_horizons, score_batch
from models.panel import SensorPanel


@dataclass(frozen=True, eq=False)
class Backtest:
    """The scored windows of a backtest and their metrics.

    ``actual`` is ``[n, horizon, node]`` (NaN = missing target); ``forecast`` holds the
    predictions at ``forecast.origins`` (indices into the panel given to
    :func:`backtest`).
    """

    metrics: dict[str, dict[str, dict[str, float]]]
    forecast: BatchForecast
    actual: np.ndarray
    timestamps: pd.DatetimeIndex  # of the panel the origins index into
    predict_ms_per_window: float  # batched prediction time / number of windows
    predict_ms_single: float  # median latency of predict() on one window

    @property
    def n_windows(self) -> int:
        return len(self.forecast.origins)


def join_panels(first: SensorPanel, second: SensorPanel) -> SensorPanel:
    """``first`` followed by ``second`` (consecutive slices of one panel, same sensors)."""
    if first.sensor_ids != second.sensor_ids:
        raise ValueError("panels to join must have the same sensors in the same order")
    if (
        first.n_time
        and second.n_time
        and (second.timestamps[0] != first.timestamps[-1] + first.freq)
    ):
        raise ValueError(
            f"panels are not consecutive: {first.timestamps[-1]} then {second.timestamps[0]}"
        )
    stamps = first.timestamps.append(second.timestamps)
    stamps = pd.DatetimeIndex(stamps, freq=first.timestamps.freq or second.timestamps.freq)
    return replace(
        first,
        values=np.concatenate([first.values, second.values]),
        mask=np.concatenate([first.mask, second.mask]),
        timestamps=stamps,
        events=first.events + tuple(e for e in second.events if e not in first.events),
    )


def part_origins(
    n_time: int, *, start: int, stop: int | None, window: int, horizon: int, inputs_inside: int
) -> np.ndarray:
    """Origins scored in the part ``[start, stop)``: int64 ``[n]`` (see module docstring)."""
    stop = n_time if stop is None else stop
    if not 0 <= start < stop <= n_time:
        raise ValueError(f"part [{start}, {stop}) is not inside a panel of {n_time} steps")
    first = max(start + inputs_inside - 1, start - 1, window - 1)
    last = stop - 1 - horizon
    if last < first:
        return np.empty(0, dtype=np.int64)
    return np.arange(first, last + 1, dtype=np.int64)


def backtest(
    model: Forecaster,
    panel: SensorPanel,
    *,
    start: int,
    stop: int | None = None,
    inputs_inside: int = 12,
    horizons: Sequence[int] | None = None,
    latency_repeats: int = 5,
) -> Backtest:
    """Score ``model`` on the part ``[start, stop)`` of ``panel`` (history before ``start``).

    Parameters
    ----------
    inputs_inside : how many of the last input steps must lie in the part (the
        protocol window for a test part, 0 for validation).
    horizons : horizons to report (default: 3, 6, 9, 12 up to the model's horizon).
    latency_repeats : single-window ``predict`` calls timed (0 to skip).

    Raises
    ------
    ValueError
        When the part has no complete window, or the sensors differ from the model's.
    """
    if panel.sensor_ids != model.sensor_ids:
        raise ValueError(
            f"{model.name}: the panel's sensors differ from the trained bundle's; "
            "select them with panel.select(model.sensor_ids)"
        )
    origins = part_origins(
        panel.n_time,
        start=start,
        stop=stop,
        window=model.window,
        horizon=model.horizon,
        inputs_inside=inputs_inside,
    )
    if len(origins) == 0:
        end = stop if stop is not None else panel.n_time
        if model.window + model.horizon > end:
            raise ValueError(
                f"{model.name}: its input window of {model.window} steps and {model.horizon} "
                f"targets need {model.window + model.horizon} steps of data, there are {end}; "
                "use more data or a smaller --window/--horizon"
            )
        raise ValueError(
            f"{model.name}: no window of {inputs_inside} inputs + {model.horizon} targets fits "
            f"in steps [{start}, {end}); use a longer test part or a smaller --window/--horizon"
        )
    began = time.perf_counter()
    forecast = model.predict_batch(panel, origins)
    batch_ms = (time.perf_counter() - began) * 1000.0 / len(origins)
    actual = target_windows(panel.values, origins, model.horizon)  # [n, horizon, node]
    single: list[float] = []
    for k in range(min(latency_repeats, len(origins))):
        origin = int(origins[(k * 7919) % len(origins)])
        window = panel.slice(origin - model.window + 1, origin + 1)
        began = time.perf_counter()
        model.predict(window)
        single.append((time.perf_counter() - began) * 1000.0)
    chosen = tuple(horizons) if horizons is not None else report_horizons(model.horizon)
    metrics = score_batch(actual, forecast.mean, chosen)
    if forecast.lower is not None and forecast.upper is not None:
        hours = target_hours(panel.timestamps, origins, model.horizon, panel.freq)
        for h in chosen:
            metrics["pooled"][str(h)].update(
                interval_metrics(
                    actual[:, :h], forecast.lower[:, :h], forecast.upper[:, :h], hours[:, :h]
                )
            )
    return Backtest(
        metrics=metrics,
        forecast=forecast,
        actual=actual,
        timestamps=panel.timestamps,
        predict_ms_per_window=batch_ms,
        predict_ms_single=float(np.median(single)) if single else float("nan"),
    )


def validation_backtest(
    model: Forecaster, train: SensorPanel, valid: SensorPanel, **kwargs: Any
) -> Backtest | None:
    """Backtest on the validation part, with the training part as history (None when the
    validation part holds no complete horizon)."""
    history = join_panels(train, valid)
    try:
        return backtest(
            model, history, start=train.n_time, inputs_inside=0, latency_repeats=0, **kwargs
        )
    except ValueError:
        if valid.n_time <= model.horizon:
            return None
        raise


def finish_fit(model: ForecasterBase, train: SensorPanel, valid: SensorPanel | None) -> None:
    """What every model does at the end of ``fit``: record the training fingerprint, time
    step and grid offset, per-sensor floor (:func:`~models.forecasters.base.sensor_floor`)
    and, with a validation part, the split-conformal half-widths and the validation metrics
    (``model.fingerprint``, ``model.step_s``, ``model.offset_s``, ``model.floor``,
    ``model.halfwidth``, ``model.valid_metrics``).

    A model with its own intervals (``PROBABILISTIC = True``) keeps them: only the
    metrics are recorded.
    """
    from models.forecasters.base import sensor_floor

    model.fingerprint = train.fingerprint()  # type: ignore[attr-defined]
    model.step_s = step_seconds(train.freq) if train.n_time > 1 else None
    model.offset_s = grid_offset(train.timestamps[0], model.step_s) if model.step_s else None
    model.floor = sensor_floor(train.values)
    model.valid_metrics = None  # type: ignore[attr-defined]
    if not model.PROBABILISTIC:
        model.halfwidth = model.hour_scale = None  # a refit must not keep earlier intervals
    if valid is None:
        return
    result = validation_backtest(model, train, valid)  # type: ignore[arg-type]
    if result is None:
        return
    if not model.PROBABILISTIC:
        step = pd.Timedelta(seconds=model.step_s) if model.step_s else None
        model.halfwidth, model.hour_scale = calibrate_intervals(
            result, step, model.horizon, model.level
        )
    model.valid_metrics = result.metrics  # type: ignore[attr-defined]


def calibrate_intervals(
    result: Backtest, step: pd.Timedelta | None, horizon: int, level: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """Split-conformal half-widths ``[horizon, node]`` and their scale by hour of the day
    ``[24, node]`` (None for a daily or coarser ``step``, or none known) from a validation
    backtest (:mod:`models.forecasters.intervals`)."""
    residuals = result.actual - result.forecast.mean
    plain = conformal_halfwidth(residuals, level)
    if step is None:
        return plain, None
    origins = result.forecast.origins
    hours = target_hours(result.timestamps, origins, horizon, step)
    issued = result.timestamps.as_unit("ns").asi8[origins]
    scale = hour_scale(residuals, hours)
    crossed = None if scale is None else cross_scale(residuals, hours, issued, level)
    if scale is None or crossed is None:
        return plain, None
    return conformal_halfwidth(residuals, level, scale=crossed), scale


def pooled(metrics: dict[str, Any], horizon: int | str, key: str = "rmse") -> float:
    """``metrics["pooled"][str(horizon)][key]`` (a small helper for tables)."""
    return float(metrics["pooled"][str(horizon)][key])


__all__ = [
    "DEFAULT_HORIZONS",
    "Backtest",
    "backtest",
    "finish_fit",
    "join_panels",
    "part_origins",
    "pooled",
    "validation_backtest",
]
