"""TGC-LSTM: the traffic graph-convolutional LSTM of Cui et al. (IEEE T-ITS, 2019), sparse.

The paper's model, per time step ``t`` and hop ``k = 1..K``::

    GC_t^k = (W_gc^k ⊙ Ã^k ⊙ FFR) x_t                  graph convolution, one weight per pair
    gates  = σ(W [GC_t^1, .., GC_t^K, h_{t-1}] + b)     f, i, o and C̃ as in any LSTM
    C_t    = f_t ⊙ (Ã^K ⊙ FFR · w_N) ⊙ C_{t-1} + i_t ⊙ C̃_t
    loss   = prediction loss + λ1 Σ_k |W_gc^k|_1 + λ2 |w_N|_2²

``Ã^k`` is the k-hop adjacency with self loops clamped to 1, ``FFR`` the free-flow
reachability (1 where one sensor can be driven to from the other within ``ffr_minutes``
at ``free_flow_kmh``). In the authors' code ``w_N`` is a vector of length N, so the
neighbour term is a per-sensor scale of the previous cell state.

How this implementation stays sparse
------------------------------------
The weights ``W_gc^k`` exist only on the pairs that ``Ã^k ⊙ FFR`` allows: they are stored
per edge, and the K hops are one stacked CSR matrix ``[K*N, N]`` applied with a single
``torch.sparse.mm`` (forward, and backward for both the input and the edge weights,
without any N x N tensor). The neighbour scale ``(Ã^K ⊙ FFR) w_N`` is one more sparse
product per forward pass. Memory grows with the number of edges, not with N².

Deviations from the paper, and why
----------------------------------
*Gates.* In the paper the hidden size equals N (one hidden unit per sensor) and the gates
are dense ``Linear((K+1) N -> N)``: O(N²) parameters, 4.8 GB of weights at 20,000 sensors.
Two forms are implemented, both with the graph convolution and the neighbour term exactly
as above and both with one fused gate matrix:

* ``gates="dense"``, the paper's form: the K graph-convolution outputs of all sensors (plus
  each sensor's observed flag and the time of day, once) feed the gates, hidden size N.
* ``gates="shared"``, the scalable form: every sensor has its own recurrent state
  ``[batch, node, hidden]``; one gate matrix shared by all sensors sees
  ``[GC_t(i) (K values), other inputs of i, e_i, h_{t-1}(i)]``, where ``e_i`` is a small
  learned per-sensor embedding. Parameters and memory are O(edges + N·hidden).

``gates="auto"`` (the default) takes the dense form up to ``dense_max_nodes`` (1,000)
sensors and the shared form above. On los-loop the dense form was clearly more accurate
(below) and, at 207 sensors, about 2x cheaper per epoch than the shared one; on large networks
only the shared form fits in memory (``benchmarks/tgclstm_speed.py``).

*Output.* A direct multi-output head maps the last hidden state to all ``horizon`` steps at
once, plus a per-sensor skip that starts as persistence (``skip="linear"``: LSTNet's
autoregressive highway, Lai et al. 2018, as ``models.forecasters.rnn`` uses it). An encoder-decoder
that feeds its own forecasts back through the graph convolution for 12 more steps was
worse on validation at every horizon and took twice as long to train (below).

*Regularisation.* The paper's λ1 L1 (graph-convolution weights) and λ2 L2 (neighbour
weights) are implemented (``lambda_gc``, ``lambda_nb``, added to the loss through the
engine's ``extra_loss``) but default to 0: they only hurt on validation, even λ1 = 1e-7
(0.13 RMSE at 60 minutes, below). A likely reason: Adam normalises each weight's step,
so a small but constant L1 gradient still moves weakly used weights by about the learning
rate per step, towards zero; a proximal (soft-threshold) L1 step would avoid that.
Dropout is time-locked (one mask per input sequence, Gal & Ghahramani 2016) on the gate
input, plus dropout on the last hidden state.

*Ensembles.* ``ensemble=M`` trains M networks independently and averages their forecasts.
Three members gained 0.02 / 0.06 RMSE at 15 / 60 minutes on validation for three times the
training and prediction cost, so the default is one.

Both gate forms use :class:`models.nn.recurrent.GatedCell` and
:func:`models.nn.recurrent.run_cell`, the cell and time loop of the plain LSTM: the gate
input (the graph convolution) and the ``cell_scale`` (the neighbour term) are the only
differences.

Measured on los-loop validation (never the test part)
------------------------------------------------------
Pooled RMSE at 3 / 12 steps (15 / 60 min) of ``validation_backtest``, mean of seeds 0-2
unless marked (s0 = seed 0 only); each row changes one thing from the row it cites:

==============================================================  ===============
dense gates, last-value skip, no dropout, MSE (s0)              5.146 / 6.982
  + linear skip (s0)                                            4.929 / 6.752
  + dropout 0.5 per step, Huber loss, patience 20 (s0)          4.654 / 6.186
  same, seeds 1-2 only                                          4.687 / 6.311
  same, graph skip (own + neighbours' windows) (s0)             4.695 / 6.285
  same, encoder-decoder instead of direct head (s0)             4.921 / 6.360
  same, K = 2 hops (s0)                                         4.729 / 6.582
  same, FFR off (k-hop only) (s0)                               4.663 / 6.252
  same, λ1 = 1e-4 (s0)                                          4.706 / 6.423
  same, dropout 0.6 (s0)                                        4.712 / 6.416
time-locked dropout instead of per-step                         4.644 / 6.208
  + λ1 = λ2 = 0 (the default)                                   4.558 / 5.839
  λ1 = 1e-7, λ2 = 1e-6 instead                                  4.581 / 5.966
  + weekend input (``day_of_week``)                             4.561 / 5.934
  mean forecast of the 3 seeds (``ensemble=3``) of the default  4.534 / 5.781
shared gates, hidden 16, default settings (s0)                  4.807 / 6.881
shared gates, hidden 16, dropout 0.3 per step, λ1 = 1e-5 (s0)   4.817 / 6.653
==============================================================  ===============

For comparison the network-wide LSTM and GRU (``models.forecasters.rnn``, tuned the same way) scored
about 4.64-4.67 / 6.12-6.19.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
import torch
from torch import Tensor, nn

from models.bundle import read_model_bundle
from models.forecasters.base import restore_forecaster
from models.forecasters.network import NetworkForecaster
from models.forecasters.windows import check_2d
from models.nn.recurrent import GatedCell, run_cell
from models.nn.training import (
    InputSpec,
    Scaler,
    TrainConfig,
    TrainHistory,
    fit_network,
    load_module_tensors,
    seeded,
)
from models.panel import SensorPanel

GateMode = Literal["shared", "dense"]
SkipKind = Literal["graph", "linear", "last", "none"]


def _csr_from_pairs(pairs: np.ndarray, num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Row pointers and column indices of the pattern ``pairs`` (int64 ``[2, E]``: src j,
    dst i), rows = targets i. Pairs are sorted by (target, source) here, whatever their order."""
    pairs = np.asarray(pairs, dtype=np.int64)
    if pairs.ndim != 2 or pairs.shape[0] != 2:
        raise ValueError(f"hop edge lists must be int [2, E] (src, dst), got shape {pairs.shape}")
    outside = (pairs < 0) | (pairs >= num_nodes)
    if outside.any():
        raise ValueError(
            f"hop edge list refers to node {int(pairs[outside][0])} in a graph of "
            f"{num_nodes} nodes; rebuild the graph for these sensors"
        )
    src, dst = pairs
    order = np.lexsort((src, dst))
    src, dst = src[order], dst[order]
    if len(src) > 1:
        dup = (np.diff(dst) == 0) & (np.diff(src) == 0)
        if dup.any():
            raise ValueError("hop edge list has duplicate (src, dst) pairs; deduplicate the graph")
    crow = np.zeros(num_nodes + 1, dtype=np.int64)  # [N + 1]
    np.cumsum(np.bincount(dst, minlength=num_nodes), out=crow[1:])
    return crow, src


