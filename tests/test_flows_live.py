"""The scheduled flows against a store filled by the real service: ``forecast_flow``
publishes and stores forecasts of the champion and challengers, ``report_flow`` scores
every stored forecast and writes the report; both record their artifacts in Prefect."""

from __future__ import annotations

import base64
import json
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.artifacts import KEYS
from pipeline.kafka.schema import AlertMessage, decode_forecast, encode_alert
from pipeline.model_dir import Champion, promote, write_network
from pipeline.service.store import Store
from pipeline.service.store_rows import AlertRow, Batch
from tests.service_support import HORIZON, make_world, read_topic, service_thread
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _settings(broker, tmp: Path):
    from pipeline.settings import load_settings

    tag = uuid.uuid4().hex[:8]
    return load_settings(
        bootstrap_servers=broker.bootstrap,
        topic_readings=f"t.flows.readings.{tag}",
        topic_dlq=f"t.flows.dlq.{tag}",
        topic_forecasts=f"t.flows.forecasts.{tag}",
        topic_alerts=f"t.flows.alerts.{tag}",
        consumer_group=f"t.flows.group.{tag}",
        store_path=tmp / "store.sqlite",
    )


def _alert(sensor: str, ts: datetime, status: str) -> AlertRow:
    message = AlertMessage(
        alert_id=f"{sensor}:interval@{ts.isoformat()}",
        dedup_key=f"{sensor}:interval",
        status=status,  # type: ignore[arg-type]
        severity="warning",
        sensor=sensor,
        ts=ts,
        observed=12.0,
        expected=61.5,
        lo=55.0,
        hi=68.0,
        score=0.995,
        detector="interval",
        first_seen=ts,
        last_seen=ts,
    )
    payload = encode_alert(message)
    return AlertRow(
        message.alert_id, status, message.dedup_key, "warning", sensor,
        int(ts.timestamp() * 1000), "interval", 0.995, payload.decode(),
    )  # fmt: skip


@pytest.fixture(scope="module")
def live(broker, tmp_path_factory):
    """A tiny world whose readings went through the real service into a store, with a
    champion, the network's coordinates and two alerts recorded."""
    from pipeline.kafka.clients import ensure_topics, make_producer
    from pipeline.kafka.replay import replay
    from pipeline.model_dir import load_bundles
    from pipeline.service.config import ServiceConfig
    from pipeline.service.loop import ForecastService

    tmp = tmp_path_factory.mktemp("live")
    world = make_world(tmp / "bundles")
    settings = _settings(broker, tmp)
    ensure_topics(settings)
    producer = make_producer(settings)
    replay(world.live, producer, settings.topic_readings, progress=False)
    producer.close()
    config = ServiceConfig(allowed_lateness="0min", durable=False, poll_timeout_ms=50)
    service = ForecastService(settings, config, load_bundles(world.bundles))
    with service_thread(service):
        wait_until(lambda: service.counters["ticks_closed"] >= world.live.n_time, what="ticks")
    scores = {"ar": 1.0, "persistence": 2.0}
    promote(world.bundles, Champion("ar", ("persistence",), scores, "test", "sim", "now"))
    write_network(world.bundles, world.live)
    when = world.live.timestamps[-5].to_pydatetime()
    with Store(settings.store_path) as store:
        store.write(Batch(alerts=[_alert(world.live.sensor_ids[1], when, "firing")]))
        later = when + timedelta(minutes=10)
        store.write(Batch(alerts=[_alert(world.live.sensor_ids[1], later, "resolved")]))
    return world, settings


def _artifact(key: str):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    assert found, f"no artifact {key}"
    return max(found, key=lambda a: a.created)


