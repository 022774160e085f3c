"""The whole chain against the network's size: 207, 2,000, 8,600 and 20,000 sensors.

For each size ``N`` a simulated network (``simulated:sensors=N,days=...``, the same
generator at every size) is used three ways, each in a process of its own so that its
peak memory (``VmHWM``, the kernel's high-water mark of resident memory) is its own:

1. **Training** of each model of ``--models`` (default AR, LSTM, TGC-LSTM) through the
   normal path, ``models.forecasters.factory.build_model(...).fit(train, valid=...)``:
   seconds per epoch and peak memory. Bounded so that 20,000 sensors finish on a
   2-core machine: ``--train-days`` of training data (default 1 day, 265 windows),
   ``--valid-steps`` of validation, ``--epochs`` epochs (default 1; AR has none: its fit
   counts as one), on the CPU (``--device cuda``: the neural fits on the GPU, peak GPU
   memory from ``torch.cuda.max_memory_allocated``), each model's default batch size. A
   fit whose process passes ``--memory-cap-gb`` (default 10 GB) is stopped and run again
   with batches of ``--small-batch`` windows (default 8), recorded as ``bounded``.
2. **Catch-up**: ``--backlog-ticks`` steps (at least ``--backlog-readings`` readings)
   are produced to the readings topic at full
   speed, then ``roadcast serve`` starts with the fitted bundles (alerts as served by
   default) and works through them; the readings per second between the first and the
   last tick it closes (from its store) are the catch-up throughput.
3. **Latency**: ``--latency-ticks`` further steps are produced at one step every
   ``interval`` seconds, a pace the service sustains (``--pace`` times its catch-up
   seconds per tick, at least ``--min-interval``); each tick's latency is the service's
   own (the Kafka timestamp of the tick's last reading to its forecasts acknowledged).
   The service's peak memory is read before it is stopped.

Every cost is fitted against ``N`` on log-log axes (``cost ~ N^slope``); the JSON holds
the points and slopes, the table the numbers, ``benchmarks/results/scale.png`` the plot.
The service's side is :mod:`benchmarks.scale_service`.
``python -m benchmarks.scale`` writes ``benchmarks/results/scale.json``;
``--quick`` is a smoke run (207 and 500 sensors, half a day, four ticks).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR, log_log_slope, write_result
from benchmarks.scale_service import STEPS_PER_DAY, peak_rss_mb, rss_mb, serve_run, spec
from flows.reporting.text import print_table

SIZES = (207, 2000, 8600, 20000)
MODELS = ("ar", "lstm", "tgclstm")
WINDOW = HORIZON = 12


# --------------------------------------------------------------------------- training


def fit_one(args: argparse.Namespace) -> None:
    """``--fit MODEL``: one fit in this process; prints a JSON line, saves the bundle."""
    import torch

    from models.forecasters.factory import build_model, default_train
    from pipeline.data.datasets import load_dataset

    torch.set_num_threads(args.threads)
    panel = load_dataset(args.spec)
    train_end = args.train_steps
    train = panel.slice(0, train_end)
    valid = panel.slice(train_end, train_end + args.valid_steps)
    options: dict[str, Any] = {"window": WINDOW, "horizon": HORIZON}
    neural = default_train(args.fit) is not None
    device = args.device if neural else "cpu"
    if neural:
        options.update(device=args.device, epochs=args.epochs, progress=False, seed=0)
        if args.batch_size:
            options["train"] = {"batch_size": args.batch_size}
    model = build_model(args.fit, **options)
    on_cuda = device == "cuda"
    before = rss_mb()
    started = time.perf_counter()
    model.fit(train, valid=valid)
    if on_cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    history = getattr(model, "history", None)
    epochs = history.epochs_run if history is not None else 1
    model.save(Path(args.out) / args.fit)
    print(
        json.dumps(
            {
                "model": args.fit,
                "sensors": panel.n_nodes,
                "train_windows": train.n_time - WINDOW - HORIZON + 1,
                "epochs": epochs,
                "batch_size": args.batch_size or None,
                "fit_s": round(seconds, 3),
                "s_per_epoch": round(seconds / max(epochs, 1), 3),
                "rss_before_mb": round(before, 1),
                "peak_rss_mb": round(peak_rss_mb(), 1),
                "device": device,
                **(
                    {"peak_cuda_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
                    if on_cuda
                    else {}
                ),
            }
        )
    )


def _watch(process: subprocess.Popen[str], cap_mb: float, over: list[float]) -> None:
    """Kill ``process`` when its resident memory passes ``cap_mb``."""
    while process.poll() is None:
        try:
            current = rss_mb(process.pid)
        except (FileNotFoundError, ProcessLookupError):
            return
        if current > cap_mb:
            over.append(current)
            process.kill()
            return
        time.sleep(0.2)


def train_all(
    sensors: int, days: float, models: list[str], out: Path, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """One fit per model in its own process; their results (or why there is none)."""
    rows = []
    for name in models:
        row = fit_process(name, sensors, days, out, args, batch_size=None)
        if str(row.get("error", "")).startswith("over") and args.small_batch:
            over = row["error"]
            row = fit_process(name, sensors, days, out, args, batch_size=args.small_batch)
            row["bounded"] = f"default batch {over}: batch {args.small_batch}"
        rows.append(row)
        print(f"    {row}", flush=True)
    return rows


def fit_process(
    name: str,
    sensors: int,
    days: float,
    out: Path,
    args: argparse.Namespace,
    batch_size: int | None,
) -> dict[str, Any]:
    """One fit in a process of its own, stopped above the memory cap or the timeout."""
    command = [
        sys.executable, "-m", "benchmarks.scale", "--fit", name, "--spec", spec(sensors, days),
        "--out", str(out), "--epochs", str(args.epochs), "--threads", str(args.threads),
        "--train-steps", str(int(args.train_days * STEPS_PER_DAY)),
        "--valid-steps", str(args.valid_steps), "--batch-size", str(batch_size or 0),
        "--device", args.device,
    ]  # fmt: skip
    print(f"  fit {name} on {sensors} sensors (batch {batch_size or 'default'}) ...", flush=True)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    over: list[float] = []
    watcher = threading.Thread(
        target=_watch, args=(process, args.memory_cap_gb * 1024, over), daemon=True
    )
    watcher.start()
    try:
        stdout, stderr = process.communicate(timeout=args.fit_timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return {"model": name, "sensors": sensors, "error": "timeout"}
    if over:
        return {"model": name, "sensors": sensors, "error": f"over {args.memory_cap_gb:g} GB"}
    found = [line for line in stdout.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not found:
        tail = stderr.strip().splitlines()[-1:] or ["no output"]
        return {"model": name, "sensors": sensors, "error": tail[0][:300]}
    result: dict[str, Any] = json.loads(found[-1])
    return result


# --------------------------------------------------------------------------- fits and plot


def series(result: dict[str, Any]) -> dict[str, tuple[list[int], list[float]]]:
    """Every cost against sensors: ``{label: (sizes, costs)}``."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for run in result["runs"]:
        n = run["sensors"]
        for fit in run["training"]:
            if "error" in fit:
                continue
            for key, label in (("s_per_epoch", "train s/epoch"), ("peak_rss_mb", "train peak MB")):
                sizes, costs = out.setdefault(f"{fit['model']} {label}", ([], []))
                sizes.append(n)
                costs.append(float(fit[key]))
        service = run.get("service") or {}
        for key, label in (
            ("catch_up_s_per_tick", "service s/tick (catch-up)"),
            ("service_peak_rss_mb", "service peak MB"),
        ):
            if key in service:
                sizes, costs = out.setdefault(label, ([], []))
                sizes.append(n)
                costs.append(float(service[key]))
        if "latency_ms" in service:
            sizes, costs = out.setdefault("service tick latency p99 ms", ([], []))
            sizes.append(n)
            costs.append(float(service["latency_ms"]["p99"]))
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    """Log-log plot of time and memory against sensors, each line labelled with its slope."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (time_ax, memory_ax) = plt.subplots(1, 2, figsize=(12, 5))
    for label, (sizes, costs) in series(result).items():
        ax = memory_ax if label.endswith("MB") else time_ax
        fitted = result["slopes"].get(label)
        name = f"{label} (slope {fitted:.2f})" if fitted is not None else label
        ax.plot(sizes, costs, marker="o", label=name)
    for ax, title in ((time_ax, "time"), (memory_ax, "peak memory (MB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("sensors")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("roadcast cost against network size (log-log; slope of cost ~ sensors^slope)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@contextlib.contextmanager
def _broker(tmp: Path, *, enabled: bool) -> Iterator[str]:
    """The embedded broker's bootstrap address; none is started for training alone."""
    if not enabled:
        yield ""
        return
    from pipeline.kafka.broker import EmbeddedBroker

    with EmbeddedBroker(log_path=tmp / "broker.log") as broker:
        yield broker.bootstrap


