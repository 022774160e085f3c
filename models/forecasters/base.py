"""The Forecaster contract shared by every model, and the forecast it returns.

Every model is registered by name in ``models.forecasters.registry.MODELS`` and implements
:class:`Forecaster`. Capabilities are class constants (``USES_GRAPH``,
``PROBABILISTIC``), not a class tree. :class:`ForecasterBase` only holds the few
pieces every model would otherwise write again (``predict`` from
``predict_batch``, the sensor check, split-conformal intervals).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import numpy as np
import pandas as pd

from models.bundle import BundleError, finite_or_none, recorded_offset
from models.forecasters.intervals import scale_at, target_hours
from models.panel import SensorPanel


@dataclass(frozen=True, eq=False)
class Forecast:
    """A forecast of every sensor for the next ``horizon`` steps after ``issued_at``.

    ``mean``, ``lower`` and ``upper`` are float32 ``[horizon, node]``; the bounds are a
    central prediction interval at ``level`` (e.g. 0.9), or None when the model has none.
    """

    model: str
    sensor_ids: tuple[str, ...]
    issued_at: pd.Timestamp
    targets: pd.DatetimeIndex
    mean: np.ndarray
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    level: float = 0.9

    @property
    def horizon(self) -> int:
        return int(self.mean.shape[0])


@dataclass(frozen=True, eq=False)
class BatchForecast:
    """Forecasts from many origins at once (backtests, evaluation).

    ``origins`` int64 ``[n]`` are indices, in the panel given to ``predict_batch``, of the
    last input step of each window; ``mean``/``lower``/``upper`` are ``[n, horizon, node]``
    and row ``k`` forecasts steps ``origins[k] + 1 .. origins[k] + horizon``.
    """

    model: str
    origins: np.ndarray
    mean: np.ndarray
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    level: float = 0.9


@runtime_checkable
class Forecaster(Protocol):
    """What every registered model provides (docs/architecture.md, "Layers")."""

    name: ClassVar[str]
    USES_GRAPH: ClassVar[bool]
    PROBABILISTIC: ClassVar[bool]

    window: int  # input steps a forecast needs
    horizon: int  # steps forecast
    sensor_ids: tuple[str, ...]

    def fit(self, panel: SensorPanel, *, valid: SensorPanel | None = None) -> Self: ...

    def predict(self, window: SensorPanel) -> Forecast: ...

    def predict_batch(self, panel: SensorPanel, origins: np.ndarray) -> BatchForecast: ...

    def save(self, directory: str | Path) -> None: ...

    def describe(self) -> dict[str, Any]: ...

    @classmethod
    def load(cls, directory: str | Path) -> Self: ...


def window_origins(n_time: int, window: int, horizon: int, *, targets: bool = True) -> np.ndarray:
    """Every origin whose input window fits in ``n_time`` steps (and, with ``targets``,
    whose ``horizon`` target steps fit too), as int64 ``[n]``."""
    last = n_time - 1 - (horizon if targets else 0)
    if last < window - 1:
        return np.empty(0, dtype=np.int64)
    return np.arange(window - 1, last + 1, dtype=np.int64)


def target_windows(values: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
    """The actual values after each origin: ``[n, horizon, ...]`` (NaN stays NaN)."""
    steps = origins[:, None] + np.arange(1, horizon + 1)[None, :]  # [n, horizon]
    return values[steps]


def sensor_floor(values: np.ndarray) -> np.ndarray | None:
    """Per-sensor lower bound of forecasts, float32 ``[node]``: 0.0 for a sensor whose
    observed training values are all ``>= 0`` (speeds, counts, occupancy), ``-inf`` for
    the others and for a sensor never observed. None when no sensor has a bound."""
    flat = values.reshape(values.shape[0], values.shape[1], -1)  # [time, node, feature]
    lowest = np.min(np.where(np.isnan(flat), np.inf, flat), axis=(0, 2), initial=np.inf)
    floor = np.where(np.isfinite(lowest) & (lowest >= 0.0), 0.0, -np.inf).astype(np.float32)
    return None if np.isneginf(floor).all() else floor


class ForecasterBase:
    """Shared behaviour for registered models. Subclasses set the class constants,
    implement ``fit``, ``predict_batch``, ``save`` and ``load``."""

    name: ClassVar[str] = ""
    USES_GRAPH: ClassVar[bool] = False
    PROBABILISTIC: ClassVar[bool] = False

    window: int
    horizon: int
    sensor_ids: tuple[str, ...] = ()
    level: float = 0.9
    halfwidth: np.ndarray | None = None  # float32 [horizon, node], split-conformal
    hour_scale: np.ndarray | None = None  # float32 [24, node]: the width by hour of the day
    step_s: int | None = None  # the training data's time step in seconds (None: unknown)
    offset_s: int | None = None  # its grid: first timestamp mod step_s, seconds (None: unknown)
    floor: np.ndarray | None = None  # float32 [node], see sensor_floor (None: unbounded)

    def check_panel(self, panel: SensorPanel) -> None:
        """Refuse a panel whose sensors differ from the ones this model was trained on."""
        if not self.sensor_ids:
            raise RuntimeError(f"{self.name}: call fit() or load() before predicting")
        if panel.sensor_ids != self.sensor_ids:
            unknown = [s for s in panel.sensor_ids if s not in set(self.sensor_ids)]
            absent = [s for s in self.sensor_ids if s not in set(panel.sensor_ids)]
            if unknown or absent:
                raise ValueError(
                    f"{self.name}: window sensors do not match the trained bundle "
                    f"(unknown: {unknown[:5]}, absent: {absent[:5]}); retrain on these sensors "
                    "or select the trained ones with panel.select(model.sensor_ids)"
                )
            raise ValueError(
                f"{self.name}: window sensors are in another order than the trained bundle; "
                "reorder with panel.select(model.sensor_ids)"
            )

    def predict_batch(self, panel: SensorPanel, origins: np.ndarray) -> BatchForecast:
        """Forecasts issued at ``origins`` of ``panel`` (see :class:`Forecaster`)."""
        raise NotImplementedError(f"{type(self).__name__} must implement predict_batch")

    def predict(self, window: SensorPanel) -> Forecast:
        """Forecast the ``horizon`` steps after the last step of ``window``."""
        self.check_panel(window)
        if window.n_time < self.window:
            raise ValueError(
                f"{self.name}: needs {self.window} input steps, window has {window.n_time}"
            )
        batch = self.predict_batch(window, np.array([window.n_time - 1], dtype=np.int64))
        issued = window.timestamps[-1]
        targets = pd.date_range(issued + window.freq, periods=self.horizon, freq=window.freq)
        pick = lambda a: None if a is None else a[0]  # noqa: E731
        return Forecast(
            model=self.name,
            sensor_ids=self.sensor_ids,
            issued_at=issued,
            targets=targets,
            mean=batch.mean[0],
            lower=pick(batch.lower),
            upper=pick(batch.upper),
            level=batch.level,
        )

    def floored(self, values: np.ndarray) -> np.ndarray:
        """``values`` (``[..., node]``) raised to each sensor's :attr:`floor`: a quantity
        that was never negative in training is never forecast negative."""
        return values if self.floor is None else np.maximum(values, self.floor)

    def with_intervals(
        self, origins: np.ndarray, mean: np.ndarray, panel: SensorPanel
    ) -> BatchForecast:
        """A :class:`BatchForecast` of ``mean`` (forecast from ``origins`` of ``panel``)
        raised to the floor, with the conformal interval around it when calibrated, as wide
        as :attr:`hour_scale` says at each target's hour."""
        mean = self.floored(mean)
        if self.halfwidth is None:
            return BatchForecast(self.name, origins, mean, level=self.level)
        width = self.halfwidth
        if self.hour_scale is not None and self.step_s:
            step = pd.Timedelta(seconds=self.step_s)
            hours = target_hours(panel.timestamps, origins, self.horizon, step)
            width = width * scale_at(self.hour_scale, hours)
        return BatchForecast(
            self.name, origins, mean, self.floored(mean - width), mean + width, level=self.level
        )

    def describe(self) -> dict[str, Any]:
        """Hyper-parameters for ``config.json`` and reports (override to add more)."""
        return {"window": self.window, "horizon": self.horizon, "level": self.level}


