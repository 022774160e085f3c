"""Paired tests over test windows (Diebold-Mariano, EWC) and the champion's claims.

``python -m tests.test_significance [--reps 2000]`` prints the size and power table of
docs/decisions.md ("Paired tests"): the old rule, EWC with Lazarus et al.'s ``B`` and
the rule of :mod:`models.significance` on simulated overlapping-window losses."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from models.forecasters.claims import champion_claims, validation_champion
from models.significance import (
    PairedTest,
    diebold_mariano,
    ewc_degrees,
    ewc_long_run_variance,
    holm_family,
    p_text,
    window_losses,
)

WINDOW = 12  # los-loop's input window: lag 14 at 3 steps, 23 at 12


def old_rule_p_values(d: np.ndarray, lag: int) -> np.ndarray:
    """The rule before EWC, per row of ``d`` ``[rep, n]``: Newey-West (Bartlett) with
    bandwidth ``2 * lag``, the Harvey-Leybourne-Newbold factor with ``k = 2 lag + 1``
    and t(n - 1)."""
    n = d.shape[1]
    bandwidth = 2 * lag
    k = bandwidth + 1
    e = d - d.mean(axis=1, keepdims=True)
    long_run = (e * e).sum(axis=1) / n
    for j in range(1, bandwidth + 1):
        long_run += 2 * (1 - j / (bandwidth + 1)) * (e[:, j:] * e[:, :-j]).sum(axis=1) / n
    factor = np.sqrt(max(0.0, (n + 1 - 2 * k + k * (k - 1) / n) / n))
    statistic = d.mean(axis=1) / np.sqrt(long_run / n) * factor
    return np.asarray(2 * stats.t.sf(np.abs(statistic), n - 1))


def ewc_p_values(d: np.ndarray, degrees: int) -> np.ndarray:
    """EWC with ``degrees`` cosines and t(degrees), per row of ``d`` ``[rep, n]``."""
    n = d.shape[1]
    t = (np.arange(n) + 0.5) / n
    basis = np.sqrt(2.0 / n) * np.cos(np.pi * np.outer(t, np.arange(1, degrees + 1)))
    long_run = ((d @ basis) ** 2).mean(axis=1)
    statistic = np.sqrt(n) * d.mean(axis=1) / np.sqrt(long_run)
    return np.asarray(2 * stats.t.sf(np.abs(statistic), degrees))


def module_p_values(d: np.ndarray, lag: int) -> np.ndarray:
    """:func:`models.significance.diebold_mariano` per row (NaN: no verdict)."""
    return np.array(
        [diebold_mariano(row + 50.0, np.full(len(row), 50.0), lag).p_value for row in d]
    )


def moving_sum_differentials(n: int, lag: int, reps: int, rng: np.random.Generator) -> np.ndarray:
    """``[rep, n]`` equal-skill differentials with the overlap's own autocorrelation: a
    moving sum of ``lag + 1`` white noise terms (triangular out to ``lag``)."""
    noise = rng.normal(size=(reps, n + lag))
    sums = np.cumsum(np.pad(noise, ((0, 0), (1, 0))), axis=1)
    return np.asarray(sums[:, lag + 1 :] - sums[:, :n])


def daily_cycle_differentials(
    n: int, horizon: int, reps: int, rng: np.random.Generator, gap: float = 0.0, nodes: int = 3
) -> np.ndarray:
    """``[rep, n]`` differentials of :func:`window_losses` of two forecasts of a 5-minute
    series with a daily cycle, from overlapping windows (``WINDOW`` inputs, ``horizon``
    targets). Each model's error at a target is ``size * growth * (shared + own +
    input)``: ``size`` follows the day (rush hours err 4 times more), ``growth`` rises
    with the step, ``shared`` is noise both models miss, ``own`` an AR(1) per target
    and model, ``input`` a mean of ``WINDOW`` shocks the window's inputs carried, so two
    windows share errors up to ``horizon + WINDOW - 1`` apart. Model a's squared errors
    are ``1 - gap`` times b's in expectation (0: equal skill)."""
    out = np.empty((reps, n))
    steps = n + WINDOW + horizon
    targets = np.arange(n)[:, None] + WINDOW + np.arange(horizon)[None, :]  # [window, step]
    growth = (1 + np.arange(horizon) / horizon)[None, :, None]
    for r in range(reps):
        phase = rng.uniform(0, 2 * np.pi)
        cycle = np.sin(2 * np.pi * np.arange(steps) / 288 + phase)
        size = (1 + 0.6 * cycle)[targets][..., None]
        actual = np.repeat((50 + 10 * cycle)[targets][..., None], nodes, axis=2)
        shared = 0.7 * rng.normal(size=(steps, nodes))[targets]
        losses = []
        for scale in (np.sqrt(1 - gap), 1.0):
            own = np.zeros((steps, nodes))
            shocks = rng.normal(size=(steps, nodes)) * np.sqrt(0.75)
            for i in range(1, steps):
                own[i] = 0.5 * own[i - 1] + shocks[i]
            carried = np.cumsum(np.pad(rng.normal(size=(steps, nodes)), ((1, 0), (0, 0))), axis=0)
            inputs = ((carried[WINDOW:] - carried[:-WINDOW]) / np.sqrt(WINDOW))[:n, None, :]
            error = scale * size * growth * (shared + own[targets] + inputs)
            losses.append(window_losses(actual, actual + error, horizon))
        out[r] = losses[0] - losses[1]
    return out


