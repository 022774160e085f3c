"""The ``roadcast`` command line. Commands import their heavy dependencies lazily so
that ``roadcast --help`` stays fast; each command only wires library functions."""

from __future__ import annotations

import typer

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="roadcast: streaming traffic and sensor forecasting on Kafka.",
)
data_app = typer.Typer(no_args_is_help=True, help="List, inspect and fetch data sets.")
app.add_typer(data_app, name="data")


@data_app.command("list")
def data_list(
    data_dir: str = typer.Option(None, "--data-dir", help="Default: ROADCAST_DATA_DIR."),
) -> None:
    """List the known data sets and whether their files are in the data directory."""
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from pipeline.data.datasets import DATASETS, dataset_dir
    from pipeline.settings import SettingsError

    try:
        root = dataset_dir(Path(data_dir) if data_dir else None)
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    table = Table(title=f"data sets (data directory: {root})")
    for column in ("name", "here", "description", "licence"):
        table.add_column(column, overflow="fold")
    for info in DATASETS.values():
        required = [f for f in info.files if f.required]
        if not info.files:
            here = "built-in"
        else:
            found = sum(f.present_in(root) for f in required)
            here = "yes" if found == len(required) else f"{found}/{len(required)} files"
        table.add_row(info.name, here, f"{info.description} ({info.source})", info.licence)
    Console().print(table)


