"""The forecasting service's per-batch core, free of Kafka clients.

:class:`PollProcessor` turns one poll batch (records per partition) into forecasts,
alerts and dead letters sent to an :class:`pipeline.kafka.outbox.Outbox`, and a
:class:`pipeline.service.store_rows.Batch` for the store; it rebuilds its state (window,
open ticks, recent forecasts, the alert hook's state) from the store when it starts and
when the loop (:mod:`pipeline.service.loop`) recovers. The data flow and the delivery
guarantees are described in ``docs/service.md``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from models.forecasters.base import Forecast, Forecaster
from models.panel import SensorPanel
from pipeline.alerts.lifecycle import AlertEvent
from pipeline.kafka.forecast_wire import ForecastEncoder
from pipeline.kafka.outbox import Outbox
from pipeline.kafka.schema import SchemaError, encode_alert
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
from pipeline.service.config import ServiceConfig
from pipeline.service.decoding import FUTURE_TIMESTAMP, DecodedReadings, ReadingDecoder
from pipeline.service.hooks import AlertHook, AlertRestore, RestorableAlertHook, TickContext
from pipeline.service.live_accuracy import LiveScorer
from pipeline.service.partitions import PartitionTracker
from pipeline.service.store import Store
from pipeline.service.store_rows import (
    AccuracyRows,
    AlertRow,
    Batch,
    ForecastRows,
    ReadingRows,
    TickRow,
)
from pipeline.settings import Settings

if TYPE_CHECKING:
    from kafka import TopicPartition
    from kafka.consumer.fetcher import ConsumerRecord

log = logging.getLogger("roadcast.service")

# The Kafka header of an alert record that names its incident (pipeline.alerts.hook).
GROUP_HEADER = "group"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class _Model:
    name: str
    model: Forecaster
    cols: np.ndarray | None  # assembler column of each model sensor; None: same order
    store_sensors: np.ndarray  # int64 [model node]
    encoder: ForecastEncoder


@dataclass
class PollReport:
    """What one poll batch did (for logs, tests and benchmarks)."""

    records: int = 0
    ticks: list[ClosedTick] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)


class PollProcessor:
    """The service's state and its per-batch logic (no Kafka clients: records in,
    an outbox and a store batch out); :class:`pipeline.service.loop.ForecastService`
    drives it from a consumer.

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
        self.partitions = PartitionTracker(idle_s=config.partition_idle_s)
        self.decoder = ReadingDecoder(self.column, settings.topic_dlq)
        self.restore()

    # ----------------------------------------------------------------- state
    def restore(self) -> None:
        """Rebuild the assembler, the live scorer and a restorable alert hook's state
        from the store (no cold start)."""
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
    ) -> tuple[PollReport, Batch]:
        """Validate, assemble, forecast and publish one poll batch (not flushed, not stored).

        Parameters
        ----------
        batches : records per partition, as ``KafkaConsumer.poll`` returns them.
        outbox : where forecasts, alerts and dead letters are sent.
        highwater : the consumer's last known high watermark of a partition (a partition
            with a backlog never counts as idle); None: unknown for every partition.
        now_ns : wall clock for the future-timestamp rule (tests).

        Returns the report and the store batch; :meth:`finish` stores it after the flush.
        """
        report = PollReport(records=sum(len(r) for r in batches.values()))
        batch = Batch()
        outbox.refresh()
        decoded = DecodedReadings()
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
                    self.decoder.decode(tp, record, decoded, outbox, report.counts)
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

    def _assemble(
        self,
        decoded: DecodedReadings,
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
            self.decoder.dead_letter(
                outbox, decoded.messages[index], FUTURE_TIMESTAMP, detail, counts
            )
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
        self, run: ClosedRun, outbox: Outbox, batch: Batch, report: PollReport
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
        report: PollReport,
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

    def finish(self, report: PollReport, batch: Batch, *, flushed_at_ms: int) -> None:
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
