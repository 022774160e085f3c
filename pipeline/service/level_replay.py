"""The online level corrections rebuilt from the store, as the running service built them.

:func:`replay_levels` is used by the service at a start, a recovery, a store reopened
and a hot reload (:class:`pipeline.service.state.ServiceState`), and by the forecast
flow before it corrects its forecasts (:mod:`flows.forecast_flow`), so that both serve
the same corrected forecasts. Over the closed ticks of the last
:data:`LEVEL_REPLAY_HALF_LIVES` half-lives up to a given tick that the store holds, in
order, each tick's readings are observed and the model's own forecast issued at it (its
``predict_batch`` on the stored readings, late ones included) is recorded
(:class:`models.forecasters.level.OnlineLevel`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from models.forecasters.level import OnlineLevel
from models.panel import SensorPanel

if TYPE_CHECKING:
    from models.forecasters.base import Forecaster
    from pipeline.service.store import Store

# The replay reaches back this many half-lives of stored ticks: the errors further back
# would weigh at most 2**-4 = 1/16 of the state.
LEVEL_REPLAY_HALF_LIVES = 4
# At most this many origins times sensors per predict_batch call of the replay.
LEVEL_REPLAY_CELLS = 500_000


@dataclass
class LevelReplay:
    """What :func:`replay_levels` rebuilt.

    ``levels``: every model's correction (an empty one for a model that failed);
    ``failed``: ``{model: error}`` of the models whose forecasts failed in the replay;
    ``ticks``: how many closed ticks were replayed.
    """

    levels: dict[str, OnlineLevel] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    ticks: int = 0


@dataclass(frozen=True)
class _Grid:
    """The tick grid: tick ``t`` lies at ``offset_ms + t * freq_ms`` ms since the epoch."""

    freq: pd.Timedelta
    offset_ms: int

    @property
    def freq_ms(self) -> int:
        return int(self.freq.value // 1_000_000)

    def tick_ms(self, tick: int) -> int:
        return self.offset_ms + tick * self.freq_ms

    def tick_of(self, ms: np.ndarray) -> np.ndarray:
        return (np.asarray(ms, dtype=np.int64) - self.offset_ms) // self.freq_ms


def replay_levels(
    store: Store,
    models: Mapping[str, Forecaster],
    sensor_ids: Sequence[str],
    *,
    last_closed: int,
    tick: pd.Timedelta,
    offset: pd.Timedelta,
    half_life: pd.Timedelta,
    window: int | None = None,
    progress: Callable[[], None] | None = None,
) -> LevelReplay:
    """Each model's level correction after the closed tick ``last_closed`` (its forecast
    at that tick recorded), replayed from ``store``.

    Parameters
    ----------
    store : the service's store, only read (it must know every sensor of ``sensor_ids``).
    models : ``{name: model}``; each forecasts a subset of ``sensor_ids``.
    sensor_ids : the union of the models' sensors, in the service's column order.
    last_closed : the tick (index on the grid of ``tick`` at ``offset`` past the epoch)
        the replay ends with.
    tick, offset : the store's tick grid.
    half_life : the correction's half-life; ``LEVEL_REPLAY_HALF_LIVES`` of it are replayed.
    window : the ticks of readings before each replayed one that the forecasts are given
        (the service's window, the longest of the models it serves); default: the
        longest window of ``models``.
    progress : called after each chunk of ticks (the service's liveness beat).

    A model whose forecasts fail starts empty and is named in ``failed``; the others
    are unaffected.
    """
    grid = _Grid(tick, int(offset.value // 1_000_000))
    half_life_ticks = half_life / tick
    out = LevelReplay(
        levels={
            name: OnlineLevel(m.horizon, len(m.sensor_ids), half_life_ticks)
            for name, m in models.items()
        }
    )
    if not models:
        return out
    span = int(np.ceil(LEVEL_REPLAY_HALF_LIVES * half_life_ticks))
    stored = store.closed_ticks(grid.tick_ms(last_closed - span + 1))
    ticks = grid.tick_of(stored)
    ticks = ticks[ticks <= last_closed]
    out.ticks = len(ticks)
    column = {s: i for i, s in enumerate(sensor_ids)}
    cols: dict[str, np.ndarray | None] = {}
    for name, m in models.items():
        own = np.array([column[s] for s in m.sensor_ids], dtype=np.int64)
        same = len(own) == len(column) and bool((own == np.arange(len(own))).all())
        cols[name] = None if same else own
    store_ids = _store_ids(store, sensor_ids)
    window = window or max(m.window for m in models.values())
    per_call = max(1, LEVEL_REPLAY_CELLS // max(len(sensor_ids), 1))
    start = 0
    while start < len(ticks) and len(out.failed) < len(models):
        stop = int(np.searchsorted(ticks, ticks[start] + per_call))  # <= per_call ticks
        going = {n: m for n, m in models.items() if n not in out.failed}
        chunk = ticks[start:stop]
        first, last = int(chunk[0]) - window + 1, int(chunk[-1])
        values, mask = _stored_ticks(store, grid, store_ids, first, last, corrected=True)
        closed, seen = _stored_ticks(store, grid, store_ids, int(chunk[0]), last, corrected=False)
        stamps = pd.date_range(
            pd.Timestamp(grid.tick_ms(first), unit="ms", tz="UTC"), periods=len(values), freq=tick
        )
        panel = SensorPanel(values, mask, stamps, tuple(sensor_ids))
        for name, m in going.items():
            try:
                _replay_chunk(panel, chunk, first, closed, seen, m, cols[name], out.levels[name])
            except Exception as exc:  # that model starts empty; the others go on
                out.failed[name] = f"{type(exc).__name__}: {exc}"
        start = stop
        if progress is not None:
            progress()
    for name in out.failed:
        m = models[name]
        out.levels[name] = OnlineLevel(m.horizon, len(m.sensor_ids), half_life_ticks)
    return out


def _store_ids(store: Store, sensor_ids: Sequence[str]) -> np.ndarray:
    """The store's ids of ``sensor_ids``, int64 ``[node]`` (read only: none registered).

    Raises
    ------
    ValueError
        Naming a sensor the store does not know.
    """
    ids = {name: sid for sid, name in store.sensor_names().items()}
    missing = [s for s in sensor_ids if s not in ids]
    if missing:
        raise ValueError(
            f"the store {store.path} has no sensor {missing[0]!r} ({len(missing)} of "
            f"{len(sensor_ids)} missing): its level corrections cannot be replayed"
        )
    return np.array([ids[s] for s in sensor_ids], dtype=np.int64)


def _replay_chunk(
    panel: SensorPanel,
    ticks: np.ndarray,
    first: int,
    closed: np.ndarray,
    seen: np.ndarray,
    model: Forecaster,
    cols: np.ndarray | None,
    level: OnlineLevel,
) -> None:
    """Fold the closed ``ticks`` (ascending; ``panel`` holds the readings from tick
    ``first`` on, ``closed`` and ``seen`` those at close from ``ticks[0]`` on) into
    ``model``'s ``level``."""
    own = panel if cols is None else panel.select(model.sensor_ids)
    origins = (ticks - first).astype(np.int64)
    mean = model.predict_batch(own, origins).mean  # [tick, horizon, node]
    for k, tick in enumerate(ticks.tolist()):
        row = int(tick - ticks[0])
        value, ok = closed[row], seen[row]
        if cols is not None:
            value, ok = value[cols], ok[cols]
        level.observe(tick, value, ok)
        level.record(tick, mean[k])


def _stored_ticks(
    store: Store, grid: _Grid, store_ids: np.ndarray, first: int, last: int, *, corrected: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The stored readings of the ticks ``first .. last`` of the sensors ``store_ids``:
    float32 values ``[tick, node]`` (NaN where none) and the bool mask of those read."""
    rows = store.readings_since(
        grid.tick_ms(first), corrected=corrected, until_ms=grid.tick_ms(last)
    )
    column = np.full(int(store_ids.max(initial=0)) + 2, -1, np.int64)
    column[store_ids] = np.arange(len(store_ids))
    cols = column[np.clip(rows.sensors, -1, len(column) - 1)]  # another's id: -1
    keep = cols >= 0
    at = grid.tick_of(rows.ts_ms[keep]) - first
    values = np.full((last - first + 1, len(store_ids)), np.nan, np.float32)
    mask = np.zeros(values.shape, bool)
    values[at, cols[keep]] = rows.values[keep]
    mask[at, cols[keep]] = True
    return values, mask
