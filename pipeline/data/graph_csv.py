"""Files that describe the road graph beside a data file: an adjacency CSV (a matrix or an
edge list) and sensor coordinates, read line by line as :mod:`pipeline.data.readers`
reads a data file (preamble, comments, ragged rows), with errors that name the line and
column to fix. Everything here raises :class:`~pipeline.data.cells.DatasetError`.

Rules (each one tested):

* **Adjacency** (:func:`read_adjacency_csv`): a first line that lists the sensor ids is
  always a header, and then one row per sensor must follow; a matrix for a long-format
  file (sensors in order of first appearance) must have it. An id that is a data
  sensor's in another Unicode form or written as another number (``7.0`` for ``7``) is
  refused as such, naming its line. A weight beyond float32
  (``1e308``) is rejected naming its line and column; one that is 0 in float32
  (``1e-300``) is no link, as 0 is.
* **Distance matrix** (:mod:`pipeline.data.distance_kernel`): a matrix of 3 or more
  sensors with a zero diagonal, at least 90 % of its other entries above 0 and a median
  above 1 (STGCN's PeMSD7 ``W_228.csv``) holds road distances, not weights: its links are
  DCRNN's ``gen_adj_mx`` kernel ``exp(-(d / sigma)^2)`` (sigma the std of the entries),
  those under 0.1 dropped, with their lengths (metres when the median distance to the
  nearest sensor is >= 20, else km) and a note saying so. 0/1 and [0, 1] weights,
  matrices with 1s on the diagonal and dense counts are read as weights.
* **Coordinates** (:func:`read_coordinates`): an empty file, a latitude or longitude
  that is not a number of degrees, or a sensor listed twice with other coordinates is
  rejected, naming the coordinates file and line (not the adjacency's).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data.cells import MISSING_TOKENS, DatasetError, filled
from pipeline.data.distance_kernel import AdjacencyKind, matrix_graph, unit_by_median
from pipeline.data.graph import GraphError, RoadGraph
from pipeline.data.readers import (
    INDEX_NAMES,
    comment_lines,
    cut_empty_tail,
    id_spelling,
    nfc,
    numbered_rows,
    numeric_cells,
    parser_detail,
    scan,
    spelling_index,
    string_cells,
)

SRC_NAMES = frozenset({"src", "source", "from", "start", "upstream"})


def read_adjacency_csv(
    path: Path,
    sensor_ids: Sequence[str],
    *,
    coords: np.ndarray | None = None,
    unordered: str | None = None,
    kind: AdjacencyKind = "auto",
) -> RoadGraph:
    """A road graph over ``sensor_ids`` from a square matrix CSV or an edge list CSV.

    Matrix: ``N x N`` numbers (``A[i, j]`` = link i -> j, as DCRNN's ``adj_mx`` and
    networkx's matrices; diagonal dropped), optionally
    with a header row of sensor ids (and then an optional index column); a header
    reorders the matrix to ``sensor_ids``. A first line that lists the sensor ids (mostly
    ids, each once, or mostly words) is always the header, and must be followed by one
    row per sensor (``N`` rows). Edge list: columns ``src,dst[,weight]
    [,distance_km]`` naming sensor ids, with or without that header; links are
    directed ``src -> dst`` as written, and a weight of 0 is no link (as in a matrix). A
    column whose name ends in a unit (``km``, ``m``, ``mi``...) holds road lengths in that
    unit; one named like a length without a unit (``distance``, ``cost``) is read as
    metres or km by its median link, with a note (``RoadGraph.notes``). A headed edge
    list's links to sensors the data lacks, and a headed matrix's rows and columns of
    them, are left out, with a note, when most of its sensors are the data's (a matrix's
    header must then list every sensor of the data).

    A file with 2-4 columns is read as an edge list when its first line is a
    ``src,dst`` header (``source``/``from`` also work, or any two words above lines that
    all link sensor ids: ``counter,neighbour,walk_m``) or when every entry of its first
    two columns is a sensor id; otherwise, when its shape fits, as a matrix. A header
    line removes any doubt; an ``N x N`` file of ``N`` sensor ids without one (sensors
    named ``0 .. N-1``, N <= 4) is refused as ambiguous. Weights and lengths must be
    finite and >= 0; an adjacency without a link between two sensors, a link listed
    twice, an edge list's empty ``src`` or ``dst`` cell, or matrix row labels in another
    order than its header are rejected. Weights
    are kept as float32: one beyond its range (``1e308``) is rejected naming its line and
    column, and one that becomes 0 in it (below 1.4e-45, e.g. ``1e-300``) is no link, as
    0 is. ``unordered`` says why ``sensor_ids`` are in no order a user would write a matrix
    in (a long-format file's order of first appearance): a matrix must then name them.
    A matrix of road distances becomes DCRNN's thresholded Gaussian kernel graph, with a
    note (:func:`~pipeline.data.distance_kernel.matrix_graph`); ``kind`` says what a
    matrix's entries are instead of those rules, and is refused for an edge list.
    """
    if path.stat().st_size == 0:
        raise DatasetError(f"{path}: the adjacency file is empty")
    comments = comment_lines(path, sensor_ids)
    # ragged rows: pandas would pad them silently
    _, data_lines = scan(path, first="line 1", comments=comments)
    try:
        raw = string_cells(path, comments, header=None)
    except pd.errors.ParserError as exc:
        raise DatasetError(f"{path}: ragged adjacency CSV: {parser_detail(exc)}") from None
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{path}: the adjacency file is empty") from None
    raw = cut_empty_tail(raw, len(data_lines) + 1).apply(lambda col: col.str.strip())
    while raw.shape[1] > 2 and not filled(raw.iloc[:, -1]).any():
        raw = raw.iloc[:, :-1]  # a separator ending every line
    n = len(sensor_ids)
    rows, cols = raw.shape
    head = next((k for k, _ in numbered_rows(path, 1)), 1)
    lines = np.concatenate([[head], data_lines]) if len(data_lines) + 1 == rows else None
    lines = np.arange(1, rows + 1) if lines is None else lines  # [row] of raw: file lines
    ids = [str(s) for s in sensor_ids]
    known = set(ids)
    edge_shaped = 2 <= cols <= 4
    ends = raw.iloc[:, :2].isin(known).to_numpy() if edge_shaped else np.zeros(1, dtype=bool)
    named = raw.iloc[0, 0].lower() in SRC_NAMES or (
        edge_shaped and rows > 1 and _column_names(raw.iloc[0, :2], ends)
    )
    graph = None
    id_header = rows == n + 1 and cols == n and sorted(raw.iloc[0]) == sorted(ids)
    headed = cols in (n, n + 1) and _names_sensors(list(raw.iloc[0, cols - n :]), ids)
    if edge_shaped and not named and ends.all() and rows == cols == n and _square_of_numbers(raw):
        raise DatasetError(
            f"{path}: {n} rows of {n} sensor ids read as well as an {n} x {n} matrix as an edge "
            "list src,dst[,weight]; add a header line: the sensor ids for a matrix, or "
            "src,dst,weight for an edge list"
        )
    as_edges = edge_shaped and (named or (ends.all() and not id_header))
    if kind != "auto" and as_edges:
        raise DatasetError(
            f"{path}: kind={kind} is for a square matrix; an edge list says what its columns "
            "hold by their names (weight, distance_m, distance_km, cost)"
        )
    try:
        if as_edges:
            graph = _edge_list(path, raw, ids, coords, lines, headed=named)
        elif headed or (cols == n and rows in (n, n + 1)) or (cols == n + 1 and rows == n + 1):
            if unordered is not None and not headed and len(raw) == len(ids):
                raise DatasetError(
                    f"{path}: a matrix without a header row, for sensors {unordered}; "
                    "give the matrix a first line of sensor ids, or use an edge list "
                    "src,dst[,weight]"
                )
            graph = _matrix(path, raw, ids, coords, lines, headed=headed, kind=kind)
        elif (header := _matrix_header(raw, known)) is not None:
            larger = list(raw.iloc[0, 1:] if _row_labelled(raw) else raw.iloc[0])
            if not _covers(larger, ids):
                _check_header(path, header, ids, int(lines[0]))
            graph = _larger_matrix(path, raw, larger, ids, coords, lines, kind)
        elif ends.any():
            graph = _edge_list(path, raw, ids, coords, lines, headed=named)
    except GraphError as exc:
        raise DatasetError(f"{path}: {exc}") from None
    if graph is not None:
        return require_links(path, graph)
    numbers = _square_of_numbers(raw)
    raise DatasetError(
        f"{path}: {'' if numbers else 'not an adjacency: '}expected a {n} x {n} matrix (one "
        f"row and column per sensor) or an edge list src,dst[,weight]; got "
        f"{_count(rows, 'row')} x {_count(cols, 'column')}"
        + (_size_hint(n, rows, cols, ids) if numbers else "")
    )


def require_links(path: Path, graph: RoadGraph) -> RoadGraph:
    """``graph`` of the adjacency file ``path``, refused when it links no two sensors."""
    if not np.count_nonzero(graph.edge_weight):
        raise DatasetError(
            f"{path}: the adjacency has no link between two different sensors (every "
            "entry is zero or a self-loop); fix it or leave out --adjacency"
        )
    return graph


def _count(k: int, noun: str) -> str:
    return f"{k} {noun}{'' if k == 1 else 's'}"


def _square_of_numbers(raw: pd.DataFrame) -> bool:
    """True when the last rows and columns of ``raw`` form a square of numbers (or missing
    cells): a matrix, perhaps below a header row or beside a label column."""
    k = min(raw.shape)
    cells = pd.Series(raw.iloc[-k:, -k:].to_numpy().ravel(), dtype=str)
    number = pd.to_numeric(cells, errors="coerce").notna()
    return bool((number | cells.str.lower().isin(MISSING_TOKENS)).all())


def _size_hint(n: int, rows: int, cols: int, ids: Sequence[str]) -> str:
    """The likely cause of a matrix one sensor larger or smaller than the data."""
    if cols == n - 1 and rows in (n - 1, n):
        return (
            f". The data has one sensor more than the adjacency: if its first column "
            f"({ids[0]!r}) is a row index or time column, pass --index-col {ids[0]}; "
            "otherwise the adjacency lacks one of the data's sensors"
        )
    if cols == n + 1 and rows in (n + 1, n + 2):
        return (
            ". The adjacency has one sensor more than the data: was the data's first "
            "column taken for a row index? Pass --no-index"
        )
    return ""


def _names_sensors(cells: Sequence[str], ids: Sequence[str]) -> bool:
    """True when a matrix's first line (past any corner cell) names its columns: its cells
    are mostly sensor ids, each once (a row of weights repeats itself, as 0s), or mostly
    words (numbers are weights, though they may be ids)."""
    text = pd.Series(list(cells), dtype=object)
    if text.is_unique and text.isin(set(ids)).sum() * 2 > len(text):
        return True
    words = pd.to_numeric(text, errors="coerce").isna() & ~text.str.lower().isin(MISSING_TOKENS)
    return bool(words.sum() * 2 > len(text))


def _matrix(
    path: Path,
    raw: pd.DataFrame,
    ids: list[str],
    coords: np.ndarray | None,
    lines: np.ndarray,
    *,
    headed: bool = False,
    kind: AdjacencyKind = "auto",
) -> RoadGraph:
    """The graph of an adjacency matrix ``raw``, with a header row when ``headed`` or one
    row more than sensors; ``lines`` are the file lines of its rows; ``kind`` what its
    entries are (:func:`~pipeline.data.distance_kernel.matrix_graph`)."""
    n = len(ids)
    body, order = raw, None
    if len(raw) == n + 1 or headed:
        header = list(raw.iloc[0])
        if raw.shape[1] == n + 1 or (header and not str(header[0]).strip()):
            header, body = header[1:], raw.iloc[1:, 1:]  # a corner cell (no id is empty)
        else:
            body = raw.iloc[1:]
        if not set(header) & set(ids) and pd.to_numeric(pd.Series(header), "coerce").notna().all():
            index = spelling_index(ids)
            twins = [t for h in header if (t := _twin(h, index)) is not None]
            if sorted(twins) == sorted(ids):  # 7.0, 8.0 for the data's 7, 8
                _check_header(path, header, ids, int(lines[0]))
            raise DatasetError(
                f"{path}: a {len(raw)} x {raw.shape[1]} matrix of numbers for {n} sensors: one "
                "sensor more than the data (was the data's first column taken for a row "
                "index? pass --no-index), or give the matrix a header of sensor ids"
            )
        twice = sorted({s for s in header if header.count(s) > 1})
        if twice and set(header) & set(ids):  # else no header of the data's ids at all
            raise DatasetError(
                f"{path}: sensor(s) {twice[:5]} appear twice in the matrix header; "
                "list each sensor once"
            )
        _check_header(path, header, ids, int(lines[0]))
        if len(body) != n:
            raise DatasetError(
                f"{path}: the matrix has a header of {n} sensor ids (line {lines[0]}) and "
                f"{_count(len(body), 'row')} under it for {n} sensors"
                f"{_rows_missing(list(raw.iloc[1:, 0]), header) if raw.shape[1] > n else ''}; "
                "give one row per sensor, in the order of the header"
            )
        if raw.shape[1] == n + 1:
            _check_row_labels(path, list(raw.iloc[1:, 0]), header, lines[1:])
        position = {s: k for k, s in enumerate(header)}
        order = np.array([position[s] for s in ids])
    offset = raw.shape[1] - n
    names = header if order is not None else [str(k + offset + 1) for k in range(n)]
    matrix = _weights(path, body, names, lines[len(raw) - len(body) :], "adjacency entry")
    matrix[matrix.astype(np.float32) == 0] = 0.0  # 1e-300 is 0 as kept: no link
    if order is not None:
        matrix = matrix[np.ix_(order, order)]
    return matrix_graph(matrix, path.name, coords=coords, kind=kind)  # a row lists links out


def _covers(header: Sequence[str], ids: Sequence[str]) -> bool:
    """True when a matrix ``header`` lists every sensor of the data, each once, and more,
    most of them the data's: the graph of a larger network than the data's."""
    names = set(header)
    return len(names) == len(header) and names > set(ids) and 2 * len(names - set(ids)) < len(names)


def _row_labelled(raw: pd.DataFrame) -> bool:
    """True when a headed matrix's first column labels its rows: a corner cell (empty or
    an index name) above labels that the header names, in a square of cells."""
    corner, labels = str(raw.iloc[0, 0]), raw.iloc[1:, 0]
    named = not corner or corner.lower() in INDEX_NAMES or labels.isin(set(raw.iloc[0, 1:])).all()
    return raw.shape[1] == len(raw) and bool(named)


def _larger_matrix(
    path: Path,
    raw: pd.DataFrame,
    header: list[str],
    ids: list[str],
    coords: np.ndarray | None,
    lines: np.ndarray,
    kind: AdjacencyKind,
) -> RoadGraph:
    """The graph among the data's sensors of a headed matrix ``raw`` over more sensors
    (``header``, :func:`_covers`), with a note naming the sensors left out."""
    m = len(header)
    labelled = raw.shape[1] == m + 1
    body = raw.iloc[1:, 1:] if labelled else raw.iloc[1:]
    if len(body) != m:
        raise DatasetError(
            f"{path}: the matrix has a header of {m} sensor ids (line {lines[0]}) and "
            f"{_count(len(body), 'row')} under it; give one row per sensor, in the order of "
            "the header"
        )
    if labelled:
        _check_row_labels(path, list(raw.iloc[1:, 0]), header, lines[1:])
    matrix = _weights(path, body, header, lines[1:], "adjacency entry")
    position = {s: k for k, s in enumerate(header)}
    order = np.array([position[s] for s in ids])
    sub = matrix[np.ix_(order, order)]
    sub[sub.astype(np.float32) == 0] = 0.0  # 1e-300 is 0 as kept: no link
    left = [s for s in header if s not in set(ids)]
    shown = ", ".join(repr(s) for s in left[:3]) + (", ..." if len(left) > 3 else "")
    graph = matrix_graph(sub, path.name, coords=coords, kind=kind)
    graph.notes = (
        *graph.notes,
        f"note: {path.name}: a matrix of {m} sensors, {len(left)} of them not in the data "
        f"({shown}): left out, the graph keeps the links between the data's sensors",
    )
    return graph


def _matrix_header(raw: pd.DataFrame, known: set[str]) -> list[str] | None:
    """The sensor ids in a matrix's header row (after a corner cell when the rows are
    labelled), or None when the first row is numbers or an edge list's."""
    first = list(raw.iloc[0])
    body = raw.iloc[1:]
    if not len(body) or first[0].lower() in SRC_NAMES:
        return None
    if body.shape[1] >= 2 and body.iloc[:, :2].isin(known).to_numpy().all():
        return None  # an edge list without a header
    labelled = first[0].lower() in INDEX_NAMES or body.iloc[:, 0].isin(known).all()
    names = first[1:] if labelled else first
    numbers = pd.to_numeric(pd.Series(names, dtype=object), errors="coerce").notna()
    if not names or (numbers.any() and sum(n in known for n in names) * 2 < len(names)):
        return None
    return names


