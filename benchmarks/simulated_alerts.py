"""Alert quality on the simulated road network: precision, incident recall, median delay.

Two runs of :func:`pipeline.data.simulate.simulate_network` with the same settings and
different seeds: the **validation** run chooses each detector's alert threshold and the
ensemble's members and false-alarm shares; the **test** run reports with those choices
(nothing is chosen on it). In each run the detectors are fitted on the training part,
calibrated on the validation part (:func:`models.panel.chronological_split`) and score
the test third tick by tick; their detections go through the service's alert lifecycle
(:class:`pipeline.alerts.lifecycle.AlertManager`, firing at once) and the alert episodes
are matched to the labelled incidents and sensor faults by
:func:`models.anomaly.events.match_events` (a firing on an event's sensor between its
start and 30 minutes after its end).

* **single-sensor**: precision over alert episodes (one per sensor and firing);
* **multi-sensor**: precision over incidents, the alerts the lifecycle groups across
  neighbouring sensors of the road graph (what an operator is paged for);
* **incident recall**: labelled incidents with a matching episode (faults shown apart);
* **median delay**: from an event's start to its first matching firing, in steps.

Choice rule on the validation run: the highest incident recall among settings with
single-sensor precision >= :data:`MIN_PRECISION`, then the shorter delay, then the higher
precision (if none reaches it, the highest precision).

``main`` also tries spatial corroboration, a rule the service does not use
(:func:`corroboration_part`): a sensor fires too when its p-value and a graph neighbour's
are both at most a pair p-value, chosen on the validation seeds.

``interval`` is the service's interval detector (:class:`pipeline.alerts.config.AlertingConfig`,
peaks-over-threshold tail); ``interval-max`` the same with the conformal pool's ``"max"``
tail, whose p-values cannot fall below ``1 / (n + 1)`` when the validation weeks hold
incidents of the same size (:mod:`models.anomaly.calibration`).

The forecast-based detectors (``interval``, ``interval-max``) judge the forecasts the
service publishes: each model's own forecast moved by its online level correction
(:func:`models.forecasters.level.follow_level`, half-life ``--level-half-life``, by default
the service's, :attr:`pipeline.service.config.ServiceConfig.level_half_life`; ``off``: the
models' own forecasts), tick by tick in the order of
:class:`pipeline.service.processor.PollProcessor` (:func:`served_scores`). The
correction starts at the validation part, as a service started when training ended.
Given two or more half-lives, ``main`` compares them side by side (:func:`level_part`);
the choices are made on the validation seed with the same setting as the test seed.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from flows.reporting.text import print_table
from models.anomaly.base import Detection, DetectionBatch, StreamingDetector
from models.anomaly.ensemble import AlarmRule, merged_pvalues
from models.anomaly.events import MATCH_GRACE, Episode, EventMatch, match_events
from models.anomaly.interval import ForecastIntervalDetector
from models.forecasters.level import OnlineLevel, follow_level
from models.panel import LabeledEvent, SensorPanel
from pipeline.service.config import ServiceConfig
from pipeline.service.state import half_life_text

VALID_SEED, TEST_SEED = 11, 7
VALIDATION_SEEDS = (VALID_SEED, 12, 13)  # seeds_part's test seeds must avoid them
SIZE = {False: (200, 21.0), True: (40, 6.0)}  # sensors, days (quick: a smoke run)
MIN_PRECISION = 0.95
PVALUES = (1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6)
CORROBORATE = (3e-3, 5e-3, 7e-3, 1e-2, 1.5e-2, 2e-2)  # pair p-values (corroboration_part)
SERVICE_LEVEL = ServiceConfig.level_half_life  # the service's level correction (None: off)
# The rule fixed before the level comparison was run (docs/results.md): the service's
# detectors judge the models' own forecasts if, with the correction on, the detector set
# loses more than this incident recall or single-sensor precision, or its median delay
# grows by DELAY_LOSS_STEPS or more, against off.
RECALL_LOSS = PRECISION_LOSS = 0.02
DELAY_LOSS_STEPS = 1.0
GOALS = {
    "precision_at_least": 0.95,
    "incident_recall_at_least": 0.95,
    "median_delay_steps_at_most": 1,
}


@dataclass(frozen=True)
class Network:
    """One simulated run: the test part, its labelled events, the road graph's neighbours."""

    test: SensorPanel
    events: list[LabeledEvent]
    neighbours: dict[str, set[str]]
    scores: dict[str, np.ndarray]  # detector -> float64 scores [time, node] of the test part
    # detector -> seconds per tick of all sensors, streaming (a corrected one: per tick its
    # correction followed, from the validation part on)
    seconds: dict[str, float]
    moved: dict[str, float] = field(default_factory=dict)  # forecast-based detector -> share


