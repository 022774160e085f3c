"""The comparison protocol of ``roadcast train``: split, fit per seed, backtest, summarise.

A chronological split ``[train | valid][test]``: every model is fitted on the training
part, early-stopped and calibrated on the validation part, and scored on the test part
with T-GCN's windows (``window`` inputs and ``horizon`` targets inside the test part;
see :mod:`models.forecasters.evaluation`). Neural models are fitted once per seed and
their metrics averaged; deterministic models once. The run kept for a model is the seed
with the best *validation* pooled RMSE, never the test one.

One plain function per step: :func:`check_graphs`, :func:`split_panel`, :func:`fit_runs`
(fits and validation scores), :func:`backtest_runs` (test backtests) and
:func:`metrics_document` (``metrics.json``); :func:`evaluate_bundle` scores a saved
bundle the same way. The train flow runs each step as a Prefect task, and
``flows.train_models.train_models`` runs them in one call.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from models.bundle import BundleError, finite_or_none, other_step, step_text
from models.forecasters.base import Forecaster
from models.forecasters.baselines import period_steps
from models.forecasters.claims import champion_claims, validation_champion
from models.forecasters.evaluation import Backtest, backtest, validation_backtest
from models.forecasters.factory import build_model, is_stochastic
from models.forecasters.registry import MODELS, load_model
from models.metrics import DEFAULT_HORIZONS, report_horizons, score_batch
from models.panel import SensorPanel, Split, chronological_split
from models.significance import window_losses

if TYPE_CHECKING:
    from models.nn.training import TrainHistory

Log = Callable[[str], None]
# Fits per neural model at most: every seed's model is kept in memory until the run ends.
MAX_SEEDS = 100


@dataclass(frozen=True)
class TrainPlan:
    """What ``roadcast train`` runs."""

    models: tuple[str, ...] = ("persistence", "seasonal", "ar", "lstm", "gru")
    window: int = 12
    horizon: int = 12
    seeds: int = 3
    epochs: int | None = None  # None: each model's default (early stopping decides)
    epoch_windows: int | None = None  # training windows per epoch at most (None: all)
    device: str = "auto"
    test: float = 0.2
    valid: float = 0.1
    horizons: tuple[int, ...] = DEFAULT_HORIZONS
    progress: bool = True
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # per model

    def __post_init__(self) -> None:
        unknown = [m for m in self.models if m not in MODELS]
        if unknown:
            raise ValueError(
                f"unknown model(s) {unknown}; known models: {', '.join(sorted(MODELS))}"
            )
        if not self.models:
            raise ValueError("no model to train; pass e.g. --models persistence,ar,lstm")
        if self.seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {self.seeds}")
        if self.seeds > MAX_SEEDS:
            raise ValueError(
                f"--seeds {self.seeds} is more than {MAX_SEEDS}: every seed is a full fit, "
                "kept in memory until the run ends"
            )
        if self.window < 1 or self.horizon < 1:
            raise ValueError(
                f"--window and --horizon must be >= 1, got {self.window}, {self.horizon}"
            )
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {self.epochs}")
        if self.epoch_windows is not None and self.epoch_windows < 1:
            raise ValueError(f"--epoch-windows must be >= 1, got {self.epoch_windows}")
        for option, share in (("--test", self.test), ("--valid", self.valid)):
            if not 0.0 < share < 1.0:  # NaN fails too
                raise ValueError(f"{option} must be a share between 0 and 1, got {share}")


def unsupported(name: str, split: Split, plan: TrainPlan) -> str | None:
    """Why model ``name`` cannot be trained and scored on ``split`` (None: it can)."""
    history = split.train.n_time + split.valid.n_time
    if MODELS[name].USES_GRAPH and split.train.graph is None:
        return "it needs a road graph and the data have none (pass --adjacency PATH)"
    if name == "seasonal":  # its input window is a period: a day or a week of steps
        period = plan.overrides.get(name, {}).get("period")
        try:
            steps = period_steps(split.train.freq, period, split.train.n_time)
        except ValueError as exc:
            return str(exc)
        if steps < plan.horizon:
            return (
                f"its period of {steps} steps is shorter than --horizon {plan.horizon}: the "
                "reading one period before a target would lie after the forecast is made"
            )
        if steps + plan.horizon > history:
            return (
                f"its input window of {steps} steps (its period) and {plan.horizon} targets "
                f"need {steps + plan.horizon} steps, the training and validation parts hold "
                f"{history}"
            )
        return None
    if plan.window + plan.horizon > split.train.n_time:
        return (
            f"{plan.window} inputs and {plan.horizon} targets need "
            f"{plan.window + plan.horizon} steps, the training part holds {split.train.n_time}"
        )
    return None


def refuse_unsupported(split: Split, plan: TrainPlan) -> None:
    """Refuse, before any fit, a model asked for by name that ``split`` cannot support.

    Raises
    ------
    ValueError
        Naming the first such model and why (:func:`unsupported`).
    """
    for name in plan.models:
        if (why := unsupported(name, split, plan)) is not None:
            raise ValueError(f"{name}: {why}; drop it from --models")


def parse_models(text: str) -> tuple[str, ...]:
    """``"persistence, ar,lstm"`` -> ``("persistence", "ar", "lstm")`` (order kept, no dups)."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    return tuple(dict.fromkeys(names))