def _check_header(path: Path, header: Sequence[str], ids: Sequence[str], line: int) -> None:
    """Refuse a matrix header (file ``line``) that does not list exactly the data's
    sensors, naming those on either side, or the data's ids it writes otherwise."""
    if sorted(header) != sorted(ids):
        absent = sorted(set(ids) - set(header))
        index = spelling_index(absent)
        twins = {h: t for h in header if h not in set(ids) and (t := _twin(h, index))}
        if twins:
            raise DatasetError(
                f"{path}: line {line} (the matrix header) {_written_otherwise(twins)}"
            )
        unknown = sorted(set(header) - set(ids))[:5]
        sides = [f"unknown: {unknown}"] if unknown else []
        sides += [f"in the data but not the adjacency: {absent[:5]}"] if absent else []
        raise DatasetError(
            f"{path}: the matrix header does not list the data's sensors ({'; '.join(sides)}); "
            "use the same ids as the data columns"
        )


def _twin(name: str, index: Mapping[str, str | None]) -> str | None:
    """The one id of ``index`` (:func:`spelling_index`) that ``name`` (an adjacency's id,
    not one of them) writes otherwise: in another Unicode form (``é`` composed or
    decomposed), or as the same number (``7.0`` for ``7``); None when there is none or
    more than one."""
    return index.get(id_spelling(name))


