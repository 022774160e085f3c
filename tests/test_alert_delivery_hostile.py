"""Alert delivery against hostile receivers and records: every request ends by its
deadline, name resolution included, a 4xx keeps its status however slowly it comes, text
UTF-8 cannot encode does not sink a batch, a bad URL names its setting, and a record's
undecodable header does not stop delivery from restoring the firing alerts."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr
from standardwebhooks import Webhook

from pipeline.alerts.delivery import DeliveryError, delivery_group, receivers_from_settings
from pipeline.alerts.receivers import (
    AlertmanagerReceiver,
    Pending,
    Receiver,
    WebhookReceiver,
    classify,
)
from pipeline.kafka.clients import make_consumer, make_producer
from pipeline.kafka.schema import encode_alert
from pipeline.settings import Settings, SettingsError, load_settings
from tests.alertmanager_support import HttpRecorder
from tests.delivery_support import (
    SECRET,
    am_receiver,
    delivering,
    delivery_settings,
    make_alert,
    new_sensor,
    publish,
    wait_all_committed,
)
from tests.http_support import raw_server, write_certificate
from tests.waiting import WAIT_S, wait_until

TIMEOUT_S = 1.0


def _drip(first: bytes, each: bytes, every_s: float = 0.2, for_s: float = 15.0):
    def answer(conn: socket.socket) -> None:
        conn.sendall(first)
        end = time.monotonic() + for_s
        while time.monotonic() < end:
            conn.sendall(each)
            time.sleep(every_s)

    return answer


def _silent(conn: socket.socket) -> None:
    time.sleep(15.0)


def _receivers(url: str) -> list[Receiver]:
    return [
        AlertmanagerReceiver(url, timeout_s=TIMEOUT_S),
        WebhookReceiver(url, SecretStr(SECRET), timeout_s=TIMEOUT_S),
    ]


ANSWERS = {
    "never answers": _silent,
    "drips its headers": _drip(b"HTTP/1.1 200 OK\r\n", b"X-Drip: 1\r\n"),
    "drips a 5xx body": _drip(b"HTTP/1.1 503 Busy\r\nContent-Length: 100000\r\n\r\n", b"x"),
}


@pytest.mark.parametrize("case", ANSWERS)
def test_a_request_ends_by_its_deadline(case) -> None:
    with raw_server(ANSWERS[case]) as url:
        for receiver in _receivers(url):
            started = time.monotonic()
            outcome = receiver.deliver([Pending(make_alert(new_sensor()), "i")])
            took = time.monotonic() - started
            receiver.close()
            assert outcome.kind == "retry", outcome
            assert took < TIMEOUT_S + 1.0, (
                f"{receiver.name}: {took:.1f} s for a {TIMEOUT_S} s deadline"
            )


def test_a_4xx_that_drips_its_reason_is_still_rejected_with_it() -> None:
    answer = _drip(b"HTTP/1.1 422 Unprocessable\r\nContent-Length: 100000\r\n\r\nbad label", b"!")
    with raw_server(answer) as url:
        for receiver in _receivers(url):
            started = time.monotonic()
            outcome = receiver.deliver([Pending(make_alert(new_sensor()), "i")])
            receiver.close()
            assert time.monotonic() - started < TIMEOUT_S + 1.0
            assert outcome.kind == "rejected" and outcome.status == 422
            assert "bad label" in outcome.detail


BLACKHOLE = "blackhole.invalid"
HANG_S = 30.0  # how long a lookup of BLACKHOLE hangs unless released


@dataclass
class Blackhole:
    """Name resolution of :data:`BLACKHOLE` hangs until ``release`` is set, then gives
    127.0.0.1; ``lookups`` counts its lookups."""

    release: threading.Event = field(default_factory=threading.Event)
    lookups: int = 0


@pytest.fixture
def blackhole(monkeypatch: pytest.MonkeyPatch) -> Iterator[Blackhole]:
    hole = Blackhole()
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host == BLACKHOLE:
            hole.lookups += 1
            if not hole.release.wait(HANG_S):
                raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    try:
        yield hole
    finally:
        hole.release.set()


RECEIVERS: dict[str, Callable[[str], AlertmanagerReceiver | WebhookReceiver]] = {
    "alertmanager": lambda url: AlertmanagerReceiver(url, timeout_s=0.5),
    "webhook": lambda url: WebhookReceiver(url, SecretStr(SECRET), timeout_s=0.5),
}


@pytest.mark.parametrize("kind", RECEIVERS)
def test_name_resolution_that_hangs_ends_by_the_deadline(blackhole: Blackhole, kind) -> None:
    """The system resolver cannot be interrupted: a receiver whose DNS server does not
    answer gets a retry by the deadline, does not pile up lookups, and delivers once the
    name resolves again."""
    recorder = HttpRecorder()
    receiver = RECEIVERS[kind](f"http://{BLACKHOLE}:{recorder.server.server_port}")
    batch = [Pending(make_alert(new_sensor()), "i")]
    try:
        started = time.monotonic()
        outcome = receiver.deliver(batch)
        took = time.monotonic() - started
        assert took < 10.0, f"{took:.1f} s for a 0.5 s deadline (the lookup hangs {HANG_S} s)"
        assert outcome.kind == "retry" and f"resolution of {BLACKHOLE}" in outcome.detail, outcome
        assert blackhole.lookups == 1
        # While that lookup hangs, the next request neither waits for it (it would wait
        # for as long as this deadline) nor starts another one.
        receiver.timeout_s = HANG_S
        started = time.monotonic()
        outcome = receiver.deliver(batch)
        took = time.monotonic() - started
        assert took < 10.0, f"{took:.1f} s with a lookup of the host pending"
        assert outcome.kind == "retry" and "still pending" in outcome.detail, outcome
        assert blackhole.lookups == 1
        assert not recorder.received()
        blackhole.release.set()
        receiver.timeout_s = 5.0
        wait_until(
            lambda: receiver.deliver(batch).kind == "accepted",
            what="delivery once the name resolves",
        )
        assert len(recorder.received()) == 1
    finally:
        blackhole.release.set()
        receiver.close()
        recorder.close()


# A record whose JSON escapes decode to a lone surrogate: text UTF-8 cannot encode.
HOSTILE = {
    "sensor": "s-\udc80bad",
    "reason": "line one\nline two \udcff \u202e\u2603 " + "x" * 5000,
    "alert_id": "s-1:interval@\ud800",
}


@pytest.mark.parametrize("field", HOSTILE)
def test_text_utf8_cannot_encode_does_not_sink_the_batch(field) -> None:
    good = make_alert(new_sensor())
    bad = dataclasses.replace(make_alert(new_sensor()), **{field: HOSTILE[field]})
    recorder = HttpRecorder()
    try:
        am = AlertmanagerReceiver(recorder.url, timeout_s=5.0)
        outcome = am.deliver([Pending(good, "i"), Pending(bad, "i\udc80")])
        assert outcome.kind == "accepted", outcome
        (request,) = recorder.received()
        sent = json.loads(request.body)
        assert len(sent) == 2 and sent[0]["labels"]["sensor"] == good.sensor
        hook = WebhookReceiver(recorder.url, SecretStr(SECRET), timeout_s=5.0)
        assert hook.deliver([Pending(bad, "i\udc80")]).kind == "accepted"
        signed = recorder.received()[-1]
        doc = Webhook(SECRET).verify(signed.body, signed.headers)
        assert doc["data"]["sensor"].startswith("s-")
    finally:
        recorder.close()


ODD_SENSORS = {
    "newline": "s-{}\nsecond line",
    "unicode": "s-{} \u2603 \u202e \u00e9\u0301 \U0001f6a6",
    "quotes and braces": 's-{} "quoted" {{curly}}, =~ \\',
    "lone surrogate": "s-{}\udc80",
    "long": "s-{}" + "x" * 180,
}


@pytest.mark.parametrize("case", ODD_SENSORS)
def test_a_real_alertmanager_takes_odd_label_values(alertmanager, case) -> None:
    sensor = ODD_SENSORS[case].format(new_sensor())
    alert = dataclasses.replace(make_alert(sensor), reason="why\n" + "y" * 20_000)
    receiver = AlertmanagerReceiver(alertmanager.url, timeout_s=5.0)
    try:
        outcome = receiver.deliver([Pending(alert, "incident \u2603\n")])
    finally:
        receiver.close()
    assert outcome.kind == "accepted", outcome
    # control and format characters arrive escaped (they would reach templates raw)
    shown = sensor.replace("\n", "\\n").replace("\u202e", "\\u202e").replace("\udc80", "\\udc80")
    wait_until(
        lambda: any(
            a["labels"]["sensor"] == shown and "\n" not in a["labels"]["incident"]
            for a in alertmanager.alerts(alertname="RoadcastAnomaly")
        ),
        what="the alert in Alertmanager",
    )


@pytest.mark.parametrize("variable", ["alertmanager_urls", "webhook_urls"])
@pytest.mark.parametrize("url", ["http://am.example:99999", "http://am.example:port"])
def test_a_url_with_a_bad_port_names_its_setting(variable, url) -> None:
    # model_copy skips the settings' own checks, as a programmatic caller's settings may
    settings = load_settings().model_copy(
        update={variable: f"{url}/hook?token=s3cr3t", "webhook_secret": SecretStr(SECRET)}
    )
    with pytest.raises(DeliveryError, match=f"ROADCAST_{variable.upper()}") as err:
        receivers_from_settings(settings)
    assert "s3cr3t" not in str(err.value)


@pytest.mark.parametrize(
    ("variable", "url", "message"),
    [
        (
            "alertmanager_urls",
            "http://am.example:9093/api/v1/alerts",
            "speaks Alertmanager's API v2",
        ),
        ("alertmanager_urls", "http://am.example:9093/api/v2", "not another path under /api"),
        ("alertmanager_urls", "http://am.example:9093/api/s3cr3t", "not another path under"),
        ("webhook_urls", "http://hooks.example/a\tb?token=s3cr3t", "not a usable URL (InvalidURL"),
        ("webhook_urls", "http://xn--a.example/hook?token=s3cr3t", "not a usable URL"),
        ("webhook_urls", "ftp://user:s3cr3t@hooks.example/x", "expected http(s)://HOST"),
    ],
)
def test_an_address_no_request_could_reach_is_refused_without_its_secrets(
    clean_env, monkeypatch, variable, url, message
) -> None:
    """Such URLs passed the settings and every alert was then refused and dropped (a 404
    from a v1 path, an exception from httpx); the error repeated the whole URL."""
    monkeypatch.setenv(f"ROADCAST_{variable.upper()}", url)
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert message in str(err.value) and "s3cr3t" not in str(err.value)
    kind = AlertmanagerReceiver if variable == "alertmanager_urls" else None
    with pytest.raises(ValueError, match="receiver: ") as direct:
        if kind is not None:
            kind(url)
        else:
            WebhookReceiver(url, SecretStr(SECRET))
    assert "s3cr3t" not in str(direct.value)
    assert AlertmanagerReceiver("http://am.example/alertmanager").url.endswith(
        "/alertmanager/api/v2/alerts"
    )  # a route prefix stays allowed


def test_receivers_on_one_host_keep_apart_in_the_counters() -> None:
    settings = load_settings().model_copy(
        update={
            "webhook_urls": "http://h.example/a?token=1,http://h.example/b?token=2",
            "webhook_secret": SecretStr(SECRET),
        }
    )
    names = [r.name for r in receivers_from_settings(settings)]
    assert names == ["webhook http://h.example", "webhook http://h.example #2"]


def test_a_redirect_is_refused_without_the_secrets_of_its_location() -> None:
    location = "https://user:pw@new.example:8443/hook/s3cr3t?token=abc"
    outcome = classify(301, "Moved", {"location": location})
    assert outcome.kind == "blocked" and "https://new.example:8443/..." in outcome.detail
    assert "s3cr3t" not in outcome.detail and "abc" not in outcome.detail


def test_an_undecodable_incident_header_does_not_stop_the_restore(kafka_settings) -> None:
    """Run 1 delivers a firing alert whose ``group`` header is not UTF-8; run 2 reads the
    firing alerts back from Kafka and must re-send it."""
    settings = delivery_settings(kafka_settings, alert_resend_interval_s=1.0)
    sensor = new_sensor()
    producer = make_producer(settings)
    try:
        producer.send(
            settings.topic_alerts,
            key=sensor.encode(),
            value=encode_alert(make_alert(sensor)),
            headers=[("group", b"\xff\xfe incident")],
        )
        producer.flush(timeout=WAIT_S)
    finally:
        producer.close()
    recorder = HttpRecorder()
    try:
        with delivering(settings, [am_receiver(recorder.url, settings)]):
            wait_all_committed(settings)
        first = len(recorder.received())
        with delivering(settings, [am_receiver(recorder.url, settings)]):
            wait_until(
                lambda: any(sensor.encode() in r.body for r in recorder.received()[first:]),
                what="the firing alert re-sent after the restart",
            )
    finally:
        recorder.close()


def test_an_alert_record_the_client_cannot_parse_does_not_stall_delivery(kafka_settings) -> None:
    """A record on the alerts topic that kafka-python cannot parse (its lengths do not add
    up) made every later poll spin: delivery and the restore after a restart must move
    past it and deliver the alert behind it."""
    from tests.service_support import MiscountedHeaders

    settings = delivery_settings(kafka_settings, alert_resend_interval_s=1.0)
    before, after = new_sensor(), new_sensor()
    producer = make_producer(settings)
    try:
        for sensor, headers in (
            (before, []),
            (new_sensor(), MiscountedHeaders([("group", b"x")])),
            (after, []),
        ):
            value = encode_alert(make_alert(sensor))
            producer.send(settings.topic_alerts, key=b"k", value=value, headers=headers)
            producer.flush(timeout=WAIT_S)  # a batch each: only the poison's is unreadable
    finally:
        producer.close()
    recorder = HttpRecorder()
    try:
        with delivering(settings, [am_receiver(recorder.url, settings)]) as delivery:
            wait_until(
                lambda: any(after.encode() in r.body for r in recorder.received()),
                what="the alert behind the unreadable record delivered",
            )
            wait_until(lambda: _committed(settings) == 3, what="all three committed")
            assert delivery.counters["undecodable"] == 1
        first = len(recorder.received())
        with delivering(settings, [am_receiver(recorder.url, settings)]):
            wait_until(
                lambda: any(after.encode() in r.body for r in recorder.received()[first:]),
                what="the firing alert behind it re-sent after the restart",
            )
    finally:
        recorder.close()


def _committed(settings: Settings) -> int:
    """The delivery group's committed offsets, summed over the alert topic's partitions."""
    from kafka import TopicPartition

    consumer = make_consumer(settings, group_id=delivery_group(settings))
    try:
        parts = consumer.partitions_for_topic(settings.topic_alerts) or set()
        tps = [TopicPartition(settings.topic_alerts, p) for p in parts]
        return sum(consumer.committed(tp, timeout_ms=10_000) or 0 for tp in tps)
    finally:
        consumer.close()


def _nothing_active(alertmanager, sensor: str) -> None:
    """Alertmanager takes a posted alert before it answers: an alert left active shows
    at once (waiting would see it expire on its own, four resend intervals later)."""
    active = alertmanager.alerts(sensor=sensor)
    assert not active, [(a["labels"]["severity"], a["endsAt"]) for a in active]


def test_an_escalation_resolved_within_one_batch_leaves_nothing_active(alertmanager) -> None:
    """A backlog drained in one request: the warning's label set must end when the
    critical one starts, though Alertmanager never heard of the warning before."""
    sensor = new_sensor()
    batch = [
        make_alert(sensor),
        make_alert(sensor, minute=1, severity="critical"),
        make_alert(sensor, "resolved", minute=2, severity="critical"),
    ]
    receiver = AlertmanagerReceiver(alertmanager.url, timeout_s=5.0)
    try:
        assert receiver.deliver([Pending(m) for m in batch]).kind == "accepted"
    finally:
        receiver.close()
    _nothing_active(alertmanager, sensor)
    assert not receiver.firing


@pytest.mark.parametrize("together", [True, False], ids=["one-batch", "later-batch"])
def test_a_firing_record_of_a_resolved_episode_pages_no_more(alertmanager, together) -> None:
    """Replayed or out of order, it made the episode active again, re-sent for ever."""
    sensor = new_sensor()
    firing, resolved = make_alert(sensor, minute=1), make_alert(sensor, "resolved", minute=3)
    stale = make_alert(sensor, minute=2)
    receiver = AlertmanagerReceiver(alertmanager.url, timeout_s=5.0)
    try:
        batches = [[firing, resolved, stale]] if together else [[firing], [resolved], [stale]]
        for batch in batches:
            assert receiver.deliver([Pending(m) for m in batch]).kind == "accepted"
    finally:
        receiver.close()
    _nothing_active(alertmanager, sensor)
    assert not receiver.firing


def test_a_restart_restores_no_firing_record_of_a_resolved_episode(kafka_settings) -> None:
    """The restore read the latest record per key: a stale firing one after the
    resolution was re-sent to Alertmanager as firing after every restart."""
    settings = delivery_settings(kafka_settings)
    sensor, other = new_sensor(), new_sensor()
    publish(
        settings,
        make_alert(sensor, minute=1),
        make_alert(sensor, "resolved", minute=3),
        make_alert(sensor, minute=2),
        make_alert(other),
    )
    from kafka import TopicPartition

    from pipeline.alerts.delivery import AlertDelivery
    from tests.delivery_support import FAST
    from tests.service_support import read_topic

    ends: dict[TopicPartition, int] = {}
    for record in read_topic(settings, settings.topic_alerts, settle_s=0.1):
        tp = TopicPartition(record.topic, record.partition)
        ends[tp] = max(ends.get(tp, 0), record.offset + 1)
    delivery = AlertDelivery(settings, [am_receiver("http://127.0.0.1:1", settings)], FAST)
    restored, resolved = delivery._firing_before(ends, threading.Event())
    assert [p.message.sensor for p in restored] == [other]
    assert resolved == [make_alert(sensor).alert_id]


def test_a_stale_firing_record_after_a_restart_pages_no_more(alertmanager, kafka_settings):
    """The episode's resolution was committed by the run before: the new run did not
    know it, sent the stale record as firing and re-sent it for ever."""
    settings = delivery_settings(kafka_settings)
    sensor = new_sensor()
    publish(settings, make_alert(sensor, minute=1), make_alert(sensor, "resolved", minute=3))
    with delivering(settings, [am_receiver(alertmanager.url, settings)]):
        wait_all_committed(settings)
    publish(settings, make_alert(sensor, minute=2))
    with delivering(settings, [am_receiver(alertmanager.url, settings)]) as delivery:
        wait_all_committed(settings)
        (receiver,) = delivery.receivers
        assert not receiver.firing  # type: ignore[attr-defined]
    _nothing_active(alertmanager, sensor)


def test_a_resolution_stamped_in_the_future_ends_the_alert_now(alertmanager) -> None:
    """A producer's clock in 2249: Alertmanager kept the alert active until then."""
    sensor = new_sensor()
    ahead = datetime(2249, 1, 1, tzinfo=UTC)
    firing = dataclasses.replace(make_alert(sensor), first_seen=ahead, ts=ahead)
    resolved = dataclasses.replace(make_alert(sensor, "resolved"), first_seen=ahead, ts=ahead)
    receiver = AlertmanagerReceiver(alertmanager.url, timeout_s=5.0)
    try:
        assert receiver.deliver([Pending(firing)]).kind == "accepted"
        assert receiver.deliver([Pending(resolved)]).kind == "accepted"
    finally:
        receiver.close()
    _nothing_active(alertmanager, sensor)


