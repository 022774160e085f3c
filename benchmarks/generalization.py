"""Forecasts on networks nobody tuned them on: every model on every network of a suite.

``python -m benchmarks.generalization [--quick] [--seeds 2] [--networks a,b]
[--candidates V;V] [--jobs 2] [--cache DIR]``

Networks (:data:`SUITE`): los-loop (when the data directory has it); the built-in
simulator in regimes unlike los-loop (speeds and counts with a strong daily cycle, 50 to
2,000 sensors, days with gaps, weak and strong spatial coupling, a graph with random
links that carries no information, the metro case with the night cut); METR-LA and
PEMS-BAY when present (skipped with the reason otherwise). Every network runs the protocol
of ``roadcast train`` (chronological split, validation chooses epochs, seeds and the
champion; the test part only scores), with the fits of :mod:`benchmarks.suite_fits`.

Besides the default models, *candidate* settings (``--candidates``, default
:data:`CANDIDATES`) are trained on every network; each setting's default is chosen on
validation parts only (:func:`choose_defaults`: the candidate with the lowest mean
validation RMSE relative to the best candidate per network, leave-one-network-out), and
the held-out network's test part shows how that choice fared where it was not made.

Written to ``benchmarks/results/generalization.json`` and ``generalization.png`` (``--name``
NAME: ``NAME.json``, ``NAME.png``): per
network and horizon, each model's pooled test RMSE (mean ± std over seeds), relative to
the best model there, its validation RMSE relative to the best, the paired test against
the champion and the champion's regret, the candidates and the choice of defaults, and
the goals' checks (TGC-LSTM at most the LSTM within the seed std, regret at most 1.03).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from benchmarks.common import (
    RESULTS_DIR,
    shared_data_dir,
    window_losses,
    write_losses,
    write_result,
)
from benchmarks.suite_fits import SuiteFitter, Variant, parse_variant
from flows.reporting.text import print_table

MODELS = ("persistence", "ar", "lstm", "tgclstm")
HORIZONS = ("3", "12")
REGRET_GOAL = 1.03
CANDIDATES = ("lstm:dropout=0.3", "tgclstm:graph_cell=dense")


@dataclass(frozen=True)
class Network:
    """One network of the suite: a data set spec, what makes it unlike los-loop, and an
    epoch cap for the neural models (None: their defaults)."""

    name: str
    spec: str
    what: str
    epochs: int | None = None


# Simulated networks start on a Wednesday (simulated specs do): 9 days put validation
# (Tuesday) and test (Wednesday, Thursday) on working days and a weekend in the training
# part. Small networks and capped epochs keep the suite to about 45 minutes on two busy
# cores; los-loop, the 2,000-sensor network and the real sets are run by name.
SUITE = (
    Network(
        "metro-80",
        "simulated:regime=metro,seed=13",
        "metro counts, 17 service hours a day, night cut so days abut, bare 0/1 graph",
        20,
    ),
    Network(
        "random-graph-50",
        "simulated:sensors=50,days=9,coupling=0.5,graph=random,seed=18",
        "coupled speeds, a graph of random links (no information)",
        20,
    ),
    Network(
        "counts-50",
        "simulated:regime=counts,sensors=50,days=9,seed=12",
        "counts with a strong daily cycle",
        20,
    ),
    Network("speed-50", "simulated:sensors=50,days=9,seed=11", "freeway speeds, daily cycle", 20),
    Network("weak-50", "simulated:sensors=50,days=9,coupling=0.1,seed=16", "weak coupling", 20),
    Network("strong-50", "simulated:sensors=50,days=9,coupling=0.9,seed=17", "strong coupling", 20),
    Network("gaps-50", "simulated:sensors=50,days=9,gaps=0.3,seed=15", "days with outages", 20),
    Network("speed-120", "simulated:sensors=120,days=9,seed=19", "120 sensors", 20),
    Network("los-loop", "los-loop", "LA freeway speeds, 207 sensors, one week (real)"),
    Network(
        "large-2000",
        "simulated:sensors=2000,days=5,start=2024-03-04,seed=19",
        "2,000 sensors, Monday to Friday, at most 15 epochs per stage",
        15,
    ),
    Network("metr-la", "metr-la", "METR-LA, 207 sensors, 4 months (real)"),
    Network("pems-bay", "pems-bay", "PEMS-BAY, 325 sensors, 5 months (real)"),
)
QUICK = (
    Network("metro-quick", "simulated:regime=metro,days=4,seed=13,sensors=20", "metro, tiny"),
    Network("random-quick", "simulated:sensors=20,days=3,graph=random,seed=18", "random graph"),
)


def relative(values: dict[str, float | None]) -> dict[str, float | None]:
    """Each value over the smallest finite one (None where missing)."""
    finite = [v for v in values.values() if v is not None and math.isfinite(v)]
    best = min(finite) if finite else None
    return {
        k: (v / best if v is not None and best and math.isfinite(v) else None)
        for k, v in values.items()
    }


def _mean(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def summarise(document: dict[str, Any]) -> dict[str, Any]:
    """One network's entry: RMSE, relative RMSE, validation, claims and goal checks."""
    models = document["models"]
    out: dict[str, Any] = {"rmse": {}, "rmse_std": {}, "relative": {}, "checks": {}}
    for h in HORIZONS:
        rmse = {n: e["pooled"].get(h, {}).get("rmse") for n, e in models.items()}
        out["rmse"][h] = rmse
        out["rmse_std"][h] = {
            n: e["std"]["pooled"].get(h, {}).get("rmse") for n, e in models.items()
        }
        out["relative"][h] = relative(rmse)
    valid = {n: _mean(e["valid_rmse"]) for n, e in models.items()}
    out["valid_relative"] = relative(valid)
    out["champion"] = document.get("champion")
    out["regret"] = {h: (document.get("regret") or {}).get(h) for h in HORIZONS}
    out["significance"] = document.get("significance")
    out["epochs_run"] = {n: e.get("epochs_run") for n, e in models.items()}
    out["fit_seconds"] = {n: e.get("fit_seconds") for n, e in models.items()}
    if "tgclstm" in models and "lstm" in models:
        for h in HORIZONS:
            t, lstm = out["rmse"][h]["tgclstm"], out["rmse"][h]["lstm"]
            spread = max(out["rmse_std"][h]["tgclstm"] or 0.0, out["rmse_std"][h]["lstm"] or 0.0)
            out["checks"][f"tgclstm_at_most_lstm_within_std_{h}"] = bool(t <= lstm + spread)
    for h in HORIZONS:
        regret = out["regret"][h]
        if regret:
            out["checks"][f"regret_at_most_{REGRET_GOAL}_{h}"] = bool(
                regret["regret"] <= REGRET_GOAL
            )
    return out


