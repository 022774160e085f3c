"""Everything the service sends for one poll batch, and whether the broker took it all.

kafka-python reports a failed send on its future, not on ``flush()``; :class:`Outbox`
collects those failures so that the service commits a batch only when every forecast,
alert and dead letter of it was acknowledged (``flush`` raises :class:`PublishError`
otherwise, and the batch is replayed).

Keyed messages get their partition from the Java client's rule (murmur2 of the key,
modulo the partition count: what kafka-python's default partitioner does), computed
once per key and topic instead of once per message: the service sends the same 207
keys every tick, and hashing them in pure Python was a sixth of the send cost. The
partition list is re-read at every batch (:meth:`Outbox.refresh`), so a topic that
gains partitions is picked up.

:meth:`Outbox.send_many` queues a list of keyed records (a tick's forecasts) through
:class:`pipeline.kafka.record_batches.BulkAppender` when the installed kafka-python supports
it (one bulk write per partition, about 1 us a record instead of 20-35 us through
``send()``), and through ``send()`` otherwise. Either way the records end up in the
same batches with the same bytes, and :meth:`Outbox.flush` checks every future.

Dead letters go through :meth:`Outbox.send_dead_letter`, which keeps each one within the
producer's ``max_request_size`` (:func:`pipeline.kafka.dead_letters.fit_dead_letter`) and
remembers where it came from: when the broker refuses a dead letter itself (too large,
invalid record), :class:`PublishError` names its source records so that the replay sends
them minimal, and then not at all (reported), instead of failing the same batch forever.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pipeline.kafka.dead_letters import Headers, fit_dead_letter

if TYPE_CHECKING:
    from kafka import KafkaProducer

log = logging.getLogger("roadcast.outbox")

# Where a dead letter came from: (topic, partition, offset) of the original record.
Source = tuple[str, int, int]


class PublishError(RuntimeError):
    """The broker did not acknowledge a batch's output; the batch will be replayed.

    ``unsendable`` lists the sources of dead letters the broker refused for what they
    are (too large, invalid), when those were the batch's only failures.
    """

    def __init__(self, message: str, unsendable: Sequence[Source] = ()) -> None:
        super().__init__(message)
        self.unsendable = tuple(unsendable)


def _record_errors() -> tuple[type[Exception], ...]:
    """Errors about one record rather than the broker: retrying the same bytes fails again."""
    from kafka import errors

    return (
        errors.MessageSizeTooLargeError,
        errors.RecordListTooLargeError,
        errors.InvalidRecordError,
        errors.CorruptRecordError,
        errors.InvalidTimestampError,
    )


def _picker(indices: list[int]) -> Callable[[Sequence[Any]], Sequence[Any]]:
    """A function picking ``indices`` out of a sequence, as a sequence (itemgetter is the
    fast way, but returns a bare item for a single index)."""
    from operator import itemgetter

    if len(indices) == 1:
        only = indices[0]
        return lambda items: (items[only],)
    return itemgetter(*indices)


class Outbox:
    """Sends through one producer and remembers whether every send succeeded.

    Parameters
    ----------
    producer : the producer (bytes keys and values, no serializers).
    bulk : use the bulk path of :meth:`send_many` when kafka-python supports it.
    max_message_bytes : the largest record to send (default: the producer's
        ``max_request_size``); dead letters are cut to fit it.
    """

    def __init__(
        self, producer: KafkaProducer, *, bulk: bool = True, max_message_bytes: int | None = None
    ) -> None:
        from pipeline.kafka.record_batches import BulkAppender, supported

        self.producer = producer
        self.max_message_bytes = int(max_message_bytes or producer.config["max_request_size"])
        self._futures: list[Any] = []  # of this batch, checked after the flush
        self._letters: list[tuple[Any, Source]] = []  # dead letters of this batch
        self._partitions: dict[str, list[int]] = {}
        self._keyed: dict[str, tuple[int, dict[bytes, int]]] = {}  # (partition count, cache)
        self._tps: dict[tuple[str, int], Any] = {}  # TopicPartition objects, made once
        self._layouts: dict[tuple[str, int, tuple[bytes, ...]], list[tuple[int, Any]]] = {}
        self.bulk = BulkAppender(producer) if bulk and supported(producer) else None

    def refresh(self) -> None:
        """Forget the partition lists (re-read on the next send; keys kept if unchanged)."""
        self._partitions.clear()

    def _partition(self, topic: str, key: bytes) -> int:
        from kafka.errors import KafkaError
        from kafka.partitioner.default import murmur2

        partitions = self._partitions.get(topic)
        if partitions is None:
            try:
                partitions = sorted(self.producer.partitions_for(topic))
            except KafkaError as exc:  # no metadata: the topic (or the broker) is missing
                raise PublishError(f"no partitions for {topic}: {exc}") from exc
            if not partitions:
                raise PublishError(f"topic {topic} has no partitions; is the broker up?")
            known = self._keyed.get(topic)
            if known is None or known[0] != len(partitions):  # keys map modulo the count
                self._keyed[topic] = (len(partitions), {})
            self._partitions[topic] = partitions
        cache = self._keyed[topic][1]
        partition = cache.get(key)
        if partition is None:
            partition = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
            cache[key] = partition
        return partition

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Queue one message; raises :class:`PublishError` when it cannot even be queued."""
        from kafka.errors import KafkaError

        partition = None if key is None else self._partition(topic, key)
        try:
            future = self.producer.send(
                topic, key=key, value=value, headers=headers, partition=partition
            )
        except KafkaError as exc:  # e.g. no metadata for the topic: the broker is away
            raise PublishError(f"could not send to {topic}: {exc}") from exc
        self._futures.append(future)

    def send_dead_letter(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        source: Source,
        *,
        minimal: bool = False,
    ) -> bool:
        """Queue a dead letter of the record at ``source``, cut to fit if need be.

        Returns False, and logs it, when the producer refuses even its minimal form;
        raises :class:`PublishError` when the broker is away.
        """
        from kafka.errors import KafkaError

        letter = fit_dead_letter(key, value, headers, self.max_message_bytes, minimal=minimal)
        about_the_record: tuple[type[Exception], ...] = (*_record_errors(), ValueError, TypeError)
        try:
            partition = None if letter.key is None else self._partition(topic, letter.key)
            future = self.producer.send(
                topic, key=letter.key, value=letter.value, headers=letter.headers,
                partition=partition,
            )  # fmt: skip
        except about_the_record as exc:
            if not minimal:
                return self.send_dead_letter(topic, key, value, headers, source, minimal=True)
            report_unsendable(source, value, exc)
            return False
        except KafkaError as exc:
            raise PublishError(f"could not send to {topic}: {exc}") from exc
        self._futures.append(future)
        self._letters.append((future, source))
        return True

    def send_many(self, topic: str, messages: Sequence[tuple[bytes, bytes]]) -> None:
        """Queue keyed records (non-empty bytes keys and values), in order per partition.

        Raises :class:`PublishError` when they cannot even be queued.
        """
        if self.bulk is None:
            for key, value in messages:
                self.send(topic, key, value)
            return
        from kafka.errors import KafkaError
        from kafka.structs import TopicPartition

        if not messages:
            return
        self._partition(topic, messages[0][0])  # metadata first: raises when it is missing
        for partition, pick in self._layout(topic, messages):
            tp = self._tps.get((topic, partition))
            if tp is None:
                tp = self._tps[(topic, partition)] = TopicPartition(topic, partition)
            try:
                self._futures.extend(self.bulk.append(tp, pick(messages)))
            except KafkaError as exc:  # e.g. the producer was closed under us
                raise PublishError(f"could not queue records for {topic}: {exc}") from exc

    def _layout(self, topic: str, messages: Sequence[tuple[bytes, bytes]]) -> list[tuple[int, Any]]:
        """``(partition, picker of its messages)`` for a sequence of keys, cached: the
        service sends the same sensors in the same order every tick."""
        keys = tuple(m[0] for m in messages)
        cache_key = (topic, len(self._partitions[topic]), keys)
        layout = self._layouts.get(cache_key)
        if layout is None:
            indices: dict[int, list[int]] = {}
            for i, key in enumerate(keys):
                indices.setdefault(self._partition(topic, key), []).append(i)
            layout = [(p, _picker(idx)) for p, idx in indices.items()]
            if len(self._layouts) >= 256:  # bounded: key sets that keep changing
                self._layouts.clear()
            self._layouts[cache_key] = layout
        return layout

    def flush(self, timeout_s: float) -> None:
        """Wait until the broker acknowledged everything queued so far.

        Raises
        ------
        PublishError
            On a flush timeout or when any queued message failed.
        """
        from kafka.errors import KafkaError

        futures, self._futures = self._futures, []
        letters, self._letters = self._letters, []
        try:
            self.producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            raise PublishError(f"broker did not acknowledge the batch: {exc}") from exc
        # Checking the futures once here is cheaper than a callback on each of them. The
        # bulk path returns each batch's future once per bulk write: check each one once.
        failed = [f for f in {id(f): f for f in futures}.values() if not f.succeeded()]
        if failed:
            reason = failed[0].exception or "not acknowledged"
            refused = {
                id(f): source
                for f, source in letters
                if not f.succeeded() and isinstance(f.exception, _record_errors())
            }
            unsendable = list(refused.values()) if len(refused) == len(failed) else []
            raise PublishError(f"{len(failed)} sends of this batch failed: {reason!r}", unsendable)

    def abort(self) -> None:
        """Close the producer, dropping what it has not sent yet (a failed batch's output)."""
        self._futures.clear()
        self._letters.clear()
        self.close(0.0)

    def close(self, timeout_s: float) -> None:
        """Close the producer; a producer broken by a lost broker may fail to: ignore it."""
        try:
            self.producer.close(timeout=timeout_s)
        except Exception as exc:  # replacing a broken producer must not fail
            log.warning("producer_close_failed", extra={"fields": {"error": repr(exc)}})
            # kafka-python 3.0's close() raises from its flush() before it stops the sender
            # thread, so the producer would linger and raise again from __del__. Finish
            # what close() would have done: abort the unsent batches (the caller replays
            # them from the store) and mark it closed.
            sender = getattr(self.producer, "_sender", None)
            if sender is not None:
                sender.force_close()
            self.producer._closed = True


def report_unsendable(source: Source, value: bytes | None, error: object) -> None:
    """Log a dead letter that could not be sent at all: where its original is, and its hash."""
    import hashlib

    topic, partition, offset = source
    fields = {
        "source_topic": topic, "source_partition": partition, "source_offset": offset,
        "size": None if value is None else len(value),
        "sha256": None if value is None else hashlib.sha256(value).hexdigest(),
        "error": repr(error),
    }  # fmt: skip
    log.error("dead_letter_unsendable", extra={"fields": fields})
