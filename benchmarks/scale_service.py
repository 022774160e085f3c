"""The networks and the service's side of ``benchmarks/scale.py``.

:func:`spec` names the simulated network of a size; :func:`serve_run` runs
``roadcast serve`` on fitted bundles against a backlog and then at a sustained pace, and
reads its catch-up throughput, tick latency (with why each tick closed) and peak memory
(``VmHWM``) from its store, its JSON log and ``/proc``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

STEPS_PER_DAY = 288


def spec(sensors: int, days: float) -> str:
    """The simulated network of ``sensors`` (one seed for every size)."""
    return f"simulated:sensors={sensors},days={days:g},seed=11,incidents=0,faults=0"


def peak_rss_mb(pid: int | str = "self") -> float:
    """The peak resident memory (``VmHWM``) of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb(pid: int | str = "self") -> float:
    """The resident memory (``VmRSS``) of a process now, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _ticks(store_path: Path) -> list[Any]:
    from pipeline.service.store import Store

    if not store_path.exists():
        return []
    try:
        with Store(store_path, readonly=True) as store:
            return sorted(store.last_ticks(100_000), key=lambda t: t.ts_ms)
    except Exception:  # the service is creating it: ask again
        return []


class ServiceLog:
    """The JSON log lines of a ``roadcast serve`` process, read as they come."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.lines: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stderr is not None
        for raw in process.stderr:
            try:
                self.lines.append(json.loads(raw))
            except ValueError:
                self.lines.append({"level": "error", "event": raw.decode("utf-8", "replace")})

    def finish(self, timeout_s: float = 30.0) -> None:
        """Wait for the last lines once the process has exited."""
        self._thread.join(timeout_s)

    def assigned_ms(self) -> int | None:
        """When the consumer group gave the service its partitions: consumption starts."""
        from datetime import datetime

        for line in self.lines:
            if line.get("event") == "partitions_assigned" and line.get("partitions"):
                return int(datetime.fromisoformat(line["ts"]).timestamp() * 1000)
        return None

    def stages(self) -> dict[str, float]:
        """Milliseconds per closed tick in each stage, over every ``stats`` line."""
        totals: dict[str, float] = {}
        ticks = before = 0
        for line in self.lines:
            if line.get("event") != "stats":
                continue
            closed = int(line.get("ticks_closed", 0))
            delta, before = closed - before, closed
            for stage, ms in (line.get("ms_per_tick") or {}).items():
                totals[stage] = totals.get(stage, 0.0) + ms * delta
            ticks += delta if line.get("ms_per_tick") else 0
        return {k: round(v / ticks, 1) for k, v in sorted(totals.items())} if ticks else {}

    def errors(self) -> list[str]:
        return [str(line.get("event")) for line in self.lines if line.get("level") == "error"]


def _wait_for_ticks(
    store: Path, count: int, service: subprocess.Popen[bytes], settle_s: float, what: str
) -> list[Any]:
    """The store's ticks once ``count`` are closed, or when none closed for ``settle_s``."""
    last, since = -1, time.monotonic()
    while True:
        if service.poll() is not None:
            raise RuntimeError(f"roadcast serve exited ({service.returncode}) during {what}")
        ticks = _ticks(store)
        if len(ticks) >= count:
            return ticks
        if len(ticks) != last:
            last, since = len(ticks), time.monotonic()
        elif time.monotonic() - since > settle_s:
            print(f"    {what}: {len(ticks)} of {count} ticks closed; going on", flush=True)
            return ticks
        time.sleep(0.5)


