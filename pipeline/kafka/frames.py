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
default: about 7,000 sensors with intervals) is cut into several frames in sensor order,
each with its own ``first``.

:func:`decode_forecast_frame` reads either wire (a v1 record is one sensor's forecast)
and returns the same :class:`pipeline.kafka.schema.ForecastMessage` list as v1 would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

import msgspec
import numpy as np
import orjson

from pipeline.kafka.schema import (
    ForecastMessage,
    SchemaError,
    decode_forecast,
    parse_timestamp,
)

FRAME_VERSION: Final = 2
WIRE_HEADER: Final = "roadcast-wire"
FRAME_KIND: Final = "forecast-frame"
FRAME_HEADER_VALUE: Final = f"{FRAME_KIND}/{FRAME_VERSION}".encode()
# What a frame adds to its arrays and ids: field names, model, timestamps, record overhead.
_FRAME_OVERHEAD: Final = 1024
_NUMPY = orjson.OPT_SERIALIZE_NUMPY


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

    def messages(self) -> list[ForecastMessage]:
        """One v1 message per published sensor, in the frame's order."""
        issued = parse_timestamp(self.issued_at, "issued_at")
        step = timedelta(milliseconds=self.step_ms)
        targets = tuple(issued + k * step for k in range(1, self.mean.shape[1] + 1))
        ok = np.isfinite(self.mean).all(axis=1)
        if self.lower is not None and self.upper is not None:
            ok &= np.isfinite(self.lower).all(axis=1) & np.isfinite(self.upper).all(axis=1)
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
    max_bytes : the largest record the topic takes; larger networks get several frames.
    """
    horizon, nodes = mean.shape
    rows = [np.ascontiguousarray(a.T, dtype="<f4") for a in (mean, lower, upper) if a is not None]
    bounded = len(rows) == 3
    size = sensors_per_frame(sensor_ids, horizon, bounded, max_bytes)
    frames = []
    for first in range(0, max(nodes, 1), size):
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


def header_version(headers: Sequence[tuple[str, bytes]] | None) -> int | None:
    """The frame version named by a record's ``roadcast-wire`` header (None: no header, v1).

    Raises
    ------
    SchemaError
        ``bad_version`` for a header this reader does not understand or a newer version.
    """
    for name, value in headers or ():
        if name != WIRE_HEADER:
            continue
        text = bytes(value or b"").decode("utf-8", "replace")
        kind, _, number = text.partition("/")
        if kind != FRAME_KIND or not number.isdigit():
            raise SchemaError(
                "bad_version",
                f"header {WIRE_HEADER}={text[:40]!r}: expected {FRAME_KIND}/<version>",
            )
        _check_version(int(number))
        return int(number)
    return None


def _check_version(version: int) -> None:
    if version != FRAME_VERSION:
        advice = "upgrade roadcast to read it" if version > FRAME_VERSION else "re-publish it"
        raise SchemaError(
            "bad_version",
            f"forecast frame version {version} is not readable here: this reader knows "
            f"forecast wire v1 and v{FRAME_VERSION}; {advice}",
        )


def read_frame(raw: bytes | bytearray | memoryview) -> ForecastFrame:
    """Decode one v2 frame to arrays.

    Raises
    ------
    SchemaError
        ``bad_version`` for another version (naming both), ``bad_json`` for bytes that
        are not a frame, ``bad_value`` for inconsistent fields or array sizes.
    """
    try:
        version = _VERSION.decode(raw).v
    except msgspec.DecodeError as exc:
        raise SchemaError("bad_json", f"not a forecast frame (MessagePack): {exc}") from None
    _check_version(version)
    try:
        frame = _DECODER.decode(raw)
    except msgspec.DecodeError as exc:
        raise SchemaError("bad_value", f"forecast frame v{version}: {exc}") from None
    count = len(frame.sensors)
    if frame.horizon < 1 or frame.step_ms < 1 or count == 0:
        raise SchemaError("bad_value", "forecast frame needs horizon, step_ms and sensors >= 1")
    if not 0 <= frame.first <= frame.total - count:
        raise SchemaError(
            "bad_value",
            f"forecast frame sensors {frame.first}..{frame.first + count - 1} lie outside "
            f"its network of {frame.total}",
        )
    if (frame.lo is None) != (frame.hi is None):
        raise SchemaError("bad_value", "lo and hi come together: both arrays or both nil")
    arrays = [_array(b, name, count, frame.horizon) for name, b in _fields(frame)]
    return ForecastFrame(
        frame.model,
        frame.issued_at,
        frame.step_ms,
        frame.first,
        frame.total,
        tuple(frame.sensors),
        arrays[0],
        arrays[1] if len(arrays) == 3 else None,
        arrays[2] if len(arrays) == 3 else None,
    )


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
    raw: bytes | bytearray | memoryview,
    headers: Sequence[tuple[str, bytes]] | None = None,
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
    version = header_version(headers)
    if version is None and not _looks_like_json(raw):
        version = FRAME_VERSION  # a frame whose header was lost: the frame says its version
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


def _looks_like_json(raw: bytes | bytearray | memoryview | None) -> bool:
    """v1 records are JSON objects (``{`` after optional whitespace); frames are maps in
    MessagePack, whose first byte is never ``{`` or whitespace."""
    if raw is None:
        return True  # a tombstone: the v1 decoder says what is wrong with it
    head = bytes(raw[:64]).lstrip()
    return not head or head[:1] == b"{"
