"""Encoding a network-wide forecast for ``roadcast.forecasts``, in either wire.

One :class:`ForecastEncoder` per model (its sensor list) encodes a forecast issued at
one tick into the records to publish, in the deployment's wire
(``ROADCAST_FORECAST_WIRE``):

- **v1** (default): one JSON ``Forecast`` record per sensor, keyed by sensor id, the
  format of :mod:`pipeline.kafka.schema` with the same key order. The parts every record
  of one (model, tick) shares are formatted once; the numbers of all sensors (mean,
  lower and upper bound) in one ``orjson.dumps`` of a float32 array: each value as the
  shortest decimal that reads back to the same float32 (orjson, measured 7.8-10.7x faster
  than a hand-written vectorised formatter and 2.8-5x faster than msgspec on the same
  inputs: ``benchmarks/wire.py``, ``docs/decisions.md``).
- **v2**: one compact frame per (model, tick), see :mod:`pipeline.kafka.frames`.

Forecasts travel as float32, the models' output type.
A sensor whose forecast (or interval) is not finite, or whose interval is inverted, is
not published: the schema rejects both, and a made-up number would be worse than none.
Its column is returned so the service can count it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Final, Literal

import numpy as np
import orjson
import pandas as pd

from pipeline.kafka.frames import FRAME_HEADER_VALUE, WIRE_HEADER, encode_frames
from pipeline.kafka.schema import SCHEMA_VERSION, format_timestamp

if TYPE_CHECKING:
    from pipeline.kafka.outbox import Outbox

Wire = Literal["v1", "v2"]
WIRES: Final = ("v1", "v2")
# Kafka's default max.message.bytes: the largest v2 frame when the caller knows no limit.
DEFAULT_MAX_BYTES: Final = 1_048_588
_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_LO = b'],"lo":['
_HI = b'],"hi":['
_NO_BOUNDS = b'],"lo":null,"hi":null}'
_END = b"]}"


@dataclass(frozen=True)
class EncodedForecast:
    """One model's forecast at one tick, ready to publish and to store.

    ``records`` are ``(key, value)`` bytes to publish, each with ``headers`` (None for
    v1); ``columns`` int64 ``[m]`` the published sensors' columns; ``skipped`` the
    columns left out.
    """

    records: list[tuple[bytes, bytes]]
    headers: list[tuple[str, bytes]] | None
    columns: np.ndarray
    skipped: np.ndarray


def json_rows(block: np.ndarray) -> list[bytes]:
    """``[row, col]`` finite floats -> each row's numbers, comma-joined, without brackets
    (``b"55.1,54.9"``), through one ``orjson.dumps`` of the float32 array."""
    rows = np.ascontiguousarray(block, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[1] < 1:
        raise ValueError(f"json_rows needs a [row, col] array with col >= 1, got {rows.shape}")
    if rows.shape[0] == 0:
        return []
    # '[[a,b],[c,d]]': numbers never hold a bracket, so the rows split on '],['.
    return orjson.dumps(rows, option=_NUMPY)[2:-2].split(b"],[")


@lru_cache(maxsize=256)
def _stamps(issued_ns: int, freq_ns: int, horizon: int) -> tuple[str, str]:
    """``issued_at`` and the comma-joined quoted targets, formatted once per tick."""
    issued = pd.Timestamp(issued_ns, tz="UTC").to_pydatetime()
    step = timedelta(microseconds=freq_ns // 1000)
    targets = ",".join(f'"{format_timestamp(issued + k * step)}"' for k in range(1, horizon + 1))
    return format_timestamp(issued), targets


class ForecastEncoder:
    """Encodes the forecasts of one sensor list in one wire (sensor ids quoted once).

    Parameters
    ----------
    sensor_ids : the sensors, in the column order of the arrays given to :meth:`encode`.
    wire : ``"v1"`` (a JSON record per sensor) or ``"v2"`` (frames per model and tick).
    """

    def __init__(self, sensor_ids: Sequence[str], wire: Wire = "v1") -> None:
        if wire not in WIRES:
            raise ValueError(f"unknown forecast wire {wire!r}; expected one of {WIRES}")
        self.sensor_ids = tuple(sensor_ids)
        self.wire = wire
        self._sensor_json = [
            json.dumps(s, ensure_ascii=False).encode("utf-8") for s in self.sensor_ids
        ]
        self.keys = [s.encode("utf-8") for s in self.sensor_ids]

    def encode(
        self,
        model: str,
        issued_at: pd.Timestamp,
        targets: pd.DatetimeIndex,
        mean: np.ndarray,
        lower: np.ndarray | None = None,
        upper: np.ndarray | None = None,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> EncodedForecast:
        """:meth:`encode_rows` for a forecast with regular ``targets``."""
        if len(targets) != mean.shape[0] or len(targets) == 0:
            raise ValueError(f"{len(targets)} targets for a forecast of shape {mean.shape}")
        freq = pd.Timestamp(targets[0]) - pd.Timestamp(issued_at)
        expected = pd.Timestamp(issued_at) + freq * np.arange(1, len(targets) + 1)
        if freq <= pd.Timedelta(0) or not (pd.DatetimeIndex(targets) == expected).all():
            raise ValueError("targets must be issued_at + k * step for k = 1..horizon")
        return self.encode_rows(model, issued_at, freq, mean, lower, upper, max_bytes=max_bytes)

    def encode_rows(
        self,
        model: str,
        issued_at: pd.Timestamp,
        freq: pd.Timedelta,
        mean: np.ndarray,
        lower: np.ndarray | None = None,
        upper: np.ndarray | None = None,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> EncodedForecast:
        """The records of one model's forecast issued at one tick.

        Parameters
        ----------
        model : the model name.
        issued_at : the tick the forecast was made at (its last input step).
        freq : the grid step; target ``k`` is ``issued_at + k * freq``.
        mean, lower, upper : float ``[horizon, node]`` (bounds are given together or not).
        max_bytes : the largest record the topic takes (v2 cuts larger frames).
        """
        horizon, nodes = mean.shape
        if nodes != len(self.sensor_ids):
            raise ValueError(f"forecast is {mean.shape} for {len(self.sensor_ids)} sensors")
        if (lower is None) != (upper is None):
            raise ValueError("lower and upper bounds come together: give both or neither")
        mean = np.asarray(mean, np.float32)
        bounds = [np.asarray(b, np.float32) for b in (lower, upper) if b is not None]
        finite = np.isfinite(mean).all(axis=0)  # [node]
        if bounds:
            finite &= np.isfinite(bounds[0]).all(axis=0) & np.isfinite(bounds[1]).all(axis=0)
            finite &= (bounds[0] <= bounds[1]).all(axis=0)  # the schema rejects lo > hi
        columns = np.flatnonzero(finite)
        skipped = np.flatnonzero(~finite)
        issued, targets = _stamps(
            int(pd.Timestamp(issued_at).value), int(pd.Timedelta(freq).value), horizon
        )
        if self.wire == "v2":
            records = self._frames(model, issued, freq, finite, mean, bounds, max_bytes)
            headers = [(WIRE_HEADER, FRAME_HEADER_VALUE)]
            return EncodedForecast(records, headers, columns, skipped)
        count = len(columns)
        # Mean, lower and upper of every published sensor in one pass: rows [0, count)
        # are the means, then the lower bounds, then the upper ones.
        rows = json_rows(np.concatenate([a[:, columns].T for a in (mean, *bounds)]))
        model_json = json.dumps(model, ensure_ascii=False)
        head = f'{{"v":{SCHEMA_VERSION},"model":{model_json},"sensor":'.encode()
        mid = f',"issued_at":"{issued}","targets":[{targets}],"yhat":['.encode()
        sensors, keys, join = self._sensor_json, self.keys, b"".join
        if bounds:
            lows, highs = rows[count : 2 * count], rows[2 * count :]
            tails = [join((_LO, lows[j], _HI, highs[j], _END)) for j in range(count)]
        else:
            tails = [_NO_BOUNDS] * count
        records = [
            (keys[i], join((head, sensors[i], mid, rows[j], tails[j])))
            for j, i in enumerate(columns.tolist())
        ]
        return EncodedForecast(records, None, columns, skipped)

    def _frames(
        self,
        model: str,
        issued: str,
        freq: pd.Timedelta,
        finite: np.ndarray,
        mean: np.ndarray,
        bounds: list[np.ndarray],
        max_bytes: int,
    ) -> list[tuple[bytes, bytes]]:
        """v2: the frames, NaN where a sensor is not published."""
        freq_ns = int(pd.Timedelta(freq).value)
        if freq_ns % 1_000_000:
            raise ValueError(f"the v2 forecast wire needs a whole-millisecond step, got {freq}")
        arrays = [mean, *bounds]
        if not finite.all():
            arrays = [np.where(finite[None, :], a, np.float32(np.nan)) for a in arrays]
        frames = encode_frames(
            model,
            issued,
            freq_ns // 1_000_000,
            self.sensor_ids,
            arrays[0],
            arrays[1] if bounds else None,
            arrays[2] if bounds else None,
            max_bytes=max_bytes,
        )
        key = model.encode("utf-8")
        return [(key, frame) for frame in frames]


def send_forecast(outbox: Outbox, topic: str, encoded: EncodedForecast) -> None:
    """Queue an encoded forecast on ``topic``: v1 records through the outbox's bulk path,
    v2 frames one by one with their header (a handful per tick)."""
    if encoded.headers is None:
        outbox.send_many(topic, encoded.records)
        return
    for key, value in encoded.records:
        outbox.send(topic, key, value, encoded.headers)
