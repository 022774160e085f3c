"""AR(p) per sensor (statsmodels ``AutoReg``), forecast for all sensors at once.

Fitting, per sensor, on the training part only:

* the order ``p`` is chosen by ``ar_select_order`` (AIC or BIC, lags ``0..max_lag``,
  constant trend);
* a fully observed series is fitted by ``AutoReg(y, lags=p, trend="c").fit()``
  (conditional least squares);
* a series with gaps is fitted on its observed stretches: the order is selected on the
  longest stretch, and the coefficients are the same conditional least squares over
  every row whose target and ``p`` lags are all observed (rows from every stretch
  longer than ``p``), with ``sigma2 = SSR / rows`` as ``AutoReg`` does; with no gap
  this is exactly ``AutoReg``;
* a sensor with too little data for any lag (longest stretch < ``3 * max_lag + 10``
  after shrinking ``max_lag``; or constant) becomes a mean model (``p = 0``), and a
  sensor never observed forecasts the mean of all sensors. The rule used is recorded
  per sensor in ``params.json`` (``"rule"``).

Forecasting stacks the coefficients into ``coef [node, P]`` (zero beyond each sensor's
``p``) and runs the recursion ``ŷ_{t+1} = c + Σ_k φ_k y_{t+1-k}`` for every window and
sensor at once: the only Python loop is over the horizon. Missing inputs are filled as
in ``models.forecasters.windows`` (last observed in the window, else the training mean).

Intervals are the model's own: ``ŷ ± z σ sqrt(Σ_{j<h} ψ_j²)`` with the ψ (MA(∞))
weights of the fitted AR polynomial, as ``AutoRegResults.get_prediction`` computes
them. Parameters are saved as JSON (``params.json``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
from scipy.special import ndtri  # the normal quantile; scipy.stats takes ~1 s to import

from models.bundle import BundleError, read_model_bundle, save_bundle
from models.forecasters.base import (
    BatchForecast,
    ForecasterBase,
    forecaster_config,
    restore_forecaster,
)
from models.forecasters.evaluation import finish_fit
from models.forecasters.windows import check_2d, check_origins, fill_forward, gather, training_means
from models.panel import SensorPanel

InfoCriterion = Literal["aic", "bic", "hqic"]


@dataclass(frozen=True)
class SensorAR:
    """One sensor's fit: ``y_t = const + Σ_{k=1..p} coef[k-1] y_{t-k} + e_t``, Var e = sigma2."""

    const: float
    coef: tuple[float, ...]
    sigma2: float
    rule: str  # "autoreg" | "stretches" | "mean" | "unobserved"

    @property
    def order(self) -> int:
        return len(self.coef)


