"""A simulated wireless body-area-network stream with labelled anomalies.

Test bed of the correlation detector (Albattah and Rassam's setting): each node is one
person wearing four sensors, sampled once a minute, all driven by one hidden activity
level ``a_t`` in [0, 1] (an Ornstein-Uhlenbeck process with exercise bouts):

* ``heart_rate`` (bpm) ``= 62 + 55 a_t`` + noise,
* ``spo2`` (%) ``= 98 - 2 a_t`` + noise (capped at 100),
* ``temperature`` (°C) ``= 36.7 + 0.5 * lowpass(a)_t`` + a small daily rhythm + noise,
* ``ecg_rr`` (ms), the ECG's R-R interval, ``= 60000 / heart_rate`` + noise.

So the channels are strongly correlated (heart rate and R-R interval almost perfectly
negatively). Injected anomalies, each a :class:`models.panel.LabeledEvent` on one node:

* ``context``: for a while the heart-rate channel replays the person's own heart rate
  from another time. Every value is an ordinary heart rate, but it no longer matches the
  R-R interval, SpO2 and temperature: normal alone, abnormal together.
* ``spike``: one reading of one channel far outside its range (a motion artefact).
* ``level_shift``: SpO2 reads 5 points low from some time on (a displaced probe).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from models.anomaly.base import DetectorError
from models.panel import LabeledEvent, SensorPanel

CHANNELS = ("heart_rate", "spo2", "temperature", "ecg_rr")
ANOMALY_KINDS = ("context", "spike", "level_shift")


def _activity(rng: np.random.Generator, n: int) -> np.ndarray:
    """Activity in [0, 1]: mean-reverting noise around 0.2 plus exercise bouts."""
    a = np.empty(n)
    level = 0.2
    theta, sigma = 1 / 15, 0.05  # reverts over ~15 minutes
    bout = np.zeros(n)
    for start in rng.choice(n, size=max(1, n // 240), replace=False):
        length = int(rng.integers(10, 40))
        bout[start : start + length] = rng.uniform(0.3, 0.6)
    for t in range(n):
        level += theta * (0.2 + bout[t] - level) + sigma * rng.standard_normal()
        a[t] = level
    return np.clip(a, 0.0, 1.0)


def simulate_body(
    minutes: int = 2000,
    people: int = 2,
    *,
    seed: int = 0,
    anomalies: Sequence[tuple[str, int, int, int]] = (),
    start: str = "2024-03-04",
) -> SensorPanel:
    """A ``[time, person, channel]`` panel of body sensors, one reading per minute.

    Parameters
    ----------
    minutes, people : panel size.
    anomalies : ``(kind, person, start_minute, length)`` tuples, ``kind`` in
        :data:`ANOMALY_KINDS` (``length`` is ignored for ``spike``; a level shift lasts
        ``length`` minutes).
    seed : same arguments, same panel.

    Raises
    ------
    DetectorError
        Unknown anomaly kind, or one outside the panel.
    """
    if minutes < 10 or people < 1:
        raise DetectorError(f"need minutes >= 10 and people >= 1, got {minutes}, {people}")
    rng = np.random.default_rng(seed)
    values = np.empty((minutes, people, len(CHANNELS)))  # [time, person, channel]
    clock = np.arange(minutes) / (24 * 60)
    for p in range(people):
        a = _activity(rng, minutes)
        slow = pd.Series(a).ewm(halflife=20).mean().to_numpy()
        hr = 62 + 55 * a + rng.normal(0, 1.5, minutes)
        values[:, p, 0] = hr
        values[:, p, 1] = np.minimum(100.0, 98 - 2 * a + rng.normal(0, 0.3, minutes))
        values[:, p, 2] = (
            36.7 + 0.5 * slow + 0.15 * np.sin(2 * np.pi * clock) + rng.normal(0, 0.03, minutes)
        )
        values[:, p, 3] = 60000 / hr + rng.normal(0, 12, minutes)
    stamps = pd.date_range(start, periods=minutes, freq="1min", tz="UTC")
    events = []
    for kind, person, begin, length in anomalies:
        if kind not in ANOMALY_KINDS:
            raise DetectorError(f"unknown anomaly kind {kind!r}; use one of {ANOMALY_KINDS}")
        if not (0 <= person < people and 0 <= begin < minutes and length >= 1):
            raise DetectorError(f"anomaly {(kind, person, begin, length)} is outside the panel")
        end = min(minutes, begin + (1 if kind == "spike" else length))
        if kind == "context":
            # The person's own heart rate from half a day away: plausible values, wrong time.
            source = (np.arange(begin, end) + minutes // 2) % minutes
            values[begin:end, person, 0] = values[source, person, 0]
        elif kind == "spike":
            values[begin, person, 0] += 90.0
        else:
            values[begin:end, person, 1] -= 5.0
        events.append(LabeledEvent(stamps[begin], stamps[end - 1], (f"person{person}",), kind))
    return SensorPanel.from_values(
        values.astype(np.float32),
        stamps,
        tuple(f"person{p}" for p in range(people)),
        features=CHANNELS,
        events=tuple(events),
        name="body-simulated",
    )
