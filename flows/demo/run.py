"""The demo's run: embedded broker, ``roadcast serve`` as a process, a replay, the outputs."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flows.demo.console import live_table, report_steps
from flows.demo.report import pace, write_report
from flows.demo.setup import Log, choose_panel, demo_models, ensure_bundles, ensure_detector
from flows.demo.summary import alert_summary, build_summary, snapshot
from flows.train_models import check_writable
from models.bundle import duration_text
from models.panel import SensorPanel, chronological_split
from pipeline.folder_lock import folder_lock
from pipeline.settings import Settings, load_settings

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.kafka.broker import EmbeddedBroker

DEFAULT_OUT = Path("demo-out")
DEFAULT_MAX_TICKS = 144  # half a day of 5-minute ticks
# A 5-minute tick every 0.5 s: about 3x the service's time per tick of 207 sensors and
# four models on 2 cores, so latencies are the service's, not a backlog's.
DEFAULT_SPEEDUP = 600.0
WARMUP_STEPS = 12  # replayed before the test part: the models' input window
# Enough for LSTM and TGC-LSTM to beat AR(p) on los-loop's validation part while the
# demo stays well under 5 minutes (docs/decisions.md, "Flows: demo defaults").
DEFAULT_EPOCHS = 20


class DemoError(RuntimeError):
    """The demo could not run to the end; the message says what failed and where to look."""


class DemoTimeout(DemoError):
    """A step of the demo did not happen in the time it was given."""


# What marks a folder as a demo's output (the first is written by this version), and
# what a demo run replaces in it.
DEMO_MARKS = (".roadcast-demo", "service.log", "broker.log")
REPLACED = (
    "store.sqlite", "store.sqlite-wal", "store.sqlite-shm", "summary.json", "report.md",
    "error_by_horizon.png",
)  # fmt: skip


def check_options(out: Path, *, max_ticks: int | None, speedup: float, epochs: int) -> None:
    """Refuse demo options out of range, naming the option (nothing is written first)."""
    if any(p.exists() and not p.is_dir() for p in (out, *out.parents)):
        raise ValueError(f"--out {out} is a file or under one; pass a directory for the outputs")
    try:
        check_writable(out)
    except OSError as exc:
        raise ValueError(str(exc)) from None
    if out.is_dir() and not any((out / name).exists() for name in DEMO_MARKS):
        theirs = sorted(name for name in REPLACED if (out / name).exists())
        if theirs:
            raise ValueError(
                f"--out {out} holds {', '.join(theirs)}, which the demo would replace, and is "
                "no demo's output; pass a new or empty folder (or an earlier demo's --out)"
            )
    if max_ticks is not None and max_ticks < 1:
        raise ValueError(f"--max-ticks must be 0 (all) or more, got {max_ticks}")
    if not math.isfinite(speedup) or speedup < 0:
        raise ValueError(f"--speedup must be 0 (as fast as possible) or more, got {speedup}")
    if epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {epochs}")


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
    reading: Mapping[str, Any] | None = None,
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
    reading : how to read a file's ``data``: ``adjacency``, ``index_col``, ``no_index``,
        ``timezone`` (as :func:`pipeline.data.datasets.load_dataset` takes them).
    progress : show live progress and training bars.
    log : where progress lines go.

    Raises
    ------
    DemoError
        When the service fails or does not consume everything in time.
    ValueError
        For options out of range (:func:`check_options`), before anything is written.
    """
    from pipeline.kafka.broker import EmbeddedBroker, dies_with_this_thread
    from pipeline.kafka.clients import ensure_topics
    from pipeline.kafka.replay import check_pace

    with contextlib.ExitStack() as held:  # this demo's hold on OUT, until it returns
        started = time.monotonic()
        out = Path(out)
        check_options(out, max_ticks=max_ticks, speedup=speedup, epochs=epochs)
        base = settings or load_settings()
        panel = choose_panel(data, data_dir=base.data_dir, reading=reading)
        live = _live_part(panel, max_ticks)
        # Scored: the forecasts issued in the test part (the warm-up's windows fill up).
        scored_from = chronological_split(panel).test.timestamps[0]
        check_pace((live.timestamps[-1] - live.timestamps[0]).total_seconds(), live.n_time, speedup)
        created = not out.exists()
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(
                f"--out {out}: cannot create it ({exc.strerror or exc}); pass a folder this "
                "user can write"
            ) from None
        (out / DEMO_MARKS[0]).write_text("written by roadcast demo\n")
        busy = (
            f"--out {out} is in use by another roadcast demo; give another --out, or run "
            "again once it is done"
        )
        held.enter_context(folder_lock(out / DEMO_MARKS[0], 0.0, lambda: DemoError(busy)))
        step = duration_text(panel.freq.total_seconds())
        shape = f"{panel.n_nodes} sensors x {panel.n_time} steps every {step}"
        log(f"data: {panel.name}: {shape}")
        train_started = time.monotonic()
        try:
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
        except BaseException:
            if created:  # nothing of a run that could not set up stays behind
                shutil.rmtree(out, ignore_errors=True)
            raise
        train_s = time.monotonic() - train_started
        store_path = out / "store.sqlite"
        # A fresh broker: the old store's ticks would be "late"; an earlier run's summary and
        # report would read as this run's.
        for name in REPLACED:
            (out / name).unlink(missing_ok=True)
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
                log_start = sink.tell()  # the log of an earlier run stays above it
                proc = subprocess.Popen(  # killed by the kernel should this process die
                    args,
                    env=_service_env(cfg),
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    preexec_fn=dies_with_this_thread(),
                    # A terminal's Ctrl-C reaches the demo alone: it sends the service one
                    # SIGTERM (a second would stop the service at once, runtime.py).
                    start_new_session=True,
                )
            try:
                stream_started, produced = _stream(
                    cfg,
                    _Processes(proc, broker),
                    live,
                    scored_from,
                    speedup,
                    store_path,
                    (service_log, log_start),
                    progress,
                    log,
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
                raise DemoError(
                    f"the service exited with code {code} after SIGTERM; see {service_log}"
                )
        state = snapshot(store_path, issued_from=scored_from)
        if state is None:
            raise DemoError(f"the service wrote no store at {store_path}; see {service_log}")
        summary = build_summary(
            panel, live, names, state, produced, speedup, train_s, stream_s, started
        )
        if isinstance(data, str):  # the spec as given: "simulated" alone drops its parameters
            summary["data"] = data
        summary["alerts"] = alert_summary(store_path, live)
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        write_report(summary, out)
        return summary


def _live_part(panel: SensorPanel, max_ticks: int | None) -> SensorPanel:
    """What the demo replays: the test part (at most ``max_ticks`` steps of it) and the
    ``WARMUP_STEPS`` before it."""
    test_start = chronological_split(panel).test.timestamps[0]
    first = max(0, int(panel.timestamps.get_loc(test_start)) - WARMUP_STEPS)
    last = (
        panel.n_time if max_ticks is None else min(panel.n_time, first + WARMUP_STEPS + max_ticks)
    )
    return panel.slice(first, last)


@dataclass
class _Processes:
    """The service process and the broker it reads from: the demo stops when either ends."""

    service: Any
    broker: EmbeddedBroker

    def ended(self) -> bool:
        return self.service.poll() is not None or not self.broker.is_running()


def _stream(
    cfg: Settings,
    procs: _Processes,
    live: SensorPanel,
    scored_from: pd.Timestamp,
    speedup: float,
    store_path: Path,
    service_log: tuple[Path, int],
    progress: bool,
    log: Log,
) -> tuple[float, int]:
    """Replay ``live`` once the service has started: joined its group and warmed up its
    models (as its log says from the offset ``service_log[1]`` on), so that the tick
    latencies are the service's, not its start-up's; wait until it consumed it."""
    log_path, log_start = service_log
    _wait_for(
        lambda: b'"event": "started"' in _read_from(log_path, log_start),
        START_WAIT_S,
        "starting (joining the consumer group, warming up the models)",
        procs,
        service_log,
    )
    expected = int(live.mask.sum())
    log(f"replay: {live.n_time} ticks ({expected:,} readings) {pace(speedup)}")
    stream_started = time.monotonic()
    thread, state = _start_replay(cfg, live, speedup)
    try:
        _follow(
            procs, state, live, scored_from, speedup, store_path, service_log, progress,
            stream_started,
        )  # fmt: skip
    finally:
        if not state.done:  # given up on: its producer must not outlive the demo (at exit
            # kafka-python would flush it into a dead broker and print a traceback)
            from pipeline.kafka.clients import close_producer

            close_producer(state.producer, timeout_s=1.0)
    thread.join(timeout=30)
    if not _last_tick_closed(live, store_path, procs, service_log):
        log(
            f"note: {CLOSE_WAIT_S:g} s after the last reading, the service still held ticks "
            "open (too few sensors reported them for the grace to close them): they are "
            "not forecast"
        )
    return stream_started, state.messages


# How long the demo waits for the service to start (a busy machine loads torch slowly).
START_WAIT_S = 300.0
# How long the demo waits, once every reading is consumed, for the service to close the
# last tick (the grace closes a tick a reading short 2 s after its first reading).
CLOSE_WAIT_S = 30.0


def _last_tick_closed(
    live: SensorPanel, store_path: Path, procs: _Processes, service_log: tuple[Path, int]
) -> bool:
    """Wait up to :data:`CLOSE_WAIT_S` for the service to close the last tick of ``live``
    that holds a reading; whether it did."""
    ticks = np.flatnonzero(live.mask.any(axis=1))
    if not len(ticks):
        return True
    last_ms = int(live.timestamps[ticks[-1]].value // 1_000_000)
    try:
        _wait_for(
            lambda: _closed_ms(store_path) >= last_ms,
            CLOSE_WAIT_S,
            "closing the last tick",
            procs,
            service_log,
        )
    except DemoTimeout:
        return False
    return True


def _follow(
    procs: _Processes,
    state: _Replay,
    live: SensorPanel,
    scored_from: pd.Timestamp,
    speedup: float,
    store_path: Path,
    service_log: tuple[Path, int],
    progress: bool,
    stream_started: float,
) -> None:
    """Show progress until the service has consumed every reading the replay sent (the
    accuracy, as in the summary, of the forecasts issued from ``scored_from`` on)."""
    expected = int(live.mask.sum())
    steps = report_steps(12)

    def finished() -> bool:
        if state.error is not None and procs.broker.is_running():  # else the broker's the cause
            raise DemoError(f"the replay failed: {state.error}") from state.error
        return state.done and _consumed(store_path) >= state.messages

    deadline_s = 120 + (live.n_time * live.freq.total_seconds() / speedup if speedup > 0 else 0) * 2
    if progress:
        from rich.live import Live

        with Live(live_table(None, 0, expected, steps), refresh_per_second=2) as view:
            end = time.monotonic() + deadline_s
            while not finished():
                if procs.ended() or time.monotonic() > end:
                    break
                view.update(
                    live_table(
                        snapshot(store_path, issued_from=scored_from),
                        _produced(state, live, stream_started, speedup),
                        expected,
                        steps,
                    )
                )
                time.sleep(1.0)
            view.update(
                live_table(
                    snapshot(store_path, issued_from=scored_from), state.messages, expected, steps
                )
            )
    _wait_for(finished, deadline_s, "consuming every reading", procs, service_log)


def _produced(state: _Replay, live: SensorPanel, started: float, speedup: float) -> int:
    """Readings produced so far (estimated from the pace while the replay runs)."""
    if state.done or speedup <= 0:
        return state.messages
    per_tick = live.mask.sum() / max(live.n_time, 1)
    ticks = min(live.n_time, (time.monotonic() - started) * speedup / live.freq.total_seconds())
    return int(ticks * per_tick)


@dataclass
class _Replay:
    """The replay thread's outcome."""

    producer: Any
    messages: int = 0
    error: BaseException | None = None
    done: bool = False


def _start_replay(
    settings: Settings, panel: SensorPanel, speedup: float
) -> tuple[threading.Thread, _Replay]:
    from pipeline.kafka.clients import close_producer, make_producer
    from pipeline.kafka.replay import replay

    producer = make_producer(settings)
    state = _Replay(producer)

    def run() -> None:
        try:
            stats = replay(
                panel, producer, settings.topic_readings, speedup=speedup, progress=False
            )
            state.messages = stats.messages
        except BaseException as exc:
            state.error = exc
        finally:
            close_producer(producer)
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
    if "ROADCAST_METRICS_PORT" not in env:  # not 9478: a `roadcast serve` may hold it
        from pipeline.kafka.broker import free_port

        env["ROADCAST_METRICS_PORT"] = str(free_port())
    return env


def _wait_for(
    condition: Callable[[], bool],
    timeout_s: float,
    what: str,
    procs: _Processes,
    service_log: tuple[Path, int],
) -> None:
    """Wait until ``condition``; a broker or service that stopped, or the time running
    out, is a :class:`DemoError` naming ``what`` and the service's own last error line
    (its log ``service_log[0]`` from the offset ``service_log[1]`` on)."""
    log_path, log_start = service_log
    deadline = time.monotonic() + timeout_s
    while not condition():
        # The broker first: a service that lost its broker may exit too, but the cause is
        # the broker's.
        if not procs.broker.is_running():
            raise DemoError(
                f"the embedded broker stopped while {what}; see {procs.broker.log_path}"
            )
        if (code := procs.service.poll()) is not None:
            said = _last_error(_read_from(log_path, log_start))
            raise DemoError(
                f"the service exited with code {code} while {what}"
                + (f": {said}" if said else "")
                + f"; see {log_path}"
            )
        if time.monotonic() > deadline:
            raise DemoTimeout(f"timed out after {timeout_s:.0f} s {what}; see {log_path}")
        time.sleep(0.25)


def _last_error(log: bytes) -> str | None:
    """The last ``error: ...`` line a command wrote to ``log``, without the prefix."""
    lines = [
        line for line in log.decode(errors="replace").splitlines() if line.startswith("error: ")
    ]
    return lines[-1].removeprefix("error: ").strip() if lines else None


def _read_from(path: Path, offset: int) -> bytes:
    """The bytes of ``path`` from ``offset`` on (nothing when it does not exist)."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read()
    except FileNotFoundError:
        return b""


def _closed_ms(store_path: Path) -> int:
    """The newest closed tick's time in the store (ms since the epoch; -1: none yet)."""
    from pipeline.service.store import Store

    try:
        with Store(store_path, readonly=True) as store:
            ticks = store.last_ticks(1)
    except Exception:  # not created yet, or being written: next time
        return -1
    return int(ticks[-1].ts_ms) if ticks else -1


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
