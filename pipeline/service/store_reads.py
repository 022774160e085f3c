"""The service's store read back as panels and backtests, for scheduled forecasts and reports.

Only the public :class:`pipeline.service.store.Store` API is used (``last_ticks``,
``readings_since``, ``recent_forecasts``, ``alerts``, ...), so these reads work on a
store the service is writing (WAL: readers never block it).

* :func:`latest_window` -- the newest ``window`` closed ticks as a ``[window, node]``
  panel: what the forecast flow predicts from.
* :func:`period_panel` -- every closed tick of a period (corrections applied).
* :func:`stored_backtest` -- one model's stored forecasts scored against the stored
  actuals, as a :class:`models.forecasters.evaluation.Backtest`, so that live accuracy goes through
  the same metrics, tables and plots as a training backtest. A forecast is scored when
  all its ``horizon`` targets are closed ticks inside the period (the backtest
  protocol); a target the service never received is missing, and a sensor the model
  stored no forecast for is not scored either.
* :func:`alerts_between` -- the alert state changes of a period.
* :func:`reading_store` -- a store opened read-only after :func:`check_store` found it
  a roadcast store of this schema; SQLite errors while reading it name the file.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from models.forecasters.base import BatchForecast
from models.forecasters.evaluation import Backtest
from models.metrics import report_horizons, score_batch
from models.panel import SensorPanel
from pipeline.service.config import to_timedelta, unitless
from pipeline.service.store import READABLE_SCHEMAS, Store, StoreError, no_store_message

CHECK_TIMEOUT_S = 5.0  # how long a reader waits for a writer's exclusive lock
BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})  # primary result codes


class StoreBusyError(StoreError):
    """A writer held the store longer than a reader waits; it may pass (flows retry it)."""


def _raise_if_busy(path: str | Path, exc: sqlite3.Error) -> None:
    """Raise :class:`StoreBusyError` when ``exc`` says a writer holds the file."""
    if getattr(exc, "sqlite_errorcode", 0) & 0xFF in BUSY_CODES:
        raise StoreBusyError(
            f"the store {path} is locked by a writer ({exc}); try again in a moment"
        ) from None


class StoreReadError(ValueError):
    """The store does not (yet) hold what was asked for; the message says why."""


def check_store(path: str | Path) -> None:
    """Refuse a file that is not a roadcast store of this schema version, without
    writing to it.

    Raises
    ------
    StoreError
        Naming the file: missing, not readable by this user, not SQLite, another
        program's database, another schema version, or locked by a writer for longer
        than ``CHECK_TIMEOUT_S``.
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise StoreError(f"{path} is a folder, not a store; pass the store file (--store)")
        if not path.is_file():
            raise StoreError(no_store_message(path))
        path.open("rb").close()  # SQLite says "unable to open" alike for every cause
    except PermissionError:
        raise StoreError(
            f"cannot read the store {path}: permission denied (on the file or a folder above "
            "it); run roadcast as a user who may read it"
        ) from None
    try:
        db = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=CHECK_TIMEOUT_S
        )
        try:
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        _raise_if_busy(path, exc)
        cannot = "unable to open" in str(exc) or "readonly" in str(exc)
        if cannot and not os.access(path.parent, os.W_OK):
            raise StoreError(
                f"cannot open the store {path}: its folder is not writable, and SQLite needs "
                "to create the store's -shm file there even to read it; copy the store "
                "(with its -wal file) to a writable folder"
            ) from None
        if "malformed" in str(exc):
            raise StoreError(
                f"the store {path} is damaged ({exc}): restore it from a backup, or move it "
                "aside and `roadcast serve` starts a new one"
            ) from None
        raise StoreError(
            f"{path} is not a roadcast store ({exc}); pass the store `roadcast serve` writes "
            "(--store or ROADCAST_STORE_PATH)"
        ) from None
    if row is not None and row[0] not in READABLE_SCHEMAS:
        raise StoreError(
            f"{path} has store schema {row[0]!r}, this roadcast reads "
            f"{' and '.join(READABLE_SCHEMAS)}; read it with the roadcast version that wrote it"
        )


