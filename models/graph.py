"""The road graph as the models see it: a torch-geometric ``Data``, and its neighbourhoods.

A graph travels between the data plane and the models as a ``torch_geometric.data.Data``
(every graph's ``to_pyg()``): ``edge_index`` int64 ``[2, E]`` (row 0 the source sensor j, row 1
the target i: a message passes j -> i), ``edge_weight`` float32 ``[E]``, ``num_nodes``,
and optionally ``edge_km`` float64 ``[E]`` (the road length of each link) and ``pos``
float64 ``[node, 2]`` (latitude, longitude). ``pipeline.data.graph.RoadGraph`` builds and
validates one from files (``RoadGraph.to_pyg``); :class:`PyGGraph` reads any such ``Data``
(a PyG data set, a PyTorch Geometric Temporal signal) as a :class:`models.panel.GraphLike`.

What TGC-LSTM asks of a graph is computed here, sparsely: the k-hop supports
``clamp((A + I)^k, 1)`` are scipy sparse boolean products, and the free-flow reachability
(FFR, pairs whose shortest road distance fits a travel-time budget) is scipy's Dijkstra cut
off at the budget and run over chunks of sources, so no N x N dense array is allocated.
A link's length is ``edge_km`` when given, else the haversine distance of its sensors'
``pos``, else ``default_link_km`` (FFR then counts hops).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike
from scipy.sparse.csgraph import dijkstra

if TYPE_CHECKING:
    from torch_geometric.data import Data

DEFAULT_FREE_FLOW_KMH = 100.0
"""Free-flow speed used when ``hops(..., minutes=m)`` gets no speed (about 62 mph)."""

DEFAULT_LINK_KM = 1.0
"""Assumed length of every link of a graph without distances or coordinates (the median
haversine link of ``los-loop`` is about 1.7 km; 1 km keeps the hop rule simple)."""

EARTH_RADIUS_KM = 6371.0088

# Dijkstra returns a dense [n_sources, N] block per call: bounding the block to this
# many cells (32 MB of float64) and sources is what keeps FFR sparse on large networks.
_DIJKSTRA_BLOCK_CELLS = 4_000_000
_DIJKSTRA_BLOCK_SOURCES = 256
# scipy's csgraph drops explicit zeros (no edge); co-located sensors still need a link.
_MIN_LINK_KM = 1e-9
# Distances are compared with this slack (1 mm) so that sums of link lengths that equal
# the budget on paper, or zero-length links, are not lost to float rounding.
_SLACK_KM = 1e-6


class GraphError(ValueError):
    """Invalid graph input; the message says what to fix."""


def haversine_km(lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike) -> np.ndarray:
    """Great-circle distance in km between points given in degrees (broadcasting).

    Examples
    --------
    >>> round(float(haversine_km(34.0, -118.0, 34.0, -118.01)), 3)
    0.922
    """
    p1, l1, p2, l2 = (np.radians(np.asarray(a, dtype=np.float64)) for a in (lat1, lon1, lat2, lon2))
    h = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin((l2 - l1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def budget_km(minutes: float | None, free_flow_kmh: float | None) -> float | None:
    """The FFR distance budget ``minutes / 60 * free_flow_kmh`` (None without ``minutes``)."""
    if minutes is None:
        if free_flow_kmh is not None:
            raise GraphError("free_flow_kmh needs minutes: pass hops(k, minutes=..., ...)")
        return None
    speed = DEFAULT_FREE_FLOW_KMH if free_flow_kmh is None else float(free_flow_kmh)
    if not (np.isfinite(minutes) and minutes >= 0):
        raise GraphError(f"minutes must be a finite number >= 0, got {minutes}")
    if not (np.isfinite(speed) and speed > 0):
        raise GraphError(f"free_flow_kmh must be a positive speed, got {free_flow_kmh}")
    return float(minutes) / 60.0 * speed


def check_hops(k: Any) -> int:
    """``k`` as a hop count, or a :class:`GraphError`."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
        raise GraphError(f"k must be an integer >= 0, got {k!r}")
    return int(k)


def hop_pairs(
    edge_index: np.ndarray, num_nodes: int, k: int, link_km: np.ndarray, max_km: float | None
) -> np.ndarray:
    """int64 ``[2, E_k]`` pairs (j, i) with i within ``k`` hops of j, self loops included
    (the support of ``clamp((A + I)^k, 1)``), restricted to road distance ``<= max_km``
    when given; sorted by (target, source)."""
    support = _support(edge_index, num_nodes, k)
    if max_km is not None:
        reach = distances_within(edge_index, num_nodes, link_km, max_km)
        reach.data[:] = 1.0
        support = support.multiply(reach).tocsr()
    return pairs_of(support)