def test_a_stop_cuts_a_request_to_a_receiver_that_never_answers() -> None:
    """With ROADCAST_ALERT_TIMEOUT_S=60, a stop waited for the whole deadline (the
    watchdog did not listen to it); systemd then killed the process."""
    import httpx

    from pipeline.alerts.receivers import post

    silent = threading.Event()
    stop = threading.Event()
    with raw_server(lambda conn: silent.wait(120)) as url:
        threading.Timer(0.5, stop.set).start()
        started = time.monotonic()
        with httpx.Client() as client:
            outcome = post(client, url, b"{}", {}, 60.0, stop)
        assert outcome.kind == "retry"
        assert time.monotonic() - started < 30  # a bound on the stop, not a speed test
        silent.set()


@pytest.mark.parametrize("stage", ["handshake", "answer"])
def test_a_stop_cuts_an_https_request_in_its_handshake_or_its_answer(tmp_path, stage) -> None:
    """Over TLS the watchdog held a socket the TLS layer had detached: neither the deadline
    nor a stop cut the request (a receiver trickling its answer held it for ever)."""
    import ssl

    import httpx

    from pipeline.alerts.receivers import post

    cert, key = write_certificate(tmp_path, ip=True)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    silent, stop = threading.Event(), threading.Event()

    def answer(conn: socket.socket) -> None:
        if stage == "answer":  # the handshake and the request, then a trickle of headers
            with server_tls.wrap_socket(conn, server_side=True) as tls:
                tls.recv(65536)
                tls.sendall(b"HTTP/1.1 200 OK\r\n")
                while not silent.wait(0.2):
                    tls.sendall(b"X-Wait: 1\r\n")
        silent.wait(120)  # "handshake": no TLS answer at all

    server = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=lambda: answer(server.accept()[0]), daemon=True).start()
    url = f"https://127.0.0.1:{server.getsockname()[1]}/hook"
    try:
        threading.Timer(1.0, stop.set).start()
        started = time.monotonic()
        with httpx.Client(verify=ssl.create_default_context(cafile=str(cert))) as client:
            outcome = post(client, url, b"{}", {}, 60.0, stop)
        assert outcome.kind == "retry", outcome
        assert time.monotonic() - started < 30  # a bound on the stop, not a speed test
    finally:
        silent.set()
        server.close()


PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def test_a_proxy_setting_httpx_cannot_use_is_refused_at_start(clean_env, monkeypatch) -> None:
    """``ALL_PROXY=ftp://...`` (or socks5:// without socksio) made httpx raise on every
    request; the lane took that for a refused alert and dropped each one."""
    from typer.testing import CliRunner

    from flows.cli import app

    for name in PROXIES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ALL_PROXY", "ftp://proxy.example:21")
    for make in RECEIVERS.values():
        with pytest.raises(ValueError, match="fix or unset the proxy variables"):
            make("http://am.example:9093")
    result = CliRunner().invoke(
        app, ["alerts", "deliver", "--alertmanager", "http://am.example:9093"]
    )
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: cannot make an HTTP client") and "ALL_PROXY" in line


def test_a_proxy_setting_that_breaks_later_is_retried_not_dropped(clean_env, monkeypatch) -> None:
    for name in PROXIES:
        monkeypatch.delenv(name, raising=False)
    for make in RECEIVERS.values():
        receiver = make("http://am.example:9093")
        receiver.close()
        monkeypatch.setenv("ALL_PROXY", "ftp://proxy.example:21")
        outcome = receiver.deliver([Pending(make_alert(new_sensor()), "i")])
        monkeypatch.delenv("ALL_PROXY")
        assert outcome.kind == "retry" and "proxy variables" in outcome.detail, outcome


