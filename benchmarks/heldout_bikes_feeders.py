"""Two more sensor networks unlike the simulator's, for checking ``roadcast train`` on
data nobody tuned it on (numpy/pandas only, fixed seeds). Written from a brief naming
only the goals of issue 12 and the kinds of network already checked; no setting of
roadcast was chosen on them.

bikes.csv    + bikes_edges.csv    60 bike-share stations' bikes available, 30 min,
                                  12 weeks; integers in 0..capacity (10-40 docks),
                                  trips simulated one by one: commutes residential ->
                                  office in the morning and back in the evening,
                                  leisure trips at weekends, rain spells, riders who
                                  find a full dock ride on to the nearest free one,
                                  night rebalancing by truck, one station closed
                                  5 days (empty cells); edge list
                                  source,target,weight,distance_m to each station's
                                  4 nearest, both directions
feeders.csv  + feeders_adj.csv    50 distribution feeders' load (MW), 1 h, 26 weeks
                                  (March-September); radial grid (a tree); residential,
                                  commercial and industrial customers, heating and air
                                  conditioning driven by a shared temperature, two
                                  holidays (4 July in training, Labor Day in test),
                                  faults tripping a feeder and everything below it
                                  followed by cold-load pickup, one feeder's load
                                  switched to its neighbour for a week in the test part;
                                  0/1 symmetric matrix with a header of ids

Run: ``python -m benchmarks.heldout_bikes_feeders --out DIR`` then, per network,
``roadcast train csv:DIR/bikes.csv --adjacency DIR/bikes_edges.csv --seeds 2 --out ...``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd


def bump(hour: np.ndarray | float, centre: float, width: float) -> np.ndarray:
    """A daily Gaussian bump at ``centre`` o'clock, ``width`` hours wide."""
    dh = (np.asarray(hour) - centre + 12) % 24 - 12
    return np.exp(-0.5 * (dh / width) ** 2)


