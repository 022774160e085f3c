"""The main job (``roadcast demo``, ``make demo``): the whole pipeline on one machine.

1. Load the data (``los-loop`` when the data directory has it, else ``simulated``).
2. Reuse the bundles in the model directory when they cover the data's sensors;
   otherwise train quick ones there (persistence, AR(p), LSTM, and TGC-LSTM when it
   is registered and the data has a road graph; one seed, at most ``epochs`` epochs,
   one CPU thread).
3. Calibrate the forecast-interval anomaly detector on the validation part of the data
   (the residuals of the AR(p) bundle's forecasts,
   :func:`pipeline.alerts.detection.calibrate_interval`) and record the road graph's
   neighbours, next to the bundles, unless they are there.
4. Start the embedded broker, create the topics, start ``roadcast serve`` as a real
   process with its default alerting (JSON logs in ``OUT/service.log``, its store in
   ``OUT/store.sqlite``).
5. Replay the test part of the data (never trained on; the ``window`` steps before it
   are replayed first so the first forecasts have full inputs) at ``speedup`` times
   real time, showing live progress: ticks, forecasts, latency, rolling accuracy.
6. When every reading is consumed, stop the service with SIGTERM (it drains and
   exits 0), then write ``OUT/summary.json``, ``OUT/report.md`` (with the alerts the
   service published, matched against the data's labelled incidents when it has any)
   and an error-by-horizon plot.

``lost`` in the summary is readings produced minus valid minus dead-lettered (as
counted by the service, exactly once each even across restarts): it must be 0.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.panel import SensorPanel
from pipeline.settings import Settings, load_settings

DEFAULT_OUT = Path("demo-out")
DEFAULT_MAX_TICKS = 144  # half a day of 5-minute ticks
# A 5-minute tick every 0.5 s: about 3x the time the service needs for a tick of 207
# sensors and four models on this 2-core machine, so latencies are the service's, not
# a backlog's, even while the machine is busy with other work.
DEFAULT_SPEEDUP = 600.0
WARMUP_STEPS = 12  # replayed before the test part: the models' input window
# On los-loop with one thread: LSTM and TGC-LSTM train in about 40 s together (20 epochs;
# validation RMSE@12 of about 6.5 against AR(p)'s 6.9; one epoch gives 7.3-7.4, barely
# better than persistence's 7.7), so the whole demo stays well under 5 minutes.
DEFAULT_EPOCHS = 20
Log = Callable[[str], None]


class DemoError(RuntimeError):
    """The demo could not run to the end; the message says what failed and where to look."""


def choose_panel(data: str | SensorPanel | None, *, data_dir: Path | None = None) -> SensorPanel:
    """The demo's data: ``data`` if given, else ``los-loop`` when it loads, else ``simulated``.

    Any failure to load ``los-loop`` (files absent, unreadable) falls back to the
    simulator, which always works offline; an explicit ``data`` spec never falls back.
    """
    if isinstance(data, SensorPanel):
        return data
    from pipeline.data.datasets import load_dataset

    if data:
        return load_dataset(data, data_dir=data_dir)
    try:
        return load_dataset("los-loop", data_dir=data_dir)
    except Exception:  # any failure means: not available here, so simulate
        return load_dataset("simulated", data_dir=data_dir)


def demo_models(panel: SensorPanel) -> tuple[str, ...]:
    """The models the demo trains: the baselines every comparison needs, AR(p), LSTM,
    and TGC-LSTM when it is registered and the data has a road graph."""
    from models.forecasters.registry import MODELS

    names = ["persistence", "ar", "lstm"]
    if "tgclstm" in MODELS and panel.graph is not None:
        names.append("tgclstm")
    return tuple(n for n in names if n in MODELS)


def ensure_bundles(
    panel: SensorPanel,
    out: Path,
    *,
    reuse: Path | None,
    models: tuple[str, ...],
    epochs: int,
    device: str,
    progress: bool,
    log: Log,
) -> tuple[Path, list[str]]:
    """A bundle directory for ``panel``: ``reuse`` (default ``OUT/bundles``) when its
    bundles cover the panel's sensors, else quick ones trained into ``OUT/bundles``
    (one seed, ``epochs`` epochs). Returns the directory and the model names."""
    from flows.train import TrainPlan, limit_threads, train_models
    from pipeline.model_dir import BundleDirError, load_bundles

    target = out / "bundles"
    candidate = reuse or target
    try:
        loaded = load_bundles(candidate)
        if all(set(m.sensor_ids) == set(panel.sensor_ids) for m in loaded.values()):
            log(f"models: reusing {sorted(loaded)} from {candidate}")
            return candidate, sorted(loaded)
        log(f"models: the bundles in {candidate} are for other sensors; training new ones")
    except (BundleDirError, ValueError) as exc:
        log(f"models: none usable in {candidate} ({str(exc).split(';')[0]}); training")
    plan = TrainPlan(models=models, seeds=1, epochs=epochs, device=device, progress=progress)
    started = time.monotonic()
    # One thread: the demo's models are small, and on this project's shared 2 cores a
    # second thread spin-waits for a busy core (a 1-epoch LSTM took 1.5 s idle, 36-147 s
    # with 2 threads beside another job).
    with limit_threads(1):
        train_models(panel, plan, out, report=False, log=log)
    log(f"models: trained {list(models)} in {time.monotonic() - started:.0f} s -> {target}")
    return target, sorted(load_bundles(target))


def ensure_detector(panel: SensorPanel, model_dir: Path, *, log: Log) -> str:
    """The interval detector the service will use, calibrated on the validation part of
    ``panel`` (the split ``roadcast train`` validates on) unless one for the same
    forecaster and sensors is saved already; and the road graph's neighbours for
    grouping. Returns the forecaster's name."""
    from models.panel import chronological_split
    from pipeline.alerts.detection import (
        calibrate_interval,
        choose_forecaster,
        detectors_dir,
        save_neighbours,
        saved_interval_forecaster,
    )
    from pipeline.model_dir import load_bundles

    models = load_bundles(model_dir)
    name = choose_forecaster(list(models))
    target = detectors_dir(model_dir)
    saved = target / "interval" / "config.json"
    if saved_interval_forecaster(model_dir) == name:
        sensors = json.loads(saved.read_text()).get("sensor_ids")
        if sensors == list(models[name].sensor_ids):
            log(f"alerts: reusing the interval detector on {name} in {target}")
            return name
    split = chronological_split(panel)
    started = time.monotonic()
    path = calibrate_interval(model_dir, models[name], split.train, split.valid)
    save_neighbours(model_dir, panel)
    log(
        f"alerts: interval detector calibrated on {name}'s validation residuals in "
        f"{time.monotonic() - started:.1f} s -> {path}"
    )
    return name


