"""Run anomaly detectors over NAB data files, in streaming order, and write NAB result files.

``roadcast detect --nab-dir DIR --out OUT [--detector NAME]`` reads every ``*.csv`` under
``DIR`` (a NAB ``data`` directory: ``<category>/<file>.csv`` with ``timestamp,value``)
and writes ``OUT/<category>/<detector>_<file>.csv`` with ``timestamp,value,anomaly_score``,
one row per original row, timestamps as in the input: the files NAB's own scorer reads.

NAB's protocol, followed here
-----------------------------
* Rows are scored one by one, each from the rows up to it (the detectors' streaming
  ``update``); the detector sees the rows as consecutive steps (NAB scores rows, and its
  timestamps are irregular).
* The first 15 % of a file (NAB's probationary period, at most 750 rows) is the only
  data a detector may *fit* on: forecasters and autoencoders are trained there. All
  detectors also keep calibrating online on every row they have scored, as NAB's
  detectors do.
* One setting for every file: the presets in :data:`NAB_DETECTORS` are fixed in code;
  nothing is chosen per file, and a file's labels are never read while it is scored.

How the presets were chosen
---------------------------
*Which* preset to trust is decided on other data: :mod:`benchmarks.nab_validation`
builds NAB-style files (windows by NAB's rule) from the road simulator's labelled
incidents and faults, and ``benchmarks/anomaly.py`` scores every preset there as well
as on ``realTraffic`` (``benchmarks/results/anomaly.json``; the choices and their
scores: ``docs/decisions.md``, "NAB detector presets").

* ``interval`` and ``interval_range``: the forecast-interval detector on persistence
  forecasts, 3 horizons that must all agree (its design defaults). The normal-range
  check of ``interval_range`` and the repeat suppression (window 6, factor 0.5) are
  in-sample choices: they raise the realTraffic score.
* ``interval_h6``: the best standard score on the simulated validation corpus among a
  grid of 40 interval settings: 6 horizons, all agree, no range check, suppression
  window 36 with factor 0. It is *worse* on realTraffic than the in-sample
  ``interval_range``: the simulated incidents are not what NAB's labellers marked in
  these files, so validation there does not transfer.
* ``likelihood``: Numenta's NAB recipe with its published defaults, nothing tuned: the
  interval score as raw score, HTM's anomaly likelihood (:mod:`models.anomaly.likelihood`,
  learning period half the probation) and its new-extreme rule
  (:mod:`models.anomaly.range`, 5 % tolerance) that scores 1.
* ``windowed_gaussian``: NAB's own ``windowedGaussian`` baseline
  (:mod:`models.anomaly.gaussian`), a reference: it reproduces NAB's published
  realTraffic score (82.0) through this runner and our scorer.
* ``autoencoder`` and ``combined``: the LSTM autoencoder trained on the probationary rows,
  and its Bonferroni combination with ``interval_range``.

Presets other than ``windowed_gaussian`` and ``likelihood`` end with
:class:`models.anomaly.base.RepeatSuppressor`: after an episode's first anomalous row, rows
that are no more anomalous than the last ``window`` rows report ``factor`` times their
score, as an alert that already fired would stay quiet.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from models.anomaly.base import RepeatSuppressor, StreamingDetector, combine_scores
from models.panel import SensorPanel

PROBATION_PERCENT = 0.15

PostProcess = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``(values [row], scores [row]) -> scores [row]``, computed row by row (streaming)."""


class DetectRunError(ValueError):
    """A NAB directory or detector name that cannot be run; the message names the fix."""


@dataclass(frozen=True)
class NabDetector:
    """A named detector preset for NAB files.

    build : the streaming detectors of a file, given its probationary rows (their scores
        are combined with the Bonferroni rule); None when ``direct`` scores the rows.
    post : the post-processing of a file of ``n_rows`` rows.
    direct : float64 scores ``[row]`` straight from the values, row by row (a detector
        whose score must not be rounded to a :class:`Detection`'s float32).
    """

    name: str
    description: str
    build: Callable[[SensorPanel], list[StreamingDetector]] | None
    post: Callable[[int], PostProcess]
    direct: Callable[[np.ndarray], np.ndarray] | None = None


def probation_rows(n_rows: int) -> int:
    """NAB's probationary period: ``min(floor(0.15 n), 750)`` rows."""
    return int(min(math.floor(PROBATION_PERCENT * n_rows), PROBATION_PERCENT * 5000))


