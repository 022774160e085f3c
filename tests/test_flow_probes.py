"""Flow runs as a Prefect UI user or a deployment creates them: parameters go through the
Prefect API and the engine runs the flow from the stored run, as a served process or a
worker does. A run the flows cannot do must fail with its reason in one short line of
its state message (what the UI shows), or be refused when it is created."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests import test_flows_live
from tests.test_flows_hostile import filled_store

# The store a real service filled and the session broker, as this module's fixture.
served_world = test_flows_live.live
LONG = "z" * 100_000  # under the Prefect server's limit on a run's parameters (512 KiB)


def _run_from_api(flow: Any, parameters: dict[str, Any]) -> Any:
    """The final state of a run of ``flow`` created through the API with ``parameters``
    and run by the engine from the stored run (no parameters passed in by hand)."""
    from prefect import get_client
    from prefect.flow_engine import run_flow

    with get_client(sync_client=True) as client:
        created = client.create_flow_run(flow, parameters=parameters)
    run_flow(flow, flow_run=created, return_type="state")
    with get_client(sync_client=True) as client:
        return client.read_flow_run(created.id).state


@pytest.mark.parametrize(
    ("which", "name"),
    [
        ("report", "since"),
        ("report", "out"),
        ("report", "store"),
        ("forecast", "store"),
        ("forecast", "models_dir"),
        ("drift", "models_dir"),
    ],
)
def test_a_text_longer_than_any_path_fails_the_run_in_one_short_line(
    which: str, name: str, prefect_harness, tmp_path: Path
) -> None:
    """The value was echoed whole: a 100,000-character state message (and log line)."""
    from flows.drift_flow import drift_flow
    from flows.forecast_flow import forecast_flow
    from flows.report_flow import report_flow

    store = filled_store(tmp_path / "s.sqlite")
    base: dict[str, Any] = {"store": str(store), "models_dir": str(tmp_path / "models")}
    flow = {"report": report_flow, "forecast": forecast_flow, "drift": drift_flow}[which]
    if which == "report":
        base["out"] = str(tmp_path / "report")
    if which == "forecast":
        base["publish_to_kafka"] = False
    state = _run_from_api(flow, {**base, name: LONG})
    assert state.is_failed()
    message = state.message or ""
    assert f"{name} is 100,000 characters long" in message, message[:300]
    assert "\n" not in message and len(message) < 400
    assert not (tmp_path / "report").exists()


def test_a_served_deployment_refuses_a_parameter_its_flow_does_not_take(
    prefect_server: dict[str, str],
) -> None:
    """Created all the same, the run crashed in the engine ("Process exited with status
    code: 1"), the UI showing no reason."""
    from prefect import get_client
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.deploy import DEPLOYMENTS, runner_deployments

    report = next(s for s in DEPLOYMENTS if s.entrypoint.endswith("report_flow"))
    with temporary_settings(updates={PREFECT_API_URL: prefect_server["PREFECT_API_URL"]}):
        (deployment,) = runner_deployments([report])
        deployment_id = deployment.apply()
        with get_client(sync_client=True) as client:
            with pytest.raises(PrefectHTTPStatusError, match=r"'sinse' was unexpected"):
                client.create_flow_run_from_deployment(deployment_id, parameters={"sinse": "6h"})
            run = client.create_flow_run_from_deployment(deployment_id, parameters={"since": "6h"})
            assert run.parameters["since"] == "6h"
            client.delete_flow_run(run.id)


def test_a_file_name_too_long_fails_at_once_not_after_the_retries(
    prefect_harness, tmp_path: Path
) -> None:
    """A name longer than the file system allows was retried as a passing I/O failure:
    the run failed the same way after two more tries and ten seconds."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.report_flow import report_flow

    store = tmp_path / ("s" * 300 + ".sqlite")  # one name over 255 bytes
    state = _run_from_api(report_flow, {"store": str(store), "out": str(tmp_path / "report")})
    assert state.is_failed() and "File name too long" in (state.message or "")
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
    assert tasks and all(t.run_count <= 1 for t in tasks), [(t.name, t.run_count) for t in tasks]


# --------------------------------------------------------------------------- delivery
# The forecast flow against a store filled by the real service and the session broker.


def _without_flow_forecast(settings: Any) -> int:
    """The store's newest tick, with persistence's forecast of it deleted (as if the
    service ran only the champion, ``--only ar``): the flow forecasts persistence."""
    from pipeline.service.store import Store

    with Store(settings.store_path) as store:
        tick = store.last_ticks(1)[0].ts_ms
        persistence = store.model_key("persistence")
        with store._transaction() as db:
            sql = "DELETE FROM forecast_blocks WHERE model=? AND issued_at=?"
            db.execute(sql, (persistence, tick))
    return tick


def _copies(settings: Any, topic: str, tick_ms: int) -> dict[tuple[str, str], int]:
    """How many records of each (model, sensor) issued at ``tick_ms`` are on ``topic``."""
    from collections import Counter

    from pipeline.kafka.schema import decode_forecast
    from tests.service_support import read_topic

    copies: Counter[tuple[str, str]] = Counter()
    for record in read_topic(settings, topic):
        message = decode_forecast(record.value)
        if int(message.issued_at.timestamp() * 1000) == tick_ms:
            copies[(message.model, message.sensor)] += 1
    return dict(copies)


def _stored(settings: Any, model: str, tick_ms: int) -> bool:
    from pipeline.service.store import Store

    with Store(settings.store_path, readonly=True) as store:
        none = np.empty(0, np.int64)
        return tick_ms in store.recent_forecasts(model, tick_ms, none, 1)[0]


@pytest.mark.integration
def test_two_runs_racing_for_one_tick_publish_it_once(
    served_world: Any, prefect_harness: None, monkeypatch: pytest.MonkeyPatch, unique_topic: Any
) -> None:
    """Both runs checked the store before either stored (a served and a `prefect deploy`
    deployment each have their own concurrency limit): both published the tick."""
    import flows.forecast_flow as module

    world, settings = served_world
    topic = unique_topic("forecasts")
    monkeypatch.setenv("ROADCAST_TOPIC_FORECASTS", topic)
    tick = _without_flow_forecast(settings)
    monkeypatch.setattr(module, "already_forecast", lambda *_: ["ar"])  # the service's only
    run = {"models_dir": str(world.bundles), "store": str(settings.store_path)}
    first = module.forecast_flow(**run, bootstrap=settings.bootstrap_servers)
    second = module.forecast_flow(**run, bootstrap=settings.bootstrap_servers)
    sensors = world.live.sensor_ids
    assert first["models"] == {"persistence": {"published": len(sensors), "skipped": 0}}
    assert second["models"] == {} and second["stored_rows"] == 0
    assert second["already_forecast"] == ["ar", "persistence"]
    assert _copies(settings, topic, tick) == {("persistence", s): 1 for s in sensors}


@pytest.mark.integration
def test_a_store_write_that_fails_publishes_nothing_and_the_next_run_publishes_once(
    served_world: Any, prefect_harness: None, monkeypatch: pytest.MonkeyPatch, unique_topic: Any
) -> None:
    """The flow published, then the store write failed (a full disk): the run failed
    with the forecasts on Kafka but not in the store, and the next run published them
    again."""
    import sqlite3

    from flows.forecast_flow import forecast_flow
    from pipeline.service.store import Store

    world, settings = served_world
    topic = unique_topic("forecasts")
    monkeypatch.setenv("ROADCAST_TOPIC_FORECASTS", topic)
    tick = _without_flow_forecast(settings)
    opened = Store.__init__

    def full_disk(self: Store, path: Any, **options: Any) -> None:
        if not options.get("readonly"):
            raise sqlite3.OperationalError("database or disk is full")
        opened(self, path, **options)

    run = {"models_dir": str(world.bundles), "store": str(settings.store_path)}
    with monkeypatch.context() as patch:
        patch.setattr(Store, "__init__", full_disk)
        with pytest.raises(sqlite3.OperationalError, match="disk is full"):
            forecast_flow(**run, bootstrap=settings.bootstrap_servers)
    assert _copies(settings, topic, tick) == {}
    again = forecast_flow(**run, bootstrap=settings.bootstrap_servers)
    sensors = world.live.sensor_ids
    assert again["models"] == {"persistence": {"published": len(sensors), "skipped": 0}}
    assert _copies(settings, topic, tick) == {("persistence", s): 1 for s in sensors}
    assert _stored(settings, "persistence", tick)


@pytest.mark.integration
def test_a_publish_that_fails_leaves_the_forecasts_to_the_next_run(
    served_world: Any, prefect_harness: None, monkeypatch: pytest.MonkeyPatch, unique_topic: Any
) -> None:
    """No broker: the forecasts this run stored stay stored, listed as unpublished, and
    the next run publishes them first, once."""
    from flows.forecast_flow import forecast_flow
    from pipeline.kafka.clients import KafkaUnavailable
    from pipeline.service.store import Store

    world, settings = served_world
    topic = unique_topic("forecasts")
    monkeypatch.setenv("ROADCAST_TOPIC_FORECASTS", topic)
    tick = _without_flow_forecast(settings)
    run = {"models_dir": str(world.bundles), "store": str(settings.store_path)}
    with pytest.raises(KafkaUnavailable):
        forecast_flow(**run, bootstrap="127.0.0.1:1")
    assert _stored(settings, "persistence", tick) and _stored(settings, "ar", tick)
    with Store(settings.store_path, readonly=True) as store:
        assert store.unpublished_forecasts() == [("persistence", tick)]
    again = forecast_flow(**run, bootstrap=settings.bootstrap_servers)
    assert again["already_forecast"] == ["ar", "persistence"]
    sensors = world.live.sensor_ids
    assert _copies(settings, topic, tick) == {("persistence", s): 1 for s in sensors}
    with Store(settings.store_path, readonly=True) as store:
        assert store.unpublished_forecasts() == []
    forecast_flow(**run, bootstrap=settings.bootstrap_servers)  # nothing left to publish
    assert _copies(settings, topic, tick) == {("persistence", s): 1 for s in sensors}


@pytest.mark.integration
def test_a_run_that_ends_between_storing_and_publishing_leaves_them_to_the_next_run(
    served_world: Any, prefect_harness: None, monkeypatch: pytest.MonkeyPatch, unique_topic: Any
) -> None:
    """The run was killed after its store transaction (no exception handler ran): the
    next run publishes what it stored, as it stored it, once."""
    import flows.forecast_flow as module
    from pipeline.service.store import Store

    world, settings = served_world
    topic = unique_topic("forecasts")
    monkeypatch.setenv("ROADCAST_TOPIC_FORECASTS", topic)
    tick = _without_flow_forecast(settings)
    run = {"models_dir": str(world.bundles), "store": str(settings.store_path)}

    def killed(*_: Any, **__: Any) -> None:
        raise SystemExit("killed")  # what a SIGTERM's handler raises

    with monkeypatch.context() as patch:
        patch.setattr(module, "publish", killed)
        with pytest.raises(BaseException, match="killed"):
            module.forecast_flow(**run, bootstrap=settings.bootstrap_servers)
    assert _copies(settings, topic, tick) == {}
    with Store(settings.store_path, readonly=True) as store:
        assert store.unpublished_forecasts() == [("persistence", tick)]
        names, (stored_mean, _, _) = store.forecast_block("persistence", tick)
    module.forecast_flow(**run, bootstrap=settings.bootstrap_servers)
    sensors = world.live.sensor_ids
    assert _copies(settings, topic, tick) == {("persistence", s): 1 for s in sensors}
    published = _published_means(settings, topic, tick)
    for k, name in enumerate(names):
        np.testing.assert_allclose(published[name], stored_mean[k], rtol=1e-6)


@pytest.mark.integration
def test_a_listed_forecast_the_store_pruned_is_named_once_and_taken_off_the_list(
    served_world: Any,
    prefect_harness: None,
    monkeypatch: pytest.MonkeyPatch,
    unique_topic: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    from flows.forecast_flow import forecast_flow
    from pipeline.service.store import Store

    world, settings = served_world
    monkeypatch.setenv("ROADCAST_TOPIC_FORECASTS", unique_topic("forecasts"))
    tick = _without_flow_forecast(settings)
    with Store(settings.store_path) as store:  # listed, its block since pruned
        key = store.model_key("persistence")
    with Store(settings.store_path) as store, store._transaction() as db:
        db.execute("INSERT INTO unpublished VALUES(?, ?)", (key, tick - 1))
    run = {"models_dir": str(world.bundles), "store": str(settings.store_path)}
    with caplog.at_level(logging.WARNING):
        forecast_flow(**run, bootstrap=settings.bootstrap_servers)
    lines = [r.getMessage() for r in caplog.records if "no longer holds them" in r.getMessage()]
    assert len(lines) == 1 and "persistence at " in lines[0], lines
    with Store(settings.store_path, readonly=True) as store:
        assert store.unpublished_forecasts() == []


def _published_means(settings: Any, topic: str, tick_ms: int) -> dict[str, np.ndarray]:
    """Each sensor's published mean forecast issued at ``tick_ms`` on ``topic``."""
    from pipeline.kafka.schema import decode_forecast
    from tests.service_support import read_topic

    out = {}
    for record in read_topic(settings, topic):
        message = decode_forecast(record.value)
        if int(message.issued_at.timestamp() * 1000) == tick_ms:
            out[message.sensor] = np.asarray(message.yhat, np.float64)
    return out


@pytest.mark.parametrize(
    "param",
    [
        "train.epochs=99999999999999999999",
        "train.window=9223372036854775808",
        "train.epoch_windows=99999999999999999999",
        "replay.limit=99999999999999999999",
        "report.horizon=99999999999999999999",
    ],
)
def test_a_whole_number_beyond_64_bits_is_refused_at_deploy_time(param: str) -> None:
    """Registered as given: train.window failed every scheduled run, train.epochs was
    shown rounded in the UI and no run could count that far."""
    from flows.deploy import DeployError, customised

    target = param.partition("=")[0]
    with pytest.raises(DeployError) as refused:
        customised(params=[param])
    message = str(refused.value)
    assert message.startswith(f"--param {target}=") and "\n" not in message
    customised(params=[f"{target}=9223372036854775807"])  # the largest is taken
