"""A built-in road-network simulator: speeds (mph) of freeway sensors, with ground truth.

It always works offline, so it is the demo's fallback and the test bed for scale
(200, 2,000 and 20,000 sensors). The model is deliberately simple and vectorised:

* **Network.** Sensors sit on straight-ish corridors around Los Angeles, 0.6-1.8 km
  apart, ordered upstream -> downstream. Consecutive sensors are linked both ways
  (queues spill upstream, flow moves downstream) and every corridor gets one
  interchange link to the nearest sensor of another corridor. Link lengths are
  haversine distances; weights are the Gaussian kernel ``exp(-(d / 2 km)^2)`` of
  DCRNN-style adjacencies.
* **Daily profiles.** Timestamps are UTC but read as the local clock (as ``los-loop``
  does). Weekdays have a morning (about 07:45) and an evening (about 17:30) peak whose
  sizes depend on the corridor's direction; weekends one broad midday bump.
* **Congestion travels upstream.** Each corridor has a bottleneck; demand there
  reaches a sensor ``d`` km upstream ``d / w`` hours later (a backward wave at
  ``w`` = 12-20 km/h), damped with distance.
* **Incidents.** A lane-blocking incident at one sensor slows it and grows a queue
  upstream at 6-15 km/h until cleared; the queue then dissolves from the front.
  Each is a ``LabeledEvent(kind="incident")`` over the sensors it reached.
* **Sensor faults** (``LabeledEvent(kind="fault")``, one sensor each): a run of
  missing readings (NaN, mask False), a run of zeros (reported as 0 mph, so observed:
  mask True) or a stuck value (the reading at the fault's start, repeated).
  Besides faults, a small share of isolated readings is dropped (mask False, not
  labelled: ordinary missing data).

Same arguments, same panel: every random draw comes from one seeded generator.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.signal import lfilter
from scipy.spatial import cKDTree

from models.panel import LabeledEvent, SensorPanel
from pipeline.data import simulate_regimes as regimes
from pipeline.data.graph import RoadGraph, haversine_km

Kind = Literal["speed", "counts"]
GraphKind = Literal["road", "plain", "random"]

LA_BOX = ((33.75, 34.30), (-118.65, -117.85))
"""(latitude range, longitude range) where corridors start."""

KM_PER_DEG_LAT = 110.574
KM_PER_DEG_LON_EQUATOR = 111.320
KERNEL_KM = 2.0
MAX_CELLS = 100_000_000  # readings (steps x sensors) one simulation may hold
MAX_FREQ_MINUTES = 7 * 24 * 60  # the longest step: a week
MAX_EVENTS_PER_DAY = 10_000.0  # incidents or faults, network-wide
MAX_NOISE_MPH = 1_000.0  # reading noise's standard deviation, far beyond any road's speeds


class SimulationError(ValueError):
    """Invalid simulator arguments; the message names the argument."""


def simulate_network(
    sensors: int = 200,
    days: float = 7.0,
    *,
    seed: int = 0,
    freq_minutes: int = 5,
    start: str | pd.Timestamp = "2024-03-04",
    corridor_length: int = 25,
    incidents_per_day: float = 1.0,
    faults_per_day: float = 0.5,
    dropout: float = 0.001,
    noise_mph: float = 1.5,
    name: str = "simulated",
    kind: Kind = "speed",
    coupling: float = 0.0,
    service_hours: tuple[float, float] | None = None,
    gaps: float = 0.0,
    graph: GraphKind = "road",
) -> SensorPanel:
    """Simulate speeds (mph) of ``sensors`` freeway sensors for ``days`` days.

    Parameters
    ----------
    sensors : number of sensors (>= 1).
    days : length in days (> 0; fractions allowed, e.g. ``0.125`` for three hours).
    seed : seed of the one random generator; same arguments, same panel.
    freq_minutes : grid step in minutes.
    start : first timestamp (UTC, read as the local clock); the default is a Monday.
    corridor_length : sensors per corridor.
    incidents_per_day : expected incidents per day per 100 sensors.
    faults_per_day : expected sensor faults per day per 100 sensors.
    dropout : share of isolated readings dropped (missing, not labelled).
    noise_mph : standard deviation of the sensor noise (AR(1) in time).
    name : the panel's name.
    kind : ``"speed"`` (mph) or ``"counts"`` (passenger counts per step with a strong
        daily cycle, :func:`pipeline.data.simulate_regimes.passenger_counts`).
    coupling : strength in [0, 1] of a disturbance that travels along the graph
        (:func:`~pipeline.data.simulate_regimes.coupled_field`); 0 adds none.
    service_hours : ``(first, last)`` clock hours kept; the night rows are cut and the
        rest laid on a regular grid, so days abut (as in a CSV of service hours).
    gaps : share of days with a network-wide outage of 2-8 hours (missing readings).
    graph : ``"road"`` (links with lengths), ``"plain"`` (the same links, 0/1, no lengths
        or coordinates) or ``"random"`` (as many links at random: no information).

    Returns
    -------
    SensorPanel
        ``values`` float32 ``[time, node]`` in mph, ``mask``, UTC ``timestamps``,
        ids ``s00000``..., ``coords`` (lat, lon), a :class:`RoadGraph` with distances,
        and ``events`` (incidents and faults, sorted by start).
    """
    _check(
        sensors,
        days,
        freq_minutes,
        corridor_length,
        incidents_per_day,
        faults_per_day,
        dropout,
        noise_mph,
    )
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp(start)
    t0 = t0.tz_localize("UTC") if t0.tz is None else t0.tz_convert("UTC")
    n_time = max(1, round(days * 24 * 60 / freq_minutes))
    timestamps = pd.date_range(t0, periods=n_time, freq=f"{freq_minutes}min", tz="UTC")
    ids = tuple(f"s{k:05d}" for k in range(sensors))

    _check_regime(kind, coupling, service_hours, gaps, graph)
    net = _network(sensors, corridor_length, rng)
    field = (
        regimes.coupled_field(
            net.graph, n_time, coupling, rng, sd=0.25 if kind == "counts" else 4.0
        )
        if coupling > 0
        else None
    )
    speed, free_flow = _speeds(net, timestamps, rng)  # [time, node]
    if kind == "speed":
        events = list(
            _incidents(net, speed, free_flow, timestamps, ids, incidents_per_day, days, rng)
        )
    if kind == "counts":
        # Incidents (disruptions) empty the stations they reach: the share of free flow
        # they leave scales the counts.
        level = np.broadcast_to(free_flow, speed.shape).copy()  # [time, node]
        events = list(
            _incidents(net, level, free_flow, timestamps, ids, incidents_per_day, days, rng)
        )
        level /= free_flow[None, :]
        values = regimes.passenger_counts(net.corridor, timestamps, level, field, rng)
    else:
        if field is not None:
            speed -= np.abs(field)  # disturbances slow traffic
        values = _noise(speed, noise_mph, rng)
    del speed
    mask = np.ones(values.shape, dtype=bool)  # [time, node]
    events += _faults(values, mask, timestamps, ids, faults_per_day, days, rng)
    mask &= rng.random(values.shape, dtype=np.float32) >= dropout
    if gaps > 0:
        regimes.outage_gaps(mask, timestamps, gaps, rng)
    values[~mask] = np.nan
    if service_hours is not None:
        values, mask, timestamps, events = regimes.cut_service_hours(
            values, mask, timestamps, events, service_hours
        )
    road = net.graph
    if graph == "random":
        road = regimes.random_graph(net.graph, rng)
    elif graph == "plain":
        road = regimes.plain_graph(net.graph)
    events.sort(key=lambda e: (e.start, e.kind, e.sensors))
    return SensorPanel(
        values=values,
        mask=mask,
        timestamps=timestamps,
        sensor_ids=ids,
        graph=road,
        coords=net.coords if graph == "road" else None,
        events=tuple(events),
        name=name,
    )


class _Network:
    """Corridor layout: per-sensor corridor number, position along it (km), coordinates."""

    def __init__(
        self, corridor: np.ndarray, position_km: np.ndarray, coords: np.ndarray, graph: RoadGraph
    ) -> None:
        self.corridor = corridor
        self.position_km = position_km
        self.coords = coords
        self.graph = graph
        self.n_corridors = int(corridor.max()) + 1


def _network(n: int, corridor_length: int, rng: np.random.Generator) -> _Network:
    n_corr = math.ceil(n / corridor_length)
    corridor = np.repeat(np.arange(n_corr), corridor_length)[:n]  # [node]
    first = np.searchsorted(corridor, np.arange(n_corr))  # [corridor] first sensor of each
    rank = np.arange(n) - first[corridor]  # [node] place along the corridor

    spacing = rng.uniform(0.6, 1.8, size=n)  # [node] km to the previous sensor
    spacing[rank == 0] = 0.0
    heading0 = rng.uniform(0, 2 * np.pi, size=n_corr)  # [corridor]
    turn = rng.normal(0.0, np.radians(5.0), size=n)  # [node] gentle bends
    turn[rank == 0] = 0.0
    heading = heading0[corridor] + _segment_cumsum(turn, first, corridor)
    east = _segment_cumsum(spacing * np.cos(heading), first, corridor)  # [node] km
    north = _segment_cumsum(spacing * np.sin(heading), first, corridor)
    position = _segment_cumsum(spacing, first, corridor)

    (lat_lo, lat_hi), (lon_lo, lon_hi) = LA_BOX
    lat0 = rng.uniform(lat_lo, lat_hi, size=n_corr)[corridor]
    lon0 = rng.uniform(lon_lo, lon_hi, size=n_corr)[corridor]
    lat = lat0 + north / KM_PER_DEG_LAT
    lon = lon0 + east / (KM_PER_DEG_LON_EQUATOR * np.cos(np.radians(lat0)))
    coords = np.stack([lat, lon], axis=1)  # [node, 2]

    down = np.flatnonzero(rank > 0)  # sensor k links to k - 1 on its corridor
    src, dst = down - 1, down
    inter_src, inter_dst = _interchanges(coords, corridor, n_corr)
    src, dst = np.concatenate([src, inter_src]), np.concatenate([dst, inter_dst])
    km = haversine_km(lat[src], lon[src], lat[dst], lon[dst])
    weight = np.exp(-((km / KERNEL_KM) ** 2))
    graph = RoadGraph.from_coordinates(
        coords, src, dst, weight=weight, distance_km=km, both_directions=True
    )
    return _Network(corridor, position, coords, graph)


def _segment_cumsum(x: np.ndarray, first: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Cumulative sum of ``x`` restarting at each segment's first element."""
    total = np.cumsum(x)
    offset = total[first] - x[first]  # [segment] sum before the segment starts
    return total - offset[segment]


