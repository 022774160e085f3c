"""SensorPanel: the one data contract between the data plane and the models.

A panel is a regular time grid of readings from a fixed, ordered set of sensors:
``values`` is float32 ``[time, node]`` (or ``[time, node, feature]``), ``mask`` is a
bool array of the same shape (True = observed). A missing reading is NaN in
``values`` and False in ``mask``: it is never silently zero. Arrays are stored
read-only so that no model can mutate its input by accident.

``models`` must not import ``pipeline``: the road graph is reached through the
small :class:`GraphLike` protocol, which ``pipeline.data.graph.RoadGraph`` implements; a
``torch_geometric.data.Data`` given as ``graph`` is read through
:class:`models.graph.PyGGraph`, and ``graph.to_pyg()`` hands any graph to PyG.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from models.graph import as_graph


@runtime_checkable
class GraphLike(Protocol):
    """What a model may ask of a road graph (implemented by ``pipeline.data.graph.RoadGraph``).

    Edge convention (torch-geometric): ``edge_index[0]`` is the source sensor j,
    ``edge_index[1]`` the target sensor i, so that a message passes j -> i and
    ``(A x)_i = sum_j A[i, j] x_j``.
    """

    @property
    def num_nodes(self) -> int: ...

    @property
    def edge_index(self) -> np.ndarray:
        """int64 ``[2, E]`` direct links, without self loops."""
        ...

    @property
    def edge_weight(self) -> np.ndarray:
        """float32 ``[E]`` weight of each link (1.0 for an unweighted graph)."""
        ...

    def hops(
        self, k: int, *, minutes: float | None = None, free_flow_kmh: float | None = None
    ) -> np.ndarray:
        """int64 ``[2, E_k]`` pairs (j, i) with i within ``k`` hops of j, self loops included.

        This is the support of ``clamp(Ã^k, max=1)``. With ``minutes`` it is further
        restricted to the free-flow reachability (FFR) of TGC-LSTM: pairs whose
        shortest road distance can be driven within ``minutes`` at ``free_flow_kmh``.
        Sorted by (target, source), never built from a dense N x N matrix.
        """
        ...

    def to_pyg(self) -> Any:
        """The graph as a ``torch_geometric.data.Data`` (``edge_index``, ``edge_weight``,
        ``num_nodes``; ``edge_km`` and ``pos`` when known): see :mod:`models.graph`."""
        ...


@dataclass(frozen=True)
class LabeledEvent:
    """A ground-truth interval (incident, fault, NAB anomaly window) on some sensors."""

    start: pd.Timestamp
    end: pd.Timestamp
    sensors: tuple[str, ...]
    kind: str = "anomaly"


@dataclass(frozen=True, eq=False)
class SensorPanel:
    """Readings of ``sensor_ids`` on the regular grid ``timestamps``.

    Attributes
    ----------
    values : float32 ``[time, node]`` or ``[time, node, feature]``; NaN where missing.
    mask : bool, same shape as ``values``; True where observed.
    timestamps : tz-aware (UTC) DatetimeIndex with a fixed ``freq``.
    sensor_ids : ids of the nodes, in column order (strings).
    graph : optional road graph over the same nodes: a :class:`GraphLike` or a
        ``torch_geometric.data.Data`` (read through :class:`models.graph.PyGGraph`).
    coords : optional float64 ``[node, 2]`` (latitude, longitude).
    features : names of the feature axis when ``values`` is 3-D.
    events : labelled ground truth (incidents, anomaly windows), may be empty.
    name : the data set's name, for reports and bundles.
    notes : what the file it was read from left to an assumption (no header, no time
        column), shown by ``roadcast data info`` and ``roadcast train``.
    """

    values: np.ndarray
    mask: np.ndarray
    timestamps: pd.DatetimeIndex
    sensor_ids: tuple[str, ...]
    graph: GraphLike | None = None
    coords: np.ndarray | None = None
    features: tuple[str, ...] = ()
    events: tuple[LabeledEvent, ...] = field(default=())
    name: str = ""
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.float32)
        mask = np.asarray(self.mask, dtype=bool)
        if values.ndim not in (2, 3):
            raise ValueError(
                f"values must be [time, node] or [time, node, feature], got {values.shape}"
            )
        if mask.shape != values.shape:
            raise ValueError(f"mask shape {mask.shape} differs from values shape {values.shape}")
        if len(self.timestamps) != values.shape[0]:
            raise ValueError(f"{len(self.timestamps)} timestamps for {values.shape[0]} time steps")
        if len(self.sensor_ids) != values.shape[1]:
            raise ValueError(f"{len(self.sensor_ids)} sensor ids for {values.shape[1]} nodes")
        if len(set(self.sensor_ids)) != len(self.sensor_ids):
            raise ValueError("sensor ids must be unique")
        if values.ndim == 3 and len(self.features) not in (0, values.shape[2]):
            raise ValueError(f"{len(self.features)} feature names for {values.shape[2]} features")
        if len(self.timestamps) > 1 and self.timestamps.freq is None:
            raise ValueError("timestamps must be a regular grid with a freq (resample first)")
        if self.timestamps.tz is None:
            raise ValueError("timestamps must be timezone-aware (UTC)")
        if self.graph is not None:
            object.__setattr__(self, "graph", as_graph(self.graph))
        if self.graph is not None and self.graph.num_nodes != values.shape[1]:
            raise ValueError(f"graph has {self.graph.num_nodes} nodes, panel has {values.shape[1]}")
        observed_nan = mask & ~np.isfinite(values)
        if observed_nan.any():
            raise ValueError(f"{int(observed_nan.sum())} non-finite values are marked observed")
        # Missing is NaN, never a stale number that a model could learn from.
        values = np.where(mask, values, np.float32(np.nan)).astype(np.float32, copy=False)
        values.setflags(write=False)
        mask.setflags(write=False)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "mask", mask)
        object.__setattr__(self, "sensor_ids", tuple(str(s) for s in self.sensor_ids))
        if self.coords is not None:
            coords = np.asarray(self.coords, dtype=np.float64)
            if coords.shape != (values.shape[1], 2):
                raise ValueError(f"coords must be [node, 2], got {coords.shape}")
            coords.setflags(write=False)
            object.__setattr__(self, "coords", coords)

    @classmethod
    def from_values(
        cls,
        values: np.ndarray,
        timestamps: pd.DatetimeIndex,
        sensor_ids: tuple[str, ...] | list[str],
        **kwargs: Any,
    ) -> SensorPanel:
        """Build a panel whose mask is "finite": NaN (or inf) readings become missing."""
        values = np.asarray(values, dtype=np.float32)
        return cls(
            values=values,
            mask=np.isfinite(values),
            timestamps=timestamps,
            sensor_ids=tuple(sensor_ids),
            **kwargs,
        )

    @property
    def n_time(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_nodes(self) -> int:
        return int(self.values.shape[1])

    @property
    def freq(self) -> pd.Timedelta:
        """The grid step, e.g. ``Timedelta('5min')``."""
        return pd.Timedelta(self.timestamps.freq)

    @property
    def missing_share(self) -> float:
        return float(1.0 - self.mask.mean()) if self.mask.size else 0.0

    def slice(self, start: int, stop: int) -> SensorPanel:
        """Time steps ``start:stop`` (graph, coords and ids kept; events clipped)."""
        ts = self.timestamps[start:stop]
        events = tuple(e for e in self.events if len(ts) and e.end >= ts[0] and e.start <= ts[-1])
        return replace(
            self,
            values=self.values[start:stop],
            mask=self.mask[start:stop],
            timestamps=ts,
            events=events,
        )

    def select(self, sensor_ids: tuple[str, ...] | list[str]) -> SensorPanel:
        """Only ``sensor_ids``, in that order (the graph is dropped: it would need re-indexing)."""
        index = {s: i for i, s in enumerate(self.sensor_ids)}
        missing = [s for s in sensor_ids if s not in index]
        if missing:
            raise KeyError(f"sensors not in panel: {missing[:5]}")
        cols = [index[s] for s in sensor_ids]
        coords = None if self.coords is None else self.coords[cols]
        return replace(
            self,
            values=self.values[:, cols],
            mask=self.mask[:, cols],
            sensor_ids=tuple(sensor_ids),
            graph=None,
            coords=coords,
        )

    def fingerprint(self) -> str:
        """sha256 of the data (values, mask, ids, grid): ties a bundle to its training data."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(np.nan_to_num(self.values, nan=0.0)).tobytes())
        h.update(np.packbits(self.mask).tobytes())
        h.update("\x00".join(self.sensor_ids).encode())
        if self.n_time:
            h.update(f"{self.timestamps[0].isoformat()}|{self.freq}|{self.n_time}".encode())
        return h.hexdigest()


