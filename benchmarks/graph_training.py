"""TGC-LSTM's graph plumbing: which kernel multiplies, and training by subgraph.

1. **Kernels**, side by side on the same inputs: the K = 3 hop patterns (``Ã^k ⊙ FFR``)
   of simulated networks of 207, 2,000 and 20,000 sensors, inputs ``x`` ``[N, F]`` with
   F = batch x window (64 x 12; 8 x 12 at 20,000 sensors, as a training batch), one
   trainable weight per edge. Milliseconds for forward + backward (gradients of the
   weights and of ``x``), median of repeats, one thread, in turn so that machine load
   hits all alike:

   * ``pyg-spmm``: ``torch_geometric.utils.spmm`` on a ``torch.sparse`` CSR matrix of
     the weights (torch's backward; it writes a dense ``[K*N, N]`` gradient, so it is
     skipped where that passes 2 GB),
   * ``csr``: the hand-written ``_CSRMatmul`` (sampled-product backward, O(edges)),
   * ``pyg-scatter``: torch-geometric's message passing (``MessagePassing`` with
     ``aggr="sum"``: gather ``w * x_j`` per edge, scatter-add to the targets), which is
     also what ``EdgeIndex.matmul`` does with trainable weights without torch-sparse,
   * ``auto``: what the layer uses (``models.nn.sparse_graph.sparse_product``).

   And the same product without weight gradients (inference): ``pyg-spmm`` and ``csr``
   forward only; and with constant entries and a gradient for ``x`` only (the neighbour
   term in training): ``pyg-spmm`` (torch's backward transposes the CSR matrix) and
   ``csr`` (a transposed pattern prepared once).

2. **Training by subgraph** through the normal path,
   ``build_model("tgclstm", ...).fit(train, valid=...)`` (default configuration, one
   epoch per stage, CPU) on simulated networks of 2,000, 8,600 and 20,000 sensors (a
   day of training data, 48 validation steps), with ``subgraph_nodes`` (sensors per
   part) varied, 0 = the whole graph where it fits: seconds per epoch and the peak
   resident memory of the fitting process (``VmHWM``, each fit in a fresh process).
   ``--graph random`` fits on the simulator's random links instead of its road corridors:
   METIS then cuts many receptive-field edges and the halos are large (the worst case).

``python -m benchmarks.graph_training`` writes ``benchmarks/results/graph_training.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch_geometric.nn import MessagePassing

from benchmarks.common import log_log_slope, write_result
from flows.reporting.text import print_table

NAME = "graph_training"
WINDOW = HORIZON = 12
DENSE_GRAD_LIMIT_GB = 2.0


class Scatter(MessagePassing):
    """PyG message passing with one trainable weight per edge: ``sum_j w_ji x_j``."""

    def __init__(self) -> None:
        super().__init__(aggr="sum")

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, edge_index: torch.Tensor, w: torch.Tensor, size: tuple[int, int]
    ) -> torch.Tensor:
        return self.propagate(edge_index, x=x, w=w, size=size)

    def message(self, x_j: torch.Tensor, w: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return w.unsqueeze(-1) * x_j


def _hops(sensors: int) -> list[np.ndarray]:
    from models.forecasters.tgclstm import TGCLSTM
    from pipeline.data.simulate import simulate_network

    panel = simulate_network(sensors, days=0.2, seed=1)
    return TGCLSTM().hop_lists(panel)[0]


def _median_ms(fn: Callable[[], None], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return 1e3 * statistics.median(times)


def kernel_row(sensors: int, batch: int, repeats: int) -> dict[str, Any]:
    """Forward + backward milliseconds of every kernel on one network's patterns."""
    from torch_geometric.utils import spmm

    from models.nn.sparse_graph import SparseHopConv, _csr, _CSRMatmul, _whole, sparse_product

    hops = _hops(sensors)
    conv = SparseHopConv(hops, sensors)
    shape = (len(hops) * sensors, sensors)
    pattern = _whole(conv, shape)
    rows = conv.targets() + (conv.hop_of_edge() - 1) * sensors  # row of the stacked matrix
    edge_index = torch.stack([conv.col, rows])
    x = torch.randn(sensors, batch * WINDOW, requires_grad=True)
    weight = conv.weight
    scatter = Scatter()

    def run(product: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def step() -> None:
            x.grad = weight.grad = None
            product().sum().backward()

        return step

    kernels: dict[str, Callable[[], None]] = {
        "csr": run(lambda: _CSRMatmul.apply(weight, x, *pattern_args(pattern), *shape)),
        "pyg-scatter": run(lambda: scatter(x, edge_index, weight, (sensors, shape[0]))),
        "auto": run(lambda: sparse_product(pattern, weight, x)),
    }
    dense_gb = shape[0] * shape[1] * 4 / 2**30
    if dense_gb <= DENSE_GRAD_LIMIT_GB:
        kernels["pyg-spmm"] = run(lambda: spmm(_csr(conv.crow, conv.col, weight, shape), x))
    for step in kernels.values():
        step()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in kernels}
    for _ in range(repeats):
        for name, step in kernels.items():
            times[name].append(_median_ms(step, 1))
    # The neighbour term's case: constant entries, a gradient for the dense side only.
    ones = torch.ones(conv.num_edges)

    def x_grad_only(product: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def step() -> None:
            x.grad = None
            product().sum().backward()

        return step

    x_grad = {
        "pyg-spmm": x_grad_only(lambda: spmm(_csr(conv.crow, conv.col, ones, shape), x)),
        "csr": x_grad_only(lambda: _CSRMatmul.apply(ones, x, *pattern_args(pattern), *shape)),
    }
    for step in x_grad.values():
        step()  # warm-up
    x_grad_ms = {name: _median_ms(fn, repeats) for name, fn in x_grad.items()}
    with torch.no_grad():  # inference: no weight gradient
        infer = {
            "pyg-spmm": lambda: spmm(_csr(conv.crow, conv.col, weight, shape), x),
            "csr": lambda: _CSRMatmul.apply(weight, x, *pattern_args(pattern), *shape),
        }
        infer_ms = {name: _median_ms(fn, repeats) for name, fn in infer.items()}
    row: dict[str, Any] = {
        "sensors": sensors,
        "edges": int(conv.num_edges),
        "columns": batch * WINDOW,
        "pattern_cells": shape[0] * shape[1],
        "dense_gradient_gb": round(dense_gb, 3),
    }
    row |= {f"{name}_ms": statistics.median(t) for name, t in times.items()}
    row |= {f"infer_{name}_ms": ms for name, ms in infer_ms.items()}
    row |= {f"xgrad_{name}_ms": ms for name, ms in x_grad_ms.items()}
    if "pyg-spmm" not in kernels:
        row["pyg-spmm_ms"] = f"skipped: dense gradient {dense_gb:.1f} GB"
    return row


def pattern_args(pattern: Any) -> tuple[torch.Tensor, ...]:
    return (pattern.crow, pattern.col, pattern.crow_t, pattern.col_t, pattern.perm)


def _vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fit_worker(
    sensors: int, subgraph_nodes: int, threads: int, epochs: int = 1, graph: str = "road"
) -> dict[str, Any]:
    """In a fresh process: one default TGC-LSTM fit by the normal path, on the simulator's
    ``graph`` (``"road"`` corridors, or ``"random"`` links: METIS cuts many, large halos)."""
    torch.set_num_threads(threads)
    from models.forecasters.factory import build_model
    from pipeline.data.simulate import simulate_network

    panel = simulate_network(sensors, days=1.2, seed=11, graph=graph)  # type: ignore[arg-type]
    train, valid = panel.slice(0, 288), panel.slice(288, 336)
    model = build_model(
        "tgclstm", window=WINDOW, horizon=HORIZON, device="cpu", epochs=epochs, progress=False,
        subgraph_nodes=subgraph_nodes,
    )  # fmt: skip
    before = _vm_hwm_mb()
    started = time.perf_counter()
    model.fit(train, valid=valid)
    seconds = time.perf_counter() - started
    history = model.history  # type: ignore[attr-defined]
    return {
        "sensors": sensors,
        "graph": graph,
        "subgraph_nodes": subgraph_nodes,
        "subgraphs": model.graph_info.get("subgraphs"),  # type: ignore[attr-defined]
        "epochs": history.epochs_run,
        "fit_s": seconds,
        "s_per_epoch": seconds / history.epochs_run,
        "train_s_per_epoch": history.seconds / history.epochs_run,
        "peak_before_fit_mb": before,
        "peak_mb": _vm_hwm_mb(),
        "best_valid_loss": history.best_valid_loss,
        "graph_path_kept": model.graph_info.get("graph_path_kept"),  # type: ignore[attr-defined]
    }


def fit_section(
    cases: list[tuple[int, int]], threads: int, epochs: int, timeout_s: float, graph: str
) -> list[dict[str, Any]]:
    """One fit per (sensors, subgraph_nodes) case, each in a fresh process bounded by
    ``timeout_s`` (a fit that runs over is recorded as an error row)."""
    rows = []
    for sensors, nodes in cases:
        options = json.dumps(
            {
                "sensors": sensors, "subgraph_nodes": nodes, "threads": threads,
                "epochs": epochs, "graph": graph,
            }
        )  # fmt: skip
        try:
            done = subprocess.run(
                [sys.executable, "-m", f"benchmarks.{NAME}", "--worker", options],
                capture_output=True, text=True, check=False, timeout=timeout_s,
                cwd=Path(__file__).resolve().parents[1],
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            rows.append(
                {"sensors": sensors, "subgraph_nodes": nodes, "error": f"over {timeout_s:.0f} s"}
            )
            print(f"  fit {sensors} sensors, parts of {nodes}: {rows[-1]}", flush=True)
            continue
        found = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not found:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            rows.append({"sensors": sensors, "subgraph_nodes": nodes, "error": tail[:300]})
        else:
            rows.append(json.loads(found[-1]))
        print(f"  fit {sensors} sensors, parts of {nodes}: {rows[-1]}", flush=True)
    return rows


def slope(rows: list[dict[str, Any]], key: str) -> float | None:
    """The exponent of ``key ~ sensors^slope`` over the rows that measured it."""
    measured = [r for r in rows if isinstance(r.get(key), float)]
    return log_log_slope([r["sensors"] for r in measured], [r[key] for r in measured])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{NAME}", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--fits", default=None, help="SENSORS:PART_NODES,... (0 = whole graph)")
    parser.add_argument("--no-kernels", action="store_true", help="skip the kernel section")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per training stage")
    parser.add_argument("--fit-timeout", type=float, default=1800, help="seconds per fit")
    parser.add_argument("--graph", choices=("road", "random"), default="road", help="fits' graph")
    parser.add_argument("--name", default=NAME, help="write benchmarks/results/NAME.json")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(fit_worker(**json.loads(args.worker))))
        return
    default_fits = "300:100,300:0" if args.quick else "2000:0,2000:1000,8600:1000,20000:1000"
    fits_arg = default_fits if args.fits is None else args.fits
    cases = [tuple(int(v) for v in c.split(":")) for c in fits_arg.split(",") if c]
    started = time.perf_counter()
    kernels = []
    if not args.no_kernels:
        sizes = [(207, 64), (500, 64)] if args.quick else [(207, 64), (2000, 64), (20000, 8)]
        for sensors, batch in sizes:
            kernels.append(kernel_row(sensors, batch, repeats=2 if args.quick else 5))
            print(f"  kernels {sensors}: {kernels[-1]}", flush=True)
    fits = fit_section(cases, args.threads, args.epochs, args.fit_timeout, args.graph)  # type: ignore[arg-type]
    by_parts = [r for r in fits if r.get("subgraph_nodes") and "error" not in r]
    payload = {
        "quick": args.quick,
        "threads": args.threads,
        "epochs_per_stage": args.epochs,
        "graph": args.graph,
        "kernels": kernels,
        "fits": fits,
        "slope_s_per_epoch": slope(by_parts, "s_per_epoch"),
        "slope_peak_mb": slope(by_parts, "peak_mb"),
        "seconds": time.perf_counter() - started,
    }
    path = write_result(args.name, payload)
    names = ["pyg-spmm", "csr", "pyg-scatter", "auto", "infer_pyg-spmm", "infer_csr"]
    names += ["xgrad_pyg-spmm", "xgrad_csr"]
    print_table(
        "graph convolution kernels, ms per forward + backward (infer_: forward, no gradient;"
        " xgrad_: constant entries, gradient of x only)",
        ["sensors", "edges", "columns", *names],
        [[r["sensors"], r["edges"], r["columns"], *(r[f"{n}_ms"] for n in names)] for r in kernels],
    )
    print_table(
        f"TGC-LSTM fit (default configuration, {args.epochs} epoch(s) per stage)",
        ["sensors", "parts of", "parts", "halo share", "s/epoch", "peak MB", "valid loss", "error"],
        [
            [
                r["sensors"],
                r["subgraph_nodes"] or "whole graph",
                (r.get("subgraphs") or {}).get("parts", 1),
                (r.get("subgraphs") or {}).get("halo_share", 0.0),
                r.get("s_per_epoch", ""),
                r.get("peak_mb", ""),
                r.get("best_valid_loss", ""),
                r.get("error", ""),
            ]
            for r in fits
        ],
    )
    print(f"slopes (log-log, by subgraph): s/epoch {payload['slope_s_per_epoch']}, "
          f"peak {payload['slope_peak_mb']}")  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
