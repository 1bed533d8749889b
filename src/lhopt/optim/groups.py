"""Param groups: biases and norms out of the weight decay.

AdamW recipes (Hugging Face's Trainer, nanoGPT) decay only the matrices: a bias or a norm's
gain sets an offset or a scale, not a map whose size weight decay should bound. Under CIAO's
trust ratio it matters more: the ratio scales matrices only, so a vector steps as AdamW does at
the policy's lr, a relative step meant for matrices, and its decay of lr * weight_decay per
step pulls at that lr.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor

from lhopt.optim.hparams import describe_value


def _tensor(p):
    """A parameter as torch's optimizers take it: a tensor, or a (name, tensor) pair."""
    if isinstance(p, tuple) and len(p) == 2:
        p = p[1]
    if not isinstance(p, Tensor):
        raise ValueError(
            f"split_vectors: {describe_value(p)} is not allowed: a tensor or a (name, tensor) pair"
        )
    return p


def split_vectors(params: Iterable[Tensor] | Iterable[dict]) -> list[dict]:
    """`params` (tensors, (name, tensor) pairs or param groups) as param groups in which each
    group's tensors of one dimension or none are moved to a copy of it with
    ``weight_decay=0.0``, placed after it; a group left empty by the split is dropped (so group
    indices shift). Every other setting of a group is kept."""
    if isinstance(params, Tensor | set) or not isinstance(params, Iterable):
        raise ValueError(
            f"split_vectors: {describe_value(params)} is not allowed: an iterable of tensors or "
            "of param groups (a list, a generator such as model.parameters())"
        )
    params = list(params)
    if not params:
        raise ValueError("split_vectors got an empty parameter list")
    groups = params if isinstance(params[0], dict) else [{"params": params}]
    out = []
    for group in groups:
        if not isinstance(group, dict) or "params" not in group:
            raise ValueError(
                f"split_vectors: {describe_value(group)} is not allowed: give tensors or param "
                "groups (dicts with 'params'), not a mix"
            )
        tensors = group["params"]
        tensors = [tensors] if isinstance(tensors, Tensor) else list(tensors)
        matrices = [p for p in tensors if _tensor(p).dim() > 1]
        vectors = [p for p in tensors if _tensor(p).dim() <= 1]
        if matrices:
            out.append({**group, "params": matrices})
        if vectors:
            out.append({**group, "params": vectors, "weight_decay": 0.0})
    return out
