"""The wire schema: every bad input gets one typed error with a reason; valid messages
round-trip exactly; arbitrary bytes never escape as another exception."""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from models.forecasters.base import Forecast
from pipeline.kafka.schema import (
    FLOAT32_MAX,
    MAX_MESSAGE_BYTES,
    REASONS,
    TS_MAX,
    TS_MIN,
    AlertMessage,
    ForecastMessage,
    Reading,
    SchemaError,
    decode_alert,
    decode_forecast,
    decode_readings,
    decode_readings_partial,
    encode_alert,
    encode_forecast,
    encode_reading,
    encode_readings_batch,
    forecast_messages,
    format_timestamp,
    parse_timestamp,
)

T0 = datetime(2012, 3, 1, tzinfo=UTC)


def reading_bytes(**fields: object) -> bytes:
    msg = {"v": 1, "sensor": "773869", "ts": "2012-03-01T00:05:00Z", "value": 64.375}
    msg.update(fields)
    return json.dumps({k: v for k, v in msg.items() if v is not ...}).encode()


def reason_of(raw: bytes | str | None, decode=decode_readings) -> str:
    with pytest.raises(SchemaError) as info:
        decode(raw)
    assert info.value.reason in REASONS
    return info.value.reason


# --------------------------------------------------------------------------- readings


def test_single_reading_decodes() -> None:
    [r] = decode_readings(reading_bytes())
    assert r == Reading("773869", datetime(2012, 3, 1, 0, 5, tzinfo=UTC), 64.375)
    assert r.ts.tzinfo is UTC and r.v == 1


def test_batch_reading_decodes_in_message_order() -> None:
    raw = b'{"v":1,"ts":"2012-03-01T00:00:00Z","values":{"b":1.5,"a":2,"7":-3e2}}'
    readings = decode_readings(raw)
    assert [(r.sensor, r.value) for r in readings] == [("b", 1.5), ("a", 2.0), ("7", -300.0)]
    assert {r.ts for r in readings} == {T0}


def test_empty_batch_is_an_empty_list() -> None:
    assert decode_readings(b'{"v":1,"ts":"2012-03-01T00:00:00Z","values":{}}') == []


@pytest.mark.parametrize("ts", ["2016-12-31T23:59:60Z", "2016-12-31T23:59:60.5+00:00"])
def test_a_leap_second_is_refused_naming_it(ts: str) -> None:
    with pytest.raises(SchemaError, match=r"leap second \(:60\).*:59\.999") as refused:
        decode_readings(reading_bytes(ts=ts))
    assert refused.value.reason == "bad_timestamp"


