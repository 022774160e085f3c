"""The consumer group join in a thread (pipeline/service/joining.py): the consumer is
handed over assigned, with the records its joining polls read, none lost; a broker that
does not answer is the usual one-line error, raised where the service takes over."""

from __future__ import annotations

import threading

import pytest

from pipeline.kafka.clients import KafkaUnavailable, ensure_topics, make_producer
from pipeline.service.joining import GroupJoin
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
