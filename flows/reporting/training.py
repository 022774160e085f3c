"""The forecast report of a training run: the test-part backtests of the kept seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flows.reporting.build import Report, build_report
from flows.reporting.tables import claims_table, horizon_label, tuning_table
from models.forecasters.comparison import ModelResult, TrainPlan
from models.panel import SensorPanel


def train_report(
    document: dict[str, Any],
    results: dict[str, ModelResult],
    panel: SensorPanel,
    plan: TrainPlan,
    champion: str | None,
    out: str | Path,
) -> Report:
    """The forecast report of a training run: test-part backtests of the kept seeds."""
    freq = float(document["freq_minutes"])
    devices = sorted({str(e.get("device")) for e in document["models"].values()})
    facts = [
        ("data set", str(document["dataset"])),
        ("sensors", f"{panel.n_nodes:,}"),
        ("split (steps)", ", ".join(f"{k} {v}" for k, v in document["split"].items())),
        (
            "input window / horizon",
            f"{plan.window} / {plan.horizon} steps of {freq:g} min "
            f"({horizon_label(plan.horizon, freq)})",
        ),
        ("device", ", ".join(devices)),
    ]
    intro = (
        "Chronological split; validation is the end of the training part and chooses epochs, "
        "the kept seed, the interval widths and the champion; the test part is only scored. "
        "Scored windows have their input window and all targets inside the test part "
        "(T-GCN's protocol); models that need a longer history read it from before the "
        "test part, so every model is scored on the same targets. Metrics are on the "
        "original scale, pooled over steps 1..h, missing targets not scored; mean ± sample "
        "std over seeds for neural models."
    )
    first, last = panel.timestamps[0], panel.timestamps[-1]
    provenance = [
        (
            "data",
            f"{document['dataset']}: {panel.n_time:,} steps from {first:%Y-%m-%d %H:%M} to "
            f"{last:%Y-%m-%d %H:%M} UTC, {panel.missing_share:.2%} missing",
        ),
        ("data fingerprint", panel.fingerprint()[:16]),
        ("models", ", ".join(plan.models)),
        ("seeds per neural model", str(plan.seeds)),
        ("max epochs", "model default" if plan.epochs is None else str(plan.epochs)),
        ("test / validation share", f"{plan.test:g} / {plan.valid:g}"),
        ("output", str(out)),
        ("champion chosen by", "lowest validation RMSE, pooled over the horizon"),
        (
            "settings",
            "searched on the validation part (--tune)" if document.get("tuning") else "defaults",
        ),
    ]
    return build_report(
        title=f"Forecast comparison: {document['dataset']}",
        what="test part",
        document=document,
        backtests={name: r.backtest for name, r in results.items()},
        panel=panel,
        champion=champion,
        facts=facts,
        intro=intro,
        coords=panel.coords,
        provenance=provenance,
        extra_tables=[t for t in (claims_table(document), tuning_table(document)) if t],
    )
