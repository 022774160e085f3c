"""The alert lifecycle, like Prometheus Alertmanager's: pure logic, no Kafka, no clock.

:class:`AlertManager` turns the per-tick :class:`models.anomaly.base.Detection` of a detector
into :class:`pipeline.kafka.schema.AlertMessage` state changes, one condition per
``dedup_key = "<sensor>:<detector>"``:

``inactive -> pending``
    the score reaches ``rules.threshold``. Nothing is sent yet.
``pending -> firing``
    the condition has held for ``rules.for_`` (0: at once). One ``firing`` message.
    ``pending -> inactive`` silently if it stops holding before that.
``firing``
    while the condition holds, the ``firing`` message is repeated at most every
    ``rules.repeat_interval`` (with fresh score, values and ``last_seen``).
``firing -> resolved``
    the condition has *not* held for ``rules.resolve_after`` (Alertmanager's
    ``keep_firing_for``): one ``resolved`` message. A condition that returns before
    that keeps the alert firing, so a flapping score sends one firing, not dozens.
    With ``rules.clear_threshold`` below ``threshold`` a firing condition only stops
    holding once the score falls below the lower value (hysteresis).

A tick where the sensor's reading is missing (``observed`` NaN) carries no information
and is skipped: it neither confirms nor clears a condition (a firing alert is not
resolved by a sensor going silent).

Severity comes from the score: ``critical`` at ``rules.critical`` and above, else
``warning``; a resolved message keeps the episode's highest severity. ``alert_id`` is
``"<dedup_key>@<first_seen>"``: the same episode replayed gives the same id, so
at-least-once delivery stays idempotent.

Incidents: an alert that starts firing joins an open incident when the incident holds
the same sensor or one at most ``GROUP_HOPS`` (2) road-graph links from it and was active
within ``rules.group_window``; otherwise it opens a new one. Two links, not one: a
congestion wave passes sensors that do not all fire, and one-link grouping paged such an
incident once per stretch of firing sensors (simulator, validation seeds 11-13: 231
pages for 123 incidents found with one link, 170 with two, the same 2 pages joining two
incidents either way). Each :class:`AlertEvent` carries
the incident's ``group_key`` (``"incident:<first sensor>@<start>"``) next to the wire
message. The v1 wire schema has no field for it: a service sends it as a Kafka header.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

import numpy as np
import pandas as pd

from models.anomaly.base import Detection
from models.bundle import duration_text
from models.panel import GraphLike
from pipeline.kafka.schema import AlertMessage, Severity, format_timestamp

State = Literal["pending", "firing"]


class AlertError(ValueError):
    """Alert rules or inputs that cannot work; the message names the fix."""


# Alerts join an incident holding a sensor at most this many road-graph links away.
GROUP_HOPS = 2


# The tick of the simulated network the rules' durations were chosen on.
RULES_TICK = pd.Timedelta(minutes=5)


@dataclass(frozen=True)
class AlertRules:
    """When a condition fires, repeats, resolves, and how alerts are grouped.

    threshold : score at which the condition holds.
    clear_threshold : a firing condition stops holding below this (default: threshold).
    for_ : how long the condition must hold before firing.
    repeat_interval : minimum time between two ``firing`` messages of one alert.
    resolve_after : how long the condition must be gone before ``resolved``.
    critical : score from which the severity is ``critical`` (else ``warning``).
    group_window : how long an incident stays open to neighbours' new alerts.

    The defaults fire at once at p <= 0.001 (severity ``warning``) and call an alert
    ``critical`` from p <= 0.00001, a hundred times less likely under the forecast. On
    the simulated network (``python -m benchmarks.anomaly``) firing at once beat
    "p <= 0.01 held for 10 minutes" on precision, recall and delay with persistence and
    AR forecasts: their residuals are surprising at an
    incident's onset, then the forecasts follow the new level, so a condition that must
    *hold* misses short incidents. Use ``for_`` with forecasters that do not adapt
    (seasonal) or with noisy scores.
    """

    threshold: float = 0.999
    clear_threshold: float | None = None
    for_: pd.Timedelta = field(default_factory=lambda: pd.Timedelta(0))
    repeat_interval: pd.Timedelta = field(default_factory=lambda: pd.Timedelta(hours=1))
    resolve_after: pd.Timedelta = field(default_factory=lambda: pd.Timedelta(minutes=10))
    critical: float = 0.99999
    group_window: pd.Timedelta = field(default_factory=lambda: pd.Timedelta(minutes=30))

    def at_tick(self, tick: pd.Timedelta) -> AlertRules:
        """These rules for ticks of ``tick``: their durations held to the same number of
        ticks as at :data:`RULES_TICK`, the step they were chosen on, when ``tick`` is
        longer (hourly ticks repeat a firing alert every 12 h, not every tick)."""
        factor = pd.Timedelta(tick) / RULES_TICK
        if factor <= 1:
            return self
        return replace(
            self,
            for_=self.for_ * factor,
            repeat_interval=self.repeat_interval * factor,
            resolve_after=self.resolve_after * factor,
            group_window=self.group_window * factor,
        )

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise AlertError(f"threshold must be in (0, 1], got {self.threshold}")
        if not 0.0 < self.critical <= 1.0:
            raise AlertError(f"critical must be in (0, 1], got {self.critical}")
        clear = self.threshold if self.clear_threshold is None else self.clear_threshold
        if not 0.0 <= clear <= self.threshold:
            raise AlertError(
                f"clear_threshold must be in [0, threshold={self.threshold}], got {clear}"
            )
        for name in ("for_", "repeat_interval", "resolve_after", "group_window"):
            value = pd.Timedelta(getattr(self, name))
            if value < pd.Timedelta(0):
                raise AlertError(f"{name} must not be negative, got {value}")
            object.__setattr__(self, name, value)
        if self.repeat_interval <= pd.Timedelta(0):
            raise AlertError("repeat_interval must be positive (or repeats would never stop)")

    @property
    def clear(self) -> float:
        return self.threshold if self.clear_threshold is None else self.clear_threshold


@dataclass(frozen=True)
class AlertEvent:
    """A message to publish and the incident it belongs to."""

    message: AlertMessage
    group_key: str


@dataclass
class _Alert:
    """Mutable state of one condition (one dedup key)."""

    sensor: str
    detector: str
    state: State
    first_seen: pd.Timestamp
    last_seen: pd.Timestamp
    last_sent: pd.Timestamp | None = None
    clear_since: pd.Timestamp | None = None
    severity: Severity = "warning"
    group_key: str = ""


@dataclass
class _Incident:
    key: str
    sensors: set[str]
    last_active: pd.Timestamp
    open_alerts: int = 0
    seq: int = 0  # creation order: a sensor joins the oldest incident it may


def neighbours_from_graph(graph: GraphLike, sensor_ids: Sequence[str]) -> dict[str, set[str]]:
    """Each sensor's direct links in either direction, as sensor ids."""
    if graph.num_nodes != len(sensor_ids):
        raise AlertError(f"graph has {graph.num_nodes} nodes for {len(sensor_ids)} sensors")
    out: dict[str, set[str]] = {s: set() for s in sensor_ids}
    src, dst = np.asarray(graph.edge_index)
    for j, i in zip(src.tolist(), dst.tolist(), strict=True):
        if i != j:
            out[sensor_ids[i]].add(sensor_ids[j])
            out[sensor_ids[j]].add(sensor_ids[i])
    return out


