"""A bundle records its training data's time step (``step_s``); evaluate and the service
refuse data and ticks of another step, and bundles without it still load."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.train_models import train_models
from models.bundle import BundleError, read_bundle
from models.forecasters.baselines import Persistence
from models.forecasters.comparison import TrainPlan, evaluate_bundle
from models.forecasters.registry import load_model
from models.panel import SensorPanel
from pipeline.model_dir import BundleDirError
from pipeline.registry.serving import promote
from pipeline.registry.versions import register
from pipeline.registry.watch import ServingWatcher, load_serving
from tests.service_support import edit_config
from tests.waiting import wait_until

SENSORS = ("s0", "s1", "s2")


def panel_at(freq: str, n: int = 240) -> SensorPanel:
    rng = np.random.default_rng(0)
    t = np.arange(n)
    values = 50 + 8 * np.sin(2 * np.pi * t / 24)[:, None] + rng.normal(0, 1, (n, len(SENSORS)))
    stamps = pd.date_range("2024-03-01", periods=n, freq=freq, tz="UTC")
    return SensorPanel.from_values(values.astype(np.float32), stamps, SENSORS, name="toy")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The persistence bundle ``train_models`` serves, trained on 5-minute data."""
    out = tmp_path_factory.mktemp("train")
    plan = TrainPlan(
        models=("persistence",), window=6, horizon=6, seeds=1, progress=False, horizons=(3, 6)
    )
    train_models(panel_at("5min"), plan, out, report=False, log=lambda _: None)
    return (out / "bundles" / "persistence").resolve()


def test_training_records_the_data_step(trained: Path):
    assert json.loads((trained / "config.json").read_text())["step_s"] == 300
    assert load_model(trained).step_s == 300  # type: ignore[attr-defined]
    hourly = Persistence(window=3, horizon=2).fit(panel_at("1h"))
    assert hourly.step_s == 3600


def test_an_old_bundle_without_the_step_loads_and_evaluates_on_any_step(trained, tmp_path):
    old = tmp_path / "old"
    Persistence(window=6, horizon=6).fit(panel_at("5min")).save(old)
    edit_config(old, step_s=None)
    assert "step_s" not in json.loads((old / "config.json").read_text())
    assert load_model(old).step_s is None  # type: ignore[attr-defined]
    result = evaluate_bundle(old, panel_at("15min"), window=6, horizons=(3, 6))
    assert result["windows"] > 0


def test_evaluate_refuses_data_of_another_step_in_one_line(trained, tmp_path):
    panel = panel_at("15min")
    csv = tmp_path / "quarter.csv"
    frame = pd.DataFrame(panel.values, columns=list(SENSORS))
    frame.insert(0, "timestamp", panel.timestamps.strftime("%Y-%m-%dT%H:%M:%SZ"))
    frame.to_csv(csv, index=False)
    result = CliRunner().invoke(app, ["evaluate", str(trained), f"csv:{csv}", "--window", "6"])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0] == (
        f"error: bundle {trained} was trained on 5-minute steps; csv:{csv} has 15-minute "
        "steps: resample the data or train a model on it"
    )
    assert evaluate_bundle(trained, panel_at("5min"), window=6, horizons=(3, 6))["windows"] > 0


def test_evaluate_names_the_sensors_it_does_not_score(trained, tmp_path):
    panel = panel_at("5min")
    csv = tmp_path / "wider.csv"
    frame = pd.DataFrame(panel.values, columns=list(SENSORS))
    frame["extra"] = frame["s0"] + 1.0
    frame.insert(0, "timestamp", panel.timestamps.strftime("%Y-%m-%dT%H:%M:%SZ"))
    frame.to_csv(csv, index=False)
    result = CliRunner().invoke(app, ["evaluate", str(trained), f"csv:{csv}", "--window", "6"])
    assert result.exit_code == 0, result.output
    assert "note: 1 sensor(s) of the data are not in the bundle, e.g. ['extra']" in result.output


