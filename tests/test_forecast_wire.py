"""Forecast encoding in both wires (pipeline.kafka.forecast_wire, pipeline.kafka.frames):
v1 stays what consumers parse, v2 decodes to the same forecasts, bad frames get one
clear error."""

from __future__ import annotations

import json

import msgspec
import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pipeline.kafka.forecast_wire import ForecastEncoder
from pipeline.kafka.frames import (
    FRAME_HEADER_VALUE,
    MAX_FRAME_BYTES,
    WIRE_HEADER,
    decode_forecast_frame,
    looks_like_frame,
    read_frame,
)
from pipeline.kafka.schema import (
    ForecastMessage,
    SchemaError,
    decode_forecast,
    encode_forecast,
)

T0 = pd.Timestamp("2012-03-01 08:00", tz="UTC")
FREQ = pd.Timedelta("5min")
SENSORS = ("773869", 'odd "id" é', "3", "4")
HEADERS = [(WIRE_HEADER, FRAME_HEADER_VALUE)]


def _forecast(nodes: int = 4, horizon: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    mean = rng.normal(55, 10, (horizon, nodes)).astype(np.float32)
    return mean, mean - np.float32(2.5), mean + np.float32(2.5)


def _decode_all(encoded, network=None) -> list[ForecastMessage]:
    return [
        m
        for _, value in encoded.records
        for m in decode_forecast_frame(value, encoded.headers, network=network)
    ]


def test_v1_records_are_the_schema_format_and_read_back_to_the_same_float32():
    mean, lower, upper = _forecast()
    encoded = ForecastEncoder(SENSORS).encode_rows("ar", T0, FREQ, mean, lower, upper)
    assert encoded.headers is None and len(encoded.skipped) == 0
    assert [k for k, _ in encoded.records] == [s.encode() for s in SENSORS]
    targets = pd.date_range(T0 + FREQ, periods=3, freq=FREQ)
    for i, (_, value) in enumerate(encoded.records):
        message = decode_forecast(value)  # what every v1 consumer runs
        for field, array in (("yhat", mean), ("lo", lower), ("hi", upper)):
            back = np.asarray(getattr(message, field), np.float32)
            np.testing.assert_array_equal(back, array[:, i])  # exact in float32
        reference = encode_forecast(
            ForecastMessage(
                "ar", SENSORS[i], T0.to_pydatetime(), tuple(t.to_pydatetime() for t in targets),
                tuple(message.yhat), tuple(message.lo or ()), tuple(message.hi or ()),
            )
        )  # fmt: skip
        # The same document, key for key and in the same order, as the schema's encoder.
        assert list(json.loads(value)) == list(json.loads(reference))
        assert json.loads(value) == json.loads(reference)


def test_v1_without_intervals_skips_sensors_it_cannot_publish():
    mean = np.array([[1.0, np.nan, 3.0]], np.float32)
    encoder = ForecastEncoder(("a", "b", "c"))
    encoded = encoder.encode_rows("persistence", T0, FREQ, mean)
    assert [k for k, _ in encoded.records] == [b"a", b"c"] and encoded.skipped.tolist() == [1]
    assert encoded.columns.tolist() == [0, 2]
    assert decode_forecast(encoded.records[0][1]).lo is None
    assert b'"yhat":[1.0],"lo":null,"hi":null}' in encoded.records[0][1]
    lower, upper = mean - 1, mean + 1
    upper[0, 2] = -10  # inverted interval: the schema would reject it
    encoded = encoder.encode_rows("ar", T0, FREQ, mean, lower, upper)
    assert [k for k, _ in encoded.records] == [b"a"] and encoded.skipped.tolist() == [1, 2]
    assert b'"yhat":[1.0],"lo":[0.0],"hi":[2.0]}' in encoded.records[0][1]


def test_encoder_errors_name_the_problem():
    mean, _, _ = _forecast(3, 1)
    encoder = ForecastEncoder(("a", "b", "c"))
    with pytest.raises(ValueError, match="come together"):
        encoder.encode_rows("ar", T0, FREQ, mean, mean, None)
    with pytest.raises(ValueError, match="sensors"):
        encoder.encode_rows("ar", T0, FREQ, mean[:, :2])
    targets = pd.date_range(T0 + FREQ, periods=1, freq=FREQ)
    with pytest.raises(ValueError, match="targets"):
        encoder.encode("ar", T0, targets[:0], mean)
    irregular = pd.DatetimeIndex([T0 + FREQ, T0 + 3 * FREQ])
    with pytest.raises(ValueError, match="issued_at \\+ k"):
        encoder.encode("ar", T0, irregular, np.vstack([mean, mean]))
    with pytest.raises(ValueError, match="unknown forecast wire"):
        ForecastEncoder(("a",), "v3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="whole-millisecond"):
        ForecastEncoder(("a", "b", "c"), "v2").encode_rows("ar", T0, pd.Timedelta(1), mean)


@pytest.mark.parametrize("bounds", [True, False])
def test_v1_and_v2_of_the_same_forecasts_decode_to_equal_messages(bounds):
    mean, lower, upper = _forecast(6, 4, seed=1)
    mean[2, 1] = np.nan  # not published in either wire
    upper[0, 4] = lower[0, 4] - 1  # inverted: not published either
    args = (mean, lower, upper) if bounds else (mean,)
    v1 = ForecastEncoder((*SENSORS, "5", "6"), "v1").encode_rows("lstm", T0, FREQ, *args)
    v2 = ForecastEncoder((*SENSORS, "5", "6"), "v2").encode_rows("lstm", T0, FREQ, *args)
    assert len(v2.records) == 1 and v2.records[0][0] == b"lstm" and v2.headers == HEADERS
    assert _decode_all(v1) == _decode_all(v2)
    assert len(_decode_all(v2)) == (4 if bounds else 5)
    assert np.array_equal(v1.columns, v2.columns) and np.array_equal(v1.skipped, v2.skipped)


def test_a_large_network_is_cut_into_frames_that_stitch_back():
    ids = tuple(f"sensor-{i}" for i in range(500))
    mean, lower, upper = _forecast(500, 12, seed=2)
    v2 = ForecastEncoder(ids, "v2").encode_rows(
        "tgclstm", T0, FREQ, mean, lower, upper, max_bytes=20_000
    )
    assert len(v2.records) > 1 and all(len(v) <= 20_000 for _, v in v2.records)
    firsts = [read_frame(v).first for _, v in v2.records]
    assert firsts == sorted(firsts) and firsts[0] == 0
    v1 = ForecastEncoder(ids, "v1").encode_rows("tgclstm", T0, FREQ, mean, lower, upper)
    assert _decode_all(v2, network=ids) == _decode_all(v1, network=ids)


def test_frames_are_found_without_their_header():
    mean, lower, upper = _forecast()
    v2 = ForecastEncoder(SENSORS, "v2").encode_rows("ar", T0, FREQ, mean, lower, upper)
    assert decode_forecast_frame(v2.records[0][1]) == _decode_all(v2)


def _frame_dict(**changes) -> bytes:
    mean, lower, upper = _forecast()
    raw = ForecastEncoder(SENSORS, "v2").encode_rows("ar", T0, FREQ, mean, lower, upper)
    frame = msgspec.msgpack.decode(raw.records[0][1])
    frame.update(changes)
    return msgspec.msgpack.encode(frame)


def test_a_frame_of_a_newer_version_names_both_versions():
    with pytest.raises(SchemaError, match=r"version 3 .* v1 and v2; upgrade roadcast") as err:
        decode_forecast_frame(_frame_dict(v=3, newfield=1))
    assert err.value.reason == "bad_version"
    newer = [(WIRE_HEADER, b"forecast-frame/3")]
    with pytest.raises(SchemaError, match=r"version 3 .* v1 and v2; upgrade roadcast"):
        decode_forecast_frame(_frame_dict(), newer)
    with pytest.raises(SchemaError, match="expected forecast-frame/<version>"):
        decode_forecast_frame(_frame_dict(), [(WIRE_HEADER, b"avro")])


def test_a_frame_of_another_network_is_refused():
    raw = _frame_dict()
    assert len(decode_forecast_frame(raw, HEADERS, network=SENSORS)) == 4
    with pytest.raises(SchemaError, match="network of 4 sensors, this consumer's has 3"):
        decode_forecast_frame(raw, HEADERS, network=SENSORS[:3])
    other = (SENSORS[0], "elsewhere", *SENSORS[2:])
    with pytest.raises(SchemaError, match=r"sensor 1 of model 'ar' is .* 'elsewhere'"):
        decode_forecast_frame(raw, HEADERS, network=other)
    v1 = ForecastEncoder(SENSORS).encode_rows("ar", T0, FREQ, *_forecast())
    with pytest.raises(SchemaError, match="not in this consumer's network"):
        decode_forecast_frame(v1.records[0][1], network=("x",))


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"\x93\x01\x02\x03", "not a forecast frame"),
        (b"\xc1", "not a forecast frame"),
        (None, "empty message"),
        (b'{"v": 1}', "missing_field"),
    ],
)
def test_records_that_are_not_forecasts_are_one_schema_error(raw, match):
    with pytest.raises(SchemaError, match=match):
        decode_forecast_frame(raw)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"yhat": b"\x00" * 7}, "yhat has 7 bytes"),
        ({"lo": None}, "lo and hi come together"),
        ({"first": 3}, "outside its network of 4"),
        ({"horizon": 0}, "horizon"),
        ({"model": 5}, "Expected `str`"),
        ({"extra": 1}, "unknown field"),
    ],
)
def test_inconsistent_frames_are_refused(changes, match):
    with pytest.raises(SchemaError, match=match):
        decode_forecast_frame(_frame_dict(**changes), HEADERS)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("forecast-frame/\u00b2".encode(), "at most 6 ASCII digits"),  # "²".isdigit()
        (b"forecast-frame/" + b"9" * 5000, "at most 6 ASCII digits"),  # int() refuses it
    ],
)
def test_a_version_header_is_ascii_digits_of_bounded_length(value, match):
    with pytest.raises(SchemaError, match=match) as err:
        decode_forecast_frame(_frame_dict(), [(WIRE_HEADER, value)])
    assert err.value.reason == "bad_version"


