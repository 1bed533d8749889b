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

`--device cuda` runs part 1's inner tasks (both columns: parameters, data and optimizer state)
on that device; their batches are drawn on the CPU as there, the policy runs on the CPU. CPU
time then misses what the device does, so each column is also timed by the wall clock, read
after `torch.cuda.synchronize()`, and the ratio is of inner steps per wall-clock second. Before
each task's timing its episodes run once at a budget of 20 steps, untimed: a process's first
calls on a GPU load kernels and create handles, which neither column should pay.

Part 2 (`--ray-iterations` > 0): `lhopt meta-train` with the same config and seed on 1 and
then 2 Ray rollout workers, each rollout a batch of `--batch` episodes of one sampled task
config.

The last line reads `throughput ratio (batched / serial, inner steps per CPU-second): R`, or
on a GPU `throughput ratio (batched / serial, inner steps per second on cuda): R` (wall clock).

Usage: python benchmarks/meta_throughput.py [--batch 16] [--sample 2] [--ray-iterations 3]
    [--device cpu|cuda]
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
from lhopt.tasks import FAMILY_NAMES, TaskConfig, sample_training_config, task_budget, task_device
from lhopt.tasks.base import check_device
from lhopt.tasks.batched import batchable


def _device(text: str) -> torch.device:
    """`--device`: a torch device tasks run on (`check_device`), or argparse's error naming it."""
    try:
        return check_device(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that a clock read after it has counted it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def episodes_of(
    policy, config, seeds, cfg, rng_seeds, K, batched: bool, device=None
) -> tuple[int, float, float]:
    """(inner steps, CPU seconds, wall seconds) of the episodes of `seeds`, batched or one at a
    time, their tasks on `device`."""
    device = torch.device("cpu") if device is None else device
    rngs = [np.random.default_rng(s) for s in rng_seeds]
    _sync(device)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if batched:
        eps = run_episodes(policy, config, seeds, cfg, rngs, outer_steps=K, device=device)
    else:
        eps = [
            run_episodes(policy, config, [s], cfg, [r], outer_steps=K, device=device)[0]
            for s, r in zip(seeds, rngs, strict=True)
        ]
    _sync(device)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return sum(e["info"]["inner_steps"] for e in eps), cpu, wall


def warm_up(policy, config, seeds, cfg, rng_seeds, device) -> None:
    """`config`'s episodes, both ways, at a budget of 20 steps and untimed: on a GPU the first
    calls of a kind load kernels and create handles (seconds), which neither column should pay.
    """
    short = TaskConfig.make(config.family, **{**config.p, "budget": 20})
    episodes_of(policy, short, seeds[:1], cfg, rng_seeds[:1], 2, False, device)
    episodes_of(policy, short, seeds, cfg, rng_seeds, 2, True, device)


def compare(args) -> dict:
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    policy = new_policy(meta_config.from_dict({"policy": {"hidden": args.hidden}}))
    cfg = EpisodeConfig()
    device = args.device
    rows: dict[str, dict] = {}
    for family in args.families:
        for _ in range(args.sample):
            config = sample_training_config(rng, (family,), args.budget_scale, args.data_scale)
            seeds = [int(s) for s in rng.integers(args.task_seeds, size=args.batch)]
            rng_seeds = [int(s) for s in rng.integers(2**62, size=args.batch)]
            K = draw_outer_steps(rng, task_budget(config), cfg)
            for s in seeds:
                reward_reference(config, s, cfg)  # cached: not part of the timing
            on = task_device(config, device)  # the CPU for a family that cannot move
            if on.type != "cpu":
                warm_up(policy, config, seeds, cfg, rng_seeds, on)
            r = rows.setdefault(family, {"batched": 0, "tasks": 0, "devices": set()})
            r["tasks"] += 1
            r["batched"] += batchable(config)
            r["devices"].add(str(on))
            if batchable(config):
                order = (False, True) if r["tasks"] % 2 else (True, False)
                measured = {
                    b: episodes_of(policy, config, seeds, cfg, rng_seeds, K, b, on) for b in order
                }
            else:  # both columns run the same code, one episode after another: measured once
                alone = episodes_of(policy, config, seeds, cfg, rng_seeds, K, False, on)
                measured = {False: alone, True: alone}
            for batched, (steps, cpu, wall) in measured.items():
                key = "batched" if batched else "serial"
                r[f"{key}_steps"] = r.get(f"{key}_steps", 0) + steps
                r[f"{key}_cpu"] = r.get(f"{key}_cpu", 0.0) + cpu
                r[f"{key}_wall"] = r.get(f"{key}_wall", 0.0) + wall
                r[f"{key}_episodes"] = r.get(f"{key}_episodes", 0) + len(seeds)
            print(
                f"  {family} T={task_budget(config)} K={K} on {on}: serial "
                f"{r['serial_cpu']:.1f} CPU-s {r['serial_wall']:.1f} wall-s, batched "
                f"{r['batched_cpu']:.1f} CPU-s {r['batched_wall']:.1f} wall-s (so far)",
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
                    # One task config, so that both worker counts run the same work per step
                    # (with several, the mix each happens to sample sets its steps per second).
                    "task_pool": 1,
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
            ray.shutdown()  # before the cache dir goes: a worker may still be writing to it
        steps = trainer.counters["inner_steps"] - before["inner_steps"]
        episodes = trainer.counters["episodes"] - before["episodes"]
        out.append({"workers": workers, "episodes": episodes, "steps": steps, "wall": wall})
    return out


def _totals(rows: dict) -> dict:
    keys = [f"{col}_{k}" for col in ("serial", "batched") for k in ("steps", "cpu", "wall")]
    return {k: sum(r[k] for r in rows.values()) for k in keys}


def report_cpu(rows: dict) -> float:
    """Part 1's table on the CPU (CPU-seconds); returns the overall ratio."""
    print("clock: CPU-s, the process's CPU time")
    print(
        "| family | tasks batched | serial steps/CPU-s | batched steps/CPU-s | ratio "
        "| serial episodes/CPU-h | batched episodes/CPU-h |"
    )
    print("|---|---|---|---|---|---|---|")
    for family, r in rows.items():
        s, b = r["serial_steps"] / r["serial_cpu"], r["batched_steps"] / r["batched_cpu"]
        print(
            f"| {family} | {r['batched']} of {r['tasks']} | {s:.0f} | {b:.0f} "
            f"| {b / s:.2f} | {3600 * r['serial_episodes'] / r['serial_cpu']:.0f} "
            f"| {3600 * r['batched_episodes'] / r['batched_cpu']:.0f} |"
        )
    total = _totals(rows)
    serial = total["serial_steps"] / total["serial_cpu"]
    batched = total["batched_steps"] / total["batched_cpu"]
    print(f"| all | | {serial:.0f} | {batched:.0f} | {batched / serial:.2f} | | |")
    return batched / serial


def report_wall(rows: dict, device: torch.device) -> float:
    """Part 1's table with the tasks on `device`: inner steps per wall-clock second, the
    figure that counts the device's work, and per CPU-second beside it; returns the overall
    ratio of the wall-clock rates."""
    print(
        f"tasks on {device} where their family can move (column 'on'); clocks: wall-s, the "
        "wall clock read after torch.cuda.synchronize(); CPU-s, the process's CPU time, which "
        "misses the device's work"
    )
    print(
        "| family | on | tasks batched | serial steps/wall-s | batched steps/wall-s | ratio "
        "| serial steps/CPU-s | batched steps/CPU-s | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|")

    def rates(r: dict) -> tuple[float, ...]:
        return tuple(
            r[f"{col}_steps"] / r[f"{col}_{clock}"]
            for clock in ("wall", "cpu")
            for col in ("serial", "batched")
        )

    for family, r in rows.items():
        sw, bw, sc, bc = rates(r)
        on = ", ".join(sorted(r["devices"]))
        print(
            f"| {family} | {on} | {r['batched']} of {r['tasks']} | {sw:.0f} | {bw:.0f} "
            f"| {bw / sw:.2f} | {sc:.0f} | {bc:.0f} | {bc / sc:.2f} |"
        )
    sw, bw, sc, bc = rates(_totals(rows))
    print(
        f"| all | | | {sw:.0f} | {bw:.0f} | {bw / sw:.2f} | {sc:.0f} | {bc:.0f} | {bc / sc:.2f} |"
    )
    return bw / sw


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
    parser.add_argument(
        "--ray-iterations", type=int, default=0, help="part 2 (on the CPU, whatever --device)"
    )
    parser.add_argument(
        "--device",
        type=_device,
        default=torch.device("cpu"),
        help="where part 1's inner tasks run: cpu (default) or cuda[:i]",
    )
    args = parser.parse_args()
    rows = compare(args)

    print(f"\n{os.cpu_count()} CPUs; N = {args.batch}; {args.sample} sampled task(s) per family")
    ratio = report_cpu(rows) if args.device.type == "cpu" else report_wall(rows, args.device)
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
    if args.device.type == "cpu":
        print(f"throughput ratio (batched / serial, inner steps per CPU-second): {ratio:.2f}")
    else:
        print(
            f"throughput ratio (batched / serial, inner steps per second on "
            f"{args.device.type}): {ratio:.2f}"
        )


if __name__ == "__main__":
    main()
