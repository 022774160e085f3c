"""``roadcast serve`` under faults of operation: signals an operator or a terminal sends,
the store failing under it, the model registry changing under it, sensors falling
silent. Each fault either leaves the service forecasting (nothing lost, ``/readyz``
telling the truth) or stops it in one clear line."""

from __future__ import annotations

import dataclasses
import signal
import threading

import pandas as pd
import pytest

from pipeline.kafka.clients import ensure_topics
from pipeline.model_dir import load_bundles
from pipeline.service.config import ServiceConfig
from pipeline.service.loop import ForecastService
from pipeline.service.runtime import install_signal_handlers, restore_signal_handlers
from tests.service_support import (
    make_world,
    produce_panel,
    service_thread,
    start_service,
    stop_service,
    store_counters,
    wait_started,
)
from tests.waiting import wait_until

CONFIG = ServiceConfig(allowed_lateness="0min", durable=False, poll_timeout_ms=50)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("bundles"), sensors=4, live_steps=12)


@pytest.mark.integration
def test_sighup_stops_the_service_cleanly_like_sigterm(world, kafka_settings, tmp_path):
    """``kill -HUP`` (or the terminal of a foreground ``roadcast serve`` closing): its
    default action killed the service mid-batch without a line, leaving the group to
    wait for its session to time out. It now finishes the batch, commits, leaves the
    group and exits 0 like SIGTERM."""
    settings = kafka_settings
    store, log = tmp_path / "store.sqlite", tmp_path / "service.log"
    proc = start_service(settings, world.bundles, store, log)
    try:
        wait_started(log)
        produced = produce_panel(settings, world.live)
        wait_until(
            lambda: store_counters(store).get("consumed", 0) >= produced,
            what="every reading stored",
            details=lambda: log.read_text()[-3000:],
        )
    finally:
        code = stop_service(proc, signal.SIGHUP)
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert '"signal": "SIGHUP"' in text and '"event": "stopped"' in text


def test_sighup_stays_ignored_under_nohup():
    """A service started with ``nohup`` (SIGHUP ignored) keeps ignoring it."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are set from the main thread only")
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        previous = install_signal_handlers(threading.Event())
        try:
            assert signal.SIGHUP not in previous
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
            assert {signal.SIGTERM, signal.SIGINT} <= set(previous)
        finally:
            restore_signal_handlers(previous)
    finally:
        signal.signal(signal.SIGHUP, before)


@pytest.mark.integration
def test_a_store_of_another_sensor_network_is_refused_in_one_line(world, kafka_settings, tmp_path):
    """A store written by a service of other sensors (a copied ``--store`` path, a
    service moved to another network's models): its last tick, a week ahead of this
    network's readings, made every reading ``late`` (kept as a correction, never
    forecast) while ``/readyz`` said ready. The service now refuses it at start, naming
    both networks."""
    from models.forecasters.baselines import Persistence
    from pipeline.data.simulate import simulate_network

    panel = simulate_network(sensors=3, days=1.5, seed=5, faults_per_day=0.0, dropout=0.0)
    other = dataclasses.replace(panel, sensor_ids=("east-1", "east-2", "east-3"), graph=None)
    Persistence(window=4, horizon=3).fit(other.slice(0, 300)).save(tmp_path / "east" / "p")
    path = tmp_path / "store.sqlite"
    settings = kafka_settings.model_copy(update={"store_path": path})
    ensure_topics(settings)
    week = 7 * 288
    live = other.slice(300, 306)
    ahead = world.live.timestamps[:6] + week * live.timestamps.freq
    live = dataclasses.replace(live, timestamps=ahead)
    east = ForecastService(settings, CONFIG, load_bundles(tmp_path / "east"))
    with service_thread(east):
        produce_panel(settings, live)
        wait_until(lambda: east.counters["ticks_closed"] >= 5, what="the other network's ticks")

    with pytest.raises(ValueError, match="another sensor network") as refused:
        ForecastService(settings, CONFIG, load_bundles(world.bundles))
    message = str(refused.value)
    assert "east-1" in message and "s00000" in message and str(path) in message


@pytest.mark.integration
def test_readings_ahead_of_a_clock_set_back_name_this_machine_s_clock(
    world, kafka_settings, tmp_path
):
    """This machine's clock set back two hours: every reading is more than
    ``--max-clock-skew`` ahead of it and dead-lettered. The reason blamed the sensor's
    clock alone; it now gives this machine's time and names it as the other suspect."""
    from kafka import TopicPartition
    from kafka.consumer.fetcher import ConsumerRecord

    from pipeline.kafka.clients import make_producer
    from pipeline.kafka.outbox import Outbox
    from pipeline.kafka.schema import encode_readings_batch
    from tests.service_support import read_topic

    settings = kafka_settings.model_copy(update={"store_path": tmp_path / "store.sqlite"})
    ensure_topics(settings)
    service = ForecastService(settings, CONFIG, load_bundles(world.bundles))
    ts = world.live.timestamps[0].to_pydatetime()
    value = encode_readings_batch(ts, {s: 50.0 for s in world.live.sensor_ids})
    record = ConsumerRecord(
        topic=settings.topic_readings, partition=0, leader_epoch=-1, offset=0,
        timestamp=-1, timestamp_type=0, key=None, value=value, headers=[], checksum=None,
        serialized_key_size=-1, serialized_value_size=-1, serialized_header_size=-1,
    )  # fmt: skip
    outbox = Outbox(make_producer(settings))
    try:
        behind_ns = world.live.timestamps[0].value - 2 * 3_600_000_000_000
        report, _ = service.process(
            {TopicPartition(settings.topic_readings, 0): [record]}, outbox, now_ns=behind_ns
        )
        outbox.flush(60)
    finally:
        outbox.close(60)
        service.store.close()
    assert report.counts["dead_lettered"] == 1
    [letter] = read_topic(settings, settings.topic_dlq)
    message = dict(letter.headers)["error.message"].decode()
    machine = world.live.timestamps[0] - pd.Timedelta(hours=2)
    assert machine.isoformat(timespec="seconds") in message and "this machine's" in message
