"""PPO for the recurrent controller, readable top to bottom.

Data: whole episodes (the LSTM is unrolled from each episode's start), kept in a replay buffer
of at most `buffer` transitions. An episode is dropped once it has been used `max_sample_reuse`
times or was collected by a policy more than `max_staleness` updates old. Each iteration makes
`batches_per_iteration` gradient steps, each on episodes totalling about `batch` transitions.
Advantages: GAE(gamma, lambda) on the current critic's values (`advantage = "gae"`), or, for
episodes collected in groups that share task, seed and start (`advantage = "group"`), the
episode's return minus the mean return of the other members of its group, at every step
(`group_advantages`; `"group-scaled"`: divided by the group's spread of returns); each
normalised per batch.
Loss: clipped surrogate - entropy bonus + value_coef * squared error; gradients clipped by norm.
Defaults are the official configuration's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from lhopt.control.policy import Policy

ADVANTAGES = ("gae", "group", "group-scaled")
CLONE_ORACLES = ("tuned", "stall", "branch")  # `lhopt.meta.clone.labels`
CLONE_WEIGHTS = ("none", "stakes")  # `PPOConfig.clone_weight`


@dataclass
class PPOConfig:
    clip: float = 0.2
    entropy_coef: float = 1e-2
    lr: float = 2e-4
    beta2: float = 0.999
    max_grad_norm: float = 5.0
    value_coef: float = 0.5
    gae_lambda: float = 0.95
    gamma: float = 1.0
    batch: int = 128  # transitions per gradient step
    batches_per_iteration: int = 4
    buffer: int = 768  # transitions kept
    max_sample_reuse: int = 4
    max_staleness: int = 4  # in policy versions (gradient steps of the learner)
    advantage: str = "gae"  # or "group", "group-scaled" (`group_advantages`; [run] batch > 1)
    # The first N iterations clone the lr oracle (lhopt.meta.clone) instead of PPO.
    clone_iterations: int = 0
    # Gradient steps per cloning iteration on every cloning episode so far (DAgger's aggregate);
    # 0: `batches_per_iteration` steps on PPO's recent buffer.
    clone_steps: int = 0
    # The oracle cloned: "tuned" moves the lr toward the reward reference's tuned lr; "stall"
    # halves it where the last period's gain in best validation loss was under
    # `clone_stall_eps` of all the gain so far, and keeps it elsewhere; "branch" labels one
    # decision per group of branched episodes by the choice whose run paid most ([episode]
    # branch; lhopt.meta.clone).
    clone_oracle: str = "tuned"
    clone_stall_eps: float = 0.01
    # After the cloning iterations, PPO's loss adds clone_coef x the cloning cross-entropy on
    # its own batches: the clone kept as a prior (0: PPO alone, the clone only a start).
    clone_coef: float = 0.0
    # Cloning adds level_coef x the squared error of a linear read of the policy's recurrent
    # state (`lhopt.meta.clone.LevelReadout`, the learner's, never shipped) against the log of
    # the lr over the task's tuned lr, at every step of every episode that knows its tuned lr:
    # a target at each step, where the labels give one per group.
    level_coef: float = 0.0
    # The branch oracle's cloning adds keep_prior x the cross-entropy toward "keep" on the lr
    # head's unlabelled decisions: the do-nothing schedule as a prior, so that the few labels
    # move the lr only where a move paid (0: unlabelled decisions carry no loss).
    keep_prior: float = 0.0
    # How the branch oracle's labels weigh in its cross-entropy: "none", alike; "stakes", each by
    # what its decision was worth (the spread of the branched runs' returns, over the batch's
    # mean spread), so that a choice that decided a run outweighs one that tied within noise.
    clone_weight: str = "none"


def make_polyak(policy: Policy) -> Policy:
    """A frozen copy that `polyak_update` keeps as an exponential average of the weights: what
    evaluation runs and what is shipped."""
    avg = copy.deepcopy(policy)
    for p in avg.parameters():
        p.requires_grad_(False)
    return avg


@torch.no_grad()
def polyak_update(avg: Policy, policy: Policy, rate: float) -> None:
    """avg <- rate * avg + (1 - rate) * policy, and the normaliser statistics copied over."""
    for a, p in zip(avg.parameters(), policy.parameters(), strict=True):
        a.lerp_(p, 1.0 - rate)
    for a, b in zip(avg.buffers(), policy.buffers(), strict=True):
        a.copy_(b)


def gae(rewards: np.ndarray, values: np.ndarray, gamma: float, lam: float) -> np.ndarray:
    """Generalised advantage estimates of one complete episode (value 0 after its end)."""
    adv = np.zeros_like(rewards)
    running = 0.0
    for t in reversed(range(len(rewards))):
        next_value = values[t + 1] if t + 1 < len(rewards) else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        adv[t] = running
    return adv


def group_advantages(returns: list[float], scaled: bool = False) -> list[float]:
    """Each member's return minus the mean return of the others (a leave-one-out baseline):
    where the members share task, seed and initial hyperparameters and differ only in their
    sampled actions, what is left is the effect of those actions. A member alone gets 0.
    `scaled`: divided by the standard deviation of the group's returns (0 where they all
    agree), so that every group weighs the same whatever its task's spread of returns."""
    n = len(returns)
    if n < 2:
        return [0.0] * n
    total = sum(returns)
    adv = [r - (total - r) / (n - 1) for r in returns]
    if scaled:
        sd = float(np.std(returns))
        adv = [a / sd if sd > 1e-6 else 0.0 for a in adv]
    return adv


