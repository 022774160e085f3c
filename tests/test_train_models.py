"""``train_models`` (the comparison protocol without Prefect) and ``roadcast train`` /
``evaluate``: metrics.json shape, bundles, champion, report, CLI."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.train_models import train_models
from models.forecasters.comparison import TrainPlan, evaluate_bundle, parse_models
from models.forecasters.registry import load_model
from models.panel import SensorPanel


def toy_panel(n: int = 400, nodes: int = 4) -> SensorPanel:
    rng = np.random.default_rng(0)
    t = np.arange(n)
    values = 50 + 8 * np.sin(2 * np.pi * t / 24)[:, None] + rng.normal(0, 1, (n, nodes))
    values[rng.random(values.shape) < 0.05] = np.nan
    stamps = pd.date_range("2024-03-01", periods=n, freq="1h", tz="UTC")
    return SensorPanel.from_values(
        values.astype(np.float32), stamps, [f"s{i}" for i in range(nodes)], name="toy"
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, SensorPanel]:
    out = tmp_path_factory.mktemp("train")
    panel = toy_panel()
    plan = TrainPlan(
        models=("persistence", "seasonal", "ar", "gru"),
        window=6,
        horizon=6,
        seeds=2,
        epochs=2,
        device="cpu",
        progress=False,
        horizons=(3, 6),
    )
    document = train_models(panel, plan, out, log=lambda _: None)
    return out, document, panel


def test_metrics_json_has_the_shape_of_the_issue(run):
    out, document, _ = run
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == document
    assert on_disk["dataset"] == "toy" and on_disk["window"] == 6 and on_disk["horizon"] == 6
    assert set(on_disk["split"]) == {"train", "valid", "test"}
    assert set(on_disk["models"]) == {"persistence", "seasonal", "ar", "gru"}
    for name, entry in on_disk["models"].items():
        for kind in ("pooled", "step"):
            assert set(entry[kind]) == {"3", "6"}
            assert {"mae", "rmse", "mape"} <= set(entry[kind]["3"])
        assert {"mae", "rmse"} <= set(entry["std"]["pooled"]["3"])
        assert entry["seeds"] == (2 if name == "gru" else 1)
        assert entry["fit_seconds"] >= 0 and entry["predict_ms_per_window"] > 0
        assert entry["device"] == "cpu"
        assert len(entry["curve"]["rmse"]) == 6
    assert on_disk["models"]["persistence"]["std"]["pooled"]["3"]["rmse"] == 0.0
    # every model is scored on the same windows
    assert len({e["pooled"]["6"]["count"] for e in on_disk["models"].values()}) == 1


def test_metrics_json_tests_each_model_against_the_champion_and_gives_its_regret(run):
    out, document, _ = run
    champion = document["champion"]
    assert champion == min(
        document["models"], key=lambda n: min(document["models"][n]["valid_rmse"])
    )
    assert set(document["significance"]) == set(document["models"]) - {champion}
    for tests in document["significance"].values():
        assert set(tests) == {"3", "6"}
        for test in tests.values():
            assert 0.0 <= test["p_value"] <= 1.0 and test["windows"] > 0
            assert test["hac_lag"] >= 6  # covers the horizon and the window: windows overlap
            assert test["verdict"] in (
                "ahead (p < 0.05)",
                "behind (p < 0.05)",
                "no significant difference",
            )
    for h, regret in document["regret"].items():
        best = min(e["pooled"][h]["rmse"] for e in document["models"].values())
        assert regret["regret"] >= 1.0 and regret["best_rmse"] == best
    report = (out / "report.md").read_text()
    assert f"Against the champion ({champion})" in report and "regret of" in report


def test_bundles_keep_the_best_validation_seed(run):
    out, document, _ = run
    for name in document["models"]:
        assert load_model(out / "bundles" / name).name == name
    gru = document["models"]["gru"]
    assert gru["best_seed"] == int(np.argmin(gru["valid_rmse"]))
    assert (
        json.loads((out / "bundles" / "gru" / "config.json").read_text())["train"]["seed"]
        == (gru["best_seed"])
    )


def test_metrics_and_report_say_how_the_intervals_covered(run):
    out, document, _ = run
    for entry in document["models"].values():  # every model here has intervals
        pooled = entry["pooled"]["6"]
        assert 0.0 <= pooled["coverage"] <= 1.0 and pooled["width"] > 0
        assert 0.0 <= pooled["coverage_worst_hour"] <= pooled["coverage"]
        assert "coverage" in entry["std"]["pooled"]["6"]
    md = (out / "report.md").read_text()
    assert "| interval coverage |" in md and "lowest share of any hour" in md
    ar = document["models"]["ar"]["pooled"]["6"]
    assert f"{ar['coverage']:.3f} ({ar['coverage_worst_hour']:.3f})" in md


def test_report_has_table_and_embedded_plots(run):
    out, _, _ = run
    md = (out / "report.md").read_text()
    assert "| model | 3 h MAE | 3 h RMSE | 3 h MAPE % | 6 h MAE" in md  # 3 steps of 1 h
    assert "gru" in md and "figures/error_by_horizon.png" in md
    for name in ("error_by_horizon", "forecasts"):
        png = (out / "figures" / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG")
    page = (out / "report.html").read_text()
    encoded = page.split("data:image/png;base64,")[1].split("'")[0]
    assert base64.b64decode(encoded).startswith(b"\x89PNG")
    assert "Published reference" not in page  # only for los-loop


def test_evaluate_scores_a_bundle_like_train(run):
    out, document, panel = run
    result = evaluate_bundle(out / "bundles" / "ar", panel, horizons=(3, 6))  # the bundle's 6
    assert result["window"] == 6 and result["windows"] == document["models"]["ar"]["windows"]
    assert result["pooled"]["6"]["rmse"] == pytest.approx(
        document["models"]["ar"]["pooled"]["6"]["rmse"]
    )
    reordered = panel.select(list(reversed(panel.sensor_ids)))
    again = evaluate_bundle(out / "bundles" / "ar", reordered, window=6, horizons=(3, 6))
    assert again["pooled"]["6"]["rmse"] == pytest.approx(result["pooled"]["6"]["rmse"])
    with pytest.raises(ValueError, match="lack 1 sensors"):
        evaluate_bundle(out / "bundles" / "ar", panel.select(["s0", "s1", "s2"]))


def test_plan_validation():
    assert parse_models(" ar, lstm,ar ,") == ("ar", "lstm")
    with pytest.raises(ValueError, match="unknown model"):
        TrainPlan(models=("arima",))
    with pytest.raises(ValueError, match="seeds"):
        TrainPlan(seeds=0)


def _write_csv(path: Path, panel: SensorPanel) -> None:
    frame = pd.DataFrame(panel.values, columns=list(panel.sensor_ids))
    frame.insert(0, "timestamp", panel.timestamps.strftime("%Y-%m-%dT%H:%M:%SZ"))
    frame.to_csv(path, index=False)


def test_bundles_dir_holds_the_champion_by_validation(run):
    from pipeline.model_dir import read_champion, read_network, validation_score

    out, document, panel = run
    champion = read_champion(out)
    scores = {n: validation_score(e) for n, e in document["models"].items()}
    assert champion.champion == min((s, n) for n, s in scores.items() if s is not None)[1]
    assert read_network(out).sensor_ids == panel.sensor_ids


def test_training_saves_the_service_s_interval_detector(run):
    """Calibrated on the served forecaster's validation residuals: a service started on
    the bundles alerts from its first tick, not after calibrating on the stream."""
    from pipeline.alerts.saved import saved_interval_forecaster

    out, _, panel = run
    assert saved_interval_forecaster(out) == "ar"  # the service's default alert model
    config = json.loads((out / "bundles" / "detectors" / "interval" / "config.json").read_text())
    assert config["sensor_ids"] == list(panel.sensor_ids)


@pytest.mark.integration
def test_cli_train_and_evaluate(tmp_path: Path, prefect_harness):
    """``roadcast train`` runs the Prefect train flow (here against the test server)."""
    csv = tmp_path / "speeds.csv"
    _write_csv(csv, toy_panel(300, 3))
    out = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "train",
            f"csv:{csv}",
            "--models",
            "persistence,ar",
            "--window",
            "6",
            "--horizon",
            "3",
            "--seeds",
            "1",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "metrics.json").is_file() and (out / "bundles" / "ar" / "config.json").is_file()
    assert (out / "bundles" / "champion.json").is_file() and "champion" in result.output
    assert (out / "bundles" / "detectors" / "interval" / "config.json").is_file()
    scored = tmp_path / "eval.json"
    result = runner.invoke(
        app,
        [
            "evaluate",
            str(out / "bundles" / "ar"),
            f"csv:{csv}",
            "--window",
            "6",
            "--out",
            str(scored),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(scored.read_text())["model"] == "ar"
    # Another network into the same folder would replace what it serves: refused up front.
    other = tmp_path / "other.csv"
    _write_csv(other, toy_panel(300, 5))
    serving = (out / "bundles" / "serving.json").read_text()
    args = ["train", f"csv:{other}", "--models", "persistence", "--window", "6"]
    result = runner.invoke(app, [*args, "--horizon", "3", "--out", str(out), "--no-progress"])
    assert result.exit_code != 0
    assert "holds models of another network (3 sensors, this data 5" in result.output
    assert "only in the data: 's3', 's4'" in result.output
    assert (out / "bundles" / "serving.json").read_text() == serving


def test_cli_errors_are_clear(tmp_path: Path):
    runner = CliRunner()
    result = runner.invoke(app, ["train", "simulated", "--models", "arima", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "unknown model" in result.output
    result = runner.invoke(app, ["train", "nosuchdata", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "unknown data set" in result.output
    result = runner.invoke(app, ["evaluate", str(tmp_path / "none"), "simulated"])
    assert result.exit_code == 1 and "no model bundle" in result.output
    for command in (["train", "simulated", "--out", str(tmp_path)], ["data", "info", "simulated"]):
        # an unset variable (--adjacency "$ADJ") went on without the graph, unsaid
        result = runner.invoke(app, [*command, "--adjacency", " "])
        assert result.exit_code == 2 and "'--adjacency': is empty" in result.output


def test_each_tgclstm_seed_says_whether_it_kept_its_graph_path(tmp_path: Path) -> None:
    """metrics.json, the log and the report name each seed's graph path: the mean over
    seeds may mix a graph model with a plain LSTM."""
    from types import SimpleNamespace

    from models.forecasters.comparison import graph_path
    from pipeline.data.datasets import load_dataset

    panel = load_dataset("simulated:sensors=5,days=3,seed=4")
    plan = TrainPlan(models=("persistence", "tgclstm"), window=6, horizon=6, seeds=2, epochs=1,
                     device="cpu", progress=False, horizons=(3, 6))  # fmt: skip
    lines: list[str] = []
    document = train_models(panel, plan, tmp_path, log=lines.append)
    paths = document["models"]["tgclstm"]["graph_path"]
    assert len(paths) == 2 and set(paths) <= {"kept", "dropped"}
    assert "graph_path" not in document["models"]["persistence"]
    fits = [line for line in lines if "tgclstm seed" in line and "valid RMSE" in line]
    assert [line.rsplit("graph path ", 1)[1] for line in fits] == paths
    assert "graph path per seed" in (tmp_path / "report.md").read_text()

    ensemble = SimpleNamespace(graph_info={"graph_path_kept": [True, False, True]})
    assert graph_path(ensemble) == "kept by 2 of 3 members"  # type: ignore[arg-type]
    assert graph_path(SimpleNamespace()) is None  # type: ignore[arg-type]


def _quick_plan() -> TrainPlan:
    return TrainPlan(
        models=("persistence", "ar"), window=6, horizon=6, seeds=1, device="cpu",
        progress=False, horizons=(3, 6),
    )  # fmt: skip


def _folder(out: Path) -> tuple[dict, str, str | None]:
    """What a reader of ``out`` sees: metrics.json's versions, the report, the served set."""
    from pipeline.model_dir import read_serving

    serving = read_serving(out / "bundles")
    versions = json.loads((out / "metrics.json").read_text())["versions"]
    return versions, (out / "report.md").read_text(), serving and serving.models


