"""Replay a :class:`~models.panel.SensorPanel` into Kafka as JSON ``Reading`` messages.

Readings go out in timestamp order, all sensors of a step before the next step, keyed
by sensor id (so each sensor stays ordered on its partition) and stamped with the
panel's own timestamps. Missing readings are not sent: a sensor that did not report
is absent from the stream, exactly as a real one would be, never a NaN on the wire.
"""

from __future__ import annotations

import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from models.panel import SensorPanel
from pipeline.kafka.schema import (
    FLOAT32_MAX,
    Reading,
    SchemaError,
    encode_reading,
    format_timestamp,
    parse_timestamp,
    sensor_id_problem,
)

if TYPE_CHECKING:
    from kafka import KafkaProducer


class ReplayError(RuntimeError):
    """Messages could not be delivered to Kafka during a replay."""


class ReplayInterrupted(ReplayError):
    """The replay was interrupted (SIGINT); what it had sent was flushed and is counted."""


@dataclass(frozen=True)
class ReplayStats:
    """What a replay produced.

    Attributes
    ----------
    messages : readings sent (and acknowledged by the broker).
    steps : time steps replayed.
    sensors : sensors in the panel.
    skipped_missing : readings not sent because the panel marks them missing.
    first_ts, last_ts : the panel timestamps of the first and last step replayed.
    seconds : wall time, including the final flush.
    bytes : total size of the message values.
    """

    messages: int
    steps: int
    sensors: int
    skipped_missing: int
    first_ts: datetime | None
    last_ts: datetime | None
    seconds: float
    bytes: int

    @property
    def rate(self) -> float:
        """Messages per second of wall time."""
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: timestamps as ISO-8601 UTC strings, plus ``rate``."""
        out = asdict(self)
        for key in ("first_ts", "last_ts"):
            if out[key] is not None:
                out[key] = format_timestamp(out[key])
        out["rate"] = self.rate
        return out


class _Failures:
    """Counts failed sends; kafka-python reports them on the futures, not on flush()."""

    def __init__(self) -> None:
        self.count = 0
        self.first: BaseException | None = None

    def __call__(self, exc: BaseException) -> None:
        self.count += 1
        if self.first is None:
            self.first = exc


def _decimal_row(row: np.ndarray) -> list[float]:
    """float32 -> the float64 of its shortest decimal: 55.1 goes out as 55.1, not 55.0999984.

    float32's largest magnitudes go out exactly: their shortest decimal (``3.4028235e38``)
    lies past :data:`~pipeline.kafka.schema.FLOAT32_MAX`, which the schema refuses.
    """
    decimal = row.astype(str).astype(np.float64)
    exact = row.astype(np.float64)
    return np.where(np.abs(decimal) <= FLOAT32_MAX, decimal, exact).tolist()  # type: ignore[no-any-return]


def _flush(producer: KafkaProducer, topic: str, sent: int, timeout_s: float) -> None:
    """Wait for the broker's acknowledgements, a :class:`ReplayError` after ``timeout_s``."""
    from kafka.errors import KafkaError

    try:
        producer.flush(timeout=timeout_s)
    except KafkaError as exc:
        raise ReplayError(
            f"{topic!r}: the broker did not acknowledge all of {sent} messages within "
            f"{timeout_s:.0f} s ({exc}); is it still running?"
        ) from exc


def check_pace(span_s: float, n_steps: int, speedup: float) -> None:
    """Refuse a ``speedup`` that would pace ``n_steps`` spanning ``span_s`` seconds of
    data over longer than a timer can wait (0, as fast as possible, always passes)."""
    if speedup > 0:
        paced_s = span_s / speedup
        if not paced_s <= threading.TIMEOUT_MAX:
            raise ValueError(
                f"speedup {speedup:g} would pace {n_steps} steps over {paced_s:.3g} s, longer "
                f"than a timer can wait ({threading.TIMEOUT_MAX:.3g} s); use a larger speedup "
                "or 0 (as fast as possible)"
            )


def check_speed_limit(speedup: float, limit: int | None) -> None:
    """Refuse a speed-up that is not a finite number >= 0, or a negative step limit."""
    if speedup < 0 or not np.isfinite(speedup):
        raise ValueError(
            f"speedup must be a finite number: 0 (as fast as possible) or more, got {speedup}"
        )
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 steps, got {limit}")


def check_replay(panel: SensorPanel, speedup: float, limit: int | None) -> list[datetime]:
    """The timestamps of the steps :func:`replay` would send, after refusing what it
    cannot do (before anything connects).

    Raises
    ------
    ValueError
        As :func:`replay`.
    """
    if panel.values.ndim != 2:
        raise ValueError(
            f"replay needs a [time, node] panel, got shape {panel.values.shape}; "
            "select one feature first"
        )
    check_speed_limit(speedup, limit)
    n_steps = panel.n_time if limit is None else min(limit, panel.n_time)
    stamps: list[datetime] = [t.to_pydatetime() for t in panel.timestamps[:n_steps]]
    check_wire(panel, stamps)
    if stamps:
        check_pace((stamps[-1] - stamps[0]).total_seconds(), n_steps, speedup)
    return stamps


