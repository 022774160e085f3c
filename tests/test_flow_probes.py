"""Flow runs as a Prefect UI user or a deployment creates them: parameters go through the
Prefect API and the engine runs the flow from the stored run, as a served process or a
worker does. A run the flows cannot do must fail with its reason in one short line of
its state message (what the UI shows), or be refused when it is created."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.test_flows_hostile import filled_store

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
