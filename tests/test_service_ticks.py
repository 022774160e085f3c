"""When the service closes ticks, on the real embedded broker: a reading stamped far ahead
does not move the watermark (issue 11, case 4), silent sensors go down with an alert and
come back, and the processing-time grace closes ticks on time but never during a
backlog. The processing clock is the test's, so nothing depends on the machine's speed.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipeline.kafka.clients import ensure_topics, make_consumer, make_producer
from pipeline.kafka.outbox import Outbox
from pipeline.kafka.schema import Reading, decode_alert, encode_reading
from pipeline.model_dir import load_bundles
from pipeline.service.batches import _highwater
from pipeline.service.config import ServiceConfig
from pipeline.service.loop import ForecastService
from pipeline.service.processor import PollProcessor, PollReport
from pipeline.service.store import Store
from pipeline.settings import Settings
from tests.service_support import make_world, read_topic, service_thread
from tests.waiting import WAIT_S, wait_until

pytestmark = pytest.mark.integration

FREQ = pd.Timedelta("5min")
PARTITIONS = 4


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("bundles"))


class Clock:
    """A processing clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Feed:
    """Readings into the topic, and back as the records a consumer polls, per partition."""

    def __init__(self, settings: Settings) -> None:
        from kafka import TopicPartition

        ensure_topics(settings, partitions=PARTITIONS)
        self.topic = settings.topic_readings
        self.producer = make_producer(settings)
        self.consumer = make_consumer(settings, group_id="")
        self.consumer.assign([TopicPartition(self.topic, p) for p in range(PARTITIONS)])
        self.consumer.seek_to_beginning()
        self.sent = 0
        self.read = 0

    def send(self, readings: Iterable[tuple[str, pd.Timestamp, float]]) -> None:
        for sensor, ts, value in readings:
            reading = Reading(sensor, ts.to_pydatetime(), value)
            self.producer.send(self.topic, key=sensor.encode(), value=encode_reading(reading))
            self.sent += 1
        self.producer.flush(WAIT_S)

    def poll(self) -> dict[Any, list[Any]]:
        """Every record sent and not read yet, per partition."""
        out: dict[Any, list[Any]] = {}

        def read_all() -> bool:
            for tp, records in self.consumer.poll(timeout_ms=200).items():
                out.setdefault(tp, []).extend(records)
                self.read += len(records)
            return self.read >= self.sent

        wait_until(read_all, what=f"{self.sent - self.read} readings to be read", poll_s=0)
        return out

    def highwater(self) -> Any:
        return _highwater(self.consumer)

    def close(self) -> None:
        self.producer.close()
        self.consumer.close()


def step(processor: PollProcessor, outbox: Outbox, batches: Mapping[Any, Sequence[Any]], feed: Feed,
         now: pd.Timestamp | None = None) -> PollReport:  # fmt: skip
    """One poll batch through the service: process, flush, store."""
    now_ns = None if now is None else int(now.value)
    report, batch = processor.process(batches, outbox, highwater=feed.highwater(), now_ns=now_ns)
    outbox.flush(WAIT_S)
    processor.finish(report, batch, flushed_at_ms=int(time.time() * 1000))
    return report


def readings(sensors: Sequence[str], ts: pd.Timestamp, value: float = 50.0) -> list:
    return [(s, ts, value + i) for i, s in enumerate(sensors)]


def closed(report: PollReport) -> list[tuple[pd.Timestamp, str, int]]:
    return [(t.ts, t.reason, t.observed) for t in report.ticks]


@pytest.fixture
def settings(kafka_settings, tmp_path: Path) -> Settings:
    return kafka_settings.model_copy(update={"store_path": tmp_path / "store.sqlite"})


def _no_lateness(
    world, settings: Settings
) -> tuple[Clock, ServiceConfig, PollProcessor, Feed, Outbox]:
    """A processor with no allowed lateness on a hand-moved clock, a feed into its
    topic and an outbox."""
    clock = Clock()
    config = ServiceConfig(allowed_lateness="0min", durable=False)
    processor = PollProcessor(settings, config, load_bundles(world.bundles), clock=clock)
    return clock, config, processor, Feed(settings), Outbox(make_producer(settings))


