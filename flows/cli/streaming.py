"""Commands of the streaming side: ``broker``, ``replay``, ``serve``, ``status``, ``alerts``
and ``demo`` (all of them together on one machine)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from flows.cli.errors import HelpGroup, fail
from flows.cli.options import ADJACENCY, INDEX_COL, NO_INDEX, TIMEZONE
from flows.cli.signals import sigterm_as_interrupt

if TYPE_CHECKING:
    import pandas as pd


def broker(
    port: int = typer.Option(
        None, "--port", min=0, max=65535, help="Port to listen on (default or 0: a free one)."
    ),
    log: str = typer.Option(None, "--log", help="Broker log file (default: in the temp dir)."),
) -> None:
    """Run an embedded Kafka-compatible broker (Tansu, in memory) until Ctrl-C."""

    from pipeline.kafka.broker import BrokerError, serve_forever

    if log is not None and (
        not log.strip()
        or Path(log).is_dir()
        or any(p.exists() and not p.is_dir() for p in Path(log).parents)
    ):
        raise typer.BadParameter(f"{log!r} cannot be written as a log file", param_hint="--log")
    try:
        serve_forever(port or None, log_path=log)
    except BrokerError as exc:
        fail(exc)


def replay(
    data: str = typer.Argument(
        ...,
        help="Dataset spec: los-loop, simulated, csv:PATH, npz:PATH, h5:PATH, parquet:PATH, ...",
    ),
    bootstrap: str = typer.Option(
        None, "--bootstrap", help="HOST:PORT[,...] (default: ROADCAST_BOOTSTRAP_SERVERS)."
    ),
    speedup: float = typer.Option(
        0.0, "--speedup", min=0.0, help="0 = as fast as possible; X = X x real time."
    ),
    limit: int = typer.Option(None, "--limit", min=0, help="Replay at most N time steps."),
    topic: str = typer.Option(None, "--topic", help="Default: the readings topic of the settings."),
    adjacency: str = ADJACENCY,
    index_col: str = INDEX_COL,
    no_index: bool = NO_INDEX,
    timezone: str = TIMEZONE,
) -> None:
    """Replay a data set into Kafka as JSON readings keyed by sensor id, in time order."""
    import math

    from flows.cli.options import option_settings
    from flows.panels import read_panel
    from pipeline.kafka.clients import (
        KafkaUnavailable,
        close_producer,
        ensure_topics,
        make_producer,
    )
    from pipeline.kafka.replay import ReplayError, ReplayInterrupted, check_replay
    from pipeline.kafka.replay import replay as run_replay

    if not math.isfinite(speedup):
        raise typer.BadParameter(
            f"{speedup}: must be a finite number (0: as fast as possible)", param_hint="--speedup"
        )
    settings = option_settings(bootstrap_servers=bootstrap, topic_readings=topic)
    # SIGTERM (systemd, docker stop) stops a replay as Ctrl-C does: flushed and counted.
    with sigterm_as_interrupt() as interruption:
        try:
            panel = read_panel(data, adjacency, None, index_col, no_index, timezone)
            for note in panel.notes:  # what the file left to an assumption
                typer.echo(note, err=True)
            check_replay(panel, speedup, limit)  # before the topic is made or anything sent
            target = settings.topic_readings
            ensure_topics(settings, topics=[target])
            producer = make_producer(settings)
            try:
                stats = run_replay(panel, producer, target, speedup=speedup, limit=limit)
            finally:
                close_producer(producer)
        except ReplayInterrupted as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(interruption.exit_code) from None
        except (KafkaUnavailable, ReplayError, ValueError, OSError) as exc:
            fail(exc)
    typer.echo(
        f"{stats.messages:,} readings of {stats.sensors} sensors over {stats.steps} steps "
        f"-> {target} in {stats.seconds:.1f} s ({stats.rate:,.0f} msg/s); "
        f"{stats.skipped_missing:,} missing readings not sent"
    )


def demo(
    data: str = typer.Option(
        None, "--data", help="Dataset spec (default: los-loop, else simulated)."
    ),
    out: str = typer.Option("demo-out", "--out", help="Output directory (bundles, store, report)."),
    max_ticks: int = typer.Option(
        144, "--max-ticks", help="Replay at most N ticks of the test part (0: all)."
    ),
    speedup: float = typer.Option(
        600.0, "--speedup", help="Replay pace, x real time (0 = as fast as possible)."
    ),
    models: str = typer.Option(
        None, "--models", help="Bundles to reuse (default OUT/bundles; trained when unusable)."
    ),
    epochs: int = typer.Option(
        20, "--epochs", help="At most N epochs of the neural models it trains."
    ),
    adjacency: str = ADJACENCY,
    index_col: str = INDEX_COL,
    no_index: bool = NO_INDEX,
    timezone: str = TIMEZONE,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Live progress."),
) -> None:
    """The main job: broker, quick models, the service, a replay, OUT/summary.json + report."""
    from flows.cli.errors import load_prefect
    from flows.cli.options import refuse_empty_out

    refuse_empty_out(out)
    if models and not Path(models).is_dir():  # a typo would otherwise cost a training
        what = "is a file, not a folder of bundles" if Path(models).exists() else "does not exist"
        raise typer.BadParameter(
            f"{models} {what}; leave --models out to train quick models",
            param_hint="--models",
        )
    from flows.demo.run import check_options

    try:  # an invalid option value is a usage error, before Prefect loads
        check_options(Path(out), max_ticks=max_ticks or None, speedup=speedup, epochs=epochs)
    except ValueError as exc:
        fail(exc, 2)
    load_prefect()
    from flows.demo.console import print_summary
    from flows.demo.run import DemoError, run_demo
    from pipeline.data.datasets import DatasetError
    from pipeline.kafka.broker import BrokerError

    # SIGTERM (kill, docker stop) stops the demo as Ctrl-C does: its service and broker
    # are stopped on the way out, and it says so.
    with sigterm_as_interrupt() as interruption:
        try:
            summary = run_demo(
                data,
                out=Path(out),
                max_ticks=max_ticks or None,
                speedup=speedup,
                model_dir=Path(models) if models else None,
                epochs=epochs,
                reading={
                    "adjacency": Path(adjacency) if adjacency else None,
                    "index_col": index_col,
                    "no_index": no_index,
                    "timezone": timezone,
                },
                progress=progress,
            )
        except KeyboardInterrupt:
            stopped = "the demo stopped, its service and broker with it"
            typer.echo(f"error: interrupted; {stopped}", err=True)
            raise typer.Exit(interruption.exit_code) from None
        except (DemoError, BrokerError, DatasetError, ValueError) as exc:
            fail(exc)
    print_summary(summary)
    typer.echo(f"wrote {Path(out) / 'summary.json'} and {Path(out) / 'report.md'}")
    if summary["lost"]:
        typer.echo(f"error: {summary['lost']} readings lost", err=True)
        raise typer.Exit(1)


def serve(
    models: str = typer.Option(
        None, "--models", help="Bundles folder (OUT/bundles) or one bundle [ROADCAST_MODEL_DIR]."
    ),
    bootstrap: str = typer.Option(
        None, "--bootstrap", help="HOST:PORT[,...] (default: ROADCAST_BOOTSTRAP_SERVERS)."
    ),
    group: str = typer.Option(None, "--group", help="Consumer group (default: roadcast)."),
    tick: str = typer.Option(
        None,
        "--tick",
        help="The data's time step, e.g. 15min (default: the step the models were trained on; "
        "5min when they record none). Ticks lie on the models' grid (30 minutes past the "
        "hour for hourly data stamped at :30 UTC).",
    ),
    allowed_lateness: str = typer.Option(
        "2min", "--allowed-lateness", help="How late a reading may arrive and still join its tick."
    ),
    store: str = typer.Option(None, "--store", help="SQLite store (default: ROADCAST_STORE_PATH)."),
    only: str = typer.Option(None, "--only", help="Comma-separated model names to load."),
    max_clock_skew: str = typer.Option(
        "1h", "--max-clock-skew", help="Dead-letter readings this far ahead of the clock ('off')."
    ),
    grace: str = typer.Option(
        "2s",
        "--grace",
        help="Close a tick this long after its first reading once most sensors reported it "
        "('off': wait for every sensor or the watermark).",
    ),
    down_after: int = typer.Option(
        3,
        "--down-after",
        min=0,
        help="Ticks in a row without a reading before a sensor is down (0: never).",
    ),
    poll_records: int = typer.Option(1000, "--poll-records", min=1, help="Records per poll batch."),
    rejoin_after: str = typer.Option(
        "30s",
        "--rejoin-after",
        help="Rejoin the group with a new consumer when a rebalance assigned nothing this long "
        "(keep well above the group's join time).",
    ),
    fast_store: bool = typer.Option(
        False, "--fast-store", help="synchronous=NORMAL: survives a crash, not a power cut."
    ),
    level_half_life: str = typer.Option(
        "6h",
        "--level-half-life",
        help="Follow a sensor whose level moved since training: add the recent mean of each "
        "model's errors there (this half-life) where it stands out of their noise ('off').",
    ),
    retain: str = typer.Option(
        "14d",
        "--retain",
        help="Event time the store keeps (readings, forecasts, accuracy, resolved alerts); "
        "'off' keeps everything.",
    ),
    log_level: str = typer.Option(None, "--log-level", help="DEBUG, INFO, WARNING or ERROR."),
    detectors: str = typer.Option(
        "auto",
        "--detectors",
        help="Anomaly alerts: auto (interval, plus detectors saved in MODELS/detectors), "
        "interval, or none (see pipeline/alerts/build.py).",
    ),
    alert_model: str = typer.Option(
        None, "--alert-model", help="Model whose forecasts the interval detector judges."
    ),
    deliver_alerts: bool = typer.Option(
        True,
        "--deliver-alerts/--no-deliver-alerts",
        help="Deliver roadcast.alerts to ROADCAST_ALERTMANAGER_URLS / ROADCAST_WEBHOOK_URLS "
        "in a thread of this process, when any is set (or run `roadcast alerts deliver`).",
    ),
) -> None:
    """Run the forecasting service: readings in, forecasts of every model out, anomaly
    alerts on roadcast.alerts (JSON logs)."""
    import threading
    from functools import partial

    import pandas as pd

    from flows.cli.options import option_settings, parse_duration
    from pipeline.jsonlog import configure_logging
    from pipeline.service.config import MAX_DURATION, ServiceConfig
    from pipeline.service.joining import GroupJoin
    from pipeline.service.partitions import PartitionTracker
    from pipeline.settings import SettingsError

    try:
        settings = option_settings(
            bootstrap_servers=bootstrap,
            consumer_group=group,
            store_path=store,
            model_dir=models,
            log_level=log_level,
        )
        names = _model_names(only)
        capped = partial(parse_duration, most_days=MAX_DURATION.days)  # as ServiceConfig
        given = None if tick is None else capped(tick, "--tick")
        step, offset = _models_grid(Path(settings.model_dir), names, given)
        if step is not None and step.value % 1_000_000:
            raise typer.BadParameter(f"{tick!r}: must be whole milliseconds", param_hint="--tick")
        config = ServiceConfig(
            tick=step,
            tick_offset=offset,
            allowed_lateness=capped(allowed_lateness, "--allowed-lateness", allow_zero=True),
            max_clock_skew=capped(max_clock_skew, "--max-clock-skew", allow_off=True),
            only=names,
            poll_records=poll_records,
            durable=not fast_store,
            retain=capped(retain, "--retain", allow_off=True),
            level_half_life=capped(level_half_life, "--level-half-life", allow_off=True),
            grace=capped(grace, "--grace", allow_off=True),
            down_after=down_after or None,
            rejoin_after_s=pd.Timedelta(
                parse_duration(rejoin_after, "--rejoin-after")
            ).total_seconds(),
        )
    except (SettingsError, ValueError) as exc:
        fail(exc, 2)
    configure_logging(settings.log_level)
    endpoints = None
    if settings.metrics_enabled:  # first: a taken port fails before anything connects
        from pipeline.service.health import EndpointError, start_endpoints

        try:
            endpoints = start_endpoints(settings)
        except EndpointError as exc:
            fail(exc)
        typer.echo(
            f"roadcast serve: metrics at {endpoints.url}/metrics, health at "
            f"{endpoints.url}/healthz and /readyz (ROADCAST_METRICS_PORT)"
        )
    try:
        from pipeline.alerts.config import AlertingConfig

        alerting = AlertingConfig.parse(detectors, alert_model)
        from pipeline.model_dir import BundleDirError
        from pipeline.registry.watch import option_problem

        model_dir = Path(settings.model_dir)  # --only, --tick and --alert-model, before the join
        if problem := option_problem(model_dir, config.only, config.tick, alerting.judged):
            raise BundleDirError(problem)
        if deliver_alerts:
            from pipeline.alerts.delivery import receivers_from_settings

            receivers_from_settings(settings)  # a configuration that cannot work: say so now
    except (SettingsError, ValueError) as exc:
        if endpoints is not None:
            endpoints.close()
        fail(exc, 2)
    _preflight(Path(settings.model_dir), Path(settings.store_path), endpoints, config)
    from pipeline.service.store import StoreError, StoreLock

    try:  # before the join: a second service on the store never touches the group
        store_lock = StoreLock(settings.store_path)
    except StoreError as exc:
        if endpoints is not None:
            endpoints.close()
        fail(exc)
    # The group join takes seconds: it runs while the rest (torch, the bundles) loads.
    stop = threading.Event()
    partitions = PartitionTracker(idle_s=config.partition_idle_s)
    joining = GroupJoin(settings, partitions, config.poll_records, stop)
    from models.bundle import BundleError
    from pipeline.kafka.clients import KafkaUnavailable
    from pipeline.service.loop import serve as run_service

    delivery = None
    if deliver_alerts:
        from pipeline.alerts.delivery import start_delivery_thread

        metrics = endpoints.metrics if endpoints is not None else None
        delivery = start_delivery_thread(settings, stop, metrics=metrics)
    try:
        run_service(
            settings, config, model_dir=Path(settings.model_dir), alerting=alerting, stop=stop,
            endpoints=endpoints, joining=joining,
        )  # fmt: skip
    except (BundleDirError, BundleError, KafkaUnavailable, StoreError, ValueError) as exc:
        fail(exc)
    finally:
        stop.set()
        if delivery is not None:
            from pipeline.service.runtime import exit_at_signal

            abandoned = "alert deliveries in flight are abandoned; the next run delivers them"
            with exit_at_signal(f"stop signal while waiting for alert deliveries: {abandoned}"):
                delivery.join(timeout=2 * settings.alert_timeout_s + 10.0)
        store_lock.release()
        if endpoints is not None:
            endpoints.close()


def _model_names(only: str | None) -> tuple[str, ...]:
    """``--only a,b`` as names; a list that names nothing is refused (it would serve all)."""
    if only is None:
        return ()
    names = tuple(n.strip() for n in only.split(",") if n.strip())
    if not names:
        raise typer.BadParameter(f"{only!r} names no model", param_hint="--only")
    return names


def _models_grid(
    model_dir: Path, only: tuple[str, ...], tick: pd.Timedelta | None = None
) -> tuple[pd.Timedelta, pd.Timedelta]:
    """The time step and grid offset the bundles to serve were trained on (their
    ``step_s`` and ``offset_s``): the service's tick (``tick``, from ``--tick``, when
    given) and where its ticks lie. 5 minutes at offset 0 when none records a step or the
    folder holds no readable bundle (the bundles' own checks report that as they load);
    offset 0 for bundles written before offsets were recorded, and for ``tick`` when no
    bundle records it (those of another step are refused as they load).

    Raises
    ------
    ValueError
        When the bundles record different steps or offsets, naming two of them.
    """

    import pandas as pd

    from models.bundle import offset_text, recorded_offset, step_text
    from pipeline.model_dir import BundleDirError, bundle_configs

    try:
        configs = list(bundle_configs(model_dir).values())
    except BundleDirError:
        configs = []
    grids: dict[tuple[int, int], str] = {}
    for config in configs:
        if config is None:
            continue
        try:
            name, step_s = config.get("model"), config.get("step_s")
            offset_s = recorded_offset(config)
        except (ValueError, TypeError, AttributeError):
            continue
        if not isinstance(step_s, int) or offset_s is None or not 0 <= offset_s < step_s:
            continue  # no step, or a config the bundle's own checks refuse as it loads
        if (not only or name in only) and (tick is None or tick.total_seconds() == step_s):
            grids.setdefault((step_s, offset_s), str(name))
    steps = {step: name for (step, _), name in sorted(grids.items())}
    if len(steps) > 1:
        (a, name_a), (b, name_b) = list(steps.items())[:2]
        raise ValueError(
            f"the models in {model_dir} were trained on different time steps ({name_a}: "
            f"{step_text(a)} steps, {name_b}: {step_text(b)} steps); serve the models of one "
            "step with --only"
        )
    if len(grids) > 1:
        ((_, a), name_a), ((_, b), name_b) = sorted(grids.items())[:2]
        raise ValueError(
            f"the models in {model_dir} were trained on ticks at different offsets ({name_a}: "
            f"{offset_text(a)}, {name_b}: {offset_text(b)} past the tick grid of "
            "1970-01-01T00:00Z); serve the models of one grid with --only"
        )
    if not grids:
        return (pd.Timedelta("5min") if tick is None else tick), pd.Timedelta(0)
    step_s, offset_s = next(iter(grids))
    return pd.Timedelta(seconds=step_s), pd.Timedelta(seconds=offset_s)


def _preflight(model_dir: Path, store: Path, endpoints: Any, config: Any) -> None:
    """Refuse, before joining the consumer group (whose members would rebalance twice for
    a service that then exits), a models folder without bundles, anything at the store
    path but an empty file (new) or a roadcast store, a store the service could not
    read or write, one holding counters or offsets it cannot read back, one written at
    other ticks than ``config``'s (a ``ServiceConfig``) and one of another sensor
    network; the bundles themselves are checked as they load (and the store again as
    it opens)."""
    from pipeline.model_dir import BundleDirError, discover_bundles, no_bundles
    from pipeline.service.state import grid_problem, network_problem
    from pipeline.service.store import StoreError, read_only_problem
    from pipeline.service.store_reads import reading_store

    try:
        paths = discover_bundles(model_dir)
        if not paths:
            raise no_bundles(model_dir)
        if (problem := read_only_problem(store)) is not None:
            raise StoreError(problem)
        if store.exists() and not (store.is_file() and store.stat().st_size == 0):
            freq_ms, offset_ms = (
                int(d.value // 1_000_000) for d in (config.tick, config.tick_offset)
            )
            sensors, window = _bundles_sensors(paths, config.only)
            with reading_store(store) as db:
                db.counters()  # both read back as the service starts
                db.all_offsets()
                problem = grid_problem(db.state(), store, freq_ms, offset_ms)
                if problem is None and sensors:
                    problem = network_problem(
                        db, store, sensors, freq_ms=freq_ms, offset_ms=offset_ms, window=window
                    )
            if problem is not None:
                raise StoreError(problem)
    except (BundleDirError, StoreError) as exc:
        if endpoints is not None:
            endpoints.close()
        fail(exc)


def _bundles_sensors(paths: list[Path], only: tuple[str, ...]) -> tuple[list[str], int]:
    """The sensors of the bundles at ``paths`` (those named in ``only``, when given) and
    their longest window, from their configs; ``([], 0)`` when one cannot be read (its
    own checks refuse it as it loads)."""
    import json

    from pipeline.model_dir import CONFIG

    sensors: dict[str, None] = {}
    window = 0
    for path in paths:
        try:
            config = json.loads((path / CONFIG).read_text(encoding="utf-8"))
            if only and config.get("model") not in only:
                continue
            sensors.update(dict.fromkeys(str(s) for s in config["sensor_ids"]))
            window = max(window, int(config["window"]))
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return [], 0
    return list(sensors), window


def status(
    store: str = typer.Option(None, "--store", help="SQLite store (default: ROADCAST_STORE_PATH)."),
    last: str = typer.Option(
        "1d",
        "--last",
        help="Rolling accuracy over this span before the newest tick (6h, 1d) or the last N "
        "ticks (288; 0: everything).",
    ),
) -> None:
    """Counters, tick latency and live accuracy per model and horizon, from the store."""
    from flows.cli.options import option_settings, parse_duration
    from flows.status import print_status
    from pipeline.service.store import StoreError

    text = last.strip()
    if re.fullmatch(r"[+-]?[0-9]+", text, flags=re.ASCII):
        if int(text) < 0:
            raise typer.BadParameter(f"{last!r} is negative", param_hint="--last")
        ticks, span = int(text) or None, None
    else:
        ticks, span = None, parse_duration(text, "--last")
    settings = option_settings(store_path=store)
    try:
        print_status(settings.store_path, last_ticks=ticks, last=span)
    except StoreError as exc:
        fail(exc)


def health(
    ready: bool = typer.Option(
        False, "--ready", help="Ask /readyz (ready to forecast) instead of /healthz (alive)."
    ),
    url: str = typer.Option(
        None,
        "--url",
        help="The service's endpoints (default http://127.0.0.1:ROADCAST_METRICS_PORT).",
    ),
    wait: float = typer.Option(
        0.0,
        "--wait",
        min=0.0,
        max=86400.0,
        help="Ask again for up to this many seconds until it says yes.",
    ),
    timeout: float = typer.Option(
        5.0,
        "--timeout",
        min=0.1,
        max=3600.0,
        help="Deadline of one request (s); longer than the service's 2 s broker probe.",
    ),
) -> None:
    """Ask a running `roadcast serve` whether it is alive (or ready): exit 0 if it is, 1 if
    not (for systemd and Docker health checks)."""
    import time

    from flows.cli.options import check_finite
    from pipeline.settings import SettingsError, load_settings

    check_finite("--wait", wait)
    check_finite("--timeout", timeout)
    given = url is not None
    if url is None:
        try:
            settings = load_settings()
        except SettingsError as exc:
            fail(exc)
        host = settings.metrics_host
        host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        url = f"http://{f'[{host}]' if ':' in host else host}:{settings.metrics_port}"
    target, shown = _check_url(
        url, "readyz" if ready else "healthz", "--url" if given else "ROADCAST_METRICS_HOST"
    )
    deadline = time.monotonic() + wait
    while True:
        said, ok = _ask(target, timeout, shown)
        if ok or time.monotonic() >= deadline:
            break
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    typer.echo(said, err=not ok)
    if not ok:
        raise typer.Exit(1)


HEALTH_BODY_LIMIT = 4096  # bytes of an answer read (the service's JSON is far shorter)
HEALTH_LINE_CHARS = 300  # of that answer, printed


def _check_url(base: str, endpoint: str, option: str) -> tuple[str, str]:
    """The URL of ``endpoint`` under ``base`` and that URL as shown (its password, if any,
    masked); refuses, naming ``option``, a URL without an http(s) host, with a port out of
    range, or with a query or fragment (the endpoint's path would land in them)."""
    import httpx

    from pipeline.settings import shown, shown_url

    try:
        display = shown_url(base)
    except ValueError:
        display = shown(base)
    if "://" not in display:
        display = shown(base)
    try:
        parsed = httpx.URL(base)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise typer.BadParameter(f"{display} is not a URL ({exc})", param_hint=option) from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise typer.BadParameter(f"{display} is not an http(s) URL with a host", param_hint=option)
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        raise typer.BadParameter(f"port {parsed.port} is outside 1-65535", param_hint=option)
    if parsed.query or parsed.fragment:
        raise typer.BadParameter(
            f"{display} has a query or fragment; give the service's base URL",
            param_hint=option,
        )
    target = parsed.copy_with(path=f"{parsed.path.rstrip('/')}/{endpoint}")
    masked = (
        target.copy_with(username=parsed.username, password="***") if parsed.password else target
    )
    return str(target), str(masked)


def _ask(target: str, timeout: float, shown: str) -> tuple[str, bool]:
    """GET ``target`` within ``timeout`` seconds in all; returns one line on the answer
    (naming the URL as ``shown``) and whether it was the service's 200. Anything else
    that answers is not healthy.

    httpx's timeout bounds each read, so a server that trickles its headers or body (or
    a name lookup that hangs) could stretch the request for ever: it runs in a daemon
    thread, and at the deadline its socket is shut down and the thread left behind.
    """
    import json
    import threading

    import httpx

    from pipeline.http_sockets import RequestSockets

    sockets = RequestSockets()
    outcome: list[tuple[int, bytes] | Exception] = []

    def get() -> None:
        body = b""
        try:
            with (
                httpx.Client(timeout=timeout) as client,
                client.stream("GET", target, extensions={"trace": sockets.trace}) as answer,
            ):
                for chunk in answer.iter_bytes():
                    body += chunk
                    if len(body) >= HEALTH_BODY_LIMIT:
                        break
                outcome.append((answer.status_code, body))
        except Exception as exc:  # raised again (or shown, for httpx's) by the caller
            outcome.append(exc)

    worker = threading.Thread(target=get, name="roadcast-health", daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        sockets.cut()
        sockets.close()
        return f"no answer from {shown}: timed out after {timeout:g} s", False
    sockets.close()
    if isinstance(outcome[0], httpx.HTTPError):
        return f"no answer from {shown}: {str(outcome[0]).replace(target, shown)}", False
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    code, body = outcome[0]
    try:
        details = json.loads(body[:HEALTH_BODY_LIMIT])
    except ValueError:
        details = None
    if not (isinstance(details, dict) and isinstance(details.get("status"), str)):
        return f"HTTP {code} from {shown}: not a roadcast health answer (is --url right?)", False
    said = json.dumps(details, ensure_ascii=True)  # one line, control characters escaped
    if len(said) > HEALTH_LINE_CHARS:
        said = said[:HEALTH_LINE_CHARS] + "..."
    return (said, True) if code == 200 else (f"HTTP {code} from {shown}: {said}", False)


alerts_app = typer.Typer(
    cls=HelpGroup,
    rich_markup_mode=None,
    help="Alerts: `roadcast alerts` lists the latest from the store; `roadcast alerts "
    "deliver` sends roadcast.alerts to Alertmanager and webhooks.",
    no_args_is_help=False,
)


@alerts_app.command("deliver")
def deliver(
    alertmanager: str = typer.Option(
        None,
        "--alertmanager",
        help="Alertmanager URL(s), comma-separated [ROADCAST_ALERTMANAGER_URLS].",
    ),
    webhook: str = typer.Option(
        None,
        "--webhook",
        help="Webhook URL(s), comma-separated [ROADCAST_WEBHOOK_URLS]; signed with "
        "ROADCAST_WEBHOOK_SECRET.",
    ),
    bootstrap: str = typer.Option(
        None, "--bootstrap", help="HOST:PORT[,...] (default: ROADCAST_BOOTSTRAP_SERVERS)."
    ),
    group: str = typer.Option(
        None, "--group", help="The service's consumer group; delivery uses GROUP.alert-delivery."
    ),
    log_level: str = typer.Option(None, "--log-level", help="DEBUG, INFO, WARNING or ERROR."),
    metrics_port: int = typer.Option(
        None,
        "--metrics-port",
        min=0,
        max=65535,
        help="Serve the delivery metrics (roadcast_alert_deliveries_total, "
        "roadcast_alert_delivery_backlog) at /metrics on this port of ROADCAST_METRICS_HOST "
        "(0: a free one; default: none).",
    ),
) -> None:
    """Deliver roadcast.alerts to Alertmanager (API v2) and signed webhooks until Ctrl-C.

    Each alert is committed once every receiver has taken it (pipeline/alerts/delivery.py)."""
    import logging
    import threading

    from flows.cli.options import option_settings
    from pipeline.alerts.delivery import AlertDelivery
    from pipeline.jsonlog import configure_logging
    from pipeline.kafka.clients import KafkaUnavailable
    from pipeline.service.health import EndpointError, serve_metrics
    from pipeline.service.metrics import delivery_registry
    from pipeline.service.runtime import (
        count_uncommitted,
        install_signal_handlers,
        restore_signal_handlers,
    )
    from pipeline.settings import SettingsError

    try:
        settings = option_settings(
            bootstrap_servers=bootstrap,
            consumer_group=group,
            alertmanager_urls=alertmanager,
            webhook_urls=webhook,
            log_level=log_level,
        )
        delivery = AlertDelivery(settings)
    except (SettingsError, ValueError) as exc:
        fail(exc, 2)
    configure_logging(settings.log_level)
    server = None
    if metrics_port is not None:
        registry = delivery_registry(delivery.stats)
        try:
            server, url = serve_metrics(registry, settings.metrics_host, metrics_port)
        except EndpointError as exc:
            fail(exc, 2)
        logging.getLogger("roadcast.alerts").info("endpoints", extra={"fields": {"metrics": url}})
    stop = threading.Event()
    previous = install_signal_handlers(stop)
    count_uncommitted(
        delivery.undelivered, "undelivered alerts (and any delivered but not yet committed)"
    )
    try:
        delivery.run(stop)
    except KafkaUnavailable as exc:
        fail(exc)
    finally:
        count_uncommitted(None)
        restore_signal_handlers(previous)
        if server is not None:
            server.shutdown()
            server.server_close()


@alerts_app.callback(invoke_without_command=True)
def alerts(
    ctx: typer.Context,
    store: str = typer.Option(None, "--store", help="Store file (default: ROADCAST_STORE_PATH)."),
    limit: int = typer.Option(
        20, "--limit", min=0, max=1_000_000_000, help="Most recent alert state changes shown."
    ),
) -> None:
    """List the most recent alerts (firing / resolved) from the service's store."""
    if ctx.invoked_subcommand is not None:
        return

    from rich.console import Console
    from rich.table import Table

    from flows.cli.options import option_settings
    from flows.reporting.text import literal
    from pipeline.service.store import StoreError
    from pipeline.service.store_reads import reading_store

    path = option_settings(store_path=store).store_path
    try:
        with reading_store(path) as db:
            rows = db.alerts(limit=limit)
    except StoreError as exc:
        fail(exc)
    title = literal(f"latest {len(rows)} alert changes ({path})", "table.title")
    try:
        cells = [_alert_cells(row) for row in rows]
    except (ValueError, TypeError, OverflowError) as exc:
        fail(exc, message=f"the store {path} holds an alert row it cannot show ({exc})")
    console = Console()
    if console.width < ALERTS_TABLE_COLUMNS:  # eight columns would fold each word apart
        console.print(title)
        for *head, incident, reason in cells:
            console.print(literal("  ".join([f"{head[0]} UTC", *head[1:]]), "bold"))
            for text in (incident, reason):
                if text:
                    console.print(literal(f"  {text}"))
        return
    table = Table(title=title)
    columns = ("time (UTC)", "status", "severity", "sensor", "detector", "score", "incident")
    for column in (*columns, "reason"):
        table.add_column(column, overflow="fold")
    for line in cells:
        table.add_row(*map(literal, line))
    console.print(table)


# Narrower terminals get `roadcast alerts` as one block per alert instead of a table.
ALERTS_TABLE_COLUMNS = 120


def _alert_cells(row: Any) -> list[str]:
    """One stored alert change (a ``store_rows.AlertRow``) as the table's text cells."""
    import pandas as pd

    when = pd.Timestamp(int(row.ts_ms), unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M")
    text = [str(v) for v in (row.status, row.severity, row.sensor, row.detector)]
    return [when, *text, f"{float(row.score):.4f}", str(row.group_key or ""), _alert_reason(row)]


def _alert_reason(row: Any) -> str:
    """The ``reason`` of an alert's stored JSON payload ("" when it has none)."""
    import json

    try:
        decoded = json.loads(row.payload) if row.payload else {}
    except (ValueError, TypeError):
        return ""
    return str(decoded.get("reason", "")) if isinstance(decoded, dict) else ""
