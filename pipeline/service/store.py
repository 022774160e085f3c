"""The service's embedded store (SQLite): readings, forecasts, alerts, ticks, counters.

One file, opened in WAL mode so that ``roadcast status``, reports and the demo's live
view read while the service writes. Everything one poll batch produces (readings,
corrections, closed ticks, forecasts, accuracy, counters, consumed offsets) is
written by :meth:`Store.write` in **one transaction**: after a crash the store holds
either all of a batch or none of it.

Layout (times are integer milliseconds since the epoch, UTC; sensors and models are
small integer ids from the ``sensors`` and ``models`` tables; the ``*_v`` views show
names and ISO times for people and reports):

``readings(ts, sensor, value, arrived_ms)``
    The value each sensor had for each tick when the tick closed (or, for open ticks,
    the latest value so far). Upsert keyed by (sensor, ts): a redelivered reading
    rewrites the same row.
``corrections(ts, sensor, value, arrived_ms)``
    Readings that arrived after their tick closed (late). Not re-forecast; scoring
    uses the correction over the reading (:meth:`Store.score`).
``ticks(ts, observed, reason, closed_ms, latency_ms)``
    Every closed tick: how many sensors reported, why it closed, and the latency from
    its last reading's Kafka record timestamp to its forecasts being published.
``forecasts(model, issued_at, sensor, yhat, lo, hi)``
    One row per published forecast message, keyed by model, origin and sensor (an
    upsert, so a forecast re-issued after a redelivery overwrites itself); ``yhat``,
    ``lo`` and ``hi`` are the JSON arrays of the message, step 1 first. One row per
    message rather than per target step is 12x fewer rows on the service's hot path;
    the ``forecast_steps`` view expands them to one row per (model, issued_at, sensor,
    step, target) for SQL joins with the actuals.
``accuracy(model, step, target, n, sum_abs, sum_sq)``
    Error sums of every forecast scored when its target tick closed: rolling MAE/RMSE
    per model and horizon without re-joining millions of rows.
``alerts(alert_id, status, ..., group_key)``
    Alert state changes, keyed by ``alert_id`` and ``status`` (a repeated ``firing``
    message of one episode overwrites the earlier one). ``group_key`` is the incident
    the alert belongs to (graph neighbours alerting together, see
    :mod:`pipeline.alerts.lifecycle`); the wire message carries it in the Kafka header
    ``group``. Stores written before the column existed gain it when a service opens
    them (NULL for their old rows).
``model_versions(model, since_ms, version, label, run_id, loaded_ms)``
    Which version of each model forecast from which tick on: a row when the service
    starts with a version the store has not seen for that model, and one per hot
    reload (the version forecasting tick ``ts`` is the row with the largest
    ``since_ms <= ts``).
``counters(name, value)``, ``offsets(topic, partition, next_offset)``, ``state(key, value)``
    Service counters, the next offset to read per partition (written with the data of
    the batch, so a restarted service recognises redelivered records), and scalars such
    as the tick grid and the watermark.

The row types that :meth:`Store.write` takes and the reads return are in
:mod:`pipeline.service.store_rows`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from pipeline.service.store_rows import AlertRow, Batch, ReadingRows, TickRow, VersionRow

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sensors(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS models(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS readings(
    ts INTEGER NOT NULL, sensor INTEGER NOT NULL, value REAL NOT NULL,
    arrived_ms INTEGER NOT NULL, PRIMARY KEY(ts, sensor)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS corrections(
    ts INTEGER NOT NULL, sensor INTEGER NOT NULL, value REAL NOT NULL,
    arrived_ms INTEGER NOT NULL, PRIMARY KEY(ts, sensor)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ticks(
    ts INTEGER PRIMARY KEY, observed INTEGER NOT NULL, reason TEXT NOT NULL,
    closed_ms INTEGER NOT NULL, latency_ms REAL);
CREATE TABLE IF NOT EXISTS forecasts(
    model INTEGER NOT NULL, issued_at INTEGER NOT NULL, sensor INTEGER NOT NULL,
    yhat TEXT NOT NULL, lo TEXT, hi TEXT,
    PRIMARY KEY(model, issued_at, sensor)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS accuracy(
    model INTEGER NOT NULL, step INTEGER NOT NULL, target INTEGER NOT NULL,
    n INTEGER NOT NULL, sum_abs REAL NOT NULL, sum_sq REAL NOT NULL,
    PRIMARY KEY(model, step, target)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alerts(
    alert_id TEXT NOT NULL, status TEXT NOT NULL, dedup_key TEXT NOT NULL,
    severity TEXT NOT NULL, sensor TEXT NOT NULL, ts INTEGER NOT NULL,
    detector TEXT NOT NULL, score REAL NOT NULL, payload TEXT NOT NULL, group_key TEXT,
    PRIMARY KEY(alert_id, status));
CREATE INDEX IF NOT EXISTS alerts_ts ON alerts(ts);
CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS offsets(
    topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
    PRIMARY KEY(topic, partition)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS model_versions(
    model TEXT NOT NULL, since_ms INTEGER NOT NULL, version TEXT NOT NULL, label TEXT NOT NULL,
    run_id TEXT NOT NULL, loaded_ms INTEGER NOT NULL, PRIMARY KEY(model, since_ms)) WITHOUT ROWID;
CREATE VIEW IF NOT EXISTS readings_v AS
    SELECT strftime('%Y-%m-%dT%H:%M:%fZ', r.ts / 1000.0, 'unixepoch') AS ts, s.name AS sensor,
           COALESCE(c.value, r.value) AS value, c.value IS NOT NULL AS corrected
    FROM readings r JOIN sensors s ON s.id = r.sensor
    LEFT JOIN corrections c ON c.ts = r.ts AND c.sensor = r.sensor;
CREATE VIEW IF NOT EXISTS forecast_steps AS
    SELECT f.model, f.issued_at, f.sensor, j.key + 1 AS step,
           f.issued_at + (j.key + 1) * (SELECT value FROM state WHERE key = 'tick_ms') AS target,
           j.value AS yhat, json_extract(f.lo, '$[' || j.key || ']') AS lo,
           json_extract(f.hi, '$[' || j.key || ']') AS hi
    FROM forecasts f, json_each(f.yhat) j;
CREATE VIEW IF NOT EXISTS forecasts_v AS
    SELECT m.name AS model, s.name AS sensor,
           strftime('%Y-%m-%dT%H:%M:%fZ', f.issued_at / 1000.0, 'unixepoch') AS issued_at,
           f.step, strftime('%Y-%m-%dT%H:%M:%fZ', f.target / 1000.0, 'unixepoch') AS target,
           f.yhat, f.lo, f.hi
    FROM forecast_steps f JOIN models m ON m.id = f.model JOIN sensors s ON s.id = f.sensor;
"""


