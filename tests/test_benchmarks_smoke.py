"""Every benchmark of ``make bench`` runs (``--quick``) and writes its JSON.

Numbers are not asserted here (speed and accuracy are measured in the benchmarks
themselves); this catches a benchmark broken by a change before ``make bench`` does.
Results go to a temporary folder (``ROADCAST_BENCH_RESULTS``), never over the
measured ones in ``benchmarks/results/``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from benchmarks.__main__ import BENCHMARKS

REPO = Path(__file__).resolve().parents[1]


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


CHECKS: dict[str, Callable[[dict[str, Any]], bool]] = {
    "data_scale": lambda d: all(_positive(n["hops3_ffr_pairs"]) for n in d["networks"]),
    "kafka_io": lambda d: all(_positive(r["median_per_s"]) for r in d["results"]),
    "forecast_accuracy": lambda d: (
        {"ar", "lstm", "tgclstm"} <= set(d["metrics"]["models"])
        and all(_positive(m["pooled"]["12"]["rmse"]) for m in d["metrics"]["models"].values())
    ),
    "tgclstm_speed": lambda d: all(_positive(r["epoch_s"]) for r in d["los_loop"]),
    "stream": lambda d: d["lost"] == 0 and _positive(d["service_per_s"]),
    "anomaly": lambda d: all(
        0 <= v["profiles"]["standard"]["score"] <= 100
        for v in d["nab_realTraffic"]["detectors"].values()
    ),
}


def test_every_benchmark_has_a_smoke_check() -> None:
    assert set(CHECKS) == set(BENCHMARKS)


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_quick_run_writes_its_result(
    name: str, shared_data: Path, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "ROADCAST_BENCH_RESULTS": str(tmp_path),
        "ROADCAST_DATA_DIR": str(shared_data),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    run = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", "--quick"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    document = json.loads((tmp_path / f"{name}.json").read_text())
    assert document["benchmark"] == name and document["quick"] is True
    assert CHECKS[name](document), json.dumps(document)[:3000]
