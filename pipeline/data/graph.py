"""RoadGraph: the sensor network as a sparse directed graph, built and validated from files.

Edge convention (torch-geometric, as ``models.panel.GraphLike``): ``edge_index[0]`` is
the source sensor j, ``edge_index[1]`` the target sensor i, so a message passes j -> i
and ``(A x)_i = sum_j A[i, j] x_j``. An adjacency matrix is therefore read as
``A[i, j] != 0`` <=> link j -> i; for a symmetric matrix (``los-loop``) the direction
does not matter.

The models read it through ``models.panel.GraphLike`` (the links in PyG's
``edge_index`` / ``edge_weight`` form); :meth:`RoadGraph.to_pyg` exports it as a
``torch_geometric.data.Data`` and :meth:`RoadGraph.from_pyg` reads one back. k-hop
neighbourhoods and the free-flow reachability (FFR) of TGC-LSTM are computed sparsely by
:mod:`models.graph` (scipy sparse products and a Dijkstra cut off at the reachable
distance), so no N x N dense array is ever allocated (a 20,000-sensor network needs
megabytes, not gigabytes).

Road distances: a link's length is its ``distance_km`` when given, else the haversine
(great-circle) distance between the sensors' coordinates. When the graph has neither,
every link counts as ``default_link_km`` (1 km unless set) and FFR degenerates to a hop
rule: a pair is reachable when ``hops * default_link_km <= minutes / 60 * free_flow_kmh``;
``has_distances`` says which case applies so reports can say so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike

from models.graph import (
    DEFAULT_FREE_FLOW_KMH,
    DEFAULT_LINK_KM,
    GraphError,
    Links,
    budget_km,
    check_coords,
    check_hops,
    distances_within,
    haversine_km,
    hop_pairs,
    pairs_of,
    pyg_links,
    validate_links,
)

if TYPE_CHECKING:
    from torch_geometric.data import Data

__all__ = [
    "DEFAULT_FREE_FLOW_KMH",
    "DEFAULT_LINK_KM",
    "GraphError",
    "RoadGraph",
    "haversine_km",
]


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

    ``notes``: what the file it was read from left to an assumption (shown by ``roadcast
    train``), empty otherwise.

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
        self._hold(
            validate_links(
                num_nodes,
                edge_index,
                edge_weight,
                distance_km=distance_km,
                coords=coords,
                default_link_km=default_link_km,
            )
        )

    def _hold(self, links: Links) -> None:
        """Keep validated ``links``, read-only."""
        self._n = links.num_nodes
        self._has_distances = links.distance_km is not None
        self._default_link_km = links.default_link_km
        self._edge_index = _frozen(links.edge_index)
        self._edge_weight = _frozen(links.edge_weight)
        self._distance_km = None if links.distance_km is None else _frozen(links.distance_km)
        self._coords = None if links.coords is None else _frozen(links.coords)
        self._hops_cache: dict[tuple[int, float | None], np.ndarray] = {}
        self.notes: tuple[str, ...] = ()

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
        xy = check_coords(coords, len(np.asarray(coords)))
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
        key = (check_hops(k), budget_km(minutes, free_flow_kmh))
        if key not in self._hops_cache:
            pairs = hop_pairs(self._edge_index, self._n, key[0], self.link_km(), key[1])
            self._hops_cache[key] = _frozen(pairs)
        return self._hops_cache[key]

    def free_flow_reachability(
        self, minutes: float, free_flow_kmh: float | None = None
    ) -> np.ndarray:
        """int64 ``[2, E]`` pairs (j, i) with a road path j -> i of at most
        ``minutes / 60 * free_flow_kmh`` km (self loops included), sorted by (target, source)."""
        max_km = budget_km(minutes, free_flow_kmh)
        assert max_km is not None
        return pairs_of(distances_within(self._edge_index, self._n, self.link_km(), max_km))

    def road_distances(self, max_km: float) -> tuple[np.ndarray, np.ndarray]:
        """Shortest road distance of every pair (j, i) that is within ``max_km``.

        Returns
        -------
        pairs : int64 ``[2, P]`` (source j, target i), sorted by (target, source).
        km : float64 ``[P]`` the shortest distance j -> i along the links.
        """
        if not (np.isfinite(max_km) and max_km >= 0):
            raise GraphError(f"max_km must be a finite distance >= 0, got {max_km}")
        dist = distances_within(self._edge_index, self._n, self.link_km(), float(max_km))
        return pairs_of(dist), dist.data.copy()

    # ------------------------------------------------------------------ torch-geometric
    def to_pyg(self) -> Data:
        """The graph as a ``torch_geometric.data.Data``: ``edge_index`` int64 ``[2, E]``
        (source, target), ``edge_weight`` float32 ``[E]``, ``num_nodes``, and, when known,
        ``edge_km`` float64 ``[E]`` (link lengths) and ``pos`` float64 ``[node, 2]``
        (latitude, longitude). :meth:`from_pyg` is its inverse."""
        import torch
        from torch_geometric.data import Data

        data = Data(
            edge_index=torch.from_numpy(self._edge_index.copy()),
            edge_weight=torch.from_numpy(self._edge_weight.copy()),
            num_nodes=self._n,
        )
        if self._has_distances and self._distance_km is not None:
            data.edge_km = torch.from_numpy(self._distance_km.copy())
        if self._coords is not None:
            data.pos = torch.from_numpy(self._coords.copy())
        return data

    @classmethod
    def from_pyg(cls, data: Data, *, default_link_km: float = DEFAULT_LINK_KM) -> RoadGraph:
        """A graph from a ``torch_geometric.data.Data`` with ``edge_index`` and
        ``num_nodes`` (optional ``edge_weight``, else a 1-D ``edge_attr``, ``edge_km``,
        ``pos``), validated like any other input: self loops dropped, duplicate links
        refused."""
        graph = cls.__new__(cls)
        graph._hold(pyg_links(data, default_link_km=default_link_km))
        return graph


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    array.setflags(write=False)
    return array


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
