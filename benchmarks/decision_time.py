"""Cost of one LearnedOptimizer decision (features + policy forward + action) on the CPU.

Usage: python benchmarks/decision_time.py [--policy default|PATH] [--decisions 200]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from lhopt import LearnedOptimizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="default")
    parser.add_argument("--decisions", type=int, default=200)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    x, y = torch.randn(32, 64), torch.randint(0, 10, (32,))
    steps = 4 * args.decisions
    opt = LearnedOptimizer(
        model.parameters(), total_steps=steps, policy=args.policy, decisions=args.decisions
    )
    times = []
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        decide = opt._taken in opt.decision_steps
        start = time.perf_counter()
        opt.step()
        if decide:
            times.append(time.perf_counter() - start)
        opt.report(train_loss=loss)
    print(
        f"{len(times)} decisions (each timed with the step it precedes): median "
        f"{1e3 * statistics.median(times):.2f} ms, p90 "
        f"{1e3 * sorted(times)[int(0.9 * len(times))]:.2f} ms; "
        f"torch threads {torch.get_num_threads()}"
    )


if __name__ == "__main__":
    main()
