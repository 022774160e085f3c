"""Paired tests over test windows (Diebold-Mariano, HAC) and the champion's claims."""

from __future__ import annotations

import numpy as np
import pytest

from models.forecasters.claims import champion_claims, validation_champion
from models.significance import PairedTest, diebold_mariano, holm_family, window_losses


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


def test_the_statistic_is_a_direct_newey_west_sum_with_the_hln_correction():
    """Computed here from the definitions: Bartlett weights over twice the overlap lag,
    autocovariances around the mean divided by n, HLN's factor for that many lags, t(n-1)."""
    from scipy import stats

    rng = np.random.default_rng(7)
    n, lag = 120, 5
    d = ar1(n, 0.6, rng) + 0.4
    bandwidth = 2 * lag
    e = d - d.mean()
    gamma = [e[k:] @ e[: n - k] / n for k in range(bandwidth + 1)]
    long_run = gamma[0] + 2 * sum(
        (1 - k / (bandwidth + 1)) * gamma[k] for k in range(1, bandwidth + 1)
    )
    k = bandwidth + 1
    factor = np.sqrt((n + 1 - 2 * k + k * (k - 1) / n) / n)
    assert factor**2 == pytest.approx((n - k) * (n - k + 1) / n**2, rel=1e-12)
    statistic = d.mean() / np.sqrt(long_run / n) * factor
    p_value = 2 * stats.t.sf(abs(statistic), df=n - 1)

    test = diebold_mariano(d + 1.0, np.ones(n), lag=lag)
    assert test.lag == bandwidth and test.windows == n
    assert test.hln_factor == pytest.approx(factor, rel=1e-12)
    assert test.statistic == pytest.approx(statistic, rel=1e-9)
    assert test.p_value == pytest.approx(p_value, rel=1e-9)
    assert test.to_dict()["hln_factor"] == pytest.approx(factor)


def test_overlapping_window_noise_keeps_near_nominal_size():
    """Overlapping windows make a triangular autocorrelation out to the overlap lag (a
    moving sum); a Bartlett kernel only that wide called about 17 % of these equal-skill
    pairs significant at 5 %."""
    rng = np.random.default_rng(0)
    lag, n = 23, 380
    rejections = 0
    for _ in range(200):
        d = np.convolve(rng.normal(size=n + lag), np.ones(lag + 1), "valid")
        rejections += diebold_mariano(d + 50.0, np.full(n, 50.0), lag=lag).p_value < 0.05
    assert rejections <= 26  # about 10 % here; 5 % nominal


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
    assert few.to_dict()["verdict_reason"] == "too few windows (40 < 94)"
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