def test_integer_sensor_ids_become_strings() -> None:
    [r] = decode_readings(reading_bytes(sensor=773869))
    assert r.sensor == "773869"


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2012-03-01T00:05:00Z", datetime(2012, 3, 1, 0, 5, tzinfo=UTC)),
        ("2012-03-01T00:05:00+00:00", datetime(2012, 3, 1, 0, 5, tzinfo=UTC)),
        ("2012-03-01T02:05:00+02:00", datetime(2012, 3, 1, 0, 5, tzinfo=UTC)),
        ("2012-02-29T16:05:00-08:00", datetime(2012, 3, 1, 0, 5, tzinfo=UTC)),
        ("2012-03-01T00:05:00.250Z", datetime(2012, 3, 1, 0, 5, 0, 250000, tzinfo=UTC)),
        ("2012-03-01t00:05:00z", datetime(2012, 3, 1, 0, 5, tzinfo=UTC)),  # RFC 3339 allows
    ],
)
def test_timestamps_are_converted_to_utc(ts: str, expected: datetime) -> None:
    [r] = decode_readings(reading_bytes(ts=ts))
    assert r.ts == expected
    assert r.ts.tzinfo is UTC
    assert r.ts.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "bad_json"),
        (b"not json", "bad_json"),
        (b'{"v":1,', "bad_json"),
        (b"\xff\xfe{}", "not_utf8"),
        (b"[" * 100_000, "bad_json"),
        (b"1" * 5000, "bad_json"),
        (b"[]", "bad_type"),
        (b'"text"', "bad_type"),
        (b"null", "bad_type"),
        (None, "bad_type"),
        (b" " * (MAX_MESSAGE_BYTES + 1), "too_large"),
        (b'{"v":1,"v":1,"sensor":"a","ts":"2012-03-01T00:00:00Z","value":1}', "duplicate_key"),
        (reading_bytes(v=...), "missing_field"),
        (reading_bytes(v=2), "bad_version"),
        (reading_bytes(v=0), "bad_version"),
        (reading_bytes(v="1"), "bad_version"),
        (reading_bytes(v=True), "bad_version"),
        (reading_bytes(v=1.0), "bad_version"),
        (reading_bytes(value=...), "missing_field"),
        (reading_bytes(sensor=...), "missing_field"),
        (reading_bytes(ts=...), "missing_field"),
        (reading_bytes(unit="mph"), "unknown_field"),
        (reading_bytes(value=None), "bad_type"),
        (reading_bytes(value=True), "bad_type"),
        (reading_bytes(value="64.3"), "bad_type"),
        (reading_bytes(value=[1.0]), "bad_type"),
        (reading_bytes(value=float("nan")), "non_finite"),
        (reading_bytes(value=float("inf")), "non_finite"),
        (reading_bytes(value=float("-inf")), "non_finite"),
        (reading_bytes(value=10**400), "non_finite"),
        (b'{"v":1,"sensor":"a","ts":"2012-03-01T00:00:00Z","value":1e999}', "non_finite"),
        (b'{"v":1,"sensor":"a","ts":"2012-03-01T00:00:00Z","value":-Infinity}', "non_finite"),
        (reading_bytes(ts="2012-03-01T00:00:00"), "no_timezone"),
        (reading_bytes(ts="2012-03-01"), "no_timezone"),
        (reading_bytes(ts="yesterday"), "bad_timestamp"),
        (reading_bytes(ts="2012-13-01T00:00:00Z"), "bad_timestamp"),
        (reading_bytes(ts="0001-01-01T00:00:00+01:00"), "timestamp_out_of_range"),
        (reading_bytes(ts="0001-01-01T00:00:00Z"), "timestamp_out_of_range"),
        (reading_bytes(ts="1677-09-21T00:12:43Z"), "timestamp_out_of_range"),
        (reading_bytes(ts="1699-12-31T23:59:59.999999Z"), "timestamp_out_of_range"),
        (reading_bytes(ts="2250-01-01T00:00:00Z"), "timestamp_out_of_range"),
        (reading_bytes(ts="2249-12-31T23:00:00-01:00"), "timestamp_out_of_range"),
        (reading_bytes(ts="2300-01-01T00:00:00Z"), "timestamp_out_of_range"),
        (reading_bytes(ts="9999-12-31T23:59:59-05:00"), "timestamp_out_of_range"),
        (reading_bytes(value=1e308), "value_out_of_range"),
        (reading_bytes(value=1e39), "value_out_of_range"),
        (reading_bytes(value=-3.5e38), "value_out_of_range"),
        (reading_bytes(value=10**39), "value_out_of_range"),
        (b'{"v":1,"ts":"2012-03-01T00:00:00Z","values":{"a":1,"b":-1e300}}', "value_out_of_range"),
        (b'{"v":1,"ts":"2300-01-01T00:00:00Z","values":{"a":1}}', "timestamp_out_of_range"),
        (reading_bytes(ts="2012-03-01T00:00:00Z" + " " * 100), "bad_timestamp"),
        (reading_bytes(ts="2012-03-01T00:00:00\x00Z"), "bad_timestamp"),  # fromisoformat took it
        (reading_bytes(ts="2012-03-01T00:00:00Z\x00"), "bad_timestamp"),
        (reading_bytes(ts="2012-03-01T00:00:00\u0661Z"), "bad_timestamp"),
        (reading_bytes(ts=1330560000), "bad_type"),
        (reading_bytes(sensor=""), "bad_sensor"),
        (reading_bytes(sensor=" 7781"), "bad_sensor"),
        (reading_bytes(sensor="x" * 201), "bad_sensor"),
        (reading_bytes(sensor="a\x00b"), "bad_sensor"),
        (reading_bytes(sensor="a\nb"), "bad_sensor"),
        (reading_bytes(sensor="77\u200b81"), "bad_sensor"),  # a zero-width space
        (reading_bytes(sensor="a\u2028b"), "bad_sensor"),  # a line separator
        (reading_bytes(sensor=True), "bad_type"),
        (reading_bytes(sensor=7.5), "bad_type"),
        (reading_bytes(sensor=None), "bad_type"),
        (b'{"v":1,"ts":"2012-03-01T00:00:00Z","values":[1,2]}', "bad_type"),
        (b'{"v":1,"ts":"2012-03-01T00:00:00Z","values":{"a":NaN}}', "non_finite"),
        (b'{"v":1,"ts":"2012-03-01T00:00:00Z","values":{"a":null}}', "bad_type"),
        (b'{"v":1,"ts":"2012-03-01T00:00:00Z","values":{"":1}}', "bad_sensor"),
        (b'{"v":1,"ts":"2012-03-01T00:00:00Z","values":{"a":1,"a":2}}', "duplicate_key"),
        (b'{"v":1,"values":{"a":1}}', "missing_field"),
        (b'{"v":1,"ts":"2012-03-01T00:00:00Z","values":{},"sensor":"a"}', "unknown_field"),
    ],
)
def test_bad_readings_give_their_reason(raw: bytes | None, reason: str) -> None:
    assert reason_of(raw) == reason


