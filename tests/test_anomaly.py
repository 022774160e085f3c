"""Conformal calibration, score combination and the forecast-interval detector (spike,
level shift, context anomaly, quiet on clean data, forecasts given by a service, attach
after load). The contract every detector keeps: tests/test_detectors_contract.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.anomaly.base import (
    Detection,
    DetectorError,
    check_tick,
    combine,
    combine_scores,
)
from models.anomaly.calibration import ConformalPool
from models.anomaly.interval import ForecastIntervalDetector, IntervalConfig
from models.forecasters.registry import model_class

FLAG = 0.99  # a detector "flags" a tick at this score (p <= 0.01)
QUIET = 0.02  # share of clean ticks allowed at FLAG or above (calibrated: 0.01)


# --------------------------------------------------------------------------- calibration


def test_conformal_pvalues_are_ranks_with_an_exponential_tail() -> None:
    pool = ConformalPool(1, capacity=100, min_count=5)
    pool.extend(np.arange(1.0, 100.0)[:, None])  # 1 .. 99
    p = [float(pool.pvalues(np.array([a]))[0]) for a in (0.0, 50.0, 99.0, 100.0, 120.0)]
    assert p[0] == 1.0
    assert p[1] == pytest.approx(51 / 100)  # 1 + #{>= 50} = 1 + 50
    assert p[2] == pytest.approx(2 / 100)
    # Beyond the maximum the p-value keeps falling with the distance.
    assert p[2] > p[3] > p[4] > 0


def test_conformal_pvalues_are_uniform_on_exchangeable_data() -> None:
    rng = np.random.default_rng(0)
    pool = ConformalPool(1, capacity=5000)
    pool.extend(rng.normal(size=(2000, 1)))
    p = np.array([pool.pvalues(rng.normal(size=1))[0] for _ in range(2000)])
    assert abs((p <= 0.1).mean() - 0.1) < 0.025
    assert abs((p <= 0.5).mean() - 0.5) < 0.05


def test_pool_needs_min_count_drops_oldest_and_round_trips() -> None:
    pool = ConformalPool(2, capacity=4, min_count=3)
    pool.append(np.array([1.0, np.nan]))
    assert np.isnan(pool.pvalues(np.array([1.0, 1.0]))).all()
    for v in (2.0, 3.0, 4.0, 5.0):
        pool.append(np.array([v, v]))
    assert list(pool.counts) == [4, 4]
    # 1.0 was dropped from row 0: four values 2..5 remain, all >= 1.5
    assert pool.pvalues(np.array([1.5, 1.5]))[0] == pytest.approx(1.0)
    again = ConformalPool.from_state(pool.state("x"), "x")
    np.testing.assert_array_equal(
        again.pvalues(np.array([4.5, 3.0])), pool.pvalues(np.array([4.5, 3.0]))
    )
    assert pool.quantile(0.5)[0] == pytest.approx(4.0)
    with pytest.raises(DetectorError, match=r"inconsistent|lacks"):
        ConformalPool.from_state({"x.data": np.zeros((1, 2))}, "x")


def test_pool_stores_what_it_holds_and_scores_like_a_brute_force_ranking() -> None:
    """Buffers grow with the statistics (a small calibration set is small to scan and
    save); the p-values stay the plain conformal ranks through growth and wrap-around."""
    rng = np.random.default_rng(3)
    pool = ConformalPool(3, capacity=300, min_count=1)
    pool.extend(rng.normal(size=(40, 3)))
    assert pool.state("x")["x.data"].shape == (3, 64)
    held: list[list[float]] = [list(c) for c in pool.state("x")["x.data"][:, :40]]
    for _ in range(400):
        stat = rng.normal(size=3)
        stat[rng.random(3) < 0.2] = np.nan  # rows skip ticks at different rates
        pool.append(stat)
        for row, value in enumerate(stat):
            if np.isfinite(value):
                held[row] = (held[row] + [float(value)])[-300:]
        probe = rng.normal(size=3) * 0.5
        expected = [
            (1 + sum(v >= a for v in h)) / (len(h) + 1) for h, a in zip(held, probe, strict=True)
        ]
        np.testing.assert_allclose(pool.pvalues(probe), expected)
    assert pool.state("x")["x.data"].shape == (3, 300)
    again = ConformalPool.from_state(pool.state("x"), "x")  # its tail scale is fresh
    # Quantiles and the tail beyond the maximum, row by row, as numpy computes them.
    for row, values in enumerate(np.sort(np.array(held), axis=1)):
        k = min(int(np.ceil((len(values) + 1) * 0.9)), len(values)) - 1
        assert pool.quantile(0.9)[row] == values[k]
        far = np.zeros(3)
        far[row] = 2 * values[-1] - np.quantile(values, 0.9)  # one tail scale beyond the max
        assert again.pvalues(far)[row] == pytest.approx(np.exp(-1.0) / (len(values) + 1))
    np.testing.assert_array_equal(again.pvalues(np.zeros(3)), pool.pvalues(np.zeros(3)))


def test_pot_tail_is_not_hidden_by_anomalies_in_the_calibration() -> None:
    """Five incident-sized residuals among 995 ordinary ones: the "max" tail cannot give a
    sixth one a p-value below 6 / 1001; the peaks-over-threshold tail, read from quantiles
    up to the 97.5 %, can, and it equals the conformal rank below the 90 %."""
    rng = np.random.default_rng(5)
    calibration = np.concatenate([np.abs(rng.normal(size=995)), np.full(5, 40.0)])[:, None]
    plain, pot = ConformalPool(1, 2000), ConformalPool(1, 2000, tail="pot")
    plain.extend(calibration)
    pot.extend(calibration)
    incident = np.array([40.0])
    assert plain.pvalues(incident)[0] == pytest.approx(6 / 1001)
    u, q95 = np.quantile(calibration[:, 0], [0.9, 0.95])

    def pickands(q: float) -> float:
        low, mid, high = np.quantile(calibration[:, 0], [q, (1 + q) / 2, (3 + q) / 4])
        return float(np.clip(np.log2((high - mid) / (mid - low)), 0.0, 1.0))

    shape = np.mean([pickands(0.8), pickands(0.85), pickands(0.9)])
    x = (40.0 - u) / (q95 - u)
    if shape > 1e-6:
        expected = 0.1 * (1 + (2**shape - 1) * x) ** (-1 / shape)
    else:
        expected = 0.1 * 2.0**-x
    assert pot.pvalues(incident)[0] == pytest.approx(expected)
    assert expected < 1e-6
    ordinary = np.array([np.quantile(calibration[:, 0], 0.5)])
    assert pot.pvalues(ordinary)[0] == plain.pvalues(ordinary)[0]
    # The tail setting travels with a saved pool; a bundle without it loads as "max".
    again = ConformalPool.from_state(pot.state("p"), "p")
    assert again.tail == "pot"
    assert again.pvalues(incident)[0] == pot.pvalues(incident)[0]
    old = plain.state("q")
    old["q.shape"] = old["q.shape"][:3]
    assert ConformalPool.from_state(old, "q").tail == "max"
    with pytest.raises(DetectorError, match="tail must be one of max, pot"):
        ConformalPool(1, tail="gev")  # type: ignore[arg-type]


def test_pot_shape_is_steady_from_pool_to_pool() -> None:
    """Exponential statistics (shape 0), 800 per row as in a validation week of a sensor:
    the averaged Pickands shape varies about half as much from row to row as the single
    estimate from q90, q95 and q97.5, and no row reaches the cap, which would make it
    blind to outliers."""
    rng = np.random.default_rng(3)
    stats = rng.exponential(size=(800, 300))
    pool = ConformalPool(300, 1000, tail="pot")
    pool.extend(stats)
    u, q95, q975 = np.quantile(stats, [0.9, 0.95, 0.975], axis=0)
    single = np.clip(np.log2((q975 - q95) / (q95 - u)), 0.0, 1.0)
    shapes = pool._shape
    assert shapes.std() < 0.6 * single.std() and shapes.max() < 1.0
    assert abs(shapes.mean()) < 0.2


def test_pot_tail_keeps_the_false_alarm_rate_of_a_heavy_tail() -> None:
    """Residuals with a heavy (Student t, 3 degrees of freedom) tail: fresh draws from the
    same distribution reach p <= 0.001 about 0.1 % of the time, as a p-value should; an
    exponential tail through the same quantiles would raise several times as many."""
    rng = np.random.default_rng(11)
    pool = ConformalPool(1, 4096, tail="pot")
    pool.extend(np.abs(rng.standard_t(3, size=(4000, 1))))
    fresh = np.abs(rng.standard_t(3, size=200_000))
    p = np.array([pool.pvalues(np.array([v]))[0] for v in fresh[fresh > 2.0]])
    share = np.count_nonzero(p <= 1e-3) / len(fresh)
    assert 0.0004 < share < 0.0025


def test_pot_tail_of_discrete_statistics() -> None:
    """Integer statistics whose 90 %, 95 % or 97.5 % quantiles tie keep the "max" tail:
    no spread to extrapolate from, so a value seen in the calibration is not an alarm."""
    stats = np.zeros((1000, 2))
    stats[960:990, 0], stats[990:, 0] = 1.0, 5.0  # row 0: q90 = q95 = 0
    stats[995:, 1] = 1.0  # row 1: ties up to q99
    pot, plain = ConformalPool(2, 2000, tail="pot"), ConformalPool(2, 2000)
    pot.extend(stats)
    plain.extend(stats)
    for probe in ([5.0, 1.0], [1.0, 3.0], [9.0, 0.5]):
        np.testing.assert_array_equal(pot.pvalues(np.array(probe)), plain.pvalues(np.array(probe)))
    assert pot.pvalues(np.array([5.0, 1.0]))[0] == pytest.approx(11 / 1001)


# --------------------------------------------------------------------------- combination


def det(score: list[float], name: str = "d", reasons: tuple[str, ...] = ()) -> Detection:
    s = np.array(score, dtype=np.float32)
    return Detection(
        name, pd.Timestamp("2024-01-01", tz="UTC"), s, np.zeros_like(s), reasons=reasons
    )


def test_bonferroni_combination() -> None:
    combined = combine_scores([np.array([0.999, 0.5]), np.array([0.9, 0.2])])
    np.testing.assert_allclose(combined, [1 - 2 * 0.001, 0.0], atol=1e-6)
    one = combine([det([0.999, 0.5], "a", ("big", "")), det([0.9, 0.995], "b", ("", "mid"))])
    assert one.detector == "combined"
    np.testing.assert_allclose(one.score, [0.998, 0.99], atol=1e-6)
    assert one.reasons == ("a: big", "b: mid")
    with pytest.raises(DetectorError):
        combine([])


def test_check_tick_rejects_bad_input() -> None:
    with pytest.raises(DetectorError, match="shape"):
        check_tick(np.zeros(3), np.ones(3, bool), 2)
    with pytest.raises(DetectorError, match="non-finite"):
        check_tick(np.array([np.nan, 1.0]), np.ones(2, bool), 2)
    values, mask = check_tick(np.array([5.0, 1.0]), np.array([False, True]), 2)
    assert np.isnan(values[0]) and mask.tolist() == [False, True]


# --------------------------------------------------------------------------- interval


def fitted_interval(panel, forecaster: str = "persistence", **config) -> ForecastIntervalDetector:
    cut = int(panel.n_time * 0.75)
    train, valid = panel.slice(0, cut), panel.slice(cut, panel.n_time)
    if forecaster == "persistence":
        model = model_class("persistence")(window=1, horizon=3)
    else:
        model = model_class("seasonal")(horizon=3, period="day")
    model.fit(train, valid=valid)
    detector = ForecastIntervalDetector(model, IntervalConfig(horizon=3, **config))
    return detector.fit(train, valid=valid)


@pytest.fixture(scope="module")
def interval_case(daily_series):
    train, _ = daily_series(6, 1)
    test, spans = daily_series(4, 2, [("spike", 400, 1), ("shift", 600, 36), ("context", 900, 24)])
    clean, _ = daily_series(4, 3)
    return train, test, spans, clean


@pytest.mark.parametrize("forecaster", ["persistence", "seasonal"])
def test_interval_flags_spike_shift_context_and_stays_quiet(interval_case, forecaster) -> None:
    train, test, spans, clean = interval_case
    detector = fitted_interval(train, forecaster)
    scores = detector.score_panel(test).score[:, 0]
    for kind, (start, stop) in spans.items():
        assert scores[start : stop + 3].max() >= FLAG, f"{forecaster} missed the {kind}"
    quiet = detector.score_panel(clean).score[:, 0]
    assert (quiet >= FLAG).mean() <= QUIET  # calibrated: 1 % of normal ticks, plus slack


def test_interval_detection_says_why(interval_case) -> None:
    train, test, spans, _ = interval_case
    detector = fitted_interval(train)
    batch = detector.score_panel(test)
    t = spans["spike"][0]
    assert batch.observed[t, 0] > batch.upper[t, 0] > batch.expected[t, 0] > batch.lower[t, 0]
    assert "above the 90% interval" in batch.reasons[t][0]
    assert "of 3 forecasts" in batch.reasons[t][0]
    # every reason names the side the reading is on, inside the interval included
    sides = {"above": batch.observed > batch.upper, "below": batch.observed < batch.lower}
    sides["inside"] = ~(sides["above"] | sides["below"])
    texts = [(i, r[0]) for i, r in enumerate(batch.reasons) if r and r[0]]
    assert any(" is inside the " in text for _, text in texts)
    for i, text in texts:
        side = text.split(" is ", 1)[1].split(" ", 1)[0]
        assert sides[side][i, 0], text


def test_interval_uses_forecasts_given_by_a_service(interval_case) -> None:
    """observe_forecast with the service's forecasts gives the self-forecast scores."""
    train, test, _, _ = interval_case
    detector = fitted_interval(train)
    expected = detector.score_panel(test.slice(0, 200)).score[:, 0]
    model = detector.forecaster
    assert model is not None
    service = ForecastIntervalDetector(model, detector.config, self_forecast=False)
    cut = int(train.n_time * 0.75)
    service.fit(train.slice(0, cut), valid=train.slice(cut, train.n_time))
    got = []
    for t in range(200):
        got.append(service.update(test.timestamps[t], test.values[t], test.mask[t]).score[0])
        service.observe_forecast(model.predict(test.slice(t, t + 1)))
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_interval_missing_readings_are_not_scored(interval_case) -> None:
    train, test, _, _ = interval_case
    detector = fitted_interval(train)
    values = test.values.copy()
    values[100:110] = np.nan
    gappy = type(test).from_values(values, test.timestamps, test.sensor_ids)
    batch = detector.score_panel(gappy)
    assert (batch.score[100:110] == 0).all()
    assert np.isnan(batch.observed[100:110]).all()


