"""``forecast_flow``: scheduled batch forecasts of the champion and its challengers.

Every run (every five minutes when deployed):

1. loads every bundle of the model directory and reads ``champion.json`` (which one
   is the champion; the others are challengers);
2. reads the newest closed window of the service's store (:mod:`pipeline.service.store_reads`);
3. forecasts it with every model, each forecast then corrected for the sensors whose
   level moved since training as ``roadcast serve`` corrects its own (``level_half_life``;
   :mod:`models.forecasters.level`): each model's correction is rebuilt by replaying the
   store's closed ticks up to the window's last one
   (:func:`pipeline.service.level_replay.replay_levels`), so the flow and the service
   publish the same forecasts, and in shadow mode the challengers are judged as the
   champion is;
4. stores the forecasts in the store (so the report flow scores them like the
   service's own), each only if the store holds none of its model at that tick;
5. publishes the forecasts it stored to ``roadcast.forecasts`` through the service's
   encoder, in the deployment's wire (``ROADCAST_FORECAST_WIRE``: v1 one record per
   sensor keyed by sensor id, v2 one frame per model);
6. records a table artifact (``roadcast-forecast-latest``).

Where this helps: a service running only the champion (``roadcast serve --only``)
while the flow forecasts the challengers in batch (shadow mode), or a deployment
without the always-on service.

Delivery: the store decides who publishes. Forecasts are keyed by (model, issue tick)
in the store, and a run publishes only the forecasts it stored itself, in one
transaction that skips a model the store already holds at that tick (the service's
forecast, an earlier run's, or that of a run racing this one, a served and a ``prefect
deploy`` deployment each having their own concurrency limit). So two runs never both
publish a tick, and no stored forecast is replaced by another version's. Publishing is
at least once: a publish that fails after its retries removes the forecasts this run
stored (the run fails), so a later run at the same tick publishes them again, and a
retried publish re-sends the records the broker took before it failed. A repeated
record has the same key (the sensor), model and issue time, and the last copy holds
the stored values: a consumer that needs each once keys on (model, sensor, issue time).
A run killed between storing and publishing leaves its forecasts stored and unpublished.

Loading bundles, reading and writing the store (the level replay included) and
publishing are retried (I/O); forecasting is not. A model whose forecasts fail in the
level replay is published uncorrected, with one warning.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from flows.artifacts import KEYS, publish_table
from flows.io_tasks import IO_TASK, check_lengths
from models.bundle import duration_text
from models.forecasters.base import Forecast, Forecaster
from models.panel import SensorPanel
from pipeline.model_dir import bundles_dir, read_champion
from pipeline.service.config import ServiceConfig

if TYPE_CHECKING:
    from pipeline.service.store import Store
    from pipeline.service.store_rows import ForecastRows


# The flow parameter's default: the half-life the service writing the store corrects with
# (recorded in its state), or the service's default where no service recorded one.
LEVEL_HALF_LIFE = "service"


def parse_half_life(text: str) -> pd.Timedelta | None:
    """``level_half_life`` (``6h``, ``30min``, ``off``) as ``roadcast serve
    --level-half-life`` takes it; None for ``off``.

    Raises
    ------
    ValueError
        Naming the parameter and what it accepts.
    """
    import typer

    from flows.cli.options import parse_duration

    try:
        value = parse_duration(str(text), "level_half_life", allow_off=True)
        return ServiceConfig(level_half_life=value).level_half_life
    except typer.BadParameter as exc:
        raise ValueError(f"level_half_life: {exc.message}") from None
    except ValueError as exc:
        raise ValueError(f"{exc} (level_half_life={text!r})") from None


def check_half_life(text: str) -> None:
    """Refuse a ``level_half_life`` parameter that is neither ``service`` nor a
    half-life :func:`parse_half_life` takes (``ValueError`` naming it)."""
    if str(text).strip().lower() != LEVEL_HALF_LIFE:
        parse_half_life(text)


def resolve_half_life(text: str, recorded: str | None) -> tuple[pd.Timedelta | None, str | None]:
    """The half-life the flow corrects with, and a warning when it is not the one the
    service recorded in the store (``recorded``; None: no service recorded one).
    ``text`` ``service`` takes the recorded one, else the service's default."""
    from pipeline.service.state import half_life_text

    default = half_life_text(ServiceConfig.level_half_life)
    if str(text).strip().lower() == LEVEL_HALF_LIFE:
        return parse_half_life(recorded or default), None
    value = parse_half_life(text)
    if recorded is None or parse_half_life(recorded) == value:
        return value, None
    return value, (
        f"level_half_life={text} is not the service's ({recorded}, as it recorded in the "
        "store): the flow's forecasts differ from the ones the service publishes; leave "
        "the parameter at 'service' to follow it"
    )