@pytest.mark.integration
def test_a_broker_that_stops_answering_is_said_once_and_its_return_too(
    kafka_settings, tmp_path, caplog
) -> None:
    """Delivery waited without a word while its broker was gone (kafka-python retries
    quietly, and a quiet alert topic looks the same)."""
    import os
    import signal

    from pipeline.kafka.broker import EmbeddedBroker, free_port
    from tests.delivery_support import FAST

    broker = EmbeddedBroker(
        free_port(), log_path=tmp_path / "broker.log", handle_sigterm=False,
        startup_timeout_s=WAIT_S,
    )  # fmt: skip
    config = dataclasses.replace(FAST, broker_check_s=0.5)
    with broker:
        settings = delivery_settings(kafka_settings.model_copy(
            update={"bootstrap_servers": broker.bootstrap}
        ))  # fmt: skip
        recorder = HttpRecorder()
        receivers = [am_receiver(recorder.url, settings)]
        events = lambda: [r.getMessage() for r in caplog.records]  # noqa: E731
        try:
            with (
                caplog.at_level("INFO", logger="roadcast.alerts.delivery"),
                delivering(settings, receivers, config) as d,
            ):
                wait_until(lambda: d._generation > 0, what="partitions to ask about")
                os.killpg(broker.pid, signal.SIGSTOP)
                try:
                    wait_until(lambda: "alert_broker_unreachable" in events(),
                               what="the lost broker named")  # fmt: skip
                finally:
                    os.killpg(broker.pid, signal.SIGCONT)
                wait_until(lambda: "alert_broker_back" in events(), what="its return")
        finally:
            recorder.close()
    assert events().count("alert_broker_unreachable") == 1, events()
