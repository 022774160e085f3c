"""Readings from the field's array and table files: NumPy ``.npz`` / ``.npy``, pandas
HDF5 and Parquet.

``npz:PATH`` reads the arrays ASTGCN, STSGCN and most graph-forecasting code publish
PeMSD3/4/7/8 in (``data``: ``[time, sensor, feature]``, PeMSD4's and PeMSD8's features
flow, occupancy, speed), and any ``[time, sensor]`` or ``[time]`` array; ``h5:PATH`` a
pandas HDF5 table of one column per sensor (DCRNN's METR-LA and PEMS-BAY, LargeST);
``parquet:PATH`` a Parquet table of one column per sensor, its time the DatetimeIndex
pandas wrote or its one column of timestamps (typed, ISO-8601 text first, or Unix times
as a CSV's: whole numbers under a time column's name, or first), or of one row per
reading (time, sensor, value; the sensor column named as the CSV reader's long format
names it, or the one of text when times repeat or it holds one name). Any other column
of text, lists or structs is refused; decimals are read as numbers.
Options follow the path, comma-separated (``npz:PEMS04.npz,feature=2,start=2018-01-01``):

* ``key``: the array (npz; default ``data``, or the file's only array) or the HDF5 key
  (default: the file's only one);
* ``feature``: which entry of a 3-D array's last axis (default 0, with a note);
* ``start``, ``freq``: the clock of a file without timestamps (every npz; an HDF5 or
  Parquet table without them): step k is at ``start + k * freq``, ``freq`` in minutes
  (default 2000-01-01 UTC and 5 minutes, with a note saying so);
* ``zeros=missing``: an exact 0 is no reading (DCRNN writes it so); by default 0 is a
  reading (training notes sensors whose fractional readings are often exactly 0).

A table's timestamps without a zone are UTC, or wall-clock times in the zone
``--timezone`` names (the autumn's repeated hour told apart by the rows' order, as in a
CSV). Sensors of an npz are named ``0`` to ``N-1`` (the order an edge list of indices
such as PeMSD4's ``from,to,cost`` refers to). NaN and inf are missing readings, a value beyond
float32 is refused naming the sensor and step. An npz is read without unpickling (a
pickled array is refused); in an HDF5 file, the pickles pandas writes itself (an index's
``freq`` and ``tz``) are read, any other is refused before anything it names is called
(:mod:`pipeline.data.h5_pickles`).
"""

from __future__ import annotations

import contextlib
import re
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, NamedTuple

import numpy as np
import pandas as pd

from models.bundle import duration_text
from pipeline.data.cells import DatasetError
from pipeline.data.h5_pickles import safe_unpickling
from pipeline.data.readers import (
    DEFAULT_FREQ,
    DEFAULT_START,
    SENSOR_NAMES,
    TIME_NAMES,
    pivot_long,
    require_file,
)
from pipeline.data.timestamps import (
    block_rows,
    epoch_times,
    is_epoch,
    local_times,
    to_regular_grid,
)
from pipeline.kafka.schema import TS_MAX, TS_MIN, sensor_id_problem

# The options of each ``kind:PATH[,name=value...]`` data spec, and the values of those
# that take a word.
OPTIONS = {
    "csv": ("header",),
    "npz": ("key", "feature", "start", "freq", "zeros"),
    "h5": ("key", "start", "freq", "zeros"),
    "parquet": ("start", "freq", "zeros"),
}
_WORDS = {
    "zeros": ("missing", "keep"),  # an exact 0 is no reading / a reading
    "header": ("none", "first"),  # the first line holds readings / names the sensors
}
_EXAMPLE = {"csv": "data/speeds.csv", "npz": "data/PEMS04.npz", "h5": "data/pems-bay.h5",
            "parquet": "data/flow.parquet"}  # fmt: skip
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# Largest array an npz or npy file may declare: reading takes its size and a float64
# copy of the readings besides (a few MB of zip can declare gigabytes of zeros).
MAX_ARRAY_BYTES = 4 * 2**30
_OPTION = re.compile(r"^(.*),([A-Za-z_]+)=([^,]*)$", re.S)


