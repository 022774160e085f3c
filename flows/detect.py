"""Run anomaly detectors over NAB data files in streaming order and write NAB result files.

``roadcast detect --nab-dir DIR --out OUT [--detector NAME] [--nab-range] [--score]
[--workers N]`` reads every ``<category>/<file>.csv`` (``timestamp,value``) under ``DIR``
and writes ``OUT/<detector>/<category>/<detector>_<file>.csv`` with
``timestamp,value,anomaly_score``, one row per original row: NAB's results layout, which
NAB's own scorer reads. Files are scored in parallel processes (``--workers``, default
one per CPU). Detector names have no underscore (NAB splits result file names on them).
``--score`` prints NAB's table for the categories found (:mod:`flows.nab_table`).

NAB's protocol, followed here
-----------------------------
* Rows are scored one by one, each from the rows up to it (the detectors' streaming
  ``update``); consecutive rows are consecutive steps (NAB scores rows; its timestamps
  are irregular and may repeat).
* The probationary rows, ``min(floor(0.15 n), 750)``, are the only rows a detector may
  train on (the interval detector's forecaster, the GAN); every detector also keeps
  calibrating online on the rows it has scored.
* One setting for every file, fixed in code; a file's labels are never read here.
* Readings must fit float32, the detectors' dtype. A series at a level where float32
  cannot resolve its probationary spread (``1e12`` plus noise) is scored relative to its
  first reading; no NAB file is. Every series is then divided by the power of two
  nearest its probationary readings' size (exact: it scores as in its own unit, and the
  same in any unit; ``docs/decisions.md``, "Units").
* **NAB's min/max convention** (``nab_range=True``, ``--nab-range``): NAB's base detector
  hands every detector the file's minimum and maximum before it starts (its published
  scores use that). Here only the detectors that scale their input use it (``gan``);
  the others are unit-free, so their scores do not change. Without it, scales come from
  the probationary rows.

Detectors
---------
``ensemble`` (the default) merges calibrated member scores with the alarm rule
:data:`DEFAULT_RULE` (:mod:`models.anomaly.ensemble`: weighted Bonferroni, then a rest
period of :data:`DEFAULT_REST_SHARE` of the probationary rows). Its members, their
false-alarm shares and the rest period were chosen by ``benchmarks/nab_validation.py``
on all six NAB categories of ``../shared/data/nab`` for data it has not seen; the
leave-one-category-out scores of that selection are the honest estimate
(``docs/decisions.md``, "NAB ensemble").

Every member is also a preset of its own (its calibrated scores as they are): ``context``,
``extreme``, ``changepoint``, ``spectral``, ``interval`` (persistence forecasts, 3 horizons),
``gan``. References: ``gaussian`` (NAB's windowedGaussian, reimplemented), ``likelihood``
(Numenta's recipe on the interval score: HTM's anomaly likelihood and its new-extreme
rule, published defaults).
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import re
import warnings
from collections.abc import Callable, Generator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

from models.anomaly.base import DetectorError, StreamingDetector
from models.anomaly.calibration import Tail
from models.anomaly.ensemble import AlarmRule, ensemble_series
from models.panel import SensorPanel
from pipeline.settings import shown

PROBATION_PERCENT = 0.15

# Chosen by benchmarks/nab_validation.py on all six NAB categories (docs/decisions.md).
DEFAULT_RULE = AlarmRule((("context", 0.1), ("extreme", 0.01)))
DEFAULT_REST_SHARE = 0.2
DEFAULT_DETECTOR = "ensemble"
# Detectors compute in float32: a reading must fit it, and a series whose spread float32
# cannot cut into this many steps at its size is scored relative to its first reading.
FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT32_STEPS = 1000
# The longest file name (bytes) that common file systems (ext4, APFS, NTFS) accept.
NAME_MAX = 255


class DetectRunError(ValueError):
    """A NAB directory, file or detector name that cannot be run; the message names the fix."""


def probation_rows(n_rows: int) -> int:
    """NAB's probationary period: ``min(floor(0.15 n), 750)`` rows."""
    return int(min(math.floor(PROBATION_PERCENT * n_rows), PROBATION_PERCENT * 5000))


def rest_rows(n_rows: int, share: float = DEFAULT_REST_SHARE) -> int:
    """The ensemble's rest period in a file of ``n_rows``: ``share`` of its probation."""
    return round(share * probation_rows(n_rows))


