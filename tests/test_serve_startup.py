"""``roadcast serve`` starting up: a second service on a store in use is refused before
it touches the consumer group, and a stop requested during start-up ends the service
at once, saying so, without waiting for the group join or a broker that does not answer."""

from __future__ import annotations

import logging
import signal
import threading

import pytest

from pipeline.kafka.clients import ensure_topics, make_producer
from pipeline.kafka.replay import replay
from pipeline.service.config import ServiceConfig
from pipeline.service.loop import serve
from pipeline.settings import load_settings
from tests.service_support import (
    make_world,
    start_service,
    stop_service,
    store_counters,
    wait_started,
)
from tests.waiting import WAIT_S, wait_until

pytestmark = pytest.mark.integration

# Nothing listens there: a client's bootstrap fails only after its timeout.
NO_BROKER = "127.0.0.1:1"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("bundles"), live_steps=5)


def _events(text: str, event: str) -> int:
    return text.count(f'"event": "{event}"')


def test_a_second_service_on_the_store_is_refused_before_it_joins_the_group(
    world, kafka_settings, tmp_path
):
    ensure_topics(kafka_settings)
    store, first_log = tmp_path / "store.sqlite", tmp_path / "first.log"
    first = start_service(kafka_settings, world.bundles, store, first_log)
    try:
        wait_started(first_log)
        before = first_log.read_text()

        second_log = tmp_path / "second.log"
        second = start_service(kafka_settings, world.bundles, store, second_log)
        assert second.wait(timeout=WAIT_S) == 1
        refusal = second_log.read_text()
        assert f"is in use by another roadcast serve (pid {first.pid})" in refusal
        assert "partitions_" not in refusal  # it never joined the group

        # The first service carries on with the assignment it had: no rebalance.
        producer = make_producer(kafka_settings)
        stats = replay(world.live, producer, kafka_settings.topic_readings, progress=False)
        producer.close()
        wait_until(
            lambda: store_counters(store).get("consumed", 0) >= stats.messages,
            what="the first service to consume the readings",
            details=lambda: first_log.read_text()[-3000:],
        )
        after = first_log.read_text()
        for event in ("partitions_revoked", "partitions_assigned", "partial_assignment"):
            assert _events(after, event) == _events(before, event), event
    finally:
        assert stop_service(first) == 0, first_log.read_text()[-3000:]


@pytest.mark.parametrize("broker_up", [True, False], ids=["broker", "no broker"])
def test_a_stop_during_start_up_ends_the_service_before_it_starts(
    world, kafka_settings, tmp_path, caplog, broker_up
):
    """The stop is requested before the service could start: it logs that it stopped
    before it started (not ``started``), raises nothing, and does not wait for a broker
    that does not answer."""
    caplog.set_level(logging.INFO, logger="roadcast")
    settings = kafka_settings.model_copy(update={"store_path": tmp_path / "store.sqlite"})
    if not broker_up:
        settings = load_settings(bootstrap_servers=NO_BROKER, store_path=settings.store_path)
    stop = threading.Event()
    stop.set()
    config = ServiceConfig(allowed_lateness="0min", durable=False)
    assert serve(settings, config, model_dir=world.bundles, stop=stop) == {}
    events = [r.getMessage() for r in caplog.records if r.name.startswith("roadcast")]
    assert "stopped_before_start" in events
    assert "started" not in events and "stopped" not in events


def test_sigterm_during_start_up_without_a_broker_exits_zero_saying_so(world, tmp_path):
    settings = load_settings(bootstrap_servers=NO_BROKER)
    log = tmp_path / "service.log"
    proc = start_service(settings, world.bundles, tmp_path / "store.sqlite", log)
    wait_until(
        lambda: _events(log.read_text(), "warmed_up"),
        what="the service to load its models",
        details=lambda: log.read_text()[-3000:],
    )
    code = stop_service(proc, signal.SIGTERM)
    output = log.read_text()
    assert code == 0, output[-3000:]
    assert _events(output, "stopped_before_start") == 1
    assert _events(output, "started") == 0
    assert "error:" not in output
