"""A probe's findings on reading data and tuning: row counters beside the time column,
windows ``--tune`` cannot fit, trials counted that never ran, an empty cell in an edge
list, option errors found late, METIS asked for more parts than nodes, and weight-0
links of a temporal signal."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from flows.cli import app
from models.forecasters.comparison import TrainPlan
from models.forecasters.intervals import hour_scale
from models.forecasters.tuning import (
    Budget,
    TuningError,
    check_validation,
    search_windows,
    tune_model,
)
from models.nn.subgraphs import cut
from models.panel import Split
from pipeline.data.datasets import DatasetError, load_dataset
from pipeline.data.temporal_signal import StaticSignal, from_signal
from tests.test_tuning import PLAN, toy_panel

STAMPS = pd.date_range("2024-03-04", periods=40, freq="5min", tz="UTC")


def wide_file(path: Path, columns: dict[str, list[object]]) -> Path:
    pd.DataFrame(columns).to_csv(path, index=False)
    return path


def readings(seed: int) -> list[float]:
    return list(50 + np.random.default_rng(seed).normal(0, 2, len(STAMPS)))


def iso(stamps: pd.DatetimeIndex = STAMPS) -> list[str]:
    return list(stamps.strftime("%Y-%m-%dT%H:%M:%SZ"))


@pytest.mark.parametrize("name", ["idx", "row", "id", "No.", "serial"])
@pytest.mark.parametrize("first", [0, 1])
def test_a_counter_before_the_time_column_is_an_index_whatever_its_name(tmp_path, name, first):
    """``idx,time,...`` was refused asking for --index-col time, which then read ``idx``
    as a sensor; only "", ``index`` and ``Unnamed: 0`` were dropped."""
    counter = list(range(first, first + len(STAMPS)))
    path = wide_file(
        tmp_path / "c.csv", {name: counter, "time": iso(), "s1": readings(1), "s2": readings(2)}
    )
    for options in ({}, {"index_col": "time"}):
        panel = load_dataset(f"csv:{path}", **options)
        assert panel.sensor_ids == ("s1", "s2") and panel.timestamps[0] == STAMPS[0]
        np.testing.assert_allclose(panel.values[:, 0], readings(1), rtol=1e-6)
        named = [n for n in panel.notes if f"column {name!r}" in n]
        assert bool(named) == (name.lower() not in ("idx", "row")), panel.notes  # no counter's


@pytest.mark.parametrize("start", [0, 1, 48_211])
def test_a_logger_record_number_after_the_time_column_is_an_index(tmp_path, start):
    """Campbell Scientific's TOA5 files: TIMESTAMP,RECORD,... (RECORD counts on from
    wherever the logger's count stood)."""
    record = list(range(start, start + len(STAMPS)))
    path = wide_file(
        tmp_path / "toa5.csv",
        {"TIMESTAMP": iso(), "RECORD": record, "s1": readings(1), "s2": readings(2)},
    )
    for options in ({}, {"index_col": "TIMESTAMP"}):
        panel = load_dataset(f"csv:{path}", **options)
        assert panel.sensor_ids == ("s1", "s2")
        (note,) = panel.notes  # said: where sensors sit, a counter's name alone decides
        assert "column 'RECORD'" in note and "read as a row counter, not a sensor" in note