@dataclass
class FitRun:
    """One fitted model (one seed) with its validation score."""

    seed: int
    model: Forecaster
    valid_rmse: float
    fit_seconds: float


@dataclass(frozen=True)
class TestScores:
    """What the comparison keeps of every run's test backtest: the metrics and timings,
    the error curve over all steps, and each window's loss per reported horizon (the
    paired tests' input, :func:`models.significance.window_losses`)."""

    metrics: dict[str, dict[str, dict[str, float]]]
    curve: dict[str, list[float]]  # "mae" / "rmse" per step 1..horizon
    losses: dict[str, np.ndarray]  # reported horizon -> float64 [n windows]
    n_windows: int
    predict_ms_per_window: float
    predict_ms_single: float

    @classmethod
    def of(cls, test: Backtest) -> TestScores:
        steps = range(1, test.actual.shape[1] + 1)
        curve = score_batch(test.actual, test.forecast.mean, steps)["step"]
        return cls(
            metrics=test.metrics,
            curve={key: [curve[str(s)][key] for s in steps] for key in ("mae", "rmse")},
            losses={
                h: window_losses(test.actual, test.forecast.mean, int(h))
                for h in test.metrics["pooled"]
            },
            n_windows=test.n_windows,
            predict_ms_per_window=test.predict_ms_per_window,
            predict_ms_single=test.predict_ms_single,
        )


@dataclass
class SeedRun:
    """One fitted model (one seed) with its validation and test scores; ``test``, the
    backtest's forecasts and targets, is kept for the kept seed only (the report's), so
    that a run's memory does not grow with seeds x windows x sensors."""

    seed: int
    model: Forecaster
    valid_rmse: float
    scores: TestScores
    fit_seconds: float
    test: Backtest | None = None


def _kept_first(run: FitRun | SeedRun) -> tuple[float, int]:
    """Order of runs by the kept-seed rule: lowest validation RMSE, then lowest seed."""
    return float(np.nan_to_num(run.valid_rmse, nan=np.inf)), run.seed


@dataclass
class ModelResult:
    """Every seed of one model; ``best`` is the run with the lowest validation RMSE."""

    name: str
    runs: list[SeedRun]
    device: str

    @property
    def best(self) -> SeedRun:
        return min(self.runs, key=_kept_first)

    @property
    def backtest(self) -> Backtest:
        """The kept seed's test backtest."""
        test = self.best.test
        assert test is not None, "backtest_runs keeps the best run's backtest"
        return test


def check_graphs(panel: SensorPanel, plan: TrainPlan, *, asked: bool = True) -> list[str]:
    """Refuse, before fitting anything, a model that needs a road graph the data lack
    (``asked``: the user named the models; a default list leaves it out later instead,
    :func:`unsupported`).

    Returns notes to show the user: sensors with no link at all, whose graph convolution
    sees only themselves (often a sensor missing from the adjacency; los-loop has one).
    """
    notes: list[str] = []
    for name in plan.models:
        if not MODELS[name].USES_GRAPH:
            continue
        if panel.graph is None:
            if not asked:
                continue
            raise ValueError(
                f"{name} needs a road graph and {panel.name or 'this data set'} has none; "
                "pass --adjacency PATH or drop it from --models"
            )
        if not notes:
            edges = np.asarray(panel.graph.edge_index)
            linked = np.zeros(panel.n_nodes, dtype=bool)
            linked[edges.ravel()] = True
            alone = [panel.sensor_ids[k] for k in np.flatnonzero(~linked)]
            if alone:
                notes.append(
                    f"note: {len(alone)} sensor(s) have no link in the graph, e.g. {alone[:5]}: "
                    "graph models see only their own readings there (is the adjacency missing "
                    "them?)"
                )
            notes.extend(getattr(panel.graph, "notes", ()))
            notes.extend(_parts_note(edges, linked))
            notes.extend(_one_way_note(edges))
            notes.extend(_complete_note(edges, panel.n_nodes))
    return notes


