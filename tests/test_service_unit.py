"""The service's small parts without a broker: live accuracy, latency,
dead-letter headers, JSON logs, bundle discovery and the status summary."""

from __future__ import annotations

import io
import json
import logging
import time

import numpy as np
import pandas as pd
import pytest

from pipeline.kafka.dead_letters import dead_letter_headers
from pipeline.service.latency import LatencyHistogram, percentiles
from pipeline.service.live_accuracy import LiveScorer

T0 = pd.Timestamp("2012-03-01 08:00", tz="UTC")
FREQ = pd.Timedelta("5min")


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
    kept = dead_letter_headers(
        "bad_json", "", "readings", 2, 41, timestamp_ms=7, original=[("trace", b"t1")]
    )
    assert kept[0] == ("trace", b"t1") and dict(kept)["error"] == b"bad_json"
    assert dict(kept)["source.timestamp"] == b"7"


def test_a_producer_header_named_like_a_dead_letter_s_own_is_kept_under_original():
    """A record sent with its own ``error: all_good`` came out of the dead-letter topic
    with two ``error`` headers, the producer's first: a forged reason for a reader that
    takes the first."""
    theirs = [("error", b"all_good"), ("error.message", b"fine"), ("source.offset", b"999"),
              ("truncated", b"no"), ("errors", b"kept"), ("original.error", b"x")]  # fmt: skip
    headers = dead_letter_headers("bad_json", "Expecting value", "readings", 2, 41, original=theirs)
    names = [k for k, _ in headers]
    for ours in ("error", "error.message", "source.offset", "truncated"):
        assert names.count(ours) <= 1, names
    assert dict(headers)["error"] == b"bad_json" and dict(headers)["source.offset"] == b"41"
    assert headers[:6] == [
        ("original.error", b"all_good"), ("original.error.message", b"fine"),
        ("original.source.offset", b"999"), ("original.truncated", b"no"),
        ("errors", b"kept"), ("original.error", b"x"),
    ]  # fmt: skip


def test_json_logs_are_one_object_per_line():
    from pipeline.jsonlog import configure_logging

    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    logging.getLogger("roadcast.service").info("stats", extra={"fields": {"consumed": 3}})
    logging.getLogger("roadcast.service").debug("hidden")
    (line,) = stream.getvalue().splitlines()
    doc = json.loads(line)
    assert doc["event"] == "stats" and doc["consumed"] == 3 and doc["level"] == "info"


def test_a_library_warning_is_a_json_log_line_too():
    """numpy's ``RuntimeWarning: overflow encountered in cast`` reached the service's
    log as two raw lines among the JSON ones."""
    import warnings

    from pipeline.jsonlog import configure_logging

    stream = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        logging.captureWarnings(False)  # an earlier test's capture, undone by pytest since
        configure_logging("INFO", stream=stream)
        try:
            warnings.warn("overflow encountered in cast", RuntimeWarning, stacklevel=1)
        finally:
            logging.captureWarnings(False)
    (line,) = stream.getvalue().splitlines()
    doc = json.loads(line)
    assert doc["logger"] == "py.warnings" and doc["level"] == "warning"
    assert "RuntimeWarning: overflow encountered in cast" in doc["event"]


def test_json_logs_follow_stderr_when_it_is_replaced(monkeypatch):
    """Logs go to stderr as it is at each record: a command run in-process (typer's test
    runner, an embedding program) closes the stderr it lent, and later records failed."""
    from pipeline.jsonlog import configure_logging

    lent = io.StringIO()
    monkeypatch.setattr("sys.stderr", lent)
    configure_logging("INFO")
    lent.close()
    now = io.StringIO()
    monkeypatch.setattr("sys.stderr", now)
    logging.getLogger("roadcast.service").info("after")
    assert json.loads(now.getvalue())["event"] == "after"


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
    # all idle: event time may run on at real-time pace from where each went quiet
    assert tracker.limit_ns(20.0, {a: 100, b: 50, c: 9}.get) == 2_500 + 11 * 10**9
    with pytest.raises(ValueError, match="idle_s"):
        PartitionTracker(idle_s=0)


