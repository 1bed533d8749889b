"""Param groups: biases and norms out of the weight decay.

AdamW recipes (Hugging Face's Trainer, nanoGPT) decay only the matrices: a tensor of one
dimension (a bias, a norm's gain) is not a map whose size weight decay should bound, and under
LAMB's trust ratio it steps at the lr itself (`lamb_free_below`), so a decay on it pulls at
the full lr.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor


def _tensor(p):
    """A parameter as torch's optimizers take it: a tensor, or a (name, tensor) pair."""
    if isinstance(p, tuple) and len(p) == 2:
        p = p[1]
    if not isinstance(p, Tensor):
        raise ValueError(f"split_vectors: {p!r} is not allowed: a tensor or a (name, tensor) pair")
    return p


def split_vectors(params: Iterable[Tensor] | Iterable[dict]) -> list[dict]:
    """`params` (tensors or param groups) as param groups in which each group's tensors of
    one dimension or none are moved to a copy of it with ``weight_decay=0.0``; a group left
    empty by the split is dropped. Every other setting of a group is kept."""
    params = list(params)
    if not params:
        raise ValueError("split_vectors got an empty parameter list")
    groups = params if isinstance(params[0], dict) else [{"params": params}]
    out = []
    for group in groups:
        if not isinstance(group, dict) or "params" not in group:
            raise ValueError(
                f"split_vectors: {group!r} is not allowed: give tensors or param groups "
                "(dicts with 'params'), not a mix"
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
