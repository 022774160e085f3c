"""Prefect artifacts of roadcast's flows, under stable keys.

An artifact key names a *series*: every run of a flow publishes a new version under
the same key, so the Prefect UI shows the latest table and its history per key. Keys
are lowercase letters, digits and dashes (Prefect's rule) and never change between
releases; :data:`KEYS` lists them all so that tests and dashboards can rely on them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

KEYS: dict[str, str] = {
    "train_comparison": "roadcast-train-comparison",
    "train_report": "roadcast-train-report",
    "champion": "roadcast-champion",
    "forecast_latest": "roadcast-forecast-latest",
    "live_accuracy": "roadcast-live-accuracy",
    "live_report": "roadcast-live-report",
    "alerts": "roadcast-alerts",
    "replay": "roadcast-replay",
    "drift": "roadcast-drift",
}

_KEY = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


def check_key(key: str) -> str:
    """``key`` if it is a valid stable artifact key, else a ValueError naming the rule."""
    if not _KEY.fullmatch(key):
        raise ValueError(
            f"artifact key {key!r} must be lowercase letters, digits and single dashes "
            "(e.g. 'roadcast-live-accuracy')"
        )
    return key


def _cell(value: Any) -> Any:
    """JSON-safe table cell: NaN/inf become None (Prefect stores tables as JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def publish_table(key: str, records: Sequence[Mapping[str, Any]], description: str) -> Any:
    """Create a table artifact under ``key`` (one version per call); returns its id."""
    from prefect.artifacts import create_table_artifact

    rows = [{k: _cell(v) for k, v in r.items()} for r in records]
    return create_table_artifact(table=rows, key=check_key(key), description=description)


def publish_markdown(key: str, markdown: str, description: str) -> Any:
    """Create a Markdown artifact under ``key``; returns its id."""
    from prefect.artifacts import create_markdown_artifact

    return create_markdown_artifact(markdown=markdown, key=check_key(key), description=description)
