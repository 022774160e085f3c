"""The service's online level correction survives a restart: it is rebuilt from the
stored readings by replaying each model's own forecasts (no broker needed: the poll
processor is driven directly)."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from models.forecasters.level import OnlineLevel
from models.panel import SensorPanel
from pipeline.model_dir import load_bundles
from pipeline.service.config import ServiceConfig
from pipeline.service.processor import PollProcessor
from pipeline.settings import Settings
from tests.service_support import MemoryOutbox, feed_steps, shifted_panel

SILENT = (3, range(40, 44))  # sensor 3 sends nothing at these steps (a missed reading)
GAP = 60  # no sensor reports this step: no tick closes for it


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, SensorPanel]:
    """AR(3) and persistence fitted on 6 sensors reading 50 plus white noise; the
    streamed part, in which sensor 0 reads 40 % high from step ``SHIFT_AT`` on."""
    from models.forecasters.ar import AutoRegressive
    from models.forecasters.baselines import Persistence

    root = tmp_path_factory.mktemp("bundles")
    panel, train_end = shifted_panel()
    train, valid = panel.slice(0, train_end - 40), panel.slice(train_end - 40, train_end)
    for model in (AutoRegressive(window=3, horizon=3), Persistence(window=4, horizon=3)):
        model.fit(train, valid=valid)
        model.save(root / model.name)
    subset = ["s4", "s0", "s2"]  # a model of some sensors, in another order
    some = AutoRegressive(window=2, horizon=4)
    some.fit(train.select(subset), valid=valid.select(subset))
    some.save(root.parent / "some" / some.name)
    return root, panel.slice(train_end, panel.n_time)


def _models(bundles: Path, some: bool = True) -> dict[str, Any]:
    """AR and persistence of every sensor, and ``some``: AR of three of them."""
    models = load_bundles(bundles)
    return {**models, "some": load_bundles(bundles.parent / "some")["ar"]} if some else models


def _processor(bundles: Path, store: Path, some: bool = True, **config: Any) -> PollProcessor:
    settings = Settings(store_path=store)
    service = ServiceConfig(allowed_lateness="0min", durable=False, **config)
    return PollProcessor(settings, service, _models(bundles, some), clock=lambda: 0.0)


def _feed(processor: PollProcessor, live: SensorPanel, steps: range) -> MemoryOutbox:
    """Each step's readings as one poll (one batch-form record), processed and stored,
    without step ``GAP`` and the ``SILENT`` sensor's silent steps; returns what was sent."""
    kept = (step for step in steps if step != GAP)
    return feed_steps(
        processor, live, kept, silent=lambda step, col: col == SILENT[0] and step in SILENT[1]
    )


def _same_level(got: OnlineLevel, want: OnlineLevel) -> None:
    for name in ("w", "w2", "s1", "s2", "wp", "sp", "prev", "age", "quiet"):
        np.testing.assert_allclose(getattr(got.state, name), getattr(want.state, name), rtol=1e-5)
    assert got._last == want._last
    assert sorted(got._issued) == sorted(want._issued)
    for tick, issued in want._issued.items():
        np.testing.assert_allclose(got._issued[tick], issued, rtol=1e-5)
    np.testing.assert_allclose(got.correction(), want.correction(), rtol=1e-5, atol=1e-6)