@task(name="service-half-life", **IO_TASK)
def service_half_life(store_path: str) -> str | None:
    """The level half-life the service writing the store at ``store_path`` corrects
    with (None: no service recorded one)."""
    from pipeline.service.state import LEVEL_KEY
    from pipeline.service.store_reads import reading_store

    with reading_store(store_path) as store:
        value = store.state().get(LEVEL_KEY)
    return None if value is None else str(value)


@task(name="load-models", **IO_TASK)
def load_models(models_dir: str) -> tuple[dict[str, Forecaster], str | None]:
    """Every bundle of ``models_dir`` (champion first) and the champion's name (or None)."""
    from pipeline.model_dir import load_bundles

    folder = bundles_dir(models_dir)
    models = load_bundles(folder)
    champion = read_champion(folder)
    name = champion.champion if champion is not None and champion.champion in models else None
    if name is not None:
        models = {name: models[name], **{k: v for k, v in models.items() if k != name}}
    return models, name


@task(name="read-latest-window", **IO_TASK)
def read_window(
    store_path: str, sensor_ids: tuple[str, ...], window: int, models_dir: str
) -> SensorPanel:
    """The newest ``window`` closed ticks of ``sensor_ids`` (the sensors of the models in
    ``models_dir``, all of which the store must know) from the store."""
    from pipeline.service.store_reads import latest_window, reading_store, require_sensors

    with reading_store(store_path) as store:
        require_sensors(store, sensor_ids, models_dir)
        return latest_window(store, sensor_ids, window)


@task(name="already-forecast", **IO_TASK)
def already_forecast(store_path: str, names: tuple[str, ...], issued_ms: int) -> list[str]:
    """The models of ``names`` with a forecast issued at ``issued_ms`` in the store (by the
    service, or an earlier run of this flow)."""
    from pipeline.service.store_reads import reading_store

    with reading_store(store_path) as store:
        none = np.empty(0, np.int64)
        return [n for n in names if issued_ms in store.recent_forecasts(n, issued_ms, none, 1)[0]]


@task(name="forecast", cache_policy=NONE)
def forecast_all(models: dict[str, Forecaster], window: SensorPanel) -> dict[str, Forecast]:
    """Every model's forecast from the end of ``window`` (each on its own sensors); a
    model trained on another time step or grid offset than the window's is refused."""
    from models.bundle import (
        grid_offset,
        offset_text,
        other_offset,
        other_step,
        step_seconds,
        step_text,
    )

    offset_s = grid_offset(window.timestamps[-1], step_seconds(window.freq))
    out = {}
    for name, model in models.items():
        if (step_s := other_step(model, window.freq)) is not None:
            raise ValueError(
                f"model {name!r} was trained on {step_text(step_s)} steps; the store's "
                f"ticks are {step_text(window.freq.total_seconds())}: serve and forecast "
                "with a model trained at the service's tick"
            )
        if offset_s is not None and (trained := other_offset(model, offset_s)) is not None:
            raise ValueError(
                f"model {name!r} was trained on ticks at {offset_text(trained)} past the tick "
                f"grid of 1970-01-01T00:00Z; the store's ticks lie at {offset_text(offset_s)}: "
                "serve and forecast with a model trained on the service's grid"
            )
        own = window if window.sensor_ids == model.sensor_ids else window.select(model.sensor_ids)
        out[name] = model.predict(own)
    return out


