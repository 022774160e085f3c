"""The forecast report: one layout for training backtests and for live accuracy.

A report is built from a *document* in the shape of ``metrics.json`` (per model:
``pooled`` and ``step`` metrics keyed by horizon, and the per-step ``curve``) plus
the :class:`models.forecasters.evaluation.Backtest` of each model on a panel of actual values.
``roadcast train`` (the train flow) makes them from the test part; the report flow
makes them from the forecasts and readings in the service's store
(:func:`pipeline.service.store_reads.stored_backtest`). The sections, in order:

1. what the report covers (data set, period or split, window, horizon, champion);
2. the comparison table: MAE, RMSE and MAPE at 15, 30, 45 and 60 minutes (pooled over
   steps 1..h), with the published reference rows for ``los-loop``;
3. error by horizon (one line per model);
4. forecast against actual, with the champion's prediction interval, for the best
   and the worst sensor (by the champion's error);
5. a map of the network coloured by the champion's error per sensor (when the
   sensors have coordinates), and the sensors with the largest errors;
6. the alerts of the period (live reports);
7. what data and settings produced it.

:func:`render_html` writes one self-contained page (PNG figures embedded as base64,
made with matplotlib's object API: no pyplot state, no display); :func:`render_markdown`
its twin, with the figures as files next to it; :func:`artifact_markdown` the same
text for a Prefect Markdown artifact (the figures are named by path: the artifact
store is no place for images). :func:`compact_rows` is the narrow terminal table of
``roadcast train``.
"""

from __future__ import annotations

import base64
import html
import io
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.forecasters.evaluation import Backtest
from models.metrics import error_metrics
from models.panel import SensorPanel

# Published los-loop results, copied from ../shared/data/README.md (pooled over the
# predicted steps, original scale, T-GCN's chronological 80/20 protocol). They are
# not re-run here; horizon in steps of 5 minutes -> (RMSE, MAE).
REFERENCE_SOURCE = (
    "published numbers as listed in shared/data/README.md: T-GCN (Zhao et al., IEEE T-ITS "
    "2019; 15-min row re-scored from the authors' saved predictions, 60-min row not "
    "verified), A3T-GCN and its GRU baseline (Zhu et al., ISPRS IJGI 2021). Not re-run "
    "here; they come from the authors' own training choices (e.g. how epochs were "
    "selected), which may differ from this validation-only protocol."
)
REFERENCE_LOS_LOOP: dict[str, dict[int, tuple[float, float]]] = {
    "T-GCN (published)": {3: (5.1264, 3.1802), 12: (7.27, 4.60)},
    "A3T-GCN (published)": {3: (5.0904, 3.1365), 12: (7.0990, 4.2343)},
    "GRU (published, A3T-GCN paper)": {3: (5.2182, 3.0602), 12: (7.6621, 4.5186)},
}


def horizon_label(steps: int | str, freq_minutes: float) -> str:
    """``3`` steps of 5 minutes -> ``"15 min"``."""
    minutes = int(steps) * freq_minutes
    return f"{minutes:g} min" if minutes < 120 else f"{minutes / 60:g} h"


def _pm(mean: float | None, std: float | None, digits: int = 3) -> str:
    if mean is None:
        return "n/a"
    if not std:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def compact_rows(
    document: Mapping[str, Any], *, reference: bool = False
) -> tuple[list[str], list[list[str]]]:
    """A narrow table for terminals: one row per model, one column per reported horizon,
    cells ``MAE / RMSE`` (± std over seeds); with ``reference``, the published los-loop
    rows at the end."""
    freq = float(document.get("freq_minutes", 5.0))
    models = document["models"]
    horizons = list(next(iter(models.values()))["pooled"]) if models else []
    columns = ["model", *(horizon_label(h, freq) for h in horizons)]
    rows = []
    for name, e in document["models"].items():
        cells = []
        for h in horizons:
            if h not in e["pooled"]:
                cells.append("")
                continue
            mae, rmse = e["pooled"][h]["mae"], e["pooled"][h]["rmse"]
            sd_mae, sd_rmse = e["std"]["pooled"][h]["mae"], e["std"]["pooled"][h]["rmse"]
            spread = f" (±{sd_mae:.2f} / ±{sd_rmse:.2f})" if e["seeds"] > 1 else ""
            cells.append(f"{mae:.3f} / {rmse:.3f}{spread}")
        rows.append([name, *cells])
    for name, values in REFERENCE_LOS_LOOP.items() if reference else ():
        rows.append(
            [name]
            + [
                f"{values[int(h)][1]:.4g} / {values[int(h)][0]:.4g}" if int(h) in values else ""
                for h in horizons
            ]
        )
    return columns, rows