def rejection_table(reps: int = 2000, seed: int = 0) -> list[str]:
    """Rejection rates at a nominal 5 % of the old rule, EWC with Lazarus et al.'s
    ``B = 0.4 n^(2/3)`` and the module's rule (its ``B`` in brackets; "-": no verdict):
    size on equal-skill moving sums and daily-cycle losses, power on moving sums shifted
    by 2.5 standard errors of their mean and on daily-cycle losses where a's MSE is 20 %
    lower. Prints each row as it comes."""
    rng = np.random.default_rng(seed)
    rules: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
        "old": old_rule_p_values,
        "LLSW B": lambda d, lag: ewc_p_values(d, int(0.4 * d.shape[1] ** (2 / 3))),
        "this rule": module_p_values,
    }
    lines = [f"{'simulation':<28} {'lag':>3} {'n':>5}  " + "  ".join(f"{r:>9}" for r in rules)]
    print(lines[0], flush=True)
    for what in (
        "size: moving sums",
        "size: daily cycle",
        "power: moving sums",
        "power: daily cycle",
    ):
        for horizon in (3, 12):
            lag = horizon + WINDOW - 1
            for n in (100, 200, 380, 2000):
                if what.endswith("moving sums"):
                    d = moving_sum_differentials(n, lag, reps, rng)
                    if what.startswith("power"):
                        d = d + 2.5 * (lag + 1) / np.sqrt(n)
                else:
                    gap = 0.2 if what.startswith("power") else 0.0
                    d = daily_cycle_differentials(n, horizon, reps, rng, gap=gap)
                cells = []
                for name, rule in rules.items():
                    p = rule(d, lag)
                    rate = "-" if np.isnan(p).all() else f"{np.mean(p < 0.05):.3f}"
                    if name == "this rule":
                        rate += f" ({ewc_degrees(n, lag)})"
                    cells.append(f"{rate:>9}")
                lines.append(f"{what:<28} {lag:>3} {n:>5}  " + "  ".join(cells))
                print(lines[-1], flush=True)
    return lines


