"""NAB's scoring rules (Numenta Anomaly Benchmark v1.1), re-implemented from its source.

Written from ``nab/sweeper.py``, ``nab/scorer.py``, ``nab/optimizer.py``, ``nab/runner.py``
(``normalize``), ``nab/util.py`` (``getProbationPeriod``) and ``config/profiles.json`` of
numenta/NAB, so that our numbers sit beside the published ones:

* **Rows, not time.** Every original data row is scored; a row is a detection when its
  ``anomaly_score >= threshold``.
* **Probationary period.** The first ``min(floor(0.15 n), 0.15 * 5000)`` rows of each file
  are not scored (detectors learn there).
* **Windows.** A labelled window starts and ends on data rows. Inside a window of width
  ``w`` whose last row is ``r``, a detection at row ``i`` earns
  ``A_TP * S(-(r - i + 1) / w) / S(-1)`` with the scaled sigmoid
  ``S(x) = 2 / (1 + exp(5x)) - 1`` (``-1`` for ``x >= 3``): the earliest detection of a
  window earns exactly ``A_TP``, a late one little. Only the best (earliest) detection
  of a window counts; a window without detection costs ``-A_FN``.
* **False positives.** Every detected row outside the windows costs
  ``A_FP * S(|r_prev - i| / (w_prev - 1))`` after a window (``r_prev``, ``w_prev``: the
  closest preceding window), so a detection just after a window costs almost nothing,
  and ``-A_FP`` when no window precedes it.
* **Threshold.** One threshold for all files of the corpus, the one that maximises the
  summed raw score (NAB sweeps every distinct anomaly score; ties go to the highest).
* **Normalisation.** ``100 * (raw - null) / (perfect - null)``: ``null`` is the raw score
  of NAB's null detector (constant 0.5, threshold optimised: it never fires, so every
  scorable window is a false negative), ``perfect`` is ``A_TP`` times the number of
  windows. A detector that never fires scores 0; one that fires exactly at the start of
  every window, and nowhere else, scores 100.

Profiles (``config/profiles.json``): ``standard`` (A_TP 1, A_FP 0.11, A_FN 1),
``reward_low_FP_rate`` (A_FP 0.22), ``reward_low_FN_rate`` (A_FN 2).

Checked against NAB itself
--------------------------
* **Row values.** NAB's stored result files carry its per-row ``S(t)`` scores. For
  ``results/contextOSE/realTraffic/contextOSE_speed_7578.csv`` (NAB's thresholds from
  ``config/thresholds.json``) this module gives the same numbers to 12 digits: the TP
  of the first window, 0.871604206333; an FP 32 rows after a 29-row window on the
  ``reward_low_FN_rate`` profile, -0.109276714495; FPs far from any window, -A_FP
  (``tests/test_nab_score.py`` encodes these cases).
* **Published realTraffic scores.** NAB's random (seed 42) and windowedGaussian
  detectors, run on the 7 files and scored here with thresholds optimised on these files
  alone, give 24.40 and 81.95 (published 24.4 and 82.0; ``tests/test_nab_score.py``).
  See ``REFERENCE_CHECK`` in :mod:`benchmarks.anomaly`.
* **Sigmoid edge.** NAB v1.1's sweeper returns ``-1`` for positions ``>= 3`` (its older
  scorer for ``> 3``); this module follows the sweeper. NAB divides by zero for an FP
  after a one-row window; here such an FP costs ``-A_FP``.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

PROBATION_PERCENT = 0.15
# A file's labelled anomaly windows: (start, end) pairs.
Windows = tuple[tuple[pd.Timestamp, pd.Timestamp], ...]
# NAB's runner starts the threshold sweep above every possible score: nothing detected.
START_THRESHOLD = 1.1


class NabFormatError(ValueError):
    """A NAB data, window or result file that cannot be scored as NAB would."""


class NabUndefinedError(NabFormatError):
    """A corpus whose normalised score is undefined: NAB's null detector scores perfectly."""


@dataclass(frozen=True)
class CostMatrix:
    """Weights of one NAB application profile."""

    tp: float
    fp: float
    fn: float
    tn: float = 1.0


