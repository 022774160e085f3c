"""Download a public data set into the data directory and check its sha256.

Each file is written to a temporary name and only renamed into place once its digest
matches, so an interrupted or tampered download never looks like data. Every download is
checked: against the sha256 in :data:`~pipeline.data.datasets.DATASETS`, else the MD5
its host publishes, else a sha256 the user supplies (``sha256={path: hex}``, the
``--sha256 PATH=HEX`` option); a file with none of them is not downloaded. Files
already present with the right checksum are not downloaded again. When a file cannot be
downloaded (no network, no URL, no checksum), :class:`FetchError` lists exactly which
files to put where.

Every download has deadlines: the answer's headers (or a local file's opening) within
``timeout``, then at least :data:`MIN_RATE` bytes a second, and at most
:data:`MAX_DOWNLOAD_BYTES` in all; the temporary file is created anew, never through a
link left in its place.
"""

from __future__ import annotations

import hashlib
import http.client
import math
import os
import re
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pipeline.data.datasets import DATASETS, DatasetError, DatasetInfo, RemoteFile, dataset_dir

_CHUNK = 1 << 20
_UNREACHABLE = "cannot reach the server"
# A download must deliver at least this many bytes a second over every span of
# ``timeout`` seconds: a server that trickles bytes never trips the per-read timeout.
MIN_RATE = 1024
# No data set file is near this; a server that never stops sending must not fill the disk.
MAX_DOWNLOAD_BYTES = 1 << 30
MAX_TIMEOUT_S = 86_400.0


class FetchError(DatasetError):
    """Some files could not be fetched; the message says where to put them by hand."""


@dataclass(frozen=True)
class Fetched:
    """What happened to one file: ``"present"``, ``"downloaded"`` or ``"failed"``."""

    file: RemoteFile
    path: Path
    status: str
    detail: str = ""


