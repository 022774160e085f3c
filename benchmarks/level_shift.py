"""What forecasts lose after a sensor's level shifts, and what an online bias correction
wins back (issue 12).

``python -m benchmarks.level_shift [--quick] [--seeds 2] [--epochs 20] [--heldout DIR]``

Development networks (:data:`NETWORKS`: simulated speeds and counts, los-loop) are split
and trained with ``roadcast train``'s protocol (:mod:`models.forecasters.comparison`) on
their unchanged training part. Shifts are then injected into the test part only
(:func:`plan_shifts`, :func:`inject`): for a seeded fifth of the sensors, from a step
inside the test part on, a level step of +/-10-20 % or, for two of them, a gain change
about the sensor's training mean. Every model forecasts the unshifted and the shifted
panel; each correction rule (:data:`RULES`) adds to the horizon-k forecast a recent mean
of that sensor's horizon-k errors whose targets are observed at the forecast's origin
(:func:`corrections`). Reported: pooled RMSE at 3 and 12 steps on the unshifted test
part (the cost), on the shifted sensors after their step (the gain) and on the whole
shifted test part, as ratios to ``off``.

One rule is chosen on the development networks (:func:`choose_rule`), then applied once
to the held-out ``recalibrated`` network of :mod:`benchmarks.heldout_shifts` (``--heldout
DIR``: generated there when missing).
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import shared_data_dir, write_result
from flows.reporting.text import print_table
from models.forecasters.level import GATE_C, corrections

HORIZONS = (3, 12)
MODELS = ("persistence", "ar", "lstm")
HALF_LIVES_H = (1.0, 6.0, 24.0)
COST_LIMIT = 1.01


@dataclass(frozen=True)
class Rule:
    """A correction rule: none (``half_life_h`` None), an EW mean of the errors, or that
    mean applied only where it exceeds ``GATE_C`` standard errors (``gate`` "iid": the
    errors taken as independent; "ar1": the standard error widened for their lag-1
    autocorrelation)."""

    name: str
    half_life_h: float | None = None
    gate: str | None = None


RULES = (
    Rule("off"),
    *(Rule(f"ew-{h:g}h", h) for h in HALF_LIVES_H),
    *(Rule(f"gated-iid-{h:g}h", h, "iid") for h in HALF_LIVES_H),
    *(Rule(f"gated-ar1-{h:g}h", h, "ar1") for h in HALF_LIVES_H),
)


@dataclass(frozen=True)
class Network:
    name: str
    spec: str
    what: str


NETWORKS = (
    Network("speed-50", "simulated:sensors=50,days=14,seed=11", "simulated freeway speeds"),
    Network(
        "counts-50",
        "simulated:regime=counts,sensors=50,days=14,seed=12",
        "simulated counts, strong daily cycle",
    ),
    Network("los-loop", "los-loop", "LA freeway speeds, 207 sensors, one week (real)"),
)
QUICK = (Network("speed-quick", "simulated:sensors=12,days=4,seed=11", "tiny"),)


# --------------------------------------------------------------------------- injection
@dataclass(frozen=True)
class Shift:
    """From step ``onset`` on, sensor ``sensor`` reads ``x * (1 + size)`` (``kind``
    "level") or ``ref + size * (x - ref)`` (``kind`` "gain", ``ref`` its training mean)."""

    sensor: int
    onset: int
    kind: str
    size: float


def plan_shifts(
    n_nodes: int, test_start: int, n_time: int, seed: int, share: float = 0.2, gains: int = 2
) -> list[Shift]:
    """A seeded fifth (``share``) of the sensors, each shifted from a step in the first
    60 % of the test part ``[test_start, n_time)`` (after its first tenth); the last
    ``gains`` of them get a gain change (0.5, then 1.5), the rest a level step of
    +/-10-20 %."""
    if not 0 <= test_start < n_time:
        raise ValueError(f"test part [{test_start}, {n_time}) is empty")
    rng = np.random.default_rng(seed)
    count = max(1, round(share * n_nodes))
    sensors = np.sort(rng.choice(n_nodes, size=min(count, n_nodes), replace=False))
    length = n_time - test_start
    first, last = test_start + length // 10, test_start + max(length // 10 + 1, 6 * length // 10)
    shifts = []
    for k, sensor in enumerate(sensors):
        onset = int(rng.integers(first, min(last, n_time)))
        sign = 1.0 if rng.random() < 0.5 else -1.0
        size = float(sign * rng.uniform(0.10, 0.20))
        gain_k = k - (len(sensors) - min(gains, len(sensors) - 1))
        if gain_k >= 0:
            shifts.append(Shift(int(sensor), onset, "gain", (0.5, 1.5)[gain_k % 2]))
        else:
            shifts.append(Shift(int(sensor), onset, "level", size))
    return shifts


def inject(panel: Any, shifts: list[Shift], reference: np.ndarray) -> Any:
    """A copy of ``panel`` with ``shifts`` applied (missing readings stay missing);
    ``reference`` is each sensor's training mean, the centre of a gain change."""
    values = np.array(panel.values, dtype=np.float32, copy=True)
    for s in shifts:
        column = values[s.onset :, s.sensor]
        if s.kind == "level":
            values[s.onset :, s.sensor] = column * (1.0 + s.size)
        else:
            ref = float(reference[s.sensor])
            values[s.onset :, s.sensor] = ref + s.size * (column - ref)
    return replace(panel, values=values)