# Readings this many typical deviations (median absolute deviation) from their sensor's
# median are noted as likely sentinels or unit errors (e.g. 1e30, -9999).
OUTLIER_DEVIATIONS = 1000.0


# A sensor's readings may span at most this much (a quarter of float32's range), so that
# differences between forecasts and readings, and interval widths, stay finite.
MAX_SPREAD = float(np.finfo(np.float32).max) / 4
# A sensor whose readings are not whole numbers yet are exactly 0 at least this often is
# named: in METR-LA and PEMS-BAY 0 means "no reading". A note's trigger, not a fitted value.
ZERO_SHARE_NOTED = 0.01
# A sensor missing at least this share of its readings is named (a note's trigger).
MISSING_SHARE_NOTED = 0.10
# The same non-zero reading this many steps in a row, and for at least STUCK_HOURS, is
# noted as a sensor that may have frozen (a note's trigger, not a fitted value).
STUCK_STEPS = 36
STUCK_HOURS = 3.0
# Zeros in a row for over a day and this many times the network's median longest run.
ZERO_RUN_TIMES = 3.0


def check_readings(panel: SensorPanel) -> list[str]:
    """The panel's own notes (what its file left to an assumption), then notes naming
    sensors with readings so far from the rest that they are likely sentinels or unit
    errors: models train on them as they are, and one can ruin a fit.

    Raises
    ------
    ValueError
        Naming sensors without any reading or with one constant value, which no model can
        learn, and a sensor whose readings span more than :data:`MAX_SPREAD`: forecast
        errors and interval widths there overflow the 32-bit floats models compute in.
    """
    values = np.where(panel.mask, panel.values, np.nan).reshape(panel.n_time, panel.n_nodes, -1)
    values = values[..., 0].astype(np.float64)  # [time, node]
    low = np.min(np.where(np.isnan(values), np.inf, values), axis=0)  # [node]
    high = np.max(np.where(np.isnan(values), -np.inf, values), axis=0)
    _refuse_unlearnable(panel.sensor_ids, low, high, "at all", "in all their readings")
    spread = high - low
    if (spread > MAX_SPREAD).any():
        worst = int(np.argmax(spread))
        raise ValueError(
            f"sensor {panel.sensor_ids[worst]!r}: readings span {spread[worst]:.3g} (from "
            f"{low[worst]:.3g} to {high[worst]:.3g}), more than the "
            f"{MAX_SPREAD:.3g} forecast errors can be computed over in 32-bit floats; check its "
            "unit or leave the wrong cells empty"
        )
    notes = list(panel.notes)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing sensor
        centre = np.nanmedian(values, axis=0)  # [node]
        distance = np.abs(values - centre)  # [time, node]
        scale = np.nanmedian(distance, axis=0)
        scale = np.where(scale > 0, scale, np.nanmean(distance, axis=0))
        far = distance > OUTLIER_DEVIATIONS * scale  # NaN compares False
    for k in np.flatnonzero(far.any(axis=0)):
        t = int(np.flatnonzero(far[:, k])[0])
        notes.append(
            f"note: sensor {panel.sensor_ids[k]!r} has {int(far[:, k].sum())} reading(s) over "
            f"{OUTLIER_DEVIATIONS:g} times its typical deviation from its median, e.g. "
            f"{values[t, k]:g} at {panel.timestamps[t]}: a sentinel or unit error? Models "
            "train on them as they are; leave such cells empty to mark them missing"
        )
    return [
        *notes,
        *_zeros_note(values, panel.sensor_ids),
        *_missing_note(values, panel.sensor_ids),
        *_stuck_note(values, panel),
        *_zero_run_note(values, panel),
    ]


def _refuse_unlearnable(
    sensor_ids: Sequence[str], low: np.ndarray, high: np.ndarray, nowhere: str, always: str
) -> None:
    """Refuse sensors never observed (``low`` > ``high``) or observed at one value only,
    given each sensor's lowest and highest reading: no model can learn them. ``nowhere``
    and ``always`` say where, in the two messages ("at all", "in all their readings")."""
    empty = [sensor_ids[int(k)] for k in np.flatnonzero(low > high)]
    if empty:
        raise ValueError(
            f"{len(empty)} sensor(s) have no reading {nowhere}, e.g. {empty[:5]}; drop them "
            "from the data"
        )
    constant = np.flatnonzero(low == high)
    if len(constant):
        shown = [sensor_ids[int(k)] for k in constant[:5]]
        raise ValueError(
            f"{len(constant)} sensor(s) report one constant value {always}, e.g. {shown} "
            f"({low[constant[0]]:g}); a stuck or dead sensor: drop it from the data"
        )


