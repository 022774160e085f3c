"""``roadcast train --tune BUDGET``: search each model's settings on the validation part.

Optuna's TPE sampler proposes settings from the model's search space
(:func:`search_space`); a trial fits the model on the training part, early-stopped on the
validation part as usual, and its objective is the validation RMSE pooled over the full
horizon. While it trains, every epoch's validation loss is reported to Optuna
(:func:`models.nn.loop.observe_epochs`) and the median pruner stops trials whose curve is
worse than the median of the earlier trials at the same epoch. The test part is never
read. The best settings become the model's overrides for the seeds of the comparison.

A budget is a number of trials per model (``30``) or a wall-clock time for the whole
search (``20m``, ``90s``, ``1h``), shared equally by the tuned models.
"""

from __future__ import annotations

import itertools
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from models.forecasters.evaluation import part_origins
from models.forecasters.factory import build_model
from models.nn.loop import observe_epochs
from models.panel import Split

if TYPE_CHECKING:
    import optuna

    from models.forecasters.comparison import TrainPlan

Log = Callable[[str], None]
# A trial needs this many validation windows (x the horizon) for a usable score.
MIN_VALID_WINDOWS_PER_STEP = 2
WINDOWS = (6, 12, 24)
MAX_TRIALS = 10_000  # per model; beyond it a search of these few settings repeats itself
MAX_BUDGET_S = 7 * 86_400.0


class TuningError(ValueError):
    """Tuning cannot run or found nothing; the message names the setting to change."""


@dataclass(frozen=True)
class Budget:
    """How much searching: ``trials`` per model, or ``seconds`` for the whole search."""

    trials: int | None = None
    seconds: float | None = None

    def __str__(self) -> str:
        return f"{self.trials} trials" if self.trials is not None else f"{self.seconds:g} s"


def parse_budget(text: str) -> Budget:
    """``"30"`` -> 30 trials per model; ``"20m"``, ``"90s"``, ``"1.5h"``, ``"1d"`` -> a time
    budget.

    Raises
    ------
    TuningError
        For text that is neither, or a budget too small for one trial.
    """
    if re.fullmatch(r"\s*\d+(?:\.\d+)?\s*M\s*", str(text)):
        raise TuningError(f"--tune {text!r}: M is ambiguous; give minutes as m (e.g. 20m)")
    raw = str(text).strip().lower()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|m|min|h|d)?", raw)
    if not match:
        raise TuningError(
            f"--tune {text!r}: give a number of trials per model (e.g. 30) or a time "
            "(e.g. 20m, 90s, 1h)"
        )
    number, unit = float(match.group(1)), match.group(2)
    if unit is None:
        if not number.is_integer() or not 1 <= number <= MAX_TRIALS:
            raise TuningError(
                f"--tune {text!r}: a trial budget must be a whole number from 1 to {MAX_TRIALS}"
            )
        return Budget(trials=int(number))
    seconds = number * {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}[unit]
    if seconds < 1.0:
        raise TuningError(f"--tune {text!r}: a budget of {seconds:g} s is too small for one trial")
    if seconds > MAX_BUDGET_S:
        raise TuningError(f"--tune {text!r}: a time budget may be at most {MAX_BUDGET_S / 3600:g}h")
    return Budget(seconds=seconds)


def tunable(name: str) -> bool:
    """Whether ``name`` has settings to search (the baselines have none)."""
    return name in ("ar", "lstm", "gru", "tgclstm")


# AR's settings: a deterministic fit, so the search is this grid, each point once.
AR_GRID: dict[str, list[Any]] = {"max_lag": [6, 12, 24, 36], "ic": ["aic", "bic"]}


def search_space(
    name: str, trial: optuna.Trial, windows: Sequence[int] = WINDOWS
) -> dict[str, Any]:
    """The settings of one trial for model ``name`` (constructor keywords of the model;
    ``train`` holds ``TrainConfig`` fields), its input window one of ``windows``."""
    if name == "ar":
        return {key: trial.suggest_categorical(key, values) for key, values in AR_GRID.items()}
    params: dict[str, Any] = {
        "window": trial.suggest_categorical("window", list(windows)),
        "hidden": trial.suggest_categorical("hidden", [32, 64, 128, 256]),
        "dropout": trial.suggest_float("dropout", 0.0, 0.7, step=0.1),
        "skip": trial.suggest_categorical("skip", ["linear", "last", "none"]),
        "train": {"lr": trial.suggest_float("lr", 3e-4, 3e-3, log=True)},
    }
    if name == "tgclstm":
        params["hops"] = trial.suggest_int("hops", 1, 3)
        params["graph_hidden"] = trial.suggest_categorical("graph_hidden", [8, 16, 32])
        params["graph_dropout"] = trial.suggest_float("graph_dropout", 0.0, 0.5, step=0.1)
    return params


