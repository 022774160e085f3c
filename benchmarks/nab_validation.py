"""Leave-one-category-out (LOCO) choice of NAB ensembles: every score from settings chosen
without the category it reports.

The corpus is NAB's six categories under ``<data>/nab`` (realTraffic, realAWSCloudwatch,
realAdExchange, realTweets, artificialWithAnomaly with labelled windows;
artificialNoAnomaly without: there every detection is a false positive).

**Candidates.** An ensemble is a :class:`~models.anomaly.ensemble.AlarmRule` over members of
:data:`flows.detect.MEMBERS` (each a calibrated detector; a member's false-alarm share
``alpha``) plus a rest period (a share of the file's probationary rows). Member scores are
computed once per file, row by row as ``roadcast detect`` does, and cached on disk
(:class:`ScoreCache`, under ``/tmp``), so a search never reruns a detector.

**Objective.** For a set of training categories, the mean over its labelled categories
``L`` of the normalised NAB score (standard profile) of ``L`` *together with*
artificialNoAnomaly's files, at the rule's own threshold: a false positive on a file
without anomalies costs ``A_FP`` as NAB counts it (no window precedes it).

**Search.** Greedy and deterministic: the best single member (over its ``alpha`` grid and
the rest grid), then the member and ``alpha`` that raise the objective most, until none
raises it by :data:`MIN_GAIN`; then one pass changing or dropping each member's ``alpha``.

**LOCO.** For each labelled category ``C``: choose on the five other categories (four
labelled and artificialNoAnomaly), then score ``C`` once (a) at the rule's threshold
(strict: nothing of ``C`` chosen) and (b) with NAB's threshold optimised on ``C`` alone (the
published table's protocol, for comparison). The shipped default is chosen the same way on
all six categories; its scores on them are in-sample and labelled so.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.anomaly.ensemble import AlarmRule, fired_rows, merged_pvalues
from models.anomaly.nab_score import (
    PROFILES,
    LabeledFile,
    Sweep,
    nab_score,
    read_windows,
    score_at,
    sweep,
)

CATEGORIES = (
    "realTraffic",
    "realAWSCloudwatch",
    "realAdExchange",
    "realTweets",
    "artificialWithAnomaly",
    "artificialNoAnomaly",
)
NO_ANOMALY = "artificialNoAnomaly"
LABELLED = tuple(c for c in CATEGORIES if c != NO_ANOMALY)
ALPHAS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
REST_SHARES = (0.1, 0.2, 0.3)
MIN_GAIN = 0.1  # normalised NAB points an added member must bring
STANDARD = PROFILES["standard"]


@dataclass(frozen=True, eq=False)
class CorpusFile:
    """One NAB file: values ``[row]`` (NaN = empty), timestamps, labelled windows, sweep."""

    category: str
    labeled: LabeledFile
    values: np.ndarray
    sweep: Sweep

    @property
    def name(self) -> str:
        return self.labeled.name

    @property
    def n_rows(self) -> int:
        return self.labeled.n_rows


Corpus = dict[str, list[CorpusFile]]


def load_corpus(
    nab_dir: Path, categories: Sequence[str] = CATEGORIES, files_per_category: int | None = None
) -> Corpus:
    """The files of ``categories`` with their windows (``<category>_windows.json``);
    ``files_per_category`` keeps the shortest files of each (quick runs)."""
    from flows.detect import read_nab_rows

    corpus: Corpus = {}
    for category in categories:
        windows = read_windows(nab_dir / f"{category}_windows.json")
        names = sorted(windows)
        if files_per_category is not None:
            by_size = sorted(names, key=lambda n: ((nab_dir / n).stat().st_size, n))
            names = sorted(by_size[:files_per_category])
        files = []
        for name in names:
            frame, stamps = read_nab_rows(nab_dir / name)
            labeled = LabeledFile(name, stamps, windows[name])
            files.append(CorpusFile(category, labeled, frame["value"].to_numpy(), sweep(labeled)))
        corpus[category] = files
    return corpus


# --------------------------------------------------------------------------- member scores


_HASHES: dict[str, str] = {}


def _code_digest(code: Any, digest: Any) -> None:
    """Feed a function's byte code, names and constants (not its line numbers) to ``digest``."""
    digest.update(code.co_code)
    digest.update(repr(code.co_names).encode())
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            _code_digest(const, digest)
        else:
            digest.update(repr(const).encode())


