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

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from models.bundle import BundleError, load_model
from models.tgclstm import TGCLSTM


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
        from pipeline.graph import haversine_km

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
    ``per_sensor`` strongest sources (all ``table`` rows with ``sensor``), width and
    colour by influence; nodes are coloured by the total influence they exert on others.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    pos, layout = _positions(model)
    edges = model.influence()
    links = (edges["hop"] == 1) & (edges["source"] != edges["target"])
    fig, ax = plt.subplots(figsize=(10, 8), dpi=120)
    road = np.stack([pos[edges["source"][links]], pos[edges["target"][links]]], axis=1)
    ax.add_collection(LineCollection(road, colors="0.85", linewidths=0.6, zorder=1))

    shown = table if sensor is not None else table[table["rank"] <= per_sensor]
    if len(shown):
        strength = shown["influence"].to_numpy()
        segs = np.stack(
            [pos[shown.source_i.to_numpy()], pos[shown.target_i.to_numpy()]], axis=1
        )  # [edge, 2, 2]
        norm = plt.Normalize(vmin=0.0, vmax=float(strength.max()) or 1.0)
        order = np.argsort(strength)  # strongest drawn last, on top
        lines = LineCollection(
            segs[order],
            cmap="viridis",
            norm=norm,
            linewidths=0.5 + 3.5 * strength[order] / (strength.max() or 1.0),
            alpha=0.85,
            zorder=2,
        )
        lines.set_array(strength[order])
        ax.add_collection(lines)
        fig.colorbar(lines, ax=ax, shrink=0.7, label="learned influence Σ_k |W_gc^k[i, j]|")

    exerted = np.zeros(len(model.sensor_ids))
    full = influence_table(model, top=len(model.sensor_ids)) if sensor is not None else table
    np.add.at(exerted, full.source_i.to_numpy(), full["influence"].to_numpy())
    ax.scatter(
        pos[:, 0],
        pos[:, 1],
        s=14,
        c=exerted,
        cmap="magma_r",
        edgecolors="0.3",
        linewidths=0.3,
        zorder=3,
    )
    if sensor is not None and len(shown):
        target = int(shown.target_i.iloc[0])
        ax.scatter(
            *pos[target],
            s=220,
            marker="*",
            c="red",
            edgecolors="k",
            zorder=5,
            label=f"sensor {sensor}",
        )
        for row in shown.itertuples():
            ax.annotate(
                str(row.source),
                pos[row.source_i],
                fontsize=7,
                zorder=6,
                xytext=(3, 3),
                textcoords="offset points",
            )
        ax.legend(loc="best")
    ax.autoscale()
    ax.set_aspect(
        "equal" if layout == "graph layout" else 1.0 / np.cos(np.radians(pos[:, 1].mean()))
    )
    if layout == "coordinates":
        ax.set_xlabel("longitude")
        ax.set_ylabel("latitude")
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    what = (
        f"the {len(shown)} strongest sources of sensor {sensor}"
        if sensor
        else (f"each sensor's {per_sensor} strongest sources")
    )
    ax.set_title(f"TGC-LSTM learned influence: {what}\n({layout}; grey: road links)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
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
    out.mkdir(parents=True, exist_ok=True)
    csv = out / "influence.csv"
    table.drop(columns=["target_i", "source_i"]).to_csv(csv, index=False, float_format="%.6g")
    png = out / "influence_map.png"
    layout = draw_influence_map(model, table, png, sensor=sensor)
    return Explanation(
        table=table.drop(columns=["target_i", "source_i"]), csv=csv, png=png, layout=layout
    )
