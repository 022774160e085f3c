"""The serving watcher of ``roadcast serve`` (pipeline/registry/watch.py) when the model
folder it serves from, or its ``serving.json``, disappears and comes back: one warning,
one line when it is back, the loaded models serving all along, and hot reload as before."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.forecasters.baselines import Persistence
from models.panel import SensorPanel
from pipeline.registry.serving import promote
from pipeline.registry.versions import ModelVersion, register
from pipeline.registry.watch import ServingWatcher
from tests.waiting import wait_until


def _persistence(level: float) -> Persistence:
    stamps = pd.date_range("2024-01-01", periods=20, freq="5min", tz="UTC")
    panel = SensorPanel.from_values(np.full((20, 2), level, np.float32), stamps, ["a", "b"])
    return Persistence(window=3, horizon=2).fit(panel)


def _serve(bundles: Path, level: float) -> ModelVersion:
    version = register(bundles, _persistence(level))
    promote(bundles, {"persistence": version.version}, replace=True)
    return version


def _watcher(root: Path, running: ModelVersion) -> ServingWatcher:
    """A watcher that checks at every poll (its clock moves a second per call)."""
    ticks = iter(range(1, 10**6))
    return ServingWatcher(
        root, {"persistence": running.version}, every_s=1.0, clock=lambda: float(next(ticks))
    )


def _events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.getMessage() in ("model_dir_missing", "model_dir_back", "model_reload_started")
    ]


def _fields(caplog: pytest.LogCaptureFixture, event: str) -> dict:
    (record,) = [r for r in caplog.records if r.getMessage() == event]
    return record.__dict__["fields"]


# Each takes the model folder away (or its serving.json) and returns what puts it back.


def _move_folder(root: Path) -> Callable[[], object]:
    gone = root.with_name("models.gone")
    root.rename(gone)
    return lambda: gone.rename(root)


def _delete_folder(root: Path) -> Callable[[], object]:
    kept = root.with_name("models.copy")
    shutil.copytree(root, kept)
    shutil.rmtree(root)
    return lambda: shutil.copytree(kept, root)


def _delete_serving_file(root: Path) -> Callable[[], object]:
    serving = root / "bundles" / "serving.json"
    text = serving.read_text()
    serving.unlink()
    return lambda: serving.write_text(text)


@pytest.mark.parametrize(
    ("remove", "missing"),
    [
        (_move_folder, "models"),
        (_delete_folder, "models"),
        (_delete_serving_file, "models/bundles/serving.json"),
    ],
    ids=["folder moved", "folder deleted", "serving.json deleted"],
)
def test_a_missing_model_folder_is_said_once_and_its_return_once(
    tmp_path, caplog, remove, missing
) -> None:
    caplog.set_level(logging.INFO, logger="roadcast")
    root = tmp_path / "models"
    first = _serve(root / "bundles", 1.0)
    watcher = _watcher(root, first)
    try:
        assert watcher.poll() is None
        assert _events(caplog) == []
        restore = remove(root)
        for _ in range(5):
            assert watcher.poll() is None  # the loaded models keep serving
        assert _events(caplog) == ["model_dir_missing"]
        fields = _fields(caplog, "model_dir_missing")
        assert fields["path"] == str(tmp_path / missing)
        assert fields["running"] == {"persistence": first.version}
        assert "loaded models keep serving" in fields["hint"]
        warning = [r for r in caplog.records if r.getMessage() == "model_dir_missing"]
        assert warning[0].levelno == logging.WARNING

        restore()
        for _ in range(5):
            assert watcher.poll() is None  # the same set: nothing to load
        assert _events(caplog) == ["model_dir_missing", "model_dir_back"]
        assert _fields(caplog, "model_dir_back") == {"path": str(tmp_path / missing)}

        second = _serve(root / "bundles", 2.0)  # hot reload as before
        loaded = wait_until(watcher.poll, what="the promoted version to load")
        assert loaded.ids() == {"persistence": second.version}
    finally:
        watcher.close()
    assert _events(caplog) == ["model_dir_missing", "model_dir_back", "model_reload_started"]


def test_a_folder_of_unversioned_bundles_is_not_missing_its_serving_file(tmp_path, caplog):
    """A folder without ``serving.json`` (bundles saved by hand) never had one to miss."""
    caplog.set_level(logging.INFO, logger="roadcast")
    root = tmp_path / "models"
    _persistence(1.0).save(root / "persistence")
    watcher = ServingWatcher(root, {}, every_s=0.0)
    try:
        for _ in range(3):
            assert watcher.poll() is None
        assert _events(caplog) == []
        shutil.rmtree(root)
        for _ in range(3):
            assert watcher.poll() is None
    finally:
        watcher.close()
    assert _events(caplog) == ["model_dir_missing"]
    assert _fields(caplog, "model_dir_missing")["path"] == str(root)
