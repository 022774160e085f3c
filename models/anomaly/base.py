"""The anomaly-detector contract: streaming scores in [0, 1], their combination, batch runs.

Every registered detector (:mod:`models.anomaly.registry`) is a :class:`StreamingDetector`:
it is prepared with :meth:`~StreamingDetector.fit` (normal data, calibrated on validation
data) or :meth:`~StreamingDetector.start` (only the rows before the stream), then
:meth:`~StreamingDetector.update` receives one tick (``values`` ``[node]`` or ``[node,
feature]`` and its mask) and returns a :class:`Detection` for that tick computed from data
up to that tick only. The service calls ``update`` once per assembled tick;
:meth:`~StreamingDetector.score_panel` runs the same ``update`` over a whole panel for
benchmarks and tests, so batch and streaming scores are the same numbers by construction.

Scores are calibrated p-values
------------------------------
Each detector turns its raw statistic (how far outside the forecast intervals, a
reconstruction error, a correlation prediction error) into a conformal p-value ``p``
against the statistic's distribution on validation data (see
:mod:`models.anomaly.calibration`) and reports ``score = 1 - p``. A score of 0.99 thus
means "as extreme as the top 1 % of normal behaviour" whatever the detector, which is
what makes scores comparable and combinable.

Combining detectors
-------------------
:func:`combine` merges the detections of ``k`` detectors into one ``anomaly_score`` per
sensor and time with the Bonferroni rule ``score = 1 - min(1, k * min_i p_i)``: the
combined score is high when *any* detector is confident, and a combined score of
``1 - alpha`` still has a false-alarm rate of at most ``alpha`` on normal data, however
the detectors depend on one another. The reason, expected value and interval come from
the detector with the smallest p-value.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from models.bundle import Bundle, grid_offset, read_bundle, save_bundle, step_seconds
from models.panel import SensorPanel

# Reasons are only worded where a sensor is at least this anomalous: wording every
# sensor at every tick would cost more than the detection.
REASON_MIN_SCORE = 0.5


class DetectorError(ValueError):
    """A detector used in a way it cannot work; the message names the fix."""


@dataclass(frozen=True, eq=False)
class Detection:
    """One detector's verdict on one tick, per sensor.

    Attributes
    ----------
    detector : the detector's registry name (``"combined"`` after :func:`combine`).
    ts : the tick's timestamp.
    score : float32 ``[node]`` in [0, 1] (``1 - p``); 0 where the sensor was not scored
        (missing reading, detector still warming up).
    observed : float32 ``[node]``, the reading the detector judged (NaN if missing).
    expected : float32 ``[node]`` or None, what the detector expected instead.
    lower, upper : float32 ``[node]`` or None, the calibrated normal interval.
    reasons : one sentence per sensor, empty where ``score < REASON_MIN_SCORE``.
    """

    detector: str
    ts: pd.Timestamp
    score: np.ndarray
    observed: np.ndarray
    expected: np.ndarray | None = None
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    reasons: tuple[str, ...] = ()

    @property
    def pvalue(self) -> np.ndarray:
        """float64 ``[node]``: ``1 - score``."""
        return 1.0 - self.score.astype(np.float64)


@dataclass(frozen=True, eq=False)
class DetectionBatch:
    """Detections of every tick of a panel: arrays ``[time, node]``."""

    detector: str
    timestamps: pd.DatetimeIndex
    sensor_ids: tuple[str, ...]
    score: np.ndarray
    observed: np.ndarray
    expected: np.ndarray | None = None
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    reasons: list[tuple[str, ...]] = field(default_factory=list)

    def frame(self) -> pd.DataFrame:
        """Scores as a DataFrame (rows: timestamps, columns: sensor ids)."""
        return pd.DataFrame(self.score, index=self.timestamps, columns=list(self.sensor_ids))


class StreamingDetector(ABC):
    """The contract every registered detector implements.

    * ``start(head)`` prepares streaming from ``head`` alone: its sensors, its step and
      its rows (the only past a detector may learn from; a detector may also ignore
      them). Calibration then continues online on the stream.
    * ``fit(panel, valid=)`` learns from normal data and calibrates on ``valid`` (never
      on test data).
    * ``reset()`` returns to the state ``fit``/``start``/``load`` left: the recent
      window, pending forecasts and whatever the stream taught are forgotten.
    * ``update(ts, values, mask)`` scores one tick from that tick and the past only.
    * ``score_panel(panel)`` is ``reset`` and then ``update`` over every tick.
    * ``save(directory)`` writes the fitted state (what ``reset`` returns to) as a
      bundle; ``load(directory)`` reads it back.

    Misuse (wrong shapes, NaN marked observed, streaming before fitting) raises
    :class:`DetectorError`.
    """

    name: ClassVar[str]
    sensor_ids: tuple[str, ...]
    step_s: int | None = None  # the step of the data it was fitted or started on, seconds
    offset_s: int | None = None  # that data's grid: first timestamp mod step_s, seconds

    def record_grid(self, panel: SensorPanel) -> None:
        """Record the time step and grid offset of ``panel`` (``step_s``, ``offset_s``)."""
        self.step_s = step_seconds(panel.freq)
        first = panel.timestamps[0] if panel.n_time else None
        self.offset_s = grid_offset(first, self.step_s)

    @abstractmethod
    def start(self, head: SensorPanel) -> Self: ...

    @abstractmethod
    def fit(self, panel: SensorPanel, *, valid: SensorPanel | None = None) -> Self: ...

    @abstractmethod
    def reset(self) -> None: ...

    @abstractmethod
    def update(self, ts: pd.Timestamp, values: np.ndarray, mask: np.ndarray) -> Detection: ...

    @abstractmethod
    def save(self, directory: str | Path) -> None: ...

    @classmethod
    @abstractmethod
    def load(cls, directory: str | Path) -> Self: ...

    def score_panel(self, panel: SensorPanel) -> DetectionBatch:
        """Reset, then run :meth:`update` over every tick of ``panel`` in time order.

        The streaming state is left at the end of the panel, so a service can continue
        from there. Because this is the streaming code path, a score at time ``t``
        depends on ticks ``<= t`` only.
        """
        if tuple(panel.sensor_ids) != tuple(self.sensor_ids):
            raise DetectorError(
                f"{self.name}: panel sensors differ from the fitted ones; "
                "select them with panel.select(detector.sensor_ids)"
            )
        self.reset()
        out = [
            self.update(panel.timestamps[t], panel.values[t], panel.mask[t])
            for t in range(panel.n_time)
        ]
        return stack(out, panel.sensor_ids)


def word_reasons(score: np.ndarray, reason: Callable[[int], str]) -> tuple[str, ...]:
    """:attr:`Detection.reasons` of ``score`` ``[node]``: ``reason(i)`` for each sensor ``i``
    with ``score[i] >= REASON_MIN_SCORE``, ``""`` for the others; ``()`` when none is."""
    flagged = score >= REASON_MIN_SCORE
    if not flagged.any():
        return ()
    return tuple(reason(i) if flagged[i] else "" for i in range(len(score)))


def empty_head(
    sensor_ids: Sequence[str], freq: pd.Timedelta, n_features: int | None = None
) -> SensorPanel:
    """A ``head`` for :meth:`StreamingDetector.start` without rows: sensors and step only."""
    n = len(sensor_ids)
    shape: tuple[int, ...] = (0, n) if n_features is None else (0, n, n_features)
    stamps = pd.date_range("1970-01-01", periods=0, freq=pd.Timedelta(freq), tz="UTC")
    return SensorPanel(
        values=np.empty(shape, np.float32),
        mask=np.zeros(shape, bool),
        timestamps=stamps,
        sensor_ids=tuple(sensor_ids),
    )


def distinct_text(values: Sequence[float], least: int = 4, most: int = 9) -> list[str]:
    """``values`` with the fewest significant digits (``least`` to ``most``) that keep
    different numbers different: a reading and the interval it left stay legible at any
    magnitude (``1000123.5`` and ``1000131.2``, not ``1e+06`` twice)."""
    numbers = [float(v) for v in values]
    texts = [f"{v:.{least}g}" for v in numbers]
    for digits in range(least, most + 1):
        texts = [f"{v:.{digits}g}" for v in numbers]
        if len(set(texts)) == len(set(numbers)):
            break
    return texts


def check_tick(
    values: np.ndarray, mask: np.ndarray, n_nodes: int, n_features: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Validate one tick and return ``(values, mask)`` as float64 / bool with NaN where missing.

    ``n_features`` None accepts ``[node]`` (and a single-feature ``[node, 1]``); an int
    requires ``[node, n_features]``.

    Raises
    ------
    DetectorError
        Wrong shapes, or a non-finite value marked observed.
    """
    values = np.asarray(values, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if n_features is None and values.ndim == 2 and values.shape[1] == 1:
        values, mask = values[:, 0], mask.reshape(values.shape[0], -1)[:, 0]
    expected: tuple[int, ...] = (n_nodes,) if n_features is None else (n_nodes, n_features)
    if values.shape != expected:
        raise DetectorError(
            f"tick values have shape {values.shape}, the detector was fitted on {expected} "
            "([node] or [node, feature]); pass the same sensors (and features) in the same order"
        )
    if mask.shape != values.shape:
        raise DetectorError(f"tick mask shape {mask.shape} differs from values {values.shape}")
    bad = mask & ~np.isfinite(values)
    if bad.any():
        raise DetectorError(f"{int(bad.sum())} non-finite values are marked observed")
    return np.where(mask, values, np.nan), mask


# ------------------------------------------------------------------------- combination


def combine_scores(scores: Sequence[np.ndarray]) -> np.ndarray:
    """Bonferroni combination of score arrays of the same shape: ``1 - min(1, k min_i p_i)``."""
    if not scores:
        raise DetectorError("combine_scores() needs at least one score array")
    pvalues = 1.0 - np.stack([np.asarray(s, dtype=np.float64) for s in scores])
    combined = np.minimum(1.0, len(scores) * pvalues.min(axis=0))
    return np.clip(1.0 - combined, 0.0, 1.0).astype(np.float32)


def combine(detections: Sequence[Detection]) -> Detection:
    """One :class:`Detection` from several of the same tick (Bonferroni, see module doc).

    Raises
    ------
    DetectorError
        No detections, or detections of different ticks or sensor counts.
    """
    if not detections:
        raise DetectorError("combine() needs at least one detection")
    first = detections[0]
    if any(d.ts != first.ts or d.score.shape != first.score.shape for d in detections):
        raise DetectorError("combine() needs detections of the same tick and sensors")
    if len(detections) == 1:
        return first
    pvalues = np.stack([d.pvalue for d in detections])  # [detector, node]
    best = np.argmin(pvalues, axis=0)  # [node]
    score = combine_scores([d.score for d in detections])
    nodes = np.arange(score.shape[0])

    def pick(attr: str) -> np.ndarray | None:
        arrays = [getattr(d, attr) for d in detections]
        if all(a is None for a in arrays):
            return None
        filled = [np.full(score.shape, np.nan, np.float32) if a is None else a for a in arrays]
        return np.stack(filled)[best, nodes].astype(np.float32)  # [node]

    reasons = tuple(
        (
            f"{detections[b].detector}: {detections[b].reasons[i]}"
            if score[i] >= REASON_MIN_SCORE and detections[b].reasons and detections[b].reasons[i]
            else ""
        )
        for i, b in enumerate(best)
    )
    observed = np.stack([d.observed for d in detections])[best, nodes].astype(np.float32)
    return Detection(
        "combined",
        first.ts,
        score,
        observed,
        pick("expected"),
        pick("lower"),
        pick("upper"),
        reasons,
    )


# ------------------------------------------------------------------------- batch runs


def stack(detections: Sequence[Detection], sensor_ids: tuple[str, ...]) -> DetectionBatch:
    """Stack per-tick detections into a :class:`DetectionBatch`."""
    if not detections:
        raise DetectorError("no detections to stack")

    def arr(attr: str) -> np.ndarray | None:
        items = [getattr(d, attr) for d in detections]
        if all(a is None for a in items):
            return None
        shape = detections[0].score.shape
        return np.stack(
            [np.full(shape, np.nan, np.float32) if a is None else a for a in items]
        ).astype(np.float32)  # [time, node]

    score = arr("score")
    observed = arr("observed")
    assert score is not None and observed is not None
    return DetectionBatch(
        detector=detections[0].detector,
        timestamps=pd.DatetimeIndex([d.ts for d in detections]),
        sensor_ids=sensor_ids,
        score=score,
        observed=observed,
        expected=arr("expected"),
        lower=arr("lower"),
        upper=arr("upper"),
        reasons=[d.reasons for d in detections],
    )


def describe_config(config: Any) -> dict[str, Any]:
    """A frozen config dataclass as a JSON-ready dict (tuples become lists)."""
    from dataclasses import asdict

    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}


