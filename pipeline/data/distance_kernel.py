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
matrix) passes these rules, and a distance matrix with 0 for "no road" (mostly 0s) or in
km with a median pair under 1 km does not: the user says which with
``--adjacency PATH,kind=weights`` or ``kind=distances`` (:data:`KINDS`), and the note of
a matrix read as distances says how.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

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


def is_dense(matrix: np.ndarray) -> bool:
    """True when at least :data:`DISTANCE_SHARE` of the square ``matrix``'s off-diagonal
    entries are > 0 (a distance matrix is dense, a road adjacency mostly 0s)."""
    n = len(matrix)
    return n > 1 and bool(np.mean(matrix[~np.eye(n, dtype=bool)] > 0) >= DISTANCE_SHARE)


def looks_like_distances(matrix: np.ndarray) -> bool:
    """True when the square ``matrix`` is one of distances by the module's rules."""
    n = len(matrix)
    if n < MIN_SENSORS or np.any(np.diagonal(matrix) != 0) or not is_dense(matrix):
        return False
    return bool(np.median(matrix[~np.eye(n, dtype=bool)]) > 1)


# What ``--adjacency PATH,kind=...`` says a matrix holds; ``auto`` decides by the rules above.
AdjacencyKind = Literal["auto", "weights", "distances"]
KINDS: tuple[AdjacencyKind, ...] = ("auto", "weights", "distances")


class DistanceKernel(NamedTuple):
    """The links of a matrix of distances: ``src[e] -> dst[e]`` with kernel weight
    ``weight[e]`` and length ``distance_km[e]``; ``note`` says what was assumed."""

    src: np.ndarray
    dst: np.ndarray
    weight: np.ndarray
    distance_km: np.ndarray
    note: str


def distance_kernel(
    matrix: np.ndarray, source: str, *, forced: bool = False
) -> DistanceKernel | None:
    """The graph of ``matrix`` (``[N, N]``, ``A[i, j]`` = i -> j, finite, >= 0) when it is
    a matrix of distances (``forced``: the user said so), else None; ``source`` names it in
    the note.

    A dense matrix's links are DCRNN's kernel: a 0 off the diagonal is two sensors at one
    place (``w = 1``) and ``sigma`` the std of all its entries (DCRNN's full ``dist_mx``).
    A matrix that is not dense (only when ``forced``) lists roads, 0 for none: each is a
    link of weight 1 and its length, as an edge list ``src,dst,cost`` is read
    (:func:`road_links`; the kernel over the lengths of adjacent segments alone would drop
    nearly every one).
    """
    a = np.asarray(matrix, dtype=np.float64)
    if not forced and not looks_like_distances(a):
        return None
    n = len(a)
    off = ~np.eye(n, dtype=bool)
    if not is_dense(a):
        src, dst = np.nonzero(off & (a > 0))
        return road_links(src, dst, a[src, dst], n, source, f"the {n} x {n} matrix")
    src, dst = np.nonzero(off)
    d = a[src, dst]
    sigma = float(a.std())  # > 0: a zero diagonal and most other entries above 0
    w = np.exp(-np.square(d / sigma))
    keep = w >= KERNEL_CUT
    nearest = np.where(a > 0, a, np.inf).min(axis=1)
    km_per_unit, median = unit_by_median(nearest[np.isfinite(nearest)])
    metres = km_per_unit < 1

    def length(x: float) -> str:
        return f"{x:,.0f} m" if metres else f"{x:,.4g} km"

    if forced:
        what = f"the {n} x {n} matrix (kind=distances)"
    else:
        same = int(np.count_nonzero(a[off] == 0))
        others = "every other entry" if same == 0 else f"all but {same} other entries"
        what = f"a {n} x {n} matrix with a zero diagonal and {others} above 0"
    cut = length(sigma * np.sqrt(np.log(1 / KERNEL_CUT)))
    note = (
        f"note: {source}: {what} is read as road distances in "
        f"{'metres' if metres else 'kilometres'} (median distance to the nearest sensor "
        f"{length(median)}), not link weights: links are DCRNN's kernel exp(-(d / sigma)^2) "
        f"with sigma = {length(sigma)} (std of the entries), those under {KERNEL_CUT:g} "
        f"(d > {cut}) dropped: {int(keep.sum())} of the {n * (n - 1)} pairs are linked."
    )
    if not forced:
        note += (
            " If these are not distances, add ,kind=weights to the --adjacency path (or give "
            "an edge list src,dst,weight)"
        )
    return DistanceKernel(src[keep], dst[keep], w[keep], d[keep] * km_per_unit, note)


