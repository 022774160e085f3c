"""Operating ``roadcast serve`` under hostile conditions: what an operator does to a
running service's files and settings must neither stop it nor lose data silently.

- the store file deleted while the service writes to it: the service says so and goes
  on in a store at the same path (and keeps it locked), from the last committed offsets;
- the store file moved away and another put in its place: the moved file keeps its
  writes, the new one is not mixed with the old one's write-ahead log;
- a topic re-created while the store cannot take a write: counted with the next stored
  batch, the loop goes on.
"""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.kafka.clients import ensure_topics, make_producer
from pipeline.kafka.replay import replay
from pipeline.model_dir import load_bundles
from pipeline.service.config import ServiceConfig
from pipeline.service.loop import ForecastService
from pipeline.service.processor import PollReport
from pipeline.service.store import Store, StoreError
from pipeline.service.store_rows import Batch
from tests.service_support import REPO, make_world, service_thread
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

CONFIG = ServiceConfig(allowed_lateness="0min", durable=False, poll_timeout_ms=50)
STEPS = 8


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("bundles"), sensors=4)


def _produce(settings, panel) -> int:
    producer = make_producer(settings)
    try:
        return replay(panel, producer, settings.topic_readings, progress=False).messages
    finally:
        producer.close()


def _locked_by_another_process(path: Path) -> bool:
    """Whether another process is refused the store at ``path``."""
    code = (
        "import sys\nfrom pipeline.service.store import StoreLock, StoreError\n"
        "try:\n    StoreLock(sys.argv[1])\nexcept StoreError:\n    sys.exit(3)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO, check=False)
    return done.returncode == 3


@pytest.mark.parametrize("deleted", ["store.sqlite*", "store.sqlite"])
def test_a_store_deleted_while_serving_is_made_again_and_the_readings_after_are_kept(
    world, kafka_settings, tmp_path, caplog, deleted
):
    """``rm store.sqlite*``, or only the database (its write-ahead log left behind, which
    SQLite would read as the log of a new file there), while the service runs: SQLite
    would go on writing to the deleted file, every batch lost when the process ends,
    while ``/readyz`` said ok. ``/readyz`` names it; the next write notices, the service
    opens a store at the path again (locked, so a second service is still refused),
    rebuilds its state from it and replays from the last committed offsets: every later
    reading is in the new file."""
    path = tmp_path / "store.sqlite"
    settings = kafka_settings.model_copy(update={"store_path": path})
    ensure_topics(settings)
    live = world.live.slice(0, STEPS)
    service = ForecastService(settings, CONFIG, load_bundles(world.bundles))
    caplog.set_level(logging.ERROR, logger="roadcast.service")
    with service_thread(service):
        first = _produce(settings, live.slice(0, STEPS // 2))
        wait_until(lambda: service.counters["consumed"] >= first, what="the first half")
        for file in tmp_path.glob(deleted):
            file.unlink()
        ready, details = service.health.ready()
        assert not ready and "was deleted" in details["checks"]["store"]
        rest = _produce(settings, live.slice(STEPS // 2, STEPS))
        wait_until(lambda: service.counters["consumed"] >= first + rest, what="the second half")
        assert path.is_file(), "the service kept writing to the deleted store"
        assert _locked_by_another_process(path)
    assert "store_replaced" in caplog.text
    with Store(path, readonly=True) as store:
        assert store.counters()["valid"] == rest
        stored = store.readings_since(0)
    expected = {int(ts.value // 1_000_000) for ts in live.timestamps[STEPS // 2 :]}
    assert set(stored.ts_ms.tolist()) == expected


def test_a_store_moved_away_keeps_its_writes_and_a_file_put_in_its_place_is_untouched(tmp_path):
    """``mv store.sqlite elsewhere`` and another file put at the path while a store is
    open: a write is refused (it would go to the moved file), the moved file keeps every
    committed write when the store closes (they were in the log at the old path), and the
    log left at the path is not read as the new file's."""
    path, moved = tmp_path / "store.sqlite", tmp_path / "moved.sqlite"
    store = Store(path, exclusive=True, durable=False)
    store.write(Batch(counters={"valid": 3}))
    path.rename(moved)
    path.write_bytes(b"not a store " * 200)
    with pytest.raises(OSError, match="replaced by another file"):
        store.write(Batch(counters={"valid": 1}))
    store.close()
    with Store(moved, readonly=True) as kept:
        assert kept.counters() == {"valid": 3}
    with pytest.raises(StoreError, match="not a database"):
        Store(path, exclusive=True)
    assert path.read_bytes() == b"not a store " * 200


def test_a_topic_recreated_while_the_store_refuses_writes_is_counted_with_the_next_batch(
    world, kafka_settings, tmp_path, monkeypatch
):
    """The idle loop re-creates missing topics (a restarted broker) and counts them; a
    store that cannot take that write (locked by another program, its file gone) must
    not end the service: the count waits for the next stored batch."""
    settings = kafka_settings.model_copy(update={"store_path": tmp_path / "store.sqlite"})
    service = ForecastService(settings, CONFIG, load_bundles(world.bundles))
    try:
        write = service.store.write

        def locked(batch: Batch) -> None:
            raise sqlite3.OperationalError("database is locked")

        monkeypatch.setattr(service.store, "write", locked)
        service._check_topics()  # the topics do not exist yet: all four are created
        assert service.counters["topics_recreated"] == 4
        monkeypatch.setattr(service.store, "write", write)
        service._store(PollReport(), Batch())
        assert service.store.counters()["topics_recreated"] == 4
    finally:
        service.store.close()


def test_readiness_names_the_read_only_folder_and_only_while_the_store_needs_it(
    tmp_path, monkeypatch
):
    """A read-only folder made /readyz say the store file was not writable, while the
    service went on writing it (its -wal and -shm files already there)."""
    import os

    from pipeline.service.health import store_check

    path = tmp_path / "store.sqlite"
    real_access = os.access

    def folder_read_only(target, mode, **kwargs):
        if Path(target) == tmp_path and mode & os.W_OK:
            return False
        return real_access(target, mode, **kwargs)

    check = store_check(path, lambda: None)
    with Store(path, durable=False):  # open: its -wal and -shm files are there
        monkeypatch.setattr(os, "access", folder_read_only)
        assert check() is None
    for end in ("-wal", "-shm"):
        path.with_name(path.name + end).unlink(missing_ok=True)
    said = check()
    assert said is not None and said.startswith(f"the store's folder {tmp_path} is read-only")
