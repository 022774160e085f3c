"""The forecast flow serves the forecasts the service serves: each model's forecast is
corrected for a sensor whose level moved, its correction replayed from the store up to
the window's last tick (no broker: the service's poll processor is driven directly)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from models.forecasters.base import Forecast, Forecaster
from models.panel import SensorPanel
from pipeline.service.processor import PollProcessor
from pipeline.service.store import Store
from tests import test_level_restore
from tests.test_level_restore import _feed, _models, _processor

# The bundles (AR and persistence of 6 sensors, AR of 3 of them) and the streamed
# readings, sensor 0 reading 40 % high from its 10th step on, as this module's fixture.
level_world = test_level_restore.world
STEPS = 120  # the gate of the shifted sensor is open by then


def _stored(store: Store, model: Forecaster, name: str, issued_ms: int) -> np.ndarray:
    """``[3, horizon, node]``: mean, lower and upper of ``name``'s stored forecast issued
    at ``issued_ms`` (NaN bounds where it has none)."""
    of = {name: sid for sid, name in store.sensor_names().items()}
    ids = np.array([of[s] for s in model.sensor_ids], dtype=np.int64)
    issued, mean, lower, upper = store.recent_forecasts(name, issued_ms, ids, model.horizon)
    (at,) = np.nonzero(issued == issued_ms)[0]
    return _stack(
        mean[at], None if lower is None else lower[at], None if upper is None else upper[at]
    )


def _stack(mean: np.ndarray, lower: np.ndarray | None, upper: np.ndarray | None) -> np.ndarray:
    nan = np.full_like(mean, np.nan)
    return np.stack([mean, nan if lower is None else lower, nan if upper is None else upper])


def _bands(fc: Forecast) -> np.ndarray:
    """``[3, horizon, node]``: the forecast's mean, lower and upper (NaN: none)."""
    return _stack(fc.mean, fc.lower, fc.upper)


def _served(bundles: Path, live: SensorPanel, path: Path, **config: Any) -> tuple[int, dict]:
    """Run the service over the first :data:`STEPS` steps into the store at ``path``;
    returns the last closed tick (ms) and every model's stored forecast issued at it."""
    processor: PollProcessor = _processor(bundles, path, **config)
    _feed(processor, live, range(STEPS))
    last = processor.store.last_ticks(1)[0].ts_ms
    stored = {m.name: _stored(processor.store, m.model, m.name, last) for m in processor.models}
    processor.store.close()
    return last, stored


def _window(path: Path, models: dict[str, Forecaster]) -> SensorPanel:
    """The flow's window of ``models`` read from the store at ``path``."""
    from flows.forecast_flow import read_window

    union = list(dict.fromkeys(s for m in models.values() for s in m.sensor_ids))
    return read_window.fn(str(path), tuple(union), max(m.window for m in models.values()), "m")


def _flow_step(
    path: Path, half_life: str, models: dict[str, Forecaster]
) -> tuple[dict[str, Forecast], dict[str, str]]:
    """The flow's forecasting step on the store at ``path``: its forecasts and the
    models whose level replay failed."""
    from flows.forecast_flow import follow_levels, forecast_all, parse_half_life

    window = _window(path, models)
    own = forecast_all.fn(models, window)
    corrected, failed, _ = follow_levels.fn(
        str(path), models, own, window, parse_half_life(half_life)
    )
    return corrected, failed


