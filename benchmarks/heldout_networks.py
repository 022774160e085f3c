"""Sensor networks generated unlike the simulator's, for checking ``roadcast train``
on data nobody tuned it on (numpy/pandas only, fixed seeds). Written from a brief that
named only the goals of issue 12 and the kinds of network already checked; no setting of
roadcast was chosen on them. docs/results.md, "Networks generated outside the simulator",
gives what training on them measured.

water.csv      + water_edges.csv    60 pressure sensors (m head), 15 min, 60 days;
                                     edge list src,dst,weight (one line per pipe,
                                     src = the end nearer the pumping station)
highway.csv    + highway_edges.csv  150 speed sensors (mph), 1 min, 5 days;
                                     directed edge list downstream -> upstream,
                                     src,dst,distance_mi
air.csv        + air_adj.csv        40 PM2.5 sensors (ug/m3), 30 min, 120 days;
                                     square distance-weighted matrix with header,
                                     4 sensors with ~20 % empty cells

Two more, made later by a probe of the weekend input (docs/decisions.md, "Weekend input"):

hourly.csv     + hourly_adj.csv     40 speed sensors (mph), 1 h, four months, weekly
                                     profile and holidays, at the 40 METR-LA locations
                                     nearest its centre (needs
                                     ``metr-la/graph_sensor_locations.csv`` under the
                                     data folder, else skipped); Gaussian kernel matrix
corridor.csv   + corridor_edges.csv 60 vehicle-count sensors, 15 min, 35 days, a
                                     directed corridor, edge list src,dst,distance_mi

And one made to check what neither had: sensors of very different scales and growth.

parking.csv    + parking_edges.csv  80 garages' occupied spaces, 10 min, 6 weeks,
                                     capacities 50-3,000, office / retail / residential
                                     profiles, demand growing 25 % over the weeks,
                                     events spilling to nearby garages; edge list
                                     from,to,km to each garage's 4 nearest

Run: ``python -m benchmarks.heldout_networks --out DIR [--data DATA]`` then, per network,
``roadcast train csv:DIR/water.csv --adjacency DIR/water_edges.csv --seeds 2 --out ...``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse.csgraph import minimum_spanning_tree, shortest_path

from models.graph import haversine_km
from pipeline.data.datasets import dataset_dir


# ---------------------------------------------------------------------------- helpers
def row_normalise(a: np.ndarray) -> np.ndarray:
    s = a.sum(axis=1, keepdims=True)
    s[s == 0] = 1.0
    return a / s


def ar1(rng: np.random.Generator, n: int, k: int, phi: float, sd: float) -> np.ndarray:
    """[n, k] AR(1) noise with stationary sd ``sd``."""
    e = rng.normal(0, sd * np.sqrt(1 - phi**2), size=(n, k))
    x = np.empty((n, k))
    x[0] = rng.normal(0, sd, size=k)
    for t in range(1, n):
        x[t] = phi * x[t - 1] + e[t]
    return x


# ---------------------------------------------------------------------------- a. water
def make_water(out: Path) -> None:
    rng = np.random.default_rng(20240601)
    n, days, step_min = 60, 60, 15
    steps = days * 24 * 60 // step_min
    times = pd.date_range("2024-04-01T00:00:00", periods=steps, freq=f"{step_min}min")

    # Junction positions (km) in a 6 x 5 km town; 3 district metered areas (zones), each
    # fed by one pumping station; pipes: a minimum spanning tree plus some loops.
    centres = np.array([[1.2, 1.2], [4.6, 1.5], [3.0, 4.0]])
    zone = np.repeat(np.arange(3), [22, 20, 18])
    pos = centres[zone] + rng.normal(0, 0.75, size=(n, 2))
    stations = np.array([0, 22, 42])  # the junction next to each pumping station
    pos[stations] = centres
    d = np.sqrt(((pos[:, None] - pos[None]) ** 2).sum(-1))
    tree = minimum_spanning_tree(d).tocoo()
    pipes = [(min(i, j), max(i, j)) for i, j in zip(tree.row, tree.col, strict=True)]
    existing = {tuple(sorted(p)) for p in pipes}
    # loops: ~12 short extra pipes
    order = np.dstack(np.unravel_index(np.argsort(d, axis=None), d.shape))[0]
    extra = 0
    for i, j in order:
        if i < j and (i, j) not in existing and d[i, j] < 0.9 and rng.random() < 0.35:
            pipes.append((i, j))
            existing.add((i, j))
            extra += 1
            if extra == 12:
                break
    length = np.full((n, n), np.inf)
    adj = np.zeros((n, n))
    for i, j in pipes:
        length[i, j] = length[j, i] = max(d[i, j], 0.05)
        adj[i, j] = adj[j, i] = 1.0 / (0.2 + d[i, j])
    sp = shortest_path(np.where(np.isfinite(length), length, 0.0), directed=False)
    # hydraulic distance of each junction from its zone's station
    path_km = np.array([sp[stations[zone[i]], i] for i in range(n)])

    # Demand: daily cycle (morning + evening peaks), weekend shift, slow seasonal trend,
    # multiplicative AR noise per zone
    hod = times.hour.to_numpy() + times.minute.to_numpy() / 60
    dow = times.day_of_week.to_numpy()
    weekend = dow >= 5

    def bump(h: np.ndarray, c: float, w: float) -> np.ndarray:
        dh = (h - c + 12) % 24 - 12
        return np.exp(-0.5 * (dh / w) ** 2)

    wk = 0.35 + 1.0 * bump(hod, 7.2, 1.1) + 0.75 * bump(hod, 19.5, 1.6) + 0.35 * bump(hod, 13, 2.5)
    we = 0.35 + 0.8 * bump(hod, 9.5, 1.6) + 0.7 * bump(hod, 19.0, 1.8) + 0.45 * bump(hod, 13.5, 2.5)
    base = np.where(weekend, we, wk)
    trend = 1 + 0.12 * np.arange(steps) / steps  # warming spring: more demand
    demand = base[:, None] * trend[:, None] * np.exp(ar1(rng, steps, 3, 0.97, 0.08))  # [T, 3]

    # Pressure-drop disturbances travelling along the pipes: a field that is fed at a
    # junction (bursts, hydrant flushing, big consumers) and diffuses over the pipe graph
    # one neighbourhood per step while it decays.
    m = row_normalise(adj)
    field = np.zeros((steps, n))
    src = np.zeros((steps, n))
    n_events = 140
    for _ in range(n_events):
        t0 = int(rng.integers(0, steps - 4))
        node = int(rng.integers(0, n))
        dur = int(rng.integers(2, 24))  # 30 min to 6 h
        src[t0 : t0 + dur, node] -= rng.uniform(1.5, 6.0)
    small = ar1(rng, steps, n, 0.8, 0.25)  # small local demand fluctuations
    for t in range(1, steps):
        field[t] = (
            0.88 * (0.35 * field[t - 1] + 0.65 * m @ field[t - 1]) + 0.5 * src[t] + 0.3 * small[t]
        )

    # Pump switches: each station runs 1 or 2 pumps; a change shifts the zone's head
    head = np.zeros((steps, 3))
    for z in range(3):
        t, state = 0, 1
        while t < steps:
            dur = int(rng.integers(4 * 8, 4 * 24 * 4))  # 8 h to 4 days
            head[t : t + dur, z] = 6.5 * state
            state = 1 - state
            t += dur
    # head reaches farther junctions attenuated
    atten = np.exp(-path_km / 4.0)

    elevation = rng.uniform(5, 35, size=n)
    static = 82 - elevation
    r = 2.0 + 1.3 * path_km  # head-loss coefficient grows with distance
    dz = demand[:, zone]  # [T, n]
    p = static + head[:, zone] * atten - r * dz**1.85 + field
    p += rng.normal(0, 0.2, size=p.shape)  # sensor noise
    p = np.round(p, 2)

    ids = [f"J{100 + i}" for i in range(n)]
    df = pd.DataFrame(p, columns=ids)
    df.insert(0, "timestamp", times.strftime("%Y-%m-%dT%H:%M:%S"))
    df.to_csv(out / "water.csv", index=False)
    # one line per pipe, src = the end nearer its station (the flow direction)
    rows = []
    for i, j in pipes:
        a, b = (i, j) if path_km[i] <= path_km[j] else (j, i)
        rows.append((ids[a], ids[b], round(float(adj[i, j]), 4)))
    pd.DataFrame(rows, columns=["src", "dst", "weight"]).to_csv(
        out / "water_edges.csv", index=False
    )
    print(f"water: {p.shape}, {len(pipes)} pipes, pressure {p.min():.1f}..{p.max():.1f} m")


# ---------------------------------------------------------------------------- b. highway
def make_highway(out: Path) -> None:
    rng = np.random.default_rng(20240909)
    steps = 5 * 24 * 60
    times = pd.date_range("2024-09-09T00:00:00", periods=steps, freq="1min")  # Mon-Fri
    # Freeway A: 95 sensors A000 (upstream) .. A094 (downstream);
    # Freeway B: 55 sensors B000 .. B054 merging into A between A059 and A060.
    na, nb = 95, 55
    n = na + nb
    ids = [f"A{i:03d}" for i in range(na)] + [f"B{i:03d}" for i in range(nb)]
    down = {}  # sensor -> its downstream neighbour
    for i in range(na - 1):
        down[i] = i + 1
    for i in range(nb - 1):
        down[na + i] = na + i + 1
    down[na + nb - 1] = 60
    spacing_mi = rng.uniform(0.3, 0.7, size=n)  # distance to downstream neighbour
    # upstream hop distance: up[x, y] = hops from x going upstream to reach y (or -1)
    ups: dict[int, list[int]] = {i: [] for i in range(n)}
    for u, v in down.items():
        ups[v].append(u)
    up_mi = np.full((n, n), np.nan)
    for x in range(n):
        up_mi[x, x] = 0.0
        stack = [x]
        while stack:
            v = stack.pop()
            for u in ups[v]:
                up_mi[x, u] = up_mi[x, v] + spacing_mi[u]
                stack.append(u)

    vf = rng.uniform(62, 70, size=n)  # free-flow speeds
    vjam = rng.uniform(12, 25, size=n)
    cong = np.zeros((steps, n))
    t_idx = np.arange(steps)

    def add_queue(x0: int, t0: int, grow_min: int, severity: float) -> None:
        # queue tail moves upstream at ~12 mph while the bottleneck is active, then the
        # recovery wave (head) moves upstream at ~18 mph until it meets the tail
        w_back = rng.uniform(9, 15) / 60  # miles per minute
        w_rec = rng.uniform(15, 22) / 60
        tail_end = w_back * grow_min
        t_meet = grow_min + tail_end / (w_rec - w_back) if w_rec > w_back else grow_min + 60
        t_end = min(steps, t0 + int(t_meet) + 2)
        tt = t_idx[t0:t_end] - t0
        tail = np.minimum(w_back * tt, tail_end + w_back * np.maximum(tt - grow_min, 0))
        head = np.maximum(0, w_rec * (tt - grow_min))
        dist = up_mi[x0]
        ok = ~np.isnan(dist)
        dd = dist[ok][None, :]
        a = np.clip((tail[:, None] - dd) / 0.08, -50, 50)
        b = np.clip((dd - head[:, None]) / 0.08, -50, 50)
        inside = 1 / (1 + np.exp(-a)) / (1 + np.exp(-b))
        cong[t0:t_end, ok] = np.maximum(cong[t0:t_end, ok], severity * inside)

    # recurrent rush-hour bottlenecks (weekdays): A near the merge, A downstream, B on-ramp
    bottlenecks = [
        (62, 7 * 60 + 10, 95, 0.85),
        (90, 16 * 60 + 40, 120, 0.9),
        (na + 40, 7 * 60 + 30, 70, 0.7),
    ]
    for day in range(5):
        for x0, start, grow, sev in bottlenecks:
            t0 = day * 1440 + start + int(rng.normal(0, 12))
            add_queue(
                x0, t0, max(20, int(grow * rng.uniform(0.7, 1.3))), sev * rng.uniform(0.8, 1.05)
            )
    # incidents at random places and times
    for _ in range(22):
        x0 = int(rng.integers(5, n))
        t0 = int(rng.integers(0, steps - 60))
        add_queue(x0, t0, int(rng.integers(10, 50)), rng.uniform(0.5, 0.95))

    speed = vf + (vjam - vf) * cong
    speed += ar1(rng, steps, n, 0.9, 1.6) + rng.normal(0, 1.8, size=(steps, n))
    speed = np.clip(speed, 3, 85)
    speed = np.round(speed, 1)

    # stuck-at-constant stretches (a detector freezing on its last value)
    for s in rng.choice(n, size=9, replace=False):
        for _ in range(int(rng.integers(1, 3))):
            t0 = int(rng.integers(60, steps - 800))
            dur = int(rng.integers(180, 720))  # 3 to 12 hours
            speed[t0 : t0 + dur, s] = speed[t0 - 1, s]

    df = pd.DataFrame(speed, columns=ids)
    df.insert(0, "timestamp", times.strftime("%Y-%m-%dT%H:%M:%S"))
    df.to_csv(out / "highway.csv", index=False)
    # directed: downstream sensor -> its upstream neighbour (shockwaves travel upstream)
    rows = [(ids[dn], ids[u], round(float(spacing_mi[u]), 3)) for u, dn in down.items()]
    pd.DataFrame(rows, columns=["src", "dst", "distance_mi"]).to_csv(
        out / "highway_edges.csv", index=False
    )
    print(
        f"highway: {speed.shape}, {len(rows)} links, "
        f"speeds {speed.min():.1f}..{speed.max():.1f} mph"
    )


# ---------------------------------------------------------------------------- c. air
def make_air(out: Path) -> None:
    rng = np.random.default_rng(20240301)
    n, days = 40, 120
    steps = days * 48
    times = pd.date_range("2024-01-10T00:00:00Z", periods=steps, freq="30min")
    pos = rng.uniform(0, 30, size=(n, 2))  # km
    d = np.sqrt(((pos[:, None] - pos[None]) ** 2).sum(-1))
    w = np.exp(-((d / 6.0) ** 2))
    np.fill_diagonal(w, 0.0)
    w[w < 0.1] = 0.0
    # every sensor gets at least its nearest neighbour
    for i in range(n):
        j = int(np.argsort(d[i])[1])
        w[i, j] = w[j, i] = max(w[i, j], float(np.exp(-((d[i, j] / 6.0) ** 2))), 0.05)
    m = row_normalise(w)

    # regional level: slow random walk (weather regimes), bounded by mean reversion
    regional = np.zeros(steps)
    for t in range(1, steps):
        regional[t] = 0.999 * regional[t - 1] + rng.normal(0, 0.06)
    # local field: random-walk-like, spatially diffusing over the distance graph
    sources = rng.choice(n, size=4, replace=False)  # industrial emitters
    emit = np.zeros((steps, n))
    for s in sources:
        t = 0
        while t < steps:
            off = int(rng.integers(10, 200))
            on = int(rng.integers(6, 60))
            t += off
            emit[t : t + on, s] += rng.uniform(4, 12)
            t += on
    u = np.zeros((steps, n))
    innov = rng.normal(0, 0.9, size=(steps, n))
    for t in range(1, steps):
        u[t] = 0.97 * (0.45 * u[t - 1] + 0.55 * m @ u[t - 1]) + 0.35 * emit[t] + innov[t]
    # sensor drift (calibration), slow, piecewise linear with a random slope
    drift = np.cumsum(rng.normal(0, 0.02, size=(steps, n)), axis=0)  # random walk
    drift += np.linspace(0, 1, steps)[:, None] * rng.normal(0, 4, size=n)
    # a weak daily cycle (no strong diurnal pattern)
    hod = times.hour.to_numpy() + times.minute.to_numpy() / 60
    daily = 0.6 * np.sin(2 * np.pi * (hod - 8) / 24)[:, None]
    level = rng.uniform(22, 38, size=n)
    x = level + 4.0 * regional[:, None] + u + drift + daily
    x += rng.normal(0, 0.8, size=x.shape)
    x = np.clip(x, 0.5, None)
    x = np.round(x, 1)
    ids = [f"AQ-{c}{i:02d}" for i, c in zip(range(n), "NSEW" * 10, strict=False)]
    frame = pd.DataFrame(x, columns=ids).astype(object)
    # 4 sensors with ~20 % empty cells (gaps in runs, as from a flaky modem)
    for s in rng.choice(n, size=4, replace=False):
        miss = np.zeros(steps, bool)
        while miss.mean() < 0.2:
            t0 = int(rng.integers(0, steps))
            miss[t0 : t0 + int(rng.integers(1, 30))] = True
        frame.iloc[miss, s] = ""
    frame.insert(0, "time", times.strftime("%Y-%m-%dT%H:%M:%SZ"))
    frame.to_csv(out / "air.csv", index=False)
    adj = pd.DataFrame(np.round(w, 4), columns=ids)
    adj.to_csv(out / "air_adj.csv", index=False)
    print(f"air: {x.shape}, {int((w > 0).sum())} nonzero, values {x.min():.1f}..{x.max():.1f}")


# ---------------------------------------------------------------------------- d. hourly
def bump(hour: np.ndarray, centre: float, width: float) -> np.ndarray:
    """A daily Gaussian bump at ``centre`` o'clock, ``width`` hours wide."""
    dh = (hour - centre + 12) % 24 - 12
    return np.exp(-0.5 * (dh / width) ** 2)


