"""Readers that turn a sensor CSV (wide or long format) into readings on a regular time grid,
with errors that name the line and column to fix. A wide file is read a block of rows at a
time (:data:`~pipeline.data.timestamps.BLOCK_CELLS` cells): what is held is its float
array and one block's text, never every cell as a string, so a file of GBs loads in about
its array's memory.
Everything here raises :class:`~pipeline.data.cells.DatasetError`. Parsing timestamps and
the grid are :mod:`pipeline.data.timestamps`'s job, adjacency and coordinates files
:mod:`pipeline.data.graph_csv`'s; each module lists its rules.

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
  column; so is a file separated by ``;``, tab or ``|`` instead of commas, and a line of
  units under the header is named as such. A file whose first bytes are no UTF-8 text
  (NUL bytes, a zip archive, binary) is refused before it is read by lines; a
  gzip-compressed file is read unpacked (:mod:`pipeline.data.text_file`). A non-numeric
  cell is hinted to be a time column (``--index-col``) only when it is a date as people
  write one (ASCII, with ``-``, ``/``, ``:`` or ``.`` between digits, or a month's name).
* **Timestamps** (parsed and put on a grid by :mod:`pipeline.data.timestamps`): A first
  column of compact dates is the time column whatever its name, never a row counter. A
  first column of dates (``2024-03-01``) followed by one of times of day (``08:00``) or
  of whole hours (``hour``: 0-23, or 1-24 hour ending, read as the hour's start) is read
  as one timestamp.
* **Long format**: a header of three columns naming the time (see ``TIME_NAMES``), the
  sensor (``SENSOR_NAMES``: ``sensor``, ``sensor_id``, ``station``, ``node``, ...) and
  the value, in any order (optionally after a row-index column under a counter's name,
  ``COUNTER_NAMES``), holds one reading per
  row: rows in any order, a sensor absent at a time is missing, and two readings of one
  sensor at one time are rejected, naming both lines. Sensors are in order of first
  appearance. Sensors that each report on one step but at different times (one at :00,
  another at :02) are refused, saying how to align them: together they would fall on a
  grid of a fraction of that step, on which every sensor is mostly missing.
  ``index_col`` / ``no_index`` read the file as wide.
* **No header**: a first line of numbers mostly written as decimals (``59.127``,
  ``6.2e+01``: ``np.savetxt``'s files, STGCN's ``V_228.csv``), or with one repeated, is
  a row of readings: every line is read, the sensors are named by position
  (``0`` to ``N-1``, the order a matrix without a header is read in) and the panel's
  notes say so. Whole numbers written once each (``773869``, ``0,1,2``) are sensor ids.
  A first line of a timestamp then numbers is refused (add a header). ``csv:PATH,
  header=none`` (or ``header=first``) says which it is instead of these rules.
* **No timestamp column**: a first column of strictly increasing whole numbers that mostly
  go up by one, or by one constant step (from ``MIN_INDEX_ROWS`` rows on), is a row index
  whatever its name (``step``, ``idx``, ``""``..., unless the name is a number, which is a
  sensor id) and dropped, as is a first column named ``""``/``index`` holding whole
  numbers (decimals there are readings of a sensor of that name); from 1e8 on they are
  Unix times. Row k is then placed on ``start + k * freq`` (a note says so, and names the
  column dropped unless its name is a counter's), except that numbers a counter that
  mostly goes up by one skips (rows dropped) become missing rows. A row of empty cells
  (``,,``) between rows does not stop a counter being one, and is not read: the counter
  places every row (it would otherwise move each later row one step on). A row counter
  beside the time column is dropped, also with ``index_col``: before it, an unnamed one
  (``DataFrame.to_csv()``'s index), or whole numbers going up by exactly one every row
  (``MIN_INDEX_ROWS`` or more) from 0 or 1 under any name that is no number, or from any
  number under a counter's name; after it, where the sensors are, only such numbers under
  a counter's name (a logger's ``RECORD``: Campbell Scientific's ``TIMESTAMP,RECORD,...``).
  A note names one dropped after the time column, or under a name that is no counter's.
  A first column that is almost a row counter is refused, naming the line of its first
  flaw (a number repeated, a fall, an empty cell; or counting down), never read as a
  sensor: whole
  numbers of which more than half the steps are +1 (or -1) under a counter's name
  (``COUNTER_NAMES``: ``step``, ``idx``, ``row``, ``t``...), or 90 % (``NEAR_COUNTER``)
  under any name; so is one of spreadsheet serial days (strictly increasing, not all
  whole, a whole number of seconds apart) under a name without ``date``/``day``/``time``.
  Readings that are whole numbers (counts) are none of these. ``index_col=NAME`` names the
  time or index column (any position; it must hold times, increasing whole numbers, or
  numbers that are times by their size: serial days or Unix times; a near row counter's
  flaw is named); ``no_index=True`` reads every column as a sensor. Errors that may come
  of a sensor taken for that column (a file of one column, a first sensor named ``time``)
  say so and name ``--no-index``.
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
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
import unicodedata
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from models.bundle import duration_text
from pipeline.data.cells import DatasetError, filled, missing
from pipeline.data.text_file import check_text, is_gzip, not_text, open_text
from pipeline.data.timestamps import (
    CLOCK_ONLY,
    block_rows,
    compact_dates,
    counter_steps,
    excel_days,
    grid_step,
    increasing_integers,
    is_epoch,
    is_row_counter,
    parse_times,
    times_by_size,
    to_regular_grid,
    whole,
    zone_name_fix,
)
from pipeline.kafka.schema import sensor_id_problem

# A line that starts with "#" is a comment unless it starts with a spreadsheet's error
# value, which is a cell of a row (#N/A is a missing reading, #DIV/0! a bad one).
_COMMENT = re.compile(r"\s*#(?!N/A|NA\b|VALUE!|DIV/0!|REF!|NAME\?|NUM!|NULL!)", re.I)
TIME_NAMES = frozenset(
    {"timestamp", "time", "datetime", "date", "ts", "date_time", "epoch", "unix_time"}
)
INDEX_NAMES = frozenset({"", "index", "unnamed: 0"})
# Names of a row counter: a first column under one of them that mostly counts by one but
# repeats, falls or has an empty cell is refused, not read as a sensor.
COUNTER_NAMES = INDEX_NAMES | frozenset(
    {"step", "steps", "idx", "row", "rows", "row_id", "rownum", "row_number", "n", "no",
     "nr", "num", "i", "k", "t", "tick", "seq", "sequence", "sample", "record", "counter"}
)  # fmt: skip
# A second column of whole hours under one of these names completes a date column.
HOUR_NAMES = frozenset(
    {"hour", "hours", "hr", "hod", "hour_of_day", "hour of day", "he", "hour ending",
     "hour_ending", "stunde", "heure", "hora", "ora", "uur"}
)  # fmt: skip
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
# Rows from which a first column of whole numbers rising by one constant step other than
# one is an index rather than readings that happen to rise.
MIN_INDEX_ROWS = 8
# The share of steps of +1 (or -1) from which whole numbers under any name are a row
# counter, refused when it has a flaw (a repeat, a fall, an empty cell).
NEAR_COUNTER = 0.9


class Table:
    """A validated wide table: numeric values with the file lines they came from."""

    def __init__(
        self,
        columns: tuple[str, ...],
        values: np.ndarray,
        lines: np.ndarray,
        first: pd.Series | None,
        first_name: str | None,
        notes: tuple[str, ...] = (),
        named_times: bool = False,
    ) -> None:
        self.columns = columns  # sensor columns
        self.values = values  # float64 [row, column], NaN where missing
        self.lines = lines  # int64 [row] line number of each row in the file
        self.first = first  # the first column (raw strings) when it is not a sensor
        self.first_name = first_name
        self.notes = notes  # what the file left to an assumption
        self.named_times = named_times  # ``first``: numbers that index_col names as times


def require_file(path: Path, hint: str) -> Path:
    """Return ``path`` when it is a file, else raise naming it and how to get it."""
    if path.is_dir():
        raise DatasetError(f"{path} is a folder, not a file: {hint}")
    if path.exists() and not path.is_file():
        raise DatasetError(f"{path} is not a regular file (a device or a pipe): {hint}")
    if not path.is_file():
        if path.is_symlink():  # a loop, or a link to nothing
            try:
                path.stat()
            except OSError as exc:
                raise DatasetError(
                    f"{path} is a symbolic link that leads to no file ({exc.strerror}): {hint}"
                ) from None
        raise DatasetError(f"missing file {path}: {hint}")
    return path


def read_table(
    path: Path,
    *,
    drop_first: bool | None = None,
    index_col: str | None = None,
    has_header: bool | None = None,
) -> Table:
    """Read a wide CSV with one header line into a :class:`Table`.

    ``drop_first`` says whether the first column is a time or index column (True), a
    sensor (False) or to decide by its name and content (None, see the module doc);
    ``index_col`` names that column wherever it is (it is then moved first and dropped);
    ``has_header`` whether the first line is a header (None: decide by its content).
    """
    comments = comment_lines(path)
    header, lines = scan(path, comments=comments)
    headerless = _headerless(header) if has_header is None else not has_header
    if not lines.size and not headerless:
        raise DatasetError(f"{path}: the header has no data rows under it")
    if has_header is None and _is_data_row(header):
        raise DatasetError(_no_header(path, header))
    top = [h.strip() for h in header] if headerless else None
    if headerless:  # the first line is a row: sensors are named by position below
        line = next((k for k, _ in numbered_rows(path, 1)), 1)
        lines = np.concatenate([[line], lines]).astype(np.int64)
        header = [f"column {k + 1}" for k in range(len(header))]
    names = [h.strip() for h in header]
    wanted = None if index_col is None else index_col.strip()
    given = names.index(wanted) if wanted in names else 0
    # Read as text the columns that may hold times or a row index (or count the rows
    # beside the time column), the rest as numbers.
    as_text = {0, 1, 2, max(given - 1, 0), given, given + 1}
    cells = _wide_cells(path, len(header), lines, comments, as_text, top)
    text = dict(cells.text)  # position in the file -> cells as text
    cols = list(range(len(header)))  # the table's columns, by position in the file
    while len(header) > 1 and not header[-1].strip() and not cells.column_filled[cols[-1]]:
        header, cols = header[:-1], cols[:-1]  # a separator ending every line
    # Row counters dropped beside the times: (name, cells, after the time column).
    counters: list[tuple[str, pd.Series, bool]] = []
    if (
        drop_first is None
        and top is None
        and _row_index_before_time(header, [text[k] for k in cols[:2]], index_col)
    ):
        counters.append((header[0].strip(), text[cols[0]], False))
        header, cols = header[1:], cols[1:]  # a row index (pandas' to_csv()), then times
    if drop_first is not False and _date_and_clock(header, [text[k] for k in cols[:2]], index_col):
        header, text[cols[0]] = _join_date_and_clock(header, text[cols[0]], text[cols[1]])
        cols = [cols[0], *cols[2:]]
        index_col, drop_first = None, True
    filled_rows = cells.row_filled.copy()
    for k in cols:
        if k in text:
            filled_rows |= filled(text[k]).to_numpy(dtype=bool)
    empty = ~filled_rows  # [row]: rows of empty cells
    named_times = False  # index_col names numbers that are times by their size
    if index_col is not None:
        names = [h.strip() for h in header]
        if index_col.strip() not in names:
            shown = ", ".join(repr(n) for n in names[:6]) + (", ..." if len(names) > 6 else "")
            raise DatasetError(
                f"{path}: --index-col {index_col!r} is not a column of the header ({shown})"
            )
        k = names.index(index_col.strip())
        column = text[cols[k]]
        numeric = pd.to_numeric(column[~empty].str.strip(), errors="coerce")
        named_times = not increasing_integers(numeric) and times_by_size(numeric)
        if not (
            names[k].lower() in TIME_NAMES
            or increasing_integers(numeric)
            or named_times
            or _all_dates(column)
        ):
            shown = ", ".join(column.iloc[:3].str.strip())
            value, line = column[~empty].iloc[0].strip(), lines[~empty][0]
            if (zone := zone_name_fix(value)) is not None:
                raise DatasetError(
                    f"{path}: timestamp {value!r} at line {line} (--index-col {index_col!r}) "
                    f"does not parse; {zone}"
                )
            near = _counts_by_one(column[~empty], share=NEAR_COUNTER)
            if near and (flaw := _counter_flaw(column[~empty], lines[~empty])):
                raise DatasetError(
                    f"{path}: --index-col {index_col!r} is no row counter: it {flaw}; number "
                    "the rows once each, in order (0, 1, 2, ...), or name the time column"
                )
            raise DatasetError(
                f"{path}: --index-col {index_col!r} holds readings ({shown}, ...), not "
                "timestamps or a row index; name the time or row-number column"
            )
        beside: set[int] = set()
        if named_times or _is_time_column(column[~empty], names[k]):
            beside = {
                j
                for j in (k - 1, k + 1)
                if 0 <= j < len(header)
                and cols[j] in text
                and _counts_rows(names[j], text[cols[j]][~empty], after=j > k)
            }
        counters += [(names[j], text[cols[j]], j > k) for j in sorted(beside)]
        order = [k, *(j for j in range(len(header)) if j != k and j not in beside)]
        header, cols = [header[j] for j in order], [cols[j] for j in order]
        drop_first = True
    first_name = header[0].strip()
    first_column = text[cols[0]]
    if drop_first is None:
        drop_first = _is_time_or_index(first_name, first_column[~empty])
        if not drop_first and top is None:
            _refuse_near_index(path, first_name, first_column[~empty], lines[~empty])
    if (
        index_col is None
        and drop_first
        and top is None
        and len(header) > 2
        and cols[1] in text
        and _is_time_column(first_column[~empty], first_name)
        and _counts_rows(header[1], text[cols[1]][~empty], after=True)
    ):  # a logger's record number after the time column (TOA5's TIMESTAMP,RECORD)
        counters.append((header[1].strip(), text[cols[1]], True))
        header, cols = [header[0], *header[2:]], [cols[0], *cols[2:]]
    rows = None  # the table's rows, by position among the file's (None: all)
    if drop_first and empty.any() and not _is_time_column(first_column[~empty], first_name):
        rows = np.flatnonzero(~empty)  # the row counter places every row
        first_column = first_column[~empty]
    start = 1 if drop_first else 0
    columns = tuple(h.strip() for h in header[start:])
    table_lines = lines if rows is None else lines[rows]
    notes: tuple[str, ...] = tuple(
        f"note: {path.name}: column {name!r} ({', '.join(counts.iloc[:3].str.strip())}, ...) "
        "counts the rows beside the time column: it is read as a row counter, not a sensor"
        for name, counts, after in counters
        if after or name.lower() not in COUNTER_NAMES  # where sensors sit, always said
    )
    if top is not None:
        columns = tuple(str(k) for k in range(len(columns)))
        shown = ", ".join(_shown_cell(top[k]) for k in cols[start : start + 3])
        notes = (
            f"note: {path.name} has no header (line {lines[0]} holds readings: {shown}...); "
            f"its {len(columns)} sensors are "
            f"named by position, 0 to {len(columns) - 1}, the order an adjacency matrix "
            "without a header is read in; give the file a first line of sensor ids to name "
            "them",
        )
    if not columns:
        raise DatasetError(_no_sensors(path, header, first_column))
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
    if drop_first and nfc(first_name) in {nfc(c) for c in columns}:
        raise DatasetError(
            f"{path}: {first_name!r} names both the time or index column and a sensor column; "
            "rename one"
        )
    values = cells.numbers.select(path, columns, lines, cols[start:], rows, time_hint=True)
    first = first_column if drop_first else None
    kept = first_name if drop_first else None
    return Table(columns, values, table_lines, first, kept, notes, named_times)


def _shown_cell(cell: str, most: int = 12) -> str:
    """A cell as a note quotes it: whole up to ``most`` characters; else a number in the
    shortest form that reads as the same float (``6.013000000000000256e+01``: ``60.13``),
    other text cut, with "..."."""
    if len(cell) <= most:
        return cell
    try:
        number = float(cell)
    except ValueError:
        number = np.nan
    return repr(number) if np.isfinite(number) else f"{cell[:most]}..."


def nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


_NUMBER_ID = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def id_spelling(name: str) -> str:
    """What two spellings of one sensor id share: the id in Unicode NFC (``é`` composed or
    decomposed), or the number it writes (``7.0``, ``7e0`` and ``7`` alike)."""
    text = nfc(name)
    return str(Decimal(text).normalize()) if _NUMBER_ID.fullmatch(text) else text


def spelling_index(ids: Iterable[str]) -> dict[str, str | None]:
    """Each :func:`id_spelling` of ``ids`` -> the one id spelled so (None: several are)."""
    index: dict[str, str | None] = {}
    for known in ids:
        key = id_spelling(known)
        index[key] = None if key in index else known
    return index


_UNICODE_TWINS = "one name in two Unicode forms (NFC and NFD); write both alike"


def _twins(names: Sequence[str]) -> tuple[int, int] | None:
    """Positions of the first two ``names`` that are one after Unicode NFC normalisation
    (``é`` composed and decomposed look alike and would be two sensors), else None."""
    seen: dict[str, int] = {}
    for k, name in enumerate(names):
        if (j := seen.setdefault(nfc(name), k)) != k:
            return j, k
    return None


def _no_header(path: Path, header: Sequence[str]) -> str:
    """Why a first row of readings is no header: none was written, or it is commented out
    (the comment above it has as many fields)."""
    shown = ",".join(h.strip() for h in header[:3]) + ("..." if len(header) > 3 else "")
    skip = preamble(path)
    line = next((k for k, _ in numbered_rows(path, 1)), skip + 1)
    with open_text(path, errors="replace") as f:
        above = [text.strip() for _, text in zip(range(skip), f, strict=False)]
    last = ([""] + [text for text in above if text])[-1]
    if last.startswith("#") and len(next(csv.reader([last[1:]]), [])) == len(header):
        return (
            f"{path}: line {line} ({shown}) holds readings and the header seems commented "
            f"out: line {skip} ({last[:40]}) starts with '#'; remove the '#'"
        )
    return (
        f"{path}: line {line} ({shown}) holds readings, not column names: the file has no "
        "header; add a first line naming the columns (the sensor ids), or read it as it is "
        "with csv:PATH,header=none (sensors named by position)"
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


def _row_index_before_time(
    header: Sequence[str], lead: Sequence[pd.Series], index_col: str | None
) -> bool:
    """True when the first column is a row counter and another column holds the times: an
    unnamed counter (``DataFrame.to_csv()``'s index) before ``index_col``, else before
    the second column; one under any name (:func:`_counts_rows`) before the second
    column when ``index_col`` names none (``lead``: the first two columns as text)."""
    name = header[0].strip()
    if len(header) < 3:
        return False
    if name.lower() in INDEX_NAMES:
        if not is_row_counter(pd.to_numeric(lead[0].str.strip(), errors="coerce")):
            return False
        if index_col is not None:
            return index_col.strip() != name
    elif index_col is not None or not _counts_rows(name, lead[0]):
        return False
    second = lead[1]
    numbers = pd.to_numeric(second.str.strip(), errors="coerce")
    return (
        header[1].strip().lower() in TIME_NAMES
        or is_epoch(numbers)
        or compact_dates(second) is not None
        or (numbers.isna().all() and _all_dates(second))
    )


def _counts_rows(name: str, column: pd.Series, *, after: bool = False) -> bool:
    """True for a column beside the time column that counts its rows: whole numbers, each
    one more than the last, from 0 or 1 (from any number under a counter's name such as
    a logger's ``RECORD``), ``MIN_INDEX_ROWS`` or more, under a name that is no number (a
    sensor id); ``after`` the time column, where the sensors are, under a counter's name
    only. Readings do not rise by exactly one every row; counts rise and fall."""
    lowered = name.strip().lower()
    counter = lowered in COUNTER_NAMES
    if (after and not counter) or not pd.isna(pd.to_numeric(lowered, errors="coerce")):
        return False
    numeric = pd.to_numeric(column.str.strip(), errors="coerce")
    if len(numeric) < MIN_INDEX_ROWS or not whole(numeric) or is_epoch(numeric):
        return False
    values = numeric.to_numpy(dtype=np.float64)
    return bool(np.all(np.diff(values) == 1) and (values[0] in (0, 1) or counter))


def _date_and_clock(
    header: Sequence[str], lead: Sequence[pd.Series], index_col: str | None
) -> bool:
    """True when the first two columns (``lead``, as text) hold dates without a time of
    day and times of day without a date (``2024-03-01``, ``08:00``; or whole hours ``0``-``23``
    or ``1``-``24`` under a name such as ``hour``), and ``index_col`` names neither or one."""
    if len(header) < 3 or index_col not in (None, header[0].strip(), header[1].strip()):
        return False
    date, clock = lead[0].str.strip(), lead[1].str.strip()
    date, clock = date[~missing(date)], clock[~missing(clock)]
    hours = _hours(header[1], clock)
    return bool(
        len(clock)
        and (hours is not None or clock.str.fullmatch(CLOCK_ONLY).all())
        and not date.str.contains(":").any()
        and pd.to_numeric(date, errors="coerce").isna().all()
        and _all_dates(date)
    )


def _join_date_and_clock(
    header: Sequence[str], date: pd.Series, clock: pd.Series
) -> tuple[list[str], pd.Series]:
    """The header and the cells of a column of dates and one of times of day joined into
    one column of timestamps named after both, empty where either cell is."""
    date, clock = date.str.strip(), clock.str.strip()
    gap = missing(date) | missing(clock)
    hours = _hours(header[1], clock[~gap])
    if hours is not None:  # hours 1-24 (hour ending) label each hour by its start
        start = hours - 1 if hours.min() >= 1 and hours.max() == 24 else hours
        clock = clock.copy()
        clock[~gap] = start.map(lambda h: f"{h:02d}:00")
    joined = (date + " " + clock).where(~gap, "")
    return [f"{header[0].strip()} {header[1].strip()}", *header[2:]], joined


def _hours(name: str, cells: pd.Series) -> pd.Series | None:
    """Whole hours of the day (``0``-``23``, or ``1``-``24`` hour ending) under an hour
    column's name (:data:`HOUR_NAMES`), else None."""
    if name.strip().lower() not in HOUR_NAMES or not len(cells):
        return None
    if not cells.str.fullmatch(r"\d{1,2}").all():
        return None
    hours = cells.astype(int)
    return hours if hours.max() <= 24 and (hours.max() < 24 or hours.min() >= 1) else None


def scan(
    path: Path, *, first: str = "the header", comments: frozenset[int] | None = None
) -> tuple[list[str], np.ndarray]:
    """Header fields and the line number of every data row, skipping blank lines,
    ``comments`` (default :func:`comment_lines`) and rows of empty cells at the end (a
    spreadsheet's ``,,,``); rejects ragged rows."""
    if path.stat().st_size == 0:
        raise DatasetError(f"{path}: the file is empty; expected a header line and data rows")
    lines: list[int] = []
    empty: list[tuple[int, int]] = []  # (line, fields) of empty rows not yet followed by data
    second = ""  # the first data row, when it is a single field
    skip = preamble(path)
    comments = comment_lines(path) if comments is None else comments
    end, row = 0, []  # the last line of the previous row, the row
    with open_text(path) as f:
        reader = csv.reader(_blanked(f, comments))
        header: list[str] | None = None
        try:
            for row in reader:
                start, end = end + 1, reader.line_num
                if reader.line_num <= skip:
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
            raise DatasetError(f"{path}: {not_text(path, exc)}") from None
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


def numbered_rows(path: Path, limit: int | None = None) -> list[tuple[int, list[str]]]:
    """Up to ``limit`` CSV rows of ``path`` after its preamble, each with its line number,
    skipping blank lines as :func:`scan` does (call that first: it names bad input)."""
    skip, comments = preamble(path), comment_lines(path)
    rows: list[tuple[int, list[str]]] = []
    with open_text(path, errors="replace") as f:
        reader = csv.reader(_blanked(f, comments))
        for row in reader:
            if limit is not None and len(rows) >= limit:
                break
            if reader.line_num > skip and any(c.strip() for c in row):
                rows.append((reader.line_num, row))
    return rows


def preamble(path: Path) -> int:
    """Lines before the header that are not data: comments (``#``), blank lines between
    them and a spreadsheet's ``sep=`` line."""
    check_text(path)
    count = 0
    with open_text(path, errors="replace") as f:
        for line in f:
            text = line.strip()
            if text and not (text.startswith("#") or re.fullmatch(r"sep=.", text, re.I)):
                break
            count += 1
    return count


def comment_lines(path: Path, ids: Sequence[str] = ()) -> frozenset[int]:
    """Numbers of the lines below the header that are comments (``#`` first), to be read
    as blank lines; none when a sensor id may start with ``#``: one of ``ids`` does, or
    a long-format file's first column holds the sensors."""
    where = _long_columns(_first_row(path))
    if any(str(s).startswith("#") for s in ids) or (where is not None and min(where) == where[1]):
        return frozenset()
    skip = preamble(path)
    with open_text(path, errors="replace") as f:
        return frozenset(k for k, line in enumerate(f, 1) if k > skip and _COMMENT.match(line))


def _blanked(f: Iterable[str], comments: frozenset[int]) -> Iterator[str]:
    """The lines of ``f`` with the lines numbered in ``comments`` made blank."""
    for number, line in enumerate(f, 1):
        yield "\n" if number in comments else line


class _LineStream(io.TextIOBase):
    """Lines of text as a stream that pandas reads a piece at a time."""

    def __init__(self, lines: Iterable[str]) -> None:
        self._lines, self._rest = iter(lines), ""

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> str:
        limit = -1 if size is None else size  # below 0: all that is left
        parts, length = [self._rest], len(self._rest)
        while limit < 0 or length < limit:
            if (line := next(self._lines, None)) is None:
                break
            parts.append(line)
            length += len(line)
        text = "".join(parts)
        cut = len(text) if limit < 0 else limit
        self._rest = text[cut:]
        return text[:cut]


@contextlib.contextmanager
def csv_source(path: Path, comments: frozenset[int]) -> Iterator[Path | io.TextIOBase]:
    """``path`` for pandas to read, as a stream of its text (unpacked, ``comments``
    blanked) when it is gzip-compressed or has comments."""
    if not comments and not is_gzip(path):
        yield path
        return
    with open_text(path) as f:
        yield _LineStream(_blanked(f, comments))


def _string_options(path: Path, header: int | None, names: list[str] | None) -> dict[str, Any]:
    """:func:`pandas.read_csv`'s options to read cells as written (see :func:`string_cells`)."""
    return {
        "compression": None,  # the content decides (text_file), never the file's name
        "dtype": str,
        "keep_default_na": False,
        "skiprows": preamble(path),
        "header": header,
        "names": names,
        "skipinitialspace": True,
    }


def string_cells(
    path: Path, comments: frozenset[int], *, header: int | None, names: list[str] | None = None
) -> pd.DataFrame:
    """The cells of the CSV ``path`` below its :func:`preamble` as pandas reads them: strings
    as written (no missing-value guessing), ``comments`` blanked, spaces after a separator
    dropped. ``header`` and ``names`` are :func:`pandas.read_csv`'s."""
    with csv_source(path, comments) as source:
        return pd.read_csv(source, **_string_options(path, header, names))


def string_blocks(
    path: Path, comments: frozenset[int], *, rows: int, names: list[str], text: Iterable[str]
) -> Iterator[pd.DataFrame]:
    """The data rows of the CSV ``path`` as :func:`string_cells` reads them (the header
    replaced by ``names``), ``rows`` at a time; the columns not named in ``text`` hold
    Python strings (``object``: read as numbers, never kept)."""
    options = _string_options(path, 0, names) | {
        "dtype": dict.fromkeys(names, object) | dict.fromkeys(text, str)
    }
    with (
        csv_source(path, comments) as source,
        pd.read_csv(source, chunksize=rows, **options) as reader,
    ):
        yield from reader


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


def _cells(
    path: Path, header: Sequence[str], lines: np.ndarray, comments: frozenset[int]
) -> pd.DataFrame:
    """The data rows as strings, columns ``c0, c1, ...``, one row per entry of ``lines``
    (``comments``: the comment lines :func:`scan` skipped)."""
    try:
        raw = string_cells(path, comments, header=0, names=[f"c{k}" for k in range(len(header))])
    except pd.errors.ParserError as exc:  # what the first read let through: refuse to guess
        raise DatasetError(f"{path}: unreadable CSV: {parser_detail(exc)}") from None
    raw = cut_empty_tail(raw, len(lines))
    _check_aligned(path, len(raw), len(lines))
    return raw


def _check_aligned(path: Path, read: int, rows: int) -> None:
    if read != rows:  # the two parsers disagree (odd quoting): refuse to guess
        raise DatasetError(
            f"{path}: could not align rows ({read} vs {rows}); check quoting and line endings"
        )


@dataclass
class WideCells:
    """A wide file's data rows: its columns that may hold times or a row index as text
    (``text``, by position), every column's numbers, and where a cell is not blank."""

    text: dict[int, pd.Series]  # position -> the column's cells as written
    numbers: Numbers
    row_filled: np.ndarray  # bool [row]: a cell of a column not in ``text`` is not blank
    column_filled: np.ndarray  # bool [column]: a cell is not blank


def _wide_cells(
    path: Path,
    n_cols: int,
    lines: np.ndarray,
    comments: frozenset[int],
    text_columns: Iterable[int],
    top: list[str] | None = None,
) -> WideCells:
    """The data rows of the wide CSV ``path`` (one per entry of ``lines``, the first of
    them ``top`` when given: a first line of readings), read a block of rows at a time so
    that only one block's strings are held; the columns ``text_columns`` are kept as
    text."""
    keep = sorted(k for k in set(text_columns) if k < n_cols)
    other = np.ones(n_cols, dtype=bool)  # [column]: not kept as text
    other[keep] = False
    numbers = Numbers(len(lines), n_cols)
    row_filled = np.zeros(len(lines), dtype=bool)
    column_filled = np.zeros(n_cols, dtype=bool)
    kept: list[pd.DataFrame] = []
    names = [f"c{k}" for k in range(n_cols)]
    rows = len(lines) - (top is not None)  # rows below the header
    read = 0  # rows pandas read below the header
    tail_filled = False  # a row past ``rows`` holds a cell (see cut_empty_tail)

    def add(block: pd.DataFrame) -> None:
        at = numbers.rows
        cells = numbers.add(block)  # [row, column]
        row_filled[at : numbers.rows] = cells[:, other].any(axis=1)
        column_filled[:] |= cells.any(axis=0)
        kept.append(block.iloc[:, keep])

    if top is not None:
        add(pd.DataFrame([top], columns=names))
    try:
        as_text = [names[k] for k in keep]
        for block in string_blocks(
            path, comments, rows=block_rows(n_cols), names=names, text=as_text
        ):
            fit = block.iloc[: max(rows - read, 0)]
            if len(fit):
                add(fit)
            if len(fit) < len(block) and not tail_filled:
                tail_filled = bool(block.iloc[len(fit) :].apply(filled).any(axis=None))
            read += len(block)
    except pd.errors.ParserError as exc:  # what the first read let through: refuse to guess
        raise DatasetError(f"{path}: unreadable CSV: {parser_detail(exc)}") from None
    if read > rows and not tail_filled:
        read = rows  # rows of empty cells at the end, which scan skips
    _check_aligned(path, read, rows)
    frame = pd.concat(kept, ignore_index=True)
    return WideCells(
        {k: frame.iloc[:, j] for j, k in enumerate(keep)}, numbers, row_filled, column_filled
    )


def parser_detail(exc: Exception) -> str:
    match = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
    if match:
        want, line, got = match.groups()
        return f"line {line} has {got} fields, expected {want}"
    return str(exc).strip()


def cut_empty_tail(raw: pd.DataFrame, rows: int) -> pd.DataFrame:
    """``raw`` without the rows past the first ``rows`` when all their cells are empty
    (the rows of empty cells at the end that :func:`scan` skips)."""
    tail = raw.iloc[rows:]
    return raw.iloc[:rows] if len(tail) and not tail.apply(filled).any(axis=None) else raw


def _first_row(path: Path) -> list[str]:
    """The first non-blank CSV row of ``path`` (empty when unreadable: the full read
    reports why)."""
    try:
        skip = preamble(path)
        with open_text(path) as f:
            reader = csv.reader(f)
            rows = (row for row in reader if reader.line_num > skip)
            return next((row for row in rows if any(c.strip() for c in row)), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def _long_columns(header: Sequence[str]) -> tuple[int, int, int] | None:
    """(time, sensor, value) column positions of a long-format header (three columns, or
    four with a row index first), else None."""
    names = [h.strip().lower() for h in header]
    skip = 1 if len(names) == 4 and names[0] in COUNTER_NAMES else 0
    if len(names) - skip != 3:
        return None
    times = [k for k in range(skip, len(names)) if names[k] in TIME_NAMES]
    sensors = [k for k in range(skip, len(names)) if names[k] in SENSOR_NAMES]
    if len(times) != 1 or len(sensors) != 1:
        return None
    (value,) = set(range(skip, len(names))) - {times[0], sensors[0]}
    return times[0], sensors[0], value


def _long_table(
    path: Path,
    header: list[str],
    lines: np.ndarray,
    where: tuple[int, int, int],
    comments: frozenset[int],
    timezone: str | None = None,
    notes: list[str] | None = None,
) -> tuple[pd.DatetimeIndex, np.ndarray, tuple[str, ...], np.ndarray]:
    """A long-format file (one reading per row) as one row per timestamp: times (in order
    of appearance), values ``[time, sensor]`` with NaN, sensor ids (in order of
    appearance) and the line of each time's first row; ``notes`` gets what was assumed."""
    raw = _cells(path, header, lines, comments)
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
    column = raw.iloc[:, t]
    times = parse_times(
        path, column, lines, header[t].strip(), timezone=timezone, groups=sensors, notes=notes
    )
    values = numeric_cells(path, raw.iloc[:, [v]], (header[v].strip(),), lines)[:, 0]  # [row]
    sensor_code, ids = pd.factorize(sensors)
    if (twins := _twins([str(i) for i in ids])) is not None:
        a, b = (int(np.argmax(sensor_code == k)) for k in twins)
        raise DatasetError(
            f"{path}: sensors {sensors.iloc[a]!a} (line {lines[a]}) and {sensors.iloc[b]!a} "
            f"(line {lines[b]}) are {_UNICODE_TWINS}"
        )
    stamps, wide, first = pivot_long(path, sensors, sensor_code, len(ids), times, values, lines)
    return stamps, wide, tuple(str(i) for i in ids), first


def pivot_long(
    path: Path,
    sensors: pd.Series,
    sensor_code: np.ndarray,
    n_sensors: int,
    times: pd.DatetimeIndex,
    values: np.ndarray,
    lines: np.ndarray,
    line: str = "line",
) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray]:
    """Readings of one row each (``sensors``, numbered ``sensor_code``, at ``times``) as
    ``[time, sensor]`` with NaN, times in order of appearance, and the line (or ``line``:
    ``"row"``) of each time's first reading; two readings of a sensor at a time are
    refused, naming both."""
    _check_staggered(path, times, sensor_code, sensors)
    time_code, stamps = pd.factorize(times)
    cell = time_code.astype(np.int64) * n_sensors + sensor_code  # [row]
    order = np.argsort(cell, kind="stable")
    twice = np.flatnonzero(np.diff(cell[order]) == 0)
    if twice.size:
        a, b = order[twice[0]], order[twice[0] + 1]
        raise DatasetError(
            f"{path}: sensor {sensors.iloc[a]!r} has two readings at {times[a]} ({line}s "
            f"{lines[a]} and {lines[b]}); keep one reading per sensor and time"
        )
    wide = np.full((len(stamps), n_sensors), np.nan)  # [time, sensor]
    wide[time_code, sensor_code] = values
    first = np.zeros(len(stamps), dtype=np.int64)
    first[time_code[::-1]] = lines[::-1]  # the first row of each time wins
    return pd.DatetimeIndex(stamps), wide, first


def _check_staggered(
    path: Path, times: pd.DatetimeIndex, sensor_code: np.ndarray, sensors: pd.Series
) -> None:
    """Refuse a long table whose sensors each report on a regular step but at different
    times (one at :00, another at :02): together they fall on a grid of a fraction of
    that step, on which every sensor is mostly missing."""
    t = pd.DatetimeIndex(times).as_unit("ns").asi8
    order = np.lexsort((t, sensor_code))
    code, own_t = sensor_code[order], t[order]
    same = code[1:] == code[:-1]
    own = grid_step(np.diff(own_t)[same])  # a sensor's own step
    grid = grid_step(np.diff(np.unique(t)))  # the step of all readings together
    if not own or not grid or own < 2 * grid:
        return
    firsts = order[np.r_[True, ~same]]  # each sensor's first reading
    phase, first = np.unique(t[firsts] % own, return_index=True)
    if len(phase) < 2:
        return
    a, b = (firsts[k] for k in first[:2])
    at = [f"{sensors.iloc[k]!r} at {pd.Timestamp(t[k], tz='UTC'):%H:%M:%S}" for k in (a, b)]
    every, together = duration_text(own / 1e9), duration_text(grid / 1e9)
    raise DatasetError(
        f"{path}: each sensor reports every {every}, but at different times ({at[0]}, "
        f"{at[1]}): together they fall on a {together} grid on which every sensor is mostly "
        f"missing; put them on one grid first, e.g. floor each time to {every} "
        f"(pandas: time.dt.floor('{own // 10**9}s'))"
    )


def _headerless(fields: Sequence[str]) -> bool:
    """True for a first line of numbers that are readings, not sensor ids: most of them
    written as decimals (``59.127``, ``6.2e+01``, ``-3``), or one repeated. Sensor ids
    that are numbers are mostly whole numbers, each written once (``773869``), and such a
    line stays the header."""
    cells = [f.strip() for f in fields]
    numbers = pd.to_numeric(pd.Series(cells, dtype=object), errors="coerce")
    if not cells or numbers.isna().any():
        return False
    decimals = sum(not (c.isascii() and c.isdigit()) for c in cells)
    return 2 * decimals > len(cells) or len(set(cells)) < len(cells)


def _ids_like_readings(
    path: Path, ids: Sequence[str], values: np.ndarray, has_header: bool | None
) -> list[str]:
    """A note when a guessed header of whole numbers, in a file without times, could be a
    row of readings: every id lies within its own column's readings (``33`` over counts
    of 20-40), as no sensor id need."""
    if has_header is not None or not ids or not all(i.isascii() and i.isdigit() for i in ids):
        return []
    if sorted(int(i) for i in ids) in (list(range(len(ids))), list(range(1, len(ids) + 1))):
        return []  # sensors numbered by position
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an empty column
        low, high = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
    numbers = np.array([float(i) for i in ids])
    if not np.all((low <= numbers) & (numbers <= high)):
        return []
    shown = ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "")
    return [
        f"note: {path.name}: line 1 ({shown}) is read as the sensor ids, though each lies "
        f"within its column's readings; if it is a row of readings, read the file as "
        f"csv:{path},header=none"
    ]


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
    if lowered in INDEX_NAMES and whole(numeric):
        return True  # decimals there are readings of a sensor of that name
    present = ~missing(column)
    index = (
        is_row_counter(numeric)
        or (present.any() and is_epoch(numeric[present]))
        or (present.any() and excel_days(name, numeric[present]) is not None)
        or compact_dates(column[present]) is not None
        or (len(numeric) >= MIN_INDEX_ROWS and _strided(numeric))
    )
    if index and pd.isna(pd.to_numeric(lowered, errors="coerce")):
        return True  # a header that is a number is a sensor id
    if numeric.notna().any():
        return False  # numbers are readings (pandas would also read them as epoch times)
    return _all_dates(column)


