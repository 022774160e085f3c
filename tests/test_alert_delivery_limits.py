"""Alert delivery against receivers that refuse: a proxy's body limit (413) halves a
request until it passes, an alert the receiver refuses (400, 422) is isolated and given
up alone, a wrong address or token (401, 403, 404, 405, 407, a redirect) is retried and
logged once, bodies are UTF-8 (not escaped), a receiver URL with a host no request could
reach is refused at start, and a stop is not logged as a retry."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from kafka import TopicPartition
from pydantic import SecretStr

from pipeline.alerts.delivery import DeliveryError, receivers_from_settings
from pipeline.alerts.lanes import Item, Lane
from pipeline.alerts.receivers import (
    ALERTMANAGER_BATCH,
    AlertmanagerReceiver,
    Pending,
    Receiver,
    WebhookReceiver,
)
from pipeline.kafka.schema import AlertMessage
from pipeline.settings import SettingsError, load_settings
from tests.alertmanager_support import Answer, HttpRecorder, Request, forward_to
from tests.delivery_support import FAST, SECRET, make_alert, new_sensor
from tests.http_support import raw_server
from tests.waiting import WAIT_S, wait_until

LOGGER = "roadcast.alerts.delivery"
TP = TopicPartition("roadcast.alerts", 0)


@contextmanager
def lane_of(receiver: Receiver) -> Iterator[tuple[Lane, list[Item]]]:
    """A lane delivering to ``receiver`` in its thread, and the items it reported done."""
    done: list[Item] = []
    stop = threading.Event()
    lane = Lane(receiver, FAST, done.append, stop, seed=0)
    lane.thread.start()
    try:
        yield lane, done
    finally:
        stop.set()
        lane.wake()
        lane.thread.join(WAIT_S)
        receiver.close()
    assert not lane.thread.is_alive(), "the lane did not stop"


def items(messages: list[AlertMessage]) -> list[Item]:
    return [Item(0, TP, offset, Pending(m, "i")) for offset, m in enumerate(messages)]


def logged(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    return [r.fields for r in caplog.records if r.getMessage() == event]  # type: ignore[attr-defined]


def alert_ids(request: Request) -> list[str]:
    """The alert ids of a request to Alertmanager or to a webhook."""
    doc = request.json()
    if isinstance(doc, dict):
        return [doc["data"]["alert_id"]]
    return [a["annotations"]["alert_id"] for a in doc]


class Gate:
    """A receiver's answers: ``refuse`` says which request gets which error (None: 200);
    ``taken`` lists the alert ids of the requests answered 200, in order."""

    def __init__(self, refuse: Any) -> None:
        self.refuse = refuse
        self.taken: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> Answer:
        with self.lock:
            answer = self.refuse(request)
            if answer is None:
                self.taken += alert_ids(request)
                return 200, {}, b""
            return answer


def _sensors(n: int, **changes: Any) -> list[AlertMessage]:
    return [dataclasses.replace(make_alert(new_sensor()), **changes) for _ in range(n)]


def deliver_all(refuse: Any, messages: list[AlertMessage]) -> tuple[Gate, Lane, list[Item]]:
    """``messages`` through a lane to an Alertmanager answering as ``refuse`` says, until
    every one is reported done."""
    gate = Gate(refuse)
    recorder = HttpRecorder(gate)
    try:
        with lane_of(AlertmanagerReceiver(recorder.url, timeout_s=5.0)) as (lane, done):
            lane.put(items(messages))
            wait_until(lambda: len(done) == len(messages), what="every alert done")
    finally:
        recorder.close()
    return gate, lane, done


# --------------------------------------------------------------------------- 413


LIMIT = 16 * 1024  # a proxy's body limit, scaled down


def _too_large(request: Request) -> Answer | None:
    if len(request.body) > LIMIT or b"far-too-big" in request.body:
        return 413, {}, b"<html><h1>413 Request Entity Too Large</h1></html>"
    return None


def test_a_413_halves_the_request_and_gives_up_only_an_alert_too_large_alone(caplog) -> None:
    """A 413 marked the whole batch done: every alert of it lost for delivery, though
    smaller requests would pass."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    messages = _sensors(40, reason="é" * 1500)
    messages[17] = dataclasses.replace(messages[17], reason="far-too-big")
    gate, lane, done = deliver_all(_too_large, messages)
    expected = [m.alert_id for i, m in enumerate(messages) if i != 17]
    assert gate.taken == expected  # each once, in order
    assert lane.counters["delivered"] == 39 and lane.counters["rejected"] == 1
    (rejected,) = logged(caplog, "alert_delivery_rejected")
    assert rejected["status"] == 413 and "Request Entity Too Large" in rejected["reason"]
    assert rejected["alerts"] == [messages[17].alert_id]
    assert [item.offset for item in sorted(done, key=lambda i: i.offset)] == list(range(40))


