"""Does a training pool overfit as small real data does? Per task, whether the tuned grid's
warm-up + cosine run at lr 1e-2 ends with its validation loss 1.2 times or more above its
minimum, and which lr the tuned reference picks (issue 19; docs/experiments.md, "Stage 39").

A pool: the 40 (`--n`) configurations meta-training draws for `[run] pool_seed` (`--seed`) with
`--families` (a name given twice is drawn twice as often), `--budget-scale` and
`--data-scale`; seed 0 per task, as `[run] task_seeds = 1`. Each task's reference is
`lhopt.meta.episode.tuned_cosine(config, 0, bracketed=True)`, the one meta-training computes for
`reward_reference = "tuned-cosine-bracketed"` (so the curve cache then holds the pool's
references), plus the grid's run at 1e-2 (one that diverged counts as overfit). Or a suite's
tasks (`--suite`), seed 0. Runs on `--workers` processes. The last line reads `overfit at lr
1e-2: K / N; tuned lr <= 3e-4: M`.

Usage: python benchmarks/pool_overfit.py --seed 44 --data-scale 100 \
           --families quadratic,mnist1d,algorithmic,linear,linear,linear,seqattn
       python benchmarks/pool_overfit.py --suite unseen
"""

from __future__ import annotations

import argparse
import math
from multiprocessing import Pool

import torch

from lhopt.curves import drivers
from lhopt.meta.episode import cached_run, tuned_cosine
from lhopt.tasks import TaskConfig, sample_training_set, suite

OVERFIT = 1.2  # end over minimum of the validation loss


def measure(config: TaskConfig) -> tuple[float, float]:
    """(the bracketed tuned lr, end / minimum of the validation loss at lr 1e-2)."""
    torch.set_num_threads(1)
    tuned = tuned_cosine(config, 0, bracketed=True)
    run = cached_run(config, 0, "adamw-cosine", 1e-2, 1.0, drivers.adamw_cosine)
    val = [v if v is not None and math.isfinite(v) else math.inf for v in run["val"]]
    return tuned.lr, val[-1] / min(val)  # a diverged run: inf (counted as overfit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite")
    parser.add_argument("--seed", type=int, default=17, help="[run] pool_seed")
    parser.add_argument("--n", type=int, default=40, help="[run] task_pool")
    parser.add_argument("--families", default="quadratic,mnist1d,algorithmic,linear,seqattn")
    parser.add_argument("--budget-scale", type=float, default=3.0)
    parser.add_argument("--data-scale", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if args.suite:
        tasks = dict(suite(args.suite))
    else:
        families = tuple(args.families.split(","))
        configs = sample_training_set(
            args.seed, args.n, families, args.budget_scale, args.data_scale
        )
        tasks = {f"{i:02d}-{c.family}": c for i, c in enumerate(configs)}
    with Pool(args.workers) as pool:
        results = pool.map(measure, list(tasks.values()), chunksize=1)
    print("| task | train samples | T | tuned lr | end / min at 1e-2 |")
    print("|---|---|---|---|---|")
    for (name, config), (lr, ratio) in zip(tasks.items(), results, strict=True):
        p = config.p
        print(f"| {name} | {p.get('train_samples', '-')} | {p['budget']} | {lr:g} | {ratio:.2f} |")
    overfit = sum(ratio >= OVERFIT for _, ratio in results)
    low = sum(lr <= 3e-4 for lr, _ in results)
    print(f"overfit at lr 1e-2: {overfit} / {len(results)}; tuned lr <= 3e-4: {low}")


if __name__ == "__main__":
    main()