def _worst(
    sensor_ids: Sequence[str], measure: np.ndarray, at_least: float, unit: str
) -> tuple[int, str] | None:
    """How many sensors have ``measure[node] >= at_least``, and the worst three by id,
    each with its measure formatted by ``unit`` (e.g. ``"{:.0%}"``); None when none."""
    noted = np.flatnonzero(measure >= at_least)
    if not len(noted):
        return None
    noted = noted[np.argsort(-measure[noted], kind="stable")]
    shown = ", ".join(f"{sensor_ids[k]!r} {unit.format(measure[k])}" for k in noted[:3])
    return len(noted), shown + (", ..." if len(noted) > 3 else "")


def _missing_note(values: np.ndarray, sensor_ids: Sequence[str]) -> list[str]:
    """A note naming sensors that miss at least :data:`MISSING_SHARE_NOTED` of their
    readings (``values`` float64 ``[time, node]``, NaN missing)."""
    worst = _worst(sensor_ids, np.isnan(values).mean(axis=0), MISSING_SHARE_NOTED, "{:.0%}")
    if worst is None:
        return []
    count, shown = worst
    return [
        f"note: {count} sensor(s) miss at least {MISSING_SHARE_NOTED:.0%} of their "
        f"readings ({shown} missing): models skip missing cells "
        "in training and scoring, so these sensors' scores rest on fewer readings"
    ]


def _stuck_note(values: np.ndarray, panel: SensorPanel) -> list[str]:
    """A note naming sensors whose same non-zero reading repeats :data:`STUCK_STEPS`
    steps in a row and for :data:`STUCK_HOURS` or more (a frozen sensor reports its last
    value); ``values`` float64 ``[time, node]``, NaN missing."""
    if panel.n_time < 2:
        return []
    step_h = panel.freq.total_seconds() / 3600.0 if panel.freq is not None else 0.0
    need = max(STUCK_STEPS, int(np.ceil(STUCK_HOURS / step_h)) if step_h > 0 else 0)
    same = (values[1:] == values[:-1]) & (values[1:] != 0)  # [time - 1, node]; NaN: False
    longest = _longest_runs(same) + 1  # readings in the run  [node]
    worst = _worst(panel.sensor_ids, longest, need, "{} steps")
    if worst is None:
        return []
    count, shown = worst
    return [
        f"note: {count} sensor(s) repeat the same reading for {need} steps or more "
        f"({shown}): a frozen sensor, or a gap filled with the last value, looks like "
        "this (so does a reading held at a limit, such as a full car park, which is "
        "real); leave such stretches empty if they are not readings"
    ]


def _longest_runs(flags: np.ndarray) -> np.ndarray:
    """The longest run of True in each column of ``flags`` (``[time, node]``): int ``[node]``."""
    index = np.arange(1, flags.shape[0] + 1)[:, None]
    last_break = np.maximum.accumulate(np.where(flags, 0, index), axis=0)
    return (index - last_break).max(axis=0, initial=0)


def _zero_run_note(values: np.ndarray, panel: SensorPanel) -> list[str]:
    """A note naming sensors whose readings are 0 for longer than a day and
    :data:`ZERO_RUN_TIMES` times the network's typical longest run of zeros (a counter
    that stopped counting; quiet nights of a counter are the typical run)."""
    if panel.n_time < 2 or panel.freq is None:
        return []
    longest = _longest_runs(values == 0)  # NaN: not 0
    if not longest.any():
        return []
    day = int(np.ceil(86_400.0 / panel.freq.total_seconds()))
    need = max(day, int(ZERO_RUN_TIMES * np.median(longest)))
    worst = _worst(panel.sensor_ids, longest, need, "{} steps")
    if worst is None:
        return []
    count, shown = worst
    return [
        f"note: {count} sensor(s) read 0 for {need} steps or more in a row ({shown}), "
        f"{ZERO_RUN_TIMES:g} times longer than the network's sensors typically do: a counter "
        "that stopped counting reads like this; leave such stretches empty if they are not "
        "readings"
    ]


