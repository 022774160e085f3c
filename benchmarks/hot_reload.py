"""What a hot reload costs the service, next to what a tick costs, in one run.

``python -m benchmarks.hot_reload [--sensors 207] [--swaps 6] [--ticks 30] [--quick]``

The real service on an embedded broker, a simulated network, AR(12) and persistence
served from a registry; a replay in phases of ``--ticks`` ticks, and between phases a
new AR version promoted (or the previous one rolled back). Measured:

* **at the tick boundary**, the time of :meth:`PollProcessor.swap_models` (new model
  slots, the live scorer rebuilt from the store, the version rows): the loop's stage
  ``swap``, per swap, against the loop's time per tick (every other stage, per tick);
* **off the loop**, the background load of a serving set (bundles read and verified);
* **between batches**, one :meth:`ServingWatcher.poll` when nothing changed (the check
  the loop makes after every batch) at the default interval (1 s) and when it ``stat``s
  ``serving.json`` on every call;
* that every tick was forecast exactly once (count of the store's forecasts).

Results: ``benchmarks/results/hot_reload.json`` and a table.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import write_result
from flows.reporting.text import print_table


def _poll_us(bundles: Path, running: dict[str, str], every_s: float, calls: int) -> float:
    from pipeline.registry.watch import ServingWatcher

    watcher = ServingWatcher(bundles, running, every_s=every_s)
    try:
        began = time.perf_counter()
        for _ in range(calls):
            watcher.poll()
        return (time.perf_counter() - began) / calls * 1e6
    finally:
        watcher.close()


def run(sensors: int, swaps: int, ticks: int) -> dict[str, Any]:
    from models.forecasters.ar import AutoRegressive
    from models.forecasters.baselines import Persistence
    from pipeline.data.simulate import simulate_network
    from pipeline.kafka.broker import EmbeddedBroker
    from pipeline.kafka.clients import ensure_topics, make_producer
    from pipeline.kafka.replay import replay
    from pipeline.model_dir import write_network
    from pipeline.registry.serving import promote, rollback
    from pipeline.registry.versions import register
    from pipeline.registry.watch import ServingWatcher, load_serving
    from pipeline.service.config import ServiceConfig
    from pipeline.service.loop import ForecastService
    from pipeline.service.store import Store
    from pipeline.settings import load_settings

    panel = simulate_network(sensors=sensors, days=3, seed=1)
    phases = swaps + 1
    with tempfile.TemporaryDirectory(prefix="roadcast-reload-") as name:
        tmp = Path(name)
        bundles = tmp / "bundles"
        first = AutoRegressive(window=12, horizon=12).fit(panel.slice(0, 300))
        second = AutoRegressive(window=12, horizon=12).fit(panel.slice(300, 600))
        a = register(bundles, first, label="a")
        b = register(bundles, second, label="b")
        register(bundles, Persistence(window=12, horizon=12).fit(panel.slice(0, 300)))
        write_network(bundles, panel)
        promote(bundles, {"ar": a.version, "persistence": None}, replace=True)
        began = time.perf_counter()
        loaded = load_serving(bundles)
        load_s = time.perf_counter() - began
        poll_default = _poll_us(bundles, loaded.ids(), 1.0, 20_000)
        poll_stat = _poll_us(bundles, loaded.ids(), 0.0, 2_000)
        live = panel.slice(600, 600 + phases * ticks)
        with EmbeddedBroker(log_path=tmp / "broker.log") as broker:
            settings = load_settings(
                bootstrap_servers=broker.bootstrap, store_path=tmp / "store.sqlite"
            )
            ensure_topics(settings)
            config = ServiceConfig(allowed_lateness="0min", durable=False, poll_timeout_ms=50)
            service = ForecastService(
                settings, config, loaded.models, versions=loaded.versions,
                watcher=ServingWatcher(bundles, loaded.ids(), every_s=0.05),
            )  # fmt: skip
            stop = threading.Event()
            thread = threading.Thread(target=service.run, kwargs={"stop": stop,
                                      "handle_signals": False}, daemon=True)  # fmt: skip
            thread.start()
            producer = make_producer(settings)
            try:
                for phase in range(phases):
                    if phase:
                        if phase % 2:
                            promote(bundles, {"ar": b.version})
                        else:
                            rollback(bundles)
                        _wait(lambda p=phase: service.counters["model_swaps"] == p)
                    part = live.slice(phase * ticks, (phase + 1) * ticks)
                    replay(part, producer, settings.topic_readings, progress=False)
                    _wait(lambda p=phase: service.counters["ticks_closed"] == (p + 1) * ticks)
            finally:
                producer.close()
                stop.set()
                thread.join()
        stages = dict(service.stage_s)
        closed = service.counters["ticks_closed"]
        with Store(settings.store_path, readonly=True) as store:
            forecasts = store.count("forecasts")
    swap_ms = 1000 * stages.pop("swap", 0.0) / swaps
    tick_ms = 1000 * sum(stages.values()) / closed
    return {
        "sensors": sensors,
        "models": ["ar (window 12, horizon 12)", "persistence"],
        "swaps": swaps,
        "ticks": closed,
        "forecasts_stored": forecasts,
        "forecasts_expected": closed * sensors * 2,
        "swap_ms": swap_ms,
        "tick_ms": tick_ms,
        "swap_over_tick": swap_ms / tick_ms if tick_ms else float("nan"),
        "background_load_s": load_s,
        "poll_us_default": poll_default,
        "poll_us_stat_each_call": poll_stat,
    }


def _wait(predicate: Any, limit_s: float = 600.0) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the service did not get there within the limit")
        time.sleep(0.02)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensors", type=int, default=207)
    parser.add_argument("--swaps", type=int, default=6)
    parser.add_argument("--ticks", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="30 sensors, 2 swaps (smoke)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sensors, args.swaps, args.ticks = 30, 2, 10
    result = {**run(args.sensors, args.swaps, args.ticks), "quick": args.quick}
    print_table(
        f"hot reload, {result['sensors']} sensors, {result['swaps']} swaps",
        ["per swap at the boundary (ms)", "per tick (ms)", "ratio", "background load (s)",
         "poll, nothing changed (us)", "poll with a stat (us)", "forecasts stored / expected"],
        [[result["swap_ms"], result["tick_ms"], result["swap_over_tick"],
          result["background_load_s"], result["poll_us_default"],
          result["poll_us_stat_each_call"],
          f"{result['forecasts_stored']} / {result['forecasts_expected']}"]],
    )  # fmt: skip
    print(write_result("hot_reload", result))


if __name__ == "__main__":
    main()