# A sensor needs at least this share of the median scored count to be called the best
# or the worst: a sensor scored on three targets is not "the best sensor".
MIN_SCORED_SHARE = 0.5


@dataclass(frozen=True)
class Table:
    """A titled table of text cells.

    ``groups`` optionally spans the HTML header: ``(label, span)`` pairs covering the
    columns in order; a column under label ``""`` stands alone, the columns of a group
    are shown without the label prefix (``"15 min MAE"`` under ``"15 min"`` -> ``MAE``).
    Markdown and artifacts keep the flat column names.
    """

    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""
    groups: tuple[tuple[str, int], ...] = ()
    align_left: bool = False


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


# --------------------------------------------------------------------------- numbers


def _fmt(value: float | None, digits: int = 3, std: float | None = None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if std:
        return f"{value:.{digits}f} ± {std:.{digits}f}"
    return f"{value:.{digits}f}"


def comparison_table(document: Mapping[str, Any], *, what: str) -> Table:
    """MAE, RMSE and MAPE (%) per model at each reported horizon (pooled over steps 1..h).

    Neural models trained with several seeds show mean ± sample std; extra columns
    (seeds, fit seconds, predict ms per window) appear when the document has them.
    """
    freq = float(document.get("freq_minutes", 5.0))
    models = document["models"]
    horizons = list(next(iter(models.values()))["pooled"]) if models else []
    columns = ["model"]
    for h in horizons:
        label = horizon_label(h, freq)
        columns += [f"{label} MAE", f"{label} RMSE", f"{label} MAPE %"]
    extras = [
        (key, title)
        for key, title in (
            ("seeds", "seeds"),
            ("fit_seconds", "fit s"),
            ("predict_ms_per_window", "predict ms/window"),
        )
        if any(key in entry for entry in models.values())
    ]
    columns += [title for _, title in extras] + ["scored"]
    groups = (
        ("", 1),
        *((horizon_label(h, freq), 3) for h in horizons),
        *(("", 1) for _ in range(len(extras) + 1)),
    )
    rows = []
    for name, entry in models.items():
        std = entry.get("std", {}).get("pooled", {})
        row = [name]
        for h in horizons:
            m = entry["pooled"][h]
            s = std.get(h, {})
            row += [
                _fmt(m.get("mae"), std=s.get("mae")),
                _fmt(m.get("rmse"), std=s.get("rmse")),
                _fmt(m.get("mape"), 2, std=s.get("mape")),
            ]
        for key, _ in extras:
            value = entry.get(key)
            if key == "seeds":
                row.append("n/a" if value is None else str(value))
            else:
                row.append(_fmt(value, 1 if key == "fit_seconds" else 3))
        last = entry["pooled"][horizons[-1]] if horizons else {}
        row.append(f"{int(last.get('count') or 0):,}")
        rows.append(row)
    note = (
        "Pooled over steps 1..h, original scale, missing targets not scored; MAPE skips "
        "targets below 1 (stopped traffic, faulty zeros). 'scored' counts the targets "
        "at the longest horizon."
    )
    return Table(f"Model comparison ({what})", columns, rows, note, groups=groups)


def reference_table(document: Mapping[str, Any]) -> Table | None:
    """The published ``los-loop`` rows in the comparison table's layout, else None."""
    if document.get("dataset") != "los-loop":
        return None
    freq = float(document.get("freq_minutes", 5.0))
    horizons = [3, 12]
    columns = ["model"]
    for h in horizons:
        label = horizon_label(h, freq)
        columns += [f"{label} MAE", f"{label} RMSE", f"{label} MAPE %"]
    rows = []
    for name, values in REFERENCE_LOS_LOOP.items():
        row = [name]
        for h in horizons:
            rmse, mae = values[h]
            row += [f"{mae:.4g}", f"{rmse:.4g}", "n/a"]
        rows.append(row)
    groups = (("", 1), *((horizon_label(h, freq), 3) for h in horizons))
    return Table(
        "Published reference (los-loop)", columns, rows, f"Source: {REFERENCE_SOURCE}", groups
    )


def sensor_scores(
    backtest: Backtest, sensor_ids: Sequence[str], *, steps: int | None = None
) -> pd.DataFrame:
    """Per-sensor MAE, RMSE and MAPE of one backtest, pooled over steps ``1..steps``
    (default: every step).

    Columns ``sensor, n, mae, rmse, mape`` (one row per sensor, NaN where nothing
    was scored).
    """
    actual = backtest.actual[:, :steps]
    predicted = np.where(
        np.isfinite(actual), backtest.forecast.mean[:, :steps], 0.0
    )  # [n, h, node]
    rows = []
    for j, sensor in enumerate(sensor_ids):
        m = error_metrics(actual[..., j], predicted[..., j])
        rows.append(
            {"sensor": sensor, "n": m["count"], "mae": m["mae"], "rmse": m["rmse"],
             "mape": m["mape"]}
        )  # fmt: skip
    return pd.DataFrame(rows, columns=["sensor", "n", "mae", "rmse", "mape"])


def best_and_worst(scores: pd.DataFrame) -> tuple[int, int] | None:
    """Row positions of the sensors with the lowest and the highest RMSE (among those
    scored on at least :data:`MIN_SCORED_SHARE` of the median count), or None."""
    scored = scores[np.isfinite(scores["rmse"]) & (scores["n"] > 0)]
    if scored.empty:
        return None
    enough = scored[scored["n"] >= MIN_SCORED_SHARE * scored["n"].median()]
    pool = enough if not enough.empty else scored
    order = pool.sort_values(["rmse", "sensor"], kind="stable")
    return int(order.index[0]), int(order.index[-1])


# --------------------------------------------------------------------------- figures


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def plot_error_by_horizon(
    curves: Mapping[str, Mapping[str, Sequence[float | None]]], freq_minutes: float, what: str
) -> bytes:
    """RMSE and MAE at every forecast step, one line per model (PNG bytes).

    ``curves``: ``{model: {"rmse": [step 1, step 2, ...], "mae": [...]}}``.
    """
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(10.5, 3.8), layout="constrained")
    for ax, key in zip(fig.subplots(1, 2), ("rmse", "mae"), strict=True):
        for name, curve in curves.items():
            values = np.array([np.nan if v is None else v for v in curve[key]], dtype=float)
            minutes = np.arange(1, len(values) + 1) * freq_minutes
            ax.plot(minutes, values, marker="o", markersize=3, label=name)
        ax.set_xlabel("minutes ahead")
        ax.set_ylabel(key.upper())
        ax.set_title(f"{key.upper()} by lead time", fontsize=10)
        ax.grid(alpha=0.3)
    fig.suptitle(what, fontsize=10)
    fig.axes[0].legend(fontsize=8)
    return _png(fig)