def test_a_backlog_after_a_quiet_spell_cannot_move_the_watermark_past_the_idle_partitions():
    """A replay into a service that sat idle: the partition whose records come first,
    hours of event time, leaves the others (quiet since the assignment, caught up with
    their last fetch) at real-time pace from the oldest reading seen."""
    from kafka import TopicPartition

    from pipeline.service.partitions import PartitionTracker

    hour = 3600 * 10**9
    a, b = (TopicPartition("readings", p) for p in range(2))
    tracker = PartitionTracker(idle_s=5.0)
    tracker.assigned = {a, b}
    tracker.last_seen = {a: 0.0, b: 0.0}  # adopted at 0 s
    assert tracker.limit_ns(30.0, {a: 0, b: 0}.get) is None  # nothing seen anywhere yet
    tracker.observe(a, 900, 10 * hour, now=30.0, min_event_ns=0)
    assert tracker.limit_ns(30.0, {a: 900, b: 0}.get) == 0  # not 10 hours
    assert tracker.limit_ns(32.0, {a: 900, b: 0}.get) == 2 * 10**9  # real-time pace
    tracker.observe(b, 800, 10 * hour, now=31.0, min_event_ns=0)  # b's readings arrive
    assert tracker.limit_ns(31.0, {a: 900, b: 800}.get) == 10 * hour


def test_a_rebalance_is_stalled_only_while_nothing_at_all_was_assigned_since_the_revocation():
    from kafka import TopicPartition

    from pipeline.service.config import ServiceConfig
    from pipeline.service.partitions import PartitionTracker, RebalanceListener

    a = TopicPartition("readings", 0)
    tracker = PartitionTracker(idle_s=5.0)
    listener = RebalanceListener(tracker, consumer=None)  # type: ignore[arg-type]
    assert not tracker.join_stalled(time.monotonic() + 1e6, 30.0)  # never revoked
    listener.on_partitions_assigned({a})
    listener.on_partitions_revoked({a})
    revoked = tracker.rebalancing_since
    assert revoked is not None
    assert not tracker.join_stalled(revoked + 29.9, 30.0)
    assert tracker.join_stalled(revoked + 30.0, 30.0)
    listener.on_partitions_assigned(set())  # a member with no partition to read: joined
    assert not tracker.join_stalled(revoked + 1e6, 30.0)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="rejoin_after_s"):
            ServiceConfig(rejoin_after_s=bad)


def test_a_partition_behind_its_high_watermark_or_not_fetched_yet_is_a_backlog():
    from kafka import TopicPartition

    from pipeline.service.partitions import PartitionTracker

    a, b = (TopicPartition("readings", p) for p in range(2))
    tracker = PartitionTracker(idle_s=5.0)
    assert not tracker.backlog({}.get)  # nothing assigned
    tracker.assigned = {a, b}
    tracker.observe(a, 100, 3_000, now=0.0)
    tracker.observe(b, 40, 1_000, now=0.0)
    assert tracker.backlog({a: 100, b: 50}.get)  # b has 10 records to read
    assert tracker.backlog({a: 100}.get)  # b's end not known yet
    assert not tracker.backlog({a: 100, b: 40}.get)  # both read to their end


def test_an_instance_holding_part_of_the_readings_topic_warns(caplog):
    from types import SimpleNamespace

    from kafka import TopicPartition

    from pipeline.service.loop import ForecastService
    from pipeline.settings import Settings

    settings = Settings(topic_readings="r", consumer_group="g")
    caplog.set_level(logging.WARNING, logger="roadcast.service")
    for mine, warned in (({0, 1, 2}, False), ({1}, True), (set(), False)):
        caplog.clear()
        tracker = SimpleNamespace(assigned={TopicPartition("r", p) for p in mine})
        service = SimpleNamespace(settings=settings, partitions=tracker, _partition_count={"r": 3})
        ForecastService._warn_if_partial(service)  # type: ignore[arg-type]
        records = [r for r in caplog.records if r.getMessage() == "partial_assignment"]
        assert bool(records) == warned
        if warned:
            fields = records[0].__dict__["fields"]
            assert fields["assigned"] == [1] and fields["partitions"] == 3
            assert "group g" in fields["hint"]


def test_junk_or_a_late_reading_on_a_partition_cannot_hold_the_watermark_for_good():
    """A partition that delivers only invalid records (no event time) was never idle and
    held the watermark at "no event time" for as long as the junk flowed; a partition's
    first reading being a late one (1700) capped the watermark there."""
    from kafka import TopicPartition

    from pipeline.service.partitions import PartitionTracker

    a, b = (TopicPartition("readings", p) for p in range(2))
    tracker = PartitionTracker(idle_s=5.0)
    tracker.assigned = {a, b}
    tracker.last_seen = {a: 0.0, b: 0.0}
    for second in range(0, 60, 1):  # a reads on; b receives junk every second
        tracker.observe(a, 10 + second, (100 + second) * 10**9, now=float(second))
        tracker.observe(b, 1 + second, None, now=float(second))
    ends = {a: 69, b: 60}.get
    assert tracker.limit_ns(59.0, ends) == 159 * 10**9  # b is idle: a alone holds it
