"""A real Prometheus Alertmanager for the tests, and a small HTTP server that records what
it is sent (Alertmanager's webhook notifications, roadcast's signed webhooks) and answers
as a test tells it to: with a status, after a wait, or by forwarding to Alertmanager."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from pipeline.kafka.broker import free_port
from tests.processes import Daemon
from tests.waiting import WAIT_S

BINARY_NAMES = ("prometheus-alertmanager", "alertmanager")


def alertmanager_binary() -> str | None:
    """The Alertmanager executable (Debian: ``prometheus-alertmanager``), or None."""
    for name in BINARY_NAMES:
        if path := shutil.which(name):
            return path
    return None


@dataclass
class Request:
    """One request the :class:`HttpRecorder` received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)

    def json(self) -> Any:
        return json.loads(self.body)


# An answer: (status, headers, body). A responder may also block before answering.
Answer = tuple[int, dict[str, str], bytes]
Responder = Callable[[Request], Answer]


def ok(_: Request) -> Answer:
    return 200, {}, b""


class HttpRecorder:
    """An HTTP server on a free local port that records every request and answers with
    ``respond`` (default: 200). ``url`` is its address."""

    def __init__(self, respond: Responder = ok) -> None:
        self.respond = respond
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                )
                with recorder._lock:
                    recorder.requests.append(request)
                status, headers, body = recorder.respond(request)
                try:
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (a timeout): nothing to answer

            do_GET = do_POST = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def received(self, path: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def forward_to(target: str, timeout_s: float = 30.0) -> Responder:
    """A responder that passes the request on to ``target`` and returns its answer."""

    def respond(request: Request) -> Answer:
        headers = {"Content-Type": request.headers.get("content-type", "application/json")}
        answer = httpx.request(
            request.method,
            target + request.path,
            content=request.body,
            headers=headers,
            timeout=timeout_s,
        )
        return answer.status_code, {}, answer.content

    return respond


CONFIG = """\
route:
  receiver: recorder
  group_by: [alertname]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 2s
receivers:
  - name: recorder
    webhook_configs:
      - url: {webhook}
        send_resolved: true
"""


class Alertmanager(Daemon):
    """``prometheus-alertmanager`` on ``port`` (default: a free one) with its own config
    and storage under ``root``; notifications go to ``webhook``. Not started until
    :meth:`start`, so a test can point a client at it while it is down."""

    name = "Alertmanager"

    def __init__(self, binary: str, root: Path, webhook: str, port: int | None = None) -> None:
        super().__init__(binary, root, port or free_port())
        self.config = root / "alertmanager.yml"
        self.config.write_text(CONFIG.format(webhook=webhook))

    def args(self) -> list[str]:
        return [
            f"--config.file={self.config}",
            f"--storage.path={self.root / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ]

    # --- API v2 -----------------------------------------------------------------------

    def alerts(self, **labels: str) -> list[dict[str, Any]]:
        """Active alerts (silenced ones included) whose labels include ``labels``."""
        filters = [f'{k}="{v}"' for k, v in labels.items()]
        answer = httpx.get(f"{self.url}/api/v2/alerts", params={"filter": filters}, timeout=WAIT_S)
        answer.raise_for_status()
        return list(answer.json())

    def silence(self, comment: str, **labels: str) -> str:
        """Silence alerts with ``labels`` for an hour; returns the silence's id."""
        now = time.time()
        body = {
            "matchers": [
                {"name": k, "value": v, "isRegex": False, "isEqual": True}
                for k, v in labels.items()
            ],
            "startsAt": _iso(now - 1),
            "endsAt": _iso(now + 3600),
            "createdBy": "roadcast tests",
            "comment": comment,
        }
        answer = httpx.post(f"{self.url}/api/v2/silences", json=body, timeout=WAIT_S)
        answer.raise_for_status()
        return str(answer.json()["silenceID"])


def _iso(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


def notifications(recorder: HttpRecorder, path: str = "/am") -> list[dict[str, Any]]:
    """Alertmanager's webhook notifications the recorder received, oldest first."""
    return [r.json() for r in recorder.received(path)]