PROFILES: dict[str, CostMatrix] = {
    "standard": CostMatrix(tp=1.0, fp=0.11, fn=1.0),
    "reward_low_FP_rate": CostMatrix(tp=1.0, fp=0.22, fn=1.0),
    "reward_low_FN_rate": CostMatrix(tp=1.0, fp=0.11, fn=2.0),
}


def scaled_sigmoid(position: float) -> float:
    """NAB's scaled sigmoid ``2 sigmoid(-5 x) - 1``, clamped to ``-1`` for ``x >= 3``.

    ``x = -1`` (the left edge of a window) gives 0.98661, ``x = 0`` (its right edge) 0,
    ``x = 1`` (one window width after it) -0.98661.
    """
    if position >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


def probation_length(n_rows: int, percent: float = PROBATION_PERCENT) -> int:
    """Rows at the start of a file that NAB does not score: 15 %, at most 750."""
    return int(min(math.floor(percent * n_rows), percent * 5000))


@dataclass(frozen=True, eq=False)
class LabeledFile:
    """One NAB data file: its row timestamps and its labelled anomaly windows.

    ``name`` is the corpus-relative path (``realTraffic/speed_6005.csv``); ``timestamps``
    has one entry per original row (duplicates allowed, as in NAB's data); ``windows``
    are ``(start, end)`` pairs, each starting and ending on a row timestamp.
    """

    name: str
    timestamps: pd.DatetimeIndex
    windows: Windows

    @property
    def n_rows(self) -> int:
        return len(self.timestamps)


@dataclass(frozen=True, eq=False)
class Sweep:
    """Per-row facts of a :class:`LabeledFile` that do not depend on the detector.

    ``window`` int64 ``[row]``: window number within the file, ``-1`` outside every
    window. ``scorable`` bool ``[row]``: False in the probationary period. ``tp_value``
    float64 ``[row]``: ``S(position) / S(-1)`` inside windows (earn ``A_TP`` times it);
    ``fp_value`` float64 ``[row]``: ``S(distance)`` outside windows (earn ``A_FP`` times
    it, a negative number).
    """

    name: str
    window: np.ndarray
    scorable: np.ndarray
    tp_value: np.ndarray
    fp_value: np.ndarray
    n_windows: int


def sweep(file: LabeledFile, probation_percent: float = PROBATION_PERCENT) -> Sweep:
    """Walk the rows of ``file`` as NAB's ``Sweeper.calcSweepScore`` does.

    Raises
    ------
    NabFormatError
        When a window does not start and end on a row timestamp, or windows overlap or
        are out of order: NAB would silently skip such windows; when the rows are not in
        time order.
    """
    stamps = list(file.timestamps)
    back = [i for i in range(1, len(stamps)) if stamps[i] < stamps[i - 1]]
    if back:
        raise NabFormatError(
            f"{file.name}: data row {back[0] + 1} ({stamps[back[0]]}) is earlier than the row "
            f"before it ({stamps[back[0] - 1]}); NAB scores windows over rows in time order: "
            "sort the file's rows"
        )
    first_row: dict[pd.Timestamp, int] = {}
    for i, stamp in enumerate(stamps):
        first_row.setdefault(stamp, i)
    n = len(stamps)
    window = np.full(n, -1, dtype=np.int64)  # [row]
    tp_value = np.zeros(n)  # [row]
    fp_value = np.zeros(n)  # [row]
    max_tp = scaled_sigmoid(-1.0)
    bounds: list[tuple[int, int]] = []
    for start, end in file.windows:
        if start not in first_row or end not in first_row:
            zoned = file.timestamps.tz is not None
            hint = ""
            if zoned != (pd.Timestamp(start).tz is not None):
                data_zone = "a time zone" if zoned else "no time zone"
                hint = f" (the data's timestamps have {data_zone}, the window's not alike)"
            raise NabFormatError(
                f"{file.name}: window [{start}, {end}] does not start and end on data "
                f"rows{hint}; NAB windows must use timestamps of the file (NAB's labeler "
                "aligns them)"
            )
        left, right = first_row[start], first_row[end]
        if right < left or (bounds and left <= bounds[-1][1]):
            raise NabFormatError(
                f"{file.name}: windows must be sorted and disjoint, got [{start}, {end}] "
                f"after rows {bounds[-1] if bounds else ()}"
            )
        bounds.append((left, right))
    # NAB leaves a window on the row whose timestamp equals the window end; with duplicate
    # timestamps that is the first such row, which first_row gives.
    prev_right: int | None = None
    prev_width = 0.0
    k = 0
    i = 0
    while i < n:
        if k < len(bounds) and i == bounds[k][0]:
            left, right = bounds[k]
            width = float(right - left + 1)
            for j in range(left, right + 1):
                window[j] = k
                tp_value[j] = scaled_sigmoid(-(right - j + 1) / width) / max_tp
            prev_right, prev_width = right, width
            k += 1
            i = right + 1
            continue
        if prev_right is None:
            fp_value[i] = -1.0
        elif prev_width <= 1:
            # NAB divides by (width - 1); a one-row window makes every later FP a full one.
            fp_value[i] = -1.0
        else:
            fp_value[i] = scaled_sigmoid(abs(prev_right - i) / (prev_width - 1.0))
        i += 1
    scorable = np.arange(n) >= probation_length(n, probation_percent)
    return Sweep(file.name, window, scorable, tp_value, fp_value, len(bounds))


