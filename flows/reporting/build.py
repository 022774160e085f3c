"""The forecast report: one layout for training backtests and for live accuracy.

A report is built from a *document* in the shape of ``metrics.json`` (per model:
``pooled`` and ``step`` metrics keyed by horizon, and the per-step ``curve``) plus
the :class:`models.forecasters.evaluation.Backtest` of each model on a panel of actual
values: the train flow makes them from the test part, the report flow from the
forecasts and readings in the service's store. The sections, in order:

1. what the report covers (data set, period or split, window, horizon, champion);
2. the comparison table: MAE, RMSE and MAPE at 15, 30, 45 and 60 minutes (pooled over
   steps 1..h), with published reference rows when the data set has some
   (:mod:`pipeline.data.published`);
3. error by horizon (one line per model);
4. forecast against actual, with the champion's prediction interval, for the best
   and the worst sensor (by the champion's error);
5. a map of the network coloured by the champion's error per sensor (when the
   sensors have coordinates), and the sensors with the largest errors;
6. the alerts of the period (live reports);
7. what data and settings produced it.

:func:`build_report` assembles a :class:`Report`; :mod:`flows.reporting.render` writes it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flows.reporting.plots import plot_best_worst, plot_error_by_horizon, plot_network_map
from flows.reporting.tables import (
    Table,
    alerts_tables,
    best_and_worst,
    comparison_table,
    horizon_label,
    reference_table,
    sensor_scores,
    worst_sensors_table,
)
from models.forecasters.evaluation import Backtest
from models.panel import SensorPanel


@dataclass(frozen=True)
class Figure:
    """A PNG figure; ``name`` is its file stem (``figures/<name>.png``)."""

    name: str
    title: str
    caption: str
    png: bytes


@dataclass(frozen=True)
class Report:
    """Everything a report shows, ready to render (see the module docstring)."""

    title: str
    facts: list[tuple[str, str]]
    intro: str
    comparison: Table
    reference: Table | None
    figures: list[Figure]
    tables: list[Table]
    notes: list[str] = field(default_factory=list)
    provenance: list[tuple[str, str]] = field(default_factory=list)


def forecast_step(horizon: int) -> int:
    """The lead shown in forecast-vs-actual plots: 3 steps (15 min) when the horizon allows."""
    return 3 if horizon >= 3 else horizon


def build_report(
    *,
    title: str,
    what: str,
    document: Mapping[str, Any],
    backtests: Mapping[str, Backtest],
    panel: SensorPanel,
    champion: str | None,
    facts: Sequence[tuple[str, str]],
    intro: str,
    coords: np.ndarray | None = None,
    alerts: Sequence[Any] | None = None,
    provenance: Sequence[tuple[str, str]] = (),
    extra_tables: Sequence[Table] = (),
) -> Report:
    """Assemble a :class:`Report`.

    Parameters
    ----------
    title : the page title.
    what : what the errors are measured on, e.g. ``"test part"`` or ``"live, last 24 h"``.
    document : per-model metrics in the shape of ``metrics.json``.
    backtests : per model, its forecasts and actual values; ``forecast.origins`` index
        into ``panel``.
    panel : the actual values (its sensors are the backtests' node axis).
    champion : the model whose errors pick the best/worst sensors and colour the map
        (None: the model with the lowest pooled RMSE at the longest horizon here).
    facts : the header lines (data set, period, ...).
    intro : one paragraph on how the numbers were made.
    coords : ``[node, 2]`` latitude/longitude of ``panel``'s sensors, for the map.
    alerts : alert state changes of the period (None: the section is left out).
    provenance : the "what produced it" lines (data, settings, versions).
    extra_tables : tables shown first (significance against the champion, tuning).
    """
    freq = float(document.get("freq_minutes", 5.0))
    notes: list[str] = []
    figures: list[Figure] = []
    tables: list[Table] = list(extra_tables)
    curves = {n: e["curve"] for n, e in document["models"].items() if e.get("curve")}
    if curves:
        figures.append(
            Figure(
                "error_by_horizon",
                "Error by horizon",
                f"RMSE and MAE at each forecast step ({what}).",
                plot_error_by_horizon(curves, freq, what),
            )
        )
    focus = champion if champion in backtests else _lowest_error(document, backtests)
    if focus is not None and backtests[focus].n_windows:
        bt = backtests[focus]
        scores = sensor_scores(bt, panel.sensor_ids)
        picked = best_and_worst(scores)
        if picked is not None:
            best, worst = picked
            step = forecast_step(bt.forecast.mean.shape[1])
            lead = horizon_label(step, freq)
            figures.append(
                Figure(
                    "forecasts",
                    "Forecast against actual: best and worst sensor",
                    f"{focus}'s {lead}-ahead forecasts and its prediction interval against the "
                    f"actual values ({what}), for the sensors where {focus} erred least "
                    f"and most over the whole horizon (RMSE pooled over its "
                    f"{bt.forecast.mean.shape[1]} steps: {scores.rmse[best]:.4g} and "
                    f"{scores.rmse[worst]:.4g}).",
                    plot_best_worst(
                        panel,
                        bt,
                        [(best, "best sensor"), (worst, "worst sensor")],
                        step=step,
                        freq_minutes=freq,
                    ),
                )
            )
            if coords is not None and len(coords) == panel.n_nodes:
                figures.append(
                    Figure(
                        "network_map",
                        "Error across the network",
                        f"Each sensor at its coordinates, coloured by {focus}'s RMSE pooled "
                        f"over the horizon ({what}); grey: no scored target.",
                        plot_network_map(
                            np.asarray(coords, dtype=float),
                            scores["rmse"].to_numpy(dtype=float),
                            panel.sensor_ids,
                            highlight={best: "best", worst: "worst"},
                            label=f"{focus} RMSE",
                        ),
                    )
                )
            else:
                notes.append("No sensor coordinates are known here, so there is no map.")
            tables.append(worst_sensors_table(scores, focus))
    else:
        notes.append(f"No forecast was scored ({what}): nothing to plot.")
    if alerts is not None:
        tables += alerts_tables(alerts)
    return Report(
        title=title,
        facts=[*facts, ("champion", champion or "none promoted")],
        intro=intro,
        comparison=comparison_table(document, what=what),
        reference=reference_table(document),
        figures=figures,
        tables=tables,
        notes=notes,
        provenance=[*provenance, *software_versions()],
    )


def _lowest_error(document: Mapping[str, Any], backtests: Mapping[str, Backtest]) -> str | None:
    def score(name: str) -> float:
        pooled = document["models"][name]["pooled"]
        value = pooled[list(pooled)[-1]].get("rmse") if pooled else None
        return float(value) if value is not None and math.isfinite(value) else math.inf

    names = [n for n in backtests if n in document["models"]]
    return min(names, key=lambda n: (score(n), n)) if names else None


def software_versions() -> list[tuple[str, str]]:
    """roadcast, Prefect and torch versions, and the Prefect flow run when inside one."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for package in ("roadcast", "prefect", "torch", "statsmodels"):
        try:
            out.append((f"{package} version", version(package)))
        except PackageNotFoundError:
            continue
    try:
        from prefect.context import FlowRunContext

        context = FlowRunContext.get()
        if context is not None and context.flow_run is not None:
            out.append(("Prefect flow run", f"{context.flow_run.name} ({context.flow_run.id})"))
    except ImportError:
        pass
    out.append(("written", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())))
    return out