def test_the_flow_forecasts_what_the_service_stored_after_a_level_shift(
    level_world, tmp_path
) -> None:
    """The flow published the models' own forecasts: 40 % low at the shifted sensor,
    where the service's followed its new level."""
    bundles, live = level_world
    path = tmp_path / "store.sqlite"
    last, served = _served(bundles, live, path)
    models = _models(bundles)
    flow, failed = _flow_step(path, "6h", models)
    assert failed == {}
    off, _ = _flow_step(path, "off", models)
    window = _window(path, models)
    for name, model in models.items():
        assert int(flow[name].issued_at.value // 1_000_000) == last
        np.testing.assert_allclose(_bands(flow[name]), served[name], rtol=1e-5, err_msg=name)
        own = model.predict(window.select(model.sensor_ids))
        np.testing.assert_array_equal(_bands(off[name]), _bands(own), err_msg=name)
    moved = flow["ar"].mean[:, 0] - off["ar"].mean[:, 0]  # the shifted sensor's correction
    assert moved.min() > 5.0


def _shadow(bundles: Path, live: SensorPanel, path: Path, **options: Any) -> int:
    """A service running only the champion (persistence, ``--only persistence``) over the
    first :data:`STEPS` steps into the store at ``path``; returns its last closed tick (ms)."""
    from pipeline.model_dir import load_bundles
    from pipeline.service.config import ServiceConfig
    from pipeline.settings import Settings

    config = ServiceConfig(allowed_lateness="0min", durable=False, **options)
    champion = {"persistence": load_bundles(bundles)["persistence"]}
    processor = PollProcessor(Settings(store_path=path), config, champion, clock=lambda: 0.0)
    _feed(processor, live, range(STEPS))
    last = processor.store.last_ticks(1)[0].ts_ms
    processor.store.close()
    return last


def _flow_stored(path: Path, model: Forecaster, name: str, issued_ms: int) -> np.ndarray:
    with Store(path, readonly=True) as store:
        return _stored(store, model, name, issued_ms)


def test_in_shadow_mode_the_flow_stores_the_challenger_s_forecast_the_service_would(
    level_world, prefect_harness, tmp_path
) -> None:
    """The service serves only persistence; the flow forecasts AR from its store: what it
    stores is what a service serving both stored, corrected alike (it stored AR's own)."""
    from flows.forecast_flow import forecast_flow

    bundles, live = level_world
    _, both = _served(bundles, live, tmp_path / "both.sqlite", some=False)
    shadow = tmp_path / "shadow.sqlite"
    last = _shadow(bundles, live, shadow)
    ar = _models(bundles, some=False)["ar"]
    own = ar.predict(_window(shadow, {"ar": ar}))
    result = forecast_flow(models_dir=str(bundles), store=str(shadow), publish_to_kafka=False)
    assert result["already_forecast"] == ["persistence"] and list(result["models"]) == ["ar"]
    got = _flow_stored(shadow, ar, "ar", last)
    np.testing.assert_allclose(got, both["ar"], rtol=1e-5)
    assert (got[0, :, 0] - own.mean[:, 0]).min() > 5.0  # the shifted sensor followed


def test_a_model_whose_replay_fails_is_published_uncorrected_with_one_warning(
    level_world, prefect_harness, tmp_path, monkeypatch, caplog
) -> None:
    from flows.forecast_flow import forecast_flow
    from models.forecasters.ar import AutoRegressive

    bundles, live = level_world
    shadow = tmp_path / "shadow.sqlite"
    last = _shadow(bundles, live, shadow)
    ar = _models(bundles, some=False)["ar"]
    own = ar.predict(_window(shadow, {"ar": ar}))
    predict = AutoRegressive.predict_batch

    def no_memory_for_many(self, panel, origins):  # the flow's own forecast still works
        if len(origins) > 1:
            raise MemoryError("no memory for the replay")
        return predict(self, panel, origins)

    monkeypatch.setattr(AutoRegressive, "predict_batch", no_memory_for_many)
    with caplog.at_level(logging.WARNING):
        result = forecast_flow(models_dir=str(bundles), store=str(shadow), publish_to_kafka=False)
    assert list(result["models"]) == ["ar"] and result["stored_rows"] == 6
    np.testing.assert_allclose(_flow_stored(shadow, ar, "ar", last), _bands(own), rtol=1e-6)
    lines = [r.getMessage() for r in caplog.records if "level correction of" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "'ar'" in lines[0] or " ar " in lines[0]
    assert "MemoryError: no memory for the replay" in lines[0] and "uncorrected" in lines[0]


def test_the_flow_corrects_with_the_half_life_the_service_recorded_in_the_store(
    level_world, prefect_harness, tmp_path, caplog
) -> None:
    """A service run with ``--level-half-life 3h``: the flow at its default (``service``)
    stores what a service serving AR with 3 h stored, without a warning; asked for 6 h it
    uses 6 h and says the forecasts differ from the service's. (Four half-lives, what the
    replay reads, cover the whole stream at both.)"""
    from flows.forecast_flow import forecast_flow

    bundles, live = level_world
    _, both = _served(bundles, live, tmp_path / "both.sqlite", some=False, level_half_life="3h")
    _, six = _served(bundles, live, tmp_path / "six.sqlite", some=False, level_half_life="6h")
    ar = _models(bundles, some=False)["ar"]
    for asked, expected, warned in (("service", both, False), ("6h", six, True)):
        shadow = tmp_path / f"shadow-{asked}.sqlite"
        last = _shadow(bundles, live, shadow, level_half_life="3h")
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            forecast_flow(
                models_dir=str(bundles), store=str(shadow), publish_to_kafka=False,
                level_half_life=asked,
            )  # fmt: skip
        np.testing.assert_allclose(_flow_stored(shadow, ar, "ar", last), expected["ar"], rtol=1e-5)
        lines = [r.getMessage() for r in caplog.records if "is not the service's" in r.getMessage()]
        assert len(lines) == int(warned), lines
    assert np.abs(both["ar"][0] - six["ar"][0]).max() > 0.1  # the two half-lives differ here


def test_the_half_life_parameter_follows_the_store_or_names_what_is_wrong() -> None:
    import pandas as pd
    import pytest

    from flows.forecast_flow import check_half_life, resolve_half_life
    from pipeline.service.config import ServiceConfig

    assert resolve_half_life("service", None) == (ServiceConfig.level_half_life, None)
    assert resolve_half_life("service", "off") == (None, None)
    assert resolve_half_life("service", "2h") == (pd.Timedelta("2h"), None)
    assert resolve_half_life("120min", "2h") == (pd.Timedelta("2h"), None)
    value, warning = resolve_half_life("off", "2h")
    assert value is None and warning is not None and "(2h, as it recorded" in warning
    check_half_life("service")
    with pytest.raises(ValueError, match="level_half_life"):
        check_half_life("soon")
