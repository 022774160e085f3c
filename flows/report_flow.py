"""``report_flow``: the scheduled forecast report, from what the service stored.

Every run (daily when deployed):

1. reads the period (``since``: a duration such as ``"24h"`` back from the newest
   closed tick, or a time) from the service's store;
2. scores every model's stored forecasts against the stored actual values
   (:func:`pipeline.service.store_reads.stored_backtest`: corrections applied, a forecast
   scored when all its targets are closed ticks of the period), per model, per
   horizon and per sensor;
3. summarises the alerts of the period;
4. renders the forecast report (:mod:`flows.reporting`): ``report.html``,
   ``report.md``, figures, ``live_metrics.json`` and ``sensor_errors.csv`` (model,
   horizon, sensor) in ``out``;
5. publishes the comparison table, the alerts and the Markdown report as Prefect
   artifacts (``roadcast-live-accuracy``, ``roadcast-alerts``,
   ``roadcast-live-report``).

A store whose newest closed tick is old (the service stopped, or no readings come) is
reported all the same, with a warning in the log and the report (:func:`stale_note`).

The champion (``champion.json``) picks the sensors plotted and colours the map; the
model directory also gives each model's horizon and the sensors' coordinates
(``network.json``). Without a model directory the report still scores every model in
the store, at the ``horizon`` given.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import flow, get_run_logger, task

from flows.artifacts import KEYS, publish_markdown, publish_table
from flows.io_tasks import IO_TASK, check_lengths
from flows.reporting.build import Report, build_report
from flows.reporting.render import artifact_markdown, comparison_records, write_report
from flows.reporting.tables import horizon_label, sensor_scores
from flows.reporting.text import csv_safe
from models.bundle import finite_or_none
from models.forecasters.evaluation import Backtest
from models.metrics import report_horizons, score_batch
from models.panel import SensorPanel
from pipeline.model_dir import BUNDLES, SERVING_FILE

# The store's newest closed tick, older than both, is stale: the report says so.
STALE_AFTER = pd.Timedelta(hours=1)
STALE_TICKS = 12


@dataclass(frozen=True)
class ModelInfo:
    """What the model directory says about the models (all optional)."""

    horizons: dict[str, int]
    sensor_ids: tuple[str, ...]
    champion: str | None
    coords: np.ndarray | None  # float64 [node, 2], in ``sensor_ids`` order
    dataset: str
    unusable: str = ""  # why the directory's bundles could not be read ("": none there)
    champion_note: str = ""  # why champion.json's champion is not used ("": it is, or none)


@dataclass(frozen=True)
class Scored:
    """The period's actual values and every model's scored forecasts."""

    first: pd.Timestamp
    last: pd.Timestamp
    ticks: int
    panel: SensorPanel
    backtests: dict[str, Backtest]
    alerts: list[Any]


@task(name="read-model-dir", **IO_TASK)
def read_model_info(models_dir: str) -> ModelInfo:
    """Horizons, sensors, champion and coordinates from the model directory, when it has
    bundles; empty otherwise (the report then relies on the store alone)."""
    from pipeline.model_dir import (
        BundleDirError,
        bundles_dir,
        load_bundles,
        read_champion,
        read_network,
    )

    folder = bundles_dir(models_dir)
    try:
        models = load_bundles(folder)
    except BundleDirError as exc:
        return ModelInfo({}, (), None, None, "", unusable=str(exc))
    union: dict[str, None] = {}
    for model in models.values():
        union.update(dict.fromkeys(model.sensor_ids))
    sensors = tuple(union)
    champion = read_champion(folder)
    name = None if champion is None else champion.champion
    note = ""
    if name is not None and name not in models:
        note = f"names {name!r}, which has no bundle in {folder}"
        name = None
    network = read_network(folder)
    coords = None
    if network is not None and network.coords is not None:
        where = {s: i for i, s in enumerate(network.sensor_ids)}
        if all(s in where for s in sensors):
            coords = network.coords[[where[s] for s in sensors]]
    return ModelInfo(
        horizons={name: m.horizon for name, m in models.items()},
        sensor_ids=sensors,
        champion=name,
        coords=coords,
        dataset=network.dataset if network is not None else "",
        champion_note=note,
    )


@task(name="score-stored-forecasts", **IO_TASK)
def score_store(store_path: str, since: str, info: ModelInfo, horizon: int) -> Scored:
    """Every model's stored forecasts of the period, scored, and the period's alerts.

    Raises
    ------
    StoreReadError
        When ``horizon`` is needed (a model the model directory does not describe) and
        is longer than the period: no forecast of that model could be scored.
    """
    from pipeline.service.store_reads import (
        StoreReadError,
        alerts_between,
        period_since,
        reading_store,
        require_sensors,
        stored_backtest,
    )

    with reading_store(store_path) as store:
        require_sensors(store, info.sensor_ids, "the model directory")
        period = period_since(store, since)
        sensors = info.sensor_ids or tuple(store.sensor_names().values())
        names = sorted(store.model_names().values())
        if info.horizons:
            names = [n for n in info.horizons if n in names] + [
                n for n in names if n not in info.horizons
            ]
        undescribed = [n for n in names if n not in info.horizons]
        if undescribed and horizon > period.ticks:
            raise StoreReadError(
                f"horizon={horizon} steps is longer than the report's period ({period.ticks} "
                f"closed ticks, since={since!r}), so no forecast of {', '.join(undescribed)} "
                "could be scored: pass the models' horizon, or models_dir with their bundles"
            )
        panel = None
        backtests = {}
        for name in names:
            panel, backtests[name] = stored_backtest(
                store, name, sensors, period, info.horizons.get(name, horizon), actuals=panel
            )
        if panel is None:  # no model in the store yet: the actuals alone
            from pipeline.service.store_reads import period_panel

            panel = period_panel(store, period.first_ms - period.step_ms, period.last_ms, sensors)
        alerts = alerts_between(store, period)
    first, last = period.bounds()
    return Scored(first, last, period.ticks, panel, backtests, alerts)


def check_options(since: str, horizon: int, out: str | None) -> None:
    """Refuse options the report cannot use, before reading anything.

    Raises
    ------
    ValueError
        Naming the option: a ``since`` that is no period, a ``horizon`` below one step,
        an ``out`` that is a file or lies under one, a text longer than any path.
    """
    from pipeline.service.store_reads import parse_since

    check_lengths(since=since, out=out)
    parse_since(since)
    if horizon < 1:
        raise ValueError(f"horizon must be at least 1 step, got {horizon}")
    if out is not None:
        check_out_folder(out)


def check_out_folder(out: str, what: str = "out") -> None:
    """Refuse a report folder that is blank, a file or under one, not writable, or a
    models folder (the live report would replace its training report).

    Raises
    ------
    ValueError
        Naming ``out`` (as ``what``) and the cause.
    """
    shown = f"{what}={out!r}"
    folder = Path(out).expanduser()
    if not str(out).strip() or any(
        p.exists() and not p.is_dir() for p in (folder, *folder.parents)
    ):
        raise ValueError(f"{shown} is blank, a file or under one; pass a folder (new or not)")
    if folder.name == BUNDLES or (folder / BUNDLES).is_dir() or (folder / SERVING_FILE).exists():
        raise ValueError(
            f"{shown} holds trained models: the live report would replace their training "
            "report; pass another folder"
        )
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{shown}: no permission to write in {existing}")


def live_document(scored: Scored, *, dataset: str) -> dict[str, Any]:
    """The scores in the shape of ``metrics.json`` (so the report layout is shared)."""
    freq = scored.panel.freq.total_seconds() / 60.0 if scored.panel.n_time > 1 else 5.0
    models: dict[str, Any] = {}
    for name, bt in scored.backtests.items():
        horizon = bt.forecast.mean.shape[1]
        predicted = np.where(np.isfinite(bt.actual), bt.forecast.mean, 0.0)  # [n, h, node]
        steps = score_batch(bt.actual, predicted, range(1, horizon + 1))["step"]
        models[name] = {
            "pooled": bt.metrics["pooled"],
            "step": bt.metrics["step"],
            "curve": {
                key: [_finite(steps[str(h)][key]) for h in range(1, horizon + 1)]
                for key in ("mae", "rmse")
            },
            "windows": bt.n_windows,
            "horizon": horizon,
        }
    horizons = {m["horizon"] for m in models.values()}
    return finite_or_none(
        {
            "dataset": dataset or "live",
            "period": {
                "first": scored.first.isoformat(),
                "last": scored.last.isoformat(),
                "ticks": scored.ticks,
            },
            "freq_minutes": freq,
            "horizon": max(horizons) if horizons else None,
            "models": models,
        }
    )


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


def sensor_errors(scored: Scored) -> pd.DataFrame:
    """Per model, horizon (pooled over steps 1..h) and sensor: n, MAE, RMSE, MAPE."""
    frames = []
    for name, bt in scored.backtests.items():
        for h in report_horizons(bt.forecast.mean.shape[1]):
            frame = sensor_scores(bt, scored.panel.sensor_ids, steps=h)
            frame.insert(0, "horizon_steps", h)
            frame.insert(0, "model", name)
            frames.append(frame)
    columns = ["model", "horizon_steps", "sensor", "n", "mae", "rmse", "mape"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def stale_note(last: pd.Timestamp, freq_minutes: float, now: pd.Timestamp) -> str | None:
    """What to say when the newest closed tick ``last`` is older, at ``now``, than
    :data:`STALE_AFTER` and :data:`STALE_TICKS` ticks (None: it is recent)."""
    age = now - last
    if age <= max(STALE_AFTER, STALE_TICKS * pd.Timedelta(minutes=freq_minutes)):
        return None
    hours = age.total_seconds() / 3600
    shown = f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} hours"
    return (
        f"the store's newest closed tick, {last:%Y-%m-%d %H:%M} UTC, is {shown} old: no "
        "recent readings (is roadcast serve running and fed?)"
    )


def make_report(
    scored: Scored, info: ModelInfo, document: dict[str, Any], *, since: str, store_path: str,
    models_dir: str, stale: str | None = None,
) -> Report:  # fmt: skip
    """The live forecast report of ``scored``; ``stale``: :func:`stale_note`'s warning."""
    freq = float(document["freq_minutes"])
    what = f"live, {scored.first:%Y-%m-%d %H:%M} to {scored.last:%Y-%m-%d %H:%M} UTC"
    horizons = sorted({m["horizon"] for m in document["models"].values()})
    facts = [
        ("data", info.dataset or "readings in the store"),
        ("period (UTC)", f"{scored.first:%Y-%m-%d %H:%M} .. {scored.last:%Y-%m-%d %H:%M}"),
        ("closed ticks", f"{scored.ticks:,} of {freq:g} min"),
        ("sensors", f"{scored.panel.n_nodes:,}"),
        ("models", ", ".join(document["models"]) or "none in the store"),
        ("horizon", ", ".join(f"{h} steps ({horizon_label(h, freq)})" for h in horizons) or "-"),
    ]
    if stale is not None:
        facts.insert(2, ("stale", stale))
    if info.champion_note:
        facts.append(("champion.json", info.champion_note))
    intro = (
        "Every forecast the models stored in this period is scored against the values the "
        "sensors reported (late corrections applied), on the original scale. A forecast "
        "counts when all its targets are closed ticks of the period; missing readings are "
        "not scored. The error at a horizon of h steps is pooled over steps 1..h, as in "
        "training, so live and backtest numbers can be compared."
    )
    provenance = [
        ("report window", f"since={since}"),
        ("store", store_path),
        ("model directory", models_dir),
        ("champion chosen by", "validation RMSE at training (champion.json)"),
    ]
    return build_report(
        title=f"Live forecast report: {scored.first:%Y-%m-%d} to {scored.last:%Y-%m-%d}",
        what=what,
        document=document,
        backtests=scored.backtests,
        panel=scored.panel,
        champion=info.champion,
        facts=facts,
        intro=intro,
        coords=info.coords if info.sensor_ids == scored.panel.sensor_ids else None,
        alerts=scored.alerts,
        provenance=provenance,
    )


