"""The comparison report of ``roadcast train``: tables, plots, Markdown and HTML.

Reusable pieces (a later issue builds the scheduled Prefect reports from them):
:func:`comparison_rows` (the 15/30/45/60-minute table), :data:`REFERENCE_LOS_LOOP`
(published numbers), :func:`plot_error_by_horizon`, :func:`plot_forecasts`,
:func:`render_markdown`, :func:`render_html` and :func:`write_report`. Plots are PNG
bytes made with matplotlib's object API (no pyplot state, no display needed); the HTML
embeds them as base64 so it is one self-contained file.
"""

from __future__ import annotations

import base64
import html
import io
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.evaluation import Backtest
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


def comparison_rows(document: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Columns and rows of the main table: per model, pooled MAE and RMSE (mean ± std over
    seeds) at each reported horizon, then seeds, fit seconds and predict ms per window."""
    freq = float(document.get("freq_minutes", 5.0))
    models = document["models"]
    horizons = list(next(iter(models.values()))["pooled"]) if models else []
    columns = ["model"]
    for h in horizons:
        label = horizon_label(h, freq)
        columns += [f"{label} MAE", f"{label} RMSE"]
    columns += ["seeds", "fit s", "predict ms/window"]
    rows = []
    for name, entry in models.items():
        row = [name]
        for h in horizons:
            for key in ("mae", "rmse"):
                row.append(_pm(entry["pooled"][h][key], entry["std"]["pooled"][h][key]))
        row += [
            str(entry["seeds"]),
            f"{entry['fit_seconds']:.1f}",
            f"{entry['predict_ms_per_window']:.3f}",
        ]
        rows.append(row)
    return columns, rows


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


def reference_rows(document: Mapping[str, Any]) -> tuple[list[str], list[list[str]]] | None:
    """The published los-loop rows in the main table's horizons (None for other data)."""
    if document.get("dataset") != "los-loop":
        return None
    freq = float(document.get("freq_minutes", 5.0))
    horizons = [3, 12]
    columns = ["model"] + [
        f"{horizon_label(h, freq)} {k}" for h in horizons for k in ("MAE", "RMSE")
    ]
    rows = []
    for name, values in REFERENCE_LOS_LOOP.items():
        row = [name]
        for h in horizons:
            rmse, mae = values[h]
            row += [f"{mae:.4g}", f"{rmse:.4g}"]
        rows.append(row)
    return columns, rows


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def plot_error_by_horizon(
    curves: Mapping[str, Mapping[str, Sequence[float]]], freq_minutes: float
) -> bytes:
    """RMSE and MAE at each forecast step (one line per model) as PNG bytes.

    ``curves`` is ``{model: {"rmse": [step 1, step 2, ...], "mae": [...]}}``.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    for ax, key in zip(fig.subplots(1, 2), ("rmse", "mae"), strict=True):
        for name, curve in curves.items():
            values = np.asarray(curve[key], dtype=float)
            minutes = np.arange(1, len(values) + 1) * freq_minutes
            ax.plot(minutes, values, marker="o", markersize=3, label=name)
        ax.set_xlabel("minutes ahead")
        ax.set_ylabel(key.upper())
        ax.set_title(f"{key.upper()} by horizon (test part)")
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=8)
    return _png(fig)


def plot_forecasts(
    panel: SensorPanel,
    backtests: Mapping[str, Backtest],
    *,
    step: int,
    sensors: Sequence[int],
    band_model: str | None = None,
) -> bytes:
    """Actual values against each model's ``step``-ahead forecast for a few sensors (PNG),
    with ``band_model``'s prediction interval shaded."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 2.6 * len(sensors)))
    axes = np.atleast_1d(fig.subplots(len(sensors), 1, sharex=True))
    first = next(iter(backtests.values()))
    origins = first.forecast.origins
    targets = origins + step
    times = panel.timestamps[targets].tz_convert(None)
    span = slice(int(targets[0]), int(targets[-1]) + 1)
    for ax, node in zip(axes, sensors, strict=True):
        ax.plot(
            panel.timestamps[span].tz_convert(None),
            panel.values[span, node],
            color="black",
            linewidth=1.2,
            label="actual",
        )
        if band_model is not None and band_model in backtests:
            bt = backtests[band_model]
            if bt.forecast.lower is not None and bt.forecast.upper is not None:
                ax.fill_between(
                    panel.timestamps[bt.forecast.origins + step].tz_convert(None),
                    bt.forecast.lower[:, step - 1, node],
                    bt.forecast.upper[:, step - 1, node],
                    alpha=0.2,
                    label=f"{band_model} {bt.forecast.level:.0%} interval",
                )
        for name, bt in backtests.items():
            ax.plot(
                panel.timestamps[bt.forecast.origins + step].tz_convert(None),
                bt.forecast.mean[:, step - 1, node],
                linewidth=0.9,
                label=name,
            )
        ax.set_ylabel(f"sensor {panel.sensor_ids[node]}")
        ax.grid(alpha=0.3)
    axes[0].set_title(f"{step}-step-ahead forecasts on the test part (UTC)")
    axes[0].legend(fontsize=7, ncol=4, loc="lower left")
    axes[-1].set_xlim(times[0], times[-1])
    return _png(fig)


def pick_sensors(panel: SensorPanel, backtest: Backtest, count: int = 3) -> list[int]:
    """The ``count`` sensors whose test targets vary most (where forecasts are interesting)."""
    spread = np.nanstd(backtest.actual[:, 0, :], axis=0)
    spread = np.nan_to_num(spread, nan=-1.0)
    return [int(i) for i in np.argsort(-spread, kind="stable")[: min(count, panel.n_nodes)]]


def build_figures(
    panel: SensorPanel, backtests: Mapping[str, Backtest], document: Mapping[str, Any]
) -> dict[str, bytes]:
    """The report's PNGs: ``error_by_horizon`` and ``forecasts``."""
    freq = float(document.get("freq_minutes", 5.0))
    curves = {name: entry["curve"] for name, entry in document["models"].items()}
    figures = {"error_by_horizon": plot_error_by_horizon(curves, freq)}
    if backtests:
        horizon = int(document["horizon"])
        step = 3 if horizon >= 3 else horizon

        # The band shows the model with the best *validation* score (the test part only
        # scores; it never chooses, not even what a plot highlights).
        def valid_score(name: str) -> float:
            scores = [v for v in document["models"][name].get("valid_rmse") or [] if v is not None]
            return float(np.mean(scores)) if scores else np.inf

        best = min(document["models"], key=valid_score)
        sensors = pick_sensors(panel, next(iter(backtests.values())))
        figures["forecasts"] = plot_forecasts(
            panel, backtests, step=step, sensors=sensors, band_model=best
        )
    return figures


_CAPTIONS = {
    "error_by_horizon": "Error at each forecast step on the test part (mean over seeds).",
    "forecasts": "Forecasts against actual values for the most variable sensors; the shaded "
    "band is the best model's prediction interval.",
}


def _header(document: Mapping[str, Any]) -> list[tuple[str, str]]:
    split = document.get("split", {})
    devices = sorted({str(e.get("device")) for e in document["models"].values()})
    return [
        ("data set", str(document.get("dataset"))),
        ("split (steps)", ", ".join(f"{k} {v}" for k, v in split.items())),
        (
            "input window / horizon",
            f"{document['window']} / {document['horizon']} steps "
            f"of {document.get('freq_minutes', 5):g} min",
        ),
        ("device", ", ".join(devices)),
        ("written", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())),
    ]


