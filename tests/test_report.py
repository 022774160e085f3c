"""The forecast report's pieces without Prefect: tables (MAPE, reference rows), per-sensor
errors and the best/worst choice, the map, rendering; the stable artifact keys."""

from __future__ import annotations

import base64
import re

import numpy as np
import pandas as pd
import pytest

from flows.artifacts import KEYS, check_key
from flows.reporting.build import build_report
from flows.reporting.render import comparison_records, render_html, render_markdown, write_report
from flows.reporting.tables import (
    best_and_worst,
    comparison_table,
    reference_table,
    sensor_scores,
)
from flows.reporting.text import markdown_table
from models.forecasters.base import BatchForecast
from models.forecasters.evaluation import Backtest
from models.metrics import score_batch
from models.panel import SensorPanel
from pipeline.data.published import LOS_LOOP
from pipeline.service.store_reads import AlertChange


def _panel(n: int = 60, nodes: int = 4, coords: bool = True) -> SensorPanel:
    t = np.arange(n)
    values = 50 + 5 * np.sin(t / 6)[:, None] + np.arange(nodes)[None, :]  # [time, node]
    stamps = pd.date_range("2024-03-04", periods=n, freq="5min", tz="UTC")
    xy = np.c_[34.0 + 0.01 * np.arange(nodes), -118.2 + 0.02 * np.arange(nodes)]
    return SensorPanel.from_values(
        values, stamps, [f"s{i}" for i in range(nodes)], coords=xy if coords else None,
        name="toy",
    )  # fmt: skip


def _backtest(panel: SensorPanel, name: str, bias: np.ndarray, horizon: int = 3) -> Backtest:
    """Forecasts equal to the actual values plus a per-sensor ``bias`` (known errors)."""
    origins = np.arange(5, panel.n_time - horizon, dtype=np.int64)
    steps = origins[:, None] + np.arange(1, horizon + 1)[None, :]  # [n, h]
    actual = panel.values[steps]  # [n, h, node]
    mean = (actual + bias[None, None, :]).astype(np.float32)
    forecast = BatchForecast(name, origins, mean, mean - 1, mean + 1)
    return Backtest(score_batch(actual, mean, (3,)), forecast, actual, panel.timestamps, 0.1, 0.2)


def _document(backtests: dict[str, Backtest]) -> dict:
    models = {}
    for name, bt in backtests.items():
        curve = score_batch(bt.actual, bt.forecast.mean, (1, 2, 3))["step"]
        models[name] = {
            "pooled": bt.metrics["pooled"],
            "step": bt.metrics["step"],
            "curve": {k: [curve[s][k] for s in ("1", "2", "3")] for k in ("mae", "rmse")},
        }
    return {"dataset": "toy", "freq_minutes": 5.0, "horizon": 3, "models": models}


@pytest.fixture
def world():
    panel = _panel()
    backtests = {
        "good": _backtest(panel, "good", np.array([0.1, 0.5, 2.0, 0.3])),
        "bad": _backtest(panel, "bad", np.array([3.0, 3.0, 3.0, 3.0])),
    }
    return panel, backtests, _document(backtests)


def test_comparison_table_has_mae_rmse_mape_per_horizon(world):
    _, _, document = world
    document["models"]["good"]["std"] = {"pooled": {"3": {"mae": 0.01, "rmse": 0.02}}}
    document["models"]["good"]["seeds"] = 3
    table = comparison_table(document, what="test part")
    assert table.columns == ["model", "15 min MAE", "15 min RMSE", "15 min MAPE %", "seeds",
                             "scored"]  # fmt: skip
    good, bad = table.rows
    assert good[1].endswith("± 0.010") and good[4] == "3" and bad[4] == "n/a"
    assert bad[2] == "3.000" and float(bad[3]) == pytest.approx(
        document["models"]["bad"]["pooled"]["3"]["mape"], abs=0.01
    )
    assert reference_table(document) is None
    document["dataset"] = "los-loop"
    reference = reference_table(document)
    assert [r[0] for r in reference.rows] == list(LOS_LOOP.rows)
    assert reference.rows[0][1:3] == ["3.18", "5.126"]  # T-GCN 15 min MAE, RMSE


