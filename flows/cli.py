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


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
