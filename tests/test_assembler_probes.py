"""Probe findings on tick assembly: a sensor's clock reset to the past, a tick stamped
ahead for every sensor, and implausible Kafka record timestamps."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.service.assembler import FUTURE, LATE, NEW, AssemblerConfig, TickAssembler
from pipeline.service.processor import MAX_RECORD_AGE_MS, plausible_record_ms

FREQ = pd.Timedelta("5min")
T0 = pd.Timestamp("2024-05-01", tz="UTC")
TEN = tuple(f"s{i:02d}" for i in range(10))


def make(**kw) -> TickAssembler:
    config = AssemblerConfig(
        freq=FREQ, allowed_lateness=pd.Timedelta("2min"), window=4, grace_s=2.0, down_after=3
    )
    return TickAssembler(TEN, config.__class__(**{**config.__dict__, **kw}))


def ns(step: float) -> int:
    return int((T0 + step * FREQ).value)


def add(asm: TickAssembler, rows: list[tuple[int, int, float]], now_s: float, now: int):
    """rows: (col, ts_ns, value)."""
    cols = np.array([r[0] for r in rows], np.int64)
    ts = np.array([r[1] for r in rows], np.int64)
    vals = np.array([r[2] for r in rows], np.float32)
    return asm.add(cols, ts, vals, now_ns=now, now_s=now_s)


def closed(asm: TickAssembler, now_s: float) -> list[tuple[int, str]]:
    base = int(asm.config.tick_of(np.array(ns(0))))
    return [(t.tick - base, t.reason) for r in asm.advance(now_s=now_s) for t in r.ticks]


EPOCH_5MIN = int(pd.Timestamp("1970-01-01T00:05", tz="UTC").value)
YEAR_1700 = int(pd.Timestamp("1700-01-01", tz="UTC").value)


def test_an_old_first_reading_costs_only_itself_one_record_at_a_time():
    asm = make()
    now = ns(20)
    assert list(add(asm, [(0, EPOCH_5MIN, 1.0)], 0.0, now).status) == [NEW]
    statuses, reasons = [], []
    for step in range(6):
        for col in range(10):  # one record per poll batch
            t = 10.0 * step + 0.1 * col
            statuses += add(asm, [(col, ns(step), 1.0)], t, now).status.tolist()
            reasons += closed(asm, t)
    assert FUTURE not in statuses and LATE not in statuses  # the network is not stopped
    assert [s for s, _ in reasons][-4:] == [2, 3, 4, 5]  # ticks keep closing
    assert all(reason == "complete" for s, reason in reasons if s >= 1)
    assert asm.last_closed == int(asm.config.tick_of(np.array(ns(5))))


def test_an_old_reading_in_the_first_batch_costs_only_itself():
    for old in (EPOCH_5MIN, YEAR_1700):
        asm = make()
        rows = [(0, old, 1.0)] + [(c, ns(0), 1.0) for c in range(10)]
        assert FUTURE not in add(asm, rows, 0.0, ns(1)).status.tolist()
        closed(asm, 0.0)  # the old tick closes: the network is past it
        for step in range(1, 4):
            res = add(asm, [(c, ns(step), 1.0) for c in range(10)], 5.0 * step, ns(step))
            assert res.status.tolist() == [NEW] * 10
            assert closed(asm, 5.0 * step)[-1] == (step, "complete")


def test_a_genuinely_far_future_reading_is_still_future():
    asm = make(max_clock_skew=None)
    add(asm, [(c, ns(0), 1.0) for c in range(10)], 0.0, ns(0))
    far = ns(asm.max_ticks_ahead + 5)
    assert add(asm, [(3, far, 1.0)], 0.0, ns(0)).status.tolist() == [FUTURE]


def test_in_order_ticks_still_close_at_once_with_a_grace():
    asm = make()
    for step in range(5):
        add(asm, [(c, ns(step), 1.0) for c in range(10)], float(step), ns(step))
        assert closed(asm, float(step)) == [(step, "complete")]


def test_implausible_record_timestamps_fall_back_to_the_read_time():
    read_ns = ns(0)
    read_ms = read_ns // 1_000_000
    rec = np.array([0, 1, 4_102_444_800_000, -1, read_ms - 5, read_ms - MAX_RECORD_AGE_MS - 1])
    got = plausible_record_ms(rec, read_ns)
    assert got.tolist() == [read_ms, read_ms, read_ms, -1, read_ms - 5, read_ms]
