"""Replay: readings in timestamp order, keyed by sensor, missing ones skipped, paced."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kafka.errors import KafkaError

from models.panel import SensorPanel
from pipeline.kafka.broker import EmbeddedBroker
from pipeline.kafka.clients import close_producer, ensure_topics, make_consumer, make_producer
from pipeline.kafka.replay import ReplayError, ReplayStats, replay
from pipeline.kafka.schema import Reading, decode_readings
from pipeline.settings import Settings, load_settings
from tests.waiting import WAIT_S, wait_until

SENSORS = ("773869", "767541", "767542")


def small_panel(steps: int = 4) -> SensorPanel:
    values = np.array(
        [[55.1, 60.0, 61.25], [54.0, np.nan, 62.5], [53.3, 58.0, 63.0], [52.0, 57.5, 0.0]],
        dtype=np.float32,
    )[:steps]  # [time, node]
    ts = pd.date_range("2012-03-01", periods=steps, freq="5min", tz="UTC")
    return SensorPanel.from_values(values, ts, SENSORS, name="tiny")


def read_all(settings: Settings, topic: str, expected: int) -> list[tuple[bytes, Reading]]:
    """Every message of partition 0 from the start (no group: nothing to wait for)."""
    from kafka import TopicPartition

    consumer = make_consumer(settings, group_id="")
    consumer.assign([TopicPartition(topic, 0)])
    consumer.seek_to_beginning()
    out: list[tuple[bytes, Reading]] = []

    def read() -> bool:
        for records in consumer.poll(timeout_ms=200).values():
            for record in records:
                out.extend((record.key, r) for r in decode_readings(record.value))
        return len(out) >= expected

    try:
        wait_until(read, what=f"{expected} readings on {topic}", poll_s=0)
        # Anything beyond `expected` would be a duplicate: give it a moment to show up.
        for records in consumer.poll(timeout_ms=300).values():
            out.extend((rec.key, r) for rec in records for r in decode_readings(rec.value))
    finally:
        consumer.close()
    return out


@pytest.mark.integration
def test_replay_sends_observed_readings_in_time_order(kafka_settings) -> None:
    topic = kafka_settings.topic_readings
    ensure_topics(kafka_settings, topics=[topic], partitions=1)
    panel = small_panel()
    producer = make_producer(kafka_settings)
    try:
        stats = replay(panel, producer, topic, progress=False)
    finally:
        producer.close()

    assert isinstance(stats, ReplayStats)
    assert (stats.messages, stats.steps, stats.sensors, stats.skipped_missing) == (11, 4, 3, 1)
    assert stats.first_ts == panel.timestamps[0] and stats.last_ts == panel.timestamps[-1]
    assert stats.bytes > 11 * 50 and stats.rate > 0
    assert stats.as_dict()["first_ts"] == "2012-03-01T00:00:00Z"

    got = read_all(kafka_settings, topic, 11)
    assert len(got) == 11
    assert all(key == reading.sensor.encode() for key, reading in got)
    expected = [
        (SENSORS[n], panel.timestamps[t], float(np.format_float_positional(panel.values[t, n])))
        for t in range(4)
        for n in range(3)
        if panel.mask[t, n]
    ]
    assert [(r.sensor, r.ts, r.value) for _, r in got] == expected
    # float32 goes out as its shortest decimal: 55.1, not 55.099998474121094.
    assert got[0][1].value == 55.1
    # An observed zero is a reading, not a missing value.
    assert got[-1][1].value == 0.0


@pytest.mark.integration
def test_replay_limit_counts_time_steps(kafka_settings) -> None:
    topic = kafka_settings.topic_readings
    ensure_topics(kafka_settings, topics=[topic], partitions=1)
    producer = make_producer(kafka_settings)
    try:
        stats = replay(small_panel(), producer, topic, limit=2, progress=True)
        empty = replay(small_panel(), producer, topic, limit=0, progress=False)
    finally:
        producer.close()
    assert (stats.steps, stats.messages) == (2, 5)
    assert (empty.steps, empty.messages, empty.first_ts) == (0, 0, None)
    assert len(read_all(kafka_settings, topic, 5)) == 5


@pytest.mark.integration
def test_replay_paces_steps_by_the_speedup(kafka_settings) -> None:
    topic = kafka_settings.topic_readings
    ensure_topics(kafka_settings, topics=[topic], partitions=1)
    producer = make_producer(kafka_settings)
    try:
        # 3 steps of 5 minutes span 10 minutes; at 3000x that is 0.2 s at least.
        stats = replay(small_panel(3), producer, topic, speedup=3000.0, progress=False)
    finally:
        producer.close()
    assert stats.seconds >= 600 / 3000
    assert stats.messages == 8


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"speedup": -1.0}, "speedup"),
        ({"speedup": float("inf")}, "speedup"),
        ({"limit": -1}, "limit"),
    ],
)
def test_replay_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        replay(small_panel(), None, "topic", progress=False, **kwargs)  # type: ignore[arg-type]


def test_replay_rejects_a_3d_panel() -> None:
    values = np.ones((2, 3, 2), dtype=np.float32)  # [time, node, feature]
    ts = pd.date_range("2012-03-01", periods=2, freq="5min", tz="UTC")
    panel = SensorPanel.from_values(values, ts, SENSORS, features=("speed", "flow"))
    with pytest.raises(ValueError, match="select one feature"):
        replay(panel, None, "topic", progress=False)  # type: ignore[arg-type]


@pytest.mark.integration
@pytest.mark.parametrize(
    ("speedup", "delivery_ms"),
    [(0.0, 1500), (1e6, 30_000)],  # paced, sends outliving the flush: a flush per step times out
)
def test_replay_to_a_dead_broker_raises(tmp_path: Path, speedup: float, delivery_ms: int) -> None:
    with EmbeddedBroker(log_path=tmp_path / "b.log", startup_timeout_s=WAIT_S) as own:
        settings = load_settings(bootstrap_servers=own.bootstrap)
        ensure_topics(settings, topics=["doomed"], partitions=1)
        producer = make_producer(
            settings,
            max_block_ms=1000,
            request_timeout_ms=500,
            delivery_timeout_ms=delivery_ms,
            reconnect_backoff_max_ms=200,
        )

        def warmed_up() -> bool:  # the short timeouts above are for the dead broker
            try:
                producer.send("doomed", b"warm-up").get(WAIT_S)
            except KafkaError:
                return False
            return True

        wait_until(warmed_up, what="a first message to the live broker")
        own.stop()
        try:
            with pytest.raises(ReplayError, match="doomed"):
                replay(
                    small_panel(), producer, "doomed", speedup=speedup, progress=False,
                    flush_timeout_s=3,
                )  # fmt: skip
        finally:
            close_producer(producer, 1.0)
