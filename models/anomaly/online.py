"""The shared frame of detectors that learn from the stream itself: a statistic, then a p-value.

:class:`OnlineDetector` is a :class:`~models.anomaly.base.StreamingDetector` whose
subclasses only say how one tick turns into a nonconformity statistic per sensor (larger
= more anomalous) from that tick and their own memory of earlier ticks
(:meth:`OnlineDetector._step`). The frame does the rest, identically for all of them:

* **Calibration.** A statistic becomes a conformal p-value against the statistics of
  earlier ticks of the same sensor (:class:`models.anomaly.calibration.ConformalPool`),
  scored *before* the tick's own statistic joins the pool; ``score = 1 - p``. A
  detector with several statistics per sensor (``n_stats``, e.g. one per time scale)
  merges their p-values in :meth:`OnlineDetector._merge`.
* **Preparation.** ``start(head)`` begins with an empty memory and calibrates online
  (NAB's protocol); ``head``'s rows are given to :meth:`OnlineDetector._prepare` (a
  detector may take its scale from them) but not streamed. ``fit(panel, valid=)``
  streams ``panel`` to fill the memory and calibrates on ``valid``'s statistics.
* **State.** ``reset`` returns to the state after ``fit``/``start``; ``save`` writes it
  (the subclass's arrays from :meth:`OnlineDetector._arrays` and the pool) as a bundle.

Sensors are judged one by one (values ``[node]``; a ``[time, node, feature]`` panel
contributes its ``feature`` 0). Missing readings give NaN statistics: not scored, not
learned.
"""

from __future__ import annotations

from abc import abstractmethod
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from models.anomaly.base import (
    Detection,
    DetectorError,
    StreamingDetector,
    check_tick,
    describe_config,
    read_detector_bundle,
    save_detector_bundle,
    word_reasons,
)
from models.anomaly.calibration import ConformalPool, Tail, check_tail
from models.panel import SensorPanel


@dataclass(frozen=True, kw_only=True)
class OnlineConfig:
    """Calibration settings every online detector has (keyword-only).

    capacity : statistics kept per sensor for the p-values (oldest dropped first).
    min_count : statistics needed before a sensor is scored.
    online : keep calibrating on the stream after ``fit`` (``start`` always does).
    tail : how statistics beyond the calibration are judged, ``"max"`` or ``"pot"``
        (:mod:`models.anomaly.calibration`).
    """

    capacity: int = 4096
    min_count: int = 20
    online: bool = True
    tail: Tail = "max"

    def _check_calibration(self) -> None:
        if self.capacity < 2 or self.min_count < 1:
            raise DetectorError(
                f"need capacity >= 2 and min_count >= 1, got {self.capacity}, {self.min_count}"
            )
        check_tail(self.tail)


def series_2d(panel: SensorPanel) -> tuple[np.ndarray, np.ndarray]:
    """``(values, mask)`` ``[time, node]`` of a panel (feature 0 of a 3-D one)."""
    if panel.values.ndim == 3:
        return panel.values[:, :, 0], panel.mask[:, :, 0]
    return panel.values, panel.mask


