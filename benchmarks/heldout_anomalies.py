"""Labelled NAB-format series of kinds NAB's six categories do not hold, for checking
``roadcast detect`` on data nobody tuned it on (numpy/pandas only, fixed seeds). Written
from a brief that named only the goal of issue 13 (NAB categories not seen); no setting
of roadcast was chosen on them.

machineTemperature/  5 files, 5 min, 6,000-12,000 rows: bearing temperature (deg C) of
                     machines on a shift schedule (one runs around the clock) with a
                     thermal lag; anomalies: wear drifting up for 1-3 days to a trip
                     (labelled at the trip), a coolant fault (+12-18 C for hours), a
                     sensor stuck at one reading; one file without anomaly.
taxiDemand/          5 zones' pick-ups per 30 min, 4,800-9,000 rows from 2016-08-01:
                     daily and weekly cycles by zone kind, Poisson counts, a slow season;
                     day-long collective anomalies: Thanksgiving, a blizzard, a parade,
                     an extra stadium event, New Year's Eve (a residential zone has none).
serviceLatency/      5 services' p95 latency (ms) per minute, 5,000-12,000 rows: diurnal
                     load, heavy-tailed noise, benign deploy blips; anomalies: incident
                     spikes (5-25 min), a config change (a level shift kept or rolled
                     back), a memory leak (latency creeping up for hours until a restart,
                     labelled where it has risen a third of its way); one file without.

Windows as NAB's labeler builds them: 10 % of a file's rows shared equally among its
anomalies, each window centred on its label row, clipped to the file and merged where
they overlap. Anomalies lie after the probation (NAB's first 15 %, at most 750 rows).

Scores: docs/results.md, "Anomalies" (categories nobody tuned on).

Run: ``python -m benchmarks.heldout_anomalies --out DIR`` then
``roadcast detect --nab-dir DIR --out RESULTS --score`` (``DIR/<category>/<file>.csv``,
``DIR/<category>_windows.json`` and ``DIR/<category>_labels.json``).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

WINDOW_SHARE = 0.10  # NAB's labeler: 10 % of the rows in windows
STAMP = "%Y-%m-%d %H:%M:%S"


@dataclass
class Series:
    """One file: its values, timestamps and the rows of its anomaly labels."""

    name: str
    stamps: pd.DatetimeIndex
    values: np.ndarray
    labels: list[int] = field(default_factory=list)


def nab_windows(n_rows: int, labels: list[int]) -> list[tuple[int, int]]:
    """NAB's windows (first and last row) around ``labels``, merged where they overlap."""
    if not labels:
        return []
    length = int(WINDOW_SHARE * n_rows / len(labels))
    out: list[tuple[int, int]] = []
    for row in sorted(labels):
        left, right = max(0, row - length // 2), min(n_rows - 1, row + length // 2)
        if out and left <= out[-1][1]:
            out[-1] = (out[-1][0], right)
        else:
            out.append((left, right))
    return out


def write_category(out: Path, category: str, files: list[Series]) -> None:
    """``out/<category>/<file>.csv`` and ``out/<category>_{windows,labels}.json``."""
    (out / category).mkdir(parents=True, exist_ok=True)
    windows: dict[str, list[list[str]]] = {}
    labels: dict[str, list[str]] = {}
    for s in files:
        stamps = s.stamps.strftime(STAMP)
        frame = pd.DataFrame({"timestamp": stamps, "value": np.round(s.values, 3)})
        frame.to_csv(out / category / f"{s.name}.csv", index=False)
        key = f"{category}/{s.name}.csv"
        windows[key] = [
            [f"{stamps[a]}.000000", f"{stamps[b]}.000000"]
            for a, b in nab_windows(len(s.values), s.labels)
        ]
        labels[key] = [stamps[r] for r in sorted(s.labels)]
    for kind, payload in (("windows", windows), ("labels", labels)):
        (out / f"{category}_{kind}.json").write_text(json.dumps(payload, indent=1) + "\n")


def ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> np.ndarray:
    """AR(1) noise ``[n]`` with stationary standard deviation ``sd``."""
    e = rng.normal(0.0, sd * np.sqrt(1 - phi**2), n)
    x = np.empty(n)
    x[0] = rng.normal(0.0, sd)
    for t in range(1, n):
        x[t] = phi * x[t - 1] + e[t]
    return x


def lag(x: np.ndarray, tau: float) -> np.ndarray:
    """First-order lag (time constant ``tau`` steps): a thermal mass heating and cooling."""
    a = 1.0 / tau
    y = np.empty(len(x))
    y[0] = x[0]
    for t in range(1, len(x)):
        y[t] = y[t - 1] + a * (x[t] - y[t - 1])
    return y


def at(stamps: pd.DatetimeIndex, when: str) -> int:
    """The row of timestamp ``when`` (the first at or after it)."""
    return int(stamps.searchsorted(pd.Timestamp(when)))


# ---------------------------------------------------------------------- machines
def machine(
    rng: np.random.Generator, name: str, start: str, n: int, always_on: bool, events: list[tuple]
) -> Series:
    """A bearing temperature every 5 minutes; ``events``: ``(kind, when, ...)``."""
    stamps = pd.date_range(start, periods=n, freq="5min")
    hour = (stamps.hour + stamps.minute / 60).to_numpy()
    day = stamps.day_of_week.to_numpy()
    ambient = 21 + 3 * np.sin(2 * np.pi * (hour - 9) / 24) + ar1(rng, n, 0.999, 1.5)
    if always_on:
        on = np.ones(n)
    else:
        weekday = (day < 5) & (hour >= 6) & (hour < 22)
        saturday = (day == 5) & (hour >= 6) & (hour < 14)
        on = (weekday | saturday).astype(float)
    load = on * (52 + 6 * np.sin(2 * np.pi * hour / 8) + ar1(rng, n, 0.98, 2.0))
    extra = np.zeros(n)
    stuck: list[tuple[int, int]] = []
    labels: list[int] = []
    for kind, when, *args in events:
        row = at(stamps, when)
        if kind == "wear":  # heat growing for `args[0]` hours, then a trip and a repair
            ramp, down = int(args[0] * 12), int(args[1] * 12)
            extra[row - ramp : row] += 14 * np.linspace(0, 1, ramp) ** 2
            on[row : row + down] = 0.0
            load[row : row + down] = 0.0
            labels.append(row)
        elif kind == "coolant":  # a failed coolant pump for `args[0]` hours
            extra[row : row + int(args[0] * 12)] += rng.uniform(12, 18)
            labels.append(row)
        elif kind == "stuck":
            stuck.append((row, row + int(args[0] * 12)))
            labels.append(row)
    # wear and a coolant fault heat only a running machine
    temp = lag(ambient + load + extra * on, tau=10.0) + rng.normal(0, 0.25, n)
    for a, b in stuck:
        temp[a:b] = round(float(temp[a]), 1)
    return Series(name, stamps, temp, labels)


def machines() -> list[Series]:
    rng = np.random.default_rng(41)
    return [
        machine(
            rng,
            "press_01",
            "2017-03-06",
            10000,
            False,
            [("wear", "2017-03-27 15:40", 40, 10), ("coolant", "2017-04-06 09:10", 5)],
        ),
        machine(rng, "press_02", "2017-03-06", 8000, False, [("wear", "2017-03-30 11:05", 60, 30)]),
        machine(
            rng,
            "lathe_07",
            "2017-05-01",
            9000,
            False,
            [("stuck", "2017-05-12 03:00", 8), ("coolant", "2017-05-25 13:30", 3)],
        ),
        machine(
            rng,
            "kiln_fan",
            "2017-01-02",
            12000,
            True,
            [("wear", "2017-01-20 04:20", 72, 14), ("wear", "2017-02-08 22:00", 30, 8)],
        ),
        machine(rng, "mill_03", "2017-06-05", 6000, False, []),
    ]


# ---------------------------------------------------------------------- taxi zones
PROFILES = {  # pick-ups per 30 min by hour: weekday, weekend
    "office": (
        [1, 1, 1, 1, 2, 6, 18, 40, 55, 35, 25, 25, 30, 25, 22, 25, 35, 55, 50, 30, 18, 12, 6, 3],
        [3, 2, 1, 1, 1, 2, 3, 5, 8, 12, 15, 18, 18, 17, 15, 14, 13, 12, 10, 9, 8, 6, 5, 4],
    ),
    "nightlife": (
        [8, 5, 3, 2, 1, 1, 2, 4, 6, 6, 7, 9, 11, 10, 9, 10, 12, 16, 22, 28, 30, 28, 22, 14],
        [30, 26, 18, 10, 4, 2, 2, 3, 5, 8, 12, 16, 18, 18, 17, 16, 18, 22, 30, 38, 44, 46, 44, 38],
    ),
    "airport": (
        [6, 3, 1, 1, 3, 10, 22, 30, 28, 24, 22, 24, 26, 25, 26, 30, 34, 36, 32, 30, 28, 24, 18, 10],
        [6, 3, 1, 1, 2, 7, 15, 22, 26, 26, 25, 26, 27, 28, 29, 32, 34, 32, 30, 28, 26, 22, 16, 9],
    ),
    "residential": (
        [2, 1, 1, 1, 2, 4, 9, 14, 12, 7, 5, 5, 6, 5, 5, 6, 8, 10, 11, 10, 8, 6, 4, 3],
        [3, 2, 1, 1, 1, 1, 2, 3, 5, 7, 8, 9, 9, 8, 8, 8, 8, 9, 9, 8, 7, 6, 4, 3],
    ),
}


def taxi(
    rng: np.random.Generator,
    name: str,
    kind: str,
    n: int,
    scale: float,
    events: list[tuple],
    games: bool = False,
) -> Series:
    """Pick-ups per 30 minutes; ``events``: ``(kind, when, hours, factor)``."""
    stamps = pd.date_range("2016-08-01", periods=n, freq="30min")
    hour = (stamps.hour + stamps.minute / 60).to_numpy()
    weekday_p, weekend_p = (np.interp(hour, np.arange(25), [*p, p[0]]) for p in PROFILES[kind])
    weekend = np.asarray(stamps.day_of_week >= 5)
    days = (stamps - stamps[0]).days.to_numpy()
    season = 1 + 0.12 * np.sin(2 * np.pi * (days - 60) / 365) + 0.0004 * days
    rate = np.where(weekend, weekend_p, weekday_p) * season * np.exp(ar1(rng, n, 0.97, 0.08))
    if games:  # a stadium's scheduled games: Sundays 16:00 and Thursdays 20:00, normal
        for day_of_week, start in ((6, 16.0), (3, 20.0)):
            after = (
                (stamps.day_of_week == day_of_week) & (hour >= start + 2.5) & (hour < start + 4.5)
            )
            rate = np.where(after, rate + 40, rate)
    labels: list[int] = []
    for _, when, hours, factor in events:
        row = at(stamps, when)
        rows = slice(row, row + int(hours * 2))
        if factor == "sunday":  # a holiday: the day shaped like a quiet Sunday
            rate[rows] = weekend_p[rows] * season[rows] * 0.7
        elif factor == "extra":  # an event outside the schedule: a crowd leaving at once
            rate[rows] = rate[rows] + 45 * np.hanning(int(hours * 2))
        else:
            rate[rows] = rate[rows] * float(factor)
        labels.append(row)
    return Series(name, stamps, rng.poisson(rate * scale).astype(float), labels)


def taxis() -> list[Series]:
    rng = np.random.default_rng(42)
    thanksgiving, blizzard = (
        ("holiday", "2016-11-24 05:00", 24, "sunday"),
        ("storm", "2017-01-07 03:00", 30, 0.25),
    )
    return [
        taxi(
            rng,
            "zone_midtown",
            "office",
            9000,
            4.0,
            [thanksgiving, ("parade", "2016-10-10 08:00", 10, 0.35), blizzard],
        ),
        taxi(
            rng,
            "zone_eastvillage",
            "nightlife",
            8000,
            2.5,
            [thanksgiving, ("newyear", "2016-12-31 20:00", 10, 2.6), blizzard],
        ),
        taxi(
            rng,
            "zone_airport",
            "airport",
            9000,
            3.0,
            [("holiday", "2016-11-23 12:00", 14, 1.8), blizzard],
        ),
        taxi(
            rng,
            "zone_stadium",
            "residential",
            6500,
            1.5,
            [("extra", "2016-10-18 21:00", 3, "extra"), thanksgiving],
            games=True,
        ),
        taxi(rng, "zone_queens", "residential", 4800, 3.0, []),
    ]


# ---------------------------------------------------------------------- service latency
def latency(
    rng: np.random.Generator, name: str, start: str, n: int, base: float, events: list[tuple]
) -> Series:
    """p95 latency (ms) per minute; ``events``: ``(kind, when, ...)``."""
    stamps = pd.date_range(start, periods=n, freq="1min")
    hour = (stamps.hour + stamps.minute / 60).to_numpy()
    load = 0.5 + 0.5 * np.sin(2 * np.pi * (hour - 9) / 24) * np.where(
        stamps.day_of_week >= 5, 0.6, 1.0
    )
    log = (
        np.log(base)
        + 0.35 * load
        + ar1(rng, n, 0.9, 0.06)
        + 0.04 * np.clip(rng.standard_t(4, n), -4, 6)
    )
    for row in rng.choice(np.arange(n), size=n // 1500, replace=False):  # deploys: 2-min blips
        log[row : row + 2] += 0.25
    labels: list[int] = []
    for kind, when, *args in events:
        row = at(stamps, when)
        if kind == "spike":  # an incident: `args[0]` minutes at `args[1]` times the latency
            log[row : row + args[0]] += np.log(args[1]) * np.hanning(args[0] + 2)[1:-1] ** 0.3
            labels.append(row)
        elif kind == "shift":  # a config change: `args[0]` times, until a rollback (or never)
            end = n if args[1] is None else row + args[1]
            log[row:end] += np.log(args[0])
            labels.append(row)
        elif kind == "leak":  # a leak for `args[0]` hours, latency up `args[1]` times, restart
            span = int(args[0] * 60)
            log[row : row + span] += np.log(args[1]) * np.linspace(0, 1, span) ** 1.5
            labels.append(row + int(span * (1 / 3) ** (1 / 1.5)))  # a third of its rise
    return Series(name, stamps, np.exp(log), labels)


def latencies() -> list[Series]:
    rng = np.random.default_rng(43)
    return [
        latency(
            rng,
            "api_gateway",
            "2018-02-05",
            8000,
            120,
            [("spike", "2018-02-06 14:12", 12, 6.0), ("shift", "2018-02-08 10:31", 1.5, None)],
        ),
        latency(
            rng,
            "checkout",
            "2018-02-05",
            7000,
            340,
            [("leak", "2018-02-07 02:00", 20, 2.2), ("spike", "2018-02-09 11:47", 6, 4.0)],
        ),
        latency(
            rng,
            "search",
            "2018-03-12",
            10000,
            85,
            [("shift", "2018-03-13 16:05", 1.8, 240), ("leak", "2018-03-16 20:00", 30, 1.9)],
        ),
        latency(
            rng,
            "db_proxy",
            "2018-04-02",
            12000,
            9,
            [
                ("spike", "2018-04-03 09:20", 25, 8.0),
                ("spike", "2018-04-06 03:33", 5, 12.0),
                ("spike", "2018-04-09 17:40", 9, 3.0),
            ],
        ),
        latency(rng, "auth", "2018-02-05", 5000, 45, []),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="NAB data folder to write")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    write_category(args.out, "machineTemperature", machines())
    write_category(args.out, "taxiDemand", taxis())
    write_category(args.out, "serviceLatency", latencies())


if __name__ == "__main__":
    main()
