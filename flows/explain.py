"""``roadcast explain``: which sensors a trained TGC-LSTM listens to, as a table and a map.

TGC-LSTM learns one graph-convolution weight ``W_gc^k[i, j]`` per hop ``k`` and reachable
pair (sensor j feeds sensor i). Cui et al. read these weights to see which road segments
influence each other; here the influence of j on i is ``Σ_k |W_gc^k[i, j]|`` (the size of
j's reading in every hop feature of i, whatever its sign), ranked per sensor without i
itself. ``share`` is that influence over the total influence of i's other neighbours.

The map draws the sensors at their coordinates (stored in the bundle when the data set
has them; otherwise a spring layout of the road graph) and, over the road links, each
sensor's strongest incoming influences as lines whose width and colour follow the
learned weight, as the paper draws them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flows.reporting.text import csv_safe
from models.bundle import BundleError
from models.forecasters.registry import load_model
from models.forecasters.tgclstm import TGCLSTM


@dataclass(frozen=True, eq=False)
class Explanation:
    """What :func:`explain` wrote: the table (also as CSV) and the map."""

    table: pd.DataFrame
    csv: Path
    png: Path
    layout: str  # "coordinates" or "graph layout"


def load_tgclstm(bundle_dir: str | Path) -> TGCLSTM:
    """The TGC-LSTM in ``bundle_dir``, or a :class:`BundleError` naming what it holds instead."""
    model = load_model(bundle_dir)
    if not isinstance(model, TGCLSTM):
        raise BundleError(
            f"bundle {bundle_dir} holds a {model.name!r} model; explain reads the learned graph "
            "weights of a 'tgclstm' bundle (train one with --models tgclstm)"
        )
    n = len(model.sensor_ids)
    coords = model.coords
    if coords is not None and (coords.shape != (n, 2) or not np.isfinite(coords).all()):
        raise BundleError(
            f"bundle {bundle_dir}: config.json 'coords' must be {n} finite (latitude, "
            f"longitude) pairs, got an array of shape {coords.shape}; retrain it"
        )
    if not np.isfinite(model.influence()["weight"]).all():
        raise BundleError(
            f"bundle {bundle_dir}: its graph weights are not finite (NaN or infinity); "
            "retrain it or copy the bundle again"
        )
    return model


def influence_table(model: TGCLSTM, *, sensor: str | None = None, top: int = 10) -> pd.DataFrame:
    """The ``top`` most influential other sensors of every sensor (or of ``sensor``).

    Returns
    -------
    DataFrame with one row per (target, source): ``target``, ``rank`` (1 = strongest),
    ``source``, ``influence`` (``Σ_k |W_gc^k[target, source]|``), ``share`` (of the
    target's total influence from others), ``hop_1 .. hop_K`` (the signed weights; 0
    where the pair is not within that hop) and ``distance_km`` (straight line, when the
    bundle has coordinates).

    Raises
    ------
    ValueError
        For ``top < 1`` or a ``sensor`` that is not in the bundle.
    """
    if top < 1:
        raise ValueError(f"--top must be >= 1, got {top}")
    ids = np.asarray(model.sensor_ids)
    edges = model.influence()
    n_hops = int(edges["hop"].max()) if len(edges["hop"]) else 0
    frame = pd.DataFrame(
        {
            "target_i": edges["target"],
            "source_i": edges["source"],
            "hop": edges["hop"],
            "weight": edges["weight"].astype(np.float64),
        }
    )
    frame = frame[frame.target_i != frame.source_i]
    if sensor is not None:
        where = np.flatnonzero(ids == str(sensor))
        if len(where) == 0:
            raise ValueError(
                f"sensor {sensor!r} is not in this bundle ({len(ids)} sensors, e.g. "
                f"{', '.join(ids[:3])}); pass one of its sensor ids"
            )
        frame = frame[frame.target_i == int(where[0])]
    wide = frame.pivot_table(
        index=["target_i", "source_i"], columns="hop", values="weight", fill_value=0.0
    )
    wide = wide.reindex(columns=range(1, n_hops + 1), fill_value=0.0)
    wide.columns = [f"hop_{k}" for k in wide.columns]
    wide = wide.reset_index()
    hop_cols = [c for c in wide.columns if c.startswith("hop_")]
    wide["influence"] = wide[hop_cols].abs().sum(axis=1)
    total = wide.groupby("target_i")["influence"].transform("sum")
    wide["share"] = np.where(total > 0, wide["influence"] / total.where(total > 0, 1.0), 0.0)
    wide = wide.sort_values(["target_i", "influence"], ascending=[True, False])
    wide["rank"] = wide.groupby("target_i").cumcount() + 1
    wide = wide[wide["rank"] <= top]
    if model.coords is not None:
        from pipeline.data.graph import haversine_km

        c = model.coords
        t, s = wide.target_i.to_numpy(), wide.source_i.to_numpy()
        wide["distance_km"] = haversine_km(c[t, 0], c[t, 1], c[s, 0], c[s, 1])
    wide.insert(0, "target", ids[wide.target_i.to_numpy()])
    wide.insert(2, "source", ids[wide.source_i.to_numpy()])
    columns = ["target", "rank", "source", "influence", "share", *hop_cols]
    if "distance_km" in wide:
        columns.append("distance_km")
    keep = wide[["target_i", "source_i", *columns]]
    return keep.reset_index(drop=True)


def _positions(model: TGCLSTM) -> tuple[np.ndarray, str]:
    """``[node, 2]`` plot positions (lon, lat) and what they are."""
    if model.coords is not None:
        return np.asarray(model.coords)[:, ::-1], "coordinates"
    import networkx as nx

    edges = model.influence()
    first = edges["hop"] == 1
    graph = nx.Graph()
    graph.add_nodes_from(range(len(model.sensor_ids)))
    graph.add_edges_from(
        (int(s), int(t))
        for s, t in zip(edges["source"][first], edges["target"][first], strict=True)
        if s != t
    )
    layout = nx.spring_layout(graph, seed=0)
    return np.array([layout[i] for i in range(len(model.sensor_ids))]), "graph layout"


def _aspect(pos: np.ndarray, layout: str) -> float:
    """y/x scale that makes a degree of longitude as long as it is at this latitude."""
    return 1.0 / np.cos(np.radians(pos[:, 1].mean())) if layout == "coordinates" else 1.0


def _draw_layer(
    ax: Any,
    pos: np.ndarray,
    road: np.ndarray,
    shown: pd.DataFrame,
    exerted: np.ndarray,
    *,
    vmax: float,
    arrows: bool,
) -> tuple[Any, Any]:
    """Road links (grey), influence lines (coloured by strength) and the sensors."""
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    ax.add_collection(LineCollection(list(road), colors="0.85", linewidths=0.6, zorder=1))
    norm = plt.Normalize(vmin=0.0, vmax=vmax)
    cmap = plt.get_cmap("viridis")
    strength = shown["influence"].to_numpy()
    order = np.argsort(strength)  # strongest drawn last, on top
    src = pos[shown.source_i.to_numpy()[order]]
    dst = pos[shown.target_i.to_numpy()[order]]
    widths = 0.5 + 3.5 * strength[order] / vmax
    lines = LineCollection(
        list(np.stack([src, dst], axis=1)),
        cmap=cmap,
        norm=norm,
        linewidths=widths,
        alpha=0.85,
        zorder=2,
    )
    lines.set_array(strength[order])
    if arrows:  # one target: arrows show the direction source -> target
        for a, b, w, v in zip(src, dst, widths, strength[order], strict=True):
            ax.annotate(
                "",
                xy=b,
                xytext=a,
                zorder=2,
                arrowprops={
                    "arrowstyle": "-|>",
                    "mutation_scale": 14,
                    "color": cmap(norm(v)),
                    "lw": 0.7 * w,
                    "alpha": 0.9,
                    "shrinkA": 2,
                    "shrinkB": 6,
                },
            )
    else:
        ax.add_collection(lines)
    dots = ax.scatter(
        pos[:, 0],
        pos[:, 1],
        s=14,
        c=exerted,
        cmap="magma_r",
        edgecolors="0.3",
        linewidths=0.3,
        zorder=3,
    )
    return lines, dots


def draw_influence_map(
    model: TGCLSTM,
    table: pd.DataFrame,
    path: Path,
    *,
    sensor: str | None = None,
    per_sensor: int = 3,
) -> str:
    """Write the influence map PNG to ``path``; returns the layout used.

    Grey lines are the road links (hop 1); coloured lines are, for every target, its
    ``per_sensor`` strongest sources (with ``sensor``: all of that sensor's rows in
    ``table``, as arrows, plus a zoomed panel with their ids), width and colour by learned
    influence; sensors are coloured by the total influence they exert on the others.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flows.reporting.plots import draw_literally

    pos, layout = _positions(model)
    edges = model.influence()
    links = (edges["hop"] == 1) & (edges["source"] != edges["target"])
    road = np.stack([pos[edges["source"][links]], pos[edges["target"][links]]], axis=1)
    full = table if sensor is None else influence_table(model, top=len(model.sensor_ids))
    exerted = np.zeros(len(model.sensor_ids))
    np.add.at(exerted, full.source_i.to_numpy(), full["influence"].to_numpy())
    shown = table if sensor is not None else table[table["rank"] <= per_sensor]
    vmax = float(shown["influence"].max()) if len(shown) else 1.0
    vmax = vmax if vmax > 0 else 1.0

    span = np.ptp(pos, axis=0) + 1e-9
    aspect = _aspect(pos, layout)
    height = float(np.clip(8.0 * span[1] * aspect / span[0], 4.0, 10.0))
    panels = 2 if sensor is not None and len(shown) else 1
    fig, axes = plt.subplots(
        1, panels, figsize=(9.0 * panels + 1.5, height + 1.2), dpi=120, squeeze=False
    )
    ax = axes[0, 0]
    lines, dots = _draw_layer(ax, pos, road, shown, exerted, vmax=vmax, arrows=False)
    if panels == 2:
        target = int(shown.target_i.iloc[0])
        ax.scatter(*pos[target], s=220, marker="*", c="red", edgecolors="k", zorder=5)
        zoom = axes[0, 1]
        _draw_layer(zoom, pos, road, shown, exerted, vmax=vmax, arrows=True)
        zoom.scatter(
            *pos[target],
            s=260,
            marker="*",
            c="red",
            edgecolors="k",
            zorder=5,
            label=f"sensor {sensor}",
        )
        # A square window (in ground distance) around the sensor and its sources.
        near = pos[np.concatenate([[target], shown.source_i.to_numpy()])]
        centre = (near.min(axis=0) + near.max(axis=0)) / 2
        zoom_aspect = _aspect(pos, layout)
        half = 0.6 * max(np.ptp(near[:, 0]), np.ptp(near[:, 1]) * zoom_aspect, 1e-3)
        zoom.set_xlim(centre[0] - half, centre[0] + half)
        zoom.set_ylim(centre[1] - half / zoom_aspect, centre[1] + half / zoom_aspect)
        for row in shown.itertuples():
            zoom.annotate(
                f"{row.rank}: {row.source}",
                pos[row.source_i],
                fontsize=7,
                zorder=6,
                xytext=(4, 4),
                textcoords="offset points",
            )
        zoom.set_aspect(zoom_aspect)
        zoom.legend(loc="upper left")
        zoom.set_title(f"zoom: sources of sensor {sensor} (rank: id)")
    for a in axes[0]:
        if layout == "coordinates":
            a.set_xlabel("longitude")
            a.set_ylabel("latitude")
        else:
            a.set_xticks([])
            a.set_yticks([])
    ax.autoscale()
    ax.set_aspect(aspect)
    what = (
        f"the {len(shown)} strongest sources of sensor {sensor}"
        if sensor
        else f"each sensor's {per_sensor} strongest sources"
    )
    ax.set_title(f"TGC-LSTM learned influence: {what}\n({layout}; grey: road links)")
    fig.colorbar(
        lines,
        ax=axes[0, -1],
        shrink=0.6,
        pad=0.02,
        label="learned influence of j on i: Σ_k |W_gc^k[i, j]|",
    )
    fig.colorbar(
        dots,
        ax=axes[0, -1],
        shrink=0.6,
        pad=0.01,
        label="sensor: total influence exerted on others",
    )
    draw_literally(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return layout


def explain(
    bundle_dir: str | Path, *, out: str | Path, sensor: str | None = None, top: int = 10
) -> Explanation:
    """Write ``influence.csv`` and ``influence_map.png`` for a TGC-LSTM bundle into ``out``.

    Raises
    ------
    BundleError
        When ``bundle_dir`` holds no (valid) bundle or another model's bundle.
    ValueError
        For an unknown ``sensor`` or ``top < 1``.
    """
    model = load_tgclstm(bundle_dir)
    table = influence_table(model, sensor=sensor, top=top)
    out = Path(out)
    csv, png = out / "influence.csv", out / "influence_map.png"
    for path in (csv, png):  # both or neither: refuse a path in the way before writing
        if path.is_dir():
            raise IsADirectoryError(f"cannot write {path}: it is a folder; move it")
    try:
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".explain-", dir=out))
    except OSError as exc:
        raise OSError(
            f"cannot write into the output folder {out} ({exc.strerror or exc}); pass another --out"
        ) from None
    shown = table.drop(columns=["target_i", "source_i"])
    try:  # both files are written aside, then moved in: never one half-written
        layout = draw_influence_map(model, table, staging / png.name, sensor=sensor)
        csv_safe(shown).to_csv(staging / csv.name, index=False, float_format="%.6g")
        for path in (csv, png):
            os.replace(staging / path.name, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Explanation(table=shown, csv=csv, png=png, layout=layout)