def _form(text: str) -> str:
    """The Unicode normalisation form ``text`` is written in."""
    forms = [f for f in ("NFC", "NFD") if unicodedata.is_normalized(f, text)]
    return forms[0] if forms else "neither NFC nor NFD"


def _written_otherwise(twins: dict[str, str]) -> str:
    """What is wrong with adjacency ids that write the data's ``twins`` otherwise (see
    :func:`_twin`), and the fix."""
    pairs = list(twins.items())[:3]
    name, twin = pairs[0]
    if nfc(name) == nfc(twin):
        return (
            f"has {name!a} for the data's {twin!a}: one id in two Unicode forms ({_form(name)} "
            f"here, {_form(twin)} in the data); write both alike"
        )
    more = ", ..." if len(twins) > 3 else ""
    names = ", ".join(repr(h) for h, _ in pairs) + more
    data = ", ".join(repr(t) for _, t in pairs) + more
    one = len(twins) == 1
    how = ("as a decimal" if one else "as decimals") if all("." in h for h, _ in pairs) else ""
    return (
        f"has {'id' if one else 'ids'} {names}: the data's {data} written "
        f"{how or 'another way'}; write the ids as in the data's header"
    )


def _rows_missing(labels: Sequence[str], header: Sequence[str]) -> str:
    """`` (no row for [...])`` naming the sensors of ``header`` that no row label names."""
    absent = [s for s in header if s not in set(labels)]
    return f" (no row for {absent[:5]})" if absent and set(labels) & set(header) else ""