@pytest.mark.parametrize("silent", [("s0", "s1", "s2"), ("s1",)])
def test_evaluate_says_what_the_test_part_holds_no_reading_of(trained, tmp_path, silent):
    panel = panel_at("5min")
    frame = pd.DataFrame(panel.values, columns=list(SENSORS))
    frame.loc[len(frame) // 2 :, list(silent)] = np.nan  # nothing in the test part
    frame.insert(0, "timestamp", panel.timestamps.strftime("%Y-%m-%dT%H:%M:%SZ"))
    csv = tmp_path / "gappy.csv"
    frame.to_csv(csv, index=False)
    result = CliRunner().invoke(app, ["evaluate", str(trained), f"csv:{csv}", "--window", "6"])
    if len(silent) == len(SENSORS):
        assert result.exit_code == 1 and "holds no reading of the bundle's sensors" in result.output
        assert "unexpected" not in result.output
    else:
        assert result.exit_code == 0, result.output
        assert "note: 1 sensor(s) of the bundle have no reading in the test part" in result.output


@pytest.mark.parametrize("value", ["300", 0, -300, 1.5, 300.0, True, [300], 10**12])
def test_a_bad_step_is_refused_naming_bundle_and_field(tmp_path, value):
    bundle = tmp_path / "b"
    Persistence(window=3, horizon=2).fit(panel_at("5min", 40)).save(bundle)
    edit_config(bundle, step_s=value)
    with pytest.raises(BundleError) as info:
        read_bundle(bundle)
    message = str(info.value)
    assert str(bundle) in message and "field 'step_s'" in message and "\n" not in message


def test_the_service_refuses_a_bundle_of_another_step_than_its_tick(tmp_path, caplog):
    bundles = tmp_path / "bundles"
    five = register(bundles, Persistence(window=3, horizon=2).fit(panel_at("5min", 60)))
    promote(bundles, {"persistence": five.version}, replace=True)
    assert list(load_serving(bundles, tick=pd.Timedelta("5min")).models) == ["persistence"]
    with pytest.raises(BundleDirError) as info:
        load_serving(bundles, tick=pd.Timedelta("1min"))
    assert str(info.value) == (
        f"bundle {five.path} was trained on 5-minute steps, but the service's tick is "
        "1-minute: serve it with --tick 300s or serve a model trained on data at the tick"
    )

    # Hot reload: a new version at another step is refused and the old one keeps serving.
    caplog.set_level(logging.INFO, logger="roadcast")
    clock = iter(range(1, 10**6))
    watcher = ServingWatcher(
        bundles,
        {"persistence": five.version},
        every_s=1.0,
        clock=lambda: float(next(clock)),
        tick=pd.Timedelta("5min"),
    )
    try:
        hourly = register(bundles, Persistence(window=3, horizon=2).fit(panel_at("1h", 60)))
        promote(bundles, {"persistence": hourly.version}, replace=True)

        def refused() -> list[str]:
            assert watcher.poll() is None
            return [
                r.__dict__["fields"]["reason"]
                for r in caplog.records
                if r.getMessage() == "model_reload_refused"
            ]

        reasons = wait_until(refused, what="the hourly version to be refused")
    finally:
        watcher.close()
    assert reasons == [
        f"BundleDirError: bundle {hourly.path} was trained on 1-hour steps, but the "
        "service's tick is 5-minute: serve it with --tick 3600s or serve a model trained on "
        "data at the tick"
    ]
    assert watcher.running == {"persistence": five.version}


def test_the_forecast_flow_refuses_a_model_of_another_step(trained: Path) -> None:
    from flows.forecast_flow import forecast_all

    model = load_model(trained)
    assert set(forecast_all.fn({"persistence": model}, panel_at("5min", 12))) == {"persistence"}
    with pytest.raises(ValueError, match="trained on 5-minute steps; the store's ticks are 15-"):
        forecast_all.fn({"persistence": model}, panel_at("15min", 12))


def test_versions_of_different_steps_are_not_promoted_together(tmp_path) -> None:
    from models.forecasters.ar import AutoRegressive
    from pipeline.registry.versions import RegistryError

    bundles = tmp_path / "bundles"
    five = register(bundles, Persistence(window=3, horizon=2).fit(panel_at("5min", 60)))
    hourly = register(bundles, AutoRegressive(window=3, horizon=2).fit(panel_at("1h", 60)))
    promote(bundles, {"persistence": five.version}, replace=True)
    with pytest.raises(
        RegistryError, match=r"different time steps \(persistence@\w+: 5-minute, ar@\w+: 1-hour\)"
    ):
        promote(bundles, {"ar": hourly.version})
    assert promote(bundles, {"ar": hourly.version}, replace=True).models == {"ar": hourly.version}


def test_versions_of_different_tick_grids_are_not_promoted_together(tmp_path) -> None:
    from models.forecasters.ar import AutoRegressive
    from pipeline.registry.versions import RegistryError

    bundles = tmp_path / "bundles"
    on_the_hour = panel_at("1h", 60)
    half_past = SensorPanel.from_values(
        on_the_hour.values,
        on_the_hour.timestamps + pd.Timedelta("30min"),
        on_the_hour.sensor_ids,
        name="half-past",
    )
    hourly = register(bundles, Persistence(window=3, horizon=2).fit(on_the_hour))
    shifted = register(bundles, AutoRegressive(window=3, horizon=2).fit(half_past))
    promote(bundles, {"persistence": hourly.version}, replace=True)
    with pytest.raises(
        RegistryError, match=r"1970-01-01T00:00Z \(persistence@\w+: \+0s, ar@\w+: \+30min\)"
    ):
        promote(bundles, {"ar": shifted.version})
    assert promote(bundles, {"ar": shifted.version}, replace=True).models == {"ar": shifted.version}


def test_a_stop_during_promotion_still_calibrates_the_served_models_detector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run stopped right after it promoted ended there: the new version served with
    the alert detector calibrated on the version before it."""
    import signal

    import flows.train_models as tm

    promote = tm.promote_champion

    def promote_then_ctrl_c(*args: object, **kwargs: object) -> object:
        served = promote(*args, **kwargs)  # type: ignore[arg-type]
        signal.raise_signal(signal.SIGINT)  # held until the served set is complete
        return served

    monkeypatch.setattr(tm, "promote_champion", promote_then_ctrl_c)
    plan = TrainPlan(models=("persistence",), window=6, horizon=6, seeds=1, progress=False)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        train_models(panel_at("5min"), plan, out, report=False, log=lambda _: None)
    assert (out / "bundles" / "serving.json").is_file()
    assert (out / "bundles" / "detectors" / "interval" / "config.json").is_file()
