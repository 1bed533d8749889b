"""Cost of BatchedCIAO's step for N stacked members next to N separate CIAO optimizers.

A batched meta-training episode (`lhopt.meta.episode`) steps N members of one task with one
BatchedCIAO; run alone, each member would have a CIAO of its own. This measures the
optimizer's part of a step on both sides: `zero_grad()` and `step()`, with statistics on
(every 4 steps, as in episodes) and each member's `lr_factor` set before every step, as a
controller sets it. The gradients are fixed per member and reach the BatchedCIAO through a
backward pass, as in an episode; each CIAO, on its own copy of its member's rows, gets the
same gradients assigned (copied in, untimed). The backward pass itself is not timed.

Models: the MNIST-1D MLP 40->64->64->10 (6 tensors, 7434 parameters per member) and a
quadratic (one tensor of 300 per member). The two sides run in interleaved blocks in one
process and thread; each figure is the best block's mean, so that a shared, noisy machine
shows as little as it can. The ratio is N x CIAO's time over BatchedCIAO's.

`--lamb-power P` (default 0) puts every member under LAMB's trust ratio of that power.

Usage: python benchmarks/batched_ciao_step.py [--n 16,32] [--blocks 10] [--block-steps 20]
    [--dtype float32] [--threads 1] [--lamb-power 0]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from lhopt.optim import CIAO
from lhopt.optim.batched import BatchedCIAO

MODELS = {
    "mnist1d-mlp": [(64, 40), (64,), (64, 64), (64,), (10, 64), (10,)],
    "quadratic": [(300,)],
}


def member_hparams(n: int, gen: torch.Generator, lamb_power: float = 0.0) -> list[dict]:
    """Hyperparameters that differ by member, clipping on for most of them."""

    def draw(low: float, high: float) -> float:
        u = torch.rand((), generator=gen, dtype=torch.float64).item()
        return math.exp(math.log(low) + u * (math.log(high) - math.log(low)))

    return [
        dict(
            lr=draw(1e-4, 1e-1),
            ombeta1=draw(1e-2, 0.5),
            ombeta2=draw(1e-4, 1e-1),
            epsilon=draw(1e-10, 1e-6),
            weight_decay=draw(1e-4, 1e-1),
            clip_fraction=None if i % 4 == 3 else draw(0.3, 1.0),
            lamb_power=lamb_power,
        )
        for i in range(n)
    ]


class Side:
    """One side of the comparison: its parameters, optimizer(s) and a timed step."""

    def __init__(
        self, batched: bool, shapes, n: int, dtype: torch.dtype, seed: int, lamb_power: float
    ) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.n, self.batched, self.t = n, batched, 0
        stacked = [torch.randn((n, *s), generator=gen, dtype=dtype) for s in shapes]
        self.grads = [torch.randn((n, *s), generator=gen, dtype=dtype) for s in shapes]
        hparams = member_hparams(n, gen, lamb_power)
        if batched:
            self.params = [p.requires_grad_() for p in stacked]
            self.opt = BatchedCIAO(self.params, hparams)
            self.groups = [m.param_groups[0] for m in self.opt.members]
        else:
            self.params = [[p[i].clone().requires_grad_() for p in stacked] for i in range(n)]
            self.opts = [CIAO(ps, **h) for ps, h in zip(self.params, hparams, strict=True)]
            self.groups = [o.param_groups[0] for o in self.opts]

    def step(self) -> float:
        """One step; returns the seconds spent in zero_grad() and step()."""
        factor = 1.0 - 0.5 * (self.t % 100) / 100
        self.t += 1
        if self.batched:
            start = time.perf_counter()
            self.opt.zero_grad()
            mid = time.perf_counter()
            sum((p * g).sum() for p, g in zip(self.params, self.grads, strict=True)).backward()
            for group in self.groups:
                group["lr_factor"] = factor
            resume = time.perf_counter()
            self.opt.step()
            return time.perf_counter() - resume + mid - start
        start = time.perf_counter()
        for opt in self.opts:
            opt.zero_grad()
        mid = time.perf_counter()
        for i, ps in enumerate(self.params):
            for p, g in zip(ps, self.grads, strict=True):
                p.grad = g[i].clone()
        for group in self.groups:
            group["lr_factor"] = factor
        resume = time.perf_counter()
        for opt in self.opts:
            opt.step()
        return time.perf_counter() - resume + mid - start


def measure(
    shapes, n: int, dtype: torch.dtype, blocks: int, block_steps: int, lamb_power: float
) -> list[float]:
    """Best block mean (ms per step) of the batched side and of the N CIAOs, interleaved."""
    sides = [Side(b, shapes, n, dtype, seed=0, lamb_power=lamb_power) for b in (True, False)]
    for side in sides:  # warm up
        for _ in range(block_steps):
            side.step()
    best = [math.inf, math.inf]
    for b in range(blocks):
        order = (0, 1) if b % 2 == 0 else (1, 0)
        for k in order:
            total = sum(sides[k].step() for _ in range(block_steps))
            best[k] = min(best[k], 1e3 * total / block_steps)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", default="16,32", help="numbers of members, comma-separated")
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--block-steps", type=int, default=20)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lamb-power", type=float, default=0.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), {args.dtype}, "
        f"lamb_power {args.lamb_power}"
    )
    print()
    print("| N | model | BatchedCIAO ms/step | N x CIAO ms/step | ratio |")
    print("|---|---|---|---|---|")
    for n in (int(x) for x in args.n.split(",")):
        for name, shapes in MODELS.items():
            batched, alone = measure(
                shapes, n, dtype, args.blocks, args.block_steps, args.lamb_power
            )
            print(f"| {n} | {name} | {batched:.3f} | {alone:.3f} | {alone / batched:.1f} |")


if __name__ == "__main__":
    main()