def _interchanges(
    coords: np.ndarray, corridor: np.ndarray, n_corr: int
) -> tuple[np.ndarray, np.ndarray]:
    """One link per corridor to the nearest sensor of another corridor (if any)."""
    if n_corr < 2:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    # Local planar approximation is enough to find near neighbours.
    xy = np.stack(
        [
            coords[:, 0] * KM_PER_DEG_LAT,
            coords[:, 1] * KM_PER_DEG_LON_EQUATOR * np.cos(np.radians(34.0)),
        ],
        1,
    )
    k = min(len(xy), 8)
    dist, nbr = cKDTree(xy).query(xy, k=k)  # [node, k]
    other = corridor[nbr] != corridor[:, None]
    dist = np.where(other, dist, np.inf)
    best = np.argmin(dist, axis=1)  # [node] nearest sensor on another corridor
    best_dist = dist[np.arange(len(xy)), best]
    a = np.flatnonzero(np.isfinite(best_dist))
    if a.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    b = nbr[a, best[a]]
    order = np.lexsort((best_dist[a], corridor[a]))  # per corridor, closest first
    a, b = a[order], b[order]
    first = np.ones(len(a), dtype=bool)
    first[1:] = corridor[a][1:] != corridor[a][:-1]
    a, b = a[first], b[first]
    pairs = np.unique(np.sort(np.stack([a, b], 1), axis=1), axis=0)  # undirected, no repeats
    return pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)