def _detectors(quick: bool) -> dict[str, StreamingDetector]:
    from models.anomaly.changepoint import ChangepointDetector
    from models.anomaly.context import ContextConfig, ContextDetector
    from models.anomaly.extreme import ExtremeDetector
    from models.anomaly.gan import GanConfig, GanDetector
    from models.anomaly.spectral import SpectralDetector

    detectors: dict[str, StreamingDetector] = {
        "context": ContextDetector(ContextConfig(memory=500 if quick else 1000, online=False)),
        "extreme": ExtremeDetector(),
        "changepoint": ChangepointDetector(),
        "spectral": SpectralDetector(),
    }
    if not quick:
        detectors["gan"] = GanDetector(GanConfig(window=24, epochs=20))
    return detectors


def simulate(
    seed: int,
    quick: bool,
    only_interval: bool = False,
    level: pd.Timedelta | None = SERVICE_LEVEL,
) -> Network:
    """Simulate, fit every detector (only the service's, ``interval``, with
    ``only_interval``) on the training part, score the test part; the forecast-based
    detectors judge forecasts corrected with half-life ``level`` (None: off)."""
    return simulate_levels(seed, quick, {"": level}, only_interval)[""]


def simulate_levels(
    seed: int,
    quick: bool,
    levels: Mapping[str, pd.Timedelta | None],
    only_interval: bool = False,
) -> dict[str, Network]:
    """:func:`simulate` for each level correction of ``levels`` (label -> half-life),
    fitting once: only the forecast-based detectors' scores differ between them."""
    import torch

    from models.forecasters.registry import model_class
    from models.panel import chronological_split
    from pipeline.alerts.config import AlertingConfig
    from pipeline.alerts.lifecycle import neighbours_from_graph
    from pipeline.data.simulate import simulate_network

    torch.set_num_threads(1)
    sensors, days = SIZE[quick]
    # More incidents than the simulator's default (1 per 100 sensors and day), so that the
    # test third holds enough of them for precision and recall to mean something.
    panel = simulate_network(sensors, days, seed=seed, incidents_per_day=3.0, faults_per_day=1.0)
    split = chronological_split(panel, test=1 / 3, valid=0.2)
    served_from = split.train.n_time  # the service starts when training ended
    test_from = served_from + split.valid.n_time
    start = split.test.timestamps[0]
    events = [e for e in panel.events if e.start >= start]
    assert panel.graph is not None
    forecaster = model_class("ar")(window=12, horizon=3)  # type: ignore[call-arg]
    forecaster.fit(split.train, valid=split.valid)
    service = AlertingConfig().interval  # the service's interval detector
    judged: dict[str, ForecastIntervalDetector] = {
        "interval": ForecastIntervalDetector(forecaster, service, self_forecast=False),
        "interval-max": ForecastIntervalDetector(
            forecaster, replace(service, tail="max"), self_forecast=False
        ),
    }
    if only_interval:
        judged = {"interval": judged["interval"]}
    others = {} if only_interval else _detectors(quick)
    scores: dict[str, dict[str, np.ndarray]] = {label: {} for label in levels}
    seconds: dict[str, dict[str, float]] = {label: {} for label in levels}
    moved: dict[str, dict[str, float]] = {label: {} for label in levels}
    for name, interval in judged.items():
        interval.fit(split.train, valid=split.valid)
        for label, half_life in levels.items():
            started = time.perf_counter()
            scores[label][name], moved[label][name] = served_scores(
                interval, panel, test_from, half_life, level_from=served_from
            )
            ticks = panel.n_time - (test_from if half_life is None else served_from)
            seconds[label][name] = (time.perf_counter() - started) / ticks
    for name, detector in others.items():
        detector.fit(split.train, valid=split.valid)
        started = time.perf_counter()
        batch: DetectionBatch = detector.score_panel(split.test)  # tick by tick, as served
        elapsed = (time.perf_counter() - started) / split.test.n_time
        for label in levels:
            scores[label][name] = batch.score.astype(np.float64)
            seconds[label][name] = elapsed
    neighbours = neighbours_from_graph(panel.graph, panel.sensor_ids)
    return {
        label: Network(split.test, events, neighbours, scores[label], seconds[label], moved[label])
        for label in levels
    }