def plot_best_worst(
    panel: SensorPanel,
    backtest: Backtest,
    sensors: Sequence[tuple[int, str]],
    *,
    step: int,
    freq_minutes: float,
) -> bytes:
    """Actual values against the ``step``-ahead forecast and its interval, one panel per
    ``(column, label)`` of ``sensors`` (PNG bytes)."""
    from matplotlib.figure import Figure as MplFigure

    fc = backtest.forecast
    fig = MplFigure(figsize=(11, 2.7 * len(sensors)))
    axes = np.atleast_1d(fig.subplots(len(sensors), 1, sharex=True))
    when = panel.timestamps[fc.origins + step].tz_convert(None)
    first = int(fc.origins[0]) + 1 if len(fc.origins) else 0
    span = slice(first, int(fc.origins[-1]) + step + 1 if len(fc.origins) else panel.n_time)
    lead = horizon_label(step, freq_minutes)
    for ax, (node, label) in zip(axes, sensors, strict=True):
        ax.plot(
            panel.timestamps[span].tz_convert(None),
            panel.values[span, node],
            color="black",
            linewidth=1.1,
            label="actual",
        )
        if fc.lower is not None and fc.upper is not None:
            ax.fill_between(
                when,
                fc.lower[:, step - 1, node],
                fc.upper[:, step - 1, node],
                color="tab:blue",
                alpha=0.2,
                linewidth=0,
                label=f"{fc.level:.0%} interval",
            )
        ax.plot(
            when,
            fc.mean[:, step - 1, node],
            color="tab:blue",
            linewidth=1.0,
            label=f"{fc.model}, {lead} ahead",
        )
        ax.set_title(f"{label}: sensor {panel.sensor_ids[node]}", fontsize=10, loc="left")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, ncol=3, loc="lower left")
    axes[-1].set_xlabel("time (UTC)")
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    locator = AutoDateLocator()
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(ConciseDateFormatter(locator))
    return _png(fig)


