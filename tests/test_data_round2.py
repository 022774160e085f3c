"""Data files read as what they hold or refused in one line: Parquet columns of text,
lists, structs, decimals and Unix times; npz/npy arrays larger than declared or than
allowed; an assumed clock out of range; CSV compression told by content; ambiguous
slash dates; adjacency files without links; spreadsheet formulas in outputs."""

from __future__ import annotations

import decimal
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.data import arrays
from pipeline.data.cells import DatasetError
from pipeline.data.datasets import load_dataset

TIMES = pd.date_range("2024-01-01", periods=60, freq="5min", tz="UTC")


def one_line_error(spec: str) -> str:
    with pytest.raises(DatasetError) as info:
        load_dataset(spec)
    text = str(info.value)
    error = info.value
    assert "\n" not in text and (error.__context__ is None or error.__suppress_context__)
    return text


def parquet(tmp_path: Path, columns: dict[str, pa.Array | list | np.ndarray]) -> str:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table(columns), path)
    return f"parquet:{path}"


def test_a_wide_parquet_table_with_a_status_column_is_refused(tmp_path):
    status = np.where(np.arange(60) % 2, "ok", "check")
    spec = parquet(tmp_path, {"time": TIMES, "s1": np.arange(60.0), "status": status})
    assert "column 'status' holds text ('check'), not readings" in one_line_error(spec)


def test_a_column_of_numbers_as_text_is_not_taken_for_sensor_names(tmp_path):
    text = [f"{40 + k / 7:.2f}" for k in range(60)]
    spec = parquet(tmp_path, {"time": TIMES, "s1": np.arange(60.0), "s2": text})
    assert "column 's2' holds text ('40.00')" in one_line_error(spec)


@pytest.mark.parametrize(
    ("column", "held"),
    [(pa.array([[1.0, 2.0]] * 60), "lists"), (pa.array([{"a": 1.0}] * 60), "structs")],
)
def test_list_and_struct_columns_are_refused(tmp_path, column, held):
    spec = parquet(tmp_path, {"time": TIMES, "s1": np.arange(60.0), "s2": column})
    assert f"column 's2' holds {held}" in one_line_error(spec)


def test_a_long_table_keeps_its_text_sensor_column(tmp_path):
    times = TIMES.repeat(2)
    sensors = ["a", "b"] * 60
    spec = parquet(tmp_path, {"time": times, "road": sensors, "v": np.arange(120.0)})
    panel = load_dataset(spec)
    assert panel.sensor_ids == ("a", "b") and panel.values.shape == (60, 2)
    single = parquet(tmp_path, {"time": TIMES, "road": ["a"] * 60, "v": np.arange(60.0)})
    assert load_dataset(single).sensor_ids == ("a",)


def test_a_decimal_column_is_read_as_numbers(tmp_path):
    cents = [decimal.Decimal(f"{k}.25") for k in range(60)]
    spec = parquet(tmp_path, {"time": TIMES, "s1": pa.array(cents, type=pa.decimal128(10, 2))})
    panel = load_dataset(spec)
    np.testing.assert_allclose(panel.values[:, 0], np.arange(60) + 0.25)


@pytest.mark.parametrize(("name", "scale"), [("timestamp", 1), ("time", 1000), ("epoch", 1)])
def test_unix_times_in_a_time_column_are_the_clock(tmp_path, name, scale):
    seconds = TIMES.as_unit("s").asi8
    spec = parquet(tmp_path, {name: seconds * scale, "s1": np.arange(60.0)})
    panel = load_dataset(spec)
    assert panel.sensor_ids == ("s1",) and panel.notes == ()
    assert panel.timestamps[0] == TIMES[0] and panel.timestamps[-1] == TIMES[-1]


def test_small_numbers_under_a_time_name_are_refused_as_times(tmp_path):
    spec = parquet(tmp_path, {"time": np.arange(60), "s1": np.arange(60.0)})
    assert "not Unix times" in one_line_error(spec)


