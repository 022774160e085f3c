"""``train_flow``: fit, backtest and compare models as a Prefect flow (``roadcast train``).

load -> split -> one task per model fit (its seeds) -> one backtest task per model ->
comparison (``metrics.json``) -> bundles written -> champion promoted -> report.

* Each task wires one step of :mod:`models.forecasters.comparison` (the protocol),
  :mod:`flows.train_models` (bundles), :mod:`pipeline.model_dir` (the champion) or
  :mod:`flows.reporting` (the report); the flow re-implements none of them.
* The model tasks run one after the other, so that each reports its own fit time
  (fits sharing the cores would each report the time of both). Neural fits on CUDA
  hold a slot of the Prefect global concurrency limit ``gpu`` (:mod:`flows.gpu`),
  which serialises GPU training across flow runs and workers.
* Retries only on I/O (reading the data set, writing bundles and the report), and
  only for failures that can pass (:mod:`flows.io_tasks`). A fit that failed would
  fail again.
* No caching: the inputs are panels and fitted models, which Prefect cannot hash
  (``cache_policy=NONE``); results stay in memory.
* The champion is the best *validation* score (:func:`pipeline.model_dir.choose_champion`);
  the test part only reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from flows.artifacts import KEYS, publish_markdown, publish_table
from flows.io_tasks import IO_TASK, load_data
from flows.reporting.render import artifact_markdown, comparison_records, write_report
from flows.reporting.training import train_report
from flows.train_models import write_bundles
from models.forecasters.comparison import (
    FitRun,
    ModelResult,
    TrainPlan,
    backtest_runs,
    check_graphs,
    fit_runs,
    metrics_document,
    parse_models,
    split_panel,
)
from models.panel import SensorPanel, Split
from pipeline.model_dir import Champion, choose_champion, promote

DEFAULT_MODELS = ("persistence", "seasonal", "ar", "lstm", "gru")


@task(name="split", cache_policy=NONE)
def split_task(panel: SensorPanel, plan: TrainPlan) -> Split:
    """The protocol's chronological split; refuses graph models on graphless data first."""
    check_graphs(panel, plan)
    return split_panel(panel, plan)


@task(name="fit-model", task_run_name="fit-{name}", cache_policy=NONE)
def fit_task(name: str, split: Split, plan: TrainPlan) -> list[FitRun]:
    """Every seed of ``name`` fitted and scored on validation (a CUDA fit holds a GPU slot)."""
    from flows.gpu import training_slot
    from models.forecasters.factory import is_stochastic
    from models.nn.devices import resolve_device

    device = resolve_device(plan.device).type if is_stochastic(name) else "cpu"
    with training_slot(device):
        return fit_runs(name, split, plan, log=get_run_logger().info)


@task(name="backtest-model", task_run_name="backtest-{name}", cache_policy=NONE)
def backtest_task(
    name: str, runs: list[FitRun], panel: SensorPanel, split: Split, plan: TrainPlan
) -> ModelResult:
    """Every fitted seed of ``name`` scored on the test part."""
    return backtest_runs(name, runs, panel, split, plan, log=get_run_logger().info)


@task(name="compare", cache_policy=NONE)
def compare_task(
    results: dict[str, ModelResult], panel: SensorPanel, split: Split, plan: TrainPlan,
    dataset: str,
) -> dict[str, Any]:  # fmt: skip
    """The ``metrics.json`` document."""
    return metrics_document(results, panel, split, plan, dataset)


@task(name="write-bundles", **IO_TASK)
def write_bundles_task(
    results: dict[str, ModelResult], document: dict[str, Any], panel: SensorPanel, out: str
) -> Path:
    """Bundles (atomically, one per model), ``metrics.json`` and ``network.json``."""
    return write_bundles(results, document, panel, out)


@task(name="promote-champion", **IO_TASK)
def promote_task(document: dict[str, Any], bundles: Path) -> Champion:
    """Choose the champion on validation scores, record it, and publish the candidates."""
    champion = choose_champion(document)
    promote(bundles, champion)
    ranked = sorted(champion.scores.items(), key=lambda kv: (kv[1] is None, kv[1] or 0.0, kv[0]))
    rows = [
        {
            "model": name,
            "role": "champion" if name == champion.champion else "challenger",
            "validation RMSE": score,
        }
        for name, score in ranked
    ]
    publish_table(KEYS["champion"], rows, description=f"Champion: {champion.metric}")
    return champion


@task(name="write-report", **IO_TASK)
def report_task(
    document: dict[str, Any],
    results: dict[str, ModelResult],
    panel: SensorPanel,
    plan: TrainPlan,
    champion: str,
    out: str,
) -> dict[str, str]:
    """``report.html``, ``report.md`` and ``figures/`` in ``out``, plus the artifacts."""
    report = train_report(document, results, panel, plan, champion, out)
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
    from models.nn.devices import resolve_device
    from pipeline.settings import load_settings

    names = parse_models(models) if isinstance(models, str) else tuple(dict.fromkeys(models))
    plan = TrainPlan(
        models=names, window=window, horizon=horizon, seeds=seeds, epochs=epochs,
        device=device, test=test, valid=valid, progress=progress,
    )  # fmt: skip
    resolve_device(device)  # fail before loading anything when CUDA is asked for and absent
    folder = str(out or load_settings().model_dir)
    panel = load_data(data, adjacency, data_dir)
    split = split_task(panel, plan)
    print(f"{data}: {panel.n_nodes} sensors, split {split.sizes()}")
    results = {
        name: backtest_task(name, fit_task(name, split, plan), panel, split, plan)
        for name in plan.models
    }
    document = compare_task(results, panel, split, plan, data)
    bundles = write_bundles_task(results, document, panel, folder)
    champion = promote_task(document, bundles)
    paths = report_task(document, results, panel, plan, champion.champion, folder)
    print(f"champion: {champion.champion} ({champion.metric}); report: {paths['html']}")
    return {
        "document": document,
        "champion": champion.champion,
        "out": folder,
        "report": paths["html"],
    }
