"""How far the service has got in each partition of the readings topic.

:class:`PartitionTracker` holds, per assigned partition:

* the **next stored offset**: the store records it in the same transaction as a
  batch's data, so records below it were fully processed before a crash and are
  skipped when Kafka redelivers them (exact counters, no re-forecast). Stored offsets
  are keyed ``topic@<topic id>``: a topic that was deleted and created again (a fresh
  embedded broker) has another id, so old offsets never hide its new records;
* the **newest event time** seen, the position, and when the partition last
  delivered a valid reading that was not late (invalid records and late readings say
  nothing of how far it has got), which give the event-time cap of the watermark
  (:meth:`PartitionTracker.limit_ns`): the slowest *active* partition holds the
  watermark back, so a partition read ahead of the others (Kafka hands out records
  partition by partition, a megabyte at a time) does not make their readings late.
  A partition is *idle* when it delivered nothing for ``idle_s`` seconds **and** has no
  backlog (its position has reached the high watermark of its last fetch): otherwise
  a partition whose sensors all went quiet would stop every tick from closing (Flink's
  ``withIdleness``). Neither test is enough alone: the high watermark is only as fresh
  as the last fetch (records on their way look "caught up"), and a service working
  through a backlog may not get to a partition's buffered records for many seconds.
  An idle partition still caps the watermark, at real-time pace: its newest event time
  plus the wall time since it delivered it (before it delivered any: the oldest event
  time the service has seen plus the wall time since then). Live, that is about now and
  holds nothing back; when a backlog arrives after a quiet spell (a replay into a
  service that sat idle), the partition whose records come first cannot move the
  watermark hours ahead of the others';
* whether the service has a **backlog** (:meth:`PartitionTracker.backlog`): some
  partition's position is behind its high watermark, or its high watermark is not
  known yet. Ticks never close on the processing-time grace then: their readings may
  be waiting in the backlog;
* offsets processed but **not yet committed** (a failed commit): committed again on
  the next batch or when the partition is revoked.

kafka-python 3 runs rebalance callbacks on its network thread, where blocking calls
are forbidden; :class:`RebalanceListener` therefore only records the change (and
sends an asynchronous commit on revocation), and the service adopts a new assignment
in its own loop (:meth:`PartitionTracker.adopt`).

The tracker also notes when a rebalance began (partitions revoked) and has assigned
nothing since (:meth:`PartitionTracker.join_stalled`). kafka-python 3.0.12 finishes a
rebalance only inside a poll: when the JoinGroup and SyncGroup answers of a rebalance
that a metadata change started (a topic re-created with other partitions, partitions
added) arrive between two polls, the consumer no longer thinks it must rejoin, never
applies the assignment it was sent, and waits without partitions for good. The
service then replaces the consumer (``ServiceConfig.rejoin_after_s``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kafka import ConsumerRebalanceListener

if TYPE_CHECKING:
    from kafka import KafkaConsumer, TopicPartition

log = logging.getLogger("roadcast.partitions")

# "no event time yet": a lagging partition with nothing read holds the watermark here.
NO_EVENT_TIME = -(2**62)


class PartitionTracker:
    """Per-partition offsets and event times (see the module docstring)."""

    def __init__(self, idle_s: float = 5.0) -> None:
        if idle_s <= 0:
            raise ValueError(f"idle_s must be > 0, got {idle_s}")
        self.idle_s = idle_s
        self.assigned: set[TopicPartition] = set()
        self.changed = False
        self.topic_keys: dict[str, str] = {}
        self.next_offset: dict[tuple[str, int], int] = {}
        self.max_event_ns: dict[TopicPartition, int] = {}
        self.position: dict[TopicPartition, int] = {}  # next offset this consumer gets
        # monotonic time of the last valid, timely reading
        self.last_seen: dict[TopicPartition, float] = {}
        self.pending_commit: dict[TopicPartition, int] = {}
        self.oldest_event_ns: int | None = None  # the oldest event time seen (any partition)
        self.oldest_seen_at = 0.0  # when it was seen
        self.rebalancing_since: float | None = None  # monotonic time of an unfinished revocation
        self.assignments = 0  # assignments received from rebalances (a new one: +1)

    def join_stalled(self, now: float, after_s: float) -> bool:
        """Whether partitions were revoked ``after_s`` or more seconds before ``now``
        (monotonic) and no assignment, not even an empty one, has come since."""
        return self.rebalancing_since is not None and now - self.rebalancing_since >= after_s

    def key(self, tp: TopicPartition) -> tuple[str, int]:
        """The store's key of a partition: ``(topic@<id>, partition)``."""
        return (self.topic_keys.get(tp.topic, tp.topic), tp.partition)

    def fresh(self, tp: TopicPartition, records: Sequence[Any]) -> list[Any]:
        """The records of ``tp`` the store does not hold yet."""
        start = self.next_offset.get(self.key(tp), -1)
        return [r for r in records if r.offset >= start] if start > 0 else list(records)

    def observe(
        self,
        tp: TopicPartition,
        next_offset: int,
        max_event_ns: int | None,
        now: float,
        min_event_ns: int | None = None,
    ) -> None:
        """Record that ``tp`` delivered records up to ``next_offset`` at ``now`` (event
        times ``min_event_ns`` to ``max_event_ns`` of its readings that were neither
        invalid nor late, None when there were none: the partition then made no progress,
        and only such progress keeps it from counting as idle)."""
        self.last_seen.setdefault(tp, now)  # active until it proves idle
        if max_event_ns is not None:  # junk or late readings say nothing of its progress
            self.last_seen[tp] = now
        self.position[tp] = next_offset
        if max_event_ns is not None:
            self.max_event_ns[tp] = max(self.max_event_ns.get(tp, NO_EVENT_TIME), max_event_ns)
        oldest = max_event_ns if min_event_ns is None else min_event_ns
        if oldest is not None and (self.oldest_event_ns is None or oldest < self.oldest_event_ns):
            self.oldest_event_ns, self.oldest_seen_at = oldest, now

    def stored(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """The store now holds everything below ``offsets``."""
        self.next_offset.update(offsets)

    def limit_ns(self, now: float, highwater: Callable[[TopicPartition], int | None]) -> int | None:
        """Event-time cap for the watermark: the newest event time of the slowest active
        partition (:data:`NO_EVENT_TIME` for one that has delivered no reading yet), and
        of each idle one that plus the wall time it has been quiet (see the module
        docstring); None when there is no cap. ``highwater`` is the consumer's last known
        high watermark of a partition (None before its first fetch)."""
        limit: int | None = None
        for tp in self.assigned:
            quiet_s = now - self.last_seen.get(tp, now)
            newest = self.max_event_ns.get(tp)
            if quiet_s >= self.idle_s and self._caught_up(tp, highwater):
                # Idle: event time may run on at real-time pace from its newest reading
                # (from the oldest reading seen, when it has delivered none).
                if newest is not None:
                    cap = newest + int(quiet_s * 1e9)
                elif self.oldest_event_ns is not None:
                    cap = self.oldest_event_ns + int((now - self.oldest_seen_at) * 1e9)
                else:
                    continue  # nothing seen anywhere yet: no event time to hold
            else:
                cap = NO_EVENT_TIME if newest is None else newest
            limit = cap if limit is None else min(limit, cap)
        return limit

    def backlog(self, highwater: Callable[[TopicPartition], int | None]) -> bool:
        """Whether an assigned (or delivering) partition has records not processed yet:
        its position is behind its high watermark, or that is not known yet."""
        partitions = self.assigned | set(self.position)
        return not all(self._caught_up(tp, highwater) for tp in partitions)

    def _caught_up(
        self, tp: TopicPartition, highwater: Callable[[TopicPartition], int | None]
    ) -> bool:
        hw = highwater(tp)
        return hw is not None and (self.position.get(tp) or 0) >= hw

    def adopt(
        self,
        consumer: KafkaConsumer,
        describe: Callable[[str], str],
        stored_offsets: Callable[[str], dict[int, int]],
        now: float,
    ) -> None:
        """Take over a new assignment (service thread, may block on the broker).

        Looks up each topic's id and the stored offsets under it. A topic whose id
        changed since the last assignment was deleted and created again (a fresh
        embedded broker): the consumer may still hold positions in the old log, so its
        partitions are read from the start. (The log-end offsets cannot decide this:
        Tansu answers ListOffsets with a wrong end.) Partitions whose stored offset is
        ahead of their position are moved there: the store already has those records.

        Raises
        ------
        kafka.errors.KafkaError, ConnectionError
            When the broker does not answer; ``changed`` stays set, so the caller
            retries after its next poll.
        """
        assigned = sorted(self.assigned)
        keys = {topic: describe(topic) for topic in sorted({tp.topic for tp in assigned})}
        next_offset: dict[tuple[str, int], int] = {}
        for key in keys.values():
            for partition, offset in stored_offsets(key).items():
                next_offset[(key, partition)] = offset
        for tp in assigned:
            self.last_seen.setdefault(tp, now)  # active until it proves idle
            previous = self.topic_keys.get(tp.topic)
            if previous is not None and previous != keys[tp.topic]:
                log.warning(
                    "topic_recreated",
                    extra={"fields": {"partition": f"{tp.topic}[{tp.partition}]"}},
                )
                consumer.seek_to_beginning(tp)
                self.max_event_ns.pop(tp, None)
                self.position[tp] = 0
                continue
            stored = next_offset.get((keys[tp.topic], tp.partition))
            position = consumer.position(tp)
            if stored is not None and position is not None and stored > position:
                consumer.seek(tp, stored)  # skip what the store already holds
                position = stored
            if position is not None:
                self.position[tp] = position
        self.topic_keys.update(keys)
        self.next_offset = next_offset
        self.changed = False

    def rewound(self, positions: Mapping[TopicPartition, int | None], now: float) -> None:
        """The consumer was moved back to ``positions`` (None: the log's start) to replay
        a failed batch: what the partitions delivered since counts for nothing, as in a
        restarted process, so a partition read ahead of its replay cannot let the
        watermark pass the readings it delivers again."""
        self.forget(positions)
        for tp, offset in positions.items():
            self.last_seen[tp] = now
            if offset is not None:
                self.position[tp] = offset

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self.last_seen.pop(tp, None)
            self.position.pop(tp, None)
            self.max_event_ns.pop(tp, None)


class RebalanceListener(ConsumerRebalanceListener):
    """Records assignment changes; commits finished work when partitions are revoked."""

    def __init__(self, tracker: PartitionTracker, consumer: KafkaConsumer) -> None:
        self.tracker = tracker
        self.consumer = consumer

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        revoked = set(revoked)
        pending = {tp: o for tp, o in self.tracker.pending_commit.items() if tp in revoked}
        if pending:
            from kafka.structs import OffsetAndMetadata

            # Asynchronous: this runs on kafka-python's network thread, which must not block.
            self.consumer.commit_async(
                {tp: OffsetAndMetadata(o, "", -1) for tp, o in pending.items()}
            )
            for tp in pending:
                self.tracker.pending_commit.pop(tp, None)
        self.tracker.assigned -= revoked
        self.tracker.forget(revoked)
        self.tracker.rebalancing_since = time.monotonic()
        log.info("partitions_revoked", extra={"fields": {"partitions": names(revoked)}})

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        assigned = set(assigned)
        self.tracker.assigned = assigned
        self.tracker.changed = True
        self.tracker.rebalancing_since = None
        self.tracker.assignments += 1
        log.info("partitions_assigned", extra={"fields": {"partitions": names(assigned)}})


def names(partitions: Iterable[TopicPartition]) -> list[str]:
    """``["topic[0]", ...]`` for logs."""
    return sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions)
