"""Readers that turn files into arrays on a regular time grid, with errors that name the
line and column to fix. Everything here raises :class:`DatasetError`.

Rules (each one tested):

* **Missing cells** (empty, ``nan``, ``na``, ``null``, ``none``, ``n/a``, a
  spreadsheet's ``#N/A``: pandas' default missing-value strings, any case) and ``inf``
  stay missing: NaN in ``values``, False in ``mask``. A ``-`` or ``?`` is refused with a
  hint to leave the cell empty.
* **Sensor names** that readings on Kafka could not carry (over 200 characters, control
  or zero-width characters) are rejected, naming the column; so are two names that are
  one after Unicode NFC normalisation (``é`` composed and decomposed), naming both.
* **Ragged rows, non-numeric cells, empty files, numbers out of range** (``1e400``; in a
  data file, beyond float32) are rejected, naming the line (1 is the header) and the
  column; so is a file separated by ``;``, tab or ``|`` instead of commas. A non-numeric
  cell is hinted to be a time column (``--index-col``) only when it is a date as people
  write one (ASCII, with ``-``, ``/``, ``:`` or ``.`` between digits, or a month's name).
* **Timestamps** (first column, when it parses as dates) without a timezone are UTC;
  with an offset they are converted to UTC; a column mixing both is rejected, and so is
  a zone name (``PST``, ``Europe/Berlin``: the error gives the offset to write) or an
  offset after ``UTC``/``GMT`` (``UTC+1``, which dateutil reads as UTC-1). A time
  column of numbers holds Unix times, in seconds, ms, us or ns by their size, unless
  they are compact dates of 8, 12 or 14 digits (``20240101``, ``202401010005``), or of
  10 (``2024010100``, ``yyyymmddHH``) when read as Unix seconds they would lie in the
  future, or spreadsheet serial days (``45352`` is 2024-03-01; 1970-2099) under a name
  with ``date``, ``day`` or ``time`` in it. A first column of compact dates is the time
  column whatever its name, never a row counter. An empty time cell is rejected, naming
  its line. A first column of dates (``2024-03-01``) followed by one of times of day
  (``08:00``) or of whole hours (``hour``: 0-23, or 1-24 hour ending, read as the hour's
  start) is read as one timestamp.
  Unsorted rows are sorted (row order in a timestamped file carries no information).
  Duplicate timestamps are rejected in a wide CSV (which reading is right is unknowable)
  and averaged when resampling.
  Dotted dates (``01.02.2024``) are day-first; dates such as ``01/02/2024`` are read
  day-first, month-first or year-first (``24-01-31``), whichever puts the rows closer
  together; timestamps outside the wire's years 1700-2249 are rejected.
* **Grid**: the step is the lower median of the spacings between rows (a spacing that
  occurs in the file). When every spacing is a whole multiple of it, skipped steps become
  missing rows (mask False), never filled. Otherwise the file is irregular: rejected by
  default, naming the first row off the step, or with ``irregular="resample"`` each
  reading goes to the cell ``t.floor(step)`` and readings sharing a cell are averaged
  (NAB). A grid over 100,000 steps and 100 times longer than the file (a mistyped
  timestamp) is rejected.
* **Long format**: a header of three columns naming the time (see ``TIME_NAMES``), the
  sensor (``SENSOR_NAMES``: ``sensor``, ``sensor_id``, ``station``, ``node``, ...) and
  the value, in any order (optionally after a row-index column), holds one reading per
  row: rows in any order, a sensor absent at a time is missing, and two readings of one
  sensor at one time are rejected, naming both lines. Sensors are in order of first
  appearance. ``index_col`` / ``no_index`` read the file as wide.
* **No timestamp column**: a first column of strictly increasing whole numbers that
  mostly go up by one, or by one constant step (from ``MIN_INDEX_ROWS`` rows on), is a
  row index whatever its name (``step``, ``idx``, ``""``..., unless the name is a
  number, which is a sensor id) and dropped, as is a first column named ``""``/``index``
  holding whole numbers (decimals there are readings of a sensor of that name); from
  1e8 on they are Unix times. Row k is then placed on
  ``start + k * freq``, except that numbers a counter that mostly goes up by one skips
  (rows dropped) become missing rows. A row of empty cells (``,,``) between rows does not
  stop a counter being one, and is not read: the counter places every row (it would
  otherwise move each later row one step on). An
  unnamed row counter before a time column (``DataFrame.to_csv()``'s index) is dropped.
  ``index_col=NAME`` names the time or index column (any position; it must hold times or
  increasing whole numbers); ``no_index=True`` reads every column as a sensor. Errors
  that may come of a sensor taken for that column (a file of one column, a first sensor
  named ``time``) say so and name ``--no-index``.
* **Preamble and comments**: comment lines (``#``, blank lines between them) and a
  spreadsheet's ``sep=`` line before the header are skipped; when the line after them
  holds readings and the last comment has as many fields, the error says the header seems
  commented out. Below the header a line starting with ``#`` is a comment too (read as a
  blank line), unless it starts with a spreadsheet error value (``#N/A``, ``#DIV/0!``: a
  row) or a sensor id may start with ``#`` (a long file's first column holds the sensors,
  an adjacency names such a sensor). Rows of empty cells (``,,``) at the end of a file and
  a last column with no name nor any value (a separator ending every line) are not read;
  an empty row between rows is a missing step (not read below a row counter, see above;
  an empty time cell is refused). A field spanning lines (a quote left open)
  is refused naming the line it starts on.
* **Adjacency** (:func:`read_adjacency_csv`): a first line that lists the sensor ids is
  always a header, and then one row per sensor must follow; a matrix for a long-format
  file (sensors in order of first appearance) must have it. An id that is a data
  sensor's in another Unicode form or written as another number (``7.0`` for ``7``) is
  refused as such, naming its line. A weight beyond float32
  (``1e308``) is rejected naming its line and column; one that is 0 in float32
  (``1e-300``) is no link, as 0 is.
* **Coordinates** (:func:`read_coordinates`): an empty file, a latitude or longitude
  that is not a number of degrees, or a sensor listed twice with other coordinates is
  rejected, naming the coordinates file and line (not the adjacency's).
"""

from __future__ import annotations

import csv
import io
import re
import time
import unicodedata
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from pipeline.data.graph import GraphError, RoadGraph
from pipeline.kafka.schema import TS_MAX, TS_MIN, sensor_id_problem

# pandas' default missing-value strings (a spreadsheet's #N/A among them), in lower case.
MISSING_TOKENS = frozenset(
    {"", "nan", "na", "null", "none", "n/a", "-nan", "#n/a", "#na", "#n/a n/a", "<na>",
     "-1.#ind", "1.#ind", "-1.#qnan", "1.#qnan"}
)  # fmt: skip
# A line that starts with "#" is a comment unless it starts with a spreadsheet's error
# value, which is a cell of a row (#N/A is a missing reading, #DIV/0! a bad one).
_COMMENT = re.compile(r"\s*#(?!N/A|NA\b|VALUE!|DIV/0!|REF!|NAME\?|NUM!|NULL!)", re.I)
TIME_NAMES = frozenset(
    {"timestamp", "time", "datetime", "date", "ts", "date_time", "epoch", "unix_time"}
)
INDEX_NAMES = frozenset({"", "index", "unnamed: 0"})
# A second column of whole hours under one of these names completes a date column.
HOUR_NAMES = frozenset(
    {"hour", "hours", "hr", "hod", "hour_of_day", "hour of day", "he", "hour ending",
     "hour_ending", "stunde", "heure", "hora", "ora", "uur"}
)  # fmt: skip
SRC_NAMES = frozenset({"src", "source", "from", "start", "upstream"})
# A long-format file (one reading per row) names its columns time, sensor and value.
SENSOR_NAMES = frozenset(
    {
        "sensor",
        "sensor_id",
        "sensor_name",
        "station",
        "station_id",
        "station_name",
        "node",
        "node_id",
        "detector",
        "detector_id",
        "device",
        "device_id",
        "site",
        "site_id",
        "id",
    }
)
DEFAULT_START = pd.Timestamp("2000-01-01", tz="UTC")
DEFAULT_FREQ = pd.Timedelta("5min")
MAX_GRID_PER_ROW = 100  # a grid this many times longer than the file is a wrong timestamp
MAX_GRID_FREE = 100_000  # grid steps always allowed, however few rows
# Rows from which a first column of whole numbers rising by one constant step other than
# one is an index rather than readings that happen to rise.
MIN_INDEX_ROWS = 8


class DatasetError(ValueError):
    """A data set cannot be read; the message names the file, line or column to fix."""


class Table:
    """A validated wide table: numeric values with the file lines they came from."""

    def __init__(
        self,
        columns: tuple[str, ...],
        values: np.ndarray,
        lines: np.ndarray,
        first: pd.Series | None,
        first_name: str | None,
    ) -> None:
        self.columns = columns  # sensor columns
        self.values = values  # float64 [row, column], NaN where missing
        self.lines = lines  # int64 [row] line number of each row in the file
        self.first = first  # the first column (raw strings) when it is not a sensor
        self.first_name = first_name


