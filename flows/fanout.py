"""Where the train flow's model fits and tuning run: here, one after the other (the
default), or side by side on a Dask cluster through prefect-dask's ``DaskTaskRunner``.

``ROADCAST_DASK_ADDRESS`` chooses:

- unset: no cluster; :func:`fan_out` calls the tasks one after the other in the flow.
- ``local``: a ``distributed.LocalCluster`` started for the run and closed after it,
  one single-threaded worker per CPU (at most :data:`LOCAL_WORKERS_MAX`), workers as
  threads of this process (they see the flow's Prefect server and settings without
  configuration).
- ``[tcp://]HOST:PORT``: an existing scheduler (``dask scheduler`` and ``dask worker``s
  where roadcast is installed). It must answer as a scheduler within
  ``ROADCAST_DASK_TIMEOUT_S`` (default 10 s; connection, handshake and answer together);
  when it does not (silent, refused, another protocol), the run stops with an error that
  says so, or, with ``ROADCAST_DASK_FALLBACK_LOCAL=true``, warns and uses a local cluster
  instead.

A neural fit on CUDA holds a slot of Prefect's ``gpu`` global concurrency limit inside
its task (:mod:`flows.gpu`), wherever the task runs: fits on several Dask workers queue
for the GPU through the Prefect server as they do across flow runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from prefect.task_runners import TaskRunner
    from prefect.tasks import Task
    from prefect_dask import DaskTaskRunner

    from pipeline.settings import Settings

log = logging.getLogger("roadcast.flows")
T = TypeVar("T")

LOCAL_WORKERS_MAX = 4
# Beyond ROADCAST_DASK_TIMEOUT_S, how long a check or connection may take to give up
GRACE_S = 2.0


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


def scheduler_problem(address: str, timeout_s: float) -> tuple[str, str] | None:
    """Why the Dask scheduler at ``address`` cannot be used, and what to do about it; None
    when it answered as a scheduler within ``timeout_s``. Never raises (but for
    ``KeyboardInterrupt`` and the like) and never takes much longer than ``timeout_s``:
    the check runs in a daemon thread of its own, left behind should it overrun."""
    from distributed.comm import CommClosedError, connect
    from distributed.security import Security

    async def identify() -> object:
        args = Security().get_connection_args("client")
        comm = await connect(address, timeout=timeout_s, **args)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    def run() -> object:
        loop = asyncio.new_event_loop()
        try:
            # connect's own deadline, timeout_s, reports a refused connection first
            return loop.run_until_complete(asyncio.wait_for(identify(), timeout_s + GRACE_S / 2))
        finally:
            loop.close()  # does not wait for a resolver thread that hangs

    down = (
        "start it (`dask scheduler`), fix ROADCAST_DASK_ADDRESS, or set "
        f"ROADCAST_DASK_FALLBACK_LOCAL=true {_INSTEAD}"
    )
    wrong = (
        "fix ROADCAST_DASK_ADDRESS (a `dask scheduler` listens on port 8786 unless told "
        f"otherwise), or set ROADCAST_DASK_FALLBACK_LOCAL=true {_INSTEAD}"
    )
    silent = f"the Dask scheduler at {address} did not answer within {timeout_s:g} s"
    try:
        reply = _within(run, timeout_s + GRACE_S, "roadcast-dask-check")
    except TimeoutError:  # before OSError: TimeoutError is one
        return f"{silent} (ROADCAST_DASK_TIMEOUT_S)", down
    except CommClosedError as exc:  # connected, then closed (connect's own failures are
        # plain OSErrors): another protocol, or TLS where plain TCP was asked for
        return f"{address} is not a Dask scheduler (it hung up: {_one_line(exc)})", wrong
    except OSError as exc:  # refused, unreachable, unknown host: connect retried until now
        why = exc.__cause__  # its last attempt's error
        if why is None or isinstance(why, TimeoutError):
            return f"{silent} (ROADCAST_DASK_TIMEOUT_S)", down
        return f"{silent} ({_one_line(why)})", down
    except MemoryError:  # another protocol's bytes read as a frame length
        return f"{address} is not a Dask scheduler (it answered in another protocol)", wrong
    except Exception as exc:  # struct.error, msgpack's errors, ...
        return f"{address} is not a Dask scheduler (unreadable answer: {_one_line(exc)})", wrong
    kind = reply.get("type") if isinstance(reply, dict) else None
    if kind in ("Worker", "Nanny"):
        return f"{address} is a Dask {str(kind).lower()}, not the scheduler", wrong
    if not isinstance(kind, str):
        return f"{address} is not a Dask scheduler (unexpected answer {_shown(reply)})", wrong
    return None


_INSTEAD = "to train on a local cluster instead"


def _within(call: Callable[[], T], timeout_s: float, name: str) -> T:
    """``call()`` in a daemon thread of its own: its result or its error, or TimeoutError
    after ``timeout_s`` (the thread, which cannot be cancelled, is left behind)."""
    outcome: Future[T] = Future()

    def run() -> None:
        try:
            outcome.set_result(call())
        except Exception as exc:
            outcome.set_exception(exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    return outcome.result(timeout=timeout_s)


def _one_line(exc: BaseException) -> str:
    """``exc`` as ``Type: message`` on one line, without distributed's ``in <comm>:``."""
    text = re.sub(r"^in <[^>]*>: ", "", " ".join(str(exc).split()))
    if not re.match(r"\w+(Error|Exception): ", text):
        kind = type(exc)
        name = (
            kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
        )
        text = f"{name}: {text}" if text else name
    return _shown(text)


