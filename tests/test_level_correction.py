"""The online level correction: the service's incremental form equals the offline rule,
and a served model follows a sensor whose level moved after training."""

from __future__ import annotations

import numpy as np
import pytest

from models.forecasters.level import OnlineLevel, corrections
from pipeline.kafka.clients import ensure_topics, make_producer
from pipeline.kafka.replay import replay
from pipeline.model_dir import load_bundles
from pipeline.service.config import ServiceConfig
from pipeline.service.loop import ForecastService
from pipeline.service.store import Store
from tests.service_support import service_thread, shifted_panel
from tests.waiting import wait_until


def test_the_services_online_correction_is_the_offline_rule_tick_by_tick() -> None:
    rng = np.random.default_rng(0)
    n, horizon, nodes, gap = 300, 6, 4, 40
    y = rng.normal(0.0, 1.0, (n + horizon + 1, nodes))
    y[150:, 1] += 4.0  # a lasting shift on sensor 1
    observed = rng.random(y.shape) > 0.05  # missing readings
    forecasts = np.repeat(rng.normal(0.0, 0.3, (n, 1, nodes)), horizon, axis=1)  # [n, h, node]
    actual = np.stack([np.where(observed, y, np.nan)[i + 1 : i + 1 + horizon] for i in range(n)])
    errors = actual - forecasts
    errors[gap] = np.nan  # no forecast issued at that tick (a model that failed there)
    offline = corrections(errors, 24.0)
    online = OnlineLevel(horizon, nodes, 24.0)
    got = np.zeros_like(offline)
    for tick in range(n):
        online.observe(tick, y[tick], observed[tick])
        got[tick] = online.correction()
        if tick != gap:
            online.record(tick, forecasts[tick])
    np.testing.assert_allclose(got, offline, atol=1e-12)
    assert np.abs(got[200:, :, 1] - 4.0).max() < 1.0  # the shifted sensor is followed
    assert np.mean(got[:, :, 0] != 0.0) < 0.1  # pure noise: the gate mostly stays shut


