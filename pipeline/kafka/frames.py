"""Forecast wire v2: one compact frame per (model, tick) on ``roadcast.forecasts``.

v1 publishes one JSON record per model and sensor (:mod:`pipeline.kafka.forecast_wire`);
v2 publishes one record per model and tick holding the whole network, encoded as a
MessagePack map by msgspec (chosen over an Arrow IPC record batch by
``benchmarks/wire.py``; see ``docs/decisions.md``):

=============  ==================================================================
``v``          2, the frame's version (also in the Kafka header, see below)
``model``      the model's name
``issued_at``  the tick the forecast was made at, ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``
``step_ms``    the grid step: target ``k`` (1-based) is ``issued_at + k * step_ms``
``horizon``    forecast steps per sensor
``first``      index of the frame's first sensor in the model's sensor list
``total``      sensors of the model (its network)
``sensors``    the frame's sensor ids, in the model's order
``yhat``       float32 little-endian ``[sensor, horizon]``, row-major (bytes)
``lo``, ``hi``  the interval bounds, the same layout, or nil without intervals
=============  ==================================================================

A sensor with no publishable forecast (a non-finite value or an inverted interval) has
NaN in all three arrays; decoding leaves it out, as v1 does not publish it. The record
is keyed by the model name and carries the header ``roadcast-wire: forecast-frame/2``.
A network too large for one record (the topic's ``max.message.bytes``, 1 MiB by
default: about 7,000 sensors with intervals; never more than :data:`MAX_FRAME_BYTES`)
is cut into several frames in sensor order, each with its own ``first``.

A frame follows v1's rules (:mod:`pipeline.kafka.schema`): sensor ids valid and distinct,
a non-empty model name, timestamps in ``[TS_MIN, TS_MAX)``, ``lo <= hi`` where both are
finite; a frame that breaks one raises :class:`SchemaError` with v1's reason code.

:func:`decode_forecast_frame` reads either wire (a v1 record is one sensor's forecast)
and returns the same :class:`pipeline.kafka.schema.ForecastMessage` list as v1 would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Final, TypeAlias

import msgspec
import numpy as np
import orjson

from pipeline.kafka.schema import (
    TS_MAX,
    ForecastMessage,
    SchemaError,
    decode_forecast,
    parse_timestamp,
    sensor_id_problem,
)

FRAME_VERSION: Final = 2
WIRE_HEADER: Final = "roadcast-wire"
FRAME_KIND: Final = "forecast-frame"
FRAME_HEADER_VALUE: Final = f"{FRAME_KIND}/{FRAME_VERSION}".encode()
# What a frame adds to its arrays and ids: field names, model, timestamps, record overhead.
_FRAME_OVERHEAD: Final = 1024
# The largest frame read or written: 8x Kafka's default max.message.bytes, and 2.7x a
# whole 20,000-sensor network in one frame (3.1 MB with both bounds, horizon 12).
MAX_FRAME_BYTES: Final = 8 << 20
# The largest network a frame may claim (50x the 20,000 sensors roadcast is sized for).
MAX_NETWORK_SENSORS: Final = 1_000_000
_MAX_VERSION_DIGITS: Final = 6
_BOM: Final = b"\xef\xbb\xbf"
# Sensor lists already checked (a frame's ids, in order), remembered up to this many.
_CHECKED_LISTS: Final = 64
_CHECKED: set[tuple[str, ...]] = set()
_NUMPY = orjson.OPT_SERIALIZE_NUMPY

Raw: TypeAlias = bytes | bytearray | memoryview
Headers: TypeAlias = Sequence[tuple[str, bytes | None]] | Mapping[str, bytes | None]


class _Version(msgspec.Struct):
    v: int


class _Frame(msgspec.Struct, forbid_unknown_fields=True):
    v: int
    model: str
    issued_at: str
    step_ms: int
    horizon: int
    first: int
    total: int
    sensors: list[str]
    yhat: bytes
    lo: bytes | None = None
    hi: bytes | None = None


_ENCODER = msgspec.msgpack.Encoder()
_VERSION = msgspec.msgpack.Decoder(_Version)
_DECODER = msgspec.msgpack.Decoder(_Frame)


@dataclass(frozen=True)
class ForecastFrame:
    """A decoded v2 frame: float32 ``[sensor, horizon]`` arrays (NaN = not published)."""

    model: str
    issued_at: str
    step_ms: int
    first: int
    total: int
    sensors: tuple[str, ...]
    mean: np.ndarray
    lower: np.ndarray | None
    upper: np.ndarray | None

    def published(self) -> np.ndarray:
        """bool ``[sensor]``: whether each sensor has a forecast (all its values finite)."""
        ok: np.ndarray = np.isfinite(self.mean).all(axis=1)
        if self.lower is not None and self.upper is not None:
            ok &= np.isfinite(self.lower).all(axis=1) & np.isfinite(self.upper).all(axis=1)
        return ok

    def messages(self) -> list[ForecastMessage]:
        """One v1 message per published sensor, in the frame's order."""
        issued = parse_timestamp(self.issued_at, "issued_at")
        step = timedelta(milliseconds=self.step_ms)
        targets = tuple(issued + k * step for k in range(1, self.mean.shape[1] + 1))
        ok = self.published()
        means = _as_published(self.mean)
        lows = None if self.lower is None else _as_published(self.lower)
        highs = None if self.upper is None else _as_published(self.upper)
        return [
            ForecastMessage(
                self.model,
                self.sensors[i],
                issued,
                targets,
                tuple(means[i]),
                None if lows is None else tuple(lows[i]),
                None if highs is None else tuple(highs[i]),
            )
            for i in np.flatnonzero(ok).tolist()
        ]


