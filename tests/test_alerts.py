"""The alert lifecycle on scripted score sequences: pending, firing, repeat, resolved,
flapping, missing readings, grouping of neighbours into incidents, wire format."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.anomaly.base import Detection
from pipeline.alerts.lifecycle import AlertError, AlertManager, AlertRules, neighbours_from_graph
from pipeline.kafka.schema import decode_alert, encode_alert

T0 = pd.Timestamp("2024-03-04 08:00", tz="UTC")
STEP = pd.Timedelta(minutes=5)


def tick(
    k: int, scores: list[float], *, observed: list[float] | None = None, detector: str = "interval"
) -> Detection:
    s = np.array(scores, dtype=np.float32)
    obs = np.array(observed if observed is not None else [50.0] * len(scores), np.float32)
    return Detection(
        detector,
        T0 + k * STEP,
        s,
        obs,
        expected=np.full_like(s, 60.0),
        lower=np.full_like(s, 55.0),
        upper=np.full_like(s, 65.0),
        reasons=tuple(f"reason {i}" if v >= 0.5 else "" for i, v in enumerate(scores)),
    )


def run(manager: AlertManager, sequence: list[list[float]], **kw) -> list[tuple[int, str, str]]:
    """(tick, status, sensor) of every message for a scripted score sequence."""
    out = []
    for k, scores in enumerate(sequence):
        for event in manager.evaluate(tick(k, scores, **kw)):
            out.append((k, event.message.status, event.message.sensor))
    return out


RULES = AlertRules(
    threshold=0.99,
    for_=pd.Timedelta(minutes=10),  # two ticks after the first
    repeat_interval=pd.Timedelta(minutes=30),
    resolve_after=pd.Timedelta(minutes=10),
    critical=0.999,
)


def test_pending_then_firing_after_for_duration() -> None:
    manager = AlertManager(["a"], RULES)
    assert manager.evaluate(tick(0, [0.995])) == []
    assert manager.active() == {"a:interval": "pending"}
    assert manager.evaluate(tick(1, [0.995])) == []
    (event,) = manager.evaluate(tick(2, [0.999]))
    m = event.message
    assert (m.status, m.sensor, m.dedup_key, m.detector) == (
        "firing",
        "a",
        "a:interval",
        "interval",
    )
    assert m.first_seen == T0.to_pydatetime() and m.ts == (T0 + 2 * STEP).to_pydatetime()
    assert (m.observed, m.expected, m.lo, m.hi) == (50.0, 60.0, 55.0, 65.0)
    assert m.severity == "critical" and m.reason == "reason 0"
    assert m.alert_id == "a:interval@2024-03-04T08:00:00Z"
    assert manager.active() == {"a:interval": "firing"}


def test_pending_that_stops_holding_never_fires() -> None:
    manager = AlertManager(["a"], RULES)
    assert run(manager, [[0.995], [0.995], [0.5], [0.995], [0.5]]) == []
    assert manager.active() == {}


def test_default_rules_fire_at_once_at_p_0001() -> None:
    assert run(AlertManager(["a"]), [[0.2], [0.995], [0.9995]]) == [(2, "firing", "a")]


def test_repeat_at_most_every_repeat_interval_then_resolved() -> None:
    manager = AlertManager(["a"], RULES)
    events = run(manager, [[0.995]] * 12 + [[0.1]] * 4)
    # fires at tick 2, repeats every 30 min = 6 ticks (8), resolves 10 min after clearing
    assert events == [(2, "firing", "a"), (8, "firing", "a"), (14, "resolved", "a")]
    assert manager.active() == {}


def test_resolved_message_keeps_the_episode(tmp_path) -> None:
    manager = AlertManager(["a"], RULES)
    messages = []
    for k, s in enumerate([0.995, 0.995, 0.9995, 0.2, 0.2, 0.2]):
        messages += [e.message for e in manager.evaluate(tick(k, [s]))]
    firing, resolved = messages
    assert resolved.status == "resolved" and resolved.alert_id == firing.alert_id
    assert resolved.severity == "critical"
    assert resolved.last_seen == (T0 + 2 * STEP).to_pydatetime()
    assert "below" in resolved.reason
    assert decode_alert(encode_alert(resolved)) == resolved  # valid wire messages


def test_flapping_score_is_one_episode() -> None:
    """A score dipping below the threshold for single ticks neither resolves nor re-fires
    the alert: one episode, repeated only at the repeat interval, resolved once."""
    manager = AlertManager(["a"], RULES)
    flapping = [[0.995]] * 3 + [[0.3], [0.995]] * 6 + [[0.3]] * 3
    messages = []
    for k, scores in enumerate(flapping):
        messages += [e.message for e in manager.evaluate(tick(k, scores))]
    statuses = [m.status for m in messages]
    assert statuses == ["firing", "firing", "firing", "resolved"]  # at ticks 2, 8, 14, 17
    assert len({m.alert_id for m in messages}) == 1


def test_hysteresis_keeps_firing_between_the_thresholds() -> None:
    rules = AlertRules(
        threshold=0.99, clear_threshold=0.9, for_=pd.Timedelta(0), resolve_after=pd.Timedelta(0)
    )
    events = run(AlertManager(["a"], rules), [[0.995], [0.95], [0.95], [0.5]])
    assert events == [(0, "firing", "a"), (3, "resolved", "a")]


def test_missing_readings_neither_advance_nor_resolve() -> None:
    manager = AlertManager(["a"], RULES)
    nan = float("nan")
    sequence = [[0.995], [0.995], [0.995], [0.0], [0.0], [0.0], [0.0]]
    observed = [[50.0], [50.0], [50.0], [nan], [nan], [nan], [nan]]
    out = []
    for k, (scores, obs) in enumerate(zip(sequence, observed, strict=True)):
        out += [(k, e.message.status) for e in manager.evaluate(tick(k, scores, observed=obs))]
    assert out == [(2, "firing")]
    assert manager.active() == {"a:interval": "firing"}


def test_each_detector_has_its_own_dedup_key() -> None:
    manager = AlertManager(["a"], AlertRules(for_=pd.Timedelta(0)))
    first = manager.evaluate(tick(0, [0.999], detector="interval"))
    second = manager.evaluate(tick(0, [0.999], detector="autoencoder"))
    assert {first[0].message.dedup_key, second[0].message.dedup_key} == {
        "a:interval",
        "a:autoencoder",
    }
    assert first[0].group_key == second[0].group_key  # same sensor, same incident


def test_neighbours_are_grouped_into_one_incident() -> None:
    neighbours = {"a": {"b"}, "b": {"a", "c"}, "c": {"b"}, "z": set()}
    manager = AlertManager(["a", "b", "c", "z"], AlertRules(for_=pd.Timedelta(0)), neighbours)
    e0 = manager.evaluate(tick(0, [0.999, 0.1, 0.1, 0.1]))
    e1 = manager.evaluate(tick(1, [0.999, 0.999, 0.1, 0.999]))
    e2 = manager.evaluate(tick(2, [0.999, 0.999, 0.999, 0.999]))
    groups = {e.message.sensor: e.group_key for e in e0 + e1 + e2}
    assert groups["a"] == groups["b"] == groups["c"] == "incident:a@2024-03-04T08:00:00Z"
    assert groups["z"] != groups["a"]  # not a neighbour: its own incident
    assert manager.incident_sensors(groups["a"]) == {"a", "b", "c"}


def test_incidents_close_after_the_group_window() -> None:
    rules = AlertRules(
        for_=pd.Timedelta(0), resolve_after=pd.Timedelta(0), group_window=pd.Timedelta(minutes=15)
    )
    manager = AlertManager(["a", "b"], rules, {"a": {"b"}, "b": {"a"}})
    first = manager.evaluate(tick(0, [0.999, 0.1]))[0].group_key
    manager.evaluate(tick(1, [0.1, 0.1]))  # a resolves
    late = manager.evaluate(tick(8, [0.1, 0.999]))[0].group_key  # 35 min later
    assert late != first
    soon = AlertManager(["a", "b"], rules, {"a": {"b"}, "b": {"a"}})
    first = soon.evaluate(tick(0, [0.999, 0.1]))[0].group_key
    soon.evaluate(tick(1, [0.1, 0.1]))
    assert soon.evaluate(tick(3, [0.1, 0.999]))[0].group_key == first  # 10 min later


def test_a_sensor_between_two_incidents_joins_the_older() -> None:
    """A road a - x - m - y - z: a and z are four links apart, m two from each."""
    chain = ["a", "x", "m", "y", "z"]
    neighbours = {"a": {"x"}, "x": {"a", "m"}, "m": {"x", "y"}, "y": {"m", "z"}, "z": {"y"}}
    manager = AlertManager(chain, AlertRules(for_=pd.Timedelta(0)), neighbours)
    older = manager.evaluate(tick(0, [0.999, 0.1, 0.1, 0.1, 0.1]))[0].group_key  # a
    newer = next(
        e.group_key
        for e in manager.evaluate(tick(1, [0.999, 0.1, 0.1, 0.1, 0.999]))
        if e.message.sensor == "z"
    )
    assert older != newer
    joined = [
        e
        for e in manager.evaluate(tick(2, [0.999, 0.1, 0.999, 0.1, 0.999]))
        if e.message.sensor == "m"
    ]
    assert joined[0].group_key == older
    assert manager.incident_sensors(older) == {"a", "m"}
    assert manager.incident_sensors(newer) == {"z"}


def test_a_sensor_two_links_away_joins_across_one_that_did_not_fire() -> None:
    """A congestion wave passes b without b's alert firing: a and c are one incident
    (one page), a sensor three links away is not."""
    neighbours = {"a": {"b"}, "b": {"a", "c"}, "c": {"b", "d"}, "d": {"c"}}
    manager = AlertManager(["a", "b", "c", "d"], AlertRules(for_=pd.Timedelta(0)), neighbours)
    first = manager.evaluate(tick(0, [0.999, 0.1, 0.1, 0.1]))[0].group_key
    (second,) = manager.evaluate(tick(1, [0.999, 0.1, 0.999, 0.1]))
    assert second.message.sensor == "c" and second.group_key == first
    alone = AlertManager(["a", "b", "c", "d"], AlertRules(for_=pd.Timedelta(0)), neighbours)
    first = alone.evaluate(tick(0, [0.999, 0.1, 0.1, 0.1]))[0].group_key
    (far,) = alone.evaluate(tick(1, [0.999, 0.1, 0.1, 0.999]))
    assert far.message.sensor == "d" and far.group_key != first


def test_neighbours_from_graph() -> None:
    from pipeline.data.graph import RoadGraph

    graph = RoadGraph(3, np.array([[0, 1], [1, 2]]))  # links 0->1 and 1->2
    assert neighbours_from_graph(graph, ["x", "y", "w"]) == {
        "x": {"y"},
        "y": {"x", "w"},
        "w": {"y"},
    }


def test_bad_input_is_a_typed_error() -> None:
    manager = AlertManager(["a"], RULES)
    manager.evaluate(tick(3, [0.1]))
    with pytest.raises(AlertError, match="time order"):
        manager.evaluate(tick(2, [0.1]))
    with pytest.raises(AlertError, match="watches 1 sensors"):
        manager.evaluate(tick(4, [0.1, 0.2]))
    naive = Detection(
        "interval", pd.Timestamp("2024-01-01"), np.zeros(1, np.float32), np.zeros(1, np.float32)
    )
    with pytest.raises(AlertError, match="timezone"):
        AlertManager(["a"]).evaluate(naive)
    with pytest.raises(AlertError, match="clear_threshold"):
        AlertRules(threshold=0.9, clear_threshold=0.95)
    with pytest.raises(AlertError, match="repeat_interval"):
        AlertRules(repeat_interval=pd.Timedelta(0))
    with pytest.raises(AlertError, match="unique"):
        AlertManager(["a", "a"])


def test_default_rules_tell_warning_from_critical() -> None:
    manager = AlertManager(["a", "b"], AlertRules())
    events = manager.evaluate(tick(0, [0.9995, 0.999995]))
    assert sorted((e.message.sensor, e.message.severity) for e in events) == [
        ("a", "warning"),
        ("b", "critical"),
    ]
    with pytest.raises(AlertError):
        AlertRules(critical=1.5)
