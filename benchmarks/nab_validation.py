"""A NAB-style validation corpus built from the road simulator: data to choose detectors on.

NAB's ``realTraffic`` files are the test set: a detector setting chosen by its score
there is tuned on 14 windows. This module builds *other* labelled files in NAB's format
from :func:`pipeline.data.simulate.simulate_network`, so that choices can be validated
elsewhere first:

* **Series.** One file per sensor that has at least one labelled event (incident or
  fault) after the probationary 15 %: its speed (mph, rounded to integers as the
  Minnesota DOT files are) or, for every other file, the travel time of a 1 km segment
  at that speed (seconds: spiky upwards, like ``TravelTime_*.csv``).
* **Irregular rows.** Missing readings are dropped and a further ``thin`` share of rows is
  dropped at random, so steps are irregular as in NAB's traffic files.
* **Windows.** NAB's labelling rule: ``10 %`` of the file's rows are split evenly between
  its anomalies, a window centred on each event start (the label), clipped to the file;
  windows that would overlap are merged.

The corpus is fixed by its seeds; nothing in it was chosen by looking at ``realTraffic``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from benchmarks.nab_score import LabeledFile, probation_length

WINDOW_SHARE = 0.10
SEGMENT_KM = 1.0
KMH_PER_MPH = 1.609344


@dataclass(frozen=True)
class ValidationCorpusConfig:
    """How the simulated corpus is drawn.

    seeds : one simulated network per seed.
    sensors, days : size of each network (5-minute steps: ``days * 288`` rows).
    incidents_per_day, faults_per_day : per 100 sensors, as the simulator counts them.
    noise_mph : AR(1) reading noise, larger than the simulator's default (real loop
        detectors are noisier than its 1.5 mph).
    thin : share of rows dropped at random (irregular steps).
    max_files_per_seed : files kept per network (the first sensors with events).
    """

    seeds: tuple[int, ...] = (101, 102, 103)
    sensors: int = 60
    days: float = 8.0
    incidents_per_day: float = 1.5
    faults_per_day: float = 0.5
    noise_mph: float = 4.0
    thin: float = 0.1
    max_files_per_seed: int = 10


@dataclass(frozen=True, eq=False)
class ValidationFile:
    """One corpus file: its values ``[row]`` and its labelled rows and windows."""

    labeled: LabeledFile
    values: np.ndarray


def nab_windows(n_rows: int, label_rows: list[int]) -> list[tuple[int, int]]:
    """NAB's windows for anomalies at ``label_rows``: ``10 %`` of the rows, split evenly.

    Each window is centred on its label and clipped to the file; overlapping windows
    are merged (NAB's labeller merges them too).
    """
    if not label_rows:
        return []
    half = int(WINDOW_SHARE * n_rows / len(label_rows)) // 2
    spans = sorted((max(0, r - half), min(n_rows - 1, r + half)) for r in label_rows)
    merged = [spans[0]]
    for a, b in spans[1:]:
        if a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def validation_corpus(config: ValidationCorpusConfig | None = None) -> list[ValidationFile]:
    """The simulated validation corpus (see module doc), same config, same files."""
    from pipeline.data.simulate import simulate_network

    c = config or ValidationCorpusConfig()
    files: list[ValidationFile] = []
    for seed in c.seeds:
        panel = simulate_network(
            c.sensors,
            c.days,
            seed=seed,
            incidents_per_day=c.incidents_per_day,
            faults_per_day=c.faults_per_day,
            noise_mph=c.noise_mph,
        )
        rng = np.random.default_rng(seed)
        kept = 0
        for node, sensor in enumerate(panel.sensor_ids):
            if kept >= c.max_files_per_seed:
                break
            starts = sorted({e.start for e in panel.events if sensor in e.sensors})
            values = panel.values[:, node].astype(np.float64)
            keep = panel.mask[:, node] & (rng.random(panel.n_time) >= c.thin)  # [time]
            stamps = panel.timestamps[keep].tz_localize(None)
            series = values[keep]
            n = len(series)
            label_rows = sorted({int(np.searchsorted(stamps, s.tz_localize(None))) for s in starts})
            label_rows = [r for r in label_rows if probation_length(n) <= r < n]
            if not label_rows:
                continue
            if kept % 2 == 1:
                # travel time of a 1 km segment (seconds); a stopped sensor reads 3 mph at most
                series = SEGMENT_KM / (np.maximum(series, 3.0) * KMH_PER_MPH) * 3600.0
            series = np.round(series)
            windows = nab_windows(n, label_rows)
            name = f"simulated/{'speed' if kept % 2 == 0 else 'TravelTime'}_{seed}_{sensor}.csv"
            labeled = LabeledFile(
                name,
                pd.DatetimeIndex(stamps),
                tuple((stamps[a], stamps[b]) for a, b in windows),
            )
            files.append(ValidationFile(labeled, series))
            kept += 1
    return files
