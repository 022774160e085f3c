"""Shared pieces of the service tests: tiny bundles, reading topics back, running the
service in a thread or as a real ``roadcast serve`` process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.panel import SensorPanel
from pipeline.settings import Settings
from tests.waiting import WAIT_S, wait_until

if TYPE_CHECKING:
    import prometheus_client

REPO = Path(__file__).resolve().parents[1]
HORIZON = 3


class RawHeaderKey(str):
    """A header key that kafka-python's producer writes as the given raw bytes (a hostile
    producer's way to put a key that is not UTF-8 on the wire)."""

    raw = b"\xff\xfe-not-utf8"

    def encode(self, *args: object, **kwargs: object) -> bytes:  # type: ignore[override]
        return self.raw


class MiscountedHeaders(list):
    """Headers that kafka-python's producer counts one more of than it writes: a record
    whose lengths do not add up (its batch checksum is still right), which no Kafka client
    can parse."""

    def __len__(self) -> int:
        return super().__len__() + 1


@dataclass(frozen=True)
class TinyWorld:
    """A small simulated network, its bundles, and the part the tests stream."""

    bundles: Path
    live: SensorPanel  # the steps replayed into Kafka (after the training part)
    models: tuple[str, ...]


def make_world(root: Path, *, sensors: int = 6, live_steps: int = 40) -> TinyWorld:
    """Fit persistence and AR(p) on a tiny simulated network; save their bundles."""
    from models.forecasters.ar import AutoRegressive
    from models.forecasters.baselines import Persistence
    from pipeline.data.simulate import simulate_network

    panel = simulate_network(sensors=sensors, days=1.5, seed=3, faults_per_day=0.0, dropout=0.0)
    train_end = 300
    train, valid = panel.slice(0, train_end - 40), panel.slice(train_end - 40, train_end)
    for model in (
        Persistence(window=4, horizon=HORIZON),
        AutoRegressive(window=3, horizon=HORIZON),
    ):
        model.fit(train, valid=valid)
        model.save(root / model.name)
    live = panel.slice(train_end, train_end + live_steps)
    return TinyWorld(bundles=root, live=live, models=("ar", "persistence"))


@dataclass(frozen=True)
class IncidentWorld:
    """A simulated network with one labelled incident in the streamed part, an AR bundle,
    and the interval detector calibrated on its validation residuals next to it."""

    bundles: Path
    panel: SensorPanel  # the whole simulation (events included)
    live: SensorPanel  # the steps replayed into Kafka
    incident: Any  # models.panel.LabeledEvent, inside `live`


def make_incident_world(root: Path) -> IncidentWorld:
    """8 sensors, 2 days; an incident on 7 of them at step 431-447 (seed 3). AR(6) is
    trained on steps 0-329, validated and the detector calibrated on 330-399; steps
    405-464 are streamed (the incident and its recovery)."""
    from models.forecasters.ar import AutoRegressive
    from pipeline.alerts.saved import calibrate_interval, save_neighbours
    from pipeline.data.simulate import simulate_network

    panel = simulate_network(
        sensors=8, days=2, seed=3, incidents_per_day=6.0, faults_per_day=0.0, dropout=0.0
    )
    train, valid = panel.slice(0, 330), panel.slice(330, 400)
    model = AutoRegressive(window=6, horizon=HORIZON)
    model.fit(train, valid=valid)
    model.save(root / model.name)
    calibrate_interval(root, model, train, valid)
    save_neighbours(root, panel)
    (incident,) = [e for e in panel.events if e.kind == "incident"]
    return IncidentWorld(root, panel, panel.slice(405, 465), incident)


