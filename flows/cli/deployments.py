"""``roadcast deploy``: roadcast's Prefect deployments: list, write or serve them."""

from __future__ import annotations

import typer

from flows.cli.errors import fail


def deploy(
    serve: bool = typer.Option(
        False, "--serve", help="Serve the deployments from this process (needs PREFECT_API_URL)."
    ),
    write_yaml: str = typer.Option(
        None, "--write-yaml", help="Write the deployments as a prefect.yaml to this path."
    ),
    limit: int = typer.Option(
        None, "--limit", min=1, max=10_000, help="With --serve: at most N flow runs at once."
    ),
    cron: list[str] | None = typer.Option(  # noqa: B008 (Typer reads the default)
        None,
        "--cron",
        help="DEPLOYMENT=CRON (UTC) or DEPLOYMENT=off, e.g. --cron train='0 4 * * *' (repeatable).",
    ),
    param: list[str] | None = typer.Option(  # noqa: B008 (Typer reads the default)
        None,
        "--param",
        help="DEPLOYMENT.PARAMETER=VALUE, e.g. --param train.data=csv:/data/flow.csv "
        "(repeatable; values are JSON when they parse).",
    ),
) -> None:
    """roadcast's deployments (train, forecast, report, drift, replay): list, write or serve."""
    from rich.console import Console
    from rich.table import Table

    from flows.deploy import DeployError, customised, describe

    if limit is not None and not serve:
        raise typer.BadParameter("only applies with --serve", param_hint="--limit")
    if cron or param or serve:
        from flows.cli.errors import load_prefect

        load_prefect()  # invalid PREFECT_* settings: one line, not a pydantic dump
    try:
        specs = customised(crons=cron or (), params=param or ())
    except DeployError as exc:
        fail(exc, 2)
    if serve:
        from flows.deploy import require_server

        try:
            require_server()
        except DeployError as exc:
            fail(exc, 2)
    if write_yaml is not None:
        from pathlib import Path

        from flows.deploy import write_yaml as write

        target = Path(write_yaml)
        if not write_yaml.strip():
            raise typer.BadParameter("a file path is needed", param_hint="--write-yaml")
        try:
            if (target.exists() and not target.is_file()) or any(
                p.is_file() for p in target.parents
            ):
                raise typer.BadParameter(
                    f"{write_yaml} cannot be written as a file", param_hint="--write-yaml"
                )
            typer.echo(f"wrote {write(write_yaml, specs)}")
        except OSError as exc:
            raise typer.BadParameter(
                f"cannot write {write_yaml}: a new file in {target.parent} failed "
                f"({exc.strerror or exc})",
                param_hint="--write-yaml",
            ) from None
    if serve:
        from flows.cli.errors import quiet_prefect_tracebacks
        from flows.deploy import serve_deployments

        quiet_prefect_tracebacks()  # the runner's own (a lost server's websocket) included
        try:
            serve_deployments(specs, limit=limit)
        except DeployError as exc:
            fail(exc, 2)
        typer.echo("stopped serving; schedules stay active on the server")
        return
    if write_yaml is not None:
        return
    rows = describe(specs)
    table = Table(title="roadcast deployments (serve: roadcast deploy --serve)")
    for column in rows[0]:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row.values())
    Console().print(table)
