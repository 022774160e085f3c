"""Process-wide tuning for a long-running service: the garbage collector, torch's thread
count, and SIGTERM/SIGINT/SIGHUP handlers that ask the loop to stop.

Each function changes interpreter state; the loop (:mod:`pipeline.service.loop`) calls
them once at start-up and undoes what can be undone when it stops.

The first stop signal stops gracefully: the batch in hand is finished, flushed, stored and
committed, which may wait for the broker (the flush deadline) or a busy store. A second
one stops the process at once (:func:`stop_now`), as ``kill -9`` would but with a line
saying what it abandons: nothing that was not stored is committed, so Kafka redelivers
it to the next run (at least once). A thread reads the signals from the interpreter's
wakeup file descriptor, so the second one is seen even while the main thread waits in C
(SQLite's busy wait does not return to Python until its timeout).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
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


# Records polled and not committed, for the line of a second signal (set by the loop),
# and what they are.
_uncommitted: list[Callable[[], int]] = []
_uncommitted_what = ["readings"]
_stopping_now = threading.Lock()


def count_uncommitted(count: Callable[[], int] | None, what: str = "readings") -> None:
    """What :func:`stop_now` reports as redelivered: ``count()`` ``what`` (None: none)."""
    _uncommitted[:] = [] if count is None else [count]
    _uncommitted_what[:] = [what]


def stop_now(signum: int) -> None:
    """Exit at once on a second stop signal: one line naming what is abandoned, then
    ``os._exit(128 + signum)``, without flushing, storing or committing anything more
    (what was not committed is redelivered to the next run)."""
    if not _stopping_now.acquire(blocking=False):
        return
    try:
        readings = sum(count() for count in _uncommitted)
    except Exception:  # counted while the loop changes it: say so rather than not exit
        readings = -1
    shown = "an unknown number of" if readings < 0 else str(readings)
    message = (
        f"second signal: stopping now; {shown} {_uncommitted_what[0]} will be redelivered "
        "(polled, not committed: the next run reads them again)"
    )
    _exit_now(signum, message, redelivered=readings)


def _exit_now(signum: int, message: str, **fields: Any) -> None:
    """Log ``stopping_now`` with ``message``, flush the logs, ``os._exit(128 + signum)``."""
    fields = {"signal": signal.Signals(signum).name, **fields, "message": message}
    log.error("stopping_now", extra={"fields": fields})
    handlers = logging.getLogger("roadcast").handlers + logging.getLogger().handlers
    for flush in [*(h.flush for h in handlers), sys.stdout.flush, sys.stderr.flush]:
        with suppress(Exception):  # a closed stream: the exit matters more than the line
            flush()
    os._exit(128 + signum)


@contextmanager
def exit_at_signal(message: str) -> Iterator[None]:
    """While a stopped process waits for its last work (alert deliveries in flight): a
    stop signal exits at once with one ``stopping_now`` line saying ``message`` (what is
    abandoned), not a ``KeyboardInterrupt`` traceback. Main thread only; else a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        if _stopping_now.acquire(blocking=False):
            _exit_now(signum, message)

    previous = {sig: signal.signal(sig, handler) for sig in stop_signals()}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class _SignalWatch:
    """Counts stop signals as they arrive, from the wakeup file descriptor, in a thread:
    the first is logged at once, a second calls :func:`stop_now`."""

    def __init__(self) -> None:
        self.reader, self.writer = socket.socketpair()
        self.writer.setblocking(False)
        self.previous_fd = signal.set_wakeup_fd(self.writer.fileno(), warn_on_full_buffer=False)
        self.watched = {int(s) for s in stop_signals()}
        self.thread = threading.Thread(target=self._watch, name="roadcast-signals", daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        seen = 0
        while True:
            try:
                data = self.reader.recv(64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum not in self.watched:
                    continue
                seen += 1
                if seen >= 2:
                    stop_now(signum)
                else:
                    _log_first(signum)

    def close(self) -> None:
        signal.set_wakeup_fd(self.previous_fd)
        self.writer.close()  # the reader sees the end: the thread returns
        self.thread.join(timeout=5.0)
        self.reader.close()


# The watch of each install_signal_handlers call, by the id of the dict it returned.
_watches: dict[int, _SignalWatch] = {}


def _log_first(signum: int) -> None:
    hint = "finishing the batch in hand; send the signal again to stop at once"
    fields = {"signal": signal.Signals(signum).name, "hint": hint}
    log.info("signal", extra={"fields": fields})


def install_signal_handlers(stop: threading.Event) -> dict[int, Any]:
    """:func:`stop_signals` -> set ``stop``, and a second one -> :func:`stop_now` (main
    thread only); returns the previous handlers for :func:`restore_signal_handlers`.
    The signals are watched from a thread unless another user (an asyncio loop) holds
    the wakeup file descriptor; then the handlers, run by the main thread, count them."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    created = _SignalWatch()
    watch = created if created.previous_fd == -1 else None
    if watch is None:  # not ours to take
        created.close()
    seen = [0]

    def request_stop(signum: int, frame: object) -> None:
        seen[0] += 1
        stop.set()
        if watch is None:
            if seen[0] >= 2:
                stop_now(signum)
            _log_first(signum)

    previous: dict[int, Any] = {sig: signal.signal(sig, request_stop) for sig in stop_signals()}
    if watch is not None:
        _watches[id(previous)] = watch
    return previous


def restore_signal_handlers(previous: dict[int, Any]) -> None:
    """Put back the handlers :func:`install_signal_handlers` replaced."""
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    watch = _watches.pop(id(previous), None)
    if watch is not None:
        watch.close()
