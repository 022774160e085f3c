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
from pipeline.service.ticks import AssemblerConfig

if TYPE_CHECKING:
    from models.forecasters.base import Forecaster
    from pipeline.service.store import Store
    from pipeline.service.store_rows import ReadingRows

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
    grid = AssemblerConfig(freq=tick, origin=pd.Timestamp(0, tz="UTC") + offset)
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
    stored = store.closed_ticks(_ms(grid, last_closed - span + 1))
    ticks = grid.tick_of(stored * 1_000_000)
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
        at_close, seen, values, mask = _stored_ticks(store, grid, store_ids, first, last)
        closed, seen = at_close[window - 1 :], seen[window - 1 :]  # from chunk[0] on
        stamps = pd.date_range(grid.tick_time(first), periods=len(values), freq=tick)
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


def _ms(grid: AssemblerConfig, tick: int) -> int:
    return int(grid.tick_ns(tick)) // 1_000_000


def _stored_ticks(
    store: Store, grid: AssemblerConfig, store_ids: np.ndarray, first: int, last: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The stored readings of the ticks ``first .. last`` of the sensors ``store_ids``,
    float32 ``[tick, node]`` (NaN where none) with the bool mask of those read: as they
    were when each tick closed, then with the late readings (corrections) applied."""
    since, until = _ms(grid, first), _ms(grid, last)
    shape = (last - first + 1, len(store_ids))
    at_close, seen = _on_grid(store.readings_since(since, corrected=False, until_ms=until),
                              grid, store_ids, first, shape)  # fmt: skip
    late, arrived = _on_grid(store.corrections_since(since, until_ms=until), grid, store_ids,
                             first, shape)  # fmt: skip
    return at_close, seen, np.where(arrived, late, at_close), seen | arrived


def _on_grid(
    rows: ReadingRows, grid: AssemblerConfig, store_ids: np.ndarray, first: int,
    shape: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``rows`` of the sensors ``store_ids`` as float32 values ``[tick, node]`` from tick
    ``first`` (NaN where none) and the bool mask of those read."""
    column = np.full(int(store_ids.max(initial=0)) + 2, -1, np.int64)
    column[store_ids] = np.arange(len(store_ids))
    cols = column[np.clip(rows.sensors, -1, len(column) - 1)]  # another's id: -1
    keep = cols >= 0
    at = grid.tick_of(rows.ts_ms[keep] * 1_000_000) - first
    values = np.full(shape, np.nan, np.float32)
    mask = np.zeros(shape, bool)
    values[at, cols[keep]] = rows.values[keep]
    mask[at, cols[keep]] = True
    return values, mask
