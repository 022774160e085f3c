"""PyTorch Geometric Temporal's ``StaticGraphTemporalSignal`` to and from a SensorPanel.

A static-graph temporal signal (PyTorch Geometric Temporal's data sets, e.g. its METR-LA
and PeMS-Bay loaders) is one graph, ``edge_index`` int ``[2, E]`` and ``edge_weight``
``[E]``, and a list of snapshots: ``features[s]`` the node features of snapshot s and
``targets[s]`` what follows it. Item s is a ``torch_geometric.data.Data(x=features[s],
edge_index, edge_attr=edge_weight, y=targets[s])``. The traffic loaders make every window
a snapshot: ``features[s]`` ``[node, feature, window]``, ``targets[s]`` ``[node, horizon]``;
the epidemiology ones use ``[node, lags]`` and ``[node]`` (one step ahead).

:func:`to_signal` writes a panel in the traffic layout (features: the reading and
whether it was observed; a missing reading stays NaN, as everywhere in roadcast: fill it
before training a model that cannot mask); :func:`from_signal` reads either layout back
into a panel, checking that the snapshots are consecutive windows of one series and the
targets the steps that follow them.

The ``torch-geometric-temporal`` package (0.56) requires ``torch-sparse`` and
``torch-scatter``, which have no wheels for the torch this project uses and do not
import without them, so it is not a dependency: :func:`to_signal` returns its
``StaticGraphTemporalSignal`` when the package imports, else :class:`StaticSignal`, the
same documented structure; :func:`from_signal` reads any object with those four fields.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from models.panel import SensorPanel
from pipeline.data.graph import RoadGraph
from pipeline.kafka.schema import FLOAT32_MAX, sensor_id_problem

if TYPE_CHECKING:
    from torch_geometric.data import Data


@dataclass(frozen=True, eq=False)
class StaticSignal:
    """The structure of PyTorch Geometric Temporal's ``StaticGraphTemporalSignal``."""

    edge_index: np.ndarray
    edge_weight: np.ndarray | None
    features: Sequence[np.ndarray]
    targets: Sequence[np.ndarray]

    def __post_init__(self) -> None:
        if len(self.features) != len(self.targets):
            raise ValueError(
                f"{len(self.features)} feature snapshots for {len(self.targets)} targets"
            )

    @property
    def snapshot_count(self) -> int:
        return len(self.features)

    def __len__(self) -> int:
        return self.snapshot_count

    def __getitem__(self, index: int) -> Data:
        import torch
        from torch_geometric.data import Data

        weight = self.edge_weight
        return Data(
            x=torch.tensor(np.asarray(self.features[index]), dtype=torch.float32),
            edge_index=torch.tensor(np.asarray(self.edge_index), dtype=torch.int64),
            edge_attr=None if weight is None else torch.tensor(weight, dtype=torch.float32),
            y=torch.tensor(np.asarray(self.targets[index]), dtype=torch.float32),
        )

    def __iter__(self) -> Iterator[Data]:
        return (self[s] for s in range(self.snapshot_count))


def to_signal(panel: SensorPanel, *, window: int = 12, horizon: int = 12) -> Any:
    """``panel`` as a static-graph temporal signal, one snapshot per window: features
    ``[node, 2, window]`` (reading, observed flag), targets ``[node, horizon]`` (NaN where
    missing). Needs the panel's graph, whose validated links and weights it carries."""
    for option, steps in (("window", window), ("horizon", horizon)):
        if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 1:
            raise ValueError(f"{option} must be an integer >= 1, got {steps!r}")
    if panel.graph is None:
        raise ValueError("a temporal signal needs the panel's road graph; this panel has none")
    if panel.values.ndim != 2:
        raise ValueError(f"a [time, node] panel is needed, got {panel.values.shape}")
    if panel.n_time < window + horizon:
        raise ValueError(
            f"{panel.n_time} steps hold no window of {window} + {horizon} steps; "
            "use a longer panel or a smaller window/horizon"
        )
    values = panel.values.T  # [node, time], NaN where missing
    seen = panel.mask.T.astype(np.float32)
    stacked = np.stack([values, seen], axis=1)  # [node, 2, time]
    starts = range(panel.n_time - window - horizon + 1)
    features = [stacked[:, :, s : s + window] for s in starts]
    targets = [values[:, s + window : s + window + horizon] for s in starts]
    edge_index = np.array(panel.graph.edge_index, dtype=np.int64)  # [2, E]
    edge_weight = np.array(panel.graph.edge_weight, dtype=np.float32)  # [E]
    try:
        from torch_geometric_temporal.signal import StaticGraphTemporalSignal
    except (ImportError, OSError):
        return StaticSignal(edge_index, edge_weight, features, targets)
    return StaticGraphTemporalSignal(edge_index, edge_weight, features, targets)


