"""``train_models``: compare models and write a model directory in one call, without Prefect.

The same steps as the train flow (:mod:`flows.train_flow`, behind ``roadcast train``),
for the demo and the benchmarks: the protocol of :mod:`models.forecasters.comparison`,
then the outputs both share: bundles and ``network.json`` (:func:`write_bundles`),
``metrics.json`` and the report, staged (:func:`staged_run`) and published together with
the champion's promotion (:func:`publish_run`), so an output folder's files all come from
one run, even when a run is stopped on the way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flows.reporting.render import write_report
from flows.reporting.training import train_report
from models.forecasters.comparison import (
    Log,
    ModelResult,
    TrainPlan,
    check_graphs,
    check_readings,
    fit_seeds,
    metrics_document,
    refuse_unsupported,
    split_panel,
    validation_notes,
)
from models.forecasters.tuning import Budget, tune_models, tuned_plan
from models.panel import SensorPanel, Split
from pipeline.folder_lock import folder_lock
from pipeline.model_dir import (
    BUNDLES,
    Champion,
    ChampionError,
    choose_champion,
    write_json,
    write_network,
)
from pipeline.registry.versions import new_run_id


def train_models(
    panel: SensorPanel,
    plan: TrainPlan,
    out: str | Path,
    *,
    dataset: str | None = None,
    report: bool = True,
    tune: Budget | None = None,
    log: Log = print,
) -> dict[str, Any]:
    """Fit, backtest and compare ``plan.models`` on ``panel``; write everything to ``out``.

    The same steps as the train flow, without Prefect: registers a version of each model
    (best-validation seed) in ``out/bundles`` and serves them (:func:`write_bundles`,
    :func:`promote_champion`), writes ``out/bundles/champion.json``,
    ``out/bundles/network.json``, ``out/metrics.json`` and, with ``report``,
    ``out/report.md`` and ``out/report.html``.
    With ``tune``, each model's settings are first searched on the validation part
    (:mod:`models.forecasters.tuning`) and the chosen ones are trained and recorded.
    Returns the metrics document (``metrics.json``'s content).

    Raises
    ------
    ValueError
        For a model that needs a road graph on a panel without one, or a panel too
        short for the split and windows.
    """
    check_out_dir(out)
    check_same_network(out, panel)  # again under the lock, before anything is written
    split = split_panel(panel, plan)  # a panel too short says so before its sensors are judged
    for note in [*check_readings(panel), *check_graphs(panel, plan)]:
        log(note)
    refuse_unsupported(split, plan)
    log(f"{dataset or panel.name}: {panel.n_nodes} sensors, split {split.sizes()}")
    for note in validation_notes(split, plan):
        log(note)
    tuned = tune_models(split, plan, tune, log=log) if tune is not None else {}
    plan = tuned_plan(plan, tuned)
    results: dict[str, ModelResult] = {}
    for name in plan.models:
        log(f"{name}:")
        results[name] = fit_seeds(name, panel, split, plan, log)
    document = metrics_document(
        results, panel, split, plan, dataset, {n: r.to_dict() for n, r in tuned.items()}
    )
    run_id = new_run_id()
    with output_lock(out, log=log), staged_run(out) as stage:
        check_same_network(out, panel)
        bundles = write_bundles(results, document, panel, out, run_id=run_id)
        write_json(stage / METRICS, document)
        try:
            champion: str | None = choose_champion(document).champion
        except ChampionError as exc:
            log(f"no champion promoted: {exc}")
            champion = None
        if report:
            write_report(stage, train_report(document, results, panel, plan, champion, out))
        with deferred_stop():  # the served set and its alert detector change together
            with contextlib.suppress(ChampionError):  # logged above; served all the same
                promote_champion(document, bundles, run_id=run_id)
            publish_run(stage, out)
            if champion is not None:
                calibrate_alerts(bundles, panel, split, log)
    return document


METRICS = "metrics.json"
STAGE_PREFIX = ".run-"


@contextlib.contextmanager
def staged_run(out: str | Path) -> Iterator[Path]:
    """A staging folder in ``out`` for the run's ``metrics.json`` and report, removed on
    leaving (with the stages of runs killed before they published: the caller holds
    :func:`output_lock`, so no other run is using them)."""
    out = Path(out)
    for stale in out.glob(f"{STAGE_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    stage = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=out))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def publish_run(stage: Path, out: str | Path) -> None:
    """Move every file of ``stage`` to the same place in ``out`` (renames, no copies)."""
    for path in sorted(stage.rglob("*")):
        if path.is_file():
            target = Path(out) / path.relative_to(stage)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)


@contextlib.contextmanager
def deferred_stop() -> Iterator[None]:
    """SIGINT and SIGTERM held back while inside, then delivered: a run stopped while it
    promotes, publishes and calibrates the served model's alert detector stops after,
    not between them (main thread only; elsewhere a signal cannot arrive as an
    exception)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {stop: signal.signal(stop, lambda sig, _: caught.append(sig)) for stop in stops}
    try:
        yield
    finally:
        for stop, handler in previous.items():
            signal.signal(stop, signal.SIG_DFL if handler is None else handler)
        for sig in dict.fromkeys(caught):
            signal.raise_signal(sig)


# How long a run waits for another run writing into the same output folder.
OUT_LOCK_WAIT_S = 600.0


@contextlib.contextmanager
def output_lock(
    out: str | Path, *, wait_s: float | None = None, log: Log = print
) -> Iterator[None]:
    """Hold the output folder ``out`` (created here; ``flock`` on the folder itself) while
    a run writes its versions, ``metrics.json``, report and serving set, so that two runs
    into one folder write one after the other and its files all come from one run.

    Raises
    ------
    ValueError
        When another run keeps writing there for over ``wait_s`` seconds (default
        :data:`OUT_LOCK_WAIT_S`).
    """
    wait_s = OUT_LOCK_WAIT_S if wait_s is None else wait_s
    Path(out).mkdir(parents=True, exist_ok=True)

    def waiting() -> None:
        log(f"--out {out}: another run is writing there; waiting for it to finish")

    busy = (
        f"--out {out}: another run has been writing its models there for over {wait_s:g} s; "
        "train into another --out folder, or again once it is done"
    )
    with folder_lock(out, wait_s, lambda: ValueError(busy), poll_s=0.2, on_wait=waiting):
        yield


def check_out_dir(out: str | Path) -> None:
    """Refuse, before any training, an output folder that cannot be written: a file, a
    path through a file, a folder without write permission, or one where a file stands in
    place of a folder the run writes, or the reverse (:data:`RUN_ENTRIES`).

    Raises
    ------
    ValueError
        For an empty name (which would mean the current folder).
    NotADirectoryError, PermissionError, FileExistsError
        Naming the folder given as ``--out``.
    """
    out = check_writable(out)
    for name, is_folder in RUN_ENTRIES.items():
        entry = out / name
        if entry.exists() and entry.is_dir() != is_folder:
            kind, wanted = ("a file", "folder") if is_folder else ("a folder", "file")
            raise FileExistsError(
                f"--out {out}: {entry} is {kind} where the run writes its {wanted}; move it "
                "or choose another --out"
            )


def check_writable(out: str | Path) -> Path:
    """``out`` as a path, refused (see :func:`check_out_dir`) unless it is a folder, or can
    be made one, where files can be written: its first existing folder is tried by making
    and removing a folder in it (a file system such as /proc refuses what permissions allow).
    """
    if not str(out).strip():
        raise ValueError("--out is empty; name the output folder")
    out = Path(out)
    for folder in (out, *out.parents):
        if folder.exists():
            break
    if not folder.is_dir():
        where = "" if folder == out else f": {folder} is a file"
        raise NotADirectoryError(f"--out {out} is not a folder{where}")
    if os.statvfs(folder).f_flag & os.ST_RDONLY:
        raise PermissionError(f"--out {out}: {folder} is on a read-only file system")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"--out {out}: no permission to write in {folder}")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".roadcast-try-", dir=folder))
    except OSError as exc:
        raise PermissionError(
            f"--out {out}: cannot write in {folder} ({exc.strerror or exc})"
        ) from None
    return out


