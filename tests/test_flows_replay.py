"""``replay_flow`` into the session broker: every observed reading arrives, the statistics
come back, and the ``roadcast-replay`` artifact records them."""

from __future__ import annotations

import json

import pytest

from flows.artifacts import KEYS
from pipeline.data.datasets import load_dataset
from pipeline.kafka.schema import decode_readings
from tests.service_support import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DATA = "simulated:sensors=4,hours=2,seed=2"


def test_replay_flow_backfills_the_topic(prefect_harness, kafka_settings):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.replay_flow import replay_flow

    topic = kafka_settings.topic_readings
    stats = replay_flow(data=DATA, bootstrap=kafka_settings.bootstrap_servers, topic=topic)
    panel = load_dataset(DATA)
    assert stats["topic"] == topic and stats["steps"] == panel.n_time
    assert stats["messages"] == int(panel.mask.sum())
    records = read_topic(kafka_settings, topic)
    readings = [r for record in records for r in decode_readings(record.value)]
    assert len(readings) == stats["messages"]
    assert {r.sensor for r in readings} == set(panel.sensor_ids)
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[KEYS["replay"]]))
        )
    latest = max(found, key=lambda a: a.created)
    rows = latest.data if isinstance(latest.data, list) else json.loads(latest.data)
    assert rows[0]["messages"] == stats["messages"] and rows[0]["data"] == DATA


def test_replay_flow_fails_with_the_fix_for_an_unreachable_broker(prefect_harness):
    from flows.replay_flow import replay_flow
    from pipeline.kafka.clients import KafkaUnavailable

    with pytest.raises(KafkaUnavailable, match="ROADCAST_BOOTSTRAP_SERVERS"):
        replay_flow(data=DATA, bootstrap="127.0.0.1:1", limit=2)
