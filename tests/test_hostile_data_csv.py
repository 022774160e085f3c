"""Hostile CSV input found by probing ``csv:FILE --adjacency ADJ``: each case was read
silently wrong, crashed, or got a misleading error (the old behaviour is in each test's
docstring)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.data.datasets import DatasetError, load_dataset
from pipeline.data.graph_csv import read_adjacency_csv

IDS = ("007", "7", "a")  # "007" and "7" are two sensors
CHAIN = {(0, 1), (1, 0), (1, 2), (2, 1)}  # 007 - 7 - a


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def stamped(header: str, cells: list[str]) -> list[str]:
    """Lines of a wide CSV: a timestamp column, then ``cells`` under ``header``'s sensors."""
    rows = [f"2024-03-01 {k // 12:02d}:{5 * (k % 12):02d},{cell}" for k, cell in enumerate(cells)]
    return [f"timestamp,{header}", *rows]


def pairs(graph: object) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in graph.edge_index.T}  # type: ignore[attr-defined]


CELLS = [f"{k % 7 + 0.5},{k % 5 + 1.5}" for k in range(30)]


# ---------------------------------------------------------------- comment lines


def test_a_comment_line_after_the_header_is_skipped(tmp_path):
    """A ``# exported by X`` line below the header was a 'ragged row' error."""
    lines = stamped("a,b", CELLS)
    lines[1:1] = ["# exported by X, version 2"]  # after the header
    lines[10:10] = ['  # a remark with a "quote']  # between rows
    lines.append("# end of export")
    path = write(tmp_path / "c.csv", "\r\n".join(lines) + "\r\n")
    panel = load_dataset(f"csv:{path}")
    assert panel.sensor_ids == ("a", "b") and panel.n_time == 30
    assert panel.values.tolist()[:2] == [[0.5, 1.5], [1.5, 2.5]]


def test_comments_and_blank_lines_before_the_header_are_skipped(tmp_path):
    """A blank line between two comments above the header made the second comment the
    header (a 'ragged row' error on the first data row)."""
    text = "# exported by X\n\n# units: km/h\n" + "\n".join(stamped("a,b", CELLS)) + "\n"
    assert load_dataset(f"csv:{write(tmp_path / 'c.csv', text)}").sensor_ids == ("a", "b")


def test_a_spreadsheet_na_is_a_missing_reading_not_a_comment(tmp_path):
    """A row starting with Excel's ``#N/A`` is data: skipping it as a comment would move
    every later row of a file without a time column one step earlier."""
    rows = ["a,b", *CELLS[:3], "#N/A,9", *CELLS[3:]]
    panel = load_dataset(f"csv:{write(tmp_path / 'na.csv', chr(10).join(rows))}")
    assert panel.n_time == 31 and not panel.mask[3, 0] and panel.values[3, 1] == 9
    assert panel.values[4, 0] == 3.5  # CELLS[3], in its place
    with pytest.raises(DatasetError, match=r"'#DIV/0!' at line 5, column 'a'"):
        load_dataset(
            f"csv:{write(tmp_path / 'div.csv', chr(10).join(rows).replace('#N/A', '#DIV/0!'))}"
        )


def test_a_long_file_of_sensors_named_with_a_hash_keeps_their_rows(tmp_path):
    rows = ["sensor,time,value"] + [
        f"#{s},2024-03-01 00:{5 * k:02d},{k + s}" for k in range(6) for s in (1, 2)
    ]
    panel = load_dataset(f"csv:{write(tmp_path / 'l.csv', chr(10).join(rows))}")
    assert panel.sensor_ids == ("#1", "#2") and panel.mask.all()


def test_a_comment_line_in_an_adjacency_is_skipped(tmp_path):
    """The same 'ragged row' error, in an edge list or a matrix."""
    edges = write(tmp_path / "e.csv", "src,dst\n# a comment\n007,7\n7,007\n7,a\na,7\n# end\n")
    assert pairs(read_adjacency_csv(edges, IDS)) == CHAIN
    matrix = write(tmp_path / "m.csv", "007,7,a\n0,1,0\n# middle\n1,0,1\n0,1,0\n")
    assert pairs(read_adjacency_csv(matrix, IDS)) == CHAIN
    hashed = write(tmp_path / "h.csv", "src,dst\n#1,#2\n#2,#1\n")  # ids with a '#'
    assert pairs(read_adjacency_csv(hashed, ("#1", "#2"))) == {(0, 1), (1, 0)}


