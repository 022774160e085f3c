"""The Dask scheduler check of :mod:`flows.fanout` against real sockets: a listener that
accepts and never answers, one that answers HTTP, a closed port, a real scheduler and
worker; each bad one is a one-line :class:`FanoutError` (or, with the fallback setting,
a local cluster), never a hang or a stray exception. Also the address's validation."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from flows.fanout import FanoutError, dask_runner, scheduler_problem, started
from pipeline.settings import Settings, SettingsError, load_settings

HTTP_400 = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"


@contextmanager
def listening(mode: str) -> Iterator[int]:
    """A port on 127.0.0.1 where ``mode`` is ``silent`` (accepts, sends nothing, keeps the
    connection), ``http`` (answers HTTP 400 on accept) or ``closed`` (nothing listens)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    port = int(server.getsockname()[1])
    if mode == "closed":
        server.close()
        yield port
        return
    server.listen(16)
    server.settimeout(0.1)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if mode == "http":
                conn.sendall(HTTP_400)
            held.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        thread.join()
        server.close()
        for conn in held:
            conn.close()


EXPECTED = {
    "silent": r"did not answer within 1 s \(ROADCAST_DASK_TIMEOUT_S\); start it",
    "http": r"is not a Dask scheduler \(it answered in another protocol\); fix ROADCAST_DASK",
    # the refusal, or the deadline where the machine is too busy to see it in time
    "closed": r"did not answer within 1 s \((ConnectionRefused|ROADCAST_DASK_TIMEOUT_S).*; start",
}


@pytest.mark.parametrize("mode", list(EXPECTED))
def test_a_bad_scheduler_is_one_line_error_or_the_local_fallback(mode, caplog):
    with listening(mode) as port:
        address = f"tcp://127.0.0.1:{port}"
        settings = Settings(dask_address=address, dask_timeout_s=1)
        with pytest.raises(FanoutError, match=EXPECTED[mode]) as error:
            dask_runner(settings)
        message = str(error.value)
        assert "\n" not in message and address in message
        assert message.endswith(
            "ROADCAST_DASK_FALLBACK_LOCAL=true to train on a local cluster instead"
        )
        fallback = settings.model_copy(update={"dask_fallback_local": True})
        with caplog.at_level(logging.WARNING, logger="roadcast.flows"):
            runner = dask_runner(fallback)
    assert runner is not None and runner.address is None  # a local cluster
    assert "falling back to a local cluster" in caplog.text and address in caplog.text


def test_a_real_scheduler_passes_and_its_worker_is_named():
    from distributed import LocalCluster
    from prefect_dask import DaskTaskRunner

    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        assert scheduler_problem(cluster.scheduler_address, 30.0) is None
        runner = DaskTaskRunner(address=cluster.scheduler_address, client_kwargs={"timeout": 30})
        with started(runner):  # connects the client here
            assert runner.client.scheduler.address == cluster.scheduler_address
        worker = next(iter(cluster.scheduler_info["workers"]))
        problem = scheduler_problem(worker, 30.0)
        assert problem is not None and "is a Dask worker, not the scheduler" in problem[0]
        assert problem[1].startswith("fix ROADCAST")


def test_the_client_connection_after_the_check_has_a_deadline():
    """prefect-dask's client would wait for Dask's handshake forever; ``started`` connects
    it within the timeout (here a listener that never answers stands in for a scheduler
    that went silent after the check)."""
    from prefect_dask import DaskTaskRunner

    with listening("silent") as port:
        runner = DaskTaskRunner(address=f"tcp://127.0.0.1:{port}", client_kwargs={"timeout": 1})
        deadline = pytest.raises(FanoutError, match=r"did not finish connecting within 1 s")
        with deadline, started(runner):
            pass


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:abc", r"ROADCAST_DASK_ADDRESS: expected local or \[tcp://\]HOST:PORT.*number"),
        ("127.0.0.1:99999", r"ROADCAST_DASK_ADDRESS: port 99999 .* outside 1-65535"),
        ("127.0.0.1:0", r"ROADCAST_DASK_ADDRESS: port 0 .* outside 1-65535"),
        ("127.0.0.1", r"ROADCAST_DASK_ADDRESS: expected local or \[tcp://\]HOST:PORT"),
        ("tcp://h:8786/x", r"ROADCAST_DASK_ADDRESS: expected local"),
        ("::1:8786", r"ROADCAST_DASK_ADDRESS: write an IPv6 address in brackets"),
        ("http://h:8786", r"ROADCAST_DASK_ADDRESS: expected local"),
    ],
)
def test_a_malformed_address_is_a_settings_error(monkeypatch, value, expected):
    monkeypatch.setenv("ROADCAST_DASK_ADDRESS", value)
    with pytest.raises(SettingsError, match=expected) as error:
        load_settings()
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("LOCAL", "local"),
        (" Local ", "local"),
        ("TCP://sched:8786", "tcp://sched:8786"),
        ("sched:8786", "sched:8786"),
        ("[::1]:8786", "[::1]:8786"),
        ("", None),
    ],
)
def test_a_valid_address_is_kept_or_normalised(value, expected):
    assert load_settings(dask_address=value).dask_address == expected


def test_train_refuses_a_malformed_address_before_starting_prefect(monkeypatch, tmp_path):
    """It was reported only after Prefect's temporary server had started (about 20 s)."""
    from typer.testing import CliRunner

    import flows.cli.errors
    from flows.cli import app

    def no_prefect() -> None:
        raise AssertionError("Prefect was loaded before the settings were checked")

    monkeypatch.setattr(flows.cli.errors, "load_prefect", no_prefect)
    monkeypatch.setenv("ROADCAST_DASK_ADDRESS", "127.0.0.1:abc")
    done = CliRunner().invoke(
        app, ["train", "simulated:sensors=4,days=2", "--models", "persistence",
              "--out", str(tmp_path / "models")],
    )  # fmt: skip
    assert done.exit_code == 2, done.output
    assert "error: invalid settings: ROADCAST_DASK_ADDRESS" in done.output, done.output
    assert not (tmp_path / "models").exists()
