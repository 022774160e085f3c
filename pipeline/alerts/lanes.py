"""One receiver's lane of alert delivery: its queue, its thread, its retries.

A :class:`Lane` takes the alerts of ``roadcast.alerts`` in offset order and hands them to
its receiver in batches of at most ``receiver.max_batch``. What comes of a request
(:class:`pipeline.alerts.receivers.Outcome`):

* ``retry`` (5xx, 408, 429, timeout, connection error) and ``blocked`` (401, 403, 404, a
  redirect: the receiver's address or credentials are wrong) are retried with
  exponential backoff and full jitter (:meth:`DeliveryConfig.backoff_s`) until the
  receiver takes the request, the partitions are reassigned or delivery stops. A
  ``blocked`` receiver is logged once with its reason (``alert_delivery_blocked``), not
  at every retry; ``alert_delivery_unblocked`` when it answers again.
* ``rejected`` (400, 413, 422: the request itself is refused): a batch of several alerts
  is halved and the halves sent in turn, so that a request too large for a proxy passes
  in smaller ones and an alert the receiver refuses is isolated. An alert refused alone
  is given up, logged once with the receiver's reason (``alert_delivery_rejected``).

Each alert is then reported ``done`` to :class:`pipeline.alerts.delivery.AlertDelivery`,
which commits an offset once every lane has reported it. A stop or a reassignment
leaves the rest not done: it is delivered again from the committed offset. Between
batches the lane lets its receiver re-send what it must (Alertmanager: the firing
alerts).
"""

from __future__ import annotations

import logging
import random
import threading
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.alerts.receivers import Outcome, Pending, Receiver, halving

if TYPE_CHECKING:
    from kafka import TopicPartition

log = logging.getLogger("roadcast.alerts.delivery")


class DeliveryError(ValueError):
    """Delivery cannot be set up as configured; the message names the setting."""


@dataclass(frozen=True)
class DeliveryConfig:
    """How delivery retries and paces itself (defaults in ``docs/decisions.md``).

    backoff_initial_s : the first retry waits up to this long.
    backoff_max_s : the longest wait between two attempts (and the most a
        ``Retry-After`` is honoured).
    max_backlog : alerts a receiver may have queued before the consumer pauses.
    poll_timeout_ms : the longest the consumer waits for new alerts.
    stats_every_s : how often the counters are logged.
    broker_check_s : how often the broker is asked whether it answers (one line when it
        stops, one when it is back).
    """

    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    max_backlog: int = 10_000
    poll_timeout_ms: int = 500
    stats_every_s: float = 60.0
    broker_check_s: float = 10.0

    def __post_init__(self) -> None:
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise DeliveryError("need 0 < backoff_initial_s <= backoff_max_s")
        if (
            min(self.max_backlog, self.poll_timeout_ms) < 1
            or min(self.stats_every_s, self.broker_check_s) <= 0
        ):
            raise DeliveryError(
                "max_backlog, poll_timeout_ms, stats_every_s and broker_check_s must be > 0"
            )

    def backoff_s(self, attempt: int, rng: random.Random) -> float:
        """The wait before retry ``attempt`` (1, 2, ...): uniform in [0, min(max, initial
        * 2^(attempt - 1))] ("full jitter")."""
        ceiling = min(self.backoff_max_s, self.backoff_initial_s * 2.0 ** min(attempt - 1, 60))
        return rng.uniform(0.0, ceiling)


@dataclass(frozen=True)
class Item:
    """One record for one receiver; ``generation`` ties it to a partition assignment."""

    generation: int
    tp: TopicPartition
    offset: int
    pending: Pending


Done = Callable[[Item], None]


