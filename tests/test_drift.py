"""Drift-triggered retraining: the watcher judges live accuracy from the service's store,
a regime change in a replay emits the drift event, and the automation declared on the
train deployment starts a train flow run; an unreachable Prefect server is retried with
backoff and logged, never raised into the caller."""

from __future__ import annotations

import logging
import socket
import uuid
from pathlib import Path

import pytest

from pipeline.drift import DriftConfig, judge
from tests.service_support import service_thread
from tests.waiting import wait_until

CONFIG = DriftConfig()


def test_the_rule_needs_enough_values_and_a_ratio_above_its_threshold():
    many = CONFIG.min_count
    assert judge(2.1, many, 1.0, None, 0, CONFIG)[0].startswith("live MAE 2.1 is 2.10x")
    assert judge(1.9, many, 1.0, None, 0, CONFIG) == ()
    assert judge(2.1, many - 1, 1.0, None, 0, CONFIG) == ()  # too few to tell
    assert judge(None, 0, 1.0, None, 0, CONFIG) == ()
    # The rolling baseline counts only with enough values of its own.
    assert "rolling baseline" in judge(2.2, many, None, 1.0, many, CONFIG)[0]
    assert judge(2.2, many, None, 1.0, many - 1, CONFIG) == ()
    assert len(judge(9.0, many, 1.0, 1.0, many, CONFIG)) == 2
    with pytest.raises(ValueError, match="above 1"):
        DriftConfig(ratio=0.9)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once closed


class _Records(logging.Handler):
    """Keeps every record it sees, whatever Prefect did to the root logger's handlers."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_an_unreachable_prefect_server_is_retried_with_backoff_and_logged():
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.drift_flow import drift_event, send_event
    from pipeline.drift import Verdict

    verdict = Verdict("ar", "abc123", 3, 9.0, 600, 2.0, None, 0, ("too high",))
    event = drift_event("ar", [verdict], "store.sqlite", "models")
    delays: list[float] = []
    logger = logging.getLogger("roadcast.drift")
    seen = _Records()
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(seen)
    try:
        with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{_closed_port()}/api"}):
            sent = send_event(
                event, attempts=3, first_delay_s=0.5, timeout_s=5, sleep=delays.append
            )
    finally:
        logger.removeHandler(seen)
        logger.setLevel(level)
    assert sent is False
    assert delays == [0.5, 1.0]  # doubling between attempts, none after the last
    retries = [r for r in seen.records if r.getMessage() == "drift_event_not_sent"]
    assert [r.fields["attempt"] for r in retries] == [1, 2, 3]  # type: ignore[attr-defined]
    assert all(r.fields["error"] for r in retries)  # type: ignore[attr-defined]
    assert any(r.getMessage() == "drift_event_failed" for r in seen.records)


def test_no_event_is_sent_when_its_cooldown_cannot_be_recorded(tmp_path):
    """``drift.json`` cannot be written (here it is a folder): the event would be sent
    again on every run, so none is sent and the error names the file. The API URL is a
    closed port: reaching for Prefect would be another error."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.drift_flow import DriftEventError, emit_events
    from pipeline.drift import Verdict

    (tmp_path / "bundles" / "drift.json").mkdir(parents=True)
    verdict = Verdict("ar", "abc123", 3, 9.0, 600, 2.0, None, 0, ("too high",))
    logger = logging.getLogger("roadcast.drift")
    with (
        temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{_closed_port()}/api"}),
        pytest.raises(DriftEventError, match=r"cannot record drift events in .*drift\.json"),
    ):
        emit_events([verdict], "store.sqlite", str(tmp_path), 24.0, logger)
    quiet = Verdict("ar", "abc123", 3, 2.0, 600, 2.0, None, 0)
    assert emit_events([quiet], "store.sqlite", str(tmp_path), 24.0, logger) == {}


