"""How far the service has got in each partition of the readings topic.

:class:`PartitionTracker` holds, per assigned partition:

* the **next stored offset**: the store records it in the same transaction as a
  batch's data, so records below it were fully processed before a crash and are
  skipped when Kafka redelivers them (exact counters, no re-forecast). Stored offsets
  are keyed ``topic@<topic id>``: a topic that was deleted and created again (a fresh
  embedded broker) has another id, so old offsets never hide its new records;
* the **position** (next offset this consumer will receive) and the **newest event
  time** seen, which give the event-time cap of the watermark
  (:meth:`PartitionTracker.limit_ns`): the slowest partition that still has a
  backlog holds the watermark back; a partition that has caught up does not;
* offsets processed but **not yet committed** (a failed commit): committed again on
  the next batch or when the partition is revoked.

kafka-python 3 runs rebalance callbacks on its network thread, where blocking calls
are forbidden; :class:`RebalanceListener` therefore only records the change (and
sends an asynchronous commit on revocation), and the service adopts a new assignment
in its own loop (:meth:`PartitionTracker.adopt`).
"""

from __future__ import annotations

import logging
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

    def __init__(self) -> None:
        self.assigned: set[TopicPartition] = set()
        self.changed = False
        self.topic_keys: dict[str, str] = {}
        self.next_offset: dict[tuple[str, int], int] = {}
        self.position: dict[TopicPartition, int] = {}
        self.max_event_ns: dict[TopicPartition, int] = {}
        self.pending_commit: dict[TopicPartition, int] = {}

    def key(self, tp: TopicPartition) -> tuple[str, int]:
        """The store's key of a partition: ``(topic@<id>, partition)``."""
        return (self.topic_keys.get(tp.topic, tp.topic), tp.partition)

    def fresh(self, tp: TopicPartition, records: Sequence[Any]) -> list[Any]:
        """The records of ``tp`` the store does not hold yet."""
        start = self.next_offset.get(self.key(tp), -1)
        return [r for r in records if r.offset >= start] if start > 0 else list(records)

    def observe(self, tp: TopicPartition, next_offset: int, max_event_ns: int | None) -> None:
        """Record that ``tp`` was read up to ``next_offset`` (and its newest event time)."""
        self.position[tp] = next_offset
        if max_event_ns is not None:
            self.max_event_ns[tp] = max(self.max_event_ns.get(tp, NO_EVENT_TIME), max_event_ns)

    def stored(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """The store now holds everything below ``offsets``."""
        self.next_offset.update(offsets)

    def limit_ns(self, highwater: Callable[[TopicPartition], int | None]) -> int | None:
        """Event-time cap for the watermark: the newest event time of the slowest
        partition with a backlog; None when every partition has caught up."""
        limit: int | None = None
        for tp in self.assigned:
            hw, pos = highwater(tp), self.position.get(tp)
            if hw is not None and pos is not None and pos >= hw:
                continue  # caught up: new records will be newer than what we have
            newest = self.max_event_ns.get(tp, NO_EVENT_TIME)
            limit = newest if limit is None else min(limit, newest)
        return limit

    def adopt(
        self,
        consumer: KafkaConsumer,
        describe: Callable[[str], str],
        stored_offsets: Callable[[str], dict[int, int]],
    ) -> None:
        """Take over a new assignment (service thread): topic ids, stored offsets,
        positions; partitions whose stored offset is ahead are moved there."""
        self.changed = False
        self.next_offset = {}
        for topic in sorted({tp.topic for tp in self.assigned}):
            self.topic_keys[topic] = describe(topic)
            for partition, offset in stored_offsets(self.topic_keys[topic]).items():
                self.next_offset[(self.topic_keys[topic], partition)] = offset
        for tp in self.assigned:
            position = consumer.position(tp)
            stored = self.next_offset.get(self.key(tp))
            if stored is not None and position is not None and stored > position:
                consumer.seek(tp, stored)  # skip what the store already holds
                position = stored
            if position is not None:
                self.position[tp] = position

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
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
        log.info("partitions_revoked", extra={"fields": {"partitions": names(revoked)}})

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        assigned = set(assigned)
        self.tracker.assigned = assigned
        self.tracker.changed = True
        log.info("partitions_assigned", extra={"fields": {"partitions": names(assigned)}})


def names(partitions: Iterable[TopicPartition]) -> list[str]:
    """``["topic[0]", ...]`` for logs."""
    return sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions)