def served_scores(
    detector: ForecastIntervalDetector,
    panel: SensorPanel,
    start: int,
    half_life: pd.Timedelta | None,
    *,
    level_from: int | None = None,
    forecasts_from: int | None = None,
) -> tuple[np.ndarray, float]:
    """float64 scores ``[time, node]`` of ``panel``'s ticks from ``start`` on, judged as
    the service judges them, and the share of the values of the forecasts the detector
    was given that the correction moved.

    Per tick, in :class:`pipeline.service.processor.PollProcessor`'s order (``_score``,
    then ``_forecast_run`` and its alert hook): the model's level correction folds in the
    errors of the forecasts targeting the tick, the model's forecast issued at the tick is
    moved by it (:func:`models.forecasters.level.follow_level`), the detector scores the
    tick, then observes the moved forecast. ``half_life`` None: the model's own forecasts.

    The correction starts empty at ``level_from`` (default ``start``), as a service
    started there; the detector is given the forecasts issued from ``forecasts_from`` on
    (default: once a window of ticks from ``start`` is full, as
    :meth:`models.anomaly.base.StreamingDetector.score_panel` of a self-forecasting
    detector forecasts).
    """
    forecaster = detector.forecaster
    if forecaster is None:
        raise ValueError("the interval detector has no forecaster; attach one first")
    window = max(forecaster.window, 1)
    level_from = start if level_from is None or half_life is None else level_from
    forecasts_from = start + window - 1 if forecasts_from is None else forecasts_from
    first = min(level_from, start)
    issued_from = max(min(level_from, forecasts_from), window - 1)
    origins = np.arange(issued_from, panel.n_time, dtype=np.int64)
    means = forecaster.predict_batch(panel, origins).mean  # [origin, horizon, node]
    level = (
        None
        if half_life is None
        else OnlineLevel(forecaster.horizon, detector.n_nodes, half_life / panel.freq)
    )
    detector.reset()
    scores = np.zeros((panel.n_time - start, detector.n_nodes))
    given = moved = 0
    own, detector.self_forecast = detector.self_forecast, False  # given the forecasts
    try:
        for t in range(first, panel.n_time):
            values, mask = panel.values[t], panel.mask[t]
            live = level if t >= level_from else None  # the service runs from level_from
            if live is not None:
                live.observe(t, values, mask)
            mean = own_mean = means[t - issued_from] if t >= issued_from else None
            if live is not None and own_mean is not None:
                mean = follow_level(live, forecaster, t, own_mean, None, None)[0]
            if t < start:
                continue
            scores[t - start] = detector.update(panel.timestamps[t], values, mask).score
            if mean is not None and own_mean is not None and t >= forecasts_from:
                detector.observe_forecast(mean)
                h = detector.config.horizon
                given += mean[:h].size
                moved += int(np.count_nonzero(mean[:h] != own_mean[:h]))
    finally:
        detector.self_forecast = own
    return scores, moved / given if given else 0.0


def episodes(net: Network, score: np.ndarray, threshold: float) -> list[Episode]:
    """The first firing of every alert of ``score`` ``[time, node]`` through the lifecycle."""
    from pipeline.alerts.lifecycle import AlertManager, AlertRules

    manager = AlertManager(net.test.sensor_ids, AlertRules(threshold=threshold), net.neighbours)
    observed = np.where(net.test.mask, net.test.values, np.nan).astype(np.float32)
    seen: dict[str, Episode] = {}
    for t, ts in enumerate(net.test.timestamps):
        detection = Detection("detector", ts, score[t].astype(np.float32), observed[t])
        for event in manager.evaluate(detection):
            m = event.message
            if m.status == "firing" and m.alert_id not in seen:
                seen[m.alert_id] = Episode(m.sensor, pd.Timestamp(m.ts), event.group_key)
    return list(seen.values())


def quality(net: Network, found: Sequence[Episode]) -> dict[str, Any]:
    """Single- and multi-sensor precision, recall per kind, median delay (steps)."""
    match: EventMatch = match_events(found, net.events)
    groups: dict[str, bool] = {}
    for ep in found:
        hit = any(
            ep.sensor in e.sensors and e.start <= ep.fired <= e.end + MATCH_GRACE
            for e in net.events
        )
        groups[ep.group] = groups.get(ep.group, False) or hit
    step = net.test.freq / pd.Timedelta(minutes=1)
    delay = match.median_delay_min
    return {
        "alerts": len(found),
        "incidents_paged": len(groups),
        "precision_single": None if match.precision is None else round(match.precision, 3),
        "precision_multi": round(sum(groups.values()) / len(groups), 3) if groups else None,
        "incident_recall": round(match.recall_of("incident"), 3)
        if "incident" in match.events
        else None,
        "fault_recall": round(match.recall_of("fault"), 3) if "fault" in match.events else None,
        "median_delay_steps": None if delay is None else round(delay / step, 2),
        "events": match.events,
    }


