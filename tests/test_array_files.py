"""The field's array and table files as data: ASTGCN's PeMSD4-style ``.npz`` (``[time,
sensor, feature]``, sensors by index, an edge list ``from,to,cost``), any ``[time,
sensor]`` array, pandas HDF5 tables (DCRNN, LargeST) and Parquet tables. What the file
leaves to an assumption is noted; what cannot be read is one line naming the file and the
fix."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from pipeline.data.cells import DatasetError
from pipeline.data.datasets import load_dataset


def readings(n_time: int = 400, n: int = 4, features: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    day = np.sin(np.arange(n_time) / 288 * 2 * np.pi)[:, None, None]
    return (100 + 40 * day + rng.normal(0, 3, (n_time, n, features))).astype(np.float32)


def pems_like(tmp_path: Path, **arrays: np.ndarray) -> Path:
    path = tmp_path / "PEMS04.npz"
    np.savez(path, **(arrays or {"data": readings()}))
    return path


def chain_edges(tmp_path: Path, n: int = 4) -> Path:
    """PeMSD4's form: ``from,to,cost`` between sensor indices, cost in metres."""
    rows = [f"{i},{i + 1},{800 + 10 * i}" for i in range(n - 1)]
    rows += [f"{i + 1},{i},{800 + 10 * i}" for i in range(n - 1)]
    path = tmp_path / "PEMS04.csv"
    path.write_text("from,to,cost\n" + "\n".join(rows) + "\n")
    return path


def test_a_pems_npz_reads_feature_0_of_sensors_by_index_with_notes(tmp_path):
    data = readings()
    panel = load_dataset(f"npz:{pems_like(tmp_path, data=data)}", adjacency=chain_edges(tmp_path))
    assert panel.sensor_ids == ("0", "1", "2", "3") and panel.n_time == 400
    np.testing.assert_array_equal(panel.values, data[:, :, 0])
    assert panel.graph is not None and panel.graph.num_edges == 6
    notes = " ".join(panel.notes)
    assert "3 features per sensor; feature 0 is read" in notes
    assert "has no timestamps: step k is read as 2000-01-01 00:00 UTC + k x 5min" in notes


def test_options_choose_the_feature_and_the_clock(tmp_path):
    data = readings()
    path = pems_like(tmp_path, data=data)
    panel = load_dataset(f"npz:{path},feature=2,start=2018-01-01,freq=15")
    np.testing.assert_array_equal(panel.values, data[:, :, 2])
    assert panel.timestamps[0] == pd.Timestamp("2018-01-01", tz="UTC")
    assert panel.freq == pd.Timedelta("15min") and panel.notes == ()


def test_two_dimensional_one_dimensional_and_npy_arrays(tmp_path):
    flat = readings()[:, :, 0]
    np.savez(tmp_path / "flow.npz", flow=flat)  # one array, whatever its name
    assert load_dataset(f"npz:{tmp_path / 'flow.npz'}").n_nodes == 4
    np.save(tmp_path / "flow.npy", flat)
    assert load_dataset(f"npz:{tmp_path / 'flow.npy'}").n_nodes == 4
    np.save(tmp_path / "one.npy", flat[:, 0])
    assert load_dataset(f"npz:{tmp_path / 'one.npy'}").sensor_ids == ("0",)


def test_missing_and_zero_readings(tmp_path):
    data = readings()[:, :, 0].astype(np.float64)
    data[3, 1], data[4, 2], data[5, 3] = np.nan, np.inf, 0.0
    np.savez(tmp_path / "d.npz", data=data)
    panel = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert not panel.mask[3, 1] and not panel.mask[4, 2] and panel.mask[5, 3]
    zeros = load_dataset(f"npz:{tmp_path / 'd.npz'},zeros=missing")
    assert not zeros.mask[5, 3] and zeros.mask[6, 3]


TWO = {"data": np.ones((50, 2))}
THREE = {"data": np.ones((50, 2, 3))}