def _served_errors(settings, config, bundles, live) -> dict[str, float]:
    """Each sensor's mean absolute error of the AR forecasts 3 steps ahead that the
    service stored, over the second half of the streamed part."""
    ensure_topics(settings)
    producer = make_producer(settings)
    replay(live, producer, settings.topic_readings, progress=False)
    producer.close()
    service = ForecastService(settings, config, load_bundles(bundles))
    with service_thread(service):
        wait_until(
            lambda: service.counters["ticks_closed"] >= live.n_time - 1, what="every tick closed"
        )
    since_ms = int(live.timestamps.as_unit("ms").asi8[live.n_time // 2])
    out = {}
    with Store(settings.store_path, readonly=True) as db:
        keys = {name: key for key, name in db.sensor_names().items()}
        for column, sensor in enumerate(live.sensor_ids):
            issued, mean, _, _ = db.recent_forecasts("ar", since_ms, np.array([keys[sensor]]), 3)
            truth = dict(
                zip(
                    live.timestamps.as_unit("ms").asi8.tolist(), live.values[:, column], strict=True
                )
            )
            errors = [
                abs(float(mean[k, 2, 0]) - float(truth[ms + 3 * 300_000]))
                for k, ms in enumerate(issued.tolist())
                if ms + 3 * 300_000 in truth
            ]
            assert len(errors) > 20, (sensor, len(errors))
            out[sensor] = float(np.mean(errors))
    return out


def _noisy_world(root):
    """AR(3) fitted on 6 sensors reading 50 plus white noise (so it forecasts about 50
    whatever came before); the streamed part, in which sensor 0 reads 40 % high from
    step ``SHIFT_AT`` on."""
    from models.forecasters.ar import AutoRegressive

    panel, train_end = shifted_panel()
    model = AutoRegressive(window=3, horizon=3)
    model.fit(panel.slice(0, train_end - 40), valid=panel.slice(train_end - 40, train_end))
    model.save(root / model.name)
    return root, panel.slice(train_end, panel.n_time)


def test_a_served_model_follows_a_sensor_recalibrated_after_training(
    kafka_settings, tmp_path
) -> None:
    """AR(p) trained before sensor 0 reads 40 % high keeps forecasting its old level; with
    the correction the served forecasts of that sensor end up near its readings, and the
    other sensors' forecasts stay the model's."""
    bundles, live = _noisy_world(tmp_path / "bundles")
    base = dict(allowed_lateness="0min", durable=False, flush_timeout_s=5.0)
    plain = _served_errors(
        kafka_settings.model_copy(update={"store_path": tmp_path / "plain.sqlite"}),
        ServiceConfig(**base, level_half_life=None),
        bundles,
        live,
    )
    topics = {
        name: getattr(kafka_settings, name) + ".level"
        for name in ("topic_readings", "topic_forecasts", "topic_alerts", "topic_dlq")
    }
    followed = _served_errors(
        kafka_settings.model_copy(
            update={
                "store_path": tmp_path / "level.sqlite",
                "consumer_group": kafka_settings.consumer_group + ".level",
                **topics,
            }
        ),
        ServiceConfig(**base),
        bundles,
        live,
    )
    assert followed["s0"] < 0.3 * plain["s0"], (followed, plain)
    for sensor in ("s1", "s2", "s3", "s4", "s5"):
        assert followed[sensor] < 1.1 * plain[sensor], (sensor, followed, plain)


def test_a_hot_reload_keeps_the_correction_of_an_unchanged_version_only() -> None:
    from types import SimpleNamespace

    from pipeline.service.model_set import ModelSlot
    from pipeline.service.state import ServiceState

    def slot(name: str, version: str, horizon: int = 3) -> ModelSlot:
        model = SimpleNamespace(horizon=horizon, sensor_ids=("a", "b"))
        return ModelSlot(name, model, None, np.array([1, 2]), None, version)

    config = ServiceConfig(tick="5min")
    before = [slot("ar", "v1"), slot("lstm", "v1"), slot("gru", "v1")]
    state = SimpleNamespace(config=config, models=before)
    held = ServiceState._levels(state)
    assert held["ar"].state.decay == pytest.approx(0.5 ** (1 / 72))  # 6 h of 5-minute ticks
    state.models = [slot("ar", "v1"), slot("lstm", "v2"), slot("gru", "v1", horizon=6)]
    after = ServiceState._levels(state, before, held)
    assert after["ar"] is held["ar"]
    assert after["lstm"] is not held["lstm"]  # retrained: its errors are not the old ones
    assert after["gru"] is not held["gru"] and after["gru"].horizon == 6
    state.config = ServiceConfig(tick="5min", level_half_life=None)
    assert ServiceState._levels(state) == {}


def test_a_fresh_start_waits_a_half_life_before_it_calls_a_change_a_shift() -> None:
    """A fresh service's first errors were those of a congestion coming on (forecasts
    made an hour before, in free flow): after 12 of them the gate opened and the next
    forecasts were pulled down to 0 mph. A lasting change is still followed, once its
    errors span about a half-life."""
    from models.forecasters.level import LevelState

    rng = np.random.default_rng(0)
    state = LevelState((1, 1), half_life=72.0)
    opened = []
    for _ in range(150):
        state.update(np.array([[-40.0 + rng.normal(0.0, 2.0)]]))
        opened.append(bool(state.correction()[0, 0] != 0.0))
    assert not any(opened[:60])  # within the first 5 hours: no shift yet
    assert all(opened[80:])  # a change lasting beyond a half-life is followed
    # a sensor reporting every third tick (15 minutes on a 5-minute grid) is followed too
    sparse = LevelState((1, 1), half_life=72.0)
    for tick in range(150):
        seen = tick % 3 == 0
        sparse.update(np.array([[-40.0 + rng.normal(0.0, 2.0) if seen else np.nan]]))
    assert sparse.correction()[0, 0] != 0.0
    # a sensor back after a long outage waits again, as at a fresh start
    state.skip(1000)
    back = []
    for _ in range(150):
        state.update(np.array([[-80.0 + rng.normal(0.0, 2.0)]]))
        back.append(bool(state.correction()[0, 0] != 0.0))
    assert not any(back[:60]) and all(back[80:])


def test_a_corrected_interval_keeps_its_forecast_above_the_floor() -> None:
    """A large downward correction raised the forecast and its lower bound to the floor
    but left the upper bound below it: lo > hi, and the forecast was dropped."""
    from types import SimpleNamespace

    from models.forecasters.level import LevelState, follow_level

    level = OnlineLevel(horizon=2, nodes=3, half_life_ticks=4.0)
    level.state = LevelState((2, 3), 4.0, gate=None)  # the plain mean: always applied
    level.state.update(np.full((2, 3), -35.0))
    model = SimpleNamespace(floored=lambda values: np.maximum(values, 0.0))
    mean = np.full((2, 3), 26.0, dtype=np.float32)
    lower, upper = mean - 4.3, mean + 4.3
    got, lo, hi = follow_level(level, model, 0, mean, lower, upper)
    assert lo is not None and hi is not None
    assert np.all(lo <= got) and np.all(got <= hi) and np.all(lo >= 0.0)
