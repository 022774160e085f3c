"""What each data file format costs to load: one network of PeMSD4's shape (16,992 five-minute
steps x 307 sensors, ASTGCN's ``PEMS04.npz`` has three features per sensor) written as a
wide CSV, the same CSV gzip-compressed, an ``.npz``, a pandas HDF5 table and a Parquet
table, each loaded by ``load_dataset`` as ``roadcast train`` loads it.

Loads run round-robin (every format once, then again), so a busy machine slows them
alike; the table gives the median seconds of the repeats, the ratio to the plain CSV
and the file size, and checks that every format gives the CSV's readings.

``python -m benchmarks.data_formats [--quick] [--repeats N]`` writes
``benchmarks/results/data_formats.json``.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.common import write_result
from flows.reporting.text import print_table
from pipeline.data.datasets import load_dataset

START = "2018-01-01"


def write_formats(folder: Path, steps: int, sensors: int, seed: int = 0) -> dict[str, str]:
    """The same readings in every format; returns the data spec of each."""
    rng = np.random.default_rng(seed)
    day = np.sin(np.arange(steps) / 288 * 2 * np.pi)[:, None]
    flow = np.round(200 + 120 * day + rng.normal(0, 15, (steps, sensors)), 1).astype(np.float32)
    times = pd.date_range(START, periods=steps, freq="5min")
    frame = pd.DataFrame(flow, index=times, columns=[str(k) for k in range(sensors)])
    frame.index.name = "time"
    csv = folder / "flow.csv"
    frame.to_csv(csv, float_format="%.1f")
    with csv.open("rb") as plain, gzip.open(folder / "flow.csv.gz", "wb", compresslevel=6) as out:
        shutil.copyfileobj(plain, out)
    extra = rng.normal(0, 1, (steps, sensors, 2)).astype(np.float32)
    np.savez(folder / "flow.npz", data=np.concatenate([flow[:, :, None], extra], axis=2))
    frame.to_hdf(folder / "flow.h5", key="flow")
    frame.to_parquet(folder / "flow.parquet")
    return {
        "csv": f"csv:{csv}",
        "csv.gz": f"csv:{folder / 'flow.csv.gz'}",
        "npz": f"npz:{folder / 'flow.npz'},start={START},freq=5",
        "h5": f"h5:{folder / 'flow.h5'}",
        "parquet": f"parquet:{folder / 'flow.parquet'}",
    }


def measure(steps: int, sensors: int, repeats: int) -> dict[str, Any]:
    """Median load seconds per format, its ratio to the CSV, file sizes, equality."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        specs = write_formats(folder, steps, sensors)
        times: dict[str, list[float]] = {name: [] for name in specs}
        panels = {}
        for _ in range(repeats):
            for name, spec in specs.items():
                started = time.perf_counter()
                panels[name] = load_dataset(spec)
                times[name].append(time.perf_counter() - started)
        sizes = {
            name: (folder / Path(spec.split(":", 1)[1].split(",")[0]).name).stat().st_size
            for name, spec in specs.items()
        }
    reference = panels["csv"]
    rows = []
    for name in specs:
        panel = panels[name]
        same = (
            panel.sensor_ids == reference.sensor_ids
            and panel.timestamps.equals(reference.timestamps)
            and np.array_equal(panel.values, reference.values)
        )
        median = statistics.median(times[name])
        rows.append(
            {
                "format": name,
                "median_s": median,
                "runs_s": times[name],
                "ratio_to_csv": median / statistics.median(times["csv"]),
                "file_mb": sizes[name] / 2**20,
                "same_readings_as_csv": bool(same),
            }
        )
    return {"steps": steps, "sensors": sensors, "repeats": repeats, "formats": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.data_formats", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2,016 steps x 50 sensors, 1 run")
    parser.add_argument("--repeats", type=int, default=3, help="loads per format (default 3)")
    args = parser.parse_args(argv)
    steps, sensors, repeats = (2016, 50, 1) if args.quick else (16992, 307, args.repeats)
    result = measure(steps, sensors, repeats)
    path = write_result("data_formats", {"quick": args.quick, **result})
    print_table(
        f"load_dataset of {steps:,} steps x {sensors} sensors (median of {repeats})",
        ["format", "seconds", "x CSV", "MB", "same readings"],
        [
            [r["format"], f"{r['median_s']:.2f}", f"{r['ratio_to_csv']:.2f}",
             f"{r['file_mb']:.1f}", "yes" if r["same_readings_as_csv"] else "NO"]
            for r in result["formats"]
        ],
    )  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
