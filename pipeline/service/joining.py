"""Joining the consumer group while the service starts (:class:`GroupJoin`).

A group join takes seconds whatever the client does: the embedded Tansu broker answers
a new member's JoinGroup after half its session timeout (3 s with the service's 6 s),
Apache Kafka after ``group.initial.rebalance.delay.ms`` (3 s by default) for a group's
first member. The service's other start-up work (importing torch, loading the bundles,
restoring the store, warming the models up) takes about as long, so the two run side by
side: a thread connects, subscribes and polls until the assignment arrives while the
service loads; the loop then takes the consumer over (``benchmarks/startup.py``).

The thread polls until it is assigned, not once: kafka-python 3.0 (3.0.12) carries on a
join only while someone polls, and a join that completes between two polls is thrown
away and started again (another 3 s). It completes with the SyncGroup answer a few ms
after the JoinGroup answer, 3 s after the join began: polls of 100 ms or 1 s end right
then. Polls of :data:`JOIN_POLL_MS` (not a divisor of 3 s) end 200 ms away from it; under
heavy load a start may still join twice (docs/decisions.md, "Fast starts"). The consumer
is not thread-safe: the loop uses it only after :meth:`GroupJoin.result` has joined the
thread. Records the thread's last poll returned are handed over with it, for the loop's
first batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pipeline.service.partitions import PartitionTracker, RebalanceListener
from pipeline.settings import Settings

if TYPE_CHECKING:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.consumer.fetcher import ConsumerRecord

log = logging.getLogger("roadcast.service")

# Poll timeout of the joining thread (see the module docstring); an idle topic keeps an
# assignment waiting in the thread this long at most.
JOIN_POLL_MS = 700
# How long a service that fails or stops during start-up waits for the join to stop.
CANCEL_WAIT_S = 5.0
# How long a join under way may take to finish when the service leaves the group
# before it took the consumer over (a stop or a failure during start-up).
LEAVE_WAIT_S = 5.0
# How often :meth:`GroupJoin.joined` looks whether the join ended.
JOINED_POLL_S = 0.1

Records = Mapping["TopicPartition", Sequence["ConsumerRecord"]]


class GroupJoin:
    """Connect, subscribe and join the consumer group in a thread (see the module docs).

    Parameters
    ----------
    settings : connection, readings topic, consumer group.
    partitions : the service's partition tracker (the rebalance listener updates it).
    poll_records : ``max_poll_records`` of the consumer.
    stop : stops the joining early (a SIGTERM during start-up).
    """

    def __init__(
        self,
        settings: Settings,
        partitions: PartitionTracker,
        poll_records: int,
        stop: threading.Event,
    ) -> None:
        self.settings = settings
        self.partitions = partitions
        self.poll_records = poll_records
        self._stop = stop
        self._cancel = threading.Event()
        self._leave_by: float | None = None
        self._done = False
        self._lock = threading.Lock()
        self._consumer: KafkaConsumer | None = None
        self._records: dict[Any, list[Any]] = {}
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._join, name="roadcast-join", daemon=True)
        self._thread.start()

    def _join(self) -> None:
        from pipeline.kafka.clients import ensure_topics
        from pipeline.kafka.unreadable import poll_readable

        started = time.monotonic()
        joining = False  # a JoinGroup may be under way: leaving now would jam the group
        try:
            ensure_topics(self.settings)
            consumer = subscribed_consumer(self.settings, self.partitions, self.poll_records)
            with self._lock:
                self._consumer = consumer
            while not (self._leaving() and (not joining or self._left_waiting())):
                for tp, records in poll_readable(consumer, JOIN_POLL_MS).items():
                    self._records.setdefault(tp, []).extend(records)
                joining = True
                if consumer.assignment():
                    if self._leaving():
                        return  # joined only to leave: closing sends LeaveGroup
                    seconds = round(time.monotonic() - started, 3)
                    fields = {"seconds": seconds, "partitions": len(consumer.assignment())}
                    log.info("group_joined", extra={"fields": fields})
                    return
        except BaseException as exc:  # raised in the service's thread by result()
            self._error = exc
        finally:
            with self._lock:
                self._done = True
                leaving = self._leaving()
            if leaving:  # nobody will take the consumer over
                self._close()

    def _leaving(self) -> bool:
        """The service stopped or gave the join up: it will not take the consumer over."""
        return self._stop.is_set() or self._cancel.is_set()

    def _left_waiting(self) -> bool:
        """Whether a join being left has waited long enough: at most :data:`LEAVE_WAIT_S`
        from the first time it is asked (logged then), so that a member which vanishes
        half-joined does not keep the group's next member waiting for it."""
        now = time.monotonic()
        if self._leave_by is None:
            self._leave_by = now + LEAVE_WAIT_S
            fields = {
                "wait_s": LEAVE_WAIT_S,
                "hint": "stopping during the group join: the join is finished first, then "
                "the group left, so that the next service joins at once",
            }
            log.info("waiting_for_group", extra={"fields": fields})
        return now >= self._leave_by

    def joined(self) -> bool:
        """Wait until the join ends (joined, or failed: :meth:`result` says which);
        False as soon as the service's stop is set, for a stop during start-up must not
        wait for a broker that does not answer."""
        while self._thread.is_alive() and not self._stop.wait(JOINED_POLL_S):
            pass
        return not self._stop.is_set()

    def result(self) -> tuple[KafkaConsumer, Records]:
        """The subscribed consumer (now the caller's) and the records polled so far.

        Raises
        ------
        pipeline.kafka.clients.KafkaUnavailable
            When no broker answered (any error of the joining thread is raised here).
        """
        self._thread.join()
        if self._error is not None:
            self._close()
            raise self._error
        with self._lock:
            consumer, self._consumer = self._consumer, None
        assert consumer is not None
        records, self._records = self._records, {}
        return consumer, records

    def cancel(self, wait_s: float = 0.0) -> None:
        """Stop joining: the consumer is closed, unless :meth:`result` handed it over.

        A join under way is first completed in the thread (for at most
        :data:`LEAVE_WAIT_S`) so that closing leaves the group: a member that vanishes
        half-joined is kept by the embedded broker until the broker restarts, and the
        group's next service never joins. ``wait_s`` is how long the caller waits for
        that; without it, nothing waits. Nor does anything wait while the thread is
        still connecting (a bootstrap to an unreachable broker may take its deadline):
        it closes the consumer it makes without joining."""
        with self._lock:  # the thread sets its consumer and ends under it
            connected = self._consumer is not None
            self._cancel.set()
            done = self._done
        if done:  # it joined and ended before: it will not close the consumer
            self._close()
        elif connected and wait_s > 0:
            self._thread.join(wait_s + 2 * JOIN_POLL_MS / 1000)  # its last poll, then close

    def _close(self) -> None:
        with self._lock:
            consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                consumer.close()
            except Exception as exc:  # closing a consumer that never connected
                log.debug("consumer_close_failed", extra={"fields": {"error": str(exc)}})


def subscribed_consumer(
    settings: Settings, partitions: PartitionTracker, poll_records: int
) -> KafkaConsumer:
    """A consumer of the readings topic in the service's group, its rebalance listener
    updating ``partitions``; it joins the group on its first polls.

    Raises
    ------
    pipeline.kafka.clients.KafkaUnavailable
        When no broker answers.
    """
    from pipeline.kafka.clients import make_consumer

    consumer = make_consumer(
        settings, group_id=settings.consumer_group, max_poll_records=poll_records
    )
    consumer.subscribe([settings.topic_readings], listener=RebalanceListener(partitions, consumer))
    return consumer
