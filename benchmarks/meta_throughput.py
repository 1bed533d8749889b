"""Meta-training throughput with 1 and 2 Ray rollout workers: episodes/hour, inner steps/s.

Each run is `lhopt meta-train` with the same config and seed (so the same stream of sampled
tasks), for the same number of iterations, with an empty baseline cache of its own (every
episode pays for its baseline run, as in a fresh meta-training run).

Usage: python benchmarks/meta_throughput.py [--iterations 6] [--workers 1 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from lhopt.meta import config as meta_config
from lhopt.meta.train import MetaTrainer

CONFIG = {
    "run": {
        "seed": 0,
        "min_new_transitions": 64,
        "checkpoint_every": 1000,
        "families": ["quadratic", "algorithmic", "mnist1d"],
    },
    "policy": {"hidden": 256},
    "ppo": {"batch": 64, "buffer": 384},
    "episode": {"max_outer_steps": 32},
}


def measure(workers: int, iterations: int) -> dict:
    import ray

    cfg = meta_config.from_dict(
        {**CONFIG, "run": {**CONFIG["run"], "workers": workers, "iterations": iterations}}
    )
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LHOPT_CACHE_DIR"] = os.path.join(tmp, "cache")
        trainer = MetaTrainer(cfg, os.path.join(tmp, "run"))
        start = time.perf_counter()
        trainer.train(log_progress=lambda s: None)
        wall = time.perf_counter() - start
    ray.shutdown()
    c = trainer.counters
    return {
        "workers": workers,
        "iterations": iterations,
        "episodes": c["episodes"],
        "inner_steps": c["inner_steps"],
        "wall_s": wall,
        "episodes_per_hour": 3600 * c["episodes"] / wall,
        "inner_steps_per_s": c["inner_steps"] / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = [measure(w, args.iterations) for w in args.workers]
    print(f"{os.cpu_count()} CPUs; {args.iterations} PPO iterations per run")
    print("| workers | episodes | inner steps | wall s | episodes/hour | inner steps/s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['workers']} | {r['episodes']} | {r['inner_steps']} | {r['wall_s']:.0f} "
            f"| {r['episodes_per_hour']:.0f} | {r['inner_steps_per_s']:.0f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