@task(name="write-report", **IO_TASK)
def write_outputs(
    out: str, report: Report, document: dict[str, Any], errors: pd.DataFrame
) -> dict[str, str]:
    """Write the report, its metrics and the per-sensor errors to ``out``.

    Every file is written to a staging folder inside ``out`` first and moved in once all
    are written, so a failed write leaves ``out`` as it was.
    """
    folder = Path(out).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".report-", dir=folder))
    except PermissionError as exc:
        raise PermissionError(
            f"cannot write the report in {folder} ({exc.strerror or exc}); pass another out"
        ) from None
    try:
        write_report(staging, report)
        (staging / "live_metrics.json").write_text(json.dumps(document, indent=2) + "\n")
        csv_safe(errors).to_csv(staging / "sensor_errors.csv", index=False, float_format="%.6g")
        # The page last: it links the rest.
        written = sorted(
            (p for p in staging.rglob("*") if p.is_file()), key=lambda p: p.name == "report.html"
        )
        for path in written:
            target = folder / path.relative_to(staging)
            target.parent.mkdir(exist_ok=True)
            os.replace(path, target)
        current = {folder / p.relative_to(staging) for p in written}
        for old in (folder / "figures").glob("*.png"):  # an earlier report's, no longer linked
            if old not in current:
                old.unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {
        "html": str(folder / "report.html"),
        "markdown": str(folder / "report.md"),
        "metrics": str(folder / "live_metrics.json"),
        "sensors": str(folder / "sensor_errors.csv"),
    }


