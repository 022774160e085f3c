"""The main job, first shape: broker -> replay -> consumer group -> summary.

``roadcast demo`` starts the embedded broker, creates the topics, replays a data set
(``los-loop`` when the data directory has it, otherwise ``simulated``) into
``roadcast.readings``, reads every message back in a consumer group (validating each
with the wire schema and committing per poll batch), and writes ``OUT/summary.json``.
Later issues put the forecasting service between the replay and the read-back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from models.panel import SensorPanel
from pipeline.settings import Settings, load_settings

DEFAULT_OUT = Path("demo-out")
DEMO_GROUP = "roadcast-demo"


@dataclass(frozen=True)
class ReadBack:
    """What the consumer group read back."""

    messages: int
    readings: int
    invalid: int
    sensors: int
    first_ts: datetime | None
    last_ts: datetime | None
    join_s: float
    seconds: float
    committed: int

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0


def choose_panel(data: str | SensorPanel | None, *, data_dir: Path | None = None) -> SensorPanel:
    """The demo's data: ``data`` if given, else ``los-loop`` when it loads, else ``simulated``.

    Any failure to load ``los-loop`` (files absent, unreadable) falls back to the
    simulator, which always works offline; an explicit ``data`` spec never falls back.
    """
    if isinstance(data, SensorPanel):
        return data
    from pipeline.datasets import load_dataset

    if data:
        return load_dataset(data, data_dir=data_dir)
    try:
        return load_dataset("los-loop", data_dir=data_dir)
    except Exception:  # any failure means: not available here, so simulate
        return load_dataset("simulated", data_dir=data_dir)


def read_back(
    settings: Settings,
    topic: str,
    expected: int,
    *,
    group_id: str = DEMO_GROUP,
    idle_timeout_s: float = 15.0,
) -> ReadBack:
    """Consume ``topic`` in ``group_id`` until ``expected`` messages arrived (or it idles).

    Every message is decoded with :func:`pipeline.schema.decode_readings`; offsets
    are committed after each poll batch. ``idle_timeout_s`` bounds the wait for the
    group join and for stragglers, so a lost message ends the read instead of hanging.
    """
    from pipeline.clients import make_consumer
    from pipeline.schema import SchemaError, decode_readings

    consumer = make_consumer(settings, topic, group_id=group_id)
    messages = readings = invalid = committed = 0
    sensors: set[str] = set()
    first_ts: datetime | None = None
    last_ts: datetime | None = None
    started = time.monotonic()
    first_at: float | None = None
    last_at = started
    try:
        while messages < expected and time.monotonic() - last_at < idle_timeout_s:
            batches = consumer.poll(timeout_ms=200, max_records=5000)
            if not batches:
                continue
            now = time.monotonic()
            if first_at is None:
                first_at = now
            last_at = now
            for records in batches.values():
                for record in records:
                    messages += 1
                    try:
                        decoded = decode_readings(record.value)
                    except SchemaError:
                        invalid += 1
                        continue
                    for reading in decoded:
                        readings += 1
                        sensors.add(reading.sensor)
                        if first_ts is None or reading.ts < first_ts:
                            first_ts = reading.ts
                        if last_ts is None or reading.ts > last_ts:
                            last_ts = reading.ts
            consumer.commit()
            committed += 1
        finished = time.monotonic()
    finally:
        consumer.close()
    join_s = (first_at - started) if first_at is not None else finished - started
    return ReadBack(
        messages=messages,
        readings=readings,
        invalid=invalid,
        sensors=len(sensors),
        first_ts=first_ts,
        last_ts=last_ts,
        join_s=join_s,
        seconds=(last_at - first_at) if first_at is not None else 0.0,
        committed=committed,
    )


def run_demo(
    data: str | SensorPanel | None = None,
    *,
    out: Path = DEFAULT_OUT,
    limit: int | None = None,
    speedup: float = 0.0,
    settings: Settings | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the demo end to end and return the summary (also written to ``OUT/summary.json``).

    Parameters
    ----------
    data
        A dataset spec for :func:`pipeline.datasets.load_dataset`, a panel, or None
        (``los-loop`` when available, else ``simulated``).
    out
        Output directory (created): ``summary.json`` and ``broker.log``.
    limit
        Replay at most this many time steps.
    speedup
        0 = as fast as possible; X = X times real time.
    settings
        Topic names, consumer group and security; the bootstrap servers are replaced
        by the embedded broker's.
    progress
        Show the replay's progress bar.
    log
        Where progress lines go.

    Returns
    -------
    dict
        ``data``, ``sensors``, ``steps``, ``messages_produced``, ``messages_consumed``,
        ``invalid``, ``lost`` (produced minus consumed: 0 when all is well), the time
        span, throughputs and timings.
    """
    from pipeline.broker import EmbeddedBroker
    from pipeline.clients import ensure_topics, make_producer
    from pipeline.replay import replay
    from pipeline.schema import format_timestamp

    started = time.monotonic()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = settings or load_settings()
    panel = choose_panel(data, data_dir=base.data_dir)
    freq = panel.timestamps.freqstr or str(panel.freq)
    log(f"data: {panel.name or 'panel'}: {panel.n_nodes} sensors x {panel.n_time} steps of {freq}")
    with EmbeddedBroker(log_path=out / "broker.log") as broker:
        cfg = base.model_copy(update={"bootstrap_servers": broker.bootstrap})
        log(f"broker: {broker.bootstrap} (log {broker.log_path})")
        ensure_topics(cfg)
        topic = cfg.topic_readings
        producer = make_producer(cfg)
        try:
            stats = replay(panel, producer, topic, speedup=speedup, limit=limit, progress=progress)
        finally:
            producer.close()
        log(f"replayed {stats.messages:,} readings in {stats.seconds:.1f} s")
        back = read_back(cfg, topic, stats.messages)
    summary: dict[str, Any] = {
        "data": panel.name,
        "sensors": panel.n_nodes,
        "steps": stats.steps,
        "frequency": freq,
        "first_ts": None if back.first_ts is None else format_timestamp(back.first_ts),
        "last_ts": None if back.last_ts is None else format_timestamp(back.last_ts),
        "messages_produced": stats.messages,
        "missing_skipped": stats.skipped_missing,
        "messages_consumed": back.messages,
        "sensors_seen": back.sensors,
        "invalid": back.invalid,
        "lost": stats.messages - back.messages,
        "produce_per_s": round(stats.rate, 1),
        "consume_per_s": round(back.rate, 1),
        "group_join_s": round(back.join_s, 3),
        "commits": back.committed,
        "bytes_produced": stats.bytes,
        "wall_s": round(time.monotonic() - started, 3),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    """The summary as a two-column table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="roadcast demo")
    table.add_column("")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    Console().print(table)
