"""Alert delivery: the retry policy's cost and recovery delay, and throughput to a real
Alertmanager.

1. **Backoff policy.** For outages of a receiver of several lengths, how many requests a
   lane sends while the receiver is down and how long after it is back the next attempt
   comes, for candidate ``(backoff_initial_s, backoff_max_s)`` pairs. Simulated with the
   real :meth:`pipeline.alerts.lanes.DeliveryConfig.backoff_s` (full jitter), many runs
   each: a policy, not a timing, so no network is needed.
2. **Throughput.** ``N`` firing alerts of distinct sensors on the embedded broker,
   delivered to a real ``prometheus-alertmanager`` (Debian package) by
   :class:`pipeline.alerts.delivery.AlertDelivery` with its defaults: seconds from start
   until every offset is committed, and alerts per second.

``python -m benchmarks.alert_delivery [--quick]`` writes
``benchmarks/results/alert_delivery.json``.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import write_result
from flows.reporting.text import print_table
from pipeline.alerts.lanes import DeliveryConfig

CANDIDATES = ((0.5, 30.0), (1.0, 60.0), (1.0, 300.0), (5.0, 300.0))
OUTAGES_S = (10.0, 60.0, 600.0, 3600.0)


def simulate(config: DeliveryConfig, outage_s: float, runs: int, seed: int) -> dict[str, float]:
    """Requests sent during an outage that starts with the first attempt, and the delay
    from the end of the outage to the next attempt (the one that succeeds)."""
    rng = random.Random(seed)
    requests, delays = [], []
    for _ in range(runs):
        t, attempt = 0.0, 0
        while t < outage_s:  # every attempt before the end fails
            attempt += 1
            t += config.backoff_s(attempt, rng)
        requests.append(attempt)
        delays.append(t - outage_s)
    return {
        "requests": float(np.mean(requests)),
        "requests_per_min": float(np.mean(requests)) / (outage_s / 60.0),
        "delay_mean_s": float(np.mean(delays)),
        "delay_p95_s": float(np.percentile(delays, 95)),
    }


def throughput(n: int) -> dict[str, Any]:
    """Deliver ``n`` firing alerts to a real Alertmanager; time until all are committed."""
    from kafka import TopicPartition

    from pipeline.alerts.delivery import AlertDelivery, delivery_group
    from pipeline.kafka.broker import EmbeddedBroker
    from pipeline.kafka.clients import ensure_topics, make_consumer, make_producer
    from pipeline.kafka.schema import AlertMessage, encode_alert
    from pipeline.settings import load_settings
    from tests.alertmanager_support import Alertmanager, HttpRecorder, alertmanager_binary

    binary = alertmanager_binary()
    if binary is None:
        raise SystemExit(
            "prometheus-alertmanager not found: apt-get install prometheus-alertmanager"
        )
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        sink = HttpRecorder()
        manager = Alertmanager(binary, Path(tmp), f"{sink.url}/am").start()
        try:
            settings = load_settings(
                bootstrap_servers=broker.bootstrap,
                topic_alerts="bench.alerts",
                consumer_group="bench",
                alertmanager_urls=manager.url,
            )
            ensure_topics(settings, topics=[settings.topic_alerts])
            producer = make_producer(settings)
            for i in range(n):
                sensor = f"s{i}"
                message = AlertMessage(
                    f"{sensor}:interval@x", f"{sensor}:interval", "firing", "warning", sensor,
                    now, 1.0, 2.0, 1.5, 2.5, 0.9999, "interval", now, now, "bench",
                )  # fmt: skip
                producer.send(
                    settings.topic_alerts, key=sensor.encode(), value=encode_alert(message)
                )
            producer.flush()
            producer.close()
            probe = make_consumer(settings, group_id=delivery_group(settings))
            tps = [TopicPartition(settings.topic_alerts, p) for p in range(3)]
            stop = threading.Event()
            delivery = AlertDelivery(settings)
            started = time.perf_counter()
            thread = threading.Thread(target=delivery.run, args=(stop,), daemon=True)
            thread.start()
            first: float | None = None
            while sum(delivery.stats()["committed"].values()) < n:
                if first is None and delivery.stats().get("consumed"):
                    first = time.perf_counter()  # the group has formed: records flow
                time.sleep(0.01)
            seconds = time.perf_counter() - started
            flowing = time.perf_counter() - (first or started)
            stop.set()
            thread.join()
            committed = sum(probe.committed(tp) or 0 for tp in tps)
            probe.close()
            in_manager = len(manager.alerts())
        finally:
            manager.stop()
            sink.close()
    return {
        "alerts": n,
        "seconds_to_commit_all": seconds,
        "seconds_from_first_record": flowing,
        "alerts_per_s": n / flowing,
        "committed": committed,
        "in_alertmanager": in_manager,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.alert_delivery", description=__doc__
    )
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    args = parser.parse_args(argv)
    runs = 200 if args.quick else 5000
    policy = []
    for initial, cap in CANDIDATES:
        config = DeliveryConfig(backoff_initial_s=initial, backoff_max_s=cap)
        for outage in OUTAGES_S:
            row = {"initial_s": initial, "max_s": cap, "outage_s": outage}
            row.update(simulate(config, outage, runs, seed=0))
            policy.append(row)
    delivered = throughput(200 if args.quick else 5000)
    payload = {"quick": args.quick, "runs": runs, "policy": policy, "throughput": delivered}
    path = write_result("alert_delivery", payload)
    print_table(
        "backoff policy: requests while a receiver is down, delay after it is back",
        ["initial s", "max s", "outage s", "requests", "req/min", "delay mean s", "delay p95 s"],
        [
            [r["initial_s"], r["max_s"], r["outage_s"], r["requests"], r["requests_per_min"],
             r["delay_mean_s"], r["delay_p95_s"]]
            for r in policy
        ],
    )  # fmt: skip
    print_table(
        "delivery to a real Alertmanager",
        ["alerts", "s to commit all (group join included)", "alerts/s once flowing",
         "in Alertmanager"],
        [[delivered["alerts"], delivered["seconds_to_commit_all"], delivered["alerts_per_s"],
          delivered["in_alertmanager"]]],
    )  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
