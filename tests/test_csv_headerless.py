"""A wide CSV without a header (STGCN's ``V_228.csv``, ``np.savetxt``): every row is read,
sensors are named by position, and the notes say so; a header of sensor ids that are
numbers stays a header. A file without a time column says which clock was assumed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from flows.cli import app
from pipeline.data.cells import DatasetError
from pipeline.data.datasets import load_dataset


def write(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n")
    return path


def speeds(n_time: int = 40, n: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 60 + rng.normal(0, 3, (n_time, n))


def test_a_file_of_readings_only_keeps_its_first_row_and_names_sensors_by_position(tmp_path):
    values = speeds()
    path = tmp_path / "V.csv"
    np.savetxt(path, values, delimiter=",", fmt="%.3f")
    panel = load_dataset(f"csv:{path}")
    assert panel.sensor_ids == ("0", "1", "2") and panel.n_time == 40
    np.testing.assert_allclose(panel.values[0], values[0], atol=1e-3)  # the first row is data
    assert any("no header (line 1 holds readings" in note for note in panel.notes)


def test_numpy_savetxt_default_format_is_read_as_readings(tmp_path):
    values = np.round(speeds())  # whole numbers written as 6.0e+01
    path = tmp_path / "flow.csv"
    np.savetxt(path, values, delimiter=",")
    panel = load_dataset(f"csv:{path}")
    assert panel.n_time == 40 and panel.sensor_ids == ("0", "1", "2")


def test_a_first_line_repeating_a_whole_number_is_a_row_of_counts(tmp_path):
    rows = ["12,12,7"] + [f"{k % 5},{k % 7},{k % 3}" for k in range(30)]
    panel = load_dataset(f"csv:{write(tmp_path / 'counts.csv', rows)}")
    assert panel.n_time == 31 and panel.sensor_ids == ("0", "1", "2")
    np.testing.assert_array_equal(panel.values[0], [12, 12, 7])


def test_a_row_counter_before_headerless_readings_is_dropped(tmp_path):
    rows = [f"{k},{60 + k % 4}.5,{55 + k % 3}.25" for k in range(30)]
    panel = load_dataset(f"csv:{write(tmp_path / 'v.csv', rows)}")
    assert panel.sensor_ids == ("0", "1") and panel.n_time == 30
    assert panel.values[0, 0] == pytest.approx(60.5)


@pytest.mark.parametrize("header", ["773869,767541,767542", "0,1,2", "101,102,7"])
def test_whole_numbers_written_once_each_stay_sensor_ids(tmp_path, header):
    rows = [header] + [f"{60 + k % 4}.5,{k % 3}.0,{k}.25" for k in range(30)]
    panel = load_dataset(f"csv:{write(tmp_path / 'ids.csv', rows)}")
    assert panel.sensor_ids == tuple(header.split(",")) and panel.n_time == 30
    assert not any("no header" in note for note in panel.notes)


def test_whole_number_ids_that_could_be_a_row_of_counts_are_noted(tmp_path):
    """A headerless file of counts lost its first row to sensor ids without a word."""
    counts = np.random.default_rng(0).poisson(30, (300, 4))
    counts[0] = [33, 36, 31, 20]  # distinct whole numbers: a header by the rule
    rows = [",".join(str(v) for v in row) for row in counts]
    panel = load_dataset(f"csv:{write(tmp_path / 'c.csv', rows)}")
    assert panel.sensor_ids == ("33", "36", "31", "20") and panel.n_time == 299
    (note,) = [n for n in panel.notes if "line 1 (33, 36, 31, ...)" in n]
    assert f"csv:{tmp_path / 'c.csv'},header=none" in note
    assert load_dataset(f"csv:{tmp_path / 'c.csv'},header=none").n_time == 300
    counted = ["foo,33,36,31,20"] + [f"{k},{row}" for k, row in enumerate(rows[1:])]
    notes = load_dataset(f"csv:{write(tmp_path / 'n.csv', counted)}").notes
    assert any("as a row counter" in n for n in notes)
    assert any("line 1 (33, 36, 31, ...)" in n for n in notes)  # beside the counter's note
    positions = load_dataset(f"csv:{write(tmp_path / 'p.csv', ['1,2,3,4', *rows[1:]])}")
    assert not any("line 1" in n for n in positions.notes)  # sensors numbered by position


def test_a_headerless_matrix_links_the_sensors_of_a_headerless_file_by_position(tmp_path):
    path = tmp_path / "V.csv"
    np.savetxt(path, speeds(n=6), delimiter=",", fmt="%.3f")
    chain = np.eye(6, k=1, dtype=int)  # i -> i + 1
    adj = write(tmp_path / "A.csv", [",".join(map(str, row)) for row in chain])
    panel = load_dataset(f"csv:{path}", adjacency=adj)
    assert panel.graph is not None
    sources, targets = panel.graph.edge_index
    assert sorted(zip(sources.tolist(), targets.tolist(), strict=True)) == [
        (k, k + 1) for k in range(5)
    ]


def test_the_assumed_clock_of_a_file_without_times_is_noted_and_a_timed_file_has_none(tmp_path):
    untimed = write(tmp_path / "u.csv", ["a,b"] + [f"{k % 3},{k % 5}" for k in range(30)])
    notes = load_dataset(f"csv:{untimed}").notes
    assumed = "no time column: row k is read as 2000-01-01 00:00 UTC + k x 5min"
    assert any(assumed in note for note in notes)
    stamps = [f"2024-03-01 {k // 12:02d}:{k % 12 * 5:02d}" for k in range(30)]
    rows = [f"{t},{k % 3},{k % 5}" for k, t in enumerate(stamps)]
    timed = write(tmp_path / "t.csv", ["time,a,b", *rows])
    assert load_dataset(f"csv:{timed}").notes == ()


def test_data_info_shows_the_notes(tmp_path):
    path = tmp_path / "V.csv"
    np.savetxt(path, speeds(), delimiter=",", fmt="%.3f")
    result = CliRunner().invoke(app, ["data", "info", f"csv:{path}"])
    assert result.exit_code == 0, result.output
    assert "V.csv has no header" in result.output and "no time column" in result.output


def test_the_user_says_whether_the_first_line_is_a_header(tmp_path):
    rows = ["12,7,3"] + [f"{k % 7},{k % 5},{k % 3}" for k in range(30)]  # ids or counts?
    path = write(tmp_path / "counts.csv", rows)
    assert load_dataset(f"csv:{path}").sensor_ids == ("12", "7", "3")  # ids, by the rules
    told = load_dataset(f"csv:{path},header=none")
    assert told.sensor_ids == ("0", "1", "2") and told.n_time == 31
    np.testing.assert_array_equal(told.values[0], [12, 7, 3])
    readings = tmp_path / "V.csv"
    np.savetxt(readings, speeds(), delimiter=",", fmt="%.3f")
    named = load_dataset(f"csv:{readings},header=first")  # decimals named as sensors
    assert named.n_time == 39 and named.sensor_ids[0] == f"{speeds()[0, 0]:.3f}"
    stamps = [f"2024-03-01 00:{k * 5:02d}" for k in range(6)]
    stamped = write(tmp_path / "t.csv", [f"{t},{k},{k + 1}" for k, t in enumerate(stamps)])
    with pytest.raises(DatasetError, match=r"or read it as it is with csv:PATH,header=none"):
        load_dataset(f"csv:{stamped}")
    panel = load_dataset(f"csv:{stamped},header=none")
    assert panel.sensor_ids == ("0", "1") and panel.n_time == 6
    with pytest.raises(DatasetError, match="header='maybe'; use header=none"):
        load_dataset(f"csv:{path},header=maybe")