def test_conflicting_version_headers_are_refused_naming_both():
    newer = (WIRE_HEADER, b"forecast-frame/3")
    with pytest.raises(SchemaError, match="'forecast-frame/2' and 'forecast-frame/3'") as err:
        decode_forecast_frame(_frame_dict(), [*HEADERS, newer])
    assert err.value.reason == "bad_version"
    assert len(decode_forecast_frame(_frame_dict(), HEADERS * 2)) == 4  # the same one twice


def _inverted() -> bytes:
    lower = np.zeros((4, 3), "<f4")
    lower[2, 1] = 99.0
    return lower.tobytes()


@pytest.mark.parametrize(
    ("changes", "reason", "match"),
    [
        ({"step_ms": 10**15}, "timestamp_out_of_range", "not before 2250-01-01"),
        ({"step_ms": 2**62}, "timestamp_out_of_range", "not before 2250-01-01"),
        ({"step_ms": 10**13}, "timestamp_out_of_range", "not before 2250-01-01"),
        ({"issued_at": "2249-12-31T23:45:00Z"}, "timestamp_out_of_range", "x 300000 ms"),
        ({"issued_at": "yesterday"}, "bad_timestamp", "issued_at 'yesterday'"),
        ({"lo": _inverted()}, "bad_value", "sensor '3': lo must not exceed hi"),
        ({"sensors": ["a", "b", "a", "c"]}, "bad_value", "'a' appears more than once"),
        ({"sensors": ["a", "", "c", "d"]}, "bad_sensor", r"sensors\[1\] '' must be 1-200"),
        ({"sensors": ["a", "b\n\x1b[2J", "c", "d"]}, "bad_sensor", "control or invisible"),
        ({"sensors": ["a", " b", "c", "d"]}, "bad_sensor", "surrounding whitespace"),
        ({"model": ""}, "bad_value", "model must not be empty"),
        ({"first": 2**62, "total": 2**63 - 1}, "bad_value", "the limit is 1000000"),
        ({"first": -1}, "bad_value", "sensors -1..2 lie outside its network of 4"),
        ({"first": 1, "total": 4}, "bad_value", "sensors 1..4 lie outside its network of 4"),
    ],
)
def test_frames_follow_the_v1_rules(changes, reason, match):
    with pytest.raises(SchemaError, match=match) as err:
        decode_forecast_frame(_frame_dict(**changes), HEADERS)
    assert err.value.reason == reason


