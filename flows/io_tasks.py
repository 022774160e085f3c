"""Prefect tasks that read data sets, and the retry rule every I/O task of roadcast uses.

Only I/O is retried, and only when a retry can help: an ``OSError`` other than a missing
file, a path in the way (a file where a folder should be, or the reverse) or a permission
error (a network share or a disk that blinked, an unreachable
broker), a busy SQLite file (``sqlite3.OperationalError``, ``StoreBusyError``), or a
Kafka error (a send the broker did not acknowledge). A data set that is not there, a
malformed file or a programming error fails at once with its message, instead of after
the retry delays.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NONE

from flows.panels import read_panel

RETRIES = 2
RETRY_DELAY_S = 5


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
    ):
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
