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
``forecast_blocks(model, issued_at, sensors, yhat, lo, hi)``
    One row per model and tick a forecast was published for, keyed by (model,
    issued_at): a forecast re-issued for them (after a redelivery, or by the forecast
    flow) replaces the earlier one whole.
    ``sensors`` is the JSON array of the published sensors' ids, ``yhat``, ``lo`` and
    ``hi`` JSON arrays holding one array per sensor, step 1 first (``lo``/``hi`` NULL
    without intervals): one row and one JSON text per (model, tick) keeps the service's
    hot path off per-sensor rows. The ``forecasts`` view shows them one row per
    (model, issued_at, sensor) with that sensor's arrays, and ``forecast_steps`` one row
    per (model, issued_at, sensor, step, target) for SQL joins with the actuals. Stores
    of schema 1 (a table row per sensor) are converted when a service opens them.
``unpublished(model, issued_at)``
    The forecasts the forecast flow stored and has not published yet (its outbox):
    stored with the forecasts in one transaction, taken off once Kafka acknowledged
    them, and published first by the next run when a run ended between the two.
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

import errno
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson
import pandas as pd

from pipeline.service.store_rows import (
    AlertRow,
    Batch,
    ForecastRows,
    ReadingRows,
    TickRow,
    VersionRow,
)

SCHEMA_VERSION = 2
READABLE_SCHEMAS = ("1", "2")  # schema 1 is read as it is, and upgraded by a writer

log = logging.getLogger("roadcast.service")

