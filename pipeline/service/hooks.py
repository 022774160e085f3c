"""The service's extension point: alert hooks called once per closed tick.

:class:`AlertHook` turns a :class:`TickContext` into alert state changes; a
:class:`RestorableAlertHook` also rebuilds its state from the store
(:class:`AlertRestore`) whenever the service restores its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from models.forecasters.base import Forecast
from models.panel import SensorPanel
from pipeline.alerts.lifecycle import AlertEvent
from pipeline.kafka.schema import AlertMessage
from pipeline.service.assembler import ClosedTick
from pipeline.service.live_accuracy import Targeted
from pipeline.service.store import Store


@dataclass(frozen=True)
class TickContext:
    """What an alert hook sees when a tick closes.

    Attributes
    ----------
    tick : the closed tick (values, mask, reason).
    window : the rolling window ending at this tick (``[window, node]``).
    issued : the forecasts every model issued at this tick.
    targeted : per model, the earlier forecasts whose target is this tick (with their
        intervals): what a forecast-interval detector compares the tick with.
    """

    tick: ClosedTick
    window: SensorPanel
    issued: Mapping[str, Forecast]
    targeted: Mapping[str, Targeted]


class AlertHook(Protocol):
    """Turns closed ticks into alert state changes (the anomaly detectors plug in here).

    Called once per closed tick, in time order, after the tick's forecasts are
    computed; returns the ``firing``/``resolved`` messages to publish to
    ``roadcast.alerts`` (key = sensor id) and to store (keyed by ``alert_id`` and
    ``status``). An :class:`pipeline.alerts.lifecycle.AlertEvent` carries its incident's
    ``group_key`` too: it is sent as the Kafka header ``group`` and stored in the
    ``group_key`` column. At-least-once applies here too: after a publish failure the
    service restores its state from the store and the hook sees the batch's ticks again,
    so a stateful hook should either implement :class:`RestorableAlertHook` (its state
    is then rebuilt from the store) or key its state by tick time (a repeated tick is a
    no-op); either way it derives ``alert_id`` from the condition, not from a counter.
    """

    def __call__(self, context: TickContext) -> Sequence[AlertMessage | AlertEvent]: ...


@dataclass(frozen=True)
class AlertRestore:
    """What a hook needs to rebuild its state from the store (see :class:`RestorableAlertHook`).

    Attributes
    ----------
    store : the service's store (readings, ticks, forecasts and alerts of the past).
    sensor_ids : the service's sensors, in its column order.
    store_ids : int64 ``[node]``, their ids in the store.
    last_closed : the newest closed tick in the store (None: nothing closed yet).
    """

    store: Store
    sensor_ids: tuple[str, ...]
    store_ids: np.ndarray
    last_closed: pd.Timestamp | None


@runtime_checkable
class RestorableAlertHook(AlertHook, Protocol):
    """An alert hook whose state the service rebuilds whenever it restores its own: at
    start-up and after a batch the broker did not take (the hook then sees that batch's
    ticks again, from the state the store holds). ``history_ticks``: how many closed ticks
    before the newest its restore reads back (the store's retention keeps them)."""

    history_ticks: int

    def restore(self, source: AlertRestore) -> None: ...

    def describe(self) -> dict[str, Any]: ...
