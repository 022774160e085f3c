"""The report's tables: model comparison, published reference rows, per-sensor errors,
alerts; and the narrow comparison table that ``roadcast train`` prints."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from models.forecasters.evaluation import Backtest
from models.metrics import error_metrics
from models.significance import p_text
from pipeline.data.published import FORECASTS


def horizon_label(steps: int | str, freq_minutes: float) -> str:
    """``3`` steps of 5 minutes -> ``"15 min"``."""
    return lead_label(int(steps) * freq_minutes)


def lead_label(minutes: float) -> str:
    """A lead time: ``15`` -> ``"15 min"``, ``180`` -> ``"3 h"``."""
    return f"{minutes:g} min" if minutes < 120 else f"{minutes / 60:g} h"


def compact_rows(
    document: Mapping[str, Any], *, reference: bool = False
) -> tuple[list[str], list[list[str]]]:
    """A narrow table for terminals: one row per model, one column per reported horizon,
    cells ``MAE / RMSE`` (± std over seeds); with ``reference``, the published rows of the
    document's data set at the end (:mod:`pipeline.data.published`)."""
    freq = float(document.get("freq_minutes", 5.0))
    models = document["models"]
    horizons = pooled_horizons(models)
    columns = ["model", *(horizon_label(h, freq) for h in horizons)]
    places = error_places(models)
    rows = []
    for name, e in document["models"].items():
        cells = []
        for h in horizons:
            if h not in e["pooled"]:
                cells.append("")
                continue
            mae, rmse = e["pooled"][h]["mae"], e["pooled"][h]["rmse"]
            if mae is None or rmse is None:  # no target of this horizon was observed
                cells.append("n/a")
                continue
            sd_mae, sd_rmse = e["std"]["pooled"][h]["mae"], e["std"]["pooled"][h]["rmse"]
            known = e["seeds"] > 1 and sd_mae is not None and sd_rmse is not None
            sd = places if places > 3 else 2  # 2: the usual units
            spread = f" (±{sd_mae:.{sd}f} / ±{sd_rmse:.{sd}f})" if known else ""
            cells.append(f"{mae:.{places}f} / {rmse:.{places}f}{spread}")
        rows.append([name, *cells])
    published = FORECASTS.get(str(document.get("dataset"))) if reference else None
    for name, values in published.rows.items() if published is not None else ():
        rows.append(
            [name]
            + [
                f"{values[int(h)][1]:.4g} / {values[int(h)][0]:.4g}" if int(h) in values else ""
                for h in horizons
            ]
        )
    return columns, rows


def error_places(models: Mapping[str, Any]) -> int:
    """The decimal places of the MAE and RMSE cells of ``models`` (:func:`decimals`)."""
    return decimals(
        e["pooled"][h].get(k) for e in models.values() for h in e["pooled"] for k in ("mae", "rmse")
    )


def decimals(values: Iterable[float | None], least: int = 3, most: int = 8) -> int:
    """Decimal places that show the smallest positive of ``values`` with ``least``
    significant digits, at least ``least`` places and at most ``most``: an error of
    0.00612 prints as 0.00612, not 0.006."""
    positive = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    if not positive:
        return least
    return int(min(most, max(least, least - 1 - math.floor(math.log10(min(positive))))))


def pooled_horizons(models: Mapping[str, Any]) -> list[str]:
    """Every horizon (steps, the documents' keys) some model reports, shortest first:
    models of different horizons share one table."""
    return sorted({h for entry in models.values() for h in entry["pooled"]}, key=int)


# A sensor needs at least this share of the median scored count to be called the best
# or the worst: a sensor scored on three targets is not "the best sensor".
MIN_SCORED_SHARE = 0.5


@dataclass(frozen=True)
class Table:
    """A titled table of text cells.

    ``groups`` optionally spans the HTML header: ``(label, span)`` pairs covering the
    columns in order; a column under label ``""`` stands alone, the columns of a group
    are shown without the label prefix (``"15 min MAE"`` under ``"15 min"`` -> ``MAE``).
    Markdown and artifacts keep the flat column names.
    """

    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""
    groups: tuple[tuple[str, int], ...] = ()
    align_left: bool = False


