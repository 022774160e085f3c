"""Reading the service's store back as panels and backtests: grid alignment, periods,
scoring of stored forecasts against hand-computed errors, alerts of a period."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.kafka.schema import AlertMessage, encode_alert
from pipeline.service.store import Store
from pipeline.service.store_reads import (
    StoreReadError,
    alerts_between,
    latest_window,
    parse_since,
    period_panel,
    period_since,
    stored_backtest,
)
from pipeline.service.store_rows import AlertRow, Batch, ForecastRows, ReadingRows, TickRow

STEP = 300_000  # 5 minutes
T0 = int(pd.Timestamp("2024-03-04T00:00Z").value // 1_000_000)
SENSORS = ["a", "b", "c"]


def _readings(ids, ts, values) -> ReadingRows:
    return ReadingRows(
        sensors=np.asarray(ids, np.int64),
        ts_ms=np.asarray(ts, np.int64),
        values=np.asarray(values, np.float32),
        arrived_ms=np.zeros(len(ids), np.int64),
    )


@pytest.fixture
def store(tmp_path):
    """10 closed ticks of 3 sensors: value = 10 * tick + sensor index; sensor c misses
    tick 4; tick 10 is still open (a reading, no closed tick)."""
    with Store(tmp_path / "s.sqlite", durable=False) as s:
        ids = s.sensor_keys(SENSORS)
        rows = [(ids[j], T0 + t * STEP, 10.0 * t + j) for t in range(11) for j in range(3)
                if not (t == 4 and j == 2)]  # fmt: skip
        sid, ts, val = zip(*rows, strict=True)
        batch = Batch(
            readings=[_readings(sid, ts, val)],
            ticks=[TickRow(T0 + t * STEP, 3, "complete", 0, 1.0) for t in range(10)],
            state={"tick_ms": STEP},
        )
        s.write(batch)
        yield s


def test_latest_window_is_the_newest_closed_ticks(store):
    window = latest_window(store, ["c", "a"], 4)
    assert window.sensor_ids == ("c", "a") and window.n_time == 4
    assert window.timestamps[-1] == pd.Timestamp(T0 + 9 * STEP, unit="ms", tz="UTC")
    assert window.freq == pd.Timedelta("5min")
    np.testing.assert_array_equal(window.values[:, 1], [60, 70, 80, 90])  # a; open tick 10 left out
    np.testing.assert_array_equal(window.values[:, 0], [62, 72, 82, 92])


def test_period_panel_marks_missing_readings_and_unknown_sensors(store):
    panel = period_panel(store, T0 + 3 * STEP, T0 + 5 * STEP, ["c", "zz"])
    assert not panel.mask[1, 0] and np.isnan(panel.values[1, 0])  # c missed tick 4
    assert not panel.mask[:, 1].any()  # a sensor the store never saw
    with pytest.raises(ValueError, match="whole number"):
        period_panel(store, T0, T0 + STEP // 2, ["a"])


def test_periods(store):
    last = T0 + 9 * STEP
    assert period_since(store, "15min").first_ms == last - 2 * STEP  # ticks in (last-15, last]
    assert period_since(store, "7d").first_ms == T0  # never before the oldest closed tick
    at = pd.Timestamp(T0 + 3 * STEP + 1, unit="ms", tz="UTC").isoformat()
    assert period_since(store, at).first_ms == T0 + 4 * STEP  # at or after the time
    with pytest.raises(StoreReadError, match="no closed tick at or after"):
        period_since(store, "2030-01-01T00:00Z")
    with pytest.raises(ValueError, match="positive"):
        period_since(store, "-1h")
    assert parse_since("7d") == pd.Timedelta(days=7)
    for text in ("last week", "", "  ", "nan", "NaT"):
        with pytest.raises(ValueError, match="neither a duration"):
            parse_since(text)
    with pytest.raises(ValueError, match="longer than a duration can be"):
        parse_since("99999999d")
    with pytest.raises(ValueError, match="outside the years"):
        parse_since("2999-01-01")


def test_a_folder_given_as_the_store_is_named_as_a_folder(tmp_path):
    from pipeline.service.store import StoreError
    from pipeline.service.store_reads import check_store

    with pytest.raises(StoreError, match="is a folder, not a store"):
        check_store(tmp_path)


def _as_a_user(tmp_path, locked: str, args: list[str]):
    """Run ``python args`` on a store (``args`` end with it) whose file or folder
    (``locked``) has mode 000, as a user for whom that mode holds: as root, without the
    capabilities that bypass it. Returns the process and the store's path."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root reads any file; setpriv, to drop that capability, is missing")
        prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    folder = tmp_path / "stores"
    folder.mkdir()
    path = folder / "s.sqlite"
    Store(path).close()
    locked_path = path if locked == "file" else folder
    locked_path.chmod(0)
    try:
        done = subprocess.run(
            [*prefix, sys.executable, *args, str(path)],
            capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1],
        )  # fmt: skip
    finally:
        locked_path.chmod(0o700)
    return done, path


