"""How the data plane scales: simulate 200 / 2,000 / 20,000 sensors, then build the
3-hop neighbourhoods and the free-flow reachability (FFR) of their road graphs.

Reports wall time of each step and the peak traced memory of the graph step, next to
what one dense N x N float64 matrix would need (the thing the sparse code avoids).
Also times ``load_dataset("los-loop")`` when the data directory has it.

``python -m benchmarks.data_scale [--quick]`` writes ``benchmarks/results/data_scale.json``.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from typing import Any

from benchmarks.common import write_result
from flows.reporting.text import print_table
from pipeline.data.graph import RoadGraph

K_HOPS = 3
FFR_MINUTES = 5.0


def _fresh(graph: RoadGraph) -> RoadGraph:
    """A copy without the hops cache, so each measurement does the full work."""
    return RoadGraph(
        graph.num_nodes, graph.edge_index, graph.edge_weight, distance_km=graph.distance_km
    )


def measure(sensors: int, days: float, seed: int = 0) -> dict[str, Any]:
    """Time the simulator and the graph neighbourhoods for one network size."""
    from pipeline.data.simulate import simulate_network

    started = time.perf_counter()
    panel = simulate_network(sensors, days, seed=seed)
    simulate_s = time.perf_counter() - started
    graph = panel.graph
    assert isinstance(graph, RoadGraph)

    timed = _fresh(graph)
    started = time.perf_counter()
    hops = timed.hops(K_HOPS)
    hops_s = time.perf_counter() - started
    started = time.perf_counter()
    ffr = timed.hops(K_HOPS, minutes=FFR_MINUTES)
    ffr_s = time.perf_counter() - started

    traced = _fresh(graph)
    tracemalloc.start()
    try:
        traced.hops(K_HOPS, minutes=FFR_MINUTES)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {
        "sensors": sensors,
        "steps": panel.n_time,
        "days": days,
        "simulate_s": simulate_s,
        "links": graph.num_edges,
        "hops3_pairs": int(hops.shape[1]),
        "hops3_s": hops_s,
        "hops3_ffr_pairs": int(ffr.shape[1]),
        "hops3_ffr_s": ffr_s,
        "graph_peak_mb": peak / 1e6,
        "dense_nxn_mb": sensors * sensors * 8 / 1e6,
    }


def measure_los_loop() -> dict[str, Any] | None:
    """Load time of the real ``los-loop`` panel, or None without the data."""
    from pipeline.data.datasets import DatasetError, load_dataset

    try:
        started = time.perf_counter()
        panel = load_dataset("los-loop")
        load_s = time.perf_counter() - started
    except DatasetError:
        return None
    graph = panel.graph
    assert isinstance(graph, RoadGraph)
    started = time.perf_counter()
    ffr = _fresh(graph).hops(K_HOPS, minutes=FFR_MINUTES)
    return {
        "load_s": load_s,
        "sensors": panel.n_nodes,
        "steps": panel.n_time,
        "links": graph.num_edges,
        "hops3_ffr_pairs": int(ffr.shape[1]),
        "hops3_ffr_s": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.data_scale", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="only 200 and 2,000 sensors")
    args = parser.parse_args(argv)
    sizes = [(200, 7.0), (2_000, 7.0)] + ([] if args.quick else [(20_000, 3 / 24), (20_000, 1.0)])
    rows = [measure(n, days) for n, days in sizes]
    los_loop = measure_los_loop()
    path = write_result(
        "data_scale",
        {
            "quick": args.quick,
            "k_hops": K_HOPS,
            "ffr_minutes": FFR_MINUTES,
            "free_flow_kmh": 100.0,
            "networks": rows,
            "los_loop": los_loop,
        },
    )
    print_table(
        f"simulate + {K_HOPS}-hop / FFR({FFR_MINUTES:g} min) neighbourhoods",
        [
            "sensors",
            "steps",
            "simulate s",
            "links",
            "3-hop pairs",
            "3-hop s",
            "FFR pairs",
            "FFR s",
            "peak MB",
            "dense NxN MB",
        ],
        [
            [
                r["sensors"],
                r["steps"],
                r["simulate_s"],
                r["links"],
                r["hops3_pairs"],
                r["hops3_s"],
                r["hops3_ffr_pairs"],
                r["hops3_ffr_s"],
                r["graph_peak_mb"],
                r["dense_nxn_mb"],
            ]
            for r in rows
        ],
    )
    if los_loop is not None:
        print_table("los-loop", list(los_loop), [list(los_loop.values())])
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
