"""The service as a real process: SIGKILL mid-stream and restart, SIGTERM drains, and a
broker that disappears and comes back empty."""

from __future__ import annotations

import re
import signal
import sqlite3
import threading
import time
from collections import Counter

import pytest

from pipeline.kafka.broker import EmbeddedBroker, free_port
from pipeline.kafka.clients import ensure_topics, make_admin, make_producer
from pipeline.kafka.replay import replay
from pipeline.kafka.schema import decode_forecast
from pipeline.model_dir import load_bundles
from pipeline.service.config import ServiceConfig
from pipeline.service.loop import ForecastService
from pipeline.service.store import Store
from pipeline.settings import load_settings
from tests.service_support import (
    make_world,
    produce_panel,
    read_topic,
    service_thread,
    start_service,
    stop_service,
    store_counters,
    wait_started,
)
from tests.waiting import WAIT_S, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# One 5-minute step every 100 ms of wall time: the stream lasts seconds, not minutes.
SPEEDUP = 300 / 0.1


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("bundles"), live_steps=60)


def _replay_in_background(settings, panel) -> tuple[threading.Thread, list]:
    done: list = []

    def produce() -> None:
        producer = make_producer(settings)
        try:
            done.append(
                replay(panel, producer, settings.topic_readings, speedup=SPEEDUP, progress=False)
            )
        finally:
            producer.close()

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    return thread, done


def test_sigkill_mid_stream_then_restart_loses_nothing(world, kafka_settings, tmp_path):
    settings = kafka_settings
    ensure_topics(settings)
    store, log = tmp_path / "store.sqlite", tmp_path / "first.log"
    first = start_service(settings, world.bundles, store, log)
    wait_started(log)
    producer_thread, stats = _replay_in_background(settings, world.live)
    try:
        wait_until(lambda: store_counters(store).get("ticks_closed", 0) >= 15, what="15 ticks")
    finally:
        code = stop_service(first, signal.SIGKILL)
    assert code == -signal.SIGKILL
    steps = world.live.n_time
    assert store_counters(store)["ticks_closed"] < steps  # killed mid-stream
    producer_thread.join(timeout=WAIT_S)
    (produced,) = stats
    log = tmp_path / "second.log"
    second = start_service(settings, world.bundles, store, log)
    wait_started(log)
    try:
        wait_until(lambda: store_counters(store).get("ticks_closed", 0) >= steps, what="all ticks")
    finally:
        assert stop_service(second) == 0, log.read_text()[-3000:]
    assert '"event": "restored"' in log.read_text()  # window and open ticks from the store

    counters = store_counters(store)
    # Exact counters despite the crash: redelivered records are recognised, not recounted.
    assert counters["consumed"] == produced.messages
    assert counters["valid"] == produced.messages
    assert counters["ticks_closed"] == steps
    with Store(store, readonly=True) as db:
        assert db.count("readings") == produced.messages  # no reading lost
        assert db.tick_count() == steps  # every tick closed once
        assert db.count("forecasts") == len(world.models) * world.live.n_nodes * steps
    seen = Counter()
    for record in read_topic(settings, settings.topic_forecasts):
        message = decode_forecast(record.value)
        seen[(message.model, message.sensor, message.issued_at)] += 1
    expected = {
        (model, sensor, ts.to_pydatetime())
        for model in world.models
        for sensor in world.live.sensor_ids
        for ts in world.live.timestamps
    }
    assert set(seen) == expected  # every tick ends with forecasts; duplicates are harmless


