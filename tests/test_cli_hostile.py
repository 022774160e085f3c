"""Hostile inputs for ``roadcast replay``, ``data fetch``, ``demo`` and ``tail``.

Every case must end in a one-line error that names the option, file or setting to fix
(or do what was asked), never a traceback, a hang, records lost or shown wrongly, or a
half-written output.
"""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.tail import Progress
from pipeline.data.datasets import load_dataset
from pipeline.kafka.replay import replay


def _error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, output
    assert "Traceback" not in output, output
    return lines[0]


# --------------------------------------------------------------------------- replay


class _NoSend:
    """A producer that must not be used."""

    def send(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a reading was sent")

    def flush(self, timeout: float | None = None) -> None:
        pass


def test_replay_refuses_a_speedup_too_small_to_pace_before_sending(tmp_path: Path) -> None:
    data = tmp_path / "two.csv"
    data.write_text("time,a\n2024-01-01 00:00,1\n2024-01-01 00:05,2\n")
    panel = load_dataset(f"csv:{data}")
    with pytest.raises(ValueError, match="speedup 1e-10 would pace 2 steps"):
        replay(panel, _NoSend(), "t", speedup=1e-10, progress=False)  # type: ignore[arg-type]


def test_replay_takes_the_index_options_train_takes(tmp_path: Path, monkeypatch) -> None:
    """``replay`` had no ``--index-col`` / ``--no-index``: a CSV that trains with one of
    them could not be replayed ('No such option')."""
    monkeypatch.setattr("pipeline.kafka.clients.BOOTSTRAP_TIMEOUT_MS", 300)
    monkeypatch.setenv("ROADCAST_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # no broker: fails after
    data = tmp_path / "one.csv"
    data.write_text("level\n" + "".join(f"{k}\n" for k in range(12)))  # a sensor of counts
    spec = f"csv:{data}"
    result = CliRunner().invoke(app, ["replay", spec])
    assert "pass --no-index" in _error_line(result.output)
    result = CliRunner().invoke(app, ["replay", spec, "--no-index"])
    assert result.exit_code == 1 and "roadcast broker" in _error_line(result.output)
    result = CliRunner().invoke(app, ["replay", spec, "--index-col", "time"])
    assert "--index-col 'time' is not a column of the header" in _error_line(result.output)


# --------------------------------------------------------------------------- data fetch


def _mirror(tmp_path: Path) -> tuple[Path, list[str]]:
    """A mirror folder with small los-loop files and the --sha256 options accepting them."""
    mirror = tmp_path / "mirror"
    options = []
    for name, text in (("los_speed.csv", "1,2\n3,4\n"), ("los_adj.csv", "0,1\n1,0\n")):
        path = mirror / "los-loop" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        digest = hashlib.sha256(text.encode()).hexdigest()
        options += ["--sha256", f"los-loop/{name}={digest}"]
    return mirror, options


def test_fetch_takes_a_mirror_that_is_a_local_folder(tmp_path: Path) -> None:
    mirror, sha = _mirror(tmp_path)
    data = tmp_path / "data"
    result = CliRunner().invoke(
        app, ["data", "fetch", "los-loop", "--data-dir", str(data), "--mirror", str(mirror), *sha]
    )
    assert result.exit_code == 0, result.output
    assert (data / "los-loop" / "los_speed.csv").read_text() == "1,2\n3,4\n"
    assert not list(data.rglob("*.part"))
    [locations] = [line for line in result.output.splitlines() if "sensor_locations" in line]
    assert "failed" in locations and "optional" in locations  # the mirror lacks it: no error


def test_fetch_names_a_mirror_that_is_neither_url_nor_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["data", "fetch", "los-loop", "--data-dir", str(tmp_path / "d"), "--mirror", "nowhere"]
    )
    assert result.exit_code == 1
    assert "--mirror 'nowhere'" in _error_line(result.output)
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("below", ["", "sub"])
def test_fetch_into_a_data_dir_that_is_a_file_names_the_data_dir(
    tmp_path: Path, below: str
) -> None:
    mirror, sha = _mirror(tmp_path)
    file = tmp_path / "a-file"
    file.write_text("not a folder")
    data = file / below if below else file
    result = CliRunner().invoke(
        app, ["data", "fetch", "los-loop", "--data-dir", str(data), "--mirror", str(mirror), *sha]
    )
    assert result.exit_code == 1
    assert "data directory" in _error_line(result.output)
    assert file.read_text() == "not a folder"


# --------------------------------------------------------------------------- demo


def test_demo_writes_nothing_for_data_it_cannot_load(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["demo", "--data", "simulated:sensors=0", "--out", str(out), "--no-progress"]
    )
    assert result.exit_code == 2  # an invalid option value of the spec
    assert "sensors" in _error_line(result.output)
    assert not out.exists()


@pytest.mark.integration
def test_demo_waits_for_this_run_of_the_service_not_an_earlier_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service that fails at start is reported as such, even when the service log of an
    earlier run says that one joined its group; the demo's broker is stopped."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "service.log").write_text('{"event": "started"}\n')
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setenv("ROADCAST_METRICS_ENABLED", "true")
        monkeypatch.setenv("ROADCAST_METRICS_PORT", str(taken.getsockname()[1]))
        result = CliRunner().invoke(
            app,
            [
                "demo", "--data", "simulated:sensors=1,days=3", "--out", str(out),
                "--epochs", "1", "--max-ticks", "2", "--speedup", "0", "--no-progress",
            ],
        )  # fmt: skip
    assert result.exit_code == 1, result.output
    line = _error_line(result.output)
    assert "exited with code" in line and "while starting (joining the consumer group" in line
    assert "already in use" in (out / "service.log").read_text()


# --------------------------------------------------------------------------- tail


@pytest.mark.integration
@pytest.mark.parametrize("option", ["--max", "--timeout"])
def test_tail_refuses_negative_counts(kafka_settings, option: str) -> None:
    result = CliRunner().invoke(
        app,
        ["tail", kafka_settings.topic_readings, "--bootstrap", kafka_settings.bootstrap_servers,
         option, "-1"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert option in result.output


@pytest.mark.integration
@pytest.mark.parametrize("partitions", [1, 3])
def test_tail_timeout_ends_on_an_empty_topic(kafka_settings, partitions: int) -> None:
    from pipeline.kafka.clients import ensure_topics

    topic = f"{kafka_settings.topic_readings}.empty{partitions}"
    ensure_topics(kafka_settings, topics=[topic], partitions=partitions)
    for start in ([], ["--from-beginning"]):
        result = CliRunner().invoke(
            app,
            ["tail", topic, "--bootstrap", kafka_settings.bootstrap_servers, "--timeout", "1",
             *start],
        )  # fmt: skip
        assert result.exit_code == 0 and result.output == "", result.output


class _Consumer:
    """What :class:`Progress` reads of a consumer: high watermarks and positions."""

    def __init__(self, highwater: dict[int, int | None], position: dict[int, int]) -> None:
        self.hw, self.pos = highwater, position

    def highwater(self, tp: int) -> int | None:
        return self.hw[tp]

    def position(self, tp: int) -> int:
        return self.pos[tp]


def test_tail_timeout_waits_until_every_partition_is_read_to_its_end() -> None:
    consumer = _Consumer({0: 5, 1: None}, {0: 5, 1: 0})
    progress = Progress(consumer, [0, 1])
    assert not progress.caught_up()  # partition 1 not fetched yet
    consumer.hw[1] = 3
    assert not progress.caught_up()  # fetched, three records not read yet
    consumer.pos[1] = 3
    assert progress.caught_up()


def _topic_with_old_records(kafka_settings, suffix: str) -> tuple[str, Any]:
    """A one-partition topic holding 20 records in one batch (a broker may hand back all
    of it), and the producer that wrote them."""
    from pipeline.kafka.clients import ensure_topics, make_producer

    topic = f"{kafka_settings.topic_readings}.{suffix}"
    ensure_topics(kafka_settings, topics=[topic], partitions=1)
    producer = make_producer(kafka_settings, linger_ms=200)
    for k in range(20):
        producer.send(topic, key=b"s", value=b'{"old": %d}' % k)
    producer.flush(30)
    return topic, producer


@pytest.mark.integration
def test_tail_without_from_beginning_prints_no_record_written_before_it_started(
    kafka_settings,
) -> None:
    topic, producer = _topic_with_old_records(kafka_settings, "old")
    producer.close()
    args = ["tail", topic, "--bootstrap", kafka_settings.bootstrap_servers, "--timeout", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and result.output == "", result.output
    result = CliRunner().invoke(app, [*args, "--from-beginning"])
    assert result.output.count("\n") == 20 and result.output.startswith("0@0 "), result.output


@pytest.mark.integration
def test_tail_without_from_beginning_prints_the_records_written_after_it_started(
    kafka_settings,
) -> None:
    import subprocess
    import sys
    import time

    topic, producer = _topic_with_old_records(kafka_settings, "new")
    tail = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "tail", topic, "--max", "3",
         "--bootstrap", kafka_settings.bootstrap_servers],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        k = 0
        while tail.poll() is None and k < 600:  # until it has seen three new records
            producer.send(topic, key=b"s", value=b'{"new": %d}' % k)
            producer.flush(30)
            k += 1
            time.sleep(0.2)
        output, _ = tail.communicate(timeout=60)
    finally:
        tail.kill()
        producer.close()
    offsets = [int(line.split("@")[1].split()[0]) for line in output.splitlines()]
    assert len(offsets) == 3 and min(offsets) >= 20, output  # none of the 20 old ones


def test_train_names_a_prefect_home_its_temporary_server_cannot_use(tmp_path: Path) -> None:
    """A PREFECT_HOME under a file: Prefect's server failed after about 30 s with screens
    of tracebacks; now one line before anything runs."""
    import os
    import subprocess
    import sys

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {**os.environ, "PREFECT_HOME": str(blocker / "prefect")}
    env.pop("PREFECT_API_URL", None)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", "train", "simulated:sensors=3,days=1",
         "--models", "persistence", "--seeds", "1", "--out", str(out), "--no-progress"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "PREFECT_HOME=" in errors[0] and "Traceback" not in result.stderr
    assert not out.exists()


def _roadcast(args: list[str], env: dict[str, str]) -> Any:
    import os
    import subprocess
    import sys

    full = {**os.environ, **env}
    full.pop("PREFECT_API_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        env=full, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize(
    "args",
    [["train", "simulated:sensors=3,days=1", "--models", "persistence", "--no-progress"],
     ["deploy", "--serve"]],
)  # fmt: skip
def test_invalid_prefect_settings_are_one_line_not_a_pydantic_dump(
    tmp_path: Path, args: list[str]
) -> None:
    result = _roadcast([*args, "--out", str(tmp_path / "o")] if args[0] == "train" else args,
                       {"PREFECT_LOGGING_LEVEL": "LOUD"})  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith("error: invalid ") and "environment variables" in result.stderr


def test_deploy_serve_without_a_server_writes_no_yaml(tmp_path: Path) -> None:
    target = tmp_path / "prefect.yaml"
    result = _roadcast(["deploy", "--serve", "--write-yaml", str(target)], {})
    assert result.returncode == 2 and "PREFECT_API_URL is not set" in result.stderr
    assert not target.exists()


@pytest.mark.parametrize(
    "args",
    [["tail", "roadcast.readings", "--timeout", "inf"],
     ["health", "--timeout", "nan"],
     ["health", "--url", "http://127.0.0.1:99999"],
     ["demo", "--out", " "],
     ["demo", "--models", "/no/such/models"]],
)  # fmt: skip
def test_options_out_of_range_are_refused_before_any_work(args: list[str]) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert args[-2] in result.output


@pytest.mark.slow
def test_sigterm_stops_training_and_prefects_temporary_server(tmp_path):
    """``kill`` (systemd, docker stop) ended the process and left the server it had
    started listening, owned by PID 1."""
    import os
    import signal
    import subprocess
    import sys

    import psutil

    from tests.processes import default_sigint
    from tests.waiting import wait_until

    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "train", "simulated:sensors=3,days=4",
         "--models", "lstm", "--tune", "30m", "--seeds", "1", "--threads", "1",
         "--no-promote", "--no-progress", "--out", str(tmp_path / "out")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=default_sigint,
    )  # fmt: skip
    servers: list[psutil.Process] = []

    def server_started() -> bool:
        found = [
            c for c in psutil.Process(proc.pid).children(recursive=True)
            if "prefect.server.api.server:create_app" in " ".join(c.cmdline())
        ]  # fmt: skip
        servers.extend(found)
        return bool(found)

    try:
        wait_until(server_started, what="Prefect's temporary server")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    _, alive = psutil.wait_procs(servers, timeout=60)
    assert not alive, (alive, err[-2000:])


def test_output_piped_into_a_reader_that_stops_ends_quietly(tmp_path: Path) -> None:
    """`roadcast detect ... | head`: a reader gone away ends the command, with no error line."""
    import subprocess
    import sys

    category = tmp_path / "nab" / "mine"
    category.mkdir(parents=True)
    rows = "".join(f"2024-03-01 {h:02d}:{m:02d}:00,{(h * 60 + m) % 7}\n" for h in range(24)
                   for m in range(0, 60, 5))  # fmt: skip
    (category / "a.csv").write_text("timestamp,value\n" + rows)
    command = [sys.executable, "-m", "flows.cli", "detect", "--nab-dir", str(tmp_path / "nab"),
               "--out", str(tmp_path / "out"), "--detector", "extreme"]  # fmt: skip
    done = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert done.stdout is not None and done.stderr is not None
    done.stdout.close()  # the reader stops before the first line
    stderr = done.stderr.read().decode()
    assert done.wait(timeout=300) == 1, stderr
    assert "Broken pipe" not in stderr and "Traceback" not in stderr, stderr