def _check_row_labels(path: Path, labels: list[str], header: list[str], lines: np.ndarray) -> None:
    """Refuse row labels (a matrix's first column, at file ``lines``) that name sensors in
    another order than the header: which of the two orders is meant is unknowable. Row
    numbers pass."""
    if labels == header or not set(labels) & set(header):
        return
    k = next(k for k, (a, b) in enumerate(zip(labels, header, strict=True)) if a != b)
    raise DatasetError(
        f"{path}: line {lines[k]} is labelled {labels[k]!r} but column {k + 2} of the header "
        f"is {header[k]!r}; list the rows in the order of the header"
    )


def _weights(
    path: Path,
    cells: pd.DataFrame,
    names: Sequence[str],
    lines: np.ndarray,
    what: str,
    scale: float = 1.0,
) -> np.ndarray:
    """Numeric ``cells`` times ``scale`` that must be finite, >= 0 and within float32
    (adjacency weights, road lengths in km)."""
    values = numeric_cells(path, cells, names, lines) * scale
    bad = ~(values >= 0) | (values > np.finfo(np.float32).max)  # NaN, negative, too large
    if bad.any():
        r, c = np.argwhere(bad)[0]
        text = str(cells.iloc[r, c])
        why = "is missing" if text.lower() in MISSING_TOKENS else "is not a finite number >= 0"
        if values[r, c] > 0:
            why = "is beyond the 32-bit range graphs are kept in (3.4e38)"
        raise DatasetError(f"{path}: {what} {text!r} at line {lines[r]}, column {names[c]!r} {why}")
    return values