def _counts_by_one(column: pd.Series, *, share: float) -> bool:
    """True when the cells that are not missing are whole numbers (``MIN_INDEX_ROWS`` or
    more) and more than ``share`` of the steps between them are +1 (or all of that share
    -1): a row counter, perhaps with a flaw."""
    present = ~missing(column)
    numeric = pd.to_numeric(column[present].str.strip(), errors="coerce")
    if len(numeric) < MIN_INDEX_ROWS or not whole(numeric):
        return False
    diffs = np.diff(numeric.to_numpy(dtype=np.float64))
    return bool(
        max(np.count_nonzero(diffs == 1), np.count_nonzero(diffs == -1)) > share * len(diffs)
    )


def _counter_flaw(column: pd.Series, lines: np.ndarray) -> str | None:
    """What keeps a column of whole numbers that mostly count by one from being a row
    counter (``repeats 9 at lines 11 and 12``): it counts down, or its first cell that is
    empty, repeats or falls; None when there is none."""
    present = ~missing(column).to_numpy(dtype=bool)
    rows = np.flatnonzero(present)  # [present]
    values = pd.to_numeric(column[present].str.strip()).to_numpy(dtype=np.float64)
    diffs = np.diff(values)
    if np.count_nonzero(diffs == -1) > np.count_nonzero(diffs == 1):
        return f"counts down from {values[0]:.0f} at line {lines[rows[0]]} (rows newest first?)"
    fall = np.flatnonzero(diffs <= 0)
    gap = np.flatnonzero(~present)
    if gap.size and (not fall.size or gap[0] < rows[fall[0] + 1]):
        return f"is empty at line {lines[gap[0]]}"
    if not fall.size:
        return None
    k = int(fall[0])
    a, b = lines[rows[k]], lines[rows[k + 1]]
    if diffs[k] == 0:
        return f"repeats {values[k]:.0f} at lines {a} and {b}"
    return f"falls from {values[k]:.0f} to {values[k + 1]:.0f} at lines {a} and {b}"


