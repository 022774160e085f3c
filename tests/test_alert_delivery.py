"""Alert delivery (pipeline/alerts/delivery.py) against a real Alertmanager and the
embedded broker: alerts appear, resolve, are re-sent while firing and muted by a silence;
Alertmanager down, slow, answering 4xx or 5xx loses nothing, also under the real
service; a restart re-delivers from the committed offset."""

from __future__ import annotations

import logging
import signal
import threading
import time
from datetime import UTC, datetime
from urllib.parse import quote

import pytest

from pipeline.alerts.receivers import Receiver
from pipeline.kafka.clients import ensure_topics, make_producer
from pipeline.kafka.schema import AlertMessage, decode_alert
from tests.alertmanager_support import (
    Alertmanager,
    HttpRecorder,
    Request,
    forward_to,
    free_port,
    notifications,
)
from tests.delivery_support import (
    am_receiver,
    delivering,
    delivery_settings,
    incident_of,
    make_alert,
    new_sensor,
    offsets,
    parse_time,
    publish,
    wait_all_committed,
    webhook_receiver,
)
from tests.waiting import WAIT_S, wait_until

pytestmark = pytest.mark.integration


def _sensors(notification: dict, status: str = "firing") -> set[str]:
    return {a["labels"]["sensor"] for a in notification["alerts"] if a["status"] == status}


def _alerts_posted(proxy: HttpRecorder, sensor: str) -> list[Request]:
    return [
        r
        for r in proxy.received("/api/v2/alerts")
        if r.method == "POST" and any(a["labels"]["sensor"] == sensor for a in r.json())
    ]


# --------------------------------------------------------------------------- Alertmanager


def test_a_firing_alert_appears_in_alertmanager_and_then_resolves(
    alertmanager, am_notifications, kafka_settings
):
    settings = delivery_settings(kafka_settings)
    sensor = new_sensor()
    firing = make_alert(sensor)
    publish(settings, firing)
    with delivering(settings, [am_receiver(alertmanager.url, settings)]):
        (alert,) = wait_until(
            lambda: alertmanager.alerts(sensor=sensor), what="the alert in Alertmanager"
        )
        assert alert["labels"] == {
            "alertname": "RoadcastAnomaly",
            "sensor": sensor,
            "detector": "interval",
            "severity": "warning",
            "incident": incident_of(sensor),
        }
        notes = alert["annotations"]
        assert notes["alert_id"] == firing.alert_id
        assert sensor in notes["summary"] and "0.99995" in notes["summary"]
        assert notes["description"].startswith(firing.reason)
        assert "expected 60" in notes["description"]
        assert parse_time(alert["startsAt"]) == firing.first_seen
        assert parse_time(alert["endsAt"]) > datetime.now(UTC)  # firing: ends in the future
        assert alert["generatorURL"] == f"roadcast://alerts/{quote(firing.alert_id, safe='')}"
        assert alert["status"]["state"] == "active"
        wait_until(
            lambda: any(sensor in _sensors(n) for n in notifications(am_notifications)),
            what="Alertmanager to notify its receiver",
        )

        resolved = make_alert(sensor, "resolved", minute=30)
        publish(settings, resolved)
        wait_until(lambda: not alertmanager.alerts(sensor=sensor), what="the alert to resolve")
        (note,) = wait_until(
            lambda: [
                a
                for n in notifications(am_notifications)
                for a in n["alerts"]
                if a["status"] == "resolved" and a["labels"]["sensor"] == sensor
            ][:1],
            what="Alertmanager to notify the resolution",
        )
        assert parse_time(note["endsAt"]) == resolved.ts
        wait_all_committed(settings)


def test_firing_alerts_are_resent_and_a_new_severity_replaces_the_old(alertmanager, kafka_settings):
    settings = delivery_settings(kafka_settings, alert_resend_interval_s=1.0)
    sensor = new_sensor()
    publish(settings, make_alert(sensor))
    with delivering(settings, [am_receiver(alertmanager.url, settings)]) as delivery:
        (first,) = wait_until(lambda: alertmanager.alerts(sensor=sensor), what="the alert")
        wait_until(
            lambda: [
                a
                for a in alertmanager.alerts(sensor=sensor)
                if parse_time(a["endsAt"]) > parse_time(first["endsAt"])
            ],
            what="a resend that moves endsAt forward",
        )
        # Alertmanager has the resend before the lane has its answer and counts it.
        receiver = f"alertmanager {alertmanager.url}"
        wait_until(
            lambda: delivery.stats()["receivers"][receiver].get("resends", 0) >= 1,
            what="the resend counted",
        )
        publish(settings, make_alert(sensor, minute=5, severity="critical"))
        wait_until(
            lambda: any(
                a["labels"]["severity"] == "critical" for a in alertmanager.alerts(sensor=sensor)
            ),
            what="the critical alert",
        )
        # The warning ended in the request that brought the critical: they never overlap.
        severities = [a["labels"]["severity"] for a in alertmanager.alerts(sensor=sensor)]
        assert severities == ["critical"]


