"""Which tensors CIAO's `lamb_free_below` takes off the trust ratio, task by task (issue 19).

Builds each task of the given suites at each seed, takes its first gradient (one training
batch) and applies the rule as CIAO does at its first step (`lhopt.optim.ciao.lamb_free_tensors`,
one param group holding the model, as the benchmark's `LearnedOptimizer` has). A task where
nothing is freed runs exactly as without the option, so its benchmark results carry over.

Usage: python benchmarks/lamb_free_census.py [--fraction 0.3333] [--seeds 3] [--suites S ...]
"""

from __future__ import annotations

import argparse

from lhopt.optim.ciao import is_row_sparse, lamb_free_tensors
from lhopt.tasks.registry import build_task
from lhopt.tasks.suites import SUITES


def freed(config, seed: int, fraction: float) -> list[str]:
    task = build_task(config, seed)
    named = [(n, p) for n, p in task.model.named_parameters() if p.requires_grad]
    task.model.zero_grad()
    task.train_loss().backward()
    with_grad = [(n, p) for n, p in named if p.grad is not None]
    params = [p for _, p in with_grad]
    free = lamb_free_tensors(params, [is_row_sparse(p.grad) for p in params], fraction)
    return [f"{n} {tuple(p.shape)}" for (n, p), f in zip(with_grad, free, strict=True) if f]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fraction", type=float, default=1 / 3)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--suites", nargs="+", default=list(SUITES), choices=list(SUITES))
    args = parser.parse_args()
    for suite in args.suites:
        touched = 0
        for name, config in SUITES[suite].items():
            per_seed = [freed(config, s, args.fraction) for s in range(args.seeds)]
            if any(per_seed):
                touched += 1
                print(f"{suite} {name}: " + " | ".join(", ".join(f) or "-" for f in per_seed))
        print(f"{suite}: {touched} of {len(SUITES[suite])} tasks touched")


if __name__ == "__main__":
    main()
