"""benchmarks/interval_hours.py: a model's own interval scored beside the conformal ones,
the rule that compares them, the result name and the data folder."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pandas as pd
import pytest

from benchmarks import interval_hours
from models.forecasters.ar import AutoRegressive
from models.forecasters.baselines import Persistence
from models.forecasters.comparison import TrainPlan, split_panel
from models.forecasters.evaluation import backtest
from models.forecasters.intervals import interval_score, target_hours
from models.metrics import interval_metrics
from models.panel import SensorPanel
from pipeline.data.datasets import load_dataset


@pytest.fixture(scope="module")
def small() -> tuple:
    panel = load_dataset("simulated:sensors=6,days=4,seed=11")
    plan = TrainPlan(models=("persistence",), progress=False)
    return panel, plan, split_panel(panel, plan)


def test_ar_is_scored_with_its_own_interval_on_the_same_test_forecasts(small) -> None:
    panel, plan, split = small
    model = AutoRegressive(window=plan.window, horizon=plan.horizon).fit(split.train)
    scored = interval_hours.compare(model, panel, split, plan)
    assert scored is not None
    assert set(scored) == {"plain", "by_hour", "own", "own_by_hour", "ratio", "vs_own"}
    assert set(scored["vs_own"]) == {"plain", "by_hour", "own_by_hour"}
    # Without a validation part AR publishes its Gaussian interval: "own" scores exactly it.
    start = split.train.n_time + split.valid.n_time
    test = backtest(model, panel, start=start, inputs_inside=plan.window, latency_repeats=0)
    step = pd.Timedelta(seconds=model.step_s)
    hours = target_hours(panel.timestamps, test.forecast.origins, model.horizon, step)
    lower, upper = test.forecast.lower, test.forecast.upper
    published = interval_metrics(test.actual, lower, upper, hours)
    own = scored["own"]
    assert own["coverage"] == pytest.approx(published["coverage"], abs=2e-4)
    assert own["width"] == pytest.approx(published["width"], rel=1e-3)
    score = interval_score(test.actual, lower, upper, 0.9)
    assert own["interval_score"] == pytest.approx(score, rel=1e-3)
    ratio = scored["by_hour"]["interval_score"] / own["interval_score"]
    assert scored["vs_own"]["by_hour"] == pytest.approx(ratio, abs=1e-3)


def test_own_by_hour_is_the_gaussian_times_the_scale_calibrate_intervals_keeps(
    small, monkeypatch
) -> None:
    panel, plan, split = small
    model = AutoRegressive(window=plan.window, horizon=plan.horizon).fit(split.train)
    calibrate = interval_hours.calibrate_intervals
    # Where the conformal rule keeps no scale, the candidate is the plain Gaussian.
    unscaled = lambda *a: (calibrate(*a)[0], None)  # noqa: E731
    monkeypatch.setattr(interval_hours, "calibrate_intervals", unscaled)
    plain = interval_hours.compare(model, panel, split, plan)
    assert plain is not None and plain["own_by_hour"] == plain["own"]
    assert plain["vs_own"]["own_by_hour"] == 1.0
    # A kept scale (twice as wide from 06:00 to 17:59 UTC) multiplies the Gaussian at each
    # target's hour; the conformal rule is scaled by the same one.
    scale = np.ones((24, panel.n_nodes), dtype=np.float32)
    scale[6:18] = 2.0
    scaled = lambda *a: (calibrate(*a)[0], scale)  # noqa: E731
    monkeypatch.setattr(interval_hours, "calibrate_intervals", scaled)
    scored = interval_hours.compare(model, panel, split, plan)
    assert scored is not None
    start = split.train.n_time + split.valid.n_time
    test = backtest(model, panel, start=start, inputs_inside=plan.window, latency_repeats=0)
    step = pd.Timedelta(seconds=model.step_s)
    hours = target_hours(panel.timestamps, test.forecast.origins, model.horizon, step)
    mean = test.forecast.mean
    half = model.ar_halfwidth * scale[hours]
    lower, upper = model.floored(mean - half), mean + half
    expected = interval_metrics(test.actual, lower, upper, hours)
    got = scored["own_by_hour"]
    assert got["coverage"] == pytest.approx(expected["coverage"], abs=2e-4)
    assert got["coverage_worst_hour"] == pytest.approx(expected["coverage_worst_hour"], abs=2e-4)
    assert got["width"] == pytest.approx(expected["width"], rel=1e-3)
    score = interval_score(test.actual, lower, upper, 0.9)
    assert got["interval_score"] == pytest.approx(score, rel=1e-3)
    assert got["width"] > scored["own"]["width"]
    assert scored["own"] == plain["own"]


def test_a_model_without_its_own_interval_keeps_the_old_entry(small) -> None:
    panel, plan, split = small
    model = Persistence(window=plan.window, horizon=plan.horizon).fit(split.train)
    scored = interval_hours.compare(model, panel, split, plan)
    assert scored is not None and set(scored) == {"plain", "by_hour", "ratio"}


def cell(coverage: float, score: float, worst: float | None = None) -> dict:
    worst = coverage if worst is None else worst
    return {"coverage": coverage, "coverage_worst_hour": worst, "interval_score": score}


def entry(coverage: float, score: float, own_coverage: float, own_score: float) -> dict:
    return {
        "plain": cell(coverage, score),
        "by_hour": cell(coverage, score),
        "own": cell(own_coverage, own_score),
        "own_by_hour": cell(own_coverage, own_score),
        "vs_own": {"plain": score / own_score, "by_hour": score / own_score, "own_by_hour": 1.0},
    }


def scaled_own(
    score: float, coverage: float = 0.9, worst: float = 0.8, own_worst: float = 0.8
) -> dict:
    """An AR entry whose Gaussian scores 10.0 at coverage 0.9, and scaled by hour ``score``."""
    out = entry(0.9, 10.0, 0.9, 10.0)
    out["own"] = cell(0.9, 10.0, own_worst)
    out["own_by_hour"] = cell(coverage, score, worst)
    out["vs_own"]["own_by_hour"] = score / 10.0
    return out


def verdict(entries: list[dict]) -> dict:
    summary = interval_hours.own_summary({f"n{k}": {"ar": e} for k, e in enumerate(entries)})
    return summary["ar"]


def test_own_by_hour_wins_only_when_all_four_preregistered_criteria_hold() -> None:
    wins = verdict([scaled_own(9.0), scaled_own(9.0), scaled_own(10.5)])
    assert wins["own_by_hour_wins"] is True
    assert wins["own_by_hour"]["better"] == 2
    assert wins["own_by_hour"]["criteria"] == {"C1": True, "C2": True, "C3": True, "C4": True}
    # C1: a tie is not a win, and half is not more than half.
    half = verdict([scaled_own(8.0), scaled_own(10.0)])
    assert half["own_by_hour"]["criteria"]["C1"] is False and not half["own_by_hour_wins"]
    # C2: a majority, but a geometric-mean ratio above 1.
    c2 = verdict([scaled_own(9.9), scaled_own(9.9), scaled_own(20.0)])["own_by_hour"]
    assert c2["criteria"] == {"C1": True, "C2": False, "C3": True, "C4": True}
    # C3: coverage may stray from the level by up to 0.005 more than the Gaussian's.
    near = verdict([scaled_own(9.0, coverage=0.896)] * 3)
    assert near["own_by_hour_wins"] is True
    far = verdict([scaled_own(9.0, coverage=0.894)] * 3)
    assert far["own_by_hour"]["criteria"]["C3"] is False and not far["own_by_hour_wins"]
    # C4: the mean lowest-hour coverage must not fall.
    low = verdict([scaled_own(9.0, worst=0.79)] * 3)
    assert low["own_by_hour"]["criteria"]["C4"] is False and not low["own_by_hour_wins"]
    equal = verdict([scaled_own(9.0, worst=0.7, own_worst=0.7)] * 3)
    assert equal["own_by_hour"]["criteria"]["C4"] is True


def test_conformal_wins_only_with_majority_geometric_mean_and_coverage() -> None:
    wins = {f"n{k}": {"ar": entry(0.9, 9.0, 0.95, 10.0)} for k in range(2)}
    wins["n2"] = {"ar": entry(0.9, 11.0, 0.95, 10.0), "persistence": {"ratio": 1.0}}
    summary = interval_hours.own_summary(wins)
    assert set(summary) == {"ar"}
    assert summary["ar"]["networks"] == 3 and summary["ar"]["better"] == 2
    assert summary["ar"]["conformal_wins"] is True
    # Lower interval scores everywhere, but coverage further from the level than the own.
    far = {f"n{k}": {"ar": entry(0.86, 9.0, 0.91, 10.0)} for k in range(3)}
    assert interval_hours.own_summary(far)["ar"]["conformal_wins"] is False
    # Better on a minority only.
    few = {f"n{k}": {"ar": entry(0.9, 11.0 if k else 5.0, 0.9, 10.0)} for k in range(3)}
    assert interval_hours.own_summary(few)["ar"]["conformal_wins"] is False
    # A majority, but a geometric-mean ratio above 1.
    one_bad = {f"n{k}": {"ar": entry(0.9, 9.9, 0.9, 10.0)} for k in range(2)}
    one_bad["n2"] = {"ar": entry(0.9, 20.0, 0.9, 10.0)}
    assert interval_hours.own_summary(one_bad)["ar"]["conformal_wins"] is False


def test_the_result_file_takes_the_name_given(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("ROADCAST_BENCH_RESULTS", str(tmp_path))
    interval_hours.main(["--quick", "--models", "ar", "--name", "interval_hours_ar"])
    document = json.loads((tmp_path / "interval_hours_ar.json").read_text())
    assert document["benchmark"] == "interval_hours_ar" and document["models"] == ["ar"]
    assert document["summary"]["vs_own"]["ar"]["networks"] == 1
    assert "own_by_hour_wins" in document["summary"]["vs_own"]["ar"]
    assert document["seed"] == 0
    assert not (tmp_path / "interval_hours.json").exists()
    with pytest.raises(SystemExit):
        interval_hours.main(["--quick", "--name", "../elsewhere"])
    assert "--name '../elsewhere': a file name" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        interval_hours.main(["--quick", "--seed", "-1"])
    assert "--seed -1: must be >= 0" in capsys.readouterr().err


def test_seed_reseeds_the_models_and_the_simulated_networks_only(tmp_path, monkeypatch) -> None:
    assert interval_hours.reseeded("simulated:sensors=50,days=9,seed=11", 0).endswith("seed=11")
    assert interval_hours.reseeded("simulated:sensors=50,days=9,seed=11", 1).endswith("seed=12")
    assert interval_hours.reseeded("csv:/data/seed=3/x.csv", 1) == "csv:/data/seed=3/x.csv"
    assert interval_hours.reseeded("los-loop", 1) == "los-loop"
    assert interval_hours.networks(True, tmp_path) == interval_hours.QUICK
    quick = interval_hours.networks(True, tmp_path, seed=1)
    assert quick == {"speed-quick": "simulated:sensors=12,days=4,seed=12"}
    seen: dict[str, object] = {}

    def build(name: str, **kwargs: object) -> None:
        seen.update(kwargs)
        raise ValueError("stop here")

    monkeypatch.setenv("ROADCAST_BENCH_RESULTS", str(tmp_path))
    monkeypatch.setattr(interval_hours, "build_model", build)
    monkeypatch.setattr(interval_hours, "print_table", lambda *a: None)
    with pytest.raises(ValueError, match="stop here"):
        interval_hours.main(["--quick", "--models", "ar", "--seed", "1"])
    assert seen["seed"] == 1


def test_networks_read_the_data_folder_from_roadcast_data_dir(tmp_path, monkeypatch) -> None:
    data = tmp_path / "data"
    (data / "los-loop").mkdir(parents=True)
    monkeypatch.setenv("ROADCAST_DATA_DIR", str(data))
    monkeypatch.setattr(interval_hours, "shared_data_dir", lambda: None)
    calls: list[list[str]] = []
    fake = types.ModuleType("fake_generator")
    fake.main = lambda argv: calls.append(argv)  # type: ignore[attr-defined]
    for module in interval_hours.HELD_OUT:
        monkeypatch.setitem(sys.modules, f"benchmarks.{module}", fake)
    specs = interval_hours.networks(False, tmp_path / "out")
    assert specs["los-loop"] == "los-loop"
    assert ["--out", str(tmp_path / "out"), "--data", str(data)] in calls  # hourly: METR-LA


def test_own_halfwidth_is_the_gaussian_one_of_ar_only() -> None:
    stamps = pd.date_range("2024-01-01", periods=300, freq="5min", tz="UTC")
    values = np.random.default_rng(0).normal(size=(300, 2)).cumsum(axis=0)
    panel = SensorPanel.from_values(values, stamps, ["a", "b"])
    ar = AutoRegressive(window=4, horizon=3).fit(panel)
    np.testing.assert_array_equal(interval_hours.own_halfwidth(ar), ar.ar_halfwidth)
    assert interval_hours.own_halfwidth(Persistence(window=1, horizon=3).fit(panel)) is None
