"""Hostile input to the scheduled flows and their commands (``roadcast deploy``, ``roadcast
status``, ``report_flow``, ``forecast_flow``, ``drift_flow``): a Prefect server that refuses
or never answers, unusable output paths, corrupt stores, options out of range. Each is
refused with one line naming what to fix, before anything is written."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner, Result

from flows.cli import app
from pipeline.drift import DriftConfig
from pipeline.service.store import Store, StoreError
from pipeline.service.store_reads import StoreReadError
from pipeline.service.store_rows import Batch, ForecastRows, ReadingRows, TickRow
from tests.service_support import make_world

STEP = 300_000  # 5 minutes, in ms
T0 = int(pd.Timestamp("2024-03-04T00:00Z").value // 1_000_000)
SENSORS = ("a", "b", "c")


def filled_store(path: Path, ticks: int = 12, *, forecasts_of: str | None = None) -> Path:
    """A store of ``ticks`` closed 5-minute ticks of sensors a, b, c; with ``forecasts_of``,
    that model's 3-step forecasts issued at every tick."""
    with Store(path, durable=False) as store:
        ids = store.sensor_keys(list(SENSORS))
        rows = [(ids[j], T0 + t * STEP, 50.0 + t + j) for t in range(ticks) for j in range(3)]
        sid, ts, val = (np.asarray(c) for c in zip(*rows, strict=True))
        batch = Batch(
            readings=[
                ReadingRows(
                    sid.astype(np.int64), ts.astype(np.int64), val.astype(np.float32),
                    np.zeros(len(sid), np.int64),
                )
            ],
            ticks=[TickRow(T0 + t * STEP, 3, "complete", 0, 1.0) for t in range(ticks)],
            state={"tick_ms": STEP},
        )  # fmt: skip
        if forecasts_of is not None:
            mean = np.full((3, 3), 50.0, np.float32)  # [horizon, node]
            for t in range(ticks):
                rows_t = ForecastRows.from_arrays(forecasts_of, T0 + t * STEP, ids, mean)
                batch.forecasts.append(rows_t)
        store.write(batch)
    return path


def corrupt_store(kind: str, path: Path) -> Path:
    """A file at ``path`` that is no roadcast store: random bytes, or another program's
    SQLite database."""
    if kind == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(5000))
    else:
        import sqlite3

        db = sqlite3.connect(path)
        db.execute("CREATE TABLE ticks (x)")
        db.commit()
        db.close()
    return path


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Persistence and AR bundles of a tiny simulated network."""
    return make_world(tmp_path_factory.mktemp("hostile") / "bundles").bundles


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens there once closed


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """A TCP server that accepts connections and never answers; yields its API URL."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                accepted.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/api"
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        server.close()


def _serve(url: str) -> Result:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}):
        return CliRunner().invoke(app, ["deploy", "--serve"])


# --------------------------------------------------------------------------- deploy


def test_deploy_serve_names_a_prefect_server_that_refuses() -> None:
    url = f"http://127.0.0.1:{_free_port()}/api"
    result = _serve(url)
    assert result.exit_code == 2, result.output
    assert f"PREFECT_API_URL={url} did not answer its health check" in result.output
    assert "Traceback" not in result.output and "unexpected" not in result.output


def test_train_names_a_prefect_server_that_refuses(tmp_path, monkeypatch) -> None:
    url = f"http://127.0.0.1:{_free_port()}/api"
    monkeypatch.setenv("PREFECT_API_URL", url)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}):
        result = CliRunner().invoke(
            app,
            ["train", "simulated:sensors=3,days=1", "--models", "persistence", "--seeds", "1",
             "--out", str(tmp_path / "out"), "--no-progress"],
        )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert f"PREFECT_API_URL={url} did not answer its health check" in result.output
    assert "unexpected" not in result.output and not (tmp_path / "out").exists()


def test_deploy_serve_gives_up_on_a_server_that_never_answers(monkeypatch) -> None:
    import flows.deploy

    monkeypatch.setattr(flows.deploy, "HEALTH_TIMEOUT_S", 1.0)
    with silent_server() as url:
        result = _serve(url)
    assert result.exit_code == 2, result.output
    assert f"PREFECT_API_URL={url} did not answer" in result.output
    assert "no answer within 1 s" in result.output


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("", "a file path is needed"),
        ("  ", "a file path is needed"),
        ("x" * 300 + ".yaml", "File name too long"),
    ],
)
def test_deploy_write_yaml_refuses_a_path_it_cannot_write(
    path: str, message: str, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["deploy", "--write-yaml", path])
    assert result.exit_code == 2, result.output
    assert "--write-yaml" in result.output and message in result.output
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- status