def check_wire(panel: SensorPanel, stamps: list[datetime]) -> None:
    """Refuse a panel whose readings the schema would refuse (a sensor id or a timestamp
    it cannot carry), before anything is sent rather than at the first such reading."""
    name = panel.name if panel.name.isprintable() else repr(panel.name)
    name = name or "the data set"
    for sensor in panel.sensor_ids:
        if (problem := sensor_id_problem(sensor)) is not None:
            raise ValueError(
                f"{name}: sensor {sensor[:40]!r} {problem}: readings on Kafka could not "
                "name it; rename it in the data set (nothing was sent)"
            )
    for ts in (min(stamps), max(stamps)) if stamps else ():
        try:
            parse_timestamp(format_timestamp(ts))
        except SchemaError as exc:
            raise ValueError(
                f"{name}: timestamp {ts} cannot be sent: {exc.detail} (nothing was sent)"
            ) from None


def replay(
    panel: SensorPanel,
    producer: KafkaProducer,
    topic: str,
    *,
    speedup: float = 0.0,
    limit: int | None = None,
    progress: bool = True,
    flush_timeout_s: float = 60.0,
) -> ReplayStats:
    """Produce the panel's readings to ``topic``, step by step.

    Parameters
    ----------
    panel
        A ``[time, node]`` panel; a ``[time, node, feature]`` panel must select one
        feature first.
    producer
        A kafka-python producer (bytes keys and values), e.g. from
        :func:`pipeline.kafka.clients.make_producer`. It is flushed, not closed.
    topic
        The readings topic.
    speedup
        0 sends as fast as possible; ``X > 0`` paces the steps at X times real time by
        the panel's timestamps (X = 60 plays a 5-minute step every 5 seconds) and
        flushes after each step so that it arrives on time.
    limit
        Replay at most this many time steps (all sensors of each), from the start.
    progress
        Show a progress bar (rich).
    flush_timeout_s
        How long the final flush may wait for the broker's acknowledgements.

    Returns
    -------
    ReplayStats

    Raises
    ------
    ValueError
        For a 3-D panel, a negative ``speedup`` or ``limit``, a ``speedup`` so small
        that pacing the steps would wait longer than a timer can, or a sensor id or
        timestamp the schema cannot carry (nothing is sent then).
    ReplayError
        When the broker rejected or never acknowledged some messages; it says how many.
    """
    stamps = check_replay(panel, speedup, limit)
    from kafka.errors import KafkaError

    n_steps = len(stamps)
    keys = [s.encode() for s in panel.sensor_ids]
    sensors = panel.sensor_ids
    failures = _Failures()
    sent = skipped = size = 0
    started = time.monotonic()
    bar = _progress_bar(progress)
    whole = whole_sent = 0  # steps sent whole, and the readings they hold
    try:
        with bar if bar is not None else nullcontext():
            task = bar.add_task(f"replay -> {topic}", total=n_steps) if bar is not None else None
            for step in range(n_steps):
                ts = stamps[step]
                if speedup > 0:
                    due = started + (ts - stamps[0]).total_seconds() / speedup
                    if (wait := due - time.monotonic()) > 0:
                        time.sleep(wait)
                observed = panel.mask[step]
                values = _decimal_row(panel.values[step])
                for node in np.flatnonzero(observed).tolist():
                    payload = encode_reading(Reading(sensors[node], ts, values[node]))
                    try:
                        future = producer.send(topic, key=keys[node], value=payload)
                    except KafkaError as exc:
                        raise ReplayError(
                            f"could not send to {topic!r} after {sent} messages: {exc}; is the "
                            "broker reachable and does the topic exist (roadcast broker, "
                            "ensure_topics)?"
                        ) from exc
                    future.add_errback(failures)
                    sent += 1
                    size += len(payload)
                skipped += len(keys) - int(observed.sum())
                whole, whole_sent = step + 1, sent
                if speedup > 0:
                    _flush(producer, topic, sent, flush_timeout_s)
                if bar is not None and task is not None:
                    bar.update(task, advance=1, description=f"replay -> {topic} ({sent:,} msgs)")
            _flush(producer, topic, sent, flush_timeout_s)
    except KeyboardInterrupt:
        _flush(producer, topic, sent, flush_timeout_s)
        part = " and part of the next" if sent > whole_sent else ""
        raise ReplayInterrupted(
            f"interrupted after {sent:,} readings to {topic!r} ({whole} whole step(s){part} of "
            f"{n_steps}); {sent - failures.count:,} acknowledged by the broker"
        ) from None
    if failures.count:
        raise ReplayError(
            f"{failures.count} of {sent} messages to {topic!r} failed; first error: "
            f"{failures.first!r}"
        )
    return ReplayStats(
        messages=sent,
        steps=n_steps,
        sensors=panel.n_nodes,
        skipped_missing=skipped,
        first_ts=stamps[0] if stamps else None,
        last_ts=stamps[-1] if stamps else None,
        seconds=time.monotonic() - started,
        bytes=size,
    )


def _progress_bar(enabled: bool) -> Any:
    if not enabled:
        return None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
