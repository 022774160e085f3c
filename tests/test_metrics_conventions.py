"""The service's monitoring checked as a Prometheus operator checks it: ``promtool check
metrics`` finds nothing in a real ``roadcast serve``'s ``/metrics`` (after readings,
forecasts and a dead letter, so labelled series exist), which holds no ``_created``
series and no label that grows with the network; every metric the alert rules and the
Grafana dashboards name is one that service exposes, and docs/service.md lists them all;
every alert rule has a summary, a description and a runbook section in docs/service.md;
the dashboards use the provisioned data source and units that match their metrics."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from pipeline.service.metrics import ServiceMetrics
from pipeline.service.store_rows import AccuracyRows, Batch, ForecastRows, TickRow
from tests.waiting import WAIT_S, wait_until

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
RULES = DEPLOY / "roadcast-rules.yml"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources"
SERVICE_DOC = REPO / "docs" / "service.md"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
# Series of Prometheus itself, not of the service.
PROMETHEUS_OWN = {"up", "ALERTS", "ALERTS_FOR_STATE"}
# Label names the service may use: each has a bound set by its set-up (docs/service.md).
BOUNDED_LABELS = {
    "model", "horizon", "version", "stage", "topic", "partition", "receiver",
    "reason", "status", "kind", "result", "table", "le",
}  # fmt: skip
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "6h"}


# --------------------------------------------------------------------------- PromQL


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_NAME = re.compile(r"(?<![\w$.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?!\s*\()(?![\w:])")
_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan", "Inf", "NaN",
}  # fmt: skip


def promql_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not its functions, labels, strings,
    durations or keywords)."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    expr = _STRINGS.sub('""', expr)
    expr = _MATCHERS.sub("", expr)
    expr = _RANGES.sub("", expr)
    expr = _GROUPING.sub("", expr)
    return {n for n in _NAME.findall(expr) if n not in _KEYWORDS}


def series_family(name: str) -> str:
    """``name`` without a histogram's or summary's sample suffix."""
    return re.sub(r"_(bucket|sum|count)$", "", name)


def test_promql_names_reads_names_not_functions_labels_or_durations() -> None:
    expr = (
        'histogram_quantile(0.9, sum by (le) (rate(a_seconds_bucket{job="x",le!="1"}'
        "[$__rate_interval]))) / on (instance) group_left (model) b_info"
        " and ignoring(x) c offset 5m > bool 1e3 unless d[15m:1m] or time() - e"
    )
    assert promql_names(expr) == {"a_seconds_bucket", "b_info", "c", "d", "e"}


# --------------------------------------------------------------------------- files


def rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard, those inside rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries() -> list[tuple[str, str]]:
    """``(where, PromQL)`` of every target of every dashboard."""
    out = []
    for path in DASHBOARDS:
        for panel in panels(json.loads(path.read_text())):
            for target in panel.get("targets", []):
                if target.get("expr"):
                    out.append((f"{path.name}: panel {panel.get('title')!r}", target["expr"]))
    return out


def anchors(markdown: str) -> set[str]:
    """The anchors GitHub makes of a Markdown file's headings."""
    out = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", markdown, re.MULTILINE):
        text = re.sub(r"[`*_\[\]()]", "", heading).strip().lower()
        out.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text)))
    return out


# --------------------------------------------------------------------------- a real serve


@dataclass(frozen=True)
class Served:
    """What a real ``roadcast serve`` exposed at ``/metrics``."""

    text: str  # Prometheus text format 0.0.4
    openmetrics: str  # what Prometheus asks for first


@pytest.fixture(scope="module")
def served(broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Served:
    """``/metrics`` of a real ``roadcast serve`` on the session broker that has closed
    every tick of a replay (forecasts, accuracy) and dead-lettered one record."""
    from pipeline.kafka.broker import free_port
    from pipeline.kafka.clients import make_producer
    from pipeline.settings import load_settings
    from tests.service_support import (
        make_world,
        produce_panel,
        start_service,
        stop_service,
        store_counters,
    )

    root = tmp_path_factory.mktemp("served")
    if not broker.is_running():
        broker.start()
    tag = uuid.uuid4().hex[:8]
    settings = load_settings(
        bootstrap_servers=broker.bootstrap,
        **{
            f"topic_{t}": f"t.metrics-conventions.{t}.{tag}"
            for t in ("readings", "dlq", "forecasts", "alerts")
        },
        consumer_group=f"t.metrics-conventions.group.{tag}",
    )
    world = make_world(root / "bundles", live_steps=12)
    port = free_port()
    store, log = root / "store.sqlite", root / "service.log"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ROADCAST_METRICS_ENABLED", "true")
        env.setenv("ROADCAST_METRICS_HOST", "127.0.0.1")
        env.setenv("ROADCAST_METRICS_PORT", str(port))
        proc = start_service(settings, world.bundles, store, log)
    try:
        produce_panel(settings, world.live)
        producer = make_producer(settings)
        producer.send(settings.topic_readings, key=b"s0", value=b"not json")
        producer.close()

        def done() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"the service exited: {log.read_text()[-3000:]}")
            counters = store_counters(store)
            return (
                counters.get("ticks_closed", 0) >= world.live.n_time
                and counters.get("dead_lettered", 0) >= 1
            )

        wait_until(done, what="every tick closed and a dead letter", details=log.read_text)
        url = f"http://127.0.0.1:{port}/metrics"
        text = httpx.get(url, headers={"Accept": "text/plain"}, timeout=WAIT_S).text
        openmetrics = httpx.get(url, headers={"Accept": OPENMETRICS}, timeout=WAIT_S).text
    finally:
        code = stop_service(proc)
    assert code == 0, log.read_text()[-3000:]
    return Served(text, openmetrics)


