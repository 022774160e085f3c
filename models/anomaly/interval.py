"""Forecast-interval detector: a reading outside the intervals of the forecasts made for it.

Any :class:`models.forecasters.base.Forecaster` forecasts every sensor ``horizon`` steps ahead, so a
reading at time ``t`` was forecast ``horizon`` times, at ``t-1, ..., t-horizon``. For each
of those forecasts the absolute residual ``|y_t - yhat_{t|t-h}|`` is compared with the
residuals of the same horizon and sensor on validation data (split-conformal, as
:func:`models.forecasters.base.conformal_halfwidth` does for the forecast intervals), giving a
p-value ``p_h`` per horizon (:mod:`models.anomaly.calibration`: smaller the further
outside the interval the reading lies).

How many horizons must agree (``agreement``):

* ``"all"`` (default): ``p = max_h p_h``. The reading is anomalous only if it is outside
  the interval of *every* forecast made for it; a forecaster's one-step error
  (e.g. persistence after a noisy reading) is not enough. This is an intersection-union
  test, a valid p-value whatever the dependence between horizons.
* ``"half"``: ``p = min(1, 2 * median_h p_h)``, valid under any dependence as well
  (Rüschendorf); a majority of the horizons suffices.

``range_check=True`` adds the sensor's normal range as one more "forecast" that must
agree: the value's two-sided conformal p-value among the values seen in training. It
silences large forecast errors at ordinary levels (noisy sensors) but also hides
contextual anomalies (a normal value at the wrong time), so it is off by default.

The score is ``1 - p``. ``expected`` is the most recent forecast for the tick, and
``lower``/``upper`` its calibrated ``level`` interval.

The detector either forecasts itself (``self_forecast=True``: it keeps the last
``forecaster.window`` ticks and calls ``forecaster.predict`` after each tick) or receives
the forecasts a service already made through :meth:`ForecastIntervalDetector.observe_forecast`,
so nothing is forecast twice. Forecasts are matched to ticks by count: a forecast
observed right after tick ``k`` predicts ticks ``k+1 .. k+horizon``.
"""

from __future__ import annotations

from collections import deque
from copy import deepcopy
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar, Literal, Self

import numpy as np
import pandas as pd

from models.anomaly.base import (
    REASON_MIN_SCORE,
    Detection,
    DetectorError,
    StreamingDetector,
    check_tick,
    describe_config,
    distinct_text,
    read_detector_bundle,
    save_detector_bundle,
)
from models.anomaly.calibration import ConformalPool, Tail, check_tail
from models.forecasters.base import Forecast, Forecaster, target_windows, window_origins
from models.panel import SensorPanel

Agreement = Literal["all", "half"]


@dataclass(frozen=True)
class IntervalConfig:
    """Settings of :class:`ForecastIntervalDetector`.

    horizon : forecasts per reading that are compared (``<=`` the forecaster's horizon).
    level : the interval shown to operators (``expected +- halfwidth``).
    agreement : ``"all"`` or ``"half"`` of the horizons must find the reading abnormal.
    range_check : also require the value to be outside the sensor's normal range.
    online : keep adding the stream's residuals to the calibration (NAB's protocol).
    capacity : calibration residuals kept per sensor and horizon.
    min_count : residuals needed before a sensor is scored.
    tail : how residuals beyond the calibration are judged, ``"max"`` or ``"pot"``
        (:mod:`models.anomaly.calibration`).
    feature : the feature judged when panels are ``[time, node, feature]``.
    """

    horizon: int = 3
    level: float = 0.9
    agreement: Agreement = "all"
    range_check: bool = False
    online: bool = False
    capacity: int = 4096
    min_count: int = 20
    tail: Tail = "max"
    feature: int = 0

    def __post_init__(self) -> None:
        if self.horizon < 1:
            raise DetectorError(f"horizon must be >= 1, got {self.horizon}")
        if not 0.0 < self.level < 1.0:
            raise DetectorError(f"level must be in (0, 1), got {self.level}")
        if self.agreement not in ("all", "half"):
            raise DetectorError(f"agreement must be 'all' or 'half', got {self.agreement!r}")
        check_tail(self.tail)


