"""A model registry for the hot-reload and registry tests: two versions of AR that forecast
differently, and persistence, on a small simulated network."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.panel import SensorPanel
from pipeline.registry.serving import promote
from pipeline.registry.versions import ModelVersion, register
from tests.service_support import HORIZON

SENSORS = 6


@dataclass(frozen=True)
class Registry:
    bundles: Path
    panel: SensorPanel  # the whole simulation
    live: SensorPanel  # what is replayed
    a: ModelVersion  # ar, fitted on the first part
    b: ModelVersion  # ar, fitted on a later part: other coefficients, other forecasts


def make_registry(root: Path, live_steps: int) -> Registry:
    """AR fitted on steps 0-149 (``a``, served) and 150-299 (``b``, registered), persistence
    (served); the steps from 300 on are ``live``."""
    from models.forecasters.ar import AutoRegressive
    from models.forecasters.baselines import Persistence
    from pipeline.data.simulate import simulate_network
    from pipeline.model_dir import write_network

    panel = simulate_network(sensors=SENSORS, days=2, seed=5, faults_per_day=0.0, dropout=0.0)
    bundles = root / "bundles"
    first = AutoRegressive(window=3, horizon=HORIZON).fit(panel.slice(0, 150))
    second = AutoRegressive(window=3, horizon=HORIZON).fit(panel.slice(150, 300))
    persistence = Persistence(window=3, horizon=HORIZON).fit(panel.slice(0, 150))
    a = register(bundles, first, label="first", run_id="run-a")
    b = register(bundles, second, label="second", run_id="run-b")
    register(bundles, persistence, label="first", run_id="run-a")
    write_network(bundles, panel)
    promote(bundles, {"ar": a.version, "persistence": None}, replace=True)
    return Registry(bundles, panel, panel.slice(300, 300 + live_steps), a, b)
