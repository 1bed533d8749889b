"""How much of a branch label is noise? (issue 19)

A branched run (`[episode] branch`) labels a decision with the lr choice whose run returned most
(the reward's log speedup), where it beat the others by `branch_margin`. This runs branched
groups on a meta-training config's task pool with the factors 0.9 and 1.1 beside 0.5 and 2
(`lhopt.meta.episode.run_episodes`; one seed and start per group, the branch at a random
decision) and compares, per group, the return's spread over a 1.22x change of the lr (0.9 to
1.1) with its spread over a 4x change (0.5 to 2). Where the return is a smooth function of the
log lr, the first is about a seventh of the second; where it is the same size, what the label
reads at that margin is how the run's noise fell, not the lr.

Usage: python benchmarks/branch_noise.py configs/default-stage21.toml --policy P --groups 16
"""

from __future__ import annotations

import argparse
import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

import numpy as np
import torch

FACTORS = [0.9, 1.1, 0.5, 2.0]


def _group(args: tuple) -> dict:
    config_path, policy_path, task, seed, rng_seed = args
    from lhopt.control.policy_file import load_policy
    from lhopt.meta import config as meta_config
    from lhopt.meta.episode import run_episodes
    from lhopt.tasks import TaskConfig

    torch.set_num_threads(1)
    cfg = meta_config.load(config_path)
    ep = replace(cfg.episode, branch=True, branch_factors=FACTORS, branch_heads=["lr"])
    policy = load_policy(policy_path)
    G = ep.group
    episodes = run_episodes(
        policy,
        TaskConfig.from_dict(task),
        [seed] * G,
        ep,
        [np.random.default_rng(rng_seed + i) for i in range(G)],
    )
    returns = [float(e["info"]["return"]) for e in episodes]
    return {
        "family": task.get("family"),
        "returns": dict(zip(["keep", *FACTORS], returns, strict=True)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="a meta-training config (its task pool and episodes)")
    parser.add_argument("--policy", required=True, help="the policy before the branch")
    parser.add_argument("--groups", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="out/branch_noise.json")
    args = parser.parse_args()
    if args.groups < 1:
        parser.error(f"--groups={args.groups}: expected at least 1")

    from lhopt.meta import config as meta_config
    from lhopt.meta.train import fixed_pool

    run = meta_config.load(args.config).run
    if not (run.task_pool and run.pool_seed):
        parser.error(f"{args.config}: expected a fixed task pool ([run] task_pool, pool_seed)")
    pool = fixed_pool(run)
    rng = np.random.default_rng(args.seed)
    jobs = [
        (
            args.config,
            args.policy,
            pool[int(rng.integers(len(pool)))].to_dict(),
            int(rng.integers(1_000_000)),
            int(rng.integers(2**40)),
        )
        for _ in range(args.groups)
    ]
    with ProcessPoolExecutor(args.workers) as executor:
        rows = list(executor.map(_group, jobs))

    # Groups whose runs all return alike (clipped, or the best loss before the branch) carry no
    # label whatever the margin: left out of the spreads.
    moved = [r for r in rows if len(set(r["returns"].values())) > 1]
    near = np.array([abs(r["returns"][1.1] - r["returns"][0.9]) for r in moved])
    far = np.array([abs(r["returns"][2.0] - r["returns"][0.5]) for r in moved])
    if not moved:
        raise SystemExit(f"{len(rows)} groups, none whose runs returned differently")
    smooth = math.log(1.1 / 0.9) / math.log(4)
    print("| family | keep | x0.9 | x1.1 | x0.5 | x2 |")
    for r in rows:
        v = r["returns"]
        print(f"| {r['family']} | " + " | ".join(f"{v[k]:+.3f}" for k in ["keep", *FACTORS]) + " |")
    print(
        f"\n{len(moved)} of {len(rows)} groups apart: median |R(x1.1) - R(x0.9)| "
        f"{np.median(near):.3f}, median |R(x2) - R(x0.5)| {np.median(far):.3f} (their ratio "
        f"{np.median(near) / max(np.median(far), 1e-12):.2f}; smooth in log lr: {smooth:.2f})"
    )
    for m in (0.02, 0.05, 0.1, 0.2):
        print(
            f"margin {m:g}: share of 0.9-vs-1.1 pairs apart by more {np.mean(near > m):.2f}, "
            f"of 0.5-vs-2 pairs {np.mean(far > m):.2f}"
        )
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"args": vars(args), "rows": rows}, f, default=str)


if __name__ == "__main__":
    main()