# What a run writes in its output folder: name -> whether it is a folder.
RUN_ENTRIES = {
    "bundles": True,
    "figures": True,
    "metrics.json": False,
    "report.md": False,
    "report.html": False,
}


def check_same_network(out: str | Path, panel: SensorPanel) -> None:
    """Refuse, before any training, to register models of ``panel`` in a folder that holds
    another network's: they would replace its serving set and its ``network.json``, and
    no rollback could bring the earlier set back.

    Raises
    ------
    ValueError
        Naming both networks and what to do.
    """
    from pipeline.model_dir import bundles_dir, read_network

    network = read_network(out)
    if network is None or set(network.sensor_ids) == set(panel.sensor_ids):
        return
    held, given = set(network.sensor_ids), set(panel.sensor_ids)
    only_held = sorted(held - given)
    only_given = sorted(given - held)
    differ = "; ".join(
        f"{what}: {', '.join(repr(s[:40]) for s in ids[:3])}{' ...' if len(ids) > 3 else ''}"
        for what, ids in (("only in the folder", only_held), ("only in the data", only_given))
        if ids
    )
    raise ValueError(
        f"--out {out} holds models of another network ({len(held)} sensors, this data "
        f"{len(given)}; {differ}); train into another --out folder, or move "
        f"{bundles_dir(out)} away to start its registry afresh"
    )


