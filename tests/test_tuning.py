"""``--tune``: budgets, the loop's epoch observer, the Optuna search on the validation part,
its errors, and the train flow running trials as Prefect tasks."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.train_models import train_models
from models.forecasters.comparison import TrainPlan, split_panel
from models.forecasters.rnn import LSTMForecaster
from models.forecasters.tuning import (
    Budget,
    TuningError,
    parse_budget,
    run_trial,
    tune_model,
    tune_models,
    tuned_plan,
)
from models.nn.loop import observe_epochs
from models.nn.training import TrainConfig
from models.panel import SensorPanel


def toy_panel(n: int = 500, nodes: int = 3) -> SensorPanel:
    rng = np.random.default_rng(0)
    t = np.arange(n)
    values = 50 + 8 * np.sin(2 * np.pi * t / 24)[:, None] + rng.normal(0, 1, (n, nodes))
    stamps = pd.date_range("2024-03-01", periods=n, freq="1h", tz="UTC")
    return SensorPanel.from_values(
        values.astype(np.float32), stamps, [f"s{i}" for i in range(nodes)], name="toy"
    )


PLAN = TrainPlan(
    models=("persistence", "ar", "lstm"), window=6, horizon=3, seeds=1, epochs=3,
    device="cpu", progress=False, horizons=(3,),
)  # fmt: skip


@pytest.mark.parametrize(
    ("text", "budget"),
    [("30", Budget(trials=30)), ("20m", Budget(seconds=1200.0)), ("90s", Budget(seconds=90.0)),
     ("1.5h", Budget(seconds=5400.0)), (" 2 ", Budget(trials=2)), ("1d", Budget(seconds=86400.0))],
)  # fmt: skip
def test_budgets_are_trials_or_time(text, budget):
    assert parse_budget(text) == budget


@pytest.mark.parametrize(
    ("text", "message"),
    [("0", "whole number from 1"), ("2.5", "whole number"), ("0s", "too small for one trial"),
     ("0.5s", "too small"), ("ten", "number of trials"), ("-3", "number of trials"),
     ("9" * 400, "from 1 to 10000"), ("99999999999999999999", "from 1 to 10000"),
     ("9" * 400 + "s", "at most 168h"), ("200h", "at most 168h"), ("8d", "at most 168h"),
     ("1M", "M is ambiguous")],
)  # fmt: skip
def test_bad_budgets_are_refused(text, message):
    with pytest.raises(TuningError, match=message):
        parse_budget(text)


def test_a_budget_with_nothing_to_tune_says_so():
    said: list[str] = []
    plan = replace(PLAN, models=("persistence",))
    assert tune_models(None, plan, Budget(trials=5), log=said.append) == {}  # type: ignore[arg-type]
    assert said == ["note: --tune has nothing to search: persistence: no settings to tune"]


def test_the_training_loop_reports_every_validated_epoch_and_can_be_stopped():
    panel = toy_panel(300)
    train, valid = panel.slice(0, 220), panel.slice(220, 300)
    seen: list[tuple[int, float]] = []
    config = TrainConfig(epochs=3, progress=False, device="cpu")
    with observe_epochs(lambda epoch, score: seen.append((epoch, score))):
        LSTMForecaster(window=6, horizon=3, hidden=4, train=config).fit(train, valid=valid)
    assert [e for e, _ in seen] == [1, 2, 3] and all(np.isfinite(s) for _, s in seen)

    def stop(epoch: int, score: float) -> None:
        raise optuna.TrialPruned(f"epoch {epoch}")

    with observe_epochs(stop), pytest.raises(optuna.TrialPruned, match="epoch 1"):
        LSTMForecaster(window=6, horizon=3, hidden=4, train=config).fit(train, valid=valid)
    LSTMForecaster(window=6, horizon=3, hidden=4, train=config).fit(train, valid=valid)  # no hook


def test_tuning_searches_on_validation_and_the_plan_takes_its_settings():
    split = split_panel(toy_panel(), PLAN)
    result = tune_model("lstm", split, PLAN, Budget(trials=3), log=lambda _: None)
    assert len(result.trials) == 3 and result.trials[0]["state"] == "COMPLETE"
    assert result.params["window"] in (6, 12, 24) and result.params["hidden"] in (32, 64, 128, 256)
    assert 3e-4 <= result.params["train"]["lr"] <= 3e-3
    best = min(t["value"] for t in result.trials if t["value"] is not None)
    assert result.best_rmse == pytest.approx(best)
    plan = tuned_plan(PLAN, {"lstm": result})
    assert plan.overrides["lstm"] == result.params
    summary = result.to_dict()
    assert summary["completed"] == 3 and summary["objective"].startswith("validation RMSE")


def test_ar_is_searched_over_its_whole_grid_each_point_once():
    """TPE drew AR's 8 settings with repeats: 8 trials covered 5 of them."""
    from models.forecasters.tuning import AR_GRID

    split = split_panel(toy_panel(), PLAN)
    result = tune_model("ar", split, PLAN, Budget(trials=100), log=lambda _: None)
    tried = [(t["params"]["max_lag"], t["params"]["ic"]) for t in result.trials]
    assert sorted(tried) == sorted((lag, ic) for lag in AR_GRID["max_lag"] for ic in AR_GRID["ic"])