@flow(name="roadcast-report", log_prints=True)
def report_flow(
    since: str = "24h",
    store: str | None = None,
    models_dir: str | None = None,
    out: str | None = None,
    horizon: int = 12,
) -> dict[str, Any]:
    """Score the stored forecasts of a period and write the forecast report.

    Parameters
    ----------
    since : ``"24h"`` (a duration back from the newest closed tick) or an ISO time.
    store : the service's SQLite store; default ``ROADCAST_STORE_PATH``.
    models_dir : a ``roadcast train`` output or its ``bundles/``; default
        ``ROADCAST_MODEL_DIR`` (horizons, champion, coordinates).
    out : output folder; default ``reports/<UTC time of the newest tick>`` next to the
        store.
    horizon : forecast steps of models the model directory does not describe.

    Returns the written paths, the pooled RMSE per model at the longest horizon, and
    ``stale``: what the report says of a store whose newest tick is old (None: recent).
    """
    from pipeline.settings import load_settings

    check_options(since, horizon, out)
    check_lengths(store=store, models_dir=models_dir)
    settings = load_settings(store_path=store, model_dir=models_dir)
    log = get_run_logger()
    info = read_model_info(str(settings.model_dir))
    if not info.horizons:
        log.warning(
            f"no usable model bundles in {settings.model_dir} ({info.unusable}): every model "
            f"in the store is scored at horizon={horizon}, with no champion or map"
        )
    if info.champion_note:
        log.warning(f"champion.json {info.champion_note}: the report shows no champion")
    scored = score_store(str(settings.store_path), since, info, horizon)
    document = live_document(scored, dataset=info.dataset)
    stale = stale_note(scored.last, document["freq_minutes"], pd.Timestamp.now(tz="UTC"))
    if stale is not None:
        log.warning(stale)
    report = make_report(
        scored, info, document, since=since, store_path=str(settings.store_path),
        models_dir=str(settings.model_dir), stale=stale,
    )  # fmt: skip
    folder = out or str(
        Path(settings.store_path).parent / "reports" / scored.last.strftime("%Y-%m-%dT%H%MZ")
    )
    check_out_folder(folder, "out" if out else "the report folder next to the store")
    paths = write_outputs(folder, report, document, sensor_errors(scored))
    publish_table(
        KEYS["live_accuracy"],
        comparison_records(report),
        description=f"Live accuracy per model ({report.comparison.title})",
    )
    alert_table = next((t for t in report.tables if t.title == "Alerts in the period"), None)
    if alert_table is not None:
        publish_table(
            KEYS["alerts"],
            [dict(zip(alert_table.columns, row, strict=True)) for row in alert_table.rows],
            description=f"Alert state changes, {scored.first:%Y-%m-%d %H:%M} to "
            f"{scored.last:%Y-%m-%d %H:%M} UTC",
        )
    publish_markdown(
        KEYS["live_report"],
        artifact_markdown(report, paths["html"]),
        description=report.title,
    )
    if not scored.backtests:
        log.warning("the store holds no forecasts yet; the report shows actual values only")
    print(f"wrote {paths['html']} ({time.strftime('%H:%M:%S')})")
    pooled = {
        name: entry["pooled"][str(entry["horizon"])]["rmse"]
        for name, entry in document["models"].items()
        if str(entry["horizon"]) in entry["pooled"]
    }
    return {**paths, "rmse": pooled, "ticks": scored.ticks, "stale": stale}
