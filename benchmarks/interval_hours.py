"""Prediction intervals by hour of the day against one width at every hour, side by side.

For each network, each model is fitted once (``--seed``, default 0) with ``roadcast
train``'s split; from the same validation residuals both interval rules are calibrated
(one split-conformal width per step and sensor; the same, scaled by hour of the day and sensor,
:mod:`models.forecasters.intervals`) and both are scored on the same test forecasts:
coverage of the 90 % intervals, the lowest coverage of any hour of the day, mean width,
and the interval score (Gneiting and Raftery 2007: the width plus ``2 / alpha`` times
how far a target falls outside; lower is better), as the ratio hour-scaled over plain.
A model with intervals of its own (AR(p)'s Gaussian ones from its psi weights and residual
variance, ``ar_halfwidth``) is scored a third time, with that interval on the same test
forecasts, and both conformal rules get their ratio over it (``vs_own``). It is scored a
fourth time scaled by hour of the day (``own_by_hour``): its half-width times the scale
``calibrate_intervals`` fits and keeps for the conformal rule on the same validation
residuals (the plain Gaussian where that rule keeps none).

``--seed`` (default 0) seeds the model fits and the simulated networks (their spec's seed
plus it); los-loop and the held-out generators' networks are fixed data.

Networks: the simulated suite's (``benchmarks.generalization``), los-loop when the data
directory has it, and the held-out networks the ``benchmarks.heldout_*`` generators write
(none of them was used to design the rule). Run:
``OMP_NUM_THREADS=1 python -m benchmarks.interval_hours [--quick] [--models ar --name
interval_hours_ar] [--seed 1]``.
"""

from __future__ import annotations

import argparse
import math
import re
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
from pipeline.data.datasets import dataset_dir, load_dataset

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


def own_halfwidth(model: Any) -> np.ndarray | None:
    """The half-widths ``[horizon, node]`` of the model's own interval (AR(p)'s Gaussian
    one), or None for a model without one."""
    half = getattr(model, "ar_halfwidth", None)
    return None if half is None else np.asarray(half)


def compare(model: Any, panel: SensorPanel, split: Any, plan: TrainPlan) -> dict[str, Any] | None:
    """Both interval rules of one fitted ``model`` (and its own interval, when it has one),
    scored on the test part."""
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
    own = own_halfwidth(model)
    if own is not None:
        widths["own"] = np.broadcast_to(own, mean.shape)
        widths["own_by_hour"] = own * (1.0 if scale is None else scale_at(scale, hours))
    out: dict[str, Any] = {}
    for rule, width in widths.items():
        lower = model.floored(mean - width)
        upper = mean + width
        scores = interval_metrics(test.actual, lower, upper, hours)
        scores["interval_score"] = interval_score(test.actual, lower, upper, LEVEL)
        out[rule] = {k: round(v, 4) for k, v in scores.items()}
    out["ratio"] = round(out["by_hour"]["interval_score"] / out["plain"]["interval_score"], 4)
    if own is not None:
        out["vs_own"] = {
            rule: round(out[rule]["interval_score"] / out["own"]["interval_score"], 4)
            for rule in ("plain", "by_hour", "own_by_hour")
        }
    return out


def geometric_mean(ratios: list[float]) -> float | None:
    """The geometric mean of ``ratios``, rounded (None when there are none)."""
    return round(math.exp(float(np.mean(np.log(ratios)))), 4) if ratios else None


def joined(cells: list[dict[str, float]], key: str, spec: str) -> str:
    """``cells``' ``key`` values formatted by ``spec``, joined by " / " (a table cell)."""
    return " / ".join(format(c[key], spec) for c in cells)


COVERAGE_NOISE = 0.005  # about the Monte-Carlo noise of a mean coverage over 14 networks


def own_verdict(
    scored: list[dict[str, Any]], rule: str, noise: float = 0.0, worst_hour: bool = False
) -> dict[str, bool]:
    """A rule fixed before its run for replacing a model's own interval with ``rule``,
    over the networks where both were scored: C1 a lower interval score than the own on
    strictly more than half; C2 a geometric-mean ratio below 1; C3 a mean coverage no
    further from the level than the own's plus ``noise``; with ``worst_hour``, C4 a mean
    lowest-hour coverage at least the own's. ``wins`` is all of them."""
    ratios = [s["vs_own"][rule] for s in scored]
    gmean = geometric_mean(ratios)
    cover = {r: float(np.mean([s[r]["coverage"] for s in scored])) for r in ("own", rule)}
    verdict = {
        "C1": 2 * sum(r < 1.0 for r in ratios) > len(ratios),
        "C2": gmean is not None and gmean < 1.0,
        "C3": abs(cover[rule] - LEVEL) <= abs(cover["own"] - LEVEL) + noise,
    }
    if worst_hour:
        worst = {
            r: float(np.nanmean([s[r]["coverage_worst_hour"] for s in scored]))
            for r in ("own", rule)
        }
        verdict["C4"] = worst[rule] >= worst["own"]
    return {**verdict, "wins": all(verdict.values())}