def _transpose_pattern(crow: np.ndarray, col: np.ndarray, n_cols: int) -> dict[str, Tensor]:
    """What the backward pass needs to multiply by ``S^T`` without building it densely:
    row pointers and columns of the transposed pattern, and ``perm`` such that
    ``values[perm]`` are the values of ``S^T`` in its CSR order."""
    rows = np.repeat(np.arange(len(crow) - 1, dtype=np.int64), np.diff(crow))  # [E]
    perm = np.lexsort((rows, col))  # by (column, row): the CSR order of S^T
    crow_t = np.zeros(n_cols + 1, dtype=np.int64)  # [n_cols + 1]
    np.cumsum(np.bincount(col, minlength=n_cols), out=crow_t[1:])
    return {
        "crow_t": torch.from_numpy(crow_t),
        "col_t": torch.from_numpy(rows[perm]),
        "perm": torch.from_numpy(perm.astype(np.int64)),
    }


def _csr(crow: Tensor, col: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():
        # torch flags CSR tensors as "beta" on first use; the ops used here are tested.
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        # The pattern is checked once, when the layer is built; per call it would cost time.
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


class _CSRMatmul(torch.autograd.Function):
    """``S @ x`` with a differentiable CSR ``S`` whose backward stays O(edges).

    torch's own backward through ``torch.sparse_csr_tensor(..., values)`` turns the
    gradient into a dense ``[rows, cols]`` matrix before masking it (``sparse_mask`` of a
    ``to_dense``): 4.8 GB for the 3-hop matrix of 20,000 sensors. Here the gradient of the
    values is the sampled product ``(grad @ x^T)`` on the pattern only (SDDMM,
    ``torch.sparse.sampled_addmm``) and the gradient of ``x`` is ``S^T @ grad`` with the
    transposed pattern prepared once by the layer.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        values: Tensor,
        x: Tensor,
        crow: Tensor,
        col: Tensor,
        crow_t: Tensor,
        col_t: Tensor,
        perm: Tensor,
        n_rows: int,
        n_cols: int,
    ) -> Tensor:
        ctx.save_for_backward(values, x, crow, col, crow_t, col_t, perm)
        ctx.shape = (n_rows, n_cols)
        return torch.sparse.mm(_csr(crow, col, values, (n_rows, n_cols)), x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        values, x, crow, col, crow_t, col_t, perm = ctx.saved_tensors
        n_rows, n_cols = ctx.shape
        grad_values = grad_x = None
        if ctx.needs_input_grad[0]:
            pattern = _csr(crow, col, torch.zeros_like(values), (n_rows, n_cols))
            sampled = torch.sparse.sampled_addmm(pattern, grad.contiguous(), x.T.contiguous())
            grad_values = sampled.values()  # [E], in the order of ``values``
        if ctx.needs_input_grad[1]:
            transposed = _csr(crow_t, col_t, values[perm], (n_cols, n_rows))
            grad_x = torch.sparse.mm(transposed, grad.contiguous())
        return grad_values, grad_x, None, None, None, None, None, None, None


def _csr_matmul(module: nn.Module, values: Tensor, shape: tuple[int, int], x: Tensor) -> Tensor:
    """``S @ x`` for the CSR pattern held by ``module`` (buffers ``crow``, ``col``, ``crow_t``,
    ``col_t``, ``perm``) with ``values`` (which may require grad), in float32.

    Sparse products are not autocast-safe (cuSPARSE has no half kernels for every op), so
    autocast is switched off here and the inputs are cast to float32 explicitly.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        return _CSRMatmul.apply(
            values.float(),
            x.float(),
            module.crow,
            module.col,
            module.crow_t,
            module.col_t,
            module.perm,
            *shape,
        )


class SparseHopConv(nn.Module):
    """The K-hop graph convolution ``GC^k = (W^k ⊙ Ã^k ⊙ FFR) x`` with weights per edge.

    Parameters
    ----------
    hops : K int64 arrays ``[2, E_k]`` of pairs (source j, target i), the support of
        ``clamp(Ã^k, 1) ⊙ FFR`` for k = 1..K (as ``GraphLike.hops`` returns them).
    num_nodes : N.

    The weights of hop k live in ``weight[hop_ptr[k-1]:hop_ptr[k]]``, in (target, source)
    order; all hops form one CSR matrix ``[K*N, N]`` so one sparse product serves them all.
    """

    crow: Tensor  # buffers, declared for type checkers
    col: Tensor
    hop_ptr: Tensor
    crow_t: Tensor
    col_t: Tensor
    perm: Tensor

    def __init__(self, hops: Sequence[np.ndarray], num_nodes: int) -> None:
        super().__init__()
        if len(hops) < 1:
            raise ValueError("TGC-LSTM needs at least one hop (K >= 1)")
        if num_nodes < 1:
            raise ValueError(f"graph must have at least one node, got {num_nodes}")
        self.num_nodes = num_nodes
        self.num_hops = len(hops)
        crows, cols, sizes = [], [], [0]
        for k, pairs in enumerate(hops):
            crow, col = _csr_from_pairs(pairs, num_nodes)
            crows.append(crow[1:] + sizes[-1] if k else crow + sizes[-1])
            cols.append(col)
            sizes.append(sizes[-1] + len(col))
        # [K*N + 1] row pointers and [E] source columns of the stacked matrix [K*N, N].
        crow_all, col_all = np.concatenate(crows), np.concatenate(cols)
        self.register_buffer("crow", torch.from_numpy(crow_all))
        self.register_buffer("col", torch.from_numpy(col_all))
        self.register_buffer("hop_ptr", torch.tensor(sizes, dtype=torch.int64))  # [K + 1]
        # Derived from crow/col (not saved): the transposed pattern for the backward pass.
        for name, tensor in _transpose_pattern(crow_all, col_all, num_nodes).items():
            self.register_buffer(name, tensor, persistent=False)
        self.weight = nn.Parameter(torch.empty(sizes[-1]))  # [E], one weight per (hop, j, i)
        self.reset_parameters()

    @property
    def num_edges(self) -> int:
        return int(self.col.numel())

    def targets(self) -> Tensor:
        """Target node i of every stored weight, int64 ``[E]`` (rows of the stacked matrix)."""
        counts = self.crow.diff()  # [K*N]
        rows = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
        return rows % self.num_nodes

    def hop_of_edge(self) -> Tensor:
        """Hop number (1..K) of every stored weight, int64 ``[E]``."""
        sizes = self.hop_ptr.diff()  # [K]
        hops = torch.arange(1, self.num_hops + 1, device=sizes.device)
        return torch.repeat_interleave(hops, sizes)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        # Start as the neighbourhood mean (weight 1 / in-degree): GC outputs keep the scale
        # of the input, so the gates see values of a known size whatever the degree.
        counts = self.crow.diff().clamp(min=1).to(self.weight.dtype)  # [K*N]
        self.weight.copy_(torch.repeat_interleave(1.0 / counts, self.crow.diff()))

    def forward(self, x: Tensor) -> Tensor:
        """Convolve ``x`` ``[..., node, feature]`` over every hop: ``[..., node, K * feature]``,
        hop-major (all features of hop 1, then of hop 2, ...)."""
        if x.shape[-2] != self.num_nodes:
            raise ValueError(
                f"input has {x.shape[-2]} nodes on axis -2, the graph has {self.num_nodes}"
            )
        lead = x.shape[:-2]
        n, f = self.num_nodes, x.shape[-1]
        flat = x.reshape(-1, n, f).permute(1, 0, 2).reshape(n, -1)  # [node, rest * feature]
        k = self.num_hops
        out = _csr_matmul(self, self.weight, (k * n, n), flat)  # [K*node, rest*f]
        out = out.to(x.dtype).reshape(k, n, -1, f).permute(2, 1, 0, 3)  # [rest, node, K, f]
        return out.reshape(*lead, n, k * f)

    def penalty(self) -> Tensor:
        """λ1's term: the L1 norm of all graph-convolution weights (a scalar)."""
        return self.weight.abs().sum()


class NeighbourScale(nn.Module):
    """The neighbour term ``(Ã^K ⊙ FFR) w_N``: one scale of ``C_{t-1}`` per sensor.

    ``w_N`` starts at ``1 / mean in-degree`` so that the scale starts near 1 (a plain LSTM);
    the paper's L2 penalty on ``w_N`` then pulls it towards forgetting.
    """

    crow: Tensor  # buffers, declared for type checkers
    col: Tensor
    crow_t: Tensor
    col_t: Tensor
    perm: Tensor

    def __init__(self, pairs: np.ndarray, num_nodes: int) -> None:
        super().__init__()
        crow, col = _csr_from_pairs(pairs, num_nodes)
        self.num_nodes = num_nodes
        self.register_buffer("crow", torch.from_numpy(crow))  # [N + 1]
        self.register_buffer("col", torch.from_numpy(col))  # [E_K]
        for name, tensor in _transpose_pattern(crow, col, num_nodes).items():
            self.register_buffer(name, tensor, persistent=False)
        mean_degree = max(len(col) / num_nodes, 1.0)
        self.weight = nn.Parameter(torch.full((num_nodes,), 1.0 / mean_degree))  # [N], w_N

    def forward(self) -> Tensor:
        """The per-sensor scale, float32 ``[node]``."""
        ones = torch.ones(len(self.col), device=self.weight.device)  # [E_K]: Ã^K ⊙ FFR is 0/1
        w = self.weight.unsqueeze(1)  # [N, 1]
        return _csr_matmul(self, ones, (self.num_nodes,) * 2, w).squeeze(1)

    def penalty(self) -> Tensor:
        """λ2's term: the squared L2 norm of ``w_N`` (a scalar)."""
        return self.weight.pow(2).sum()


class TGCLSTMNet(nn.Module):
    """The TGC-LSTM network: ``x`` ``[batch, window, node, feature]`` -> ``[batch, horizon, node]``.

    Feature 0 of ``x`` is the scaled reading; it is the one that passes through the graph
    convolution. Any further features (time of day, weekend, observed mask) reach the
    gates directly: per sensor with ``gates="shared"``; with ``gates="dense"`` the
    per-sensor ones (mask) for every sensor and the ``time_features`` (the same for all
    sensors) once.

    Parameters
    ----------
    hops : K int64 arrays ``[2, E_k]`` (src j, dst i): the support of ``Ã^k ⊙ FFR``.
    num_nodes : N.
    n_features : features per sensor and step in ``x``.
    time_features : indices of the features that are the same for every sensor (calendar).
    horizon : steps forecast.
    hidden : recurrent state per sensor (``gates="shared"``); ignored by ``"dense"``,
        whose hidden size is N as in the paper.
    embed : size of the learned per-sensor embedding (``"shared"`` only; 0 for none).
    gates : ``"shared"`` (scalable, default) or ``"dense"`` (the paper's O(N²) gates).
    skip : what the output adds to the network's forecast, per sensor, all initialised to
        persistence: ``"graph"`` a learned linear map of the sensor's own ``window`` values
        *and* its K graph-convolution features (its neighbours' readings) to its
        ``horizon`` outputs (LSTNet's autoregressive highway, Lai et al. 2018, extended
        to the graph); ``"linear"`` the same on the sensor's own values only (as
        ``models.forecasters.rnn`` does); ``"last"`` the last value (persistence + learned change);
        ``"none"`` nothing.
    window : input steps (the size of the ``"graph"`` and ``"linear"`` skips).
    dropout : time-locked dropout on the gate input (one mask per sequence) and dropout on
        the last hidden state, during training.
    dense_max_nodes : refuse ``gates="dense"`` above this many sensors (its weights are N²).
    """

    node_idx: Tensor  # buffers, declared for type checkers
    time_idx: Tensor

    def __init__(
        self,
        hops: Sequence[np.ndarray],
        num_nodes: int,
        *,
        n_features: int = 1,
        time_features: Sequence[int] = (),
        horizon: int = 12,
        hidden: int = 32,
        embed: int = 8,
        gates: GateMode = "shared",
        skip: SkipKind = "linear",
        window: int = 12,
        dropout: float = 0.0,
        dense_max_nodes: int = 2000,
    ) -> None:
        super().__init__()
        if gates not in ("shared", "dense"):
            raise ValueError(f"gates must be 'shared' or 'dense', got {gates!r}")
        if skip not in ("graph", "linear", "last", "none"):
            raise ValueError(f"skip must be 'graph', 'linear', 'last' or 'none', got {skip!r}")
        if n_features < 1 or horizon < 1 or hidden < 1 or embed < 0:
            raise ValueError(
                f"need n_features >= 1, horizon >= 1, hidden >= 1 and embed >= 0; got "
                f"{n_features=}, {horizon=}, {hidden=}, {embed=}"
            )
        if any(not 0 < f < n_features for f in time_features):
            raise ValueError(
                f"time_features {list(time_features)} must index features 1..{n_features - 1}"
            )
        if gates == "dense" and num_nodes > dense_max_nodes:
            raise ValueError(
                f"gates='dense' needs O(N²) = {num_nodes}² weights; use gates='shared' above "
                f"{dense_max_nodes} sensors (or raise dense_max_nodes)"
            )
        self.num_nodes = num_nodes
        self.n_features = n_features
        self.horizon = horizon
        self.gates = gates
        self.skip = skip
        self.window = window
        k = len(hops)
        self.conv = SparseHopConv(hops, num_nodes)
        self.neighbour = NeighbourScale(hops[-1], num_nodes)
        self.dropout = nn.Dropout(dropout)
        per_node = [f for f in range(1, n_features) if f not in set(time_features)]
        self.register_buffer("node_idx", torch.tensor(per_node, dtype=torch.long), persistent=False)
        self.register_buffer(
            "time_idx", torch.tensor(list(time_features), dtype=torch.long), persistent=False
        )
        if gates == "shared":
            self.embedding = nn.Parameter(torch.randn(num_nodes, embed) * 0.1)  # [N, embed]
            self.cell = GatedCell(k + (n_features - 1) + embed, hidden, "lstm")
            self.head = nn.Linear(hidden + embed, horizon)
        else:
            self.register_parameter("embedding", None)
            width = num_nodes * (k + len(per_node)) + len(time_features)
            self.cell = GatedCell(width, num_nodes, "lstm")
            self.head = nn.Linear(num_nodes, horizon * num_nodes)
        if skip == "linear":
            init = torch.zeros(num_nodes, horizon, window)  # [node, horizon, window]
            init[:, :, -1] = 1.0  # persistence: weight 1 on the last input step
            self.skip_weight = nn.Parameter(init)
        elif skip == "graph":
            init = torch.zeros(num_nodes, horizon, window, 1 + k)  # [node, h, window, 1 + K]
            init[:, :, -1, 0] = 1.0  # persistence: the sensor's own last value
            self.skip_weight = nn.Parameter(init)
        # A zero head makes the untrained network the persistence forecast (with a skip).
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def gate_input(self, x: Tensor, gc: Tensor) -> Tensor:
        """What the gates see at each step: the graph convolution ``gc`` ``[b, t, node, K]``
        of the readings plus the other features of ``x``."""
        if self.gates == "shared":
            parts = [gc, x[..., 1:]]
            if self.embedding.shape[1]:
                parts.append(self.embedding.expand(*x.shape[:2], -1, -1))  # [b, t, node, e]
            return torch.cat(parts, dim=-1)  # [batch, time, node, K + F - 1 + embed]
        per_node = torch.cat([gc, x.index_select(-1, self.node_idx)], dim=-1).flatten(2)
        calendar = x[:, :, 0].index_select(-1, self.time_idx)  # [batch, time, time_feature]
        return torch.cat([per_node, calendar], dim=-1)  # [batch, time, node * (K + f) + t_f]

    def time_locked_dropout(self, inputs: Tensor) -> Tensor:
        """Dropout on the gate input ``[batch, time, ...]`` with one mask per sequence, the
        same at every step (variational dropout, Gal & Ghahramani 2016): the usual choice for
        recurrent inputs, and T times fewer random numbers, which matters on CPU at
        thousands of sensors (a fresh mask per step cost ~10% of a training batch)."""
        p = self.dropout.p
        if not self.training or p == 0.0:
            return inputs
        shape = (inputs.shape[0], 1, *inputs.shape[2:])  # [batch, 1, ...]: shared over time
        keep = torch.empty(shape, device=inputs.device, dtype=inputs.dtype).bernoulli_(1 - p)
        return inputs * keep / (1 - p)

    def forward(self, x: Tensor) -> Tensor:
        """Forecast ``[batch, horizon, node]`` (scaled) from ``x`` ``[batch, window, node, F]``."""
        fixed_window = self.skip in ("graph", "linear")  # one skip weight per input step
        if (
            x.ndim != 4
            or x.shape[2:] != (self.num_nodes, self.n_features)
            or (fixed_window and x.shape[1] != self.window)
        ):
            want = self.window if fixed_window else "window"
            raise ValueError(
                f"expected x [batch, {want}, {self.num_nodes}, {self.n_features}], "
                f"got {tuple(x.shape)}"
            )
        scale = self.neighbour()  # [node]
        if self.gates == "shared":
            scale = scale.unsqueeze(1)  # [node, 1]: broadcast over each sensor's hidden units
        gc = self.conv(x[..., :1])  # [batch, time, node, K]
        inputs = self.time_locked_dropout(self.gate_input(x, gc))
        _, (h, _) = run_cell(self.cell, inputs, cell_scale=scale.to(x.dtype))
        batch = x.shape[0]
        if self.gates == "shared":
            if self.embedding.shape[1]:
                h = torch.cat([h, self.embedding.expand(batch, -1, -1)], dim=-1)
            out = self.head(self.dropout(h)).transpose(1, 2)  # [batch, horizon, node]
        else:
            out = self.head(self.dropout(h)).view(batch, self.horizon, self.num_nodes)
        if self.skip == "last":
            out = out + x[:, -1, :, 0].unsqueeze(1)  # [batch, horizon, node]
        elif self.skip == "linear":
            out = out + torch.einsum("bwn,nhw->bhn", x[..., 0], self.skip_weight)
        elif self.skip == "graph":
            channels = torch.cat([x[..., :1], gc], dim=-1)  # [batch, window, node, 1 + K]
            out = out + torch.einsum("bwnc,nhwc->bhn", channels, self.skip_weight)
        return out

    def penalty(self, lambda_gc: float, lambda_nb: float) -> Tensor:
        """``λ1 |W_gc|_1 + λ2 |w_N|_2²``: the paper's regularisation, added to the loss."""
        return lambda_gc * self.conv.penalty() + lambda_nb * self.neighbour.penalty()

    @staticmethod
    def hops_from_state(state: dict[str, np.ndarray], prefix: str = "") -> list[np.ndarray]:
        """The K hop edge lists ``[2, E_k]`` stored in a saved state (so a bundle loads
        without its road graph): the inverse of what ``SparseHopConv`` keeps as buffers.
        ``prefix`` is the network's key prefix in ``state`` (e.g. ``"members.0."``)."""
        try:
            crow = np.asarray(state[f"{prefix}conv.crow"], dtype=np.int64)
            col = np.asarray(state[f"{prefix}conv.col"], dtype=np.int64)
            hop_ptr = np.asarray(state[f"{prefix}conv.hop_ptr"], dtype=np.int64)
        except KeyError as exc:
            raise ValueError(
                f"saved TGC-LSTM state lacks {exc.args[0]!r}; the bundle was written by another "
                "version: retrain it"
            ) from None
        k = len(hop_ptr) - 1
        if k < 1 or (len(crow) - 1) % k:
            raise ValueError(
                f"saved TGC-LSTM graph is inconsistent ({len(crow) - 1} rows for {k} hops); "
                "the bundle is corrupted: retrain it"
            )
        n = (len(crow) - 1) // k
        rows = np.repeat(np.arange(k * n, dtype=np.int64), np.diff(crow))  # [E]
        hops = []
        for h in range(k):
            sl = slice(int(hop_ptr[h]), int(hop_ptr[h + 1]))
            hops.append(np.stack([col[sl], rows[sl] - h * n]))  # [2, E_k]
        return hops


class TGCLSTMEnsemble(nn.Module):
    """The mean forecast of independently trained :class:`TGCLSTMNet` members (one member
    is the plain network). Members share the graph, hence the edge order of their weights."""

    def __init__(self, members: Sequence[TGCLSTMNet]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member network")
        self.members = nn.ModuleList(members)

    def member(self, index: int) -> TGCLSTMNet:
        """Member network ``index``."""
        net = self.members[index]
        assert isinstance(net, TGCLSTMNet)
        return net

    def forward(self, x: Tensor) -> Tensor:
        """``[batch, horizon, node]``: the members' mean forecast of ``x``."""
        if len(self.members) == 1:
            return self.member(0)(x)
        return torch.stack([member(x) for member in self.members]).mean(dim=0)

    @property
    def gates(self) -> GateMode:
        return self.member(0).gates

    def graph_weights(self) -> Tensor:
        """The members' mean graph-convolution weight per edge, ``[E]``."""
        weights = [self.member(m).conv.weight.detach().float() for m in range(len(self.members))]
        return torch.stack(weights).mean(dim=0)


@dataclass(frozen=True)
class TGCLSTMConfig:
    """Hyper-parameters of :class:`TGCLSTM` (all recorded in the bundle).

    Attributes
    ----------
    window, horizon : input steps and forecast steps.
    level : central level of the split-conformal intervals.
    hops : K, the number of graph-convolution hops (the paper uses 3).
    ffr_minutes : free-flow travel-time budget of FFR; None = one step of the panel's grid
        (the paper's "reachable within one time interval"); 0 turns FFR off (k-hop only).
    free_flow_kmh : free-flow speed of FFR.
    hidden : recurrent state per sensor (``gates="shared"``).
    embed : learned per-sensor embedding size (``gates="shared"``; 0 for none).
    gates : ``"auto"`` (default): ``"dense"`` up to ``dense_max_nodes`` sensors, where the
        paper's O(N²) gates are affordable and were more accurate on los-loop, else
        ``"shared"`` (O(edges + N·hidden)); or either form explicitly.
    dense_max_nodes : largest network given dense gates (by ``"auto"``, and allowed for an
        explicit ``"dense"``: its weights grow with N²).
    skip : per-sensor output skip (see :class:`TGCLSTMNet`): ``"graph"``, ``"linear"``,
        ``"last"`` or ``"none"``.
    dropout : time-locked dropout on the gate input and dropout on the last hidden state.
    lambda_gc : λ1, weight of the L1 norm of the graph-convolution weights (0 by default:
        see the module docstring).
    lambda_nb : λ2, weight of the squared L2 norm of the neighbour weights (0 by default).
    time_of_day, day_of_week, mask : input features besides the reading (see
        ``models.nn.training.InputSpec``).
    ensemble : networks trained independently (seeds ``train.seed * ensemble + m``) whose
        forecasts are averaged; training and prediction cost grow with it.
    train : optimiser, epochs, early stopping, seed, device.
    """

    window: int = 12
    horizon: int = 12
    level: float = 0.9
    hops: int = 3
    ffr_minutes: float | None = None
    free_flow_kmh: float = 100.0
    hidden: int = 16
    embed: int = 8
    gates: GateMode | Literal["auto"] = "auto"
    dense_max_nodes: int = 1000
    skip: SkipKind = "linear"
    dropout: float = 0.5
    lambda_gc: float = 0.0
    lambda_nb: float = 0.0
    time_of_day: bool = True
    day_of_week: bool = False
    mask: bool = True
    ensemble: int = 1
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.ensemble < 1:
            raise ValueError(f"ensemble must be >= 1 member, got {self.ensemble}")
        if self.window < 1 or self.horizon < 1:
            raise ValueError(f"window and horizon must be >= 1, got {self.window}, {self.horizon}")
        if not 0.0 < self.level < 1.0:
            raise ValueError(f"interval level must be in (0, 1), got {self.level}")
        if self.hops < 1:
            raise ValueError(f"hops (K) must be >= 1, got {self.hops}")
        if self.ffr_minutes is not None and not self.ffr_minutes >= 0:
            raise ValueError(f"ffr_minutes must be >= 0 or None, got {self.ffr_minutes}")
        if not self.free_flow_kmh > 0:
            raise ValueError(f"free_flow_kmh must be > 0, got {self.free_flow_kmh}")
        if self.hidden < 1 or self.embed < 0:
            raise ValueError(f"hidden must be >= 1 and embed >= 0, got {self.hidden}, {self.embed}")
        if self.lambda_gc < 0 or self.lambda_nb < 0:
            raise ValueError(f"λ1 and λ2 must be >= 0, got {self.lambda_gc}, {self.lambda_nb}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.gates not in ("auto", "shared", "dense"):
            raise ValueError(f"gates must be 'auto', 'shared' or 'dense', got {self.gates!r}")
        if self.dense_max_nodes < 1:
            raise ValueError(f"dense_max_nodes must be >= 1, got {self.dense_max_nodes}")
        if self.skip not in ("graph", "linear", "last", "none"):
            raise ValueError(f"skip must be 'graph', 'linear', 'last' or 'none', got {self.skip!r}")

    @property
    def inputs(self) -> InputSpec:
        """The input features the network sees."""
        return InputSpec(time_of_day=self.time_of_day, day_of_week=self.day_of_week, mask=self.mask)

    def gates_for(self, num_nodes: int) -> GateMode:
        """The gate form used for a network of ``num_nodes`` sensors (resolves ``"auto"``)."""
        if self.gates != "auto":
            return self.gates
        return "dense" if num_nodes <= self.dense_max_nodes else "shared"

    def hyper(self) -> dict[str, Any]:
        """The model's hyper-parameters without the training options (``config.json``)."""
        return {k: v for k, v in asdict(self).items() if k != "train"}


class TGCLSTM(NetworkForecaster):
    """The registered TGC-LSTM forecaster (``"tgclstm"``); it needs ``panel.graph``.

    Parameters
    ----------
    config : hyper-parameters (default :class:`TGCLSTMConfig` with ``DEFAULT_TRAIN``).
    train : training options; replaces ``config.train``.
    hyper : fields of :class:`TGCLSTMConfig` to replace, e.g. ``TGCLSTM(hidden=16)`` (this
        is how ``models.forecasters.factory.build_model`` passes ``window``, ``horizon`` and
        ``level``).
    """

    name: ClassVar[str] = "tgclstm"
    USES_GRAPH: ClassVar[bool] = True
    PROBABILISTIC: ClassVar[bool] = False
    DEFAULT_TRAIN: ClassVar[TrainConfig] = TrainConfig(epochs=200, patience=20, loss="huber")

    def __init__(
        self, config: TGCLSTMConfig | None = None, *, train: TrainConfig | None = None, **hyper: Any
    ) -> None:
        config = config or TGCLSTMConfig(train=self.DEFAULT_TRAIN)
        known = set(TGCLSTMConfig.__dataclass_fields__) - {"train"}
        unknown = sorted(set(hyper) - known)
        if unknown:
            raise TypeError(f"unknown TGC-LSTM option(s) {unknown}; known: {sorted(known)}")
        self.config = replace(config, **hyper, train=train or config.train)
        self.window = self.config.window
        self.horizon = self.config.horizon
        self.level = self.config.level
        self.sensor_ids = ()
        self.halfwidth = None
        self.net: TGCLSTMEnsemble | None = None
        self.scaler: Scaler | None = None
        self.history: TrainHistory | None = None  # of the first member
        self.histories: list[TrainHistory] = []
        self.device = torch.device("cpu")
        self.graph_info: dict[str, Any] = {}
        self.coords: np.ndarray | None = None
        self.fingerprint: str | None = None
        self.valid_metrics: dict[str, Any] | None = None

    # ------------------------------------------------------------------ training
    def hop_lists(self, panel: SensorPanel) -> tuple[list[np.ndarray], dict[str, Any]]:
        """The K edge lists ``Ã^k ⊙ FFR`` of ``panel.graph`` and a record of how they were made."""
        graph = panel.graph
        if graph is None:
            raise ValueError(
                "tgclstm needs a road graph: load a data set with one (los-loop, simulated, "
                "metr-la) or pass --adjacency PATH with a CSV data set"
            )
        cfg = self.config
        minutes = cfg.ffr_minutes
        if minutes is None:
            minutes = panel.freq.total_seconds() / 60.0 if panel.n_time > 1 else 5.0
        use_ffr = minutes > 0
        hops = [
            np.asarray(
                graph.hops(
                    k,
                    minutes=minutes if use_ffr else None,
                    free_flow_kmh=cfg.free_flow_kmh if use_ffr else None,
                ),
                dtype=np.int64,
            )
            for k in range(1, cfg.hops + 1)
        ]
        # GraphLike does not promise distances; RoadGraph says whether FFR had real lengths.
        has_distances = getattr(graph, "has_distances", None)
        if not use_ffr:
            ffr = "off (k-hop neighbourhoods only)"
        elif has_distances is False:
            ffr = "hop-count fallback (the graph has no distances or coordinates)"
        else:
            ffr = "road distances"
        info = {
            "ffr_minutes": minutes if use_ffr else None,
            "free_flow_kmh": cfg.free_flow_kmh if use_ffr else None,
            "ffr": ffr,
            "edges_per_hop": [int(h.shape[1]) for h in hops],
            "num_nodes": int(graph.num_nodes),
            "gates": self.config.gates_for(int(graph.num_nodes)),
        }
        return hops, info

    def member_seed(self, member: int) -> int:
        """Seed of ensemble member ``member``: distinct across members and across the
        ``train.seed`` of different fits (``roadcast train --seeds``)."""
        return self.config.train.seed * self.config.ensemble + member

    def build_net(
        self,
        hops: Sequence[np.ndarray],
        num_nodes: int,
        gates: GateMode | None = None,
        member: int = 0,
    ) -> TGCLSTMNet:
        """A fresh network for these hop lists (initial weights from ``member_seed``);
        ``gates`` overrides the form ``config.gates_for(num_nodes)`` picks."""
        cfg = self.config
        with seeded(self.member_seed(member)):
            return TGCLSTMNet(
                hops,
                num_nodes,
                n_features=cfg.inputs.n_features,
                time_features=[cfg.inputs.names.index(n) for n in cfg.inputs.time_names],
                horizon=cfg.horizon,
                hidden=cfg.hidden,
                embed=cfg.embed,
                gates=gates or cfg.gates_for(num_nodes),
                dense_max_nodes=max(cfg.dense_max_nodes, num_nodes if gates else 0),
                skip=cfg.skip,
                window=cfg.window,
                dropout=cfg.dropout,
            )

    def fit(self, panel: SensorPanel, *, valid: SensorPanel | None = None) -> Self:
        """Train on ``panel``; with ``valid``, early-stop on it and calibrate intervals."""
        check_2d(panel, self.name)
        hops, info = self.hop_lists(panel)
        cfg = self.config
        self.sensor_ids = panel.sensor_ids
        self.scaler = Scaler.fit(panel)
        lambdas = (cfg.lambda_gc, cfg.lambda_nb)

        def penalty(module: nn.Module) -> Tensor:
            return module.penalty(*lambdas)  # type: ignore[operator]

        members, self.histories = [], []
        for member in range(cfg.ensemble):
            net = self.build_net(hops, panel.n_nodes, member=member)
            self.histories.append(
                fit_network(
                    net,
                    panel,
                    valid,
                    window=cfg.window,
                    horizon=cfg.horizon,
                    scaler=self.scaler,
                    spec=cfg.inputs,
                    config=replace(cfg.train, seed=self.member_seed(member)),
                    extra_loss=penalty if any(lambdas) else None,
                )
            )
            members.append(net)
        self.net = TGCLSTMEnsemble(members)
        self.history = self.histories[0]
        self.graph_info = info
        self.coords = None if panel.coords is None else np.array(panel.coords)
        self.finish_network_fit(panel, valid, cfg.train.device)
        return self

    # ------------------------------------------------------------------ prediction
    def network(self) -> TGCLSTMEnsemble | None:
        return self.net

    def input_spec(self) -> InputSpec:
        return self.config.inputs

    def influence(self) -> dict[str, np.ndarray]:
        """The learned graph-convolution weights, one per (hop, source, target) edge.

        Returns
        -------
        dict of ``[E]`` arrays: int64 ``hop`` (1..K), ``source`` (j), ``target`` (i) and
        float32 ``weight`` = ``W_gc^hop[i, j]``, how strongly sensor j feeds sensor i (the
        members' mean with an ensemble).
        """
        if self.net is None:
            raise RuntimeError(f"{self.name}: call fit() or load() before influence()")
        conv = self.net.member(0).conv
        with torch.no_grad():
            return {
                "hop": conv.hop_of_edge().cpu().numpy(),
                "source": conv.col.cpu().numpy().copy(),
                "target": conv.targets().cpu().numpy(),
                "weight": self.net.graph_weights().cpu().numpy().copy(),
            }

    # ------------------------------------------------------------------ bundles
    def describe(self) -> dict[str, Any]:
        return self.config.hyper()

    def save(self, directory: str | Path) -> None:
        """Write the bundle: weights (with the hop edge lists) and ``config.json``."""
        self.save_network(
            directory,
            self.config.train,
            graph=self.graph_info,
            coords=None if self.coords is None else self.coords.tolist(),
            history=None if self.history is None else self.history.to_dict(),
            histories=[h.to_dict() for h in self.histories],
        )

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        """Rebuild from a bundle (no road graph needed: the edge lists are in the weights);
        the network goes to ``auto`` (CUDA when present, else CPU)."""
        bundle = read_model_bundle(directory, cls.name)
        config = bundle.config
        try:
            train = replace(TrainConfig.from_dict(config["train"]), device="auto")
            model = cls(TGCLSTMConfig(**config["hyper"], train=train))
            restore_forecaster(model, config)
            model.scaler = Scaler.from_dict(config["scaler"])
            hops = TGCLSTMNet.hops_from_state(bundle.tensors, prefix="members.0.")
            graph = dict(config.get("graph") or {})
            coords = config.get("coords")
            gates = graph["gates"]
        except (KeyError, TypeError) as exc:
            raise ValueError(
                f"bundle {directory} lacks or mangles {exc}; it was written by another "
                "version of tgclstm: retrain it"
            ) from None
        # The form the bundle was trained with, whatever "auto" would pick in this version.
        n = len(model.sensor_ids)
        net = TGCLSTMEnsemble(
            [model.build_net(hops, n, gates=gates, member=m) for m in range(model.config.ensemble)]
        )
        load_module_tensors(net, bundle.tensors)
        model.net = model.place_loaded(net)
        model.graph_info = graph
        model.coords = None if coords is None else np.asarray(coords, dtype=np.float64)
        return model
