"""Sparse graph layers with an O(edges) forward and backward (used by TGC-LSTM).

A graph pattern is stored as CSR (row pointers and columns, rows = target sensors) and
its weights per edge, so memory grows with the number of edges, not with N².
:class:`SparseHopConv` applies K hop patterns as one stacked CSR matrix ``[K*N, N]``
with a single sparse product; :class:`NeighbourScale` is one more sparse product. Both
run on the whole graph or on one :class:`~models.nn.subgraphs.Part` (its core and halo:
the pattern restricted to the part's sensors with torch-geometric's ``subgraph``, the
weights of those edges gathered from the global ones).

Which kernel multiplies (:func:`sparse_product`; measured side by side in
``benchmarks/graph_training.py``, decisions.md "Graph convolution kernel"):
torch-geometric's ``spmm`` (a ``torch.sparse`` CSR product) wherever no gradient flows
(inference); :class:`_CSRMatmul` in training, because it was faster at every size
measured: torch's backward through ``spmm`` writes a dense ``[rows, cols]`` gradient
before masking it (1.6x slower at 2,000 sensors, 4.8 GB at 20,000), while
``_CSRMatmul``'s is a sampled product (SDDMM) on the pattern; and for the gradient of the
dense side torch transposes the CSR matrix on every backward, which on CUDA makes the host
wait for the GPU once per batch, while ``_CSRMatmul`` multiplies by a transposed pattern
prepared once. PyG's own trainable-weight paths (``MessagePassing``,
``EdgeIndex.matmul``) gather and scatter per edge without the torch-sparse extension,
5 to 20 times slower on CPU.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from models.nn.subgraphs import Part


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


@dataclass(frozen=True, eq=False)
class Pattern:
    """A CSR pattern ``[rows, cols]`` and its transpose (for :class:`_CSRMatmul`'s
    backward); ``edges`` are the positions of its entries in the layer's weight vector
    (None: all of them, in order)."""

    crow: Tensor
    col: Tensor
    crow_t: Tensor
    col_t: Tensor
    perm: Tensor
    shape: tuple[int, int]
    edges: Tensor | None = None

    def values(self, weight: Tensor) -> Tensor:
        """This pattern's entries of a per-edge ``weight`` vector (differentiably)."""
        return weight if self.edges is None else weight.index_select(0, self.edges)


def sparse_product(pattern: Pattern, values: Tensor, x: Tensor) -> Tensor:
    """``S @ x`` for the CSR ``pattern`` with entries ``values`` (which may require grad),
    in float32, through the faster kernel for the case (module docstring).

    Sparse products are not autocast-safe (cuSPARSE has no half kernels for every op), so
    autocast is switched off here and the inputs are cast to float32 explicitly.
    """
    rows, cols = pattern.shape
    with torch.autocast(device_type=x.device.type, enabled=False):
        values, x = values.float(), x.float()
        if not ((values.requires_grad or x.requires_grad) and torch.is_grad_enabled()):
            from torch_geometric.utils import spmm

            return spmm(_csr(pattern.crow, pattern.col, values, pattern.shape), x)
        return _CSRMatmul.apply(
            values, x, pattern.crow, pattern.col, pattern.crow_t, pattern.col_t, pattern.perm,
            rows, cols,
        )  # fmt: skip


def _whole(module: SparseHopConv | NeighbourScale, shape: tuple[int, int]) -> Pattern:
    """The full-graph pattern held as buffers by ``module``."""
    return Pattern(module.crow, module.col, module.crow_t, module.col_t, module.perm, shape)


