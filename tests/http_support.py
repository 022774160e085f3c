"""A raw TCP server for tests of clients facing receivers and mirrors that misbehave."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def read_request(conn: socket.socket) -> None:
    """Read one HTTP request, headers and body, off ``conn``."""
    conn.settimeout(5.0)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return
        body += chunk


@contextmanager
def raw_server(answer: Callable[[socket.socket], None]) -> Iterator[str]:
    """A TCP server on a free local port that reads each request and then runs ``answer``
    on the connection; yields its URL."""
    server = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def handle(conn: socket.socket) -> None:
        with conn:
            try:
                read_request(conn)
                answer(conn)
            except OSError:
                pass  # the client cut the exchange off

    def accept() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        done.set()
        server.close()