class ArrayReadings(NamedTuple):
    """What the readers here return: ``values`` is ``[time, sensor]`` float32 with NaN for
    missing readings."""

    timestamps: pd.DatetimeIndex
    values: np.ndarray
    ids: tuple[str, ...]
    notes: tuple[str, ...]


def split_options(arg: str, allowed: Sequence[str], label: str) -> tuple[str, dict[str, str]]:
    """``PATH[,name=value...]`` -> the path and the options, whose names must be in
    ``allowed`` (a path that exists as written keeps its commas); ``label`` names the
    argument in errors."""
    options: dict[str, str] = {}
    rest = arg
    while (m := _OPTION.match(rest)) and not Path(rest).expanduser().is_file():
        rest, name, value = m.group(1), m.group(2).lower(), m.group(3).strip()
        if name not in allowed:
            raise DatasetError(f"{label}: unknown option {name!r}; known: {', '.join(allowed)}")
        if name in options:
            raise DatasetError(f"{label}: option {name!r} given twice")
        options[name] = value
    return rest.strip(), options


def file_spec(kind: str, arg: str) -> tuple[Path, dict[str, str]]:
    """``kind:PATH[,name=value...]`` -> the path and the options of a data file, their
    names and words checked (no file is read)."""
    rest, options = split_options(arg, OPTIONS[kind], f"{kind}:{arg}")
    if not rest:
        raise DatasetError(f"{kind} needs a path: {kind}:PATH, e.g. {kind}:{_EXAMPLE[kind]}")
    for name, words in _WORDS.items():
        if name in options and options[name] not in words:
            allowed = " or ".join(f"{name}={w}" for w in words)
            raise DatasetError(f"{kind}:{arg}: {name}={options[name]!r}; use {allowed}")
    return Path(rest).expanduser(), options


def read_npz(path: Path, options: dict[str, str]) -> ArrayReadings:
    """The readings of an ``.npz`` archive or ``.npy`` array (see the module doc)."""
    require_file(path, "check the path given after npz:")
    with numpy_errors(path, "not a NumPy .npz or .npy file"):
        if _numpy_header(path) and not zipfile.is_zipfile(path):
            with path.open("rb") as f:
                declared_shape(path, "the array", f, path.stat().st_size)
        loaded = np.load(path, allow_pickle=False)
    if isinstance(loaded, np.ndarray):
        array, name = loaded, path.name
    else:
        with loaded:
            array, name = _npz_array(path, loaded, options.get("key"))
    notes: list[str] = []
    values = _as_panel(path, name, array, options.get("feature"), notes)
    values = _float_readings(path, values, options)
    timestamps = _assumed_clock(path, len(values), options, notes)
    if len(values) < values.shape[1]:
        notes.append(
            f"note: {path.name}: {name} has fewer steps ({len(values)}) than sensors "
            f"({values.shape[1]}); it is read as [time, sensor]: if it is [sensor, time], "
            "transpose it"
        )
    ids = tuple(str(i) for i in range(values.shape[1]))
    return ArrayReadings(timestamps, values, ids, tuple(notes))


def _npz_array(
    path: Path, archive: np.lib.npyio.NpzFile, key: str | None
) -> tuple[np.ndarray, str]:
    names = list(archive.files)
    if key is None:
        if "data" in names:
            key = "data"
        elif len(names) == 1:
            key = names[0]
        else:
            listed = ", ".join(names[:10]) or "none"
            raise DatasetError(
                f"{path}: holds {len(names)} arrays ({listed}) and none is named 'data'; "
                f"choose one with npz:{path},key=NAME"
            )
    if key not in names:
        listed = ", ".join(names[:10]) or "none"
        raise DatasetError(f"{path}: no array named {key!r}; it holds {listed}")
    with numpy_errors(path, f"array {key!r} cannot be read", f"array {key!r}"):
        members = archive.zip
        assert members is not None  # open until the archive is closed
        stored = f"{key}.npy" if f"{key}.npy" in members.namelist() else key
        member = members.getinfo(stored)
        with members.open(member) as f:
            declared_shape(path, f"array {key!r}", f, member.file_size)
        return archive[key], f"array {key!r}"


