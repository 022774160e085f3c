"""The rows the service writes to its store, and :class:`Batch`, one poll batch's worth.

Plain data: :class:`pipeline.service.processor.PollProcessor` fills a :class:`Batch` and
:meth:`pipeline.service.store.Store.write` stores it in one transaction; the store's reads
return the same row types. Times are integer milliseconds since the epoch (UTC).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pipeline.kafka.schema import AlertMessage

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ForecastRows:
    """One model's published forecasts at one tick.

    ``sensors`` int64 ``[m]`` store ids; ``yhat``/``lo``/``hi`` float32 ``[m, horizon]``,
    finite, step 1 first (``lo``/``hi`` None without intervals).
    """

    model: str
    issued_ms: int
    sensors: np.ndarray
    yhat: np.ndarray
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None

    @classmethod
    def from_arrays(
        cls,
        model: str,
        issued_ms: int,
        sensors: np.ndarray,
        mean: np.ndarray,
        lower: np.ndarray | None = None,
        upper: np.ndarray | None = None,
        *,
        columns: np.ndarray | None = None,
    ) -> ForecastRows:
        """Rows from ``[horizon, node]`` arrays for the sensors ``columns`` (default:
        those whose values are all finite, as the service publishes them)."""
        bounds = (lower, upper) if lower is not None and upper is not None else None
        if columns is None:
            keep = np.isfinite(mean).all(axis=0)  # [node]
            for bound in bounds or ():
                keep &= np.isfinite(bound).all(axis=0)
            columns = np.flatnonzero(keep)

        def rows(array: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(np.asarray(array, np.float32)[:, columns].T)

        sensors = np.asarray(sensors, dtype=np.int64)[columns]
        lo, hi = (rows(bounds[0]), rows(bounds[1])) if bounds else (None, None)
        return cls(model, int(issued_ms), sensors, rows(mean), lo, hi)


@dataclass(frozen=True)
class AccuracyRows:
    """Error sums per model, step and target tick (arrays of equal length)."""

    model: str
    steps: np.ndarray  # int64 [m], 1-based
    targets_ms: np.ndarray  # int64 [m]
    n: np.ndarray  # int64 [m]
    sum_abs: np.ndarray  # float64 [m]
    sum_sq: np.ndarray  # float64 [m]


@dataclass(frozen=True)
class ReadingRows:
    """Readings (or corrections) as arrays: store sensor ids, tick ms, values, arrival ms."""

    sensors: np.ndarray
    ts_ms: np.ndarray
    values: np.ndarray
    arrived_ms: np.ndarray

    def __len__(self) -> int:
        return len(self.sensors)


@dataclass(frozen=True)
class TickRow:
    """One closed tick: its time, how many sensors reported, why it closed, when it was
    stored and its latency (all times ms since the epoch; latency None when unknown)."""

    ts_ms: int
    observed: int
    reason: str
    closed_ms: int
    latency_ms: float | None


@dataclass(frozen=True)
class AlertRow:
    """One alert state change; ``payload`` is the encoded wire message (JSON text),
    ``group_key`` its incident (None when the detector pipeline groups nothing)."""

    alert_id: str
    status: str
    dedup_key: str
    severity: str
    sensor: str
    ts_ms: int
    detector: str
    score: float
    payload: str
    group_key: str | None = None

    @classmethod
    def of(cls, alert: AlertMessage, payload: bytes, group_key: str | None = None) -> AlertRow:
        """The row of ``alert``, encoded as ``payload``."""
        ts_ms = (alert.ts - _EPOCH) // timedelta(milliseconds=1)
        return cls(
            alert.alert_id, alert.status, alert.dedup_key, alert.severity, alert.sensor,
            ts_ms, alert.detector, alert.score, payload.decode(), group_key,
        )  # fmt: skip


@dataclass(frozen=True)
class VersionRow:
    """A model version the service forecasts with from tick ``since_ms`` on (hot reload:
    :mod:`pipeline.service.model_set`); ``loaded_ms`` is when it was swapped in."""

    model: str
    version: str
    label: str
    run_id: str
    since_ms: int
    loaded_ms: int


@dataclass
class Batch:
    """Everything one poll batch writes; :meth:`Store.write` stores it atomically."""

    readings: list[ReadingRows] = field(default_factory=list)
    corrections: list[ReadingRows] = field(default_factory=list)
    ticks: list[TickRow] = field(default_factory=list)
    forecasts: list[ForecastRows] = field(default_factory=list)
    accuracy: list[AccuracyRows] = field(default_factory=list)
    alerts: list[AlertRow] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    versions: list[VersionRow] = field(default_factory=list)

    def count(self, name: str, amount: int = 1) -> None:
        if amount:
            self.counters[name] = self.counters.get(name, 0) + int(amount)
