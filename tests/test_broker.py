"""The embedded broker and the client factories, through the real Kafka protocol."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.kafka.broker import BrokerError, EmbeddedBroker, free_port, kafka_responds
from pipeline.kafka.clients import (
    KafkaUnavailable,
    ensure_topics,
    make_admin,
    make_consumer,
    make_producer,
)
from pipeline.settings import load_settings
from tests.processes import alive, default_sigint
from tests.waiting import WAIT_S, wait_until

REPO = Path(__file__).resolve().parents[1]


def wait_dead(pid: int, what: str) -> None:
    """Wait until process ``pid`` is gone; ``what`` says which process it is."""
    wait_until(lambda: not alive(pid), what=f"{what} (pid {pid}) to exit", poll_s=0.05)


# --------------------------------------------------------------------------- no broker


def test_unreachable_bootstrap_names_the_fix() -> None:
    settings = load_settings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    with pytest.raises(KafkaUnavailable, match="ROADCAST_BOOTSTRAP_SERVERS"):
        make_producer(settings, bootstrap_timeout_ms=300)
    with pytest.raises(KafkaUnavailable, match="roadcast broker"):
        make_admin(settings, bootstrap_timeout_ms=300)
    assert not kafka_responds(settings.bootstrap_servers, timeout_s=0.3)


def test_ensure_topics_rejects_bad_counts() -> None:
    settings = load_settings(bootstrap_servers="127.0.0.1:1")
    with pytest.raises(ValueError, match="partitions"):
        ensure_topics(settings, partitions=0)


def test_broker_needs_a_valid_port() -> None:
    with pytest.raises(ValueError, match="port"):
        EmbeddedBroker(port=70000)
    with pytest.raises(BrokerError, match="start"):
        _ = EmbeddedBroker().bootstrap


# --------------------------------------------------------------------------- with a broker


@pytest.mark.integration
def test_session_broker_answers_kafka_requests(broker: EmbeddedBroker) -> None:
    assert broker.healthy(timeout_s=WAIT_S)
    host, port = broker.bootstrap.split(":")
    assert host == "127.0.0.1" and int(port) == broker.port
    assert broker.log_path.is_file()


@pytest.mark.integration
def test_ensure_topics_is_idempotent(kafka_settings) -> None:
    created = ensure_topics(kafka_settings, partitions=2)
    assert sorted(created) == sorted(kafka_settings.topics.values())
    assert ensure_topics(kafka_settings, partitions=2) == []
    admin = make_admin(kafka_settings)
    try:
        described = admin.describe_topics([kafka_settings.topic_readings])
    finally:
        admin.close()
    assert len(described[0]["partitions"]) == 2


@pytest.mark.integration
def test_produce_consume_commit_and_read_committed_offsets(kafka_settings) -> None:
    from kafka import TopicPartition

    topic = kafka_settings.topic_readings
    ensure_topics(kafka_settings, topics=[topic], partitions=3)
    producer = make_producer(kafka_settings)
    n = 300
    for i in range(n):
        producer.send(topic, key=f"s{i % 7}".encode(), value=f"{i}".encode())
    producer.flush(WAIT_S)
    producer.close()

    consumer = make_consumer(kafka_settings, topic)
    got: dict[bytes, list[int]] = {}

    def consume() -> bool:
        for records in consumer.poll(timeout_ms=200).values():
            for record in records:
                got.setdefault(record.key, []).append(int(record.value))
        consumer.commit()
        return sum(map(len, got.values())) >= n

    wait_until(consume, what=f"{n} messages", poll_s=0)
    consumer.close()

    assert sum(map(len, got.values())) == n
    # One key stays on one partition, so its messages arrive in the order sent.
    for key, values in got.items():
        assert values == sorted(values), key
    admin = make_admin(kafka_settings)
    try:
        offsets = admin.list_group_offsets(kafka_settings.consumer_group)
    finally:
        admin.close()
    committed = offsets[kafka_settings.consumer_group]
    assert set(committed) == {TopicPartition(topic, p) for p in range(3)}
    assert sum(meta.offset for meta in committed.values()) == n

    # The group resumes from its commits: a new member finds nothing left to read.
    again = make_consumer(kafka_settings, topic)
    try:
        leftovers = 0

        def joined() -> bool:
            nonlocal leftovers
            leftovers += sum(len(r) for r in again.poll(timeout_ms=200).values())
            return bool(again.assignment())

        wait_until(joined, what="the second consumer to join the group", poll_s=0)
        leftovers += sum(len(r) for r in again.poll(timeout_ms=500).values())
        assert leftovers == 0
        assert sum(again.position(tp) for tp in again.assignment()) == n
    finally:
        again.close()


def test_consumers_read_committed_transactions(kafka_settings) -> None:
    """A producer writing in transactions (Kafka Connect, Flink) is read once its
    transaction commits: the consumers read committed records only."""
    from kafka import KafkaProducer, TopicPartition

    topic = f"{kafka_settings.topic_readings}.txn"
    ensure_topics(kafka_settings, topics=[topic], partitions=1)
    producer = KafkaProducer(
        bootstrap_servers=kafka_settings.bootstrap_servers, transactional_id="roadcast-test"
    )
    try:
        producer.init_transactions()
        producer.begin_transaction()
        for i in range(5):
            producer.send(topic, key=b"s1", value=f"{i}".encode())
        producer.commit_transaction()
    finally:
        producer.close(timeout=WAIT_S)
    consumer = make_consumer(kafka_settings, group_id="")
    assert consumer.config["isolation_level"] == "read_committed"
    assert consumer.config["client_id"] == "roadcast"  # not kafka-python-<version>
    got: list[bytes] = []
    try:
        consumer.assign([TopicPartition(topic, 0)])

        def read() -> bool:
            got.extend(r.value for rs in consumer.poll(timeout_ms=200).values() for r in rs)
            return len(got) >= 5

        wait_until(read, what="the committed transaction's records", poll_s=0)
    finally:
        consumer.close()
    assert got == [f"{i}".encode() for i in range(5)]


@pytest.mark.integration
def test_restart_gives_a_fresh_broker_on_the_same_port(tmp_path: Path) -> None:
    with EmbeddedBroker(log_path=tmp_path / "b.log", startup_timeout_s=WAIT_S) as own:
        settings = load_settings(bootstrap_servers=own.bootstrap)
        ensure_topics(settings, topics=["kept.until.restart"])
        port, first_pid = own.port, own.pid
        assert first_pid is not None
        own.restart()
        assert own.port == port and own.pid != first_pid
        assert own.healthy(timeout_s=WAIT_S)
        assert not alive(first_pid)
        admin = make_admin(settings)
        try:
            assert "kept.until.restart" not in admin.list_topics()
        finally:
            admin.close()
    assert not own.is_running() and not own.healthy(timeout_s=0.3)
    assert "stopped" in (tmp_path / "b.log").read_text()


@pytest.mark.integration
def test_stop_is_idempotent_and_leaves_no_process(tmp_path: Path) -> None:
    own = EmbeddedBroker(log_path=tmp_path / "b.log", startup_timeout_s=WAIT_S).start()
    pid = own.pid
    assert pid is not None and alive(pid)
    own.stop()
    own.stop()
    assert not alive(pid)
    assert "EmbeddedBroker" in repr(own) and "stopped" in repr(own)


@pytest.mark.integration
@pytest.mark.parametrize("listening", [True, False])
def test_a_taken_fixed_port_names_the_fix(listening: bool) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        if listening:
            sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(BrokerError, match="already in use"):
            EmbeddedBroker(port=port).start()


@pytest.mark.integration
def test_a_dead_broker_is_reported(tmp_path: Path) -> None:
    own = EmbeddedBroker(log_path=tmp_path / "b.log", startup_timeout_s=WAIT_S).start()
    try:
        assert own.pid is not None
        os.kill(own.pid, signal.SIGKILL)
        wait_dead(own.pid, "the killed broker")
        assert not own.healthy(timeout_s=0.3)
    finally:
        own.stop()


CHILD = textwrap.dedent(
    """
    import sys, time
    from pipeline.kafka.broker import EmbeddedBroker
    broker = EmbeddedBroker(log_path=sys.argv[1], startup_timeout_s=float(sys.argv[2])).start()
    print(broker.pid, flush=True)
    time.sleep(3600)  # until the test kills this process
    """
)


def _start_child(tmp_path: Path) -> tuple[subprocess.Popen[str], int]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / "child.log"), str(WAIT_S)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.strip().isdigit(), f"child did not start a broker: {line!r}"
    return child, int(line)


@pytest.mark.integration
@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux-only")
def test_broker_dies_with_a_killed_parent(tmp_path: Path) -> None:
    child, broker_pid = _start_child(tmp_path)
    assert alive(broker_pid)
    child.kill()  # SIGKILL: no Python cleanup runs; the kernel must take the broker down
    child.wait(WAIT_S)
    wait_dead(broker_pid, "the broker of a killed parent")


@pytest.mark.integration
def test_sigterm_to_the_parent_stops_the_broker(tmp_path: Path) -> None:
    child, broker_pid = _start_child(tmp_path)
    child.terminate()
    assert child.wait(WAIT_S) == 128 + signal.SIGTERM
    wait_dead(broker_pid, "the broker of a terminated parent")
    assert "stopped" in (tmp_path / "child.log").read_text()


@pytest.mark.integration
def test_client_defaults_and_overrides(kafka_settings) -> None:
    consumer = make_consumer(kafka_settings, group_id="", fetch_max_wait_ms=7)
    producer = make_producer(kafka_settings, linger_ms=1)
    try:
        assert consumer.config["session_timeout_ms"] == 6000
        assert consumer.config["enable_auto_commit"] is False
        assert consumer.config["group_id"] is None
        assert consumer.config["fetch_max_wait_ms"] == 7
        assert producer.config["linger_ms"] == 1
        assert producer.config["batch_size"] == 256 * 1024
    finally:
        consumer.close()
        producer.close()


@pytest.mark.integration
def test_broker_command_runs_in_the_foreground_until_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "broker",
            "--port",
            str(port),
            "--log",
            str(tmp_path / "b.log"),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=default_sigint,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert f"127.0.0.1:{port}" in first, first
        assert kafka_responds(f"127.0.0.1:{port}", timeout_s=WAIT_S)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(WAIT_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not kafka_responds(f"127.0.0.1:{port}", timeout_s=0.3)


@pytest.mark.integration
def test_replay_command_produces_a_simulated_network(kafka_settings) -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    topic = kafka_settings.topic_readings
    result = CliRunner().invoke(
        app,
        [
            "replay",
            "simulated:sensors=4,days=0.1",
            "--bootstrap",
            kafka_settings.bootstrap_servers,
            "--topic",
            topic,
            "--limit",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "3 steps" in result.output and topic in result.output
    admin = make_admin(kafka_settings)
    try:
        assert topic in admin.list_topics()
    finally:
        admin.close()


def test_replay_command_reports_an_unreachable_broker(monkeypatch) -> None:
    monkeypatch.setattr("pipeline.kafka.clients.BOOTSTRAP_TIMEOUT_MS", 300)  # not 10 s
    from typer.testing import CliRunner

    from flows.cli import app

    result = CliRunner().invoke(
        app, ["replay", "simulated:sensors=2,days=0.01", "--bootstrap", f"127.0.0.1:{free_port()}"]
    )
    assert result.exit_code == 1
    assert "roadcast broker" in result.output


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_replay_flushes_and_says_what_it_sent(kafka_settings, sig) -> None:
    import re

    from tests.service_support import read_topic

    topic = kafka_settings.topic_readings
    ensure_topics(kafka_settings, topics=[topic])
    args = [
        sys.executable, "-m", "flows.cli", "replay", "simulated:sensors=3,days=2",
        "--bootstrap", kafka_settings.bootstrap_servers, "--topic", topic, "--speedup", "300",
    ]  # fmt: skip
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint
    )
    try:
        wait_until(lambda: len(read_topic(kafka_settings, topic, settle_s=0)) >= 3, what="a step")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, err  # 130 for Ctrl-C, 143 for SIGTERM
    match = re.search(r"interrupted after ([\d,]+) readings .* ([\d,]+) acknowledged", err)
    assert match is not None, err
    sent = int(match.group(1).replace(",", ""))
    assert sent == int(match.group(2).replace(",", "")) == len(read_topic(kafka_settings, topic))


def test_broker_log_that_cannot_be_a_file_is_refused_naming_the_option(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    (tmp_path / "file").write_text("")
    for log in (str(tmp_path), str(tmp_path / "file" / "b.log"), " "):
        result = CliRunner().invoke(app, ["broker", "--log", log])
        assert result.exit_code == 2 and "--log" in result.output