def declared_shape(path: Path, name: str, f: IO[bytes], size: int) -> tuple[int, ...]:
    """The shape the header of the ``.npy`` array opened as ``f`` (``size`` bytes, header
    included) declares; refused when it declares more than ``size`` holds, or more than
    :data:`MAX_ARRAY_BYTES`, before NumPy allocates it."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    if dtype.kind == "O":
        raise _pickled_objects(path, name)
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if f.tell() + declared > size:
        raise DatasetError(
            f"{path}: {name} declares {declared} bytes (shape {shape}, {dtype}) but the file "
            f"holds {max(size - f.tell(), 0)} after its header: not fully written (truncated?)"
        )
    if declared > MAX_ARRAY_BYTES:
        raise DatasetError(
            f"{path}: {name} declares {declared / 2**30:.1f} GiB (shape {shape}, {dtype}), "
            f"more than the {MAX_ARRAY_BYTES // 2**30} GiB an array may hold here; save a "
            "smaller one (fewer steps or sensors)"
        )
    return tuple(shape)


def npy_shapes(path: Path, unreadable: str) -> dict[str, tuple[int, ...]]:
    """The shape of every array of the ``.npy`` or ``.npz`` file ``path`` (``""`` for a
    ``.npy``) from their headers, each checked by :func:`declared_shape`, nothing loaded;
    ``unreadable`` says what the file is not when it is neither."""
    with numpy_errors(path, unreadable):
        if not zipfile.is_zipfile(path):
            with path.open("rb") as f:
                return {"": declared_shape(path, "the array", f, path.stat().st_size)}
        shapes = {}
        with zipfile.ZipFile(path) as members:
            for member in members.infolist():
                key = member.filename.removesuffix(".npy")
                with members.open(member) as f:
                    shapes[key] = declared_shape(path, f"array {key!r}", f, member.file_size)
        return shapes


@contextlib.contextmanager
def numpy_errors(path: Path, unreadable: str, subject: str = "the file") -> Iterator[None]:
    """NumPy's errors reading ``path`` as one line: ``unreadable`` and the reason, or
    ``subject`` named as holding pickled objects (``allow_pickle=False`` refused them)."""
    try:
        yield
    except DatasetError:
        raise
    except ValueError as exc:
        if not _numpy_header(path):  # NumPy tried it as a pickle, and did not load it
            raise DatasetError(
                f"{path}: {unreadable} (no .npy or .npz header; pickles are not read)"
            ) from None
        if "pickle" in str(exc).lower():  # an object array
            raise _pickled_objects(path, subject) from None
        raise DatasetError(f"{path}: {unreadable} ({exc})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{path}: {unreadable} ({exc})") from None


def _pickled_objects(path: Path, subject: str) -> DatasetError:
    return DatasetError(
        f"{path}: {subject} holds pickled Python objects, which are not read (they can "
        "run code); save the values as a numeric array (np.savez(path, data=array))"
    )


def _numpy_header(path: Path) -> bool:
    """True when ``path`` starts as a ``.npy`` file or a zip archive (an ``.npz``) does."""
    with path.open("rb") as f:
        head = f.read(6)
    return head == b"\x93NUMPY" or head.startswith(b"PK\x03\x04")


def _as_panel(
    path: Path, name: str, array: np.ndarray, feature: str | None, notes: list[str]
) -> np.ndarray:
    """``array`` as ``[time, sensor]``: a 3-D array's ``feature`` taken."""
    if array.dtype.kind == "b":
        raise DatasetError(
            f"{path}: {name} holds true/false flags, not readings; save the readings as a "
            "numeric array"
        )
    if array.dtype.kind not in "iuf":
        raise DatasetError(
            f"{path}: {name} holds {array.dtype} values, not numbers; save the readings as "
            "a numeric array"
        )
    if array.ndim == 3:
        count = array.shape[2]
        index = 0 if feature is None else _feature_index(path, feature, count)
        if feature is None and count > 1:
            notes.append(
                f"note: {path.name}: {name} is [time, sensor, feature] with {count} features "
                "per sensor; feature 0 is read (in PeMSD4 and PeMSD8: flow, then occupancy, "
                f"speed); choose another with npz:{path},feature=K"
            )
        return array[:, :, index]
    if feature is not None:
        raise DatasetError(
            f"{path}: feature={feature} is for a [time, sensor, feature] array; {name} has "
            f"shape {array.shape}"
        )
    if array.ndim == 2:
        return array
    if array.ndim == 1:
        return array[:, None]
    raise DatasetError(
        f"{path}: {name} has shape {array.shape}; expected [time, sensor] or "
        "[time, sensor, feature]"
    )