def test_a_tgclstm_trial_reports_both_training_stages_as_one_curve():
    """TGC-LSTM trains its LSTM path, then its graph path, each counting epochs from 1:
    the trial's curve goes on through the second stage, so pruning sees all of it."""
    from pipeline.data.datasets import load_dataset

    plan = replace(PLAN, models=("tgclstm",))
    split = split_panel(load_dataset("simulated:sensors=6,days=2,seed=1"), plan)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    trial = study.ask()
    study.tell(trial, run_trial("tgclstm", trial, split, plan))
    assert sorted(study.trials[0].intermediate_values) == [1, 2, 3, 4, 5, 6]  # 3 + 3 epochs


def test_a_budget_in_which_no_trial_finishes_is_an_error():
    split = split_panel(toy_panel(), PLAN)

    def pruned(*_: object) -> float:
        raise optuna.TrialPruned("at once")

    with pytest.raises(TuningError, match="no trial of lstm finished"):
        tune_model("lstm", split, PLAN, Budget(trials=2), run=pruned, log=lambda _: None)


def test_a_time_budget_smaller_than_one_trial_is_an_error():
    split = split_panel(toy_panel(), PLAN)

    def slow(*_: object) -> float:
        time.sleep(0.3)
        return 1.0

    with pytest.raises(TuningError, match=r"--tune 0.1 s: one trial of lstm took .* s, more"):
        tune_model("lstm", split, PLAN, Budget(seconds=0.1), run=slow, log=lambda _: None)
    found = tune_model("lstm", split, PLAN, Budget(seconds=2.0), run=slow, log=lambda _: None)
    assert len(found.trials) >= 2


def test_too_few_validation_windows_and_nothing_is_written(tmp_path: Path):
    short = TrainPlan(models=("ar",), window=6, horizon=3, valid=0.01, epochs=1, progress=False)
    with pytest.raises(TuningError, match=r"validation windows.*--valid"):
        train_models(toy_panel(), short, tmp_path / "out", tune=Budget(trials=2), log=print)
    assert not (tmp_path / "out").exists()


def test_train_models_records_the_chosen_settings(tmp_path: Path):
    document = train_models(
        toy_panel(), PLAN, tmp_path, tune=Budget(trials=2), report=True, log=lambda _: None
    )
    assert set(document["tuning"]) == {"ar", "lstm"}  # persistence has nothing to tune
    chosen = document["tuning"]["lstm"]["params"]
    config = json.loads((tmp_path / "bundles" / "lstm" / "config.json").read_text())
    assert config["hyper"]["hidden"] == chosen["hidden"]
    assert config["train"]["lr"] == pytest.approx(chosen["train"]["lr"])
    assert "Settings chosen by --tune" in (tmp_path / "report.md").read_text()


def test_cli_refuses_a_bad_budget_before_anything_runs(tmp_path: Path):
    runner = CliRunner()
    result = runner.invoke(app, ["train", "simulated", "--tune", "0", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--tune '0'" in result.output
    assert not (tmp_path / "o").exists()
