"""Data sets -> SensorPanel: real files, DCRNN and CSV formats, bad input, fetch, CLI."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from pipeline.data.datasets import DATASETS, DatasetError, DatasetInfo, RemoteFile, load_dataset
from pipeline.data.fetch import FetchError, check_files, fetch_dataset, sha256_of
from pipeline.data.graph import RoadGraph
from pipeline.data.graph_csv import read_adjacency_csv
from tests.http_support import raw_server

UNREACHABLE = "http://127.0.0.1:9"  # discard port: refused at once, no timeout to wait out


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def pairs(graph: RoadGraph) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in graph.edge_index.T}


# ---------------------------------------------------------------- real data


def test_los_loop(shared_data):
    panel = load_dataset("los-loop", data_dir=shared_data)
    assert panel.values.shape == (2016, 207)
    assert panel.freq == pd.Timedelta("5min")
    assert panel.timestamps[0] == pd.Timestamp("2012-03-01 00:00", tz="UTC")
    assert panel.timestamps[-1] == pd.Timestamp("2012-03-07 23:55", tz="UTC")
    assert panel.sensor_ids[:3] == ("773869", "767541", "767542")
    assert panel.mask.all()  # the publisher imputed the gaps
    assert 10.0 < float(np.median(panel.values)) < 80.0  # mph
    graph = panel.graph
    assert graph.num_edges == 2626  # 2833 non-zeros minus the 207 diagonal self loops
    assert graph.is_symmetric and graph.has_distances
    assert panel.coords.shape == (207, 2)
    assert np.all((panel.coords[:, 0] > 33.5) & (panel.coords[:, 0] < 34.5))
    assert graph.hops(1).shape[1] == 2626 + 207


def test_data_info_says_when_a_file_is_not_the_published_one(shared_data, tmp_path):
    info = DATASETS["los-loop"]
    assert check_files(info, shared_data) == (3, [])
    for remote in info.files:
        if (shared_data / remote.path).is_file():
            (tmp_path / remote.path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / remote.path).write_bytes((shared_data / remote.path).read_bytes())
    speeds = tmp_path / "los-loop" / "los_speed.csv"
    lines = speeds.read_text().splitlines(keepends=True)
    speeds.write_text("".join(lines[:-1]))  # cut at a line: still a valid, shorter data set
    checked, differ = check_files(info, tmp_path)
    assert checked == 3 and len(differ) == 1 and "los_speed.csv" in differ[0]
    result = CliRunner().invoke(app, ["data", "info", "los-loop", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0 and "not the published" in result.output


def test_nab_series_and_windows(shared_data):
    panel = load_dataset("nab:realTraffic/speed_7578.csv", data_dir=shared_data)
    assert panel.sensor_ids == ("speed_7578",)
    assert panel.freq == pd.Timedelta("5min")  # median spacing of the file
    windows = [e for e in panel.events if e.kind == "anomaly_window"]
    assert len(windows) == 4
    assert windows[0].start == pd.Timestamp("2015-09-11 15:34", tz="UTC")
    raw = pd.read_csv(shared_data / "nab" / "realTraffic" / "speed_7578.csv")
    times = pd.to_datetime(raw["timestamp"]).dt.tz_localize("UTC")
    # Every reading lands in its floor cell; empty cells are missing, never filled.
    cells = panel.timestamps.get_indexer(times.dt.floor("5min"))
    assert (cells >= 0).all()
    assert panel.mask.sum() == len(np.unique(cells))
    once = ~pd.Series(cells).duplicated(keep=False).to_numpy()
    np.testing.assert_allclose(panel.values[cells[once], 0], raw["value"].to_numpy()[once])
    assert not panel.mask.all()


# ---------------------------------------------------------------- specs


def test_simulated_spec_options():
    panel = load_dataset("simulated:sensors=30,hours=6,seed=2,freq=10")
    assert panel.values.shape == (36, 30)
    assert panel.freq == pd.Timedelta("10min")
    assert np.array_equal(
        panel.values,
        load_dataset("simulated:sensors=30,hours=6,seed=2,freq=10").values,
        equal_nan=True,
    )
    assert load_dataset("simulated").values.shape == (2016, 200)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("foo", "unknown data set 'foo'"),
        ("simulated:colour=red", "keys sensors, days"),
        ("simulated:sensors=many", "not a number"),
        ("simulated:sensors=0", "sensors must be"),
        ("simulated:seed=-1", "option seed='-1': a seed must be a whole number >= 0"),
        ("simulated:start=abc", "option start='abc': not a time"),
        ("simulated:service=-5-30", "option service='-5-30': service hours must be FIRST-LAST"),
        ("nab:", "nab needs a file"),
        ("nab:speed.csv", "nab:<category>/<file>.csv"),
        ("csv:", "csv needs a path"),
        ("los-loop:x", "los-loop takes no argument, got 'los-loop:x'"),
        ("METR-LA:foo", "metr-la takes no argument"),
    ],
)
def test_bad_specs(spec, message, tmp_path):
    with pytest.raises(DatasetError, match=message):
        load_dataset(spec, data_dir=tmp_path)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("simulated:sensors=5,sensors=6", r"key 'sensors' given twice \('sensors=5' and "),
        ("simulated:seed=1, Seed = 2", r"key 'seed' given twice"),
        ("simulated:days=1,hours=3", r"'days=1' and 'hours=3' set the same option"),
    ],
)
def test_simulated_spec_refuses_a_repeated_key(spec, message):
    with pytest.raises(DatasetError, match=message):
        load_dataset(spec)


def test_adjacency_only_for_files(tmp_path):
    with pytest.raises(DatasetError, match="only for a file's data"):
        load_dataset("simulated", adjacency=tmp_path / "a.csv")


@pytest.mark.parametrize("name", ["los-loop", "metr-la", "pems-bay", "nab:realTraffic/x.csv"])
def test_missing_files_name_path_and_fetch(name, tmp_path):
    with pytest.raises(DatasetError) as info:
        load_dataset(name, data_dir=tmp_path)
    text = str(info.value)
    assert str(tmp_path) in text
    assert f"roadcast data fetch {name.split(':')[0]}" in text


def test_data_dir_defaults_to_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("ROADCAST_DATA_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(DatasetError, match="elsewhere"):
        load_dataset("los-loop")


# ---------------------------------------------------------------- DCRNN format


def write_dcrnn(root: Path, name: str, h5: str, pkl: str, *, python2: bool = False) -> None:
    ids = ["400001", "400017", "400030"]
    index = pd.date_range("2017-01-01", periods=6, freq="5min")
    frame = pd.DataFrame(
        [[60.0, 0.0, 55.0], [61, 62, 0], [0, 0, 0], [62, 63, 64], [60, 61, 59], [65, 66, 0]],
        index=index,
        columns=[int(s) for s in ids],  # DCRNN's columns are integer ids
    )
    (root / name).mkdir(parents=True)
    frame.to_hdf(root / name / h5, key="df")
    adj = np.eye(3, dtype=np.float32)
    adj[0, 1] = 0.7  # road from sensor 400001 to 400017
    order = [2, 0, 1]  # the pickle lists sensors in another order than the table
    ids_p = [ids[k] for k in order]
    content = (ids_p, {s: k for k, s in enumerate(ids_p)}, adj[np.ix_(order, order)])
    with (root / name / pkl).open("wb") as f:
        pickle.dump(content, f, protocol=2 if python2 else 4)


def test_dcrnn_metr_la_format(tmp_path):
    write_dcrnn(tmp_path, "metr-la", "metr-la.h5", "adj_mx.pkl")
    write(
        tmp_path / "metr-la" / "graph_sensor_locations.csv",
        "index,sensor_id,latitude,longitude\n0,400001,34.1,-118.3\n"
        "1,400017,34.11,-118.3\n2,400030,34.12,-118.31\n",
    )
    panel = load_dataset("metr-la", data_dir=tmp_path)
    assert panel.sensor_ids == ("400001", "400017", "400030")
    assert panel.freq == pd.Timedelta("5min")
    # Zeros are DCRNN's "no reading": missing, NaN.
    assert not panel.mask[0, 1] and np.isnan(panel.values[0, 1])
    assert not panel.mask[2].any()
    assert panel.mask[3].all()
    # adj_mx[i, j] is the road i -> j: link 0 -> 1 only (diagonal dropped).
    assert pairs(panel.graph) == {(0, 1)}
    assert panel.graph.has_distances and panel.coords.shape == (3, 2)


def test_dcrnn_pems_bay_headerless_locations(tmp_path):
    write_dcrnn(tmp_path, "pems-bay", "pems-bay.h5", "adj_mx_bay.pkl", python2=True)
    write(
        tmp_path / "pems-bay" / "graph_sensor_locations_bay.csv",
        "400001,37.364085,-121.901149\n400017,37.253303,-121.945440\n"
        "400030,37.359087,-121.906538\n",
    )
    panel = load_dataset("pems-bay", data_dir=tmp_path)
    np.testing.assert_allclose(panel.coords[1], [37.253303, -121.945440])
    assert pairs(panel.graph) == {(0, 1)}


def test_dcrnn_bad_pickle(tmp_path):
    write_dcrnn(tmp_path, "metr-la", "metr-la.h5", "adj_mx.pkl")
    (tmp_path / "metr-la" / "adj_mx.pkl").write_bytes(pickle.dumps({"not": "dcrnn"}))
    with pytest.raises(DatasetError, match="sensor_id_to_ind"):
        load_dataset("metr-la", data_dir=tmp_path)


# ---------------------------------------------------------------- CSV panels


def test_csv_with_timestamps_and_nan_missing(tmp_path):
    path = write(
        tmp_path / "s.csv",
        "timestamp,a,b\n2024-01-01 00:00,1.5,2\n2024-01-01 00:05,NaN,3\n"
        "2024-01-01 00:10,,4\n2024-01-01 00:15,inf,null\n",
    )
    panel = load_dataset(f"csv:{path}")
    assert panel.sensor_ids == ("a", "b")
    assert panel.freq == pd.Timedelta("5min")
    assert panel.timestamps[0] == pd.Timestamp("2024-01-01", tz="UTC")
    np.testing.assert_array_equal(panel.mask[:, 0], [True, False, False, False])
    np.testing.assert_array_equal(panel.mask[:, 1], [True, True, True, False])
    assert np.isnan(panel.values[1:, 0]).all()
    assert panel.name == "s"


def test_csv_without_time_column_uses_default_grid(tmp_path):
    path = write(tmp_path / "plain.csv", "101,102\n1,2\n3,4\n5,6\n")
    panel = load_dataset(f"csv:{path}")
    assert panel.sensor_ids == ("101", "102")
    assert panel.timestamps[0] == pd.Timestamp("2000-01-01", tz="UTC")
    assert panel.freq == pd.Timedelta("5min")
    np.testing.assert_array_equal(panel.values[:, 0], [1, 3, 5])


def test_csv_index_column_is_dropped(tmp_path):
    path = write(tmp_path / "indexed.csv", ",x,y\n0,1,2\n1,3,4\n")
    panel = load_dataset(f"csv:{path}")
    assert panel.sensor_ids == ("x", "y")
    np.testing.assert_array_equal(panel.values, [[1, 2], [3, 4]])


def test_csv_timezone_offsets_become_utc(tmp_path):
    path = write(
        tmp_path / "tz.csv", "time,a\n2024-01-01T01:00+01:00,1\n2024-01-01T01:10+01:00,2\n"
    )
    panel = load_dataset(f"csv:{path}")
    assert panel.timestamps[0] == pd.Timestamp("2024-01-01 00:00", tz="UTC")
    assert panel.freq == pd.Timedelta("10min")


@pytest.mark.parametrize("zone", ["Z", "+02:00", " UTC"])
def test_csv_mixing_times_with_and_without_a_zone_is_refused(tmp_path, zone):
    """Which zone the bare times meant is a guess that may shift them by hours."""
    path = write(tmp_path / "m.csv", f"time,a\n2024-01-01 00:00,1\n2024-01-01 00:10{zone},2\n")
    with pytest.raises(DatasetError, match=r"mixes timestamps with a zone .* at line 3\) and "):
        load_dataset(f"csv:{path}")
    rows = f"time,a\n2024-01-01 00:00{zone},1\n2024-01-01 00:10{zone},2\n"
    assert load_dataset(f"csv:{write(tmp_path / 's.csv', rows)}").n_time == 2


@pytest.mark.parametrize("scale", [1, 1000, 10**6, 10**9])  # s, ms, us, ns
def test_csv_unix_times_in_a_time_column_are_read_in_their_unit(tmp_path, scale):
    rows = "".join(f"{(1704067200 + 300 * k) * scale},{k}\n" for k in range(3))
    path = write(tmp_path / "e.csv", "epoch,a\n" + rows)
    panel = load_dataset(f"csv:{path}")
    assert panel.timestamps[0] == pd.Timestamp("2024-01-01", tz="UTC")
    assert panel.freq == pd.Timedelta("5min")


@pytest.mark.parametrize("stamps", [["20240101", "20240102"], ["202401010000", "202401010005"]])
def test_csv_compact_dates_are_dates_not_unix_times(tmp_path, stamps):
    path = write(tmp_path / "c.csv", "date,a\n" + "".join(f"{t},1\n" for t in stamps))
    assert load_dataset(f"csv:{path}").timestamps[0] == pd.Timestamp("2024-01-01", tz="UTC")


@pytest.mark.parametrize("rows", ["0\n1\n2\n", "1704067200\n1704067500000\n"])
def test_csv_time_numbers_that_are_no_unix_times_of_one_unit_are_refused(tmp_path, rows):
    text = "time,a\n" + "".join(f"{r},1\n" for r in rows.split())
    path = write(tmp_path / "n.csv", text)
    with pytest.raises(DatasetError, match="not Unix times of one unit"):
        load_dataset(f"csv:{path}")


@pytest.mark.parametrize("name", ["a\u200b", "a\u0007b", "x" * 201])
def test_csv_sensor_names_readings_could_not_carry_are_refused(tmp_path, name):
    text = f"time,{name},b\n2024-01-01 00:00,1,2\n2024-01-01 00:05,3,4\n"
    path = write(tmp_path / "h.csv", text)
    with pytest.raises(DatasetError, match=r"\(column 2\) .*rename the column"):
        load_dataset(f"csv:{path}")


def test_csv_unsorted_rows_are_sorted(tmp_path):
    path = write(
        tmp_path / "u.csv",
        "timestamp,a\n2024-01-01 00:10,3\n2024-01-01 00:00,1\n2024-01-01 00:05,2\n",
    )
    panel = load_dataset(f"csv:{path}")
    np.testing.assert_array_equal(panel.values[:, 0], [1, 2, 3])


def test_csv_gaps_become_missing_rows(tmp_path):
    path = write(
        tmp_path / "g.csv",
        "timestamp,a\n2024-01-01 00:00,1\n2024-01-01 00:05,2\n"
        "2024-01-01 00:20,5\n2024-01-01 00:25,6\n",
    )
    panel = load_dataset(f"csv:{path}")
    assert panel.n_time == 6
    np.testing.assert_array_equal(panel.mask[:, 0], [True, True, False, False, True, True])


def test_csv_irregular_rows_are_measured_against_a_step_of_the_file(tmp_path):
    stamps = ["00:00", "00:05", "00:10", "00:17", "00:24"]  # gaps 5, 5, 7, 7: median 6
    text = "timestamp,a\n" + "".join(f"2024-01-01 {s},1\n" for s in stamps)
    path = write(tmp_path / "i.csv", text)
    with pytest.raises(DatasetError, match=r"line 5 is 7min after .* of the step 5min;"):
        load_dataset(f"csv:{path}")


def test_csv_grid_step_is_a_spacing_of_the_file_when_the_gap_count_is_even(tmp_path):
    stamps = ["00:00", "00:05", "00:10", "00:20", "00:30"]  # gaps 5, 5, 10, 10: median 7.5
    text = "timestamp,a\n" + "".join(f"2024-01-01 {s},{k}\n" for k, s in enumerate(stamps))
    panel = load_dataset(f"csv:{write(tmp_path / 'g.csv', text)}")
    assert panel.freq == pd.Timedelta("5min")
    np.testing.assert_array_equal(panel.mask[:, 0], [1, 1, 1, 0, 1, 0, 1])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("\n\n", "empty"),
        ("timestamp,a,b\n", "no data rows"),
        ("a,b\n1,2\n3\n", "ragged row at line 3: 1 fields, the header has 2"),
        ("a,b\n1,2\n3,4,5\n", "ragged row at line 3: 3 fields"),
        ("a,b\n1,2\n3,x7\n", "non-numeric value 'x7' at line 3, column 'b'"),
        ("timestamp,a\n2024-01-01 00:00,1\n2024-01-01 00:00,2\n", "duplicate timestamp"),
        (
            "timestamp,a\n2024-01-01 00:00,1\n2024-01-01 00:05,2\n2024-01-01 00:10,3\n"
            "2024-01-01 00:17,3\n",
            "irregular timestamps: line 5 is 7min after the previous row, not a multiple of "
            "the step 5min",
        ),
        ("timestamp,a\n2024-01-01 00:00,1\nnot a time,2\n", "'not a time' at line 3"),
        ("a,a\n1,2\n", "sensor 'a' appears twice"),
        ("a,\n1,2\n", "column 2 has no name"),
    ],
)
def test_csv_bad_input(tmp_path, text, message):
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(DatasetError, match=message):
        load_dataset(f"csv:{path}")


def test_csv_missing_file(tmp_path):
    with pytest.raises(DatasetError, match=r"missing file .*nope\.csv"):
        load_dataset(f"csv:{tmp_path / 'nope.csv'}")


# ---------------------------------------------------------------- adjacency CSVs

IDS = ("a", "b", "c")


def test_adjacency_matrix_without_header(tmp_path):
    path = write(tmp_path / "m.csv", "1,0.5,0\n0.5,1,0\n0,0,1\n")
    graph = read_adjacency_csv(path, IDS)
    assert pairs(graph) == {(0, 1), (1, 0)}
    np.testing.assert_allclose(graph.edge_weight, [0.5, 0.5])


def test_adjacency_matrix_header_reorders(tmp_path):
    # Header in another order: row/col "c" first. A row lists its links out: A[c, b] = 2
    # is a link c -> b (DCRNN's adj_mx and networkx's matrices say the same).
    path = write(tmp_path / "m.csv", "c,a,b\n0,0,2\n0,0,0\n0,0,0\n")
    graph = read_adjacency_csv(path, IDS)
    assert pairs(graph) == {(2, 1)}  # c -> b in IDS numbering
    indexed = write(tmp_path / "mi.csv", ",c,a,b\nc,0,0,2\na,0,0,0\nb,0,0,0\n")
    assert pairs(read_adjacency_csv(indexed, IDS)) == {(2, 1)}


def test_a_directed_matrix_and_its_edge_list_give_the_same_links(tmp_path):
    """The matrix was read transposed against the edge list and DCRNN's convention."""
    matrix = write(tmp_path / "m.csv", "a,b,c\n0,0.9,0\n0,0,0.8\n0,0,0\n")
    edges = write(tmp_path / "e.csv", "src,dst,weight\na,b,0.9\nb,c,0.8\n")
    assert pairs(read_adjacency_csv(matrix, IDS)) == pairs(read_adjacency_csv(edges, IDS))
    assert pairs(read_adjacency_csv(matrix, IDS)) == {(0, 1), (1, 2)}


