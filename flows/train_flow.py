"""``train_flow``: fit, backtest and compare models as a Prefect flow (``roadcast train``).

load -> split -> one task per model (its fits, one per seed, each backtested on the test
part) -> comparison (``metrics.json``) -> bundles written -> champion promoted -> report.

* It wires :mod:`flows.train` (the protocol: split, seeds, best-validation bundle,
  ``metrics.json``), :mod:`flows.model_dir` (champion, network) and
  :mod:`flows.forecast_report` (the report); it re-implements none of them.
* The model tasks run one after the other: each reports its fit time, and fits sharing
  the cores (or the GIL) would report the sum of both (measured on this 2-core machine:
  AR's fit on los-loop took 318 s next to a GRU fit in another thread, 5 s alone).
  Neural fits on CUDA also hold a slot of the Prefect global concurrency limit ``gpu``
  (:mod:`flows.gpu`), which serialises GPU training across flow runs and workers.
* Retries only where a retry can help: reading the data set and writing files. A fit
  that failed would fail again.
* No caching: the inputs are panels and fitted models, which Prefect cannot hash
  (``cache_policy=NONE``); results stay in memory.
* The champion is the best *validation* score (:func:`flows.model_dir.choose_champion`);
  the test part only reports.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from flows.artifacts import KEYS, publish_markdown, publish_table
from flows.forecast_report import (
    Report,
    artifact_markdown,
    build_report,
    comparison_records,
    write_report,
)
from flows.model_dir import BUNDLES, Champion, choose_champion, promote, write_network
from flows.report import horizon_label
from flows.train import ModelResult, TrainPlan, fit_seeds, parse_models, split_panel, summarise
from models.panel import SensorPanel, Split

DEFAULT_MODELS = ("persistence", "seasonal", "ar", "lstm", "gru")


@task(name="load-data", retries=2, retry_delay_seconds=5, cache_policy=NONE)
def load_panel(data: str, adjacency: str | None, data_dir: str | None) -> SensorPanel:
    """The data set (retried: reading files is I/O)."""
    from pipeline.datasets import load_dataset

    return load_dataset(
        data,
        data_dir=Path(data_dir) if data_dir else None,
        adjacency=Path(adjacency) if adjacency else None,
    )


@task(name="split", cache_policy=NONE)
def split_task(panel: SensorPanel, plan: TrainPlan) -> Split:
    """The protocol's chronological split (validation = the end of the training part)."""
    for name in plan.models:
        from models.registry import MODELS

        if MODELS[name].USES_GRAPH and panel.graph is None:
            raise ValueError(
                f"{name} needs a road graph and {panel.name or 'this data set'} has none; "
                "pass an adjacency file or drop it from the models"
            )
    return split_panel(panel, plan)


@task(name="fit-model", task_run_name="fit-{name}", cache_policy=NONE)
def fit_model(name: str, panel: SensorPanel, split: Split, plan: TrainPlan) -> ModelResult:
    """Every seed of ``name`` fitted and backtested (a neural fit on CUDA holds a GPU slot)."""
    from flows.gpu import training_slot
    from models.factory import is_stochastic
    from models.training import resolve_device

    log = get_run_logger()
    device = resolve_device(plan.device).type if is_stochastic(name) else "cpu"
    with training_slot(device):
        return fit_seeds(name, panel, split, plan, log=log.info)


@task(name="compare", cache_policy=NONE)
def compare(
    results: dict[str, ModelResult], panel: SensorPanel, split: Split, plan: TrainPlan,
    dataset: str,
) -> dict[str, Any]:  # fmt: skip
    """The ``metrics.json`` document: every model's test metrics, means over seeds."""
    from flows.train import _json_ready

    return _json_ready(
        {
            "dataset": dataset,
            "window": plan.window,
            "horizon": plan.horizon,
            "freq_minutes": panel.freq.total_seconds() / 60.0,
            "split": split.sizes(),
            "models": {name: summarise(result) for name, result in results.items()},
        }
    )


@task(name="write-bundles", retries=2, retry_delay_seconds=5, cache_policy=NONE)
def write_bundles(
    results: dict[str, ModelResult], document: dict[str, Any], panel: SensorPanel, out: str
) -> Path:
    """Each model's best-validation bundle, ``metrics.json`` and ``network.json``.

    Bundles are written atomically, one by one, so a service reading the folder sees
    either the old or the new bundle of a model, never half of one.
    """
    folder = Path(out)
    for name, result in results.items():
        result.best.model.save(folder / BUNDLES / name)
    (folder / "metrics.json").write_text(json.dumps(document, indent=2) + "\n")
    write_network(folder / BUNDLES, panel)
    return folder / BUNDLES


@task(name="promote-champion", retries=2, retry_delay_seconds=5, cache_policy=NONE)
def promote_champion(document: dict[str, Any], bundles: Path) -> Champion:
    """Choose the champion on validation scores and record it in ``champion.json``."""
    champion = choose_champion(document)
    promote(bundles, champion)
    rows = [
        {
            "model": name,
            "role": "champion" if name == champion.champion else "challenger",
            "validation RMSE": score,
        }
        for name, score in sorted(
            champion.scores.items(), key=lambda kv: (kv[1] is None, kv[1] or 0.0, kv[0])
        )
    ]
    publish_table(KEYS["champion"], rows, description=f"Champion: {champion.metric}")
    return champion


