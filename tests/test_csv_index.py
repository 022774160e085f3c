"""CSV input: row counters recognised as an index whatever their name, ``--index-col`` /
``--no-index``, and errors that name the likely cause."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from pipeline.data.datasets import DatasetError, load_dataset


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def counts_csv(tmp_path: Path, first: str = "step") -> Path:
    rows = [f"{first},a,b,c"] + [f"{k},{10 + k % 3},{20 + k % 5},{30 + k % 7}" for k in range(40)]
    return write(tmp_path / "flow.csv", "\n".join(rows) + "\n")


@pytest.mark.parametrize("first", ["step", "row", "Unnamed: 0", "k", ""])
def test_a_first_column_counting_rows_is_an_index_whatever_its_name(tmp_path, first):
    panel = load_dataset(f"csv:{counts_csv(tmp_path, first)}")
    assert panel.sensor_ids == ("a", "b", "c") and panel.n_time == 40


def test_readings_that_repeat_or_fall_are_not_an_index(tmp_path):
    path = write(tmp_path / "x.csv", "a,b\n3,1\n3,2\n2,3\n")
    assert load_dataset(f"csv:{path}").sensor_ids == ("a", "b")
    floats = write(tmp_path / "f.csv", "a,b\n1.5,1\n2.5,2\n3.5,3\n")
    assert load_dataset(f"csv:{floats}").sensor_ids == ("a", "b")
    rising = write(tmp_path / "r.csv", "a,b\n1,1\n3,2\n5,3\n")  # readings that rise
    assert load_dataset(f"csv:{rising}").sensor_ids == ("a", "b")


def test_a_counter_with_numbers_skipped_is_an_index_and_the_skipped_steps_are_missing(tmp_path):
    kept = [k for k in range(40) if k not in (7, 8, 20)]  # rows dropped, as by dropna()
    rows = ["step,a,b"] + [f"{k},{k},{100 + k}" for k in kept]
    panel = load_dataset(f"csv:{write(tmp_path / 'flow.csv', chr(10).join(rows))}")
    assert panel.sensor_ids == ("a", "b") and panel.n_time == 40
    np.testing.assert_array_equal(np.flatnonzero(~panel.mask.any(axis=1)), [7, 8, 20])
    np.testing.assert_array_equal(panel.values[kept, 0], kept)  # each row at its own step
    rising = ["a,b"] + [f"{1000 + k * k},{k}" for k in range(30)]  # readings that rise
    assert load_dataset(f"csv:{write(tmp_path / 'r.csv', chr(10).join(rising))}").n_nodes == 2
    named = ["101,102"] + [f"{k},{k % 3}" for k in range(30)]  # a number names a sensor
    assert load_dataset(f"csv:{write(tmp_path / 'n.csv', chr(10).join(named))}").n_nodes == 2


def wide(first: str, column: object, n: int = 40) -> str:
    """A wide CSV whose first column ``first`` holds ``column``, then sensors a and b."""
    head = f"{first},a,b" if first is not None else ",a,b"
    rows = [f"{v},{k % 3},{5 + k % 4}" for k, v in enumerate(list(column)[:n])]
    return "\n".join([head, *rows])


@pytest.mark.parametrize(
    ("first", "column", "step"),
    [
        ("t", [1709251200 + 300 * k for k in range(40)], "5min"),  # Unix seconds, any name
        ("time_ms", [1709251200000 + 900_000 * k for k in range(40)], "15min"),
        ("index", [1709251200 + 3600 * k for k in range(40)], "1h"),  # not a row counter
        ("", [1709251200 + 3600 * k for k in range(40)], "1h"),
        ("idx", [10 * k for k in range(40)], "5min"),  # a counter by tens: rows in order
    ],
)
def test_unix_times_and_strided_counters_are_never_sensors(tmp_path, first, column, step):
    panel = load_dataset(f"csv:{write(tmp_path / 'w.csv', wide(first, column))}")
    assert panel.sensor_ids == ("a", "b") and panel.n_time == 40
    assert panel.freq == pd.Timedelta(step)
    if column[0] > 1e8:
        assert str(panel.timestamps[0]) == "2024-03-01 00:00:00+00:00"


def test_pandas_row_index_before_the_time_column_is_dropped(tmp_path):
    rows = [",timestamp,a"] + [f"{k},2024-03-01 {k // 12:02d}:{5 * (k % 12):02d},{k % 4}"
                                for k in range(30)]  # fmt: skip
    path = write(tmp_path / "pd.csv", "\n".join(rows))
    for options in ({}, {"index_col": "timestamp"}):
        panel = load_dataset(f"csv:{path}", **options)
        assert panel.sensor_ids == ("a",) and panel.freq == pd.Timedelta("5min")
        assert str(panel.timestamps[-1]) == "2024-03-01 02:25:00+00:00"


def test_comment_lines_and_a_spreadsheet_separator_line_are_skipped(tmp_path):
    body = wide("step", range(40))
    for preamble in ("# exported 2024-03-01\n# units: veh/h\n", "sep=,\n"):
        panel = load_dataset(f"csv:{write(tmp_path / 'p.csv', preamble + body)}")
        assert panel.sensor_ids == ("a", "b") and panel.n_time == 40


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('t,a\n2024-01-01 00:00,"50,25"\n2024-01-01 00:05,4\n', "a decimal comma or a thousands"),
        ("t;a;b\n2024-01-01 00:00;50,2;3,1\n", "separated by ';'; save it comma-separated"),
        ("time,road,value\n2024-01-01 00:00,r1,3\n", "Name the sensor column one of"),
    ],
)
def test_foreign_number_formats_name_the_cause(tmp_path, text, message):
    with pytest.raises(DatasetError, match=message):
        load_dataset(f"csv:{write(tmp_path / 'f.csv', text)}")


def test_a_counter_that_jumps_far_ahead_is_refused_naming_the_line(tmp_path):
    rows = ["step,a"] + [f"{k},{k}" for k in range(30)] + ["5000000,1", "5000001,2"]
    with pytest.raises(DatasetError, match=r"line 32 counts 4999971 steps.*--no-index"):
        load_dataset(f"csv:{write(tmp_path / 'far.csv', chr(10).join(rows))}")


def test_no_index_and_index_col_override_the_guess(tmp_path):
    path = counts_csv(tmp_path)
    assert load_dataset(f"csv:{path}", no_index=True).sensor_ids == ("step", "a", "b", "c")
    with pytest.raises(DatasetError, match=r"--index-col 'b' holds readings \(20, 21, 22"):
        load_dataset(f"csv:{path}", index_col="b")  # a sensor is never dropped silently
    stamped = write(
        tmp_path / "t.csv",
        "a,when\n1,2024-01-01 00:00\n2,2024-01-01 00:05\n3,2024-01-01 00:10\n",
    )
    panel = load_dataset(f"csv:{stamped}", index_col="when")
    assert panel.sensor_ids == ("a",) and str(panel.timestamps[1]) == "2024-01-01 00:05:00+00:00"
    with pytest.raises(DatasetError, match="--index-col 'nope' is not a column"):
        load_dataset(f"csv:{path}", index_col="nope")
    with pytest.raises(DatasetError, match="contradict"):
        load_dataset(f"csv:{path}", index_col="step", no_index=True)
    with pytest.raises(DatasetError, match="only for csv"):
        load_dataset("simulated:sensors=3,hours=1", no_index=True)


def test_an_adjacency_one_sensor_short_names_the_index_column(tmp_path):
    rows = ["id,a,b,c,d,e"] + [",".join(str(k + j) for j in range(6)) for k in range(30)]
    path = write(tmp_path / "wide.csv", "\n".join(rows) + "\n")
    ring = np.roll(np.eye(5, dtype=int), 1, axis=1) + np.roll(np.eye(5, dtype=int), -1, axis=1)
    adjacency = write(tmp_path / "adj.csv", "\n".join(",".join(map(str, r)) for r in ring))
    assert load_dataset(f"csv:{path}", adjacency=adjacency).graph is not None
    with pytest.raises(DatasetError, match=r"first column \('id'\).*--index-col id"):
        load_dataset(f"csv:{path}", adjacency=adjacency, no_index=True)


@pytest.mark.parametrize("sensors", [["a", "b"], ["a", "b", "c"]])
def test_a_file_that_is_no_adjacency_says_so_without_a_size_hint(tmp_path, sensors):
    rows = [",".join(sensors)] + [",".join(str(k + j) for j in range(len(sensors))) for k in (1, 5)]
    data = write(tmp_path / "d.csv", "\n".join(rows) + "\n")
    text = write(tmp_path / "hostname", "myhost\n")
    with pytest.raises(DatasetError) as info:
        load_dataset(f"csv:{data}", adjacency=text)
    message = str(info.value)
    assert f"not an adjacency: expected a {len(sensors)} x {len(sensors)} matrix" in message
    assert message.endswith("got 1 row x 1 column") and "row index" not in message


def test_adjacency_headers_name_the_sensors_on_either_side(tmp_path):
    path = counts_csv(tmp_path)
    header = write(tmp_path / "h.csv", "a,b,zz\n0,1,0\n1,0,1\n0,1,0\n")
    with pytest.raises(
        DatasetError, match=r"unknown: \['zz'\]; in the data but not the adjacency: \['c'\]"
    ):
        load_dataset(f"csv:{path}", adjacency=header)


def matrix_csv(path: Path, header: list[str] | None, n: int) -> Path:
    ring = np.roll(np.eye(n, dtype=int), 1, axis=1) + np.roll(np.eye(n, dtype=int), -1, axis=1)
    lines = ([",".join(header)] if header else []) + [",".join(map(str, r)) for r in ring]
    return write(path, "\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("header", "size", "message"),
    [
        (["a", "b"], 2, r"in the data but not the adjacency: \['c'\]"),  # read as edges before
        (["a", "b", "c", "x", "y", "z"], 6, r"unknown: \['x', 'y', 'z'\]"),  # half unknown
        (None, 4, r"4 x 4 matrix of numbers for 3 sensors: one sensor more"),
    ],
)
def test_a_matrix_of_another_size_names_what_differs(tmp_path, header, size, message):
    adjacency = matrix_csv(tmp_path / "m.csv", header, size)
    with pytest.raises(DatasetError, match=message):
        load_dataset(f"csv:{counts_csv(tmp_path)}", adjacency=adjacency)


def test_an_edge_list_whose_weights_are_all_zero_is_refused_like_a_zero_matrix(tmp_path):
    edges = write(tmp_path / "e.csv", "from,to,weight\na,b,0\nb,c,0\n")
    with pytest.raises(DatasetError, match="no link between two different sensors"):
        load_dataset(f"csv:{counts_csv(tmp_path)}", adjacency=edges)


def test_cli_train_takes_index_options(tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        app, ["train", "simulated", "--index-col", "x", "--no-index", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2 and "contradict" in result.output


@pytest.mark.parametrize("labelled", [False, True])
def test_a_matrix_of_a_larger_network_keeps_the_data_sensors_links(tmp_path, labelled):
    """A headed matrix over the data's sensors and others (most of them the data's), in
    any order, is read as the data's rows and columns of it, with a note, as an edge
    list's unknown links are left out."""
    rng = np.random.default_rng(4)
    header = ["d", "a", "e", "c", "b"]
    weights = rng.integers(0, 3, (5, 5)) * (1 - np.eye(5, dtype=int))
    rows = [",".join(([""] if labelled else []) + header)]
    rows += [
        ",".join(([header[i]] if labelled else []) + [str(w) for w in weights[i]]) for i in range(5)
    ]
    big = write(tmp_path / "big.csv", "\n".join(rows) + "\n")
    graph = load_dataset(f"csv:{counts_csv(tmp_path)}", adjacency=big).graph
    pick = [header.index(s) for s in ("a", "b", "c")]
    small = weights[np.ix_(pick, pick)]
    exact = write(
        tmp_path / "small.csv", "a,b,c\n" + "".join(",".join(map(str, r)) + "\n" for r in small)
    )
    want = load_dataset(f"csv:{counts_csv(tmp_path)}", adjacency=exact).graph
    assert np.array_equal(graph.edge_index, want.edge_index)
    assert np.array_equal(graph.edge_weight, want.edge_weight)
    assert any(
        "a matrix of 5 sensors, 2 of them not in the data ('d', 'e')" in n for n in graph.notes
    )


