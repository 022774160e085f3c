"""Hot reload on the embedded broker: the service swaps model versions at tick boundaries
while a replay runs, forecasts every tick exactly once (by the old version before each
swap, by the new one after), keeps scoring the old version's pending forecasts, and
refuses a half-written, corrupt or foreign version with the old models still serving."""

from __future__ import annotations

import logging
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from models.panel import SensorPanel
from pipeline.registry.serving import promote, rollback
from pipeline.registry.versions import register
from pipeline.registry.watch import ServingWatcher, load_serving
from pipeline.service.config import ServiceConfig
from pipeline.service.loop import ForecastService
from pipeline.service.store import Store
from tests.registry_support import SENSORS, make_registry
from tests.service_support import HORIZON, read_topic, service_thread
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

SWAPS = 10
TICKS_PER_PHASE = 5
CONFIG = ServiceConfig(allowed_lateness="0min", durable=False, poll_timeout_ms=50)


def _settings(broker, tmp: Path, tag: str):
    from pipeline.settings import load_settings

    return load_settings(
        bootstrap_servers=broker.bootstrap,
        topic_readings=f"t.reload.readings.{tag}",
        topic_dlq=f"t.reload.dlq.{tag}",
        topic_forecasts=f"t.reload.forecasts.{tag}",
        topic_alerts=f"t.reload.alerts.{tag}",
        consumer_group=f"t.reload.group.{tag}",
        store_path=tmp / "store.sqlite",
    )


def _service(settings, bundles: Path) -> ForecastService:
    """What ``roadcast serve`` builds (:func:`pipeline.service.loop.serve`), in a thread."""
    from pipeline.service.metrics import ServiceMetrics

    loaded = load_serving(bundles)
    watcher = ServingWatcher(bundles, loaded.ids(), every_s=0.05)
    return ForecastService(
        settings, CONFIG, loaded.models, versions=loaded.versions, watcher=watcher,
        metrics=ServiceMetrics(process=False),
    )  # fmt: skip


def _metric(service: ForecastService, name: str, **labels: str) -> float | None:
    assert service.metrics is not None
    return service.metrics.registry.get_sample_value(name, labels)


def _replay(settings, panel: SensorPanel) -> None:
    from pipeline.kafka.clients import make_producer
    from pipeline.kafka.replay import replay

    producer = make_producer(settings)
    try:
        replay(panel, producer, settings.topic_readings, progress=False)
    finally:
        producer.close()


def _forecasts(settings, model: str) -> dict[tuple[int, str], list[np.ndarray]]:
    """Every published forecast of ``model`` by (issued ms, sensor): all copies."""
    from pipeline.kafka.frames import decode_forecast_frame

    out: dict[tuple[int, str], list[np.ndarray]] = {}
    for record in read_topic(settings, settings.topic_forecasts):
        for message in decode_forecast_frame(record.value, record.headers):
            if message.model == model:
                key = (int(message.issued_at.timestamp() * 1000), message.sensor)
                out.setdefault(key, []).append(np.asarray(message.yhat, np.float64))
    return out


