"""Data sets as the command line and the flows name them: a spec, and paths as text."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.panel import SensorPanel


def read_panel(
    data: str,
    adjacency: str | None,
    data_dir: str | None,
    index_col: str | None = None,
    no_index: bool = False,
    timezone: str | None = None,
) -> SensorPanel:
    """The data set ``data`` (a :func:`pipeline.data.datasets.load_dataset` spec); an
    empty or None ``adjacency`` or ``data_dir`` is not given."""
    from pipeline.data.datasets import load_dataset

    return load_dataset(
        data,
        data_dir=Path(data_dir) if data_dir else None,
        adjacency=Path(adjacency) if adjacency else None,
        index_col=index_col,
        no_index=no_index,
        timezone=timezone,
    )