def _zeros_note(values: np.ndarray, sensor_ids: Sequence[str]) -> list[str]:
    """A note naming sensors of fractional readings that are exactly 0 at least
    :data:`ZERO_SHARE_NOTED` of the time (``values`` float64 ``[time, node]``, NaN missing)."""
    observed = np.isfinite(values)
    zeros = (values == 0).sum(axis=0)
    share = zeros / np.maximum(observed.sum(axis=0), 1)
    fractional = (observed & (values != np.round(values))).any(axis=0)
    noted = np.flatnonzero(fractional & (share >= ZERO_SHARE_NOTED))
    if not len(noted):
        return []
    shown = ", ".join(repr(sensor_ids[k]) for k in noted[:3]) + (", ..." if len(noted) > 3 else "")
    pooled = zeros[noted].sum() / observed[:, noted].sum()
    return [
        f"note: {len(noted)} sensor(s) ({shown}) read exactly 0 in {pooled:.1%} of their "
        "readings, while their other readings are not whole numbers: if 0 means 'no reading' "
        "(as in METR-LA and PEMS-BAY), leave those cells empty (in an npz:, h5: or parquet: "
        "data spec, add ,zeros=missing); models train and are scored on them as they are"
    ]


def _one_way_note(edges: np.ndarray) -> list[str]:
    """A note when no link of the graph (``edges`` int ``[2, E]``, source then target) is
    listed in both directions."""
    if edges.shape[1] == 0:
        return []
    pairs = set(zip(edges[0].tolist(), edges[1].tolist(), strict=True))
    if any((target, source) in pairs for source, target in pairs):
        return []
    return [
        f"note: each of the graph's {edges.shape[1]} links runs one way (none is listed in "
        "both directions): graph models pass information from source to target only; if "
        "links go both ways (pipes, two-way roads), list each in both directions"
    ]


def _complete_note(edges: np.ndarray, n: int) -> list[str]:
    """A note when every pair of the ``n`` sensors is linked (``edges`` int ``[2, E]``):
    most often a matrix of distances, where every entry is non-zero."""
    if n < 3:
        return []
    pairs = {(s, t) for s, t in zip(edges[0].tolist(), edges[1].tolist(), strict=True) if s != t}
    if len(pairs) < n * (n - 1):
        return []
    return [
        f"note: every pair of the {n} sensors is linked: graph models then mix each sensor "
        "with all others. An adjacency's entries are link weights, and every non-zero one "
        "is a link: if this is a matrix of distances, give a thresholded similarity (such as "
        "exp(-d^2 / s^2), small values set to 0) or an edge list of the road links"
    ]


def _parts_note(edges: np.ndarray, linked: np.ndarray) -> list[str]:
    """A note when the linked sensors (``edges`` int ``[2, E]``) fall into separate parts
    of the graph."""
    n = len(linked)
    adjacency = sp.coo_array((np.ones(edges.shape[1]), (edges[1], edges[0])), shape=(n, n))
    _, part = connected_components(adjacency, directed=True, connection="weak")
    sizes = np.bincount(part[linked]) if linked.any() else np.zeros(0, dtype=np.int64)
    sizes = np.sort(sizes[sizes > 0])[::-1]
    if len(sizes) < 2:
        return []
    shown = ", ".join(map(str, sizes[:5].tolist())) + (", ..." if len(sizes) > 5 else "")
    return [
        f"note: the graph falls into {len(sizes)} separate parts ({shown} sensors): graph "
        "models pass nothing between them (is a link missing from the adjacency?)"
    ]


def check_sensors(split: Split) -> None:
    """Refuse a sensor that the training part never observed, or observed at one constant
    value: no model can learn it (name it so it can be fixed or dropped); and a
    validation or test part without any reading, where no model can be scored."""
    train = split.train
    mask = train.mask.reshape(train.n_time, train.n_nodes, -1)  # [time, node, feature]
    values = train.values.reshape(mask.shape).astype(np.float64)
    low = np.min(np.where(mask, values, np.inf), axis=(0, 2))  # [node]
    high = np.max(np.where(mask, values, -np.inf), axis=(0, 2))
    _refuse_unlearnable(
        train.sensor_ids, low, high, "in the training part", "in the whole training part"
    )
    for name, part, option in (
        ("validation", split.valid, "--valid"),
        ("test", split.test, "--test"),
    ):
        if not part.mask.any():
            raise ValueError(
                f"the {name} part ({part.timestamps[0]} .. {part.timestamps[-1]}, "
                f"{part.n_time} steps) has no reading, so no model can be scored there; "
                f"give data there or change {option}"
            )


