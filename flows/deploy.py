"""roadcast's Prefect deployments: one list, served by ``roadcast deploy --serve`` and
written to ``deploy/prefect.yaml``.

:data:`DEPLOYMENTS` is the single source of truth for names, schedules, parameters and
concurrency. ``roadcast deploy --write-yaml deploy/prefect.yaml`` renders it as a
``prefect.yaml`` for ``prefect deploy --all`` and a process work pool (a test checks that
the committed file still equals the rendering), and ``roadcast deploy --serve`` builds
the same deployments with ``Flow.to_deployment`` and serves them from one process (a
:class:`prefect.runner.Runner`, ``pause_on_shutdown=False``) against the Prefect server
named by ``PREFECT_API_URL``.

Schedules are cron strings in UTC: train weekly (Monday 03:00), forecast every five
minutes, report daily (00:15, over the last 24 hours), watch for drift every fifteen
minutes; replay has no schedule (a backfill is started by hand).

:func:`customised` changes schedules and parameters from the command line (``roadcast
deploy --cron train='0 4 * * *' --param train.data=csv:PATH``), checked before anything
is registered: five-field crons that fire, parameters of each flow's signature and types,
finite numbers, whole numbers within 64 bits, and values no run of the flow would refuse
(:func:`check_values`).

Automations: the train deployment carries an event trigger (:class:`EventTriggerSpec`)
on the drift watcher's event (``roadcast.model.drift``, :mod:`flows.drift_flow`), so a
model whose live accuracy degraded is retrained without waiting for Monday. It is a
Prefect deployment trigger: ``prefect deploy`` (from ``prefect.yaml``) and ``roadcast
deploy --serve`` create it as an automation (an ``EventTrigger`` with a
``RunDeployment`` action for the train deployment).

Entry points are module paths (``flows.train_flow.train_flow``), so a worker or a served
process finds the flows wherever roadcast is installed, whatever its working directory.
Parameters left out take the flows' defaults, which read the ``ROADCAST_*`` settings
(model directory, store, bootstrap servers) on the machine that runs the flow: one
deployment serves every environment.

Prefect's embedded temporary server runs no schedules, so serving needs a real one
(``prefect server start``); :func:`serve_deployments` refuses to start without
``PREFECT_API_URL``, or when that server does not answer its health check within
:data:`HEALTH_TIMEOUT_S`. While serving, :class:`ServerWatch` checks it every
:data:`WATCH_EVERY_S` and says in one line when it stops answering (scheduled runs do not
start meanwhile; serving goes on) and when it answers again.

Stopping: the first SIGINT (Ctrl-C) or SIGTERM cancels the flow runs in flight, as a
Prefect worker does (each run's process stopped, the run Cancelled on the server, so a
deployment's concurrency slot is free for the next run), within :data:`STOP_TIMEOUT_S`;
a second signal, or that deadline, kills them at once and records them Crashed.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import os
import re
import signal
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment
    from prefect.runner import Runner

WORK_POOL = "roadcast-process"
TIMEZONE = "UTC"
HEALTH_TIMEOUT_S = 15.0  # the whole health check of the Prefect server, retries included
WATCH_EVERY_S = 30.0  # while serving: how often the Prefect server's health is checked
STOP_TIMEOUT_S = 60.0  # on SIGINT/SIGTERM: cancelling the runs in flight, then stopping
KILL_REPORT_TIMEOUT_S = 10.0  # stopping at once: recording the killed runs as Crashed
YAML_HEADER = """\
# roadcast's Prefect deployments, for `prefect deploy --all --prefect-file deploy/prefect.yaml`
# (run it from the directory the worker should run flows in) and a worker of the process
# work pool below: `prefect work-pool create roadcast-process --type process` then
# `prefect worker start --pool roadcast-process`. `roadcast deploy --serve` serves the same
# deployments from one process without a worker.
#
# GENERATED from flows/deploy.py (DEPLOYMENTS), the single source of truth; do not edit by
# hand: `roadcast deploy --write-yaml deploy/prefect.yaml` (tests/test_deploy.py checks it).
"""


class DeployError(RuntimeError):
    """The deployments cannot be served here; the message says what to set or start."""


@dataclass(frozen=True)
class Concurrency:
    """A deployment's own concurrency limit (Prefect's ``concurrency_limit``).

    ``collision_strategy``: ``ENQUEUE`` (wait for the running one) or ``CANCEL_NEW``
    (skip a run while one is still going: right for a schedule that fires often).
    """

    limit: int = 1
    collision_strategy: str = "ENQUEUE"


@dataclass(frozen=True)
class EventTriggerSpec:
    """An automation that runs its deployment when an event arrives (Prefect's
    deployment event trigger, reactive, one event is enough).

    Attributes
    ----------
    name : the automation's name.
    description : one line for the UI.
    expect : event names that fire it.
    match : labels the event's resource must have (``*`` wildcards allowed).
    parameters : flow parameters of the run it starts (Jinja over ``event`` allowed),
        on top of the deployment's.
    """

    name: str
    description: str
    expect: tuple[str, ...]
    match: Mapping[str, str]
    parameters: Mapping[str, Any] = field(default_factory=dict)

    def as_yaml(self) -> dict[str, Any]:
        """The trigger as a ``prefect.yaml`` entry."""
        return {
            "type": "event",
            "name": self.name,
            "description": self.description,
            "enabled": True,
            "match": dict(self.match),
            "expect": list(self.expect),
            "for_each": ["prefect.resource.id"],
            "posture": "Reactive",
            "threshold": 1,
            "within": 0,
            "parameters": dict(self.parameters),
        }


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment of one flow.

    Attributes
    ----------
    entrypoint : module path of the flow function, ``package.module.function``.
    name : deployment name (the UI shows ``<flow name>/<name>``).
    description : one line for the UI.
    cron : a cron string in :data:`TIMEZONE`, or None for runs started by hand.
    parameters : flow parameters that differ from the flow's defaults.
    concurrency : at most this many runs at once, or None for no limit.
    tags : Prefect tags.
    triggers : automations that run this deployment on an event.
    """

    entrypoint: str
    name: str
    description: str
    cron: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    concurrency: Concurrency | None = None
    tags: tuple[str, ...] = ("roadcast",)
    triggers: tuple[EventTriggerSpec, ...] = ()

    @property
    def flow_function(self) -> str:
        """The flow function's name (the last part of the entry point)."""
        return self.entrypoint.rsplit(".", 1)[1]


