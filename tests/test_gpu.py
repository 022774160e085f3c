"""The CUDA paths on a real GPU: neural models trained on CUDA with mixed precision, their
bundles loaded on a machine without CUDA, and the training engine's pinned-memory path
for panels too large to keep on the device.

Every test skips, with the reason, where ``torch.cuda.is_available()`` is false: on a
machine without a GPU and in CI (which has none). Run them with ``pytest -m gpu``.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import models.nn.loop as loop
import models.nn.training as engine
from models.forecasters.base import Forecaster, window_origins
from models.forecasters.factory import build_model
from models.forecasters.registry import load_model
from models.nn.inputs import PanelTensors
from models.panel import SensorPanel, chronological_split
from pipeline.data.simulate import simulate_network

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="needs a CUDA device: torch.cuda.is_available() is false",
    ),
]

WINDOW, HORIZON, EPOCHS = 6, 3, 3
# The same weights on CUDA and on the CPU: float32 forecasts (mph) agree up to the
# kernels' rounding; a wrong weight or input would be off by whole mph.
RTOL, ATOL = 1e-3, 1e-2


@pytest.fixture(scope="module")
def panel() -> SensorPanel:
    """6 sensors of a simulated corridor (with its road graph), 2 days of 5-minute steps."""
    return simulate_network(sensors=6, days=2, seed=3, faults_per_day=0.0, dropout=0.0)


@pytest.fixture
def autocasts(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, torch.dtype | None, bool]]:
    """``(device_type, dtype, enabled)`` of every ``torch.autocast`` entered from now on."""
    seen: list[tuple[str, torch.dtype | None, bool]] = []

    class Recorded(torch.autocast):
        def __init__(
            self,
            device_type: str,
            dtype: torch.dtype | None = None,
            enabled: bool = True,
            cache_enabled: bool | None = None,
        ) -> None:
            seen.append((device_type, dtype, enabled))
            super().__init__(device_type, dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)

    monkeypatch.setattr(torch, "autocast", Recorded)
    return seen


@pytest.fixture
def pins(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts the panels the training engine pins in host memory (``PanelTensors.pin``)."""
    calls: list[int] = []
    real = PanelTensors.pin

    def pin(self: PanelTensors) -> PanelTensors:
        calls.append(self.nbytes)
        return real(self)

    monkeypatch.setattr(PanelTensors, "pin", pin)
    yield calls


def fit_on_cuda(
    name: str,
    panel: SensorPanel,
    *,
    epochs: int = EPOCHS,
    train: dict[str, Any] | None = None,
    **overrides: Any,
) -> Forecaster:
    """``name`` trained on CUDA with mixed precision (seed 0, a few epochs; ``train``
    adds training settings)."""
    split = chronological_split(panel)
    model = build_model(
        name,
        window=WINDOW,
        horizon=HORIZON,
        seed=0,
        device="cuda",
        epochs=epochs,
        progress=False,
        train={"amp": True, **(train or {})},
        **overrides,
    )
    return model.fit(split.train, valid=split.valid)


def forecasts(model: Forecaster, panel: SensorPanel) -> np.ndarray:
    """Mean forecasts ``[origin, horizon, node]`` from every window of ``panel``."""
    origins = window_origins(panel.n_time, model.window, 0, targets=False)
    return model.predict_batch(panel, origins).mean


def parameter_devices(model: Forecaster) -> set[str]:
    module = getattr(model, "module", None) or getattr(model, "net", None)
    assert isinstance(module, torch.nn.Module)
    return {p.device.type for p in module.parameters()}


@pytest.mark.parametrize("name", ["lstm", "tgclstm"])
def test_trained_on_cuda_with_amp_then_loaded_on_cpu_forecasts_the_same(
    name: str,
    panel: SensorPanel,
    autocasts: list[tuple[str, torch.dtype | None, bool]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    model = fit_on_cuda(name, panel)
    assert any(
        device == "cuda" and enabled and dtype in (torch.bfloat16, torch.float16)
        for device, dtype, enabled in autocasts
    ), f"no mixed-precision autocast on CUDA during the fit: {autocasts}"
    assert parameter_devices(model) == {"cuda"}
    on_cuda = forecasts(model, panel)
    assert np.isfinite(on_cuda).all()

    model.save(tmp_path / "bundle")
    config = json.loads((tmp_path / "bundle" / "config.json").read_text())
    assert config["train"]["device"] == "cuda" and config["train"]["amp"] is True
    assert config["history"]["device"].startswith("cuda")

    # A machine without CUDA: loading puts the weights on the CPU.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loaded = load_model(tmp_path / "bundle")
    assert parameter_devices(loaded) == {"cpu"}
    np.testing.assert_allclose(forecasts(loaded, panel), on_cuda, rtol=RTOL, atol=ATOL)


def test_pinned_memory_path_trains_like_the_device_resident_path(
    panel: SensorPanel, pins: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A panel above the device-resident threshold stays in pinned host memory and its
    batches are copied to the GPU; the threshold is set to 0 instead of allocating GBs."""
    resident = fit_on_cuda("lstm", panel)
    assert pins == []
    monkeypatch.setattr(engine, "_DEVICE_RESIDENT_BYTES", 0)
    pinned = fit_on_cuda("lstm", panel)
    assert len(pins) == 2  # the training and the validation part

    assert resident.history is not None and pinned.history is not None
    assert pinned.history.device.startswith("cuda")
    np.testing.assert_allclose(pinned.history.train_loss, resident.history.train_loss, rtol=1e-3)
    np.testing.assert_allclose(
        forecasts(pinned, panel), forecasts(resident, panel), rtol=RTOL, atol=ATOL
    )


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("lstm", {}),
        ("tgclstm", {}),
        ("tgclstm", {"subgraph_nodes": 3, "graph_cell": "shared"}),  # by subgraph, 2+ parts
    ],
    ids=["lstm", "tgclstm", "tgclstm-subgraphs"],
)
def test_training_epochs_wait_for_the_gpu_once_not_per_batch(
    name: str, overrides: dict[str, Any], panel: SensorPanel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CUDA's sync debug mode flags every operation that makes the host wait for the
    GPU. Inside the training epochs (about 50 batches each) only the epoch's loss is
    read back; moving the model and data to the GPU and validating happen outside."""
    epochs, batch_size = 2, 8
    split = chronological_split(panel)
    batches = -(-len(window_origins(split.train.n_time, WINDOW, HORIZON)) // batch_size)
    real_epoch = loop._train_epoch

    def watched_epoch(*args: Any, **kwargs: Any) -> float:
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            return real_epoch(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    monkeypatch.setattr(loop, "_train_epoch", watched_epoch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train = {"batch_size": batch_size, "patience": epochs}
        model = fit_on_cuda(name, panel, epochs=epochs, train=train, **overrides)
    syncs = Counter(
        f"{Path(w.filename).name}:{w.lineno}" for w in caught if "synchroniz" in str(w.message)
    )
    assert model.history is not None
    loops = len(model.history.train_loss)  # TGC-LSTM trains in two stages of ``epochs``
    assert batches >= 40 and loops >= epochs
    assert syncs.total() <= 2 * loops, f"{loops} epochs of {batches} batches: {dict(syncs)}"