def npy_header(shape: tuple[int, ...]) -> bytes:
    import io

    buffer = io.BytesIO()
    header = {"descr": "<f4", "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def test_an_npy_holding_less_than_its_header_declares_is_named_truncated(tmp_path):
    path = tmp_path / "liar.npy"
    path.write_bytes(npy_header((10**7, 10**4)) + bytes(4000))
    text = one_line_error(f"npz:{path}")
    assert "not fully written" in text and "400000000000 bytes" in text


def test_an_npz_declaring_more_than_the_limit_is_refused_before_loading(tmp_path, monkeypatch):
    monkeypatch.setattr(arrays, "MAX_ARRAY_BYTES", 1000)
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("data.npy", npy_header((100, 10)) + bytes(4000))
    assert "array 'data' declares" in one_line_error(f"npz:{path}")
    small = tmp_path / "small.npz"
    np.savez(small, data=np.ones((10, 10), np.float32))
    assert load_dataset(f"npz:{small},start=2024-01-01,freq=5").values.shape == (10, 10)


@pytest.mark.parametrize(
    ("options", "named"),
    [("start=9999-01-01,freq=5", "start='9999-01-01'"), ("start=1500-01-01,freq=5", "start="),
     ("start=2024-01-01,freq=1e9", "freq=1e+09"), ("start=2249-12-31,freq=60", "freq=60")],
)  # fmt: skip
def test_an_assumed_clock_outside_the_wire_years_names_the_option(tmp_path, options, named):
    path = tmp_path / "a.npz"
    np.savez(path, data=np.ones((100, 2)))
    text = one_line_error(f"npz:{path},{options}")
    assert named in text and "1700-2249" in text


GOOD_CSV = "time,a,b\n" + "".join(
    f"2024-01-01 {k // 12:02d}:{k % 12 * 5:02d},{k},{k + 1}\n" for k in range(48)
)


@pytest.mark.parametrize("name", ["fake.csv.gz", "plain.csv.xz", "plain.zip", "p.csv.zst", "p.bz2"])
def test_a_plain_csv_is_read_as_text_whatever_its_name(tmp_path, name):
    (tmp_path / name).write_text(GOOD_CSV)
    panel = load_dataset(f"csv:{tmp_path / name}")
    assert panel.sensor_ids == ("a", "b") and panel.values.shape == (48, 2)


def test_a_plain_adjacency_csv_named_gz_is_read_as_text(tmp_path):
    (tmp_path / "d.csv").write_text(GOOD_CSV)
    (tmp_path / "adj.csv.gz").write_text(",a,b\na,0,1\nb,1,0\n")
    panel = load_dataset(f"csv:{tmp_path / 'd.csv'}", adjacency=tmp_path / "adj.csv.gz")
    assert panel.graph is not None and panel.graph.num_edges == 2


def compressed(kind: str, data: bytes) -> bytes:
    import bz2
    import io
    import lzma

    if kind == "bzip2":
        return bz2.compress(data)
    if kind == "xz":
        return lzma.compress(data)
    if kind == "zstd":
        zstandard = pytest.importorskip("zstandard")
        return zstandard.ZstdCompressor().compress(data)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("d.csv", data)
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["bzip2", "xz", "zstd", "zip"])
def test_a_compressed_csv_other_than_gzip_is_refused_by_its_content(tmp_path, kind):
    path = tmp_path / "speeds.csv"
    path.write_bytes(compressed(kind, GOOD_CSV.encode()))
    text = one_line_error(f"csv:{path}")
    assert kind in text and "decompress it first" in text


def test_slash_dates_within_one_day_are_read_month_first_with_a_note(tmp_path):
    rows = "".join(f"03/04/2024 {k // 12:02d}:{k % 12 * 5:02d},{k}\n" for k in range(288))
    (tmp_path / "day.csv").write_text("time,a\n" + rows)
    panel = load_dataset(f"csv:{tmp_path / 'day.csv'}")
    assert panel.timestamps[0] == pd.Timestamp("2024-03-04", tz="UTC")
    (note,) = [n for n in panel.notes if "month-first" in n]
    assert "03 April 2024" in note and "ISO-8601" in note
    (tmp_path / "long.csv").write_text("time,sensor,value\n" + rows.replace(",", ",a,"))
    assert any("month-first" in n for n in load_dataset(f"csv:{tmp_path / 'long.csv'}").notes)
    days = "".join(f"{d:02d}/04/2024 00:00,{d}\n" for d in range(1, 13))
    (tmp_path / "days.csv").write_text("time,a\n" + days)
    assert not any("month-first" in n for n in load_dataset(f"csv:{tmp_path / 'days.csv'}").notes)


