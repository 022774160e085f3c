"""``roadcast tail``'s lines (flows.tail): every kind of record gets one clear line, and a
record that is not what its topic should hold is described, never raised."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd

from flows.tail import describe, guess_role
from pipeline.kafka.dead_letters import dead_letter_headers
from pipeline.kafka.forecast_wire import ForecastEncoder
from pipeline.kafka.frames import FRAME_HEADER_VALUE, WIRE_HEADER
from pipeline.kafka.schema import AlertMessage, encode_alert, encode_readings_batch

TS = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)


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