def distances_within(
    edge_index: np.ndarray, num_nodes: int, link_km: np.ndarray, max_km: float
) -> sp.csr_array:
    """Shortest road distances ``<= max_km`` as a sparse matrix ``D[i, j]`` (j -> i)."""
    n = num_nodes
    # csgraph reads graph[u, v] as an edge u -> v, i.e. [source, target].
    lengths = np.maximum(link_km, _MIN_LINK_KM)
    graph = sp.csr_array((lengths, (edge_index[0], edge_index[1])), shape=(n, n))
    block = max(1, min(_DIJKSTRA_BLOCK_SOURCES, _DIJKSTRA_BLOCK_CELLS // max(n, 1)))
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    for start in range(0, n, block):
        sources = np.arange(start, min(n, start + block))
        limit = max_km + _SLACK_KM
        dist = dijkstra(graph, directed=True, indices=sources, limit=limit)  # [chunk, N]
        r, c = np.nonzero(dist <= limit)
        rows.append(sources[r])
        cols.append(c)
        vals.append(dist[r, c])
        del dist
    src = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    dst = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    km = np.concatenate(vals) if vals else np.zeros(0)
    # A zero distance (self pair) must survive as a stored entry, hence explicit coo build.
    out = sp.coo_array((km, (dst, src)), shape=(n, n)).tocsr()
    out.sort_indices()
    return out


def pairs_of(matrix: sp.csr_array) -> np.ndarray:
    """Stored entries of a [target, source] CSR matrix as int64 [2, E] (source, target)."""
    csr = sp.csr_array(matrix)
    csr.sort_indices()
    target = np.repeat(np.arange(csr.shape[0], dtype=np.int64), np.diff(csr.indptr))
    return np.stack([csr.indices.astype(np.int64), target])  # [2, E]


def _support(edge_index: np.ndarray, n: int, k: int) -> sp.csr_array:
    """Boolean pattern of (A + I)^k, rows = target i, cols = source j."""
    ones = np.ones(edge_index.shape[1], dtype=np.float32)
    step = sp.csr_array((ones, (edge_index[1], edge_index[0])), shape=(n, n))
    step = step + sp.eye_array(n, dtype=np.float32, format="csr")
    step.data[:] = 1.0
    result = sp.eye_array(n, dtype=np.float32, format="csr")
    for _ in range(k):
        result = result @ step
        result.data[:] = 1.0  # clamp: only the pattern matters, and it keeps values small
    result = sp.csr_array(result)
    result.sort_indices()
    return result


class PyGGraph:
    """A ``torch_geometric.data.Data`` read as a :class:`models.panel.GraphLike`.

    The links are ``data.edge_index`` (self loops dropped: they are implicit in
    :meth:`hops`), weighted by ``data.edge_weight`` (1.0 when absent); their lengths are
    ``data.edge_km``, else the haversine distance of ``data.pos``, else
    ``default_link_km``.
    """

    def __init__(self, data: Data, *, default_link_km: float = DEFAULT_LINK_KM) -> None:
        if data.edge_index is None or data.num_nodes is None:
            raise GraphError("a graph needs edge_index and num_nodes")
        index = data.edge_index.detach().cpu().numpy().astype(np.int64)
        n = int(data.num_nodes)
        if index.ndim != 2 or index.shape[0] != 2:
            raise GraphError(f"edge_index must be [2, E], got shape {index.shape}")
        if index.size and (index.min() < 0 or index.max() >= n):
            raise GraphError(f"edge_index names a node outside 0..{n - 1}")
        weight = _edge_values(data, "edge_weight", index.shape[1])
        km = _edge_values(data, "edge_km", index.shape[1])
        pos = getattr(data, "pos", None)
        if km is None and pos is not None:
            xy = pos.detach().cpu().double().numpy()
            km = haversine_km(xy[index[0], 0], xy[index[0], 1], xy[index[1], 0], xy[index[1], 1])
        keep = index[0] != index[1]
        order = np.lexsort((index[0][keep], index[1][keep]))  # by (target, source)
        self._n = n
        self._edge_index = index[:, keep][:, order]
        ones = np.ones(self._edge_index.shape[1], dtype=np.float32)
        self._edge_weight = ones if weight is None else weight[keep][order].astype(np.float32)
        self._link_km = (
            np.full(self._edge_index.shape[1], float(default_link_km))
            if km is None
            else km[keep][order].astype(np.float64)
        )
        self.has_distances = km is not None
        self._data = data
        self._hops: dict[tuple[int, float | None], np.ndarray] = {}

    @property
    def num_nodes(self) -> int:
        return self._n

    @property
    def edge_index(self) -> np.ndarray:
        """int64 ``[2, E]`` links without self loops, sorted by (target, source)."""
        return self._edge_index

    @property
    def edge_weight(self) -> np.ndarray:
        return self._edge_weight

    def hops(
        self, k: int, *, minutes: float | None = None, free_flow_kmh: float | None = None
    ) -> np.ndarray:
        """As :meth:`models.panel.GraphLike.hops` (cached)."""
        key = (check_hops(k), budget_km(minutes, free_flow_kmh))
        if key not in self._hops:
            self._hops[key] = hop_pairs(self._edge_index, self._n, key[0], self._link_km, key[1])
        return self._hops[key]

    def to_pyg(self) -> Data:
        """The ``Data`` this graph reads."""
        return self._data


def _edge_values(data: Data, name: str, n_edges: int) -> np.ndarray | None:
    values = getattr(data, name, None)
    if values is None:
        return None
    arr = values.detach().cpu().double().numpy().ravel()
    if arr.shape != (n_edges,):
        raise GraphError(f"{name} has {arr.size} entries for {n_edges} links")
    if not np.all(np.isfinite(arr)) or (arr < 0).any():
        raise GraphError(f"{name} must be finite and >= 0")
    return arr


def as_graph(graph: Any) -> Any:
    """``graph`` as a :class:`models.panel.GraphLike`: a ``Data`` is wrapped in
    :class:`PyGGraph`, anything else is returned as it is."""
    if type(graph).__module__.startswith("torch_geometric."):
        return PyGGraph(graph)
    return graph
