"""Three sensor networks of kinds no earlier check covered, for checking ``roadcast train``
on data nobody tuned it on (numpy/pandas only, fixed seeds): sensors that change under
the models in the test part, sensors whose noise is as large as their signal, and a
network with only five days of data. Written from a brief naming only the goals of
issue 12 and the kinds of network already checked; no setting of roadcast was chosen on
them.

recalibrated.csv + recalibrated_edges.csv
    60 freeway speed sensors (mph), 5 min, 4 weeks (October), two carriageways of 30
    stations 0.5 mi apart; daily and weekly cycle, morning queues northbound and evening
    queues southbound growing upstream from bottlenecks, a corridor-wide weather field;
    inside the test part (the last 20 % of rows) four sensors are recalibrated (steps of
    -15, -10, +12 and +18 % in level), one sensor's gain is halved (it reports half of
    every departure from its free-flow speed) and a work zone caps six northbound
    stations at 45-50 mph for four days from the test part's first evening, with longer
    queues upstream of it; edge list from,to,distance_mi linking each station to its
    neighbours on its carriageway and to the one opposite, both directions listed
noisy.csv + noisy_adj.csv
    80 low-cost PM2.5 sensors (ug/m3), 10 min, 5 weeks (January); a regional level that
    moves over days, a daily profile (morning and evening traffic, night inversions) of
    each sensor's own size, weekdays higher than weekends; measurement noise as large as
    the signal (signal-to-noise variance ratio 0.7-1.4 per sensor), so the last reading
    says little and the daily profile is most of what can be predicted; a
    distance-weighted matrix with a header of ids
short.csv + short_links.csv
    100 arterial loop detectors' vehicle counts per 5 min on a 10 x 10 street grid, five
    weekdays only (Monday-Friday), morning and evening peaks, neighbourhood demand that
    spreads along the streets; detector D-0457 installed on day 3 (empty cells before);
    an edge list in the user's own words (``Detector,Next detector,Spacing (m)``), each
    street segment once

Run: ``python -m benchmarks.heldout_shifts --out DIR`` then, per network,
``roadcast train csv:DIR/recalibrated.csv --adjacency DIR/recalibrated_edges.csv --seeds 2
--out ...``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.heldout_sparse_signed import bump, smooth_ar

TEST_SHARE = 0.2  # ``roadcast train``'s default: the last 20 % of rows are the test part


def test_start(steps: int) -> int:
    """The first row of ``roadcast train``'s test part for a file of ``steps`` rows."""
    return round(steps * (1 - TEST_SHARE))


