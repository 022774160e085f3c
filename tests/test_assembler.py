"""Tick assembly: grid, watermark, missing/duplicate/late/future readings, window, restore."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.service.assembler import (
    CONFLICT,
    DUPLICATE,
    FUTURE,
    LATE,
    NEW,
    AssemblerConfig,
    TickAssembler,
)

FREQ = pd.Timedelta("5min")
T0 = pd.Timestamp("2012-03-01", tz="UTC")
SENSORS = ("a", "b", "c")


def ns(step: float) -> int:
    """Event time of grid step ``step`` after T0, in ns."""
    return int((T0 + step * FREQ).value)


def make(window: int = 3, lateness: str = "0min", **kw) -> TickAssembler:
    config = AssemblerConfig(
        freq=FREQ, allowed_lateness=pd.Timedelta(lateness), window=window, **kw
    )
    return TickAssembler(SENSORS, config)


def add(asm: TickAssembler, rows: list[tuple[int, float, float]], now_ns: int | None = None):
    """rows: (col, step, value)."""
    cols = np.array([r[0] for r in rows])
    ts = np.array([ns(r[1]) for r in rows], dtype=np.int64)
    vals = np.array([r[2] for r in rows], dtype=np.float32)
    return asm.add(cols, ts, vals, np.arange(len(rows)), now_ns=now_ns)


def full_tick(step: int, base: float = 0.0) -> list[tuple[int, float, float]]:
    return [(c, step, base + 10 * step + c) for c in range(len(SENSORS))]


def test_complete_tick_closes_at_once():
    asm = make()
    res = add(asm, full_tick(0))
    assert list(res.status) == [NEW] * 3
    runs = asm.advance()
    assert len(runs) == 1
    (tick,) = runs[0].ticks
    assert tick.reason == "complete" and tick.observed == 3
    assert tick.ts == T0
    np.testing.assert_array_equal(tick.values, [0, 1, 2])
    assert asm.open_ticks == []


def test_incomplete_tick_waits_for_watermark_then_masks_missing():
    asm = make(lateness="2min")
    add(asm, [(0, 0, 1.0), (1, 0, 2.0)])
    assert asm.advance() == []  # sensor c may still come
    add(asm, [(0, 1, 3.0), (1, 1, 4.0)])  # most sensors at 5min: watermark 3min > tick 0
    (run,) = asm.advance()
    (tick,) = run.ticks
    assert tick.reason == "watermark"
    assert tick.mask.tolist() == [True, True, False]
    assert np.isnan(tick.values[2])  # missing is NaN, never zero
    last = run.panel.values[tick.position]
    assert np.isnan(last[2]) and not run.panel.mask[tick.position, 2]


def test_within_lateness_out_of_order_is_on_time():
    asm = make(lateness="6min")
    add(asm, [(0, 1, 1.0), (1, 1, 1.0), (2, 1, 1.0)])  # tick 1 complete, tick 0 never seen
    add(asm, [(0, 0, 5.0)])  # older, but within lateness: opens tick 0
    runs = asm.advance()
    closed = [t.tick for r in runs for t in r.ticks]
    # tick 1 is complete, but ticks close in order and tick 0 is still within lateness
    assert closed == []
    add(asm, [(1, 0, 6.0), (2, 0, 7.0)])
    runs = asm.advance()
    closed = [(t.tick - runs[0].ticks[0].tick, t.reason) for r in runs for t in r.ticks]
    assert closed == [(0, "complete"), (1, "complete")]


def test_duplicates_are_idempotent_and_conflicts_take_the_later_value():
    asm = make()
    res = add(asm, [(0, 0, 1.0), (0, 0, 1.0), (1, 0, 2.0), (1, 0, 9.0), (1, 0, 2.0)])
    assert list(res.status) == [NEW, DUPLICATE, NEW, CONFLICT, CONFLICT]
    res = add(asm, [(0, 0, 1.0), (1, 0, 2.0)])  # across batches too
    assert list(res.status) == [DUPLICATE, DUPLICATE]
    add(asm, [(2, 0, 3.0)])
    (run,) = asm.advance()
    np.testing.assert_array_equal(run.ticks[0].values, [1.0, 2.0, 3.0])
    assert res.counts() == {"new": 0, "duplicate": 2, "conflict": 0, "late": 0, "future": 0}


def test_late_reading_is_counted_not_reforecast_and_fills_the_window():
    asm = make(window=3)
    add(asm, [(0, 0, 1.0), (1, 0, 2.0)])
    add(asm, full_tick(1))
    runs = asm.advance()
    assert [t.reason for r in runs for t in r.ticks] == ["watermark", "complete"]
    res = add(asm, [(2, 0, 7.0)])  # tick 0 closed
    assert list(res.status) == [LATE]
    assert asm.advance() == []  # nothing re-forecast
    window = asm.window_panel()
    assert window is not None and window.values[-2, 2] == 7.0  # later forecasts see it
    res = add(asm, [(2, 0, 7.0)])
    assert list(res.status) == [DUPLICATE]  # the same late value again


def test_late_reading_older_than_the_window_is_late():
    asm = make(window=2)
    for step in range(5):
        add(asm, full_tick(step))
    asm.advance()
    res = add(asm, [(0, 0, 99.0), (0, -10, 1.0)])  # before the first tick ever, too
    assert list(res.status) == [LATE, LATE]


def test_future_reading_is_rejected_and_does_not_move_the_watermark():
    asm = make(lateness="0min")
    add(asm, [(0, 0, 1.0)])
    now = ns(0)
    res = add(asm, [(1, 1000, 5.0)], now_ns=now)  # 1000 ticks ahead of the wall clock
    assert list(res.status) == [FUTURE]
    assert asm.advance() == []  # tick 0 still open: the watermark did not jump
    assert asm.max_ts_ns == ns(0)


def test_future_check_can_be_disabled():
    asm = make(max_clock_skew=None)
    res = add(asm, full_tick(10), now_ns=ns(0))
    assert list(res.status) == [NEW] * 3


def test_with_the_clock_check_off_open_ticks_stay_bounded(monkeypatch):
    """A reading more than ``max_ticks_ahead`` past the time most sensors sent is future,
    and the open ticks never number more than ``max_ticks_ahead``."""
    monkeypatch.setattr("pipeline.service.assembler.MAX_OPEN_CELLS", 30)  # 3 sensors: 10 ticks
    asm = make(max_clock_skew=None)
    assert asm.max_ticks_ahead == 10
    res = add(asm, [(2, 10**6, 1.0), (0, 0, 2.0), (1, 0, 3.0), (2, 10, 3.0), (2, 11, 4.0)])
    assert list(res.status) == [FUTURE, NEW, NEW, NEW, FUTURE]  # 10 ticks past tick 0 at most
    assert asm.open_ticks[-1] - asm.open_ticks[0] == 10
    res = add(asm, [(1, step, 1.0) for step in range(1, 11)])  # one sensor's ticks 1..10
    assert list(res.status) == [NEW] * 8 + [FUTURE, NEW]  # ticks 9: no room (10 is open)
    assert len(asm.open_ticks) == 10
    for step in range(3):
        add(asm, full_tick(step))
    asm.advance()
    assert asm.last_closed is not None and len(asm.open_ticks) <= 10


def test_limit_holds_the_watermark_back_and_it_never_moves_back():
    asm = make(lateness="0min")
    add(asm, [(0, 0, 1.0), (1, 0, 1.0)])  # sensor c is on a slower partition
    add(asm, [(0, 5, 1.0), (1, 5, 1.0)])  # the fast partition is five ticks ahead
    assert asm.advance(limit_ns=ns(0)) == []  # the slow one has only reached tick 0
    res = add(asm, [(2, 0, 3.0)])
    assert list(res.status) == [NEW]  # not late: the watermark waited for it
    (run,) = asm.advance(limit_ns=ns(0))
    assert [t.reason for t in run.ticks] == ["complete"]
    asm.advance()  # the slow partition caught up: no cap
    assert asm.watermark_ns == ns(5)
    asm.advance(limit_ns=ns(1))
    assert asm.watermark_ns == ns(5)  # monotonic


def test_gap_rows_are_missing_and_long_gaps_start_a_new_run():
    asm = make(window=3)
    add(asm, full_tick(0))
    add(asm, full_tick(2))  # tick 1 had no reading at all
    runs = asm.advance()
    assert len(runs) == 1
    run = runs[0]
    assert [t.position for t in run.ticks] == [2, 4]
    assert not run.panel.mask[3].any()  # the empty tick is a row of missing values
    assert run.panel.timestamps.freq == FREQ
    add(asm, full_tick(50))  # far beyond the window: a new run, no 48 NaN rows
    (run2,) = asm.advance()
    assert run2.panel.n_time == 3 and run2.ticks[0].position == 2
    assert run2.panel.timestamps[-1] == T0 + 50 * FREQ


def test_run_panel_holds_the_window_before_each_closed_tick():
    asm = make(window=3)
    for step in range(4):
        add(asm, full_tick(step))
    runs = asm.advance()
    assert len(runs) == 1
    run = runs[0]
    assert not run.panel.mask[:2].any()  # two padding rows before the first tick ever
    assert list(run.origins) == [2, 3, 4, 5]
    assert run.panel.n_time == 6
    np.testing.assert_array_equal(run.panel.values[2:, 0], [0, 10, 20, 30])
    window = asm.window_panel()
    assert window is not None
    np.testing.assert_array_equal(window.values[:, 1], [11, 21, 31])
    # a second batch: its run starts with the previous closed ticks, not padding
    add(asm, full_tick(4))
    (run,) = asm.advance()
    assert run.panel.mask.all()
    np.testing.assert_array_equal(run.panel.values[:, 0], [20, 30, 40])


def test_restore_rebuilds_window_and_open_ticks():
    asm = make(window=3, lateness="1min")
    for step in range(4):
        add(asm, full_tick(step))
    add(asm, [(0, 4, 40.0)])  # open tick 4
    asm.advance()
    fresh = make(window=3, lateness="1min")
    cols = np.array([c for s in range(1, 4) for c in range(3)] + [0])
    ticks = asm.config.tick_of(
        np.array([ns(s) for s in range(1, 4) for _ in range(3)] + [ns(4)], dtype=np.int64)
    )
    vals = np.array([10 * s + c for s in range(1, 4) for c in range(3)] + [40.0])
    fresh.restore(
        first_tick=asm.first_tick,
        last_closed=asm.last_closed,
        max_ts_ns=asm.max_ts_ns,
        watermark_ns=asm.watermark_ns,
        cols=cols,
        ticks=ticks,
        values=vals,
    )
    a, b = asm.window_panel(), fresh.window_panel()
    assert a is not None and b is not None
    np.testing.assert_array_equal(a.values, b.values)
    assert fresh.open_ticks == asm.open_ticks
    add(fresh, [(1, 4, 41.0), (2, 4, 42.0)])
    (run,) = fresh.advance()
    np.testing.assert_array_equal(run.ticks[0].values, [40, 41, 42])
    assert run.panel.mask[:-1].all()  # no cold start: the window is the restored one
    with pytest.raises(RuntimeError, match="fresh"):
        fresh.restore(
            first_tick=None,
            last_closed=None,
            max_ts_ns=None,
            watermark_ns=None,
            cols=[],
            ticks=[],
            values=[],
        )


def test_bad_input_is_a_clear_error():
    asm = make()
    with pytest.raises(ValueError, match="out of range"):
        add(asm, [(7, 0, 1.0)])
    with pytest.raises(ValueError, match="dead-lettered"):
        add(asm, [(0, 0, float("nan"))])
    with pytest.raises(ValueError, match="length"):
        asm.add(np.array([0]), np.array([1, 2]), np.array([1.0]))
    with pytest.raises(ValueError, match="whole number of ms"):
        AssemblerConfig(freq=pd.Timedelta("1us"))
    with pytest.raises(ValueError, match="lateness"):
        AssemblerConfig(freq=FREQ, allowed_lateness=pd.Timedelta("-1min"))
    with pytest.raises(ValueError, match="unique"):
        TickAssembler(["a", "a"], AssemblerConfig(freq=FREQ))


def test_off_grid_readings_floor_onto_their_tick():
    asm = make()
    cols = np.array([0, 1, 2])
    ts = np.array([ns(0) + 60_000_000_000 * k for k in (0, 2, 4)], dtype=np.int64)
    asm.add(cols, ts, np.array([1.0, 2.0, 3.0]))
    (run,) = asm.advance()
    assert run.ticks[0].ts == T0 and run.ticks[0].reason == "complete"


@settings(max_examples=60)
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 8), st.sampled_from([1.0, 2.0])),
        min_size=1,
        max_size=60,
    ),
    st.integers(1, 10),
    st.sampled_from([None, 1, 2]),
    st.sampled_from([None, 0.5]),
)
def test_no_reading_is_lost_and_state_matches_sequential_replay(rows, batch, down_after, grace):
    """Property: every reading gets exactly one status; each tick closes once, in order;
    the value kept for each on-time slot is the last one that arrived (with sensors going
    down and the grace closing ticks, too)."""
    asm = make(window=4, lateness="7min", max_clock_skew=None, down_after=down_after, grace_s=grace)
    closed: list[int] = []
    last_value: dict[tuple[int, int], float] = {}
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        res = add_at(asm, chunk, now_s=float(i))
        assert len(res.status) == len(chunk)
        for (col, step, value), code in zip(chunk, res.status, strict=True):
            if code in (NEW, CONFLICT):
                last_value[(step, col)] = value
        for run in asm.advance(now_s=float(i)):
            for t in run.ticks:
                closed.append(t.tick)
                step = t.tick - asm.config.tick_of(np.array([ns(0)]))[0]
                for col in range(3):
                    if (step, col) in last_value:
                        assert t.values[col] == last_value[(step, col)]
                    else:
                        assert not t.mask[col]
    assert closed == sorted(set(closed))


# ----------------------------------------------------------- event time you can trust

SIX = tuple("abcdef")


def make_six(**kw) -> TickAssembler:
    return TickAssembler(SIX, AssemblerConfig(freq=FREQ, window=3, **kw))


def add_six(asm: TickAssembler, rows, now_ns: int | None = None, now_s: float = 0.0):
    cols = np.array([r[0] for r in rows])
    ts = np.array([ns(r[1]) for r in rows], dtype=np.int64)
    vals = np.array([r[2] for r in rows], dtype=np.float32)
    return asm.add(cols, ts, vals, now_ns=now_ns, now_s=now_s)


def test_one_reading_ahead_of_the_network_does_not_move_the_watermark():
    """Issue 11, case 4: a reading 55 minutes ahead (inside the clock-skew allowance) left
    the watermark at its time; the current tick closed with 1 sensor and the next readings
    were all late. The network's event time is what most sensors have reached."""
    asm = make_six(grace_s=2.0)
    now = ns(3)  # the wall clock: tick 3 is the current one
    for step in range(3):
        add_six(asm, [(c, step, 1.0) for c in range(6)], now_ns=now)
    asm.advance(now_s=0.0)
    add_six(asm, [(0, 3, 1.0)], now_ns=now, now_s=1.0)  # the current tick begins
    res = add_six(asm, [(1, 3 + 11, 9.0)], now_ns=now, now_s=1.0)  # 55 minutes ahead
    assert list(res.status) == [NEW]  # within the skew: kept
    assert asm.advance(now_s=1.0) == []  # tick 3 stays open
    assert asm.watermark_ns == ns(2)
    res = add_six(asm, [(c, 3, 1.0) for c in range(1, 6)], now_ns=now, now_s=1.5)
    assert list(res.status) == [NEW] * 5  # not late
    (run,) = asm.advance(now_s=1.5)
    assert [(t.tick - asm.config.tick_of(np.array([ns(0)]))[0], t.reason) for t in run.ticks] == [
        (3, "complete")
    ]
    assert run.ticks[0].observed == 6
    for step in (4, 5):  # the following ticks close normally too
        res = add_six(asm, [(c, step, 1.0) for c in range(6)], now_ns=now, now_s=10.0 * step)
        assert list(res.status) == [NEW] * 6
        (run,) = asm.advance(now_s=10.0 * step + 100)
        assert [(t.observed, t.reason) for t in run.ticks] == [(6, "complete")]
    # the tick ahead has one reading: the grace never closes it, whatever the time
    assert asm.advance(now_s=1e9) == [] and len(asm.open_ticks) == 1