def make_hourly(out: Path, locations: Path) -> None:
    if not locations.is_file():
        print(f"hourly: skipped, {locations} is missing")
        return
    rng = np.random.default_rng(101)
    loc = pd.read_csv(locations)
    centre = loc[["latitude", "longitude"]].median().to_numpy()
    d0 = haversine_km(loc.latitude.to_numpy(), loc.longitude.to_numpy(), centre[0], centre[1])
    n = 40
    sub = loc.iloc[np.argsort(d0)[:n]].reset_index(drop=True)
    ids = sub.sensor_id.astype(str).tolist()
    lat, lon = sub.latitude.to_numpy(), sub.longitude.to_numpy()
    d = haversine_km(lat[:, None], lon[:, None], lat[None], lon[None])
    w = np.exp(-((d / d[np.triu_indices(n, 1)].std()) ** 2))
    w[w < 0.1] = 0.0
    times = pd.date_range("2024-09-02", "2024-12-31 23:00", freq="1h")
    steps = len(times)
    hod = times.hour.to_numpy().astype(float)
    dow = times.day_of_week.to_numpy()
    holidays = ["2024-09-02", "2024-10-14", "2024-11-11", "2024-11-28", "2024-11-29"]
    holidays += ["2024-12-24", "2024-12-25", "2024-12-31"]
    is_hol = np.isin(times.strftime("%Y-%m-%d"), holidays)
    kind = np.where(is_hol | (dow == 6), 2, np.where(dow == 5, 1, 0))  # weekday, Sat, Sun
    am, pm = rng.uniform(0.2, 1.0, n), rng.uniform(0.2, 1.0, n)
    weekday = am[None] * bump(hod, 8, 1.3)[:, None] + pm[None] * bump(hod, 17.5, 1.6)[:, None]
    weekday += (dow == 4)[:, None] * 0.25 * bump(hod, 15, 2.0)[:, None]  # Friday afternoon
    weekday += (dow == 0)[:, None] * 0.15 * bump(hod, 8, 1.3)[:, None]  # Monday morning
    saturday = 0.35 * bump(hod, 14, 3.0)[:, None] * np.ones((1, n))
    sunday = 0.2 * bump(hod, 15, 3.0)[:, None] * np.ones((1, n))
    profile = np.where(
        (kind == 0)[:, None], weekday, np.where((kind == 1)[:, None], saturday, sunday)
    )
    season = 1 + 0.15 * np.arange(steps) / steps
    # incidents diffuse over the kernel graph for hours
    m = w / w.sum(1, keepdims=True)
    z = np.zeros((steps, n))
    shocks = (rng.random((steps, n)) < 0.004) * rng.uniform(0.5, 1.5, (steps, n))
    for t in range(1, steps):
        z[t] = 0.45 * z[t - 1] + 0.45 * (m @ z[t - 1]) + shocks[t] + rng.normal(0, 0.04, n)
    noise = np.exp(rng.normal(0, 0.08, (steps, n)))
    congestion = np.clip(profile * season[:, None] * noise + 0.6 * z, 0, 0.95)
    free_flow = rng.uniform(58, 68, n)
    speed = free_flow[None] * (1 - 0.75 * congestion) + rng.normal(0, 0.8, (steps, n))
    frame = pd.DataFrame(np.round(speed, 2), columns=ids)
    frame.insert(0, "timestamp", times.strftime("%Y-%m-%d %H:%M:%S"))
    frame.to_csv(out / "hourly.csv", index=False)
    pd.DataFrame(np.round(w, 6), columns=ids).to_csv(out / "hourly_adj.csv", index=False)
    print(f"hourly: {speed.shape}, {int((w > 0).sum()) - n} edges, {is_hol.sum() // 24} holidays")


