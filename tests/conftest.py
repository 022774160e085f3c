"""Shared fixtures and the suite's Hypothesis profile. Real services (broker, Prefect
server) are started by fixtures, never mocked. Tests that need ``../shared/data`` skip
on a user's machine without it but fail under CI (``CI=true``), where a silent skip
would hide breakage. Waits use :mod:`tests.waiting`: a slow machine waits longer, it
does not fail."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.waiting import WAIT_S, wait_until

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# Tests run tiny models on a few shared cores: torch's intra-op threads spin-wait when
# the cores are busy and made a small GRU step ~10x slower with 2 threads than with 1.
# Set before torch is imported; override with OMP_NUM_THREADS.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# `roadcast serve` listens on ROADCAST_METRICS_PORT (9478) by default; tests run services
# side by side, so their endpoints are off unless a test turns them on (on a free port).
os.environ.setdefault("ROADCAST_METRICS_ENABLED", "false")

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# One Hypothesis profile for the suite: no health check or deadline that depends on the
# machine's speed; the same examples on every CI run, fresh ones on a developer's machine.
settings.register_profile(
    "roadcast",
    max_examples=100,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.large_base_example,
        HealthCheck.data_too_large,
    ],
    derandomize=IN_CI,
    database=None if IN_CI else settings.default.database,
    print_blob=True,
)
settings.load_profile("roadcast")


def pytest_configure(config: pytest.Config) -> None:
    """Create the logging handlers that Prefect and torch create on first use, once,
    before any test runs. Such a handler writes to the ``sys.stderr`` of the moment it
    was made; made inside a Typer ``CliRunner`` invoke (a command imports Prefect or torch
    lazily), that is the runner's stream, closed after the invoke, and every later log
    record of a flow failed, Prefect's console handler recursing into itself through the
    flow's print capture (a RecursionError in whichever flow test ran next). Upstream, the
    same stale-stream handlers: PrefectHQ/prefect#14483, #16626."""
    import torch  # noqa: F401  (its loggers get their handlers on import)
    from prefect.logging.configuration import setup_logging

    setup_logging()


def skip_locally_fail_in_ci(reason: str) -> None:
    """Skip the test with ``reason`` on a user's machine; fail it under CI, where a
    missing prerequisite (data, a Debian package) would otherwise hide breakage."""
    if IN_CI:
        pytest.fail(f"CI must have it: {reason}")
    pytest.skip(reason)


def _shared_data_dir() -> Path:
    env = os.environ.get("ROADCAST_DATA_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data sets (``ROADCAST_DATA_DIR``, default ``../shared/data``)."""
    path = _shared_data_dir()
    if not (path / "los-loop" / "los_speed.csv").is_file():
        skip_locally_fail_in_ci(
            f"real data not found in {path}; set ROADCAST_DATA_DIR=../shared/data"
        )
    return path


# --------------------------------------------------------------------------- Kafka


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory):
    """A running embedded Tansu broker for the whole session (memory storage).

    Tests share it: use ``unique_topic``/``kafka_settings`` for topics and groups of
    their own. A test that needs to stop or restart a broker starts its own
    ``EmbeddedBroker`` instead of touching this one.
    """
    from pipeline.kafka.broker import EmbeddedBroker

    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_path=log, handle_sigterm=False, startup_timeout_s=WAIT_S) as running:
        yield running


@pytest.fixture
def unique_topic(request: pytest.FixtureRequest):
    """``unique_topic(label="")`` -> a Kafka topic name no other test uses."""
    import re
    import uuid

    base = re.sub(r"[^A-Za-z0-9._-]", "-", request.node.name)[:80]

    def make(label: str = "") -> str:
        parts = ["t", base, label, uuid.uuid4().hex[:8]]
        return ".".join(p for p in parts if p)

    return make


@pytest.fixture
def kafka_settings(broker, unique_topic):
    """Settings pointing at the session ``broker``, with this test's own topics and group."""
    from pipeline.settings import load_settings

    if not broker.is_running():  # a test killed it: give the next one a broker again
        broker.start()
    return load_settings(
        bootstrap_servers=broker.bootstrap,
        topic_readings=unique_topic("readings"),
        topic_dlq=unique_topic("dlq"),
        topic_forecasts=unique_topic("forecasts"),
        topic_alerts=unique_topic("alerts"),
        consumer_group=unique_topic("group"),
    )


# --------------------------------------------------------------------------- anomalies


