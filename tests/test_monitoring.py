"""Monitoring roadcast serve: the Grafana dashboard and Prometheus files in deploy/ hold
together and only name metrics the service exports; the alert rules fire when they
should (``promtool test rules``); and a real Prometheus scrapes a real ``roadcast serve``
on the embedded broker, finds its series equal to the service's stored counters,
evaluates every rule and runs every dashboard query without an error."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml

from pipeline.service.metrics import ServiceMetrics
from pipeline.settings import Settings
from tests.service_support import exported_names
from tests.waiting import WAIT_S, wait_until

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
RULES = DEPLOY / "roadcast-rules.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "roadcast.json"
METRIC = re.compile(r"\b(roadcast_[a-z0-9_]+|up)\b(?!\s*\()")
# Grafana's interval variable, as a real Prometheus query gets it.
GRAFANA_VARIABLES = {"$__rate_interval": "1m"}


def rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def panel_queries() -> list[tuple[str, str]]:
    """``(panel title, PromQL)`` of every target of the dashboard, variables filled in."""
    out = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            out.append((panel["title"], expr))
    return out


def test_the_files_parse_and_hold_together():
    prometheus = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    assert prometheus["rule_files"] == [RULES.name]
    (job,) = [j for j in prometheus["scrape_configs"] if j["job_name"] == "roadcast"]
    (target,) = job["static_configs"][0]["targets"]
    assert target == f"roadcast:{Settings().metrics_port}"  # the service's default port
    provisioning = DEPLOY / "grafana" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    dashboard = json.loads(DASHBOARD.read_text())
    uids = {p["datasource"]["uid"] for p in dashboard["panels"]}
    uids |= {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert uids == {source["uid"]} and source["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "roadcast.yml").read_text())[
        "providers"
    ]
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    files = {name: DEPLOY / c["file"] for name, c in compose["configs"].items()}
    assert all(path.is_file() for path in files.values()), files
    mounted = {
        c["target"]: files[c["source"]]
        for service in compose["services"].values()
        for c in service.get("configs", [])
    }
    assert mounted["/etc/prometheus/prometheus.yml"] == DEPLOY / "prometheus.yml"
    assert mounted["/etc/prometheus/roadcast-rules.yml"] == RULES
    assert mounted[f"{provider['options']['path']}/roadcast.json"] == DASHBOARD
    roadcast = compose["services"]["roadcast"]
    assert str(Settings().metrics_port) in roadcast["expose"]
    assert roadcast["healthcheck"]["test"] == ["CMD", "roadcast", "health", "--ready"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_every_panel_and_rule_names_only_metrics_the_service_exports():
    exported = exported_names(ServiceMetrics().registry) | {"up"}
    queries = [(f"rule {r['alert']}", r["expr"]) for r in rules()] + panel_queries()
    assert len(queries) > 20
    for where, expr in queries:
        names = set(METRIC.findall(expr))
        assert names, f"{where} names no roadcast metric: {expr}"
        assert names <= exported, f"{where} names metrics the service does not export: " + str(
            sorted(names - exported)
        )
    # every figure the issue asks for has a panel
    text = " ".join(expr for _, expr in panel_queries())
    for metric in (
        "roadcast_consumer_lag_records", "roadcast_tick_latency_seconds_bucket",
        "roadcast_readings_valid_total", "roadcast_dead_letters_total",
        "roadcast_readings_late_total", "roadcast_readings_duplicate_total",
        "roadcast_forecasts_published_total", "roadcast_alerts_published_total",
        "roadcast_live_mae", "roadcast_model_info", "roadcast_store_size_bytes",
    ):  # fmt: skip
        assert metric in text, metric


def test_promtool_accepts_the_config_and_the_rules(promtool_bin):
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", RULES.name]):
        done = subprocess.run(
            [promtool_bin, *args], cwd=DEPLOY, capture_output=True, text=True, timeout=WAIT_S
        )
        assert done.returncode == 0, done.stdout + done.stderr


def labels(**extra: str) -> dict[str, str]:
    return {"instance": "svc:9478", "job": "roadcast", **extra}


def series(name: str, values: str, **extra: str) -> dict[str, str]:
    rendered = ",".join(f'{k}="{v}"' for k, v in labels(**extra).items())
    return {"series": f"{name}{{{rendered}}}", "values": values}


# promtool test rules cases: (alert, input series, eval time, labels of the alerts
# expected); samples a minute apart, or ten for a week of them (promtool's sample limit).
WEEK = 7 * 24 * 6  # ten-minute samples in 7 days
AR1 = {"model": "ar", "horizon": "1"}
CRITICAL = {"severity": "critical"}


def week_then(step: int) -> str:
    """A counter growing by 100 per sample for a week, then by ``step`` for 10 samples."""
    return f"0+100x{WEEK} {100 * WEEK + step}+{step}x9"


RULE_CASES = [
    ("RoadcastDown", [series("up", "1x5 0x10")], "4m", []),
    ("RoadcastDown", [series("up", "1x5 0x10")], "9m", [labels(severity="critical")]),
    # The target leaves discovery: its `up` goes stale 5 minutes after the last sample.
    ("RoadcastDown", [series("up", "1x5 _x20")], "9m", []),
    ("RoadcastDown", [series("up", "1x5 _x20")], "14m", [{"job": "roadcast", **CRITICAL}]),
    (
        "RoadcastNoTick",
        [
            series("roadcast_last_tick_closed_timestamp_seconds", "0+60x10 600x30"),
            series("roadcast_tick_interval_seconds", "300x40"),
        ],
        "20m",  # the last tick closed at 10m: 10 minutes ago is 2 intervals
        [],
    ),
    (
        "RoadcastNoTick",
        [
            series("roadcast_last_tick_closed_timestamp_seconds", "0+60x10 600x30"),
            series("roadcast_tick_interval_seconds", "300x40"),
        ],
        "27m",  # more than 3 intervals (15 min) for over a minute
        [labels(severity="critical")],
    ),
    (
        "RoadcastConsumerLagGrowing",
        [
            series("roadcast_consumer_lag_records", "0+10x60", topic="r", partition="0"),
            series("roadcast_sensors", "207x60"),
        ],
        "50m",
        [{"instance": "svc:9478", "severity": "warning"}],
    ),
    (
        "RoadcastConsumerLagGrowing",  # a large but steady backlog is not falling behind
        [
            series("roadcast_consumer_lag_records", "500x60", topic="r", partition="0"),
            series("roadcast_sensors", "207x60"),
        ],
        "50m",
        [],
    ),
    (
        "RoadcastDeadLetterRate",  # 2% of the records
        [
            series("roadcast_records_consumed_total", "0+1000x60"),
            series("roadcast_dead_letters_total", "0+20x60", reason="bad_json"),
        ],
        "40m",
        [{"instance": "svc:9478", "severity": "warning"}],
    ),
    (
        "RoadcastDeadLetterRate",  # 0.5%: one sensor of 207 sending garbage
        [
            series("roadcast_records_consumed_total", "0+1000x60"),
            series("roadcast_dead_letters_total", "0+5x60", reason="bad_json"),
        ],
        "40m",
        [],
    ),
    (
        "RoadcastAccuracyCollapse",  # 4x the error for the last 100 minutes of a week
        [
            series("roadcast_forecast_abs_error_total", week_then(400), **AR1),
            series("roadcast_forecast_scored_total", f"0+100x{WEEK + 10}", **AR1),
        ],
        f"{(WEEK + 10) * 10}m",
        [{"instance": "svc:9478", "severity": "warning", **AR1}],
    ),
    (
        "RoadcastAccuracyCollapse",  # twice the error: within what rush hours do
        [
            series("roadcast_forecast_abs_error_total", week_then(200), **AR1),
            series("roadcast_forecast_scored_total", f"0+100x{WEEK + 10}", **AR1),
        ],
        f"{(WEEK + 10) * 10}m",
        [],
    ),
    (
        "RoadcastModelErrors",
        [series("roadcast_model_errors_total", "0x10 1x10", model="lstm")],
        "15m",
        [{"instance": "svc:9478", "model": "lstm", "severity": "warning"}],
    ),
    (
        "RoadcastAlertsRejected",
        [series("roadcast_alert_deliveries_total", "0x10 3x10", receiver="am", result="rejected")],
        "15m",
        [{"instance": "svc:9478", "receiver": "am", "severity": "warning"}],
    ),
    (
        "RoadcastAlertDeliveryStuck",  # alerts waiting, none delivered for half an hour
        [series("roadcast_alert_delivery_backlog", "5x40", receiver="am"),
         series("roadcast_alert_deliveries_total", "10x40", receiver="am", result="delivered")],
        "35m",
        [{"instance": "svc:9478", "receiver": "am", "severity": "warning"}],
    ),
    (
        "RoadcastAlertDeliveryStuck",  # a backlog that drains is not stuck
        [series("roadcast_alert_delivery_backlog", "5x40", receiver="am"),
         series("roadcast_alert_deliveries_total", "0+10x40", receiver="am", result="delivered")],
        "35m",
        [],
    ),
]  # fmt: skip


@pytest.mark.parametrize(("alert", "inputs", "at", "expected"), RULE_CASES)
def test_each_alert_rule_fires_when_it_should(promtool_bin, tmp_path, alert, inputs, at, expected):
    # The rules without their annotations: promtool compares annotations too, and this
    # checks the expressions (the annotations' templates are checked by promtool check).
    interval = "10m" if alert == "RoadcastAccuracyCollapse" else "1m"
    document = yaml.safe_load(RULES.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(document))
    test = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": interval,
        "tests": [
            {
                "interval": interval,
                "input_series": inputs,
                "alert_rule_test": [
                    {"eval_time": at, "alertname": alert, "exp_alerts": [
                        {"exp_labels": e} for e in expected
                    ]}
                ],
            }
        ],
    }  # fmt: skip
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test))
    done = subprocess.run(
        [promtool_bin, "test", "rules", "test.yml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=WAIT_S,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.integration
def test_a_real_prometheus_scrapes_a_real_service(
    prometheus_bin, kafka_settings, tmp_path, monkeypatch
):
    from pipeline.kafka.broker import free_port
    from pipeline.kafka.clients import ensure_topics, make_producer
    from pipeline.kafka.replay import replay
    from tests.prometheus_support import Prometheus
    from tests.service_support import make_world, start_service, stop_service, store_counters

    world = make_world(tmp_path / "bundles", live_steps=20)
    ensure_topics(kafka_settings)
    port = free_port()
    monkeypatch.setenv("ROADCAST_METRICS_ENABLED", "true")
    monkeypatch.setenv("ROADCAST_METRICS_HOST", "127.0.0.1")
    monkeypatch.setenv("ROADCAST_METRICS_PORT", str(port))
    store, log = tmp_path / "store.sqlite", tmp_path / "service.log"
    (tmp_path / "prometheus").mkdir()
    with Prometheus(
        prometheus_bin, tmp_path / "prometheus", [f"127.0.0.1:{port}"], [RULES]
    ) as prom:
        proc = start_service(kafka_settings, world.bundles, store, log)
        try:
            producer = make_producer(kafka_settings)
            stats = replay(world.live, producer, kafka_settings.topic_readings, progress=False)
            producer.close()
            steps = world.live.n_time

            def stored() -> dict[str, int]:
                if proc.poll() is not None:
                    raise AssertionError(f"the service exited: {log.read_text()[-3000:]}")
                counters = store_counters(store)
                return counters if counters.get("ticks_closed", 0) >= steps else {}

            counters = wait_until(stored, what=f"{steps} ticks stored", details=log.read_text)

            def scraped(expr: str, want: float) -> bool:
                return prom.value(expr) == want

            # Prometheus' series equal the service's stored counters, once scraped.
            for expr, want in (
                ("sum(roadcast_records_consumed_total)", stats.messages),
                ("sum(roadcast_readings_valid_total)", counters["valid"]),
                ("sum(roadcast_ticks_closed_total)", steps),
                ("sum(roadcast_forecasts_published_total)", counters["forecasts_published"]),
                ("roadcast_tick_latency_seconds_count", steps),
                ("count(roadcast_model_info)", len(world.models)),
                ("count(roadcast_consumer_lag_records)", 3),
                ('up{job="roadcast"}', 1),
            ):
                wait_until(
                    lambda e=expr, w=want: scraped(e, w),
                    what=f"Prometheus to find {expr} == {want}",
                    poll_s=0.5,
                    details=lambda e=expr: f"{e} = {prom.query(e)}\n{prom.tail()}",
                )
            assert prom.value("sum(roadcast_dead_letters_total)") == 0  # none was
            for model in world.models:
                assert prom.value(f'roadcast_live_mae{{model="{model}",horizon="1"}}') > 0
            assert prom.value("roadcast_store_size_bytes") > 0
            assert prom.value("time() - roadcast_last_tick_closed_timestamp_seconds") >= 0

            # Every alert rule was evaluated on the real series without an error: each
            # evaluated after the scrapes above (one before the first scrape of the service
            # saw no `up` series, and RoadcastDown's `absent(up)` was pending then).
            scraped_at = pd.Timestamp.now(tz="UTC")

            def evaluated() -> list[dict[str, Any]]:
                found = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
                done = [
                    r
                    for r in found
                    if r.get("lastEvaluation", "").startswith("20")
                    and pd.Timestamp(r["lastEvaluation"]) > scraped_at
                ]
                return found if len(done) == len(found) == len(rules()) else []

            for rule in wait_until(evaluated, what="every rule evaluated", poll_s=0.5):
                assert rule["health"] == "ok", rule
                assert rule["state"] == "inactive", (  # a healthy service fires none
                    rule,
                    prom.query("roadcast_last_tick_closed_timestamp_seconds"),
                    prom.query("roadcast_tick_interval_seconds"),
                    prom.query("time()"),
                )

            # Every panel of the dashboard is a valid query on the real series.
            for _title, expr in panel_queries():
                prom.api("query", query=expr)  # raises on an invalid query
            base = f"http://127.0.0.1:{port}"
            assert httpx.get(f"{base}/healthz", timeout=WAIT_S).status_code == 200
            ready = httpx.get(f"{base}/readyz", timeout=WAIT_S)
            assert ready.status_code == 200, ready.text
        finally:
            code = stop_service(proc, signal.SIGTERM)
    assert code == 0, log.read_text()[-3000:]
    assert "/metrics" in log.read_text()  # the console line and the log line say where