def test_a_silence_set_in_alertmanager_stops_renotification(
    alertmanager, am_notifications, kafka_settings
):
    settings = delivery_settings(kafka_settings)
    muted, control = new_sensor(), new_sensor()
    publish(settings, make_alert(muted), make_alert(control))
    with delivering(settings, [am_receiver(alertmanager.url, settings)]):

        def mentioning(sensor: str, since: float = 0.0) -> list[dict]:
            return [
                r.json()
                for r in am_notifications.received("/am")
                if r.at > since and sensor in _sensors(r.json())
            ]

        wait_until(lambda: len(mentioning(muted)) >= 2, what="a repeated notification")
        silence = alertmanager.silence("maintenance", sensor=muted)
        wait_until(
            lambda: [
                a
                for a in alertmanager.alerts(sensor=muted)
                if a["status"]["state"] == "suppressed" and silence in a["status"]["silencedBy"]
            ],
            what="the alert to be silenced",
        )
        since = time.monotonic()
        after = wait_until(
            lambda: (found := mentioning(control, since)) and len(found) >= 3 and found,
            what="three notifications of the group after the silence",
        )
        # The first may have been on its way already; every later one leaves it out.
        assert all(muted not in _sensors(n) for n in after[1:])
        assert all(control in _sensors(n) for n in after)


@pytest.mark.parametrize("fault", ["5xx", "slow", "4xx", "401"])
def test_alertmanager_failing_loses_nothing(
    fault, alertmanager, kafka_settings, caplog: pytest.LogCaptureFixture
):
    """A proxy in front of the real Alertmanager fails the first request(s): with 503s,
    by not answering within the timeout, with a 400, or with 401s (a token rotated, then
    fixed). Retried faults reach Alertmanager (a 401 logged once, not at each retry); the
    rejected alert is logged once, never retried, and what follows it is delivered."""
    settings = delivery_settings(kafka_settings, alert_timeout_s=1.0)
    first, second = new_sensor(), new_sensor()
    gate = threading.Event()
    forward = forward_to(alertmanager.url)
    posts = [0]

    def respond(request: Request):
        if request.method != "POST":
            return forward(request)
        posts[0] += 1
        if fault == "5xx" and posts[0] <= 2:
            return 503, {}, b"overloaded"
        if fault == "slow" and posts[0] == 1:
            gate.wait(WAIT_S)  # longer than the client's timeout
        if fault == "4xx" and posts[0] == 1:
            return 400, {}, b'"bad alert: label sensor is invalid"'
        if fault == "401" and posts[0] <= 3:
            return 401, {}, b"invalid bearer token"
        return forward(request)

    proxy = HttpRecorder(respond)
    caplog.set_level(logging.WARNING, logger="roadcast.alerts.delivery")
    try:
        publish(settings, make_alert(first))
        with delivering(settings, [am_receiver(proxy.url, settings)]) as delivery:
            wait_until(lambda: posts[0] >= 1, what="a first request")
            publish(settings, make_alert(second))
            wait_until(lambda: alertmanager.alerts(sensor=second), what="the second alert")
            wait_all_committed(settings)
            counts = delivery.stats()["receivers"][f"alertmanager {proxy.url}"]
        gate.set()
        if fault == "4xx":
            assert not alertmanager.alerts(sensor=first)
            assert len(_alerts_posted(proxy, first)) == 1  # rejected for good
            rejected = [r for r in caplog.records if r.getMessage() == "alert_delivery_rejected"]
            assert len(rejected) == 1
            assert "bad alert: label sensor is invalid" in rejected[0].fields["reason"]  # type: ignore[attr-defined]
            assert counts["rejected"] == 1
        else:
            assert alertmanager.alerts(sensor=first)
            assert counts["retries"] >= 1
            assert not [r for r in caplog.records if r.getMessage() == "alert_delivery_rejected"]
            blocked = [r for r in caplog.records if r.getMessage() == "alert_delivery_blocked"]
            assert len(blocked) == (1 if fault == "401" else 0)
            if fault == "401":
                assert "invalid bearer token" in blocked[0].fields["reason"]  # type: ignore[attr-defined]
    finally:
        gate.set()
        proxy.close()


