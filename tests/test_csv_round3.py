"""CSV input: a first column that is almost a row counter is refused naming its flaw,
``--index-col`` names the flaw or reads serial days as times, an hour skipped as by a
spring clock change is noted, and a counter taken for a row index is named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from pipeline.data.datasets import DatasetError, load_dataset

N = 60


def wide(path: Path, first: str, column: list[object]) -> Path:
    """A wide CSV whose first column ``first`` holds ``column``, then sensors a and b."""
    rows = [f"{v},{50 + k % 7}.5,{60 + k % 5}.25" for k, v in enumerate(column)]
    path.write_text("\n".join([f"{first},a,b", *rows]) + "\n")
    return path


def counter(flaw: str) -> list[object]:
    steps: list[object] = list(range(N))
    if flaw == "repeat":
        steps[10] = 9
    elif flaw == "swap":
        steps[20], steps[21] = 21, 20
    elif flaw == "empty":
        steps[30] = ""
    elif flaw == "down":
        steps.reverse()
    return steps


@pytest.mark.parametrize(
    ("flaw", "message"),
    [
        ("repeat", "repeats 9 at lines 11 and 12"),
        ("swap", "falls from 21 to 20 at lines 22 and 23"),
        ("empty", "is empty at line 32"),
        ("down", r"counts down from 59 at line 2"),
    ],
)
@pytest.mark.parametrize("name", ["step", "s0"])  # a counter's name, or 90 % +1 steps
def test_a_first_column_almost_a_row_counter_is_refused_naming_its_flaw(
    tmp_path, name, flaw, message
):
    path = wide(tmp_path / "c.csv", name, counter(flaw))
    with pytest.raises(DatasetError, match=rf"column '{name}' looks like a row counter but "):
        load_dataset(f"csv:{path}")
    with pytest.raises(DatasetError, match=rf"{message}.*pass --no-index"):
        load_dataset(f"csv:{path}")
    assert load_dataset(f"csv:{path}", no_index=True).sensor_ids == (name, "a", "b")
    perfect = wide(tmp_path / "p.csv", name, counter(""))
    assert load_dataset(f"csv:{perfect}").sensor_ids == ("a", "b")


def test_whole_number_readings_stay_sensors(tmp_path):
    counts = np.random.default_rng(0).poisson(12, N).tolist()  # vehicles per interval
    assert load_dataset(f"csv:{wide(tmp_path / 'n.csv', 'flow', counts)}").n_nodes == 3
    ramp = [k - 2 * (k % 4 == 3) for k in range(N)]  # three steps up, one back: 75 % +1
    assert load_dataset(f"csv:{wide(tmp_path / 'r.csv', 'occ', ramp)}").n_nodes == 3
    saw = [20 + k % 5 for k in range(N)]  # 80 % +1, under a counter's name: readings
    assert load_dataset(f"csv:{wide(tmp_path / 's.csv', 'flow', saw)}").n_nodes == 3


def test_cli_refuses_a_flawed_step_column_instead_of_training_a_sensor_step(tmp_path):
    path = wide(tmp_path / "dup.csv", "step", counter("repeat"))
    result = CliRunner().invoke(app, ["data", "info", f"csv:{path}"])
    assert result.exit_code != 0
    assert "column 'step' looks like a row counter but repeats 9 at lines 11 and 12" in (
        result.output
    )


def test_index_col_names_the_flaw_of_a_counter(tmp_path):
    path = wide(tmp_path / "dup.csv", "step", counter("repeat"))
    with pytest.raises(DatasetError, match="--index-col 'step' is no row counter: it repeats 9 "):
        load_dataset(f"csv:{path}", index_col="step")


def serial_days() -> list[object]:
    return [f"{45352 + k * 300 / 86400:.6f}" for k in range(N)]  # 2024-03-01, every 5 min


def test_index_col_reads_serial_days_as_times_under_any_name(tmp_path):
    path = wide(tmp_path / "serial.csv", "t", serial_days())
    panel = load_dataset(f"csv:{path}", index_col="t")
    assert panel.sensor_ids == ("a", "b") and panel.freq == pd.Timedelta("5min")
    assert str(panel.timestamps[0]) == "2024-03-01 00:00:00+00:00"
    unix = wide(tmp_path / "unix.csv", "t", [f"{1709251200 + 300 * k}.5" for k in range(N)])
    assert str(load_dataset(f"csv:{unix}", index_col="t").timestamps[0]).startswith(
        "2024-03-01 00:00:00"
    )


def test_serial_days_under_a_name_without_date_are_refused_naming_the_fix(tmp_path):
    path = wide(tmp_path / "serial.csv", "t", serial_days())
    with pytest.raises(DatasetError, match=r"spreadsheet serial days .*--index-col t"):
        load_dataset(f"csv:{path}")
    assert load_dataset(f"csv:{path}", no_index=True).sensor_ids == ("t", "a", "b")


def dst_file(path: Path, start: str) -> Path:
    """Local wall-clock times of New York every 5 min from ``start``, written without an
    offset."""
    times = pd.date_range(start, periods=300, freq="5min", tz="America/New_York")
    wall = times.tz_localize(None)
    rows = [f"{t:%Y-%m-%d %H:%M},{k % 7},{k % 5}" for k, t in enumerate(wall)]
    path.write_text("\n".join(["time,a,b", *rows]) + "\n")
    return path


def test_rows_skipping_the_spring_clock_change_hour_are_noted(tmp_path):
    path = dst_file(tmp_path / "dst.csv", "2024-03-10 00:00")
    note = (
        "note: dst.csv: no rows from 2024-03-10 02:00 to 02:55 (a spring clock change? if "
        "the times are local wall-clock times, pass --timezone ZONE)"
    )
    assert note in load_dataset(f"csv:{path}").notes
    result = CliRunner().invoke(app, ["data", "info", f"csv:{path}"])
    assert result.exit_code == 0 and "no rows from 2024-03-10 02:00 to 02:55" in result.output
    zoned = load_dataset(f"csv:{path}", timezone="America/New_York")
    assert zoned.notes == () and zoned.mask.all()
    frame = pd.read_csv(path, index_col="time", parse_dates=True)  # a table's naive index
    frame.to_parquet(tmp_path / "dst.parquet")
    notes = load_dataset(f"parquet:{tmp_path / 'dst.parquet'}").notes
    assert any("no rows from 2024-03-10 02:00 to 02:55" in n for n in notes)


def test_an_hour_missing_at_another_time_is_no_clock_change(tmp_path):
    stamps = pd.date_range("2024-03-13 00:00", periods=300, freq="5min")  # a Wednesday
    kept = stamps[(stamps.hour != 2) | (stamps.day != 13)]
    rows = [f"{t:%Y-%m-%d %H:%M},{k % 7},{k % 5}" for k, t in enumerate(kept)]
    path = tmp_path / "outage.csv"
    path.write_text("\n".join(["time,a,b", *rows]) + "\n")
    assert load_dataset(f"csv:{path}").notes == ()


def test_a_first_column_dropped_as_a_row_counter_is_named(tmp_path):
    path = wide(tmp_path / "f.csv", "s0", list(range(N)))
    panel = load_dataset(f"csv:{path}")
    assert panel.sensor_ids == ("a", "b")
    note = (
        "note: f.csv: its first column 's0' (0, 1, 2, ...) is read as a row counter, not a "
        "sensor; if it is a sensor, pass --no-index"
    )
    assert note in panel.notes
    assert load_dataset(f"csv:{path}", no_index=True).sensor_ids == ("s0", "a", "b")
    named = load_dataset(f"csv:{wide(tmp_path / 'i.csv', 'step', list(range(N)))}")
    assert not any("first column" in n for n in named.notes)  # a counter's name says so