def split_panel(panel: SensorPanel, plan: TrainPlan) -> Split:
    """The protocol's chronological split of ``panel``; refuses a training or test part too
    short for one window and sensors no model can learn (:func:`check_sensors`)."""
    split = chronological_split(panel, test=plan.test, valid=plan.valid)
    if split.test.n_time < plan.window + plan.horizon:
        raise ValueError(
            f"the test part has {split.test.n_time} steps, fewer than --window {plan.window} "
            f"+ --horizon {plan.horizon}: no test window fits; use a smaller --window or "
            f"--horizon, a larger --test (now {plan.test}) or more data"
        )
    if split.train.n_time < plan.window + plan.horizon:
        raise ValueError(
            f"the training part has {split.train.n_time} steps, fewer than --window "
            f"{plan.window} + --horizon {plan.horizon}: no training window fits; use a smaller "
            f"--valid (now {plan.valid}) or --test (now {plan.test}), or more data"
        )
    check_sensors(split)
    return split


# Fewer validation windows than this make the champion's choice a note.
FEW_VALID_WINDOWS = 10
# A network whose best validation epoch was its first, of at least this many, is noted
MIN_EPOCHS_FOR_NOTE = 5


def validation_notes(split: Split, plan: TrainPlan) -> list[str]:
    """Notes on what the split leaves to choose and score with: a validation part of so
    few windows that the champion's choice rests on a handful of forecasts, and sensors
    without a reading in the test part (no model is scored on them)."""
    notes = []
    windows = split.valid.n_time - plan.horizon + 1
    if 0 < windows < FEW_VALID_WINDOWS:
        notes.append(
            f"note: the validation part has {split.valid.n_time} steps, {windows} window(s) "
            f"of --horizon {plan.horizon}: the champion is chosen on them alone; raise "
            f"--valid (now {plan.valid:g}) or use more data for a firmer choice"
        )
    observed = np.asarray(np.asarray(split.test.mask).any(axis=0))  # [node]
    silent = [s for s, seen in zip(split.test.sensor_ids, observed, strict=True) if not seen]
    if silent:
        notes.append(
            f"note: {len(silent)} sensor(s) have no reading in the test part, e.g. "
            f"{silent[:5]}: no model is scored on them"
        )
    return notes


def _device_of(model: Forecaster) -> str:
    device = getattr(model, "device", None)
    return str(getattr(device, "type", device) or "cpu")


def graph_path(model: Forecaster) -> str | None:
    """Whether a two-stage TGC-LSTM kept its graph path (``"kept"``, ``"dropped"``, or
    ``"kept by k of m members"`` for an ensemble); None for other models."""
    kept = (getattr(model, "graph_info", None) or {}).get("graph_path_kept")
    if not kept:
        return None
    if len(kept) == 1:
        return "kept" if kept[0] else "dropped"
    return f"kept by {sum(map(bool, kept))} of {len(kept)} members"


def fit_runs(name: str, split: Split, plan: TrainPlan, log: Log = print) -> list[FitRun]:
    """Fit ``name`` once per seed (once if deterministic) on the training part; score each
    on the validation part (pooled RMSE over the full horizon)."""
    seeds = range(plan.seeds) if is_stochastic(name) else range(1)
    runs: list[FitRun] = []
    for seed in seeds:
        model = build_model(
            name,
            horizon=plan.horizon,
            seed=seed,
            device=plan.device,
            epochs=plan.epochs,
            epoch_windows=plan.epoch_windows,
            progress=plan.progress,
            **{"window": plan.window, **plan.overrides.get(name, {})},
        )
        began = time.perf_counter()
        model.fit(split.train, valid=split.valid)
        fit_seconds = time.perf_counter() - began
        valid = validation_backtest(model, split.train, split.valid)
        valid_rmse = (
            float(valid.metrics["pooled"][str(plan.horizon)]["rmse"]) if valid else float("nan")
        )
        path = graph_path(model)
        log(
            f"  {name} seed {seed}: fit {fit_seconds:.1f}s, valid RMSE@{plan.horizon} "
            f"{valid_rmse:.4f}" + (f", graph path {path}" if path else "")
        )
        for history in getattr(model, "histories", None) or [getattr(model, "history", None)]:
            if (note := first_epoch_note(name, seed, history)) is not None:
                log(note)  # one note per fit
                break
        runs.append(FitRun(seed, model, valid_rmse, fit_seconds))
    return runs