# ---------------------------------------------------------------------------- e. corridor
def make_corridor(out: Path) -> None:
    rng = np.random.default_rng(202)
    n = 60
    times = pd.date_range("2024-05-06", periods=35 * 96, freq="15min")
    steps = len(times)
    h = times.hour.to_numpy() + times.minute.to_numpy() / 60
    weekend = times.day_of_week.to_numpy() >= 5
    workday = 0.02 + bump(h, 7.5, 1.0) + 0.7 * bump(h, 16.5, 1.5) + 0.25 * bump(h, 12, 2.5)
    profile = np.where(weekend, 0.02 + 0.5 * bump(h, 13, 3.0), workday)
    profile = np.where((h < 5) | (h >= 22), profile * 0.3, profile)
    lag = rng.choice([1, 2], size=n, p=[0.6, 0.4])  # steps from one sensor to the next
    retain = rng.uniform(0.75, 0.95, n)
    ramp = rng.lognormal(np.log(2.0), 0.6, n)
    ramp[0] = 14.0
    surge = np.zeros(steps)  # platoons entering at the upstream end
    for t in range(1, steps):
        surge[t] = 0.85 * surge[t - 1] + rng.normal(0, 0.25)
    ramp_noise = np.exp(rng.normal(0, 0.3, (steps, n)))
    mu = np.zeros((steps, n))
    mu[:, 0] = ramp[0] * profile * ramp_noise[:, 0] * np.exp(surge)
    for i in range(1, n):
        up = np.concatenate([np.full(lag[i], mu[0, i - 1]), mu[: -lag[i], i - 1]])
        mu[:, i] = retain[i] * up + ramp[i] * profile * ramp_noise[:, i]
    counts = rng.poisson(mu)
    ids = [f"MP{2.0 + 0.9 * i:05.1f}" for i in range(n)]
    frame = pd.DataFrame(counts, columns=ids)
    frame.insert(0, "time", times.strftime("%Y-%m-%dT%H:%M"))
    frame.to_csv(out / "corridor.csv", index=False)
    miles = np.round(rng.uniform(0.6, 1.2, n - 1), 2)
    edges = pd.DataFrame({"src": ids[:-1], "dst": ids[1:], "distance_mi": miles})
    edges.to_csv(out / "corridor_edges.csv", index=False)
    print(f"corridor: {counts.shape}, {(counts == 0).mean():.3f} zeros, mean {counts.mean():.2f}")


