"""One recurrent cell and one time loop, shared by LSTM, GRU and TGC-LSTM.

The gates follow the seed lecture's equations::

    f_t = σ(W_f [h_{t-1}, x_t] + b_f)      i_t = σ(W_i [h_{t-1}, x_t] + b_i)
    C̃_t = tanh(W_C [h_{t-1}, x_t] + b_C)   o_t = σ(W_o [h_{t-1}, x_t] + b_o)
    C_t = f_t * C_{t-1} + i_t * C̃_t         h_t = o_t * tanh(C_t)

    GRU: z_t = σ(W_z [h_{t-1}, x_t]), r_t = σ(W_r [h_{t-1}, x_t]),
         h_t = (1 - z_t) * h_{t-1} + z_t * tanh(W_h [r_t * h_{t-1}, x_t])

``W [h, x]`` is computed as ``W_x x + W_h h``: the four LSTM gates are one fused
matrix product on each side, and the input side ``W_x x`` is computed for every time
step at once before the loop (one large matmul instead of T small ones).

The cell works on the last axis, so the same code runs a network-wide LSTM (state
``[batch, hidden]``) and a per-sensor graph LSTM (state ``[batch, node, hidden]``).
TGC-LSTM differs only in the gate input (its graph convolution) and in scaling the
previous cell state by its neighbour term (``cell_scale``).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

CellKind = Literal["lstm", "gru"]
State = tuple[Tensor, ...]


class GatedCell(nn.Module):
    """An LSTM or GRU step over the last axis of its input.

    Parameters
    ----------
    input_size : size of the gate input ``x_t`` (last axis).
    hidden_size : size of ``h_t`` (and ``C_t`` for the LSTM).
    kind : ``"lstm"`` or ``"gru"``.
    """

    def __init__(self, input_size: int, hidden_size: int, kind: CellKind = "lstm") -> None:
        super().__init__()
        if kind not in ("lstm", "gru"):
            raise ValueError(f"cell kind must be 'lstm' or 'gru', got {kind!r}")
        self.kind: CellKind = kind
        self.hidden_size = hidden_size
        n_gates = 4 if kind == "lstm" else 3
        # Fused gates: [f, i, o, C̃] for the LSTM, [z, r, h̃] for the GRU.
        self.input_proj = nn.Linear(input_size, n_gates * hidden_size)
        self.hidden_proj = nn.Linear(hidden_size, n_gates * hidden_size, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = self.hidden_size**-0.5
        for weight in (self.input_proj.weight, self.hidden_proj.weight):
            nn.init.uniform_(weight, -bound, bound)
        nn.init.zeros_(self.input_proj.bias)
        if self.kind == "lstm":
            # Forget-gate bias 1: remember by default early in training (Jozefowicz et al.).
            nn.init.ones_(self.input_proj.bias[: self.hidden_size])

    def initial_state(self, like: Tensor) -> State:
        """Zero state for an input ``[..., input]`` (one time step): ``[..., hidden]``."""
        zeros = like.new_zeros((*like.shape[:-1], self.hidden_size))  # [..., hidden]
        return (zeros, zeros.clone()) if self.kind == "lstm" else (zeros,)

    def step(self, x_proj: Tensor, state: State, cell_scale: Tensor | None = None) -> State:
        """Advance one step from a pre-projected input ``x_proj = W_x x_t + b``."""
        h = state[0]
        if self.kind == "lstm":
            gates = x_proj + self.hidden_proj(h)  # [..., 4 * hidden]
            n = self.hidden_size
            # One sigmoid over the [f, i, o] block (same values as three calls): three
            # calls on strided chunks of a small per-sensor state are several times slower.
            f, i, o = torch.sigmoid(gates[..., : 3 * n]).chunk(3, dim=-1)
            c_prev = state[1] if cell_scale is None else state[1] * cell_scale
            c = f * c_prev + i * torch.tanh(gates[..., 3 * n :])
            return o * torch.tanh(c), c
        hidden_w = self.hidden_proj.weight  # [3 * hidden, hidden]
        xz, xr, xh = x_proj.chunk(3, dim=-1)
        hz, hr = (h @ hidden_w[: 2 * self.hidden_size].T).chunk(2, dim=-1)
        z = torch.sigmoid(xz + hz)
        r = torch.sigmoid(xr + hr)
        h_tilde = torch.tanh(xh + (r * h) @ hidden_w[2 * self.hidden_size :].T)
        return ((1 - z) * h + z * h_tilde,)


def run_cell(
    cell: GatedCell,
    inputs: Tensor,
    state: State | None = None,
    cell_scale: Tensor | None = None,
) -> tuple[Tensor, State]:
    """Run ``cell`` over ``inputs`` ``[batch, time, ..., input]``.

    Returns the hidden states ``[batch, time, ..., hidden]`` and the final state.
    ``cell_scale`` (broadcast to the cell state) multiplies ``C_{t-1}`` at every step.
    """
    x_proj = cell.input_proj(inputs)  # [batch, time, ..., gates * hidden], all steps at once
    if state is None:
        state = cell.initial_state(inputs[:, 0])
    outputs = []
    # unbind, not x_proj[:, t]: the backward of T slices would write T zero-filled copies
    # of the whole x_proj; unbind's backward stacks the T step gradients once.
    for x_t in x_proj.unbind(1):
        state = cell.step(x_t, state, cell_scale)
        outputs.append(state[0])
    return torch.stack(outputs, dim=1), state  # [batch, time, ..., hidden]