@contextmanager
def reading_store(path: str | Path) -> Iterator[Store]:
    """The store at ``path`` opened read-only after :func:`check_store`; an SQLite error
    or a value of the wrong type while reading it becomes a :class:`StoreError` naming the
    file (:class:`StoreBusyError` for a file a writer holds)."""
    check_store(path)
    try:
        with Store(path, readonly=True) as store:
            yield store
    except sqlite3.Error as exc:
        _raise_if_busy(path, exc)
        raise StoreError(f"cannot read the store {path} ({exc}); is it a roadcast store?") from None
    except StoreReadError:
        raise
    except (ValueError, TypeError) as exc:  # a value of the wrong type in a table
        raise StoreError(f"the store {path} holds a value roadcast cannot read ({exc})") from None


def tick_ms(store: Store) -> int:
    """The store's tick grid step in milliseconds (written by the service)."""
    value = store.state().get("tick_ms")
    if value is None:
        raise _no_ticks(store)
    return int(value)


def _no_ticks(store: Store) -> StoreReadError:
    return StoreReadError(
        f"the store {store.path} has no closed tick yet; start `roadcast serve` (with "
        "readings flowing into its topic) before forecasting or reporting from it"
    )


def last_closed_ms(store: Store) -> int:
    """Timestamp (ms since the epoch) of the newest closed tick."""
    ticks = store.last_ticks(1)
    if not ticks:
        raise _no_ticks(store)
    return int(ticks[-1].ts_ms)


def _timestamps(first_ms: int, count: int, step_ms: int) -> pd.DatetimeIndex:
    return pd.date_range(
        pd.Timestamp(first_ms, unit="ms", tz="UTC"), periods=count, freq=pd.Timedelta(step_ms, "ms")
    )