@pytest.fixture(scope="session")
def daily_series():
    """``daily_series(days, seed, anomalies=())`` -> ``(panel, spans)``: one sensor on a
    5-minute grid, ``60 + 10 sin(day) + N(0, 1)``. ``anomalies`` are ``(kind, start,
    length)`` with kind ``spike`` (+15 at one step), ``shift`` (-10 for ``length`` steps)
    or ``context`` (the values of 12 hours earlier: normal levels at the wrong time);
    ``spans`` maps each kind to its ``(start, stop)`` steps."""
    import numpy as np
    import pandas as pd

    from models.panel import SensorPanel

    def make(days: int, seed: int, anomalies=()):
        rng = np.random.default_rng(seed)
        n = days * 288
        x = 60 + 10 * np.sin(2 * np.pi * np.arange(n) / 288) + rng.normal(0, 1, n)
        spans = {}
        for kind, start, length in anomalies:
            if kind == "spike":
                x[start] += 15
                length = 1
            elif kind == "shift":
                x[start : start + length] -= 10
            elif kind == "context":
                x[start : start + length] = x[start - 144 : start - 144 + length]
            else:
                raise ValueError(f"unknown anomaly kind {kind!r}")
            spans[kind] = (start, start + length)
        stamps = pd.date_range("2024-03-04", periods=n, freq="5min", tz="UTC")
        return SensorPanel.from_values(x[:, None], stamps, ("s0",)), spans

    return make


# --------------------------------------------------------------------------- Prefect


@pytest.fixture(scope="session")
def prefect_harness():
    """A temporary Prefect server (SQLite in a temp dir) for the whole session: flows
    called in tests run against it, and ``prefect.get_client()`` reads it back. Started
    once (about 15 s), only by the tests that ask for it."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=int(WAIT_S)):
        yield


@pytest.fixture
def no_gpu_limit(prefect_harness):
    """The session server without the ``gpu`` global concurrency limit, before and after
    the test: tests that create or change it stay independent of their order."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    from flows.gpu import GPU_LIMIT

    def drop() -> None:
        with get_client(sync_client=True) as client, contextlib.suppress(ObjectNotFound):
            client.delete_global_concurrency_limit_by_name(GPU_LIMIT)

    drop()
    yield
    drop()


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory):
    """A real ``prefect server start`` process (own PREFECT_HOME, SQLite, a free port,
    no UI, no scheduler: tests check what is registered, not when it fires).

    Yields the environment a subprocess needs to talk to it (``PREFECT_API_URL`` set).
    """
    with running_prefect_server(tmp_path_factory.mktemp("prefect-home")) as (env, _):
        yield env


@contextlib.contextmanager
def running_prefect_server(home: Path):
    """:func:`prefect_server`'s server in ``home``, for a test that owns it: yields its
    environment and its process."""
    import socket
    import subprocess
    import sys
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ)
    for key in [k for k in env if k.startswith("PREFECT_")]:
        del env[key]  # the harness of other tests must not leak into this server
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PREFECT_UI_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="false",
    )
    log = home / "server.log"
    args = [
        sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
        "--port", str(port), "--no-scheduler", "--no-ui",
    ]  # fmt: skip
    with open(log, "wb") as sink:
        proc = subprocess.Popen(args, env=env, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/api"

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=WAIT_S) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    try:
        wait_until(
            up, what="the Prefect server", poll_s=0.5, details=lambda: log.read_text()[-2000:]
        )
        yield {**env, "PREFECT_API_URL": url}, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- Prometheus


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    """The ``prometheus`` executable (Debian package ``prometheus``)."""
    from tests.prometheus_support import prometheus_binary

    path = prometheus_binary()
    if path is None:
        skip_locally_fail_in_ci("prometheus not found; `apt-get install prometheus`")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def promtool_bin() -> str:
    """``promtool``, which the ``prometheus`` package ships."""
    from tests.prometheus_support import promtool_binary

    path = promtool_binary()
    if path is None:
        skip_locally_fail_in_ci("promtool not found; `apt-get install prometheus`")
    assert path is not None
    return path


# --------------------------------------------------------------------------- Alertmanager


@pytest.fixture(scope="session")
def alertmanager_bin() -> str:
    """The ``prometheus-alertmanager`` executable (Debian package of that name)."""
    from tests.alertmanager_support import alertmanager_binary

    path = alertmanager_binary()
    if path is None:
        skip_locally_fail_in_ci(
            "prometheus-alertmanager not found; `apt-get install prometheus-alertmanager`"
        )
    assert path is not None
    return path


@pytest.fixture(scope="session")
def am_notifications():
    """An HTTP server recording the webhook notifications of the session's Alertmanager
    (path ``/am``)."""
    from tests.alertmanager_support import HttpRecorder

    recorder = HttpRecorder()
    yield recorder
    recorder.close()


@pytest.fixture(scope="session")
def alertmanager(alertmanager_bin, am_notifications, tmp_path_factory):
    """A real Alertmanager for the session (free port, temp config and storage), routing
    every alert to ``am_notifications`` with short group and repeat intervals."""
    from tests.alertmanager_support import Alertmanager

    root = tmp_path_factory.mktemp("alertmanager")
    manager = Alertmanager(alertmanager_bin, root, f"{am_notifications.url}/am").start()
    yield manager
    manager.stop()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ROADCAST_* setting and no roadcast.toml from the developer's environment."""
    for name in list(os.environ):
        if name.startswith("ROADCAST_") and name != "ROADCAST_TEST_WAIT_S":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