# ---------------------------------------------------------------------------- f. parking
def make_parking(out: Path) -> None:
    rng = np.random.default_rng(505)
    n = 80
    times = pd.date_range("2025-01-06", periods=42 * 144, freq="10min")
    steps = len(times)
    h = times.hour.to_numpy() + times.minute.to_numpy() / 60
    dow = times.day_of_week.to_numpy()
    pos = rng.uniform(0, 8, (n, 2))
    kind = rng.choice(3, n, p=[0.5, 0.3, 0.2])  # office, retail, residential
    capacity = np.round(np.exp(rng.uniform(np.log(50), np.log(3000), n)))
    working = np.clip((h - 7.5) / 1.5, 0, 1) * np.clip((18.5 - h) / 1.5, 0, 1)
    office = np.where(dow < 5, 0.1 + 0.8 * working, 0.05)
    retail = 0.05 + np.where(dow >= 5, 0.9, 0.55) * bump(h, 14, 3.0)
    retail += np.where(dow == 3, 0.2, 0) * bump(h, 19, 1.5)  # late opening on Thursdays
    away = np.clip((h - 8) / 1.5, 0, 1) * np.clip((18 - h) / 1.5, 0, 1)
    residential = 0.85 - 0.5 * away * (dow < 5)
    profile = np.stack([office, retail, residential], 1)[:, kind]
    growth = 1 + 0.25 * np.arange(steps) / steps  # a new business district fills up
    d = np.sqrt(((pos[:, None] - pos[None]) ** 2).sum(-1))
    w = np.exp(-(d**2))
    np.fill_diagonal(w, 0)
    m = row_normalise(w)
    z = np.zeros((steps, n))
    events = (rng.random((steps, n)) < 0.0008) * rng.uniform(0.2, 0.5, (steps, n))
    for t in range(1, steps):
        z[t] = 0.93 * z[t - 1] + 0.05 * (m @ z[t - 1]) + events[t] + 0.6 * (m @ events[t])
    noise = np.exp(rng.normal(0, 0.05, (steps, n)))
    share = np.clip(profile * growth[:, None] * noise + z, 0, 1)
    occupied = np.round(share * capacity + rng.normal(0, 0.01, (steps, n)) * capacity)
    occupied = np.clip(occupied, 0, capacity).astype(int)
    ids = [f"G{i:03d}" for i in range(n)]
    frame = pd.DataFrame(occupied, columns=ids)
    frame.insert(0, "ts", times.strftime("%Y-%m-%d %H:%M"))
    frame.to_csv(out / "parking.csv", index=False)
    nearest = [
        (ids[i], ids[j], round(float(d[i, j]), 3)) for i in range(n) for j in np.argsort(d[i])[1:5]
    ]
    pd.DataFrame(nearest, columns=["from", "to", "km"]).to_csv(
        out / "parking_edges.csv", index=False
    )
    print(f"parking: {occupied.shape}, capacities {capacity.min():.0f}..{capacity.max():.0f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the CSV files")
    parser.add_argument("--data", type=Path, help="data folder (default: ROADCAST_DATA_DIR)")
    args = parser.parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    make_water(out)
    make_highway(out)
    make_air(out)
    make_hourly(out, dataset_dir(args.data) / "metr-la" / "graph_sensor_locations.csv")
    make_corridor(out)
    make_parking(out)


if __name__ == "__main__":
    main()
