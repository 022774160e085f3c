"""Input windows as numpy arrays, and the one missing-value fill the classical models use.

The rule matches the neural engine's (``models.nn.inputs``): a missing reading takes
the last observed value of the same sensor *inside the window*; with no observation in
the window it takes a per-sensor fallback (the training mean). Window-local filling
means a forecast depends only on its input window, in a backtest as in the service.
"""

from __future__ import annotations

import numpy as np

from models.panel import SensorPanel


def check_origins(panel: SensorPanel, origins: np.ndarray, window: int) -> np.ndarray:
    """``origins`` as int64 ``[n]``, or a ValueError when a window would leave the panel."""
    origins = np.asarray(origins, dtype=np.int64)
    if origins.ndim != 1:
        raise ValueError(f"origins must be a 1-D array of step indices, got {origins.shape}")
    if len(origins) and (origins.min() < window - 1 or origins.max() >= panel.n_time):
        raise ValueError(
            f"origins must lie in [{window - 1}, {panel.n_time - 1}] so that the {window}-step "
            f"input window fits the panel; got [{origins.min()}, {origins.max()}]"
        )
    return origins


def check_2d(panel: SensorPanel, model: str) -> None:
    """Refuse a multi-feature panel with an error that names the fix."""
    if panel.values.ndim != 2:
        raise ValueError(
            f"{model} forecasts [time, node] panels, got {panel.values.shape}; select one "
            "feature first"
        )


def gather(panel: SensorPanel, origins: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Values and mask of the windows ending at ``origins``: both ``[n, window, node]``."""
    steps = origins[:, None] + np.arange(-window + 1, 1)[None, :]  # [n, window]
    return panel.values[steps], panel.mask[steps]  # [n, window, node] x2


def fill_forward(values: np.ndarray, mask: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Window-local forward fill along axis 1 of ``[n, window, node]`` arrays.

    ``fallback`` ``[node]`` is used where a sensor has no observation yet in its window.
    Returns float64 ``[n, window, node]`` without NaN (if ``fallback`` has none).
    """
    n, window, nodes = values.shape
    pos = np.where(mask, np.arange(window)[None, :, None], -1)  # [n, window, node]
    last = np.maximum.accumulate(pos, axis=1)
    filled = np.take_along_axis(values.astype(np.float64), np.maximum(last, 0), axis=1)
    return np.where(last >= 0, filled, np.broadcast_to(fallback, (n, window, nodes)))


def last_observed(
    panel: SensorPanel, origins: np.ndarray, window: int, fallback: np.ndarray
) -> np.ndarray:
    """The last observed value of each sensor in the windows ending at ``origins`` (else
    ``fallback``): float64 ``[n, node]``, as ``fill_forward(...)[:, -1, :]`` gives it.

    Only the (origin, sensor) pairs missing at the origin look back, so the cost is one
    step per pair plus the window for the missing ones, not the whole window for all.
    """
    last = panel.values[origins].astype(np.float64)  # [n, node]
    rows, cols = np.nonzero(~panel.mask[origins])
    if len(rows):
        steps = origins[rows, None] - np.arange(window)[None, :]  # [k, window], newest first
        seen = panel.mask[steps, cols[:, None]]
        newest = seen.argmax(axis=1)
        found = panel.values[steps[np.arange(len(rows)), newest], cols]
        last[rows, cols] = np.where(seen.any(axis=1), found, fallback[cols])
    return last


def training_means(panel: SensorPanel) -> np.ndarray:
    """Per-sensor mean of observed values, float64 ``[node]``: the fallback of every fill.

    A sensor never observed takes the mean over all sensors (0.0 for an empty panel).
    """
    count = panel.mask.sum(axis=0)
    total = np.where(panel.mask, panel.values, 0.0).astype(np.float64).sum(axis=0)
    means = total / np.maximum(count, 1)
    overall = total.sum() / count.sum() if count.sum() else 0.0
    return np.where(count > 0, means, overall)
