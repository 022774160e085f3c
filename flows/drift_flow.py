"""``drift_flow``: the drift watcher. Live accuracy against the served versions' own, as a
Prefect event that retrains.

Every run (every 15 minutes when deployed):

1. reads the serving set of the model directory (each model's version, its validation
   MAE) and, from the service's store, since when each version forecasts (a store whose
   newest tick is old, the service stopped, is judged all the same, with a warning);
2. judges every model and horizon (:func:`pipeline.drift.assess`): the live MAE over the
   last ``ROADCAST_DRIFT_WINDOW_TICKS`` against the validation MAE
   (``ROADCAST_DRIFT_RATIO``) and against the ticks before (``..._BASELINE_RATIO``);
3. for each model that drifted, emits the Prefect event :data:`EVENT` (resource
   ``roadcast.model.<name>``, payload: version, horizons, reasons), unless one was
   emitted for the same version less than ``ROADCAST_DRIFT_COOLDOWN_H`` ago
   (``<bundles>/drift.json`` remembers). The automation declared on the train
   deployment (:mod:`flows.deploy`) runs the train flow on it;
4. publishes the verdicts as a table artifact (``roadcast-drift``).

Sending the event: the events client confirms each event (a websocket ping after it),
every attempt has a deadline, and a server that does not answer is retried with a
doubling delay, each failure logged; after the last attempt the run fails, naming the
events that were not sent (the next run judges again). The service never talks to
Prefect: this flow reads its store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task

from flows.artifacts import KEYS, publish_table
from flows.io_tasks import IO_TASK, check_lengths
from flows.report_flow import stale_note
from pipeline.drift import DriftConfig, Verdict

EVENT = "roadcast.model.drift"
RESOURCE_PREFIX = "roadcast.model."
STATE_FILE = "drift.json"
# Sending one event: attempts, the first delay (doubling), each attempt's deadline.
ATTEMPTS = 5
FIRST_DELAY_S = 2.0
ATTEMPT_TIMEOUT_S = 10.0

log = logging.getLogger("roadcast.drift")


class DriftEventError(RuntimeError):
    """Drift events could not be sent to Prefect; the message names them."""


@task(name="assess-drift", **IO_TASK)
def assess_task(store_path: str, models_dir: str, config: DriftConfig) -> list[Verdict]:
    """Every served model and horizon judged on the store's latest ticks; a model
    directory without bundles is refused (a watch over nothing would always pass)."""
    from pipeline.drift import assess, served_models
    from pipeline.model_dir import no_bundles
    from pipeline.registry.versions import served_versions
    from pipeline.service.store_reads import reading_store, tick_ms

    versions = served_versions(models_dir)
    if not versions:
        raise no_bundles(models_dir)
    with reading_store(store_path) as store:
        step = tick_ms(store)
        served, notes = served_models(store, versions, tick_ms=step)
        newest = store.last_ticks(1)
        if newest:
            last = pd.Timestamp(int(newest[-1].ts_ms), unit="ms", tz="UTC")
            stale = stale_note(last, step / 60_000, pd.Timestamp.now(tz="UTC"))
            if stale is not None:
                notes = [*notes, f"{stale}; the verdicts judge those old ticks"]
        for note in notes:
            get_run_logger().warning(note)
        return assess(store, served, config, tick_ms=step)


def drift_event(model: str, verdicts: list[Verdict], store: str, models_dir: str) -> Any:
    """The Prefect event saying ``model`` drifted (``verdicts``: its drifted horizons)."""
    from prefect.events import Event, Resource

    version = verdicts[0].version
    return Event(
        event=EVENT,
        resource=Resource(
            {
                "prefect.resource.id": f"{RESOURCE_PREFIX}{model}",
                "prefect.resource.name": model,
                "roadcast.version": version,
            }
        ),
        payload={
            "model": model,
            "version": version,
            "horizons": [v.to_dict() for v in verdicts],
            "store": store,
            "models_dir": models_dir,
        },
    )


async def _send(event: Any, timeout_s: float) -> None:
    from prefect.events.clients import get_events_client

    async with asyncio.timeout(timeout_s):
        # checkpoint_every=1: a ping after the event, so a return means the server has it
        async with get_events_client(reconnection_attempts=0, checkpoint_every=1) as client:
            await client.emit(event)


def send_event(
    event: Any,
    *,
    attempts: int = ATTEMPTS,
    first_delay_s: float = FIRST_DELAY_S,
    timeout_s: float = ATTEMPT_TIMEOUT_S,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Send ``event`` to the Prefect server (``PREFECT_API_URL``), retrying with a doubling
    delay; True once the server confirmed it, False (logged) after the last attempt."""
    from prefect.utilities.asyncutils import run_coro_as_sync

    delay = first_delay_s
    for attempt in range(1, attempts + 1):
        try:
            run_coro_as_sync(_send(event, timeout_s))
            log.info(
                "drift_event_sent", extra={"fields": {"event": event.event, "id": str(event.id)}}
            )
            return True
        except Exception as exc:  # unreachable, refused, timed out: all retried
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            last = attempt == attempts
            fields = {"attempt": attempt, "of": attempts, "error": error}
            if not last:
                fields["retry_in_s"] = delay
            log.warning("drift_event_not_sent", extra={"fields": fields})
            if last:
                break
            sleep(delay)
            delay *= 2
    log.error(
        "drift_event_failed",
        extra={"fields": {"event": event.event, "resource": event.resource.id}},
    )
    return False