def test_the_event_time_is_what_more_than_half_of_the_sensors_reached():
    asm = make_six()
    add_six(asm, [(c, 0, 1.0) for c in range(6)])
    add_six(asm, [(0, 9, 1.0), (1, 8, 1.0), (2, 1, 1.0)])  # two sensors far ahead
    asm.advance()
    assert asm.watermark_ns == ns(0)  # only 3 of 6 sensors have reached tick 1
    add_six(asm, [(3, 1, 1.0)])
    asm.advance()
    assert asm.watermark_ns == ns(1)  # 4 of 6 have
    add_six(asm, [(3, 2, 1.0), (4, 2, 1.0), (5, 2, 1.0)])
    asm.advance()
    assert asm.watermark_ns == ns(2)


def test_clock_skew_and_the_new_settings_are_validated():
    for bad, match in (
        ({"max_clock_skew": pd.Timedelta("-1h")}, "clock skew must be positive"),
        ({"max_clock_skew": pd.Timedelta(0)}, "clock skew must be positive"),
        ({"grace_s": 0.0}, "grace"),
        ({"down_after": 0}, "down_after"),
        ({"quorum": 1.0}, "quorum"),
    ):
        with pytest.raises(ValueError, match=match):
            AssemblerConfig(freq=FREQ, **bad)


