"""Streaming service throughput and tick latency against the embedded broker.

One run, two phases, each on fresh topics, a fresh consumer group and a fresh store:

1. **Throughput.** ``--steps`` time steps of the data (all sensors) are produced at
   full speed first. Then (a) a plain kafka-python consumer reads them in a consumer
   group, committing after every poll batch as the service does
   (``raw_consume_per_s``), and (b) the service consumes the same messages with every
   loaded model: validation, assembly, forecasting, publishing, flushing, storing and
   committing included (``service_per_s``), once per forecast wire of ``--wires``
   (default ``v1,v2``: one record per model and sensor, or one frame per model and
   tick), each in its own consumer group, forecasts topic and store; then (a) again.
   Every rate runs from the first record to the last (the group join is excluded);
   ``raw_consume_per_s`` is the mean of the two raw runs and
   ``ratio = service_per_s / raw_consume_per_s`` per wire (goals >= 0.5 with v2, >= 0.2
   with v1; ``ratio`` at the top level is the first wire's).
2. **Latency.** The service runs first; then ``--latency-ticks`` steps are produced at
   one step every ``--tick-interval`` seconds (a pace the service sustains, so the
   number is the service's latency, not a backlog's). Each tick's latency is stored by
   the service: from the Kafka timestamp of the tick's last reading to its forecasts
   being acknowledged by the broker (goal p99 <= 100 ms with 207 sensors and every
   registered model on CPU).
2b. **Latency with missing readings.** The same on the next ``--missing-ticks`` steps
   with realistic missingness on top of the data's own: ``--silent`` (5 %) of the sensors
   never report and ``--gaps`` (1 %) of the other readings are dropped at random, one
   step every ``--missing-interval`` seconds (default: the grace plus one second, so that
   the grace, not the next step's readings, closes the ticks a sensor skipped). Silent
   sensors go down after ``down_after`` ticks (an alert each); the other incomplete
   ticks close on the processing-time grace (goal p99 <= grace + 100 ms). The JSON
   counts the ticks closed by each rule, and the spread of the Kafka timestamps of
   each tick's readings in phase 2 (what the grace must cover).

3. **Publishing ceiling.** With v1 the service publishes one forecast per model and
   sensor: with 6 models every reading consumed means 6 records produced, so its
   throughput can never exceed a sixth of what the producer alone manages. The v1
   forecasts the throughput phase published are read back and produced again to a
   fresh topic, (a) one
   ``KafkaProducer.send`` per record (``produce_send_per_s``) and (b) through the
   service's bulk path (``produce_bulk_per_s``, :mod:`pipeline.kafka.record_batches`), each
   flushed; ``ceiling_readings_per_s`` = the bulk rate / forecasts per reading, and
   ``share_of_ceiling`` = service_per_s / that.

Alerts are on, as ``roadcast serve`` runs by default: the forecast-interval detector on
the ``ar`` bundle's forecasts, calibrated on the validation part of the data
(``--no-alerts`` leaves them out).

No phase waits forever: once the producer is done, a phase ends when every step with a
reading has closed or when no tick has closed for ``--settle`` seconds; the ticks that
did not close are listed (``unclosed``) with the ticks still open in the service.

``idle_penalty``: the same fixed CPU work right after the process sat idle for the grace,
against back to back (:func:`benchmarks.common.idle_penalty`): a grace-closed tick starts
its work after such a pause, and on a virtual machine whose host evicts an idle guest's
memory and caches that work runs several times slower than the throughput phase's.

``lost`` = readings produced - valid - dead-lettered, over every phase (must be 0).
Where the time goes: the service times its stages (decode, assemble, each model's
``predict``, encode, send, flush, store, commit) and the table ``ms per tick`` shows
them for both phases (``counters.*.ms_per_tick`` in the JSON). For a finer view,
``--profile`` runs the first wire's throughput phase under cProfile and writes the top
functions to ``benchmarks/results/stream_profile.txt`` (that run's rates are then not
comparable, so its JSON goes to ``stream_profiled.json``, leaving ``stream.json`` alone).

Bundles come from ``--models DIR``, or are trained first (every registered model, one
seed, ``--epochs`` epochs; ``--quick``: persistence and AR only on fewer steps).
``python -m benchmarks.stream [--quick]`` writes ``benchmarks/results/stream.json``;
``--data simulated:sensors=2000 --name stream_2000`` the 2,000-sensor run.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import RESULTS_DIR, idle_penalty, write_result
from benchmarks.stream_service import (
    produce,
    service_latency,
    service_throughput,
    with_missingness,
)
from flows.reporting.text import print_table
from models.forecasters.base import Forecaster
from models.panel import SensorPanel
from pipeline.jsonlog import configure_logging
from pipeline.kafka.broker import EmbeddedBroker
from pipeline.service.config import ServiceConfig
from pipeline.settings import Settings, load_settings


def _panel(spec: str | None) -> SensorPanel:
    from flows.demo.setup import choose_panel

    return choose_panel(spec, data_dir=load_settings().data_dir)


def _bundles(
    panel: SensorPanel, models_dir: Path | None, names: tuple[str, ...], epochs: int, out: Path
) -> tuple[dict[str, Forecaster], Path]:
    from flows.threads import limit_threads
    from flows.train_models import train_models
    from models.forecasters.comparison import TrainPlan
    from pipeline.model_dir import load_bundles

    if models_dir is None:
        plan = TrainPlan(models=names, seeds=1, epochs=epochs, progress=False, device="cpu")
        with limit_threads(1):  # a second thread spin-waits on this machine's busy cores
            train_models(panel, plan, out, report=False, log=lambda line: print(f"  train {line}"))
        models_dir = out / "bundles"
    models = load_bundles(models_dir)
    for name, model in models.items():
        if set(model.sensor_ids) != set(panel.sensor_ids):
            raise SystemExit(
                f"bundle {name!r} in {models_dir} was trained on other sensors than "
                f"{panel.name}; pass the matching --data or retrain"
            )
    return models, models_dir


def _alert_hooks(
    models: dict[str, Forecaster], panel: SensorPanel, bundles: Path, count: int
) -> list[Any]:
    """``count`` fresh copies of the service's default alerting, with the interval detector
    calibrated on the validation part (saved next to the bundles, as ``roadcast demo``
    does) and the road graph's neighbours for grouping."""
    from models.panel import chronological_split
    from pipeline.alerts.build import build_alerting
    from pipeline.alerts.config import choose_forecaster
    from pipeline.alerts.saved import calibrate_interval, save_neighbours
    from pipeline.model_dir import union_sensors

    name = choose_forecaster(list(models))
    split = chronological_split(panel)
    calibrate_interval(bundles, models[name], split.train, split.valid)
    save_neighbours(bundles, panel)
    return [
        build_alerting(bundles, models, union_sensors(models), panel.freq) for _ in range(count)
    ]