def _values_2d(panel: SensorPanel, feature: int) -> tuple[np.ndarray, np.ndarray]:
    if panel.values.ndim == 2:
        return panel.values, panel.mask
    if not 0 <= feature < panel.values.shape[2]:
        raise DetectorError(f"feature {feature} not in a panel of {panel.values.shape[2]}")
    return panel.values[:, :, feature], panel.mask[:, :, feature]


class ForecastIntervalDetector(StreamingDetector):
    """Flags readings outside the calibrated intervals of the forecasts made for them.

    Besides the detector contract it needs a fitted forecaster: passed to the
    constructor, or given to a loaded detector with :meth:`attach`.

    Parameters
    ----------
    forecaster : a fitted forecaster of the same sensors (needed by ``fit``, ``start``
        and ``self_forecast``).
    config : :class:`IntervalConfig`.
    self_forecast : forecast after every tick (False when a service supplies forecasts
        through :meth:`observe_forecast`).
    """

    name: ClassVar[str] = "interval"

    def __init__(
        self,
        forecaster: Forecaster | None = None,
        config: IntervalConfig | None = None,
        *,
        self_forecast: bool = True,
    ) -> None:
        self.config = config or IntervalConfig()
        self.forecaster = forecaster
        self.self_forecast = self_forecast
        self.sensor_ids: tuple[str, ...] = ()
        self.forecaster_name = forecaster.name if forecaster is not None else ""
        self.freq: pd.Timedelta | None = None
        self.residuals: ConformalPool | None = None  # rows: horizon-major [h * node + i]
        self.upper_range: ConformalPool | None = None
        self.lower_range: ConformalPool | None = None
        self.halfwidth: np.ndarray | None = None  # [horizon, node]
        self._fitted: tuple[ConformalPool, ConformalPool, ConformalPool] | None = None
        self._ticks = 0
        self._forecasts: deque[tuple[int, np.ndarray]] = deque()
        self._window: deque[tuple[pd.Timestamp, np.ndarray, np.ndarray]] = deque()
        self._since_width = 0

    # --- fitting ----------------------------------------------------------------------

    @property
    def n_nodes(self) -> int:
        return len(self.sensor_ids)

    def _check_forecaster(self) -> Forecaster:
        if self.forecaster is None:
            raise DetectorError(
                "the interval detector has no forecaster; pass one to the constructor "
                "or call attach(forecaster) after load()"
            )
        if self.forecaster.horizon < self.config.horizon:
            raise DetectorError(
                f"forecaster {self.forecaster.name!r} forecasts {self.forecaster.horizon} "
                f"steps, the detector compares {self.config.horizon}; lower "
                "IntervalConfig.horizon or use a longer-horizon forecaster"
            )
        return self.forecaster

    def _new_pools(self) -> None:
        c = self.config
        self.residuals = ConformalPool(c.horizon * self.n_nodes, c.capacity, c.min_count, c.tail)
        self.upper_range = ConformalPool(self.n_nodes, c.capacity, c.min_count, c.tail)
        self.lower_range = ConformalPool(self.n_nodes, c.capacity, c.min_count, c.tail)

    def fit(self, panel: SensorPanel, *, valid: SensorPanel | None = None) -> Self:
        """Calibrate on ``valid`` (default: the last 20 % of ``panel``).

        The forecaster must already be fitted on the training part; its forecasts on
        ``valid`` give the residual pools, and the values of ``panel`` and ``valid`` the
        normal range.
        """
        self.record_grid(panel)
        forecaster = self._check_forecaster()
        self.sensor_ids = tuple(panel.sensor_ids)
        if tuple(forecaster.sensor_ids) != self.sensor_ids:
            raise DetectorError(
                f"forecaster {forecaster.name!r} was fitted on other sensors; fit it on "
                "this panel's sensors or select them with panel.select(forecaster.sensor_ids)"
            )
        if valid is None:
            cut = int(panel.n_time * 0.8)
            panel, valid = panel.slice(0, cut), panel.slice(cut, panel.n_time)
        self.freq = valid.freq if valid.n_time > 1 else panel.freq
        self._new_pools()
        self._calibrate(valid)
        for part in (panel, valid):
            values, _ = _values_2d(part, self.config.feature)
            self._add_range(values)
        self._keep_fitted()
        self.reset()
        return self

    def _calibrate(self, valid: SensorPanel) -> None:
        """Add the forecaster's residuals on ``valid`` to the calibration pools."""
        forecaster = self._check_forecaster()
        h = self.config.horizon
        origins = window_origins(valid.n_time, max(forecaster.window, 1), h)
        if len(origins) == 0:
            raise DetectorError(
                f"validation part of {valid.n_time} steps is too short for a window of "
                f"{forecaster.window} and {h} horizons; give a longer validation part"
            )
        if self.residuals is None:
            self._new_pools()
        assert self.residuals is not None
        batch = forecaster.predict_batch(valid, origins)
        values, _ = _values_2d(valid, self.config.feature)
        actual = target_windows(values, origins, h)  # [n, horizon, node]
        stats = np.abs(actual - batch.mean[:, :h, :])  # [n, horizon, node]
        self.residuals.extend(stats.reshape(len(origins), -1))

    def _add_range(self, values: np.ndarray) -> None:
        assert self.upper_range is not None and self.lower_range is not None
        self.upper_range.extend(values)
        self.lower_range.extend(-values)

    def _refresh_width(self) -> None:
        assert self.residuals is not None
        width = self.residuals.quantile(self.config.level)  # [horizon * node]
        self.halfwidth = width.reshape(self.config.horizon, self.n_nodes)
        self._since_width = 0

    def _keep_fitted(self) -> None:
        """Keep the pools as they are now: what ``reset`` returns to and ``save`` writes."""
        assert self.residuals is not None
        assert self.upper_range is not None and self.lower_range is not None
        self._fitted = deepcopy((self.residuals, self.upper_range, self.lower_range))

    def start(self, head: SensorPanel) -> Self:
        """Begin with empty calibration pools for ``head``'s sensors and step, and learn
        online from the stream.

        NAB's protocol: no validation data, the detector calibrates on what it has seen
        (``online`` is switched on). ``head``'s rows are not used (the forecaster was
        fitted on them). Sensors are not scored until their pools hold ``min_count``
        residuals.
        """
        self.record_grid(head)
        self._check_forecaster()
        self.sensor_ids = tuple(head.sensor_ids)
        self.freq = head.freq
        self.config = replace(self.config, online=True)
        self._new_pools()
        self._keep_fitted()
        self.reset()
        return self

    def attach(self, forecaster: Forecaster) -> None:
        """Give a loaded detector its forecaster (checked against the saved one)."""
        if self.sensor_ids and tuple(forecaster.sensor_ids) != self.sensor_ids:
            raise DetectorError(
                f"forecaster {forecaster.name!r} has other sensors than the detector; "
                "use the forecaster bundle the detector was calibrated with"
            )
        if self.forecaster_name and forecaster.name != self.forecaster_name:
            raise DetectorError(
                f"detector was calibrated on {self.forecaster_name!r} forecasts, got "
                f"{forecaster.name!r}; recalibrate it (fit) with this forecaster"
            )
        self.forecaster = forecaster
        self._check_forecaster()

    # --- streaming --------------------------------------------------------------------

    def reset(self) -> None:
        """Forget pending forecasts, the forecaster's window and what the stream calibrated."""
        self._ticks = 0
        self._forecasts.clear()
        self._window.clear()
        if self._fitted is not None:
            self.residuals, self.upper_range, self.lower_range = deepcopy(self._fitted)
            self._refresh_width()

    def observe_forecast(self, forecast: Forecast | np.ndarray) -> None:
        """Record the forecast issued right after the latest tick.

        ``forecast`` is a :class:`Forecast` (its ``mean`` ``[horizon, node]`` is used) or
        the mean array itself. It predicts the next ``horizon`` ticks.
        """
        mean = forecast.mean if isinstance(forecast, Forecast) else np.asarray(forecast)
        if mean.ndim != 2 or mean.shape[1] != self.n_nodes:
            raise DetectorError(
                f"forecast mean must be [horizon, {self.n_nodes}], got {mean.shape}"
            )
        if mean.shape[0] < self.config.horizon:
            raise DetectorError(
                f"forecast has {mean.shape[0]} steps, the detector needs {self.config.horizon}"
            )
        self._forecasts.append((self._ticks, np.asarray(mean[: self.config.horizon], float)))
        while len(self._forecasts) > self.config.horizon:
            self._forecasts.popleft()

    def _forecast_now(self, ts: pd.Timestamp, values: np.ndarray, mask: np.ndarray) -> None:
        forecaster = self._check_forecaster()
        need = max(forecaster.window, 1)
        self._window.append((ts, values, mask))
        while len(self._window) > need:
            self._window.popleft()
        if len(self._window) < need:
            return
        freq = self.freq or pd.Timedelta(minutes=5)
        # Windows sit on the detector's grid, ending at this tick (NAB rows are irregular;
        # a service's ticks are already on the grid).
        stamps = pd.date_range(end=pd.Timestamp(ts), periods=need, freq=freq)
        if stamps.tz is None:
            stamps = stamps.tz_localize("UTC")
        window = SensorPanel(
            values=np.stack([v for _, v, _ in self._window]).astype(np.float32),
            mask=np.stack([m for _, _, m in self._window]),
            timestamps=stamps,
            sensor_ids=self.sensor_ids,
        )
        self.observe_forecast(forecaster.predict(window))

    def update(self, ts: pd.Timestamp, values: np.ndarray, mask: np.ndarray) -> Detection:
        """Score the tick ``ts`` against the forecasts made for it, then forecast onwards."""
        if self.residuals is None or self.halfwidth is None:
            raise DetectorError("the interval detector is not fitted; call fit() or start()")
        assert self.upper_range is not None and self.lower_range is not None
        values, mask = self._judged(np.asarray(values), np.asarray(mask))
        x, mask = check_tick(values, mask, self.n_nodes)
        self._ticks += 1
        h_max, n = self.config.horizon, self.n_nodes
        preds = np.full((h_max, n), np.nan)  # [horizon, node]
        for issued, mean in self._forecasts:
            h = self._ticks - issued
            if 1 <= h <= h_max:
                preds[h - 1] = mean[h - 1]
        stats = np.abs(x[None, :] - preds)  # [horizon, node]
        p_h = self.residuals.pvalues(stats.reshape(-1)).reshape(h_max, n)
        available = np.isfinite(p_h)
        p = self._agree(p_h, available)
        p_range = None
        if self.config.range_check:
            p_range = np.minimum(
                1.0,
                2.0 * np.fmin(self.upper_range.pvalues(x), self.lower_range.pvalues(-x)),
            )
            p = np.maximum(p, p_range)  # NaN (range not calibrated yet) stays NaN
        score = np.where(np.isfinite(p), 1.0 - p, 0.0).astype(np.float32)
        first = np.argmax(available, axis=0)  # most recent forecast = smallest horizon
        nodes = np.arange(n)
        expected = np.where(available.any(axis=0), preds[first, nodes], np.nan)
        width = self.halfwidth[first, nodes]
        lower, upper = expected - width, expected + width
        reasons = self._reasons(score, x, expected, lower, upper, stats, available, p_range)
        if self.config.online:
            self.residuals.append(stats.reshape(-1))
            self.upper_range.append(x)
            self.lower_range.append(-x)
            self._since_width += 1
            if self._since_width >= 64:
                self._refresh_width()
        if self.self_forecast:
            self._forecast_now(ts, x, mask)
        with np.errstate(over="ignore"):  # bounds beyond float32's range become inf
            seen, middle, low, high = (b.astype(np.float32) for b in (x, expected, lower, upper))
        return Detection(self.name, pd.Timestamp(ts), score, seen, middle, low, high, reasons)

    def _judged(self, values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The judged feature of a ``[node, feature]`` tick (``[node]`` ticks as given)."""
        if values.ndim != 2 or values.shape[1] == 1:
            return values, mask
        f = self.config.feature
        if mask.shape != values.shape or not 0 <= f < values.shape[1]:
            raise DetectorError(
                f"tick values {values.shape} with mask {mask.shape}: need the same "
                f"[node, feature] shape holding feature {f}"
            )
        return values[:, f], mask[:, f]

    def _agree(self, p_h: np.ndarray, available: np.ndarray) -> np.ndarray:
        """Combine the per-horizon p-values ``[horizon, node]`` into one per node."""
        any_h = available.any(axis=0)
        p = np.full(p_h.shape[1], np.nan)
        if not any_h.any():
            return p
        cols = p_h[:, any_h]
        if self.config.agreement == "all":
            p[any_h] = np.nanmax(cols, axis=0)
        else:
            p[any_h] = np.minimum(1.0, 2.0 * np.nanmedian(cols, axis=0))
        return p

    def _reasons(
        self,
        score: np.ndarray,
        x: np.ndarray,
        expected: np.ndarray,
        lower: np.ndarray,
        upper: np.ndarray,
        stats: np.ndarray,
        available: np.ndarray,
        p_range: np.ndarray | None,
    ) -> tuple[str, ...]:
        if not (score >= REASON_MIN_SCORE).any():
            return ()
        assert self.halfwidth is not None
        outside = ((stats > self.halfwidth) & available).sum(axis=0).tolist()  # [node]
        made = available.sum(axis=0).tolist()  # [node]
        out = [""] * self.n_nodes
        for i in np.flatnonzero(score >= REASON_MIN_SCORE).tolist():
            side = "above" if x[i] > upper[i] else "below" if x[i] < lower[i] else "inside"
            value, low, high, middle = distinct_text([x[i], lower[i], upper[i], expected[i]])
            text = (
                f"{value} is {side} the {self.config.level:.0%} interval "
                f"[{low}, {high}] (expected {middle}); outside the "
                f"intervals of {outside[i]} of {made[i]} forecasts made for it"
            )
            if p_range is not None and np.isfinite(p_range[i]):
                text += f", and outside the sensor's normal range (p={p_range[i]:.2g})"
            out[i] = text
        return tuple(out)

    # --- persistence ------------------------------------------------------------------

    def save(self, directory: str | Path) -> None:
        """Fitted calibration pools (safetensors) and config (JSON); the forecaster is its
        own bundle."""
        if self._fitted is None:
            raise DetectorError("fit the interval detector before saving it")
        residuals, upper_range, lower_range = self._fitted
        tensors = {
            **residuals.state("residuals"),
            **upper_range.state("upper_range"),
            **lower_range.state("lower_range"),
        }
        save_detector_bundle(
            directory,
            self,
            window=0,
            horizon=self.config.horizon,
            settings=describe_config(self.config),
            tensors=tensors,
            forecaster=self.forecaster_name,
            freq=None if self.freq is None else str(self.freq),
            self_forecast=self.self_forecast,
        )

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        """A saved detector; :meth:`attach` its forecaster before scoring."""
        bundle = read_detector_bundle(directory, cls.name)
        config = IntervalConfig(**bundle.config["detector"])
        detector = cls(None, config, self_forecast=bool(bundle.config["self_forecast"]))
        detector.sensor_ids = tuple(bundle.config["sensor_ids"])
        detector.forecaster_name = str(bundle.config["forecaster"])
        freq = bundle.config.get("freq")
        detector.freq = None if freq is None else pd.Timedelta(freq)
        detector.residuals = ConformalPool.from_state(bundle.tensors, "residuals")
        detector.upper_range = ConformalPool.from_state(bundle.tensors, "upper_range")
        detector.lower_range = ConformalPool.from_state(bundle.tensors, "lower_range")
        detector._keep_fitted()
        detector._refresh_width()
        return detector