@pytest.mark.parametrize("locked", ["file", "folder"])
def test_a_store_this_user_may_not_read_is_named_with_permission_denied(tmp_path, locked):
    """A store file of mode 000 was "not a roadcast store", one in a folder of mode 000 a
    raw ``[Errno 13]``."""
    done, path = _as_a_user(tmp_path, locked, ["-m", "flows.cli", "status", "--store"])
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        f"error: cannot read the store {path}: permission denied (on the file or a folder "
        "above it); run roadcast as a user who may read it"
    ], done.stderr


@pytest.mark.parametrize(
    ("locked", "says"),
    [
        ("folder", "cannot reach the store {path}: permission denied on a folder above it"),
        ("file", "the store {path} may not be read (permission denied)"),
    ],
)
def test_serve_names_a_store_it_may_not_reach_or_read(tmp_path, locked, says):
    """serve's pre-flight ended in a raw ``[Errno 13]`` for a store in a folder of mode
    000, and called a store of mode 000 "read-only"."""
    code = (
        "import sys, pathlib\n"
        "from pipeline.service.store import read_only_problem\n"
        "print(read_only_problem(pathlib.Path(sys.argv[1])))\n"
    )
    done, path = _as_a_user(tmp_path, locked, ["-c", code])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(says.format(path=path)), done.stdout


def test_an_empty_store_says_to_start_the_service(tmp_path):
    with Store(tmp_path / "e.sqlite") as empty, pytest.raises(StoreReadError, match="serve"):
        latest_window(empty, SENSORS, 3)


def test_stored_forecasts_are_scored_against_the_readings(store):
    """A model forecasting 'value + 1' for every step: every scored error is exactly 1,
    except where the target was missing (not scored) or no forecast was stored."""
    horizon = 2
    issued = np.arange(0, 9) * STEP + T0  # forecasts issued at ticks 0..8
    yhat = np.empty((len(issued), horizon, 3), np.float32)  # [k, h, node]
    for k in range(len(issued)):
        for h in range(horizon):
            yhat[k, h] = [10.0 * (k + h + 1) + j + 1.0 for j in range(3)]
    yhat[5, :, 0] = np.nan  # no stored forecast of a from tick 5
    ids = store.sensor_keys(SENSORS)
    store.write(
        Batch(
            forecasts=[
                ForecastRows.from_arrays("m", int(t), ids, yhat[k], yhat[k] - 2, yhat[k] + 2)
                for k, t in enumerate(issued)
            ]
        )
    )
    period = period_since(store, "30min")  # ticks 4..9
    panel, bt = stored_backtest(store, "m", SENSORS, period, horizon)
    assert panel.timestamps[0] == pd.Timestamp(T0 + 3 * STEP, unit="ms", tz="UTC")
    # scored: forecasts whose both targets lie in ticks 4..9: issued at 3..7
    np.testing.assert_array_equal(bt.forecast.origins, [0, 1, 2, 3, 4])
    pooled = bt.metrics["pooled"]["2"]
    expected_count = 5 * 2 * 3 - 1 - 2  # minus c's missing tick 4 and a's unstored pair
    assert pooled["count"] == expected_count
    assert pooled["mae"] == pytest.approx(1.0) and pooled["rmse"] == pytest.approx(1.0)
    assert bt.forecast.lower is not None and np.nanmax(bt.forecast.upper - yhat[3:8]) == 2.0
    # a model the store does not know: nothing scored, no crash
    _, none = stored_backtest(store, "unknown", SENSORS, period, horizon)
    assert none.n_windows == 0 and none.metrics["pooled"]["2"]["count"] == 0


def test_alerts_between_keeps_the_period_and_decodes_values(store):
    def alert(t: int, status: str) -> AlertRow:
        ts = pd.Timestamp(T0 + t * STEP, unit="ms", tz="UTC").to_pydatetime()
        message = AlertMessage(
            f"b:x@{t}", "b:x", status, "critical", "b", ts, 1.0, 50.0, 40.0, 60.0, 0.999, "x",
            ts, ts,
        )  # type: ignore[arg-type]  # fmt: skip
        return AlertRow(message.alert_id, status, "b:x", "critical", "b", T0 + t * STEP, "x",
                        0.999, encode_alert(message).decode())  # fmt: skip

    store.write(Batch(alerts=[alert(1, "firing"), alert(6, "firing"), alert(8, "resolved")]))
    got = alerts_between(store, period_since(store, "30min"))
    assert [(a.status, a.ts.minute) for a in got] == [("firing", 30), ("resolved", 40)]
    assert got[0].observed == 1.0 and got[0].expected == 50.0 and got[0].severity == "critical"
