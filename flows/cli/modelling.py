"""Commands that fit and score models offline: ``train``, ``evaluate``, ``explain``, ``detect``."""

from __future__ import annotations

import typer

from flows.cli.errors import fail
from flows.cli.options import ADJACENCY, INDEX_COL, NO_INDEX, TIMEZONE
from flows.cli.signals import sigterm_as_interrupt
from flows.reporting.text import literal

MAX_THREADS = 256


def explain(
    bundle: str = typer.Argument(..., help="A tgclstm bundle directory (OUT/bundles/tgclstm)."),
    sensor: str = typer.Option(None, "--sensor", help="Explain this sensor id only."),
    top: int = typer.Option(10, "--top", min=1, help="Most influential sensors listed per sensor."),
    out: str = typer.Option("explain-out", "--out", help="Directory for the CSV and the PNG."),
) -> None:
    """Which sensors influence each sensor, from a TGC-LSTM's learned graph weights."""
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from flows.cli.options import refuse_empty_out
    from flows.explain import explain as run_explain
    from models.bundle import BundleError

    refuse_empty_out(out)
    if any(p.exists() and not p.is_dir() for p in (Path(out), *Path(out).parents)):
        raise typer.BadParameter(f"{out} is not a directory", param_hint="--out")
    try:
        result = run_explain(bundle, out=out, sensor=sensor, top=top)
    except (BundleError, ValueError) as exc:
        fail(exc)
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
    view = Table(title=literal(f"learned influence: {what}", "table.title"))
    for column in shown.columns:
        view.add_column(column, justify="left" if column == "target" else "right", no_wrap=True)
    for row in shown.itertuples(index=False):
        view.add_row(*(literal(f"{v:.3f}" if isinstance(v, float) else v) for v in row))
    Console().print(view)
    typer.echo(f"wrote {result.csv} ({len(table)} rows) and {result.png} ({result.layout})")