def test_sensors_beside_the_time_column_stay_sensors(tmp_path):
    """Counts rise and fall; a sensor named by a number is a sensor id; a column counting
    0, 1, 2, ... after the time column under a sensor's name is where sensors are."""
    counts = [k // 3 for k in range(len(STAMPS))]  # whole numbers, not +1 every row
    rising = list(range(len(STAMPS)))
    for columns, sensors in (
        ({"count": counts, "time": iso(), "s1": readings(1)}, ("count", "s1")),
        ({"7": rising, "time": iso(), "s1": readings(1)}, ("7", "s1")),
    ):
        path = wide_file(tmp_path / "s.csv", columns)
        assert load_dataset(f"csv:{path}", index_col="time").sensor_ids == sensors
    path = wide_file(tmp_path / "a.csv", {"time": iso(), "s1": rising, "s2": readings(2)})
    assert load_dataset(f"csv:{path}").sensor_ids == ("s1", "s2")


def test_a_long_file_after_a_named_row_counter_is_long(tmp_path):
    rows = ["idx,time,sensor,value"] + [
        f"{k},{iso()[k // 2]},s{k % 2},{k * 1.5}" for k in range(20)
    ]
    path = tmp_path / "long.csv"
    path.write_text("\n".join(rows) + "\n")
    panel = load_dataset(f"csv:{path}")
    assert panel.sensor_ids == ("s0", "s1") and panel.n_time == 10


def short_split(train_steps: int) -> Split:
    panel = toy_panel(300)
    return Split(
        train=panel.slice(0, train_steps),
        valid=panel.slice(train_steps, 270),
        test=panel.slice(270, 300),
    )


SHORT = TrainPlan(
    models=("persistence", "lstm"), window=3, horizon=12, seeds=1, epochs=1, device="cpu",
    progress=False, horizons=(12,),
)  # fmt: skip


def test_tune_searches_only_windows_that_fit_the_training_part():
    """A 16-step training part holds no window of 6, 12 or 24 inputs + 12 targets: every
    trial failed and the error asked for a larger budget."""
    split = short_split(16)
    assert search_windows(split, SHORT) == (3,)
    check_validation(split, SHORT)
    result = tune_model("lstm", split, SHORT, Budget(trials=2), log=lambda _: None)
    assert [t["state"] for t in result.trials] == ["COMPLETE", "COMPLETE"]
    assert result.params["window"] == 3


def test_tune_refuses_before_any_trial_when_no_window_fits():
    split = short_split(14)
    message = r"no window searched \(3, 6, 12, 24\) fits the training part of 14 steps"
    with pytest.raises(TuningError, match=message):
        check_validation(split, SHORT)
    ran: list[int] = []

    def run(name: str, trial: optuna.Trial, *_: object) -> float:
        ran.append(trial.number)
        return 1.0

    with pytest.raises(TuningError, match=message):
        tune_model("lstm", split, SHORT, Budget(trials=2), run=run, log=lambda _: None)
    assert ran == []


def test_trials_that_fail_for_one_reason_say_that_reason():
    split = short_split(200)

    def broken(*_: object) -> float:
        raise ValueError("the panel holds no sensor the model can read")

    with pytest.raises(TuningError, match=r"every trial of lstm failed \(3\): the panel holds"):
        tune_model("lstm", split, PLAN, Budget(trials=3), run=broken, log=lambda _: None)


def test_ar_tuning_counts_only_the_trials_that_ran():
    """AR's whole grid is queued: 8 trials with 6 WAITING ones were reported for --tune 2."""
    split = short_split(200)
    result = tune_model("ar", split, PLAN, Budget(trials=2), log=lambda _: None)
    summary = result.to_dict()
    assert summary["trials"] == 2 and summary["completed"] == 2
    assert [t["state"] for t in summary["history"]] == ["COMPLETE", "COMPLETE"]


def test_hour_scale_of_a_sensor_without_validation_readings_warns_nothing():
    rng = np.random.default_rng(0)
    residuals = rng.normal(0, 1, (48, 3, 2))
    residuals[:, :, 1] = np.nan  # sensor 1 never read in the validation part
    hours = (np.arange(48)[:, None] + np.arange(1, 4)[None, :]) % 24
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scale = hour_scale(residuals, hours)
    alone = hour_scale(residuals[:, :, :1], hours)
    assert scale is not None and alone is not None and np.isfinite(scale).all()
    np.testing.assert_array_equal(scale[:, 0], alone[:, 0])  # the silent sensor changes nothing


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [("src,dst\ns1,\ns2,s3\n", 2, "dst"), ("src,dst\ns1,s2\n ,s3\n", 3, "src"),
     ("s1,\ns2,s3\n", 1, "dst")],
)  # fmt: skip
def test_an_empty_cell_in_an_edge_list_is_refused_naming_its_line(tmp_path, text, line, column):
    """``s1,`` was a link to a sensor named '' and left out with a note."""
    data = wide_file(
        tmp_path / "d.csv", {"time": iso(), **{f"s{k}": readings(k) for k in (1, 2, 3)}}
    )
    edges = tmp_path / "e.csv"
    edges.write_text(text)
    with pytest.raises(DatasetError, match=rf"line {line}, column '{column}' is empty"):
        load_dataset(f"csv:{data}", adjacency=edges)


@pytest.mark.parametrize(
    "order", [["--index-col", "t", "--no-index"], ["--no-index", "--index-col", "t"]]
)
def test_index_col_with_no_index_is_a_usage_error(tmp_path, order):
    data = wide_file(tmp_path / "d.csv", {"t": iso(), "s1": readings(1)})
    result = CliRunner().invoke(app, ["data", "info", f"csv:{data}", *order])
    assert result.exit_code == 2
    assert "error: --index-col and --no-index contradict each other" in result.output


def test_an_unknown_time_zone_is_refused_before_anything_runs(tmp_path):
    """``roadcast train`` refused it after starting Prefect's server, with exit status 1."""
    out = tmp_path / "o"
    for args in (
        ["train", "simulated:sensors=3,days=1", "--out", str(out)],
        ["data", "info", "simulated:sensors=3,days=1"],
    ):
        result = CliRunner().invoke(app, [*args, "--timezone", "Mars/Olympus"])
        assert result.exit_code == 2, result.output
        assert "unknown time zone 'Mars/Olympus'" in result.output
    assert not out.exists()


def test_metis_asked_for_more_parts_than_nodes_numbers_its_parts_from_0(capfd):
    edge_index = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]])
    for parts in (100, 5, 3):
        labels, _ = cut(edge_index, 5, parts)
        used = torch.unique(labels).tolist()
        assert used == list(range(len(used))) and len(used) <= min(parts, 5)
    assert capfd.readouterr().out == ""


def chain_signal(weight: list[float] | None, edge_index: np.ndarray | None = None) -> StaticSignal:
    series = np.random.default_rng(0).normal(50, 5, (3, 12)).astype(np.float32)
    starts = range(12 - 4)
    return StaticSignal(
        np.array([[0, 1], [1, 2]]) if edge_index is None else edge_index,
        None if weight is None else np.array(weight, dtype=np.float32),
        [series[:, s : s + 4] for s in starts],
        [series[:, s + 4] for s in starts],
    )


def test_a_signal_link_of_weight_0_is_no_link_and_a_signal_needs_one():
    graph = from_signal(chain_signal([2.0, 0.0])).graph
    assert graph is not None
    np.testing.assert_array_equal(graph.edge_index, [[0], [1]])
    np.testing.assert_array_equal(graph.edge_weight, [2.0])
    for signal in (chain_signal([0.0, 0.0]), chain_signal(None, np.zeros((2, 0), np.int64))):
        with pytest.raises(ValueError, match="signal links no two nodes"):
            from_signal(signal)
