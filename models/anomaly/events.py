"""Alert episodes matched against labelled events: precision, recall, detection delay.

An alert *episode* (one alert from its first firing until it resolves) matches a
labelled event when its sensor is among the event's sensors and it first fired
between the event's start and :data:`MATCH_GRACE` after its end. Precision counts
episodes that match an event; recall counts events matched by at least one episode;
the delay of a found event runs from its start to the first matching firing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.panel import LabeledEvent

MATCH_GRACE = pd.Timedelta(minutes=30)


@dataclass(frozen=True)
class Episode:
    """One alert episode: its sensor, when it first fired, and its incident group."""

    sensor: str
    fired: pd.Timestamp
    group: str = ""


@dataclass(frozen=True)
class EventMatch:
    """How a set of episodes matches a set of labelled events (per event kind)."""

    episodes: int
    matched: int  # episodes matching at least one event
    events: dict[str, int]  # per kind, sorted by kind
    found: dict[str, int]  # per kind: events matched by at least one episode
    delays_min: tuple[float, ...]  # per found event: minutes from its start to the first hit

    @property
    def precision(self) -> float | None:
        """Share of episodes that match an event (None without episodes)."""
        return self.matched / self.episodes if self.episodes else None

    @property
    def recall(self) -> float | None:
        """Share of events found (None without events)."""
        total = sum(self.events.values())
        return sum(self.found.values()) / total if total else None

    def recall_of(self, kind: str) -> float:
        """Share of the events of ``kind`` found."""
        return self.found[kind] / self.events[kind]

    @property
    def median_delay_min(self) -> float | None:
        """Median minutes from a found event's start to its first matching firing."""
        return float(np.median(self.delays_min)) if self.delays_min else None


def matches(episode: Episode, event: LabeledEvent, grace: pd.Timedelta = MATCH_GRACE) -> bool:
    """True when ``episode`` is on a sensor of ``event`` and fired within it (plus grace)."""
    return episode.sensor in event.sensors and event.start <= episode.fired <= event.end + grace


def match_events(
    episodes: Sequence[Episode],
    events: Sequence[LabeledEvent],
    grace: pd.Timedelta = MATCH_GRACE,
) -> EventMatch:
    """Match ``episodes`` against ``events`` (see the module docstring)."""
    matched = sum(any(matches(ep, e, grace) for e in events) for ep in episodes)
    counts: dict[str, int] = {}
    found: dict[str, int] = {}
    delays: list[float] = []
    for kind in sorted({e.kind for e in events}):
        of_kind = [e for e in events if e.kind == kind]
        counts[kind] = len(of_kind)
        found[kind] = 0
        for e in of_kind:
            fired = [ep.fired for ep in episodes if matches(ep, e, grace)]
            if fired:
                found[kind] += 1
                delays.append((min(fired) - e.start) / pd.Timedelta(minutes=1))
    return EventMatch(len(episodes), matched, counts, found, tuple(delays))
