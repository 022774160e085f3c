"""Ticks on the training data's grid: a bundle records where its grid lies (``offset_s``,
the first training timestamp mod the step), and the service lays its ticks there, so a
network stamped at half past the hour in UTC is served at :30, not pushed onto :00."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.anomaly.gaussian import WindowedGaussianDetector
from models.anomaly.registry import load_detector
from models.bundle import BundleError, read_bundle
from models.forecasters.ar import AutoRegressive
from models.forecasters.baselines import Persistence
from models.forecasters.registry import load_model
from models.panel import SensorPanel
from pipeline.model_dir import load_bundles
from pipeline.service.config import ServiceConfig
from pipeline.service.loop import ForecastService
from pipeline.service.model_set import swap_refusal
from pipeline.settings import Settings, load_settings
from tests.service_support import (
    REPO,
    edit_config,
    produce_panel,
    read_topic,
    serve_until_closed,
    service_env,
    service_thread,
    store_counters,
)
from tests.waiting import WAIT_S, wait_until

SENSORS = tuple(f"s{i:02d}" for i in range(20))
HALF_PAST = "2024-03-01T00:00+05:30"  # 2024-02-29T18:30Z: hourly ticks at :30 UTC


def panel_from(start: str, n: int, freq: str = "1h") -> SensorPanel:
    """``n`` steps of ``freq`` readings of 20 sensors from ``start``, in UTC."""
    rng = np.random.default_rng(0)
    t = np.arange(n)
    values = 50 + 8 * np.sin(2 * np.pi * t / 24)[:, None] + rng.normal(0, 1, (n, len(SENSORS)))
    stamps = pd.date_range(pd.Timestamp(start).tz_convert("UTC"), periods=n, freq=freq)
    return SensorPanel.from_values(values.astype(np.float32), stamps, SENSORS, name="toy")


def train(root: Path, start: str, *models: type) -> Path:
    """Bundles of ``models`` (persistence and AR by default) trained on 10 days of hourly
    data from ``start``."""
    history = panel_from(start, 240)
    for kind in models or (Persistence, AutoRegressive):
        model = kind(window=3, horizon=2)
        model.fit(history.slice(0, 200), valid=history.slice(200, 240))
        model.save(root / model.name)
    return root


# ------------------------------------------------------------------------ bundles


@pytest.mark.parametrize(
    ("start", "freq", "offset"),
    [
        (HALF_PAST, "1h", 1800),
        ("2024-03-01T00:00Z", "1h", 0),
        ("2024-03-01T00:00+05:30", "1D", 66_600),  # local midnight: 18:30Z
        ("2024-03-01T00:07Z", "5min", 120),
    ],
)
def test_a_bundle_records_its_grid_offset_and_loads_it(tmp_path, start, freq, offset):
    model = Persistence(window=3, horizon=2).fit(panel_from(start, 60, freq))
    model.save(tmp_path / "p")
    assert read_bundle(tmp_path / "p").config["offset_s"] == offset
    assert load_model(tmp_path / "p").offset_s == offset


def test_an_old_bundle_without_an_offset_reads_as_offset_0(tmp_path):
    train(tmp_path, HALF_PAST, Persistence)
    edit_config(tmp_path / "persistence", offset_s=None)
    assert load_model(tmp_path / "persistence").offset_s == 0
    edit_config(tmp_path / "persistence", step_s=None)
    assert load_model(tmp_path / "persistence").offset_s is None


@pytest.mark.parametrize("value", [3600, -1, 1.5, "1800", True])
def test_a_bad_offset_is_refused_naming_bundle_and_field(tmp_path, value):
    train(tmp_path, HALF_PAST, Persistence)
    edit_config(tmp_path / "persistence", offset_s=value)
    with pytest.raises(BundleError, match=r"field 'offset_s' must be a whole number of seconds"):
        read_bundle(tmp_path / "persistence")


def test_a_saved_detector_records_its_grid_offset(tmp_path):
    detector = WindowedGaussianDetector().fit(panel_from(HALF_PAST, 60))
    detector.save(tmp_path / "gaussian")
    assert read_bundle(tmp_path / "gaussian").config["offset_s"] == 1800
    assert load_detector(tmp_path / "gaussian").offset_s == 1800


# ------------------------------------------------------------------------ service


@pytest.mark.integration
def test_a_network_stamped_at_half_past_is_served_on_its_own_grid(kafka_settings, tmp_path):
    bundles = train(tmp_path / "bundles", HALF_PAST)
    live = panel_from("2024-03-11T00:00+05:30", 8)  # after the training days, at :30 UTC
    sent = produce_panel(kafka_settings, live)
    store, log = tmp_path / "store.sqlite", tmp_path / "serve.log"
    serve_until_closed(kafka_settings, bundles, store, log, live.n_time - 1, "--detectors", "none")
    counters = store_counters(store)
    assert counters["valid"] == sent
    assert counters.get("late", 0) == 0
    forecasts = [
        json.loads(r.value) for r in read_topic(kafka_settings, kafka_settings.topic_forecasts)
    ]
    assert {f["model"] for f in forecasts} == {"ar", "persistence"}
    first = min(forecasts, key=lambda f: f["issued_at"])
    assert first["issued_at"] == "2024-03-10T18:30:00Z"
    assert first["targets"] == ["2024-03-10T19:30:00Z", "2024-03-10T20:30:00Z"]
    assert all(f["issued_at"].endswith(":30:00Z") for f in forecasts)
    with sqlite3.connect(store) as db:
        state = dict(db.execute("SELECT key, value FROM state"))
    assert state["tick_ms"] == 3_600_000 and state["tick_offset_ms"] == 1_800_000


def run_serve(settings: Settings, bundles: Path, store: Path) -> subprocess.CompletedProcess[str]:
    """``roadcast serve`` expected to refuse at start (killed, failing, if it serves)."""
    args = [
        sys.executable, "-m", "flows.cli", "serve", "--models", str(bundles),
        "--store", str(store), "--detectors", "none",
    ]  # fmt: skip
    try:
        return subprocess.run(
            args, cwd=REPO, env=service_env(settings), capture_output=True, text=True,
            timeout=WAIT_S,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise AssertionError("roadcast serve started instead of refusing") from None


@pytest.mark.integration
def test_models_of_different_offsets_are_refused_in_one_line(kafka_settings, tmp_path):
    bundles = train(tmp_path / "bundles", "2024-03-01T00:00Z", Persistence)
    train(bundles, HALF_PAST, AutoRegressive)
    result = run_serve(kafka_settings, bundles, tmp_path / "s.sqlite")
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"error: the models in {bundles} were trained on ticks at different offsets "
        "(persistence: +0s, ar: +30min past the tick grid of 1970-01-01T00:00Z); serve the "
        "models of one grid with --only\n"
    )


def test_a_service_refuses_models_of_another_offset_than_its_grid(tmp_path):
    models = load_bundles(train(tmp_path / "bundles", HALF_PAST))
    settings = load_settings(store_path=tmp_path / "s.sqlite")
    with pytest.raises(ValueError, match=r"ar was trained on ticks at \+30min .* at \+0s"):
        ForecastService(settings, ServiceConfig(tick="1h"), models)


def test_a_hot_reload_of_another_offset_is_refused(tmp_path):
    old = load_bundles(train(tmp_path / "old", "2024-03-01T00:00Z", Persistence))
    new = load_bundles(train(tmp_path / "new", HALF_PAST, Persistence))
    assert swap_refusal([], SENSORS, 3, old, {}, 0.0) is None
    reason = swap_refusal([], SENSORS, 3, new, {}, 0.0)
    assert reason == (
        "persistence was trained on ticks at +30min past the tick grid of 1970-01-01T00:00Z "
        "(its offset_s), the service's ticks lie at +0s: restart the service to serve it"
    )


@pytest.mark.integration
def test_a_restart_at_another_offset_is_refused(kafka_settings, tmp_path):
    store = tmp_path / "store.sqlite"
    settings = kafka_settings.model_copy(update={"store_path": store})
    half_past = load_bundles(train(tmp_path / "half", HALF_PAST, Persistence))
    config = ServiceConfig(tick="1h", tick_offset="30min", allowed_lateness="0min")
    service = ForecastService(settings, config, half_past)
    live = panel_from("2024-03-11T00:00+05:30", 4)
    produce_panel(settings, live)
    with service_thread(service):
        wait_until(lambda: service.counters["ticks_closed"] >= 3, what="the ticks to close")
    on_the_hour = train(tmp_path / "hour", "2024-03-01T00:00Z", Persistence)
    result = run_serve(kafka_settings, on_the_hour, store)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr == (  # refused before the group join: nothing else logged
        f"error: the store {store} was written with ticks at +30min past the tick grid of "
        "1970-01-01T00:00Z, not +0s: serve models trained on that grid (their offset_s) or "
        "use another --store\n"
    )
    with sqlite3.connect(store) as db:  # a store written before offsets were recorded: 0
        db.execute("DELETE FROM state WHERE key = 'tick_offset_ms'")
    ForecastService(settings, ServiceConfig(tick="1h"), load_bundles(on_the_hour)).store.close()
    with pytest.raises(ValueError, match=r"written with ticks at \+0s .*, not \+30min"):
        ForecastService(settings, config, half_past)
    # The refused service closed the store again: another process may take it.
    take = "import sys; from pipeline.service.store import StoreLock; StoreLock(sys.argv[1])"
    taken = subprocess.run(
        [sys.executable, "-c", take, str(store)], cwd=REPO, capture_output=True, text=True,
        timeout=WAIT_S,
    )  # fmt: skip
    assert taken.returncode == 0, taken.stderr[-2000:]


@pytest.mark.integration
def test_the_store_keeps_its_retention_and_a_restart_restores_from_it(kafka_settings, tmp_path):
    """``--retain 1d``: a day of event time before the newest closed tick stays in the
    store (ticks, readings, forecasts); older rows are deleted as the service runs, and a
    restarted service restores from what is left and goes on."""
    bundles = train(tmp_path / "bundles", HALF_PAST)
    live = panel_from("2024-03-11T00:00+05:30", 80)
    produce_panel(kafka_settings, live.slice(0, 72))
    store, log = tmp_path / "store.sqlite", tmp_path / "serve.log"
    extra = ("--detectors", "none", "--retain", "1d", "--poll-records", "20")
    serve_until_closed(kafka_settings, bundles, store, log, 72, *extra)  # every tick complete
    assert "store_pruned" in log.read_text()
    hour = 3_600_000

    def stored() -> tuple[list[int], int, int]:
        with sqlite3.connect(store) as db:
            ticks = [t for (t,) in db.execute("SELECT ts FROM ticks ORDER BY ts")]
            first_reading = db.execute("SELECT MIN(ts) FROM readings").fetchone()[0]
            first_forecast = db.execute("SELECT MIN(issued_at) FROM forecast_blocks").fetchone()[0]
        return ticks, first_reading, first_forecast

    ticks, first_reading, first_forecast = stored()
    assert ticks[-1] - ticks[0] == 24 * hour and len(ticks) == 25
    assert first_reading >= ticks[0] and first_forecast >= ticks[0]
    produce_panel(kafka_settings, live.slice(72, 80))
    serve_until_closed(kafka_settings, bundles, store, log, 80, *extra)
    ticks_after, _, _ = stored()
    assert ticks_after[-1] == ticks[-1] + 8 * hour and len(ticks_after) == 25
    assert store_counters(store)["ticks_closed"] == 80  # counted since the first tick


def test_a_store_of_another_tick_names_both_ticks_in_words():
    """It said "pass --tick 0 days 00:15:00", which the bundles' step then refused."""
    from pipeline.service.state import grid_problem

    assert grid_problem({"tick_ms": 900_000}, "s.sqlite", 3_600_000, 0) == (
        "the store s.sqlite was written with ticks of 15min, not 1h: serve models trained on "
        "15min steps (with --tick 15min) or use another --store"
    )
    assert grid_problem({"tick_ms": 3_600_000}, "s.sqlite", 3_600_000, 0) is None
