"""Anomaly alerts through the service and the real embedded broker: an incident in the
replayed simulated data fires and then resolves on ``roadcast.alerts``; a restart in the
middle of it resolves the alerts under the ids they fired with."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.alerts.build import build_alerting
from pipeline.kafka.clients import ensure_topics, make_producer
from pipeline.kafka.replay import replay
from pipeline.kafka.schema import decode_alert
from pipeline.model_dir import load_bundles, union_sensors
from pipeline.service.config import ServiceConfig
from pipeline.service.loop import ForecastService
from pipeline.service.store import Store
from tests.service_support import make_incident_world, read_topic, service_thread
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

CONFIG = ServiceConfig(allowed_lateness="0min", durable=False, poll_timeout_ms=50)
GRACE = pd.Timedelta(minutes=30)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_incident_world(tmp_path_factory.mktemp("incident"))


def _service(world, settings) -> ForecastService:
    models = load_bundles(world.bundles)
    hook = build_alerting(world.bundles, models, union_sensors(models), CONFIG.tick)
    return ForecastService(settings, CONFIG, models, alert_hook=hook)


def _stream(world, settings, start: int, stop: int) -> int:
    """Replay live steps [start, stop) and run a service until all but the last closed."""
    producer = make_producer(settings)
    replay(world.live.slice(start, stop), producer, settings.topic_readings, progress=False)
    producer.close()
    service = _service(world, settings)
    # The last step stays open: nothing after it moves the watermark past it.
    with service_thread(service):
        wait_until(
            lambda: service.counters["ticks_closed"] >= stop - 1, what=f"{stop - 1} ticks closed"
        )
    return service.counters["alerts_published"]


def _alerts(settings):
    out = []
    for record in read_topic(settings, settings.topic_alerts):
        headers = dict(record.headers)
        out.append((decode_alert(record.value), record.key, headers.get("group")))
    return out


def test_an_incident_fires_then_resolves_on_the_alerts_topic(world, kafka_settings, tmp_path):
    settings = kafka_settings.model_copy(update={"store_path": tmp_path / "store.sqlite"})
    ensure_topics(settings)
    published = _stream(world, settings, 0, world.live.n_time)
    alerts = _alerts(settings)
    assert published == len(alerts) > 0
    incident = world.incident
    episodes: dict[str, list[str]] = {}
    for message, key, group in alerts:
        assert key == message.sensor.encode() and group and group.startswith(b"incident:")
        episodes.setdefault(message.alert_id, []).append(message.status)
        if message.status == "firing":  # every alert belongs to the incident: no false alarm
            assert message.sensor in incident.sensors
            assert incident.start <= pd.Timestamp(message.ts) <= incident.end + GRACE
    assert all(statuses[0] == "firing" for statuses in episodes.values())
    complete = [a for a, statuses in episodes.items() if statuses[-1] == "resolved"]
    assert complete, f"no alert resolved: {episodes}"
    first = min(pd.Timestamp(m.ts) for m, _, _ in alerts)
    assert first - incident.start <= pd.Timedelta(minutes=5)  # found at its onset
    assert len({g for _, _, g in alerts}) == 1  # neighbours' alerts: one incident
    with Store(settings.store_path, readonly=True) as store:
        rows = store.alerts(limit=1000)
        assert {(r.alert_id, r.status) for r in rows} == {
            (m.alert_id, m.status) for m, _, _ in alerts
        }
        assert all(r.group_key and r.group_key.encode() == alerts[0][2] for r in rows)
        assert store.counters()["alerts_published"] == published


def test_a_restart_mid_incident_resolves_the_alerts_it_had_fired(world, kafka_settings, tmp_path):
    """The second service re-derives the alert state from the store: the alerts fired
    before the restart are resolved under their ids, none is fired twice, and the topic
    holds what an uninterrupted run publishes."""
    settings = kafka_settings.model_copy(update={"store_path": tmp_path / "store.sqlite"})
    ensure_topics(settings)
    cut = 431 - 405 + 4  # four ticks into the incident: several alerts are firing
    _stream(world, settings, 0, cut + 1)
    with Store(settings.store_path, readonly=True) as store:
        open_before = {r.alert_id for r in store.open_alerts()}
    assert open_before, "nothing was firing at the restart"
    _stream(world, settings, cut + 1, world.live.n_time)
    alerts = [m for m, _, _ in _alerts(settings)]
    resolved = {m.alert_id for m in alerts if m.status == "resolved"}
    assert open_before <= resolved  # resolved after the restart, under the same ids
    # No firing sent twice; an alert still firing after repeat_interval is re-sent later.
    fired = [(m.alert_id, m.ts) for m in alerts if m.status == "firing"]
    assert len(fired) == len(set(fired))

    reference = kafka_settings.model_copy(
        update={
            "store_path": tmp_path / "reference.sqlite",
            "topic_readings": f"{settings.topic_readings}.ref",
            "topic_alerts": f"{settings.topic_alerts}.ref",
            "topic_forecasts": f"{settings.topic_forecasts}.ref",
            "consumer_group": f"{settings.consumer_group}.ref",
        }
    )
    ensure_topics(reference)
    _stream(world, reference, 0, world.live.n_time)
    expected = sorted((m.alert_id, m.status, m.ts) for m, _, _ in _alerts(reference))
    assert sorted((m.alert_id, m.status, m.ts) for m in alerts) == expected
