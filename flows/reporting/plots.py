"""The report's figures as PNG bytes, drawn with matplotlib's object API (no pyplot state,
no display): error by horizon, forecast against actual, the network map."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from flows.reporting.tables import horizon_label
from models.forecasters.evaluation import Backtest
from models.panel import SensorPanel


def draw_literally(fig: Any) -> None:
    """Draw every text of ``fig`` as written: titles, labels, legends and annotations
    carry sensor ids and names (data), never to be read as mathtext (``$...$``) or TeX."""
    from matplotlib.text import Text

    for text in fig.findobj(Text):
        text.set_usetex(False)
        text.set_parse_math(False)


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    draw_literally(fig)
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