def _refuse_near_index(path: Path, name: str, column: pd.Series, lines: np.ndarray) -> None:
    """Refuse a first column read as a sensor that is almost a row counter (see the
    module doc) or that holds spreadsheet serial days under a name that does not say so:
    read as a sensor, it would be a wrong one."""
    if not pd.isna(pd.to_numeric(name, errors="coerce")):
        return  # a header that is a number is a sensor id
    share = 0.5 if name.lower() in COUNTER_NAMES else NEAR_COUNTER
    if _counts_by_one(column, share=share) and (flaw := _counter_flaw(column, lines)):
        raise DatasetError(
            f"{path}: column {name!r} looks like a row counter but {flaw}; fix it, or pass "
            "--no-index to read it as a sensor"
        )
    if (days := _serial_days(column)) is not None:
        raise DatasetError(
            f"{path}: column {name!r} holds numbers that look like spreadsheet serial days "
            f"({column.iloc[0].strip()} is {days[0]:%Y-%m-%d %H:%M}); "
            f"to read them as times pass --index-col {name} (or name the column 'date'), "
            "or pass --no-index to read it as a sensor"
        )


def _serial_days(column: pd.Series) -> pd.DatetimeIndex | None:
    """``column`` read as spreadsheet serial days when it holds strictly increasing numbers,
    not all whole, within their years and each a whole number of seconds after the
    previous one (times, not readings), else None."""
    numeric = pd.to_numeric(column.str.strip(), errors="coerce")
    if len(numeric) < MIN_INDEX_ROWS or whole(numeric) or numeric.isna().any():
        return None
    seconds = np.diff(numeric.to_numpy(dtype=np.float64)) * 86_400.0
    if not (np.all(seconds >= 0.5) and np.all(np.abs(seconds - np.round(seconds)) < 0.1)):
        return None
    return excel_days("", numeric, named=True)


