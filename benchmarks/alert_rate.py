"""How often the service's alert detector fires on real traffic: a calibration check.

``python -m benchmarks.alert_rate [--data los-loop] [--quick]`` writes
``benchmarks/results/alert_rate.json`` and prints its table.

The service's interval detector (:class:`pipeline.alerts.config.AlertingConfig`) on AR(12)
forecasts (3 horizons) is fitted on the first 60 % of a real network's readings,
calibrated on the next 20 % and scores the last 20 % tick by tick, as the service does.
Real data has no labels here, so this measures calibration, not accuracy: the share of
scored (sensor, tick) pairs with ``p <= alpha`` against ``alpha`` itself (a p-value that
holds up has a ratio near 1 where nothing unusual happens, and above 1 only by what is
truly unusual), and the alert episodes through the service's lifecycle per 100
sensor-days: what operators would be paged for. Each calibration tail
(:mod:`models.anomaly.calibration`) at each alert p-value, side by side in one run.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.common import shared_data_dir, write_result
from flows.reporting.text import print_table

ALPHAS = (1e-3, 3e-4)
TAILS = ("pot", "max")


def _panel(data: str, quick: bool) -> Any:
    from pipeline.data.datasets import load_dataset

    panel = load_dataset(data, data_dir=shared_data_dir())
    if quick:
        panel = panel.slice(0, min(panel.n_time, 600)).select(panel.sensor_ids[:20])
    return panel


def run(data: str, quick: bool) -> dict[str, Any]:
    """Every tail at every alert p-value (module doc)."""
    import torch

    from models.anomaly.base import Detection
    from models.anomaly.interval import ForecastIntervalDetector
    from models.forecasters.registry import model_class
    from models.panel import chronological_split
    from pipeline.alerts.config import SERVICE_ALERT_P, AlertingConfig
    from pipeline.alerts.lifecycle import AlertManager

    torch.set_num_threads(1)
    panel = _panel(data, quick)
    split = chronological_split(panel, test=0.2, valid=0.2)
    forecaster = model_class("ar")(window=12, horizon=3)  # type: ignore[call-arg]
    forecaster.fit(split.train, valid=split.valid)
    service = AlertingConfig()
    test = split.test
    days = test.n_time * (test.freq / pd.Timedelta(days=1))
    observed = np.where(test.mask, test.values, np.nan).astype(np.float32)
    rows = []
    for tail in TAILS:
        detector = ForecastIntervalDetector(forecaster, replace(service.interval, tail=tail))
        detector.fit(split.train, valid=split.valid)
        score = detector.score_panel(test).score.astype(np.float64)  # [time, node]
        scored = np.isfinite(score) & test.mask
        for alpha in ALPHAS:
            rules = replace(service.rules, threshold=1.0 - alpha)
            manager = AlertManager(test.sensor_ids, rules)
            episodes = set()
            for t, ts in enumerate(test.timestamps):
                tick = Detection("interval", ts, score[t].astype(np.float32), observed[t])
                for event in manager.evaluate(tick):
                    if event.message.status == "firing":
                        episodes.add(event.message.alert_id)
            share = float(np.count_nonzero(scored & (score >= 1.0 - alpha)) / scored.sum())
            rows.append(
                {
                    "tail": tail,
                    "alert_pvalue": alpha,
                    "service_default": tail == service.interval.tail and alpha == SERVICE_ALERT_P,
                    "share_at_or_below": round(share, 6),
                    "ratio_to_alpha": round(share / alpha, 2),
                    "alert_episodes": len(episodes),
                    "episodes_per_100_sensor_days": round(
                        100 * len(episodes) / (days * panel.n_nodes), 2
                    ),
                }
            )
    return {
        "data": data,
        "sensors": panel.n_nodes,
        "test_steps": test.n_time,
        "test_days": round(days, 2),
        "forecaster": "ar(12), horizon 3, fitted on the first 60 %, calibrated on the next 20 %",
        "results": rows,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.alert_rate", description=__doc__)
    parser.add_argument("--data", default="los-loop")
    parser.add_argument("--quick", action="store_true", help="20 sensors, 600 steps")
    args = parser.parse_args(argv)
    payload = run(args.data, args.quick)
    columns = ["tail", "alert p", "share p <= alert p", "ratio", "episodes", "per 100 sensor-days"]
    print_table(
        f"Alert calibration on {args.data} ({payload['sensors']} sensors, "
        f"{payload['test_days']} test days)",
        columns,
        [
            [
                r["tail"] + (" (service)" if r["service_default"] else ""),
                r["alert_pvalue"],
                r["share_at_or_below"],
                r["ratio_to_alpha"],
                r["alert_episodes"],
                r["episodes_per_100_sensor_days"],
            ]
            for r in payload["results"]
        ],
    )
    print(write_result("alert_rate", {**payload, "quick": args.quick}))


if __name__ == "__main__":
    main()
