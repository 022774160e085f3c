"""``roadcast tail TOPIC``: print a topic's records, one clear line each
(:mod:`flows.tail` says what each record is)."""

from __future__ import annotations

from typing import Any

import typer

BACKLOG_WAIT_S = 30.0  # how long --timeout waits, past S, for records known to be there
# Following without --timeout: after this many quiet seconds, whether the broker still
# answers (a request of at most BROKER_CHECK_TIMEOUT_MS) is checked, and said when not.
BROKER_CHECK_S = 30.0
BROKER_CHECK_TIMEOUT_MS = 10_000


class BrokerWatch:
    """While ``roadcast tail`` follows a quiet topic: one line on standard error when the
    broker stops answering (the client retries without a word), one when it answers, and
    one when the topic was deleted (:meth:`went_back`)."""

    def __init__(self, consumer: Any, partitions: list[Any], servers: str) -> None:
        self.consumer, self.partitions, self.servers = consumer, partitions, servers
        self.down_since: float | None = None

    def check(self) -> None:
        """Ask the broker for the partitions' ends, within the deadline."""
        import time
        from contextlib import suppress

        from kafka.errors import KafkaError

        try:
            ends = self.consumer.end_offsets(self.partitions, timeout_ms=BROKER_CHECK_TIMEOUT_MS)
        except KafkaError as exc:
            if self.down_since is None:
                self.down_since = time.monotonic()
                typer.echo(
                    f"warning: the broker at {self.servers} did not answer within "
                    f"{BROKER_CHECK_TIMEOUT_MS / 1000:g} s ({type(exc).__name__}); tail goes "
                    "on when it does (Ctrl-C to stop)",
                    err=True,
                )
            return
        self.answered()
        with suppress(KafkaError):  # no position within the deadline: the next check retries
            self.went_back(ends)

    def went_back(self, ends: dict[Any, int]) -> None:
        """Say in one line when a partition's log now ends before what tail has read:
        the topic was deleted (a deleted topic's partitions end at 0 on Tansu, while its
        metadata lingers in the client for minutes), deleted and created again, or the
        broker restarted empty. Tail then goes on, reading those partitions from their
        start, as ``kafka-console-consumer`` keeps running when its topic goes away: an
        operator following a topic through a broker's maintenance expects the follow to
        survive it, and Ctrl-C is theirs to press."""
        back = {}
        for tp, end in ends.items():
            position = self.consumer.position(tp, timeout_ms=BROKER_CHECK_TIMEOUT_MS)
            if position is not None and end < position:
                back[tp] = (end, position)
        if not back:
            return
        shown = ", ".join(f"{tp.partition} ends at {e}, read to {p}" for tp, (e, p) in back.items())
        typer.echo(
            f"warning: topic {self.partitions[0].topic!r} went back on {self.servers} ({shown}): "
            "it was deleted, or deleted and created again, or the broker restarted empty; "
            "tail goes on from the partitions' start (Ctrl-C to stop)",
            err=True,
        )
        self.consumer.seek_to_beginning(*back)

    def answered(self) -> None:
        """The broker answered (a check, or records): say so if it did not before."""
        import time

        if self.down_since is not None:
            away = time.monotonic() - self.down_since
            self.down_since = None
            typer.echo(f"the broker at {self.servers} answers again (after {away:.0f} s)", err=True)


def tail(
    topic: str = typer.Argument(
        ..., help="A topic name, or a role: readings, forecasts, alerts, dlq."
    ),
    bootstrap: str = typer.Option(
        None, "--bootstrap", help="HOST:PORT[,...] (default: ROADCAST_BOOTSTRAP_SERVERS)."
    ),
    from_beginning: bool = typer.Option(
        False, "--from-beginning", help="Start at the oldest record (default: new ones only)."
    ),
    limit: int = typer.Option(None, "--max", min=0, help="Stop after N records."),
    timeout: float = typer.Option(
        None,
        "--timeout",
        min=0.0,
        help="Stop after S seconds without a record once every partition is read to its "
        "end (default: Ctrl-C).",
    ),
) -> None:
    """Print the records of a topic, one clear line each (readings, forecasts v1/v2, alerts,
    dead letters). Reads without a consumer group: nothing is committed. Without --timeout
    it follows until Ctrl-C, saying on standard error when the broker stops answering."""
    import time

    from kafka import TopicPartition
    from kafka.errors import KafkaError

    from flows.cli.options import check_finite, option_settings
    from flows.tail import Progress, describe
    from pipeline.kafka.clients import make_consumer
    from pipeline.kafka.unreadable import UnreadableRecord, poll_readable

    check_finite("--timeout", timeout)
    settings = option_settings(bootstrap_servers=bootstrap)
    name = settings.topics.get(topic, topic)
    role = next((r for r, t in settings.topics.items() if t == name), None)
    consumer = make_consumer(settings, group_id="")
    seen = 0
    try:
        try:
            partitions = consumer.partitions_for_topic(name)
        except KafkaError as exc:
            raise ValueError(f"cannot read topic {name!r}: {exc}") from None
        if not partitions:
            known = ", ".join(sorted(consumer.topics())) or "none"
            raise ValueError(f"no topic {name!r} on {settings.bootstrap_servers} (topics: {known})")
        tps = [TopicPartition(name, p) for p in sorted(partitions)]
        consumer.assign(tps)
        progress = Progress(consumer, tps)
        if from_beginning:
            consumer.seek_to_beginning()
        else:
            consumer.seek_to_end()
            # The end a broker lists may lie inside its last record batch (Tansu's does):
            # the first fetch's high watermark is where new records start.
            waited = time.monotonic()
            while not progress.fetched():
                poll_readable(consumer, 200)  # records before the end: not new
                if time.monotonic() - waited > BACKLOG_WAIT_S:
                    raise ValueError(
                        f"{name}: no fetch answered in {BACKLOG_WAIT_S:.0f} s; is the broker "
                        f"at {settings.bootstrap_servers} still up?"
                    )
            for tp in tps:
                consumer.seek(tp, consumer.highwater(tp))
        watch = BrokerWatch(consumer, tps, settings.bootstrap_servers)
        quiet_since = checked = time.monotonic()
        while limit is None or seen < limit:
            batches = poll_readable(consumer, 500)
            if not batches:
                now = time.monotonic()
                quiet = now - quiet_since
                if timeout is None and now - max(quiet_since, checked) > BROKER_CHECK_S:
                    watch.check()
                    checked = time.monotonic()
                if timeout is None or quiet <= timeout:
                    continue
                if progress.caught_up():
                    break
                if quiet > timeout + BACKLOG_WAIT_S:
                    raise ValueError(
                        f"{name}: records left unread after {quiet:.0f} s without a fetch; "
                        f"is the broker at {settings.bootstrap_servers} still up?"
                    )
                continue
            quiet_since = time.monotonic()
            watch.answered()
            for tp, records in sorted(batches.items(), key=lambda kv: kv[0].partition):
                for record in records:
                    if isinstance(record, UnreadableRecord):
                        line = f"unreadable: {record.error}"
                    else:
                        headers = [(k, bytes(v or b"")) for k, v in record.headers or ()]
                        line = describe(role, record.value, headers)
                    typer.echo(f"{tp.partition}@{record.offset} {line}")
                    seen += 1
                    if limit is not None and seen >= limit:
                        return
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
