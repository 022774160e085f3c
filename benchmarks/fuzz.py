"""Fuzzing the service: many generated records, valid and hostile, through a real service.

``--records`` records (default 10,000; ``--quick``: 600) are generated from ``--seed``:
about half valid readings (single and batch form, extreme but float32-safe values, other
UTC offsets, late and duplicate readings) and half hostile ones (:data:`KINDS`: wrong
types, NaN/Infinity, float32 overflow, huge numbers, out-of-range, malformed, naive and
future timestamps, unknown and bad sensor ids, duplicate keys, deep nesting, huge
strings, binary garbage, empty messages and tombstones, mutated bytes, mixed batches,
messages near and over 1 MiB). They span ``records / 40`` ticks of a 20-sensor simulated
network, then one complete tick after them closes every tick before it.

All of it is produced to a fresh topic of an embedded broker first; then
``ForecastService.run`` (in a thread, as ``roadcast serve`` runs it) consumes it with
persistence and AR bundles trained on the network and the default alerting (the
interval detector calibrated on the validation part).

Invariants (``invariants`` in the JSON; the run exits 1 when one fails):

- ``nothing_lost``: consumed = produced = valid + dead-lettered;
- ``classified``: valid = the records this module expects valid (the schema, the loaded
  sensors and the clock accept them), so no valid record was dead-lettered by a fault;
- ``dead_letters_on_topic``: dead letters read back = dead-lettered - unsent, each within
  the broker's record limit;
- ``alive``: the service thread runs at the end and stops cleanly when asked;
- ``every_tick_closed``: no open tick at the end;
- ``forecasts``: one forecast (or a skipped non-finite one) per model, sensor and
  closed tick.

``python -m benchmarks.fuzz [--quick] [--records N] [--seed S]`` writes
``benchmarks/results/fuzz.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import open_ticks, write_result
from flows.reporting.text import print_table
from pipeline.kafka.schema import FLOAT32_MAX, SchemaError, decode_readings

TICK = timedelta(minutes=5)
START = datetime(2012, 3, 5, tzinfo=UTC)
SENSORS = 20
RECORDS_PER_TICK = 40
MAX_CLOCK_SKEW = timedelta(hours=1)  # the service's default


@dataclass(frozen=True)
class Generated:
    """One generated record and the kind of input it stands for."""

    kind: str
    key: bytes | None
    value: bytes | None


@dataclass
class _Context:
    rng: np.random.Generator
    sensors: list[str]
    ts: datetime  # the current tick's instant
    valid: list[bytes]  # valid messages so far (duplicates are drawn from them)


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _json(obj: object) -> bytes:
    return json.dumps(obj).encode()


def _reading(c: _Context, **fields: object) -> bytes:
    base: dict[str, object] = {
        "v": 1,
        "sensor": c.sensors[c.rng.integers(len(c.sensors))],
        "ts": _iso(c.ts),
        "value": round(float(c.rng.normal(60, 10)), 3),
    }
    base.update(fields)
    return _json({k: v for k, v in base.items() if v is not ...})


def _pick(c: _Context, options: list[Any]) -> Any:
    return options[c.rng.integers(len(options))]


def _text(c: _Context, n: int) -> str:
    return "".join(chr(int(x)) for x in c.rng.integers(32, 0x2FFF, n))


def _valid_batch(c: _Context) -> bytes:
    chosen = c.rng.choice(len(c.sensors), size=c.rng.integers(1, len(c.sensors)), replace=False)
    values = {c.sensors[i]: round(float(c.rng.normal(60, 10)), 2) for i in chosen}
    return _json({"v": 1, "ts": _iso(c.ts), "values": values})


def _mutated(c: _Context) -> bytes:
    raw = bytearray(_reading(c))
    for _ in range(c.rng.integers(1, 5)):
        pos = int(c.rng.integers(len(raw)))
        raw[pos] = int(c.rng.integers(256))
    return bytes(raw)


def _near_1_mib(c: _Context) -> bytes:
    size = _pick(c, [1_048_394, 1 << 20, (1 << 20) + 1, 1_500_000])
    head = b'{"v":1,"sensor":"'
    return head + bytes(c.rng.integers(97, 123, size - len(head), dtype=np.uint8))


_OUT_OF_RANGE_TS = [
    "0001-01-01T00:00:00Z", "1677-09-21T00:12:43Z", "1699-12-31T23:59:59Z",
    "2262-04-12T00:00:00Z", "2300-01-01T00:00:00Z", "9999-12-31T23:59:59-05:00",
]  # fmt: skip
_MALFORMED_TS = [
    "yesterday", "2012-13-01T00:00:00Z", "2012-03-01T25:00:00Z", "", "Z", "2012-03-01T00:00",
    "2012-03-01T00:00:00Z" + " " * 80, "2012-03-01T00:00:00+25:00", "\u0000",
]  # fmt: skip
_WRONG_TYPES: list[dict[str, object]] = [
    {"value": "fast"}, {"value": True}, {"value": None}, {"value": [1.0]}, {"value": {"a": 1}},
    {"sensor": 7.5}, {"sensor": None}, {"sensor": ["a"]}, {"ts": 1330560000}, {"ts": None},
    {"v": "1"}, {"v": True},
]  # fmt: skip
_LITERALS = [
    b'{"v":1,"sensor":"s00000","ts":"2012-03-05T00:00:00Z","value":NaN}',
    b'{"v":1,"sensor":"s00000","ts":"2012-03-05T00:00:00Z","value":-Infinity}',
    b'{"v":1,"sensor":"s00000","ts":"2012-03-05T00:00:00Z","value":1e999}',
    b'{"v":1,"ts":"2012-03-05T00:00:00Z","values":{"s00001":Infinity}}',
    b'{"v":1,"sensor":"s00001","sensor":"s00002","ts":"2012-03-05T00:00:00Z","value":1}',
    b"[" * 100_000,
    b'{"a":' * 30_000 + b"1" + b"}" * 30_000,
    b"", b"{}", b"null", b"[]", b"\xff\xfe",
]  # fmt: skip
_EXTREMES = [FLOAT32_MAX, -FLOAT32_MAX, 3e38, -2.5e38, 1e-45, -0.0, 0, 1e-300]


def _offset(c: _Context) -> bytes:
    ts = c.ts + timedelta(seconds=int(c.rng.integers(0, 299)))
    zone = timezone(timedelta(hours=_pick(c, [5.5, -8.0, 13.75])))
    return _reading(c, ts=ts.astimezone(zone).isoformat())


def _field_error(c: _Context) -> bytes:
    return _pick(c, [_reading(c, unit="mph"), _reading(c, value=...), _reading(c, ts=...),
                     _reading(c, v=2), _reading(c, v=...)])  # fmt: skip


def _big(c: _Context) -> float:
    return float(c.rng.uniform(38.54, 308))  # a decimal exponent float32 cannot hold


_CONTROL = ["\x00", "\x1b", "\n", "\u200b"]  # fromisoformat let NUL through


def _mixed_batch(c: _Context) -> bytes:
    return _valid_batch(c)[:-2] + _pick(c, [b',"s00019":"x"}}', b',"s00019":1e39}}'])


# kind -> (relative weight, maker). The kinds named valid* (and duplicates of them) are
# valid readings; every other kind is hostile.
KINDS: dict[str, tuple[float, Callable[[_Context], bytes | None]]] = {
    "valid": (30.0, _reading),
    "valid_batch": (8.0, _valid_batch),
    "valid_extreme": (4.0, lambda c: _reading(c, value=_pick(c, _EXTREMES))),
    "valid_offset": (3.0, _offset),
    "valid_late": (2.0, lambda c: _reading(c, ts=_iso(c.ts - timedelta(days=3)))),
    "duplicate": (3.0, lambda c: _pick(c, c.valid) if c.valid else _reading(c)),
    "wrong_type": (5.0, lambda c: _reading(c, **_pick(c, _WRONG_TYPES))),
    "literals": (6.0, lambda c: _pick(c, _LITERALS)),
    "float32_overflow": (4.0, lambda c: _reading(c, value=_pick(c, [1, -1]) * 10 ** _big(c))),
    "huge_number": (2.0, lambda c: _reading(c, value=_pick(c, [10**39, 10**400, -(10**300)]))),
    "ts_out_of_range": (4.0, lambda c: _reading(c, ts=_pick(c, _OUT_OF_RANGE_TS))),
    "ts_malformed": (3.0, lambda c: _reading(c, ts=_pick(c, [*_MALFORMED_TS, _text(c, 20)]))),
    "ts_naive": (2.0, lambda c: _reading(c, ts=c.ts.replace(tzinfo=None).isoformat())),
    "ts_control": (1.0, lambda c: _reading(c, ts=_iso(c.ts)[:-1] + _pick(c, _CONTROL) + "Z")),
    "valid_empty_batch": (0.5, lambda c: _json({"v": 1, "ts": _iso(c.ts), "values": {}})),
    "ts_future": (2.0, lambda c: _reading(c, ts=_iso(datetime.now(UTC) + timedelta(days=2)))),
    "unknown_sensor": (3.0, lambda c: _reading(c, sensor=_pick(c, ["nope", "s99999", 773869]))),
    "bad_sensor": (2.0, lambda c: _reading(c, sensor=_pick(c, ["", " s00001", "x" * 300]))),
    "field_errors": (3.0, _field_error),
    "huge_string": (1.0, lambda c: _reading(c, sensor="s" * int(c.rng.integers(1000, 300_000)))),
    "binary": (4.0, lambda c: c.rng.bytes(int(c.rng.integers(0, 3000)))),
    "tombstone": (1.0, lambda c: None),
    "mutated": (4.0, _mutated),
    "batch_mixed": (2.0, _mixed_batch),
    "near_1_mib": (0.15, _near_1_mib),
}  # fmt: skip


def generate(n: int, seed: int, sensors: list[str], start: datetime) -> list[Generated]:
    """``n`` records over ``ceil(n / RECORDS_PER_TICK)`` ticks from ``start``."""
    rng = np.random.default_rng(seed)
    names = list(KINDS)
    weights = np.array([KINDS[k][0] for k in names])
    kinds = rng.choice(len(names), size=n, p=weights / weights.sum())
    c = _Context(rng, sensors, start, [])
    out = []
    for i, k in enumerate(kinds.tolist()):
        c.ts = start + (i // RECORDS_PER_TICK) * TICK
        kind = names[k]
        value = KINDS[kind][1](c)
        roll = rng.random()
        if value is None or roll < 0.9:
            key: bytes | None = _pick(c, sensors).encode()
        else:
            key = _pick(c, [None, rng.bytes(16), b"k" * 100_000 if roll > 0.999 else b""])
        if kind.startswith("valid"):
            c.valid.append(value)  # type: ignore[arg-type]
        out.append(Generated(kind, key, value))
    return out


def expected_valid(value: bytes | None, known: set[str], now: datetime) -> bool:
    """Whether the service should take ``value`` as valid: the schema decodes it, every
    sensor is loaded and no timestamp lies beyond the clock skew."""
    try:
        readings = decode_readings(value)
    except SchemaError:
        return False
    return all(r.sensor in known and r.ts <= now + MAX_CLOCK_SKEW for r in readings)


def closing_tick(sensors: list[str], ts: datetime) -> bytes:
    """Every sensor at ``ts``: the tick closes complete, and every tick before it."""
    return _json({"v": 1, "ts": _iso(ts), "values": {s: 60.0 for s in sensors}})


def build_world(tmp: Path) -> tuple[dict[str, Any], Any, list[str]]:
    """AR and persistence bundles on a simulated network, and the default alerting."""
    from models.forecasters.ar import AutoRegressive
    from models.forecasters.baselines import Persistence
    from models.panel import chronological_split
    from pipeline.alerts.build import build_alerting
    from pipeline.alerts.saved import calibrate_interval, save_neighbours
    from pipeline.data.simulate import simulate_network
    from pipeline.model_dir import load_bundles, union_sensors

    panel = simulate_network(sensors=SENSORS, days=3, seed=7)
    split = chronological_split(panel)
    train, valid = split.train, split.valid
    for model in (Persistence(window=4, horizon=3), AutoRegressive(window=6, horizon=3)):
        model.fit(train, valid=valid)
        model.save(tmp / model.name)
    models = load_bundles(tmp)
    calibrate_interval(tmp, models["ar"], train, valid)
    save_neighbours(tmp, panel)
    hook = build_alerting(tmp, models, union_sensors(models), panel.freq)
    return models, hook, list(panel.sensor_ids)


def run(n: int, seed: int) -> dict[str, Any]:
    """Generate, produce, serve, check; returns the result document."""
    from pipeline.kafka.broker import EmbeddedBroker
    from pipeline.kafka.clients import ensure_topics, make_producer
    from pipeline.kafka.dead_letters import BROKER_DEFAULT_MAX_MESSAGE_BYTES, record_size
    from pipeline.service.config import ServiceConfig
    from pipeline.service.loop import ForecastService
    from pipeline.settings import load_settings

    with tempfile.TemporaryDirectory(prefix="roadcast-fuzz-") as tmp_name:
        tmp = Path(tmp_name)
        models, hook, sensors = build_world(tmp / "bundles")
        records = generate(n, seed, sensors, START)
        end = START + (n // RECORDS_PER_TICK + 2) * TICK
        records.append(Generated("closing_tick", sensors[0].encode(), closing_tick(sensors, end)))
        with EmbeddedBroker(log_path=tmp / "broker.log") as broker:
            settings = load_settings(
                bootstrap_servers=broker.bootstrap, store_path=tmp / "store.sqlite"
            )
            ensure_topics(settings)
            producer = make_producer(settings, max_request_size=4 << 20)
            for r in records[:-1]:
                producer.send(settings.topic_readings, key=r.key, value=r.value)
            # The closing tick in every partition: the watermark passes every tick before.
            partitions = sorted(producer.partitions_for(settings.topic_readings))
            for partition in partitions:
                closing = records[-1]
                producer.send(
                    settings.topic_readings,
                    key=closing.key,
                    value=closing.value,
                    partition=partition,
                )
            records += [records[-1]] * (len(partitions) - 1)
            now = datetime.now(UTC)
            expected = sum(expected_valid(r.value, set(sensors), now) for r in records)
            producer.flush()
            producer.close()
            config = ServiceConfig(durable=False, max_clock_skew=MAX_CLOCK_SKEW)
            service = ForecastService(settings, config, models, alert_hook=hook)
            stop, errors = threading.Event(), []

            def serve() -> None:
                try:
                    service.run(stop=stop, handle_signals=False)
                except BaseException as exc:  # reported as "alive": false
                    errors.append(repr(exc))

            thread = threading.Thread(target=serve, daemon=True)
            started = time.perf_counter()
            thread.start()
            _wait(lambda: service.counters["consumed"] >= len(records) or not thread.is_alive())
            elapsed = time.perf_counter() - started
            _wait(lambda: open_ticks(service) == 0 or not thread.is_alive())
            alive = thread.is_alive()
            still_open = open_ticks(service)
            stop.set()
            thread.join()
            counters = dict(service.counters)
            letters = _read_topic(settings, settings.topic_dlq)
    kinds = Counter(r.kind for r in records)
    valid_kinds = sum(v for k, v in kinds.items() if k.startswith("valid") or k == "duplicate")
    produced = len(records)
    dead = counters.get("dead_lettered", 0)
    unsent = counters.get("dead_letters_unsent", 0)
    largest = max((record_size(x.key, x.value, x.headers) for x in letters), default=0)
    ticks = counters.get("ticks_closed", 0)
    forecasts = counters.get("forecasts_published", 0) + counters.get("forecasts_nonfinite", 0)
    invariants = {
        "nothing_lost": counters.get("consumed") == produced == counters.get("valid", 0) + dead,
        "classified": counters.get("valid", 0) == expected,
        "dead_letters_on_topic": len(letters) == dead - unsent
        and largest <= BROKER_DEFAULT_MAX_MESSAGE_BYTES,
        "alive": alive and not errors,
        "every_tick_closed": still_open == 0,
        "forecasts": forecasts == ticks * len(models) * len(sensors),
    }
    reasons = {k.split(".", 1)[1]: v for k, v in counters.items() if k.startswith("dead_lettered.")}
    return {
        "records": produced,
        "seed": seed,
        "sensors": len(sensors),
        "models": sorted(models),
        "kinds": dict(sorted(kinds.items())),
        "generated_valid_kinds": valid_kinds,
        "expected_valid": expected,
        "valid": counters.get("valid", 0),
        "dead_lettered": dead,
        "dead_letter_reasons": dict(sorted(reasons.items())),
        "dead_letters_read_back": len(letters),
        "largest_dead_letter_bytes": largest,
        "lost": produced - counters.get("valid", 0) - dead,
        "alive": alive and not errors,
        "errors": errors,
        "ticks_closed": ticks,
        "open_ticks": still_open,
        "forecasts_published": counters.get("forecasts_published", 0),
        "forecasts_nonfinite": counters.get("forecasts_nonfinite", 0),
        "model_errors": sum(v for k, v in counters.items() if k.startswith("model_errors.")),
        "alert_hook_errors": counters.get("alert_hook_errors", 0),
        "alerts_published": counters.get("alerts_published", 0),
        "recoveries": counters.get("recoveries", 0),
        "batch_retries": counters.get("batch_retries", 0),
        "batch_isolations": counters.get("batch_isolations", 0),
        "consume_s": round(elapsed, 2),
        "records_per_s": round(produced / elapsed, 1),
        "invariants": invariants,
    }


def _wait(done: Callable[[], bool], limit_s: float = 1800.0) -> None:
    """Poll ``done`` until it holds; give up (the invariants then fail) after ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while not done() and time.monotonic() < deadline:
        time.sleep(0.2)