def test_the_supported_range_is_what_float32_and_nanosecond_clocks_hold() -> None:
    assert np.float32(FLOAT32_MAX) == np.finfo(np.float32).max
    edge = [FLOAT32_MAX, -FLOAT32_MAX, 1e-45, -0.0]
    for value in edge:  # the edge itself decodes, and stays finite as float32
        [r] = decode_readings(reading_bytes(value=value))
        assert np.isfinite(np.float32(r.value))
    assert reason_of(reading_bytes(value=np.nextafter(FLOAT32_MAX, np.inf))) == (
        "value_out_of_range"
    )
    first, last = "1700-01-01T00:00:00Z", "2249-12-31T23:59:59.999999Z"
    assert decode_readings(reading_bytes(ts=first))[0].ts == TS_MIN
    assert decode_readings(reading_bytes(ts=last))[0].ts == TS_MAX - timedelta(microseconds=1)
    # nanosecond clocks hold the range (with years to spare for windows and horizons)
    lowest, highest = pd.Timestamp.min.tz_localize(UTC), pd.Timestamp.max.tz_localize(UTC)
    assert lowest + pd.Timedelta(days=365 * 20) < pd.Timestamp(TS_MIN)
    assert pd.Timestamp(TS_MAX) + pd.Timedelta(days=365 * 10) < highest
    for reason in ("value_out_of_range", "timestamp_out_of_range"):
        assert reason in REASONS


@pytest.mark.parametrize("ts", [TS_MIN - timedelta(days=1), TS_MAX])
def test_encoders_refuse_timestamps_out_of_range(ts: datetime) -> None:
    with pytest.raises(SchemaError) as info:
        encode_reading(Reading("a", ts, 1.0))
    assert info.value.reason == "timestamp_out_of_range"
    with pytest.raises(SchemaError) as info:
        encode_forecast(make_forecast(issued_at=ts, targets=(ts + timedelta(minutes=5),)))
    assert info.value.reason == "timestamp_out_of_range"