def test_interval_needs_attach_after_load(interval_case, tmp_path) -> None:
    train, test, _, _ = interval_case
    detector = fitted_interval(train, range_check=True)
    detector.save(tmp_path / "det")
    loaded = ForecastIntervalDetector.load(tmp_path / "det")
    with pytest.raises(DetectorError, match="attach"):
        loaded.update(test.timestamps[0], test.values[0], test.mask[0])
    loaded.reset()
    assert detector.forecaster is not None
    loaded.attach(detector.forecaster)
    np.testing.assert_array_equal(loaded.score_panel(test).score, detector.score_panel(test).score)
    other = model_class("seasonal")(horizon=3, period="day")
    other.fit(train)
    with pytest.raises(DetectorError, match="recalibrate"):
        loaded.attach(other)


def test_interval_online_mode_learns_from_the_stream(daily_series) -> None:
    panel, _ = daily_series(3, 4, [("spike", 700, 1)])
    model = model_class("persistence")(window=1, horizon=3)
    model.fit(panel.slice(0, 100))
    detector = ForecastIntervalDetector(model, IntervalConfig(horizon=3)).start(panel.slice(0, 100))
    scores = detector.score_panel(panel).score[:, 0]
    assert (scores[:20] == 0).all()  # not scored until min_count residuals were seen
    assert scores[700] >= 0.999


