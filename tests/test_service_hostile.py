"""Hostile input the service and its settings must survive: one test per case that once
broke an invariant (a record stopped or stalled the loop, a reading was lost, a bad
setting gave a traceback or was silently accepted).

- a record the Kafka client cannot parse (lengths that do not add up, a batch in a codec
  it has no library for): kafka-python's next poll spun forever; now the service
  dead-letters it by position and goes on, and ``roadcast tail`` prints it and goes on;
- a header key that is not UTF-8 made kafka-python refuse its record and every record
  batched after it; now it is read as the Java client reads it;
- ``--max-clock-skew NaT`` dead-lettered every reading as ``future_timestamp``; NaT
  durations, ticks that are not whole milliseconds and lateness that overflows the
  nanosecond clock are refused up front, naming the option;
- settings that gave no deadline (``inf`` timeouts), failed later (ports, placeholders,
  store paths that are folders, a TOML ``true`` as a port) or were ambiguous (unbracketed
  IPv6 bootstrap servers); replay options checked only after connecting;
- sensor ids that no bundle can hold (control characters, lone surrogates, integers of
  thousands of digits) are ``bad_sensor``, not ``unknown_sensor``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from pipeline.kafka.schema import REASONS, SchemaError, decode_readings, encode_reading
from tests.service_support import MemoryOutbox, MiscountedHeaders, RawHeaderKey


def _reading(sensor: str, ts: str, value: float) -> bytes:
    return json.dumps({"v": 1, "sensor": sensor, "ts": ts, "value": value}).encode()


# --------------------------------------------------------------------------- Kafka


def _six_steps(kafka_settings, tmp_path: Path):
    """A tiny world's bundles, settings with a fresh store and topics, its first six steps,
    and the first sensor with the timestamp of the middle step."""
    from pipeline.kafka.clients import ensure_topics
    from tests.service_support import make_world

    world = make_world(tmp_path / "bundles")
    settings = kafka_settings.model_copy(update={"store_path": tmp_path / "store.sqlite"})
    ensure_topics(settings)
    live = world.live.slice(0, 6)
    ts = live.timestamps[3].isoformat().replace("+00:00", "Z")
    return world, settings, live, live.sensor_ids[0], ts


@pytest.mark.integration
def test_poll_readable_accounts_for_every_offset_of_a_batch_with_an_unparsable_record(
    kafka_settings,
):
    from kafka import TopicPartition

    from pipeline.kafka.clients import ensure_topics, make_consumer, make_producer
    from pipeline.kafka.unreadable import UnreadableRecord, poll_readable
    from tests.waiting import wait_until

    ensure_topics(kafka_settings, partitions=1)
    topic = kafka_settings.topic_readings
    producer = make_producer(kafka_settings, linger_ms=1000)
    producer.send(topic, key=b"a", value=b"0")
    producer.send(topic, key=b"a", value=b"1", headers=MiscountedHeaders())
    producer.send(topic, key=b"a", value=b"2")  # same batch, after the poison
    producer.flush()
    producer.send(topic, key=b"a", value=b"3")  # a batch of its own
    producer.flush()
    producer.close()
    consumer = make_consumer(kafka_settings, group_id="")
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning()
    seen: dict[int, object] = {}
    try:

        def read_all() -> bool:
            for records in poll_readable(consumer, 200).values():
                for r in records:
                    assert r.offset not in seen, f"offset {r.offset} twice"
                    seen[r.offset] = r
            return len(seen) >= 4

        wait_until(read_all, what="every offset", poll_s=0)
    finally:
        consumer.close()
    assert sorted(seen) == [0, 1, 2, 3]
    assert [type(seen[o]) is UnreadableRecord for o in range(4)] == [False, True, True, False]
    assert "CorruptRecordError" in seen[1].error  # type: ignore[attr-defined]
    assert seen[3].value == b"3"  # type: ignore[attr-defined]


@pytest.mark.integration
def test_a_header_key_that_is_not_utf8_costs_no_reading_of_its_batch(kafka_settings, tmp_path):
    """Readings batched with one whose header key is not UTF-8, that one included, are
    served (the Java client reads such a key with U+FFFD); none is dead-lettered."""
    from pipeline.kafka.clients import make_producer
    from pipeline.model_dir import load_bundles
    from pipeline.service.config import ServiceConfig
    from pipeline.service.loop import ForecastService
    from tests.service_support import service_thread
    from tests.waiting import wait_until

    world, settings, live, sensor, _ = _six_steps(kafka_settings, tmp_path)
    steps = live.n_time
    producer = make_producer(settings, linger_ms=5000)
    produced = 0
    for t, stamp in enumerate(live.timestamps):
        ts = stamp.isoformat().replace("+00:00", "Z")
        for i, name in enumerate(live.sensor_ids):
            odd = [(RawHeaderKey("trace"), b"x")] if (t, name) == (2, sensor) else []
            value = _reading(name, ts, float(live.values[t, i]))
            producer.send(settings.topic_readings, key=name.encode(), value=value, headers=odd)
            produced += 1
    producer.flush()  # one linger: the readings after the odd header share its batch
    producer.close()

    config = ServiceConfig(allowed_lateness="0min", durable=False, poll_timeout_ms=50)
    service = ForecastService(settings, config, load_bundles(world.bundles))
    with service_thread(service):
        wait_until(lambda: service.counters["consumed"] >= produced, what="every record")
        wait_until(lambda: service.counters["ticks_closed"] >= steps, what=f"{steps} ticks")
    assert service.counters["dead_lettered"] == 0
    assert service.counters["valid"] == produced


@pytest.mark.integration
def test_a_record_the_client_cannot_parse_is_dead_lettered_and_serving_goes_on(
    kafka_settings, tmp_path
):
    from pipeline.kafka.clients import make_producer
    from pipeline.kafka.replay import replay
    from pipeline.model_dir import load_bundles
    from pipeline.service.config import ServiceConfig
    from pipeline.service.decoding import PROCESSING_ERROR
    from pipeline.service.loop import ForecastService
    from pipeline.service.store import Store
    from tests.service_support import read_topic, service_thread
    from tests.waiting import wait_until

    world, settings, live, sensor, ts = _six_steps(kafka_settings, tmp_path)
    steps = live.n_time
    producer = make_producer(settings)
    first = replay(live.slice(0, steps // 2), producer, settings.topic_readings, progress=False)
    producer.send(
        settings.topic_readings,
        key=sensor.encode(),
        value=_reading(sensor, ts, 1.0),
        headers=MiscountedHeaders([("trace", b"x")]),
    )
    producer.flush()  # the poison alone in its batch: the readings around it stay readable
    rest = replay(live.slice(steps // 2, steps), producer, settings.topic_readings, progress=False)
    producer.close()
    produced = first.messages + 1 + rest.messages

    config = ServiceConfig(allowed_lateness="0min", durable=False, poll_timeout_ms=50)
    service = ForecastService(settings, config, load_bundles(world.bundles))
    with service_thread(service):
        wait_until(lambda: service.counters["consumed"] >= produced, what="every record")
        wait_until(lambda: service.counters["ticks_closed"] >= steps, what=f"{steps} ticks")
    counters = service.counters
    assert counters["dead_lettered"] == counters[f"dead_lettered.{PROCESSING_ERROR}"] == 1
    assert counters["valid"] + counters["dead_lettered"] == produced
    with Store(settings.store_path, readonly=True) as store:
        assert store.tick_count() == steps
    [letter] = read_topic(settings, settings.topic_dlq)
    headers = dict(letter.headers)
    assert headers["error"] == PROCESSING_ERROR.encode()
    assert headers["source.topic"] == settings.topic_readings.encode()
    assert b"cannot parse" in headers["error.message"]


# --------------------------------------------------------------------------- schema


@pytest.mark.parametrize(
    "raw",
    [
        b'{"v":1,"sensor":"\\ud800","ts":"2012-03-01T00:00:00Z","value":1}',  # lone surrogate
        b'{"v":1,"ts":"2012-03-01T00:00:00Z","values":{"a":1,"\\udfff":2}}',
        b'{"v":1,"sensor":' + b"7" * 201 + b',"ts":"2012-03-01T00:00:00Z","value":1}',
        b'{"v":1,"sensor":' + b"9" * 4000 + b',"ts":"2012-03-01T00:00:00Z","value":1}',
    ],
)
def test_sensor_ids_no_bundle_can_hold_are_bad_sensor(raw: bytes) -> None:
    with pytest.raises(SchemaError) as info:
        decode_readings(raw)
    assert info.value.reason == "bad_sensor" and info.value.reason in REASONS


def test_the_encoder_refuses_a_sensor_id_that_is_not_valid_unicode() -> None:
    from datetime import UTC, datetime

    from pipeline.kafka.schema import Reading

    with pytest.raises(SchemaError) as info:
        encode_reading(Reading("\ud800", datetime(2012, 3, 1, tzinfo=UTC), 1.0))
    assert info.value.reason == "bad_sensor"
    [back] = decode_readings(_reading("传感器", "2012-03-01T00:00:00Z", 1.0))
    assert back.sensor == "传感器"  # valid Unicode beyond ASCII still decodes


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_clock_skew": "NaT"}, "max_clock_skew must be a duration"),
        ({"allowed_lateness": "NaT"}, "allowed_lateness must be a duration"),
        ({"grace": "NaT"}, "grace must be a duration"),
        ({"tick": "1ns"}, "tick must be a whole number of milliseconds"),
        ({"tick": "1.5ms"}, "tick must be a whole number of milliseconds"),
        ({"allowed_lateness": "100000 days"}, "allowed_lateness must be at most"),
        ({"tick": "4000 days"}, "tick must be at most"),
        ({"grace": "300"}, "grace '300' has no unit"),  # pandas: 300 ns
        ({"max_clock_skew": " 3600 "}, "max_clock_skew ' 3600 ' has no unit"),
    ],
)
def test_service_config_refuses_durations_the_clock_cannot_hold(fields, message) -> None:
    from pipeline.service.config import ServiceConfig

    with pytest.raises(ValueError, match=message):
        ServiceConfig(**fields)
    assert ServiceConfig(allowed_lateness="1000 days", max_clock_skew=None, grace=None)


@pytest.mark.parametrize("name", ["freq", "allowed_lateness", "max_clock_skew"])
def test_assembler_config_refuses_nat(name: str) -> None:
    import pandas as pd

    from pipeline.service.ticks import AssemblerConfig

    fields = {"freq": pd.Timedelta("5min"), name: pd.NaT}
    with pytest.raises(ValueError, match="must be"):
        AssemblerConfig(**fields)


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--max-clock-skew", "NaT"], "--max-clock-skew"),
        (["--max-clock-skew", "abc"], "--max-clock-skew"),
        (["--max-clock-skew", "-1h"], "--max-clock-skew"),
        (["--tick", "1ns"], "--tick"),
        (["--tick", "1.5ms"], "--tick"),
        (["--poll-records", "0"], "--poll-records"),
        (["--grace", "300"], "--grace"),  # no unit: pandas would read 300 ns
        (["--allowed-lateness", "120"], "--allowed-lateness"),
        (["--tick", "300"], "--tick"),
        (["--only", ","], "--only"),  # names nothing: it would have served every model
        (["--allowed-lateness", "1000000d"], "too long"),
    ],
)
def test_serve_options_are_refused_naming_the_option(tmp_path, args, option) -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    result = CliRunner().invoke(app, ["serve", "--models", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    assert option in " ".join(result.output.split())


@pytest.mark.parametrize("case", ["no bundles", "not a store"])
def test_serve_refuses_an_empty_models_folder_or_a_foreign_store_before_joining(
    tmp_path, monkeypatch, case
) -> None:
    """Checked before the consumer group join: a broker address where nothing listens
    would otherwise be tried first, and a group's members rebalance for nothing."""
    from typer.testing import CliRunner

    from flows.cli import app

    models = tmp_path / "models"
    models.mkdir()
    store = tmp_path / "store.sqlite"
    if case == "not a store":
        import numpy as np
        import pandas as pd

        from models.forecasters.baselines import Persistence
        from models.panel import SensorPanel

        stamps = pd.date_range("2024-01-01", periods=20, freq="5min", tz="UTC")
        panel = SensorPanel.from_values(np.ones((20, 1), np.float32), stamps, ["a"])
        Persistence(window=2, horizon=2).fit(panel).save(models / "persistence")
        store.write_text("not SQLite")
    monkeypatch.setenv("ROADCAST_METRICS_ENABLED", "false")
    args = ["serve", "--models", str(models), "--store", str(store), "--bootstrap", "127.0.0.1:9"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    expected = "no model bundles" if case == "no bundles" else str(store)
    assert expected in result.output and "partitions" not in result.output


def _persistence_folder(models: Path) -> Path:
    """A models folder with one persistence bundle of 5-minute steps."""
    import numpy as np
    import pandas as pd

    from models.forecasters.baselines import Persistence
    from models.panel import SensorPanel

    stamps = pd.date_range("2024-01-01", periods=20, freq="5min", tz="UTC")
    panel = SensorPanel.from_values(np.ones((20, 1), np.float32), stamps, ["a"])
    Persistence(window=2, horizon=2).fit(panel).save(models / "persistence")
    return models


SERVE_OPTION_MISFITS = [
    (["--only", "gru"], "--only: no bundle for model(s) ['gru']", "it has ['persistence']"),
    (
        ["--tick", "15min"],
        "--tick: model 'persistence' was trained on 5-minute steps",
        "--tick 300s",
    ),
    (["--alert-model", "gru"], "--alert-model 'gru' is not served", "['persistence']"),
]


@pytest.mark.parametrize(("args", "message", "names"), SERVE_OPTION_MISFITS)
def test_serve_options_that_do_not_fit_the_bundles_are_refused_before_anything_starts(
    tmp_path, monkeypatch, args, message, names
) -> None:
    """They were refused after the group join: the running members rebalanced twice,
    and an empty store file and its lock were left behind."""
    from typer.testing import CliRunner

    from flows.cli import app

    models = _persistence_folder(tmp_path / "models")
    store = tmp_path / "store.sqlite"
    monkeypatch.setenv("ROADCAST_METRICS_ENABLED", "false")
    common = ["--models", str(models), "--store", str(store), "--bootstrap", "127.0.0.1:9"]
    result = CliRunner().invoke(app, ["serve", *common, *args])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert message in text and names in text, text
    assert not list(tmp_path.glob("store.sqlite*"))


@pytest.mark.parametrize(("args", "message", "names"), SERVE_OPTION_MISFITS)
def test_the_service_api_refuses_them_before_joining_too(
    tmp_path, monkeypatch, args, message, names
):
    import pandas as pd

    from pipeline.alerts.config import AlertingConfig
    from pipeline.model_dir import BundleDirError
    from pipeline.service import loop
    from pipeline.service.config import ServiceConfig
    from pipeline.settings import load_settings

    option, value = args
    config = ServiceConfig(
        tick=pd.Timedelta(value) if option == "--tick" else pd.Timedelta("5min"),
        only=(value,) if option == "--only" else (),
    )
    alerting = AlertingConfig(forecaster=value if option == "--alert-model" else None)
    joined: list[object] = []
    monkeypatch.setattr(loop, "GroupJoin", lambda *a: joined.append(a))
    settings = load_settings(
        bootstrap_servers="127.0.0.1:9", store_path=tmp_path / "s.sqlite", metrics_enabled=False
    )
    with pytest.raises(BundleDirError, match=re.escape(message)):
        loop.serve(
            settings, config, model_dir=_persistence_folder(tmp_path / "m"), alerting=alerting
        )
    assert not joined and not (tmp_path / "s.sqlite").exists()


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("ROADCAST_ALERT_TIMEOUT_S", "inf", "finite"),
        ("ROADCAST_ALERT_TIMEOUT_S", "1e308", "less than or equal to 3600"),
        ("ROADCAST_DASK_TIMEOUT_S", "inf", "finite"),
        ("ROADCAST_ALERT_RESEND_INTERVAL_S", "inf", "finite"),
        ("ROADCAST_ALERT_RESEND_INTERVAL_S", "0.001", "greater than or equal to 1 (the value is"),
        ("ROADCAST_DRIFT_COOLDOWN_H", "inf", "finite"),
        ("ROADCAST_DRIFT_RATIO", "inf", "finite"),
        ("ROADCAST_DRIFT_WINDOW_TICKS", "1" + "0" * 20, "less than or equal to 10000000"),
        ("ROADCAST_BOOTSTRAP_SERVERS", "::1:9093", "IPv6 address in brackets"),
        ("ROADCAST_BOOTSTRAP_SERVERS", "host:²", "HOST:PORT"),
        ("ROADCAST_BOOTSTRAP_SERVERS", "ho/st:9092", "HOST:PORT"),
        ("ROADCAST_BOOTSTRAP_SERVERS", "a]:9092", "HOST:PORT"),
        ("ROADCAST_ALERT_GENERATOR_URL", "https://x/{sensor:>99999999999}", "format spec"),
        ("ROADCAST_ALERT_GENERATOR_URL", "https://x/{sensor!r}", "format spec"),
        (
            "ROADCAST_ALERTMANAGER_URLS",
            "http://am:99999",
            "port 99999 is outside 1-65535, got http://am:99999",
        ),
        (
            "ROADCAST_ALERTMANAGER_URLS",
            "http://u:s3cr3t@am:70000/x",
            "port 70000 is outside 1-65535, got http://am:70000/...",
        ),
        ("ROADCAST_WEBHOOK_URLS", "http://hook:abc/x", "http(s)://HOST"),
        ("ROADCAST_STORE_PATH", "", "the path is empty"),
        ("ROADCAST_MODEL_DIR", "  ", "the path is empty"),
        ("ROADCAST_TOPIC_FORECASTS", "__consumer_offsets", "internal"),
    ],
)
def test_settings_that_cannot_work_are_one_line_naming_the_variable(
    clean_env, monkeypatch, variable: str, value: str, message: str
) -> None:
    from pipeline.settings import SettingsError, load_settings

    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    [line] = str(info.value).splitlines()
    assert line.startswith(f"invalid settings: {variable}:") and message in line, line


