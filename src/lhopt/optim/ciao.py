"""CIAO: the customizable inner adaptive optimizer that an LHOPT controller drives.

An AdamW-family optimizer parameterised the way the controller moves it (`ombeta1 = 1 - beta1`,
...). Bias corrections are running products of the betas actually used, so any hyperparameter of
any group may change between steps. With clipping, LAMB and the extras off it is AdamW.

Every `feature_every` steps it also measures cheap statistics of training (docs/features.md); they
are summed into one tensor on the parameters' device, so reading them costs one host sync per
outer step, not one per inner step.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from lhopt.optim.hparams import DEFAULTS, HPARAMS, check_group, check_value

# Names of the per-step statistics, in the order of `CIAO.pop_step_stats()`'s tensor part.
TENSOR_STAT_NAMES = (
    "frac_vhat_above_eps",
    "mean_log_abs_update",
    "log_update_to_param_norm",
    "log_grad_noise_scale",
    "cos_grad_momentum",
    "cos_grad_param",
    "cos_grad_update",
    "log_trust_ratio",
)
STEP_STAT_NAMES = TENSOR_STAT_NAMES + ("clip_rate", "skip_rate")

# Raw per-step sums from which the statistics above are formed.
_RAW = (
    "n_above",
    "sum_log_u",
    "numel",
    "gm",
    "gp",
    "gu",
    "gg",
    "mm",
    "pp",
    "uu",
    "up",
    "sum_vhat",
    "mhat_sq",
    "log_trust",
    "n_trust",
)
_TINY = 1e-30
_FOLD_ROWS = 64  # pending raw rows formed into statistics at once (bounds their memory)
_LOG_FLOOR = 1e-12  # |update| below this counts as this in mean log|update|


# ---------------------------------------------------------------------------------------------
# The math, over lists of tensors of one device and dtype.
# ---------------------------------------------------------------------------------------------


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


def denominators(
    exp_avg_sqs: list[Tensor], bias_corrections2: list[float], *, epsilon: float, adamax: bool
) -> tuple[list[Tensor], list[float]]:
    """Denominators d and per-tensor coefficients k with sqrt(v_hat) + eps = k * d.

    d = sqrt(v) + eps * sqrt(bc2) and k = 1 / sqrt(bc2): the bias correction then folds into the
    scalar step size, which saves AdamW's pass dividing every element by sqrt(bc2).
    For AdaMax, d = v + eps (its running max needs no bias correction) and k = 1.
    """
    if adamax:
        return torch._foreach_add(exp_avg_sqs, epsilon), [1.0] * len(exp_avg_sqs)
    sqrt_bc2 = [math.sqrt(bc) for bc in bias_corrections2]
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_add_(denom, [epsilon * r for r in sqrt_bc2])
    return denom, [1.0 / r for r in sqrt_bc2]


def lamb_trust_ratios(
    params: list[Tensor],
    updates: list[Tensor],
    update_norm_emas: list[Tensor | None],
    ema_corrections: list[float],
    *,
    ombeta: float,
    power: float,
    min_trust: float,
) -> list[Tensor | None]:
    """Per-tensor trust ratio (||p|| / EMA of ||u||)^power, clamped; None for vectors and biases.

    The EMA (bias-corrected by `ema_corrections`, the running 1 - prod(beta)) smooths the update
    norm so that one noisy step does not jerk the ratio.
    """
    trusts: list[Tensor | None] = []
    for p, u, ema, corr in zip(params, updates, update_norm_emas, ema_corrections, strict=True):
        if ema is None:
            trusts.append(None)
            continue
        ema.lerp_(torch.linalg.vector_norm(u), ombeta)
        p_norm = torch.linalg.vector_norm(p)
        ema_hat = ema / corr
        ratio = torch.where(
            (p_norm > 0) & (ema_hat > 0), p_norm / ema_hat.clamp_min(_TINY), torch.ones_like(p_norm)
        )
        trusts.append((ratio**power).clamp(min_trust, 1.0 / min_trust))
    return trusts


def sample_stride(t: Tensor, max_samples: int) -> int:
    """Stride of the fixed sample of `t` the statistics read: every element of a small tensor,
    about `max_samples` evenly spread ones of a large tensor. The stride is made coprime with the
    last dimension so that the sample does not fall on the same few columns of a matrix."""
    n = t.numel()
    stride = max(1, n // max_samples)
    last = t.shape[-1] if t.dim() > 0 else 1
    while stride > 1 and math.gcd(stride, last) != 1:
        stride += 1
    return stride


class SamplePlan:
    """Where the statistics read the tensors of one bucket: a fixed strided sample of each
    (`sample_stride`), the weight (numel / samples) of every sampled element, and a buffer of
    5 rows that one `_foreach_copy_` fills with the samples of grads, moments, params,
    denominators and updates (small models pay per op: one copy, not a view and a cat per
    tensor). Fixed per model; an optimizer keeps one per bucket; not for two threads at once."""

    def __init__(self, tensors: list[Tensor], max_samples: int) -> None:
        device, dtype = tensors[0].device, tensors[0].dtype
        self.strides = [sample_stride(t, max_samples) for t in tensors]
        self.counts = [-(-t.numel() // s) for t, s in zip(tensors, self.strides, strict=True)]
        ratios = [t.numel() / c for t, c in zip(tensors, self.counts, strict=True)]
        per_tensor = torch.tensor(ratios, dtype=dtype)
        self.weights = torch.repeat_interleave(per_tensor, torch.tensor(self.counts)).to(device)
        self.numel = torch.tensor([float(sum(t.numel() for t in tensors))], dtype=torch.float64,
                                  device=device)  # fmt: skip
        self.no_trust = torch.zeros(2, dtype=torch.float64, device=device)
        self.buffer = torch.empty(5, sum(self.counts), dtype=dtype, device=device)
        self._targets = []
        for row in self.buffer:
            parts = row.split(self.counts)
            self._targets += [
                part.view(t.shape) if stride == 1 else part
                for part, t, stride in zip(parts, tensors, self.strides, strict=True)
            ]

    def fill(self, *lists: list[Tensor]) -> Tensor:
        """The buffer's first len(lists) rows, holding the samples of each list of tensors."""
        sources = [t if s == 1 else t.reshape(-1)[::s]
                   for ts in lists for t, s in zip(ts, self.strides, strict=True)]  # fmt: skip
        torch._foreach_copy_(self._targets[: len(sources)], sources)
        return self.buffer[: len(lists)]