def candidate_entry(result: Any) -> dict[str, Any]:
    """A variant's validation RMSE per seed and test RMSE (mean and std over seeds)."""
    from models.forecasters.comparison import summarise as summarise_model

    entry = summarise_model(result)
    kept = [
        (getattr(r.model, "graph_info", None) or {}).get("graph_path_kept") for r in result.runs
    ]
    return {
        "valid_rmse": entry["valid_rmse"],
        "valid_mean": _mean(entry["valid_rmse"]),
        "test_rmse": {h: entry["pooled"][h]["rmse"] for h in HORIZONS if h in entry["pooled"]},
        "test_std": {
            h: entry["std"]["pooled"][h]["rmse"] for h in HORIZONS if h in entry["pooled"]
        },
        "epochs_run": entry["epochs_run"],
        "fit_seconds": entry["fit_seconds"],
        **({"graph_path_kept": kept} if any(k is not None for k in kept) else {}),
    }


def run_network(
    network: Network,
    variants: tuple[Variant, ...],
    seeds: int,
    epochs: int | None,
    data_dir: Path | None,
    cache: Path | None,
) -> dict[str, Any]:
    """Train and score every variant on one network; a dict with the reason when skipped."""
    from flows.threads import limit_threads
    from models.forecasters.comparison import (
        ModelResult,
        TrainPlan,
        backtest_runs,
        check_graphs,
        metrics_document,
        split_panel,
    )
    from pipeline.data.datasets import DatasetError, load_dataset

    def log(line: str) -> None:
        print(line, flush=True)

    try:
        panel = load_dataset(network.spec, data_dir=data_dir)
    except DatasetError as exc:
        return {"skipped": str(exc).split(";")[0]}
    started = time.monotonic()
    usable = tuple(v for v in variants if panel.graph is not None or v.model != "tgclstm")
    defaults = tuple(v.model for v in usable if v.is_default)
    plan = TrainPlan(
        models=defaults, seeds=seeds, epochs=epochs or network.epochs, device="cpu",
        progress=False,
    )  # fmt: skip
    with limit_threads(1):
        check_graphs(panel, plan)
        split = split_panel(panel, plan)
        fitter = SuiteFitter(network.name, network.spec, split, plan, cache, log)
        results: dict[str, ModelResult] = {}
        skipped: dict[str, str] = {}
        for variant in usable:
            try:
                runs = fitter.runs(variant)
            except ValueError as exc:  # a setting this network cannot take
                skipped[variant.name] = str(exc)
                log(f"  {network.name} {variant.name}: skipped: {exc}")
                continue
            results[variant.name] = backtest_runs(
                variant.model, runs, panel, split, plan, log=lambda _: None
            )
    document = metrics_document(
        {v.model: results[v.name] for v in usable if v.is_default}, panel, split, plan,
        network.name,
    )  # fmt: skip
    entry = summarise(document)
    entry["window_losses"] = window_losses(
        {v.model: results[v.name] for v in usable if v.is_default}
    )
    entry["candidates"] = {
        **{
            name: candidate_entry(r)
            for name, r in results.items()
            if name.split(":")[0] in ("lstm", "gru", "tgclstm")
        },
        **{name: {"skipped": reason} for name, reason in skipped.items()},
    }
    entry.update(
        what=network.what, spec=network.spec, sensors=panel.n_nodes, steps=panel.n_time,
        split=split.sizes(), epochs_cap=plan.epochs, seconds=time.monotonic() - started,
    )  # fmt: skip
    return entry


