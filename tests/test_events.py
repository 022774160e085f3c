"""Alert episodes matched against labelled events (``models.anomaly.events``)."""

from __future__ import annotations

import pandas as pd
import pytest

from models.anomaly.events import MATCH_GRACE, Episode, match_events, matches
from models.panel import LabeledEvent

T0 = pd.Timestamp("2024-03-04 08:00", tz="UTC")


def _at(minutes: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(minutes=minutes)


EVENTS = [
    LabeledEvent(_at(0), _at(60), ("a", "b"), "incident"),
    LabeledEvent(_at(200), _at(220), ("c",), "incident"),
    LabeledEvent(_at(100), _at(110), ("d",), "fault"),
]


def test_an_episode_matches_on_its_sensors_from_the_start_to_the_grace_after_the_end():
    event = EVENTS[0]
    assert matches(Episode("a", _at(0)), event)
    assert matches(Episode("b", event.end + MATCH_GRACE), event)
    assert not matches(Episode("b", event.end + MATCH_GRACE + pd.Timedelta(seconds=1)), event)
    assert not matches(Episode("a", _at(-1)), event)
    assert not matches(Episode("c", _at(10)), event)


def test_precision_recall_per_kind_and_delay():
    episodes = [
        Episode("a", _at(15), "g1"),
        Episode("b", _at(5), "g1"),  # the same event, found earlier: the delay is 5 min
        Episode("d", _at(112), "g2"),  # within the grace after the fault
        Episode("z", _at(15), "g3"),  # no event on z
    ]
    match = match_events(episodes, EVENTS)
    assert match.episodes == 4 and match.matched == 3
    assert match.precision == pytest.approx(0.75)
    assert match.events == {"fault": 1, "incident": 2}
    assert match.found == {"fault": 1, "incident": 1}
    assert match.recall_of("incident") == 0.5 and match.recall_of("fault") == 1.0
    assert match.recall == pytest.approx(2 / 3)
    assert match.delays_min == (12.0, 5.0)  # kinds in sorted order: fault, then incident
    assert match.median_delay_min == pytest.approx(8.5)


def test_nothing_to_match():
    empty = match_events([], EVENTS)
    assert empty.precision is None and empty.recall == 0.0 and empty.median_delay_min is None
    none = match_events([Episode("a", T0)], [])
    assert none.precision == 0.0 and none.recall is None and none.events == {}
