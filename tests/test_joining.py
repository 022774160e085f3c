"""The consumer group join in a thread (pipeline/service/joining.py): the consumer is
handed over assigned, with the records its joining polls read, none lost; a broker that
does not answer is the usual one-line error, raised where the service takes over; a
service that fails while joining leaves the group free for the next one."""

from __future__ import annotations

import threading
import time

import pytest

from pipeline.kafka.clients import KafkaUnavailable, ensure_topics, make_producer
from pipeline.service.joining import CANCEL_WAIT_S, GroupJoin
from pipeline.service.partitions import PartitionTracker
from pipeline.settings import load_settings
from tests.waiting import wait_until


@pytest.mark.integration
def test_the_consumer_is_handed_over_assigned_with_every_record(kafka_settings):
    ensure_topics(kafka_settings)
    producer = make_producer(kafka_settings)
    for i in range(5):
        producer.send(kafka_settings.topic_readings, value=f"r{i}".encode(), partition=i % 3)
    producer.flush(timeout=30)
    producer.close()

    partitions = PartitionTracker(idle_s=60)
    joining = GroupJoin(kafka_settings, partitions, 500, threading.Event())
    consumer, pending = joining.result()
    try:
        assert len(consumer.assignment()) == 3
        assert partitions.assigned == consumer.assignment()  # the listener saw it
        seen = [r.value for records in pending.values() for r in records]

        def all_read() -> bool:
            for records in consumer.poll(timeout_ms=100).values():
                seen.extend(r.value for r in records)
            return len(seen) >= 5

        wait_until(all_read, what="the 5 records")
        assert sorted(seen) == [f"r{i}".encode() for i in range(5)]  # none lost or doubled
    finally:
        consumer.close()


def test_an_unreachable_broker_is_raised_by_result():
    settings = load_settings(bootstrap_servers="127.0.0.1:1")
    joining = GroupJoin(settings, PartitionTracker(idle_s=60), 500, threading.Event())
    with pytest.raises(KafkaUnavailable, match=r"127\.0\.0\.1:1\b"):
        joining.result()


# A wedged group waits for the broker's rebalance timeout (kafka-python's default
# max_poll_interval_ms, 300 s); a free one joins in about 3 s.
FREE_GROUP_S = 120.0


@pytest.mark.integration
def test_a_join_cancelled_half_way_leaves_the_group_free(kafka_settings):
    """A service that fails during start-up (an unknown --only model) used to exit with
    its member half-joined: the embedded broker kept it, and the group's next service
    waited for it, silently, for minutes."""
    ensure_topics(kafka_settings)
    first = GroupJoin(kafka_settings, PartitionTracker(idle_s=60), 500, threading.Event())
    time.sleep(1.0)  # the JoinGroup under way (the broker answers it after 3 s)
    first.cancel(wait_s=CANCEL_WAIT_S)
    started = time.monotonic()
    second = GroupJoin(kafka_settings, PartitionTracker(idle_s=60), 500, threading.Event())
    done = threading.Event()
    threading.Thread(target=lambda: (second.result()[0].close(), done.set()), daemon=True).start()
    assert done.wait(FREE_GROUP_S), f"the next member waited over {FREE_GROUP_S:.0f} s"
    assert time.monotonic() - started < FREE_GROUP_S