def road_links(
    src: np.ndarray, dst: np.ndarray, distance: np.ndarray, n: int, source: str, what: str
) -> DistanceKernel:
    """Roads ``src[e] -> dst[e]`` of length ``distance[e]`` (> 0; unit by the median road,
    :func:`unit_by_median`) as links of weight 1, with the note."""
    d = np.asarray(distance, dtype=np.float64)
    if not len(d):
        raise GraphError(f"{what} has no entry above 0 off its diagonal: no road to link")
    km_per_unit, median = unit_by_median(d)
    unit = "metres" if km_per_unit < 1 else "kilometres"
    note = (
        f"note: {source}: {what} is read as road lengths in {unit} (kind=distances; median "
        f"{median:,.4g}): each entry above 0 off the diagonal is a road of weight 1, 0 is no "
        f"road, as an edge list src,dst,cost is read: {len(d)} links of the {n * (n - 1)} "
        "pairs"
    )
    return DistanceKernel(src, dst, np.ones_like(d), d * km_per_unit, note)


def matrix_graph(
    matrix: np.ndarray,
    source: str,
    *,
    coords: np.ndarray | None = None,
    kind: AdjacencyKind = "auto",
) -> RoadGraph:
    """The graph of an adjacency ``matrix`` (``A[i, j]`` = link i -> j, as DCRNN's
    ``adj_mx``): its entries as weights, or the :func:`distance_kernel` graph with its
    note in ``RoadGraph.notes`` when they are distances (``kind``: what the user says they
    are, ``auto`` by the module's rules). Raises GraphError when the kernel keeps no link."""
    a = np.asarray(matrix, dtype=np.float64)
    usable = bool(np.isfinite(a).all() and (a >= 0).all())
    if kind == "distances" and not usable:
        raise GraphError("kind=distances: every entry must be a finite distance >= 0")
    kernel = None
    if kind != "weights" and usable:
        kernel = distance_kernel(a, source, forced=kind == "distances")
    if kernel is None:
        graph = RoadGraph.from_adjacency(a.T, coords=coords)  # from_adjacency: A[i, j] = j -> i
        loops = int(np.count_nonzero(np.diagonal(a)))
        if 0 < loops < len(a):  # a whole diagonal is the usual A + I, not worth a note
            graph.notes = (
                *graph.notes,
                f"note: {source}: {loops} non-zero entr{'ies' if loops > 1 else 'y'} on the "
                "diagonal (a sensor linked to itself) left out: each sensor's own readings "
                "are always an input",
            )
        return graph
    return kernel_graph(kernel, len(a), coords=coords)


def kernel_graph(kernel: DistanceKernel, n: int, *, coords: np.ndarray | None = None) -> RoadGraph:
    """The road graph of ``kernel``'s links over ``n`` sensors, its note in ``notes``."""
    if not len(kernel.src):
        raise GraphError(
            f"read as road distances, every pair of the {n} sensors is farther apart than "
            "DCRNN's kernel keeps (exp(-(d / sigma)^2) >= 0.1, sigma = the std of the "
            "entries), so no link is left; give weights (0 for no link) or an edge list "
            "src,dst,weight"
        )
    graph = RoadGraph.from_edges(
        kernel.src,
        kernel.dst,
        num_nodes=n,
        weight=kernel.weight,
        distance_km=kernel.distance_km,
        coords=coords,
    )
    graph.notes = (kernel.note,)
    return graph