def _speeds(
    net: _Network, timestamps: pd.DatetimeIndex, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free speeds [time, node] from daily profiles and upstream-moving congestion."""
    n, c = len(net.corridor), net.n_corridors
    corr = net.corridor
    free_flow = rng.uniform(60.0, 70.0, size=n).astype(np.float32)  # [node] mph
    inbound = rng.random(c) < 0.5  # [corridor] heavier in the morning, else in the evening
    profile = _Profile(
        amp_am=np.where(inbound, rng.uniform(0.9, 1.2, c), rng.uniform(0.5, 0.8, c)),
        amp_pm=np.where(inbound, rng.uniform(0.5, 0.8, c), rng.uniform(0.9, 1.2, c)),
        mu_am=rng.uniform(7.4, 8.1, c),
        mu_pm=rng.uniform(17.0, 18.0, c),
        amp_we=rng.uniform(0.3, 0.6, c),
        corridor=corr,
        timestamps=timestamps,
    )
    depth = rng.uniform(0.55, 0.8, c)[corr].astype(np.float32)  # [node] full-jam speed drop

    length = np.zeros(c)
    np.maximum.at(length, corr, net.position_km)
    jam = np.zeros((len(timestamps), n), dtype=np.float32)  # [time, node]
    # Two bottlenecks per corridor; each one's queue reaches upstream sensors later.
    for lo, hi in ((0.25, 0.6), (0.6, 0.98)):
        bottleneck = rng.uniform(lo, hi, c) * length  # [corridor] km along the corridor
        wave_kmh = rng.uniform(12.0, 20.0, c)
        reach_km = rng.uniform(4.0, 10.0, c)
        offset = bottleneck[corr] - net.position_km  # [node] > 0 upstream of the bottleneck
        upstream = offset >= 0
        lag_h = np.where(upstream, offset / wave_kmh[corr], 0.0)  # [node]
        damp = np.where(upstream, np.exp(-offset / reach_km[corr]), np.exp(offset / 1.0))
        damp = (damp * rng.uniform(0.8, 1.2, n)).astype(np.float32)
        np.maximum(jam, profile.demand(lag_h) * damp[None, :], out=jam)
    # A jam forms only once demand passes a threshold (smoothstep from 0.2 to 0.8).
    x = np.clip((jam - np.float32(0.2)) / np.float32(0.6), 0.0, 1.0)
    jam = x * x * (np.float32(3.0) - np.float32(2.0) * x)
    del x
    busy = profile.demand(np.zeros(n))  # [time, node] volume slows traffic a little
    speed = free_flow[None, :] * (1.0 - np.float32(0.06) * busy - depth[None, :] * jam)
    return speed.astype(np.float32), free_flow


class _Profile:
    """Weekday/weekend demand in [0, ~1] per corridor, read at a per-sensor delay."""

    def __init__(
        self,
        *,
        amp_am: np.ndarray,
        amp_pm: np.ndarray,
        mu_am: np.ndarray,
        mu_pm: np.ndarray,
        amp_we: np.ndarray,
        corridor: np.ndarray,
        timestamps: pd.DatetimeIndex,
    ) -> None:
        f32 = np.float32
        self.amp_am, self.amp_pm = amp_am[corridor].astype(f32), amp_pm[corridor].astype(f32)
        self.mu_am, self.mu_pm = mu_am[corridor].astype(f32), mu_pm[corridor].astype(f32)
        self.amp_we = amp_we[corridor].astype(f32)
        start = timestamps[0]
        self.start_dow = start.day_of_week
        start_h = start.hour + start.minute / 60 + start.second / 3600
        step_h = timestamps.freq.nanos / 3.6e12
        self.clock_h = (start_h + np.arange(len(timestamps)) * step_h).astype(f32)  # [time]

    def demand(self, lag_h: np.ndarray) -> np.ndarray:
        """Demand at each sensor ``lag_h`` hours ago, float32 [time, node]."""
        clock = self.clock_h[:, None] - lag_h[None, :].astype(np.float32)  # [time, node]
        day = np.floor(clock / np.float32(24.0))
        hour = clock - np.float32(24.0) * day
        weekend = ((self.start_dow + day) % 7) >= 5
        del clock, day

        def bump(mu: np.ndarray | float, sd: float) -> np.ndarray:
            z = (hour - np.float32(mu)) / np.float32(sd)
            return np.exp(np.float32(-0.5) * z * z)

        weekday = self.amp_am * bump(self.mu_am, 1.2) + self.amp_pm * bump(self.mu_pm, 1.5)
        weekend_demand = self.amp_we * bump(13.5, 2.5)  # one broad midday bump
        return np.asarray(np.where(weekend, weekend_demand, weekday), dtype=np.float32)


def _incidents(
    net: _Network,
    speed: np.ndarray,
    free_flow: np.ndarray,
    timestamps: pd.DatetimeIndex,
    ids: tuple[str, ...],
    per_day: float,
    days: float,
    rng: np.random.Generator,
) -> list[LabeledEvent]:
    """Apply incidents to ``speed`` in place and return their labels."""
    n_time, n = speed.shape
    step_h = timestamps.freq.nanos / 3.6e12
    count = rng.poisson(per_day * days * n / 100.0)
    events = []
    for _ in range(count):
        at = int(rng.integers(n))
        start_h = rng.uniform(0, n_time * step_h)
        duration_h = rng.uniform(0.25, 1.5)
        grow_kmh, clear_kmh = rng.uniform(6.0, 15.0), rng.uniform(15.0, 25.0)
        severity = rng.uniform(0.5, 0.85)
        same = np.flatnonzero(net.corridor == net.corridor[at])
        behind = net.position_km[at] - net.position_km[same]  # km upstream of the incident
        queue_km = grow_kmh * duration_h
        hit = same[(behind >= 0) & (behind <= queue_km)]
        behind = net.position_km[at] - net.position_km[hit]
        arrive_h = start_h + behind / grow_kmh  # queue reaches the sensor
        leave_h = start_h + duration_h + behind / clear_kmh  # recovery wave passes it
        first = np.ceil(arrive_h / step_h).astype(int)
        last = np.minimum(np.floor(leave_h / step_h).astype(int), n_time - 1)
        affected = first <= last
        if not affected.any():
            continue
        drop = severity * (1.0 - 0.5 * behind / max(queue_km, 1e-9))  # milder at the tail
        for node, a, b, d in zip(
            hit[affected], first[affected], last[affected], drop[affected], strict=True
        ):
            jam = np.float32(free_flow[node] * (1.0 - d))
            np.minimum(speed[a : b + 1, node], jam, out=speed[a : b + 1, node])
        sensors = tuple(ids[k] for k in hit[affected][::-1])  # the incident sensor first
        events.append(
            LabeledEvent(
                start=timestamps[int(first[affected].min())],
                end=timestamps[int(last[affected].max())],
                sensors=sensors,
                kind="incident",
            )
        )
    return events


def _noise(speed: np.ndarray, noise_mph: float, rng: np.random.Generator) -> np.ndarray:
    """Add AR(1) noise (readings drift, they are not white) and clip to plausible speeds."""
    if noise_mph <= 0:
        return np.clip(speed, 3.0, 85.0).astype(np.float32)
    phi = 0.7
    shocks = rng.standard_normal(speed.shape, dtype=np.float32)  # [time, node]
    shocks *= np.float32(noise_mph * math.sqrt(1 - phi**2))
    shocks[0] /= np.float32(math.sqrt(1 - phi**2))  # start in the stationary distribution
    noise = lfilter([1.0], [1.0, -phi], shocks, axis=0).astype(np.float32)
    del shocks
    speed += noise
    return np.clip(speed, 3.0, 85.0, out=speed)


def _faults(
    speed: np.ndarray,
    mask: np.ndarray,
    timestamps: pd.DatetimeIndex,
    ids: tuple[str, ...],
    per_day: float,
    days: float,
    rng: np.random.Generator,
) -> list[LabeledEvent]:
    """Apply sensor faults in place (missing, zeros, stuck) and return their labels."""
    n_time, n = speed.shape
    step_min = timestamps.freq.nanos / 6e10
    count = rng.poisson(per_day * days * n / 100.0)
    events = []
    for _ in range(count):
        node = int(rng.integers(n))
        kind = rng.choice(3, p=[0.4, 0.3, 0.3])  # missing, zeros, stuck
        length = max(1, round(rng.uniform(30, 360) / step_min))
        a = int(rng.integers(n_time))
        b = min(n_time, a + length)
        if kind == 0:
            mask[a:b, node] = False
        elif kind == 1:
            speed[a:b, node] = 0.0
        else:
            speed[a:b, node] = speed[a, node]
        events.append(
            LabeledEvent(
                start=timestamps[a], end=timestamps[b - 1], sensors=(ids[node],), kind="fault"
            )
        )
    return events


def check_simulation(**kwargs: Any) -> None:
    """Refuse :func:`simulate_network` arguments it would refuse, without simulating."""
    given = inspect.signature(simulate_network).bind(**kwargs)
    given.apply_defaults()
    a = given.arguments
    _check(
        a["sensors"], a["days"], a["freq_minutes"], a["corridor_length"],
        a["incidents_per_day"], a["faults_per_day"], a["dropout"], a["noise_mph"],
    )  # fmt: skip
    _check_regime(a["kind"], a["coupling"], a["service_hours"], a["gaps"], a["graph"])


def _check(
    sensors: int,
    days: float,
    freq_minutes: int,
    corridor_length: int,
    incidents_per_day: float,
    faults_per_day: float,
    dropout: float,
    noise_mph: float,
) -> None:
    def whole(name: str, value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise SimulationError(f"{name} must be a whole number >= 1, got {value!r}")

    whole("sensors", sensors)
    whole("freq_minutes", freq_minutes)
    whole("corridor_length", corridor_length)
    if freq_minutes > MAX_FREQ_MINUTES:
        raise SimulationError(
            f"freq_minutes must be at most {MAX_FREQ_MINUTES} (a week), got {freq_minutes}"
        )
    if not (math.isfinite(days) and days > 0):
        raise SimulationError(f"days must be > 0 (e.g. 0.125 for three hours), got {days!r}")
    cells = days * 24 * 60 / freq_minutes * sensors
    if cells > MAX_CELLS:
        raise SimulationError(
            f"{sensors} sensors x {days:g} days at {freq_minutes} min are {cells:.3g} readings; "
            f"at most {MAX_CELLS:,} are simulated (fewer sensors or days, or a longer freq)"
        )
    for name, value, most in (
        ("incidents_per_day", incidents_per_day, MAX_EVENTS_PER_DAY),
        ("faults_per_day", faults_per_day, MAX_EVENTS_PER_DAY),
        ("noise_mph", noise_mph, MAX_NOISE_MPH),
    ):
        if not (math.isfinite(value) and 0 <= value <= most):
            raise SimulationError(f"{name} must be in [0, {most:g}], got {value!r}")
    if not (0.0 <= dropout < 1.0):
        raise SimulationError(f"dropout must be a share in [0, 1), got {dropout!r}")


def _check_regime(
    kind: str,
    coupling: float,
    service_hours: tuple[float, float] | None,
    gaps: float,
    graph: str,
) -> None:
    if kind not in ("speed", "counts"):
        raise SimulationError(f"kind must be 'speed' or 'counts', got {kind!r}")
    if graph not in ("road", "plain", "random"):
        raise SimulationError(f"graph must be 'road', 'plain' or 'random', got {graph!r}")
    if not (math.isfinite(coupling) and 0.0 <= coupling <= 1.0):
        raise SimulationError(f"coupling must be in [0, 1], got {coupling!r}")
    if not (math.isfinite(gaps) and 0.0 <= gaps <= 1.0):
        raise SimulationError(f"gaps must be a share of days in [0, 1], got {gaps!r}")
    if service_hours is not None:
        first, last = service_hours
        if not 0.0 <= first < last <= 24.0:
            raise SimulationError(
                f"service hours must be FIRST-LAST with 0 <= FIRST < LAST <= 24, got {first}-{last}"
            )
