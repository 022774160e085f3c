"""``train_flow`` end to end on a small simulated network, against a Prefect server:
one task per model, bundles, champion by validation, report, artifacts; and the GPU
training slot (a Prefect global concurrency limit)."""

from __future__ import annotations

import itertools
import json
import threading
import time

import pytest

from flows.artifacts import KEYS
from models.forecasters.registry import load_model
from pipeline.model_dir import read_champion, read_network, validation_score
from tests.waiting import WAIT_S

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DATA = "simulated:sensors=5,days=2,seed=4,incidents=0,faults=0"


@pytest.fixture(scope="module")
def trained(prefect_harness, tmp_path_factory):
    from flows.train_flow import train_flow

    out = tmp_path_factory.mktemp("train-flow")
    state = train_flow(
        data=DATA, models=["persistence", "ar", "gru"], window=6, horizon=6, seeds=2,
        epochs=2, device="cpu", out=str(out), return_state=True,
    )  # fmt: skip
    return out, state


def _client():
    from prefect import get_client

    return get_client(sync_client=True)


def _latest_artifact(key: str):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with _client() as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    assert found, f"no artifact {key}"
    return max(found, key=lambda a: a.created)


def test_flow_writes_bundles_metrics_and_promotes_the_best_validation_model(trained):
    out, state = trained
    assert state.is_completed()
    result = state.result()
    document = json.loads((out / "metrics.json").read_text())
    assert result["document"] == document
    assert set(document["models"]) == {"persistence", "ar", "gru"}
    assert document["models"]["gru"]["seeds"] == 2
    for name in document["models"]:
        assert load_model(out / "bundles" / name).name == name
    champion = read_champion(out)
    assert champion is not None and result["champion"] == champion.champion
    scores = {n: validation_score(e) for n, e in document["models"].items()}
    assert champion.champion == min((s, n) for n, s in scores.items() if s is not None)[1]
    assert champion.scores == pytest.approx(scores)
    assert set(champion.challengers) == set(document["models"]) - {champion.champion}
    network = read_network(out)
    assert network is not None and network.coords is not None
    assert len(network.sensor_ids) == 5 and network.coords.shape == (5, 2)


def test_one_task_per_model_fit_and_backtest(trained):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    _, state = trained
    with _client() as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
    names = {r.name for r in runs}
    models = ("persistence", "ar", "gru")
    assert {f"fit-{m}" for m in models} | {f"backtest-{m}" for m in models} <= names
    steps = {"load-data", "split", "compare", "write-bundles", "promote-champion", "write-report"}
    assert {n.rsplit("-", 1)[0] for n in names} >= steps  # runs are "<task>-<3 hex>"
    assert all(r.state.is_completed() for r in runs)
    # one after the other: every fit ends before the next model's fit starts
    fits = sorted((r for r in runs if r.name.startswith("fit-")), key=lambda r: r.start_time)
    for before, after in itertools.pairwise(fits):
        assert before.end_time <= after.start_time


def test_report_and_artifacts(trained):
    out, _ = trained
    page = (out / "report.html").read_text()
    for section in ("Model comparison (test part)", "Error by horizon",
                    "best and worst sensor", "Error across the network",
                    "What produced this report"):  # fmt: skip
        assert section in page, section
    assert "Published reference" not in page  # only for los-loop
    md = (out / "report.md").read_text()
    assert "| model | 15 min MAE | 15 min RMSE | 15 min MAPE % | 30 min MAE |" in md
    for name in ("error_by_horizon", "forecasts", "network_map"):
        assert (out / "figures" / f"{name}.png").read_bytes().startswith(b"\x89PNG")
    table = _latest_artifact(KEYS["train_comparison"]).data
    rows = table if isinstance(table, list) else json.loads(table)
    assert {r["model"] for r in rows} == {"persistence", "ar", "gru"}
    assert "15 min MAPE %" in rows[0]
    champion = _latest_artifact(KEYS["champion"]).data
    rows = champion if isinstance(champion, list) else json.loads(champion)
    assert [r["role"] for r in rows].count("champion") == 1
    assert "Model comparison" in _latest_artifact(KEYS["train_report"]).data