def test_adjacency_edge_list_with_and_without_header(tmp_path):
    with_header = write(tmp_path / "e.csv", "src,dst,weight\na,b,0.3\nb,c,1\n")
    graph = read_adjacency_csv(with_header, IDS)
    assert pairs(graph) == {(0, 1), (1, 2)}
    np.testing.assert_allclose(sorted(graph.edge_weight), [0.3, 1.0])
    bare = write(tmp_path / "e2.csv", "a,b\nc,a\n")
    assert pairs(read_adjacency_csv(bare, IDS)) == {(0, 1), (2, 0)}
    dist = write(tmp_path / "e3.csv", "from,to,weight,distance_km\na,b,1,2.5\n")
    assert read_adjacency_csv(dist, IDS).distance_km.tolist() == [2.5]


def test_an_edge_list_with_another_column_names_both_columns(tmp_path):
    """``lanes`` beside ``weight`` was "two weight columns; keep one"."""
    path = write(tmp_path / "e.csv", "src,dst,weight,lanes\na,b,0.3,2\nb,c,1,3\n")
    with pytest.raises(DatasetError, match=r"columns 'weight' and 'lanes' would both be link"):
        read_adjacency_csv(path, IDS)


def test_an_edge_list_weight_of_zero_is_no_link_as_in_a_matrix(tmp_path):
    """A matrix melted to src,dst,weight lists every pair, most with weight 0."""
    melted = "src,dst,weight\n" + "".join(
        f"{a},{b},{1 if {a, b} == {'a', 'b'} else 0}\n" for a in IDS for b in IDS
    )
    graph = read_adjacency_csv(write(tmp_path / "melt.csv", melted), IDS)
    assert pairs(graph) == {(0, 1), (1, 0)}