def rows_panel(values: np.ndarray, timestamps: pd.DatetimeIndex, name: str) -> SensorPanel:
    """NAB rows as a one-sensor panel on a regular grid of the file's median step.

    NAB scores rows, not time: a detector sees consecutive rows as consecutive steps (on
    5-minute steps from 1970 when the file's grid would run past pandas' dates). NaN values
    are missing readings (masked).
    """
    stamps = pd.DatetimeIndex(timestamps)
    step = pd.Series(stamps).diff().median() if len(stamps) > 1 else pd.Timedelta(minutes=5)
    if pd.isna(step) or step <= pd.Timedelta(0):
        step = pd.Timedelta(minutes=5)
    start = stamps[0] if stamps.tz is not None else stamps[0].tz_localize("UTC")
    try:
        grid = pd.date_range(start, periods=len(values), freq=step)
    except (OverflowError, pd.errors.OutOfBoundsDatetime):  # rows past 2262 or a huge step
        grid = pd.date_range("1970-01-01", periods=len(values), freq="5min", tz="UTC")
    return SensorPanel.from_values(
        np.asarray(values, dtype=np.float32).reshape(-1, 1), grid, (name,), name=name
    )


# --- members: one calibrated detector each ---------------------------------------------


@dataclass(frozen=True)
class FileInfo:
    """What a member may know of a file before it runs: its probationary rows (``head``),
    its length, and under NAB's convention its minimum and maximum."""

    head: SensorPanel
    n_rows: int
    value_range: tuple[float, float] | None