@dataclass(frozen=True)
class ThresholdScore:
    """Raw NAB score of a corpus at one threshold, with the row counts."""

    threshold: float
    score: float
    tp: int
    tn: int
    fp: int
    fn: int


def _check_scores(sweeps: Sequence[Sweep], scores: Sequence[np.ndarray]) -> list[np.ndarray]:
    if len(sweeps) != len(scores):
        raise NabFormatError(f"{len(scores)} score arrays for {len(sweeps)} files")
    checked = []
    for s, a in zip(sweeps, scores, strict=True):
        arr = np.asarray(a, dtype=np.float64)
        if arr.shape != s.window.shape:
            raise NabFormatError(
                f"{s.name}: {arr.shape[0] if arr.ndim else 0} anomaly scores for "
                f"{s.window.shape[0]} rows; NAB needs one score per original row"
            )
        if not np.isfinite(arr).all() or arr.min(initial=0.0) < 0 or arr.max(initial=0.0) > 1:
            raise NabFormatError(f"{s.name}: anomaly scores must be finite and in [0, 1]")
        checked.append(arr)
    return checked


def threshold_scores(
    sweeps: Sequence[Sweep], scores: Sequence[np.ndarray], cost: CostMatrix
) -> list[ThresholdScore]:
    """Raw corpus score at every distinct anomaly score, highest threshold first.

    The first entry is NAB's start threshold 1.1 (nothing detected); entry ``k`` counts
    every scorable row whose score is ``>=`` its threshold as a detection
    (``Sweeper.calcScoreByThreshold`` over the rows of all files).
    """
    arrays = _check_scores(sweeps, scores)
    score_parts, in_window, value, window_key = [], [], [], []
    offset = 0
    n_windows = 0
    for s, a in zip(sweeps, arrays, strict=True):
        keep = s.scorable
        score_parts.append(a[keep])
        inside = s.window[keep] >= 0
        in_window.append(inside)
        value.append(np.where(inside, s.tp_value[keep] * cost.tp, s.fp_value[keep] * cost.fp))
        window_key.append(np.where(inside, s.window[keep] + offset, -1))
        offset += s.n_windows
        # Only windows with a scorable row take part (NAB's _prepareScoreByThresholdParts).
        n_windows += len(np.unique(s.window[keep][inside]))
    flat_score = np.concatenate(score_parts) if score_parts else np.empty(0)
    inside_all = np.concatenate(in_window) if in_window else np.empty(0, dtype=bool)
    value_all = np.concatenate(value) if value else np.empty(0)
    key_all = np.concatenate(window_key) if window_key else np.empty(0, dtype=np.int64)

    order = np.argsort(-flat_score, kind="stable")  # highest score first, as NAB sorts
    sorted_score = flat_score[order]
    sorted_inside = inside_all[order]
    sorted_value = value_all[order]
    sorted_key = key_all[order]
    # Gain of each processed row: an FP adds its (negative) value; a TP raises its window's
    # part from -A_FN to the best value seen so far in that window.
    gain = np.where(sorted_inside, 0.0, sorted_value)
    best: dict[int, float] = {}
    for pos in np.nonzero(sorted_inside)[0]:
        key = int(sorted_key[pos])
        old = best.get(key, -cost.fn)
        new = max(old, float(sorted_value[pos]))
        gain[pos] = new - old
        best[key] = new
    running = -cost.fn * n_windows + np.cumsum(gain)
    tp_run = np.cumsum(sorted_inside)
    fp_run = np.cumsum(~sorted_inside)
    n_in = int(inside_all.sum())
    n_out = int((~inside_all).sum())
    results = [ThresholdScore(START_THRESHOLD, -cost.fn * n_windows, 0, n_out, 0, n_in)]
    if len(sorted_score):
        last_of_group = np.nonzero(np.diff(sorted_score) != 0)[0]
        ends = np.append(last_of_group, len(sorted_score) - 1)
        for end in ends:
            tp, fp = int(tp_run[end]), int(fp_run[end])
            results.append(
                ThresholdScore(
                    float(sorted_score[end]), float(running[end]), tp, n_out - fp, fp, n_in - tp
                )
            )
    return results


