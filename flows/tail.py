"""One line per record of a roadcast topic, whatever it holds (``roadcast tail``).

Readings, forecasts in either wire (v1 per sensor, v2 frames, see
:mod:`pipeline.kafka.frames`), alerts and dead letters are recognised by the topic's
role in the settings, else by their headers and fields. A record that is none of them
is one line saying why, never the end of the command; control characters in a record
are shown escaped, so that no record prints as more than one line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pipeline.kafka.frames import WIRE_HEADER, looks_like_frame, read_frame, wire_version
from pipeline.kafka.schema import SchemaError, decode_alert, decode_forecast, decode_readings

Headers = Sequence[tuple[str, bytes]]
_SHOWN = 3  # numbers shown per forecast line
_ERROR_CHARS = 200  # of an unexpected error's message
_LINE_CHARS = 1000  # of a line: a record's long field (a model name...) is cut


def _numbers(values: Sequence[float]) -> str:
    shown = " ".join(_number(v) for v in values[:_SHOWN])
    return f"[{shown}{' ...' if len(values) > _SHOWN else ''}]"


def _number(value: float) -> str:
    """The shortest decimal of ``value`` as the float32 the wire carries (``1000123.5``,
    ``50``; ``1.2345679e+08`` from 1e8 on, where float32 keeps no more digits): different
    values never print alike."""
    v = np.float32(value)
    if v == 0 or not np.isfinite(v) or 1e-4 <= abs(v) < 1e8:
        return np.format_float_positional(v, unique=True, trim="-")
    return np.format_float_scientific(v, unique=True, trim="-")


def describe_readings(value: bytes | None, headers: Headers) -> str:
    readings = decode_readings(value)
    if len(readings) == 1:
        r = readings[0]
        return f"reading {r.sensor} {r.ts.isoformat()} {float(r.value)!r}"
    if not readings:
        return "readings: an empty batch (no sensor reported)"
    first = readings[0]
    sample = ", ".join(f"{r.sensor}={float(r.value)!r}" for r in readings[:_SHOWN])
    return f"readings {first.ts.isoformat()}: {len(readings)} sensors ({sample}, ...)"


def describe_forecast(value: bytes | None, headers: Headers) -> str:
    if wire_version(value, headers) is None:
        f = decode_forecast(value)
        bounds = "" if f.lo is None or f.hi is None else f" lo {_numbers(f.lo)} hi {_numbers(f.hi)}"
        return (
            f"forecast v1 {f.model} sensor {f.sensor} issued {f.issued_at.isoformat()} "
            f"{len(f.yhat)} steps yhat {_numbers(f.yhat)}{bounds}"
        )
    frame = read_frame(value)
    count = len(frame.sensors)
    published = int(frame.published().sum())
    step1 = frame.mean[:, 0]
    finite = step1[np.isfinite(step1)]
    mean = f"{float(finite.mean()):.4g}" if len(finite) else "none"
    intervals = "with intervals" if frame.lower is not None else "no intervals"
    return (
        f"forecast v2 {frame.model} issued {frame.issued_at}: sensors {frame.first}-"
        f"{frame.first + count - 1} of {frame.total}, {frame.mean.shape[1]} steps of "
        f"{frame.step_ms / 60000:g} min, {intervals}; {published} published "
        f"({count - published} without a finite forecast); step 1 mean {mean}"
    )


def describe_alert(value: bytes | None, headers: Headers) -> str:
    a = decode_alert(value)
    score = f"score {a.score:.3g}"
    reason = f": {a.reason}" if a.reason else ""
    return (
        f"alert {a.status} {a.severity} {a.sensor} {a.detector} at {a.ts.isoformat()} "
        f"{score}{reason}"
    )


def describe_dead_letter(value: bytes | None, headers: Headers) -> str:
    fields = {k: bytes(v or b"").decode("utf-8", "replace") for k, v in headers}
    if "error" not in fields:
        raise SchemaError("missing_field", "no error header: not a dead letter")
    source = (
        f"{fields.get('source.topic', '?')}[{fields.get('source.partition', '?')}]"
        f"@{fields.get('source.offset', '?')}"
    )
    size = "no value" if value is None else f"{len(value)} bytes"
    return (
        f"dead letter {fields['error']} from {source}: {fields.get('error.message', '')} ({size})"
    )


DESCRIBE: dict[str, Callable[[bytes | None, Headers], str]] = {
    "readings": describe_readings,
    "forecasts": describe_forecast,
    "alerts": describe_alert,
    "dlq": describe_dead_letter,
}


def guess_role(value: bytes | None, headers: Headers) -> str | None:
    """The role of a record on a topic the settings do not name, from its content."""
    names = {k for k, _ in headers}
    if WIRE_HEADER in names:
        return "forecasts"
    if "error" in names and "source.topic" in names:
        return "dlq"
    if looks_like_frame(value):
        return "forecasts"  # a frame without its header
    try:
        obj = json.loads(value or b"")
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    if "alert_id" in obj:
        return "alerts"
    if "model" in obj:
        return "forecasts"
    if "value" in obj or "values" in obj:
        return "readings"
    return None


def describe(role: str | None, value: bytes | None, headers: Headers) -> str:
    """One line for one record; a record that does not decode is described, not raised."""
    kind = role
    try:
        kind = role or guess_role(value, headers)
        if kind is None:
            line = f"unrecognised record ({0 if value is None else len(value)} bytes)"
        else:
            line = DESCRIBE[kind](value, headers)
    except SchemaError as exc:
        guessed = " (a guess from its content: the settings give this topic no role)"
        line = f"invalid {kind} record{guessed if role is None else ''}: {exc}"
    except Exception as exc:  # a decoder's own failure: this record's line, not tail's end
        text = f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS]
        line = f"undecodable {kind or 'unrecognised'} record: {text}"
    return _one_line(line)


def _one_line(text: str) -> str:
    """``text`` with control and invisible characters escaped (``\\n``, ``\\x1b``), cut
    after :data:`_LINE_CHARS` characters."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
    if len(text) > _LINE_CHARS:
        text = f"{text[:_LINE_CHARS]}... ({len(text) - _LINE_CHARS:,} more characters)"
    return text


class Progress:
    """Whether ``roadcast tail`` has read each partition to the end it last fetched, so
    that ``--timeout`` never ends a read of records that are there but not fetched yet."""

    def __init__(self, consumer: Any, partitions: Sequence[Any]) -> None:
        self.consumer = consumer
        self.partitions = list(partitions)

    def fetched(self) -> bool:
        """Whether a fetch has told each partition's high watermark."""
        return all(self.consumer.highwater(tp) is not None for tp in self.partitions)

    def caught_up(self) -> bool:
        """Whether every partition has been read to its high watermark."""
        for tp in self.partitions:
            hw = self.consumer.highwater(tp)
            if hw is None or self.consumer.position(tp) < hw:
                return False
        return True
