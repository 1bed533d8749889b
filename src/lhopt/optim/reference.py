"""CIAO's update and statistics written out per tensor, to read and to test the fast path against.

`ReferenceCIAO` does what `lhopt.optim.CIAO` does, one tensor at a time, in the words of
docs/optimizer.md: the first moment stored as it is (no running scale), the bias corrections
applied where the formulas put them, the statistics summed exactly over every element in float64
(no sample). It is slow and keeps no state_dict; tests/test_ciao_reference.py holds the fast
path to it within a stated tolerance.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

import torch
from torch import Tensor

from lhopt.optim.ciao import default_init_norm, lamb_free_tensors, state_dtype
from lhopt.optim.hparams import DEFAULTS, check_group
from lhopt.optim.stats import LOG_FLOOR, TENSOR_STAT_NAMES

_TINY = 1e-30  # floor of the norms and sums the statistics divide by


class ReferenceCIAO(torch.optim.Optimizer):
    """CIAO, per tensor. Same hyperparameters (keyword arguments) and `feature_every`; exact
    statistics, so no `stat_samples`."""

    def __init__(
        self, params: Iterable[Tensor] | Iterable[dict], feature_every: int = 4, **hparams
    ) -> None:
        defaults = {**DEFAULTS, **hparams}
        check_group(defaults)
        self.feature_every = feature_every
        self.norm_max: list[float] = []  # per group: rolling maximum of the gradient norm
        self.steps = 0
        self.skipped_steps = 0
        self._period = {"steps": 0, "clipped": 0, "skipped": 0}
        self._measured: list[list[float]] = []  # statistics of each measured step
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        self.norm_max.append(0.0)

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        self._period["steps"] += 1
        with_grads = [[p for p in g["params"] if p.grad is not None] for g in self.param_groups]
        if not any(with_grads):
            return
        norms = [_group_grad_norm(params) for params in with_grads]
        # Skipped: a NaN or Inf gradient, or a norm whose square overflows the state's dtype.
        limits = [_largest_norm(params) for params in with_grads]
        if not all(n <= limit for n, limit in zip(norms, limits, strict=True)):
            self.skipped_steps += 1
            self._period["skipped"] += 1
            return

        measure = self.feature_every > 0 and (self.steps - 1) % self.feature_every == 0
        # The step's sums pool every group's tensors: its statistics are those of one group
        # holding them all, each step applied with its own group's lr and decay.
        sums: dict[str, float] = defaultdict(float)
        clipped = False
        for gi, (group, params) in enumerate(zip(self.param_groups, with_grads, strict=True)):
            if not params:
                continue
            # Clipping: the gradients are scaled by c = fraction * rolling max / norm, at most 1.
            self.norm_max[gi] = max(self.norm_max[gi] * (1 - group["grad_clip_ombeta"]), norms[gi])
            c = 1.0
            if group["clip_fraction"] is not None and norms[gi] > 0:
                c = min(1.0, group["clip_fraction"] * self.norm_max[gi] / norms[gi])
            clipped |= c < 1.0
            if group["lamb_power"] > 0 and group["lamb_free_below"] > 0:
                self._decide_free(group, params)
            for p in params:
                self._step_tensor(p, group, c, sums if measure else None)
        self._period["clipped"] += int(clipped)
        if measure and sums:
            self._measured.append(_statistics(sums))

    def _step_tensor(self, p: Tensor, group: dict, c: float, sums: dict | None) -> None:
        dtype = state_dtype(p.dtype)  # float32 for float16 and bfloat16 parameters
        state = self.state[p]
        if "step" not in state:  # ("lamb_free" may be decided before the first step)
            state["step"] = 0
            state["m"] = torch.zeros_like(p, dtype=dtype)  # the first moment itself
            state["v"] = torch.zeros_like(p, dtype=dtype)
            state["beta1_product"] = state["beta2_product"] = 1.0
            # Row-sparse: the first gradient has a row of zeros (an embedding table's).
            state["row_sparse"] = p.dim() > 1 and bool((p.grad.flatten(1) == 0).all(1).any())
            # An embedding table: row-sparse at nn.Embedding's scale at the start (rms >= 0.5
            # and >= twice PyTorch's default 1 / sqrt(3 fan-in)).
            rms = float(p.detach().pow(2).mean().sqrt()) if p.numel() else 0.0
            fan_in = p.numel() // p.shape[0] if p.numel() else 1
            state["embedding"] = state["row_sparse"] and rms >= max(0.5, 2 / math.sqrt(3 * fan_in))
        beta1, beta2 = 1 - group["ombeta1"], 1 - group["ombeta2"]
        lr, wd, eps = group["lr"] * group["lr_factor"], group["weight_decay"], group["epsilon"]
        x, g = p.detach().to(dtype), p.grad.to(dtype)

        # Moments and their bias corrections, from the betas actually used.
        state["step"] += 1
        state["beta1_product"] *= beta1
        state["beta2_product"] *= beta2
        bc1, bc2 = 1 - state["beta1_product"], 1 - state["beta2_product"]
        state["m"] = beta1 * state["m"] + (1 - beta1) * (c * g)
        if group["adamax"]:
            state["v"] = torch.maximum(beta2 * state["v"], (c * g).abs())
        else:
            state["v"] = beta2 * state["v"] + (1 - beta2) * (c * g) ** 2
        m_hat = state["m"] / bc1
        # The epsilon term stays a normal number of the state's dtype (CIAO adds it as
        # eps * sqrt(bc2) to sqrt(v), and floors that at the dtype's smallest normal number).
        tiny = torch.finfo(dtype).tiny
        if group["adamax"]:
            sqrt_v_hat, eps_term = state["v"], max(eps, tiny)
        else:
            sqrt_v_hat, eps_term = (state["v"] / bc2).sqrt(), max(eps, tiny / math.sqrt(bc2))

        # The update, with weight decay in it or decoupled from it.
        u = m_hat / (sqrt_v_hat + eps_term)
        if group["decay_in_update"]:
            u = u + wd * x
        decoupled_wd = 0.0 if group["decay_in_update"] else wd
        if x.dim() > 1 and not state["row_sparse"]:  # a dense matrix
            decoupled_wd *= group["matrix_decay_factor"]
        elif state.get("embedding", False):
            decoupled_wd *= group["table_decay_factor"]

        # LAMB: trust ratio (||p|| / EMA of ||u||) ** power, for matrices and larger tensors.
        trust = None
        lamb = group["lamb_power"] > 0 and p.dim() > 1 and p.numel() > 0
        if (
            lamb
            and (group["lamb_sparse"] or not state["row_sparse"])
            and not state.get("lamb_free")
        ):
            ombeta = group["lamb_update_norm_ombeta"]
            if "update_norm_ema" not in state:  # from the first step with LAMB on
                state["update_norm_ema"] = torch.zeros((), dtype=dtype)
                state["update_norm_product"] = 1.0
            state["update_norm_product"] *= 1 - ombeta
            ema = (1 - ombeta) * state["update_norm_ema"] + ombeta * u.norm()
            state["update_norm_ema"] = ema
            ema_hat = ema / (1 - state["update_norm_product"])
            p_norm = x.norm()
            if group["lamb_norm_ceiling"] > 0 and not state["row_sparse"]:
                p_norm = p_norm.clamp_max(group["lamb_norm_ceiling"] * default_init_norm(x))
            if group["lamb_norm_floor"] > 0 and not state["row_sparse"]:
                p_norm = p_norm.clamp_min(group["lamb_norm_floor"] * default_init_norm(x))
            ratio = p_norm / ema_hat if p_norm > 0 and ema_hat > 0 else torch.ones(())
            lo = group["lamb_min_trust"]
            hi = min(1 / lo, torch.finfo(dtype).max)  # 1 / lo may be beyond the dtype's range
            trust = (ratio ** group["lamb_power"]).clamp(lo, hi)
            u = u * trust

        applied = lr * (u + decoupled_wd * x)
        if sums is not None:
            _accumulate(sums, g, state["m"], x, u, applied, sqrt_v_hat, m_hat, trust, eps)
        p.copy_(x - applied)

    def _decide_free(self, group: dict, params: list[Tensor]) -> None:
        """As CIAO: the group's undecided tensors against the median of all stepping now."""
        if all("lamb_free" in self.state[p] for p in params):
            return
        row_sparse = [  # from each tensor's first gradient, as CIAO keeps it
            self.state[p]["row_sparse"]
            if "step" in self.state[p]
            else p.dim() > 1 and bool((p.grad.flatten(1) == 0).all(1).any())
            for p in params
        ]
        free = lamb_free_tensors(params, row_sparse, group["lamb_free_below"])
        for p, f in zip(params, free, strict=True):
            self.state[p].setdefault("lamb_free", f)

    def pop_step_stats(self) -> dict[str, float]:
        """As `CIAO.pop_step_stats()`."""
        out = dict.fromkeys(TENSOR_STAT_NAMES, math.nan)
        if self._measured:
            means = [sum(col) / len(self._measured) for col in zip(*self._measured, strict=True)]
            out.update(zip(TENSOR_STAT_NAMES, means, strict=True))
        n = max(self._period["steps"], 1)
        out["clip_rate"] = self._period["clipped"] / n
        out["skip_rate"] = self._period["skipped"] / n
        self._period = {"steps": 0, "clipped": 0, "skipped": 0}
        self._measured = []
        return out


