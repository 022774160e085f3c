"""SIGTERM stops a command as Ctrl-C does, and its exit status says which one it was."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Interruption:
    """The signal that interrupted a block (None: none came), SIGTERM or Ctrl-C's SIGINT.
    A library may replace the :class:`KeyboardInterrupt` with an error of its own (Prefect
    does while it sets a task up): ``signum`` still says that a signal came."""

    signum: int | None = None

    @property
    def exit_code(self) -> int:
        """128 + the signal, as a shell reports it: 130 for Ctrl-C, 143 for SIGTERM."""
        return 128 + (self.signum or signal.SIGINT)


@contextmanager
def sigterm_as_interrupt() -> Iterator[Interruption]:
    """Inside the block SIGTERM (systemd, ``docker stop``, ``kill``) raises
    :class:`KeyboardInterrupt` as Ctrl-C does, so a command cleans up the same way;
    the yielded :class:`Interruption` names the signal. Only the main thread may handle
    signals: elsewhere the handlers stay as they are."""
    interruption = Interruption()
    if threading.current_thread() is not threading.main_thread():
        yield interruption
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        if interruption.signum is None:
            interruption.signum = signum
        raise KeyboardInterrupt

    # SIGINT only where Python's default handler has it (a script's background job
    # inherits it ignored, and stays deaf to a Ctrl-C meant for the script).
    caught = [signal.SIGTERM]
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        caught.append(signal.SIGINT)
    previous = {signum: signal.signal(signum, interrupt) for signum in caught}
    try:
        yield interruption
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