def test_firing_alerts_are_resent_in_halves_past_a_body_limit() -> None:
    """The resend of the firing alerts stopped at a 413: Alertmanager, hearing nothing,
    resolved them by itself."""
    gate = Gate(_too_large)
    recorder = HttpRecorder(gate)
    receiver = AlertmanagerReceiver(recorder.url, timeout_s=5.0)
    try:
        firing = _sensors(30, reason="é" * 1500)
        receiver.restore([Pending(m) for m in firing])
        outcome = receiver.resend()
    finally:
        receiver.close()
        recorder.close()
    assert outcome is not None and outcome.kind == "accepted", outcome
    assert sorted(gate.taken) == sorted(m.alert_id for m in firing)


def test_non_ascii_text_goes_as_utf8_not_escaped() -> None:
    """json.dumps escaped every non-ASCII character (\\uXXXX, 6 bytes for 2 or 3): 256
    alerts of 200-character CJK sensor ids made 1.9 MiB."""
    recorder = HttpRecorder()
    receiver = AlertmanagerReceiver(recorder.url, timeout_s=5.0)
    sensor = "路" * 180 + new_sensor()
    try:
        alert = dataclasses.replace(make_alert(sensor), reason="é" * 500)
        assert receiver.deliver([Pending(alert, "i")]).kind == "accepted"
    finally:
        receiver.close()
        recorder.close()
    (request,) = recorder.received()
    assert "路".encode() in request.body and b"\\u" not in request.body
    assert json.loads(request.body)[0]["labels"]["sensor"] == sensor


# --------------------------------------------------------------------------- 400 / 422


@pytest.mark.parametrize("status", [400, 422])
def test_an_alert_the_receiver_refuses_is_isolated_and_the_rest_delivered(caplog, status) -> None:
    """A 400 marked the whole batch done: the alerts beside the refused one were lost."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    messages = _sensors(10)
    for bad in (3, 7):
        messages[bad] = dataclasses.replace(messages[bad], detector="poison")

    def refuse(request: Request) -> Answer | None:
        if b"poison" in request.body:
            return status, {}, b'{"code":400,"message":"bad alert: detector poison"}'
        return None

    gate, lane, _ = deliver_all(refuse, messages)
    assert gate.taken == [m.alert_id for i, m in enumerate(messages) if i not in (3, 7)]
    rejected = logged(caplog, "alert_delivery_rejected")
    assert [r["alerts"] for r in rejected] == [[messages[3].alert_id], [messages[7].alert_id]]
    assert all(r["status"] == status and "detector poison" in r["reason"] for r in rejected)
    assert lane.counters["rejected"] == 2 and lane.counters["delivered"] == 8


# --------------------------------------------------------------------------- 401 ...


BLOCKING: dict[str, Answer] = {
    "401": (401, {}, b"unauthorized: bad token"),
    "403": (403, {}, b"forbidden"),
    "404": (404, {}, b"404 page not found"),
    "405": (405, {}, b"method not allowed"),
    "407": (407, {}, b"proxy authentication required"),
    "302": (302, {"Location": "/login"}, b""),
}


@pytest.mark.parametrize("kind", ["alertmanager", "webhook"])
@pytest.mark.parametrize("case", BLOCKING)
def test_a_wrong_address_or_token_is_retried_and_logged_once(caplog, case, kind) -> None:
    """A 401 (a rotated token), 404 (a typo in the path) or redirect dropped every alert
    for good; now the alerts wait, the receiver is logged once with its reason, and the
    backlog goes through once it is fixed."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    fixed = threading.Event()
    gate = Gate(lambda request: None if fixed.is_set() else BLOCKING[case])
    recorder = HttpRecorder(gate)
    receiver: Receiver = (
        AlertmanagerReceiver(recorder.url, timeout_s=5.0)
        if kind == "alertmanager"
        else WebhookReceiver(recorder.url + "/hook", SecretStr(SECRET), timeout_s=5.0)
    )
    messages = _sensors(3)
    try:
        with lane_of(receiver) as (lane, done):
            lane.put(items(messages))
            wait_until(lambda: len(recorder.received()) >= 4 or done, what="a few retries")
            assert not done  # nothing given up
            fixed.set()
            wait_until(lambda: len(done) == len(messages), what="the backlog delivered")
    finally:
        recorder.close()
    assert gate.taken == [m.alert_id for m in messages]
    (blocked,) = logged(caplog, "alert_delivery_blocked")
    assert blocked["status"] == int(case)
    assert BLOCKING[case][2].decode() in blocked["reason"] or "redirected" in blocked["reason"]
    assert not logged(caplog, "alert_delivery_rejected")
    assert not logged(caplog, "alert_delivery_retry")
    assert logged(caplog, "alert_delivery_unblocked")
    assert lane.counters["delivered"] == 3 and lane.counters["retries"] >= 3


