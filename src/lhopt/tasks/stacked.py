"""Forward passes of N stacked copies of a small `nn.Sequential`, written out per layer.

`torch.func.vmap` over `functional_call` runs any module batched, but for the small MLPs of
meta-training its Python overhead per call cost more than the arithmetic it batches (measured:
`docs/benchmarks.md`, "Batched episodes"). For the layers here the batched computation is one
kernel per layer: a Linear is one `baddbmm` over the members, a BatchNorm1d one `batch_norm` over
N x F channels (so each member's running statistics update in place, as alone), a LayerNorm one
`layer_norm` with the members' affine parameters broadcast, dropout and elementwise activations
apply to the stacked activations as they are; any other layer is an error.
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