def _group_key(variant: Variant) -> tuple[str, tuple[str, ...]]:
    return variant.model, tuple(k for k, _ in variant.overrides)


def _pick(valid: dict[str, dict[str, float | None]], names: list[str], networks: list[str]) -> str:
    """The candidate with the lowest mean relative validation RMSE over ``networks``."""
    scores = {n: _mean([valid[net][n] for net in networks]) for n in names}
    return min(names, key=lambda n: (scores[n] or math.inf, names.index(n)))


def choose_defaults(
    results: dict[str, Any], variants: tuple[Variant, ...], horizon: str = "12"
) -> dict[str, Any]:
    """Per setting with candidates: the candidate chosen on validation parts only.

    A candidate's score on a network is its validation RMSE (mean over seeds) over the
    best candidate's there; the choice is the lowest mean score over the networks. Leave
    one network out: each network's choice is made on the others, and its own test part
    shows how that choice fared (test RMSE at ``horizon`` over the best candidate's).
    """
    groups: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for variant in variants:
        if not variant.is_default:
            groups.setdefault(_group_key(variant), [variant.model]).append(variant.name)
    out: dict[str, Any] = {}
    for (model, keys), names in groups.items():
        cands: dict[str, dict[str, Any]] = {}
        for network, r in results.items():
            entries = (r.get("candidates") or {}) if "skipped" not in r else {}
            if all(entries.get(n, {}).get("valid_mean") is not None for n in names):
                cands[network] = {n: entries[n] for n in names}
        if not cands:
            continue
        valid = {net: relative({n: e[n]["valid_mean"] for n in names}) for net, e in cands.items()}
        test = {
            net: relative({n: e[n]["test_rmse"].get(horizon) for n in names})
            for net, e in cands.items()
        }

        networks = list(cands)
        chosen = _pick(valid, names, networks)
        loo = {
            held: {
                "chosen": (c := _pick(valid, names, [n for n in networks if n != held])),
                "test_relative": test[held][c],
            }
            for held in networks
            if len(networks) > 1
        }
        out[f"{model}:{'+'.join(keys)}"] = {
            "candidates": names,
            "networks": networks,
            "valid_relative": valid,
            "test_relative": test,
            "mean_valid_relative": {n: _mean([valid[net][n] for net in networks]) for n in names},
            "chosen": chosen,
            "leave_one_out": loo,
            "leave_one_out_agrees": all(v["chosen"] == chosen for v in loo.values()),
        }
    return out