def train_report(
    document: dict[str, Any],
    results: dict[str, ModelResult],
    panel: SensorPanel,
    plan: TrainPlan,
    champion: str | None,
    out: str,
) -> Report:
    """The forecast report of a training run (test-part backtests)."""
    freq = float(document["freq_minutes"])
    split = document["split"]
    devices = sorted({str(e.get("device")) for e in document["models"].values()})
    facts = [
        ("data set", str(document["dataset"])),
        ("sensors", f"{panel.n_nodes:,}"),
        ("split (steps)", ", ".join(f"{k} {v}" for k, v in split.items())),
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
    provenance = [
        (
            "data",
            f"{document['dataset']}: {panel.n_time:,} steps from "
            f"{panel.timestamps[0]:%Y-%m-%d %H:%M} to {panel.timestamps[-1]:%Y-%m-%d %H:%M} "
            f"UTC, {panel.missing_share:.2%} missing",
        ),
        ("data fingerprint", panel.fingerprint()[:16]),
        ("models", ", ".join(plan.models)),
        ("seeds per neural model", str(plan.seeds)),
        ("max epochs", "model default" if plan.epochs is None else str(plan.epochs)),
        ("test / validation share", f"{plan.test:g} / {plan.valid:g}"),
        ("output", out),
        ("champion chosen by", "lowest validation RMSE (flows.model_dir)"),
    ]
    return build_report(
        title=f"Forecast comparison: {document['dataset']}",
        what="test part",
        document=document,
        backtests={name: r.best.test for name, r in results.items()},
        panel=panel,
        champion=champion,
        facts=facts,
        intro=intro,
        coords=panel.coords,
        provenance=provenance,
    )


@task(name="write-report", retries=2, retry_delay_seconds=5, cache_policy=NONE)
def write_train_report(out: str, report: Report) -> dict[str, str]:
    """``report.html``, ``report.md`` and ``figures/`` in ``out``, plus the artifacts."""
    md, page = write_report(out, report)
    publish_table(
        KEYS["train_comparison"], comparison_records(report), description=report.comparison.title
    )
    publish_markdown(KEYS["train_report"], artifact_markdown(report, page), report.title)
    return {"html": str(page), "markdown": str(md)}


@flow(name="roadcast-train", log_prints=True)
def train_flow(
    data: str = "los-loop",
    models: Sequence[str] | str = DEFAULT_MODELS,
    window: int = 12,
    horizon: int = 12,
    seeds: int = 3,
    device: str = "auto",
    epochs: int | None = None,
    test: float = 0.2,
    valid: float = 0.1,
    out: str | None = None,
    adjacency: str | None = None,
    data_dir: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Fit, backtest and compare ``models`` on ``data``; write bundles, promote a champion.

    Parameters
    ----------
    data : a data set spec (``los-loop``, ``metr-la``, ``csv:PATH``, ``simulated:...``).
    models : model names (a list, or ``"persistence,ar,lstm"``).
    window, horizon : input steps and forecast steps.
    seeds : fits per neural model (metrics averaged; the best-validation seed is kept).
    device : ``auto``, ``cpu`` or ``cuda``.
    epochs : maximum epochs of neural models (None: each model's default).
    test, valid : the test share of the data, the validation share of the training part.
    out : output folder; default ``ROADCAST_MODEL_DIR`` (bundles in ``out/bundles``).
    adjacency, data_dir : for ``csv:PATH`` data and the data directory.
    progress : progress bars (off in deployments: logs are the UI there).

    Returns ``{"document": metrics.json, "champion": name, "out": folder, "report": path}``.
    """
    from models.training import resolve_device
    from pipeline.settings import load_settings

    names = parse_models(models) if isinstance(models, str) else tuple(dict.fromkeys(models))
    plan = TrainPlan(
        models=names, window=window, horizon=horizon, seeds=seeds, epochs=epochs,
        device=device, test=test, valid=valid, progress=progress,
    )  # fmt: skip
    resolve_device(device)  # fail before loading anything when CUDA is asked for and absent
    folder = str(out or load_settings().model_dir)
    panel = load_panel(data, adjacency, data_dir)
    split = split_task(panel, plan)
    print(f"{data}: {panel.n_nodes} sensors, split {split.sizes()}")
    results = {name: fit_model(name, panel, split, plan) for name in plan.models}
    document = compare(results, panel, split, plan, data)
    bundles = write_bundles(results, document, panel, folder)
    champion = promote_champion(document, bundles)
    report = train_report(document, results, panel, plan, champion.champion, folder)
    paths = write_train_report(folder, report)
    print(f"champion: {champion.champion} ({champion.metric}); report: {paths['html']}")
    return {
        "document": document,
        "champion": champion.champion,
        "out": folder,
        "report": paths["html"],
    }