# --------------------------------------------------------------------------- correction
def apply_rule(errors: np.ndarray, rule: Rule, steps_per_hour: float) -> np.ndarray:
    """The correction of ``rule`` for ``errors`` (zeros for ``off``)."""
    if rule.half_life_h is None:
        return np.zeros(errors.shape)
    return corrections(errors, rule.half_life_h * steps_per_hour, rule.gate)


# --------------------------------------------------------------------------- scoring
def rmse(actual: np.ndarray, forecast: np.ndarray, h: int, keep: np.ndarray | None = None) -> float:
    """Pooled RMSE over steps 1..h of ``[n, horizon, node]`` where ``keep`` (``[n, node]``)
    holds and the actual is observed (NaN when nothing is)."""
    diff = (actual[:, :h] - forecast[:, :h]) ** 2
    ok = np.isfinite(diff)
    if keep is not None:
        ok &= keep[:, None, :]
    return float(np.sqrt(diff[ok].mean())) if ok.any() else float("nan")


def forecast_all(model: Any, panel: Any, first: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Origins, forecasts and actuals of every origin whose targets lie from ``first`` on
    (validation and test part: the errors of validation warm the corrections up)."""
    from models.forecasters.base import target_windows
    from models.forecasters.evaluation import part_origins

    origins = part_origins(
        panel.n_time, start=first, stop=None, window=model.window, horizon=model.horizon,
        inputs_inside=0,
    )  # fmt: skip
    forecast = model.predict_batch(panel, origins).mean
    actual = target_windows(panel.values, origins, model.horizon)
    return origins, np.asarray(forecast, dtype=np.float64), np.asarray(actual, dtype=np.float64)


def score_model(
    model: Any,
    clean: Any,
    shifted: Any,
    shifts: list[Shift],
    first: int,
    test_start: int,
    steps_per_hour: float,
    rules: tuple[Rule, ...] = RULES,
) -> dict[str, dict[str, dict[str, float]]]:
    """``{rule: {part: {h: rmse}}}`` for the parts ``unshifted`` (clean test part, all
    sensors), ``shifted_after`` (shifted sensors, origins from their step on) and ``all``
    (shifted panel, all sensors); test origins as ``roadcast train`` scores them."""
    out: dict[str, dict[str, dict[str, float]]] = {r.name: {} for r in rules}
    for part, panel in (("unshifted", clean), ("shifted", shifted)):
        origins, forecast, actual = forecast_all(model, panel, first)
        test = origins >= test_start + model.window - 1
        errors = actual - forecast
        after = np.zeros((len(origins), panel.n_nodes), dtype=bool)
        for s in shifts:
            after[:, s.sensor] = origins >= s.onset
        for rule in rules:
            fixed = forecast + apply_rule(errors, rule, steps_per_hour)
            if part == "unshifted":
                out[rule.name]["unshifted"] = {
                    str(h): rmse(actual[test], fixed[test], h) for h in HORIZONS
                }
            else:
                out[rule.name]["shifted_after"] = {
                    str(h): rmse(actual[test], fixed[test], h, after[test]) for h in HORIZONS
                }
                out[rule.name]["all"] = {
                    str(h): rmse(actual[test], fixed[test], h) for h in HORIZONS
                }
    return out


def ratios(scores: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Each rule's RMSE over ``off``'s, per part and horizon."""
    off = scores["off"]
    return {
        rule: {
            part: {h: v / off[part][h] if off[part][h] else math.nan for h, v in per.items()}
            for part, per in parts.items()
        }
        for rule, parts in scores.items()
    }


def mean_scores(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean over seeds of ``{rule: {part: {h: rmse}}}``."""
    first = per_seed[0]
    return {
        rule: {
            part: {h: float(np.mean([s[rule][part][h] for s in per_seed])) for h in per}
            for part, per in parts.items()
        }
        for rule, parts in first.items()
    }


# --------------------------------------------------------------------------- networks
def _steps_per_hour(panel: Any) -> float:
    """Time steps of ``panel`` per hour."""
    return 3600.0 / (panel.timestamps[1] - panel.timestamps[0]).total_seconds()


def run_network(
    network: Network,
    seeds: int,
    epochs: int | None,
    data_dir: Path | None,
    seed: int,
    models_: tuple[str, ...] = MODELS,
    rules: tuple[Rule, ...] = RULES,
) -> dict[str, Any]:
    """Train the models on ``network``'s training part, inject shifts into its test part
    and score every rule; a dict with the reason when the data are missing."""
    from flows.threads import limit_threads
    from models.forecasters.comparison import TrainPlan, fit_runs, split_panel
    from pipeline.data.datasets import DatasetError, load_dataset

    try:
        panel = load_dataset(network.spec, data_dir=data_dir)
    except DatasetError as exc:
        return {"skipped": str(exc).split(";")[0]}
    started = time.monotonic()
    plan = TrainPlan(models=models_, seeds=seeds, epochs=epochs, device="cpu", progress=False)
    with limit_threads(1):
        split = split_panel(panel, plan)
        first = split.train.n_time
        test_start = first + split.valid.n_time
        reference = np.nanmean(np.asarray(split.train.values, dtype=np.float64), axis=0)
        shifts = plan_shifts(panel.n_nodes, test_start, panel.n_time, seed)
        shifted = inject(panel, shifts, reference)
        per_hour = _steps_per_hour(panel)
        models: dict[str, Any] = {}
        for name in models_:
            runs = fit_runs(name, split, plan, log=lambda line: print(line, flush=True))
            per_seed = [
                score_model(r.model, panel, shifted, shifts, first, test_start, per_hour, rules)
                for r in runs
            ]
            rmse_ = mean_scores(per_seed)
            models[name] = {"rmse": rmse_, "ratio": ratios(rmse_), "seeds": len(runs)}
            print(f"  {network.name} {name}: scored {len(rules)} rules", flush=True)
    return {
        "spec": network.spec,
        "what": network.what,
        "sensors": panel.n_nodes,
        "steps": panel.n_time,
        "split": split.sizes(),
        "steps_per_hour": per_hour,
        "shifts": [
            {
                "sensor": panel.sensor_ids[s.sensor],
                "onset": str(panel.timestamps[s.onset]),
                "onset_step": s.onset,
                "kind": s.kind,
                "size": s.size,
            }
            for s in shifts
        ],
        "models": models,
        "seconds": time.monotonic() - started,
    }


def choose_rule(results: dict[str, Any], rules: tuple[Rule, ...] = RULES) -> dict[str, Any]:
    """The rule with the best mean gain (RMSE ratio on the shifted sensors after their
    step, over networks, models and horizons) among those whose worst cost (ratio on the
    unshifted test part, over the same) is at most ``COST_LIMIT``; ``chosen`` is None when
    no rule but ``off`` qualifies."""
    done = [r for r in results.values() if "models" in r]
    summary: dict[str, dict[str, float]] = {}
    for rule in rules:
        costs, gains = [], []
        for r in done:
            for m in r["models"].values():
                for h in map(str, HORIZONS):
                    costs.append(m["ratio"][rule.name]["unshifted"][h])
                    gains.append(m["ratio"][rule.name]["shifted_after"][h])
        summary[rule.name] = {
            "worst_cost": float(np.nanmax(costs)) if costs else math.nan,
            "mean_gain": float(np.nanmean(gains)) if gains else math.nan,
        }
    qualified = [n for n, s in summary.items() if n != "off" and s["worst_cost"] <= COST_LIMIT]
    chosen = min(qualified, key=lambda n: summary[n]["mean_gain"]) if qualified else None
    return {
        "criterion": f"lowest mean shifted-after ratio among rules with worst unshifted "
        f"ratio <= {COST_LIMIT} (over networks, models and horizons {HORIZONS})",
        "summary": summary,
        "qualified": qualified,
        "chosen": chosen,
    }


# --------------------------------------------------------------------------- held-out
def run_heldout(
    folder: Path,
    rule_name: str,
    epochs: int | None,
    seeds: int = 1,
    models_: tuple[str, ...] = ("lstm",),
) -> dict[str, Any]:
    """Train persistence and ``models_`` on the held-out ``recalibrated`` network and score
    ``off`` and ``rule_name`` on its test part: all sensors, the changed sensors after
    their change, the work zone during it and the untouched sensors."""
    from benchmarks.heldout_shifts import make_recalibrated
    from flows.threads import limit_threads
    from models.forecasters.comparison import TrainPlan, fit_runs, split_panel
    from pipeline.data.datasets import load_dataset

    folder.mkdir(parents=True, exist_ok=True)
    facts = make_recalibrated(folder)  # deterministic: the same file each time
    panel = load_dataset(
        f"csv:{folder / 'recalibrated.csv'}", adjacency=folder / "recalibrated_edges.csv"
    )
    ids = list(panel.sensor_ids)
    rules = tuple(r for r in RULES if r.name in ("off", rule_name))
    plan = TrainPlan(
        models=tuple(dict.fromkeys(("persistence", *models_))),
        seeds=seeds,
        epochs=epochs,
        device="cpu",
        progress=False,
    )
    changed = {ids.index(s): at for s, (at, _) in facts["level_steps"].items()}
    gain_id, gain_at, _ = facts["gain"]
    changed[ids.index(gain_id)] = gain_at
    zone_ids, zone_from, zone_to = facts["work_zone"]
    zone = [ids.index(s) for s in zone_ids]
    out: dict[str, Any] = {"facts": {
        "test_start": int(facts["test_start"]),
        "changed": {ids[c]: int(at) for c, at in changed.items()},
        "work_zone": [zone_ids, int(zone_from), int(zone_to)],
    }, "models": {}}  # fmt: skip
    with limit_threads(1):
        split = split_panel(panel, plan)
        first = split.train.n_time
        test_start = first + split.valid.n_time
        per_hour = _steps_per_hour(panel)
        for name in plan.models:
            runs = fit_runs(name, split, plan, log=lambda line: print(line, flush=True))
            per_seed = []
            for run in runs:
                origins, forecast, actual = forecast_all(run.model, panel, first)
                test = origins >= test_start + run.model.window - 1
                o = origins[test]
                after = np.zeros((len(o), panel.n_nodes), dtype=bool)
                for c, at in changed.items():
                    after[:, c] = o >= at
                in_zone = np.zeros_like(after)
                in_zone[:, zone] = ((o >= zone_from) & (o < zone_to))[:, None]
                untouched = np.ones_like(after)
                untouched[:, list(changed) + zone] = False
                errors = actual - forecast
                scores: dict[str, Any] = {}
                for rule in rules:
                    fixed = (forecast + apply_rule(errors, rule, per_hour))[test]
                    a = actual[test]
                    scores[rule.name] = {
                        part: {str(h): rmse(a, fixed, h, keep) for h in HORIZONS}
                        for part, keep in (
                            ("all", None), ("changed_after", after), ("work_zone", in_zone),
                            ("untouched", untouched),
                        )
                    }  # fmt: skip
                per_seed.append(scores)
            rmse_ = mean_scores(per_seed)
            out["models"][name] = {"rmse": rmse_, "ratio": ratios(rmse_)}
    return out


# --------------------------------------------------------------------------- report
def print_report(
    results: dict[str, Any], choice: dict[str, Any], rules: tuple[Rule, ...] = RULES
) -> None:
    """The ratio table per network, model and rule, and the choice."""
    rows = []
    for net, r in results.items():
        if "skipped" in r:
            rows.append([net, "skipped: " + r["skipped"][:60], "", "", "", "", "", "", ""])
            continue
        for model, m in r["models"].items():
            off = m["rmse"]["off"]
            for rule in rules:
                q = m["ratio"][rule.name]
                cells = [
                    f"{q[p]['3']:.3f} / {q[p]['12']:.3f}"
                    for p in ("unshifted", "shifted_after", "all")
                ]
                rows.append([net, model, rule.name, *cells,
                             f"{off['unshifted']['12']:.3f}", f"{off['shifted_after']['12']:.3f}",
                             f"{off['all']['12']:.3f}"])  # fmt: skip
    print_table(
        "RMSE over off's @3 / @12 (unshifted = cost, shifted after = gain); off's RMSE @12",
        ["network", "model", "rule", "unshifted", "shifted after", "all",
         "off unsh@12", "off sh@12", "off all@12"],
        rows,
    )  # fmt: skip
    print_table(
        "choice",
        ["rule", "worst cost", "mean gain", "qualifies"],
        [
            [n, f"{s['worst_cost']:.4f}", f"{s['mean_gain']:.4f}", str(n in choice["qualified"])]
            for n, s in choice["summary"].items()
        ],
    )
    fixed = " (fixed by --rule, not chosen here)" if choice.get("fixed_by") else ""
    print(f"chosen: {choice['chosen']}{fixed}")


def print_heldout(heldout: dict[str, Any]) -> None:
    rows = []
    for model, m in heldout["models"].items():
        for rule, parts in m["rmse"].items():
            rows.append([model, rule] + [
                f"{parts[p]['3']:.3f} / {parts[p]['12']:.3f}"
                for p in ("all", "changed_after", "work_zone", "untouched")
            ])  # fmt: skip
    print_table(
        "held-out recalibrated: RMSE @3 / @12",
        ["model", "rule", "all", "changed after", "work zone", "untouched"],
        rows,
    )


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.level_shift")
    parser.add_argument("--quick", action="store_true", help="one tiny network, 2 epochs")
    parser.add_argument("--seeds", type=int, default=2, help="seeds of the LSTM")
    parser.add_argument("--epochs", type=int, default=20, help="epoch cap of the LSTM")
    parser.add_argument("--shift-seed", type=int, default=1612)
    parser.add_argument("--networks", default=None, help="comma-separated names")
    parser.add_argument("--data-dir", default=None, help="default: ROADCAST_DATA_DIR")
    parser.add_argument(
        "--heldout", default=None, help="folder of the held-out recalibrated network "
        "(generated there); applies the chosen rule to it once",
    )  # fmt: skip
    parser.add_argument(
        "--models", default=",".join(MODELS), help="models to train on every network"
    )
    parser.add_argument(
        "--rule", default=None, choices=[r.name for r in RULES if r.half_life_h is not None],
        help="measure this rule against off only, without choosing one (for models the "
        "choice was not made on)",
    )  # fmt: skip
    parser.add_argument("--name", default="level_shift")
    args = parser.parse_args(argv)
    models_ = tuple(m.strip() for m in args.models.split(",") if m.strip())
    rules = RULES if args.rule is None else tuple(r for r in RULES if r.name in ("off", args.rule))
    networks: tuple[Network, ...] = QUICK if args.quick else NETWORKS
    if args.networks:
        wanted = set(args.networks.split(","))
        networks = tuple(n for n in (*NETWORKS, *QUICK) if n.name in wanted)
    epochs = 2 if args.quick else args.epochs
    data_dir = Path(args.data_dir) if args.data_dir else shared_data_dir()
    results = {}
    for k, network in enumerate(networks):
        print(f"{network.name}: {network.what}", flush=True)
        results[network.name] = run_network(
            network, args.seeds, epochs, data_dir, args.shift_seed + k, models_, rules
        )
    choice = choose_rule(results, rules)
    if args.rule is not None:  # measured, not chosen: the held-out part applies it as given
        choice = {**choice, "chosen": args.rule, "fixed_by": "--rule"}
    print_report(results, choice, rules)
    heldout = None
    if args.heldout and choice["chosen"]:
        heldout = run_heldout(Path(args.heldout), choice["chosen"], epochs, models_=models_)
        print_heldout(heldout)
    write_result(
        args.name,
        {
            "quick": args.quick,
            "command": "python -m benchmarks.level_shift"
            + (" --quick" if args.quick else "")
            + (f" --seeds {args.seeds}" if args.seeds != 2 else "")
            + (f" --epochs {args.epochs}" if args.epochs != 20 else "")
            + (f" --networks {args.networks}" if args.networks else "")
            + (f" --heldout {args.heldout}" if args.heldout else "")
            + (f" --models {args.models}" if models_ != MODELS else "")
            + (f" --rule {args.rule}" if args.rule else "")
            + (f" --name {args.name}" if args.name != "level_shift" else ""),
            "protocol": "roadcast train's split (80/20, validation the last 10% of training), "
            "12 inputs, 12 steps, test windows with 12 inputs inside the test part; "
            "pooled RMSE over steps 1..h; corrections warm up on the validation part",
            "rules": [r.__dict__ for r in rules],
            "gate_c": GATE_C,
            "networks": results,
            "choice": choice,
            "heldout": heldout,
        },
    )


if __name__ == "__main__":
    main()