def train(
    data: str = typer.Argument(
        ...,
        help="Data set: los-loop, metr-la, csv:PATH, npz:PATH, h5:PATH, parquet:PATH, simulated...",
    ),
    adjacency: str = ADJACENCY,
    models: str = typer.Option(
        None,
        "--models",
        help="Comma-separated model names. Default: persistence, seasonal, ar, lstm, gru, "
        "tgclstm, less those the data cannot support (each named).",
    ),
    window: int = typer.Option(12, "--window", help="Input steps (the protocol window)."),
    horizon: int = typer.Option(12, "--horizon", help="Steps forecast."),
    seeds: int = typer.Option(3, "--seeds", help="Seeds per neural model (metrics averaged)."),
    epochs: int = typer.Option(None, "--epochs", help="Max epochs (default: model's own)."),
    epoch_windows: int = typer.Option(
        None,
        "--epoch-windows",
        help="Training windows per epoch at most, drawn afresh each epoch (default: all; "
        "shorter epochs for long histories on the CPU, at some cost in accuracy).",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    test: float = typer.Option(0.2, "--test", help="Share of the data held out for testing."),
    valid: float = typer.Option(0.1, "--valid", help="Share of the training part for validation."),
    out: str = typer.Option("runs/train", "--out", help="Output directory."),
    data_dir: str = typer.Option(None, "--data-dir", help="Default: ROADCAST_DATA_DIR."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
    threads: int = typer.Option(
        None, "--threads", help="torch CPU threads (default: torch's; 1 is best on busy cores)."
    ),
    tune: str = typer.Option(
        None,
        "--tune",
        help="Search each model's settings on the validation part first (Optuna): trials "
        "per model (30) or a time for the whole search (20m, 90s, 1h).",
    ),
    index_col: str = INDEX_COL,
    no_index: bool = NO_INDEX,
    timezone: str = TIMEZONE,
    label: str = typer.Option(
        None, "--label", help="Label of the new model versions (default: data set and date)."
    ),
    promote: bool = typer.Option(
        True,
        "--promote/--no-promote",
        help="Serve the new versions (a running service swaps them in); --no-promote only "
        "registers them (roadcast models promote).",
    ),
) -> None:
    """Fit, backtest and compare models; write bundles, champion, metrics.json and a report.

    Runs the Prefect train flow: against PREFECT_API_URL when set, else on Prefect's
    temporary embedded server (started for the run, about 15 s)."""
    from rich.console import Console

    from flows.threads import limit_threads
    from flows.train_models import check_out_dir
    from models.forecasters.comparison import TrainPlan, parse_models
    from models.forecasters.tuning import parse_budget
    from models.nn.devices import resolve_device
    from pipeline.data.datasets import check_arguments
    from pipeline.registry.versions import MAX_LABEL_CHARS, label_problem

    console = Console()
    try:
        resolve_device(device)
        # A bad data spec or reading option fails here, before Prefect starts.
        check_arguments(data, adjacency, index_col=index_col, no_index=no_index, timezone=timezone)
        if tune is not None:
            parse_budget(tune)
        if threads is not None and not 1 <= threads <= MAX_THREADS:
            raise ValueError(f"--threads must be 1-{MAX_THREADS}, got {threads}")
        if label is not None and (problem := label_problem(label)) is not None:
            raise ValueError(
                f"--label {problem}; give at most {MAX_LABEL_CHARS} printable characters"
            )
        check_out_dir(out)
        plan = TrainPlan(
            models=TrainPlan.models if models is None else parse_models(models),
            window=window,
            horizon=horizon,
            seeds=seeds,
            epochs=epochs,
            epoch_windows=epoch_windows,
            device=device,
            test=test,
            valid=valid,
            progress=progress,
        )
    except (ValueError, OSError) as exc:
        fail(exc, 2)
    import os

    from flows.cli.errors import (
        check_prefect_home,
        load_prefect,
        quiet_prefect_tracebacks,
        shield_temporary_server,
    )
    from pipeline.settings import SettingsError, load_settings

    try:  # before Prefect's server starts: a bad ROADCAST_* setting fails at once
        load_settings()
    except SettingsError as exc:
        fail(exc)
    load_prefect()
    from flows.train_flow import train_flow

    if not os.environ.get("PREFECT_API_URL"):
        # The temporary server's usage telemetry only adds "database is locked" noise.
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        check_prefect_home()
        shield_temporary_server()
    else:
        from flows.deploy import DeployError, api_url, check_server

        try:
            check_server(api_url() or os.environ["PREFECT_API_URL"])
        except DeployError as exc:
            fail(exc)
    quiet_prefect_tracebacks()
    # SIGTERM stops a run as Ctrl-C does, so that Prefect's temporary server stops with it
    # (the default handler ended the process and left the server running).
    with sigterm_as_interrupt() as interruption:
        try:
            with limit_threads(threads):
                result = train_flow(
                    data=data,
                    models=None if models is None else list(plan.models),
                    window=window,
                    horizon=horizon,
                    seeds=seeds,
                    epochs=epochs,
                    epoch_windows=epoch_windows,
                    device=device,
                    test=test,
                    valid=valid,
                    out=out,
                    adjacency=adjacency,
                    data_dir=data_dir,
                    progress=progress,
                    tune=tune,
                    index_col=index_col,
                    no_index=no_index,
                    timezone=timezone,
                    label=label,
                    promote=promote,
                )
        except BrokenPipeError:  # `| head`: the group ends quietly
            raise
        except (KeyboardInterrupt, ValueError, SettingsError, OSError) as exc:
            if interruption.signum is None and not isinstance(exc, KeyboardInterrupt):
                fail(exc)  # DatasetError, ChampionError included
            where = out or "the model directory"
            typer.echo(
                f"error: interrupted before the run finished; {where} keeps what earlier runs "
                "wrote (`roadcast models list` shows any version this run registered)",
                err=True,
            )
            raise typer.Exit(interruption.exit_code) from None
    from flows.reporting.tables import claims_rows, compact_rows, one_seed_note
    from flows.reporting.text import print_table

    columns, rows = compact_rows(result["document"], reference=True)
    print_table(f"{data}: test-part pooled MAE / RMSE (± std over seeds)", columns, rows)
    console.print(literal(f"champion (best validation score): {result['champion']}"))
    columns, rows = claims_rows(result["document"])
    if rows:
        print_table(
            "against the champion (paired Diebold-Mariano test over the test windows; "
            "p Holm-adjusted over the table)",
            columns,
            rows,
        )
        if (note := one_seed_note(result["document"])) is not None:
            console.print(literal(note))
    console.print(
        literal(f"wrote {out}/metrics.json, {out}/report.md, {out}/report.html, {out}/bundles/")
    )


def evaluate(
    bundle: str = typer.Argument(..., help="A bundle directory (e.g. OUT/bundles/ar)."),
    data: str = typer.Argument(..., help="The data set to score it on."),
    adjacency: str = ADJACENCY,
    index_col: str = INDEX_COL,
    no_index: bool = NO_INDEX,
    timezone: str = TIMEZONE,
    window: int = typer.Option(
        None,
        "--window",
        min=1,
        help="Protocol input window (scored windows); default: the bundle's input window, "
        "which is train's --window unless --tune chose another.",
    ),
    test: float = typer.Option(0.2, "--test", help="Share of the data held out for testing."),
    valid: float = typer.Option(0.1, "--valid", help="Share of the training part for validation."),
    out: str = typer.Option(None, "--out", help="Write the metrics to this JSON file."),
    data_dir: str = typer.Option(None, "--data-dir", help="Default: ROADCAST_DATA_DIR."),
) -> None:
    """Score a saved bundle on the test part of a data set, as `roadcast train` does."""
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from flows.cli.options import dataset_errors
    from flows.panels import read_panel
    from models.forecasters.comparison import evaluate_bundle

    if out and (
        (Path(out).exists() and not Path(out).is_file())
        or any(p.is_file() for p in Path(out).parents)
    ):
        raise typer.BadParameter(f"{out} cannot be written as a JSON file", param_hint="--out")
    for option, share in (("--test", test), ("--valid", valid)):
        if not 0 < share < 1:
            raise typer.BadParameter(f"must be a share in (0, 1), got {share}", param_hint=option)
    with dataset_errors():
        panel = read_panel(data, adjacency, data_dir, index_col, no_index, timezone)
    try:
        result = evaluate_bundle(bundle, panel, test=test, valid=valid, window=window, data=data)
    except ValueError as exc:  # BundleError included
        fail(exc, message=_unserved(bundle))
    if extra := result["sensors_not_scored"]:
        typer.echo(
            f"note: {len(extra)} sensor(s) of the data are not in the bundle, e.g. {extra[:5]}: "
            "not scored"
        )
    if silent := result["sensors_without_readings"]:
        typer.echo(
            f"note: {len(silent)} sensor(s) of the bundle have no reading in the test part, "
            f"e.g. {silent[:5]}: not scored"
        )
    if adjacency:
        typer.echo("note: --adjacency is not used: a bundle carries the graph it was trained on")
    freq = panel.freq.total_seconds() / 60
    title = f"{result['model']} on {data}: {result['windows']} test windows"
    table = Table(title=literal(title, "table.title"))
    for column in ("horizon", "pooled MAE", "pooled RMSE", "pooled MAPE %", "step RMSE"):
        table.add_column(column)
    for h, m in result["pooled"].items():
        table.add_row(
            f"{h} ({int(h) * freq:g} min)",
            _number(m["mae"], 4),
            _number(m["rmse"], 4),
            _number(m["mape"], 2),
            _number(result["step"][h]["rmse"], 4),
        )
    Console().print(table)
    if out:
        from pipeline.model_dir import write_json

        try:
            write_json(Path(out), result)
        except OSError as exc:
            fail(exc, message=f"--out: cannot write {out} ({exc.strerror or exc})")
        typer.echo(f"wrote {out}")


def _unserved(bundle: str) -> str | None:
    """The error for a ``bundle`` folder (``DIR/bundles/<model>``) without a bundle because
    a ``--no-promote`` run only registered the model's versions; None otherwise."""
    from pathlib import Path

    from pipeline.registry.versions import MANIFEST, list_versions

    path = Path(bundle)
    if (path / MANIFEST).exists() or path.is_symlink():  # a link: its reader names its target
        return None
    try:
        versions = list_versions(path.parent, path.name)
    except (OSError, ValueError):
        return None
    if not versions:
        return None
    return (
        f"no model bundle at {path}: {path.name} was registered but not served (a "
        f"--no-promote run?); pass a version, e.g. the newest {versions[-1].path}, or serve "
        f"it with `roadcast models promote {path.name} --models {path.parent}`"
    )


def _number(value: float | None, digits: int) -> str:
    """A metric for the table; n/a where none could be computed (no value scored)."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def detect(
    nab_dir: str = typer.Option(..., "--nab-dir", help="NAB data directory (<category>/*.csv)."),
    out: str = typer.Option(
        ..., "--out", help="Results directory (<detector>/<category>/<detector>_<file>)."
    ),
    detector: str = typer.Option(
        "ensemble",
        "--detector",
        help="ensemble, context, extreme, changepoint, spectral, interval, gan, contextpot, "
        "intervalpot, gaussian or likelihood (see flows/detect.py).",
    ),
    nab_range: bool = typer.Option(
        False,
        "--nab-range",
        help="NAB's convention: give detectors each file's min and max before they run.",
    ),
    score: bool = typer.Option(
        False, "--score", help="Print NAB's table for the categories found (needs label windows)."
    ),
    workers: int = typer.Option(
        None,
        "--workers",
        min=1,
        help="Files scored at once, each in a process (default: one per CPU; 1: one by one).",
    ),
) -> None:
    """Score every NAB file in streaming order and write NAB result files."""
    from pathlib import Path

    import pandas as pd

    from flows.detect import DEFAULT_RULE, DetectRunError, check_detector, detect_nab
    from flows.nab_table import labelled_categories, score_results
    from models.anomaly.nab_score import LabeledFile

    for option, value in (("--nab-dir", nab_dir), ("--out", out)):
        if not value.strip():
            raise typer.BadParameter("is empty; name a directory", param_hint=option)
    try:
        check_detector(detector)
    except DetectRunError as exc:
        raise typer.BadParameter(str(exc), param_hint="--detector") from None
    labelled: dict[str, list[LabeledFile]] = {}

    def check_windows(stamps: dict[Path, pd.DatetimeIndex]) -> None:
        labelled.update(labelled_categories(nab_dir, stamps))

    # SIGTERM stops a run as Ctrl-C does: the scoring processes stopped, nothing written.
    with sigterm_as_interrupt() as interruption:
        try:
            written = detect_nab(
                nab_dir,
                out,
                detector,
                nab_range=nab_range,
                progress=typer.echo,
                workers=workers,
                check=check_windows if score else None,  # windows refused before any scoring
            )
        except BrokenPipeError:  # `| head`: the group ends quietly
            raise
        except KeyboardInterrupt:
            typer.echo(
                f"error: interrupted before every file was scored; nothing written to {out}",
                err=True,
            )
            raise typer.Exit(interruption.exit_code) from None
        except (DetectRunError, OSError, ValueError) as exc:
            fail(exc)
    typer.echo(f"wrote {len(written)} result files for detector {detector!r} under {out}")
    if not score:
        return
    from flows.reporting.text import print_table

    threshold = DEFAULT_RULE.threshold if detector == "ensemble" else None
    try:
        rows = score_results(nab_dir, out, detector, threshold, labelled=labelled)
    except BrokenPipeError:  # `| head`: the group ends quietly
        raise
    except (DetectRunError, OSError, ValueError) as exc:
        fail(exc)
    profiles = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
    columns = ["category", "files", "windows"] + [f"{p} (NAB threshold)" for p in profiles]
    if threshold is not None:
        columns += [f"{p} (fixed {threshold:.4g})" for p in profiles] + ["FP rows (fixed)"]
    table = []
    for r in rows:
        line: list[object] = [r.category, r.files, r.windows]
        line += [r.nab_threshold.get(p, "n/a") for p in profiles]
        if threshold is not None:
            line += [r.fixed_threshold.get(p, "n/a") for p in profiles] + [r.false_positives]
        table.append(line)
    print_table(
        f"NAB scores of {detector!r} (normalised, 100 = perfect, 0 = never fires)", columns, table
    )
    if threshold is None:
        typer.echo(
            f"note: {detector!r} is scored as NAB scores any detector: its raw scores at the "
            "threshold NAB optimises per category, without the ensemble's rest period; as a "
            "member of the ensemble it fires under the ensemble's rule (docs/results.md)"
        )
    else:
        typer.echo(
            "note: '(NAB threshold)' is NAB's convention, the threshold optimised on each "
            "category's own labels (in-sample, as NAB's scoreboard is); '(fixed)' is the "
            "shipped rule, chosen on NAB's six categories without these files' labels (for "
            "those six categories it is in-sample too; leave-one-category-out figures: "
            "docs/results.md)"
        )