def exposed_names(text: str) -> set[str]:
    """Every series name a text-format exposition declares, with or without samples."""
    suffixes = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        names.update(name + s for s in suffixes.get(kind, ("",)))
    return names


@pytest.mark.integration
def test_promtool_finds_nothing_in_a_real_service_s_metrics(
    promtool_bin: str, served: Served
) -> None:
    assert 'roadcast_dead_letters_total{reason="bad_json"} 1.0' in served.text
    assert re.search(r'^roadcast_live_mae\{[^}]*model="ar"', served.text, re.M)
    assert re.search(r'^roadcast_build_info\{version="\d[^"]*"\} 1\.0$', served.text, re.M)
    done = subprocess.run(
        [promtool_bin, "check", "metrics"],
        input=served.text, capture_output=True, text=True, timeout=WAIT_S,
    )  # fmt: skip
    findings = (done.stdout + done.stderr).strip()
    assert done.returncode == 0 and not findings, findings


@pytest.mark.integration
def test_a_real_service_exports_no_created_series(served: Served) -> None:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    assert not re.findall(r"^\w+_created\b.*$", served.text, re.MULTILINE)
    samples = [
        s.name for f in text_string_to_metric_families(served.openmetrics) for s in f.samples
    ]
    assert "roadcast_records_consumed_total" in samples
    assert [s for s in samples if s.endswith("_created")] == []


@pytest.mark.integration
def test_rare_events_start_at_zero_so_their_first_one_shows_in_rate(served: Served) -> None:
    for series in (
        'roadcast_errors_total{kind="recoveries"} 0.0',
        'roadcast_errors_total{kind="group_rejoins"} 0.0',
        'roadcast_dead_letters_total{reason="unknown_sensor"} 0.0',
        'roadcast_ticks_closed_total{reason="watermark"} 0.0',
        'roadcast_alerts_published_total{status="firing"} 0.0',
        'roadcast_model_swaps_total{result="refused"} 0.0',
    ):
        assert series in served.text.splitlines(), series


@pytest.mark.integration
def test_rules_and_dashboards_name_only_what_a_real_service_exposes(served: Served) -> None:
    exposed = exposed_names(served.text)
    queries = [(f"rule {r['alert']}", r["expr"]) for r in rules()] + dashboard_queries()
    assert DASHBOARDS and len(queries) > 20
    for where, expr in queries:
        names = promql_names(expr) - PROMETHEUS_OWN
        names = {n for n in names if not n.startswith("scrape_")}
        missing = {n for n in names if n not in exposed and series_family(n) not in exposed}
        assert not missing, f"{where} names what the service does not expose: {sorted(missing)}"


@pytest.mark.integration
def test_docs_list_every_roadcast_metric_a_real_service_exposes(served: Served) -> None:
    families = {name for name in re.findall(r"^# TYPE (roadcast_\S+) ", served.text, re.MULTILINE)}
    documented = set(re.findall(r"`(roadcast_[a-z0-9_]+)", SERVICE_DOC.read_text()))
    assert len(families) > 25
    assert families <= documented, sorted(families - documented)


@pytest.mark.integration
def test_a_real_service_labels_nothing_by_sensor(served: Served) -> None:
    labels = set(re.findall(r"[{,](\w+)=\"", served.text))
    roadcast = {
        label
        for line in served.text.splitlines()
        if line.startswith("roadcast_")
        for label in re.findall(r"[{,](\w+)=\"", line)
    }
    assert {"model", "horizon", "reason", "stage", "topic", "partition"} <= roadcast
    assert roadcast <= BOUNDED_LABELS, sorted(roadcast - BOUNDED_LABELS)
    assert "sensor" not in labels