def read_topic(settings: Settings, topic: str, *, settle_s: float = 0.5) -> list[Any]:
    """Every record of every partition of ``topic``, from the start to the current end.

    Done once every partition reached its end offset, nothing more came for ``settle_s``
    and the end offsets, asked again, have not moved: the embedded broker's end offsets
    can lag its log. Fails when that does not happen within ``tests.waiting.WAIT_S``."""
    from kafka import TopicPartition

    from pipeline.kafka.clients import make_consumer

    consumer = make_consumer(settings, group_id="")
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning()
        end = consumer.end_offsets(tps)
        out: list[Any] = []
        quiet_since: float | None = None

        def read_to_the_end() -> bool:
            nonlocal end, quiet_since
            got = consumer.poll(timeout_ms=100)
            for records in got.values():
                out.extend(records)
            if got or not all(consumer.position(tp) >= end[tp] for tp in tps):
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= settle_s:
                end = consumer.end_offsets(tps)
                quiet_since = None
                return all(consumer.position(tp) >= end[tp] for tp in tps)
            return False

        wait_until(read_to_the_end, what=f"{topic} to be read to its end", poll_s=0)
        return out
    finally:
        consumer.close()


def produce_panel(settings: Settings, panel: SensorPanel) -> int:
    """Replay ``panel``'s readings into the readings topic (created if missing); returns
    how many records were sent."""
    from pipeline.kafka.clients import ensure_topics, make_producer
    from pipeline.kafka.replay import replay

    ensure_topics(settings)
    producer = make_producer(settings)
    try:
        return replay(panel, producer, settings.topic_readings, progress=False).messages
    finally:
        producer.close()


def store_counters(path: Path) -> dict[str, int]:
    """The service's counters, read from its store (empty before it exists)."""
    from pipeline.service.store import Store, StoreError

    try:
        with Store(path, readonly=True) as store:
            return store.counters()
    except (StoreError, Exception):  # the writer may be creating the schema right now
        return {}


@contextmanager
def service_thread(service: Any) -> Iterator[threading.Event]:
    """Run ``service.run`` in a thread; stop it (and re-raise its error) on exit."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            service.run(stop=stop, handle_signals=False)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="roadcast-service", daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(timeout=WAIT_S)
    if errors:
        raise errors[0]
    assert not thread.is_alive(), f"the service did not stop within {WAIT_S:.0f} s"


def service_env(settings: Settings) -> dict[str, str]:
    """Environment of a ``roadcast serve`` process using ``settings``' topics and group."""
    env = dict(os.environ)
    env.update(
        ROADCAST_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
        ROADCAST_TOPIC_READINGS=settings.topic_readings,
        ROADCAST_TOPIC_DLQ=settings.topic_dlq,
        ROADCAST_TOPIC_FORECASTS=settings.topic_forecasts,
        ROADCAST_TOPIC_ALERTS=settings.topic_alerts,
        ROADCAST_CONSUMER_GROUP=settings.consumer_group,
        PYTHONUNBUFFERED="1",
    )
    return env


def start_service(
    settings: Settings, bundles: Path, store: Path, log: Path, *extra: str
) -> subprocess.Popen[bytes]:
    """``roadcast serve`` as a real process (logs appended to ``log``)."""
    args = [
        sys.executable, "-m", "flows.cli", "serve", "--models", str(bundles),
        "--store", str(store), "--allowed-lateness", "0min", *extra,
    ]  # fmt: skip
    with open(log, "ab") as sink:
        return subprocess.Popen(
            args, cwd=REPO, env=service_env(settings), stdout=sink, stderr=subprocess.STDOUT
        )


def serve_until_closed(
    settings: Settings, bundles: Path, store: Path, log: Path, ticks: int, *extra: str
) -> None:
    """Run ``roadcast serve`` until ``ticks`` ticks have closed in ``store``, then stop it
    (it must be running then, and exit 0)."""
    proc = start_service(settings, bundles, store, log, *extra)
    try:
        wait_until(
            lambda: (
                proc.poll() is not None or store_counters(store).get("ticks_closed", 0) >= ticks
            ),
            what=f"{ticks} ticks to close",
            details=lambda: log.read_text()[-3000:],
        )
        assert proc.poll() is None, log.read_text()[-3000:]
    finally:
        assert stop_service(proc) == 0, log.read_text()[-3000:]