def _code_hash(member: str) -> str:
    """A hash of the code a member's scores depend on, as this process loaded it: the
    detector's modules (their files when first hashed) and the runner's functions (their
    byte code); a change of either invalidates the cache."""
    import importlib

    import flows.detect as detect

    if member not in _HASHES:
        digest = hashlib.sha256()
        base = member.removesuffix("pot")  # a tail variant runs its base member's code
        for name in ("base", "online", "calibration", base):
            try:
                module = importlib.import_module(f"models.anomaly.{name}")
            except ImportError:
                continue
            digest.update(Path(str(module.__file__)).read_bytes())
        builders = dict.fromkeys((detect.MEMBERS[base][1], detect.MEMBERS[member][1]))
        for function in (*builders, detect.member_scores, detect.file_info, detect.rows_panel):
            _code_digest(function.__code__, digest)
        _HASHES[member] = digest.hexdigest()[:12]
    return _HASHES[member]


@dataclass
class ScoreCache:
    """Member scores per file on disk: ``<root>/<member>-<range>-<code>/<category>/<file>.npy``.

    ``root`` defaults to ``ROADCAST_NAB_CACHE`` or ``/tmp/roadcast-nab-cache`` (never the
    repository); the code hash makes a changed detector recompute.
    """

    root: Path = field(
        default_factory=lambda: Path(
            os.environ.get("ROADCAST_NAB_CACHE", "/tmp/roadcast-nab-cache")
        )
    )

    def path(self, member: str, nab_range: bool, file: CorpusFile) -> Path:
        from flows.detect import RANGE_MEMBERS

        ranged = nab_range and member in RANGE_MEMBERS  # the others ignore the range
        tag = f"{member}-{'nabrange' if ranged else 'plain'}-{_code_hash(member)}"
        return self.root / tag / file.name.replace(".csv", ".npy")

    def scores(self, member: str, file: CorpusFile, nab_range: bool) -> np.ndarray:
        """The member's scores ``[row]`` of ``file``, computed once."""
        from flows.detect import member_scores

        path = self.path(member, nab_range, file)
        if path.is_file():
            cached = np.load(path)
            if cached.shape == (file.n_rows,):
                return cached
        scores = member_scores(
            file.values, file.labeled.timestamps, member, file.name, nab_range=nab_range
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, scores)
        tmp.replace(path)
        return scores


MemberScores = dict[str, dict[str, list[np.ndarray]]]  # member -> category -> [file][row]


def member_table(
    corpus: Corpus,
    members: Iterable[str],
    cache: ScoreCache,
    *,
    nab_range: bool = False,
    progress: Callable[[str], None] | None = None,
) -> MemberScores:
    """Every member's scores of every corpus file (from the cache where present)."""
    table: MemberScores = {}
    for member in members:
        table[member] = {}
        for category, files in corpus.items():
            table[member][category] = [cache.scores(member, f, nab_range) for f in files]
        if progress is not None:
            progress(f"member {member}: scores of {sum(map(len, corpus.values()))} files ready")
    return table


# --------------------------------------------------------------------------- candidates


@dataclass(frozen=True)
class Candidate:
    """An ensemble to evaluate: its alarm rule and rest period (share of the probation)."""

    rule: AlarmRule
    rest_share: float

    def describe(self) -> str:
        parts = " + ".join(f"{m} {a:g}" for m, a in self.rule.alphas)
        return f"{parts}, rest {self.rest_share:g} of probation"


