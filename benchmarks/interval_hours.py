"""Prediction intervals by hour of the day against one width at every hour, side by side.

For each network, each model is fitted once (seed 0) with ``roadcast train``'s split; from
the same validation residuals both interval rules are calibrated (one split-conformal
width per step and sensor; the same, scaled by hour of the day and sensor,
:mod:`models.forecasters.intervals`) and both are scored on the same test forecasts:
coverage of the 90 % intervals, the lowest coverage of any hour of the day, mean width,
and the interval score (Gneiting and Raftery 2007: the width plus ``2 / alpha`` times
how far a target falls outside; lower is better), as the ratio hour-scaled over plain.

Networks: the simulated suite's (``benchmarks.generalization``), los-loop when the data
directory has it, and the held-out networks the ``benchmarks.heldout_*`` generators write
(none of them was used to design the rule). Run:
``OMP_NUM_THREADS=1 python -m benchmarks.interval_hours [--quick]``.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.common import shared_data_dir, write_result
from flows.reporting.text import print_table
from models.forecasters.comparison import TrainPlan, split_panel
from models.forecasters.evaluation import backtest, calibrate_intervals, validation_backtest
from models.forecasters.factory import build_model
from models.forecasters.intervals import conformal_halfwidth, interval_score, scale_at, target_hours
from models.metrics import interval_metrics
from models.panel import SensorPanel
from pipeline.data.datasets import load_dataset

LEVEL = 0.9
SIMULATED = {
    "metro-80": "simulated:regime=metro,seed=13",
    "counts-50": "simulated:regime=counts,sensors=50,days=9,seed=12",
    "speed-50": "simulated:sensors=50,days=9,seed=11",
    "gaps-50": "simulated:sensors=50,days=9,gaps=0.3,seed=15",
}
QUICK = {"speed-quick": "simulated:sensors=12,days=4,seed=11"}
HELD_OUT = {  # generator module -> the networks it writes (CSV names)
    "heldout_networks": ("water", "air", "hourly", "corridor", "parking"),
    "heldout_bikes_feeders": ("bikes", "feeders"),
    "heldout_sparse_signed": ("counters", "substations"),
}


def compare(model: Any, panel: SensorPanel, split: Any, plan: TrainPlan) -> dict[str, Any] | None:
    """Both interval rules of one fitted ``model``, scored on the test part."""
    valid = validation_backtest(model, split.train, split.valid)
    if valid is None:
        return None
    step = pd.Timedelta(seconds=model.step_s)
    plain = conformal_halfwidth(valid.actual - valid.forecast.mean, LEVEL)
    halfwidth, scale = calibrate_intervals(valid, step, model.horizon, LEVEL)
    start = split.train.n_time + split.valid.n_time
    test = backtest(model, panel, start=start, inputs_inside=plan.window)
    hours = target_hours(panel.timestamps, test.forecast.origins, model.horizon, step)
    mean = test.forecast.mean
    widths = {"plain": np.broadcast_to(plain, mean.shape)}
    widths["by_hour"] = halfwidth * (1.0 if scale is None else scale_at(scale, hours))
    out: dict[str, Any] = {}
    for rule, width in widths.items():
        lower = model.floored(mean - width)
        upper = mean + width
        scores = interval_metrics(test.actual, lower, upper, hours)
        scores["interval_score"] = interval_score(test.actual, lower, upper, LEVEL)
        out[rule] = {k: round(v, 4) for k, v in scores.items()}
    out["ratio"] = round(out["by_hour"]["interval_score"] / out["plain"]["interval_score"], 4)
    return out


def networks(quick: bool, folder: Path) -> dict[str, str]:
    """Network name -> data spec (held-out networks written into ``folder``)."""
    if quick:
        return dict(QUICK)
    specs = dict(SIMULATED)
    data = shared_data_dir()
    if data is not None and (data / "los-loop").is_dir():
        specs["los-loop"] = "los-loop"
    import importlib

    for module, names in HELD_OUT.items():
        make = importlib.import_module(f"benchmarks.{module}").main
        try:
            make(["--out", str(folder)])
        except (OSError, ValueError) as exc:  # e.g. hourly needs METR-LA's locations
            print(f"skipped {module}: {exc}")
            continue
        specs.update({n: f"csv:{folder / n}.csv" for n in names if (folder / f"{n}.csv").exists()})
    return specs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one tiny network, 2 epochs")
    parser.add_argument("--models", default="persistence,seasonal,lstm")
    parser.add_argument("--epochs", type=int, default=10, help="LSTM/GRU epochs at most")
    args = parser.parse_args(argv)
    epochs = 2 if args.quick else args.epochs
    results: dict[str, dict[str, Any]] = {}
    rows = []
    data = shared_data_dir()
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in networks(args.quick, Path(tmp)).items():
            panel = load_dataset(spec, data_dir=data)
            plan = TrainPlan(models=("persistence",), progress=False)
            split = split_panel(panel, plan)
            results[name] = {}
            for model_name in args.models.split(","):
                model = build_model(
                    model_name, horizon=plan.horizon, seed=0, epochs=epochs, progress=False,
                    epoch_windows=4096, window=plan.window,
                )  # fmt: skip
                try:
                    model.fit(split.train, valid=split.valid)
                except ValueError as exc:  # a seasonal model on too short a history
                    print(f"{name} {model_name}: skipped ({exc})")
                    continue
                scored = compare(model, panel, split, plan)
                if scored is None:
                    continue
                results[name][model_name] = scored
                p, h = scored["plain"], scored["by_hour"]
                rows.append(
                    [name, model_name, f"{p['coverage']:.3f} / {h['coverage']:.3f}",
                     f"{p['coverage_worst_hour']:.3f} / {h['coverage_worst_hour']:.3f}",
                     f"{p['width']:.3g} / {h['width']:.3g}", f"{scored['ratio']:.3f}"]
                )  # fmt: skip
                print(f"{name} {model_name}: interval score ratio {scored['ratio']:.3f}")
    ratios = [m["ratio"] for net in results.values() for m in net.values()]
    summary = {
        "pairs": len(ratios),
        "better": sum(r < 1.0 for r in ratios),
        "geometric_mean_ratio": round(math.exp(float(np.mean(np.log(ratios)))), 4)
        if ratios
        else None,
    }
    print_table(
        "90 % intervals on the test part: plain / by hour of the day",
        ["network", "model", "coverage", "worst hour", "width", "interval score ratio"],
        rows,
    )
    print(summary)
    payload = {
        "quick": args.quick,
        "level": LEVEL,
        "epochs": epochs,
        "summary": summary,
        "networks": results,
    }
    path = write_result("interval_hours", payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
