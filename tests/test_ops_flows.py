"""What an operator reads from the scheduled drift watch and ``roadcast status`` says what
was done: a drift run over no model is an error, not a pass; the accuracy table names
the span it covers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from pipeline.model_dir import BundleDirError
from pipeline.service.store import Store
from pipeline.service.store_rows import Batch, ReadingRows, TickRow

STEP_MS = 300_000
T0 = int(pd.Timestamp("2024-03-04T00:00Z").value // 1_000_000)


def small_store(path: Path, ticks: int = 12) -> Path:
    """A store of ``ticks`` closed 5-minute ticks of sensors a and b."""
    with Store(path, durable=False) as store:
        ids = store.sensor_keys(["a", "b"])
        batch = Batch(
            readings=[
                ReadingRows(
                    np.tile(ids, ticks).astype(np.int64),
                    np.repeat(T0 + STEP_MS * np.arange(ticks), 2).astype(np.int64),
                    np.full(2 * ticks, 50.0, np.float32),
                    np.zeros(2 * ticks, np.int64),
                )
            ],
            ticks=[TickRow(T0 + t * STEP_MS, 2, "complete", 0, 1.0) for t in range(ticks)],
            state={"tick_ms": STEP_MS},
        )
        store.write(batch)
    return path


@pytest.mark.integration
def test_a_drift_run_over_a_model_directory_without_bundles_fails(
    prefect_harness, tmp_path: Path
) -> None:
    from flows.drift_flow import drift_flow

    empty = tmp_path / "models"
    empty.mkdir()
    store = small_store(tmp_path / "store.sqlite")
    with pytest.raises(BundleDirError, match=rf"no model bundles .* in {empty}"):
        drift_flow(store=str(store), models_dir=str(empty))


@pytest.mark.parametrize(
    ("last", "title"),
    [(None, "live accuracy (last 1d)"), ("6h", "live accuracy (last 6h)"),
     ("288", "live accuracy (last 288 ticks)"), ("0", "live accuracy (all ticks)")],
)  # fmt: skip
def test_status_names_the_span_its_accuracy_covers(
    tmp_path: Path, last: str | None, title: str
) -> None:
    store = small_store(tmp_path / "store.sqlite")
    args = ["status", "--store", str(store), *(() if last is None else ("--last", last))]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert title in " ".join(done.output.split())  # a narrow table wraps its title
