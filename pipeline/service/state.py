"""The forecasting service's state: built from the bundles, rebuilt from the store.

:class:`ServiceState` holds what the service keeps between poll batches: the model slots
with their versions, the tick assembler, the live scorer, the counters, the partitions,
the store and its stage timings. It rebuilds them from the store when the service starts
and when it recovers (:meth:`ServiceState.restore`, no cold start), swaps models in at a
tick boundary (:meth:`ServiceState.swap_models`, hot reload) and warms the models up.
:class:`pipeline.service.processor.PollProcessor` adds the per-batch logic.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from models.bundle import duration_text, offset_text
from models.forecasters.base import Forecaster
from models.forecasters.level import OnlineLevel
from models.panel import SensorPanel
from pipeline.service.assembler import AssemblerConfig, TickAssembler
from pipeline.service.cadence import CadenceCheck
from pipeline.service.config import ServiceConfig
from pipeline.service.decoding import ReadingDecoder
from pipeline.service.hooks import AlertHook, AlertRestore, RestorableAlertHook
from pipeline.service.level_replay import replay_levels
from pipeline.service.live_accuracy import LiveScorer
from pipeline.service.liveness import DOWN_KEY, read_down_state
from pipeline.service.model_set import (
    ModelSlot,
    Versioned,
    alert_forecasters,
    build_slots,
    offset_refusal,
    swap_refusal,
    version_rows,
)
from pipeline.service.partitions import PartitionTracker
from pipeline.service.publishing import Publisher
from pipeline.service.store import Store, StoreError, StoreLock, failure_hint
from pipeline.service.store_rows import VersionRow
from pipeline.settings import Settings

if TYPE_CHECKING:
    from pipeline.service.metrics import ServiceMetrics

log = logging.getLogger("roadcast.service")

OFFSET_KEY = "tick_offset_ms"  # the store's grid offset; absent (0) in older stores
# The service's level half-life (``6h``, ``off``), for the forecast flow to correct as it
# does; absent in older stores.
LEVEL_KEY = "level_half_life"


def half_life_text(half_life: pd.Timedelta | None) -> str:
    """A level half-life as ``roadcast serve --level-half-life`` takes it (``off``: none)."""
    return "off" if half_life is None else duration_text(half_life.total_seconds())


def grid_problem(
    state: Mapping[str, object], store: object, freq_ms: int, offset_ms: int
) -> str | None:
    """Why a store whose ``state`` table holds this cannot take ticks of ``freq_ms`` at
    ``offset_ms`` past the epoch's grid; None when it can (a new store takes any)."""
    tick_ms = state.get("tick_ms")
    if tick_ms is None:
        return None
    if int(str(tick_ms)) != freq_ms:
        stored = duration_text(int(str(tick_ms)) / 1000)
        return (
            f"the store {store} was written with ticks of {stored}, not "
            f"{duration_text(freq_ms / 1000)}: serve models trained on {stored} steps (with "
            f"--tick {stored}) or use another --store"
        )
    stored_offset = int(str(state.get(OFFSET_KEY) or 0))
    if stored_offset != offset_ms:
        return (
            f"the store {store} was written with ticks at {offset_text(stored_offset / 1000)} "
            f"past the tick grid of 1970-01-01T00:00Z, not {offset_text(offset_ms / 1000)}: "
            "serve models trained on that grid (their offset_s) or use another --store"
        )
    return None


def network_problem(
    store: Store,
    path: object,
    sensor_ids: Sequence[str],
    *,
    freq_ms: int,
    offset_ms: int,
    window: int,
) -> str | None:
    """Why ``store`` (at ``path``), whose readings a restart reads back (``window`` ticks
    of ``freq_ms`` at ``offset_ms`` up to its last closed one) are all of sensors other
    than ``sensor_ids``, cannot be served: its ticks and watermark are another network's,
    and this network's readings would be late or mixed in with them. None when it can."""
    state = store.state()
    if state.get("max_ts_ns") is None:
        return None  # a new store
    last_closed = _int_or_none(state.get("last_closed"))
    since_ms = int(np.iinfo(np.int64).min)
    if last_closed is not None:
        since_ms = offset_ms + (last_closed - window + 1) * freq_ms
    stored = np.unique(store.readings_since(since_ms).sensors)
    names = store.sensor_names()
    theirs = sorted({names.get(int(s), str(s)) for s in stored})
    if not theirs or not set(theirs).isdisjoint(sensor_ids):
        return None
    return (
        f"the store {path} holds the readings of another sensor network ({_few(theirs)}; "
        f"the models serve {_few(list(sensor_ids))}): give this service a store of its own "
        "(--store), or serve that network's models"
    )


