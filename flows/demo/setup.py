"""The demo's inputs: its data, its bundles (reused or trained quickly) and its detector."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.panel import SensorPanel, chronological_split

if TYPE_CHECKING:
    from models.forecasters.base import Forecaster
    from pipeline.model_dir import Network

Log = Callable[[str], None]


def choose_panel(
    data: str | SensorPanel | None,
    *,
    data_dir: Path | None = None,
    reading: Mapping[str, Any] | None = None,
) -> SensorPanel:
    """The demo's data: ``data`` if given, else ``los-loop`` when it loads, else ``simulated``.

    Any failure to load ``los-loop`` (files absent, unreadable) falls back to the
    simulator, which always works offline; an explicit ``data`` spec never falls back.
    ``reading``: :func:`pipeline.data.datasets.load_dataset`'s options for a file's data
    (``adjacency``, ``index_col``, ``no_index``, ``timezone``); they need ``data``.
    """
    if isinstance(data, SensorPanel):
        return data
    from pipeline.data.datasets import load_dataset

    if data is not None and not data.strip():
        raise ValueError(
            "--data is empty: name a data set (los-loop, simulated, csv:PATH) or leave the "
            "option out for the default"
        )
    given = {k: v for k, v in (reading or {}).items() if v}
    if given and not data:
        options = ", ".join(f"--{k.replace('_', '-')}" for k in given)
        verb = "needs" if len(given) == 1 else "need"
        raise ValueError(f"{options} {verb} --data (a file's data set, such as csv:PATH)")
    if data:
        return load_dataset(data, data_dir=data_dir, **given)
    try:
        return load_dataset("los-loop", data_dir=data_dir)
    except Exception:  # any failure means: not available here, so simulate
        return load_dataset("simulated", data_dir=data_dir)


def demo_models(panel: SensorPanel) -> tuple[str, ...]:
    """The models the demo trains: the baselines every comparison needs, AR(p), LSTM,
    and TGC-LSTM when it is registered and the data has a road graph."""
    from models.forecasters.registry import MODELS

    names = ["persistence", "ar", "lstm"]
    if "tgclstm" in MODELS and panel.graph is not None:
        names.append("tgclstm")
    return tuple(n for n in names if n in MODELS)


def ensure_bundles(
    panel: SensorPanel,
    out: Path,
    *,
    reuse: Path | None,
    models: tuple[str, ...],
    epochs: int,
    device: str,
    progress: bool,
    log: Log,
) -> tuple[Path, list[str]]:
    """A bundle directory for ``panel``: ``reuse`` (default ``OUT/bundles``) when its
    bundles cover the panel's sensors, else quick ones trained into ``OUT/bundles``
    (one seed, ``epochs`` epochs). Returns the directory and the model names."""
    from flows.threads import limit_threads
    from flows.train_models import check_same_network, train_models
    from models.forecasters.comparison import TrainPlan
    from pipeline.model_dir import BundleDirError, load_bundles, read_network

    target = out / "bundles"
    candidate = reuse or target
    try:
        loaded = load_bundles(candidate)
        why = _unfit(loaded, panel, None if reuse else read_network(candidate))
        if why is None:
            log(f"models: reusing {sorted(loaded)} from {candidate}")
            return candidate, sorted(loaded)
        log(f"models: the bundles in {candidate} are {why}; training new ones")
    except (BundleDirError, ValueError) as exc:
        log(f"models: none usable in {candidate} ({str(exc).split(';')[0]}); training")
    check_same_network(out, panel)  # before minutes of training, as `roadcast train` does
    if "tgclstm" not in models and panel.graph is None:
        log(f"models: no TGC-LSTM: {panel.name} has no road graph (give one with --adjacency)")
    plan = TrainPlan(models=models, seeds=1, epochs=epochs, device=device, progress=progress)
    started = time.monotonic()
    # One thread: the models are small, and on busy shared cores a second thread
    # spin-waits (docs/decisions.md, "Flows: CPU threads and task order").
    with limit_threads(1):
        try:
            train_models(panel, plan, out, report=False, log=log)
        except ValueError as exc:  # its advice names `roadcast train`'s options
            raise ValueError(
                f"the demo cannot train its models on {panel.name}: {str(exc).split('; ')[0]}; "
                "give it more data (more days or rows), or train with `roadcast train` and "
                "pass the bundles with --models"
            ) from None
    log(f"models: trained {list(models)} in {time.monotonic() - started:.0f} s -> {target}")
    return target, sorted(load_bundles(target))


def _unfit(
    models: dict[str, Forecaster], panel: SensorPanel, network: Network | None
) -> str | None:
    """Why bundles do not fit ``panel`` (other sensors, another time step, or, for the
    demo's own bundles, another data set or data that now has a road graph),
    None when they do."""
    from models.bundle import other_step, step_text

    if any(set(m.sensor_ids) != set(panel.sensor_ids) for m in models.values()):
        return "for other sensors"
    for model in models.values():
        if (step_s := other_step(model, panel.freq)) is not None:
            data_step = step_text(panel.freq.total_seconds())
            return f"trained on {step_text(step_s)} steps, the data has {data_step} steps"
    if network is not None and network.dataset and network.dataset != panel.name:
        return f"trained on {network.dataset!r}, the data is {panel.name!r}"
    if network is not None and network.graph is False and panel.graph is not None:
        return "trained without a road graph, the data has one"
    return None


def ensure_detector(panel: SensorPanel, model_dir: Path, *, log: Log) -> str:
    """The interval detector the service will use, calibrated on the validation part of
    ``panel`` (the split ``roadcast train`` validates on) unless one for the same
    forecaster and sensors is saved already; and the road graph's neighbours for
    grouping. Returns the forecaster's name."""
    from pipeline.alerts.config import choose_forecaster
    from pipeline.alerts.saved import calibrate_served, detectors_dir, saved_interval_forecaster
    from pipeline.model_dir import load_bundles

    models = load_bundles(model_dir)
    name = choose_forecaster(list(models))
    target = detectors_dir(model_dir)
    saved = target / "interval" / "config.json"
    if saved_interval_forecaster(model_dir) == name:
        sensors = json.loads(saved.read_text()).get("sensor_ids")
        if sensors == list(models[name].sensor_ids):
            log(f"alerts: reusing the interval detector on {name} saved in {target}")
            return name
    split = chronological_split(panel)
    started = time.monotonic()
    name, path = calibrate_served(model_dir, panel, split.train, split.valid)
    log(
        f"alerts: interval detector calibrated on {name}'s validation residuals in "
        f"{time.monotonic() - started:.1f} s -> {path}"
    )
    return name
