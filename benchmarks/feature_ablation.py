"""Which of the policy's inputs set the lr level it settles on? An ablation (issue 19).

For each feature group (`--groups`, prefixes of the feature names in `docs/features.md`), the
shipped policy (or `--policy`) drives `lhopt` on each task of a suite (seed 0) with that group
held at the policy's normalised mean (0 after its input normaliser: "typical of training"),
and its lr level (the geometric mean of the base lr over the run, as
`benchmarks/lr_adaptation.py` reads it) is put beside the unablated one and the tuned lr
(`adamw-cosine-tuned`'s, from the benchmark's cache). A group whose ablation moves the levels
toward the tuned ones (Spearman up) is one whose values on these tasks mislead the policy.

Usage: python benchmarks/feature_ablation.py --suite selection --workers 2
"""

from __future__ import annotations

import argparse
import math
from concurrent.futures import ProcessPoolExecutor

GROUPS = ("stat", "train", "val", "hparam", "prev_action", "progress")


def _run(job: dict, prefixes: tuple[str, ...], policy: str) -> float:
    """The run's lr level, with the features whose names start with `prefixes` ablated."""
    import torch

    from lhopt.bench.optimizers import get
    from lhopt.control import policy as policy_module
    from lhopt.control.controller import Controller
    from lhopt.curves.run import run_job

    torch.set_num_threads(1)
    forward = policy_module.RunningNorm.forward
    original_init = Controller.__init__
    if prefixes:

        def init(self, *args, **kwargs):
            original_init(self, *args, **kwargs)
            names = self.engine.names
            mask = torch.tensor([not n.startswith(prefixes) for n in names], dtype=torch.float32)

            def ablated(norm, x):
                return forward(norm, x) * mask

            policy_module.RunningNorm.forward = ablated

        Controller.__init__ = init
    try:
        result = run_job({**job, "policy": policy}, get("lhopt").make)
    finally:  # the next job in this process starts from the unablated classes
        policy_module.RunningNorm.forward = forward
        Controller.__init__ = original_init
    base = result["hparams"]["base_lr"]
    return math.exp(sum(math.log(v) for v in base) / len(base))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="selection")
    parser.add_argument("--groups", nargs="+", default=list(GROUPS))
    parser.add_argument("--policy", default="default")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from scipy.stats import spearmanr

    from lhopt.bench import benchmark as bench

    tasks = bench.select_tasks(args.suite)
    bench.start_ray(None, args.workers)
    opts = ["adamw-cosine-tuned"]
    results = bench.run_jobs(bench.plan_phase1(tasks, opts, [0]), progress=False, desc="grid")
    tuned = {name: bench.chosen_lr(results, name, 0) for name in tasks}
    conditions = {"none": ()} | {g: (g,) for g in args.groups}
    jobs = [
        (cond, name, bench._job(name, c, 0, "lhopt", None, 1.0))
        for cond in conditions
        for name, c in tasks.items()
    ]
    with ProcessPoolExecutor(args.workers) as pool:
        futures = [pool.submit(_run, job, conditions[cond], args.policy) for cond, _, job in jobs]
        done = zip(jobs, futures, strict=True)
        levels = {(cond, name): f.result() for (cond, name, _), f in done}
    names = list(tasks)
    print(f"| ablated | {' | '.join(names)} | Spearman with the tuned lr |")
    print("|---" * (len(names) + 2) + "|")
    print("| (tuned lr) | " + " | ".join(f"{tuned[n]:.0e}" for n in names) + " | |")
    for cond in conditions:
        row = [levels[(cond, n)] for n in names]
        rho = spearmanr(row, [tuned[n] for n in names]).statistic
        print(f"| {cond} | " + " | ".join(f"{v:.1e}" for v in row) + f" | {rho:.2f} |")


if __name__ == "__main__":
    main()
