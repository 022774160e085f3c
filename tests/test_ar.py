"""AR(p): the vectorised recursion equals statsmodels; gaps; fallbacks; JSON params."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from statsmodels.tsa.ar_model import AutoReg, ar_select_order

from models.forecasters.ar import (
    AutoRegressive,
    _lag_rows,
    _stretches,
    ar_forecast,
    fit_sensor,
    psi_weights,
)
from models.panel import SensorPanel


def ar_series(n: int, phi: list[float], seed: int, c: float = 5.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = np.zeros(n + 200)
    for t in range(len(phi), len(y)):
        y[t] = c + sum(p * y[t - k - 1] for k, p in enumerate(phi)) + rng.normal()
    return y[200:]


def panel_of(columns: list[np.ndarray]) -> SensorPanel:
    values = np.stack(columns, axis=1)
    stamps = pd.date_range("2024-01-01", periods=len(values), freq="5min", tz="UTC")
    return SensorPanel.from_values(values, stamps, [f"s{i}" for i in range(values.shape[1])])


@pytest.fixture(scope="module")
def fitted() -> tuple[AutoRegressive, SensorPanel]:
    columns = [
        ar_series(500, [0.6, 0.2], seed=1),
        ar_series(500, [0.9], seed=2),
        ar_series(500, [0.5, -0.3, 0.2], seed=3),
    ]
    # float32 panel values are what the model sees: give statsmodels the same numbers
    panel = panel_of([c.astype(np.float32) for c in columns])
    return AutoRegressive(window=8, horizon=6, ic="aic").fit(panel), panel


def test_order_and_coefficients_are_statsmodels(fitted):
    model, panel = fitted
    for i, fit in enumerate(model.fits):
        y = panel.values[:, i].astype(np.float64)
        lags = ar_select_order(y, maxlag=8, ic="aic", trend="c").ar_lags
        p = max(lags) if lags else 0
        res = AutoReg(y, lags=p, trend="c").fit()
        assert fit.order == p and fit.rule == "autoreg"
        np.testing.assert_allclose([fit.const, *fit.coef], res.params, rtol=0, atol=1e-12)
        assert fit.sigma2 == pytest.approx(res.sigma2, rel=1e-12)


def test_vectorised_forecast_equals_statsmodels_forecast_and_dynamic_predict(fitted):
    model, panel = fitted
    n = panel.n_time
    # from the end of the training series: AutoRegResults.forecast
    ours = model.predict_mean(panel, np.array([n - 1]))[0]  # [horizon, node]
    # at in-sample origins: AutoRegResults.predict with dynamic forecasting from origin+1
    origins = np.array([100, 250, 401])
    ours_in = model.predict_mean(panel, origins)  # [3, horizon, node]
    for i, fit in enumerate(model.fits):
        y = panel.values[:, i].astype(np.float64)
        res = AutoReg(y, lags=fit.order, trend="c").fit()
        np.testing.assert_allclose(ours[:, i], res.forecast(model.horizon), rtol=0, atol=1e-8)
        for k, o in enumerate(origins):
            theirs = res.predict(start=o + 1, end=o + model.horizon, dynamic=True)
            np.testing.assert_allclose(ours_in[k, :, i], theirs, rtol=0, atol=1e-8)


def test_intervals_equal_statsmodels_prediction_intervals(fitted):
    model, panel = fitted
    n = panel.n_time
    batch = model.predict_batch(panel, np.array([n - 1]))
    for i, fit in enumerate(model.fits):
        y = panel.values[:, i].astype(np.float64)
        res = AutoReg(y, lags=fit.order, trend="c").fit()
        ci = res.get_prediction(start=n, end=n + model.horizon - 1).conf_int(alpha=1 - model.level)
        np.testing.assert_allclose(batch.lower[0, :, i], ci[:, 0], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(batch.upper[0, :, i], ci[:, 1], rtol=1e-5, atol=1e-4)
        half = model.ar_halfwidth[:, i]
        np.testing.assert_allclose(half, (ci[:, 1] - ci[:, 0]) / 2, rtol=0, atol=1e-8)


def test_psi_weights_of_ar1_are_powers():
    psi = psi_weights(np.array([[0.5, 0.0]]), 4)
    np.testing.assert_allclose(psi[0], [1, 0.5, 0.25, 0.125])


def test_ar_forecast_by_hand():
    const, coef = np.array([1.0]), np.array([[0.5, 0.25]])
    history = np.array([[[2.0], [4.0]]])  # oldest first: y_{t-1}=2, y_t=4
    out = ar_forecast(const, coef, history, 2)[0, :, 0]
    first = 1 + 0.5 * 4 + 0.25 * 2
    assert out[0] == pytest.approx(first)
    assert out[1] == pytest.approx(1 + 0.5 * first + 0.25 * 4)


def test_gaps_fit_on_observed_stretches_only():
    y = ar_series(600, [0.7], seed=4)
    y[200:230] = np.nan
    fit = fit_sensor(y, max_lag=4, ic="bic", fallback=0.0)
    assert fit.rule == "stretches"
    runs = _stretches(np.isfinite(y))
    assert runs == [(0, 200), (230, 600)]
    design, target = _lag_rows(y, runs, fit.order)
    assert np.isfinite(design).all() and np.isfinite(target).all()
    assert len(target) == (200 - fit.order) + (370 - fit.order)  # no row crosses the gap
    params, *_ = np.linalg.lstsq(design, target, rcond=None)
    np.testing.assert_allclose([fit.const, *fit.coef], params, atol=1e-10)
    # without the gap, the stretch rule is AutoReg's conditional least squares
    full = ar_series(600, [0.7], seed=4)
    d, t = _lag_rows(full, [(0, 600)], 2)
    ols, *_ = np.linalg.lstsq(d, t, rcond=None)
    np.testing.assert_allclose(ols, AutoReg(full, lags=2, trend="c").fit().params, atol=1e-9)


def test_fallbacks_for_short_constant_and_unobserved_sensors():
    nan = np.full(100, np.nan)
    assert fit_sensor(nan, max_lag=4, ic="aic", fallback=3.0).rule == "unobserved"
    assert fit_sensor(nan, max_lag=4, ic="aic", fallback=3.0).const == 3.0
    assert fit_sensor(np.full(100, 7.0), max_lag=4, ic="aic", fallback=0.0).rule == "mean"
    short = np.full(100, np.nan)
    short[::2] = np.arange(50.0)  # never two observations in a row
    fit = fit_sensor(short, max_lag=4, ic="aic", fallback=0.0)
    assert fit.rule == "mean" and fit.const == pytest.approx(24.5)


def test_panel_with_gaps_forecasts_every_sensor(tmp_path):
    cols = [ar_series(400, [0.8], seed=s) for s in range(3)]
    cols[1][50:60] = np.nan
    cols[2][:] = np.nan
    panel = panel_of(cols)
    model = AutoRegressive(window=6, horizon=4).fit(panel)
    assert [f.rule for f in model.fits] == ["autoreg", "stretches", "unobserved"]
    batch = model.predict_batch(panel, np.arange(10, 390))
    assert np.isfinite(batch.mean).all() and np.isfinite(batch.upper).all()
    model.save(tmp_path / "ar")
    params = json.loads((tmp_path / "ar" / "params.json").read_text())
    assert params["rule"] == ["autoreg", "stretches", "unobserved"]
    assert len(params["coef"]) == 3


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="ic must be"):
        AutoRegressive(ic="xyz")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_lag"):
        AutoRegressive(max_lag=-1)