@dataclass(frozen=True)
class Split:
    """A chronological split: validation is the end of the training part."""

    train: SensorPanel
    valid: SensorPanel
    test: SensorPanel

    def sizes(self) -> dict[str, int]:
        return {"train": self.train.n_time, "valid": self.valid.n_time, "test": self.test.n_time}


def chronological_split(panel: SensorPanel, *, test: float = 0.2, valid: float = 0.1) -> Split:
    """Split in time order: ``[train | valid][test]``.

    ``test`` is the share of the whole panel held out at the end (0.2 gives the
    published 80/20 protocol of ``los-loop``); ``valid`` is the share of the
    *training part* kept at its end for early stopping, intervals and thresholds.
    The test part is never used to choose anything.
    """
    if not (0.0 < test < 1.0 and 0.0 < valid < 1.0):
        raise ValueError(f"test and valid must be in (0, 1), got test={test}, valid={valid}")
    n_train_all = round(panel.n_time * (1.0 - test))
    n_valid = round(n_train_all * valid)
    n_train = n_train_all - n_valid
    if min(n_train, n_valid, panel.n_time - n_train_all) < 1:
        steps = f"{panel.n_time} step{'' if panel.n_time == 1 else 's'}"
        raise ValueError(f"the data hold {steps}, too few to split {test=}, {valid=}")
    return Split(
        train=panel.slice(0, n_train),
        valid=panel.slice(n_train, n_train_all),
        test=panel.slice(n_train_all, panel.n_time),
    )