DEPLOYMENTS: tuple[DeploymentSpec, ...] = (
    DeploymentSpec(
        entrypoint="flows.train_flow.train_flow",
        name="weekly",
        description="Fit, backtest and compare every model; write bundles, promote a champion.",
        cron="0 3 * * 1",
        parameters={
            "data": "los-loop",
            "models": ["persistence", "seasonal", "ar", "lstm", "gru", "tgclstm"],
            "window": 12,
            "horizon": 12,
            "seeds": 3,
            "device": "auto",
        },
        concurrency=Concurrency(1, "ENQUEUE"),
        tags=("roadcast", "train", "gpu"),
        triggers=(
            EventTriggerSpec(
                name="roadcast-retrain-on-drift",
                description="Retrain when the drift watcher says a served model degraded.",
                expect=("roadcast.model.drift",),
                match={"prefect.resource.id": "roadcast.model.*"},
                parameters={"label": "retrained on drift of {{ event.payload.model }}"},
            ),
        ),
    ),
    DeploymentSpec(
        entrypoint="flows.forecast_flow.forecast_flow",
        name="every-5-minutes",
        description="Champion and challengers forecast the latest window of the store.",
        cron="*/5 * * * *",
        concurrency=Concurrency(1, "CANCEL_NEW"),
        tags=("roadcast", "forecast"),
    ),
    DeploymentSpec(
        entrypoint="flows.report_flow.report_flow",
        name="daily",
        description="Live accuracy of every model and the alerts of the last day, as a report.",
        cron="15 0 * * *",
        parameters={"since": "24h"},
        concurrency=Concurrency(1, "CANCEL_NEW"),
        tags=("roadcast", "report"),
    ),
    DeploymentSpec(
        entrypoint="flows.drift_flow.drift_flow",
        name="every-15-minutes",
        description="Live accuracy against validation and baseline; a drift event retrains.",
        cron="*/15 * * * *",
        concurrency=Concurrency(1, "CANCEL_NEW"),
        tags=("roadcast", "drift"),
    ),
    DeploymentSpec(
        entrypoint="flows.replay_flow.replay_flow",
        name="backfill",
        description="Replay a data set into the readings topic (started by hand).",
        parameters={"data": "los-loop", "speedup": 0.0},
        tags=("roadcast", "replay"),
    ),
)


