"""Sparse graph layers with an O(edges) forward and backward (used by TGC-LSTM).

A graph pattern is stored as CSR (row pointers and columns, rows = target sensors) and
its weights per edge, so memory grows with the number of edges, not with N².
:class:`SparseHopConv` applies K hop patterns as one stacked CSR matrix ``[K*N, N]``
with a single ``torch.sparse.mm``; :class:`NeighbourScale` is one more sparse product.
Both multiply through :class:`_CSRMatmul`, whose backward never builds an N x N tensor.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn


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
