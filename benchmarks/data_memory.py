"""What loading a large wide CSV costs in memory: a file of one time column and one column
per sensor (readings with three decimals, one cell in 1,000 empty), plain and
gzip-compressed, each loaded by ``load_dataset("csv:...")`` as ``roadcast train`` loads it,
in a fresh process whose peak resident memory (``VmHWM``, Linux) is read after the
load. The imports alone (pandas, numpy, the pipeline) are measured apart, so the table
gives what the load added, next to the CSV's text size and the panel's float32 values.

``python -m benchmarks.data_memory [--quick] [--sensors N] [--steps N]`` writes
``benchmarks/results/data_memory.json``; ``--code DIR --name NAME`` loads with the pipeline
of another checkout (``git archive REV pipeline models flows | tar -x -C DIR``), to compare
with an earlier reader.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.common import write_result
from flows.reporting.text import print_table

REPO = Path(__file__).resolve().parents[1]
# Run in a fresh process: its peak resident memory (VmHWM, KiB) before and after
# ``load_dataset``. Not ru_maxrss: a child keeps the peak of the parent it was forked from.
_LOAD = """
import json, sys, time
from pipeline.data.datasets import load_dataset
def peak():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
imports = peak()
started = time.perf_counter()
panel = load_dataset("csv:" + sys.argv[1])
seconds = time.perf_counter() - started
print(json.dumps({"imports_kib": imports, "peak_kib": peak(), "load_s": seconds,
                  "shape": list(panel.values.shape), "panel_bytes": panel.values.nbytes}))
"""


def write_csv(path: Path, sensors: int, steps: int, seed: int = 0) -> None:
    """A wide CSV of ``steps`` five-minute rows and ``sensors`` columns, written in blocks."""
    rng = np.random.default_rng(seed)
    times = pd.date_range("2024-01-01", periods=steps, freq="5min").strftime("%Y-%m-%d %H:%M")
    with path.open("w") as out:
        out.write(",".join(["timestamp", *(f"s{k}" for k in range(sensors))]) + "\n")
        for start in range(0, steps, 1000):
            block = np.char.mod("%.3f", rng.uniform(10, 80, (min(1000, steps - start), sensors)))
            block[rng.random(block.shape) < 0.001] = ""
            out.writelines(f"{times[start + k]},{','.join(row)}\n" for k, row in enumerate(block))


def load(path: Path, text_mb: float, code: Path = REPO) -> dict[str, Any]:
    """Peak memory and seconds of one load in a fresh process importing the pipeline from
    ``code`` (``text_mb``: the CSV's text)."""
    run = subprocess.run(
        [sys.executable, "-c", _LOAD, str(path)],
        cwd=code,
        capture_output=True,
        text=True,
        check=True,
    )
    facts = json.loads(run.stdout.strip().splitlines()[-1])
    file_mb = path.stat().st_size / 2**20
    added_mb = (facts["peak_kib"] - facts["imports_kib"]) / 2**10
    panel_mb = facts["panel_bytes"] / 2**20
    return {
        "file": path.name,
        "file_mb": file_mb,
        "imports_mb": facts["imports_kib"] / 2**10,
        "peak_mb": facts["peak_kib"] / 2**10,
        "text_mb": text_mb,
        "load_added_mb": added_mb,
        "added_per_text_mb": added_mb / text_mb,
        "panel_mb": panel_mb,
        "added_per_panel_mb": added_mb / panel_mb,
        "load_s": facts["load_s"],
        "shape": facts["shape"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.data_memory", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="200 sensors x 2,000 steps")
    parser.add_argument("--sensors", type=int, default=2000, help="columns (default 2,000)")
    parser.add_argument("--steps", type=int, default=20000, help="rows (default 20,000)")
    parser.add_argument(
        "--code", type=Path, default=REPO, help="import the pipeline from DIR (default: here)"
    )
    parser.add_argument("--name", default="data_memory", help="write benchmarks/results/NAME.json")
    args = parser.parse_args(argv)
    sensors, steps = (200, 2000) if args.quick else (args.sensors, args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "wide.csv"
        write_csv(plain, sensors, steps)
        packed = Path(tmp) / "wide.csv.gz"
        with plain.open("rb") as source, gzip.open(packed, "wb", compresslevel=1) as out:
            shutil.copyfileobj(source, out)
        text_mb = plain.stat().st_size / 2**20
        rows = [load(plain, text_mb, args.code), load(packed, text_mb, args.code)]
    facts = {"quick": args.quick, "code": str(args.code), "sensors": sensors, "steps": steps}
    path = write_result(args.name, {**facts, "loads": rows})
    print_table(
        f"load_dataset('csv:...') of {steps:,} steps x {sensors:,} sensors, peak RSS",
        ["file", "MB", "imports MB", "peak MB", "added MB", "added / text", "panel MB", "s"],
        [
            [r["file"], f"{r['file_mb']:.0f}", f"{r['imports_mb']:.0f}", f"{r['peak_mb']:.0f}",
             f"{r['load_added_mb']:.0f}", f"{r['added_per_text_mb']:.2f}",
             f"{r['panel_mb']:.0f}", f"{r['load_s']:.1f}"]
            for r in rows
        ],
    )  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