def _spec_named(specs: Sequence[DeploymentSpec], key: str, option: str) -> DeploymentSpec:
    """The deployment ``key`` names: its flow's short name (``train``) or ``flow/name``."""
    for spec in specs:
        short = spec.entrypoint.rsplit(".", 2)[1].removesuffix("_flow")
        if key in (short, f"roadcast-{short}/{spec.name}"):
            return spec
    names = ", ".join(spec.entrypoint.rsplit(".", 2)[1].removesuffix("_flow") for spec in specs)
    raise DeployError(f"{option} {key!r}: no such deployment; choose one of {names}")


def _cli_value(text: str) -> Any:
    """A parameter value as typed: JSON when it parses (``3``, ``true``, ``["ar"]``),
    else the text itself (``csv:/data/flow.csv``)."""
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text


def _validated(flow: Any, name: str, raw: Any, text: str) -> Any:
    """``flow``'s parameter ``name`` from ``raw`` (the value as JSON read it), else from
    ``text`` itself: ``tune=30`` is the text "30" to a parameter that takes text."""
    try:
        return flow.validate_parameters({name: raw})[name]
    except Exception:
        if raw == text:
            raise
        try:
            return flow.validate_parameters({name: text})[name]
        except Exception:
            pass
        raise


def customised(
    specs: Sequence[DeploymentSpec] = DEPLOYMENTS,
    crons: Sequence[str] = (),
    params: Sequence[str] = (),
) -> tuple[DeploymentSpec, ...]:
    """``specs`` with schedules and parameters changed from the command line.

    ``crons``: ``DEPLOYMENT=CRON`` (UTC), or ``DEPLOYMENT=off`` for runs by hand only.
    ``params``: ``DEPLOYMENT.PARAMETER=VALUE``, checked against the flow's signature and
    types. ``DEPLOYMENT`` is a flow's short name (``train``) or ``roadcast-train/weekly``.

    Raises
    ------
    DeployError
        Naming the option, the deployment and what is wrong with it.
    """
    import logging

    from pydantic import ValidationError

    out = {spec.name + spec.entrypoint: spec for spec in specs}
    for item in crons:
        from prefect.client.schemas.schedules import CronSchedule

        key, sep, cron = item.partition("=")
        spec = _spec_named(list(out.values()), key.strip(), "--cron")
        cron = cron.strip()
        if not sep or not cron:
            raise DeployError(f"--cron {item!r}: write DEPLOYMENT=CRON, e.g. train='0 4 * * *'")
        if cron.lower() in ("off", "none"):
            new_cron = None
        else:
            fields = len(cron.split())
            if not cron.startswith("@") and fields in (6, 7):
                raise DeployError(
                    f"--cron {key.strip()}: {cron!r} has {('six', 'seven')[fields - 6]} "
                    "fields; Prefect reads the sixth as seconds, so it would run every "
                    "second: give five (minute hour day-of-month month day-of-week, e.g. "
                    "'*/5 * * * *')"
                )
            try:
                new_cron = CronSchedule(cron=cron, timezone=TIMEZONE).cron
            except ValidationError:
                raise DeployError(
                    f"--cron {key.strip()}: {cron!r} is not a cron string (five fields: "
                    "minute hour day-of-month month day-of-week, e.g. '0 4 * * *'), nor off"
                ) from None
            if not fires(new_cron):
                raise DeployError(
                    f"--cron {key.strip()}: {cron!r} names no date that exists (such as 31 "
                    "February), so it would never run; fix the day or month, or write off"
                )
        out[spec.name + spec.entrypoint] = replace(spec, cron=new_cron)
    for item in params:
        target, sep, text = item.partition("=")
        key, dot, name = target.strip().rpartition(".")
        if not sep or not dot or not name:
            raise DeployError(
                f"--param {item!r}: write DEPLOYMENT.PARAMETER=VALUE, e.g. train.seeds=2"
            )
        spec = _spec_named(list(out.values()), key, "--param")
        flow = load_flow(spec)
        known = list(inspect.signature(flow.fn).parameters)
        if name not in known:
            raise DeployError(
                f"--param {target.strip()}: {flow.name} has no parameter {name!r}; "
                f"its parameters: {', '.join(known)}"
            )
        flows_log = logging.getLogger("prefect.flows")
        quiet, flows_log.disabled = flows_log.disabled, True  # it logs what we raise
        raw = _cli_value(text)
        try:
            value = _validated(flow, name, raw, text)
        except Exception as exc:  # Prefect's ParameterTypeError
            reason = str(exc).strip().splitlines()[-1].strip(" -")
            raise DeployError(f"--param {target.strip()}={text!r}: {reason}") from None
        finally:
            flows_log.disabled = quiet
        if isinstance(raw, bool) and not isinstance(value, bool):
            raise DeployError(f"--param {target.strip()}={text!r}: {text} is not a number")
        if not _finite(value):  # JSON has no NaN: Prefect would register it as null
            raise DeployError(f"--param {target.strip()}={text!r}: not a finite number")
        if not _bounded(value):
            raise DeployError(
                f"--param {target.strip()}={text!r}: a whole number beyond 64 bits, more "
                "than any count a run can reach; a deployment takes whole numbers from "
                f"{-(2**63):,} to {2**63 - 1:,}"
            )
        merged = {**spec.parameters, name: value}
        try:
            check_values(spec, merged)
        except ValueError as exc:
            raise DeployError(f"--param {target.strip()}={text!r}: {exc}") from None
        out[spec.name + spec.entrypoint] = replace(spec, parameters=merged)
    return tuple(out.values())