def produce_rates(
    settings: Settings, messages: list[tuple[bytes, bytes]], repeats: int = 2
) -> dict[str, float]:
    """Records/s of the producer alone for ``messages``: one ``send()`` each, and the
    service's bulk path; each flushed, best of ``repeats`` (fresh topic each time)."""
    from pipeline.kafka.clients import ensure_topics, make_producer
    from pipeline.kafka.outbox import Outbox
    from pipeline.service.batches import PRODUCER_CONFIG

    rates: dict[str, float] = {}
    for mode in ("send", "bulk"):
        best = 0.0
        for rep in range(repeats):
            target = settings.model_copy(
                update={"topic_forecasts": f"{settings.topic_forecasts}.{mode}{rep}"}
            )
            ensure_topics(target)
            outbox = Outbox(make_producer(target, **PRODUCER_CONFIG), bulk=mode == "bulk")
            outbox.send(target.topic_forecasts, messages[0][0], messages[0][1])
            outbox.flush(30)  # metadata and connection ready: time the records only
            started = time.perf_counter()
            if mode == "bulk":
                for first in range(0, len(messages), 1242):  # tick-sized calls
                    outbox.send_many(target.topic_forecasts, messages[first : first + 1242])
            else:
                for key, value in messages:
                    outbox.send(target.topic_forecasts, key, value)
            outbox.flush(120)
            best = max(best, len(messages) / (time.perf_counter() - started))
            outbox.close(10)
        rates[mode] = best
    return rates


def read_back(
    settings: Settings, expected: int, timeout_s: float = 120
) -> list[tuple[bytes, bytes]]:
    """The ``(key, value)`` of the first ``expected`` records of the forecasts topic."""
    from kafka import TopicPartition

    from pipeline.kafka.clients import make_consumer

    consumer = make_consumer(settings, group_id="", max_poll_records=5000)
    out: list[tuple[bytes, bytes]] = []
    try:
        partitions = consumer.partitions_for_topic(settings.topic_forecasts) or set()
        consumer.assign([TopicPartition(settings.topic_forecasts, p) for p in partitions])
        consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout_s
        while len(out) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                out.extend((r.key, r.value) for r in records)
    finally:
        consumer.close()
    return out[:expected]


