"""``python -m benchmarks [--quick] [NAME ...]``: run the benchmarks (all by default).

Each benchmark is a module ``benchmarks/<name>.py`` with ``main(argv)``; it writes
``benchmarks/results/<name>.json`` and prints its table. ``make bench`` runs this.
"""

from __future__ import annotations

import argparse
import importlib
import time

BENCHMARKS = (
    "data_scale",
    "data_formats",
    "data_memory",
    "kafka_io",
    "forecast_accuracy",
    "generalization",
    "interval_hours",
    "level_shift",
    "tgclstm_speed",
    "graph_training",
    "stream",
    "startup",
    "metrics_cost",
    "wire",
    "scale",
    "anomaly",
    "detect_workers",
    "simulated_alerts",
    "alert_rate",
    "alert_delivery",
    "fuzz",
    "soak",
    "hot_reload",
    "drift",
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"any of {', '.join(BENCHMARKS)} (default: all)"
    )
    parser.add_argument("--quick", action="store_true", help="small smoke runs")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    for name in args.names or BENCHMARKS:
        started = time.perf_counter()
        print(f"\n=== benchmark {name} ===", flush=True)
        module = importlib.import_module(f"benchmarks.{name}")
        module.main(["--quick"] if args.quick else [])
        print(f"=== {name} done in {time.perf_counter() - started:.0f} s ===", flush=True)


if __name__ == "__main__":
    main()
