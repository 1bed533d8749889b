"""Meta-training throughput: batched episodes against one at a time, and Ray's scaling.

Part 1, side by side in one process (one thread): tasks sampled from meta-training's
distribution (`--families`, `--sample` per family); for each, the same N episodes (seeds,
perturbed initial hyperparameters, number of decisions) run one after another (`run_episode`,
N = 1, today's path) and as one batch (`run_episodes`, N = `--batch`), in alternating order.
Members' seeds are drawn from 0..S-1 (`--task-seeds`, as `[run] task_seeds`); the reward's
reference runs are computed before timing (they are cached in meta-training and the same for
both). Reported per family and overall: inner steps per CPU-second and episodes
per CPU-hour (process CPU time), and how many of the tasks ran batched (`batchable`); the
others run their N episodes one after another, the same code in both columns, so they are
measured once and counted in both.

Part 2 (`--ray-iterations` > 0): `lhopt meta-train` with the same config and seed on 1 and
then 2 Ray rollout workers, each rollout a batch of `--batch` episodes.

The last line reads `throughput ratio (batched / serial, inner steps per CPU-second): R`.

Usage: python benchmarks/meta_throughput.py [--batch 16] [--sample 2] [--ray-iterations 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from lhopt.meta import config as meta_config
from lhopt.meta.episode import EpisodeConfig, draw_outer_steps, reward_reference, run_episodes
from lhopt.meta.train import MetaTrainer, new_policy
from lhopt.tasks import FAMILY_NAMES, sample_training_config, task_budget
from lhopt.tasks.batched import batchable


def episodes_of(policy, config, seeds, cfg, rng_seeds, K, batched: bool) -> tuple[int, float]:
    """(inner steps, CPU seconds) of the episodes of `seeds`, batched or one at a time."""
    rngs = [np.random.default_rng(s) for s in rng_seeds]
    start = time.process_time()
    if batched:
        eps = run_episodes(policy, config, seeds, cfg, rngs, outer_steps=K)
    else:
        eps = [
            run_episodes(policy, config, [s], cfg, [r], outer_steps=K)[0]
            for s, r in zip(seeds, rngs, strict=True)
        ]
    return sum(e["info"]["inner_steps"] for e in eps), time.process_time() - start


def compare(args) -> dict:
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    policy = new_policy(meta_config.from_dict({"policy": {"hidden": args.hidden}}))
    cfg = EpisodeConfig()
    rows: dict[str, dict] = {}
    for family in args.families:
        for _ in range(args.sample):
            config = sample_training_config(rng, (family,), args.budget_scale, args.data_scale)
            seeds = [int(s) for s in rng.integers(args.task_seeds, size=args.batch)]
            rng_seeds = [int(s) for s in rng.integers(2**62, size=args.batch)]
            K = draw_outer_steps(rng, task_budget(config), cfg)
            for s in seeds:
                reward_reference(config, s, cfg)  # cached: not part of the timing
            r = rows.setdefault(family, {"batched": 0, "tasks": 0})
            r["tasks"] += 1
            r["batched"] += batchable(config)
            if batchable(config):
                order = (False, True) if r["tasks"] % 2 else (True, False)
                measured = {
                    b: episodes_of(policy, config, seeds, cfg, rng_seeds, K, b) for b in order
                }
            else:  # both columns run the same code, one episode after another: measured once
                alone = episodes_of(policy, config, seeds, cfg, rng_seeds, K, False)
                measured = {False: alone, True: alone}
            for batched, (steps, cpu) in measured.items():
                key = "batched" if batched else "serial"
                r[f"{key}_steps"] = r.get(f"{key}_steps", 0) + steps
                r[f"{key}_cpu"] = r.get(f"{key}_cpu", 0.0) + cpu
                r[f"{key}_episodes"] = r.get(f"{key}_episodes", 0) + len(seeds)
            print(
                f"  {family} T={task_budget(config)} K={K}: serial {r['serial_cpu']:.1f} s, "
                f"batched {r['batched_cpu']:.1f} s (so far)",
                flush=True,
            )
    return rows


def ray_scaling(batch: int, iterations: int, families: list) -> list[dict]:
    import ray

    out = []
    for workers in (1, 2):
        cfg = meta_config.from_dict(
            {
                "run": {
                    "seed": 0,
                    "workers": workers,
                    "iterations": iterations,
                    "batch": batch,
                    # Several rollouts per update, so that a second worker has work: at one
                    # rollout per update a batch of N episodes alone would end each iteration.
                    "min_new_transitions": 32 * batch,
                    "checkpoint_every": 1000,
                    "task_pool": 4,
                    "families": families,
                },
                "policy": {"hidden": 256},
                "ppo": {"batch": 64, "buffer": 384},
                "episode": {"max_outer_steps": 32, "noise_floor": 1e-5},
            }
        )
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["LHOPT_CACHE_DIR"] = os.path.join(tmp, "cache")
            trainer = MetaTrainer(cfg, os.path.join(tmp, "run"))
            trainer.train(log_progress=lambda s: None)  # warms the reference cache
            trainer.cfg.run.iterations += iterations
            before = dict(trainer.counters)
            start = time.perf_counter()
            trainer.train(log_progress=lambda s: None)
            wall = time.perf_counter() - start
        ray.shutdown()
        steps = trainer.counters["inner_steps"] - before["inner_steps"]
        episodes = trainer.counters["episodes"] - before["episodes"]
        out.append({"workers": workers, "episodes": episodes, "steps": steps, "wall": wall})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16, help="episodes per batch (N)")
    parser.add_argument("--sample", type=int, default=2, help="tasks per family")
    parser.add_argument("--families", nargs="+", default=list(FAMILY_NAMES))
    parser.add_argument("--budget-scale", type=float, default=1.0)
    parser.add_argument("--data-scale", type=float, default=1.0)
    parser.add_argument("--hidden", type=int, default=256, help="policy LSTM units")
    parser.add_argument(
        "--task-seeds", type=int, default=4, help="seeds drawn from 0..S-1, as [run] task_seeds"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ray-iterations", type=int, default=0)
    args = parser.parse_args()
    rows = compare(args)

    print(f"\n{os.cpu_count()} CPUs; N = {args.batch}; {args.sample} sampled task(s) per family")
    print(
        "| family | tasks batched | serial steps/CPU-s | batched steps/CPU-s | ratio "
        "| serial episodes/CPU-h | batched episodes/CPU-h |"
    )
    print("|---|---|---|---|---|---|---|")
    total = {k: 0.0 for k in ("serial_steps", "serial_cpu", "batched_steps", "batched_cpu")}
    for family, r in rows.items():
        for k in total:
            total[k] += r[k]
        s, b = r["serial_steps"] / r["serial_cpu"], r["batched_steps"] / r["batched_cpu"]
        print(
            f"| {family} | {r['batched']} of {r['tasks']} | {s:.0f} | {b:.0f} "
            f"| {b / s:.2f} | {3600 * r['serial_episodes'] / r['serial_cpu']:.0f} "
            f"| {3600 * r['batched_episodes'] / r['batched_cpu']:.0f} |"
        )
    serial = total["serial_steps"] / total["serial_cpu"]
    batched = total["batched_steps"] / total["batched_cpu"]
    print(f"| all | | {serial:.0f} | {batched:.0f} | {batched / serial:.2f} | | |")
    if args.ray_iterations:
        scaling = ray_scaling(args.batch, args.ray_iterations, args.families)
        print("\n| Ray workers | episodes | inner steps | wall s | inner steps/s |")
        print("|---|---|---|---|---|")
        for r in scaling:
            print(
                f"| {r['workers']} | {r['episodes']} | {r['steps']} | {r['wall']:.0f} "
                f"| {r['steps'] / r['wall']:.0f} |"
            )
        rate = [r["steps"] / r["wall"] for r in scaling]
        print(f"1 -> 2 workers: {rate[1] / rate[0]:.2f}x inner steps per second")
    print(
        f"throughput ratio (batched / serial, inner steps per CPU-second): {batched / serial:.2f}"
    )


if __name__ == "__main__":
    main()
