"""Shared fixtures. Real services (broker, Prefect server) are started by fixtures,
never mocked. Tests that need ``../shared/data`` skip on a user's machine without it
but fail under CI (``CI=true``), where a silent skip would hide breakage."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

REPO = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path:
    env = os.environ.get("ROADCAST_DATA_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data sets (``ROADCAST_DATA_DIR``, default ``../shared/data``)."""
    path = _shared_data_dir()
    if not (path / "los-loop" / "los_speed.csv").is_file():
        reason = f"real data not found in {path}; set ROADCAST_DATA_DIR=../shared/data"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI must have the shared data: {reason}")
        pytest.skip(reason)
    return path


# --------------------------------------------------------------------------- Kafka


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory):
    """A running embedded Tansu broker for the whole session (memory storage).

    Tests share it: use ``unique_topic``/``kafka_settings`` for topics and groups of
    their own. A test that needs to stop or restart a broker starts its own
    ``EmbeddedBroker`` instead of touching this one.
    """
    from pipeline.broker import EmbeddedBroker

    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_path=log, handle_sigterm=False) as running:
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
