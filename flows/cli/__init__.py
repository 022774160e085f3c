"""The ``roadcast`` command line: one Typer app, its commands grouped by module.

:mod:`~flows.cli.data` (``roadcast data ...``), :mod:`~flows.cli.streaming` (broker,
replay, demo, serve, status, alerts, alerts deliver), :mod:`~flows.cli.tail` (tail),
:mod:`~flows.cli.modelling` (train, evaluate, explain, detect),
:mod:`~flows.cli.deployments` (deploy) and :mod:`~flows.cli.models` (``models list /
promote / rollback``). Commands import their heavy dependencies lazily so that
``roadcast --help`` stays fast; each command only wires library functions. Errors are
one line (:mod:`~flows.cli.errors`); the global ``--debug`` option shows tracebacks.
"""

from __future__ import annotations

import typer

from flows.cli import data, deployments, modelling, models, streaming, tail
from flows.cli.errors import DEBUG_ENV, RoadcastGroup, set_debug

# Every app's help is click's plain layout (flows.cli.errors.HelpGroup says why).
app = typer.Typer(
    cls=RoadcastGroup,
    rich_markup_mode=None,
    no_args_is_help=True,
    add_completion=False,
    help="roadcast: streaming traffic and sensor forecasting on Kafka.",
)


@app.callback()
def _global_options(
    debug: bool = typer.Option(
        False,
        "--debug",
        envvar=DEBUG_ENV,
        help="Show the full traceback of an error (default: one line).",
    ),
) -> None:
    set_debug(debug)


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
    streaming.health,
    tail.tail,
    modelling.detect,
    deployments.deploy,
):
    app.command()(command)
app.add_typer(streaming.alerts_app, name="alerts")
app.add_typer(models.app, name="models")


def main() -> None:
    """Console-script entry point."""
    app()