def _links_among(
    path: Path, body: pd.DataFrame, lines: np.ndarray, ids: Sequence[str]
) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """The links of a headed edge list ``body`` (rows at file ``lines``) between sensors
    of the data, and a note naming what was left out: a graph drawn for a larger network
    than the data's. Nothing is left out (the caller names the first unknown sensor as
    an error) when an unknown id is a spelling of a data sensor's (``007`` for ``7``) or
    when at least half the file's sensors are unknown (the ids do not match at all)."""
    known = set(ids)
    unknown_ends = ~body.iloc[:, :2].isin(known).to_numpy()  # [row, 2]
    if not unknown_ends.any():
        return body, lines, []
    names = pd.unique(body.iloc[:, :2].to_numpy().ravel())
    unknown = [n for n in names if n not in known]
    index = spelling_index(ids)
    if 2 * len(unknown) >= len(names) or any(_twin(n, index) is not None for n in unknown):
        return body, lines, []
    keep = ~unknown_ends.any(axis=1)
    first = int(np.flatnonzero(~keep)[0])
    shown = ", ".join(repr(n) for n in unknown[:3]) + (", ..." if len(unknown) > 3 else "")
    note = (
        f"note: {path.name}: {int((~keep).sum())} of its {len(keep)} links name "
        f"{len(unknown)} sensor(s) not in the data ({shown}; first at line {lines[first]}): "
        "left out, the graph keeps the links between the data's sensors"
    )
    return body[keep], lines[keep], [note]