# ---------------------------------------------------------------- empty rows and columns


def test_rows_of_empty_cells_at_the_end_are_not_readings(tmp_path):
    """A spreadsheet's trailing ``,,`` rows made the row counter a sensor ('step', trained
    as readings) and added empty steps; with a time column they were refused."""
    counted = ["step,a,b"] + [f"{k},{cell}" for k, cell in enumerate(CELLS)] + [",,", " , , "]
    panel = load_dataset(f"csv:{write(tmp_path / 'n.csv', chr(10).join(counted))}")
    assert panel.sensor_ids == ("a", "b") and panel.n_time == 30
    timed = [*stamped("a,b", CELLS), ",,", ",,"]
    assert load_dataset(f"csv:{write(tmp_path / 't.csv', chr(10).join(timed))}").n_time == 30
    matrix = write(tmp_path / "m.csv", "007,7,a\n0,1,0\n1,0,1\n0,1,0\n,,\n")
    assert pairs(read_adjacency_csv(matrix, IDS)) == CHAIN


def test_an_empty_row_between_readings_is_still_a_missing_step(tmp_path):
    rows = ["a,b", *CELLS[:3], ",", *CELLS[3:]]
    panel = load_dataset(f"csv:{write(tmp_path / 'g.csv', chr(10).join(rows))}")
    assert panel.n_time == 31 and not panel.mask[3].any()


@pytest.mark.parametrize(
    ("first", "options"),
    [("step", {}), ("", {}), ("n", {"index_col": "n"})],
)
def test_an_empty_row_does_not_stop_a_row_counter(tmp_path, first, options):
    """``,,`` between rows of a counted file made the counter fail its 'strictly increasing
    whole numbers' test: 'step' was trained as a sensor, with an extra step of missing
    readings that moved every later row; an unnamed counter was 'column 1 has no name',
    and ``--index-col`` said the counter 'holds readings'. The counter places the rows,
    so the empty row is not read; a number the counter skips is still a missing row."""
    counts = [*range(10), *range(11, 30)]  # 10 skipped: a dropped row
    rows = [f"{k},{CELLS[k]}" for k in counts]
    rows[5:5] = [",,"]
    rows[20:20] = [" , , "]
    text = "\n".join([f"{first},a,b", *rows]) + "\n"
    panel = load_dataset(f"csv:{write(tmp_path / 'c.csv', text)}", **options)
    assert panel.sensor_ids == ("a", "b") and panel.n_time == 30
    assert panel.mask[:, 0].tolist() == [k != 10 for k in range(30)]
    assert panel.values[[4, 5, 9, 11, 29], 0].tolist() == [4.5, 5.5, 2.5, 4.5, 1.5]


def test_a_separator_ending_every_line_is_no_column(tmp_path):
    """``timestamp,a,b,`` (a trailing separator) was 'column 4 has no name'; in a matrix it
    blamed sensor '007'."""
    lines = [line + "," for line in stamped("a,b", CELLS)]
    panel = load_dataset(f"csv:{write(tmp_path / 'w.csv', chr(10).join(lines))}")
    assert panel.sensor_ids == ("a", "b")
    matrix = write(tmp_path / "m.csv", "007,7,a,\n0,1,0,\n1,0,1,\n0,1,0,\n")
    assert pairs(read_adjacency_csv(matrix, IDS)) == CHAIN
    edges = write(tmp_path / "e.csv", "src,dst,weight,\n007,7,2,\n7,a,1,\n")
    assert read_adjacency_csv(edges, IDS).edge_weight.tolist() == [2.0, 1.0]
    named = [line + ",5" for line in lines]  # a column of readings without a name
    with pytest.raises(DatasetError, match="column 4 has no name"):
        load_dataset(f"csv:{write(tmp_path / 'n.csv', chr(10).join(named))}")


# ---------------------------------------------------------------- quotes


@pytest.mark.parametrize(
    ("cells", "where"),
    [
        (["1,2", '3,"4', "5,6", "7,8"], "line 3 to line 5"),  # pandas: ParserError escaped
        (["1,2", "3,4", '5,"6'], "line 4 to the end of the file"),  # pandas: ParserError
        (["1,2", '3,"4', '5,6"', "7,8"], "line 3 to line 4"),  # read '4\n2024-...' as a value
        (['1,"2', "3,4", "5"], "line 2 to line 4"),  # 'ragged row at line 4'
    ],
)
def test_a_quote_left_open_names_the_line_it_opens(tmp_path, cells, where):
    text = "\n".join(stamped("a,b", cells)) + "\n"
    with pytest.raises(DatasetError, match=rf"{where} is one quoted field \(a quote mark"):
        load_dataset(f"csv:{write(tmp_path / 'q.csv', text)}")


