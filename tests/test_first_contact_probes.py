"""A newcomer's first commands under hostile conditions: ``roadcast data fetch`` from
servers that misbehave, ``roadcast demo`` stopped or broken part-way, ``roadcast broker``
and ``roadcast explain`` with bad options."""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.data.datasets import DatasetInfo, RemoteFile
from pipeline.data.fetch import FetchError, fetch_dataset
from tests.processes import alive, children_of

BODY = b"a,b\n" + b"1,2\n" * 5000
DIGEST = hashlib.sha256(BODY).hexdigest()


def _two_files() -> DatasetInfo:
    files = (RemoteFile("set/f.csv", sha256=DIGEST), RemoteFile("set/g.csv", sha256=DIGEST))
    return DatasetInfo("set", "test", files, "MIT", "here")


@contextmanager
def _mirror(handle: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _Quiet(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def head(self, length: int = len(BODY), **extra: str) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(length))
        for name, value in extra.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()


class _ResetMidway(_Quiet):
    """Sends the first part of the file, then resets the connection."""

    def do_GET(self) -> None:
        self.head()
        self.wfile.write(BODY[:10_000])
        self.wfile.flush()
        linger = struct.pack("ii", 1, 0)  # close() now sends RST
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        self.connection.close()


class _CloseMidway(_Quiet):
    """Sends the first part of the file, then closes the connection cleanly."""

    def do_GET(self) -> None:
        self.head()
        self.wfile.write(BODY[:10_000])
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)


class _Gzipped(_Quiet):
    """Sends the file gzip-encoded although nobody asked for it."""

    def do_GET(self) -> None:
        packed = gzip.compress(BODY)
        self.head(len(packed), Content_Encoding="gzip")
        self.wfile.write(packed)


class _ErrorPage(_Quiet):
    """Status 200 and an HTML error page instead of the file."""

    def do_GET(self) -> None:
        page = b"<html><body>Not found</body></html>"
        self.head(len(page), Content_Type="text/html; charset=utf-8")
        self.wfile.write(page)


def _fetch_error(mirror: str, data: Path) -> str:
    with pytest.raises(FetchError) as err:
        fetch_dataset(_two_files(), data_dir=data, mirror=mirror, timeout=10.0)
    assert not data.exists() or not any(data.rglob("*.part")), "a partial file was left"
    return str(err.value)


def test_a_connection_reset_mid_download_is_a_cut_short_download_not_an_unreachable_server(
    tmp_path: Path,
) -> None:
    with _mirror(_ResetMidway) as url:
        text = _fetch_error(url, tmp_path / "data")
    assert "cannot reach the server" not in text and "not tried" not in text
    assert text.count("download cut short after 10000 bytes") == 2  # both files were tried


def test_a_connection_closed_mid_download_is_named_cut_short_not_a_checksum_mismatch(
    tmp_path: Path,
) -> None:
    with _mirror(_CloseMidway) as url:
        text = _fetch_error(url, tmp_path / "data")
    assert "mismatch" not in text
    assert f"download cut short: 10000 of {len(BODY)} bytes" in text


@pytest.mark.parametrize(
    ("handle", "note"),
    [
        (_Gzipped, "the server sent it gzip-encoded"),
        (_ErrorPage, "the server sent an HTML page"),
    ],
)
def test_a_checksum_mismatch_says_what_the_server_sent_instead(
    tmp_path: Path, handle: type[BaseHTTPRequestHandler], note: str
) -> None:
    with _mirror(handle) as url:
        text = _fetch_error(url, tmp_path / "data")
    assert "sha256 mismatch" in text and note in text