def ar1(n: int, phi: float, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(n)
    for t in range(1, n):
        out[t] = phi * out[t - 1] + rng.normal()
    return out


def test_window_losses_pool_observed_targets_only():
    actual = np.array([[[1.0, np.nan], [3.0, 4.0]], [[np.nan, np.nan], [np.nan, np.nan]]])
    forecast = np.zeros_like(actual)
    losses = window_losses(actual, forecast, steps=2)
    assert losses[0] == pytest.approx((1 + 9 + 16) / 3)
    assert np.isnan(losses[1])  # nothing observed in that window
    assert window_losses(actual, forecast, steps=1)[0] == pytest.approx(1.0)


def test_clearly_better_forecasts_are_ahead_and_equal_ones_are_not():
    rng = np.random.default_rng(0)
    base = np.abs(ar1(500, 0.8, rng)) + 1.0  # autocorrelated losses, as overlapping windows give
    better = base * 0.7
    test = diebold_mariano(better, base, lag=15)
    assert test.mean_difference < 0 and test.p_value < 0.05
    assert test.verdict == "ahead (p < 0.05)"
    assert diebold_mariano(base, better, lag=15).verdict == "behind (p < 0.05)"
    same = diebold_mariano(base, base.copy(), lag=15)
    assert same.p_value == 1.0 and same.verdict == "no significant difference"


def test_noise_alone_is_rarely_called_significant():
    """Under the null (two models of equal skill, autocorrelated losses) the HAC test keeps
    its size; an iid variance would call many of these 'significant'."""
    rng = np.random.default_rng(1)
    rejections = 0
    for _ in range(60):
        common = ar1(400, 0.9, rng)
        a = (common + ar1(400, 0.9, rng)) ** 2
        b = (common + ar1(400, 0.9, rng)) ** 2
        rejections += diebold_mariano(a, b, lag=24).p_value < 0.05
    assert rejections <= 12  # about 5 % expected; a naive variance rejects far more often


def test_too_few_windows_give_no_verdict():
    test = diebold_mariano(np.array([1.0, 2.0]), np.array([2.0, 3.0]), lag=3)
    assert np.isnan(test.p_value) and test.verdict == "no significant difference"
    with pytest.raises(ValueError, match="paired losses"):
        diebold_mariano(np.zeros(3), np.zeros(4), lag=1)


def test_champion_claims_test_each_model_and_give_the_regret():
    rng = np.random.default_rng(2)
    actual = rng.normal(size=(300, 3, 4))  # [windows, horizon, node]
    good = actual + rng.normal(scale=0.5, size=actual.shape)
    bad = actual + rng.normal(scale=1.0, size=actual.shape)
    twin = actual + rng.normal(scale=0.5, size=actual.shape)
    backtests = {"good": [(actual, good)], "bad": [(actual, bad)], "twin": [(actual, twin)]}
    rmse = {
        name: {"3": float(np.sqrt(np.mean((runs[0][1] - actual) ** 2)))}
        for name, runs in backtests.items()
    }
    champion = validation_champion({"good": [1.0, 2.0], "bad": [0.5], "twin": [3.0]})
    assert champion == "bad"  # validation decides, even when the test part disagrees
    losses = {
        name: [{"3": window_losses(a, f, 3)} for a, f in runs] for name, runs in backtests.items()
    }
    claims = champion_claims(losses, rmse, champion, window=12)
    assert claims["significance"]["good"]["3"]["verdict"] == "ahead (p < 0.05)"
    assert "bad" not in claims["significance"]
    regret = claims["regret"]["3"]
    assert regret["best"] in ("good", "twin") and regret["regret"] > 1.5
    assert regret["regret"] == pytest.approx(rmse["bad"]["3"] / rmse[regret["best"]]["3"])
    assert validation_champion({"a": [float("nan")]}) is None
    assert champion_claims(losses, rmse, None, window=12)["significance"] == {}


def test_only_the_kept_seed_keeps_its_test_arrays():
    """Every seed's scores are kept; the forecasts and targets only for the kept seed, so
    a run's memory does not grow with seeds x windows x sensors."""
    from models.forecasters.comparison import FitRun, TrainPlan, backtest_runs, split_panel
    from models.forecasters.factory import build_model
    from pipeline.data.simulate import simulate_network

    panel = simulate_network(6, 2.0, seed=3)
    plan = TrainPlan(models=("persistence",), window=4, horizon=3, seeds=2, progress=False)
    split = split_panel(panel, plan)
    runs = []
    for seed, valid_rmse in ((0, 2.0), (1, 1.0)):
        model = build_model("persistence", window=4, horizon=3, seed=seed)
        model.fit(split.train)
        runs.append(FitRun(seed, model, valid_rmse, 0.0))
    result = backtest_runs("persistence", runs, panel, split, plan, log=lambda _: None)
    assert [r.test is not None for r in result.runs] == [False, True]
    assert result.best.seed == 1 and result.backtest is result.runs[1].test
    kept = result.runs[1]
    assert kept.scores.metrics == kept.test.metrics
    assert set(kept.scores.losses) == set(kept.test.metrics["pooled"])
    np.testing.assert_array_equal(
        kept.scores.losses["3"], window_losses(kept.test.actual, kept.test.forecast.mean, 3)
    )
    assert result.runs[0].scores.n_windows == kept.test.n_windows


def test_the_statistic_is_an_ewc_t_test_written_out():
    """Computed here from the definitions (Lazarus, Lewis, Stock & Watson 2018): cosine
    transforms of the differential, their mean square as the long-run variance, t with
    B = floor(0.4 n / (lag + 1)) degrees of freedom."""
    rng = np.random.default_rng(7)
    n, lag = 120, 5
    d = ar1(n, 0.6, rng) + 0.4
    degrees = (4 * n) // (10 * (lag + 1))
    assert degrees == 8 == ewc_degrees(n, lag)
    transforms = [
        np.sqrt(2 / n) * sum(np.cos(np.pi * j * (t + 0.5) / n) * d[t] for t in range(n))
        for j in range(1, degrees + 1)
    ]
    long_run = float(np.mean(np.square(transforms)))
    assert ewc_long_run_variance(d, degrees) == pytest.approx(long_run, rel=1e-9)
    statistic = np.sqrt(n) * d.mean() / np.sqrt(long_run)
    p_value = 2 * stats.t.sf(abs(statistic), df=degrees)

    test = diebold_mariano(d + 1.0, np.ones(n), lag=lag)
    assert test.lag == lag and test.windows == n and test.df == degrees
    assert test.statistic == pytest.approx(statistic, rel=1e-9)
    assert test.p_value == pytest.approx(p_value, rel=1e-9)
    entry = test.to_dict()
    assert entry["df"] == degrees and entry["method"] == "ewc" and entry["hac_lag"] == lag
    assert "hln_factor" not in entry  # the EWC test scales nothing
    # short memory: Lazarus et al.'s 0.4 n^(2/3) caps the degrees of freedom
    assert ewc_degrees(1000, 0) == 40 and ewc_degrees(1000, 23) == 16


def test_equal_skill_overlapping_losses_are_called_significant_about_5_percent():
    """Equal-skill differentials with the overlap of 12 inputs and 12 steps (lag 23, 380
    windows as on los-loop): the rejection rate at 5 % is within three binomial standard
    deviations of 5 %. The old Newey-West rule (bandwidth 2 * lag, HLN, t(n - 1))
    rejects about 9 % of the same draws."""
    rng = np.random.default_rng(0)
    reps, lag, n = 2000, 23, 380
    d = moving_sum_differentials(n, lag, reps, rng)
    tolerance = 3 * np.sqrt(0.05 * 0.95 / reps)
    rate = float(np.mean(module_p_values(d, lag) < 0.05))
    assert abs(rate - 0.05) <= tolerance, rate
    old = float(np.mean(old_rule_p_values(d, lag) < 0.05))
    assert old > 0.05 + tolerance, old


def test_p_text_never_prints_a_zero_p_value():
    assert p_text(0.0) == "p < 1e-16" and p_text(1e-20) == "p < 1e-16"
    assert p_text(0.01234) == "p = 0.0123" and p_text(0.5) == "p = 0.5"


def test_degenerate_losses_give_a_defined_verdict():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=300) ** 2, rng.normal(size=300) ** 2
    # tiny units (squared errors of 1e-12): the same test as in units of 1, not "ahead"
    tiny = diebold_mariano(a * 1e-12, b * 1e-12, lag=5)
    assert tiny.p_value == pytest.approx(diebold_mariano(a, b, lag=5).p_value)
    assert tiny.verdict == "no significant difference"
    # identical up to rounding, and exactly identical
    assert diebold_mariano(a, a * (1 + 1e-13), lag=5).p_value == 1.0
    assert diebold_mariano(a, a.copy(), lag=5).verdict == "no significant difference"
    # the same gap in every window is a sure ordering
    gap = diebold_mariano(a, a + 0.5, lag=5)
    assert gap.p_value == 0.0 and gap.statistic == -np.inf and gap.verdict.startswith("ahead")
    # nothing to pair
    none = diebold_mariano(np.full(50, np.nan), b[:50], lag=3)
    assert none.verdict == "no significant difference"
    assert none.to_dict()["verdict_reason"] == "no window with both losses"
    # fewer windows than the lag needs: no verdict even on a clear gap (the lag was cut)
    few = diebold_mariano(a[:40], a[:40] + 1.0 + rng.normal(0, 0.1, 40), lag=23)
    assert np.isnan(few.p_value) and few.verdict == "no significant difference"
    assert few.to_dict()["verdict_reason"] == "too few windows (40 < 120)"
    # an overflowed forecast is an error, not a dropped window
    with pytest.raises(ValueError, match="2 window losses are infinite"):
        diebold_mariano(np.r_[np.inf, np.inf, a[2:]], b, lag=5)
    with pytest.raises(ValueError, match="HAC lag"):
        diebold_mariano(a, b, lag=-1)


