"""The drift watcher's thresholds: chosen on validation data, checked on the test part.

``python -m benchmarks.drift [--data los-loop] [--models persistence,ar] [--quick]``

The live error the watcher sees is the MAE of a model's forecasts whose targets fall in
the last ``window`` ticks, pooled over steps 1..h (:mod:`pipeline.drift`). Here the same
number is computed from forecasts at every origin of a data set (no service: the sums
are what the service's ``accuracy`` table would hold), on the protocol's chronological
split (``roadcast train``'s 70/10/20):

1. **Choice, on the validation part.** Each model is fitted on the training part; its
   validation MAE is what its bundle records. Over every window of the validation part
   the ratios ``window MAE / validation MAE`` and ``window MAE / MAE of the baseline
   ticks before it`` show how far a window strays with no drift at all. The default
   ratios are the largest seen, times a safety margin (:data:`MARGIN`), rounded up to
   0.1.
2. **Check, on the test part** (never used to choose): how many windows the chosen
   ratios flag with no drift (false alarms), and, with a synthetic regime change from
   the test part's middle on (:func:`pipeline.data.simulate_regimes.regime_change`:
   level x0.8, noise of one validation MAE), how many ticks pass before each rule
   flags it.

Results: ``benchmarks/results/drift.json`` and a table.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np

from benchmarks.common import shared_data_dir, write_result
from flows.reporting.text import print_table
from models.panel import SensorPanel
from pipeline.drift import DriftConfig, judge

WINDOW = 24  # ticks: two hours of 5-minute ticks, the watcher's window
BASELINE = 72  # ticks before the window (six hours): what fits in a validation part
HORIZONS = (3, 12)
MARGIN = 1.25
MIN_COUNT = 500


def step_errors(model: Any, panel: SensorPanel, first: int, last: int) -> np.ndarray:
    """``[target tick, step]`` absolute error sums and counts of ``model``'s forecasts whose
    targets lie in ``[first, last)``: what the service's ``accuracy`` table holds."""
    horizon = model.horizon
    origins = np.arange(max(model.window - 1, first - horizon), last - 1)
    mean = model.predict_batch(panel, origins).mean  # [origin, step, node]
    sums = np.zeros((panel.n_time, horizon, 2))  # [target, step, (sum_abs, n)]
    for s in range(1, horizon + 1):
        targets = origins + s
        keep = (targets >= first) & (targets < last)
        actual = panel.values[targets[keep]]  # [n, node]
        ok = panel.mask[targets[keep]] & np.isfinite(mean[keep, s - 1])
        err = np.where(ok, np.abs(mean[keep, s - 1] - actual), 0.0)
        sums[targets[keep], s - 1, 0] = err.sum(axis=1)
        sums[targets[keep], s - 1, 1] = ok.sum(axis=1)
    return sums


def window_mae(sums: np.ndarray, first: int, last: int, h: int) -> tuple[float | None, int]:
    """MAE over targets ``[first, last)`` pooled over steps 1..h, and its count."""
    part = sums[first:last, :h]
    count = int(part[..., 1].sum())
    return (float(part[..., 0].sum()) / count if count else None), count


def ratios(sums: np.ndarray, first: int, last: int, valid_mae: dict[int, float]) -> dict[str, Any]:
    """Largest no-drift ratios over the windows of ``[first, last)``."""
    worst = {"valid": 0.0, "baseline": 0.0}
    for end in range(first + WINDOW, last + 1):
        for h in HORIZONS:
            live, _ = window_mae(sums, end - WINDOW, end, h)
            if live is None:
                continue
            worst["valid"] = max(worst["valid"], live / valid_mae[h])
            if end - WINDOW - BASELINE >= first:
                base, _ = window_mae(sums, end - WINDOW - BASELINE, end - WINDOW, h)
                if base:
                    worst["baseline"] = max(worst["baseline"], live / base)
    return worst


def flags(
    sums: np.ndarray, first: int, last: int, valid_mae: dict[int, float], config: DriftConfig
) -> dict[str, list[int]]:
    """The window ends in ``[first, last)`` each rule flags (validation, baseline)."""
    out: dict[str, list[int]] = {"valid": [], "baseline": []}
    for end in range(first + WINDOW, last + 1):
        for rule in out:
            hit = False
            for h in HORIZONS:
                live, count = window_mae(sums, end - WINDOW, end, h)
                if rule == "valid":
                    hit |= bool(judge(live, count, valid_mae[h], None, 0, config))
                elif end - WINDOW - BASELINE >= first:
                    base, n = window_mae(sums, end - WINDOW - BASELINE, end - WINDOW, h)
                    hit |= bool(judge(live, count, None, base, n, config))
            if hit:
                out[rule].append(end)
    return out


