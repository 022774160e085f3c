"""``train_flow``: fit, backtest and compare models as a Prefect flow (``roadcast train``).

load -> split -> (with ``tune``: one task per model searching its settings, one task per
trial) -> one task per model fit (its seeds) -> one backtest task per model -> comparison
(``metrics.json``) -> model versions registered -> report -> champion chosen and the
versions served (:mod:`pipeline.registry`; ``promote=False`` only registers them): a run
that fails before its end serves nothing new.

* Each task wires one step of :mod:`models.forecasters.comparison` (the protocol),
  :mod:`flows.train_models` (bundles), :mod:`pipeline.model_dir` (the champion) or
  :mod:`flows.reporting` (the report); the flow re-implements none of them.
* The model tasks run one after the other, so that each reports its own fit time
  (fits sharing the cores would each report the time of both), unless
  ``ROADCAST_DASK_ADDRESS`` names a Dask cluster (or ``local``): then the fits and the
  per-model tuning run side by side on it through prefect-dask (:mod:`flows.fanout`).
  Neural fits on CUDA hold a slot of the Prefect global concurrency limit ``gpu``
  (:mod:`flows.gpu`), which serialises GPU training across flow runs, workers and
  Dask workers.
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
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from flows.artifacts import KEYS, publish_markdown, publish_table
from flows.fanout import dask_runner, fan_out, started
from flows.io_tasks import IO_TASK, load_data
from flows.reporting.render import artifact_markdown, comparison_records, write_report
from flows.reporting.training import train_report
from flows.train_models import (
    METRICS,
    calibrate_alerts,
    check_out_dir,
    check_same_network,
    deferred_stop,
    output_lock,
    publish_run,
    serve_run,
    staged_run,
    write_bundles,
)
from models.forecasters.comparison import (
    FitRun,
    ModelResult,
    TrainPlan,
    backtest_runs,
    check_graphs,
    check_readings,
    fit_runs,
    metrics_document,
    parse_models,
    refuse_unsupported,
    split_panel,
    unsupported,
    validation_notes,
)
from models.forecasters.factory import is_stochastic
from models.forecasters.tuning import (
    Budget,
    TuneResult,
    check_validation,
    parse_budget,
    run_trial,
    time_shares,
    tunable,
    tune_model,
    tune_models,
    tuned_plan,
)
from models.panel import SensorPanel, Split
from pipeline.model_dir import Champion, choose_champion, write_json

if TYPE_CHECKING:
    import optuna
    from prefect.task_runners import TaskRunner

DEFAULT_MODELS = ("persistence", "seasonal", "ar", "lstm", "gru", "tgclstm")


def _tune_submit(
    name: str, split: Split, plan: TrainPlan, budget: Budget, *, seconds: float | None, log: Any
) -> TuneResult:
    """The tuning of one model as a Prefect task (``log`` is the task's logger there)."""
    del log
    return tune_task(name, split, plan, budget, seconds)


def _tune_all(
    split: Split, plan: TrainPlan, budget: Budget, runner: TaskRunner | None
) -> dict[str, TuneResult]:
    """Every tunable model's search: one after the other here, or side by side on the
    Dask cluster (each model's trials stay in order: Optuna's sampler learns from them)."""
    if runner is None:
        return tune_models(split, plan, budget, tuner=_tune_submit, log=print)
    names = [n for n in plan.models if tunable(n)]
    if not names:
        return tune_models(split, plan, budget, log=print)  # says there is nothing to tune
    check_validation(split, plan)
    share = time_shares(budget, names)
    calls = {
        n: {"name": n, "split": split, "plan": plan, "budget": budget, "seconds": share}
        for n in names
    }
    return fan_out(runner, tune_task, calls)


@task(name="split", cache_policy=NONE)
def split_task(panel: SensorPanel, plan: TrainPlan, asked: bool = True) -> Split:
    """The protocol's chronological split; refuses graph models on graphless data first
    when the user ``asked`` for them, and a validation part shorter than the horizon (no
    model could be scored there, so the run would fail choosing its champion after
    writing the versions)."""
    split = split_panel(panel, plan)  # a panel too short says so before its sensors are judged
    for note in [*check_readings(panel), *check_graphs(panel, plan, asked=asked)]:
        get_run_logger().warning(note)
    if split.valid.n_time < plan.horizon:
        raise ValueError(
            f"the validation part has {split.valid.n_time} steps, fewer than --horizon "
            f"{plan.horizon}: no model can be scored there or chosen as champion; raise "
            f"--valid (now {plan.valid}), use more data or a shorter --horizon"
        )
    for note in validation_notes(split, plan):
        get_run_logger().warning(note)
    return split


@task(name="fit-model", task_run_name="fit-{name}", cache_policy=NONE)
def fit_task(name: str, split: Split, plan: TrainPlan) -> list[FitRun]:
    """Every seed of ``name`` fitted and scored on validation (a CUDA fit holds a GPU slot)."""
    from flows.gpu import training_slot
    from models.forecasters.factory import is_stochastic
    from models.nn.devices import resolve_device

    device = resolve_device(plan.device).type if is_stochastic(name) else "cpu"
    with training_slot(device):
        return fit_runs(name, split, plan, log=get_run_logger().info)


@task(name="tune-trial", task_run_name="trial-{name}-{number}", cache_policy=NONE)
def trial_task(
    name: str, number: int, trial: optuna.Trial, split: Split, plan: TrainPlan
) -> dict[str, Any]:
    """One trial of ``--tune``: its validation RMSE, or the epoch it was pruned at."""
    import optuna

    try:
        return {"value": run_trial(name, trial, split, plan)}
    except optuna.TrialPruned as exc:
        return {"pruned": str(exc)}


@task(name="tune-model", task_run_name="tune-{name}", cache_policy=NONE)
def tune_task(
    name: str, split: Split, plan: TrainPlan, budget: Budget, seconds: float | None
) -> TuneResult:
    """Search ``name``'s settings on the validation part; each trial is a task."""
    import optuna

    def run(name: str, trial: optuna.Trial, split: Split, plan: TrainPlan) -> float:
        outcome = trial_task(name, trial.number, trial, split, plan)
        if "pruned" in outcome:
            raise optuna.TrialPruned(outcome["pruned"])
        return float(outcome["value"])

    from flows.gpu import training_slot
    from models.nn.devices import resolve_device

    device = resolve_device(plan.device).type if is_stochastic(name) else "cpu"
    with training_slot(device):
        return tune_model(
            name, split, plan, budget, seconds=seconds, run=run, log=get_run_logger().info
        )


@task(name="backtest-model", task_run_name="backtest-{name}", cache_policy=NONE)
def backtest_task(
    name: str, runs: list[FitRun], panel: SensorPanel, split: Split, plan: TrainPlan
) -> ModelResult:
    """Every fitted seed of ``name`` scored on the test part."""
    return backtest_runs(name, runs, panel, split, plan, log=get_run_logger().info)


@task(name="compare", cache_policy=NONE)
def compare_task(
    results: dict[str, ModelResult], panel: SensorPanel, split: Split, plan: TrainPlan,
    dataset: str, tuning: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The ``metrics.json`` document."""
    return metrics_document(results, panel, split, plan, dataset, tuning)


@task(name="write-bundles", **IO_TASK)
def write_bundles_task(
    results: dict[str, ModelResult], document: dict[str, Any], panel: SensorPanel, out: str,
    run_id: str, label: str | None, stage: Path,
) -> Path:  # fmt: skip
    """A registered version per model (atomically) and ``network.json``; ``metrics.json``
    in ``stage``."""
    bundles = write_bundles(results, document, panel, out, run_id=run_id, label=label)
    write_json(stage / METRICS, document)
    return bundles


@task(name="promote-champion", **IO_TASK)
def promote_task(
    document: dict[str, Any], bundles: Path, run_id: str, serve: bool = True
) -> Champion:
    """Choose the champion on validation scores; with ``serve``, make this run's versions
    the serving set (a running service swaps them in); publish the candidates."""
    champion = choose_champion(document)
    if serve:
        versions = serve_run(document, bundles, run_id, champion)
        get_run_logger().info(f"serving {versions} (run {run_id})")
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


@task(name="calibrate-alerts", cache_policy=NONE)
def calibrate_task(bundles: Path, panel: SensorPanel, split: Split) -> None:
    """The service's interval detector, calibrated on the served forecaster's validation
    residuals and saved beside the bundles."""
    calibrate_alerts(bundles, panel, split, log=get_run_logger().info)


@task(name="write-report", **IO_TASK)
def report_task(
    document: dict[str, Any],
    results: dict[str, ModelResult],
    panel: SensorPanel,
    plan: TrainPlan,
    champion: str,
    out: str,
    stage: Path,
) -> dict[str, str]:
    """``report.html``, ``report.md`` and ``figures/`` in ``stage``, plus the artifacts;
    returns where they will be in ``out`` once published."""
    report = train_report(document, results, panel, plan, champion, out)
    md, page = (Path(out) / p.relative_to(stage) for p in write_report(stage, report))
    publish_table(
        KEYS["train_comparison"], comparison_records(report), description=report.comparison.title
    )
    publish_markdown(KEYS["train_report"], artifact_markdown(report, page), report.title)
    return {"html": str(page), "markdown": str(md)}


def _supported(plan: TrainPlan, split: Split) -> TrainPlan:
    """``plan`` without the models ``split`` cannot support, each left out with a note."""
    reasons = {name: why for name in plan.models if (why := unsupported(name, split, plan))}
    for name, why in reasons.items():
        print(f"left out {name}: {why}")
    kept = tuple(name for name in plan.models if name not in reasons)
    if not kept:
        raise ValueError(
            "no model can be trained on this data: "
            + "; ".join(f"{name}: {why}" for name, why in reasons.items())
        )
    return replace(plan, models=kept)


@flow(name="roadcast-train", log_prints=True)
def train_flow(
    data: str = "los-loop",
    models: Sequence[str] | str | None = None,
    window: int = 12,
    horizon: int = 12,
    seeds: int = 3,
    device: str = "auto",
    epochs: int | None = None,
    epoch_windows: int | None = None,
    test: float = 0.2,
    valid: float = 0.1,
    out: str | None = None,
    adjacency: str | None = None,
    data_dir: str | None = None,
    progress: bool = False,
    tune: str | None = None,
    index_col: str | None = None,
    no_index: bool = False,
    timezone: str | None = None,
    label: str | None = None,
    promote: bool = True,
) -> dict[str, Any]:
    """Fit, backtest and compare ``models`` on ``data``; write bundles, promote a champion.

    Parameters
    ----------
    data : a data set spec (``los-loop``, ``metr-la``, ``csv:PATH``, ``simulated:...``).
    models : model names (a list, or ``"persistence,ar,lstm"``); None: :data:`DEFAULT_MODELS`
        less those the data cannot support (a seasonal model on less than a day of data,
        TGC-LSTM without a road graph),
        each named with the reason. A model asked for by name that cannot run is an error.
    window, horizon : input steps and forecast steps.
    seeds : fits per neural model (metrics averaged; the best-validation seed is kept).
    device : ``auto``, ``cpu`` or ``cuda``.
    epochs : maximum epochs of neural models (None: each model's default).
    epoch_windows : training windows per epoch of neural models at most, a fresh draw
        each epoch (None: every window; for long histories on the CPU).
    test, valid : the test share of the data, the validation share of the training part.
    out : output folder; default ``ROADCAST_MODEL_DIR`` (bundles in ``out/bundles``).
    adjacency, data_dir : for a file's data (``csv:``, ``npz:``, ``h5:``, ``parquet:``), and
        the data directory.
    progress : progress bars (off in deployments: logs are the UI there).
    tune : search each model's settings on the validation part first: trials per model
        (``"30"``) or a time for the whole search (``"20m"``); each trial is a task.
    index_col, no_index : for ``csv:PATH``, the time or row-index column, or none.
    timezone : for ``csv:``, ``h5:`` and ``parquet:`` data, the IANA time zone of
        timestamps without a UTC offset.
    label : the label of the new model versions (default: the data set and the date).
    promote : make the new versions the serving set (``serving.json``); False only
        registers them (``roadcast models promote`` serves them later).

    Returns ``{"document": metrics.json, "champion": name, "out": folder, "report": path}``.
    """
    from prefect.runtime import flow_run

    from models.nn.devices import resolve_device
    from pipeline.registry.versions import check_label, new_run_id
    from pipeline.settings import load_settings

    names: tuple[str, ...]
    if models is None:
        names = DEFAULT_MODELS
    else:
        names = parse_models(models) if isinstance(models, str) else tuple(dict.fromkeys(models))
    plan = TrainPlan(
        models=names, window=window, horizon=horizon, seeds=seeds, epochs=epochs,
        epoch_windows=epoch_windows, device=device, test=test, valid=valid, progress=progress,
    )  # fmt: skip
    resolve_device(device)  # fail before loading anything when CUDA is asked for and absent
    check_label(label)
    budget = parse_budget(tune) if tune is not None else None
    settings = load_settings()
    folder = str(settings.model_dir if out is None else out)
    check_out_dir(folder)
    runner = dask_runner(settings)  # an unreachable scheduler fails here, before any work
    panel = load_data(data, adjacency, data_dir, index_col, no_index, timezone)
    check_same_network(folder, panel)
    split = split_task(panel, plan, asked=models is not None)
    print(f"{data}: {panel.n_nodes} sensors, split {split.sizes()}")
    if models is None:
        plan = _supported(plan, split)
    else:
        refuse_unsupported(split, plan)
    tuned = {}
    with started(runner) as active:  # None: today's sequential fits
        if budget is not None:
            tuned = _tune_all(split, plan, budget, active)
            plan = tuned_plan(plan, tuned)
        calls = {name: {"name": name, "split": split, "plan": plan} for name in plan.models}
        fits = fan_out(active, fit_task, calls)
    results = {name: backtest_task(name, fits[name], panel, split, plan) for name in plan.models}
    tuning = {n: r.to_dict() for n, r in tuned.items()} or None
    document = compare_task(results, panel, split, plan, data, tuning)
    run_id = str(flow_run.get_id() or new_run_id())
    # A second run into the folder writes after this one; this one's metrics.json and
    # report are staged and published with its promotion: one that fails or is stopped
    # on the way serves nothing new and leaves the folder's files as they were.
    with output_lock(folder), staged_run(folder) as stage:
        check_same_network(folder, panel)
        bundles = write_bundles_task(results, document, panel, folder, run_id, label, stage)
        champ = choose_champion(document).champion
        paths = report_task(document, results, panel, plan, champ, folder, stage)
        with deferred_stop():  # the served set and its alert detector change together
            champion = promote_task(document, bundles, run_id, promote)
            publish_run(stage, folder)
            if promote:
                calibrate_task(bundles, panel, split)
    print(f"champion: {champion.champion} ({champion.metric}); report: {paths['html']}")
    return {
        "document": document,
        "champion": champion.champion,
        "out": folder,
        "report": paths["html"],
    }
