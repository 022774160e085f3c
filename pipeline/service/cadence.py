"""Readings whose cadence is not the service's tick (the models' time step).

A network replayed or produced at another step than the served models' is not an error
of any one reading, so nothing is dead-lettered; the service says so once, in one
``tick_mismatch`` line, and goes on as its rules say:

* **finer** (15-minute readings, hourly models): one sensor sends two readings with
  different timestamps in one tick. The tick keeps one value, the others are counted
  ``conflict`` (the tick was open) or ``late`` (it had closed).
* **coarser** (hourly readings, 15-minute models): ticks close :data:`COARSE_STREAK`
  times in a row the same number (2 or more) of ticks apart. The ticks between hold no
  reading, so every forecast sees most of its window missing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from models.bundle import duration_text
from pipeline.service.liveness import NO_TIME
from pipeline.service.ticks import AssemblerConfig

# Closed ticks this many times in a row the same number of ticks apart: the readings'
# step (an outage repeats no gap that often).
COARSE_STREAK = 4


def _iso(ns: int) -> str:
    return pd.Timestamp(ns, tz="UTC").isoformat().replace("+00:00", "Z")


class CadenceCheck:
    """Notices readings finer or coarser than the tick; each is reported once.

    Parameters
    ----------
    sensor_ids : the network's sensors, in column order.
    config : the assembler's grid.
    """

    def __init__(self, sensor_ids: tuple[str, ...], config: AssemblerConfig) -> None:
        self.sensor_ids = sensor_ids
        self.config = config
        self.step = duration_text(config.freq.total_seconds())
        self._last_ns = np.full(len(sensor_ids), NO_TIME, np.int64)  # each sensor's last
        self._finer_said = self._coarser_said = False
        self._last_tick: int | None = None
        self._gap = self._streak = 0

    def readings(self, cols: np.ndarray, ts_ns: np.ndarray) -> dict[str, Any] | None:
        """Readings of one batch (in arrival order, not future ones): the first sensor
        with two timestamps in one tick, as the fields of a ``tick_mismatch`` line."""
        if self._finer_said or len(cols) == 0:
            return None
        order = np.argsort(cols, kind="stable")  # each sensor's readings in arrival order
        c, t = cols[order], ts_ns[order]
        first = np.ones(len(c), bool)
        first[1:] = c[1:] != c[:-1]
        prev = np.empty_like(t)
        prev[1:] = t[:-1]
        prev[first] = self._last_ns[c[first]]
        last = np.ones(len(c), bool)
        last[:-1] = first[1:]
        self._last_ns[c[last]] = t[last]
        known = prev != NO_TIME
        same_tick = self.config.tick_of(np.where(known, prev, t)) == self.config.tick_of(t)
        finer = np.flatnonzero(known & same_tick & (prev != t))
        if len(finer) == 0:
            return None
        self._finer_said = True
        i = int(finer[0])
        earlier, later = sorted((int(prev[i]), int(t[i])))
        apart = duration_text((later - earlier) / 1e9)
        return {
            "sensor": self.sensor_ids[int(c[i])],
            "readings": [_iso(earlier), _iso(later)],
            "tick": self.step,
            "hint": f"readings {apart} apart share one {self.step} tick: they come more often "
            f"than the served models' step ({self.step}), so each tick keeps one value per "
            "sensor and the others count as conflict or late; serve models trained at the "
            f"readings' step, or send one reading per sensor every {self.step}",
        }

    def closed(self, tick: int) -> dict[str, Any] | None:
        """A tick closed (in time order): when the ticks have closed :data:`COARSE_STREAK`
        times in a row the same number (2 or more) apart, the fields of a
        ``tick_mismatch`` line, once."""
        gap = 0 if self._last_tick is None else tick - self._last_tick
        self._last_tick = tick
        self._streak = self._streak + 1 if gap == self._gap and gap >= 2 else 1
        self._gap = gap
        if self._coarser_said or self._streak < COARSE_STREAK:
            return None
        self._coarser_said = True
        every = duration_text(gap * self.config.freq.total_seconds())
        return {
            "every": every,
            "tick": self.step,
            "last_tick": _iso(int(self.config.tick_ns(tick))),
            "hint": f"readings arrive every {every}, but the served models' step is "
            f"{self.step}: the {gap - 1} ticks between hold no reading, so every forecast "
            "sees most of its window missing and its targets fall between the readings; "
            f"serve models trained at the readings' step, or send a reading every {self.step}",
        }
