"""A data file opened as UTF-8 text, plain or gzip-compressed (``speeds.csv.gz``, or a
``.csv`` whose bytes are gzip's: the content decides, not the name, so a plain file named
``.gz`` or ``.zip`` is read as plain text), and refused with the reason when it is no
text: NUL bytes, UTF-16 without a byte-order mark, a zip archive or a bzip2, xz or zstd
stream (by their first bytes), a truncated or corrupt gzip stream, or one that unpacks to
more than :data:`MAX_UNPACKED`.
"""

from __future__ import annotations

import codecs
import functools
import gzip
import re
import zlib
from pathlib import Path
from typing import TextIO

from pipeline.data.cells import DatasetError

GZIP_MAGIC = b"\x1f\x8b"
# Largest text a gzip-compressed data file may unpack to (a small file of repeated bytes
# can unpack to terabytes).
MAX_UNPACKED = 16 * 2**30
_HEAD = 4096
# What a file that is not UTF-8 text often is, by its first bytes: compressed (refused
# before reading, whatever its name) or UTF-16.
_PACKED = {GZIP_MAGIC: "gzip-compressed", b"PK\x03\x04": "a zip archive",
           b"\xfd7zXZ\x00": "xz-compressed", b"\x28\xb5\x2f\xfd": "zstd-compressed"}  # fmt: skip
_BZIP2 = re.compile(rb"BZh[1-9](1AY&SY|\x17rE8P\x90)")  # a block, or the end of an empty stream
_MAGIC = {**_PACKED, b"\xff\xfe": "UTF-16 text", b"\xfe\xff": "UTF-16 text"}


def is_gzip(path: Path) -> bool:
    """True when ``path``'s first bytes are gzip's."""
    with path.open("rb") as f:
        return f.read(2) == GZIP_MAGIC


def open_text(path: Path, *, errors: str = "strict") -> TextIO:
    """``path`` as UTF-8 text for the csv module (a byte-order mark skipped), unpacked
    when gzip-compressed; call :func:`check_text` first (it names a corrupt stream)."""
    if is_gzip(path):
        return gzip.open(path, "rt", newline="", encoding="utf-8-sig", errors=errors)
    return path.open(newline="", encoding="utf-8-sig", errors=errors)


def check_text(path: Path) -> None:
    """Refuse a file whose first bytes are not UTF-8 text (NUL bytes, a compressed or
    binary file, UTF-16) before anything reads it by lines: a file without a line break
    would be read whole into memory (a 2 GB file of NUL bytes). A gzip-compressed file is
    unpacked once to the end first, so a truncated or corrupt one is named here."""
    stat = path.stat()
    head = _head(str(path), stat.st_mtime_ns, stat.st_size)
    packed = " (unpacked from gzip)" if is_gzip(path) else ""
    if head.count(0) * 4 > len(head) and not head.startswith(tuple(_MAGIC)):  # 'A\x00,\x00'
        raise DatasetError(
            f"{path}: mostly NUL bytes{packed}, not text: UTF-16 without a byte-order mark, "
            "or a binary file? Save it as UTF-8 CSV"
        )
    if (kind := _packed(head)) is not None:
        inside = "gzip-compressed, and inside: " if is_gzip(path) else ""
        raise DatasetError(f"{path}: {inside}{kind}: decompress it first")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: {not_text(path, exc)}") from None


def not_text(path: Path, exc: UnicodeDecodeError) -> str:
    """Why ``path`` is not read as UTF-8 text, naming a compressed or UTF-16 content."""
    stat = path.stat()
    head = _head(str(path), stat.st_mtime_ns, stat.st_size)
    kind = next((what for magic, what in _MAGIC.items() if head.startswith(magic)), None)
    inside = "gzip-compressed, and inside: " if is_gzip(path) else ""
    if kind is not None:
        return f"{inside}{kind}, not UTF-8 text; decompress or save it as UTF-8 CSV"
    return f"{inside}not UTF-8 text ({exc.reason}); save it as UTF-8"


def _packed(head: bytes) -> str | None:
    """The compression the first bytes ``head`` show (``bzip2-compressed``), else None."""
    if _BZIP2.match(head):
        return "bzip2-compressed"
    return next((kind for magic, kind in _PACKED.items() if head.startswith(magic)), None)


@functools.lru_cache(maxsize=8)
def _head(path: str, mtime_ns: int, size: int) -> bytes:
    """The first bytes of the file's content (unpacked, the whole gzip stream checked);
    cached per version of the file, since each reader of a file calls this."""
    with open(path, "rb") as f:
        if f.read(2) != GZIP_MAGIC:
            f.seek(0)
            return f.read(_HEAD)
    head, total = b"", 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(1 << 20):
                head = head or chunk[:_HEAD]
                total += len(chunk)
                if total > MAX_UNPACKED:
                    raise DatasetError(
                        f"{path}: unpacks to more than {MAX_UNPACKED // 2**30} GiB; unpack it "
                        "yourself (gunzip) if it is meant to be this large"
                    )
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path}: gzip-compressed but cannot be unpacked ({exc})") from None
    return head
