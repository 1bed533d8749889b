"""The statistics of training that CIAO measures for the controller's features.

Every `feature_every` steps CIAO hands each bucket of tensors (one device and dtype) to
`raw_statistics`, which estimates a few sums over their elements from a fixed strided sample;
`StepStatistics` keeps those sums on the parameters' device, forms them into the statistics of
`STEP_STAT_NAMES` in batches, and returns their means at `pop()`: one host sync per outer step,
not one per inner step. What each statistic means: docs/optimizer.md and docs/features.md.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# Names of the per-step statistics, in the order of `StepStatistics.pop()`'s tensor part.
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
LOG_FLOOR = 1e-12  # |update| below this counts as this in mean log|update|


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
    tensor). Depends only on the tensors' shapes, dtype and device; not for two threads at once.
    """

    def __init__(self, tensors: list[Tensor], max_samples: int) -> None:
        device, dtype = tensors[0].device, tensors[0].dtype
        self.strides = [sample_stride(t, max_samples) for t in tensors]
        self.counts = [-(-t.numel() // s) for t, s in zip(tensors, self.strides, strict=True)]
        # an empty tensor has no sample and weighs nothing
        ratios = [t.numel() / c if c else 0.0 for t, c in zip(tensors, self.counts, strict=True)]
        per_tensor = torch.tensor(ratios, dtype=dtype)
        self.weights = torch.repeat_interleave(per_tensor, torch.tensor(self.counts)).to(device)
        numel = float(sum(t.numel() for t in tensors))
        self.numel = torch.tensor([numel], dtype=torch.float64, device=device)
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
        sources = [
            t if s == 1 else t.reshape(-1)[::s]
            for ts in lists
            for t, s in zip(ts, self.strides, strict=True)
        ]
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
    rows = torch.cat(
        [
            torch.stack([(d > 2 * epsilon).to(w.dtype), u.abs().add_(LOG_FLOOR).log_()]),
            left.mul_(right),
        ]
    )
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


def step_sq_from_raw(raw: Tensor, lr: Tensor | float, decoupled_decay: Tensor | float) -> Tensor:
    """The sampled squared norm of the applied step lr * (u + wd * p), wd the decoupled decay,
    from raw sums (last dimension `_RAW`): additive over tensors and groups, as the raw sums are."""
    r = dict(zip(_RAW, raw.unbind(-1), strict=True))
    wd = decoupled_decay
    return lr**2 * (r["uu"] + 2 * wd * r["up"] + wd**2 * r["pp"])


def statistics_from_raw(
    raw: Tensor,
    *,
    lr: Tensor | float | None = None,
    decoupled_decay: Tensor | float = 0.0,
    noise_floor: float = 0.0,
    step_sq: Tensor | None = None,
) -> Tensor:
    """The statistics of `TENSOR_STAT_NAMES` (last dimension) from raw sums (last dimension
    `_RAW`), for one row or a batch of rows. `decoupled_decay` is the weight decay applied
    outside the update (0 when it is inside); `step_sq` (`step_sq_from_raw`, summed over the
    groups whose raw sums `raw` pools) replaces `lr` and `decoupled_decay`. The noise is a
    difference of two close sums: a `noise_floor` > 0 reads any noise below that fraction of
    sum(v_hat) as that fraction (on a run's first step it is 0 exactly, and its computed value
    rounding error). No sync."""
    r = dict(zip(_RAW, raw.unbind(-1), strict=True))

    def cos(dot: Tensor, a_sq: Tensor, b_sq: Tensor) -> Tensor:
        return dot / (a_sq * b_sq).sqrt().clamp_min(_TINY)

    if step_sq is None:
        if lr is None:
            raise ValueError("statistics_from_raw: give lr (and decoupled_decay) or step_sq")
        step_sq = step_sq_from_raw(raw, lr, decoupled_decay)
    noise = r["sum_vhat"] - r["mhat_sq"]
    if noise_floor > 0:
        noise = torch.maximum(noise, noise_floor * r["sum_vhat"])
    noise = noise.clamp_min(_TINY)
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


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}={value!r} is not allowed: expected an int >= {low}")
    if value < low:
        raise ValueError(f"{name}={value} is out of range: allowed >= {low}")
    return value


class StepStatistics:
    """The statistics of `STEP_STAT_NAMES` of an optimizer's steps since the last `pop()`.

    Args:
        feature_every: measure every this many steps (0: never); `clip_rate` and `skip_rate`
            count every step.
        stat_samples: `raw_statistics` reads a fixed strided sample of about this many elements
            of each tensor (all of a smaller one).

    The optimizer calls `count_step()` once per step, `count_skip()` / `count_clip()` when the
    step was skipped / clipped, asks `measures(step)` whether to measure, and passes the raw sums
    of the measured groups to `add()`. Measured steps are kept as raw rows on their device and
    formed into statistics in one batch at `pop()` (or every `_FOLD_ROWS` rows).
    """

    def __init__(self, feature_every: int = 4, stat_samples: int = 2048) -> None:
        self.feature_every = feature_every
        self.stat_samples = stat_samples
        self.noise_floor = 0.0  # see `statistics_from_raw`; set by a controller
        self._plans: dict[tuple, SamplePlan] = {}
        self._reset()

    @property
    def feature_every(self) -> int:
        return self._feature_every

    @feature_every.setter
    def feature_every(self, value: int) -> None:
        self._feature_every = _check_int("feature_every", value, 0)

    @property
    def stat_samples(self) -> int:
        return self._stat_samples

    @stat_samples.setter
    def stat_samples(self, value: int) -> None:
        self._stat_samples = _check_int("stat_samples", value, 1)
        self._plans = {}

    def _reset(self) -> None:
        """Start a new period."""
        self.period = {"steps": 0, "clipped": 0, "skipped": 0}
        self.count = 0  # measured steps
        self._sum: Tensor | None = None  # weighted sum of the statistics already formed
        # Raw sums of measured groups not formed yet, with (lr, decoupled decay, step) each.
        self._rows: list[Tensor] = []
        self._coefs: list[tuple[float, float, int]] = []

    # -- during a step ----------------------------------------------------------------------

    def measures(self, step: int) -> bool:
        """Whether the `step`-th step (counted from 1) is measured."""
        return self.feature_every > 0 and (step - 1) % self.feature_every == 0

    def plan(self, params: list[Tensor], tensors: list[Tensor]) -> SamplePlan:
        """The sample plan of a bucket: `params` identify it, `tensors` (the parameters, or
        their working copies in the state's dtype) give its shapes, dtype and device."""
        # The same tensors every step while they train; a model moved or cast makes a new plan.
        key = (tensors[0].device, tensors[0].dtype, *((id(p), p.shape) for p in params))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = SamplePlan(tensors, self.stat_samples)
        return plan

    def count_step(self) -> None:
        self.period["steps"] += 1

    def count_skip(self) -> None:
        self.period["skipped"] += 1

    def count_clip(self) -> None:
        self.period["clipped"] += 1

    def add(self, measured: list[tuple[Tensor, float, float]]) -> None:
        """Record one measured step from the raw sums of its groups, each with the group's
        (lr, decoupled weight decay). The groups' sums are pooled, as one group holding all
        their tensors would sum them (the applied step with each group's own lr and decay), so
        how a model's tensors are split into groups does not change what a policy reads: a
        group of a few biases weighs what its elements weigh, not what the rest of the model
        does."""
        if not measured:
            return
        self._rows += [raw for raw, _, _ in measured]
        self._coefs += [(lr, decay, self.count) for _, lr, decay in measured]
        self.count += 1
        if len(self._rows) >= _FOLD_ROWS:
            self._fold()

    def _fold(self) -> None:
        """Form the pending raw sums into statistics, added to `_sum`: one batch of ops."""
        if not self._rows:
            return
        device = self._rows[0].device
        steps = [c[2] for c in self._coefs]
        ids = torch.tensor([s - steps[0] for s in steps], device=device)
        coefs = torch.tensor([c[:2] for c in self._coefs], dtype=torch.float64, device=device)
        lr, decay = coefs.unbind(1)
        rows = torch.stack([r.to(device) for r in self._rows])
        sq = step_sq_from_raw(rows, lr, decay)
        n = steps[-1] - steps[0] + 1  # a step's rows are added together, never split by a fold
        pooled = rows.new_zeros(n, rows.shape[1]).index_add_(0, ids, rows)
        pooled_sq = sq.new_zeros(n).index_add_(0, ids, sq)
        stats = statistics_from_raw(pooled, step_sq=pooled_sq, noise_floor=self.noise_floor)
        total = stats.sum(0)
        self._sum = total if self._sum is None else self._sum + total.to(self._sum.device)
        self._rows, self._coefs = [], []

    # -- reading ---------------------------------------------------------------------------

    def pop(self) -> dict[str, float]:
        """Mean of each statistic in `STEP_STAT_NAMES` since the last pop, then reset.

        `clip_rate` and `skip_rate` are fractions of all steps of the period; the others are
        means over the measured steps (NaN when none was measured). One host sync.
        """
        out = dict.fromkeys(TENSOR_STAT_NAMES, math.nan)
        self._fold()
        if self._sum is not None and self.count > 0:
            values = (self._sum / self.count).tolist()
            out.update(zip(TENSOR_STAT_NAMES, values, strict=True))
        n = max(self.period["steps"], 1)
        out["clip_rate"] = self.period["clipped"] / n
        out["skip_rate"] = self.period["skipped"] / n
        self._reset()
        return out

    # -- saving and loading ------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            "period": dict(self.period),
            "stat_sum": None if self._sum is None else self._sum.clone(),
            "stat_count": self.count,
            "stat_rows": torch.stack(self._rows) if self._rows else None,
            "stat_coefs": list(self._coefs),
            "feature_every": self.feature_every,
            "stat_samples": self.stat_samples,
        }

    def load_state_dict(self, state: dict, device: torch.device | str | None = None) -> None:
        """Restore a `state_dict()`, with its tensors moved to `device`."""
        missing = {"period", "stat_sum", "stat_count", "feature_every", "stat_samples"} - set(state)
        if missing:
            raise ValueError(f"statistics state lacks {sorted(missing)}")
        self.feature_every = state["feature_every"]
        self.stat_samples = state["stat_samples"]
        self.period = {k: int(state["period"][k]) for k in ("steps", "clipped", "skipped")}
        stat_sum = state["stat_sum"]
        self._sum = None if stat_sum is None else stat_sum.detach().clone().to(device)
        self.count = state["stat_count"]
        rows = state.get("stat_rows")  # states saved before rows were kept lack these two
        self._rows = [] if rows is None else list(rows.detach().clone().to(device).unbind())
        self._coefs = [tuple(c) for c in state.get("stat_coefs", [])]
