"""The SQLite store: atomic batches, idempotent upserts, restore queries, live accuracy."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from pipeline.service import store_reads
from pipeline.service.store import Store, StoreError
from pipeline.service.store_rows import (
    AccuracyRows,
    AlertRow,
    Batch,
    ForecastRows,
    ReadingRows,
    TickRow,
)

FREQ_MS = 300_000


def readings(sensors, ts, values) -> ReadingRows:
    n = len(sensors)
    return ReadingRows(
        sensors=np.asarray(sensors, np.int64),
        ts_ms=np.asarray(ts, np.int64),
        values=np.asarray(values, np.float32),
        arrived_ms=np.zeros(n, np.int64),
    )


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "s.sqlite", durable=False) as s:
        yield s


def test_sensor_and_model_keys_are_stable(store, tmp_path):
    keys = store.sensor_keys(["x", "y"])
    assert list(store.sensor_keys(["y", "x", "z"])[:2]) == [keys[1], keys[0]]
    mid = store.model_key("ar")
    store.close()
    with Store(tmp_path / "s.sqlite") as again:
        assert list(again.sensor_keys(["x", "y"])) == list(keys)
        assert again.model_key("ar") == mid


def test_readings_upsert_and_corrections_override(store):
    s = store.sensor_keys(["a", "b"])
    batch = Batch(readings=[readings(s, [0, 0], [1.0, 2.0])])
    store.write(batch)
    store.write(batch)  # redelivered: same rows
    assert store.count("readings") == 2
    store.write(Batch(readings=[readings(s[:1], [0], [5.0])]))  # conflict: later wins
    store.write(Batch(corrections=[readings(s[1:], [0], [7.0]), readings(s[:1], [FREQ_MS], [3.0])]))
    got = store.readings_since(0)
    pairs = sorted(zip(got.sensors.tolist(), got.ts_ms.tolist(), got.values.tolist(), strict=True))
    # the correction replaces b's value; a's correction at a slot missing at close is returned too
    assert pairs == sorted([(s[0], 0, 5.0), (s[1], 0, 7.0), (s[0], FREQ_MS, 3.0)])
    raw = store.readings_since(0, corrected=False)
    assert sorted(raw.values.tolist()) == [2.0, 5.0]


def test_batch_is_atomic(store):
    s = store.sensor_keys(["a"])
    bad = Batch(
        readings=[readings(s, [0], [1.0])],
        counters={"consumed": 1},
        ticks=[TickRow(0, 1, "complete", 5, None), TickRow(0, 1, "complete", 5, None)],
    )
    bad.ticks.append(TickRow(0, None, "x", 0, None))  # type: ignore[arg-type]  # NOT NULL
    with pytest.raises(sqlite3.IntegrityError):
        store.write(bad)
    assert store.count("readings") == 0 and store.counters() == {}
    assert store.count("ticks") == 0


def test_counters_add_offsets_overwrite_state_kept(store):
    store.write(Batch(counters={"consumed": 3, "valid": 2}, offsets={("t", 0): 3}, state={"k": 1}))
    store.write(Batch(counters={"consumed": 2}, offsets={("t", 0): 5, ("t", 1): 1}))
    assert store.counters() == {"consumed": 5, "valid": 2}
    assert store.offsets("t") == {0: 5, 1: 1}
    assert store.state() == {"k": 1}


def test_forecasts_roundtrip_and_score_against_actuals(store):
    s = store.sensor_keys(["a", "b"])
    store.write(Batch(state={"tick_ms": FREQ_MS}))
    # model "ar" issued at 0: a -> [10, 11], b -> [20, 21] (steps 1, 2)
    yhat = np.array([[10.0, 11.0], [20.0, 21.0]], np.float32)  # [sensor, step]
    fc = ForecastRows("ar", 0, s, yhat, yhat - 1, yhat + 1)
    store.write(Batch(forecasts=[fc]))
    store.write(Batch(forecasts=[fc]))  # idempotent
    assert store.count("forecasts") == 2
    # actuals: step 1 target = 300000, step 2 target = 600000
    store.write(
        Batch(
            readings=[
                readings(s, [FREQ_MS, FREQ_MS], [12.0, 20.0]),
                readings(s[:1], [2 * FREQ_MS], [11.0]),
            ]
        )
    )
    score = store.score()
    row1 = score[score.step == 1].iloc[0]
    assert row1.n == 2 and row1.mae == pytest.approx(1.0)
    assert row1.rmse == pytest.approx(np.sqrt(2.0))
    row2 = score[score.step == 2].iloc[0]
    assert row2.n == 1 and row2.mae == 0.0  # b's step-2 target was never observed
    # a late correction changes the score
    store.write(Batch(corrections=[readings(s[:1], [FREQ_MS], [10.0])]))
    assert store.score().query("step == 1").mae.iloc[0] == pytest.approx(0.0)
    issued, means, lo, hi = store.recent_forecasts("ar", 0, s[::-1], 2)
    assert issued.tolist() == [0]
    np.testing.assert_array_equal(means[0], [[20.0, 10.0], [21.0, 11.0]])  # [step, node]
    assert lo is not None and hi is not None
    np.testing.assert_array_equal(hi[0] - lo[0], np.full((2, 2), 2.0))
    none_issued, _, no_lo, _ = store.recent_forecasts("gru", 0, s, 2)
    assert len(none_issued) == 0 and no_lo is None
    with sqlite3.connect(store.path) as db:  # the view, as a report would query it
        view = db.execute(
            "SELECT model, sensor, step, target, yhat, lo FROM forecasts_v ORDER BY sensor, step"
        ).fetchall()
    assert view[0] == ("ar", "a", 1, "1970-01-01T00:05:00.000Z", 10.0, 9.0)


def test_forecasts_without_intervals_and_from_arrays(store):
    s = store.sensor_keys(["a", "b"])
    mean = np.array([[1.5, np.nan], [2.5, 3.0]], np.float32)  # [horizon, node]
    rows = ForecastRows.from_arrays("m", 0, s, mean)
    assert rows.yhat.tolist() == [[1.5, 2.5]] and rows.sensors.tolist() == [s[0]]  # b: NaN
    store.write(Batch(forecasts=[rows]))
    _, means, lo, hi = store.recent_forecasts("m", 0, s, 2)
    assert means[0, :, 0].tolist() == [1.5, 2.5] and np.isnan(means[0, :, 1]).all()
    assert lo is None and hi is None
    bounded = ForecastRows.from_arrays("m", 0, s[:1], mean[:, :1], mean[:, :1] - 1, mean[:, :1] + 1)
    assert bounded.lo is not None and bounded.hi is not None
    assert bounded.lo.tolist() == [[0.5, 1.5]] and bounded.hi.tolist() == [[2.5, 3.5]]


def test_rolling_accuracy_over_last_ticks(store):
    ticks = [TickRow(t * FREQ_MS, 2, "complete", 0, float(t)) for t in range(4)]
    acc = AccuracyRows(
        "ar",
        steps=np.array([1, 1, 1, 1]),
        targets_ms=np.arange(4) * FREQ_MS,
        n=np.array([2, 2, 2, 2]),
        sum_abs=np.array([2.0, 2.0, 4.0, 4.0]),
        sum_sq=np.array([2.0, 2.0, 8.0, 8.0]),
    )
    store.write(Batch(ticks=ticks, accuracy=[acc]))
    every = store.rolling_accuracy()
    assert every.mae.iloc[0] == pytest.approx(12.0 / 8)
    last2 = store.rolling_accuracy(last_ticks=2)
    assert last2.n.iloc[0] == 4 and last2.mae.iloc[0] == pytest.approx(2.0)
    assert last2.rmse.iloc[0] == pytest.approx(2.0)
    np.testing.assert_array_equal(store.latencies_ms(), [0.0, 1.0, 2.0, 3.0])
    assert [t.ts_ms for t in store.last_ticks(2)] == [2 * FREQ_MS, 3 * FREQ_MS]
    # a span before the newest tick: two ticks' worth holds the same two targets
    spanned = store.rolling_accuracy(last_ms=2 * FREQ_MS)
    assert spanned.n.iloc[0] == 4 and spanned.mae.iloc[0] == pytest.approx(2.0)
    assert store.rolling_accuracy(last_ms=2**70).n.iloc[0] == 8
    # only forecasts issued from tick 2 on (targets at step 1: ticks 3 and later)
    store.write(Batch(state={"tick_ms": FREQ_MS}))
    issued = store.rolling_accuracy(issued_from_ms=2 * FREQ_MS)
    assert issued.n.iloc[0] == 2 and issued.mae.iloc[0] == pytest.approx(2.0)


def test_alerts_are_keyed_by_id_and_status(store):
    row = AlertRow("id1", "firing", "a:interval", "warning", "a", 5, "interval", 0.7, "{}")
    store.write(Batch(alerts=[row, row]))
    resolved = AlertRow("id1", "resolved", "a:interval", "info", "a", 9, "interval", 0.1, "{}")
    store.write(Batch(alerts=[resolved]))
    assert [a.status for a in store.alerts()] == ["resolved", "firing"]


def test_readonly_and_version_errors(tmp_path):
    with pytest.raises(StoreError, match="roadcast serve"):
        Store(tmp_path / "none.sqlite", readonly=True)
    path = tmp_path / "s.sqlite"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="delete the file"):
        Store(path)
    with pytest.raises(ValueError, match="unknown table"):
        Store(tmp_path / "ok.sqlite").count("sqlite_master")


def _schema_1_store(path) -> None:
    """A store as schema 1 wrote it: a ``forecasts`` table row per sensor."""
    with Store(path) as store:
        s = store.sensor_keys(["a", "b"])
        store.model_key("ar")
        store.model_key("naive")
        store.write(Batch(state={"tick_ms": FREQ_MS}))
    db = sqlite3.connect(path)
    db.executescript(
        "DROP VIEW forecasts; DROP TABLE forecast_blocks; "
        "CREATE TABLE forecasts(model INTEGER NOT NULL, issued_at INTEGER NOT NULL, "
        "sensor INTEGER NOT NULL, yhat TEXT NOT NULL, lo TEXT, hi TEXT, "
        "PRIMARY KEY(model, issued_at, sensor)) WITHOUT ROWID; "
        "UPDATE meta SET value='1' WHERE key='schema_version';"
    )
    db.executemany(
        "INSERT INTO forecasts VALUES(?,?,?,?,?,?)",
        [
            (1, 0, int(s[0]), "[10.0,11.0]", "[9.0,10.0]", "[11.0,12.0]"),
            (1, 0, int(s[1]), "[20.0,21.0]", "[19.0,20.0]", "[21.0,22.0]"),
            (1, FREQ_MS, int(s[1]), "[30.0,31.0]", "[29.0,30.0]", "[31.0,32.0]"),
            (2, 0, int(s[0]), "[5.0,5.0]", None, None),
        ],
    )
    db.commit()
    db.close()


def test_a_schema_1_store_reads_and_is_upgraded_by_a_writer(tmp_path):
    path = tmp_path / "old.sqlite"
    _schema_1_store(path)
    expected = None
    for readonly in (True, False):  # read as it is, then upgraded by a writer
        with Store(path, readonly=readonly) as store:
            ids = np.array(sorted(store.sensor_names()), np.int64)
            issued, means, lo, hi = store.recent_forecasts("ar", 0, ids, 2)
            assert issued.tolist() == [0, FREQ_MS] and lo is not None and hi is not None
            np.testing.assert_array_equal(means[0], [[10.0, 20.0], [11.0, 21.0]])
            assert np.isnan(means[1, :, 0]).all() and means[1, :, 1].tolist() == [30.0, 31.0]
            np.testing.assert_array_equal(hi - lo, np.where(np.isnan(means), np.nan, 2.0))
            _, naive, no_lo, _ = store.recent_forecasts("naive", 0, ids, 2)
            assert naive[0, :, 0].tolist() == [5.0, 5.0] and no_lo is None
            assert store.count("forecasts") == 4
            rows = store._db.execute(
                "SELECT model, issued_at, sensor, step, yhat, lo FROM forecast_steps "
                "ORDER BY model, issued_at, sensor, step"
            ).fetchall()
            assert len(rows) == 8 and rows[0] == (1, 0, ids[0], 1, 10.0, 9.0)
            expected = rows if expected is None else expected
            assert rows == expected
    db = sqlite3.connect(path)
    kinds = dict(db.execute("SELECT name, type FROM sqlite_master WHERE name LIKE 'forecast%'"))
    version = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    db.close()
    assert kinds["forecasts"] == "view" and kinds["forecast_blocks"] == "table"
    assert version == "2"


@pytest.mark.parametrize("command", ["status", "alerts"])
def test_status_and_alerts_read_a_schema_1_store_without_upgrading_it(tmp_path, command):
    from typer.testing import CliRunner

    from flows.cli import app

    path = tmp_path / "old.sqlite"
    _schema_1_store(path)
    result = CliRunner().invoke(app, [command, "--store", str(path)])
    assert result.exit_code == 0, result.output
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("1",)


def test_upgrade_keeps_the_bounds_a_block_has_and_leaves_out_rows_that_are_no_json(tmp_path):
    path = tmp_path / "old.sqlite"
    _schema_1_store(path)
    db = sqlite3.connect(path)
    db.execute("UPDATE forecasts SET lo=NULL, hi=NULL WHERE issued_at=0 AND sensor=2")
    db.execute("INSERT INTO forecasts VALUES(1, ?, 1, '[NaN,1]', NULL, NULL)", (2 * FREQ_MS,))
    db.commit()
    db.close()
    for readonly in (True, False):
        with Store(path, readonly=readonly) as store:
            issued, _, lo, hi = store.recent_forecasts("ar", 0, np.array([1, 2]), 2)
            assert issued.tolist() == [0, FREQ_MS] and lo is not None and hi is not None
            assert lo[0, :, 0].tolist() == [9.0, 10.0] and np.isnan(lo[0, :, 1]).all()
            assert hi[1, :, 1].tolist() == [31.0, 32.0]
            view = store._db.execute(
                "SELECT sensor, lo FROM forecasts WHERE model=1 AND issued_at=0 ORDER BY sensor"
            ).fetchall()
            assert view == [(1, "[9.0,10.0]"), (2, None)]


def test_a_writer_refuses_a_newer_schema_without_writing_to_it(tmp_path):
    path = tmp_path / "new.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT); "
        "INSERT INTO meta VALUES('schema_version', '3'); CREATE TABLE forecasts3(x);"
    )
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="has store schema 3, this roadcast writes 2"):
        Store(path, exclusive=True)
    assert path.read_bytes() == before
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not made WAL
    check.close()


@pytest.mark.parametrize(
    ("sensors", "yhat", "message"),
    [
        ("[1,2]", "[[1.0,2.0],[3.0,4.0],[5.0,6.0]]", "3 arrays of shape \\(2,\\) for 2 sensors"),
        ("[1,2]", "[1.0,2.0,3.0,4.0]", "for 2 sensors"),
        ("[1.5,2.5]", "[[1.0],[2.0]]", "not a list of sensor ids"),
        ("[1,1]", "[[1.0],[2.0]]", "names a sensor twice"),
        ("[1,99999999999999999999]", "[[1.0],[2.0]]", "cannot read"),
        ("[1,2]", "[[1.0],[2.0,3.0]]", "cannot read"),
        ("[1,2]", "not json", "cannot read"),
    ],
)
def test_a_forecast_block_that_does_not_fit_is_refused_naming_it(store, sensors, yhat, message):
    s = store.sensor_keys(["a", "b"])
    store.write(Batch(forecasts=[ForecastRows("ar", 0, s, np.ones((2, 2), np.float32))]))
    store._db.execute("UPDATE forecast_blocks SET sensors=?, yhat=?", (sensors, yhat))
    named = f"forecast of ar issued at 1970-01-01T00:00:00.*{message}"
    with pytest.raises(StoreError, match=named):
        store.recent_forecasts("ar", 0, s, 2)


def test_a_store_path_that_is_no_regular_file_is_named_so(tmp_path):
    link = tmp_path / "null.sqlite"
    link.symlink_to("/dev/null")
    for readonly in (True, False):
        with pytest.raises(StoreError, match="is not a regular file"):
            Store(link, readonly=readonly)
    with pytest.raises(StoreError, match="is not a regular file"):
        store_reads.check_store(link)


def test_reader_sees_writes_while_writer_is_open(tmp_path):
    path = tmp_path / "s.sqlite"
    writer = Store(path)
    writer.write(Batch(counters={"consumed": 1}))
    reader = Store(path, readonly=True)
    assert reader.counters() == {"consumed": 1}
    writer.write(Batch(counters={"consumed": 1}))
    assert reader.counters() == {"consumed": 2}
    reader.close()
    writer.close()


@pytest.mark.parametrize("name", ["a#b.sqlite", "50%.sqlite", "50%25.sqlite", "q?x=1.sqlite"])
def test_store_paths_are_paths_not_uris(tmp_path, name):
    folder = tmp_path / "dir #1 %20"
    path = folder / name
    with Store(path) as writer:
        writer.write(Batch(counters={"consumed": 3}))
    with Store(path, readonly=True) as reader:
        assert reader.counters() == {"consumed": 3}
    # Only that database (and SQLite's -wal/-shm beside it): no other file was opened.
    assert {p.name.removesuffix("-wal").removesuffix("-shm") for p in folder.iterdir()} == {name}
    with pytest.raises(StoreError, match="no store"):
        Store(folder / name.replace(".sqlite", "-other.sqlite"), readonly=True)
    assert {p.name.removesuffix("-wal").removesuffix("-shm") for p in folder.iterdir()} == {name}


def test_another_program_s_database_is_refused_untouched(tmp_path):
    path = tmp_path / "theirs.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t(x)")
    with pytest.raises(StoreError, match=r"another program's SQLite database \(tables t\)"):
        Store(path)
    with sqlite3.connect(path) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master")]
    assert tables == ["t"]


def test_a_service_store_is_one_process_s_at_a_time(tmp_path):
    """Two services on one store counted every reading twice (consumed 600 of 500)."""
    path = tmp_path / "store.sqlite"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pipeline.service.store import Store; "
         f"s = Store({str(path)!r}, exclusive=True); print('held', flush=True); "
         "sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(
            StoreError, match=rf"in use by another roadcast serve \(pid {holder.pid}\)"
        ):
            Store(path, exclusive=True)
        link = tmp_path / "link.sqlite"  # the same store under another name
        link.symlink_to(path)
        with pytest.raises(StoreError, match="in use by another roadcast serve"):
            Store(link, exclusive=True)
        hard = tmp_path / "other-folder" / "hard.sqlite"  # another name of the same file
        hard.parent.mkdir()
        os.link(path, hard)
        with pytest.raises(StoreError, match="through another name of the same file"):
            Store(hard, exclusive=True)
        Store(path, readonly=True).close()  # readers (roadcast status) are welcome
    finally:
        holder.communicate("", timeout=60)
    first = Store(path, exclusive=True)  # the holder is gone: free again
    again = Store(path, exclusive=True)  # one process may open it twice (state rebuilds)
    again.close()
    first.close()


def test_a_loop_of_links_as_the_store_is_a_store_error(tmp_path):
    (tmp_path / "a.sqlite").symlink_to(tmp_path / "b.sqlite")
    (tmp_path / "b.sqlite").symlink_to(tmp_path / "a.sqlite")
    with pytest.raises(StoreError, match=r"cannot use .*a\.sqlite as the store"):
        Store(tmp_path / "a.sqlite", exclusive=True)


def test_a_store_in_a_folder_sqlite_cannot_write_says_so(tmp_path, monkeypatch):
    """A WAL store needs its -shm file even to be read; in a read-only folder (root
    passes chmod, so the folder's refusal is simulated) SQLite says "unable to open
    database file", which read as "not a roadcast store"."""
    Store(tmp_path / "s.sqlite").close()

    def refuse(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(store_reads.sqlite3, "connect", refuse)
    monkeypatch.setattr(store_reads.os, "access", lambda *args: False)
    with pytest.raises(StoreError, match="its folder is not writable, and SQLite needs"):
        store_reads.check_store(tmp_path / "s.sqlite")


def test_prune_deletes_the_past_a_span_at_a_time_and_keeps_open_alerts(store):
    """Rows before the cutoff go (readings, corrections, ticks, forecasts, accuracy,
    resolved alert episodes); at most ``span_ms`` past the oldest tick per call; a firing
    alert stays whatever its age."""
    s = store.sensor_keys(["a", "b"])
    ticks = list(range(0, 20 * FREQ_MS, FREQ_MS))
    for t in ticks:
        yhat = np.full((2, 3), float(t), np.float32)
        steps, targets, ones = np.array([1, 2]), np.array([t, t]), np.ones(2, np.int64)
        store.write(
            Batch(
                readings=[readings(s, [t, t], [1.0, 2.0])],
                corrections=[readings(s[:1], [t], [1.5])],
                ticks=[TickRow(t, 2, "complete", t, None)],
                forecasts=[ForecastRows("ar", t, s, yhat), ForecastRows("lstm", t, s, yhat)],
                accuracy=[AccuracyRows("ar", steps, targets, ones, ones * 1.0, ones * 1.0)],
            )
        )
    store.write(Batch(alerts=[
        AlertRow("old", "firing", "a:x", "warning", "a", 0, "x", 0.9, "{}"),
        AlertRow("old", "resolved", "a:x", "info", "a", FREQ_MS, "x", 0.1, "{}"),
        AlertRow("open", "firing", "b:x", "warning", "b", 0, "x", 0.9, "{}"),
    ]))  # fmt: skip
    cutoff, removed = store.prune(10 * FREQ_MS, span_ms=4 * FREQ_MS)
    assert cutoff == 4 * FREQ_MS  # a span past the oldest tick, not the whole way
    assert removed == {"readings": 8, "corrections": 4, "ticks": 4, "unpublished": 0,
                       "forecast_blocks": 8, "accuracy": 8, "alerts": 2}  # fmt: skip
    cutoff, removed = store.prune(10 * FREQ_MS, span_ms=100 * FREQ_MS)
    assert cutoff == 10 * FREQ_MS and removed["ticks"] == 6 and removed["alerts"] == 0
    assert store.closed_ticks(0).tolist() == ticks[10:]
    assert sorted(set(store.readings_since(0).ts_ms.tolist())) == ticks[10:]
    assert store.count("forecasts") == 2 * 10 * 2 and store.count("accuracy") == 2 * 10
    assert [a.alert_id for a in store.open_alerts()] == ["open"]
    assert {a.alert_id for a in store.alerts()} == {"open"}
