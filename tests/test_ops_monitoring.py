"""The service's alert rules against what the service really exports: a real Prometheus
scrapes a real ``ServiceMetrics`` endpoint with ``deploy/roadcast-rules.yml`` loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.service.health import start_endpoints
from pipeline.service.metrics import ServiceMetrics
from pipeline.service.store_rows import Batch
from pipeline.settings import load_settings
from tests.waiting import wait_until

RULES = Path(__file__).resolve().parents[1] / "deploy" / "roadcast-rules.yml"
ERRORS = 'roadcast_model_errors_total{model="lstm"}'


@pytest.mark.integration
def test_a_model_s_first_failure_fires_its_rule(prometheus_bin: str, tmp_path: Path) -> None:
    from tests.prometheus_support import Prometheus

    metrics = ServiceMetrics(process=False)
    metrics.loaded_models(lambda: [("ar", "v1"), ("lstm", "v2")])
    endpoints = start_endpoints(load_settings(metrics_host="127.0.0.1"), metrics=metrics, port=0)
    try:
        with Prometheus(prometheus_bin, tmp_path, [f"127.0.0.1:{endpoints.port}"], [RULES]) as prom:
            wait_until(
                lambda: (prom.value('count_over_time(up{job="roadcast"}[1m])') or 0) >= 2,
                what="two scrapes of the healthy service",
                poll_s=0.2,
            )
            metrics.record_batch({"model_errors.lstm": 1}, Batch(), sensors_down=0, open_ticks=0)
            wait_until(lambda: prom.value(ERRORS) == 1, what="the failure scraped", poll_s=0.2)
            first = prom.value(f"timestamp({ERRORS})")
            wait_until(
                lambda: (prom.value(f"timestamp({ERRORS})") or 0) > (first or 0),
                what="one more scrape",
                poll_s=0.2,
            )
            # The rule's expression sees the one failure (a series born at 1 would not).
            found = prom.query(
                "sum by (instance, model) (increase(roadcast_model_errors_total[15m])) > 0"
            )
            assert [r["metric"]["model"] for r in found] == ["lstm"], found

            def firing() -> bool:
                alerts = prom.api("alerts")["alerts"]
                return any(a["labels"]["alertname"] == "RoadcastModelErrors" for a in alerts)

            wait_until(firing, what="RoadcastModelErrors firing", poll_s=0.2)
    finally:
        endpoints.close()
