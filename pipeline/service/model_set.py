"""The models a service runs, their versions, and what a hot reload may swap in.

:class:`ModelSlot` is one loaded model as the processor uses it (its columns in the
service's sensor order, its store ids, its forecast encoder, its version).
:func:`swap_refusal` says why a new set of models cannot replace the running one
without a restart, or None when it can: the service's sensor network, its rolling
window and its alert detectors are fixed for its life, so a new set must

* forecast exactly the running network's sensors (another network needs another
  service, or a restart);
* need no longer window than the service keeps;
* have been trained on ticks at the service's grid offset (:func:`offset_refusal`);
* still hold every model whose forecasts an alert detector judges, with at least the
  detector's horizon and the sensors in the same order (the detector keeps the pending
  forecasts of the old version and goes on with the new one's).

The swap itself is :meth:`pipeline.service.state.ServiceState.swap_models`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from models.bundle import offset_text, other_offset
from models.forecasters.base import Forecaster
from pipeline.kafka.forecast_wire import ForecastEncoder
from pipeline.service.store_rows import VersionRow


class Versioned(Protocol):
    """What the service records of a model version (``pipeline.registry.ModelVersion``)."""

    @property
    def version(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def run_id(self) -> str: ...


@dataclass
class ModelSlot:
    """One model the service forecasts with."""

    name: str
    model: Forecaster
    cols: np.ndarray | None  # assembler column of each model sensor; None: same order
    store_sensors: np.ndarray  # int64 [model node]
    encoder: ForecastEncoder
    version: str = ""  # content hash of its bundle ("" when not known)


def build_slots(
    models: Mapping[str, Forecaster],
    column: Mapping[str, int],
    store_ids: np.ndarray,
    encoder: Callable[[Sequence[str]], ForecastEncoder],
    versions: Mapping[str, Versioned] | None = None,
) -> list[ModelSlot]:
    """A slot per model: its columns among the service's ``column`` order, its store ids."""
    slots = []
    for name, model in models.items():
        cols = np.array([column[s] for s in model.sensor_ids], dtype=np.int64)
        same = len(cols) == len(column) and bool((cols == np.arange(len(cols))).all())
        version = versions[name].version if versions and name in versions else ""
        slots.append(
            ModelSlot(
                name, model, None if same else cols, store_ids[cols], encoder(model.sensor_ids),
                version,
            )
        )  # fmt: skip
    return slots


def _listed(names: set[str]) -> str:
    shown = ", ".join(sorted(names)[:3])
    return shown + (", ..." if len(names) > 3 else "")


def offset_refusal(models: Mapping[str, Forecaster], offset_s: float) -> str | None:
    """Why ``models`` cannot forecast ticks lying ``offset_s`` seconds past the epoch's
    grid (the service's ``tick_offset``): the first one trained on ticks at another offset
    (its bundle's ``offset_s``); None when all were (or record no offset)."""
    for name, model in models.items():
        if (own := other_offset(model, offset_s)) is not None:
            return (
                f"{name} was trained on ticks at {offset_text(own)} past the tick grid of "
                f"1970-01-01T00:00Z (its offset_s), the service's ticks lie at "
                f"{offset_text(offset_s)}"
            )
    return None


def swap_refusal(
    running: Sequence[ModelSlot],
    sensor_ids: Sequence[str],
    window: int,
    models: Mapping[str, Forecaster],
    alert_forecasters: Mapping[str, int],
    offset_s: float = 0.0,
) -> str | None:
    """Why ``models`` cannot replace ``running`` in a live service, or None.

    ``sensor_ids`` and ``window`` are the service's network and rolling window,
    ``offset_s`` its grid offset (``ServiceConfig.tick_offset``); ``alert_forecasters``
    maps each model an alert detector judges to the horizon it needs.
    """
    if not models:
        return "the new serving set has no model"
    if (reason := offset_refusal(models, offset_s)) is not None:
        return f"{reason}: restart the service to serve it"
    network = set(sensor_ids)
    for name, model in models.items():
        own = set(model.sensor_ids)
        if own != network:
            extra, lacking = own - network, network - own
            return (
                f"{name} forecasts {len(own)} sensors, the running service {len(network)}"
                + (f"; {len(extra)} are not in its network ({_listed(extra)})" if extra else "")
                + (f"; it lacks {len(lacking)} ({_listed(lacking)})" if lacking else "")
                + ": a service forecasts one sensor network, restart it to change networks"
            )
        if model.window > window:
            return (
                f"{name} reads a window of {model.window} ticks, the running service keeps "
                f"{window}: restart the service to serve it"
            )
    old = {slot.name: slot.model for slot in running}
    for name, horizon in alert_forecasters.items():
        judged = models.get(name)
        if judged is None:
            return (
                f"the alert detectors judge the forecasts of {name!r}, which the new serving "
                "set lacks: keep it served, or restart the service"
            )
        if judged.horizon < horizon:
            return (
                f"the alert detectors judge {name}'s forecasts {horizon} steps ahead, the new "
                f"version forecasts {judged.horizon}: restart the service to serve it"
            )
        if name in old and tuple(judged.sensor_ids) != tuple(old[name].sensor_ids):
            return (
                f"the new version of {name} lists its sensors in another order than the "
                "running one, whose forecasts the alert detectors hold: restart the service "
                "to serve it"
            )
    return None


def alert_forecasters(hook: Any) -> dict[str, int]:
    """The models whose forecasts ``hook``'s detectors judge, with the horizon each needs
    (``pipeline.alerts.hook.ServiceAlerts``; nothing for other hooks)."""
    needs: dict[str, int] = {}
    for slot in getattr(hook, "slots", ()):
        name = getattr(slot, "forecaster", None)
        if name:
            needs[name] = max(needs.get(name, 0), int(getattr(slot, "span", 1)))
    return needs


def version_rows(
    slots: Sequence[ModelSlot],
    versions: Mapping[str, Versioned],
    stored: Sequence[VersionRow],
    since_ms: int,
    loaded_ms: int,
) -> list[VersionRow]:
    """Rows for the store's ``model_versions``: each slot whose version differs from the
    latest the store holds for its model, from tick ``since_ms`` on."""
    latest = {row.model: row.version for row in stored}  # rows are oldest first
    rows = []
    for slot in slots:
        known = versions.get(slot.name)
        if known is None or latest.get(slot.name) == known.version:
            continue
        rows.append(
            VersionRow(slot.name, known.version, known.label, known.run_id, since_ms, loaded_ms)
        )
    return rows
