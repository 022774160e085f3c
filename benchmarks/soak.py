"""Soak: does the service stay flat in memory, store size and per-tick cost over weeks?

A simulated network (50 sensors, 5-minute steps) trains persistence, AR and an LSTM
(1 epoch) on its first week; the next 35 days (10,080 ticks, ~500,000 readings) are
produced to a fresh topic of an embedded broker, then ``ForecastService.run`` serves
them (in a thread of this process, as ``roadcast serve`` runs it) with those bundles,
the default alerting (the interval detector calibrated on the validation part) and
``ServiceConfig(retain=7 days)``, so that the store is pruned during the soak.

Every ``--segment`` closed ticks (default 500), at a batch boundary in the service's
thread, a sample is taken: this process's RSS (psutil; the broker is another process),
Python's allocated blocks and gc-tracked objects, the store's bytes (file + WAL + SHM),
its rows per table and the oldest and newest stored tick, and the service's cumulative
stage seconds (``service.stage_s``). A segment's ``ms_per_tick`` is the difference of
those over the segment's ticks.

Everything is produced before the service starts: the producer would share this
process's GIL and the two cores, and disturb the stage times of the segments it
overlaps. The backlog is consumed at full speed (1,000 records, ~20 ticks a poll batch).

Ratios (last segment / segment 2, the first after warm-up) of ms per tick, RSS and store
bytes are printed with a verdict (flat: within 1.25x) and, when not flat, what grew.
The store fills up to its retention in the first week, so the store and per-tick ratios
are also given against the first segment with the retention full (steady state).

Invariants (``invariants``; the run exits 1 when one fails): every tick closed, nothing
lost (consumed = produced = valid), the store's oldest tick within its retention
(``max(retain, the restore floor)``) + 1 h of the newest, and the store pruned.

``python -m benchmarks.soak [--quick]`` writes ``benchmarks/results/soak.json``
(``--quick``: 10 sensors, 3 days, retain 1 day, segments of 96 ticks).
"""

from __future__ import annotations

import argparse
import gc
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import psutil

from benchmarks.common import open_ticks, write_result
from flows.reporting.text import print_table
from pipeline.jsonlog import configure_logging
from pipeline.service.loop import ForecastService
from pipeline.service.metrics import store_bytes

TICKS_PER_DAY = 288
FLAT = 1.25  # a ratio within this is flat
TABLES = ("readings", "ticks", "forecast_blocks", "accuracy", "alerts", "corrections")


@dataclass(frozen=True)
class Plan:
    """What one soak run serves."""

    sensors: int
    train_days: int
    soak_days: int
    retain_days: int
    segment: int  # closed ticks per sample
    models: tuple[str, ...]
    poll_records: int = 1000  # the service's default
    seed: int = 5


FULL = Plan(sensors=50, train_days=7, soak_days=35, retain_days=7, segment=500,
            models=("persistence", "ar", "lstm"))  # fmt: skip
# 100 records a poll: a batch closes fewer ticks at once (a sample is taken between
# batches), so that the quick run's few ticks still make several segments.
QUICK = Plan(sensors=10, train_days=1, soak_days=3, retain_days=1, segment=96,
             models=("persistence", "ar", "lstm"), poll_records=100)  # fmt: skip


class SampledService(ForecastService):
    """The service, with a sample taken after every ``every`` closed ticks (checked after
    each stored batch, in the service's thread, outside its stage timers)."""

    every: int = 500
    samples: list[dict[str, Any]]
    started: float

    def prune_store(self) -> None:
        super().prune_store()
        closed = self.counters["ticks_closed"]
        sampled = self.samples[-1]["ticks_closed"] if self.samples else 0
        if closed // self.every > sampled // self.every:
            self.samples.append(sample(self, self.started))


