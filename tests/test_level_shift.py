"""The level-shift benchmark: corrections use no future actual, shifts are seeded and
lie inside the test part, and a quick run writes its JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.level_shift import (
    RULES,
    Rule,
    apply_rule,
    corrections,
    inject,
    main,
    plan_shifts,
    rmse,
)


def _errors(n: int = 300, horizon: int = 12, nodes: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    errors = rng.normal(0.0, 1.0, (n, horizon, nodes))
    errors[150:, :, 1] += 5.0  # a lasting shift
    errors[rng.random(errors.shape) < 0.05] = np.nan  # missing actuals
    return errors


@pytest.mark.parametrize("gate", [None, "iid", "ar1"])
def test_changing_actuals_after_an_origin_never_changes_its_correction(gate: str | None) -> None:
    errors = _errors()
    base = corrections(errors, 12.0, gate)
    rng = np.random.default_rng(1)
    horizon = errors.shape[1]
    for origin in (0, 5, 100, 151, 299):
        changed = errors.copy()
        # every error whose target lies after ``origin`` (origin j, step k: target j + k)
        for j in range(errors.shape[0]):
            for k in range(1, horizon + 1):
                if j + k > origin:
                    changed[j, k - 1] = rng.normal(0.0, 50.0, errors.shape[2])
        again = corrections(changed, 12.0, gate)
        np.testing.assert_array_equal(again[origin], base[origin])
    if gate is None:
        moved = errors.copy()
        moved[200, 0] += 100.0  # target at 201: seen from origin 201 on
        assert np.all(corrections(moved, 12.0, None)[201, 0] != base[201, 0])
        np.testing.assert_array_equal(corrections(moved, 12.0, None)[200], base[200])


def test_a_lasting_shift_is_corrected_and_a_quiet_sensor_is_left_alone_when_gated() -> None:
    errors = _errors()
    gated = corrections(errors, 12.0, "ar1")
    assert abs(np.nanmean(gated[250:, 0, 1]) - 5.0) < 1.0  # the shifted sensor
    assert np.mean(gated[250:, :, 0] != 0.0) < 0.2  # pure noise: mostly off
    assert np.all(apply_rule(errors, Rule("off"), 12.0) == 0.0)


def test_shifts_are_deterministic_and_inside_the_test_part() -> None:
    first = plan_shifts(50, 3226, 4032, seed=5)
    assert first == plan_shifts(50, 3226, 4032, seed=5)
    assert first != plan_shifts(50, 3226, 4032, seed=6)
    assert len(first) == 10 and len({s.sensor for s in first}) == 10
    assert all(3226 < s.onset < 4032 for s in first)
    levels = [s for s in first if s.kind == "level"]
    assert len(levels) == 8 and all(0.10 <= abs(s.size) <= 0.20 for s in levels)
    assert sorted(s.size for s in first if s.kind == "gain") == [0.5, 1.5]


def test_injection_changes_only_the_shifted_sensors_after_their_step() -> None:
    from pipeline.data.datasets import load_dataset

    panel = load_dataset("simulated:sensors=10,days=2,seed=3")
    start = int(panel.n_time * 0.8)
    shifts = plan_shifts(panel.n_nodes, start, panel.n_time, seed=2)
    reference = np.nanmean(panel.values[:start], axis=0)
    shifted = inject(panel, shifts, reference)
    diff = ~np.isclose(shifted.values, panel.values, equal_nan=True)
    expected = np.zeros_like(diff)
    for s in shifts:
        expected[s.onset :, s.sensor] = True
    assert not diff[~expected].any()
    assert diff[expected].mean() > 0.99
    assert np.array_equal(np.isnan(shifted.values), np.isnan(panel.values))
    again = load_dataset("simulated:sensors=10,days=2,seed=3").values
    assert np.array_equal(panel.values, again, equal_nan=True)  # the original is untouched


def test_rmse_pools_steps_and_keeps_only_the_chosen_cells() -> None:
    actual = np.zeros((2, 3, 2))
    forecast = np.zeros((2, 3, 2))
    forecast[:, :, 1] = 2.0
    actual[0, 0, 0] = np.nan
    keep = np.array([[True, False], [True, False]])
    assert rmse(actual, forecast, 3) == pytest.approx(np.sqrt(4.0 * 6 / 11))
    assert rmse(actual, forecast, 3, keep) == 0.0


def test_quick_run_writes_ratios_and_off_matches_the_protocols_backtest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROADCAST_BENCH_RESULTS", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    main(["--quick", "--seeds", "1"])
    document = json.loads((tmp_path / "level_shift.json").read_text())
    network = document["networks"]["speed-quick"]
    for model in network["models"].values():
        assert set(model["ratio"]) == {r.name for r in RULES}
        assert all(v == 1.0 for part in model["ratio"]["off"].values() for v in part.values())
    # off on the unshifted test part is what ``roadcast train`` reports for the model
    from models.forecasters.comparison import TrainPlan, backtest_runs, fit_runs, split_panel
    from pipeline.data.datasets import load_dataset

    panel = load_dataset(network["spec"])
    plan = TrainPlan(models=("ar",), seeds=1, device="cpu", progress=False)
    split = split_panel(panel, plan)
    result = backtest_runs(
        "ar", fit_runs("ar", split, plan, log=lambda _: None), panel, split, plan
    )
    off = network["models"]["ar"]["rmse"]["off"]["unshifted"]
    test = result.backtest.metrics["pooled"]
    for h in ("3", "12"):
        assert off[h] == pytest.approx(test[h]["rmse"], rel=1e-5)
