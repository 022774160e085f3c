"""The road graph as the models see it (PyG's `edge_index` form), and its neighbourhoods.

The models read a graph as a :class:`models.panel.GraphLike` in PyG's form, and any graph
exports as a ``torch_geometric.data.Data`` (``to_pyg()``): ``edge_index`` int64 ``[2, E]``
(row 0 the source sensor j, row 1 the target i: a message passes j -> i), ``edge_weight``
float32 ``[E]``, ``num_nodes``, and optionally ``edge_km`` float64 ``[E]`` (the road length
of each link) and ``pos`` float64 ``[node, 2]`` (latitude, longitude).
``pipeline.data.graph.RoadGraph`` builds one from files; :class:`PyGGraph` reads any such
``Data`` (a PyG data set, a PyTorch Geometric Temporal signal) as a GraphLike. Both check
their input through :func:`validate_links`.

What TGC-LSTM asks of a graph is computed here, sparsely: the k-hop supports
``clamp((A + I)^k, 1)`` are scipy sparse boolean products, and the free-flow reachability
(FFR, pairs whose shortest road distance fits a travel-time budget) is scipy's Dijkstra cut
off at the budget and run over chunks of sources, so no N x N dense array is allocated.
A link's length is ``edge_km`` when given, else the haversine distance of its sensors'
``pos``, else ``default_link_km`` (FFR then counts hops).
"""

from __future__ import annotations

from dataclasses import dataclass
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

_FLOAT32_MAX = float(np.finfo(np.float32).max)  # link weights are kept as float32

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


@dataclass(frozen=True, eq=False)
class Links:
    """Validated links: ``edge_index`` int64 ``[2, E]`` without self loops, sorted by
    (target, source), ``edge_weight`` float32 ``[E]``, ``distance_km`` float64 ``[E]``
    (given, else haversine of ``coords``, else None), ``coords`` float64 ``[node, 2]``."""

    num_nodes: int
    edge_index: np.ndarray
    edge_weight: np.ndarray
    distance_km: np.ndarray | None
    coords: np.ndarray | None
    default_link_km: float

    def link_km(self) -> np.ndarray:
        """float64 ``[E]`` the length every link counts with in FFR."""
        if self.distance_km is not None:
            return self.distance_km
        return np.full(self.edge_index.shape[1], self.default_link_km)  # [E]


def validate_links(
    num_nodes: int,
    edge_index: ArrayLike,
    edge_weight: ArrayLike | None = None,
    *,
    distance_km: ArrayLike | None = None,
    coords: ArrayLike | None = None,
    default_link_km: float = DEFAULT_LINK_KM,
    names: tuple[str, str, str] = ("edge_weight", "distance_km", "coords"),
) -> Links:
    """The one check of a graph's input (``RoadGraph`` and :class:`PyGGraph`): integer
    links between existing nodes, no duplicates, finite non-negative float32 weights and
    lengths, (latitude, longitude) coordinates; self loops are dropped. ``names`` are
    what the errors call the weights, lengths and coordinates."""
    try:
        n = int(num_nodes)
    except (TypeError, ValueError):
        n = -1
    if n < 0 or n != num_nodes:
        raise GraphError(f"num_nodes must be an integer >= 0, got {num_nodes!r}")
    if not (np.isfinite(default_link_km) and default_link_km > 0):
        raise GraphError(f"default_link_km must be > 0, got {default_link_km}")
    index = np.asarray(edge_index)
    if index.size == 0:
        index = np.zeros((2, 0), dtype=np.int64)  # [2, E]
    if index.ndim != 2 or index.shape[0] != 2:
        raise GraphError(f"edge_index must be [2, E], got shape {index.shape}")
    numeric = np.issubdtype(index.dtype, np.integer) or np.issubdtype(index.dtype, np.floating)
    if not numeric or not np.all(np.isfinite(index)) or np.any(index != np.round(index)):
        raise GraphError("edge_index must hold integer node numbers")
    n_edges = index.shape[1]
    if n_edges and (index.min() < 0 or index.max() >= n):
        bad = int(np.flatnonzero((index < 0).any(0) | (index >= n).any(0))[0])
        raise GraphError(
            f"link {bad} ({int(index[0, bad])} -> {int(index[1, bad])}) names a node outside "
            f"0..{n - 1}; check num_nodes or the node numbering"
        )
    index = index.astype(np.int64)
    weight = _edge_array(edge_weight, n_edges, names[0], default=1.0)
    dist = None if distance_km is None else _edge_array(distance_km, n_edges, names[1])
    xy = None if coords is None else check_coords(coords, n, names[2])

    keep = index[0] != index[1]  # self loops are implicit in hops()
    order = np.lexsort((index[0][keep], index[1][keep]))  # by (target, source)
    index, weight = index[:, keep][:, order], weight[keep][order]
    dist = None if dist is None else dist[keep][order]
    dup = (np.diff(index[1]) == 0) & (np.diff(index[0]) == 0)
    if dup.any():
        k = int(np.flatnonzero(dup)[0])
        raise GraphError(
            f"duplicate link {index[0, k]} -> {index[1, k]}; merge duplicates first "
            "(e.g. keep the largest weight)"
        )
    if dist is None and xy is not None:
        dist = haversine_km(xy[index[0], 0], xy[index[0], 1], xy[index[1], 0], xy[index[1], 1])
    return Links(
        n,
        index,
        weight.astype(np.float32),
        None if dist is None else dist.astype(np.float64),
        xy,
        float(default_link_km),
    )


