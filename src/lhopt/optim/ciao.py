"""CIAO: the customizable inner adaptive optimizer that an LHOPT controller drives.

An AdamW-family optimizer parameterised the way the controller moves it (`ombeta1 = 1 - beta1`,
...). Bias corrections are running products of the betas actually used, so any hyperparameter of
any group may change between steps. With clipping, LAMB and the extras off it is AdamW.

The update is written as small functions over lists of tensors of one device and dtype (the
foreach kernels' unit, as in torch/optim/adamw.py); `lhopt.optim.reference` writes the same
update out per tensor, and the tests hold the two together. Every `feature_every` steps CIAO
also measures statistics of training for the controller's features (`lhopt.optim.stats`).
"""

from __future__ import annotations

import functools
import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable
from itertools import chain

import torch
from torch import Tensor

from lhopt.optim.hparams import DEFAULTS, HPARAMS, check_group, check_value
from lhopt.optim.stats import (
    STEP_STAT_NAMES,
    TENSOR_STAT_NAMES,
    StepStatistics,
    raw_statistics,
)

__all__ = ["CIAO", "STEP_STAT_NAMES", "TENSOR_STAT_NAMES", "LOW_PRECISION", "state_dtype"]

_TINY = 1e-30

# Parameters of these dtypes keep their optimizer state, and compute their update, in float32:
# in float16 the epsilon term underflows to 0 for the small epsilons the controller reaches
# (giving 0/0 where a second moment is 0), and in bfloat16 a beta2 near 1 rounds to 1.
LOW_PRECISION = (torch.float16, torch.bfloat16)
# CPU tensors at least this large get buffers kept between steps (`CIAO._scratch_for`): a new
# one costs page faults at every step; smaller ones come from the allocator's free lists.
_SCRATCH_BYTES = 1 << 20


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the optimizer state, and of the update's arithmetic, for parameters of
    `dtype`: float32 for float16 and bfloat16, their own dtype otherwise."""
    return torch.float32 if dtype in LOW_PRECISION else dtype


# ---------------------------------------------------------------------------------------------
# The math, over lists of tensors of one device and dtype.
# ---------------------------------------------------------------------------------------------


def advance_bias_corrections(
    states: list[dict], beta1: float, beta2: float
) -> tuple[list[float], list[float]]:
    """Count a step in each tensor's state; return bc1 = 1 - prod(beta1), bc2 = 1 - prod(beta2)
    over the betas this tensor has seen, which keeps them exact when the betas change."""
    for s in states:
        s["step"] += 1
        s["beta1_product"] *= beta1
        s["beta2_product"] *= beta2
    return [1.0 - s["beta1_product"] for s in states], [1.0 - s["beta2_product"] for s in states]


def update_moments(
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    grads: list[Tensor],
    exp_avg_scales: list[float],
    *,
    beta1: float,
    beta2: float,
    grad_scale: float,
    adamax: bool,
) -> list[float]:
    """m <- beta1 m + (1-beta1) c g;  v <- beta2 v + (1-beta2) (c g)^2  (or max(beta2 v, |c g|)).

    The first moment is stored as m = scale * m_tilde with a scalar scale per tensor, so that a
    clipped step (c < 1) costs one lerp of m_tilde, as an unclipped one does:
    with S' = beta1 S + (1-beta1) c and w = (1-beta1) c / S', lerp(m_tilde, g, w) * S' is the new
    m. Returns the new scales; with c = 1 they stay exactly 1 and this is AdamW's update.
    """
    new_scales = [beta1 * s + (1.0 - beta1) * grad_scale for s in exp_avg_scales]
    weights = [(1.0 - beta1) * grad_scale / s for s in new_scales]
    if all(w == weights[0] for w in weights):
        torch._foreach_lerp_(exp_avgs, grads, weights[0])
    else:  # tensors that joined at different times: rare
        for m, g, w in zip(exp_avgs, grads, weights, strict=True):
            m.lerp_(g, w)
    for i, (m, scale) in enumerate(zip(exp_avgs, new_scales, strict=True)):
        if scale < 1e-3:  # long, heavy clipping: fold the scale back in before it underflows
            m.mul_(scale)
            new_scales[i] = 1.0
    torch._foreach_mul_(exp_avg_sqs, beta2)
    if adamax:
        abs_grads = torch._foreach_abs(grads)
        if grad_scale != 1.0:
            torch._foreach_mul_(abs_grads, grad_scale)
        torch._foreach_maximum_(exp_avg_sqs, abs_grads)
    else:
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=(1.0 - beta2) * grad_scale**2)
    return new_scales


def _into(out: list[Tensor | None] | None, new, into, tensors, others=None) -> list[Tensor]:
    """The foreach op `new(tensors[, others])`, computed by `into(t[, o], out=buffer)` (the same
    values) into the buffers `out` holds, into new tensors where it holds None."""
    if out is None or all(b is None for b in out):
        return new(tensors) if others is None else new(tensors, others)
    rest = [i for i, b in enumerate(out) if b is None]
    made = {}
    if rest:
        sub = [tensors[i] for i in rest]
        fresh = new(sub) if others is None else new(sub, [others[i] for i in rest])
        made = dict(zip(rest, fresh, strict=True))
    return [
        made[i] if b is None else into(t, out=b) if others is None else into(t, others[i], out=b)
        for i, (t, b) in enumerate(zip(tensors, out, strict=True))
    ]


def denominators(
    exp_avg_sqs: list[Tensor],
    bias_corrections2: list[float],
    *,
    epsilon: float,
    adamax: bool,
    out: list[Tensor | None] | None = None,
) -> tuple[list[Tensor], list[float]]:
    """Denominators d and per-tensor coefficients k with sqrt(v_hat) + eps = k * d.

    d = sqrt(v) + eps * sqrt(bc2) and k = 1 / sqrt(bc2): the bias correction then folds into the
    scalar step size, which saves AdamW's pass dividing every element by sqrt(bc2).
    For AdaMax, d = v + eps (its running max needs no bias correction) and k = 1.

    The epsilon term is kept at or above the smallest normal number of the state's dtype: below
    that it would round to 0 and an element whose moments are both 0 would give 0 / 0.
    `out`: per tensor, a buffer of its shape to write d into (the same values as a new
    tensor) or None.
    """
    tiny = torch.finfo(exp_avg_sqs[0].dtype).tiny
    if adamax:
        c = max(epsilon, tiny)
        new = functools.partial(torch._foreach_add, scalar=c)
        denom = _into(out, new, functools.partial(torch.add, other=c), exp_avg_sqs)
        return denom, [1.0] * len(exp_avg_sqs)
    sqrt_bc2 = [math.sqrt(bc) for bc in bias_corrections2]
    denom = _into(out, torch._foreach_sqrt, torch.sqrt, exp_avg_sqs)
    torch._foreach_add_(denom, [max(epsilon * r, tiny) for r in sqrt_bc2])
    return denom, [1.0 / r for r in sqrt_bc2]


def adaptive_updates(
    params: list[Tensor],
    exp_avgs: list[Tensor],
    denoms: list[Tensor],
    coefs: list[float],
    *,
    weight_decay: float,
    out: list[Tensor | None] | None = None,
) -> list[Tensor]:
    """The update u = coef * m_tilde / d (= m_hat / (sqrt(v_hat) + eps)), plus weight_decay * p
    when the decay is part of the update; written into `out` when given."""
    updates = _into(out, torch._foreach_div, torch.div, exp_avgs, denoms)
    torch._foreach_mul_(updates, coefs)
    if weight_decay != 0.0:
        torch._foreach_add_(updates, params, alpha=weight_decay)
    return updates


def is_row_sparse(grad: Tensor) -> bool:
    """Whether a gradient has a row (along the first dimension) of zeros, as an embedding
    table's has for the rows a batch did not read. One read of a flag: asked once per tensor."""
    if grad.dim() < 2:
        return False
    return bool((grad.flatten(1) == 0).all(1).any())


