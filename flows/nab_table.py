"""NAB's score table of result files written by ``roadcast detect`` (``--score``).

For every category with result files under ``OUT/<detector>/`` the labelled windows are
read from the data directory (``<category>_windows.json`` beside the category folders,
as in ``../shared/data/nab``, or NAB's own ``../labels/combined_windows.json``), and the
files are scored by NAB's rules (:mod:`models.anomaly.nab_score`) on every profile:

* **NAB threshold**: the threshold optimised on that category's files alone, as NAB's
  optimiser does (and as the published per-category tables were made);
* **fixed threshold** (when the detector has one, e.g. the ensemble's ``1 - A``): chosen
  before the data was seen, the honest number;
* a category without windows (artificialNoAnomaly) reports its false-positive rows at
  the fixed threshold: NAB cannot normalise a score there; nor where NAB's null detector
  already scores perfectly (windows that hold every scorable row): ``n/a``.

The last row scores all categories found together with one threshold, as NAB scores its
whole corpus.
"""

from __future__ import annotations

import contextlib
import os
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from flows.detect import DetectRunError, nab_data_files, read_nab_rows
from models.anomaly.nab_score import (
    PROFILES,
    LabeledFile,
    NabFormatError,
    NabUndefinedError,
    Windows,
    nab_score,
    read_result_scores,
    read_windows,
    score_at,
    sweep,
)


@dataclass(frozen=True)
class CategoryScore:
    """NAB's numbers of one category (or ``"all"``)."""

    category: str
    files: int
    windows: int
    nab_threshold: dict[str, float]  # per profile, threshold optimised on this category
    fixed_threshold: dict[str, float]  # per profile, at the detector's own threshold
    false_positives: int | None  # rows detected at the fixed threshold, when it is known


def category_windows(nab_dir: Path, category: str) -> dict[Path, Windows]:
    """The windows of each data file of ``category``, keyed by its path, from
    ``<category>_windows.json`` or NAB's ``labels/combined_windows.json``, which must name
    every data file of the category and no other file of it (names compared in Unicode
    NFC: macOS writes file names decomposed, NFD)."""
    own = nab_dir / f"{category}_windows.json"
    combined = Path(os.path.abspath(nab_dir)).parent / "labels" / "combined_windows.json"
    path = own if own.is_file() else combined
    if not path.is_file():
        raise DetectRunError(
            f"no windows for {category}: neither {own} nor {combined} exists; --score needs "
            "NAB's label windows"
        )
    windows = read_windows(path)
    own_windows = {k: v for k, v in windows.items() if _nfc(k).startswith(_nfc(f"{category}/"))}
    foreign = sorted(k for k in windows if k not in own_windows) if path == own else []
    if foreign:
        raise DetectRunError(
            f"{path} has windows under {', '.join(map(repr, foreign[:3]))}, which name no file "
            f'of {category}: write each key as "{category}/<file>.csv" (or drop the entry)'
        )
    labelled = {_nfc(k): v for k, v in own_windows.items()}
    if len(labelled) < len(own_windows):
        twice = sorted(k for k, n in Counter(map(_nfc, own_windows)).items() if n > 1)
        raise DetectRunError(
            f"{path} lists {', '.join(map(repr, twice[:3]))} twice, in two Unicode forms "
            "(NFC and NFD); keep one entry"
        )
    data = {
        _nfc(f"{category}/{p.name}"): p
        for p in nab_data_files(nab_dir)
        if p.parent.name == category
    }
    unlabelled = sorted(f"{category}/{p.name}" for k, p in data.items() if k not in labelled)
    if unlabelled:
        raise DetectRunError(
            f"{path} has no windows for {', '.join(unlabelled[:3])}"
            f"{' and more' if len(unlabelled) > 3 else ''}; --score needs an entry for every "
            'data file ("category/file.csv": [] when it has no anomaly)'
        )
    renamed = sorted(k for k in own_windows if not k.endswith(".csv") and (nab_dir / k).is_file())
    if renamed:
        raise DetectRunError(
            f"{path} labels {', '.join(renamed[:3])}, which roadcast detect does not read (only "
            "<category>/<file>.csv): rename the file and its entry to .csv"
        )
    ghosts = sorted(k for k in own_windows if _nfc(k) not in data)
    if ghosts:
        raise DetectRunError(
            f"{path} has windows for {', '.join(ghosts[:3])}"
            f"{' and more' if len(ghosts) > 3 else ''}, not a data file of "
            f"{nab_dir / category}: the score would leave those windows out; restore the file "
            "or drop its entry"
        )
    return {data[k]: v for k, v in sorted(labelled.items())}


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def _score(
    files: list[LabeledFile], scores: list[np.ndarray], threshold: float | None
) -> tuple[dict[str, float], dict[str, float], int | None]:
    sweeps = [sweep(f) for f in files]
    windows = sum(s.n_windows for s in sweeps)
    missable = sum(len(np.unique(s.window[s.scorable & (s.window >= 0)])) for s in sweeps)
    best: dict[str, float] = {}
    fixed: dict[str, float] = {}
    fps = None
    for profile, cost in PROFILES.items():
        if windows:
            with contextlib.suppress(NabUndefinedError):  # n/a: NAB cannot normalise
                best[profile] = round(nab_score(sweeps, scores, profile).score, 2)
        if threshold is not None:
            rows = score_at(sweeps, scores, cost, threshold)
            fps = sum(r.fp for r in rows)
            if windows:
                null = -cost.fn * missable  # never firing: windows in the probation cost nothing
                raw = sum(r.score for r in rows)
                fixed[profile] = round(100 * (raw - null) / (cost.tp * windows - null), 2)
    return best, fixed, fps


