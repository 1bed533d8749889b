"""Each training task's best fixed level: the shipped network held at "keep" (a policy file made
by `respec_policy.py --keep-margin 100 --initial lr=K`) run from each start K on tasks of a
meta-training run's fixed pool, and how well two seeds agree on the best K (docs/experiments.md,
"Measurement: are the training tasks' best levels clean labels?").

    python benchmarks/level_labels.py runs/default-stage61/config.toml \\
        --policies out/keep61-0.00375.pt ... --every 3 --seeds 2 --out out/level-labels.json

Per task and seed the best K is the one whose run ends with the lowest best validation loss
by T. Printed: on how many tasks the seeds pick the same K, or Ks a factor 2 apart, and the
regret of one label per task (the K best on the seeds' mean loss) as the share of each seed's
gain (its first loss minus its best) that it gives up.
"""

from __future__ import annotations

import argparse
import json
import math
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def _run(config: dict, seed: int, policy: str) -> dict:
    import torch

    from lhopt.bench.runner import run_job

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    job = {
        "task": "pool",
        "config": config,
        "seed": seed,
        "optimizer": "lhopt",
        "lr": None,
        "multiple": 1.0,
        "policy": policy,
    }
    r = run_job(job)
    vals = [v if math.isfinite(v) else math.inf for v in r["val"]]
    return {"first": vals[0], "best": min(vals)}


def summarise(runs: dict[str, dict[str, dict[int, dict]]]) -> dict:
    """`runs[task][K][seed]` = {"first", "best"}: per task the best K per seed, whether the seeds
    agree (same K, or within a factor 2 of each other), and the regret of one label."""
    same = near = 0
    regrets = []
    labels = {}
    for task, by_k in runs.items():
        ks = sorted(by_k, key=float)
        seeds = sorted({s for r in by_k.values() for s in r})
        best = {s: min(ks, key=lambda k: by_k[k][s]["best"]) for s in seeds}
        label = min(ks, key=lambda k: sum(by_k[k][s]["best"] for s in seeds))
        labels[task] = {"label": label, "per_seed": best}
        picks = [ks.index(best[s]) for s in seeds]
        same += max(picks) == min(picks)
        near += max(picks) - min(picks) <= 1
        for s in seeds:
            gain = by_k[best[s]][s]["first"] - by_k[best[s]][s]["best"]
            loss = by_k[label][s]["best"] - by_k[best[s]][s]["best"]
            if gain > 0 and math.isfinite(loss):
                regrets.append(loss / gain)
    n = len(runs)
    return {
        "tasks": n,
        "same": same,
        "within_factor_2": near,
        "mean_regret": sum(regrets) / len(regrets) if regrets else None,
        "max_regret": max(regrets) if regrets else None,
        "labels": labels,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="a meta-training run's config.toml (its fixed pool)")
    parser.add_argument("--policies", nargs="+", required=True, help="keep-K policy files")
    parser.add_argument("--every", type=int, default=3, help="every n-th task of the pool")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.every < 1 or args.seeds < 2:
        parser.error(f"--every={args.every} --seeds={args.seeds}: expected >= 1 and >= 2")

    from lhopt.control import load_policy
    from lhopt.meta.config import load
    from lhopt.meta.train import fixed_pool

    levels = {}
    for p in args.policies:
        policy = load_policy(p)  # a ValueError naming a bad file
        levels[f"{policy.initial['lr']:g}"] = str(Path(p).resolve())
    pool = fixed_pool(load(args.config).run)[:: args.every]
    tasks = {f"{i * args.every}-{c.family}": c.to_dict() for i, c in enumerate(pool)}
    jobs = [(t, k, s) for t in tasks for k in levels for s in range(args.seeds)]
    with ProcessPoolExecutor(args.workers) as ex:
        futures = [ex.submit(_run, tasks[t], s, levels[k]) for t, k, s in jobs]
        results = [f.result() for f in futures]
    runs: dict = {}
    for (t, k, s), r in zip(jobs, results, strict=True):
        runs.setdefault(t, {}).setdefault(k, {})[s] = r
    summary = summarise(runs)
    Path(args.out).write_text(json.dumps({"args": vars(args), "runs": runs, **summary}, indent=1))
    print(
        f"{summary['tasks']} tasks: seeds pick the same K on {summary['same']}, Ks within a "
        f"factor 2 on {summary['within_factor_2']}; one label per task gives up "
        f"{summary['mean_regret']:.3f} of a seed's gain on average (max "
        f"{summary['max_regret']:.3f})"
    )
    for task, v in summary["labels"].items():
        print(f"  {task:24s} label {v['label']:>8s}  per seed {list(v['per_seed'].values())}")


if __name__ == "__main__":
    main()