def _rest(n_rows: int, share: float) -> int:
    from flows.detect import rest_rows

    return rest_rows(n_rows, share)


def detections(
    candidate: Candidate, table: MemberScores, category: str, index: int, n_rows: int
) -> np.ndarray:
    """0/1 detections ``[row]`` of one file under ``candidate`` (the rows that fire)."""
    pvalues = {m: 1.0 - table[m][category][index] for m in candidate.rule.members}
    score = 1.0 - merged_pvalues(candidate.rule, pvalues)
    out = np.zeros(n_rows)
    out[fired_rows(score, candidate.rule.threshold, _rest(n_rows, candidate.rest_share))] = 1.0
    return out


def normalised(raw: float, n_windows: int) -> float:
    """NAB's standard normalisation, ``100 (raw - null) / (perfect - null)``."""
    null = -STANDARD.fn * n_windows
    return 100.0 * (raw - null) / (STANDARD.tp * n_windows - null)


class Evaluator:
    """Raw standard NAB scores per category of candidates, memoised."""

    def __init__(self, corpus: Corpus, table: MemberScores) -> None:
        self.corpus = corpus
        self.table = table
        self._raw: dict[Candidate, dict[str, float]] = {}
        self.windows = {c: sum(f.sweep.n_windows for f in files) for c, files in corpus.items()}

    def raw(self, candidate: Candidate) -> dict[str, float]:
        """Summed raw score per category, detections at the rule's threshold."""
        if candidate not in self._raw:
            out = {}
            for category, files in self.corpus.items():
                sweeps = [f.sweep for f in files]
                found = [
                    detections(candidate, self.table, category, i, f.n_rows)
                    for i, f in enumerate(files)
                ]
                out[category] = sum(r.score for r in score_at(sweeps, found, STANDARD, 0.5))
            self._raw[candidate] = out
        return self._raw[candidate]

    def score(self, candidate: Candidate, category: str) -> float:
        """Normalised score of one labelled category at the rule's threshold."""
        return normalised(self.raw(candidate)[category], self.windows[category])

    def objective(self, candidate: Candidate, train: Sequence[str]) -> float:
        """Mean over ``train``'s labelled categories of their score with artificialNoAnomaly."""
        raw = self.raw(candidate)
        extra = raw.get(NO_ANOMALY, 0.0) if NO_ANOMALY in train else 0.0
        labelled = [c for c in train if c != NO_ANOMALY]
        return float(np.mean([normalised(raw[c] + extra, self.windows[c]) for c in labelled]))

    def false_positives(self, candidate: Candidate, category: str) -> int:
        """Detected scorable rows of a category's files (all false for artificialNoAnomaly)."""
        files = self.corpus[category]
        found = [
            detections(candidate, self.table, category, i, f.n_rows) for i, f in enumerate(files)
        ]
        return sum(r.fp for r in score_at([f.sweep for f in files], found, STANDARD, 0.5))


def _with(rule: AlarmRule, member: str, alpha: float | None) -> AlarmRule | None:
    """``rule`` with ``member`` at ``alpha`` (None: dropped); None when nothing is left."""
    alphas = [(m, a) for m, a in rule.alphas if m != member]
    if alpha is not None:
        alphas.append((member, alpha))
    alphas.sort()
    return AlarmRule(tuple(alphas)) if alphas else None