def test_a_run_stopped_while_it_promotes_publishes_all_its_files_first(tmp_path, monkeypatch):
    """Ctrl-C in the last steps of a run replaced metrics.json while serving.json and the
    report stayed the earlier run's. A stop during the promotion is held back until the
    run's files are all in place, then delivered."""
    import os
    import signal

    import flows.train_models as train_module

    promote = train_module.promote_champion

    def stopped_while_promoting(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # delivered at once, were it not held back
        return promote(*args, **kwargs)

    train_models(toy_panel(), _quick_plan(), tmp_path, log=lambda _: None)
    earlier = _folder(tmp_path)
    monkeypatch.setattr(train_module, "promote_champion", stopped_while_promoting)
    with pytest.raises(KeyboardInterrupt):
        train_models(toy_panel(n=500), _quick_plan(), tmp_path, log=lambda _: None)
    versions, report, served = _folder(tmp_path)
    assert versions != earlier[0] and served == versions and report != earlier[1]
    assert not list(tmp_path.glob(".run-*"))


def test_a_run_stopped_before_it_promotes_leaves_the_folder_as_it_was(tmp_path, monkeypatch):
    """A run stopped while it drew its report left its metrics.json beside the earlier
    run's report and serving set."""
    import flows.train_models as train_module

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    train_models(toy_panel(), _quick_plan(), tmp_path, log=lambda _: None)
    earlier = _folder(tmp_path)
    monkeypatch.setattr(train_module, "write_report", stopped)
    with pytest.raises(KeyboardInterrupt):
        train_models(toy_panel(n=500), _quick_plan(), tmp_path, log=lambda _: None)
    assert _folder(tmp_path) == earlier
    assert not list(tmp_path.glob(".run-*"))