def _valid_windows(split: Split, plan: TrainPlan, window: int) -> int:
    """How many validation windows a trial with input ``window`` is scored on."""
    origins = part_origins(
        split.train.n_time + split.valid.n_time,
        start=split.train.n_time,
        stop=None,
        window=window,
        horizon=plan.horizon,
        inputs_inside=0,
    )
    return len(origins)


def search_windows(split: Split, plan: TrainPlan) -> tuple[int, ...]:
    """The input windows the neural models' trials try: :data:`WINDOWS` and ``--window``,
    each only where the training part holds a window of it (``window + horizon`` steps)
    and the validation part enough windows."""
    need = MIN_VALID_WINDOWS_PER_STEP * plan.horizon
    return tuple(
        w
        for w in sorted({*WINDOWS, plan.window})
        if split.train.n_time >= w + plan.horizon and _valid_windows(split, plan, w) >= need
    )


def check_validation(split: Split, plan: TrainPlan) -> None:
    """Refuse, before any fit, a validation part with fewer windows than a trial needs,
    and a training part in which no searched window fits when a neural model is tuned."""
    need = MIN_VALID_WINDOWS_PER_STEP * plan.horizon
    windows = _valid_windows(split, plan, min(*WINDOWS, plan.window))
    if windows < need:
        raise TuningError(
            f"--tune needs at least {need} validation windows of {plan.horizon} targets; the "
            f"validation part has {split.valid.n_time} steps ({windows} window"
            f"{'' if windows == 1 else 's'}): raise "
            f"--valid (now {plan.valid:g}), use more data or a shorter --horizon"
        )
    if any(tunable(n) and n != "ar" for n in plan.models):
        _check_windows(split, plan)


def _check_windows(split: Split, plan: TrainPlan) -> tuple[int, ...]:
    """:func:`search_windows`, refused naming the training part when it is empty."""
    windows = search_windows(split, plan)
    if not windows:
        tried = ", ".join(str(w) for w in sorted({*WINDOWS, plan.window}))
        raise TuningError(
            f"--tune: no window searched ({tried}) fits the training part of "
            f"{split.train.n_time} steps: a trial needs the window + --horizon {plan.horizon} "
            f"steps there; use more data, a lower --valid (now {plan.valid:g}) or --test, or "
            "a shorter --horizon"
        )
    return windows


def run_trial(name: str, trial: optuna.Trial, split: Split, plan: TrainPlan) -> float:
    """Fit ``name`` with the trial's settings; its validation RMSE over the full horizon.

    Every validated epoch is reported to the trial as the next step of one curve, also
    across the stages of a fit that trains in several (TGC-LSTM's LSTM, then its graph
    path: both restart their epoch count); a pruned trial raises ``optuna.TrialPruned``.
    """
    import optuna

    windows = WINDOWS if name == "ar" else _check_windows(split, plan)
    params: dict[str, Any] = {
        k: float(f"{v:.6g}") if isinstance(v, float) else v
        for k, v in search_space(name, trial, windows).items()
    }
    steps = itertools.count(1)

    def observe(epoch: int, score: float) -> None:
        step = next(steps)
        trial.report(score, step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch} (step {step} of the trial)")

    model = build_model(
        name,
        horizon=plan.horizon,
        seed=0,
        device=plan.device,
        epochs=plan.epochs,
        epoch_windows=plan.epoch_windows,
        progress=False,
        **{"window": plan.window, **params},
    )
    with observe_epochs(observe):
        model.fit(split.train, valid=split.valid)
    metrics = getattr(model, "valid_metrics", None)
    if not metrics:
        raise TuningError(f"{name}: the validation part holds no complete window")
    return float(metrics["pooled"][str(plan.horizon)]["rmse"])


@dataclass
class TuneResult:
    """What the search found for one model."""

    name: str
    params: dict[str, Any]
    best_rmse: float
    trials: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        states = [t["state"] for t in self.trials]
        return {
            "params": self.params,
            "best_valid_rmse": self.best_rmse,
            "trials": len(self.trials),
            "completed": states.count("COMPLETE"),
            "pruned": states.count("PRUNED"),
            "seconds": self.seconds,
            "objective": "validation RMSE pooled over the full horizon",
            "history": self.trials,
        }


TrialRunner = Callable[[str, "optuna.Trial", Split, "TrainPlan"], float]