def _feature_index(path: Path, feature: str, count: int) -> int:
    try:
        index = int(feature)
    except ValueError:
        raise DatasetError(f"{path}: feature={feature!r} is not a whole number") from None
    if not 0 <= index < count:
        raise DatasetError(
            f"{path}: feature={index} is out of range; the array has {count} features "
            f"(0 to {count - 1})"
        )
    return index


def _float_readings(
    path: Path, values: np.ndarray, options: dict[str, str], ids: tuple[str, ...] | None = None
) -> np.ndarray:
    """``values`` as float32 with NaN for missing, converted a block of rows at a time (no
    whole float64 copy); beyond float32 is refused, naming the step and the sensor
    (``ids``, else its index)."""
    if values.shape[0] == 0 or values.shape[1] == 0:
        raise DatasetError(f"{path}: no readings (shape {values.shape})")
    out = np.empty(values.shape, dtype=np.float32)
    rows = block_rows(values.shape[1])
    for start in range(0, len(values), rows):
        block = np.array(values[start : start + rows], dtype=np.float64)
        big = np.isfinite(block) & (np.abs(block) > _FLOAT32_MAX)
        if big.any():
            step, col = (int(i) for i in np.argwhere(big)[0])
            sensor = col if ids is None else repr(ids[col])
            raise DatasetError(
                f"{path}: value {block[step, col]:.3g} at step {start + step}, sensor {sensor} "
                f"is beyond the 32-bit range readings are kept in ({_FLOAT32_MAX:.2g})"
            )
        block[np.isinf(block)] = np.nan
        if options.get("zeros") == "missing":
            block[block == 0] = np.nan
        out[start : start + rows] = block
    return out


def _assumed_clock(
    path: Path, steps: int, options: dict[str, str], notes: list[str]
) -> pd.DatetimeIndex:
    """Step k at ``start + k * freq`` from the options, with a note of what was assumed."""
    try:
        start = pd.Timestamp(options.get("start", DEFAULT_START))
    except (ValueError, TypeError):
        raise DatasetError(
            f"{path}: start={options['start']!r} is not a date; write one such as 2018-01-01"
        ) from None
    start = start.tz_localize("UTC") if start.tz is None else start.tz_convert("UTC")
    years = f"the years {TS_MIN.year}-{TS_MAX.year - 1} that readings can carry"
    if not TS_MIN <= start < TS_MAX:
        raise DatasetError(f"{path}: start={options['start']!r} is outside {years}")
    text = options.get("freq")
    try:
        minutes = DEFAULT_FREQ / pd.Timedelta(minutes=1) if text is None else float(text)
    except ValueError:
        raise DatasetError(f"{path}: freq={text!r} is not a number of minutes") from None
    if not minutes > 0:
        raise DatasetError(f"{path}: freq={text!r} must be a positive number of minutes")
    if minutes * max(steps - 1, 1) >= (TS_MAX - start) / pd.Timedelta(minutes=1):
        raise DatasetError(
            f"{path}: start={start:%Y-%m-%d} and freq={minutes:g} (minutes) put the last "
            f"of {steps} steps past {years}; check freq= and start="
        )
    step = pd.Timedelta(minutes=minutes)
    if "start" not in options or "freq" not in options:
        notes.append(
            f"note: {path.name} has no timestamps: step k is read as {start:%Y-%m-%d %H:%M} "
            f"UTC + k x {duration_text(step.total_seconds())}; what models learn of the hour "
            "of day and weekday follows that assumed clock: give the real one with "
            ",start=DATE,freq=MINUTES"
        )
    return pd.date_range(start, periods=steps, freq=step)


