"""A supervised start for the lr head: behaviour cloning of an lr oracle on the learner's own
episodes (DAgger, with the oracle labelling every state the policy reaches).

Two oracles (`[ppo] clone_oracle`):
- "tuned" knows what the policy has to find out: the task's tuned lr (the lr of the reward's
  `tuned-cosine` reference). At each decision it moves the base lr toward it by the lr head's
  choice whose factor is nearest, in log, to tuned / current (`oracle_choices`); under the
  warm-up + cosine shape the policy steers, the oracle's run is the tuned schedule once the lr
  is there.
- "stall" decides from what the policy sees, the validation losses so far: it halves the lr
  where progress stalled and keeps it elsewhere (`stall_choices`), a search from above for
  episodes that start high (`[episode] fixed_initial`).
- "branch" knows what a choice does: at one random decision of each group of branched
  episodes (`[episode] branch`, `lhopt.meta.episode._Branches`) it is the choice among keep
  and `[episode] branch_factors` whose run (that choice, then keep) paid most by the end, where
  it paid clearly more; the other decisions, and ties, carry no label.
The policy learns the choice from its features alone (cross-entropy on the lr head, unrolled
over whole episodes as PPO unrolls them), while its critic learns the episodes' returns (the
same value loss as PPO's), so that PPO can take over from a trained critic.
`[ppo] clone_iterations = N` makes the first N iterations of `lhopt meta-train` such updates;
`[ppo] clone_coef = c` keeps the clone as a prior after them: PPO's loss adds c x the same
cross-entropy (`clone_loss`) on its own batches, so PPO moves the policy off the oracle's choice
only where its advantages outweigh that term.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lhopt.control.actions import Head
from lhopt.meta.ppo import PPOConfig, pad


def oracle_choices(head: Head, gaps: np.ndarray) -> np.ndarray:
    """For each log-ratio log(target / current) in `gaps`, the index of `head`'s choice (a scale
    head) whose log factor is nearest to it: the largest step toward the target, "keep" there."""
    if head.kind != "scale":
        raise ValueError(f"head {head.hparam!r} is a {head.kind!r} head: the oracle scales")
    logs = np.log(np.asarray(head.choices, dtype=np.float64))
    gaps = np.asarray(gaps, dtype=np.float64)
    return np.abs(gaps[..., None] - logs).argmin(-1)


STALL_PERIODS = 20  # `clone_stall_eps` is the stall over a twentieth of the run


def stall_choices(head: Head, vals: np.ndarray, eps: float, periods: int) -> np.ndarray:
    """For each decision of an episode of `periods` evenly spaced ones, seeing the validation
    losses `vals[:k + 1]` (before training, then after each period): a cut where the period
    that just ended gained less than `eps` x (20 / `periods`) of all the gain in best
    validation loss so far, "keep" elsewhere and at the first decision, which has no period to
    judge. The cut is `head`'s choice nearest, in log, to 0.5 ^ (20 / `periods`): a halving per
    twentieth of the run, however finely the run is cut into decisions (the threshold scales
    the same way). A search from above: it only ever comes down."""
    if head.kind != "scale" or 0.5 not in head.choices or 1.0 not in head.choices:
        raise ValueError(f"head {head.hparam!r} has no halving and keeping choices to clone")
    if periods < 1:
        raise ValueError(f"periods={periods}: expected >= 1")
    share = STALL_PERIODS / periods
    cut = int(oracle_choices(head, np.array([share * math.log(0.5)]))[0])
    vals = np.where(np.isfinite(vals), vals, np.inf)
    best = np.minimum.accumulate(vals)
    out = np.full(len(vals), head.choices.index(1.0))
    for k in range(1, len(vals)):
        gained, total = best[k - 1] - best[k], vals[0] - best[k]
        if np.isfinite(total) and gained <= eps * share * max(total, 1e-12):
            out[k] = cut
    return out


def labels(episode: dict, head: Head, oracle: str = "tuned", eps: float = 0.01) -> np.ndarray:
    """The oracle's choice at each decision of `episode`: "tuned", toward `info["tuned_lr"]`
    from the base lr the decision started from (`episode["lr"]`); "stall", `stall_choices` on
    the validation losses the decisions saw (`episode["val"]`); "branch", the counterfactual
    labels the episode carries (`episode["branch"]`, -1 where a decision has none)."""
    if oracle == "branch":
        if "branch" not in episode:
            raise ValueError(
                "the branch oracle needs branched episodes: set [episode] branch = true"
            )
        return np.array(episode["branch"], dtype=np.int64)  # a copy: Ray's are read-only
    if oracle == "stall":
        vals = np.asarray(episode["val"], dtype=np.float64)
        return stall_choices(head, vals, eps, episode["info"]["outer_steps"])
    target = episode["info"].get("tuned_lr")
    if target is None:
        raise ValueError(
            "cloning needs episodes measured against a tuned reference ([episode] "
            "reward_reference = 'tuned-cosine' or 'tuned-cosine-bracketed')"
        )
    gaps = np.log(target) - np.log(np.asarray(episode["lr"], dtype=np.float64))
    return oracle_choices(head, gaps)


def clone_loss(
    logits: list[torch.Tensor],
    episodes: list[dict],
    mask: torch.Tensor,
    cfg: PPOConfig,
    head_index: int,
    head: Head,
    branch_heads: dict[str, tuple[int, Head]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the lr head's logits (`logits[head_index]`: batch, time, choices;
    `episodes` padded as `pad` pads them, `mask` their valid steps) toward the oracle's choices,
    and the share of steps whose most likely choice is the oracle's: over the steps the oracle
    labels (all but the branch oracle's unlabelled ones; none: 0 and NaN), plus
    `cfg.keep_prior` x the cross-entropy toward "keep" on the unlabelled ones. The branch
    oracle's labels are choices of the head each episode branched (`info["branch_head"]`, "lr"
    where absent); `branch_heads` maps those names to (index, head) (default: the lr head
    alone): each head's labels train its logits, and each head's unlabelled decisions (every
    decision but its own labels) carry the keep prior. Bound by `partial`, it is `ppo_step`'s
    `prior`."""
    if cfg.clone_oracle != "branch" or branch_heads is None:
        branch_heads = {"lr": (head_index, head)}
    if cfg.clone_oracle == "branch":
        stray = {e["info"].get("branch_head") or "lr" for e in episodes} - set(branch_heads)
        if stray:
            raise ValueError(
                f"episodes labelled for heads {sorted(stray)}, which cloning trains none of "
                f"(branch_heads: {list(branch_heads)})"
            )
    per_head = {}
    for name, (index, h) in branch_heads.items():
        target = torch.full(mask.shape, -1, dtype=torch.long)
        for i, e in enumerate(episodes):
            if cfg.clone_oracle == "branch" and (e["info"].get("branch_head") or "lr") != name:
                continue
            n = len(e["rewards"])
            target[i, :n] = torch.from_numpy(labels(e, h, cfg.clone_oracle, cfg.clone_stall_eps))
        per_head[name] = (logits[index], h, target)
    stakes = branch_stakes(episodes, mask.shape) if cfg.clone_weight == "stakes" else None
    cross_entropy = logits[head_index].sum() * 0.0  # in the graph even with nothing labelled
    losses, weights, hits = [], [], []
    for lg, h, target in per_head.values():
        m = mask.bool() & (target >= 0)
        if m.any():
            losses.append(torch.nn.functional.cross_entropy(lg[m], target[m], reduction="none"))
            weights.append(stakes[m] if stakes is not None else torch.ones(int(m.sum())))
            with torch.no_grad():
                hits.append((lg[m].argmax(-1) == target[m]).float())
        unlabelled = mask.bool() & (target < 0)
        if cfg.keep_prior and unlabelled.any():
            keep = torch.full((int(unlabelled.sum()),), h.choices.index(1.0), dtype=torch.long)
            prior = torch.nn.functional.cross_entropy(lg[unlabelled], keep)
            cross_entropy = cross_entropy + cfg.keep_prior * prior
    accuracy = torch.tensor(math.nan)
    if losses:
        per_step, weight = torch.cat(losses), torch.cat(weights)
        cross_entropy = cross_entropy + (per_step * weight).sum() / weight.sum().clamp_min(1e-12)
        accuracy = torch.cat(hits).mean()
    return cross_entropy, accuracy


