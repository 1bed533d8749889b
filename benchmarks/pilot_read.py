"""Does a pilot cosine at a fraction of T pick a task's lr? (issue 19, docs/experiments.md,
"Measurement: does a pilot cosine at a tenth of T pick a task's lr?")

Per task and seed: `adamw-cosine` at each lr of the tuned grid with a budget of `--frac` T
(the benchmark's jobs, so cached); the pilot's lr is the one whose run ends with the lowest
validation loss, as the tuned baseline picks; the full run is `adamw-cosine` at T at that lr
shifted by `--shifts` grid steps, read over `adamw-cosine-tuned` as the benchmark reads a
run, without and with the pilots' cost. Beside it, `cv`: the lr chosen per task on the other
seeds' final validation losses (their mean) and read on the held-out seed.

Usage: python benchmarks/pilot_read.py --suites quick validation --workers 2
"""

from __future__ import annotations

import argparse

from lhopt.bench import benchmark as bench
from lhopt.bench import optimizers as registry
from lhopt.curves.speedup import best_by, final_loss, geometric_mean, pick_lr


def shifted(grid: list[float], lr: float, shift: int) -> float:
    """`lr` moved `shift` steps along `grid`, held at its ends."""
    return grid[min(max(grid.index(lr) + shift, 0), len(grid) - 1)]


def cv_lr(grid: list[float], finals: dict[float, list[float]]) -> float:
    """The lr whose runs on the other seeds end lowest on average (`finals[lr]`, a non-finite
    one counting as infinite), the first on ties: what tuning once per task picks."""
    return min(grid, key=lambda lr: sum(finals[lr]) / len(finals[lr]))


def _read(results: dict, name: str, seed: int, run: dict, T: int) -> float:
    """`run`'s speedup over `adamw-cosine-tuned`, as the benchmark reads it."""
    target = best_by(run["steps"], run["val"], T)
    sp = bench.baseline_speedup(results, name, seed, "adamw-cosine-tuned", target, T)
    return max(sp.get("speedup") or 1e-3, 1e-3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suites", nargs="+", required=True)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--frac", type=float, default=0.1, help="the pilots' budget over T")
    parser.add_argument("--shifts", type=int, nargs="+", default=[0, -1])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if not 0 < args.frac < 1:
        parser.error(f"--frac {args.frac}: expected a number in (0, 1)")
    bench.start_ray(None, args.workers)
    grid = list(registry.get("adamw-cosine-tuned").lr_grid)
    seeds = list(range(args.seeds))
    cost = 1.0 + len(grid) * args.frac
    rows = {f"shift {s}": [] for s in args.shifts} | {"cv": []}
    agree = {s: 0 for s in args.shifts}
    n = 0
    for suite in args.suites:
        tasks = bench.select_tasks(suite)
        base = bench.plan_phase1(tasks, ["adamw-cosine-tuned"], seeds)
        results = bench.run_jobs(base, progress=False, desc=f"{suite} grid")
        results |= bench.run_jobs(
            bench.plan_phase2(tasks, ["adamw-cosine-tuned"], seeds, results),
            progress=False,
            desc=f"{suite} tuned",
        )
        pilots = [
            bench._job(name, config, seed, "adamw-cosine", lr, args.frac)
            for name, config in tasks.items()
            for seed in seeds
            for lr in grid
        ]
        results |= bench.run_jobs(pilots, progress=False, desc=f"{suite} pilots")
        print(f"## {suite}")
        for name in tasks:
            T = None
            per = {k: [] for k in rows}
            for seed in seeds:
                full = {lr: results[(name, seed, "adamw-cosine", lr, 1.0)] for lr in grid}
                T = full[grid[0]]["budget"]
                pilot = {lr: results[(name, seed, "adamw-cosine", lr, args.frac)] for lr in grid}
                chosen = pick_lr(grid, {lr: r["val"] for lr, r in pilot.items()})
                tuned = bench.chosen_lr(results, name, seed)
                for s in args.shifts:
                    lr = shifted(grid, chosen, s)
                    per[f"shift {s}"].append(_read(results, name, seed, full[lr], T))
                    agree[s] += lr == tuned
                others = [t for t in seeds if t != seed]
                # as the bar picks (`pick_lr`: the lowest final loss), over the other seeds
                finals = {
                    lr: [
                        final_loss(results[(name, t, "adamw-cosine", lr, 1.0)]["val"])
                        for t in others
                    ]
                    for lr in grid
                }
                per["cv"].append(_read(results, name, seed, full[cv_lr(grid, finals)], T))
                n += 1
            line = "  ".join(f"{k} {geometric_mean(v):.2f}" for k, v in per.items())
            print(f"  {name:44s} T {T:5d}  {line}")
            for k, v in per.items():
                rows[k].append(v)
    print(f"## every task pooled ({sum(len(v) for v in rows['cv'])} task-seeds)")
    for k, v in rows.items():
        flat = [x for seeds_ in v for x in seeds_]
        g = geometric_mean(flat)
        extra = f", with the pilots' cost {g / cost:.2f}" if k != "cv" else ""
        print(f"  {k}: {g:.2f}{extra}")
    for s in args.shifts:
        print(f"  shift {s}: the tuned lr on {agree[s]} of {n} task-seeds")


if __name__ == "__main__":
    main()
