"""Helpers of the alert delivery tests: alerts on the embedded broker, receivers with
test settings, delivery running in a thread, and the delivery group's committed offsets."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from pydantic import SecretStr

from pipeline.alerts.delivery import AlertDelivery, DeliveryConfig, delivery_group
from pipeline.alerts.receivers import AlertmanagerReceiver, Receiver, WebhookReceiver
from pipeline.kafka.clients import ensure_topics, make_consumer, make_producer
from pipeline.kafka.schema import AlertMessage, encode_alert, format_timestamp
from pipeline.settings import Settings
from tests.waiting import WAIT_S, wait_until

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
FAST = DeliveryConfig(backoff_initial_s=0.05, backoff_max_s=0.5, poll_timeout_ms=100)
BASE = datetime(2024, 3, 4, 8, 0, tzinfo=UTC)


def delivery_settings(kafka_settings: Settings, **update: object) -> Settings:
    """The test's settings with short delivery timeouts; its alerts topic created."""
    values = {"alert_timeout_s": 5.0, "alert_resend_interval_s": 2.0, **update}
    settings = kafka_settings.model_copy(update=values)
    ensure_topics(settings, topics=[settings.topic_alerts])
    return settings


def new_sensor() -> str:
    """A sensor id no other test uses (the session's Alertmanager is shared)."""
    return f"s-{uuid.uuid4().hex[:10]}"


def make_alert(
    sensor: str, status: str = "firing", *, minute: int = 0, severity: str = "warning"
) -> AlertMessage:
    """An episode of ``sensor`` that started at :data:`BASE`, at ``minute`` after it."""
    ts = BASE + timedelta(minutes=minute)
    return AlertMessage(
        alert_id=f"{sensor}:interval@{format_timestamp(BASE)}",
        dedup_key=f"{sensor}:interval",
        status=status,  # type: ignore[arg-type]
        severity=severity,  # type: ignore[arg-type]
        sensor=sensor,
        ts=ts,
        observed=12.0,
        expected=60.0,
        lo=50.0,
        hi=70.0,
        score=0.99995,
        detector="interval",
        first_seen=BASE,
        last_seen=ts,
        reason="12 is below the 99.9% interval [50, 70]",
    )


def incident_of(sensor: str) -> str:
    return f"incident:{sensor}@{format_timestamp(BASE)}"


def publish(settings: Settings, *messages: AlertMessage | bytes) -> None:
    producer = make_producer(settings)
    try:
        for m in messages:
            if isinstance(m, bytes):
                producer.send(settings.topic_alerts, key=b"junk", value=m)
                continue
            group = incident_of(m.sensor).encode()
            producer.send(
                settings.topic_alerts,
                key=m.sensor.encode(),
                value=encode_alert(m),
                headers=[("group", group)],
            )
        producer.flush(timeout=WAIT_S)
    finally:
        producer.close()


def am_receiver(url: str, settings: Settings) -> AlertmanagerReceiver:
    return AlertmanagerReceiver(
        url,
        timeout_s=settings.alert_timeout_s,
        resend_interval_s=settings.alert_resend_interval_s,
    )


def webhook_receiver(url: str, settings: Settings) -> WebhookReceiver:
    return WebhookReceiver(url, SecretStr(SECRET), timeout_s=settings.alert_timeout_s)


@contextmanager
def delivering(
    settings: Settings, receivers: list[Receiver], config: DeliveryConfig = FAST
) -> Iterator[AlertDelivery]:
    """:class:`AlertDelivery` running in a thread; stopped (errors re-raised) on exit."""
    delivery = AlertDelivery(settings, receivers, config)
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            delivery.run(stop)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="test-alert-delivery", daemon=True)
    thread.start()
    try:
        yield delivery
    finally:
        stop.set()
        thread.join(timeout=WAIT_S)
    if errors:
        raise errors[0]
    assert not thread.is_alive(), "delivery did not stop"


def offsets(settings: Settings) -> tuple[int, int]:
    """(committed offsets of the delivery group, end offsets), summed over partitions.

    The ends are those of the records read back: the embedded broker's ListOffsets can
    answer the base offset of a partition's last batch instead of its end."""
    from kafka import TopicPartition

    from tests.service_support import read_topic

    ends: dict[int, int] = {}
    for record in read_topic(settings, settings.topic_alerts, settle_s=0.1):
        ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)
    consumer = make_consumer(settings, group_id=delivery_group(settings))
    try:
        tps = [TopicPartition(settings.topic_alerts, p) for p in sorted(ends)]
        committed = sum(consumer.committed(tp, timeout_ms=10_000) or 0 for tp in tps)
        return committed, sum(ends.values())
    finally:
        consumer.close()


def wait_all_committed(settings: Settings) -> None:
    def done() -> bool:
        committed, end = offsets(settings)
        return end > 0 and committed == end

    wait_until(
        done,
        what="every alert committed by the delivery group",
        poll_s=0.3,
        details=lambda: f"(committed, end offsets) = {offsets(settings)}",
    )


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
