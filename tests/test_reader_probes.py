"""Hostile inputs found by probing the CSV readers: each was read silently wrong or got a
misleading error (the bug is named in each test's docstring)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.data.datasets import DatasetError, load_dataset
from pipeline.data.graph_csv import read_adjacency_csv, read_coordinates

IDS = ("101", "102", "103", "104", "105")  # numbers, as los-loop's: they parse as weights
RING = np.roll(np.eye(5), 1, axis=1) + np.roll(np.eye(5), -1, axis=1)  # [row, column]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def pairs(graph: object) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in graph.edge_index.T}  # type: ignore[attr-defined]


def matrix(rows: np.ndarray, header: list[str] | None, labels: list[str] | None = None) -> str:
    head = [([","] if labels else []) + [",".join(header)]] if header else []
    body = [
        ([f"{labels[k]},"] if labels else []) + [",".join(f"{v:g}" for v in row)]
        for k, row in enumerate(rows)
    ]
    return "".join("".join(line) + "\n" for line in head + body)


def stamped(header: str, cells: list[str]) -> str:
    """A wide CSV: a timestamp column, then ``cells`` under ``header``'s sensors."""
    rows = [f"2024-03-01 00:{5 * k:02d},{cell}" for k, cell in enumerate(cells)]
    return "\n".join([f"timestamp,{header}", *rows]) + "\n"


# ---------------------------------------------------------------- adjacency matrices


@pytest.mark.parametrize("labels", [None, list(IDS[:4])])
def test_a_matrix_header_of_sensor_ids_with_a_row_missing_is_refused(tmp_path, labels):
    """The header row was read as matrix row 0 (its ids as weights): a wrong graph."""
    path = write(tmp_path / "adj.csv", matrix(RING[:4], list(IDS), labels))
    with pytest.raises(DatasetError, match=r"and 4 rows under it for 5 sensors") as info:
        read_adjacency_csv(path, IDS)
    assert ("no row for ['105']" in str(info.value)) == bool(labels)
    full = write(tmp_path / "full.csv", matrix(RING, list(IDS), list(IDS) if labels else None))
    assert len(pairs(read_adjacency_csv(full, IDS))) == 10


def test_a_matrix_header_in_another_order_with_a_row_missing_is_refused(tmp_path):
    shuffled = [IDS[k] for k in (4, 2, 0, 1, 3)]
    path = write(tmp_path / "adj.csv", matrix(RING[:4], shuffled))
    with pytest.raises(DatasetError, match=r"header of 5 sensor ids \(line 1\) and 4 rows"):
        read_adjacency_csv(path, IDS)


def test_a_matrix_header_with_a_wrong_id_and_a_row_missing_is_refused(tmp_path):
    """A first line of distinct numbers, mostly sensor ids, is a header, not weights."""
    path = write(tmp_path / "adj.csv", matrix(RING[:4], ["101", "102", "109", "104", "105"]))
    with pytest.raises(DatasetError, match=r"unknown: \['109'\]; in the data but not .*'103'"):
        read_adjacency_csv(path, IDS)


def test_adjacency_weights_that_are_zero_in_float32_are_no_link(tmp_path):
    """1e-300 was kept as a link of weight 0 (float32), though weight 0 is no link."""
    tiny = RING.copy()
    tiny[0, 1] = 1e-300
    graph = read_adjacency_csv(write(tmp_path / "m.csv", matrix(tiny, list(IDS))), IDS)
    assert (0, 1) not in pairs(graph) and (1, 0) in pairs(graph)
    assert np.all(graph.edge_weight > 0)
    edges = write(tmp_path / "e.csv", "src,dst,weight\n101,102,1e-300\n102,103,1e-40\n")
    graph = read_adjacency_csv(edges, IDS)  # 1e-40 is a float32 (subnormal): a link
    assert pairs(graph) == {(1, 2)} and np.all(graph.edge_weight > 0)