def serve_run(
    sensors: int,
    days: float,
    backlog_ticks: int,
    bundles: Path,
    tmp: Path,
    bootstrap: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Catch-up and paced latency of ``roadcast serve`` on ``bundles``; its peak memory."""
    from benchmarks.stream_service import produce
    from pipeline.data.datasets import load_dataset
    from pipeline.kafka.clients import ensure_topics
    from pipeline.service.latency import percentiles
    from pipeline.settings import load_settings

    tag = uuid.uuid4().hex[:8]
    env_topics = {
        "ROADCAST_TOPIC_READINGS": f"scale.readings.{tag}",
        "ROADCAST_TOPIC_DLQ": f"scale.dlq.{tag}",
        "ROADCAST_TOPIC_FORECASTS": f"scale.forecasts.{tag}",
        "ROADCAST_TOPIC_ALERTS": f"scale.alerts.{tag}",
        "ROADCAST_FORECAST_WIRE": args.wire,
    }
    settings = load_settings(
        bootstrap_servers=bootstrap,
        **{k.removeprefix("ROADCAST_").lower(): v for k, v in env_topics.items()},
    )
    ensure_topics(settings)
    panel = load_dataset(spec(sensors, days))
    start = int(args.train_days * STEPS_PER_DAY) + args.valid_steps
    backlog = panel.slice(start, start + backlog_ticks)
    live = panel.slice(start + backlog_ticks, start + backlog_ticks + args.latency_ticks)
    produced = produce(settings, backlog, 0.0)
    store = tmp / f"store-{sensors}.sqlite"
    command = [
        sys.executable, "-m", "flows.cli", "serve", "--models", str(bundles),
        "--bootstrap", bootstrap, "--store", str(store), "--group", f"scale.{tag}",
        "--log-level", "INFO", "--no-deliver-alerts",
    ]  # fmt: skip
    env = {**os.environ, **env_topics, "OMP_NUM_THREADS": str(args.threads)}
    service = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = ServiceLog(service)
    try:
        ticks = _wait_for_ticks(store, backlog_ticks - 1, service, args.settle_s, "catch-up")
        caught = ticks[: backlog_ticks - 1]  # the last one waits for the next reading
        assigned_ms = log.assigned_ms()
        span_s = (caught[-1].closed_ms - assigned_ms) / 1000 if caught and assigned_ms else 0.0
        per_tick_s = span_s / max(len(caught), 1)
        catch_up = sensors / per_tick_s if per_tick_s > 0 else float("nan")
        interval = max(args.min_interval, args.pace * per_tick_s)
        print(
            f"    catch-up {catch_up:,.0f} readings/s ({per_tick_s:.2f} s a tick); "
            f"latency phase at one tick every {interval:.2f} s",
            flush=True,
        )
        speedup = panel.freq.total_seconds() / interval
        produced += produce(settings, live, speedup)
        total = len(caught) + args.latency_ticks
        ticks = _wait_for_ticks(store, total - 1, service, args.settle_s, "latency")
        peak = peak_rss_mb(service.pid)
    finally:
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(timeout=120)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
        log.finish()
    live_ms = {int(ts.value // 1_000_000) for ts in live.timestamps}
    live_ticks = [t for t in ticks if t.ts_ms in live_ms]
    paced = [t.latency_ms for t in live_ticks if t.latency_ms is not None]
    closed_by = {r: sum(t.reason == r for t in live_ticks) for r in {t.reason for t in live_ticks}}
    lat = percentiles(paced, (50, 99)) if paced else {"p50": float("nan"), "p99": float("nan")}
    return {
        "readings": produced,
        "backlog_ticks": len(caught),
        "catch_up_readings_per_s": round(catch_up, 1),
        "catch_up_s_per_tick": round(per_tick_s, 3),
        "tick_interval_s": round(interval, 3),
        "latency_ticks": len(paced),
        "latency_ms": {k: round(v, 1) for k, v in lat.items()},
        # A tick missing a reading closes on the grace or the next tick's readings: then
        # its latency is mostly that wait, not the service's work.
        "latency_closed_by": dict(sorted(closed_by.items())),
        "latency_sensors_missing_max": max((sensors - t.observed for t in live_ticks), default=0),
        "service_peak_rss_mb": round(peak, 1),
        "service_errors": log.errors()[-3:],
        "stage_ms_per_tick": log.stages(),
    }
