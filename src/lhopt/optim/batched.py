"""BatchedCIAO: CIAO's update for N independent members stacked along a leading dimension.

Meta-training runs N episodes of one architecture at once. Each parameter is then one tensor of
shape (N, *member_shape) whose row i belongs to member i, and each member has hyperparameters of
its own, which its controller moves. BatchedCIAO steps every member in one pass of tensor ops
over the stacked tensors, where N CIAO optimizers would each launch their own, and member i
steps as `CIAO(member_i_params, **hparams_i)` with a single param group would: the same
clipping, skipping, bias corrections, scaled first moment, decoupled weight decay and step
statistics, and LAMB's trust ratio where a member's `lamb_power` > 0, with `lamb_sparse`,
`lamb_free_below`, `lamb_norm_floor` and `lamb_norm_ceiling` (the tests hold each member to a
CIAO of its own, to rounding).

`members[i]` (a `MemberOptimizer`) is member i seen as a CIAO: its one param group, `hparams`,
`pop_step_stats()`, `state_dict()` and `load_state_dict()`, which is what a `Controller` and
`RestartRegisters` use.

How it is laid out: the moments are one (N, D) tensor each, D the size of a member, so that
every stage of the update is one op over all members and tensors. Per-member hyperparameters are
(N, 1) columns, rebuilt when some member's group changed. Per-tensor scalars (bias-correction
products, the first moment's scale) are (N, P) tensors for P parameters; while every tensor of
every member has stepped alike they are read from one column (the usual case), otherwise spread
over the columns. A member that must skip a step (NaN, Inf, or an overflowing norm) is masked:
its gradient is zeroed and its betas, weights and step set to what changes nothing, without a
host sync; the statistics stay on the device until a pop. On the CPU, where reading a flag
costs nothing, a step where no member skips (or no scale folds) leaves those masks out.

What a step costs besides its arithmetic is kept down: the large temporaries (the flat
gradient, the denominators, the statistics' samples) are written into buffers kept from step
to step (about four (N, D) and twenty (N, S) ones, S the statistics' sample of a member), and
only the columns that lr_factor enters are rebuilt when a controller moves it, as it does
before every step.

Limits:
- The AdamW path with clipping and LAMB's trust ratio only: `adamax`, `decay_in_update` and a
  `matrix_decay_factor` or `table_decay_factor` other than 1 are refused, at construction and
  at the step after a group was set to them (use CIAO).
- One dtype (float32 or float64) and one device for all parameters.
- Members are popped together (`MemberOptimizer.pop_step_stats`): the first pop of a period pops
  every member, and a member that does not take its row before the next step loses it. A
  member's `state_dict()` holds its statistics since that batched pop.
- On a step where the gradient noise cancels exactly (the first of a run), CIAO's
  `log_grad_noise_scale` is set by the sign of a rounding error; BatchedCIAO sums in another
  order and its value may differ there, unless `noise_floor` > 0 (set by a controller from its
  policy's `ControlSpec`), which reads the same floor in both. Elsewhere the statistics agree to
  rounding.
"""

from __future__ import annotations

import math
import operator
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import accumulate, chain

import torch
from torch import Tensor

from lhopt.optim.ciao import default_init_norm, lamb_free_tensors
from lhopt.optim.hparams import DEFAULTS, HPARAMS, check_group, check_value
from lhopt.optim.stats import (
    _FOLD_ROWS,
    _TINY,
    LOG_FLOOR,
    STEP_STAT_NAMES,
    TENSOR_STAT_NAMES,
    _check_int,
    sample_stride,
    statistics_from_raw,
)

__all__ = ["BatchedCIAO", "MemberOptimizer", "STEP_STAT_NAMES"]

UNSUPPORTED = (
    "batched CIAO supports the AdamW path with clipping and LAMB's trust ratio only; use CIAO"
)
# Hyperparameters whose non-default values take CIAO's other paths, which BatchedCIAO refuses.
UNBATCHED_HPARAMS = ("adamax", "decay_in_update", "matrix_decay_factor", "table_decay_factor")
_DTYPES = (torch.float32, torch.float64)
# The first moment's scale is folded back into it below this, as in `ciao.update_moments`.
_FOLD_BELOW = 1e-3
# A group's values read at once: lr_factor, which moves every step, and the others.
_get_factor = operator.itemgetter("lr_factor")
_get_rest = operator.itemgetter(*[k for k in HPARAMS if k != "lr_factor"])