def forecaster_config(model: Any, hyper: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The ``config.json`` keys every model records, plus ``extra`` (scaler, history...).

    Reads ``model.name``, ``sensor_ids``, ``window``, ``horizon``, ``level``,
    ``halfwidth`` (split-conformal, ``[horizon, node]`` or None), ``floor``, ``fingerprint``,
    ``step_s`` (the training data's step in seconds, or None), ``offset_s`` (its grid
    offset in seconds, or None) and ``valid_metrics`` (set
    by ``models.forecasters.evaluation.finish_fit``).
    """
    if not model.sensor_ids:
        raise BundleError(f"{model.name}: call fit() before save()")
    halfwidth = getattr(model, "halfwidth", None)
    hour_scale = getattr(model, "hour_scale", None)
    floor = getattr(model, "floor", None)
    config = {
        "model": model.name,
        "sensor_ids": list(model.sensor_ids),
        "window": int(model.window),
        "horizon": int(model.horizon),
        "level": float(model.level),
        "hyper": hyper,
        "fingerprint": getattr(model, "fingerprint", None),
        "step_s": getattr(model, "step_s", None),
        "offset_s": getattr(model, "offset_s", None),
        "metrics": {"valid": getattr(model, "valid_metrics", None)},
        "halfwidth": None if halfwidth is None else np.asarray(halfwidth).tolist(),
        "hour_scale": None if hour_scale is None else np.asarray(hour_scale).tolist(),
        "floor": None if floor is None else np.asarray(floor).tolist(),
        **extra,
    }
    # A diverged loss or an undefined metric must not make the bundle unwritable.
    return finite_or_none(config)


def restore_forecaster(model: Any, config: dict[str, Any]) -> None:
    """Set the attributes :func:`forecaster_config` recorded back on ``model``."""
    model.sensor_ids = tuple(str(s) for s in config["sensor_ids"])
    model.window = int(config["window"])
    model.horizon = int(config["horizon"])
    model.level = float(config.get("level", 0.9))
    halfwidth = config.get("halfwidth")
    model.halfwidth = None if halfwidth is None else np.asarray(halfwidth, dtype=np.float32)
    scale = config.get("hour_scale")  # None: one width at every hour (older bundles too)
    model.hour_scale = None if scale is None else np.asarray(scale, dtype=np.float32)
    floor = config.get("floor")  # None in bundles written before floors were recorded
    model.floor = (
        None
        if floor is None
        else np.array([-np.inf if f is None else f for f in floor], dtype=np.float32)
    )
    model.fingerprint = config.get("fingerprint")
    model.step_s = config.get("step_s")  # None in bundles written before it was recorded
    model.offset_s = recorded_offset(config)
    model.valid_metrics = (config.get("metrics") or {}).get("valid")
