"""``roadcast status``: what the service has done, read from its store.

Counters (consumed, valid, dead-lettered by reason, late, duplicate, ticks, forecasts,
alerts), the sensors that are down (silent for ``down_after`` ticks, see
:mod:`pipeline.service.liveness`), the tick latency (exact p50/p99 and a histogram)
and the live accuracy of every model per horizon step over the last ticks. Works while
the service runs (the store is opened read-only; WAL lets readers and the writer
proceed together).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from flows.reporting.text import literal
from models.bundle import duration_text
from pipeline.service.latency import LatencyHistogram, percentiles
from pipeline.service.liveness import DOWN_KEY
from pipeline.service.store import Store, StoreError
from pipeline.service.store_reads import reading_store

# SQLite integers are 64-bit; a count beyond any store's ticks means all of them.
_MAX_TICKS = 2**62


def status_summary(
    store_path: str | Path,
    *,
    last_ticks: int | None = None,
    last: pd.Timedelta | None = None,
    issued_from_ms: int | None = None,
) -> dict[str, Any]:
    """Counters, latency and rolling accuracy as one JSON-ready dict.

    ``accuracy`` is ``{model: {step: {"n", "mae", "rmse"}}}`` over the last
    ``last_ticks`` targets, or those within ``last`` of the newest tick (all when both
    are None), of forecasts issued from ``issued_from_ms`` on (all when None);
    ``sensors_down`` is ``[{"sensor", "since"}]`` (ISO time of the first tick each one
    missed), longest silent first.
    """
    if last_ticks is not None:
        last_ticks = min(last_ticks, _MAX_TICKS)
    last_ms = None if last is None else int(last.value // 1_000_000)
    with reading_store(store_path) as store:
        down = _down_sensors(store)
        counters = store.counters()
        latencies = store.latencies_ms()
        accuracy = store.rolling_accuracy(
            last_ticks=last_ticks, last_ms=last_ms, issued_from_ms=issued_from_ms
        )
        ticks = store.last_ticks(1)
    by_model: dict[str, dict[int, dict[str, float]]] = {}
    for row in accuracy.itertuples(index=False):
        by_model.setdefault(str(row.model), {})[int(row.step)] = {
            "n": int(row.n),
            "mae": float(row.mae),
            "rmse": float(row.rmse),
        }
    histogram = LatencyHistogram()
    histogram.add(latencies)
    return {
        "counters": counters,
        "last_tick_ms": ticks[0].ts_ms if ticks else None,
        "latency_ms": {**percentiles(latencies), "count": len(latencies)},
        "latency_histogram": histogram.rows(),
        "accuracy": by_model,
        "sensors_down": [
            {"sensor": sensor, "since": pd.Timestamp(ms, unit="ms", tz="UTC").isoformat()}
            for sensor, ms in sorted(down.items(), key=lambda item: (item[1], item[0]))
        ],
    }


def _down_sensors(store: Store) -> dict[str, int]:
    """The service's record of silent sensors: ``{sensor: first missed tick (ms)}``."""
    try:
        down = json.loads(store.state().get(DOWN_KEY) or "{}")
        if isinstance(down, dict) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in down.values()
        ):
            for ms in down.values():  # each shown as a time: out of range is unreadable
                pd.Timestamp(ms, unit="ms", tz="UTC")
            return {str(k): v for k, v in down.items()}
    except (ValueError, OverflowError):
        pass
    raise StoreError(f"the store {store.path} holds an unreadable {DOWN_KEY!r} state")


def print_status(
    store_path: str | Path,
    *,
    last_ticks: int | None = None,
    last: pd.Timedelta | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Print :func:`status_summary` as tables (ids and names shown as written); returns it."""
    console = console or Console()
    summary = status_summary(store_path, last_ticks=last_ticks, last=last)
    counters = Table(title=literal(f"roadcast service: {store_path}", "table.title"))
    counters.add_column("counter")
    counters.add_column("value", justify="right")
    for name in sorted(summary["counters"]):
        counters.add_row(literal(name), f"{summary['counters'][name]:,}")
    console.print(counters)
    down = summary["sensors_down"]
    if down:
        silent = Table(title=f"{len(down)} sensors down (no reading in the last ticks)")
        silent.add_column("sensor")
        silent.add_column("silent since (UTC)")
        for row in down:
            silent.add_row(literal(row["sensor"]), row["since"])
        console.print(silent)
    else:
        console.print("sensors down: none")
    lat = summary["latency_ms"]
    quantiles = f"p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms" if lat["count"] else "none yet"
    latency = Table(
        title=f"tick latency (last reading -> forecasts published), {lat['count']:,} ticks: "
        + quantiles
    )
    latency.add_column("bucket")
    latency.add_column("ticks", justify="right")
    latency.add_column("cumulative", justify="right")
    for label, count, running in summary["latency_histogram"]:
        if count:
            latency.add_row(label, f"{count:,}", f"{running:,}")
    console.print(latency)
    if last_ticks:
        span = f"last {last_ticks} ticks"
    else:
        span = "all ticks" if last is None else f"last {duration_text(last.total_seconds())}"
    accuracy = Table(title=f"live accuracy ({span}): MAE / RMSE by horizon step")
    accuracy.add_column("model")
    every = sorted({s for per in summary["accuracy"].values() for s in per})
    steps = [s for s in every if s in (1, 3, 6, 9, 12)] or every  # the reported lead times
    for step in steps:
        accuracy.add_column(f"h={step}", justify="right")
    for model, per in sorted(summary["accuracy"].items()):
        cells = [f"{per[s]['mae']:.3f} / {per[s]['rmse']:.3f}" if s in per else "-" for s in steps]
        accuracy.add_row(literal(model), *cells)
    console.print(accuracy)
    return summary