EMBEDDING_RMS = 0.5  # an embedding table's rms at its first step: nn.Embedding's is 1


def is_embedding(p: Tensor) -> bool:
    """Whether a row-sparse tensor is at an embedding table's scale: an rms of at least
    EMBEDDING_RMS and at least twice what PyTorch's default initialisation gives its shape
    (`default_init_norm`). Not a hidden layer that a dead unit marked (at PyTorch's scale,
    0.58 for a layer of one input), nor a table initialised small (GPT-2's 0.02). One host
    read, asked once per row-sparse tensor."""
    if p.numel() == 0:
        return False
    norm = float(torch.linalg.vector_norm(p.detach(), dtype=state_dtype(p.dtype)))
    return norm >= max(EMBEDDING_RMS * math.sqrt(p.numel()), 2.0 * default_init_norm(p))


def _decay_factor(p: Tensor, state: dict, matrices: float, tables: float) -> float:
    """The factor of a tensor's decoupled decay: `matrices` for a dense matrix, `tables` for an
    embedding table, 1 for the rest (vectors, and row-sparse tensors at a smaller scale)."""
    if p.dim() < 2:
        return 1.0
    if not state.get("row_sparse", False):
        return matrices
    return tables if state.get("embedding", False) else 1.0


def lamb_free_tensors(params: list[Tensor], row_sparse: list[bool], fraction: float) -> list[bool]:
    """Which of a group's tensors `lamb_free_below = fraction` takes off the trust ratio: the
    dense matrices (two or more dimensions, not row-sparse, not empty) whose rms is below
    `fraction` times the median (the upper one, for an even count) of their rms. A tensor the
    ratio would keep a fixed fraction of its norm per step cannot grow from a small start (a
    positional table at std 0.02 beside weights at 0.1) as AdamW's step lets it; one
    initialised at zero is freed. Row-sparse tables (an embedding's, often at std 1) neither
    set the median nor are freed. One host read per tensor, once."""
    dense = [
        p.dim() > 1 and p.numel() > 0 and not rs for p, rs in zip(params, row_sparse, strict=True)
    ]
    rms = {
        i: float(torch.linalg.vector_norm(p.detach(), dtype=state_dtype(p.dtype)))
        / math.sqrt(p.numel())
        for i, (p, d) in enumerate(zip(params, dense, strict=True))
        if d
    }
    if not rms:
        return [False] * len(params)
    floor = fraction * statistics.median_high(rms.values())
    return [i in rms and rms[i] < floor for i in range(len(params))]


def default_init_norm(p: Tensor) -> float:
    """The norm PyTorch's default initialisation (`nn.Linear`'s, `nn.Conv*`'s) gives a tensor
    of `p`'s shape: rms 1 / sqrt(3 fan-in), fan-in = numel / size(0) (0 for an empty one)."""
    if p.numel() == 0:
        return 0.0
    fan_in = p.numel() // p.shape[0]
    return math.sqrt(p.numel() / (3 * fan_in))


def _from_adamw_names(aliases: dict, own: dict) -> dict:
    """CIAO's hyperparameters from AdamW's names for them, `betas` (b1, b2) -> ombeta1 = 1 - b1,
    ombeta2 = 1 - b2 and `eps` -> epsilon (None: not given), so that AdamW's arguments carry
    over; an alias beside its own name in `own` is a ValueError naming both (in the
    constructor, `own` holds the CIAO names given other than at their defaults)."""
    out = {}
    betas, eps = aliases.get("betas"), aliases.get("eps")
    if betas is not None:
        try:
            b1, b2 = (float(b) for b in betas)  # numbers, numpy or 0-d tensors, as AdamW takes
        except (TypeError, ValueError):
            b1 = b2 = math.nan
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(
                f"betas={betas!r} is not allowed: a pair (beta1, beta2), each in [0, 1), as AdamW's"
            )
        clash = sorted({"ombeta1", "ombeta2"} & set(own))
        if clash:
            raise ValueError(
                f"betas={betas!r} and {clash[0]}={own[clash[0]]!r} set the same "
                "hyperparameter: give one"
            )
        out["ombeta1"], out["ombeta2"] = 1.0 - b1, 1.0 - b2
    if eps is not None:
        if "epsilon" in own:
            raise ValueError(
                f"eps={eps!r} and epsilon={own['epsilon']!r} set the same hyperparameter: give one"
            )
        out["epsilon"] = eps
    return out