def test_alertmanager_down_while_the_service_runs_loses_nothing(
    alertmanager_bin, am_notifications, kafka_settings, tmp_path, monkeypatch
):
    """``roadcast serve`` with ROADCAST_ALERTMANAGER_URLS on a port where nothing listens
    yet: the service keeps forecasting through an incident while delivery retries; once
    Alertmanager starts there, it holds exactly the alerts the topic says are firing, and
    the resolutions that follow reach it too."""
    from pipeline.kafka.replay import replay
    from tests.service_support import (
        make_incident_world,
        read_topic,
        start_service,
        stop_service,
        store_counters,
        wait_started,
    )

    (tmp_path / "bundles").mkdir()
    world = make_incident_world(tmp_path / "bundles")
    settings = delivery_settings(kafka_settings)
    ensure_topics(settings)
    manager = Alertmanager(alertmanager_bin, tmp_path, f"{am_notifications.url}/am", free_port())
    monkeypatch.setenv("ROADCAST_ALERTMANAGER_URLS", manager.url)
    monkeypatch.setenv("ROADCAST_ALERT_TIMEOUT_S", "2")
    monkeypatch.setenv("ROADCAST_ALERT_RESEND_INTERVAL_S", "2")
    store, log = tmp_path / "store.sqlite", tmp_path / "serve.log"
    proc = start_service(settings, world.bundles, store, log)

    def firing_on_topic() -> set[str]:
        latest: dict[str, AlertMessage] = {}
        for record in read_topic(settings, settings.topic_alerts):
            message = decode_alert(record.value)
            latest[message.dedup_key] = message
        return {m.sensor for m in latest.values() if m.status == "firing"}

    def in_alertmanager() -> set[str]:
        return {
            a["labels"]["sensor"]
            for a in manager.alerts()
            if a["labels"]["sensor"] in set(world.live.sensor_ids)
        }

    def replayed(start: int, stop: int) -> None:
        producer = make_producer(settings)
        replay(world.live.slice(start, stop), producer, settings.topic_readings, progress=False)
        producer.close()
        wait_until(
            lambda: store_counters(store).get("ticks_closed", 0) >= stop - 1,
            what=f"{stop - 1} ticks closed",
            details=lambda: log.read_text()[-3000:],
        )

    try:
        wait_started(log)
        cut = 431 - 405 + 4  # four ticks into the incident: alerts are firing
        replayed(0, cut + 1)
        wait_until(
            lambda: '"event": "alert_delivery_retry"' in log.read_text(),
            what="delivery to retry while Alertmanager is down",
        )
        firing = firing_on_topic()
        assert firing, "nothing fired"
        manager.start()
        wait_until(lambda: in_alertmanager() == firing, what="the firing alerts in Alertmanager")
        replayed(cut + 1, world.live.n_time)
        wait_until(
            lambda: in_alertmanager() == firing_on_topic(),
            what="Alertmanager to follow the resolutions",
        )
        wait_all_committed(settings)
        assert proc.poll() is None
        assert stop_service(proc, signal.SIGTERM) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        manager.stop()


def test_a_restart_redelivers_from_the_committed_offset(alertmanager, kafka_settings):
    """Run 1 delivers an alert everywhere. Run 2: the webhook is down, so the next alert
    reaches Alertmanager but is not committed. Run 3 re-delivers it: the webhook gets it
    under the same key, Alertmanager still holds one alert with the same fingerprint, and
    the alert committed in run 1 is re-sent (its firing state read back from Kafka)."""
    settings = delivery_settings(kafka_settings, alert_resend_interval_s=1.0)
    sensor, earlier = new_sensor(), new_sensor()
    hook_up = threading.Event()
    hook = HttpRecorder(lambda r: ((200 if hook_up.is_set() else 503), {}, b""))

    def receivers() -> list[Receiver]:
        return [am_receiver(alertmanager.url, settings), webhook_receiver(hook.url, settings)]

    try:
        publish(settings, make_alert(earlier))
        hook_up.set()
        with delivering(settings, receivers()):
            wait_all_committed(settings)
        hook_up.clear()
        publish(settings, make_alert(sensor))
        with delivering(settings, receivers()):
            (before,) = wait_until(lambda: alertmanager.alerts(sensor=sensor), what="the alert")
            wait_until(
                lambda: len([r for r in hook.received() if sensor.encode() in r.body]) >= 2,
                what="webhook retries",
            )
        committed, end = offsets(settings)
        assert committed < end
        hook_up.set()
        restarted = datetime.now(UTC)
        with delivering(settings, receivers()):
            wait_all_committed(settings)
            ids = {r.headers["webhook-id"] for r in hook.received() if sensor.encode() in r.body}
            assert len(ids) == 1  # every delivery of the record under one key
            (after,) = alertmanager.alerts(sensor=sensor)
            assert after["fingerprint"] == before["fingerprint"]
            wait_until(
                lambda: [
                    a
                    for a in alertmanager.alerts(sensor=earlier)
                    if parse_time(a["updatedAt"]) > restarted
                ],
                what="the alert committed before the restart to be re-sent",
            )
    finally:
        hook.close()
