"""A network made outside roadcast's simulator, for checking `roadcast train` on data of a
kind no default was chosen on: ``python -m benchmarks.foreign_network --out DIR``.

60 stations on a ring with 12 random chords, 30 days of 15-minute Poisson counts with
morning and evening peaks, quieter weekends, and congestion waves that start at a random
station and travel downstream one link per step (so the links carry information); 1 % of
readings missing. Writes ``DIR/flow.csv`` (a time column, one column per station),
``DIR/adjacency.csv`` (the 0/1 matrix with the station ids as header) and
``DIR/adjacency_random.csv`` (as many links, placed at random: a graph that carries none).
Then, for example::

    roadcast train csv:DIR/flow.csv --adjacency DIR/adjacency.csv --seeds 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

STATIONS, DAYS, STEP_MIN, CHORDS = 60, 30, 15, 12


def foreign_network(seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Counts ``[time, station]`` (with a ``time`` column), the links' 0/1 matrix and a
    random matrix with as many links."""
    rng = np.random.default_rng(100 + seed)
    n, steps = STATIONS, DAYS * 24 * 60 // STEP_MIN
    downstream = {i: [(i + 1) % n] for i in range(n)}
    for _ in range(CHORDS):
        a, b = rng.choice(n, 2, replace=False)
        downstream[int(a)].append(int(b))
    links = np.zeros((n, n), dtype=int)
    for a, targets in downstream.items():
        links[a, targets] = links[targets, a] = 1
    t = np.arange(steps)
    hour = (t * STEP_MIN / 60) % 24
    weekday = (t * STEP_MIN // (60 * 24)) % 7
    daily = np.exp(-((hour - 8) ** 2) / 3) + 0.8 * np.exp(-((hour - 17.5) ** 2) / 4) + 0.15
    level = rng.uniform(50, 300, n)
    base = level[None, :] * (daily * np.where(weekday >= 5, 0.6, 1.0))[:, None]
    drop = np.zeros((steps, n))
    for _ in range(DAYS * 4):  # a wave: a drop at a station, then downstream, fading
        node, start = int(rng.integers(n)), int(rng.integers(steps - 40))
        depth, length = rng.uniform(0.3, 0.7), int(rng.integers(4, 12))
        for k in range(8):
            span = slice(start + k, start + k + length)
            drop[span, node] = np.maximum(drop[span, node], depth * 0.85**k)
            node = int(rng.choice(downstream[node]))
    counts = rng.poisson(base * (1 - drop) * np.exp(rng.normal(0, 0.05, (steps, n)))).astype(float)
    counts[rng.random(counts.shape) < 0.01] = np.nan
    ids = [f"st{i:03d}" for i in range(n)]
    frame = pd.DataFrame(counts, columns=ids)
    stamps = pd.date_range("2025-02-03", periods=steps, freq=f"{STEP_MIN}min")
    frame.insert(0, "time", stamps.strftime("%Y-%m-%d %H:%M"))
    random, placing = np.zeros_like(links), np.random.default_rng(7 + seed)
    while random.sum() < links.sum():
        i, j = placing.choice(n, 2, replace=False)
        random[i, j] = random[j, i] = 1
    return frame, links, random


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.foreign_network")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    frame, links, random = foreign_network(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out / "flow.csv", index=False)
    ids = list(frame.columns[1:])
    for name, matrix in (("adjacency", links), ("adjacency_random", random)):
        pd.DataFrame(matrix, index=ids, columns=ids).to_csv(args.out / f"{name}.csv")
    print(
        f"wrote {args.out}/flow.csv ({frame.shape[0]} steps x {len(ids)} stations), "
        "adjacency.csv and adjacency_random.csv"
    )


if __name__ == "__main__":
    main()
