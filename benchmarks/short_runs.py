"""Very short runs: the shipped policy below the budgets it trained on (147 to 2,596 steps), where
its horizon factor (T / 1000)^-0.5 raises the lr most (3.16 at 100 steps, 5.8 at 30).

Per task and budget T, one seed: the best validation loss (of 10 evaluations) of
`LearnedOptimizer(params, T, val_loss_fn=...)` through the public API, beside AdamW's at a
constant 1e-3 and 1e-2. Tasks: suite configurations with their budget replaced by each T.

Usage: python benchmarks/short_runs.py [--budgets 30,100,300]
"""

from __future__ import annotations

import argparse
import math
import warnings

import torch

from lhopt import LearnedOptimizer
from lhopt.tasks import SUITES, TaskConfig, build_task

TASKS = (
    ("quick", "quick-mnist1d-mlp"),
    ("quick", "quick-xor-gru"),
    ("quick", "quick-quadratic"),
    ("validation", "val-mnist1d-cnn"),
)


def best_val(config: TaskConfig, budget: int, make) -> float:
    task = build_task(config, 0)
    opt = make(task, budget)
    best = math.inf
    for step in range(budget):
        loss = task.train_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if isinstance(opt, LearnedOptimizer):
            opt.report(train_loss=loss.detach())
        if (step + 1) % max(1, budget // 10) == 0:
            val = task.val_loss()
            best = min(best, val if math.isfinite(val) else math.inf)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="30,100,300")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    makers = {
        "lhopt": lambda task, T: LearnedOptimizer(
            task.model.parameters(), T, val_loss_fn=task.val_loss, model=task.model
        ),
        "adamw 1e-3": lambda task, T: torch.optim.AdamW(task.model.parameters(), 1e-3),
        "adamw 1e-2": lambda task, T: torch.optim.AdamW(task.model.parameters(), 1e-2),
    }
    print("| task | T | " + " | ".join(makers) + " |")
    print("|---|---|" + "---|" * len(makers))
    for suite, name in TASKS:
        base = SUITES[suite][name]
        for budget in (int(b) for b in args.budgets.split(",")):
            config = TaskConfig.make(base.family, **{**base.p, "budget": budget})
            losses = [best_val(config, budget, make) for make in makers.values()]
            print(f"| {name} | {budget} | " + " | ".join(f"{v:.4g}" for v in losses) + " |")


if __name__ == "__main__":
    main()