class ReplayBuffer:
    """Episodes with the policy version that collected them and how often they were used."""

    def __init__(self, cfg: PPOConfig) -> None:
        self.cfg = cfg
        self.episodes: list[dict] = []

    def add(self, episode: dict, version: int) -> None:
        self.episodes.append({**episode, "version": version, "uses": 0})
        while sum(len(e["rewards"]) for e in self.episodes) > self.cfg.buffer:
            self.episodes.pop(0)  # the oldest go first

    def prune(self, version: int) -> None:
        self.episodes = [
            e
            for e in self.episodes
            if e["uses"] < self.cfg.max_sample_reuse
            and version - e["version"] <= self.cfg.max_staleness
        ]

    def sample(self, rng: np.random.Generator) -> list[dict]:
        """Episodes totalling about `batch` transitions, least used first (ties at random)."""
        order = sorted(self.episodes, key=lambda e: (e["uses"], rng.random()))
        chosen, n = [], 0
        for e in order:
            if n >= self.cfg.batch:
                break
            chosen.append(e)
            n += len(e["rewards"])
        for e in chosen:
            e["uses"] += 1
        return chosen

    def transitions(self) -> int:
        return sum(len(e["rewards"]) for e in self.episodes)


def pad(episodes: list[dict]):
    """Stack episodes of different lengths into (batch, time, ...) arrays with a mask."""
    n, length = len(episodes), max(len(e["rewards"]) for e in episodes)

    def stack(key, dtype):
        first = episodes[0][key]
        out = np.zeros((n, length, *first.shape[1:]), dtype=dtype)
        for i, e in enumerate(episodes):
            out[i, : len(e[key])] = e[key]
        return torch.from_numpy(out)

    mask = torch.zeros(n, length)
    for i, e in enumerate(episodes):
        mask[i, : len(e["rewards"])] = 1.0
    return (
        stack("obs", np.float32),
        stack("priv", np.float32),
        stack("actions", np.int64),
        stack("logp", np.float32),
        mask,
    )