def period_panel(
    store: Store,
    first_ms: int,
    last_ms: int,
    sensor_ids: Sequence[str],
    *,
    name: str = "store",
) -> SensorPanel:
    """Readings of ``sensor_ids`` at every tick from ``first_ms`` to ``last_ms`` (inclusive).

    ``first_ms`` and ``last_ms`` must lie on the store's tick grid. Ticks or sensors
    without a reading are missing (NaN, mask False); corrections replace the values the
    ticks closed with; sensors unknown to the store are entirely missing.
    """
    step = tick_ms(store)
    if (last_ms - first_ms) % step:
        raise ValueError(f"{first_ms} .. {last_ms} is not a whole number of {step} ms ticks")
    count = (last_ms - first_ms) // step + 1
    if count < 1:
        raise ValueError(f"empty period: {first_ms} .. {last_ms}")
    values = np.full((count, len(sensor_ids)), np.nan, np.float32)  # [time, node]
    rows = store.readings_since(first_ms)
    column = {name: i for i, name in enumerate(sensor_ids)}
    col_of_id = {sid: column.get(name, -1) for sid, name in store.sensor_names().items()}
    cols = np.array([col_of_id.get(int(s), -1) for s in rows.sensors], dtype=np.int64)
    offset = rows.ts_ms - first_ms
    keep = (cols >= 0) & (rows.ts_ms <= last_ms) & (offset % step == 0)
    values[(offset[keep] // step), cols[keep]] = rows.values[keep]
    return SensorPanel.from_values(
        values, _timestamps(first_ms, count, step), list(sensor_ids), name=name
    )


def require_sensors(store: Store, sensor_ids: Sequence[str], models: str) -> None:
    """Refuse models of another network than the store's (the service registers every
    sensor of its models in the store when it starts).

    Raises
    ------
    StoreReadError
        Naming how many sensors of the models in ``models`` the store lacks.
    """
    known = set(store.sensor_names().values())
    missing = [s for s in sensor_ids if s not in known]
    if missing and not known:
        raise StoreReadError(
            f"the store {store.path} holds no sensor yet: no service has run on it; start "
            "`roadcast serve` with this store, or pass the store it writes"
        )
    if missing:
        raise StoreReadError(
            f"the store {store.path} has no sensor {missing[0]!r} ({len(missing)} of the "
            f"{len(sensor_ids)} sensors of the models in {models} missing): the models "
            "forecast another network than the store's; pass that network's model "
            "directory (models_dir / ROADCAST_MODEL_DIR) or store"
        )


def latest_window(store: Store, sensor_ids: Sequence[str], window: int) -> SensorPanel:
    """The newest ``window`` closed ticks of ``sensor_ids``: ``[window, node]``."""
    if window < 1:
        raise ValueError(f"window must be >= 1 step, got {window}")
    last = last_closed_ms(store)
    first = last - (window - 1) * tick_ms(store)
    return period_panel(store, first, last, sensor_ids, name="latest window")


@dataclass(frozen=True)
class Period:
    """The ticks ``[first_ms, last_ms]`` a report covers (both on the tick grid)."""

    first_ms: int
    last_ms: int
    step_ms: int

    @property
    def ticks(self) -> int:
        return (self.last_ms - self.first_ms) // self.step_ms + 1

    def bounds(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        return (
            pd.Timestamp(self.first_ms, unit="ms", tz="UTC"),
            pd.Timestamp(self.last_ms, unit="ms", tz="UTC"),
        )


def parse_since(text: str) -> pd.Timedelta | pd.Timestamp:
    """``"24h"``, ``"7d"``, ``"90min"`` -> a positive duration; an ISO time -> a timestamp.

    Raises
    ------
    ValueError
        When ``text`` is neither (blank and ``nan`` included), a duration is not positive
        or a time is outside what pandas holds; the message shows both forms.
    """
    duration, moment = "a duration ('24h', '7d')", "a time ('2024-03-05T00:00Z')"
    if unitless(text):
        raise ValueError(f"since={text!r} has no unit: write {text.strip()}h or {text.strip()}d")
    value: pd.Timedelta | pd.Timestamp | None = None
    try:
        value = to_timedelta(text)
    except (OverflowError, pd.errors.OutOfBoundsTimedelta):
        raise ValueError(
            f"since={text!r} is longer than a duration can be (about 292 years)"
        ) from None
    except ValueError:
        with suppress(ValueError, OverflowError):
            value = pd.Timestamp(text.strip())
    if value is None or pd.isna(value):
        raise ValueError(f"since={text!r} is neither {duration} nor {moment}")
    if isinstance(value, pd.Timedelta) and value <= pd.Timedelta(0):
        raise ValueError(f"since={text!r}: the duration must be positive")
    if isinstance(value, pd.Timedelta) and value < pd.Timedelta(milliseconds=1):
        raise ValueError(f"since={text!r}: the duration must be at least 1 ms (the store's unit)")
    if isinstance(value, pd.Timestamp):
        try:
            value = value.as_unit("ns")
        except (OverflowError, ValueError):
            raise ValueError(
                f"since={text!r} is outside the years {pd.Timestamp.min.year + 1}-"
                f"{pd.Timestamp.max.year - 1}; pass {duration} or {moment}"
            ) from None
    return value


def period_since(store: Store, since: pd.Timestamp | pd.Timedelta | str) -> Period:
    """The closed ticks from ``since`` to the newest closed tick.

    ``since`` is a duration back from the newest closed tick (``"24h"``: the last 288
    five-minute ticks) or a time (the ticks at or after it). The period never starts
    before the oldest closed tick in the store.

    Raises
    ------
    StoreReadError
        When the store has no closed tick, or none at or after ``since``.
    """
    last = last_closed_ms(store)
    step = tick_ms(store)
    if isinstance(since, str):
        since = parse_since(since)
    if isinstance(since, pd.Timedelta):
        span_ms = int(since.total_seconds() * 1000)
        if span_ms <= 0:
            raise ValueError(f"since must be a positive duration, got {since}")
        count = -(-span_ms // step)  # ticks in (last - span, last]
    else:
        stamp = since if since.tz is not None else since.tz_localize("UTC")
        start_ms = int(stamp.value // 1_000_000)
        if start_ms > last:
            raise StoreReadError(
                f"no closed tick at or after {stamp.isoformat()}; the newest is "
                f"{pd.Timestamp(last, unit='ms', tz='UTC').isoformat()}"
            )
        count = (last - start_ms) // step + 1
    stored = store.last_ticks(count)
    first = max(last - (count - 1) * step, int(stored[0].ts_ms))
    return Period(first_ms=first, last_ms=last, step_ms=step)


def stored_backtest(
    store: Store,
    model: str,
    sensor_ids: Sequence[str],
    period: Period,
    horizon: int,
    *,
    horizons: Sequence[int] | None = None,
    actuals: SensorPanel | None = None,
) -> tuple[SensorPanel, Backtest]:
    """``model``'s stored forecasts whose targets lie in ``period``, scored.

    Returns the actuals panel (one row per tick of the period, plus the tick before it,
    where the first scored forecasts were issued) and a :class:`Backtest` whose
    ``forecast.origins`` index into that panel. Pass ``actuals`` (from an earlier call
    with the same period and sensors) to skip re-reading them.
    """
    step = period.step_ms
    first_ms = period.first_ms - step  # a forecast issued here targets the first tick
    if actuals is None:
        actuals = period_panel(store, first_ms, period.last_ms, sensor_ids, name="live")
    ids_of = {name: sid for sid, name in store.sensor_names().items()}
    store_ids = np.array([ids_of.get(s, -1) for s in sensor_ids], dtype=np.int64)
    issued, mean, lower, upper = store.recent_forecasts(model, first_ms, store_ids, horizon)
    last_origin_ms = period.last_ms - horizon * step
    keep = (issued <= last_origin_ms) & ((issued - first_ms) % step == 0)
    origins = ((issued[keep] - first_ms) // step).astype(np.int64)  # [n]
    mean = mean[keep]
    lower = None if lower is None else lower[keep]
    upper = None if upper is None else upper[keep]
    targets = origins[:, None] + np.arange(1, horizon + 1)[None, :]  # [n, horizon]
    actual = actuals.values[targets] if len(origins) else np.empty((0, horizon, len(sensor_ids)))
    # A sensor without a stored forecast is not scored (it is counted, not guessed).
    actual = np.where(np.isfinite(mean), actual, np.nan).astype(np.float32)  # [n, h, node]
    chosen = tuple(horizons) if horizons is not None else report_horizons(horizon)
    metrics = score_batch(actual, np.nan_to_num(mean, nan=0.0), chosen)
    forecast = BatchForecast(model, origins, mean, lower, upper)
    backtest = Backtest(
        metrics=metrics,
        forecast=forecast,
        actual=actual,
        timestamps=actuals.timestamps,
        predict_ms_per_window=float("nan"),
        predict_ms_single=float("nan"),
    )
    return actuals, backtest


@dataclass(frozen=True)
class AlertChange:
    """One alert state change read from the store (``payload`` decoded)."""

    alert_id: str
    status: str
    severity: str
    sensor: str
    ts: pd.Timestamp
    detector: str
    score: float
    observed: float | None
    expected: float | None


def alerts_between(store: Store, period: Period, *, limit: int = 100_000) -> list[AlertChange]:
    """Alert state changes stamped inside ``period``, oldest first."""
    first, last = period.first_ms, period.last_ms
    out = []
    for row in store.alerts(limit=limit):
        if not first <= row.ts_ms <= last:
            continue
        try:
            payload = json.loads(row.payload)
        except ValueError:
            payload = {}
        out.append(
            AlertChange(
                alert_id=row.alert_id,
                status=row.status,
                severity=row.severity,
                sensor=row.sensor,
                ts=pd.Timestamp(row.ts_ms, unit="ms", tz="UTC"),
                detector=row.detector,
                score=float(row.score),
                observed=payload.get("observed"),
                expected=payload.get("expected"),
            )
        )
    out.sort(key=lambda a: (a.ts, a.alert_id, a.status))
    return out
