"""Data sets -> :class:`~models.panel.SensorPanel`: one entry point, :func:`load_dataset`.

Specs
-----
``los-loop``
    ``los-loop/los_speed.csv`` (2016 x 207 speeds in mph, header = sensor ids, no time
    column: row k is 2012-03-01 00:00 UTC + 5 min * k) and ``los-loop/los_adj.csv``
    (207 x 207 symmetric weights; its diagonal of 1s is dropped). Coordinates come from
    ``metr-la/graph_sensor_locations.csv`` when present, so road lengths are haversine
    distances along the links.
``metr-la`` / ``pems-bay``
    DCRNN format: ``metr-la/metr-la.h5`` (pandas HDF5 table, DatetimeIndex, one column
    per sensor) with ``metr-la/adj_mx.pkl``; ``pems-bay/pems-bay.h5`` with
    ``pems-bay/adj_mx_bay.pkl``. In DCRNN data a speed of 0 means "no reading", so
    zeros become missing (mask False). ``adj_mx[i, j]`` weighs the road from sensor i
    to sensor j, so the links are i -> j. Needs pytables (``pip install tables``).
``nab:<category>/<file>.csv``
    A Numenta Anomaly Benchmark series (``timestamp,value``, irregular steps) with its
    windows from ``nab/<category>_windows.json`` (or NAB's ``nab/combined_windows.json``)
    as ``LabeledEvent(kind="anomaly_window")``. Resampled onto a grid whose step is the
    lower median spacing: reading at time t goes to cell ``t.floor(step)`` (so the grid index
    of an original timestamp is ``panel.timestamps.get_indexer([t.floor(step)])``);
    readings sharing a cell are averaged; a cell without a reading is missing, never
    filled. The sensor id is the file's stem.
``csv:PATH``
    A wide CSV (rules in :mod:`pipeline.data.readers`, :mod:`~pipeline.data.timestamps`
    and :mod:`~pipeline.data.graph_csv`) with an optional adjacency
    (``adjacency=``: square matrix CSV or edge list ``src,dst[,weight]``).
``npz:PATH`` / ``h5:PATH`` / ``parquet:PATH``
    The field's array and table files (:mod:`pipeline.data.arrays`): ASTGCN's and
    STSGCN's PeMSD3/4/7/8 ``.npz`` (``[time, sensor, feature]``), any ``[time, sensor]``
    array, pandas HDF5 tables (DCRNN, LargeST) and Parquet tables, with options after the path
    (``npz:PEMS04.npz,feature=0,start=2018-01-01,freq=5``) and an optional adjacency as
    for ``csv:PATH``.
``simulated`` / ``simulated:sensors=2000,days=7,seed=1``
    The built-in simulator (:func:`pipeline.data.simulate_spec.simulate_spec`); options are
    ``sensors, days, hours, seed, freq`` (minutes), ``incidents, faults`` (per day per
    100 sensors), ``hours`` (replaces ``days``) and the regimes' ``kind, coupling,
    service, gaps, graph, noise, start, regime`` (e.g. ``simulated:regime=metro``).

Files are read from ``data_dir`` (default: the ``ROADCAST_DATA_DIR`` setting). DCRNN's
pickles are read by a restricted unpickler (:mod:`pipeline.data.dcrnn_pickle`) that
never runs code named by the file.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import cast

import numpy as np
import pandas as pd

from models.panel import LabeledEvent, SensorPanel
from pipeline.data.arrays import (
    file_spec,
    npy_shapes,
    numpy_errors,
    read_h5,
    read_h5_frame,
    read_npz,
    read_parquet,
    split_options,
)
from pipeline.data.cells import DatasetError
from pipeline.data.dcrnn_pickle import AdjacencyPickleError, read_adjacency_pickle
from pipeline.data.distance_kernel import (
    DISTANCE_SHARE,
    KINDS,
    AdjacencyKind,
    kernel_graph,
    matrix_graph,
    road_links,
)
from pipeline.data.graph import GraphError, RoadGraph
from pipeline.data.graph_csv import read_adjacency_csv, read_coordinates, require_links
from pipeline.data.readers import (
    check_float32,
    is_long_csv,
    read_table,
    read_wide_csv,
    require_file,
)
from pipeline.data.simulate import SimulationError
from pipeline.data.simulate_spec import check_simulated, simulate_spec
from pipeline.data.timestamps import parse_times, to_regular_grid, zone_info

__all__ = [
    "DATASETS",
    "DatasetError",
    "DatasetInfo",
    "DatasetSpecError",
    "RemoteFile",
    "dataset_dir",
    "load_dataset",
    "parse_spec",
]


class DatasetSpecError(DatasetError):
    """A data-set spec, or an option given with it, is wrong (its name or value, not a
    file's content); the command line's exit status 2."""


@contextmanager
def _spec_errors() -> Iterator[None]:
    """Raise the :class:`DatasetError` of a spec's parsing in the block as a
    :class:`DatasetSpecError`."""
    try:
        yield
    except DatasetSpecError:
        raise
    except DatasetError as exc:
        raise DatasetSpecError(str(exc)) from None
    except SimulationError as exc:
        raise DatasetSpecError(f"simulated: {exc}") from None


LOS_LOOP_START = pd.Timestamp("2012-03-01 00:00", tz="UTC")
LOS_LOOP_FREQ = pd.Timedelta("5min")

_TGCN = "https://raw.githubusercontent.com/lehaifeng/T-GCN/master/data"
_DCRNN = "https://raw.githubusercontent.com/liyaguang/DCRNN/master/data/sensor_graph"
_DCRNN_DRIVE = "https://drive.google.com/open?id=10FOTa6HXPqX8Pf5WRoRwcFnW9BrNZEIX"
_NAB = "https://raw.githubusercontent.com/numenta/NAB/master"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a data set: where it goes under the data directory, where it comes from.

    A download is kept only when its digest matches: ``sha256`` (those here are of the
    copies in the project's shared data), else ``md5`` when that is the only digest
    published for the file; a file with neither is downloaded only with a sha256 the
    user gives (``roadcast data fetch --sha256 PATH=HEX``). ``url`` None means a manual
    download. ``alternatives`` are other paths that serve the same purpose (the file
    counts as present when one of them exists).
    """

    path: str
    url: str | None = None
    sha256: str | None = None
    required: bool = True
    alternatives: tuple[str, ...] = ()
    md5: str | None = None

    def present_in(self, root: Path) -> bool:
        """True when the file, or one of its alternatives, exists under ``root``."""
        return any((root / p).is_file() for p in (self.path, *self.alternatives))


@dataclass(frozen=True)
class DatasetInfo:
    """Metadata for ``roadcast data list`` and ``roadcast data fetch``."""

    name: str
    description: str
    files: tuple[RemoteFile, ...]
    licence: str
    source: str
    manual: str = ""  # how to get the files that have no URL


def _nab_files() -> tuple[RemoteFile, ...]:
    sha = {
        "TravelTime_387": "38e70e9ead8227fd023bff6e93247d5bc01ee008f781b921a156962419b399bb",
        "TravelTime_451": "7c174adfc457b201cd111d60688f7ec37eb7201c8080790dc41eeff477bd7345",
        "occupancy_6005": "cd357d7820d675074270fd976d4af1fc1e7854ecb764783028cbcb18d980c91d",
        "occupancy_t4013": "5663a8122a300360eb51fbbd0f21706da05af1af55262926d6a226bb6d071704",
        "speed_6005": "7976e7596cd1e579696c737576e96a26fe041484472ed7d0a463ce2b094d7aa7",
        "speed_7578": "15ba994384730cb5a2e6818f17ded1430b40d92eb7a08e5b1a48a445c8c350f6",
        "speed_t4013": "fa5532d6f7db36cadc73e657fd4dfef05cb1ec44d4010243b314d3f1bbd6a7b5",
    }
    files = tuple(
        RemoteFile(f"nab/realTraffic/{stem}.csv", f"{_NAB}/data/realTraffic/{stem}.csv", digest)
        for stem, digest in sha.items()
    )
    return (
        *files,
        RemoteFile(
            "nab/combined_windows.json",
            f"{_NAB}/labels/combined_windows.json",
            alternatives=("nab/realTraffic_windows.json",),
        ),
        RemoteFile(
            "nab/LICENSE.txt",
            f"{_NAB}/LICENSE.txt",
            "0a0b4d0b10cb1f7ed9ab2993ef93defc03447e6eba9daca1315dd32dae4877e3",
            required=False,
        ),
    )


DATASETS: MappingProxyType[str, DatasetInfo] = MappingProxyType(
    {
        "los-loop": DatasetInfo(
            name="los-loop",
            description="Loop-detector speeds (mph), 207 LA freeway sensors, 5 min, "
            "2012-03-01..07, with a weighted adjacency (T-GCN's subset of METR-LA)",
            files=(
                RemoteFile(
                    "los-loop/los_speed.csv",
                    f"{_TGCN}/los_speed.csv",
                    "7b732d86ae32b2930595becba28aff39dacbfb2197e250fc0332e1744ce2cbf4",
                ),
                RemoteFile(
                    "los-loop/los_adj.csv",
                    f"{_TGCN}/los_adj.csv",
                    "7a6eb41e10677992b5af50f5ab187c6c05c5c3a92cb973950cfddbf857361e76",
                ),
                RemoteFile(
                    "metr-la/graph_sensor_locations.csv",
                    f"{_DCRNN}/graph_sensor_locations.csv",
                    "eb8ea96e07358b45d0e4ba3b89c2673fa20c54af50150249e627389e749ade6f",
                    required=False,
                ),
            ),
            licence="research use (T-GCN repository); METR-LA locations MIT (DCRNN)",
            source="https://github.com/lehaifeng/T-GCN",
        ),
        "metr-la": DatasetInfo(
            name="metr-la",
            description="METR-LA: 207 LA sensors, 5 min, 2012-03..06, DCRNN format",
            files=(
                RemoteFile("metr-la/metr-la.h5"),
                RemoteFile(
                    "metr-la/adj_mx.pkl",
                    f"{_DCRNN}/adj_mx.pkl",
                    "64997ab26db6ffdd2f6d57c8c12da6aedcb3efc2729b46ab4cc48e8c7ad1e5e8",
                ),
                RemoteFile(
                    "metr-la/graph_sensor_locations.csv",
                    f"{_DCRNN}/graph_sensor_locations.csv",
                    "eb8ea96e07358b45d0e4ba3b89c2673fa20c54af50150249e627389e749ade6f",
                    required=False,
                ),
            ),
            licence="MIT (DCRNN)",
            source="https://github.com/liyaguang/DCRNN",
            manual=f"download metr-la.h5 from the DCRNN Google Drive folder {_DCRNN_DRIVE}",
        ),
        "pems-bay": DatasetInfo(
            name="pems-bay",
            description="PEMS-BAY: 325 Bay Area sensors, 5 min, 2017-01..05, DCRNN format",
            files=(
                RemoteFile("pems-bay/pems-bay.h5"),
                # No sha256 of this file is published; Zenodo records 4263971 and
                # 5146275 both list this MD5 for it.
                RemoteFile(
                    "pems-bay/adj_mx_bay.pkl",
                    f"{_DCRNN}/adj_mx_bay.pkl",
                    md5="55d25daceac847312b7748c59ded6f77",
                ),
                RemoteFile(
                    "pems-bay/graph_sensor_locations_bay.csv",
                    f"{_DCRNN}/graph_sensor_locations_pems_bay.csv",
                    required=False,
                ),
            ),
            licence="MIT (DCRNN)",
            source="https://github.com/liyaguang/DCRNN",
            manual=f"download pems-bay.h5 from the DCRNN Google Drive folder {_DCRNN_DRIVE}",
        ),
        "nab": DatasetInfo(
            name="nab",
            description="Numenta Anomaly Benchmark realTraffic series (Minnesota DOT) with "
            "anomaly windows; load one as nab:realTraffic/<file>.csv",
            files=_nab_files(),
            licence="MIT (numenta/NAB)",
            source="https://github.com/numenta/NAB",
        ),
        "simulated": DatasetInfo(
            name="simulated",
            description="Built-in road-network simulator (corridors around LA, peaks, "
            "upstream congestion, labelled incidents and sensor faults); 200 sensors, "
            "7 days, seed 0 unless told, e.g. simulated:sensors=2000,days=3,seed=1",
            files=(),
            licence="MIT (generated)",
            source="pipeline/data/simulate.py",
        ),
    }
)


# Data specs naming a file of the user's (``kind:PATH``), which may take ``--adjacency``.
FILE_KINDS = ("csv", "npz", "h5", "parquet")


def parse_spec(spec: str) -> tuple[str, str]:
    """Split ``"name:argument"`` into ``(name, argument)``; the argument may be empty.

    Raises
    ------
    DatasetSpecError
        An unknown name, or an argument for a data set that takes none.
    """
    name, _, arg = spec.strip().partition(":")
    name = name.strip().lower()
    if name not in DATASETS and name not in FILE_KINDS:
        known = ", ".join([*DATASETS, *(f"{kind}:PATH" for kind in FILE_KINDS)])
        raise DatasetSpecError(f"unknown data set {spec!r}; known: {known}")
    if arg.strip() and name in ("los-loop", "metr-la", "pems-bay"):
        raise DatasetSpecError(f"{name} takes no argument, got {spec!r}; use {name}")
    return name, arg.strip()


def dataset_dir(data_dir: Path | None = None) -> Path:
    """``data_dir``, or the ``ROADCAST_DATA_DIR`` setting."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    from pipeline.settings import load_settings

    return load_settings().data_dir


def load_dataset(
    spec: str,
    *,
    data_dir: Path | None = None,
    adjacency: Path | None = None,
    index_col: str | None = None,
    no_index: bool = False,
    timezone: str | None = None,
) -> SensorPanel:
    """Load a data set as a :class:`SensorPanel` (see the module doc for the specs).

    Parameters
    ----------
    spec : ``los-loop``, ``metr-la``, ``pems-bay``, ``nab:<category>/<file>.csv``,
        ``csv:PATH``, ``npz:PATH[,option=value...]``, ``h5:PATH[,...]``,
        ``parquet:PATH[,...]``, ``simulated`` or
        ``simulated:key=value,...``.
    data_dir : where the files are; defaults to ``ROADCAST_DATA_DIR``.
    adjacency : for a file's data (``csv:``, ``npz:``, ``h5:``, ``parquet:``) only: a
        matrix or edge-list CSV, DCRNN's ``adj_mx.pkl``, a ``.npy`` matrix or an ``.npz``.
    index_col, no_index : for ``csv:PATH`` only, the time or row-index column by name, or
        none at all (every column a sensor).
    timezone : for ``csv:PATH`` only, the IANA time zone of timestamps written without a
        UTC offset (local wall-clock times); default UTC.

    Raises
    ------
    DatasetSpecError
        Unknown spec, or a wrong option (:func:`check_arguments`).
    DatasetError
        Missing file (naming the path and ``roadcast data fetch``), or invalid content
        (naming the line and column).
    """
    name, arg = check_arguments(
        spec,
        None if adjacency is None else str(adjacency),
        index_col=index_col,
        no_index=no_index,
        timezone=timezone,
    )
    if name == "simulated":
        return _simulated(arg)
    if name in ("npz", "h5", "parquet"):
        return load_array_file(name, arg, adjacency=adjacency, timezone=timezone)
    if name == "csv":
        path, options = file_spec("csv", arg)
        header = options.get("header")
        return load_csv(
            path,
            adjacency=adjacency,
            index_col=index_col,
            no_index=no_index,
            timezone=timezone,
            has_header=None if header is None else header == "first",
        )
    root = dataset_dir(data_dir)
    if name == "los-loop":
        return load_los_loop(root)
    if name in ("metr-la", "pems-bay"):
        return load_dcrnn(name, root)
    return load_nab(arg, root)


def _hint(name: str, root: Path) -> str:
    info = DATASETS[name]
    where = ", ".join(f.path for f in info.files if f.required)
    manual = f"; {info.manual}" if info.manual else ""
    return (
        f"run `roadcast data fetch {name}` or put {where} under {root} "
        f"(or set ROADCAST_DATA_DIR to a folder that has them){manual}"
    )


def load_los_loop(root: Path) -> SensorPanel:
    """The ``los-loop`` panel from ``root`` (see the module doc)."""
    speed = require_file(root / "los-loop" / "los_speed.csv", _hint("los-loop", root))
    adj = require_file(root / "los-loop" / "los_adj.csv", _hint("los-loop", root))
    timestamps, values, ids, _ = read_wide_csv(  # its time grid is known, not assumed
        speed, start=LOS_LOOP_START, freq=LOS_LOOP_FREQ, has_time=False
    )
    locations = root / "metr-la" / "graph_sensor_locations.csv"
    coords = read_coordinates(locations, ids) if locations.is_file() else None
    graph = read_adjacency_csv(adj, ids, coords=coords)
    return SensorPanel.from_values(
        values, timestamps, ids, graph=graph, coords=coords, name="los-loop"
    )


def load_dcrnn(name: str, root: Path) -> SensorPanel:
    """``metr-la`` or ``pems-bay`` in DCRNN format; zeros are missing readings."""
    files = {
        "metr-la": ("metr-la.h5", "adj_mx.pkl", "graph_sensor_locations.csv"),
        "pems-bay": ("pems-bay.h5", "adj_mx_bay.pkl", "graph_sensor_locations_bay.csv"),
    }[name]
    folder = root / name
    h5 = require_file(folder / files[0], _hint(name, root))
    pkl = require_file(folder / files[1], _hint(name, root))
    frame = read_h5_frame(h5)
    if not isinstance(frame, pd.DataFrame) or not isinstance(frame.index, pd.DatetimeIndex):
        raise DatasetError(f"{h5}: expected a DataFrame with a DatetimeIndex (DCRNN format)")
    ids = tuple(str(c) for c in frame.columns)
    values = frame.to_numpy(dtype=np.float64, copy=True)  # [time, node]
    values[values == 0.0] = np.nan  # DCRNN writes 0 for "no reading"
    times = frame.index.tz_localize("UTC") if frame.index.tz is None else frame.index
    timestamps, values = to_regular_grid(times.tz_convert("UTC"), values, source=str(h5))
    adj = _dcrnn_adjacency(pkl, ids)
    loc_path = folder / files[2]
    coords = read_coordinates(loc_path, ids) if loc_path.is_file() else None
    try:
        graph = RoadGraph.from_adjacency(adj.T, coords=coords)  # adj[i, j]: road i -> j
    except GraphError as exc:
        raise DatasetError(f"{pkl}: {exc}") from None
    return SensorPanel.from_values(values, timestamps, ids, graph=graph, coords=coords, name=name)


def _dcrnn_adjacency(path: Path, ids: tuple[str, ...]) -> np.ndarray:
    """DCRNN's pickled (sensor_ids, sensor_id_to_ind, adj_mx), reordered to ``ids``.

    Read by :func:`~pipeline.data.dcrnn_pickle.read_adjacency_pickle`, which never
    runs code named by the file.
    """
    try:
        _, id_to_ind, adj = read_adjacency_pickle(path)
    except AdjacencyPickleError as exc:
        raise DatasetError(f"{path}: not a DCRNN adjacency pickle: {exc}") from None
    missing = [s for s in ids if s not in id_to_ind]
    if missing:
        raise DatasetError(f"{path}: sensors {missing[:5]} of the speed table are not in it")
    order = np.array([id_to_ind[s] for s in ids])
    return adj[np.ix_(order, order)]


def load_nab(relative: str, root: Path) -> SensorPanel:
    """One NAB series ``<category>/<file>.csv`` with its anomaly windows."""
    rel = nab_file(relative)
    path = require_file(root / "nab" / rel, _hint("nab", root))
    table = read_table(path, drop_first=True)
    if table.columns != ("value",) or (table.first_name or "").lower() != "timestamp":
        raise DatasetError(f"{path}: expected the NAB header timestamp,value")
    check_float32(path, table.values, table.lines, table.columns)
    times = parse_times(path, table.first, table.lines, "timestamp")  # type: ignore[arg-type]
    timestamps, values = to_regular_grid(
        times, table.values, source=str(path), lines=table.lines, irregular="resample"
    )
    sensor = rel.stem
    events = tuple(
        LabeledEvent(start=s, end=e, sensors=(sensor,), kind="anomaly_window")
        for s, e in _nab_windows(root, rel)
    )
    return SensorPanel.from_values(
        values, timestamps, (sensor,), events=events, name=f"nab:{rel.as_posix()}"
    )


def nab_file(relative: str) -> Path:
    """The ``<category>/<file>.csv`` of a ``nab:`` spec's argument ``relative``.

    Raises
    ------
    DatasetSpecError
        For an argument of another form.
    """
    example = "nab:realTraffic/speed_7578.csv"
    if not relative:
        raise DatasetSpecError(f"nab needs a file: nab:<category>/<file>.csv, e.g. {example}")
    rel = Path(relative)
    if len(rel.parts) != 2 or rel.suffix != ".csv":
        raise DatasetSpecError(
            f"nab:{relative}: expected nab:<category>/<file>.csv, e.g. {example}"
        )
    return rel


def _nab_windows(root: Path, rel: Path) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    category = rel.parts[0]
    candidates = [root / "nab" / f"{category}_windows.json", root / "nab" / "combined_windows.json"]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise DatasetError(
            f"missing NAB windows: neither {candidates[0]} nor {candidates[1]} exists; "
            "run `roadcast data fetch nab` or copy NAB's labels/combined_windows.json there"
        )
    from models.anomaly.nab_score import NabFormatError, read_windows

    try:
        windows = read_windows(found)
    except NabFormatError as exc:
        raise DatasetError(str(exc)) from None
    key = rel.as_posix()
    if key not in windows:
        raise DatasetError(f"{found}: no windows for {key!r}; is the file name right?")
    return [(_utc(start), _utc(end)) for start, end in windows[key]]


def _utc(stamp: pd.Timestamp) -> pd.Timestamp:
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def load_csv(
    path: Path,
    *,
    adjacency: Path | None = None,
    index_col: str | None = None,
    no_index: bool = False,
    timezone: str | None = None,
    has_header: bool | None = None,
) -> SensorPanel:
    """A wide CSV panel (rules in :mod:`pipeline.data.readers`) with an optional adjacency
    (:mod:`pipeline.data.graph_csv`);
    ``index_col`` names the time or row-index column, ``no_index`` reads every column as a
    sensor, ``timezone`` is where timestamps without a UTC offset were written,
    ``has_header`` whether the first line names the sensors (None: by its content)."""
    require_file(path, "check the path given after csv:")
    if timezone is not None:
        zone_info(timezone)  # an unknown zone is named before the file is read
    timestamps, values, ids, notes = read_wide_csv(
        path, index_col=index_col, no_index=no_index, timezone=timezone, has_header=has_header
    )
    values = values.astype(np.float32)  # what the panel keeps; frees the float64 copy
    long = has_header is not False and is_long_csv(path, index_col=index_col, no_index=no_index)
    order = f"in order of first appearance in the long-format {path.name} ({', '.join(ids[:3])}...)"
    graph = _adjacency(adjacency, ids, unordered=order if long else None)
    return SensorPanel.from_values(
        values, timestamps, ids, graph=graph, name=path.stem, notes=notes
    )


def load_array_file(
    kind: str, arg: str, *, adjacency: Path | None = None, timezone: str | None = None
) -> SensorPanel:
    """``npz:``, ``h5:`` or ``parquet:PATH[,options]`` (:mod:`pipeline.data.arrays`) with
    an optional adjacency, read as for ``csv:PATH``; ``timezone`` as for ``csv:PATH``
    (tables only: an npz has no timestamps)."""
    path, options = file_spec(kind, arg)
    if timezone is not None:
        zone_info(timezone)  # an unknown zone is named before the file is read
    if kind == "npz":
        timestamps, values, ids, notes = read_npz(path, options)
    else:
        read = read_h5 if kind == "h5" else read_parquet
        timestamps, values, ids, notes = read(path, options, timezone)
    graph = _adjacency(adjacency, ids)
    return SensorPanel.from_values(
        values, timestamps, ids, graph=graph, name=path.stem, notes=notes
    )


def _adjacency(
    adjacency: Path | None, ids: tuple[str, ...], *, unordered: str | None = None
) -> RoadGraph | None:
    """The graph of ``--adjacency PATH[,kind=weights|distances]`` over the data's sensors
    ``ids``, if one is given; ``kind`` says what a matrix's entries are."""
    if adjacency is None:
        return None
    text, kind = adjacency_spec(str(adjacency))
    path = require_file(Path(text).expanduser(), "check the --adjacency path")
    if path.suffix.lower() in BINARY_ADJACENCY:
        return require_links(path, _binary_adjacency(path, ids, kind=kind))
    return read_adjacency_csv(path, ids, unordered=unordered, kind=kind)


def adjacency_spec(text: str) -> tuple[str, AdjacencyKind]:
    """``PATH[,kind=weights|distances]`` -> the path and what its matrix holds (``auto``:
    the rules decide); no file is read."""
    path, options = split_options(text, ("kind",), f"--adjacency {text}")
    kind = options.get("kind", "auto")
    if kind not in KINDS:
        raise DatasetSpecError(
            f"--adjacency {text}: kind={kind!r}; use kind=weights or kind=distances"
        )
    return path, cast(AdjacencyKind, kind)


def check_spec(spec: str, adjacency: str | None = None) -> tuple[str, str]:
    """The name and argument of a data spec (:func:`parse_spec`), its options and an
    adjacency's checked without reading any file (a deployment checks its parameters
    where the files are not).

    Raises
    ------
    DatasetSpecError
        Naming the wrong name, option or value.
    """
    with _spec_errors():
        name, arg = parse_spec(spec)
        if name in FILE_KINDS:
            file_spec(name, arg)
        if name == "simulated":
            check_simulated(arg)
        if name == "nab":
            nab_file(arg)
        if adjacency:
            adjacency_spec(adjacency)
    return name, arg


def check_arguments(
    spec: str,
    adjacency: str | None = None,
    *,
    index_col: str | None = None,
    no_index: bool = False,
    timezone: str | None = None,
) -> tuple[str, str]:
    """:func:`check_spec`, and the reading options :func:`load_dataset` takes with the
    spec checked to apply to it.

    Raises
    ------
    DatasetSpecError
        Naming the wrong name, option or value, or an option that does not apply to
        the data set.
    """
    name, arg = check_spec(spec, adjacency)
    if adjacency and name not in FILE_KINDS:
        files = ", ".join(f"{kind}:PATH" for kind in FILE_KINDS)
        raise DatasetSpecError(
            f"--adjacency is only for a file's data ({files}); {name} has its own graph"
        )
    if index_col is not None and no_index:
        raise DatasetSpecError("--index-col and --no-index contradict each other; give one")
    if (index_col is not None or no_index) and name != "csv":
        raise DatasetSpecError(f"--index-col and --no-index are only for csv:PATH, not {name}")
    if timezone is not None:
        if name not in ("csv", "h5", "parquet"):
            raise DatasetSpecError(
                f"--timezone is only for timestamps in a file (csv:, h5:, parquet:), not {name}"
            )
        with _spec_errors():
            zone_info(timezone)
    return name, arg


# --adjacency files that are not CSV: DCRNN's pickle (sensor ids inside), a numpy matrix
# and a numpy archive (a scipy sparse matrix or one dense matrix), in the data's order.
BINARY_ADJACENCY = (".pkl", ".pickle", ".npy", ".npz")
# Names a dense matrix goes by in an ``.npz`` of several arrays.
_MATRIX_KEYS = ("adj", "adj_mx", "adjacency", "A", "W")


def _binary_adjacency(
    path: Path, ids: tuple[str, ...], *, kind: AdjacencyKind = "auto"
) -> RoadGraph:
    """The graph of ``--adjacency`` given as DCRNN's ``adj_mx.pkl`` (its sensors matched to
    ``ids`` by name), a ``.npy`` square matrix, or an ``.npz`` holding a scipy sparse matrix
    (``scipy.sparse.save_npz``) or one square matrix, in the order of ``ids``; ``A[i, j]``
    is a link i -> j, as in a CSV matrix. Nothing is unpickled but DCRNN's pickle, by its
    restricted reader."""
    if path.suffix.lower() not in (".npy", ".npz"):
        return _binary_dense(path, _dcrnn_adjacency(path, ids), ids, kind)
    shapes = npy_shapes(path, "not a numpy matrix")  # checked before anything is allocated
    n = len(ids)
    if "" in shapes:
        _check_square(path, shapes[""], n)
    elif {"format", "shape"} <= set(shapes):
        for key, shape in shapes.items():
            if (count := int(np.prod(shape, dtype=object))) > n * n + n + 1:
                raise DatasetError(
                    f"{path}: array {key!r} holds {count} values, more than a sparse "
                    f"{n} x {n} matrix (one row and column per sensor of the data) can"
                )
        return _sparse_adjacency(path, ids, kind)
    with numpy_errors(path, "not a numpy matrix"):
        loaded = np.load(path, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        return _binary_dense(path, loaded, ids, kind)
    with loaded:
        return _binary_dense(path, _archived_matrix(path, loaded, shapes, n), ids, kind)


def _check_square(path: Path, shape: tuple[int, ...], n: int) -> None:
    """Refuse a matrix of ``path`` whose ``shape`` is not ``n x n`` (one row and column
    per sensor of the data)."""
    if shape != (n, n):
        raise DatasetError(
            f"{path}: expected a {n} x {n} matrix (one row and column per "
            f"sensor of the data, in its column order), got shape {shape}"
        )


def _binary_dense(
    path: Path, adj: np.ndarray, ids: tuple[str, ...], kind: AdjacencyKind
) -> RoadGraph:
    """The graph of the square matrix ``adj`` of ``path``, checked to be one row and
    column per sensor of ``ids`` of finite numbers >= 0 (True / False read as 1 / 0)."""
    _check_square(path, adj.shape, len(ids))
    if adj.dtype.kind not in "biuf":
        raise DatasetError(f"{path}: the matrix holds {adj.dtype} values; it must hold numbers")
    bad = ~np.isfinite(adj) | (adj < 0)
    if bad.any():
        i, j = (int(k) for k in np.argwhere(bad)[0])
        raise DatasetError(
            f"{path}: entry [{i}, {j}] (sensor {ids[i]!r} -> {ids[j]!r}) is {adj[i, j]}; "
            "the matrix must hold finite numbers >= 0"
        )
    try:
        return matrix_graph(np.asarray(adj, dtype=np.float64), path.name, kind=kind)
    except GraphError as exc:
        raise DatasetError(f"{path}: {exc}") from None


def _archived_matrix(
    path: Path, archive: np.lib.npyio.NpzFile, shapes: dict[str, tuple[int, ...]], n: int
) -> np.ndarray:
    """The one matrix of an ``.npz`` archive: its only array, or the one named as a matrix,
    its declared shape (``shapes``) checked to be ``n x n`` before it is read."""
    names = list(archive.files)
    named = [k for k in _MATRIX_KEYS if k in names]
    if len(names) != 1 and len(named) != 1:
        listed = ", ".join(names[:10]) or "none"
        raise DatasetError(
            f"{path}: holds {len(names)} arrays ({listed}); expected one matrix, or one named "
            f"{', '.join(_MATRIX_KEYS)}"
        )
    key = names[0] if len(names) == 1 else named[0]
    _check_square(path, shapes[key], n)
    with numpy_errors(path, f"array {key!r} cannot be read", f"array {key!r}"):
        return archive[key]


def _sparse_adjacency(path: Path, ids: tuple[str, ...], kind: AdjacencyKind) -> RoadGraph:
    """A scipy sparse matrix (``save_npz``) as links ``row -> column``: its entries above 0
    off the diagonal, weights, or with ``kind=distances`` road lengths (links of weight 1,
    as an edge list ``src,dst,cost``); without a dense copy, which a large network's matrix would
    not fit in (a matrix stored sparse but dense is read as a dense one, by the rules)."""
    import scipy.sparse

    try:
        matrix = scipy.sparse.load_npz(path).tocoo()
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{path}: not a scipy sparse matrix ({exc})") from None
    n = len(ids)
    _check_square(path, matrix.shape, n)
    values = np.asarray(matrix.data, dtype=np.float64)
    if not np.isfinite(values).all() or (values < 0).any():
        raise DatasetError(f"{path}: the matrix must hold finite entries >= 0")
    off = matrix.row != matrix.col
    if kind == "auto" and np.count_nonzero(off) >= DISTANCE_SHARE * n * (n - 1):
        return _binary_dense(path, matrix.toarray(), ids, kind)
    keep = off & (values != 0)
    src, dst, values = matrix.row[keep], matrix.col[keep], values[keep]
    try:
        if kind == "distances":
            what = f"the {n} x {n} sparse matrix"
            return kernel_graph(road_links(src, dst, values, n, path.name, what), n)
        return RoadGraph.from_edges(src, dst, num_nodes=n, weight=values)
    except GraphError as exc:
        raise DatasetError(f"{path}: {exc}") from None


def _simulated(options: str) -> SensorPanel:
    try:
        return simulate_spec(options)
    except SimulationError as exc:
        raise DatasetError(f"simulated: {exc}") from None
