"""What the service publishes, through the poll batch's outbox and into its store batch.

:class:`Publisher` sends a model's forecast at one tick in the deployment's forecast
wire (``ROADCAST_FORECAST_WIRE``: v1 a JSON record per sensor, v2 compact frames, see
:mod:`pipeline.kafka.forecast_wire`), the alert hook's alerts, and an alert for every
sensor that went down or came back; each also goes into the store batch, and the
counters say what was published. :class:`pipeline.service.processor.PollProcessor`
decides *what* to publish; this module how.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from pipeline.alerts.lifecycle import AlertEvent
from pipeline.kafka.forecast_wire import ForecastEncoder, send_forecast
from pipeline.kafka.outbox import Outbox
from pipeline.kafka.schema import AlertMessage, SchemaError, encode_alert
from pipeline.service.assembler import AssemblerConfig
from pipeline.service.liveness import SensorChange, sensor_alert
from pipeline.service.store_rows import AlertRow, Batch, ForecastRows
from pipeline.settings import Settings

log = logging.getLogger("roadcast.service")

# The Kafka header of an alert record that names its incident (pipeline.alerts.hook).
GROUP_HEADER = "group"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Timer = Callable[[str], AbstractContextManager[None]]


class Publisher:
    """Publishes forecasts and alerts for the service.

    Parameters
    ----------
    settings : the topics and the forecast wire.
    timed : ``timed(stage)``, a context manager adding the block's time to a stage
        (the processor's stage timer: ``encode``, ``send``).
    """

    def __init__(self, settings: Settings, timed: Timer) -> None:
        self.topic_forecasts = settings.topic_forecasts
        self.topic_alerts = settings.topic_alerts
        self.wire = settings.forecast_wire
        self.timed = timed

    def encoder(self, sensor_ids: Sequence[str]) -> ForecastEncoder:
        """The encoder of one model's sensors in this deployment's wire."""
        return ForecastEncoder(sensor_ids, self.wire)

    def forecast(
        self,
        outbox: Outbox,
        batch: Batch,
        counts: Counter[str],
        name: str,
        encoder: ForecastEncoder,
        store_sensors: np.ndarray,
        issued: pd.Timestamp,
        freq: pd.Timedelta,
        mean: np.ndarray,
        lower: np.ndarray | None,
        upper: np.ndarray | None,
    ) -> None:
        """Publish and store model ``name``'s forecast issued at ``issued``.

        ``store_sensors`` are the store ids of the encoder's sensors; ``mean``,
        ``lower``, ``upper`` float ``[horizon, node]``.
        """
        with self.timed("encode"):
            encoded = encoder.encode_rows(
                name, issued, freq, mean, lower, upper, max_bytes=outbox.max_message_bytes
            )
        with self.timed("send"):
            send_forecast(outbox, self.topic_forecasts, encoded)
        batch.forecasts.append(
            ForecastRows.from_arrays(
                name, int(issued.value // 1_000_000), store_sensors, mean, lower, upper,
                columns=encoded.columns,
            )
        )  # fmt: skip
        counts["forecasts_published"] += len(encoded.columns)
        counts["forecast_records"] += len(encoded.records)
        counts["forecasts_nonfinite"] += len(encoded.skipped)

    def alerts(
        self,
        outbox: Outbox,
        batch: Batch,
        counts: Counter[str],
        items: Iterable[AlertMessage | AlertEvent],
    ) -> None:
        """Publish and store the alert hook's alerts (an invalid one is counted, logged
        and left out: a detector bug must not stop the forecasts)."""
        for item in items:
            alert, group = (
                (item.message, item.group_key) if isinstance(item, AlertEvent) else (item, None)
            )
            payload = _encoded(alert, counts)
            if payload is None:
                continue
            headers = [(GROUP_HEADER, group.encode())] if group else None
            outbox.send(self.topic_alerts, alert.sensor.encode(), payload, headers)
            ts_ms = (alert.ts - _EPOCH) // timedelta(milliseconds=1)
            batch.alerts.append(
                AlertRow(
                    alert.alert_id, alert.status, alert.dedup_key, alert.severity, alert.sensor,
                    ts_ms, alert.detector, alert.score, payload.decode(), group,
                )
            )  # fmt: skip
            counts["alerts_published"] += 1
            counts[f"alerts_published.{alert.status}"] += 1

    def sensor_changes(
        self,
        outbox: Outbox,
        batch: Batch,
        counts: Counter[str],
        changes: Iterable[SensorChange],
        sensor_ids: Sequence[str],
        config: AssemblerConfig,
    ) -> None:
        """Publish and store an alert for every sensor that went down or came back (one
        the schema refuses, e.g. a silence since a tick before 1700, is counted, logged
        and left out, as in :meth:`alerts`)."""
        for change in changes:
            sensor = sensor_ids[change.col]
            down = change.down
            alert = sensor_alert(sensor, change, config)
            payload = _encoded(alert, counts)
            if payload is None:
                continue
            outbox.send(self.topic_alerts, sensor.encode(), payload)
            batch.alerts.append(AlertRow.of(alert, payload))
            counts["alerts_published"] += 1
            counts[f"alerts_published.{alert.status}"] += 1
            counts["sensors_down" if down else "sensors_back"] += 1
            fields = {"fields": {"sensor": sensor, "reason": alert.reason}}
            if down:
                log.warning("sensor_down", extra=fields)
            else:
                log.info("sensor_back", extra=fields)


def _encoded(alert: AlertMessage, counts: Counter[str]) -> bytes | None:
    """The alert's wire payload, or None (counted as ``alerts_invalid`` and logged) when
    the schema refuses it."""
    try:
        return encode_alert(alert)
    except SchemaError as exc:
        counts["alerts_invalid"] += 1
        log.error("alert_invalid", extra={"fields": {"error": str(exc)}})
        return None