def _stretches(observed: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` of each run of True in ``observed``."""
    padded = np.concatenate([[False], observed, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _lag_rows(y: np.ndarray, runs: list[tuple[int, int]], p: int) -> tuple[np.ndarray, np.ndarray]:
    """Design ``[1, y_{t-1} .. y_{t-p}]`` and target ``y_t`` over rows inside the runs."""
    xs, ts = [], []
    for start, stop in runs:
        if stop - start <= p:
            continue
        seg = y[start:stop]
        rows = np.arange(p, stop - start)
        lags = np.stack([seg[rows - k] for k in range(1, p + 1)], axis=1) if p else None
        const = np.ones((len(rows), 1))  # [rows, 1]
        xs.append(const if lags is None else np.hstack([const, lags]))
        ts.append(seg[rows])
    if not xs:
        return np.empty((0, p + 1)), np.empty(0)
    return np.vstack(xs), np.concatenate(ts)  # [rows, 1 + p], [rows]


def fit_sensor(y: np.ndarray, *, max_lag: int, ic: InfoCriterion, fallback: float) -> SensorAR:
    """Fit one sensor's series ``y`` (float64 ``[time]``, NaN = missing); see module docstring."""
    from statsmodels.tsa.ar_model import AutoReg, ar_select_order

    observed = np.isfinite(y)
    if not observed.any():
        return SensorAR(fallback, (), 0.0, "unobserved")
    obs = y[observed]
    mean_model = SensorAR(float(obs.mean()), (), float(obs.var()), "mean")
    if obs.size < 2 or np.ptp(obs) < 1e-9:
        return mean_model
    runs = _stretches(observed)
    longest_start, longest_stop = max(runs, key=lambda r: r[1] - r[0])
    longest = y[longest_start:longest_stop]
    lag_cap = min(max_lag, (len(longest) - 10) // 3)
    if lag_cap < 1:
        return mean_model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' convergence/frequency chatter
        selected = ar_select_order(longest, maxlag=lag_cap, ic=ic, trend="c")
        p = max(selected.ar_lags) if selected.ar_lags else 0
        if observed.all():
            res = AutoReg(y, lags=p, trend="c").fit()
            params = np.asarray(res.params, dtype=np.float64)
            return SensorAR(
                float(params[0]), tuple(params[1:].tolist()), float(res.sigma2), "autoreg"
            )
    design, target = _lag_rows(y, runs, p)
    if len(target) <= p + 1:
        return mean_model
    params, *_ = np.linalg.lstsq(design, target, rcond=None)
    resid = target - design @ params
    sigma2 = float(resid @ resid / len(target))
    return SensorAR(float(params[0]), tuple(params[1:].tolist()), sigma2, "stretches")


def ar_forecast(
    const: np.ndarray, coef: np.ndarray, history: np.ndarray, horizon: int
) -> np.ndarray:
    """Recursive multi-step AR forecasts for many windows and sensors at once.

    Parameters
    ----------
    const : ``[node]``; coef : ``[node, P]`` (``coef[:, k-1]`` multiplies lag ``k``).
    history : ``[n, P, node]``, the last ``P`` inputs of each window, oldest first, no NaN.

    Returns
    -------
    float64 ``[n, horizon, node]``.
    """
    lags = history[:, ::-1, :].astype(np.float64)  # [n, P, node], lag 1 first
    weights = coef.T[None, :, :]  # [1, P, node]
    out = np.empty((history.shape[0], horizon, history.shape[2]))  # [n, horizon, node]
    for h in range(horizon):
        step = const[None, :] + (lags * weights).sum(axis=1)  # [n, node]
        out[:, h] = step
        if lags.shape[1]:
            lags = np.concatenate([step[:, None, :], lags[:, :-1]], axis=1)
    return out


def psi_weights(coef: np.ndarray, horizon: int) -> np.ndarray:
    """MA(∞) weights ψ_0..ψ_{horizon-1} of each sensor's AR polynomial: ``[node, horizon]``."""
    nodes, order = coef.shape
    psi = np.zeros((nodes, horizon))  # [node, horizon]
    psi[:, 0] = 1.0
    for j in range(1, horizon):
        k = np.arange(1, min(j, order) + 1)
        psi[:, j] = (coef[:, k - 1] * psi[:, j - k]).sum(axis=1)
    return psi


class AutoRegressive(ForecasterBase):
    """AR(p) per sensor with order selection; vectorised recursive forecasts."""

    name: ClassVar[str] = "ar"
    PROBABILISTIC: ClassVar[bool] = True

    def __init__(
        self,
        *,
        window: int = 12,
        horizon: int = 12,
        level: float = 0.9,
        max_lag: int | None = None,
        ic: InfoCriterion = "aic",
    ) -> None:
        """``max_lag`` defaults to ``window``; after ``fit`` the model's ``window`` is the
        largest selected order (at least 1), the input it really needs."""
        if horizon < 1 or window < 1:
            raise ValueError(f"window and horizon must be >= 1, got {window}, {horizon}")
        if not 0.0 < level < 1.0:
            raise ValueError(f"interval level must be in (0, 1), got {level}")
        if ic not in ("aic", "bic", "hqic"):
            raise ValueError(f"ic must be 'aic', 'bic' or 'hqic', got {ic!r}")
        self.max_lag = max_lag if max_lag is not None else window
        if self.max_lag < 0:
            raise ValueError(f"max_lag must be >= 0, got {self.max_lag}")
        self.ic: InfoCriterion = ic
        self.window = window
        self.horizon = horizon
        self.level = level
        self.sensor_ids = ()
        self.halfwidth = None
        self.fits: tuple[SensorAR, ...] = ()
        self.fill = np.empty(0)
        self.fingerprint: str | None = None
        self.valid_metrics: dict[str, Any] | None = None

    # stacked parameters, rebuilt from ``fits``
    def _stack(self) -> None:
        order = max([f.order for f in self.fits] + [1])
        self.const = np.array([f.const for f in self.fits])  # [node]
        self.coef = np.zeros((len(self.fits), order))  # [node, P]
        for i, f in enumerate(self.fits):
            self.coef[i, : f.order] = f.coef
        self.sigma2 = np.array([f.sigma2 for f in self.fits])  # [node]
        self.window = order
        psi = psi_weights(self.coef, self.horizon)  # [node, horizon]
        z = ndtri(0.5 + self.level / 2.0)
        self.ar_halfwidth = (z * np.sqrt(self.sigma2[:, None] * np.cumsum(psi**2, axis=1))).T

    def fit(self, panel: SensorPanel, *, valid: SensorPanel | None = None) -> Self:
        check_2d(panel, self.name)
        self.sensor_ids = panel.sensor_ids
        self.fill = training_means(panel)
        values = panel.values.astype(np.float64)
        self.fits = tuple(
            fit_sensor(values[:, i], max_lag=self.max_lag, ic=self.ic, fallback=self.fill[i])
            for i in range(panel.n_nodes)
        )
        self._stack()
        finish_fit(self, panel, valid)
        return self

    def predict_mean(self, panel: SensorPanel, origins: np.ndarray) -> np.ndarray:
        """float64 ``[n, horizon, node]`` point forecasts (the exact recursion)."""
        self.check_panel(panel)
        origins = check_origins(panel, origins, self.window)
        values, mask = gather(panel, origins, self.window)  # [n, P, node]
        history = fill_forward(values, mask, self.fill)
        return ar_forecast(self.const, self.coef, history, self.horizon)

    def predict_batch(self, panel: SensorPanel, origins: np.ndarray) -> BatchForecast:
        origins = np.asarray(origins, dtype=np.int64)
        mean = self.floored(self.predict_mean(panel, origins))
        half = self.ar_halfwidth[None]  # [1, horizon, node]
        with np.errstate(over="ignore"):  # beyond float32: inf, which callers drop and count
            return BatchForecast(
                self.name,
                origins,
                mean.astype(np.float32),
                self.floored(mean - half).astype(np.float32),
                (mean + half).astype(np.float32),
                level=self.level,
            )

    def describe(self) -> dict[str, Any]:
        return {
            "window": self.max_lag,
            "horizon": self.horizon,
            "level": self.level,
            "max_lag": self.max_lag,
            "ic": self.ic,
        }

    def save(self, directory: str | Path) -> None:
        params = {
            "sensor_ids": list(self.sensor_ids),
            "const": [f.const for f in self.fits],
            "coef": [list(f.coef) for f in self.fits],
            "sigma2": [f.sigma2 for f in self.fits],
            "rule": [f.rule for f in self.fits],
            "fill": self.fill.tolist(),
        }
        orders = [f.order for f in self.fits]
        config = forecaster_config(
            self,
            self.describe(),
            orders={"min": min(orders), "max": max(orders), "mean": float(np.mean(orders))},
        )
        save_bundle(directory, config=config, params=params)

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        bundle = read_model_bundle(directory, cls.name)
        params = bundle.params
        if params is None:
            raise BundleError(f"AR bundle {directory} has no params.json; retrain it")
        model = cls(**bundle.config["hyper"])
        restore_forecaster(model, bundle.config)
        if list(params["sensor_ids"]) != list(model.sensor_ids):
            raise BundleError(f"AR bundle {directory}: params and config disagree on sensors")
        model.fits = tuple(
            SensorAR(float(c), tuple(float(v) for v in k), float(s), str(r))
            for c, k, s, r in zip(
                params["const"], params["coef"], params["sigma2"], params["rule"], strict=True
            )
        )
        model.fill = np.asarray(params["fill"], dtype=np.float64)
        numbers = [model.fill, *([f.const, *f.coef, f.sigma2] for f in model.fits)]
        if not all(np.isfinite(np.asarray(n, dtype=np.float64)).all() for n in numbers):
            raise BundleError(f"AR bundle {directory}: non-finite parameters; retrain it")
        model._stack()
        return model
