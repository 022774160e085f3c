"""The generalisation suite's own logic: model variants and the choice of defaults on
validation parts, leaving one network out (the suite itself runs in
``tests/test_benchmarks_smoke.py``)."""

from __future__ import annotations

import pytest

from benchmarks.generalization import choose_defaults
from benchmarks.suite_fits import Variant, parse_variant


def test_variants_parse_to_a_model_and_typed_settings():
    variant = parse_variant(" LSTM:hidden=64, dropout=0.3,skip=last ")
    assert variant == Variant("lstm", (("dropout", 0.3), ("hidden", 64), ("skip", "last")))
    assert variant.name == "lstm:dropout=0.3,hidden=64,skip=last" and not variant.is_default
    assert parse_variant("tgclstm").is_default
    with pytest.raises(ValueError, match="not key=value"):
        parse_variant("lstm:dropout")


def _network(valid: tuple[float, float], test: tuple[float, float]) -> dict:
    names = ("lstm", "lstm:dropout=0.3")
    return {
        "candidates": {
            n: {"valid_mean": v, "test_rmse": {"12": t}}
            for n, v, t in zip(names, valid, test, strict=True)
        }
    }


def test_defaults_are_chosen_on_validation_only_leaving_each_network_out():
    variants = (Variant("lstm"), parse_variant("lstm:dropout=0.3"))
    results = {
        "a": _network(valid=(1.0, 1.1), test=(5.0, 4.0)),  # test disagrees: never read to choose
        "b": _network(valid=(2.0, 2.1), test=(3.0, 3.3)),
        "c": _network(valid=(1.2, 1.0), test=(1.0, 1.0)),
        "d": {"skipped": "no data"},
    }
    choice = choose_defaults(results, variants)["lstm:dropout"]
    assert choice["networks"] == ["a", "b", "c"]
    # mean validation RMSE over the best candidate's: 1.067 (default) against 1.050
    assert choice["chosen"] == "lstm:dropout=0.3"
    assert choice["mean_valid_relative"]["lstm"] == pytest.approx((1 + 1 + 1.2) / 3)
    loo = choice["leave_one_out"]
    assert [loo[n]["chosen"] for n in "abc"] == ["lstm:dropout=0.3", "lstm:dropout=0.3", "lstm"]
    assert loo["a"]["test_relative"] == pytest.approx(1.0)  # 4.0 is the best test RMSE at a
    assert loo["b"]["test_relative"] == pytest.approx(1.1)
    assert choice["leave_one_out_agrees"] is False
