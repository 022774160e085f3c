"""The TCP connections an httpx request opens, so that a deadline can cut them.

httpx's timeouts bound each network operation, not a whole exchange: a server that
trickles its answer holds a request for ever. Given as the request's ``trace`` extension,
:meth:`RequestSockets.trace` keeps a duplicate of each socket it connects;
:meth:`RequestSockets.cut` shuts the connections down, which ends the request with an
error. A duplicate, because TLS detaches the socket httpx connected (its ``fileno`` becomes
-1 once wrapped): shutting the duplicate down still ends the connection, during the TLS
handshake and after it. :meth:`RequestSockets.close` closes the duplicates (use the object
as a context manager).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from typing import Any, Self


class RequestSockets:
    """Duplicates of the sockets of the requests traced through :meth:`trace`."""

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpx's ``trace`` extension: keep each socket once its TCP connection is up."""
        if event.endswith("connect_tcp.complete") and info.get("return_value") is not None:
            sock = info["return_value"].get_extra_info("socket")
            if isinstance(sock, socket.socket):
                with self._lock:
                    if not self._closed:
                        self.sockets.append(sock.dup())

    def cut(self) -> None:
        """Shut every connection down (the request in flight fails at once)."""
        with self._lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Close the duplicates; a connection traced later is not kept."""
        with self._lock:
            self._closed = True
            for sock in self.sockets:
                sock.close()
            self.sockets.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