def _context(info: FileInfo, tail: Tail = "max") -> StreamingDetector:
    from models.anomaly.context import ContextConfig, ContextDetector

    # Block lengths of 1 row and of 1 % and 3.3 % of the probation (ARTime's time scale).
    probation = info.head.n_time
    scales = (1, max(1, probation // 100), max(1, probation // 30))
    config = ContextConfig(window=8, scales=scales, memory=3000, tail=tail)
    return ContextDetector(config).start(info.head)


def _extreme(info: FileInfo) -> StreamingDetector:
    from models.anomaly.extreme import ExtremeConfig, ExtremeDetector

    # Every earlier reading of a NAB file defines its range, as HTM's rule has it.
    return ExtremeDetector(ExtremeConfig(memory=20000)).start(info.head)


def _changepoint(info: FileInfo) -> StreamingDetector:
    from models.anomaly.changepoint import ChangepointConfig, ChangepointDetector

    return ChangepointDetector(ChangepointConfig()).start(info.head)


def _spectral(info: FileInfo) -> StreamingDetector:
    from models.anomaly.spectral import SpectralConfig, SpectralDetector

    return SpectralDetector(SpectralConfig()).start(info.head)


def _interval(info: FileInfo, tail: Tail = "max") -> StreamingDetector:
    from models.anomaly.interval import ForecastIntervalDetector, IntervalConfig
    from models.forecasters.registry import model_class

    forecaster = model_class("persistence")(window=1, horizon=3)  # type: ignore[call-arg]
    forecaster.fit(info.head)
    config = IntervalConfig(horizon=3, agreement="all", tail=tail)
    return ForecastIntervalDetector(forecaster, config).start(info.head)


def _gan(info: FileInfo) -> StreamingDetector:
    import torch

    from models.anomaly.gan import GanConfig, GanDetector

    torch.set_num_threads(1)  # small batches: one thread beats two fighting for a shared CPU
    window = int(np.clip(info.head.n_time // 8, 2, 32))
    config = GanConfig(
        window=window, epochs=100, patience=10, batch_size=32, value_range=info.value_range
    )
    return GanDetector(config).start(info.head)


MEMBERS: dict[str, tuple[str, Callable[[FileInfo], StreamingDetector]]] = {
    "context": ("context novelty, window 8 at three block lengths (kNN, conformal)", _context),
    "extreme": ("two-sided conformal rank among the earlier readings", _extreme),
    "changepoint": ("surprise under Bayesian online changepoint detection", _changepoint),
    "spectral": ("spectral-residual saliency of the latest reading, window 64", _spectral),
    "interval": ("persistence forecast residuals, 3 horizons that must all agree", _interval),
    "gan": ("BeatGAN-style reconstruction and critic score, trained on the probation", _gan),
    "contextpot": (
        "context novelty with a peaks-over-threshold tail",
        lambda info: _context(info, "pot"),
    ),
    "intervalpot": (
        "persistence forecast residuals with a peaks-over-threshold tail",
        lambda info: _interval(info, "pot"),
    ),
}


# Members that scale their input and so use NAB's min/max convention when it is given.
RANGE_MEMBERS = frozenset({"gan"})


def file_info(
    values: np.ndarray, timestamps: pd.DatetimeIndex, name: str, nab_range: bool
) -> FileInfo:
    """The :class:`FileInfo` of one file (``nab_range``: NAB's min/max convention)."""
    panel = rows_panel(values, timestamps, name)
    head = panel.slice(0, max(probation_rows(len(values)), min(2, len(values))))
    finite = values[np.isfinite(values)]
    value_range = (float(finite.min()), float(finite.max())) if nab_range and len(finite) else None
    return FileInfo(head, len(values), value_range)


def member_scores(
    values: np.ndarray,
    timestamps: pd.DatetimeIndex,
    member: str,
    name: str = "series",
    *,
    nab_range: bool = False,
) -> np.ndarray:
    """Calibrated scores ``[row]`` (float64, ``1 - p``) of one member on one series."""
    if member not in MEMBERS:
        raise DetectRunError(f"unknown member {member!r}; choose one of {', '.join(MEMBERS)}")
    values = _checked(values, timestamps, name)
    info = file_info(values, timestamps, name, nab_range)
    try:
        detector = MEMBERS[member][1](info)
    except DetectorError:
        # Too few probationary rows to train on: this member has nothing to say.
        return np.zeros(len(values))
    panel = rows_panel(values, timestamps, name)
    fast = getattr(detector, "score_batch", None)  # a neural detector's batched scoring
    batch = fast(panel) if callable(fast) else detector.score_panel(panel)
    return np.clip(batch.score[:, 0].astype(np.float64), 0.0, 1.0)


# --- presets: what `roadcast detect --detector NAME` writes ------------------------------


def ensemble_scores(
    member_values: dict[str, np.ndarray], n_rows: int, rule: AlarmRule, rest_share: float
) -> np.ndarray:
    """The ensemble's reported scores ``[row]`` from its members' scores ``[row]``."""
    pvalues = {m: 1.0 - member_values[m] for m in rule.members}
    return ensemble_series(rule, pvalues, rest_rows(n_rows, rest_share))


def _gaussian_scores(values: np.ndarray) -> np.ndarray:
    from models.anomaly.gaussian import gaussian_scores

    return gaussian_scores(values)


def _likelihood_scores(values: np.ndarray, raw: np.ndarray) -> np.ndarray:
    from models.anomaly.likelihood import AnomalyLikelihood, LikelihoodConfig
    from models.anomaly.range import RangeExceedance

    likelihood = AnomalyLikelihood(1, LikelihoodConfig.for_nab(probation_rows(len(values))))
    extreme = RangeExceedance(1)
    out = np.zeros(len(values))  # [row]
    for t in range(len(values)):
        out[t] = likelihood(raw[t : t + 1])[0]
        if np.isfinite(values[t]) and extreme(values[t : t + 1])[0]:
            out[t] = 1.0
    return out


PRESETS: dict[str, str] = {
    "ensemble": "the members of DEFAULT_RULE merged (weighted Bonferroni) with a rest period",
    **{name: description for name, (description, _) in MEMBERS.items()},
    "gaussian": "NAB's windowedGaussian baseline, reimplemented (reference)",
    "likelihood": "Numenta's recipe on the interval score: HTM anomaly likelihood and new extremes",
}


def check_detector(name: str) -> str:
    """``name`` if it is a preset, else a DetectRunError listing them."""
    if name not in PRESETS:
        raise DetectRunError(f"unknown detector {name!r}; choose one of {', '.join(PRESETS)}")
    return name


def _checked(values: np.ndarray, timestamps: pd.DatetimeIndex, name: str) -> np.ndarray:
    """``values`` as float64, refused unless they fit float32, less :func:`_offset`, in
    units of :func:`_unit` (a reading that is then beyond float32's range, a million
    million million... times the probation's size, is held at its edge)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(values) != len(timestamps):
        raise DetectRunError(f"{name}: need one value per timestamp, got {values.shape}")
    if not len(values):
        raise DetectRunError(f"{name}: no rows to score")
    huge = np.abs(values) > FLOAT32_MAX
    if huge.any():
        rows = [int(i) for i in np.nonzero(huge)[0][:5]]
        raise DetectRunError(f"{name}: values in rows {rows} {_OUT_OF_RANGE}")
    values = values - _offset(values)
    with np.errstate(over="ignore"):  # far beyond the probation's size: float32's edge
        scaled = values / _unit(values)
    return np.clip(scaled, -FLOAT32_MAX / 4, FLOAT32_MAX / 4)


def _head(values: np.ndarray) -> np.ndarray:
    """The finite probationary readings (the first finite ones when the probation has none)."""
    rows = max(probation_rows(len(values)), 1)
    head = values[:rows][np.isfinite(values[:rows])]
    return head if len(head) else values[np.isfinite(values)][:rows]


def _offset(values: np.ndarray) -> float:
    """0, or the first probationary reading when float32 (the detectors' dtype) cannot
    resolve the probationary rows' spread at their size (``1e12`` plus noise): such a
    series is scored relative to that reading. Never the case in NAB's corpus."""
    head = _head(values)
    if not len(head):
        return 0.0
    size = float(np.max(np.abs(head)))
    coarse = float(np.spacing(np.float32(size))) * FLOAT32_STEPS > float(np.ptp(head))
    return float(head[0]) if size > 2.0**24 and coarse else 0.0


def _unit(values: np.ndarray) -> float:
    """The power of two nearest the probationary readings' largest size (1 for none or
    zeros). Dividing by a power of two is exact, so a series scores as it did in its own
    unit, and the same in any other: the few absolute floors in the detectors (variances,
    saliency) then meet readings of size about one, never 1e-20 or 1e20."""
    head = _head(values)
    size = float(np.max(np.abs(head))) if len(head) else 0.0
    return 2.0 ** round(math.log2(size)) if size > 0.0 else 1.0


def score_rows(
    values: np.ndarray,
    timestamps: pd.DatetimeIndex,
    detector: str = DEFAULT_DETECTOR,
    name: str = "series",
    *,
    nab_range: bool = False,
    rule: AlarmRule = DEFAULT_RULE,
    rest_share: float = DEFAULT_REST_SHARE,
) -> np.ndarray:
    """Anomaly scores ``[row]`` in [0, 1] of one NAB series, computed row by row.

    Missing values (NaN) score 0. The probationary rows are scored too (NAB ignores them).
    """
    check_detector(detector)
    values = _checked(values, timestamps, name)
    if detector == "ensemble":
        members = {
            m: member_scores(values, timestamps, m, name, nab_range=nab_range) for m in rule.members
        }
        scores = ensemble_scores(members, len(values), rule, rest_share)
    elif detector == "gaussian":
        scores = _gaussian_scores(values)
    elif detector == "likelihood":
        raw = member_scores(values, timestamps, "interval", name, nab_range=nab_range)
        scores = _likelihood_scores(values, raw)
    else:
        scores = member_scores(values, timestamps, detector, name, nab_range=nab_range)
    return np.clip(np.where(np.isfinite(values), scores, 0.0), 0.0, 1.0)


# --- files -------------------------------------------------------------------------------


def nab_data_files(nab_dir: str | Path) -> list[Path]:
    """Every ``<category>/<file>.csv`` under ``nab_dir``, sorted; hidden names left out."""
    root = Path(nab_dir)
    if not root.is_dir():
        raise DetectRunError(f"{root} is not a directory; pass NAB's data directory")
    files = sorted(
        p
        for p in root.glob("*/*.csv")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )  # hidden files (macOS's ._x.csv) are not data
    if not files:
        raise DetectRunError(
            f"no <category>/<file>.csv under {root}; pass NAB's data directory "
            "(e.g. ../shared/data/nab)"
        )
    return files


def skipped_files(nab_dir: str | Path) -> list[Path]:
    """CSV paths (``.csv`` in any case) up to three folders down ``nab_dir`` that
    :func:`nab_data_files` leaves out: outside the ``<category>/<file>.csv`` layout, named
    ``.CSV``, hidden, or not regular files (a dangling link)."""
    root = Path(nab_dir)
    taken = set(nab_data_files(root))
    found = (p for pattern in _SKIPPED_PATTERNS for p in root.glob(pattern))
    return sorted(
        p for p in found if p.suffix.lower() == ".csv" and p not in taken and not p.is_dir()
    )


_SKIPPED_PATTERNS = ("*", "*/*", "*/*/*", "*/*/*/*")


def read_nab_rows(path: Path) -> tuple[pd.DataFrame, pd.DatetimeIndex]:
    """A NAB data file as read (timestamp strings kept for output) and its parsed timestamps.

    Empty values (and pandas' missing markers: ``NaN``, ``null``, ...) are missing readings
    (NaN); anything else that is not a finite float32 number, or a timestamp that does not
    parse, is refused naming the row. An empty field after every row's value (a trailing
    comma) is read past; any other field beyond the header's is refused.
    """
    from pipeline.data.text_file import is_gzip, not_text

    packed = "gzip" if is_gzip(path) else "infer"
    try:
        with warnings.catch_warnings():
            # pandas warns, and drops them, when data rows have fields beyond the header's.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(path, dtype={"timestamp": str}, index_col=False, compression=packed)
    except pd.errors.ParserWarning:
        raise DetectRunError(f"{path}: {_extra_fields(path)}") from None
    except UnicodeDecodeError as exc:
        raise DetectRunError(f"{path}: {not_text(path, exc)}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        reason = " ".join(str(exc).split())
        raise DetectRunError(f"{path}: not a NAB CSV file ({reason})") from None
    if list(frame.columns[:2]) != ["timestamp", "value"]:
        found = ",".join(str(c) for c in frame.columns[:3])
        if len(frame.columns) == 1 and (hint := _separated(found)):
            raise DetectRunError(f"{path}: {hint}")
        raise DetectRunError(f"{path}: expected NAB's header timestamp,value, found {shown(found)}")
    flags = frame["value"].map(lambda v: isinstance(v, bool | np.bool_)).to_numpy(dtype=bool)
    if flags.any():
        _refuse_row(path, "value", frame["value"], flags, "is not a number")
    numbers = pd.to_numeric(frame["value"], errors="coerce")
    bad = numbers.isna() & frame["value"].notna()
    if bad.any():
        _refuse_row(path, "value", frame["value"], bad.to_numpy(), "is not a number")
    huge = ~(numbers.abs() <= FLOAT32_MAX) & numbers.notna()
    if huge.any():
        _refuse_row(path, "value", frame["value"], huge.to_numpy(), _OUT_OF_RANGE)
    frame["value"] = numbers.astype(np.float64)
    text = frame["timestamp"]
    wordy = text.notna() & ~text.astype(str).str.contains(r"\d")  # 'now', 'today'
    if wordy.any():
        _refuse_row(path, "timestamp", text, wordy.to_numpy(), "is not a date and time")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "could not infer format"
        try:
            stamps = day_or_month(text)
        except ValueError as exc:
            raise DetectRunError(f"{path}: {exc}") from None
        try:
            if stamps is None:
                stamps = pd.to_datetime(text, errors="coerce")
        except (ValueError, TypeError) as exc:
            why = (
                "UTC offsets differ between rows (daylight saving?); write them all in UTC"
                if "utc=True" in str(exc)
                else " ".join(str(exc).split())
            )
            raise DetectRunError(f"{path}: timestamps do not parse as one series: {why}") from None
        if stamps.isna().any():  # ISO 8601 with and without fractions, as str(datetime) writes
            with contextlib.suppress(ValueError, TypeError):
                iso = pd.to_datetime(text, errors="coerce", format="ISO8601")
                stamps = iso if iso.notna().all() else stamps
        if stamps.isna().any():
            bad = stamps.isna().to_numpy()
            mixed = pd.to_datetime(text, errors="coerce", format="mixed", utc=True)
            if mixed.notna().all():
                why = f"is in another format than data row 1 ({text.iloc[0]!r}); use one format"
                _refuse_row(path, "timestamp", text, bad, why)
            epoch = text.astype(str).str.fullmatch(r"\d{9,}(\.\d*)?")
            why = "does not parse" + (
                "; NAB's timestamps are dates such as 2015-01-01 00:00:00, not Unix times"
                if epoch.all()
                else ""
            )
            _refuse_row(path, "timestamp", text, bad, why)
    return frame, pd.DatetimeIndex(stamps)


_OUT_OF_RANGE = f"is infinite or does not fit float32 (|x| <= {FLOAT32_MAX:.3g})"


def _separated(header: str) -> str:
    """Why a header of one field holding ``;``, a tab or ``|`` is not NAB's, else ``""``."""
    separator = next((c for c in ";\t|" if c in header), "")
    if not separator:
        return ""
    points = ", with decimal points" if separator == ";" else ""
    return (
        f"the header {shown(header)} is one field holding {separator!r}: the file seems "
        f"separated by {separator!r}; save it comma-separated{points}"
    )


def _extra_fields(path: Path) -> str:
    """The first data row of ``path`` with fields beyond its header's (other than one
    empty field), and the fix."""
    from pipeline.data.text_file import open_text

    with open_text(path, errors="replace") as file:
        rows = (row for row in csv.reader(file) if row)  # pandas skips blank lines too
        header = next(rows, [])
        if header and header[0].lstrip().startswith("#"):
            return (
                f"line 1 is a comment ({shown(header[0])}); a NAB file starts with its "
                "header timestamp,value: delete the comment lines"
            )
        if len(header) == 1 and (hint := _separated(header[0])):
            return hint
        for number, row in enumerate(rows, 1):
            if row[len(header) :] not in ([], [""]):
                return (
                    f"data row {number} has {len(row)} fields, the header "
                    f"{shown(','.join(header))} has {len(header)}; remove the fields after "
                    "the value"
                )
    return "data rows have more fields than the header; remove the fields after the value"


# A first timestamp whose day and month could be either way round: 01/09/2015, 1.9.15.
_DAY_OR_MONTH = re.compile(r"\s*(0?[1-9]|1[0-2])[-/.](0?[1-9]|1[0-2])[-/.]\d")
# A first timestamp that could be year-first with a two-digit year: 15-09-01, 15/09/01
# (the data reader's candidates too: :func:`pipeline.data.timestamps.parse_times`).
_SHORT_YEAR = re.compile(r"\s*\d{1,2}[-/]\d{1,2}[-/]\d{2}(?!\d)")


def day_or_month(text: pd.Series) -> pd.Series | None:
    """Timestamps whose first one could be day-first or month-first (``01/09/2015``), or
    year-first with a two-digit year (``15-09-01``), read the way that parses every row
    and puts the rows closer together, as the data reader does (pandas takes one way from
    the first row alone); None for other timestamps or when no way parses every row.

    Raises ValueError when two ways parse every row and fit equally well."""
    from pipeline.data.timestamps import closest_reading

    first = str(text.iloc[0]) if len(text) else ""
    short_year = _SHORT_YEAR.match(first) is not None
    if not (short_year or _DAY_OR_MONTH.match(first)):
        return None
    ways: list[dict[str, bool]] = [{"dayfirst": False}, {"dayfirst": True}]
    readings, yearfirst = [], None
    for way in ways + ([{"yearfirst": True}] if short_year else []):
        try:
            reading = pd.to_datetime(text, **way)
        except (ValueError, TypeError, OverflowError):
            continue
        readings.append(reading)
        yearfirst = reading if "yearfirst" in way else yearfirst
    if not readings:
        return None
    best, rival = closest_reading(readings)
    if rival is not None:
        a, b = best.iloc[0], rival.iloc[0]
        year_tie = any(r is yearfirst for r in (best, rival)) and yearfirst is not None
        why = (
            f"fit two readings equally well ({a:%Y-%m-%d} or {b:%Y-%m-%d})"
            if year_tie
            else "read as day/month and as month/day equally well"
        )
        raise ValueError(
            f"timestamps such as {first!r} {why}; write ISO-8601 dates (2015-09-01 00:00:00)"
        )
    return best


def _refuse_row(path: Path, column: str, cells: pd.Series, bad: np.ndarray, why: str) -> None:
    row = int(np.nonzero(bad)[0][0])
    cell = cells.iloc[row]
    text = "an empty cell" if pd.isna(cell) else shown(cell) if isinstance(cell, str) else str(cell)
    raise DetectRunError(f"{path}: {column} {text} in data row {row + 1} {why}")


def result_path(out_dir: str | Path, detector: str, data_file: Path) -> Path:
    """``OUT/<detector>/<category>/<detector>_<file>.csv``: where NAB's scorer looks."""
    return Path(out_dir) / detector / data_file.parent.name / f"{detector}_{data_file.name}"


def detect_nab(
    nab_dir: str | Path,
    out_dir: str | Path,
    detector: str = DEFAULT_DETECTOR,
    *,
    nab_range: bool = False,
    progress: Callable[[str], None] | None = None,
    workers: int | None = None,
    check: Callable[[dict[Path, pd.DatetimeIndex]], None] | None = None,
) -> list[Path]:
    """Write a NAB result file for every data file under ``nab_dir`` (see module doc),
    scoring up to ``workers`` files at once in processes of their own (default: one per
    CPU this process may use; 1 scores them here, one after another).

    ``check`` gets every data file's timestamps once all are read, before any is scored,
    and may refuse the run (a DetectRunError). A run that fails or is interrupted leaves
    ``out_dir`` as it was: results are moved into place once every file is scored."""
    check_detector(detector)
    files = nab_data_files(nab_dir)
    if progress is not None:
        for path in skipped_files(nab_dir):
            progress(f"skipped {path}: {_skip_reason(path)}")
    data = {p.resolve() for p in files}
    inputs, refused = [], []
    for path in files:  # every file is checked before any is scored
        try:
            inputs.append(_checked_input(path, out_dir, detector, nab_dir, data, progress))
        except DetectRunError as exc:
            refused.append(str(exc))
    if len(refused) == 1:
        raise DetectRunError(refused[0])
    if refused:
        more = f"; and {len(refused) - 3} more" if len(refused) > 3 else ""
        raise DetectRunError(
            f"{len(refused)} of {len(files)} files cannot be scored, nothing written: "
            + "; ".join(refused[:3])
            + more
        )
    if check is not None:
        check({path: stamps for path, _, stamps, _ in inputs})
    made: list[Path] = []  # folders this run creates, parents first: removed if it fails
    staged: list[tuple[Path, Path]] = []  # (temporary, final): moved once all are written
    done = False
    processes = min(workers or usable_cpus(), max(len(inputs), 1))
    if progress is not None and inputs:
        rows = sum(len(frame) for _, frame, _, _ in inputs)
        progress(
            f"scoring {len(inputs)} files ({rows:,} rows) with {detector!r} in {processes} "
            f"process{'es' if processes > 1 else ''}; a line as each file is done"
        )
    try:
        _make_folders(Path(out_dir), [out.parent for *_, out in inputs], made)
        scored = _scored(inputs, detector, nab_range, processes)
        try:
            for (path, frame, _, out), scores in zip(inputs, scored, strict=True):
                temporary = _staged_path(out)
                staged.append((temporary, out))
                values = frame["value"].to_numpy()
                try:
                    pd.DataFrame(
                        {"timestamp": frame["timestamp"], "value": values, "anomaly_score": scores}
                    ).to_csv(temporary, index=False)
                except OSError as exc:
                    raise DetectRunError(f"cannot write {out} ({exc.strerror})") from None
                if progress is not None:
                    progress(f"{path.parent.name}/{path.name}: {len(frame)} rows scored")
        finally:
            scored.close()  # an error above stops the files still being scored
        for k, (temporary, out) in enumerate(staged):
            try:
                temporary.replace(out)
            except OSError as exc:
                raise DetectRunError(
                    f"cannot write {out} ({exc.strerror}); {k} of {len(staged)} result files "
                    "were already in place"
                ) from None
        done = True
    finally:
        if not done:  # clean-up must not hide the error being raised
            for temporary, _ in staged:
                with contextlib.suppress(OSError):
                    temporary.unlink(missing_ok=True)
            for folder in reversed(made):
                with contextlib.suppress(OSError):
                    folder.rmdir()
    return [out for _, out in staged]


def _make_folders(out_dir: Path, folders: list[Path], made: list[Path]) -> None:
    """Create ``folders`` (and their parents), adding each one created to ``made``."""
    for folder in dict.fromkeys(folders):
        for missing in reversed([f for f in (folder, *folder.parents) if not f.exists()]):
            try:
                missing.mkdir()
            except OSError as exc:
                raise DetectRunError(
                    f"--out {out_dir}: cannot create {missing} ({exc.strerror})"
                ) from None
            made.append(missing)


def _scored(
    inputs: list[tuple[Path, pd.DataFrame, pd.DatetimeIndex, Path]],
    detector: str,
    nab_range: bool,
    workers: int,
) -> Generator[np.ndarray]:
    """Each input's scores, in order: here, or in up to ``workers`` processes (each file
    is independent; a process of one thread per file)."""
    jobs = [
        (frame["value"].to_numpy(), stamps, detector, f"{path.parent.name}/{path.name}")
        for path, frame, stamps, _ in inputs
    ]
    if workers <= 1 or len(jobs) <= 1:
        for values, stamps, name, key in jobs:
            yield score_rows(values, stamps, name, key, nab_range=nab_range)
        return
    pool = ProcessPoolExecutor(
        min(workers, len(jobs)), mp_context=get_context("spawn"), initializer=_one_thread
    )
    finished = False
    try:
        futures = [pool.submit(score_rows, *job, nab_range=nab_range) for job in jobs]
        for future in futures:
            yield future.result()
        finished = True
    finally:
        busy = [] if finished else list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in busy:  # an error or Ctrl-C: stop the files still being scored
            process.terminate()


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the system has one)."""
    affinity = getattr(os, "sched_getaffinity", None)  # not on macOS or Windows
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def _one_thread() -> None:
    """A scoring process's numerical libraries use one thread: the files are the
    parallelism, and more threads than cores only contend."""
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)


def _checked_input(
    path: Path,
    out_dir: str | Path,
    detector: str,
    nab_dir: str | Path,
    data: set[Path],
    progress: Callable[[str], None] | None,
) -> tuple[Path, pd.DataFrame, pd.DatetimeIndex, Path]:
    """``path`` read and checked, with its result path; a DetectRunError if it cannot be."""
    frame, stamps = read_nab_rows(path)
    if not len(frame):
        raise DetectRunError(f"{path}: no data rows")
    if progress is not None and frame["value"].isna().all():
        progress(
            f"warning: {path}: no readings (every value is missing); its anomaly scores are all 0"
        )
    back = np.flatnonzero(stamps[1:] < stamps[:-1])
    if progress is not None and len(back):
        progress(
            f"warning: {path}: data row {back[0] + 2} is earlier than the row before it; "
            "scored in file order, as NAB streams rows (NAB's scorer needs time order)"
        )
    out = result_path(out_dir, detector, path)
    _check_result_path(out, path)
    if out.resolve() in data:
        raise DetectRunError(
            f"cannot write {out}: it is a data file of --nab-dir {nab_dir} (--out {out_dir} "
            "holds the data); choose an --out outside the data directory"
        )
    return path, frame, stamps, out


def _staged_path(out: Path) -> Path:
    """Where ``out`` is written before every file of the run is scored."""
    return out.with_name(f".{out.name}.partial")


def _check_result_path(out: Path, data_file: Path) -> None:
    """Refuse, before anything is scored, a result path that could not be written: a
    folder in its place, a file in place of its category folder, or a name too long."""
    if len(os.fsencode(_staged_path(out).name)) > NAME_MAX:
        raise DetectRunError(
            f"{data_file}: its result file name {out.name!r} is too long to write (over "
            f"{NAME_MAX - len('..partial')} bytes); shorten the data file's name"
        )
    if out.parent.exists() and not out.parent.is_dir():
        raise DetectRunError(f"cannot write {out}: {out.parent} is a file, not a folder")
    if out.exists() and not out.is_file():
        raise DetectRunError(f"cannot write {out}: it is a folder or not a regular file")


def _skip_reason(path: Path) -> str:
    """Why :func:`nab_data_files` leaves ``path`` out, and the fix."""
    if path.is_symlink() and not path.exists():
        return "a link to nothing"
    if path.exists() and not path.is_file():
        return "not a regular file"
    if path.name.startswith(".") or path.parent.name.startswith("."):
        return "a hidden file (such as macOS's ._ files), not data"
    if path.suffix != ".csv":
        return f"named {path.suffix}; rename it to {path.stem}.csv to score it"
    return "not a <category>/<file>.csv data file"
