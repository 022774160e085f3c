"""The service against the real embedded broker: end to end, and every kind of bad input
in the dead-letter topic with its reason while good readings flow."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from pipeline.kafka.clients import ensure_topics, make_producer
from pipeline.kafka.replay import replay
from pipeline.kafka.schema import decode_forecast
from pipeline.model_dir import load_bundles
from pipeline.service.config import ServiceConfig
from pipeline.service.loop import ForecastService
from pipeline.service.store import Store
from tests.service_support import HORIZON, make_world, read_topic, service_thread
from tests.waiting import WAIT_S, wait_until

pytestmark = pytest.mark.integration

CONFIG = ServiceConfig(allowed_lateness="0min", durable=False, poll_timeout_ms=50)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("bundles"))


def test_end_to_end_forecasts_for_every_sensor_model_and_tick(world, kafka_settings, tmp_path):
    settings = kafka_settings.model_copy(update={"store_path": tmp_path / "store.sqlite"})
    ensure_topics(settings)
    producer = make_producer(settings)
    stats = replay(world.live, producer, settings.topic_readings, progress=False)
    producer.close()
    service = ForecastService(settings, CONFIG, load_bundles(world.bundles))
    steps, sensors = world.live.n_time, world.live.n_nodes
    with service_thread(service):
        wait_until(lambda: service.counters["ticks_closed"] >= steps, what=f"{steps} ticks")
    assert service.counters["consumed"] == stats.messages
    assert service.counters["valid"] == stats.messages
    assert service.counters["dead_lettered"] == 0
    assert service.counters["late"] == 0  # partitions read unevenly do not make readings late

    records = read_topic(settings, settings.topic_forecasts)
    seen = Counter()
    for record in records:
        message = decode_forecast(record.value)
        assert record.key == message.sensor.encode()
        assert len(message.yhat) == HORIZON and message.lo is not None
        assert all(
            lo <= y <= hi for lo, y, hi in zip(message.lo, message.yhat, message.hi, strict=True)
        )
        seen[(message.model, message.sensor, message.issued_at)] += 1
    expected = {
        (model, sensor, ts.to_pydatetime())
        for model in world.models
        for sensor in world.live.sensor_ids
        for ts in world.live.timestamps
    }
    assert set(seen) == expected
    assert len(records) == len(world.models) * sensors * steps

    with Store(settings.store_path, readonly=True) as store:
        assert store.tick_count() == steps
        assert store.count("readings") == stats.messages
        assert store.count("forecasts") == len(world.models) * sensors * steps
        accuracy = store.rolling_accuracy()
        assert set(accuracy.model) == set(world.models)
        assert (accuracy.n > 0).all() and np.isfinite(accuracy.mae).all()
        # live errors equal a fresh join of the stored forecasts with the readings
        joined = store.score()
        np.testing.assert_allclose(accuracy.mae, joined.mae, rtol=1e-5)
        latencies = store.latencies_ms()
        assert len(latencies) == steps and (latencies >= 0).all()


def _bad_messages(sensor: str, ts: str) -> dict[str, tuple[bytes | None, bytes | None]]:
    """reason -> (key, value) of one malformed message each."""
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat().replace("+00:00", "Z")
    key = sensor.encode()

    def reading(**fields: object) -> bytes:
        return json.dumps({"v": 1, "sensor": sensor, "ts": ts, "value": 1.0, **fields}).encode()

    missing_ts = json.dumps({"v": 1, "sensor": sensor, "value": 1.0}).encode()
    nan = f'{{"v":1,"sensor":"{sensor}","ts":"{ts}","value":NaN}}'.encode()
    return {
        "bad_json": (b"k1", b'{"v":1,"sensor":'),
        "not_utf8": (b"k2", b"\xff\xfe\x00"),
        "bad_type": (key, reading(value="fast")),
        "non_finite": (key, nan),
        "no_timezone": (key, reading(ts=ts[:-1])),
        "bad_version": (key, reading(v=2)),
        "unknown_sensor": (b"nope", reading(sensor="nope")),
        "future_timestamp": (key, reading(ts=future)),
        "missing_field": (key, missing_ts),
    }


def test_malformed_messages_go_to_the_dead_letter_topic_while_good_ones_flow(
    world, kafka_settings, tmp_path
):
    settings = kafka_settings.model_copy(update={"store_path": tmp_path / "store.sqlite"})
    ensure_topics(settings)
    live = world.live.slice(0, 10)
    sensor = live.sensor_ids[0]
    ts = live.timestamps[3].isoformat().replace("+00:00", "Z")
    bad = _bad_messages(sensor, ts)
    producer = make_producer(settings)
    stats = replay(live.slice(0, 5), producer, settings.topic_readings, progress=False)
    for key, value in bad.values():
        producer.send(settings.topic_readings, key=key, value=value)
    producer.send(settings.topic_readings, key=b"tomb", value=None)  # a tombstone
    stats2 = replay(live.slice(5, 10), producer, settings.topic_readings, progress=False)
    producer.flush()
    producer.close()
    produced = stats.messages + stats2.messages + len(bad) + 1

    service = ForecastService(settings, CONFIG, load_bundles(world.bundles))
    with service_thread(service):
        wait_until(lambda: service.counters["consumed"] >= produced, what="every message")
        wait_until(lambda: service.counters["ticks_closed"] >= 10, what="10 ticks")
    counters = service.counters
    assert counters["dead_lettered"] == len(bad) + 1
    assert counters["valid"] == stats.messages + stats2.messages
    assert counters["valid"] + counters["dead_lettered"] == produced  # nothing lost

    letters = read_topic(settings, settings.topic_dlq)
    by_reason: dict[str, list[tuple[bytes | None, bytes | None]]] = {}
    for record in letters:
        headers = {k: v.decode() for k, v in record.headers}
        assert headers["source.topic"] == settings.topic_readings
        assert int(headers["source.offset"]) >= 0 and headers["error.message"]
        by_reason.setdefault(headers["error"], []).append((record.key, record.value))
    assert set(by_reason) == set(bad)
    for reason, (key, value) in bad.items():
        assert (key, value) in by_reason[reason], reason  # the original bytes and key
    assert (b"tomb", None) in by_reason["bad_type"]  # a tombstone is no reading either
    forecasts = read_topic(settings, settings.topic_forecasts)
    assert len(forecasts) == len(world.models) * live.n_nodes * 10


def test_service_config_and_bundle_errors_name_the_fix(tmp_path: Path, world):
    from pipeline.model_dir import BundleDirError

    with pytest.raises(BundleDirError, match="roadcast train"):
        load_bundles(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleDirError, match="no model bundles"):
        load_bundles(tmp_path / "empty")
    with pytest.raises(BundleDirError, match="no bundle for model"):
        load_bundles(world.bundles, only=["gru"])
    assert list(load_bundles(world.bundles, only=["ar"])) == ["ar"]
    with pytest.raises(ValueError, match="poll_records"):
        ServiceConfig(poll_records=0)


def test_a_redelivered_batch_is_recognised_and_does_not_rewind_the_store(
    world, kafka_settings, tmp_path
):
    """Kafka redelivers what was stored but not committed (a crash between the two):
    the records are skipped, counted as redelivered, and nothing is published twice."""
    from kafka import TopicPartition

    from pipeline.kafka.clients import make_consumer
    from pipeline.kafka.outbox import Outbox

    settings = kafka_settings.model_copy(update={"store_path": tmp_path / "store.sqlite"})
    ensure_topics(settings, partitions=1)
    producer = make_producer(settings)
    stats = replay(world.live.slice(0, 6), producer, settings.topic_readings, progress=False)
    producer.close()
    consumer = make_consumer(settings, group_id="")
    tp = TopicPartition(settings.topic_readings, 0)
    consumer.assign([tp])
    records: list = []

    def read() -> bool:
        records.extend(r for rs in consumer.poll(timeout_ms=200).values() for r in rs)
        return len(records) >= stats.messages

    wait_until(read, what=f"{stats.messages} readings", poll_s=0)
    assert len(records) == stats.messages
    consumer.close()
    service = ForecastService(settings, CONFIG, load_bundles(world.bundles))
    outbox = Outbox(make_producer(settings))
    first, second = records[: len(records) // 2], records[len(records) // 2 :]
    for part in (first, second):
        report, batch = service.process({tp: part}, outbox)
        outbox.flush(WAIT_S)
        service.finish(report, batch, flushed_at_ms=0)
    published = service.counters["forecasts_published"]
    report, batch = service.process({tp: first}, outbox)  # the first half, again
    outbox.flush(WAIT_S)
    service.finish(report, batch, flushed_at_ms=0)
    assert report.counts["redelivered"] == len(first) and report.counts["consumed"] == 0
    assert service.counters["forecasts_published"] == published
    assert service.counters["consumed"] == stats.messages
    with Store(settings.store_path, readonly=True) as store:
        (offset,) = store.offsets(service.partitions.key(tp)[0]).values()
    assert offset == records[-1].offset + 1  # not rewound to the end of `first`
    outbox.close(5)


def test_alert_hook_sees_every_tick_and_its_alerts_are_published_and_stored(
    world, kafka_settings, tmp_path
):
    from pipeline.kafka.schema import AlertMessage, decode_alert

    settings = kafka_settings.model_copy(update={"store_path": tmp_path / "store.sqlite"})
    ensure_topics(settings)
    live = world.live.slice(0, 8)
    producer = make_producer(settings)
    replay(live, producer, settings.topic_readings, progress=False)
    producer.close()
    seen = []
    sensor = live.sensor_ids[0]

    def detector(context):
        seen.append(context)
        index = len(seen)
        if index not in (3, 5):
            return []
        ts = context.tick.ts.to_pydatetime()
        status = "firing" if index == 3 else "resolved"
        return [
            AlertMessage(
                alert_id=f"{sensor}:test:{live.timestamps[2].isoformat()}",
                dedup_key=f"{sensor}:test",
                status=status,
                severity="warning",
                sensor=sensor,
                ts=ts,
                observed=float(context.tick.values[0]),
                expected=None,
                lo=None,
                hi=None,
                score=0.9,
                detector="test",
                first_seen=live.timestamps[2].to_pydatetime(),
                last_seen=ts,
            )
        ]

    service = ForecastService(settings, CONFIG, load_bundles(world.bundles), alert_hook=detector)
    with service_thread(service):
        wait_until(lambda: service.counters["ticks_closed"] >= 8, what="8 ticks")
    assert [c.tick.ts for c in seen] == list(live.timestamps)  # every tick, in order
    last = seen[-1]
    assert (
        last.window.n_time == service.window and last.window.timestamps[-1] == live.timestamps[-1]
    )
    assert set(last.issued) == set(world.models)
    assert last.issued["ar"].mean.shape == (HORIZON, live.n_nodes)
    assert list(last.targeted["ar"].steps) == [1, 2, 3]  # forecasts made 1..3 ticks before
    assert service.counters["alerts_published"] == 2
    alerts = [decode_alert(r.value) for r in read_topic(settings, settings.topic_alerts)]
    assert [a.status for a in alerts] == ["firing", "resolved"]
    with Store(settings.store_path, readonly=True) as store:
        assert [a.status for a in store.alerts()] == ["resolved", "firing"]


def test_a_backlog_after_a_quiet_spell_closes_no_tick_without_the_other_partitions(
    world, kafka_settings, tmp_path
):
    """The service sat idle after joining (its partitions quiet longer than
    ``partition_idle_s``); then one partition's readings of every step arrive before the
    others'. The idle partitions hold the watermark at real-time pace, so no tick closes
    without their sensors and none of their readings is late."""
    import time

    from pipeline.kafka.schema import Reading, encode_reading

    settings = kafka_settings.model_copy(update={"store_path": tmp_path / "store.sqlite"})
    ensure_topics(settings, partitions=3)
    config = ServiceConfig(allowed_lateness="0min", durable=False, partition_idle_s=0.5)
    service = ForecastService(settings, config, load_bundles(world.bundles))
    live, sensors = world.live.slice(0, 20), list(world.live.sensor_ids)
    first, rest = sensors[:2], sensors[2:]
    producer = make_producer(settings)

    def send(names: list[str], partition_of: dict[str, int]) -> None:
        for t, ts in enumerate(live.timestamps):
            for name in names:
                value = float(live.values[t, sensors.index(name)])
                payload = encode_reading(Reading(name, ts.to_pydatetime(), value))
                producer.send(
                    settings.topic_readings, key=name.encode(), value=payload,
                    partition=partition_of[name],
                )  # fmt: skip
        producer.flush(WAIT_S)

    try:
        with service_thread(service):
            wait_until(lambda: len(service.partitions.assigned) == 3, what="the assignment")
            time.sleep(3 * config.partition_idle_s)  # every partition idle now
            send(first, dict.fromkeys(first, 0))
            wait_until(lambda: service.counters["consumed"] >= 20 * len(first), what="p0")
            send(rest, {name: 1 + i % 2 for i, name in enumerate(rest)})
            wait_until(lambda: service.counters["ticks_closed"] >= 19, what="19 ticks")
    # The last tick waits for the next one's readings (or its grace); the others are whole.
    finally:
        producer.close()
    assert service.counters["late"] == 0
    with Store(settings.store_path, readonly=True) as store:
        observed = {t.observed for t in store.last_ticks(19)}
    assert observed == {len(sensors)}