def test_two_fetches_into_one_data_dir_at_once_both_end_with_the_file(tmp_path: Path) -> None:
    """The first download is held half-way until the second has finished and put its file
    in place: the two must not share (and delete) one temporary file."""
    first_held = threading.Event()
    second_done = threading.Event()
    calls: list[int] = []

    class HoldFirst(_Quiet):
        def do_GET(self) -> None:
            calls.append(1)
            first = len(calls) == 1
            self.head()
            if first:
                self.wfile.write(BODY[:10_000])
                self.wfile.flush()
                first_held.set()
                second_done.wait(60)
                self.wfile.write(BODY[10_000:])
            else:
                self.wfile.write(BODY)

    info = DatasetInfo("set", "test", (RemoteFile("set/f.csv", sha256=DIGEST),), "MIT", "here")
    data = tmp_path / "data"
    outcome: dict[str, object] = {}
    with _mirror(HoldFirst) as url:

        def fetch(name: str) -> None:
            try:
                outcome[name] = [r.status for r in fetch_dataset(info, data_dir=data, mirror=url)]
            except BaseException as exc:
                outcome[name] = exc

        first = threading.Thread(target=fetch, args=("first",))
        first.start()
        assert first_held.wait(60)
        fetch("second")
        second_done.set()
        first.join(60)
    assert outcome == {"first": ["downloaded"], "second": ["downloaded"]}
    assert (data / "set" / "f.csv").read_bytes() == BODY
    assert [p.name for p in (data / "set").iterdir()] == ["f.csv"]