# ---------------------------------------------------------------------------- a. bikes
def make_bikes(out: Path) -> None:
    rng = np.random.default_rng(7301)
    n, days = 60, 84
    times = pd.date_range("2024-04-01", periods=days * 48, freq="30min")  # a Monday
    steps = len(times)
    hod = times.hour.to_numpy() + times.minute.to_numpy() / 60
    dow = times.day_of_week.to_numpy()
    # 0 residential (outskirts), 1 office (downtown), 2 leisure (park / waterfront)
    kind = np.repeat([0, 1, 2], [26, 20, 14])
    ang = rng.uniform(0, 2 * np.pi, n)
    rad = np.where(kind == 0, rng.uniform(1.8, 3.5, n), rng.uniform(0, 1.3, n))
    pos = np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1)  # km
    pos[kind == 2] += np.array([1.8, -1.2])  # the park lies south-east of downtown
    d = np.sqrt(((pos[:, None] - pos[None]) ** 2).sum(-1))
    cap = rng.integers(10, 41, n)
    pop = rng.lognormal(0, 0.45, n)  # station popularity
    nearest = np.argsort(d, 1)[:, 1:]

    # rain: ~1 day in 5 with a spell of 3-15 h
    rain = np.zeros(steps, bool)
    for day in range(days):
        if rng.random() < 0.2:
            t0 = day * 48 + int(rng.integers(10, 36))
            rain[t0 : t0 + int(rng.integers(6, 31))] = True
    warm = 0.8 + 0.4 * np.arange(steps) / steps  # spring: more riders
    weekday = dow < 5
    # departures per station and step, by kind
    work = np.stack(  # weekdays: residents leave at 8, offices empty at 17:30
        [
            2.2 * bump(hod, 8, 0.8) + 0.5 * bump(hod, 18.5, 1.5),
            0.4 * bump(hod, 12.5, 1) + 2.4 * bump(hod, 17.5, 0.9),
            0.3 * bump(hod, 13, 3) + 0.3 * bump(hod, 19, 1.5),
        ],
        1,
    )
    rest = np.stack([0.6 * bump(hod, 12, 3), 0.15 * bump(hod, 13, 3), 1.6 * bump(hod, 15, 2.5)], 1)
    dep = np.where(weekday[:, None], work, rest)
    dep += 0.03  # night riders
    dep *= 2.6 * (warm * np.where(rain, 0.2, 1.0))[:, None]
    # destination attraction by kind
    att = np.zeros((steps, 3))
    morning = weekday * bump(hod, 8.3, 1.0)
    evening = weekday * bump(hod, 17.8, 1.2)
    att[:, 0] = 0.3 + 3.0 * evening + (~weekday) * 0.8
    att[:, 1] = 0.3 + 3.0 * morning + 0.3 * weekday
    att[:, 2] = 0.3 + (~weekday) * 2.5 * bump(hod, 14, 3) + 0.4 * weekday * bump(hod, 19, 2)
    gravity = np.exp(-d / 1.6)
    np.fill_diagonal(gravity, 0.15)

    bikes = np.zeros((steps, n), int)
    b = np.round(cap * np.where(kind == 0, 0.6, 0.4)).astype(int)
    in_transit = np.zeros(n, int)
    target = np.where(kind == 0, 0.75, np.where(kind == 1, 0.25, 0.5))
    for t in range(steps):
        # arrivals from last step's slower trips, then this step's departures
        arrive = in_transit.copy()
        want = rng.poisson(dep[t, kind] * pop)
        go = np.minimum(want, b)
        b = b - go
        w = gravity * att[t, kind][None, :]
        w /= w.sum(1, keepdims=True)
        in_transit = np.zeros(n, int)
        for i in np.nonzero(go)[0]:
            dest = rng.multinomial(go[i], w[i])
            slow = rng.binomial(dest, 0.35)
            arrive += dest - slow
            in_transit += slow
        # docking: a full station sends riders on to the nearest one with space
        for j in np.nonzero(arrive)[0]:
            k = arrive[j]
            room = cap[j] - b[j]
            put = min(k, room)
            b[j] += put
            k -= put
            for m in nearest[j]:
                if k == 0:
                    break
                put = min(k, cap[m] - b[m])
                b[m] += put
                k -= put
        # rebalancing trucks at night (01:00-05:00): 25 % of the way to each kind's target
        if 1 <= hod[t] < 5 and times[t].minute == 0:
            goal = np.round(cap * target).astype(int)
            b = b + np.round(0.25 * (goal - b)).astype(int)
        b = np.clip(b, 0, cap)
        bikes[t] = b

    ids = [f"ST{i:03d}" for i in range(n)]
    frame = pd.DataFrame(bikes, columns=ids).astype(object)
    closed = int(rng.choice(np.nonzero(kind == 1)[0]))
    t0 = 50 * 48 + 14
    frame.iloc[t0 : t0 + 5 * 48, closed] = ""  # a station closed for works: no readings
    frame.insert(0, "time", times.strftime("%Y-%m-%dT%H:%M:%S"))
    frame.to_csv(out / "bikes.csv", index=False)
    pairs = {(i, int(j)) for i in range(n) for j in nearest[i, :4]}
    pairs |= {(j, i) for i, j in pairs}
    rows = [
        (ids[i], ids[j], round(float(np.exp(-d[i, j] / 0.8)), 4), round(1000 * d[i, j]))
        for i, j in sorted(pairs)
    ]
    pd.DataFrame(rows, columns=["source", "target", "weight", "distance_m"]).to_csv(
        out / "bikes_edges.csv", index=False
    )
    full = (bikes == cap[None]).mean()
    print(
        f"bikes: {bikes.shape}, {len(rows)} links, {(bikes == 0).mean():.3f} empty, "
        f"{full:.3f} full, {rain.mean():.3f} of steps rainy, station {ids[closed]} closed"
    )


