"""Deployments: ``deploy/prefect.yaml`` is the rendering of ``flows.deploy.DEPLOYMENTS`` and
names real flows; the compose file, Dockerfile and systemd unit hold together (Docker
is not run here: they are checked as files); ``roadcast deploy --serve`` registers the
deployments with their schedules on a real Prefect server, runs a flow run, and stops
cleanly on SIGTERM and SIGINT, cancelling the flow runs in flight."""

from __future__ import annotations

import configparser
import contextlib
import inspect
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from flows.deploy import (
    DEPLOYMENTS,
    TIMEZONE,
    WORK_POOL,
    DeployError,
    customised,
    describe,
    load_flow,
    prefect_yaml,
)
from tests.processes import alive, children_of, default_sigint
from tests.waiting import WAIT_S, wait_until

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"


@pytest.fixture(scope="module")
def prefect_file() -> dict:
    return yaml.safe_load((DEPLOY / "prefect.yaml").read_text())


def test_prefect_yaml_is_generated_from_the_deployment_list(prefect_file):
    assert prefect_file == prefect_yaml(DEPLOYMENTS), (
        "deploy/prefect.yaml is out of date: run `roadcast deploy --write-yaml deploy/prefect.yaml`"
    )


# The keys `prefect deploy` reads from prefect.yaml (Prefect's own model of the file is
# private and ignores unknown keys, so a misspelt key would pass it unnoticed).
PREFECT_YAML_KEYS = {"name", "prefect-version", "build", "push", "pull", "deployments"}
DEPLOYMENT_KEYS = {
    "name", "version", "version_type", "tags", "description", "schedule", "schedules", "paused",
    "concurrency_limit", "flow_name", "entrypoint", "parameters", "enforce_parameter_schema",
    "build", "push", "pull", "work_pool", "triggers", "sla",
}  # fmt: skip
WORK_POOL_KEYS = {"name", "work_queue_name", "job_variables"}


def test_prefect_yaml_has_only_keys_prefect_reads_and_valid_schedules(prefect_file):
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.objects import ConcurrencyOptions
    from prefect.client.schemas.schedules import CronSchedule

    assert set(prefect_file) <= PREFECT_YAML_KEYS
    assert len(prefect_file["deployments"]) == len(DEPLOYMENTS)
    for entry in prefect_file["deployments"]:
        assert set(entry) <= DEPLOYMENT_KEYS, entry["name"]
        assert {"name", "entrypoint", "flow_name", "work_pool"} <= set(entry)
        assert set(entry["work_pool"]) <= WORK_POOL_KEYS
        assert entry["work_pool"]["name"] == WORK_POOL
        for schedule in entry["schedules"]:
            options = {k: v for k, v in schedule.items() if k not in ("cron", "timezone")}
            cron = CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
            DeploymentScheduleCreate(schedule=cron, **options)
        if "concurrency_limit" in entry:
            limit = dict(entry["concurrency_limit"])
            assert isinstance(limit.pop("limit"), int)
            ConcurrencyOptions(**limit)


def test_every_entrypoint_names_a_flow_that_takes_its_parameters(prefect_file):
    from prefect import Flow
    from prefect.flows import load_flow_from_entrypoint

    for entry in prefect_file["deployments"]:
        flow = load_flow_from_entrypoint(entry["entrypoint"], use_placeholder_flow=False)
        assert isinstance(flow, Flow)
        assert flow.name == entry["flow_name"]
        accepted = set(inspect.signature(flow.fn).parameters)
        assert set(entry["parameters"]) <= accepted, entry["name"]
        flow.validate_parameters(dict(entry["parameters"]))  # types check too


def test_schedules_train_weekly_forecast_every_5_minutes_report_daily(prefect_file):
    cron = {
        e["flow_name"]: [s["cron"] for s in e["schedules"]] for e in prefect_file["deployments"]
    }
    assert cron["roadcast-forecast"] == ["*/5 * * * *"]
    (train,) = cron["roadcast-train"]
    minute, hour, day, month, weekday = train.split()
    assert day == month == "*" and weekday not in ("*", "?") and "," not in weekday
    (report,) = cron["roadcast-report"]
    minute, hour, day, month, weekday = report.split()
    assert day == month == weekday == "*" and hour.isdigit() and minute.isdigit()
    assert cron["roadcast-replay"] == []
    assert cron["roadcast-drift"] == ["*/15 * * * *"]
    for entry in prefect_file["deployments"]:
        assert all(s["timezone"] == TIMEZONE for s in entry["schedules"])


