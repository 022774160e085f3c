"""A stop during the group join (SIGTERM while ``roadcast serve`` starts) finishes the
join before it leaves the group: a member that leaves half-joined jams the embedded
broker's group, and the group's next service never becomes ready."""

from __future__ import annotations

import logging
import threading

import pytest
from kafka.structs import MemberState

from pipeline.kafka.clients import ensure_topics
from pipeline.service.joining import CANCEL_WAIT_S, GroupJoin
from pipeline.service.partitions import PartitionTracker
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

# A jammed group stays so until the broker restarts; a free one joins in about 3 s.
FREE_GROUP_S = 120.0


def _join_in_flight(joining: GroupJoin) -> bool:
    """The joining consumer has sent its JoinGroup and waits for the answer."""
    consumer = joining._consumer
    return consumer is not None and consumer._coordinator.state is MemberState.REBALANCING


def test_a_stop_during_the_join_finishes_it_and_leaves_the_group_free(kafka_settings, caplog):
    caplog.set_level(logging.INFO, logger="roadcast")
    ensure_topics(kafka_settings)
    stop = threading.Event()
    first = GroupJoin(kafka_settings, PartitionTracker(idle_s=60), 500, stop)
    wait_until(lambda: _join_in_flight(first), what="the first member's JoinGroup", poll_s=0.01)
    stop.set()  # SIGTERM: the service's loop returns before it takes the consumer over
    assert not first.joined()
    first.cancel()  # ForecastService.run's cleanup: it does not wait
    first.cancel(wait_s=CANCEL_WAIT_S)  # serve()'s cleanup: waits for the group to be left

    second = GroupJoin(kafka_settings, PartitionTracker(idle_s=60), 500, threading.Event())
    done = threading.Event()
    threading.Thread(target=lambda: (second.result()[0].close(), done.set()), daemon=True).start()
    assert done.wait(FREE_GROUP_S), f"the next member waited over {FREE_GROUP_S:.0f} s"
    assert "waiting_for_group" in [r.getMessage() for r in caplog.records]