def require_file(path: Path, hint: str) -> Path:
    """Return ``path`` when it is a file, else raise naming it and how to get it."""
    if path.is_dir():
        raise DatasetError(f"{path} is a folder, not a file: {hint}")
    if path.exists() and not path.is_file():
        raise DatasetError(f"{path} is not a regular file (a device or a pipe): {hint}")
    if not path.is_file():
        raise DatasetError(f"missing file {path}: {hint}")
    return path


# What a file that is not UTF-8 text often is, by its first bytes.
_MAGIC = {b"\x1f\x8b": "gzip-compressed", b"PK\x03\x04": "a zip archive",
          b"\xff\xfe": "UTF-16 text", b"\xfe\xff": "UTF-16 text"}  # fmt: skip


def _not_text(path: Path, exc: UnicodeDecodeError) -> str:
    """Why ``path`` is not read as UTF-8 text, naming a compressed or UTF-16 file."""
    with open(path, "rb") as f:
        head = f.read(4)
    kind = next((what for magic, what in _MAGIC.items() if head.startswith(magic)), None)
    if kind is not None:
        return f"{kind}, not UTF-8 text; decompress or save it as UTF-8 CSV"
    return f"not UTF-8 text ({exc.reason}); save it as UTF-8"


def read_table(
    path: Path, *, drop_first: bool | None = None, index_col: str | None = None
) -> Table:
    """Read a wide CSV with one header line into a :class:`Table`.

    ``drop_first`` says whether the first column is a time or index column (True), a
    sensor (False) or to decide by its name and content (None, see the module doc);
    ``index_col`` names that column wherever it is (it is then moved first and dropped).
    """
    header, lines = _scan(path)
    if not lines.size:
        raise DatasetError(f"{path}: the header has no data rows under it")
    if _is_data_row(header):
        raise DatasetError(_no_header(path, header))
    raw = _cells(path, header, lines)
    while len(header) > 1 and not header[-1].strip() and not _filled(raw.iloc[:, -1]).any():
        header, raw = header[:-1], raw.iloc[:, :-1]  # a separator ending every line
    if drop_first is None and _row_index_before_time(header, raw, index_col):
        header, raw = header[1:], raw.iloc[:, 1:]  # pandas' to_csv() row index, then times
        raw.columns = [f"c{j}" for j in range(len(header))]
    if drop_first is not False and _date_and_clock(header, raw, index_col):
        header, raw = _join_date_and_clock(header, raw)
        index_col, drop_first = None, True
    empty = ~raw.apply(_filled).any(axis=1).to_numpy()  # [row]: rows of empty cells
    if index_col is not None:
        names = [h.strip() for h in header]
        if index_col.strip() not in names:
            shown = ", ".join(repr(n) for n in names[:6]) + (", ..." if len(names) > 6 else "")
            raise DatasetError(
                f"{path}: --index-col {index_col!r} is not a column of the header ({shown})"
            )
        k = names.index(index_col.strip())
        column = raw.iloc[:, k]
        numeric = pd.to_numeric(column[~empty].str.strip(), errors="coerce")
        if not (
            names[k].lower() in TIME_NAMES or _increasing_integers(numeric) or _all_dates(column)
        ):
            shown = ", ".join(column.iloc[:3].str.strip())
            value, line = column[~empty].iloc[0].strip(), lines[~empty][0]
            if (zone := _zone_name_fix(value)) is not None:
                raise DatasetError(
                    f"{path}: timestamp {value!r} at line {line} (--index-col {index_col!r}) "
                    f"does not parse; {zone}"
                )
            raise DatasetError(
                f"{path}: --index-col {index_col!r} holds readings ({shown}, ...), not "
                "timestamps or a row index; name the time or row-number column"
            )
        order = [k, *(j for j in range(len(header)) if j != k)]
        header = [header[j] for j in order]
        raw = raw.iloc[:, order]
        raw.columns = [f"c{j}" for j in range(len(header))]
        drop_first = True
    first_name = header[0].strip()
    if drop_first is None:
        drop_first = _is_time_or_index(first_name, raw.iloc[~empty, 0])
    if drop_first and empty.any() and not _is_time_column(raw.iloc[~empty, 0], first_name):
        raw, lines = raw.iloc[~empty], lines[~empty]  # the row counter places every row
    start = 1 if drop_first else 0
    columns = tuple(h.strip() for h in header[start:])
    if not columns:
        raise DatasetError(_no_sensors(path, header, raw.iloc[:, 0]))
    for k, name in enumerate(columns):
        _check_sensor(
            path, name, f"(column {k + start + 1})", "; rename the column",
            empty=f"column {k + start + 1} has no name in the header",
        )  # fmt: skip
    if (twins := _twins(columns)) is not None:
        a, b = twins
        if columns[a] == columns[b]:
            raise DatasetError(
                f"{path}: sensor {columns[a]!r} appears twice in the header "
                f"(columns {a + start + 1} and {b + start + 1})"
            )
        raise DatasetError(
            f"{path}: sensors {columns[a]!a} (column {a + start + 1}) and "
            f"{columns[b]!a} (column {b + start + 1}) are {_UNICODE_TWINS}"
        )
    if drop_first and _nfc(first_name) in {_nfc(c) for c in columns}:
        raise DatasetError(
            f"{path}: {first_name!r} names both the time or index column and a sensor column; "
            "rename one"
        )
    values = _numeric(path, raw.iloc[:, start:], columns, lines, time_hint=True)
    first = raw.iloc[:, 0] if drop_first else None
    return Table(columns, values, lines, first, first_name if drop_first else None)


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


_UNICODE_TWINS = "one name in two Unicode forms (NFC and NFD); write both alike"


def _twins(names: Sequence[str]) -> tuple[int, int] | None:
    """Positions of the first two ``names`` that are one after Unicode NFC normalisation
    (``é`` composed and decomposed look alike and would be two sensors), else None."""
    seen: dict[str, int] = {}
    for k, name in enumerate(names):
        if (j := seen.setdefault(_nfc(name), k)) != k:
            return j, k
    return None


def _no_header(path: Path, header: Sequence[str]) -> str:
    """Why a first row of readings is no header: none was written, or it is commented out
    (the comment above it has as many fields)."""
    shown = ",".join(h.strip() for h in header[:3]) + ("..." if len(header) > 3 else "")
    skip = _preamble(path)
    line = next((k for k, _ in _numbered_rows(path, 1)), skip + 1)
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
        above = [text.strip() for _, text in zip(range(skip), f, strict=False)]
    last = ([""] + [text for text in above if text])[-1]
    if last.startswith("#") and len(next(csv.reader([last[1:]]), [])) == len(header):
        return (
            f"{path}: line {line} ({shown}) holds readings and the header seems commented "
            f"out: line {skip} ({last[:40]}) starts with '#'; remove the '#'"
        )
    return (
        f"{path}: line {line} ({shown}) holds readings, not column names: the file has no "
        "header; add a first line naming the columns (the sensor ids)"
    )


def _no_sensors(path: Path, header: Sequence[str], first: pd.Series) -> str:
    """Why a file has no sensor columns: its only column was read as a row index (name
    ``--no-index``), or it has a time column only."""
    name = header[0].strip()
    if len(header) == 1 and not _is_time_column(first, name):
        return (
            f"{path}: the file has only one column, {name!r}, and it was read as a row index "
            "(its whole numbers number the rows); if it is a sensor, pass --no-index"
        )
    return f"{path}: no sensor columns after the {name!r} column"


def _row_index_before_time(header: Sequence[str], raw: pd.DataFrame, index_col: str | None) -> bool:
    """True when the first column is an unnamed row counter (``DataFrame.to_csv()``'s
    index) and another column holds the times: ``index_col``, else the second one."""
    if len(header) < 3 or header[0].strip().lower() not in INDEX_NAMES:
        return False
    if not is_row_counter(pd.to_numeric(raw.iloc[:, 0].str.strip(), errors="coerce")):
        return False
    if index_col is not None:
        return index_col.strip() != header[0].strip()
    second = raw.iloc[:, 1]
    numbers = pd.to_numeric(second.str.strip(), errors="coerce")
    return (
        header[1].strip().lower() in TIME_NAMES
        or _is_epoch(numbers)
        or _compact_dates(second) is not None
        or (numbers.isna().all() and _all_dates(second))
    )


def _date_and_clock(header: Sequence[str], raw: pd.DataFrame, index_col: str | None) -> bool:
    """True when the first two columns hold dates without a time of day and times of day
    without a date (``2024-03-01``, ``08:00``; or whole hours ``0``-``23`` or ``1``-``24``
    under a name such as ``hour``), and ``index_col`` names neither or one."""
    if len(header) < 3 or index_col not in (None, header[0].strip(), header[1].strip()):
        return False
    date, clock = raw.iloc[:, 0].str.strip(), raw.iloc[:, 1].str.strip()
    date, clock = date[~_missing(date)], clock[~_missing(clock)]
    hours = _hours(header[1], clock)
    return bool(
        len(clock)
        and (hours is not None or clock.str.fullmatch(_CLOCK_ONLY).all())
        and not date.str.contains(":").any()
        and pd.to_numeric(date, errors="coerce").isna().all()
        and _all_dates(date)
    )


