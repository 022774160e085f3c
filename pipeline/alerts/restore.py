"""Re-deriving the alert hook's state from the store after a start or a failed batch.

The hook's state (the detectors' recent forecasts, the alert lifecycle, online
calibration) is not saved: it is **re-derived from the store** whenever the service
restores its state (start-up, and after a batch the broker did not take). The ticks of
the last ``history_ticks`` (and back to the first tick of every alert the store still
shows firing, at most ``max_history_ticks``) are replayed from the stored readings and
the stored forecasts through the same code path, without publishing
(:meth:`pipeline.alerts.hook.ServiceAlerts.restore`). An alert still firing is thus
resolved later under its original ``alert_id``. What the replay cannot reproduce
exactly: readings as they were at the tick's close are stored, but the forecasts are
the published values (7 significant digits), so a score right at the threshold may land
on the other side; and online calibration restarts from the replayed ticks only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.alerts.config import AlertingConfig
from pipeline.kafka.schema import SchemaError, decode_alert

if TYPE_CHECKING:
    from pipeline.service.hooks import AlertRestore
    from pipeline.service.store_rows import AlertRow


def replay_start_ms(
    last_closed: pd.Timestamp,
    open_alerts: Sequence[AlertRow],
    freq: pd.Timedelta,
    config: AlertingConfig,
) -> int:
    """Epoch ms from which ticks are replayed: ``history_ticks`` before ``last_closed``, or
    earlier to reach the first tick of every stored open alert (at most
    ``max_history_ticks`` before)."""
    freq_ms = int(freq.value // 1_000_000)
    last_ms = int(pd.Timestamp(last_closed).value // 1_000_000)
    since_ms = last_ms - config.history_ticks * freq_ms
    floor_ms = last_ms - config.max_history_ticks * freq_ms
    for row in open_alerts:
        try:
            first = pd.Timestamp(decode_alert(row.payload).first_seen)
        except SchemaError:
            continue
        start_ms = int(first.value // 1_000_000) - int(config.rules.group_window.value // 1_000_000)
        since_ms = max(floor_ms, min(since_ms, start_ms - freq_ms))
    return since_ms


def stored_readings(
    source: AlertRestore, n_nodes: int, since_ms: int, ticks_ms: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Readings as they were when each tick closed, ``[tick, node]`` in service order."""
    rows = source.store.readings_since(since_ms, corrected=False)
    values = np.full((len(ticks_ms), n_nodes), np.nan, np.float32)  # [tick, node]
    col_of = {int(s): c for c, s in enumerate(np.asarray(source.store_ids).tolist())}
    cols = np.array([col_of.get(int(s), -1) for s in rows.sensors.tolist()], np.int64)
    pos = np.searchsorted(ticks_ms, rows.ts_ms)
    found = (cols >= 0) & (pos < len(ticks_ms))
    found[found] &= ticks_ms[pos[found]] == rows.ts_ms[found]
    values[pos[found], cols[found]] = rows.values[found]
    return values, np.isfinite(values)


def stored_forecasts(
    source: AlertRestore,
    requests: Sequence[tuple[str, np.ndarray | None, int]],
    since_ms: int,
    freq: pd.Timedelta,
) -> dict[str, dict[int, np.ndarray]]:
    """Per forecaster: ``{issued ms: mean [horizon, node]}`` as published.

    ``requests`` holds ``(forecaster, service columns or None for all, horizon)``.
    """
    out: dict[str, dict[int, np.ndarray]] = {}
    store_ids = np.asarray(source.store_ids)
    for forecaster, cols, horizon in requests:
        sensors = store_ids if cols is None else store_ids[cols]
        # Forecasts issued up to `horizon` ticks before the first replayed tick target it.
        start = since_ms - horizon * int(freq.value // 1_000_000)
        issued, means, _, _ = source.store.recent_forecasts(forecaster, start, sensors, horizon)
        out[forecaster] = {ms: means[k] for k, ms in enumerate(issued.tolist())}
    return out