def test_the_default_models_leave_out_those_the_data_cannot_support(prefect_harness, tmp_path):
    """Half a day of 5-minute data holds no day for the seasonal model, a CSV without an
    adjacency no graph: by default such models are left out with their reason; asked for
    by name, it is an error."""
    import pandas as pd

    from flows.train_flow import train_flow
    from pipeline.data.datasets import load_dataset

    short = "simulated:sensors=3,days=0.5,seed=4,incidents=0,faults=0"
    args = {"window": 6, "horizon": 6, "seeds": 1, "epochs": 1, "device": "cpu"}
    result = train_flow(data=short, out=str(tmp_path / "default"), **args)
    assert set(result["document"]["models"]) == {"persistence", "ar", "lstm", "gru", "tgclstm"}
    with pytest.raises(ValueError, match="seasonal: its input window of 288 steps"):
        train_flow(data=short, models="seasonal,ar", out=str(tmp_path / "asked"), **args)
    # a CSV without --adjacency: the graph model is left out (it was refused, so no default
    # run of a user's CSV without a graph could train)
    panel = load_dataset(short)
    frame = pd.DataFrame(panel.values, columns=list(panel.sensor_ids))
    frame.insert(0, "timestamp", panel.timestamps.strftime("%Y-%m-%dT%H:%M:%SZ"))
    frame.to_csv(tmp_path / "graphless.csv", index=False)
    csv = f"csv:{tmp_path / 'graphless.csv'}"
    result = train_flow(data=csv, out=str(tmp_path / "graphless"), **args)
    assert set(result["document"]["models"]) == {"persistence", "ar", "lstm", "gru"}


def test_bad_parameters_fail_with_the_fix(prefect_harness, tmp_path):
    import numpy as np
    import pandas as pd

    from flows.train_flow import train_flow

    with pytest.raises(ValueError, match="unknown model"):
        train_flow(data=DATA, models="arima", out=str(tmp_path))
    # a CSV data set has no road graph: tgclstm is refused before anything is fitted
    stamps = pd.date_range("2024-03-01", periods=200, freq="5min", tz="UTC")
    values = np.random.default_rng(0).normal(60, 3, (200, 3))
    frame = pd.DataFrame(values, columns=["a", "b", "c"])
    frame.insert(0, "timestamp", stamps.strftime("%Y-%m-%dT%H:%M:%SZ"))
    frame.to_csv(tmp_path / "speeds.csv", index=False)
    with pytest.raises(ValueError, match="needs a road graph"):
        train_flow(data=f"csv:{tmp_path / 'speeds.csv'}", models="tgclstm", out=str(tmp_path))
    assert not (tmp_path / "bundles").exists()
    # a file where the report's folder goes failed after the versions were written, retried
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "figures").write_text("")
    with pytest.raises(FileExistsError, match="figures is a file where the run writes its folder"):
        train_flow(data=DATA, models="persistence", out=str(blocked))
    assert sorted(p.name for p in blocked.iterdir()) == ["figures"]
    # an empty out trained into ROADCAST_MODEL_DIR's default and promoted there
    with pytest.raises(ValueError, match="--out is empty"):
        train_flow(data=DATA, models="persistence", out="")
    # a label that cannot print on one line was refused only after training
    with pytest.raises(ValueError, match="holds control characters"):
        train_flow(data=DATA, models="persistence", out=str(tmp_path / "l"), label="a/b\nc")
    assert not (tmp_path / "l").exists()