def _group_grad_norm(params: list[Tensor]) -> float:
    """The norm of a group's gradients, each tensor's taken in its state's dtype."""
    if not params:
        return 0.0
    per_tensor = [torch.linalg.vector_norm(p.grad.to(state_dtype(p.dtype))) for p in params]
    return torch.linalg.vector_norm(torch.stack(per_tensor).double()).item()


def _largest_norm(params: list[Tensor]) -> float:
    return min((math.sqrt(torch.finfo(state_dtype(p.dtype)).max) for p in params), default=math.inf)


def _accumulate(
    sums: dict,
    g: Tensor,
    m: Tensor,
    p: Tensor,
    u: Tensor,
    applied: Tensor,
    sqrt_v_hat: Tensor,
    m_hat: Tensor,
    trust: Tensor | None,
    eps: float,
) -> None:
    """Add one tensor's exact sums, in float64, to its group's."""
    g, m, p, u, applied, sqrt_v_hat, m_hat = (
        t.double() for t in (g, m, p, u, applied, sqrt_v_hat, m_hat)
    )
    sums["numel"] += p.numel()
    sums["n_above"] += (sqrt_v_hat > eps).sum().item()
    sums["sum_log_u"] += (u.abs() + LOG_FLOOR).log().sum().item()
    products = {
        "gm": (g, m),
        "gp": (g, p),
        "gu": (g, u),
        "gg": (g, g),
        "mm": (m, m),
        "pp": (p, p),
        "uu": (u, u),
        "step_sq": (applied, applied),
        "v_hat": (sqrt_v_hat, sqrt_v_hat),
        "m_hat_sq": (m_hat, m_hat),
    }
    for name, (a, b) in products.items():
        sums[name] += (a * b).sum().item()
    if trust is not None:
        sums["log_trust"] += math.log(trust.item())
        sums["n_trust"] += 1


def _statistics(s: dict) -> list[float]:
    """The statistics of TENSOR_STAT_NAMES from one step's sums (docs/optimizer.md)."""

    def cos(dot: float, a_sq: float, b_sq: float) -> float:
        return dot / max(math.sqrt(a_sq * b_sq), _TINY)

    # Gradient noise: sum(v_hat - m_hat^2), the variance the moments estimate.
    noise = max(s["v_hat"] - s["m_hat_sq"], _TINY)
    return [
        s["n_above"] / s["numel"],
        s["sum_log_u"] / s["numel"],
        0.5 * math.log(max(s["step_sq"], _TINY) / max(s["pp"], _TINY)),
        math.log(noise / max(s["m_hat_sq"], _TINY)),
        cos(s["gm"], s["gg"], s["mm"]),
        cos(s["gp"], s["gg"], s["pp"]),
        cos(s["gu"], s["gg"], s["uu"]),
        s["log_trust"] / max(s["n_trust"], 1),
    ]
