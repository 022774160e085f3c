"""The two baselines every comparison table shows: persistence and seasonal naive.

Persistence forecasts every future step as the last observed value of each sensor in
its input window (a missing latest reading falls back to the last one observed earlier
in the window, then to the sensor's training mean).

Seasonal naive forecasts step ``t + h`` as the value one period earlier, ``t + h - P``:
the same time yesterday (``P`` = one day), or last week when the training part holds
at least two weeks (``period=None`` chooses; ``"day"``, ``"week"`` or a number of steps
force it). Its input window is one period. A missing seasonal value falls back to the
persistence forecast of that window.

Both have split-conformal intervals from the validation part (``finish_fit``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from models.bundle import read_model_bundle, save_bundle, step_text
from models.forecasters.base import (
    BatchForecast,
    ForecasterBase,
    forecaster_config,
    restore_forecaster,
)
from models.forecasters.evaluation import finish_fit
from models.forecasters.windows import check_2d, check_origins, last_observed, training_means
from models.panel import SensorPanel


def _check_horizon(horizon: int, level: float) -> None:
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"interval level must be in (0, 1), got {level}")


class _Baseline(ForecasterBase):
    """What both baselines share: their state, and a bundle of the common config plus the
    training means."""

    fallback: np.ndarray  # float64 [node], training mean per sensor

    def __init__(self, *, window: int, horizon: int, level: float) -> None:
        _check_horizon(horizon, level)
        self.window = window
        self.horizon = horizon
        self.level = level
        self.sensor_ids = ()
        self.halfwidth = None
        self.fallback = np.empty(0)
        self.fingerprint: str | None = None
        self.valid_metrics: dict[str, Any] | None = None

    def _fit_sensors(self, panel: SensorPanel, valid: SensorPanel | None) -> Self:
        """Take ``panel``'s sensors and training means, then calibrate the intervals."""
        self.sensor_ids = panel.sensor_ids
        self.fallback = training_means(panel)
        finish_fit(self, panel, valid)
        return self

    def _last_values(
        self, panel: SensorPanel, origins: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The checked ``origins`` and the last observed value of each window ``[n, node]``."""
        self.check_panel(panel)
        origins = check_origins(panel, origins, self.window)
        return origins, last_observed(panel, origins, self.window, self.fallback)

    def bundle_extra(self) -> dict[str, Any]:
        """Keys ``save`` adds to ``config.json`` besides the fallback (override to add)."""
        return {}

    def save(self, directory: str | Path) -> None:
        config = forecaster_config(
            self, self.describe(), fallback=self.fallback.tolist(), **self.bundle_extra()
        )
        save_bundle(directory, config=config)

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        config = read_model_bundle(directory, cls.name).config
        model = cls(**config["hyper"])
        restore_forecaster(model, config)
        model.fallback = np.asarray(config["fallback"], dtype=np.float64)
        return model


class Persistence(_Baseline):
    """Last observed value, repeated over the horizon."""

    name: ClassVar[str] = "persistence"

    def __init__(self, *, window: int = 12, horizon: int = 12, level: float = 0.9) -> None:
        super().__init__(window=window, horizon=horizon, level=level)
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")

    def fit(self, panel: SensorPanel, *, valid: SensorPanel | None = None) -> Self:
        check_2d(panel, self.name)
        return self._fit_sensors(panel, valid)

    def predict_batch(self, panel: SensorPanel, origins: np.ndarray) -> BatchForecast:
        origins, last = self._last_values(panel, origins)
        mean = np.repeat(last[:, None, :], self.horizon, axis=1)  # [n, horizon, node]
        return self.with_intervals(origins, mean.astype(np.float32), panel)


def period_steps(freq: pd.Timedelta, period: str | int | None, train_steps: int) -> int:
    """The seasonal period in steps of ``freq``.

    ``None`` picks a week when ``train_steps`` covers at least two weeks, else a day.
    """
    if isinstance(period, int) and not isinstance(period, bool):
        if period < 1:
            raise ValueError(f"seasonal period must be >= 1 step, got {period}")
        return period
    day = pd.Timedelta(days=1)
    if day % freq != pd.Timedelta(0):
        raise ValueError(
            f"a day is not a whole number of {step_text(freq.total_seconds())} steps, so there "
            "is no daily or weekly period; give the period in steps (period=N in Python)"
        )
    per_day = int(day // freq)
    if period is None:
        return per_day * 7 if train_steps >= 2 * 7 * per_day else per_day
    if period == "day":
        return per_day
    if period == "week":
        return per_day * 7
    raise ValueError(
        f"seasonal period must be 'day', 'week', a number of steps or None, got {period!r}"
    )


class Seasonal(_Baseline):
    """Seasonal naive: the value one period before each target step."""

    name: ClassVar[str] = "seasonal"

    def __init__(
        self,
        *,
        horizon: int = 12,
        period: str | int | None = None,
        level: float = 0.9,
        window: int | None = None,
    ) -> None:
        """``window`` is accepted for a uniform constructor and ignored: the input window
        of a seasonal model is its period, known once ``fit`` sees the data's frequency."""
        super().__init__(window=0, horizon=horizon, level=level)
        self.period = period

    def fit(self, panel: SensorPanel, *, valid: SensorPanel | None = None) -> Self:
        check_2d(panel, self.name)
        steps = period_steps(panel.freq, self.period, panel.n_time)
        if steps < self.horizon:
            raise ValueError(
                f"seasonal period of {steps} steps is shorter than the horizon {self.horizon}; "
                "use a longer period or a shorter horizon"
            )
        self.window = steps
        return self._fit_sensors(panel, valid)

    def predict_batch(self, panel: SensorPanel, origins: np.ndarray) -> BatchForecast:
        origins, last = self._last_values(panel, origins)
        # Target t+h is the step one period earlier: t+h-P, window position h-1.
        steps = origins[:, None] - self.window + 1 + np.arange(self.horizon)[None, :]
        seasonal = panel.values[steps].astype(np.float64)  # [n, horizon, node]
        seen = panel.mask[steps]
        mean = np.where(seen, seasonal, last[:, None, :])  # [n, horizon, node]
        return self.with_intervals(origins, mean.astype(np.float32), panel)

    def describe(self) -> dict[str, Any]:
        return {"horizon": self.horizon, "level": self.level, "period": self.period}

    def bundle_extra(self) -> dict[str, Any]:
        return {"period_steps": self.window}