class Lane:
    """One receiver's queue and thread: in order, retried until accepted or rejected
    (see the module docstring)."""

    def __init__(
        self,
        receiver: Receiver,
        config: DeliveryConfig,
        done: Done,
        stop: threading.Event,
        seed: int | None = None,
    ) -> None:
        self.receiver = receiver
        self.config = config
        self.counters: Counter[str] = Counter()
        self._done = done
        self._stop = stop
        receiver.abort_on(stop)  # a stop cuts the request in flight
        self._rng = random.Random(seed)
        self._cond = threading.Condition()
        self._queue: deque[Item] = deque()
        self._generation = 0
        self._restore: tuple[list[Pending], Sequence[str]] | None = None
        self._in_flight = 0
        self._blocked: int | None = None  # the status of a blocked receiver, once logged
        self.thread = threading.Thread(
            target=self._run, name=f"roadcast-alerts {receiver.name}", daemon=True
        )

    def put(self, items: Sequence[Item]) -> None:
        with self._cond:
            self._queue.extend(items)
            self._cond.notify()

    def reset(self, generation: int, firing: list[Pending], resolved: Sequence[str] = ()) -> None:
        """Drop the queue (a new assignment); start again from ``firing`` and the episodes
        ``resolved`` before it."""
        with self._cond:
            self._queue.clear()
            self._generation = generation
            self._restore = (firing, resolved)
            self._cond.notify()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def backlog(self) -> int:
        """Alerts queued or in flight."""
        return len(self._queue) + self._in_flight

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                if not self._queue and self._restore is None:
                    self._cond.wait(timeout=min(1.0, self.receiver.due()))
                if self._restore is not None:  # before any item of the new assignment
                    self.receiver.restore(*self._restore)
                    self._restore = None
                batch: list[Item] = []
                while self._queue and len(batch) < self.receiver.max_batch:
                    batch.append(self._queue.popleft())
                self._in_flight = len(batch)
                generation = self._generation
            if self._stop.is_set():
                break
            if self.receiver.due() <= 0:
                self._resend()
            if batch:
                self._deliver(batch, generation)
            self._in_flight = 0

    def _deliver(self, batch: list[Item], generation: int) -> None:
        """Deliver ``batch`` in order, halving any part the receiver rejects."""
        for part, outcome in halving(batch, lambda part: self._send(part, generation)):
            if outcome is None:
                return  # not done: delivered again from the committed offset
            self._finish(part, outcome)

    def _send(self, part: list[Item], generation: int) -> Outcome | None:
        """Send ``part`` until it is accepted or rejected; None on a stop or reassignment."""
        name = self.receiver.name
        attempt = 0
        while True:
            try:
                outcome = self.receiver.deliver([item.pending for item in part])
            except Exception as exc:  # a bug must not stop the lane: refuse these, go on
                if len(part) == 1:  # a batch is halved down to the alert that fails
                    log.exception("alert_delivery_failed", extra={"fields": {"receiver": name}})
                outcome = Outcome("rejected", f"{type(exc).__name__}: {exc}")
            if outcome.kind in ("accepted", "rejected"):
                if outcome.status is not None:  # the receiver answered (not a bug of ours)
                    self._unblock()
                return outcome
            if self._stop.is_set():
                return None  # the stop cut the request off: nothing to report
            attempt += 1
            self.counters["retries"] += 1
            wait = self.config.backoff_s(attempt, self._rng)
            if outcome.retry_after_s is not None:
                wait = max(wait, min(outcome.retry_after_s, self.config.backoff_max_s))
            if outcome.kind == "blocked":
                self._block(outcome, len(part))
            else:
                log.warning(
                    "alert_delivery_retry",
                    extra={
                        "fields": {
                            "receiver": name,
                            "attempt": attempt,
                            "error": outcome.detail,
                            "retry_in_s": round(wait, 2),
                            "alerts": len(part),
                        }
                    },
                )
            with self._cond:
                self._cond.wait_for(
                    lambda: self._stop.is_set() or self._generation != generation, timeout=wait
                )
                if self._stop.is_set() or self._generation != generation:
                    return None

    def _finish(self, part: list[Item], outcome: Outcome) -> None:
        """Count ``part`` delivered or given up (logged), and report it done."""
        if outcome.kind == "accepted":
            self.counters["delivered"] += len(part)
        else:
            self.counters["rejected"] += len(part)
            log.warning(
                "alert_delivery_rejected",
                extra={
                    "fields": {
                        "receiver": self.receiver.name,
                        "status": outcome.status,
                        "reason": outcome.detail,
                        "alerts": [item.pending.message.alert_id for item in part][:20],
                        "count": len(part),
                    }
                },
            )
        for item in part:
            self._done(item)
        self._in_flight = max(0, self._in_flight - len(part))

    def _block(self, outcome: Outcome, alerts: int) -> None:
        """Log once that the receiver refuses every request (again when its status changes)."""
        if self._blocked == outcome.status:
            return
        self._blocked = outcome.status
        log.warning(
            "alert_delivery_blocked",
            extra={
                "fields": {
                    "receiver": self.receiver.name,
                    "status": outcome.status,
                    "reason": outcome.detail,
                    "alerts": alerts,
                    "action": "retried with backoff until the receiver takes alerts again; "
                    "check its URL and credentials",
                }
            },
        )

    def _unblock(self) -> None:
        if self._blocked is not None:
            self._blocked = None
            log.info("alert_delivery_unblocked", extra={"fields": {"receiver": self.receiver.name}})

    def _resend(self) -> None:
        try:
            outcome: Outcome | None = self.receiver.resend()
        except Exception as exc:
            log.exception("alert_resend_failed", extra={"fields": {"receiver": self.receiver.name}})
            outcome = Outcome("retry", f"{type(exc).__name__}: {exc}")
        if outcome is None or (outcome.kind != "accepted" and self._stop.is_set()):
            return  # nothing to re-send, or the stop cut the request off
        if outcome.kind == "accepted":
            self._unblock()
            self.counters["resends"] += 1
        elif outcome.kind == "blocked":
            self.counters["resend_failures"] += 1
            self._block(outcome, 0)
        else:
            self.counters["resend_failures"] += 1
            log.warning(
                "alert_resend_failed",
                extra={"fields": {"receiver": self.receiver.name, "error": outcome.detail}},
            )
