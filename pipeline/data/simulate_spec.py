"""``simulated:key=value,...`` specs: the options of :func:`simulate_network` and the
presets (regimes) that ``roadcast train simulated:regime=metro`` and the generalisation
suite use."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from models.panel import SensorPanel
from pipeline.data.simulate import (
    MAX_CELLS,
    SimulationError,
    check_simulation,
    simulate_network,
)
from pipeline.kafka.schema import TS_MAX, TS_MIN

# The start of a ``simulated`` spec: a Wednesday, so that the last 20 % of a week (the
# test part of ``roadcast train`` and what the demo replays) falls on working days,
# whose peaks are what a forecaster is for, and the training part holds a weekend.
SPEC_START = "2024-03-06"

# Presets of ``simulated:regime=NAME``; options given beside them win.
REGIMES: dict[str, dict[str, Any]] = {
    "speed": {},
    "counts": {"kind": "counts", "coupling": 0.3, "noise_mph": 0.0},
    # The metro case: 80 stations, counts, night cut so days abut, a bare 0/1 graph.
    "metro": {
        "sensors": 80,
        "days": 13.25,
        "kind": "counts",
        "coupling": 0.3,
        "service_hours": (6.0, 23.0),
        "graph": "plain",
        "corridor_length": 16,
    },
}


def _hours(text: str) -> tuple[float, float]:
    first, sep, last = text.partition("-")
    try:
        if sep:
            return float(first), float(last)
    except ValueError:
        pass
    raise ValueError(f"service hours must be FIRST-LAST, e.g. 6-23, got {text!r}")


def _seed(text: str) -> int:
    seed = int(text)
    if seed < 0:
        raise ValueError("a seed must be a whole number >= 0")
    return seed


def _start(text: str) -> str:
    try:
        stamp = pd.Timestamp(text)
    except (ValueError, OverflowError):
        stamp = pd.NaT
    if pd.isna(stamp):
        raise ValueError("not a time such as 2024-03-04")
    return text


_SPEC_OPTIONS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "sensors": ("sensors", int),
    "days": ("days", float),
    "hours": ("days", lambda v: float(v) / 24.0),
    "seed": ("seed", _seed),
    "freq": ("freq_minutes", int),
    "incidents": ("incidents_per_day", float),
    "faults": ("faults_per_day", float),
    "start": ("start", _start),
    "kind": ("kind", str),
    "coupling": ("coupling", float),
    "service": ("service_hours", _hours),
    "gaps": ("gaps", float),
    "graph": ("graph", str),
    "noise": ("noise_mph", float),
    "regime": ("regime", str),
}


def simulate_spec(options: str) -> SensorPanel:
    """The panel of a ``simulated:key=value,...`` spec (``options`` is what follows the
    colon): keys ``sensors, days, hours, seed, freq, incidents, faults, start, kind,
    coupling, service, gaps, graph, noise`` and ``regime`` (a preset of :data:`REGIMES`;
    the other keys given beside it win).

    Raises
    ------
    SimulationError
        For an unknown key or regime, a key given twice (``days`` and ``hours`` count
        as one), or a value that is not a number where one is needed.
    """
    return simulate_network(**spec_arguments(options))


def check_simulated(options: str) -> None:
    """Refuse a ``simulated:`` spec :func:`simulate_spec` would refuse, without simulating."""
    check_simulation(**spec_arguments(options))


def spec_arguments(options: str) -> dict[str, Any]:
    """:func:`simulate_network`'s arguments for the spec ``options`` (see
    :func:`simulate_spec`), its years checked."""
    given: dict[str, Any] = {}
    items: dict[str, tuple[str, str]] = {}  # target: the key and item that set it
    for item in filter(None, (p.strip() for p in options.split(","))):
        key, sep, raw = item.partition("=")
        key = key.strip().lower()
        if not sep or key not in _SPEC_OPTIONS:
            raise SimulationError(
                f"option {item!r} not understood; use key=value with keys "
                f"{', '.join(_SPEC_OPTIONS)}"
            )
        target, convert = _SPEC_OPTIONS[key]
        if target in items:
            first_key, first = items[target]
            raise SimulationError(
                f"key {key!r} given twice ({first!r} and {item!r}); give it once"
                if first_key == key
                else f"{first!r} and {item!r} set the same option; give one"
            )
        items[target] = key, item
        try:
            given[target] = convert(raw.strip())
        except ValueError as exc:
            detail = str(exc) if key in ("service", "seed", "start") else "not a number"
            if key == "seed" and "literal" in detail:
                detail = "not a whole number"
            raise SimulationError(f"option {key}={raw.strip()!r}: {detail}") from None
    regime = str(given.pop("regime", "speed")).lower()
    if regime not in REGIMES:
        raise SimulationError(f"unknown regime {regime!r}; known: {', '.join(REGIMES)}")
    kwargs: dict[str, Any] = {"start": SPEC_START, **REGIMES[regime], **given}
    if regime != "speed":
        kwargs.setdefault("name", f"simulated-{regime}")
    _check_years(kwargs)
    return kwargs


def _check_years(kwargs: dict[str, Any]) -> None:
    """Refuse, before any simulating, readings that would fall outside the years the wire
    carries (from ``start``, ``days`` and ``freq_minutes``); other bad values are left for
    :func:`simulate_network` to name."""
    days, freq = kwargs.get("days", 7.0), kwargs.get("freq_minutes", 5)
    if not (isinstance(freq, int) and freq >= 1 and math.isfinite(days) and days > 0):
        return
    if days * 24 * 60 / freq * kwargs.get("sensors", 200) > MAX_CELLS:
        return  # too many readings, whatever their years
    start = pd.Timestamp(kwargs["start"])
    first = (
        start.tz_localize("UTC") if start.tz is None else start.tz_convert("UTC")
    ).to_pydatetime(warn=False)
    steps = max(1, round(days * 24 * 60 / freq))
    try:
        last: datetime | None = first + timedelta(minutes=(steps - 1) * freq)
    except OverflowError:  # beyond the year 9999
        last = None
    if first < TS_MIN or last is None or last >= TS_MAX:
        until = f"{last:%Y-%m-%d %H:%M}" if last is not None else "beyond the year 9999"
        raise SimulationError(
            f"option start={kwargs['start']!r}: the readings would run from "
            f"{first:%Y-%m-%d %H:%M} to {until} (UTC), outside the years "
            f"{TS_MIN.year}-{TS_MAX.year - 1} that roadcast's readings and forecasts can carry"
        )