def sha256_of(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest (``sha256`` or ``md5``) of a file, read in chunks."""
    digest = hashlib.new(algorithm)
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def parse_sha256_options(items: Sequence[str], dataset: str) -> dict[str, str]:
    """``["PATH=HEX", ...]`` -> ``{PATH: hex}`` for files of ``dataset``.

    Raises
    ------
    DatasetError
        For an item that is not ``PATH=HEX`` with 64 hex digits, a path that is not
        one of the data set's files, or two digests for one path.
    """
    info = DATASETS.get(dataset)
    paths = [f.path for f in info.files] if info is not None else []
    out: dict[str, str] = {}
    for item in items:
        path, sep, digest = item.partition("=")
        digest = digest.strip().lower()
        if not sep or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise DatasetError(f"--sha256 {item!r}: expected PATH=HEX with 64 hex digits")
        if path.strip() not in paths:
            raise DatasetError(f"--sha256 {item!r}: {dataset} has no file {path!r}; it has {paths}")
        if out.get(path.strip(), digest) != digest:
            raise DatasetError(
                f"--sha256 gives {path.strip()!r} two digests ({out[path.strip()][:12]}... and "
                f"{digest[:12]}...); give the one you trust"
            )
        out[path.strip()] = digest
    return out


def _expected(remote: RemoteFile, supplied: Mapping[str, str]) -> tuple[str, str] | None:
    """``(algorithm, hex)`` a download of ``remote`` must match, None when none is known."""
    if remote.path in supplied:
        return "sha256", supplied[remote.path]
    if remote.sha256:
        return "sha256", remote.sha256
    if remote.md5:
        return "md5", remote.md5
    return None


def check_files(info: DatasetInfo, root: Path) -> tuple[int, list[str]]:
    """Compare the files of ``info`` under ``root`` that have a published digest with
    it: ``(files checked, one line per file that differs)`` (a cut or edited copy reads
    as a smaller or other data set without any error)."""
    checked, differ = 0, []
    for remote in info.files:
        expected = _expected(remote, {})
        path = root / remote.path
        if expected is None or not path.is_file():
            continue
        algorithm, digest = expected
        checked += 1
        if sha256_of(path, algorithm) != digest.lower():
            differ.append(
                f"{remote.path}: its {algorithm} is not the published file's (cut short or "
                f"edited?); `roadcast data fetch {info.name}` replaces it"
            )
    return checked, differ


def fetch_dataset(
    dataset: str | DatasetInfo,
    *,
    data_dir: Path | None = None,
    mirror: str | None = None,
    timeout: float = 30.0,
    progress: Callable[[Fetched], None] | None = None,
    sha256: Mapping[str, str] | None = None,
) -> list[Fetched]:
    """Download the files of ``dataset`` into ``data_dir`` (default ``ROADCAST_DATA_DIR``).

    Parameters
    ----------
    dataset : a name from :data:`DATASETS` or a :class:`DatasetInfo`.
    data_dir : target directory; files go to ``data_dir / file.path``.
    mirror : optional base URL (or local directory) replacing each file's origin: the
        file is fetched from ``mirror + "/" + file.path`` (a local or company mirror).
    timeout : seconds per connection attempt and per read; a download that delivers
        under :data:`MIN_RATE` bytes a second over ``timeout`` seconds fails as too slow.
    progress : called once per file as it is handled.
    sha256 : ``{path: hex}`` digests the user vouches for, for files that have no
        published checksum (or to accept another version of one).

    Returns
    -------
    list of Fetched, one per file.

    Raises
    ------
    FetchError
        When a required file is still missing afterwards; the message lists each
        missing file, its target path and where it comes from. Also for a data
        directory that is a file or cannot be written, and a ``mirror`` that is
        neither a URL nor a directory.
    """
    info = DATASETS.get(dataset) if isinstance(dataset, str) else dataset
    if info is None:
        raise DatasetError(f"unknown data set {dataset!r}; known: {', '.join(DATASETS)}")
    if (problem := timeout_problem(timeout)) is not None:
        raise FetchError(f"--timeout {problem}")
    root = dataset_dir(data_dir)
    if root.exists() and not root.is_dir():
        raise FetchError(
            f"the data directory {root} is a file; pass --data-dir (or set "
            "ROADCAST_DATA_DIR to) a directory"
        )
    base = _mirror_url(mirror)
    results = []
    unreachable: str | None = None
    for remote in info.files:
        if unreachable is not None and not remote.present_in(root):
            # One refused or unresolvable host is enough: do not wait out every timeout.
            result = Fetched(remote, root / remote.path, "failed", f"not tried: {unreachable}")
        else:
            result = _fetch_one(remote, root, base, timeout, dict(sha256 or {}))
            if result.detail.startswith(_UNREACHABLE):
                unreachable = result.detail
        results.append(result)
        if progress is not None:
            progress(result)
    failed = [r for r in results if r.status == "failed" and r.file.required]
    if failed:
        lines = [f"could not fetch {info.name} into {root}; put these files there by hand:"]
        for r in failed:
            mirrored = f"{base.rstrip('/')}/{r.file.path}" if base else None
            origin = mirrored or r.file.url or info.manual or info.source
            lines.append(f"  {r.path}  <- {origin}  ({r.detail})")
        if info.manual:
            lines.append(f"  ({info.manual})")
        raise FetchError("\n".join(lines))
    return results


def _mirror_url(mirror: str | None) -> str | None:
    """``--mirror`` as a base URL: a URL as given, a local directory as ``file://``."""
    if mirror is None or re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", mirror):
        return mirror
    folder = Path(mirror).expanduser()
    if not folder.is_dir():
        raise FetchError(
            f"--mirror {mirror!r} is neither a URL (https://..., file:///...) nor a directory"
        )
    return folder.resolve().as_uri()


def _fetch_one(
    remote: RemoteFile, root: Path, mirror: str | None, timeout: float, supplied: dict[str, str]
) -> Fetched:
    target = root / remote.path
    expected = _expected(remote, supplied)
    if target.is_file() and (expected is None or sha256_of(target, expected[0]) == expected[1]):
        return Fetched(remote, target, "present")
    if not target.is_file() and remote.present_in(root):
        return Fetched(remote, target, "present", "an equivalent file is there")
    url = f"{mirror.rstrip('/')}/{remote.path}" if mirror else remote.url
    if url is None:
        return Fetched(remote, target, "failed", "no public URL: manual download")
    if expected is None:
        return Fetched(
            remote,
            target,
            "failed",
            f"no published checksum: pass --sha256 {remote.path}=HEX from a copy you trust",
        )
    created = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
    partial: Path | None = None
    try:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            # A name of its own (created anew, O_EXCL): a second fetch into the same
            # folder at the same time neither deletes nor reads this one.
            fd, name = tempfile.mkstemp(
                prefix=f".{target.name}.", suffix=".part", dir=target.parent
            )
            partial = Path(name)
            out = os.fdopen(fd, "wb")
        except OSError as exc:
            raise FetchError(
                f"cannot write a temporary file next to {target} in the data directory: {exc}"
            ) from None
        with out:
            try:
                detail, sent = _download(url, out, timeout)
            except _WriteFailed as exc:
                raise FetchError(
                    f"cannot write {target} in the data directory (disk full?): {exc.__cause__}"
                ) from None
        if detail is not None:
            return Fetched(remote, target, "failed", detail)
        algorithm, want = expected
        got = sha256_of(partial, algorithm)
        if got != want:
            note = f"; {sent}" if sent else ""
            return Fetched(
                remote,
                target,
                "failed",
                f"{algorithm} mismatch: got {got[:12]}..., expected {want[:12]}...{note}",
            )
        try:
            partial.replace(target)
        except OSError as exc:  # e.g. a folder where the file belongs
            return Fetched(remote, target, "failed", f"cannot put it in place: {exc}")
        return Fetched(remote, target, "downloaded")
    finally:
        if partial is not None and partial.is_file():  # never left half-written
            partial.unlink()
        if not target.is_file():
            _remove_empty(created)


def timeout_problem(timeout: float) -> str | None:
    """What is wrong with ``timeout`` as ``--timeout`` (None: nothing)."""
    if math.isfinite(timeout) and 0 < timeout <= MAX_TIMEOUT_S:
        return None
    return f"must be a number of seconds > 0 and at most {MAX_TIMEOUT_S:g}, got {timeout}"


def _download(url: str, out: BinaryIO, timeout: float) -> tuple[str | None, str]:
    """Copy ``url`` into ``out``: (None on success, else why it failed (a network or
    source problem; a local write error raises :class:`FetchError`), and what the answer
    says it holds when that is not the file's bytes ("" otherwise))."""
    try:
        response = _open(url, timeout)
    except _Redirected as exc:
        exc.close()
        return f"download failed: {exc.reason}", ""
    except urllib.error.HTTPError as exc:  # the server answered: try the other files
        return f"download failed: HTTP {exc.code} {exc.reason}", ""
    except http.client.HTTPException as exc:  # an answer that is not HTTP
        return f"download failed: not an HTTP answer ({type(exc).__name__}: {exc})", ""
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        if url.startswith("file:") and isinstance(reason, OSError):  # a local mirror
            missing = isinstance(reason, FileNotFoundError)
            why = "not found" if missing else reason.strerror or str(reason)
            return f"download failed: {why} at {url}", ""
        return f"{_UNREACHABLE}: {reason}", ""
    with response:
        headers = response.headers
        size = headers.get("Content-Length") if headers else None
        size = int(size) if size is not None and size.isdigit() else None
        if size is not None and size > MAX_DOWNLOAD_BYTES:
            return f"download refused: {size} bytes, over {MAX_DOWNLOAD_BYTES} bytes", ""
        try:
            total = _copy(response, out, timeout)
        except http.client.IncompleteRead as exc:
            return f"download cut short: {len(exc.partial)} bytes read, more expected", ""
        except _Failed as exc:
            return str(exc), ""
        except (http.client.HTTPException, OSError, ValueError) as exc:  # reset, stalled
            return f"download cut short after {out.tell()} bytes: {exc or type(exc).__name__}", ""
        if size is not None and total < size and not _encoded(headers):
            return f"download cut short: {total} of {size} bytes", ""
        return None, _what_was_sent(headers)


class _Failed(Exception):
    """A download given up on; the message says why."""


class _WriteFailed(Exception):
    """The local copy could not be written (its cause is the ``OSError``)."""


def _copy(response: Any, out: BinaryIO, timeout: float) -> int:
    """Copy the body of ``response`` into ``out`` under the rate and size limits; the
    number of bytes."""
    since, got, total = time.monotonic(), 0, 0
    while chunk := response.read1(_CHUNK):
        try:
            out.write(chunk)
        except OSError as exc:
            raise _WriteFailed from exc
        got += len(chunk)
        total += len(chunk)
        if total > MAX_DOWNLOAD_BYTES:
            raise _Failed(f"download stopped: over {MAX_DOWNLOAD_BYTES} bytes, no data set's size")
        elapsed = time.monotonic() - since
        if elapsed >= timeout:
            if got < MIN_RATE * elapsed:
                raise _Failed(
                    f"download too slow: {got} bytes in {elapsed:.1f} s, under "
                    f"{MIN_RATE} bytes/s (--timeout {timeout:g} s)"
                )
            since, got = time.monotonic(), 0
    return total


def _encoded(headers: Any) -> str:
    """The answer's content encoding other than identity ("" when none)."""
    value = (headers.get("Content-Encoding") or "") if headers else ""
    return "" if value.strip().lower() in ("", "identity") else value.strip()


def _what_was_sent(headers: Any) -> str:
    """What the answer's headers say it holds when a checksum differs: an encoded copy or
    an HTML page (a server's error or login page sent with status 200)."""
    if encoding := _encoded(headers):
        return f"the server sent it {encoding}-encoded (decode it and pass the copy by hand)"
    kind = (headers.get("Content-Type") or "") if headers else ""
    if kind.split(";")[0].strip().lower() in ("text/html", "application/xhtml+xml"):
        return "the server sent an HTML page (an error or login page?), not the file"
    return ""


class _Redirected(urllib.error.HTTPError):
    """A redirect to a URL that is not http(s) (urllib follows ftp:// ones, whose
    failure would read as an unreachable server)."""


class _HttpRedirectsOnly(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http:// and https:// only; refuses the others by name."""

    def redirect_request(
        self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> Any:
        scheme = urllib.parse.urlsplit(urllib.parse.urljoin(req.full_url, newurl)).scheme
        if scheme.lower() not in ("http", "https"):
            shown = newurl if len(newurl) <= 200 else newurl[:200] + "..."
            why = (
                f"the server redirected (HTTP {code}) to {shown!r}; roadcast follows "
                f"redirects to http:// and https:// only, not {scheme or 'no scheme'}: "
                "download that URL by hand"
            )
            raise _Redirected(req.full_url, code, why, headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpRedirectsOnly)


def _open(url: str, timeout: float) -> Any:
    """``urlopen(url)``, given up after ``timeout`` seconds in all: the per-read timeout
    lets a server trickle its headers for hours, and opening a local FIFO never returns.
    The abandoned opener is a daemon thread; a response it gets after that is closed."""
    done = threading.Event()
    lock = threading.Lock()
    box: dict[str, Any] = {}

    def opener() -> None:
        try:
            response = _OPENER.open(url, timeout=timeout)
        except BaseException as exc:
            box["error"] = exc
        else:
            with lock:
                abandoned = box.get("abandoned", False)
                if not abandoned:
                    box["response"] = response
            if abandoned:
                response.close()
        done.set()

    threading.Thread(target=opener, name="roadcast-fetch-open", daemon=True).start()
    if not done.wait(timeout):
        with lock:
            if "response" not in box:
                box["abandoned"] = True
        if box.get("abandoned"):
            raise TimeoutError(f"no answer within {timeout:g} s (--timeout)")
        done.wait()
    if "error" in box:
        raise box["error"]
    return box["response"]


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders this download created (innermost first) if still empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return  # not empty (another file landed there) or already gone