def test_replay_prints_the_readers_notes(tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    path = tmp_path / "a.npz"
    np.savez(path, data=np.arange(200.0).reshape(100, 2))
    result = CliRunner().invoke(
        app, ["replay", f"npz:{path}", "--bootstrap", "127.0.0.1:9", "--limit", "0"]
    )
    assert "has no timestamps" in result.stderr and result.exit_code != 0


def binary_adjacency(tmp_path: Path, name: str, matrix: np.ndarray) -> Path:
    import scipy.sparse

    path = tmp_path / name
    if name.endswith(".npz"):
        scipy.sparse.save_npz(path, scipy.sparse.csr_matrix(matrix))
    else:
        np.save(path, matrix)
    return path


@pytest.mark.parametrize("name", ["zeros.npy", "empty.npz"])
def test_a_binary_adjacency_without_links_is_refused_as_a_csv_one_is(tmp_path, name):
    """An all-zero .npy or sparse .npz was read as "0 directed links" (the same matrix as
    CSV was refused)."""
    (tmp_path / "d.csv").write_text(GOOD_CSV)
    path = binary_adjacency(tmp_path, name, np.eye(2))  # self-loops only
    with pytest.raises(DatasetError, match="no link between two different sensors"):
        load_dataset(f"csv:{tmp_path / 'd.csv'}", adjacency=path)


def test_a_bool_adjacency_is_read_as_0_and_1_and_a_negative_entry_is_named(tmp_path):
    (tmp_path / "d.csv").write_text(GOOD_CSV)
    links = binary_adjacency(tmp_path, "bool.npy", np.array([[False, True], [True, False]]))
    panel = load_dataset(f"csv:{tmp_path / 'd.csv'}", adjacency=links)
    assert panel.graph is not None and panel.graph.num_edges == 2
    negative = binary_adjacency(tmp_path, "neg.npy", np.array([[0.0, -1.0], [1.0, 0.0]]))
    with pytest.raises(DatasetError, match=r"entry \[0, 1\] \(sensor 'a' -> 'b'\) is -1\.0"):
        load_dataset(f"csv:{tmp_path / 'd.csv'}", adjacency=negative)


def long_csv(tmp_path: Path, offsets: dict[str, pd.Timedelta], every: int = 1) -> str:
    rows = ["time,sensor,value"]
    for k, ts in enumerate(TIMES):
        for sensor, offset in offsets.items():
            if sensor == "a" or k % every == 0:
                rows.append(f"{(ts + offset).isoformat()},{sensor},{50 + k % 7}")
    (tmp_path / "long.csv").write_text("\n".join(rows) + "\n")
    return f"csv:{tmp_path / 'long.csv'}"


@pytest.mark.parametrize("offset", [pd.Timedelta(minutes=2), pd.Timedelta(seconds=17)])
def test_sensors_reporting_at_staggered_times_are_refused_naming_the_fix(tmp_path, offset):
    """Each sensor every 5 minutes, one at :00 and one 2 minutes (or 17 s) later: read on a
    1-minute grid, 80 % missing, horizons in minutes (or refused as irregular at 17 s)."""
    zero = pd.Timedelta(0)
    error = one_line_error(long_csv(tmp_path, {"a": zero, "b": offset}))
    assert "each sensor reports every 5min, but at different times" in error
    assert "floor each time to 5min" in error


def test_sensors_reporting_at_different_rates_on_one_grid_are_read(tmp_path):
    panel = load_dataset(long_csv(tmp_path, {"a": pd.Timedelta(0), "b": pd.Timedelta(0)}, 3))
    assert panel.values.shape == (60, 2) and panel.timestamps.freq == pd.Timedelta("5min")