def test_a_full_disk_names_the_file_and_leaves_no_partial_download(tmp_path: Path) -> None:
    """A file size limit stands in for a full disk: writes fail part-way with an OSError."""
    import resource
    import signal
    import subprocess
    import sys

    mirror = tmp_path / "mirror" / "set"
    mirror.mkdir(parents=True)
    (mirror / "f.csv").write_bytes(BODY)
    data = tmp_path / "data"
    script = (
        "from pathlib import Path; from pipeline.data.datasets import DatasetInfo, RemoteFile;"
        "from pipeline.data.fetch import FetchError, fetch_dataset;"
        f"files = (RemoteFile('set/f.csv', sha256='{DIGEST}'),)\n"
        "info = DatasetInfo('set', 't', files, 'MIT', 'h')\n"
        "try:\n"
        f"    fetch_dataset(info, data_dir=Path({str(data)!r}), mirror={str(mirror.parent)!r})\n"
        "except FetchError as exc:\n"
        "    print(exc)\n"
    )

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    done = subprocess.run(
        [sys.executable, "-c", script], preexec_fn=small_files, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert f"cannot write {data / 'set' / 'f.csv'} in the data directory" in done.stdout
    assert not data.exists()  # no partial file, no empty folder


# ---------------------------------------------------------------- roadcast demo, stopped


REPO = Path(__file__).resolve().parents[1]


@contextmanager
def _streaming_demo(
    tmp_path: Path, *, own_group: bool = False
) -> Iterator[tuple[object, Path, dict[int, str]]]:
    """A ``roadcast demo`` process that is replaying (slowly) into its service: the
    process, its output file and its broker and service processes (``own_group``: the
    demo leads a process group of its own, as a terminal's foreground job does)."""
    import subprocess
    import sys

    from tests.processes import default_sigint
    from tests.waiting import wait_until

    output = tmp_path / "demo.txt"
    children: dict[int, str] = {}
    args = [
        sys.executable, "-m", "flows.cli", "demo", "--data", "simulated:sensors=8,days=2,seed=5",
        "--out", str(tmp_path / "out"), "--max-ticks", "40", "--speedup", "10",
        "--epochs", "1", "--no-progress",
    ]  # fmt: skip
    with output.open("wb") as sink:
        proc = subprocess.Popen(
            args, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT, preexec_fn=default_sigint,
            start_new_session=own_group,
        )  # fmt: skip
    try:

        def replaying() -> bool:
            assert proc.poll() is None, output.read_text()
            return "replay:" in output.read_text()

        wait_until(replaying, what="the demo to replay", poll_s=0.2, details=output.read_text)
        children.update(children_of(proc.pid))
        assert any("tansu" in c for c in children.values()), children
        assert any("serve" in c for c in children.values()), children
        yield proc, output, children
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pid in children:  # a test that failed must not leave them running either
            if alive(pid):
                os.kill(pid, 9)


def _wait_gone(pids: dict[int, str]) -> None:
    from tests.waiting import wait_until

    wait_until(
        lambda: not any(alive(p) for p in pids),
        what="the demo's broker and service to exit",
        details=lambda: str({p: c for p, c in pids.items() if alive(p)}),
    )


@pytest.mark.integration
@pytest.mark.slow
def test_sigterm_while_streaming_stops_the_demo_with_one_line(tmp_path: Path) -> None:
    import signal

    from tests.waiting import WAIT_S

    with _streaming_demo(tmp_path) as (proc, output, children):
        proc.send_signal(signal.SIGTERM)  # type: ignore[attr-defined]
        assert proc.wait(WAIT_S) == 143  # type: ignore[attr-defined]  # 128 + SIGTERM
        _wait_gone(children)
    lines = output.read_text().splitlines()
    assert lines[-1] == "error: interrupted; the demo stopped, its service and broker with it"
    assert not any("Traceback" in line for line in lines)


@pytest.mark.integration
@pytest.mark.slow
def test_ctrl_c_in_a_terminal_stops_the_demos_service_gracefully(tmp_path: Path) -> None:
    """Ctrl-C reaches every process of the terminal's foreground group: the service got
    the terminal's SIGINT and then the demo's SIGTERM, a second signal, which stops a
    service at once instead of gracefully."""
    import signal

    from tests.waiting import WAIT_S

    with _streaming_demo(tmp_path, own_group=True) as (proc, output, children):
        os.killpg(proc.pid, signal.SIGINT)  # type: ignore[attr-defined]
        assert proc.wait(WAIT_S) == 130  # type: ignore[attr-defined]
        _wait_gone(children)
    log = (tmp_path / "out" / "service.log").read_text()
    assert "second signal" not in log and '"event": "stopped' in log, log[-3000:]
    assert output.read_text().splitlines()[-1] == (
        "error: interrupted; the demo stopped, its service and broker with it"
    )


@pytest.mark.integration
@pytest.mark.slow
def test_a_killed_demo_leaves_no_service_behind(tmp_path: Path) -> None:
    with _streaming_demo(tmp_path) as (proc, _, children):
        proc.kill()  # type: ignore[attr-defined]
        proc.wait()  # type: ignore[attr-defined]
        _wait_gone(children)


@pytest.mark.integration
@pytest.mark.slow
def test_a_broker_that_dies_mid_demo_stops_the_demo_naming_the_broker(tmp_path: Path) -> None:
    from tests.waiting import WAIT_S

    with _streaming_demo(tmp_path) as (proc, output, children):
        (broker,) = [pid for pid, command in children.items() if "tansu" in command]
        os.kill(broker, 9)
        assert proc.wait(WAIT_S) == 1  # type: ignore[attr-defined]
        _wait_gone(children)
    last = output.read_text().splitlines()[-1]
    log = tmp_path / "out" / "broker.log"
    assert last == f"error: the embedded broker stopped while consuming every reading; see {log}"


# ---------------------------------------------------------------- roadcast broker


def test_broker_port_0_is_a_free_port_and_out_of_range_ports_name_the_option(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from flows.cli import app
    from pipeline.kafka import broker

    asked: list[int | None] = []
    monkeypatch.setattr(broker, "serve_forever", lambda port, log_path: asked.append(port))
    assert CliRunner().invoke(app, ["broker", "--port", "0"]).exit_code == 0
    assert asked == [None]  # as without --port: the OS picks a free one
    for port in ("70000", "-1"):
        result = CliRunner().invoke(app, ["broker", "--port", port])
        assert result.exit_code == 2 and "--port" in result.output, result.output
    assert asked == [None]


class _ToFtp(_Quiet):
    """Redirects every file to an FTP server (urllib follows ftp:// redirects)."""

    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("Location", f"ftp://127.0.0.1:9/mirror{self.path}")
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_a_redirect_to_ftp_is_named_not_an_unreachable_server(tmp_path: Path) -> None:
    """urllib follows a redirect to ftp://; its failure read "cannot reach the server"
    (and the other files were not tried)."""
    with _mirror(_ToFtp) as url:
        text = _fetch_error(url, tmp_path / "data")
    assert "cannot reach the server" not in text and "not tried" not in text, text
    assert (
        "(download failed: the server redirected (HTTP 302) to "
        "'ftp://127.0.0.1:9/mirror/set/f.csv'; roadcast follows redirects to http:// and "
        "https:// only, not ftp: download that URL by hand)"
    ) in text, text
    assert text.count("the server redirected") == 2  # the second file was tried too