def _column_names(first: pd.Series, ends: np.ndarray) -> bool:
    """True when an edge list's first row names its columns in the user's own words
    (``counter,neighbour,walk_m``): its two ends are words, not sensor ids, and the later
    rows name sensor ids (a later row naming none is then the error named)."""
    words = pd.to_numeric(first, errors="coerce").isna().all()
    return bool(words and not ends[0].any() and ends[1:].any())


def _edge_list(
    path: Path,
    raw: pd.DataFrame,
    ids: list[str],
    coords: np.ndarray | None,
    lines: np.ndarray,
    *,
    headed: bool,
) -> RoadGraph:
    """The graph of an edge list ``raw`` whose rows are at file ``lines``, its first row
    a header of column names when ``headed``."""
    names = ["src", "dst", "weight", "distance_km"][: raw.shape[1]]
    body = raw
    if headed:
        names = [c.lower() for c in raw.iloc[0]]
        if len(raw) == 1:
            raise DatasetError(
                f"{path}: the edge list lists no links: line {lines[0]} is its header "
                f"({','.join(raw.iloc[0])}) with no link under it; add one link per line, "
                "src,dst[,weight], or leave out --adjacency"
            )
        body, lines = raw.iloc[1:], lines[1:]
    for k in (0, 1):
        if (blank := np.flatnonzero((body.iloc[:, k] == "").to_numpy())).size:
            raise DatasetError(
                f"{path}: line {lines[blank[0]]}, column {names[k]!r} is empty: a link names "
                "both its sensors, src,dst[,weight]; fill the cell or drop the line"
            )
    position = {s: k for k, s in enumerate(ids)}
    notes: list[str] = []
    if headed:
        body, lines, left_out = _links_among(path, body, lines, ids)
        notes += left_out
    ends = []
    for k in (0, 1):
        col = body.iloc[:, k]
        idx = col.map(position)
        if idx.isna().any():
            r = int(np.flatnonzero(idx.isna().to_numpy())[0])
            header = (
                " (a header? name its columns from,to[,weight])" if r == 0 and body is raw else ""
            )
            if (twin := _twin(col.iloc[r], spelling_index(ids))) is not None:
                raise DatasetError(
                    f"{path}: line {lines[r]} {_written_otherwise({col.iloc[r]: twin})}"
                )
            raise DatasetError(
                f"{path}: line {lines[r]} names sensor {col.iloc[r]!r}, which is not in the "
                f"data; use the data's sensor ids{header}"
            )
        ends.append(idx.to_numpy(dtype=np.int64))
    seen: dict[tuple[int, int], int] = {}
    for r, pair in enumerate(zip(ends[0].tolist(), ends[1].tolist(), strict=True)):
        if pair in seen:
            raise DatasetError(
                f"{path}: duplicate link {body.iloc[r, 0]!r} -> {body.iloc[r, 1]!r} at lines "
                f"{lines[seen[pair]]} and {lines[r]}; keep one line per link"
            )
        seen[pair] = r
    extra: dict[str, np.ndarray] = {}
    named: dict[str, str] = {}
    for k in range(2, raw.shape[1]):
        km = _km_per_unit(path, names[k])
        if km == _INFER:
            km, note = _inferred_km(path, names[k], body.iloc[:, k])
            notes.append(note)
        key = "weight" if km is None else "distance_km"
        if key in extra:
            what = "link weights" if km is None else "road lengths"
            raise DatasetError(
                f"{path}: columns {named[key]!r} and {names[k]!r} would both be {what}; an edge "
                "list holds src,dst[,weight][,distance_m]: drop the other columns"
            )
        named[key] = names[k]
        extra[key] = _weights(path, body.iloc[:, [k]], [names[k]], lines, names[k], km or 1.0)[:, 0]
    if "weight" in extra:  # weight 0 (as float32) is no link, as in a matrix
        linked = extra["weight"].astype(np.float32) != 0
        ends = [e[linked] for e in ends]
        extra = {key: cells[linked] for key, cells in extra.items()}
    graph = RoadGraph.from_edges(
        ends[0],
        ends[1],
        num_nodes=len(ids),
        coords=coords,
        weight=extra.get("weight"),
        distance_km=extra.get("distance_km"),
    )
    graph.notes = tuple(notes)
    return graph