def _all_dates(column: pd.Series) -> bool:
    """True when every cell that is not missing parses as a date, and one does."""
    text = column[~missing(column)].str.strip()
    parsed = pd.to_datetime(text, errors="coerce", utc=True, format="mixed")
    return bool(len(parsed) and parsed.notna().all())


def _strided(numeric: pd.Series) -> bool:
    """Increasing whole numbers with one constant step (0, 10, 20, ...): a counter."""
    return increasing_integers(numeric) and len(set(np.diff(numeric.to_numpy()).tolist())) == 1


class Numbers:
    """Cells read as float64 a block of rows at a time (NaN where missing or no number),
    remembering what an error names: the first cell of each column that is no number or
    too large, and how many cells of each column are no number."""

    def __init__(self, n_rows: int, n_cols: int) -> None:
        self.values = np.empty((n_rows, n_cols))  # [row, column]; inf as written
        self.rows = 0  # rows added
        self.bad_first = np.full(n_cols, -1)  # [column]: first row holding no number (-1: none)
        self.bad_count = np.zeros(n_cols, dtype=np.int64)  # [column]
        self.huge_first = np.full(n_cols, -1)  # [column]: first row beyond float64 (1e400)
        self.text: dict[tuple[int, int], str] = {}  # (row, column) -> those first cells

    def add(self, block: pd.DataFrame) -> np.ndarray:
        """Read the next rows of cells (strings); returns which are not blank [row, column]."""
        n_rows, n_cols = block.shape
        cells = block.to_numpy(dtype=object).ravel()  # [row * column]
        number = pd.to_numeric(cells, errors="coerce").astype(np.float64)
        nan = np.flatnonzero(np.isnan(number))  # no number as written: spaces around one?
        text = pd.Series(cells[nan], dtype=object).str.strip()  # [nan]
        number[nan] = pd.to_numeric(text.to_numpy(), errors="coerce")
        zero = np.flatnonzero(number == 0)  # "-0" read as a whole number loses its sign
        signed = pd.Series(cells[zero], dtype=object).str.strip().str.startswith("-")
        number[zero[signed.to_numpy(dtype=bool)]] = -0.0
        left = np.isnan(number[nan])  # [nan]: missing, or no number
        bad = np.zeros(number.shape, dtype=bool)
        bad[nan[left]] = ~missing(text[left]).to_numpy(dtype=bool)
        filled = np.ones(number.shape, dtype=bool)
        filled[nan] = (text.notna() & (text != "")).to_numpy(dtype=bool)
        inf = np.flatnonzero(np.isinf(number))  # written inf, or beyond float64
        written = pd.Series(cells[inf], dtype=object).str.strip().str.lower().str.lstrip("+-")
        huge = np.zeros(number.shape, dtype=bool)
        huge[inf] = ~written.isin(("inf", "infinity")).to_numpy(dtype=bool)
        for where, first in ((bad, self.bad_first), (huge, self.huge_first)):
            grid = where.reshape(n_rows, n_cols)
            new = np.flatnonzero(grid.any(axis=0) & (first < 0))  # [column]
            for c, r in zip(new.tolist(), grid[:, new].argmax(axis=0).tolist(), strict=True):
                first[c] = self.rows + r
                self.text[self.rows + r, c] = str(cells[r * n_cols + c]).strip()
        self.bad_count += bad.reshape(n_rows, n_cols).sum(axis=0)
        self.values[self.rows : self.rows + n_rows] = number.reshape(n_rows, n_cols)
        self.rows += n_rows
        return filled.reshape(n_rows, n_cols)

    def select(
        self,
        path: Path,
        columns: Sequence[str],
        lines: np.ndarray,
        cols: Sequence[int],
        rows: np.ndarray | None = None,
        *,
        time_hint: bool = False,
    ) -> np.ndarray:
        """The values ``[row, column]`` of ``rows`` (positions; None: all) and ``cols``
        (named ``columns``), NaN where missing or infinite; refuses a cell that is no
        number or too large, naming its line (``lines``: one per row added) and column.
        ``time_hint`` says, for a value that is a date, which option reads its column as
        the time column."""
        at = np.asarray(cols, dtype=np.int64)
        n_rows = self.rows if rows is None else len(rows)
        if (bad := _first_cell(self.bad_first[at])) is not None:
            r, c = bad
            value = self.text[r, at[c]]
            fix = general = "use a number or leave the cell empty for missing"
            if re.fullmatch(r"[-+]?\d+(,\d+)+", value):
                fix = "a decimal comma or a thousands separator? write numbers as 50.25 or 1050"
            elif re.fullmatch(r"[-+]?\d{1,3}(\.\d{3})+,\d+", value):
                fix = "a decimal comma after thousands separators? write numbers as 1050.25"
            elif re.fullmatch(r"-+|\.+|\?+|[xX*]", value):
                fix = "if it marks a missing reading, leave the cell empty (or write NaN)"
            elif re.fullmatch(r"[-+]?\d{1,3}([ '\u00a0\u202f]\d{3})+([.,]\d+)?", value):
                fix = "a thousands separator? write numbers without it, e.g. 1200"
            elif time_hint and CLOCK_ONLY.fullmatch(value):
                fix = (
                    "a time of day in its own column: join the date and the time of day into "
                    "one first column, e.g. 2024-03-01 08:00"
                )
            elif time_hint and (zone := zone_name_fix(value)) is not None:
                fix = f"a time column? {zone}, and pass --index-col {columns[c]}"
            elif time_hint and _written_date(value):
                fix = f"a time column? pass --index-col {columns[c]}"
            first_row = 0 if rows is None else int(rows[0])
            if fix is general and self.bad_count[at[c]] == n_rows:
                fix += f"; column {columns[c]!r} holds no number in any row"
            elif fix is general and r == first_row and self._second_header(at, r, n_rows):
                fix = "a second header line (units?) under the header: delete it"
            raise DatasetError(
                f"{path}: non-numeric value {value!r} at line {lines[r]}, column "
                f"{columns[c]!r}; " + fix
            )
        if (huge := _first_cell(self.huge_first[at])) is not None:
            r, c = huge
            raise DatasetError(
                f"{path}: value {self.text[r, at[c]]!r} at line {lines[r]}, column "
                f"{columns[c]!r} is too large to be a number"
            )
        if rows is None and len(at) and (np.diff(at) == 1).all():
            values = self.values[: self.rows, at[0] : at[-1] + 1]  # a view: no copy
        else:
            values = self.values[np.ix_(np.arange(self.rows) if rows is None else rows, at)]
        values[np.isinf(values)] = np.nan  # inf is not a reading either
        return values

    def _second_header(self, cols: np.ndarray, row: int, n_rows: int) -> bool:
        """True when ``row``, the first of ``n_rows``, holds no number in ``cols`` (words,
        or empty cells) and every row below it holds numbers only: units or descriptions
        under the header."""
        below = self.bad_count[cols] - (self.bad_first[cols] == row)  # [column]
        return n_rows > 1 and bool(np.isnan(self.values[row, cols]).all()) and not below.any()