def _rank(q: dict[str, Any]) -> tuple[float, ...]:
    precision = q["precision_single"] or 0.0
    recall = q["incident_recall"] or 0.0
    delay = q["median_delay_steps"] if q["median_delay_steps"] is not None else 1e9
    if precision >= MIN_PRECISION:
        return (1.0, recall, -delay, precision)
    return (0.0, precision, recall)


def choose_threshold(net: Network, score: np.ndarray) -> tuple[float, dict[str, Any]]:
    """The alert p-value of :data:`PVALUES` the choice rule prefers on ``net``."""
    best: tuple[tuple[float, ...], float, dict[str, Any]] | None = None
    for p in PVALUES:
        q = quality(net, episodes(net, score, 1.0 - p))
        if best is None or _rank(q) > best[0]:
            best = (_rank(q), p, q)
    assert best is not None
    return best[1], best[2]


def ensemble_score(rule: AlarmRule, scores: Mapping[str, np.ndarray]) -> np.ndarray:
    """The ensemble's merged score ``[time, node]`` (weighted Bonferroni)."""
    return 1.0 - merged_pvalues(rule, {m: 1.0 - scores[m] for m in rule.members})


def choose_ensemble(net: Network, members: Iterable[str]) -> tuple[AlarmRule, dict[str, Any]]:
    """Greedy members and shares on ``net``: add the member and share the choice rule
    prefers most until none improves it (the ensemble fires at its budget)."""
    members = list(members)
    current: tuple[tuple[float, ...], AlarmRule, dict[str, Any]] | None = None
    while True:
        step = current
        for m in members:
            if current is not None and m in current[1].members:
                continue
            for p in PVALUES:
                alphas = (*(current[1].alphas if current else ()), (m, p))
                rule = AlarmRule(tuple(sorted(alphas)))
                q = quality(net, episodes(net, ensemble_score(rule, net.scores), rule.threshold))
                if step is None or _rank(q) > step[0]:
                    step = (_rank(q), rule, q)
        if step is None or step is current:
            break
        current = step
    assert current is not None
    return current[1], current[2]


def simulated_part(quick: bool, level: pd.Timedelta | None = SERVICE_LEVEL) -> dict[str, Any]:
    """Choose on the validation seed, report on the test seed (module doc), the
    forecast-based detectors judging forecasts corrected with half-life ``level``."""
    valid, test = simulate(VALID_SEED, quick, level=level), simulate(TEST_SEED, quick, level=level)
    return {**detector_rows(valid, test, quick), "level_half_life": half_life_text(level)}


def detector_rows(valid: Network, test: Network, quick: bool) -> dict[str, Any]:
    """Each detector's and the ensemble's choice on ``valid``, reported on ``test``."""
    rows = []
    for name, score in valid.scores.items():
        p, chosen = choose_threshold(valid, score)
        reported = quality(test, episodes(test, test.scores[name], 1.0 - p))
        rows.append(
            {
                "detector": name,
                "alert_pvalue": p,
                "validation": chosen,
                "test": reported,
                "ms_per_tick": round(1000 * test.seconds[name], 2),
                **({"forecasts_moved": round(test.moved[name], 5)} if name in test.moved else {}),
            }
        )
    rule, chosen = choose_ensemble(valid, valid.scores)
    reported = quality(test, episodes(test, ensemble_score(rule, test.scores), rule.threshold))
    rows.append(
        {
            "detector": "ensemble",
            "alert_pvalue": rule.budget,
            "members": dict(rule.alphas),
            "validation": chosen,
            "test": reported,
        }
    )
    from pipeline.alerts.config import SERVICE_ALERT_P

    size = SIZE[quick]
    chosen_p = next(r["alert_pvalue"] for r in rows if r["detector"] == "interval")
    return {
        "service_default": {
            "alert_pvalue": SERVICE_ALERT_P,
            "is_the_interval_choice": chosen_p == SERVICE_ALERT_P,
        },
        "network": {
            "sensors": size[0],
            "days": size[1],
            "validation_seed": VALID_SEED,
            "test_seed": TEST_SEED,
            "incidents_per_day_per_100": 3.0,
            "faults_per_day_per_100": 1.0,
            "test_steps": test.test.n_time,
        },
        "choice_rule": (
            f"highest incident recall with single-sensor precision >= {MIN_PRECISION} on the "
            "validation seed, then the shorter median delay, then the higher precision"
        ),
        "match_grace_min": MATCH_GRACE / pd.Timedelta(minutes=1),
        "goals": GOALS,
        "results": rows,
    }


