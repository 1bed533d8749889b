"""Forward passes of N stacked copies of a small `nn.Sequential`, written out per layer.

`torch.func.vmap` over `functional_call` runs any module batched, but for the small MLPs of
meta-training its Python overhead per call cost more than the arithmetic it batches (measured:
`docs/benchmarks.md`, "Batched episodes"). For the layers here the batched computation is one
kernel per layer: a Linear is one `baddbmm` over the members, a BatchNorm1d one `batch_norm` over
N x F channels (so each member's running statistics update in place, as alone), a LayerNorm one
`layer_norm` with the members' affine parameters broadcast, dropout and elementwise activations
apply to the stacked activations as they are; any other layer is an error.

`stacked_recurrent` runs N stacked copies of an `nn.RNN`, `nn.GRU` or `nn.LSTM` (batch first,
one direction) step by step, each step one `baddbmm` over the members: PyTorch's CPU recurrent
kernels also loop over time steps, one member at a time, so for the small cells of meta-training
N members cost about what one does.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.GELU, nn.ELU, nn.SiLU, nn.LeakyReLU, nn.Identity)


def stacked_forward(module: nn.Sequential, state: dict[str, Tensor], x: Tensor) -> Tensor:
    """`module`'s output for each member: `state` maps its parameter and buffer names to the
    members' stacked tensors (dim 0), `x` is (N, B, F) (or (B, F), the same input for all).
    Uses `module.training` as the module itself would."""
    n = next(iter(state.values())).shape[0]
    if x.dim() == 2:
        x = x.expand(n, *x.shape)
    for name, layer in module.named_children():
        p = f"{name}."
        if isinstance(layer, nn.Linear):
            weight = state[p + "weight"].transpose(1, 2)
            bias = state.get(p + "bias")
            x = torch.bmm(x, weight) if bias is None else torch.baddbmm(bias[:, None], x, weight)
        elif isinstance(layer, nn.LayerNorm):
            x = F.layer_norm(x, layer.normalized_shape, eps=layer.eps)
            if layer.elementwise_affine:
                x = x * state[p + "weight"][:, None]
                if p + "bias" in state:
                    x = x + state[p + "bias"][:, None]
        elif isinstance(layer, nn.BatchNorm1d):
            x = _batch_norm(layer, state, p, x)
        elif isinstance(layer, nn.Dropout):
            x = F.dropout(x, layer.p, layer.training)
        elif isinstance(layer, ELEMENTWISE):
            x = layer(x)
        else:
            raise TypeError(f"layer {name} ({type(layer).__name__}) has no stacked form")
    return x


def _batch_norm(layer: nn.BatchNorm1d, state: dict[str, Tensor], p: str, x: Tensor) -> Tensor:
    """Per member and feature over the batch: the (N, B, F) activations as B rows of N x F
    channels, the members' statistics and affine parameters flattened alike (views, so the
    running statistics update in the stacked buffers)."""
    n, b, f = x.shape
    rows = x.transpose(0, 1).reshape(b, n * f)
    mean, var = state.get(p + "running_mean"), state.get(p + "running_var")
    if layer.momentum is None:  # a cumulative average: 1 / count, which members may not share
        raise TypeError(f"BatchNorm1d {p[:-1]} with momentum=None has no stacked form")
    training = layer.training or mean is None
    if layer.training and layer.track_running_stats:
        state[p + "num_batches_tracked"].add_(1)
    out = F.batch_norm(
        rows,
        None if mean is None else mean.view(-1),
        None if var is None else var.view(-1),
        state[p + "weight"].reshape(-1) if layer.affine else None,
        state[p + "bias"].reshape(-1) if layer.affine else None,
        training,
        layer.momentum,
        layer.eps,
    )
    return out.view(b, n, f).transpose(0, 1)


def stacked_recurrent(rnn: nn.RNNBase, state: dict[str, Tensor], prefix: str, x: Tensor) -> Tensor:
    """The last layer's outputs (N, B, T, H) of N stacked copies of `rnn` from a zero state:
    `state` maps `prefix` + its parameter names to the members' stacked tensors, `x` is
    (N, B, T, F). Gates in PyTorch's order (GRU: r, z, n; LSTM: i, f, g, o); dropout between
    layers as `rnn` applies it, from `rnn.training`."""
    if not rnn.batch_first or rnn.bidirectional or getattr(rnn, "proj_size", 0):
        raise TypeError(
            f"{type(rnn).__name__} has a stacked form only with batch_first=True, one "
            "direction and no projection"
        )
    n, b, t, _ = x.shape
    for layer in range(rnn.num_layers):
        key = f"{prefix}{{}}_l{layer}"
        w_ih, w_hh = state[key.format("weight_ih")], state[key.format("weight_hh")]
        b_ih, b_hh = state.get(key.format("bias_ih")), state.get(key.format("bias_hh"))
        # every step's input projection at once
        flat = x.reshape(n, b * t, x.shape[-1])
        gi = torch.bmm(flat, w_ih.transpose(1, 2))
        if b_ih is not None:
            gi = gi + b_ih[:, None]
        gi = gi.view(n, b, t, -1)
        w_hh_t = w_hh.transpose(1, 2)
        h = x.new_zeros(n, b, rnn.hidden_size)
        c = h
        outputs = []
        for step in range(t):
            gh = torch.bmm(h, w_hh_t) if b_hh is None else torch.baddbmm(b_hh[:, None], h, w_hh_t)
            g = gi[:, :, step]
            if rnn.mode == "LSTM":
                gates = g + gh
                i, f, _, o = torch.sigmoid(gates).chunk(4, -1)  # one kernel for three gates
                cand = torch.tanh(gates[..., 2 * rnn.hidden_size : 3 * rnn.hidden_size])
                c = f * c + i * cand
                h = o * torch.tanh(c)
            elif rnn.mode == "GRU":
                g_rz, g_n = g.split([2 * rnn.hidden_size, rnn.hidden_size], -1)
                h_rz, h_n = gh.split([2 * rnn.hidden_size, rnn.hidden_size], -1)
                r, z = torch.sigmoid(g_rz + h_rz).chunk(2, -1)
                cand = torch.tanh(g_n + r * h_n)
                h = cand + z * (h - cand)
            elif rnn.mode == "RNN_TANH":
                h = torch.tanh(g + gh)
            else:
                h = torch.relu(g + gh)
            outputs.append(h)
        x = torch.stack(outputs, 2)
        if rnn.dropout and layer < rnn.num_layers - 1:
            x = F.dropout(x, rnn.dropout, rnn.training)
    return x