@dataclass
class _Replay:
    """The replay thread's outcome."""

    messages: int = 0
    error: BaseException | None = None
    done: bool = False


def _start_replay(
    settings: Settings, panel: SensorPanel, speedup: float
) -> tuple[threading.Thread, _Replay]:
    from pipeline.kafka.clients import make_producer
    from pipeline.kafka.replay import replay

    state = _Replay()

    def run() -> None:
        producer = make_producer(settings)
        try:
            stats = replay(
                panel, producer, settings.topic_readings, speedup=speedup, progress=False
            )
            state.messages = stats.messages
        except BaseException as exc:
            state.error = exc
        finally:
            producer.close()
            state.done = True

    thread = threading.Thread(target=run, name="demo-replay", daemon=True)
    thread.start()
    return thread, state


def _service_env(settings: Settings) -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.update(
        ROADCAST_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
        ROADCAST_CONSUMER_GROUP=settings.consumer_group,
        ROADCAST_TOPIC_READINGS=settings.topic_readings,
        ROADCAST_TOPIC_DLQ=settings.topic_dlq,
        ROADCAST_TOPIC_FORECASTS=settings.topic_forecasts,
        ROADCAST_TOPIC_ALERTS=settings.topic_alerts,
        PYTHONUNBUFFERED="1",
    )
    return env


def _wait_for(
    condition: Callable[[], bool], timeout_s: float, what: str, proc: Any, log_path: Path
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if proc.poll() is not None:
            raise DemoError(
                f"the service exited with code {proc.returncode} while {what}; see {log_path}"
            )
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout_s:.0f} s {what}; see {log_path}")
        time.sleep(0.25)


def _consumed(store_path: Path) -> int:
    """The service's ``consumed`` counter (0 before its store exists): a cheap read."""
    from pipeline.service.store import Store

    if not store_path.is_file():
        return 0
    try:
        with Store(store_path, readonly=True) as store:
            return int(store.counters().get("consumed", 0))
    except Exception:  # the service may be creating its tables right now: next time
        return 0