def restrict(crow: Tensor, col: Tensor, num_nodes: int, part: Part) -> Pattern:
    """A stacked pattern ``[B*N, N]`` (B blocks of N target rows) restricted to the
    sensors of ``part`` (torch-geometric's ``subgraph``): ``[B*n_sub, n_sub]`` with the
    edges whose source and target both lie in the part, in the same order."""
    from torch_geometric.utils import subgraph

    device = crow.device
    crow, col = crow.cpu(), col.cpu()
    rows = torch.repeat_interleave(torch.arange(len(crow) - 1), crow.diff())  # [E]
    blocks, n_sub = (len(crow) - 1) // num_nodes, part.n_sub
    local, _, mask = subgraph(
        part.nodes.cpu(),
        torch.stack([col, rows % num_nodes]),
        relabel_nodes=True,
        num_nodes=num_nodes,
        return_edge_mask=True,
    )
    edges = torch.nonzero(mask).flatten()  # [E_sub], ascending: the CSR order is kept
    local_rows = (rows[edges] // num_nodes) * n_sub + local[1]
    crow_sub = torch.zeros(blocks * n_sub + 1, dtype=torch.long)
    crow_sub[1:] = torch.bincount(local_rows, minlength=blocks * n_sub).cumsum(0)
    moved = {"crow": crow_sub, "col": local[0], "edges": edges}
    moved |= _transpose_pattern(crow_sub.numpy(), local[0].numpy(), n_sub)
    on = {k: v.to(device) for k, v in moved.items()}
    return Pattern(
        on["crow"], on["col"], on["crow_t"], on["col_t"], on["perm"], (blocks * n_sub, n_sub),
        on["edges"],
    )  # fmt: skip


class _PartPatterns:
    """A layer's patterns per :class:`Part` and device, built on first use."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, str], tuple[Part, Pattern]] = {}

    def get(self, module: SparseHopConv | NeighbourScale, part: Part, num_nodes: int) -> Pattern:
        key = (id(part), str(module.crow.device))
        if key not in self._cache:
            pattern = restrict(module.crow, module.col, num_nodes, part)
            self._cache[key] = (part, pattern)
        return self._cache[key][1]


def prepare_parts(module: nn.Module, parts: Sequence[Part]) -> None:
    """Build every graph layer's pattern of every part of ``parts`` now, on the layers'
    device (a training loop then only looks them up: no host copies per step)."""
    for layer in module.modules():
        if isinstance(layer, SparseHopConv | NeighbourScale):
            for part in parts:
                layer._parts.get(layer, part, layer.num_nodes)


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
        self._parts = _PartPatterns()
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

    def forward(self, x: Tensor, part: Part | None = None) -> Tensor:
        """Convolve ``x`` ``[..., node, feature]`` over every hop: ``[..., node, K * feature]``,
        hop-major (all features of hop 1, then of hop 2, ...). With ``part``, ``x`` holds the
        part's sensors (``part.nodes``) and only the edges among them are used: exact for
        the part's core, whose sources are all in its halo."""
        n = self.num_nodes if part is None else part.n_sub
        if x.shape[-2] != n:
            raise ValueError(f"input has {x.shape[-2]} nodes on axis -2, the graph has {n}")
        lead, f, k = x.shape[:-2], x.shape[-1], self.num_hops
        flat = x.reshape(-1, n, f).permute(1, 0, 2).reshape(n, -1)  # [node, rest * feature]
        pattern = (
            _whole(self, (k * n, n))
            if part is None
            else self._parts.get(self, part, self.num_nodes)
        )
        out = sparse_product(pattern, pattern.values(self.weight), flat)  # [K*node, rest*f]
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
        self._parts = _PartPatterns()
        mean_degree = max(len(col) / num_nodes, 1.0)
        self.weight = nn.Parameter(torch.full((num_nodes,), 1.0 / mean_degree))  # [N], w_N

    def forward(self, part: Part | None = None) -> Tensor:
        """The per-sensor scale, float32 ``[node]`` (``[n_sub]`` for the sensors of ``part``,
        exact on its core)."""
        w: Tensor
        if part is None:
            pattern, w = _whole(self, (self.num_nodes,) * 2), self.weight
        else:
            pattern = self._parts.get(self, part, self.num_nodes)
            w = self.weight.index_select(0, part.nodes)
        ones = torch.ones(len(pattern.col), device=w.device)  # [E_K]: Ã^K ⊙ FFR is 0/1
        return sparse_product(pattern, ones, w.unsqueeze(1)).squeeze(1)

    def penalty(self) -> Tensor:
        """λ2's term: the squared L2 norm of ``w_N`` (a scalar)."""
        return self.weight.pow(2).sum()