def raw_statistics(
    plan: SamplePlan,
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    denoms: list[Tensor],
    updates: list[Tensor] | None,
    trusts: list[Tensor | None],
    exp_avg_scales: list[float],
    m_hat_coefs: list[float],
    denom_coefs: list[float],
    *,
    epsilon: float,
) -> Tensor:
    """Sums (see `_RAW`) over the tensors of one bucket, as one float64 tensor on their device.

    Each sum over all elements is estimated from the fixed strided sample of each tensor that
    `plan` describes, weighted by numel / samples, so a measured step costs a small fraction of
    a full pass over the model. `updates=None` means the update is m_hat / denom (AdamW's path,
    not materialised). The first moment of tensor i is exp_avg_scales[i] * exp_avgs[i], m_hat
    is m_hat_coefs[i] * exp_avgs[i], and sqrt(v_hat) + eps is denom_coefs[i] * denoms[i].
    """
    w = plan.weights

    def per_element(coefs: list[float]) -> Tensor:
        """Per-tensor coefficients spread over the sample; one value when they agree (usual:
        the tensors of a bucket step together)."""
        if all(c == coefs[0] for c in coefs):
            return torch.tensor(coefs[0], dtype=w.dtype, device=w.device)
        per_tensor = torch.tensor(coefs, dtype=w.dtype, device=w.device)
        return torch.repeat_interleave(per_tensor, torch.tensor(plan.counts, device=w.device))

    if updates is None:
        g, m, p, d = plan.fill(grads, exp_avgs, params, denoms).unbind()
    else:
        g, m, p, d, u = plan.fill(grads, exp_avgs, params, denoms, updates).unbind()
    m_scale, m_hat_coef, d_coef = map(per_element, (exp_avg_scales, m_hat_coefs, denom_coefs))
    d = d * d_coef
    m_hat = m * m_hat_coef
    if updates is None:
        u = m_hat / d
    m = m * m_scale
    # The denominator is sqrt(v_hat) + eps (AdaMax: v + eps), so v_hat need not be read again.
    v_hat = (d - epsilon).square()
    # The weighted sums at once: one product of stacked rows and one matrix-vector product,
    # instead of a dot per sum (this runs every few steps, where small models pay per op).
    left = torch.stack([g, g, g, g, m, p, u, u])
    right = torch.stack([m, p, u, g, m, p, u, p])
    rows = torch.cat([
        torch.stack([(d > 2 * epsilon).to(w.dtype), u.abs().add_(_LOG_FLOOR).log_()]),
        left.mul_(right),
    ])  # fmt: skip
    sums = (rows @ w).to(torch.float64)
    # sum_vhat - mhat_sq, the noise, cancels (exactly, on a first step): these two stay dots of
    # their own, summed the same way.
    noise_sums = torch.stack([torch.dot(w, v_hat), torch.dot(w, m_hat * m_hat)])
    lamb = [t for t in trusts if t is not None]
    if lamb:
        log_trust = torch.stack(lamb).to(torch.float64).log().sum()
        trust = torch.stack([log_trust, torch.full_like(log_trust, float(len(lamb)))])
    else:
        trust = plan.no_trust
    # _RAW's order: n_above, sum_log_u, numel, gm .. up, sum_vhat, mhat_sq, log_trust, n_trust
    return torch.cat([sums[:2], plan.numel, sums[2:], noise_sums.to(torch.float64), trust])


