"""Which sensors report: their event times, their silences, and down / back changes.

:class:`SensorLiveness` is the tick assembler's view of every sensor:

* the newest event time of its on-time readings. The network's event time
  (:meth:`SensorLiveness.event_time`) is the newest time that more than ``quorum`` of
  the up sensors have reached (a robust quantile, not the maximum), so a few sensors
  with broken clocks cannot drag the watermark ahead of the network;
* how many closed ticks in a row it has missed. After ``down_after`` such ticks it is
  **down**: it no longer holds ticks open and no longer counts in the quorum or the
  event time. A down sensor is **back** when a tick that holds one of its readings
  closes, or when a late reading of it arrives for a tick of its silence (a reading for
  a tick ahead of the network counts only once that tick closes; a late one from before
  the silence, such as a buffer flushed by its gateway, does not bring it back).

Each change is a :class:`SensorChange`; :func:`sensor_alert` turns it into an alert
for the alerts topic (detector ``sensor_down``: ``firing`` when the sensor goes down,
``resolved`` under the same ``alert_id`` when it is back).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from pipeline.kafka.schema import AlertMessage, format_timestamp
from pipeline.service.ticks import AssemblerConfig

DETECTOR = "sensor_down"
# The store's state key of the down sensors: JSON ``{sensor: first missed tick, epoch ms}``.
DOWN_KEY = "sensors_down"
# "no event time yet" for a sensor that has not reported.
NO_TIME = np.iinfo(np.int64).min


@dataclass(frozen=True)
class SensorChange:
    """A sensor went down (``down``) or is back (not ``down``).

    ``since`` is the first tick of its silence; ``tick`` the tick at which it went down
    (its ``down_after``-th missed tick) or the tick whose reading brought it back.
    """

    col: int
    down: bool
    since: int
    tick: int


class SensorLiveness:
    """Per-sensor event times, missed ticks and down state (see the module docstring)."""

    def __init__(self, n_nodes: int, down_after: int | None) -> None:
        self.down_after = down_after
        self.newest_ns = np.full(n_nodes, NO_TIME, np.int64)  # [node]
        self.missed = np.zeros(n_nodes, np.int64)  # [node] closed ticks in a row without it
        self.first_missed = np.full(n_nodes, -1, np.int64)  # [node] first tick of the silence
        self.down = np.zeros(n_nodes, bool)  # [node]
        self._changes: list[SensorChange] = []

    @property
    def up(self) -> np.ndarray:
        """bool ``[node]``: the sensors that hold ticks open."""
        return ~self.down

    def saw(self, cols: np.ndarray, ts_ns: np.ndarray) -> None:
        """On-time readings: their sensors' newest event times move forward."""
        order = np.argsort(ts_ns, kind="stable")  # a sensor's newest reading is assigned last
        cols, ts_ns = cols[order], ts_ns[order]
        self.newest_ns[cols] = np.maximum(self.newest_ns[cols], ts_ns)

    def reported(self, cols: np.ndarray, ticks: np.ndarray) -> None:
        """Late readings for ``ticks``: a sensor that reported for a tick of its current
        silence is alive (a down one is back at that tick); a reading from before the
        silence says nothing about now."""
        for col, tick in zip(cols.tolist(), ticks.tolist(), strict=True):
            if self.missed[col] == 0 and not self.down[col]:
                continue
            if tick < self.first_missed[col]:
                continue
            if self.down[col]:
                self._back(col, tick)
            self.missed[col] = 0

    def closed(self, tick: int, seen: np.ndarray) -> None:
        """Tick ``tick`` closed with the sensors ``seen`` (bool ``[node]``)."""
        for col in np.flatnonzero(seen & self.down).tolist():
            self._back(col, tick)
        self.missed[seen] = 0
        silent = ~seen
        self.first_missed[silent & (self.missed == 0)] = tick
        self.missed[silent] += 1
        if self.down_after is not None:
            newly = silent & ~self.down & (self.missed >= self.down_after)
            for col in np.flatnonzero(newly).tolist():
                self.down[col] = True
                self._changes.append(SensorChange(col, True, int(self.first_missed[col]), tick))

    def _back(self, col: int, tick: int) -> None:
        self.down[col] = False
        self._changes.append(SensorChange(col, False, int(self.first_missed[col]), tick))

    def take_changes(self) -> list[SensorChange]:
        """The changes since the last call, in the order they happened."""
        changes, self._changes = self._changes, []
        return changes

    def event_time(self, quorum: float) -> int | None:
        """The newest event time (ns) that more than ``quorum`` of the up sensors with a
        reading have reached; None before any reading."""
        times = self.newest_ns[self.up & (self.newest_ns != NO_TIME)]
        if len(times) == 0:
            return None
        k = len(times) - 1 - int(quorum * len(times))  # ascending rank of that time
        return int(np.partition(times, k)[k])

    def quorum_met(self, seen: np.ndarray, quorum: float) -> bool:
        """Whether more than ``quorum`` of the up sensors are among ``seen``."""
        up = self.up
        return int(np.count_nonzero(seen & up)) > quorum * int(np.count_nonzero(up))

    def restore(self, down_since: dict[int, int]) -> None:
        """Mark the sensors of ``down_since`` (column -> first tick of the silence) down,
        and only them; no change is reported."""
        self.down[:] = False
        for col, since in down_since.items():
            self.down[col] = True
            self.first_missed[col] = since
            if self.down_after is not None:
                self.missed[col] = max(int(self.missed[col]), self.down_after)
        self._changes.clear()

    def down_since(self) -> dict[int, int]:
        """``{column: first tick of its silence}`` of the down sensors."""
        return {int(c): int(self.first_missed[c]) for c in np.flatnonzero(self.down)}


