"""The service's alert hook without a broker: which detectors run and how they are
calibrated, gaps and repeated ticks, the store's alert columns."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.anomaly.autoencoder import AutoencoderConfig, AutoencoderDetector
from models.forecasters.ar import AutoRegressive
from models.forecasters.baselines import Persistence
from models.panel import SensorPanel
from pipeline.alerts.build import build_alerting
from pipeline.alerts.config import AlertingConfig, AlertingError, choose_forecaster
from pipeline.alerts.saved import calibrate_interval, detectors_dir
from pipeline.data.simulate import simulate_network
from pipeline.service.store import Store
from pipeline.service.store_rows import AlertRow, Batch

FREQ = pd.Timedelta("5min")


@pytest.fixture(scope="module")
def panel() -> SensorPanel:
    return simulate_network(
        sensors=6, days=2, seed=6, incidents_per_day=8.0, faults_per_day=0.0, dropout=0.0
    )


@pytest.fixture(scope="module")
def fitted(panel, tmp_path_factory):
    """AR and persistence fitted on the first 360 steps (an incident starts at 399), an
    interval detector for AR calibrated on steps 300-359."""
    root = tmp_path_factory.mktemp("models")
    train, valid = panel.slice(0, 300), panel.slice(300, 360)
    models = {}
    for model in (AutoRegressive(window=6, horizon=3), Persistence(window=1, horizon=3)):
        model.fit(train, valid=valid)
        models[model.name] = model
    calibrate_interval(root, models["ar"], train, valid)
    return root, models


def _run(hook, panel: SensorPanel, model, steps, *, missing=()):
    """Feed ``steps`` of ``panel`` with ``model``'s forecasts; ``missing`` ticks are left
    out entirely (no tick at all). Returns the events as (step, status, sensor)."""
    out = []
    for t in steps:
        if t in missing:
            continue
        mean = model.predict(panel.slice(t - model.window + 1, t + 1)).mean
        for event in hook._step(panel.timestamps[t], panel.values[t], panel.mask[t], {"ar": mean}):
            out.append((t, event.message.status, event.message.sensor))
    return out


def test_config_parses_the_cli_and_names_the_fix():
    assert AlertingConfig.parse("auto").detectors == ("auto",)
    assert not AlertingConfig.parse("none").enabled
    assert AlertingConfig.parse("interval, autoencoder").detectors == ("interval", "autoencoder")
    with pytest.raises(AlertingError, match="choose from"):
        AlertingConfig.parse("nosuch")
    with pytest.raises(AlertingError, match="alone"):
        AlertingConfig.parse("auto,interval")
    assert choose_forecaster(["lstm", "persistence", "ar"]) == "ar"
    assert choose_forecaster(["lstm", "gru"]) == "gru"
    with pytest.raises(AlertingError, match="not loaded"):
        choose_forecaster(["ar"], "tgclstm")


def test_saved_calibration_is_used_else_the_stream_calibrates(fitted, panel, tmp_path):
    root, models = fitted
    saved = build_alerting(root, models, panel.sensor_ids, FREQ)
    assert (
        saved is not None
        and "validation residuals of ar" in saved.describe()["detectors"]["interval"]
    )
    online = build_alerting(tmp_path, models, panel.sensor_ids, FREQ)
    assert online is not None and "online" in online.describe()["detectors"]["interval"]
    # A saved detector of another forecaster is not used for the one asked for.
    other = build_alerting(
        root, models, panel.sensor_ids, FREQ, AlertingConfig(forecaster="persistence")
    )
    assert other is not None and other.slots[0].forecaster == "persistence"
    assert "online" in other.describe()["detectors"]["interval"]
    assert (
        build_alerting(root, models, panel.sensor_ids, FREQ, AlertingConfig.parse("none")) is None
    )
    with pytest.raises(AlertingError, match="no saved autoencoder"):
        build_alerting(root, models, panel.sensor_ids, FREQ, AlertingConfig.parse("autoencoder"))
    assert detectors_dir(root) == root / "detectors"


def test_a_saved_detector_of_another_time_step_is_refused(fitted, panel, tmp_path):
    """Detectors count in ticks (a window of 6 readings is 30 minutes of 5-minute data):
    one fitted on another step than the service's tick is refused, naming both."""
    root, models = fitted
    one_minute = pd.Timedelta("1min")
    with pytest.raises(AlertingError, match=r"fitted on 5-minute steps.*tick is 1-minute"):
        build_alerting(root, models, panel.sensor_ids, one_minute)
    autoencoder = AutoencoderDetector(AutoencoderConfig(window=4, epochs=1, seed=0))
    autoencoder.fit(panel.slice(0, 300)).save(detectors_dir(tmp_path) / "autoencoder")
    only = AlertingConfig.parse("autoencoder")
    assert build_alerting(tmp_path, models, panel.sensor_ids, FREQ, only) is not None
    with pytest.raises(AlertingError, match=r"autoencoder was fitted on 5-minute steps"):
        build_alerting(tmp_path, models, panel.sensor_ids, one_minute, only)