def edit_config(bundle: Path, **changes: object) -> None:
    """Change a bundle's ``config.json`` (a value of None removes the key) and re-hash
    the manifest, as an edited or older bundle would be."""
    import hashlib
    import json

    from models.bundle import MANIFEST

    path = bundle / "config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path.write_text(json.dumps(config))
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["files"]["config.json"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (bundle / MANIFEST).write_text(json.dumps(manifest))


def wait_started(log: Path) -> None:
    """Wait until the process logging to ``log`` has joined its group."""
    wait_until(
        lambda: log.is_file() and '"event": "partitions_assigned"' in log.read_text(),
        what=f"the service to join its group ({log})",
        details=lambda: log.read_text()[-3000:] if log.is_file() else "",
    )


def stop_service(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    """Send ``sig`` and wait for the exit code (SIGKILL after ``tests.waiting.WAIT_S``)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(
            f"the service did not exit within {WAIT_S:.0f} s of the signal"
        ) from None


def store_with(path: Path, *statements: str) -> Path:
    """A new service store at ``path`` with ``statements`` run on it (rows written by hand)."""
    import sqlite3

    from pipeline.service.store import Store

    Store(path).close()
    with sqlite3.connect(path) as db:
        for statement in statements:
            db.execute(statement)
    return path


class MemoryOutbox:
    """What a :class:`pipeline.service.processor.PollProcessor` sends, kept in memory:
    ``sent`` as ``(topic, key, value)``, the dead letters' headers in ``letters``."""

    max_message_bytes = 1 << 20

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []
        self.letters: list[dict[str, Any]] = []

    def refresh(self) -> None:
        pass

    def send(self, topic: str, key: bytes | None, value: bytes | None, headers=None) -> None:
        self.sent.append((topic, key, value))

    def send_many(self, topic: str, messages) -> None:
        for key, value in messages:
            self.send(topic, key, value)

    def send_dead_letter(self, topic, key, value, headers, source, *, minimal=False) -> bool:
        self.sent.append((topic, key, value))
        self.letters.append(dict(headers))
        return True


def feed_steps(
    processor: Any,
    live: SensorPanel,
    steps: Iterable[int],
    *,
    silent: Callable[[int, int], bool] = lambda step, col: False,
) -> MemoryOutbox:
    """Each step of ``live`` as one poll of one batch-form record (the sensors for which
    ``silent(step, column)`` is true left out), processed by a
    :class:`pipeline.service.processor.PollProcessor` a minute after its time and stored;
    returns what was sent."""
    import json

    from kafka import TopicPartition
    from kafka.consumer.fetcher import ConsumerRecord

    tp = TopicPartition(processor.settings.topic_readings, 0)
    outbox = MemoryOutbox()
    for step in steps:
        values = {
            sensor: float(live.values[step, col])
            for col, sensor in enumerate(live.sensor_ids)
            if not silent(step, col)
        }
        ts = live.timestamps[step].isoformat().replace("+00:00", "Z")
        raw = json.dumps({"v": 1, "ts": ts, "values": values}).encode()
        record = ConsumerRecord(tp.topic, 0, -1, step, 0, 0, None, raw, [], None, -1, -1, -1)
        now_ns = int(live.timestamps[step].value) + 60_000_000_000
        report, batch = processor.process({tp: [record]}, outbox, now_ns=now_ns)
        processor.finish(report, batch, flushed_at_ms=0)
    return outbox


SHIFT_AT = 10  # the step of the streamed part from which sensor 0 of shifted_panel reads high


def shifted_panel(steps: int = 460, train_end: int = 300) -> tuple[SensorPanel, int]:
    """6 sensors reading 50 plus white noise, sensor 0 40 % high from step ``train_end +
    SHIFT_AT`` on (a recalibration after training), and ``train_end``."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(5)
    values = (50.0 + rng.normal(0.0, 2.0, (steps, 6))).astype(np.float32)
    values[train_end + SHIFT_AT :, 0] *= 1.4
    stamps = pd.date_range("2024-03-04", periods=steps, freq="5min", tz="UTC")
    return SensorPanel.from_values(values, stamps, [f"s{i}" for i in range(6)]), train_end


def exported_names(registry: prometheus_client.CollectorRegistry) -> set[str]:
    """Every series name ``registry`` can export, whether or not it has samples yet
    (``_total`` of counters, ``_bucket``/``_sum``/``_count`` of histograms...)."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("", "_sum", "_count"),
        "gauge": ("",),
        "info": ("_info",),
        "stateset": ("",),
        "unknown": ("",),
    }
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names