def test_the_service_never_talks_to_prefect():
    """The service, the registry and the drift rule import nothing of Prefect: only the
    watcher flow does, so Prefect being away cannot block forecasting."""
    import subprocess
    import sys

    code = (
        "import sys, pipeline.service.loop, pipeline.registry.watch, pipeline.drift; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'prefect'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.integration
def test_a_regime_change_in_a_replay_emits_the_event_and_starts_a_train_run(
    broker, prefect_harness, tmp_path
):
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    from flows.deploy import DEPLOYMENTS, runner_deployments
    from flows.drift_flow import drift_flow
    from flows.train_models import train_models
    from models.forecasters.comparison import TrainPlan
    from pipeline.data.simulate import simulate_network
    from pipeline.data.simulate_regimes import regime_change
    from pipeline.kafka.clients import ensure_topics, make_producer
    from pipeline.kafka.replay import replay
    from pipeline.registry.watch import ServingWatcher, load_serving
    from pipeline.service.config import ServiceConfig
    from pipeline.service.loop import ForecastService
    from pipeline.settings import load_settings

    # Models trained (and served) through the registry, on the first 1.5 days.
    panel = simulate_network(
        sensors=8, days=2, seed=11, incidents_per_day=0.0, faults_per_day=0.0, dropout=0.0
    )
    plan = TrainPlan(models=("persistence", "ar"), window=6, horizon=3, seeds=1, progress=False)
    train_models(panel.slice(0, 430), plan, tmp_path / "out", report=False, log=lambda _: None)
    bundles = tmp_path / "out" / "bundles"
    # The train deployment, with its drift trigger, on the Prefect server.
    (spec,) = [d for d in DEPLOYMENTS if d.entrypoint == "flows.train_flow.train_flow"]
    deployment_id = runner_deployments([spec])[0].apply()

    tag = uuid.uuid4().hex[:8]
    settings = load_settings(
        bootstrap_servers=broker.bootstrap,
        topic_readings=f"t.drift.readings.{tag}",
        topic_dlq=f"t.drift.dlq.{tag}",
        topic_forecasts=f"t.drift.forecasts.{tag}",
        topic_alerts=f"t.drift.alerts.{tag}",
        consumer_group=f"t.drift.group.{tag}",
        store_path=tmp_path / "store.sqlite",
    )
    ensure_topics(settings)
    # The replay: 36 clean ticks, then 36 after the sensors' level shifts and noise grows.
    change = 466
    live = regime_change(panel, change, level=0.8, noise=6.0, seed=2).slice(430, change + 36)
    loaded = load_serving(bundles)
    config = ServiceConfig(allowed_lateness="0min", durable=False, poll_timeout_ms=50)
    service = ForecastService(
        settings, config, loaded.models, versions=loaded.versions,
        watcher=ServingWatcher(bundles, loaded.ids()),
    )  # fmt: skip

    def play(first: int, last: int) -> None:
        producer = make_producer(settings)
        try:
            replay(live.slice(first, last), producer, settings.topic_readings, progress=False)
        finally:
            producer.close()
        wait_until(lambda: service.counters["ticks_closed"] == last, what=f"{last} ticks")

    watch = {"store": str(settings.store_path), "models_dir": str(bundles)}
    with service_thread(service):
        play(0, 36)
        clean = drift_flow(**watch)
        play(36, 72)
        drifted = drift_flow(**watch)

    assert clean["events"] == {}, clean["verdicts"]
    assert all(v["count"] >= CONFIG.min_count for v in clean["verdicts"])  # judged, not skipped
    assert not any(v["reasons"] for v in clean["verdicts"])
    assert drifted["events"] == {"ar": "event sent", "persistence": "event sent"}
    reasons = [r for v in drifted["verdicts"] for r in v["reasons"]]
    assert any("the validation MAE" in r for r in reasons)
    again = drift_flow(**watch)  # the same versions within the cooldown: no second event
    assert set(again["events"].values()) == {"cooling down"}

    def train_runs() -> list:
        with get_client(sync_client=True) as client:
            return client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            )

    wait_until(lambda: len(train_runs()) == 2, what="the automation to start train runs")
    labels = sorted(run.parameters["label"] for run in train_runs())
    assert labels == ["retrained on drift of ar", "retrained on drift of persistence"]
    assert all(run.parameters["data"] == "los-loop" for run in train_runs())
    assert Path(bundles / "drift.json").is_file()


def test_only_versions_of_the_store_s_network_and_step_that_served_it_are_judged(tmp_path):
    """Another network's models were judged on the store's accuracy rows of the same model
    name (a drift event, a retrain), and a version that never served was judged on the
    errors of the version before it."""
    from pipeline.drift import served_models
    from pipeline.registry.versions import served_versions
    from pipeline.service.store import Store
    from pipeline.service.store_reads import StoreReadError
    from pipeline.service.store_rows import Batch, VersionRow
    from tests.registry_support import make_registry

    reg = make_registry(tmp_path, 5)
    versions = served_versions(reg.bundles)  # ar@a and persistence
    step_ms = 300_000
    with Store(tmp_path / "store.sqlite") as store:
        store.sensor_keys(list(reg.panel.sensor_ids))
        served, notes = served_models(store, versions, tick_ms=step_ms)
        assert {s.model for s in served} == {"ar", "persistence"} and not notes  # no record
        other = reg.b.version  # the store records another version of ar than the served one
        store.write(Batch(versions=[VersionRow("ar", other, "second", "run-b", 0, 0)]))
        served, notes = served_models(store, versions, tick_ms=step_ms)
        assert {s.model for s in served} == {"persistence"}
        assert notes == [
            f"ar@{reg.a.version} has not forecast into this store yet (it records other "
            "versions of it): not judged"
        ]
        with pytest.raises(
            ValueError, match="trained on 5-minute steps; the store's ticks are 1-minute"
        ):
            served_models(store, versions, tick_ms=60_000)
    with Store(tmp_path / "other.sqlite") as store:
        store.sensor_keys(["x0", "x1"])
        with pytest.raises(StoreReadError, match="has no sensor"):
            served_models(store, versions, tick_ms=step_ms)


def test_a_served_version_whose_manifest_was_damaged_is_named_not_taken_for_a_new_one(tmp_path):
    """Its content hash stood in for its id: the drift watch said it had not forecast into
    the store yet and judged the other models only."""
    from pipeline.registry.versions import RegistryError, served_versions
    from tests.registry_support import make_registry

    reg = make_registry(tmp_path, 5)
    manifest = reg.a.path / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:20])
    with pytest.raises(RegistryError, match=rf"{reg.a.path} now hashes to \w+ \(edited after"):
        served_versions(reg.bundles)


@pytest.mark.parametrize("emitted", [None, "yesterday", True, [1], float("nan")])
def test_a_drift_state_entry_without_a_readable_time_lets_the_event_through(emitted) -> None:
    from flows.drift_flow import _due

    state = {"ar": {"version": "v1", "emitted_at_s": emitted}}
    assert _due(state, "ar", "v1", 3600.0, 1e9)
    assert _due(state, "ar", "v1", 3600.0, 100.0)  # read as 0 or 1, it would be cooling down
    assert not _due({"ar": {"version": "v1", "emitted_at_s": 1e9 - 60}}, "ar", "v1", 3600.0, 1e9)
    assert _due({"ar": {"version": "v1", "emitted_at_s": 1e9 - 7200}}, "ar", "v1", 3600.0, 1e9)