def test_a_square_of_numeric_sensor_ids_without_a_header_is_ambiguous(tmp_path):
    """Sensors named 0, 1, 2: a headerless 3 x 3 file of 0/1/2 is as much an edge list as
    a matrix; the reader asks for a header rather than guess."""
    ids = ("0", "1", "2")
    path = write(tmp_path / "m.csv", "0,1,0\n1,0,1\n0,1,0\n")
    with pytest.raises(DatasetError, match="add a header line"):
        read_adjacency_csv(path, ids)
    headed = write(tmp_path / "h.csv", "0,1,2\n0,2,0\n2,0,1\n0,1,0\n")
    assert pairs(read_adjacency_csv(headed, ids)) == {(0, 1), (1, 0), (1, 2), (2, 1)}


def test_a_time_of_day_without_a_date_is_refused(tmp_path):
    """Pandas dates '06:00' today: a series across midnight would be reordered."""
    rows = "".join(f"{h:02d}:{m:02d},{h + m / 60:.2f}\n" for h in range(24) for m in (0, 30))
    path = write(tmp_path / "t.csv", "time,a\n" + rows)
    with pytest.raises(DatasetError, match=r"'00:00' at line 2 has no date"):
        load_dataset(f"csv:{path}")


def test_a_long_format_sensor_column_of_readings_names_the_wide_reading(tmp_path):
    stamps = pd.date_range("2024-01-01", periods=30, freq="5min")
    rows = "".join(f"{t},{50 + k % 3 + 0.5},{60 + k % 4}\n" for k, t in enumerate(stamps))
    path = write(tmp_path / "w.csv", "timestamp,station,speed\n" + rows)
    with pytest.raises(DatasetError, match="pass --index-col timestamp to read the file as wide"):
        load_dataset(f"csv:{path}")
    panel = load_dataset(f"csv:{path}", index_col="timestamp")
    assert panel.sensor_ids == ("station", "speed")


