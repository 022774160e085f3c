"""Signed webhooks, retries, a slow receiver, bad records, and the pieces of alert
delivery: backoff, how answers are classified, settings, the CLI, the deploy files."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from pipeline.alerts.delivery import AlertDelivery, DeliveryConfig
from pipeline.alerts.receivers import Pending
from pipeline.kafka.schema import decode_alert
from tests.alertmanager_support import HttpRecorder, Request
from tests.delivery_support import (
    SECRET,
    am_receiver,
    delivering,
    delivery_settings,
    incident_of,
    make_alert,
    new_sensor,
    offsets,
    publish,
    wait_all_committed,
    webhook_receiver,
)
from tests.waiting import WAIT_S, wait_until


def test_a_webhook_is_signed_and_retried_after_5xx(kafka_settings):
    settings = delivery_settings(kafka_settings)
    sensor = new_sensor()
    answers = iter([503, 502])
    hook = HttpRecorder(lambda r: (next(answers, 200), {}, b""))
    try:
        message = make_alert(sensor)
        publish(settings, message)
        with delivering(
            settings, [webhook_receiver(f"{hook.url}/hooks/roadcast?token=t0p", settings)]
        ):
            wait_until(lambda: len(hook.received()) >= 3, what="two retries")
            wait_all_committed(settings)
        requests = hook.received()
        assert len(requests) == 3
        assert len({r.headers["webhook-id"] for r in requests}) == 1  # one idempotency key
        assert {r.headers["idempotency-key"] for r in requests} == {
            requests[0].headers["webhook-id"]
        }
        for request in requests:
            doc = Webhook(SECRET).verify(request.body, request.headers)
            assert doc["type"] == "roadcast.alert.firing"
            data = dict(doc["data"])
            assert data.pop("incident") == incident_of(sensor)
            assert decode_alert(json.dumps(data)) == message
        with pytest.raises(WebhookVerificationError):
            Webhook("whsec_" + "A" * 32).verify(requests[0].body, requests[0].headers)
        tampered = requests[0].body.replace(b"12", b"13", 1)
        with pytest.raises(WebhookVerificationError):
            Webhook(SECRET).verify(tampered, requests[0].headers)
    finally:
        hook.close()


def test_a_slow_webhook_holds_neither_alertmanager_nor_loses_the_alert(
    alertmanager, kafka_settings
):
    """The webhook does not answer within the timeout: Alertmanager gets the alert at
    once; the offset is committed only when the webhook has taken it too."""
    settings = delivery_settings(kafka_settings, alert_timeout_s=0.5)
    sensor = new_sensor()
    gate = threading.Event()

    def respond(request: Request):
        if not gate.is_set():
            gate.wait(WAIT_S)
            return 504, {}, b""
        return 200, {}, b""

    hook = HttpRecorder(respond)
    try:
        publish(settings, make_alert(sensor))
        receivers = [webhook_receiver(hook.url, settings), am_receiver(alertmanager.url, settings)]
        with delivering(settings, receivers) as delivery:
            wait_until(lambda: alertmanager.alerts(sensor=sensor), what="the alert in Alertmanager")
            wait_until(
                lambda: delivery.stats()["receivers"][f"webhook {hook.url}"].get("retries", 0) >= 1,
                what="the webhook to time out",
            )
            committed, end = offsets(settings)
            assert committed < end  # the webhook has not taken it yet
            gate.set()
            wait_all_committed(settings)
        assert len({r.headers["webhook-id"] for r in hook.received()}) == 1
    finally:
        gate.set()
        hook.close()


@pytest.mark.parametrize("restored", [False, True], ids=["same-run", "after-restart"])
def test_a_webhook_gets_no_firing_record_of_a_resolved_episode(kafka_settings, restored):
    """Replayed or out of order, the stale firing record reached the webhook after the
    resolution: a pager behind it opened an incident that nothing would close."""
    sensor = new_sensor()
    firing, resolved = make_alert(sensor, minute=1), make_alert(sensor, "resolved", minute=3)
    stale = make_alert(sensor, minute=2)
    hook = HttpRecorder()
    receiver = webhook_receiver(hook.url, kafka_settings)
    try:
        sent = [firing, resolved]
        if restored:
            receiver.restore([], [resolved.alert_id])
            sent = []
        for message in [*sent, stale]:
            assert receiver.deliver([Pending(message)]).kind == "accepted"
        types = [json.loads(r.body)["type"] for r in hook.received()]
        expected = ["roadcast.alert.firing", "roadcast.alert.resolved"] if not restored else []
        assert types == expected
    finally:
        receiver.close()
        hook.close()


def test_a_record_that_is_not_an_alert_is_skipped(kafka_settings, caplog):
    settings = delivery_settings(kafka_settings)
    sensor = new_sensor()
    hook = HttpRecorder()
    caplog.set_level(logging.WARNING, logger="roadcast.alerts.delivery")
    try:
        publish(settings, b"\xff not json", make_alert(sensor))
        with delivering(settings, [webhook_receiver(hook.url, settings)]) as delivery:
            wait_until(lambda: hook.received(), what="the valid alert")
            wait_all_committed(settings)
            assert delivery.stats()["undecodable"] == 1
        assert [r for r in caplog.records if r.getMessage() == "alert_undecodable"]
    finally:
        hook.close()


# --------------------------------------------------------------------------- pieces


def test_backoff_is_exponential_with_full_jitter_and_capped():
    import random

    config = DeliveryConfig(backoff_initial_s=1.0, backoff_max_s=60.0)
    rng = random.Random(0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (4, 8.0), (7, 60.0), (500, 60.0)]:
        waits = [config.backoff_s(attempt, rng) for _ in range(2000)]
        assert min(waits) >= 0.0 and max(waits) <= ceiling
        assert max(waits) > 0.9 * ceiling  # spread over the whole range
    with pytest.raises(ValueError):
        DeliveryConfig(backoff_initial_s=5.0, backoff_max_s=1.0)


def test_answers_are_classified_as_prometheus_users_expect():
    from pipeline.alerts.receivers import classify

    assert classify(200, "", {}).kind == "accepted"
    for status in (500, 502, 503, 408, 429):
        assert classify(status, "busy", {}).kind == "retry"
    assert classify(429, "", {"retry-after": "7"}).retry_after_s == 7.0
    for status in (400, 413, 422):  # this request refused: halved, an alert alone given up
        outcome = classify(status, "nope", {})
        assert outcome.kind == "rejected" and "nope" in outcome.detail
    for status in (401, 403, 404, 405, 407):  # the receiver's address or credentials
        outcome = classify(status, "nope", {})
        assert outcome.kind == "blocked" and "nope" in outcome.detail
    redirect = classify(301, "", {"location": "https://am.example/api/v2/alerts"})
    assert redirect.kind == "blocked" and "am.example" in redirect.detail


def test_receiver_names_never_show_tokens_or_passwords():
    from pipeline.alerts.delivery import receivers_from_settings
    from pipeline.settings import load_settings

    settings = load_settings(
        alertmanager_urls="https://ops:hunter2@am.example:9093",
        webhook_urls="https://hooks.example/services/T0/B0/s3cr3t?key=abc",
        webhook_secret=SECRET,
    )
    names = [r.name for r in receivers_from_settings(settings)]
    assert names == ["alertmanager https://am.example:9093", "webhook https://hooks.example"]
    assert SECRET not in repr(settings)


def test_bad_delivery_settings_get_a_clear_error():
    from pipeline.alerts.delivery import DeliveryError, receivers_from_settings
    from pipeline.settings import SettingsError, load_settings

    for bad, variable in (
        ({"alertmanager_urls": "am:9093"}, "ROADCAST_ALERTMANAGER_URLS"),
        ({"webhook_urls": "ftp://x"}, "ROADCAST_WEBHOOK_URLS"),
        ({"webhook_secret": "my-password-123"}, "ROADCAST_WEBHOOK_SECRET"),
        ({"alert_timeout_s": 0}, "ROADCAST_ALERT_TIMEOUT_S"),
        ({"alert_generator_url": "http://x/{nope}"}, "ROADCAST_ALERT_GENERATOR_URL"),
    ):
        with pytest.raises(SettingsError) as err:
            load_settings(**bad)
        assert variable.removeprefix("ROADCAST_").lower() in str(err.value).lower()
        assert "my-password-123" not in str(err.value)
    with pytest.raises(DeliveryError, match="ROADCAST_WEBHOOK_SECRET"):
        receivers_from_settings(load_settings(webhook_urls="http://hook.example/x"))
    with pytest.raises(DeliveryError, match="no alert receivers"):
        AlertDelivery(load_settings(), [])


def test_cli_alerts_deliver_without_receivers_says_what_to_set(monkeypatch):
    from typer.testing import CliRunner

    from flows.cli import app

    monkeypatch.delenv("ROADCAST_ALERTMANAGER_URLS", raising=False)
    monkeypatch.delenv("ROADCAST_WEBHOOK_URLS", raising=False)
    result = CliRunner().invoke(app, ["alerts", "deliver"])
    assert result.exit_code == 2
    assert "ROADCAST_ALERTMANAGER_URLS" in result.output


def test_the_production_alertmanager_config_is_valid(alertmanager_bin):
    import shutil
    import subprocess

    amtool = shutil.which("amtool") or str(Path(alertmanager_bin).with_name("amtool"))
    config = Path(__file__).resolve().parents[1] / "deploy" / "alertmanager.yml"
    result = subprocess.run(
        [amtool, "check-config", str(config)], capture_output=True, text=True, timeout=WAIT_S
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_routes_the_service_alerts_through_alertmanager():
    import yaml

    deploy = Path(__file__).resolve().parents[1] / "deploy"
    compose = yaml.safe_load((deploy / "docker-compose.yml").read_text())
    services = compose["services"]
    manager = services["alertmanager"]
    assert manager["image"].startswith("prom/alertmanager:")
    (config,) = manager["configs"]
    assert f"--config.file={config['target']}" in manager["command"]
    assert (deploy / compose["configs"][config["source"]]["file"]).is_file()
    url = services["roadcast"]["environment"]["ROADCAST_ALERTMANAGER_URLS"]
    assert url == "http://alertmanager:9093"
    assert "9093:9093" in manager["ports"]


def test_cli_alerts_deliver_serves_its_metrics(kafka_settings, tmp_path):
    """A standalone `roadcast alerts deliver --metrics-port` exports what it delivered."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    settings = delivery_settings(kafka_settings)
    hook = HttpRecorder()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "ROADCAST_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "ROADCAST_TOPIC_ALERTS": settings.topic_alerts,
        "ROADCAST_CONSUMER_GROUP": settings.consumer_group,
        "ROADCAST_WEBHOOK_SECRET": SECRET,
        "ROADCAST_METRICS_HOST": "127.0.0.1",
    }
    command = [sys.executable, "-m", "flows.cli", "alerts", "deliver"]
    command += ["--webhook", f"{hook.url}/hook", "--metrics-port", str(port)]
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path
    )

    def delivered() -> float | None:
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        except httpx.HTTPError:
            return None
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "roadcast_alert_deliveries_total" and (
                    sample.labels.get("result") == "delivered"
                ):
                    return sample.value
        return None

    try:
        publish(settings, make_alert(new_sensor()))
        wait_until(lambda: len(hook.received()) >= 1, what="the alert at the webhook")
        wait_until(lambda: delivered() == 1.0, what="the delivered counter on /metrics")
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=WAIT_S)
        hook.close()
    assert proc.returncode == 0, out.decode()[-2000:]


def test_undelivered_alerts_are_counted_for_a_second_ctrl_c(kafka_settings, monkeypatch) -> None:
    """A second Ctrl-C of `alerts deliver` spoke of readings (always 0 of them) while
    alerts were left undelivered."""
    import signal

    from pydantic import SecretStr

    from pipeline.alerts.receivers import WebhookReceiver
    from pipeline.service import runtime

    settings = delivery_settings(kafka_settings)
    refused = WebhookReceiver("http://127.0.0.1:1/hook", SecretStr(SECRET), timeout_s=5.0)
    with delivering(settings, [refused]) as delivery:
        publish(settings, make_alert(new_sensor()))
        publish(settings, make_alert(new_sensor()))
        wait_until(lambda: delivery.undelivered() == 2, what="both alerts pending")
        said: list[str] = []
        monkeypatch.setattr(runtime, "_exit_now", lambda signum, message, **_: said.append(message))
        runtime.count_uncommitted(delivery.undelivered, "undelivered alerts")
        try:
            runtime.stop_now(signal.SIGINT)
        finally:
            runtime.count_uncommitted(None)
            runtime._stopping_now.release()
    assert said and said[0].startswith("second signal: stopping now; 2 undelivered alerts will")