def test_sigterm_finishes_the_batch_commits_and_exits_zero(world, kafka_settings, tmp_path):
    settings = kafka_settings
    ensure_topics(settings)
    store, log = tmp_path / "store.sqlite", tmp_path / "service.log"
    proc = start_service(settings, world.bundles, store, log)
    wait_started(log)
    producer_thread, stats = _replay_in_background(settings, world.live.slice(0, 30))
    try:
        wait_until(lambda: store_counters(store).get("ticks_closed", 0) >= 5, what="5 ticks")
    finally:
        code = stop_service(proc, signal.SIGTERM)
    assert code == 0, log.read_text()[-3000:]
    assert '"event": "stopped"' in log.read_text()
    producer_thread.join(timeout=WAIT_S)

    # What the store holds is exactly what Kafka has committed for the group.
    admin = make_admin(settings)
    try:
        committed = admin.list_group_offsets(settings.consumer_group)[settings.consumer_group]
    finally:
        admin.close()
    with Store(store, readonly=True) as db:
        stored = {
            partition: offset
            for (key, partition), offset in db.all_offsets().items()
            if key.split("@")[0] == settings.topic_readings
        }
    committed_by_partition = {tp.partition: meta.offset for tp, meta in committed.items()}
    assert stored and committed_by_partition == stored

    # A restart carries on from there: nothing is consumed twice.
    again = start_service(settings, world.bundles, store, tmp_path / "again.log")
    try:
        wait_until(
            lambda: store_counters(store).get("consumed", 0) >= stats[0].messages, what="the rest"
        )
    finally:
        assert stop_service(again) == 0
    counters = store_counters(store)
    assert counters["consumed"] == stats[0].messages
    assert counters.get("redelivered", 0) == 0