def _snapshot(store_path: Path) -> dict[str, Any] | None:
    """Counters, latency and accuracy from the service's store (None before it exists)."""
    from flows.status import status_summary

    if not store_path.is_file():
        return None
    try:
        return status_summary(store_path, last_ticks=None)
    except Exception:  # the service may be creating its tables right now: next time
        return None


def _live_table(
    snapshot: dict[str, Any] | None, produced: int, expected: int, steps: tuple[int, ...]
) -> Any:
    from rich.table import Table

    counters = (snapshot or {}).get("counters", {})
    latency = (snapshot or {}).get("latency_ms", {})
    table = Table(title="roadcast demo: live", show_edge=False)
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("readings produced", f"{produced:,} / {expected:,}")
    for name in (
        "consumed",
        "valid",
        "dead_lettered",
        "late",
        "ticks_closed",
        "forecasts_published",
        "alerts_published",
    ):
        table.add_row(name.replace("_", " "), f"{counters.get(name, 0):,}")
    if latency.get("count"):
        table.add_row("tick latency p50 / p99", f"{latency['p50']:.0f} / {latency['p99']:.0f} ms")
    for model, per in sorted((snapshot or {}).get("accuracy", {}).items()):
        cells = [f"h{s} {per[s]['mae']:.2f}" for s in steps if s in per]
        table.add_row(f"MAE {model}", "  ".join(cells))
    return table


def _report_steps(horizon: int) -> tuple[int, ...]:
    return tuple(s for s in (1, 3, 6, 9, 12) if s <= horizon) or (horizon,)


def run_demo(
    data: str | SensorPanel | None = None,
    *,
    out: Path = DEFAULT_OUT,
    max_ticks: int | None = DEFAULT_MAX_TICKS,
    speedup: float = DEFAULT_SPEEDUP,
    model_dir: Path | None = None,
    models: tuple[str, ...] | None = None,
    epochs: int = DEFAULT_EPOCHS,
    settings: Settings | None = None,
    progress: bool = True,
    log: Log = print,
) -> dict[str, Any]:
    """Run the demo end to end; returns the summary (also ``OUT/summary.json``).

    Parameters
    ----------
    data : a dataset spec, a panel, or None (``los-loop`` when available, else
        ``simulated``).
    out : output directory: bundles (unless ``model_dir``), store, logs, summary, report.
    max_ticks : replay at most this many ticks of the test part (None: all of it).
    speedup : replay pace, times real time (0 = as fast as possible; latencies then
        include the backlog).
    model_dir : bundles to reuse when they fit the data (default ``OUT/bundles``);
        otherwise quick ones are trained into ``OUT/bundles``.
    models : models to train when there are no bundles (default :func:`demo_models`).
    epochs : at most this many training epochs of the neural models (early stopping on
        the validation part may stop them sooner).
    settings : topic names, consumer group, device (the bootstrap servers are the
        embedded broker's).
    progress : show live progress and training bars.
    log : where progress lines go.

    Raises
    ------
    DemoError
        When the service fails or does not consume everything in time.
    """
    from models.panel import chronological_split
    from pipeline.kafka.broker import EmbeddedBroker
    from pipeline.kafka.clients import ensure_topics

    started = time.monotonic()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = settings or load_settings()
    panel = choose_panel(data, data_dir=base.data_dir)
    log(f"data: {panel.name}: {panel.n_nodes} sensors x {panel.n_time} steps every {panel.freq}")
    train_started = time.monotonic()
    model_dir, names = ensure_bundles(
        panel,
        out,
        reuse=Path(model_dir) if model_dir is not None else None,
        models=models or demo_models(panel),
        epochs=epochs,
        device=base.device,
        progress=progress,
        log=log,
    )
    ensure_detector(panel, model_dir, log=log)
    train_s = time.monotonic() - train_started
    test_start = chronological_split(panel).test.timestamps[0]
    first = max(0, int(panel.timestamps.get_loc(test_start)) - WARMUP_STEPS)
    last = (
        panel.n_time if max_ticks is None else min(panel.n_time, first + WARMUP_STEPS + max_ticks)
    )
    live = panel.slice(first, last)
    store_path = out / "store.sqlite"
    for stale in (store_path, Path(f"{store_path}-wal"), Path(f"{store_path}-shm")):
        stale.unlink(missing_ok=True)  # a fresh broker: the old store's ticks would be "late"
    service_log = out / "service.log"
    with EmbeddedBroker(log_path=out / "broker.log") as broker:
        cfg = base.model_copy(
            update={"bootstrap_servers": broker.bootstrap, "store_path": store_path}
        )
        ensure_topics(cfg)
        log(f"broker: {broker.bootstrap}; service log: {service_log}")
        args = [
            sys.executable, "-m", "flows.cli", "serve", "--models", str(model_dir),
            "--store", str(store_path), "--tick", str(panel.freq), "--fast-store",
        ]  # fmt: skip
        with open(service_log, "ab") as sink:
            proc = subprocess.Popen(
                args, env=_service_env(cfg), stdout=sink, stderr=subprocess.STDOUT
            )
        try:
            stream_started, produced = _stream(
                cfg, proc, live, speedup, store_path, service_log, progress, log
            )
            stream_s = time.monotonic() - stream_started
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait(timeout=10)
        if code != 0:
            raise DemoError(f"the service exited with code {code} after SIGTERM; see {service_log}")
    snapshot = _snapshot(store_path)
    if snapshot is None:
        raise DemoError(f"the service wrote no store at {store_path}; see {service_log}")
    summary = _summary(panel, live, names, snapshot, produced, speedup, train_s, stream_s, started)
    summary["alerts"] = alert_summary(store_path, live)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_report(summary, out)
    return summary


