"""One meta-training episode: an inner training run controlled by the policy.

The run is split into K outer steps (K drawn per episode, at most budget / 4 so that each outer
step sees the statistics of at least one measured step). Before each of them the controller reads
the features, and the policy chooses one action (all heads at once): decision k happens after
round(k T / K) inner steps, for k = 0 .. K-1. The reward of decision k is the change of the
clipped log speedup over the chunk it governed (lhopt.meta.reward).

The initial hyperparameters are perturbed per episode (lr by a log-uniform factor in
[1e-2, 1e2], ombeta1, ombeta2, epsilon and weight_decay in [0.1, 10]) so that the policy learns
to correct bad starting points; the perturbation is a privileged feature of the critic.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from lhopt.control import ActionSpace, Controller
from lhopt.curves import cache, drivers
from lhopt.curves.run import run_job_safe
from lhopt.meta.reward import (
    anchored_curve,
    fit_power_law,
    log_speedup,
    outer_step_rewards,
    scored_loss,
)
from lhopt.optim import CIAO, DEFAULTS
from lhopt.tasks import FAMILY_NAMES, Task, TaskConfig, build_task

PERTURBED = ("lr", "ombeta1", "ombeta2", "epsilon", "weight_decay")
PRIVILEGED_NAMES = (
    tuple(f"descriptor/{i}" for i in range(len(FAMILY_NAMES) + 6))
    + tuple(f"perturbation/{h}" for h in PERTURBED)
    + ("return_so_far", "log_train_loss", "log_val_loss", "progress")
)


@dataclass
class EpisodeConfig:
    min_outer_steps: int = 2
    max_outer_steps: int = 128
    lr_perturbation: float = 100.0  # lr times a log-uniform factor in [1/x, x]
    other_perturbation: float = 10.0
    reward_clip: float = 3.0
    fit_points: int = 14
    reward_horizon: float = 0.0  # H >= 1: reference capped at H x budget (lhopt.meta.reward)
    reward_loss: str = "best"  # "best": best validation loss so far; "last": the latest one
    reward_asymptote: bool = True  # False (with a horizon): extrapolate without a floor
    fixed_initial: dict = field(default_factory=dict)  # e.g. {"lr": 1e-5}: no perturbation


def evaluation_config(cfg: EpisodeConfig) -> EpisodeConfig:
    """`cfg` for evaluation episodes: the default initial hyperparameters, no perturbation."""
    return EpisodeConfig(**{**vars(cfg), "lr_perturbation": 1.0, "other_perturbation": 1.0})


def perturbed_hparams(rng: np.random.Generator, cfg: EpisodeConfig) -> tuple[dict, list[float]]:
    """Initial hyperparameters and the log factors applied (the critic sees them)."""
    space = ActionSpace()
    bounds = {h.hparam: (h.low, h.high) for h in space.heads}
    init, logs = {}, []
    for name in PERTURBED:
        spread = cfg.lr_perturbation if name == "lr" else cfg.other_perturbation
        factor = math.exp(rng.uniform(-math.log(spread), math.log(spread))) if spread > 1 else 1.0
        lo, hi = bounds[name]
        value = min(max(DEFAULTS[name] * factor, lo), hi)
        if name in cfg.fixed_initial:
            value = float(cfg.fixed_initial[name])
        init[name] = value
        logs.append(math.log(value / DEFAULTS[name]))
    return init, logs


def baseline_law(
    task_config: TaskConfig,
    seed: int,
    fit_points: int,
    horizon: float = 0.0,
    asymptote: bool = True,
):
    """The reference for the reward from the cached `adamw` curve of this task and seed (computed
    if missing): a power law fitted to it, or with a horizon the anchored curve."""
    job = {
        "task": "meta",
        "config": task_config.to_dict(),
        "seed": seed,
        "optimizer": "adamw",
        "lr": 1e-3,
        "multiple": 1.0,
    }
    result = cache.lookup(job)
    if result is None:
        result = run_job_safe(job, drivers.adamw)
        if result.get("error"):
            raise RuntimeError(f"baseline run failed: {result['error']}")
        cache.store(job, result)
    if horizon:
        curve = anchored_curve(result["steps"], result["val"], fit_points, horizon, asymptote)
        return curve, result
    return fit_power_law(result["steps"], result["val"], fit_points), result


def _finite_log(x: float | None) -> float:
    return math.log(x) if x is not None and math.isfinite(x) and x > 0 else 0.0


def run_episode(
    policy,
    task_config: TaskConfig,
    seed: int,
    cfg: EpisodeConfig,
    rng: np.random.Generator,
    greedy: bool = False,
) -> dict:
    """Run one episode with `policy` (a `lhopt.control.Policy`) and return its trajectory."""
    start = time.perf_counter()
    law, _ = baseline_law(
        task_config, seed, cfg.fit_points, cfg.reward_horizon, cfg.reward_asymptote
    )
    task: Task = build_task(task_config, seed)
    T = task.budget
    hi = max(cfg.min_outer_steps, min(cfg.max_outer_steps, T // 4))
    K = int(round(math.exp(rng.uniform(math.log(cfg.min_outer_steps), math.log(hi + 0.5)))))
    K = min(max(K, cfg.min_outer_steps), hi)

    init, perturbation = perturbed_hparams(rng, cfg)
    opt = CIAO(task.model.parameters(), **init)
    controller = Controller(policy, opt, T, K, greedy=greedy, seed=int(rng.integers(2**31)))
    boundaries = [*controller.decision_steps, T]
    descriptor = task.descriptor().tolist()

    obs, priv, actions, logps, vals_at = [], [], [], [], []
    train_mean: float | None = None
    val = task.val_loss()
    steps_done, diverged, return_so_far = 0, False, 0.0
    best = math.inf
    for k, start in enumerate(controller.decision_steps):
        privileged = (
            descriptor
            + perturbation
            + [return_so_far, _finite_log(train_mean), _finite_log(val), start / T]
        )
        decision = controller.decide(start, task.model, train_loss=train_mean, val_loss=val)
        obs.append(decision.features)
        priv.append(np.nan_to_num(np.asarray(privileged, dtype=np.float32)))
        actions.append(decision.action)
        logps.append(decision.logp)

        loss_sum, n = torch.zeros(()), 0
        for _ in range(start, boundaries[k + 1]):
            loss = task.train_loss()
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.detach()
            n += 1
        steps_done = boundaries[k + 1]
        train_mean = float(loss_sum) / max(n, 1)
        val = task.val_loss()
        vals_at.append(val)
        if math.isfinite(val):
            best = min(best, val)
        reached = scored_loss(best, val, cfg.reward_loss)
        return_so_far = log_speedup(law, reached, steps_done, cfg.reward_clip)
        if not math.isfinite(val):
            diverged = True
            break
    rewards = outer_step_rewards(
        law, boundaries[1 : len(vals_at) + 1], vals_at, cfg.reward_clip, loss=cfg.reward_loss
    )
    return {
        "obs": np.stack(obs).astype(np.float32),
        "priv": np.stack(priv).astype(np.float32),
        "actions": np.asarray(actions, dtype=np.int64),
        "logp": np.asarray(logps, dtype=np.float32),
        "rewards": np.asarray(rewards, dtype=np.float32),
        "info": {
            "family": task_config.family,
            "config": task_config.to_dict(),
            "seed": seed,
            "outer_steps": len(controller.decision_steps),
            "inner_steps": steps_done,
            "budget": T,
            "return": float(sum(rewards)),
            "speedup": math.exp(float(sum(rewards))),
            "diverged": diverged,
            "final_val": vals_at[-1],
            "initial": init,
            "final_hparams": {k: v for k, v in opt.hparams[0].items() if k in PERTURBED},
            "lr_trace": [d["hparams"]["lr"] for d in controller.history],  # chosen at decisions
            "wall_time": time.perf_counter() - start,
        },
    }
