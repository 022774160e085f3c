"""Alert delivery: ``roadcast.alerts`` to Alertmanager and webhooks, Kafka the source of truth.

:class:`AlertDelivery` consumes the alerts topic in its own consumer group
(:func:`delivery_group`, ``<ROADCAST_CONSUMER_GROUP>.alert-delivery``) and hands every
record to every receiver (:mod:`pipeline.alerts.receivers`). Each receiver has its own
thread and queue (:class:`pipeline.alerts.lanes.Lane`): it delivers in offset order, so
a ``resolved`` never overtakes its ``firing``, and a receiver that is down or slow holds
up nobody else.

A record's offset is committed once **every** receiver has accepted it or refused that
alert alone for good (400, 413, 422 for the alert by itself: logged once with the
receiver's reason; a batch so refused is halved to find it). A 5xx, 408, 429, a wrong
address or credentials (401, 403, 404, a redirect: logged once), a timeout or a
connection error is retried by that receiver alone, with exponential backoff and full
jitter (:class:`~pipeline.alerts.lanes.DeliveryConfig`), until it goes through: the
alert stays in Kafka meanwhile, and a restart re-delivers everything after the committed
offset. Re-delivery is idempotent: Alertmanager identifies an alert by its
labels, which a record always maps to the same way, and a webhook gets the same
``webhook-id``.

When a receiver's backlog reaches ``max_backlog`` the consumer pauses (the rest waits in
Kafka) until it is half drained. A record that is not a valid alert is logged and
skipped: no record stops delivery.

On every (re)assignment of partitions the delivery reads them from the start up to the
committed offsets to learn which alerts are firing, so that Alertmanager keeps hearing
of them (:meth:`pipeline.alerts.receivers.AlertmanagerReceiver.resend`).

:func:`start_delivery_thread` runs it beside the forecasting loop (``roadcast serve``
with receivers configured); ``roadcast alerts deliver`` runs it alone. It never touches
the service's loop, producer or store: the two only share the topic.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kafka import ConsumerRebalanceListener

from pipeline.alerts.lanes import DeliveryConfig, DeliveryError, Item, Lane
from pipeline.alerts.receivers import (
    AlertmanagerReceiver,
    Pending,
    Receiver,
    WebhookReceiver,
)
from pipeline.kafka.schema import SchemaError, decode_alert
from pipeline.kafka.unreadable import poll_readable
from pipeline.settings import Settings, shown_url, url_problem

if TYPE_CHECKING:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.consumer.fetcher import ConsumerRecord

    from pipeline.service.metrics import ServiceMetrics

log = logging.getLogger("roadcast.alerts.delivery")
# Reading the firing alerts back gives up when the log yields nothing for this long.
RESTORE_STALL_S = 30.0
# Deadline of one offset commit: a broker that is down must not hold a stop for the
# client's default (30 s, then again on the way out).
COMMIT_TIMEOUT_MS = 5000
# The deadline of a broker check (AlertDelivery._watch_broker), seconds.
BROKER_CHECK_TIMEOUT_S = 5.0


def delivery_group(settings: Settings) -> str:
    """The consumer group of alert delivery."""
    return f"{settings.consumer_group}.alert-delivery"


def _urls(value: str, variable: str) -> list[str]:
    urls = [u for u in value.split(",") if u]
    for url in urls:
        if problem := url_problem(url, alertmanager="ALERTMANAGER" in variable):
            raise DeliveryError(f"{variable}: {problem}, got {shown_url(url)}")
    return urls


def receivers_from_settings(settings: Settings) -> list[Receiver]:
    """One receiver per ``ROADCAST_ALERTMANAGER_URLS`` and ``ROADCAST_WEBHOOK_URLS`` entry.

    Raises
    ------
    DeliveryError
        Webhook URLs without ``ROADCAST_WEBHOOK_SECRET``.
    """
    receivers: list[Receiver] = [
        AlertmanagerReceiver(
            url,
            timeout_s=settings.alert_timeout_s,
            resend_interval_s=settings.alert_resend_interval_s,
            generator_url=settings.alert_generator_url,
        )
        for url in _urls(settings.alertmanager_urls, "ROADCAST_ALERTMANAGER_URLS")
    ]
    hooks = _urls(settings.webhook_urls, "ROADCAST_WEBHOOK_URLS")
    if hooks and settings.webhook_secret is None:
        raise DeliveryError(
            "ROADCAST_WEBHOOK_URLS is set but ROADCAST_WEBHOOK_SECRET is not: webhooks are "
            "signed with it (see the README)"
        )
    for url in hooks:
        assert settings.webhook_secret is not None
        receivers.append(
            WebhookReceiver(url, settings.webhook_secret, timeout_s=settings.alert_timeout_s)
        )
    named: Counter[str] = Counter()
    for receiver in receivers:  # names hide paths: number those on one host apart
        named[receiver.name] += 1
        if named[receiver.name] > 1:
            receiver.name = f"{receiver.name} #{named[receiver.name]}"
    return receivers


class _Listener(ConsumerRebalanceListener):
    """Records that the assignment changed; the delivery loop acts on it (kafka-python 3
    calls listeners on its network thread, where blocking calls are forbidden)."""

    def __init__(self, changed: threading.Event) -> None:
        self.changed = changed

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.changed.set()

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.changed.set()


class AlertDelivery:
    """Delivers ``roadcast.alerts`` to ``receivers`` (see the module docstring).

    Parameters
    ----------
    settings : Kafka connection, the alerts topic, the consumer group it derives from.
    receivers : where alerts go (default: :func:`receivers_from_settings`).
    config : backoff and pacing.
    """

    def __init__(
        self,
        settings: Settings,
        receivers: Sequence[Receiver] | None = None,
        config: DeliveryConfig | None = None,
    ) -> None:
        self.settings = settings
        self.receivers = list(receivers_from_settings(settings) if receivers is None else receivers)
        if not self.receivers:
            raise DeliveryError(
                "no alert receivers: set ROADCAST_ALERTMANAGER_URLS and/or ROADCAST_WEBHOOK_URLS"
            )
        self.config = config or DeliveryConfig()
        self.group = delivery_group(settings)
        self.counters: Counter[str] = Counter()
        self.lanes: list[Lane] = []
        self._done: queue.SimpleQueue[Item] = queue.SimpleQueue()
        self._changed = threading.Event()
        self._generation = 0
        self._left: dict[TopicPartition, dict[int, int]] = {}  # offset -> receivers left
        self._commit_to: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._paused = False

    def _start_over(self) -> None:
        self._done = queue.SimpleQueue()
        self._changed.clear()
        self._left, self._commit_to, self._committed = {}, {}, {}
        self._paused = False

    def undelivered(self) -> int:
        """Alerts polled that some receiver has not taken yet (the next run delivers them,
        and reads again those taken but not committed)."""
        return sum(
            sum(1 for n in dict(left).values() if n > 0) for left in dict(self._left).values()
        )

    def stats(self) -> dict[str, Any]:
        """The counters, per receiver and overall, and the committed offsets."""
        return {
            **dict(self.counters),
            "receivers": {lane.receiver.name: dict(lane.counters) for lane in self.lanes},
            "backlog": {lane.receiver.name: lane.backlog() for lane in self.lanes},
            # dict(...) copies in one step: other threads may call this while it changes
            "committed": {
                f"{tp.topic}:{tp.partition}": o for tp, o in dict(self._committed).items()
            },
        }

    def run(self, stop: threading.Event) -> dict[str, Any]:
        """Deliver until ``stop`` is set; returns :meth:`stats`.

        Raises
        ------
        pipeline.kafka.clients.KafkaUnavailable
            When no broker answers at start-up.
        """
        from kafka.errors import KafkaError

        from pipeline.kafka.clients import ensure_topics, make_consumer

        ensure_topics(self.settings, topics=[self.settings.topic_alerts])
        consumer = make_consumer(self.settings, group_id=self.group, max_poll_records=1000)
        self._start_over()
        halt = threading.Event()  # the lanes' own: a failure here must not stop the caller
        # Unseeded: replicas (and a service beside a separate deliverer) must not retry in
        # step with each other, which is what the jitter is for.
        self.lanes = [Lane(r, self.config, self._done.put, halt) for r in self.receivers]
        for lane in self.lanes:
            lane.thread.start()
        log.info(
            "alert_delivery_started",
            extra={
                "fields": {
                    "topic": self.settings.topic_alerts,
                    "group": self.group,
                    "receivers": [r.name for r in self.receivers],
                }
            },
        )
        try:
            consumer.subscribe([self.settings.topic_alerts], listener=_Listener(self._changed))
            last_stats = time.monotonic()
            threading.Thread(
                target=self._watch_broker, args=(halt,), name="alert-broker-watch", daemon=True
            ).start()
            while not stop.is_set():
                try:
                    records = poll_readable(consumer, self.config.poll_timeout_ms)
                except KafkaError as exc:  # the client reconnects by itself
                    log.warning("alert_poll_failed", extra={"fields": {"error": str(exc)}})
                    stop.wait(1.0)
                    continue
                if self._changed.is_set():
                    self._reassign(consumer, stop)  # positions move back: drop `records`
                    continue
                for tp, part in records.items():
                    self._enqueue(tp, part)
                self._collect()
                self._commit(consumer)
                self._pace(consumer)
                if time.monotonic() - last_stats >= self.config.stats_every_s:
                    last_stats = time.monotonic()
                    log.info("alert_delivery_stats", extra={"fields": self.stats()})
        finally:
            halt.set()
            for lane in self.lanes:
                lane.wake()
            for lane in self.lanes:
                lane.thread.join(timeout=self.settings.alert_timeout_s + 5.0)
            self._collect()
            self._commit(consumer)
            consumer.close()
            for receiver in self.receivers:
                receiver.close()
            log.info("alert_delivery_stopped", extra={"fields": self.stats()})
        return self.stats()

    def _watch_broker(self, halt: threading.Event) -> None:
        """Until ``halt``: log once when the broker stops answering a metadata request
        within its deadline, once when it answers again. kafka-python retries without a
        word (its poll may block inside a group rejoin meanwhile), and a quiet alert topic
        looks the same."""
        from pipeline.service.health import broker_check

        check = broker_check(self.settings, BROKER_CHECK_TIMEOUT_S)
        lost = False
        while not halt.wait(self.config.broker_check_s):
            problem = check()
            if problem is not None and not lost:
                hint = "delivery goes on when it answers; alerts wait in their topic"
                fields = {"error": problem, "hint": hint}
                log.warning("alert_broker_unreachable", extra={"fields": fields})
            elif problem is None and lost:
                servers = self.settings.bootstrap_servers
                log.info("alert_broker_back", extra={"fields": {"servers": servers}})
            lost = problem is not None

    # --- records ----------------------------------------------------------------------

    def _enqueue(self, tp: TopicPartition, records: Sequence[ConsumerRecord]) -> None:
        left = self._left.setdefault(tp, {})
        items = []
        for record in records:
            self.counters["consumed"] += 1
            try:
                message = decode_alert(record.value)
            except SchemaError as exc:
                self.counters["undecodable"] += 1
                log.warning(
                    "alert_undecodable",
                    extra={
                        "fields": {
                            "topic": tp.topic,
                            "partition": tp.partition,
                            "offset": record.offset,
                            "reason": exc.reason,
                            "detail": exc.detail,
                        }
                    },
                )
                left[record.offset] = 0
                continue
            group = dict(record.headers or []).get("group") or b""
            incident = bytes(group).decode("utf-8", "replace")
            left[record.offset] = len(self.lanes)
            items.append(Item(self._generation, tp, record.offset, Pending(message, incident)))
        for lane in self.lanes:
            lane.put(items)

    def _collect(self) -> None:
        """Count the receivers' answers; move each partition's commit point forward."""
        while True:
            try:
                item = self._done.get_nowait()
            except queue.Empty:
                break
            left = self._left.get(item.tp)
            if item.generation != self._generation or left is None or item.offset not in left:
                continue  # from a previous assignment
            left[item.offset] -= 1
        for tp, left in self._left.items():
            while left:
                offset = next(iter(left))
                if left[offset] > 0:
                    break
                del left[offset]
                self._commit_to[tp] = offset + 1

    def _commit(self, consumer: KafkaConsumer) -> None:
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata

        offsets = {
            tp: OffsetAndMetadata(o, "", -1)
            for tp, o in self._commit_to.items()
            if o > self._committed.get(tp, -1)
        }
        if not offsets:
            return
        try:
            consumer.commit(offsets, timeout_ms=COMMIT_TIMEOUT_MS)
        except KafkaError as exc:  # retried with the next batch; a restart re-delivers
            log.warning("alert_commit_failed", extra={"fields": {"error": str(exc)}})
            return
        for tp, meta in offsets.items():
            self._committed[tp] = meta.offset

    def _pace(self, consumer: KafkaConsumer) -> None:
        """Pause the consumer while a receiver's backlog is full; resume at half."""
        backlog = max((lane.backlog() for lane in self.lanes), default=0)
        if not self._paused and backlog >= self.config.max_backlog:
            consumer.pause(*consumer.assignment())
            self._paused = True
            log.warning("alert_delivery_paused", extra={"fields": {"backlog": backlog}})
        elif self._paused and backlog <= self.config.max_backlog // 2:
            consumer.resume(*consumer.paused())
            self._paused = False
            log.info("alert_delivery_resumed", extra={"fields": {"backlog": backlog}})

    # --- assignment -------------------------------------------------------------------

    def _reassign(self, consumer: KafkaConsumer, stop: threading.Event) -> None:
        """Start over on the new assignment: committed offsets, firing alerts, queues."""
        from kafka.errors import KafkaError

        self._changed.clear()
        assigned = set(consumer.assignment())
        try:
            committed = {tp: consumer.committed(tp, timeout_ms=10_000) for tp in assigned}
            firing, resolved = self._firing_before(
                {tp: o for tp, o in committed.items() if o}, stop
            )
        except KafkaError as exc:
            log.warning("alert_assignment_deferred", extra={"fields": {"error": str(exc)}})
            self._changed.set()
            stop.wait(1.0)
            return
        self._generation += 1
        for tp in assigned:
            offset = committed[tp]
            if offset is None:
                consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, offset)
        if self._paused:
            consumer.resume(*consumer.paused())
            self._paused = False
        self._left = {tp: {} for tp in assigned}
        self._committed = {tp: o for tp, o in committed.items() if o is not None}
        self._commit_to = dict(self._committed)
        for lane in self.lanes:
            lane.reset(self._generation, firing, resolved)
        log.info(
            "alert_partitions_assigned",
            extra={
                "fields": {
                    "partitions": sorted(tp.partition for tp in assigned),
                    "committed": {tp.partition: o for tp, o in committed.items()},
                    "firing": len(firing),
                }
            },
        )

    def _firing_before(
        self, ends: Mapping[TopicPartition, int], stop: threading.Event
    ) -> tuple[list[Pending], list[str]]:
        """The alerts firing just before ``ends`` (committed offsets), and the episodes
        (``alert_id``) resolved before them, newest last: the topic is read from its
        start; the latest message of each ``dedup_key`` says, leaving out a firing record
        of an episode resolved before it (stale)."""
        from pipeline.kafka.clients import make_consumer

        if not ends:
            return [], []
        reader = make_consumer(self.settings, group_id="")
        latest: dict[str, Pending] = {}
        resolved: dict[str, None] = {}  # in the order they were resolved
        try:
            reader.assign(list(ends))
            reader.seek_to_beginning(*ends)
            progress = time.monotonic()
            while not stop.is_set() and any(reader.position(tp) < ends[tp] for tp in ends):
                batch = poll_readable(reader, 200)
                if batch:
                    progress = time.monotonic()
                elif time.monotonic() - progress > RESTORE_STALL_S:
                    log.warning("alert_restore_incomplete", extra={"fields": {"read": len(latest)}})
                    break  # the log ends before the committed offsets (a broker lost it)
                for tp, part in batch.items():
                    for record in part:
                        if record.offset >= ends[tp]:
                            continue
                        try:
                            message = decode_alert(record.value)
                        except SchemaError:
                            continue  # logged when it was delivered
                        if message.status == "resolved":
                            resolved.pop(message.alert_id, None)
                            resolved[message.alert_id] = None
                        elif message.alert_id in resolved:
                            continue
                        group = dict(record.headers or []).get("group") or b""
                        incident = bytes(group).decode("utf-8", "replace")
                        latest[message.dedup_key] = Pending(message, incident)
        finally:
            reader.close()
        firing = [p for p in latest.values() if p.message.status == "firing"]
        return firing, list(resolved)


def run_supervised(delivery: AlertDelivery, stop: threading.Event, retry_s: float = 5.0) -> None:
    """Run ``delivery`` until ``stop``; restart it after any failure (logged), so that
    delivery trouble never ends the process it runs in."""
    while not stop.is_set():
        try:
            delivery.run(stop)
        except Exception:
            log.exception("alert_delivery_failed")
            if stop.wait(retry_s):
                return


def start_delivery_thread(
    settings: Settings,
    stop: threading.Event,
    config: DeliveryConfig | None = None,
    metrics: ServiceMetrics | None = None,
) -> threading.Thread | None:
    """Start delivery beside the service when receivers are configured (else None); its
    counters and backlog per receiver go to ``metrics`` (the service's ``/metrics``).

    Raises
    ------
    DeliveryError
        A configuration that cannot work (webhooks without a secret).
    """
    receivers = receivers_from_settings(settings)
    if not receivers:
        return None
    delivery = AlertDelivery(settings, receivers, config)
    if metrics is not None:
        metrics.alert_delivery(delivery.stats)
    thread = threading.Thread(
        target=run_supervised, args=(delivery, stop), name="roadcast-alert-delivery", daemon=True
    )
    thread.start()
    return thread
