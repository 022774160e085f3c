"""The TGC-LSTM network (Cui et al., IEEE T-ITS, 2019) in three forms.

The paper's model, per time step ``t`` and hop ``k = 1..K``::

    GC_t^k = (W_gc^k ⊙ Ã^k ⊙ FFR) x_t                  graph convolution, one weight per pair
    gates  = σ(W [GC_t^1, .., GC_t^K, h_{t-1}] + b)     f, i, o and C̃ as in any LSTM
    C_t    = f_t ⊙ (Ã^K ⊙ FFR · w_N) ⊙ C_{t-1} + i_t ⊙ C̃_t

``Ã^k`` is the k-hop adjacency with self loops clamped to 1, ``FFR`` the free-flow
reachability. The graph convolution and the neighbour term are the sparse layers of
:mod:`models.nn.sparse_graph` (O(edges) memory); the gates are
:class:`models.nn.recurrent.GatedCell`.

Forms (``form``):

* ``"hybrid"`` (the default): the network-wide LSTM of :mod:`models.forecasters.rnn`
  (:class:`NetworkRNN`, hidden size free, same input, head and skip) **plus** a graph
  path whose gates see the K graph convolutions of the readings and whose cell carries
  the neighbour term, exactly as above: the paper's cell (:class:`PaperCell`, one unit
  per sensor, dense gates) with ``graph_cell="dense"``, or :class:`GraphPath` (a
  per-sensor state, one gate matrix shared by all sensors) with ``"shared"``. The graph
  path's head starts at zero, so the untrained network *is* the LSTM (the same weights
  for the same seed). The forecaster trains it in two stages (:meth:`TGCLSTMNet.train_only`):
  the LSTM path alone, then the graph path on top of the frozen LSTM, kept only when it
  lowers the validation loss (:meth:`TGCLSTMNet.drop_graph` otherwise): on a network
  where the graph carries nothing the model stays the LSTM.
* ``"paper"``: the paper's exact form: hidden size N (one unit per sensor) and dense
  gates over the K graph convolutions of all sensors (O(N²) weights), the neighbour term
  scaling each sensor's unit, a direct head and the per-sensor skip.
* ``"shared"``: the graph path alone (scales to tens of thousands of sensors).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from models.nn.inputs import InputSpec
from models.nn.recurrent import GatedCell, run_cell
from models.nn.rnn_net import NetworkRNN
from models.nn.sparse_graph import NeighbourScale, SparseHopConv
from models.nn.subgraphs import Part

Form = Literal["hybrid", "paper", "shared"]
SkipKind = Literal["linear", "last", "none"]
FORMS = ("hybrid", "paper", "shared")


def feature_indices(spec: InputSpec) -> tuple[list[int], list[int]]:
    """Indices of the per-sensor features after the value (mask) and of the calendar ones."""
    names = spec.names
    time_idx = [names.index(n) for n in spec.time_names]
    per_node = [k for k in range(1, len(names)) if k not in set(time_idx)]
    return per_node, time_idx


def time_locked_dropout(inputs: Tensor, p: float, training: bool) -> Tensor:
    """Dropout on ``[batch, time, ...]`` with one mask per sequence, the same at every step
    (variational dropout, Gal & Ghahramani 2016)."""
    if not training or p == 0.0:
        return inputs
    shape = (inputs.shape[0], 1, *inputs.shape[2:])  # [batch, 1, ...]: shared over time
    keep = torch.empty(shape, device=inputs.device, dtype=inputs.dtype).bernoulli_(1 - p)
    return inputs * keep / (1 - p)


class GraphPath(nn.Module):
    """The per-sensor graph LSTM: ``x`` ``[batch, window, node, feature]`` and its graph
    convolution ``gc`` ``[batch, window, node, K]`` -> ``[batch, horizon, node]``.

    Every sensor has its own state ``[batch, node, hidden]``; one gate matrix shared by
    all sensors sees ``[GC_t(i) (K values), per-sensor features of i, calendar, e_i,
    h_{t-1}(i)]`` (``e_i`` a learned embedding) and the neighbour term scales ``C_{t-1}``.
    The head starts at zero (``zero_head``): the path then adds nothing until trained.
    """

    def __init__(
        self,
        hops: Sequence[np.ndarray],
        num_nodes: int,
        *,
        n_features: int,
        horizon: int,
        hidden: int,
        embed: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.neighbour = NeighbourScale(hops[-1], num_nodes)
        self.embedding = nn.Parameter(torch.randn(num_nodes, embed) * 0.1)  # [N, embed]
        self.cell = GatedCell(len(hops) + (n_features - 1) + embed, hidden, "lstm")
        self.head = nn.Linear(hidden + embed, horizon)
        self.dropout = nn.Dropout(dropout)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor, gc: Tensor, part: Part | None = None) -> Tensor:
        """With ``part``, ``x`` and ``gc`` hold the part's sensors (``part.nodes``)."""
        embedding = self.embedding if part is None else self.embedding[part.nodes]
        parts = [gc, x[..., 1:]]
        if embedding.shape[1]:
            parts.append(embedding.expand(*x.shape[:2], -1, -1))  # [b, t, node, e]
        inputs = time_locked_dropout(torch.cat(parts, dim=-1), self.dropout.p, self.training)
        scale = self.neighbour(part).unsqueeze(1).to(x.dtype)  # [node, 1]
        _, (h, _) = run_cell(self.cell, inputs, cell_scale=scale)  # h [batch, node, hidden]
        if embedding.shape[1]:
            h = torch.cat([h, embedding.expand(x.shape[0], -1, -1)], dim=-1)
        return self.head(self.dropout(h)).transpose(1, 2)  # [batch, horizon, node]


