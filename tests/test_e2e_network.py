"""A user's own network through the service: the tick comes from the served models, and
readings at another step than the models' are named in one ``tick_mismatch`` line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from models.forecasters.baselines import Persistence
from models.panel import SensorPanel
from pipeline.model_dir import load_bundles
from pipeline.service.config import ServiceConfig
from pipeline.service.loop import ForecastService
from pipeline.service.store import Store
from tests.service_support import (
    produce_panel,
    read_topic,
    serve_until_closed,
    service_thread,
    store_counters,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

SENSORS = ("007", "1.0", "sensor 1", "Zürich-3")


def panel_at(freq: str, n: int) -> SensorPanel:
    """A small network of odd sensor ids, ``n`` steps of ``freq`` from a UTC midnight."""
    rng = np.random.default_rng(0)
    t = np.arange(n)
    values = 50 + 8 * np.sin(2 * np.pi * t / 24)[:, None] + rng.normal(0, 1, (n, len(SENSORS)))
    stamps = pd.date_range("2024-03-04", periods=n, freq=freq, tz="UTC")
    return SensorPanel.from_values(values.astype(np.float32), stamps, SENSORS, name="toy")


def bundles_at(root: Path, freq: str) -> Path:
    """A persistence bundle trained on ``freq`` data, in ``root``."""
    Persistence(window=3, horizon=2).fit(panel_at(freq, 60)).save(root / "persistence")
    return root


def test_serve_takes_its_tick_from_the_models(kafka_settings, tmp_path):
    bundles = bundles_at(tmp_path / "bundles", "1h")
    live = panel_at("1h", 6)
    sent = produce_panel(kafka_settings, live)
    store, log = tmp_path / "store.sqlite", tmp_path / "serve.log"
    serve_until_closed(kafka_settings, bundles, store, log, live.n_time - 1)  # no --tick
    with Store(store, readonly=True) as db:
        assert db.state()["tick_ms"] == 3_600_000
    assert store_counters(store)["valid"] == sent
    records = read_topic(kafka_settings, kafka_settings.topic_forecasts)
    forecasts = [json.loads(r.value) for r in records]
    assert {f["sensor"] for f in forecasts} == set(SENSORS)
    first = min(forecasts, key=lambda f: f["issued_at"])
    assert first["issued_at"] == "2024-03-04T00:00:00Z"
    assert first["targets"] == ["2024-03-04T01:00:00Z", "2024-03-04T02:00:00Z"]


def test_models_of_different_steps_are_refused_in_one_line(tmp_path):
    bundles = tmp_path / "bundles"
    Persistence(window=3, horizon=2).fit(panel_at("15min", 60)).save(bundles / "persistence")
    from models.forecasters.ar import AutoRegressive

    AutoRegressive(window=3, horizon=2).fit(panel_at("1h", 60)).save(bundles / "ar")
    result = CliRunner().invoke(
        app, ["serve", "--models", str(bundles), "--store", str(tmp_path / "s.sqlite")]
    )
    assert result.exit_code == 2, result.output
    assert result.output == (
        f"error: the models in {bundles} were trained on different time steps (persistence: "
        "15-minute steps, ar: 1-hour steps); serve the models of one step with --only\n"
    )


def _mismatches(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [r.__dict__["fields"] for r in caplog.records if r.getMessage() == "tick_mismatch"]


@pytest.mark.parametrize("paced", [False, True], ids=["backlog", "one step a batch"])
def test_readings_finer_than_the_models_step_are_named_once(
    kafka_settings, tmp_path, caplog, paced
):
    """15-minute readings into hourly models: one line names a sensor, two of its
    readings and the step, whether the second reading finds its tick open (conflict) or
    closed (late)."""
    caplog.set_level(logging.WARNING, logger="roadcast.service")
    models = load_bundles(bundles_at(tmp_path / "bundles", "1h"))
    settings = kafka_settings.model_copy(update={"store_path": tmp_path / "s.sqlite"})
    config = ServiceConfig(tick=pd.Timedelta("1h"), allowed_lateness="0min", durable=False)
    service = ForecastService(settings, config, models)
    live = panel_at("15min", 12)
    with service_thread(service):
        for k in range(live.n_time) if paced else [None]:
            produce_panel(settings, live if k is None else live.slice(k, k + 1))
            done = live.n_time if k is None else k + 1
            wait_until(
                lambda done=done: service.counters["consumed"] >= done * len(SENSORS),
                what="the readings to be consumed",
            )
    counters = service.counters
    assert counters["valid"] == live.n_time * len(SENSORS)
    assert counters["conflict"] + counters["late"] + counters["duplicate"] > 0
    [line] = _mismatches(caplog)
    assert line["sensor"] in SENSORS and line["tick"] == "1h"
    assert line["readings"] == ["2024-03-04T00:00:00Z", "2024-03-04T00:15:00Z"]
    assert "15min apart share one 1h tick" in str(line["hint"])


def test_readings_coarser_than_the_models_step_are_named_once(kafka_settings, tmp_path, caplog):
    """Hourly readings into 15-minute models: the ticks close four apart, said once."""
    caplog.set_level(logging.WARNING, logger="roadcast.service")
    models = load_bundles(bundles_at(tmp_path / "bundles", "15min"))
    settings = kafka_settings.model_copy(update={"store_path": tmp_path / "s.sqlite"})
    config = ServiceConfig(tick=pd.Timedelta("15min"), allowed_lateness="0min", durable=False)
    service = ForecastService(settings, config, models)
    live = panel_at("1h", 10)
    produce_panel(settings, live)
    with service_thread(service):
        wait_until(
            lambda: service.counters["ticks_closed"] >= live.n_time - 1,
            what="the hourly readings' ticks to close",
        )
    [line] = _mismatches(caplog)
    assert line["every"] == "1h" and line["tick"] == "15min"
    assert "the 3 ticks between hold no reading" in str(line["hint"])


def test_a_steady_network_with_an_outage_is_not_a_mismatch(kafka_settings, tmp_path, caplog):
    """Readings at the models' step, with a network-wide outage, say nothing."""
    caplog.set_level(logging.WARNING, logger="roadcast.service")
    models = load_bundles(bundles_at(tmp_path / "bundles", "15min"))
    settings = kafka_settings.model_copy(update={"store_path": tmp_path / "s.sqlite"})
    config = ServiceConfig(tick=pd.Timedelta("15min"), allowed_lateness="0min", durable=False)
    service = ForecastService(settings, config, models)
    live = panel_at("15min", 16)
    mask = live.mask.copy()
    mask[5:9] = False  # an hour without readings
    gappy = SensorPanel(live.values, mask, live.timestamps, live.sensor_ids)
    sent = produce_panel(settings, gappy)
    with service_thread(service):
        wait_until(lambda: service.counters["consumed"] >= sent, what="the readings")
        wait_until(lambda: service.counters["ticks_closed"] >= 11, what="the ticks to close")
    assert _mismatches(caplog) == []