def test_one_reading_55_minutes_ahead_leaves_the_ticks_alone(world, settings):
    """Issue 11, case 4: with the other partitions idle, one reading 55 minutes ahead (in
    the 1-hour clock-skew allowance) moved the watermark to its time: the current tick
    closed with half of its sensors and every reading after it was late."""
    clock, config, processor, feed, outbox = _no_lateness(world, settings)
    sensors = list(processor.sensor_ids)
    wall = pd.Timestamp.now(tz="UTC")
    current = wall.floor(FREQ)
    try:
        for k in (3, 2, 1):  # the last quarter hour, every sensor
            feed.send(readings(sensors, current - k * FREQ))
        feed.send(readings(sensors[:3], current))  # the current tick: half the sensors so far
        first = step(processor, outbox, feed.poll(), feed, wall)
        assert [t.reason for t in first.ticks] == ["complete"] * 3
        clock.now += 3 * config.partition_idle_s  # the other partitions are idle now
        feed.send([(sensors[4], current + pd.Timedelta("55min"), 99.0)])
        ahead = step(processor, outbox, feed.poll(), feed, wall)
        assert ahead.counts["dead_lettered"] == 0  # within the skew: kept, not rejected
        assert closed(ahead) == []  # the current tick did not close with half its sensors
        assert processor.assembler.watermark_ns <= int(current.value)  # not 55 minutes on
        clock.now += 1.0
        feed.send(readings(sensors[3:], current))
        for k in (1, 2):
            feed.send(readings(sensors, current + k * FREQ))
        after = step(processor, outbox, feed.poll(), feed, wall)
    finally:
        feed.close()
        outbox.close(5)
    assert after.counts["late"] == 0
    assert closed(after) == [(current + k * FREQ, "complete", len(sensors)) for k in range(3)]
    assert processor.counters["late"] == 0
    assert processor.counters["ticks_closed"] == 6


def test_a_late_reading_moves_no_partition_s_event_time(world, settings):
    """One reading stamped a month back (counted late, stored as a correction) set the
    oldest event time the idle partitions' watermark cap starts from: ticks then stopped
    closing on the watermark."""
    clock, config, processor, feed, outbox = _no_lateness(world, settings)
    sensors = list(processor.sensor_ids)
    wall = pd.Timestamp.now(tz="UTC")
    current = wall.floor(FREQ)
    try:
        for k in (3, 2, 1):
            feed.send(readings(sensors, current - k * FREQ))
        step(processor, outbox, feed.poll(), feed, wall)
        tracker = processor.partitions
        before = (tracker.oldest_event_ns, dict(tracker.max_event_ns))
        clock.now += 1.0
        feed.send([(sensors[0], current - pd.Timedelta("30D"), 1.0)])
        late = step(processor, outbox, feed.poll(), feed, wall)
        assert late.counts["late"] == 1
        assert (tracker.oldest_event_ns, dict(tracker.max_event_ns)) == before
        feed.send(readings(sensors[:2], current))  # a tick only two sensors report
        for k in (1, 2):
            feed.send(readings(sensors, current + k * FREQ))
        clock.now += 3 * config.partition_idle_s
        after = step(processor, outbox, feed.poll(), feed, wall)
    finally:
        feed.close()
        outbox.close(5)
    assert [t.ts for t in after.ticks][:2] == [current, current + FREQ]


def test_a_silent_sensor_goes_down_with_an_alert_and_comes_back(world, settings):
    from rich.console import Console

    from flows.status import print_status, status_summary

    clock = Clock()
    config = ServiceConfig(allowed_lateness="0min", durable=False, down_after=2)
    models = load_bundles(world.bundles)
    processor = PollProcessor(settings, config, models, clock=clock)
    sensors = list(processor.sensor_ids)
    silent, others = sensors[2], sensors[:2] + sensors[3:]
    start = world.live.timestamps[0]
    feed, outbox = Feed(settings), Outbox(make_producer(settings))
    reports = []
    try:
        for k in range(4):
            feed.send(readings(others, start + k * FREQ))
            clock.now += 1.0
            reports.append(step(processor, outbox, feed.poll(), feed))
        # ticks 0 and 1 waited for the watermark; then the sensor is down: 2 closes at once
        assert [closed(r) for r in reports] == [
            [],
            [(start, "watermark", 5)],
            [(start + FREQ, "watermark", 5), (start + 2 * FREQ, "complete", 5)],
            [(start + 3 * FREQ, "complete", 5)],
        ]
        assert reports[2].counts["sensors_down"] == 1
        summary = status_summary(settings.store_path)
        assert summary["sensors_down"] == [{"sensor": silent, "since": start.isoformat()}]
        console = Console(file=io.StringIO(), width=120)
        print_status(settings.store_path, console=console)
        assert "1 sensors down" in console.file.getvalue() and silent in console.file.getvalue()

        # a restarted service knows it is down and resolves the same alert
        restarted = PollProcessor(settings, config, models, clock=clock)
        assert restarted.assembler.down.tolist() == processor.assembler.down.tolist()
        feed.send(readings(sensors, start + 4 * FREQ))
        back = step(restarted, outbox, feed.poll(), feed)
    finally:
        feed.close()
        outbox.close(5)
    assert closed(back) == [(start + 4 * FREQ, "complete", 6)]
    assert back.counts["sensors_back"] == 1
    assert status_summary(settings.store_path)["sensors_down"] == []
    alerts = [(r.key, decode_alert(r.value)) for r in read_topic(settings, settings.topic_alerts)]
    assert [(key, a.status, a.detector) for key, a in alerts] == [
        (silent.encode(), "firing", "sensor_down"),
        (silent.encode(), "resolved", "sensor_down"),
    ]
    fired, resolved = (a for _, a in alerts)
    assert fired.alert_id == resolved.alert_id == f"{silent}:sensor_down@{_iso(start)}"
    assert pd.Timestamp(fired.ts) == start + FREQ and pd.Timestamp(resolved.ts) == start + 4 * FREQ
    assert restarted.counters["alerts_published"] == 2