def plot_network_map(
    coords: np.ndarray,
    errors: np.ndarray,
    sensor_ids: Sequence[str],
    *,
    highlight: Mapping[int, str],
    label: str,
) -> bytes:
    """Sensors at their coordinates, coloured by ``errors`` (grey: not scored) (PNG).

    ``coords`` float ``[node, 2]`` (latitude, longitude); ``highlight`` maps columns to
    a word drawn next to them (best, worst).
    """
    from matplotlib.figure import Figure as MplFigure

    lat, lon = coords[:, 0], coords[:, 1]
    fig = MplFigure(figsize=(8.5, 6.2))
    ax = fig.subplots()
    ok = np.isfinite(errors)
    if (~ok).any():
        ax.scatter(lon[~ok], lat[~ok], s=18, c="lightgrey", label="not scored")
    points = ax.scatter(
        lon[ok], lat[ok], s=30, c=errors[ok], cmap="RdYlGn_r", edgecolors="black",
        linewidths=0.3,
    )  # fmt: skip
    fig.colorbar(points, ax=ax, label=label, shrink=0.85)
    for node, word in highlight.items():
        ax.annotate(
            f"{word}: {sensor_ids[node]}",
            (lon[node], lat[node]),
            xytext=(8, 8),
            textcoords="offset points",
            fontsize=8,
            arrowprops={"arrowstyle": "-", "linewidth": 0.6},
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.8},
        )
    # Equal distances in both directions at this latitude; the data limits (not the
    # box) stretch, so a network along one road still gets a readable plot.
    ax.set_aspect(
        1.0 / max(math.cos(math.radians(float(np.nanmean(lat)))), 0.1), adjustable="datalim"
    )
    ax.ticklabel_format(useOffset=False)
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.grid(alpha=0.2)
    if (~ok).any():
        ax.legend(fontsize=8, loc="best")
    return _png(fig)


# --------------------------------------------------------------------------- building


def forecast_step(horizon: int) -> int:
    """The lead shown in forecast-vs-actual plots: 3 steps (15 min) when the horizon allows."""
    return 3 if horizon >= 3 else horizon