def test_a_quote_left_open_in_an_adjacency_names_its_line(tmp_path):
    """It was 'ragged adjacency CSV: ... EOF inside string starting at row 1'."""
    edges = write(tmp_path / "e.csv", 'src,dst,weight\n007,7,"1\n7,a,1\n')
    with pytest.raises(DatasetError, match="line 2 to line 3 is one quoted field"):
        read_adjacency_csv(edges, IDS)


# ---------------------------------------------------------------- cells


def test_a_dash_for_a_missing_reading_gets_its_own_hint(tmp_path):
    """'-' was 'non-numeric ...; One reading per row (time, sensor, value)? Name the sensor
    column ...': a wide file of two sensors was taken for a long one."""
    text = "\n".join(stamped("a,b", ["1,2", "-,3", "4,5"]))
    with pytest.raises(
        DatasetError, match=r"'-' at line 3, column 'a'; if it marks a missing"
    ) as e:
        load_dataset(f"csv:{write(tmp_path / 'd.csv', text)}")
    assert "One reading per row" not in str(e.value)
    ids = "\n".join(stamped("road,value", ["r1,3", "r2,4"]))  # a long file: keep the hint
    with pytest.raises(DatasetError, match=r"holds no number in any row\. One reading per row"):
        load_dataset(f"csv:{write(tmp_path / 'l.csv', ids)}")


def test_a_european_number_names_the_decimal_comma(tmp_path):
    text = "\n".join(stamped("a", ['"1.050,25"', "3"]))
    with pytest.raises(DatasetError, match="a decimal comma after thousands separators"):
        load_dataset(f"csv:{write(tmp_path / 'e.csv', text)}")


# ---------------------------------------------------------------- timestamps


@pytest.mark.parametrize("days", [3, 6])
def test_two_digit_years_first_are_read_as_years(tmp_path, days):
    """``24-01-01`` .. ``24-01-03`` were 2001-01-24, 2002-01-24, 2003-01-24: yearly data
    (or an 'irregular 366d' error over a leap year)."""
    rows = ["timestamp,a"] + [f"24-01-{d:02d} 00:00,{d}" for d in range(1, days + 1)]
    panel = load_dataset(f"csv:{write(tmp_path / 'y.csv', chr(10).join(rows))}")
    assert str(panel.timestamps[0]) == "2024-01-01 00:00:00+00:00"
    assert panel.freq == np.timedelta64(1, "D")


@pytest.mark.parametrize(
    ("stamp", "cause"),
    [
        ("2024-03-01 08:{m:02d} PST", r"the zone name 'PST' is not read; write its UTC offset"),
        ("2024-03-01 08:{m:02d} Europe/Berlin", r"2024-03-01 08:00\+01:00$"),
        ("2024-07-01 08:{m:02d} Europe/Berlin", r"2024-07-01 08:00\+02:00$"),
        ("2024-03-01 08:{m:02d}+01:00 CET", r"remove the zone name 'CET' after its UTC offset"),
    ],
)
def test_a_zone_name_after_a_timestamp_is_named(tmp_path, stamp, cause):
    """It was 'does not parse; use ISO-8601', which these are but for the zone name."""
    rows = ["time,a"] + [f"{stamp.format(m=5 * k)},{k}" for k in range(4)]
    with pytest.raises(DatasetError, match=rf"at line 2 does not parse; .*{cause}"):
        load_dataset(f"csv:{write(tmp_path / 'z.csv', chr(10).join(rows))}")
    when = [row.replace("time,", "when,") for row in rows]  # a name not known for times
    with pytest.raises(DatasetError, match=rf"a time column\? the zone name|{cause}"):
        load_dataset(f"csv:{write(tmp_path / 'w.csv', chr(10).join(when))}")