def rows_panel(values: np.ndarray, timestamps: pd.DatetimeIndex, name: str) -> SensorPanel:
    """NAB rows as a one-sensor panel on a regular grid of the file's median step.

    NAB scores rows, not time: a detector sees consecutive rows as consecutive steps.
    """
    stamps = pd.DatetimeIndex(timestamps)
    step = pd.Series(stamps).diff().median() if len(stamps) > 1 else pd.Timedelta(minutes=5)
    if pd.isna(step) or step <= pd.Timedelta(0):
        step = pd.Timedelta(minutes=5)
    start = stamps[0] if stamps.tz is not None else stamps[0].tz_localize("UTC")
    grid = pd.date_range(start, periods=len(values), freq=step)
    return SensorPanel.from_values(
        np.asarray(values, dtype=np.float32).reshape(-1, 1), grid, (name,), name=name
    )


# --- detectors ---------------------------------------------------------------------------


def _interval(
    range_check: bool, horizon: int = 3
) -> Callable[[SensorPanel], list[StreamingDetector]]:
    def build(head: SensorPanel) -> list[StreamingDetector]:
        from models.anomaly.interval import ForecastIntervalDetector, IntervalConfig
        from models.forecasters.registry import model_class

        forecaster = model_class("persistence")(window=1, horizon=horizon)  # type: ignore[call-arg]
        forecaster.fit(head)
        detector = ForecastIntervalDetector(
            forecaster,
            IntervalConfig(horizon=horizon, agreement="all", range_check=range_check),
        )
        return [detector.start(head)]

    return build


def _autoencoder(head: SensorPanel) -> list[StreamingDetector]:
    import torch

    from models.anomaly.autoencoder import AutoencoderConfig, AutoencoderDetector

    # Batches of a few hundred short windows: one thread beats two fighting for a shared CPU.
    torch.set_num_threads(1)
    return [AutoencoderDetector(AutoencoderConfig(window=12)).start(head)]


def _combined(head: SensorPanel) -> list[StreamingDetector]:
    return _interval(range_check=True)(head) + _autoencoder(head)


def _gaussian(values: np.ndarray) -> np.ndarray:
    from models.anomaly.gaussian import gaussian_scores

    return gaussian_scores(values)


# --- post-processing ---------------------------------------------------------------------


def _suppressed(window: int, factor: float) -> Callable[[int], PostProcess]:
    def make(n_rows: int) -> PostProcess:
        def run(values: np.ndarray, scores: np.ndarray) -> np.ndarray:
            suppress = RepeatSuppressor(1, window, factor)
            return np.array([float(suppress(scores[t : t + 1])[0]) for t in range(len(scores))])

        return run

    return make


def _htm_likelihood(n_rows: int) -> PostProcess:
    def run(values: np.ndarray, scores: np.ndarray) -> np.ndarray:
        from models.anomaly.likelihood import AnomalyLikelihood, LikelihoodConfig
        from models.anomaly.range import RangeExceedance

        likelihood = AnomalyLikelihood(1, LikelihoodConfig.for_nab(probation_rows(n_rows)))
        extreme = RangeExceedance(1)
        out = np.zeros(len(scores))  # [row]
        for t in range(len(scores)):
            out[t] = likelihood(scores[t : t + 1])[0]
            if extreme(values[t : t + 1])[0]:
                out[t] = 1.0
        return out

    return run


def _unchanged(n_rows: int) -> PostProcess:
    return lambda values, scores: np.asarray(scores, dtype=np.float64)


SUPPRESS = _suppressed(6, 0.5)

NAB_DETECTORS: dict[str, NabDetector] = {
    "interval": NabDetector(
        "interval",
        "forecast-interval detector on persistence forecasts, 3 horizons, all must agree",
        _interval(range_check=False),
        SUPPRESS,
    ),
    "interval_range": NabDetector(
        "interval_range",
        "the interval detector that also requires a value outside the normal range "
        "(chosen in-sample on realTraffic)",
        _interval(range_check=True),
        SUPPRESS,
    ),
    "interval_h6": NabDetector(
        "interval_h6",
        "interval detector, 6 horizons, suppression window 36 (chosen on the simulated "
        "validation corpus)",
        _interval(range_check=False, horizon=6),
        _suppressed(36, 0.0),
    ),
    "likelihood": NabDetector(
        "likelihood",
        "Numenta's NAB recipe on the interval score: HTM anomaly likelihood and new "
        "extremes (published defaults)",
        _interval(range_check=False),
        _htm_likelihood,
    ),
    "windowed_gaussian": NabDetector(
        "windowed_gaussian",
        "NAB's windowedGaussian baseline (reference)",
        None,
        _unchanged,
        _gaussian,
    ),
    "autoencoder": NabDetector(
        "autoencoder",
        "LSTM autoencoder (64-32-64, window 12) trained on the probationary rows",
        _autoencoder,
        SUPPRESS,
    ),
    "combined": NabDetector(
        "combined",
        "interval_range and autoencoder, combined with the Bonferroni rule",
        _combined,
        SUPPRESS,
    ),
}


