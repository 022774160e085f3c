"""The ``roadcast`` command line: one Typer app, its commands grouped by module.

:mod:`~flows.cli.data` (``roadcast data ...``), :mod:`~flows.cli.streaming` (broker,
replay, demo, serve, status, alerts), :mod:`~flows.cli.modelling` (train, evaluate,
explain, detect) and :mod:`~flows.cli.deployments` (deploy). Commands import their
heavy dependencies lazily so that ``roadcast --help`` stays fast; each command only
wires library functions.
"""

from __future__ import annotations

import typer

from flows.cli import data, deployments, modelling, streaming

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="roadcast: streaming traffic and sensor forecasting on Kafka.",
)
app.add_typer(data.app, name="data")
for command in (
    streaming.broker,
    streaming.replay,
    streaming.demo,
    modelling.explain,
    modelling.train,
    modelling.evaluate,
    streaming.serve,
    streaming.status,
    modelling.detect,
    streaming.alerts,
    deployments.deploy,
):
    app.command()(command)


def main() -> None:
    """Console-script entry point."""
    app()