def test_sensor_scores_and_best_worst(world):
    panel, backtests, _ = world
    scores = sensor_scores(backtests["good"], panel.sensor_ids)
    np.testing.assert_allclose(scores["rmse"], [0.1, 0.5, 2.0, 0.3], rtol=1e-4)
    assert best_and_worst(scores) == (0, 2)
    # a sensor scored on far fewer targets than the others is neither best nor worst
    thin = scores.copy()
    thin.loc[0, "n"] = 2
    assert best_and_worst(thin) == (3, 2)
    assert best_and_worst(scores.assign(rmse=np.nan)) is None


def test_report_sections_figures_and_escaping(world, tmp_path):
    panel, backtests, document = world
    alerts = [
        AlertChange("s2:x@1", "firing", "critical", "s2", panel.timestamps[30], "x", 0.999,
                    80.0, 52.0),
    ]  # fmt: skip
    report = build_report(
        title="Live <report>", what="live", document=document, backtests=backtests,
        panel=panel, champion="good", facts=[("data", "toy & co")], intro="How.",
        coords=panel.coords, alerts=alerts, provenance=[("store", "/x")],
    )  # fmt: skip
    assert [f.name for f in report.figures] == ["error_by_horizon", "forecasts", "network_map"]
    caption = report.figures[1].caption
    steps = backtests["good"].forecast.mean.shape[1]
    assert (
        f"erred least and most over the whole horizon (RMSE pooled over its {steps} steps: "
        "0.1 and 2)" in caption
    )
    page = render_html(report)
    assert "Live &lt;report&gt;" in page and "toy &amp; co" in page
    assert not re.search(r"(src|href)=['\"]https?:", page)  # self-contained
    images = [base64.b64decode(i.split("'")[0]) for i in page.split("base64,")[1:]]
    assert len(images) == 3 and all(i.startswith(b"\x89PNG") for i in images)
    assert "<tr class='champion'><td>good</td>" in page
    md, html_path = write_report(tmp_path, report)
    text = md.read_text()
    assert "![network_map](figures/network_map.png)" in text
    assert "| 2024-03-04 02:30 | s2 | x | critical | firing |" in text
    assert (tmp_path / "figures" / "forecasts.png").is_file() and html_path.is_file()
    assert "![" not in render_markdown(report)  # artifact form: no image links
    records = comparison_records(report)
    assert [r["model"] for r in records] == ["good", "bad"]


def test_report_without_coordinates_or_scored_forecasts(world):
    panel, backtests, document = world
    plain = _panel(coords=False)
    report = build_report(
        title="t", what="w", document=document, backtests=backtests, panel=plain,
        champion=None, facts=[], intro="", coords=None,
    )  # fmt: skip
    assert [f.name for f in report.figures] == ["error_by_horizon", "forecasts"]
    assert any("no map" in n for n in report.notes)
    assert dict(report.facts)["champion"] == "none promoted"
    # no champion: the lowest error here picks the sensors
    assert "good's" in report.figures[1].caption
    empty = {name: _backtest(panel, name, np.zeros(4)) for name in ("m",)}
    bare = Backtest(
        empty["m"].metrics, BatchForecast("m", np.empty(0, np.int64),
                                          np.empty((0, 3, 4), np.float32)),
        np.empty((0, 3, 4), np.float32), panel.timestamps, float("nan"), float("nan"),
    )  # fmt: skip
    report = build_report(
        title="t", what="w", document=_document(empty), backtests={"m": bare}, panel=panel,
        champion="m", facts=[], intro="",
    )  # fmt: skip
    assert [f.name for f in report.figures] == ["error_by_horizon"]
    assert any("No forecast was scored" in n for n in report.notes)


def test_artifact_keys_are_stable_and_valid():
    assert all(check_key(k) == k for k in KEYS.values())
    assert len(set(KEYS.values())) == len(KEYS)
    for bad in ("Roadcast", "roadcast_live", "roadcast--x", "-x", ""):
        with pytest.raises(ValueError, match="lowercase"):
            check_key(bad)


