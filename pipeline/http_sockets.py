"""The TCP sockets an httpx request opens, so that a deadline can cut them.

httpx's timeouts bound each network operation, not a whole exchange: a server that
trickles its answer holds a request for ever. Given as the request's ``trace`` extension,
:meth:`RequestSockets.trace` collects the sockets it connects; :meth:`RequestSockets.cut`
shuts them down, which ends the request with an error.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any


class RequestSockets:
    """The sockets of the requests traced through :meth:`trace`."""

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpx's ``trace`` extension: keep each socket once its TCP connection is up."""
        if event.endswith("connect_tcp.complete") and info.get("return_value") is not None:
            sock = info["return_value"].get_extra_info("socket")
            if isinstance(sock, socket.socket):
                self.sockets.append(sock)

    def cut(self) -> None:
        """Shut every socket down (the request in flight fails at once)."""
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