# ------------------------------------------------------------------------- bundles


def save_detector_bundle(
    directory: str | Path,
    detector: StreamingDetector,
    *,
    window: int,
    settings: dict[str, Any],
    tensors: dict[str, np.ndarray],
    horizon: int = 0,
    **extra: Any,
) -> None:
    """Save ``detector`` as a bundle whose ``config.json`` names it ``detector:<name>``.

    Parameters
    ----------
    detector : a fitted detector (its ``name`` and ``sensor_ids`` are recorded).
    window, horizon : the keys every bundle records (``horizon`` 0: forecasts nothing).
    settings : its settings, saved under ``"detector"`` (e.g. :func:`describe_config`).
    tensors : arrays saved to ``weights.safetensors``.
    extra : further ``config.json`` keys the detector's ``load`` reads back.
    """
    config: dict[str, Any] = {
        "model": f"detector:{detector.name}",
        "sensor_ids": list(detector.sensor_ids),
        "window": window,
        "horizon": horizon,
        "step_s": detector.step_s,
        "offset_s": detector.offset_s,
        "detector": settings,
        **extra,
    }
    save_bundle(directory, config=config, tensors=tensors)


def read_detector_bundle(directory: str | Path, name: str) -> Bundle:
    """The verified bundle in ``directory``, refused unless it holds detector ``name``.

    Raises
    ------
    DetectorError
        The bundle holds another detector or a forecaster.
    models.bundle.BundleError
        No bundle there, or a corrupted one.
    """
    bundle = read_bundle(directory)
    model = bundle.config.get("model")
    if model != f"detector:{name}":
        raise DetectorError(
            f"{directory} holds {model!r}, not 'detector:{name}'; load it with "
            "models.anomaly.registry.load_detector(directory)"
        )
    return bundle
