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
into a panel, checking that the snapshots are consecutive windows of one series.

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

if TYPE_CHECKING:
    from torch_geometric.data import Data


@dataclass(frozen=True, eq=False)
class StaticSignal:
    """The structure of PyTorch Geometric Temporal's ``StaticGraphTemporalSignal``."""

    edge_index: np.ndarray
    edge_weight: np.ndarray
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

        return Data(
            x=torch.tensor(np.asarray(self.features[index]), dtype=torch.float32),
            edge_index=torch.tensor(np.asarray(self.edge_index), dtype=torch.int64),
            edge_attr=torch.tensor(np.asarray(self.edge_weight), dtype=torch.float32),
            y=torch.tensor(np.asarray(self.targets[index]), dtype=torch.float32),
        )

    def __iter__(self) -> Iterator[Data]:
        return (self[s] for s in range(self.snapshot_count))


def to_signal(panel: SensorPanel, *, window: int = 12, horizon: int = 12) -> Any:
    """``panel`` as a static-graph temporal signal, one snapshot per window: features
    ``[node, 2, window]`` (reading, observed flag), targets ``[node, horizon]`` (NaN where
    missing). Needs the panel's graph."""
    if panel.graph is None:
        raise ValueError("a temporal signal needs the panel's road graph; this panel has none")
    if panel.values.ndim != 2:
        raise ValueError(f"a [time, node] panel is needed, got {panel.values.shape}")
    if window < 1 or horizon < 1 or panel.n_time < window + horizon:
        raise ValueError(
            f"{panel.n_time} steps hold no window of {window} + {horizon} steps; "
            "use a longer panel or a smaller window/horizon"
        )
    data = panel.graph.to_pyg()
    values = panel.values.T  # [node, time], NaN where missing
    seen = panel.mask.T.astype(np.float32)
    stacked = np.stack([values, seen], axis=1)  # [node, 2, time]
    starts = range(panel.n_time - window - horizon + 1)
    features = [stacked[:, :, s : s + window] for s in starts]
    targets = [values[:, s + window : s + window + horizon] for s in starts]
    edge_index = data.edge_index.numpy()
    edge_weight = data.edge_weight.numpy()
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
    picks the reading); the snapshots must be consecutive windows (stride 1), and the
    last snapshot's targets (``[node]`` or ``[node, horizon]``) end the series. The grid
    starts at ``start`` (UTC) with step ``freq``: the signal does not record time.
    """
    from torch_geometric.data import Data

    features, targets = list(signal.features), list(signal.targets)
    if not features or len(features) != len(targets):
        raise ValueError(f"signal has {len(features)} feature and {len(targets)} target snapshots")
    series = [_reading(np.asarray(f), feature) for f in features]  # each [node, lags]
    first = series[0]
    for s, current in enumerate(series[1:], start=1):
        if current.shape != first.shape or not np.allclose(
            current[:, :-1], series[s - 1][:, 1:], equal_nan=True
        ):
            raise ValueError(
                f"snapshot {s} is not the window after snapshot {s - 1} (stride 1 over one "
                "series); only such signals can be read back into a panel"
            )
    last = np.asarray(targets[-1], dtype=np.float32)
    last = last[:, None] if last.ndim == 1 else last  # [node, horizon]
    if last.ndim != 2 or last.shape[0] != first.shape[0]:
        raise ValueError(f"targets must be [node] or [node, horizon], got {last.shape}")
    values = np.concatenate([first, *(f[:, -1:] for f in series[1:]), last], axis=1).T
    n = values.shape[1]
    ids = [f"n{i}" for i in range(n)] if sensor_ids is None else list(sensor_ids)
    graph = Data(num_nodes=n)
    graph.edge_index = _tensor(signal.edge_index, np.int64)
    if getattr(signal, "edge_weight", None) is not None:
        graph.edge_weight = _tensor(signal.edge_weight, np.float32)
    first_step = pd.Timestamp(start)
    first_step = first_step.tz_localize("UTC") if first_step.tz is None else first_step
    timestamps = pd.date_range(first_step.tz_convert("UTC"), periods=len(values), freq=freq)
    return SensorPanel.from_values(values, timestamps, ids, graph=graph, name=name)


def _reading(snapshot: np.ndarray, feature: int) -> np.ndarray:
    if snapshot.ndim == 3:
        return snapshot[:, feature, :].astype(np.float32)
    if snapshot.ndim == 2:
        return snapshot.astype(np.float32)
    raise ValueError(
        f"features must be [node, lags] or [node, feature, lags], got {snapshot.shape}"
    )


def _tensor(values: Any, dtype: type) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(np.asarray(values, dtype=dtype)))
