"""The weekend flag the neural forecasters read: of the last target step, by default once
the training part holds two weekends (``models.nn.inputs.weekend_inputs``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.forecasters.rnn import LSTMForecaster
from models.forecasters.tgclstm import TGCLSTM, TGCLSTMConfig
from models.nn.inputs import InputSpec, rest_days, time_features, weekend_inputs, weekends
from models.nn.training import TrainConfig
from models.panel import SensorPanel
from pipeline.data.graph import RoadGraph
from tests.service_support import edit_config

TRAIN = TrainConfig(epochs=1, batch_size=32, seed=0, progress=False, device="cpu")


def _panel(
    days: float,
    freq: str = "1h",
    nodes: int = 3,
    weekend: float = 10,
    rest: tuple[int, ...] = (5, 6),
) -> SensorPanel:
    """Hourly readings from a Monday, ``weekend`` higher on the ``rest`` days of the week
    (Monday 0), on a ring of sensors."""
    steps = int(days * pd.Timedelta("1D") / pd.Timedelta(freq))
    stamps = pd.date_range("2024-03-04", periods=steps, freq=freq, tz="UTC")  # a Monday
    rng = np.random.default_rng(0)
    values = (
        50
        + weekend * np.isin(stamps.day_of_week.to_numpy(), rest)[:, None]
        + rng.normal(0, 1, (len(stamps), nodes))
    )
    ring = np.arange(nodes)
    graph = RoadGraph.from_edges(
        np.concatenate([ring, (ring + 1) % nodes]),
        np.concatenate([(ring + 1) % nodes, ring]),
        num_nodes=nodes,
    )
    ids = [f"s{i}" for i in range(nodes)]
    return SensorPanel.from_values(values.astype(np.float32), stamps, ids, graph=graph)


def test_weekends_are_counted_once_each_however_they_are_cut() -> None:
    week = pd.date_range("2024-03-04", periods=7 * 24, freq="h", tz="UTC")  # Mon..Sun
    assert weekends(week) == 1
    assert weekends(week[: 5 * 24]) == 0  # Monday to Friday
    assert weekends(week[-12:]) == 1  # half a Sunday
    assert weekends(pd.date_range("2024-03-09 12:00", periods=9 * 24, freq="h", tz="UTC")) == 2


SAT_SUN = (5, 6)


def test_the_rule_reads_the_flag_of_the_last_target_once_two_weekends_differ() -> None:
    one, two = _panel(7), _panel(13)
    assert weekend_inputs(None, None, one, 12) == (False, 0, SAT_SUN)
    assert weekend_inputs(None, None, two, 12) == (True, 12, SAT_SUN)
    alike = _panel(30, weekend=0)  # four weekends like any other day
    assert weekends(alike.timestamps) >= 4 and rest_days(alike) is None
    assert weekend_inputs(None, None, alike, 12) == (False, 0, SAT_SUN)
    assert weekend_inputs(True, None, one, 6) == (True, 6, SAT_SUN)  # asked for: always
    assert weekend_inputs(False, 3, two, 6) == (False, 0, SAT_SUN)
    assert weekend_inputs(True, 0, two, 6) == (True, 0, SAT_SUN)  # the step's own flag


@pytest.mark.parametrize(("rest", "found"), [((4, 5), (4, 5)), ((6,), (6,)), ((3, 4), (3, 4))])
def test_a_network_that_rests_on_other_days_gets_its_own_flag(rest, found) -> None:
    """A Friday-Saturday weekend (or Sunday alone) was tested as Saturday-Sunday, diluted
    by a working day, and the flag stayed off: about 10 % lost at 12 steps."""
    panel = _panel(27, rest=rest)
    assert rest_days(panel) == found
    on, shift, days = weekend_inputs(None, None, panel, 12)
    assert (on, shift, days) == (True, 12, found)
    flags = time_features(panel.timestamps, InputSpec(time_of_day=False, rest_days=days))[:, 0]
    np.testing.assert_array_equal(flags, np.isin(panel.timestamps.day_of_week, rest))


def test_the_rest_days_travel_with_the_bundle(tmp_path: Path) -> None:
    panel = _panel(20, rest=(4, 5))
    lstm = LSTMForecaster(window=6, horizon=4, hidden=8, train=TRAIN).fit(panel)
    tgc = TGCLSTM(TGCLSTMConfig(window=6, horizon=4, hidden=8, form="paper", train=TRAIN))
    tgc.fit(panel)
    for model in (lstm, tgc):
        assert model.input_spec().rest_days == (4, 5), model.name
        model.save(tmp_path / model.name)
        assert type(model).load(tmp_path / model.name).input_spec().rest_days == (4, 5)
    lstm.save(tmp_path / "old")
    hyper = json.loads((tmp_path / "old" / "config.json").read_text())["hyper"]
    del hyper["rest_days"]  # as bundles were written before rest days were found
    edit_config(tmp_path / "old", hyper=hyper)
    assert LSTMForecaster.load(tmp_path / "old").input_spec().rest_days == SAT_SUN


def test_the_flag_ahead_is_the_flag_of_the_step_that_many_steps_later() -> None:
    stamps = pd.date_range("2024-03-08 12:00", periods=6, freq="12h", tz="UTC")  # Fri noon
    own = time_features(stamps, InputSpec(time_of_day=False))[:, 0]
    ahead = time_features(stamps, InputSpec(time_of_day=False, weekend_shift=2))[:, 0]
    assert own.tolist() == [0, 1, 1, 1, 1, 0]
    assert ahead.tolist() == [1, 1, 1, 0, 0, 0]


@pytest.mark.parametrize("days", [7, 20])
def test_forecasters_decide_on_their_training_part_and_keep_it_in_the_bundle(
    tmp_path: Path, days: int
) -> None:
    panel = _panel(days)
    expected = (days >= 13, 4 if days >= 13 else 0)
    lstm = LSTMForecaster(window=6, horizon=4, hidden=8, train=TRAIN).fit(panel)
    tgc = TGCLSTM(TGCLSTMConfig(window=6, horizon=4, hidden=8, form="paper", train=TRAIN))
    tgc.fit(panel)
    for model in (lstm, tgc):
        spec = model.input_spec()
        assert (spec.day_of_week, spec.weekend_shift) == expected, model.name
        model.save(tmp_path / model.name)
        again = type(model).load(tmp_path / model.name)
        assert again.input_spec() == spec
        origins = np.arange(10, 30)
        np.testing.assert_allclose(
            again.predict_batch(panel, origins).mean, model.predict_batch(panel, origins).mean,
            rtol=1e-5, atol=1e-5,
        )  # fmt: skip


def test_a_bundle_written_before_the_flag_ahead_reads_the_step_s_own_flag(tmp_path: Path) -> None:
    panel = _panel(20)
    model = LSTMForecaster(window=6, horizon=4, hidden=8, day_of_week=True, weekend_shift=0,
                           train=TRAIN).fit(panel)  # fmt: skip
    model.save(tmp_path / "lstm")
    hyper = json.loads((tmp_path / "lstm" / "config.json").read_text())["hyper"]
    del hyper["weekend_shift"]  # as older bundles were written
    edit_config(tmp_path / "lstm", hyper=hyper)
    assert LSTMForecaster.load(tmp_path / "lstm").input_spec().weekend_shift == 0


def test_rest_days_given_are_marked_when_they_differ_and_kept_when_they_do_not() -> None:
    friday_saturday = _panel(27, rest=(4, 5))
    assert weekend_inputs(None, None, friday_saturday, 12, (4, 5)) == (True, 12, (4, 5))
    assert weekend_inputs(None, None, _panel(27, weekend=0), 12, (4, 5)) == (False, 0, (4, 5))
    assert weekend_inputs(None, None, _panel(7, rest=(4, 5)), 12, (4, 5)) == (False, 0, (4, 5))
    assert weekend_inputs(True, None, _panel(7), 6, (2,)) == (True, 6, (2,))
    lstm = LSTMForecaster(window=6, horizon=4, hidden=8, rest_days=(4, 5), train=TRAIN)
    spec = lstm.fit(friday_saturday).input_spec()
    assert (spec.day_of_week, spec.rest_days) == (True, (4, 5))