def level_corrected(
    store: Store,
    models: dict[str, Forecaster],
    forecasts: dict[str, Forecast],
    window: SensorPanel,
    half_life: pd.Timedelta,
) -> tuple[dict[str, Forecast], dict[str, str], int]:
    """``forecasts`` (issued by ``models`` at the end of ``window``, read from ``store``)
    corrected as the service corrects its own (:func:`models.forecasters.level.follow_level`),
    each model's correction replayed from the store's closed ticks up to the window's
    last one. Returns the forecasts, ``{model: error}`` of those left uncorrected because
    their replay failed, and the number of ticks replayed."""
    from dataclasses import replace

    from models.forecasters.level import follow_level
    from pipeline.service.level_replay import replay_levels

    step_ms = int(window.freq.value // 1_000_000)
    issued_ms = int(window.timestamps[-1].value // 1_000_000)
    offset_ms = issued_ms % step_ms
    last = (issued_ms - offset_ms) // step_ms
    mine = {name: models[name] for name in forecasts}
    replay = replay_levels(
        store,
        mine,
        window.sensor_ids,
        last_closed=last,
        tick=window.freq,
        offset=pd.Timedelta(offset_ms, "ms"),
        half_life=half_life,
        window=window.n_time,
    )
    out = dict(forecasts)
    for name, fc in forecasts.items():
        if name in replay.failed:
            continue
        mean, lower, upper = follow_level(
            replay.levels[name], mine[name], last, fc.mean, fc.lower, fc.upper
        )
        out[name] = replace(fc, mean=mean, lower=lower, upper=upper)
    return out, replay.failed, replay.ticks


@task(name="follow-levels", **IO_TASK)
def follow_levels(
    store_path: str,
    models: dict[str, Forecaster],
    forecasts: dict[str, Forecast],
    window: SensorPanel,
    half_life: pd.Timedelta | None,
) -> tuple[dict[str, Forecast], dict[str, str], int]:
    """:func:`level_corrected` on the store at ``store_path``; ``forecasts`` as they are
    when ``half_life`` is None (the correction off)."""
    from pipeline.service.store_reads import reading_store

    if half_life is None:
        return dict(forecasts), {}, 0
    with reading_store(store_path) as store:
        return level_corrected(store, models, forecasts, window, half_life)


@task(name="publish-forecasts", **IO_TASK)
def publish(forecasts: dict[str, Forecast], bootstrap: str | None) -> dict[str, dict[str, int]]:
    """Publish every model's forecast in the deployment's wire (``ROADCAST_FORECAST_WIRE``,
    the service's encoder); returns ``{model: {published, skipped}}`` in sensors."""
    from pipeline.kafka.clients import ensure_topics, make_producer
    from pipeline.kafka.forecast_wire import ForecastEncoder, send_forecast
    from pipeline.kafka.outbox import Outbox
    from pipeline.settings import load_settings

    settings = load_settings(bootstrap_servers=bootstrap)
    ensure_topics(settings, topics=[settings.topic_forecasts])
    # The service's outbox: a send the broker rejects fails the task (and its retry),
    # instead of vanishing in a future nobody reads.
    outbox = Outbox(make_producer(settings))
    counts: dict[str, dict[str, int]] = {}
    try:
        for name, fc in forecasts.items():
            encoded = ForecastEncoder(fc.sensor_ids, settings.forecast_wire).encode(
                name, fc.issued_at, fc.targets, fc.mean, fc.lower, fc.upper,
                max_bytes=outbox.max_message_bytes,
            )  # fmt: skip
            send_forecast(outbox, settings.topic_forecasts, encoded)
            counts[name] = {"published": len(encoded.columns), "skipped": len(encoded.skipped)}
        outbox.flush(30.0)
    finally:
        outbox.close(10.0)
    return counts


def _rows(store: Store, forecasts: dict[str, Forecast]) -> list[ForecastRows]:
    """``forecasts`` as the store's rows (one per sensor with a finite forecast, as the
    service stores them)."""
    from pipeline.service.store_rows import ForecastRows

    return [
        ForecastRows.from_arrays(
            name,
            int(fc.issued_at.value // 1_000_000),
            store.sensor_keys(list(fc.sensor_ids)),
            fc.mean,
            fc.lower,
            fc.upper,
        )
        for name, fc in forecasts.items()
    ]


@task(name="store-forecasts", **IO_TASK)
def store_forecasts(
    store_path: str, forecasts: dict[str, Forecast], unpublished: bool = True
) -> dict[str, int]:
    """Store the forecasts of the models the store holds none of at their issue time (one
    transaction), listed as still to publish when ``unpublished``; returns ``{model: rows
    written}`` for those, the ones this run publishes."""
    from pipeline.service.store import Store

    with Store(store_path) as store:
        rows = _rows(store, forecasts)
        stored = set(store.add_forecasts(rows, unpublished=unpublished))
    # A model without a finite forecast has nothing to store and publishes nothing.
    return {r.model: len(r.sensors) for r in rows if r.model in stored or not len(r.sensors)}


@task(name="unpublished-forecasts", **IO_TASK)
def unpublished_forecasts(
    store_path: str,
) -> tuple[dict[int, dict[str, Forecast]], list[tuple[str, int]]]:
    """The forecasts an earlier run stored and did not publish (it ended between the
    two), per issue tick (ms), and those of the list the store no longer holds."""
    from pipeline.service.store_reads import reading_store

    out: dict[int, dict[str, Forecast]] = {}
    gone: list[tuple[str, int]] = []
    with reading_store(store_path) as store:
        pending = store.unpublished_forecasts()
        step = pd.Timedelta(int(store.state().get("tick_ms") or 0), "ms") if pending else None
        for name, issued_ms in pending:
            block = store.forecast_block(name, issued_ms)
            ids, (mean, lower, upper) = block or ((), (None, None, None))
            if mean is None or not step:  # pruned (a store without its tick step has none)
                gone.append((name, issued_ms))
                continue
            issued = pd.Timestamp(issued_ms, unit="ms", tz="UTC")
            out.setdefault(issued_ms, {})[name] = Forecast(
                name, tuple(ids), issued,
                pd.date_range(issued + step, periods=mean.shape[1], freq=step),
                mean.T, None if lower is None else lower.T, None if upper is None else upper.T,
            )  # fmt: skip
    return out, gone


@task(name="mark-published", **IO_TASK)
def mark_published(store_path: str, forecasts: list[tuple[str, int]]) -> None:
    """Take the forecasts ``(model, issued_ms)`` off the store's list of those to publish."""
    from pipeline.service.store import Store

    with Store(store_path) as store:
        store.mark_published(forecasts)


def publish_leftovers(store_path: str, bootstrap: str | None) -> int:
    """Publish what earlier runs stored and did not publish, oldest tick first, each
    tick taken off the list once Kafka acknowledged it; returns the forecasts published."""
    leftovers, gone = unpublished_forecasts(store_path)
    log = get_run_logger()
    if gone:
        mark_published(store_path, gone)
        log.warning(
            "not published, the store no longer holds them (pruned past its retention): "
            f"the forecasts an earlier run left unpublished, {_listed(gone)}"
        )
    for issued_ms, forecasts in leftovers.items():
        publish(forecasts, bootstrap)
        mark_published(store_path, [(name, issued_ms) for name in forecasts])
    if leftovers:
        done = [(name, ms) for ms, group in leftovers.items() for name in group]
        log.warning(f"published the forecasts an earlier run stored but did not: {_listed(done)}")
    return sum(len(group) for group in leftovers.values())


def _listed(forecasts: list[tuple[str, int]]) -> str:
    """``model at issue time, ...`` of ``(model, issued_ms)`` pairs, the first five."""
    shown = ", ".join(
        f"{name} at {pd.Timestamp(ms, unit='ms', tz='UTC').isoformat()}"
        for name, ms in forecasts[:5]
    )
    return shown + (f" and {len(forecasts) - 5} more" if len(forecasts) > 5 else "")


def summary_rows(
    forecasts: dict[str, Forecast], champion: str | None, counts: dict[str, dict[str, int]]
) -> list[dict[str, Any]]:
    """One artifact row per model: role, issue time, network-mean forecast by lead time."""
    rows = []
    for name, fc in forecasts.items():
        row: dict[str, Any] = {
            "model": name,
            "role": "champion" if name == champion else "challenger",
            "issued_at": fc.issued_at.isoformat(),
            "sensors": len(fc.sensor_ids),
            "published": counts.get(name, {}).get("published", 0),
            "not published (non-finite)": counts.get(name, {}).get("skipped", 0),
        }
        freq = fc.targets[1] - fc.targets[0] if len(fc.targets) > 1 else None
        for step in sorted({1, 3, 6, 12, fc.horizon}):
            if step > fc.horizon:
                continue
            lead = f"+{int(step * freq.total_seconds() / 60)} min" if freq else f"+{step}"
            row[f"mean {lead}"] = round(float(np.nanmean(fc.mean[step - 1])), 3)
        if fc.lower is not None and fc.upper is not None:
            width = float(np.nanmean(fc.upper[-1] - fc.lower[-1]))
            row[f"mean {fc.level:.0%} interval width at the horizon"] = round(width, 3)
        rows.append(row)
    return rows


@flow(name="roadcast-forecast", log_prints=True)
def forecast_flow(
    models_dir: str | None = None,
    store: str | None = None,
    bootstrap: str | None = None,
    publish_to_kafka: bool = True,
    level_half_life: str = LEVEL_HALF_LIFE,
) -> dict[str, Any]:
    """Forecast the store's latest window with the champion and the challengers.

    Parameters
    ----------
    models_dir : a ``roadcast train`` output or its ``bundles/``; default
        ``ROADCAST_MODEL_DIR``.
    store : the service's SQLite store; default ``ROADCAST_STORE_PATH``.
    bootstrap : Kafka ``HOST:PORT[,...]``; default ``ROADCAST_BOOTSTRAP_SERVERS``.
    publish_to_kafka : False stores and reports without publishing (no broker needed).
    level_half_life : the half-life of the correction that moves each forecast to a
        sensor's level where it moved since training, as ``roadcast serve
        --level-half-life`` takes it (``6h``, ``30min``; ``off``: the models' own
        forecasts). ``service`` (the default): the one the service writing the store
        recorded there, so the flow publishes the forecasts the service would (the
        service's default where none is recorded); another value than the service's is
        used, with a warning.

    Returns ``{"issued_at", "champion", "models": {name: {published, skipped}},
    "stored_rows"}``.
    """
    from pipeline.settings import load_settings

    check_lengths(
        models_dir=models_dir, store=store, bootstrap=bootstrap, level_half_life=level_half_life
    )
    check_half_life(level_half_life)
    settings = load_settings(model_dir=models_dir, store_path=store, bootstrap_servers=bootstrap)
    log = get_run_logger()
    half_life, mismatch = resolve_half_life(
        level_half_life, service_half_life(str(settings.store_path))
    )
    if mismatch:
        log.warning(mismatch)
    if publish_to_kafka:
        publish_leftovers(str(settings.store_path), settings.bootstrap_servers)
    models, champion = load_models(str(settings.model_dir))
    if champion is None:
        recorded = read_champion(bundles_dir(settings.model_dir))
        log.warning(
            "%s: every model is a challenger (train with the train flow to promote one)",
            f"no champion.json in {settings.model_dir}"
            if recorded is None
            else f"the champion {recorded.champion!r} of champion.json is not served",
        )
    union: dict[str, None] = {}
    for model in models.values():
        union.update(dict.fromkeys(model.sensor_ids))
    window = read_window(
        str(settings.store_path),
        tuple(union),
        max(m.window for m in models.values()),
        str(settings.model_dir),
    )
    silent = int((~window.mask.any(axis=1)).sum())
    if silent:
        log.warning(
            f"{silent} of the {window.n_time} ticks the models read have no reading (a store "
            "younger than the window, or every sensor silent): the forecasts fill them in"
        )
    issued = window.timestamps[-1]
    horizon = max(m.horizon for m in models.values())
    if pd.Timestamp.now(tz="UTC") - issued > horizon * window.freq:
        log.warning(
            f"the store's newest closed tick, {issued.isoformat()}, is more than the "
            f"forecasts' {horizon} steps old: every target is already past (is `roadcast "
            "serve` running and fed?)"
        )
    issued_ms = int(issued.value // 1_000_000)
    done = already_forecast(str(settings.store_path), tuple(models), issued_ms)
    todo = {name: m for name, m in models.items() if name not in done}
    computed = forecast_all(todo, window) if todo else {}
    if computed:
        started = time.perf_counter()
        computed, failed, ticks = follow_levels(
            str(settings.store_path), todo, computed, window, half_life
        )
        for name, error in failed.items():
            log.warning(
                f"the level correction of {name} could not be rebuilt from the store ({error}): "
                f"its forecasts at {issued.isoformat()} are the model's own (uncorrected)"
            )
        if half_life is not None:
            seconds = time.perf_counter() - started
            span = duration_text(half_life.total_seconds())
            log.info(
                f"level correction: {ticks} closed ticks replayed in {seconds:.2f} s "
                f"(half-life {span})"
            )
    # Storing claims the tick: a model another run (or the service) stored meanwhile
    # is left to it, so no tick is published twice. The store lists what it claimed as
    # still to publish until Kafka acknowledged it: a run that ends between the two
    # leaves it to the next run (publish_leftovers), not to nobody.
    stored = (
        store_forecasts(str(settings.store_path), computed, unpublished=publish_to_kafka)
        if computed
        else {}
    )
    done += [n for n in computed if n not in stored]
    if done:
        log.info(f"already forecast at {issued.isoformat()}, skipped: {', '.join(done)}")
    forecasts = {n: fc for n, fc in computed.items() if n not in done}
    counts = {name: {"published": 0, "skipped": 0} for name in forecasts}
    if publish_to_kafka and forecasts:
        try:
            counts = publish(forecasts, settings.bootstrap_servers)
        except Exception:
            log.warning(
                f"publishing failed: the forecasts at {issued.isoformat()} stay in the store "
                "listed as unpublished, and the next run publishes them first"
            )
            raise
        mark_published(str(settings.store_path), [(n, issued_ms) for n in forecasts])
    rows = sum(stored.values())
    if forecasts:
        publish_table(
            KEYS["forecast_latest"],
            summary_rows(forecasts, champion, counts),
            description=f"Forecasts issued at {issued.isoformat()} from {Path(settings.model_dir)}",
        )
    print(
        f"forecast issued at {issued.isoformat()} by {len(forecasts)} models "
        f"(champion: {champion or 'none'}; already forecast: {', '.join(done) or 'none'}); "
        f"{rows:,} forecasts stored"
    )
    return {
        "issued_at": issued.isoformat(),
        "champion": champion,
        "models": counts,
        "already_forecast": done,
        "stored_rows": rows,
    }
