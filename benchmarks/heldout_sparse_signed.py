"""Two sensor networks of kinds no earlier check covered, for checking ``roadcast train``
on data nobody tuned it on (numpy/pandas only, fixed seeds): sparse counts with many exact
zeros, and readings that cross zero. Written from a brief naming only the goals of issue
12 and the kinds of network already checked; no setting of roadcast was chosen on them.

counters.csv   + counters_knn.csv   70 pedestrian and cyclist counters, counts per 15 min,
                                    8 weeks (April-May); commuter cycle lanes, downtown
                                    footways, a riverside trail, a campus (its term ends
                                    in week 6) and a nightlife street; rain spells, three
                                    holidays, a weekly market, neighbourhood demand shared
                                    through a smooth latent field; counts are Poisson on a
                                    gamma-mixed rate, so quiet hours are mostly zeros; three
                                    counters offline for 2-6 days (empty cells) and one whose
                                    loop was cut, reading 0 for 4 days; edge list
                                    from,to,walk_m from each counter to its 3 nearest, as
                                    a k-nearest-neighbour query returns it (not symmetric)
substations.csv + grid_lines.csv    50 substations' net power drawn from the grid (MW,
                                    negative = exported), hourly, 16 weeks (March-June),
                                    timestamps with their UTC offset across the change to
                                    summer time; load with heating and cooling, rooftop
                                    solar under a clear-sky curve, cloud fronts moving across
                                    the region west to east, cloudy spells of days, new
                                    solar installed week by week, a historian outage (every
                                    substation empty for 3 h), telemetry gaps, one
                                    transformer out for 9 h (reads 0.00); line list
                                    from,to,length_km, each line once (a meshed grid)

Run: ``python -m benchmarks.heldout_sparse_signed --out DIR`` then, per network,
``roadcast train csv:DIR/counters.csv --adjacency DIR/counters_knn.csv --seeds 2 --out ...``.
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


def smooth_ar(rng: np.random.Generator, steps: int, k: int, phi: float) -> np.ndarray:
    """``[steps, k]`` AR(1) series of unit stationary sd."""
    e = rng.normal(0, np.sqrt(1 - phi**2), (steps, k))
    x = np.zeros((steps, k))
    x[0] = rng.normal(0, 1, k)
    for t in range(1, steps):
        x[t] = phi * x[t - 1] + e[t]
    return x


def spells(
    rng: np.random.Generator, days: int, per_day: int, p_start: float, lo: int, hi: int
) -> np.ndarray:
    """Boolean ``[days * per_day]``: spells starting on a ``p_start`` share of days, lasting
    ``lo``..``hi`` steps."""
    on = np.zeros(days * per_day, bool)
    for day in range(days):
        if rng.random() < p_start:
            t0 = day * per_day + int(rng.integers(0, per_day))
            on[t0 : t0 + int(rng.integers(lo, hi + 1))] = True
    return on


# ---------------------------------------------------------------------------- a. counters
def make_counters(out: Path, n: int = 70, weeks: int = 8) -> None:
    rng = np.random.default_rng(7401)
    per_day = 96
    days = 7 * weeks
    times = pd.date_range("2024-04-08", periods=days * per_day, freq="15min")  # a Monday
    steps = len(times)
    hod = times.hour.to_numpy() + times.minute.to_numpy() / 60
    dow = times.day_of_week.to_numpy()
    date = times.strftime("%Y-%m-%d")
    holiday = np.isin(date, ["2024-05-01", "2024-05-09", "2024-05-20"])
    offday = (dow >= 5) | holiday
    # 0 commuter cycle lane, 1 downtown footway, 2 riverside trail, 3 campus, 4 nightlife
    shares = np.array([22, 18, 12, 10, 8]) / 70
    counts = np.floor(shares * n).astype(int)
    counts[0] += n - counts.sum()
    kind = np.repeat(np.arange(5), counts)
    centres = np.array([[0.0, 0.0], [0.0, 0.0], [1.5, -1.0], [2.2, 1.8], [-0.6, 0.4]])
    spread = np.array([2.2, 0.6, 0.0, 0.4, 0.25])
    pos = centres[kind] + rng.normal(0, 1, (n, 2)) * spread[kind, None]
    trail = kind == 2  # along the river: a line running south-west to north-east
    along = rng.uniform(-3, 3, trail.sum())
    pos[trail] = (
        centres[2] + np.stack([along, 0.45 * along], 1) + rng.normal(0, 0.05, (trail.sum(), 2))
    )
    d = np.sqrt(((pos[:, None] - pos[None]) ** 2).sum(-1))  # km

    weekday = np.stack(
        [
            2.6 * bump(hod, 8.0, 0.7) + 2.0 * bump(hod, 17.4, 0.9) + 0.3 * bump(hod, 13, 2),
            0.6 * bump(hod, 8.5, 1.0) + 1.8 * bump(hod, 12.6, 1.1) + 1.0 * bump(hod, 17.5, 1.3),
            0.5 * bump(hod, 7.0, 1.0) + 0.9 * bump(hod, 18.3, 1.5),
            1.2 * bump(hod, 9.8, 1.2) + 1.4 * bump(hod, 12.4, 0.8) + 1.1 * bump(hod, 16, 1.6),
            0.3 * bump(hod, 19, 1.5) + 0.6 * bump(hod, 22.5, 1.6),
        ],
        1,
    )
    weekend = np.stack(
        [
            0.7 * bump(hod, 11.5, 2.5),
            1.6 * bump(hod, 13.5, 2.2),
            2.4 * bump(hod, 12.5, 2.8),
            0.15 * bump(hod, 14, 3),
            0.5 * bump(hod, 20, 2) + 1.4 * bump(hod, 23.8, 1.6),
        ],
        1,
    )
    prof = np.where(offday[:, None], weekend, weekday)  # [T, kind]
    # Friday and Saturday nights are the nightlife street's; Sunday night is quiet
    night_out = np.isin(dow, [4, 5]) & ((hod >= 20) | (hod < 3))
    night_out |= np.isin(dow, [5, 6]) & (hod < 3)
    prof[:, 4] *= np.where(night_out, 2.2, np.where((dow == 6) & (hod >= 18), 0.4, 1.0))
    # the campus term ends on 2024-05-17: a third of its activity stays
    prof[:, 3] *= np.where(times >= pd.Timestamp("2024-05-18"), 0.35, 1.0)
    floor = np.array([0.02, 0.05, 0.01, 0.02, 0.03])  # small hours
    prof = prof + floor[None]

    # weather: rain spells (cyclists and trail users stay home), warm afternoons
    rain = spells(rng, days, per_day, 0.4, 8, 48)
    wet = np.array([0.3, 0.65, 0.25, 0.6, 0.7])
    warmth = np.clip(
        0.6
        + 0.8 * np.arange(steps) / steps
        + 0.3 * smooth_ar(rng, days, 1, 0.6).repeat(per_day)[:steps],
        0.3,
        None,
    )
    warm_gain = np.array([0.4, 0.3, 0.9, 0.2, 0.5])
    weather = np.where(rain[:, None], wet[None], 1.0) * (
        1 + warm_gain[None] * (warmth[:, None] - 1)
    )

    # neighbourhood demand: iid slow factors mixed by distance, so nearby counters share it
    mixing = np.exp(-((d / 0.7) ** 2))
    mixing /= np.sqrt((mixing**2).sum(1, keepdims=True))
    shared = smooth_ar(rng, steps, n, 0.985) @ mixing.T  # [T, n], unit sd per counter
    # a Saturday market fills two downtown footways 08:00-13:00
    market = np.zeros((steps, n))
    stalls = rng.choice(np.flatnonzero(kind == 1), 2, replace=False)
    market[:, stalls] = ((dow == 5) & (hod >= 8) & (hod < 13))[:, None] * 1.8

    peak = rng.uniform(2.0, 8.0, n)  # the busiest quarter-hour's mean count
    top = np.array([prof[:, k].max() for k in range(5)])
    scale = peak / top[kind]
    rate = scale[None] * prof[:, kind] * weather[:, kind] * np.exp(0.35 * shared - 0.06)
    rate *= 1 + market
    mixed = rate * rng.gamma(2.5, 1 / 2.5, rate.shape)  # over-dispersion: groups, bursts
    values = rng.poisson(mixed).astype(float)

    # failures: three counters offline for days, one whose loop was cut reads 0
    broken = rng.choice(n, 4, replace=False)
    for i, span in zip(broken[:3], [2, 4, 6], strict=True):
        t0 = int(rng.integers(3 * per_day, steps - (span + 1) * per_day))
        values[t0 : t0 + span * per_day, i] = np.nan
    t0 = int(rng.integers(10 * per_day, steps - 5 * per_day))
    values[t0 : t0 + 4 * per_day, broken[3]] = 0.0

    ids = [f"C{i + 101}" for i in range(n)]
    frame = pd.DataFrame(values, columns=ids).astype("Int64").astype(object)
    frame = frame.where(frame.notna(), "")
    frame.insert(0, "timestamp", times.strftime("%Y-%m-%dT%H:%M:%S"))
    frame.to_csv(out / "counters.csv", index=False)
    nearest = np.argsort(d, 1)[:, 1:4]
    rows = [(ids[i], ids[j], round(1000 * 1.3 * d[i, j])) for i in range(n) for j in nearest[i]]
    pd.DataFrame(rows, columns=["from", "to", "walk_m"]).to_csv(
        out / "counters_knn.csv", index=False
    )
    seen = values[np.isfinite(values)]
    night = (hod < 5)[:, None] & np.isfinite(values)
    print(
        f"counters: {values.shape}, {len(rows)} links, {(seen == 0).mean():.3f} zeros, "
        f"mean {seen.mean():.2f}, night mean {values[night].mean():.3f}, max {seen.max():.0f}, "
        f"{rain.mean():.3f} of steps rainy; offline {[ids[i] for i in broken[:3]]}, "
        f"{ids[broken[3]]} reads 0 from {times[t0]}"
    )


# ---------------------------------------------------------------------------- b. substations
def make_substations(out: Path, n: int = 50, weeks: int = 16) -> None:
    rng = np.random.default_rng(7402)
    days = 7 * weeks
    local = pd.date_range("2024-03-04", periods=days * 24, freq="1h", tz="Europe/Berlin")
    steps = len(local)
    hod = local.hour.to_numpy().astype(float)  # local clock
    dow = local.day_of_week.to_numpy()
    doy = local.day_of_year.to_numpy() + hod / 24
    day = np.arange(steps) // 24
    holiday = np.isin(
        local.strftime("%Y-%m-%d"),
        ["2024-03-29", "2024-04-01", "2024-05-01", "2024-05-09", "2024-05-20"],
    )
    offday = (dow >= 5) | holiday

    # substations over a 60 x 40 km region; a city in the middle
    city = rng.random(n) < 0.35
    pos = np.where(
        city[:, None], rng.normal([30, 20], 4, (n, 2)), rng.uniform([0, 0], [60, 40], (n, 2))
    )
    d = np.sqrt(((pos[:, None] - pos[None]) ** 2).sum(-1))
    # meshed grid: minimum spanning tree plus ties between close substations
    inside, lines = [0], set()
    while len(inside) < n:
        rest = [j for j in range(n) if j not in inside]
        sub = d[np.ix_(inside, rest)]
        a, b = np.unravel_index(np.argmin(sub), sub.shape)
        i, j = inside[a], rest[b]
        lines.add((min(i, j), max(i, j)))
        inside.append(j)
    order = np.argsort(d, 1)
    while len(lines) < n + int(0.3 * n):  # a few ties close loops
        i = int(rng.integers(0, n))
        j = int(order[i, int(rng.integers(2, 4))])
        lines.add((min(i, j), max(i, j)))

    # customer mix: the city is commercial, the outskirts residential with farms and sheds
    mix = np.where(
        city[:, None],
        rng.dirichlet([1.5, 3, 1], n),
        rng.dirichlet([3, 0.7, 1.2], n),
    )  # residential, commercial, industrial
    size = np.where(city, rng.uniform(15, 45, n), rng.uniform(4, 20, n))  # MW
    roofs = np.clip(mix[:, 0] / mix[:, 0].mean(), 0.3, 1.8)  # residential roofs
    pv = size * np.where(city, rng.uniform(0.05, 0.35, n), rng.uniform(0.25, 1.2, n)) * roofs
    growth = (
        1
        + 0.25 * np.clip(rng.normal(1, 0.5, n), 0, None)[None] * (np.arange(steps) / steps)[:, None]
    )

    # weather: cloudy spells (a Markov chain of daily regimes), fronts crossing west to east
    regime = np.zeros(days, int)  # 0 clear, 1 broken cloud, 2 overcast
    stay = np.array([0.6, 0.45, 0.65])
    for k in range(1, days):
        regime[k] = regime[k - 1] if rng.random() < stay[regime[k - 1]] else int(rng.integers(0, 3))
    base_cloud = np.array([0.1, 0.45, 0.85])[regime].repeat(24)
    wind_kmh = 20 + 10 * smooth_ar(rng, steps, 1, 0.97)[:, 0].clip(-1.5, 1.5)
    travelled = np.cumsum(wind_kmh)  # km of air passed since the start
    grid_km = np.arange(int(travelled[-1] + 100))
    field = np.convolve(rng.normal(0, 1, len(grid_km) + 60), np.ones(25) / 5, "valid")[
        : len(grid_km)
    ]
    field2 = smooth_ar(rng, steps, 1, 0.9)[:, 0]
    # cloud over substation i at hour t: the field that was at x = 0 when the air passed
    where = np.clip((travelled[:, None] - pos[None, :, 0]).astype(int) + 60, 0, len(field) - 1)
    cloud = np.clip(
        base_cloud[:, None] + 0.18 * field[where] + 0.06 * pos[None, :, 1] / 40 * field2[:, None],
        0,
        1,
    )
    kt = 1 - 0.78 * cloud**1.5  # clearness

    # clear-sky sun at 50 N (solar time ~ local clock minus DST and longitude offset)
    lat = np.radians(50.0)
    dst = np.array([t.utcoffset().total_seconds() / 3600 - 1 for t in local])  # summer time
    solar_h = hod - dst - 0.4
    decl = np.radians(23.45) * np.sin(2 * np.pi * (doy - 81) / 365)
    ha = np.radians(15 * (solar_h - 12))
    elev = np.sin(lat) * np.sin(decl) + np.cos(lat) * np.cos(decl) * np.cos(ha)
    sun = np.clip(elev, 0, None) ** 1.15  # per unit of panel rating
    temp = 4 + 15 * np.clip(day / days, 0, 1) + 3 * smooth_ar(rng, days, 1, 0.8)[:, 0].repeat(24)
    temp = temp + (4 + 3 * (1 - base_cloud)) * np.sin(2 * np.pi * (hod - 9) / 24)
    solar = (
        pv[None] * growth * sun[:, None] * kt * (1 - 0.004 * np.clip(temp - 25, 0, None))[:, None]
    )

    resid = np.where(
        offday,
        0.45 + 0.3 * bump(hod, 11, 3) + 0.6 * bump(hod, 19.5, 2),
        0.4 + 0.3 * bump(hod, 7, 1) + 0.65 * bump(hod, 19.5, 1.8),
    )
    open_ = np.clip((hod - 7) / 2, 0, 1) * np.clip((19 - hod) / 2, 0, 1)
    comm = np.where(offday, 0.35 + 0.2 * open_ * (dow == 5), 0.35 + 0.6 * open_)
    indus = np.where(offday, 0.5, 0.7 + 0.25 * np.clip(hod - 6, 0, 1) * np.clip(22 - hod, 0, 1))
    base = np.stack([resid, comm, indus], 1) @ mix.T
    heat = np.clip(14 - temp, 0, None)[:, None] * (0.03 * mix[:, 0] + 0.015 * mix[:, 1])[None]
    cool = np.clip(temp - 23, 0, None)[:, None] * (0.02 * mix[:, 1] + 0.01 * mix[:, 0])[None]
    load = size[None] * (base + heat + cool) * np.exp(0.04 * smooth_ar(rng, steps, n, 0.9))
    net = load - solar + rng.normal(0, 0.05, (steps, n)) * np.sqrt(size)[None] / 3
    values = np.round(net, 2)

    # telemetry: a historian outage for every substation, gaps, a transformer out
    t0 = int(rng.integers(steps // 3, steps // 2))
    values[t0 : t0 + 3] = np.nan
    for _ in range(12):
        i, g = int(rng.integers(0, n)), int(rng.integers(24, steps - 12))
        values[g : g + int(rng.integers(1, 9)), i] = np.nan
    out_i, o0 = int(rng.integers(0, n)), int(rng.integers(steps // 4, steps - 24))
    values[o0 : o0 + 9, out_i] = 0.0

    ids = [f"SS{i + 1:02d}" for i in range(n)]
    frame = pd.DataFrame(values, columns=ids)
    stamps = [t.isoformat() for t in local]  # 2024-03-04T00:00:00+01:00
    frame.insert(0, "time", stamps)
    frame.to_csv(out / "substations.csv", index=False, float_format="%.2f")
    rows = [(ids[i], ids[j], round(1.15 * d[i, j], 1)) for i, j in sorted(lines)]
    pd.DataFrame(rows, columns=["from", "to", "length_km"]).to_csv(
        out / "grid_lines.csv", index=False
    )
    seen = values[np.isfinite(values)]
    negative = (np.nan_to_num(values, nan=1.0) < 0).any(0)
    print(
        f"substations: {values.shape}, {len(rows)} lines, "
        f"net {seen.min():.1f}..{seen.max():.1f} MW, "
        f"{(seen < 0).mean():.3f} of readings negative, {negative.sum()} substations ever "
        f"negative, {(regime == 2).mean():.2f} of days overcast, temp {temp.min():.1f}.."
        f"{temp.max():.1f} C; {ids[out_i]} out from {local[o0]}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the CSV files")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    make_counters(args.out)
    make_substations(args.out)


if __name__ == "__main__":
    main()
