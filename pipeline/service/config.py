"""How the forecasting service runs: :class:`ServiceConfig` (``roadcast serve``'s options).

Connection, topics and the store path come from :class:`pipeline.settings.Settings`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from models.forecasters.level import HALF_LIFE_H

_FIVE_MIN = pd.Timedelta("5min")
_TWO_MIN = pd.Timedelta("2min")
_ONE_HOUR = pd.Timedelta("1h")
_GRACE = pd.Timedelta("2s")
_ZERO = pd.Timedelta(0)
_RETAIN = pd.Timedelta(days=14)  # docs/decisions.md, "Store retention"
_LEVEL = pd.Timedelta(hours=HALF_LIFE_H)
# The longest tick, lateness, skew or grace: event times are int64 nanoseconds (years
# 1677-2262) and readings may lie anywhere in 1700-2249, so a watermark (event time minus
# the lateness) or a forecast's targets (a tick plus its horizon) further out would
# overflow the clock.
MAX_DURATION = pd.Timedelta(days=3650)


@dataclass(frozen=True)
class ServiceConfig:
    """How the service runs (connection, topics and store path come from ``Settings``).

    Attributes
    ----------
    tick : the grid step of the data (the models' time step).
    tick_offset : where the grid lies: tick ``k`` is the instant 1970-01-01T00:00Z +
        ``tick_offset`` + ``k * tick`` (the models' ``offset_s``: 30min for hourly data
        stamped at half past the hour in UTC). In [0, tick), whole milliseconds.
    allowed_lateness : how long after the newest event time a reading may arrive
        and still join its tick (see :mod:`pipeline.service.assembler`).
    max_clock_skew : readings stamped further than this after the wall clock are
        dead-lettered (``future_timestamp``); positive, or None to disable the check.
    grace : a tick closes this long (processing time) after its first reading once more
        than half of the up sensors have reported it, unless a partition has a backlog
        (see :mod:`pipeline.service.assembler`); None: ticks wait for every up sensor or
        the watermark.
    down_after : a sensor without a reading in this many closed ticks in a row is down:
        it holds no tick open and an alert fires until it reports again; None: never.
    only : load only these model names from the model directory (all when empty).
    poll_records : at most this many records per poll batch.
    poll_timeout_ms : how long one poll waits for records.
    flush_timeout_s : how long the broker may take to acknowledge a batch's output.
    durable : the store's ``synchronous=FULL`` (see :class:`pipeline.service.store.Store`).
    stats_every_s : how often a ``stats`` log line is written.
    topic_check_every_s : while idle, how often missing topics are re-created.
    rejoin_after_s : a rebalance that has assigned nothing this long after it revoked the
        partitions is given up: the consumer is replaced by a new one that joins the
        group afresh (see :mod:`pipeline.service.partitions`). Keep it well above the time
        a join takes (3 s with the embedded broker; with Apache Kafka, until every member
        of the group has rejoined): each replacement starts a join again.
    partition_idle_s : a partition that delivered nothing for this long no longer holds
        the watermark back (see :mod:`pipeline.service.partitions`).
    torch_threads : intra-op threads of the neural models' forecasts (None: leave
        torch's setting). One is enough for one tick's batch; more make every operation
        wait for the slowest thread, which on a busy machine is a descheduled one.
    bulk_publish : queue a tick's forecasts through :mod:`pipeline.kafka.record_batches`
        (where kafka-python supports it) rather than one ``send()`` per record.
    reload_every_s : how often the model directory's ``serving.json`` is checked for a new
        serving set to swap in (hot reload, see :mod:`pipeline.registry.watch`); None: the
        models are loaded once, at start.
    retain : how much event time the store keeps: after each batch, at most once an
        hour of event time, what lies further than this before the newest closed tick is
        deleted (never the ticks a restart reads back: the models' window and the
        alerts' history); None: the store keeps everything.
    level_half_life : each model's forecasts follow a sensor whose level moved after
        training: the recent mean of its errors at each step, with this half-life, is
        added where it exceeds three of its standard errors
        (:mod:`models.forecasters.level`); None: the models' forecasts as they are.
    tune_gc : after warm-up, freeze the objects that live for the whole run (models,
        modules) out of the garbage collector and collect the young generation less
        often (see :mod:`pipeline.service.runtime`): a tick allocates thousands of
        short-lived, acyclic objects, and full collections over the long-lived heap
        are latency spikes.
    """

    tick: pd.Timedelta = _FIVE_MIN
    tick_offset: pd.Timedelta = _ZERO
    allowed_lateness: pd.Timedelta = _TWO_MIN
    max_clock_skew: pd.Timedelta | None = _ONE_HOUR
    grace: pd.Timedelta | None = _GRACE
    down_after: int | None = 3
    only: tuple[str, ...] = ()
    poll_records: int = 1000
    poll_timeout_ms: int = 100
    flush_timeout_s: float = 30.0
    durable: bool = True
    stats_every_s: float = 10.0
    topic_check_every_s: float = 5.0
    partition_idle_s: float = 5.0
    rejoin_after_s: float = 30.0
    torch_threads: int | None = 1
    bulk_publish: bool = True
    tune_gc: bool = True
    reload_every_s: float | None = 1.0
    retain: pd.Timedelta | None = _RETAIN
    level_half_life: pd.Timedelta | None = _LEVEL

    def __post_init__(self) -> None:
        if self.poll_records < 1:
            raise ValueError(f"poll_records must be >= 1, got {self.poll_records}")
        if self.flush_timeout_s <= 0:
            raise ValueError(f"flush_timeout_s must be > 0, got {self.flush_timeout_s}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError(f"torch_threads must be >= 1 or None, got {self.torch_threads}")
        if self.reload_every_s is not None and not self.reload_every_s > 0:
            raise ValueError(f"reload_every_s must be > 0 or None, got {self.reload_every_s}")
        if not self.rejoin_after_s > 0:
            raise ValueError(f"rejoin_after_s must be > 0, got {self.rejoin_after_s}")
        if self.poll_timeout_ms < 0:
            raise ValueError(f"poll_timeout_ms must be >= 0, got {self.poll_timeout_ms}")
        may_be_zero = ("allowed_lateness", "tick_offset")
        for name in (
            "tick",
            "tick_offset",
            "allowed_lateness",
            "max_clock_skew",
            "grace",
            "retain",
            "level_half_life",
        ):
            value = getattr(self, name)
            if value is None and name in ("max_clock_skew", "grace", "retain", "level_half_life"):
                continue
            if unitless(value):
                raise ValueError(f"{name} {value!r} has no unit: write {value}s or {value}min")
            try:
                value = to_timedelta(value)
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be a duration such as 5min, got {value!r}") from None
            if pd.isna(value):
                raise ValueError(f"{name} must be a duration such as 5min, got NaT")
            if value < _ZERO or (value == _ZERO and name not in may_be_zero):
                floor = ">= 0" if name in may_be_zero else "positive"
                raise ValueError(f"{name} must be {floor}, got {value.total_seconds():g} s")
            if value > MAX_DURATION:
                raise ValueError(f"{name} must be at most {MAX_DURATION.days} days, got {value}")
            object.__setattr__(self, name, value)
        if self.tick.value % 1_000_000:
            raise ValueError(f"tick must be a whole number of milliseconds, got {self.tick}")
        if self.tick_offset >= self.tick or self.tick_offset.value % 1_000_000:
            raise ValueError(
                f"tick_offset must be whole milliseconds from 0 to less than the tick "
                f"({self.tick}), got {self.tick_offset}"
            )
        if self.down_after is not None and self.down_after < 1:
            raise ValueError(f"down_after must be at least 1 tick (or None), got {self.down_after}")


def to_timedelta(value: object) -> pd.Timedelta:
    """``pd.Timedelta(value)``, with the lowercase day unit people write (``7d``,
    ``1d2h``), which pandas deprecates, read as pandas's ``D``."""
    if isinstance(value, str):
        value = re.sub(r"(?<=\d)\s*d(?:ays?)?(?![a-z])", "D", value.strip())
    return pd.Timedelta(value)


def unitless(value: object) -> bool:
    """True for text that is a non-zero number without a unit (``"300"``): pandas would
    read it as nanoseconds, never what was meant."""
    if not isinstance(value, str):
        return False
    text = value.strip()
    return re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)", text) is not None and float(text) != 0