# ------------------------------------------------------ silent sensors and the grace


def tick_steps(runs) -> list[tuple[int, str, int]]:
    """(step after T0, reason, observed) of every closed tick."""
    base = int((T0.value - AssemblerConfig(freq=FREQ).origin.value) // FREQ.value)
    return [(t.tick - base, t.reason, t.observed) for r in runs for t in r.ticks]


def test_a_silent_sensor_goes_down_after_n_ticks_and_stops_holding_ticks():
    asm = make(down_after=2, max_clock_skew=None)
    add(asm, [(0, 0, 1.0), (1, 0, 1.0)])
    assert asm.advance() == []  # c is silent: the tick waits for the watermark
    add(asm, [(0, 1, 1.0), (1, 1, 1.0)])
    assert tick_steps(asm.advance()) == [(0, "watermark", 2)]
    assert asm.take_changes() == [] and not asm.down.any()
    add(asm, [(0, 2, 1.0), (1, 2, 1.0)])
    # the second tick c missed: c is down, and tick 2 is complete without it at once
    assert tick_steps(asm.advance()) == [(1, "watermark", 2), (2, "complete", 2)]
    (change,) = asm.take_changes()
    assert change.col == 2 and change.down
    assert (change.since, change.tick) == (asm.first_tick, asm.first_tick + 1)
    assert asm.down.tolist() == [False, False, True]
    add(asm, [(0, 3, 1.0), (1, 3, 1.0)])
    assert tick_steps(asm.advance()) == [(3, "complete", 2)]  # no wait for c
    assert asm.take_changes() == []


def test_a_down_sensor_comes_back_when_a_tick_with_its_reading_closes():
    asm = make(down_after=1, max_clock_skew=None)
    add(asm, [(0, 0, 1.0), (1, 0, 1.0)])
    add(asm, [(0, 1, 1.0), (1, 1, 1.0)])
    assert tick_steps(asm.advance()) == [(0, "watermark", 2), (1, "complete", 2)]
    (down,) = asm.take_changes()
    assert down.down and down.col == 2
    add(asm, [(2, 10, 5.0)])  # ahead of the network: not back until its tick closes
    assert asm.advance() == []
    assert asm.take_changes() == [] and asm.down[2]
    add(asm, full_tick(2))
    assert tick_steps(asm.advance()) == [(2, "complete", 3)]
    (back,) = asm.take_changes()
    assert not back.down and back.col == 2 and back.since == down.since
    assert not asm.down.any()


def test_a_late_reading_brings_a_down_sensor_back():
    asm = make(down_after=1, max_clock_skew=None)
    add(asm, [(0, 0, 1.0), (1, 0, 1.0)])
    add(asm, [(0, 1, 1.0), (1, 1, 1.0)])
    asm.advance()
    assert [c.down for c in asm.take_changes()] == [True]
    res = add(asm, [(2, 0, 7.0)])
    assert list(res.status) == [LATE]
    (back,) = asm.take_changes()
    assert not back.down and not asm.down.any()


def test_a_late_reading_from_before_the_silence_does_not_bring_a_sensor_back():
    asm = make(down_after=2, max_clock_skew=None)
    add(asm, full_tick(0))
    add(asm, full_tick(1))
    for tick in (2, 3):
        add(asm, [(0, tick, 1.0), (1, tick, 1.0)])
    add(asm, [(0, 4, 1.0), (1, 4, 1.0)])
    asm.advance()
    (down,) = asm.take_changes()
    assert down.down and down.col == 2 and down.tick == down.since + 1  # silent from step 2
    res = add(asm, [(2, 1, 7.0)])  # tick 1 (before the silence) arrives late
    assert list(res.status) == [LATE]
    assert asm.take_changes() == [] and asm.down[2]
    add(asm, [(2, 2, 7.0)])  # a tick of the silence: it reports again
    (back,) = asm.take_changes()
    assert not back.down and back.tick == down.since and not asm.down.any()


def test_grace_closes_a_tick_whose_up_sensors_have_not_all_reported():
    asm = make(grace_s=2.0, max_clock_skew=None)
    add_at(asm, [(0, 0, 1.0), (1, 0, 2.0)], now_s=10.0)
    assert asm.advance(now_s=11.9) == []
    assert asm.grace_deadline() == 12.0
    assert tick_steps(asm.advance(now_s=12.0)) == [(0, "grace", 2)]
    res = add_at(asm, [(2, 0, 3.0)], now_s=12.5)  # c's reading comes too late for it
    assert list(res.status) == [LATE]


def test_grace_needs_more_than_half_of_the_up_sensors():
    asm = make(grace_s=2.0, max_clock_skew=None)
    add_at(asm, [(0, 0, 1.0)], now_s=0.0)
    assert asm.grace_deadline() is None
    assert asm.advance(now_s=1e6) == []  # one sensor of three: it waits
    add_at(asm, [(1, 0, 1.0)], now_s=1e6)
    assert tick_steps(asm.advance(now_s=1e6)) == [(0, "grace", 2)]  # timed from its first


def test_grace_never_fires_during_a_backlog():
    asm = make(grace_s=2.0, max_clock_skew=None)
    add_at(asm, [(0, 0, 1.0), (1, 0, 2.0)], now_s=0.0)
    assert asm.advance(now_s=100.0, backlog=True) == []
    add_at(asm, [(2, 0, 3.0)], now_s=100.0)  # read from the backlog: on time
    assert tick_steps(asm.advance(now_s=100.0, backlog=True)) == [(0, "complete", 3)]
    add_at(asm, [(0, 1, 1.0), (1, 1, 2.0)], now_s=101.0)
    assert asm.advance(now_s=200.0, backlog=True) == []
    assert tick_steps(asm.advance(now_s=200.0)) == [(1, "grace", 2)]  # caught up


@pytest.mark.parametrize(
    ("produced_ms_before", "lead_s"),
    [(300, 0.3), (0, 0.0), (-5_000, 0.0), (3_600_000, 0.5)],  # ahead; a clock hours behind
)
def test_the_grace_starts_when_the_first_reading_reached_kafka(produced_ms_before, lead_s):
    """Batching in the producer and the fetch do not lengthen the grace; a producer clock
    ahead cannot lengthen it, one behind shortens it by at most a quarter."""
    asm = make(grace_s=2.0, max_clock_skew=None)
    wall_ns = 1_700_000_000_000 * 1_000_000
    record_ms = np.full(2, wall_ns // 1_000_000 - produced_ms_before, np.int64)
    ts = np.array([ns(0), ns(0)], dtype=np.int64)
    vals = np.array([1.0, 2.0], np.float32)
    asm.add(np.array([0, 1]), ts, vals, record_ms, now_ns=wall_ns, now_s=10.0)
    assert asm.grace_deadline() == pytest.approx(12.0 - lead_s)
    assert asm.advance(now_s=11.99 - lead_s) == []
    assert tick_steps(asm.advance(now_s=12.0 - lead_s)) == [(0, "grace", 2)]


def test_restore_keeps_down_sensors_and_counts_missed_ticks_again():
    asm = make(window=4, down_after=2, max_clock_skew=None)
    for step in range(3):  # c misses ticks 0-2: down since tick 0
        add(asm, [(0, step, 1.0), (1, step, 1.0)])
        add(asm, [(0, step + 1, 1.0), (1, step + 1, 1.0)])
        asm.advance()
    asm.take_changes()
    fresh = make(window=4, down_after=2, max_clock_skew=None)
    rows = [(c, s) for s in range(4) for c in (0, 1)]
    fresh.restore(
        first_tick=asm.first_tick,
        last_closed=asm.last_closed,
        max_ts_ns=asm.max_ts_ns,
        watermark_ns=asm.watermark_ns,
        cols=np.array([c for c, _ in rows]),
        ticks=asm.config.tick_of(np.array([ns(s) for _, s in rows], dtype=np.int64)),
        values=np.ones(len(rows)),
        down_since=asm.liveness.down_since(),
    )
    assert fresh.down.tolist() == asm.down.tolist() == [False, False, True]
    assert fresh.liveness.down_since() == asm.liveness.down_since()
    assert fresh.take_changes() == []
    add(fresh, full_tick(4))  # c is back with tick 4
    assert tick_steps(fresh.advance()) == [(4, "complete", 3)]
    (back,) = fresh.take_changes()
    assert not back.down and back.since == asm.liveness.down_since()[2]


def add_at(asm: TickAssembler, rows, now_s: float):
    cols = np.array([r[0] for r in rows])
    ts = np.array([ns(r[1]) for r in rows], dtype=np.int64)
    vals = np.array([r[2] for r in rows], dtype=np.float32)
    return asm.add(cols, ts, vals, now_s=now_s)


def test_missed_ticks_before_a_restart_still_count():
    def run(asm: TickAssembler, steps) -> None:
        for step in steps:
            add(asm, [(0, step, 1.0), (1, step, 1.0)])
            asm.advance()

    asm = make(window=4, down_after=3, max_clock_skew=None)
    run(asm, range(3))  # c missed ticks 0 and 1 (tick 2 is open)
    assert not asm.down.any()
    fresh = make(window=4, down_after=3, max_clock_skew=None)
    rows = [(c, s) for s in range(3) for c in (0, 1)]
    fresh.restore(
        first_tick=asm.first_tick,
        last_closed=asm.last_closed,
        max_ts_ns=asm.max_ts_ns,
        watermark_ns=asm.watermark_ns,
        cols=np.array([c for c, _ in rows]),
        ticks=asm.config.tick_of(np.array([ns(s) for _, s in rows], dtype=np.int64)),
        values=np.ones(len(rows)),
    )
    run(fresh, [3])  # closes tick 2: the third in a row without c
    (change,) = fresh.take_changes()
    assert change.down and change.col == 2 and change.since == asm.first_tick


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-clock-skew", "-1h"], "skew"),
        (["--grace", "0s"], "--grace"),
        (["--down-after", "-1"], "--down-after"),
        (["--rejoin-after", "0s"], "--rejoin-after"),
        (["--rejoin-after", "30"], "has no unit"),
    ],
)
def test_serve_refuses_a_negative_skew_and_a_bad_grace(tmp_path, args, message):
    """Issue 11: ``--max-clock-skew -1h`` was accepted, then every current reading was
    dead-lettered."""
    from typer.testing import CliRunner

    from flows.cli import app
    from pipeline.service.config import ServiceConfig

    result = CliRunner().invoke(app, ["serve", "--models", str(tmp_path), *args])
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    for bad in ({"max_clock_skew": "-1h"}, {"grace": "0s"}, {"down_after": 0}):
        with pytest.raises(ValueError):
            ServiceConfig(**bad)
