"""Hostile input to the forecast wire v2 decoder, ``roadcast tail`` and the scheduled
flows' deployment parameters: each is refused or shown in one clear line, never taken
for something else."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import msgspec
import numpy as np
import pandas as pd
import pytest

from flows.deploy import DeployError, customised
from flows.tail import describe
from pipeline.kafka.forecast_wire import ForecastEncoder
from pipeline.kafka.frames import FRAME_HEADER_VALUE, WIRE_HEADER, decode_forecast_frame
from pipeline.kafka.schema import SchemaError

T0 = pd.Timestamp("2024-05-01 08:00", tz="UTC")
FREQ = pd.Timedelta("5min")
HEADERS = [(WIRE_HEADER, FRAME_HEADER_VALUE)]


def _frame(**changes: object) -> bytes:
    mean = np.full((2, 3), 50.0, np.float32)
    encoded = ForecastEncoder(("a", "b", "c"), "v2").encode_rows("ar", T0, FREQ, mean)
    frame = msgspec.msgpack.decode(encoded.records[0][1])
    frame.update(changes)
    return msgspec.msgpack.encode(frame)


# --------------------------------------------------------------------------- wire v2


@pytest.mark.parametrize("prefix", [b"", b" \n", b"\xef\xbb\xbf"])
def test_a_v1_record_sent_with_the_frame_header_is_named_as_json(prefix: bytes) -> None:
    v1 = ForecastEncoder(("a",)).encode_rows("ar", T0, FREQ, np.ones((2, 1), np.float32))
    with pytest.raises(SchemaError, match="the value is JSON text, not MessagePack") as err:
        decode_forecast_frame(prefix + v1.records[0][1], HEADERS)
    assert err.value.reason == "bad_json"
    assert "a v1 forecast sent with the header roadcast-wire: forecast-frame/2" in str(err.value)
    with pytest.raises(SchemaError, match=r"not a forecast frame \(MessagePack\)"):
        decode_forecast_frame(b"\x93\x01\x02\x03", HEADERS)  # other bytes: msgspec's reason


def test_a_network_without_sensors_publishes_nothing_in_either_wire() -> None:
    mean = np.empty((3, 0), np.float32)
    for wire in ("v1", "v2"):
        encoded = ForecastEncoder((), wire).encode_rows("ar", T0, FREQ, mean, mean, mean)  # type: ignore[arg-type]
        assert encoded.records == [] and len(encoded.columns) == 0, wire


# --------------------------------------------------------------------------- tail


@pytest.mark.parametrize(
    ("role", "value", "headers"),
    [
        ("forecasts", _frame(model="m" * 200_000), HEADERS),
        (None, _frame(model="m\n" * 100_000), HEADERS),
        (
            "forecasts",
            b'{"v":1,"model":"' + b"m" * 500_000 + b'","sensor":"a","issued_at":'
            b'"2024-01-01T00:00:00Z","targets":["2024-01-01T00:05:00Z"],"yhat":[1]}',
            [],
        ),
    ],
)
def test_a_record_with_a_huge_field_is_one_line_of_bounded_length(
    role: str | None, value: bytes, headers: list[tuple[str, bytes]]
) -> None:
    line = describe(role, value, headers)
    assert line.startswith("forecast v") and "\n" not in line
    assert len(line) < 1100 and line.endswith(" more characters)")


def test_a_short_line_is_not_cut() -> None:
    line = describe("forecasts", _frame(), HEADERS)
    assert line.endswith("step 1 mean 50") and "more characters" not in line


# --------------------------------------------------------------------------- deploy


@pytest.mark.parametrize(
    ("crons", "params", "message"),
    [
        (["forecast=* * * * * * *"], [], "has seven fields; Prefect reads the sixth as seconds"),
        (["train=0 4 * * * * 2030"], [], "has seven fields"),
        ([], ["forecast.bootstrap=localhost"], "expected HOST:PORT"),
        ([], ["replay.bootstrap=kafka:99999"], "port 99999 of 'kafka:99999' is outside 1-65535"),
        ([], ["replay.speedup=-1"], "speedup must be a finite number: 0 (as fast as possible)"),
        ([], ["replay.limit=-3"], "limit must be >= 0 steps, got -3"),
        ([], ["replay.data=nosuch:x"], "unknown data set 'nosuch:x'"),
        ([], ['train.data=""'], "unknown data set ''"),
        (
            [],
            ["train.data=npz:/data/PEMS04.npz,feature=1,zero=missing"],
            "unknown option 'zero'; known: key, feature, start, freq, zeros",
        ),
        ([], ["replay.data=csv:/data/flow.csv,header=maybe"], "header='maybe'; use header=none"),
        ([], ["train.adjacency=/data/od.csv,kind=counts"], "kind='counts'; use kind=weights"),
        ([], ["train.device=quantum"], "unknown device 'quantum'; use 'auto', 'cpu', 'cuda'"),
    ],
)
def test_deploy_refuses_what_every_run_would_refuse(
    crons: list[str], params: list[str], message: str
) -> None:
    with pytest.raises(DeployError) as err:
        customised(crons=crons, params=params)
    assert message in str(err.value)
    option = "--cron" if crons else "--param"
    assert str(err.value).startswith(option) and "\n" not in str(err.value)


def test_deploy_takes_values_the_workers_may_run() -> None:
    specs = {
        s.name: s
        for s in customised(
            params=[
                "forecast.bootstrap=kafka-1:9092,kafka-2:9092",
                "replay.limit=0",
                "replay.data=simulated:sensors=3,hours=1",
                "train.device=cuda:1",  # the worker's GPUs, not this machine's
                "train.data=npz:/data/PEMS04.npz,feature=2,start=2018-01-01,freq=5",
                "train.adjacency=/data/PEMS04.csv,kind=distances",
            ]
        )
    }
    assert specs["every-5-minutes"].parameters == {"bootstrap": "kafka-1:9092,kafka-2:9092"}
    assert specs["backfill"].parameters["limit"] == 0
    assert specs["weekly"].parameters["device"] == "cuda:1"


# --------------------------------------------------------------------------- report


def old_store(path: Path, sensors: Sequence[str], ticks: int = 12) -> Path:
    """A store of ``ticks`` closed 5-minute ticks of ``sensors``, the last at
    2024-03-04 00:55 UTC."""
    from pipeline.service.store import Store
    from pipeline.service.store_rows import Batch, ReadingRows, TickRow

    step, t0 = 300_000, int(pd.Timestamp("2024-03-04T00:00Z").value // 1_000_000)
    with Store(path, durable=False) as store:
        ids = np.asarray(store.sensor_keys(list(sensors)), np.int64)
        stamps = t0 + step * np.arange(ticks, dtype=np.int64)
        rows = ReadingRows(
            np.tile(ids, ticks),
            np.repeat(stamps, len(ids)),
            np.full(ticks * len(ids), 50.0, np.float32),
            np.zeros(ticks * len(ids), np.int64),
        )
        ticks_rows = [TickRow(int(t), len(ids), "complete", 0, 1.0) for t in stamps]
        store.write(Batch(readings=[rows], ticks=ticks_rows, state={"tick_ms": step}))
    return path


def test_a_stale_store_is_called_stale_and_a_recent_one_is_not() -> None:
    from flows.report_flow import stale_note

    last = pd.Timestamp("2024-03-04T00:55Z")
    note = stale_note(last, 5.0, last + pd.Timedelta(days=3, hours=2))
    assert note is not None
    assert note.startswith("the store's newest closed tick, 2024-03-04 00:55 UTC, is 3.1 days old")
    assert note.endswith("no recent readings (is roadcast serve running and fed?)")
    assert "5.0 hours old" in (stale_note(last, 5.0, last + pd.Timedelta(hours=5)) or "")
    assert stale_note(last, 5.0, last + pd.Timedelta(minutes=50)) is None
    assert stale_note(last, 60.0, last + pd.Timedelta(hours=11)) is None  # hourly ticks


def test_the_report_of_a_store_without_recent_ticks_says_so(
    prefect_harness: None, tmp_path: Path
) -> None:
    from flows.report_flow import report_flow
    from tests.test_flows_hostile import filled_store

    store = filled_store(tmp_path / "s.sqlite", forecasts_of="ar")  # ticks of March 2024
    out = tmp_path / "report"
    result = report_flow(
        store=str(store), models_dir=str(tmp_path / "none"), out=str(out), horizon=3
    )
    assert result.get("stale") is not None and "2024-03-04 00:55 UTC" in result["stale"]
    assert f"- **stale**: {result['stale']}" in (out / "report.md").read_text()


def test_the_drift_watch_over_a_store_without_recent_ticks_says_so(
    prefect_harness: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from flows.drift_flow import drift_flow
    from tests.service_support import make_world

    world = make_world(tmp_path / "bundles")
    store = old_store(tmp_path / "s.sqlite", world.live.sensor_ids)
    drift_flow(store=str(store), models_dir=str(world.bundles))
    warned = [r.getMessage() for r in caplog.records if "newest closed tick" in r.getMessage()]
    assert len(warned) == 1 and "2024-03-04 00:55 UTC, is " in warned[0]
    assert warned[0].endswith("; the verdicts judge those old ticks")


# --------------------------------------------------------------------------- tail, live

_TAIL = "import flows.cli.tail as t; t.BROKER_CHECK_S = 0.5; from flows.cli import app; app()"


@pytest.mark.integration
def test_tail_says_when_the_broker_stops_answering_and_when_it_answers_again(
    tmp_path: Path,
) -> None:
    import signal
    import subprocess
    import sys

    from pipeline.kafka.broker import EmbeddedBroker, free_port
    from pipeline.kafka.clients import ensure_topics, make_producer
    from pipeline.settings import load_settings
    from tests.waiting import WAIT_S, wait_until

    broker = EmbeddedBroker(
        free_port(), log_path=tmp_path / "tansu.log", handle_sigterm=False, startup_timeout_s=WAIT_S
    )
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with broker, out.open("w") as stdout, err.open("w") as stderr:
        settings = load_settings(bootstrap_servers=broker.bootstrap)
        ensure_topics(settings, topics=[settings.topic_readings])
        producer = make_producer(settings)
        producer.send(
            settings.topic_readings, b'{"v":1,"sensor":"a","ts":"2024-01-01T00:00:00Z","value":1}'
        )
        producer.flush(WAIT_S)
        producer.close()
        command = ["tail", "--bootstrap", broker.bootstrap, "readings", "--from-beginning"]
        tail = subprocess.Popen(
            [sys.executable, "-c", _TAIL, *command], stdout=stdout, stderr=stderr
        )
        try:
            wait_until(lambda: " reading a " in out.read_text(), what="the record")
            broker.stop()
            wait_until(lambda: "did not answer within" in err.read_text(), what="the warning")
            broker.start()
            wait_until(lambda: "answers again" in err.read_text(), what="the broker back")
        finally:
            tail.send_signal(signal.SIGINT)
            tail.wait(WAIT_S)
    lines = err.read_text().splitlines()
    (down,) = [line for line in lines if "did not answer within" in line]  # said once
    (back,) = [line for line in lines if "answers again" in line]
    assert lines.index(down) < lines.index(back) and tail.returncode == 0
    assert down.startswith(f"warning: the broker at {broker.bootstrap} did not answer within")
    assert down.endswith("tail goes on when it does (Ctrl-C to stop)")
    assert back.startswith(f"the broker at {broker.bootstrap} answers again (after ")


# --------------------------------------------------------------------------- registry


def _rename_model(bundle: Path, model: str) -> None:
    """Give ``bundle``'s config another model name and re-hash its manifest, as a crafted
    or carelessly edited bundle would."""
    import hashlib
    import json

    config = bundle / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "model": model}))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["config.json"] = hashlib.sha256(config.read_bytes()).hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def test_a_bundle_whose_model_name_is_a_path_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    """Its name became the folder ``versions/../../escape``: the import wrote the version
    outside the registry, deleted the bundle and left a serving set it could not read."""
    import shutil

    from typer.testing import CliRunner

    from flows.cli import app
    from tests.registry_support import make_registry

    reg = make_registry(tmp_path / "reg", 5)
    bundles = tmp_path / "legacy" / "bundles"
    shutil.copytree(reg.a.path, bundles / "ar", ignore=shutil.ignore_patterns("version.json"))
    _rename_model(bundles / "ar", "../../escape")
    result = CliRunner().invoke(app, ["models", "promote", "ar", "--models", str(bundles)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "config.json field 'model' must be a model name" in result.output
    assert "'../../escape'" in result.output
    assert sorted(p.name for p in (tmp_path / "legacy").iterdir()) == ["bundles"]
    assert (bundles / "ar" / "config.json").is_file() and not (bundles / "serving.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["a" * 10_000], "model name 'aaaa"),
        (["../ar"], "model name '../ar' is not a plain name"),
        (["ar/x@first"], "model name 'ar/x' is not a plain name"),
        (["ar", "--champion", "c" * 1_000], "model name 'cccc"),
    ],
)
def test_promote_refuses_a_model_name_that_is_no_folder_name_in_one_short_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    from typer.testing import CliRunner

    from flows.cli import app
    from tests.registry_support import make_registry

    bundles = make_registry(tmp_path, 5).bundles
    before = (bundles / "serving.json").read_text()
    result = CliRunner().invoke(
        app, ["models", "promote", *args, "--models", str(bundles)], env={"COLUMNS": "400"}
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert message in result.output and len(result.output) < 2_000
    assert (bundles / "serving.json").read_text() == before


def test_a_serving_set_naming_an_overlong_model_is_called_unreadable(tmp_path: Path) -> None:
    """It read as a set whose versions were then looked up on disk: ``[Errno 36] File name
    too long`` from every command, naming no file to fix."""
    import json

    from pipeline.model_dir import BundleDirError, discover_bundles
    from tests.registry_support import make_registry

    bundles = make_registry(tmp_path, 5).bundles
    path = bundles / "serving.json"
    serving = json.loads(path.read_text())
    serving["models"]["x" * 300] = "y" * 300
    path.write_text(json.dumps(serving))
    with pytest.raises(BundleDirError) as err:
        discover_bundles(bundles)
    assert str(err.value).startswith(f"{path} is unreadable ('models' must map model names")


# --------------------------------------------------------------------------- endpoints


def test_a_client_trickling_its_request_is_cut_off_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One byte at a time, each within the idle timeout, held a thread and one of the
    endpoints' slots for as long as the client liked: 64 such clients took /healthz off
    the air, and an orchestrator would restart a service that forecast fine."""
    import socket
    import time

    from pipeline.service import health as health_module
    from pipeline.settings import Settings

    monkeypatch.setattr(health_module, "CONNECTION_DEADLINE_S", 0.5, raising=False)
    endpoints = health_module.start_endpoints(
        Settings(metrics_host="127.0.0.1"), health=health_module.Health(60.0), port=0
    )
    request = b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 400
    cut = False
    try:
        with socket.create_connection(("127.0.0.1", endpoints.port)) as conn:
            for byte in request:  # 40 s and more at this pace: the deadline comes first
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    cut = True
                    break
                time.sleep(0.1)
    finally:
        endpoints.close()
    assert cut, "the server still read a request trickled for 40 s"


def test_clients_that_time_out_or_vanish_leave_no_traceback_on_stderr(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    import socket
    import struct

    from pipeline.service import health as health_module
    from pipeline.settings import Settings
    from tests.waiting import WAIT_S

    monkeypatch.setattr(health_module._QuietHandler, "timeout", 0.3)
    endpoints = health_module.start_endpoints(
        Settings(metrics_host="127.0.0.1"), health=health_module.Health(60.0), port=0
    )
    address = ("127.0.0.1", endpoints.port)
    try:
        with socket.create_connection(address, timeout=WAIT_S) as idle:
            idle.sendall(b"GET /healthz HTTP/1.1\r\n")
            assert idle.recv(1) == b""  # timed out and closed by the server
        reset = socket.create_connection(address, timeout=WAIT_S)
        reset.sendall(b"GET /healthz HTTP/1.1\r\n")
        reset.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        reset.close()
        import httpx

        assert httpx.get(f"http://{address[0]}:{address[1]}/healthz", timeout=WAIT_S).is_success
    finally:
        endpoints.close()
    assert "Traceback" not in capfd.readouterr().err