def test_an_offset_after_utc_is_refused_not_reversed(tmp_path):
    """``08:00 UTC+1`` was read as 09:00 UTC (dateutil's POSIX sign): silently two hours
    off what was meant (07:00 UTC)."""
    rows = ["time,a"] + [f"2024-03-01 08:{5 * k:02d} UTC+1,{k}" for k in range(4)]
    with pytest.raises(DatasetError, match=r"line 2: an offset after UTC or GMT .*\(POSIX\)"):
        load_dataset(f"csv:{write(tmp_path / 'u.csv', chr(10).join(rows))}")


# ---------------------------------------------------------------- adjacency ids


NFC, NFD = "\u00e9", "e\u0301"  # é composed, and decomposed


@pytest.mark.parametrize(
    ("adjacency", "line"),
    [(f"src,dst\n{NFD},b\nb,{NFD}\n", 2), (f"# graph\n{NFD},b\n0,1\n1,0\n", 2)],
)
def test_an_id_in_another_unicode_form_is_named_as_such(tmp_path, adjacency, line):
    """The matrix was 'unknown: ['é'] ... not in the adjacency: ['é']', the edge list
    "names sensor 'é', which is not in the data": the same letter on both sides."""
    data = write(tmp_path / "d.csv", "\n".join(stamped(f"{NFC},b", CELLS)))
    with pytest.raises(
        DatasetError,
        match=rf"line {line} .*'e\\u0301' for the data's '\\xe9': one id in two Unicode forms "
        r"\(NFD here, NFC in the data\)",
    ):
        load_dataset(f"csv:{data}", adjacency=write(tmp_path / "a.csv", adjacency))


def test_numeric_ids_written_as_decimals_are_named_as_such(tmp_path):
    """A header ``7.0,8.0,9.0`` for sensors 7, 8, 9 was 'one sensor more than the data
    (... pass --no-index)'."""
    data = write(tmp_path / "d.csv", "\n".join(stamped("7,8,9", [f"{c},1" for c in CELLS])))
    matrix = write(tmp_path / "m.csv", "7.0,8.0,9.0\n0,1,0\n1,0,1\n0,1,0\n")
    with pytest.raises(
        DatasetError,
        match=r"line 1 \(the matrix header\) has ids '7.0', '8.0', '9.0': the data's '7', '8', "
        r"'9' written as decimals; write the ids as in the data's header",
    ):
        load_dataset(f"csv:{data}", adjacency=matrix)
    edges = write(tmp_path / "e.csv", "src,dst\n7,8\n8.0,9\n")
    with pytest.raises(DatasetError, match=r"line 3 has id '8.0': the data's '8' written as a"):
        load_dataset(f"csv:{data}", adjacency=edges)
    weights = write(tmp_path / "w.csv", "0.0,1.0,0.0\n0,1,0\n1,0,1\n0,1,0\n")  # 0, 1: ids?
    with pytest.raises(DatasetError, match="one sensor more than the data"):
        read_adjacency_csv(weights, ("0", "1", "2"))


def test_an_edge_list_of_a_header_alone_lists_no_links(tmp_path):
    """It was 'every entry is zero or a self-loop'."""
    edges = write(tmp_path / "e.csv", "# links\nsrc,dst,weight\n")
    with pytest.raises(
        DatasetError, match=r"the edge list lists no links: line 2 is its header \(src,dst,weight"
    ):
        read_adjacency_csv(edges, IDS)


def test_an_edge_list_whose_header_names_its_columns_in_other_words_is_read(tmp_path):
    """``counter,neighbour,walk_m`` was read as a link from sensor 'counter'."""
    a, b, c = IDS[:3]
    edges = write(tmp_path / "e.csv", f"counter,neighbour,walk_m\n{a},{b},400\n{b},{c},1200\n")
    graph = read_adjacency_csv(edges, IDS)
    assert pairs(graph) == {(0, 1), (1, 2)}
    assert graph.distance_km is not None
    np.testing.assert_allclose(sorted(graph.distance_km), [0.4, 1.2])
    other = write(tmp_path / "t.csv", f"counter,neighbour,walk_m\n{a},{b},1\n{b},nobody,2\n")
    graph = read_adjacency_csv(other, IDS)  # a sensor the data lacks: its link left out
    assert pairs(graph) == {(0, 1)}
    (note,) = graph.notes
    assert "1 of its 2 links name 1 sensor(s) not in the data ('nobody'; first at line 3)" in note


