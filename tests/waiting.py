"""Waiting in tests: poll until something happens, never bound how fast it happens.

Every wait of the suite uses :data:`WAIT_S` (``ROADCAST_TEST_WAIT_S``, default 300 s) as
its limit. It is a hang guard, not a speed requirement: on a slow, busy machine a test
waits longer and still passes; only something that never happens fails it, with a
message that says what did not happen.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

WAIT_S = float(os.environ.get("ROADCAST_TEST_WAIT_S", "300"))


def wait_until(
    predicate: Callable[[], T],
    *,
    what: str,
    timeout: float | None = None,
    poll_s: float = 0.1,
    details: Callable[[], str] | None = None,
) -> T:
    """Call ``predicate`` every ``poll_s`` until it returns a truthy value; return that.

    Raises ``AssertionError("... waiting for <what>")`` after ``timeout`` seconds
    (default :data:`WAIT_S`), followed by ``details()`` when given (e.g. a log tail).
    """
    limit = WAIT_S if timeout is None else timeout
    deadline = time.monotonic() + limit
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            message = f"timed out after {limit:.0f} s waiting for {what}"
            if details is not None:
                message += f"\n{details()}"
            raise AssertionError(message)
        time.sleep(poll_s)
