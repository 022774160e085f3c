"""``roadcast serve`` under faults of operation: signals an operator or a terminal sends,
the store failing under it, the model registry changing under it, sensors falling
silent. Each fault either leaves the service forecasting (nothing lost, ``/readyz``
telling the truth) or stops it in one clear line."""

from __future__ import annotations

import dataclasses
import signal
import sqlite3
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


class _Outbox:
    """Just what a retry does with the outbox: drop what the failed batch queued."""

    def abort(self) -> None:
        pass


def test_a_failing_store_transaction_names_the_store_and_cause_and_one_traceback(
    world, tmp_path, caplog, monkeypatch
):
    """Another program holds a write transaction on the store: every retry logged the
    whole traceback and neither the store nor the likely cause. ``batch_failed`` now
    names both in one line, with the traceback only the first time the error comes (and
    again for another error)."""
    import logging
    import sqlite3

    from pipeline.service.processor import PollReport
    from pipeline.service.store_rows import Batch
    from pipeline.settings import load_settings

    path = tmp_path / "store.sqlite"
    service = ForecastService(load_settings(store_path=path), CONFIG, load_bundles(world.bundles))
    monkeypatch.setattr(service, "recover", lambda consumer, outbox, stop: outbox)
    caplog.set_level(logging.INFO, logger="roadcast.service")
    stop = threading.Event()
    stop.set()  # no backoff wait
    locker = sqlite3.connect(path, isolation_level=None)
    try:
        service.store._db.execute("PRAGMA busy_timeout=0")
        locker.execute("BEGIN IMMEDIATE")
        for _ in range(3):
            with pytest.raises(sqlite3.OperationalError, match="locked") as failed:
                service._store(PollReport(), Batch())
            service._retry(None, _Outbox(), stop, failed.value)
        readiness = service._store_error
        service._retry(None, _Outbox(), stop, sqlite3.OperationalError("database or disk is full"))
    finally:
        locker.execute("ROLLBACK")
        locker.close()
        service.store.close()
    logged = [r for r in caplog.records if r.getMessage() == "batch_failed"]
    fields = [r.fields for r in logged]  # type: ignore[attr-defined]
    assert [f["store"] for f in fields] == [str(path)] * 4
    assert all("another process holds a write transaction" in f["cause"] for f in fields[:3])
    assert "disk (or quota) holding the store is full" in fields[3]["cause"]
    assert [r.exc_info is not None for r in logged] == [True, False, False, True]
    assert readiness is not None and "another process holds a write transaction" in readiness