def _fresh(settings: Settings, label: str, store: Path) -> Settings:
    tag = f"{label}.{uuid.uuid4().hex[:8]}"
    return settings.model_copy(
        update={
            "topic_readings": f"bench.readings.{tag}",
            "topic_dlq": f"bench.dlq.{tag}",
            "topic_forecasts": f"bench.forecasts.{tag}",
            "topic_alerts": f"bench.alerts.{tag}",
            "consumer_group": f"bench.service.{tag}",
            "store_path": store,
        }
    )


def _wire_settings(settings: Settings, wire: str, store: Path, index: int) -> Settings:
    """The throughput phase's settings for one wire: the same readings, its own group,
    forecasts and alerts topics and store."""
    return settings.model_copy(
        update={
            "forecast_wire": wire,
            "consumer_group": f"{settings.consumer_group}.{wire}",
            "topic_forecasts": f"{settings.topic_forecasts}.{wire}",
            "topic_alerts": f"{settings.topic_alerts}.{wire}",
            "topic_dlq": f"{settings.topic_dlq}.{wire}" if index else settings.topic_dlq,
            "store_path": store,
        }
    )


def raw_consume(
    settings: Settings, expected: int, timeout_s: float = 300, group_suffix: str = "raw"
) -> float:
    """Messages/s of a plain consumer in a group (commit per poll batch), first to last."""
    from pipeline.kafka.clients import make_consumer

    consumer = make_consumer(
        settings, settings.topic_readings, group_id=f"{settings.consumer_group}.{group_suffix}"
    )
    seen, at_first, first, last = 0, 0, None, None
    deadline = time.monotonic() + timeout_s
    try:
        while seen < expected and time.monotonic() < deadline:
            batches = consumer.poll(timeout_ms=100, max_records=1000)
            if not batches:
                continue
            seen += sum(len(records) for records in batches.values())
            consumer.commit()
            last = time.perf_counter()
            if first is None:  # the clock starts after the first batch, as for the service
                first, at_first = last, seen
    finally:
        consumer.close()
    if seen < expected or first is None or last is None or last <= first:
        raise RuntimeError(f"raw consumer read {seen} of {expected} messages")
    return (seen - at_first) / (last - first)