class PaperCell(nn.Module):
    """The paper's dense form: hidden size N, gates over every sensor's K graph
    convolutions and per-sensor features plus the calendar once, neighbour-scaled cell."""

    node_idx: Tensor  # buffers, declared for type checkers
    time_idx: Tensor

    def __init__(
        self,
        hops: Sequence[np.ndarray],
        num_nodes: int,
        *,
        spec: InputSpec,
        horizon: int,
        dropout: float,
    ) -> None:
        super().__init__()
        per_node, time_idx = feature_indices(spec)
        self.register_buffer("node_idx", torch.tensor(per_node, dtype=torch.long), persistent=False)
        self.register_buffer("time_idx", torch.tensor(time_idx, dtype=torch.long), persistent=False)
        self.num_nodes = num_nodes
        self.horizon = horizon
        self.neighbour = NeighbourScale(hops[-1], num_nodes)
        width = num_nodes * (len(hops) + len(per_node)) + len(time_idx)
        self.cell = GatedCell(width, num_nodes, "lstm")
        self.head = nn.Linear(num_nodes, horizon * num_nodes)
        self.dropout = nn.Dropout(dropout)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor, gc: Tensor) -> Tensor:
        per_node = torch.cat([gc, x.index_select(-1, self.node_idx)], dim=-1).flatten(2)
        calendar = x[:, :, 0].index_select(-1, self.time_idx)  # [batch, time, time_feature]
        inputs = torch.cat([per_node, calendar], dim=-1)  # [batch, time, node * (K + f) + t]
        inputs = time_locked_dropout(inputs, self.dropout.p, self.training)
        scale = self.neighbour().to(x.dtype)  # [node]: one unit per sensor
        _, (h, _) = run_cell(self.cell, inputs, cell_scale=scale)
        out = self.head(self.dropout(h))
        return out.view(x.shape[0], self.horizon, self.num_nodes)