def read_h5(path: Path, options: dict[str, str], timezone: str | None = None) -> ArrayReadings:
    """The readings of a pandas HDF5 table, one column per sensor (see the module doc);
    ``timezone``: where its times without a zone were written (default UTC)."""
    require_file(path, "check the path given after h5:")
    frame = read_h5_frame(path, options.get("key"))
    return frame_readings(path, frame, options, timezone=timezone)


def read_parquet(path: Path, options: dict[str, str], timezone: str | None = None) -> ArrayReadings:
    """The readings of a Parquet table, one column per sensor or one row per reading; the
    time is its DatetimeIndex or its one column of timestamps (see the module doc);
    ``timezone``: where its times without a zone were written (default UTC)."""
    require_file(path, "check the path given after parquet:")
    try:
        import pyarrow
    except ImportError as exc:
        raise DatasetError(
            f"reading {path} needs pyarrow: pip install 'roadcast[parquet]' ({exc})"
        ) from None

    try:
        frame = pd.read_parquet(path)
    except (pyarrow.ArrowException, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatasetError(f"{path}: not a Parquet table ({first})") from None
    except (TypeError, KeyError, IndexError, AttributeError) as exc:  # pandas' own metadata
        raise DatasetError(
            f"{path}: the table's pandas metadata cannot be read ({type(exc).__name__}: {exc}); "
            "write the file again (pandas' to_parquet), or without that metadata"
        ) from None
    for column in frame.columns:  # decimal128 columns arrive as Decimal objects
        if frame[column].dtype == object and _inferred(frame[column]) == "decimal":
            frame[column] = frame[column].astype(np.float64)
    if isinstance(frame.index, pd.DatetimeIndex):
        return frame_readings(path, frame, options, timezone=timezone)
    stamped = [c for c in frame.columns if pd.api.types.is_datetime64_any_dtype(frame[c])]
    if len(stamped) > 1:
        shown = ", ".join(repr(str(c)) for c in stamped[:5])
        raise DatasetError(f"{path}: {len(stamped)} columns hold timestamps ({shown}); keep one")
    times = _stamps(frame[stamped[0]]) if stamped else None
    if times is None and (epoch := _epoch_column(frame)) is not None:
        times, stamped = epoch_times(path, frame[epoch], str(epoch), ""), [epoch]
    leading = frame[frame.columns[0]] if len(frame.columns) else None
    if times is None and leading is not None and not pd.api.types.is_numeric_dtype(leading):
        with contextlib.suppress(ValueError, TypeError):  # text that is not all timestamps
            times, stamped = _stamps(leading), [frame.columns[0]]
    if times is not None:
        frame = frame.drop(columns=stamped[0])
        if (sensor := _sensor_column(frame, times)) is not None:
            wide, rows = _pivot_long(path, frame, times, sensor)
            return frame_readings(path, wide, options, rows=rows, timezone=timezone)
        for column in frame.columns:
            if not pd.api.types.is_numeric_dtype(frame[column]):
                raise DatasetError(
                    f"{path}: column {str(column)!r} holds {_held(frame[column])}, not "
                    "readings: a table of one row per reading has three columns (time, "
                    "sensor, value); one of one column per sensor holds numbers"
                )
        frame = frame.set_axis(times, axis=0)
    return frame_readings(path, frame, options, timezone=timezone)


def _epoch_column(frame: pd.DataFrame) -> str | None:
    """The column of Unix times in a table without typed timestamps, as the CSV reader
    finds it: numbers under a time column's name (:data:`TIME_NAMES`), or a first column
    of them (:func:`is_epoch`); else None."""
    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
    named = [c for c in numeric if str(c).strip().lower() in TIME_NAMES]
    if len(named) == 1:
        return named[0]
    first = frame.columns[0] if len(frame.columns) else None
    if not named and first in numeric and frame[first].dtype != bool and is_epoch(frame[first]):
        return first
    return None


def _held(column: pd.Series) -> str:
    """What a column of no numbers holds, for errors: ``text ('ok')``, ``lists ([1. 2.])``."""
    values = column.dropna()
    if not len(values):
        return "no values"
    first = values.iloc[0]
    kind = _inferred(values)
    if isinstance(first, dict):
        kind = "struct"
    elif isinstance(first, list | tuple | np.ndarray):
        kind = "list"
    word = {"string": "text", "struct": "structs", "list": "lists"}.get(kind, kind)
    shown = repr(first) if isinstance(first, str) else str(first).replace("\n", " ")
    return f"{word} ({shown[:40]})"


def _inferred(values: pd.Series) -> str:
    """pandas' word for what ``values`` hold (``string``, ``decimal``...), a categorical's
    categories looked through."""
    kind = pd.api.types.infer_dtype(values, skipna=True)
    if kind == "categorical":
        return pd.api.types.infer_dtype(values.cat.categories, skipna=True)
    return kind


def _sensor_column(frame: pd.DataFrame, times: pd.DatetimeIndex) -> str | None:
    """The sensor column of a long table (``frame`` less its ``times``: two columns, the
    other of numbers), else None: the one named as a sensor column (:data:`SENSOR_NAMES`),
    or the one of text when the table is long (times repeat, or the text is one value)."""
    if len(frame.columns) != 2:
        return None
    named = [c for c in frame.columns if str(c).strip().lower() in SENSOR_NAMES]
    text = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    chosen = named or text
    if len(chosen) != 1:
        return None
    sensor = chosen[0]
    other = next(c for c in frame.columns if c != sensor)
    if not pd.api.types.is_numeric_dtype(frame[other]):
        return None
    if named:
        return sensor
    ids = frame[sensor].dropna()
    if _inferred(ids) != "string":  # lists, structs, bytes: no sensor names
        return None
    return sensor if times.nunique() < len(times) or ids.nunique() == 1 else None


def _pivot_long(
    path: Path, frame: pd.DataFrame, times: pd.DatetimeIndex, sensor: str
) -> tuple[pd.DataFrame, np.ndarray]:
    """A long table (one reading per row) as one column per sensor (in order of first
    appearance) and one row per time, with the table row of each time's first reading."""
    value = next(c for c in frame.columns if c != sensor)
    if times.hasnans:
        raise DatasetError(f"{path}: row {int(np.argmax(times.isna()))} has no timestamp (NaT)")
    if frame[sensor].isna().any():
        raise DatasetError(f"{path}: row {int(np.argmax(frame[sensor].isna()))} has no sensor")
    ids = frame[sensor].astype(str)
    sensor_code, names = pd.factorize(ids)
    values = frame[value].to_numpy(dtype=np.float64)
    rows = np.arange(len(frame))
    stamps, wide, first = pivot_long(path, ids, sensor_code, len(names), times, values, rows, "row")
    return pd.DataFrame(wide, index=stamps, columns=[str(n) for n in names]), first


def _stamps(column: pd.Series) -> pd.DatetimeIndex:
    """A column of timestamps (typed, or ISO-8601 text) as an index: without a zone when
    none is written, in UTC when they carry offsets (several offsets: converted)."""
    try:
        return pd.DatetimeIndex(pd.to_datetime(column, format="ISO8601"))
    except ValueError:  # offsets that differ (daylight saving): one zone, UTC
        return pd.DatetimeIndex(pd.to_datetime(column, format="ISO8601", utc=True))


def frame_readings(
    path: Path,
    frame: pd.DataFrame | pd.Series,
    options: dict[str, str],
    *,
    rows: np.ndarray | None = None,
    timezone: str | None = None,
) -> ArrayReadings:
    """A table of one column per sensor as readings: its DatetimeIndex put on a regular
    grid (times without a zone read as UTC, or as wall-clock times in ``timezone``), or
    the assumed clock of ``options`` when it has none; ``rows`` are the table rows errors
    name (default: the frame's)."""
    if isinstance(frame, pd.Series):
        frame = frame.to_frame(name=str(frame.name) if frame.name is not None else path.stem)
    ids = tuple(str(c) for c in frame.columns)
    if len(set(ids)) != len(ids):
        twice = next(i for i in ids if ids.count(i) > 1)
        raise DatasetError(f"{path}: sensor {twice!r} is a column twice")
    for sensor in ids:
        if (problem := sensor_id_problem(sensor)) is not None:
            raise DatasetError(
                f"{path}: sensor {sensor[:40]!r} {problem}: readings on Kafka could not name it"
            )
    flags = [str(c) for c in frame.columns if pd.api.types.is_bool_dtype(frame[c])]
    if flags:
        raise DatasetError(
            f"{path}: column {flags[0]!r} holds true/false flags, not readings; drop it, or "
            "save it as numbers if it is a sensor"
        )
    try:
        values = frame.to_numpy(dtype=np.float64, copy=True)
    except (ValueError, TypeError):
        bad = next(
            (str(c) for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])), "?"
        )
        raise DatasetError(f"{path}: column {bad!r} holds values that are not numbers") from None
    notes: list[str] = []
    values = _float_readings(path, values, options, ids)
    if isinstance(frame.index, pd.DatetimeIndex):
        if "start" in options or "freq" in options:
            raise DatasetError(
                f"{path}: its rows have timestamps; start= and freq= are for files without"
            )
        index = frame.index
        if index.hasnans:
            raise DatasetError(f"{path}: a row has no timestamp (NaT); drop or fill it")
        rows = np.arange(len(index)) if rows is None else rows
        if index.tz is None:
            text = pd.Series(index.astype(str))
            times = local_times(
                path, index.tz_localize("UTC"), text, rows, timezone, line="row", notes=notes
            )
        else:
            times = index.tz_convert("UTC")
        timestamps, values = to_regular_grid(
            times, values, source=str(path), lines=rows, line="row"
        )
    else:
        timestamps = _assumed_clock(path, len(values), options, notes)
    return ArrayReadings(timestamps, values, ids, tuple(notes))