def test_grace_closes_a_tick_a_sensor_skipped_but_never_during_a_backlog(world, settings):
    clock = Clock()
    config = ServiceConfig(allowed_lateness="0min", durable=False, grace="2s")
    processor = PollProcessor(settings, config, load_bundles(world.bundles), clock=clock)
    sensors = list(processor.sensor_ids)
    start = world.live.timestamps[0]
    feed, outbox = Feed(settings), Outbox(make_producer(settings))
    try:
        feed.send(readings(sensors[:5], start))  # one sensor skips this tick
        assert closed(step(processor, outbox, feed.poll(), feed)) == []
        feed.send([(sensors[0], start + FREQ, 1.0)])  # the next tick begins...
        fetched = feed.poll()  # ...and waits in the consumer: a backlog
        clock.now += 10.0  # far past the grace
        assert not processor.grace_due(feed.highwater())
        assert closed(step(processor, outbox, {}, feed)) == []
        caught_up = step(processor, outbox, fetched, feed)  # the backlog is read
        assert closed(caught_up) == [(start, "grace", 5)]
        feed.send([(sensors[5], start, 7.0)])  # the skipped reading, after the grace
        late = step(processor, outbox, feed.poll(), feed)
    finally:
        feed.close()
        outbox.close(5)
    assert late.counts["late"] == 1


def test_the_loop_closes_the_last_tick_on_grace_without_new_readings(world, settings):
    """A sensor that never reports (and is never marked down): the last tick, with no
    readings after it, is closed by the loop on the grace without waiting for a
    reading."""
    config = ServiceConfig(
        allowed_lateness="0min", durable=False, poll_timeout_ms=50, grace="0.2s", down_after=None
    )
    models = load_bundles(world.bundles)
    service = ForecastService(settings, config, models)
    sensors = list(service.sensor_ids)
    live = world.live.slice(0, 5)
    feed = Feed(settings)
    try:
        for ts in live.timestamps:
            feed.send(readings(sensors[1:], ts))
    finally:
        feed.close()
    with service_thread(service):
        wait_until(lambda: service.counters["ticks_closed"] >= live.n_time, what="every tick")
    counters = dict(service.counters)
    assert counters["late"] == 0 and counters["ticks_closed"] == live.n_time, counters
    assert counters.get("ticks_closed.grace", 0) >= 1, counters  # the last one, at least
    with Store(settings.store_path, readonly=True) as store:
        assert [t.observed for t in store.last_ticks(live.n_time)] == [5] * live.n_time


def _iso(ts: pd.Timestamp) -> str:
    from pipeline.kafka.schema import format_timestamp

    moment: datetime = ts.to_pydatetime()
    return format_timestamp(moment)


def test_a_second_value_for_a_tick_is_warned_about_once(world, settings, caplog):
    import logging

    caplog.set_level(logging.WARNING, logger="roadcast.service")
    config = ServiceConfig(allowed_lateness="0min", durable=False)
    processor = PollProcessor(settings, config, load_bundles(world.bundles), clock=Clock())
    sensors = list(processor.sensor_ids)
    start = world.live.timestamps[0]
    feed, outbox = Feed(settings), Outbox(make_producer(settings))
    try:
        feed.send(readings(sensors[:2], start, 50.0))
        feed.send(readings(sensors[:2], start + pd.Timedelta("1min"), 51.0))  # finer than a tick
        feed.send(readings(sensors[:2], start + pd.Timedelta("2min"), 52.0))
        report = step(processor, outbox, feed.poll(), feed)
    finally:
        feed.close()
        outbox.close(5)
    assert report.counts["conflict"] == 4
    warned = [r for r in caplog.records if r.getMessage() == "reading_conflict"]
    assert len(warned) == 1 and warned[0].__dict__["fields"]["sensor"] in sensors[:2]
    assert "--tick" in warned[0].__dict__["fields"]["hint"]
