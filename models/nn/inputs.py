"""What a neural forecaster's network reads: scaled readings, calendar features, a mask.

A network takes ``x`` float32 ``[batch, window, node, feature]``; the features are, in this
order (see :attr:`InputSpec.names`):

``value``
    the reading scaled per sensor (:class:`Scaler`). A missing reading is filled with the
    last observed value of the same sensor *inside the window*; when the window holds no
    observation of that sensor it is 0, the sensor's training mean. Filling is
    window-local so that a forecast depends only on its ``window`` input steps (the same
    numbers in a backtest over a long panel and in the streaming service).
``tod_sin``, ``tod_cos`` (``time_of_day``)
    the time of day of the step (UTC clock of the panel) on the unit circle, so that
    23:55 and 00:00 are neighbours.
``weekend`` (``day_of_week``)
    1.0 on the network's rest days (``rest_days``: Saturday and Sunday, or the days its
    training part shows, such as Friday and Saturday): of the step itself, or of the step
    ``weekend_shift`` steps later. Traffic differs mainly between working days and
    weekends; a cyclic weekday code would ask a week-long data set (los-loop) to
    extrapolate to weekdays it never saw in training. The forecasters read the flag of
    the window's last *target* (``weekend_shift`` = the horizon): from a Sunday evening
    the network cannot otherwise tell that twelve hours ahead is a Monday peak. They read
    it by default once their training part holds :data:`MIN_WEEKENDS` weekends and some
    days of the week differ in it (:func:`weekend_inputs`, :func:`rest_days`).
``mask`` (``mask``)
    1.0 where the reading was observed, 0.0 where it was filled.

Time features are the same for every node (they are broadcast over the node axis);
a network-wide model may read them from node 0. Batches are gathered from
:class:`PanelTensors`, the panel held as ``[time, node]`` tensors.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from models.panel import SensorPanel

# Weekends the training part must hold before the forecasters read the weekend flag by
# default: with one, the flag marks a single stretch the network can only memorise.
MIN_WEEKENDS = 2
# Significance of the weekend difference that turns the flag on (a conventional level,
# not fitted to any data set).
WEEKEND_P = 0.01
# The usual weekend, tested first; then the other rest days a network may keep: one day
# of the week, or two in a row (Friday-Saturday, Thursday-Friday, Sunday alone, ...).
SATURDAY_SUNDAY: tuple[int, ...] = (5, 6)
OTHER_REST_DAYS = tuple(
    days
    for days in [*((d,) for d in range(7)), *((d, (d + 1) % 7) for d in range(7))]
    if days != SATURDAY_SUNDAY
)
# A sensor whose standard deviation is below this share of its mean level is constant.
CONSTANT_SHARE = 1e-6
MIN_STD = 1e-30  # float32 keeps about 1e-38 apart from zero; leave headroom


@dataclass(frozen=True, eq=False)
class Scaler:
    """Per-sensor standardisation fitted on observed training values only.

    ``mean`` and ``std`` are float32 ``[node]``. A sensor with no observation gets mean 0
    and std 1; a constant sensor gets std 1 (so its scaled value is 0, not a division
    by zero).
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, panel: SensorPanel) -> Scaler:
        """Masked per-sensor mean and standard deviation of ``panel`` (the training part)."""
        if panel.values.ndim != 2:
            raise ValueError(
                f"the neural models take [time, node] panels, got {panel.values.shape}; "
                "select one feature first"
            )
        values = np.where(panel.mask, panel.values, 0.0).astype(np.float64)
        count = panel.mask.sum(axis=0)  # [node]
        mean = values.sum(axis=0) / np.maximum(count, 1)
        var = (np.where(panel.mask, panel.values - mean, 0.0) ** 2).sum(axis=0) / np.maximum(
            count, 1
        )
        std = np.sqrt(var)
        # Relative to the level, so a network in any unit scales alike; below it a sensor
        # only jitters in float32's last digits and counts as constant.
        usable = (std > CONSTANT_SHARE * np.abs(mean)) & (std > MIN_STD)
        std = np.where((count > 1) & usable, std, 1.0)
        mean = np.where(count > 0, mean, 0.0)
        return cls(mean=mean.astype(np.float32), std=std.astype(np.float32))

    def transform(self, values: np.ndarray) -> np.ndarray:
        """Scale ``values`` ``[..., node]`` (NaN stays NaN)."""
        return ((values - self.mean) / self.std).astype(np.float32)

    def inverse(self, scaled: np.ndarray) -> np.ndarray:
        """Back to the original scale: ``scaled * std + mean`` for ``[..., node]``."""
        return (scaled * self.std + self.mean).astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-ready form for ``config.json`` (float32 values round-trip exactly)."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scaler:
        """Inverse of :meth:`to_dict`."""
        mean = np.asarray(data["mean"], dtype=np.float32)
        std = np.asarray(data["std"], dtype=np.float32)
        if mean.shape != std.shape or mean.ndim != 1:
            raise ValueError(f"scaler mean {mean.shape} and std {std.shape} must be [node]")
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
            raise ValueError("scaler mean must be finite and std finite and above 0")
        return cls(mean=mean, std=std)