def store_rows(path: Path) -> dict[str, Any]:
    """Rows per table and the oldest and newest stored tick (ms), read-only."""
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        rows: dict[str, Any] = {
            t: int(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in TABLES
        }
        rows["oldest_ms"], rows["newest_ms"] = db.execute(
            "SELECT MIN(ts), MAX(ts) FROM ticks"
        ).fetchone()
    finally:
        db.close()
    return rows


def table_bytes(path: Path) -> dict[str, int]:
    """Bytes of each table and index of the store (SQLite's ``dbstat``), largest first."""
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        sql = "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC"
        return {name: int(size) for name, size in db.execute(sql)}
    finally:
        db.close()


def sample(service: ForecastService, started: float) -> dict[str, Any]:
    """One sample of the process, the store and the service's cumulative stage times."""
    path = Path(service.settings.store_path)
    return {
        "ticks_closed": int(service.counters["ticks_closed"]),
        "consumed": int(service.counters["consumed"]),
        "wall_s": time.perf_counter() - started,
        "rss_mb": psutil.Process().memory_info().rss / 2**20,
        "py_blocks": sys.getallocatedblocks(),
        "gc_objects": len(gc.get_objects()),
        "store_bytes": store_bytes(path),
        "wal_bytes": Path(f"{path}-wal").stat().st_size if Path(f"{path}-wal").exists() else 0,
        "rows": store_rows(path),
        "latencies_kept": len(service.latencies),
        "open_ticks": open_ticks(service),
        "stage_s": dict(service.stage_s),
    }


def segments(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per segment (between consecutive samples, the first from the start): ms per tick
    per stage and in all, wall ms per tick, and the sample at its end."""
    out: list[dict[str, Any]] = []
    before: dict[str, Any] = {"ticks_closed": 0, "consumed": 0, "wall_s": 0.0, "stage_s": {}}
    for s in samples:
        ticks = s["ticks_closed"] - before["ticks_closed"]
        if ticks <= 0:
            continue
        stages = {
            k: round(1000 * (v - before["stage_s"].get(k, 0.0)) / ticks, 3)
            for k, v in sorted(s["stage_s"].items())
        }
        rows = s["rows"]
        span_days = (rows["newest_ms"] - rows["oldest_ms"]) / 86_400_000 if rows["oldest_ms"] else 0
        out.append({
            "ticks": [before["ticks_closed"], s["ticks_closed"]],
            "ms_per_tick": round(sum(stages.values()), 3),
            "wall_ms_per_tick": round(1000 * (s["wall_s"] - before["wall_s"]) / ticks, 3),
            "readings_per_tick": round((s["consumed"] - before["consumed"]) / ticks, 1),
            "stage_ms_per_tick": stages,
            "rss_mb": round(s["rss_mb"], 1),
            "py_blocks": s["py_blocks"],
            "gc_objects": s["gc_objects"],
            "store_bytes": s["store_bytes"],
            "wal_bytes": s["wal_bytes"],
            "store_span_days": round(span_days, 3),
            "rows": rows,
            "open_ticks": s["open_ticks"],
            "latencies_kept": s["latencies_kept"],
        })  # fmt: skip
        before = s
    return out


def ratio(last: float, first: float) -> float:
    return round(last / first, 3) if first else float("nan")


def compare(segs: list[dict[str, Any]], base: int) -> dict[str, Any]:
    """The last segment against segment ``base``: ratios, a verdict each, what grew."""
    first, last = segs[base], segs[-1]
    out: dict[str, Any] = {"base_segment": base + 1, "last_segment": len(segs)}
    for key in ("ms_per_tick", "rss_mb", "store_bytes"):
        r = ratio(last[key], first[key])
        out[key] = {"first": first[key], "last": last[key], "ratio": r, "flat": r <= FLAT}
    stages = first["stage_ms_per_tick"].keys() | last["stage_ms_per_tick"].keys()
    growth = {
        k: round(last["stage_ms_per_tick"].get(k, 0.0) - first["stage_ms_per_tick"].get(k, 0.0), 3)
        for k in stages
    }
    out["stage_growth_ms"] = dict(sorted(growth.items(), key=lambda kv: -kv[1]))
    out["rows_growth"] = {t: last["rows"][t] - first["rows"][t] for t in TABLES}
    out["rss_growth_mb"] = round(last["rss_mb"] - first["rss_mb"], 1)
    out["py_blocks_growth"] = last["py_blocks"] - first["py_blocks"]
    out["gc_objects_growth"] = last["gc_objects"] - first["gc_objects"]
    return out


def build_world(plan: Plan, bundles: Path) -> tuple[dict[str, Any], Any, Any]:
    """Bundles trained on the first ``train_days`` (the last 15 % of them validation),
    the default alerting, and the soak part of the panel."""
    from models.forecasters.factory import build_model, default_train
    from pipeline.alerts.build import build_alerting
    from pipeline.alerts.config import choose_forecaster
    from pipeline.alerts.saved import calibrate_interval, save_neighbours
    from pipeline.data.simulate import simulate_network
    from pipeline.model_dir import load_bundles, union_sensors

    days = plan.train_days + plan.soak_days
    panel = simulate_network(sensors=plan.sensors, days=days, seed=plan.seed)
    train_end = plan.train_days * TICKS_PER_DAY
    valid_start = round(train_end * 0.85)
    train, valid = panel.slice(0, valid_start), panel.slice(valid_start, train_end)
    for name in plan.models:
        options: dict[str, Any] = {}
        if default_train(name) is not None:
            options = {"epochs": 1, "progress": False, "device": "cpu", "seed": 0}
        model = build_model(name, **options)
        model.fit(train, valid=valid)
        model.save(bundles / name)
    models = load_bundles(bundles)
    calibrate_interval(bundles, models[choose_forecaster(list(models))], train, valid)
    save_neighbours(bundles, panel)
    hook = build_alerting(bundles, models, union_sensors(models), panel.freq)
    return models, hook, panel.slice(train_end, train_end + plan.soak_days * TICKS_PER_DAY)


def run(plan: Plan) -> dict[str, Any]:
    """Train, produce, serve with sampling; returns the result document."""
    import torch

    from benchmarks.stream_service import produce
    from pipeline.kafka.broker import EmbeddedBroker
    from pipeline.kafka.clients import ensure_topics
    from pipeline.service.config import ServiceConfig
    from pipeline.settings import load_settings

    torch.set_num_threads(1)
    retain = pd.Timedelta(days=plan.retain_days)
    with tempfile.TemporaryDirectory(prefix="roadcast-soak-") as tmp_name:
        tmp = Path(tmp_name)
        began = time.perf_counter()
        models, hook, soak = build_world(plan, tmp / "bundles")
        train_s = time.perf_counter() - began
        expected_ticks = int(soak.mask.any(axis=1).sum())
        with EmbeddedBroker(log_path=tmp / "broker.log") as broker:
            tag = uuid.uuid4().hex[:8]
            settings = load_settings(
                bootstrap_servers=broker.bootstrap,
                store_path=tmp / "store.sqlite",
                topic_readings=f"soak.readings.{tag}",
                topic_dlq=f"soak.dlq.{tag}",
                topic_forecasts=f"soak.forecasts.{tag}",
                topic_alerts=f"soak.alerts.{tag}",
                consumer_group=f"soak.{tag}",
            )
            ensure_topics(settings)
            began = time.perf_counter()
            produced = produce(settings, soak, 0.0)
            produce_s = time.perf_counter() - began
            service = SampledService(
                settings,
                ServiceConfig(retain=retain, poll_records=plan.poll_records),
                models,
                alert_hook=hook,
            )
            service.every, service.samples = plan.segment, []
            stop, errors = threading.Event(), []

            def serve() -> None:
                try:
                    service.run(stop=stop, handle_signals=False)
                except BaseException as exc:  # reported as an invariant
                    errors.append(repr(exc))

            thread = threading.Thread(target=serve, name="roadcast-service", daemon=True)
            service.started = time.perf_counter()
            thread.start()
            deadline = time.monotonic() + 60 * (2 + plan.soak_days)
            while thread.is_alive() and time.monotonic() < deadline:
                if service.counters["ticks_closed"] >= expected_ticks and open_ticks(service) == 0:
                    break
                time.sleep(0.2)
            serve_s = time.perf_counter() - service.started
            alive = thread.is_alive()
            stop.set()
            thread.join(120)  # the last batch is pruned before the loop sees the stop
            last = sample(service, service.started)
            tables = table_bytes(Path(settings.store_path))
            sampled = service.samples[-1]["ticks_closed"] if service.samples else 0
            if last["ticks_closed"] - sampled >= plan.segment // 2:  # a last, partial segment
                service.samples.append(last)
            counters = dict(service.counters)
            keep_ms = service.kept_ms() or 0  # a retention is always set here
    rows = last["rows"]
    span_ms = rows["newest_ms"] - rows["oldest_ms"]
    first_ms = int(soak.timestamps[0].value // 1_000_000)
    invariants = {
        "alive": alive and not errors,
        "every_tick_closed": counters.get("ticks_closed") == expected_ticks
        and last["open_ticks"] == 0,
        "nothing_lost": counters.get("consumed") == produced == counters.get("valid", 0)
        and counters.get("dead_lettered", 0) == 0,
        "retained": span_ms <= keep_ms + 3_600_000,
        "pruned": rows["oldest_ms"] > first_ms,
    }
    segs = segments(service.samples)
    full = next(
        (i for i, s in enumerate(segs) if s["store_span_days"] * 86_400_000 >= keep_ms - 3_600_000),
        None,
    )
    return {
        "plan": asdict(plan),
        "models": sorted(models),
        "readings": produced,
        "ticks": expected_ticks,
        "retain_days": plan.retain_days,
        "keep_days": keep_ms / 86_400_000,
        "train_s": round(train_s, 1),
        "produce_s": round(produce_s, 1),
        "serve_s": round(serve_s, 1),
        "store_span_days": round(span_ms / 86_400_000, 3),
        "store_table_bytes": tables,
        "errors": errors,
        "counters": {k: v for k, v in sorted(counters.items())},
        "invariants": invariants,
        "segments": segs,
        "vs_warm_up": compare(segs, 1) if len(segs) > 2 else None,
        "vs_retention_full": compare(segs, full)
        if full is not None and full < len(segs) - 1
        else None,
    }


def verdicts(result: dict[str, Any]) -> list[str]:
    """The ratios in words: flat or not, and where growth comes from."""
    lines = []
    for label, key in (
        ("segment 2, after warm-up", "vs_warm_up"),
        ("the first segment with the retention full", "vs_retention_full"),
    ):
        c = result[key]
        if c is None:
            lines.append(f"vs {label}: too few segments")
            continue
        lines.append(f"segment {c['last_segment']} vs segment {c['base_segment']} ({label}):")
        for metric, name in (
            ("ms_per_tick", "ms per tick (all stages)"),
            ("rss_mb", "RSS MB"),
            ("store_bytes", "store bytes"),
        ):
            m = c[metric]
            word = "flat" if m["flat"] else "NOT flat"
            lines.append(f"  {name}: {m['first']:,} -> {m['last']:,} = {m['ratio']}x, {word}")
        if not c["ms_per_tick"]["flat"]:
            top = ", ".join(f"{k} {v:+g}" for k, v in list(c["stage_growth_ms"].items())[:4])
            lines.append(f"    per-tick growth by stage (ms): {top}")
        if not c["store_bytes"]["flat"]:
            grown = ", ".join(f"{t} {n:+,}" for t, n in c["rows_growth"].items())
            lines.append(f"    store rows grew: {grown}")
            span = result["segments"][c["base_segment"] - 1]["store_span_days"]
            if span < result["keep_days"] - 1 / 24:
                lines.append(
                    f"    (the store was still filling up to its retention: {span:g} of "
                    f"{result['keep_days']:g} days held at segment {c['base_segment']})"
                )
        if not c["rss_mb"]["flat"]:
            blocks, objects = c["py_blocks_growth"], c["gc_objects_growth"]
            lines.append(f"    Python blocks {blocks:+,}, gc-tracked objects {objects:+,}")
    return lines


def print_segments(result: dict[str, Any]) -> None:
    plan = result["plan"]
    columns = [
        "ticks", "ms/tick", "wall ms/tick", "readings/tick", "open ticks", "RSS MB",
        "py blocks", "gc objects", "store MB", "readings rows", "ticks rows", "blocks rows",
        "span d",
    ]  # fmt: skip
    rows = [
        [
            f"{s['ticks'][0]}-{s['ticks'][1]}",
            s["ms_per_tick"],
            s["wall_ms_per_tick"],
            s["readings_per_tick"],
            s["open_ticks"],
            s["rss_mb"],
            s["py_blocks"],
            s["gc_objects"],
            round(s["store_bytes"] / 2**20, 2),
            s["rows"]["readings"],
            s["rows"]["ticks"],
            s["rows"]["forecast_blocks"],
            s["store_span_days"],
        ]
        for s in result["segments"]
    ]
    title = (
        f"soak: {plan['sensors']} sensors x {', '.join(result['models'])}, "
        f"{plan['soak_days']} days, retain {plan['retain_days']} d"
    )
    print_table(title, columns, rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--days", type=int, default=None, help="days of event time to serve")
    parser.add_argument("--segment", type=int, default=None, help="closed ticks per sample")
    args = parser.parse_args(argv)
    configure_logging("ERROR")  # sensors going down in the simulation are expected
    plan = QUICK if args.quick else FULL
    if args.days or args.segment:
        plan = Plan(**{**asdict(plan), "soak_days": args.days or plan.soak_days,
                       "segment": args.segment or plan.segment})  # fmt: skip
    result = run(plan)
    result["quick"] = args.quick
    result["verdicts"] = verdicts(result)
    path = write_result("soak", result)
    print_segments(result)
    for line in result["verdicts"]:
        print(line)
    print_table("invariants", ["", "holds"], [[k, v] for k, v in result["invariants"].items()])
    print(f"wrote {path}")
    if not all(result["invariants"].values()):
        raise SystemExit(f"soak invariants failed: {result['invariants']}")


if __name__ == "__main__":
    main()
