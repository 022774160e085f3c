"""What every benchmark shares: where results go and the machine facts beside them.

Tables are printed with :func:`flows.reporting.text.print_table`, as the CLI prints them."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """Facts that make a timing interpretable: CPU count, Python, torch and its device."""
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return info


def shared_data_dir() -> Path | None:
    """``../shared/data`` beside the repository when it exists and ``ROADCAST_DATA_DIR`` is
    not set; else None (the data loaders then use that variable or their own default)."""
    if os.environ.get("ROADCAST_DATA_DIR"):
        return None
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    return shared if shared.is_dir() else None


def write_result(name: str, payload: dict[str, Any], results_dir: Path | None = None) -> Path:
    """Write ``payload`` (plus machine facts) to ``benchmarks/results/<name>.json``, or
    under ``$ROADCAST_BENCH_RESULTS`` when set (smoke runs must not replace measured results)."""
    out_dir = results_dir or Path(os.environ.get("ROADCAST_BENCH_RESULTS") or RESULTS_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    document = {"benchmark": name, "machine": machine(), **payload}
    path.write_text(json.dumps(document, indent=2, sort_keys=False, default=float) + "\n")
    return path


def write_losses(name: str, losses: dict[str, Any], results_dir: Path | None = None) -> Path:
    """Write per-window losses (:func:`window_losses`, per network or model) to
    ``<name>_losses.json.gz`` beside ``<name>.json``: compact and compressed, as indented
    JSON they would make the result file megabytes."""
    import gzip

    out_dir = results_dir or Path(os.environ.get("ROADCAST_BENCH_RESULTS") or RESULTS_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}_losses.json.gz"
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=9) as out:
        json.dump(losses, out, separators=(",", ":"), default=float)
    return path


def _fixed_work() -> None:
    """A few milliseconds of numpy, pandas and interpreter work, the same every call."""
    import numpy as np
    import pandas as pd

    values = np.arange(20_000, dtype=np.float32)
    for i in range(100):
        float((values * i).sum())
        pd.Timestamp(1_700_000_000_000_000_000 + i, tz="UTC")


def idle_penalty(idles_s: tuple[float, ...] = (0.5, 2.0), repeats: int = 5) -> dict[str, Any]:
    """How much slower the same CPU work runs right after the process sat idle.

    On a virtual machine whose host reclaims or evicts idle guest memory and caches, the
    first work after a pause can take many times as long as back-to-back; any latency
    measured after a wait (a tick closing on its grace) pays it. Returns the median ms
    back to back (``hot_ms``), after each idle (``after_idle_ms``) and their ratios.
    """
    import statistics

    def timed() -> float:
        start = time.perf_counter()
        _fixed_work()
        return (time.perf_counter() - start) * 1000

    timed()
    hot = statistics.median(timed() for _ in range(repeats))
    after: dict[str, float] = {}
    for idle in idles_s:
        runs = []
        for _ in range(repeats):
            time.sleep(idle)
            runs.append(timed())
        after[f"{idle:g}"] = round(statistics.median(runs), 2)
    return {
        "hot_ms": round(hot, 2),
        "after_idle_ms": after,
        "ratio": {k: round(v / hot, 1) for k, v in after.items()},
    }


def open_ticks(service: Any) -> int:
    """Ticks open in a running service, read from another thread (-1 when its dict
    changed while read: ask again)."""
    try:
        return len(service.assembler.open_ticks)
    except RuntimeError:
        return -1


def window_losses(results: dict[str, Any]) -> dict[str, Any]:
    """Every run's per-window test loss (``[seed][window]`` per horizon, NaN as null), so
    a paired test can be recomputed from the JSON without refitting."""
    return {
        name: {
            h: [
                [None if not math.isfinite(v) else round(float(v), 6) for v in run[h]]
                for run in per
            ]
            for h in per[0]
        }
        for name, result in results.items()
        if (per := [r.scores.losses for r in result.runs])
    }


def log_log_slope(sizes: list[int], costs: list[float]) -> float | None:
    """The exponent of ``cost ~ size^slope`` (least squares on log-log) over the positive,
    finite costs; None with fewer than 2 of them."""
    import numpy as np

    points = [(n, c) for n, c in zip(sizes, costs, strict=True) if c and math.isfinite(c) and c > 0]
    if len(points) < 2:
        return None
    x, y = np.log([p[0] for p in points]), np.log([p[1] for p in points])
    return float(np.polyfit(x, y, 1)[0])
