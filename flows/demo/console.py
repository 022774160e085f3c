"""The demo on the terminal: the live view while it streams and the summary table after."""

from __future__ import annotations

from typing import Any


def live_table(
    snapshot: dict[str, Any] | None, produced: int, expected: int, steps: tuple[int, ...]
) -> Any:
    """The live view (a rich table): readings produced, the service's counters, tick
    latency and MAE per model at the lead ``steps``, from a store ``snapshot``."""
    from rich.table import Table

    from flows.reporting.text import literal

    counters = (snapshot or {}).get("counters", {})
    latency = (snapshot or {}).get("latency_ms", {})
    table = Table(title="roadcast demo: live", show_edge=False)
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("readings produced", f"{produced:,} / {expected:,}")
    for name in (
        "consumed",
        "valid",
        "dead_lettered",
        "late",
        "ticks_closed",
        "forecasts_published",
        "alerts_published",
    ):
        table.add_row(name.replace("_", " "), f"{counters.get(name, 0):,}")
    if latency.get("count"):
        table.add_row("tick latency p50 / p99", f"{latency['p50']:.0f} / {latency['p99']:.0f} ms")
    for model, per in sorted((snapshot or {}).get("accuracy", {}).items()):
        cells = [f"h{s} {per[s]['mae']:.2f}" for s in steps if s in per]
        table.add_row(literal(f"MAE {model}"), "  ".join(cells))
    return table


def report_steps(horizon: int) -> tuple[int, ...]:
    """The lead steps shown live: 1, 3, 6, 9 and 12 where the horizon reaches."""
    return tuple(s for s in (1, 3, 6, 9, 12) if s <= horizon) or (horizon,)


def print_summary(summary: dict[str, Any]) -> None:
    """The summary as a table (accuracy at the reported lead times; names as written)."""
    from rich.console import Console
    from rich.table import Table

    from flows.reporting.tables import lead_label
    from flows.reporting.text import literal

    table = Table(title=literal(f"roadcast demo: {summary['data']}", "table.title"))
    table.add_column("")
    table.add_column("value", justify="right")
    for key in (
        "sensors", "models", "readings_produced", "readings_valid", "dead_lettered", "lost",
        "ticks", "forecasts_published", "alerts_published", "latency_ms", "wall_s",
    ):  # fmt: skip
        value = summary[key]
        table.add_row(key, literal(f"{value:,}" if isinstance(value, int) else value))
    for model, per in summary["accuracy"].items():
        cells = [
            f"{lead_label(per[s]['minutes'])} {per[s]['mae']:.2f}/{per[s]['rmse']:.2f}"
            for s in per
            if int(s) in (1, 3, 6, 12)
        ]
        table.add_row(literal(f"{model} MAE/RMSE"), "  ".join(cells))
    alerts = summary.get("alerts")
    if alerts:
        text = (
            f"{alerts['episodes']} episodes, {alerts['incidents']} incidents "
            f"({alerts['firing']} firing / {alerts['resolved']} resolved)"
        )
        if "labelled_events" in alerts:
            m = alerts["labelled_events"]
            text += f"; events found {m['found']}/{m['events']}, precision {m['precision']}"
        table.add_row("alerts", text)
    Console().print(table)