def nab_detector(name: str) -> NabDetector:
    """The preset ``name`` or a DetectRunError listing the known ones."""
    try:
        return NAB_DETECTORS[name]
    except KeyError:
        raise DetectRunError(
            f"unknown detector {name!r}; choose one of {', '.join(NAB_DETECTORS)}"
        ) from None


def score_rows(
    values: np.ndarray, timestamps: pd.DatetimeIndex, detector: str, name: str = "series"
) -> np.ndarray:
    """Anomaly scores ``[row]`` in [0, 1] of one NAB series, computed row by row.

    Detectors are fitted on the probationary rows only, then every row is scored in
    order (including the probationary ones, which NAB does not score).
    """
    preset = nab_detector(detector)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(values) != len(timestamps):
        raise DetectRunError(f"{name}: need one value per timestamp, got {values.shape}")
    if preset.direct is not None:
        combined = preset.direct(values)
    else:
        assert preset.build is not None
        panel = rows_panel(values, timestamps, name)
        head = panel.slice(0, max(probation_rows(len(values)), 2))
        per_detector = []
        for d in preset.build(head):
            # the neural detectors' score_batch: score_panel's scores in one batch
            fast = getattr(d, "score_batch", None)
            batch = fast(panel) if callable(fast) else d.score_panel(panel)
            per_detector.append(batch.score[:, 0])
        combined = combine_scores(per_detector)  # [row]
    return np.clip(preset.post(len(values))(values, combined), 0.0, 1.0)


def nab_data_files(nab_dir: str | Path) -> list[Path]:
    """Every ``<category>/<file>.csv`` under ``nab_dir``, sorted."""
    root = Path(nab_dir)
    if not root.is_dir():
        raise DetectRunError(f"{root} is not a directory; pass NAB's data directory")
    files = sorted(p for p in root.glob("*/*.csv") if p.is_file())
    if not files:
        raise DetectRunError(
            f"no <category>/<file>.csv under {root}; pass NAB's data directory "
            "(e.g. ../shared/data/nab)"
        )
    return files


def read_nab_rows(path: Path) -> pd.DataFrame:
    """A NAB data file as read, with the original timestamp strings kept for output."""
    frame = pd.read_csv(path, dtype={"timestamp": str})
    if list(frame.columns[:2]) != ["timestamp", "value"]:
        raise DetectRunError(f"{path}: expected NAB's header timestamp,value")
    if frame["value"].isna().any():
        raise DetectRunError(
            f"{path}: empty values in rows {list(np.nonzero(frame['value'].isna())[0][:5])}"
        )
    return frame


def detect_nab(
    nab_dir: str | Path,
    out_dir: str | Path,
    detector: str = "interval_range",
    *,
    progress: Callable[[str], None] | None = None,
) -> list[Path]:
    """Write ``OUT/<category>/<detector>_<file>.csv`` for every NAB file under ``nab_dir``."""
    nab_detector(detector)
    out_root = Path(out_dir)
    written = []
    for path in nab_data_files(nab_dir):
        category = path.parent.name
        frame = read_nab_rows(path)
        stamps = pd.DatetimeIndex(pd.to_datetime(frame["timestamp"]))
        scores = score_rows(frame["value"].to_numpy(), stamps, detector, f"{category}/{path.name}")
        out = out_root / category / f"{detector}_{path.name}"
        out.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(
            {"timestamp": frame["timestamp"], "value": frame["value"], "anomaly_score": scores}
        ).to_csv(out, index=False)
        written.append(out)
        if progress is not None:
            progress(f"{category}/{path.name}: {len(frame)} rows -> {out}")
    return written


def score_files(files: Sequence[Path], detector: str) -> dict[str, np.ndarray]:
    """Anomaly scores per ``category/file.csv`` (for benchmarks, without writing files)."""
    out = {}
    for path in files:
        frame = read_nab_rows(path)
        stamps = pd.DatetimeIndex(pd.to_datetime(frame["timestamp"]))
        key = f"{path.parent.name}/{path.name}"
        out[key] = score_rows(frame["value"].to_numpy(), stamps, detector, key)
    return out