def within_hops(neighbours: Mapping[str, set[str]], hops: int) -> dict[str, set[str]]:
    """Each sensor's sensors at most ``hops`` links away (itself excluded)."""
    out: dict[str, set[str]] = {}
    for sensor in neighbours:
        seen, frontier = {sensor}, {sensor}
        for _ in range(hops):
            frontier = set().union(*(neighbours.get(s, set()) for s in frontier)) - seen
            seen |= frontier
        out[sensor] = seen - {sensor}
    return out


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(float(x)) else None


class AlertManager:
    """The lifecycle of every ``sensor:detector`` condition (see module doc).

    Parameters
    ----------
    rules : :class:`AlertRules`.
    neighbours : sensor id -> ids of its graph neighbours (see
        :func:`neighbours_from_graph`); None groups only alerts of the same sensor.
    """

    def __init__(
        self,
        sensor_ids: Sequence[str],
        rules: AlertRules | None = None,
        neighbours: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        self.sensor_ids = [str(s) for s in sensor_ids]
        if len(set(self.sensor_ids)) != len(self.sensor_ids):
            raise AlertError("sensor ids must be unique")
        self.rules = rules or AlertRules()
        self.neighbours = within_hops(
            {k: set(v) for k, v in (neighbours or {}).items()}, GROUP_HOPS
        )
        self._col = {s: i for i, s in enumerate(self.sensor_ids)}
        self._alerts: dict[str, _Alert] = {}
        self._incidents: dict[str, _Incident] = {}  # by key, oldest first
        self._by_sensor: dict[str, set[str]] = {}  # sensor -> keys of its incidents
        self._created = 0
        self._last_ts: dict[str, pd.Timestamp] = {}

    # --- public -----------------------------------------------------------------------

    def active(self) -> dict[str, State]:
        """``dedup_key -> "pending" | "firing"`` of every condition that is not inactive."""
        return {k: a.state for k, a in self._alerts.items()}

    def incident_sensors(self, group_key: str) -> set[str]:
        """Sensors of an open incident (empty once it closed)."""
        incident = self._incidents.get(group_key)
        return set(incident.sensors) if incident is not None else set()

    def evaluate(self, detection: Detection) -> list[AlertEvent]:
        """Advance every sensor's condition by one tick; the messages to publish, in order.

        Raises
        ------
        AlertError
            A detection of another number of sensors, a tick without timezone, or a tick
            older than the previous one of the same detector (send ticks in order).
        """
        if detection.score.shape != (len(self.sensor_ids),):
            raise AlertError(
                f"detection has scores of shape {detection.score.shape}, the manager watches "
                f"{len(self.sensor_ids)} sensors; build it with the detector's sensor_ids"
            )
        return self._evaluate(detection, self.sensor_ids)

    # --- internals --------------------------------------------------------------------

    def _evaluate(self, detection: Detection, sensor_ids: list[str]) -> list[AlertEvent]:
        ts = pd.Timestamp(detection.ts)
        if ts.tzinfo is None:
            raise AlertError(f"tick {ts} has no timezone; alert timestamps are UTC")
        previous = self._last_ts.get(detection.detector)
        if previous is not None and ts < previous:
            raise AlertError(
                f"{detection.detector}: tick {ts} is older than the previous one {previous}; "
                "evaluate ticks in time order"
            )
        self._last_ts[detection.detector] = ts
        rules = self.rules
        events: list[AlertEvent] = []
        score = np.asarray(detection.score, dtype=np.float64)
        observed = np.asarray(detection.observed, dtype=np.float64)
        # A sensor without a condition and below the threshold has nothing to do.
        holding = np.flatnonzero(np.isfinite(observed) & (score >= rules.threshold)).tolist()
        tracked = [
            self._col[a.sensor] for a in self._alerts.values() if a.detector == detection.detector
        ]
        for i in sorted(set(holding).union(tracked)):
            sensor = sensor_ids[i]
            key = f"{sensor}:{detection.detector}"
            alert = self._alerts.get(key)
            if not math.isfinite(observed[i]):
                continue  # a missing reading says nothing about the condition
            limit = (
                rules.clear if alert is not None and alert.state == "firing" else rules.threshold
            )
            holds = score[i] >= limit
            if alert is None:
                if holds:
                    alert = _Alert(sensor, detection.detector, "pending", ts, ts)
                    self._alerts[key] = alert
                    if rules.for_ <= pd.Timedelta(0):
                        events.append(self._fire(key, alert, detection, i, ts))
                continue
            if alert.state == "pending":
                if not holds:
                    del self._alerts[key]
                    continue
                alert.last_seen = ts
                if ts - alert.first_seen >= rules.for_:
                    events.append(self._fire(key, alert, detection, i, ts))
                continue
            # firing
            if holds:
                alert.last_seen = ts
                alert.clear_since = None
                alert.severity = max(alert.severity, self._severity(score[i]), key=_rank)
                self._touch(alert.group_key, ts)
                assert alert.last_sent is not None
                if ts - alert.last_sent >= rules.repeat_interval:
                    alert.last_sent = ts
                    events.append(self._event(key, alert, "firing", detection, i, ts))
                continue
            if alert.clear_since is None:
                alert.clear_since = ts
            if ts - alert.clear_since >= rules.resolve_after:
                events.append(self._event(key, alert, "resolved", detection, i, ts))
                self._close(alert.group_key, ts)
                del self._alerts[key]
        window = rules.group_window
        for key in [
            k
            for k, inc in self._incidents.items()
            if inc.open_alerts <= 0 and ts - inc.last_active > window
        ]:
            for sensor in self._incidents.pop(key).sensors:
                keys = self._by_sensor[sensor]
                keys.discard(key)
                if not keys:
                    del self._by_sensor[sensor]
        return events

    def _severity(self, score: float) -> Severity:
        return "critical" if score >= self.rules.critical else "warning"

    def _fire(
        self, key: str, alert: _Alert, det: Detection, i: int, ts: pd.Timestamp
    ) -> AlertEvent:
        alert.state = "firing"
        alert.last_seen = ts
        alert.last_sent = ts
        alert.severity = self._severity(float(det.score[i]))
        alert.group_key = self._join(alert.sensor, ts)
        return self._event(key, alert, "firing", det, i, ts)

    def _join(self, sensor: str, ts: pd.Timestamp) -> str:
        near = self.neighbours.get(sensor, set()) | {sensor}
        window = self.rules.group_window
        keys = set().union(*(self._by_sensor.get(s, ()) for s in near))
        for incident in sorted((self._incidents[k] for k in keys), key=lambda inc: inc.seq):
            if incident.open_alerts > 0 or ts - incident.last_active <= window:
                incident.sensors.add(sensor)
                incident.open_alerts += 1
                incident.last_active = ts
                self._by_sensor.setdefault(sensor, set()).add(incident.key)
                return incident.key
        key = f"incident:{sensor}@{format_timestamp(ts.to_pydatetime())}"
        self._created += 1
        self._incidents[key] = _Incident(key, {sensor}, ts, 1, self._created)
        self._by_sensor.setdefault(sensor, set()).add(key)
        return key

    def _touch(self, group_key: str, ts: pd.Timestamp) -> None:
        incident = self._incidents.get(group_key)
        if incident is not None:
            incident.last_active = ts

    def _close(self, group_key: str, ts: pd.Timestamp) -> None:
        incident = self._incidents.get(group_key)
        if incident is not None:
            incident.open_alerts -= 1
            incident.last_active = ts

    def _event(
        self,
        key: str,
        alert: _Alert,
        status: Literal["firing", "resolved"],
        det: Detection,
        i: int,
        ts: pd.Timestamp,
    ) -> AlertEvent:
        def at(arr: np.ndarray | None) -> float | None:
            return None if arr is None else _num(arr[i])

        first: datetime = alert.first_seen.to_pydatetime()
        reason = det.reasons[i] if det.reasons and i < len(det.reasons) else ""
        if status == "resolved" and not reason:
            quiet = duration_text(self.rules.resolve_after.total_seconds())
            reason = f"score below {self.rules.clear:g} for {quiet}"
        score = min(1.0, max(0.0, float(det.score[i])))
        message = AlertMessage(
            alert_id=f"{key}@{format_timestamp(first)}",
            dedup_key=key,
            status=status,
            severity=alert.severity,
            sensor=alert.sensor,
            ts=ts.to_pydatetime(),
            observed=at(det.observed),
            expected=at(det.expected),
            lo=at(det.lower),
            hi=at(det.upper),
            score=score,
            detector=alert.detector,
            first_seen=first,
            last_seen=alert.last_seen.to_pydatetime(),
            reason=reason,
        )
        return AlertEvent(message, alert.group_key)


_RANKS = {"info": 0, "warning": 1, "critical": 2}


def _rank(severity: str) -> int:
    return _RANKS[severity]