@pytest.mark.integration
def test_a_batch_mostly_ahead_of_this_machine_s_clock_warns_once_and_is_counted(
    world, kafka_settings, tmp_path, caplog, monkeypatch
):
    """This machine's clock set back two hours: every reading was dead-lettered as
    ``future_timestamp`` while nothing said the clock may be this machine's. A batch
    mostly refused so now logs ``clock_behind_suspected`` (this machine's time, the
    readings' median), at most once per CLOCK_WARN_EVERY_S, and each such batch counts
    in ``roadcast_errors_total{kind="clock_suspect_batches"}``."""
    import logging

    from kafka import TopicPartition
    from kafka.consumer.fetcher import ConsumerRecord

    from pipeline.kafka.clients import make_producer
    from pipeline.kafka.outbox import Outbox
    from pipeline.kafka.schema import encode_readings_batch
    from pipeline.service.metrics import ServiceMetrics

    settings = kafka_settings.model_copy(update={"store_path": tmp_path / "store.sqlite"})
    ensure_topics(settings)
    metrics = ServiceMetrics(process=False)
    service = ForecastService(settings, CONFIG, load_bundles(world.bundles), metrics=metrics)
    caplog.set_level(logging.INFO, logger="roadcast.service")
    stamps = world.live.timestamps

    def record(offset: int) -> ConsumerRecord:
        value = encode_readings_batch(
            stamps[offset].to_pydatetime(), {s: 50.0 for s in world.live.sensor_ids}
        )
        return ConsumerRecord(
            topic=settings.topic_readings, partition=0, leader_epoch=-1, offset=offset,
            timestamp=-1, timestamp_type=0, key=None, value=value, headers=[], checksum=None,
            serialized_key_size=-1, serialized_value_size=-1, serialized_header_size=-1,
        )  # fmt: skip

    tp = TopicPartition(settings.topic_readings, 0)
    behind_ns = stamps[0].value - 2 * 3_600_000_000_000
    outbox = Outbox(make_producer(settings))
    reports = []
    try:
        for first in (0, 3):  # two batches of 3 records of 4 sensors: 12 readings each
            batch = {tp: [record(first + k) for k in range(3)]}
            report, rows = service.process(batch, outbox, now_ns=behind_ns)
            outbox.flush(60)
            service.finish(report, rows, flushed_at_ms=behind_ns // 1_000_000)
            reports.append(report)
    finally:
        outbox.close(60)
        service.store.close()
    assert [r.counts["dead_lettered"] for r in reports] == [3, 3]
    assert [r.counts["clock_suspect_batches"] for r in reports] == [1, 1]
    warned = [r for r in caplog.records if r.getMessage() == "clock_behind_suspected"]
    assert len(warned) == 1, "rate-limited: one line for both batches"
    fields = warned[0].fields  # type: ignore[attr-defined]
    machine = (stamps[0] - pd.Timedelta(hours=2)).isoformat(timespec="seconds")
    assert fields["machine_clock"] == machine
    assert fields["readings_median"] == stamps[1].isoformat(timespec="seconds")
    assert "this machine's clock" in fields["hint"]
    sample = {"kind": "clock_suspect_batches"}
    assert metrics.registry.get_sample_value("roadcast_errors_total", sample) == 2


@pytest.mark.integration
def test_a_store_of_another_network_is_refused_before_the_group_join(
    world, kafka_settings, tmp_path
):
    """``roadcast serve`` on a store of another sensor network was refused only after it
    had created the topics and joined the consumer group (every other member
    rebalancing for a service that then exits). The pre-flight now refuses it: no topic
    created, no join."""
    from pipeline.kafka.clients import make_admin
    from tests.service_support import start_service, store_with
    from tests.waiting import WAIT_S

    ts_ms = int(world.live.timestamps[5].value // 1_000_000)
    tick_ms = int(world.live.timestamps.freq.nanos // 1_000_000)
    store = store_with(
        tmp_path / "store.sqlite",
        "INSERT INTO sensors(id, name) VALUES (1, 'east-1'), (2, 'east-2')",
        f"INSERT INTO readings VALUES ({ts_ms}, 1, 50.0, {ts_ms}), ({ts_ms}, 2, 51.0, {ts_ms})",
        f"INSERT INTO state VALUES ('tick_ms', {tick_ms}), ('last_closed', {ts_ms // tick_ms}),"
        f" ('max_ts_ns', {ts_ms * 1_000_000}), ('watermark_ns', {ts_ms * 1_000_000})",
    )
    log = tmp_path / "service.log"
    proc = start_service(kafka_settings, world.bundles, store, log)
    try:
        code = proc.wait(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert code == 1, text[-3000:]
    assert "holds the readings of another sensor network (east-1, east-2" in text
    assert "Traceback" not in text
    for event in ("group_joined", "waiting_for_group", "partitions_assigned"):
        assert f'"event": "{event}"' not in text, event
    admin = make_admin(kafka_settings)
    try:
        assert kafka_settings.topic_readings not in admin.list_topics()  # never touched
    finally:
        admin.close()


def test_a_read_only_store_is_refused_by_the_pre_flight(world, tmp_path, monkeypatch, capsys):
    """A store file this service's user cannot write (as root, the OS would let it:
    ``os.access`` stands in for another user) was refused only once the store opened,
    after the group join; the pre-flight refuses it now."""
    import os

    import typer

    from flows.cli.streaming import _preflight
    from tests.service_support import store_with

    store = store_with(tmp_path / "store.sqlite")
    access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: access(p, mode) and not (p == store and mode & os.W_OK)
    )
    config = ServiceConfig(tick=world.live.timestamps.freq)
    with pytest.raises(typer.Exit):
        _preflight(world.bundles, store, None, config)
    assert f"the store {store} is read-only" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["text counter", "not a file"])
def test_a_store_the_service_cannot_read_back_is_refused_by_the_pre_flight(
    world, tmp_path, capsys, case
):
    """A counter stored as text failed after the group join with a bare ``invalid literal
    for int()``; /dev/null as the store was refused only after the join."""
    from pathlib import Path

    import typer

    from flows.cli.streaming import _preflight
    from tests.service_support import store_with

    if case == "text counter":
        store = store_with(
            tmp_path / "store.sqlite", "INSERT OR REPLACE INTO counters VALUES('consumed', 'lots')"
        )
        says = f"the store {store} holds a value roadcast cannot read (invalid literal"
    else:
        store, says = Path("/dev/null"), "/dev/null is not a regular file"
    config = ServiceConfig(tick=world.live.timestamps.freq)
    with pytest.raises(typer.Exit) as refused:
        _preflight(world.bundles, store, None, config)
    assert refused.value.exit_code == 1
    assert says in capsys.readouterr().err


def test_a_damaged_store_is_refused_at_start_in_one_line_naming_it(world, kafka_settings, tmp_path):
    """A store whose readings table is damaged: start-up restores from it and failed with
    SQLite's bare ``database disk image is malformed`` (an "unexpected" error on the
    command line); it now names the store and what to do."""
    from pipeline.service.store import StoreError

    path = tmp_path / "store.sqlite"
    settings = kafka_settings.model_copy(update={"store_path": path})
    ensure_topics(settings)
    service = ForecastService(settings, CONFIG, load_bundles(world.bundles))
    with service_thread(service):
        produce_panel(settings, world.live)
        wait_until(lambda: service.counters["ticks_closed"] >= 5, what="some ticks")
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        query = "SELECT rootpage FROM sqlite_master WHERE name = 'readings'"
        (page,) = db.execute(query).fetchone()
        (size,) = db.execute("PRAGMA page_size").fetchone()
    with path.open("r+b") as f:  # the readings table's first page: garbage
        f.seek((page - 1) * size)
        f.write(b"\xa5" * size)
    with pytest.raises(StoreError, match="damaged") as refused:
        ForecastService(settings, CONFIG, load_bundles(world.bundles))
    assert str(path) in str(refused.value) and "malformed" in str(refused.value)