@pytest.mark.parametrize(
    "servers",
    ["[::1]:9092", "PLAINTEXT://kafka:9092", "kafka_1:9092, kafka-2:9092", "[fe80::1%eth0]:9092"],
)
def test_bootstrap_servers_the_clients_read_as_meant_are_still_accepted(clean_env, servers):
    from pipeline.settings import load_settings

    assert load_settings(bootstrap_servers=servers).bootstrap_servers


def test_a_store_path_that_cannot_hold_a_store_is_a_store_error(tmp_path) -> None:
    from pipeline.service.store import Store, StoreError

    text = tmp_path / "notes.txt"
    text.write_text("not SQLite " * 100)
    for path, message in [
        (tmp_path, "is a folder"),
        (text, "cannot use"),
        (text / "sub" / "store.sqlite", "cannot use"),
    ]:
        with pytest.raises(StoreError, match=message):
            Store(path)
    assert text.read_text() == "not SQLite " * 100  # left as it was


# --------------------------------------------------------------------------- service


def _processor(tmp_path: Path, **config: Any) -> Any:
    """A service's poll processor over a small simulated network, without a broker."""
    from pipeline.model_dir import load_bundles
    from pipeline.service.config import ServiceConfig
    from pipeline.service.processor import PollProcessor
    from pipeline.settings import Settings
    from tests.service_support import make_world

    world = make_world(tmp_path / "bundles")
    settings = Settings(store_path=tmp_path / "store.sqlite")
    service = ServiceConfig(durable=False, **config)
    return PollProcessor(settings, service, load_bundles(world.bundles), clock=lambda: 0.0)