def test_the_train_deployment_retrains_on_the_drift_event(prefect_file):
    """The automation in prefect.yaml is a valid Prefect deployment trigger on the event the
    drift watcher emits, for every model's resource, and its parameters are the flow's."""
    from prefect.events.schemas.deployment_triggers import DeploymentTriggerTypes
    from pydantic import TypeAdapter

    from flows.drift_flow import EVENT, RESOURCE_PREFIX
    from flows.train_flow import train_flow

    triggered = {e["flow_name"]: e.get("triggers", []) for e in prefect_file["deployments"]}
    assert [n for n, t in triggered.items() if t] == ["roadcast-train"]
    (raw,) = triggered["roadcast-train"]
    trigger = TypeAdapter(DeploymentTriggerTypes).validate_python(raw)
    assert trigger.expect == {EVENT}
    assert trigger.match.root == {"prefect.resource.id": f"{RESOURCE_PREFIX}*"}
    assert set(raw["parameters"]) <= set(inspect.signature(train_flow.fn).parameters)


def test_cli_table_names_match_the_flows():
    rows = describe(DEPLOYMENTS)
    assert [r["deployment"] for r in rows] == [
        f"{load_flow(spec).name}/{spec.name}" for spec in DEPLOYMENTS
    ]


def test_compose_has_kafka_kraft_prefect_postgres_worker_and_service():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "postgres", "prefect-server", "prefect-worker", "roadcast"} <= set(services)
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert "ZOOKEEPER" not in " ".join(env)  # KRaft: no ZooKeeper anywhere
    server = services["prefect-server"]
    assert (
        "postgresql+asyncpg://" in server["environment"]["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
    )
    assert server["depends_on"]["postgres"]["condition"] == "service_healthy"
    worker = services["prefect-worker"]
    assert worker["command"][:4] == ["prefect", "worker", "start", "--pool"]
    assert worker["command"][4] == WORK_POOL
    deploy = " ".join(services["deploy"]["command"])
    assert "deploy/prefect.yaml" in deploy and f"create {WORK_POOL} --type process" in deploy
    roadcast = services["roadcast"]
    assert roadcast["command"][:2] == ["roadcast", "serve"]
    assert roadcast["stop_signal"] == "SIGTERM"
    for name in ("prefect-worker", "roadcast"):
        env = services[name]["environment"]
        assert env["ROADCAST_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
        assert "roadcast-state:/var/lib/roadcast" in services[name]["volumes"]
    # the image they run is the one the Dockerfile builds
    assert services["deploy"]["build"]["dockerfile"] == "deploy/Dockerfile"
    assert {services[n]["image"] for n in ("deploy", "prefect-worker", "roadcast")} == {
        services["deploy"]["image"]
    }
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
    for volume in {v.split(":")[0] for s in services.values() for v in s.get("volumes", [])}:
        assert volume in compose["volumes"]


def test_dockerfile_pins_cpu_torch_with_a_cuda_build_argument():
    text = (DEPLOY / "Dockerfile").read_text()
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    assert 'pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"' in text
    import torch

    pinned = next(line for line in text.splitlines() if line.startswith("ARG TORCH_VERSION="))
    assert pinned.split("=", 1)[1] == torch.__version__.split("+")[0]
    for folder in ("pipeline", "models", "flows", "deploy"):
        assert f"COPY {folder} ./{folder}" in text
    assert 'CMD ["roadcast", "serve"]' in text and "USER roadcast" in text


def test_systemd_unit_runs_the_service_and_stops_it_with_sigterm():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # keys are case-sensitive in systemd
    unit.read_string((DEPLOY / "roadcast-serve.service").read_text())
    service = unit["Service"]
    command = service["ExecStart"].split()
    assert Path(command[0]).name == "roadcast" and command[1:] == ["serve"]
    # the service loads the bundles the train flow writes under ROADCAST_MODEL_DIR
    text = (DEPLOY / "roadcast-serve.service").read_text()
    assert "Environment=ROADCAST_MODEL_DIR=/var/lib/roadcast/models\n" in text
    assert service["KillSignal"] == "SIGTERM" and service["Restart"] == "on-failure"
    assert int(service["TimeoutStopSec"]) >= 30
    assert service["EnvironmentFile"].lstrip("-").startswith("/etc/roadcast/")
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert "network-online.target" in unit["Unit"]["After"]


def test_readme_production_section_covers_what_the_issue_asks():
    text = (REPO / "README.md").read_text()
    assert "README" in (DEPLOY / "README.md").read_text()  # deploy/ points there
    for topic in ("prefect server start", "SQLite", "Postgres", "runs no schedules",
                  "ROADCAST_SECURITY_PROTOCOL", "partitions", "consumer group", "GPU",
                  "roadcast deploy --serve"):  # fmt: skip
        assert topic in text, topic


def test_schedules_and_parameters_change_from_the_command_line():
    specs = {s.name: s for s in customised(
        crons=["train=0 4 * * *", "roadcast-forecast/every-5-minutes=off"],
        params=[
            "train.data=csv:/data/flow.csv", "train.seeds=2", 'train.models=["ar","lstm"]',
            "train.tune=30",  # thirty trials, as `roadcast train --tune 30`: it was refused
        ],
    )}  # fmt: skip
    assert specs["weekly"].cron == "0 4 * * *" and specs["every-5-minutes"].cron is None
    assert specs["weekly"].parameters["data"] == "csv:/data/flow.csv"
    assert specs["weekly"].parameters["seeds"] == 2 and specs["weekly"].parameters["window"] == 12
    assert specs["weekly"].parameters["models"] == ["ar", "lstm"]
    assert specs["weekly"].parameters["tune"] == "30"
    assert specs["daily"] == next(s for s in DEPLOYMENTS if s.name == "daily")
    rendered = {e["name"]: e for e in prefect_yaml(tuple(specs.values()))["deployments"]}
    assert rendered["weekly"]["schedules"][0]["cron"] == "0 4 * * *"
    assert rendered["every-5-minutes"]["schedules"] == []


@pytest.mark.parametrize(
    ("crons", "params", "message"),
    [
        (["tran=off"], [], "--cron 'tran': no such deployment; choose one of train, forecast"),
        (["train=61 * * * *"], [], "--cron train: '61 * * * *' is not a cron string"),
        (["train"], [], "write DEPLOYMENT=CRON"),
        ([], ["seeds=2"], "write DEPLOYMENT.PARAMETER=VALUE"),
        ([], ["train.seed=2"], "roadcast-train has no parameter 'seed'; its parameters: data,"),
        ([], ["train.seeds=two"], "--param train.seeds='two': seeds: Input should be a valid"),
        # values every run refuses were taken, or a true taken for 1
        ([], ["train.seeds=true"], "--param train.seeds='true': true is not a number"),
        ([], ['train.out=""'], "out is empty; name the output folder"),
        ([], ["train.data=simulated:sensors=0"], "sensors must be a whole number >= 1, got 0"),
        (
            [],
            ["forecast.level_half_life=6 hrs."],
            "--param forecast.level_half_life='6 hrs.': level_half_life: '6 hrs.' is not a",
        ),
    ],
)
def test_a_bad_schedule_or_parameter_is_named(crons, params, message):
    with pytest.raises(DeployError) as raised:
        customised(crons=crons, params=params)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_the_command_line_refuses_a_bad_schedule_in_one_line():
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "deploy", "--cron", "drift=every minute"],
        cwd=REPO, capture_output=True, text=True, timeout=WAIT_S,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: --cron drift: 'every minute' is not a cron string (five fields: minute hour "
        "day-of-month month day-of-week, e.g. '0 4 * * *'), nor off"
    ]


# --------------------------------------------------------------------- serving


def _serve(
    env: dict[str, str], log: Path, *options: str, session: bool = False
) -> subprocess.Popen[bytes]:
    """``roadcast deploy --serve``; ``session``: in a process group of its own, which a
    terminal's Ctrl-C reaches as a whole (``os.killpg``)."""
    with open(log, "ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "deploy", "--serve", *options],
            cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT,
            preexec_fn=default_sigint, start_new_session=session,
        )  # fmt: skip


def _client(env: dict[str, str]):
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    class Session:
        def __enter__(self):
            self._settings = temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]})
            self._settings.__enter__()
            self._client = get_client(sync_client=True)
            return self._client.__enter__()

        def __exit__(self, *exc):
            self._client.__exit__(*exc)
            self._settings.__exit__(*exc)

    return Session()


