"""Road lengths written without a unit, and a matrix of distances given as an adjacency.

A dense ``N x N`` matrix of road distances (STGCN's PeMSD7 ``W_228.csv``: no header,
diagonal 0, every other entry a distance in metres) read as link weights links every
pair and makes the farthest sensors the strongest links. :func:`distance_kernel`
recognises one and turns it into links with DCRNN's Gaussian kernel (Li et al., ICLR
2018, ``scripts/gen_adj_mx.py``): ``sigma`` is the std of the finite entries of its
``dist_mx`` (for a full matrix all ``N x N`` of them, the diagonal's 0s included),
``w = exp(-(d / sigma)^2)``, and an entry with ``w < 0.1`` is no link. Links are directed
as written (``A[i, j]`` = i -> j) and keep their lengths (``distance_km``), which the
free-flow reachability mask of TGC-LSTM uses.

A matrix is read as distances when (each rule keeps a weight matrix out):

* its diagonal is all 0 (a sensor is 0 m from itself; similarity and correlation
  matrices and DCRNN's kernel ``adj_mx`` have 1s there, count and flow matrices their
  own totals);
* at least :data:`DISTANCE_SHARE` of its off-diagonal entries are > 0 (a distance
  matrix is dense; a road adjacency, 0/1 or weighted, is mostly 0s: METR-LA's
  ``adj_mx`` has 1,722 links out of 42,642 pairs). The 10 % slack allows sensors at the
  same place (both directions of a freeway at one post mile), whose distance is 0: as in
  ``gen_adj_mx`` and STGCN's ``weight_matrix`` they get ``w = 1``;
* its median off-diagonal entry is > 1 (weights are mostly at most 1: 0/1 links, kernel
  weights, correlations);
* it has at least :data:`MIN_SENSORS` sensors (two sensors are one distance apart both
  ways, and ``d / sigma`` is then 2: the kernel would always drop the link).

A dense matrix of weights above 1 with an empty diagonal (an origin-destination count
matrix) passes these rules; the note says what to give instead. A distance matrix with
0 for "no road" (mostly 0s) or in km with a median pair under 1 km does not, and is read
as weights, as before.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from pipeline.data.graph import GraphError, RoadGraph

# A length without a unit whose median link is at least this is read as metres
# (DCRNN's ``cost``, as in METR-LA, PEMS-BAY and PeMSD4/8), below it as kilometres.
METRES_FROM = 20.0
# Share of a matrix's off-diagonal entries that must be > 0 for it to be distances.
DISTANCE_SHARE = 0.9
# Fewest sensors read as distances: two have one distance, which the kernel always drops.
MIN_SENSORS = 3
# DCRNN's gen_adj_mx ``normalized_k``: kernel weights below it are no link.
KERNEL_CUT = 0.1


def unit_by_median(lengths: np.ndarray) -> tuple[float, float]:
    """Kilometres per unit of road ``lengths`` written without a unit, and the median of
    those > 0: metres when that median is at least :data:`METRES_FROM`, else km (a 20 km
    median link between neighbouring sensors is implausible, a 20 m one too)."""
    values = np.asarray(lengths, dtype=np.float64).ravel()
    positive = values[np.isfinite(values) & (values > 0)]
    median = float(np.median(positive)) if len(positive) else 0.0
    return (1e-3 if median >= METRES_FROM else 1.0), median


def looks_like_distances(matrix: np.ndarray) -> bool:
    """True when the square ``matrix`` is one of distances by the module's rules."""
    n = len(matrix)
    if n < MIN_SENSORS or np.any(np.diagonal(matrix) != 0):
        return False
    off = matrix[~np.eye(n, dtype=bool)]
    return bool(np.mean(off > 0) >= DISTANCE_SHARE and np.median(off) > 1)


class DistanceKernel(NamedTuple):
    """The links of a distance matrix: ``weights[i, j]`` is link i -> j (0: no link),
    ``distance_km[i, j]`` its length, ``note`` what was assumed."""

    weights: np.ndarray
    distance_km: np.ndarray
    note: str


def distance_kernel(matrix: np.ndarray, source: str) -> DistanceKernel | None:
    """The kernel graph of ``matrix`` (``[N, N]``, ``A[i, j]`` = i -> j, finite, >= 0)
    when it is a matrix of distances, else None; ``source`` names it in the note.

    The unit is the edge-list rule (:func:`unit_by_median`) applied to the links between
    neighbours: each sensor's distance to its nearest other sensor.
    """
    a = np.asarray(matrix, dtype=np.float64)
    if not looks_like_distances(a):
        return None
    n = len(a)
    off = ~np.eye(n, dtype=bool)
    sigma = float(a.std())
    weights = np.exp(-np.square(a / sigma))
    weights[(weights < KERNEL_CUT) | ~off] = 0.0
    nearest = np.where(a > 0, a, np.inf).min(axis=1)
    km_per_unit, median = unit_by_median(nearest)
    metres = km_per_unit < 1
    unit = "metres" if metres else "kilometres"

    def length(x: float) -> str:
        return f"{x:,.0f} m" if metres else f"{x:,.4g} km"

    kept = int(np.count_nonzero(weights))
    cut = sigma * np.sqrt(np.log(1 / KERNEL_CUT))
    same = int(np.count_nonzero(a[off] == 0))
    others = "every other entry" if same == 0 else f"all but {same} other entries"
    note = (
        f"note: {source}: a {n} x {n} matrix with a zero diagonal and {others} above 0 is "
        f"read as road distances in {unit} (median distance to the nearest sensor "
        f"{length(median)}), not link weights: links are DCRNN's kernel exp(-(d / sigma)^2) "
        f"with sigma = {length(sigma)} (std of the entries), those under {KERNEL_CUT:g} "
        f"(d > {length(cut)}) dropped: {kept} of the {n * (n - 1)} pairs are linked. If "
        "these are not distances, give weights (0 for no link, at most 1) or an edge list "
        "src,dst,weight"
    )
    return DistanceKernel(weights, a * km_per_unit, note)


def matrix_graph(matrix: np.ndarray, source: str, *, coords: np.ndarray | None = None) -> RoadGraph:
    """The graph of an adjacency ``matrix`` (``A[i, j]`` = link i -> j, as DCRNN's
    ``adj_mx``): its entries as weights, or the :func:`distance_kernel` graph with its
    note in ``RoadGraph.notes`` when they are distances. Raises GraphError when the
    kernel keeps no link."""
    a = np.asarray(matrix, dtype=np.float64)
    kernel = distance_kernel(a, source) if np.isfinite(a).all() and (a >= 0).all() else None
    if kernel is None:
        return RoadGraph.from_adjacency(a.T, coords=coords)  # from_adjacency: A[i, j] = j -> i
    src, dst = np.nonzero(kernel.weights)
    if not len(src):
        raise GraphError(
            f"read as road distances, every pair of the {len(a)} sensors is farther apart than "
            "DCRNN's kernel keeps (exp(-(d / sigma)^2) >= 0.1, sigma = the std of the "
            "entries), so no link is left; give weights (0 for no link) or an edge list "
            "src,dst,weight"
        )
    graph = RoadGraph.from_edges(
        src,
        dst,
        num_nodes=len(a),
        weight=kernel.weights[src, dst],
        distance_km=kernel.distance_km[src, dst],
        coords=coords,
    )
    graph.notes = (kernel.note,)
    return graph