def _process(processor: Any, readings: list[tuple[str, str]], first: int = 0) -> MemoryOutbox:
    """Process ``(sensor, ts)`` readings (values 50, 51, ...) as one poll of partition 0,
    at offsets from ``first``; returns what was sent."""
    from kafka import TopicPartition
    from kafka.consumer.fetcher import ConsumerRecord

    tp = TopicPartition(processor.settings.topic_readings, 0)
    records = [
        ConsumerRecord(
            tp.topic, 0, -1, first + k, 0, 0, sensor.encode(), _reading(sensor, ts, 50.0 + k),
            [], None, -1, -1, -1,
        )
        for k, (sensor, ts) in enumerate(readings)
    ]  # fmt: skip
    outbox = MemoryOutbox()
    report, batch = processor.process({tp: records}, outbox, now_ns=0)
    processor.finish(report, batch, flushed_at_ms=0)
    return outbox


def test_a_sensor_silent_since_a_tick_before_1700_does_not_fail_the_batch(tmp_path) -> None:
    """A 7-minute grid floors a 1700-01-01T00:00Z reading into a tick of 1699; a sensor
    silent since then went down with an alert the schema refuses (its first_seen is out
    of range): the batch failed, and each retry dead-lettered a valid reading."""
    import pandas as pd

    processor = _processor(tmp_path, tick="7min", allowed_lateness="0min", down_after=2)
    sensors = list(processor.sensor_ids)
    offset = 0
    for k in range(5):
        ts = pd.Timestamp("1700-01-01T00:00Z") + k * pd.Timedelta("7min")
        stamp = ts.isoformat().replace("+00:00", "Z")
        _process(processor, [(s, stamp) for s in sensors[:-1]], offset)  # the last never reports
        offset += len(sensors) - 1
    assert processor.counters["alerts_invalid"] == 1
    assert processor.counters["valid"] == offset and processor.counters["ticks_closed"] >= 3


