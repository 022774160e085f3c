"""Fast encoding of a network-wide forecast into one wire ``Forecast`` per sensor.

The service publishes ``models x sensors`` messages for every tick (6 x 207 = 1242 on
``los-loop``). :func:`pipeline.kafka.schema.encode_forecast` builds a dict, re-validates it
and runs ``json.dumps`` for each: correct, but paid 1242 times per tick. Here the
parts that every message of one (model, tick) shares (model name, ``issued_at``, the
targets) are formatted once, as bytes, and the numbers of all sensors (mean, lower and
upper bound together) in one vectorised pass of :func:`pipeline.kafka.decimal_text.json_rows`:
each value to 7 significant digits (float32, the models' output, carries about 7.2),
written in plain decimal notation. The output is the same v1 wire format with the same
key order; ``tests/test_service_unit.py`` decodes it with
:func:`pipeline.kafka.schema.decode_forecast`. The JSON arrays are returned too: the store
keeps exactly what was published.

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

import numpy as np
import pandas as pd

from pipeline.kafka.decimal_text import json_rows
from pipeline.kafka.schema import SCHEMA_VERSION, format_timestamp

_LO = b',"lo":'
_HI = b',"hi":'
_NO_BOUNDS = b',"lo":null,"hi":null}'
_END = b"}"


@dataclass(frozen=True)
class EncodedForecast:
    """One model's forecast at one tick, ready to publish and to store.

    ``messages`` are ``(key, value)`` bytes, one per published sensor, in column order;
    ``columns`` int64 ``[m]`` their sensor columns; ``yhat``/``lo``/``hi`` their JSON
    arrays (``lo``/``hi`` None without intervals); ``skipped`` the columns left out.
    """

    messages: list[tuple[bytes, bytes]]
    columns: np.ndarray
    yhat: list[str]
    lo: list[str] | None
    hi: list[str] | None
    skipped: np.ndarray


def json_arrays(array: np.ndarray) -> list[str]:
    """``[horizon, node]`` finite floats -> one JSON array (``"[55.1,54.9]"``) per node."""
    buffer, offsets = json_rows(np.asarray(array).T)
    text = buffer.decode("ascii")
    return [text[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


@lru_cache(maxsize=256)
def _stamps(issued_ns: int, freq_ns: int, horizon: int) -> tuple[str, str]:
    """``issued_at`` and the comma-joined quoted targets, formatted once per tick."""
    issued = pd.Timestamp(issued_ns, tz="UTC").to_pydatetime()
    step = timedelta(microseconds=freq_ns // 1000)
    targets = ",".join(f'"{format_timestamp(issued + k * step)}"' for k in range(1, horizon + 1))
    return format_timestamp(issued), targets


class ForecastEncoder:
    """Encodes forecasts of a fixed sensor list (ids are JSON-quoted once).

    Parameters
    ----------
    sensor_ids : the sensors, in the column order of the arrays given to :meth:`encode`.
    """

    def __init__(self, sensor_ids: Sequence[str]) -> None:
        self.sensor_ids = tuple(sensor_ids)
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
    ) -> tuple[list[tuple[bytes, bytes]], np.ndarray]:
        """``(messages, skipped columns)`` of one forecast with regular ``targets``."""
        if len(targets) != mean.shape[0] or len(targets) == 0:
            raise ValueError(f"{len(targets)} targets for a forecast of shape {mean.shape}")
        freq = pd.Timestamp(targets[0]) - pd.Timestamp(issued_at)
        expected = pd.Timestamp(issued_at) + freq * np.arange(1, len(targets) + 1)
        if freq <= pd.Timedelta(0) or not (pd.DatetimeIndex(targets) == expected).all():
            raise ValueError("targets must be issued_at + k * step for k = 1..horizon")
        encoded = self.encode_rows(model, issued_at, freq, mean, lower, upper)
        return encoded.messages, encoded.skipped

    def encode_rows(
        self,
        model: str,
        issued_at: pd.Timestamp,
        freq: pd.Timedelta,
        mean: np.ndarray,
        lower: np.ndarray | None = None,
        upper: np.ndarray | None = None,
    ) -> EncodedForecast:
        """Messages of one model's forecast issued at one tick, and the rows to store.

        Parameters
        ----------
        model : the model name.
        issued_at : the tick the forecast was made at (its last input step).
        freq : the grid step; target ``k`` is ``issued_at + k * freq``.
        mean, lower, upper : float ``[horizon, node]`` (bounds are given together or not).
        """
        horizon, nodes = mean.shape
        if nodes != len(self.sensor_ids):
            raise ValueError(f"forecast is {mean.shape} for {len(self.sensor_ids)} sensors")
        if (lower is None) != (upper is None):
            raise ValueError("lower and upper bounds come together: give both or neither")
        finite = np.isfinite(mean).all(axis=0)  # [node]
        if lower is not None and upper is not None:
            finite &= np.isfinite(lower).all(axis=0) & np.isfinite(upper).all(axis=0)
            finite &= (lower <= upper).all(axis=0)  # the schema rejects lo > hi
        issued, targets = _stamps(
            int(pd.Timestamp(issued_at).value), int(pd.Timedelta(freq).value), horizon
        )
        model_json = json.dumps(model, ensure_ascii=False)
        head = f'{{"v":{SCHEMA_VERSION},"model":{model_json},"sensor":'.encode()
        mid = f',"issued_at":"{issued}","targets":[{targets}],"yhat":'.encode()
        columns = np.flatnonzero(finite)
        skipped = np.flatnonzero(~finite)
        count = len(columns)
        if count == 0:
            bounds: list[str] | None = None if lower is None else []
            return EncodedForecast([], columns, [], bounds, bounds, skipped)
        parts = [mean[:, columns].T]  # [node, horizon]
        if lower is not None and upper is not None:
            parts += [lower[:, columns].T, upper[:, columns].T]
        # Mean, lower and upper of every published sensor in one pass: rows
        # [0, count) are the means, then the lower bounds, then the upper ones.
        buffer, offsets = json_rows(np.concatenate(parts))
        cuts = offsets.tolist()
        rows = [buffer[cuts[r] : cuts[r + 1]] for r in range(len(cuts) - 1)]
        text = buffer.decode("ascii")
        arrays = [text[cuts[r] : cuts[r + 1]] for r in range(len(cuts) - 1)]
        sensors, keys, join = self._sensor_json, self.keys, b"".join
        messages: list[tuple[bytes, bytes]] = []
        if len(parts) == 1:
            for j, i in enumerate(columns.tolist()):
                value = join((head, sensors[i], mid, rows[j], _NO_BOUNDS))
                messages.append((keys[i], value))
            return EncodedForecast(messages, columns, arrays, None, None, skipped)
        for j, i in enumerate(columns.tolist()):
            value = join(
                (
                    head,
                    sensors[i],
                    mid,
                    rows[j],
                    _LO,
                    rows[count + j],
                    _HI,
                    rows[2 * count + j],
                    _END,
                )
            )
            messages.append((keys[i], value))
        return EncodedForecast(
            messages,
            columns,
            arrays[:count],
            arrays[count : 2 * count],
            arrays[2 * count :],
            skipped,
        )