def test_status_takes_a_last_beyond_sqlite_integers_as_every_tick(tmp_path: Path) -> None:
    store = filled_store(tmp_path / "s.sqlite")
    result = CliRunner().invoke(
        app, ["status", "--store", str(store), "--last", "99999999999999999999"]
    )
    assert result.exit_code == 0, result.output
    assert "Overflow" not in result.output


@pytest.mark.parametrize(("last", "code"), [("6h", 0), ("0", 0), ("90", 0), ("1 fortnight", 2)])
def test_status_takes_a_span_or_a_tick_count_and_refuses_what_is_neither(
    tmp_path: Path, last: str, code: int
) -> None:
    store = filled_store(tmp_path / "s.sqlite")
    result = CliRunner().invoke(app, ["status", "--store", str(store), "--last", last])
    assert result.exit_code == code, result.output


def test_status_of_a_store_without_ticks_shows_no_nan_latency(tmp_path: Path) -> None:
    Store(tmp_path / "s.sqlite").close()
    result = CliRunner().invoke(app, ["status", "--store", str(tmp_path / "s.sqlite")])
    assert result.exit_code == 0, result.output
    assert "nan" not in result.output and "none yet" in result.output


# --------------------------------------------------------------------------- drift rule


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ratio": float("inf")}, r"drift ratio must be a finite number above 1 .*got inf"),
        ({"ratio": float("nan")}, r"drift ratio must be .*ROADCAST_DRIFT_RATIO.*got nan"),
        ({"baseline_ratio": -2.0}, r"drift baseline_ratio must be .*got -2.0"),
        ({"min_count": 0}, r"drift min_count must be from 1 to 10,000,000 .*got 0"),
        ({"window_ticks": 10**20}, r"drift window_ticks must be from 1 to .*DRIFT_WINDOW_TICKS"),
    ],
)
def test_drift_config_names_the_threshold_out_of_range(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DriftConfig(**options)


# --------------------------------------------------------------------------- flows


@pytest.mark.parametrize("kind", ["random bytes", "another schema"])
@pytest.mark.parametrize("which", ["report", "forecast", "drift"])
def test_flows_name_a_store_that_is_not_a_roadcast_store(
    which: str, kind: str, bundles: Path, prefect_harness, tmp_path: Path
) -> None:
    from flows.drift_flow import drift_flow
    from flows.forecast_flow import forecast_flow
    from flows.report_flow import report_flow

    store = str(corrupt_store(kind, tmp_path / "store.sqlite"))
    run = {
        "report": lambda: report_flow(
            store=store, models_dir=str(bundles), out=str(tmp_path / "o")
        ),
        "forecast": lambda: forecast_flow(
            store=store, models_dir=str(bundles), publish_to_kafka=False
        ),
        "drift": lambda: drift_flow(store=store, models_dir=str(bundles)),
    }[which]
    with pytest.raises(StoreError, match=rf"{store} is not a roadcast store"):
        run()
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("which", ["report", "forecast"])
def test_flows_refuse_models_of_another_network_than_the_store_s(
    which: str, bundles: Path, prefect_harness, tmp_path: Path
) -> None:
    from flows.forecast_flow import forecast_flow
    from flows.report_flow import report_flow

    store = filled_store(tmp_path / "s.sqlite")  # sensors a, b, c; the bundles have others
    run = {
        "report": lambda: report_flow(
            store=str(store), models_dir=str(bundles), out=str(tmp_path / "o")
        ),
        "forecast": lambda: forecast_flow(
            store=str(store), models_dir=str(bundles), publish_to_kafka=False
        ),
    }[which]
    with pytest.raises(StoreReadError, match=r"forecast another network than the store's"):
        run()
    with Store(store, readonly=True) as reading:
        assert sorted(reading.sensor_names().values()) == sorted(SENSORS)
        assert reading.count("forecasts") == 0
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"since": ""}, r"since='' is neither a duration"),
        ({"since": "nan"}, r"since='nan' is neither a duration"),
        ({"since": "2999-01-01"}, r"since='2999-01-01' is outside the years"),
        ({"since": "0h"}, r"since='0h': the duration must be positive"),
        # under the store's millisecond: taken, then called store damage as it was read
        ({"since": "1ns"}, r"since='1ns': the duration must be at least 1 ms"),
        ({"since": "24"}, r"since='24' has no unit: write 24h or 24d"),
        ({"since": "1000000d"}, r"since='1000000d' is longer than a duration can be"),
        ({"horizon": 0}, r"horizon must be at least 1 step, got 0"),
        ({"horizon": -1}, r"horizon must be at least 1 step, got -1"),
    ],
)
def test_report_flow_refuses_options_out_of_range(
    options: dict, message: str, prefect_harness, tmp_path: Path
) -> None:
    from flows.report_flow import report_flow

    store = filled_store(tmp_path / "s.sqlite")
    with pytest.raises(ValueError, match=message):
        report_flow(
            store=str(store), models_dir=str(tmp_path / "none"), out=str(tmp_path / "o"), **options
        )
    assert not (tmp_path / "o").exists()