def _deployments(env: dict[str, str]) -> dict[str, object]:
    with _client(env) as client:
        found = client.read_deployments()
        flows = {f.id: f.name for f in client.read_flows()}
    return {f"{flows[d.flow_id]}/{d.name}": d for d in found}


def _wait(condition, what: str, log: Path) -> None:
    wait_until(
        condition,
        what=what,
        poll_s=0.5,
        details=lambda: f"log:\n{log.read_text()[-3000:] if log.exists() else ''}",
    )


def _stop(proc: subprocess.Popen[bytes], sig: int, log: Path) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(
            f"not stopped {WAIT_S:.0f} s after {sig}; log:\n{log.read_text()[-3000:]}"
        ) from None


@pytest.mark.integration
@pytest.mark.slow
def test_serve_registers_runs_and_stops_on_sigterm(prefect_server, broker, tmp_path):
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from pipeline.settings import load_settings
    from tests.service_support import read_topic

    env = {**prefect_server, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "serve.log"
    changes = ("--cron", "drift=off", "--cron", "report=30 1 * * *", "--param", "report.since=12h")
    specs = customised(crons=["drift=off", "report=30 1 * * *"], params=["report.since=12h"])
    proc = _serve(env, log, *changes)
    try:
        wanted = {f"{load_flow(s).name}/{s.name}" for s in specs}
        _wait(lambda: set(_deployments(env)) >= wanted, "the deployments", log)
        found = _deployments(env)
        assert found["roadcast-drift/every-15-minutes"].schedules == []
        assert found["roadcast-report/daily"].parameters == {"since": "12h"}
        for spec in specs:
            deployment = found[f"{load_flow(spec).name}/{spec.name}"]
            crons = [s.schedule.cron for s in deployment.schedules]
            assert crons == ([spec.cron] if spec.cron else [])
            assert all(s.schedule.timezone == TIMEZONE and s.active for s in deployment.schedules)
            assert deployment.parameters == dict(spec.parameters)
            assert deployment.entrypoint == spec.entrypoint
            if spec.concurrency is not None:
                assert deployment.global_concurrency_limit.limit == spec.concurrency.limit
                strategy = deployment.concurrency_options.collision_strategy
                assert str(strategy.value) == spec.concurrency.collision_strategy
        # the drift trigger of the train deployment became an automation running it
        with _client(env) as client:
            automations = {a.name: a for a in client.read_automations()}
        train = found["roadcast-train/weekly"]
        retrain = automations["roadcast-retrain-on-drift"]
        assert retrain.enabled and retrain.trigger.expect == {"roadcast.model.drift"}
        assert [a.deployment_id for a in retrain.actions] == [train.id]
        # the served process executes runs: a small backfill into the session broker
        topic = f"t.serve.readings.{os.getpid()}.{int(time.time())}"
        with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}):
            run = run_deployment(
                "roadcast-replay/backfill",
                parameters={"data": "simulated:sensors=3,hours=1", "bootstrap": broker.bootstrap,
                            "topic": topic},
                timeout=WAIT_S,
            )  # fmt: skip
        assert run.state is not None and run.state.is_completed(), (run.state, log.read_text())
        settings = load_settings(bootstrap_servers=broker.bootstrap)
        assert len(read_topic(settings, topic)) == 3 * 12
        assert _stop(proc, signal.SIGTERM, log) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    # pause_on_shutdown=False: the schedules stay active for the next server process
    after = _deployments(env)
    assert all(not d.paused for d in after.values())
    assert "stopped serving" in log.read_text()