def ppo_step(
    policy: Policy,
    optimizer: torch.optim.Optimizer,
    episodes: list[dict],
    cfg: PPOConfig,
    fixed: tuple[int | None, ...] | None = None,
    prior: Callable[[list, list[dict], torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    | None = None,
) -> dict:
    """One gradient step of PPO on `episodes`; returns its statistics. `fixed`
    (`ControlSpec.fixed_actions`) names the heads whose choices were held, not the policy's:
    their log-probabilities and entropies are left out. `prior(logits, episodes, mask)`, when
    given, returns a loss on the heads' logits and an accuracy (e.g. `lhopt.meta.clone.clone_loss`
    bound), added to PPO's loss times `clone_coef`."""
    obs, priv, actions, old_logp, mask = pad(episodes)
    logits, values = policy.unroll(obs, priv)

    # Advantages and returns from the current critic (no gradient through them).
    v = values.detach().numpy()
    adv = np.zeros_like(v)
    for i, e in enumerate(episodes):
        n = len(e["rewards"])
        adv[i, :n] = gae(e["rewards"], v[i, :n], cfg.gamma, cfg.gae_lambda)
    returns = torch.from_numpy(adv) + values.detach()  # the critic's target either way
    if cfg.advantage.startswith("group"):
        for i, e in enumerate(episodes):
            adv[i, : len(e["rewards"])] = e["group_advantage"]
    adv = torch.from_numpy(adv)
    m = mask.bool()
    adv = (adv - adv[m].mean()) / (adv[m].std() + 1e-8)

    logp = torch.zeros_like(mask)
    entropy = torch.zeros_like(mask)
    for k, lg in enumerate(logits):
        if fixed is not None and fixed[k] is not None:
            continue
        dist = torch.distributions.Categorical(logits=lg)
        logp = logp + dist.log_prob(actions[..., k])
        entropy = entropy + dist.entropy()
    ratio = torch.exp(logp - old_logp)
    surrogate = torch.min(ratio * adv, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * adv)
    policy_loss = -surrogate[m].mean()
    value_loss = ((values - returns) ** 2)[m].mean()
    entropy_mean = entropy[m].mean()
    loss = policy_loss - cfg.entropy_coef * entropy_mean + cfg.value_coef * value_loss
    if prior is not None:
        prior_loss, prior_accuracy = prior(logits, episodes, mask)
        loss = loss + cfg.clone_coef * prior_loss

    optimizer.zero_grad()
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
    optimizer.step()
    with torch.no_grad():
        log_ratio = (logp - old_logp)[m]
        kl = ((ratio[m] - 1) - log_ratio).mean()  # unbiased estimator of KL(old || new)
        clipped = ((ratio[m] - 1).abs() > cfg.clip).float().mean()
    stats = {
        "policy_loss": float(policy_loss.detach()),
        "value_loss": float(value_loss.detach()),
        "entropy": float(entropy_mean.detach()),
        "kl": float(kl),
        "clip_fraction": float(clipped),
        "grad_norm": float(grad_norm),
        "transitions": int(m.sum()),
    }
    if prior is not None:
        stats["clone_loss"] = float(prior_loss.detach())
        stats["clone_accuracy"] = float(prior_accuracy)
    return stats


def make_optimizer(policy: Policy, cfg: PPOConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(policy.parameters(), lr=cfg.lr, betas=(0.9, cfg.beta2))


def update(
    policy,
    avg,
    optimizer,
    buffer: ReplayBuffer,
    version: int,
    cfg: PPOConfig,
    rng: np.random.Generator,
    polyak: float,
    fixed: tuple[int | None, ...] | None = None,
    step: Callable[[dict], dict] | None = None,
    steps: int | None = None,
    prune: bool = True,
    prior: Callable | None = None,
) -> tuple[list[dict], int]:
    """One iteration: `steps` (default `batches_per_iteration`) steps from the buffer, PPO's
    unless `step` (a function of a sampled batch, e.g. `lhopt.meta.clone.clone_step` bound)
    replaces it; `prune=False` keeps stale and reused episodes (a supervised aggregate). Returns
    the steps' statistics and the new policy version. `prior`: `ppo_step`'s."""
    if step is None:
        step = partial(ppo_step, policy, optimizer, cfg=cfg, fixed=fixed, prior=prior)
    stats = []
    for _ in range(cfg.batches_per_iteration if steps is None else steps):
        if prune:
            buffer.prune(version)
        if not buffer.episodes:
            break
        stats.append(step(buffer.sample(rng)))
        version += 1
        polyak_update(avg, policy, polyak)
    return stats, version
