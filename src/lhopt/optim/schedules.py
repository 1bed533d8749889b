"""Schedule shapes: the factor by which a run's learning rate is multiplied at each step.

A shape is a function `(step, total) -> factor` of the 1-based optimizer step and the budget.
The tuned baseline `adamw-cosine-tuned` runs lr x `warmup_cosine`; a `LearnedOptimizer` whose
policy was trained with a shape runs the policy's base lr x that shape, so the do-nothing policy
is already a good schedule and the policy learns where to deviate from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

WARMUP_FRACTION = 0.05


def constant(step: int, total: int) -> float:
    return 1.0


def warmup_cosine(step: int, total: int) -> float:
    """Linear warm-up over the first 5% of `total`, then cosine decay to 0 at step `total`."""
    warm = max(1, round(WARMUP_FRACTION * total))
    if step <= warm:
        return step / warm
    progress = (step - warm) / max(1, total - warm)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def warmup_linear(step: int, total: int) -> float:
    """Linear warm-up over the first 5% of `total`, then linear decay to 0 at step `total`:
    below the cosine in the first half of the decay, above it in the second."""
    warm = max(1, round(WARMUP_FRACTION * total))
    if step <= warm:
        return step / warm
    return max(0.0, 1.0 - (step - warm) / max(1, total - warm))


SCHEDULES: dict[str, Callable[[int, int], float]] = {
    "constant": constant,
    "cosine": warmup_cosine,
    "linear": warmup_linear,
}


def get(name: str) -> Callable[[int, int], float]:
    if name not in SCHEDULES:
        raise ValueError(f"schedule {name!r} is not allowed: one of {sorted(SCHEDULES)}")
    return SCHEDULES[name]