def test_report_flow_refuses_a_horizon_longer_than_the_period(
    prefect_harness, tmp_path: Path
) -> None:
    from flows.report_flow import report_flow

    store = filled_store(tmp_path / "s.sqlite", forecasts_of="ar")
    with pytest.raises(
        StoreReadError,
        match=r"horizon=1000000000000 steps is longer than the report.s period \(12 closed",
    ):
        report_flow(
            store=str(store), models_dir=str(tmp_path / "none"), horizon=10**12,
            out=str(tmp_path / "o"),
        )  # fmt: skip
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("where", ["file", "under a file"])
def test_report_flow_refuses_an_output_folder_that_is_a_file(
    where: str, prefect_harness, tmp_path: Path
) -> None:
    from flows.report_flow import report_flow

    store = filled_store(tmp_path / "s.sqlite")
    (tmp_path / "taken").write_text("mine\n")
    out = tmp_path / "taken" if where == "file" else tmp_path / "taken" / "report"
    with pytest.raises(ValueError, match=rf"out='{out}' is blank, a file or under one"):
        report_flow(store=str(store), models_dir=str(tmp_path / "none"), out=str(out))
    assert (tmp_path / "taken").read_text() == "mine\n"


@pytest.mark.parametrize("target", ["train output", "bundles"])
def test_report_flow_refuses_to_write_over_a_models_folder(
    target: str, bundles: Path, prefect_harness, tmp_path: Path
) -> None:
    """It replaced the training report (report.html, report.md, figures) without a word."""
    import shutil

    from flows.report_flow import report_flow

    store = filled_store(tmp_path / "s.sqlite")
    models = tmp_path / "models"
    shutil.copytree(bundles, models / "bundles")
    (models / "report.html").write_text("training report\n")
    out = models if target == "train output" else models / "bundles"
    with pytest.raises(ValueError, match=rf"out='{out}' holds trained models"):
        report_flow(store=str(store), models_dir=str(models), out=str(out))
    assert (models / "report.html").read_text() == "training report\n"
    assert not (out / "live_metrics.json").exists()


def test_report_flow_leaves_the_folder_as_it_was_when_a_write_fails(
    prefect_harness, tmp_path: Path, monkeypatch
) -> None:
    import flows.report_flow
    from flows.reporting.render import write_report

    store = filled_store(tmp_path / "s.sqlite")
    out = tmp_path / "report"
    report_flow = flows.report_flow.report_flow
    report_flow(store=str(store), models_dir=str(tmp_path / "none"), out=str(out))
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def disk_full(folder: str | Path, report: object) -> object:
        write_report(folder, report)  # type: ignore[arg-type]
        raise PermissionError(13, "no room left", str(folder))

    monkeypatch.setattr(flows.report_flow, "write_report", disk_full)
    with pytest.raises(PermissionError):
        report_flow(store=str(store), models_dir=str(tmp_path / "none"), out=str(out))
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(os.listdir(out)) == sorted({str(p).split(os.sep)[0] for p in before})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"topic": "bad topic!"}, r"topic_readings \(as given\): 'bad topic!' is not a legal"),
        ({"topic": ""}, r"topic_readings \(as given\): the topic name is empty"),
        ({"speedup": -1.0}, r"speedup must be a finite number"),
        ({"speedup": float("nan")}, r"speedup must be a finite number"),
        ({"limit": -5}, r"limit must be >= 0 steps"),
    ],
)
def test_replay_flow_names_a_bad_parameter_before_it_connects(
    options: dict, message: str, prefect_harness
) -> None:
    """A bad topic was sent to (or '' fell back to the default); the others were named
    only after the connection to Kafka, or not at all when no broker answered."""
    from flows.replay_flow import replay_flow
    from pipeline.settings import SettingsError

    with pytest.raises((ValueError, SettingsError), match=message):
        replay_flow(data="simulated:sensors=3,days=1", bootstrap=f"127.0.0.1:{_free_port()}",
                    **options)  # fmt: skip


def test_a_damaged_store_is_named_damaged_not_foreign(tmp_path: Path) -> None:
    """A roadcast store cut to half its size was called "not a roadcast store"."""
    from pipeline.service.store_reads import check_store

    store = filled_store(tmp_path / "store.sqlite", ticks=200, forecasts_of="ar")
    whole = store.read_bytes()
    store.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(StoreError, match=rf"the store {store} is damaged .*malformed.*backup"):
        check_store(store)