def test_a_relative_redirect_names_where_it_points() -> None:
    """``Location: /loop`` was reported as "an address without scheme and host"."""
    recorder = HttpRecorder(lambda request: (302, {"Location": "/loop?token=s3cr3t"}, b""))
    receiver = AlertmanagerReceiver(recorder.url, timeout_s=5.0)
    try:
        outcome = receiver.deliver([Pending(make_alert(new_sensor()))])
    finally:
        receiver.close()
        recorder.close()
    assert outcome.kind == "blocked", outcome
    assert f"redirected to {recorder.url}/... (a relative Location)" in outcome.detail
    assert "s3cr3t" not in outcome.detail and "without scheme" not in outcome.detail


# --------------------------------------------------------------------------- stop


def test_a_stop_in_mid_request_is_not_logged_as_a_retry(caplog) -> None:
    """The lane's own cut-off was logged as ``alert_delivery_retry ... RemoteProtocolError:
    Server disconnected``."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    arrived, release = threading.Event(), threading.Event()

    def hold(conn: object) -> None:
        arrived.set()
        release.wait(WAIT_S)

    try:
        with raw_server(hold) as url:
            receiver = WebhookReceiver(url, SecretStr(SECRET), timeout_s=60.0)
            with lane_of(receiver) as (lane, done):
                lane.put(items(_sensors(1)))
                assert arrived.wait(WAIT_S)
            assert not done and lane.counters["retries"] == 0
    finally:
        release.set()
    assert not logged(caplog, "alert_delivery_retry")


# --------------------------------------------------------------------------- URLs


@pytest.mark.parametrize("variable", ["ROADCAST_ALERTMANAGER_URLS", "ROADCAST_WEBHOOK_URLS"])
@pytest.mark.parametrize(
    "url",
    [
        "http://ops:s3cr3t@h 1:9093",
        "http://ops:s3cr3t@h%zz:9093",
        "http://ops:s3cr3t@-am.example:9093",
        "http://ops:s3cr3t@1.2.3:9093",
        "http://ops:s3cr3t@[1.2.3.4]:9093",
    ],
)
def test_a_receiver_host_no_request_could_reach_is_refused(
    clean_env, monkeypatch, variable, url
) -> None:
    """Such hosts passed the check and were retried for ever as a ConnectError."""
    monkeypatch.setenv(variable, url)
    monkeypatch.setenv("ROADCAST_WEBHOOK_SECRET", SECRET)
    with pytest.raises(SettingsError) as err:
        load_settings()
    message = str(err.value)
    assert variable.removeprefix("ROADCAST_").lower() in message.lower()
    assert "s3cr3t" not in message
    monkeypatch.delenv(variable)
    settings = load_settings().model_copy(  # a programmatic caller skips the settings' check
        update={
            variable.removeprefix("ROADCAST_").lower(): url,
            "webhook_secret": SecretStr(SECRET),
        }
    )
    with pytest.raises(DeliveryError, match=variable) as direct:
        receivers_from_settings(settings)
    assert "s3cr3t" not in str(direct.value) and "\n" not in str(direct.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1]:9093",
        "http://[fe80::1%25eth0]:9093",
        "http://alert_manager:9093",
        "https://bücher.example/hook",
        "http://am.example.:9093",
        "http://10.0.0.1:9093",
    ],
)
def test_receiver_hosts_that_are_fine_stay_accepted(clean_env, url) -> None:
    settings = load_settings(alertmanager_urls=url, webhook_urls=url, webhook_secret=SECRET)
    assert len(receivers_from_settings(settings)) == 2


# --------------------------------------------------------------------------- Alertmanager


def test_a_body_limit_in_front_of_a_real_alertmanager_loses_no_alert(alertmanager) -> None:
    """A full batch of alerts with non-ASCII text behind a proxy's body limit: all of
    them reach Alertmanager."""
    forward = forward_to(alertmanager.url)
    sizes: list[int] = []

    def proxy(request: Request) -> Answer:
        if request.method == "POST" and len(request.body) > 256 * 1024:
            return 413, {}, b"Request Entity Too Large"
        sizes.append(len(request.body))
        return forward(request)

    recorder = HttpRecorder(proxy)
    tag = new_sensor()
    messages = [
        dataclasses.replace(make_alert(f"{tag}-{i:03d}-" + "路" * 150), reason="é" * 1900)
        for i in range(ALERTMANAGER_BATCH)
    ]
    try:
        with lane_of(AlertmanagerReceiver(recorder.url, timeout_s=10.0)) as (lane, done):
            lane.put(items(messages))
            wait_until(lambda: len(done) == len(messages), what="every alert done")
    finally:
        recorder.close()
    assert lane.counters["delivered"] == ALERTMANAGER_BATCH and not lane.counters["rejected"]
    active = {a["labels"]["sensor"] for a in alertmanager.alerts(alertname="RoadcastAnomaly")}
    assert {m.sensor for m in messages} <= active