def labelled_categories(
    nab_dir: str | Path, stamps: dict[Path, pd.DatetimeIndex] | None = None
) -> dict[str, list[LabeledFile]]:
    """Every category of ``nab_dir`` (sorted) with its files and their windows, checked as
    NAB scores them: windows on data rows, sorted and disjoint, rows in time order.
    ``stamps``: each data file's timestamps when already read (``roadcast detect --score``
    checks them so, before scoring anything); else the files are read here."""
    root = Path(nab_dir)
    files = nab_data_files(root)
    if stamps is None:
        stamps = {p: read_nab_rows(p)[1] for p in files}
    categories: dict[str, list[LabeledFile]] = {}
    for category in sorted({p.parent.name for p in files}):  # not stale ones
        categories[category] = [
            LabeledFile(f"{category}/{p.name}", stamps[p], windows)
            for p, windows in category_windows(root, category).items()
        ]
        try:
            for file in categories[category]:
                sweep(file)
        except NabFormatError as exc:
            raise DetectRunError(str(exc)) from None
    return categories


def score_results(
    nab_dir: str | Path,
    out_dir: str | Path,
    detector: str,
    threshold: float | None,
    *,
    labelled: dict[str, list[LabeledFile]] | None = None,
) -> list[CategoryScore]:
    """NAB's table of ``OUT/<detector>/<category>/`` for every category of ``nab_dir``
    (a category left in ``OUT`` by an earlier run on other data is not scored);
    ``labelled``: :func:`labelled_categories` of ``nab_dir`` when already read."""
    root = Path(out_dir) / detector
    if labelled is None:
        labelled = labelled_categories(nab_dir)
    if not root.is_dir():
        raise DetectRunError(f"no result files under {root}; run roadcast detect first")
    rows: list[CategoryScore] = []
    all_files: list[LabeledFile] = []
    all_scores: list[np.ndarray] = []
    for category, files in labelled.items():
        try:
            scores = [read_result_scores(root, detector, f) for f in files]
        except NabFormatError as exc:
            raise DetectRunError(str(exc)) from None
        best, fixed, fps = _score(files, scores, threshold)
        windows = sum(len(f.windows) for f in files)
        rows.append(CategoryScore(category, len(files), windows, best, fixed, fps))
        all_files += files
        all_scores += scores
    best, fixed, fps = _score(all_files, all_scores, threshold)
    windows = sum(len(f.windows) for f in all_files)
    total = "all" if "all" not in labelled else "all categories"  # a folder may be "all"
    rows.append(CategoryScore(total, len(all_files), windows, best, fixed, fps))
    return rows
