"""The ensemble's alarm rule: weighted Bonferroni of calibrated member scores, a rest
period, and the same firings streaming and in batch."""

from __future__ import annotations

import numpy as np
import pytest

from models.anomaly.base import DetectorError
from models.anomaly.ensemble import (
    AlarmRule,
    RestPeriod,
    ensemble_series,
    fired_rows,
    merged_pvalues,
)


def test_merged_pvalue_is_the_smallest_share_scaled_pvalue() -> None:
    rule = AlarmRule((("a", 0.01), ("b", 0.04)))
    assert rule.budget == pytest.approx(0.05) and rule.threshold == pytest.approx(0.95)
    p = {"a": np.array([0.005, 0.5, 0.5, np.nan]), "b": np.array([0.5, 0.02, 0.9, np.nan])}
    # a: p * 0.05 / 0.01 = 5 p; b: p * 0.05 / 0.04 = 1.25 p
    np.testing.assert_allclose(merged_pvalues(rule, p), [0.025, 0.025, 1.0, 1.0])
    # the ensemble fires exactly when some member reaches its own share
    fires = merged_pvalues(rule, p) <= rule.budget
    assert fires.tolist() == [True, True, False, False]


def test_merged_pvalue_is_valid_under_dependence() -> None:
    """Independent and identical uniform members: the false-alarm rate stays <= budget."""
    rng = np.random.default_rng(0)
    rule = AlarmRule((("a", 0.02), ("b", 0.03)))
    u = rng.random(200_000)
    for p in ({"a": u, "b": rng.random(u.size)}, {"a": u, "b": u}):
        rate = float((merged_pvalues(rule, p) <= rule.budget).mean())
        assert rate <= rule.budget + 0.003


def test_rest_period_streaming_equals_fired_rows() -> None:
    rng = np.random.default_rng(1)
    score = rng.random(500)
    rest = RestPeriod(1, 0.9, 7)
    streamed = [rest(np.array([s]))[1][0] for s in score]
    np.testing.assert_array_equal(np.nonzero(streamed)[0], fired_rows(score, 0.9, 7))
    fired = fired_rows(score, 0.9, 7)
    assert (np.diff(fired) > 7).all() and (score[fired] >= 0.9).all()
    rule = AlarmRule((("a", 0.1),), rest=7)
    out = ensemble_series(rule, {"a": 1.0 - score})
    np.testing.assert_array_equal(np.nonzero(out >= rule.threshold)[0], fired)
    assert (out[fired[0] + 1 : fired[0] + 8] == 0).all()  # quiet while resting


def test_rest_is_per_sensor() -> None:
    rest = RestPeriod(2, 0.5, 3)
    out = [rest(np.array(s))[1].tolist() for s in ([1, 0], [1, 1], [1, 1], [1, 1], [1, 1])]
    assert out == [[True, False], [False, True], [False, False], [False, False], [True, False]]


def test_bad_rules_are_refused() -> None:
    with pytest.raises(DetectorError, match="at least one member"):
        AlarmRule(())
    with pytest.raises(DetectorError, match="twice"):
        AlarmRule((("a", 0.1), ("a", 0.2)))
    with pytest.raises(DetectorError, match=r"\(0, 1\)"):
        AlarmRule((("a", 0.0),))
    with pytest.raises(DetectorError, match="rest"):
        AlarmRule((("a", 0.1),), rest=-1)
    with pytest.raises(DetectorError, match="no p-values"):
        merged_pvalues(AlarmRule((("a", 0.1),)), {"b": np.zeros(3)})