def lamb_trust_ratios(
    params: list[Tensor],
    updates: list[Tensor],
    update_norm_emas: list[Tensor | None],
    ema_corrections: list[float],
    *,
    ombeta: float,
    power: float,
    min_trust: float,
    norm_floors: list[float] | None = None,
    norm_ceilings: list[float] | None = None,
) -> list[Tensor | None]:
    """Per-tensor trust ratio (||p|| / EMA of ||u||)^power, clamped; None for vectors and biases.

    The EMA (bias-corrected by `ema_corrections`, the running 1 - prod(beta)) smooths the update
    norm so that one noisy step does not jerk the ratio. `norm_floors` (one per tensor, 0: none)
    are the least norms the ratio counts (`lamb_norm_floor`), `norm_ceilings` (0: none) the
    most (`lamb_norm_ceiling`; a floor above its ceiling wins).
    """
    floors = norm_floors if norm_floors is not None else [0.0] * len(params)
    ceilings = norm_ceilings if norm_ceilings is not None else [0.0] * len(params)
    if params and params[0].device.type == "cuda":  # a bucket: one device
        on = [i for i, ema in enumerate(update_norm_emas) if ema is not None]
        if not on:
            return [None] * len(params)
        return _trust_ratios_batched(
            params,
            updates,
            update_norm_emas,
            ema_corrections,
            on,
            ombeta,
            power,
            min_trust,
            floors,
            ceilings,
        )
    trusts: list[Tensor | None] = []
    for p, u, ema, corr, floor, ceiling in zip(
        params, updates, update_norm_emas, ema_corrections, floors, ceilings, strict=True
    ):
        if ema is None:
            trusts.append(None)
            continue
        ema.lerp_(torch.linalg.vector_norm(u), ombeta)
        p_norm = torch.linalg.vector_norm(p)
        if ceiling > 0:  # a cap that underflows the dtype would read as a zero norm
            p_norm = p_norm.clamp_max(max(ceiling, torch.finfo(p_norm.dtype).tiny))
        if floor > 0:
            p_norm = p_norm.clamp_min(floor)
        trusts.append(_trust(p_norm, ema / corr, power, min_trust))
    return trusts


def _trust_ratios_batched(
    params: list[Tensor],
    updates: list[Tensor],
    update_norm_emas: list[Tensor | None],
    ema_corrections: list[float],
    on: list[int],
    ombeta: float,
    power: float,
    min_trust: float,
    floors: list[float],
    ceilings: list[float] | None = None,
) -> list[Tensor | None]:
    """`lamb_trust_ratios` for the tensors `on` (those with an EMA) in a fixed number of
    kernels rather than a dozen per tensor: on a GPU small tensors' steps are bound by kernel
    launches. The same arithmetic up to the norms' rounding; the CPU keeps the per-tensor form,
    which the tests and the episodes' batched kernels compare against."""
    emas = [update_norm_emas[i] for i in on]
    torch._foreach_lerp_(emas, torch._foreach_norm([updates[i] for i in on]), ombeta)
    ema_hats = torch._foreach_div(emas, [ema_corrections[i] for i in on])
    p_norms = torch._foreach_norm([params[i] for i in on])
    if ceilings is not None and any(ceilings[i] > 0 for i in on):  # scalars: no device copy
        tiny = torch.finfo(p_norms[0].dtype).tiny  # a cap below it would read as a zero norm
        caps = [max(ceilings[i], tiny) if ceilings[i] > 0 else math.inf for i in on]
        torch._foreach_clamp_max_(p_norms, caps)
    if any(floors[i] > 0 for i in on):
        torch._foreach_clamp_min_(p_norms, [floors[i] for i in on])
    ratios = _trust(torch.stack(p_norms), torch.stack(ema_hats), power, min_trust).unbind()
    trusts: list[Tensor | None] = [None] * len(params)
    for i, ratio in zip(on, ratios, strict=True):
        trusts[i] = ratio
    return trusts


def _trust(p_norm: Tensor, ema_hat: Tensor, power: float, min_trust: float) -> Tensor:
    """(||p|| / the bias-corrected EMA of ||u||)^power, clamped to [min_trust, 1/min_trust];
    1 before the ratio means anything (a zero norm)."""
    ratio = torch.where(
        (p_norm > 0) & (ema_hat > 0), p_norm / ema_hat.clamp_min(_TINY), torch.ones_like(p_norm)
    )
    # 1 / min_trust may lie beyond the dtype's range (min_trust may be as small as wished).
    max_trust = min(1.0 / min_trust, torch.finfo(ratio.dtype).max)
    return (ratio**power).clamp(min_trust, max_trust)


def apply_updates(
    params: list[Tensor],
    *,
    lr: float,
    weight_decay: float | list[float],
    updates: list[Tensor] | None,
    exp_avgs: list[Tensor],
    denoms: list[Tensor],
    coefs: list[float],
) -> None:
    """p <- (1 - lr * weight_decay) p - lr * u, with the decay here the decoupled one (one per
    tensor where a list).

    `updates=None` is AdamW's case, where nothing changed u = coef * m_tilde / d after it was
    formed: one addcdiv then applies it without materialising u.
    """
    if isinstance(weight_decay, list):
        torch._foreach_mul_(params, [1.0 - lr * wd for wd in weight_decay])
    elif weight_decay != 0.0:
        torch._foreach_mul_(params, 1.0 - lr * weight_decay)
    if updates is None:
        torch._foreach_addcdiv_(params, exp_avgs, denoms, [-lr * c for c in coefs])
    else:
        torch._foreach_add_(params, updates, alpha=-lr)