def tune_model(
    name: str,
    split: Split,
    plan: TrainPlan,
    budget: Budget,
    *,
    seconds: float | None = None,
    run: TrialRunner = run_trial,
    log: Log = print,
) -> TuneResult:
    """Search ``name``'s settings within ``budget`` (``seconds`` overrides its time share).

    ``run`` fits one trial (the train flow passes a Prefect task). Deterministic models
    are searched over their grid (each point queued once), neural ones with TPE and seed 0.

    Raises
    ------
    TuningError
        Before any trial when no searched window fits the split; when no trial finished
        within the budget (naming the failure every trial shared), or a time budget ran
        out before a second trial finished (one trial's settings would be adopted
        untested).
    """
    import optuna

    if name != "ar":
        _check_windows(split, plan)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=0)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=5)
    study = optuna.create_study(direction="minimize", sampler=sampler, pruner=pruner)
    trials = budget.trials if budget.trials is not None else 10_000
    if name == "ar":  # deterministic: every point of its grid once (queued), none twice
        grid = [
            dict(zip(AR_GRID, point, strict=True)) for point in itertools.product(*AR_GRID.values())
        ]
        for point in grid:
            study.enqueue_trial(point)
        trials = min(trials, len(grid))
    limit = seconds if seconds is not None else budget.seconds
    started = time.monotonic()
    failures: list[str] = []
    for _ in range(trials):
        if limit is not None and time.monotonic() - started >= limit:
            break
        trial = study.ask()
        try:
            value = run(name, trial, split, plan)
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        except (ValueError, RuntimeError) as exc:  # a setting that cannot fit this data
            log(f"  {name} trial {trial.number} failed: {exc}")
            failures.append(str(exc))
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        study.tell(trial, value)
        log(f"  {name} trial {trial.number}: valid RMSE {value:.4f} {trial.params}")
    state = optuna.trial.TrialState
    ran = study.get_trials(deepcopy=False, states=(state.COMPLETE, state.PRUNED, state.FAIL))
    history = [
        {"number": t.number, "state": t.state.name, "value": t.value, "params": t.params}
        for t in ran
    ]
    done = [t for t in ran if t.state == state.COMPLETE]
    if not done and failures and len(failures) == len(ran):
        why = "" if len(set(failures)) == 1 else f" for {len(set(failures))} reasons, the first"
        raise TuningError(f"every trial of {name} failed ({len(ran)}){why}: {failures[0]}")
    if not done:
        raise TuningError(
            f"no trial of {name} finished within --tune {budget} ({len(ran)} started, "
            f"{len(failures)} failed, the others pruned); give a larger budget"
        )
    spent = time.monotonic() - started
    if limit is not None and len(done) < 2 and spent > limit:
        raise TuningError(
            f"--tune {budget}: one trial of {name} took {spent:.1f} s, more than its "
            f"{limit:.1f} s share, so nothing was compared; give at least "
            f"{math.ceil(3 * spent)} s per tuned model, or a number of trials"
        )
    best = study.best_trial
    params = _settings(name, best)
    value = best.value if best.value is not None else math.nan
    return TuneResult(name, params, float(value), history, seconds=time.monotonic() - started)


def _settings(name: str, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The model keywords of a finished trial (its parameters, ``lr`` under ``train``)."""
    params = {k: float(f"{v:.6g}") if isinstance(v, float) else v for k, v in trial.params.items()}
    lr = params.pop("lr", None)
    return {**params, **({"train": {"lr": lr}} if lr is not None else {})}


def tuned_plan(plan: TrainPlan, results: dict[str, TuneResult]) -> TrainPlan:
    """``plan`` with each tuned model's settings as its overrides."""
    overrides = {n: dict(v) for n, v in plan.overrides.items()}
    for name, result in results.items():
        overrides[name] = {**overrides.get(name, {}), **result.params}
    return replace(plan, overrides=overrides)


def time_shares(budget: Budget, names: list[str]) -> float | None:
    """Seconds per tuned model under a time budget (None for a trial budget)."""
    if budget.seconds is None or not names:
        return None
    share = budget.seconds / len(names)
    return share if math.isfinite(share) else None


def tune_models(
    split: Split,
    plan: TrainPlan,
    budget: Budget,
    *,
    tuner: Callable[..., TuneResult] | None = None,
    log: Log = print,
) -> dict[str, TuneResult]:
    """Tune every tunable model of ``plan`` (after checking the validation part);
    ``tuner`` replaces :func:`tune_model` (the train flow runs each as a Prefect task)."""
    names = [n for n in plan.models if tunable(n)]
    if not names:
        log(f"note: --tune has nothing to search: {', '.join(plan.models)}: no settings to tune")
        return {}
    check_validation(split, plan)
    share = time_shares(budget, names)
    run = tuner or tune_model
    results = {}
    for name in names:
        log(f"tuning {name} ({budget if share is None else f'{share:.0f} s'})")
        results[name] = run(name, split, plan, budget, seconds=share, log=log)
    return results