# Road-length columns of an edge list: the unit, from the name's ending, in km.
_UNITS = {"km": 1.0, "kilometers": 1.0, "kilometres": 1.0, "m": 1e-3, "meters": 1e-3,
          "metres": 1e-3, "mi": 1.609344, "miles": 1.609344, "ft": 3.048e-4,
          "feet": 3.048e-4, "yd": 9.144e-4, "yards": 9.144e-4}  # fmt: skip
_UNIT = re.compile(r"(?:^|[^a-z])(" + "|".join(_UNITS) + r")[)\]]?$")
# Unit words anywhere in a length column's name (``metres apart``), in km.
_UNIT_WORDS = {"meter": 1e-3, "metre": 1e-3, "mile": 1.609344, "feet": 3.048e-4,
               "foot": 3.048e-4}  # fmt: skip
# Words of a column that holds lengths (larger = farther), never weights.
_LENGTH_WORDS = ("dist", "length", "cost", "spacing", "apart", "gap")
_INFER = -1.0  # _km_per_unit: a length column without a unit (see _inferred_km)


def _km_per_unit(path: Path, name: str) -> float | None:
    """Kilometres per unit of an edge-list column that holds road lengths, from its
    name (``distance_km``, ``length (m)``, ``Spacing [ft]``, ``metres apart``...);
    :data:`_INFER` for a length without a unit (``cost``, ``distance``); None for a
    weight column. A travel time is refused: it is not a length, and read as a weight it
    would make the slowest links the strongest."""
    lowered = name.strip().lower()
    if (unit := _UNIT.search(lowered)) is not None:
        return _UNITS[unit.group(1)]
    for word, km in _UNIT_WORDS.items():
        if word in lowered:
            return km
    if "time" in lowered:
        raise DatasetError(
            f"{path}: column {name!r} looks like travel times, which are not road lengths; "
            "give lengths (distance_m, distance_km or distance_mi), or weights where larger "
            "means a stronger link, in a column named weight"
        )
    if any(word in lowered for word in _LENGTH_WORDS):
        return _INFER
    return None