@pytest.mark.parametrize(
    ("column", "km"),
    [("distance_m", 2.5), ("length (m)", 2.5), ("Distance_KM", 2500.0), ("miles", 4023.36)],
)
def test_edge_list_lengths_are_read_in_the_unit_their_column_names(tmp_path, column, km):
    path = write(tmp_path / "e.csv", f"from,to,{column}\na,b,2500\n")
    graph = read_adjacency_csv(path, IDS)
    np.testing.assert_allclose(graph.distance_km, [km])
    np.testing.assert_allclose(graph.edge_weight, [1.0])  # a length is not a weight


@pytest.mark.parametrize(
    ("column", "cells", "km", "unit"),
    [
        ("cost", "2500", 2.5, "metres"),  # METR-LA's and PEMS-BAY's form (DCRNN)
        ("distance", "2500", 2.5, "metres"),
        ("dist", "1.2", 1.2, "kilometres"),
        ("Length", "0.4", 0.4, "kilometres"),
        ("metres apart", "800", 0.8, None),  # a unit word inside the name: no guess
    ],
)
def test_edge_list_lengths_without_a_unit_are_read_by_their_size_with_a_note(
    tmp_path, column, cells, km, unit
):
    """A length column without a unit is read as metres when its median link is at least
    METRES_FROM, else as km, and the graph carries a note saying so (roadcast train
    prints it); it never becomes a weight."""
    path = write(tmp_path / "e.csv", f"from,to,{column}\na,b,{cells}\nb,a,{cells}\n")
    graph = read_adjacency_csv(path, IDS)
    np.testing.assert_allclose(graph.distance_km, [km, km])
    np.testing.assert_allclose(graph.edge_weight, [1.0, 1.0])
    if unit is None:
        assert graph.notes == ()
    else:
        (note,) = graph.notes
        assert f"column '{column.lower()}' has no unit" in note and f"read as {unit}" in note