def _notes(result: dict[str, Any], per_tick: dict[str, float]) -> list[str]:
    """Where the throughput goes, in words, from this run's numbers."""
    per_reading = result["forecasts_per_reading"]
    raw = result["raw_consume_per_s"]
    ceiling = result["ceiling_readings_per_s"]
    total = sum(per_tick.values())
    own = result["sensors"] * 1000.0 / total if total > 0 else float("inf")
    goal_ms = result["sensors"] * 1000.0 / (0.5 * raw)
    top = sorted(per_tick.items(), key=lambda kv: -kv[1])[:5]
    return [
        f"Publishing ceiling: every reading consumed means {per_reading:g} forecast records "
        f"produced; the producer alone moves {result['produce_bulk_per_s']:,.0f} records/s "
        f"through the bulk path ({result['produce_send_per_s']:,.0f}/s with send()), so no "
        f"service publishing them exceeds {ceiling:,.0f} readings/s, {ceiling / raw:.2f} of "
        f"this run's raw consumption ({raw:,.0f}/s; it varies about 2x between runs on this "
        "shared machine).",
        f"The service's own work: {total:.1f} ms per tick of {result['sensors']} readings "
        f"(throughput phase): at most {own:,.0f} readings/s ({own / raw:.2f} of raw) from the "
        f"measured stages alone; the 0.5 goal needs {goal_ms:.1f} ms per tick for "
        f"{per_reading * result['sensors']:,.0f} forecast records. Largest stages (ms per "
        "tick): " + ", ".join(f"{k} {v:.1f}" for k, v in top) + ".",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stream", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument(
        "--data", default=None, help="dataset spec (default: los-loop, else simulated)"
    )
    parser.add_argument("--models", type=Path, default=None, help="bundle directory to reuse")
    parser.add_argument("--epochs", type=int, default=1, help="epochs when training bundles")
    parser.add_argument("--steps", type=int, default=None, help="steps for the throughput phase")
    parser.add_argument(
        "--latency-ticks", type=int, default=None, help="ticks for the latency phase"
    )
    parser.add_argument("--tick-interval", type=float, default=None, help="seconds between ticks")
    parser.add_argument(
        "--missing-ticks", type=int, default=None, help="ticks for the missing-readings phase"
    )
    parser.add_argument("--silent", type=float, default=0.05, help="share of silent sensors")
    parser.add_argument("--gaps", type=float, default=0.01, help="share of readings dropped")
    parser.add_argument("--grace", default=None, help="the service's grace (default: its own)")
    parser.add_argument(
        "--missing-interval", type=float, default=None, help="seconds between missing-phase ticks"
    )
    parser.add_argument(
        "--settle", type=float, default=30.0, help="end a phase after this long without a close"
    )
    parser.add_argument(
        "--poll-records", type=int, default=None, help="the service's records per poll batch"
    )
    parser.add_argument("--name", default="stream", help="write benchmarks/results/NAME.json")
    parser.add_argument("--profile", action="store_true", help="cProfile the throughput phase")
    parser.add_argument("--no-alerts", action="store_true", help="run the service without alerts")
    parser.add_argument(
        "--wires", default="v1,v2", help="forecast wires of the throughput phase, in order"
    )
    args = parser.parse_args(argv)
    configure_logging("ERROR")  # the missing phase's sensor_down warnings are expected
    torch.set_num_threads(2)
    from models.forecasters.registry import MODELS

    steps = args.steps or (30 if args.quick else 150)
    latency_ticks = args.latency_ticks or (10 if args.quick else 100)
    missing_ticks = args.missing_ticks or (6 if args.quick else 100)
    interval = args.tick_interval or (0.5 if args.quick else 1.0)
    config = ServiceConfig(poll_records=args.poll_records or ServiceConfig.poll_records)
    if args.grace is not None:
        config = replace(config, grace=args.grace)
    grace_s = config.grace.total_seconds() if config.grace is not None else 0.0
    missing_interval = args.missing_interval or grace_s + 1.0
    names = ("persistence", "ar") if args.quick else tuple(MODELS)
    wires = [w.strip() for w in args.wires.split(",") if w.strip()]
    if not wires or not set(wires) <= {"v1", "v2"} or len(set(wires)) < len(wires):
        raise SystemExit(f"--wires takes v1 and/or v2, comma-separated, got {args.wires!r}")
    panel = _panel(args.data)
    live_start = round(panel.n_time * 0.8)  # the test part: models never trained on it
    phases_end = live_start + steps + latency_ticks + missing_ticks
    if phases_end > panel.n_time:
        raise SystemExit(
            f"{panel.name} has {panel.n_time} steps: fewer --steps/--latency-ticks/--missing-ticks"
        )
    with tempfile.TemporaryDirectory(prefix="roadcast-bench-") as tmp_name:
        tmp = Path(tmp_name)
        print(f"data {panel.name}: {panel.n_nodes} sensors; bundles: {args.models or 'training'}")
        models, bundles = _bundles(panel, args.models, names, args.epochs, tmp / "train")
        print(f"models: {sorted(models)}")
        if args.models is not None:  # not into somebody else's model directory
            bundles = tmp / "alerting"
        # One hook per phase: each phase starts from its own empty store.
        hooks = [None] * 3 if args.no_alerts else _alert_hooks(models, panel, bundles, 3)
        with EmbeddedBroker(log_path=tmp / "broker.log") as broker:
            from pipeline.kafka.clients import ensure_topics

            base = load_settings(bootstrap_servers=broker.bootstrap)
            thr = _fresh(base, "throughput", tmp / "throughput.sqlite")
            ensure_topics(thr)
            produced_thr = produce(thr, panel.slice(live_start, live_start + steps), 0.0)
            raw_rates = [raw_consume(thr, produced_thr)]
            profile = cProfile.Profile() if args.profile else None
            by_wire: dict[str, dict[str, Any]] = {}
            for index, wire in enumerate(wires):
                wired = _wire_settings(thr, wire, tmp / f"throughput-{wire}.sqlite", index)
                hook = hooks[0] if index == 0 else _alert_hooks(models, panel, bundles, 1)[0]
                profiled = profile if index == 0 else None  # the first wire's profile
                rate, counters = service_throughput(
                    wired, models, produced_thr, profiled, hook, config=config
                )
                by_wire[wire] = {"settings": wired, "rate": rate, "counters": counters}
            raw_rates.append(raw_consume(thr, produced_thr, group_suffix="raw-after"))
            raw_rate = sum(raw_rates) / len(raw_rates)
            first = by_wire[wires[0]]
            service_rate, thr_counters = first["rate"], first["counters"]
            published = int(thr_counters["forecasts_published"])
            v1 = by_wire.get("v1")
            rates = {"send": float("nan"), "bulk": float("nan")}
            if v1 is not None:
                records = int(v1["counters"]["forecast_records"])
                rates = produce_rates(v1["settings"], read_back(v1["settings"], records))
            lat = _fresh(base, "latency", tmp / "latency.sqlite")
            ensure_topics(lat)
            latency_panel = panel.slice(live_start + steps, live_start + steps + latency_ticks)
            complete = service_latency(
                lat, models, latency_panel, interval, hooks[1], config, args.settle
            )
            gappy = _fresh(base, "missing", tmp / "missing.sqlite")
            ensure_topics(gappy)
            missing_panel, silent = with_missingness(
                panel.slice(phases_end - missing_ticks, phases_end), args.silent, args.gaps
            )
            missing = service_latency(
                gappy, models, missing_panel, missing_interval, hooks[2], config, args.settle
            )
    # The missing phase's ticks close after the machine sat idle for about the grace.
    idle_s = grace_s or 2.0
    penalty = idle_penalty((idle_s,), repeats=3 if args.quick else 5)
    latencies, lat_counters = complete.latencies, complete.counters
    from pipeline.service.latency import percentiles

    lost = sum(
        produced - int(c.get("valid", 0)) - int(c.get("dead_lettered", 0))
        for produced, c in (
            *((produced_thr, run["counters"]) for run in by_wire.values()),
            (complete.produced, lat_counters),
            (missing.produced, missing.counters),
        )
    )
    lat_p = percentiles(latencies, (50, 90, 99))
    missing_p = percentiles(missing.latencies, (50, 90, 99))
    spread_p = percentiles(complete.spread_ms, (50, 99))
    reasons = ("complete", "watermark", "grace")
    result: dict[str, Any] = {
        "quick": args.quick,
        "data": panel.name,
        "sensors": panel.n_nodes,
        "models": sorted(models),
        "throughput_readings": produced_thr,
        "raw_consume_per_s": round(raw_rate, 1),
        "raw_consume_runs_per_s": [round(r, 1) for r in raw_rates],  # before and after
        "wire": wires[0],
        "service_per_s": round(service_rate, 1),
        "ratio": round(service_rate / raw_rate, 4),
        "wires": {
            wire: {
                "service_per_s": round(run["rate"], 1),
                "ratio": round(run["rate"] / raw_rate, 4),
                "forecast_records_per_tick": round(
                    run["counters"]["forecast_records"] / max(1, run["counters"]["ticks_closed"]),
                    1,
                ),
                "ms_per_tick": run["counters"]["ms_per_tick"],
            }
            for wire, run in by_wire.items()
        },
        "forecasts_per_s": round(service_rate * published / produced_thr, 1),
        "forecasts_per_reading": round(published / produced_thr, 3),
        "produce_send_per_s": round(rates["send"], 1),
        "produce_bulk_per_s": round(rates["bulk"], 1),
        "ceiling_readings_per_s": round(rates["bulk"] * produced_thr / published, 1),
        "share_of_ceiling": round(service_rate / (rates["bulk"] * produced_thr / published), 4),
        "alerts": not args.no_alerts,
        "store": "synchronous=FULL (ServiceConfig.durable, the default)",
        "poll_records": config.poll_records,
        "latency_ticks": len(latencies),
        "tick_interval_s": interval,
        "latency_ms": {k: round(v, 1) for k, v in lat_p.items()} | {"max": max(latencies)},
        "latencies_ms": latencies,  # per tick, in time order: where the tail comes from
        "unclosed": complete.unclosed,
        "arrival_spread_ms": {k: round(v, 1) for k, v in spread_p.items()}
        | {"max": max(complete.spread_ms, default=0.0)},
        "missing": {
            "silent_share": args.silent,
            "gap_share": args.gaps,
            "silent_sensors": len(silent),
            "readings_missing_share": round(missing_panel.missing_share, 4),
            "grace_s": grace_s,
            "down_after": config.down_after,
            "tick_interval_s": missing_interval,
            "latency_ticks": len(missing.latencies),
            "latency_ms": {k: round(v, 1) for k, v in missing_p.items()}
            | {"max": max(missing.latencies, default=float("nan"))},
            "closed_by": {r: int(missing.counters.get(f"ticks_closed.{r}", 0)) for r in reasons},
            "late": int(missing.counters.get("late", 0)),
            "sensors_down": int(missing.counters.get("sensors_down", 0)),
            "unclosed": missing.unclosed,
            "open_at_end": missing.open_ticks,
            "latencies_ms": missing.latencies,
        },
        "idle_penalty": penalty,
        "lost": lost,
        "goals": {
            "ratio": 0.5,
            "latency_p99_ms": 100.0,
            "missing_latency_p99_ms": grace_s * 1000 + 100.0,
            "lost": 0,
        },
        "profiled": profile is not None,
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],  # other work on the box
        "counters": {
            "throughput": thr_counters,
            **{f"throughput_{w}": run["counters"] for w, run in by_wire.items()},
            "latency": lat_counters,
            "missing": missing.counters,
        },
    }
    result["notes"] = _notes(result, thr_counters["ms_per_tick"])
    if profile is not None:
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(40)
        pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(30)
        (RESULTS_DIR / "stream_profile.txt").write_text(text.getvalue())
        result["profile"] = str(RESULTS_DIR / "stream_profile.txt")
    # A profiled run's rates are slower than real: keep them out of stream.json.
    path = write_result(f"{args.name}_profiled" if profile is not None else args.name, result)
    print_table(
        f"stream: {panel.n_nodes} sensors x {len(models)} models ({', '.join(sorted(models))})",
        ["metric", "value", "goal"],
        [
            ["raw_consume_per_s (mean of before/after)", result["raw_consume_per_s"], ""],
            *[
                row
                for wire, run in result["wires"].items()
                for row in (
                    [f"service_per_s ({wire})", run["service_per_s"], ""],
                    [f"ratio ({wire})", run["ratio"], ">= 0.5" if wire == "v2" else ">= 0.2"],
                    [f"forecast records per tick ({wire})", run["forecast_records_per_tick"], ""],
                )
            ],
            ["produce_send_per_s (records)", result["produce_send_per_s"], ""],
            ["produce_bulk_per_s (records)", result["produce_bulk_per_s"], ""],
            ["ceiling_readings_per_s", result["ceiling_readings_per_s"], ""],
            ["share_of_ceiling", result["share_of_ceiling"], ""],
            ["latency p50 (ms)", result["latency_ms"]["p50"], ""],
            ["latency p99 (ms)", result["latency_ms"]["p99"], "<= 100"],
            ["lost", lost, "0"],
        ],
    )
    gap = result["missing"]
    print_table(
        f"latency with missing readings: {gap['silent_sensors']} sensors silent, "
        f"{args.gaps:.0%} of the others' readings dropped, grace {grace_s:g} s",
        ["metric", "value", "goal"],
        [
            ["latency p50 (ms)", gap["latency_ms"]["p50"], ""],
            ["latency p99 (ms)", gap["latency_ms"]["p99"], f"<= {grace_s * 1000 + 100:g}"],
            *[[f"closed: {r}", gap["closed_by"][r], ""] for r in reasons],
            ["late readings", gap["late"], ""],
            ["sensors down (alerts)", gap["sensors_down"], str(gap["silent_sensors"])],
            ["ticks not closed", len(gap["unclosed"]) + len(complete.unclosed), "0"],
            ["arrival spread p99 (ms, every sensor)", result["arrival_spread_ms"]["p99"], ""],
            [
                f"same CPU work after {idle_s:g} s idle / back to back",
                next(iter(penalty["ratio"].values())),
                "",
            ],
        ],
    )
    for name, run in (("latency", complete), ("missing", missing)):
        if run.unclosed:
            print(
                f"{name} phase: {len(run.unclosed)} steps with readings did not close within "
                f"{args.settle:g} s of the last close: {', '.join(run.unclosed[:10])}"
                f"{' ...' if len(run.unclosed) > 10 else ''}; still open in the service: "
                f"{', '.join(run.open_ticks[:10]) or 'none'}"
            )
    throughputs = [run["counters"] for run in by_wire.values()]
    per_phase = [c["ms_per_tick"] for c in (*throughputs, lat_counters, missing.counters)]
    stages = sorted(set().union(*per_phase), key=lambda k: -per_phase[0].get(k, 0.0))
    print_table(
        f"where a tick's time goes (ms per tick; latency phases in {wires[0]})",
        ["stage", *(f"throughput {w}" for w in by_wire), "latency phase", "missing phase"],
        [[k, *(phase.get(k, 0.0) for phase in per_phase)] for k in stages],
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