def fires(cron: str) -> bool:
    """Whether Prefect's scheduler finds a run time for ``cron`` (in :data:`TIMEZONE`)."""
    from datetime import UTC, datetime

    from prefect.server.schemas.schedules import CronSchedule
    from prefect.utilities.asyncutils import run_coro_as_sync

    schedule = CronSchedule(cron=cron, timezone=TIMEZONE)
    try:
        return bool(run_coro_as_sync(schedule.get_dates(n=1, start=datetime.now(UTC))))
    except Exception:  # croniter's CroniterBadDateError: no such date
        return False


def _finite(value: Any) -> bool:
    """False when ``value`` is or holds a NaN or an infinity."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list | tuple):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


def _bounded(value: Any) -> bool:
    """False when ``value`` is or holds a whole number outside the 64 bits of a signed
    integer (SQLite's, numpy's and torch's), which no count of a run reaches."""
    if isinstance(value, int) and not isinstance(value, bool):
        return -(2**63) <= value < 2**63
    if isinstance(value, list | tuple):
        return all(_bounded(v) for v in value)
    if isinstance(value, dict):
        return all(_bounded(v) for v in value.values())
    return True


def check_values(spec: DeploymentSpec, parameters: Mapping[str, Any]) -> None:
    """Refuse values every run of ``spec``'s flow would refuse (the flows' own checks,
    without I/O): a report period or horizon, drift thresholds, training settings and
    data set, Kafka servers, a replay's pace and limit.

    Raises
    ------
    ValueError
        Naming the parameter and what it must be.
    """
    flow = load_flow(spec)
    given = {
        k: p.default
        for k, p in inspect.signature(flow.fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    given.update(parameters)
    check = _VALUE_CHECKS.get(spec.flow_function)
    if check is not None:
        check(given)


def _train_values(p: Mapping[str, Any]) -> None:
    from models.forecasters.comparison import TrainPlan, parse_models
    from models.forecasters.tuning import parse_budget
    from models.nn.device_names import device_spec
    from pipeline.data.datasets import check_spec
    from pipeline.data.timestamps import zone_info
    from pipeline.registry.versions import check_label

    models = p["models"]
    names = parse_models(models) if isinstance(models, str) else models
    TrainPlan(
        models=TrainPlan.models if names is None else tuple(names),
        window=p["window"], horizon=p["horizon"], seeds=p["seeds"], epochs=p["epochs"],
        epoch_windows=p["epoch_windows"],
        test=p["test"], valid=p["valid"],
    )  # fmt: skip
    check_label(p["label"])
    if p["out"] is not None and not str(p["out"]).strip():
        raise ValueError("out is empty; name the output folder (or leave it to the default)")
    check_spec(p["data"], p["adjacency"])
    device_spec(p["device"])
    if p["tune"] is not None:
        parse_budget(p["tune"])
    if p["timezone"] is not None:
        zone_info(p["timezone"])


def _report_values(p: Mapping[str, Any]) -> None:
    from flows.report_flow import check_options

    check_options(p["since"], p["horizon"], None)  # `out` is the worker's folder


def _drift_values(p: Mapping[str, Any]) -> None:
    from pipeline.drift import DriftConfig

    keys = ("ratio", "baseline_ratio", "min_count")
    DriftConfig(**{k: p[k] for k in keys if p[k] is not None})


def _bootstrap(servers: str | None) -> None:
    """Refuse Kafka servers that are not ``HOST:PORT[,...]`` (None: the worker's setting)."""
    from pipeline.settings import bootstrap_servers

    if servers is not None:
        bootstrap_servers(servers)


def _forecast_values(p: Mapping[str, Any]) -> None:
    from flows.forecast_flow import check_half_life

    _bootstrap(p["bootstrap"])
    check_half_life(p["level_half_life"])


def _replay_values(p: Mapping[str, Any]) -> None:
    from pipeline.data.datasets import check_spec
    from pipeline.kafka.replay import check_speed_limit

    check_spec(p["data"], p["adjacency"])
    _bootstrap(p["bootstrap"])
    check_speed_limit(p["speedup"], p["limit"])


_VALUE_CHECKS: dict[str, Callable[[Mapping[str, Any]], None]] = {
    "train_flow": _train_values,
    "report_flow": _report_values,
    "drift_flow": _drift_values,
    "forecast_flow": _forecast_values,
    "replay_flow": _replay_values,
}


def load_flow(spec: DeploymentSpec) -> Any:
    """The Prefect flow object that ``spec`` deploys (imports its module)."""
    from prefect.flows import load_flow_from_entrypoint

    return load_flow_from_entrypoint(spec.entrypoint, use_placeholder_flow=False)


def prefect_yaml(specs: Sequence[DeploymentSpec] = DEPLOYMENTS) -> dict[str, Any]:
    """``specs`` as a ``prefect.yaml`` document (a plain dict, ready for ``yaml.safe_dump``).

    No ``pull`` section: ``prefect deploy`` then adds a ``set_working_directory`` step
    for the directory it runs in, which is what a process worker needs.
    """
    deployments = []
    for spec in specs:
        flow = load_flow(spec)
        entry: dict[str, Any] = {
            "name": spec.name,
            "description": spec.description,
            "entrypoint": spec.entrypoint,
            "flow_name": flow.name,
            "tags": list(spec.tags),
            "parameters": dict(spec.parameters),
            "schedules": (
                [{"cron": spec.cron, "timezone": TIMEZONE, "active": True}] if spec.cron else []
            ),
            "work_pool": {"name": WORK_POOL, "work_queue_name": "default", "job_variables": {}},
        }
        if spec.concurrency is not None:
            entry["concurrency_limit"] = {
                "limit": spec.concurrency.limit,
                "collision_strategy": spec.concurrency.collision_strategy,
            }
        if spec.triggers:
            entry["triggers"] = [t.as_yaml() for t in spec.triggers]
        deployments.append(entry)
    return {
        "name": "roadcast",
        "build": None,
        "push": None,
        "deployments": deployments,
    }


def render_yaml(specs: Sequence[DeploymentSpec] = DEPLOYMENTS) -> str:
    """The text of ``deploy/prefect.yaml``: a header comment, then :func:`prefect_yaml`."""
    import yaml

    body = yaml.safe_dump(prefect_yaml(specs), sort_keys=False, default_flow_style=False)
    return YAML_HEADER + "\n" + body


def write_yaml(path: str | Path, specs: Sequence[DeploymentSpec] = DEPLOYMENTS) -> Path:
    """Write :func:`render_yaml` to ``path`` (parents created), atomically: a failed write
    leaves the file as it was."""
    from pipeline.model_dir import write_text_atomic

    path = Path(path)
    write_text_atomic(path, render_yaml(specs))
    return path


def runner_deployments(
    specs: Sequence[DeploymentSpec] = DEPLOYMENTS,
) -> list[RunnerDeployment]:
    """``specs`` as deployments a :class:`prefect.runner.Runner` can serve."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    out = []
    for spec in specs:
        limit = None
        if spec.concurrency is not None:
            limit = ConcurrencyLimitConfig(
                limit=spec.concurrency.limit,
                collision_strategy=ConcurrencyLimitStrategy(spec.concurrency.collision_strategy),
            )
        deployment = load_flow(spec).to_deployment(
            name=spec.name,
            description=spec.description,
            schedules=[Cron(spec.cron, timezone=TIMEZONE)] if spec.cron else None,
            parameters=dict(spec.parameters),
            concurrency_limit=limit,
            tags=list(spec.tags),
            entrypoint_type=EntrypointType.MODULE_PATH,
            triggers=[_deployment_trigger(t) for t in spec.triggers],
        )
        out.append(closed_schema(deployment))
    return out


def closed_schema(deployment: RunnerDeployment) -> RunnerDeployment:
    """``deployment`` with a parameter schema that refuses parameters its flow does not
    take: the Prefect server then refuses such a run when it is created (the UI names the
    parameter), where the run would otherwise crash in the engine with no reason given."""
    from prefect.utilities.callables import ParameterSchema

    class ClosedParameterSchema(ParameterSchema):
        additionalProperties: bool = False

    schema = getattr(deployment, "_parameter_openapi_schema", None)
    if not isinstance(schema, ParameterSchema):  # another Prefect: its schema as it is
        return deployment
    fields = schema.model_dump(exclude_unset=True)
    deployment._parameter_openapi_schema = ClosedParameterSchema(
        **fields, additionalProperties=False
    )
    return deployment


def _deployment_trigger(spec: EventTriggerSpec) -> Any:
    """``spec`` as the Prefect deployment trigger a runner deployment applies."""
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger.model_validate(
        {k: v for k, v in spec.as_yaml().items() if k != "type"}
    )


def api_url() -> str | None:
    """The Prefect server this process talks to (``PREFECT_API_URL``), or None."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def check_server(url: str, timeout_s: float | None = None) -> None:
    """Refuse a Prefect server that does not answer its health check in ``timeout_s``
    (default :data:`HEALTH_TIMEOUT_S`, Prefect's own retries included).

    Raises
    ------
    DeployError
        Naming ``PREFECT_API_URL`` and what went wrong (refused, timed out, not Prefect).
    """
    from prefect.client.orchestration import get_client
    from prefect.utilities.asyncutils import run_coro_as_sync

    deadline = HEALTH_TIMEOUT_S if timeout_s is None else timeout_s

    async def probe() -> Exception | None:
        async with asyncio.timeout(deadline):
            async with get_client(httpx_settings={"timeout": deadline}) as client:
                failed = await client.api_healthcheck()
                if failed is not None:
                    return failed
                try:  # any web server answers 200 to the health path; Prefect names its version
                    version = await client.api_version()
                except ValueError:
                    version = None
                if not isinstance(version, str):
                    return ValueError("it is not a Prefect server (no version at /admin/version)")
                return None

    try:
        error = run_coro_as_sync(probe())
    except TimeoutError:
        error = TimeoutError(f"no answer within {deadline:g} s")
    except Exception as exc:  # an unusable URL fails before any request
        error = exc
    if error is not None:
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        reason = f"{type(error).__name__}: {first}" if first else type(error).__name__
        message = (
            f"the Prefect server at PREFECT_API_URL={url} did not answer its health check "
            f"({reason}); start it (`prefect server start`) or fix PREFECT_API_URL"
        )
        raise DeployError(_no_password(message))


def _no_password(text: str) -> str:
    """``text`` without the ``user:password@`` of a URL in it."""
    return re.sub(r"//[^/@\s]+@", "//", text)


def serve_deployments(
    specs: Sequence[DeploymentSpec] = DEPLOYMENTS, *, limit: int | None = None
) -> None:
    """Serve ``specs`` from this process until SIGTERM or SIGINT (then return).

    Flow runs execute in subprocesses of this one. A signal cancels the runs in flight
    before returning (:func:`_serve`); schedules stay active when it stops
    (``pause_on_shutdown=False``), so a restarted server process picks up where this one
    left off.

    Raises
    ------
    DeployError
        As :func:`require_server`, also when the server stops answering while serving,
        or answers again after it did not (see :class:`ServerWatch`).
    """
    url = require_server()
    # After an outage Prefect's runner no longer cancels flow runs (its cancellation
    # observer gave up) and the runs in flight lost their concurrency slots (the server
    # ends their leases): serving stops as a signal stops it, to be started afresh.
    watch = ServerWatch(url, on_back=lambda _: os.kill(os.getpid(), signal.SIGTERM))
    watch.start()
    try:
        with quiet_flow_runs():
            asyncio.run(_serve(runner_deployments(specs), limit))
    except KeyboardInterrupt:  # Ctrl-C before serving began, or a third one
        pass
    except Exception:  # an ExceptionGroup of the runner's tasks, an httpx error...
        try:
            require_server()
        except DeployError as gone:
            raise DeployError(f"serving stopped: {gone}") from None
        raise
    finally:
        watch.stop()
    if watch.away_s is not None:
        raise DeployError(
            f"serving stopped: the Prefect server at PREFECT_API_URL={_no_password(url)} did "
            f"not answer for about {watch.away_s:.0f} s; after that Prefect's runner no "
            "longer cancels flow runs and the runs in flight lost their concurrency slots, "
            "so serving ends here: start it again (systemd's Restart= or Docker's restart "
            "policy do)"
        )


@contextlib.contextmanager
def quiet_flow_runs() -> Iterator[None]:
    """Unless debugging, the flow runs started inside log to the console without
    tracebacks, as roadcast's commands do (the server's log of each run keeps them): they
    read Prefect's logging config, with :class:`flows.cli.errors.NoTraceback` on its
    console handler, from a file named by ``PREFECT_LOGGING_CONFIG_PATH`` (unless that is
    set already)."""
    import yaml
    from prefect.settings import get_current_settings

    from flows.cli.errors import debug_enabled

    aliases = ("PREFECT_LOGGING_CONFIG_PATH", "PREFECT_LOGGING_SETTINGS_PATH")
    if debug_enabled() or any(os.environ.get(name) for name in aliases):
        yield
        return
    base = get_current_settings().logging.config_path
    if not base.is_file():
        import prefect.logging

        base = Path(prefect.logging.__file__).parent / "logging.yml"
    config = yaml.safe_load(base.read_text())
    config.setdefault("filters", {})["no_traceback"] = {"()": "flows.cli.errors.NoTraceback"}
    config["handlers"]["console"].setdefault("filters", []).append("no_traceback")
    with tempfile.TemporaryDirectory(prefix="roadcast-logging-") as folder:
        path = Path(folder) / "logging.yml"
        path.write_text(yaml.safe_dump(config))
        os.environ[aliases[0]] = str(path)
        try:
            yield
        finally:
            del os.environ[aliases[0]]


async def _serve(deployments: Sequence[RunnerDeployment], limit: int | None) -> None:
    """Serve ``deployments`` with a Prefect runner until SIGINT or SIGTERM.

    The first signal stops the runner with ``Runner.astop``, which cancels the flow runs
    in flight (their processes stopped, the runs Cancelled on the server), within
    :data:`STOP_TIMEOUT_S`. A second signal, or that deadline, kills what is left
    (:func:`_kill_in_flight`); a signal after that is no longer caught.
    """
    from prefect.runner import Runner

    runner = Runner(pause_on_shutdown=False, limit=limit)
    for deployment in deployments:
        await runner.aadd_deployment(deployment)
    names = "".join(f"\n  {d.flow_name}/{d.name}" for d in deployments)
    print(f"serving {len(deployments)} deployment(s) (Ctrl-C stops):{names}", flush=True)
    serving = asyncio.create_task(runner.start())
    await asyncio.sleep(0)  # start() sets its own SIGTERM handler first: ours replace it
    with _StopSignals() as stop:
        await asyncio.wait([serving, stop.asked], return_when=asyncio.FIRST_COMPLETED)
        if not serving.done():
            asked = set(_in_flight(runner))
            _say(
                f"stopping: cancelling {len(asked)} flow run(s) in flight "
                "(Ctrl-C again stops at once)"
            )
            try:
                async with stop.deadline(STOP_TIMEOUT_S):
                    if runner.started:
                        await runner.astop()
                    else:
                        serving.cancel()
                    await asyncio.wait([serving])
            except TimeoutError:
                await _kill_in_flight(runner, asked)
                serving.cancel()
                await asyncio.wait([serving], timeout=KILL_REPORT_TIMEOUT_S)
    if serving.done() and not serving.cancelled() and (error := serving.exception()):
        raise error


class _StopSignals:
    """SIGINT and SIGTERM, caught while serving: the first sets :attr:`asked`, the second
    ends the current :meth:`deadline` at once and restores the default handlers."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.asked: asyncio.Future[None] = self._loop.create_future()
        self._now = False
        self._timeout: asyncio.Timeout | None = None

    def __enter__(self) -> _StopSignals:
        for sig in self.SIGNALS:
            self._loop.add_signal_handler(sig, self._caught)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig in self.SIGNALS:
            self._loop.remove_signal_handler(sig)

    def _caught(self) -> None:
        if not self.asked.done():
            self.asked.set_result(None)
            return
        self.__exit__()
        self._now = True
        if self._timeout is not None:
            self._timeout.reschedule(self._loop.time())

    @contextlib.asynccontextmanager
    async def deadline(self, seconds: float) -> AsyncIterator[None]:
        """``asyncio.timeout(seconds)``, which a second signal ends at once."""
        async with asyncio.timeout(0 if self._now else seconds) as self._timeout:
            try:
                yield
            finally:
                self._timeout = None


def _in_flight(runner: Runner) -> dict[Any, Any]:
    """The flow runs ``runner`` executes: {flow run id: its process handle}."""
    processes = getattr(runner, "_process_manager", None)  # Prefect lists them nowhere else
    if processes is None:  # a Prefect that keeps them elsewhere: astop() alone cancels them
        return {}
    handles = {run_id: processes.get(run_id) for run_id in processes.flow_run_ids()}
    return {run_id: handle for run_id, handle in handles.items() if handle is not None}


async def _kill_in_flight(runner: Runner, asked: set[Any]) -> None:
    """Kill the processes of ``runner``'s runs in flight (SIGKILL) and record them, and the
    runs ``asked`` to cancel, Crashed within :data:`KILL_REPORT_TIMEOUT_S`.

    A run in ``asked`` whose process the cancelling already stopped may not be marked
    Cancelled yet; a run already final stays as it is."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import Abort
    from prefect.states import Crashed
    from prefect.utilities.engine import propose_state

    killed = _in_flight(runner)
    for handle in killed.values():
        with contextlib.suppress(OSError):  # it exited meanwhile
            handle.hard_kill()
    runs = asked | set(killed)
    if not runs:
        return
    _say(f"stopping at once: killed {len(killed)} flow run(s), recording {len(runs)} as crashed")
    crashed = "roadcast deploy --serve was stopped at once and killed this run"

    async def record(client: Any, run_id: Any) -> None:
        # Abort (a BaseException): the run is final already; an Exception: no server
        with contextlib.suppress(Abort, Exception):
            await propose_state(client, Crashed(message=crashed), flow_run_id=run_id)

    try:
        async with asyncio.timeout(KILL_REPORT_TIMEOUT_S):
            async with get_client(httpx_settings={"timeout": KILL_REPORT_TIMEOUT_S}) as client:
                await asyncio.gather(*(record(client, run_id) for run_id in runs))
    except TimeoutError:
        _say(f"the Prefect server did not record them within {KILL_REPORT_TIMEOUT_S:g} s")


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class ServerWatch(threading.Thread):
    """While serving: one line on ``say`` when the Prefect server at ``url`` stops
    answering its health check (a hung or paused server: Prefect's runner waits on it
    without a word, and no scheduled run starts), one when it answers again.

    Parameters
    ----------
    url : the server's API URL.
    every_s : seconds between checks; each check has :data:`HEALTH_TIMEOUT_S`.
    say : where the lines go (standard error by default).
    on_back : called with the seconds it was away when the server answers again
        (:attr:`away_s` keeps the last).
    """

    def __init__(
        self,
        url: str,
        every_s: float = WATCH_EVERY_S,
        say: Callable[[str], None] | None = None,
        on_back: Callable[[float], None] | None = None,
    ) -> None:
        super().__init__(name="roadcast-prefect-watch", daemon=True)
        self.url, self.every_s = url, every_s
        self.say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self.on_back = on_back
        self.away_s: float | None = None
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()

    def run(self) -> None:
        down_since: float | None = None
        while not self._stopped.wait(self.every_s):
            try:
                check_server(self.url)
            except DeployError as exc:
                if down_since is None:
                    down_since = time.monotonic()
                    self.say(f"warning: {exc}; no scheduled run starts until it answers")
                continue
            if down_since is not None:
                away = time.monotonic() - down_since
                self.say(
                    f"the Prefect server at PREFECT_API_URL={_no_password(self.url)} answers "
                    f"again (it did not for about {away:.0f} s)"
                )
                down_since, self.away_s = None, away
                if self.on_back is not None:
                    self.on_back(away)


def require_server() -> str:
    """The URL of the Prefect server that schedules deployments, checked to answer.

    Raises
    ------
    DeployError
        When ``PREFECT_API_URL`` is not set (the embedded temporary server would accept
        deployments but never schedule them) or its server does not answer.
    """
    url = api_url()
    if not url:
        raise DeployError(
            "PREFECT_API_URL is not set: Prefect's embedded temporary server runs no "
            "schedules. Start a server (`prefect server start`) and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    check_server(url)
    return url


def describe(specs: Sequence[DeploymentSpec] = DEPLOYMENTS) -> list[dict[str, str]]:
    """One row per deployment for ``roadcast deploy``'s table (no Prefect import)."""
    rows = []
    for spec in specs:
        module = spec.entrypoint.rsplit(".", 2)[1]
        flow_name = "roadcast-" + module.removesuffix("_flow")
        rows.append(
            {
                "deployment": f"{flow_name}/{spec.name}",
                "schedule (UTC)": (spec.cron or "by hand")
                + "".join(f"; on {', '.join(t.expect)}" for t in spec.triggers),
                "parameters": ", ".join(
                    f"{k}={','.join(v) if isinstance(v, list | tuple) else v}"
                    for k, v in spec.parameters.items()
                )
                or "-",
                "concurrency": (
                    f"{spec.concurrency.limit} ({spec.concurrency.collision_strategy})"
                    if spec.concurrency
                    else "-"
                ),
            }
        )
    return rows