def test_markdown_table_escapes_pipes_and_aligns_numbers():
    assert markdown_table(["a", "b"], [["x|y", "1"]]) == "| a | b |\n|---|---|\n| x\\|y | 1 |"
    right = markdown_table(["model", "MAE", "RMSE"], [["ar", "1.0", "2.0"]], numbers_right=True)
    assert right.splitlines()[1] == "|---|---:|---:|"


def test_a_new_report_leaves_no_figure_of_an_earlier_one(tmp_path):
    from flows.report_flow import write_outputs
    from flows.reporting.build import Figure, Report
    from flows.reporting.tables import Table

    def report(*names: str) -> Report:
        figures = [Figure(n, n, "", b"\x89PNG") for n in names]
        return Report("r", [], "", Table("t", ["a"], [["1"]]), None, figures, [])

    errors = pd.DataFrame({"sensor": ["a"]})
    write_outputs.fn(str(tmp_path), report("old", "kept"), {}, errors)
    write_outputs.fn(str(tmp_path), report("kept"), {}, errors)
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["kept.png"]


def test_claims_table_shows_the_p_value_its_verdict_uses_and_why():
    from flows.reporting.tables import claims_table

    def test(p: float | None, adjusted: float | None, verdict: str, **extra) -> dict:
        return {"p_value": p, "p_value_adjusted": adjusted, "verdict": verdict, **extra}

    document = {
        "champion": "lstm",
        "freq_minutes": 5.0,
        "significance": {
            "ar": {
                "3": test(0.02, 0.06, "no significant difference", verdict_reason=None),
                "12": test(1e-4, 4e-4, "behind (p < 0.05)", verdict_reason=None),
            },
            "gru": {
                "3": test(0.001, 0.004, "no significant difference",
                          verdict_reason="seeds disagree"),
                "12": test(None, float("nan"), "no significant difference",
                           verdict_reason="too few windows (40 < 94)"),
            },
        },
        "regret": {"3": {"regret": 1.0, "best": "lstm"}, "12": {"regret": 1.0, "best": "lstm"}},
    }  # fmt: skip
    table = claims_table(document)
    assert table is not None
    ar, gru = table.rows[0], table.rows[1]
    assert ar[1:] == ["no significant difference (p = 0.06)", "champion ahead (p = 0.0004)"]
    assert gru[1:] == [
        "no significant difference (p = 0.004; seeds disagree)",
        "n/a (too few windows (40 < 94))",
    ]
    assert "Holm-adjusted over every model and horizon" in table.note
    assert "seeds disagree" in table.note
    # a metrics.json written before the adjustment: its raw p-values, no Holm in the note
    for tests in document["significance"].values():
        for entry in tests.values():
            del entry["p_value_adjusted"], entry["verdict_reason"]
    old = claims_table(document)
    assert old is not None and old.rows[0][1] == "no significant difference (p = 0.02)"
    assert "Holm" not in old.note


def test_verdicts_about_a_one_seed_neural_fit_carry_a_caveat():
    """A neural model fitted with one seed: its verdicts compare that fit, not the
    method; the report's caption and `roadcast train` say so. Deterministic models and
    several seeds need no caveat."""
    from flows.reporting.tables import claims_table, one_seed_note

    test = {"p_value": 0.001, "p_value_adjusted": 0.002, "verdict": "behind (p < 0.05)"}
    document = {
        "champion": "tgclstm",
        "significance": {"lstm": {"3": test}, "ar": {"3": test}},
        "regret": {"3": {"regret": 1.0, "best": "tgclstm"}},
        "models": {"tgclstm": {"seeds": 1}, "lstm": {"seeds": 1}, "ar": {"seeds": 1}},
    }
    note = one_seed_note(document)
    assert note is not None and "one seed of lstm, tgclstm:" in note
    table = claims_table(document)
    assert table is not None and "One seed of lstm, tgclstm" in table.note
    for seeds in (2, 3):
        several = {**document, "models": {n: {"seeds": seeds} for n in ("tgclstm", "lstm")}}
        assert one_seed_note(several) is None
    deterministic = {**document, "champion": "ar", "significance": {"persistence": {"3": test}}}
    deterministic["models"] = {"ar": {"seeds": 1}, "persistence": {"seeds": 1}}
    assert one_seed_note(deterministic) is None
