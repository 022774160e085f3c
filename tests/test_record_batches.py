"""The producer's bulk path against the real broker: the records it writes are the ones
``send()`` would write, in the same partitions and order, across several batches."""

from __future__ import annotations

from collections import defaultdict

import pytest

from pipeline.kafka.clients import ensure_topics, make_producer
from pipeline.kafka.outbox import Outbox
from pipeline.kafka.record_batches import BulkAppender, supported
from tests.service_support import read_topic
from tests.waiting import WAIT_S

pytestmark = pytest.mark.integration


def _messages(n: int, tag: str) -> list[tuple[bytes, bytes]]:
    # Keys repeat (sensors), values vary in length across varint boundaries (127, 16383).
    return [
        (f"s{i % 37:03d}".encode(), f'{{"{tag}":{i},"pad":"{"x" * (i * 53 % 300)}"}}'.encode())
        for i in range(n)
    ]


def _by_partition(records) -> dict[int, list[tuple[bytes, bytes]]]:
    out: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        out[r.partition].append((r.key, r.value))
    return dict(out)


@pytest.mark.parametrize("bulk", [True, False])
def test_send_many_writes_what_send_writes(kafka_settings, bulk):
    topic = kafka_settings.topic_forecasts
    ensure_topics(kafka_settings)
    # A small batch size: the bulk path must fill batches and open new ones.
    producer = make_producer(kafka_settings, linger_ms=1000, batch_size=16 * 1024)
    outbox = Outbox(producer, bulk=bulk)
    assert (outbox.bulk is not None) == (bulk and supported(producer))
    first, second, few = _messages(700, "a"), _messages(300, "b"), _messages(2, "c")
    outbox.send_many(topic, first)
    outbox.send(topic, b"s001", b'{"single":1}')  # mixed with the per-record path
    outbox.send_many(topic, second)
    outbox.send_many(topic, few)  # one record per partition
    outbox.send_many(topic, [])
    outbox.flush(WAIT_S)
    outbox.close(10)
    got = _by_partition(read_topic(kafka_settings, topic))
    partitions = {p: i for i, p in enumerate(sorted(got))}
    assert sum(len(v) for v in got.values()) == 1003
    expected: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
    reference = Outbox(make_producer(kafka_settings), bulk=False)
    for key, value in [*first, (b"s001", b'{"single":1}'), *second, *few]:
        expected[reference._partition(topic, key)].append((key, value))
    reference.close(5)
    assert set(partitions) <= set(expected)
    for partition, records in got.items():
        assert records == expected[partition]  # same bytes, same order per partition


def test_the_bulk_path_is_only_taken_where_kafka_python_supports_it(kafka_settings):
    producer = make_producer(kafka_settings)
    try:
        assert supported(producer)  # the pinned kafka-python 3.0: the fast path is in use

        class Other:  # a producer without kafka-python 3.0's internals
            def __init__(self) -> None:
                self.config: dict[str, object] = {}

        assert not supported(Other())  # type: ignore[arg-type]
        with pytest.raises(RuntimeError, match=r"producer\.send"):
            BulkAppender(Other())  # type: ignore[arg-type]
    finally:
        producer.close()
