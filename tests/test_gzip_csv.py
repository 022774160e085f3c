"""A gzip-compressed CSV (``speeds.csv.gz``, or gzip bytes under a ``.csv`` name) is read as
the plain file is, with the same rules and the same line numbers in errors; a corrupt,
truncated or non-text stream is one line naming the file."""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.cells import DatasetError
from pipeline.data.datasets import load_dataset

ROWS = ["# exported by a test", "time,a,b"] + [
    f"2024-03-01 {k // 12:02d}:{k % 12 * 5:02d},{60 + k % 7},{50 + k % 3}.5" for k in range(40)
]


def packed(path: Path, text: str | bytes) -> Path:
    path.write_bytes(gzip.compress(text.encode() if isinstance(text, str) else text))
    return path


def test_a_gzipped_csv_reads_as_the_plain_one(tmp_path):
    plain = tmp_path / "speeds.csv"
    plain.write_text("\n".join(ROWS) + "\n")
    for path in (packed(tmp_path / "speeds.csv.gz", plain.read_text()),
                 packed(tmp_path / "named.csv", plain.read_text())):  # fmt: skip
        panel = load_dataset(f"csv:{path}")
        reference = load_dataset(f"csv:{plain}")
        assert panel.sensor_ids == reference.sensor_ids
        np.testing.assert_array_equal(panel.values, reference.values)
        assert panel.timestamps.equals(reference.timestamps)


def test_errors_in_a_gzipped_csv_name_the_line_as_in_the_plain_file(tmp_path):
    bad = "\n".join([*ROWS[:10], "2024-03-01 00:40,61,x", *ROWS[11:]])
    (tmp_path / "speeds.csv").write_text(bad)
    with pytest.raises(DatasetError, match=r"speeds.csv: non-numeric value 'x' at line 11"):
        load_dataset(f"csv:{tmp_path / 'speeds.csv'}")
    with pytest.raises(DatasetError, match=r"speeds.csv.gz: non-numeric value 'x' at line 11"):
        load_dataset(f"csv:{packed(tmp_path / 'speeds.csv.gz', bad)}")


def test_a_gzipped_adjacency_is_read(tmp_path):
    data = packed(tmp_path / "speeds.csv.gz", "\n".join(ROWS) + "\n")
    edges = packed(tmp_path / "edges.csv.gz", "src,dst,weight\na,b,1\nb,a,1\n")
    panel = load_dataset(f"csv:{data}", adjacency=edges)
    assert panel.graph is not None and panel.graph.num_edges == 2


def zipped() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("speeds.csv", "time,a\n2024-03-01 00:00,1\n")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (gzip.compress(b"time,a\n" * 1000)[:30], "gzip-compressed but cannot be unpacked"),
        (gzip.compress(b"\x00" * 100_000), "mostly NUL bytes (unpacked from gzip)"),
        (gzip.compress("time,caf\xe9\n".encode("latin-1")),
         "gzip-compressed, and inside: not UTF-8 text"),
        (gzip.compress(zipped()), "gzip-compressed, and inside: a zip archive"),
        (gzip.compress(b""), "the file is empty"),
    ],
    ids=["truncated", "nul-bytes", "latin-1", "zip-inside", "empty"],
)  # fmt: skip
def test_a_stream_that_is_no_csv_is_one_line(tmp_path, content, message):
    path = tmp_path / "speeds.csv.gz"
    path.write_bytes(content)
    with pytest.raises(DatasetError) as info:
        load_dataset(f"csv:{path}")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_stream_past_the_unpacked_limit_is_refused(tmp_path, monkeypatch):
    import pipeline.data.text_file as text_file

    monkeypatch.setattr(text_file, "MAX_UNPACKED", 2**20)
    text_file._head.cache_clear()
    path = packed(tmp_path / "big.csv.gz", "time,a\n" + "2024-03-01 00:00,1\n" * 100_000)
    with pytest.raises(DatasetError, match="unpacks to more than 0 GiB; unpack it yourself"):
        load_dataset(f"csv:{path}")