def branch_stakes(episodes: list[dict], shape: torch.Size) -> torch.Tensor:
    """What each labelled decision was worth (`episode["branch_stakes"]`, the spread of its
    branched runs' returns), padded to `shape` (batch, time); 0 where a decision has none, so
    a label without a measured spread weighs nothing."""
    out = torch.zeros(shape)
    for i, e in enumerate(episodes):
        if "branch_stakes" not in e:
            raise ValueError(
                "[ppo] clone_weight = 'stakes' needs the branched runs' spread, which episodes "
                "recorded before it was kept do not carry: start a new run"
            )
        stakes = torch.from_numpy(np.nan_to_num(np.asarray(e["branch_stakes"], np.float32)))
        out[i, : len(stakes)] = stakes
    return out


# The level target's bound (natural log): a start 100x off and beyond reads as 100x.
LEVEL_CLIP = math.log(100.0)


class LevelReadout(torch.nn.Linear):
    """A linear read of the policy's recurrent state: the log of the lr over the task's tuned
    lr (`level_targets`). The learner's, trained beside the cloning loss so that the state
    the lr head reads encodes the level; not part of a policy file."""

    def __init__(self, hidden: int) -> None:
        super().__init__(hidden, 1)


def level_targets(episodes: list[dict], shape: torch.Size) -> torch.Tensor:
    """log(lr / tuned lr) before each decision of each episode (clipped to +-`LEVEL_CLIP`; NaN
    where the episode has no tuned lr or past its end), padded to `shape` (batch, time)."""
    out = torch.full(shape, math.nan)
    for i, e in enumerate(episodes):
        info = e["info"]
        tuned = info.get("tuned_lr")
        if not tuned:
            continue
        n = len(e["rewards"])
        lrs = [info["initial"]["lr"], *info["lr_trace"]][:n]
        out[i, : len(lrs)] = torch.tensor(
            [max(-LEVEL_CLIP, min(LEVEL_CLIP, math.log(lr / tuned))) for lr in lrs]
        )
    return out