def test_edge_list_travel_times_are_refused(tmp_path):
    path = write(tmp_path / "e.csv", "from,to,travel time (s)\na,b,25\n")
    with pytest.raises(DatasetError, match=r"column 'travel time \(s\)' looks like travel times"):
        read_adjacency_csv(path, IDS)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("src,dst\na,zz\n", "line 2 names sensor 'zz'"),
        ("1,2,3,4,5\n1,2,3,4,5\n", "got 2 rows x 5 columns"),
        ("1,0,0\n0,x,0\n0,0,1\n", "non-numeric value 'x' at line 2"),
        ("a,b,zz\n0,1,0\n0,0,0\n0,0,0\n", "unknown: \\['zz'\\]"),
        ("src,dst\na,b\na,b\n", "duplicate link"),
        ("1,0,0\n0,1\n0,0,1\n", "ragged row at line 2: 2 fields, line 1 has 3"),
    ],
)
def test_adjacency_bad_input(tmp_path, text, message):
    path = write(tmp_path / "adj.csv", text)
    with pytest.raises(DatasetError, match=message):
        read_adjacency_csv(path, IDS)


def test_csv_with_adjacency_spec(tmp_path):
    data = write(tmp_path / "d.csv", "a,b,c\n1,2,3\n4,5,6\n")
    adj = write(tmp_path / "adj.csv", "src,dst\na,b\nb,a\n")
    panel = load_dataset(f"csv:{data}", adjacency=adj)
    assert pairs(panel.graph) == {(0, 1), (1, 0)}