_BLOCKS_TABLE = """CREATE TABLE IF NOT EXISTS forecast_blocks(
    model INTEGER NOT NULL, issued_at INTEGER NOT NULL, sensors TEXT NOT NULL,
    yhat TEXT NOT NULL, lo TEXT, hi TEXT, UNIQUE(model, issued_at))"""

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
{blocks};
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
CREATE TABLE IF NOT EXISTS unpublished(
    model INTEGER NOT NULL, issued_at INTEGER NOT NULL,
    PRIMARY KEY(model, issued_at)) WITHOUT ROWID;
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
""".replace("{blocks}", _BLOCKS_TABLE)


class StoreError(RuntimeError):
    """The store file is unusable (another schema version, or not a roadcast store)."""


class StoreReplaced(OSError):
    """The store's path no longer names the file the store writes (deleted, moved or
    replaced while open): a write would go to a file nobody will read again."""


# Store locks this process holds: resolved path -> (lock file, store file, stores open on
# it). A service rebuilding its state in-process opens its store again while holding it.
_HELD: dict[Path, tuple[IO[str], int, int]] = {}
_HELD_LOCK = threading.Lock()


def _lock(path: Path) -> Path:
    """Hold ``<path>.lock`` for this process (an advisory lock the OS drops with the
    process), writing its pid in it, and the store file itself (so a hard link to a store in
    use is refused too); a :class:`StoreError` naming the holder when another process has
    either. ``path`` is resolved first, so a symbolic link to a store in use is refused
    too. A lock this process holds on a file since deleted or replaced is taken again on
    the file the name now gives. Returns the key to :func:`_unlock` with."""
    try:
        key = path.resolve()
    except (OSError, RuntimeError) as exc:  # a loop of symbolic links
        raise StoreError(f"cannot use {path} as the store: {exc}") from None
    lock_path = key.with_name(key.name + ".lock")
    with _HELD_LOCK:
        handle, store_fd, count = _HELD.get(key, (None, -1, 0))
        if handle is None or not _names(handle.fileno(), lock_path):
            fresh = _lock_file(path, lock_path)
            if handle is not None:
                handle.close()
            handle = fresh
        if store_fd < 0 or not _names(store_fd, key):
            try:
                fresh_fd = _lock_store_file(path, key)
            except StoreError:
                if count == 0:
                    handle.close()
                raise
            if store_fd >= 0:
                os.close(store_fd)
            store_fd = fresh_fd
        _HELD[key] = (handle, store_fd, count + 1)
        return key


def _in_use(path: Path, holder: str) -> str:
    return (
        f"the store {path} is in use by another roadcast serve (pid {holder}); give each "
        "service its own --store (ROADCAST_STORE_PATH)"
    )


def _lock_file(path: Path, lock_path: Path) -> IO[str]:
    """``lock_path`` locked, with this process' pid written in it."""
    import fcntl

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
        raise StoreError(_in_use(path, holder)) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _lock_store_file(path: Path, key: Path) -> int:
    """The store file ``key`` open (created when missing) and locked."""
    import fcntl

    try:  # SQLite's own locks are fcntl byte ranges, independent of flock on Linux
        store_fd = os.open(key, os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StoreError(f"cannot use {path} as the store: {exc}") from None
    try:
        fcntl.flock(store_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(store_fd)
        raise StoreError(_in_use(path, "? through another name of the same file")) from None
    return store_fd


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file ``path`` names; None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _names(fd: int, path: Path) -> bool:
    """Whether ``path`` names the file open as ``fd``."""
    try:
        st, opened = os.stat(path), os.fstat(fd)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (opened.st_dev, opened.st_ino)


def _unlock(key: Path) -> None:
    with _HELD_LOCK:
        handle, store_fd, count = _HELD[key]
        if count > 1:
            _HELD[key] = (handle, store_fd, count - 1)
        else:
            del _HELD[key]
            os.close(store_fd)  # releases the locks
            handle.close()


class StoreLock:
    """The lock a service's store holds (``Store(exclusive=True)``), taken before the
    store is opened: ``roadcast serve`` takes it before it joins the consumer group, so
    that a second service on the store is refused without the group rebalancing. The
    store opened later in this process shares it; :meth:`release` when done.

    Raises
    ------
    StoreError
        When another process holds the store (naming its pid), or the lock cannot be made.
    """

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if path.is_dir():
            raise StoreError(f"the store path {path} is a folder; give a file path")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot use {path} as the store: {exc}") from None
        self._key: Path | None = _lock(path)

    def release(self) -> None:
        """Give the lock up (once; a store still open on it keeps holding it)."""
        if self._key is not None:
            _unlock(self._key)
            self._key = None


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
        self._file: tuple[int, int] | None = None  # (device, inode) of the file written
        self._logs: dict[Path, tuple[int, int]] = {}  # its -wal and -shm files, likewise
        self._lock = threading.Lock()
        if readonly:
            if not self.path.is_file():
                raise StoreError(no_store_message(self.path))
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
            self._open(durable, exclusive)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(alerts)")}
        # A read-only view of a store from before the column existed reads NULL for it.
        self._group_column = "group_key" if "group_key" in columns else "NULL"
        self._sensor_ids: dict[str, int] = {}
        self._model_ids: dict[str, int] = {}

    def _open(self, durable: bool, exclusive: bool) -> None:
        """Open (or create) the store for writing: the lock first (``exclusive``), then
        the schema version, checked before anything is written.

        Raises
        ------
        StoreError
            When the path cannot hold a store: a folder, not a regular file, a file that is
            not SQLite or another schema's, a folder that cannot be created, no permission.
        """
        if self.path.is_dir():
            raise StoreError(f"the store path {self.path} is a folder; give a file path")
        if self.path.exists() and not self.path.is_file():
            raise StoreError(f"the store path {self.path} is not a regular file; give a file path")
        db = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if exclusive:
                self._held = _lock(self.path)
            if (problem := read_only_problem(self.path)) is not None:
                raise StoreError(problem)
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
            version = self.schema() if tables else None
            if version not in (None, "1", str(SCHEMA_VERSION)):
                raise StoreError(
                    f"{self.path} has store schema {version}, this roadcast writes "
                    f"{SCHEMA_VERSION}; use another --store path or delete the file"
                )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            if version == "1":
                self._upgrade_from_1()
            db.executescript(_SCHEMA)
            db.execute(_FORECASTS_VIEW)
            db.execute(
                "INSERT OR IGNORE INTO meta VALUES('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            self._add_missing_columns()
            self._file = _identity(self.path)
            self._logs = {p: i for p in self._log_paths() if (i := _identity(p)) is not None}
        except (sqlite3.Error, OSError, StoreError) as exc:
            if db is not None:
                db.close()
            if self._held is not None:
                _unlock(self._held)
                self._held = None
            if isinstance(exc, StoreError):
                raise
            fix = (
                "another program holds a write lock on it; stop that program or pass another "
                "--store (ROADCAST_STORE_PATH)"
                if "locked" in str(exc)
                else "pass another --store (ROADCAST_STORE_PATH)"
            )
            raise StoreError(f"cannot use {self.path} as the store: {exc}; {fix}") from None

    def schema(self) -> str | None:
        """The store's schema version as written in it (None before the first write)."""
        row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return None if row is None else str(row[0])

    def _upgrade_from_1(self) -> None:
        """Schema 1 kept a ``forecasts`` table row per sensor: its rows become blocks (one
        per model and tick) and the name a view, in one transaction (a crash leaves
        schema 1 as it was). Rows that are not JSON are left out, and counted in the log."""
        started = time.perf_counter()
        with self._transaction() as db:
            bad = db.execute(f"SELECT COUNT(*) FROM forecasts WHERE NOT ({_VALID_ROW})").fetchone()
            db.execute(_BLOCKS_TABLE)
            db.execute(
                "INSERT OR REPLACE INTO forecast_blocks(model, issued_at, sensors, yhat, lo, hi) "
                + _BLOCKS_OF_ROWS.format(where="")
            )
            blocks = db.execute("SELECT COUNT(*) FROM forecast_blocks").fetchone()[0]
            db.execute("DROP TABLE forecasts")
            db.execute(_FORECASTS_VIEW)
            db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
        fields = {
            "store": str(self.path), "from": 1, "to": SCHEMA_VERSION, "blocks": int(blocks),
            "rows_not_json": int(bad[0]), "seconds": round(time.perf_counter() - started, 2),
            "hint": "the file keeps its size; `sqlite3 FILE VACUUM` (service stopped) shrinks it",
        }  # fmt: skip
        log.warning("store_upgraded", extra={"fields": fields})

    def _add_missing_columns(self) -> None:
        """Columns added after a store's schema version was fixed (old rows get NULL)."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(alerts)")}
        if "group_key" not in columns:
            self._db.execute("ALTER TABLE alerts ADD COLUMN group_key TEXT")

    def replaced(self) -> str | None:
        """Why the store's path no longer names the file this store writes (deleted,
        moved or replaced since it was opened), or None (also for a read-only store)."""
        if self._file is None:
            return None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return f"the store {self.path} was deleted while the service wrote to it"
        except OSError as exc:
            return f"the store {self.path} cannot be checked: {exc}"
        if (st.st_dev, st.st_ino) != self._file:
            return (
                f"the store {self.path} was replaced by another file while the service wrote to it"
            )
        return None

    def _log_paths(self) -> list[Path]:
        return [self.path.with_name(self.path.name + end) for end in ("-wal", "-shm")]

    def close(self) -> None:
        """Close the store. One whose file was deleted or replaced first folds its
        write-ahead log into that file (a moved store stays whole), then removes the log
        files it left at the path: SQLite would read them as the log of the file there."""
        replaced = self.replaced() is not None
        if replaced:
            with self._lock, suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()
        for path, identity in self._logs.items() if replaced else ():
            if _identity(path) == identity:
                with suppress(OSError):
                    path.unlink()
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
    def _check_not_replaced(self) -> None:
        """Raise :class:`StoreReplaced` when the store's file was deleted or replaced."""
        if (reason := self.replaced()) is not None:
            raise StoreReplaced(reason)

    def write(self, batch: Batch) -> None:
        """Store everything of one poll batch in one transaction (all or nothing).

        Raises
        ------
        StoreReplaced
            When the store's file was deleted or replaced (nothing is written).
        """
        self._check_not_replaced()
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
            blocks = [fc for fc in batch.forecasts if len(fc.sensors)]
            if blocks:
                db.executemany(
                    "INSERT OR REPLACE INTO forecast_blocks VALUES(?,?,?,?,?,?)",
                    [
                        (model_ids[fc.model], int(fc.issued_ms), _json(fc.sensors),
                         _json(fc.yhat), _json(fc.lo), _json(fc.hi))
                        for fc in blocks
                    ],
                )  # fmt: skip
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

    def add_forecasts(
        self, forecasts: Sequence[ForecastRows], *, unpublished: bool = False
    ) -> list[str]:
        """Store each forecast whose model has none issued at the same tick, in one
        transaction (a forecast already there stays as it is); returns the models stored.
        Of two writers racing for a tick, only one stores a model's forecast. With
        ``unpublished`` the stored ones are also listed as still to publish (the forecast
        flow's outbox, :meth:`unpublished_forecasts`) until :meth:`mark_published`.

        Raises
        ------
        StoreReplaced
            When the store's file was deleted or replaced (nothing is written).
        """
        self._check_not_replaced()
        blocks = [fc for fc in forecasts if len(fc.sensors)]
        model_ids = {fc.model: self.model_key(fc.model) for fc in blocks}
        stored = []
        with self._transaction() as db:
            for fc in blocks:
                inserted = db.execute(
                    "INSERT OR IGNORE INTO forecast_blocks VALUES(?,?,?,?,?,?)",
                    (model_ids[fc.model], int(fc.issued_ms), _json(fc.sensors),
                     _json(fc.yhat), _json(fc.lo), _json(fc.hi)),
                ).rowcount  # fmt: skip
                if inserted:
                    stored.append(fc.model)
                    if unpublished:
                        db.execute(
                            "INSERT OR IGNORE INTO unpublished VALUES(?,?)",
                            (model_ids[fc.model], int(fc.issued_ms)),
                        )
        return stored

    def unpublished_forecasts(self) -> list[tuple[str, int]]:
        """``(model, issued_ms)`` of every forecast stored as still to publish, oldest
        first (none in a store that predates the list)."""
        tables = {name for (name,) in self._db.execute("SELECT name FROM sqlite_master")}
        if "unpublished" not in tables:
            return []
        rows = self._db.execute(
            "SELECT m.name, u.issued_at FROM unpublished u JOIN models m ON m.id = u.model "
            "ORDER BY u.issued_at, m.name"
        )
        return [(str(name), int(issued)) for name, issued in rows]

    def mark_published(self, forecasts: Sequence[tuple[str, int]]) -> None:
        """Take the forecasts ``(model, issued_ms)`` off the list of those still to
        publish (one transaction)."""
        with self._transaction() as db:
            db.executemany(
                "DELETE FROM unpublished WHERE model=(SELECT id FROM models WHERE name=?) "
                "AND issued_at=?",
                [(model, int(issued_ms)) for model, issued_ms in forecasts],
            )

    def forecast_block(
        self, model: str, issued_ms: int
    ) -> tuple[list[str], list[np.ndarray | None]] | None:
        """The stored forecast of ``model`` issued at ``issued_ms``: its sensors' names
        and its ``yhat``/``lo``/``hi`` float32 ``[sensor, step]`` (None when not stored);
        None when the store holds no such forecast.

        Raises
        ------
        StoreError
            When the stored forecast cannot be read.
        """
        row = self._db.execute(
            "SELECT b.sensors, b.yhat, b.lo, b.hi FROM forecast_blocks b "
            "JOIN models m ON m.id = b.model WHERE m.name=? AND b.issued_at=?",
            (model, int(issued_ms)),
        ).fetchone()
        if row is None:
            return None
        ids, arrays = self._block(model, issued_ms, row[0], row[1:])
        names = self.sensor_names()
        return [names[int(i)] for i in ids], arrays

    def _block(
        self, model: str, issued_ms: int, ids_text: str, texts: Sequence[str | None]
    ) -> tuple[np.ndarray, list[np.ndarray | None]]:
        """:func:`_parse_block` of the forecast of ``model`` issued at ``issued_ms``; a
        block it cannot read is a :class:`StoreError` naming them."""
        try:
            return _parse_block(ids_text, texts)
        except (ValueError, TypeError, OverflowError) as exc:
            when = pd.Timestamp(int(issued_ms), unit="ms", tz="UTC").isoformat()
            raise StoreError(
                f"the store {self.path} holds a forecast of {model} issued at {when} that "
                f"roadcast cannot read: {exc}"
            ) from None

    def prune(self, before_ms: int, *, span_ms: int) -> tuple[int, dict[str, int]]:
        """Delete what lies before ``before_ms`` (readings, corrections, ticks, forecasts,
        accuracy, and alert episodes resolved before it), at most ``span_ms`` past the
        oldest stored tick in one transaction, so that a store of years is pruned a step
        at a time. Returns the cutoff applied and the rows deleted per table.

        Raises
        ------
        StoreReplaced
            When the store's file was deleted or replaced (nothing is deleted).
        """
        self._check_not_replaced()
        db = self._db
        oldest = db.execute("SELECT MIN(ts) FROM ticks").fetchone()[0]
        models = [int(m) for (m,) in db.execute("SELECT id FROM models")]
        for mid in models:
            first = db.execute(
                "SELECT MIN(issued_at) FROM forecast_blocks WHERE model=?", (mid,)
            ).fetchone()[0]
            if first is not None:
                oldest = first if oldest is None else min(oldest, first)
        if oldest is None:
            return before_ms, {}
        cutoff = min(before_ms, int(oldest) + span_ms)
        removed: dict[str, int] = {}
        with self._transaction() as db:
            for table in ("readings", "corrections", "ticks"):
                removed[table] = db.execute(f"DELETE FROM {table} WHERE ts < ?", (cutoff,)).rowcount
            removed["unpublished"] = db.execute(
                "DELETE FROM unpublished WHERE issued_at < ?", (cutoff,)
            ).rowcount
            removed["forecast_blocks"] = removed["accuracy"] = 0
            for mid in models:
                removed["forecast_blocks"] += db.execute(
                    "DELETE FROM forecast_blocks WHERE model=? AND issued_at < ?", (mid, cutoff)
                ).rowcount
                last_step = db.execute(
                    "SELECT MAX(step) FROM accuracy WHERE model=?", (mid,)
                ).fetchone()[0]
                for step in range(1, int(last_step or 0) + 1):
                    removed["accuracy"] += db.execute(
                        "DELETE FROM accuracy WHERE model=? AND step=? AND target < ?",
                        (mid, step, cutoff),
                    ).rowcount
            removed["alerts"] = db.execute(
                "DELETE FROM alerts WHERE alert_id IN (SELECT alert_id FROM alerts "
                "GROUP BY alert_id HAVING MAX(ts) < ? AND MAX(status = 'resolved'))",
                (cutoff,),
            ).rowcount
        return cutoff, removed

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

    def readings_since(
        self, since_ms: int, *, corrected: bool = True, until_ms: int | None = None
    ) -> ReadingRows:
        """Readings with ``ts >= since_ms`` (and ``<= until_ms``; corrections applied),
        ordered by time."""
        until = np.iinfo(np.int64).max if until_ms is None else int(until_ms)
        where = "WHERE r.ts >= ? AND r.ts <= ? "
        sql = (
            "SELECT r.sensor, r.ts, COALESCE(c.value, r.value), r.arrived_ms FROM readings r "
            "LEFT JOIN corrections c ON c.ts = r.ts AND c.sensor = r.sensor " + where
            if corrected
            else "SELECT sensor, ts, value, arrived_ms FROM readings r " + where
        )
        rows = self._db.execute(sql + "ORDER BY r.ts, r.sensor", (since_ms, until)).fetchall()
        if corrected:
            # A correction of a slot that was missing at close has no readings row.
            extra = self._db.execute(
                "SELECT c.sensor, c.ts, c.value, c.arrived_ms FROM corrections c "
                "LEFT JOIN readings r ON r.ts = c.ts AND r.sensor = c.sensor "
                "WHERE c.ts >= ? AND c.ts <= ? AND r.ts IS NULL",
                (since_ms, until),
            ).fetchall()
            rows += extra
        return _reading_rows(rows)

    def corrections_since(self, since_ms: int, *, until_ms: int) -> ReadingRows:
        """Late readings (corrections) with ``since_ms <= ts <= until_ms``, by time."""
        rows = self._db.execute(
            "SELECT sensor, ts, value, arrived_ms FROM corrections WHERE ts >= ? AND ts <= ? "
            "ORDER BY ts, sensor",
            (since_ms, until_ms),
        ).fetchall()
        return _reading_rows(rows)

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
        if self.schema() == "1":  # a read-only view of a schema-1 store
            sql = _BLOCKS_OF_ROWS.format(where="AND model=? AND issued_at>=?")
            rows = [r[1:] for r in self._db.execute(sql, (int(row[0]), since_ms))]
        else:
            rows = self._db.execute(
                "SELECT issued_at, sensors, yhat, lo, hi FROM forecast_blocks "
                "WHERE model=? AND issued_at>=?",
                (int(row[0]), since_ms),
            ).fetchall()
        if not rows:
            return np.empty(0, np.int64), empty, None, None
        rows.sort(key=lambda r: r[0])
        issued = np.array([r[0] for r in rows], np.int64)
        sensors = np.asarray(sensors, np.int64)
        order = np.argsort(sensors, kind="stable")
        shape = (len(issued), horizon, len(sensors))
        out = [np.full(shape, np.nan, np.float32) for _ in range(3)]  # [k, horizon, node] x3
        has_bounds = False
        for k, (issued_ms, ids_text, *texts) in enumerate(rows):
            ids, arrays = self._block(model, issued_ms, ids_text, texts)
            if not len(sensors) or not len(ids):
                continue
            at = np.minimum(np.searchsorted(sensors, ids, sorter=order), len(sensors) - 1)
            found = sensors[order[at]] == ids
            cols = order[at[found]]
            for grid, values in zip(out, arrays, strict=True):
                if values is not None:
                    steps = min(horizon, values.shape[1])
                    grid[k, :steps, cols] = values[found, :steps]
            has_bounds = has_bounds or arrays[1] is not None or arrays[2] is not None
        return issued, out[0], out[1] if has_bounds else None, out[2] if has_bounds else None

    def rolling_accuracy(
        self,
        *,
        last_ticks: int | None = None,
        last_ms: int | None = None,
        issued_from_ms: int | None = None,
    ) -> pd.DataFrame:
        """Live MAE and RMSE per model and step over the last ``last_ticks`` targets, or
        the targets less than ``last_ms`` before the newest tick; with ``issued_from_ms``
        only of forecasts issued at or after it.

        Columns ``model, step, n, mae, rmse`` (step is 1-based), from the error sums
        the service wrote as each target tick closed (values as known at close).
        """
        since = -(2**62)
        if last_ms is not None:
            newest = self._db.execute("SELECT MAX(ts) FROM ticks").fetchone()[0]
            if newest is not None:
                since = int(newest) - min(last_ms, 2**62) + 1
        elif last_ticks is not None:
            row = self._db.execute(
                "SELECT ts FROM ticks ORDER BY ts DESC LIMIT 1 OFFSET ?", (max(last_ticks - 1, 0),)
            ).fetchone()
            if row is not None:
                since = int(row[0])
        where, args = "a.target >= ?", [since]
        if issued_from_ms is not None:  # issued = target - step x tick
            where += " AND a.target - a.step * ? >= ?"
            args += [int(self.state().get("tick_ms") or 0), issued_from_ms]
        rows = self._db.execute(
            "SELECT m.name, a.step, SUM(a.n), SUM(a.sum_abs), SUM(a.sum_sq) FROM accuracy a "
            f"JOIN models m ON m.id = a.model WHERE {where} GROUP BY m.name, a.step "
            "ORDER BY m.name, a.step",
            args,
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
        # Primary-key lookups of each target in readings and corrections (a join with
        # their union could use no index: quadratic in the store's size).
        rows = self._db.execute(
            "SELECT name, step, COUNT(*), AVG(ABS(yhat - value)),"
            " AVG((yhat - value) * (yhat - value)) FROM ("
            " SELECT m.name, f.step, f.yhat, COALESCE(c.value, r.value) AS value"
            " FROM forecast_steps f JOIN models m ON m.id = f.model"
            " LEFT JOIN readings r ON r.ts = f.target AND r.sensor = f.sensor"
            " LEFT JOIN corrections c ON c.ts = f.target AND c.sensor = f.sensor"
            f" WHERE {where}) WHERE value IS NOT NULL GROUP BY name, step ORDER BY name, step",
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

    def first_closed_tick(self) -> int | None:
        """Time (ms) of the oldest closed tick kept; None when there is none."""
        first = self._db.execute("SELECT MIN(ts) FROM ticks").fetchone()[0]
        return None if first is None else int(first)

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


# ``->>``: a sensor's array as JSON text, SQL NULL where its bounds are null.
_FORECASTS_VIEW = """CREATE VIEW IF NOT EXISTS forecasts AS
    SELECT b.model, b.issued_at, s.value AS sensor, b.yhat ->> s.key AS yhat,
           b.lo ->> s.key AS lo, b.hi ->> s.key AS hi
    FROM forecast_blocks b, json_each(b.sensors) s"""

_VALID_ROW = (
    "json_valid(yhat) AND (lo IS NULL OR json_valid(lo)) AND (hi IS NULL OR json_valid(hi))"
)

# Schema 1's per-sensor rows of ``forecasts`` as blocks (model, issued_at, sensors, yhat,
# lo, hi), a sensor without bounds as null in a block with them: the aggregates of a
# group see its rows in one order, so they stay aligned.
_BLOCKS_OF_ROWS = (
    "SELECT model, issued_at, json_group_array(sensor), '[' || group_concat(yhat) || ']', "
    "CASE WHEN count(lo) > 0 THEN '[' || group_concat(COALESCE(lo, 'null')) || ']' END, "
    "CASE WHEN count(hi) > 0 THEN '[' || group_concat(COALESCE(hi, 'null')) || ']' END "
    f"FROM forecasts WHERE {_VALID_ROW} {{where}} GROUP BY model, issued_at"
)


def _parse_block(
    ids_text: str, texts: Sequence[str | None]
) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """A stored block's sensor ids (int64 ``[m]``) and its ``yhat``/``lo``/``hi`` as
    float32 ``[m, steps]`` (None when not stored; NaN for a sensor stored as null).

    Raises ValueError (or TypeError, OverflowError) naming what does not fit."""
    ids = np.asarray(orjson.loads(ids_text))
    if ids.ndim != 1 or (len(ids) and ids.dtype.kind != "i"):
        raise ValueError("its sensors are not a list of sensor ids")
    if len(np.unique(ids)) != len(ids):
        raise ValueError("it names a sensor twice")
    arrays: list[np.ndarray | None] = []
    for text in texts:
        if text is None:
            arrays.append(None)
            continue
        rows = orjson.loads(text)
        if isinstance(rows, list) and None in rows:  # a sensor without bounds
            width = max((len(r) for r in rows if isinstance(r, list)), default=0)
            rows = [[None] * width if r is None else r for r in rows]
        values = np.asarray(rows, dtype=np.float64)
        if len(ids) == 0 and values.size == 0:
            values = values.reshape(0, 0)
        if values.ndim != 2 or len(values) != len(ids):
            raise ValueError(
                f"it holds {len(values)} arrays of shape {values.shape[1:]} for {len(ids)} "
                "sensors (one array of steps per sensor)"
            )
        with np.errstate(over="ignore"):  # beyond float32: inf, which is not a forecast
            arrays.append(values.astype(np.float32))
    return ids.astype(np.int64), arrays


# The likely cause of a store failure and what to do, by what SQLite or the OS says.
_FAILURE_HINTS: tuple[tuple[tuple[str, ...], tuple[int, ...], str], ...] = (
    (
        ("database is locked", "database table is locked"),
        (),
        "another process holds a write transaction on the store (an open sqlite3 shell, a "
        "backup or a report writing to it): end that transaction or stop that program",
    ),
    (
        ("database or disk is full", "no space left"),
        (errno.ENOSPC, errno.EDQUOT),
        "the disk (or quota) holding the store is full: free space there, or keep less "
        "with --retain",
    ),
    (
        ("readonly database", "read-only file system", "permission denied"),
        (errno.EACCES, errno.EPERM, errno.EROFS),
        "the store file, its -wal/-shm files or its folder became read-only for this "
        "service's user: make them writable again",
    ),
    (
        ("malformed", "file is not a database"),
        (),
        "the store file is damaged: stop the service, then restore a backup or give it "
        "another --store",
    ),
    (
        ("disk i/o error", "unable to open database file"),
        (errno.EIO,),
        "the disk or file system holding the store failed (a network mount gone, a disk "
        "error): check it and the system log",
    ),
)


def failure_hint(exc: BaseException) -> str | None:
    """The likely cause of a store failure ``exc`` and what to do, for the known SQLite
    and OS errors; None for others (not the store's, or not known)."""
    if isinstance(exc, StoreReplaced):
        return "the file was deleted or replaced: the service opens a store at the path again"
    if not isinstance(exc, sqlite3.Error | OSError):
        return None
    text = str(exc).lower()
    code = exc.errno if isinstance(exc, OSError) else None
    for needles, codes, hint in _FAILURE_HINTS:
        if code in codes or any(n in text for n in needles):
            return hint
    return None


def read_only_problem(path: Path) -> str | None:
    """Why the service could not write the store at ``path``: the file, its -wal/-shm
    files or (for those, created at the first write) its folder read-only; None when
    it can (or there is nothing there yet to check)."""
    try:
        exists = bool(path.stat())
    except PermissionError:
        return (
            f"cannot reach the store {path}: permission denied on a folder above it; run "
            "roadcast serve as a user who may, or pass another --store"
        )
    except OSError:
        exists = False  # nothing there yet: created at the first write
    if exists and not os.access(path, os.R_OK | os.W_OK):
        if os.access(path, os.R_OK):
            return f"the store {path} is read-only; give roadcast serve a writable file"
        return (
            f"the store {path} may not be read (permission denied); give roadcast serve a "
            "file it may read and write"
        )
    logs = [path.with_name(path.name + end) for end in ("-wal", "-shm")]
    for log_file in logs:
        if log_file.exists() and not os.access(log_file, os.W_OK):
            return f"the store's log {log_file} is read-only; make it writable for roadcast serve"
    folder = path.parent
    missing = not all(p.exists() for p in logs)
    if missing and folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
        return (
            f"the store's folder {folder} is read-only (SQLite creates the store's -wal and "
            "-shm files there); make it writable for roadcast serve or pass another --store"
        )
    return None


def no_store_message(path: Path) -> str:
    """Why there is no store at ``path`` to read (missing, or not a regular file)."""
    if path.exists():
        return f"{path} is not a regular file; pass the store file roadcast serve writes"
    return f"no store at {path}; start `roadcast serve` first or pass --store"


def _json(array: np.ndarray | None) -> str | None:
    """A numeric array as JSON text (float32 as the shortest decimal that reads back)."""
    if array is None:
        return None
    return orjson.dumps(np.ascontiguousarray(array), option=orjson.OPT_SERIALIZE_NUMPY).decode()


def _reading_tuples(rows: ReadingRows) -> Iterable[tuple[Any, ...]]:
    return zip(
        rows.ts_ms.tolist(),
        rows.sensors.tolist(),
        rows.values.astype(np.float64).tolist(),
        rows.arrived_ms.tolist(),
        strict=True,
    )


def _reading_rows(rows: list[Any]) -> ReadingRows:
    """``(sensor, ts, value, arrived_ms)`` tuples as :class:`ReadingRows`."""
    arr = np.array(rows, dtype=np.float64).reshape(-1, 4)  # [n, 4]
    return ReadingRows(
        sensors=arr[:, 0].astype(np.int64),
        ts_ms=arr[:, 1].astype(np.int64),
        values=arr[:, 2].astype(np.float32),
        arrived_ms=arr[:, 3].astype(np.int64),
    )