def _join_date_and_clock(
    header: Sequence[str], raw: pd.DataFrame
) -> tuple[list[str], pd.DataFrame]:
    """The first two columns (a date, a time of day) as one column of timestamps named
    after both, empty where either cell is."""
    date, clock = raw.iloc[:, 0].str.strip(), raw.iloc[:, 1].str.strip()
    gap = _missing(date) | _missing(clock)
    hours = _hours(header[1], clock[~gap])
    if hours is not None:  # hours 1-24 (hour ending) label each hour by its start
        start = hours - 1 if hours.min() >= 1 and hours.max() == 24 else hours
        clock = clock.copy()
        clock[~gap] = start.map(lambda h: f"{h:02d}:00")
    joined = (date + " " + clock).where(~gap, "")
    raw = pd.concat([joined, raw.iloc[:, 2:]], axis=1)
    raw.columns = [f"c{j}" for j in range(raw.shape[1])]
    return [f"{header[0].strip()} {header[1].strip()}", *header[2:]], raw


def _hours(name: str, cells: pd.Series) -> pd.Series | None:
    """Whole hours of the day (``0``-``23``, or ``1``-``24`` hour ending) under an hour
    column's name (:data:`HOUR_NAMES`), else None."""
    if name.strip().lower() not in HOUR_NAMES or not len(cells):
        return None
    if not cells.str.fullmatch(r"\d{1,2}").all():
        return None
    hours = cells.astype(int)
    return hours if hours.max() <= 24 and (hours.max() < 24 or hours.min() >= 1) else None


def _missing(column: pd.Series) -> pd.Series:
    """True for each cell that is empty or a missing token (``nan``, ``null``...)."""
    return column.str.strip().str.lower().isin(MISSING_TOKENS)


def _scan(
    path: Path, *, first: str = "the header", comments: frozenset[int] | None = None
) -> tuple[list[str], np.ndarray]:
    """Header fields and the line number of every data row, skipping blank lines,
    ``comments`` (default :func:`_comment_lines`) and rows of empty cells at the end (a
    spreadsheet's ``,,,``); rejects ragged rows."""
    if path.stat().st_size == 0:
        raise DatasetError(f"{path}: the file is empty; expected a header line and data rows")
    with path.open("rb") as f:
        head = f.read(4096)
    if head.count(0) * 4 > len(head) and not head.startswith(tuple(_MAGIC)):  # 'A\x00,\x00'
        raise DatasetError(
            f"{path}: mostly NUL bytes, not text: UTF-16 without a byte-order mark, or a "
            "binary file? Save it as UTF-8 CSV"
        )
    lines: list[int] = []
    empty: list[tuple[int, int]] = []  # (line, fields) of empty rows not yet followed by data
    second = ""  # the first data row, when it is a single field
    preamble = _preamble(path)
    comments = _comment_lines(path) if comments is None else comments
    end, row = 0, []  # the last line of the previous row, the row
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(_blanked(f, comments))
        header: list[str] | None = None
        try:
            for row in reader:
                start, end = end + 1, reader.line_num
                if reader.line_num <= preamble:
                    continue
                if end > start and _broken(row):  # one field over many lines
                    raise DatasetError(_open_quote(path, start, f"line {end}"))
                if not row or (all(not cell.strip() for cell in row) and len(row) <= 1):
                    continue  # blank line
                if header is None:
                    header = row
                    continue
                if all(not cell.strip() for cell in row):
                    empty.append((reader.line_num, len(row)))
                    continue  # data only if data follow
                if len(row) != len(header) and (separator := _one_field_separator(header)):
                    raise DatasetError(_separated(path, first, separator))
                if not lines and len(row) == 1:
                    second = row[0]
                empty.append((reader.line_num, len(row)))
                for number, fields in empty:
                    if fields != len(header):
                        raise DatasetError(
                            f"{path}: ragged row at line {number}: {fields} fields, "
                            f"{first} has {len(header)}"
                        )
                    lines.append(number)
                empty.clear()
            if end and _broken(row):  # a quote open at the end of the last line
                raise DatasetError(_open_quote(path, end, "the end of the file"))
        except csv.Error as exc:
            raise DatasetError(f"{path}: unreadable CSV at line {reader.line_num}: {exc}") from None
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{path}: {_not_text(path, exc)}") from None
    if header is None:
        raise DatasetError(f"{path}: the file is empty; expected a header line and data rows")
    if len(header) == 1 and (separator := _separator(header[0], second)):
        raise DatasetError(_separated(path, first, separator))
    return header, np.asarray(lines, dtype=np.int64)  # [row]


def _broken(row: Sequence[str]) -> bool:
    """True when a field of ``row`` holds a line break (a quoted field over many lines)."""
    return any("\n" in cell or "\r" in cell for cell in row)


def _open_quote(path: Path, start: int, to: str) -> str:
    return (
        f'{path}: line {start} to {to} is one quoted field (a quote mark (") left open?); '
        "readings and sensor ids hold no line breaks"
    )


def _one_field_separator(header: Sequence[str]) -> str | None:
    """The delimiter of a header that is one field holding ``;``, tab or ``|``."""
    return _separator(header[0], "") if len(header) == 1 else None


def _separated(path: Path, first: str, separator: str) -> str:
    return (
        f"{path}: {first} has one field holding {separator!r}: the file seems separated by "
        f"{separator!r}; save it comma-separated (with decimal points)"
    )


def _numbered_rows(path: Path, limit: int | None = None) -> list[tuple[int, list[str]]]:
    """Up to ``limit`` CSV rows of ``path`` after its preamble, each with its line number,
    skipping blank lines as :func:`_scan` does (call that first: it names bad input)."""
    skip, comments = _preamble(path), _comment_lines(path)
    rows: list[tuple[int, list[str]]] = []
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
        reader = csv.reader(_blanked(f, comments))
        for row in reader:
            if limit is not None and len(rows) >= limit:
                break
            if reader.line_num > skip and any(c.strip() for c in row):
                rows.append((reader.line_num, row))
    return rows


def _preamble(path: Path) -> int:
    """Lines before the header that are not data: comments (``#``), blank lines between
    them and a spreadsheet's ``sep=`` line."""
    count = 0
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
        for line in f:
            text = line.strip()
            if text and not (text.startswith("#") or re.fullmatch(r"sep=.", text, re.I)):
                break
            count += 1
    return count


def _comment_lines(path: Path, ids: Sequence[str] = ()) -> frozenset[int]:
    """Numbers of the lines below the header that are comments (``#`` first), to be read
    as blank lines; none when a sensor id may start with ``#``: one of ``ids`` does, or
    a long-format file's first column holds the sensors."""
    where = _long_columns(_first_row(path))
    if any(str(s).startswith("#") for s in ids) or (where is not None and min(where) == where[1]):
        return frozenset()
    skip = _preamble(path)
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
        return frozenset(k for k, line in enumerate(f, 1) if k > skip and _COMMENT.match(line))


def _blanked(f: Iterable[str], comments: frozenset[int]) -> Iterator[str]:
    """The lines of ``f`` with the lines numbered in ``comments`` made blank."""
    for number, line in enumerate(f, 1):
        yield "\n" if number in comments else line


def _csv_source(path: Path, comments: frozenset[int]) -> Path | io.StringIO:
    """``path`` for pandas to read, as text with ``comments`` blanked when there are any."""
    if not comments:
        return path
    with path.open(newline="", encoding="utf-8-sig") as f:
        return io.StringIO("".join(_blanked(f, comments)), newline="")


def _check_sensor(path: Path, name: str, where: str, fix: str, *, empty: str) -> None:
    """Refuse a sensor name that is empty (``empty`` says where) or that readings on
    Kafka could not carry (``where`` it is, then ``fix``)."""
    if not name:
        raise DatasetError(f"{path}: {empty}")
    if (problem := sensor_id_problem(name)) is not None:
        raise DatasetError(
            f"{path}: sensor {name[:40]!r} {where} {problem}: readings on Kafka could not "
            f"name it{fix}"
        )


def _cells(path: Path, header: Sequence[str], lines: np.ndarray) -> pd.DataFrame:
    """The data rows as strings, columns ``c0, c1, ...``, one row per entry of ``lines``."""
    try:
        raw = pd.read_csv(
            _csv_source(path, _comment_lines(path)),
            dtype=str,
            keep_default_na=False,
            skip_blank_lines=True,
            skiprows=_preamble(path),
            header=0,
            names=[f"c{k}" for k in range(len(header))],
            skipinitialspace=True,
        )
    except pd.errors.ParserError as exc:  # what the first read let through: refuse to guess
        raise DatasetError(f"{path}: unreadable CSV: {_parser_detail(exc)}") from None
    raw = _cut_empty_tail(raw, len(lines))
    if len(raw) != len(lines):  # the two parsers disagree (odd quoting): refuse to guess
        raise DatasetError(
            f"{path}: could not align rows ({len(raw)} vs {len(lines)}); "
            "check quoting and line endings"
        )
    return raw