def test_interval_rejects_misuse(interval_case) -> None:
    train = interval_case[0]
    with pytest.raises(DetectorError, match="no forecaster"):
        ForecastIntervalDetector().fit(train)
    short = model_class("persistence")(window=1, horizon=2)
    short.fit(train)
    with pytest.raises(DetectorError, match="horizon"):
        ForecastIntervalDetector(short, IntervalConfig(horizon=3)).fit(train)
    detector = fitted_interval(train)
    with pytest.raises(DetectorError, match=r"\[horizon, 1\]"):
        detector.observe_forecast(np.zeros((3, 2)))
    with pytest.raises(DetectorError, match="agreement"):
        IntervalConfig(agreement="most")  # type: ignore[arg-type]


def test_registry_loads_any_saved_detector(interval_case, tmp_path) -> None:
    from models.anomaly.registry import DETECTORS, detector_class, load_detector

    assert set(DETECTORS) == {
        "interval",
        "autoencoder",
        "correlation",
        "gaussian",
        "context",
        "extreme",
        "changepoint",
        "spectral",
        "gan",
    }
    train = interval_case[0]
    detector = fitted_interval(train)
    detector.save(tmp_path / "d")
    loaded = load_detector(tmp_path / "d")
    assert isinstance(loaded, ForecastIntervalDetector) and loaded.sensor_ids == ("s0",)
    with pytest.raises(DetectorError, match="unknown detector"):
        detector_class("nope")
    assert detector.forecaster is not None
    detector.forecaster.save(tmp_path / "f")
    with pytest.raises(DetectorError, match="not a detector"):
        load_detector(tmp_path / "f")
    # a class's own load refuses another detector's bundle and a forecaster's alike
    with pytest.raises(DetectorError, match="'detector:interval', not 'detector:gaussian'"):
        detector_class("gaussian").load(tmp_path / "d")
    with pytest.raises(DetectorError, match="not 'detector:interval'; load it with"):
        ForecastIntervalDetector.load(tmp_path / "f")


def test_reason_numbers_keep_the_digits_that_tell_them_apart() -> None:
    """An hourly meter's alert read "1e+06 is above the 90% interval [1e+06, 1e+06]"."""
    from models.anomaly.base import distinct_text

    assert distinct_text([1016000.0, 1009000.0, 1014000.0, 1012000.0]) == [
        "1.016e+06", "1.009e+06", "1.014e+06", "1.012e+06",
    ]  # fmt: skip
    assert distinct_text([1000123.5, 1000121.0, 1000126.0, 1000124.0]) == [
        "1000123.5", "1000121", "1000126", "1000124",
    ]  # fmt: skip
    assert distinct_text([59.62, 34.49, 45.8, 40.15]) == ["59.62", "34.49", "45.8", "40.15"]
    assert distinct_text([12.0, 12.0]) == ["12", "12"]  # equal numbers stay equal
