"""What every reader of data files shares: :class:`DatasetError`, the one error they raise
(its message names the file, line or column to fix), and what a missing or blank cell is.
"""

from __future__ import annotations

import pandas as pd

# pandas' default missing-value strings (a spreadsheet's #N/A among them), in lower case.
MISSING_TOKENS = frozenset(
    {"", "nan", "na", "null", "none", "n/a", "-nan", "#n/a", "#na", "#n/a n/a", "<na>",
     "-1.#ind", "1.#ind", "-1.#qnan", "1.#qnan"}
)  # fmt: skip


class DatasetError(ValueError):
    """A data set cannot be read; the message names the file, line or column to fix."""


def missing(column: pd.Series) -> pd.Series:
    """True for each cell that is empty or a missing token (``nan``, ``null``...)."""
    return column.str.strip().str.lower().isin(MISSING_TOKENS)


def filled(column: pd.Series) -> pd.Series:
    """True for each cell of ``column`` that is not empty or blank."""
    return column.fillna("").str.strip().astype(bool)