@data_app.command("info")
def data_info(
    name: str = typer.Argument(..., help="los-loop, metr-la, pems-bay, nab:CAT/FILE.csv, ..."),
    adjacency: str = typer.Option(None, "--adjacency", help="Adjacency CSV for csv:PATH."),
    data_dir: str = typer.Option(None, "--data-dir", help="Default: ROADCAST_DATA_DIR."),
) -> None:
    """Load a data set and print its shape, grid, graph and missing share."""
    from collections import Counter
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from pipeline.data.datasets import DatasetError, load_dataset
    from pipeline.settings import SettingsError

    try:
        panel = load_dataset(
            name,
            data_dir=Path(data_dir) if data_dir else None,
            adjacency=Path(adjacency) if adjacency else None,
        )
    except (DatasetError, SettingsError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    table = Table(title=panel.name or name, show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("sensors", f"{panel.n_nodes:,}")
    table.add_row("steps", f"{panel.n_time:,}")
    if panel.n_time > 1:
        table.add_row("frequency", f"{panel.freq.total_seconds() / 60:g} min")
    if panel.n_time:
        table.add_row("time span", f"{panel.timestamps[0]} .. {panel.timestamps[-1]}")
    graph = panel.graph
    if graph is None:
        table.add_row("graph", "none")
    else:
        known = getattr(graph, "has_distances", False)
        lengths = "road lengths known" if known else "no distances: FFR counts hops"
        table.add_row("graph edges", f"{graph.edge_index.shape[1]:,} directed links ({lengths})")
    table.add_row("coordinates", "yes" if panel.coords is not None else "no")
    table.add_row("missing share", f"{panel.missing_share:.2%}")
    kinds = Counter(e.kind for e in panel.events)
    if kinds:
        table.add_row("events", ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
    Console().print(table)


@data_app.command("fetch")
def data_fetch(
    name: str = typer.Argument(..., help="los-loop, metr-la, pems-bay or nab."),
    data_dir: str = typer.Option(None, "--data-dir", help="Default: ROADCAST_DATA_DIR."),
    mirror: str = typer.Option(
        None, "--mirror", help="Base URL to fetch DATA_DIR-relative paths from instead."
    ),
    timeout: float = typer.Option(30.0, "--timeout", help="Seconds per connection attempt."),
) -> None:
    """Download a public data set into the data directory and check its sha256."""
    from pathlib import Path

    from pipeline.data.datasets import DatasetError
    from pipeline.data.fetch import Fetched, FetchError, fetch_dataset
    from pipeline.settings import SettingsError

    def report(item: Fetched) -> None:
        detail = f" ({item.detail})" if item.detail else ""
        typer.echo(f"{item.status:>10}  {item.path}{detail}")

    try:
        fetch_dataset(
            name,
            data_dir=Path(data_dir) if data_dir else None,
            mirror=mirror,
            timeout=timeout,
            progress=report,
        )
    except (FetchError, DatasetError, SettingsError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def broker(
    port: int = typer.Option(None, "--port", help="Port to listen on (default: a free one)."),
    log: str = typer.Option(None, "--log", help="Broker log file (default: in the temp dir)."),
) -> None:
    """Run an embedded Kafka-compatible broker (Tansu, in memory) until Ctrl-C."""
    from pipeline.kafka.broker import BrokerError, serve_forever

    try:
        serve_forever(port, log_path=log)
    except BrokerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def replay(
    data: str = typer.Argument(..., help="Dataset spec: los-loop, simulated, csv:PATH, ..."),
    bootstrap: str = typer.Option(
        None, "--bootstrap", help="HOST:PORT[,...] (default: ROADCAST_BOOTSTRAP_SERVERS)."
    ),
    speedup: float = typer.Option(
        0.0, "--speedup", help="0 = as fast as possible; X = X x real time."
    ),
    limit: int = typer.Option(None, "--limit", help="Replay at most N time steps."),
    topic: str = typer.Option(None, "--topic", help="Default: the readings topic of the settings."),
    adjacency: str = typer.Option(None, "--adjacency", help="Adjacency file for csv:PATH data."),
) -> None:
    """Replay a data set into Kafka as JSON readings keyed by sensor id, in time order."""
    from pathlib import Path

    from pipeline.data.datasets import load_dataset
    from pipeline.kafka.clients import KafkaUnavailable, ensure_topics, make_producer
    from pipeline.kafka.replay import ReplayError
    from pipeline.kafka.replay import replay as run_replay
    from pipeline.settings import SettingsError, load_settings

    try:
        settings = load_settings(bootstrap_servers=bootstrap)
        panel = load_dataset(data, adjacency=Path(adjacency) if adjacency else None)
        target = topic or settings.topic_readings
        ensure_topics(settings, topics=[target])
        producer = make_producer(settings)
        try:
            stats = run_replay(panel, producer, target, speedup=speedup, limit=limit)
        finally:
            producer.close()
    except (SettingsError, KafkaUnavailable, ReplayError, ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"{stats.messages:,} readings of {stats.sensors} sensors over {stats.steps} steps "
        f"-> {target} in {stats.seconds:.1f} s ({stats.rate:,.0f} msg/s); "
        f"{stats.skipped_missing:,} missing readings not sent"
    )


@app.command()
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
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Live progress."),
) -> None:
    """The main job: broker, quick models, the service, a replay, OUT/summary.json + report."""
    from pathlib import Path

    from flows.demo import DemoError, print_summary, run_demo
    from pipeline.data.datasets import DatasetError
    from pipeline.kafka.broker import BrokerError

    try:
        summary = run_demo(
            data,
            out=Path(out),
            max_ticks=max_ticks or None,
            speedup=speedup,
            model_dir=Path(models) if models else None,
            epochs=epochs,
            progress=progress,
        )
    except (DemoError, BrokerError, DatasetError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    print_summary(summary)
    typer.echo(f"wrote {Path(out) / 'summary.json'} and {Path(out) / 'report.md'}")
    if summary["lost"]:
        typer.echo(f"error: {summary['lost']} readings lost", err=True)
        raise typer.Exit(1)


@app.command()
def explain(
    bundle: str = typer.Argument(..., help="A tgclstm bundle directory (OUT/bundles/tgclstm)."),
    sensor: str = typer.Option(None, "--sensor", help="Explain this sensor id only."),
    top: int = typer.Option(10, "--top", help="Most influential sensors listed per sensor."),
    out: str = typer.Option("explain-out", "--out", help="Directory for the CSV and the PNG."),
) -> None:
    """Which sensors influence each sensor, from a TGC-LSTM's learned graph weights."""
    from rich.console import Console
    from rich.table import Table

    from flows.explain import explain as run_explain
    from models.bundle import BundleError

    try:
        result = run_explain(bundle, out=out, sensor=sensor, top=top)
    except (BundleError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    table = result.table
    shown = table if sensor else table.nlargest(top, "influence")
    what = (
        f"sources of sensor {sensor}"
        if sensor
        else f"the {len(shown)} strongest pairs of the network"
    )
    # The CSV has every column at full precision; the printed table stays narrow.
    drop = ["target", "share"] if sensor else ["rank", "share"]
    shown = shown.drop(columns=drop).rename(columns={"distance_km": "km"})
    view = Table(title=f"learned influence: {what}")
    for column in shown.columns:
        view.add_column(column, justify="left" if column == "target" else "right", no_wrap=True)
    for row in shown.itertuples(index=False):
        view.add_row(*(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row))
    Console().print(view)
    typer.echo(f"wrote {result.csv} ({len(table)} rows) and {result.png} ({result.layout})")


def _load_panel(data: str, adjacency: str | None, data_dir: str | None):
    """``load_dataset`` with CLI errors (shared by train and evaluate)."""
    from pathlib import Path

    from pipeline.data.datasets import DatasetError, load_dataset
    from pipeline.settings import SettingsError

    try:
        return load_dataset(
            data,
            data_dir=Path(data_dir) if data_dir else None,
            adjacency=Path(adjacency) if adjacency else None,
        )
    except (DatasetError, SettingsError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def train(
    data: str = typer.Argument(..., help="Data set: los-loop, metr-la, csv:PATH, simulated..."),
    adjacency: str = typer.Option(None, "--adjacency", help="Adjacency CSV for csv:PATH."),
    models: str = typer.Option(
        "persistence,seasonal,ar,lstm,gru", "--models", help="Comma-separated model names."
    ),
    window: int = typer.Option(12, "--window", help="Input steps (the protocol window)."),
    horizon: int = typer.Option(12, "--horizon", help="Steps forecast."),
    seeds: int = typer.Option(3, "--seeds", help="Seeds per neural model (metrics averaged)."),
    epochs: int = typer.Option(None, "--epochs", help="Max epochs (default: model's own)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    test: float = typer.Option(0.2, "--test", help="Share of the data held out for testing."),
    valid: float = typer.Option(0.1, "--valid", help="Share of the training part for validation."),
    out: str = typer.Option("runs/train", "--out", help="Output directory."),
    data_dir: str = typer.Option(None, "--data-dir", help="Default: ROADCAST_DATA_DIR."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
    threads: int = typer.Option(
        None, "--threads", help="torch CPU threads (default: torch's; 1 is best on busy cores)."
    ),
) -> None:
    """Fit, backtest and compare models; write bundles, champion, metrics.json and a report.

    Runs the Prefect train flow: against PREFECT_API_URL when set, else on Prefect's
    temporary embedded server (started for the run, about 15 s)."""
    from rich.console import Console

    from flows.train import TrainPlan, limit_threads, parse_models
    from models.nn.training import resolve_device
    from pipeline.data.datasets import parse_spec

    console = Console()
    try:
        resolve_device(device)
        parse_spec(data)  # an unknown data set fails here, before Prefect starts
        plan = TrainPlan(
            models=parse_models(models),
            window=window,
            horizon=horizon,
            seeds=seeds,
            epochs=epochs,
            device=device,
            test=test,
            valid=valid,
            progress=progress,
        )
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    from flows.train_flow import train_flow
    from pipeline.settings import SettingsError

    try:
        with limit_threads(threads):
            result = train_flow(
                data=data,
                models=list(plan.models),
                window=window,
                horizon=horizon,
                seeds=seeds,
                epochs=epochs,
                device=device,
                test=test,
                valid=valid,
                out=out,
                adjacency=adjacency,
                data_dir=data_dir,
                progress=progress,
            )
    except (ValueError, SettingsError, OSError) as exc:  # DatasetError, ChampionError included
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    document = result["document"]
    from rich.table import Table

    from flows.report import compact_rows

    columns, rows = compact_rows(document, reference=document.get("dataset") == "los-loop")
    table = Table(title=f"{data}: test-part pooled MAE / RMSE (± std over seeds)")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(f"champion (best validation score): {result['champion']}")
    console.print(f"wrote {out}/metrics.json, {out}/report.md, {out}/report.html, {out}/bundles/")


@app.command()
def evaluate(
    bundle: str = typer.Argument(..., help="A bundle directory (e.g. OUT/bundles/ar)."),
    data: str = typer.Argument(..., help="The data set to score it on."),
    adjacency: str = typer.Option(None, "--adjacency", help="Adjacency CSV for csv:PATH."),
    window: int = typer.Option(12, "--window", help="Protocol input window (scored windows)."),
    test: float = typer.Option(0.2, "--test", help="Share of the data held out for testing."),
    valid: float = typer.Option(0.1, "--valid", help="Share of the training part for validation."),
    out: str = typer.Option(None, "--out", help="Write the metrics to this JSON file."),
    data_dir: str = typer.Option(None, "--data-dir", help="Default: ROADCAST_DATA_DIR."),
) -> None:
    """Score a saved bundle on the test part of a data set, as `roadcast train` does."""
    import json
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from flows.train import evaluate_bundle

    panel = _load_panel(data, adjacency, data_dir)
    try:
        result = evaluate_bundle(bundle, panel, test=test, valid=valid, window=window)
    except ValueError as exc:  # BundleError included
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    freq = panel.freq.total_seconds() / 60
    table = Table(title=f"{result['model']} on {data}: {result['windows']} test windows")
    for column in ("horizon", "pooled MAE", "pooled RMSE", "pooled MAPE %", "step RMSE"):
        table.add_column(column)
    for h, m in result["pooled"].items():
        table.add_row(
            f"{h} ({int(h) * freq:g} min)",
            f"{m['mae']:.4f}",
            f"{m['rmse']:.4f}",
            f"{m['mape']:.2f}" if m["mape"] is not None else "n/a",
            f"{result['step'][h]['rmse']:.4f}",
        )
    Console().print(table)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2) + "\n")


@app.command()
def serve(
    models: str = typer.Option(
        None, "--models", help="Bundles folder (OUT/bundles) or one bundle [ROADCAST_MODEL_DIR]."
    ),
    bootstrap: str = typer.Option(
        None, "--bootstrap", help="HOST:PORT[,...] (default: ROADCAST_BOOTSTRAP_SERVERS)."
    ),
    group: str = typer.Option(None, "--group", help="Consumer group (default: roadcast)."),
    tick: str = typer.Option("5min", "--tick", help="The data's time step, e.g. 5min."),
    allowed_lateness: str = typer.Option(
        "2min", "--allowed-lateness", help="How late a reading may arrive and still join its tick."
    ),
    store: str = typer.Option(None, "--store", help="SQLite store (default: ROADCAST_STORE_PATH)."),
    only: str = typer.Option(None, "--only", help="Comma-separated model names to load."),
    max_clock_skew: str = typer.Option(
        "1h", "--max-clock-skew", help="Dead-letter readings this far ahead of the clock ('off')."
    ),
    poll_records: int = typer.Option(1000, "--poll-records", help="Records per poll batch."),
    fast_store: bool = typer.Option(
        False, "--fast-store", help="synchronous=NORMAL: survives a crash, not a power cut."
    ),
    log_level: str = typer.Option(None, "--log-level", help="DEBUG, INFO, WARNING or ERROR."),
    detectors: str = typer.Option(
        "auto",
        "--detectors",
        help="Anomaly alerts: auto (interval + saved detectors), none, or e.g. "
        "interval,autoencoder (see pipeline/alerts/detection.py).",
    ),
    alert_model: str = typer.Option(
        None, "--alert-model", help="Model whose forecasts the interval detector judges."
    ),
) -> None:
    """Run the forecasting service: readings in, forecasts of every model out, anomaly
    alerts on roadcast.alerts (JSON logs)."""
    from pathlib import Path

    import pandas as pd

    from models.bundle import BundleError
    from pipeline.alerts.detection import AlertingConfig
    from pipeline.jsonlog import configure_logging
    from pipeline.kafka.clients import KafkaUnavailable
    from pipeline.model_dir import BundleDirError
    from pipeline.service.core import ServiceConfig
    from pipeline.service.core import serve as run_service
    from pipeline.service.store import StoreError
    from pipeline.settings import SettingsError, load_settings

    try:
        settings = load_settings(
            bootstrap_servers=bootstrap,
            consumer_group=group,
            store_path=store,
            model_dir=models,
            log_level=log_level,
        )
        config = ServiceConfig(
            tick=pd.Timedelta(tick),
            allowed_lateness=pd.Timedelta(allowed_lateness),
            max_clock_skew=None if max_clock_skew == "off" else pd.Timedelta(max_clock_skew),
            only=tuple(n.strip() for n in (only or "").split(",") if n.strip()),
            poll_records=poll_records,
            durable=not fast_store,
        )
        alerting = AlertingConfig.parse(detectors, alert_model)
    except (SettingsError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    configure_logging(settings.log_level)
    try:
        run_service(settings, config, model_dir=Path(settings.model_dir), alerting=alerting)
    except (BundleDirError, BundleError, KafkaUnavailable, StoreError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def status(
    store: str = typer.Option(None, "--store", help="SQLite store (default: ROADCAST_STORE_PATH)."),
    last: int = typer.Option(
        288, "--last", help="Rolling accuracy over the last N ticks (0: everything)."
    ),
) -> None:
    """Counters, tick latency and live accuracy per model and horizon, from the store."""
    from flows.status import print_status
    from pipeline.service.store import StoreError
    from pipeline.settings import SettingsError, load_settings

    try:
        settings = load_settings(store_path=store)
        print_status(settings.store_path, last_ticks=last or None)
    except (SettingsError, StoreError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def detect(
    nab_dir: str = typer.Option(..., "--nab-dir", help="NAB data directory (<category>/*.csv)."),
    out: str = typer.Option(..., "--out", help="Results directory (<category>/<det>_<file>)."),
    detector: str = typer.Option(
        "interval_range",
        "--detector",
        help="interval, interval_range, interval_h6, likelihood, windowed_gaussian, "
        "autoencoder or combined (see flows/detect.py).",
    ),
) -> None:
    """Score every NAB file in streaming order and write NAB result files."""
    from flows.detect import DetectRunError, detect_nab

    try:
        written = detect_nab(nab_dir, out, detector, progress=typer.echo)
    except (DetectRunError, OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"wrote {len(written)} result files for detector {detector!r} under {out}")


@app.command()
def alerts(
    store: str = typer.Option(None, "--store", help="Store file (default: ROADCAST_STORE_PATH)."),
    limit: int = typer.Option(20, "--limit", help="Most recent alert state changes shown."),
) -> None:
    """List the most recent alerts (firing / resolved) from the service's store."""
    import json
    from pathlib import Path

    import pandas as pd
    from rich.console import Console
    from rich.table import Table

    from pipeline.service.store import Store, StoreError
    from pipeline.settings import SettingsError, load_settings

    try:
        path = Path(store) if store else load_settings().store_path
        if not path.is_file():
            typer.echo(
                f"error: no store at {path}; run the service first or pass --store", err=True
            )
            raise typer.Exit(1)
        with Store(path, readonly=True) as db:
            rows = db.alerts(limit=limit)
    except (SettingsError, StoreError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    table = Table(title=f"latest {len(rows)} alert changes ({path})")
    columns = ("time (UTC)", "status", "severity", "sensor", "detector", "score", "incident")
    for column in (*columns, "reason"):
        table.add_column(column, overflow="fold")
    for row in rows:
        reason = json.loads(row.payload).get("reason", "") if row.payload else ""
        when = pd.Timestamp(row.ts_ms, unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M")
        table.add_row(
            when, row.status, row.severity, row.sensor, row.detector, f"{row.score:.4f}",
            row.group_key or "", reason,
        )  # fmt: skip
    Console().print(table)


@app.command()
def deploy(
    serve: bool = typer.Option(
        False, "--serve", help="Serve the deployments from this process (needs PREFECT_API_URL)."
    ),
    write_yaml: str = typer.Option(
        None, "--write-yaml", help="Write the deployments as a prefect.yaml to this path."
    ),
    limit: int = typer.Option(None, "--limit", help="With --serve: at most N flow runs at once."),
) -> None:
    """roadcast's Prefect deployments (train, forecast, report, replay): list, write or serve."""
    from rich.console import Console
    from rich.table import Table

    from flows.deploy import DEPLOYMENTS, DeployError, describe

    if write_yaml:
        from flows.deploy import write_yaml as write

        typer.echo(f"wrote {write(write_yaml)}")
    if serve:
        from flows.deploy import serve_deployments

        try:
            serve_deployments(DEPLOYMENTS, limit=limit)
        except DeployError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        typer.echo("stopped serving; schedules stay active on the server")
        return
    if write_yaml:
        return
    rows = describe(DEPLOYMENTS)
    table = Table(title="roadcast deployments (serve: roadcast deploy --serve)")
    for column in rows[0]:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row.values())
    Console().print(table)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