def read_h5_frame(path: Path, key: str | None = None) -> pd.DataFrame | pd.Series:
    """The pandas object stored in ``path`` under ``key`` (default: its only one)."""
    try:
        import tables
    except ImportError as exc:
        raise DatasetError(
            f"reading {path} needs pytables: pip install 'roadcast[hdf5]' ({exc})"
        ) from None
    if not tables.is_hdf5_file(str(path)):
        raise DatasetError(f"{path}: not an HDF5 file (pandas' to_hdf writes one)")
    try:
        with safe_unpickling() as refused, pd.HDFStore(path, mode="r") as store:
            keys = store.keys()
            if key is None and len(keys) > 1:
                raise DatasetError(
                    f"{path}: holds {len(keys)} tables ({', '.join(keys[:10])}); choose one "
                    f"with h5:{path},key=NAME"
                )
            if key is not None and f"/{key.lstrip('/')}" not in keys:
                raise DatasetError(
                    f"{path}: no table {key!r}; it holds {', '.join(keys[:10]) or 'none'}"
                )
            frame = store.get(key if key is not None else keys[0]) if keys else None
    except DatasetError:
        raise
    except Exception as exc:  # PyTables raises its own, HDF5's and pandas' errors
        if refused:
            raise _pickled(path, refused) from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise DatasetError(
            f"{path}: not a pandas HDF5 table ({type(exc).__name__}: {first})"
        ) from None
    if refused:
        raise _pickled(path, refused)
    if not isinstance(frame, pd.DataFrame | pd.Series):
        raise DatasetError(f"{path}: holds no pandas table (written by pandas' to_hdf)")
    return frame


def _pickled(path: Path, refused: list[str]) -> DatasetError:
    return DatasetError(
        f"{path}: holds a pickled Python object that {refused[0]}, refused without running "
        "it; write the readings as numbers (or as parquet)"
    )
