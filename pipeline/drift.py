"""Drift: is a served model forecasting worse on the stream than it should?

For every served model and every reported horizon ``h`` (steps pooled 1..h, as in
training), the live MAE over the last ``window`` of closed ticks is compared with

* the version's **validation MAE** (``metrics.valid`` in its bundle's ``config.json``):
  drift when ``live / validation > ratio``;
* the version's own **rolling baseline**, its live MAE over the ``baseline`` before the
  window: drift when ``live / baseline > baseline_ratio``. A level that was fine for
  days and is not any more drifted, even when the validation score was never reached.

A comparison needs at least ``min_count`` scored values on each side; only forecasts
issued by the version now serving count (the store's ``model_versions`` says since
when it serves). The live error sums are those the service writes as each target tick
closes (``accuracy`` table, :meth:`pipeline.service.store.Store.accuracy_sums`).
:func:`judge` is the rule on numbers (shared with ``benchmarks/drift.py``, which chose
the defaults on validation data); :func:`assess` applies it to a store.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from models.metrics import report_horizons
from pipeline.service.store import Store
from pipeline.settings import Settings

# Counts and spans of ticks are bounded (about 95 years of 5-minute ticks): a window's start
# in milliseconds must stay within SQLite's 64-bit integers.
MAX_TICKS = 10**7


def _default(name: str) -> Any:
    """The default of ``ROADCAST_DRIFT_<NAME>``."""
    return Settings.model_fields[f"drift_{name}"].default


@dataclass(frozen=True)
class DriftConfig:
    """The drift rule's settings (``ROADCAST_DRIFT_*``, whose defaults these are; chosen in
    docs/decisions.md)."""

    ratio: float = _default("ratio")
    baseline_ratio: float = _default("baseline_ratio")
    min_count: int = _default("min_count")
    window_ticks: int = _default("window_ticks")
    baseline_ticks: int = _default("baseline_ticks")

    def __post_init__(self) -> None:
        for name in ("ratio", "baseline_ratio"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 1):
                raise ValueError(
                    f"drift {name} must be a finite number above 1 "
                    f"(ROADCAST_DRIFT_{name.upper()}), got {value}"
                )
        for name in ("min_count", "window_ticks", "baseline_ticks"):
            value = getattr(self, name)
            if not 1 <= value <= MAX_TICKS:
                raise ValueError(
                    f"drift {name} must be from 1 to {MAX_TICKS:,} "
                    f"(ROADCAST_DRIFT_{name.upper()}), got {value}"
                )


@dataclass(frozen=True)
class Verdict:
    """One model at one horizon: the live MAE against its references."""

    model: str
    version: str
    horizon: int
    live_mae: float | None
    count: int
    valid_mae: float | None
    baseline_mae: float | None
    baseline_count: int
    reasons: tuple[str, ...] = field(default=())

    @property
    def drifted(self) -> bool:
        return bool(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["reasons"] = list(self.reasons)
        return out


def judge(
    live_mae: float | None,
    count: int,
    valid_mae: float | None,
    baseline_mae: float | None,
    baseline_count: int,
    config: DriftConfig,
) -> tuple[str, ...]:
    """Why the live MAE is drift (empty: it is not, or there is too little to tell)."""
    if live_mae is None or count < config.min_count or not math.isfinite(live_mae):
        return ()
    reasons = []
    if valid_mae is not None and valid_mae > 0 and live_mae / valid_mae > config.ratio:
        reasons.append(
            f"live MAE {live_mae:.4g} is {live_mae / valid_mae:.2f}x the validation MAE "
            f"{valid_mae:.4g} (threshold {config.ratio:g}x)"
        )
    base = baseline_mae if baseline_count >= config.min_count else None
    if base is not None and base > 0 and live_mae / base > config.baseline_ratio:
        reasons.append(
            f"live MAE {live_mae:.4g} is {live_mae / base:.2f}x its rolling baseline "
            f"{base:.4g} (threshold {config.baseline_ratio:g}x)"
        )
    return tuple(reasons)


@dataclass(frozen=True)
class Served:
    """A served model version: its horizon, since when it forecasts (ms) and its
    validation MAE per horizon."""

    model: str
    version: str
    horizon: int
    since_ms: int
    valid_mae: Mapping[int, float]


def _pooled(sums: Any, horizon: int) -> tuple[float | None, int]:
    """MAE pooled over steps 1..horizon, and the count, from per-step error sums."""
    part = sums[sums.step <= horizon]
    count = int(part.n.sum())
    return (float(part.sum_abs.sum()) / count if count else None), count


def assess(
    store: Store, served: Sequence[Served], config: DriftConfig, *, tick_ms: int
) -> list[Verdict]:
    """Every served model and reported horizon judged on the store's latest ticks."""
    last = store.last_ticks(1)
    if not last:
        return []
    last_ms = int(last[-1].ts_ms)
    window_start = last_ms - (config.window_ticks - 1) * tick_ms
    verdicts = []
    for model in served:
        # Only targets of forecasts the serving version issued (issued >= since_ms).
        own_from = model.since_ms + model.horizon * tick_ms
        recent = store.accuracy_sums(model.model, max(window_start, own_from), last_ms)
        base_first = max(window_start - config.baseline_ticks * tick_ms, own_from)
        baseline = store.accuracy_sums(model.model, base_first, window_start - tick_ms)
        for h in report_horizons(model.horizon):
            live, count = _pooled(recent, h)
            base, base_count = _pooled(baseline, h)
            valid = model.valid_mae.get(h)
            reasons = judge(live, count, valid, base, base_count, config)
            verdicts.append(
                Verdict(
                    model.model, model.version, h, live, count, valid, base, base_count, reasons
                )
            )
    return verdicts


def served_models(
    store: Store, versions: Mapping[str, Any], *, tick_ms: int
) -> tuple[list[Served], list[str]]:
    """:class:`Served` of each model of ``versions`` (``{model: ModelVersion}``), from the
    tick the store says that version last started forecasting at (0 for a store that
    records no version of that model); and notes naming the versions left out because the
    store records other versions of their model but not them (not serving yet: the
    accuracy it holds is another version's).

    Raises
    ------
    StoreReadError, ValueError
        A version of another sensor network or time step than the store's.
    """
    from models.bundle import step_text
    from pipeline.registry.versions import validation_pooled
    from pipeline.service.store_reads import require_sensors

    rows = store.model_versions()
    since = {(row.model, row.version): row.since_ms for row in rows}
    recorded = {row.model for row in rows}
    out, notes = [], []
    for name, version in versions.items():
        config = json.loads((Path(version.path) / "config.json").read_text())
        require_sensors(store, config.get("sensor_ids", ()), f"{name}@{version.version}")
        step_s = config.get("step_s")
        if step_s is not None and step_s * 1000 != tick_ms:
            raise ValueError(
                f"{name}@{version.version} was trained on {step_text(step_s)} steps; the "
                f"store's ticks are {step_text(tick_ms / 1000)}: judge the models the store's "
                "service serves (models_dir / ROADCAST_MODEL_DIR)"
            )
        if (name, version.version) not in since and name in recorded:
            notes.append(
                f"{name}@{version.version} has not forecast into this store yet (it records "
                "other versions of it): not judged"
            )
            continue
        valid = {h: s["mae"] for h, s in validation_pooled(version.path).items() if "mae" in s}
        start = since.get((name, version.version), 0)
        out.append(Served(name, version.version, int(config["horizon"]), start, valid))
    return out, notes
