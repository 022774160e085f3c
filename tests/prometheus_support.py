"""A real Prometheus server for the tests (Debian package ``prometheus``): its own config,
storage and free port, scraping the targets a test gives it every second, with rule files
evaluated every second; queried through its HTTP API."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

from pipeline.kafka.broker import free_port
from tests.processes import Daemon
from tests.waiting import WAIT_S


def prometheus_binary() -> str | None:
    """The ``prometheus`` executable, or None."""
    return shutil.which("prometheus")


def promtool_binary() -> str | None:
    """``promtool`` (shipped with the ``prometheus`` package), or None."""
    return shutil.which("promtool")


class Prometheus(Daemon):
    """``prometheus`` scraping ``targets`` (``HOST:PORT``, job ``roadcast``) with the
    alert rules of ``rule_files``; files and data under ``root``."""

    name = "Prometheus"

    def __init__(
        self, binary: str, root: Path, targets: list[str], rule_files: Sequence[Path] = ()
    ) -> None:
        super().__init__(binary, root, free_port())
        self.config = root / "prometheus.yml"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {"job_name": "roadcast", "static_configs": [{"targets": targets}]},
            ],
        }
        self.config.write_text(yaml.safe_dump(config))

    def args(self) -> list[str]:
        return [
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.root / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]

    # --- HTTP API ---------------------------------------------------------------------

    def api(self, path: str, **params: str) -> Any:
        """``data`` of a successful API answer; raises on an error status."""
        answer = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=WAIT_S)
        body = answer.json()
        if body.get("status") != "success":
            raise ValueError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's samples: ``[{"metric": {...}, "value": [t, "v"]}, ...]``."""
        data = self.api("query", query=expr)
        return list(data["result"]) if data["resultType"] == "vector" else [data]

    def value(self, expr: str) -> float | None:
        """The single value of an instant query (None when it has no sample)."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None
