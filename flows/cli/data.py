"""``roadcast data``: list, inspect and fetch data sets."""

from __future__ import annotations

import typer

from flows.cli.errors import HelpGroup, fail
from flows.cli.options import ADJACENCY, INDEX_COL, NO_INDEX, TIMEZONE

app = typer.Typer(
    cls=HelpGroup,
    rich_markup_mode=None,
    no_args_is_help=True,
    help="List, inspect and fetch data sets.",
)


@app.command("list")
def data_list(
    data_dir: str = typer.Option(None, "--data-dir", help="Default: ROADCAST_DATA_DIR."),
) -> None:
    """List the known data sets and whether their files are in the data directory."""
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from flows.reporting.text import literal
    from pipeline.data.datasets import DATASETS, dataset_dir
    from pipeline.settings import SettingsError

    try:
        root = dataset_dir(Path(data_dir) if data_dir else None)
    except SettingsError as exc:
        fail(exc)
    table = Table(title=literal(f"data sets (data directory: {root})", "table.title"))
    for column in ("name", "here", "description", "licence"):
        table.add_column(column, overflow="fold")
    for info in DATASETS.values():
        required = [f for f in info.files if f.required]
        if not info.files:
            here = "built-in"
        else:
            found = sum(f.present_in(root) for f in required)
            here = "yes" if found == len(required) else f"{found}/{len(required)} files"
        cells = (info.name, here, f"{info.description} ({info.source})", info.licence)
        table.add_row(*map(literal, cells))
    console = Console()
    console.print(table)
    console.print(
        literal(
            "your own network: csv:PATH, npz:PATH, h5:PATH or parquet:PATH, with --adjacency "
            "(the README's 'Data sets' lists each one's options)"
        )
    )


@app.command("info")
def data_info(
    name: str = typer.Argument(..., help="los-loop, metr-la, pems-bay, nab:CAT/FILE.csv, ..."),
    adjacency: str = ADJACENCY,
    data_dir: str = typer.Option(None, "--data-dir", help="Default: ROADCAST_DATA_DIR."),
    index_col: str = INDEX_COL,
    no_index: bool = NO_INDEX,
    timezone: str = TIMEZONE,
) -> None:
    """Load a data set and print its shape, grid, graph and missing share."""
    from collections import Counter
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from flows.cli.options import dataset_errors
    from flows.panels import read_panel
    from flows.reporting.text import literal
    from models.forecasters.comparison import check_readings
    from pipeline.data.datasets import DATASETS, dataset_dir
    from pipeline.data.fetch import check_files

    with dataset_errors():
        panel = read_panel(name, adjacency, data_dir, index_col, no_index, timezone)
    table = Table(title=literal(panel.name or name, "table.title"), show_header=False)
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
        lengths = (
            "road lengths known"
            if known
            else "no distances: the free-flow reachability mask counts hops"
        )
        table.add_row("graph edges", f"{graph.edge_index.shape[1]:,} directed links ({lengths})")
    table.add_row("coordinates", "yes" if panel.coords is not None else "no")
    table.add_row("missing share", f"{panel.missing_share:.2%}")
    kinds = Counter(e.kind for e in panel.events)
    if kinds:
        table.add_row("events", literal(", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))))
    info = DATASETS.get(name)
    if info is not None:
        checked, differ = check_files(info, dataset_dir(Path(data_dir) if data_dir else None))
        if checked:
            text = "\n".join(differ) or f"{checked} match the published digests"
            table.add_row("files", literal(text))
    Console().print(table)
    try:
        notes = check_readings(panel)  # what `roadcast train` would say of these readings
    except ValueError as exc:  # the file's own notes still say what it left to assumptions
        notes = [*panel.notes, f"note: `roadcast train` refuses these readings: {exc}"]
    if panel.graph is not None:  # what `roadcast train` says of the graph, too
        from models.forecasters.comparison import TrainPlan, check_graphs

        notes += check_graphs(panel, TrainPlan(models=("tgclstm",)))
    for note in notes:
        typer.echo(note)


@app.command("fetch")
def data_fetch(
    name: str = typer.Argument(..., help="los-loop, metr-la, pems-bay or nab."),
    data_dir: str = typer.Option(None, "--data-dir", help="Default: ROADCAST_DATA_DIR."),
    mirror: str = typer.Option(
        None, "--mirror", help="Base URL to fetch DATA_DIR-relative paths from instead."
    ),
    timeout: float = typer.Option(
        30.0,
        "--timeout",
        help="Seconds per connection attempt and per read; a file arriving slower than "
        "1 KiB/s over this span fails.",
    ),
    sha256: list[str] | None = typer.Option(  # noqa: B008 (Typer reads the default)
        None,
        "--sha256",
        help="PATH=HEX: accept the file at PATH (as listed) with this sha256; for files "
        "with no published checksum. Repeatable.",
    ),
) -> None:
    """Download a public data set into the data directory and check its checksums."""
    from pathlib import Path

    from pipeline.data.datasets import DATASETS, DatasetError
    from pipeline.data.fetch import (
        Fetched,
        FetchError,
        fetch_dataset,
        parse_sha256_options,
        timeout_problem,
    )
    from pipeline.settings import SettingsError

    if name not in DATASETS:
        raise typer.BadParameter(
            f"unknown data set {name!r}; known: {', '.join(DATASETS)}", param_hint="NAME"
        )
    if (problem := timeout_problem(timeout)) is not None:
        raise typer.BadParameter(problem, param_hint="--timeout")

    def report(item: Fetched) -> None:
        detail = f" ({item.detail})" if item.detail else ""
        optional = " (optional: the data set loads without it)" if not item.file.required else ""
        typer.echo(f"{item.status:>10}  {item.path}{detail}{optional}")

    try:
        fetched = fetch_dataset(
            name,
            data_dir=Path(data_dir) if data_dir else None,
            mirror=mirror,
            timeout=timeout,
            progress=report,
            sha256=parse_sha256_options(sha256 or [], name),
        )
    except (FetchError, DatasetError, SettingsError) as exc:
        fail(exc)
    if not fetched:
        typer.echo(f"{name} is built in (generated on the fly): nothing to fetch")
