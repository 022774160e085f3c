"""An exclusive lock on a folder between processes: ``flock`` on the folder itself, so
nothing is written to hold it, and the lock goes with the process that held it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def folder_lock(
    folder: str | Path,
    wait_s: float,
    timed_out: Callable[[], Exception],
    *,
    poll_s: float = 0.05,
    on_wait: Callable[[], None] | None = None,
) -> Iterator[None]:
    """Hold ``folder``'s lock; ``on_wait`` is called once if another holder has it, and
    ``timed_out()`` is raised when another holder keeps it for over ``wait_s`` seconds."""
    handle = os.open(folder, os.O_RDONLY)
    try:
        deadline = time.monotonic() + wait_s
        waited = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise timed_out() from None
                if on_wait is not None and not waited:
                    on_wait()
                waited = True
                time.sleep(poll_s)
        yield
    finally:
        os.close(handle)  # releases the lock