def sensor_alert(sensor: str, change: SensorChange, config: AssemblerConfig) -> AlertMessage:
    """The alert message of ``change`` for ``sensor`` (``firing``: down; ``resolved``:
    back). The same silence gives the same ``alert_id``, so replays stay idempotent."""
    first = config.tick_time(change.since).to_pydatetime()
    at = config.tick_time(change.tick).to_pydatetime()
    since = format_timestamp(first)
    status: Literal["firing", "resolved"]
    if change.down:
        status, score, last = "firing", 1.0, at
        reason = f"no reading for {change.tick - change.since + 1} ticks, since {since}"
    else:
        status, score = "resolved", 0.0
        last = max(first, config.tick_time(change.tick - 1).to_pydatetime())
        reason = f"reporting again at {format_timestamp(at)} after a silence since {since}"
    key = f"{sensor}:{DETECTOR}"
    return AlertMessage(
        alert_id=f"{key}@{since}", dedup_key=key, status=status, severity="warning",
        sensor=sensor, ts=at, observed=None, expected=None, lo=None, hi=None, score=score,
        detector=DETECTOR, first_seen=first, last_seen=last, reason=reason,
    )  # fmt: skip


def write_down_state(
    down_since: Mapping[int, int], sensor_ids: Sequence[str], config: AssemblerConfig
) -> str:
    """The down sensors as the store keeps them (see :data:`DOWN_KEY`)."""
    return json.dumps(
        {
            sensor_ids[col]: int(config.tick_ns(tick)) // 1_000_000
            for col, tick in sorted(down_since.items())
        }
    )


def read_down_state(
    text: str | None, column: Mapping[str, int], config: AssemblerConfig
) -> dict[int, int]:
    """``{column: first tick of the silence}`` from :func:`write_down_state`'s text;
    sensors no longer served are left out."""
    stored: dict[str, int] = json.loads(text) if text else {}
    return {
        column[sensor]: int(config.tick_of(np.array(ms * 1_000_000)))
        for sensor, ms in stored.items()
        if sensor in column
    }
