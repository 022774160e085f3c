"""``replay_flow``: backfill a data set into the readings topic, as a Prefect flow.

It wires :func:`pipeline.data.datasets.load_dataset` (:func:`flows.io_tasks.load_data`),
:func:`pipeline.kafka.clients.ensure_topics` and :func:`pipeline.kafka.replay.replay`, and records
what it sent as a table artifact (``roadcast-replay``). Loading is retried on transient
I/O errors; the replay itself is not: a retry would send every reading again. The
service would count them as duplicates and forecast nothing twice, but a backfill that
failed halfway is better re-run by a person who knows why it failed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prefect import flow, task
from prefect.cache_policies import NONE

from flows.artifacts import KEYS, publish_table
from flows.io_tasks import load_data
from models.panel import SensorPanel

if TYPE_CHECKING:
    from pipeline.settings import Settings


def replay_settings(bootstrap: str | None, topic: str | None) -> Settings:
    """The settings with ``bootstrap`` and ``topic`` (as the readings topic) checked."""
    from pipeline.settings import load_settings

    return load_settings(
        bootstrap_servers=bootstrap, **({} if topic is None else {"topic_readings": topic})
    )


@task(name="replay-readings", cache_policy=NONE)
def replay_readings(
    panel: SensorPanel,
    bootstrap: str | None,
    topic: str | None,
    speedup: float,
    limit: int | None,
) -> dict[str, Any]:
    """Send the panel's readings to Kafka; returns :meth:`ReplayStats.as_dict` + topic."""
    from pipeline.kafka.clients import close_producer, ensure_topics, make_producer
    from pipeline.kafka.replay import replay

    settings = replay_settings(bootstrap, topic)
    target = settings.topic_readings
    ensure_topics(settings, topics=[target])
    producer = make_producer(settings)
    try:
        stats = replay(panel, producer, target, speedup=speedup, limit=limit, progress=False)
    finally:
        close_producer(producer)
    return {"topic": target, "bootstrap": settings.bootstrap_servers, **stats.as_dict()}


@flow(name="roadcast-replay", log_prints=True)
def replay_flow(
    data: str = "los-loop",
    bootstrap: str | None = None,
    speedup: float = 0.0,
    limit: int | None = None,
    topic: str | None = None,
    adjacency: str | None = None,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Replay ``data`` into Kafka (the readings topic of the settings, or ``topic``).

    Parameters
    ----------
    data : a data set spec (``los-loop``, ``simulated:sensors=20,days=1``, ``csv:PATH``).
    bootstrap : ``HOST:PORT[,...]``; default ``ROADCAST_BOOTSTRAP_SERVERS``.
    speedup : 0 = as fast as possible; X = X times real time.
    limit : replay at most this many time steps.
    topic : default: the settings' readings topic.
    adjacency, data_dir : as for ``roadcast replay``.

    Returns the replay statistics (messages, steps, rate, first and last timestamps).
    """
    from pipeline.kafka.replay import check_replay

    replay_settings(bootstrap, topic)  # a bad topic or address fails before loading data
    panel = load_data(data, adjacency, data_dir)
    check_replay(panel, speedup, limit)
    stats = replay_readings(panel, bootstrap, topic, speedup, limit)
    publish_table(
        KEYS["replay"],
        [{"data": data, **stats}],
        description=f"Readings of {data} replayed into {stats['topic']}",
    )
    print(
        f"{stats['messages']:,} readings of {stats['sensors']} sensors over {stats['steps']} "
        f"steps -> {stats['topic']} ({stats['rate']:,.0f} msg/s)"
    )
    return stats
