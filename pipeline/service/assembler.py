"""Tick assembly: individual sensor readings in, closed network-wide ticks out.

The service receives one reading per sensor per time step, in any order within
each sensor's partition and with stragglers. This module turns them into rows of a
regular grid (one row per *tick*, one column per sensor) and decides when a row is
final. All decisions are made on whole poll batches with numpy, never per reading
in Python, except for the rare late readings.

Rules (the service's documented semantics)
------------------------------------------
* **Grid.** Tick ``k`` is the instant ``origin + k * freq`` (``origin`` defaults to
  the Unix epoch, so 5-minute ticks sit on :00, :05, ...). A reading belongs to the
  tick at or before its timestamp (floored): an off-grid reading at 10:03 is the
  sensor's value for the 10:00 step.
* **Event time and watermark.** The network's event time is the newest time that more
  than ``quorum`` (default half) of the up sensors have reached with on-time readings
  (:meth:`SensorLiveness.event_time`, a robust quantile): a sensor whose clock runs
  ahead, or one reading stamped in the future but within ``max_clock_skew``, moves
  nothing. The watermark is that event time ``- allowed_lateness``, moved forward
  (never back) by :meth:`TickAssembler.advance`, once per poll batch (micro-batch
  semantics: the readings of one batch are judged against the watermark the previous
  batch left). The caller may cap the event time with ``limit_ns``: the service passes
  the smallest newest-event-time among the Kafka partitions that still have a backlog,
  so that one partition read ahead of the others (Kafka returns partitions in chunks)
  does not make the others' readings late. Partitions that have caught up do not hold
  the watermark back (idleness, as in Flink and Kafka Streams).
* **Closing.** Ticks close in time order, never before an earlier open tick. An open
  tick closes when
  (1) every up sensor has reported (``complete``); or
  (2) the watermark has passed its instant (``watermark``); or
  (3) ``grace_s`` seconds of processing time have passed since its first reading (its
  Kafka record timestamp, when known and no more than ``GRACE_LEAD_SHARE`` of the grace
  before the service read it: a producer's batching and the fetch do not lengthen the
  grace, a producer's clock far behind cannot shorten it by more than that), more
  than ``quorum`` of the up sensors have reported it and no partition has a backlog
  (``grace``): a sensor that skips one tick delays it by the grace, not by a whole
  tick, and a catching-up service never closes a tick before its readings are read.
  A tick nobody reported for does not exist: no forecast is issued for it, and it
  stands in the rolling window as a row of missing values.
* **Down sensors.** A sensor without a reading in ``down_after`` closed ticks in a row
  is down (:mod:`pipeline.service.liveness`): it no longer holds ticks open nor counts
  in the quorum. It is back when a closed tick holds a reading of it, or a late reading
  of it arrives. Each change is reported (:meth:`TickAssembler.take_changes`).
* **Missing sensors.** NaN in ``values`` and False in ``mask``; never zero.
* **Duplicates.** The same sensor and tick again with the same value (float32
  equality) is counted as ``duplicate`` and changes nothing. With a different value
  it is counted as ``conflict`` and *the later arrival wins* (a re-sent reading is a
  correction by its sensor). Because Kafka keeps each sensor's readings ordered
  (key = sensor id), a redelivery after a crash replays the same sequence and ends
  in the same state.
* **Late readings.** A reading whose tick has already closed, or whose instant was
  already behind the watermark when its batch arrived, is ``late``: the tick is not
  re-forecast. The value is returned for the store's corrections table and, when
  the tick is still inside the rolling window, it replaces the window's cell so
  later forecasts see the best-known data. A late reading equal to the window's
  value is a ``duplicate``. Readings older than the first tick the service ever saw
  follow the same rule (they are late).
* **Future readings.** A reading stamped more than ``max_clock_skew`` after the wall
  clock is rejected as ``future``. One within the skew is kept: it opens its tick,
  which waits like any other (the quorum keeps it from closing on grace alone).
  (Replayed historical data is always in the past, so this never fires on replays.)
  Whatever the skew (``off`` included), a reading more than
  :attr:`TickAssembler.max_ticks_ahead` ticks past the time at least half of the up
  sensors have sent (their newest timestamps, this batch's included: one sensor's clock
  reset to 1970 or running far ahead moves it not) is ``future`` too, and so is one that
  would open more than that many open ticks: they hold at most ``MAX_OPEN_CELLS`` cells.
* **Rolling window.** The last ``window`` closed ticks are kept (bounded memory).
  :meth:`TickAssembler.advance` returns the ticks it closed together with a
  :class:`~models.panel.SensorPanel` spanning them and the ``window - 1`` ticks
  before, so every closed tick can be forecast with one ``predict_batch`` call per
  model. Rows before the service's first tick are missing values (NaN, mask False),
  which the models fill like any other gap, so the first tick is forecast too.
* **Restart.** :meth:`TickAssembler.restore` rebuilds the window, the open ticks and
  the sensors' state from stored readings, so a restarted service forecasts at once
  (no cold start).
* **Clocks.** Event time comes from the readings; the wall clock (``now_ns``, for the
  future rule) and the processing clock (``now_s``, monotonic seconds, for the grace)
  are parameters of :meth:`TickAssembler.add` and :meth:`TickAssembler.advance`, so
  tests drive them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from models.panel import SensorPanel
from pipeline.service.liveness import NO_TIME, SensorChange, SensorLiveness
from pipeline.service.ticks import (
    COMPLETE,
    CONFLICT,
    DUPLICATE,
    FUTURE,
    GRACE,
    LATE,
    NEW,
    STATUS_NAMES,
    WATERMARK,
    AddResult,
    AssemblerConfig,
    ClosedRun,
    ClosedTick,
)

__all__ = [
    "CONFLICT", "DUPLICATE", "FUTURE", "LATE", "NEW", "STATUS_NAMES", "AddResult",
    "AssemblerConfig", "ClosedRun", "ClosedTick", "SensorChange", "TickAssembler",
]  # fmt: skip


# Open ticks hold at most this many sensor cells (float32 value + seen flag: about 250 MB):
# with ``max_clock_skew`` off, readings far ahead of the network cannot exhaust memory.
MAX_OPEN_CELLS = 50_000_000
# ... and at most this many ticks (each costs about 0.5 kB beyond its cells): for a small
# network the cell bound alone allowed millions.
MAX_OPEN_TICKS = 50_000
# A tick's grace starts at its first reading's Kafka timestamp, at most this share of the
# grace before the service read it (the bound on what a skewed producer clock can take).
GRACE_LEAD_SHARE = 0.25


@dataclass
class _OpenTick:
    values: np.ndarray  # [node] float32, NaN until reported
    seen: np.ndarray  # [node] bool
    first_seen_s: float  # processing clock at its first reading
    last_record_ms: int = -1  # newest Kafka record timestamp among its readings


@dataclass
class _Segment:
    start_tick: int
    rows_values: list[np.ndarray] = field(default_factory=list)
    rows_mask: list[np.ndarray] = field(default_factory=list)
    ticks: list[ClosedTick] = field(default_factory=list)


class TickAssembler:
    """Assembles readings of ``sensor_ids`` into ticks (see the module docstring).

    Readings are given by column index (position in ``sensor_ids``); mapping ids to
    columns, and dead-lettering unknown ids, is the caller's job.
    """

    def __init__(self, sensor_ids: Iterable[str], config: AssemblerConfig) -> None:
        self.sensor_ids: tuple[str, ...] = tuple(str(s) for s in sensor_ids)
        if not self.sensor_ids:
            raise ValueError("the assembler needs at least one sensor")
        if len(set(self.sensor_ids)) != len(self.sensor_ids):
            raise ValueError("sensor ids must be unique")
        self.config = config
        self.n_nodes = len(self.sensor_ids)
        self._open: dict[int, _OpenTick] = {}
        # Rolling window of closed ticks: row -1 is `last_closed`.
        shape = (config.window, self.n_nodes)
        self._hist_values = np.full(shape, np.nan, np.float32)  # [time, node]
        self._hist_mask = np.zeros(shape, bool)  # [time, node]
        self.first_tick: int | None = None
        self.last_closed: int | None = None
        self.max_ts_ns: int | None = None
        self._watermark_ns: int | None = None
        self.liveness = SensorLiveness(self.n_nodes, config.down_after)
        # Each sensor's newest timestamp, future ones beyond the ahead limit included (not
        # those past the wall clock's skew): what the ahead limit counts from.
        self._claimed_ns = np.full(self.n_nodes, NO_TIME, np.int64)  # [node]

    # ------------------------------------------------------------------ state
    @property
    def watermark_ns(self) -> int | None:
        """The watermark (ns) as of the last :meth:`advance`; None before the first."""
        return self._watermark_ns

    @property
    def open_ticks(self) -> list[int]:
        return sorted(self._open)

    @property
    def max_ticks_ahead(self) -> int:
        """How many ticks past the sensors' time a reading may lie, and how many ticks the
        assembler holds open at most."""
        return max(1, min(MAX_OPEN_TICKS, MAX_OPEN_CELLS // self.n_nodes))

    def ahead_limit(self) -> int:
        """The last tick a reading may open: :attr:`max_ticks_ahead` past the time at
        least half of the up sensors have sent (their newest timestamps, the current
        batch's included), so neither one sensor's clock reset to the past nor one far
        ahead can move it."""
        claimed = self._claimed_ns[self.liveness.up & (self._claimed_ns != NO_TIME)]
        if not len(claimed):
            return int(np.iinfo(np.int64).max)
        k = len(claimed) // 2  # ascending rank: at least half of them reached it
        reference = int(np.partition(claimed, k)[k])
        return int(self.config.tick_of(np.array(reference))) + self.max_ticks_ahead

    @property
    def down(self) -> np.ndarray:
        """bool ``[node]``: the sensors that are down (they hold no tick open)."""
        return self.liveness.down.copy()

    def take_changes(self) -> list[SensorChange]:
        """Sensors that went down or came back since the last call."""
        return self.liveness.take_changes()

    def grace_deadline(self) -> float | None:
        """Processing-clock time at which the earliest open tick may close on grace
        (backlog aside); None when it cannot (no open tick, no grace, no quorum)."""
        grace = self.config.grace_s
        if grace is None or not self._open:
            return None
        first = self._open[min(self._open)]
        if not self.liveness.quorum_met(first.seen, self.config.quorum):
            return None
        return first.first_seen_s + grace

    def window_panel(self) -> SensorPanel | None:
        """The last ``window`` closed ticks as a panel (None before the first close)."""
        if self.last_closed is None:
            return None
        start = self.last_closed - self.config.window + 1
        return self._panel(start, self._hist_values.copy(), self._hist_mask.copy())

    # -------------------------------------------------------------------- add
    def add(
        self,
        cols: np.ndarray,
        ts_ns: np.ndarray,
        values: np.ndarray,
        record_ms: np.ndarray | None = None,
        *,
        now_ns: int | None = None,
        now_s: float | None = None,
    ) -> AddResult:
        """Add a batch of readings; returns what happened to each.

        Parameters
        ----------
        cols : int ``[n]`` sensor column of each reading.
        ts_ns : int64 ``[n]`` event time, ns since the epoch (UTC).
        values : float ``[n]`` finite readings (validation happens before).
        record_ms : int64 ``[n]`` Kafka record timestamps (ms), for the latency measure.
        now_ns : wall clock for the ``future`` rule (default: ``time.time_ns()``).
        now_s : processing clock, seconds, for the grace (default: ``time.monotonic()``).
        """
        cols = np.asarray(cols, dtype=np.int64)
        ts_ns = np.asarray(ts_ns, dtype=np.int64)
        vals = np.asarray(values, dtype=np.float32)
        n = len(cols)
        if not (len(ts_ns) == len(vals) == n):
            raise ValueError(
                f"cols, ts_ns and values differ in length: {n}, {len(ts_ns)}, {len(vals)}"
            )
        rec = (
            np.full(n, -1, np.int64) if record_ms is None else np.asarray(record_ms, dtype=np.int64)
        )
        if n and (cols.min() < 0 or cols.max() >= self.n_nodes):
            raise ValueError(f"sensor column out of range 0..{self.n_nodes - 1}")
        if n and not np.isfinite(vals).all():
            raise ValueError("non-finite reading values must be dead-lettered before assembly")
        status = np.full(n, NEW, np.int8)  # [n]
        ticks = self.config.tick_of(ts_ns)  # [n]
        if n == 0:
            return AddResult(status, ticks, vals)

        skew = self.config.max_clock_skew
        if skew is not None:
            now = time.time_ns() if now_ns is None else now_ns
            status[ts_ns > now + skew.value] = FUTURE
        claim = np.nonzero(status != FUTURE)[0]
        np.maximum.at(self._claimed_ns, cols[claim], ts_ns[claim])
        status[ticks > self.ahead_limit()] = FUTURE

        late = np.zeros(n, bool)  # [n]
        if self.last_closed is not None:
            late |= ticks <= self.last_closed
        watermark = self.watermark_ns
        if watermark is not None:
            late |= self.config.tick_ns(ticks) < watermark
        late &= status != FUTURE
        if late.any():
            late_idx = np.nonzero(late)[0]
            self._add_late(late_idx, cols, ticks, vals, status)
            self.liveness.reported(cols[late_idx], ticks[late_idx])

        on_time = np.nonzero(status == NEW)[0]
        on_time = on_time[~late[on_time]]
        on_time = self._within_open_bound(on_time, ticks, status)
        if len(on_time):
            arrived_s = time.monotonic() if now_s is None else now_s
            wall_ms = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
            self._add_on_time(on_time, cols, ticks, vals, rec, status, arrived_s, wall_ms)
            self.liveness.saw(cols[on_time], ts_ns[on_time])
            newest = int(ts_ns[on_time].max())
            self.max_ts_ns = newest if self.max_ts_ns is None else max(self.max_ts_ns, newest)
            if self.first_tick is None:
                self.first_tick = int(ticks[on_time].min())
        return AddResult(status, ticks, vals)

    def _within_open_bound(
        self, idx: np.ndarray, ticks: np.ndarray, status: np.ndarray
    ) -> np.ndarray:
        """``idx`` less the readings that would open more than :attr:`max_ticks_ahead`
        ticks (bounded memory); those are ``future`` (the newest new ticks go first)."""
        new_ticks = np.unique(ticks[idx])  # ascending
        if self._open:
            new_ticks = new_ticks[~np.isin(new_ticks, np.fromiter(self._open, np.int64))]
        room = max(0, self.max_ticks_ahead - len(self._open))
        if len(new_ticks) <= room:
            return idx
        refused = np.isin(ticks[idx], new_ticks[room:])
        status[idx[refused]] = FUTURE
        return idx[~refused]

    def _add_on_time(
        self,
        idx: np.ndarray,
        cols: np.ndarray,
        ticks: np.ndarray,
        vals: np.ndarray,
        rec: np.ndarray,
        status: np.ndarray,
        now_s: float,
        wall_ms: int,
    ) -> None:
        # Sort by (tick, column, arrival) so that the previous occurrence of each
        # (tick, column) slot is the neighbour: sequential semantics, vectorised.
        order = idx[np.lexsort((idx, cols[idx], ticks[idx]))]
        t, c, v = ticks[order], cols[order], vals[order]
        same_slot = np.zeros(len(order), bool)  # [m] previous element is the same slot
        same_slot[1:] = (t[1:] == t[:-1]) & (c[1:] == c[:-1])
        last_of_slot = np.ones(len(order), bool)  # [m]
        last_of_slot[:-1] = ~same_slot[1:]
        bounds = np.flatnonzero(np.diff(t)) + 1
        for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(order)], strict=True):
            tick = int(t[lo])
            open_tick = self._open.get(tick)
            if open_tick is None:
                open_tick = _OpenTick(
                    values=np.full(self.n_nodes, np.nan, np.float32),  # [node]
                    seen=np.zeros(self.n_nodes, bool),  # [node]
                    first_seen_s=now_s - self._lead_s(rec[order[lo:hi]], wall_ms),
                )
                self._open[tick] = open_tick
            gc, gv, gsame = c[lo:hi], v[lo:hi], same_slot[lo:hi]
            # The value this reading is compared with: the previous reading of the
            # slot in this batch, else what the open tick already holds.
            prev_seen = np.where(gsame, True, open_tick.seen[gc])
            prev_val = np.where(gsame, np.roll(gv, 1), open_tick.values[gc])
            repeat = np.where(prev_val == gv, DUPLICATE, CONFLICT)
            status[order[lo:hi]] = np.where(prev_seen, repeat, NEW)
            keep = last_of_slot[lo:hi]
            open_tick.values[gc[keep]] = gv[keep]
            open_tick.seen[gc] = True
            open_tick.last_record_ms = max(open_tick.last_record_ms, int(rec[order[lo:hi]].max()))

    def _lead_s(self, record_ms: np.ndarray, wall_ms: int) -> float:
        """How long before now a new tick's first reading reached Kafka (its record
        timestamp), at most :data:`GRACE_LEAD_SHARE` of the grace; 0 when unknown."""
        known = record_ms[record_ms >= 0]
        if self.config.grace_s is None or not known.size:
            return 0.0
        lead = (wall_ms - int(known.min())) / 1000.0
        return min(max(lead, 0.0), GRACE_LEAD_SHARE * self.config.grace_s)

    def _add_late(
        self,
        idx: np.ndarray,
        cols: np.ndarray,
        ticks: np.ndarray,
        vals: np.ndarray,
        status: np.ndarray,
    ) -> None:
        status[idx] = LATE
        if self.last_closed is None:
            return
        # Rare by construction: a plain loop keeps the sequential semantics obvious.
        oldest = self.last_closed - self.config.window + 1
        for i in idx:
            tick = int(ticks[i])
            if tick < oldest or tick > self.last_closed:
                continue
            row, col = tick - oldest, int(cols[i])
            if self._hist_mask[row, col] and self._hist_values[row, col] == vals[i]:
                status[i] = DUPLICATE
            else:
                self._hist_values[row, col] = vals[i]
                self._hist_mask[row, col] = True

    # ---------------------------------------------------------------- advance
    def advance(
        self, limit_ns: int | None = None, *, now_s: float | None = None, backlog: bool = False
    ) -> list[ClosedRun]:
        """Move the watermark, close every tick that is ready; returns them grouped in runs.

        Parameters
        ----------
        limit_ns : cap on the event time the watermark may reach (ns), e.g. the newest
            event time of the slowest source with a backlog; None: no cap.
        now_s : processing clock, seconds, for the grace (default: ``time.monotonic()``).
        backlog : readings are still waiting to be read: no tick closes on grace.

        Usually one run. Ticks separated by more than a window of empty ticks start a
        new run, so that a long gap never builds a long panel of NaN.
        """
        event_time = self.liveness.event_time(self.config.quorum)
        if event_time is not None:
            if limit_ns is not None:
                event_time = min(event_time, limit_ns)
            candidate = event_time - self.config.allowed_lateness.value
            if self._watermark_ns is None or candidate > self._watermark_ns:
                self._watermark_ns = candidate
        now = time.monotonic() if now_s is None else now_s
        runs: list[ClosedRun] = []
        segment: _Segment | None = None
        while self._open:
            tick = min(self._open)
            reason = self._ready(tick, now, backlog)
            if reason is None:
                break
            segment = self._close(tick, reason, segment, runs)
        if segment is not None:
            runs.append(self._finish(segment))
        return runs

    def _ready(self, tick: int, now_s: float, backlog: bool) -> str | None:
        """Why the open tick ``tick`` may close now (None: it may not)."""
        open_tick = self._open[tick]
        up = self.liveness.up
        if bool((open_tick.seen | ~up).all()):
            return COMPLETE
        watermark = self._watermark_ns
        if watermark is not None and int(self.config.tick_ns(tick)) < watermark:
            return WATERMARK
        grace = self.config.grace_s
        if (
            grace is not None
            and not backlog
            and now_s - open_tick.first_seen_s >= grace
            and self.liveness.quorum_met(open_tick.seen, self.config.quorum)
        ):
            return GRACE
        return None

    def _close(
        self, tick: int, reason: str, segment: _Segment | None, runs: list[ClosedRun]
    ) -> _Segment:
        """Close ``tick`` into ``segment`` (a new one after a long gap; the finished one
        goes to ``runs``); the sensors' state sees it."""
        window = self.config.window
        gap = 0 if self.last_closed is None else tick - self.last_closed - 1
        if segment is None or gap >= window:
            if segment is not None:
                runs.append(self._finish(segment))
            self._shift(gap + 1)
            segment = _Segment(start_tick=tick - window + 1)
            segment.rows_values.extend(self._hist_values[:-1])
            segment.rows_mask.extend(self._hist_mask[:-1])
        else:
            for _ in range(gap):
                segment.rows_values.append(np.full(self.n_nodes, np.nan, np.float32))
                segment.rows_mask.append(np.zeros(self.n_nodes, bool))
            self._shift(gap + 1)
        open_tick = self._open.pop(tick)
        self._hist_values[-1] = open_tick.values
        self._hist_mask[-1] = open_tick.seen
        self.last_closed = tick
        if self.first_tick is None or tick < self.first_tick:
            self.first_tick = tick
        position = len(segment.rows_values)
        segment.rows_values.append(open_tick.values)
        segment.rows_mask.append(open_tick.seen.copy())
        segment.ticks.append(
            ClosedTick(
                tick=tick,
                ts=self.config.tick_time(tick),
                position=position,
                values=open_tick.values,
                mask=open_tick.seen,
                reason=reason,
                last_record_ms=open_tick.last_record_ms,
            )
        )
        self.liveness.closed(tick, open_tick.seen)
        return segment

    def _shift(self, steps: int) -> None:
        """Move the window ``steps`` ticks forward, filling new rows as missing."""
        steps = min(steps, self.config.window)
        self._hist_values = np.roll(self._hist_values, -steps, axis=0)
        self._hist_mask = np.roll(self._hist_mask, -steps, axis=0)
        self._hist_values[-steps:] = np.nan
        self._hist_mask[-steps:] = False

    def _finish(self, segment: _Segment) -> ClosedRun:
        values = np.stack(segment.rows_values)  # [time, node]
        mask = np.stack(segment.rows_mask)  # [time, node]
        return ClosedRun(self._panel(segment.start_tick, values, mask), tuple(segment.ticks))

    def _panel(self, start_tick: int, values: np.ndarray, mask: np.ndarray) -> SensorPanel:
        timestamps = pd.date_range(
            pd.Timestamp(int(self.config.tick_ns(start_tick)), tz="UTC"),
            periods=len(values),
            freq=self.config.freq,
        )
        return SensorPanel(values, mask, timestamps, self.sensor_ids)

    # ---------------------------------------------------------------- restore
    def restore(
        self,
        *,
        first_tick: int | None,
        last_closed: int | None,
        max_ts_ns: int | None,
        watermark_ns: int | None,
        cols: np.ndarray,
        ticks: np.ndarray,
        values: np.ndarray,
        record_ms: np.ndarray | None = None,
        down_since: dict[int, int] | None = None,
        now_s: float | None = None,
    ) -> None:
        """Rebuild state from stored readings (window rows and open ticks).

        ``cols``/``ticks``/``values`` are the stored readings of the last ``window``
        closed ticks (corrections applied) and of every open tick (tick after
        ``last_closed``). Older readings are ignored. Counters are not touched: these
        readings were counted when they first arrived. ``down_since`` holds the down
        sensors (column -> first tick of the silence); the missed ticks of the others
        are counted again over the window's ticks. Restored open ticks start their
        grace at ``now_s`` (default: ``time.monotonic()``).
        """
        if self._open or self.last_closed is not None or self.max_ts_ns is not None:
            raise RuntimeError("restore() must be called on a fresh assembler")
        cols = np.asarray(cols, dtype=np.int64)
        ticks = np.asarray(ticks, dtype=np.int64)
        vals = np.asarray(values, dtype=np.float32)
        rec = (
            np.full(len(cols), -1, np.int64)
            if record_ms is None
            else np.asarray(record_ms, dtype=np.int64)
        )
        self.first_tick, self.last_closed, self.max_ts_ns = first_tick, last_closed, max_ts_ns
        self._watermark_ns = watermark_ns
        if last_closed is not None:
            oldest = last_closed - self.config.window + 1
            inside = (ticks >= oldest) & (ticks <= last_closed)
            self._hist_values[ticks[inside] - oldest, cols[inside]] = vals[inside]
            self._hist_mask[ticks[inside] - oldest, cols[inside]] = True
            pending = ticks > last_closed
        else:
            pending = np.ones(len(ticks), bool)
        if last_closed is not None:
            oldest = last_closed - self.config.window + 1
            for row in np.flatnonzero(self._hist_mask.any(axis=1)).tolist():
                self.liveness.closed(oldest + row, self._hist_mask[row])
        self.liveness.restore(dict(down_since or {}))
        self.liveness.saw(cols, self.config.tick_ns(ticks))
        self._claimed_ns = self.liveness.newest_ns.copy()
        now = time.monotonic() if now_s is None else now_s
        for tick in np.unique(ticks[pending]):
            sel = pending & (ticks == tick)
            open_tick = _OpenTick(
                values=np.full(self.n_nodes, np.nan, np.float32),  # [node]
                seen=np.zeros(self.n_nodes, bool),  # [node]
                first_seen_s=now,
                last_record_ms=int(rec[sel].max()),
            )
            open_tick.values[cols[sel]] = vals[sel]
            open_tick.seen[cols[sel]] = True
            self._open[int(tick)] = open_tick