def test_the_service_sensor_order_may_differ_from_the_detectors(fitted, panel):
    root, models = fitted
    order = tuple(reversed(panel.sensor_ids))
    hook = build_alerting(root, models, order, FREQ)
    same = build_alerting(root, models, panel.sensor_ids, FREQ)
    assert hook is not None and same is not None
    flipped = panel.select(order)
    steps = range(360, 420)
    events = []
    for t in steps:
        mean = models["ar"].predict(panel.slice(t - 5, t + 1)).mean
        for e in hook._step(
            flipped.timestamps[t], flipped.values[t], flipped.mask[t], {"ar": mean}
        ):
            events.append((t, e.message.status, e.message.sensor))
    assert events and sorted(events) == sorted(_run(same, panel, models["ar"], steps))


def test_a_missing_tick_is_the_same_as_a_tick_with_every_reading_missing(fitted, panel):
    root, models = fitted
    steps = range(360, 430)
    gap = {371, 372}
    dropped = _run(
        build_alerting(root, models, panel.sensor_ids, FREQ),
        panel,
        models["ar"],
        steps,
        missing=gap,
    )
    masked_values = panel.values.copy()
    masked_mask = panel.mask.copy()
    for t in gap:
        masked_values[t] = np.nan
        masked_mask[t] = False
    masked = SensorPanel(masked_values, masked_mask, panel.timestamps, panel.sensor_ids)
    hook = build_alerting(root, models, panel.sensor_ids, FREQ)
    assert hook is not None
    expected = []
    for t in steps:
        mean = models["ar"].predict(panel.slice(t - 5, t + 1)).mean
        issued = {"ar": None if t in gap else mean}  # no tick: no forecast either
        for e in hook._step(masked.timestamps[t], masked.values[t], masked.mask[t], issued):
            expected.append((t, e.message.status, e.message.sensor))
    assert dropped and dropped == expected


def test_a_tick_seen_again_is_a_no_op(fitted, panel):
    root, models = fitted
    hook = build_alerting(root, models, panel.sensor_ids, FREQ)
    assert hook is not None
    events = _run(hook, panel, models["ar"], range(360, 440))
    assert events
    again = _run(hook, panel, models["ar"], range(400, 440))
    assert again == []


def _alert_row(alert_id: str, status: str, group: str | None) -> AlertRow:
    return AlertRow(
        alert_id, status, "a:interval", "warning", "a", 1, "interval", 0.99, "{}", group
    )


def test_store_keeps_the_group_and_lists_open_alerts(tmp_path: Path):
    with Store(tmp_path / "s.sqlite", durable=False) as store:
        store.write(
            Batch(
                alerts=[
                    _alert_row("a@1", "firing", "incident:a@1"),
                    _alert_row("a@1", "resolved", "incident:a@1"),
                    _alert_row("a@2", "firing", "incident:a@2"),
                ]
            )
        )
        assert [r.alert_id for r in store.open_alerts()] == ["a@2"]
        assert {r.group_key for r in store.alerts()} == {"incident:a@1", "incident:a@2"}


