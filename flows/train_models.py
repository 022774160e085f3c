"""``train_models``: compare models and write a model directory in one call, without Prefect.

The same steps as the train flow (:mod:`flows.train_flow`, behind ``roadcast train``),
for the demo and the benchmarks: the protocol of :mod:`models.forecasters.comparison`,
then the outputs both share: bundles, ``metrics.json`` and ``network.json``
(:func:`write_bundles`), the champion (:func:`promote_champion`) and the report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flows.reporting.render import write_report
from flows.reporting.training import train_report
from models.forecasters.comparison import (
    Log,
    ModelResult,
    TrainPlan,
    check_graphs,
    fit_seeds,
    metrics_document,
    split_panel,
)
from models.panel import SensorPanel
from pipeline.model_dir import BUNDLES, ChampionError, choose_champion, promote, write_network


def train_models(
    panel: SensorPanel,
    plan: TrainPlan,
    out: str | Path,
    *,
    dataset: str | None = None,
    report: bool = True,
    log: Log = print,
) -> dict[str, Any]:
    """Fit, backtest and compare ``plan.models`` on ``panel``; write everything to ``out``.

    The same steps as the train flow, without Prefect: writes ``out/bundles/<model>``
    (best-validation seed), ``out/bundles/champion.json``, ``out/bundles/network.json``,
    ``out/metrics.json`` and, with ``report``, ``out/report.md`` and ``out/report.html``.
    Returns the metrics document (``metrics.json``'s content).

    Raises
    ------
    ValueError
        For a model that needs a road graph on a panel without one, or a panel too
        short for the split and windows.
    """
    check_graphs(panel, plan)
    split = split_panel(panel, plan)
    log(f"{dataset or panel.name}: {panel.n_nodes} sensors, split {split.sizes()}")
    results: dict[str, ModelResult] = {}
    for name in plan.models:
        log(f"{name}:")
        results[name] = fit_seeds(name, panel, split, plan, log)
    document = metrics_document(results, panel, split, plan, dataset)
    bundles = write_bundles(results, document, panel, out)
    try:
        champion: str | None = promote_champion(document, bundles)
    except ChampionError as exc:
        log(f"no champion promoted: {exc}")
        champion = None
    if report:
        write_report(out, train_report(document, results, panel, plan, champion, out))
    return document


def promote_champion(document: dict[str, Any], bundles: str | Path) -> str:
    """Choose the champion on validation scores, write ``champion.json``; returns its name."""
    champion = choose_champion(document)
    promote(bundles, champion)
    return champion.champion


def write_bundles(
    results: dict[str, ModelResult], document: dict[str, Any], panel: SensorPanel, out: str | Path
) -> Path:
    """``out/bundles/<model>`` (each model's best-validation seed), ``out/metrics.json`` and
    ``out/bundles/network.json`` (sensors and coordinates); returns the bundles folder.

    Each bundle is written atomically, so a service reading the folder sees either the
    old or the new bundle of a model, never half of one.
    """
    out = Path(out)
    for name, result in results.items():
        result.best.model.save(out / BUNDLES / name)
    (out / "metrics.json").write_text(json.dumps(document, indent=2) + "\n")
    write_network(out / BUNDLES, panel)
    return out / BUNDLES