def plot(results: dict[str, Any], path: Path) -> None:
    """Relative test RMSE per network (rows) and model (bars), one panel per horizon."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    done = {n: r for n, r in results.items() if "relative" in r}
    if not done:
        return
    models = [m for m in MODELS if any(m in r["relative"]["3"] for r in done.values())]
    fig, axes = plt.subplots(1, len(HORIZONS), figsize=(12, 0.5 * len(done) + 2), sharey=True)
    y = np.arange(len(done))
    width = 0.8 / max(len(models), 1)
    for ax, h in zip(np.atleast_1d(axes), HORIZONS, strict=True):
        for k, model in enumerate(models):
            values = [r["relative"][h].get(model) or np.nan for r in done.values()]
            ax.barh(y + k * width, values, width, label=model)
        ax.set_xlim(left=0.95)
        ax.axvline(1.0, color="black", lw=0.8)
        ax.axvline(REGRET_GOAL, color="grey", lw=0.8, ls="--")
        ax.set_yticks(y + 0.4 - width / 2, list(done))
        ax.set_xlabel(f"test RMSE / best model's, {h} steps")
    first = np.atleast_1d(axes)[0]
    first.invert_yaxis()  # the y axis is shared: once puts the first network on top
    first.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_tables(results: dict[str, Any], choices: dict[str, Any]) -> dict[str, bool]:
    """The relative RMSE, candidate and goal tables; returns the goals' checks."""
    rows = []
    for name, r in results.items():
        if "skipped" in r:
            rows.append([name, "skipped: " + r["skipped"][:60], "", "", ""])
            continue
        for h in HORIZONS:
            cells = " ".join(f"{m} {v:.3f}" for m, v in r["relative"][h].items() if v is not None)
            regret = r["regret"][h]
            rows.append(
                [name, f"{h} steps", cells, r["champion"] or "-",
                 f"{regret['regret']:.3f}" if regret else "-"]
            )  # fmt: skip
    print_table(
        "test RMSE relative to the best model per network and horizon",
        ["network", "horizon", "relative RMSE", "champion", "regret"],
        rows,
    )
    for setting, c in choices.items():
        names = c["candidates"]
        print_table(
            f"{setting}: validation (test) RMSE@12 over the best candidate; leave-one-out choice",
            ["network", *names, "chosen on the others"],
            [
                [net, *(f"{c['valid_relative'][net][n]:.3f} ({c['test_relative'][net][n]:.3f})"
                        if c["test_relative"][net][n] is not None else "-" for n in names),
                 c["leave_one_out"].get(net, {}).get("chosen", "-")]
                for net in c["networks"]
            ]
            + [["mean (validation)", *(f"{c['mean_valid_relative'][n]:.3f}" for n in names),
                f"chosen: {c['chosen']}"]],
        )  # fmt: skip
    checks = {f"{n}:{k}": v for n, r in results.items() for k, v in r.get("checks", {}).items()}
    print_table("goals", ["check", "passed"], [[k, str(v)] for k, v in checks.items()])
    return checks


