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
                "train.data=csv:/data/flow.csv",
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
