"""Child processes that behave like ones started from a terminal."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Self

import httpx

from tests.waiting import WAIT_S, wait_until


def default_sigint() -> None:
    """``preexec_fn`` that gives the child the default SIGINT handler.

    A shell starts background jobs with SIGINT ignored, and the ignore is inherited: a test
    run from such a job would otherwise send Ctrl-C to a child that cannot receive it.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie nobody reaped yet counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def children_of(pid: int) -> dict[int, str]:
    """The live child processes of ``pid``: {pid: command line}."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and alive(int(entry.name)):
            found[int(entry.name)] = command
    return found


class Daemon:
    """A server binary run for a test: its arguments from :meth:`args`, its output in
    ``root/<name>.log``, ready once ``GET /-/ready`` answers 200 (Prometheus and
    Alertmanager both serve it); stopped with SIGTERM, then SIGKILL."""

    name = "daemon"

    def __init__(self, binary: str, root: Path, port: int) -> None:
        self.binary = binary
        self.root = root
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = root / f"{self.name.lower()}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def args(self) -> list[str]:
        """The command line after the binary."""
        raise NotImplementedError

    def start(self) -> Self:
        with open(self.log, "ab") as sink:
            self._proc = subprocess.Popen(
                [self.binary, *self.args()], stdout=sink, stderr=subprocess.STDOUT
            )
        wait_until(self._ready, what=f"{self.name} to be ready", poll_s=0.2, details=self.tail)
        return self

    def _ready(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited: {self.tail()}")
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=WAIT_S).status_code == 200
        except httpx.HTTPError:
            return False

    def tail(self) -> str:
        return self.log.read_text()[-3000:] if self.log.is_file() else ""

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=WAIT_S)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