# ---------------------------------------------------------------- NAB rules


def test_nab_resampling_rule_and_missing_windows(tmp_path):
    nab = tmp_path / "nab"
    write(
        nab / "cat" / "x.csv",
        "timestamp,value\n2020-01-01 00:00:00,1\n2020-01-01 00:05:00,2\n"
        "2020-01-01 00:07:00,4\n2020-01-01 00:20:00,5\n2020-01-01 00:25:00,6\n",
    )
    with pytest.raises(DatasetError, match="missing NAB windows"):
        load_dataset("nab:cat/x.csv", data_dir=tmp_path)
    write(
        nab / "combined_windows.json",
        json.dumps({"cat/x.csv": [["2020-01-01 00:05:00.000000", "2020-01-01 00:10:00.000000"]]}),
    )
    panel = load_dataset("nab:cat/x.csv", data_dir=tmp_path)
    assert panel.freq == pd.Timedelta("5min")
    # 00:05 and 00:07 share the 00:05 cell: averaged; 00:10 and 00:15 have no reading.
    np.testing.assert_array_equal(panel.mask[:, 0], [True, True, False, False, True, True])
    assert panel.values[1, 0] == pytest.approx(3.0)
    assert panel.events[0].end == pd.Timestamp("2020-01-01 00:10", tz="UTC")


def test_a_nab_value_beyond_float32_is_refused_naming_its_line(tmp_path):
    nab = tmp_path / "nab"
    write(
        nab / "cat" / "x.csv",
        "timestamp,value\n2020-01-01 00:00:00,1\n2020-01-01 00:05:00,1e39\n",
    )
    write(nab / "combined_windows.json", json.dumps({"cat/x.csv": []}))
    with pytest.raises(DatasetError, match=r"value 1e\+39 at line 3, column 'value' is beyond"):
        load_dataset("nab:cat/x.csv", data_dir=tmp_path)


# ---------------------------------------------------------------- fetch


def test_fetch_unreachable_lists_files_to_place(tmp_path):
    with pytest.raises(FetchError) as info:
        fetch_dataset("los-loop", data_dir=tmp_path, mirror=UNREACHABLE, timeout=2)
    text = str(info.value)
    assert str(tmp_path / "los-loop" / "los_speed.csv") in text
    assert str(tmp_path / "los-loop" / "los_adj.csv") in text
    assert not (tmp_path / "los-loop").exists()  # no empty folders left behind


def test_fetch_manual_file_says_where_to_get_it(tmp_path):
    with pytest.raises(FetchError, match=r"drive\.google\.com"):
        fetch_dataset("metr-la", data_dir=tmp_path, mirror=UNREACHABLE, timeout=2)


def test_fetch_checks_sha256(tmp_path):
    origin = write(tmp_path / "origin" / "set" / "f.csv", "a\n1\n")
    good = sha256_of(origin)
    mirror = (tmp_path / "origin").as_uri()
    info = DatasetInfo("set", "test", (RemoteFile("set/f.csv", sha256=good),), "MIT", "here")
    out = tmp_path / "data"
    result = fetch_dataset(info, data_dir=out, mirror=mirror)
    assert [r.status for r in result] == ["downloaded"]
    assert (out / "set" / "f.csv").read_text() == "a\n1\n"
    assert [r.status for r in fetch_dataset(info, data_dir=out, mirror=mirror)] == ["present"]
    bad = DatasetInfo("set", "test", (RemoteFile("set/g.csv", sha256="0" * 64),), "MIT", "here")
    write(tmp_path / "origin" / "set" / "g.csv", "tampered")
    with pytest.raises(FetchError, match="sha256 mismatch"):
        fetch_dataset(bad, data_dir=out, mirror=mirror)
    assert not (out / "set" / "g.csv").exists() and not (out / "set" / "g.csv.part").exists()


def test_fetch_from_mirror_with_real_checksums(shared_data, tmp_path):
    result = fetch_dataset("los-loop", data_dir=tmp_path, mirror=shared_data.as_uri())
    assert {r.status for r in result} == {"downloaded"}
    assert load_dataset("los-loop", data_dir=tmp_path).n_nodes == 207


def test_catalogue_is_complete():
    assert set(DATASETS) == {"los-loop", "metr-la", "pems-bay", "nab", "simulated"}
    for info in DATASETS.values():
        for remote in info.files:
            assert remote.url or info.manual, f"{remote.path} has no URL and no instructions"
            assert remote.sha256 is None or len(remote.sha256) == 64


# ---------------------------------------------------------------- CLI


