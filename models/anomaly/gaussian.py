"""Windowed Gaussian: how far a reading lies from the mean of the readings before it.

NAB's ``windowedGaussian`` baseline (numenta/NAB, ``nab/detectors/gaussian``), written
here from its description so that our runner can score NAB's own reference detector:

* per sensor, a window of past readings that grows to ``window`` (6400) values and then
  slides forward ``step`` (100) values at a time;
* the score of a reading ``x`` is ``1 - Q(|x - mean| / std)`` with the window's mean and
  (population) standard deviation, ``Q`` the normal tail: 0.5 at the mean, 1 far from
  it on either side; the first reading of a sensor scores 0;
* the mean and standard deviation are updated after the reading has been scored
  (every reading while the window grows, every ``step`` readings once it slides).

It is a reference point, not a calibrated detector: its scores are Gaussian tail
probabilities, not conformal p-values. ``fit`` fills the window from training data;
``start(head)`` takes the head's sensors only and begins empty, as NAB does: every row
of the stream is learned from, in order (NAB streams the head's rows as well).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Self

import numpy as np
import pandas as pd

from models.anomaly.base import (
    Detection,
    DetectorError,
    StreamingDetector,
    check_tick,
    empty_head,
    read_detector_bundle,
    save_detector_bundle,
    word_reasons,
)
from models.anomaly.likelihood import tail_probability
from models.panel import SensorPanel

# lower/upper are shown as mean -+ this many standard deviations (a 99 % normal interval)
Z_INTERVAL = 2.5758


@dataclass(frozen=True)
class GaussianConfig:
    """Settings of :class:`WindowedGaussianDetector` (NAB's values).

    window : readings kept per sensor. step : readings added at once once it is full.
    min_std : the standard deviation used when the window is constant.
    """

    window: int = 6400
    step: int = 100
    min_std: float = 1e-6

    def __post_init__(self) -> None:
        if self.window < 2 or not 1 <= self.step <= self.window or self.min_std <= 0:
            raise DetectorError(
                f"need window >= 2, 1 <= step <= window and min_std > 0, got {self.window}, "
                f"{self.step}, {self.min_std}"
            )


@dataclass(frozen=True)
class _State:
    """Per-sensor windows, pending step buffers and the current mean and std."""

    windows: tuple[tuple[float, ...], ...]
    buffers: tuple[tuple[float, ...], ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]


class WindowedGaussianDetector(StreamingDetector):
    """Scores readings by their Gaussian tail against a sliding window of past readings."""

    name: ClassVar[str] = "gaussian"

    def __init__(self, config: GaussianConfig | None = None) -> None:
        self.config = config or GaussianConfig()
        self.sensor_ids: tuple[str, ...] = ()
        self._fitted: _State | None = None
        self._windows: list[list[float]] = []
        self._buffers: list[list[float]] = []
        self._mean = np.zeros(0)  # [node]
        self._std = np.ones(0)  # [node]

    @property
    def n_nodes(self) -> int:
        return len(self.sensor_ids)

    # --- fitting ----------------------------------------------------------------------

    def _begin(self, sensor_ids: tuple[str, ...]) -> None:
        self.sensor_ids = tuple(sensor_ids)
        if not self.sensor_ids:
            raise DetectorError("the Gaussian detector needs at least one sensor")
        n = self.n_nodes
        self._windows = [[] for _ in range(n)]
        self._buffers = [[] for _ in range(n)]
        self._mean = np.zeros(n)  # NAB's initial mean and std, unused until a reading
        self._std = np.ones(n)

    def _snapshot(self) -> _State:
        return _State(
            tuple(tuple(w) for w in self._windows),
            tuple(tuple(b) for b in self._buffers),
            tuple(float(m) for m in self._mean),
            tuple(float(s) for s in self._std),
        )

    def start(self, head: SensorPanel) -> Self:
        """Begin with empty windows for ``head``'s sensors and learn from the stream only
        (NAB's protocol: ``head``'s rows are not learned from)."""
        self.record_grid(head)
        self._begin(tuple(head.sensor_ids))
        self._fitted = self._snapshot()
        return self

    def fit(self, panel: SensorPanel, *, valid: SensorPanel | None = None) -> Self:
        """Fill the windows with the readings of ``panel`` (then ``valid``), in time order."""
        self.record_grid(panel)
        self._begin(tuple(panel.sensor_ids))
        for part in (panel, valid):
            if part is None:
                continue
            values = part.values if part.values.ndim == 2 else part.values[:, :, 0]
            mask = part.mask if part.mask.ndim == 2 else part.mask[:, :, 0]
            for t in range(part.n_time):
                self._learn(np.where(mask[t], values[t], np.nan).astype(np.float64))
        self._fitted = self._snapshot()
        return self

    # --- streaming --------------------------------------------------------------------

    def reset(self) -> None:
        """Return to the fitted windows (forget what the stream taught)."""
        if self._fitted is None:
            raise DetectorError("the Gaussian detector is not fitted; call fit() or start()")
        state = self._fitted
        self._windows = [list(w) for w in state.windows]
        self._buffers = [list(b) for b in state.buffers]
        self._mean = np.array(state.mean, dtype=np.float64)
        self._std = np.array(state.std, dtype=np.float64)

    def _refresh(self, i: int) -> None:
        window = np.asarray(self._windows[i], dtype=np.float64)
        self._mean[i] = np.mean(window)
        std = float(np.std(window))
        self._std[i] = std if std != 0.0 else self.config.min_std

    def _learn(self, x: np.ndarray) -> None:
        c = self.config
        for i in np.nonzero(np.isfinite(x))[0].tolist():
            if len(self._windows[i]) < c.window:
                self._windows[i].append(float(x[i]))
                self._refresh(i)
                continue
            self._buffers[i].append(float(x[i]))
            if len(self._buffers[i]) == c.step:
                self._windows[i] = self._windows[i][c.step :] + self._buffers[i]
                self._buffers[i] = []
                self._refresh(i)

    def _score(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float64 scores ``[node]`` of readings ``x`` and which sensors were scored."""
        ready = np.array([len(w) > 0 for w in self._windows]) & np.isfinite(x)  # [node]
        score = np.zeros(self.n_nodes)
        if ready.any():
            score[ready] = 1.0 - tail_probability(x[ready], self._mean[ready], self._std[ready])
        return score, ready

    def score_and_learn(self, x: np.ndarray) -> np.ndarray:
        """float64 scores ``[node]`` of one tick (NaN = missing), then learn it.

        The same numbers as :meth:`update` without the rounding to float32 of a
        :class:`Detection` (NAB's threshold sweep tells scores apart near 1).
        """
        if self._fitted is None:
            raise DetectorError("the Gaussian detector is not fitted; call fit() or start()")
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self.n_nodes,):
            raise DetectorError(f"tick values have shape {x.shape}, expected ({self.n_nodes},)")
        score, _ = self._score(x)
        self._learn(x)
        return score

    def update(self, ts: pd.Timestamp, values: np.ndarray, mask: np.ndarray) -> Detection:
        """Score this tick against the window of earlier readings, then learn it."""
        if self._fitted is None:
            raise DetectorError("the Gaussian detector is not fitted; call fit() or start()")
        x, _ = check_tick(values, mask, self.n_nodes)
        score, ready = self._score(x)
        expected = np.where(ready, self._mean, np.nan)
        width = Z_INTERVAL * self._std
        reasons = word_reasons(
            score,  # 0 where not ready
            lambda i: (
                f"{x[i]:.4g} is {abs(x[i] - self._mean[i]) / self._std[i]:.1f} standard "
                f"deviations from the recent mean {self._mean[i]:.4g}"
            ),
        )
        detection = Detection(
            self.name,
            pd.Timestamp(ts),
            score.astype(np.float32),
            x.astype(np.float32),
            expected.astype(np.float32),
            (expected - width).astype(np.float32),
            (expected + width).astype(np.float32),
            reasons,
        )
        self._learn(x)
        return detection

    # --- persistence ------------------------------------------------------------------

    def save(self, directory: str | Path) -> None:
        """The fitted windows (safetensors, NaN-padded) and config (JSON)."""
        if self._fitted is None:
            raise DetectorError("fit the Gaussian detector before saving it")
        c, state = self.config, self._fitted
        windows = np.full((self.n_nodes, c.window), np.nan)  # [node, window]
        buffers = np.full((self.n_nodes, c.step), np.nan)  # [node, step]
        for i in range(self.n_nodes):
            windows[i, : len(state.windows[i])] = state.windows[i]
            buffers[i, : len(state.buffers[i])] = state.buffers[i]
        tensors = {
            "windows": windows,
            "window_len": np.array([len(w) for w in state.windows], dtype=np.int64),
            "buffers": buffers,
            "buffer_len": np.array([len(b) for b in state.buffers], dtype=np.int64),
        }
        save_detector_bundle(
            directory,
            self,
            window=c.window,
            settings={"window": c.window, "step": c.step, "min_std": c.min_std},
            tensors=tensors,
        )

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        """A saved detector, reset to its fitted windows."""
        bundle = read_detector_bundle(directory, cls.name)
        detector = cls(GaussianConfig(**bundle.config["detector"]))
        detector._begin(tuple(bundle.config["sensor_ids"]))
        windows, buffers = bundle.tensor("windows"), bundle.tensor("buffers")
        window_len, buffer_len = bundle.tensor("window_len"), bundle.tensor("buffer_len")
        if windows.shape != (detector.n_nodes, detector.config.window):
            raise DetectorError(f"{directory}: window arrays do not match its sensors")
        detector._windows = [list(windows[i, : window_len[i]]) for i in range(detector.n_nodes)]
        detector._buffers = [list(buffers[i, : buffer_len[i]]) for i in range(detector.n_nodes)]
        for i in range(detector.n_nodes):
            if detector._windows[i]:
                detector._refresh(i)
        detector._fitted = detector._snapshot()
        return detector


def gaussian_scores(values: np.ndarray, config: GaussianConfig | None = None) -> np.ndarray:
    """Scores ``[row]`` of one series from an empty window (NAB's run of the baseline)."""
    values = np.asarray(values, dtype=np.float64)
    # one sensor; the step is unused by this detector
    detector = WindowedGaussianDetector(config).start(empty_head(("series",), pd.Timedelta("5min")))
    return np.array([detector.score_and_learn(values[t : t + 1])[0] for t in range(len(values))])
