"""TGC-LSTM speed and memory: against the plain LSTM, against the authors' dense layer,
and on road networks of 200, 2,000 and 20,000 sensors.

What is measured (one run, this machine; ``--device cuda`` on a GPU)
--------------------------------------------------------------------
1. ``los-loop`` (207 sensors, window 12, horizon 12, batch 64): seconds per training
   epoch (every window of the training part, forward + backward + AdamW step, batches
   gathered as the training engine gathers them) and milliseconds per inference window
   (one window alone, and amortised over a batch of 64) for

   * ``tgclstm``: this project's TGC-LSTM (``models.nn.tgclstm_net.TGCLSTMNet``) in its
     default configuration: ``form="hybrid"``, the network-wide LSTM plus the graph path
     (sparse graph convolution and neighbour term, a state per sensor, gates shared by
     all sensors) entering through a zero-initialised head,
   * ``tgclstm-layer``: the same network on the naive layer's inputs (speeds only, no
     calendar or mask features, last-value skip, no dropout): the like-for-like timing
     of the layer against ``naive-dense``,
   * ``tgclstm-shared``: the scalable form (per-sensor state of ``hidden`` units, gates
     shared by all sensors), the default above ``dense_max_nodes`` sensors,
   * ``lstm``: the project's network-wide LSTM (``models.forecasters.rnn.NetworkRNN``, linear skip,
     same dropout) with hidden size N = 207. "Same hidden size" follows the paper: its
     TGC-LSTM and its LSTM both have one hidden unit per sensor (hidden = N). The
     per-sensor form carries ``hidden`` units per sensor, i.e. ``hidden`` x more state,
     and is timed against the same LSTM,
   * ``naive-dense``: the authors' original layer, written here only as the comparison
     point: per hop an N x N weight multiplied by the dense ``Ã^k ⊙ FFR`` mask at every
     step, four separate gate layers ``Linear((K+1) N -> N)``, the neighbour term as a
     dense matrix-vector product, and a linear head to ``horizon`` steps.

2. The 2,000-sensor simulated network, batch 64: seconds per training batch of
   ``tgclstm`` (default configuration, which is the shared form at this size) and
   ``naive-dense``, times the number of batches of one epoch (the
   training part of one simulated week), so the epoch figure is an estimate from the
   median batch.

3. Scaling on simulated networks of 200, 2,000 and 20,000 sensors: seconds per training
   batch and peak memory of ``tgclstm-shared``, the form that must scale (and of
   ``naive-dense`` where its weights fit), at a smaller batch (8 by default) so that
   20,000 sensors fit this machine's memory.
   Each size runs in a fresh subprocess. Memory method: torch's CPU allocations are
   invisible to ``tracemalloc``, so the peak resident set size is read from
   ``/proc/self/status`` (``VmHWM``) after the peak is reset (``/proc/self/clear_refs``)
   once the data and graph are built and freed heap memory is returned to the OS
   (``malloc_trim``); the reported number is that peak minus the resident size before the
   model was created: model, optimiser state and the activations of training batches.
   On CUDA it is the peak of torch's device allocations over the same span
   (``torch.cuda.max_memory_allocated``). The dense layer's weight memory ``K N² 4``
   bytes is shown beside it.

With ``--device cuda`` modules, panel tensors and window origins live on the GPU, in
float32 (no autocast), and every timed span ends with ``torch.cuda.synchronize()``;
results go to ``tgclstm_speed_cuda.json``.

The shared 2-core machine makes timings noisy: every figure is the median of repeated
measurements and the JSON records the machine.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from benchmarks.common import write_result
from flows.reporting.text import print_table
from models.forecasters.base import window_origins
from models.forecasters.rnn import NetworkRNN
from models.forecasters.tgclstm import TGCLSTMConfig, TGCLSTMNet
from models.nn.inputs import InputSpec, PanelTensors, Scaler
from models.panel import SensorPanel, chronological_split

NAME = "tgclstm_speed"
WINDOW, HORIZON = 12, 12


class NaiveDenseTGCLSTM(nn.Module):
    """The authors' original TGC-LSTM layer (dense), for comparison only.

    Per hop a full N x N weight is masked by ``Ã^k ⊙ FFR`` at every step
    (``FilterLinear``), the K results and ``h`` feed four separate gate layers, and the
    neighbour term is ``C ⊙ ((Ã^K ⊙ FFR) w_N)``. The last hidden state (N units) goes
    through a linear head to ``horizon`` steps, plus the last value (as our models do).
    """

    def __init__(self, hops: Sequence[np.ndarray], num_nodes: int, horizon: int) -> None:
        super().__init__()
        n, k = num_nodes, len(hops)
        masks = torch.zeros(k, n, n)  # [K, N, N]: the dense Ã^k ⊙ FFR
        for h, pairs in enumerate(hops):
            masks[h, torch.tensor(pairs[1]), torch.tensor(pairs[0])] = 1.0
        self.register_buffer("masks", masks)
        bound = n**-0.5
        self.gc = nn.ParameterList(
            nn.Parameter(torch.empty(n, n).uniform_(-bound, bound)) for _ in range(k)
        )
        self.fl, self.il, self.ol, self.cl = (nn.Linear((k + 1) * n, n) for _ in range(4))
        self.neighbour = nn.Parameter(torch.empty(n).uniform_(-bound, bound))
        self.head = nn.Linear(n, horizon * n)
        self.n, self.horizon = n, horizon

    def forward(self, x: Tensor) -> Tensor:
        batch, window = x.shape[:2]
        speed = x[..., 0]  # [batch, window, node]
        h = speed.new_zeros(batch, self.n)  # [batch, node]
        c = speed.new_zeros(batch, self.n)
        for t in range(window):
            xt = speed[:, t]
            gc = torch.cat(
                [nn.functional.linear(xt, w * m) for w, m in zip(self.gc, self.masks, strict=True)],
                dim=1,
            )  # [batch, K * node]
            combined = torch.cat([gc, h], dim=1)
            f = torch.sigmoid(self.fl(combined))
            i = torch.sigmoid(self.il(combined))
            o = torch.sigmoid(self.ol(combined))
            c_tilde = torch.tanh(self.cl(combined))
            nc = c * torch.mv(self.masks[-1], self.neighbour)
            c = f * nc + i * c_tilde
            h = o * torch.tanh(c)
        out = self.head(h).view(batch, self.horizon, self.n)
        return out + speed[:, -1].unsqueeze(1)


class SpeedsOnly(nn.Module):
    """Feed only feature 0 (the speeds) to ``module``, as the naive layer reads its input."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x[..., :1])


