"""Prefect tasks that read data sets, and the retry rule every I/O task of roadcast uses.

Only I/O is retried, and only when a retry can help: an ``OSError`` other than a missing
file, a path in the way (a file where a folder should be, or the reverse), a name too
long, a loop of links, a read-only file system or a permission error (a network share or
a disk that blinked, an unreachable broker), a busy SQLite file
(``sqlite3.OperationalError``, ``StoreBusyError``), or a Kafka error (a send the broker
did not acknowledge). A data set that is not there, a malformed file or a programming
error fails at once with its message, instead of after the retry delays.
"""

from __future__ import annotations

import errno
from typing import Any

from prefect import task
from prefect.cache_policies import NONE

from flows.panels import read_panel

RETRIES = 2
RETRY_DELAY_S = 5
# The longest text parameter a flow takes: a path (Linux's PATH_MAX), a period, servers.
MAX_TEXT = 4096


def check_lengths(**values: str | None) -> None:
    """Refuse a text parameter longer than :data:`MAX_TEXT` characters, before it is used:
    echoed whole, in an error or a log line, it would bury the reason (a flow run's state
    message, what the Prefect UI shows, would be as long).

    Raises
    ------
    ValueError
        Naming the parameter, its length and how it starts.
    """
    for name, value in values.items():
        if isinstance(value, str) and len(value) > MAX_TEXT:
            raise ValueError(
                f"{name} is {len(value):,} characters long, more than any path or value it "
                f"takes ({MAX_TEXT:,}); it starts {value[:40]!r}"
            )


# A name too long, a loop of links, a read-only file system: the path stays unusable.
_PATH_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.ELOOP, errno.EROFS})


def is_transient(error: BaseException) -> bool:
    """True for an I/O failure that may go away by itself (see the module docstring)."""
    import sqlite3

    from kafka.errors import KafkaError

    from pipeline.kafka.outbox import PublishError
    from pipeline.service.store_reads import StoreBusyError

    if isinstance(
        error,
        FileNotFoundError
        | FileExistsError
        | PermissionError
        | IsADirectoryError
        | NotADirectoryError,
    ) or (isinstance(error, OSError) and error.errno in _PATH_ERRNOS):
        return False  # a path that is wrong stays wrong
    return isinstance(
        error, OSError | sqlite3.OperationalError | StoreBusyError | KafkaError | PublishError
    )


def transient_io_error(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only :func:`is_transient` failures."""
    error = state.result(raise_on_failure=False)
    return isinstance(error, BaseException) and is_transient(error)


# Options of every I/O task: ``@task(name=..., **IO_TASK)``. No caching: inputs are
# panels, models and paths whose content Prefect cannot hash.
IO_TASK: dict[str, Any] = {
    "retries": RETRIES,
    "retry_delay_seconds": RETRY_DELAY_S,
    "retry_condition_fn": transient_io_error,
    "cache_policy": NONE,
}


# A data set by its spec and paths (:func:`flows.panels.read_panel`), read as an I/O task.
load_data = task(name="load-data", **IO_TASK)(read_panel)