def test_schema_error_is_a_value_error_with_a_readable_message() -> None:
    with pytest.raises(ValueError, match="no timezone; append Z"):
        decode_readings(reading_bytes(ts="2012-03-01T00:00:00"))


def test_schema_error_pickles() -> None:
    err = SchemaError("non_finite", "value is nan")
    back = pickle.loads(pickle.dumps(err))
    assert (back.reason, back.detail, str(back)) == (err.reason, err.detail, str(err))


def test_str_and_memoryview_inputs_are_accepted() -> None:
    raw = reading_bytes()
    assert decode_readings(raw.decode()) == decode_readings(memoryview(raw))


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
_FIELDS = st.sampled_from(["v", "sensor", "ts", "value", "values", "unit"])


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(_FIELDS, _JSON | st.sampled_from([1, "2012-03-01T00:05:00Z", "a"])),
    st.sampled_from([b"", b'"value":2,', b'"v":1,']),
)
@example({"v": 1, "sensor": "a", "ts": "2012-03-01T00:05:00Z", "value": 1.5}, b"")
@example({"v": 1, "sensor": "a", "ts": "2012-03-01T00:05:00Z", "value": 1.5}, b'"value":2,')
@example({"v": 1, "ts": "2012-03-01T00:05:00Z", "values": {"a": 1, "b": "x"}}, b"")
def test_compact_messages_decode_as_the_checked_parser_does(
    fields: dict[str, object], repeated: bytes
) -> None:
    """Compact JSON bytes (what producers write, read by orjson) decode exactly as the
    same text does through the checked parser, a repeated key included."""
    raw = json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()
    if repeated and raw != b"{}":
        raw = b"{" + repeated + raw[1:]  # a key that may repeat one of the fields

    def outcome(message: bytes | str) -> object:
        try:
            readings, rejected = decode_readings_partial(message)
            return readings, [(exc.reason, exc.detail) for exc in rejected]
        except SchemaError as exc:
            return exc.reason, exc.detail

    assert outcome(raw) == outcome(raw.decode())


def test_encode_reading_is_compact_utc_json() -> None:
    raw = encode_reading(
        Reading("773869", datetime(2012, 3, 1, 1, tzinfo=timezone(timedelta(hours=1))), 55.1)
    )
    assert raw == b'{"v":1,"sensor":"773869","ts":"2012-03-01T00:00:00Z","value":55.1}'


def test_encode_accepts_numpy_scalars() -> None:
    raw = encode_reading(Reading("a", T0, np.float64(2.5)))  # type: ignore[arg-type]
    assert decode_readings(raw)[0].value == 2.5


@pytest.mark.parametrize(
    ("reading", "reason"),
    [
        (Reading("a", T0, float("nan")), "non_finite"),
        (Reading("a", T0, np.float32("inf")), "non_finite"),  # type: ignore[arg-type]
        (Reading("a", T0, True), "bad_type"),  # type: ignore[arg-type]
        (Reading("a", T0, 1e39), "value_out_of_range"),
        (Reading("a", T0, np.float64(-1e300)), "value_out_of_range"),  # type: ignore[arg-type]
        (Reading("a", datetime(2012, 3, 1), 1.0), "no_timezone"),
        (Reading("", T0, 1.0), "bad_sensor"),
        (Reading("a", "2012-03-01", 1.0), "bad_type"),  # type: ignore[arg-type]
    ],
)
def test_encoder_refuses_what_the_decoder_would_reject(reading: Reading, reason: str) -> None:
    with pytest.raises(SchemaError) as info:
        encode_reading(reading)
    assert info.value.reason == reason


def test_batch_round_trip_and_duplicate_ids() -> None:
    values = {"a": 1.25, "b": -0.5, "c": 1e-300}
    readings = decode_readings(encode_readings_batch(T0, values))
    assert {r.sensor: r.value for r in readings} == values
    with pytest.raises(SchemaError) as info:
        encode_readings_batch(T0, {"7": 1.0, 7: 2.0})  # type: ignore[dict-item]
    assert info.value.reason == "duplicate_key"


