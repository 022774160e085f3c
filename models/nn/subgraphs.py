"""Training past memory: a graph cut into parts, each with the halo its forecasts read.

A network whose weights are per sensor, per edge or shared by all sensors (TGC-LSTM's
graph path) forecasts a sensor from the sensors in its receptive field only: the sources
of its K-hop, FFR-masked neighbourhood. Cut the sensors into parts (the *core*), add to
each part the sources its core reads (the *halo*), and the network run on that subgraph
forecasts the core exactly as on the whole graph; a training step on one part therefore
needs memory for that part only, and an epoch over all parts costs what one pass over the
graph costs, plus the halos.

Parts come from METIS (``pymetis``, the METIS library's Python binding; a small edge cut
means small halos) on the receptive field made undirected with torch-geometric's
``to_undirected``; where METIS is not installed a warning says so and the sensors are cut
into runs of scipy's reverse Cuthill-McKee order (a breadth-first order, so each run is a
connected-ish region; it cuts more edges). Halos are torch-geometric's ``k_hop_subgraph``
of the core over the receptive field.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import reverse_cuthill_mckee
from torch import Tensor


@dataclass(frozen=True, eq=False)
class Part:
    """One part of a graph: its core sensors and the halo they read.

    ``nodes`` int64 ``[n_sub]`` global sensor numbers of core and halo, ascending;
    ``core`` int64 ``[n_core]`` positions of the core sensors in ``nodes``; ``core_ids``
    their global numbers. ``index`` numbers the part within its :class:`Partition`.
    """

    index: int
    nodes: Tensor
    core: Tensor
    core_ids: Tensor

    @property
    def n_sub(self) -> int:
        return int(self.nodes.numel())

    def to(self, device: torch.device) -> Part:
        """The same part with its index tensors on ``device``."""
        return Part(
            self.index, self.nodes.to(device), self.core.to(device), self.core_ids.to(device)
        )


@dataclass(frozen=True)
class Partition:
    """Parts covering every sensor once as core; ``method`` says how they were cut."""

    parts: tuple[Part, ...]
    num_nodes: int
    method: str

    def to(self, device: torch.device) -> Partition:
        return Partition(tuple(p.to(device) for p in self.parts), self.num_nodes, self.method)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary: parts, method, core and subgraph sizes, halo share."""
        sub = sum(p.n_sub for p in self.parts)
        return {
            "parts": len(self.parts),
            "method": self.method,
            "largest_subgraph": max(p.n_sub for p in self.parts),
            "halo_share": round((sub - self.num_nodes) / max(self.num_nodes, 1), 4),
        }


def receptive_field(hops: Sequence[np.ndarray], num_nodes: int) -> Tensor:
    """The union of the hop patterns (pairs j -> i, ``[2, E_k]`` each) as one PyG
    ``edge_index`` ``[2, E]``: i's forecast reads j."""
    from torch_geometric.utils import coalesce

    pairs = torch.from_numpy(np.concatenate([np.asarray(h, dtype=np.int64) for h in hops], 1))
    return coalesce(pairs, num_nodes=num_nodes)


def cut(edge_index: Tensor, num_nodes: int, n_parts: int, *, seed: int = 0) -> tuple[Tensor, str]:
    """The part of every sensor (int64 ``[N]``, parts numbered from 0 to k - 1, none
    empty, k at most ``n_parts`` and ``num_nodes``) and the method.

    METIS (pymetis) on the undirected graph of ``edge_index``; reverse Cuthill-McKee runs,
    with a warning, when pymetis is not installed.
    """
    from torch_geometric.utils import remove_self_loops, to_scipy_sparse_matrix, to_undirected

    n_parts = min(n_parts, num_nodes)  # METIS asked for more parts than nodes fails
    if n_parts <= 1 or num_nodes <= 1:
        return torch.zeros(num_nodes, dtype=torch.long), "one part"
    undirected = to_undirected(remove_self_loops(edge_index)[0], num_nodes=num_nodes)
    matrix = sp.csr_array(to_scipy_sparse_matrix(undirected, num_nodes=num_nodes))
    starts, adjacent = matrix.indptr, matrix.indices
    try:
        import pymetis
    except ImportError:
        warnings.warn(
            "METIS is unavailable (the pymetis package is not installed: pip install "
            "pymetis); cutting the graph into runs of reverse Cuthill-McKee order instead, "
            "which cuts more edges (larger halos, slower epochs)",
            stacklevel=2,
        )
        order = reverse_cuthill_mckee(matrix, symmetric_mode=True)
        membership = np.empty(num_nodes, dtype=np.int64)
        for part, run in enumerate(np.array_split(order, n_parts)):
            membership[run] = part
        return torch.from_numpy(membership), "reverse Cuthill-McKee (METIS unavailable)"
    result = pymetis.part_graph(
        n_parts,
        pymetis.CSRAdjacency(adj_starts=starts, adjacent=adjacent),
        options=pymetis.Options(seed=seed),
    )
    # METIS may leave a part empty: number the parts it filled 0..k-1.
    _, labels = np.unique(np.asarray(result.vertex_part), return_inverse=True)
    return torch.from_numpy(labels.astype(np.int64)), "METIS"


def partition(
    hops: Sequence[np.ndarray], num_nodes: int, part_nodes: int, *, seed: int = 0
) -> Partition:
    """Cut a network with hop patterns ``hops`` into parts of about ``part_nodes`` core
    sensors, each with the halo its core reads (exact for a receptive field of ``hops``)."""
    from torch_geometric.utils import k_hop_subgraph

    if part_nodes < 1:
        raise ValueError(f"part_nodes must be >= 1, got {part_nodes}")
    field = receptive_field(hops, num_nodes)
    membership, method = cut(field, num_nodes, math.ceil(num_nodes / part_nodes), seed=seed)
    parts: list[Part] = []
    for label in torch.unique(membership).tolist():
        core_ids = torch.nonzero(membership == label).flatten()  # ascending
        # flow source_to_target: the sources j of edges j -> i into the core.
        nodes, _, core, _ = k_hop_subgraph(
            core_ids, 1, field, relabel_nodes=True, num_nodes=num_nodes
        )
        parts.append(Part(len(parts), nodes, core, core_ids))
    return Partition(tuple(parts), num_nodes, method)
