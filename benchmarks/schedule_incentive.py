"""Does the schedule matter? Per task, the best lr of the tuning grid under warm-up + cosine
against the best constant lr of the same grid (issue 19, item 4).

A training distribution asks for a schedule only if its tasks reward one: for each task, AdamW
runs T steps at every lr of {1e-4, 3e-4, 1e-3, 3e-3, 1e-2}, constant and under the 5% warm-up +
cosine shape (the `adamw` and `adamw-cosine` drivers of the benchmark, cached like its runs);
the schedule wins the task if its best run's best validation loss by T is lower than the best
constant run's. Tasks: `--sample N` from meta-training's distribution (`--families`,
`--budget-scale`, `--data-scale` as in a stage config; seed 0 per task, as `[run] task_seeds =
1`), or a suite.
Runs on Ray (`--workers`). The last line reads `schedule wins on K of N tasks (P%)`.

Usage: python benchmarks/schedule_incentive.py --sample 40 --budget-scale 4 --data-scale 10
       python benchmarks/schedule_incentive.py --suite selection
"""

from __future__ import annotations

import argparse

import numpy as np

from lhopt.bench.runner import execute
from lhopt.curves import cache
from lhopt.curves.drivers import TUNED_LR_GRID
from lhopt.curves.speedup import best_by
from lhopt.extras import start_ray
from lhopt.tasks import FAMILY_NAMES, sample_training_set, suite


def tasks_of(args) -> dict:
    if args.suite:
        return dict(suite(args.suite))
    configs = sample_training_set(
        args.seed, args.sample, tuple(args.families), args.budget_scale, args.data_scale
    )
    return {f"sampled-{i:02d}-{c.family}": c for i, c in enumerate(configs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=40)
    parser.add_argument("--suite", default=None)
    parser.add_argument("--families", nargs="+", default=list(FAMILY_NAMES))
    parser.add_argument("--budget-scale", type=float, default=1.0)
    parser.add_argument("--data-scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0, help="of the task sample")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    tasks = tasks_of(args)
    jobs = [
        {
            "task": name,
            "config": c.to_dict(),
            "seed": 0,
            "optimizer": opt,
            "lr": lr,
            "multiple": 1.0,
        }
        for name, c in tasks.items()
        for opt in ("adamw", "adamw-cosine")
        for lr in TUNED_LR_GRID
    ]
    results = [cache.lookup(job) for job in jobs]
    todo = [job for job, r in zip(jobs, results, strict=True) if r is None]
    if todo:
        start_ray(None, args.workers)
        done = iter(execute(todo, desc="runs", on_result=cache.store))
        results = [r if r is not None else next(done) for r in results]
    best: dict[tuple[str, str], float] = {}
    for job, r in zip(jobs, results, strict=True):
        loss = best_by(r["steps"], r["val"], r.get("budget", 10**9)) if r.get("val") else np.inf
        key = (job["task"], job["optimizer"])
        best[key] = min(best.get(key, np.inf), loss)
    print("| task | T | best constant | best cosine | schedule wins |\n|---|---|---|---|---|")
    wins = 0
    for name in tasks:
        const, cos = best[(name, "adamw")], best[(name, "adamw-cosine")]
        wins += cos < const
        budget = next(r["budget"] for j, r in zip(jobs, results, strict=True) if j["task"] == name)
        print(f"| {name} | {budget} | {const:.4g} | {cos:.4g} | {'yes' if cos < const else 'no'} |")
    n = len(tasks)
    print(f"schedule wins on {wins} of {n} tasks ({100 * wins / n:.0f}%)")


if __name__ == "__main__":
    main()