def test_a_larger_matrix_with_rows_missing_or_out_of_order_is_refused(tmp_path):
    data = counts_csv(tmp_path)
    rows = ["0,1,0,0,0", "1,0,1,0,0", "0,1,0,1,0", "0,0,1,0,1"]
    short = write(tmp_path / "short.csv", "a,b,c,d,e\n" + "\n".join(rows) + "\n")
    with pytest.raises(DatasetError, match=r"a header of 5 sensor ids .* and 4 rows under it"):
        load_dataset(f"csv:{data}", adjacency=short)
    swapped = write(
        tmp_path / "swapped.csv", ",a,b,c,d\nb,0,1,0,0\na,1,0,1,0\nc,0,1,0,1\nd,0,0,1,0\n"
    )
    with pytest.raises(DatasetError, match="line 2 is labelled 'b' but column 2 of the header"):
        load_dataset(f"csv:{data}", adjacency=swapped)


def test_a_matrix_of_words_names_the_data_sensors_it_lacks(tmp_path):
    """A file of words only was 'sensor(s) ['x'] appear twice in the matrix header'."""
    words = write(tmp_path / "words.csv", "x,x,x\nx,x,x\nx,x,x\nx,x,x\n")
    with pytest.raises(DatasetError, match=r"unknown: \['x'\]; in the data but not the adj"):
        load_dataset(f"csv:{counts_csv(tmp_path)}", adjacency=words)