def test_with_the_clock_check_off_a_reading_centuries_ahead_is_dead_lettered(tmp_path) -> None:
    """``--max-clock-skew off``: a reading far ahead of the network used to open a tick of
    its own, one per reading, without bound."""
    processor = _processor(tmp_path, max_clock_skew=None)
    sensors = list(processor.sensor_ids)
    readings = [(s, "2012-03-01T00:00:00Z") for s in sensors]
    outbox = _process(processor, [*readings, (sensors[0], "2240-01-01T00:00:00Z")])
    assert processor.counters["valid"] == len(sensors)
    (letter,) = outbox.letters
    assert letter["error"] == b"future_timestamp"
    assert b"ticks ahead of the time most sensors have reached" in letter["error.message"]
    assert processor.assembler.open_ticks == []


def test_readings_of_sensors_no_model_knows_are_dead_lettered_and_named_once(
    tmp_path, caplog
) -> None:
    """A producer naming sensors differently had every reading dead-lettered with only
    info-level counters to show for it."""
    from pipeline.service.decoding import UNKNOWN_LOGGED

    processor = _processor(tmp_path)
    strangers = [f"x{k}" for k in range(UNKNOWN_LOGGED + 5)]
    with caplog.at_level("WARNING", logger="roadcast.service"):
        outbox = _process(processor, [(s, "2012-03-01T00:00:00Z") for s in strangers * 2])
    assert len(outbox.letters) == 2 * len(strangers)
    named = [r.fields["sensor"] for r in caplog.records if r.getMessage() == "unknown_sensor"]
    assert named == strangers[:UNKNOWN_LOGGED]
    assert [r.getMessage() for r in caplog.records].count("unknown_sensors_many") == 1