def _read_topic(settings: Any, topic: str) -> list[Any]:
    """Every record of ``topic``, read to the end offsets (asked again once quiet)."""
    from kafka import TopicPartition

    from pipeline.kafka.clients import make_consumer

    consumer = make_consumer(settings, group_id="")
    out: list[Any] = []
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        while True:
            end = consumer.end_offsets(tps)
            while any(consumer.position(tp) < end[tp] for tp in tps):
                for records in consumer.poll(timeout_ms=200).values():
                    out.extend(records)
            time.sleep(0.5)
            if consumer.end_offsets(tps) == end:
                return out
    finally:
        consumer.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fuzz", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small smoke run (600 records)")
    parser.add_argument("--records", type=int, default=None, help="records (default 10,000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    n = args.records or (600 if args.quick else 10_000)
    result = run(n, args.seed)
    result["quick"] = args.quick
    path = write_result("fuzz", result)
    rows = [[k, v] for k, v in result["kinds"].items()]
    print_table("generated records", ["kind", "records"], rows)
    rows = [[k, v] for k, v in result["dead_letter_reasons"].items()]
    print_table("dead letters", ["reason", "records"], rows)
    summary = [
        [k, result[k]]
        for k in (
            "records", "expected_valid", "valid", "dead_lettered", "dead_letters_read_back",
            "lost", "alive", "ticks_closed", "open_ticks", "forecasts_published",
            "alerts_published", "recoveries", "batch_isolations", "records_per_s",
        )
    ]  # fmt: skip
    summary += [[f"invariant {k}", v] for k, v in result["invariants"].items()]
    print_table("fuzz run", ["", "value"], summary)
    print(f"wrote {path}")
    if not all(result["invariants"].values()):
        raise SystemExit(f"fuzz invariants failed: {result['invariants']}")


if __name__ == "__main__":
    main()
