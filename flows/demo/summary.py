"""The demo's ``summary.json``: counters, latency and live accuracy from the service's store,
and the alerts it published matched against the replayed data's labelled events."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pandas as pd

from models.bundle import duration_text
from models.panel import SensorPanel


def snapshot(store_path: Path, issued_from: pd.Timestamp | None = None) -> dict[str, Any] | None:
    """Counters, latency and accuracy (of forecasts issued from ``issued_from`` on) from
    the service's store (None before it exists)."""
    from flows.status import status_summary

    if not store_path.is_file():
        return None
    since = None if issued_from is None else int(issued_from.value // 1_000_000)
    try:
        return status_summary(store_path, last_ticks=None, issued_from_ms=since)
    except Exception:  # the service may be creating its tables right now: next time
        return None


def build_summary(
    panel: SensorPanel,
    live: SensorPanel,
    models: list[str],
    state: dict[str, Any],
    produced: int,
    speedup: float,
    train_s: float,
    stream_s: float,
    started: float,
) -> dict[str, Any]:
    """The summary of a run: data, models, counters, latency, live accuracy per model and
    lead, readings lost, timings; ``state`` is the store's :func:`snapshot` at the end."""
    counters = state["counters"]
    valid = int(counters.get("valid", 0))
    dead = int(counters.get("dead_lettered", 0))
    latency = state["latency_ms"]
    minutes = live.freq.total_seconds() / 60
    accuracy = {
        model: {
            str(step): {
                "minutes": step * minutes,
                "n": m["n"],
                "mae": round(m["mae"], 4),
                "rmse": round(m["rmse"], 4),
            }
            for step, m in sorted(per.items())
        }
        for model, per in sorted(state["accuracy"].items())
    }
    return {
        "data": panel.name,
        "sensors": panel.n_nodes,
        "frequency": duration_text(panel.freq.total_seconds()),
        "models": models,
        "first_tick": live.timestamps[0].isoformat(),
        "last_tick": live.timestamps[-1].isoformat(),
        "speedup": speedup,
        "readings_produced": produced,
        "readings_valid": valid,
        "dead_lettered": dead,
        "late": int(counters.get("late", 0)),
        "duplicate": int(counters.get("duplicate", 0)),
        "ticks": int(counters.get("ticks_closed", 0)),
        "forecasts_published": int(counters.get("forecasts_published", 0)),
        "alerts_published": int(counters.get("alerts_published", 0)),
        "latency_ms": {"p50": _round(latency.get("p50")), "p99": _round(latency.get("p99"))},
        "accuracy": accuracy,
        "versus_persistence": persistence_verdict(accuracy),
        "lost": produced - valid - dead,
        "train_s": round(train_s, 1),
        "stream_s": round(stream_s, 1),
        "wall_s": round(time.monotonic() - started, 1),
    }


def persistence_verdict(accuracy: dict[str, dict[str, dict[str, Any]]]) -> str:
    """One plain sentence: do the models beat persistence (live RMSE) at every lead past
    the first, and if not, where not and the likely reason."""
    base = accuracy.get("persistence")
    models = [m for m in accuracy if m != "persistence"]
    if not base or not models:
        return "No persistence baseline was served, so the models are not compared with it."
    leads = sorted((int(s) for s in base if int(s) > 1), key=int)
    losing = {
        m: [
            s
            for s in leads
            if str(s) in accuracy[m] and accuracy[m][str(s)]["rmse"] >= base[str(s)]["rmse"]
        ]
        for m in models
    }
    if not any(losing.values()):
        return (
            f"Every model ({', '.join(models)}) beats persistence (live RMSE) at every lead "
            "past the first, on this replay with one training seed (no significance test: "
            "`roadcast train` tests it on the test part)."
        )
    worse = "; ".join(
        f"{m} at {', '.join(str(s) for s in steps)} step(s)" for m, steps in losing.items() if steps
    )
    return (
        f"Not every model beats persistence: {worse} (live RMSE). Persistence is hard to "
        "beat on a short or quiet replay (few peaks or incidents in the streamed part) and "
        "with the demo's quick training (few epochs, one seed); `roadcast train` with its "
        "defaults trains longer."
    )


def alert_summary(store_path: Path, live: SensorPanel, *, latest: int = 15) -> dict[str, Any]:
    """The alerts the service stored: counts, the latest changes, and, when the replayed
    data has labelled events, how the alert episodes match them
    (:func:`models.anomaly.events.match_events`, as ``benchmarks/anomaly.py`` scores them)."""
    import pandas as pd

    from models.anomaly.events import Episode, match_events
    from pipeline.kafka.schema import decode_alert
    from pipeline.service.store import Store

    with Store(store_path, readonly=True) as store:
        rows = store.alerts(limit=1_000_000)
    changes = []
    first_seen: dict[str, pd.Timestamp] = {}
    for row in rows:
        message = decode_alert(row.payload)
        first_seen[row.alert_id] = pd.Timestamp(message.first_seen)
        changes.append(
            {
                "ts": message.ts.isoformat().replace("+00:00", "Z"),
                "status": row.status,
                "sensor": row.sensor,
                "severity": row.severity,
                "score": round(row.score, 5),
                "incident": row.group_key,
                "reason": message.reason,
            }
        )
    fired = {r.alert_id: r for r in rows if r.status == "firing"}
    out: dict[str, Any] = {
        "firing": sum(r.status == "firing" for r in rows),
        "resolved": sum(r.status == "resolved" for r in rows),
        "episodes": len(fired),
        "incidents": len({r.group_key for r in fired.values() if r.group_key}),
        "latest": changes[:latest],
    }
    start, end = live.timestamps[0], live.timestamps[-1]
    events = [e for e in live.events if start <= e.start <= end]
    if events:
        episodes = [Episode(r.sensor, first_seen[r.alert_id]) for r in fired.values()]
        match = match_events(episodes, events)
        found = sum(match.found.values())
        out["labelled_events"] = {
            "events": len(events),
            "found": found,
            "episodes_matching_an_event": match.matched,
            "precision": None if match.precision is None else round(match.precision, 3),
            "recall": round(found / len(events), 3),
        }
    return out


def _round(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 1)