def _filled(column: pd.Series) -> pd.Series:
    """True for each cell of ``column`` that is not empty or blank."""
    return column.fillna("").str.strip().astype(bool)


def _cut_empty_tail(raw: pd.DataFrame, rows: int) -> pd.DataFrame:
    """``raw`` without the rows past the first ``rows`` when all their cells are empty
    (the rows of empty cells at the end that :func:`_scan` skips)."""
    tail = raw.iloc[rows:]
    return raw.iloc[:rows] if len(tail) and not tail.apply(_filled).any(axis=None) else raw


def _first_row(path: Path) -> list[str]:
    """The first non-blank CSV row of ``path`` (empty when unreadable: the full read
    reports why)."""
    try:
        skip = _preamble(path)
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            rows = (row for row in reader if reader.line_num > skip)
            return next((row for row in rows if any(c.strip() for c in row)), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def _long_columns(header: Sequence[str]) -> tuple[int, int, int] | None:
    """(time, sensor, value) column positions of a long-format header (three columns, or
    four with a row index first), else None."""
    names = [h.strip().lower() for h in header]
    skip = 1 if len(names) == 4 and names[0] in INDEX_NAMES else 0
    if len(names) - skip != 3:
        return None
    times = [k for k in range(skip, len(names)) if names[k] in TIME_NAMES]
    sensors = [k for k in range(skip, len(names)) if names[k] in SENSOR_NAMES]
    if len(times) != 1 or len(sensors) != 1:
        return None
    (value,) = set(range(skip, len(names))) - {times[0], sensors[0]}
    return times[0], sensors[0], value


def _long_table(
    path: Path, header: list[str], lines: np.ndarray, where: tuple[int, int, int]
) -> tuple[pd.DatetimeIndex, np.ndarray, tuple[str, ...], np.ndarray]:
    """A long-format file (one reading per row) as one row per timestamp: times (in order
    of appearance), values ``[time, sensor]`` with NaN, sensor ids (in order of
    appearance) and the line of each time's first row."""
    raw = _cells(path, header, lines)
    t, s, v = where
    sensors = raw.iloc[:, s].str.strip()
    fractional = sensors.str.fullmatch(r"[-+]?\d*\.\d+([eE][-+]?\d+)?")
    if fractional.any():  # readings, not ids: a wide file with a sensor of that name
        r = int(np.flatnonzero(fractional)[0])
        raise DatasetError(
            f"{path}: read as long format (time, sensor, value) for its header, but column "
            f"{header[s].strip()!r} holds {sensors.iloc[r]!r} at line {lines[r]}, a reading "
            f"rather than a sensor id; if {header[s].strip()!r} is a sensor, pass --index-col "
            f"{header[t].strip()} to read the file as wide"
        )
    for r, sensor in enumerate(sensors):
        _check_sensor(
            path, sensor, f"at line {lines[r]}", "",
            empty=f"line {lines[r]} has no sensor in column {header[s]!r}",
        )  # fmt: skip
    times = parse_times(path, raw.iloc[:, t], lines, header[t].strip())
    values = _numeric(path, raw.iloc[:, [v]], (header[v].strip(),), lines)[:, 0]  # [row]
    sensor_code, ids = pd.factorize(sensors)
    if (twins := _twins([str(i) for i in ids])) is not None:
        a, b = (int(np.argmax(sensor_code == k)) for k in twins)
        raise DatasetError(
            f"{path}: sensors {sensors.iloc[a]!a} (line {lines[a]}) and {sensors.iloc[b]!a} "
            f"(line {lines[b]}) are {_UNICODE_TWINS}"
        )
    time_code, stamps = pd.factorize(times.asi8)
    cell = time_code.astype(np.int64) * len(ids) + sensor_code  # [row]
    order = np.argsort(cell, kind="stable")
    twice = np.flatnonzero(np.diff(cell[order]) == 0)
    if twice.size:
        a, b = order[twice[0]], order[twice[0] + 1]
        raise DatasetError(
            f"{path}: sensor {sensors.iloc[a]!r} has two readings at {times[a]} (lines "
            f"{lines[a]} and {lines[b]}); keep one reading per sensor and time"
        )
    wide = np.full((len(stamps), len(ids)), np.nan)  # [time, sensor]
    wide[time_code, sensor_code] = values
    first = np.zeros(len(stamps), dtype=np.int64)
    first[time_code[::-1]] = lines[::-1]  # the first row of each time wins
    return pd.DatetimeIndex(stamps, tz="UTC"), wide, tuple(str(i) for i in ids), first


def _is_data_row(fields: Sequence[str]) -> bool:
    """True for a header that is a row of readings: a timestamp, then numbers (numbers
    alone may be sensor ids, as in ``los_speed.csv``)."""
    cells = [f.strip() for f in fields]
    if len(cells) < 2 or not pd.isna(pd.to_numeric(cells[0], errors="coerce")):
        return False
    rest = pd.to_numeric(pd.Series(cells[1:], dtype=object), errors="coerce")
    dated = re.search(r"\d[-/:.]\d", cells[0]) is not None and _is_date(cells[0])
    return dated and bool(rest.notna().all())


def _is_date(text: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return not pd.isna(pd.to_datetime(text, errors="coerce", utc=True))


def _written_date(text: str) -> bool:
    """True for a date as people write one: printable ASCII with digits joined by ``-``,
    ``/``, ``:`` or ``.``, or a month's name, that parses (``５５``, ``5 5`` or ``١٢٣``,
    which dateutil would date, are not)."""
    written = re.search(r"\d[-/:.]\d|[A-Za-z]{3}", text) is not None
    return text.isascii() and text.isprintable() and written and _is_date(text)


def _separator(header: str, row: str) -> str | None:
    """The delimiter of a file that is not comma-separated: a character other than a comma
    that splits its header and its first row (one field each to the CSV reader)."""
    for character in (";", "\t", "|"):
        if character in header and (not row or row.count(character) == header.count(character)):
            return character
    return None


def _is_time_or_index(name: str, column: pd.Series) -> bool:
    """True for a first column of times or a row index (see the module doc); times with
    empty cells count, for :func:`parse_times` to name the empty one."""
    lowered = name.strip().lower()
    if lowered in TIME_NAMES:
        return True
    numeric = pd.to_numeric(column.str.strip(), errors="coerce")
    if lowered in INDEX_NAMES and _whole(numeric):
        return True  # decimals there are readings of a sensor of that name
    present = ~_missing(column)
    index = (
        is_row_counter(numeric)
        or (present.any() and _is_epoch(numeric[present]))
        or (present.any() and _excel_days(name, numeric[present]) is not None)
        or _compact_dates(column[present]) is not None
        or (len(numeric) >= MIN_INDEX_ROWS and _strided(numeric))
    )
    if index and pd.isna(pd.to_numeric(lowered, errors="coerce")):
        return True  # a header that is a number is a sensor id
    if numeric.notna().any():
        return False  # numbers are readings (pandas would also read them as epoch times)
    return _all_dates(column)


def _all_dates(column: pd.Series) -> bool:
    """True when every cell that is not missing parses as a date, and one does."""
    text = column[~_missing(column)].str.strip()
    parsed = pd.to_datetime(text, errors="coerce", utc=True, format="mixed")
    return bool(len(parsed) and parsed.notna().all())


def _whole(numeric: pd.Series) -> bool:
    """True for a column of whole numbers (no cell missing)."""
    values = numeric.to_numpy(dtype=np.float64)
    return bool(len(values) and np.isfinite(values).all() and np.all(values == np.round(values)))


def _ordered_whole(numeric: pd.Series) -> bool:
    """True for whole numbers that never fall: times, perhaps in a wrong unit."""
    return _whole(numeric) and bool(np.all(np.diff(numeric.to_numpy(dtype=np.float64)) >= 0))


def _increasing_integers(numeric: pd.Series) -> bool:
    """True for strictly increasing whole numbers: a row index, a step counter or Unix
    times, never readings."""
    values = numeric.to_numpy(dtype=np.float64)
    return (
        len(values) >= 2
        and _whole(numeric)
        and bool(np.abs(values).max() < 2.0**53 and np.all(np.diff(values) > 0))
    )


def _strided(numeric: pd.Series) -> bool:
    """Increasing whole numbers with one constant step (0, 10, 20, ...): a counter."""
    return _increasing_integers(numeric) and len(set(np.diff(numeric.to_numpy()).tolist())) == 1


def _is_epoch(numeric: pd.Series) -> bool:
    """Strictly increasing whole numbers from 1e8 on: Unix times (seconds since 1973 or
    a finer unit), not a row counter."""
    return _increasing_integers(numeric) and float(numeric.min()) >= _EPOCH_UNITS[-1][0]


def is_row_counter(numeric: pd.Series) -> bool:
    """True for a column of strictly increasing whole numbers that mostly go up by one: a
    row index or step counter such as 0, 1, 2, 4, 5, ... (rows dropped), not readings."""
    if not _increasing_integers(numeric) or _is_epoch(numeric):
        return False
    diffs = np.diff(numeric.to_numpy(dtype=np.float64))
    return bool(np.count_nonzero(diffs == 1) * 2 > len(diffs))


def counter_steps(source: str, first: pd.Series, lines: np.ndarray) -> np.ndarray | None:
    """The grid step of each row of a row counter with numbers skipped (each skipped
    number a missing row), or None when the rows are consecutive."""
    numeric = pd.to_numeric(first.str.strip(), errors="coerce")
    if not is_row_counter(numeric):
        return None
    counts = numeric.to_numpy(dtype=np.float64).astype(np.int64)
    steps = counts - counts[0]  # [row]
    if steps[-1] + 1 == len(steps):
        return None
    if steps[-1] + 1 > max(MAX_GRID_PER_ROW * len(steps), MAX_GRID_FREE):
        k = int(np.argmax(np.diff(steps)))
        raise DatasetError(
            f"{source}: line {lines[k + 1]} counts {steps[k + 1] - steps[k]} steps after the "
            f"previous row; the {len(steps)} rows would span {steps[-1] + 1} steps, almost "
            "all missing: check that row's index, or give --no-index"
        )
    return steps


def _numeric(
    path: Path,
    cells: pd.DataFrame,
    columns: Sequence[str],
    lines: np.ndarray,
    *,
    time_hint: bool = False,
) -> np.ndarray:
    """Cells as float64 (NaN where missing or infinite); ``time_hint`` says, for a value
    that is a date, which option reads its column as the time column."""
    n_rows, n_cols = cells.shape
    text = pd.Series(cells.to_numpy(dtype=object).ravel()).str.strip()  # [row * column]
    missing = _missing(text).to_numpy()
    number = pd.to_numeric(text.where(~missing, "nan"), errors="coerce").to_numpy(
        dtype=np.float64, copy=True
    )
    bad = np.isnan(number) & ~missing
    if bad.any():
        r, c = divmod(int(np.flatnonzero(bad)[0]), n_cols)
        value = text.iloc[r * n_cols + c]
        fix = general = "use a number or leave the cell empty for missing"
        if re.fullmatch(r"[-+]?\d+(,\d+)+", value):
            fix = "a decimal comma or a thousands separator? write numbers as 50.25 or 1050"
        elif re.fullmatch(r"[-+]?\d{1,3}(\.\d{3})+,\d+", value):
            fix = "a decimal comma after thousands separators? write numbers as 1050.25"
        elif re.fullmatch(r"-+|\.+|\?+|[xX*]", value):
            fix = "if it marks a missing reading, leave the cell empty (or write NaN)"
        elif re.fullmatch(r"[-+]?\d{1,3}([ '\u00a0\u202f]\d{3})+([.,]\d+)?", value):
            fix = "a thousands separator? write numbers without it, e.g. 1200"
        elif time_hint and _CLOCK_ONLY.fullmatch(value):
            fix = (
                "a time of day in its own column: join the date and the time of day into one "
                "first column, e.g. 2024-03-01 08:00"
            )
        elif time_hint and (zone := _zone_name_fix(value)) is not None:
            fix = f"a time column? {zone}, and pass --index-col {columns[c]}"
        elif time_hint and _written_date(value):
            fix = f"a time column? pass --index-col {columns[c]}"
        if fix is general and bad.reshape(n_rows, n_cols)[:, c].all():
            fix += f"; column {columns[c]!r} holds no number in any row"
        raise DatasetError(
            f"{path}: non-numeric value {value!r} at line {lines[r]}, column {columns[c]!r}; " + fix
        )
    infinite = np.isinf(number)
    overflow = infinite & ~text.str.lower().str.lstrip("+-").isin(("inf", "infinity")).to_numpy()
    if overflow.any():
        r, c = divmod(int(np.flatnonzero(overflow)[0]), n_cols)
        raise DatasetError(
            f"{path}: value {text.iloc[r * n_cols + c]!r} at line {lines[r]}, column "
            f"{columns[c]!r} is too large to be a number"
        )
    out = number.reshape(n_rows, n_cols)  # [row, column]
    out[infinite.reshape(n_rows, n_cols)] = np.nan  # inf is not a reading either
    return out


# A time of day followed by a zone: Z, UTC/GMT or an offset such as +02, +0200, -05:30.
_UTC_PLUS = re.compile(r"\d\s*(?:UTC|GMT)\s*[+-]\s*\d", re.I)  # 08:00 UTC+1
_ZONED = re.compile(r"\d:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:[zZ]|UTC|GMT|[+-]\d{2}(?::?\d{2})?)$")


def parse_times(
    path: Path, column: pd.Series, lines: np.ndarray, name: str, *, sensor_hint: str = ""
) -> pd.DatetimeIndex:
    """Parse a timestamp column to UTC, naming the first line that does not parse, and
    refusing a column that mixes times with and without a zone (which hour the ones
    without meant is a guess). ``sensor_hint`` ends the error for numbers that are no
    times (how to read the column as a sensor)."""
    text = column.astype(str).str.strip()
    if (empty := _missing(text)).any():
        r = int(np.flatnonzero(empty)[0])
        held = f" (it holds {text.iloc[r]!r})" if text.iloc[r] else ""
        raise DatasetError(
            f"{path}: the time column {name!r} is empty at line {lines[r]}{held}; give every "
            "row its timestamp, or delete the row"
        )
    if (compact := _compact_dates(text)) is not None:
        return compact
    numeric = pd.to_numeric(text, errors="coerce")
    shaped = text.str.fullmatch(r"\d{8}|\d{12}|\d{14}")  # a compact date, out of range
    if text.size and numeric.notna().all() and not shaped.all():
        if (serial := _excel_days(name, numeric)) is not None:
            return serial
        epoch = _epoch_times(path, numeric, name, sensor_hint)
        return _check_range(path, epoch, text, lines)
    if (prefixed := text.str.contains(_UTC_PLUS)).any():  # dateutil reads GMT+1 as UTC-1
        r = int(np.flatnonzero(prefixed)[0])
        raise DatasetError(
            f"{path}: timestamp {text.iloc[r]!r} at line {lines[r]}: an offset after UTC or "
            "GMT ('GMT+1') means UTC-1 to the date parser (POSIX) but UTC+1 to most people; "
            "write the offset alone, e.g. 2024-01-01 08:00+01:00 for UTC+1"
        )
    zoned = text.str.contains(_ZONED)
    if zoned.any() and not zoned.all():
        z, n = int(np.flatnonzero(zoned)[0]), int(np.flatnonzero(~zoned)[0])
        raise DatasetError(
            f"{path}: column {name!r} mixes timestamps with a zone ({text.iloc[z]!r} at line "
            f"{lines[z]}) and without one ({text.iloc[n]!r} at line {lines[n]}); give every "
            "timestamp a zone, or none (then they are UTC)"
        )
    clock = text.str.fullmatch(_CLOCK_ONLY)
    if clock.any():  # pandas would date them today
        r = int(np.flatnonzero(clock)[0])
        raise DatasetError(
            f"{path}: timestamp {text.iloc[r]!r} at line {lines[r]} has no date; write the date "
            "too, e.g. 2012-03-01 06:00"
        )
    dotted = bool(text.size) and re.match(r"\d{1,2}\.\d{1,2}\.\d", text.iloc[0]) is not None
    parsed = _one_format(text, dayfirst=dotted)  # 01.03.2024 is 1 March
    if text.size and not dotted and not re.match(r"\d{4}", text.iloc[0]):  # 01/03/2024
        # 13/01/2024, 24-01-31 (two-digit year first): the reading whose times lie closer
        for swapped in (_one_format(text, dayfirst=True), _one_format(text, yearfirst=True)):
            if swapped is not None and (parsed is None or _span(swapped) < _span(parsed)):
                parsed = swapped
    if parsed is None:  # fall back to per-value parsing, to find the culprit
        try:
            parsed = pd.DatetimeIndex(
                pd.to_datetime(text, errors="coerce", utc=True, format="mixed", dayfirst=dotted)
            )
        except (ValueError, OverflowError) as exc:
            raise DatasetError(
                f"{path}: column {name!r} is not a timestamp column: {exc}"
            ) from None
        bad = parsed.isna()
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            fix = _zone_name_fix(text.iloc[r]) or "use ISO-8601, e.g. 2012-03-01 00:05:00"
            raise DatasetError(
                f"{path}: timestamp {text.iloc[r]!r} at line {lines[r]} does not parse; {fix}"
            )
    return _check_range(path, parsed, text, lines)


# A zone name after a time: PST, CEST, Europe/Berlin (UTC, GMT and Z parse).
_ZONE_NAME = re.compile(r"(?<=\d)\s*\(?([A-Z]{3,5}|[A-Z][A-Za-z_]+(?:/[A-Za-z0-9_+-]+)+)\)?$")


def _zone_name_fix(text: str) -> str | None:
    """For a timestamp ending in a zone name (which pandas does not read): the name as the
    cause and its UTC offset (worked out for an IANA name such as ``Europe/Berlin``) as
    the fix; None for any other timestamp."""
    if (match := _ZONE_NAME.search(text)) is None:
        return None
    zone, local = match.group(1), text[: match.start()].strip()
    try:
        stamp = pd.Timestamp(local)
    except (ValueError, TypeError, OverflowError):
        return None  # not a timestamp before the name either
    if stamp.tz is not None:
        return f"remove the zone name {zone!r} after its UTC offset"
    example = f"{local}+01:00 for UTC+1"
    try:
        stamp = stamp.tz_localize(ZoneInfo(zone), ambiguous="NaT")
        if not pd.isna(stamp):
            offset = stamp.strftime("%z")
            example = f"{local}{offset[:3]}:{offset[3:]}"
    except (ValueError, KeyError, ZoneInfoNotFoundError):  # PST, CEST: no IANA name
        pass
    return f"the zone name {zone!r} is not read; write its UTC offset instead, e.g. {example}"


# A time of day without a date: 06:00, 6:00:30.5, 6:00 pm.
_CLOCK_ONLY = re.compile(r"\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?\s*([aApP][mM])?")

# Compact dates by their number of digits.
_COMPACT = {8: "%Y%m%d", 10: "%Y%m%d%H", 12: "%Y%m%d%H%M", 14: "%Y%m%d%H%M%S"}


def _compact_dates(column: pd.Series) -> pd.DatetimeIndex | None:
    """``column`` read as compact dates (``20240301``, ``2024030108``...: one width of
    :data:`_COMPACT`, each a valid date within the wire's years), else None. Ten digits
    count only when, read as Unix seconds, they would lie in the future."""
    text = column.astype(str).str.strip()
    width = len(text.iloc[0]) if text.size else 0
    if width not in _COMPACT or not text.str.fullmatch(rf"\d{{{width}}}").all():
        return None
    parsed = pd.DatetimeIndex(
        pd.to_datetime(text, format=_COMPACT[width], errors="coerce", utc=True)
    )
    if parsed.isna().any() or parsed.min() < TS_MIN or parsed.max() >= TS_MAX:
        return None
    if width == 10 and text.astype(np.int64).min() < time.time():
        return None  # Unix seconds: 1712010100 is 2024-04-01, not 1712-01-01 00h
    return parsed.as_unit("ns")


# Spreadsheet serial days (1900 system: day 1 is 1900-01-01, counted from 1899-12-30 past
# Lotus's leap day) from 1970 to 2099, under a date-like column name.
_EXCEL_ORIGIN = pd.Timestamp("1899-12-30", tz="UTC")
_EXCEL_DAYS = (25_569.0, 73_051.0)
_DATE_WORDS = re.compile(r"date|day|time|datum|fecha|jour|tag", re.IGNORECASE)


def _excel_days(name: str, numeric: pd.Series) -> pd.DatetimeIndex | None:
    """A date-like column (:data:`_DATE_WORDS`) of numbers within :data:`_EXCEL_DAYS`
    (``45352`` is 2024-03-01, ``45352.25`` six hours later), read as a spreadsheet's
    serial days, else None."""
    values = numeric.to_numpy(dtype=np.float64)
    low, high = _EXCEL_DAYS
    if not (len(values) and _DATE_WORDS.search(name) and np.all((values >= low) & (values < high))):
        return None
    seconds = pd.to_timedelta(np.round(values * 86_400.0), unit="s")  # 1/1440 is inexact
    return pd.DatetimeIndex(_EXCEL_ORIGIN + seconds).as_unit("ns")


# Unix times by magnitude: seconds, milliseconds, microseconds, nanoseconds since 1970,
# each from 1973 (1e8 s) on; smaller numbers are not taken for times.
_EPOCH_UNITS = ((1e17, "ns"), (1e14, "us"), (1e11, "ms"), (1e8, "s"))


def _epoch_times(path: Path, numeric: pd.Series, name: str, hint: str) -> pd.DatetimeIndex:
    """A time column of numbers read as Unix times, the unit told by their size; ``hint``
    ends the error when the numbers look like readings (not whole, or not in order)."""
    smallest, biggest = float(numeric.min()), float(numeric.max())
    for size, unit in _EPOCH_UNITS:
        if size <= smallest and biggest < size * 1e3:
            try:
                return pd.DatetimeIndex(pd.to_datetime(numeric, unit=unit, utc=True))
            except (ValueError, OverflowError):
                break  # beyond what nanosecond times hold
    raise DatasetError(
        f"{path}: column {name!r} holds numbers ({numeric.iloc[0]:g}, ...) that are not Unix "
        "times of one unit (seconds, ms, us or ns since 1970, from 1973 on); write ISO-8601 "
        f"timestamps such as 2012-03-01 00:05:00{'' if _ordered_whole(numeric) else hint}"
    )


def _check_range(
    path: Path, parsed: pd.DatetimeIndex, text: pd.Series, lines: np.ndarray
) -> pd.DatetimeIndex:
    outside = (parsed < pd.Timestamp(TS_MIN)) | (parsed >= pd.Timestamp(TS_MAX))
    if outside.any():
        r = int(np.flatnonzero(outside)[0])
        raise DatasetError(
            f"{path}: timestamp {text.iloc[r]!r} at line {lines[r]} is outside the years "
            f"{TS_MIN.year}-{TS_MAX.year - 1} that roadcast's readings and forecasts can carry"
        )
    return parsed.as_unit("ns")


def _one_format(
    text: pd.Series, *, dayfirst: bool = False, yearfirst: bool = False
) -> pd.DatetimeIndex | None:
    """``text`` parsed with the one format pandas infers from its first value, or None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "could not infer format"
            return pd.DatetimeIndex(
                pd.to_datetime(text, utc=True, dayfirst=dayfirst, yearfirst=yearfirst)
            )
    except (ValueError, OverflowError):
        return None


def _span(times: pd.DatetimeIndex) -> pd.Timedelta:
    return times.max() - times.min()


def to_regular_grid(
    times: pd.DatetimeIndex,
    values: np.ndarray,
    *,
    source: str,
    lines: np.ndarray | None = None,
    irregular: Literal["error", "resample"] = "error",
) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """Place rows stamped ``times`` (UTC) on a regular grid; see the module doc for rules.

    Parameters
    ----------
    times : one timestamp per row of ``values`` (any order).
    values : float ``[row, node]``; NaN where missing.
    source : what to name in errors (a path).
    lines : file line of each row, for errors.
    irregular : "error" rejects irregular spacing; "resample" averages into cells.

    Returns
    -------
    grid : DatetimeIndex (UTC) with a ``freq``.
    values : float64 ``[grid, node]``, NaN where no reading.
    """
    lines = np.arange(2, len(times) + 2) if lines is None else lines
    times = pd.DatetimeIndex(times).as_unit("ns")
    order = np.argsort(times.asi8, kind="stable")
    t = times.asi8[order]
    values, lines = values[order], lines[order]
    if len(t) == 1:
        return pd.DatetimeIndex(times[:1]).as_unit("ns"), values.copy()
    diffs = np.diff(t)
    positive = np.sort(diffs[diffs > 0])
    step = int(positive[(positive.size - 1) // 2]) if positive.size else 0  # lower median
    same = diffs == 0
    if same.any() and irregular == "error":
        k = int(np.flatnonzero(same)[0])
        hour = bool(step) and abs(int(lines[k + 1]) - int(lines[k])) * step == 3_600_000_000_000
        hint = (
            " (an hour of rows apart: local times repeating an hour when daylight saving "
            "ends? give them their UTC offset, e.g. 2024-11-03T01:00:00-07:00)"
            if hour
            else ""
        )
        raise DatasetError(
            f"{source}: duplicate timestamp {pd.Timestamp(t[k], tz='UTC')} at lines "
            f"{lines[k]} and {lines[k + 1]}{hint}; keep one reading per time"
        )
    if not positive.size:
        raise DatasetError(f"{source}: all rows have the same timestamp")
    if irregular == "error":
        off = diffs % step != 0
        if off.any():
            k = int(np.flatnonzero(off)[0])
            raise DatasetError(
                f"{source}: irregular timestamps: line {lines[k + 1]} is "
                f"{_duration(int(diffs[k]))} after the previous row, not a multiple of the "
                f"step {_duration(step)}; resample to a regular grid first"
            )
        origin = t[0]
    else:
        freq = pd.tseries.frequencies.to_offset(pd.Timedelta(step, unit="ns"))
        origin = pd.Timestamp(t[0], tz="UTC").floor(freq).value
    cell = (t - origin) // step  # [row]
    n_cells = int(cell[-1]) + 1
    if n_cells > max(MAX_GRID_PER_ROW * len(t), MAX_GRID_FREE):
        k = int(np.argmax(diffs))
        raise DatasetError(
            f"{source}: line {lines[k + 1]} is {_duration(int(diffs[k]))} after the previous "
            f"row; on a grid of {_duration(step)} the {len(t)} rows would span {n_cells} "
            "steps, almost all missing: check that timestamp, or split the file at the gap"
        )
    grid = pd.date_range(
        pd.Timestamp(origin, tz="UTC"), periods=n_cells, freq=pd.Timedelta(step, unit="ns")
    )
    total = np.zeros((n_cells, values.shape[1]))  # [grid, node]
    count = np.zeros((n_cells, values.shape[1]))
    seen = np.isfinite(values)
    np.add.at(total, cell, np.where(seen, values, 0.0))
    np.add.at(count, cell, seen)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return grid, out


_UNITS_NS = ((86_400_000_000_000, "d"), (3_600_000_000_000, "h"), (60_000_000_000, "min"))


def _duration(ns: int) -> str:
    """A positive duration in nanoseconds as ``7min``, ``1h30min`` or ``2.5s``."""
    parts = []
    for size, unit in _UNITS_NS:
        count, ns = divmod(ns, size)
        if count:
            parts.append(f"{count}{unit}")
    if ns or not parts:
        parts.append(f"{ns / 1e9:g}s")
    return "".join(parts)


def read_wide_csv(
    path: Path,
    *,
    start: pd.Timestamp | str = DEFAULT_START,
    freq: pd.Timedelta | str = DEFAULT_FREQ,
    irregular: Literal["error", "resample"] = "error",
    has_time: bool | None = None,
    index_col: str | None = None,
    no_index: bool = False,
) -> tuple[pd.DatetimeIndex, np.ndarray, tuple[str, ...]]:
    """Read a wide CSV (optional time column, one column per sensor) onto a regular grid.

    Returns ``(timestamps, values [time, sensor] float64 with NaN, sensor ids)``.
    Without a time column, row k is at ``start + k * freq``. ``index_col`` names the time
    or index column; ``no_index`` reads every column as a sensor.
    """
    if index_col is not None and no_index:
        raise DatasetError("--index-col and --no-index contradict each other; give one")
    where = None if index_col is not None or no_index else _long_columns(_first_row(path))
    if where is not None:  # long format (is_long_csv)
        header, lines = _scan(path)
        if not lines.size:
            raise DatasetError(f"{path}: the header has no data rows under it")
        times, wide, ids, first = _long_table(path, header, lines, where)
        _check_float32(path, wide, first, (header[where[2]].strip(),) * len(ids))
        grid, values = to_regular_grid(
            times, wide, source=str(path), lines=first, irregular=irregular
        )
        return grid, values, ids
    try:
        table = read_table(path, drop_first=False if no_index else has_time, index_col=index_col)
    except DatasetError as exc:
        raise DatasetError(f"{exc}{_long_hint(_first_row(path), str(exc))}") from None
    _check_float32(path, table.values, table.lines, table.columns)
    name = table.first_name or ""
    if table.first is not None and _is_time_column(table.first, name):
        guessed = index_col is None and has_time is None  # no option chose this column
        sensor = f"; if {name!r} is a sensor, pass --no-index" if guessed else ""
        times = parse_times(path, table.first, table.lines, name, sensor_hint=sensor)
        try:
            grid, values = to_regular_grid(
                times, table.values, source=str(path), lines=table.lines, irregular=irregular
            )
        except DatasetError as exc:  # several sensors' rows at one time: long format?
            raise DatasetError(f"{exc}{_long_hint(_first_row(path), str(exc))}") from None
        return grid, values, table.columns
    t0 = pd.Timestamp(start)
    t0 = t0.tz_localize("UTC") if t0.tz is None else t0.tz_convert("UTC")
    values = table.values
    steps = None if table.first is None else counter_steps(str(path), table.first, table.lines)
    if steps is not None:
        values = np.full((int(steps[-1]) + 1, values.shape[1]), np.nan)  # [grid, sensor]
        values[steps] = table.values
    grid = pd.date_range(t0, periods=len(values), freq=pd.Timedelta(freq))
    return grid, values, table.columns


def is_long_csv(path: Path, *, index_col: str | None = None, no_index: bool = False) -> bool:
    """True when :func:`read_wide_csv` reads ``path`` as long format (one reading per row),
    its sensors in order of first appearance."""
    return index_col is None and not no_index and _long_columns(_first_row(path)) is not None


def _long_hint(header: Sequence[str], error: str) -> str:
    """For a file that looks long-format but whose sensor column has another name."""
    names = [h.strip().lower() for h in header]
    cause = "holds no number in any row" in error or "duplicate timestamp" in error
    explained = any(why in error for why in ("time of day", "thousands", "decimal comma"))
    if not cause or explained or not 3 <= len(names) <= 4:
        return ""
    if not set(names) & TIME_NAMES:
        return ""
    return (
        ". One reading per row (time, sensor, value)? Name the sensor column one of "
        f"{', '.join(sorted(SENSOR_NAMES))} and keep only those three columns"
    )


def _check_float32(
    path: Path, values: np.ndarray, lines: np.ndarray, columns: Sequence[str]
) -> None:
    huge = np.abs(values) > np.finfo(np.float32).max  # NaN compares False
    if huge.any():
        r, c = np.argwhere(huge)[0]
        raise DatasetError(
            f"{path}: value {values[r, c]:g} at line {lines[r]}, column "
            f"{columns[c]!r} is beyond the 32-bit range readings are kept in (3.4e38)"
        )


def _is_time_column(first: pd.Series, name: str) -> bool:
    """True when a dropped first column ``name`` holds times rather than a row index."""
    name = name.lower()
    if name in TIME_NAMES:
        return True
    numeric = pd.to_numeric(first.str.strip(), errors="coerce")
    return (
        bool(numeric.isna().any())
        or _is_epoch(numeric)
        or _compact_dates(first) is not None
        or _excel_days(name, numeric) is not None
    )


def read_adjacency_csv(
    path: Path,
    sensor_ids: Sequence[str],
    *,
    coords: np.ndarray | None = None,
    unordered: str | None = None,
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
    column whose name ends in a unit (``km``,
    ``m``, ``mi``...) holds road lengths in that unit; one named like a length without a
    unit (``distance``, ``cost``) is refused.

    A file with 2-4 columns is read as an edge list when its first line is a
    ``src,dst`` header (``source``/``from`` also work) or when every entry of its first
    two columns is a sensor id; otherwise, when its shape fits, as a matrix. A header
    line removes any doubt; an ``N x N`` file of ``N`` sensor ids without one (sensors
    named ``0 .. N-1``, N <= 4) is refused as ambiguous. Weights and lengths must be
    finite and >= 0; an adjacency without a link between two sensors, a link listed
    twice, or matrix row labels in another order than its header are rejected. Weights
    are kept as float32: one beyond its range (``1e308``) is rejected naming its line and
    column, and one that becomes 0 in it (below 1.4e-45, e.g. ``1e-300``) is no link, as
    0 is. ``unordered`` says why ``sensor_ids`` are in no order a user would write a matrix
    in (a long-format file's order of first appearance): a matrix must then name them.
    """
    if path.stat().st_size == 0:
        raise DatasetError(f"{path}: the adjacency file is empty")
    comments = _comment_lines(path, sensor_ids)
    # ragged rows: pandas would pad them silently
    _, data_lines = _scan(path, first="line 1", comments=comments)
    try:
        raw = pd.read_csv(
            _csv_source(path, comments),
            header=None,
            dtype=str,
            keep_default_na=False,
            skipinitialspace=True,
            skiprows=_preamble(path),
        )
    except pd.errors.ParserError as exc:
        raise DatasetError(f"{path}: ragged adjacency CSV: {_parser_detail(exc)}") from None
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{path}: the adjacency file is empty") from None
    raw = _cut_empty_tail(raw, len(data_lines) + 1).apply(lambda col: col.str.strip())
    while raw.shape[1] > 2 and not _filled(raw.iloc[:, -1]).any():
        raw = raw.iloc[:, :-1]  # a separator ending every line
    n = len(sensor_ids)
    rows, cols = raw.shape
    head = next((k for k, _ in _numbered_rows(path, 1)), 1)
    lines = np.concatenate([[head], data_lines]) if len(data_lines) + 1 == rows else None
    lines = np.arange(1, rows + 1) if lines is None else lines  # [row] of raw: file lines
    ids = [str(s) for s in sensor_ids]
    known = set(ids)
    edge_shaped = 2 <= cols <= 4
    named = raw.iloc[0, 0].lower() in SRC_NAMES
    ends = raw.iloc[:, :2].isin(known).to_numpy() if edge_shaped else np.zeros(1, dtype=bool)
    graph = None
    id_header = rows == n + 1 and cols == n and sorted(raw.iloc[0]) == sorted(ids)
    headed = cols in (n, n + 1) and _names_sensors(list(raw.iloc[0, cols - n :]), ids)
    if edge_shaped and not named and ends.all() and rows == cols == n and _square_of_numbers(raw):
        raise DatasetError(
            f"{path}: {n} rows of {n} sensor ids read as well as an {n} x {n} matrix as an edge "
            "list src,dst[,weight]; add a header line: the sensor ids for a matrix, or "
            "src,dst,weight for an edge list"
        )
    try:
        if edge_shaped and (named or (ends.all() and not id_header)):
            graph = _edge_list(path, raw, ids, coords, lines)
        elif headed or (cols == n and rows in (n, n + 1)) or (cols == n + 1 and rows == n + 1):
            if unordered is not None and not headed and len(raw) == len(ids):
                raise DatasetError(
                    f"{path}: a matrix without a header row, for sensors {unordered}; "
                    "give the matrix a first line of sensor ids, or use an edge list "
                    "src,dst[,weight]"
                )
            graph = _matrix(path, raw, ids, coords, lines, headed=headed)
        elif (header := _matrix_header(raw, known)) is not None:
            _check_header(path, header, ids, int(lines[0]))
        elif ends.any():
            graph = _edge_list(path, raw, ids, coords, lines)
    except GraphError as exc:
        raise DatasetError(f"{path}: {exc}") from None
    if graph is not None:
        if not np.count_nonzero(graph.edge_weight):
            raise DatasetError(
                f"{path}: the adjacency has no link between two different sensors (every "
                "entry is zero or a self-loop); fix it or leave out --adjacency"
            )
        return graph
    numbers = _square_of_numbers(raw)
    raise DatasetError(
        f"{path}: {'' if numbers else 'not an adjacency: '}expected a {n} x {n} matrix (one "
        f"row and column per sensor) or an edge list src,dst[,weight]; got "
        f"{_count(rows, 'row')} x {_count(cols, 'column')}"
        + (_size_hint(n, rows, cols, ids) if numbers else "")
    )


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
            f". The data has one column more than the adjacency: its first column "
            f"({ids[0]!r}) is probably a row index or time column read as a sensor; pass "
            f"--index-col {ids[0]}"
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
) -> RoadGraph:
    """The graph of an adjacency matrix ``raw``, with a header row when ``headed`` or one
    row more than sensors; ``lines`` are the file lines of its rows."""
    n = len(ids)
    body, order = raw, None
    if len(raw) == n + 1 or headed:
        header = list(raw.iloc[0])
        if raw.shape[1] == n + 1:
            header, body = header[1:], raw.iloc[1:, 1:]
        else:
            body = raw.iloc[1:]
        if not set(header) & set(ids) and pd.to_numeric(pd.Series(header), "coerce").notna().all():
            twins = [t for h in header if (t := _twin(h, ids)) is not None]
            if sorted(twins) == sorted(ids):  # 7.0, 8.0 for the data's 7, 8
                _check_header(path, header, ids, int(lines[0]))
            raise DatasetError(
                f"{path}: a {len(raw)} x {raw.shape[1]} matrix of numbers for {n} sensors: one "
                "sensor more than the data (was the data's first column taken for a row "
                "index? pass --no-index), or give the matrix a header of sensor ids"
            )
        twice = sorted({s for s in header if header.count(s) > 1})
        if twice:
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
    names = [str(k + offset + 1) for k in range(n)]
    matrix = _weights(path, body, names, lines[len(raw) - len(body) :], "adjacency entry")
    matrix[matrix.astype(np.float32) == 0] = 0.0  # 1e-300 is 0 as kept: no link
    if order is not None:
        matrix = matrix[np.ix_(order, order)]
    return RoadGraph.from_adjacency(matrix.T, coords=coords)  # a row lists its links out


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
        twins = {h: t for h in header if h not in set(ids) and (t := _twin(h, absent))}
        if twins:
            raise DatasetError(
                f"{path}: line {line} (the matrix header) {_written_otherwise(twins)}"
            )
        unknown = sorted(set(header) - set(ids))[:5]
        absent = absent[:5]
        raise DatasetError(
            f"{path}: the matrix header does not list the data's sensors (unknown: "
            f"{unknown}; in the data but not the adjacency: {absent}); use the same ids "
            "as the data columns"
        )


def _twin(name: str, ids: Sequence[str]) -> str | None:
    """The one id of ``ids`` that ``name`` (an adjacency's id, not one of them) writes
    otherwise: in another Unicode form (``é`` composed or decomposed), or as the same
    number (``7.0`` for ``7``); None when there is none or more than one."""
    same = [s for s in ids if _nfc(s) == _nfc(name)]
    if not same and (number := _number(name)) is not None:
        same = [s for s in ids if _number(s) == number]
    return same[0] if len(same) == 1 else None


def _number(text: str) -> float | None:
    """``text`` as a number when it is written as one (``7``, ``7.0``, ``7e0``)."""
    return float(text) if re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text) else None


