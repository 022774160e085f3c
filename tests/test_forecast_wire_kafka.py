"""Forecast wire v2 through the real broker: the service publishes frames that decode to
the forecasts it stores, and ``roadcast tail`` prints every kind of record, one line each."""

from __future__ import annotations

from collections import Counter

import pytest
from typer.testing import CliRunner

from flows.cli import app
from pipeline.kafka.clients import ensure_topics, make_producer
from pipeline.kafka.frames import FRAME_HEADER_VALUE, WIRE_HEADER, decode_forecast_frame
from pipeline.kafka.replay import replay
from pipeline.model_dir import load_bundles
from pipeline.service.config import ServiceConfig
from pipeline.service.loop import ForecastService
from pipeline.service.store import Store
from tests.service_support import HORIZON, make_world, read_topic, service_thread
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

CONFIG = ServiceConfig(allowed_lateness="0min", durable=False, poll_timeout_ms=50)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("bundles"), live_steps=12)


def test_the_service_publishes_v2_frames_that_decode_to_what_it_stores(
    world, kafka_settings, tmp_path
):
    settings = kafka_settings.model_copy(
        update={"store_path": tmp_path / "store.sqlite", "forecast_wire": "v2"}
    )
    ensure_topics(settings)
    producer = make_producer(settings)
    stats = replay(world.live, producer, settings.topic_readings, progress=False)
    producer.close()
    models = load_bundles(world.bundles)
    service = ForecastService(settings, CONFIG, models)
    steps, sensors = world.live.n_time, world.live.n_nodes
    with service_thread(service):
        wait_until(lambda: service.counters["ticks_closed"] >= steps, what=f"{steps} ticks")
    assert service.counters["valid"] == stats.messages

    records = read_topic(settings, settings.topic_forecasts)
    assert len(records) == len(models) * steps  # one frame per model and tick
    assert service.counters["forecast_records"] == len(records)
    seen: Counter[tuple[str, str, object]] = Counter()
    for record in records:
        assert (WIRE_HEADER, FRAME_HEADER_VALUE) in [(k, bytes(v)) for k, v in record.headers]
        model = record.key.decode()
        network = models[model].sensor_ids
        for message in decode_forecast_frame(record.value, record.headers, network=network):
            assert message.model == model and len(message.yhat) == HORIZON
            seen[(message.model, message.sensor, message.issued_at)] += 1
    expected = {
        (model, sensor, ts.to_pydatetime())
        for model in world.models
        for sensor in world.live.sensor_ids
        for ts in world.live.timestamps
    }
    assert set(seen) == expected and set(seen.values()) == {1}
    assert service.counters["forecasts_published"] == len(models) * sensors * steps
    with Store(settings.store_path, readonly=True) as store:
        assert store.count("forecasts") == len(models) * sensors * steps

    runner = CliRunner()
    base = ["tail", "--bootstrap", settings.bootstrap_servers, "--from-beginning"]
    shown = runner.invoke(app, [*base, settings.topic_forecasts, "--max", str(len(records))])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.strip().splitlines()
    assert len(lines) == len(records) and all(" forecast v2 " in line for line in lines)
    assert f"of {sensors}, {HORIZON} steps of 5 min" in lines[0]
    readings = runner.invoke(app, [*base, settings.topic_readings, "--max", "3"])
    assert readings.exit_code == 0, readings.output
    assert [" reading " in line for line in readings.output.splitlines()] == [True] * 3


def test_tail_prints_v1_forecasts_and_bad_records_and_names_a_missing_topic(kafka_settings):
    import numpy as np
    import pandas as pd
    from kafka import KafkaProducer

    from pipeline.kafka.forecast_wire import ForecastEncoder

    settings = kafka_settings
    ensure_topics(settings, topics=[settings.topic_forecasts])
    mean = np.array([[50.5, 60.25]], np.float32)
    encoded = ForecastEncoder(("a", "b")).encode_rows(
        "ar", pd.Timestamp("2024-05-01", tz="UTC"), pd.Timedelta("5min"), mean, mean - 1, mean + 1
    )
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    for key, value in encoded.records:
        producer.send(settings.topic_forecasts, key=key, value=value)
    producer.send(settings.topic_forecasts, key=b"x", value=b"\x93\x01")  # not a forecast
    producer.send(
        settings.topic_forecasts, value=b"\x80", headers=[(WIRE_HEADER, b"forecast-frame/9")]
    )
    producer.flush(30)
    producer.close()
    runner = CliRunner()
    base = ["tail", "--bootstrap", settings.bootstrap_servers, "--from-beginning"]
    shown = runner.invoke(app, [*base, "forecasts", "--max", "4"], env=_topics(settings))
    assert shown.exit_code == 0, shown.output
    text = shown.output
    assert len(text.strip().splitlines()) == 4  # partitions interleave: look for each line
    assert "forecast v1 ar sensor a issued 2024-05-01T00:00:00+00:00 1 steps" in text
    assert "yhat [50.5] lo [49.5] hi [51.5]" in text
    assert "invalid forecasts record: bad_json: not a forecast frame" in text
    assert "invalid forecasts record: bad_version: forecast frame version 9" in text
    assert "this reader knows forecast wire v1 and v2" in text
    missing = runner.invoke(app, [*base, "no.such.topic", "--timeout", "1"])
    assert missing.exit_code == 1 and "no topic 'no.such.topic'" in missing.output


def _topics(settings) -> dict[str, str]:
    return {
        "ROADCAST_TOPIC_FORECASTS": settings.topic_forecasts,
        "ROADCAST_TOPIC_READINGS": settings.topic_readings,
        "ROADCAST_TOPIC_ALERTS": settings.topic_alerts,
        "ROADCAST_TOPIC_DLQ": settings.topic_dlq,
    }
