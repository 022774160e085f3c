"""Everything the service sends for one poll batch, and whether the broker took it all.

kafka-python reports a failed send on its future, not on ``flush()``; :class:`Outbox`
collects those failures so that the service commits a batch only when every forecast,
alert and dead letter of it was acknowledged (``flush`` raises :class:`PublishError`
otherwise, and the batch is replayed).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kafka import KafkaProducer

log = logging.getLogger("roadcast.outbox")


class PublishError(RuntimeError):
    """The broker did not acknowledge a batch's output; the batch will be replayed."""


def dead_letter_headers(
    reason: str, detail: str, topic: str, partition: int, offset: int
) -> list[tuple[str, bytes]]:
    """Kafka headers of a dead letter: why it failed and where it came from.

    ``error`` is the machine-readable reason (``bad_json``, ``unknown_sensor``...),
    ``error.message`` the human explanation, ``source.*`` the original position.
    """
    return [
        ("error", reason.encode()),
        ("error.message", detail[:1000].encode("utf-8", "replace")),
        ("source.topic", topic.encode()),
        ("source.partition", str(partition).encode()),
        ("source.offset", str(offset).encode()),
    ]


class Outbox:
    """Sends through one producer and remembers whether every send succeeded."""

    def __init__(self, producer: KafkaProducer) -> None:
        self.producer = producer
        self._failed: BaseException | None = None

    def _on_error(self, exc: BaseException) -> None:
        if self._failed is None:
            self._failed = exc

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Queue one message; raises :class:`PublishError` when it cannot even be queued."""
        from kafka.errors import KafkaError

        try:
            future = self.producer.send(topic, key=key, value=value, headers=headers)
        except KafkaError as exc:  # e.g. no metadata for the topic: the broker is away
            raise PublishError(f"could not send to {topic}: {exc}") from exc
        future.add_errback(self._on_error)

    def flush(self, timeout_s: float) -> None:
        """Wait until the broker acknowledged everything queued so far.

        Raises
        ------
        PublishError
            On a flush timeout or when any queued message failed.
        """
        from kafka.errors import KafkaError

        try:
            self.producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            raise PublishError(f"broker did not acknowledge the batch: {exc}") from exc
        if self._failed is not None:
            failed, self._failed = self._failed, None
            raise PublishError(f"a send of this batch failed: {failed!r}")

    def close(self, timeout_s: float) -> None:
        """Close the producer; a producer broken by a lost broker may fail to: ignore it."""
        try:
            self.producer.close(timeout=timeout_s)
        except Exception as exc:  # replacing a broken producer must not fail
            log.warning("producer_close_failed", extra={"fields": {"error": repr(exc)}})
