"""The fits of one network of :mod:`benchmarks.generalization`: model variants, a fit
cache, and TGC-LSTM trained on top of the LSTM fit it shares.

A *variant* is a model with settings changed from its defaults (``lstm:dropout=0.3``,
``tgclstm:graph_cell=dense``); the bare name is the default. The hybrid TGC-LSTM's first
stage is the LSTM forecaster's network with the same settings and seed, trained the same
way (``models.forecasters.tgclstm``), so the suite trains that LSTM once and gives it to
every TGC-LSTM variant built on it; a TGC-LSTM's fit time includes it.

With a cache folder, every neural fit is saved there (its bundle and fit time) under a
key of the data, the split and the model's full settings, and reused by a later run with
the same key: a run that was interrupted resumes, and a rerun after a default changed
refits only what the change touched.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.forecasters.base import Forecaster
from models.forecasters.comparison import FitRun, Log, TrainPlan
from models.forecasters.evaluation import validation_backtest
from models.forecasters.factory import build_model, is_stochastic
from models.forecasters.registry import load_model
from models.nn.training import TrainConfig, TrainHistory
from models.panel import Split

# Part of every cache key: raise it when a change of code makes cached fits stale.
CACHE_VERSION = 2


def _value(raw: str) -> Any:
    for convert in (int, float):
        try:
            return convert(raw)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(raw.lower(), raw)


@dataclass(frozen=True)
class Variant:
    """A model and the settings changed from its defaults (none: the default)."""

    model: str
    overrides: tuple[tuple[str, Any], ...] = ()

    @property
    def name(self) -> str:
        changed = ",".join(f"{k}={v}" for k, v in self.overrides)
        return f"{self.model}:{changed}" if changed else self.model

    @property
    def is_default(self) -> bool:
        return not self.overrides

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.overrides)


def parse_variant(text: str) -> Variant:
    """``"lstm"`` or ``"lstm:dropout=0.3,hidden=64"`` -> a :class:`Variant`."""
    model, _, rest = text.strip().partition(":")
    overrides = []
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"variant {text!r}: {item!r} is not key=value")
        overrides.append((key.strip(), _value(raw.strip())))
    return Variant(model.strip().lower(), tuple(sorted(overrides)))


def _train_config(model: Forecaster) -> TrainConfig | None:
    train = getattr(model, "train", None)
    if isinstance(train, TrainConfig):
        return train
    config = getattr(model, "config", None)
    return getattr(config, "train", None)


@dataclass
class SuiteFitter:
    """Fits the variants of one network, sharing first stages and using the cache."""

    network: str
    spec: str
    split: Split
    plan: TrainPlan
    cache: Path | None = None
    log: Log = print
    _lstms: dict[str, FitRun] = field(default_factory=dict)

    def runs(self, variant: Variant) -> list[FitRun]:
        """One fitted run per seed (one for a deterministic model), scored on validation."""
        seeds = range(self.plan.seeds) if is_stochastic(variant.model) else range(1)
        return [self._run(variant, seed) for seed in seeds]

    def _build(self, model: str, seed: int, settings: dict[str, Any]) -> Forecaster:
        return build_model(
            model,
            horizon=self.plan.horizon,
            seed=seed,
            device=self.plan.device,
            epochs=self.plan.epochs,
            progress=False,
            **{"window": self.plan.window, **settings},
        )

    def _key(self, model: Forecaster) -> str:
        train = _train_config(model)
        described = {
            "version": CACHE_VERSION,
            "spec": self.spec,
            "split": self.split.sizes(),
            "model": model.name,
            "hyper": model.describe(),
            "train": None
            if train is None
            else {k: v for k, v in train.to_dict().items() if k not in ("progress", "device")},
        }
        digest = hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode())
        return f"{model.name}-{digest.hexdigest()[:16]}"

    def _run(self, variant: Variant, seed: int) -> FitRun:
        model = self._build(variant.model, seed, variant.settings)
        key = self._key(model)
        if variant.model == "lstm" and key in self._lstms:
            return self._lstms[key]
        loaded = self._load(key)
        if loaded is not None:
            model, seconds = loaded
            note = "cached"
        else:
            model, seconds = self._fit(model, seed)
            self._save(key, model, seconds)
            note = "fit"
        valid = validation_backtest(model, self.split.train, self.split.valid)
        rmse = float(valid.metrics["pooled"][str(self.plan.horizon)]["rmse"]) if valid else None
        run = FitRun(seed, model, float("nan") if rmse is None else rmse, seconds)
        self.log(
            f"  {self.network} {variant.name} seed {seed}: {note} {seconds:.0f} s, "
            f"valid RMSE@{self.plan.horizon} {run.valid_rmse:.4f}"
        )
        if variant.model == "lstm":
            self._lstms[key] = run
        return run

    def _fit(self, model: Forecaster, seed: int) -> tuple[Forecaster, float]:
        """Fit ``model``; a hybrid TGC-LSTM on the shared fit of its first-stage LSTM."""
        first = None
        config = getattr(model, "config", None)
        hybrid = config is not None and config.form == "hybrid" and config.ensemble == 1
        if model.name == "tgclstm" and hybrid:
            first = self._run(Variant("lstm", _overrides(model)), seed)
        began = time.perf_counter()
        if first is not None:
            model.fit(self.split.train, valid=self.split.valid, lstm=first.model)  # type: ignore[call-arg]
        else:
            model.fit(self.split.train, valid=self.split.valid)
        seconds = time.perf_counter() - began + (first.fit_seconds if first else 0.0)
        return model, seconds

    def _load(self, key: str) -> tuple[Forecaster, float] | None:
        if self.cache is None:
            return None
        where = self.cache / self.network / key
        if not (where / "fit.json").is_file():
            return None
        record = json.loads((where / "fit.json").read_text())
        model = load_model(where / "bundle")
        histories = [_history(h) for h in record.get("histories") or []]
        if histories:
            model.histories = histories  # type: ignore[attr-defined]
        if record.get("history"):
            model.history = _history(record["history"])  # type: ignore[attr-defined]
        return model, float(record["fit_seconds"])

    def _save(self, key: str, model: Forecaster, seconds: float) -> None:
        if self.cache is None or not is_stochastic(model.name):
            return
        where = self.cache / self.network / key
        model.save(where / "bundle")
        history = getattr(model, "history", None)
        histories = getattr(model, "histories", None) or []
        record = {
            "fit_seconds": seconds,
            "history": None if history is None else history.to_dict(),
            "histories": [h.to_dict() for h in histories],
        }
        (where / "fit.json").write_text(json.dumps(record) + "\n")


def _overrides(model: Any) -> tuple[tuple[str, Any], ...]:
    """The LSTM settings of a hybrid TGC-LSTM's first stage that differ from the LSTM's
    defaults, as a variant's overrides (the horizon is the plan's)."""
    defaults = build_model("lstm").describe()
    settings = model.first_stage_settings()
    return tuple(
        sorted((k, v) for k, v in settings.items() if k != "horizon" and defaults.get(k) != v)
    )


def _history(data: dict[str, Any]) -> TrainHistory:
    return TrainHistory(**{k: v for k, v in data.items() if k != "epochs_run"})