def test_an_adjacency_weight_beyond_float32_names_its_line_and_column(tmp_path):
    """It was named ``edge_weight[8]``."""
    huge = RING.copy()
    huge[2, 3] = 1e308
    path = write(tmp_path / "m.csv", "# a comment\n" + matrix(huge, list(IDS)))
    with pytest.raises(DatasetError, match=r"'1e\+308' at line 5, column '104' is beyond the 32"):
        read_adjacency_csv(path, IDS)
    edges = write(tmp_path / "e.csv", "src,dst,weight\n101,102,1\n\n102,103,1e39\n")
    with pytest.raises(DatasetError, match=r"'1e39' at line 4, column 'weight' is beyond"):
        read_adjacency_csv(edges, IDS)
    miles = write(tmp_path / "d.csv", "src,dst,miles\n101,102,3e38\n")  # 4.8e38 km
    with pytest.raises(DatasetError, match=r"'3e38' at line 2, column 'miles' is beyond"):
        read_adjacency_csv(miles, IDS)


# ---------------------------------------------------------------- coordinates


def los_loop(root: Path, locations: str) -> Path:
    speeds = "\n".join([",".join(IDS), *(",".join(["60"] * 5) for _ in range(12))])
    write(root / "los-loop" / "los_speed.csv", speeds + "\n")
    write(root / "los-loop" / "los_adj.csv", matrix(RING, None))
    return write(root / "metr-la" / "graph_sensor_locations.csv", locations)


def locations(rows: dict[str, str]) -> str:
    lines = [f"{k},{sensor},{rows.get(sensor, '34.1,-118.3')}" for k, sensor in enumerate(IDS)]
    return "index,sensor_id,latitude,longitude\n" + "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (locations({"102": "abc,-118.3"}), r"latitude 'abc' at line 3, column 3 is not a number"),
        (locations({"103": "134,-118.3"}), r"latitude '134' at line 4, column 3 is not a number"),
        (locations({"101": "34.1,"}), r"longitude '' at line 2, column 4"),
        ("", r"the coordinates file is empty"),
        ("index,sensor_id,latitude,longitude\n", r"no sensors under the header line 1"),
        ("101,34.1\n", r"line 1 has 2 columns; expected sensor_id,latitude,longitude"),
        ("101,34.1,-118\n101,34.2,-118\n", r"'101' is listed twice .*\(lines 1 and 2\)"),
    ],
)
def test_bad_coordinates_are_blamed_on_the_coordinates_file_and_line(tmp_path, text, message):
    """'could not convert string to float', 'No columns to parse from file', or a
    latitude of 134 blamed on los_adj.csv."""
    path = los_loop(tmp_path, text)
    with pytest.raises(DatasetError, match=message) as info:
        load_dataset("los-loop", data_dir=tmp_path)
    assert str(info.value).startswith(f"{path}: ")


def test_good_coordinates_are_read_with_or_without_a_header(tmp_path):
    los_loop(tmp_path, locations({"105": "34.5,-118.5"}))
    panel = load_dataset("los-loop", data_dir=tmp_path)
    np.testing.assert_allclose(panel.coords[4], [34.5, -118.5])
    bare = write(tmp_path / "bay.csv", "\n101, 37.3,-121.9\n102,37.4,-121.8\n")
    np.testing.assert_allclose(read_coordinates(bare, IDS[:2]), [[37.3, -121.9], [37.4, -121.8]])
    assert read_coordinates(bare, IDS) is None  # a sensor not listed: no coordinates


# ---------------------------------------------------------------- first columns


@pytest.mark.parametrize("name", ["index", "Unnamed: 0", "INDEX"])
def test_a_first_column_named_index_holding_decimals_is_a_sensor(tmp_path, name):
    """It was dropped as a row index: a sensor's readings lost without a word."""
    rows = [f"{name},a,b"] + [f"{60 + k * 0.25:g},{k},{k + 1}" for k in range(10)]
    panel = load_dataset(f"csv:{write(tmp_path / 'd.csv', chr(10).join(rows))}")
    assert panel.sensor_ids == (name, "a", "b")
    whole = [f"{name},a,b"] + [f"{(7 * k) % 10},{k},{k + 1}" for k in range(10)]
    assert load_dataset(f"csv:{write(tmp_path / 'w.csv', chr(10).join(whole))}").n_nodes == 2


def test_an_unnamed_first_column_holding_decimals_is_a_sensor_without_a_name(tmp_path):
    rows = [",a,b"] + [f"{60 + k * 0.25:g},{k},{k + 1}" for k in range(10)]
    with pytest.raises(DatasetError, match="column 1 has no name in the header"):
        load_dataset(f"csv:{write(tmp_path / 'd.csv', chr(10).join(rows))}")