def first_epoch_note(name: str, seed: int, history: TrainHistory | None) -> str | None:
    """A note when a network kept its first epoch's weights because its validation loss
    only rose after: the validation part unlike the training part (None otherwise)."""
    if history is None or history.best_epoch != 1 or history.epochs_run < MIN_EPOCHS_FOR_NOTE:
        return None
    return (
        f"  note: {name} seed {seed}: its validation loss was lowest after the first of "
        f"{history.epochs_run} epochs and rose as it trained, so it keeps the first epoch's "
        "weights: the validation part differs from the training part (a sensor whose level "
        "moved?); compare the per-sensor errors of the validation and test parts"
    )


def backtest_runs(
    name: str,
    runs: Sequence[FitRun],
    panel: SensorPanel,
    split: Split,
    plan: TrainPlan,
    log: Log = print,
) -> ModelResult:
    """Backtest every fitted run on the test part of ``panel`` (T-GCN's windows)."""
    test_start = split.train.n_time + split.valid.n_time
    kept = min(runs, key=_kept_first)
    scored: list[SeedRun] = []
    for run in runs:
        test = backtest(
            run.model,
            panel,
            start=test_start,
            inputs_inside=plan.window,
            horizons=report_horizons(plan.horizon, plan.horizons),
        )
        last = max(test.metrics["pooled"], key=int)
        log(
            f"  {name} seed {run.seed}: test RMSE@{last} {test.metrics['pooled'][last]['rmse']:.4f}"
        )
        scored.append(
            SeedRun(
                run.seed, run.model, run.valid_rmse, TestScores.of(test), run.fit_seconds,
                test if run is kept else None,
            )
        )  # fmt: skip
    return ModelResult(name, scored, _device_of(scored[0].model))


def fit_seeds(
    name: str, panel: SensorPanel, split: Split, plan: TrainPlan, log: Log = print
) -> ModelResult:
    """Fit ``name`` once per seed (once if deterministic) and backtest each on the test part."""
    return backtest_runs(name, fit_runs(name, split, plan, log), panel, split, plan, log)


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    if np.isnan(arr).all():
        return float("nan"), float("nan")
    std = float(np.nanstd(arr, ddof=1)) if np.isfinite(arr).sum() > 1 else 0.0
    return float(np.nanmean(arr)), std


# What a backtest reports of a model's prediction intervals (models.metrics.interval_metrics).
INTERVAL_KEYS = ("coverage", "width", "coverage_worst_hour")


def summarise(result: ModelResult) -> dict[str, Any]:
    """The ``metrics.json`` entry of one model: means over seeds, their std under ``std``
    (sample standard deviation, 0 for one seed), the intervals' coverage and width where
    the model has intervals, plus the error curve over all steps and, for TGC-LSTM, whether
    each seed kept its graph path (``graph_path``)."""
    metrics = [r.scores.metrics for r in result.runs]
    out: dict[str, Any] = {}
    std: dict[str, Any] = {}
    for kind in ("pooled", "step"):
        out[kind], std[kind] = {}, {}
        for h in metrics[0][kind]:
            out[kind][h], std[kind][h] = {}, {}
            interval = INTERVAL_KEYS if all(k in metrics[0][kind][h] for k in INTERVAL_KEYS) else ()
            for key in ("mae", "rmse", "mape", "accuracy", "r2", *interval):
                mean, sd = _mean_std([m[kind][h][key] for m in metrics])
                out[kind][h][key] = mean
                std[kind][h][key] = sd
            out[kind][h]["count"] = metrics[0][kind][h]["count"]
    fit_mean, fit_std = _mean_std([r.fit_seconds for r in result.runs])
    best = result.best
    paths = [graph_path(r.model) for r in result.runs]
    return {
        **out,
        "seeds": len(result.runs),
        "std": std,
        "curve": {
            key: np.mean([r.scores.curve[key] for r in result.runs], axis=0).tolist()
            for key in ("mae", "rmse")
        },
        "fit_seconds": fit_mean,
        "fit_seconds_std": fit_std,
        "predict_ms_per_window": _mean_std([r.scores.predict_ms_per_window for r in result.runs])[
            0
        ],
        "predict_ms_single": _mean_std([r.scores.predict_ms_single for r in result.runs])[0],
        "device": result.device,
        "windows": best.scores.n_windows,
        "valid_rmse": [r.valid_rmse for r in result.runs],
        "best_seed": best.seed,
        "epochs_run": [
            getattr(getattr(r.model, "history", None), "epochs_run", None) for r in result.runs
        ],
        "window": best.model.window,
        **({"graph_path": paths} if any(paths) else {}),
    }