def best_threshold(
    sweeps: Sequence[Sweep], scores: Sequence[np.ndarray], cost: CostMatrix
) -> ThresholdScore:
    """The threshold with the highest raw corpus score (NAB's ``optimizeThreshold``)."""
    table = threshold_scores(sweeps, scores, cost)
    return max(table, key=lambda row: row.score)  # first maximum: the highest threshold


def score_at(
    sweeps: Sequence[Sweep], scores: Sequence[np.ndarray], cost: CostMatrix, threshold: float
) -> list[ThresholdScore]:
    """Raw score of each file when its scorable rows with ``score >= threshold`` are
    detections (NAB's ``Sweeper.scoreDataSet``)."""
    out = []
    for s, a in zip(sweeps, _check_scores(sweeps, scores), strict=True):
        detected = s.scorable & (a >= threshold)
        inside = s.window >= 0
        total = float(np.sum(s.fp_value[detected & ~inside]) * cost.fp)
        for k in np.unique(s.window[s.scorable & inside]):
            hits = detected & (s.window == k)
            total += float(s.tp_value[hits].max()) * cost.tp if hits.any() else -cost.fn
        tp = int((detected & inside).sum())
        fp = int((detected & ~inside).sum())
        n_in = int((s.scorable & inside).sum())
        n_out = int((s.scorable & ~inside).sum())
        out.append(ThresholdScore(threshold, total, tp, n_out - fp, fp, n_in - tp))
    return out


@dataclass(frozen=True)
class NabResult:
    """A detector's NAB result on one profile."""

    profile: str
    threshold: float
    raw: float
    null: float
    perfect: float
    score: float
    tp: int
    fp: int
    fn: int
    windows_detected: int
    windows: int
    per_file: dict[str, float]


def windows_detected(
    sweeps: Sequence[Sweep], scores: Sequence[np.ndarray], threshold: float
) -> int:
    """Scorable windows with at least one detection at ``threshold``."""
    found = 0
    for s, a in zip(sweeps, _check_scores(sweeps, scores), strict=True):
        hit = s.scorable & (s.window >= 0) & (a >= threshold)
        found += len(np.unique(s.window[hit]))
    return found