def test_a_file_of_one_column_read_as_a_row_index_names_no_index(tmp_path):
    """It said "no sensor columns after the 'a' column"."""
    path = write(tmp_path / "a.csv", "a\n1\n2\n3\n")
    with pytest.raises(DatasetError, match=r"only one column, 'a', and it was read as a row index"):
        load_dataset(f"csv:{path}")
    assert load_dataset(f"csv:{path}", no_index=True).sensor_ids == ("a",)
    times = write(tmp_path / "t.csv", "timestamp\n2024-03-01 00:00\n2024-03-01 00:05\n")
    with pytest.raises(DatasetError, match=r"no sensor columns after the 'timestamp' column"):
        load_dataset(f"csv:{times}")


def test_a_first_sensor_named_time_holding_readings_names_no_index(tmp_path):
    """It said only "write ISO-8601 timestamps"."""
    path = write(tmp_path / "t.csv", "time,a\n64.5,1\n63.25,2\n65,3\n")
    with pytest.raises(DatasetError, match=r"if 'time' is a sensor, pass --no-index"):
        load_dataset(f"csv:{path}")
    assert load_dataset(f"csv:{path}", no_index=True).sensor_ids == ("time", "a")
    minutes = write(tmp_path / "m.csv", "time,a\n100,1\n105,2\n110,3\n")  # times, wrong unit
    with pytest.raises(DatasetError, match="not Unix times") as info:
        load_dataset(f"csv:{minutes}")
    assert "--no-index" not in str(info.value)


def test_a_commented_out_header_is_named_as_such(tmp_path):
    """The header was eaten as a comment and the error said line 1 has no header."""
    text = stamped("a,b", ["1,2", "3,4", "5,6"]).replace("timestamp", "#timestamp")
    with pytest.raises(DatasetError, match=r"line 2 .* header seems commented out: line 1 "):
        load_dataset(f"csv:{write(tmp_path / 'h.csv', text)}")
    rows = stamped("a,b", ["1,2", "3,4"]).split("\n", 1)[1]  # no header line
    remark = "# exported by the loop counter\n" + rows
    with pytest.raises(DatasetError, match=r"line 2 \(2024-03-01 00:00,1,2\) .* has no header"):
        load_dataset(f"csv:{write(tmp_path / 'r.csv', remark)}")


# ---------------------------------------------------------------- cells and names


@pytest.mark.parametrize("cell", ["５５", "5 5", "١٢٣", "64.44\x00444444"])
def test_a_cell_that_is_no_number_nor_a_date_gets_no_time_column_hint(tmp_path, cell):
    """Each got "a time column? pass --index-col a" (dateutil dates them)."""
    path = write(tmp_path / "c.csv", stamped("a,b", ["1,2", f"{cell},4", "5,6"]))
    with pytest.raises(DatasetError) as info:
        load_dataset(f"csv:{path}")
    message = str(info.value)
    assert f"non-numeric value {cell!r} at line 3, column 'a'" in message
    assert "use a number or leave the cell empty" in message and "--index-col" not in message


def test_a_date_in_a_sensor_column_still_hints_the_time_column(tmp_path):
    path = write(tmp_path / "c.csv", "a,b\n1,2\n2024-03-01,4\n5,6\n")
    with pytest.raises(DatasetError, match=r"a time column\? pass --index-col a"):
        load_dataset(f"csv:{path}")


def test_sensor_names_alike_after_unicode_normalisation_are_duplicates(tmp_path):
    """'é' composed and decomposed were read as two sensors."""
    path = write(tmp_path / "w.csv", stamped("\u00e9,e\u0301,b", ["1,2,3", "4,5,6"]))
    with pytest.raises(DatasetError, match=r"'\\xe9' \(column 2\) and 'e\\u0301' \(column 3\)"):
        load_dataset(f"csv:{path}")
    long = "timestamp,sensor,value\n2024-03-01 00:00,\u00e9,1\n2024-03-01 00:00,e\u0301,2\n"
    with pytest.raises(DatasetError, match=r"\(line 2\) and 'e\\u0301' \(line 3\) are one name"):
        load_dataset(f"csv:{write(tmp_path / 'l.csv', long)}")