def test_the_last_target_may_fall_just_before_the_supported_range_ends():
    messages = decode_forecast_frame(_frame_dict(issued_at="2249-12-31T23:44:00Z"), HEADERS)
    assert messages[0].targets[-1].isoformat() == "2249-12-31T23:59:00+00:00"


@pytest.mark.parametrize(
    ("raw", "reason", "match"),
    [
        (b"\x82\xa1v\x02\xa5model" + b"\x91" * 100_000 + b"\xc0", "bad_json", "too deeply"),
        (None, "bad_type", "empty message"),
        (b"", "bad_json", "not a forecast frame"),
    ],
)
def test_hostile_frame_bytes_are_one_schema_error(raw, reason, match):
    with pytest.raises(SchemaError, match=match) as err:
        decode_forecast_frame(raw, HEADERS)
    assert err.value.reason == reason


def test_a_frame_over_the_size_limit_is_refused_before_decoding():
    horizon = MAX_FRAME_BYTES // 4
    raw = _frame_dict(
        sensors=["a"],
        total=1,
        horizon=horizon,
        step_ms=1,
        yhat=bytes(4 * horizon),
        lo=None,
        hi=None,
    )
    with pytest.raises(
        SchemaError, match=f"{len(raw)} bytes, the limit is {MAX_FRAME_BYTES}"
    ) as err:
        decode_forecast_frame(raw, HEADERS)
    assert err.value.reason == "too_large"