def _stream(
    cfg: Settings,
    proc: Any,
    live: SensorPanel,
    speedup: float,
    store_path: Path,
    service_log: Path,
    progress: bool,
    log: Log,
) -> tuple[float, int]:
    """Replay ``live`` once the service has joined its group; wait until it consumed it."""
    _wait_for(
        lambda: (
            service_log.is_file() and '"event": "partitions_assigned"' in service_log.read_text()
        ),
        120,
        "joining the consumer group",
        proc,
        service_log,
    )
    expected = int(live.mask.sum())
    log(f"replay: {live.n_time} ticks ({expected:,} readings) at {speedup:g}x real time")
    stream_started = time.monotonic()
    thread, state = _start_replay(cfg, live, speedup)
    steps = _report_steps(12)

    def finished() -> bool:
        if state.error is not None:
            raise DemoError(f"the replay failed: {state.error}") from state.error
        return state.done and _consumed(store_path) >= state.messages

    deadline_s = 120 + (live.n_time * live.freq.total_seconds() / speedup if speedup > 0 else 0) * 2
    if progress:
        from rich.live import Live

        with Live(_live_table(None, 0, expected, steps), refresh_per_second=2) as view:
            end = time.monotonic() + deadline_s
            while not finished():
                if proc.poll() is not None or time.monotonic() > end:
                    break
                view.update(
                    _live_table(
                        _snapshot(store_path),
                        _produced(state, live, stream_started, speedup),
                        expected,
                        steps,
                    )
                )
                time.sleep(1.0)
            view.update(_live_table(_snapshot(store_path), state.messages, expected, steps))
    _wait_for(finished, deadline_s, "consuming every reading", proc, service_log)
    thread.join(timeout=30)
    return stream_started, state.messages


def _produced(state: _Replay, live: SensorPanel, started: float, speedup: float) -> int:
    """Readings produced so far (estimated from the pace while the replay runs)."""
    if state.done or speedup <= 0:
        return state.messages
    per_tick = live.mask.sum() / max(live.n_time, 1)
    ticks = min(live.n_time, (time.monotonic() - started) * speedup / live.freq.total_seconds())
    return int(ticks * per_tick)