_PROTOCOL = (
    "Chronological split; validation is the end of the training part and chooses epochs, "
    "the kept seed and the interval widths; the test part is only scored. Scored windows "
    "have their input window and all targets inside the test part (T-GCN's protocol); "
    "models that need a longer history (seasonal naive: a day) read it from before the "
    "test part, so every model is scored on the same targets. Metrics are on the original "
    "scale, pooled over steps 1..h, missing targets not scored; mean ± sample std over "
    "seeds for neural models."
)


def render_markdown(document: Mapping[str, Any], figure_files: Mapping[str, str]) -> str:
    """The report as Markdown; ``figure_files`` maps figure names to relative PNG paths."""
    columns, rows = comparison_rows(document)
    parts = [f"# Forecast comparison: {document.get('dataset')}", ""]
    parts += [f"- **{k}**: {v}" for k, v in _header(document)]
    parts += ["", _PROTOCOL, "", "## Test-part errors (pooled over steps 1..h)", ""]
    parts += [markdown_table(columns, rows), ""]
    reference = reference_rows(document)
    if reference is not None:
        parts += [
            "## Published reference (los-loop)",
            "",
            markdown_table(*reference),
            "",
            f"Source: {REFERENCE_SOURCE}",
            "",
        ]
    for name, path in figure_files.items():
        parts += [
            f"## {name.replace('_', ' ')}",
            "",
            f"![{name}]({path})",
            "",
            _CAPTIONS.get(name, ""),
            "",
        ]
    return "\n".join(parts)


def render_html(document: Mapping[str, Any], figures: Mapping[str, bytes]) -> str:
    """The report as one self-contained HTML page (PNG figures embedded as base64)."""
    columns, rows = comparison_rows(document)
    title = html.escape(f"Forecast comparison: {document.get('dataset')}")
    items = "".join(
        f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in _header(document)
    )
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{title}</title><style>"
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}"
        "table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}"
        "img{max-width:100%}</style></head><body>",
        f"<h1>{title}</h1><ul>{items}</ul><p>{html.escape(_PROTOCOL)}</p>",
        "<h2>Test-part errors (pooled over steps 1..h)</h2>",
        html_table(columns, rows),
    ]
    reference = reference_rows(document)
    if reference is not None:
        parts += [
            "<h2>Published reference (los-loop)</h2>",
            html_table(*reference),
            f"<p><small>Source: {html.escape(REFERENCE_SOURCE)}</small></p>",
        ]
    for name, png in figures.items():
        encoded = base64.b64encode(png).decode("ascii")
        parts += [
            f"<h2>{html.escape(name.replace('_', ' '))}</h2>",
            f"<img alt='{html.escape(name)}' src='data:image/png;base64,{encoded}'>",
            f"<p>{html.escape(_CAPTIONS.get(name, ''))}</p>",
        ]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(
    out: str | Path, document: Mapping[str, Any], figures: Mapping[str, bytes]
) -> tuple[Path, Path]:
    """Write ``out/report.md`` (+ ``out/figures/*.png``) and ``out/report.html``."""
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    files = {}
    for name, png in figures.items():
        (out / "figures" / f"{name}.png").write_bytes(png)
        files[name] = f"figures/{name}.png"
    md = out / "report.md"
    md.write_text(render_markdown(document, files))
    page = out / "report.html"
    page.write_text(render_html(document, figures))
    return md, page