def metrics_document(
    results: dict[str, ModelResult],
    panel: SensorPanel,
    split: Split,
    plan: TrainPlan,
    dataset: str | None = None,
    tuning: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``metrics.json`` document: every model's test metrics (means over seeds, std
    under ``std``), validation scores, timings, the validation champion, each model's
    paired test against it and the champion's regret per horizon
    (:mod:`models.forecasters.claims`), and ``tuning`` (the settings ``--tune`` chose)
    when given; strict JSON (NaN -> null)."""
    models = {name: summarise(result) for name, result in results.items()}
    champion = validation_champion({n: e["valid_rmse"] for n, e in models.items()})
    claims = champion_claims(
        {n: [r.scores.losses for r in res.runs] for n, res in results.items()},
        {n: {h: m["rmse"] for h, m in e["pooled"].items()} for n, e in models.items()},
        champion,
        window=plan.window,
    )
    return finite_or_none(
        {
            "dataset": dataset or panel.name,
            "window": plan.window,
            "horizon": plan.horizon,
            "freq_minutes": panel.freq.total_seconds() / 60.0,
            "split": split.sizes(),
            "models": models,
            **claims,
            **({"tuning": dict(tuning)} if tuning else {}),
        }
    )


def evaluate_bundle(
    bundle_dir: str | Path,
    panel: SensorPanel,
    *,
    test: float = 0.2,
    valid: float = 0.1,
    window: int | None = None,
    horizons: Sequence[int] = DEFAULT_HORIZONS,
    data: str | None = None,
) -> dict[str, Any]:
    """Score a saved bundle on the test part of ``panel`` exactly as ``train`` does.

    The panel's sensors are put in the bundle's order (extra sensors are dropped and
    listed as ``sensors_not_scored``; a sensor of the bundle that the panel lacks is an
    error; one without a reading in the test part is listed as
    ``sensors_without_readings``). ``window`` is the protocol window (default: the
    bundle's input window). ``data`` names the panel in errors (default: its name).

    Raises
    ------
    BundleError
        Besides a bundle that does not load, one trained on another time step than the
        panel's (``step_s`` in its config).
    """
    model = load_model(bundle_dir)
    window = model.window if window is None else window
    if (step_s := other_step(model, panel.freq)) is not None:
        raise BundleError(
            f"bundle {bundle_dir} was trained on {step_text(step_s)} steps; "
            f"{data or panel.name or 'the data'} has {step_text(panel.freq.total_seconds())} "
            "steps: resample the data or train a model on it"
        )
    missing = [s for s in model.sensor_ids if s not in set(panel.sensor_ids)]
    if missing:
        raise ValueError(
            f"the data lack {len(missing)} sensors of the bundle (e.g. {missing[:5]}); "
            "evaluate on the data set the bundle was trained on"
        )
    known = set(model.sensor_ids)
    not_scored = [s for s in panel.sensor_ids if s not in known]
    if panel.sensor_ids != model.sensor_ids:
        # Bundles carry what they need of the graph; prediction never reads panel.graph.
        panel = panel.select(list(model.sensor_ids))
    split = chronological_split(panel, test=test, valid=valid)
    start = split.train.n_time + split.valid.n_time
    observed = np.asarray(np.asarray(panel.mask[start:]).any(axis=0))  # [node]
    if not observed.any():
        raise ValueError(
            f"the test part of {data or panel.name or 'the data'} (its last "
            f"{panel.n_time - start} steps) holds no reading of the bundle's sensors; "
            "nothing to score"
        )
    result = backtest(
        model,
        panel,
        start=start,
        inputs_inside=window,
        horizons=report_horizons(model.horizon, horizons),
    )
    return finite_or_none(
        {
            "bundle": str(bundle_dir),
            "model": model.name,
            "dataset": panel.name,
            "window": window,
            "horizon": model.horizon,
            "split": split.sizes(),
            "windows": result.n_windows,
            "sensors_not_scored": not_scored,
            "sensors_without_readings": [
                s for s, seen in zip(model.sensor_ids, observed, strict=True) if not seen
            ],
            "pooled": result.metrics["pooled"],
            "step": result.metrics["step"],
            "predict_ms_per_window": result.predict_ms_per_window,
            "predict_ms_single": result.predict_ms_single,
        }
    )
