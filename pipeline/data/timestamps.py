"""Timestamps and the regular time grid: a time column parsed to UTC (:func:`parse_times`)
and rows placed on a grid (:func:`to_regular_grid`; a row counter's rows:
:func:`counter_steps`), with errors that name the line to fix. Everything here raises
:class:`~pipeline.data.cells.DatasetError`. Which column holds the times is for
:mod:`pipeline.data.readers` to tell.

Rules (each one tested):

* **Timestamps** (first column, when it parses as dates) without a timezone are UTC; with
  an offset they are converted to UTC; a column mixing both is rejected, and so is a zone
  name (``PST``, ``Europe/Berlin``: the error gives the offset to write) or an offset
  after ``UTC``/``GMT`` (``UTC+1``, which dateutil reads as UTC-1). A time column of
  numbers holds Unix times, in seconds, ms, us or ns by their size, unless they are
  compact dates of 8, 12 or 14 digits (``20240101``, ``202401010005``), or of 10
  (``2024010100``, ``yyyymmddHH``) when read as Unix seconds they would lie in the future,
  or spreadsheet serial days (``45352`` is 2024-03-01; 1970-2099) under a name with
  ``date``, ``day`` or ``time`` in it, or under any name the user gave as the time column
  (``--index-col``). An empty time cell is rejected, naming its line. Unsorted rows are
  sorted (row order in a timestamped file carries no information). Duplicate timestamps
  are rejected in a wide CSV (which reading is right is unknowable) and averaged when
  resampling. Dotted dates (``01.02.2024``) are day-first; dates such as ``01/02/2024``
  are read day-first, month-first or year-first (``24-01-31``), whichever puts the rows
  closer together (month-first, with a note, when both ways fit equally, as within one
  day); a column in several formats with such a date is refused (which is the day is a
  guess); timestamps outside the wire's years 1700-2249 are rejected. Times without an
  offset and without ``timezone`` whose rows skip exactly the wall-clock hour 02:00-02:59
  of a Sunday get a note (local times over the spring clock change? pass ``--timezone``);
  a real outage may last an hour too, so it is no error.
* **Grid**: the step is the lower median of the spacings between rows (a spacing that
  occurs in the file). When every spacing is a whole multiple of it, skipped steps become
  missing rows (mask False), never filled. Otherwise the file is irregular: rejected by
  default, naming the first row off the step, or with ``irregular="resample"`` each
  reading goes to the cell ``t.floor(step)`` and readings sharing a cell are averaged
  (NAB). A grid over 100,000 steps and 100 times longer than the file (a mistyped
  timestamp) is rejected.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from models.bundle import duration_text
from pipeline.data.cells import DatasetError, missing
from pipeline.kafka.schema import TS_MAX, TS_MIN

MAX_GRID_PER_ROW = 100  # a grid this many times longer than the file is a wrong timestamp
MAX_GRID_FREE = 100_000  # grid steps always allowed, however few rows


def whole(numeric: pd.Series) -> bool:
    """True for a column of whole numbers (no cell missing)."""
    values = numeric.to_numpy(dtype=np.float64)
    return bool(len(values) and np.isfinite(values).all() and np.all(values == np.round(values)))


def _ordered_whole(numeric: pd.Series) -> bool:
    """True for whole numbers that never fall: times, perhaps in a wrong unit."""
    return whole(numeric) and bool(np.all(np.diff(numeric.to_numpy(dtype=np.float64)) >= 0))


def increasing_integers(numeric: pd.Series) -> bool:
    """True for strictly increasing whole numbers: a row index, a step counter or Unix
    times, never readings."""
    values = numeric.to_numpy(dtype=np.float64)
    return (
        len(values) >= 2
        and whole(numeric)
        and bool(np.abs(values).max() < 2.0**53 and np.all(np.diff(values) > 0))
    )


def times_by_size(numeric: pd.Series) -> bool:
    """True for numbers (none missing) that are times by their size alone, read so when
    the user names their column (``--index-col``): spreadsheet serial days or Unix times."""
    if not len(numeric) or numeric.isna().any():
        return False
    return (
        excel_days("", numeric, named=True) is not None
        or float(numeric.min()) >= _EPOCH_UNITS[-1][0]
    )


def is_epoch(numeric: pd.Series) -> bool:
    """Strictly increasing whole numbers from 1e8 on: Unix times (seconds since 1973 or
    a finer unit), not a row counter."""
    return increasing_integers(numeric) and float(numeric.min()) >= _EPOCH_UNITS[-1][0]


def is_row_counter(numeric: pd.Series) -> bool:
    """True for a column of strictly increasing whole numbers that mostly go up by one: a
    row index or step counter such as 0, 1, 2, 4, 5, ... (rows dropped), not readings."""
    if not increasing_integers(numeric) or is_epoch(numeric):
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


# A time of day followed by a zone: Z, UTC/GMT or an offset such as +02, +0200, -05:30.
_UTC_PLUS = re.compile(r"\d\s*(?:UTC|GMT)\s*[+-]\s*\d", re.I)  # 08:00 UTC+1
_ZONED = re.compile(r"\d:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:[zZ]|UTC|GMT|[+-]\d{2}(?::?\d{2})?)$")


def parse_times(
    path: Path,
    column: pd.Series,
    lines: np.ndarray,
    name: str,
    *,
    sensor_hint: str = "",
    timezone: str | None = None,
    groups: pd.Series | None = None,
    notes: list[str] | None = None,
    named: bool = False,
) -> pd.DatetimeIndex:
    """Parse a timestamp column to UTC, naming the first line that does not parse, and
    refusing a column that mixes times with and without a zone (which hour the ones
    without meant is a guess). Times without an offset are UTC, or wall-clock times in
    ``timezone`` (an IANA name) when given, each of ``groups`` (a long file's sensor per
    row) in its rows' order; Unix times are UTC either way.
    ``sensor_hint`` ends the error for numbers that are no times (how to read the column
    as a sensor). Dates read month-first that fit day-first as well get a note in
    ``notes`` (refused when None), as does an hour skipped as by a spring clock change.
    ``named``: the user named the column as the time column (serial days under any name)."""
    text = column.astype(str).str.strip()
    if (empty := missing(text)).any():
        r = int(np.flatnonzero(empty)[0])
        held = f" (it holds {text.iloc[r]!r})" if text.iloc[r] else ""
        raise DatasetError(
            f"{path}: the time column {name!r} is empty at line {lines[r]}{held}; give every "
            "row its timestamp, or delete the row"
        )
    if (compact := compact_dates(text)) is not None:
        return local_times(path, compact, text, lines, timezone, groups, notes=notes)
    numeric = pd.to_numeric(text, errors="coerce")
    shaped = text.str.fullmatch(r"\d{8}|\d{12}|\d{14}")  # a compact date, out of range
    if text.size and numeric.notna().all() and not shaped.all():
        if (serial := excel_days(name, numeric, named=named)) is not None:
            return local_times(path, serial, text, lines, timezone, groups, notes=notes)
        epoch = epoch_times(path, numeric, name, sensor_hint)
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
    clock = text.str.fullmatch(CLOCK_ONLY)
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
        # (of equal ones the first: pandas' own, then day-first, then year-first)
        dayfirst = _one_format(text, dayfirst=True)
        readings = [
            r for r in (parsed, dayfirst, _one_format(text, yearfirst=True)) if r is not None
        ]
        if readings:
            parsed, rival = closest_reading(readings)
            if rival is not None:
                both_ways = rival is dayfirst and _DAY_OR_MONTH.match(text.iloc[0]) is not None
                _ambiguous(path, text.iloc[0], parsed[0], rival[0], notes, both_ways)
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
            fix = zone_name_fix(text.iloc[r]) or "use ISO-8601, e.g. 2012-03-01 00:05:00"
            raise DatasetError(
                f"{path}: timestamp {text.iloc[r]!r} at line {lines[r]} does not parse; {fix}"
            )
        if (mixed := _mixed_formats(text)) is not None:
            a, b = mixed
            raise DatasetError(
                f"{path}: timestamp {text.iloc[b]!r} at line {lines[b]} is written in another "
                f"format than {text.iloc[a]!r} at line {lines[a]}, and its day and month could "
                "be either way round; write every timestamp in one format, e.g. ISO-8601 "
                "2012-03-01 00:05:00"
            )
    parsed = _check_range(path, parsed, text, lines)
    if zoned.any():
        return parsed
    return local_times(path, parsed, text, lines, timezone, groups, notes=notes)


def _ambiguous(
    path: Path,
    written: str,
    taken: pd.Timestamp,
    other: pd.Timestamp,
    notes: list[str] | None,
    day_or_month: bool = True,
) -> None:
    """Note (or, without ``notes``, refuse) dates that fit equally well read two ways:
    ``taken`` is read, ``other`` is not; ``day_or_month``: the two differ by the order of
    day and month (else by which number is the year)."""
    read, rival = f"{taken:%d %B %Y}", f"{other:%d %B %Y}"
    if day_or_month:
        read, rival = f"month-first ({read})", f"day-first ({rival})"
    text = (
        f"dates such as {written!r} are read {'' if day_or_month else 'as '}{read}, though "
        f"{rival} fits them as well; write ISO-8601 dates "
        f"({taken:%Y-%m-%d} or {other:%Y-%m-%d}) to make them unambiguous"
    )
    if notes is None:
        raise DatasetError(f"{path}: {text}")
    notes.append(f"note: {path.name}: {text}")


# A date whose first two numbers could each be the day or the month: 01/03/2024, 1.3.24.
_DAY_OR_MONTH = re.compile(r"\s*(0?[1-9]|1[0-2])[-/.](0?[1-9]|1[0-2])[-/.]\d")


def _mixed_formats(text: pd.Series) -> tuple[int, int] | None:
    """Rows ``(a, b)`` of a time column written in more than one format, ``b`` a date
    whose day and month could be either way round (``01/03/2024``), ``a`` a row in
    another format; None when there is no such date or one format throughout."""
    shapes = text.str.replace(r"\d", "0", regex=True)  # 2024-03-01 -> 0000-00-00
    ambiguous = np.flatnonzero(text.str.match(_DAY_OR_MONTH).to_numpy())
    if not ambiguous.size:
        return None
    b = int(ambiguous[0])
    other = np.flatnonzero((shapes != shapes.iloc[b]).to_numpy())
    return (int(other[0]), b) if other.size else None


def zone_info(name: str) -> ZoneInfo:
    """The IANA time zone ``name`` (``Europe/Berlin``), refused naming the fix when unknown."""
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise DatasetError(
            f"unknown time zone {name!r}: give an IANA name such as America/Los_Angeles or "
            "Europe/Berlin"
        ) from None


def local_times(
    path: Path,
    times: pd.DatetimeIndex,
    text: pd.Series,
    lines: np.ndarray,
    timezone: str | None,
    groups: pd.Series | None = None,
    line: str = "line",
    *,
    notes: list[str] | None = None,
) -> pd.DatetimeIndex:
    """``times`` (timestamps without an offset, parsed as UTC) read as wall-clock times in
    ``timezone``, in UTC; unchanged when ``timezone`` is None (then a note in ``notes``
    when the rows skip a Sunday's 02:00-02:59: :func:`spring_gap`). The hour that repeats
    when daylight saving ends is told apart by the rows' order (first the summer hour),
    within each of ``groups`` when given (a long file's sensors: one row per sensor and
    time); a time the clocks skip, or a repeated hour the order cannot tell apart, is
    refused naming its line (``lines``; ``line="row"`` for a table's rows)."""
    if timezone is None:
        if notes is not None and (gap := spring_gap(times)) is not None:
            first, last = gap
            span = f"{first:%Y-%m-%d %H:%M}" + (f" to {last:%H:%M}" if last > first else "")
            notes.append(
                f"note: {path.name}: no rows from {span} (a spring clock change? if the times "
                "are local wall-clock times, pass --timezone ZONE)"
            )
        return times
    zone, wall = zone_info(timezone), times.tz_localize(None)
    summer = np.ones(len(wall), bool)  # any answer for the repeated hour: only skips are NaT
    skipped = wall.tz_localize(zone, ambiguous=summer, nonexistent="NaT").isna()
    if skipped.any():
        r = int(np.flatnonzero(skipped)[0])
        raise DatasetError(
            f"{path}: timestamp {text.iloc[r]!r} at {line} {lines[r]} does not exist in "
            f"{timezone}: the clocks skip that hour when daylight saving starts; check the "
            "row, or write its UTC offset"
        )
    code = np.zeros(len(wall), np.int64) if groups is None else pd.factorize(groups)[0]
    order = np.argsort(code, kind="stable")  # [row]: each group's rows, in file order
    utc = np.empty(len(wall), np.int64)
    try:
        for rows in np.split(order, np.flatnonzero(np.diff(code[order])) + 1):
            utc[rows] = wall[rows].tz_localize(zone, ambiguous="infer").as_unit("ns").asi8
    except ValueError:
        repeated = np.flatnonzero(wall.tz_localize(zone, ambiguous="NaT").isna())
        r = int(repeated[0]) if repeated.size else 0
        raise DatasetError(
            f"{path}: timestamp {text.iloc[r]!r} at {line} {lines[r]} lies in the hour "
            f"{timezone} repeats when daylight saving ends, and the rows' order does not tell "
            "which of the two it is (rows in time order, both hours listed); write the UTC "
            "offsets of that hour's rows"
        ) from None
    return pd.DatetimeIndex(utc, tz="UTC")


_HOUR = 3_600_000_000_000  # ns


def spring_gap(times: pd.DatetimeIndex) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """The first and last grid step of the first wall-clock hour 02:00-02:59 of a Sunday
    that ``times`` (read as UTC, on a grid step that divides an hour) skip exactly, with
    rows one step before it and at 03:00: what local times show when the clocks go from
    02:00 to 03:00 in spring. None when there is no such hour."""
    t = np.unique(pd.DatetimeIndex(times).as_unit("ns").asi8)
    diffs = np.diff(t)
    step = grid_step(diffs)
    if not step or _HOUR % step:
        return None
    for k in np.flatnonzero(diffs == _HOUR + step).tolist():
        after = pd.Timestamp(t[k + 1], tz="UTC")
        if after.day_of_week == 6 and after == after.normalize() + pd.Timedelta(hours=3):
            return after - pd.Timedelta(_HOUR), after - pd.Timedelta(step)
    return None


# A zone name after a time: PST, CEST, Europe/Berlin (UTC, GMT and Z parse).
_ZONE_NAME = re.compile(r"(?<=\d)\s*\(?([A-Z]{3,5}|[A-Z][A-Za-z_]+(?:/[A-Za-z0-9_+-]+)+)\)?$")


def zone_name_fix(text: str) -> str | None:
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
CLOCK_ONLY = re.compile(r"\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?\s*([aApP][mM])?")

# Compact dates by their number of digits.
_COMPACT = {8: "%Y%m%d", 10: "%Y%m%d%H", 12: "%Y%m%d%H%M", 14: "%Y%m%d%H%M%S"}


def compact_dates(column: pd.Series) -> pd.DatetimeIndex | None:
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


def excel_days(name: str, numeric: pd.Series, *, named: bool = False) -> pd.DatetimeIndex | None:
    """A date-like column (:data:`_DATE_WORDS`; any name when ``named``: the user named
    it as the time column) of numbers within :data:`_EXCEL_DAYS` (``45352`` is 2024-03-01,
    ``45352.25`` six hours later), read as a spreadsheet's serial days, else None."""
    values = numeric.to_numpy(dtype=np.float64)
    low, high = _EXCEL_DAYS
    dated = named or _DATE_WORDS.search(name) is not None
    if not (len(values) and dated and np.all((values >= low) & (values < high))):
        return None
    seconds = pd.to_timedelta(np.round(values * 86_400.0), unit="s")  # 1/1440 is inexact
    return pd.DatetimeIndex(_EXCEL_ORIGIN + seconds).as_unit("ns")


# Unix times by magnitude: seconds, milliseconds, microseconds, nanoseconds since 1970,
# each from 1973 (1e8 s) on; smaller numbers are not taken for times.
_EPOCH_UNITS = ((1e17, "ns"), (1e14, "us"), (1e11, "ms"), (1e8, "s"))


def epoch_times(path: Path, numeric: pd.Series, name: str, hint: str) -> pd.DatetimeIndex:
    """A time column of numbers read as Unix times, the unit told by their size; ``hint``
    ends the error when the numbers look like readings (not whole, or not in order)."""
    smallest, biggest = float(numeric.min()), float(numeric.max())
    for size, unit in _EPOCH_UNITS:
        if size <= smallest and biggest < size * 1e3:
            try:
                times = pd.DatetimeIndex(pd.to_datetime(numeric, unit=unit, utc=True))
            except (ValueError, OverflowError):
                break  # beyond what nanosecond times hold
            if times.max() > pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=1):
                compact = unit == "s" and (numeric.astype(np.int64) < 10**10).all()
                why = "dates without separators (yymmddHHMM)?" if compact else "intended?"
                raise DatasetError(
                    f"{path}: column {name!r} holds numbers ({numeric.iloc[0]:.0f}, ...) that "
                    f"as Unix times ({unit}) lie in the future (up to {times.max():%Y-%m-%d}): "
                    f"{why} Write ISO-8601 timestamps such as 2012-03-01 00:05:00"
                )
            return times
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


def _span(times: pd.DatetimeIndex | pd.Series) -> pd.Timedelta:
    return times.max() - times.min()


Reading = TypeVar("Reading", pd.DatetimeIndex, pd.Series)


def closest_reading(readings: Sequence[Reading]) -> tuple[Reading, Reading | None]:
    """Of one time column's readings (day-first, month-first, ...; the preferred first),
    the one whose times lie closest together (the first of equals), and another reading
    that fits as well (None when none does)."""
    spans = [_span(r) for r in readings]
    best = readings[spans.index(min(spans))]
    ties = [r for r, span in zip(readings, spans, strict=True) if span == min(spans)]
    return best, next((r for r in ties if not r.equals(best)), None)


def grid_step(spacings: np.ndarray) -> int:
    """The grid step of rows ``spacings`` apart: the lower median of those above 0 (0 when
    none is)."""
    positive = np.sort(spacings[spacings > 0])
    return int(positive[(positive.size - 1) // 2]) if positive.size else 0


def to_regular_grid(
    times: pd.DatetimeIndex,
    values: np.ndarray,
    *,
    source: str,
    lines: np.ndarray | None = None,
    irregular: Literal["error", "resample"] = "error",
    line: str = "line",
    copy: bool = True,
) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """Place rows stamped ``times`` (UTC) on a regular grid; see the module doc for rules.

    Parameters
    ----------
    times : one timestamp per row of ``values`` (any order).
    values : float ``[row, node]``; NaN where missing.
    source : what to name in errors (a path).
    lines : file line of each row, for errors.
    irregular : "error" rejects irregular spacing; "resample" averages into cells.
    line : what ``lines`` number in errors (``"row"`` for a table's rows from 0).
    copy : False lets ``values`` be changed and returned when its rows are the grid's.

    Returns
    -------
    grid : DatetimeIndex (UTC) with a ``freq``.
    values : float64 ``[grid, node]``, NaN where no reading.
    """
    lines = np.arange(2, len(times) + 2) if lines is None else lines
    times = pd.DatetimeIndex(times).as_unit("ns")
    order = np.argsort(times.asi8, kind="stable")
    t = times.asi8[order]
    lines = lines[order]
    if len(t) == 1:
        return pd.DatetimeIndex(times[:1]).as_unit("ns"), values[order]
    diffs = np.diff(t)
    step = grid_step(diffs)
    same = diffs == 0
    if same.any() and irregular == "error":
        k = int(np.flatnonzero(same)[0])
        hour = bool(step) and abs(int(lines[k + 1]) - int(lines[k])) * step == 3_600_000_000_000
        hint = (
            " (an hour of rows apart: local times repeating an hour when daylight saving "
            "ends? give them their UTC offset, e.g. 2024-11-03T01:00:00-07:00, or pass "
            "--timezone with their zone, e.g. America/Los_Angeles)"
            if hour
            else ""
        )
        raise DatasetError(
            f"{source}: duplicate timestamp {pd.Timestamp(t[k], tz='UTC')} at {line}s "
            f"{lines[k]} and {lines[k + 1]}{hint}; keep one reading per time"
        )
    if not step:
        raise DatasetError(f"{source}: all rows have the same timestamp")
    if irregular == "error":
        off = diffs % step != 0
        if off.any():
            k = int(np.flatnonzero(off)[0])
            apart, every = duration_text(diffs[k] / 1e9), duration_text(step / 1e9)
            raise DatasetError(
                f"{source}: irregular timestamps: {line} {lines[k + 1]} is {apart} after the "
                f"previous row, not a multiple of the step {every}; resample to a regular grid "
                "first"
            )
        origin = t[0]
    else:
        freq = pd.tseries.frequencies.to_offset(pd.Timedelta(step, unit="ns"))
        origin = pd.Timestamp(t[0], tz="UTC").floor(freq).value
    cell = (t - origin) // step  # [row]
    n_cells = int(cell[-1]) + 1
    if n_cells > max(MAX_GRID_PER_ROW * len(t), MAX_GRID_FREE):
        k = int(np.argmax(diffs))
        apart, every = duration_text(diffs[k] / 1e9), duration_text(step / 1e9)
        raise DatasetError(
            f"{source}: {line} {lines[k + 1]} is {apart} after the previous "
            f"row; on a grid of {every} the {len(t)} rows would span {n_cells} "
            "steps, almost all missing: check that timestamp, or split the file at the gap"
        )
    grid = pd.date_range(
        pd.Timestamp(origin, tz="UTC"), periods=n_cells, freq=pd.Timedelta(step, unit="ns")
    )
    if (np.diff(cell) > 0).all():  # a row per cell at most: no average to take
        return grid, _place(values, order, cell, n_cells, copy=copy)
    values = values[order]
    total = np.zeros((n_cells, values.shape[1]))  # [grid, node]
    count = np.zeros((n_cells, values.shape[1]))
    seen = np.isfinite(values)
    np.add.at(total, cell, np.where(seen, values, 0.0))
    np.add.at(count, cell, seen)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return grid, out


# Cells read or moved at a time (a wide CSV's text, a panel's rows placed on the grid):
# a block takes tens of MB, never a copy of a whole file or panel.
BLOCK_CELLS = 1 << 18


def block_rows(n_cols: int) -> int:
    """Rows of ``n_cols`` cells in one block of :data:`BLOCK_CELLS` (at least one)."""
    return max(BLOCK_CELLS // max(n_cols, 1), 1)


def _place(
    values: np.ndarray, order: np.ndarray, cell: np.ndarray, n_cells: int, *, copy: bool
) -> np.ndarray:
    """Row ``order[k]`` of ``values`` in grid cell ``cell[k]`` (each cell at most once), NaN
    elsewhere and for infinite readings, -0.0 as 0.0 (as a mean of one reading), float64.
    Without ``copy``, ``values`` itself when it is float64 and its rows are the grid's."""
    rows = block_rows(values.shape[1])
    reuse = not copy and values.dtype == np.float64 and n_cells == len(order)
    if not reuse or (np.diff(order) != 1).any():
        out = np.full((n_cells, values.shape[1]), np.nan)  # [grid, node]
        for k in range(0, len(order), rows):
            out[cell[k : k + rows]] = values[order[k : k + rows]]
    else:
        out = values
    for k in range(0, n_cells, rows):
        block = out[k : k + rows]
        block[~np.isfinite(block)] = np.nan
        block += 0.0
    return out