class TGCLSTMNet(nn.Module):
    """The TGC-LSTM network: ``x`` ``[batch, window, node, feature]`` -> ``[batch, horizon, node]``.

    Parameters
    ----------
    hops : K int64 arrays ``[2, E_k]`` (src j, dst i): the support of ``Ã^k ⊙ FFR``.
    num_nodes : N.
    spec : the input features (feature 0, the scaled reading, is convolved).
    horizon, window : forecast steps and input steps (the skip's size).
    form : ``"hybrid"``, ``"paper"`` or ``"shared"`` (module docstring).
    hidden : the LSTM path's state (``"hybrid"``).
    graph_hidden : each sensor's state in the graph path (``"hybrid"``, ``"shared"``).
    embed : the graph path's per-sensor embedding size (0 for none).
    skip : the per-sensor output skip, initialised to persistence: ``"linear"`` a learned
        linear map of the sensor's own window (LSTNet's highway), ``"last"`` the last
        value, ``"none"``.
    dropout : the LSTM path's dropout (input and last state), the paper form's
        time-locked dropout.
    graph_dropout : the graph path's time-locked input dropout and output dropout
        (``"hybrid"``, ``"shared"``).
    graph_cell : the hybrid's graph path: ``"dense"`` (the paper's cell) or ``"shared"``.
    dense_max_nodes : refuse dense gates (``form="paper"``, ``graph_cell="dense"``) above
        this many sensors (their weights are N²).
    """

    def __init__(
        self,
        hops: Sequence[np.ndarray],
        num_nodes: int,
        *,
        spec: InputSpec,
        horizon: int = 12,
        window: int = 12,
        form: Form = "hybrid",
        hidden: int = 128,
        graph_hidden: int = 8,
        embed: int = 4,
        skip: SkipKind = "linear",
        dropout: float = 0.0,
        graph_dropout: float = 0.0,
        graph_cell: Literal["dense", "shared"] = "shared",
        dense_max_nodes: int = 2000,
    ) -> None:
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"form must be one of {', '.join(FORMS)}, got {form!r}")
        if skip not in ("linear", "last", "none"):
            raise ValueError(f"skip must be 'linear', 'last' or 'none', got {skip!r}")
        if horizon < 1 or hidden < 1 or graph_hidden < 1 or embed < 0:
            raise ValueError(
                f"need horizon, hidden, graph_hidden >= 1 and embed >= 0; got "
                f"{horizon=}, {hidden=}, {graph_hidden=}, {embed=}"
            )
        if graph_cell not in ("dense", "shared"):
            raise ValueError(f"graph_cell must be 'dense' or 'shared', got {graph_cell!r}")
        dense = form == "paper" or (form == "hybrid" and graph_cell == "dense")
        if dense and num_nodes > dense_max_nodes:
            raise ValueError(
                f"dense gates (form='paper' or graph_cell='dense') need O(N²) = {num_nodes}² "
                f"weights; use graph_cell='shared' above {dense_max_nodes} sensors (or raise "
                "dense_max_nodes)"
            )
        self.num_nodes = num_nodes
        self.n_features = spec.n_features
        self.horizon = horizon
        self.window = window
        self.form: Form = form
        self.skip = skip
        # The LSTM path first: for one seed its initial weights are the LSTM's.
        self.lstm = (
            NetworkRNN(
                num_nodes, spec, hidden=hidden, horizon=horizon, kind="lstm",
                dropout=dropout, skip="none", window=window,
            )
            if form == "hybrid"
            else None
        )  # fmt: skip
        self.conv = SparseHopConv(hops, num_nodes)
        self.graph: GraphPath | PaperCell
        if dense:
            self.graph = PaperCell(
                hops, num_nodes, spec=spec, horizon=horizon,
                dropout=dropout if form == "paper" else graph_dropout,
            )  # fmt: skip
        else:
            self.graph = GraphPath(
                hops, num_nodes, n_features=spec.n_features, horizon=horizon,
                hidden=graph_hidden, embed=embed, dropout=graph_dropout,
            )  # fmt: skip
        if skip == "linear":
            init = torch.zeros(num_nodes, horizon, window)  # [node, horizon, window]
            init[:, :, -1] = 1.0  # persistence: weight 1 on the last input step
            self.skip_weight = nn.Parameter(init)
        self.use_graph = True  # False: the hybrid runs as its LSTM alone
        self.lstm_frozen = False  # True: the LSTM path stays in eval mode (no dropout)

    def train(self, mode: bool = True) -> TGCLSTMNet:
        """Set training mode; a frozen LSTM path (second stage) stays in eval mode, so the
        graph path learns on the forecasts the LSTM path will make, not dropout's."""
        super().train(mode)
        if self.lstm is not None and self.lstm_frozen:
            self.lstm.eval()
        return self

    def load_lstm(self, fitted: NetworkRNN) -> None:
        """Take a trained network-wide LSTM (the LSTM forecaster's network of the same
        settings, skip included) as this hybrid's LSTM path and skip."""
        if self.lstm is None:
            raise ValueError(f"form={self.form!r} has no LSTM path to load")
        state = dict(fitted.state_dict())
        skip = state.pop("skip_weight", None)
        if (skip is None) != (self.skip != "linear"):
            raise ValueError(f"the LSTM's skip must be this network's ({self.skip!r})")
        self.lstm.load_state_dict(state)
        if skip is not None:
            with torch.no_grad():
                self.skip_weight.copy_(skip)

    def graph_parameters(self) -> list[nn.Parameter]:
        """The graph path's weights (graph convolution, neighbour term, cell, head)."""
        return [*self.conv.parameters(), *self.graph.parameters()]

    def train_only(self, part: Literal["lstm", "graph"]) -> None:
        """Let gradients reach only the LSTM path and skip (``"lstm"``: the graph path is
        switched off) or only the graph path (``"graph"``: the rest frozen, the LSTM path in
        eval mode)."""
        graph = {id(p) for p in self.graph_parameters()}
        for param in self.parameters():
            param.requires_grad_((id(param) in graph) == (part == "graph"))
        self.use_graph = part == "graph"
        self.lstm_frozen = part == "graph"

    def drop_graph(self) -> None:
        """Zero the graph path's head: the hybrid is then exactly its LSTM path."""
        with torch.no_grad():
            self.graph.head.weight.zero_()
            self.graph.head.bias.zero_()
        self.use_graph = True

    @property
    def neighbour(self) -> NeighbourScale:
        """The neighbour term ``(Ã^K ⊙ FFR) w_N``."""
        return self.graph.neighbour

    def forward(self, x: Tensor) -> Tensor:
        """Forecast ``[batch, horizon, node]`` (scaled) from ``x`` ``[batch, window, node, F]``."""
        fixed = self.skip == "linear"
        if (
            x.ndim != 4
            or x.shape[2:] != (self.num_nodes, self.n_features)
            or (fixed and x.shape[1] != self.window)
        ):
            want = self.window if fixed else "window"
            raise ValueError(
                f"expected x [batch, {want}, {self.num_nodes}, {self.n_features}], "
                f"got {tuple(x.shape)}"
            )
        if self.lstm is not None and not self.use_graph:
            out = self.lstm(x)
        else:
            out = self.graph(x, self.conv(x[..., :1]))  # graph convolution [b, t, node, K]
            if self.lstm is not None:
                out = out + self.lstm(x)
        return self._skip(out, x, self.skip_weight if self.skip == "linear" else None)

    def _skip(self, out: Tensor, x: Tensor, weight: Tensor | None) -> Tensor:
        """``out`` plus the per-sensor skip of ``x`` (``weight`` ``[node, horizon, window]``
        for the linear skip)."""
        if self.skip == "last":
            out = out + x[:, -1, :, 0].unsqueeze(1)  # [batch, horizon, node]
        elif weight is not None:
            out = out + torch.einsum("bwn,nhw->bhn", x[..., 0], weight)
        return out

    @property
    def trains_by_part(self) -> bool:
        """Whether the trainable weights are all per sensor, per edge or shared, so that
        :meth:`forward_part` can train them (the shared graph path, not the dense cell)."""
        return isinstance(self.graph, GraphPath) and self.use_graph

    def global_offset(self, x: Tensor) -> Tensor | None:
        """The part of the forecast that reads every sensor, ``[batch, horizon, node]``: the
        hybrid's LSTM path (None for the other forms). It must be frozen to train by part."""
        if self.lstm is None:
            return None
        if any(p.requires_grad for p in self.lstm.parameters()):
            raise ValueError(
                "the hybrid's LSTM path reads every sensor and cannot train by subgraph; "
                "train it on the whole graph first (train_only('lstm')), then the graph path"
            )
        return self.lstm(x)

    def forward_part(self, x: Tensor, part: Part) -> Tensor:
        """The forecast of ``part``'s core without :meth:`global_offset`,
        ``[batch, horizon, n_core]``, from ``x`` ``[batch, window, n_sub, feature]`` of the
        part's sensors (core and halo). Equals ``forward`` on the whole graph minus the
        global offset, on the core sensors."""
        if not self.trains_by_part:
            raise ValueError(
                "only the shared graph cell trains by subgraph: the paper's dense gates "
                "(form='paper', graph_cell='dense') have weights for every pair of sensors "
                "(O(N²)); train them on the whole graph (subgraph_nodes=0)"
            )
        if x.ndim != 4 or x.shape[2:] != (part.n_sub, self.n_features):
            raise ValueError(
                f"expected x [batch, window, {part.n_sub}, {self.n_features}] for the part, "
                f"got {tuple(x.shape)}"
            )
        out = self.graph(x, self.conv(x[..., :1], part), part)  # [batch, horizon, n_sub]
        weight = self.skip_weight[part.nodes] if self.skip == "linear" else None
        return self._skip(out, x, weight).index_select(-1, part.core)

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
    def form(self) -> Form:
        return self.member(0).form

    def graph_weights(self) -> Tensor:
        """The mean graph-convolution weight per edge, ``[E]``, of the members whose
        forecasts use their graph path.

        Raises
        ------
        ValueError
            When no member does (training dropped every graph path: the weights are
            their initial values and influence nothing).
        """
        members = [self.member(m) for m in range(len(self.members))]
        weights = [m.conv.weight.detach().float() for m in members if m.use_graph]
        if not weights:
            raise ValueError(
                "this TGC-LSTM's training dropped its graph path (the graph did not improve "
                "its validation forecasts), so it forecasts as its LSTM stage and its graph "
                "weights influence nothing; there is no learned influence to explain"
            )
        return torch.stack(weights).mean(dim=0)