def test_a_second_signal_stops_at_once_and_the_unstored_batch_is_redelivered(
    world, kafka_settings, tmp_path
):
    """Another connection holds a write transaction on the store: the batch's write waits
    in SQLite's busy wait (30 s, in C). The first SIGTERM is acknowledged at once and waits
    for the batch; the second stops the process there, non-zero, with a line naming the
    readings it did not commit. The next run gets them again: nothing is lost."""
    settings = kafka_settings
    ensure_topics(settings)
    store, log = tmp_path / "store.sqlite", tmp_path / "first.log"
    proc = start_service(settings, world.bundles, store, log)
    holder = None
    try:
        wait_started(log)
        holder = sqlite3.connect(store, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # held until the service has exited
        produced = produce_panel(settings, world.live.slice(0, 10))
        # Forecasts out: the batch was flushed, and its store write now waits for the lock.
        wait_until(lambda: read_topic(settings, settings.topic_forecasts), what="forecasts")
        proc.send_signal(signal.SIGTERM)
        wait_until(
            lambda: '"event": "signal"' in log.read_text(),
            what="the first signal to be acknowledged",
            details=lambda: log.read_text()[-3000:],
        )
        code = stop_service(proc, signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if holder is not None:
            holder.close()  # rolls the transaction back
    text = log.read_text()
    assert code == 128 + signal.SIGTERM, text[-3000:]
    found = re.search(r"second signal: stopping now; (\d+) readings will be redelivered", text)
    assert found and 0 < int(found.group(1)) <= produced, text[-3000:]
    assert '"event": "stopped"' not in text  # no commit, no flush: it stopped there

    again = tmp_path / "second.log"
    second = start_service(settings, world.bundles, store, again)
    try:
        wait_until(
            lambda: store_counters(store).get("consumed", 0) >= produced,
            what="the readings the first run did not store",
            details=lambda: again.read_text()[-3000:],
        )
    finally:
        assert stop_service(second) == 0, again.read_text()[-3000:]
    assert store_counters(store)["consumed"] == produced
    with Store(store, readonly=True) as db:
        assert db.count("readings") == produced  # none lost


def test_broker_restart_reconnects_recreates_topics_and_carries_on(world, tmp_path):
    log = tmp_path / "broker.log"
    with EmbeddedBroker(log_path=log, handle_sigterm=False, startup_timeout_s=WAIT_S) as broker:
        settings = load_settings(
            bootstrap_servers=broker.bootstrap,
            consumer_group="restart-test",
            store_path=tmp_path / "store.sqlite",
        )
        ensure_topics(settings)
        config = ServiceConfig(
            allowed_lateness="0min", durable=False, topic_check_every_s=1.0, flush_timeout_s=10.0
        )
        service = ForecastService(settings, config, load_bundles(world.bundles))
        first, second = world.live.slice(0, 10), world.live.slice(10, 20)
        with service_thread(service):
            producer = make_producer(settings)
            replay(first, producer, settings.topic_readings, progress=False)
            producer.close()
            wait_until(lambda: service.counters["ticks_closed"] >= 10, what="the first 10 ticks")

            broker.restart()  # a fresh, empty broker on the same port

            def topics_back() -> bool:
                try:
                    admin = make_admin(settings)
                except Exception:  # still starting
                    return False
                try:
                    return settings.topic_readings in admin.list_topics()
                finally:
                    admin.close()

            wait_until(topics_back, what="the service to re-create its topics")
            wait_until(lambda: service.counters["topics_recreated"] >= 1,
                       what="the service's topic check")  # fmt: skip
            producer = make_producer(settings)
            replay(second, producer, settings.topic_readings, progress=False)
            producer.close()
            wait_until(lambda: service.counters["ticks_closed"] >= 20, what="ticks after restart")
        assert service.counters["topics_recreated"] >= 1
        # a new producer after the restart: the first batch did not fail on the old one
        assert service.counters.get("recoveries", 0) == 0
        assert service.counters["consumed"] == first.n_time * first.n_nodes * 2
        forecasts = read_topic(settings, settings.topic_forecasts)
        issued = {decode_forecast(r.value).issued_at for r in forecasts}
        assert issued == {ts.to_pydatetime() for ts in second.timestamps}  # the new broker's


def test_a_readings_topic_deleted_while_serving_is_read_from_the_start_when_it_returns(
    world, kafka_settings, tmp_path
):
    """The readings topic is deleted under a running service, which creates it again. The
    consumer's positions belong to the old log, and Tansu answers a fetch past the new
    log's end with nothing: without a look at the topic's id, the new log's first
    records (as many as the old log held) were never read, nor dead-lettered."""
    settings = kafka_settings.model_copy(update={"store_path": tmp_path / "store.sqlite"})
    ensure_topics(settings)
    config = ServiceConfig(allowed_lateness="0min", durable=False, topic_check_every_s=1.0)
    service = ForecastService(settings, config, load_bundles(world.bundles))
    first, second = world.live.slice(0, 10), world.live.slice(10, 20)
    with service_thread(service):
        produce_panel(settings, first)
        wait_until(lambda: service.counters["consumed"] == first.n_time * first.n_nodes,
                   what="the first 10 ticks consumed")  # fmt: skip
        admin = make_admin(settings)
        try:
            admin.delete_topics([settings.topic_readings])
        finally:
            admin.close()
        wait_until(lambda: service.counters["topics_recreated"] >= 1,
                   what="the service to create the readings topic again")  # fmt: skip
        produce_panel(settings, second)
        wait_until(lambda: service.counters["consumed"] >= 20 * first.n_nodes,
                   what="the new log's readings consumed")  # fmt: skip
    assert service.counters["consumed"] == 20 * first.n_nodes
    assert service.counters["dead_lettered"] == 0


def test_broker_lost_mid_batch_the_batch_is_replayed_from_the_store(tmp_path):
    """The broker goes away while the service works through a backlog: the batch it
    cannot publish is neither stored nor committed; the service restores its state from
    the store, waits for a broker, and carries on with the readings that come next."""
    world = make_world(tmp_path / "bundles", sensors=6, live_steps=200)
    broker = EmbeddedBroker(
        free_port(),
        log_path=tmp_path / "broker.log",
        handle_sigterm=False,
        startup_timeout_s=WAIT_S,
    )
    with broker:
        settings = load_settings(
            bootstrap_servers=broker.bootstrap,
            consumer_group="lost-mid-batch",
            store_path=tmp_path / "store.sqlite",
        )
        ensure_topics(settings)
        backlog, after = world.live.slice(0, 150), world.live.slice(150, 200)
        producer = make_producer(settings)
        replay(backlog, producer, settings.topic_readings, progress=False)
        producer.close()
        config = ServiceConfig(
            allowed_lateness="0min",
            durable=False,
            poll_records=30,  # small batches: the backlog takes many of them
            flush_timeout_s=2.0,
            topic_check_every_s=1.0,
        )

        def slow_detector(context):  # a detector that takes 50 ms a tick: a long backlog
            time.sleep(0.05)
            return []

        service = ForecastService(
            settings, config, load_bundles(world.bundles), alert_hook=slow_detector
        )
        with service_thread(service):
            wait_until(lambda: service.counters["ticks_closed"] >= 5, what="the first ticks")
            broker.stop()  # the next flush fails: that batch must not count as done
            wait_until(lambda: service.counters["recoveries"] >= 1, what="a recovery")
            with Store(settings.store_path, readonly=True) as db:
                stored_ticks = db.tick_count()
                assert db.counters()["ticks_closed"] == stored_ticks  # nothing half-stored
            broker.start()  # a fresh, empty broker on the same port
            producer = make_producer(settings)
            replay(after, producer, settings.topic_readings, progress=False)
            producer.close()
            wait_until(
                lambda: service.counters["ticks_closed"] >= stored_ticks + after.n_time - 1,
                what="ticks after the broker came back",
            )
        with Store(settings.store_path, readonly=True) as db:
            stored = {t.ts_ms for t in db.last_ticks(10_000)}
        assert {int(ts.value // 1_000_000) for ts in after.timestamps[:-1]} <= stored


def test_a_replayed_batch_finds_no_reading_late(world, kafka_settings, tmp_path):
    """A batch from a backlog spread over three partitions fails (the store is locked) and
    is replayed once the lock goes. What the partitions had delivered before counts for
    nothing, as in a restarted process: otherwise the partition read first no longer held
    the watermark back while it was read again, and its readings were late, its sensors
    reported down."""
    settings = kafka_settings.model_copy(update={"store_path": tmp_path / "store.sqlite"})
    produced = produce_panel(settings, world.live)
    config = ServiceConfig(allowed_lateness="0min", durable=False, poll_records=100)
    service = ForecastService(settings, config, load_bundles(world.bundles))
    locker = sqlite3.connect(settings.store_path, isolation_level=None, timeout=WAIT_S)
    locker.execute("BEGIN IMMEDIATE")  # the write lock: the first batch cannot be stored
    try:
        with service_thread(service):
            wait_until(lambda: service.counters["batch_retries"] >= 1, what="a failed batch")
            locker.execute("ROLLBACK")
            wait_until(lambda: service.counters["consumed"] >= produced, what="every record")
            wait_until(lambda: service.counters["ticks_closed"] >= world.live.n_time - 1,
                       what="every tick closed")  # fmt: skip
    finally:
        locker.close()
    assert service.counters["late"] == 0
    with Store(settings.store_path, readonly=True) as db:
        observed = Counter(t.observed for t in db.last_ticks(10_000))
    assert set(observed) == {world.live.n_nodes}, observed


class _HandedOver:
    """A join already done: hands the service ``consumer`` as :class:`GroupJoin` would."""

    def __init__(self, consumer, partitions) -> None:
        self.consumer, self.partitions = consumer, partitions

    def joined(self) -> bool:
        return True

    def result(self):
        return self.consumer, {}

    def cancel(self, wait_s: float = 0.0) -> None:
        pass


def test_a_rebalance_that_never_finishes_is_left_for_a_fresh_join(world, kafka_settings, tmp_path):
    """kafka-python 3.0.12 drops a rebalance whose answers arrive between two polls when
    a metadata change started it (the readings topic re-created with 4 partitions): the
    consumer waits without partitions for good. The service gives the rebalance up after
    ``rejoin_after_s``, joins with a new consumer and forecasts from all 4 partitions."""
    from kafka.admin import NewTopic

    from pipeline.service.joining import subscribed_consumer
    from pipeline.service.partitions import PartitionTracker

    settings = kafka_settings.model_copy(update={"store_path": tmp_path / "store.sqlite"})
    ensure_topics(settings)
    partitions = PartitionTracker(idle_s=60)
    consumer = subscribed_consumer(settings, partitions, 1000)
    wait_until(lambda: consumer.poll(timeout_ms=100) is not None and partitions.assigned,
               what="the first assignment")  # fmt: skip
    admin = make_admin(settings)
    try:
        admin.delete_topics([settings.topic_readings])
        admin.create_topics([NewTopic(settings.topic_readings, 4, 1)])
    finally:
        admin.close()
    consumer.topics()  # fresh metadata: the partitions changed, a rebalance begins
    wait_until(lambda: consumer.poll(timeout_ms=100) is not None and partitions.rebalancing_since,
               what="the rebalance to begin")  # fmt: skip
    time.sleep(5.0)  # no poll while the JoinGroup (3 s with Tansu) and SyncGroup answers come
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and partitions.rebalancing_since is not None:
        consumer.poll(timeout_ms=100)
    if partitions.rebalancing_since is None:
        consumer.close()
        pytest.skip("this kafka-python finished the rebalance itself: nothing to recover from")

    config = ServiceConfig(allowed_lateness="0min", durable=False, rejoin_after_s=8.0)
    service = ForecastService(
        settings, config, load_bundles(world.bundles),
        joining=_HandedOver(consumer, partitions),  # type: ignore[arg-type]
    )  # fmt: skip
    with service_thread(service):
        wait_until(lambda: len(partitions.assigned) == 4, what="all 4 partitions after rejoining")
        producer = make_producer(settings)
        replay(world.live.slice(0, 10), producer, settings.topic_readings, progress=False)
        producer.close()
        wait_until(lambda: service.counters["ticks_closed"] >= 10, what="ticks after rejoining")
    assert service.counters["group_rejoins"] == 1
    assert service.counters["consumed"] == 10 * world.live.n_nodes


def test_a_readings_topic_recreated_with_more_partitions_is_read_whole(
    world, kafka_settings, tmp_path
):
    """After the topic came back with 6 partitions, the rebalance (on the consumer's stale
    metadata) assigned the old 3 to the group's only member, for good: readings sent to
    the others were never read and their sensors' ticks never closed."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    settings = kafka_settings.model_copy(update={"store_path": tmp_path / "store.sqlite"})
    ensure_topics(settings)
    config = ServiceConfig(allowed_lateness="0min", durable=False)
    service = ForecastService(settings, config, load_bundles(world.bundles))
    with service_thread(service):
        wait_until(lambda: service.partitions.assigned, what="the first assignment")
        before = len(service.partitions.assigned)
        admin = make_admin(settings)

        def recreated() -> bool:  # the service may re-create it first (its idle topic check)
            admin.delete_topics([settings.topic_readings])
            try:
                admin.create_topics([NewTopic(settings.topic_readings, before + 3, 1)])
            except TopicAlreadyExistsError:
                return False
            return True

        try:
            wait_until(recreated, what="the readings topic re-created with more partitions")
        finally:
            admin.close()
        wait_until(
            lambda: len(service.partitions.assigned) == before + 3,
            what=f"all {before + 3} partitions of the re-created topic",
            details=lambda: str(sorted(tp.partition for tp in service.partitions.assigned)),
        )
        producer = make_producer(settings)
        replay(world.live.slice(0, 10), producer, settings.topic_readings, progress=False)
        producer.close()
        wait_until(lambda: service.counters["ticks_closed"] >= 10, what="ticks of every sensor")
    assert service.counters["consumed"] == 10 * world.live.n_nodes
