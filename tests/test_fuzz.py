"""Property-based fuzzing of the whole record path on the embedded broker: bytes ->
decode -> assemble -> forecast (two models and the default alerting) -> publish -> store.

One service runs for the module. Every Hypothesis example produces a list of generated
records, valid and hostile mixed, into its own block of event time, then one complete
tick after the block, and checks that

- every record was consumed, and produced = valid + dead-lettered, where valid is what
  the schema, the loaded sensors and the clock accept (:func:`benchmarks.fuzz.expected_valid`);
- every dead letter is on the dead-letter topic, within the broker's record limit;
- the service is alive, every tick is closed, and every closed tick was forecast by every
  model for every sensor; the store's counters are the service's.

``benchmarks/fuzz.py`` runs the same kind of input at volume (10,000 records).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from itertools import count
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.fuzz import build_world, expected_valid
from pipeline.kafka.dead_letters import BROKER_DEFAULT_MAX_MESSAGE_BYTES, record_size
from pipeline.kafka.schema import FLOAT32_MAX, TS_MAX, TS_MIN
from pipeline.service.config import ServiceConfig
from pipeline.service.loop import ForecastService
from tests.service_support import service_thread, store_counters
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

START = datetime(2013, 1, 7, tzinfo=UTC)
TICK = timedelta(minutes=5)
BLOCK_TICKS = 8  # readings fall on ticks 0-5 of a block; the closing tick is tick 7
SENSORS = 20  # benchmarks.fuzz.build_world's network


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Slot:
    """A timestamp in the example's block: ``tick`` ticks after its start, ``sec`` seconds
    into the tick, written with a UTC offset of ``zone`` minutes."""

    tick: int
    sec: int
    zone: int


@dataclass(frozen=True)
class Known:
    """The id of loaded sensor number ``i``."""

    i: int


@dataclass(frozen=True)
class Record:
    """A record to produce: ``body`` is a JSON tree (with slots and sensor markers),
    raw bytes, or None (a tombstone); ``edits`` change bytes after encoding."""

    key: Known | bytes | None
    body: Any
    edits: tuple[tuple[int, int], ...] = ()


def _render(node: Any, base: datetime, sensors: list[str]) -> Any:
    if isinstance(node, Slot):
        ts = base + node.tick * TICK + timedelta(seconds=node.sec)
        return ts.astimezone(timezone(timedelta(minutes=node.zone))).isoformat()
    if isinstance(node, Known):
        return sensors[node.i]
    if isinstance(node, dict):
        return {_render(k, base, sensors): _render(v, base, sensors) for k, v in node.items()}
    if isinstance(node, list):
        return [_render(v, base, sensors) for v in node]
    return node


def render(record: Record, base: datetime, sensors: list[str]) -> tuple[bytes | None, bytes | None]:
    key = _render(record.key, base, sensors)
    key = key.encode() if isinstance(key, str) else key
    body = record.body
    if body is None or isinstance(body, bytes):
        value = body
    else:
        value = json.dumps(_render(body, base, sensors), allow_nan=True).encode()
    if record.edits and value:
        raw = bytearray(value)
        for pos, byte in record.edits:
            raw[pos % len(raw)] = byte
        value = bytes(raw)
    if key is None and value is None:
        key = b"tombstone"
    return key, value


f32 = st.floats(-FLOAT32_MAX, FLOAT32_MAX)
slots = st.builds(Slot, st.integers(-300, 5), st.integers(0, 299), st.sampled_from([0, 330, -480]))
sensors = st.builds(Known, st.integers(0, SENSORS - 1))
single = st.fixed_dictionaries({"v": st.just(1), "sensor": sensors, "ts": slots, "value": f32})
batch = st.fixed_dictionaries(
    {"v": st.just(1), "ts": slots, "values": st.dictionaries(sensors, f32, max_size=SENSORS)}
)
hostile_values = st.one_of(
    st.floats(),  # NaN, infinities, and doubles float32 cannot hold
    st.sampled_from([1e39, -1e308, 3.5e38, 10**39, 10**400]),
    st.integers(),
    st.text(max_size=20),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
hostile_times = st.one_of(
    st.datetimes(
        max_value=TS_MIN.replace(tzinfo=None) - timedelta(microseconds=1), timezones=st.just(UTC)
    ).map(datetime.isoformat),
    st.datetimes(min_value=TS_MAX.replace(tzinfo=None), timezones=st.just(UTC)).map(
        datetime.isoformat
    ),
    st.datetimes().map(datetime.isoformat),  # naive
    st.integers(1, 400).map(lambda d: (datetime.now(UTC) + timedelta(days=d)).isoformat()),
    st.text(max_size=40),
    st.integers(),
    st.none(),
)
hostile_sensors = st.one_of(
    st.text(max_size=30), st.integers(), st.none(), st.floats(), st.text(min_size=201)
)
fields = st.sampled_from(["v", "sensor", "ts", "value", "values", "unit", ""])


def _replace(message: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    return {**message, field: value}


def _drop(message: dict[str, Any], field: str) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k != field}


bodies = st.one_of(
    single,
    batch,
    st.builds(_replace, single, st.just("value"), hostile_values),
    st.builds(_replace, single, st.just("ts"), hostile_times),
    st.builds(_replace, single, st.just("sensor"), hostile_sensors),
    st.builds(_replace, single, st.just("v"), hostile_values),
    st.builds(_replace, single, fields, hostile_values),  # an extra (or replaced) field
    st.builds(_drop, single, fields),
    st.builds(_replace, batch, st.just("values"), hostile_values),
    st.builds(
        lambda b, k, v: {**b, "values": {**b["values"], k: v}}, batch, sensors, hostile_values
    ),
    st.builds(lambda b, k: {**b, "values": {**b["values"], k: 1.0}}, batch, hostile_sensors),
    st.binary(max_size=2000),
    st.sampled_from([b"", b"{}", b"[]", b"null", b"\xff\xfe", None]),
    st.integers(1, 200_000).map(lambda n: b"[" * n),  # deep nesting
    st.integers(1000, 300_000).map(lambda n: _replace({"v": 1, "ts": "x"}, "sensor", "s" * n)),
    st.sampled_from([1_048_394, 1 << 20, (1 << 20) + 1, 1_500_000]).map(lambda n: b"a" * n),
)
keys = st.one_of(sensors, sensors, st.none(), st.binary(max_size=30))
edits = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=3)
records = st.builds(Record, keys, bodies, edits.map(tuple))


# --------------------------------------------------------------------------- service


@dataclass
class Fuzzed:
    service: ForecastService
    settings: Any
    producer: Any
    dlq: Any
    sensors: list[str]
    models: int
    letters: list[Any]


@pytest.fixture(scope="module")
def fuzzed(broker, tmp_path_factory):
    """One service (two models and the default alerting) for the module's examples."""
    from kafka import TopicPartition

    from pipeline.kafka.clients import ensure_topics, make_consumer, make_producer
    from pipeline.settings import load_settings

    if not broker.is_running():
        broker.start()
    root = tmp_path_factory.mktemp("fuzz")
    models, hook, sensor_ids = build_world(root / "bundles")
    tag = uuid.uuid4().hex[:8]
    topics = {f"topic_{t}": f"t.fuzz.{t}.{tag}" for t in ("readings", "dlq", "forecasts", "alerts")}
    settings = load_settings(
        bootstrap_servers=broker.bootstrap, consumer_group=f"t.fuzz.{tag}",
        store_path=root / "store.sqlite", **topics,
    )  # fmt: skip
    ensure_topics(settings)
    config = ServiceConfig(allowed_lateness="0min", durable=False, poll_timeout_ms=50)
    service = ForecastService(settings, config, models, alert_hook=hook)
    producer = make_producer(settings, max_request_size=4 << 20)
    dlq = make_consumer(settings, group_id="")
    partitions = dlq.partitions_for_topic(settings.topic_dlq) or set()
    dlq.assign([TopicPartition(settings.topic_dlq, p) for p in partitions])
    dlq.seek_to_beginning()
    try:
        with service_thread(service):
            yield Fuzzed(service, settings, producer, dlq, sensor_ids, len(models), [])
    finally:
        producer.close()
        dlq.close()


