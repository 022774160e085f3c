"""Structured logs: one JSON object per line (``ts``, ``level``, ``event``, fields).

Modules log an event name as the message and their data in ``extra={"fields": {...}}``
so that log shippers can index them. Nothing here formats settings: callers pass only
what is safe to show (bootstrap servers, topics), never passwords.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, event, and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        doc.update(getattr(record, "fields", {}))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class _StderrHandler(logging.StreamHandler):
    """A stream handler that writes to ``sys.stderr`` as it is when a record comes, not
    as it was when the handler was made (a replaced and closed stderr would fail)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def configure_logging(level: str = "INFO", *, stream: TextIO | None = None) -> None:
    """Send the ``roadcast`` loggers' records, and Python warnings (a library's
    ``RuntimeWarning``), to stderr (or ``stream``) as JSON lines."""
    handler = _StderrHandler() if stream is None else logging.StreamHandler(stream)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger("roadcast")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    warned = logging.getLogger("py.warnings")
    warned.handlers[:] = [handler]
    warned.propagate = False
    logging.captureWarnings(True)