def test_format_timestamp_accepts_pandas_and_drops_nanoseconds() -> None:
    ts = pd.Timestamp("2012-03-01T00:00:00.000000123", tz="UTC")
    assert format_timestamp(ts) == "2012-03-01T00:00:00Z"
    assert parse_timestamp(format_timestamp(ts)) == T0


# --------------------------------------------------------------------------- forecasts


def make_forecast(**fields: object) -> ForecastMessage:
    base: dict[str, object] = {
        "model": "ar",
        "sensor": "773869",
        "issued_at": T0,
        "targets": (T0 + timedelta(minutes=5), T0 + timedelta(minutes=10)),
        "yhat": (60.0, 61.5),
        "lo": (55.0, 55.5),
        "hi": (65.0, 67.5),
    }
    base.update(fields)
    return ForecastMessage(**base)  # type: ignore[arg-type]


def test_forecast_round_trip_with_and_without_interval() -> None:
    for message in (make_forecast(), make_forecast(lo=None, hi=None)):
        assert decode_forecast(encode_forecast(message)) == message


def test_forecast_without_lo_hi_keys_decodes() -> None:
    wire = json.loads(encode_forecast(make_forecast(lo=None, hi=None)))
    del wire["lo"], wire["hi"]
    assert decode_forecast(json.dumps(wire).encode()).lo is None


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"yhat": (1.0,)}, "bad_value"),
        ({"lo": (1.0, 2.0, 3.0)}, "bad_value"),
        ({"lo": (70.0, 55.5)}, "bad_value"),
        ({"lo": None}, "bad_value"),
        ({"targets": ()}, "bad_value"),
        ({"targets": (T0 + timedelta(minutes=10), T0 + timedelta(minutes=5))}, "bad_value"),
        ({"yhat": (float("nan"), 1.0)}, "non_finite"),
        ({"model": ""}, "bad_value"),
        ({"sensor": ""}, "bad_sensor"),
        ({"issued_at": datetime(2012, 3, 1)}, "no_timezone"),
    ],
)
def test_bad_forecasts_are_refused_both_ways(fields: dict[str, object], reason: str) -> None:
    message = make_forecast(**fields)
    with pytest.raises(SchemaError) as info:
        encode_forecast(message)
    assert info.value.reason == reason


def test_bad_forecast_bytes() -> None:
    wire = json.loads(encode_forecast(make_forecast()))
    assert reason_of(json.dumps({**wire, "v": 2}).encode(), decode_forecast) == "bad_version"
    assert reason_of(json.dumps({**wire, "x": 1}).encode(), decode_forecast) == "unknown_field"
    assert reason_of(json.dumps({**wire, "targets": "a"}).encode(), decode_forecast) == "bad_type"
    assert reason_of(json.dumps({**wire, "yhat": [1, "2"]}).encode(), decode_forecast) == "bad_type"
    assert reason_of(reading_bytes(), decode_forecast) == "missing_field"


def test_forecast_messages_split_a_network_forecast() -> None:
    targets = pd.date_range("2012-03-01 00:05", periods=3, freq="5min", tz="UTC")
    mean = np.arange(6, dtype=np.float32).reshape(3, 2)  # [horizon, node]
    fc = Forecast(
        model="ar",
        sensor_ids=("a", "b"),
        issued_at=pd.Timestamp("2012-03-01", tz="UTC"),
        targets=targets,
        mean=mean,
        lower=mean - 1,
        upper=mean + 1,
    )
    a, b = forecast_messages(fc)
    assert (a.sensor, a.yhat, a.lo, a.hi) == (
        "a",
        (0.0, 2.0, 4.0),
        (-1.0, 1.0, 3.0),
        (1.0, 3.0, 5.0),
    )
    assert b.yhat == (1.0, 3.0, 5.0) and b.targets == tuple(t.to_pydatetime() for t in targets)
    assert decode_forecast(encode_forecast(b)) == b


