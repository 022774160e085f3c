"""Shared fixtures. Real services (broker, Prefect server) are started by fixtures,
never mocked. Tests that need ``../shared/data`` skip on a user's machine without it
but fail under CI (``CI=true``), where a silent skip would hide breakage."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

REPO = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path:
    env = os.environ.get("ROADCAST_DATA_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data sets (``ROADCAST_DATA_DIR``, default ``../shared/data``)."""
    path = _shared_data_dir()
    if not (path / "los-loop" / "los_speed.csv").is_file():
        reason = f"real data not found in {path}; set ROADCAST_DATA_DIR=../shared/data"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI must have the shared data: {reason}")
        pytest.skip(reason)
    return path
