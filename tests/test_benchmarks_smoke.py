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
    "data_formats": lambda d: all(
        r["same_readings_as_csv"] and _positive(r["median_s"]) for r in d["formats"]
    ),
    "data_memory": lambda d: (
        len(d["loads"]) == 2
        and all(_positive(r["peak_mb"]) and r["shape"][0] > 0 for r in d["loads"])
    ),
    "detect_workers": lambda d: d["files"] == 4 and d["same_results"] and _positive(d["speedup"]),
    "kafka_io": lambda d: all(_positive(r["median_per_s"]) for r in d["results"]),
    "forecast_accuracy": lambda d: (
        {"ar", "lstm", "tgclstm"} <= set(d["metrics"]["models"])
        and all(_positive(m["pooled"]["12"]["rmse"]) for m in d["metrics"]["models"].values())
    ),
    "generalization": lambda d: (
        len(d["networks"]) == 2
        and all(
            set(n["relative"]["12"]) == {"persistence", "ar", "lstm", "tgclstm"}
            and min(n["relative"]["12"].values()) == 1.0
            for n in d["networks"].values()
        )
    ),
    "interval_hours": lambda d: (
        d["summary"]["pairs"] == 3
        and all(
            0.0 < m["by_hour"]["coverage"] <= 1.0 and _positive(m["ratio"])
            for n in d["networks"].values()
            for m in n.values()
        )
    ),
    "level_shift": lambda d: (
        d["choice"]["chosen"] in d["choice"]["summary"]
        and all(
            v == 1.0
            for n in d["networks"].values()
            for m in n["models"].values()
            for part in m["ratio"]["off"].values()
            for v in part.values()
        )
    ),
    "tgclstm_speed": lambda d: all(_positive(r["epoch_s"]) for r in d["los_loop"]),
    "graph_training": lambda d: (
        all(
            _positive(r["csr_ms"]) and _positive(r["auto_ms"]) and _positive(r["xgrad_csr_ms"])
            for r in d["kernels"]
        )
        and all("error" not in r and _positive(r["peak_mb"]) for r in d["fits"])
    ),
    "stream": lambda d: (
        d["lost"] == 0
        and _positive(d["service_per_s"])
        and all(_positive(v) for v in d["idle_penalty"]["ratio"].values())
    ),
    "startup": lambda d: (
        all(_positive(r["first_forecast_s"]) and "group_joined" in r for r in d["runs"])
        and _positive(d["join_median_s"])
    ),
    "metrics_cost": lambda d: (
        _positive(d["throughput_ratio"]) and _positive(d["metrics_ms_per_tick"])
    ),
    "wire": lambda d: all(
        r["numbers"]["orjson"]["float32_exact_share"] == 1.0 and r["encoder"]["v2"]["records"] >= 1
        for r in d["runs"].values()
    ),
    "scale": lambda d: all(
        "error" not in fit and _positive(run["service"]["catch_up_readings_per_s"])
        for run in d["runs"]
        for fit in run["training"]
    ),
    "anomaly": lambda d: (
        all(
            math.isfinite(v) and v <= 100
            for v in d["nab"]["loco"]["ensemble"]["plain"]["per_category"].values()
        )
        and len(d["nab"]["loco"]["ensemble"]["plain"]["per_category"]) == 5
        and all(_positive(r["test"]["alerts"]) for r in d["simulated_alerts"]["results"])
    ),
    "simulated_alerts": lambda d: (
        len(d["seeds"]) == 2
        and all(_positive(r["alerts"]) for r in d["seeds"])
        and _positive(d["corroboration"]["test"]["alerts"])
    ),
    "alert_rate": lambda d: (
        len(d["results"]) == 4
        and sum(r["service_default"] for r in d["results"]) == 1
        and all(0 <= r["share_at_or_below"] <= 1 for r in d["results"])
    ),
    "alert_delivery": lambda d: (
        d["throughput"]["committed"]
        == d["throughput"]["alerts"]
        == d["throughput"]["in_alertmanager"]
        and all(r["requests"] >= 1 for r in d["policy"])
    ),
    "fuzz": lambda d: d["lost"] == 0 and d["alive"] and all(d["invariants"].values()),
    "hot_reload": lambda d: (
        d["forecasts_stored"] == d["forecasts_expected"] and _positive(d["swap_ms"])
    ),
    "soak": lambda d: (
        d["counters"]["ticks_closed"] == d["ticks"] > 0
        and d["counters"]["consumed"] == d["counters"]["valid"] == d["readings"] > 0
        and 0 < d["store_span_days"] <= d["keep_days"] + 1 / 24
        and all(d["invariants"].values())
        and len(d["segments"]) >= 3
    ),
    "drift": lambda d: (
        d["chosen"]["ratio"] > 1
        and all(
            e[rule]["delay_ticks"] is not None
            for e in d["results"].values()
            for rule in ("valid", "baseline")
        )
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
        timeout=1800,  # a hang guard, as pytest-timeout's
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    document = json.loads((tmp_path / f"{name}.json").read_text())
    assert document["benchmark"] == name and document["quick"] is True
    assert CHECKS[name](document), json.dumps(document)[:3000]
