"""No record stops the service: one fault test per way a record (or a store, or a broker)
could stop or wedge it, against the real embedded broker.

- readings compressed by their producer with any of Kafka's codecs: read;
- a value float32 cannot hold, a timestamp outside the supported range: dead-lettered
  with their own reasons, the following readings forecast as usual;
- messages near or over 1 MiB: their dead letters fit the broker's limit, cut with
  their size and sha256 in the headers, each sent once (no replay loop);
- a dead letter the producer refuses even cut: sent minimal, or reported, never a wedge;
- a record that trips an unexpected error after decoding: found by splitting the batch,
  dead-lettered (``processing_error``), the rest of the batch processed once;
- an alert hook that raises: the forecasts go on;
- a store locked by another writer: the batch is retried with a backoff, nothing lost.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from kafka.consumer.fetcher import ConsumerRecord

from pipeline.kafka.clients import ensure_topics, make_producer
from pipeline.kafka.dead_letters import (
    BROKER_DEFAULT_MAX_MESSAGE_BYTES,
    dead_letter_headers,
    fit_dead_letter,
    record_size,
    topic_max_message_bytes,
)
from pipeline.kafka.outbox import Outbox
from pipeline.kafka.replay import replay
from pipeline.kafka.schema import MAX_MESSAGE_BYTES
from pipeline.model_dir import load_bundles
from pipeline.service.batches import is_systemic
from pipeline.service.config import ServiceConfig
from pipeline.service.decoding import PROCESSING_ERROR, ReadingDecoder
from pipeline.service.loop import ForecastService
from pipeline.service.store import Store
from tests.service_support import make_world, read_topic, service_thread
from tests.waiting import WAIT_S, wait_until

pytestmark = pytest.mark.integration

CONFIG = ServiceConfig(allowed_lateness="0min", durable=False, poll_timeout_ms=50)
STEPS = 8
BIG = 4 << 20  # the test producer sends what a hostile client could


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("bundles"))


def _produce_around(world, settings, hostile: Sequence[tuple[bytes | None, bytes | None]]) -> int:
    """Half the good ticks, the hostile records, the other half; returns how many in all."""
    live = world.live.slice(0, STEPS)
    producer = make_producer(settings, max_request_size=BIG)
    first = replay(live.slice(0, STEPS // 2), producer, settings.topic_readings, progress=False)
    for key, value in hostile:
        producer.send(settings.topic_readings, key=key, value=value)
    rest = replay(live.slice(STEPS // 2, STEPS), producer, settings.topic_readings, progress=False)
    producer.flush()
    producer.close()
    return first.messages + rest.messages + len(hostile)


def _serve_until_done(service: ForecastService, produced: int) -> Mapping[str, int]:
    with service_thread(service):
        wait_until(lambda: service.counters["consumed"] >= produced, what="every record")
        wait_until(lambda: service.counters["ticks_closed"] >= STEPS, what=f"{STEPS} ticks")
    return service.counters


def _reading(sensor: str, ts: str, value: object) -> bytes:
    return json.dumps({"v": 1, "sensor": sensor, "ts": ts, "value": value}).encode()


HOSTILE_READINGS = {
    "float32_overflow": (
        "value_out_of_range",
        lambda s, ts: [
            _reading(s, ts, 1e308),  # the repro
            _reading(s, ts, 1e39),
            _reading(s, ts, -3.5e38),
            f'{{"v":1,"ts":"{ts}","values":{{"{s}":1e39}}}}'.encode(),
        ],
    ),
    "timestamp_out_of_range": (
        "timestamp_out_of_range",
        lambda s, ts: [
            _reading(s, "0001-01-01T00:00:00Z", 1.0),  # the repros
            _reading(s, "2300-01-01T00:00:00Z", 1.0),
            _reading(s, "1677-09-21T00:12:43Z", 1.0),
            _reading(s, "9999-12-31T23:59:59-05:00", 1.0),
            b'{"v":1,"ts":"2262-04-12T00:00:00Z","values":{"' + s.encode() + b'":1}}',
        ],
    ),
}


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_readings_a_producer_compressed_are_read_with_every_kafka_codec(
    codec, world, kafka_settings, tmp_path
):
    """Producers on a real cluster often compress (``compression.type``); without the
    codec's library the consumer could only dead-letter such a batch. The service's own
    producer compresses with ``ROADCAST_COMPRESSION``."""
    settings = kafka_settings.model_copy(
        update={"store_path": tmp_path / "store.sqlite", "compression": codec}
    )
    ensure_topics(settings)
    producer = make_producer(settings)
    assert producer.config["compression_type"] == codec
    sent = replay(world.live.slice(0, STEPS), producer, settings.topic_readings, progress=False)
    producer.flush()
    producer.close()
    service = ForecastService(settings, CONFIG, load_bundles(world.bundles))
    counters = _serve_until_done(service, sent.messages)
    assert counters["valid"] == sent.messages and counters["dead_lettered"] == 0
    assert counters["recoveries"] == 0
    forecasts = read_topic(settings, settings.topic_forecasts)
    assert len(forecasts) == len(world.models) * world.live.n_nodes * STEPS


@pytest.mark.parametrize("case", sorted(HOSTILE_READINGS))
def test_a_value_or_timestamp_the_models_cannot_hold_is_dead_lettered_and_serving_goes_on(
    case, world, kafka_settings, tmp_path
):
    settings = kafka_settings.model_copy(update={"store_path": tmp_path / "store.sqlite"})
    ensure_topics(settings)
    reason, make = HOSTILE_READINGS[case]
    sensor = world.live.sensor_ids[0]
    ts = world.live.timestamps[STEPS // 2].isoformat().replace("+00:00", "Z")
    hostile = [(sensor.encode(), raw) for raw in make(sensor, ts)]
    produced = _produce_around(world, settings, hostile)

    config = ServiceConfig(allowed_lateness="0min", durable=False, poll_timeout_ms=50)
    service = ForecastService(settings, config, load_bundles(world.bundles))
    counters = _serve_until_done(service, produced)
    assert counters["dead_lettered"] == counters[f"dead_lettered.{reason}"] == len(hostile)
    assert counters["valid"] + counters["dead_lettered"] == produced
    assert counters["recoveries"] == counters["batch_retries"] == 0
    with Store(settings.store_path, readonly=True) as store:
        assert store.tick_count() == STEPS
        assert store.count("forecasts") == len(world.models) * world.live.n_nodes * STEPS
    letters = read_topic(settings, settings.topic_dlq)
    assert sorted(r.value for r in letters) == sorted(v for _, v in hostile)


def test_near_1_mib_dead_letters_fit_the_broker_limit_each_sent_once(
    world, kafka_settings, tmp_path
):
    settings = kafka_settings.model_copy(update={"store_path": tmp_path / "store.sqlite"})
    ensure_topics(settings)
    sensor = world.live.sensor_ids[0].encode()
    head = b'{"v":1,"sensor":"'
    hostile = [
        (sensor, head + b"x" * (1_048_394 - len(head))),  # the issue's: under the schema cap
        (sensor, b"y" * MAX_MESSAGE_BYTES),
        (sensor, b"z" * (MAX_MESSAGE_BYTES + 1)),
        (sensor, bytes(range(256)) * 8000),  # 2 MB of binary
        (b"k" * 1_100_000, b"not json"),  # a key too large to keep
        (sensor, b"\x00" * 1000),  # small: kept whole
    ]
    produced = _produce_around(world, settings, hostile)
    service = ForecastService(settings, CONFIG, load_bundles(world.bundles))
    counters = _serve_until_done(service, produced)
    assert counters["dead_lettered"] == len(hostile)
    assert counters["valid"] + counters["dead_lettered"] == produced
    assert counters["recoveries"] == counters["batch_retries"] == 0

    letters = read_topic(settings, settings.topic_dlq)
    assert len(letters) == len(hostile)  # each once: no batch was replayed
    originals = {hashlib.sha256(v).hexdigest(): (k, v) for k, v in hostile}
    for letter in letters:
        headers = dict(letter.headers)
        assert record_size(letter.key, letter.value, letter.headers) <= (
            BROKER_DEFAULT_MAX_MESSAGE_BYTES
        )
        if "truncated" not in headers:
            assert (letter.key, letter.value) in hostile
            continue
        cut = headers["truncated"].decode().split(",")
        if "value" in cut:
            key, value = originals[headers["source.value.sha256"].decode()]
            assert int(headers["source.value.size"]) == len(value)
            assert value.startswith(letter.value) and len(letter.value) > 1_040_000
        else:
            key, value = next((k, v) for k, v in hostile if v == letter.value)
        if "key" in cut:
            assert letter.key is None and int(headers["source.key.size"]) == len(key)
            assert headers["source.key.sha256"].decode() == hashlib.sha256(key).hexdigest()
        else:
            assert letter.key == key
    truncated = [dict(r.headers).get("truncated") for r in letters]
    assert sorted(t for t in truncated if t) == [b"key"] + [b"value"] * 4


def _record(offset: int, key: bytes | None, value: bytes | None) -> ConsumerRecord:
    return ConsumerRecord(
        topic="readings", partition=0, leader_epoch=-1, offset=offset, timestamp=0,
        timestamp_type=0, key=key, value=value, headers=[], checksum=None,
        serialized_key_size=-1, serialized_value_size=-1, serialized_header_size=-1,
    )  # fmt: skip


def test_a_dead_letter_the_producer_refuses_goes_minimal_or_is_reported(kafka_settings, caplog):
    """A producer whose limit is below what the outbox was told (a broker or proxy with
    a smaller limit than the topic says): the dead letter goes minimal, and when even
    that is refused it is reported, never raised."""
    ensure_topics(kafka_settings)
    dlq = kafka_settings.topic_dlq
    headers = dead_letter_headers("bad_json", "not JSON", "readings", 0, 7)
    value = b"x" * 5000
    small = Outbox(make_producer(kafka_settings, max_request_size=700), max_message_bytes=1 << 20)
    assert small.send_dead_letter(dlq, b"k", value, headers, ("readings", 0, 7))
    small.flush(WAIT_S)
    small.close(WAIT_S)
    tiny = Outbox(make_producer(kafka_settings, max_request_size=200), max_message_bytes=1 << 20)
    with caplog.at_level("ERROR", logger="roadcast.outbox"):
        assert not tiny.send_dead_letter(dlq, b"k", value, headers, ("readings", 0, 8))
    tiny.flush(WAIT_S)
    tiny.close(WAIT_S)
    assert [r.message for r in caplog.records] == ["dead_letter_unsendable"]
    assert caplog.records[0].fields["sha256"] == hashlib.sha256(value).hexdigest()

    [letter] = read_topic(kafka_settings, dlq)
    headers_back = dict(letter.headers)
    assert letter.key == b"k" and letter.value == b""
    assert headers_back["truncated"] == b"value" and headers_back["error"] == b"bad_json"
    assert headers_back["source.value.sha256"] == hashlib.sha256(value).hexdigest().encode()


def test_a_dead_letter_the_broker_refused_goes_minimal_then_is_only_reported(kafka_settings):
    """The decoder's side of a refusal the broker reports at flush (``PublishError``
    naming the dead letters): the replay sends it minimal; refused again, it is counted
    and reported, and the partition moves on."""
    from collections import Counter

    ensure_topics(kafka_settings)
    decoder = ReadingDecoder({"a": 0}, kafka_settings.topic_dlq)
    outbox = Outbox(make_producer(kafka_settings))
    record = _record(41, b"a", b"{" * 3000)
    counts: Counter[str] = Counter()
    decoder.note_refused([("readings", 0, 41)])
    decoder.dead_letter(outbox, record, "bad_json", "not JSON", counts)
    decoder.note_refused([("readings", 0, 41)])
    decoder.dead_letter(outbox, record, "bad_json", "not JSON", counts)
    outbox.flush(WAIT_S)
    outbox.close(WAIT_S)
    assert counts["dead_lettered"] == 2 and counts["dead_letters_unsent"] == 1
    [letter] = read_topic(kafka_settings, kafka_settings.topic_dlq)
    assert letter.value == b"" and dict(letter.headers)["truncated"] == b"value"


class PlantedBug(ForecastService):
    """The real service with one planted bug: a batch holding the record keyed
    ``poison`` fails after it was processed (state changed, output queued), as a bug
    that one record triggers deep in the pipeline would. Nothing else is changed."""

    def process(self, batches: Mapping[Any, Sequence[Any]], outbox: Outbox, **kwargs: Any):
        result = super().process(batches, outbox, **kwargs)
        if any(r.key == b"poison" for part in batches.values() for r in part):
            raise RuntimeError("planted bug")
        return result


def test_a_record_that_trips_an_unexpected_error_is_found_and_dead_lettered_alone(
    world, kafka_settings, tmp_path
):
    settings = kafka_settings.model_copy(update={"store_path": tmp_path / "store.sqlite"})
    ensure_topics(settings)
    sensor = world.live.sensor_ids[1]
    ts = world.live.timestamps[STEPS // 2].isoformat().replace("+00:00", "Z")
    poison = _reading(sensor, ts, 42.0)  # a valid reading: only the planted bug fails it
    produced = _produce_around(world, settings, [(b"poison", poison)])
    service = PlantedBug(settings, CONFIG, load_bundles(world.bundles))
    counters = _serve_until_done(service, produced)
    assert counters["batch_isolations"] >= 1
    assert counters["dead_lettered"] == counters[f"dead_lettered.{PROCESSING_ERROR}"] == 1
    assert counters["valid"] == produced - 1
    with Store(settings.store_path, readonly=True) as store:  # every tick once, all forecasts
        assert store.tick_count() == STEPS == store.counters()["ticks_closed"]
        assert store.count("forecasts") == len(world.models) * world.live.n_nodes * STEPS
        assert store.counters()["valid"] == produced - 1
        assert store.counters()["batch_isolations"] == counters["batch_isolations"]
    [letter] = read_topic(settings, settings.topic_dlq)
    headers = dict(letter.headers)
    assert (letter.key, letter.value) == (b"poison", poison)
    assert headers["error"] == PROCESSING_ERROR.encode()
    assert b"RuntimeError: planted bug" in headers["error.message"]


def test_an_alert_hook_that_raises_does_not_stop_the_forecasts(world, kafka_settings, tmp_path):
    settings = kafka_settings.model_copy(update={"store_path": tmp_path / "store.sqlite"})
    ensure_topics(settings)
    produced = _produce_around(world, settings, [])
    broken_tick = world.live.timestamps[3]

    def hook(context):
        if context.tick.ts == broken_tick:
            raise ValueError("a detector bug")
        return []

    service = ForecastService(settings, CONFIG, load_bundles(world.bundles), alert_hook=hook)
    counters = _serve_until_done(service, produced)
    assert counters["alert_hook_errors"] == 1
    assert counters["valid"] == produced and counters["ticks_closed"] == STEPS
    assert counters["forecasts_published"] == len(world.models) * world.live.n_nodes * STEPS


@pytest.mark.slow
def test_a_locked_store_is_waited_out_with_a_backoff_and_nothing_is_lost(
    world, kafka_settings, tmp_path
):
    """Another writer holds the store's lock longer than its busy timeout: the batch
    fails for a reason that is not the records' (``database is locked``), is retried
    with a backoff, and goes through once the lock is released; nothing dead-lettered."""
    settings = kafka_settings.model_copy(update={"store_path": tmp_path / "store.sqlite"})
    ensure_topics(settings)
    service = ForecastService(settings, CONFIG, load_bundles(world.bundles))
    locker = sqlite3.connect(settings.store_path, isolation_level=None, timeout=WAIT_S)
    locker.execute("BEGIN IMMEDIATE")  # the write lock, held until the rollback below
    released = threading.Event()
    try:
        produced = _produce_around(world, settings, [])
        with service_thread(service):
            wait_until(lambda: service.counters["batch_retries"] >= 1, what="a retried batch")
            locker.execute("ROLLBACK")
            released.set()
            wait_until(lambda: service.counters["consumed"] >= produced, what="every record")
            wait_until(lambda: service.counters["ticks_closed"] >= STEPS, what="every tick")
    finally:
        if not released.is_set():
            locker.execute("ROLLBACK")
        locker.close()
    assert service.counters["valid"] == produced and service.counters["dead_lettered"] == 0
    with Store(settings.store_path, readonly=True) as store:
        assert store.tick_count() == STEPS
        assert store.counters()["valid"] == produced
        assert store.counters()["batch_retries"] == service.counters["batch_retries"] >= 1


# --------------------------------------------------------------------------- units


@pytest.mark.parametrize(
    ("key", "value", "cut"),
    [
        (b"773869", b"x" * 100, None),
        (b"773869", b"x" * 2_000_000, "value"),
        (b"k" * 1_100_000, b"x" * 10, "key"),
        (b"k" * 700_000, b"x" * 600_000, "key"),  # the larger half goes: the value fits
        (b"k" * 400_000, b"x" * 1_000_000, "value"),
        (b"k" * 1_100_000, b"x" * 1_100_000, "key,value"),
        (None, None, None),  # a tombstone without a key: sent as an empty value
        (b"k" * 1_500_000, None, "key"),  # a tombstone whose key goes: the same
        (None, b"x" * 1_048_500, "value"),
    ],
)
def test_fit_dead_letter_fits_exactly_and_says_what_it_cut(key, value, cut):
    headers = dead_letter_headers("too_large", "d" * 5000, "readings", 2, 10**12)
    limit = BROKER_DEFAULT_MAX_MESSAGE_BYTES
    letter = fit_dead_letter(key, value, headers, limit)
    back = dict(letter.headers)
    assert record_size(letter.key, letter.value, letter.headers) <= limit
    assert back.get("truncated") == (None if cut is None else cut.encode())
    assert letter.cut == (cut is not None)
    if value is None:
        assert letter.value == b"" and back["source.value"] == b"null"
    elif cut and "value" in cut:
        assert value.startswith(letter.value) and limit - 200 < record_size(
            letter.key, letter.value, letter.headers
        )
    else:
        assert letter.value == value
    minimal = fit_dead_letter(key, value, headers, limit, minimal=True)
    assert minimal.value in (b"", None) and record_size(minimal.key, b"", minimal.headers) < 2000
    for sent in (letter, minimal):  # kafka-python sends no record without key and value
        assert sent.key is not None or sent.value is not None


def test_the_topic_limit_falls_back_to_the_kafka_default_when_the_broker_keeps_none(
    kafka_settings,
):
    ensure_topics(kafka_settings)
    assert topic_max_message_bytes(kafka_settings, kafka_settings.topic_dlq) == 1_048_588


def test_store_and_broker_errors_are_systemic_a_row_the_store_refuses_is_not():
    from kafka.errors import KafkaTimeoutError

    assert is_systemic(sqlite3.OperationalError("database is locked"))
    assert is_systemic(OSError(28, "No space left on device"))
    assert is_systemic(KafkaTimeoutError("metadata"))
    assert not is_systemic(sqlite3.IntegrityError("NOT NULL constraint failed"))
    assert not is_systemic(ValueError("cannot convert float infinity"))
    assert not is_systemic(OverflowError("Python int too large to convert to C long"))


def test_a_reading_keyed_other_than_by_its_sensor_is_kept_counted_and_warned_once(caplog):
    from collections import Counter

    from pipeline.service.decoding import DecodedReadings

    decoder = ReadingDecoder({"a": 0, "b": 1}, "dlq")
    counts: Counter[str] = Counter()
    decoded = DecodedReadings()
    value = b'{"v":1,"sensor":"a","ts":"2024-05-01T08:00:00Z","value":1.0}'
    for offset, key in enumerate((b"a", b"b", b"b", None)):
        decoder.decode(None, _record(offset, key, value), decoded, None, counts)  # type: ignore[arg-type]
    assert len(decoded.messages) == 4 and counts["key_mismatch"] == 2
    assert caplog.text.count("key_mismatch") == 1


@pytest.mark.parametrize(
    ("sent", "known", "how"),
    [
        ("Zu\u0308rich Hbf", "Z\u00fcrich Hbf", "in another Unicode form"),
        ("7.0", "7", "as another number"),
    ],
)
def test_an_id_written_otherwise_is_named_as_such_in_its_dead_letter(sent, known, how):
    """The dead letter said "sensor 'Zürich Hbf' is not in the loaded model bundles", the
    very name the bundles list (NFD sent, NFC trained)."""
    from collections import Counter
    from datetime import UTC, datetime

    from pipeline.kafka.schema import encode_readings_batch
    from pipeline.service.decoding import DecodedReadings

    decoder = ReadingDecoder({"a": 0, known: 1}, "dlq")
    decoded, counts = DecodedReadings(), Counter()
    batch = encode_readings_batch(datetime(2024, 5, 1, 8, tzinfo=UTC), {"a": 1.0, sent: 2.0})
    decoder.decode(None, _record(0, None, batch), decoded, None, counts)  # type: ignore[arg-type]
    reason, detail = decoded.partial[0]
    assert reason == "unknown_sensor" and decoded.cols == [0]
    assert detail.startswith(
        f"sensor {sent!a} is not in the loaded model bundles, which have {known!a}: the same "
        f"id written {how}; send the id as the bundles write it"
    )


def test_long_numeric_ids_that_differ_are_not_spellings_of_one_another():
    from pipeline.data.readers import id_spelling

    assert id_spelling("12345678901234567890") != id_spelling("12345678901234567891")
    assert id_spelling("7") == id_spelling("7.0") == id_spelling("007") == id_spelling("7e0")
    assert id_spelling("Zu\u0308rich") == id_spelling("Z\u00fcrich") != id_spelling("Zurich")