# ---------------------------------------------------------------------------- a. recalibrated
def make_recalibrated(out: Path) -> dict[str, Any]:
    """Write ``recalibrated.csv`` and its edge list; return what was done where."""
    rng = np.random.default_rng(7501)
    per_day, days, half = 288, 28, 30
    n = 2 * half
    times = pd.date_range("2024-10-07", periods=days * per_day, freq="5min")  # a Monday
    steps = len(times)
    hod = times.hour.to_numpy() + times.minute.to_numpy() / 60
    dow = times.day_of_week.to_numpy()
    weekday = dow < 5
    t0 = test_start(steps)
    free = rng.uniform(62, 70, n)  # free-flow speed per station
    # demand per carriageway (0: northbound, into town in the morning; 1: southbound)
    demand = np.zeros((steps, 2))
    demand[:, 0] = np.where(
        weekday,
        0.35 + 0.75 * bump(hod, 7.8, 1.1) + 0.35 * bump(hod, 17.3, 1.3),
        0.3 + 0.35 * bump(hod, 13, 3),
    )
    demand[:, 1] = np.where(
        weekday,
        0.35 + 0.3 * bump(hod, 8, 1.2) + 0.8 * bump(hod, 17.4, 1.2),
        0.3 + 0.4 * bump(hod, 15, 3),
    )
    demand *= np.where(dow == 4, 1.05, 1.0)[:, None]  # Friday
    demand *= 1 + 0.06 * smooth_ar(rng, days, 2, 0.5).repeat(per_day, 0)
    # bottlenecks: station index along its carriageway (travel runs 0 -> 29) and capacity
    necks = [(0, 22, 0.85), (0, 12, 0.92), (1, 25, 0.87), (1, 9, 0.95)]
    zone = list(range(14, 20))  # northbound stations 14..19: the work zone
    zone_from = (t0 // per_day) * per_day + 21 * 12  # 21:00 on the day the test part starts
    zone_to = zone_from + 4 * per_day
    in_zone = np.zeros(steps, bool)
    in_zone[zone_from:zone_to] = True
    queue = np.zeros((steps, n))  # depth of congestion, 0 (free) .. 1 (stop and go)
    for road, at, cap in [*necks, (0, zone[-1], 0.72)]:
        work = road == 0 and at == zone[-1]
        length = 0.0
        for t in range(steps):
            if work and not in_zone[t]:
                length = 0.0
                continue
            excess = demand[t, road] - cap  # a queue grows fast and drains slowly
            length = max(0.0, length + (1.5 if excess > 0 else 0.6) * excess)
            length = min(length, at)
            if length <= 0:
                continue
            reach = np.arange(at - int(np.ceil(length)), at + 1)  # stations in the queue
            depth = np.clip(length - (at - reach), 0, 1) * min(1.0, 0.4 + 0.25 * length)
            cols = road * half + reach
            queue[t, cols] = np.maximum(queue[t, cols], depth)
    weather = 1 - 0.04 * np.clip(smooth_ar(rng, steps, 1, 0.999), 0, None)  # rain, corridor-wide
    local = smooth_ar(rng, steps, n, 0.95) * 1.6 + rng.normal(0, 1.2, (steps, n))
    speed = free[None] * weather * (1 - 0.62 * queue) + local
    work_cols = np.array(zone)
    speed[zone_from:zone_to, work_cols] = np.minimum(
        speed[zone_from:zone_to, work_cols], rng.uniform(45, 50, len(zone))[None]
    ) + rng.normal(0, 1.0, (zone_to - zone_from, len(zone)))
    true = speed.copy()
    # sensors that change inside the test part
    steps_in_level = {5: -0.15, 27: 0.12, 38: 0.18, 51: -0.10}  # column -> relative step
    starts = {}
    for k, (col, rel) in enumerate(steps_in_level.items()):
        at = t0 + int((0.3 + 1.1 * k) * per_day) + int(rng.integers(0, 60))
        speed[at:, col] *= 1 + rel
        starts[col] = at
    gain_col = 44
    gain_at = t0 + 2 * per_day + 130
    speed[gain_at:, gain_col] = free[gain_col] + 0.5 * (speed[gain_at:, gain_col] - free[gain_col])
    speed = np.round(np.clip(speed, 3, 85), 1)

    ids = [f"{4011 + k}" for k in range(half)] + [f"{4211 + k}" for k in range(half)]
    frame = pd.DataFrame(speed, columns=ids)
    frame.insert(0, "timestamp", times.strftime("%Y-%m-%d %H:%M:%S"))
    frame.to_csv(out / "recalibrated.csv", index=False)
    rows = []
    for road in (0, 1):
        for k in range(half - 1):
            a, b = road * half + k, road * half + k + 1
            rows += [(ids[a], ids[b], 0.5), (ids[b], ids[a], 0.5)]
    for k in range(half):  # the station opposite: postmile k northbound is 29 - k southbound
        a, b = k, half + (half - 1 - k)
        rows += [(ids[a], ids[b], 0.05), (ids[b], ids[a], 0.05)]
    pd.DataFrame(rows, columns=["from", "to", "distance_mi"]).to_csv(
        out / "recalibrated_edges.csv", index=False
    )
    facts = {
        "shape": speed.shape,
        "test_start": t0,
        "level_steps": {ids[c]: (starts[c], rel) for c, rel in steps_in_level.items()},
        "gain": (ids[gain_col], gain_at, 0.5),
        "work_zone": ([ids[c] for c in zone], zone_from, zone_to),
        "true": true,
    }
    print(
        f"recalibrated: {speed.shape}, {len(rows)} links, speeds {speed.min():.1f}.."
        f"{speed.max():.1f} mph, test from {times[t0]}; level steps "
        + ", ".join(
            f"{ids[c]} {rel:+.0%} at {times[starts[c]]}" for c, rel in steps_in_level.items()
        )
        + f"; gain of {ids[gain_col]} halved at {times[gain_at]}; work zone "
        f"{ids[zone[0]]}..{ids[zone[-1]]} {times[zone_from]} .. {times[zone_to]}"
    )
    return facts


# ---------------------------------------------------------------------------- b. noisy
def make_noisy(out: Path) -> dict[str, Any]:
    """Write ``noisy.csv`` and its matrix; return the signal-to-noise ratios."""
    rng = np.random.default_rng(7502)
    n, per_day, days = 80, 144, 35
    times = pd.date_range("2024-01-08", periods=days * per_day, freq="10min")  # a Monday
    steps = len(times)
    hod = times.hour.to_numpy() + times.minute.to_numpy() / 60
    dow = times.day_of_week.to_numpy()
    pos = rng.uniform(0, 12, (n, 2))  # km, one city
    d = np.sqrt(((pos[:, None] - pos[None]) ** 2).sum(-1))
    # regional level: a few smooth fields over the city, each moving over a day or two
    centres = rng.uniform(0, 12, (4, 2))
    load = np.exp(-(((pos[:, None] - centres[None]) ** 2).sum(-1)) / 30)  # [n, 4]
    load /= load.sum(1, keepdims=True)
    regional = smooth_ar(rng, steps, 4, 0.996) @ load.T  # [T, n]
    traffic = rng.uniform(0.4, 1.0, n)  # near a main road or not
    weekday = (dow < 5).astype(float)
    daily = (
        traffic[None]
        * (0.6 + 0.4 * weekday[:, None])
        * (1.4 * bump(hod, 8.2, 1.3) + 1.1 * bump(hod, 18.5, 1.8))[:, None]
        + 1.0 * bump(hod, 2.5, 3.0)[:, None]  # night inversion, everyone
        - 0.5 * bump(hod, 14, 2.5)[:, None]  # afternoon mixing
    )
    base = rng.uniform(14, 24, n)
    scale = rng.uniform(3, 6, n)
    signal = base[None] + scale[None] * (1.0 * daily + 0.3 * regional)
    snr = rng.uniform(0.7, 1.4, n)  # variance of the signal over variance of the noise
    noise_sd = signal.std(0) / np.sqrt(snr)
    noise = rng.normal(0, 1, (steps, n)) * noise_sd[None]
    noise += 0.25 * noise_sd[None] * rng.standard_t(3, (steps, n)) / np.sqrt(3)  # spikes
    values = np.round(np.clip(signal + noise, 0, None), 1)
    ids = [f"pa-{k:02d}{chr(97 + k % 26)}" for k in range(n)]
    frame = pd.DataFrame(values, columns=ids)
    frame.insert(0, "time_local", times.strftime("%Y-%m-%d %H:%M"))
    frame.to_csv(out / "noisy.csv", index=False)
    w = np.exp(-((d / 2.5) ** 2))
    w[w < 0.1] = 0
    np.fill_diagonal(w, 0)
    pd.DataFrame(np.round(w, 4), columns=ids).to_csv(out / "noisy_adj.csv", index=False)
    measured = (signal.var(0) / (values - signal).var(0)).round(3)
    print(
        f"noisy: {values.shape}, {int((w > 0).sum())} links, {values.min():.1f}.."
        f"{values.max():.1f} ug/m3, {(values == 0).mean():.4f} at 0, signal-to-noise "
        f"{measured.min():.2f}..{measured.max():.2f} (median {np.median(measured):.2f})"
    )
    return {"shape": values.shape, "signal": signal, "snr": measured}


# ---------------------------------------------------------------------------- c. short
def make_short(out: Path) -> dict[str, Any]:
    """Write ``short.csv`` and its edge list; return the late detector and its first row."""
    rng = np.random.default_rng(7503)
    side, per_day, days = 10, 288, 5
    n = side * side
    times = pd.date_range("2024-11-04", periods=days * per_day, freq="5min")  # a Monday
    steps = len(times)
    hod = times.hour.to_numpy() + times.minute.to_numpy() / 60
    r, c = np.divmod(np.arange(n), side)
    downtown = np.exp(-((r - 4.5) ** 2 + (c - 5.5) ** 2) / 18)
    volume = rng.uniform(4, 14, n) * (0.6 + downtown)  # vehicles per 5 min at the peak
    inbound = 1.2 * bump(hod, 8.0, 1.0) + 0.8 * bump(hod, 17.2, 1.4)
    outbound = 0.7 * bump(hod, 8.0, 1.0) + 1.3 * bump(hod, 17.2, 1.4)
    prof = 0.06 + 0.45 * bump(hod, 12.5, 3.0)
    mix = np.clip(downtown + rng.normal(0, 0.1, n), 0, 1)
    shape = prof[:, None] + inbound[:, None] * (1 - mix)[None] + outbound[:, None] * mix[None]
    # neighbourhood demand: a smooth field over the grid, spreading along the streets
    field = smooth_ar(rng, steps, n, 0.97)
    adj = np.zeros((n, n))
    for k in range(n):
        for dr, dc in ((0, 1), (1, 0)):
            if r[k] + dr < side and c[k] + dc < side:
                j = (r[k] + dr) * side + c[k] + dc
                adj[k, j] = adj[j, k] = 1
    spread = adj / adj.sum(1, keepdims=True)
    for _ in range(3):
        field = 0.5 * field + 0.5 * field @ spread.T
    rate = volume[None] * shape * np.exp(0.25 * field)
    drawn = rng.poisson(rate)
    counts = drawn.astype(object)
    late = 57  # D-0457
    late_from = 2 * per_day + 10 * 12 + 7  # day 3, 10:35
    counts[:late_from, late] = ""
    ids = [f"D-{400 + k:04d}" for k in range(n)]
    frame = pd.DataFrame(counts, columns=ids)
    frame.insert(0, "Date/Time", times.strftime("%m/%d/%Y %H:%M"))
    frame.to_csv(out / "short.csv", index=False)
    rows = []
    for k in range(n):
        for j in np.flatnonzero(adj[k]):
            if j > k:
                rows.append((ids[k], ids[int(j)], int(rng.integers(180, 420))))
    pd.DataFrame(rows, columns=["Detector", "Next detector", "Spacing (m)"]).to_csv(
        out / "short_links.csv", index=False
    )
    print(
        f"short: {counts.shape}, {len(rows)} links, counts {drawn.min()}..{drawn.max()} per 5 min, "
        f"{ids[late]} installed {times[late_from]}, test from {times[test_start(steps)]}"
    )
    return {"shape": counts.shape, "late": (ids[late], late_from), "links": len(rows)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the CSV files")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    make_recalibrated(args.out)
    make_noisy(args.out)
    make_short(args.out)


if __name__ == "__main__":
    main()
