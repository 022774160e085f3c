"""Fast encoding of a network-wide forecast into one wire ``Forecast`` per sensor.

The service publishes ``models x sensors`` messages for every tick (6 x 207 = 1242 on
``los-loop``). :func:`pipeline.schema.encode_forecast` builds a dict, re-validates it
and runs ``json.dumps`` for each: correct, but its cost per message is paid 1242 times
per tick. Here the parts every message of one (model, tick) shares (model name,
``issued_at``, the targets) are formatted once, and the numbers of all sensors at once
with numpy (``float32 -> str`` is the shortest decimal that round-trips, as in
``pipeline.replay``). The output is the same v1 wire format, with the same key order;
``tests/test_service_unit.py`` decodes it with :func:`pipeline.schema.decode_forecast`.

A sensor whose forecast (or interval) is not finite, or whose interval is inverted, is
not published: the schema rejects both, and a made-up number would be worse than none.
Its index is returned so the service can count it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pandas as pd

from pipeline.schema import SCHEMA_VERSION, format_timestamp


def _numbers(array: np.ndarray) -> list[str]:
    """``[horizon, node]`` float -> one comma-joined JSON number list per node."""
    text = array.astype(np.float32).T.astype(str).tolist()  # [node][horizon]
    return [",".join(row) for row in text]


class ForecastEncoder:
    """Encodes forecasts of a fixed sensor list (ids are JSON-quoted once).

    Parameters
    ----------
    sensor_ids : the sensors, in the column order of the arrays given to :meth:`encode`.
    """

    def __init__(self, sensor_ids: Sequence[str]) -> None:
        self.sensor_ids = tuple(sensor_ids)
        self._sensor_json = [json.dumps(s, ensure_ascii=False) for s in self.sensor_ids]
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
        """Messages of one model's forecast issued at one tick.

        Parameters
        ----------
        model : the model name.
        issued_at : the tick the forecast was made at (its last input step).
        targets : the ``horizon`` forecast instants.
        mean, lower, upper : float ``[horizon, node]`` (bounds may be None together).

        Returns
        -------
        (messages, skipped)
            ``messages`` is a list of ``(key, value)`` bytes, one per sensor with a finite
            forecast, in sensor order; ``skipped`` int64 ``[m]`` the columns left out.
        """
        horizon, nodes = mean.shape
        if nodes != len(self.sensor_ids) or len(targets) != horizon:
            raise ValueError(
                f"forecast is {mean.shape} for {len(targets)} targets and "
                f"{len(self.sensor_ids)} sensors"
            )
        if (lower is None) != (upper is None):
            raise ValueError("lower and upper bounds come together: give both or neither")
        finite = np.isfinite(mean).all(axis=0)  # [node]
        if lower is not None and upper is not None:
            finite &= np.isfinite(lower).all(axis=0) & np.isfinite(upper).all(axis=0)
            finite &= (lower <= upper).all(axis=0)  # the schema rejects lo > hi
        head = f'{{"v":{SCHEMA_VERSION},"model":{json.dumps(model, ensure_ascii=False)},"sensor":'
        stamps = ",".join(f'"{format_timestamp(t.to_pydatetime())}"' for t in targets)
        issued = format_timestamp(pd.Timestamp(issued_at).to_pydatetime())
        mid = f',"issued_at":"{issued}","targets":[{stamps}],"yhat":['
        yhat = _numbers(mean)
        messages: list[tuple[bytes, bytes]] = []
        if lower is None or upper is None:
            for i in np.flatnonzero(finite).tolist():
                text = head + self._sensor_json[i] + mid + yhat[i] + '],"lo":null,"hi":null}'
                messages.append((self.keys[i], text.encode("utf-8")))
        else:
            lo, hi = _numbers(lower), _numbers(upper)
            for i in np.flatnonzero(finite).tolist():
                text = (
                    head + self._sensor_json[i] + mid + yhat[i]
                    + '],"lo":[' + lo[i] + '],"hi":[' + hi[i] + "]}"
                )  # fmt: skip
                messages.append((self.keys[i], text.encode("utf-8")))
        return messages, np.flatnonzero(~finite)
