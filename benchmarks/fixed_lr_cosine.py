"""How sharp is the tuned schedule's lead? One lr for every task against the tuned one (issue 19).

`adamw-cosine` at each lr of the tuned grid, held fixed over a suite's tasks, against
`adamw-cosine-tuned` (the grid's lr with the best validation loss at T, per task and seed), as
`lhopt bench` measures a speedup. The runs are the tuned baseline's own (the benchmark's curve
cache; run where missing). Prints per task and per lr the geometric mean over seeds, and per lr
the suite's geometric mean (min).

Usage: python benchmarks/fixed_lr_cosine.py --suites selection validation validation-long
"""

from __future__ import annotations

import argparse
import math


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", nargs="+", default=["selection"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from lhopt.bench import benchmark as bench
    from lhopt.curves.drivers import TUNED_LR_GRID
    from lhopt.curves.speedup import best_by, geometric_mean

    seeds = list(range(args.seeds))
    bench.start_ray(None, args.workers)
    for suite in args.suites:
        tasks = bench.select_tasks(suite)
        opts = ["adamw-cosine-tuned"]
        results = bench.run_jobs(bench.plan_phase1(tasks, opts, seeds), progress=False, desc="grid")
        results.update(
            bench.run_jobs(
                bench.plan_phase2(tasks, opts, seeds, results), progress=False, desc="tuned"
            )
        )
        per_lr = {lr: [] for lr in TUNED_LR_GRID}
        print(f"\n## {suite}: over adamw-cosine-tuned\n")
        print("| task | " + " | ".join(f"{lr:g}" for lr in TUNED_LR_GRID) + " |")
        print("|---" * (len(TUNED_LR_GRID) + 1) + "|")
        for name in tasks:
            row = []
            for lr in TUNED_LR_GRID:
                speedups = []
                for seed in seeds:
                    run = results[(name, seed, "adamw-cosine", lr, 1.0)]
                    T = run["budget"]
                    target = best_by(run["steps"], run["val"], T)
                    if not math.isfinite(target):  # nothing finite by T: no speedup
                        speedups.append(1e-3)
                        continue
                    over = bench.baseline_speedup(
                        results, name, seed, "adamw-cosine-tuned", target, T
                    )
                    speedups.append(max(over.get("speedup", 0.0), 1e-3))
                row.append(geometric_mean(speedups))
                per_lr[lr].append(row[-1])
            print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in row) + " |")
        print(
            "| geometric mean (min) | "
            + " | ".join(f"{geometric_mean(v):.2f} ({min(v):.2f})" for v in per_lr.values())
            + " |"
        )


if __name__ == "__main__":
    main()
