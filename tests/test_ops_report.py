"""The scheduled report on a model directory whose models forecast different horizons,
on a store of 10-minute ticks: one table for all, every number what the store holds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.service.store import Store
from pipeline.service.store_rows import Batch, ForecastRows, ReadingRows, TickRow

STEP_MS = 600_000  # 10-minute ticks
TICKS = 30
ERRORS = {"ar": 1.0, "persistence": 2.0}  # each model's forecasts miss by this much


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """AR bundles of 6 steps and persistence of 3, and a store of their forecasts."""
    from models.forecasters.ar import AutoRegressive
    from models.forecasters.baselines import Persistence
    from pipeline.data.simulate import simulate_network

    root = tmp_path_factory.mktemp("ops_report")
    panel = simulate_network(
        sensors=4, days=2, seed=1, freq_minutes=10, faults_per_day=0.0, dropout=0.0
    )
    train, valid = panel.slice(0, 200), panel.slice(200, 240)
    models = (AutoRegressive(window=3, horizon=6), Persistence(window=3, horizon=3))
    for model in models:
        model.fit(train, valid=valid)
        model.save(root / "bundles" / model.name)
    live = panel.slice(240, 240 + TICKS)
    values = live.values.astype(np.float32)  # [time, node]
    start = int(live.timestamps[0].value // 1_000_000)
    with Store(root / "store.sqlite", durable=False) as store:
        ids = store.sensor_keys(list(live.sensor_ids))
        n = len(ids)
        batch = Batch(
            readings=[
                ReadingRows(
                    np.tile(ids, TICKS).astype(np.int64),
                    np.repeat(start + STEP_MS * np.arange(TICKS), n).astype(np.int64),
                    values.reshape(-1),
                    np.zeros(TICKS * n, np.int64),
                )
            ],
            ticks=[TickRow(start + t * STEP_MS, n, "complete", 0, 1.0) for t in range(TICKS)],
            state={"tick_ms": STEP_MS},
        )
        for model in models:
            for t in range(TICKS - model.horizon):
                mean = values[t + 1 : t + 1 + model.horizon] + ERRORS[model.name]
                batch.forecasts.append(
                    ForecastRows.from_arrays(model.name, start + t * STEP_MS, ids, mean)
                )
        store.write(batch)
    return root / "bundles", root / "store.sqlite"


@pytest.mark.integration
def test_models_of_different_horizons_share_the_report(
    world: tuple[Path, Path], prefect_harness, tmp_path: Path
) -> None:
    from flows.report_flow import report_flow

    bundles, store = world
    out = tmp_path / "report"
    result = report_flow(store=str(store), models_dir=str(bundles), out=str(out))
    assert result["rmse"] == pytest.approx(ERRORS)  # each at its own longest horizon
    text = (out / "report.md").read_text()
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in text.splitlines()
        if line.startswith(("| ar ", "| persistence "))
    }
    header = next(line for line in text.splitlines() if line.startswith("| model | 30 min"))
    columns = [c.strip() for c in header.split("|")[2:-1]]
    assert columns[:6] == [
        "30 min MAE", "30 min RMSE", "30 min MAPE %", "60 min MAE", "60 min RMSE", "60 min MAPE %",
    ]  # fmt: skip
    assert rows["ar"][:2] == ["1.000", "1.000"] and rows["ar"][3:5] == ["1.000", "1.000"]
    assert rows["persistence"][:2] == ["2.000", "2.000"]
    assert rows["persistence"][3:6] == ["-", "-", "-"]  # beyond its 3 steps
    assert "15/30/45/60" not in text  # the ticks are 10 minutes
    metrics = json.loads((out / "live_metrics.json").read_text())
    assert {m: e["horizon"] for m, e in metrics["models"].items()} == {"ar": 6, "persistence": 3}
    errors = pd.read_csv(out / "sensor_errors.csv")
    assert sorted(set(zip(errors.model, errors.horizon_steps, strict=True))) == [
        ("ar", 3), ("ar", 6), ("persistence", 3),
    ]  # fmt: skip


@pytest.mark.integration
def test_a_champion_without_a_bundle_is_named_in_the_report_not_shown_as_champion(
    world: tuple[Path, Path], prefect_harness, tmp_path: Path
) -> None:
    """The report said ``champion: lstm`` of a directory holding AR and persistence."""
    import shutil

    from flows.report_flow import report_flow
    from pipeline.model_dir import Champion, promote

    source, store = world
    bundles = tmp_path / "bundles"
    shutil.copytree(source, bundles)
    promote(bundles, Champion("ar", ("persistence",), {"ar": 1.0}, "m", "sim", "t"))
    path = bundles / "champion.json"
    path.write_text(path.read_text().replace('"champion": "ar"', '"champion": "lstm"'))
    out = tmp_path / "report"
    report_flow(store=str(store), models_dir=str(bundles), out=str(out))
    text = (out / "report.md").read_text()
    assert "- **champion.json**: names 'lstm', which has no bundle in" in text
    assert "- **champion**: none promoted" in text