def parse_level(text: str) -> pd.Timedelta | None:
    """``6h``, ``30min`` or ``off`` as ``roadcast serve --level-half-life`` takes it."""
    import typer

    from flows.cli.options import parse_duration

    try:
        value = parse_duration(text, "--level-half-life", allow_off=True)
        return ServiceConfig(level_half_life=value).level_half_life
    except typer.BadParameter as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def level_loss(off: Mapping[str, Any], on: Mapping[str, Any]) -> list[str]:
    """What the correction costs a detector set by the rule fixed before the comparison
    (:data:`RECALL_LOSS`, :data:`PRECISION_LOSS`, :data:`DELAY_LOSS_STEPS`): one line per
    breach of ``on`` against ``off`` (each a :func:`quality`-like dict); empty: none."""
    out = []
    for key, limit in (("incident_recall", RECALL_LOSS), ("precision_single", PRECISION_LOSS)):
        before, after = off.get(key), on.get(key)
        if before is not None and (after is None or before - after > limit + 1e-9):
            out.append(f"{key} {before} -> {after} (loses more than {limit})")
    before, after = off.get("median_delay_steps"), on.get("median_delay_steps")
    if before is not None and (after is None or after - before >= DELAY_LOSS_STEPS):
        out.append(f"median_delay_steps {before} -> {after} (a step or more later)")
    return out