def _summary(
    panel: SensorPanel,
    live: SensorPanel,
    models: list[str],
    snapshot: dict[str, Any],
    produced: int,
    speedup: float,
    train_s: float,
    stream_s: float,
    started: float,
) -> dict[str, Any]:
    counters = snapshot["counters"]
    valid = int(counters.get("valid", 0))
    dead = int(counters.get("dead_lettered", 0))
    latency = snapshot["latency_ms"]
    minutes = live.freq.total_seconds() / 60
    accuracy = {
        model: {
            str(step): {
                "minutes": step * minutes,
                "n": m["n"],
                "mae": round(m["mae"], 4),
                "rmse": round(m["rmse"], 4),
            }
            for step, m in sorted(per.items())
        }
        for model, per in sorted(snapshot["accuracy"].items())
    }
    return {
        "data": panel.name,
        "sensors": panel.n_nodes,
        "frequency": str(panel.freq),
        "models": models,
        "first_tick": live.timestamps[0].isoformat(),
        "last_tick": live.timestamps[-1].isoformat(),
        "speedup": speedup,
        "readings_produced": produced,
        "readings_valid": valid,
        "dead_lettered": dead,
        "late": int(counters.get("late", 0)),
        "duplicate": int(counters.get("duplicate", 0)),
        "ticks": int(counters.get("ticks_closed", 0)),
        "forecasts_published": int(counters.get("forecasts_published", 0)),
        "alerts_published": int(counters.get("alerts_published", 0)),
        "latency_ms": {"p50": _round(latency.get("p50")), "p99": _round(latency.get("p99"))},
        "accuracy": accuracy,
        "lost": produced - valid - dead,
        "train_s": round(train_s, 1),
        "stream_s": round(stream_s, 1),
        "wall_s": round(time.monotonic() - started, 1),
    }


def alert_summary(store_path: Path, live: SensorPanel, *, latest: int = 15) -> dict[str, Any]:
    """The alerts the service stored: counts, the latest changes, and, when the replayed
    data has labelled events, how the alert episodes match them (an episode matches an
    event when its sensor is in it and it fired between its start and 30 minutes after
    its end, as ``benchmarks/anomaly.py`` scores them)."""
    import pandas as pd

    from pipeline.kafka.schema import decode_alert
    from pipeline.service.store import Store

    with Store(store_path, readonly=True) as store:
        rows = store.alerts(limit=1_000_000)
    changes = []
    first_seen: dict[str, pd.Timestamp] = {}
    for row in rows:
        message = decode_alert(row.payload)
        first_seen[row.alert_id] = pd.Timestamp(message.first_seen)
        changes.append(
            {
                "ts": message.ts.isoformat().replace("+00:00", "Z"),
                "status": row.status,
                "sensor": row.sensor,
                "severity": row.severity,
                "score": round(row.score, 5),
                "incident": row.group_key,
                "reason": message.reason,
            }
        )
    fired = {r.alert_id: r for r in rows if r.status == "firing"}
    out: dict[str, Any] = {
        "firing": sum(r.status == "firing" for r in rows),
        "resolved": sum(r.status == "resolved" for r in rows),
        "episodes": len(fired),
        "incidents": len({r.group_key for r in fired.values() if r.group_key}),
        "latest": changes[:latest],
    }
    start, end = live.timestamps[0], live.timestamps[-1]
    events = [e for e in live.events if start <= e.start <= end]
    if events:
        grace = pd.Timedelta(minutes=30)
        firsts = [(r.sensor, first_seen[r.alert_id]) for r in fired.values()]

        def hits(sensor: str, at: pd.Timestamp, event: Any) -> bool:
            return sensor in event.sensors and event.start <= at <= event.end + grace

        matched = sum(any(hits(s, t, e) for e in events) for s, t in firsts)
        found = sum(any(hits(s, t, e) for s, t in firsts) for e in events)
        out["labelled_events"] = {
            "events": len(events),
            "found": found,
            "episodes_matching_an_event": matched,
            "precision": round(matched / len(firsts), 3) if firsts else None,
            "recall": round(found / len(events), 3),
        }
    return out


def _round(value: float | None) -> float | None:
    import math

    return None if value is None or math.isnan(value) else round(float(value), 1)


