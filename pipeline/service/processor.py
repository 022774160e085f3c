"""The forecasting service's per-batch core, free of Kafka clients.

:class:`PollProcessor` turns one poll batch (records per partition) into forecasts,
alerts and dead letters sent to an :class:`pipeline.kafka.outbox.Outbox`, and a
:class:`pipeline.service.store_rows.Batch` for the store. Its state (window, open ticks,
recent forecasts, the alert hook's state), and how it is rebuilt from the store, is
:class:`pipeline.service.state.ServiceState`'s. The data flow and the delivery
guarantees are described in ``docs/service.md``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from models.forecasters.base import Forecast
from models.forecasters.level import follow_level
from pipeline.kafka.outbox import Outbox
from pipeline.service.assembler import (
    CONFLICT,
    DUPLICATE,
    FUTURE,
    LATE,
    NEW,
    ClosedRun,
    ClosedTick,
)
from pipeline.service.decoding import FUTURE_TIMESTAMP, DecodedReadings
from pipeline.service.hooks import TickContext
from pipeline.service.liveness import DOWN_KEY, write_down_state
from pipeline.service.state import LEVEL_KEY, ServiceState, half_life_text
from pipeline.service.store_rows import (
    AccuracyRows,
    Batch,
    ReadingRows,
    TickRow,
)

if TYPE_CHECKING:
    from kafka import TopicPartition
    from kafka.consumer.fetcher import ConsumerRecord

log = logging.getLogger("roadcast.service")

# A Kafka record timestamp (set by the producer) older than this before the service read
# the record, or after it, is not believed: the read time stands in for it (latency,
# ``readings.arrived_ms``, the grace's start).
MAX_RECORD_AGE_MS = 30 * 24 * 3600 * 1000
# A batch of at least CLOCK_SUSPECT_MIN_READINGS readings of which at least half are more
# than ``--max-clock-skew`` ahead of this machine's clock (``future_timestamp``) suggests
# this machine's clock is behind: warned at most once per CLOCK_WARN_EVERY_S of
# processing time, every such batch counted (``clock_suspect_batches``).
CLOCK_SUSPECT_MIN_READINGS = 10
CLOCK_WARN_EVERY_S = 10 * 60.0


@dataclass
class PollReport:
    """What one poll batch did (for logs, tests and benchmarks)."""

    records: int = 0
    ticks: list[ClosedTick] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)


class PollProcessor(ServiceState):
    """The service's per-batch logic on :class:`ServiceState` (no Kafka clients: records
    in, an outbox and a store batch out); :class:`pipeline.service.loop.ForecastService`
    drives it from a consumer. Parameters: as :class:`ServiceState`.
    """

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
            now = self.clock()
            spans = self._assemble(decoded, outbox, batch, report.counts, now_ns, now)
            for tp, records in batches.items():
                if records:
                    oldest, latest = spans.get(tp, (None, None))
                    self.partitions.observe(tp, records[-1].offset + 1, latest, now, oldest)
            known = highwater or (lambda tp: None)
            limit = self.partitions.limit_ns(now, known)
            runs = self.assembler.advance(limit, now_s=now, backlog=self.partitions.backlog(known))
        for run in runs:
            self._forecast_run(run, outbox, batch, report)
        self._sensor_changes(outbox, batch, report.counts)
        batch.state.update(
            tick_ms=self.freq_ms,
            tick_offset_ms=self.offset_ms,
            first_tick=self.assembler.first_tick,
            last_closed=self.assembler.last_closed,
            max_ts_ns=self.assembler.max_ts_ns,
            watermark_ns=self.assembler.watermark_ns,
        )
        batch.state[LEVEL_KEY] = half_life_text(self.config.level_half_life)
        return report, batch

    def _assemble(
        self,
        decoded: DecodedReadings,
        outbox: Outbox,
        batch: Batch,
        counts: Counter[str],
        now_ns: int | None,
        now_s: float,
    ) -> dict[Any, tuple[int, int]]:
        """Add the readings to the assembler; returns the oldest and newest event time of
        the accepted readings that are not late, per partition."""
        if not decoded.cols:  # none, or only batch-form messages of no sensor (valid)
            counts["valid"] += len(decoded.messages)
            return {}
        cols = np.asarray(decoded.cols, dtype=np.int64)
        ts_ns = np.asarray(decoded.ts_ns, dtype=np.int64)
        owner = np.asarray(decoded.owner, dtype=np.int64)
        values = np.asarray(decoded.values, dtype=np.float64)
        now_ns = time.time_ns() if now_ns is None else now_ns
        rec_ms = plausible_record_ms(np.asarray(decoded.record_ms, dtype=np.int64), now_ns)
        result = self.assembler.add(cols, ts_ns, values, rec_ms, now_ns=now_ns, now_s=now_s)
        status = result.status
        skew = self.config.max_clock_skew
        clock = np.zeros(len(ts_ns), bool) if skew is None else ts_ns > now_ns + skew.value
        future = np.unique(owner[status == FUTURE])
        future_set = set(future.tolist())
        clock_owners = set(owner[(status == FUTURE) & clock].tolist())
        machine = pd.Timestamp(now_ns, tz="UTC").isoformat(timespec="seconds")
        for index in future.tolist():
            detail = (
                f"timestamp more than {skew} after this machine's clock ({machine}); fix the "
                "sensor's clock, or this machine's if it is behind"
                if index in clock_owners
                else f"timestamp more than {self.assembler.max_ticks_ahead} ticks ahead of the "
                "time most sensors have reached (or past the ticks the service can hold "
                "open); fix the sensor's clock"
            )
            self.decoder.dead_letter(
                outbox, decoded.messages[index], FUTURE_TIMESTAMP, detail, counts
            )
        partial = {i: p for i, p in decoded.partial.items() if i not in future_set}
        for index, (reason, detail) in partial.items():
            self.decoder.dead_letter(outbox, decoded.messages[index], reason, detail, counts)
        self._suspect_clock(ts_ns, (status == FUTURE) & clock, now_ns, now_s, counts)
        counts["valid"] += len(decoded.messages) - len(future) - len(partial)
        counts["readings"] += int(np.count_nonzero(status != FUTURE))
        counts["duplicate"] += int(np.count_nonzero(status == DUPLICATE))
        conflicts = status == CONFLICT
        counts["conflict"] += int(np.count_nonzero(conflicts))
        if conflicts.any() and not self._conflict_warned:
            self._warn_conflict(int(cols[conflicts][0]), int(ts_ns[conflicts][0]))
        kept = status != FUTURE
        if (finer := self.cadence.readings(cols[kept], ts_ns[kept])) is not None:
            log.warning("tick_mismatch", extra={"fields": finer})
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
        spans: dict[Any, tuple[int, int]] = {}
        partitions = list(dict.fromkeys(decoded.partition))
        slot = {tp: i for i, tp in enumerate(partitions)}
        reading_part = np.asarray([slot[tp] for tp in decoded.partition], np.int64)[owner]  # [n]
        timely = (status != FUTURE) & (status != LATE)  # a late reading says nothing of now
        for i, tp in enumerate(partitions):
            mine = timely & (reading_part == i)
            if mine.any():
                spans[tp] = (int(ts_ns[mine].min()), int(ts_ns[mine].max()))
        return spans

    _conflict_warned = False
    _clock_warned_s: float | None = None

    def _suspect_clock(
        self,
        ts_ns: np.ndarray,
        ahead: np.ndarray,
        now_ns: int,
        now_s: float,
        counts: Counter[str],
    ) -> None:
        """Count, and warn at most once per :data:`CLOCK_WARN_EVERY_S`, a batch in which
        most readings (``ts_ns``) were refused as ahead of this machine's clock (``ahead``,
        bool ``[n]``): this machine's clock may be behind rather than every sensor's ahead.
        Readiness is left alone: the sensors' clocks may be the ones at fault."""
        refused = int(np.count_nonzero(ahead))
        if len(ts_ns) < CLOCK_SUSPECT_MIN_READINGS or 2 * refused < len(ts_ns):
            return
        counts["clock_suspect_batches"] += 1
        last = self._clock_warned_s
        if last is not None and now_s - last < CLOCK_WARN_EVERY_S:
            return
        self._clock_warned_s = now_s
        median_ns = int(np.median(ts_ns))
        fields = {
            "machine_clock": pd.Timestamp(now_ns, tz="UTC").isoformat(timespec="seconds"),
            "readings_median": pd.Timestamp(median_ns, tz="UTC").isoformat(timespec="seconds"),
            "refused": refused,
            "readings": len(ts_ns),
            "max_clock_skew": str(self.config.max_clock_skew),
            "hint": "most readings of a batch are ahead of this machine's clock by more than "
            "--max-clock-skew (dead-lettered as future_timestamp): check this machine's "
            "clock (timedatectl, NTP) first, then the sensors'; warned at most every "
            f"{CLOCK_WARN_EVERY_S / 60:.0f} minutes",
        }
        log.warning("clock_behind_suspected", extra={"fields": fields})

    def _warn_conflict(self, col: int, ts_ns: int) -> None:
        """Say once that a sensor sent another value for a tick it had a reading of (the
        later one replaces it): data finer than ``--tick``, or a producer re-sending
        corrected values; counted as ``conflict`` from then on."""
        self._conflict_warned = True
        fields = {
            "sensor": self.sensor_ids[col],
            "tick": self.asm_config.tick_time(
                int(self.asm_config.tick_of(np.array([ts_ns]))[0])
            ).isoformat(),
            "tick_s": self.config.tick.total_seconds(),
            "hint": "a second value for one sensor and tick replaces the first; if the sensors "
            "report more often than the tick (--tick, the models' step), serve models trained "
            "on their step or aggregate the readings before producing them; further ones are "
            "only counted",
        }
        log.warning("reading_conflict", extra={"fields": fields})

    def grace_due(self, highwater: Callable[[TopicPartition], int | None]) -> bool:
        """Whether the earliest open tick may close on grace now (no backlog): the loop
        then processes an empty batch rather than wait for the next reading."""
        deadline = self.assembler.grace_deadline()
        return (
            deadline is not None
            and self.clock() >= deadline
            and not self.partitions.backlog(highwater)
        )

    def poll_timeout_ms(self) -> int:
        """How long the next poll may wait: ``poll_timeout_ms``, or less when a tick's
        grace ends sooner."""
        wait = self.config.poll_timeout_ms
        deadline = self.assembler.grace_deadline()
        if deadline is not None:
            left = deadline - self.clock()
            if left > 0:
                wait = min(wait, int(np.ceil(left * 1000)))
        return wait

    def _sensor_changes(self, outbox: Outbox, batch: Batch, counts: Counter[str]) -> None:
        """Publish and store an alert for every sensor that went down or came back, and
        the down sensors in the store's state."""
        changes = self.assembler.take_changes()
        self.publisher.sensor_changes(
            outbox, batch, counts, changes, self.sensor_ids, self.asm_config
        )
        if changes:
            down = self.assembler.liveness.down_since()
            batch.state[DOWN_KEY] = write_down_state(down, self.sensor_ids, self.asm_config)

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
            issued: dict[str, Forecast] = {}
            for m in self.models:
                if m.name not in predictions:
                    continue
                all_mean, all_lower, all_upper = predictions[m.name]
                mean = all_mean[k]
                lower = None if all_lower is None else all_lower[k]
                upper = None if all_upper is None else all_upper[k]
                if (level := self.levels.get(m.name)) is not None:
                    mean, lower, upper = follow_level(level, m.model, tick.tick, mean, lower, upper)
                self.publisher.forecast(
                    outbox, batch, report.counts, m.name, m.encoder, m.store_sensors,
                    tick.ts, freq, mean, lower, upper,
                )  # fmt: skip
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
            if (coarser := self.cadence.closed(tick.tick)) is not None:
                log.warning("tick_mismatch", extra={"fields": coarser})
            report.counts["ticks_closed"] += 1
            report.counts[f"ticks_closed.{tick.reason}"] += 1

    def _score(self, tick: ClosedTick, batch: Batch) -> None:
        target_ms = int(tick.ts.value // 1_000_000)
        for m in self.models:
            values = tick.values if m.cols is None else tick.values[m.cols]
            mask = tick.mask if m.cols is None else tick.mask[m.cols]
            if (level := self.levels.get(m.name)) is not None:
                level.observe(tick.tick, values, mask)
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
        try:
            items = list(self.alert_hook(context))
        except Exception as exc:  # like a broken model: the forecasts go on without it
            report.counts["alert_hook_errors"] += 1
            error = f"{type(exc).__name__}: {exc}"
            log.error("alert_hook_failed", extra={"fields": {"error": error}})
            return
        self.publisher.alerts(outbox, batch, report.counts, items)

    def finish(self, report: PollReport, batch: Batch, *, flushed_at_ms: int) -> None:
        """After the flush: the ticks' latencies, then the batch into the store (atomic)."""
        for tick in report.ticks:
            latency = None
            if tick.last_record_ms >= 0:
                latency = float(max(0, flushed_at_ms - tick.last_record_ms))
                report.latencies_ms.append(latency)
                self.latencies.append(latency)
            ts_ms = int(tick.ts.value // 1_000_000)
            batch.ticks.append(TickRow(ts_ms, tick.observed, tick.reason, flushed_at_ms, latency))
        batch.counters.update(report.counts)
        batch.versions.extend(self.version_rows)
        self.store.write(batch)
        self.version_rows.clear()
        self.counters.update(report.counts)
        self.partitions.stored(batch.offsets)
        if self.metrics is not None:
            with self._timed("metrics"):
                self.metrics.record_batch(
                    report.counts,
                    batch,
                    sensors_down=int(self.assembler.down.sum()),
                    open_ticks=len(self.assembler.open_ticks),
                )


def plausible_record_ms(record_ms: np.ndarray, read_ns: int) -> np.ndarray:
    """int64 ``[n]`` Kafka record timestamps (ms), each one outside [read time -
    :data:`MAX_RECORD_AGE_MS`, read time] (a producer's clock reset or far ahead)
    replaced by the read time; -1 (unknown) is kept."""
    read_ms = read_ns // 1_000_000
    bad = (record_ms >= 0) & ((record_ms > read_ms) | (record_ms < read_ms - MAX_RECORD_AGE_MS))
    return np.where(bad, read_ms, record_ms)