def test_the_largest_frames_the_service_writes_are_read():
    ids = tuple(f"{700_000 + i}" for i in range(20_000))
    for horizon, frames in ((12, 1), (48, 2)):  # a topic that takes 1 GiB records
        mean = np.full((horizon, len(ids)), 50.0, np.float32)
        encoded = ForecastEncoder(ids, "v2").encode_rows(
            "ar", T0, FREQ, mean, mean - 1, mean + 1, max_bytes=1 << 30
        )
        assert len(encoded.records) == frames
        assert all(len(value) <= MAX_FRAME_BYTES for _, value in encoded.records)
        assert sum(len(read_frame(value).sensors) for _, value in encoded.records) == 20_000


def test_v1_and_frames_are_told_apart_by_their_first_byte():
    v1 = ForecastEncoder(SENSORS).encode_rows("ar", T0, FREQ, *_forecast()).records[0][1]
    assert looks_like_frame(_frame_dict()) and not looks_like_frame(v1)
    assert decode_forecast_frame(b" \n" + v1) == [decode_forecast(v1)]
    bom = b"\xef\xbb\xbf" + v1  # a byte-order mark: JSON all the same
    assert not looks_like_frame(bom) and decode_forecast_frame(bom) == [decode_forecast(v1)]
    for raw in (b"[1, 2]",):  # JSON that v1 refuses: v1's error
        assert not looks_like_frame(raw)
        with pytest.raises(SchemaError) as v1_error:
            decode_forecast(raw)
        with pytest.raises(SchemaError) as err:
            decode_forecast_frame(raw)
        assert str(err.value) == str(v1_error.value) and "MessagePack" not in str(err.value)


@given(
    arrays(
        np.float32,
        st.tuples(st.integers(1, 4), st.integers(1, 5)),
        elements=st.floats(width=32, allow_nan=True, allow_infinity=True),
    )
)
def test_any_float32_forecast_publishes_valid_records_that_read_back_exactly(mean):
    ids = tuple(str(i) for i in range(mean.shape[1]))
    v1 = ForecastEncoder(ids).encode_rows("ar", T0, FREQ, mean)
    v2 = ForecastEncoder(ids, "v2").encode_rows("ar", T0, FREQ, mean)
    finite = np.isfinite(mean).all(axis=0)
    assert v1.columns.tolist() == np.flatnonzero(finite).tolist()
    decoded = _decode_all(v1)
    assert decoded == _decode_all(v2)
    for message, col in zip(decoded, v1.columns.tolist(), strict=True):
        np.testing.assert_array_equal(np.asarray(message.yhat, np.float32), mean[:, col])