def test_ten_swaps_during_a_replay_forecast_every_tick_once_by_the_right_version(broker, tmp_path):
    from pipeline.kafka.clients import ensure_topics
    from pipeline.model_dir import version_path

    phases = SWAPS + 1
    reg = make_registry(tmp_path, phases * TICKS_PER_PHASE)
    settings = _settings(broker, tmp_path, tmp_path.name[-12:])
    ensure_topics(settings)
    service = _service(settings, reg.bundles)
    closed = 0
    with service_thread(service):
        for phase in range(phases):
            if phase:  # between two phases: a new champion, or the previous one back
                if phase % 2:
                    promote(reg.bundles, {"ar": reg.b.version})
                else:
                    rollback(reg.bundles)
                wait_until(
                    lambda phase=phase: service.counters["model_swaps"] == phase,
                    what=f"swap {phase}",
                )
            part = reg.live.slice(phase * TICKS_PER_PHASE, (phase + 1) * TICKS_PER_PHASE)
            _replay(settings, part)
            closed += part.n_time
            wait_until(
                lambda closed=closed: service.counters["ticks_closed"] == closed,
                what=f"the {closed} ticks of phase {phase} to close",
            )
    assert service.counters["model_swaps"] == SWAPS
    assert service.counters.get("model_swaps_refused", 0) == 0
    assert _metric(service, "roadcast_model_swaps_total", result="swapped") == SWAPS
    # After an even number of swaps the first version serves again, as /metrics says.
    assert _metric(service, "roadcast_model_info", model="ar", version=reg.a.version) == 1
    assert _metric(service, "roadcast_model_info", model="ar", version=reg.b.version) is None

    # What each version forecasts for every tick of the replay, computed offline.
    from models.forecasters.registry import load_model

    stamps_ms = reg.live.timestamps.as_unit("ms").asi8.tolist()
    origins = np.arange(300, 300 + reg.live.n_time)
    expected = {
        v.version: load_model(version_path(reg.bundles, "ar", v.version))
        .predict_batch(reg.panel, origins)
        .mean  # [tick, horizon, node]
        for v in (reg.a, reg.b)
    }
    published = _forecasts(settings, "ar")
    assert len(published) == reg.live.n_time * SENSORS
    window = 3  # before its third tick, the service's window is not the panel's
    for t, issued_ms in enumerate(stamps_ms):
        phase = t // TICKS_PER_PHASE
        version = reg.a.version if phase % 2 == 0 else reg.b.version
        other = reg.b.version if version == reg.a.version else reg.a.version
        for node, sensor in enumerate(reg.live.sensor_ids):
            copies = published.get((issued_ms, sensor), [])
            assert len(copies) == 1, f"tick {t} sensor {sensor}: {len(copies)} forecasts"
            if t < window - 1:
                continue
            ours, theirs = expected[version][t, :, node], expected[other][t, :, node]
            assert np.allclose(copies[0], ours, rtol=1e-5, atol=1e-4), (t, phase, sensor)
            assert not np.allclose(copies[0], theirs, rtol=1e-5, atol=1e-4), (t, sensor)

    with Store(settings.store_path, readonly=True) as store:
        rows = [r for r in store.model_versions() if r.model == "ar"]
        assert [r.version for r in rows] == [
            (reg.a.version if k % 2 == 0 else reg.b.version) for k in range(phases)
        ]
        assert [r.since_ms for r in rows[1:]] == [
            stamps_ms[k * TICKS_PER_PHASE] for k in range(1, phases)
        ]
        assert rows[1].label == "second" and rows[1].run_id == "run-b"
        persistence = [r for r in store.model_versions() if r.model == "persistence"]
        assert len(persistence) == 1  # never swapped: one version throughout
        # One stored forecast per tick and sensor, none twice (the store keys them so;
        # the count shows none was lost either).
        issued = Counter(ms for ms, _ in _stored_issued(store, "ar"))
        assert sorted(issued) == stamps_ms
        assert set(issued.values()) == {SENSORS}
        # The old version's pending forecasts were scored after each swap: the tick a
        # swap happened at is the 1-step target of the old version's last forecast.
        actual = reg.live.values
        for k in range(1, phases):
            t = k * TICKS_PER_PHASE
            old = reg.a.version if (k - 1) % 2 == 0 else reg.b.version
            sums = store.accuracy_sums("ar", stamps_ms[t], stamps_ms[t])
            step1 = sums[sums.step == 1].iloc[0]
            error = np.abs(expected[old][t - 1, 0, :] - actual[t]).sum()
            assert step1.n == SENSORS
            assert step1.sum_abs == pytest.approx(error, rel=1e-4)