def from_signal(
    signal: Any,
    *,
    start: str | pd.Timestamp = "2000-01-01",
    freq: str | pd.Timedelta = "5min",
    sensor_ids: Sequence[str] | None = None,
    feature: int = 0,
    name: str = "signal",
) -> SensorPanel:
    """The series a static-graph temporal signal was cut from, as a panel with its graph.

    ``features[s]`` may be ``[node, lags]`` or ``[node, feature, lags]`` (``feature``
    picks the reading); the snapshots must be consecutive windows (stride 1), and
    ``targets[s]`` (``[node]`` or ``[node, horizon]``) the steps after ``features[s]``:
    they must agree with the later snapshots where both hold a value, and the last
    snapshot's targets end the series. The grid starts at ``start`` (UTC) with step
    ``freq``: the signal does not record time. A link of weight 0 is no link, as in an
    adjacency file, and a signal that links no two nodes is refused.
    """
    if not all(hasattr(signal, field) for field in ("edge_index", "features", "targets")):
        raise ValueError(
            "signal must be a static-graph temporal signal with edge_index, features and "
            f"targets, got {type(signal).__name__}"
        )
    first_step, step = _grid(start, freq)
    if isinstance(feature, bool) or not isinstance(feature, int | np.integer):
        raise ValueError(f"feature must be an integer, got {feature!r}")
    features, targets = list(signal.features), list(signal.targets)
    if not features or len(features) != len(targets):
        raise ValueError(f"signal has {len(features)} feature and {len(targets)} target snapshots")
    series = [_reading(np.asarray(f), feature) for f in features]  # each [node, lags]
    first = series[0]
    for s, current in enumerate(series[1:], start=1):
        if current.shape != first.shape:
            raise ValueError(f"features[{s}] is {current.shape}, features[0] {first.shape}")
        if not np.allclose(current[:, :-1], series[s - 1][:, 1:], equal_nan=True):
            raise ValueError(
                f"snapshot {s} is not the window after snapshot {s - 1} (stride 1 over one "
                "series); only such signals can be read back into a panel"
            )
    ahead = [_target(t, s, first.shape[0]) for s, t in enumerate(targets)]  # [node, horizon]
    for s, target in enumerate(ahead):
        if target.shape != ahead[0].shape:
            raise ValueError(f"targets[{s}] is {target.shape}, targets[0] {ahead[0].shape}")
    values = np.concatenate([first, *(f[:, -1:] for f in series[1:]), ahead[-1]], axis=1)
    lags = first.shape[1]
    for s, target in enumerate(ahead):
        known = values[:, s + lags : s + lags + target.shape[1]]
        both = np.isfinite(known) & np.isfinite(target)
        if not np.allclose(known[both], target[both]):
            raise ValueError(
                f"targets[{s}] disagree with the later snapshots' features; targets[s] must "
                "be the steps right after features[s]"
            )
    n = values.shape[0]
    if n == 0:
        raise ValueError("signal has no nodes")
    ids = [f"n{i}" for i in range(n)] if sensor_ids is None else list(sensor_ids)
    for sensor in ids:
        if (problem := sensor_id_problem(str(sensor))) is not None:
            raise ValueError(f"sensor id {str(sensor)[:40]!r} {problem}")
    huge = np.isinf(values) | (np.abs(values) > FLOAT32_MAX)  # NaN is a missing reading
    if huge.any():
        node, step = (int(i[0]) for i in np.nonzero(huge))
        raise ValueError(
            f"signal holds {int(huge.sum())} reading(s) that float32 cannot hold, the first "
            f"{values[node, step]:g} of node {node} at step {step}; a missing reading is NaN"
        )
    weight = getattr(signal, "edge_weight", None)
    graph = RoadGraph(
        n, np.asarray(signal.edge_index), None if weight is None else np.asarray(weight)
    )
    linked = graph.edge_weight != 0  # weight 0 is no link, as in an adjacency file
    if not linked.any():
        raise ValueError(
            "signal links no two nodes: its edge_index is empty, or every link has weight "
            "0 or is a self-loop; a static-graph temporal signal needs its graph"
        )
    if not linked.all():
        graph = RoadGraph(n, graph.edge_index[:, linked], graph.edge_weight[linked])
    timestamps = pd.date_range(first_step, periods=values.shape[1], freq=step)
    return SensorPanel.from_values(values.T, timestamps, ids, graph=graph, name=name)


def _grid(start: Any, freq: Any) -> tuple[pd.Timestamp, pd.Timedelta]:
    """``start`` in UTC and ``freq`` as a positive step, or a ValueError naming them."""
    try:
        first = pd.Timestamp(start)
    except (ValueError, TypeError):
        first = pd.NaT
    if pd.isna(first):
        raise ValueError(f"start must be a timestamp, got {start!r}")
    first = first.tz_localize("UTC") if first.tz is None else first.tz_convert("UTC")
    try:
        step = pd.NaT if isinstance(freq, int | float) else pd.Timedelta(freq)
    except (ValueError, TypeError):
        step = pd.NaT
    if pd.isna(step) or step <= pd.Timedelta(0):
        raise ValueError(f"freq must be a positive time step such as '5min', got {freq!r}")
    return first, step


def _reading(snapshot: np.ndarray, feature: int) -> np.ndarray:
    if snapshot.ndim == 3:
        if not 0 <= feature < snapshot.shape[1]:
            raise ValueError(
                f"feature={feature} is not one of the {snapshot.shape[1]} features of the "
                "[node, feature, lags] snapshots"
            )
        return snapshot[:, feature, :].astype(np.float32)
    if snapshot.ndim == 2:
        if feature != 0:
            raise ValueError(f"feature={feature}, but the snapshots are [node, lags]: one feature")
        return snapshot.astype(np.float32)
    raise ValueError(
        f"features must be [node, lags] or [node, feature, lags], got {snapshot.shape}"
    )


def _target(target: Any, s: int, nodes: int) -> np.ndarray:
    y = np.asarray(target, dtype=np.float32)
    y = y[:, None] if y.ndim == 1 else y
    if y.ndim != 2 or y.shape[0] != nodes:
        raise ValueError(
            f"targets[{s}] is {np.shape(target)}; targets must be [node] or [node, horizon] "
            f"over the features' {nodes} nodes"
        )
    return y  # [node, horizon]