def alerts_tables(alerts: Sequence[Any], *, latest: int = 30) -> list[Table]:
    """A summary (per detector, severity and status) and the latest state changes."""
    if not alerts:
        return [Table("Alerts in the period", ["alerts"], [["none"]])]
    frame = pd.DataFrame(
        {
            "detector": [a.detector for a in alerts],
            "severity": [a.severity for a in alerts],
            "status": [a.status for a in alerts],
            "sensor": [a.sensor for a in alerts],
        }
    )
    counts = (
        frame.groupby(["detector", "severity", "status"]).agg(
            changes=("sensor", "size"), sensors=("sensor", "nunique")
        )
    ).reset_index()
    summary = Table(
        "Alerts in the period",
        ["detector", "severity", "status", "changes", "sensors"],
        [[str(v) for v in row] for row in counts.itertuples(index=False)],
        f"{len(alerts):,} alert state changes on {frame['sensor'].nunique()} sensors.",
    )
    rows = []
    for a in sorted(alerts, key=lambda a: a.ts, reverse=True)[:latest]:
        rows.append(
            [a.ts.strftime("%Y-%m-%d %H:%M"), a.sensor, a.detector, a.severity, a.status,
             _fmt(a.score, 2), _fmt(a.observed, 2), _fmt(a.expected, 2)]
        )  # fmt: skip
    recent = Table(
        f"Latest {len(rows)} alert state changes",
        ["time (UTC)", "sensor", "detector", "severity", "status", "score", "observed",
         "expected"],
        rows,
    )  # fmt: skip
    return [summary, recent]


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
    """
    freq = float(document.get("freq_minutes", 5.0))
    notes: list[str] = []
    figures: list[Figure] = []
    tables: list[Table] = []
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
                    f"(RMSE {scores.rmse[best]:.3f}) and most (RMSE {scores.rmse[worst]:.3f}).",
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
            worst_rows = scores.sort_values("rmse", ascending=False, kind="stable").head(10)
            tables.append(
                Table(
                    f"Sensors with the largest {focus} errors",
                    ["sensor", "RMSE", "MAE", "MAPE %", "scored"],
                    [
                        [r.sensor, _fmt(r.rmse), _fmt(r.mae), _fmt(r.mape, 2), f"{r.n:,}"]
                        for r in worst_rows.itertuples(index=False)
                        if math.isfinite(r.rmse)
                    ],
                )
            )
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


# --------------------------------------------------------------------------- rendering


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table (``|`` in cells escaped)."""

    def cell(text: str) -> str:
        return str(text).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _table_md(table: Table) -> list[str]:
    parts = [f"## {table.title}", "", markdown_table(table.columns, table.rows), ""]
    if table.note:
        parts += [table.note, ""]
    return parts


