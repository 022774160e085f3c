"""Ids, labels and file names from users' data are shown as written: never read as Rich
markup on terminals, as Markdown or HTML in reports and artifacts, or as mathtext in
figures."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from flows.cli import app
from flows.reporting.text import csv_safe, markdown_table, markdown_text

# Rich markup (one that crashes, two that silently vanish) and an emoji code.
RICH_HOSTILE = ["[/bold]", "[red]red[/red]", "[x](y)", ":smile:"]
MARKDOWN_HOSTILE = [
    "<img src=x onerror=alert(2)>",
    "<script>alert(1)</script>",
    "**bold**",
    "`code`",
    "a\\|b",
    "a|b",
    "[x](y)",
    "![i](j)",
    "# h #",
    "_u_ ~~s~~ $m$",
    "&lt;",
    "back\\",
    "two\nlines",
]
BAD_MATH = r"$\nosuch{$"
WIDE = {"COLUMNS": "250"}


def _shown(output: str, texts: list[str]) -> None:
    """Each of ``texts`` appears in ``output`` as written (a table title may wrap a long
    path over lines: spaces and line breaks are not compared)."""
    flat = "".join(output.split())
    for text in texts:
        assert "".join(text.split()) in flat, f"{text!r} not shown as written in:\n{output}"


# ------------------------------------------------------------------------ terminal


def test_status_shows_hostile_sensor_and_model_names_as_written(tmp_path: Path) -> None:
    from flows.status import print_status
    from pipeline.service.liveness import DOWN_KEY
    from pipeline.service.store import Store
    from pipeline.service.store_rows import AccuracyRows, Batch

    path = tmp_path / "[red]s.sqlite"
    with Store(path) as store:
        store.write(
            Batch(
                counters={"consumed": 1},
                state={DOWN_KEY: json.dumps({sensor: 0 for sensor in RICH_HOSTILE})},
                accuracy=[
                    AccuracyRows(
                        "[/bold]", np.array([1]), np.array([300_000]), np.array([1]),
                        np.array([1.0]), np.array([1.0]),
                    )
                ],
            )
        )  # fmt: skip
    console = Console(file=io.StringIO(), width=200)
    print_status(path, console=console)
    _shown(console.file.getvalue(), [*RICH_HOSTILE, "[red]s.sqlite"])


def test_alerts_lists_hostile_sensors_detectors_and_reasons_as_written(tmp_path: Path) -> None:
    from pipeline.service.store import Store
    from pipeline.service.store_rows import AlertRow, Batch

    path = tmp_path / "s.sqlite"
    payload = json.dumps({"reason": "[x](y)"})
    row = AlertRow("a1", "firing", "k", "warning", "[/bold]", 0, "[red]red[/red]", 1.0, payload)
    with Store(path) as store:
        store.write(Batch(alerts=[row]))
    result = CliRunner().invoke(app, ["alerts", "--store", str(path)], env=WIDE)
    assert result.exit_code == 0, result.output
    _shown(result.output, ["[/bold]", "[red]red[/red]", "[x](y)"])


def test_models_list_shows_hostile_labels_as_written(tmp_path: Path) -> None:
    from models.forecasters.baselines import Persistence
    from pipeline.data.simulate import simulate_network
    from pipeline.registry.versions import register

    panel = simulate_network(sensors=3, days=1, seed=1, faults_per_day=0.0, dropout=0.0)
    for i, label in enumerate(RICH_HOSTILE):
        model = Persistence(window=3, horizon=2).fit(panel.slice(0, 50 + i))
        register(tmp_path, model, label=label, run_id=f"run-{i}")
    result = CliRunner().invoke(app, ["models", "list", "--models", str(tmp_path)], env=WIDE)
    assert result.exit_code == 0, result.output
    _shown(result.output, RICH_HOSTILE)


def test_data_info_titles_a_hostile_file_name_as_written(tmp_path: Path) -> None:
    stamps = pd.date_range("2024-01-01", periods=24, freq="5min")
    frame = pd.DataFrame({"time": stamps, "s1": np.arange(24.0), "s2": np.arange(24.0)})
    frame.to_csv(tmp_path / "[red]evil.csv", index=False)
    result = CliRunner().invoke(
        app, ["data", "info", f"csv:{tmp_path / '[red]evil.csv'}"], env=WIDE
    )
    assert result.exit_code == 0, result.output
    _shown(result.output, ["[red]evil"])


def test_demo_tables_show_hostile_names_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    from flows.demo.console import live_table, print_summary

    accuracy = {"[/bold]": {1: {"mae": 1.0}}, "[red]red[/red]": {1: {"mae": 2.0}}}
    console = Console(file=io.StringIO(), width=200)
    console.print(live_table({"accuracy": accuracy}, 1, 2, (1,)))
    _shown(console.file.getvalue(), ["MAE [/bold]", "MAE [red]red[/red]"])

    numbers = dict.fromkeys(
        ["sensors", "readings_produced", "readings_valid", "dead_lettered", "lost", "ticks",
         "forecasts_published", "alerts_published", "latency_ms", "wall_s"],
        1,
    )  # fmt: skip
    print_summary({**numbers, "data": "csv:[x](y)", "models": "[/bold]", "accuracy": {}})
    _shown(capsys.readouterr().out, ["csv:[x](y)", "[/bold]"])


# ------------------------------------------------------------------------ Markdown


def _rendered_cells(markdown: str) -> list[str]:
    """The text of every table cell as a CommonMark + GFM-tables renderer shows it."""
    markdown_it = pytest.importorskip("markdown_it")
    parser = markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"])
    cells = []
    for token in parser.parse(markdown):
        if token.type == "inline" and token.children is not None:
            assert {c.type for c in token.children} <= {"text"}, token.children
            cells.append("".join(c.content for c in token.children))
    return cells


def test_markdown_table_cells_render_as_the_ids_themselves() -> None:
    table = markdown_table(["sensor"], [[text] for text in MARKDOWN_HOSTILE])
    assert "<script" not in table and "<img" not in table
    assert len(table.splitlines()) == len(MARKDOWN_HOSTILE) + 2  # line breaks stay in a row
    assert _rendered_cells(table) == ["sensor", *MARKDOWN_HOSTILE]


def test_markdown_text_escapes_html_backslashes_and_specials() -> None:
    assert markdown_text("<b>&") == "&lt;b&gt;&amp;"
    assert markdown_text("a\\|b") == "a\\\\\\|b"
    assert markdown_text("**x** `y` [z] #") == "\\*\\*x\\*\\* \\`y\\` \\[z\\] \\#"
    assert markdown_text("15 min MAE 5.339 ± 0.012") == "15 min MAE 5.339 ± 0.012"


def test_report_markdown_and_artifact_escape_every_text() -> None:
    from flows.reporting.build import Report
    from flows.reporting.render import artifact_markdown, render_html, render_markdown
    from flows.reporting.tables import Table

    hostile = "<script>alert(1)</script> **b** a\\|b"
    table = Table(f"Sensors of {hostile}", ["sensor"], [[hostile]], note=hostile)
    report = Report(
        title=f"Forecast comparison: csv:{hostile}",
        facts=[("data set", hostile)],
        intro="intro",
        comparison=table,
        reference=None,
        figures=[],
        tables=[],
        notes=[hostile],
        provenance=[("output", hostile)],
    )
    text = artifact_markdown(report, f"out/{hostile}/report.html")
    assert "<script" not in text and "**b**" not in text and "a\\\\|b" not in text
    assert "&lt;script&gt;" in render_html(report)  # the HTML page escapes as before
    parser = pytest.importorskip("markdown_it").MarkdownIt("commonmark").enable("table")
    page = parser.render(render_markdown(report))
    assert "<script>" not in page and page.count("<strong>") == 1  # the fact's own name
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt; **b** a\\|b") == 7


# ------------------------------------------------------------------------ figures


def test_figure_texts_from_data_are_drawn_literally() -> None:
    from matplotlib.figure import Figure
    from matplotlib.text import Text

    from flows.reporting.plots import draw_literally

    fig = Figure()
    ax = fig.subplots()
    points = ax.scatter([0, 1], [0, 1], c=[0, 1], label=BAD_MATH)
    ax.set_title(f"sensor {BAD_MATH}")
    ax.annotate(BAD_MATH, (0, 0))
    ax.legend()
    fig.colorbar(points, ax=ax, label=BAD_MATH)
    fig.suptitle("$x^2$")
    draw_literally(fig)
    fig.savefig(io.BytesIO(), format="png")  # mathtext would raise ParseFatalException
    texts = [t for t in fig.findobj(Text) if "$" in t.get_text()]
    assert len(texts) == 5 and not any(t.get_parse_math() for t in texts)


def test_best_worst_plot_titles_a_mathtext_sensor_id_without_error() -> None:
    from flows.reporting.plots import plot_best_worst
    from models.forecasters.base import BatchForecast
    from models.forecasters.evaluation import Backtest
    from models.metrics import score_batch
    from models.panel import SensorPanel

    stamps = pd.date_range("2024-03-04", periods=40, freq="5min", tz="UTC")
    values = 50 + np.arange(40.0)[:, None] + np.arange(2.0)[None, :]
    panel = SensorPanel.from_values(values, stamps, ["s1", BAD_MATH])
    origins = np.arange(5, 37, dtype=np.int64)
    actual = panel.values[origins[:, None] + np.arange(1, 4)[None, :]]
    forecast = BatchForecast("persistence", origins, actual, actual - 1, actual + 1)
    backtest = Backtest(score_batch(actual, actual, (3,)), forecast, actual, stamps, 0.1, 0.2)
    png = plot_best_worst(panel, backtest, [(0, "best"), (1, "worst")], step=3, freq_minutes=5)
    assert png.startswith(b"\x89PNG")


def test_influence_map_draws_a_mathtext_sensor_id_without_error(tmp_path: Path) -> None:
    from flows.explain import draw_influence_map, explain, influence_table
    from models.forecasters.tgclstm import TGCLSTM
    from models.nn.training import TrainConfig
    from models.panel import SensorPanel
    from pipeline.data.graph import RoadGraph

    n, steps = 4, 120
    t = np.arange(steps)[:, None]
    values = 60 - 15 * np.sin(2 * np.pi * (t - 3 * np.arange(n)[None, :]) / 48)
    src = np.arange(n)
    xy = np.stack([34 + 0.01 * np.cos(src), -118 + 0.01 * np.sin(src)], 1)
    graph = RoadGraph.from_coordinates(xy, src, (src + 1) % n, both_directions=True)
    stamps = pd.date_range("2024-01-01", periods=steps, freq="5min", tz="UTC")
    ids = ["=HYPERLINK(1)", BAD_MATH, "[/bold]", "$x$"]
    panel = SensorPanel.from_values(values, stamps, ids, graph=graph, coords=xy)
    model = TGCLSTM(
        train=TrainConfig(epochs=1, progress=False, device="cpu"),
        hidden=4, graph_hidden=2, embed=2, window=6, horizon=2,
    ).fit(panel)  # fmt: skip
    table = influence_table(model, sensor=BAD_MATH, top=3)
    draw_influence_map(model, table, tmp_path / "map.png", sensor=BAD_MATH)
    assert (tmp_path / "map.png").read_bytes().startswith(b"\x89PNG")
    model.save(tmp_path / "bundle")
    written = explain(tmp_path / "bundle", out=tmp_path / "out", top=3).csv.read_text()
    assert "'=HYPERLINK(1)" in written and "\n=" not in written and ",=" not in written


def test_csv_cells_a_spreadsheet_would_run_are_shown_as_written() -> None:
    frame = pd.DataFrame(
        {"sensor": ["=1+1", "+cmd", "@sum", "-x", "-1.5", "\tx", "ok", None], "v": range(8)}
    )
    safe = csv_safe(frame)
    assert list(safe["sensor"][:7]) == ["'=1+1", "'+cmd", "'@sum", "'-x", "-1.5", "'\tx", "ok"]
    assert pd.isna(safe["sensor"][7]) and list(safe["v"]) == list(range(8))
    assert frame["sensor"][0] == "=1+1"  # the caller's frame is left alone