def test_a_nan_forecast_of_an_observed_target_is_an_error_not_a_missing_target():
    actual = np.ones((4, 2, 3))
    forecast = actual.copy()
    forecast[2, 1, 0] = np.nan
    with pytest.raises(ValueError, match=r"1 forecasts are NaN/inf .*\(first in window 2\)"):
        window_losses(actual, forecast, steps=2)
    actual[2, 1, 0] = np.nan  # a missing target may have any forecast
    assert window_losses(actual, forecast, steps=2)[2] == 0.0


def test_holm_adjusts_over_the_family_and_keeps_the_raw_p_value():
    def test(p: float) -> PairedTest:
        return PairedTest(-1.0, -3.0, p, 10, 300)

    family = holm_family({"a": test(0.01), "b": test(0.02), "c": test(0.04), "d": test(0.5)})
    assert [family[k].p_adjusted for k in "abcd"] == pytest.approx([0.04, 0.06, 0.08, 0.5])
    assert family["a"].verdict == "ahead (p < 0.05)"
    raw_only = family["b"].to_dict()
    assert raw_only["verdict"] == "no significant difference"  # raw 0.02 < 0.05
    assert raw_only["p_value"] == 0.02 and raw_only["p_value_adjusted"] == pytest.approx(0.06)
    assert raw_only["verdict_p"] == "p_value_adjusted"
    assert raw_only["p_adjustment"] == "holm over 4 tests"
    untested = holm_family({"a": test(0.01), "x": test(float("nan"))})
    assert untested["a"].p_adjusted == 0.01 and untested["x"].p_adjusted is None