def pyg_links(data: Data, *, default_link_km: float = DEFAULT_LINK_KM) -> Links:
    """The links of a ``Data`` (``edge_index``, ``num_nodes``; optional ``edge_weight``,
    else a 1-D ``edge_attr`` as PyTorch Geometric Temporal writes it, ``edge_km``,
    ``pos``), through :func:`validate_links`. Tensors, arrays and lists are all read."""
    index = _field(data, "edge_index")
    if index is None or getattr(data, "num_nodes", None) is None:
        raise GraphError("a torch-geometric graph needs edge_index and num_nodes")
    weight, weight_name = _field(data, "edge_weight"), "edge_weight"
    attr = _field(data, "edge_attr")
    if weight is None and attr is not None and attr.ndim == 1:
        weight, weight_name = attr, "edge_attr"
    return validate_links(
        data.num_nodes,
        index,
        weight,
        distance_km=_field(data, "edge_km"),
        coords=_field(data, "pos"),
        default_link_km=default_link_km,
        names=(weight_name, "edge_km", "pos"),
    )


def check_coords(coords: ArrayLike, n: int, name: str = "coords") -> np.ndarray:
    """``coords`` as float64 ``[n, 2]`` (latitude, longitude) in degrees, or a GraphError."""
    xy = np.asarray(coords, dtype=np.float64)
    if xy.shape != (n, 2):
        raise GraphError(
            f"{name} must be [node, 2] (latitude, longitude) = [{n}, 2], got {xy.shape}"
        )
    bad = ~np.isfinite(xy).all(1) | (np.abs(xy[:, 0]) > 90) | (np.abs(xy[:, 1]) > 180)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise GraphError(
            f"{name} of node {k} = ({xy[k, 0]}, {xy[k, 1]}) are not (latitude, longitude) "
            "in degrees"
        )
    return xy


def _edge_array(
    values: ArrayLike | None, n_edges: int, name: str, *, default: float | None = None
) -> np.ndarray:
    if values is None:
        return np.full(n_edges, default, dtype=np.float64)  # [E]
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.shape != (n_edges,):
        raise GraphError(f"{name} has {arr.size} entries for {n_edges} links")
    bad = ~np.isfinite(arr) | (arr < 0) | (arr > _FLOAT32_MAX)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise GraphError(
            f"{name}[{k}] = {arr[k]}: must be finite, >= 0 and within float32 (3.4e38)"
        )
    return arr


def _field(data: Data, name: str) -> np.ndarray | None:
    value = getattr(data, name, None)
    if value is None:
        return None
    if hasattr(value, "detach"):  # a tensor; bfloat16 and half have no numpy twin
        value = value.detach().cpu()
        value = (value.double() if value.is_floating_point() else value).numpy()
    return np.asarray(value)


class PyGGraph:
    """A ``torch_geometric.data.Data`` read as a :class:`models.panel.GraphLike`.

    The links are ``data.edge_index`` (self loops dropped: they are implicit in
    :meth:`hops`), weighted by ``data.edge_weight`` (else a 1-D ``data.edge_attr``, else
    1.0); their lengths are ``data.edge_km``, else the haversine distance of
    ``data.pos``, else ``default_link_km``. Checked as ``RoadGraph`` checks its input
    (:func:`pyg_links`).
    """

    def __init__(self, data: Data, *, default_link_km: float = DEFAULT_LINK_KM) -> None:
        self._links = pyg_links(data, default_link_km=default_link_km)
        self._link_km = self._links.link_km()
        self.has_distances = self._links.distance_km is not None
        self._data = data
        self._hops: dict[tuple[int, float | None], np.ndarray] = {}

    @property
    def num_nodes(self) -> int:
        return self._links.num_nodes

    @property
    def edge_index(self) -> np.ndarray:
        """int64 ``[2, E]`` links without self loops, sorted by (target, source)."""
        return self._links.edge_index

    @property
    def edge_weight(self) -> np.ndarray:
        return self._links.edge_weight

    def hops(
        self, k: int, *, minutes: float | None = None, free_flow_kmh: float | None = None
    ) -> np.ndarray:
        """As :meth:`models.panel.GraphLike.hops` (cached)."""
        key = (check_hops(k), budget_km(minutes, free_flow_kmh))
        if key not in self._hops:
            self._hops[key] = hop_pairs(
                self.edge_index, self.num_nodes, key[0], self._link_km, key[1]
            )
        return self._hops[key]

    def to_pyg(self) -> Data:
        """The ``Data`` this graph reads."""
        return self._data


def as_graph(graph: Any) -> Any:
    """``graph`` as a :class:`models.panel.GraphLike`: a ``Data`` is wrapped in
    :class:`PyGGraph`, anything else is returned as it is."""
    if type(graph).__module__.startswith("torch_geometric."):
        return PyGGraph(graph)
    return graph