def _forecasts(processor: PollProcessor, model: str, since: pd.Timestamp) -> np.ndarray:
    slot = next(m for m in processor.models if m.name == model)
    _, mean, _, _ = processor.store.recent_forecasts(
        model, int(since.value // 1_000_000), slot.store_sensors, slot.model.horizon
    )
    return mean


def test_a_restart_rebuilds_the_level_correction_the_running_service_had(
    world, tmp_path, caplog
) -> None:
    """One service runs on; another is restarted after the gate opened for the shifted
    sensor: its corrections, and the next forecasts it publishes, are the first one's
    (they started empty after a restart)."""
    bundles, live = world
    steps = 120
    running = _processor(bundles, tmp_path / "running.sqlite")
    _feed(running, live, range(steps))
    before = _processor(bundles, tmp_path / "restarted.sqlite")
    _feed(before, live, range(steps))
    before.store.close()
    with caplog.at_level(logging.INFO, logger="roadcast.service"):
        restarted = _processor(bundles, tmp_path / "restarted.sqlite")
    assert np.abs(running.levels["ar"].correction()[:, 0]).min() > 5.0  # the gate is open
    for name in ("ar", "persistence", "some"):
        _same_level(restarted.levels[name], running.levels[name])
    (line,) = [r for r in caplog.records if r.getMessage() == "level_restored"]
    assert sorted(line.fields["models"]) == ["ar", "persistence", "some"]
    assert line.fields["ticks"] == steps - 1  # every closed tick (not the gap)

    _feed(running, live, range(steps, steps + 5))
    _feed(restarted, live, range(steps, steps + 5))
    since = live.timestamps[steps]
    for name in ("ar", "persistence", "some"):
        want, got = _forecasts(running, name, since), _forecasts(restarted, name, since)
        assert len(got) == 5
        np.testing.assert_allclose(got, want, rtol=1e-5)


def test_the_replay_reaches_back_four_half_lives_of_what_the_store_holds(
    world, tmp_path, caplog
) -> None:
    """A 30-minute half-life (6 ticks) replays the last 24 closed ticks of the 100
    stored; what lies before them weighed little, so the correction is nearly the
    running one's."""
    bundles, live = world
    running = _processor(bundles, tmp_path / "store.sqlite", level_half_life="30min")
    _feed(running, live, range(100))
    kept = copy.deepcopy(running.levels["ar"])
    running.store.close()
    with caplog.at_level(logging.INFO, logger="roadcast.service"):
        restarted = _processor(bundles, tmp_path / "store.sqlite", level_half_life="30min")
    (line,) = [r for r in caplog.records if r.getMessage() == "level_restored"]
    assert line.fields["ticks"] == 24
    got, want = restarted.levels["ar"].correction(), kept.correction()
    assert np.abs(want[:, 0]).min() > 5.0
    np.testing.assert_allclose(got[:, 0], want[:, 0], rtol=0.1)


def test_a_model_failing_in_the_replay_starts_empty_and_the_service_goes_on(
    world, tmp_path, caplog
) -> None:
    bundles, live = world
    first = _processor(bundles, tmp_path / "store.sqlite")
    _feed(first, live, range(60))
    first.store.close()
    models = _models(bundles)
    predict = models["ar"].predict_batch
    calls = {"n": 0}

    def broken_once(panel, origins):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("no memory for the replay")
        return predict(panel, origins)

    models["ar"].predict_batch = broken_once  # type: ignore[method-assign]
    settings = Settings(store_path=tmp_path / "store.sqlite")
    config = ServiceConfig(allowed_lateness="0min", durable=False)
    with caplog.at_level(logging.INFO, logger="roadcast.service"):
        restarted = PollProcessor(settings, config, models, clock=lambda: 0.0)
    (failed,) = [r for r in caplog.records if r.getMessage() == "level_replay_failed"]
    assert failed.fields["model"] == "ar"
    assert "RuntimeError: no memory for the replay" in failed.fields["error"]
    assert restarted.levels["ar"].state.w.sum() == 0.0 and not restarted.levels["ar"]._issued
    assert restarted.levels["persistence"].state.w.sum() > 0.0  # the other is replayed
    (line,) = [r for r in caplog.records if r.getMessage() == "level_restored"]
    assert line.fields["models"] == ["persistence", "some"]
    _feed(restarted, live, range(61, 64))
    assert len(_forecasts(restarted, "ar", live.timestamps[61])) == 3


def test_with_the_correction_off_nothing_is_replayed(world, tmp_path, caplog) -> None:
    bundles, live = world
    first = _processor(bundles, tmp_path / "store.sqlite", level_half_life=None)
    _feed(first, live, range(30))
    first.store.close()
    with caplog.at_level(logging.INFO, logger="roadcast.service"):
        restarted = _processor(bundles, tmp_path / "store.sqlite", level_half_life=None)
    assert restarted.levels == {}
    assert "level_restored" not in [r.getMessage() for r in caplog.records]


def test_a_hot_reload_replays_a_new_version_and_keeps_an_unchanged_one(world, tmp_path) -> None:
    """A new version of AR (here the same weights) is replayed on the stored readings
    rather than starting empty; persistence's version is unchanged: its state is kept."""
    bundles, live = world
    processor = _processor(bundles, tmp_path / "store.sqlite", some=False)
    _feed(processor, live, range(80))
    before = dict(processor.levels)
    running = copy.deepcopy(before["ar"])

    def version(v: str) -> SimpleNamespace:
        return SimpleNamespace(version=v, label=v, run_id="")

    versions = {"ar": version("v2"), "persistence": version("")}
    assert processor.swap_models(_models(bundles, some=False), versions) is None
    assert processor.levels["persistence"] is before["persistence"]
    assert processor.levels["ar"] is not before["ar"]
    _same_level(processor.levels["ar"], running)


def test_a_long_replay_beats_the_liveness_between_chunks(world, tmp_path, monkeypatch) -> None:
    """A hot reload's replay in chunks beats the loop's liveness after each chunk, so
    /healthz does not call a large network's replay a stall; while the service starts
    (no beat yet) the beats leave it "starting"."""
    from pipeline.service import level_replay
    from pipeline.service.health import Health

    bundles, live = world
    processor = _processor(bundles, tmp_path / "store.sqlite", some=False)
    _feed(processor, live, range(80))
    now = [0.0]
    health = Health(stall_after_s=10.0, clock=lambda: now[0])
    assert health.live() == (True, {"status": "starting"})
    health.progress()
    assert health.live() == (True, {"status": "starting"})  # a start-up replay: not a beat
    health.beat()
    beats: list[float] = []

    def progress() -> None:
        now[0] += 6.0  # each chunk takes 6 s: two of them without a beat would be a stall
        health.progress()
        beats.append(now[0])
        assert health.live()[0]

    processor.progress = progress
    monkeypatch.setattr(level_replay, "LEVEL_REPLAY_CELLS", 6 * 10)  # 10 ticks a chunk
    versions = {"ar": SimpleNamespace(version="v2", label="v2", run_id="")}
    assert processor.swap_models(_models(bundles, some=False), versions) is None
    assert len(beats) >= 7  # 79 closed ticks, 10 a chunk