def calibrate_alerts(bundles: Path, panel: SensorPanel, split: Split, log: Log = print) -> None:
    """Save the service's interval detector, calibrated on the served forecaster's
    validation residuals (:func:`pipeline.alerts.saved.calibrate_served`). A failure is
    logged, not raised: the models are served, and the service then calibrates on the
    stream."""
    from pipeline.alerts.saved import calibrate_served

    try:
        name, path = calibrate_served(bundles, panel, split.train, split.valid)
    except Exception as exc:  # alerting must not cost the run its trained models
        log(
            f"alerts: no interval detector saved ({type(exc).__name__}: {exc}); the service "
            "will calibrate it on the stream's first forecasts"
        )
        return
    log(f"alerts: interval detector calibrated on {name}'s validation residuals -> {path}")


def promote_champion(
    document: dict[str, Any], bundles: str | Path, *, run_id: str | None = None
) -> str:
    """Serve the versions of ``document``'s models that run ``run_id`` registered (the
    newest of each when None), with the champion chosen on validation scores
    (``champion.json``); returns the champion's name.

    Raises
    ------
    ChampionError
        When no model has a validation score; the versions are served all the same.
    """
    try:
        champion = choose_champion(document)
    except ChampionError:
        serve_run(document, bundles, run_id, None)
        raise
    serve_run(document, bundles, run_id, champion)
    return champion.champion


def serve_run(
    document: dict[str, Any], bundles: str | Path, run_id: str | None, champion: Champion | None
) -> dict[str, str]:
    """Make the versions of ``document``'s models that its run wrote (``document["versions"]``,
    else those registered under ``run_id``, else the newest) the serving set, with
    ``champion``; returns ``{model: version}``."""
    from pipeline.registry.serving import promote
    from pipeline.registry.versions import versions_of_run

    ran = versions_of_run(bundles, run_id) if run_id is not None else {}
    written = document.get("versions") or {}
    chosen = {
        name: written.get(name) or (ran[name].version if name in ran else None)
        for name in document["models"]
    }
    reason = f"train run {run_id}" if run_id is not None else "trained"
    return promote(bundles, chosen, champion=champion, replace=True, reason=reason).models


def write_bundles(
    results: dict[str, ModelResult],
    document: dict[str, Any],
    panel: SensorPanel,
    out: str | Path,
    *,
    run_id: str | None = None,
    label: str | None = None,
) -> Path:
    """A new version of each model (its best-validation seed) in the registry of
    ``out/bundles`` (:mod:`pipeline.registry.versions`), recorded in
    ``document["versions"]``, and ``out/bundles/network.json`` (sensors and coordinates);
    returns the bundles folder.

    Versions are registered atomically and served only once promoted
    (:func:`promote_champion`), so a service reading the folder never sees half of one.
    ``run_id`` and ``label`` are recorded with each version (default: a new id, and the
    data set with the UTC date).
    """
    from pipeline.registry.versions import register

    out = Path(out)
    bundles = out / BUNDLES
    label = label or f"{document.get('dataset') or panel.name} {time.strftime('%Y-%m-%d')}"
    run_id = run_id or new_run_id()
    # The versions go into the document (and metrics.json): a bundle identical to one an
    # earlier run registered keeps that run's record, so the run id cannot find it.
    document["versions"] = {
        name: register(bundles, result.best.model, label=label, run_id=run_id).version
        for name, result in results.items()
    }
    write_network(bundles, panel)
    return bundles
