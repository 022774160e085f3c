"""Where the train flow's model fits and tuning run: here, one after the other (the
default), or side by side on a Dask cluster through prefect-dask's ``DaskTaskRunner``.

``ROADCAST_DASK_ADDRESS`` chooses:

- unset: no cluster; :func:`fan_out` calls the tasks one after the other in the flow.
- ``local``: a ``distributed.LocalCluster`` started for the run and closed after it,
  one single-threaded worker per CPU (at most :data:`LOCAL_WORKERS_MAX`), workers as
  threads of this process (they see the flow's Prefect server and settings without
  configuration).
- ``[tcp://]HOST:PORT``: an existing scheduler (``dask scheduler`` and ``dask worker``s
  where roadcast is installed). It must answer within ``ROADCAST_DASK_TIMEOUT_S``
  (default 10 s); when it does not, the run stops with an error that says so, or, with
  ``ROADCAST_DASK_FALLBACK_LOCAL=true``, warns and uses a local cluster instead.

A neural fit on CUDA holds a slot of Prefect's ``gpu`` global concurrency limit inside
its task (:mod:`flows.gpu`), wherever the task runs: fits on several Dask workers queue
for the GPU through the Prefect server as they do across flow runs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect.task_runners import TaskRunner
    from prefect.tasks import Task

    from pipeline.settings import Settings

log = logging.getLogger("roadcast.flows")

LOCAL_WORKERS_MAX = 4


class FanoutError(RuntimeError):
    """The configured Dask cluster cannot be used; the message says what to change."""


def local_cluster_kwargs() -> dict[str, Any]:
    """A LocalCluster of single-threaded workers, as threads of this process."""
    workers = max(1, min(os.cpu_count() or 1, LOCAL_WORKERS_MAX))
    return {
        "n_workers": workers,
        "threads_per_worker": 1,
        "processes": False,
        "dashboard_address": None,
    }


def check_scheduler(address: str, timeout_s: float) -> None:
    """Connect to the Dask scheduler at ``address`` within ``timeout_s`` and disconnect.

    Raises
    ------
    FanoutError
        When it does not answer in time or refuses the connection.
    """
    from distributed import Client

    try:
        client = Client(address, timeout=timeout_s, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise FanoutError(
            f"the Dask scheduler at {address} did not answer within {timeout_s:g} s "
            f"({type(exc).__name__}: {exc}); start it (`dask scheduler`), fix "
            "ROADCAST_DASK_ADDRESS, or set ROADCAST_DASK_FALLBACK_LOCAL=true to train on a "
            "local cluster instead"
        ) from None
    client.close()


def dask_runner(settings: Settings) -> TaskRunner | None:
    """The ``DaskTaskRunner`` the settings ask for, or None for the sequential default.

    Raises
    ------
    FanoutError
        When ``ROADCAST_DASK_ADDRESS`` does not answer and no fallback is allowed.
    """
    address = settings.dask_address
    if address is None:
        return None
    from prefect_dask import DaskTaskRunner

    if address != "local":
        try:
            check_scheduler(address, settings.dask_timeout_s)
        except FanoutError as exc:
            if not settings.dask_fallback_local:
                raise
            log.warning("%s; falling back to a local cluster", str(exc).split("; start it")[0])
        else:
            return DaskTaskRunner(
                address=address, client_kwargs={"timeout": settings.dask_timeout_s}
            )
    return DaskTaskRunner(cluster_kwargs=local_cluster_kwargs())


@contextmanager
def started(runner: TaskRunner | None) -> Iterator[TaskRunner | None]:
    """``runner`` started for the block (its cluster, for ``local``) and shut down after."""
    if runner is None:
        yield None
        return
    with runner:
        yield runner


def fan_out(
    runner: TaskRunner | None, task: Task[..., Any], calls: Mapping[str, dict[str, Any]]
) -> dict[str, Any]:
    """Run ``task`` once per entry of ``calls`` (``{label: parameters}``); the results by
    label. Without a runner the calls run here in order; with one they are all submitted
    first and run side by side. A failed task raises its error here."""
    if runner is None:
        return {label: task(**params) for label, params in calls.items()}
    futures = {label: runner.submit(task, dict(params)) for label, params in calls.items()}
    return {label: future.result() for label, future in futures.items()}