def _due(state: dict[str, Any], model: str, version: str, cooldown_s: float, now: float) -> bool:
    """Whether ``model``'s ``version`` may send an event: none sent for it in ``state``
    (an entry with no readable time counts as none), or the last one ``cooldown_s`` ago."""
    last = state.get(model)
    if not isinstance(last, dict) or last.get("version") != version:
        return True
    emitted = last.get("emitted_at_s")
    if isinstance(emitted, bool) or not isinstance(emitted, int | float):
        return True
    return not now - emitted < cooldown_s


def _read_state(path: Path, logger: Any) -> dict[str, Any]:
    """``drift.json``; an unreadable one is reported and read as empty (cooldowns lost)."""
    import json

    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raw = exc
    if isinstance(raw, dict):
        return raw
    logger.warning(
        f"{path} is unreadable ({raw if isinstance(raw, Exception) else 'not an object'}): "
        "the drift events' cooldowns start afresh, and it is rewritten when one is sent"
    )
    return {}


@task(name="emit-drift-events")
def emit_task(
    verdicts: list[Verdict], store: str, models_dir: str, cooldown_h: float
) -> dict[str, str]:
    """One event per drifted model (cooldown respected); returns ``{model: outcome}``."""
    return emit_events(verdicts, store, models_dir, cooldown_h, get_run_logger())


def emit_events(
    verdicts: list[Verdict], store: str, models_dir: str, cooldown_h: float, logger: Any
) -> dict[str, str]:
    """:func:`emit_task`'s work. No event is sent unless ``drift.json`` can be written:
    an event whose cooldown cannot be recorded would be sent again on every run.

    Raises
    ------
    DriftEventError
        ``drift.json`` cannot be written (the message names it and why).
    """
    from pipeline.model_dir import bundles_dir, write_json

    path = bundles_dir(models_dir) / STATE_FILE
    state = _read_state(path, logger)
    drifted: dict[str, list[Verdict]] = {}
    for verdict in verdicts:
        if verdict.drifted:
            drifted.setdefault(verdict.model, []).append(verdict)
    now = time.time()
    due = {
        m
        for m, found in drifted.items()
        if _due(state, m, found[0].version, cooldown_h * 3600.0, now)
    }
    if due:
        try:
            write_json(path, state)
        except OSError as exc:
            raise DriftEventError(
                f"cannot record drift events in {path} ({exc.strerror or exc}); no event "
                "was sent: make the model directory writable for the drift flow"
            ) from None
    outcome: dict[str, str] = {}
    for model, found in drifted.items():
        version = found[0].version
        if model not in due:
            outcome[model] = "cooling down"
            continue
        reasons = "; ".join(f"{v.horizon} steps: {', '.join(v.reasons)}" for v in found)
        logger.warning(f"{model}@{version} drifted: {reasons}")
        event = drift_event(model, found, store, models_dir)
        if send_event(event):
            state[model] = {"version": version, "emitted_at_s": now, "event": str(event.id)}
            write_json(path, state)
            outcome[model] = "event sent"
        else:
            outcome[model] = "event not sent"
    return outcome


@flow(name="roadcast-drift", log_prints=True)
def drift_flow(
    store: str | None = None,
    models_dir: str | None = None,
    ratio: float | None = None,
    baseline_ratio: float | None = None,
    min_count: int | None = None,
) -> dict[str, Any]:
    """Judge the served models' live accuracy; emit :data:`EVENT` for those that drifted.

    Parameters
    ----------
    store : the service's SQLite store; default ``ROADCAST_STORE_PATH``.
    models_dir : the model directory the service serves; default ``ROADCAST_MODEL_DIR``.
    ratio, baseline_ratio, min_count : override ``ROADCAST_DRIFT_*``.

    Returns ``{"verdicts": [...], "events": {model: outcome}}``.

    Raises
    ------
    DriftEventError
        When a drift event could not be sent after every attempt.
    """
    from pipeline.settings import load_settings

    check_lengths(store=store, models_dir=models_dir)
    settings = load_settings(store_path=store, model_dir=models_dir)
    config = DriftConfig(
        ratio=settings.drift_ratio if ratio is None else ratio,
        baseline_ratio=settings.drift_baseline_ratio if baseline_ratio is None else baseline_ratio,
        min_count=settings.drift_min_count if min_count is None else min_count,
        window_ticks=settings.drift_window_ticks,
        baseline_ticks=settings.drift_baseline_ticks,
    )
    store_path, folder = str(settings.store_path), str(settings.model_dir)
    verdicts = assess_task(store_path, folder, config)
    publish_table(
        KEYS["drift"],
        [
            {
                "model": v.model, "version": v.version, "horizon": v.horizon,
                "live MAE": v.live_mae, "n": v.count, "validation MAE": v.valid_mae,
                "baseline MAE": v.baseline_mae, "drift": "; ".join(v.reasons) or "-",
            }
            for v in verdicts
        ],
        description=f"Live accuracy against validation and baseline ({config})",
    )  # fmt: skip
    events = emit_task(verdicts, store_path, folder, settings.drift_cooldown_h)
    failed = sorted(m for m, outcome in events.items() if outcome == "event not sent")
    thin = sum(v.live_mae is None or v.count < config.min_count for v in verdicts)
    print(
        f"drift: {sum(v.drifted for v in verdicts)} of {len(verdicts)} (model, horizon) pairs "
        f"drifted, {thin} with fewer than {config.min_count} live values to judge; "
        f"events {events}"
    )
    if failed:
        raise DriftEventError(
            f"the drift events of {failed} could not be sent to Prefect "
            f"({ATTEMPTS} attempts); the next run judges again"
        )
    return {"verdicts": [v.to_dict() for v in verdicts], "events": events}