class ServiceState:
    """The service's state between poll batches (see the module docstring).

    Parameters
    ----------
    settings : bootstrap servers, topics, consumer group, store path.
    config : tick grid, lateness, batching.
    models : ``{name: model}`` to forecast with (see :func:`pipeline.model_dir.load_bundles`).
    alert_hook : optional detector pipeline called for every closed tick.
    clock : the processing clock in seconds (monotonic), for the grace and partition
        idleness; tests pass their own.
    versions : each model's version (``pipeline.registry.ModelVersion``), recorded in the
        store's ``model_versions`` when it is new there.
    metrics : the Prometheus metrics to keep up to date (None: none).
    """

    def __init__(
        self,
        settings: Settings,
        config: ServiceConfig,
        models: Mapping[str, Forecaster],
        *,
        alert_hook: AlertHook | None = None,
        clock: Callable[[], float] = time.monotonic,
        versions: Mapping[str, Versioned] | None = None,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        from pipeline.model_dir import union_sensors

        if not models:
            raise ValueError("the service needs at least one model; train some with roadcast train")
        offset_s = config.tick_offset.total_seconds()
        if (reason := offset_refusal(models, offset_s)) is not None:
            raise ValueError(f"{reason}: serve them with ServiceConfig(tick_offset=...)")
        self.settings = settings
        # Called while long work (the level replay) goes on: the subclass that reports
        # the loop's liveness beats here.
        self.progress: Callable[[], None] = lambda: None
        self.config = config
        self.alert_hook = alert_hook
        self.clock = clock
        self.sensor_ids = union_sensors(dict(models))
        self.column = {s: i for i, s in enumerate(self.sensor_ids)}
        self.window = max(m.window for m in models.values())
        self.freq_ms = int(config.tick.value // 1_000_000)
        self.offset_ms = int(config.tick_offset.value // 1_000_000)
        self.asm_config = AssemblerConfig(
            freq=config.tick,
            origin=pd.Timestamp(0, tz="UTC") + config.tick_offset,
            allowed_lateness=config.allowed_lateness,
            window=self.window,
            max_clock_skew=config.max_clock_skew,
            grace_s=None if config.grace is None else config.grace.total_seconds(),
            down_after=config.down_after,
        )
        self.cadence = CadenceCheck(self.sensor_ids, self.asm_config)
        self.store = Store(settings.store_path, durable=config.durable, exclusive=True)
        try:  # a store that cannot be served is closed again, not left open
            self.store_ids = self.store.sensor_keys(list(self.sensor_ids))
            self.publisher = Publisher(settings, self._timed)
            self.models: list[ModelSlot] = build_slots(
                models, self.column, self.store_ids, self.publisher.encoder, versions
            )
            self.counters: Counter[str] = Counter(self.store.counters())
            self.latencies: deque[float] = deque(maxlen=10_000)
            # Seconds spent per stage (decode, assemble, predict.<model>, encode, send,
            # flush, store...) since start: where a tick's time goes, for logs and benchmarks.
            self.stage_s: dict[str, float] = {}
            self.partitions = PartitionTracker(idle_s=config.partition_idle_s)
            self.decoder = ReadingDecoder(self.column, settings.topic_dlq)
            self.restore()
        except BaseException as exc:
            self.store.close()
            if isinstance(exc, sqlite3.Error) and (hint := failure_hint(exc)) is not None:
                raise StoreError(f"the store {settings.store_path}: {exc}; {hint}") from exc
            raise
        # Model versions new to the store, written with the next stored batch.
        self.versions = dict(versions or {})
        self.version_rows = self._version_rows(self.versions)
        self.metrics = metrics
        if metrics is not None:
            last = self.store.last_ticks(1)
            metrics.configure(
                tick_s=self.freq_ms / 1000,
                sensors=len(self.sensor_ids),
                store=self.store.path,
                last_tick=last[0] if last else None,
            )
            metrics.loaded_models(lambda: [(m.name, m.version) for m in self.models])
            metrics.stage_seconds(lambda: self.stage_s)

    def restore(self) -> None:
        """Rebuild the assembler, the live scorer, the level corrections and a restorable
        alert hook's state from the store (no cold start)."""
        self.assembler = TickAssembler(self.sensor_ids, self.asm_config)
        self.scorer = LiveScorer({m.name: m.model.horizon for m in self.models})
        self.levels = self._levels()
        state = self.store.state()
        problem = grid_problem(state, self.settings.store_path, self.freq_ms, self.offset_ms)
        if problem is not None:
            raise ValueError(problem)
        if state.get("max_ts_ns") is None:
            self._restore_alerts(None)
            return  # a new store
        last_closed = _int_or_none(state.get("last_closed"))
        since_ms = int(np.iinfo(np.int64).min)  # no tick closed: every stored reading
        if last_closed is not None:
            since_ms = int(self.asm_config.tick_ns(last_closed - self.window + 1)) // 1_000_000
        rows = self.store.readings_since(since_ms)
        col_of_store = {int(sid): col for col, sid in enumerate(self.store_ids)}
        cols = np.array([col_of_store.get(int(s), -1) for s in rows.sensors], dtype=np.int64)
        keep = cols >= 0  # sensors of bundles no longer loaded are left out
        if len(keep) and not keep.any():
            problem = network_problem(
                self.store,
                self.settings.store_path,
                self.sensor_ids,
                freq_ms=self.freq_ms,
                offset_ms=self.offset_ms,
                window=self.window,
            )
            raise ValueError(problem or "the store holds no reading of the served sensors")
        self.assembler.restore(
            first_tick=_int_or_none(state.get("first_tick")),
            last_closed=last_closed,
            max_ts_ns=_int_or_none(state.get("max_ts_ns")),
            watermark_ns=_int_or_none(state.get("watermark_ns")),
            cols=cols[keep],
            ticks=self.asm_config.tick_of(rows.ts_ms[keep] * 1_000_000),
            values=rows.values[keep],
            record_ms=rows.arrived_ms[keep],
            down_since=read_down_state(state.get(DOWN_KEY), self.column, self.asm_config),
            now_s=self.clock(),
        )
        self._restore_scorer(last_closed)
        log.info(
            "restored",
            extra={
                "fields": {
                    "last_closed": _iso(self.asm_config, last_closed),
                    "open_ticks": len(self.assembler.open_ticks),
                    "readings": int(keep.sum()),
                }
            },
        )
        self._restore_alerts(last_closed)

    def reopen_store(self) -> bool:
        """Open the store again when its file was deleted or replaced since it was opened
        (an operator's ``rm`` or ``mv``): writes would otherwise go to a file nobody reads
        again. The state is then restored (:meth:`restore`) from the new file, as are the
        sensor and model ids and the stored offsets. True when it was reopened.

        Raises
        ------
        pipeline.service.store.StoreError
            When the path no longer holds a usable store (the old one stays closed).
        """
        reason = self.store.replaced()
        if reason is None:
            return False
        lock = StoreLock(self.store.path)  # held while the connection changes
        try:
            self.store.close()  # first: it folds its write-ahead log into the old file
            self.store = Store(self.store.path, durable=self.config.durable, exclusive=True)
        finally:
            lock.release()
        self.store_ids = self.store.sensor_keys(list(self.sensor_ids))
        self.models = build_slots(
            {m.name: m.model for m in self.models},
            self.column,
            self.store_ids,
            self.publisher.encoder,
            self.versions,
        )
        keys = set(self.partitions.topic_keys.values())
        self.partitions.next_offset = {
            (key, part): offset for key in keys for part, offset in self.store.offsets(key).items()
        }
        hint = "what the old file held is not in the new one; the service goes on with this one"
        log.error("store_replaced", extra={"fields": {"error": reason, "hint": hint}})
        self.restore()
        self.version_rows = self._version_rows(self.versions)
        return True

    def _restore_scorer(self, last_closed: int | None, previous: Sequence[ModelSlot] = ()) -> None:
        """The live scorer with the forecasts still waiting for their targets: taken over
        from the scorer being replaced for ``previous`` models whose horizon and sensors
        are unchanged (a hot reload), read back from the store for the others; the level
        corrections likewise (:meth:`_levels`, :meth:`_replay_levels`)."""
        held, scorer, levels = {m.name: m for m in previous}, self.scorer, self.levels
        self.scorer = LiveScorer({m.name: m.model.horizon for m in self.models})
        self.levels = self._levels(previous, levels)
        self._replay_levels([n for n, lv in self.levels.items() if lv is not levels.get(n)])
        if last_closed is None:
            return
        for m in self.models:
            old = held.get(m.name)
            same = old is not None and old.model.horizon == m.model.horizon
            if same and old is not None and np.array_equal(old.store_sensors, m.store_sensors):
                self.scorer.adopt(scorer, m.name)
                continue
            first_ms = int(self.asm_config.tick_ns(last_closed - m.model.horizon + 1)) // 1_000_000
            issued, means, lows, highs = self.store.recent_forecasts(
                m.name, first_ms, m.store_sensors, m.model.horizon
            )
            for k, ms in enumerate(issued.tolist()):
                self.scorer.record(
                    m.name,
                    int(self.asm_config.tick_of(ms * 1_000_000)),
                    means[k],
                    None if lows is None else lows[k],
                    None if highs is None else highs[k],
                )

    def _levels(
        self, previous: Sequence[ModelSlot] = (), held: Mapping[str, OnlineLevel] | None = None
    ) -> dict[str, OnlineLevel]:
        """Each model's online level correction (none when ``level_half_life`` is None):
        taken over at a hot reload for a model whose version, horizon and sensors did not
        change, new (empty) otherwise: :meth:`_replay_levels` fills those from the store."""
        half_life = self.config.level_half_life
        if half_life is None:
            return {}
        ticks = half_life / self.config.tick
        old = {m.name: m for m in previous}
        kept = held or {}
        out: dict[str, OnlineLevel] = {}
        for m in self.models:
            prior = old.get(m.name)
            level = kept.get(m.name)
            if (
                level is not None
                and prior is not None
                and prior.version == m.version
                and prior.model.horizon == m.model.horizon
                and np.array_equal(prior.store_sensors, m.store_sensors)
            ):
                out[m.name] = level
            else:
                out[m.name] = OnlineLevel(m.model.horizon, len(m.model.sensor_ids), ticks)
        return out

    def _replay_levels(self, names: Sequence[str]) -> None:
        """Rebuild the empty level corrections of the models ``names`` from the store as
        the live service built them (:func:`pipeline.service.level_replay.replay_levels`).
        A model that fails starts empty; one ``level_restored`` line tells what was done."""
        last, half_life = self.assembler.last_closed, self.config.level_half_life
        slots = [m for m in self.models if m.name in names]
        if last is None or half_life is None or not slots:
            return
        started = time.perf_counter()
        replay = replay_levels(
            self.store,
            {m.name: m.model for m in slots},
            self.sensor_ids,
            last_closed=last,
            tick=self.config.tick,
            offset=self.config.tick_offset,
            half_life=half_life,
            window=self.window,
            progress=self.progress,
        )
        self.levels.update(replay.levels)
        for name, error in replay.failed.items():
            hint = "its level correction starts empty and learns from the coming ticks"
            fields = {"model": name, "error": error, "hint": hint}
            log.warning("level_replay_failed", extra={"fields": fields})
        restored = {
            "models": [m.name for m in slots if m.name not in replay.failed],
            "ticks": replay.ticks,
            "seconds": round(time.perf_counter() - started, 3),
        }
        log.info("level_restored", extra={"fields": restored})

    def _version_rows(self, versions: Mapping[str, Versioned]) -> list[VersionRow]:
        last = self.assembler.last_closed
        since_ms = 0 if last is None else int(self.asm_config.tick_ns(last + 1)) // 1_000_000
        stored = self.store.model_versions()
        return version_rows(self.models, versions, stored, since_ms, time.time_ns() // 1_000_000)

    def swap_models(
        self, models: Mapping[str, Forecaster], versions: Mapping[str, Versioned]
    ) -> str | None:
        """Forecast with ``models`` from the next closed tick on (hot reload); returns why
        they were refused (see :func:`pipeline.service.model_set.swap_refusal`), or None.

        Call it between batches, when everything closed so far is stored: the forecasts
        of the old models still waiting for their targets are kept (or read back from the
        store) and scored as before, the alert hook keeps its state, and the store
        records which version forecasts from which tick (``model_versions``).
        """
        needs = alert_forecasters(self.alert_hook)
        offset_s = self.config.tick_offset.total_seconds()
        reason = swap_refusal(self.models, self.sensor_ids, self.window, models, needs, offset_s)
        if reason is not None:
            return reason
        previous, old = self.models, {m.name: m.version for m in self.models}
        with self._timed("swap"):
            self.models = build_slots(
                models, self.column, self.store_ids, self.publisher.encoder, versions
            )
            self._restore_scorer(self.assembler.last_closed, previous)
            self.version_rows.extend(self._version_rows(versions))
            self.versions = dict(versions)
        new = {m.name: m.version for m in self.models}
        log.info("models_swapped", extra={"fields": {"from": old, "to": new}})
        return None

    def _restore_alerts(self, last_closed: int | None) -> None:
        """Rebuild a restorable alert hook's state from the store (see the hook's docs)."""
        if not isinstance(self.alert_hook, RestorableAlertHook):
            return
        stamp = None
        if last_closed is not None:
            stamp = pd.Timestamp(int(self.asm_config.tick_ns(last_closed)), tz="UTC")
        started = time.perf_counter()
        self.alert_hook.restore(AlertRestore(self.store, self.sensor_ids, self.store_ids, stamp))
        seconds = round(time.perf_counter() - started, 3)
        log.info("alerts_state_restored", extra={"fields": {"seconds": seconds}})

    @contextmanager
    def _timed(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stage_s[stage] = self.stage_s.get(stage, 0.0) + time.perf_counter() - start

    def warm_up(self) -> None:
        """One forecast per model on an empty window before the first tick, so the first
        tick does not pay one-time costs (lazy imports, first torch calls, caches)."""
        started = time.perf_counter()
        empty = np.full((self.window, len(self.sensor_ids)), np.nan, np.float32)  # [time, node]
        stamps = pd.date_range("2000-01-01", periods=self.window, freq=self.config.tick, tz="UTC")
        panel = SensorPanel(empty, np.zeros(empty.shape, bool), stamps, self.sensor_ids)
        origin = np.array([self.window - 1], dtype=np.int64)
        for m in self.models:
            try:
                own = panel if m.cols is None else panel.select(m.model.sensor_ids)
                m.model.predict_batch(own, origin)
            except Exception as exc:  # reported again, per tick, if it persists
                log.warning(
                    "warm_up_failed", extra={"fields": {"model": m.name, "error": repr(exc)}}
                )
        log.info(
            "warmed_up", extra={"fields": {"seconds": round(time.perf_counter() - started, 3)}}
        )


def _int_or_none(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


def _iso(config: AssemblerConfig, tick: int | None) -> str | None:
    if tick is None:
        return None
    return pd.Timestamp(int(config.tick_ns(tick)), tz="UTC").isoformat()


def _few(names: Sequence[str], shown: int = 3) -> str:
    """``a, b, c and 4 more``: a few names of a long list."""
    head = ", ".join(names[:shown])
    return head if len(names) <= shown else f"{head} and {len(names) - shown} more"
