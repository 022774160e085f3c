"""``roadcast tail``'s lines (flows.tail): every kind of record gets one clear line, and a
record that is not what its topic should hold is described, never raised."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import numpy as np
import pandas as pd
import pytest

from flows import tail
from flows.tail import describe, guess_role
from pipeline.kafka.dead_letters import dead_letter_headers
from pipeline.kafka.forecast_wire import ForecastEncoder
from pipeline.kafka.frames import FRAME_HEADER_VALUE, WIRE_HEADER, ForecastFrame
from pipeline.kafka.schema import AlertMessage, encode_alert, encode_readings_batch

TS = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
HEADERS = [(WIRE_HEADER, FRAME_HEADER_VALUE)]
V1 = (
    b'{"v":1,"model":"ar","sensor":"a","issued_at":"2024-05-01T08:00:00Z",'
    b'"targets":["2024-05-01T08:05:00Z"],"yhat":[50.0],"lo":null,"hi":null}'
)


def _alert() -> bytes:
    return encode_alert(
        AlertMessage(
            alert_id="a1", dedup_key="s1:interval", status="firing", severity="critical",
            sensor="s1", ts=TS, observed=12.0, expected=55.0, lo=40.0, hi=70.0, score=0.999,
            detector="interval", first_seen=TS, last_seen=TS, reason="12 below 40",
        )
    )  # fmt: skip


def test_each_kind_of_record_is_one_line_and_recognised_without_its_topic():
    alert = _alert()
    line = describe("alerts", alert, [])
    assert line == (
        "alert firing critical s1 interval at 2024-05-01T08:00:00+00:00 score 0.999: 12 below 40"
    )
    assert guess_role(alert, []) == "alerts"
    headers = dead_letter_headers("bad_json", "Expecting value", "roadcast.readings", 2, 17)
    letter = describe("dlq", b"{oops", headers)
    assert letter == (
        "dead letter bad_json from roadcast.readings[2]@17: Expecting value (5 bytes)"
    )
    assert guess_role(b"{oops", headers) == "dlq"
    batch = encode_readings_batch(TS, {"a": 1.5, "b": 2.0, "c": 3.0, "d": 4.0})
    assert describe(None, batch, []).startswith("readings 2024-05-01T08:00:00+00:00: 4 sensors")
    mean = np.array([[50.0, np.nan]], np.float32)
    frame = ForecastEncoder(("a", "b"), "v2").encode_rows(
        "ar", pd.Timestamp(TS), pd.Timedelta("5min"), mean
    )
    line = describe(None, frame.records[0][1], [(WIRE_HEADER, FRAME_HEADER_VALUE)])
    assert line == (
        "forecast v2 ar issued 2024-05-01T08:00:00Z: sensors 0-1 of 2, 1 steps of 5 min, "
        "no intervals; 1 published (1 without a finite forecast); step 1 mean 50"
    )


def test_records_that_are_not_what_they_should_be_are_described():
    assert describe("alerts", b'{"v": 1}', []).startswith("invalid alerts record: missing_field")
    assert describe("dlq", b"x", []) == (
        "invalid dlq record: missing_field: no error header: not a dead letter"
    )
    assert describe(None, b"[1, 2]", []) == "unrecognised record (6 bytes)"
    assert describe(None, None, []) == "unrecognised record (0 bytes)"
    # a role guessed from the content says so: a bad reading read as a frame
    guessed = describe(None, b"\x81\xa1v\xff", [])
    assert guessed.startswith("invalid forecasts record (a guess from its content"), guessed


def _frame(**changes) -> bytes:
    mean = np.array([[50.0, np.nan]], np.float32)
    encoded = ForecastEncoder(("a", "b"), "v2").encode_rows(
        "ar", pd.Timestamp(TS), pd.Timedelta("5min"), mean
    )
    frame = msgspec.msgpack.decode(encoded.records[0][1])
    frame.update(changes)
    return msgspec.msgpack.encode(frame)


GOOD = (
    "forecast v2 ar issued 2024-05-01T08:00:00Z: sensors 0-1 of 2, 1 steps of 5 min, "
    "no intervals; 1 published (1 without a finite forecast); step 1 mean 50"
)


@pytest.mark.parametrize(
    ("value", "headers", "line"),
    [
        (_frame(), [(WIRE_HEADER, "forecast-frame/\u00b2".encode())], "bad_version: header"),
        (_frame(), [(WIRE_HEADER, b"forecast-frame/" + b"9" * 5000)], "bad_version: header"),
        (_frame(), [*HEADERS, (WIRE_HEADER, b"forecast-frame/3")], "bad_version: conflicting"),
        (_frame(step_ms=10**15), HEADERS, "timestamp_out_of_range"),
        (_frame(step_ms=2**62), [], "timestamp_out_of_range"),
        (_frame(issued_at="yesterday"), HEADERS, "bad_timestamp"),
        (b"\x82\xa1v\x02\xa5model" + b"\x91" * 100_000 + b"\xc0", HEADERS, "bad_json"),
        (None, HEADERS, "bad_type: empty message"),
    ],
)
def test_hostile_forecast_records_are_one_invalid_line_each(value, headers, line):
    assert describe("forecasts", value, headers).startswith(f"invalid forecasts record: {line}")
    assert describe("forecasts", _frame(), HEADERS) == GOOD  # and the next record is shown


def test_a_record_that_breaks_a_decoder_is_one_line_and_tail_goes_on(monkeypatch):
    def broken(value, headers):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setitem(tail.DESCRIBE, "alerts", broken)
    line = describe("alerts", b"{}", [])
    assert line == "undecodable alerts record: RuntimeError: boom\\nsecond line"
    assert describe(None, b"[" * 100_000, []) == "unrecognised record (100000 bytes)"


def test_tail_counts_a_frame_without_building_its_messages(monkeypatch):
    def unexpected(self):
        raise AssertionError("messages() built")

    monkeypatch.setattr(ForecastFrame, "messages", unexpected)
    assert describe("forecasts", _frame(), HEADERS) == GOOD


def test_v1_records_are_recognised_as_the_decoder_recognises_them():
    expected = "forecast v1 ar sensor a issued 2024-05-01T08:00:00+00:00 1 steps yhat [50]"
    assert describe("forecasts", b" \n" + V1, []) == expected
    assert describe("forecasts", b"\xef\xbb\xbf" + V1, []) == expected  # a byte-order mark
    array = describe("forecasts", b"[1, 2]", [])
    assert array == "invalid forecasts record: bad_type: expected a JSON object, got array"


def test_a_record_never_prints_as_more_than_one_line():
    forged = "ar\n0@99 forged line\x1b[2J"
    line = describe("forecasts", _frame(model=forged), HEADERS)
    assert line == GOOD.replace(" ar ", " ar\\n0@99 forged line\\x1b[2J ")
    v1 = describe("forecasts", V1.replace(b'"ar"', b'"ar\\nforged"'), [])
    assert v1.startswith("forecast v1 ar\\nforged sensor a")


# Following: the broker check every half second instead of every 30 s of quiet.
_TAIL = "import flows.cli.tail as t; t.BROKER_CHECK_S = 0.5; from flows.cli import app; app()"


@pytest.mark.integration
def test_tail_says_in_one_line_when_its_topic_is_deleted_and_goes_on(
    kafka_settings, unique_topic, tmp_path
):
    """Tansu lists a deleted topic's partition as ending at 0 while the client keeps its
    metadata: tail said nothing, for ever."""
    import signal
    import subprocess
    import sys

    from kafka.admin import NewTopic

    from pipeline.kafka.clients import make_admin, make_producer
    from tests.processes import default_sigint
    from tests.waiting import WAIT_S, wait_until

    topic = unique_topic("deleted")
    admin = make_admin(kafka_settings)
    try:
        admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        admin.close()
    producer = make_producer(kafka_settings)
    try:
        producer.send(topic, b"before").get(timeout=WAIT_S)
    finally:
        producer.close()
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    command = ["tail", topic, "--bootstrap", kafka_settings.bootstrap_servers, "--from-beginning"]
    with out.open("w") as stdout, err.open("w") as stderr:
        tail_proc = subprocess.Popen([sys.executable, "-c", _TAIL, *command], stdout=stdout,
                                     stderr=stderr, preexec_fn=default_sigint)  # fmt: skip
    try:
        wait_until(lambda: "0@0 " in out.read_text(), what="the first record")
        admin = make_admin(kafka_settings)
        try:
            admin.delete_topics([topic])
        finally:
            admin.close()
        wait_until(lambda: "went back" in err.read_text(), what="the line", details=err.read_text)
        assert tail_proc.poll() is None  # still following
    finally:
        tail_proc.send_signal(signal.SIGINT)
        try:
            tail_proc.wait(timeout=WAIT_S)
        finally:
            if tail_proc.poll() is None:
                tail_proc.kill()
                tail_proc.wait()
    assert tail_proc.returncode == 0, err.read_text()
    (line,) = err.read_text().splitlines()  # said once
    assert line == (
        f"warning: topic {topic!r} went back on {kafka_settings.bootstrap_servers} (0 ends at "
        "0, read to 1): it was deleted, or deleted and created again, or the broker restarted "
        "empty; tail goes on from the partitions' start (Ctrl-C to stop)"
    )


def test_large_values_are_shown_with_the_digits_that_tell_them_apart():
    """A meter's forecast printed as yhat [1e+06 1e+06] lo [1e+06 1e+06] hi [1e+06 1e+06]."""
    record = (
        b'{"v":1,"model":"ar","sensor":"meter","issued_at":"2024-11-05T22:00:00Z",'
        b'"targets":["2024-11-05T22:15:00Z","2024-11-05T22:30:00Z"],'
        b'"yhat":[1000123.5,1000131.2],"lo":[1000121.0,1000128.0],"hi":[1000126.0,1000134.0]}'
    )
    line = describe("forecasts", record, [])
    assert line.endswith("yhat [1000123.5 1000131.2] lo [1000121 1000128] hi [1000126 1000134]"), (
        line
    )
    reading = encode_readings_batch(TS, {"meter": 123456789.0})
    assert describe(None, reading, []).endswith(" 123456789.0")  # as the record has it