def _shown(value: object) -> str:
    """``value`` cut after 120 characters."""
    text = str(value)
    return text[:120] + ("..." if len(text) > 120 else "")


def dask_runner(settings: Settings) -> TaskRunner | None:
    """The ``DaskTaskRunner`` the settings ask for, or None for the sequential default.

    Raises
    ------
    FanoutError
        When ``ROADCAST_DASK_ADDRESS`` cannot be used and no fallback is allowed.
    """
    address = settings.dask_address
    if address is None:
        return None
    from prefect_dask import DaskTaskRunner

    if address != "local":
        problem = scheduler_problem(address, settings.dask_timeout_s)
        if problem is None:
            return DaskTaskRunner(
                address=address, client_kwargs={"timeout": settings.dask_timeout_s}
            )
        if not settings.dask_fallback_local:
            raise FanoutError(f"{problem[0]}; {problem[1]}")
        log.warning("%s; falling back to a local cluster", problem[0])
    return DaskTaskRunner(cluster_kwargs=local_cluster_kwargs())


@contextmanager
def started(runner: TaskRunner | None) -> Iterator[TaskRunner | None]:
    """``runner`` started for the block (its cluster, for ``local``) and shut down after.

    A runner for an address connects its client here, within its ``timeout`` client
    argument plus :data:`GRACE_S` (prefect-dask would connect at the first task, with no
    deadline on Dask's handshake), or raises :class:`FanoutError`.
    """
    if runner is None:
        yield None
        return
    from prefect_dask import DaskTaskRunner

    with runner:
        if isinstance(runner, DaskTaskRunner) and runner.address:
            _connect(runner)
        yield runner


def _connect(runner: DaskTaskRunner) -> None:
    """Create ``runner``'s client in a daemon thread; give up after the deadline."""
    address = runner.address
    timeout_s = float(runner.client_kwargs.get("timeout", 10.0))
    try:
        _within(lambda: runner.client, timeout_s + GRACE_S, "roadcast-dask-client")
    except TimeoutError:
        reason = f"did not finish connecting within {timeout_s:g} s (ROADCAST_DASK_TIMEOUT_S)"
    except Exception as exc:
        reason = f"refused the client ({_one_line(exc)})"
    else:
        return
    raise FanoutError(
        f"the Dask scheduler at {address} answered the check but {reason}; retry, fix "
        f"ROADCAST_DASK_ADDRESS, or set ROADCAST_DASK_FALLBACK_LOCAL=true {_INSTEAD}"
    ) from None


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