class OnlineDetector(StreamingDetector):
    """A detector defined by a per-sensor statistic with memory (see module doc)."""

    name: ClassVar[str]
    config: Any
    # statistics per sensor (rows of the calibration pool: stat-major, [k * node + i])
    n_stats: int = 1

    def __init__(self) -> None:
        self.sensor_ids: tuple[str, ...] = ()
        self.pool: ConformalPool | None = None
        self._online = bool(self.config.online)
        self._fitted: tuple[dict[str, np.ndarray], ConformalPool, bool] | None = None

    @property
    def n_nodes(self) -> int:
        return len(self.sensor_ids)

    # --- what a subclass defines -----------------------------------------------------

    @abstractmethod
    def _prepare(self, head: SensorPanel | None) -> None:
        """Empty memory for ``self.sensor_ids``; ``head`` (may be None or empty) may set scales."""

    @abstractmethod
    def _step(self, x: np.ndarray) -> np.ndarray:
        """Statistics ``[n_stats * node]`` of tick ``x`` ``[node]`` (NaN: missing); learn it."""

    @abstractmethod
    def _arrays(self) -> dict[str, np.ndarray]:
        """The memory as arrays (copies): what ``reset`` returns to and ``save`` writes."""

    @abstractmethod
    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        """Set the memory from :meth:`_arrays`' output."""

    def _pvalues(self, stats: np.ndarray) -> np.ndarray:
        """P-values ``[n_stats * node]`` of this tick's statistics (NaN: not scored); by
        default conformal against the earlier statistics."""
        assert self.pool is not None
        return self.pool.pvalues(stats)

    def _merge(self, p: np.ndarray) -> np.ndarray:
        """One p-value per sensor from ``p`` ``[n_stats, node]`` (NaN = not scored)."""
        return p[0]

    def _reason(self, i: int, x: float, p: float) -> str:
        """Why sensor ``i`` with reading ``x`` scored ``1 - p``."""
        return f"{x:.4g} is unusual for this sensor (p={p:.2g})"

    # --- preparation -----------------------------------------------------------------

    def _begin(self, sensor_ids: tuple[str, ...], head: SensorPanel | None) -> None:
        self.config._check_calibration()
        if not sensor_ids:
            raise DetectorError(f"the {self.name} detector needs at least one sensor")
        self.sensor_ids = tuple(sensor_ids)
        rows = self.n_stats * self.n_nodes
        c = self.config
        self.pool = ConformalPool(rows, c.capacity, c.min_count, c.tail)
        self._prepare(head)

    def _keep_fitted(self) -> None:
        assert self.pool is not None
        self._fitted = (self._arrays(), deepcopy(self.pool), self._online)

    def start(self, head: SensorPanel) -> Self:
        """Empty memory for ``head``'s sensors; calibrate online on the stream."""
        self.record_grid(head)
        self._begin(tuple(head.sensor_ids), head)
        self._online = True
        self._keep_fitted()
        return self

    def fit(self, panel: SensorPanel, *, valid: SensorPanel | None = None) -> Self:
        """Stream ``panel`` into the memory, then calibrate on ``valid`` (default: its
        last 20 %), whose rows also join the memory."""
        self.record_grid(panel)
        if valid is None:
            cut = int(panel.n_time * 0.8)
            panel, valid = panel.slice(0, cut), panel.slice(cut, panel.n_time)
        self._begin(tuple(panel.sensor_ids), panel)
        self._online = bool(self.config.online)
        values, mask = series_2d(panel)
        for t in range(panel.n_time):
            self._step(np.where(mask[t], values[t], np.nan).astype(np.float64))
        values, mask = series_2d(valid)
        stats = [
            self._step(np.where(mask[t], values[t], np.nan).astype(np.float64))
            for t in range(valid.n_time)
        ]
        assert self.pool is not None
        if stats:
            self.pool.extend(np.stack(stats))
        self._keep_fitted()
        return self

    def reset(self) -> None:
        """Return to the memory and calibration ``fit``/``start``/``load`` left."""
        if self._fitted is None:
            raise DetectorError(f"the {self.name} detector is not fitted; call fit() or start()")
        arrays, pool, online = self._fitted
        self._restore({k: v.copy() for k, v in arrays.items()})
        self.pool = deepcopy(pool)
        self._online = online

    # --- streaming -------------------------------------------------------------------

    def update(self, ts: pd.Timestamp, values: np.ndarray, mask: np.ndarray) -> Detection:
        """Score this tick against the calibrated statistics of earlier ticks, then learn it."""
        if self._fitted is None or self.pool is None:
            raise DetectorError(f"the {self.name} detector is not fitted; call fit() or start()")
        x, _ = check_tick(values, mask, self.n_nodes)
        stats = self._step(x)
        p_all = self._pvalues(stats).reshape(self.n_stats, self.n_nodes)
        if self._online:
            self.pool.append(stats)
        p = self._merge(p_all)
        scored = np.isfinite(p)
        score = np.where(scored, 1.0 - np.where(scored, p, 1.0), 0.0)
        reasons = word_reasons(score, lambda i: self._reason(i, float(x[i]), float(p[i])))
        return Detection(
            self.name,
            pd.Timestamp(ts),
            np.clip(score, 0.0, 1.0).astype(np.float32),
            x.astype(np.float32),
            reasons=reasons,
        )

    # --- persistence -----------------------------------------------------------------

    def save(self, directory: str | Path) -> None:
        """The fitted memory and calibration (safetensors) and the config (JSON)."""
        if self._fitted is None:
            raise DetectorError(f"fit the {self.name} detector before saving it")
        arrays, pool, online = self._fitted
        tensors = {f"memory.{k}": v for k, v in arrays.items()}
        tensors.update(pool.state("pool"))
        save_detector_bundle(
            directory,
            self,
            window=0,
            settings=describe_config(self.config),
            tensors=tensors,
            online=online,
        )

    @classmethod
    def _from_settings(cls, settings: dict[str, Any]) -> Self:
        """A detector of the saved settings (a subclass turns lists back into tuples)."""
        return cls(**settings)

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        """A saved detector, reset to its fitted memory."""
        bundle = read_detector_bundle(directory, cls.name)
        detector = cls._from_settings(dict(bundle.config["detector"]))
        detector.sensor_ids = tuple(bundle.config["sensor_ids"])
        arrays = {
            k.removeprefix("memory."): np.asarray(v)
            for k, v in bundle.tensors.items()
            if k.startswith("memory.")
        }
        try:
            detector._restore(arrays)
        except (KeyError, ValueError) as exc:
            raise DetectorError(
                f"{directory}: the saved {cls.name} memory does not fit ({exc}); fit and save "
                "it again"
            ) from None
        detector.pool = ConformalPool.from_state(bundle.tensors, "pool")
        if detector.pool.n_rows != detector.n_stats * detector.n_nodes:
            raise DetectorError(f"{directory}: calibration rows do not match its sensors")
        detector._online = bool(bundle.config.get("online", True))
        detector._keep_fitted()
        return detector