@dataclass(frozen=True)
class InputSpec:
    """Which input features the module sees (feature 0 is always the scaled value)."""

    time_of_day: bool = True
    day_of_week: bool = True
    mask: bool = True
    weekend_shift: int = 0  # the weekend flag is that of the step this many steps later
    rest_days: tuple[int, ...] = SATURDAY_SUNDAY  # the days the flag marks (Monday: 0)

    @property
    def names(self) -> tuple[str, ...]:
        """Feature names in order along the last axis of the input."""
        names = ["value"]
        if self.time_of_day:
            names += ["tod_sin", "tod_cos"]
        if self.day_of_week:
            names.append("weekend")
        if self.mask:
            names.append("mask")
        return tuple(names)

    @property
    def n_features(self) -> int:
        return len(self.names)

    @property
    def time_names(self) -> tuple[str, ...]:
        """The features that are the same for every node (the calendar ones)."""
        return tuple(n for n in self.names if n in ("tod_sin", "tod_cos", "weekend"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        flags = {k: bool(v) for k, v in data.items() if k not in ("weekend_shift", "rest_days")}
        days = tuple(int(d) for d in data.get("rest_days") or SATURDAY_SUNDAY)
        return cls(**flags, weekend_shift=int(data.get("weekend_shift", 0)), rest_days=days)


def weekends(timestamps: pd.DatetimeIndex) -> int:
    """How many weekends (Saturday-Sunday pairs, or a part of one) ``timestamps`` touch."""
    days = timestamps[timestamps.day_of_week >= 5].normalize()
    return len(set((days - pd.to_timedelta(days.day_of_week - 5, unit="D")).asi8))


def rest_days(panel: SensorPanel) -> tuple[int, ...] | None:
    """The days of the week that differ from the others in ``panel`` (a training part),
    Monday 0: Saturday and Sunday when they do; else the one day, or two days in a row,
    that differ most, when they do; None when no day differs.

    The network's mean standardised reading per day and hour of the day, the candidate
    days against the others: a Welch t-test per hour, significant at :data:`WEEKEND_P`,
    Bonferroni over the hours (and over the :data:`OTHER_REST_DAYS` tried after Saturday
    and Sunday). A flag on data without such a difference is a feature the network can
    only overfit.
    """
    table = _day_hour_levels(panel)
    if _differ(table, SATURDAY_SUNDAY):
        return SATURDAY_SUNDAY
    hours = len(table.columns)
    tried = [(_smallest_p(table, days), days) for days in OTHER_REST_DAYS]
    p, days = min(tried)
    return days if p < WEEKEND_P / (hours * len(OTHER_REST_DAYS)) else None


def _day_hour_levels(panel: SensorPanel) -> pd.DataFrame:
    """The network's mean standardised reading per day (rows) and hour of the day."""
    observed = np.where(panel.mask, panel.values, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # sensors or steps with no reading
        z = (observed - np.nanmean(observed, axis=0)) / np.nanstd(observed, axis=0)
        level = np.nanmean(np.where(np.isfinite(z), z, np.nan), axis=1)  # [time]
    stamps = panel.timestamps
    return (
        pd.DataFrame({"day": stamps.normalize(), "hour": stamps.hour, "level": level})
        .groupby(["day", "hour"])["level"]
        .mean()
        .unstack()
    )  # [day, hour]


def _smallest_p(table: pd.DataFrame, days: tuple[int, ...]) -> float:
    """The smallest p-value over the hours of a Welch t-test, ``days`` against the
    others (1 when either side has fewer than two days)."""
    from scipy.stats import ttest_ind

    chosen = np.isin(table.index.day_of_week, days)
    if chosen.sum() < 2 or (~chosen).sum() < 2:
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an hour too thin to test
        p = ttest_ind(
            table[chosen].to_numpy(), table[~chosen].to_numpy(), equal_var=False,
            nan_policy="omit",
        ).pvalue  # fmt: skip
    p = np.asarray(p, dtype=float)
    return float(np.nanmin(p)) if np.isfinite(p).any() else 1.0


def weekend_inputs(
    day_of_week: bool | None,
    weekend_shift: int | None,
    training: SensorPanel,
    horizon: int,
    days: Sequence[int] | None = None,
) -> tuple[bool, int, tuple[int, ...]]:
    """Whether a forecaster reads the weekend flag, of which step ahead, and which days
    of the week it marks.

    ``day_of_week`` None: when ``training`` (the training part) holds at least
    :data:`MIN_WEEKENDS` weekends and the days differ in it: ``days`` when given, else
    those :func:`rest_days` finds. ``weekend_shift`` None: ``horizon`` (the flag of the last
    target); always 0 when the flag is not read. The days: ``days`` when given, else those
    that differ, Saturday and Sunday when none does.
    """
    given = None if days is None else tuple(int(d) for d in days)
    enough = weekends(training.timestamps) >= MIN_WEEKENDS
    found = rest_days(training) if given is None and day_of_week is not False and enough else None
    chosen = given if given is not None else found or SATURDAY_SUNDAY
    if day_of_week is not None:
        on = bool(day_of_week)
    else:
        on = enough and (
            found is not None if given is None else _differ(_day_hour_levels(training), given)
        )
    if not on:
        return False, 0, chosen
    return True, (horizon if weekend_shift is None else int(weekend_shift)), chosen


def _differ(table: pd.DataFrame, days: tuple[int, ...]) -> bool:
    """Whether ``days`` differ from the other days in ``table`` (:func:`_day_hour_levels`),
    by :func:`rest_days`' test."""
    return _smallest_p(table, days) < WEEKEND_P / len(table.columns)


def time_features(timestamps: pd.DatetimeIndex, spec: InputSpec) -> np.ndarray:
    """Calendar features of each step: float32 ``[time, len(spec.time_names)]``."""
    cols: list[np.ndarray] = []
    if spec.time_of_day:
        seconds = (
            timestamps.hour.to_numpy() * 3600
            + timestamps.minute.to_numpy() * 60
            + timestamps.second.to_numpy()
        )
        phase = 2.0 * np.pi * seconds / 86400.0
        cols += [np.sin(phase), np.cos(phase)]
    if spec.day_of_week:
        days = timestamps
        if spec.weekend_shift:
            if timestamps.freq is None:
                raise ValueError("the weekend flag ahead needs timestamps with a freq")
            days = timestamps.shift(spec.weekend_shift)
        cols.append(np.isin(days.day_of_week.to_numpy(), spec.rest_days).astype(np.float64))
    if not cols:
        return np.zeros((len(timestamps), 0), dtype=np.float32)  # [time, 0]
    return np.stack(cols, axis=1).astype(np.float32)  # [time, time_feature]


@dataclass(frozen=True, eq=False)
class PanelTensors:
    """A panel as the tensors batches are gathered from.

    ``values`` float32 ``[time, node]`` scaled, 0 where missing; ``mask`` bool
    ``[time, node]``; ``calendar`` float32 ``[time, time_feature]``.
    """

    values: Tensor
    mask: Tensor
    calendar: Tensor
    complete: bool = False  # no missing reading at all: the fill can be skipped

    @classmethod
    def build(cls, panel: SensorPanel, scaler: Scaler, spec: InputSpec) -> PanelTensors:
        """``panel`` scaled by ``scaler``, with the calendar features ``spec`` asks for."""
        if panel.values.ndim != 2:
            raise ValueError(
                f"the neural models take [time, node] panels, got {panel.values.shape}; "
                "select one feature first"
            )
        if scaler.mean.shape[0] != panel.n_nodes:
            raise ValueError(
                f"scaler has {scaler.mean.shape[0]} sensors, panel has {panel.n_nodes}; "
                "use the panel the model was trained on (panel.select(model.sensor_ids))"
            )
        scaled = np.where(panel.mask, scaler.transform(panel.values), 0.0)  # [time, node]
        return cls(
            values=torch.from_numpy(np.ascontiguousarray(scaled, dtype=np.float32)),
            mask=torch.from_numpy(np.array(panel.mask, dtype=bool)),  # writable copy
            calendar=torch.from_numpy(time_features(panel.timestamps, spec)),
            complete=bool(panel.mask.all()),
        )

    @property
    def nbytes(self) -> int:
        """Memory taken by the tensors."""
        return sum(t.element_size() * t.numel() for t in (self.values, self.mask, self.calendar))

    def to(self, device: torch.device) -> PanelTensors:
        """The same tensors on ``device``."""
        return PanelTensors(
            self.values.to(device), self.mask.to(device), self.calendar.to(device), self.complete
        )

    def pin(self) -> PanelTensors:
        """The same tensors in pinned host memory (asynchronous copies to a GPU)."""
        return PanelTensors(
            self.values.pin_memory(),
            self.mask.pin_memory(),
            self.calendar.pin_memory(),
            self.complete,
        )

    def _rows(self, table: Tensor, steps: Tensor, nodes: Tensor | None = None) -> Tensor:
        """``table[steps]`` for int64 ``steps`` ``[batch, k]``: ``[batch, k, ...]``
        (``index_select`` on the flat index is several times faster than fancy indexing);
        with ``nodes``, only those columns of a ``[time, node]`` table, gathered directly
        (the cost grows with the nodes asked for, not with the table's width)."""
        if nodes is not None:
            return table[steps.unsqueeze(-1), nodes]  # [batch, k, len(nodes)]
        return table.index_select(0, steps.reshape(-1)).view(*steps.shape, *table.shape[1:])

    def inputs(
        self, origins: Tensor, window: int, spec: InputSpec, nodes: Tensor | None = None
    ) -> Tensor:
        """Input windows ending at ``origins`` (int64 ``[batch]``), of the sensors ``nodes``
        (int64, default all).

        Returns float32 ``[batch, window, node, feature]``.
        """
        offsets = torch.arange(-window + 1, 1, device=origins.device)
        steps = origins[:, None] + offsets  # [batch, window]
        vals = self._rows(self.values, steps, nodes)  # [batch, window, node]
        seen = self._rows(self.mask, steps, nodes)  # [batch, window, node]
        if self.complete:
            filled = vals
        else:
            # Window-local forward fill: index of the last observed step so far, -1 if none.
            pos = torch.arange(window, device=origins.device).view(1, window, 1)
            last = torch.where(seen, pos, torch.full_like(pos, -1)).cummax(dim=1).values
            filled = torch.gather(vals, 1, last.clamp(min=0))  # [batch, window, node]
            filled = torch.where(last >= 0, filled, torch.zeros_like(filled))
        parts = [filled.unsqueeze(-1)]
        if self.calendar.shape[1]:
            cal = self._rows(self.calendar, steps)  # [batch, window, time_feature]
            parts.append(cal.unsqueeze(2).expand(-1, -1, vals.shape[2], -1))
        if spec.mask:
            parts.append(seen.unsqueeze(-1).to(filled.dtype))
        return torch.cat(parts, dim=-1)  # [batch, window, node, feature]

    def targets(
        self, origins: Tensor, horizon: int, nodes: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Scaled targets after ``origins`` and their mask, both ``[batch, horizon, node]``
        (of the sensors ``nodes``, default all)."""
        steps = origins[:, None] + torch.arange(1, horizon + 1, device=origins.device)
        return self._rows(self.values, steps, nodes), self._rows(self.mask, steps, nodes)


def checked_origins(origins: np.ndarray, window: int, n_time: int) -> np.ndarray:
    """``origins`` as int64 ``[n]``, or a ValueError when a window would leave ``n_time``."""
    origins = np.asarray(origins, dtype=np.int64)
    if origins.ndim != 1:
        raise ValueError(f"origins must be a 1-D array of step indices, got {origins.shape}")
    if len(origins) and (origins.min() < window - 1 or origins.max() >= n_time):
        raise ValueError(
            f"origins must lie in [{window - 1}, {n_time - 1}] so that a {window}-step input "
            f"window fits the panel; got [{origins.min()}, {origins.max()}]"
        )
    return origins