def clone_step(
    policy,
    optimizer: torch.optim.Optimizer,
    episodes: list[dict],
    cfg: PPOConfig,
    head_index: int,
    head: Head,
    level: LevelReadout | None = None,
    branch_heads: dict[str, tuple[int, Head]] | None = None,
) -> dict:
    """One gradient step of cross-entropy toward the oracle's lr choices, plus PPO's value loss
    on the episodes' returns to go (and, with `level` and `cfg.level_coef` > 0, the level
    read's squared error). Returns its statistics (the names `update` logs)."""
    obs, priv, _, _, mask = pad(episodes)
    returns = torch.zeros(mask.shape)
    gaps = []
    for i, e in enumerate(episodes):
        n = len(e["rewards"])
        returns[i, :n] = torch.from_numpy(np.cumsum(e["rewards"][::-1])[::-1].copy())
        tuned = e["info"].get("tuned_lr")
        if tuned is not None:
            gaps.append(abs(math.log(tuned / e["info"]["final_hparams"]["lr"])))
    logits, values, hidden = policy.unroll(obs, priv, hidden=True)
    m = mask.bool()
    lg = logits[head_index]
    cross_entropy, accuracy = clone_loss(
        logits, episodes, mask, cfg, head_index, head, branch_heads
    )
    value_loss = ((values - returns) ** 2)[m].mean()
    loss = cross_entropy + cfg.value_coef * value_loss
    level_stats = {}
    if level is not None and cfg.level_coef > 0:
        target = level_targets(episodes, mask.shape)
        known = m & target.isfinite()
        if known.any():
            error = level(hidden).squeeze(-1)[known] - target[known]
            level_loss = (error**2).mean()
            loss = loss + cfg.level_coef * level_loss
            level_stats = {
                "level_loss": float(level_loss.detach()),
                # R^2 of the read: 1 - its squared error over the targets' variance.
                "level_r2": float(1 - level_loss.detach() / target[known].var().clamp_min(1e-12)),
            }

    optimizer.zero_grad()
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
    optimizer.step()
    with torch.no_grad():
        entropy = torch.distributions.Categorical(logits=lg[m]).entropy().mean()
    return {
        "policy_loss": float(cross_entropy.detach()),
        "value_loss": float(value_loss.detach()),
        "entropy": float(entropy),
        "kl": math.nan,
        "clip_fraction": math.nan,
        "grad_norm": float(grad_norm),
        "transitions": int(m.sum()),
        "clone_accuracy": float(accuracy),
        # |log(tuned / final lr)| of the episodes: how far from the oracle's level they ended.
        "final_lr_gap": float(np.mean(gaps)) if gaps else math.nan,
        **level_stats,
    }
