"""Wall time of meta-training episodes of the task distribution, per family, on one core each.

An episode here is one inner training run of a sampled task, driven as meta-training drives it:
the shipped policy steering CIAO through the controller (`LearnedOptimizer`), 20 decisions at
which the validation loss is measured, the features computed and the policy run. Episodes run
on Ray, one CPU and one torch thread each.

Usage: python benchmarks/episode_times.py [--per-family 10] [--seed 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import ray
import torch

from lhopt import LearnedOptimizer
from lhopt.tasks import FAMILY_NAMES, build_task, sample_training_config


@ray.remote(num_cpus=1)
def episode(config_dict: dict, seed: int) -> dict:
    torch.set_num_threads(1)
    start = time.perf_counter()
    task = build_task(config_dict, seed)
    built = time.perf_counter()
    opt = LearnedOptimizer(
        task.model.parameters(),
        total_steps=task.budget,
        val_loss_fn=task.val_loss,
        model=task.model,
    )
    for _ in range(task.budget):
        loss = task.train_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
        opt.report(train_loss=loss)
    end = time.perf_counter()
    return {
        "family": task.family,
        "config": config_dict,
        "budget": task.budget,
        "params": task.num_params(),
        "build_s": built - start,
        "episode_s": end - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-family", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    configs = []
    for family in FAMILY_NAMES:
        configs += [sample_training_config(rng, (family,)) for _ in range(args.per_family)]
    for family in FAMILY_NAMES:  # load each data set once before the workers start
        build_task(next(c for c in configs if c.family == family), 0)
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    results = ray.get([episode.remote(c.to_dict(), i) for i, c in enumerate(configs)])
    times = [r["episode_s"] for r in results]
    print(f"{len(results)} episodes, {args.per_family} per family, sampled with seed {args.seed}")
    print("| family | episodes | min s | median s | p90 s | max s |")
    print("|---|---|---|---|---|---|")
    for family in (*FAMILY_NAMES, "all"):
        t = sorted(r["episode_s"] for r in results if family in ("all", r["family"]))
        p90 = t[min(len(t) - 1, int(0.9 * len(t)))]
        print(
            f"| {family} | {len(t)} | {t[0]:.1f} | {statistics.median(t):.1f} | {p90:.1f} "
            f"| {t[-1]:.1f} |"
        )
    print(f"median over all episodes: {statistics.median(times):.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