def _to_device(t: Tensor, device: torch.device) -> Tensor:
    """A host tensor moved to `device` without waiting for it: a plain copy to a GPU waits for
    the stream, which would cost a host sync per step."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _check_member(
    i: int, group: dict, keys: Iterable[str] | None = None, *, unknown_ok: bool = True
) -> None:
    """Raise ValueError naming member `i` if its hyperparameters (only `keys` of them, if
    given) are not allowed or ask for something only CIAO has."""
    missing = [k for k in HPARAMS if k not in group]
    try:
        if missing:
            raise ValueError(f"hyperparameter(s) {missing} missing")
        if keys is None:
            check_group(group, unknown_ok=unknown_ok)
        for key in keys or ():
            check_value(key, group[key])
    except ValueError as e:
        raise ValueError(f"member {i}: {e}") from None
    extras = {k: group[k] for k in UNBATCHED_HPARAMS if group[k] != DEFAULTS[k]}
    if extras:
        given = ", ".join(f"{k}={v!r}" for k, v in extras.items())
        raise ValueError(f"member {i}: {given}: {UNSUPPORTED}")


def _check_params(params: list, n: int) -> None:
    if not params:
        raise ValueError("BatchedCIAO got no parameters")
    if len({id(p) for p in params}) != len(params):
        raise ValueError("a parameter appears twice in BatchedCIAO's parameters")
    first = params[0]
    for p in params:
        if not isinstance(p, Tensor):
            raise ValueError(f"BatchedCIAO's parameters must be tensors, got {type(p).__name__}")
        if not p.is_leaf:
            raise ValueError("BatchedCIAO can't optimize a non-leaf tensor")
        if p.dtype not in _DTYPES:
            raise ValueError(
                f"a parameter has dtype {p.dtype}: batched CIAO supports float32 and float64 "
                "only; use CIAO"
            )
        if p.dtype != first.dtype:
            raise ValueError(
                f"parameters of dtypes {first.dtype} and {p.dtype}: batched CIAO needs one dtype"
            )
        if p.is_meta:
            raise ValueError(
                f"a parameter of shape {tuple(p.shape)} is on the 'meta' device, which holds no "
                "data to update: materialise the model first"
            )
        if p.device != first.device:
            raise ValueError(
                f"parameters on devices {first.device} and {p.device}: batched CIAO needs "
                "every parameter on one device"
            )
        if p.dim() == 0 or p.shape[0] != n:
            raise ValueError(
                f"a parameter of shape {tuple(p.shape)}: expected ({n}, ...), one row per "
                f"member ({n} members' hyperparameters were given)"
            )


def _same_objects(values: list[tuple], last: list[tuple] | None) -> bool:
    """Whether `values` holds the very objects `last` held: then no value changed, nor its
    type (the values are numbers, booleans and None, which do not change in place)."""
    return (
        last is not None
        and len(values) == len(last)
        and all(map(operator.is_, chain.from_iterable(values), chain.from_iterable(last)))
    )


def _plain_factors(factors: list) -> bool:
    """Whether every factor is a float that `check_value("lr_factor", ...)` accepts, tested
    at once; anything else goes through check_value, which names what it refuses."""
    spec = HPARAMS["lr_factor"]
    low, high = max(spec.low, -sys.float_info.max), min(spec.high, sys.float_info.max)
    if spec.low_open:
        return all(type(f) is float and low < f <= high for f in factors)
    return all(type(f) is float and low <= f <= high for f in factors)


class _HParams:
    """The members' hyperparameters as (N, 1) float64 columns on the parameters' device (they
    broadcast over a member's row), each value computed on the host as CIAO computes it from
    its group, so that the arithmetic on them matches CIAO's."""

    ROWS = (
        "beta1",
        "beta2",
        "ombeta1",  # 1 - beta1, which is not always the group's ombeta1 to the last bit
        "ombeta2",
        "weight_decay",
        "epsilon",
        "clip_fraction",  # 0 where clipping is off
        "clip_on",
        "norm_decay",  # 1 - grad_clip_ombeta
        "lamb_power",
        "lamb_min_trust",
        "lamb_max_trust",  # 1 / lamb_min_trust, within the state dtype's range
        "lamb_ombeta",  # lamb_update_norm_ombeta
        "lamb_keep",  # 1 - lamb_update_norm_ombeta
        "lamb_sparse",  # 1 where the trust ratio scales row-sparse tensors too
        "lamb_norm_floor",
        "lamb_norm_ceiling",
    )

    def __init__(self, groups: list[dict], dtype: torch.dtype, device: torch.device) -> None:
        rows = []
        for g in groups:
            beta1, beta2 = 1.0 - g["ombeta1"], 1.0 - g["ombeta2"]
            fraction = g["clip_fraction"]
            rows.append(
                [
                    beta1,
                    beta2,
                    1.0 - beta1,
                    1.0 - beta2,
                    g["weight_decay"],
                    g["epsilon"],
                    0.0 if fraction is None else fraction,
                    float(fraction is not None),
                    1.0 - g["grad_clip_ombeta"],
                    g["lamb_power"],
                    g["lamb_min_trust"],
                    min(1.0 / g["lamb_min_trust"], torch.finfo(dtype).max),
                    g["lamb_update_norm_ombeta"],
                    1.0 - g["lamb_update_norm_ombeta"],
                    float(g["lamb_sparse"]),
                    g["lamb_norm_floor"],
                    g["lamb_norm_ceiling"],
                ]
            )
        table = torch.tensor(rows, dtype=torch.float64).T.contiguous().unsqueeze(-1)
        table = _to_device(table, device)
        for name, column in zip(self.ROWS, table, strict=True):
            setattr(self, name, column)
        self.betas = table[:2]  # (2, N, 1): beta1, beta2
        self.clip_on = self.clip_on.bool()
        self.lamb_on = self.lamb_power > 0  # (N, 1)
        self.dense_only = self.lamb_sparse == 0  # (N, 1): no trust ratio on row-sparse tensors
        self.any_dense_only = not all(g["lamb_sparse"] for g in groups)
        self.any_lamb = any(g["lamb_power"] > 0 for g in groups)
        # Each member's `lamb_free_below` where its trust ratio is on (0 elsewhere), on the host:
        # the decision it takes is read there, once per tensor.
        self.free_fractions = [g["lamb_free_below"] if g["lamb_power"] > 0 else 0.0 for g in groups]
        self.any_free = any(f > 0 for f in self.free_fractions)
        self.any_floor = any(g["lamb_norm_floor"] > 0 for g in groups)
        self.any_ceiling = any(g["lamb_norm_ceiling"] > 0 for g in groups)
        # In the state's dtype, as the update reads them.
        self.beta2_state = self.beta2.to(dtype)
        self.epsilon_state = self.epsilon.to(dtype)
        self.lamb_state = [
            x.to(dtype)
            for x in (self.lamb_power, self.lamb_min_trust, self.lamb_max_trust, self.lamb_ombeta)
        ]
        self.base_lrs = [g["lr"] for g in groups]
        self.weight_decays = [g["weight_decay"] for g in groups]
        self.any_decay = any(wd != 0.0 for wd in self.weight_decays)
        self.set_factors([g["lr_factor"] for g in groups])

    def set_factors(self, factors: list) -> None:
        """The columns that depend on lr_factor, which a controller moves every step: `lr`
        (lr * lr_factor), `neg_lr` (its negative, exact) and `decay_factor` (1 - lr *
        weight_decay). New tensors, not written in place: the statistics keep the old ones."""
        lrs = [lr * f for lr, f in zip(self.base_lrs, factors, strict=True)]
        table = torch.tensor(
            [
                lrs,
                [-lr for lr in lrs],
                [1.0 - lr * wd for lr, wd in zip(lrs, self.weight_decays, strict=True)],
            ],
            dtype=torch.float64,
        ).unsqueeze(-1)
        self.lr, self.neg_lr, self.decay_factor = _to_device(table, self.beta1.device)


class _Scratch:
    """Named buffers that a step's large temporaries are written into, reused from step to
    step. Allocated afresh every step, a large temporary often comes on CPU as new pages from
    the system, whose first touch costs more than the arithmetic done on them.

    `take(name, *shape)` is a contiguous view of the start of buffer `name` (which grows to the
    largest shape asked for): each name is one allocation, so a view starts where a fresh
    tensor would, aligned alike. A name is to be taken once per step: two takes alias."""

    def __init__(self, dtype: torch.dtype, device: torch.device) -> None:
        self._kind = dict(dtype=dtype, device=device)
        self._buffers: dict[str, Tensor] = {}

    def take(self, name: str, *shape: int, dtype: torch.dtype | None = None) -> Tensor:
        size = math.prod(shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < size:
            kind = self._kind if dtype is None else {**self._kind, "dtype": dtype}
            buffer = self._buffers[name] = torch.empty(size, **kind)
        return buffer[:size].view(shape)


@dataclass
class _Layout:
    """Where the tensors that have gradients at a step lie in the flat (N, D) state, and the
    sample the statistics read of them. Depends only on which tensors those are."""

    tensors: Tensor | None  # their indices among the parameters (None: all)
    columns: Tensor | None  # their columns of the flat state (None: all)
    owner: Tensor  # the position among them of the tensor each column belongs to
    sizes: list[int]  # their member sizes, in order
    strides: list[int]  # the stride of each one's sample (`sample_stride`, as CIAO's)
    sample: Tensor | None  # the sampled columns of their flat gradient (None: every column)
    sample_owner: Tensor  # the position of the tensor each sampled column belongs to
    weights: Tensor  # numel / samples of each sampled column's tensor
    numel: Tensor  # (1,) float64: their total member size


def _layout(
    active: tuple[int, ...],
    shapes: list[tuple[int, ...]],
    offsets: list[int],
    stat_samples: int,
    dtype: torch.dtype,
    device: torch.device,
) -> _Layout:
    sizes = [math.prod(shapes[k]) for k in active]
    every = len(active) == len(shapes)
    longs = dict(dtype=torch.long, device=device)
    positions = torch.arange(len(active), **longs)
    columns = None
    if not every:
        columns = torch.cat(
            [
                torch.arange(offsets[k], offsets[k] + n, **longs)
                for k, n in zip(active, sizes, strict=True)
            ]
        )
    # The statistics read the same strided sample of each member's tensor as CIAO would.
    strides = [sample_stride(torch.empty(shapes[k], device="meta"), stat_samples) for k in active]
    counts = [-(-n // s) for n, s in zip(sizes, strides, strict=True)]
    sample = None
    if any(s > 1 for s in strides):
        starts = [0, *accumulate(sizes[:-1])]
        sample = torch.cat(
            [
                torch.arange(a, a + n, s, **longs)
                for a, n, s in zip(starts, sizes, strides, strict=True)
            ]
        )
    ratios = torch.tensor([n / c for n, c in zip(sizes, counts, strict=True)], dtype=dtype)
    return _Layout(
        tensors=None if every else torch.tensor(active, **longs),
        columns=columns,
        owner=torch.repeat_interleave(positions, torch.tensor(sizes, **longs)),
        sizes=sizes,
        strides=strides,
        sample=sample,
        sample_owner=torch.repeat_interleave(positions, torch.tensor(counts, **longs)),
        weights=torch.repeat_interleave(ratios, torch.tensor(counts)).to(device),
        numel=torch.tensor([float(sum(sizes))], dtype=torch.float64, device=device),
    )


def batched_raw_statistics(
    layout: _Layout,
    params: list[Tensor],
    grads: Tensor,
    exp_avgs: Tensor,
    denoms: Tensor,
    exp_avg_scales: Tensor,
    m_hat_coefs: Tensor,
    denom_coefs: Tensor,
    *,
    epsilon: Tensor,
    scratch: _Scratch,
    trust: Tensor | None = None,
    lamb: Tensor | None = None,
) -> Tensor:
    """`stats.raw_statistics` of CIAO's AdamW path for every member at once: (N, len(_RAW))
    float64 sums on the parameters' device.

    `grads`, `exp_avgs` and `denoms` are the flat (N, D) tensors of the layout's tensors,
    `params` those tensors themselves; the coefficients and `epsilon` are per member and
    column, broadcastable against the sample (N, S); `trust` (N, Pa), where given, LAMB's
    trust ratio of each tensor, which scales its update, and `lamb` where it applies (the
    statistics' log-trust sums). The same fixed sample of each member's
    tensor is read as CIAO reads, with the same weights, so the estimates are CIAO's. The
    (N, S) intermediates are written into `scratch`'s buffers, none of which is read after."""
    n, w = grads.shape[0], layout.weights
    s = w.numel()

    def sampled(x: Tensor, name: str) -> Tensor:
        if layout.sample is None:
            return x
        return torch.index_select(x, 1, layout.sample, out=scratch.take(name, n, s))

    g, m, d = sampled(grads, "g"), sampled(exp_avgs, "m"), sampled(denoms, "d")
    p = torch.cat(
        [q.reshape(n, -1)[:, ::st] for q, st in zip(params, layout.strides, strict=True)],
        dim=1,
        out=scratch.take("p", n, s),
    )
    d = torch.mul(d, denom_coefs, out=scratch.take("d_hat", n, s))
    m_hat = torch.mul(m, m_hat_coefs, out=scratch.take("m_hat", n, s))
    u = torch.div(m_hat, d, out=scratch.take("u", n, s))
    if trust is not None:
        u.mul_(trust.index_select(1, layout.sample_owner))
    m = torch.mul(m, exp_avg_scales, out=scratch.take("m_scaled", n, s))
    v_hat = torch.sub(d, epsilon, out=scratch.take("v_hat", n, s)).square_()
    # The rows summed: n_above, log |u|, then the products g m, g p, g u, g g, m m, p p, u u, u p.
    rows = scratch.take("rows", 10, n, s)
    torch.gt(d, 2 * epsilon, out=rows[0])
    torch.abs(u, out=rows[1]).add_(LOG_FLOOR).log_()
    for row, (a, b) in enumerate(
        [(g, m), (g, p), (g, u), (g, g), (m, m), (p, p), (u, u), (u, p)], start=2
    ):
        torch.mul(a, b, out=rows[row])
    sums = (rows @ w).to(torch.float64)  # (10, N)
    noise_sums = torch.stack([v_hat @ w, m_hat.mul_(m_hat) @ w]).to(torch.float64)
    numel = layout.numel.expand(1, n)
    trusts = torch.zeros(2, n, dtype=torch.float64, device=w.device)
    if trust is not None:
        trusts[0] = torch.where(lamb, trust.to(torch.float64).log(), 0.0).sum(1)
        trusts[1] = lamb.sum(1)
    # _RAW's order: n_above, sum_log_u, numel, gm .. up, sum_vhat, mhat_sq, log_trust, n_trust
    return torch.cat([sums[:2], numel, sums[2:], noise_sums, trusts]).T


class _Statistics:
    """`StepStatistics` for N members: the period's counters and sums per member, on the
    device, read in one host sync by `pop()`, which pops every member."""

    def __init__(self, n: int, device: torch.device) -> None:
        self.n, self.device = n, device
        self.noise_floor = 0.0  # see `statistics_from_raw`
        self.reset()

    def reset(self) -> None:
        self.steps = [0] * self.n  # steps of the period (host: every step counts)
        f64 = dict(dtype=torch.float64, device=self.device)
        self.counts = torch.zeros(3, self.n, 1, **f64)  # clipped, skipped, measured steps
        self.sum = torch.zeros(self.n, len(TENSOR_STAT_NAMES), **f64)
        # Raw sums of measured steps not formed yet: (raw, lr, decoupled decay, measured).
        self._rows: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []

    def count(self, clipped: Tensor | None = None, skipped: Tensor | None = None) -> None:
        """Count a step of every member, `clipped` and `skipped` (N, 1) masks of it (None: a
        step without gradients, neither)."""
        self.steps = [s + 1 for s in self.steps]
        if clipped is not None and skipped is not None:
            self.counts[:2] += torch.stack([clipped, skipped])

    def add(self, raw: Tensor, lr: Tensor, decay: Tensor, measured: Tensor) -> None:
        """One step's raw sums (N, len(_RAW)) of every member, with its (N, 1) lr and decoupled
        decay; those of members not `measured` (N, 1) are left out."""
        self._rows.append((raw, lr.view(-1), decay.view(-1), measured))
        self.counts[2] += measured
        if len(self._rows) >= _FOLD_ROWS:
            self.fold()

    def fold(self) -> None:
        """Form the pending raw sums into statistics, added to `sum`: one batch of ops."""
        if not self._rows:
            return
        raw, lr, decay, measured = (torch.stack(x) for x in zip(*self._rows, strict=True))
        stats = statistics_from_raw(raw, lr=lr, decoupled_decay=decay, noise_floor=self.noise_floor)
        self.sum += torch.where(measured, stats, 0.0).sum(0)
        self._rows = []

    def pop(self) -> list[dict[str, float]]:
        """Every member's `CIAO.pop_step_stats()` dict, then reset: one host sync."""
        self.fold()
        means = self.sum / self.counts[2]  # 0 / 0 = NaN where none was measured
        values = torch.cat([means, self.counts[0], self.counts[1]], dim=1).tolist()
        out = []
        for steps, row in zip(self.steps, values, strict=True):
            stats = dict(zip(TENSOR_STAT_NAMES, row, strict=False))
            n = max(steps, 1)
            stats["clip_rate"] = row[-2] / n
            stats["skip_rate"] = row[-1] / n
            out.append(stats)
        self.reset()
        return out

    def state_dict(self, i: int) -> dict:
        self.fold()
        return {
            "period_steps": self.steps[i],
            "counts": self.counts[:, i, 0].clone(),
            "stat_sum": self.sum[i].clone(),
        }

    def load_state_dict(self, i: int, state: dict) -> None:
        self.fold()
        self.steps[i] = state["period_steps"]
        self.counts[:, i, 0] = state["counts"].to(self.device)
        self.sum[i] = state["stat_sum"].to(self.device)


class BatchedCIAO:
    """CIAO's AdamW path with clipping and LAMB's trust ratio for N members whose parameters
    are stacked.

    Args:
        params: leaf tensors, each of shape (N, *member_shape), row i member i's; one dtype
            (float32 or float64) and one device.
        hparams: each member's initial hyperparameters (keys of `HPARAMS`; missing ones take
            `DEFAULTS`).
        feature_every, stat_samples: as CIAO's, for every member.

    `step()` reads each parameter's `grad` (of the parameter's shape) and steps every member;
    parameters whose grad is None are left out, as CIAO leaves them out. Each member's
    hyperparameters are its group, `members[i].param_groups[0]`: a change there takes effect
    at the next step, validated then (a bad value is a ValueError naming the member, the key
    and the value, and the step changes nothing).
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        hparams: Iterable[dict],
        *,
        feature_every: int = 4,
        stat_samples: int = 2048,
    ) -> None:
        params, hparams = list(params), [dict(h) for h in hparams]
        if not hparams:
            raise ValueError("BatchedCIAO needs the hyperparameters of at least one member")
        n = len(hparams)
        _check_params(params, n)
        groups = []
        for i, given in enumerate(hparams):
            group = {**DEFAULTS, **given}
            _check_member(i, group, unknown_ok=False)
            groups.append(group)
        self.N = n
        self.params = params
        self._feature_every = _check_int("feature_every", feature_every, 0)
        self._stat_samples = _check_int("stat_samples", stat_samples, 1)
        self._device, self._dtype = params[0].device, params[0].dtype
        self._shapes = [tuple(p.shape[1:]) for p in params]
        sizes = [math.prod(s) for s in self._shapes]
        self._offsets = [sum(sizes[:k]) for k in range(len(sizes))]
        self._largest_norm = math.sqrt(torch.finfo(self._dtype).max)

        state = dict(dtype=self._dtype, device=self._device)
        f64 = dict(dtype=torch.float64, device=self._device)
        self._exp_avg = torch.zeros(n, sum(sizes), **state)  # first moment / its scale
        self._exp_avg_sq = torch.zeros(n, sum(sizes), **state)
        self._products = torch.ones(2, n, len(params), **f64)  # prod(beta1), prod(beta2)
        self._scale = torch.ones(n, len(params), **f64)  # first moment = scale * exp_avg
        self._norm_max = torch.zeros(n, 1, **f64)  # rolling max of each member's gradient norm
        # LAMB's EMA of each matrix's update norm and the running product of its betas, as
        # CIAO's `update_norm_ema` and `update_norm_product` (moved only while lamb_power > 0).
        self._unorm_ema = torch.zeros(n, len(params), **state)
        self._unorm_product = torch.ones(n, len(params), **f64)
        # The member tensors that LAMB scales (two or more dimensions, as in CIAO).
        self._matrices = [len(s) > 1 for s in self._shapes]
        self._matrix = _to_device(torch.tensor(self._matrices), self._device)
        # Each tensor's norm at PyTorch's default initialisation (`lamb_norm_floor`'s unit).
        self._default_norms = _to_device(
            torch.tensor(
                [
                    default_init_norm(torch.empty(s, device="meta")) if len(s) > 1 else 0.0
                    for s in self._shapes
                ],
                dtype=self._dtype,
            ),
            self._device,
        )
        # Which member tensors are row-sparse (`ciao.is_row_sparse`), read from the gradient of
        # a tensor's first step (`_sparse_known`), as CIAO reads it when it makes the state.
        self._row_sparse = torch.zeros(n, len(params), dtype=torch.bool, device=self._device)
        self._sparse_known = [False] * len(params)
        # The member tensors `lamb_free_below` takes off the trust ratio, and which of them
        # each member has decided (host lists: decided once, at the member's first step under
        # the option), as CIAO's `lamb_free` state.
        self._lamb_free = torch.zeros(n, len(params), dtype=torch.bool, device=self._device)
        self._free_known = [[False] * len(params) for _ in range(n)]
        self._steps = [0] * n  # steps attempted (taken or skipped), per member
        self._skipped = torch.zeros(n, 1, dtype=torch.long, device=self._device)
        # Whether every tensor of member i has stepped alike (same per-tensor scalars).
        self._uniform = [True] * n
        self._stats = _Statistics(n, self._device)
        self._pop_cache: dict[int, dict[str, float]] = {}
        self._layouts: dict[tuple[int, ...], _Layout] = {}
        self._checked: list[tuple] | None = None
        self._hparams: _HParams | None = None
        self._rest: list[tuple] | None = None  # the values other than lr_factor last built
        self._factors: list = []
        self._factor_types: list[type] = []
        self._scratch = _Scratch(self._dtype, self._device)
        # On the CPU, reading a flag off the device costs nothing (no stream to wait for): a
        # step then leaves out the masks and selections that would change nothing.
        self._host_reads = self._device.type == "cpu"
        self.members = [MemberOptimizer(self, i, g) for i, g in enumerate(groups)]

    @property
    def feature_every(self) -> int:
        """Measure the statistics every this many steps of a member (0: never)."""
        return self._feature_every

    @property
    def stat_samples(self) -> int:
        """The statistics sample about this many elements of each member's tensor."""
        return self._stat_samples

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the parameters' gradients, as `torch.optim.Optimizer.zero_grad` does."""
        dense = []
        for p in self.params:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
                continue
            if p.grad.grad_fn is not None:
                p.grad.detach_()
            else:
                p.grad.requires_grad_(False)
            if p.grad.is_sparse:
                p.grad.zero_()
            else:
                dense.append(p.grad)
        if dense:
            torch._foreach_zero_(dense)

    # -- the step --------------------------------------------------------------------------

    def _current_hparams(self) -> _HParams:
        """The members' hyperparameters, validated where they changed (a bad value raises
        before anything changed).

        A controller writes lr_factor before every step and the others at decisions only, so
        the two are watched apart: the others by identity (the same objects as at the last
        build: nothing changed, type included), the factors by value and type, whose change
        rebuilds only the columns they enter."""
        groups = [m.param_groups[0] for m in self.members]
        try:
            rest = list(map(_get_rest, groups))
            factors = list(map(_get_factor, groups))
        except KeyError:  # a member lacks a key: the full check names it
            rest = factors = None
        h = self._hparams
        if h is None or rest is None or not _same_objects(rest, self._rest):
            return self._build_hparams(groups, rest)
        types = list(map(type, factors))
        if factors != self._factors or types != self._factor_types:
            if not _plain_factors(factors):
                old = zip(self._factor_types, self._factors, strict=True)
                for i, (t, f, was) in enumerate(zip(types, factors, old, strict=True)):
                    if (t, f) != was:
                        _check_member(i, groups[i], ["lr_factor"])
            h.set_factors(factors)
            self._factors, self._factor_types = factors, types
        return h

    def _build_hparams(self, groups: list[dict], rest: list[tuple] | None) -> _HParams:
        """Validate what changed since the last build (everything, the first time), then
        build every column."""
        values = [tuple((type(v), v) for v in map(g.get, HPARAMS)) for g in groups]
        if values != self._checked:
            for i, g in enumerate(groups):
                old = None if self._checked is None else self._checked[i]
                if values[i] != old:
                    changed = (
                        None
                        if old is None
                        else [k for k, a, b in zip(HPARAMS, values[i], old, strict=True) if a != b]
                    )
                    _check_member(i, g, changed)
            self._checked = values
        self._hparams = _HParams(groups, self._dtype, self._device)
        self._rest = rest
        self._factors = [g["lr_factor"] for g in groups]
        self._factor_types = list(map(type, self._factors))
        return self._hparams

    def _layout(self, active: tuple[int, ...]) -> _Layout:
        layout = self._layouts.get(active)
        if layout is None:
            layout = self._layouts[active] = _layout(
                active, self._shapes, self._offsets, self.stat_samples, self._dtype, self._device
            )
        return layout

    @torch.no_grad()
    def step(self) -> None:
        h = self._current_hparams()  # raises before anything changed
        active = tuple(k for k, p in enumerate(self.params) if p.grad is not None)
        if any(self.params[k].grad.is_sparse for k in active):
            raise RuntimeError(
                "BatchedCIAO does not support sparse gradients; use dense gradients "
                "(e.g. nn.Embedding(sparse=False))"
            )
        self._pop_cache.clear()
        self._steps = [s + 1 for s in self._steps]
        if not active:
            self._stats.count()
            return
        n, layout, scratch = self.N, self._layout(active), self._scratch
        width = sum(layout.sizes)
        params = [self.params[k] for k in active]
        if len(active) < len(self.params):
            self._uniform = [False] * n  # the tensors without gradients fall behind
        uniform = all(self._uniform)

        def columns(x: Tensor, owner: Tensor) -> Tensor:
            """Per-member, per-tensor values (N, Pa) for each column, in the state's dtype:
            one column when every tensor of every member holds the same value."""
            return (x[:, :1] if uniform else x.index_select(1, owner)).to(self._dtype)

        # Each member's gradient norm decides its skip and its clipping, on the device.
        g = torch.cat(
            [p.grad.reshape(n, -1) for p in params], dim=1, out=scratch.take("grad", n, width)
        )
        # In float64, as vector_norm(g, dtype=torch.float64) computes it: over g converted
        # (here into a buffer of the scratch rather than a fresh tensor).
        wide = g
        if g.dtype != torch.float64:
            wide = scratch.take("grad64", n, width, dtype=torch.float64).copy_(g)
        norm = torch.linalg.vector_norm(wide, dim=1, keepdim=True)
        ok = norm <= self._largest_norm  # (N, 1); False for NaN and Inf
        # Where every member steps (known only where reading it is free), selecting by `ok`
        # gives back its first operand.
        all_ok = self._host_reads and bool(ok.all())

        def pick(a: Tensor, b: Tensor | float) -> Tensor:
            """torch.where(ok, a, b) for an `a` of the result's shape."""
            return a if all_ok else torch.where(ok, a, b)

        skipped = ~ok
        if not all_ok:
            g.masked_fill_(skipped, 0.0)  # NaN * 0 is NaN: a skipped member reads zeros
            self._skipped += skipped
        c = self._clip_scales(h, norm, ok, all_ok)
        clipped = c < 1.0
        self._stats.count(clipped, skipped)

        # Bias corrections from the running products of the betas used; a skipped member's
        # betas are 1 (its products stay).
        used = pick(h.betas, 1.0)
        if layout.tensors is None:
            products = self._products.mul_(used)
            old_scale = self._scale
        else:
            products = self._products[:, :, layout.tensors] * used
            self._products[:, :, layout.tensors] = products
            old_scale = self._scale[:, layout.tensors]
        bc1, bc2 = (1.0 - products).unbind(0)

        # The first moment m = scale * m_tilde, as in `ciao.update_moments`.
        grad_weight = h.ombeta1 * c
        scale = h.beta1 * old_scale + grad_weight
        weight = pick(grad_weight / scale, 0.0)
        scale = pick(scale, old_scale)
        fold = scale < _FOLD_BELOW
        any_fold = not self._host_reads or bool(fold.any())
        if any_fold:
            fold_factor = torch.where(fold, scale, 1.0)
            scale = torch.where(fold, 1.0, scale)
        if layout.tensors is None:
            self._scale = scale
            m, v = self._exp_avg, self._exp_avg_sq
        else:
            self._scale[:, layout.tensors] = scale
            m = self._exp_avg.index_select(1, layout.columns)
            v = self._exp_avg_sq.index_select(1, layout.columns)
        m.lerp_(g, columns(weight, layout.owner))
        if any_fold:
            m.mul_(columns(fold_factor, layout.owner))
        v.mul_(h.beta2_state if all_ok else used[1].to(self._dtype))
        work = scratch.take("work", n, width)  # (c^2 (1 - beta2)) g here, the step below
        v.addcmul_(torch.mul(g, (h.ombeta2 * (c * c)).to(self._dtype), out=work), g)

        # Denominators sqrt(v) + eps sqrt(bc2) and the scalar coefficients, as in
        # `ciao.denominators` and `CIAO._step_group`.
        root = bc2.sqrt()
        eps_term = (h.epsilon * root).clamp_min(torch.finfo(self._dtype).tiny)
        d = torch.sqrt(v, out=scratch.take("denom", n, width))
        d.add_(columns(eps_term, layout.owner))
        d_coef = 1.0 / root
        m_coef = scale / bc1
        u_coef = m_coef / d_coef
        step_coef = pick(h.neg_lr * u_coef, 0.0)
        if not all(self._sparse_known):  # only until every tensor has had a gradient
            self._read_row_sparse(active, params)
        if h.any_free:
            self._decide_free(h, active, params, ok, all_ok)
        trust = lamb = None
        if h.any_lamb and any(self._matrices[k] for k in active):
            trust, lamb = self._trust_ratios(h, layout, params, m, d, u_coef, ok, all_ok)

        measures = [self._measures(s) for s in self._steps]
        if any(measures):
            measured = ok
            if not all(measures):
                measured = ok & _to_device(torch.tensor(measures).view(-1, 1), self._device)
            raw = batched_raw_statistics(
                layout,
                params,
                g,
                m,
                d,
                columns(scale, layout.sample_owner),
                columns(m_coef, layout.sample_owner),
                columns(d_coef, layout.sample_owner),
                epsilon=h.epsilon_state,
                scratch=scratch,
                trust=trust,
                lamb=lamb,
            )
            self._stats.add(raw, h.lr, h.weight_decay, measured)

        # p <- (1 - lr wd) p - lr u, the second term (-lr coef m_tilde) / d as CIAO's addcdiv
        # forms it, over views of the flat tensors shaped as each parameter.
        if h.any_decay:
            factors = pick(h.decay_factor, 1.0).to(self._dtype)
            torch._foreach_mul_(params, [factors.view(-1, *[1] * (p.dim() - 1)) for p in params])
        scaled = torch.mul(m, columns(step_coef, layout.owner), out=work)
        if trust is not None:
            scaled.mul_(trust.index_select(1, layout.owner))
        views = [self._views(x, params, layout.sizes) for x in (scaled, d)]
        torch._foreach_addcdiv_(params, *views)
        if layout.tensors is not None:
            self._exp_avg.index_copy_(1, layout.columns, m)
            self._exp_avg_sq.index_copy_(1, layout.columns, v)

    def _read_row_sparse(self, active: tuple[int, ...], params: list[Tensor]) -> None:
        """Record which members' tensors are row-sparse at each tensor's first gradient."""
        for k, p in zip(active, params, strict=True):
            if not self._sparse_known[k] and self._matrices[k]:
                rows = p.grad.reshape(self.N, p.shape[1], -1)
                self._row_sparse[:, k] = (rows == 0).all(2).any(1)
            self._sparse_known[k] = True

    def _decide_free(
        self, h: _HParams, active: tuple[int, ...], params: list[Tensor], ok: Tensor, all_ok: bool
    ) -> None:
        """CIAO's `_decide_free` per member: at a step the member takes with its
        `lamb_free_below` on, its active tensors not yet decided, by `ciao.lamb_free_tensors`
        over its rows of the active tensors (the median of those stepping now)."""
        todo = [
            i
            for i, f in enumerate(h.free_fractions)
            if f > 0 and not all(self._free_known[i][k] for k in active)
        ]
        if not todo:
            return
        stepping = [True] * self.N if all_ok else ok.view(-1).tolist()
        sparse = self._row_sparse[:, list(active)].tolist()
        for i in (i for i in todo if stepping[i]):
            rows = [p.detach()[i] for p in params]
            free = lamb_free_tensors(rows, sparse[i], h.free_fractions[i])
            for k, f in zip(active, free, strict=True):
                if not self._free_known[i][k]:
                    self._free_known[i][k] = True
                    if f:
                        self._lamb_free[i, k] = True

    def _trust_ratios(
        self,
        h: _HParams,
        layout: _Layout,
        params: list[Tensor],
        m: Tensor,
        d: Tensor,
        u_coef: Tensor,
        ok: Tensor,
        all_ok: bool,
    ) -> tuple[Tensor, Tensor]:
        """LAMB's trust ratio of each member's active tensor, (N, Pa) in the state's dtype (1
        where it does not apply), and where it applies: `ciao.lamb_trust_ratios` of the update
        u_coef * m_tilde / d, whose EMA of norms and product move on the members that step with
        lamb_power > 0, at their matrices."""
        n = self.N
        q = torch.div(m, d, out=self._scratch.take("lamb_u", n, m.shape[1]))
        u_norm = torch.stack(
            [torch.linalg.vector_norm(x, dim=1) for x in q.split(layout.sizes, dim=1)], dim=1
        ).mul_(u_coef.to(self._dtype))
        p_norm = torch.stack([torch.linalg.vector_norm(p.reshape(n, -1), dim=1) for p in params], 1)
        matrix = self._matrix if layout.tensors is None else self._matrix[layout.tensors]
        on = h.lamb_on & matrix & (True if all_ok else ok)
        if h.any_dense_only:
            sparse = self._row_sparse
            if layout.tensors is not None:
                sparse = sparse[:, layout.tensors]
            on = on & ~(h.dense_only & sparse)
        if h.any_free:
            free = self._lamb_free if layout.tensors is None else self._lamb_free[:, layout.tensors]
            on = on & ~free
        if layout.tensors is None:
            ema, product = self._unorm_ema, self._unorm_product
        else:
            ema = self._unorm_ema[:, layout.tensors]
            product = self._unorm_product[:, layout.tensors]
        product = torch.where(on, product * h.lamb_keep, product)
        power, min_trust, max_trust, ombeta = h.lamb_state
        ema = torch.where(on, ema.lerp(u_norm, ombeta), ema)
        if layout.tensors is None:
            self._unorm_ema, self._unorm_product = ema, product
        else:
            self._unorm_ema[:, layout.tensors] = ema
            self._unorm_product[:, layout.tensors] = product
        ema_hat = ema / (1.0 - product).to(self._dtype)
        if h.any_floor or h.any_ceiling:  # not on row-sparse tensors
            units = self._default_norms
            sparse = self._row_sparse
            if layout.tensors is not None:
                units, sparse = units[layout.tensors], sparse[:, layout.tensors]
            if h.any_ceiling:  # `lamb_norm_ceiling` (0: none)
                tiny = torch.finfo(self._dtype).tiny  # a cap below it would read as a zero norm
                ceiling = (h.lamb_norm_ceiling.to(self._dtype) * units).clamp_min(tiny)
                capped = (h.lamb_norm_ceiling > 0) & ~sparse
                p_norm = torch.where(capped, torch.minimum(p_norm, ceiling), p_norm)
            if h.any_floor:  # `lamb_norm_floor`
                floor = h.lamb_norm_floor.to(self._dtype) * units
                p_norm = torch.maximum(p_norm, torch.where(sparse, 0.0, floor))
        ratio = torch.where((p_norm > 0) & (ema_hat > 0), p_norm / ema_hat.clamp_min(_TINY), 1.0)
        trust = ratio.pow(power).clamp(min_trust, max_trust)
        return torch.where(on, trust, 1.0), on

    def _clip_scales(self, h: _HParams, norm: Tensor, ok: Tensor, all_ok: bool) -> Tensor:
        """Each member's coefficient for its gradient: clip_fraction * rolling max / norm, at
        most 1 (`CIAO._clip_scale`); the rolling max moves on members that step (`all_ok`:
        every member does)."""
        rolled = torch.maximum(self._norm_max * h.norm_decay, norm)
        self._norm_max = rolled if all_ok else torch.where(ok, rolled, self._norm_max)
        clips = (h.clip_on if all_ok else h.clip_on & ok) & (norm != 0.0)
        return torch.where(clips, (h.clip_fraction * self._norm_max / norm).clamp_max(1.0), 1.0)

    def _measures(self, step: int) -> bool:
        """Whether a member's `step`-th step (counted from 1) is measured, as in CIAO."""
        return self.feature_every > 0 and (step - 1) % self.feature_every == 0

    @staticmethod
    def _views(flat: Tensor, params: list[Tensor], sizes: list[int]) -> list[Tensor]:
        """Views of a flat (N, D) tensor shaped as each of `params` (of member `sizes`)."""
        return [x.view(p.shape) for x, p in zip(flat.split(sizes, dim=1), params, strict=True)]

    # -- statistics ----------------------------------------------------------------------------

    def pop_step_stats(self) -> list[dict[str, float]]:
        """Every member's `pop_step_stats()`, in order: one host sync."""
        return [m.pop_step_stats() for m in self.members]

    def _pop_member(self, i: int) -> dict[str, float]:
        if i not in self._pop_cache:
            # One batched pop resets every member. Members still holding a row keep it: their
            # new rows are empty, as nothing stepped since (a step empties the cache, a load
            # takes the member's row out).
            for j, row in enumerate(self._stats.pop()):
                self._pop_cache.setdefault(j, row)
        return self._pop_cache.pop(i)

    # -- one member's state ----------------------------------------------------------------

    def _member_rows(self, flat: Tensor, i: int) -> list[Tensor]:
        """Copies of member i's part of a flat (N, D) tensor, shaped as its tensors."""
        return [
            flat[i, o : o + math.prod(s)].view(s).clone()
            for o, s in zip(self._offsets, self._shapes, strict=True)
        ]

    def _member_state(self, i: int) -> dict:
        return {
            "exp_avg": self._member_rows(self._exp_avg, i),
            "exp_avg_sq": self._member_rows(self._exp_avg_sq, i),
            "exp_avg_scale": self._scale[i].clone(),
            "beta1_product": self._products[0, i].clone(),
            "beta2_product": self._products[1, i].clone(),
            "uniform": self._uniform[i],
            "group_norm_max": self._norm_max[i, 0].clone(),
            "update_norm_ema": self._unorm_ema[i].clone(),
            "update_norm_product": self._unorm_product[i].clone(),
            "row_sparse": self._row_sparse[i].clone(),
            "lamb_free": self._lamb_free[i].clone(),
            "free_known": torch.tensor(self._free_known[i], dtype=torch.bool),
            "steps": self._steps[i],
            "skipped_steps": self._skipped[i, 0].clone(),
            "hparams": self.members[i].hparams[0],
            "stats": {
                **self._stats.state_dict(i),
                "feature_every": self.feature_every,
                "stat_samples": self.stat_samples,
            },
        }

    def _check_member_state(self, i: int, state: dict) -> None:
        """Raise ValueError unless `state` is a member state of this optimizer's shapes."""
        keys = {
            "exp_avg",
            "exp_avg_sq",
            "exp_avg_scale",
            "beta1_product",
            "beta2_product",
            "uniform",
            "group_norm_max",
            "update_norm_ema",
            "update_norm_product",
            "row_sparse",
            "steps",
            "skipped_steps",
            "hparams",
            "stats",
        }
        if not isinstance(state, dict) or keys - set(state):
            lacks = sorted(keys - set(state)) if isinstance(state, dict) else sorted(keys)
            raise ValueError(f"not a BatchedCIAO member state: it lacks {lacks}")
        shapes = [torch.Size(s) for s in self._shapes]
        for key in ("exp_avg", "exp_avg_sq"):
            got = [tuple(t.shape) for t in state[key]]
            if [torch.Size(s) for s in got] != shapes:
                raise ValueError(
                    f"member {i}: a state whose {key} has shapes {got} can't be loaded into "
                    f"a member of shapes {self._shapes}"
                )
        per_tensor = (len(self.params),)
        for key in (
            "exp_avg_scale",
            "beta1_product",
            "beta2_product",
            "update_norm_ema",
            "update_norm_product",
            "row_sparse",
        ):
            if tuple(state[key].shape) != per_tensor:
                raise ValueError(
                    f"member {i}: a state whose {key} has shape {tuple(state[key].shape)} can't "
                    f"be loaded into a member of {len(self.params)} tensors"
                )
        _check_member(i, state["hparams"])
        stats = state["stats"]
        for key in ("feature_every", "stat_samples"):
            if stats[key] != getattr(self, key):
                raise ValueError(
                    f"member {i}: a state with {key}={stats[key]} can't be loaded into a "
                    f"BatchedCIAO with {key}={getattr(self, key)}"
                )

    @torch.no_grad()
    def _load_member(self, i: int, state: dict) -> None:
        self._check_member_state(i, state)
        for flat, key in ((self._exp_avg, "exp_avg"), (self._exp_avg_sq, "exp_avg_sq")):
            for o, t in zip(self._offsets, state[key], strict=True):
                flat[i, o : o + t.numel()] = t.reshape(-1).to(flat)
        self._scale[i] = state["exp_avg_scale"].to(self._scale)
        self._products[0, i] = state["beta1_product"].to(self._products)
        self._products[1, i] = state["beta2_product"].to(self._products)
        self._uniform[i] = bool(state["uniform"])
        self._norm_max[i, 0] = torch.as_tensor(state["group_norm_max"]).to(self._norm_max)
        self._unorm_ema[i] = state["update_norm_ema"].to(self._unorm_ema)
        self._unorm_product[i] = state["update_norm_product"].to(self._unorm_product)
        self._row_sparse[i] = state["row_sparse"].to(self._row_sparse)
        # Saved before `lamb_free_below` existed: nothing freed, nothing decided.
        none = torch.zeros(len(self.params), dtype=torch.bool)
        self._lamb_free[i] = state.get("lamb_free", none).to(self._lamb_free)
        self._free_known[i] = [bool(x) for x in state.get("free_known", none).tolist()]
        self._steps[i] = int(state["steps"])
        self._skipped[i, 0] = torch.as_tensor(state["skipped_steps"]).to(self._skipped)
        self._stats.load_state_dict(i, state["stats"])
        self.members[i].param_groups[0].update(state["hparams"])
        self._pop_cache.pop(i, None)


class MemberOptimizer:
    """Member i of a `BatchedCIAO`, driven as a CIAO with one param group is: by a
    `Controller` (`param_groups`, `hparams`, `pop_step_stats`) and by `RestartRegisters`
    (`state_dict`, `load_state_dict`). It has no `step()`: the BatchedCIAO steps every member.
    """

    # `state_dict()` returns copies and `load_state_dict` copies in: restart registers keep and
    # restore its states without copying them again.
    state_dict_copies = True

    def __init__(self, owner: BatchedCIAO, index: int, group: dict) -> None:
        self._owner = owner
        self.index = index
        self.param_groups = [group]  # the member's hyperparameters (HPARAMS keys)

    @property
    def hparams(self) -> list[dict[str, float | bool | None]]:
        """The member's hyperparameters (a copy), as `CIAO.hparams` gives them."""
        return [{k: g[k] for k in HPARAMS} for g in self.param_groups]

    @property
    def noise_floor(self) -> float:
        """`CIAO.noise_floor`, shared by every member of the batch."""
        return self._owner._stats.noise_floor

    @noise_floor.setter
    def noise_floor(self, value: float) -> None:
        self._owner._stats.noise_floor = float(value)

    @property
    def steps(self) -> int:
        """Steps attempted (taken or skipped)."""
        return self._owner._steps[self.index]

    @property
    def skipped_steps(self) -> int:
        """Steps skipped (reading it syncs with the device)."""
        return int(self._owner._skipped[self.index, 0])

    def pop_step_stats(self) -> dict[str, float]:
        """Mean of each statistic in `STEP_STAT_NAMES` since the last pop, then reset, as
        `CIAO.pop_step_stats()`.

        Members are popped together, between the same two steps: the first member to pop in a
        period pops every member at once (one host sync) and each member then takes its row.
        The next `step()` drops rows not taken, so a member that does not pop before it loses
        that period's statistics. A member that pops again before a step gets an empty period
        (NaN statistics, rates 0), as CIAO would; one that loaded a state gets that state's.
        """
        return self._owner._pop_member(self.index)

    def state_dict(self) -> dict:
        """The member's slice of the state: moments (copies, shaped as its tensors), scalar
        state, counters, hyperparameters and the statistics of its period since the last
        batched pop."""
        return self._owner._member_state(self.index)

    def load_state_dict(self, state: dict) -> None:
        """Restore a `state_dict()` exactly; a state of other shapes or not allowed
        hyperparameters is refused (ValueError) and nothing changes."""
        self._owner._load_member(self.index, state)
