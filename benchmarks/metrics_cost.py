"""What the Prometheus metrics cost the service: throughput with and without them.

The service's throughput phase (:func:`benchmarks.stream_service.service_throughput`:
``--steps`` steps produced at once, consumed first record to last, every loaded model)
runs ``--rounds`` times with :class:`pipeline.service.metrics.ServiceMetrics` and as
many times without, alternating (on, off, off, on, ...) so that both see the same
machine load, each on fresh topics, group and store. Reported: the median readings/s
and milliseconds per closed tick of each, their ratios (on / off) and the time the
``metrics`` stage took per tick (updating the metrics per batch and the lag per poll).

Bundles come from ``--models DIR``, or are trained first (persistence and AR, one
seed). ``python -m benchmarks.metrics_cost`` writes
``benchmarks/results/metrics_cost.json``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import uuid
from pathlib import Path
from typing import Any

from benchmarks.common import write_result
from benchmarks.stream_service import produce, service_throughput
from flows.reporting.text import print_table
from models.panel import SensorPanel
from pipeline.kafka.broker import EmbeddedBroker
from pipeline.settings import Settings, load_settings


def one_run(
    base: Settings, live: SensorPanel, models: dict[str, Any], on: bool, tmp: Path
) -> dict[str, Any]:
    """Readings/s and ms per tick of one throughput phase, with metrics or without."""
    from pipeline.kafka.clients import ensure_topics
    from pipeline.service.metrics import ServiceMetrics

    tag = uuid.uuid4().hex[:8]
    settings = base.model_copy(
        update={
            "topic_readings": f"mc.readings.{tag}",
            "topic_dlq": f"mc.dlq.{tag}",
            "topic_forecasts": f"mc.forecasts.{tag}",
            "topic_alerts": f"mc.alerts.{tag}",
            "consumer_group": f"mc.service.{tag}",
            "store_path": tmp / f"store-{tag}.sqlite",
        }
    )
    ensure_topics(settings)
    expected = produce(settings, live, 0.0)
    metrics = ServiceMetrics() if on else None
    per_s, counters = service_throughput(settings, models, expected, None, metrics=metrics)
    stages = counters["ms_per_tick"]
    return {
        "readings_per_s": round(per_s, 1),
        "ms_per_tick": round(sum(stages.values()), 3),
        "metrics_ms_per_tick": stages.get("metrics", 0.0),
        "stages_ms_per_tick": stages,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.metrics_cost", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--data", default=None, help="dataset spec (default: los-loop)")
    parser.add_argument("--models", type=Path, default=None, help="bundle directory to reuse")
    parser.add_argument("--steps", type=int, default=None, help="steps per throughput phase")
    parser.add_argument("--rounds", type=int, default=None, help="runs with and without each")
    args = parser.parse_args(argv)
    import torch

    from flows.demo.setup import choose_panel
    from pipeline.model_dir import load_bundles

    torch.set_num_threads(1)
    steps = args.steps or (24 if args.quick else 144)
    rounds = args.rounds or (1 if args.quick else 4)
    panel = choose_panel(args.data, data_dir=load_settings().data_dir)
    start = round(panel.n_time * 0.8)
    live = panel.slice(start, min(panel.n_time, start + steps))
    runs: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="roadcast-metrics-cost-") as name:
        tmp = Path(name)
        bundles = args.models or _train(panel, tmp / "train")
        models = load_bundles(bundles)
        with EmbeddedBroker(log_path=tmp / "broker.log") as broker:
            base = load_settings(bootstrap_servers=broker.bootstrap)
            for r in range(rounds):
                for on in (r % 2 == 0, r % 2 == 1):
                    runs[on].append(one_run(base, live, models, on, tmp))

    def median(on: bool, key: str) -> float:
        return round(statistics.median(run[key] for run in runs[on]), 3)

    result = {
        "quick": args.quick,
        "data": panel.name,
        "sensors": panel.n_nodes,
        "models": sorted(models),
        "steps": live.n_time,
        "rounds": rounds,
        "with_metrics": runs[True],
        "without_metrics": runs[False],
        "throughput_ratio": round(
            median(True, "readings_per_s") / median(False, "readings_per_s"), 3
        ),
        "ms_per_tick_ratio": round(median(True, "ms_per_tick") / median(False, "ms_per_tick"), 3),
        "metrics_ms_per_tick": median(True, "metrics_ms_per_tick"),
    }
    path = write_result("metrics_cost", result)
    print_table(
        f"the service with and without Prometheus metrics ({panel.name}, {panel.n_nodes} "
        f"sensors, {live.n_time} steps, {rounds} runs each, medians)",
        ["metrics", "readings/s", "ms per tick", "of which metrics"],
        [
            [label, median(on, "readings_per_s"), median(on, "ms_per_tick"),
             median(on, "metrics_ms_per_tick")]
            for label, on in (("on", True), ("off", False))
        ],
    )  # fmt: skip
    print(
        f"on / off: throughput {result['throughput_ratio']}, ms per tick "
        f"{result['ms_per_tick_ratio']} -> {path}"
    )


def _train(panel: SensorPanel, out: Path) -> Path:
    from flows.threads import limit_threads
    from flows.train_models import train_models
    from models.forecasters.comparison import TrainPlan

    plan = TrainPlan(models=("persistence", "ar"), seeds=1, epochs=1, progress=False, device="cpu")
    with limit_threads(1):
        train_models(panel, plan, out, report=False, log=lambda line: print(f"  train {line}"))
    return out / "bundles"


if __name__ == "__main__":
    main()