def _form(text: str) -> str:
    """The Unicode normalisation form ``text`` is written in."""
    forms = [f for f in ("NFC", "NFD") if unicodedata.is_normalized(f, text)]
    return forms[0] if forms else "neither NFC nor NFD"


def _written_otherwise(twins: dict[str, str]) -> str:
    """What is wrong with adjacency ids that write the data's ``twins`` otherwise (see
    :func:`_twin`), and the fix."""
    pairs = list(twins.items())[:3]
    name, twin = pairs[0]
    if _nfc(name) == _nfc(twin):
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
    values = _numeric(path, cells, names, lines) * scale
    bad = ~(values >= 0) | (values > np.finfo(np.float32).max)  # NaN, negative, too large
    if bad.any():
        r, c = np.argwhere(bad)[0]
        text = str(cells.iloc[r, c])
        why = "is missing" if text.lower() in MISSING_TOKENS else "is not a finite number >= 0"
        if values[r, c] > 0:
            why = "is beyond the 32-bit range graphs are kept in (3.4e38)"
        raise DatasetError(f"{path}: {what} {text!r} at line {lines[r]}, column {names[c]!r} {why}")
    return values


def _edge_list(
    path: Path, raw: pd.DataFrame, ids: list[str], coords: np.ndarray | None, lines: np.ndarray
) -> RoadGraph:
    """The graph of an edge list ``raw`` whose rows are at file ``lines``."""
    names = ["src", "dst", "weight", "distance_km"][: raw.shape[1]]
    body = raw
    if raw.iloc[0, 0].lower() in SRC_NAMES:
        names = [c.lower() for c in raw.iloc[0]]
        if len(raw) == 1:
            raise DatasetError(
                f"{path}: the edge list lists no links: line {lines[0]} is its header "
                f"({','.join(raw.iloc[0])}) with no link under it; add one link per line, "
                "src,dst[,weight], or leave out --adjacency"
            )
        body, lines = raw.iloc[1:], lines[1:]
    position = {s: k for k, s in enumerate(ids)}
    ends = []
    for k in (0, 1):
        col = body.iloc[:, k]
        idx = col.map(position)
        if idx.isna().any():
            r = int(np.flatnonzero(idx.isna().to_numpy())[0])
            header = (
                " (a header? name its columns from,to[,weight])" if r == 0 and body is raw else ""
            )
            if (twin := _twin(col.iloc[r], ids)) is not None:
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
    return RoadGraph.from_edges(
        ends[0],
        ends[1],
        num_nodes=len(ids),
        coords=coords,
        weight=extra.get("weight"),
        distance_km=extra.get("distance_km"),
    )


