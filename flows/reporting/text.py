"""Tables as text: :func:`markdown_table` for reports, :func:`print_table` for terminals."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def markdown_table(
    columns: Sequence[str], rows: Sequence[Sequence[str]], *, numbers_right: bool = False
) -> str:
    """A GitHub-flavoured Markdown table (``|`` in cells escaped); with ``numbers_right``
    every column but the first is right-aligned."""

    def cell(text: str) -> str:
        return str(text).replace("|", "\\|")

    align = "---:|" if numbers_right else "---|"
    lines = [
        "| " + " | ".join(cell(c) for c in columns) + " |",
        "|---|" + align * (len(columns) - 1) if columns else "|",
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print rows as a rich table on the terminal; floats get 4 significant digits."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    Console().print(table)