def test_forecast_flow_publishes_stores_and_records(live, prefect_harness, monkeypatch):
    from flows.forecast_flow import forecast_flow

    world, settings = live
    # Topics come from the settings (ROADCAST_* variables), as in a deployment.
    monkeypatch.setenv("ROADCAST_TOPIC_FORECASTS", settings.topic_forecasts)
    with Store(settings.store_path) as store:
        last_tick = store.last_ticks(1)[0].ts_ms
        # As if the service ran only the champion (`--only ar`) at the newest tick.
        persistence = store.model_key("persistence")
        with store._transaction() as db:
            sql = "DELETE FROM forecast_blocks WHERE model=? AND issued_at=?"
            db.execute(sql, (persistence, last_tick))
        before = store.count("forecasts")
    run = {"models_dir": str(world.bundles), "store": str(settings.store_path)}
    result = forecast_flow(**run, bootstrap=settings.bootstrap_servers)
    assert result["champion"] == "ar"
    assert result["issued_at"] == pd.Timestamp(last_tick, unit="ms", tz="UTC").isoformat()
    sensors = world.live.n_nodes
    assert result["models"] == {"persistence": {"published": sensors, "skipped": 0}}
    assert result["already_forecast"] == ["ar"]  # the service's forecast stays the only one
    # published: one message per sensor, keyed by the sensor; ar's only by the service
    issued = datetime.fromtimestamp(last_tick / 1000, UTC)
    copies = Counter()
    for record in read_topic(settings, settings.topic_forecasts):
        message = decode_forecast(record.value)
        assert record.key == message.sensor.encode()
        if message.issued_at == issued:
            copies[(message.model, message.sensor)] += 1
    expected_copies = {("persistence", s): 2 for s in world.live.sensor_ids}  # its + the flow's
    expected_copies |= {("ar", s): 1 for s in world.live.sensor_ids}
    assert copies == expected_copies
    with Store(settings.store_path, readonly=True) as store:
        assert store.count("forecasts") == before + sensors
    # run again at the same tick: nothing published twice, nothing replaced
    again = forecast_flow(**run, bootstrap=settings.bootstrap_servers)
    assert again["models"] == {} and again["already_forecast"] == ["ar", "persistence"]
    assert again["stored_rows"] == 0
    artifact = _artifact(KEYS["forecast_latest"])
    table = artifact.data if isinstance(artifact.data, list) else json.loads(artifact.data)
    assert [row["role"] for row in table] == ["challenger"]  # the last run's: persistence
    assert table[0]["model"] == "persistence" and table[0]["sensors"] == sensors


def test_forecast_flow_stores_a_challenger_the_service_does_not_run(
    live, prefect_harness, tmp_path, caplog
):
    """Shadow mode: a model only the flow runs gets its forecasts into the store."""
    import logging
    import shutil

    from flows.forecast_flow import forecast_flow
    from models.forecasters.factory import build_model
    from pipeline.data.simulate import simulate_network
    from pipeline.model_dir import Champion
    from pipeline.model_dir import promote as write_champion

    world, settings = live
    panel = simulate_network(sensors=6, days=1.5, seed=3, faults_per_day=0.0, dropout=0.0)
    gru = build_model("gru", window=4, horizon=HORIZON, epochs=1, device="cpu", progress=False)
    gru.fit(panel.slice(0, 260), valid=panel.slice(260, 300))
    folder = tmp_path / "bundles"
    gru.save(folder / "gru")
    shutil.copytree(world.bundles / "ar", folder / "ar")
    # a champion.json of a model not served here: all are challengers, and the log says why
    # (it said there was no champion.json)
    unserved = Champion("lstm", ("ar",), {"lstm": 1.0}, "rmse", "simulated", "2024-01-01")
    write_champion(folder, unserved)
    with Store(settings.store_path, readonly=True) as store:
        before = store.count("forecasts")
    with caplog.at_level(logging.WARNING):
        result = forecast_flow(
            models_dir=str(folder), store=str(settings.store_path), publish_to_kafka=False
        )
    assert result["champion"] is None
    assert "the champion 'lstm' of champion.json is not served" in caplog.text
    sensors = world.live.n_nodes
    assert result["already_forecast"] == ["ar"]  # the service's
    assert result["stored_rows"] == sensors  # one row per sensor of the challenger
    with Store(settings.store_path, readonly=True) as store:
        assert store.count("forecasts") == before + sensors
        ids = {name: sid for sid, name in store.sensor_names().items()}
        keys = np.array([ids[s] for s in world.live.sensor_ids])
        issued, yhat, lo, _ = store.recent_forecasts("gru", 0, keys, HORIZON)
    assert len(issued) == 1 and np.isfinite(yhat).all() and lo is not None