def _as_published(array: np.ndarray) -> list[list[float]]:
    """float32 rows -> the floats a v1 consumer reads: each value's shortest decimal,
    through the same ``orjson`` formatting the v1 encoder uses (NaN becomes None)."""
    return orjson.loads(orjson.dumps(np.ascontiguousarray(array), option=_NUMPY))  # type: ignore[no-any-return]


def sensors_per_frame(sensor_ids: Sequence[str], horizon: int, bounds: bool, limit: int) -> int:
    """How many sensors one frame of at most ``limit`` bytes holds (at least one)."""
    widest = max((len(s.encode()) for s in sensor_ids), default=1) + 5  # msgpack str header
    per_sensor = widest + horizon * 4 * (3 if bounds else 1)
    return max(1, (limit - _FRAME_OVERHEAD) // per_sensor)


def encode_frames(
    model: str,
    issued_at: str,
    step_ms: int,
    sensor_ids: Sequence[str],
    mean: np.ndarray,
    lower: np.ndarray | None,
    upper: np.ndarray | None,
    *,
    max_bytes: int,
) -> list[bytes]:
    """The frames of one model's forecast at one tick.

    Parameters
    ----------
    model, issued_at, step_ms : as in the frame (``issued_at`` already formatted).
    sensor_ids : the model's sensors, the columns of the arrays.
    mean, lower, upper : float32 ``[horizon, node]``; NaN marks a sensor not published.
    max_bytes : the largest record the topic takes; larger networks get several frames
        (of at most :data:`MAX_FRAME_BYTES`, what readers take).
    """
    horizon, nodes = mean.shape
    if nodes == 0:
        return []  # no sensor: nothing to publish, as in v1 (a frame needs one)
    rows = [np.ascontiguousarray(a.T, dtype="<f4") for a in (mean, lower, upper) if a is not None]
    bounded = len(rows) == 3
    size = sensors_per_frame(sensor_ids, horizon, bounded, min(max_bytes, MAX_FRAME_BYTES))
    frames = []
    for first in range(0, nodes, size):
        cut = slice(first, min(first + size, nodes))
        parts = [r[cut].tobytes() for r in rows]
        frame = _Frame(
            v=FRAME_VERSION,
            model=model,
            issued_at=issued_at,
            step_ms=step_ms,
            horizon=horizon,
            first=first,
            total=nodes,
            sensors=list(sensor_ids[cut]),
            yhat=parts[0],
            lo=parts[1] if bounded else None,
            hi=parts[2] if bounded else None,
        )
        frames.append(_ENCODER.encode(frame))
    return frames


def header_version(headers: Headers | None) -> int | None:
    """The frame version named by a record's ``roadcast-wire`` header (None: no header, v1).

    ``headers`` as Kafka clients give them: ``(key, value)`` pairs or a mapping, each
    value bytes (or None, or text).

    Raises
    ------
    SchemaError
        ``bad_version`` for a header this reader does not understand, a newer version,
        or two ``roadcast-wire`` headers that differ.
    """
    items = headers.items() if isinstance(headers, Mapping) else headers or ()
    values = list(dict.fromkeys(_header_bytes(v) for k, v in items if k == WIRE_HEADER))
    texts = [v.decode("utf-8", "replace") for v in values]
    if len(texts) > 1:
        raise SchemaError(
            "bad_version",
            f"conflicting {WIRE_HEADER} headers {texts[0][:40]!r} and {texts[1][:40]!r}",
        )
    if not texts:
        return None
    kind, _, number = texts[0].partition("/")
    digits = number.isascii() and number.isdigit() and len(number) <= _MAX_VERSION_DIGITS
    if kind != FRAME_KIND or not digits:
        raise SchemaError(
            "bad_version",
            f"header {WIRE_HEADER}={texts[0][:40]!r}: expected {FRAME_KIND}/<version>, "
            f"a version of at most {_MAX_VERSION_DIGITS} ASCII digits",
        )
    _check_version(int(number))
    return int(number)


def _header_bytes(value: object) -> bytes:
    """A header value as bytes (None: empty; text: UTF-8), else ``bad_version``."""
    if value is None or isinstance(value, str):
        return (value or "").encode("utf-8", "replace")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise SchemaError(
        "bad_version", f"header {WIRE_HEADER} is a {type(value).__name__}, expected bytes"
    )


def _check_version(version: int) -> None:
    if version != FRAME_VERSION:
        advice = "upgrade roadcast to read it" if version > FRAME_VERSION else "re-publish it"
        raise SchemaError(
            "bad_version",
            f"forecast frame version {version} is not readable here: this reader knows "
            f"forecast wire v1 and v{FRAME_VERSION}; {advice}",
        )


def looks_like_frame(raw: Raw | None) -> bool:
    """Whether a record's value is MessagePack (a frame) rather than JSON text (v1).

    A frame is a MessagePack map, whose first byte is 0x80 or above; JSON text starts
    with an ASCII byte (``{``, ``[``, whitespace...) or a UTF-8 byte order mark.
    """
    head = b"" if raw is None else bytes(raw[:3])
    return bool(head) and head[0] >= 0x80 and head != _BOM


def wire_version(raw: Raw | None, headers: Headers | None) -> int | None:
    """A forecast record's wire: None for v1 (JSON), else its frame version, from the
    ``roadcast-wire`` header or, without one, from the bytes (:func:`looks_like_frame`).

    Raises
    ------
    SchemaError
        ``bad_version`` as :func:`header_version`.
    """
    version = header_version(headers)
    if version is None and looks_like_frame(raw):
        return FRAME_VERSION  # a frame whose header was lost: the frame says its version
    return version


def read_frame(raw: Raw | None) -> ForecastFrame:
    """Decode one v2 frame to arrays.

    Raises
    ------
    SchemaError
        ``bad_type`` for no value, ``too_large`` beyond :data:`MAX_FRAME_BYTES`,
        ``bad_version`` for another version (naming both), ``bad_json`` for bytes that
        are not a frame, else v1's reason for what v1 refuses (``bad_sensor``,
        ``bad_timestamp``, ``timestamp_out_of_range``, ``bad_value``...).
    """
    if raw is None:
        raise SchemaError("bad_type", "empty message (a tombstone?): expected a forecast frame")
    if len(raw) > MAX_FRAME_BYTES:
        raise SchemaError(
            "too_large", f"forecast frame of {len(raw)} bytes, the limit is {MAX_FRAME_BYTES}"
        )
    try:
        version = _VERSION.decode(raw).v
    except (msgspec.DecodeError, RecursionError) as exc:
        if _looks_like_json(raw):
            raise SchemaError(
                "bad_json",
                f"not a forecast frame: the value is JSON text, not MessagePack (a v1 "
                f"forecast sent with the header {WIRE_HEADER}: {FRAME_HEADER_VALUE.decode()}?)",
            ) from None
        raise SchemaError("bad_json", f"not a forecast frame (MessagePack): {_why(exc)}") from None
    _check_version(version)
    try:
        frame = _DECODER.decode(raw)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise SchemaError("bad_value", f"forecast frame v{version}: {_why(exc)}") from None
    _check_fields(frame)
    arrays = [_array(b, name, len(frame.sensors), frame.horizon) for name, b in _fields(frame)]
    lower, upper = (arrays[1], arrays[2]) if len(arrays) == 3 else (None, None)
    if lower is not None and upper is not None:
        inverted = np.flatnonzero((lower > upper).any(axis=1))  # NaN: not published
        if len(inverted):
            sensor = frame.sensors[inverted[0]]
            raise SchemaError("bad_value", f"sensor {sensor!r}: lo must not exceed hi")
    return ForecastFrame(
        frame.model,
        frame.issued_at,
        frame.step_ms,
        frame.first,
        frame.total,
        tuple(frame.sensors),
        arrays[0],
        lower,
        upper,
    )


def _check_fields(frame: _Frame) -> None:
    """v1's rules for the model, sensors and timestamps, and consistent numbering."""
    count = len(frame.sensors)
    if not frame.model:
        raise SchemaError("bad_value", "model must not be empty")
    if frame.horizon < 1 or frame.step_ms < 1 or count == 0:
        raise SchemaError("bad_value", "forecast frame needs horizon, step_ms and sensors >= 1")
    if frame.total > MAX_NETWORK_SENSORS:
        raise SchemaError(
            "bad_value",
            f"forecast frame claims a network of {frame.total} sensors, the limit is "
            f"{MAX_NETWORK_SENSORS}",
        )
    if not 0 <= frame.first <= frame.total - count:
        raise SchemaError(
            "bad_value",
            f"forecast frame sensors {frame.first}..{frame.first + count - 1} lie outside "
            f"its network of {frame.total}",
        )
    sensors = tuple(frame.sensors)
    if sensors not in _CHECKED:  # a model's frames repeat their sensors every tick
        _check_sensors(sensors)
        if len(_CHECKED) >= _CHECKED_LISTS:
            _CHECKED.clear()
        _CHECKED.add(sensors)
    if (frame.lo is None) != (frame.hi is None):
        raise SchemaError("bad_value", "lo and hi come together: both arrays or both nil")
    issued = parse_timestamp(frame.issued_at, "issued_at")
    room_us = (TS_MAX - issued) // timedelta(microseconds=1)
    if frame.horizon * frame.step_ms * 1000 >= room_us:
        raise SchemaError(
            "timestamp_out_of_range",
            f"the last target, issued_at + {frame.horizon} x {frame.step_ms} ms, is not "
            f"before {TS_MAX.year}-01-01 (UTC)",
        )


def _check_sensors(sensors: tuple[str, ...]) -> None:
    """Every id valid on the wire, none twice."""
    seen: set[str] = set()
    for i, sensor in enumerate(sensors):
        if (problem := sensor_id_problem(sensor)) is not None:
            raise SchemaError("bad_sensor", f"sensors[{i}] {sensor[:40]!r} {problem}")
        if sensor in seen:
            raise SchemaError("bad_value", f"sensor {sensor!r} appears more than once in the frame")
        seen.add(sensor)


def _looks_like_json(raw: Raw) -> bool:
    """Whether ``raw`` starts as a JSON object or array does (after whitespace or a BOM)."""
    head = bytes(raw[:64]).removeprefix(_BOM).lstrip(b" \t\r\n")
    return head[:1] in (b"{", b"[")


def _why(exc: Exception) -> str:
    return "nested too deeply" if isinstance(exc, RecursionError) else str(exc)


def _fields(frame: _Frame) -> list[tuple[str, bytes]]:
    fields = [("yhat", frame.yhat)]
    if frame.lo is not None and frame.hi is not None:
        fields += [("lo", frame.lo), ("hi", frame.hi)]
    return fields


def _array(raw: bytes, name: str, count: int, horizon: int) -> np.ndarray:
    if len(raw) != count * horizon * 4:
        raise SchemaError(
            "bad_value",
            f"forecast frame {name} has {len(raw)} bytes, not {count} sensors x {horizon} "
            "steps x 4",
        )
    return np.frombuffer(raw, dtype="<f4").reshape(count, horizon)


def check_network(frame: ForecastFrame, network: Sequence[str]) -> None:
    """Raise ``SchemaError`` (``bad_value``) unless the frame's sensors are ``network``'s
    sensors ``first..first + n`` and the frame's network is as large as ``network``."""
    sensors = frame.sensors
    expected = tuple(network[frame.first : frame.first + len(sensors)])
    if frame.total == len(network) and sensors == expected:
        return
    where = next(
        (i for i, (a, b) in enumerate(zip(sensors, expected, strict=False)) if a != b),
        min(len(sensors), len(expected)),
    )
    detail = (
        f"model {frame.model!r} forecasts a network of {frame.total} sensors, this "
        f"consumer's has {len(network)}"
        if frame.total != len(network)
        else f"sensor {frame.first + where} of model {frame.model!r} is "
        f"{_show(sensors, where)} in the frame and {_show(expected, where)} in this "
        "consumer's network"
    )
    raise SchemaError("bad_value", f"forecast frame does not match the network: {detail}")


def _show(ids: Sequence[str], index: int) -> str:
    return repr(ids[index]) if index < len(ids) else "absent"


def decode_forecast_frame(
    raw: Raw | None,
    headers: Headers | None = None,
    *,
    network: Sequence[str] | None = None,
) -> list[ForecastMessage]:
    """The per-sensor forecasts of one record of ``roadcast.forecasts``, either wire.

    A v2 frame (the ``roadcast-wire`` header, or MessagePack bytes without it) decodes
    to one message per published sensor; a v1 record to its one message.

    Parameters
    ----------
    raw, headers : the record's value and Kafka headers.
    network : the consumer's sensor ids: a frame (or v1 sensor) that does not belong
        to it is an error rather than forecasts of the wrong sensors.

    Raises
    ------
    SchemaError
        For any invalid record; ``bad_version`` names the record's version and this
        reader's.
    """
    version = wire_version(raw, headers)
    if version is None:
        message = decode_forecast(raw)
        if network is not None and message.sensor not in set(network):
            raise SchemaError(
                "bad_value",
                f"forecast of sensor {message.sensor!r} (model {message.model!r}) is not "
                "in this consumer's network",
            )
        return [message]
    frame = read_frame(raw)
    if network is not None:
        check_network(frame, network)
    return frame.messages()
