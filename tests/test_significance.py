"""Paired tests over test windows (Diebold-Mariano, HAC) and the champion's claims."""

from __future__ import annotations

import numpy as np
import pytest

from models.forecasters.claims import champion_claims, validation_champion
from models.significance import diebold_mariano, window_losses


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