def test_the_number_of_series_does_not_grow_with_the_sensors() -> None:
    def series(sensors: int) -> int:
        metrics = ServiceMetrics(process=False)
        metrics.loaded_models(lambda: [("ar", "v1")])
        ids = np.arange(sensors)
        steps = np.repeat(np.arange(1, 4), sensors)
        ones = np.ones(len(steps))
        scored = AccuracyRows(
            "ar", steps, np.full(len(steps), 300_000), ones.astype(int), ones, ones
        )
        batch = Batch(
            ticks=[TickRow(300_000, sensors, "complete", 301_000, 12.0)],
            forecasts=[ForecastRows.from_arrays("ar", 300_000, ids, np.ones((3, sensors)))],
            accuracy=[scored],
        )
        metrics.record_batch(
            {"consumed": sensors, "dead_lettered.unknown_sensor": sensors},
            batch, sensors_down=sensors, open_ticks=1,
        )  # fmt: skip
        return sum(len(f.samples) for f in metrics.registry.collect())

    assert series(3) == series(20_000)


# --------------------------------------------------------------------------- rules


def test_every_alert_has_a_summary_a_description_and_a_runbook_section() -> None:
    doc = SERVICE_DOC.read_text()
    sections = anchors(doc)
    assert {"metrics-and-health", "alert-delivery"} <= sections  # the slugs are GitHub's
    for rule in rules():
        name, notes = rule["alert"], rule.get("annotations", {})
        assert notes.get("summary", "").strip(), f"{name} has no summary"
        assert len(notes.get("description", "").split()) >= 10, f"{name}: no description"
        page, _, anchor = notes.get("runbook_url", "").partition("#")
        assert page == "docs/service.md", f"{name}: runbook_url {notes.get('runbook_url')!r}"
        assert anchor in sections, f"{name}: docs/service.md has no section #{anchor}"
        assert rule["labels"]["severity"] in ("warning", "critical"), name
    # every link between the sections of the runbook resolves too
    for target in re.findall(r"\]\(#([^)]+)\)", doc):
        assert target in sections, f"docs/service.md links to a missing #{target}"


# --------------------------------------------------------------------------- dashboards


def provisioned_uids() -> set[str]:
    uids = set()
    for path in DATASOURCES.glob("*.y*ml"):
        for source in yaml.safe_load(path.read_text()).get("datasources", []):
            assert source.get("uid"), f"{path.name}: data source {source.get('name')} has no uid"
            uids.add(source["uid"])
    return uids


def datasource_refs(node: Any) -> Iterator[Any]:
    """Every ``datasource`` value anywhere in a dashboard."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield value
            else:
                yield from datasource_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from datasource_refs(item)


def test_dashboards_use_a_provisioned_data_source() -> None:
    uids = provisioned_uids()
    assert DASHBOARDS and uids
    seen_uids: set[str] = set()
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        assert dashboard.get("uid") and dashboard["uid"] not in seen_uids, path.name
        seen_uids.add(dashboard["uid"])
        variables = {
            v["name"]
            for v in dashboard.get("templating", {}).get("list", [])
            if v.get("type") == "datasource" and v.get("query") == "prometheus"
        }
        for ref in datasource_refs(dashboard):
            uid = ref.get("uid") if isinstance(ref, dict) else ref
            by_variable = isinstance(uid, str) and uid.strip("${}") in variables
            assert uid in uids or by_variable, f"{path.name}: data source {ref!r} not provisioned"
        ids = [p.get("id") for p in panels(dashboard)]
        assert len(set(ids)) == len(ids), f"{path.name}: panel ids repeat"


def expected_unit(expr: str) -> str | None:
    """The Grafana unit a query's result has, where its metric's name tells it."""
    compact = re.sub(r"\s+", "", expr)
    if re.fullmatch(r"histogram_quantile\(.*_seconds_bucket.*\)", compact):
        return "s"
    if re.fullmatch(r"time\(\)-\w+_timestamp_seconds", compact):
        return "s"
    plain = re.fullmatch(r"(?:(?:sum|max|min|avg)\()?(\w+)(?:\{[^}]*\})?\)?", compact)
    if plain:
        name = plain.group(1)
        if name.endswith("_bytes"):
            return "bytes"
        if name.endswith("_seconds") and not name.endswith("_timestamp_seconds"):
            return "s"
    if re.fullmatch(r"1000\*.*rate\(\w+_seconds_total.*", compact):
        return "ms"
    return None


def test_panel_units_match_their_metrics() -> None:
    checked = 0
    for path in DASHBOARDS:
        for panel in panels(json.loads(path.read_text())):
            unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
            for target in panel.get("targets", []):
                want = expected_unit(target.get("expr", ""))
                if want is not None:
                    checked += 1
                    assert unit == want, (
                        f"{path.name}: panel {panel.get('title')!r} shows {target['expr']} "
                        f"in {unit!r}, not {want!r}"
                    )
    assert checked >= 4
