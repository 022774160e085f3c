"""The simulator's regimes beyond freeway speeds (used by :mod:`pipeline.data.simulate`).

* :func:`passenger_counts`: counts (e.g. metro station entries) with a strong daily
  cycle: per-station volume (log-normal), morning and evening peaks whose mix depends on
  the station, a day-to-day factor, Poisson noise.
* :func:`coupled_field`: a disturbance that travels along the graph,
  ``z_t = φ ((1 - c) z_{t-1} + c P z_{t-1}) + σ ε_t`` with ``P`` the in-neighbour mean:
  ``c = 0`` gives independent sensors, ``c = 1`` a state that is the mean of the
  neighbours' previous states (information flows along the links).
* :func:`cut_service_hours`: drop the night rows and lay the rest on a regular grid, so
  one day's last step abuts the next day's first (as a CSV of service hours without a
  time column reads).
* :func:`outage_gaps`: days with a network-wide outage of a few hours (missing).
* :func:`random_graph`: a graph with as many links as the road graph, placed at random:
  it carries no information about the data.
* :func:`regime_change`: from one step on, the level of every sensor shifts and its
  noise grows (sensors replaced, roadworks): what the drift watcher must notice.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.panel import LabeledEvent, SensorPanel
from pipeline.data.graph import RoadGraph


def passenger_counts(
    corridor: np.ndarray,
    timestamps: pd.DatetimeIndex,
    level: np.ndarray,
    field: np.ndarray | None,
    rng: np.random.Generator,
) -> np.ndarray:
    """Counts per step ``[time, node]`` (float32, whole numbers).

    ``level`` ``[time, node]`` in (0, 1] scales the expected count (incidents: a
    disruption empties a station); ``field`` ``[time, node]`` is a log-scale disturbance.
    """
    n = len(corridor)
    base = rng.lognormal(np.log(60.0), 0.8, size=n)  # [node] mean entries per step
    am = rng.uniform(0.3, 1.6, size=n)  # residential stations peak in the morning
    pm = rng.uniform(0.3, 1.6, size=n)
    mu_am = rng.uniform(7.6, 8.4, size=n)
    mu_pm = rng.uniform(17.2, 18.2, size=n)
    clock = timestamps.hour.to_numpy() + timestamps.minute.to_numpy() / 60.0  # [time]
    weekend = (timestamps.day_of_week.to_numpy() >= 5)[:, None]  # [time, 1]

    def bump(mu: np.ndarray | float, sd: float) -> np.ndarray:
        return np.exp(-0.5 * ((clock[:, None] - mu) / sd) ** 2)  # [time, node]

    weekday = 0.25 + am * bump(mu_am, 0.9) + pm * bump(mu_pm, 1.2) + 0.4 * bump(13.0, 2.5)
    weekend_shape = 0.2 + 0.8 * bump(14.0, 3.0)
    shape = np.where(weekend, weekend_shape, weekday)  # [time, node]
    day = np.asarray((timestamps.normalize() - timestamps[0].normalize()).days)  # [time]
    n_days = int(day[-1]) + 1
    daily = rng.lognormal(0.0, 0.08, size=n_days)[day]  # [time] weather, events
    line = rng.lognormal(0.0, 0.05, size=(n_days, int(corridor.max()) + 1))
    mean = base[None, :] * shape * daily[:, None] * line[day][:, corridor] * level
    if field is not None:
        mean = mean * np.exp(field)
    return rng.poisson(mean).astype(np.float32)


def coupled_field(
    graph: RoadGraph,
    n_time: int,
    coupling: float,
    rng: np.random.Generator,
    *,
    phi: float = 0.95,
    sd: float = 1.0,
) -> np.ndarray:
    """The disturbance ``z`` ``[time, node]`` (float32) with stationary sd about ``sd``."""
    n = graph.num_nodes
    adj = graph.adjacency(weighted=False)  # [i, j]: link j -> i
    degree = np.asarray(adj.sum(axis=1)).ravel()
    mean_in = sp.diags(1.0 / np.maximum(degree, 1.0)) @ adj  # [N, N] in-neighbour mean
    alone = degree == 0  # a sensor without in-links keeps its own state
    shock_sd = sd * np.sqrt(1.0 - phi**2)
    shocks = rng.standard_normal((n_time, n)) * shock_sd  # [time, node]
    z = np.empty((n_time, n), dtype=np.float64)
    state = rng.standard_normal(n) * sd
    for t in range(n_time):
        mixed = (1.0 - coupling) * state + coupling * np.where(alone, state, mean_in @ state)
        state = phi * mixed + shocks[t]
        z[t] = state
    # Mixing averages shocks out, so the field shrinks with coupling: rescale to sd.
    z *= sd / max(float(z.std()), 1e-9)
    return z.astype(np.float32)


def cut_service_hours(
    values: np.ndarray,
    mask: np.ndarray,
    timestamps: pd.DatetimeIndex,
    events: list[LabeledEvent],
    hours: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray, pd.DatetimeIndex, list[LabeledEvent]]:
    """Keep the rows whose clock hour lies in ``[hours[0], hours[1])`` and re-lay them on a
    regular grid from the first timestamp; events keep the rows they covered."""
    clock = timestamps.hour.to_numpy() + timestamps.minute.to_numpy() / 60.0
    keep = (clock >= hours[0]) & (clock < hours[1])  # [time]
    rows = np.flatnonzero(keep)
    grid = pd.date_range(timestamps[rows[0]], periods=len(rows), freq=timestamps.freq)
    position = {t: k for k, t in enumerate(timestamps[rows])}
    kept = []
    for event in events:
        inside = rows[(timestamps[rows] >= event.start) & (timestamps[rows] <= event.end)]
        if inside.size:
            first, last = position[timestamps[inside[0]]], position[timestamps[inside[-1]]]
            kept.append(LabeledEvent(grid[first], grid[last], event.sensors, event.kind))
    return values[rows], mask[rows], grid, kept


def outage_gaps(
    mask: np.ndarray, timestamps: pd.DatetimeIndex, share: float, rng: np.random.Generator
) -> None:
    """With probability ``share`` per day, every sensor misses 2-8 hours (mask False, in place)."""
    step_h = timestamps.freq.nanos / 3.6e12
    day = np.asarray((timestamps - timestamps[0]).days)  # [time] whole days since the start
    for d in np.unique(day):
        if rng.random() >= share:
            continue
        rows = np.flatnonzero(day == d)
        length = max(1, round(rng.uniform(2.0, 8.0) / step_h))
        start = int(rng.integers(rows[0], max(rows[0] + 1, rows[-1] - length + 1)))
        mask[start : start + length] = False


def random_graph(graph: RoadGraph, rng: np.random.Generator) -> RoadGraph:
    """As many undirected links as ``graph`` has, between random sensor pairs, no lengths."""
    n = graph.num_nodes
    target = max(1, graph.num_edges // 2)
    pairs: set[tuple[int, int]] = set()
    while len(pairs) < min(target, n * (n - 1) // 2):
        a, b = (int(v) for v in rng.integers(0, n, size=2))
        if a != b:
            pairs.add((min(a, b), max(a, b)))
    degree = np.zeros(n, dtype=np.int64)
    for a, b in pairs:
        degree[a] += 1
        degree[b] += 1
    for lone in np.flatnonzero(degree == 0):  # no sensor left without a link
        a = int(lone)
        other = int(rng.choice(np.delete(np.arange(n), a))) if n > 1 else a
        if other != a:
            pairs.add((min(a, other), max(a, other)))
    src, dst = np.array(sorted(pairs), dtype=np.int64).T
    return RoadGraph.from_edges(np.concatenate([src, dst]), np.concatenate([dst, src]), num_nodes=n)


def plain_graph(graph: RoadGraph) -> RoadGraph:
    """The same links as 0/1 weights without lengths or coordinates (a bare adjacency)."""
    src, dst = graph.edge_index
    return RoadGraph.from_edges(src, dst, num_nodes=graph.num_nodes)


def regime_change(
    panel: SensorPanel, start: int, *, level: float, noise: float, seed: int = 0
) -> SensorPanel:
    """``panel`` with every value from step ``start`` on multiplied by ``level`` and
    given Gaussian noise of standard deviation ``noise`` (the panel's unit)."""
    rng = np.random.default_rng(seed)
    values = np.array(panel.values, dtype=np.float32)  # [time, node]
    after = values[start:]
    after *= np.float32(level)
    after += rng.normal(0.0, noise, after.shape).astype(np.float32)
    values[~panel.mask] = np.nan
    return SensorPanel.from_values(
        values, panel.timestamps, list(panel.sensor_ids), coords=panel.coords,
        graph=panel.graph, name=f"{panel.name}+regime@{start}",
    )  # fmt: skip
