"""Hostile inputs on the service's wire: data sets replayed into Kafka, records tailed."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from models.panel import SensorPanel
from pipeline.kafka.schema import FLOAT32_MAX


def _panel(values: np.ndarray, sensors: tuple[str, ...], start: str = "2024-01-01") -> SensorPanel:
    stamps = pd.date_range(start, periods=len(values), freq="5min", tz="UTC")
    return SensorPanel.from_values(values, stamps, sensors, name="hostile")


@pytest.mark.integration
def test_a_replay_sends_float32_extremes_whole_as_the_schema_accepts_them(kafka_settings):
    """float32's largest magnitudes print as 3.4028235e38, past FLOAT32_MAX: every step
    of a data set holding them is sent, and each value reads back as the panel's."""
    from pipeline.kafka.clients import close_producer, ensure_topics, make_producer
    from pipeline.kafka.replay import replay
    from pipeline.kafka.schema import decode_readings
    from tests.service_support import read_topic

    values = np.full((4, 2), 55.1, dtype=np.float32)
    values[2] = [FLOAT32_MAX, -FLOAT32_MAX]
    panel = _panel(values, ("a", "b"))
    topic = kafka_settings.topic_readings
    ensure_topics(kafka_settings, topics=[topic])
    producer = make_producer(kafka_settings)
    try:
        stats = replay(panel, producer, topic, progress=False)
    finally:
        close_producer(producer)
    assert stats.messages == 8
    readings = sorted(
        (r.ts, r.sensor, r.value)
        for record in read_topic(kafka_settings, topic)
        for r in decode_readings(record.value)
    )
    assert [np.float32(v) for *_, v in readings] == values.ravel().tolist()
    assert readings[0][2] == 55.1  # the shortest decimal, not 55.099998...


@pytest.mark.parametrize(
    ("sensors", "start", "expected"),
    [
        (("a", "b\x1b[2J"), "2024-01-01", "sensor 'b\\x1b[2J' holds a control"),
        (("a", " b"), "2024-01-01", "sensor ' b' must be 1-200 characters"),
        (("a", "b"), "2249-12-31T23:55", "timestamp 2250-01-01 00:05:00+00:00 cannot be sent"),
    ],
)
def test_a_replay_refuses_what_the_wire_cannot_carry_before_it_connects(
    clean_env, monkeypatch, sensors, start, expected
):
    """A sensor id or a timestamp the schema refuses (a NAB series is named by its file)
    stops the replay before any topic is made or reading sent, naming the data set."""
    from pipeline.kafka.replay import check_replay

    panel = _panel(np.ones((3, 2), np.float32), sensors, start)
    with pytest.raises(ValueError, match="nothing was sent") as raised:
        check_replay(panel, 0.0, None)
    assert str(raised.value).startswith("hostile: ") and expected in str(raised.value)


def test_roadcast_replay_of_a_nab_file_named_as_no_sensor_can_be_is_refused_first(
    clean_env, monkeypatch, tmp_path
):
    from typer.testing import CliRunner

    from flows.cli import app

    folder = tmp_path / "nab" / "cat"
    folder.mkdir(parents=True)
    name = "speed \x1b[2J.csv"
    frame = pd.DataFrame(
        {"timestamp": pd.date_range("2024-01-01", periods=20, freq="5min"), "value": 1.0}
    )
    frame.to_csv(folder / name, index=False)
    (tmp_path / "nab" / "combined_windows.json").write_text(json.dumps({f"cat/{name}": []}))
    monkeypatch.setenv("ROADCAST_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ROADCAST_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # never reached
    result = CliRunner().invoke(app, ["replay", f"nab:cat/{name}"])
    assert result.exit_code == 1, result.output
    output = " ".join(result.output.split())
    assert "\x1b" not in result.output and "no Kafka broker" not in output
    assert "sensor 'speed \\x1b[2J' holds a control or invisible character" in output
    assert "nothing was sent" in output


def test_frame_headers_as_other_kafka_clients_hand_them_over_are_read_or_one_error():
    """Header values as text or in a mapping (as some clients give them) are read; a value
    that is not bytes at all is one ``bad_version`` error, never a TypeError."""
    from pipeline.kafka.frames import WIRE_HEADER, decode_forecast_frame, encode_frames
    from pipeline.kafka.schema import SchemaError

    mean = np.ones((3, 2), np.float32)
    frame = encode_frames("ar", "2024-01-01T00:00:00Z", 300_000, ["a", "b"], mean, None, None,
                          max_bytes=1 << 20)[0]  # fmt: skip
    for headers in ([(WIRE_HEADER, "forecast-frame/2")], {WIRE_HEADER: b"forecast-frame/2"}):
        assert [m.sensor for m in decode_forecast_frame(frame, headers)] == ["a", "b"]
    with pytest.raises(SchemaError, match="header roadcast-wire is a int, expected bytes"):
        decode_forecast_frame(frame, [(WIRE_HEADER, 2)])  # type: ignore[list-item]
    with pytest.raises(SchemaError, match="forecast frame version 3 is not readable"):
        decode_forecast_frame(frame, [(WIRE_HEADER, "forecast-frame/3")])  # type: ignore[list-item]
