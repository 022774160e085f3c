"""The tick assembler's data types: its configuration, reading statuses and closed ticks.

The rules these types serve are described in :mod:`pipeline.service.assembler`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.panel import SensorPanel

# Status codes of one reading after :meth:`TickAssembler.add`.
NEW = 0
DUPLICATE = 1
CONFLICT = 2
LATE = 3
FUTURE = 4
STATUS_NAMES = ("new", "duplicate", "conflict", "late", "future")

# Why a tick closed.
COMPLETE = "complete"
WATERMARK = "watermark"
GRACE = "grace"

_ZERO = pd.Timedelta(0)
_ONE_HOUR = pd.Timedelta("1h")
_EPOCH = pd.Timestamp(0, tz="UTC")


@dataclass(frozen=True)
class AssemblerConfig:
    """How readings become ticks.

    Attributes
    ----------
    freq : the grid step (e.g. ``Timedelta('5min')``); a whole number of milliseconds.
    allowed_lateness : how far behind the network's event time a reading may arrive and
        still be part of its tick.
    window : rolling window length in ticks (the largest input window of the models).
    max_clock_skew : how far after the wall clock a timestamp may lie before the
        reading is rejected as ``future`` (positive); None disables the check.
    origin : the instant of tick 0.
    quorum : the network's event time is the newest time that more than this share of
        the up sensors has reached; a tick closes on grace only when more than this
        share of the up sensors has reported it. In [0, 1).
    grace_s : processing-time seconds after a tick's first reading after which it closes
        with the sensors it has (given the quorum and no backlog); None: never.
    down_after : closed ticks in a row without a reading after which a sensor is down
        and no longer holds ticks open; None: sensors are never marked down.
    """

    freq: pd.Timedelta
    allowed_lateness: pd.Timedelta = _ZERO
    window: int = 12
    max_clock_skew: pd.Timedelta | None = _ONE_HOUR
    origin: pd.Timestamp = _EPOCH
    quorum: float = 0.5
    grace_s: float | None = None
    down_after: int | None = None

    def __post_init__(self) -> None:
        freq = pd.Timedelta(self.freq)
        if pd.isna(freq) or freq <= _ZERO or freq.value % 1_000_000:
            raise ValueError(f"tick frequency must be a positive whole number of ms, got {freq}")
        lateness = pd.Timedelta(self.allowed_lateness)
        if pd.isna(lateness) or lateness < _ZERO:
            raise ValueError(f"allowed lateness must be >= 0, got {lateness}")
        if self.window < 1:
            raise ValueError(f"window must be at least 1 tick, got {self.window}")
        if not 0.0 <= self.quorum < 1.0:
            raise ValueError(f"quorum must be a share in [0, 1), got {self.quorum}")
        if self.grace_s is not None and not self.grace_s > 0:
            raise ValueError(f"grace must be a positive number of seconds, got {self.grace_s}")
        if self.down_after is not None and self.down_after < 1:
            raise ValueError(f"down_after must be at least 1 tick, got {self.down_after}")
        origin = pd.Timestamp(self.origin)
        origin = origin.tz_localize("UTC") if origin.tz is None else origin.tz_convert("UTC")
        object.__setattr__(self, "freq", freq)
        object.__setattr__(self, "allowed_lateness", lateness)
        object.__setattr__(self, "origin", origin)
        if self.max_clock_skew is not None:
            skew = pd.Timedelta(self.max_clock_skew)
            if pd.isna(skew) or skew <= _ZERO:
                raise ValueError(f"max clock skew must be positive (or off), got {skew}")
            object.__setattr__(self, "max_clock_skew", skew)

    def tick_of(self, ts_ns: np.ndarray) -> np.ndarray:
        """Tick index of each timestamp (ns since the epoch), floored onto the grid."""
        return (np.asarray(ts_ns, dtype=np.int64) - self.origin.value) // self.freq.value

    def tick_ns(self, tick: int | np.ndarray) -> np.ndarray:
        """The instant of tick(s) ``tick`` in ns since the epoch."""
        return self.origin.value + np.asarray(tick, dtype=np.int64) * self.freq.value

    def tick_time(self, tick: int) -> pd.Timestamp:
        """The instant of ``tick`` as a UTC timestamp."""
        return pd.Timestamp(int(self.tick_ns(tick)), tz="UTC")


@dataclass(frozen=True)
class AddResult:
    """What :meth:`TickAssembler.add` did with each reading (arrays in input order).

    ``status`` int8 ``[n]`` holds ``NEW``/``DUPLICATE``/``CONFLICT``/``LATE``/``FUTURE``;
    ``ticks`` int64 ``[n]`` the tick of each reading; ``values`` the float32 value kept.
    """

    status: np.ndarray
    ticks: np.ndarray
    values: np.ndarray

    def count(self, code: int) -> int:
        return int(np.count_nonzero(self.status == code))

    def counts(self) -> dict[str, int]:
        """``{status name: how many}`` for the counters."""
        codes = np.bincount(self.status.astype(np.int64), minlength=len(STATUS_NAMES))
        return {name: int(codes[i]) for i, name in enumerate(STATUS_NAMES)}


@dataclass(frozen=True)
class ClosedTick:
    """One tick that has just become final."""

    tick: int
    ts: pd.Timestamp
    position: int  # its row in the run's panel
    values: np.ndarray  # [node] float32, NaN where missing
    mask: np.ndarray  # [node] bool
    reason: str  # COMPLETE, WATERMARK or GRACE
    last_record_ms: int  # newest Kafka record timestamp of its readings (-1: unknown)

    @property
    def observed(self) -> int:
        return int(self.mask.sum())


@dataclass(frozen=True)
class ClosedRun:
    """Consecutive closed ticks with the window before them, ready for ``predict_batch``.

    ``panel`` covers the ``window - 1`` ticks before the first closed tick through
    the last one; ``ticks[i].position`` is the origin index of tick ``i``. Rows before
    the service's first tick are missing values.
    """

    panel: SensorPanel
    ticks: tuple[ClosedTick, ...]

    @property
    def origins(self) -> np.ndarray:
        return np.array([t.position for t in self.ticks], dtype=np.int64)