@pytest.mark.integration
@pytest.mark.slow
def test_serve_stops_cleanly_on_sigint(prefect_server, tmp_path):
    env = {**prefect_server, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "serve.log"
    proc = _serve(env, log)
    try:
        _wait(lambda: log.exists() and b"roadcast-forecast" in log.read_bytes(),
              "the serve banner", log)  # fmt: skip
        assert _stop(proc, signal.SIGINT, log) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize(
    "signals",
    [("ctrl-c",), ("SIGTERM",), ("ctrl-c", "ctrl-c")],
    ids=["ctrl-c", "sigterm", "ctrl-c-twice"],
)
def test_stopping_serve_ends_the_flow_runs_in_flight(prefect_server, broker, tmp_path, signals):
    """A run in flight when Ctrl-C stopped serving stayed Running on the server for good
    (Prefect's ``serve`` left on KeyboardInterrupt without cancelling it), so the
    deployment's concurrency limit held back every later run. ``ctrl-c`` is SIGINT to the
    process group, as a terminal sends it; SIGTERM goes to the serving process alone."""
    from prefect.states import StateType

    env = {**prefect_server, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "serve.log"
    proc = _serve(env, log, session=True)
    try:
        _wait(lambda: "roadcast-replay/backfill" in _deployments(env), "the deployments", log)
        with _client(env) as client:
            deployment = client.read_deployment_by_name("roadcast-replay/backfill")
            run = client.create_flow_run_from_deployment(
                deployment.id,
                parameters={  # real time: one step of readings, then five minutes to the next
                    "data": "simulated:sensors=3,hours=1",
                    "speedup": 1.0,
                    "bootstrap": broker.bootstrap,
                    "topic": f"t.stop.{tmp_path.name}",
                },
            )

        def state() -> StateType:
            with _client(env) as client:
                found = client.read_flow_run(run.id).state
            assert found is not None
            return found.type

        _wait(lambda: state() == StateType.RUNNING, "the run to be running", log)
        engines = [pid for pid, cmd in children_of(proc.pid).items() if "prefect.engine" in cmd]
        assert len(engines) == 1, children_of(proc.pid)

        def caught() -> bool:  # the first signal is being handled, or serving stopped
            return b"stopping:" in log.read_bytes() or proc.poll() is not None

        for i, sig in enumerate(signals):
            if i:
                _wait(caught, "the first signal to be caught", log)
                if proc.poll() is not None:
                    break
            if sig == "ctrl-c":
                os.killpg(proc.pid, signal.SIGINT)
            else:
                proc.send_signal(getattr(signal, sig))
        try:
            code = proc.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still serving; log:\n{log.read_text()[-3000:]}") from None
        assert code == 0, log.read_text()[-3000:]
        ended = (StateType.CANCELLED, StateType.CRASHED)
        _wait(lambda: state() in ended, "the run to be cancelled or crashed", log)
        _wait(lambda: not alive(engines[0]), "the run's process to end", log)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # what is left of the group after a failure
        proc.wait()


@pytest.mark.integration
@pytest.mark.slow
def test_serve_ends_with_one_line_when_the_prefect_server_goes_away(tmp_path):
    """A killed server ended serving with an ExceptionGroup as the error line."""
    from tests.conftest import running_prefect_server

    log = tmp_path / "serve.log"
    (tmp_path / "home").mkdir()
    with running_prefect_server(tmp_path / "home") as (env, server):
        # Fewer client retries than Prefect's default 5 (with backoff: minutes), to be quick.
        proc = _serve({**env, "PYTHONUNBUFFERED": "1", "PREFECT_CLIENT_MAX_RETRIES": "1"}, log)
        try:
            _wait(lambda: log.exists() and b"roadcast-forecast" in log.read_bytes(),
                  "the serve banner", log)  # fmt: skip
            server.kill()
            server.wait()
            try:
                code = proc.wait(timeout=WAIT_S)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"still serving; log:\n{log.read_text()[-3000:]}") from None
        finally:
            if proc.poll() is None:
                proc.kill()
    errors = [line for line in log.read_text().splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, log.read_text()[-3000:]
    assert errors[0].startswith("error: serving stopped: the Prefect server at PREFECT_API_URL=")


@pytest.mark.integration
@pytest.mark.slow
def test_serving_says_when_the_prefect_server_hangs_and_when_it_answers_again(tmp_path):
    """A paused server left serving waiting without a word, scheduled runs not started."""
    from tests.conftest import running_prefect_server

    log = tmp_path / "watch.log"
    (tmp_path / "home").mkdir()
    watch = "from flows.deploy import ServerWatch as W, api_url; W(api_url(), every_s=0.2).run()"
    with running_prefect_server(tmp_path / "home") as (env, server):
        with open(log, "wb") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-c", watch], cwd=REPO, env={**env, "PYTHONUNBUFFERED": "1"},
                stdout=sink, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            server.send_signal(signal.SIGSTOP)
            try:
                _wait(lambda: b"warning:" in log.read_bytes(), "the warning", log)
            finally:
                server.send_signal(signal.SIGCONT)
            _wait(lambda: b"answers again" in log.read_bytes(), "the all-clear", log)
        finally:
            proc.kill()
            proc.wait()
    lines = log.read_text().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("warning: the Prefect server at PREFECT_API_URL="), lines
    assert "no answer within" in lines[0] and "no scheduled run starts" in lines[0], lines
    assert lines[1].startswith("the Prefect server at PREFECT_API_URL=http"), lines


def test_a_server_back_from_an_outage_is_reported_to_whoever_serves(monkeypatch):
    """After an outage Prefect's runner stopped cancelling runs and the runs in flight
    crashed on their lost concurrency leases, while serving went on as if nothing had
    happened: the watch now says it to `serve_deployments`, which stops and says so."""
    import flows.deploy
    from flows.deploy import DeployError, ServerWatch

    answers = iter([False, False])  # two checks unanswered, then answered

    def check(url: str) -> None:
        if not next(answers, True):
            raise DeployError("no answer within 10 s")

    monkeypatch.setattr(flows.deploy, "check_server", check)
    lines: list[str] = []
    backs: list[float] = []
    watch = ServerWatch("http://127.0.0.1:9/api", every_s=0.01, say=lines.append,
                        on_back=backs.append)  # fmt: skip
    watch.start()
    try:
        wait_until(lambda: bool(backs), what="the server back")
    finally:
        watch.stop()
        watch.join(WAIT_S)
    assert watch.away_s == backs[0] >= 0
    assert lines[0].startswith("warning: no answer within 10 s") and "answers again" in lines[1]


@pytest.mark.slow
def test_serve_refuses_without_a_prefect_server(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "deploy", "--serve"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=WAIT_S,
    )  # fmt: skip
    assert done.returncode == 2
    assert "PREFECT_API_URL is not set" in done.stderr and "prefect server start" in done.stderr


def test_limit_without_serve_and_an_invalid_prefect_url_are_one_line_errors(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    limit = subprocess.run(
        [sys.executable, "-m", "flows.cli", "deploy", "--limit", "5"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=WAIT_S,
    )  # fmt: skip
    assert limit.returncode == 2 and "only applies with --serve" in limit.stderr
    env.update(PREFECT_API_URL="http://[::1/api")
    bad = subprocess.run(
        [sys.executable, "-m", "flows.cli", "deploy", "--serve"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=WAIT_S,
    )  # fmt: skip
    assert bad.returncode == 1
    # Prefect prints its own lines about its plugins first; roadcast's is one line.
    (line,) = [x for x in bad.stderr.splitlines() if x.startswith("error:")]
    assert "Invalid IPv6 URL" in line and "PREFECT_*" in line


@pytest.mark.integration
def test_a_forced_stop_records_runs_whose_cancelling_it_cut_short(prefect_harness):
    """A second Ctrl-C between the cancelling's kill and its "Cancelled" left the run
    Running on the server for good: its process had ended, so nothing was left to kill
    and the run was not recorded. Runs asked to cancel are recorded Crashed; a run that
    is final already keeps its state."""
    import asyncio

    from prefect import flow, get_client
    from prefect.runner import Runner
    from prefect.states import Completed, Running, StateType

    from flows.deploy import _kill_in_flight

    @flow
    def cut_short() -> None: ...

    async def scenario() -> tuple[StateType, StateType]:
        async with get_client() as client:
            left, done = [await client.create_flow_run(cut_short) for _ in range(2)]
            await client.set_flow_run_state(left.id, Running())
            await client.set_flow_run_state(done.id, Completed())
            await _kill_in_flight(Runner(pause_on_shutdown=False), {left.id, done.id})
            states = [(await client.read_flow_run(run.id)).state for run in (left, done)]
        assert all(states)
        return states[0].type, states[1].type

    assert asyncio.run(scenario()) == (StateType.CRASHED, StateType.COMPLETED)


@pytest.mark.parametrize("debug", [False, True])
def test_flow_runs_of_serve_log_one_line_per_error_unless_debugging(monkeypatch, debug):
    """A flow run that failed on bad input printed two full tracebacks in `deploy --serve`'s
    output: its process logs as roadcast's commands do (the traceback with --debug)."""
    from flows.deploy import quiet_flow_runs

    monkeypatch.delenv("PREFECT_LOGGING_CONFIG_PATH", raising=False)
    monkeypatch.delenv("PREFECT_LOGGING_SETTINGS_PATH", raising=False)
    monkeypatch.setenv("ROADCAST_DEBUG", "1" if debug else "0")
    code = (
        "import logging\n"
        "from prefect.logging.configuration import setup_logging\n"
        "setup_logging()  # as the engine of a flow run does\n"
        "try:\n    1 / 0\n"
        "except ZeroDivisionError:\n"
        "    logging.getLogger('prefect.flow_engine').exception('the run failed')\n"
    )
    with quiet_flow_runs():
        run = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT_S,
            env={**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"},
        )  # fmt: skip
    assert run.returncode == 0 and "the run failed" in run.stderr
    assert ("Traceback" in run.stderr) == debug, run.stderr
    assert "PREFECT_LOGGING_CONFIG_PATH" not in os.environ  # only for the runs inside
