"""HTM's anomaly likelihood and the new-extreme rule: published behaviour on scripted scores."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.anomaly.base import DetectorError
from models.anomaly.likelihood import (
    AnomalyLikelihood,
    LikelihoodConfig,
    log_likelihood,
    tail_probability,
)
from models.anomaly.range import RangeExceedance

SMALL = LikelihoodConfig(learning_period=50, estimation_samples=50, reestimation_period=25)


def run(raw: np.ndarray, config: LikelihoodConfig = SMALL) -> np.ndarray:
    """Scores ``[time, node]`` of raw scores ``[time, node]``, tick by tick."""
    likelihood = AnomalyLikelihood(raw.shape[1], config)
    return np.stack([likelihood(raw[t]) for t in range(len(raw))])


def quiet(n: int, nodes: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 0.2, size=(n, nodes))  # [time, node]


def test_log_scale_is_nab_s() -> None:
    assert log_likelihood(np.array([0.5]))[0] == pytest.approx(0.0301029996659)
    assert log_likelihood(np.array([0.99999]))[0] == pytest.approx(0.5, abs=1e-4)
    assert log_likelihood(np.array([1.0]))[0] == pytest.approx(1.0)
    assert tail_probability(np.array([3.0]), np.array([0.0]), np.array([1.0]))[0] == (
        pytest.approx(0.5 * math.erfc(3 / math.sqrt(2)))
    )


def test_nab_setting_splits_the_probation() -> None:
    c = LikelihoodConfig.for_nab(375)
    assert (c.learning_period, c.estimation_samples) == (187, 188)
    assert c.averaging_window == 10 and c.historic_window == 8640


def test_warm_up_reports_likelihood_one_half() -> None:
    scores = run(quiet(150))
    assert np.allclose(scores[:100], 0.0301029996659)


def test_quiet_scores_stay_below_the_red_zone() -> None:
    scores = run(quiet(600))
    assert scores[100:].max() < 0.5


def test_a_sustained_burst_alarms_once_at_its_onset() -> None:
    raw = quiet(600)
    raw[400:420] = 1.0
    scores = run(raw)[:, 0]
    first = int(np.argmax(scores >= 0.5))
    assert 400 <= first <= 405  # the short-term mean crosses the red zone within a few ticks
    # the next red ticks are lowered to yellow (likelihood 0.999 -> log score 0.3)
    assert np.allclose(scores[first + 1 : 415], log_likelihood(np.array([0.999]))[0])
    assert scores[:400].max() < 0.5


def test_nodes_are_independent_and_missing_scores_report_zero() -> None:
    raw = quiet(500, nodes=2)
    raw[400:420, 1] = 1.0
    raw[450, 0] = np.nan
    scores = run(raw)
    assert scores[400:420, 1].max() >= 0.5 and scores[400:420, 0].max() < 0.5
    assert scores[450, 0] == 0.0


def test_likelihood_does_not_look_ahead() -> None:
    raw = quiet(500)
    changed = raw.copy()
    changed[300:] = 1.0
    np.testing.assert_array_equal(run(raw)[:300], run(changed)[:300])


def test_likelihood_rejects_misuse() -> None:
    with pytest.raises(DetectorError, match="n_nodes"):
        AnomalyLikelihood(0)
    with pytest.raises(DetectorError, match=r"shape \(2,\)"):
        AnomalyLikelihood(1)(np.zeros(2))
    with pytest.raises(DetectorError, match="yellow < red"):
        LikelihoodConfig(red=0.9, yellow=0.99)
    with pytest.raises(DetectorError, match="averaging_window"):
        LikelihoodConfig(averaging_window=0)


def test_range_exceedance_flags_new_extremes_beyond_the_tolerance() -> None:
    check = RangeExceedance(1)
    flags = [bool(check(np.array([v]))[0]) for v in [10.0, 10.0, 20.0, 20.4, 21.2, 9.0, 8.9]]
    # no spread until two values differ; then 5 % of the range seen before each reading:
    # 20.4 < 20 + 0.5, 21.2 > 20.4 + 0.52, 9.0 < 10 - 0.56, 8.9 > 9.0 - 0.61
    assert flags == [False, False, False, False, True, True, False]


def test_range_exceedance_skips_missing_values_and_checks_shapes() -> None:
    check = RangeExceedance(2)
    check(np.array([0.0, 0.0]))
    check(np.array([1.0, np.nan]))
    assert check(np.array([np.nan, 5.0])).tolist() == [False, False]
    assert check(np.array([2.0, 6.0])).tolist() == [True, True]
    with pytest.raises(DetectorError, match=r"shape \(3,\)"):
        check(np.zeros(3))
    with pytest.raises(DetectorError, match="tolerance"):
        RangeExceedance(1, tolerance=-0.1)