def test_a_batch_form_reading_of_no_sensor_alone_in_its_poll_is_counted_valid(tmp_path) -> None:
    """``{"values": {}}`` (a tick where no sensor reported) is valid; alone in a poll it was
    counted neither valid nor dead-lettered, breaking consumed = valid + dead-lettered."""
    from kafka import TopicPartition
    from kafka.consumer.fetcher import ConsumerRecord

    processor = _processor(tmp_path)
    tp = TopicPartition(processor.settings.topic_readings, 0)
    empty = b'{"v":1,"ts":"2012-03-01T00:00:00Z","values":{}}'
    record = ConsumerRecord(tp.topic, 0, -1, 0, 0, 0, None, empty, [], None, -1, -1, -1)
    outbox = MemoryOutbox()
    report, batch = processor.process({tp: [record]}, outbox, now_ns=0)
    processor.finish(report, batch, flushed_at_ms=0)
    assert processor.counters["valid"] == 1 and not outbox.letters


def test_a_batch_form_record_with_bad_or_unknown_sensors_keeps_the_valid_readings(
    tmp_path,
) -> None:
    """One sensor added to a producer's network (unknown to the models) or one bad value
    in a batch-form record dead-lettered the whole record: every sensor lost the tick."""
    import orjson
    from kafka import TopicPartition
    from kafka.consumer.fetcher import ConsumerRecord

    processor = _processor(tmp_path, max_clock_skew=None)  # 2012 is after now_ns=0
    sensors = list(processor.sensor_ids)
    tp = TopicPartition(processor.settings.topic_readings, 0)
    values: dict[str, object] = {s: 50.0 for s in sensors}
    values["new-sensor"] = 40.0
    values[sensors[0]] = "n/a"
    mixed = orjson.dumps({"v": 1, "ts": "2012-03-01T00:00:00Z", "values": values})
    strangers = orjson.dumps({"v": 1, "ts": "2012-03-01T00:05:00Z", "values": {"y": 1.0}})
    records = [
        ConsumerRecord(tp.topic, 0, -1, k, 0, 0, None, raw, [], None, -1, -1, -1)
        for k, raw in enumerate([mixed, strangers])
    ]
    outbox = MemoryOutbox()
    report, batch = processor.process({tp: records}, outbox, now_ns=0)
    processor.finish(report, batch, flushed_at_ms=0)
    counters = processor.counters
    assert counters["consumed"] == 2 and counters["valid"] == 0
    assert counters["dead_lettered"] == 2 and report.counts["readings"] == len(sensors) - 1
    first, second = sorted(outbox.letters, key=lambda letter: letter["error"])
    assert first["error"] == b"bad_type"
    message = first["error.message"].decode()
    assert sensors[0] in message and "1 more sensor of this record rejected" in message
    assert f"its other {len(sensors) - 1} readings were used" in message
    assert second["error"] == b"unknown_sensor" and b"'y'" in second["error.message"]
    assert b"were used" not in second["error.message"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--speedup", "-1"], "--speedup"),
        (["--limit", "-5"], "--limit"),
        (["--topic", "../readings"], "not a legal topic name"),
        (["--topic", "__consumer_offsets"], "internal"),
    ],
)
def test_replay_options_are_refused_before_connecting(clean_env, monkeypatch, args, expected):
    from typer.testing import CliRunner

    from flows.cli import app

    monkeypatch.setenv("ROADCAST_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # never reached
    result = CliRunner().invoke(app, ["replay", "simulated:sensors=3,hours=1", *args])
    assert result.exit_code in (1, 2), result.output
    assert expected in " ".join(result.output.split()) and "no Kafka broker" not in result.output


@pytest.mark.integration
def test_tail_prints_a_record_the_client_cannot_parse_and_goes_on(kafka_settings) -> None:
    import subprocess
    import sys

    from pipeline.kafka.clients import ensure_topics, make_producer
    from tests.service_support import REPO, service_env
    from tests.waiting import WAIT_S

    ensure_topics(kafka_settings, partitions=1)
    topic = kafka_settings.topic_readings
    producer = make_producer(kafka_settings)
    producer.send(topic, value=_reading("a", "2012-03-01T00:00:00Z", 1.0))
    producer.flush()
    producer.send(topic, value=b"{}", headers=MiscountedHeaders())
    producer.flush()
    producer.send(topic, value=_reading("b", "2012-03-01T00:00:00Z", 2.0))
    producer.flush()
    producer.close()
    command = [sys.executable, "-m", "flows.cli", "tail", "readings", "--from-beginning",
               "--max", "3", "--timeout", "5"]  # fmt: skip
    done = subprocess.run(
        command, cwd=REPO, env=service_env(kafka_settings), capture_output=True, text=True,
        timeout=WAIT_S,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert [line.split(" ", 1)[0] for line in lines] == ["0@0", "0@1", "0@2"], lines
    assert "unreadable" in lines[1] and "cannot parse" in lines[1]


@pytest.mark.integration
def test_odd_keys_and_headers_and_payloads_are_served_or_dead_lettered(kafka_settings, tmp_path):
    """Records valid or not, with keys that are not UTF-8, thousands of headers, empty
    headers, payloads in UTF-16, with a BOM, or msgpack: each is served or
    dead-lettered with its reason, and the ticks around them close as usual."""
    from pipeline.kafka.clients import make_producer
    from pipeline.kafka.replay import replay
    from pipeline.model_dir import load_bundles
    from pipeline.service.config import ServiceConfig
    from pipeline.service.loop import ForecastService
    from tests.service_support import read_topic, service_thread
    from tests.waiting import wait_until

    world, settings, live, sensor, ts = _six_steps(kafka_settings, tmp_path)
    steps = live.n_time
    good = _reading(sensor, ts, 50.0)
    hostile: list[tuple[bytes | None, bytes | None, list, str | None]] = [
        (b"\xff\xfe\x00", good, [], None),  # a key that is not UTF-8: still a reading
        (sensor.encode(), good, [("h", b"\xff")] * 5000, None),  # thousands of headers
        (sensor.encode(), good, [("", b"")], None),  # an empty header
        (b"\xff\xfe", None, [], "bad_type"),  # a tombstone
        (None, good.decode().encode("utf-16"), [], "not_utf8"),
        (None, b"\xef\xbb\xbf" + good, [], None),  # a UTF-8 byte order mark: read
        (None, bytes.fromhex("84a17601a673656e736f72a3373733"), [], "not_utf8"),  # msgpack
        (None, _reading("not-in-any-bundle", ts, 1.0), [], "unknown_sensor"),
        (None, b"{", [("traceparent", b"00-abc-def-01"), ("producer", b"gw-7")], "bad_json"),
        (None, b"[", [("h", b"\xff")] * 10_000, "bad_json"),  # too many to keep
    ]
    producer = make_producer(settings)
    first = replay(live.slice(0, steps // 2), producer, settings.topic_readings, progress=False)
    for key, value, headers, _ in hostile:
        producer.send(settings.topic_readings, key=key, value=value, headers=headers)
    rest = replay(live.slice(steps // 2, steps), producer, settings.topic_readings, progress=False)
    producer.flush()
    producer.close()
    produced = first.messages + len(hostile) + rest.messages

    config = ServiceConfig(allowed_lateness="0min", durable=False, poll_timeout_ms=50)
    service = ForecastService(settings, config, load_bundles(world.bundles))
    with service_thread(service):
        wait_until(lambda: service.counters["consumed"] >= produced, what="every record")
        wait_until(lambda: service.counters["ticks_closed"] >= steps, what=f"{steps} ticks")
    counters = service.counters
    reasons = [r for *_, r in hostile if r is not None]
    assert counters["dead_lettered"] == len(reasons)
    assert counters["valid"] + counters["dead_lettered"] == produced
    letters = read_topic(settings, settings.topic_dlq)
    assert sorted(dict(r.headers)["error"].decode() for r in letters) == sorted(reasons)
    traced, crowded = (next(r for r in letters if r.value == v) for v in (b"{", b"["))
    assert traced.headers[:2] == [("traceparent", b"00-abc-def-01"), ("producer", b"gw-7")]
    assert int(dict(traced.headers)["source.timestamp"]) > 0  # the original record's
    assert dict(crowded.headers)["source.headers.dropped"] == b"10000"
    assert len(crowded.headers) < 10


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("metrics_port = true\n", "metrics_port in 'roadcast.toml': expected a number, got true"),
        ("alert_timeout_s = inf\n", "alert_timeout_s in 'roadcast.toml': Input should be a finite"),
        ('store_path = ""\n', "store_path in 'roadcast.toml': the path is empty"),
    ],
)
def test_toml_values_of_the_wrong_kind_are_refused(clean_env, tmp_path, toml, message) -> None:
    from pipeline.settings import SettingsError, load_settings

    (tmp_path / "roadcast.toml").write_text(toml)
    with pytest.raises(SettingsError, match=message):
        load_settings()


def test_poll_readable_leaves_pending_records_alone_on_an_error_about_the_broker() -> None:
    """Only a parse failure marks the fetcher's pending batch unreadable: a broker or
    group error with records still pending re-raises and skips nothing."""
    from types import SimpleNamespace

    from kafka.errors import KafkaConnectionError

    from pipeline.kafka.unreadable import poll_readable

    drained: list[bool] = []
    part = SimpleNamespace(
        topic_partition=None, next_fetch_offset=5, drain=lambda: drained.append(True)
    )

    def poll(timeout_ms: int) -> dict:
        raise KafkaConnectionError("broker away")

    consumer = SimpleNamespace(poll=poll, _fetcher=SimpleNamespace(_next_partition_records=part))
    with pytest.raises(KafkaConnectionError):
        poll_readable(consumer, 10)  # type: ignore[arg-type]
    assert drained == [] and consumer._fetcher._next_partition_records is part


@pytest.mark.integration
def test_a_batch_in_a_codec_the_consumer_lacks_is_dead_lettered_record_by_record(
    kafka_settings, monkeypatch
):
    """A batch compressed with a codec this consumer has no library for (lz4 from a Java
    client, without python-lz4 here): kafka-python raised, then spun. The embedded broker
    stores batches uncompressed, so the first batch is made to read as lz4."""
    from kafka import TopicPartition
    from kafka.record.default_records import DefaultRecordBatch

    from pipeline.kafka.clients import ensure_topics, make_consumer, make_producer
    from pipeline.kafka.unreadable import UnreadableRecord, poll_readable
    from tests.waiting import wait_until

    ensure_topics(kafka_settings, partitions=1)
    topic = kafka_settings.topic_readings
    producer = make_producer(kafka_settings, linger_ms=1000)
    for value in (b"0", b"1", b"2"):
        producer.send(topic, key=b"a", value=value)
        if value != b"0":
            producer.flush()  # batches: offsets 0-1, then 2
    producer.close()
    codec = DefaultRecordBatch.compression_type.fget
    lz4 = property(lambda batch: batch.CODEC_LZ4 if batch.base_offset == 0 else codec(batch))
    monkeypatch.setattr(DefaultRecordBatch, "compression_type", lz4)
    monkeypatch.setattr("kafka.codec.has_lz4", lambda: False)
    consumer = make_consumer(kafka_settings, group_id="")
    consumer.assign([TopicPartition(topic, 0)])
    consumer.seek_to_beginning()
    seen: dict[int, object] = {}
    try:

        def read_all() -> bool:
            for records in poll_readable(consumer, 200).values():
                seen.update((r.offset, r) for r in records)
            return len(seen) >= 3

        wait_until(read_all, what="every offset", poll_s=0)
    finally:
        consumer.close()
    assert [type(seen[o]) is UnreadableRecord for o in range(3)] == [True, True, False]
    assert "UnsupportedCodecError" in seen[0].error  # type: ignore[attr-defined]
