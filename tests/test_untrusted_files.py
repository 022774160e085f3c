"""Files a user downloaded: DCRNN pickles never run code, every download is checksummed."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from flows.cli import app
from pipeline.data.datasets import DATASETS, DatasetError, DatasetInfo, RemoteFile, load_dataset
from pipeline.data.dcrnn_pickle import AdjacencyPickleError, read_adjacency_pickle
from pipeline.data.fetch import FetchError, fetch_dataset, parse_sha256_options, sha256_of
from tests.test_datasets import write_dcrnn


class _Payload:
    """Unpickling this runs ``os.system(command)`` with the standard unpickler."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_real_metr_la_adjacency_reads_as_pickle_does(shared_data: Path) -> None:
    path = shared_data / "metr-la" / "adj_mx.pkl"
    ids, id_to_ind, adj = read_adjacency_pickle(path)
    with path.open("rb") as f:  # the trusted reference copy: what the format holds
        ref_ids, ref_map, ref_adj = pickle.load(f)
    assert ids == ref_ids and len(ids) == 207
    assert id_to_ind == ref_map
    np.testing.assert_array_equal(adj, ref_adj)


def test_crafted_adjacency_pickle_never_runs_its_payload(tmp_path: Path) -> None:
    write_dcrnn(tmp_path, "metr-la", "metr-la.h5", "adj_mx.pkl")
    marker = tmp_path / "payload-ran"
    crafted = ([], {}, _Payload(f"touch {marker}"))
    (tmp_path / "metr-la" / "adj_mx.pkl").write_bytes(pickle.dumps(crafted, protocol=2))
    with pytest.raises(DatasetError, match=r"adj_mx\.pkl.*refers to (posix|os)\.system"):
        load_dataset("metr-la", data_dir=tmp_path)
    assert not marker.exists()


class _HugeArray:
    """Unpickles as ``numpy.ndarray(shape, "f8")``: memory asked for, not given by the file."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape

    def __reduce__(self):
        return (np.ndarray, (self.shape, "f8"))


@pytest.mark.parametrize("protocol", [2, 5])
def test_an_adjacency_pickle_cannot_ask_for_any_memory(tmp_path: Path, protocol: int) -> None:
    """``numpy.ndarray`` is allowed (DCRNN's arrays need it): a 150-byte pickle asking for
    a 200,000 x 200,000 matrix ended in an unexpected MemoryError (298 GiB)."""
    path = tmp_path / "adj.pkl"
    path.write_bytes(pickle.dumps((["a"], {"a": 0}, _HugeArray((200_000, 200_000))), protocol))
    with pytest.raises(AdjacencyPickleError, match=r"shape \(200000, 200000\) \(298\.0 GiB\)"):
        read_adjacency_pickle(path)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_adjacency_pickle_of_any_protocol(tmp_path: Path, protocol: int) -> None:
    adj = np.array([[1.0, 0.5], [0.0, 1.0]], dtype=np.float32)
    path = tmp_path / "adj.pkl"
    path.write_bytes(pickle.dumps((["a", "b"], {"a": 0, "b": 1}, adj), protocol=protocol))
    ids, mapping, read = read_adjacency_pickle(path)
    assert ids == ["a", "b"] and mapping == {"a": 0, "b": 1}
    np.testing.assert_array_equal(read, adj)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ((["a"], {"a": 0}, np.zeros((2, 2))), "shape"),
        ((["a"], {"a": 5}, np.eye(1)), "row numbers"),
        ((["a", "b"], {"a": 0, "b": 0}, np.eye(2)), "maps 'a' and 'b' to the same row 0"),
        ((["a"], {"a": 0}, np.array([["x"]], dtype=object)), "numeric"),
        ((["a"], {"a": 0}), "expected"),
    ],
)
def test_adjacency_pickle_of_the_wrong_shape(tmp_path: Path, content, message: str) -> None:
    path = tmp_path / "adj.pkl"
    path.write_bytes(pickle.dumps(content, protocol=2))
    with pytest.raises(AdjacencyPickleError, match=message):
        read_adjacency_pickle(path)
    path.write_bytes(b"not a pickle")
    with pytest.raises(AdjacencyPickleError, match="pickle"):
        read_adjacency_pickle(path)


# ---------------------------------------------------------------- fetch


def test_no_catalogue_file_is_accepted_with_other_content(tmp_path: Path) -> None:
    """A mirror serving arbitrary bytes at every path gets nothing into the data dir."""
    mirror = tmp_path / "mirror"
    for info in DATASETS.values():
        for remote in info.files:
            for rel in (remote.path, *remote.alternatives):
                (mirror / rel).parent.mkdir(parents=True, exist_ok=True)
                (mirror / rel).write_bytes(b"crafted content\n")
    for name in DATASETS:
        out = tmp_path / "data" / name
        try:
            results = fetch_dataset(name, data_dir=out, mirror=mirror.as_uri())
        except FetchError as exc:
            assert "mismatch" in str(exc) or "checksum" in str(exc) or "manual" in str(exc)
        else:
            assert all(r.status != "downloaded" for r in results), results
        assert not any(p.is_file() for p in out.rglob("*")), name


def test_pems_bay_adjacency_is_checked(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    (mirror / "pems-bay").mkdir(parents=True)
    (mirror / "pems-bay" / "adj_mx_bay.pkl").write_bytes(pickle.dumps(([], {}, np.eye(0))))
    with pytest.raises(FetchError, match=r"adj_mx_bay\.pkl.*md5 mismatch"):
        fetch_dataset("pems-bay", data_dir=tmp_path / "data", mirror=mirror.as_uri())
    assert not (tmp_path / "data" / "pems-bay" / "adj_mx_bay.pkl").exists()


def test_file_without_published_checksum_needs_the_users(tmp_path: Path) -> None:
    origin = tmp_path / "origin" / "set" / "f.json"
    origin.parent.mkdir(parents=True)
    origin.write_text("{}\n")
    info = DatasetInfo("set", "test", (RemoteFile("set/f.json", url="x"),), "MIT", "here")
    mirror = (tmp_path / "origin").as_uri()
    with pytest.raises(FetchError, match=r"no published checksum: pass --sha256 set/f\.json="):
        fetch_dataset(info, data_dir=tmp_path / "data", mirror=mirror)
    results = fetch_dataset(
        info, data_dir=tmp_path / "data", mirror=mirror, sha256={"set/f.json": sha256_of(origin)}
    )
    assert [r.status for r in results] == ["downloaded"]


def test_sha256_option_is_validated(tmp_path: Path) -> None:
    path = "pems-bay/adj_mx_bay.pkl"
    assert parse_sha256_options([f"{path}={'A' * 64}"], "pems-bay") == {path: "a" * 64}
    with pytest.raises(DatasetError, match="64 hex"):
        parse_sha256_options([f"{path}=abc"], "pems-bay")
    with pytest.raises(DatasetError, match="has no file"):
        parse_sha256_options([f"nope.pkl={'a' * 64}"], "pems-bay")
    with pytest.raises(DatasetError, match="two digests"):  # the last one used to win
        parse_sha256_options([f"{path}={'a' * 64}", f"{path}={'b' * 64}"], "pems-bay")
    same = [f"{path}={'a' * 64}", f"{path}={'A' * 64}"]
    assert parse_sha256_options(same, "pems-bay") == {path: "a" * 64}
    result = CliRunner().invoke(
        app, ["data", "fetch", "pems-bay", "--data-dir", str(tmp_path), "--sha256", "x=1"]
    )
    assert result.exit_code == 1 and "--sha256 'x=1'" in result.output
