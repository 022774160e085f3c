"""TGC-LSTM: the traffic graph-convolutional LSTM of Cui et al. (IEEE T-ITS, 2019), sparse.

The paper's model, per time step ``t`` and hop ``k = 1..K``::

    GC_t^k = (W_gc^k ⊙ Ã^k ⊙ FFR) x_t                  graph convolution, one weight per pair
    gates  = σ(W [GC_t^1, .., GC_t^K, h_{t-1}] + b)     f, i, o and C̃ as in any LSTM
    C_t    = f_t ⊙ (Ã^K ⊙ FFR · w_N) ⊙ C_{t-1} + i_t ⊙ C̃_t
    loss   = prediction loss + λ1 Σ_k |W_gc^k|_1 + λ2 |w_N|_2²

``Ã^k`` is the k-hop adjacency with self loops clamped to 1, ``FFR`` the free-flow
reachability (1 where one sensor can be driven to from the other within ``ffr_minutes``
at ``free_flow_kmh``). As in the authors' code ``w_N`` is a vector of length N, so the
neighbour term is a per-sensor scale of the previous cell state.

The graph convolution and the neighbour term are the sparse layers of
:mod:`models.nn.sparse_graph` (weights only on the pairs ``Ã^k ⊙ FFR`` allows; memory
grows with the edges, not with N²). The gates are :class:`models.nn.recurrent.GatedCell`
run by :func:`models.nn.recurrent.run_cell`, the cell and time loop of the plain LSTM,
with the graph convolution as gate input and the neighbour term as ``cell_scale``. The
gates come in two forms:

* ``gates="dense"``, the paper's: the K graph-convolution outputs of all sensors (plus
  each sensor's observed flag and the time of day, once) feed the gates, hidden size N:
  O(N²) parameters.
* ``gates="shared"``, the scalable one: every sensor has its own recurrent state
  ``[batch, node, hidden]``; one gate matrix shared by all sensors sees
  ``[GC_t(i) (K values), other inputs of i, e_i, h_{t-1}(i)]``, where ``e_i`` is a small
  learned per-sensor embedding: O(edges + N·hidden) parameters.

``gates="auto"`` takes the dense form up to ``dense_max_nodes`` sensors and the shared
one above. A direct head maps the last hidden state to all ``horizon`` steps, plus a
per-sensor skip that starts as persistence (LSTNet's autoregressive highway, Lai et al.
2018). Dropout is time-locked on the gate input (Gal & Ghahramani 2016) and applied to
the last hidden state. λ1 and λ2 are implemented (``lambda_gc``, ``lambda_nb``) but
default to 0, and ``ensemble`` averages independently trained networks; the
measurements behind these defaults are in ``docs/decisions.md`` (TGC-LSTM).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
import torch
from torch import Tensor, nn

from models.bundle import read_model_bundle
from models.forecasters.base import restore_forecaster
from models.forecasters.network import NetworkForecaster
from models.forecasters.windows import check_2d
from models.nn.devices import seeded
from models.nn.inputs import InputSpec, Scaler
from models.nn.recurrent import GatedCell, run_cell
from models.nn.sparse_graph import NeighbourScale, SparseHopConv
from models.nn.training import TrainConfig, TrainHistory, fit_network
from models.nn.weights import load_module_tensors
from models.panel import SensorPanel

GateMode = Literal["shared", "dense"]
SkipKind = Literal["graph", "linear", "last", "none"]


class TGCLSTMNet(nn.Module):
    """The TGC-LSTM network: ``x`` ``[batch, window, node, feature]`` -> ``[batch, horizon, node]``.

    Feature 0 of ``x`` is the scaled reading; it is the one that passes through the graph
    convolution. Any further features (time of day, weekend, observed mask) reach the
    gates directly: per sensor with ``gates="shared"``; with ``gates="dense"`` the
    per-sensor ones (mask) for every sensor and the ``time_features`` (the same for all
    sensors) once.

    Parameters
    ----------
    hops : K int64 arrays ``[2, E_k]`` (src j, dst i): the support of ``Ã^k ⊙ FFR``.
    num_nodes : N.
    n_features : features per sensor and step in ``x``.
    time_features : indices of the features that are the same for every sensor (calendar).
    horizon : steps forecast.
    hidden : recurrent state per sensor (``gates="shared"``); ignored by ``"dense"``,
        whose hidden size is N as in the paper.
    embed : size of the learned per-sensor embedding (``"shared"`` only; 0 for none).
    gates : ``"shared"`` (scalable, default) or ``"dense"`` (the paper's O(N²) gates).
    skip : what the output adds to the network's forecast, per sensor, all initialised to
        persistence: ``"graph"`` a learned linear map of the sensor's own ``window`` values
        *and* its K graph-convolution features (its neighbours' readings) to its
        ``horizon`` outputs (LSTNet's autoregressive highway, Lai et al. 2018, extended
        to the graph); ``"linear"`` the same on the sensor's own values only (as
        ``models.forecasters.rnn`` does); ``"last"`` the last value (persistence + learned change);
        ``"none"`` nothing.
    window : input steps (the size of the ``"graph"`` and ``"linear"`` skips).
    dropout : time-locked dropout on the gate input (one mask per sequence) and dropout on
        the last hidden state, during training.
    dense_max_nodes : refuse ``gates="dense"`` above this many sensors (its weights are N²).
    """

    node_idx: Tensor  # buffers, declared for type checkers
    time_idx: Tensor

    def __init__(
        self,
        hops: Sequence[np.ndarray],
        num_nodes: int,
        *,
        n_features: int = 1,
        time_features: Sequence[int] = (),
        horizon: int = 12,
        hidden: int = 32,
        embed: int = 8,
        gates: GateMode = "shared",
        skip: SkipKind = "linear",
        window: int = 12,
        dropout: float = 0.0,
        dense_max_nodes: int = 2000,
    ) -> None:
        super().__init__()
        if gates not in ("shared", "dense"):
            raise ValueError(f"gates must be 'shared' or 'dense', got {gates!r}")
        if skip not in ("graph", "linear", "last", "none"):
            raise ValueError(f"skip must be 'graph', 'linear', 'last' or 'none', got {skip!r}")
        if n_features < 1 or horizon < 1 or hidden < 1 or embed < 0:
            raise ValueError(
                f"need n_features >= 1, horizon >= 1, hidden >= 1 and embed >= 0; got "
                f"{n_features=}, {horizon=}, {hidden=}, {embed=}"
            )
        if any(not 0 < f < n_features for f in time_features):
            raise ValueError(
                f"time_features {list(time_features)} must index features 1..{n_features - 1}"
            )
        if gates == "dense" and num_nodes > dense_max_nodes:
            raise ValueError(
                f"gates='dense' needs O(N²) = {num_nodes}² weights; use gates='shared' above "
                f"{dense_max_nodes} sensors (or raise dense_max_nodes)"
            )
        self.num_nodes = num_nodes
        self.n_features = n_features
        self.horizon = horizon
        self.gates = gates
        self.skip = skip
        self.window = window
        k = len(hops)
        self.conv = SparseHopConv(hops, num_nodes)
        self.neighbour = NeighbourScale(hops[-1], num_nodes)
        self.dropout = nn.Dropout(dropout)
        per_node = [f for f in range(1, n_features) if f not in set(time_features)]
        self.register_buffer("node_idx", torch.tensor(per_node, dtype=torch.long), persistent=False)
        self.register_buffer(
            "time_idx", torch.tensor(list(time_features), dtype=torch.long), persistent=False
        )
        if gates == "shared":
            self.embedding = nn.Parameter(torch.randn(num_nodes, embed) * 0.1)  # [N, embed]
            self.cell = GatedCell(k + (n_features - 1) + embed, hidden, "lstm")
            self.head = nn.Linear(hidden + embed, horizon)
        else:
            self.register_parameter("embedding", None)
            width = num_nodes * (k + len(per_node)) + len(time_features)
            self.cell = GatedCell(width, num_nodes, "lstm")
            self.head = nn.Linear(num_nodes, horizon * num_nodes)
        if skip == "linear":
            init = torch.zeros(num_nodes, horizon, window)  # [node, horizon, window]
            init[:, :, -1] = 1.0  # persistence: weight 1 on the last input step
            self.skip_weight = nn.Parameter(init)
        elif skip == "graph":
            init = torch.zeros(num_nodes, horizon, window, 1 + k)  # [node, h, window, 1 + K]
            init[:, :, -1, 0] = 1.0  # persistence: the sensor's own last value
            self.skip_weight = nn.Parameter(init)
        # A zero head makes the untrained network the persistence forecast (with a skip).
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def gate_input(self, x: Tensor, gc: Tensor) -> Tensor:
        """What the gates see at each step: the graph convolution ``gc`` ``[b, t, node, K]``
        of the readings plus the other features of ``x``."""
        if self.gates == "shared":
            parts = [gc, x[..., 1:]]
            if self.embedding.shape[1]:
                parts.append(self.embedding.expand(*x.shape[:2], -1, -1))  # [b, t, node, e]
            return torch.cat(parts, dim=-1)  # [batch, time, node, K + F - 1 + embed]
        per_node = torch.cat([gc, x.index_select(-1, self.node_idx)], dim=-1).flatten(2)
        calendar = x[:, :, 0].index_select(-1, self.time_idx)  # [batch, time, time_feature]
        return torch.cat([per_node, calendar], dim=-1)  # [batch, time, node * (K + f) + t_f]

    def time_locked_dropout(self, inputs: Tensor) -> Tensor:
        """Dropout on the gate input ``[batch, time, ...]`` with one mask per sequence, the
        same at every step (variational dropout, Gal & Ghahramani 2016): the usual choice for
        recurrent inputs, and T times fewer random numbers, which matters on CPU at
        thousands of sensors."""
        p = self.dropout.p
        if not self.training or p == 0.0:
            return inputs
        shape = (inputs.shape[0], 1, *inputs.shape[2:])  # [batch, 1, ...]: shared over time
        keep = torch.empty(shape, device=inputs.device, dtype=inputs.dtype).bernoulli_(1 - p)
        return inputs * keep / (1 - p)

    def forward(self, x: Tensor) -> Tensor:
        """Forecast ``[batch, horizon, node]`` (scaled) from ``x`` ``[batch, window, node, F]``."""
        fixed_window = self.skip in ("graph", "linear")  # one skip weight per input step
        if (
            x.ndim != 4
            or x.shape[2:] != (self.num_nodes, self.n_features)
            or (fixed_window and x.shape[1] != self.window)
        ):
            want = self.window if fixed_window else "window"
            raise ValueError(
                f"expected x [batch, {want}, {self.num_nodes}, {self.n_features}], "
                f"got {tuple(x.shape)}"
            )
        scale = self.neighbour()  # [node]
        if self.gates == "shared":
            scale = scale.unsqueeze(1)  # [node, 1]: broadcast over each sensor's hidden units
        gc = self.conv(x[..., :1])  # [batch, time, node, K]
        inputs = self.time_locked_dropout(self.gate_input(x, gc))
        _, (h, _) = run_cell(self.cell, inputs, cell_scale=scale.to(x.dtype))
        batch = x.shape[0]
        if self.gates == "shared":
            if self.embedding.shape[1]:
                h = torch.cat([h, self.embedding.expand(batch, -1, -1)], dim=-1)
            out = self.head(self.dropout(h)).transpose(1, 2)  # [batch, horizon, node]
        else:
            out = self.head(self.dropout(h)).view(batch, self.horizon, self.num_nodes)
        if self.skip == "last":
            out = out + x[:, -1, :, 0].unsqueeze(1)  # [batch, horizon, node]
        elif self.skip == "linear":
            out = out + torch.einsum("bwn,nhw->bhn", x[..., 0], self.skip_weight)
        elif self.skip == "graph":
            channels = torch.cat([x[..., :1], gc], dim=-1)  # [batch, window, node, 1 + K]
            out = out + torch.einsum("bwnc,nhwc->bhn", channels, self.skip_weight)
        return out

    def penalty(self, lambda_gc: float, lambda_nb: float) -> Tensor:
        """``λ1 |W_gc|_1 + λ2 |w_N|_2²``: the paper's regularisation, added to the loss."""
        return lambda_gc * self.conv.penalty() + lambda_nb * self.neighbour.penalty()

    @staticmethod
    def hops_from_state(state: dict[str, np.ndarray], prefix: str = "") -> list[np.ndarray]:
        """The K hop edge lists ``[2, E_k]`` stored in a saved state (so a bundle loads
        without its road graph): the inverse of what ``SparseHopConv`` keeps as buffers.
        ``prefix`` is the network's key prefix in ``state`` (e.g. ``"members.0."``)."""
        try:
            crow = np.asarray(state[f"{prefix}conv.crow"], dtype=np.int64)
            col = np.asarray(state[f"{prefix}conv.col"], dtype=np.int64)
            hop_ptr = np.asarray(state[f"{prefix}conv.hop_ptr"], dtype=np.int64)
        except KeyError as exc:
            raise ValueError(
                f"saved TGC-LSTM state lacks {exc.args[0]!r}; the bundle was written by another "
                "version: retrain it"
            ) from None
        k = len(hop_ptr) - 1
        if k < 1 or (len(crow) - 1) % k:
            raise ValueError(
                f"saved TGC-LSTM graph is inconsistent ({len(crow) - 1} rows for {k} hops); "
                "the bundle is corrupted: retrain it"
            )
        n = (len(crow) - 1) // k
        rows = np.repeat(np.arange(k * n, dtype=np.int64), np.diff(crow))  # [E]
        hops = []
        for h in range(k):
            sl = slice(int(hop_ptr[h]), int(hop_ptr[h + 1]))
            hops.append(np.stack([col[sl], rows[sl] - h * n]))  # [2, E_k]
        return hops


class TGCLSTMEnsemble(nn.Module):
    """The mean forecast of independently trained :class:`TGCLSTMNet` members (one member
    is the plain network). Members share the graph, hence the edge order of their weights."""

    def __init__(self, members: Sequence[TGCLSTMNet]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member network")
        self.members = nn.ModuleList(members)

    def member(self, index: int) -> TGCLSTMNet:
        """Member network ``index``."""
        net = self.members[index]
        assert isinstance(net, TGCLSTMNet)
        return net

    def forward(self, x: Tensor) -> Tensor:
        """``[batch, horizon, node]``: the members' mean forecast of ``x``."""
        if len(self.members) == 1:
            return self.member(0)(x)
        return torch.stack([member(x) for member in self.members]).mean(dim=0)

    @property
    def gates(self) -> GateMode:
        return self.member(0).gates

    def graph_weights(self) -> Tensor:
        """The members' mean graph-convolution weight per edge, ``[E]``."""
        weights = [self.member(m).conv.weight.detach().float() for m in range(len(self.members))]
        return torch.stack(weights).mean(dim=0)


@dataclass(frozen=True)
class TGCLSTMConfig:
    """Hyper-parameters of :class:`TGCLSTM` (all recorded in the bundle).

    Attributes
    ----------
    window, horizon : input steps and forecast steps.
    level : central level of the split-conformal intervals.
    hops : K, the number of graph-convolution hops (the paper uses 3).
    ffr_minutes : free-flow travel-time budget of FFR; None = one step of the panel's grid
        (the paper's "reachable within one time interval"); 0 turns FFR off (k-hop only).
    free_flow_kmh : free-flow speed of FFR.
    hidden : recurrent state per sensor (``gates="shared"``).
    embed : learned per-sensor embedding size (``gates="shared"``; 0 for none).
    gates : ``"auto"`` (default): ``"dense"`` up to ``dense_max_nodes`` sensors, where the
        paper's O(N²) gates are affordable and are more accurate on los-loop, else
        ``"shared"`` (O(edges + N·hidden)); or either form explicitly.
    dense_max_nodes : largest network given dense gates (by ``"auto"``, and allowed for an
        explicit ``"dense"``: its weights grow with N²).
    skip : per-sensor output skip (see :class:`TGCLSTMNet`): ``"graph"``, ``"linear"``,
        ``"last"`` or ``"none"``.
    dropout : time-locked dropout on the gate input and dropout on the last hidden state.
    lambda_gc : λ1, weight of the L1 norm of the graph-convolution weights (0 by default:
        see ``docs/decisions.md``).
    lambda_nb : λ2, weight of the squared L2 norm of the neighbour weights (0 by default).
    time_of_day, day_of_week, mask : input features besides the reading (see
        ``models.nn.inputs.InputSpec``).
    ensemble : networks trained independently (seeds ``train.seed * ensemble + m``) whose
        forecasts are averaged; training and prediction cost grow with it.
    train : optimiser, epochs, early stopping, seed, device.
    """

    window: int = 12
    horizon: int = 12
    level: float = 0.9
    hops: int = 3
    ffr_minutes: float | None = None
    free_flow_kmh: float = 100.0
    hidden: int = 16
    embed: int = 8
    gates: GateMode | Literal["auto"] = "auto"
    dense_max_nodes: int = 1000
    skip: SkipKind = "linear"
    dropout: float = 0.5
    lambda_gc: float = 0.0
    lambda_nb: float = 0.0
    time_of_day: bool = True
    day_of_week: bool = False
    mask: bool = True
    ensemble: int = 1
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.ensemble < 1:
            raise ValueError(f"ensemble must be >= 1 member, got {self.ensemble}")
        if self.window < 1 or self.horizon < 1:
            raise ValueError(f"window and horizon must be >= 1, got {self.window}, {self.horizon}")
        if not 0.0 < self.level < 1.0:
            raise ValueError(f"interval level must be in (0, 1), got {self.level}")
        if self.hops < 1:
            raise ValueError(f"hops (K) must be >= 1, got {self.hops}")
        if self.ffr_minutes is not None and not self.ffr_minutes >= 0:
            raise ValueError(f"ffr_minutes must be >= 0 or None, got {self.ffr_minutes}")
        if not self.free_flow_kmh > 0:
            raise ValueError(f"free_flow_kmh must be > 0, got {self.free_flow_kmh}")
        if self.hidden < 1 or self.embed < 0:
            raise ValueError(f"hidden must be >= 1 and embed >= 0, got {self.hidden}, {self.embed}")
        if self.lambda_gc < 0 or self.lambda_nb < 0:
            raise ValueError(f"λ1 and λ2 must be >= 0, got {self.lambda_gc}, {self.lambda_nb}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.gates not in ("auto", "shared", "dense"):
            raise ValueError(f"gates must be 'auto', 'shared' or 'dense', got {self.gates!r}")
        if self.dense_max_nodes < 1:
            raise ValueError(f"dense_max_nodes must be >= 1, got {self.dense_max_nodes}")
        if self.skip not in ("graph", "linear", "last", "none"):
            raise ValueError(f"skip must be 'graph', 'linear', 'last' or 'none', got {self.skip!r}")

    @property
    def inputs(self) -> InputSpec:
        """The input features the network sees."""
        return InputSpec(time_of_day=self.time_of_day, day_of_week=self.day_of_week, mask=self.mask)

    def gates_for(self, num_nodes: int) -> GateMode:
        """The gate form used for a network of ``num_nodes`` sensors (resolves ``"auto"``)."""
        if self.gates != "auto":
            return self.gates
        return "dense" if num_nodes <= self.dense_max_nodes else "shared"

    def hyper(self) -> dict[str, Any]:
        """The model's hyper-parameters without the training options (``config.json``)."""
        return {k: v for k, v in asdict(self).items() if k != "train"}


class TGCLSTM(NetworkForecaster):
    """The registered TGC-LSTM forecaster (``"tgclstm"``); it needs ``panel.graph``.

    Parameters
    ----------
    config : hyper-parameters (default :class:`TGCLSTMConfig` with ``DEFAULT_TRAIN``).
    train : training options; replaces ``config.train``.
    hyper : fields of :class:`TGCLSTMConfig` to replace, e.g. ``TGCLSTM(hidden=16)`` (this
        is how ``models.forecasters.factory.build_model`` passes ``window``, ``horizon`` and
        ``level``).
    """

    name: ClassVar[str] = "tgclstm"
    USES_GRAPH: ClassVar[bool] = True
    PROBABILISTIC: ClassVar[bool] = False
    DEFAULT_TRAIN: ClassVar[TrainConfig] = TrainConfig(epochs=200, patience=20, loss="huber")

    def __init__(
        self, config: TGCLSTMConfig | None = None, *, train: TrainConfig | None = None, **hyper: Any
    ) -> None:
        config = config or TGCLSTMConfig(train=self.DEFAULT_TRAIN)
        known = set(TGCLSTMConfig.__dataclass_fields__) - {"train"}
        unknown = sorted(set(hyper) - known)
        if unknown:
            raise TypeError(f"unknown TGC-LSTM option(s) {unknown}; known: {sorted(known)}")
        self.config = replace(config, **hyper, train=train or config.train)
        self.window = self.config.window
        self.horizon = self.config.horizon
        self.level = self.config.level
        self.sensor_ids = ()
        self.halfwidth = None
        self.net: TGCLSTMEnsemble | None = None
        self.scaler: Scaler | None = None
        self.history: TrainHistory | None = None  # of the first member
        self.histories: list[TrainHistory] = []
        self.device = torch.device("cpu")
        self.graph_info: dict[str, Any] = {}
        self.coords: np.ndarray | None = None
        self.fingerprint: str | None = None
        self.valid_metrics: dict[str, Any] | None = None

    # ------------------------------------------------------------------ training
    def hop_lists(self, panel: SensorPanel) -> tuple[list[np.ndarray], dict[str, Any]]:
        """The K edge lists ``Ã^k ⊙ FFR`` of ``panel.graph`` and a record of how they were made."""
        graph = panel.graph
        if graph is None:
            raise ValueError(
                "tgclstm needs a road graph: load a data set with one (los-loop, simulated, "
                "metr-la) or pass --adjacency PATH with a CSV data set"
            )
        cfg = self.config
        minutes = cfg.ffr_minutes
        if minutes is None:
            minutes = panel.freq.total_seconds() / 60.0 if panel.n_time > 1 else 5.0
        use_ffr = minutes > 0
        hops = [
            np.asarray(
                graph.hops(
                    k,
                    minutes=minutes if use_ffr else None,
                    free_flow_kmh=cfg.free_flow_kmh if use_ffr else None,
                ),
                dtype=np.int64,
            )
            for k in range(1, cfg.hops + 1)
        ]
        # GraphLike does not promise distances; RoadGraph says whether FFR had real lengths.
        has_distances = getattr(graph, "has_distances", None)
        if not use_ffr:
            ffr = "off (k-hop neighbourhoods only)"
        elif has_distances is False:
            ffr = "hop-count fallback (the graph has no distances or coordinates)"
        else:
            ffr = "road distances"
        info = {
            "ffr_minutes": minutes if use_ffr else None,
            "free_flow_kmh": cfg.free_flow_kmh if use_ffr else None,
            "ffr": ffr,
            "edges_per_hop": [int(h.shape[1]) for h in hops],
            "num_nodes": int(graph.num_nodes),
            "gates": self.config.gates_for(int(graph.num_nodes)),
        }
        return hops, info

    def member_seed(self, member: int) -> int:
        """Seed of ensemble member ``member``: distinct across members and across the
        ``train.seed`` of different fits (``roadcast train --seeds``)."""
        return self.config.train.seed * self.config.ensemble + member

    def build_net(
        self,
        hops: Sequence[np.ndarray],
        num_nodes: int,
        gates: GateMode | None = None,
        member: int = 0,
    ) -> TGCLSTMNet:
        """A fresh network for these hop lists (initial weights from ``member_seed``);
        ``gates`` overrides the form ``config.gates_for(num_nodes)`` picks."""
        cfg = self.config
        with seeded(self.member_seed(member)):
            return TGCLSTMNet(
                hops,
                num_nodes,
                n_features=cfg.inputs.n_features,
                time_features=[cfg.inputs.names.index(n) for n in cfg.inputs.time_names],
                horizon=cfg.horizon,
                hidden=cfg.hidden,
                embed=cfg.embed,
                gates=gates or cfg.gates_for(num_nodes),
                dense_max_nodes=max(cfg.dense_max_nodes, num_nodes if gates else 0),
                skip=cfg.skip,
                window=cfg.window,
                dropout=cfg.dropout,
            )

    def fit(self, panel: SensorPanel, *, valid: SensorPanel | None = None) -> Self:
        """Train on ``panel``; with ``valid``, early-stop on it and calibrate intervals."""
        check_2d(panel, self.name)
        hops, info = self.hop_lists(panel)
        cfg = self.config
        self.sensor_ids = panel.sensor_ids
        self.scaler = Scaler.fit(panel)
        lambdas = (cfg.lambda_gc, cfg.lambda_nb)

        def penalty(module: nn.Module) -> Tensor:
            return module.penalty(*lambdas)  # type: ignore[operator]

        members, self.histories = [], []
        for member in range(cfg.ensemble):
            net = self.build_net(hops, panel.n_nodes, member=member)
            self.histories.append(
                fit_network(
                    net,
                    panel,
                    valid,
                    window=cfg.window,
                    horizon=cfg.horizon,
                    scaler=self.scaler,
                    spec=cfg.inputs,
                    config=replace(cfg.train, seed=self.member_seed(member)),
                    extra_loss=penalty if any(lambdas) else None,
                )
            )
            members.append(net)
        self.net = TGCLSTMEnsemble(members)
        self.history = self.histories[0]
        self.graph_info = info
        self.coords = None if panel.coords is None else np.array(panel.coords)
        self.finish_network_fit(panel, valid, cfg.train.device)
        return self

    # ------------------------------------------------------------------ prediction
    def network(self) -> TGCLSTMEnsemble | None:
        return self.net

    def input_spec(self) -> InputSpec:
        return self.config.inputs

    def influence(self) -> dict[str, np.ndarray]:
        """The learned graph-convolution weights, one per (hop, source, target) edge.

        Returns
        -------
        dict of ``[E]`` arrays: int64 ``hop`` (1..K), ``source`` (j), ``target`` (i) and
        float32 ``weight`` = ``W_gc^hop[i, j]``, how strongly sensor j feeds sensor i (the
        members' mean with an ensemble).
        """
        if self.net is None:
            raise RuntimeError(f"{self.name}: call fit() or load() before influence()")
        conv = self.net.member(0).conv
        with torch.no_grad():
            return {
                "hop": conv.hop_of_edge().cpu().numpy(),
                "source": conv.col.cpu().numpy().copy(),
                "target": conv.targets().cpu().numpy(),
                "weight": self.net.graph_weights().cpu().numpy().copy(),
            }

    # ------------------------------------------------------------------ bundles
    def describe(self) -> dict[str, Any]:
        return self.config.hyper()

    def save(self, directory: str | Path) -> None:
        """Write the bundle: weights (with the hop edge lists) and ``config.json``."""
        self.save_network(
            directory,
            self.config.train,
            graph=self.graph_info,
            coords=None if self.coords is None else self.coords.tolist(),
            history=None if self.history is None else self.history.to_dict(),
            histories=[h.to_dict() for h in self.histories],
        )

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        """Rebuild from a bundle (no road graph needed: the edge lists are in the weights);
        the network goes to ``auto`` (CUDA when present, else CPU)."""
        bundle = read_model_bundle(directory, cls.name)
        config = bundle.config
        try:
            train = replace(TrainConfig.from_dict(config["train"]), device="auto")
            model = cls(TGCLSTMConfig(**config["hyper"], train=train))
            restore_forecaster(model, config)
            model.scaler = Scaler.from_dict(config["scaler"])
            hops = TGCLSTMNet.hops_from_state(bundle.tensors, prefix="members.0.")
            graph = dict(config.get("graph") or {})
            coords = config.get("coords")
            gates = graph["gates"]
        except (KeyError, TypeError) as exc:
            raise ValueError(
                f"bundle {directory} lacks or mangles {exc}; it was written by another "
                "version of tgclstm: retrain it"
            ) from None
        # The form the bundle was trained with, whatever "auto" would pick in this version.
        n = len(model.sensor_ids)
        net = TGCLSTMEnsemble(
            [model.build_net(hops, n, gates=gates, member=m) for m in range(model.config.ensemble)]
        )
        load_module_tensors(net, bundle.tensors)
        model.net = model.place_loaded(net)
        model.graph_info = graph
        model.coords = None if coords is None else np.asarray(coords, dtype=np.float64)
        return model