def statistics_from_raw(
    raw: Tensor, *, lr: Tensor | float, decoupled_decay: Tensor | float
) -> Tensor:
    """The statistics of `TENSOR_STAT_NAMES` (last dimension) from raw sums (last dimension
    `_RAW`), for one row or a batch of rows. `decoupled_decay` is the weight decay applied
    outside the update (0 when it is inside). All tensor ops: no sync."""
    r = dict(zip(_RAW, raw.unbind(-1), strict=True))

    def cos(dot: Tensor, a_sq: Tensor, b_sq: Tensor) -> Tensor:
        return dot / (a_sq * b_sq).sqrt().clamp_min(_TINY)

    # Applied step = lr * (u + wd * p) with decoupled decay wd.
    wd = decoupled_decay
    step_sq = lr**2 * (r["uu"] + 2 * wd * r["up"] + wd**2 * r["pp"])
    noise = (r["sum_vhat"] - r["mhat_sq"]).clamp_min(_TINY)
    return torch.stack(
        [
            r["n_above"] / r["numel"],
            r["sum_log_u"] / r["numel"],
            0.5 * (step_sq.clamp_min(_TINY) / r["pp"].clamp_min(_TINY)).log(),
            (noise / r["mhat_sq"].clamp_min(_TINY)).log(),
            cos(r["gm"], r["gg"], r["mm"]),
            cos(r["gp"], r["gg"], r["pp"]),
            cos(r["gu"], r["gg"], r["uu"]),
            r["log_trust"] / r["n_trust"].clamp_min(1.0),
        ],
        dim=-1,
    )


# ---------------------------------------------------------------------------------------------
# The optimizer: argument checks, state, bookkeeping.
# ---------------------------------------------------------------------------------------------