def _first_cell(first: np.ndarray) -> tuple[int, int] | None:
    """(row, column) of the first cell, row by row, of those whose columns' first rows are
    ``first`` (-1: none), else None."""
    rows = first[first >= 0]
    if not rows.size:
        return None
    row = int(rows.min())
    return row, int(np.flatnonzero(first == row)[0])


def numeric_cells(
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
    numbers = Numbers(n_rows, n_cols)
    step = block_rows(n_cols)
    for start in range(0, n_rows if n_cols else 0, step):
        numbers.add(cells.iloc[start : start + step])
    return numbers.select(path, columns, lines, range(n_cols), time_hint=time_hint)


# A column name that starts with a calendar date (2024-01-31, 2024/01/31, 31/01/2024).
_DATE_NAME = re.compile(r"^\s*(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{4})")


def _refuse_times_as_sensors(path: Path, columns: Sequence[str]) -> None:
    """Refuse a file written one row per sensor (``columns``, the header's names after
    the first, are mostly times): read as it is, each time would become a sensor and each
    sensor a time step, and sensor ids that are not numbers would be readings."""
    dated = sum(bool(_DATE_NAME.match(c)) for c in columns)
    if len(columns) >= 3 and dated >= 0.8 * len(columns):
        raise DatasetError(
            f"{path}: {dated} of its {len(columns)} column names are times (e.g. "
            f"{columns[0]!r}): the file has one row per sensor; transpose it to one column "
            "per sensor and one row per time (pandas: df.T.to_csv), or give it in long "
            "format (time,sensor,value)"
        )


def read_wide_csv(
    path: Path,
    *,
    start: pd.Timestamp | str = DEFAULT_START,
    freq: pd.Timedelta | str = DEFAULT_FREQ,
    irregular: Literal["error", "resample"] = "error",
    has_time: bool | None = None,
    index_col: str | None = None,
    no_index: bool = False,
    timezone: str | None = None,
    has_header: bool | None = None,
) -> tuple[pd.DatetimeIndex, np.ndarray, tuple[str, ...], tuple[str, ...]]:
    """Read a wide CSV (optional time column, one column per sensor) onto a regular grid.

    Returns ``(timestamps, values [time, sensor] float64 with NaN, sensor ids, notes)``;
    the notes say what the file left to an assumption (no header, no time column).
    Without a time column, row k is at ``start + k * freq``. ``index_col`` names the time
    or index column; ``no_index`` reads every column as a sensor; ``timezone`` (an IANA
    name) is where timestamps without an offset were written (default UTC); ``has_header``
    whether the first line is a header of sensor ids (None: decide by its content).
    """
    if index_col is not None and no_index:
        raise DatasetError("--index-col and --no-index contradict each other; give one")
    fixed = index_col is not None or no_index or has_header is False
    first_row = [] if has_header is False else _first_row(path)
    where = None if fixed else _long_columns(first_row)
    if where is not None:  # long format (is_long_csv)
        comments = comment_lines(path)
        header, lines = scan(path, comments=comments)
        if not lines.size:
            raise DatasetError(f"{path}: the header has no data rows under it")
        notes: list[str] = []
        times, wide, ids, first = _long_table(path, header, lines, where, comments, timezone, notes)
        check_float32(path, wide, first, (header[where[2]].strip(),) * len(ids))
        notes.extend(precision_notes(path, wide, ids))
        grid, values = to_regular_grid(
            times, wide, source=str(path), lines=first, irregular=irregular, copy=False
        )
        return grid, values, ids, tuple(notes)
    _refuse_times_as_sensors(path, first_row[1:])  # before its cells are read as readings
    try:
        table = read_table(
            path,
            drop_first=False if no_index else has_time,
            index_col=index_col,
            has_header=has_header,
        )
    except DatasetError as exc:
        raise DatasetError(f"{exc}{_long_hint(_first_row(path), str(exc))}") from None
    check_float32(path, table.values, table.lines, table.columns)
    precision = precision_notes(path, table.values, table.columns)
    name = table.first_name or ""
    guessed = index_col is None and has_time is None  # no option chose the first column
    if table.first is not None and (table.named_times or _is_time_column(table.first, name)):
        sensor = f"; if {name!r} is a sensor, pass --no-index" if guessed else ""
        assumed = list(table.notes)
        times = parse_times(
            path, table.first, table.lines, name, sensor_hint=sensor, timezone=timezone,
            notes=assumed, named=table.named_times,
        )  # fmt: skip
        try:
            grid, values = to_regular_grid(
                times,
                table.values,
                source=str(path),
                lines=table.lines,
                irregular=irregular,
                copy=False,
            )
        except DatasetError as exc:  # several sensors' rows at one time: long format?
            raise DatasetError(f"{exc}{_long_hint(_first_row(path), str(exc))}") from None
        return grid, values, table.columns, (*assumed, *precision)
    t0 = pd.Timestamp(start)
    t0 = t0.tz_localize("UTC") if t0.tz is None else t0.tz_convert("UTC")
    values = table.values
    steps = None if table.first is None else counter_steps(str(path), table.first, table.lines)
    if steps is not None:
        values = np.full((int(steps[-1]) + 1, values.shape[1]), np.nan)  # [grid, sensor]
        values[steps] = table.values
    step = pd.Timedelta(freq)
    grid = pd.date_range(t0, periods=len(values), freq=step)
    untimed = (
        f"note: {path.name} has no time column: row k is read as {t0:%Y-%m-%d %H:%M} UTC + "
        f"k x {duration_text(step.total_seconds())}; what models learn of the hour of day "
        "and weekday follows that assumed clock: add a time column if the rows have times"
    )
    dropped: tuple[str, ...] = (*_ids_like_readings(path, table.columns, values, has_header),)
    if table.first is not None and guessed and name.lower() not in COUNTER_NAMES:
        shown = ", ".join(table.first.iloc[:3].str.strip())
        dropped = (
            *dropped,
            f"note: {path.name}: its first column {name!r} ({shown}, ...) is read as a row "
            "counter, not a sensor; if it is a sensor, pass --no-index",
        )
    return grid, values, table.columns, (*table.notes, untimed, *dropped, *precision)


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


def check_float32(
    path: Path, values: np.ndarray, lines: np.ndarray, columns: Sequence[str]
) -> None:
    """Refuse a value beyond float32 (readings are kept as float32), naming its line."""
    top = np.finfo(np.float32).max
    huge = (values > top) | (values < -top)  # NaN compares False
    if huge.any():
        r, c = np.argwhere(huge)[0]
        raise DatasetError(
            f"{path}: value {values[r, c]:g} at line {lines[r]}, column "
            f"{columns[c]!r} is beyond the 32-bit range readings are kept in (3.4e38)"
        )


# Rows read to find a sensor's typical step-to-step change and level, sensors at a time.
PRECISION_ROWS = 2000
PRECISION_SENSORS = 512


def precision_notes(path: Path, values: np.ndarray, columns: Sequence[str]) -> tuple[str, ...]:
    """A note naming the sensors whose changes float32 (the precision readings are kept
    in) rounds away: a meter at 1.2e8 counting up by 1, a level of 1e6 moving by 0.02."""
    n_rows, n_sensors = values[:PRECISION_ROWS].shape
    if n_rows < 3:
        return ()
    change, level = np.empty(n_sensors), np.empty(n_sensors)  # [sensor]
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a sensor without readings
        for start in range(0, n_sensors, PRECISION_SENSORS):  # bounded memory
            cols = slice(start, start + PRECISION_SENSORS)
            head = np.asarray(values[:PRECISION_ROWS, cols], dtype=np.float64)  # [row, sensor]
            steps = np.abs(np.diff(head, axis=0))
            change[cols] = np.nanmedian(np.where(steps > 0, steps, np.nan), axis=0)
            level[cols] = np.nanmedian(np.abs(head), axis=0)
        spacing = np.spacing(np.nan_to_num(level).astype(np.float32)).astype(np.float64)
        lost = np.flatnonzero(spacing >= change)
    if not len(lost):
        return ()
    k = int(lost[0])
    return (
        f"note: {path.name}: {len(lost)} sensor(s) change by less than 32-bit floats, the "
        f"precision readings are kept in, can tell apart at their level ({columns[k]!r}: "
        f"steps of about {change[k]:.3g} at {level[k]:.4g}, kept to {spacing[k]:.3g}): "
        "subtract an offset or change the unit before training",
    )


def _is_time_column(first: pd.Series, name: str) -> bool:
    """True when a dropped first column ``name`` holds times rather than a row index."""
    name = name.lower()
    if name in TIME_NAMES:
        return True
    numeric = pd.to_numeric(first.str.strip(), errors="coerce")
    return (
        bool(numeric.isna().any())
        or is_epoch(numeric)
        or compact_dates(first) is not None
        or excel_days(name, numeric) is not None
    )
