"""RoadGraph: the sensor network as a sparse directed graph.

Edge convention (torch-geometric, as ``models.panel.GraphLike``): ``edge_index[0]`` is
the source sensor j, ``edge_index[1]`` the target sensor i, so a message passes j -> i
and ``(A x)_i = sum_j A[i, j] x_j``. An adjacency matrix is therefore read as
``A[i, j] != 0`` <=> link j -> i; for a symmetric matrix (``los-loop``) the direction
does not matter.

Everything is sparse: k-hop neighbourhoods are sparse boolean matrix products and the
free-flow reachability (FFR) of TGC-LSTM comes from a Dijkstra that is cut off at the
reachable distance and run over chunks of source sensors, so no N x N dense array is
ever allocated (a 20,000-sensor network needs megabytes, not gigabytes).

Road distances: a link's length is its ``distance_km`` when given, else the haversine
(great-circle) distance between the sensors' coordinates. When the graph has neither,
every link counts as ``default_link_km`` (1 km unless set) and FFR degenerates to a hop
rule: a pair is reachable when ``hops * default_link_km <= minutes / 60 * free_flow_kmh``;
``has_distances`` says which case applies so reports can say so.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike
from scipy.sparse.csgraph import dijkstra

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


class RoadGraph:
    """A directed road graph over ``num_nodes`` sensors (implements ``GraphLike``).

    Parameters
    ----------
    num_nodes : number of sensors; node ``k`` is column ``k`` of the panel.
    edge_index : int ``[2, E]`` links (source j, target i). Self loops are dropped:
        they are implicit in :meth:`hops`. Duplicate links are an error.
    edge_weight : optional ``[E]`` non-negative weights (1.0 when omitted).
    distance_km : optional ``[E]`` road length of each link in km.
    coords : optional ``[node, 2]`` (latitude, longitude) in degrees; gives link lengths
        by haversine when ``distance_km`` is omitted.
    default_link_km : link length assumed when there are neither distances nor coords.

    Use :meth:`from_adjacency`, :meth:`from_edges` or :meth:`from_coordinates` rather
    than this constructor when the input is a matrix or separate arrays.
    """

    def __init__(
        self,
        num_nodes: int,
        edge_index: ArrayLike,
        edge_weight: ArrayLike | None = None,
        *,
        distance_km: ArrayLike | None = None,
        coords: ArrayLike | None = None,
        default_link_km: float = DEFAULT_LINK_KM,
    ) -> None:
        n = int(num_nodes)
        if n < 0:
            raise GraphError(f"num_nodes must be >= 0, got {num_nodes}")
        if not (np.isfinite(default_link_km) and default_link_km > 0):
            raise GraphError(f"default_link_km must be > 0, got {default_link_km}")
        index = np.asarray(edge_index)
        if index.size == 0:
            index = np.zeros((2, 0), dtype=np.int64)  # [2, E]
        if index.ndim != 2 or index.shape[0] != 2:
            raise GraphError(f"edge_index must be [2, E], got shape {index.shape}")
        fractional = not np.issubdtype(index.dtype, np.integer) and (
            not np.all(np.isfinite(index)) or np.any(index != np.round(index))
        )
        if fractional:
            raise GraphError("edge_index must hold integer node numbers")
        index = index.astype(np.int64)
        n_edges = index.shape[1]
        if n_edges and (index.min() < 0 or index.max() >= n):
            bad = int(np.flatnonzero((index < 0).any(0) | (index >= n).any(0))[0])
            raise GraphError(
                f"link {bad} ({index[0, bad]} -> {index[1, bad]}) names a node outside "
                f"0..{n - 1}; check num_nodes or the node numbering"
            )
        weight = _edge_array(edge_weight, n_edges, "edge_weight", default=1.0)
        dist = None if distance_km is None else _edge_array(distance_km, n_edges, "distance_km")
        xy = None if coords is None else _coords(coords, n)

        keep = index[0] != index[1]  # self loops are implicit in hops()
        index, weight = index[:, keep], weight[keep]
        dist = None if dist is None else dist[keep]
        order = np.lexsort((index[0], index[1]))  # by (target, source)
        index, weight = index[:, order], weight[order]
        dist = None if dist is None else dist[order]
        dup = (np.diff(index[1]) == 0) & (np.diff(index[0]) == 0)
        if dup.any():
            k = int(np.flatnonzero(dup)[0])
            raise GraphError(
                f"duplicate link {index[0, k]} -> {index[1, k]}; merge duplicates first "
                "(e.g. keep the largest weight)"
            )
        if dist is None and xy is not None:
            dist = haversine_km(xy[index[0], 0], xy[index[0], 1], xy[index[1], 0], xy[index[1], 1])

        self._n = n
        self._has_distances = dist is not None
        self._default_link_km = float(default_link_km)
        self._edge_index = _frozen(index)
        self._edge_weight = _frozen(weight.astype(np.float32))
        self._distance_km = None if dist is None else _frozen(dist.astype(np.float64))
        self._coords = None if xy is None else _frozen(xy)
        self._hops_cache: dict[tuple[int, float | None], np.ndarray] = {}

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_adjacency(
        cls,
        matrix: ArrayLike | sp.spmatrix | sp.sparray,
        *,
        coords: ArrayLike | None = None,
        distance_km: ArrayLike | sp.spmatrix | sp.sparray | None = None,
        default_link_km: float = DEFAULT_LINK_KM,
    ) -> RoadGraph:
        """Links from a weighted adjacency ``matrix`` (dense or scipy.sparse), ``[N, N]``.

        ``matrix[i, j] != 0`` is a link j -> i with that weight; the diagonal (self
        loops, e.g. the 1s of ``los_adj.csv``) is dropped. ``distance_km``, when given,
        is a matrix of the same shape whose entries on the links are their lengths.
        """
        a = _square(matrix, "adjacency")
        if not np.all(np.isfinite(a.data)):
            raise GraphError(
                "adjacency has NaN or infinite entries; replace them with 0 or a weight"
            )
        a.eliminate_zeros()
        target, source = a.row, a.col
        dist = None
        if distance_km is not None:
            d = _square(distance_km, "distance_km").tocsr()
            if d.shape != a.shape:
                raise GraphError(f"distance_km has shape {d.shape}, adjacency {a.shape}")
            dist = np.asarray(d[target, source]).ravel()
        return cls(
            a.shape[0],
            np.stack([source, target]),
            a.data,
            distance_km=dist,
            coords=coords,
            default_link_km=default_link_km,
        )

    @classmethod
    def from_edges(
        cls,
        src: ArrayLike,
        dst: ArrayLike,
        *,
        num_nodes: int,
        weight: ArrayLike | None = None,
        distance_km: ArrayLike | None = None,
        coords: ArrayLike | None = None,
        default_link_km: float = DEFAULT_LINK_KM,
    ) -> RoadGraph:
        """Links ``src[e] -> dst[e]`` (node numbers), with optional weights and lengths."""
        s, d = np.asarray(src).ravel(), np.asarray(dst).ravel()
        if s.shape != d.shape:
            raise GraphError(f"src has {s.size} entries, dst {d.size}")
        return cls(
            num_nodes,
            np.stack([s, d]) if s.size else np.zeros((2, 0), dtype=np.int64),
            weight,
            distance_km=distance_km,
            coords=coords,
            default_link_km=default_link_km,
        )

    @classmethod
    def from_coordinates(
        cls,
        coords: ArrayLike,
        src: ArrayLike,
        dst: ArrayLike,
        *,
        weight: ArrayLike | None = None,
        distance_km: ArrayLike | None = None,
        both_directions: bool = False,
    ) -> RoadGraph:
        """Sensors at ``coords`` ``[node, 2]`` (lat, lon) joined by links ``src -> dst``.

        Link lengths are haversine distances unless ``distance_km`` is given. With
        ``both_directions`` every link is added in reverse too (same weight and length),
        which is how a two-way influence (queues spill upstream, flow moves downstream)
        is usually modelled.
        """
        xy = _coords(coords, len(np.asarray(coords)))
        s, d = np.asarray(src, dtype=np.int64).ravel(), np.asarray(dst, dtype=np.int64).ravel()
        w = None if weight is None else np.asarray(weight, dtype=np.float64).ravel()
        km = None if distance_km is None else np.asarray(distance_km, dtype=np.float64).ravel()
        if both_directions:
            s, d = np.concatenate([s, d]), np.concatenate([d, s])
            w = None if w is None else np.concatenate([w, w])
            km = None if km is None else np.concatenate([km, km])
        return cls.from_edges(s, d, num_nodes=len(xy), weight=w, distance_km=km, coords=xy)

    # ------------------------------------------------------------------ accessors
    @property
    def num_nodes(self) -> int:
        return self._n

    @property
    def num_edges(self) -> int:
        return int(self._edge_index.shape[1])

    @property
    def edge_index(self) -> np.ndarray:
        """int64 ``[2, E]`` links (source, target), sorted by (target, source), read-only."""
        return self._edge_index

    @property
    def edge_weight(self) -> np.ndarray:
        """float32 ``[E]`` link weights, read-only."""
        return self._edge_weight

    @property
    def distance_km(self) -> np.ndarray | None:
        """float64 ``[E]`` link lengths (given or haversine), or None."""
        return self._distance_km

    @property
    def coords(self) -> np.ndarray | None:
        """float64 ``[node, 2]`` (latitude, longitude), or None."""
        return self._coords

    @property
    def has_distances(self) -> bool:
        """True when FFR uses real link lengths, False when it falls back to hop counts."""
        return self._has_distances

    @property
    def is_symmetric(self) -> bool:
        """True when every link j -> i has a reverse link i -> j."""
        fwd = self._edge_index[0] * self._n + self._edge_index[1]
        rev = self._edge_index[1] * self._n + self._edge_index[0]
        return bool(np.array_equal(np.sort(fwd), np.sort(rev)))

    def __repr__(self) -> str:
        lengths = "distances" if self._has_distances else "no distances"
        return f"RoadGraph(num_nodes={self._n}, num_edges={self.num_edges}, {lengths})"

    def adjacency(self, *, weighted: bool = True) -> sp.csr_array:
        """Sparse ``[N, N]`` matrix with ``A[i, j]`` = weight of link j -> i (no self loops)."""
        data = self._edge_weight if weighted else np.ones(self.num_edges, dtype=np.float32)
        return sp.csr_array(
            (data, (self._edge_index[1], self._edge_index[0])), shape=(self._n, self._n)
        )

    def link_km(self) -> np.ndarray:
        """float64 ``[E]`` the length every link counts with in FFR (see module doc)."""
        if self._distance_km is not None:
            return self._distance_km
        return np.full(self.num_edges, self._default_link_km)  # [E]

    # ------------------------------------------------------------------ neighbourhoods
    def hops(
        self, k: int, *, minutes: float | None = None, free_flow_kmh: float | None = None
    ) -> np.ndarray:
        """int64 ``[2, E_k]`` pairs (j, i) with i within ``k`` hops of j, self loops included.

        This is the support of ``clamp(Ã^k, max=1)`` with ``Ã = A + I``, sorted by
        (target, source). With ``minutes`` only pairs whose shortest road distance
        j -> i is at most ``minutes / 60 * free_flow_kmh`` km are kept (the FFR of
        TGC-LSTM; ``free_flow_kmh`` defaults to :data:`DEFAULT_FREE_FLOW_KMH`).

        Parameters
        ----------
        k : number of hops, >= 0 (0 gives the self loops only).
        minutes : optional free-flow travel-time budget.
        free_flow_kmh : free-flow speed in km/h; requires ``minutes``.

        Returns
        -------
        numpy.ndarray
            int64 ``[2, E_k]``, row 0 the source j, row 1 the target i (read-only).
        """
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
            raise GraphError(f"k must be an integer >= 0, got {k!r}")
        max_km = self._budget_km(minutes, free_flow_kmh)
        key = (int(k), max_km)
        if key not in self._hops_cache:
            support = self._support(int(k))
            if max_km is not None:
                support = support.multiply(self._reachable(max_km)).tocsr()
            self._hops_cache[key] = _frozen(_pairs(support))
        return self._hops_cache[key]

    def free_flow_reachability(
        self, minutes: float, free_flow_kmh: float | None = None
    ) -> np.ndarray:
        """int64 ``[2, E]`` pairs (j, i) with a road path j -> i of at most
        ``minutes / 60 * free_flow_kmh`` km (self loops included), sorted by (target, source)."""
        max_km = self._budget_km(minutes, free_flow_kmh)
        assert max_km is not None
        return _pairs(self._reachable(max_km))

    def road_distances(self, max_km: float) -> tuple[np.ndarray, np.ndarray]:
        """Shortest road distance of every pair (j, i) that is within ``max_km``.

        Returns
        -------
        pairs : int64 ``[2, P]`` (source j, target i), sorted by (target, source).
        km : float64 ``[P]`` the shortest distance j -> i along the links.
        """
        if not (np.isfinite(max_km) and max_km >= 0):
            raise GraphError(f"max_km must be a finite distance >= 0, got {max_km}")
        dist = self._distances_within(float(max_km))
        return _pairs(dist), dist.data.copy()

    # ------------------------------------------------------------------ internals
    def _budget_km(self, minutes: float | None, free_flow_kmh: float | None) -> float | None:
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

    def _support(self, k: int) -> sp.csr_array:
        """Boolean pattern of (A + I)^k, rows = target i, cols = source j."""
        step = self.adjacency(weighted=False) + sp.eye_array(
            self._n, dtype=np.float32, format="csr"
        )
        step.data[:] = 1.0
        result = sp.eye_array(self._n, dtype=np.float32, format="csr")
        for _ in range(k):
            result = result @ step
            result.data[:] = 1.0  # clamp: only the pattern matters, and it keeps values small
        result = sp.csr_array(result)
        result.sort_indices()
        return result

    def _reachable(self, max_km: float) -> sp.csr_array:
        """Pattern of pairs within ``max_km``, rows = target i, cols = source j."""
        reach = self._distances_within(max_km)
        reach.data[:] = 1.0
        return reach

    def _distances_within(self, max_km: float) -> sp.csr_array:
        """Shortest distances <= ``max_km`` as a sparse matrix D[i, j] (j -> i)."""
        n = self._n
        # csgraph reads graph[u, v] as an edge u -> v, i.e. [source, target].
        lengths = np.maximum(self.link_km(), _MIN_LINK_KM)
        graph = sp.csr_array((lengths, (self._edge_index[0], self._edge_index[1])), shape=(n, n))
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


def _pairs(matrix: sp.csr_array) -> np.ndarray:
    """Stored entries of a [target, source] CSR matrix as int64 [2, E] (source, target)."""
    csr = sp.csr_array(matrix)
    csr.sort_indices()
    target = np.repeat(np.arange(csr.shape[0], dtype=np.int64), np.diff(csr.indptr))
    return np.stack([csr.indices.astype(np.int64), target])  # [2, E]


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    array.setflags(write=False)
    return array


def _edge_array(
    values: ArrayLike | None, n_edges: int, name: str, *, default: float | None = None
) -> np.ndarray:
    if values is None:
        return np.full(n_edges, default, dtype=np.float64)  # [E]
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.shape != (n_edges,):
        raise GraphError(f"{name} has {arr.size} entries for {n_edges} links")
    bad = ~np.isfinite(arr) | (arr < 0)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise GraphError(f"{name}[{k}] = {arr[k]}: must be finite and >= 0")
    return arr


def _coords(coords: ArrayLike, n: int) -> np.ndarray:
    xy = np.asarray(coords, dtype=np.float64)
    if xy.shape != (n, 2):
        raise GraphError(
            f"coords must be [node, 2] (latitude, longitude) = [{n}, 2], got {xy.shape}"
        )
    bad = ~np.isfinite(xy).all(1) | (np.abs(xy[:, 0]) > 90) | (np.abs(xy[:, 1]) > 180)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise GraphError(
            f"coords of node {k} = {tuple(xy[k])} are not (latitude, longitude) in degrees"
        )
    return xy


def _square(matrix: ArrayLike | sp.spmatrix | sp.sparray, name: str) -> sp.coo_array:
    if sp.issparse(matrix):
        coo = sp.coo_array(matrix, dtype=np.float64)
    else:
        dense = np.asarray(matrix, dtype=np.float64)
        if dense.ndim != 2:
            raise GraphError(f"{name} must be a 2-D [N, N] matrix, got shape {dense.shape}")
        coo = sp.coo_array(dense)
    if coo.shape[0] != coo.shape[1]:
        raise GraphError(f"{name} must be square [N, N], got {coo.shape}")
    coo.sum_duplicates()
    return coo
