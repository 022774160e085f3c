"""How the service raises alerts: :class:`AlertingConfig` and the forecaster it judges.

``roadcast serve --detectors ... --alert-model ...`` becomes an :class:`AlertingConfig`
(:meth:`AlertingConfig.parse`); :func:`choose_forecaster` picks the model whose
forecasts the interval detector judges.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from models.anomaly.interval import IntervalConfig
from pipeline.alerts.lifecycle import AlertRules

AUTO = "auto"
NONE = "none"
SERVICE_DETECTORS = ("interval", "autoencoder")
PREFERRED_FORECASTERS = ("ar", "persistence")
# Calibration residuals kept per sensor and horizon. The p-value of a reading compares
# it with all of them at every tick, so the pool is sized to the validation data rather
# than the detector's default 4096 (one 1024-wide pool: 0.5 ms a tick for 207 sensors).
SERVICE_CAPACITY = 1024
# The service fires at p <= 0.001: the interval detector's p-value chosen on the simulated
# network's validation seed (``benchmarks/simulated_alerts.py``, docs/decisions.md).
SERVICE_ALERT_P = 1e-3


class AlertingError(ValueError):
    """Alerting cannot be set up as asked; the message names the fix."""


@dataclass(frozen=True)
class AlertingConfig:
    """How the service raises alerts.

    Attributes
    ----------
    detectors : ``("auto",)``, ``("none",)`` or names from :data:`SERVICE_DETECTORS`.
    forecaster : the model whose forecasts the interval detector judges (None: the saved
        detector's, else the first of :data:`PREFERRED_FORECASTERS` loaded, else the
        first model by name).
    rules : the alert lifecycle (the benchmark's defaults, firing at p <= SERVICE_ALERT_P).
    interval : the interval detector's settings when it calibrates on the stream (a
        peaks-over-threshold tail: calibration weeks with incidents in them do not hide
        later ones; ``benchmarks/simulated_alerts.py``, docs/decisions.md).
    history_ticks : ticks replayed from the store to re-derive the state on restore.
    max_history_ticks : the most ticks replayed to reach the start of open alerts.
    """

    detectors: tuple[str, ...] = (AUTO,)
    forecaster: str | None = None
    rules: AlertRules = field(default_factory=lambda: AlertRules(threshold=1 - SERVICE_ALERT_P))
    interval: IntervalConfig = field(
        default_factory=lambda: IntervalConfig(horizon=3, capacity=SERVICE_CAPACITY, tail="pot")
    )
    history_ticks: int = 576
    max_history_ticks: int = 8640

    def __post_init__(self) -> None:
        names = tuple(d.strip() for d in self.detectors if d.strip())
        if not names:
            raise AlertingError("no detectors given; pass --detectors auto, none or interval")
        special = {AUTO, NONE} & set(names)
        if special and len(names) > 1:
            raise AlertingError(f"--detectors {','.join(names)}: use auto or none alone")
        unknown = sorted(set(names) - {AUTO, NONE, *SERVICE_DETECTORS})
        if unknown:
            raise AlertingError(
                f"unknown detector(s) {unknown} for the service; choose from "
                f"{', '.join(SERVICE_DETECTORS)} (or auto, none)"
            )
        if self.history_ticks < 0 or self.max_history_ticks < self.history_ticks:
            raise AlertingError(
                "history_ticks must be >= 0 and max_history_ticks >= history_ticks, got "
                f"{self.history_ticks}, {self.max_history_ticks}"
            )
        object.__setattr__(self, "detectors", names)

    @property
    def enabled(self) -> bool:
        return self.detectors != (NONE,)

    @property
    def judged(self) -> str | None:
        """The forecaster asked for, when the interval detector will judge one."""
        return self.forecaster if {AUTO, "interval"} & set(self.detectors) else None

    @classmethod
    def parse(cls, detectors: str, forecaster: str | None = None) -> AlertingConfig:
        """From the CLI's comma-separated ``--detectors`` and ``--alert-model``."""
        return cls(detectors=tuple(detectors.split(",")), forecaster=forecaster or None)


def choose_forecaster(names: Sequence[str], requested: str | None = None) -> str:
    """The model whose forecasts the interval detector judges (see :class:`AlertingConfig`)."""
    if not names:
        raise AlertingError("no forecaster loaded; the interval detector needs one")
    if requested is not None:
        if requested not in names:
            raise AlertingError(
                f"--alert-model {requested!r} is not loaded; loaded models: {sorted(names)}"
            )
        return requested
    for name in PREFERRED_FORECASTERS:
        if name in names:
            return name
    return sorted(names)[0]
