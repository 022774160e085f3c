"""A wide CSV is read a block of rows at a time: what ``load_dataset("csv:...")`` holds
while reading is the float array and one block's text, never the file's cells as Python
strings (~16x the file), so a file of GBs loads on a laptop. Errors name the same line and
column wherever the block boundaries fall."""

from __future__ import annotations

import gzip
import re
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.data import timestamps
from pipeline.data.cells import DatasetError
from pipeline.data.datasets import load_dataset

SENSORS, STEPS = 200, 1000
# Peak traced memory while loading, at most this many times the panel's float32 values
# (the reader's float64 array is twice that); reading every cell as a string took ~29x.
MAX_PEAK_PER_PANEL = 8


def speeds(seed: int = 0) -> pd.DataFrame:
    """Readings with three decimals and a few empty cells, one column per sensor."""
    rng = np.random.default_rng(seed)
    times = pd.date_range("2024-03-01", periods=STEPS, freq="5min", name="timestamp")
    values = np.round(rng.uniform(10, 80, (STEPS, SENSORS)), 3)
    frame = pd.DataFrame(values, index=times, columns=[f"s{k}" for k in range(SENSORS)])
    return frame.mask(rng.random(frame.shape) < 0.001)


@pytest.mark.parametrize("packed", [False, True], ids=["plain", "gzip-with-comment"])
def test_loading_a_wide_csv_holds_a_small_multiple_of_its_panel(tmp_path, monkeypatch, packed):
    # Blocks small next to the file, as they are next to a file of GBs.
    monkeypatch.setattr(timestamps, "BLOCK_CELLS", 4096)
    frame = speeds()
    text = frame.to_csv()
    if packed:  # read through a stream with the comment blanked, pieces at a time
        lines = text.splitlines(keepends=True)
        text = "".join([*lines[:500], "# sensor s3 recalibrated\n", *lines[500:]])
    path = tmp_path / ("speeds.csv.gz" if packed else "speeds.csv")
    path.write_bytes(gzip.compress(text.encode()) if packed else text.encode())
    tracemalloc.start()
    try:
        panel = load_dataset(f"csv:{path}")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(panel.values, frame.to_numpy(dtype=np.float32))
    assert peak < MAX_PEAK_PER_PANEL * panel.values.nbytes, (
        f"peak {peak / 1e6:.1f} MB for a panel of {panel.values.nbytes / 1e6:.1f} MB"
    )


def _error(path: Path) -> str:
    with pytest.raises(DatasetError) as caught:
        load_dataset(f"csv:{path}")
    return str(caught.value)


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        ({(150, 7): "bad", (180, 3): "n/d"}, r"'bad' at line 152, column 's7'; use a number"),
        ({(r, 5): "n/d" for r in range(200)}, r"'n/d' at line 2, column 's5'; .* no number in"),
        ({(0, c): "km/h" for c in range(12)}, r"'km/h' at line 2, .* second header line"),
        ({(120, 2): "1e400", (190, 1): "?"}, r"'\?' at line 192, column 's1'; if it marks"),
        ({(120, 2): "1e400"}, r"value '1e400' at line 122, column 's2' is too large"),
    ],
)
def test_a_bad_cell_is_named_alike_whatever_block_it_falls_in(
    tmp_path, monkeypatch, cells, expected
):
    frame = speeds().iloc[:200, :12].astype(object)
    for (r, c), value in cells.items():
        frame.iloc[r, c] = value
    path = tmp_path / "speeds.csv"
    frame.to_csv(path)
    whole = _error(path)
    assert re.search(expected, whole), whole
    for block in (1, 12 * 7):  # one row, seven rows at a time
        monkeypatch.setattr(timestamps, "BLOCK_CELLS", block)
        assert _error(path) == whole
