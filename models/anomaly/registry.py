"""The registry of anomaly detectors: ``{name: class}``, and loading a saved one by name.

Add a detector by importing its class here; there is no runtime registration. A saved
detector's ``config.json`` names it (``"model": "detector:<name>"``), so
:func:`load_detector` needs only the directory.
"""

from __future__ import annotations

from pathlib import Path

from models.anomaly.autoencoder import AutoencoderDetector
from models.anomaly.base import DetectorError, StreamingDetector
from models.anomaly.changepoint import ChangepointDetector
from models.anomaly.context import ContextDetector
from models.anomaly.correlation import CorrelationDetector
from models.anomaly.extreme import ExtremeDetector
from models.anomaly.gan import GanDetector
from models.anomaly.gaussian import WindowedGaussianDetector
from models.anomaly.interval import ForecastIntervalDetector
from models.anomaly.spectral import SpectralDetector
from models.bundle import read_bundle, recorded_offset

DETECTORS: dict[str, type[StreamingDetector]] = {
    "interval": ForecastIntervalDetector,
    "autoencoder": AutoencoderDetector,
    "correlation": CorrelationDetector,
    "gaussian": WindowedGaussianDetector,
    "context": ContextDetector,
    "extreme": ExtremeDetector,
    "changepoint": ChangepointDetector,
    "spectral": SpectralDetector,
    "gan": GanDetector,
}


def detector_class(name: str) -> type[StreamingDetector]:
    """The class registered as ``name``, or a DetectorError listing the known names."""
    try:
        return DETECTORS[name]
    except KeyError:
        raise DetectorError(
            f"unknown detector {name!r}; known detectors: {', '.join(sorted(DETECTORS))}"
        ) from None


def load_detector(directory: str | Path) -> StreamingDetector:
    """The detector saved in ``directory`` (an interval detector still needs ``attach``)."""
    config = read_bundle(directory).config
    model = str(config.get("model", ""))
    if not model.startswith("detector:"):
        raise DetectorError(
            f"{directory} holds model {model!r}, not a detector; pass a directory written "
            "by a detector's save()"
        )
    detector = detector_class(model.removeprefix("detector:")).load(directory)
    detector.step_s = config.get("step_s")  # None in bundles written before it was recorded
    detector.offset_s = recorded_offset(config)
    return detector