def nab_score(
    sweeps: Sequence[Sweep], scores: Sequence[np.ndarray], profile: str = "standard"
) -> NabResult:
    """Normalised NAB score of one detector on a corpus, threshold optimised on that corpus.

    Parameters
    ----------
    sweeps : one :class:`Sweep` per file (from :func:`sweep`).
    scores : one float array ``[row]`` of anomaly scores in [0, 1] per file.
    profile : a key of :data:`PROFILES`.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown NAB profile {profile!r}; known: {', '.join(PROFILES)}")
    cost = PROFILES[profile]
    best = best_threshold(sweeps, scores, cost)
    null = best_threshold(sweeps, [np.full(s.window.shape, 0.5) for s in sweeps], cost).score
    perfect = cost.tp * sum(s.n_windows for s in sweeps)
    if perfect == null:
        raise NabUndefinedError("the corpus has no scorable window; NAB cannot normalise its score")
    per_file = score_at(sweeps, scores, cost, best.threshold)
    return NabResult(
        profile=profile,
        threshold=best.threshold,
        raw=best.score,
        null=null,
        perfect=perfect,
        score=100.0 * (best.score - null) / (perfect - null),
        tp=best.tp,
        fp=best.fp,
        fn=best.fn,
        windows_detected=windows_detected(sweeps, scores, best.threshold),
        windows=sum(s.n_windows for s in sweeps),
        per_file={s.name: r.score for s, r in zip(sweeps, per_file, strict=True)},
    )


# --- NAB files on disk -------------------------------------------------------------------


def read_windows(path: str | Path) -> dict[str, Windows]:
    """NAB's ``combined_windows.json`` format: ``{"category/file.csv": [[start, end], ...]}``."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a byte-order mark is not an error
        raw = json.loads(text, object_pairs_hook=_unique_keys)
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError included
        raise NabFormatError(f"cannot read NAB windows {path}: {exc}") from None
    except RecursionError:
        raise NabFormatError(f"cannot read NAB windows {path}: nested too deeply") from None
    if not isinstance(raw, dict):
        raise NabFormatError(
            f'{path}: expected an object {{"category/file.csv": [[start, end], ...]}}'
        )
    return {str(name): _windows(path, name, pairs) for name, pairs in raw.items()}


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's keys and values, refusing a key given twice (JSON keeps the last)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"{key!r} is listed twice")
        out[key] = value
    return out


def _windows(path: str | Path, name: str, pairs: object) -> Windows:
    if not isinstance(pairs, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(t, str) for t in p) for p in pairs
    ):
        raise NabFormatError(
            f"{path}: {name!r} must be a list of [start, end] timestamp strings, got {pairs!r:.80}"
        )
    out = []
    for start, end in pairs:
        if not all(any(c.isdigit() for c in t) for t in (start, end)):  # 'now': the clock's
            raise NabFormatError(f"{path}: {name!r} window [{start!r}, {end!r}] is not a time")
        try:
            out.append((pd.Timestamp(start), pd.Timestamp(end)))
        except (ValueError, OverflowError) as exc:
            raise NabFormatError(f"{path}: {name!r} window [{start!r}, {end!r}]: {exc}") from None
        if pd.isna(out[-1][0]) or pd.isna(out[-1][1]):
            raise NabFormatError(f"{path}: {name!r} window [{start!r}, {end!r}] is not a time")
        if _day_month_ambiguous(start) or _day_month_ambiguous(end):
            raise NabFormatError(
                f"{path}: {name!r} window [{start!r}, {end!r}] reads as day/month or "
                "month/day; write window times as YYYY-MM-DD HH:MM:SS, as NAB's labels do"
            )
    return tuple(out)


def _day_month_ambiguous(text: str) -> bool:
    """Whether ``text`` (not year-first) names another day when read day first: a window
    read month first could then silently fall on rows of a day-first data file."""
    if re.match(r"\s*\d{4}", text):  # year first (ISO 8601): always year, month, day
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            return bool(pd.Timestamp(text) != pd.to_datetime(text, dayfirst=True))
        except (ValueError, OverflowError):
            return True


def read_result_scores(results_dir: str | Path, detector: str, file: LabeledFile) -> np.ndarray:
    """Anomaly scores from ``<results>/<category>/<detector>_<file>.csv`` for ``file``."""
    category, _, base = file.name.rpartition("/")
    path = Path(results_dir) / category / f"{detector}_{base}"
    if not path.is_file():
        raise NabFormatError(f"no result file {path}; run `roadcast detect` first")
    frame = pd.read_csv(path)
    if list(frame.columns[:3]) != ["timestamp", "value", "anomaly_score"]:
        raise NabFormatError(f"{path}: columns must start timestamp,value,anomaly_score")
    if len(frame) != file.n_rows:
        raise NabFormatError(f"{path}: {len(frame)} rows, the data file has {file.n_rows}")
    return frame["anomaly_score"].to_numpy(dtype=np.float64)