def choose(
    evaluator: Evaluator,
    train: Sequence[str],
    members: Sequence[str],
    alphas: Sequence[float] = ALPHAS,
    rests: Sequence[float] = REST_SHARES,
) -> tuple[Candidate, float]:
    """The greedy choice on ``train`` (module doc) and its objective."""

    def value(c: Candidate) -> float:
        return evaluator.objective(c, train)

    best: tuple[float, Candidate] | None = None
    for m in members:
        for a in alphas:
            for r in rests:
                c = Candidate(AlarmRule(((m, a),)), r)
                if best is None or value(c) > best[0] + 1e-12:
                    best = (value(c), c)
    assert best is not None
    current_value, current = best
    while True:
        step: tuple[float, Candidate] | None = None
        for m in members:
            if m in current.rule.members:
                continue
            for a in alphas:
                for r in rests:
                    rule = _with(current.rule, m, a)
                    assert rule is not None
                    c = Candidate(rule, r)
                    if step is None or value(c) > step[0] + 1e-12:
                        step = (value(c), c)
        if step is None or step[0] < current_value + MIN_GAIN:
            break
        current_value, current = step
    for m in list(current.rule.members):  # one refining pass
        options: list[float | None] = (
            [*alphas, None] if len(current.rule.members) > 1 else [*alphas]
        )
        for share in options:
            rule = _with(current.rule, m, share)
            if rule is None:
                continue
            for r in rests:
                c = Candidate(rule, r)
                if value(c) > current_value + 1e-12:
                    current_value, current = value(c), c
    return current, current_value


# --------------------------------------------------------------------------- LOCO


def output_scores(
    candidate: Candidate, table: MemberScores, corpus: Corpus, category: str
) -> list[np.ndarray]:
    """The ensemble's reported scores ``[row]`` of a category's files (``roadcast detect``'s)."""
    from flows.detect import ensemble_scores

    out = []
    for i, f in enumerate(corpus[category]):
        members = {m: table[m][category][i] for m in candidate.rule.members}
        out.append(ensemble_scores(members, f.n_rows, candidate.rule, candidate.rest_share))
    return out


@dataclass(frozen=True)
class FoldResult:
    """One held-out category: what was chosen without it and how it scored."""

    category: str
    chosen: Candidate
    train_objective: float
    score_fixed_threshold: float  # strict: the rule's threshold, chosen without this category
    score_nab_threshold: float  # the chosen ensemble, NAB's threshold optimised on it
    windows_detected: int
    windows: int
    false_positives: int


def loco(
    evaluator: Evaluator,
    members: Sequence[str],
    labelled: Sequence[str] = LABELLED,
    **grids: Sequence[float],
) -> list[FoldResult]:
    """One :class:`FoldResult` per labelled category of the corpus."""
    results = []
    categories = list(evaluator.corpus)
    for held in labelled:
        train = [c for c in categories if c != held]
        chosen, objective = choose(evaluator, train, members, **grids)
        files = evaluator.corpus[held]
        sweeps = [f.sweep for f in files]
        found = [
            detections(chosen, evaluator.table, held, i, f.n_rows) for i, f in enumerate(files)
        ]
        detected = 0
        for f, d in zip(files, found, strict=True):
            hit = f.sweep.scorable & (f.sweep.window >= 0) & (d > 0)
            detected += len(np.unique(f.sweep.window[hit]))
        nab = nab_score(sweeps, output_scores(chosen, evaluator.table, evaluator.corpus, held))
        results.append(
            FoldResult(
                held,
                chosen,
                round(objective, 2),
                round(evaluator.score(chosen, held), 2),
                round(nab.score, 2),
                detected,
                evaluator.windows[held],
                sum(r.fp for r in score_at(sweeps, found, STANDARD, 0.5)),
            )
        )
    return results


def fold_rows(results: Sequence[FoldResult]) -> list[dict[str, object]]:
    """JSON-ready rows of :func:`loco`'s results."""
    return [
        {
            "held_out": r.category,
            "chosen_on_the_others": r.chosen.describe(),
            "members": dict(r.chosen.rule.alphas),
            "rest_share": r.chosen.rest_share,
            "objective_on_the_others": r.train_objective,
            "loco_standard": r.score_fixed_threshold,
            "loco_settings_nab_threshold_on_category": r.score_nab_threshold,
            "windows_detected": f"{r.windows_detected}/{r.windows}",
            "false_positive_rows": r.false_positives,
        }
        for r in results
    ]


def mean_of(results: Sequence[FoldResult], attribute: str) -> float:
    return round(float(np.mean([getattr(r, attribute) for r in results])), 2)