def kept_runs(name: str, measuring: list[int]) -> list[dict[str, Any]]:
    """``--merge``: the runs of the written ``NAME.json`` at sizes not measured now, each
    with its bounds (``bounds``) and when it was measured (``measured_at``)."""
    path = Path(os.environ.get("ROADCAST_BENCH_RESULTS") or RESULTS_DIR) / f"{name}.json"
    if not path.exists():
        return []
    old = json.loads(path.read_text())
    date = old.get("machine", {}).get("date")
    return [
        {"measured_at": date, "bounds": old.get("bounds"), **run}
        for run in old.get("runs", [])
        if run["sensors"] not in measuring
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__)
    parser.add_argument("--sizes", default=None, help="sensor counts (default 207,2000,8600,20000)")
    parser.add_argument("--models", default=",".join(MODELS), help="models to train and serve")
    parser.add_argument("--train-days", type=float, default=1.0, help="days of training data")
    parser.add_argument("--valid-steps", type=int, default=48, help="validation steps")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of the neural models")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the cores)")
    parser.add_argument("--memory-cap-gb", type=float, default=10.0, help="stop a fit above")
    parser.add_argument(
        "--small-batch", type=int, default=8, help="retry a fit over the cap with this batch"
    )
    parser.add_argument("--fit-timeout-s", type=float, default=3600.0, help="stop a fit after")
    parser.add_argument("--backlog-ticks", type=int, default=12, help="catch-up ticks, at least")
    parser.add_argument(
        "--backlog-readings", type=int, default=20_000, help="catch-up readings, at least"
    )
    parser.add_argument("--latency-ticks", type=int, default=12, help="paced ticks")
    parser.add_argument("--pace", type=float, default=1.5, help="interval / catch-up s per tick")
    parser.add_argument("--min-interval", type=float, default=1.0, help="seconds between ticks")
    parser.add_argument("--settle-s", type=float, default=120.0, help="give up a phase after")
    parser.add_argument("--wire", default="v2", choices=("v1", "v2"), help="forecast wire")
    parser.add_argument("--no-service", action="store_true", help="training only")
    parser.add_argument(
        "--device", default="cpu", choices=("cpu", "cuda"), help="where the neural fits run"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: few ticks")
    parser.add_argument("--name", default="scale", help="write benchmarks/results/NAME.json")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the runs of NAME.json at the sizes not measured now (refit slopes, plot)",
    )
    parser.add_argument("--fit", help=argparse.SUPPRESS)  # internal: one fit in this process
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--train-steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.fit:
        fit_one(args)
        return
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda: torch.cuda.is_available() is false")
    if args.quick:  # a smoke run: two small networks, half a day, few ticks
        args.sizes = args.sizes or "207,500"
        args.train_days, args.backlog_ticks, args.latency_ticks = 0.5, 4, 4
        args.min_interval, args.backlog_readings = 0.5, 0
    from pipeline.jsonlog import configure_logging

    configure_logging("ERROR")
    sizes = [int(s) for s in (args.sizes or ",".join(map(str, SIZES))).split(",") if s.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    result: dict[str, Any] = {
        "quick": args.quick,
        "sizes": sizes,
        "models": models,
        "bounds": {
            "train_days": args.train_days,
            "train_windows": int(args.train_days * STEPS_PER_DAY) - WINDOW - HORIZON + 1,
            "valid_steps": args.valid_steps,
            "epochs": args.epochs,
            "device": args.device,
            "threads": args.threads,
            "memory_cap_gb": args.memory_cap_gb,
            "small_batch": args.small_batch,
            "backlog_ticks": args.backlog_ticks,
            "backlog_readings": args.backlog_readings,
            "latency_ticks": args.latency_ticks,
        },
        "wire": args.wire,
        "runs": [],
    }
    kept = kept_runs(args.name, sizes) if args.merge else []
    with tempfile.TemporaryDirectory(prefix="roadcast-scale-") as tmp_name:
        tmp = Path(tmp_name)
        with _broker(tmp, enabled=not args.no_service) as bootstrap:
            result["runs"] = list(kept)
            for sensors in sizes:
                print(f"{sensors} sensors", flush=True)
                backlog = max(args.backlog_ticks, -(-args.backlog_readings // sensors))
                steps = args.train_days * STEPS_PER_DAY + args.valid_steps
                days = (steps + backlog + args.latency_ticks + 1) / STEPS_PER_DAY
                bundles = tmp / f"bundles-{sensors}"
                run: dict[str, Any] = {
                    "sensors": sensors,
                    "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
                run["training"] = train_all(sensors, days, models, bundles, args)
                fitted = [f["model"] for f in run["training"] if "error" not in f]
                if not args.no_service and fitted:
                    try:
                        run["service"] = serve_run(
                            sensors, days, backlog, bundles, tmp, bootstrap, args
                        )
                        run["service"]["models"] = fitted
                    except RuntimeError as exc:
                        run["service"] = {"error": str(exc)[:300]}
                    print(f"    {run['service']}", flush=True)
                result["runs"].append(run)
                result["runs"].sort(key=lambda r: r["sensors"])
                result["slopes"] = {
                    label: None if (k := log_log_slope(*points)) is None else round(k, 3)
                    for label, points in series(result).items()
                }
                write_result(args.name, result)  # what is measured so far survives a crash
    result["load_average_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    path = write_result(args.name, result)
    out_dir = path.parent
    plot(result, out_dir / f"{args.name}.png")
    rows = []
    for run in result["runs"]:
        for fit in run["training"]:
            rows.append(
                [run["sensors"], f"train {fit['model']}", fit.get("s_per_epoch", fit.get("error")),
                 fit.get("peak_rss_mb", ""), ""]
            )  # fmt: skip
        service = run.get("service") or {}
        if "latency_ms" in service:
            rows.append(
                [run["sensors"], "service", service["catch_up_readings_per_s"],
                 service["service_peak_rss_mb"],
                 f"{service['latency_ms']['p50']} / {service['latency_ms']['p99']}"]
            )  # fmt: skip
    print_table(
        "scale: train s/epoch or catch-up readings/s, peak MB, tick latency p50/p99 ms",
        ["sensors", "what", "s/epoch or readings/s", "peak MB", "latency p50 / p99 ms"],
        rows,
    )
    print_table(
        "cost ~ sensors^slope (log-log fit)",
        ["cost", "slope"],
        [[label, value] for label, value in result["slopes"].items()],
    )
    print(f"wrote {path} and {out_dir / (args.name + '.png')}")


if __name__ == "__main__":
    main()
