"""The forecasting service: readings in from Kafka, every model's forecasts out.

``roadcast serve`` runs :func:`serve`. One loop, one thread::

    poll a batch (manual commits, consumer group)
      -> drop records the store already holds (redelivered after a crash)
      -> decode + validate each record   --bad--> dead-letter topic (+ error headers)
      -> assemble ticks (pipeline.service.assembler)
      -> every loaded model forecasts every closed tick (one predict_batch per model)
      -> publish one Forecast per model and sensor
      -> anomaly detectors + alert lifecycle (pipeline.alerts.detection, on by default in
         ``roadcast serve``) --firing/resolved--> roadcast.alerts (header ``group``)
      -> producer.flush()                                  (everything acknowledged)
      -> store readings, forecasts, ticks, accuracy, counters, offsets: one transaction
      -> commit the batch's offsets to Kafka

Delivery guarantees
-------------------
* **At-least-once.** Offsets are committed only after the batch's forecasts, alerts
  and dead letters are acknowledged by the broker and the batch is stored. A crash
  anywhere before the store transaction replays the batch: the forecasts are
  published again with the same key, ``issued_at`` and values, and the store's
  upserts make the second copy a no-op.
* **Exact counters across crashes.** The store records, in the batch's transaction,
  the next offset of every partition. Records below it are skipped on redelivery
  (counted as ``redelivered``), so a crash between the store and the Kafka commit
  neither double-counts nor re-forecasts.
* **Publish failures.** If the broker does not acknowledge a batch (flush timeout,
  failed send), nothing of the batch is stored or committed: the service reloads its
  state from the store, rewinds the consumer to the stored offsets and tries again,
  as a restarted process would.
* **SIGTERM / SIGINT.** The current batch is finished (published, stored,
  committed), the consumer leaves its group, the process exits 0.
* **Rebalance.** On revocation the listener commits (asynchronously: kafka-python 3
  calls it on its network thread) the offsets of finished batches whose commit had not
  gone through; a new assignment is adopted in the service loop, which moves each
  partition to its stored offset when that is ahead (see :mod:`pipeline.service.partitions`).
* **Event time across partitions.** The watermark is capped by the slowest active
  partition, so a partition read ahead does not make the others' readings late; a
  partition silent for ``partition_idle_s`` does not hold it back.
* **Broker restart.** Tansu keeps data in memory only, so a restarted embedded
  broker is empty: no topics, no committed offsets. While idle the service re-creates
  missing topics every few seconds; kafka-python reconnects by itself; the group
  re-forms and, with no committed offset, reads the new log from the start
  (``auto_offset_reset=earliest``). Stored offsets are keyed by the topic's id, which
  a re-created topic does not share, so the old offsets never hide new records.
  Readings that were in the old broker and not yet consumed are gone with it: that
  is the broker's loss, not the service's (a real Kafka cluster keeps its log). Tansu
  also creates a topic on first use, so sends in flight during the restart usually
  succeed against the new broker; when they do not, the batch is replayed as above.

State survives restarts in the store: the rolling window, the open ticks and the
recent forecasts (for live accuracy) are rebuilt from it, so a restarted service
forecasts from its first closed tick (no cold start). An alert hook that implements
:class:`RestorableAlertHook` rebuilds its own state from the store at the same moments
(:mod:`pipeline.alerts.detection` replays the recent ticks: alerts that were firing resolve
under their original ids).

Where a tick's time goes
------------------------
The service times its stages (``stage_s``; the ``stats`` log line and
``benchmarks/stream.py`` show milliseconds per tick). What keeps a tick of 207 sensors
and 6 models at about 30 ms on this project's 2-core machine (it was 70-80 ms):

* forecasts are formatted as text in one vectorised pass per model and tick
  (:mod:`pipeline.kafka.decimal_text`, 7 significant digits) instead of per number;
* the 1242 records of a tick are queued per partition in one bulk write into
  kafka-python's open batches (:mod:`pipeline.kafka.record_batches`, about 1 us a record
  against 12-25 us for ``send()``), with a ``send()`` fallback;
* after warm-up the long-lived heap is frozen out of the garbage collector and young
  collections are rarer (``ServiceConfig.tune_gc``): full collections were the
  latency tail; collector pauses are timed as stages ``gc.gen*``;
* neural models forecast with one torch thread (``ServiceConfig.torch_threads``): a
  second thread waits on a busy core.

The store's ``synchronous=FULL`` (``durable=True``, the default) costs an fsync per
batch; ``--fast-store`` (``NORMAL``) keeps every committed batch through a process
crash but not through a power cut, after which the committed Kafka offsets could
point past readings the store lost.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from models.forecasters.base import Forecast, Forecaster
from models.panel import SensorPanel
from pipeline.alerts.lifecycle import AlertEvent
from pipeline.kafka.forecast_wire import ForecastEncoder
from pipeline.kafka.outbox import Outbox, PublishError, dead_letter_headers
from pipeline.kafka.schema import SchemaError, decode_readings, encode_alert
from pipeline.service.assembler import (
    CONFLICT,
    DUPLICATE,
    FUTURE,
    LATE,
    NEW,
    AssemblerConfig,
    ClosedRun,
    ClosedTick,
    TickAssembler,
)
from pipeline.service.hooks import AlertHook, AlertRestore, RestorableAlertHook, TickContext
from pipeline.service.latency import percentiles
from pipeline.service.live_accuracy import LiveScorer
from pipeline.service.partitions import PartitionTracker, RebalanceListener
from pipeline.service.store import (
    AccuracyRows,
    AlertRow,
    Batch,
    ForecastRows,
    ReadingRows,
    Store,
    TickRow,
)
from pipeline.settings import Settings

if TYPE_CHECKING:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.consumer.fetcher import ConsumerRecord

    from pipeline.alerts.detection import AlertingConfig

log = logging.getLogger("roadcast.service")

# Dead-letter reasons the service adds to the schema's (pipeline.kafka.schema.REASONS).
UNKNOWN_SENSOR = "unknown_sensor"
FUTURE_TIMESTAMP = "future_timestamp"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_FIVE_MIN = pd.Timedelta("5min")
_TWO_MIN = pd.Timedelta("2min")
_ONE_HOUR = pd.Timedelta("1h")
# The service's producer. Every batch ends with a flush, so records need not linger to be
# batched: a long linger keeps kafka-python's network thread idle (and off the GIL) while
# the batch's forecasts are encoded and queued, then the flush sends them in a few large
# requests. Measured with 207 sensors x 4 models: latency p99 136-142 ms instead of
# 237-242 ms with the 5 ms default. ``max_block_ms``: how long a send may wait for
# metadata (a topic a fresh broker lacks) before the batch is abandoned and replayed.
_PRODUCER = {"linger_ms": 1000, "batch_size": 1 << 20, "max_block_ms": 10_000}
# Allocations between young-generation collections once the heap is frozen (default 700).
GC_THRESHOLD = 20_000
# The Kafka header of an alert record that names its incident (pipeline.alerts.detection).
GROUP_HEADER = "group"
# Counters shown in the periodic "stats" log line.
_STATS = (
    "consumed", "valid", "dead_lettered", "late", "duplicate", "conflict", "ticks_closed",
    "forecasts_published", "alerts_published", "redelivered",
)  # fmt: skip


@dataclass(frozen=True)
class ServiceConfig:
    """How the service runs (connection, topics and store path come from :class:`Settings`).

    Attributes
    ----------
    tick : the grid step of the data (the models' time step).
    allowed_lateness : how long after the newest event time a reading may arrive
        and still join its tick (see :mod:`pipeline.service.assembler`).
    max_clock_skew : readings stamped further than this after the wall clock are
        dead-lettered (``future_timestamp``); None disables the check.
    only : load only these model names from the model directory (all when empty).
    poll_records : at most this many records per poll batch.
    poll_timeout_ms : how long one poll waits for records.
    flush_timeout_s : how long the broker may take to acknowledge a batch's output.
    durable : the store's ``synchronous=FULL`` (see :class:`pipeline.service.store.Store`).
    stats_every_s : how often a ``stats`` log line is written.
    topic_check_every_s : while idle, how often missing topics are re-created.
    partition_idle_s : a partition that delivered nothing for this long no longer holds
        the watermark back (see :mod:`pipeline.service.partitions`).
    torch_threads : intra-op threads of the neural models' forecasts (None: leave
        torch's setting). One is enough for one tick's batch; more make every operation
        wait for the slowest thread, which on a busy machine is a descheduled one.
    bulk_publish : queue a tick's forecasts through :mod:`pipeline.kafka.record_batches` (where
        kafka-python supports it) rather than one ``send()`` per record.
    tune_gc : after warm-up, freeze the objects that live for the whole run (models,
        modules) out of the garbage collector and collect the young generation less
        often: a tick allocates thousands of short-lived, acyclic objects, and full
        collections over the long-lived heap were latency spikes.
    """

    tick: pd.Timedelta = _FIVE_MIN
    allowed_lateness: pd.Timedelta = _TWO_MIN
    max_clock_skew: pd.Timedelta | None = _ONE_HOUR
    only: tuple[str, ...] = ()
    poll_records: int = 1000
    poll_timeout_ms: int = 100
    flush_timeout_s: float = 30.0
    durable: bool = True
    stats_every_s: float = 10.0
    topic_check_every_s: float = 5.0
    partition_idle_s: float = 5.0
    torch_threads: int | None = 1
    bulk_publish: bool = True
    tune_gc: bool = True

    def __post_init__(self) -> None:
        if self.poll_records < 1:
            raise ValueError(f"poll_records must be >= 1, got {self.poll_records}")
        if self.flush_timeout_s <= 0:
            raise ValueError(f"flush_timeout_s must be > 0, got {self.flush_timeout_s}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError(f"torch_threads must be >= 1 or None, got {self.torch_threads}")
        object.__setattr__(self, "tick", pd.Timedelta(self.tick))
        object.__setattr__(self, "allowed_lateness", pd.Timedelta(self.allowed_lateness))


@dataclass
class _Model:
    name: str
    model: Forecaster
    cols: np.ndarray | None  # assembler column of each model sensor; None: same order
    store_sensors: np.ndarray  # int64 [model node]
    encoder: ForecastEncoder


@dataclass
class BatchReport:
    """What one poll batch did (for logs, tests and benchmarks)."""

    records: int = 0
    ticks: list[ClosedTick] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)


@dataclass
class _Decoded:
    """The valid readings of a batch as columns, and the messages they came from."""

    cols: list[int] = field(default_factory=list)
    ts_ns: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    record_ms: list[int] = field(default_factory=list)
    owner: list[int] = field(default_factory=list)  # index in `messages` of each reading
    messages: list[Any] = field(default_factory=list)  # ConsumerRecord
    partition: list[Any] = field(default_factory=list)  # TopicPartition of each message


class ForecastService:
    """The service's state and its per-batch logic; :meth:`run` is the Kafka loop.

    Parameters
    ----------
    settings : bootstrap servers, topics, consumer group, store path.
    config : tick grid, lateness, batching.
    models : ``{name: model}`` to forecast with (see :func:`pipeline.model_dir.load_bundles`).
    alert_hook : optional detector pipeline called for every closed tick.
    """

    def __init__(
        self,
        settings: Settings,
        config: ServiceConfig,
        models: Mapping[str, Forecaster],
        *,
        alert_hook: AlertHook | None = None,
    ) -> None:
        from pipeline.model_dir import union_sensors

        if not models:
            raise ValueError("the service needs at least one model; train some with roadcast train")
        self.settings = settings
        self.config = config
        self.alert_hook = alert_hook
        self.sensor_ids = union_sensors(dict(models))
        self.column = {s: i for i, s in enumerate(self.sensor_ids)}
        self.window = max(m.window for m in models.values())
        self.freq_ms = int(config.tick.value // 1_000_000)
        self.asm_config = AssemblerConfig(
            freq=config.tick,
            allowed_lateness=config.allowed_lateness,
            window=self.window,
            max_clock_skew=config.max_clock_skew,
        )
        self.store = Store(settings.store_path, durable=config.durable)
        self.store_ids = self.store.sensor_keys(list(self.sensor_ids))
        self.models: list[_Model] = []
        for name, model in models.items():
            cols = np.array([self.column[s] for s in model.sensor_ids], dtype=np.int64)
            same = len(cols) == len(self.sensor_ids) and bool((cols == np.arange(len(cols))).all())
            encoder = ForecastEncoder(model.sensor_ids)
            self.models.append(
                _Model(name, model, None if same else cols, self.store_ids[cols], encoder)
            )
        self.counters: Counter[str] = Counter(self.store.counters())
        self.latencies: deque[float] = deque(maxlen=10_000)
        # Seconds spent per stage (decode, assemble, predict.<model>, encode, send, flush,
        # store...) since start: where a tick's time goes, for the logs and benchmarks.
        self.stage_s: dict[str, float] = {}
        self._logged_stage_s: dict[str, float] = {}
        self._logged_ticks = 0
        self.partitions = PartitionTracker(idle_s=config.partition_idle_s)
        self._ts_cache: dict[datetime, int] = {}
        self._restore()

    # ----------------------------------------------------------------- state
    def _restore(self) -> None:
        """Rebuild the assembler and the live scorer from the store (no cold start)."""
        self.assembler = TickAssembler(self.sensor_ids, self.asm_config)
        self.scorer = LiveScorer({m.name: m.model.horizon for m in self.models})
        state = self.store.state()
        tick_ms = state.get("tick_ms")
        if tick_ms is not None and int(tick_ms) != self.freq_ms:
            raise ValueError(
                f"the store {self.settings.store_path} was written with ticks of {tick_ms} ms, "
                f"not {self.freq_ms} ms; pass --tick {pd.Timedelta(int(tick_ms), 'ms')} or "
                "use another --store"
            )
        if state.get("max_ts_ns") is None:
            self._restore_alerts(None)
            return  # a new store
        last_closed = _int_or_none(state.get("last_closed"))
        since_ms = 0
        if last_closed is not None:
            since_ms = int(self.asm_config.tick_ns(last_closed - self.window + 1)) // 1_000_000
        rows = self.store.readings_since(since_ms)
        col_of_store = {int(sid): col for col, sid in enumerate(self.store_ids)}
        cols = np.array([col_of_store.get(int(s), -1) for s in rows.sensors], dtype=np.int64)
        keep = cols >= 0  # sensors of bundles no longer loaded are left out
        self.assembler.restore(
            first_tick=_int_or_none(state.get("first_tick")),
            last_closed=last_closed,
            max_ts_ns=_int_or_none(state.get("max_ts_ns")),
            watermark_ns=_int_or_none(state.get("watermark_ns")),
            cols=cols[keep],
            ticks=self.asm_config.tick_of(rows.ts_ms[keep] * 1_000_000),
            values=rows.values[keep],
            record_ms=rows.arrived_ms[keep],
        )
        if last_closed is not None:
            for m in self.models:
                first_ms = (
                    int(self.asm_config.tick_ns(last_closed - m.model.horizon + 1)) // 1_000_000
                )
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

    # ----------------------------------------------------------------- batch
    def process(
        self,
        batches: Mapping[TopicPartition, Sequence[ConsumerRecord]],
        outbox: Outbox,
        *,
        highwater: Callable[[TopicPartition], int | None] | None = None,
        now_ns: int | None = None,
    ) -> tuple[BatchReport, Batch]:
        """Validate, assemble, forecast and publish one poll batch (not flushed, not stored).

        Parameters
        ----------
        batches : records per partition, as ``KafkaConsumer.poll`` returns them.
        outbox : where forecasts, alerts and dead letters are sent.
        highwater : the consumer's last known high watermark of a partition (a partition
            with a backlog never counts as idle); None: unknown for every partition.
        now_ns : wall clock for the future-timestamp rule (tests).

        Returns the report and the store batch; :meth:`handle` flushes, stores, commits.
        """
        report = BatchReport(records=sum(len(r) for r in batches.values()))
        batch = Batch()
        outbox.refresh()
        decoded = _Decoded()
        with self._timed("decode"):
            for tp, records in batches.items():
                fresh = self.partitions.fresh(tp, records)
                report.counts["redelivered"] += len(records) - len(fresh)
                if records:
                    key = self.partitions.key(tp)
                    # Never behind what is stored: a redelivered batch must not rewind it.
                    stored = self.partitions.next_offset.get(key, 0)
                    batch.offsets[key] = max(stored, records[-1].offset + 1)
                for record in fresh:
                    self._decode(tp, record, decoded, outbox, report.counts)
        with self._timed("assemble"):
            newest = self._assemble(decoded, outbox, batch, report.counts, now_ns)
            now = time.monotonic()
            for tp, records in batches.items():
                if records:
                    self.partitions.observe(tp, records[-1].offset + 1, newest.get(tp), now)
            limit = self.partitions.limit_ns(now, highwater or (lambda tp: None))
            runs = self.assembler.advance(limit)
        for run in runs:
            self._forecast_run(run, outbox, batch, report)
        batch.state.update(
            tick_ms=self.freq_ms,
            first_tick=self.assembler.first_tick,
            last_closed=self.assembler.last_closed,
            max_ts_ns=self.assembler.max_ts_ns,
            watermark_ns=self.assembler.watermark_ns,
        )
        return report, batch

    def _decode(
        self,
        tp: TopicPartition,
        record: ConsumerRecord,
        decoded: _Decoded,
        outbox: Outbox,
        counts: Counter[str],
    ) -> None:
        counts["consumed"] += 1
        try:
            readings = decode_readings(record.value)
        except SchemaError as exc:
            self._dead_letter(outbox, record, exc.reason, exc.detail, counts)
            return
        column = self.column
        unknown = next((r.sensor for r in readings if r.sensor not in column), None)
        if unknown is not None:
            detail = (
                f"sensor {unknown[:80]!r} is not in the loaded model bundles; retrain with it "
                "or send it to another topic"
            )
            self._dead_letter(outbox, record, UNKNOWN_SENSOR, detail, counts)
            return
        index = len(decoded.messages)
        decoded.messages.append(record)
        decoded.partition.append(tp)
        for reading in readings:
            decoded.cols.append(column[reading.sensor])
            decoded.ts_ns.append(self._ns(reading.ts))
            decoded.values.append(reading.value)
            decoded.record_ms.append(record.timestamp)
            decoded.owner.append(index)

    def _ns(self, ts: datetime) -> int:
        """ns since the epoch, exact (a float timestamp would round); cached per instant."""
        cached = self._ts_cache.get(ts)
        if cached is None:
            if len(self._ts_cache) > 4096:
                self._ts_cache.clear()
            cached = (ts - _EPOCH) // _ONE_US * 1000
            self._ts_cache[ts] = cached
        return cached

    def _dead_letter(
        self,
        outbox: Outbox,
        record: ConsumerRecord,
        reason: str,
        detail: str,
        counts: Counter[str],
    ) -> None:
        headers = dead_letter_headers(reason, detail, record.topic, record.partition, record.offset)
        outbox.send(self.settings.topic_dlq, record.key, record.value, headers)
        counts["dead_lettered"] += 1
        counts[f"dead_lettered.{reason}"] += 1

    def _assemble(
        self,
        decoded: _Decoded,
        outbox: Outbox,
        batch: Batch,
        counts: Counter[str],
        now_ns: int | None,
    ) -> dict[Any, int]:
        """Add the readings to the assembler; returns the newest event time per partition."""
        if not decoded.cols:
            return {}
        cols = np.asarray(decoded.cols, dtype=np.int64)
        ts_ns = np.asarray(decoded.ts_ns, dtype=np.int64)
        rec_ms = np.asarray(decoded.record_ms, dtype=np.int64)
        owner = np.asarray(decoded.owner, dtype=np.int64)
        values = np.asarray(decoded.values, dtype=np.float64)
        result = self.assembler.add(cols, ts_ns, values, rec_ms, now_ns=now_ns)
        status = result.status
        future = np.unique(owner[status == FUTURE])
        for index in future.tolist():
            detail = (
                f"timestamp more than {self.config.max_clock_skew} after this machine's clock; "
                "fix the sensor's clock"
            )
            self._dead_letter(outbox, decoded.messages[index], FUTURE_TIMESTAMP, detail, counts)
        counts["valid"] += len(decoded.messages) - len(future)
        counts["readings"] += int(np.count_nonzero(status != FUTURE))
        counts["duplicate"] += int(np.count_nonzero(status == DUPLICATE))
        counts["conflict"] += int(np.count_nonzero(status == CONFLICT))
        counts["late"] += int(np.count_nonzero(status == LATE))
        tick_ms = self.asm_config.tick_ns(result.ticks) // 1_000_000
        for rows, chosen in (
            (batch.readings, (status == NEW) | (status == CONFLICT)),
            (batch.corrections, status == LATE),
        ):
            if chosen.any():
                sensors = self.store_ids[cols[chosen]]
                rows.append(
                    ReadingRows(sensors, tick_ms[chosen], result.values[chosen], rec_ms[chosen])
                )
        newest: dict[Any, int] = {}
        partitions = list(dict.fromkeys(decoded.partition))
        slot = {tp: i for i, tp in enumerate(partitions)}
        reading_part = np.asarray([slot[tp] for tp in decoded.partition], np.int64)[owner]  # [n]
        accepted = status != FUTURE
        for i, tp in enumerate(partitions):
            mine = accepted & (reading_part == i)
            if mine.any():
                newest[tp] = int(ts_ns[mine].max())
        return newest

    def _forecast_run(
        self, run: ClosedRun, outbox: Outbox, batch: Batch, report: BatchReport
    ) -> None:
        """Forecast every tick of ``run`` with every model (one ``predict_batch`` each),
        then per tick: score, publish, store, alert."""
        predictions: dict[str, tuple[np.ndarray, np.ndarray | None, np.ndarray | None]] = {}
        for m in self.models:
            panel = run.panel if m.cols is None else run.panel.select(m.model.sensor_ids)
            try:
                with self._timed(f"predict.{m.name}"):
                    fc = m.model.predict_batch(panel, run.origins)
            except Exception as exc:  # one broken model must not stop the others
                report.counts[f"model_errors.{m.name}"] += 1
                log.error(
                    "model_failed",
                    extra={"fields": {"model": m.name, "error": f"{type(exc).__name__}: {exc}"}},
                )
                continue
            predictions[m.name] = (fc.mean, fc.lower, fc.upper)
        freq = self.config.tick
        for k, tick in enumerate(run.ticks):
            with self._timed("score"):
                self._score(tick, batch)
            issued_ms = int(tick.ts.value // 1_000_000)
            issued: dict[str, Forecast] = {}
            for m in self.models:
                if m.name not in predictions:
                    continue
                all_mean, all_lower, all_upper = predictions[m.name]
                mean = all_mean[k]
                lower = None if all_lower is None else all_lower[k]
                upper = None if all_upper is None else all_upper[k]
                with self._timed("encode"):
                    encoded = m.encoder.encode_rows(m.name, tick.ts, freq, mean, lower, upper)
                with self._timed("send"):
                    outbox.send_many(self.settings.topic_forecasts, encoded.messages)
                batch.forecasts.append(
                    ForecastRows(
                        m.name,
                        issued_ms,
                        m.store_sensors[encoded.columns],
                        encoded.yhat,
                        encoded.lo,
                        encoded.hi,
                    )
                )
                report.counts["forecasts_published"] += len(encoded.messages)
                report.counts["forecasts_nonfinite"] += len(encoded.skipped)
                self.scorer.record(m.name, tick.tick, mean, lower, upper)
                if self.alert_hook is not None:
                    targets = pd.date_range(tick.ts + freq, periods=len(mean), freq=freq)
                    issued[m.name] = Forecast(
                        m.name, m.model.sensor_ids, tick.ts, targets, mean, lower, upper
                    )
            if self.alert_hook is not None:
                with self._timed("alerts"):
                    self._alerts(run, tick, issued, outbox, batch, report)
            report.ticks.append(tick)
            report.counts["ticks_closed"] += 1
            report.counts[f"ticks_closed.{tick.reason}"] += 1

    def _score(self, tick: ClosedTick, batch: Batch) -> None:
        target_ms = int(tick.ts.value // 1_000_000)
        for m in self.models:
            values = tick.values if m.cols is None else tick.values[m.cols]
            mask = tick.mask if m.cols is None else tick.mask[m.cols]
            errors = self.scorer.score(m.name, tick.tick, values, mask)
            if errors is not None:
                batch.accuracy.append(
                    AccuracyRows(
                        m.name,
                        steps=errors.steps,
                        targets_ms=np.full(len(errors.steps), target_ms, np.int64),
                        n=errors.n,
                        sum_abs=errors.sum_abs,
                        sum_sq=errors.sum_sq,
                    )
                )

    def _alerts(
        self,
        run: ClosedRun,
        tick: ClosedTick,
        issued: dict[str, Forecast],
        outbox: Outbox,
        batch: Batch,
        report: BatchReport,
    ) -> None:
        assert self.alert_hook is not None
        start = max(0, tick.position - self.window + 1)
        context = TickContext(
            tick=tick,
            window=run.panel.slice(start, tick.position + 1),
            issued=issued,
            targeted={m.name: self.scorer.targeted(m.name, tick.tick) for m in self.models},
        )
        for item in self.alert_hook(context):
            alert, group = (
                (item.message, item.group_key) if isinstance(item, AlertEvent) else (item, None)
            )
            try:
                payload = encode_alert(alert)
            except SchemaError as exc:  # a detector bug must not stop the forecasts
                report.counts["alerts_invalid"] += 1
                log.error("alert_invalid", extra={"fields": {"error": str(exc)}})
                continue
            headers = [(GROUP_HEADER, group.encode())] if group else None
            outbox.send(self.settings.topic_alerts, alert.sensor.encode(), payload, headers)
            ts_ms = (alert.ts - _EPOCH) // timedelta(milliseconds=1)
            batch.alerts.append(
                AlertRow(
                    alert.alert_id, alert.status, alert.dedup_key, alert.severity, alert.sensor,
                    ts_ms, alert.detector, alert.score, payload.decode(), group,
                )
            )  # fmt: skip
            report.counts["alerts_published"] += 1
            report.counts[f"alerts_published.{alert.status}"] += 1

    def finish(self, report: BatchReport, batch: Batch, *, flushed_at_ms: int) -> None:
        """After the flush: the ticks' latencies, then the batch into the store (atomic)."""
        for tick in report.ticks:
            latency = None
            if tick.last_record_ms >= 0:
                latency = float(flushed_at_ms - tick.last_record_ms)
                report.latencies_ms.append(latency)
                self.latencies.append(latency)
            ts_ms = int(tick.ts.value // 1_000_000)
            batch.ticks.append(TickRow(ts_ms, tick.observed, tick.reason, flushed_at_ms, latency))
        batch.counters.update(report.counts)
        self.store.write(batch)
        self.counters.update(report.counts)
        self.partitions.stored(batch.offsets)

    def handle(
        self,
        records: Mapping[TopicPartition, Sequence[ConsumerRecord]],
        outbox: Outbox,
        consumer: KafkaConsumer,
    ) -> BatchReport:
        """One poll batch end to end: process, flush, store, commit.

        Raises
        ------
        PublishError
            When the broker did not take the batch's output: nothing was stored or
            committed, the caller recovers (:meth:`recover`).
        """
        report, batch = self.process(records, outbox, highwater=_highwater(consumer))
        with self._timed("flush"):
            outbox.flush(self.config.flush_timeout_s)
        with self._timed("store"):
            self.finish(report, batch, flushed_at_ms=time.time_ns() // 1_000_000)
        for tp, part in records.items():
            if part:
                self.partitions.pending_commit[tp] = part[-1].offset + 1
        with self._timed("commit"):
            self.commit(consumer)
        return report

    def commit(self, consumer: KafkaConsumer) -> None:
        """Commit the stored-but-uncommitted offsets (a failure is retried next batch)."""
        pending = self.partitions.pending_commit
        if not pending:
            return
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata

        offsets = {tp: OffsetAndMetadata(o, "", -1) for tp, o in pending.items()}
        try:
            consumer.commit(offsets)
        except KafkaError as exc:
            # The store already holds the batch: a redelivery is skipped, nothing is lost.
            log.warning("commit_failed", extra={"fields": {"error": str(exc)}})
            return
        pending.clear()

    # ------------------------------------------------------------------ Kafka
    def run(
        self, *, stop: threading.Event | None = None, handle_signals: bool = True
    ) -> dict[str, int]:
        """Consume until ``stop`` is set (or SIGTERM/SIGINT arrives); returns the counters.

        Raises
        ------
        pipeline.kafka.clients.KafkaUnavailable
            When no broker answers at start-up.
        """
        from kafka.errors import KafkaError

        from pipeline.kafka.clients import ensure_topics, make_consumer

        stop = stop or threading.Event()
        previous = _install_signal_handlers(stop) if handle_signals else {}
        consumer = None
        outbox = None
        gc_hook = None
        try:
            self.warm_up()
            if self.config.tune_gc:
                _tune_gc()
            gc_hook = self._track_gc()  # after the start-up collection: pauses while serving
            ensure_topics(self.settings)
            consumer = make_consumer(
                self.settings,
                group_id=self.settings.consumer_group,
                max_poll_records=self.config.poll_records,
            )
            consumer.subscribe(
                [self.settings.topic_readings],
                listener=RebalanceListener(self.partitions, consumer),
            )
            outbox = self._new_outbox()
            self._log_started()
            last_stats = last_check = time.monotonic()
            while not stop.is_set():
                try:
                    records = consumer.poll(timeout_ms=self.config.poll_timeout_ms)
                except KafkaError as exc:  # the client reconnects by itself: wait and retry
                    log.warning("poll_failed", extra={"fields": {"error": str(exc)}})
                    stop.wait(1.0)
                    continue
                if self.partitions.changed and not self._adopt(consumer, records):
                    stop.wait(1.0)
                    continue
                now = time.monotonic()
                if records:
                    try:
                        self.handle(records, outbox, consumer)
                    except PublishError as exc:
                        log.error("publish_failed", extra={"fields": {"error": str(exc)}})
                        outbox = self.recover(consumer, outbox, stop)
                elif now - last_check >= self.config.topic_check_every_s:
                    last_check = now
                    self._check_topics()
                if now - last_stats >= self.config.stats_every_s:
                    last_stats = now
                    self._log_stats()
        finally:
            if gc_hook is not None:
                gc.callbacks.remove(gc_hook)
            if consumer is not None:
                self.commit(consumer)
                consumer.close()
            if outbox is not None:
                outbox.close(self.config.flush_timeout_s)
            _restore_signal_handlers(previous)
            self._log_stats()
            log.info("stopped", extra={"fields": {"counters": dict(self.counters)}})
            self.store.close()
        return dict(self.counters)

    def _track_gc(self) -> Callable[[str, dict[str, int]], None]:
        """Count the garbage collector's pauses as stages ``gc.gen0``.. (where ticks wait)."""
        started = [0.0]

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                started[0] = time.perf_counter()
            else:
                stage = f"gc.gen{info.get('generation', 0)}"
                self.stage_s[stage] = self.stage_s.get(stage, 0.0) + (
                    time.perf_counter() - started[0]
                )

        gc.callbacks.append(on_gc)
        return on_gc

    def warm_up(self) -> None:
        """One forecast per model on an empty window before the first tick, so the first
        tick does not pay one-time costs (lazy imports, first torch calls, caches)."""
        if self.config.torch_threads is not None and "torch" in sys.modules:
            import torch

            torch.set_num_threads(self.config.torch_threads)
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

    def _adopt(
        self,
        consumer: KafkaConsumer,
        records: Mapping[TopicPartition, Sequence[ConsumerRecord]],
    ) -> bool:
        """Adopt a new assignment before processing ``records``; False (and the records
        handed back to the consumer) when the broker did not answer."""
        from kafka.errors import KafkaError

        from pipeline.kafka.clients import KafkaUnavailable

        try:
            self.partitions.adopt(
                consumer, self._describe_topic, self.store.offsets, time.monotonic()
            )
            return True
        except (KafkaError, KafkaUnavailable) as exc:
            log.warning("assignment_deferred", extra={"fields": {"error": str(exc)}})
            for tp, part in records.items():  # not processed: read them again next time
                if part and tp in consumer.assignment():
                    consumer.seek(tp, part[0].offset)
            return False

    def _new_outbox(self) -> Outbox:
        from pipeline.kafka.clients import make_producer

        return Outbox(make_producer(self.settings, **_PRODUCER), bulk=self.config.bulk_publish)

    def recover(self, consumer: KafkaConsumer, outbox: Outbox, stop: threading.Event) -> Outbox:
        """Forget a batch the broker did not take: state from the store, the consumer back
        to the stored offsets, missing topics re-created, a new producer (the old one may
        hold a dead broker's producer id). Returns the new outbox."""
        from kafka.errors import KafkaError

        from pipeline.kafka.clients import KafkaUnavailable

        outbox.close(1.0)
        self.partitions.pending_commit.clear()
        self._restore()
        for tp in consumer.assignment():
            offset = self.partitions.next_offset.get(self.partitions.key(tp))
            if offset is None:  # nothing of it stored yet: where the group left it
                try:
                    offset = consumer.committed(tp, timeout_ms=5000)
                except KafkaError:  # broker away: replay it all (at least once)
                    offset = None
            if offset is not None:
                consumer.seek(tp, offset)
            else:
                consumer.seek_to_beginning(tp)
        self.store.write(Batch(counters={"recoveries": 1}))
        self.counters["recoveries"] += 1
        while True:
            self._check_topics()
            try:
                return self._new_outbox()
            except KafkaUnavailable as exc:
                log.warning("broker_unreachable", extra={"fields": {"error": str(exc)}})
                if stop.wait(1.0):
                    raise

    def _describe_topic(self, topic: str) -> str:
        """``topic@<topic id>``: a re-created topic (fresh broker) gets another key.

        Raises ``KafkaError`` or ``KafkaUnavailable`` when the broker does not answer.
        """
        from pipeline.kafka.clients import make_admin

        admin = make_admin(self.settings)
        try:
            described = admin.describe_topics([topic])
        finally:
            admin.close()
        topic_id = described[0].get("topic_id") if described else None
        return f"{topic}@{topic_id}" if topic_id else topic

    def _check_topics(self) -> None:
        from kafka.errors import KafkaError

        from pipeline.kafka.clients import KafkaUnavailable, ensure_topics

        try:
            created = ensure_topics(self.settings)
        except (KafkaError, KafkaUnavailable, OSError) as exc:
            log.warning("broker_unreachable", extra={"fields": {"error": str(exc)}})
            return
        if created:
            self.store.write(Batch(counters={"topics_recreated": len(created)}))
            self.counters["topics_recreated"] += len(created)
            log.warning("topics_recreated", extra={"fields": {"topics": created}})

    def _log_started(self) -> None:
        fields = {
            "bootstrap": self.settings.bootstrap_servers,
            "topic": self.settings.topic_readings,
            "group": self.settings.consumer_group,
            "models": [m.name for m in self.models],
            "sensors": len(self.sensor_ids),
            "window": self.window,
            "tick": str(self.config.tick),
            "store": str(self.settings.store_path),
        }
        if isinstance(self.alert_hook, RestorableAlertHook):
            fields["alerts"] = self.alert_hook.describe()
        elif self.alert_hook is not None:
            fields["alerts"] = "custom hook"
        log.info("started", extra={"fields": fields})

    def _log_stats(self) -> None:
        fields: dict[str, Any] = {k: self.counters.get(k, 0) for k in _STATS}
        for name, value in percentiles(self.latencies).items():
            fields[f"latency_{name}_ms"] = None if np.isnan(value) else round(value, 1)
        fields["open_ticks"] = len(self.assembler.open_ticks)
        ticks = self.counters.get("ticks_closed", 0) - self._logged_ticks
        if ticks > 0:  # where the time of a tick went since the last stats line
            fields["ms_per_tick"] = {
                k: round(1000 * (v - self._logged_stage_s.get(k, 0.0)) / ticks, 2)
                for k, v in sorted(self.stage_s.items())
            }
        self._logged_stage_s = dict(self.stage_s)
        self._logged_ticks = self.counters.get("ticks_closed", 0)
        log.info("stats", extra={"fields": fields})


def _tune_gc() -> None:
    """Collect once, freeze the survivors (the long-lived heap) and raise the young
    generation's threshold (see ``ServiceConfig.tune_gc``)."""
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, second, third)


def _highwater(consumer: KafkaConsumer) -> Callable[[TopicPartition], int | None]:
    """The consumer's last known high watermark of a partition (None when unknown)."""

    def highwater(tp: TopicPartition) -> int | None:
        try:
            return consumer.highwater(tp)
        except Exception:  # no longer assigned (a rebalance in between): unknown
            return None

    return highwater


def _int_or_none(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


def _iso(config: AssemblerConfig, tick: int | None) -> str | None:
    if tick is None:
        return None
    return pd.Timestamp(int(config.tick_ns(tick)), tz="UTC").isoformat()


def _install_signal_handlers(stop: threading.Event) -> dict[int, Any]:
    """SIGTERM/SIGINT -> finish the batch and stop (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def request_stop(signum: int, frame: object) -> None:
        log.info("signal", extra={"fields": {"signal": signal.Signals(signum).name}})
        stop.set()

    return {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}


def _restore_signal_handlers(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def serve(
    settings: Settings,
    config: ServiceConfig,
    *,
    model_dir: Path | None = None,
    stop: threading.Event | None = None,
    alert_hook: AlertHook | None = None,
    alerting: AlertingConfig | None = None,
) -> dict[str, int]:
    """Load the bundles and run the service until stopped (``roadcast serve``).

    Parameters
    ----------
    settings : connection, topics, consumer group, store path, default model dir.
    config : the service's behaviour.
    model_dir : bundles to load (default ``settings.model_dir``).
    stop : set it to stop the service from another thread.
    alert_hook : your own anomaly detectors, called per closed tick.
    alerting : the built-in detectors and alert rules (:mod:`pipeline.alerts.detection`; what
        ``roadcast serve`` uses, on by default there); None: none of them.
    """
    from pipeline.model_dir import load_bundles, union_sensors

    if alert_hook is not None and alerting is not None and alerting.enabled:
        raise ValueError("pass either alert_hook or alerting, not both")
    stop = stop or threading.Event()
    # Before the slow part (loading torch and the bundles): a SIGTERM during start-up
    # must stop the service cleanly too, not kill it.
    previous = _install_signal_handlers(stop)
    try:
        directory = model_dir or settings.model_dir
        models = load_bundles(directory, only=config.only or None)
        if alerting is not None:
            from pipeline.alerts.detection import build_alerting

            alert_hook = build_alerting(
                directory, models, union_sensors(dict(models)), config.tick, alerting
            )
        service = ForecastService(settings, config, models, alert_hook=alert_hook)
        return service.run(stop=stop, handle_signals=False)
    finally:
        _restore_signal_handlers(previous)