def test_a_bad_serving_set_is_refused_and_the_old_models_keep_serving(broker, tmp_path, caplog):
    """Half-written bundles appearing in the model directory are never loaded; a corrupt
    champion and a set of another network are refused, with the reason logged, while the
    old models keep forecasting every tick; a good version afterwards is swapped in."""
    from models.forecasters.ar import AutoRegressive
    from models.forecasters.baselines import Persistence
    from pipeline.kafka.clients import ensure_topics
    from pipeline.model_dir import NETWORK_FILE, read_serving, write_serving

    reg = make_registry(tmp_path, 20)
    settings = _settings(broker, tmp_path, tmp_path.name[-12:])
    ensure_topics(settings)
    first = read_serving(reg.bundles)
    assert first is not None
    service = _service(settings, reg.bundles)
    caplog.set_level(logging.INFO, logger="roadcast")

    def refused(count: int) -> bool:
        found = [r for r in caplog.records if r.getMessage() == "model_reload_refused"]
        return len(found) == count

    with service_thread(service):
        _replay(settings, reg.live.slice(0, 5))
        wait_until(lambda: service.counters["ticks_closed"] == 5, what="the first ticks")
        # Half-written bundles: a copy cut short next to the served links, and one in
        # the registry's staging area. Neither is named by serving.json: never loaded.
        for half in (reg.bundles / "gru", reg.bundles / "versions" / "ar" / ".staging-x"):
            shutil.copytree(reg.b.path, half)
            (half / "params.json").write_text("{")
        # A corrupt champion: its parameters changed after it was registered.
        params = reg.b.path / "params.json"
        params.write_text(params.read_text().replace("0", "1", 1))
        write_serving(reg.bundles, _with(first, ar=reg.b.version))
        wait_until(lambda: refused(1), what="the corrupt version to be refused")
        _replay(settings, reg.live.slice(5, 10))
        wait_until(lambda: service.counters["ticks_closed"] == 10, what="ticks after it")
        # A consistent set of another network (two sensors fewer).
        part = reg.panel.slice(0, 150).select(reg.panel.sensor_ids[:-2])
        small = {
            m.name: register(reg.bundles, m.fit(part), label="foreign").version
            for m in (
                AutoRegressive(window=3, horizon=HORIZON),
                Persistence(window=3, horizon=HORIZON),
            )
        }
        network = (reg.bundles / NETWORK_FILE).read_text()
        (reg.bundles / NETWORK_FILE).unlink()
        write_serving(reg.bundles, _with(first, **small))
        wait_until(lambda: refused(2), what="the other network to be refused")
        _replay(settings, reg.live.slice(10, 15))
        wait_until(lambda: service.counters["ticks_closed"] == 15, what="more ticks")
        # A good version is swapped in afterwards.
        (reg.bundles / NETWORK_FILE).write_text(network)
        good = AutoRegressive(window=3, horizon=HORIZON).fit(reg.panel.slice(100, 250))
        fresh = register(reg.bundles, good, label="good")
        promote(reg.bundles, {**first.models, "ar": fresh.version}, replace=True)
        wait_until(lambda: service.counters["model_swaps"] == 1, what="the good version")
        _replay(settings, reg.live.slice(15, 20))
        wait_until(lambda: service.counters["ticks_closed"] == 20, what="the last ticks")

    reasons = [
        r.__dict__["fields"]["reason"]
        for r in caplog.records
        if r.getMessage() == "model_reload_refused"
    ]
    assert "corrupted (sha256 differs from the manifest)" in reasons[0], reasons[0]
    assert "forecasts 4 sensors, the running service 6" in reasons[1], reasons[1]
    # The corrupt version (refused while loading) and the network (by the service).
    assert service.counters["model_swaps_refused"] == 2
    assert _metric(service, "roadcast_model_swaps_total", result="refused") == 2
    assert _metric(service, "roadcast_model_info", model="ar", version=fresh.version) == 1
    assert sorted(m.name for m in service.models) == ["ar", "persistence"]
    with Store(settings.store_path, readonly=True) as store:
        versions = [r.version for r in store.model_versions() if r.model == "ar"]
        assert versions == [reg.a.version, fresh.version]
        # Every tick was forecast while the bad sets were refused, once.
        issued = Counter(ms for ms, _ in _stored_issued(store, "ar"))
        assert len(issued) == 20 and set(issued.values()) == {SENSORS}


def _with(serving, **models):
    from pipeline.model_dir import Serving

    return Serving(
        {**serving.models, **models}, serving.champion, time.strftime("%H:%M:%S"), "test",
        (serving.record(), *serving.history),
    )  # fmt: skip


def _stored_issued(store: Store, model: str) -> list[tuple[int, int]]:
    rows = store._db.execute(
        "SELECT f.issued_at, f.sensor FROM forecasts f JOIN models m ON m.id = f.model "
        "WHERE m.name = ?",
        (model,),
    ).fetchall()
    return [(int(a), int(b)) for a, b in rows]


def test_what_a_live_service_refuses_to_swap_in(tmp_path):
    """Another network, a longer window, and a set the alert detectors cannot follow
    (their model missing, a shorter horizon, its sensors in another order) need a restart."""
    from models.forecasters.ar import AutoRegressive
    from pipeline.kafka.forecast_wire import ForecastEncoder
    from pipeline.service.model_set import build_slots, swap_refusal

    reg = make_registry(tmp_path, 5)
    part = reg.panel.slice(0, 150)
    ids = reg.panel.sensor_ids
    running = build_slots(
        {"ar": AutoRegressive(window=3, horizon=HORIZON).fit(part)},
        {s: i for i, s in enumerate(ids)},
        np.arange(len(ids)),
        ForecastEncoder,
    )

    def refusal(model, needs=None):
        return swap_refusal(running, ids, 3, {"ar": model}, needs or {})

    assert refusal(AutoRegressive(window=3, horizon=HORIZON).fit(part)) is None
    fewer = AutoRegressive(window=3, horizon=HORIZON).fit(part.select(ids[:4]))
    assert "it lacks 2 (s00004, s00005)" in refusal(fewer)
    assert "window of 5 ticks, the running service keeps 3" in refusal(
        AutoRegressive(window=5, horizon=HORIZON).fit(part)
    )
    reordered = AutoRegressive(window=3, horizon=HORIZON).fit(part.select(ids[::-1]))
    assert refusal(reordered) is None  # no detector holds its forecasts
    assert "another order" in refusal(reordered, {"ar": 3})
    assert "forecasts 2" in refusal(AutoRegressive(window=3, horizon=2).fit(part), {"ar": 3})
    other = {"persistence": AutoRegressive(window=3, horizon=HORIZON).fit(part)}
    assert "judge the forecasts of 'ar', which the new serving set lacks" in swap_refusal(
        running, ids, 3, other, {"ar": 3}
    )