def _claims(losses: dict, window: int = 1) -> dict:
    rmse = {name: {"3": float(np.sqrt(np.mean(runs[0]["3"])))} for name, runs in losses.items()}
    return champion_claims(losses, rmse, "champ", window=window)


def test_champion_claims_adjust_over_every_model_and_horizon():
    """One model ahead at raw p = 0.03 among four tested: not a claim once the family of
    four tests is accounted for."""
    rng = np.random.default_rng(5)
    base = np.abs(rng.normal(size=300)) + 1.0
    z = rng.normal(size=300)
    z = (z - z.mean()) / z.std()
    losses = {"champ": [{"3": base}], "x": [{"3": base - 0.14 + z}]}
    for i in range(3):
        losses[f"same{i}"] = [{"3": base + rng.normal(size=300)}]
    test = _claims(losses)["significance"]["x"]["3"]
    assert 0.0125 < test["p_value"] < 0.05
    assert test["verdict"] == "no significant difference"
    assert test["p_adjustment"] == "holm over 4 tests" and test["p_value_adjusted"] >= 0.05
    assert test["verdict_reason"] is None


def test_a_claim_needs_every_seed_on_its_side():
    rng = np.random.default_rng(6)
    base = np.abs(rng.normal(size=400)) + 2.0
    noise = rng.normal(0, 0.05, size=(4, 400))
    lucky = [{"3": base - 1.0 + noise[0]}, {"3": base + 0.1 + noise[1]}]  # one seed behind
    steady = [{"3": base - 0.5 + noise[2]}, {"3": base - 0.4 + noise[3]}]
    champ = [{"3": base}]
    claims = _claims({"champ": champ, "lucky": lucky, "steady": steady})["significance"]
    assert claims["lucky"]["3"]["verdict"] == "no significant difference"
    assert claims["lucky"]["3"]["p_value_adjusted"] < 0.05  # the seed average is ahead
    assert claims["lucky"]["3"]["seeds_agree"] is False
    assert claims["lucky"]["3"]["verdict_reason"] == "seeds disagree"
    assert claims["steady"]["3"]["verdict"] == "ahead (p < 0.05)"
    assert claims["steady"]["3"]["seeds_agree"] is True
    # the champion's seeds count too: one champion seed better than the model's average
    split_champ = [{"3": base + 1.0}, {"3": base - 0.6}]
    claims = _claims({"champ": split_champ, "steady": steady})["significance"]
    assert claims["steady"]["3"]["verdict_reason"] == "seeds disagree"