# --------------------------------------------------------------------------- timing


def hop_lists(panel: SensorPanel, config: TGCLSTMConfig) -> list[np.ndarray]:
    """``Ã^k ⊙ FFR`` for k = 1..K as the model would build them (FFR = one grid step)."""
    assert panel.graph is not None
    minutes = config.ffr_minutes or panel.freq.total_seconds() / 60.0
    return [
        np.asarray(panel.graph.hops(k, minutes=minutes, free_flow_kmh=config.free_flow_kmh))
        for k in range(1, config.hops + 1)
    ]


def build(kind: str, panel: SensorPanel, config: TGCLSTMConfig, spec: InputSpec) -> nn.Module:
    """One of the compared modules for ``panel`` (seeded, CPU).

    ``tgclstm`` is the default configuration (``form="hybrid"`` with the shared graph
    cell); ``tgclstm-shared`` and ``tgclstm-dense`` are the graph path alone (shared) and
    the paper's form.
    """
    torch.manual_seed(0)
    n = panel.n_nodes
    if kind == "lstm":
        return NetworkRNN(
            n,
            spec,
            hidden=n,
            horizon=HORIZON,
            kind="lstm",
            dropout=config.dropout,
            skip="linear",
            window=WINDOW,
        )
    hops = hop_lists(panel, config)
    if kind == "naive-dense":
        return NaiveDenseTGCLSTM(hops, n, HORIZON)
    if kind == "tgclstm-layer":  # like for like with naive-dense: speeds in, no extras
        layer = TGCLSTMNet(
            hops,
            n,
            spec=InputSpec(time_of_day=False, day_of_week=False, mask=False),
            horizon=HORIZON,
            form="paper",
            skip="last",
            window=WINDOW,
            dense_max_nodes=max(n, config.dense_max_nodes),
        )
        return SpeedsOnly(layer)
    form = {"tgclstm-dense": "paper", "tgclstm-shared": "shared"}.get(kind, config.form)
    n_dense = config.dense_max_nodes
    return TGCLSTMNet(
        hops,
        n,
        spec=spec,
        horizon=HORIZON,
        window=WINDOW,
        form=form,  # type: ignore[arg-type]
        hidden=config.hidden,
        graph_hidden=config.graph_hidden,
        embed=config.embed,
        skip=config.skip,
        dropout=config.dropout,
        graph_dropout=config.graph_dropout,
        graph_cell=config.graph_cell,
        dense_max_nodes=max(n, n_dense) if form == "paper" else n_dense,
    )


