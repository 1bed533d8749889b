"""Does the reward pay for a learning-rate decay? Scores a constant and a decayed schedule by
each reward rule, on sampled training tasks.

The shipped policy raises the learning rate at its first decisions and holds it (docs/default-
policy.md). This script asks whether meta-training could have learned anything better from its
reward: on `--tasks` training tasks (`sample_training_config`, the same tasks and seeds as
`benchmarks/reward_calibration.py`), CIAO with its default hyperparameters runs T steps, with 20
evenly spaced decisions, once at `--lr` held throughout ("hold") and once at `--lr` halved at
70%, 80% and 90% of the run ("decay": three "lr x 1/2" actions, which the action space has).
Each run is scored as an episode would be, by each rule of docs/meta.md; the report gives per
rule the mean return of both schedules, the mean difference (decay - hold) and the share of
tasks where the decay scores more, next to the share where its final validation loss is lower.

`--budget-scale S` samples the tasks with `[run] budget_scale = S` (budgets times a log-uniform
factor in [1, S]; other tasks than without it), to ask the same of longer runs.

Usage: python benchmarks/decay_incentive.py [--tasks 30] [--lr 4e-3] [--seed 0] [--budget-scale 1]
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from lhopt.meta.episode import baseline_law
from lhopt.meta.reward import anchored_curve, outer_step_rewards
from lhopt.optim.ciao import CIAO
from lhopt.tasks import FAMILY_NAMES, build_task, sample_training_config

DECISIONS = 20
DECAY_AT = (14, 16, 18)  # decisions at 70%, 80%, 90% of the run


def run_schedule(config, seed: int, lr: float, decay: bool) -> tuple[list[int], list[float]]:
    """Steps and validation losses at each decision boundary after the first."""
    task = build_task(config, seed)
    T = task.budget
    bounds = [round(k * T / DECISIONS) for k in range(DECISIONS + 1)]
    opt = CIAO(task.model.parameters(), lr=lr)
    steps, vals = [], []
    for k in range(DECISIONS):
        if decay and k in DECAY_AT:
            for group in opt.param_groups:
                group["lr"] *= 0.5
        for _ in range(bounds[k], bounds[k + 1]):
            loss = task.train_loss()
            opt.zero_grad()
            loss.backward()
            opt.step()
        steps.append(bounds[k + 1])
        vals.append(task.val_loss())
        if not math.isfinite(vals[-1]):
            break
    return steps, vals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=30)
    parser.add_argument("--lr", type=float, default=4e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-scale", type=float, default=1.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    rules = (
        "stages 1-2: power law, best",
        "stage 3: power law, last",
        "stage 4: horizon 20, no asymptote, last",
    )
    returns = {r: {"hold": [], "decay": []} for r in rules}
    lower, budgets = [], []
    for _ in range(args.tasks):
        config = sample_training_config(rng, FAMILY_NAMES, args.budget_scale)
        seed = int(rng.integers(1_000_000))
        law, result = baseline_law(config, seed, 14)
        if not all(math.isfinite(v) for v in result["val"]):
            continue
        floorless = anchored_curve(result["steps"], result["val"], 14, 20.0, asymptote=False)
        runs = {
            name: run_schedule(config, seed, args.lr, name == "decay") for name in ("hold", "decay")
        }
        lower.append(runs["decay"][1][-1] < runs["hold"][1][-1])
        budgets.append(runs["hold"][0][-1])
        for rule, ref, loss in zip(
            rules, (law, law, floorless), ("best", "last", "last"), strict=True
        ):
            for name, (steps, vals) in runs.items():
                returns[rule][name].append(sum(outer_step_rewards(ref, steps, vals, loss=loss)))
    n = len(lower)
    print(
        f"{n} tasks (budgets {min(budgets)}-{max(budgets)}, median {int(np.median(budgets))}), "
        f"lr {args.lr:g}; the decay's final validation loss is lower on "
        f"{100 * np.mean(lower):.0f}% of them"
    )
    print("| rule | mean return, hold | decay | mean decay - hold | decay scores more |")
    print("|---|---|---|---|---|")
    for rule in rules:
        hold, dec = np.array(returns[rule]["hold"]), np.array(returns[rule]["decay"])
        print(
            f"| {rule} | {hold.mean():+.3f} | {dec.mean():+.3f} | {(dec - hold).mean():+.3f} | "
            f"{100 * np.mean(dec > hold + 1e-9):.0f}% |"
        )


if __name__ == "__main__":
    main()