def test_cli_data_info_los_loop(shared_data, monkeypatch):
    monkeypatch.setenv("ROADCAST_DATA_DIR", str(shared_data))
    result = CliRunner().invoke(app, ["data", "info", "los-loop"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "sensors │ 207" in out
    assert "steps │ 2,016" in out
    assert "frequency │ 5 min" in out
    assert "2,626 directed links" in out
    assert "2012-03-01 00:00:00+00:00 .. 2012-03-07 23:55:00+00:00" in out


def test_cli_data_info_csv_and_errors(tmp_path):
    data = write(tmp_path / "d.csv", "timestamp,a,b\n2024-01-01 00:00,1,\n2024-01-01 00:15,3,4\n")
    adj = write(tmp_path / "adj.csv", "a,b\nb,a\n")
    runner = CliRunner()
    result = runner.invoke(app, ["data", "info", f"csv:{data}", "--adjacency", str(adj)])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "frequency │ 15 min" in out and "missing share │ 25.00%" in out
    assert "2 directed links" in out
    bad = runner.invoke(app, ["data", "info", "nosuch"])
    assert bad.exit_code == 2 and "unknown data set" in bad.output


def test_cli_data_list_and_fetch_failure(tmp_path):
    runner = CliRunner()
    listing = runner.invoke(app, ["data", "list", "--data-dir", str(tmp_path)])
    assert listing.exit_code == 0, listing.output
    for name in DATASETS:
        assert name in listing.output
    assert "csv:PATH, npz:PATH, h5:PATH or parquet:PATH" in " ".join(listing.output.split())
    fetch = runner.invoke(
        app,
        [
            "data",
            "fetch",
            "los-loop",
            "--data-dir",
            str(tmp_path),
            "--mirror",
            UNREACHABLE,
            "--timeout",
            "2",
        ],
    )
    assert fetch.exit_code == 1
    assert "put these files there by hand" in fetch.output
    assert "los_speed.csv" in fetch.output


def test_fetch_gives_up_on_a_server_that_trickles(tmp_path):
    """A server that sends a byte every 0.5 s never trips the per-read timeout; the
    download fails as too slow after ``timeout`` seconds instead of running for hours.
    The timeout leaves a busy machine seconds to answer the connection."""
    stop = threading.Event()

    class Trickle(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 20))
            self.end_headers()
            while not stop.is_set():
                try:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                except OSError:
                    return
                stop.wait(0.5)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    info = DatasetInfo("set", "test", (RemoteFile("set/f.csv", sha256="0" * 64),), "MIT", "here")
    try:
        with pytest.raises(FetchError, match=r"download too slow: \d+ bytes in"):
            fetch_dataset(
                info,
                data_dir=tmp_path,
                mirror=f"http://127.0.0.1:{server.server_address[1]}",
                timeout=5.0,
            )
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
    assert not (tmp_path / "set").exists()  # no partial file, no empty folder


def _fetch_from(url: str, tmp_path: Path, timeout: float = 3.0) -> str:
    info = DatasetInfo("set", "test", (RemoteFile("set/f.csv", sha256="0" * 64),), "MIT", "here")
    with pytest.raises(FetchError) as err:
        fetch_dataset(info, data_dir=tmp_path, mirror=url, timeout=timeout)
    assert not (tmp_path / "set" / "f.csv.part").exists()
    return str(err.value)


def _trickled_headers(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    for _ in range(600):  # a header byte every 0.5 s: each read is on time
        conn.sendall(b"X")
        time.sleep(0.5)


def _ssh(conn: socket.socket) -> None:
    conn.sendall(b"SSH-2.0-OpenSSH_9.0\r\n")


def _endless(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
    block = b"x" * (1 << 20)
    while True:
        conn.sendall(block)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (_trickled_headers, "no answer within 3 s"),  # ran for hours before
        (_ssh, "not an HTTP answer (BadStatusLine"),  # an "unexpected" error before
        (_endless, "download stopped: over 4096 bytes"),  # filled the disk before
    ],
)
def test_fetch_gives_up_on_servers_that_misbehave(tmp_path, monkeypatch, answer, message):
    from pipeline.data import fetch

    monkeypatch.setattr(fetch, "MAX_DOWNLOAD_BYTES", 4096)
    with raw_server(answer) as url:
        assert message in _fetch_from(url, tmp_path)


def test_an_answer_that_comes_after_the_deadline_is_closed(tmp_path):
    """The abandoned opener kept the late response (and its socket) open."""
    closed = threading.Event()

    def late(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        for _ in range(4):  # 2 s of headers, each read on time
            conn.sendall(b"X-Slow: 1\r\n")
            time.sleep(0.5)
        conn.sendall(b"Content-Length: 5\r\n\r\n")
        conn.settimeout(120)
        if conn.recv(1) == b"":
            closed.set()

    info = DatasetInfo("set", "test", (RemoteFile("set/f.csv", sha256="0" * 64),), "MIT", "here")
    with raw_server(late) as url:
        with pytest.raises(FetchError, match="no answer within 1 s") as err:
            fetch_dataset(info, data_dir=tmp_path, mirror=url, timeout=1.0)
        assert closed.wait(120), "the late response was left open"
    assert err.value is not None  # the error (and its frames) alive throughout


def test_fetch_never_writes_through_a_link_planted_as_its_temporary_file(tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "set").mkdir(parents=True)
    (mirror / "set" / "f.csv").write_text("a,b\n1,2\n")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    data = tmp_path / "data"
    (data / "set").mkdir(parents=True)
    (data / "set" / "f.csv.part").symlink_to(victim)
    digest = hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    info = DatasetInfo("set", "test", (RemoteFile("set/f.csv", sha256=digest),), "MIT", "here")
    fetch_dataset(info, data_dir=data, mirror=str(mirror), timeout=5.0)
    assert victim.read_text() == "keep me"
    assert not (data / "set" / "f.csv").is_symlink()
    assert (data / "set" / "f.csv").read_text() == "a,b\n1,2\n"


def test_fetch_from_a_fifo_in_a_local_mirror_ends_by_the_timeout(tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "set").mkdir(parents=True)
    os.mkfifo(mirror / "set" / "f.csv")
    assert "no answer within 1 s" in _fetch_from(str(mirror), tmp_path / "data", timeout=1.0)


def test_a_compressed_file_is_read_and_a_folder_is_named_as_such(tmp_path):
    import gzip

    packed = tmp_path / "speeds.csv.gz"
    packed.write_bytes(gzip.compress(b"timestamp,a\n2024-01-01 00:00,1\n2024-01-01 00:05,2\n"))
    assert load_dataset(f"csv:{packed}").values[:, 0].tolist() == [1, 2]
    with pytest.raises(DatasetError, match="is a folder, not a file"):
        load_dataset(f"csv:{tmp_path}")
    with pytest.raises(DatasetError, match="is not a regular file"):
        load_dataset("csv:/dev/null")


def test_a_link_to_no_file_is_named_as_a_link(tmp_path):
    """A symbolic link loop, or a link to a file that is gone, was a "missing file"."""
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    (tmp_path / "gone").symlink_to(tmp_path / "removed.csv")
    for name in ("a", "gone"):
        with pytest.raises(DatasetError, match=f"{name} is a symbolic link that leads to no file"):
            load_dataset(f"csv:{tmp_path / name}")


def _wide(path: Path, ids: list[str]) -> Path:
    rng = np.random.default_rng(0)
    stamps = pd.date_range("2017-01-01", periods=50, freq="5min")
    frame = pd.DataFrame(60 + rng.normal(size=(50, len(ids))), index=stamps, columns=ids)
    frame.to_csv(path)  # the index unnamed, as pandas writes METR-LA's table
    return path


def test_adjacency_may_be_dcrnns_pickle_matched_by_sensor_id(tmp_path):
    """``--adjacency adj_mx.pkl`` beside a CSV: the pickle's sensors (in its own order,
    one more than the data) are matched to the data's by id; A[i, j] is a link i -> j."""
    data = _wide(tmp_path / "speeds.csv", ["400001", "400017", "400030"])
    order = ["400030", "999999", "400001", "400017"]
    adj = np.zeros((4, 4))
    adj[order.index("400001"), order.index("400017")] = 0.7  # 400001 -> 400017
    adj[order.index("400017"), order.index("400030")] = 0.4
    with open(tmp_path / "adj_mx.pkl", "wb") as out:
        pickle.dump((order, {s: i for i, s in enumerate(order)}, adj), out, protocol=2)
    panel = load_dataset(f"csv:{data}", adjacency=tmp_path / "adj_mx.pkl")
    edges = {(int(s), int(t)) for s, t in np.asarray(panel.graph.edge_index).T}
    assert edges == {(0, 1), (1, 2)}
    np.testing.assert_allclose(sorted(panel.graph.edge_weight), [0.4, 0.7])


def test_adjacency_pickle_without_a_sensor_of_the_data_is_named(tmp_path):
    data = _wide(tmp_path / "speeds.csv", ["a", "b", "c"])
    with open(tmp_path / "adj_mx.pkl", "wb") as out:
        pickle.dump((["a", "b"], {"a": 0, "b": 1}, np.eye(2)), out, protocol=2)
    with pytest.raises(DatasetError, match=r"adj_mx.pkl: sensors \['c'\] of the speed table"):
        load_dataset(f"csv:{data}", adjacency=tmp_path / "adj_mx.pkl")


def test_adjacency_may_be_a_numpy_matrix_in_the_data_order(tmp_path):
    data = _wide(tmp_path / "speeds.csv", ["a", "b", "c"])
    np.save(tmp_path / "adj.npy", np.array([[0, 1.0, 0], [0, 0, 2.0], [0, 0, 0]]))
    panel = load_dataset(f"csv:{data}", adjacency=tmp_path / "adj.npy")
    edges = {(int(s), int(t)) for s, t in np.asarray(panel.graph.edge_index).T}
    assert edges == {(0, 1), (1, 2)}
    np.save(tmp_path / "wrong.npy", np.eye(4))
    with pytest.raises(DatasetError, match=r"expected a 3 x 3 matrix .* got shape \(4, 4\)"):
        load_dataset(f"csv:{data}", adjacency=tmp_path / "wrong.npy")
    (tmp_path / "junk.npy").write_text("a,b\n")
    with pytest.raises(DatasetError, match=r"junk.npy: not a numpy matrix"):
        load_dataset(f"csv:{data}", adjacency=tmp_path / "junk.npy")


def test_a_dcrnn_network_of_ones_own_reads_as_h5_with_its_pickle(tmp_path):
    """``h5:PATH,zeros=missing --adjacency adj_mx.pkl`` reads what ``metr-la`` reads, from
    files anywhere (a DCRNN-format network that is not one of the named data sets)."""
    write_dcrnn(tmp_path, "metr-la", "metr-la.h5", "adj_mx.pkl")
    folder = tmp_path / "metr-la"
    named = load_dataset("metr-la", data_dir=tmp_path)
    own = load_dataset(f"h5:{folder / 'metr-la.h5'},zeros=missing", adjacency=folder / "adj_mx.pkl")
    assert own.sensor_ids == named.sensor_ids and own.timestamps.equals(named.timestamps)
    np.testing.assert_array_equal(own.mask, named.mask)
    assert pairs(own.graph) == pairs(named.graph) == {(0, 1)}
