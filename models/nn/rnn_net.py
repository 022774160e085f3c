"""The network-wide recurrent network of the LSTM and GRU forecasters (and of TGC-LSTM's
LSTM path): every sensor's scaled value and observed flag plus the calendar features
once form one input vector per step; one gated cell runs over the window and a linear
head maps the last hidden state to every sensor's next ``horizon`` steps, plus a
per-sensor skip from the input window (see :mod:`models.forecasters.rnn`)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from models.nn.inputs import InputSpec
from models.nn.recurrent import CellKind, GatedCell, run_cell

SkipKind = Literal["linear", "last", "none"]


class NetworkRNN(nn.Module):
    """``[batch, window, node, feature]`` -> ``[batch, horizon, node]`` (scaled units).

    Parameters
    ----------
    n_nodes : sensors in the network.
    spec : the input features (``models.nn.inputs.InputSpec``).
    hidden : size of the recurrent state.
    horizon : steps forecast.
    kind : ``"lstm"`` or ``"gru"``.
    dropout : dropout on the input vector and on the last hidden state.
    skip : ``"linear"``, ``"last"`` or ``"none"`` (see the module docstring).
    """

    node_idx: Tensor  # buffers: which input features are per node / calendar
    time_idx: Tensor

    def __init__(
        self,
        n_nodes: int,
        spec: InputSpec,
        *,
        hidden: int,
        horizon: int,
        kind: CellKind,
        dropout: float = 0.0,
        skip: SkipKind = "linear",
        window: int = 12,
    ) -> None:
        super().__init__()
        if skip not in ("linear", "last", "none"):
            raise ValueError(f"skip must be 'linear', 'last' or 'none', got {skip!r}")
        names = spec.names
        node_idx = [names.index(n) for n in names if n not in spec.time_names]
        time_idx = [names.index(n) for n in spec.time_names]
        self.register_buffer("node_idx", torch.tensor(node_idx), persistent=False)
        self.register_buffer("time_idx", torch.tensor(time_idx, dtype=torch.long), persistent=False)
        self.n_nodes = n_nodes
        self.horizon = horizon
        self.skip = skip
        if skip == "linear":
            # [node, horizon, window], starting as persistence (weight 1 on the last step)
            init = torch.zeros(n_nodes, horizon, window)
            init[:, :, -1] = 1.0
            self.skip_weight = nn.Parameter(init)
        self.cell = GatedCell(n_nodes * len(node_idx) + len(time_idx), hidden, kind)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, horizon * n_nodes)

    def forward(self, x: Tensor) -> Tensor:
        batch, window, nodes, _ = x.shape
        per_node = x.index_select(-1, self.node_idx).reshape(batch, window, -1)  # [b, w, n*f]
        calendar = x[:, :, 0].index_select(-1, self.time_idx)  # [batch, window, time_feature]
        inputs = self.drop(torch.cat([per_node, calendar], dim=-1))  # [batch, window, input]
        _, state = run_cell(self.cell, inputs)
        out = self.head(self.drop(state[0])).view(batch, self.horizon, nodes)  # [b, h, node]
        if self.skip == "last":
            out = out + x[:, -1, :, 0].unsqueeze(1)
        elif self.skip == "linear":
            values = x[..., 0]  # [batch, window, node]
            out = out + torch.einsum("bwn,nhw->bhn", values, self.skip_weight)
        return out