def own_summary(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per model with its own interval: the deployed conformal rule (by hour) against it
    over the networks, and whether it wins by :func:`own_verdict` (C1-C3,
    ``conformal_wins``); and the own interval scaled by hour against it, by C1-C4 with
    :data:`COVERAGE_NOISE` (``own_by_hour_wins``)."""
    out: dict[str, Any] = {}
    rules = ("own", "own_by_hour", "plain", "by_hour")
    models = {m for net in results.values() for m, s in net.items() if "vs_own" in s}
    for name in sorted(models):
        scored = [net[name] for net in results.values() if "vs_own" in net.get(name, {})]
        ratios = [s["vs_own"]["by_hour"] for s in scored]
        own_ratios = [s["vs_own"]["own_by_hour"] for s in scored]
        verdict = own_verdict(scored, "own_by_hour", COVERAGE_NOISE, worst_hour=True)
        out[name] = {
            "networks": len(ratios),
            "better": sum(r < 1.0 for r in ratios),
            "geometric_mean_ratio": geometric_mean(ratios),
            "geometric_mean_ratio_plain": geometric_mean([s["vs_own"]["plain"] for s in scored]),
            "mean_coverage": {
                rule: round(float(np.mean([s[rule]["coverage"] for s in scored])), 4)
                for rule in rules
            },
            "mean_worst_hour": {
                rule: round(float(np.nanmean([s[rule]["coverage_worst_hour"] for s in scored])), 4)
                for rule in rules
            },
            "conformal_wins": own_verdict(scored, "by_hour")["wins"],
            "own_by_hour": {
                "better": sum(r < 1.0 for r in own_ratios),
                "geometric_mean_ratio": geometric_mean(own_ratios),
                "criteria": {c: verdict[c] for c in ("C1", "C2", "C3", "C4")},
            },
            "own_by_hour_wins": verdict["wins"],
        }
    return out


def reseeded(spec: str, seed: int) -> str:
    """A ``simulated:...,seed=N`` spec with ``N + seed`` (other specs unchanged)."""
    if not spec.startswith("simulated"):
        return spec
    return re.sub(r"seed=(\d+)", lambda m: f"seed={int(m.group(1)) + seed}", spec)


def networks(quick: bool, folder: Path, seed: int = 0) -> dict[str, str]:
    """Network name -> data spec (held-out networks written into ``folder``; simulated
    ones :func:`reseeded` by ``seed``)."""
    if quick:
        return {name: reseeded(spec, seed) for name, spec in QUICK.items()}
    specs = {name: reseeded(spec, seed) for name, spec in SIMULATED.items()}
    data = dataset_dir(shared_data_dir())  # ../shared/data, else ROADCAST_DATA_DIR
    if (data / "los-loop").is_dir():
        specs["los-loop"] = "los-loop"
    import importlib

    for module, names in HELD_OUT.items():
        make = importlib.import_module(f"benchmarks.{module}").main
        extra = ["--data", str(data)] if module == "heldout_networks" else []  # hourly: METR-LA
        try:
            make(["--out", str(folder), *extra])
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
    parser.add_argument(
        "--name", default="interval_hours", help="result file name (benchmarks/results/NAME.json)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="model and simulated-network seed (default 0)"
    )
    args = parser.parse_args(argv)
    if not args.name or Path(args.name).name != args.name:
        parser.error(f"--name {args.name!r}: a file name, without a folder")
    if args.seed < 0:
        parser.error(f"--seed {args.seed}: must be >= 0")
    epochs = 2 if args.quick else args.epochs
    results: dict[str, dict[str, Any]] = {}
    rows = []
    own_rows = []
    data = shared_data_dir()
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in networks(args.quick, Path(tmp), args.seed).items():
            panel = load_dataset(spec, data_dir=data)
            plan = TrainPlan(models=("persistence",), progress=False)
            split = split_panel(panel, plan)
            results[name] = {}
            for model_name in args.models.split(","):
                model = build_model(
                    model_name, horizon=plan.horizon, seed=args.seed, epochs=epochs, progress=False,
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
                if "vs_own" in scored:
                    v = scored["vs_own"]
                    trio = [scored[r] for r in ("own", "own_by_hour", "by_hour")]
                    own_rows.append(
                        [name, model_name, joined(trio, "coverage", ".3f"),
                         joined(trio, "coverage_worst_hour", ".3f"), joined(trio, "width", ".3g"),
                         f"{v['plain']:.3f}", f"{v['by_hour']:.3f}", f"{v['own_by_hour']:.3f}"]
                    )  # fmt: skip
    ratios = [m["ratio"] for net in results.values() for m in net.values()]
    summary = {
        "pairs": len(ratios),
        "better": sum(r < 1.0 for r in ratios),
        "geometric_mean_ratio": geometric_mean(ratios),
    }
    own = own_summary(results)
    if own:
        summary["vs_own"] = own
    print_table(
        "90 % intervals on the test part: plain / by hour of the day",
        ["network", "model", "coverage", "worst hour", "width", "interval score ratio"],
        rows,
    )
    if own_rows:
        print_table(
            "The model's own interval / own scaled by hour / conformal by hour; "
            "interval score ratios over its own",
            ["network", "model", "coverage", "worst hour", "width",
             "plain / own", "by hour / own", "own by hour / own"],
            own_rows,
        )  # fmt: skip
    print(summary)
    payload = {
        "quick": args.quick,
        "models": args.models.split(","),
        "level": LEVEL,
        "epochs": epochs,
        "seed": args.seed,
        "summary": summary,
        "networks": results,
    }
    path = write_result(args.name, payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
