"""The demo's ``report.md`` and ``error_by_horizon.png``, written from its summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flows.reporting.plots import draw_literally
from flows.reporting.tables import lead_label
from flows.reporting.text import markdown_table, markdown_text


def pace(speedup: float) -> str:
    """How fast a replay ran, in words."""
    return "as fast as possible" if speedup == 0 else f"at {speedup:g}x real time"


def write_report(summary: dict[str, Any], out: Path) -> Path:
    """``OUT/report.md`` and ``OUT/error_by_horizon.png`` from a demo summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    accuracy = summary["accuracy"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for model, per in accuracy.items():
        steps = sorted(per, key=int)
        minutes = [per[s]["minutes"] for s in steps]
        ax.plot(minutes, [per[s]["mae"] for s in steps], marker="o", label=model)
    ax.set_xlabel("lead time (minutes)")
    ax.set_ylabel("MAE (live stream)")
    ax.set_title(f"{summary['data']}: live forecast error by lead time")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    draw_literally(fig)
    fig.savefig(out / "error_by_horizon.png", dpi=110)
    plt.close(fig)
    latency = summary["latency_ms"]
    counts = [
        f"{summary['readings_produced']:,}",
        f"{summary['readings_valid']:,}",
        f"{summary['dead_lettered']:,}",
        str(summary["lost"]),
        f"{summary['ticks']:,}",
        f"{summary['forecasts_published']:,}",
        f"{summary['alerts_published']:,}",
        f"{latency['p50']} / {latency['p99']} ms",
    ]
    header = ["produced", "valid", "dead-lettered", "lost", "ticks", "forecasts", "alerts"]
    lines = [
        f"# roadcast demo: {markdown_text(summary['data'])}",
        "",
        f"{summary['sensors']} sensors, ticks {summary['first_tick']} .. {summary['last_tick']}, "
        f"replayed {pace(summary['speedup'])}; models: {', '.join(summary['models'])}.",
        "",
        markdown_table([*header, "latency p50 / p99"], [counts], numbers_right=True),
        "",
        "## Live accuracy (each forecast scored when its target tick closed)",
        "",
    ]
    steps = sorted({int(s) for per in accuracy.values() for s in per})
    shown = [s for s in steps if s in (1, 3, 6, 9, 12)] or steps
    lead_minutes = {int(s): m["minutes"] for per in accuracy.values() for s, m in per.items()}
    rows = [
        [model] + [
            f"{per[str(s)]['mae']:.3f} / {per[str(s)]['rmse']:.3f}" if str(s) in per else "-"
            for s in shown
        ]
        for model, per in accuracy.items()
    ]  # fmt: skip
    columns = ["model"] + [f"{lead_label(lead_minutes[s])} MAE / RMSE" for s in shown]
    lines.append(markdown_table(columns, rows, numbers_right=True))
    if summary.get("versus_persistence"):
        lines += ["", summary["versus_persistence"]]
    lines += ["", "![error by lead time](error_by_horizon.png)", "", *_alert_lines(summary)]
    lines += [
        "",
        f"Training {summary['train_s']:.0f} s, streaming {summary['stream_s']:.0f} s, "
        f"total {summary['wall_s']:.0f} s.",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def _alert_lines(summary: dict[str, Any]) -> list[str]:
    alerts = summary.get("alerts")
    if not alerts:
        return []
    lines = [
        "## Anomaly alerts",
        "",
        f"{alerts['firing']} firing and {alerts['resolved']} resolved messages: "
        f"{alerts['episodes']} alert episodes in {alerts['incidents']} incidents "
        "(forecast-interval detector, default alert rules).",
        "",
    ]
    matching = alerts.get("labelled_events")
    if matching:
        lines += [
            f"Labelled events in the replayed part: {matching['events']}, found "
            f"{matching['found']} (recall {matching['recall']}); episodes matching an event "
            f"{matching['episodes_matching_an_event']} of {alerts['episodes']} "
            f"(precision {matching['precision']}).",
            "",
        ]
    if alerts["latest"]:
        rows = [
            [a["ts"], a["status"], a["sensor"], a["severity"], f"{a['score']:.4f}",
             a["incident"] or "-"]
            for a in alerts["latest"]
        ]  # fmt: skip
        columns = ["time (UTC)", "status", "sensor", "severity", "score", "incident"]
        lines += [markdown_table(columns, rows), ""]
    return lines