# --------------------------------------------------------------------------- alerts


def make_alert(**fields: object) -> AlertMessage:
    base: dict[str, object] = {
        "alert_id": "a-1",
        "dedup_key": "773869:interval",
        "status": "firing",
        "severity": "warning",
        "sensor": "773869",
        "ts": T0,
        "observed": 12.0,
        "expected": 61.0,
        "lo": 55.0,
        "hi": 66.0,
        "score": 0.93,
        "detector": "interval",
        "first_seen": T0 - timedelta(minutes=10),
        "last_seen": T0,
        "reason": "12 mph is 43 below the 90% interval at all 3 horizons",
    }
    base.update(fields)
    return AlertMessage(**base)  # type: ignore[arg-type]


def test_alert_round_trip() -> None:
    for alert in (
        make_alert(),
        make_alert(status="resolved", severity="info", observed=None, lo=None, hi=None, reason=""),
    ):
        assert decode_alert(encode_alert(alert)) == alert


def test_alert_reason_is_optional_on_the_wire() -> None:
    wire = json.loads(encode_alert(make_alert()))
    del wire["reason"]
    assert decode_alert(json.dumps(wire).encode()).reason == ""


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"status": "open"}, "bad_value"),
        ({"severity": "fatal"}, "bad_value"),
        ({"score": 1.5}, "bad_value"),
        ({"score": float("nan")}, "non_finite"),
        ({"lo": 70.0}, "bad_value"),
        ({"last_seen": T0 - timedelta(hours=1)}, "bad_value"),
        ({"alert_id": ""}, "bad_value"),
        ({"observed": "12"}, "bad_type"),
        ({"reason": None}, "bad_type"),
    ],
)
def test_bad_alerts_are_refused(fields: dict[str, object], reason: str) -> None:
    with pytest.raises(SchemaError) as info:
        encode_alert(make_alert(**fields))
    assert info.value.reason == reason


def test_bad_alert_bytes() -> None:
    wire = json.loads(encode_alert(make_alert()))
    del wire["score"]
    assert reason_of(json.dumps(wire).encode(), decode_alert) == "missing_field"
    assert reason_of(b"{}", decode_alert) == "missing_field"


# --------------------------------------------------------------------------- properties

DECODERS = (decode_readings, decode_forecast, decode_alert)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
field_names = st.sampled_from(
    ["v", "sensor", "ts", "value", "values", "model", "issued_at", "targets", "yhat", "lo", "hi"]
)
# A fixed set of zones: st.timezones() spends its first second loading the tz database.
zones = st.sampled_from(
    [
        UTC,
        timezone(timedelta(hours=2)),
        timezone(-timedelta(hours=8, minutes=30)),
        timezone(timedelta(hours=5, minutes=45, seconds=30)),
        ZoneInfo("America/Los_Angeles"),
        ZoneInfo("Australia/Lord_Howe"),
    ]
)
timestamps_text = st.one_of(
    st.datetimes(timezones=zones).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),
    st.text(max_size=30),
)


def assert_decodes_or_schema_error(raw: bytes) -> None:
    for decode in DECODERS:
        try:
            result = decode(raw)
        except SchemaError as exc:
            assert exc.reason in REASONS
        else:
            if decode is decode_readings:
                assert isinstance(result, list)
                assert all(isinstance(r, Reading) and r.ts.tzinfo is UTC for r in result)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash(raw: bytes) -> None:
    assert_decodes_or_schema_error(raw)


@given(st.dictionaries(field_names, json_values | timestamps_text, max_size=6))
def test_arbitrary_json_objects_never_crash(obj: dict) -> None:
    obj = {"v": 1, **obj} if obj.get("v", 1) == 1 else obj
    assert_decodes_or_schema_error(json.dumps(obj).encode())