def _sync() -> None:
    """Wait for queued CUDA work, so that a wall-clock time covers it (no-op on CPU)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        _sync()
        started = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def placed(
    module: nn.Module, data: PanelTensors, origins: Tensor, device: torch.device
) -> tuple[nn.Module, PanelTensors, Tensor]:
    """The module, panel tensors and window origins on ``device``."""
    return module.to(device), data.to(device), origins.to(device)


def train_batch_fn(
    module: nn.Module, data: PanelTensors, origins: Tensor, spec: InputSpec, batch: int
) -> Callable[[int], None]:
    """A function that trains ``module`` on batch number ``b`` (forward, backward, AdamW)."""
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)
    module.train()

    def step(b: int) -> None:
        idx = origins[b * batch : (b + 1) * batch]
        x = data.inputs(idx, WINDOW, spec)  # [batch, window, node, feature]
        y, m = data.targets(idx, HORIZON)  # [batch, horizon, node]
        pred = module(x)
        loss = torch.where(m, (pred - y) ** 2, torch.zeros_like(y)).sum() / m.sum().clamp(min=1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def epoch_seconds(step: Callable[[int], None], n_batches: int, *, repeats: int) -> float:
    """Median wall time of a full epoch of ``n_batches`` batches (after one warm-up batch)."""
    step(0)
    return _median_seconds(lambda: [step(b) for b in range(n_batches)], repeats)


def inference_ms(
    module: nn.Module, data: PanelTensors, origins: Tensor, spec: InputSpec, *, repeats: int
) -> tuple[float, float]:
    """(ms for one window alone, ms per window in a batch of 64), forward only."""
    module.eval()
    one = data.inputs(origins[:1], WINDOW, spec)
    many = data.inputs(origins[:64], WINDOW, spec)
    with torch.no_grad():
        module(one)
        single = _median_seconds(lambda: module(one), repeats * 4)
        batched = _median_seconds(lambda: module(many), repeats)
    return 1e3 * single, 1e3 * batched / len(many)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------- sections


def los_loop_section(
    config: TGCLSTMConfig, *, quick: bool, device: torch.device
) -> list[dict[str, Any]]:
    """Epoch and inference times of the four modules on los-loop."""
    from pipeline.data.datasets import load_dataset

    panel = load_dataset("los-loop")
    train = chronological_split(panel, test=0.2, valid=0.1).train
    spec = config.inputs
    data = PanelTensors.build(train, Scaler.fit(train), spec)
    gen = torch.Generator().manual_seed(0)
    origins = torch.from_numpy(window_origins(train.n_time, WINDOW, HORIZON))
    origins = origins[torch.randperm(len(origins), generator=gen)]
    n_batches = 3 if quick else -(-len(origins) // 64)
    rows = []
    for kind in ("tgclstm", "tgclstm-layer", "tgclstm-shared", "lstm", "naive-dense"):
        module, on, at = placed(build(kind, train, config, spec), data, origins, device)
        step = train_batch_fn(module, on, at, spec, 64)
        epoch = epoch_seconds(step, n_batches, repeats=1 if quick else 2)
        single, per_window = inference_ms(module, on, at, spec, repeats=2 if quick else 5)
        rows.append(
            {
                "model": kind,
                "sensors": panel.n_nodes,
                "params": n_params(module),
                "batches_per_epoch": n_batches,
                "epoch_s": epoch,
                "batch_s": epoch / n_batches,
                "infer_ms_single": single,
                "infer_ms_per_window_b64": per_window,
            }
        )
        print(f"  los-loop {kind}: {epoch:.2f} s/epoch", flush=True)
    return rows


def simulated_panel(sensors: int, days: float) -> SensorPanel:
    from pipeline.data.simulate import simulate_network

    return simulate_network(sensors, days=days, seed=1)


def large_section(
    config: TGCLSTMConfig, *, quick: bool, device: torch.device
) -> list[dict[str, Any]]:
    """Per-batch training time on the 2,000-sensor network; epoch = batch x batches."""
    sensors = 500 if quick else 2000
    panel = simulated_panel(sensors, days=7)
    train = chronological_split(panel, test=0.2, valid=0.1).train
    spec = config.inputs
    data = PanelTensors.build(train, Scaler.fit(train), spec)
    origins = torch.from_numpy(window_origins(train.n_time, WINDOW, HORIZON))
    epoch_batches = -(-len(origins) // 64)
    rows = []
    for kind in ("tgclstm", "naive-dense"):
        module, on, at = placed(build(kind, train, config, spec), data, origins, device)
        step = train_batch_fn(module, on, at, spec, 64)
        step(0)
        per_batch = _median_seconds(lambda step=step: step(1), 1 if quick else 3)
        rows.append(
            {
                "model": kind,
                "sensors": sensors,
                "params": n_params(module),
                "batch_s": per_batch,
                "batches_per_epoch": epoch_batches,
                "epoch_s_estimated": per_batch * epoch_batches,
            }
        )
        print(f"  {sensors} sensors {kind}: {per_batch:.2f} s/batch", flush=True)
    return rows


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def scale_worker(
    sensors: int, kind: str, batch: int, repeats: int, threads: int, device: str = "cpu"
) -> dict[str, Any]:
    """Run in a fresh subprocess: batch time and peak memory of one model at one size
    (on CUDA: the peak of torch's device allocations, ``torch.cuda.max_memory_allocated``)."""
    torch.set_num_threads(threads)
    config = TGCLSTMConfig()
    spec = config.inputs
    panel = simulated_panel(sensors, days=1)
    data = PanelTensors.build(panel, Scaler.fit(panel), spec)
    origins = torch.from_numpy(window_origins(panel.n_time, WINDOW, HORIZON))
    hops = hop_lists(panel, config)
    edges = sum(h.shape[1] for h in hops)
    # Peak from here on: model, optimiser state, activations (not the data or the graph).
    # Freed heap pages first go back to the OS: otherwise the model would reuse them
    # without raising the resident size, and small networks would look free.
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    on_cuda = device == "cuda"
    if on_cuda:
        data, origins = data.to(torch.device(device)), origins.to(device)
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() // 1024
    else:
        before = _status_kib("VmRSS")
    module = build(kind, panel, config, spec).to(device)
    step = train_batch_fn(module, data, origins, spec, batch)
    step(0)
    per_batch = _median_seconds(lambda: step(1), repeats)
    peak = torch.cuda.max_memory_allocated() // 1024 if on_cuda else _status_kib("VmHWM")
    return {
        "model": kind,
        "sensors": sensors,
        "edges": edges,
        "params": n_params(module),
        "batch": batch,
        "batch_s": per_batch,
        "peak_mb": (peak - before) / 1024,
        "dense_gc_weights_mb": config.hops * sensors**2 * 4 / 2**20,
    }


def scaling_section(
    sizes: Sequence[int], *, batch: int, repeats: int, threads: int, device: str
) -> list[dict[str, Any]]:
    """One subprocess per (size, model); the dense model only where its weights fit."""
    rows = []
    for sensors in sizes:
        for kind in ("tgclstm-shared", "naive-dense"):
            dense_gb = 4 * (3 * sensors**2 + 4 * 4 * sensors**2) / 2**30  # GC + gate weights
            if kind == "naive-dense" and dense_gb > 2.0:
                rows.append(
                    {
                        "model": kind,
                        "sensors": sensors,
                        "skipped": f"weights alone need {dense_gb:.1f} GB "
                        "(plus gradients and Adam state: x4)",
                        "dense_gc_weights_mb": 3 * sensors**2 * 4 / 2**20,
                    }
                )
                continue
            cmd = [
                sys.executable,
                "-m",
                "benchmarks.tgclstm_speed",
                "--worker",
                json.dumps(
                    {
                        "sensors": sensors,
                        "kind": kind,
                        "batch": batch,
                        "repeats": repeats,
                        "threads": threads,
                        "device": device,
                    }
                ),
            ]
            done = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                check=False,
                cwd=Path(__file__).resolve().parents[1],
            )
            if done.returncode != 0:
                rows.append(
                    {
                        "model": kind,
                        "sensors": sensors,
                        "error": done.stderr.strip().splitlines()[-1:],
                    }
                )
                continue
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(
                f"  scaling {kind} {sensors}: {rows[-1]['batch_s']:.2f} s/batch, "
                f"{rows[-1]['peak_mb']:.0f} MB",
                flush=True,
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{NAME}", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--sizes", default=None, help="scaling sizes, e.g. 200,2000,20000")
    parser.add_argument("--scale-batch", type=int, default=8, help="batch size for scaling")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument(
        "--device", default="cpu", choices=("cpu", "cuda"), help="where the modules run"
    )
    parser.add_argument("--name", default=None, help="results name (default NAME[_cuda])")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is false")
    torch.set_num_threads(args.threads)
    if args.worker:
        options = json.loads(args.worker)
        print(json.dumps(scale_worker(**options)))
        return

    config = TGCLSTMConfig()
    sizes = (
        [int(s) for s in args.sizes.split(",")]
        if args.sizes
        else ([200, 2000] if args.quick else [200, 2000, 20000])
    )
    started = time.perf_counter()
    device = torch.device(args.device)
    los = los_loop_section(config, quick=args.quick, device=device)
    large = large_section(config, quick=args.quick, device=device)
    scaling = scaling_section(
        sizes,
        batch=args.scale_batch,
        repeats=1 if args.quick else 3,
        threads=args.threads,
        device=args.device,
    )

    by = {r["model"]: r for r in los}
    big = {r["model"]: r for r in large}
    summary = {
        "tgclstm_over_lstm_epoch": by["tgclstm"]["epoch_s"] / by["lstm"]["epoch_s"],
        "tgclstm_shared_over_lstm_epoch": by["tgclstm-shared"]["epoch_s"] / by["lstm"]["epoch_s"],
        "naive_over_tgclstm_epoch_los_loop": by["naive-dense"]["epoch_s"]
        / by["tgclstm"]["epoch_s"],
        "naive_over_tgclstm_layer_epoch_los_loop": by["naive-dense"]["epoch_s"]
        / by["tgclstm-layer"]["epoch_s"],
        "naive_over_tgclstm_shared_epoch_los_loop": by["naive-dense"]["epoch_s"]
        / by["tgclstm-shared"]["epoch_s"],
        f"naive_over_tgclstm_epoch_{big['tgclstm']['sensors']}": big["naive-dense"]["batch_s"]
        / big["tgclstm"]["batch_s"],
    }
    payload = {
        "quick": args.quick,
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "config": {k: v for k, v in config.hyper().items()},
        "los_loop": los,
        "large": large,
        "scaling": scaling,
        "summary": summary,
        "seconds": time.perf_counter() - started,
    }
    path = write_result(args.name or (NAME if args.device == "cpu" else f"{NAME}_cuda"), payload)

    print_table(
        "los-loop (207 sensors, window 12, batch 64)",
        ["model", "params", "s/epoch", "ms/window (1)", "ms/window (b64)"],
        [
            [
                r["model"],
                r["params"],
                r["epoch_s"],
                r["infer_ms_single"],
                r["infer_ms_per_window_b64"],
            ]
            for r in los
        ],
    )
    print_table(
        f"{big['tgclstm']['sensors']}-sensor simulated network, batch 64",
        ["model", "params", "s/batch", "s/epoch (est.)"],
        [[r["model"], r["params"], r["batch_s"], r["epoch_s_estimated"]] for r in large],
    )
    print_table(
        f"scaling (batch {args.scale_batch})",
        ["model", "sensors", "edges", "s/batch", "peak MB", "dense GC weights MB"],
        [
            [
                r["model"],
                r["sensors"],
                r.get("edges", ""),
                r.get("batch_s", r.get("skipped", "")),
                r.get("peak_mb", r.get("error", "")),
                r.get("dense_gc_weights_mb", ""),
            ]
            for r in scaling
        ],
    )
    print_table("ratios", ["what", "ratio"], [[k, v] for k, v in summary.items()])
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