def _inferred_km(path: Path, name: str, cells: pd.Series) -> tuple[float, str]:
    """Kilometres per unit of a length column without a unit, from its median link
    (:func:`~pipeline.data.distance_kernel.unit_by_median`), and the note that says what
    was assumed."""
    km, median = unit_by_median(pd.to_numeric(cells, errors="coerce").to_numpy(np.float64))
    unit = "metres" if km < 1 else "kilometres"
    note = (
        f"note: {path.name}: column {name!r} has no unit; its links (median {median:g}) are "
        f"read as {unit} (DCRNN's 'cost' of METR-LA and PEMS-BAY is in metres); if that is "
        "wrong, name the column distance_m, distance_km or distance_mi"
    )
    return km, note


_COORDINATE_COLUMNS = ("sensor_id", "latitude", "longitude")


def read_coordinates(path: Path, sensor_ids: Sequence[str]) -> np.ndarray | None:
    """float64 ``[node, 2]`` (lat, lon) for ``sensor_ids`` from a DCRNN locations CSV.

    Accepts ``index,sensor_id,latitude,longitude`` (METR-LA) and headerless
    ``sensor_id,latitude,longitude`` (PEMS-BAY). Returns None when a sensor is not
    listed: partial coordinates would give wrong road distances. An empty file, a
    latitude or longitude that is not a number of degrees, and a sensor listed twice
    with other coordinates are rejected, naming this file and the line.
    """
    if path.stat().st_size == 0:
        raise DatasetError(
            f"{path}: the coordinates file is empty; expected sensor_id,latitude,longitude rows"
        )
    scan(path, first="line 1")  # ragged rows, not UTF-8 text
    rows = numbered_rows(path)
    head = [c.strip().lower() for c in rows[0][1]]
    headed = set(_COORDINATE_COLUMNS) <= set(head)
    if not headed and len(head) != 3:
        raise DatasetError(
            f"{path}: line {rows[0][0]} has {_count(len(head), 'column')}; expected "
            "sensor_id,latitude,longitude (with or without that header)"
        )
    columns = [head.index(c) for c in _COORDINATE_COLUMNS] if headed else [0, 1, 2]
    if headed and len(rows) == 1:
        raise DatasetError(f"{path}: no sensors under the header line {rows[0][0]}")
    where: dict[str, tuple[float, float, int]] = {}
    for line, row in rows[1:] if headed else rows:
        sid, lat, lon = (row[k].strip() for k in columns)
        point = (
            _degrees(path, line, columns[1], lat, 90.0),
            _degrees(path, line, columns[2], lon, 180.0),
        )
        seen = where.setdefault(sid, (*point, line))
        if seen[:2] != point:
            raise DatasetError(
                f"{path}: sensor {sid!r} is listed twice with other coordinates (lines "
                f"{seen[2]} and {line}); keep one line per sensor"
            )
    if any(str(s) not in where for s in sensor_ids):
        return None
    return np.array([where[str(s)][:2] for s in sensor_ids], dtype=np.float64)  # [node, 2]


def _degrees(path: Path, line: int, column: int, text: str, limit: float) -> float:
    """``text`` (a latitude within +-90 or a longitude within +-180, at ``line`` and 0-based
    ``column`` of a coordinates file) as a float, else a DatasetError naming them."""
    what = "latitude" if limit == 90.0 else "longitude"
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not -limit <= value <= limit:  # NaN too
        raise DatasetError(
            f"{path}: {what} {text!r} at line {line}, column {column + 1} is not a number of "
            f"degrees from {-limit:g} to {limit:g}"
        )
    return value