def level_part(
    quick: bool,
    levels: Mapping[str, pd.Timedelta | None],
    seeds: Sequence[int],
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Each setting of the level correction (label -> half-life) side by side, on the
    same simulated networks: every detector chosen on the validation seed and reported on
    the test seed (:func:`detector_rows`); the service's interval detector at its default
    alert p-value on the test ``seeds`` (:func:`seeds_part`); and the rule fixed before
    the run (:func:`level_loss`) applied to the ensemble and to the service's detector
    set (``interval`` alone, unless an autoencoder is saved)."""
    started = time.perf_counter()
    progress(f"seeds {VALID_SEED} and {TEST_SEED}: every detector")
    valid = simulate_levels(VALID_SEED, quick, levels)
    test = simulate_levels(TEST_SEED, quick, levels)
    detectors = {label: detector_rows(valid[label], test[label], quick) for label in levels}
    nets: dict[str, dict[int, Network]] = {label: {} for label in levels}
    for seed in seeds:
        progress(f"seed {seed}: the service's interval detector")
        for label, net in simulate_levels(seed, quick, levels, only_interval=True).items():
            nets[label][seed] = net
    by_seed = {label: seeds_part(nets[label], quick) for label in levels}
    labels = list(levels)
    base = next((label for label in labels if levels[label] is None), labels[0])
    decision: dict[str, Any] = {"against": base}
    for label in labels:
        if label == base:
            continue

        def row(name: str, lab: str) -> dict[str, Any]:
            return next(r for r in detectors[lab]["results"] if r["detector"] == name)["test"]

        checks = {
            "ensemble": level_loss(row("ensemble", base), row("ensemble", label)),
            "interval": level_loss(row("interval", base), row("interval", label)),
            "interval_seeds_pooled": level_loss(by_seed[base]["pooled"], by_seed[label]["pooled"]),
        }
        decision[label] = {
            "breaches": checks,
            "detectors_judge_own_forecasts": any(checks.values()),
        }
    return {
        "levels": {label: half_life_text(h) for label, h in levels.items()},
        "service_level": half_life_text(SERVICE_LEVEL),
        "rule": (
            f"with the correction on, the detector set loses more than {RECALL_LOSS} incident "
            f"recall or more than {PRECISION_LOSS} single-sensor precision, or its median "
            f"delay grows by {DELAY_LOSS_STEPS:g} step or more, against off: then the "
            "service's detectors judge the models' own forecasts"
        ),
        "detectors": detectors,
        "seeds": by_seed,
        "seeds_forecasts_moved": {
            label: {seed: round(net.moved["interval"], 5) for seed, net in nets[label].items()}
            for label in levels
        },
        "decision": decision,
        "quick": quick,
        "seconds": round(time.perf_counter() - started, 1),
    }


def print_levels(part: dict[str, Any]) -> None:
    """The detectors under each setting side by side, then the seeds' pooled figures."""
    labels = list(part["levels"])
    metrics = (
        ("precision_single", "precision (single)"),
        ("precision_multi", "precision (multi)"),
        ("incident_recall", "incident recall"),
        ("fault_recall", "fault recall"),
        ("median_delay_steps", "median delay (steps)"),
        ("alerts", "alerts"),
    )
    first = part["detectors"][labels[0]]
    n = first["network"]
    rows = []
    for k, r in enumerate(first["results"]):
        per = [part["detectors"][label]["results"][k] for label in labels]
        rows.append(
            [
                r["detector"],
                " / ".join(str(x["alert_pvalue"]) for x in per),
                *(" / ".join(str(x["test"][key]) for x in per) for key, _ in metrics),
            ]
        )
    print_table(
        f"alerts with the level correction {' / '.join(labels)}: test seed {n['test_seed']} "
        f"({n['sensors']} sensors, {n['test_steps']} test steps; chosen on seed "
        f"{n['validation_seed']} with the same setting)",
        ["detector", "alert p", *(title for _, title in metrics)],
        rows,
    )
    seeds = [r["seed"] for r in part["seeds"][labels[0]]["seeds"]]
    pooled = [part["seeds"][label]["pooled"] for label in labels]
    print_table(
        f"the service's interval detector at p {part['seeds'][labels[0]]['alert_pvalue']} "
        f"on test seeds {seeds}, pooled",
        ["level", "precision (single)", "incident recall", "fault recall", "median delay",
         "alerts"],
        [
            [label, p["precision_single"], p["incident_recall"], p.get("fault_recall"),
             p.get("median_delay_steps"), p["alerts"]]
            for label, p in zip(labels, pooled, strict=True)
        ],
    )  # fmt: skip
    for label in labels:
        moved = {
            r["detector"]: r["forecasts_moved"]
            for r in part["detectors"][label]["results"]
            if "forecasts_moved" in r
        }
        seeds_moved = part["seeds_forecasts_moved"][label]
        print(
            f"{label}: share of judged forecast values the correction moved: test seed "
            f"{moved}; seeds {seeds_moved}"
        )
    for label, verdict in part["decision"].items():
        if label == "against":
            continue
        breaches = [f"{k}: {'; '.join(v)}" for k, v in verdict["breaches"].items() if v]
        print(
            f"rule ({label} against {part['decision']['against']}): "
            + ("; ".join(breaches) if breaches else "no breach")
        )


def print_simulated(sim: dict[str, Any]) -> None:
    """One table: each detector and the ensemble on the test seed."""
    n = sim["network"]
    print_table(
        f"alerts on the simulated network, test seed {n['test_seed']} ({n['sensors']} sensors, "
        f"{n['test_steps']} test steps; settings chosen on seed {n['validation_seed']})",
        [
            "detector",
            "alert p",
            "precision (single)",
            "precision (multi)",
            "incident recall",
            "fault recall",
            "median delay (steps)",
            "alerts",
            "incidents paged",
            "ms per tick",
        ],
        [
            [
                r["detector"],
                r["alert_pvalue"],
                r["test"]["precision_single"],
                r["test"]["precision_multi"],
                r["test"]["incident_recall"],
                r["test"]["fault_recall"],
                r["test"]["median_delay_steps"],
                r["test"]["alerts"],
                r["test"]["incidents_paged"],
                r.get("ms_per_tick", ""),
            ]
            for r in sim["results"]
        ],
    )


def seeds_part(nets: Mapping[int, Network], quick: bool) -> dict[str, Any]:
    """The service's interval detector at its default alert p-value on more test seeds:
    nothing is chosen here (the p-value was chosen on the validation seed), so the spread
    across seeds says how far one test seed's figures can be trusted."""
    from pipeline.alerts.config import SERVICE_ALERT_P

    rows = []
    delays: list[float] = []  # steps, every found event of every seed
    faults = faults_found = 0
    for seed, net in nets.items():
        found = episodes(net, net.scores["interval"], 1.0 - SERVICE_ALERT_P)
        match = match_events(found, net.events)
        rows.append(
            {
                "seed": seed,
                **quality(net, found),
                "incidents_found": match.found.get("incident", 0),
                "episodes_matched": match.matched,
            }
        )
        step = net.test.freq / pd.Timedelta(minutes=1)
        delays.extend(d / step for d in match.delays_min)
        faults += match.events.get("fault", 0)
        faults_found += match.found.get("fault", 0)
    incidents = sum(r["events"].get("incident", 0) for r in rows)
    found_total = sum(r["incidents_found"] for r in rows)
    episodes_total = sum(r["alerts"] for r in rows)
    matched = sum(r["episodes_matched"] for r in rows)
    return {
        "detector": "interval",
        "alert_pvalue": SERVICE_ALERT_P,
        "network": {"sensors": SIZE[quick][0], "days": SIZE[quick][1]},
        "goals": GOALS,
        "seeds": rows,
        "pooled": {
            "incident_recall": round(found_total / incidents, 3) if incidents else None,
            "incidents": incidents,
            "precision_single": round(matched / episodes_total, 3) if episodes_total else None,
            "alerts": episodes_total,
            "fault_recall": round(faults_found / faults, 3) if faults else None,
            "median_delay_steps": round(float(np.median(delays)), 2) if delays else None,
        },
    }


def pooled_quality(
    nets: Sequence[Network], scores: Sequence[np.ndarray], p: float
) -> dict[str, Any]:
    """Single-sensor precision and incident recall of ``scores`` fired at ``p``, pooled."""
    matched = episodes_total = found = incidents = 0
    for net, score in zip(nets, scores, strict=True):
        match = match_events(episodes(net, score, 1.0 - p), net.events)
        matched, episodes_total = matched + match.matched, episodes_total + match.episodes
        found += match.found.get("incident", 0)
        incidents += match.events.get("incident", 0)
    return {
        "precision_single": round(matched / episodes_total, 3) if episodes_total else None,
        "incident_recall": round(found / incidents, 3) if incidents else None,
        "incidents": incidents,
        "alerts": episodes_total,
    }


def validation_curve(nets: Sequence[Network]) -> list[dict[str, Any]]:
    """Precision and incident recall of the interval detector at each alert p-value of
    :data:`PVALUES`, pooled over the validation ``nets``: the trade-off the default
    p-value is chosen on (:func:`choose_pooled`)."""
    scores = [net.scores["interval"] for net in nets]
    return [{"alert_pvalue": p, **pooled_quality(nets, scores, p)} for p in PVALUES]


def corroborated(net: Network, p_pair: float) -> np.ndarray:
    """The interval detector's score (1 - p) where a sensor also fires when its p-value
    and a graph neighbour's at the same tick are both at most ``p_pair``: that pair's
    p-value (the larger of the two) is scaled so that ``p_pair`` lands on the service's
    alert p-value."""
    from pipeline.alerts.config import SERVICE_ALERT_P

    p = 1.0 - net.scores["interval"]
    column = {s: k for k, s in enumerate(net.test.sensor_ids)}
    partner = np.ones_like(p)  # the smallest neighbour p-value per tick and sensor
    for k, sensor in enumerate(net.test.sensor_ids):
        linked = [column[n] for n in net.neighbours.get(sensor, ()) if n in column]
        if linked:
            partner[:, k] = p[:, linked].min(axis=1)
    pair = np.maximum(p, partner) * (SERVICE_ALERT_P / p_pair)
    return 1.0 - np.minimum(p, pair)


def corroboration_part(valid: Sequence[Network], test: Sequence[Network]) -> dict[str, Any]:
    """Spatial corroboration, a rule tried and not adopted (docs/results.md): its pair
    p-value chosen on the ``valid`` networks by the choice rule, reported on ``test``."""
    from pipeline.alerts.config import SERVICE_ALERT_P

    curve = [
        {
            "alert_pvalue": b,
            **pooled_quality(valid, [corroborated(n, b) for n in valid], SERVICE_ALERT_P),
        }
        for b in CORROBORATE
    ]
    chosen = choose_pooled(curve)
    return {
        "alert_pvalue": SERVICE_ALERT_P,
        "validation_curve": [{"pair_pvalue": r.pop("alert_pvalue"), **r} for r in curve],
        "pair_pvalue": chosen,
        "test": pooled_quality(test, [corroborated(n, chosen) for n in test], SERVICE_ALERT_P),
    }


def choose_pooled(curve: Sequence[dict[str, Any]]) -> float:
    """The choice rule on a pooled curve: the highest recall with precision at least
    :data:`MIN_PRECISION` (ties: the smaller p-value), else the highest precision."""
    ok = [r for r in curve if (r["precision_single"] or 0.0) >= MIN_PRECISION]
    if ok:
        return max(ok, key=lambda r: (r["incident_recall"] or 0.0, -r["alert_pvalue"]))[
            "alert_pvalue"
        ]
    return max(curve, key=lambda r: r["precision_single"] or 0.0)["alert_pvalue"]


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m benchmarks.simulated_alerts [--seeds 1 2 3] [--level-half-life 6h]``:
    :func:`seeds_part` (``python -m benchmarks.anomaly`` runs the comparison of every
    detector on seed 7); ``--level-half-life off 6h``: :func:`level_part`."""
    from benchmarks.common import write_result

    parser = argparse.ArgumentParser(description=seeds_part.__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", help="test seeds (default 1-6)")
    parser.add_argument("--quick", action="store_true", help="a smoke run (40 sensors, 6 days)")
    parser.add_argument(
        "--level-half-life",
        type=parse_level,
        nargs="+",
        default=[SERVICE_LEVEL],
        metavar="HALF_LIFE",
        help="the level correction of the forecasts the forecast-based detectors judge, as "
        f"roadcast serve --level-half-life takes it (default {half_life_text(SERVICE_LEVEL)}, the "
        "service's; off: the models' own); two or more: every detector under each, side by "
        "side (default --name simulated_alerts_level)",
    )
    parser.add_argument("--name", help="the result's name (default simulated_alerts)")
    args = parser.parse_args(argv)
    seeds = args.seeds or ([1, 2] if args.quick else [1, 2, 3, 4, 5, 6])
    if set(VALIDATION_SEEDS) & set(seeds):
        parser.error(f"seeds {VALIDATION_SEEDS} are validation seeds: test on other seeds")
    levels = {half_life_text(h): h for h in args.level_half_life}
    if len(levels) < len(args.level_half_life):
        parser.error("--level-half-life: each half-life at most once")
    if len(levels) > 1:
        compared = level_part(args.quick, levels, seeds)
        print_levels(compared)
        print(f"{compared['seconds']:.0f} s")
        print(f"wrote {write_result(args.name or 'simulated_alerts_level', compared)}")
        return
    (level,) = levels.values()
    valid = [
        simulate(seed, args.quick, only_interval=True, level=level)
        for seed in (VALIDATION_SEEDS[:1] if args.quick else VALIDATION_SEEDS)
    ]
    test = {seed: simulate(seed, args.quick, only_interval=True, level=level) for seed in seeds}
    curve = validation_curve(valid)
    part = {
        **seeds_part(test, args.quick),
        "validation_seeds": list(VALIDATION_SEEDS),
        "validation_curve": curve,
        "validation_choice": choose_pooled(curve),
        "corroboration": corroboration_part(valid, list(test.values())),
        "level_half_life": half_life_text(level),
        "quick": args.quick,
    }
    print_table(
        f"validation seeds {list(VALIDATION_SEEDS)} pooled: the trade-off of the alert p-value "
        f"(the choice rule picks {part['validation_choice']})",
        ["alert p", "precision (single)", "incident recall", "incidents", "alerts"],
        [
            [r["alert_pvalue"], r["precision_single"], r["incident_recall"], r["incidents"],
             r["alerts"]]
            for r in curve
        ],
    )  # fmt: skip
    rows = [
        [
            r["seed"],
            r["precision_single"],
            r["incident_recall"],
            f"{r['incidents_found']} / {r['events'].get('incident', 0)}",
            r["median_delay_steps"],
            r["alerts"],
        ]
        for r in part["seeds"]
    ]
    pooled = part["pooled"]
    rows.append(
        [
            "pooled",
            pooled["precision_single"],
            pooled["incident_recall"],
            f"{sum(r['incidents_found'] for r in part['seeds'])} / {pooled['incidents']}",
            "",
            pooled["alerts"],
        ]
    )
    print_table(
        f"the service's interval detector at p {part['alert_pvalue']} on test seeds "
        f"{seeds} (chosen on seed {VALID_SEED})",
        ["seed", "precision (single)", "incident recall", "incidents", "median delay", "alerts"],
        rows,
    )
    corr = part["corroboration"]
    print_table(
        f"not adopted: corroboration (also fire when a sensor and a graph neighbour both have "
        f"p <= the pair p-value; chosen on the validation seeds: {corr['pair_pvalue']})",
        ["pair p", "seeds", "precision (single)", "incident recall", "alerts"],
        [
            *(
                [r["pair_pvalue"], "validation", r["precision_single"], r["incident_recall"],
                 r["alerts"]]
                for r in corr["validation_curve"]
            ),
            [corr["pair_pvalue"], "test", corr["test"]["precision_single"],
             corr["test"]["incident_recall"], corr["test"]["alerts"]],
        ],
    )  # fmt: skip
    print(f"wrote {write_result(args.name or 'simulated_alerts', part)}")


if __name__ == "__main__":
    main()