def test_a_store_from_before_the_group_column_gains_it(tmp_path: Path):
    path = tmp_path / "old.sqlite"
    with Store(path, durable=False):
        pass
    db = sqlite3.connect(path)  # the alerts table as it was written before the column
    db.execute("DROP TABLE alerts")
    db.execute(
        "CREATE TABLE alerts(alert_id TEXT NOT NULL, status TEXT NOT NULL, dedup_key TEXT "
        "NOT NULL, severity TEXT NOT NULL, sensor TEXT NOT NULL, ts INTEGER NOT NULL, "
        "detector TEXT NOT NULL, score REAL NOT NULL, payload TEXT NOT NULL, "
        "PRIMARY KEY(alert_id, status))"
    )
    db.execute("INSERT INTO alerts VALUES('x@1','firing','x:i','warning','x',1,'i',1.0,'{}')")
    db.commit()
    db.close()
    with Store(path, readonly=True) as old:  # a reader does not change the file
        assert old.alerts()[0].group_key is None
    with Store(path, durable=False) as store:
        store.write(Batch(alerts=[_alert_row("a@1", "firing", "incident:a@1")]))
        groups = {r.alert_id: r.group_key for r in store.alerts()}
    assert groups == {"x@1": None, "a@1": "incident:a@1"}


def test_serve_rejects_an_unknown_detector_before_connecting(tmp_path: Path):
    from typer.testing import CliRunner

    from flows.cli import app

    result = CliRunner().invoke(
        app, ["serve", "--models", str(tmp_path), "--detectors", "nosuch", "--bootstrap", "x:1"]
    )
    assert result.exit_code == 2
    assert "choose from interval, autoencoder" in result.output


def test_the_rules_keep_their_number_of_ticks_at_longer_ticks(fitted, panel, tmp_path):
    """At hourly ticks a firing alert was re-published at every tick (a repeat of 1 h) and
    resolved after one clear tick."""
    from pipeline.alerts.lifecycle import AlertRules

    hourly = AlertRules().at_tick(pd.Timedelta("1h"))
    assert (hourly.repeat_interval, hourly.resolve_after, hourly.group_window) == (
        pd.Timedelta("12h"), pd.Timedelta("2h"), pd.Timedelta("6h"),
    )  # fmt: skip
    assert AlertRules().at_tick(FREQ) == AlertRules() == AlertRules().at_tick(pd.Timedelta("1min"))
    _, models = fitted
    hook = build_alerting(tmp_path, models, panel.sensor_ids, pd.Timedelta("15min"))
    assert hook is not None and hook.config.rules.repeat_interval == pd.Timedelta("3h")
    assert hook.manager.rules.resolve_after == pd.Timedelta("30min")


def test_forecasts_issued_before_the_window_filled_are_not_judged(fitted, panel, tmp_path):
    """A fresh service fired on its second tick, judging a forecast made from one reading."""
    root, models = fitted
    window = models["ar"].window
    hook = build_alerting(root, models, panel.sensor_ids, FREQ)
    assert hook is not None and hook.slots[0].warmup == window
    wild = np.full((3, len(panel.sensor_ids)), 1e4, np.float32)  # far off every reading
    fired = []
    for t in range(360, 360 + window + 2):
        issued = {"ar": wild if t < 360 + window - 1 else None}
        fired += hook._step(panel.timestamps[t], panel.values[t], panel.mask[t], issued)
    assert fired == []
    warm = build_alerting(root, models, panel.sensor_ids, FREQ)
    assert warm is not None
    for t in range(360, 360 + window):  # the window fills, then a wild forecast
        warm._step(panel.timestamps[t], panel.values[t], panel.mask[t], {"ar": None})
    t = 360 + window
    warm._step(panel.timestamps[t], panel.values[t], panel.mask[t], {"ar": wild})
    judged = warm._step(panel.timestamps[t + 1], panel.values[t + 1], panel.mask[t + 1], {})
    assert {e.message.status for e in judged} == {"firing"}


def test_an_outage_longer_than_the_window_starts_the_warm_up_again(fitted, panel):
    """After a gap the forecaster's window holds a reading or two again."""
    root, models = fitted
    window = models["ar"].window
    hook = build_alerting(root, models, panel.sensor_ids, FREQ)
    assert hook is not None
    for t in range(360, 360 + window + 2):
        hook._step(panel.timestamps[t], panel.values[t], panel.mask[t], {"ar": None})
    wild = np.full((3, len(panel.sensor_ids)), 1e4, np.float32)
    back = 360 + 3 * window  # more than a window of ticks missing
    fired = hook._step(panel.timestamps[back], panel.values[back], panel.mask[back], {"ar": wild})
    t = back + 1
    fired += hook._step(panel.timestamps[t], panel.values[t], panel.mask[t], {})
    assert fired == []