def render_markdown(report: Report, figure_files: Mapping[str, str] | None = None) -> str:
    """The report as Markdown; ``figure_files`` maps figure names to (relative) PNG paths.

    Without ``figure_files`` the figures are listed by title only (artifact form).
    """
    parts = [f"# {report.title}", ""]
    parts += [f"- **{k}**: {v}" for k, v in report.facts]
    parts += ["", report.intro, ""]
    parts += _table_md(report.comparison)
    if report.reference is not None:
        parts += _table_md(report.reference)
    for figure in report.figures:
        parts += [f"## {figure.title}", ""]
        if figure_files is not None and figure.name in figure_files:
            parts += [f"![{figure.name}]({figure_files[figure.name]})", ""]
        parts += [figure.caption, ""]
    for table in report.tables:
        parts += _table_md(table)
    for note in report.notes:
        parts += [f"_{note}_", ""]
    parts += ["## What produced this report", ""]
    parts += [markdown_table(["what", "value"], [[k, v] for k, v in report.provenance]), ""]
    return "\n".join(parts)


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#f6f7f9;
color:#1d2330}
main{max-width:1180px;margin:0 auto;padding:24px 32px 48px;background:#fff}
h1{font-size:24px;margin:8px 0 12px}h2{font-size:18px;margin:28px 0 8px;
border-bottom:1px solid #e3e6eb;padding-bottom:4px}
ul.facts{list-style:none;padding:0;display:grid;grid-template-columns:repeat(auto-fill,
minmax(330px,1fr));gap:4px 24px;font-size:14px}
ul.facts b{color:#55607a;font-weight:600}
p{font-size:14px;line-height:1.45}p.note{color:#55607a;font-size:12.5px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0}
td,th{border:1px solid #d5d9e0;padding:3px 7px;text-align:right;white-space:nowrap}
span.sd{color:#6b7487;font-size:11px}
th{background:#eef1f5}td:first-child,th:first-child{text-align:left}
th.group{text-align:center}table.left td,table.left th{text-align:left;white-space:normal}
tr.champion td{background:#eaf5ea;font-weight:600}
img{max-width:100%;height:auto;border:1px solid #eceef2}
figure{margin:8px 0 0}figcaption{font-size:13px;color:#55607a;margin-top:4px}
"""


def _header_html(table: Table) -> str:
    if not table.groups:
        return "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in table.columns) + "</tr>"
    top, bottom, at = [], [], 0
    for label, span in table.groups:
        names = table.columns[at : at + span]
        at += span
        if not label:
            top += [f"<th rowspan='2'>{html.escape(n)}</th>" for n in names]
            continue
        top.append(f"<th colspan='{span}' class='group'>{html.escape(label)}</th>")
        bottom += [f"<th>{html.escape(n.removeprefix(label).strip())}</th>" for n in names]
    return f"<tr>{''.join(top)}</tr><tr>{''.join(bottom)}</tr>"


def _cell_html(text: str) -> str:
    """``"5.339 ± 0.012"`` -> the mean with the std below it in small type (narrow columns)."""
    mean, sep, std = text.partition(" ± ")
    if not sep:
        return html.escape(text)
    return f"{html.escape(mean)}<br><span class='sd'>± {html.escape(std)}</span>"


def _table_html(table: Table, *, highlight: str | None = None) -> str:
    body = []
    for row in table.rows:
        cls = " class='champion'" if highlight is not None and row and row[0] == highlight else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{_cell_html(v)}</td>" for v in row) + "</tr>")
    style = " class='left'" if table.align_left else ""
    parts = [
        f"<h2>{html.escape(table.title)}</h2>",
        f"<div class='scroll'><table{style}><thead>{_header_html(table)}</thead>"
        f"<tbody>{''.join(body)}</tbody></table></div>",
    ]
    if table.note:
        parts.append(f"<p class='note'>{html.escape(table.note)}</p>")
    return "\n".join(parts)


def render_html(report: Report) -> str:
    """The report as one self-contained HTML page (figures embedded as base64 PNG)."""
    champion = dict(report.facts).get("champion")
    facts = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in report.facts)
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{html.escape(report.title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{html.escape(report.title)}</h1><ul class='facts'>{facts}</ul>",
        f"<p>{html.escape(report.intro)}</p>",
        _table_html(report.comparison, highlight=champion),
    ]
    if report.reference is not None:
        parts.append(_table_html(report.reference))
    for figure in report.figures:
        encoded = base64.b64encode(figure.png).decode("ascii")
        parts += [
            f"<h2>{html.escape(figure.title)}</h2>",
            f"<figure><img alt='{html.escape(figure.name)}' src='data:image/png;base64,{encoded}'>",
            f"<figcaption>{html.escape(figure.caption)}</figcaption></figure>",
        ]
    parts += [_table_html(t) for t in report.tables]
    parts += [f"<p class='note'>{html.escape(n)}</p>" for n in report.notes]
    provenance = Table(
        "What produced this report",
        ["what", "value"],
        [[k, v] for k, v in report.provenance],
        align_left=True,
    )
    parts += [_table_html(provenance), "</main></body></html>"]
    return "\n".join(parts)


def write_report(out: str | Path, report: Report) -> tuple[Path, Path]:
    """Write ``out/report.html``, ``out/report.md`` and ``out/figures/<name>.png``."""
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    files = {}
    for figure in report.figures:
        (out / "figures" / f"{figure.name}.png").write_bytes(figure.png)
        files[figure.name] = f"figures/{figure.name}.png"
    md = out / "report.md"
    md.write_text(render_markdown(report, files))
    page = out / "report.html"
    page.write_text(render_html(report))
    return md, page


def artifact_markdown(report: Report, html_path: str | Path | None) -> str:
    """The Markdown twin for a Prefect artifact: every table and caption; the figures are
    in the HTML page named here."""
    text = render_markdown(report)
    if html_path is not None:
        text += f"\nFigures: open `{html_path}` (self-contained HTML).\n"
    return text


def comparison_records(report: Report) -> list[dict[str, str]]:
    """The comparison table (and the published reference rows) as artifact records."""
    columns = report.comparison.columns
    records = [dict(zip(columns, row, strict=True)) for row in report.comparison.rows]
    if report.reference is not None:
        for row in report.reference.rows:
            given = dict(zip(report.reference.columns, row, strict=True))
            records.append({c: given.get(c, "") for c in columns})
    return records
