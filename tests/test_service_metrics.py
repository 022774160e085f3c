"""The service's Prometheus metrics and health endpoints: the metrics' arithmetic, the
probes' verdicts, a taken port, and a real service on the embedded broker whose metrics
equal its stored counters while /healthz and /readyz say it is alive and ready."""

from __future__ import annotations

import json
import socket
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.service.health import EndpointError, Health, start_endpoints
from pipeline.service.metrics import ServiceMetrics
from pipeline.service.store_rows import AccuracyRows, Batch, ForecastRows, TickRow
from pipeline.settings import Settings, SettingsError, load_settings
from tests.service_support import exported_names
from tests.waiting import WAIT_S, wait_until

TICK_MS = 300_000


def value(metrics: ServiceMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def accuracy(model: str, target_tick: int, errors: dict[int, tuple[int, float]]) -> AccuracyRows:
    """Error sums of ``model`` at one target tick: ``{step: (n, sum_abs)}``."""
    steps = np.array(sorted(errors), np.int64)
    return AccuracyRows(
        model,
        steps=steps,
        targets_ms=np.full(len(steps), target_tick * TICK_MS, np.int64),
        n=np.array([errors[s][0] for s in steps], np.int64),
        sum_abs=np.array([errors[s][1] for s in steps], np.float64),
        sum_sq=np.zeros(len(steps)),
    )


def test_a_batch_updates_counters_latency_forecasts_and_the_last_tick(tmp_path):
    metrics = ServiceMetrics()
    metrics.configure(tick_s=300, sensors=2, store=tmp_path / "s.sqlite", last_tick=None)
    counts = Counter(
        {"consumed": 10, "valid": 8, "late": 1, "duplicate": 1, "dead_lettered": 2,
         "dead_lettered.bad_json": 2, "ticks_closed": 2, "ticks_closed.grace": 1,
         "ticks_closed.complete": 1, "alerts_published.firing": 3, "model_errors.ar": 1,
         "alert_hook_errors": 1, "something_new": 5}
    )  # fmt: skip
    batch = Batch()
    batch.forecasts.append(ForecastRows("ar", 0, np.arange(2), np.ones((2, 1), np.float32)))
    batch.forecasts.append(ForecastRows("ar", 1, np.arange(2), np.ones((2, 1), np.float32)))
    batch.ticks += [
        TickRow(600_000, 2, "complete", 1_000, 20.0),
        TickRow(900_000, 2, "grace", 3_000, 2100.0),
    ]
    metrics.record_batch(counts, batch, sensors_down=1, open_ticks=4)

    assert value(metrics, "roadcast_records_consumed_total") == 10
    assert value(metrics, "roadcast_readings_valid_total") == 8
    assert value(metrics, "roadcast_readings_late_total") == 1
    assert value(metrics, "roadcast_readings_duplicate_total") == 1
    assert value(metrics, "roadcast_dead_letters_total", reason="bad_json") == 2
    assert value(metrics, "roadcast_ticks_closed_total", reason="grace") == 1
    assert value(metrics, "roadcast_alerts_published_total", status="firing") == 3
    assert value(metrics, "roadcast_model_errors_total", model="ar") == 1
    assert value(metrics, "roadcast_errors_total", kind="alert_hook_errors") == 1
    assert value(metrics, "roadcast_forecasts_published_total", model="ar") == 4
    assert value(metrics, "roadcast_tick_latency_seconds_count") == 2
    assert value(metrics, "roadcast_tick_latency_seconds_bucket", le="0.025") == 1
    assert value(metrics, "roadcast_tick_latency_seconds_bucket", le="2.5") == 2
    assert value(metrics, "roadcast_last_tick_closed_timestamp_seconds") == 3.0
    assert value(metrics, "roadcast_last_tick_event_timestamp_seconds") == 900.0
    assert value(metrics, "roadcast_sensors_down") == 1
    assert value(metrics, "roadcast_open_ticks") == 4
    assert value(metrics, "roadcast_tick_interval_seconds") == 300
    # the aggregate counters are not double counted as labelled ones
    assert value(metrics, "roadcast_dead_letters_total", reason="") is None

    metrics.count("batch_retries")
    metrics.count("topics_recreated", 4)
    assert value(metrics, "roadcast_errors_total", kind="batch_retries") == 1
    assert value(metrics, "roadcast_errors_total", kind="topics_recreated") == 4


def test_live_mae_covers_the_last_ticks_per_model_and_horizon():
    metrics = ServiceMetrics(mae_ticks=3)
    batch = Batch()
    batch.accuracy.append(accuracy("ar", 10, {1: (2, 4.0), 2: (1, 5.0)}))
    batch.accuracy.append(accuracy("ar", 11, {1: (2, 2.0)}))
    metrics.record_batch(Counter(), batch, sensors_down=0, open_ticks=0)
    assert value(metrics, "roadcast_live_mae", model="ar", horizon="1") == pytest.approx(1.5)
    assert value(metrics, "roadcast_live_mae", model="ar", horizon="2") == pytest.approx(5.0)
    assert value(metrics, "roadcast_forecast_abs_error_total", model="ar", horizon="1") == 6.0
    assert value(metrics, "roadcast_forecast_scored_total", model="ar", horizon="1") == 4

    later = Batch()  # ticks 12, 13: tick 10 leaves the 3-tick window, 11 stays
    later.accuracy.append(accuracy("ar", 12, {1: (1, 0.5)}))
    later.accuracy.append(accuracy("ar", 13, {1: (1, 0.5), 3: (1, 9.0)}))
    metrics.record_batch(Counter(), later, sensors_down=0, open_ticks=0)
    assert value(metrics, "roadcast_live_mae", model="ar", horizon="1") == pytest.approx(3.0 / 4)
    assert value(metrics, "roadcast_live_mae", model="ar", horizon="3") == pytest.approx(9.0)
    # the counters keep everything since the start: Prometheus chooses the window
    assert value(metrics, "roadcast_forecast_abs_error_total", model="ar", horizon="1") == 7.0


def test_lag_per_partition_and_revoked_partitions_disappear():
    metrics = ServiceMetrics()
    metrics.record_lag({("readings", 0): 5, ("readings", 1): 0})
    assert value(metrics, "roadcast_consumer_lag_records", topic="readings", partition="0") == 5
    metrics.record_lag({("readings", 1): 7})
    assert value(metrics, "roadcast_consumer_lag_records", topic="readings", partition="0") is None
    assert value(metrics, "roadcast_consumer_lag_records", topic="readings", partition="1") == 7


def test_models_and_stage_times_are_read_at_each_scrape(tmp_path):
    metrics = ServiceMetrics()
    models = [("ar", "v1"), ("lstm", "")]
    stages = {"decode": 0.5}
    metrics.loaded_models(lambda: list(models))
    metrics.stage_seconds(lambda: stages)
    store = tmp_path / "s.sqlite"
    store.write_bytes(b"x" * 100)
    Path(f"{store}-wal").write_bytes(b"x" * 20)
    metrics.configure(
        tick_s=60, sensors=3, store=store, last_tick=TickRow(0, 3, "grace", 7_000, 1.0)
    )
    assert value(metrics, "roadcast_model_info", model="ar", version="v1") == 1
    assert value(metrics, "roadcast_model_info", model="lstm", version="unversioned") == 1
    models[0] = ("ar", "v2")  # a hot reload swaps the list: the next scrape shows it
    stages["decode"] = 1.5
    assert value(metrics, "roadcast_model_info", model="ar", version="v1") is None
    assert value(metrics, "roadcast_model_info", model="ar", version="v2") == 1
    assert value(metrics, "roadcast_stage_seconds_total", stage="decode") == 1.5
    assert value(metrics, "roadcast_store_size_bytes") == 120
    assert value(metrics, "roadcast_last_tick_closed_timestamp_seconds") == 7.0
    assert value(metrics, "roadcast_sensors") == 3


def test_each_service_has_its_own_registry():
    first, second = ServiceMetrics(), ServiceMetrics()
    first.count("batch_retries")
    assert value(second, "roadcast_errors_total", kind="batch_retries") == 0
    names = exported_names(first.registry)
    assert {"roadcast_tick_latency_seconds_bucket", "roadcast_dead_letters_total"} <= names
    assert "process_cpu_seconds_total" in names
    # Until the service is set up nothing claims a tick closed at 0 (1970): the "no tick
    # for 3 intervals" rule would fire on every start.
    assert value(first, "roadcast_last_tick_closed_timestamp_seconds") is None
    assert value(first, "roadcast_tick_interval_seconds") is None
    assert "roadcast_last_tick_closed_timestamp_seconds" in names


def test_health_live_ready_and_stalled():
    now = [100.0]
    health = Health(10.0, clock=lambda: now[0])
    assert health.live() == (True, {"status": "starting"})
    assert health.ready()[0] is False
    health.beat()
    failing: list[str | None] = ["no partition assigned yet"]
    health.add_check("group", lambda: failing[0])
    health.add_check("broken", lambda: 1 / 0)  # type: ignore[arg-type,return-value]
    ok, details = health.ready()
    assert not ok and details["checks"]["group"] == "no partition assigned yet"
    assert details["checks"]["broken"].startswith("ZeroDivisionError")
    health.add_check("broken", lambda: None)
    failing[0] = None
    assert health.ready() == (True, {"status": "ready", "checks": {"group": "ok", "broken": "ok"}})
    now[0] += 11  # no beat for longer than stall_after_s: stalled, and not ready
    assert health.live()[0] is False and health.live()[1]["status"] == "stalled"
    assert health.ready()[1]["checks"]["loop"] == "the service loop stalled"
    health.expect_pause(30)  # a retry's backoff: waiting on purpose is not stalling
    now[0] += 25
    assert health.live()[0] is True
    health.stopping = True
    assert health.ready() == (False, {"status": "stopping", "checks": {}})


def local_settings(**kw: object) -> Settings:
    return Settings(**{"metrics_host": "127.0.0.1", **kw})  # type: ignore[arg-type]


def test_endpoints_serve_metrics_health_and_readiness():
    health = Health(60.0)
    endpoints = start_endpoints(local_settings(), health=health, port=0)
    try:
        base = f"http://127.0.0.1:{endpoints.port}"
        assert httpx.get(f"{base}/healthz", timeout=WAIT_S).json() == {"status": "starting"}
        answer = httpx.get(f"{base}/readyz", timeout=WAIT_S)
        assert answer.status_code == 503 and answer.json()["status"] == "starting"
        health.beat()
        health.add_check("models", lambda: None)
        answer = httpx.get(f"{base}/readyz", timeout=WAIT_S)
        assert answer.status_code == 200 and answer.json()["checks"] == {"models": "ok"}
        text = httpx.get(f"{base}/metrics", timeout=WAIT_S).text
        assert "# TYPE roadcast_tick_latency_seconds histogram" in text
        assert httpx.get(f"{base}/nope", timeout=WAIT_S).status_code == 404
    finally:
        endpoints.close()


def test_a_taken_port_is_an_error_naming_the_port_and_the_setting():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(
            EndpointError, match=rf"port {port} is already in use.*ROADCAST_METRICS_PORT"
        ):
            start_endpoints(local_settings(), port=port)
        # roadcast serve says so before loading anything (the models folder is empty)
        from flows.cli import app

        env = {"ROADCAST_METRICS_ENABLED": "true", "ROADCAST_METRICS_HOST": "127.0.0.1",
               "ROADCAST_METRICS_PORT": str(port)}  # fmt: skip
        args = ["serve", "--models", "/nonexistent", "--bootstrap", "127.0.0.1:1"]
        result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert f"port {port} is already in use" in output and "ROADCAST_METRICS_PORT" in output
    with pytest.raises(EndpointError, match="ROADCAST_METRICS_HOST"):
        start_endpoints(local_settings(metrics_host="no-such-host.invalid"), port=0)


def test_health_endpoints_take_get_and_head_only():
    endpoints = start_endpoints(local_settings(), health=Health(60.0), port=0)
    url = f"http://127.0.0.1:{endpoints.port}/healthz"
    try:
        assert httpx.post(url, timeout=WAIT_S).status_code == 405
        head = httpx.head(url, timeout=WAIT_S)
        assert head.status_code == 200 and head.content == b""
        assert httpx.get(url, timeout=WAIT_S).json()["status"] == "starting"
    finally:
        endpoints.close()


def test_an_idle_connection_is_closed(monkeypatch):
    """Idle connections held a thread and a file descriptor each for ever: 243 of them
    took a service under `ulimit -n 256` off its own /readyz."""
    from pipeline.service import health as health_module

    monkeypatch.setattr(health_module._QuietHandler, "timeout", 0.5)
    endpoints = start_endpoints(local_settings(), health=Health(60.0), port=0)
    try:
        idle = socket.create_connection(("127.0.0.1", endpoints.port), timeout=WAIT_S)
        with idle:
            assert idle.recv(1) == b""  # the server closed it
    finally:
        endpoints.close()


def test_connections_beyond_the_cap_are_closed_unanswered(monkeypatch):
    from pipeline.service import health as health_module

    monkeypatch.setattr(health_module, "MAX_CONNECTIONS", 2)
    endpoints = start_endpoints(local_settings(), health=Health(60.0), port=0)
    address = ("127.0.0.1", endpoints.port)
    try:
        held = [socket.create_connection(address, timeout=WAIT_S) for _ in range(2)]
        with socket.create_connection(address, timeout=WAIT_S) as extra:
            try:
                extra.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
                answer = extra.recv(64)
            except ConnectionResetError:
                answer = b""
            assert answer == b""
        for conn in held:
            conn.close()
        url = f"http://{address[0]}:{address[1]}/healthz"

        def answered() -> bool:
            try:
                return httpx.get(url, timeout=WAIT_S).is_success
            except httpx.TransportError:  # closed unanswered: the slots not freed yet
                return False

        wait_until(answered, what="a freed slot")
    finally:
        endpoints.close()


def test_roadcast_health_asks_the_endpoints_and_exits_0_or_1():
    from flows.cli import app

    health = Health(60.0)
    endpoints = start_endpoints(local_settings(), health=health, port=0)
    url = f"http://127.0.0.1:{endpoints.port}"
    runner = CliRunner()
    try:
        alive = runner.invoke(app, ["health", "--url", url])
        assert alive.exit_code == 0 and '"starting"' in alive.output
        ready = runner.invoke(app, ["health", "--ready", "--url", url])
        assert ready.exit_code == 1 and '"starting"' in ready.output
        health.beat()
        health.add_check("group", lambda: None)
        ready = runner.invoke(app, ["health", "--ready", "--url", url])
        assert ready.exit_code == 0 and '"ready"' in ready.output
    finally:
        endpoints.close()
    gone = runner.invoke(app, ["health", "--url", url, "--timeout", "1"])
    assert gone.exit_code == 1 and f"no answer from {url}/healthz" in gone.output


@pytest.mark.parametrize("port", ["0", "65536", "http"])
def test_the_metrics_port_setting_is_validated(port, monkeypatch):
    monkeypatch.setenv("ROADCAST_METRICS_PORT", port)
    with pytest.raises(SettingsError, match="ROADCAST_METRICS_PORT"):
        load_settings()


@pytest.mark.integration
def test_a_running_service_exports_its_counters_and_is_ready(kafka_settings, tmp_path):
    from pipeline.kafka.clients import ensure_topics, make_producer
    from pipeline.kafka.replay import replay
    from pipeline.model_dir import load_bundles
    from pipeline.service.config import ServiceConfig
    from pipeline.service.loop import ForecastService
    from pipeline.service.store import Store
    from tests.service_support import make_world, service_thread

    world = make_world(tmp_path / "bundles", live_steps=12)
    settings = kafka_settings.model_copy(update={"store_path": tmp_path / "store.sqlite"})
    ensure_topics(settings)
    producer = make_producer(settings)
    stats = replay(world.live, producer, settings.topic_readings, progress=False)
    producer.close()
    config = ServiceConfig(allowed_lateness="0min", durable=False, poll_timeout_ms=50)
    metrics = ServiceMetrics()
    endpoints = start_endpoints(local_settings(), metrics=metrics, port=0)
    base = f"http://127.0.0.1:{endpoints.port}"
    service = ForecastService(
        settings, config, load_bundles(world.bundles), metrics=metrics, health=endpoints.health
    )
    steps = world.live.n_time
    try:
        with service_thread(service):
            wait_until(lambda: service.counters["ticks_closed"] >= steps, what=f"{steps} ticks")

            def ready() -> dict | None:
                answer = httpx.get(f"{base}/readyz", timeout=WAIT_S)
                return answer.json() if answer.status_code == 200 else None

            checks = wait_until(
                ready,
                what="/readyz to say ready",
                poll_s=0.2,
                details=lambda: httpx.get(f"{base}/readyz", timeout=WAIT_S).text,
            )["checks"]
            assert set(checks) == {"models", "group", "broker", "store"}
            assert httpx.get(f"{base}/healthz", timeout=WAIT_S).json()["status"] == "ok"
            lags = {
                s.labels["partition"]: s.value
                for family in metrics.registry.collect()
                if family.name == "roadcast_consumer_lag_records"
                for s in family.samples
            }
            assert set(lags) == {"0", "1", "2"}  # every partition; caught up
            wait_until(lambda: sum(lags.values()) == 0, what="no lag")
        assert httpx.get(f"{base}/readyz", timeout=WAIT_S).json()["status"] == "stopping"
    finally:
        endpoints.close()
    counters = service.counters
    assert value(metrics, "roadcast_records_consumed_total") == stats.messages
    assert value(metrics, "roadcast_readings_valid_total") == counters["valid"] == stats.messages
    closed = sum(
        value(metrics, "roadcast_ticks_closed_total", reason=r) or 0
        for r in ("complete", "grace", "watermark")
    )
    assert closed == counters["ticks_closed"] == steps
    published = sum(
        value(metrics, "roadcast_forecasts_published_total", model=m) or 0 for m in world.models
    )
    assert (
        published
        == counters["forecasts_published"]
        == len(world.models) * world.live.n_nodes * steps
    )
    assert value(metrics, "roadcast_tick_latency_seconds_count") == steps
    assert value(metrics, "roadcast_live_mae", model="ar", horizon="1") is not None
    with Store(settings.store_path, readonly=True) as store:
        newest = store.last_ticks(1)[0]
    assert value(metrics, "roadcast_last_tick_closed_timestamp_seconds") == newest.closed_ms / 1000
    assert value(metrics, "roadcast_model_info", model="ar", version="unversioned") == 1

    # A restarted service starts its counters again from zero (Prometheus sees a counter
    # reset) and knows when the last tick closed from the store.
    again = ServiceMetrics()
    restarted = ForecastService(settings, config, load_bundles(world.bundles), metrics=again)
    restarted.store.close()
    assert value(again, "roadcast_records_consumed_total") == 0
    assert value(again, "roadcast_last_tick_closed_timestamp_seconds") == newest.closed_ms / 1000
    assert json.loads(json.dumps(restarted.counters))["consumed"] == stats.messages


def test_alert_delivery_counters_and_backlog_are_exported_per_receiver():
    from prometheus_client import generate_latest

    from pipeline.service.metrics import ServiceMetrics

    metrics = ServiceMetrics(process=False)
    empty = generate_latest(metrics.registry).decode()
    assert "# TYPE roadcast_alert_deliveries_total counter" in empty  # named before any
    metrics.alert_delivery(
        lambda: {
            "receivers": {"am:9093": {"delivered": 3, "rejected": 1}},
            "backlog": {"am:9093": 2},
        }
    )
    text = generate_latest(metrics.registry).decode()
    assert 'roadcast_alert_deliveries_total{receiver="am:9093",result="delivered"} 3.0' in text
    assert 'roadcast_alert_deliveries_total{receiver="am:9093",result="retries"} 0.0' in text
    assert 'roadcast_alert_delivery_backlog{receiver="am:9093"} 2.0' in text


def test_the_rows_the_retention_deletes_are_counted_per_table():
    metrics = ServiceMetrics(process=False)
    metrics.pruned_rows({"readings": 3, "ticks": 1, "alerts": 0})
    metrics.pruned_rows({"readings": 2})
    assert value(metrics, "roadcast_store_pruned_rows_total", table="readings") == 5
    assert value(metrics, "roadcast_store_pruned_rows_total", table="ticks") == 1
    metrics.count("store_prunes_failed")
    assert value(metrics, "roadcast_errors_total", kind="store_prunes_failed") == 1