def main(argv: list[str] | None = None) -> None:
    """Run the suite (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.generalization")
    parser.add_argument("--quick", action="store_true", help="two tiny networks, 2 epochs")
    parser.add_argument("--networks", default=None, help="comma-separated names of SUITE")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument(
        "--candidates",
        default=None,
        help="';'-separated variants such as lstm:dropout=0.3 (default: CANDIDATES; "
        "'none' for none)",
    )
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=None, help="default: each network's")
    parser.add_argument("--jobs", type=int, default=1, help="networks trained side by side")
    parser.add_argument("--cache", default=None, help="keep and reuse neural fits here")
    parser.add_argument("--data-dir", default=None, help="default: ROADCAST_DATA_DIR")
    parser.add_argument(
        "--name", default="generalization", help="write benchmarks/results/NAME.json, NAME.png"
    )
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error("--seeds must be >= 2: the goals compare models within the seed spread")

    suite: tuple[Network, ...] = QUICK if args.quick else SUITE
    if args.networks:
        wanted = {n.strip() for n in args.networks.split(",")}
        unknown = wanted - {n.name for n in (*SUITE, *QUICK)}
        if unknown:
            parser.error(f"unknown network(s) {sorted(unknown)}; known: {[n.name for n in SUITE]}")
        suite = tuple(n for n in (*SUITE, *QUICK) if n.name in wanted)
    data_dir = Path(args.data_dir) if args.data_dir else shared_data_dir()
    candidates = CANDIDATES if args.candidates is None else args.candidates.split(";")
    try:
        variants = tuple(
            dict.fromkeys(
                [parse_variant(m) for m in args.models.split(",") if m.strip()]
                + [parse_variant(c) for c in candidates if c.strip() and c.strip() != "none"]
            )
        )
    except ValueError as exc:
        parser.error(str(exc))
    epochs = 2 if args.quick and args.epochs is None else args.epochs
    cache = Path(args.cache) if args.cache else None
    jobs = [(n, variants, args.seeds, epochs, data_dir, cache) for n in suite]
    results: dict[str, Any] = {}
    for network in suite:
        print(f"{network.name}: {network.what}", flush=True)
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            futures = {job[0].name: pool.submit(run_network, *job) for job in jobs}
            results = {name: future.result() for name, future in futures.items()}
    else:
        results = {job[0].name: run_network(*job) for job in jobs}
    choices = choose_defaults(results, variants)
    checks = print_tables(results, choices)
    out_dir = Path(os.environ.get("ROADCAST_BENCH_RESULTS") or RESULTS_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot(results, out_dir / f"{args.name}.png")
    losses = {net: r.pop("window_losses") for net, r in results.items() if "window_losses" in r}
    write_losses(args.name, losses, out_dir)
    write_result(
        args.name,
        {
            "quick": args.quick,
            "command": "python -m benchmarks.generalization"
            + (" --quick" if args.quick else "")
            + (f" --networks {args.networks}" if args.networks else "")
            + (f" --seeds {args.seeds}" if args.seeds != 2 else "")
            + (f" --epochs {args.epochs}" if args.epochs else "")
            + (f" --candidates '{args.candidates}'" if args.candidates is not None else "")
            + (f" --name {args.name}" if args.name != "generalization" else ""),
            "protocol": "roadcast train's: chronological 80/20 split, validation = last 10% of "
            "the training part (epochs, kept seed, champion), 12 input steps, test windows "
            "inside the test part, pooled RMSE over steps 1..h; TGC-LSTM's first stage is "
            "the LSTM fit of the same seed (its fit seconds include it)",
            "seeds": args.seeds,
            "variants": [v.name for v in variants],
            "networks": results,
            "defaults": choices,
            "checks": checks,
            "plot": f"{args.name}.png",
            "window_losses": f"{args.name}_losses.json.gz: per network, model and horizon, "
            "each seed's per-window test loss (null: none), for paired tests without refitting",
        },
    )


if __name__ == "__main__":
    main()
