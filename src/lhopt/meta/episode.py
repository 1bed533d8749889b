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
from lhopt.control.policy_file import ControlSpec
from lhopt.curves import cache, drivers
from lhopt.curves.run import run_job_safe
from lhopt.curves.speedup import pick_lr
from lhopt.meta.reward import (
    TunedCosine,
    anchored_curve,
    fit_power_law,
    log_speedup,
    outer_step_rewards,
    scored_loss,
    terminal_rewards,
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
    # What the reward measures against: "adamw" (constant, lr 1e-3; the paper's setting) or
    # "tuned-cosine" (lhopt.meta.reward.TunedCosine: the practitioner's schedule).
    reward_reference: str = "adamw"
    schedule: str = "constant"  # the shape under the policy's base lr (lhopt.optim.schedules)
    progress_taus: list = field(default_factory=list)  # progress embedding of the features

    @property
    def spec(self) -> ControlSpec:
        return ControlSpec(self.schedule, tuple(self.progress_taus))


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


def _cached_run(task_config: TaskConfig, seed: int, name: str, lr: float, multiple: float, make):
    """A baseline's run of this task and seed from the curve cache (run and stored if missing)."""
    job = {
        "task": "meta",
        "config": task_config.to_dict(),
        "seed": seed,
        "optimizer": name,
        "lr": lr,
        "multiple": multiple,
    }
    result = cache.lookup(job)
    if result is None:
        result = run_job_safe(job, make)
        if result.get("error"):
            raise RuntimeError(f"baseline run failed: {result['error']}")
        cache.store(job, result)
    return result


def baseline_law(
    task_config: TaskConfig,
    seed: int,
    fit_points: int,
    horizon: float = 0.0,
    asymptote: bool = True,
):
    """The reference for the reward from the cached `adamw` curve of this task and seed (computed
    if missing): a power law fitted to it, or with a horizon the anchored curve."""
    result = _cached_run(task_config, seed, "adamw", drivers.DEFAULT_LR, 1.0, drivers.adamw)
    if horizon:
        curve = anchored_curve(result["steps"], result["val"], fit_points, horizon, asymptote)
        return curve, result
    return fit_power_law(result["steps"], result["val"], fit_points), result


def tuned_cosine(task_config: TaskConfig, seed: int) -> TunedCosine:
    """The tuned schedule's runs of this task and seed (cached): the grid at T, and (when a run
    needs them) 1.5 T and 2 T at the lr that ended lowest, as the benchmark runs
    `adamw-cosine-tuned`."""

    def run(lr: float, multiple: float) -> dict:
        return _cached_run(task_config, seed, "adamw-cosine", lr, multiple, drivers.adamw_cosine)

    def longer(multiple: float) -> tuple:
        result = run(lr, multiple)
        return result["steps"], result["val"]

    at_t = {lr: run(lr, 1.0) for lr in drivers.TUNED_LR_GRID}
    lr = pick_lr(drivers.TUNED_LR_GRID, {lr: r["val"] for lr, r in at_t.items()})
    best = at_t[lr]
    return TunedCosine(lr, {1.0: (best["steps"], best["val"])}, best["budget"], longer)


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
    if cfg.reward_reference == "tuned-cosine":
        law = tuned_cosine(task_config, seed)
    else:
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
    controller = Controller(
        policy, opt, T, K, greedy=greedy, seed=int(rng.integers(2**31)), spec=cfg.spec
    )
    boundaries = [*controller.decision_steps, T]
    descriptor = task.descriptor().tolist()

    obs, priv, actions, logps, vals_at = [], [], [], [], []
    train_mean: float | None = None
    val = task.val_loss()
    steps_done, diverged, return_so_far = 0, False, 0.0
    best = math.inf
    for k, begin in enumerate(controller.decision_steps):
        privileged = (
            descriptor
            + perturbation
            + [return_so_far, _finite_log(train_mean), _finite_log(val), begin / T]
        )
        decision = controller.decide(begin, task.model, train_loss=train_mean, val_loss=val)
        obs.append(decision.features)
        priv.append(np.nan_to_num(np.asarray(privileged, dtype=np.float32)))
        actions.append(decision.action)
        logps.append(decision.logp)

        loss_sum, n = torch.zeros(()), 0
        for t in range(begin, boundaries[k + 1]):
            loss = task.train_loss()
            opt.zero_grad()
            loss.backward()
            controller.before_step(t)
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
        if isinstance(law, TunedCosine):  # only the end is scored; the critic sees it so far
            return_so_far = law.log_speedup(best, cfg.reward_clip)
        else:
            return_so_far = log_speedup(law, reached, steps_done, cfg.reward_clip)
        if not math.isfinite(val):
            diverged = True
            break
    if isinstance(law, TunedCosine):
        rewards = terminal_rewards(law, vals_at, cfg.reward_clip)
    else:
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
            "best_val": best,
            "initial": init,
            "final_hparams": {k: v for k, v in opt.hparams[0].items() if k in PERTURBED},
            "lr_trace": [d["hparams"]["lr"] for d in controller.history],  # chosen at decisions
            "wall_time": time.perf_counter() - start,
        },
    }
