"""Connection setup with TLS and SASL settings: a clear error naming the cause, never a hang.

The session broker listens in plaintext; a small TLS server (a self-signed certificate
made here with ``cryptography``) stands in for a TLS listener. Each client is built in
a thread and awaited with the hang guard, so an unbounded wait fails the test instead
of hanging it, whatever the machine's speed.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pipeline.kafka.clients import KafkaUnavailable, make_admin, make_consumer, make_producer
from pipeline.settings import SettingsError, load_settings
from tests.http_support import write_certificate
from tests.waiting import wait_until

QUICK = {"bootstrap_timeout_ms": 2000}  # how long kafka-python retries; not a speed bound


def outcome(build: Callable[[], Any]) -> BaseException | Any:
    """``build()`` in a thread, awaited with the hang guard: its result or its exception."""
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(build())
        except BaseException as exc:  # handed to the test
            box.append(exc)

    threading.Thread(target=run, daemon=True).start()
    wait_until(lambda: box, what="the client to be built or to fail")
    return box[0]


@pytest.fixture
def tls_listener(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A TLS server on 127.0.0.1 that completes handshakes and closes: (HOST:PORT, CA file)."""
    cert, key = write_certificate(tmp_path, ip=False)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.getsockname()[1]}", cert
    stop.set()
    thread.join()
    server.close()


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_certificate(tmp_path_factory.mktemp("ca"), ip=True)[0]


@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
@pytest.mark.parametrize("factory", [make_producer, make_consumer, make_admin])
def test_tls_against_a_plaintext_listener_fails_with_the_cause(
    broker, ca_file: Path, protocol: str, factory
) -> None:
    settings = load_settings(
        bootstrap_servers=broker.bootstrap,
        security_protocol=protocol,
        sasl_mechanism="PLAIN",
        sasl_username="user",
        sasl_password="secret",
        ssl_cafile=ca_file,
    )
    error = outcome(lambda: factory(settings, **QUICK))
    assert isinstance(error, KafkaUnavailable), error
    assert "plaintext" in str(error) and "ROADCAST_SECURITY_PROTOCOL" in str(error)
    assert "secret" not in str(error)


@pytest.mark.integration
def test_sasl_against_a_listener_without_it_names_the_mechanism(broker) -> None:
    settings = load_settings(
        bootstrap_servers=broker.bootstrap,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="user",
        sasl_password="secret",
    )
    error = outcome(lambda: make_producer(settings, **QUICK))
    assert isinstance(error, KafkaUnavailable), error
    assert "SASL mechanism SCRAM-SHA-256" in str(error)


@pytest.mark.integration
def test_replay_with_tls_against_plaintext_is_one_line(broker, ca_file, monkeypatch) -> None:
    from flows.cli import app

    monkeypatch.setenv("ROADCAST_BOOTSTRAP_SERVERS", broker.bootstrap)
    monkeypatch.setenv("ROADCAST_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("ROADCAST_SASL_USERNAME", "user")
    monkeypatch.setenv("ROADCAST_SASL_PASSWORD", "secret")
    monkeypatch.setenv("ROADCAST_SSL_CAFILE", str(ca_file))
    result = outcome(
        lambda: CliRunner().invoke(app, ["replay", "simulated:sensors=3,hours=1", "--limit", "1"])
    )
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot connect to Kafka"), lines
    assert "ROADCAST_SECURITY_PROTOCOL" in lines[0]


def test_untrusted_and_mismatched_certificates(tls_listener: tuple[str, Path]) -> None:
    address, cert = tls_listener
    untrusted = load_settings(bootstrap_servers=address, security_protocol="SSL")
    error = outcome(lambda: make_producer(untrusted, **QUICK))
    assert isinstance(error, KafkaUnavailable) and "ROADCAST_SSL_CAFILE" in str(error), error
    mismatched = load_settings(bootstrap_servers=address, security_protocol="SSL", ssl_cafile=cert)
    error = outcome(lambda: make_producer(mismatched, **QUICK))
    assert isinstance(error, KafkaUnavailable), error
    assert "ROADCAST_SSL_CHECK_HOSTNAME" in str(error), error


def test_handshake_with_a_trusted_certificate_passes(tls_listener: tuple[str, Path]) -> None:
    address, cert = tls_listener
    settings = load_settings(
        bootstrap_servers=address,
        security_protocol="SSL",
        ssl_cafile=cert,
        ssl_check_hostname=False,  # the certificate is for localhost; the chain is checked
    )
    error = outcome(lambda: make_producer(settings, **QUICK))
    # The TLS server is not Kafka: the handshake succeeds, then it hangs up.
    assert isinstance(error, KafkaUnavailable), error
    assert "TLS" not in str(error) and "certificate" not in str(error), error


def test_plaintext_against_a_tls_listener_says_so(tls_listener: tuple[str, Path]) -> None:
    address, _ = tls_listener
    error = outcome(lambda: make_producer(load_settings(bootstrap_servers=address), **QUICK))
    assert isinstance(error, KafkaUnavailable), error
    assert "SSL or SASL_SSL" in str(error), error


def test_unreadable_ca_file_names_the_setting(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    settings = load_settings(
        bootstrap_servers="127.0.0.1:1", security_protocol="SSL", ssl_cafile=bad
    )
    with pytest.raises(SettingsError, match="ROADCAST_SSL_CAFILE"):
        make_producer(settings, **QUICK)