def _round_up(value: float) -> float:
    return math.ceil(value * 10.0) / 10.0


def run(data: str, names: tuple[str, ...]) -> dict[str, Any]:
    from models.forecasters.comparison import TrainPlan, split_panel
    from models.forecasters.factory import build_model
    from pipeline.data.datasets import load_dataset
    from pipeline.data.simulate_regimes import regime_change

    panel = load_dataset(data, data_dir=shared_data_dir())
    plan = TrainPlan(models=names, window=12, horizon=12, seeds=1, progress=False)
    split = split_panel(panel, plan)
    n_train, n_valid = split.train.n_time, split.valid.n_time
    test_first, test_last = n_train + n_valid, panel.n_time
    change = (test_first + test_last) // 2
    fitted, chosen = {}, {"valid": 0.0, "baseline": 0.0}
    for name in names:
        model = build_model(name, window=plan.window, horizon=plan.horizon, seed=0)
        model.fit(split.train, valid=split.valid)
        pooled = model.valid_metrics["pooled"]  # type: ignore[attr-defined]
        valid_mae = {h: float(pooled[str(h)]["mae"]) for h in HORIZONS}
        sums = step_errors(model, panel, n_train, n_train + n_valid)
        worst = ratios(sums, n_train, n_train + n_valid, valid_mae)
        fitted[name] = (model, valid_mae, worst)
        chosen = {k: max(chosen[k], v) for k, v in worst.items()}
    config = DriftConfig(
        ratio=_round_up(chosen["valid"] * MARGIN),
        baseline_ratio=_round_up(chosen["baseline"] * MARGIN),
        min_count=MIN_COUNT,
        window_ticks=WINDOW,
        baseline_ticks=BASELINE,
    )
    rows, results = [], {}
    for name, (model, valid_mae, worst) in fitted.items():
        clean = flags(step_errors(model, panel, test_first, test_last), test_first, test_last,
                      valid_mae, config)  # fmt: skip
        noise = valid_mae[HORIZONS[0]]
        shifted = regime_change(panel, change, level=0.8, noise=noise, seed=1)
        drifted = flags(step_errors(model, shifted, test_first, test_last), test_first,
                        test_last, valid_mae, config)  # fmt: skip
        entry: dict[str, Any] = {"valid_mae": valid_mae, "validation_worst": worst}
        for rule in ("valid", "baseline"):
            before = [e for e in drifted[rule] if e <= change]
            after = [e for e in drifted[rule] if e > change]
            entry[rule] = {
                "false_alarm_windows": len(clean[rule]),
                "windows": test_last - test_first - WINDOW + 1,
                "delay_ticks": (after[0] - change) if after else None,
                "flagged_before_change": len(before),
            }
            rows.append([
                name, rule, round(worst[rule], 3), len(clean[rule]),
                entry[rule]["delay_ticks"],
            ])  # fmt: skip
        results[name] = entry
    print_table(
        f"drift rules on {data}: chosen on validation, checked on test "
        f"(ratio {config.ratio}, baseline ratio {config.baseline_ratio})",
        ["model", "rule", "worst no-drift ratio (valid)", "false alarms (test)",
         "ticks to detect the change"],
        rows,
    )  # fmt: skip
    return {
        "data": data,
        "models": list(names),
        "split": {"train": n_train, "valid": n_valid, "test": test_last - test_first},
        "window_ticks": WINDOW,
        "baseline_ticks": BASELINE,
        "horizons": list(HORIZONS),
        "margin": MARGIN,
        "chosen": {"ratio": config.ratio, "baseline_ratio": config.baseline_ratio},
        "regime_change": {"at": change, "level": 0.8, "noise": "validation MAE at step 3"},
        "results": results,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="los-loop")
    parser.add_argument("--models", default="persistence,ar")
    parser.add_argument("--quick", action="store_true", help="persistence only (a smoke run)")
    args = parser.parse_args(argv)
    names = ("persistence",) if args.quick else tuple(args.models.split(","))
    payload = run(args.data, names)
    print(write_result("drift", {**payload, "quick": args.quick}))


if __name__ == "__main__":
    main()
