"""Process-wide tuning for a long-running service: the garbage collector, torch's thread
count, and SIGTERM/SIGINT/SIGHUP handlers that ask the loop to stop.

Each function changes interpreter state; the loop (:mod:`pipeline.service.loop`) calls
them once at start-up and undoes what can be undone when it stops.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("roadcast.service")

# Allocations between young-generation collections once the heap is frozen (default 700).
GC_THRESHOLD = 20_000

GcCallback = Callable[[str, dict[str, int]], None]


def tune_gc() -> None:
    """Collect once, freeze the survivors (the long-lived heap) and raise the young
    generation's threshold (see ``ServiceConfig.tune_gc``)."""
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, second, third)


def track_gc(stage_s: dict[str, float]) -> GcCallback:
    """Add the garbage collector's pauses to ``stage_s`` as stages ``gc.gen0``..
    (time ticks wait for); returns the callback for :func:`untrack_gc`."""
    started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            stage = f"gc.gen{info.get('generation', 0)}"
            stage_s[stage] = stage_s.get(stage, 0.0) + (time.perf_counter() - started[0])

    gc.callbacks.append(on_gc)
    return on_gc


def untrack_gc(callback: GcCallback) -> None:
    """Stop the timing that :func:`track_gc` started."""
    gc.callbacks.remove(callback)


def set_torch_threads(threads: int | None) -> None:
    """Set torch's intra-op threads (``ServiceConfig.torch_threads``) when torch is loaded;
    None leaves torch's setting."""
    if threads is not None and "torch" in sys.modules:
        import torch

        torch.set_num_threads(threads)


def stop_signals() -> list[signal.Signals]:
    """The signals that stop a service cleanly: SIGTERM, SIGINT and SIGHUP (its terminal
    closed, or an operator's ``kill -HUP``, whose default action would kill it mid-batch
    without a word), unless SIGHUP is ignored (started with ``nohup``)."""
    signals = [signal.SIGTERM, signal.SIGINT]
    hangup = getattr(signal, "SIGHUP", None)
    if hangup is not None and signal.getsignal(hangup) != signal.SIG_IGN:
        signals.append(hangup)
    return signals


def install_signal_handlers(stop: threading.Event) -> dict[int, Any]:
    """:func:`stop_signals` -> set ``stop`` (main thread only); returns the previous
    handlers for :func:`restore_signal_handlers`."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def request_stop(signum: int, frame: object) -> None:
        log.info("signal", extra={"fields": {"signal": signal.Signals(signum).name}})
        stop.set()

    return {sig: signal.signal(sig, request_stop) for sig in stop_signals()}


def restore_signal_handlers(previous: dict[int, Any]) -> None:
    """Put back the handlers :func:`install_signal_handlers` replaced."""
    for sig, handler in previous.items():
        signal.signal(sig, handler)