def test_gpu_slot_is_a_global_limit_that_serialises(no_gpu_limit):
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound

    from flows.gpu import GPU_LIMIT, ensure_gpu_limit, training_slot

    # CPU fits never touch (or create) the GPU limit
    with training_slot("cpu"), _client() as client, pytest.raises(ObjectNotFound):
        client.read_global_concurrency_limit_by_name(GPU_LIMIT)
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with training_slot("cuda"):
            held.set()
            release.wait(WAIT_S)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(WAIT_S), "the first fit never got the GPU slot"
        with _client() as client:
            limit = client.read_global_concurrency_limit_by_name(GPU_LIMIT)
        assert limit.limit == 1 and limit.active_slots == 1
        began = time.monotonic()
        with pytest.raises(TimeoutError), training_slot("cuda", timeout_s=2):
            pass
        assert time.monotonic() - began >= 1.5
    finally:
        release.set()
        thread.join(WAIT_S)
    with training_slot("cuda", timeout_s=WAIT_S):  # free again once the first fit is done
        pass
    with _client() as client:
        client.update_global_concurrency_limit(GPU_LIMIT, GlobalConcurrencyLimitUpdate(limit=2))
    assert ensure_gpu_limit() is False  # an operator's setting is never overwritten
    with _client() as client:
        assert client.read_global_concurrency_limit_by_name(GPU_LIMIT).limit == 2


def test_tune_runs_a_task_per_model_and_per_trial(prefect_harness, tmp_path):
    """``train_flow(tune=...)``: the chosen settings reach metrics.json and the bundle; each
    model's search is a task and each trial a task (so a work pool could fan them out)."""
    from flows.train_flow import train_flow

    out = tmp_path / "tuned"
    result = train_flow(
        data=DATA, models=["persistence", "lstm"], window=6, horizon=3, seeds=1, epochs=2,
        device="cpu", out=str(out), tune="2",
    )  # fmt: skip
    tuning = result["document"]["tuning"]
    assert set(tuning) == {"lstm"} and tuning["lstm"]["trials"] == 2
    config = json.loads((out / "bundles" / "lstm" / "config.json").read_text())
    assert config["hyper"]["hidden"] == tuning["lstm"]["params"]["hidden"]
    names = [t.name for t in _client().read_task_runs()]
    assert "tune-lstm" in names and sum(n.startswith("trial-lstm-") for n in names) >= 2


def test_the_flow_registers_versions_under_its_run_and_serves_them(trained):
    """Every model's bundle becomes a version labelled with the run; the serving set is
    exactly the run's versions. With ``promote=False`` a run only registers."""
    from flows.train_flow import train_flow
    from pipeline.model_dir import read_serving
    from pipeline.registry.versions import list_versions, versions_of_run

    out, state = trained
    run_id = str(state.state_details.flow_run_id)
    ran = versions_of_run(out / "bundles", run_id)
    assert set(ran) == {"persistence", "ar", "gru"}
    serving = read_serving(out)
    assert serving is not None and serving.models == {m: v.version for m, v in ran.items()}
    assert serving.champion is not None and serving.reason == f"train run {run_id}"
    assert all(v.label.startswith("simulated:") for v in ran.values())
    train_flow(
        data=DATA, models=["persistence", "seasonal"], window=6, horizon=6, seeds=1,
        device="cpu", out=str(out), label="candidate", promote=False,
    )  # fmt: skip
    assert read_serving(out) == serving
    assert [v.label for v in list_versions(out / "bundles", "seasonal")] == ["candidate"]


def test_a_run_whose_report_fails_serves_nothing_new(prefect_harness, tmp_path, monkeypatch):
    """The report was written after the promotion: a report that failed (a figure that
    could not be drawn) left the failed run's models serving."""
    import flows.train_flow as train_module
    from flows.train_flow import train_flow
    from pipeline.registry.versions import list_versions

    def broken(*args, **kwargs):
        raise RuntimeError("the report failed")

    monkeypatch.setattr(train_module, "train_report", broken)
    with pytest.raises(RuntimeError, match="the report failed"):
        train_flow(
            data=DATA, models=["persistence"], window=6, horizon=6, device="cpu",
            out=str(tmp_path),
        )  # fmt: skip
    assert list_versions(tmp_path / "bundles", "persistence")  # the version is registered...
    assert not (tmp_path / "bundles" / "serving.json").exists()  # ...and none serves
    assert read_champion(tmp_path) is None
    assert not (tmp_path / "metrics.json").exists()  # nor is the failed run's record shown
    assert [p.name for p in tmp_path.iterdir()] == ["bundles"]  # no stage left behind