def test_a_zero_p_value_is_shown_as_below_double_precision():
    from flows.reporting.tables import claims_rows

    sure = {"p_value": 0.0, "p_value_adjusted": 0.0, "verdict": "behind (p < 0.05)"}
    document = {
        "champion": "a",
        "significance": {"b": {"3": sure}},
        "regret": {"3": {"regret": 1.0, "best": "a"}},
    }
    _, rows = claims_rows(document)
    assert rows[0][1] == "champion ahead (p < 1e-16)"


def _result_file(tmp_path: Path) -> Path:
    """A forecast_accuracy.json as the benchmark writes it, with made-up losses: TGC-LSTM
    (champion) 10 % below AR in every window, level with the LSTM."""
    rng = np.random.default_rng(4)
    n = 380
    base = np.abs(moving_sum_differentials(n, 23, 1, rng)[0]) + 20.0
    losses = {
        "tgclstm": [base * 0.9 + rng.normal(0, 0.01, n) for _ in range(2)],
        "lstm": [base * 0.9 + rng.normal(0, 0.3, n) for _ in range(2)],
        "ar": [base],
    }
    stale = {"p_value": 0.5, "p_value_adjusted": 0.5, "verdict": "no significant difference"}
    document = {
        "benchmark": "forecast_accuracy",
        "metrics": {
            "window": 12,
            "champion": "tgclstm",
            "models": {
                name: {"pooled": {h: {"rmse": float(np.sqrt(np.mean(runs))), "mae": 1.0}
                                  for h in ("3", "12")}}
                for name, runs in losses.items()
            },
            "significance": {}, "regret": {},
        },
        "tgclstm_tests": {"ar": {"3": stale, "12": stale}},
        "window_losses": {
            name: {h: [[None if i == 0 else round(float(v), 6) for i, v in enumerate(run)]
                       for run in runs] for h in ("3", "12")}
            for name, runs in losses.items()
        },
    }  # fmt: skip
    path = tmp_path / "forecast_accuracy.json"
    path.write_text(json.dumps(document))
    return path


def test_rescore_recomputes_every_paired_test_from_the_stored_losses(tmp_path, monkeypatch, capsys):
    from benchmarks.forecast_accuracy import main

    path = _result_file(tmp_path)
    monkeypatch.setenv("ROADCAST_BENCH_RESULTS", str(tmp_path))
    main(["--rescore"])
    document = json.loads(path.read_text())
    tests = document["tgclstm_tests"]
    assert set(tests) == {"lstm", "ar"} and set(tests["ar"]) == {"3", "12"}
    ar = tests["ar"]["12"]
    assert ar["verdict"] == "ahead (p < 0.05)" and ar["method"] == "ewc"
    assert ar["windows"] == 379 and ar["hac_lag"] == 23 and ar["df"] == 6  # window 0 is null
    assert tests["lstm"]["3"]["verdict"] == "no significant difference"
    assert document["checks"]["tgclstm_significantly_ahead_of_ar_12"] is True
    significance = document["metrics"]["significance"]
    assert set(significance) == {"lstm", "ar"} and significance["ar"]["3"]["df"] == 10
    assert significance["ar"]["3"]["verdict"] == "behind (p < 0.05)"  # against the champion
    assert document["metrics"]["regret"]["3"]["best"] == "tgclstm"
    note = document["rescored"]
    assert note["command"] == "python -m benchmarks.forecast_accuracy --rescore"
    assert note["original_tgclstm_tests"]["ar"]["3"]["p_value"] == 0.5
    main(["--rescore"])  # again: the same tests, the run's own p-values still kept
    again = json.loads(path.read_text())
    assert again["tgclstm_tests"] == tests
    assert again["rescored"]["original_tgclstm_tests"]["ar"]["3"]["p_value"] == 0.5
    out = capsys.readouterr().out
    assert "TGC-LSTM against each model" in out and "rewrote" in out


def test_rescore_without_stored_losses_says_so(tmp_path):
    from benchmarks.forecast_accuracy import rescore

    path = tmp_path / "forecast_accuracy.json"
    path.write_text(json.dumps({"metrics": {}}))
    with pytest.raises(SystemExit, match="keeps no per-window losses"):
        rescore(path)
    with pytest.raises(SystemExit, match="cannot rescore"):
        rescore(tmp_path / "missing.json")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.test_significance")
    parser.add_argument("--reps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    rejection_table(options.reps, options.seed)
