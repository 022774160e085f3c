"""The service's HTTP endpoints: ``/metrics`` (Prometheus), ``/healthz`` and ``/readyz``.

* ``/healthz`` (liveness): 200 while the service's loop is alive, i.e. it beat
  (:meth:`Health.beat`) within ``stall_after_s``, or it is still starting; 503 when it
  stalled. An orchestrator restarts a service that stays unhealthy.
* ``/readyz`` (readiness): 200 when every check passes: the models are loaded, the
  consumer has joined its group with partitions assigned, the broker answers, the store
  takes writes; 503 with the failing checks otherwise. Each answer is a JSON object
  with every check and why it failed.
* ``/metrics``: :class:`pipeline.service.metrics.ServiceMetrics`' registry.

:func:`start_endpoints` serves them from a thread of their own (``ROADCAST_METRICS_*``
settings); a taken port is an :class:`EndpointError` naming the port and the setting.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from pipeline.service.metrics import ServiceMetrics
from pipeline.settings import Settings

log = logging.getLogger("roadcast.service")

# A connection that sends nothing for this long is closed, and one whose exchange is not
# over this long after it was accepted is shut down (an idle client, or one trickling its
# request a byte at a time, would otherwise hold a thread and a slot for ever).
CONNECTION_TIMEOUT_S = 10.0
CONNECTION_DEADLINE_S = 10.0
# Connections served at once; more are closed at once (probes need a handful).
MAX_CONNECTIONS = 64

# A check returns None when it passes, else why it fails (one line).
Check = Callable[[], str | None]


class EndpointError(OSError):
    """The endpoints cannot listen where the settings say; the message names the setting."""


class Health:
    """Liveness and readiness of one service (see the module docstring).

    Parameters
    ----------
    stall_after_s : the loop is stalled when it has not beaten for this long (beyond a
        wait it announced with :meth:`expect_pause`).
    clock : monotonic seconds (tests pass their own).
    """

    def __init__(
        self, stall_after_s: float = 60.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if stall_after_s <= 0:
            raise ValueError(f"stall_after_s must be > 0, got {stall_after_s}")
        self.stall_after_s = stall_after_s
        self.clock = clock
        self._beat: float | None = None  # None: the loop has not started
        self._pause_until = 0.0
        self._checks: dict[str, Check] = {}
        self.stopping = False

    def beat(self) -> None:
        """The loop is alive (called once per loop iteration and per batch)."""
        self._beat = self.clock()

    def progress(self) -> None:
        """Long work of the loop (a level replay at a hot reload) moved on: a beat once the
        loop has started, nothing while it starts (which is not a stall)."""
        if self._beat is not None:
            self._beat = self.clock()

    def expect_pause(self, seconds: float) -> None:
        """The loop will wait ``seconds`` on purpose (a retry's backoff): not a stall."""
        now = self.clock()
        self._beat = now
        self._pause_until = now + seconds

    def add_check(self, name: str, check: Check) -> None:
        """A readiness check (replaces one of the same name)."""
        self._checks[name] = check

    def live(self) -> tuple[bool, dict[str, Any]]:
        """``(alive, details)`` for ``/healthz``."""
        if self._beat is None:
            return True, {"status": "starting"}
        now = self.clock()
        since = now - self._beat
        alive = since <= self.stall_after_s or now <= self._pause_until
        details = {
            "status": "ok" if alive else "stalled",
            "last_beat_s_ago": round(since, 3),
            "stall_after_s": self.stall_after_s,
        }
        return alive, details

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """``(ready, details)`` for ``/readyz``: every check's result."""
        if self.stopping:
            return False, {"status": "stopping", "checks": {}}
        if self._beat is None or not self._checks:
            return False, {"status": "starting", "checks": {}}
        results: dict[str, str] = {}
        for name, check in list(self._checks.items()):
            try:
                failure = check()
            except Exception as exc:  # a check that breaks is a failing check
                failure = f"{type(exc).__name__}: {exc}"
            results[name] = "ok" if failure is None else failure
        alive, _ = self.live()
        if not alive:
            results["loop"] = "the service loop stalled"
        ok = all(v == "ok" for v in results.values())
        return ok, {"status": "ready" if ok else "not ready", "checks": results}


@dataclass
class Cached:
    """A check run at most once per ``ttl_s`` (a network probe under frequent probes)."""

    check: Check
    ttl_s: float = 5.0
    clock: Callable[[], float] = time.monotonic
    _at: float = field(default=float("-inf"), init=False)
    _value: str | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __call__(self) -> str | None:
        with self._lock:
            if self.clock() - self._at >= self.ttl_s:
                self._value = self.check()
                self._at = self.clock()
            return self._value


def broker_check(settings: Settings, timeout_s: float = 2.0) -> Check:
    """A check that a broker answers a metadata request within ``timeout_s``."""

    def check() -> str | None:
        from kafka.errors import KafkaError

        from pipeline.kafka.clients import KafkaUnavailable, make_admin

        ms = int(timeout_s * 1000)
        try:
            admin = make_admin(
                settings,
                bootstrap_timeout_ms=ms,
                request_timeout_ms=ms,
                client_id="roadcast-readyz",
            )
        except (KafkaUnavailable, KafkaError, OSError) as exc:
            return f"no broker answered at {settings.bootstrap_servers}: {exc}"
        admin.close()
        return None

    return Cached(check)


def store_check(path: Path, last_error: Callable[[], str | None]) -> Check:
    """A check that the store can be written (the file, its -wal and -shm files, and its
    folder while those are missing: :func:`pipeline.service.store.read_only_problem`)
    and its last transaction succeeded."""
    from pipeline.service.store import read_only_problem

    def check() -> str | None:
        return read_only_problem(path.absolute()) or last_error()

    return check


@dataclass
class Endpoints:
    """The running HTTP server of one service: its metrics, its health, its address."""

    metrics: ServiceMetrics
    health: Health
    host: str
    port: int
    _server: Any = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (a wildcard address shown as this machine's name)."""
        return _base_url(self.host, self.port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)


def start_endpoints(
    settings: Settings,
    *,
    metrics: ServiceMetrics | None = None,
    health: Health | None = None,
    port: int | None = None,
) -> Endpoints:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``settings.metrics_host`` and
    ``metrics_port`` (``port`` overrides it; 0 picks a free one) from a daemon thread.

    Raises
    ------
    EndpointError
        When the address cannot be bound (the port is taken, the host is not local).
    """
    metrics = metrics or ServiceMetrics()
    health = health or Health()
    host = settings.metrics_host
    port = settings.metrics_port if port is None else port
    server, thread = _serve(_app(metrics, health), host, port)
    endpoints = Endpoints(metrics, health, host, int(server.server_port), server, thread)
    log.info(
        "endpoints",
        extra={
            "fields": {
                "metrics": f"{endpoints.url}/metrics",
                "health": f"{endpoints.url}/healthz",
                "ready": f"{endpoints.url}/readyz",
            }
        },
    )
    return endpoints


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> tuple[Any, str]:
    """Serve ``registry`` at ``/metrics`` on ``host:port`` from a daemon thread (for a
    process that is not the service: ``roadcast alerts deliver``). Returns the server
    (``shutdown()`` stops it) and its metrics URL.

    Raises
    ------
    EndpointError
        When the address cannot be bound.
    """
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "/") == "/metrics":
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: /metrics\n"]

    server, _ = _serve(app, host, port, "--metrics-port")
    return server, f"{_base_url(host, int(server.server_port))}/metrics"


def _base_url(host: str, port: int) -> str:
    """``http://HOST:PORT``, a wildcard address shown as this machine's name."""
    shown = socket.gethostname() if host in ("0.0.0.0", "::") else host
    return f"http://{f'[{shown}]' if ':' in shown else shown}:{port}"


def _serve(
    app: Callable[..., Iterable[bytes]],
    host: str,
    port: int,
    setting: str = "ROADCAST_METRICS_PORT",
) -> tuple[Any, threading.Thread]:
    """``app`` served on ``host:port`` from a daemon thread (``setting`` chose the port)."""
    try:
        server_class = _server_class(host, port)
        server = make_server(host, port, app, server_class, handler_class=_QuietHandler)
    except OSError as exc:
        raise _bind_error(host, port, exc, setting) from None
    thread = threading.Thread(
        target=server.serve_forever, name="roadcast-endpoints", kwargs={"poll_interval": 0.5}
    )
    thread.daemon = True
    thread.start()
    return server, thread


def _bind_error(
    host: str, port: int, exc: OSError, setting: str = "ROADCAST_METRICS_PORT"
) -> EndpointError:
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        off = " (or ROADCAST_METRICS_ENABLED=false)" if setting.startswith("ROADCAST") else ""
        return EndpointError(
            f"cannot serve metrics on {where}: port {port} is already in use; set "
            f"{setting} to a free port{off}"
        )
    if exc.errno == errno.EACCES:
        return EndpointError(
            f"cannot serve metrics on {where}: permission denied for port {port}; set "
            f"{setting} to a port above 1023"
        )
    return EndpointError(
        f"cannot serve metrics on {where} ({exc.strerror or exc}); set ROADCAST_METRICS_HOST "
        "to an address of this machine (0.0.0.0: all of them)"
    )


def _server_class(host: str, port: int) -> type[ThreadingWSGIServer]:
    """The threading WSGI server for ``host``'s address family (IPv4 or IPv6)."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]

    class Server(ThreadingWSGIServer):
        """At most :data:`MAX_CONNECTIONS` at once: more are closed unanswered."""

        address_family = family
        slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

        def process_request(self, request: Any, client_address: Any) -> None:
            if not self.slots.acquire(blocking=False):
                self.shutdown_request(request)
                return
            try:
                super().process_request(request, client_address)
            except BaseException:
                self.slots.release()
                raise

        def process_request_thread(self, request: Any, client_address: Any) -> None:
            try:
                super().process_request_thread(request, client_address)
            finally:
                self.slots.release()

        def handle_error(self, request: Any, client_address: Any) -> None:
            """One log line, no traceback on the service's stderr: a debug one for a
            client that left or timed out, a warning for anything else."""
            error = sys.exc_info()[1]
            level = logging.DEBUG if isinstance(error, OSError) else logging.WARNING
            log.log(level, "endpoint_request_failed %s: %r", client_address, error)

    return Server


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr (probes every few seconds would flood it); a connection
    idle for :data:`CONNECTION_TIMEOUT_S` is closed, one not done
    :data:`CONNECTION_DEADLINE_S` after it was accepted is shut down."""

    timeout = CONNECTION_TIMEOUT_S

    def setup(self) -> None:
        super().setup()
        self._deadline = threading.Timer(CONNECTION_DEADLINE_S, self._cut)
        self._deadline.daemon = True
        self._deadline.start()

    def _cut(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        self._deadline.cancel()
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _app(metrics: ServiceMetrics, health: Health) -> Callable[..., Iterable[bytes]]:
    metrics_app = make_wsgi_app(metrics.registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD")])
            return [b"use GET\n"]
        head = method == "HEAD"
        if path in ("/healthz", "/readyz"):
            ok, details = health.live() if path == "/healthz" else health.ready()
            body = json.dumps(details).encode()
            status = "200 OK" if ok else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json")])
            return [] if head else [body]
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"roadcast serve: /metrics /healthz /readyz\n"]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: /metrics /healthz /readyz\n"]

    return app
