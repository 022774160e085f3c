"""The service's small parts without a broker: forecast encoding, live accuracy, latency,
dead-letter headers, JSON logs, bundle discovery and the status summary."""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pandas as pd
import pytest

from pipeline.kafka.forecast_wire import ForecastEncoder
from pipeline.kafka.outbox import dead_letter_headers
from pipeline.kafka.schema import ForecastMessage, decode_forecast, encode_forecast
from pipeline.service.latency import LatencyHistogram, percentiles
from pipeline.service.live_accuracy import LiveScorer

T0 = pd.Timestamp("2012-03-01 08:00", tz="UTC")
FREQ = pd.Timedelta("5min")


def test_fast_encoding_decodes_to_the_same_forecast_as_the_schema_encoder():
    sensors = ("773869", 'odd "id" é', "3")
    mean = np.array([[55.1, 60.0, 1e-5], [54.25, 61.5, 70.0]], np.float32)  # [h, node]
    lower, upper = mean - 2.5, mean + 2.5
    targets = pd.date_range(T0 + FREQ, periods=2, freq=FREQ)
    encoded = ForecastEncoder(sensors).encode_rows("ar", T0, FREQ, mean, lower, upper)
    messages = encoded.messages
    simple, skipped = ForecastEncoder(sensors).encode("ar", T0, targets, mean, lower, upper)
    assert simple == messages and len(skipped) == 0
    assert len(encoded.skipped) == 0 and [k for k, _ in messages] == [s.encode() for s in sensors]
    assert [json.loads(y) for y in encoded.yhat] == [json.loads(m)["yhat"] for _, m in messages]
    for i, (_, value) in enumerate(messages):
        fast = decode_forecast(value)
        reference = decode_forecast(
            encode_forecast(
                ForecastMessage(
                    model="ar",
                    sensor=sensors[i],
                    issued_at=T0.to_pydatetime(),
                    targets=tuple(t.to_pydatetime() for t in targets),
                    yhat=tuple(float(f"{x:.7g}") for x in mean[:, i]),
                    lo=tuple(float(f"{x:.7g}") for x in lower[:, i]),
                    hi=tuple(float(f"{x:.7g}") for x in upper[:, i]),
                )
            )
        )
        assert fast == reference  # 7 significant digits, as float32 carries
        np.testing.assert_allclose(fast.yhat, mean[:, i], rtol=5e-7)
    assert b'"yhat":[55.1,54.25]' in messages[0][1]  # plain decimals, no float32 noise


def test_encoding_without_intervals_and_skipping_non_finite_sensors():
    mean = np.array([[1.0, np.nan, 3.0]], np.float32)
    encoder = ForecastEncoder(("a", "b", "c"))
    encoded = encoder.encode_rows("persistence", T0, FREQ, mean)
    assert [k for k, _ in encoded.messages] == [b"a", b"c"] and encoded.skipped.tolist() == [1]
    assert encoded.columns.tolist() == [0, 2] and encoded.lo is None
    assert decode_forecast(encoded.messages[0][1]).lo is None
    lower = mean - 1
    upper = mean + 1
    upper[0, 2] = -10  # inverted interval: the schema would reject it
    encoded = encoder.encode_rows("ar", T0, FREQ, mean, lower, upper)
    assert [k for k, _ in encoded.messages] == [b"a"] and encoded.skipped.tolist() == [1, 2]
    assert encoded.lo == ["[0.0]"] and encoded.hi == ["[2.0]"]
    with pytest.raises(ValueError, match="come together"):
        encoder.encode_rows("ar", T0, FREQ, mean, lower, None)
    with pytest.raises(ValueError, match="sensors"):
        encoder.encode_rows("ar", T0, FREQ, mean[:, :2])
    targets = pd.date_range(T0 + FREQ, periods=1, freq=FREQ)
    with pytest.raises(ValueError, match="targets"):
        encoder.encode("ar", T0, targets[:0], mean)
    irregular = pd.DatetimeIndex([T0 + FREQ, T0 + 3 * FREQ])
    with pytest.raises(ValueError, match="issued_at \\+ k"):
        encoder.encode("ar", T0, irregular, np.vstack([mean, mean]))


def test_live_scorer_scores_each_step_when_its_target_closes():
    scorer = LiveScorer({"m": 2})
    scorer.record("m", 10, np.array([[1.0, 2.0], [3.0, 4.0]], np.float32))  # targets 11, 12
    scorer.record("m", 11, np.array([[5.0, 6.0], [7.0, 8.0]], np.float32))  # targets 12, 13
    assert scorer.score("m", 10, np.zeros(2), np.ones(2, bool)) is None
    errors = scorer.score("m", 12, np.array([4.0, 0.0]), np.array([True, False]))
    assert errors is not None
    assert errors.steps.tolist() == [1, 2]  # issued at 11 (step 1) and at 10 (step 2)
    assert errors.n.tolist() == [1, 1]  # the second sensor is missing: not scored
    np.testing.assert_allclose(errors.sum_abs, [1.0, 1.0])
    np.testing.assert_allclose(errors.sum_sq, [1.0, 1.0])
    scorer.record("m", 12, np.zeros((2, 2), np.float32))  # still targets 12 via tick 10
    assert list(scorer.targeted("m", 12).steps) == [1, 2]
    scorer.record("m", 14, np.zeros((2, 2), np.float32))  # drops ticks 10 and 11 (bounded)
    assert scorer.score("m", 12, np.zeros(2), np.ones(2, bool)) is None
    with pytest.raises(ValueError, match="not \\[2, node\\]"):
        scorer.record("m", 14, np.zeros((3, 2), np.float32))