def format_number(value: float | None, digits: int = 3, std: float | None = None) -> str:
    """``value`` with ``digits`` decimals (``± std`` when non-zero); ``n/a`` if missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if std:
        return f"{value:.{digits}f} ± {std:.{digits}f}"
    return f"{value:.{digits}f}"


def _coverage(metrics: Mapping[str, Any]) -> str:
    """``0.893 (0.742)``: coverage and its lowest hour; ``n/a`` without intervals."""
    value, worst = metrics.get("coverage"), metrics.get("coverage_worst_hour")
    if value is None or value != value:  # NaN
        return "n/a"
    return f"{value:.3f}" + ("" if worst is None or worst != worst else f" ({worst:.3f})")


def comparison_table(document: Mapping[str, Any], *, what: str) -> Table:
    """MAE, RMSE and MAPE (%) per model at each reported horizon (pooled over steps 1..h).

    Neural models trained with several seeds show mean ± sample std; extra columns
    (seeds, fit seconds, predict ms per window, TGC-LSTM's graph path per seed) appear
    when the document has them.
    """
    freq = float(document.get("freq_minutes", 5.0))
    models = document["models"]
    horizons = pooled_horizons(models)
    columns = ["model"]
    for h in horizons:
        label = horizon_label(h, freq)
        columns += [f"{label} MAE", f"{label} RMSE", f"{label} MAPE %"]
    extras = [
        (key, title)
        for key, title in (
            ("seeds", "seeds"),
            ("fit_seconds", "fit s"),
            ("predict_ms_per_window", "predict ms/window"),
            ("graph_path", "graph path per seed"),
        )
        if any(key in entry for entry in models.values())
    ]
    covered = any("coverage" in entry["pooled"].get(horizons[-1], {}) for entry in models.values())
    columns += [title for _, title in extras] + (["interval coverage"] if covered else [])
    columns += ["scored"]
    groups = (
        ("", 1),
        *((horizon_label(h, freq), 3) for h in horizons),
        *(("", 1) for _ in range(len(extras) + covered + 1)),
    )
    places = error_places(models)
    rows = []
    for name, entry in models.items():
        std = entry.get("std", {}).get("pooled", {})
        row = [name]
        for h in horizons:
            if h not in entry["pooled"]:  # beyond this model's horizon
                row += ["-", "-", "-"]
                continue
            m = entry["pooled"][h]
            s = std.get(h, {})
            row += [
                format_number(m.get("mae"), places, std=s.get("mae")),
                format_number(m.get("rmse"), places, std=s.get("rmse")),
                format_number(m.get("mape"), 2, std=s.get("mape")),
            ]
        for key, _ in extras:
            value = entry.get(key)
            if key == "seeds":
                row.append("n/a" if value is None else str(value))
            elif key == "graph_path":
                row.append(", ".join(p or "n/a" for p in value) if value else "")
            else:
                row.append(format_number(value, 1 if key == "fit_seconds" else 3))
        longest = max(entry["pooled"], key=int, default=None)
        last = entry["pooled"][longest] if longest is not None else {}
        if covered:
            row.append(_coverage(last))
        row.append(f"{int(last.get('count') or 0):,}")
        rows.append(row)
    note = (
        "Pooled over steps 1..h, original scale, missing targets not scored; MAPE skips "
        "targets within 1 of zero (zeros and near-zeros). 'scored' counts the targets "
        "at each model's longest horizon; '-': beyond a model's horizon."
        + (
            " 'interval coverage': the share of those targets inside the model's central "
            "90 % interval, and in brackets the lowest share of any hour of the day."
            if covered
            else ""
        )
    )
    return Table(f"Model comparison ({what})", columns, rows, note, groups=groups)


def reference_table(document: Mapping[str, Any]) -> Table | None:
    """The published rows of the document's data set in the comparison table's layout
    (:mod:`pipeline.data.published`), else None."""
    published = FORECASTS.get(str(document.get("dataset")))
    if published is None:
        return None
    freq = float(document.get("freq_minutes", 5.0))
    horizons = sorted({h for values in published.rows.values() for h in values})
    columns = ["model"]
    for h in horizons:
        label = horizon_label(h, freq)
        columns += [f"{label} MAE", f"{label} RMSE", f"{label} MAPE %"]
    rows = []
    for name, values in published.rows.items():
        row = [name]
        for h in horizons:
            if h not in values:
                row += ["n/a", "n/a", "n/a"]
                continue
            rmse, mae = values[h]
            row += [f"{mae:.4g}", f"{rmse:.4g}", "n/a"]
        rows.append(row)
    groups = (("", 1), *((horizon_label(h, freq), 3) for h in horizons))
    return Table(
        f"Published reference ({published.dataset})",
        columns,
        rows,
        f"Source: {published.source}",
        groups,
    )


def sensor_scores(
    backtest: Backtest, sensor_ids: Sequence[str], *, steps: int | None = None
) -> pd.DataFrame:
    """Per-sensor MAE, RMSE and MAPE of one backtest, pooled over steps ``1..steps``
    (default: every step).

    Columns ``sensor, n, mae, rmse, mape`` (one row per sensor, NaN where nothing
    was scored).
    """
    actual = backtest.actual[:, :steps]
    predicted = np.where(
        np.isfinite(actual), backtest.forecast.mean[:, :steps], 0.0
    )  # [n, h, node]
    rows = []
    for j, sensor in enumerate(sensor_ids):
        m = error_metrics(actual[..., j], predicted[..., j])
        rows.append(
            {"sensor": sensor, "n": m["count"], "mae": m["mae"], "rmse": m["rmse"],
             "mape": m["mape"]}
        )  # fmt: skip
    return pd.DataFrame(rows, columns=["sensor", "n", "mae", "rmse", "mape"])


def best_and_worst(scores: pd.DataFrame) -> tuple[int, int] | None:
    """Row positions of the sensors with the lowest and the highest RMSE (among those
    scored on at least :data:`MIN_SCORED_SHARE` of the median count), or None."""
    scored = scores[np.isfinite(scores["rmse"]) & (scores["n"] > 0)]
    if scored.empty:
        return None
    enough = scored[scored["n"] >= MIN_SCORED_SHARE * scored["n"].median()]
    pool = enough if not enough.empty else scored
    order = pool.sort_values(["rmse", "sensor"], kind="stable")
    return int(order.index[0]), int(order.index[-1])


def worst_sensors_table(scores: pd.DataFrame, model: str, *, top: int = 10) -> Table:
    """The ``top`` sensors with the largest RMSE in ``scores`` (:func:`sensor_scores`)."""
    worst = scores.sort_values("rmse", ascending=False, kind="stable").head(top)
    return Table(
        f"Sensors with the largest {model} errors",
        ["sensor", "RMSE", "MAE", "MAPE %", "scored"],
        [
            [r.sensor, format_number(r.rmse), format_number(r.mae), format_number(r.mape, 2),
             f"{r.n:,}"]
            for r in worst.itertuples(index=False)
            if math.isfinite(r.rmse)
        ],
    )  # fmt: skip


def alerts_tables(alerts: Sequence[Any], *, latest: int = 30) -> list[Table]:
    """A summary (per detector, severity and status) and the latest state changes."""
    if not alerts:
        return [Table("Alerts in the period", ["alerts"], [["none"]])]
    frame = pd.DataFrame(
        {
            "detector": [a.detector for a in alerts],
            "severity": [a.severity for a in alerts],
            "status": [a.status for a in alerts],
            "sensor": [a.sensor for a in alerts],
        }
    )
    counts = (
        frame.groupby(["detector", "severity", "status"]).agg(
            changes=("sensor", "size"), sensors=("sensor", "nunique")
        )
    ).reset_index()
    summary = Table(
        "Alerts in the period",
        ["detector", "severity", "status", "changes", "sensors"],
        [[str(v) for v in row] for row in counts.itertuples(index=False)],
        f"{len(alerts):,} alert state changes on {frame['sensor'].nunique()} sensors.",
    )
    rows = []
    for a in sorted(alerts, key=lambda a: a.ts, reverse=True)[:latest]:
        rows.append(
            [a.ts.strftime("%Y-%m-%d %H:%M"), a.sensor, a.detector, a.severity, a.status,
             format_number(a.score, 2), format_number(a.observed, 2), format_number(a.expected, 2)]
        )  # fmt: skip
    recent = Table(
        f"Latest {len(rows)} alert state changes",
        ["time (UTC)", "sensor", "detector", "severity", "status", "score", "observed",
         "expected"],
        rows,
    )  # fmt: skip
    return [summary, recent]


def claims_rows(document: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Each model against the validation champion per horizon (the paired test's verdict
    and the p-value it uses: the Holm-adjusted one when the document has it), then the
    champion's regret: for terminals and reports."""
    champion = document.get("champion")
    significance = document.get("significance") or {}
    regret = document.get("regret") or {}
    if not champion or not (significance or regret):
        return [], []
    freq = float(document.get("freq_minutes", 5.0))
    horizons = list(regret) or list(next(iter(significance.values())))
    columns = ["model", *(horizon_label(h, freq) for h in horizons)]
    rows = []
    for name, tests in significance.items():
        cells = []
        for h in horizons:
            test = tests.get(h) or {}
            p = test.get("p_value_adjusted", test.get("p_value"))
            reason = test.get("verdict_reason")
            if p is None or not math.isfinite(p):
                cells.append(f"n/a ({reason})" if reason else "n/a")
                continue
            verdict = str(test.get("verdict", ""))
            if verdict.startswith("ahead"):
                text = "ahead of the champion"
            elif verdict.startswith("behind"):
                text = "champion ahead"
            else:
                text = "no significant difference"
            cells.append(f"{text} ({p_text(p)}{'; ' + reason if reason else ''})")
        rows.append([name, *cells])
    rows.append(
        [
            f"regret of {champion} (champion)",
            *(
                f"{regret[h]['regret']:.3f} (best: {regret[h]['best']})" if h in regret else "n/a"
                for h in horizons
            ),
        ]
    )
    return columns, rows


def claims_table(document: Mapping[str, Any]) -> Table | None:
    """:func:`claims_rows` as a report table (None without a champion)."""
    columns, rows = claims_rows(document)
    if not rows:
        return None
    return Table(
        f"Against the champion ({document.get('champion')})",
        columns,
        rows,
        "Per horizon, a Diebold-Mariano test of each model's per-window loss (squared error "
        "pooled over steps 1..h and sensors, mean over seeds) against the champion's over "
        "the same test windows, with an equal-weighted cosine variance (Lazarus et al. 2018) "
        "whose degrees of freedom allow for the overlap of windows, against t; two-sided, "
        f"'ahead' or 'champion ahead' at p < 0.05{_adjustment_note(document)}. Regret: the "
        "champion's test RMSE over the best model's (1 = validation chose the test's best)."
        + (f" {note[6:].capitalize()}." if (note := one_seed_note(document)) else ""),
    )


def one_seed_note(document: Mapping[str, Any]) -> str | None:
    """A caveat when a neural model of the claims table was fitted with one seed: its
    verdicts compare that fit on these test windows, not the method (None otherwise)."""
    from models.forecasters.factory import is_stochastic
    from models.forecasters.registry import MODELS

    named = {*(document.get("significance") or {}), document.get("champion")}
    models = document.get("models") or {}
    single = sorted(
        n
        for n in named
        if n in models and n in MODELS and is_stochastic(n) and models[n].get("seeds") == 1
    )
    if not single:
        return None
    return (
        f"note: one seed of {', '.join(single)}: a verdict above compares that one fit on "
        "these test windows; another seed can move a small difference either way (train "
        "with --seeds 3 to see the spread)"
    )


def _adjustment_note(document: Mapping[str, Any]) -> str:
    """How the claims table's p-values were adjusted ('' for documents before adjusting)."""
    tests = [t for ts in (document.get("significance") or {}).values() for t in ts.values()]
    if not any("p_value_adjusted" in t for t in tests):
        return ""
    return (
        ", p Holm-adjusted over every model and horizon of this table (raw p-values in "
        "metrics.json), and only when every seed of both models is on the same side "
        "(else 'seeds disagree')"
    )


def tuning_table(document: Mapping[str, Any]) -> Table | None:
    """The settings ``--tune`` chose per model (None when nothing was tuned)."""
    tuning = document.get("tuning")
    if not tuning:
        return None
    rows = []
    for name, entry in tuning.items():
        params = {k: v for k, v in entry["params"].items() if k != "train"}
        params.update(entry["params"].get("train", {}))
        settings = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
        )
        rows.append(
            [
                name,
                settings,
                format_number(entry.get("best_valid_rmse")),
                f"{entry['trials']} ({entry['completed']} done, {entry['pruned']} pruned)",
                format_number(entry.get("seconds"), 0),
            ]
        )
    return Table(
        "Settings chosen by --tune (validation part only)",
        ["model", "settings", "validation RMSE", "trials", "seconds"],
        rows,
        "Optuna TPE search, trials pruned on their validation curves (median rule); the "
        "test part was not read.",
        align_left=True,
    )
