"""Tables as text: :func:`markdown_table` for reports, :func:`print_table` for terminals,
and the escaping that shows data (sensor ids, labels, file names) as written:
:func:`markdown_text` in Markdown, :func:`literal` on Rich consoles, :func:`csv_safe` in
CSV files a spreadsheet may open."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from rich.text import Text

# What has a meaning in (GitHub-flavoured) Markdown inline text and table cells: code,
# emphasis, links and images, headings' closing #, cell borders, strikethrough, math.
_MARKDOWN_SPECIALS = re.compile(r"([\\`*_\[\]#|~$])")
# Text a spreadsheet runs as a formula (OWASP's CSV injection): a leading =, +, @, tab or
# carriage return, or a - that does not start a number.
_FORMULA = re.compile(r"[=+@\t\r]|-(?![\d.])")


def markdown_text(value: object) -> str:
    """``value`` as inline Markdown (a table cell, a heading's or a list item's text) that
    renders as exactly its text: Markdown specials and backslashes backslash-escaped,
    ``<``, ``>`` and ``&`` as HTML entities (no raw HTML), line breaks as character
    references (a table row stays one line)."""
    escaped = html.escape(_MARKDOWN_SPECIALS.sub(r"\\\1", str(value)), quote=False)
    return escaped.replace("\r", "&#13;").replace("\n", "&#10;")


def csv_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every text cell a spreadsheet would run as a formula (``=cmd|x``)
    prefixed by ``'``, which shows it as written; numbers and other text unchanged."""
    from pandas.api.types import is_object_dtype, is_string_dtype

    out = frame.copy()
    for column in out.columns:
        if is_object_dtype(out[column]) or is_string_dtype(out[column]):
            out[column] = out[column].map(
                lambda v: f"'{v}" if isinstance(v, str) and _FORMULA.match(v) else v
            )
    return out


def markdown_table(
    columns: Sequence[str], rows: Sequence[Sequence[str]], *, numbers_right: bool = False
) -> str:
    """A GitHub-flavoured Markdown table (cells through :func:`markdown_text`); with
    ``numbers_right`` every column but the first is right-aligned."""
    align = "---:|" if numbers_right else "---|"
    lines = [
        "| " + " | ".join(markdown_text(c) for c in columns) + " |",
        "|---|" + align * (len(columns) - 1) if columns else "|",
    ]
    lines += ["| " + " | ".join(markdown_text(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def literal(value: object, style: str = "") -> Text:
    """``value`` as Rich text shown as written: never read as console markup
    (``[bold]``) or emoji codes (``:smile:``); for table cells, titles and lines."""
    from rich.text import Text

    return Text(str(value), style=style)


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print rows as a rich table on the terminal; floats get 4 significant digits; every
    text is shown as written (:func:`literal`) and whole, however narrow the terminal."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=literal(title, "table.title"))
    for column in columns:
        table.add_column(literal(column))
    for row in rows:
        table.add_row(*(literal(f"{v:.4g}" if isinstance(v, float) else v) for v in row))
    console = Console()
    unbounded = console.options.update(max_width=100_000)
    wide = console.measure(table, options=unbounded).maximum  # a pipe's 80 columns cut cells
    (Console(width=wide) if wide > console.width else console).print(table)