def test_latency_percentiles_and_histogram():
    assert percentiles([]) == {
        "p50": pytest.approx(np.nan, nan_ok=True),
        "p99": pytest.approx(np.nan, nan_ok=True),
    }
    got = percentiles(range(1, 101))
    assert got["p50"] == pytest.approx(50.5) and got["p99"] == pytest.approx(99.01)
    hist = LatencyHistogram(bounds_ms=(10, 100))
    hist.add([1, 10, 11, 500, float("nan")])
    assert hist.counts == [2, 1, 1] and hist.total == 4
    assert hist.rows()[-1] == ("> 100 ms", 1, 4)
    with pytest.raises(ValueError, match="increasing"):
        LatencyHistogram(bounds_ms=(10, 5))


def test_dead_letter_headers_name_reason_and_source():
    headers = dict(dead_letter_headers("bad_json", "x" * 5000, "readings", 2, 41))
    assert headers["error"] == b"bad_json" and headers["source.offset"] == b"41"
    assert headers["source.partition"] == b"2" and len(headers["error.message"]) == 1000


def test_json_logs_are_one_object_per_line():
    from pipeline.jsonlog import configure_logging

    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    logging.getLogger("roadcast.service").info("stats", extra={"fields": {"consumed": 3}})
    logging.getLogger("roadcast.service").debug("hidden")
    (line,) = stream.getvalue().splitlines()
    doc = json.loads(line)
    assert doc["event"] == "stats" and doc["consumed"] == 3 and doc["level"] == "info"


def test_status_summary_reads_the_store(tmp_path):
    from flows.status import print_status
    from pipeline.service.store import Store
    from pipeline.service.store_rows import AccuracyRows, Batch, TickRow

    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        store.write(
            Batch(
                counters={"consumed": 5, "ticks_closed": 2},
                ticks=[
                    TickRow(0, 3, "complete", 0, 12.0),
                    TickRow(300_000, 3, "complete", 0, 30.0),
                ],
                accuracy=[
                    AccuracyRows(
                        "ar", np.array([1]), np.array([300_000]), np.array([3]),
                        np.array([3.0]), np.array([6.0]),
                    )
                ],
            )
        )  # fmt: skip
    from rich.console import Console

    console = Console(file=io.StringIO(), width=120)
    summary = print_status(path, last_ticks=None, console=console)
    assert summary["counters"]["consumed"] == 5
    assert summary["latency_ms"]["p50"] == pytest.approx(21.0)
    assert summary["accuracy"]["ar"][1] == {"n": 3, "mae": 1.0, "rmse": pytest.approx(2**0.5)}
    assert "h=1" in console.file.getvalue()


def test_slowest_active_partition_caps_the_watermark_and_idle_ones_do_not():
    from kafka import TopicPartition

    from pipeline.service.partitions import NO_EVENT_TIME, PartitionTracker

    a, b, c = (TopicPartition("readings", p) for p in range(3))
    tracker = PartitionTracker(idle_s=5.0)
    tracker.assigned = {a, b, c}
    highwater = {a: 100, b: 50, c: None}.get
    tracker.observe(a, 100, 3_000, now=0.0)  # read to its end
    tracker.observe(b, 40, 1_000, now=0.0)  # a backlog of 10 records
    # c has never delivered: it may hold readings of any time
    assert tracker.limit_ns(1.0, highwater) == NO_EVENT_TIME
    tracker.observe(c, 7, 2_000, now=1.0)
    assert tracker.limit_ns(1.0, {a: 100, b: 50, c: 7}.get) == 1_000  # b is the slowest
    # ten quiet seconds later b still has a backlog, so it still holds the watermark
    assert tracker.limit_ns(11.0, {a: 100, b: 50, c: 7}.get) == 1_000
    # once b has caught up and stayed quiet, only c (heard from recently) is active
    tracker.observe(b, 50, 1_500, now=2.0)
    tracker.observe(c, 9, 2_500, now=9.0)
    assert tracker.limit_ns(10.0, {a: 100, b: 50, c: 9}.get) == 2_500
    assert tracker.limit_ns(20.0, {a: 100, b: 50, c: 9}.get) is None  # all idle: no cap
    with pytest.raises(ValueError, match="idle_s"):
        PartitionTracker(idle_s=0)