@given(
    base=st.sampled_from(
        [
            reading_bytes(),
            b'{"v":1,"ts":"2012-03-01T00:00:00Z","values":{"a":1,"b":2.5}}',
            encode_forecast(make_forecast()),
            encode_alert(make_alert()),
        ]
    ),
    data=st.data(),
)
def test_mutated_valid_messages_never_crash(base: bytes, data: st.DataObject) -> None:
    raw = bytearray(base)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.sampled_from(["flip", "delete", "insert"]))
        if op == "flip":
            raw[pos] = data.draw(st.integers(0, 255))
        elif op == "delete" and len(raw) > 1:
            del raw[pos]
        else:
            raw.insert(pos, data.draw(st.sampled_from(list(b'{}[]",:0123456789eE.-+ ntfaNI\\'))))
    assert_decodes_or_schema_error(bytes(raw))


finite = st.floats(allow_nan=False, allow_infinity=False)
readable = st.floats(-FLOAT32_MAX, FLOAT32_MAX)  # what a reading may hold
sensor_ids = st.text(
    st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Zl", "Zp")), min_size=1, max_size=20
).filter(lambda s: s.strip() == s)
aware = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=zones
)


@given(sensor=sensor_ids, ts=aware, value=readable)
def test_reading_round_trip(sensor: str, ts: datetime, value: float) -> None:
    [back] = decode_readings(encode_reading(Reading(sensor, ts, value)))
    # Compared in UTC: PEP 495 makes == False across zones for times in a DST fold or gap.
    assert back == Reading(sensor, ts.astimezone(UTC), value)
    assert back.ts.tzinfo is UTC


@given(ts=aware, values=st.dictionaries(sensor_ids, readable, max_size=10))
def test_batch_round_trip(ts: datetime, values: dict[str, float]) -> None:
    back = decode_readings(encode_readings_batch(ts, values))
    assert [(r.sensor, r.value) for r in back] == list(values.items())
    assert all(r.ts == ts.astimezone(UTC) for r in back)


@settings(max_examples=50)
@given(
    n=st.integers(1, 12),
    start=aware,
    yhat=st.lists(finite, min_size=12, max_size=12),
    width=st.lists(st.floats(0, 1e6), min_size=12, max_size=12),
    with_interval=st.booleans(),
)
def test_forecast_round_trip_property(
    n: int, start: datetime, yhat: list[float], width: list[float], with_interval: bool
) -> None:
    lo = tuple(y - w for y, w in zip(yhat[:n], width, strict=False))
    hi = tuple(y + w for y, w in zip(yhat[:n], width, strict=False))
    assume(all(np.isfinite(lo + hi)))
    start = start.astimezone(UTC)  # wall-clock steps in a zone may not increase across DST
    message = make_forecast(
        issued_at=start,
        targets=tuple(start + timedelta(minutes=5 * (k + 1)) for k in range(n)),
        yhat=tuple(yhat[:n]),
        lo=lo if with_interval else None,
        hi=hi if with_interval else None,
    )
    assert decode_forecast(encode_forecast(message)) == message


@pytest.mark.parametrize(
    ("raw", "said"),
    [(b"", "empty value"),
     (b'{"v":1,"sensor":"a","ts":"2024-01-01T00:00:00Z","value":' + b"1" * 5000 + b"}",
      "a number with too many digits"),
     (b'{"v":1,"model":"ar","sensor":"a","issued_at":"2024-01-01T00:00:00Z","targets":[],'
      b'"yhat":[]}', "this is a roadcast forecast record: the wrong topic?")],
)  # fmt: skip
def test_dead_letter_reasons_say_what_the_record_is(raw: bytes, said: str) -> None:
    with pytest.raises(SchemaError, match=said):
        decode_readings(raw)


def test_a_reading_after_a_byte_order_mark_is_read() -> None:
    raw = b'\xef\xbb\xbf{"v":1,"sensor":"a","ts":"2024-01-01T00:00:00Z","value":1.5}'
    assert decode_readings(raw)[0].value == 1.5