@pytest.mark.parametrize(
    ("arrays", "option", "message"),
    [
        ({"a": np.ones((50, 2)), "b": np.ones((50, 2))}, "",
         "holds 2 arrays (a, b) and none is named 'data'"),
        (TWO, ",key=speed", "no array named 'speed'; it holds data"),
        (THREE, ",feature=3", "feature=3 is out of range; the array has 3 features (0 to 2)"),
        (THREE, ",feature=x", "feature='x' is not a whole number"),
        (TWO, ",feature=1", "feature=1 is for a [time, sensor, feature] array"),
        ({"data": np.ones((5, 2, 3, 4))}, "", "has shape (5, 2, 3, 4); expected [time, sensor]"),
        ({"data": np.array(["a", "b"])}, "", "holds <U1 values, not numbers"),
        ({"data": np.full((50, 2), 1e300)}, "",
         "value 1e+300 at step 0, sensor 0 is beyond the 32-bit range"),
        ({"data": np.ones((0, 2))}, "", "no readings (shape (0, 2))"),
        (TWO, ",freq=0", "freq='0' must be a positive number of minutes"),
        (TWO, ",start=soon", "start='soon' is not a date"),
        (TWO, ",colour=red", "unknown option 'colour'; known: key, feature"),
        (TWO, ",zeros=maybe", "zeros='maybe'; use zeros=missing or zeros=keep"),
    ],
)  # fmt: skip
def test_what_an_npz_cannot_give_is_one_line_naming_the_fix(tmp_path, arrays, option, message):
    path = pems_like(tmp_path, **arrays)
    with pytest.raises(DatasetError) as info:
        load_dataset(f"npz:{path}{option}")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_pickled_objects_and_files_that_are_no_npz_are_refused_unread(tmp_path):
    np.savez(tmp_path / "obj.npz", data=np.array([{"code": "run"}], dtype=object))
    with pytest.raises(DatasetError, match="holds pickled Python objects, which are not read"):
        load_dataset(f"npz:{tmp_path / 'obj.npz'}")
    np.save(tmp_path / "obj.npy", np.array([{"code": "run"}], dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError, match=r"obj\.npy: the array holds pickled Python objects"):
        load_dataset(f"npz:{tmp_path / 'obj.npy'}")
    (tmp_path / "pickle.npy").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(DatasetError, match=r"no .npy or .npz header; pickles are not read"):
        load_dataset(f"npz:{tmp_path / 'pickle.npy'}")
    (tmp_path / "fake.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(DatasetError, match=r"fake.npz: not a NumPy .npz or .npy file"):
        load_dataset(f"npz:{tmp_path / 'fake.npz'}")
    with pytest.raises(DatasetError, match="missing file"):
        load_dataset(f"npz:{tmp_path / 'absent.npz'}")


def test_an_array_is_read_without_a_whole_float64_copy(tmp_path):
    """Reading an npz took 3.25 times the array's bytes at peak (a float64 copy and
    temporaries as large): a 1.5 MB archive of zeros declaring 1.6 GB took 5 GB. The
    readings are converted to float32 a block at a time: the array, half of it, a mask."""
    import tracemalloc

    array = np.random.default_rng(0).normal(50, 5, (500, 4000))
    np.save(tmp_path / "big.npy", array)
    tracemalloc.start()
    try:
        panel = load_dataset(f"npz:{tmp_path / 'big.npy'}")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert panel.values.dtype == np.float32 and np.allclose(panel.values, array)
    assert peak < 2 * array.nbytes, peak / array.nbytes


def test_fewer_steps_than_sensors_is_noted_as_a_possible_transpose(tmp_path):
    np.save(tmp_path / "wide.npy", np.ones((3, 10)))
    panel = load_dataset(f"npz:{tmp_path / 'wide.npy'}")
    assert any("fewer steps (3) than sensors (10)" in note for note in panel.notes)


def dcrnn_frame(n_time: int = 300, n: int = 3) -> pd.DataFrame:
    times = pd.date_range("2019-01-01", periods=n_time, freq="5min")
    values = readings(n_time, n, 1)[:, :, 0].astype(np.float64)
    return pd.DataFrame(values, index=times, columns=[f"77{i}" for i in range(n)])


def test_an_hdf5_table_keeps_its_times_and_sensor_ids(tmp_path):
    frame = dcrnn_frame()
    frame.iloc[4, 1] = 0.0
    frame.to_hdf(tmp_path / "speed.h5", key="df")
    panel = load_dataset(f"h5:{tmp_path / 'speed.h5'}")
    assert panel.sensor_ids == ("770", "771", "772") and panel.notes == ()
    assert panel.timestamps[0] == pd.Timestamp("2019-01-01", tz="UTC") and panel.mask[4, 1]
    assert not load_dataset(f"h5:{tmp_path / 'speed.h5'},zeros=missing").mask[4, 1]


class _Marker:
    """Unpickling it creates the file ``path``: proof that a pickle's code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


@pytest.mark.parametrize("where", ["object column", "attribute"])
def test_an_hdf5_file_runs_no_code_from_its_pickles(tmp_path, where):
    """An ``object`` column (pickled by to_hdf) or a pickled node attribute ran its code
    as the file was read: any callable a crafted file named was called."""
    import tables

    ran = tmp_path / "ran"
    frame = dcrnn_frame()
    path = tmp_path / "crafted.h5"
    if where == "object column":
        frame = frame.astype(object)
        frame.iloc[0, 0] = _Marker(ran)
    frame.to_hdf(path, key="df")
    if where == "attribute":
        with tables.open_file(path, "a") as handle:
            handle.root.df._v_attrs.note = _Marker(ran)
    with pytest.raises(DatasetError) as info:
        load_dataset(f"h5:{path}")
    assert not ran.exists()
    assert "refused without running it" in str(info.value) and "\n" not in str(info.value)


def test_an_hdf5_index_keeps_the_pickles_pandas_writes(tmp_path):
    """pandas pickles an index's freq and time zone into the file: those are read."""
    frame = dcrnn_frame().tz_localize("America/Los_Angeles")
    frame.to_hdf(tmp_path / "fixed.h5", key="df")
    frame.to_hdf(tmp_path / "table.h5", key="df", format="table")
    for name in ("fixed.h5", "table.h5"):
        panel = load_dataset(f"h5:{tmp_path / name}")
        assert panel.timestamps[0] == pd.Timestamp("2019-01-01 08:00", tz="UTC")


def test_hdf5_keys_clock_and_bad_files(tmp_path):
    frame = dcrnn_frame()
    path = tmp_path / "two.h5"
    frame.to_hdf(path, key="speed")
    frame.to_hdf(path, key="flow")
    with pytest.raises(DatasetError, match=r"holds 2 tables \(/flow, /speed\); choose one"):
        load_dataset(f"h5:{path}")
    assert load_dataset(f"h5:{path},key=flow").n_time == 300
    with pytest.raises(DatasetError, match="start= and freq= are for files without"):
        load_dataset(f"h5:{path},key=flow,freq=5")
    frame.reset_index(drop=True).to_hdf(tmp_path / "untimed.h5", key="x")
    untimed = load_dataset(f"h5:{tmp_path / 'untimed.h5'},start=2020-05-01,freq=5")
    assert untimed.timestamps[0] == pd.Timestamp("2020-05-01", tz="UTC")
    (tmp_path / "text.h5").write_text("time,a\n")
    with pytest.raises(DatasetError) as info:
        load_dataset(f"h5:{tmp_path / 'text.h5'}")
    assert "not an HDF5 file" in str(info.value) and "\n" not in str(info.value)


def test_the_spec_lists_the_file_kinds_and_graphs_stay_for_files(tmp_path):
    with pytest.raises(DatasetError, match="csv:PATH, npz:PATH, h5:PATH, parquet:PATH"):
        load_dataset("feather:x.feather")
    with pytest.raises(DatasetError, match=r"--adjacency is only for a file's data \(csv:PATH"):
        load_dataset("simulated", adjacency=chain_edges(tmp_path))
    only = r"--timezone is only for timestamps in a file \(csv:, h5:, parquet:\), not npz"
    with pytest.raises(DatasetError, match=only):
        load_dataset(f"npz:{pems_like(tmp_path)}", timezone="Europe/Paris")


def test_data_info_and_train_read_a_pems_npz(tmp_path, prefect_harness):
    data = pems_like(tmp_path, data=readings(600))
    edges = chain_edges(tmp_path)
    info = CliRunner().invoke(app, ["data", "info", f"npz:{data}", "--adjacency", str(edges)])
    assert info.exit_code == 0, info.output
    assert "feature 0 is read" in " ".join(info.output.split())
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        ["train", f"npz:{data},start=2018-01-01,freq=5", "--adjacency", str(edges),
         "--models", "persistence,ar", "--window", "6", "--horizon", "3",
         "--out", str(out), "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["models"]) == {"persistence", "ar"}


def sensor_table(n_time: int = 300) -> pd.DataFrame:
    times = pd.date_range("2024-03-01", periods=n_time, freq="5min")
    values = readings(n_time, 3, 1)[:, :, 0].astype(np.float64)
    return pd.DataFrame(values, index=times, columns=["a", "b", "c"])


@pytest.mark.parametrize("form", ["index", "typed column", "iso text column"])
def test_a_parquet_table_takes_its_time_from_the_index_or_one_column(tmp_path, form):
    frame = sensor_table()
    if form != "index":
        frame = frame.reset_index(names="time")
    if form == "iso text column":
        frame["time"] = frame["time"].dt.strftime("%Y-%m-%dT%H:%M:%S+00:00")
    frame.to_parquet(tmp_path / "t.parquet")
    panel = load_dataset(f"parquet:{tmp_path / 't.parquet'}")
    assert panel.sensor_ids == ("a", "b", "c") and panel.notes == ()
    assert panel.timestamps[0] == pd.Timestamp("2024-03-01", tz="UTC")
    np.testing.assert_allclose(panel.values, sensor_table().to_numpy(), rtol=1e-6)


def test_a_parquet_table_without_times_or_with_text_is_named(tmp_path):
    frame = sensor_table()
    frame.reset_index(drop=True).to_parquet(tmp_path / "bare.parquet")
    bare = load_dataset(f"parquet:{tmp_path / 'bare.parquet'}")
    assert any("has no timestamps" in note for note in bare.notes)
    labelled = frame.reset_index(names="time").assign(road="I-5", lane="1")
    labelled.to_parquet(tmp_path / "labelled.parquet")
    with pytest.raises(DatasetError, match=r"column 'road' holds text \('I-5'\), not readings"):
        load_dataset(f"parquet:{tmp_path / 'labelled.parquet'}")
    flagged = frame.reset_index(names="time").assign(valid=np.arange(len(frame)) % 7 != 0)
    flagged.to_parquet(tmp_path / "flagged.parquet")
    with pytest.raises(DatasetError, match=r"column 'valid' holds true/false flags"):
        load_dataset(f"parquet:{tmp_path / 'flagged.parquet'}")
    np.savez(tmp_path / "flags.npz", data=np.ones((300, 3), dtype=bool))
    with pytest.raises(DatasetError, match=r"holds true/false flags"):
        load_dataset(f"npz:{tmp_path / 'flags.npz'}")
    (tmp_path / "csv.parquet").write_text("time,a\n2024-03-01,1\n")
    with pytest.raises(DatasetError) as info:
        load_dataset(f"parquet:{tmp_path / 'csv.parquet'}")
    assert "not a Parquet table" in str(info.value) and "\n" not in str(info.value)


def test_a_parquet_table_with_unreadable_pandas_metadata_is_named(tmp_path):
    """Valid JSON of the wrong shape as pandas' metadata ended in an unexpected TypeError."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(sensor_table())
    metadata = {b"pandas": b'{"index_columns": ["nope"], "columns": 5}'}
    pq.write_table(table.replace_schema_metadata(metadata), tmp_path / "meta.parquet")
    with pytest.raises(DatasetError, match=r"meta\.parquet: the table's pandas metadata cannot"):
        load_dataset(f"parquet:{tmp_path / 'meta.parquet'}")


@pytest.mark.parametrize("sensor", ["sensor", "station_id", "detector name"])
def test_a_long_parquet_table_reads_as_the_wide_one(tmp_path, sensor):
    frame = sensor_table()
    long = frame.reset_index(names="time").melt(id_vars="time", var_name=sensor, value_name="v")
    if sensor == "station_id":
        long[sensor] = long[sensor].map({"a": 7, "b": 8, "c": 9})  # whole-number ids
    long.sample(frac=1, random_state=0).to_parquet(tmp_path / "long.parquet")  # any order
    panel = load_dataset(f"parquet:{tmp_path / 'long.parquet'}")
    wide = frame.rename(columns={"a": "7", "b": "8", "c": "9"}) if sensor == "station_id" else frame
    assert sorted(panel.sensor_ids) == sorted(wide.columns)
    order = [panel.sensor_ids.index(c) for c in wide.columns]
    np.testing.assert_allclose(panel.values[:, order], wide.to_numpy(), rtol=1e-6)
    assert panel.timestamps[0] == pd.Timestamp("2024-03-01", tz="UTC")


def test_a_long_parquet_table_refuses_two_readings_and_ids_kafka_cannot_carry(tmp_path):
    long = sensor_table(20).reset_index(names="time").melt(id_vars="time", var_name="sensor")
    pd.concat([long, long.iloc[[3]]], ignore_index=True).to_parquet(tmp_path / "twice.parquet")
    with pytest.raises(DatasetError, match=r"sensor 'a' has two readings at .* \(rows 3 and 60\)"):
        load_dataset(f"parquet:{tmp_path / 'twice.parquet'}")
    long.assign(sensor=[None, *long["sensor"][1:]]).to_parquet(tmp_path / "none.parquet")
    with pytest.raises(DatasetError, match="row 0 has no sensor"):
        load_dataset(f"parquet:{tmp_path / 'none.parquet'}")
    long.assign(sensor="bad\x00id").iloc[:1].to_parquet(tmp_path / "nul.parquet")
    with pytest.raises(DatasetError, match="holds a control or invisible character"):
        load_dataset(f"parquet:{tmp_path / 'nul.parquet'}")


def test_an_npz_adjacency_sparse_or_dense_links_sensors_by_index(tmp_path):
    import scipy.sparse

    data = pems_like(tmp_path)
    rows, cols = np.array([0, 1, 2, 1, 3]), np.array([1, 2, 3, 1, 2])  # 1 -> 1: dropped
    sparse = scipy.sparse.coo_matrix((np.array([1.0, 0.5, 2.0, 9.0, 0.0]), (rows, cols)), (4, 4))
    scipy.sparse.save_npz(tmp_path / "adj_sparse.npz", sparse.tocsr())
    graph = load_dataset(f"npz:{data}", adjacency=tmp_path / "adj_sparse.npz").graph
    assert graph is not None and graph.num_edges == 3  # the 0 entry is no link
    dense = np.zeros((4, 4))
    dense[0, 1] = dense[1, 0] = 1.0
    np.savez(tmp_path / "adj_dense.npz", adj_mx=dense, ids=np.arange(4))
    graph = load_dataset(f"npz:{data}", adjacency=tmp_path / "adj_dense.npz").graph
    assert graph is not None and graph.num_edges == 2


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"a": np.eye(4), "b": np.eye(4)}, "holds 2 arrays (a, b); expected one matrix"),
        ({"adj": np.eye(3)}, "expected a 4 x 4 matrix"),
        ({"adj": np.array([{"x": 1}], dtype=object)}, "array 'adj' holds pickled Python objects"),
    ],
)
def test_an_npz_adjacency_that_cannot_serve_is_named(tmp_path, arrays, message):
    np.savez(tmp_path / "adj.npz", **arrays)
    with pytest.raises(DatasetError) as info:
        load_dataset(f"npz:{pems_like(tmp_path)}", adjacency=tmp_path / "adj.npz")
    assert message in str(info.value) and "\n" not in str(info.value)


def _npy_header(shape: tuple[int, ...]) -> bytes:
    header = f"{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode()


def test_an_adjacency_of_the_wrong_size_is_refused_before_it_is_read(tmp_path):
    """A 400 kB archive of zeros declaring a 7,000 x 7,000 matrix (392 MB) was read
    whole before its shape was checked, and a .npy header declaring 8 TB ended in
    MemoryError: the shape each header declares is checked first."""
    import tracemalloc
    import zipfile

    data = pems_like(tmp_path)
    n = 7_000  # 392 MB of float64
    with (
        zipfile.ZipFile(tmp_path / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("adj.npy", "w", force_zip64=True) as member,
    ):
        member.write(_npy_header((n, n)))
        for _ in range(n // 100):
            member.write(bytes(8 * n * 100))
    sparse = {"format": np.array(b"csr"), "shape": np.array([4, 4]), "data": np.zeros(n * n // 8)}
    np.savez_compressed(tmp_path / "sparse.npz", indices=np.zeros(1), indptr=np.zeros(5), **sparse)
    (tmp_path / "huge.npy").write_bytes(_npy_header((10**6, 10**6)) + bytes(64))
    expected = {
        "bomb.npz": r"expected a 4 x 4 matrix .* got shape \(7000, 7000\)",
        "sparse.npz": r"array 'data' holds 6125000 values, more than a sparse 4 x 4 matrix",
        "huge.npy": r"the array declares 8000000000000 bytes .* not fully written",
    }
    for name, message in expected.items():
        tracemalloc.start()
        try:
            with pytest.raises(DatasetError, match=message):
                load_dataset(f"npz:{data}", adjacency=tmp_path / name)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 50 * 2**20, (name, peak)


def test_a_sparse_adjacency_of_another_size_or_with_negative_weights_is_named(tmp_path):
    import scipy.sparse

    data = pems_like(tmp_path)
    scipy.sparse.save_npz(tmp_path / "small.npz", scipy.sparse.eye(3, format="csr"))
    with pytest.raises(DatasetError, match=r"expected a 4 x 4 matrix .* got shape \(3, 3\)"):
        load_dataset(f"npz:{data}", adjacency=tmp_path / "small.npz")
    signed = scipy.sparse.csr_matrix(np.array([[0, -1.0, 0, 0]] + [[0] * 4] * 3))
    scipy.sparse.save_npz(tmp_path / "signed.npz", signed)
    with pytest.raises(DatasetError, match="must hold finite entries >= 0"):
        load_dataset(f"npz:{data}", adjacency=tmp_path / "signed.npz")


@pytest.mark.parametrize("suffix", ["h5", "parquet"])
def test_a_table_s_times_are_checked_and_named_by_row(tmp_path, suffix):
    def written(name: str, frame: pd.DataFrame) -> str:
        path = tmp_path / f"{name}.{suffix}"
        frame.to_hdf(path, key="x") if suffix == "h5" else frame.to_parquet(path)
        return f"{suffix}:{path}"

    frame = sensor_table(100)
    shuffled = load_dataset(written("shuffled", frame.sample(frac=1, random_state=0)))
    np.testing.assert_allclose(shuffled.values, frame.to_numpy(), rtol=1e-6)  # put in order
    local = load_dataset(written("local", frame.tz_localize("America/Los_Angeles")))
    assert local.timestamps[0] == pd.Timestamp("2024-03-01 08:00", tz="UTC")
    with pytest.raises(DatasetError, match=r"duplicate timestamp .* at rows 0 and 100"):
        load_dataset(written("twice", pd.concat([frame, frame.iloc[:1]])))
    jitter = frame.index + pd.to_timedelta(np.r_[0, 17, np.zeros(98)], unit="s")
    with pytest.raises(DatasetError, match="irregular timestamps: row 1 is"):
        load_dataset(written("jitter", frame.set_axis(jitter)))
    with pytest.raises(DatasetError, match=r"a row has no timestamp \(NaT\)"):
        load_dataset(written("nat", frame.set_axis(frame.index.insert(3, pd.NaT)[:100])))


@pytest.mark.parametrize(
    ("kind", "module", "extra"), [("parquet", "pyarrow", "parquet"), ("h5", "tables", "hdf5")]
)
def test_a_missing_optional_reader_names_its_install(tmp_path, monkeypatch, kind, module, extra):
    path = tmp_path / f"flow.{kind}"
    path.write_bytes(b"anything")
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    with pytest.raises(DatasetError, match=rf"needs .*: pip install 'roadcast\[{extra}\]'"):
        load_dataset(f"{kind}:{path}")


@pytest.mark.parametrize("suffix", ["h5", "parquet"])
def test_a_table_s_local_times_read_in_their_zone(tmp_path, suffix):
    """Naive times are UTC unless --timezone names the zone they were written in; the
    autumn's repeated hour is told apart by the rows' order."""
    first = pd.date_range("2024-11-03 00:00", periods=24, freq="5min")  # to 01:55 PDT
    again = pd.date_range("2024-11-03 01:00", periods=12, freq="5min")  # 01:00-01:55 PST
    frame = pd.DataFrame({"a": np.arange(36.0)}, index=first.append(again))
    path = tmp_path / f"local.{suffix}"
    frame.to_hdf(path, key="x") if suffix == "h5" else frame.to_parquet(path)
    with pytest.raises(DatasetError, match=r"duplicate timestamp .* at rows 12 and 24"):
        load_dataset(f"{suffix}:{path}")
    panel = load_dataset(f"{suffix}:{path}", timezone="America/Los_Angeles")
    assert panel.timestamps[0] == pd.Timestamp("2024-11-03 07:00", tz="UTC")
    assert panel.timestamps[-1] == pd.Timestamp("2024-11-03 09:55", tz="UTC")
    assert panel.n_time == 36 and panel.mask.all()


def test_data_info_says_what_train_says_of_the_graph(tmp_path):
    """Sensors without a link and a graph in separate parts were noted by `roadcast
    train` only; `data info`, the way to check a file, said nothing."""
    data = pems_like(tmp_path, data=readings(600))
    edges = tmp_path / "edges.csv"
    edges.write_text("from,to,cost\n0,1,800\n1,0,800\n")
    info = CliRunner().invoke(app, ["data", "info", f"npz:{data}", "--adjacency", str(edges)])
    assert info.exit_code == 0, info.output
    assert "2 sensor(s) have no link in the graph, e.g. ['2', '3']" in info.output