blocks = count()


def _open_ticks(service: ForecastService) -> int:
    try:
        return len(service.assembler.open_ticks)
    except RuntimeError:  # the service changed them while we looked: look again
        return -1


@given(generated=st.lists(records, min_size=1, max_size=20))
def test_every_record_is_served_or_dead_lettered_and_every_tick_closes(fuzzed, generated):
    service, counters = fuzzed.service, fuzzed.service.counters
    base = START + next(blocks) * BLOCK_TICKS * TICK
    messages = [render(r, base, fuzzed.sensors) for r in generated]
    # Every sensor at tick 7, in every partition: the watermark passes every tick before.
    closing = {"v": 1, "ts": (base + 7 * TICK).isoformat()}
    closing["values"] = dict.fromkeys(fuzzed.sensors, 50.0)
    key, value = fuzzed.sensors[0].encode(), json.dumps(closing).encode()
    partitions = sorted(fuzzed.producer.partitions_for(fuzzed.settings.topic_readings))
    tail = [(key, value, p) for p in partitions]
    now = datetime.now(UTC)
    messages += [(key, value)] * len(tail)
    valid = sum(expected_valid(value, set(fuzzed.sensors), now) for _, value in messages)
    before = dict(counters)
    for key, value in messages[: -len(tail)]:
        fuzzed.producer.send(fuzzed.settings.topic_readings, key=key, value=value)
    for key, value, partition in tail:
        fuzzed.producer.send(
            fuzzed.settings.topic_readings, key=key, value=value, partition=partition
        )
    fuzzed.producer.flush()

    def delta(name: str) -> int:
        return counters[name] - before.get(name, 0)

    wait_until(lambda: delta("consumed") >= len(messages), what="the example's records")
    wait_until(lambda: _open_ticks(service) == 0, what="every tick closed")
    # The service adds a batch's counts key by key: wait for the last of them too.
    wait_until(
        lambda: delta("valid") + delta("dead_lettered") >= len(messages),
        what="the example's records counted",
    )
    assert delta("consumed") == len(messages)
    assert delta("valid") == valid
    assert delta("valid") + delta("dead_lettered") == len(messages)
    assert delta("batch_isolations") == delta("recoveries") == 0  # no fault on the way
    forecasts = delta("forecasts_published") + delta("forecasts_nonfinite")
    assert forecasts == delta("ticks_closed") * fuzzed.models * len(fuzzed.sensors)

    expected_letters = counters["dead_lettered"] - counters["dead_letters_unsent"]

    def read_letters() -> bool:
        for part in fuzzed.dlq.poll(timeout_ms=100).values():
            fuzzed.letters.extend(part)
        return len(fuzzed.letters) >= expected_letters

    wait_until(read_letters, what="the dead letters")
    assert len(fuzzed.letters) == expected_letters
    assert all(
        record_size(r.key, r.value, r.headers) <= BROKER_DEFAULT_MAX_MESSAGE_BYTES
        for r in fuzzed.letters
    )
    wait_until(
        lambda: store_counters(fuzzed.settings.store_path).get("consumed") == counters["consumed"],
        what="the store's counters",
    )