class StoreError(RuntimeError):
    """The store file is unusable (another schema version, or not a roadcast store)."""


# Store locks this process holds: resolved path -> (lock file, stores open on it). A
# service rebuilding its state in-process opens its store again while holding it.
_HELD: dict[Path, tuple[IO[str], int]] = {}
_HELD_LOCK = threading.Lock()


def _lock(path: Path) -> Path:
    """Hold ``<path>.lock`` for this process (an advisory lock the OS drops with the
    process), writing its pid in it; a :class:`StoreError` naming the holder when
    another process has it. Returns the key to :func:`_unlock` with."""
    import fcntl
    import os

    key = path.resolve()
    with _HELD_LOCK:
        if key in _HELD:
            handle, count = _HELD[key]
            _HELD[key] = (handle, count + 1)
            return key
        lock_path = path.with_name(path.name + ".lock")
        try:
            handle = lock_path.open("a+")
        except OSError as exc:
            raise StoreError(f"cannot use {path} as the store: {exc}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip()[:20] or "?"
            handle.close()
            raise StoreError(
                f"the store {path} is in use by another roadcast serve (pid {holder}); give "
                "each service its own --store (ROADCAST_STORE_PATH)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        _HELD[key] = (handle, 1)
        return key


def _unlock(key: Path) -> None:
    with _HELD_LOCK:
        handle, count = _HELD[key]
        if count > 1:
            _HELD[key] = (handle, count - 1)
        else:
            del _HELD[key]
            handle.close()  # releases the lock


class Store:
    """The SQLite store of one service (see the module docstring for the layout).

    Parameters
    ----------
    path : the database file (parent directories are created).
    durable : ``synchronous=FULL`` (a committed batch survives a power cut, the
        at-least-once promise needs it); False gives ``NORMAL`` (survives a process
        crash only), for benchmarks and throwaway demos.
    readonly : open for reading only (``roadcast status``, reports).
    exclusive : the store of a running service: one process at a time (a lock file
        ``<path>.lock`` naming its pid); a second service on it is refused, as two
        services on one store would count every reading twice.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        durable: bool = True,
        readonly: bool = False,
        exclusive: bool = False,
    ) -> None:
        self.path = Path(path)
        self._held: Path | None = None
        if readonly:
            if not self.path.is_file():
                raise StoreError(
                    f"no store at {self.path}; start `roadcast serve` first or pass --store"
                )
            # A URI, because only a URI opens read-only; as_uri() percent-encodes the
            # path, so '#', '%' and '?' in it stay part of the file name.
            self._db = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro",
                uri=True,
                isolation_level=None,
                timeout=30,
                check_same_thread=False,
            )
        else:
            self._open(durable)
        if exclusive:
            try:
                self._held = _lock(self.path)
            except StoreError:
                self._db.close()
                raise
        self._lock = threading.Lock()
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(alerts)")}
        # A read-only view of a store from before the column existed reads NULL for it.
        self._group_column = "group_key" if "group_key" in columns else "NULL"
        self._sensor_ids: dict[str, int] = {}
        self._model_ids: dict[str, int] = {}

    def _open(self, durable: bool) -> None:
        """Open (or create) the store for writing.

        Raises
        ------
        StoreError
            When the path cannot hold a store: a folder, a file that is not SQLite, a
            folder that cannot be created, no permission.
        """
        if self.path.is_dir():
            raise StoreError(f"the store path {self.path} is a folder; give a file path")
        db = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = self._db = sqlite3.connect(
                self.path, isolation_level=None, timeout=30, check_same_thread=False
            )
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
            if tables and "meta" not in tables:
                shown = ", ".join(sorted(tables)[:5])
                raise StoreError(
                    f"{self.path} is another program's SQLite database (tables {shown}), "
                    "not a roadcast store; pass another --store (ROADCAST_STORE_PATH)"
                )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            db.executescript(_SCHEMA)
            self._check_version()
            self._add_missing_columns()
        except (sqlite3.Error, OSError, StoreError) as exc:
            if db is not None:
                db.close()
            if isinstance(exc, StoreError):
                raise
            raise StoreError(
                f"cannot use {self.path} as the store: {exc}; pass another --store "
                "(ROADCAST_STORE_PATH)"
            ) from None

    def _check_version(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif row[0] != str(SCHEMA_VERSION):
            raise StoreError(
                f"{self.path} has store schema {row[0]}, this roadcast writes {SCHEMA_VERSION}; "
                "use another --store path or delete the file"
            )

    def _add_missing_columns(self) -> None:
        """Columns added after a store's schema version was fixed (old rows get NULL)."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(alerts)")}
        if "group_key" not in columns:
            self._db.execute("ALTER TABLE alerts ADD COLUMN group_key TEXT")

    def close(self) -> None:
        self._db.close()
        if self._held is not None:
            _unlock(self._held)
            self._held = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ------------------------------------------------------------ dictionaries
    def sensor_keys(self, names: Sequence[str]) -> np.ndarray:
        """Store ids of sensors ``names`` (registered when new), int64 ``[n]``."""
        missing = [n for n in names if n not in self._sensor_ids]
        if missing:
            with self._transaction() as db:
                db.executemany(
                    "INSERT OR IGNORE INTO sensors(name) VALUES(?)", [(n,) for n in missing]
                )
            for sid, name in self._db.execute("SELECT id, name FROM sensors"):
                self._sensor_ids[name] = sid
        return np.array([self._sensor_ids[n] for n in names], dtype=np.int64)

    def model_key(self, name: str) -> int:
        """Store id of model ``name`` (registered when new)."""
        if name not in self._model_ids:
            with self._transaction() as db:
                db.execute("INSERT OR IGNORE INTO models(name) VALUES(?)", (name,))
            for mid, mname in self._db.execute("SELECT id, name FROM models"):
                self._model_ids[mname] = mid
        return self._model_ids[name]

    # ------------------------------------------------------------------ writes
    def write(self, batch: Batch) -> None:
        """Store everything of one poll batch in one transaction (all or nothing)."""
        model_ids = {
            name: self.model_key(name)
            for name in {f.model for f in batch.forecasts} | {a.model for a in batch.accuracy}
        }
        with self._transaction() as db:
            for rows in batch.readings:
                db.executemany(
                    "INSERT INTO readings VALUES(?,?,?,?) ON CONFLICT(ts, sensor) DO UPDATE SET "
                    "value=excluded.value, arrived_ms=excluded.arrived_ms",
                    _reading_tuples(rows),
                )
            for rows in batch.corrections:
                db.executemany(
                    "INSERT INTO corrections VALUES(?,?,?,?) ON CONFLICT(ts, sensor) DO UPDATE "
                    "SET value=excluded.value, arrived_ms=excluded.arrived_ms",
                    _reading_tuples(rows),
                )
            if batch.ticks:
                db.executemany(
                    "INSERT OR REPLACE INTO ticks VALUES(?,?,?,?,?)",
                    [
                        (t.ts_ms, t.observed, t.reason, t.closed_ms, t.latency_ms)
                        for t in batch.ticks
                    ],
                )
            for fc in batch.forecasts:
                none = [None] * len(fc.sensors)
                db.executemany(
                    "INSERT OR REPLACE INTO forecasts VALUES(?,?,?,?,?,?)",
                    zip(
                        [model_ids[fc.model]] * len(fc.sensors),
                        [int(fc.issued_ms)] * len(fc.sensors),
                        fc.sensors.tolist(),
                        fc.yhat,
                        none if fc.lo is None else fc.lo,
                        none if fc.hi is None else fc.hi,
                        strict=True,
                    ),
                )
            for acc in batch.accuracy:
                mid = model_ids[acc.model]
                db.executemany(
                    "INSERT OR REPLACE INTO accuracy VALUES(?,?,?,?,?,?)",
                    zip(
                        [mid] * len(acc.steps),
                        acc.steps.tolist(),
                        acc.targets_ms.tolist(),
                        acc.n.tolist(),
                        acc.sum_abs.tolist(),
                        acc.sum_sq.tolist(),
                        strict=True,
                    ),
                )
            if batch.alerts:
                db.executemany(
                    "INSERT OR REPLACE INTO alerts(alert_id, status, dedup_key, severity, sensor, "
                    "ts, detector, score, payload, group_key) VALUES(?,?,?,?,?,?,?,?,?,?)",
                    [
                        (a.alert_id, a.status, a.dedup_key, a.severity, a.sensor, a.ts_ms,
                         a.detector, a.score, a.payload, a.group_key)
                        for a in batch.alerts
                    ],
                )  # fmt: skip
            if batch.counters:
                db.executemany(
                    "INSERT INTO counters VALUES(?,?) ON CONFLICT(name) DO UPDATE SET "
                    "value=value+excluded.value",
                    list(batch.counters.items()),
                )
            if batch.offsets:
                db.executemany(
                    "INSERT INTO offsets VALUES(?,?,?) ON CONFLICT(topic, partition) DO UPDATE "
                    "SET next_offset=excluded.next_offset",
                    [(t, p, o) for (t, p), o in batch.offsets.items()],
                )
            if batch.state:
                db.executemany(
                    "INSERT OR REPLACE INTO state VALUES(?,?)", list(batch.state.items())
                )
            if batch.versions:
                db.executemany(
                    "INSERT OR REPLACE INTO model_versions VALUES(?,?,?,?,?,?)",
                    [
                        (v.model, v.since_ms, v.version, v.label, v.run_id, v.loaded_ms)
                        for v in batch.versions
                    ],
                )

    def forget_offsets(self, topic: str | None = None) -> None:
        """Drop the stored offsets (of ``topic``): used when the broker lost its log."""
        with self._transaction() as db:
            if topic is None:
                db.execute("DELETE FROM offsets")
            else:
                db.execute("DELETE FROM offsets WHERE topic=?", (topic,))

    # ------------------------------------------------------------------- reads
    def state(self) -> dict[str, Any]:
        return dict(self._db.execute("SELECT key, value FROM state"))

    def counters(self) -> dict[str, int]:
        return {k: int(v) for k, v in self._db.execute("SELECT name, value FROM counters")}

    def offsets(self, topic: str) -> dict[int, int]:
        """``{partition: next offset}`` of ``topic`` as of the last stored batch."""
        rows = self._db.execute(
            "SELECT partition, next_offset FROM offsets WHERE topic=?", (topic,)
        )
        return {int(p): int(o) for p, o in rows}

    def all_offsets(self) -> dict[tuple[str, int], int]:
        """``{(topic key, partition): next offset}`` of every topic the store has read."""
        rows = self._db.execute("SELECT topic, partition, next_offset FROM offsets")
        return {(str(t), int(p)): int(o) for t, p, o in rows}

    def sensor_names(self) -> dict[int, str]:
        return {int(i): n for i, n in self._db.execute("SELECT id, name FROM sensors")}

    def model_names(self) -> dict[int, str]:
        return {int(i): n for i, n in self._db.execute("SELECT id, name FROM models")}

    def readings_since(self, since_ms: int, *, corrected: bool = True) -> ReadingRows:
        """Readings with ``ts >= since_ms`` (corrections applied), ordered by time."""
        sql = (
            "SELECT r.sensor, r.ts, COALESCE(c.value, r.value), r.arrived_ms FROM readings r "
            "LEFT JOIN corrections c ON c.ts = r.ts AND c.sensor = r.sensor WHERE r.ts >= ? "
            if corrected
            else "SELECT sensor, ts, value, arrived_ms FROM readings r WHERE r.ts >= ? "
        )
        rows = self._db.execute(sql + "ORDER BY r.ts, r.sensor", (since_ms,)).fetchall()
        if corrected:
            # A correction of a slot that was missing at close has no readings row.
            extra = self._db.execute(
                "SELECT c.sensor, c.ts, c.value, c.arrived_ms FROM corrections c "
                "LEFT JOIN readings r ON r.ts = c.ts AND r.sensor = c.sensor "
                "WHERE c.ts >= ? AND r.ts IS NULL",
                (since_ms,),
            ).fetchall()
            rows += extra
        arr = np.array(rows, dtype=np.float64).reshape(-1, 4)  # [n, 4]
        return ReadingRows(
            sensors=arr[:, 0].astype(np.int64),
            ts_ms=arr[:, 1].astype(np.int64),
            values=arr[:, 2].astype(np.float32),
            arrived_ms=arr[:, 3].astype(np.int64),
        )

    def last_ticks(self, limit: int) -> list[TickRow]:
        rows = self._db.execute(
            "SELECT ts, observed, reason, closed_ms, latency_ms FROM ticks ORDER BY ts DESC "
            "LIMIT ?",
            (limit,),
        ).fetchall()
        return [TickRow(*r) for r in reversed(rows)]

    def tick_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM ticks").fetchone()[0])

    def latencies_ms(self, *, since_ms: int | None = None) -> np.ndarray:
        """Per-tick latency (ms) of every closed tick with a known latency, float64 ``[n]``."""
        rows = self._db.execute(
            "SELECT latency_ms FROM ticks WHERE latency_ms IS NOT NULL AND ts >= ?",
            (since_ms if since_ms is not None else -(2**62),),
        ).fetchall()
        return np.array([r[0] for r in rows], dtype=np.float64)

    def recent_forecasts(
        self, model: str, since_ms: int, sensors: np.ndarray, horizon: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Forecasts issued at or after ``since_ms`` by ``model``.

        Returns ``(issued_ms, yhat, lo, hi)``: int64 ``[k]`` and float32
        ``[k, horizon, node]`` with the node axis in the order of ``sensors`` (store
        ids), NaN where nothing was stored; ``lo``/``hi`` are None when the model stored
        no interval.
        """
        empty = np.empty((0, horizon, len(sensors)), np.float32)  # [k, horizon, node]
        row = self._db.execute("SELECT id FROM models WHERE name=?", (model,)).fetchone()
        if row is None:
            return np.empty(0, np.int64), empty, None, None
        rows = self._db.execute(
            "SELECT issued_at, sensor, yhat, lo, hi FROM forecasts WHERE model=? AND issued_at>=?",
            (int(row[0]), since_ms),
        ).fetchall()
        if not rows:
            return np.empty(0, np.int64), empty, None, None
        issued = np.unique(np.array([r[0] for r in rows], np.int64))
        col_of = {int(s): i for i, s in enumerate(sensors)}
        shape = (len(issued), horizon, len(sensors))
        out = [np.full(shape, np.nan, np.float32) for _ in range(3)]  # [k, horizon, node] x3
        has_bounds = False
        for issued_ms, sensor, *arrays in rows:
            col = col_of.get(int(sensor))
            if col is None:
                continue
            k = int(np.searchsorted(issued, issued_ms))
            for grid, text in zip(out, arrays, strict=True):
                if text is not None:
                    values = json.loads(text)[:horizon]
                    grid[k, : len(values), col] = values
            has_bounds = has_bounds or arrays[1] is not None
        return issued, out[0], out[1] if has_bounds else None, out[2] if has_bounds else None

    def rolling_accuracy(self, *, last_ticks: int | None = None) -> pd.DataFrame:
        """Live MAE and RMSE per model and step over the last ``last_ticks`` targets.

        Columns ``model, step, n, mae, rmse`` (step is 1-based), from the error sums
        the service wrote as each target tick closed (values as known at close).
        """
        since = -(2**62)
        if last_ticks is not None:
            row = self._db.execute(
                "SELECT ts FROM ticks ORDER BY ts DESC LIMIT 1 OFFSET ?", (max(last_ticks - 1, 0),)
            ).fetchone()
            if row is not None:
                since = int(row[0])
        rows = self._db.execute(
            "SELECT m.name, a.step, SUM(a.n), SUM(a.sum_abs), SUM(a.sum_sq) FROM accuracy a "
            "JOIN models m ON m.id = a.model WHERE a.target >= ? GROUP BY m.name, a.step "
            "ORDER BY m.name, a.step",
            (since,),
        ).fetchall()
        frame = pd.DataFrame(rows, columns=["model", "step", "n", "sum_abs", "sum_sq"])
        n = frame["n"].where(frame["n"] > 0)
        frame["mae"] = frame["sum_abs"] / n
        frame["rmse"] = np.sqrt(frame["sum_sq"] / n)
        return frame[["model", "step", "n", "mae", "rmse"]]

    def score(self, *, since_ms: int | None = None, model: str | None = None) -> pd.DataFrame:
        """MAE and RMSE per model and step, joining stored forecasts to the actuals.

        Unlike :meth:`rolling_accuracy` this re-joins every forecast (issued at or
        after ``since_ms``) with the best-known actual value: a late correction
        overrides the reading the tick closed with. Columns ``model, step, n, mae,
        rmse``. Slower (it expands the JSON arrays): for reports, not the hot path.
        """
        params: list[Any] = [since_ms if since_ms is not None else -(2**62)]
        where = "f.issued_at >= ?"
        if model is not None:
            where += " AND m.name = ?"
            params.append(model)
        rows = self._db.execute(
            "WITH actual AS ("
            " SELECT ts, sensor, value FROM corrections UNION ALL"
            " SELECT r.ts, r.sensor, r.value FROM readings r WHERE NOT EXISTS"
            " (SELECT 1 FROM corrections c WHERE c.ts = r.ts AND c.sensor = r.sensor))"
            " SELECT m.name, f.step, COUNT(*), AVG(ABS(f.yhat - a.value)),"
            " AVG((f.yhat - a.value) * (f.yhat - a.value))"
            " FROM forecast_steps f JOIN models m ON m.id = f.model"
            " JOIN actual a ON a.ts = f.target AND a.sensor = f.sensor"
            f" WHERE {where} GROUP BY m.name, f.step ORDER BY m.name, f.step",
            params,
        ).fetchall()
        frame = pd.DataFrame(rows, columns=["model", "step", "n", "mae", "mse"])
        frame["rmse"] = np.sqrt(frame["mse"].astype(float))
        return frame[["model", "step", "n", "mae", "rmse"]]

    def alerts(self, *, limit: int = 50) -> list[AlertRow]:
        """The most recent alert state changes, newest first."""
        rows = self._db.execute(
            "SELECT alert_id, status, dedup_key, severity, sensor, ts, detector, score, payload, "
            f"{self._group_column} FROM alerts ORDER BY ts DESC, rowid DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [AlertRow(*r) for r in rows]

    def open_alerts(self) -> list[AlertRow]:
        """The latest ``firing`` row of every alert episode with no ``resolved`` row yet,
        oldest first (what a restarted service must still resolve)."""
        rows = self._db.execute(
            "SELECT alert_id, status, dedup_key, severity, sensor, ts, detector, score, payload, "
            f"{self._group_column} FROM alerts a WHERE status = 'firing' AND NOT EXISTS "
            "(SELECT 1 FROM alerts r WHERE r.alert_id = a.alert_id AND r.status = 'resolved') "
            "ORDER BY ts, alert_id"
        ).fetchall()
        return [AlertRow(*r) for r in rows]

    def model_versions(self) -> list[VersionRow]:
        """Every model version the service forecast with, by model, oldest first (empty
        for a store written before the table existed)."""
        try:
            rows = self._db.execute(
                "SELECT model, version, label, run_id, since_ms, loaded_ms FROM model_versions "
                "ORDER BY model, since_ms"
            ).fetchall()
        except sqlite3.OperationalError:  # a read-only view of an older store
            return []
        return [VersionRow(*r) for r in rows]

    def accuracy_sums(self, model: str, first_ms: int, last_ms: int) -> pd.DataFrame:
        """Error sums of ``model`` per step over targets ``first_ms..last_ms`` (inclusive):
        columns ``step, n, sum_abs, sum_sq`` (steps with no scored value are absent)."""
        rows = self._db.execute(
            "SELECT a.step, SUM(a.n), SUM(a.sum_abs), SUM(a.sum_sq) FROM accuracy a "
            "JOIN models m ON m.id = a.model WHERE m.name = ? AND a.target BETWEEN ? AND ? "
            "GROUP BY a.step ORDER BY a.step",
            (model, int(first_ms), int(last_ms)),
        ).fetchall()
        return pd.DataFrame(rows, columns=["step", "n", "sum_abs", "sum_sq"])

    def closed_ticks(self, since_ms: int) -> np.ndarray:
        """Times (ms) of the closed ticks at or after ``since_ms``, ascending, int64 ``[n]``."""
        rows = self._db.execute("SELECT ts FROM ticks WHERE ts >= ? ORDER BY ts", (since_ms,))
        return np.array([r[0] for r in rows], dtype=np.int64)

    def count(self, table: str) -> int:
        """Row count of one of the store's tables."""
        if table not in _TABLES:
            raise ValueError(f"unknown table {table!r}; one of {sorted(_TABLES)}")
        return int(self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


_TABLES = frozenset(
    {"readings", "corrections", "ticks", "forecasts", "accuracy", "alerts", "sensors", "models"}
    | {"model_versions"}
)


def _reading_tuples(rows: ReadingRows) -> Iterable[tuple[Any, ...]]:
    return zip(
        rows.ts_ms.tolist(),
        rows.sensors.tolist(),
        rows.values.astype(np.float64).tolist(),
        rows.arrived_ms.tolist(),
        strict=True,
    )