class CIAO(torch.optim.Optimizer):
    """Customizable inner adaptive optimizer (AdamW family), controllable between steps.

    Args:
        params: parameters or param groups, as for any `torch.optim.Optimizer`.
        lr, ombeta1, ombeta2, epsilon, weight_decay: AdamW's hyperparameters, with the betas given
            as ``1 - beta`` (the controller scales these multiplicatively).
        clip_fraction: clip each group's gradient norm to this fraction of a rolling maximum of
            its past norms (None: no clipping). The maximum decays by ``1 - grad_clip_ombeta``
            per step.
        lamb_power, lamb_min_trust, lamb_update_norm_ombeta: LAMB trust ratio
            ``(||p|| / EMA||u||) ** lamb_power`` clamped to ``[min_trust, 1/min_trust]``, applied
            to tensors of two or more dimensions; ``lamb_power=0`` switches it off.
        adamax: use an infinity-norm denominator ``max(beta2 v, |g|)``.
        decay_in_update: add weight decay to the adaptive update (so LAMB scales it) instead of
            decoupling it as AdamW does.
        feature_every: measure the feature statistics every this many steps (0: never).
        stat_samples: the statistics read a fixed strided sample of about this many elements
            of each tensor (all of a smaller one), weighted by size; they estimate ratios and
            cosines, which a sample of thousands of elements gives to within a few percent.

    A step whose gradients are not all finite changes nothing (parameters, moments, counters),
    is counted in `skipped_steps` and shows in the `skip_rate` statistic. Deciding this costs
    one read of a scalar per step, as `torch.amp.GradScaler` does.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = DEFAULTS["lr"],
        ombeta1: float = DEFAULTS["ombeta1"],
        ombeta2: float = DEFAULTS["ombeta2"],
        epsilon: float = DEFAULTS["epsilon"],
        weight_decay: float = DEFAULTS["weight_decay"],
        clip_fraction: float | None = DEFAULTS["clip_fraction"],
        grad_clip_ombeta: float = DEFAULTS["grad_clip_ombeta"],
        lamb_power: float = DEFAULTS["lamb_power"],
        lamb_min_trust: float = DEFAULTS["lamb_min_trust"],
        lamb_update_norm_ombeta: float = DEFAULTS["lamb_update_norm_ombeta"],
        adamax: bool = DEFAULTS["adamax"],
        decay_in_update: bool = DEFAULTS["decay_in_update"],
        feature_every: int = 4,
        stat_samples: int = 2048,
    ) -> None:
        if isinstance(feature_every, bool) or not isinstance(feature_every, int):
            raise ValueError(
                f"feature_every={feature_every!r} is not allowed: expected an int >= 0"
            )
        if feature_every < 0:
            raise ValueError(f"feature_every={feature_every} is out of range: allowed >= 0")
        defaults = dict(
            lr=lr,
            ombeta1=ombeta1,
            ombeta2=ombeta2,
            epsilon=epsilon,
            weight_decay=weight_decay,
            clip_fraction=clip_fraction,
            grad_clip_ombeta=grad_clip_ombeta,
            lamb_power=lamb_power,
            lamb_min_trust=lamb_min_trust,
            lamb_update_norm_ombeta=lamb_update_norm_ombeta,
            adamax=adamax,
            decay_in_update=decay_in_update,
        )
        for name, value in defaults.items():
            check_value(name, value)
        if isinstance(stat_samples, bool) or not isinstance(stat_samples, int) or stat_samples < 1:
            raise ValueError(f"stat_samples={stat_samples!r} is not allowed: expected an int >= 1")
        self.feature_every = feature_every
        self.stat_samples = stat_samples
        # Optimizer-wide bookkeeping (saved by state_dict): per-group rolling max of the
        # gradient norm, step counters, and the statistics accumulated since the last pop.
        self._group_norm_max: list[float] = []
        self.steps = 0  # steps attempted (taken or skipped)
        self.skipped_steps = 0
        self._period = {"steps": 0, "clipped": 0, "skipped": 0}
        self._stat_sum: Tensor | None = None  # weighted sum of statistics already formed
        self._stat_count = 0  # measured steps
        # Raw sums of measured steps not formed into statistics yet, with (lr, decoupled decay,
        # weight) each: formed in one batch at the pop (or every _FOLD_ROWS rows), not per step.
        self._stat_rows: list[Tensor] = []
        self._stat_coefs: list[tuple[float, float, float]] = []
        self._plans: dict[tuple, SamplePlan] = {}  # where the statistics sample each bucket
        self._checked: dict[int, tuple] = {}  # group index -> hyperparameters last validated
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        check_group(param_group)
        for p in param_group["params"] if isinstance(param_group["params"], list) else []:
            if isinstance(p, Tensor) and torch.is_complex(p):
                raise ValueError("CIAO does not support complex parameters; view them as real")
        super().add_param_group(param_group)
        self._group_norm_max.append(0.0)

    # -- the step --------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Callable[[], float | Tensor] | None = None) -> float | Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.steps += 1
        self._period["steps"] += 1

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
        if not any(groups):
            return loss

        # One host read decides both the skip and the clipping coefficients.
        norms = self._group_grad_norms(groups)
        if not all(math.isfinite(n) for n in norms):
            self.skipped_steps += 1
            self._period["skipped"] += 1
            return loss

        measure = self.feature_every > 0 and (self.steps - 1) % self.feature_every == 0
        measured: list[tuple[Tensor, float, float]] = []
        any_clipped = False
        for gi, (group, buckets) in enumerate(zip(self.param_groups, groups, strict=True)):
            if not buckets:
                continue
            grad_scale = self._clip_scale(gi, group, norms[gi])
            any_clipped |= grad_scale < 1.0
            raw = self._step_group(group, buckets, grad_scale, measure)
            if raw is not None:
                decay = 0.0 if group["decay_in_update"] else group["weight_decay"]
                measured.append((raw, group["lr"], decay))
        self._period["clipped"] += int(any_clipped)
        if measured:  # a step's statistics: the mean over its groups
            self._stat_rows += [raw for raw, _, _ in measured]
            self._stat_coefs += [(lr, decay, 1.0 / len(measured)) for _, lr, decay in measured]
            self._stat_count += 1
            if len(self._stat_rows) >= _FOLD_ROWS:
                self._fold_stat_rows()
        return loss

    def _fold_stat_rows(self) -> None:
        """Form the pending raw sums into statistics, added to `_stat_sum`: one batch of ops."""
        if not self._stat_rows:
            return
        device = self._stat_rows[0].device
        coefs = torch.tensor(self._stat_coefs, dtype=torch.float64, device=device)
        lr, decay, weight = coefs.unbind(1)
        rows = torch.stack([r.to(device) for r in self._stat_rows])
        stats = statistics_from_raw(rows, lr=lr, decoupled_decay=decay)
        total = (stats * weight[:, None]).sum(0)
        self._stat_sum = total if self._stat_sum is None else self._stat_sum + total.to(
            self._stat_sum.device)  # fmt: skip
        self._stat_rows, self._stat_coefs = [], []

    def _group_grad_norms(self, groups: list[dict[tuple, list[Tensor]]]) -> list[float]:
        """Each group's gradient norm (0.0 for a group without gradients), in one host read."""
        per_group, device = [], None
        for buckets in groups:
            if not buckets:
                continue
            # Per-tensor norms in float64, so that a sum of squares cannot overflow.
            norms = [torch.stack(torch._foreach_norm([p.grad for p in bucket])).to(torch.float64)
                     for bucket in buckets.values()]  # fmt: skip
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
    ) -> Tensor | None:
        beta1, beta2 = 1.0 - group["ombeta1"], 1.0 - group["ombeta2"]
        lr, wd, eps = group["lr"], group["weight_decay"], group["epsilon"]
        adamax, in_update = group["adamax"], group["decay_in_update"]
        lamb = group["lamb_power"] > 0
        raw_sum = None
        for bucket in buckets.values():
            states = [self._param_state(p, lamb) for p in bucket]
            grads = [p.grad for p in bucket]
            exp_avgs = [s["exp_avg"] for s in states]
            exp_avg_sqs = [s["exp_avg_sq"] for s in states]
            for s in states:
                s["step"] += 1
                s["beta1_product"] *= beta1
                s["beta2_product"] *= beta2
            bc1 = [1.0 - s["beta1_product"] for s in states]
            bc2 = [1.0 - s["beta2_product"] for s in states]

            scales = update_moments(
                exp_avgs, exp_avg_sqs, grads, [s["exp_avg_scale"] for s in states],
                beta1=beta1, beta2=beta2, grad_scale=grad_scale, adamax=adamax,
            )  # fmt: skip
            for s, scale in zip(states, scales, strict=True):
                s["exp_avg_scale"] = scale
            denom, d_coef = denominators(exp_avg_sqs, bc2, epsilon=eps, adamax=adamax)
            # m_hat = m_coef * m_tilde and update = u_coef * m_tilde / denom: scalars per tensor.
            m_coef = [scale / b for scale, b in zip(scales, bc1, strict=True)]
            u_coef = [c / k for c, k in zip(m_coef, d_coef, strict=True)]

            if not (lamb or in_update):
                # AdamW's path: no update tensor is materialised.
                if measure:
                    raw = raw_statistics(
                        self._sample_plan(bucket), bucket, grads, exp_avgs, denom, None,
                        [None] * len(bucket), scales, m_coef, d_coef, epsilon=eps,
                    )  # fmt: skip
                    raw_sum = raw if raw_sum is None else raw_sum + raw.to(raw_sum.device)
                if wd != 0.0:
                    torch._foreach_mul_(bucket, 1.0 - lr * wd)
                torch._foreach_addcdiv_(bucket, exp_avgs, denom, [-lr * c for c in u_coef])
                continue

            updates = torch._foreach_div(exp_avgs, denom)
            torch._foreach_mul_(updates, u_coef)
            if in_update and wd != 0.0:
                torch._foreach_add_(updates, bucket, alpha=wd)
            trusts: list[Tensor | None] = [None] * len(bucket)
            if lamb:
                ombeta = group["lamb_update_norm_ombeta"]
                emas = [s.get("update_norm_ema") for s in states]
                for s in states:
                    if "update_norm_ema" in s:
                        s["update_norm_product"] *= 1.0 - ombeta
                corr = [1.0 - s.get("update_norm_product", 0.0) for s in states]
                trusts = lamb_trust_ratios(
                    bucket, updates, emas, corr, ombeta=ombeta,
                    power=group["lamb_power"], min_trust=group["lamb_min_trust"],
                )  # fmt: skip
                for u, t in zip(updates, trusts, strict=True):
                    if t is not None:
                        u.mul_(t)
            if measure:
                raw = raw_statistics(
                    self._sample_plan(bucket), bucket, grads, exp_avgs, denom, updates, trusts,
                    scales, m_coef, d_coef, epsilon=eps,
                )  # fmt: skip
                raw_sum = raw if raw_sum is None else raw_sum + raw.to(raw_sum.device)
            if not in_update and wd != 0.0:
                torch._foreach_mul_(bucket, 1.0 - lr * wd)
            torch._foreach_add_(bucket, updates, alpha=-lr)
        return raw_sum

    def _sample_plan(self, bucket: list[Tensor]) -> SamplePlan:
        # The same tensors every step, while they train; a model moved or cast makes a new plan.
        key = (bucket[0].device, bucket[0].dtype, *((id(p), p.shape) for p in bucket))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = SamplePlan(bucket, self.stat_samples)
        return plan

    def _param_state(self, p: Tensor, lamb: bool) -> dict:
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_scale"] = 1.0  # first moment = exp_avg_scale * exp_avg
            state["beta1_product"] = 1.0
            state["beta2_product"] = 1.0
        if lamb and p.dim() > 1 and "update_norm_ema" not in state:
            state["update_norm_ema"] = torch.zeros((), dtype=p.dtype, device=p.device)
            state["update_norm_product"] = 1.0
        return state

    # -- statistics for the features ----------------------------------------------------------

    def pop_step_stats(self) -> dict[str, float]:
        """Mean of each statistic in `STEP_STAT_NAMES` since the last pop, then reset.

        `clip_rate` and `skip_rate` are fractions of all steps of the period; the others are
        means over the measured steps (NaN when none was measured). One host sync.
        """
        out = dict.fromkeys(TENSOR_STAT_NAMES, math.nan)
        self._fold_stat_rows()
        if self._stat_sum is not None and self._stat_count > 0:
            values = (self._stat_sum / self._stat_count).tolist()
            out.update(zip(TENSOR_STAT_NAMES, values, strict=True))
        n = max(self._period["steps"], 1)
        out["clip_rate"] = self._period["clipped"] / n
        out["skip_rate"] = self._period["skipped"] / n
        self._stat_sum, self._stat_count = None, 0
        self._period = {"steps": 0, "clipped": 0, "skipped": 0}
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
            "period": dict(self._period),
            "stat_sum": None if self._stat_sum is None else self._stat_sum.clone(),
            "stat_count": self._stat_count,
            "stat_rows": torch.stack(self._stat_rows) if self._stat_rows else None,
            "stat_coefs": list(self._stat_coefs),
            "feature_every": self.feature_every,
            "stat_samples": self.stat_samples,
        }
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        extra = state_dict.get("ciao")
        if extra is None:
            raise ValueError("not a CIAO state_dict: the 'ciao' entry is missing")
        if len(extra["group_norm_max"]) != len(self.param_groups):
            raise ValueError(
                f"state_dict has {len(extra['group_norm_max'])} param groups, "
                f"this optimizer {len(self.param_groups)}"
            )
        for group in state_dict["param_groups"]:
            check_group(group, unknown_ok=True)
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "ciao"})
        self._group_norm_max = list(extra["group_norm_max"])
        self.steps = extra["steps"]
        self.skipped_steps = extra["skipped_steps"]
        self._period = dict(extra["period"])
        stat_sum = extra["stat_sum"]
        if stat_sum is not None:
            device = self.param_groups[0]["params"][0].device
            stat_sum = stat_sum.detach().clone().to(device)
        self._stat_sum = stat_sum
        self._stat_count = extra["stat_count"]
        rows = extra.get("stat_rows")  # absent from older states
        device = self.param_groups[0]["params"][0].device
        self._stat_rows = [] if rows is None else list(rows.detach().clone().to(device).unbind())
        self._stat_coefs = [tuple(c) for c in extra.get("stat_coefs", [])]
        self.feature_every = extra["feature_every"]
        self.stat_samples = extra["stat_samples"]


def _buckets(params: list[Tensor]) -> dict[tuple, list[Tensor]]:
    """Parameters grouped by (device, dtype), as foreach kernels need."""
    out: dict[tuple, list[Tensor]] = defaultdict(list)
    for p in params:
        out[(p.device, p.dtype)].append(p)
    return out