# ---------------------------------------------------------------- files that are no text


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (b"", "mostly NUL bytes"),  # a sparse file: NUL bytes without a line break
        (b"\x1f\x8b\x08\x00" + b"\x01" * 4096, "gzip-compressed but cannot be unpacked"),
        (b"time,a\n" + b"\x80,\x81\n" * 4096, r"not UTF-8 text \(invalid start byte\)"),
    ],
)
def test_a_file_that_is_no_text_is_refused_from_its_first_bytes(tmp_path, head, message):
    """A 2 GB file of NUL bytes was read whole as one line (a minute, 4.5 GB of memory)
    before it was refused: the preamble was read before the first bytes were checked."""
    from pipeline.data.readers import preamble

    path = tmp_path / "big.csv"
    with path.open("wb") as f:
        f.write(head)
        if not head:
            f.truncate(64 * 1024 * 1024)  # sparse: no disk used
    with pytest.raises(DatasetError, match=message):
        preamble(path)
    with pytest.raises(DatasetError, match=message):
        load_dataset(f"csv:{path}")
    data = write(tmp_path / "d.csv", stamped(",".join(IDS), [",".join("1" * 5)] * 3))
    with pytest.raises(DatasetError, match=message):
        load_dataset(f"csv:{data}", adjacency=path)


# ---------------------------------------------------------------- timestamps and rows


@pytest.mark.parametrize(
    ("stamps", "other"),
    [
        (["01/03/2024 00:00", "2024-03-01 00:05", "01/03/2024 00:10"], "'2024-03-01 00:05'"),
        (["01/03/2024 00:00:00", "01/03/2024 00:05", "01/03/2024 00:10"], "'01/03/2024 00:05'"),
    ],
)
def test_a_time_column_mixing_formats_with_a_day_or_month_date_is_refused(tmp_path, stamps, other):
    """ISO and 01/03/2024 mixed were blamed on an irregular grid (01/03 read as 3 January);
    mixed with and without seconds, 1 March was read silently as 3 January."""
    rows = "".join(f"{stamp},{k}\n" for k, stamp in enumerate(stamps))
    path = write(tmp_path / "m.csv", "time,a\n" + rows)
    with pytest.raises(DatasetError, match=r"'01/03/2024 00:00(:00)?' at line 2 is written in"):
        load_dataset(f"csv:{path}")
    with pytest.raises(DatasetError, match=f"another format than {other} at line 3"):
        load_dataset(f"csv:{path}")


def test_a_line_of_units_under_the_header_is_named_as_such(tmp_path):
    """It got "use a number or leave the cell empty for missing"."""
    text = stamped("a,b", ["1,2", "3,4"]).replace("\n", "\n,mph,km/h\n", 1)
    with pytest.raises(DatasetError, match=r"'mph' at line 2, column 'a'; a second header line"):
        load_dataset(f"csv:{write(tmp_path / 'u.csv', text)}")
    typo = stamped("a,b", ["mph,2", "3,4"])  # a word in one row of readings
    with pytest.raises(DatasetError, match=r"'mph' at line 2, column 'a'; use a number"):
        load_dataset(f"csv:{write(tmp_path / 't.csv', typo)}")


# ---------------------------------------------------------------- simulated specs


@pytest.mark.parametrize(
    ("spec", "until"),
    [
        ("start=1650-01-01,sensors=2000,days=30", "1650-01-30 23:55"),
        ("start=2249-12-30,days=3", "2250-01-01 23:55"),
        ("start=2262-04-11 23:47:16.854775807", "2262-04-18 23:42"),  # pandas' last time
        ("start=9999-12-31", "beyond the year 9999"),
    ],
)
def test_a_simulated_spec_outside_the_wire_years_is_refused_before_simulating(
    monkeypatch, spec, until
):
    """The check came after the simulation (seconds of work for a large spec), and a start
    near pandas' last time failed in it with "Cannot generate range"."""
    from pipeline.data import simulate_spec

    def simulate(**kwargs: object) -> None:
        raise AssertionError("simulated before the years were checked")

    monkeypatch.setattr(simulate_spec, "simulate_network", simulate)
    with pytest.raises(DatasetError, match=rf"simulated: option start=.* to {until} \(UTC\)"):
        load_dataset(f"simulated:{spec}")