def test_an_edge_list_of_other_sensor_ids_is_refused_not_emptied(tmp_path):
    """Links to sensors the data lacks are left out (with a note) only when most of the
    file's sensors are the data's: ids of another form (positions 0, 1, 2 for named
    sensors, or '007' for '7') are refused naming the first."""
    a, b, _ = IDS[:3]
    for text, message in (
        ("from,to\n0,1\n1,2\n", "line 2 names sensor '0'"),
        (f"from,to\n{a},{b}\n{b},x1\n{a},x2\n", "line 3 names sensor 'x1'"),
    ):
        with pytest.raises(DatasetError, match=message):
            read_adjacency_csv(write(tmp_path / "e.csv", text), IDS)


# ---------------------------------------------------------------- long format and a matrix


def test_a_long_file_needs_a_matrix_that_names_its_sensors(tmp_path):
    """A long file's sensors are in order of first appearance (s3, s1, s2 here); a matrix
    without a header was laid over them by position, linking the wrong sensors."""
    rows = ["time,sensor,value"] + [
        f"2024-03-01 00:{5 * k:02d},{s},{k + i}"
        for k in range(12)
        for i, s in enumerate(("s3", "s1", "s2"))
    ]
    data = write(tmp_path / "long.csv", "\n".join(rows))
    plain = write(tmp_path / "m.csv", "0,1,0\n1,0,1\n0,1,0\n")
    with pytest.raises(
        DatasetError,
        match=r"a matrix without a header row, for sensors in order of first appearance",
    ):
        load_dataset(f"csv:{data}", adjacency=plain)
    named = write(tmp_path / "h.csv", "s1,s2,s3\n0,1,0\n1,0,1\n0,1,0\n")
    panel = load_dataset(f"csv:{data}", adjacency=named)
    assert panel.sensor_ids == ("s3", "s1", "s2")
    assert pairs(panel.graph) == {(1, 2), (2, 1), (2, 0), (0, 2)}  # s1 - s2 - s3


def test_utf16_without_a_byte_order_mark_is_named(tmp_path):
    """It was 'ragged row at line 8: 1 fields, the header has 3'."""
    path = tmp_path / "u.csv"
    path.write_bytes(("\n".join(stamped("a,b", CELLS)) + "\n").encode("utf-16-le"))
    with pytest.raises(
        DatasetError, match="mostly NUL bytes, not text: UTF-16 without a byte-order"
    ):
        load_dataset(f"csv:{path}")


def test_a_labelled_matrix_missing_a_sensor_names_that_sensor_only(tmp_path):
    """The empty corner cell of a labelled 3 x 3 matrix for 4 sensors was named as an
    unknown sensor ''."""
    data = write(tmp_path / "d.csv", "\n".join(stamped("s0,s1,s2,s3", [f"{c},1,2" for c in CELLS])))
    matrix = write(tmp_path / "m.csv", ",s0,s1,s2\ns0,0,1,0\ns1,1,0,1\ns2,0,1,0\n")
    with pytest.raises(
        DatasetError,
        match=r"does not list the data's sensors \(in the data but not the adjacency: "
        r"\['s3'\]\); use the same ids",
    ):
        load_dataset(f"csv:{data}", adjacency=matrix)


@pytest.mark.parametrize(
    "stamps",
    [
        ["2024-01-01 00:00:00", "2024-01-01 00:05:00", "2024-01-01 00:10:00"],
        ["01/03/2024 08:00", "01/03/2024 08:15", "01/03/2024 08:30"],
    ],
)
def test_a_file_of_one_row_per_sensor_is_refused_with_the_fix(tmp_path, stamps):
    """Sensors as rows and times as columns: read as it stood, the times became sensors
    and the sensors (ids 007, 08, 0009: a counter) were dropped as a row index."""
    rows = [f"{s}," + ",".join(f"{50 + k}.5" for k in range(3)) for s in ("007", "08", "0009")]
    path = write(tmp_path / "t.csv", "sensor," + ",".join(stamps) + "\n" + "\n".join(rows) + "\n")
    with pytest.raises(DatasetError, match=r"3 of its 3 column names are times .* transpose it"):
        load_dataset(f"csv:{path}")


def test_sensor_ids_that_are_numbers_are_not_times(tmp_path):
    rows = "\n".join(f"2024-01-01 00:{5 * k:02d}:00,1,2,3" for k in range(12))
    path = write(tmp_path / "d.csv", "time,400001,20240101,717490\n" + rows + "\n")
    assert load_dataset(f"csv:{path}").sensor_ids == ("400001", "20240101", "717490")