def _buckets(params: list[Tensor]) -> dict[tuple, list[Tensor]]:
    """Parameters grouped by (device, dtype), as foreach kernels need."""
    out: dict[tuple, list[Tensor]] = defaultdict(list)
    for p in params:
        out[(p.device, p.dtype)].append(p)
    return out


def _largest_norm(buckets: dict[tuple, list[Tensor]]) -> float:
    """The largest gradient norm a group may have: sqrt of the largest value of its state's
    dtype (1.8e19 for float32). Beyond it a gradient's square, the second moment, overflows
    even where every element is finite, so the step is skipped like one with a NaN."""
    return min(
        (math.sqrt(torch.finfo(state_dtype(dtype)).max) for _, dtype in buckets),
        default=math.inf,
    )


def _working_tensors(bucket: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """The parameters and gradients the update computes with: the tensors themselves, or
    float32 copies of low-precision ones (written back into the parameters after the step)."""
    if bucket[0].dtype in LOW_PRECISION:
        return [p.float() for p in bucket], [p.grad.float() for p in bucket]
    return bucket, [p.grad for p in bucket]


# ---------------------------------------------------------------------------------------------
# The optimizer: argument checks, state, bookkeeping.
# ---------------------------------------------------------------------------------------------


def _check_param(p: Tensor) -> None:
    if torch.is_complex(p):
        raise ValueError("CIAO does not support complex parameters; view them as real")
    if p.is_meta:
        raise ValueError(
            f"a parameter of shape {tuple(p.shape)} is on the 'meta' device, which holds no data "
            "for CIAO to update: materialise the model first (e.g. model.to_empty(device='cpu'), "
            "then initialise its parameters)"
        )


class CIAO(torch.optim.Optimizer):
    """Customizable inner adaptive optimizer (AdamW family), controllable between steps.

    Args:
        params: parameters or param groups, as for any `torch.optim.Optimizer`.
        lr, ombeta1, ombeta2, epsilon, weight_decay: AdamW's hyperparameters, with the betas given
            as ``1 - beta`` (the controller scales these multiplicatively).
        matrix_decay_factor: the decoupled weight decay of dense matrices (two or more
            dimensions, not row-sparse: not an embedding table's) is ``weight_decay`` times this;
            embedding tables take ``table_decay_factor``, the rest (biases, norms, other
            row-sparse tensors) ``weight_decay`` itself. 1: no change for dense matrices.
            (With ``decay_in_update`` the decay is not decoupled and this does not apply.)
        table_decay_factor: the decoupled weight decay of embedding tables (row-sparse, with
            an rms at their first step of at least 0.5 and twice PyTorch's default for their
            shape, as ``nn.Embedding`` initialises them: `is_embedding`) is ``weight_decay``
            times this. 1: as every tensor. A table counts as one where its first gradient
            leaves a row unread: a small table whose first batch reads every row counts as a
            dense matrix, as a tied input/output table does. A state saved before this existed
            tells its tables from their rms when loaded.
        lr_factor: multiplies lr in the update (default 1): the factor of a schedule under the
            lr a controller steers, set before each step (`lhopt.optim.schedules`).
        clip_fraction: clip each group's gradient norm to this fraction of a rolling maximum of
            its past norms (None: no clipping). The maximum decays by ``1 - grad_clip_ombeta``
            per step.
        lamb_power, lamb_min_trust, lamb_update_norm_ombeta: LAMB trust ratio
            ``(||p|| / EMA||u||) ** lamb_power`` clamped to ``[min_trust, 1/min_trust]``, applied
            to tensors of two or more dimensions; ``lamb_power=0`` switches it off.
        lamb_sparse: apply the trust ratio also to row-sparse tensors: those whose first
            gradient has a row (along the first dimension) of zeros, as an embedding table's
            has for the rows its first batch did not read. False steps them as AdamW does.
        lamb_free_below: take a dense matrix off the trust ratio for good (it steps as AdamW's)
            when, at its first step under the ratio, its rms is below this fraction of the
            median rms of the group's dense matrices stepping then (`lamb_free_tensors`); 0: no
            tensor is decided (one already freed stays freed).
        lamb_norm_floor: the trust ratio counts a dense matrix's norm as at least this multiple
            of the norm PyTorch's default initialisation gives its shape (`default_init_norm`),
            so that a matrix initialised far below that scale (GPT-2's std 0.02 in a narrow
            layer) is not slowed by its scale alone; row-sparse tensors are not floored; 0: off.
        lamb_norm_ceiling: the trust ratio counts a dense matrix's norm as at most this multiple
            of that norm (a floor above it wins), so that a matrix whose scale the model leaves
            free (a read-out beside the tables it multiplies) grows past it by steps of a fixed
            size rather than by a fixed fraction of itself; row-sparse tensors are not capped;
            0: off.
        adamax: use an infinity-norm denominator ``max(beta2 v, |g|)``.
        decay_in_update: add weight decay to the adaptive update (so LAMB scales it) instead of
            decoupling it as AdamW does.
        feature_every: measure the feature statistics every this many steps (0: never).
        stat_samples: the statistics read a fixed strided sample of about this many elements
            of each tensor (all of a smaller one), weighted by size; they estimate ratios and
            cosines, which a sample of thousands of elements gives to within a few percent.

    A step with a NaN or Inf gradient, or a group gradient norm whose square overflows the
    state's dtype (above 1.8e19 in float32), changes nothing (parameters, moments, counters),
    is counted in `skipped_steps` and shows in the `skip_rate` statistic. Deciding this costs
    one read of a scalar per step, as `torch.amp.GradScaler` does. float16 and bfloat16
    parameters keep their state in float32 and are updated in float32 (see `state_dtype`).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = DEFAULTS["lr"],
        lr_factor: float = DEFAULTS["lr_factor"],
        ombeta1: float = DEFAULTS["ombeta1"],
        ombeta2: float = DEFAULTS["ombeta2"],
        epsilon: float = DEFAULTS["epsilon"],
        weight_decay: float = DEFAULTS["weight_decay"],
        clip_fraction: float | None = DEFAULTS["clip_fraction"],
        grad_clip_ombeta: float = DEFAULTS["grad_clip_ombeta"],
        lamb_power: float = DEFAULTS["lamb_power"],
        lamb_min_trust: float = DEFAULTS["lamb_min_trust"],
        lamb_update_norm_ombeta: float = DEFAULTS["lamb_update_norm_ombeta"],
        lamb_sparse: bool = DEFAULTS["lamb_sparse"],
        lamb_free_below: float = DEFAULTS["lamb_free_below"],
        lamb_norm_floor: float = DEFAULTS["lamb_norm_floor"],
        lamb_norm_ceiling: float = DEFAULTS["lamb_norm_ceiling"],
        adamax: bool = DEFAULTS["adamax"],
        decay_in_update: bool = DEFAULTS["decay_in_update"],
        feature_every: int = 4,
        stat_samples: int = 2048,
        *,
        matrix_decay_factor: float = DEFAULTS["matrix_decay_factor"],
        table_decay_factor: float = DEFAULTS["table_decay_factor"],
        betas: tuple[float, float] | None = None,
        eps: float | None = None,
    ) -> None:
        defaults = dict(
            lr=lr,
            lr_factor=lr_factor,
            ombeta1=ombeta1,
            ombeta2=ombeta2,
            epsilon=epsilon,
            weight_decay=weight_decay,
            matrix_decay_factor=matrix_decay_factor,
            table_decay_factor=table_decay_factor,
            clip_fraction=clip_fraction,
            grad_clip_ombeta=grad_clip_ombeta,
            lamb_power=lamb_power,
            lamb_min_trust=lamb_min_trust,
            lamb_update_norm_ombeta=lamb_update_norm_ombeta,
            lamb_sparse=lamb_sparse,
            lamb_free_below=lamb_free_below,
            lamb_norm_floor=lamb_norm_floor,
            lamb_norm_ceiling=lamb_norm_ceiling,
            adamax=adamax,
            decay_in_update=decay_in_update,
        )
        own = {
            n: defaults[n] for n in ("ombeta1", "ombeta2", "epsilon") if defaults[n] != DEFAULTS[n]
        }
        defaults |= _from_adamw_names({"betas": betas, "eps": eps}, own)
        for name, value in defaults.items():
            check_value(name, value)
        self._stats = StepStatistics(feature_every, stat_samples)
        # Per parameter on the CPU, buffers its denominators and updates are written into
        # (`_scratch_for`): a new tensor of a large model's size costs the CPU its page faults
        # at every step, more than the arithmetic. Not state: never saved nor copied.
        self._scratch: dict[int, dict] = {}
        # Optimizer-wide state besides the statistics (saved by state_dict): per-group rolling
        # max of the gradient norm and the step counters.
        self._group_norm_max: list[float] = []
        self.steps = 0  # steps attempted (taken or skipped)
        self.skipped_steps = 0
        self._checked: dict[int, tuple] = {}  # group index -> hyperparameters last validated
        super().__init__(params, defaults)

    @property
    def feature_every(self) -> int:
        """Measure the statistics every this many steps (0: never)."""
        return self._stats.feature_every

    @feature_every.setter
    def feature_every(self, value: int) -> None:
        self._stats.feature_every = value

    @property
    def noise_floor(self) -> float:
        """The floor of the gradient noise statistic (`lhopt.optim.stats.statistics_from_raw`),
        a feature option of the policy that reads the statistics; 0 by default."""
        return self._stats.noise_floor

    @noise_floor.setter
    def noise_floor(self, value: float) -> None:
        self._stats.noise_floor = float(value)

    @property
    def stat_samples(self) -> int:
        """The statistics sample about this many elements of each tensor."""
        return self._stats.stat_samples

    @stat_samples.setter
    def stat_samples(self, value: int) -> None:
        self._stats.stat_samples = value

    def add_param_group(self, param_group: dict) -> None:
        aliases = {k: param_group[k] for k in ("betas", "eps") if k in param_group}
        if aliases:  # validated before the caller's dict is changed
            translated = _from_adamw_names(aliases, param_group)
            for k in aliases:
                del param_group[k]
            param_group |= translated
        check_group(param_group)
        super().add_param_group(param_group)
        # Checked on the group as torch made it (a list of tensors, whatever the caller passed:
        # a generator, named parameters); a refused group is taken out again.
        try:
            for p in self.param_groups[-1]["params"]:
                _check_param(p)
        except ValueError:
            self.param_groups.pop()
            raise
        self._group_norm_max.append(0.0)

    # -- the step --------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Callable[[], float | Tensor] | None = None) -> float | Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        groups = []
        for gi, group in enumerate(self.param_groups):
            # Validate what a user or controller wrote into the group, once per change.
            values = tuple((type(v), v) for v in map(group.get, HPARAMS))
            if values != self._checked.get(gi):
                check_group(group, unknown_ok=True)
                self._checked[gi] = values
            params = [p for p in group["params"] if p.grad is not None]
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError(
                    "CIAO does not support sparse gradients; use dense gradients "
                    "(e.g. nn.Embedding(sparse=False))"
                )
            groups.append(_buckets(params))
        # Counted once the step is known to be valid: a refused step leaves every counter as it was.
        self.steps += 1
        self._stats.count_step()
        if not any(groups):
            return loss

        # One host read decides both the skip and the clipping coefficients.
        norms = self._group_grad_norms(groups)
        if not all(n <= _largest_norm(buckets) for n, buckets in zip(norms, groups, strict=True)):
            self.skipped_steps += 1
            self._stats.count_skip()
            return loss

        for group, buckets in zip(self.param_groups, groups, strict=True):
            if group["lamb_power"] > 0 and group["lamb_free_below"] > 0:
                self._decide_free(group, [p for bucket in buckets.values() for p in bucket])

        measure = self._stats.measures(self.steps)
        measured: list[tuple[Tensor, float, float]] = []
        any_clipped = False
        for gi, (group, buckets) in enumerate(zip(self.param_groups, groups, strict=True)):
            if not buckets:
                continue
            grad_scale = self._clip_scale(gi, group, norms[gi])
            any_clipped |= grad_scale < 1.0
            lr = group["lr"] * group["lr_factor"]
            for raw, decay in self._step_group(group, buckets, grad_scale, measure):
                measured.append((raw, lr, decay))
        if any_clipped:
            self._stats.count_clip()
        self._stats.add(measured)
        return loss

    def _group_grad_norms(self, groups: list[dict[tuple, list[Tensor]]]) -> list[float]:
        """Each group's gradient norm (0.0 for a group without gradients), in one host read."""
        per_group, device = [], None
        for buckets in groups:
            if not buckets:
                continue
            norms = []
            for bucket in buckets.values():
                grads = [p.grad for p in bucket]
                # In the state's dtype: a float16 norm would overflow at 65504.
                if bucket[0].dtype in LOW_PRECISION:
                    per_tensor = torch._foreach_norm(grads, dtype=torch.float32)
                else:
                    per_tensor = torch._foreach_norm(grads)
                # Combined in float64, so that the sum of squares over tensors cannot overflow.
                norms.append(torch.stack(per_tensor).to(torch.float64))
            device = device or norms[0].device
            flat = torch.cat([n.to(device) for n in norms]) if len(norms) > 1 else norms[0]
            per_group.append(torch.linalg.vector_norm(flat).to(device))
        values = iter(torch.stack(per_group).tolist())
        return [next(values) if buckets else 0.0 for buckets in groups]

    def _clip_scale(self, gi: int, group: dict, norm: float) -> float:
        """Coefficient for this group's gradients: fraction * rolling max / norm, at most 1."""
        fraction = group["clip_fraction"]
        decayed = self._group_norm_max[gi] * (1.0 - group["grad_clip_ombeta"])
        self._group_norm_max[gi] = max(decayed, norm)
        if fraction is None or norm == 0.0:
            return 1.0
        return min(1.0, fraction * self._group_norm_max[gi] / norm)

    def _step_group(
        self, group: dict, buckets: dict[tuple, list[Tensor]], grad_scale: float, measure: bool
    ) -> list[tuple[Tensor, float]]:
        """One step of one param group; returns, if `measure`, its raw statistics with the
        decoupled decay they were applied with (one pair per decay its tensors took), else []."""
        beta1, beta2 = 1.0 - group["ombeta1"], 1.0 - group["ombeta2"]
        lr, wd, eps = group["lr"] * group["lr_factor"], group["weight_decay"], group["epsilon"]
        adamax, in_update = group["adamax"], group["decay_in_update"]
        # Weight decay inside the update (LAMB then scales it), or decoupled from it as in AdamW.
        decay_in, decay_out = (wd, 0.0) if in_update else (0.0, wd)
        lamb = group["lamb_power"] > 0
        raw_sums: dict[float, Tensor] = {}  # decoupled decay -> raw statistics
        for bucket in buckets.values():
            states = [self._param_state(p) for p in bucket]
            # The tensors the trust ratio scales this step (None: none of them).
            trusted = None
            if lamb:
                trusted = [
                    p.dim() > 1
                    and p.numel() > 0  # an empty tensor has no norm to trust
                    and (group["lamb_sparse"] or not s.get("row_sparse", False))
                    and not s.get("lamb_free", False)
                    for p, s in zip(bucket, states, strict=True)
                ]
            params, grads = _working_tensors(bucket)
            exp_avgs = [s["exp_avg"] for s in states]
            exp_avg_sqs = [s["exp_avg_sq"] for s in states]
            bc1, bc2 = advance_bias_corrections(states, beta1, beta2)
            scales = update_moments(
                exp_avgs,
                exp_avg_sqs,
                grads,
                [s["exp_avg_scale"] for s in states],
                beta1=beta1,
                beta2=beta2,
                grad_scale=grad_scale,
                adamax=adamax,
            )
            for s, scale in zip(states, scales, strict=True):
                s["exp_avg_scale"] = scale
            scratch = self._scratch_for(bucket, params)
            denoms, d_coefs = denominators(
                exp_avg_sqs, bc2, epsilon=eps, adamax=adamax, out=scratch and scratch("denoms")
            )
            # m_hat = m_coef * m_tilde and update = u_coef * m_tilde / denom: scalars per tensor.
            m_coefs = [scale / b for scale, b in zip(scales, bc1, strict=True)]
            u_coefs = [c / k for c, k in zip(m_coefs, d_coefs, strict=True)]

            # The update is materialised only when something changes it after it is formed.
            updates, trusts = None, [None] * len(bucket)
            if lamb or in_update:
                updates = adaptive_updates(
                    params,
                    exp_avgs,
                    denoms,
                    u_coefs,
                    weight_decay=decay_in,
                    out=scratch and scratch("updates"),
                )
            if trusted is not None:
                trusts = self._lamb_trust_ratios(group, states, params, updates, trusted)
                for u, t in zip(updates, trusts, strict=True):
                    if t is not None:
                        u.mul_(t)
            decays = decay_out
            matrices, tables = group["matrix_decay_factor"], group["table_decay_factor"]
            if decay_out and (matrices != 1.0 or tables != 1.0):
                decays = [
                    decay_out * _decay_factor(p, s, matrices, tables)
                    for p, s in zip(bucket, states, strict=True)
                ]
            if measure:
                # the tensors of each decay apart, since the step's size depends on it
                cols = (bucket, params, grads, exp_avgs, denoms, updates, trusts, scales)
                cols += (m_coefs, d_coefs)
                parts = {decay_out: cols}  # one decay: the bucket as it is
                if isinstance(decays, list):
                    parts = {
                        d: tuple(
                            None
                            if c is None
                            else [v for v, x in zip(c, decays, strict=True) if x == d]
                            for c in cols
                        )
                        for d in set(decays)
                    }
                for decay, (b, ps, gs, ms, ds, us, ts, ss, mc, dc) in parts.items():
                    raw = raw_statistics(
                        self._stats.plan(b, ps), ps, gs, ms, ds, us, ts, ss, mc, dc, epsilon=eps
                    )
                    before = raw_sums.get(decay)
                    raw_sums[decay] = raw if before is None else before + raw.to(before.device)
            apply_updates(
                params,
                lr=lr,
                weight_decay=decays,
                updates=updates,
                exp_avgs=exp_avgs,
                denoms=denoms,
                coefs=u_coefs,
            )
            if params is not bucket:  # float32 working copies of low-precision parameters
                torch._foreach_copy_(bucket, params)
        return list((raw, decay) for decay, raw in raw_sums.items())

    def _scratch_for(self, bucket: list[Tensor], tensors: list[Tensor]):
        """For a bucket of CPU tensors (`tensors`: the parameters of `bucket` or their working
        copies), a function giving its buffers of a kind ("denoms", "updates"): per tensor of at
        least `_SCRATCH_BYTES`, one of its shape and dtype, made at its first use and kept per
        parameter (None for a smaller tensor); None on other devices, whose caching allocators
        hand out a freed block again without cost."""
        if tensors[0].device.type != "cpu":
            return None
        scratch = self._scratch
        entries, missed = [], False
        for p, t in zip(bucket, tensors, strict=True):
            entry = scratch.get(id(p))
            if entry is None or entry["like"] != (t.shape, t.dtype):
                entry = scratch[id(p)] = {"like": (t.shape, t.dtype)}
                missed = True
            entries.append(entry)
        if missed or len(scratch) > sum(len(g["params"]) for g in self.param_groups):
            live = {id(q) for g in self.param_groups for q in g["params"]}
            for gone in [k for k in scratch if k not in live]:
                del scratch[gone]  # a parameter that left the optimizer

        def get(kind: str) -> list[Tensor | None]:
            out = []
            for entry, t in zip(entries, tensors, strict=True):
                if kind not in entry:
                    big = t.numel() * t.element_size() >= _SCRATCH_BYTES
                    entry[kind] = torch.empty_like(t) if big else None
                out.append(entry[kind])
            return out

        return get

    def _decide_free(self, group: dict, params: list[Tensor]) -> None:
        """Decide `lamb_free_below` for the group's tensors not yet decided (all of them at its
        first step; a tensor that first has a gradient later, at that step), against the
        median of every dense matrix stepping now, each with its first gradient's row-sparse
        flag."""
        if all("lamb_free" in self.state.get(p, ()) for p in params):  # every step after the first
            return
        states = [self._param_state(p) for p in params]
        free = lamb_free_tensors(
            params, [s.get("row_sparse", False) for s in states], group["lamb_free_below"]
        )
        for s, f in zip(states, free, strict=True):
            s.setdefault("lamb_free", f)

    @staticmethod
    def _lamb_trust_ratios(
        group: dict,
        states: list[dict],
        params: list[Tensor],
        updates: list[Tensor],
        trusted: list[bool],
    ) -> list[Tensor | None]:
        """The trust ratios of the `trusted` tensors (None for the others), whose EMA of update
        norms starts at their first trusted step and moves only on such steps."""
        ombeta = group["lamb_update_norm_ombeta"]

        def bounds(c: float) -> list[float] | None:
            """c times each trusted dense tensor's default norm (0 elsewhere); None where c is
            0: no per-tensor work on the step."""
            if c <= 0:
                return None
            return [
                c * default_init_norm(p) if on and not s.get("row_sparse", False) else 0.0
                for s, p, on in zip(states, params, trusted, strict=True)
            ]

        floors = bounds(group["lamb_norm_floor"])
        ceilings = bounds(group["lamb_norm_ceiling"])
        for s, p, on in zip(states, params, trusted, strict=True):
            if on:
                if "update_norm_ema" not in s:
                    s["update_norm_ema"] = torch.zeros((), dtype=p.dtype, device=p.device)
                    s["update_norm_product"] = 1.0
                s["update_norm_product"] *= 1.0 - ombeta
        return lamb_trust_ratios(
            params,
            updates,
            [s["update_norm_ema"] if on else None for s, on in zip(states, trusted, strict=True)],
            [1.0 - s.get("update_norm_product", 0.0) for s in states],
            ombeta=ombeta,
            power=group["lamb_power"],
            min_trust=group["lamb_min_trust"],
            norm_floors=floors,
            norm_ceilings=ceilings,
        )

    def _param_state(self, p: Tensor) -> dict:
        state = self.state[p]
        dtype = state_dtype(p.dtype)
        if "step" not in state:
            state["row_sparse"] = is_row_sparse(p.grad)
            if state["row_sparse"]:
                state["embedding"] = is_embedding(p)
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(
                p, dtype=dtype, memory_format=torch.preserve_format
            )
            state["exp_avg_scale"] = 1.0  # first moment = exp_avg_scale * exp_avg
            state["beta1_product"] = 1.0
            state["beta2_product"] = 1.0
        return state

    # -- statistics for the features ----------------------------------------------------------

    def pop_step_stats(self) -> dict[str, float]:
        """Mean of each statistic in `STEP_STAT_NAMES` since the last pop, then reset.

        `clip_rate` and `skip_rate` are fractions of all steps of the period; the others are
        means over the measured steps (NaN when none was measured). One host sync.
        """
        return self._stats.pop()

    def adamw_lrs(self) -> list[float]:
        """Each group's step size in AdamW's units: the lr its update uses (lr x lr_factor)
        times the geometric mean, over the group's tensors that have stepped weighted by their
        sizes, of their trust ratios as the next step would start from (the tensor's norm over
        its EMA of update norms; 1 where none scales it). NaN for a group in which the trust
        ratio would scale a tensor but none has stepped yet. Under LAMB's trust ratio the lr is
        a step relative to each tensor's norm; this is the lr AdamW would need for steps of the
        same sizes, what a tuned AdamW lr compares with. One host read."""
        logs: list[Tensor] = []
        weights: list[list[int]] = []
        for group in self.param_groups:
            power, lo = group["lamb_power"], group["lamb_min_trust"]
            sizes = []
            for p in group["params"]:
                s = self.state.get(p, {})
                if "step" not in s:  # never stepped (no gradient yet): takes no step to size
                    continue
                sizes.append(p.numel())
                ema = s.get("update_norm_ema") if power > 0 and p.dim() > 1 else None
                if (
                    ema is None
                    or (not group["lamb_sparse"] and s.get("row_sparse", False))
                    or s.get("lamb_free", False)
                ):
                    logs.append(torch.zeros((), device=p.device))
                    continue
                p_norm = torch.linalg.vector_norm(p.detach(), dtype=ema.dtype)
                if not s.get("row_sparse", False):
                    if group["lamb_norm_ceiling"] > 0:
                        cap = group["lamb_norm_ceiling"] * default_init_norm(p)
                        p_norm = p_norm.clamp_max(max(cap, torch.finfo(p_norm.dtype).tiny))
                    if group["lamb_norm_floor"] > 0:
                        p_norm = p_norm.clamp_min(group["lamb_norm_floor"] * default_init_norm(p))
                ema_hat = ema / (1.0 - s["update_norm_product"])
                logs.append(torch.log(_trust(p_norm, ema_hat, power, lo)))
            weights.append(sizes)
        values = iter(torch.stack([x.to(logs[0]) for x in logs]).tolist() if logs else [])
        out = []
        for group, sizes in zip(self.param_groups, weights, strict=True):
            lr = group["lr"] * group["lr_factor"]
            if not sizes:
                scales = group["lamb_power"] > 0 and any(p.dim() > 1 for p in group["params"])
                out.append(math.nan if scales else lr)
                continue
            mean_log = sum(n * next(values) for n in sizes) / sum(sizes)
            out.append(lr * math.exp(mean_log))
        return out

    @property
    def hparams(self) -> list[dict[str, float | bool | None]]:
        """Current hyperparameters of each param group (a copy)."""
        return [{k: g[k] for k in HPARAMS} for g in self.param_groups]

    # -- saving and loading ------------------------------------------------------------------

    def state_dict(self) -> dict:
        sd = super().state_dict()
        sd["ciao"] = {
            "group_norm_max": list(self._group_norm_max),
            "steps": self.steps,
            "skipped_steps": self.skipped_steps,
            **self._stats.state_dict(),
        }
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        extra = state_dict.get("ciao")
        if extra is None:
            raise ValueError("not a CIAO state_dict: the 'ciao' entry is missing")
        missing = {"group_norm_max", "steps", "skipped_steps"} - set(extra)
        if missing:
            raise ValueError(f"not a CIAO state_dict: its 'ciao' entry lacks {sorted(missing)}")
        if len(extra["group_norm_max"]) != len(self.param_groups):
            raise ValueError(
                f"state_dict has {len(extra['group_norm_max'])} param groups, "
                f"this optimizer {len(self.param_groups)}"
            )
        for group in state_dict["param_groups"]:
            check_group(group, unknown_ok=True)
        # The statistics first: a state they refuse leaves this optimizer as it was.
        stats = StepStatistics()
        stats.noise_floor = self._stats.noise_floor  # an option of the reader, not state
        device = self.param_groups[0]["params"][0].device
        own = ("group_norm_max", "steps", "skipped_steps")
        stats.load_state_dict({k: v for k, v in extra.items() if k not in own}, device)
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "ciao"})
        for group in self.param_groups:  # saved before a hyperparameter existed: its default
            for name, default in DEFAULTS.items():
                group.setdefault(name, default)
            for p in group["params"]:  # saved before tables were told: told from the rms now
                state = self.state.get(p)
                if state and state.get("row_sparse") and "embedding" not in state:
                    state["embedding"] = is_embedding(p)
        self._restore_state_dtypes(state_dict)
        self._group_norm_max = list(extra["group_norm_max"])
        self.steps = extra["steps"]
        self.skipped_steps = extra["skipped_steps"]
        self._stats = stats

    def _restore_state_dtypes(self, state_dict: dict) -> None:
        """torch's loader casts each state tensor to its parameter's dtype; low-precision
        parameters keep theirs in float32, taken again from the saved tensors (no rounding)."""
        saved_ids = chain.from_iterable(g["params"] for g in state_dict["param_groups"])
        params = chain.from_iterable(g["params"] for g in self.param_groups)
        for saved_id, p in zip(saved_ids, params, strict=True):
            saved = state_dict["state"].get(saved_id)
            if p.dtype not in LOW_PRECISION or saved is None:
                continue
            for key, value in saved.items():
                if torch.is_tensor(value) and value.is_floating_point():
                    self.state[p][key] = value.detach().to(
                        device=p.device, dtype=torch.float32, copy=True
                    )
