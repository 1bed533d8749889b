"""The controller: an LSTM policy over the scale-free features, with a privileged critic.

    features --normalise, clip--> MLP --> layer-norm LSTM --> h
    h --> MLP (residual) --> one categorical head per action dimension (multi-discrete)
    [h, normalised privileged features] --> MLP --> value

Inputs are normalised by an EWMA of their mean and variance (beta 0.999) and clipped to [-5, 5];
the statistics are buffers, updated by the learner only, so the policy a worker runs is fixed.
The privileged features (task descriptor, initial-hyperparameter perturbation, rewards so far,
raw log losses) reach the value head only: the actor never sees them, so a policy file is valid
whatever critic inputs meta-training used (its architecture records their number).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn


class RunningNorm(nn.Module):
    """EWMA mean/variance normaliser with clipping; `update` is called by the learner."""

    def __init__(self, size: int, beta: float = 0.999, clip: float = 5.0) -> None:
        super().__init__()
        self.beta, self.clip = beta, clip
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("sq", torch.ones(size))
        self.register_buffer("weight", torch.zeros(()))  # debiasing: 1 - beta^n

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        for row in x.reshape(-1, x.shape[-1]):
            self.mean.mul_(self.beta).add_((1 - self.beta) * row)
            self.sq.mul_(self.beta).add_((1 - self.beta) * row * row)
            self.weight.mul_(self.beta).add_(1 - self.beta)

    @torch.no_grad()
    def carry_over(self, beta: float) -> None:
        """Re-express statistics gathered at decay `beta` for this normaliser's own decay,
        keeping what they are worth: the min(rows seen, 1 / (1 - `beta`)) rows they average
        enter as that many rows at their mean, so that a slower normaliser started from a
        faster one's statistics weighs them as the few rows they summarise, not as a run's."""
        if float(self.weight) == 0.0 or beta == self.beta:
            return
        seen = math.log1p(-float(self.weight)) / math.log(beta) if beta > 0 else 1.0
        rows = min(seen, 1.0 / (1.0 - beta))
        weight = -math.expm1(rows * math.log(self.beta)) if self.beta > 0 else 1.0
        scale = weight / float(self.weight)
        self.mean.mul_(scale)
        self.sq.mul_(scale)
        self.weight.fill_(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if float(self.weight) == 0.0:
            return x.clamp(-self.clip, self.clip)
        mean = self.mean / self.weight
        var = (self.sq / self.weight - mean**2).clamp_min(1e-8)
        return ((x - mean) / var.sqrt()).clamp(-self.clip, self.clip)


class LayerNormLSTMCell(nn.Module):
    def __init__(self, size: int, hidden: int) -> None:
        super().__init__()
        self.wx = nn.Linear(size, 4 * hidden)
        self.wh = nn.Linear(hidden, 4 * hidden, bias=False)
        self.ln_x, self.ln_h = nn.LayerNorm(4 * hidden), nn.LayerNorm(4 * hidden)
        self.ln_c = nn.LayerNorm(hidden)

    def forward(self, x, state):
        h, c = state
        i, f, g, o = (self.ln_x(self.wx(x)) + self.ln_h(self.wh(h))).chunk(4, -1)
        c = torch.sigmoid(f + 1.0) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(self.ln_c(c))
        return h, c


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.LayerNorm(b), nn.GELU()]
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class PolicyConfig:
    hidden: int = 256  # official: LSTM of 256 units, MLPs of 256
    input_clip: float = 5.0
    norm_beta: float = 0.999
    polyak: float = 0.99
    # Initial logit bias of each head's "keep" choice (0 in the official configuration): the
    # untrained policy then mostly keeps its hyperparameters and leaves the registers alone,
    # i.e. starts near plain CIAO, and explores from there. The bias is learned like any other.
    keep_bias: float = 0.0
    # Feature names (fnmatch patterns over the layout's) the actor reads; the others enter as 0
    # after normalisation (the `input_mask` buffer, which policy files carry). Empty: all.
    read: list = field(default_factory=list, hash=False)


def unmatched_patterns(features: Sequence[str], patterns: Sequence) -> list:
    """The entries of `patterns` that are not strings or match none of `features` (fnmatch,
    case-exact)."""
    return [
        p
        for p in patterns
        if not isinstance(p, str) or not any(fnmatch.fnmatchcase(f, p) for f in features)
    ]


class Policy(nn.Module):
    def __init__(
        self,
        obs_dim: int,
        priv_dim: int,
        nvec: Sequence[int],
        config: PolicyConfig = PolicyConfig(),
        keep: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        h = config.hidden
        self.obs_dim, self.priv_dim, self.nvec = obs_dim, priv_dim, tuple(nvec)
        self.config = config
        self.obs_norm = RunningNorm(obs_dim, config.norm_beta, config.input_clip)
        self.priv_norm = RunningNorm(priv_dim, config.norm_beta, config.input_clip)
        self.register_buffer("input_mask", torch.ones(obs_dim))
        self.pre = mlp([obs_dim, h, h])
        self.lstm = LayerNormLSTMCell(h, h)
        self.post = mlp([h, h])
        self.heads = nn.Linear(h, sum(self.nvec))
        self.value = nn.Sequential(mlp([h + priv_dim, h]), nn.Linear(h, 1))
        nn.init.zeros_(self.heads.weight)  # start from the bias alone: uniform, or "keep"
        nn.init.zeros_(self.heads.bias)
        if keep is not None and config.keep_bias:
            offsets = [0, *torch.tensor(self.nvec).cumsum(0).tolist()[:-1]]
            with torch.no_grad():
                for offset, k in zip(offsets, keep, strict=True):
                    self.heads.bias[offset + k] = config.keep_bias

    def read_only(self, features: Sequence[str], patterns: Sequence[str]) -> None:
        """Let the actor read only the `features` (the layout's names, in order) that match one
        of `patterns` (fnmatch); empty `patterns`: every feature. A pattern matching none is an
        error naming the features."""
        if len(features) != self.obs_dim:
            raise ValueError(f"{len(features)} feature names for {self.obs_dim} inputs")
        if not patterns:
            self.input_mask.fill_(1.0)
            return
        unmatched = unmatched_patterns(features, patterns)
        if unmatched:
            raise ValueError(
                f"read = {unmatched!r}: these patterns match no feature; features: {list(features)}"
            )
        mask = [any(fnmatch.fnmatchcase(f, p) for p in patterns) for f in features]
        self.input_mask.copy_(torch.tensor(mask, dtype=self.input_mask.dtype))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        if "input_mask" not in state_dict:  # a file from before the mask: it read everything
            state_dict = {**state_dict, "input_mask": torch.ones(self.obs_dim)}
        return super().load_state_dict(state_dict, strict, assign)

    def initial_state(self, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.config.hidden
        return torch.zeros(batch, h), torch.zeros(batch, h)

    def step(self, obs: torch.Tensor, state):
        """One outer step for a batch: (logits per head, new state). obs: (batch, obs_dim)."""
        x = self.pre(self.obs_norm(obs) * self.input_mask)
        h, c = self.lstm(x, state)
        z = h + self.post(h)  # residual into the heads
        return list(self.heads(z).split(self.nvec, -1)), (h, c)

    def unroll(self, obs: torch.Tensor, priv: torch.Tensor, hidden: bool = False):
        """Whole episodes (batch, time, dim) from the initial state: logits per head
        (batch, time, n) and values (batch, time); with `hidden`, the recurrent states
        (batch, time, hidden) too, for an auxiliary read of them."""
        state = self.initial_state(obs.shape[0])
        logits, hs = [], []
        for t in range(obs.shape[1]):
            step_logits, state = self.step(obs[:, t], state)
            logits.append(step_logits)
            hs.append(state[0])
        h = torch.stack(hs, 1)
        values = self.value(torch.cat([h, self.priv_norm(priv)], -1)).squeeze(-1)
        per_head = [torch.stack([lg[k] for lg in logits], 1) for k in range(len(self.nvec))]
        return (per_head, values, h) if hidden else (per_head, values)

    @torch.no_grad()
    def act(
        self,
        obs: torch.Tensor,
        state,
        generator: torch.Generator | None = None,
        greedy: bool = False,
        fixed: tuple[int | None, ...] | None = None,
    ):
        """Sample (or take the most likely) action for one observation (obs_dim,).
        `fixed` holds heads at given choices (None: the policy chooses; see
        `ControlSpec.fixed_actions`). Returns (action tuple, log-probability of the chosen
        heads, new state)."""
        logits, state = self.step(obs[None], state)
        action, logp = self._choose([lg[0] for lg in logits], generator, greedy, fixed)
        return action, logp, state

    @torch.no_grad()
    def act_batch(
        self,
        obs: torch.Tensor,
        states: list,
        generators: list[torch.Generator | None],
        greedy: bool = False,
        fixed: tuple[int | None, ...] | None = None,
    ) -> list[tuple[tuple[int, ...], float, tuple]]:
        """`act` for a batch of observations (N, obs_dim), each with its own recurrent state
        and generator, in one forward pass: [(action, log-probability, new state)] * N."""
        h = torch.cat([s[0] for s in states])
        c = torch.cat([s[1] for s in states])
        logits, (h, c) = self.step(obs, (h, c))
        out = []
        for i, generator in enumerate(generators):
            action, logp = self._choose([lg[i] for lg in logits], generator, greedy, fixed)
            out.append((action, logp, (h[i : i + 1], c[i : i + 1])))
        return out

    def _choose(self, logits: list[torch.Tensor], generator, greedy: bool, fixed=None):
        """(action, log-probability of the heads not `fixed`) from one row of logits per
        head."""
        fixed = fixed or (None,) * len(self.nvec)
        if greedy:  # what a LearnedOptimizer runs: one host read, then a few dozen floats
            flat, action, logp, start = torch.cat(logits).tolist(), [], 0.0, 0
            for n, held in zip(self.nvec, fixed, strict=True):
                head = flat[start : start + n]
                start += n
                if held is not None:
                    action.append(held)
                    continue
                a = max(range(n), key=head.__getitem__)  # the first of equal maxima, as argmax
                action.append(a)
                logp -= math.log(sum(math.exp(x - head[a]) for x in head))  # log softmax at a
            return tuple(action), logp
        action, logp = [], 0.0
        for lg, held in zip(logits, fixed, strict=True):
            if held is not None:
                action.append(held)
                continue
            probs = torch.softmax(lg, -1)
            a = int(torch.multinomial(probs, 1, generator=generator))
            action.append(a)
            logp += float(torch.log_softmax(lg, -1)[a])
        return tuple(action), logp

    def architecture(self) -> dict:
        return {
            "obs_dim": self.obs_dim,
            "priv_dim": self.priv_dim,
            "nvec": list(self.nvec),
            "config": vars(self.config),
        }

    @classmethod
    def from_architecture(cls, arch: dict) -> Policy:
        return cls(arch["obs_dim"], arch["priv_dim"], arch["nvec"], PolicyConfig(**arch["config"]))