# ---------------------------------------------------------------------------- b. feeders
def make_feeders(out: Path) -> None:
    rng = np.random.default_rng(7302)
    n = 50
    times = pd.date_range("2024-03-11", periods=182 * 24, freq="1h")  # a Monday
    steps = len(times)
    hod = times.hour.to_numpy().astype(float)
    dow = times.day_of_week.to_numpy()
    day = np.arange(steps) // 24
    # radial tree: feeder 0 leaves the substation; each new one hangs off a recent one
    parent = np.full(n, -1)
    for i in range(1, n):
        parent[i] = int(rng.integers(max(0, i - 6), i))
    adj = np.zeros((n, n), int)
    for i in range(1, n):
        adj[i, parent[i]] = adj[parent[i], i] = 1
    children: list[list[int]] = [[] for _ in range(n)]
    for i in range(1, n):
        children[parent[i]].append(i)

    def below(i: int) -> list[int]:
        out_, stack = [], [i]
        while stack:
            v = stack.pop()
            out_.append(v)
            stack.extend(children[v])
        return out_

    # customer mix drifts along branches: a child resembles its parent
    mix = np.zeros((n, 3))  # residential, commercial, industrial
    mix[0] = rng.dirichlet([2, 2, 1])
    for i in range(1, n):
        mix[i] = 0.6 * mix[parent[i]] + 0.4 * rng.dirichlet([2, 1.2, 0.6])
    size = rng.uniform(1.5, 9.0, n)  # MW peak-ish

    # temperature (deg C): season, daily cycle, synoptic weather (AR, days), heat waves
    season = 8 + 17 * np.sin(np.pi * np.clip((day - 5) / 190, 0, 1))
    synoptic = np.zeros(steps)
    for t in range(1, steps):
        synoptic[t] = 0.985 * synoptic[t - 1] + rng.normal(0, 0.55)
    temp = season + synoptic + 5 * np.sin(2 * np.pi * (hod - 9) / 24)
    branch_t = rng.normal(0, 0.8, n)  # slightly warmer or cooler districts
    holidays = np.isin(times.strftime("%Y-%m-%d"), ["2024-07-04", "2024-09-02"])
    offday = (dow >= 5) | holidays
    resid = np.where(
        offday,
        0.45 + 0.35 * bump(hod, 11, 3) + 0.55 * bump(hod, 19.5, 2.2),
        0.4 + 0.35 * bump(hod, 7, 1.2) + 0.6 * bump(hod, 19.5, 2.0),
    )
    comm_open = np.clip((hod - 7) / 2, 0, 1) * np.clip((19 - hod) / 2, 0, 1)
    comm = np.where(offday, 0.3 + 0.15 * comm_open * (dow == 5), 0.3 + 0.65 * comm_open)
    shifts = np.clip(hod - 6, 0, 1) * np.clip(22 - hod, 0, 1)  # two shifts, 06:00-22:00
    indus = np.where(offday, 0.55, 0.75 + 0.2 * shifts)
    base = np.stack([resid, comm, indus], 1) @ mix.T  # [T, n]
    tf = temp[:, None] + branch_t[None]
    cooling = np.clip(tf - 21, 0, None) ** 1.3 * (0.025 * mix[:, 0] + 0.02 * mix[:, 1])[None]
    heating = np.clip(13 - tf, 0, None) * 0.012 * mix[:, 0][None]
    cooling *= np.where(offday, 1.0, 0.9)[:, None] + 0.3 * bump(hod, 17, 3)[:, None]
    noise = np.zeros((steps, n))
    e = rng.normal(0, 0.03, (steps, n))
    for t in range(1, steps):
        noise[t] = 0.9 * noise[t - 1] + e[t]
    load = size[None] * (base + cooling + heating) * np.exp(noise)

    # faults: a feeder trips with all below it, out 1-5 h, then cold-load pickup
    test_start = int(steps * 0.8)
    for _ in range(14):
        i = int(rng.integers(0, n))
        t0 = int(rng.integers(24, steps - 30))
        dur = int(rng.integers(1, 6))
        for v in below(i):
            load[t0 : t0 + dur, v] *= 0.02
            k = np.arange(8)
            load[t0 + dur : t0 + dur + 8, v] *= 1 + 0.5 * np.exp(-k / 2.5)
    # reconfiguration: a tie switch moves most of one feeder's customers to its neighbour
    moved = int(rng.choice([i for i in range(1, n) if not children[i]]))
    nb = int(parent[moved])
    r0 = test_start + 24 * 9 + 10
    sl = slice(r0, r0 + 24 * 7)
    shift = 0.85 * load[sl, moved]
    load[sl, moved] -= shift
    load[sl, nb] += shift
    load += rng.normal(0, 0.02, load.shape)
    load = np.round(np.clip(load, 0, None), 3)

    ids = [f"FDR-{11 + i}" for i in range(n)]
    frame = pd.DataFrame(load, columns=ids)
    frame.insert(0, "datetime", times.strftime("%Y-%m-%d %H:%M"))
    frame.to_csv(out / "feeders.csv", index=False)
    pd.DataFrame(adj, columns=ids).to_csv(out / "feeders_adj.csv", index=False)
    print(
        f"feeders: {load.shape}, {n - 1} lines, load {load.min():.2f}..{load.max():.2f} MW, "
        f"temp {temp.min():.1f}..{temp.max():.1f} C, {ids[moved]} -> {ids[nb]} from "
        f"{times[r0]} for a week; test from {times[test_start]}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the CSV files")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    make_bikes(args.out)
    make_feeders(args.out)


if __name__ == "__main__":
    main()
