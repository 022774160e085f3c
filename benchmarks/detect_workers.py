"""What scoring NAB files in parallel processes buys: ``roadcast detect``'s ensemble over
the same files with ``--workers 1`` (one after another, in the command's process) and
with one process per CPU, run alternately so that a busy machine slows both alike.

The table gives the median wall seconds of each, their ratio, and whether both wrote
the same result files byte for byte. Data: the categories named by ``--categories``
under ``ROADCAST_DATA_DIR/nab`` (default realTraffic and realAdExchange, 13 files);
``--quick``: four simulated files of 1,500 rows.

``python -m benchmarks.detect_workers [--quick] [--repeats N] [--workers N]`` writes
``benchmarks/results/detect_workers.json``.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.common import write_result
from flows.detect import detect_nab, usable_cpus
from flows.reporting.text import print_table
from pipeline.settings import load_settings


def simulated_corpus(root: Path, files: int = 4, rows: int = 1500) -> None:
    """``files`` NAB-shaped series (a daily cycle, noise, one spike each) under ``root/sim``."""
    rng = np.random.default_rng(0)
    stamps = pd.date_range("2015-01-01", periods=rows, freq="5min")
    (root / "sim").mkdir(parents=True)
    for k in range(files):
        values = 50 + 10 * np.sin(np.arange(rows) / 288 * 2 * np.pi) + rng.normal(0, 1, rows)
        values[rows * 3 // 4 + k] += 40
        pd.DataFrame({"timestamp": stamps, "value": values}).to_csv(
            root / "sim" / f"s{k}.csv", index=False
        )


def same_results(a: Path, b: Path) -> bool:
    """True when the two result trees hold the same files with the same bytes."""
    names = sorted(p.relative_to(a) for p in a.rglob("*.csv"))
    if names != sorted(p.relative_to(b) for p in b.rglob("*.csv")):
        return False
    return all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def measure(nab_dir: Path, workers: int, repeats: int) -> dict[str, Any]:
    """Median seconds of serial and parallel runs over ``nab_dir``, and their equality."""
    runs: dict[int, list[float]] = {1: [], workers: []}
    with tempfile.TemporaryDirectory() as tmp:
        outs = {n: Path(tmp) / f"w{n}" for n in runs}
        for _ in range(repeats):
            for n, out in outs.items():
                shutil.rmtree(out, ignore_errors=True)
                started = time.perf_counter()
                written = detect_nab(nab_dir, out, workers=n)
                runs[n].append(time.perf_counter() - started)
        same = same_results(outs[1], outs[workers])
    serial, parallel = statistics.median(runs[1]), statistics.median(runs[workers])
    return {
        "files": len(written),
        "cpus": usable_cpus(),
        "workers": workers,
        "repeats": repeats,
        "serial_s": serial,
        "parallel_s": parallel,
        "runs_s": {str(n): r for n, r in runs.items()},
        "speedup": serial / parallel,
        "same_results": same,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.detect_workers", description=__doc__
    )
    parser.add_argument("--quick", action="store_true", help="4 simulated files, 1 run each")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each (default 2)")
    parser.add_argument("--workers", type=int, default=usable_cpus())
    parser.add_argument("--categories", default="realTraffic,realAdExchange")
    args = parser.parse_args(argv)
    workers = max(args.workers, 2)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.quick:
            simulated_corpus(root)
        else:
            nab = load_settings().data_dir / "nab"
            for category in args.categories.split(","):
                if not (nab / category).is_dir():
                    parser.error(f"no {nab / category}: set ROADCAST_DATA_DIR to the data folder")
                shutil.copytree(nab / category, root / category)
        result = measure(root, workers, 1 if args.quick else args.repeats)
    data = "simulated" if args.quick else args.categories
    path = write_result("detect_workers", {"quick": args.quick, "data": data, **result})
    print_table(
        f"roadcast detect, ensemble, {result['files']} files of {data} "
        f"(median of {result['repeats']}, {result['cpus']} CPUs)",
        ["workers", "seconds", "speed-up", "same result files"],
        [
            ["1", f"{result['serial_s']:.1f}", "1.00", ""],
            [
                str(workers),
                f"{result['parallel_s']:.1f}",
                f"{result['speedup']:.2f}",
                "yes" if result["same_results"] else "NO",
            ],
        ],
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