def test_report_flow_scores_every_model_and_writes_the_report(live, prefect_harness, tmp_path):
    from flows.report_flow import report_flow

    world, settings = live
    out = tmp_path / "report"
    result = report_flow(
        since="1d", store=str(settings.store_path), models_dir=str(world.bundles), out=str(out)
    )
    # live errors equal the store's own join of forecasts and readings
    with Store(settings.store_path, readonly=True) as store:
        joined = store.score()
    metrics = json.loads((out / "live_metrics.json").read_text())
    # every model in the store (another test's shadow challenger may be there too)
    assert set(metrics["models"]) >= set(world.models)
    assert metrics["period"]["ticks"] == world.live.n_time
    for model in world.models:
        # every forecast of the period is in the store's join; the report scores those
        # whose targets are all inside the period, so compare on step 1 of full windows
        entry = metrics["models"][model]
        assert entry["windows"] == world.live.n_time - HORIZON
        assert entry["horizon"] == HORIZON
        one = joined[(joined.model == model) & (joined.step == 1)]
        assert entry["step"]["3"]["count"] > 0
        assert np.isfinite(one.mae).all()
        assert result["rmse"][model] == pytest.approx(entry["pooled"][str(HORIZON)]["rmse"])
    errors = pd.read_csv(out / "sensor_errors.csv")
    assert set(errors.model) == set(metrics["models"])
    assert set(errors.sensor.astype(str)) == set(world.live.sensor_ids)
    assert set(errors[errors.model.isin(world.models)].horizon_steps) == {HORIZON}
    page = (out / "report.html").read_text()
    for section in ("Model comparison", "Error by horizon", "best and worst sensor",
                    "Error across the network", "Alerts in the period",
                    "What produced this report"):  # fmt: skip
        assert section in page, section
    images = page.split("data:image/png;base64,")[1:]
    assert len(images) == 3
    assert all(base64.b64decode(i.split("'")[0]).startswith(b"\x89PNG") for i in images)
    md = (out / "report.md").read_text()
    assert "| model | 15 min MAE | 15 min RMSE | 15 min MAPE % |" in md
    assert "figures/network_map.png" in md and (out / "figures" / "network_map.png").is_file()
    # artifacts under their stable keys
    accuracy = _artifact(KEYS["live_accuracy"])
    rows = accuracy.data if isinstance(accuracy.data, list) else json.loads(accuracy.data)
    assert {r["model"] for r in rows} == set(metrics["models"])
    alerts = _artifact(KEYS["alerts"])
    rows = alerts.data if isinstance(alerts.data, list) else json.loads(alerts.data)
    assert {(r["detector"], r["status"]) for r in rows} == {
        ("interval", "firing"),
        ("interval", "resolved"),
    }
    assert "Model comparison" in _artifact(KEYS["live_report"]).data


def test_report_flow_names_the_fix_for_an_empty_store(prefect_harness, tmp_path):
    from flows.report_flow import report_flow
    from pipeline.service.store_reads import StoreReadError

    Store(tmp_path / "empty.sqlite").close()
    with pytest.raises(StoreReadError, match="roadcast serve"):
        report_flow(store=str(tmp_path / "empty.sqlite"), models_dir=str(tmp_path))
    from tests.registry_support import make_registry

    models = make_registry(tmp_path / "models", 5).bundles  # with models: not "another network"
    with pytest.raises(StoreReadError, match="holds no sensor yet"):
        report_flow(store=str(tmp_path / "empty.sqlite"), models_dir=str(models))