def _markdown_table(header: list[str], rows: list[list[str]], align: str = "---:") -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|---|" + f"{align}|" * (len(header) - 1)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def write_report(summary: dict[str, Any], out: Path) -> Path:
    """``OUT/report.md`` and ``OUT/error_by_horizon.png`` from a demo summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    accuracy = summary["accuracy"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for model, per in accuracy.items():
        steps = sorted(per, key=int)
        minutes = [per[s]["minutes"] for s in steps]
        ax.plot(minutes, [per[s]["mae"] for s in steps], marker="o", label=model)
    ax.set_xlabel("lead time (minutes)")
    ax.set_ylabel("MAE (live stream)")
    ax.set_title(f"{summary['data']}: live forecast error by lead time")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "error_by_horizon.png", dpi=110)
    plt.close(fig)
    latency = summary["latency_ms"]
    counts = [
        f"{summary['readings_produced']:,}",
        f"{summary['readings_valid']:,}",
        f"{summary['dead_lettered']:,}",
        str(summary["lost"]),
        f"{summary['ticks']:,}",
        f"{summary['forecasts_published']:,}",
        f"{summary['alerts_published']:,}",
        f"{latency['p50']} / {latency['p99']} ms",
    ]
    header = ["produced", "valid", "dead-lettered", "lost", "ticks", "forecasts", "alerts"]
    lines = [
        f"# roadcast demo: {summary['data']}",
        "",
        f"{summary['sensors']} sensors, ticks {summary['first_tick']} .. {summary['last_tick']}, "
        f"replayed at {summary['speedup']:g}x real time; models: {', '.join(summary['models'])}.",
        "",
        *_markdown_table([*header, "latency p50 / p99"], [counts]),
        "",
        "## Live accuracy (each forecast scored when its target tick closed)",
        "",
    ]
    steps = sorted({int(s) for per in accuracy.values() for s in per})
    shown = [s for s in steps if s in (1, 3, 6, 9, 12)] or steps
    lead_minutes = {int(s): m["minutes"] for per in accuracy.values() for s, m in per.items()}
    rows = [
        [model] + [
            f"{per[str(s)]['mae']:.3f} / {per[str(s)]['rmse']:.3f}" if str(s) in per else "-"
            for s in shown
        ]
        for model, per in accuracy.items()
    ]  # fmt: skip
    lines += _markdown_table(
        ["model"] + [f"{lead_minutes[s]:g} min MAE / RMSE" for s in shown], rows
    )
    lines += ["", "![error by lead time](error_by_horizon.png)", "", *_alert_lines(summary)]
    lines += [
        "",
        f"Training {summary['train_s']:.0f} s, streaming {summary['stream_s']:.0f} s, "
        f"total {summary['wall_s']:.0f} s.",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def _alert_lines(summary: dict[str, Any]) -> list[str]:
    alerts = summary.get("alerts")
    if not alerts:
        return []
    lines = [
        "## Anomaly alerts",
        "",
        f"{alerts['firing']} firing and {alerts['resolved']} resolved messages: "
        f"{alerts['episodes']} alert episodes in {alerts['incidents']} incidents "
        "(forecast-interval detector, default alert rules).",
        "",
    ]
    matching = alerts.get("labelled_events")
    if matching:
        lines += [
            f"Labelled events in the replayed part: {matching['events']}, found "
            f"{matching['found']} (recall {matching['recall']}); episodes matching an event "
            f"{matching['episodes_matching_an_event']} of {alerts['episodes']} "
            f"(precision {matching['precision']}).",
            "",
        ]
    if alerts["latest"]:
        rows = [
            [a["ts"], a["status"], a["sensor"], a["severity"], f"{a['score']:.4f}",
             a["incident"] or "-"]
            for a in alerts["latest"]
        ]  # fmt: skip
        lines += _markdown_table(
            ["time (UTC)", "status", "sensor", "severity", "score", "incident"], rows, "---"
        )
        lines.append("")
    return lines


def print_summary(summary: dict[str, Any]) -> None:
    """The summary as a table (accuracy at the reported lead times)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"roadcast demo: {summary['data']}")
    table.add_column("")
    table.add_column("value", justify="right")
    for key in (
        "sensors", "models", "readings_produced", "readings_valid", "dead_lettered", "lost",
        "ticks", "forecasts_published", "alerts_published", "latency_ms", "wall_s",
    ):  # fmt: skip
        value = summary[key]
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    for model, per in summary["accuracy"].items():
        cells = [
            f"{per[s]['minutes']:g}min {per[s]['mae']:.2f}/{per[s]['rmse']:.2f}"
            for s in per
            if int(s) in (1, 3, 6, 12)
        ]
        table.add_row(f"{model} MAE/RMSE", "  ".join(cells))
    alerts = summary.get("alerts")
    if alerts:
        text = (
            f"{alerts['episodes']} episodes, {alerts['incidents']} incidents "
            f"({alerts['firing']} firing / {alerts['resolved']} resolved)"
        )
        if "labelled_events" in alerts:
            m = alerts["labelled_events"]
            text += f"; events found {m['found']}/{m['events']}, precision {m['precision']}"
        table.add_row("alerts", text)
    Console().print(table)