# Road-length columns of an edge list: the unit, from the name's ending, in km.
_UNITS = {"km": 1.0, "kilometers": 1.0, "kilometres": 1.0, "m": 1e-3, "meters": 1e-3,
          "metres": 1e-3, "mi": 1.609344, "miles": 1.609344}  # fmt: skip
_UNIT = re.compile(r"(?:^|[^a-z])(" + "|".join(_UNITS) + r")\)?$")
_LENGTH_WORDS = ("dist", "length", "cost")


def _km_per_unit(path: Path, name: str) -> float | None:
    """Kilometres per unit of an edge-list column that holds road lengths, from its
    name (``distance_km``, ``length (m)``, ``miles``...); None for a weight column."""
    lowered = name.strip().lower()
    if (unit := _UNIT.search(lowered)) is not None:
        return _UNITS[unit.group(1)]
    if any(word in lowered for word in _LENGTH_WORDS):
        raise DatasetError(
            f"{path}: column {name!r} looks like road lengths without a unit (METR-LA's "
            "and PEMS-BAY's 'cost' is in metres); rename it distance_m, distance_km or "
            "distance_mi, or weight if larger means a stronger link"
        )
    return None


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
    _scan(path, first="line 1")  # ragged rows, not UTF-8 text
    rows = _numbered_rows(path)
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


def _parser_detail(exc: Exception) -> str:
    match = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
    if match:
        want, line, got = match.groups()
        return f"line {line} has {got} fields, expected {want}"
    return str(exc).strip()
