"""Per-step cost of `lhopt` (and of CIAO alone) next to AdamW on the suites' own tasks.

The benchmark's wall-clock speedup is the step speedup divided by this ratio, so on small models,
where a step takes a millisecond or less, the controller's fixed costs (feature statistics every
4 steps, a policy decision every T/20 steps) show here first. Each optimizer trains its own copy
of the task, as `lhopt bench` runs it (the same drivers, evaluations excluded); the three run in
interleaved blocks of 20 steps in one process and one thread, in rotating order, so that the
ratios (medians of per-block ratios to the AdamW block next to it) survive a shared machine.

Usage: python benchmarks/task_overhead.py [--suite quick] [--tasks A,B] [--rounds 3] [--json F]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from lhopt import CIAO
from lhopt.bench import optimizers
from lhopt.curves.drivers import Driver
from lhopt.tasks import build_task
from lhopt.tasks.suites import SUITES

BLOCK = 20


def fresh(config, name: str, seed: int) -> list:
    """[task, driver, steps taken]: a new copy of the task and the optimizer `name` on it."""
    task = build_task(config, seed)
    if name == "ciao":
        driver = Driver(CIAO(task.model.parameters()))
    else:
        driver = optimizers.get(name).make(task.model, task.budget, 1e-3)
    return [task, driver, 0]


def measure(config, rounds: int) -> dict:
    """Median per-step ms of each optimizer and the medians of its per-block ratios to AdamW."""
    names = ["adamw", "lhopt", "ciao"]
    per_block: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):  # a round is one whole run of T steps per optimizer, on seed r
        runs = {name: fresh(config, name, r) for name in names}
        T = runs["adamw"][0].budget
        for b in range(T // BLOCK):
            for name in names[b % 3 :] + names[: b % 3]:  # rotating order
                run = runs[name]
                task, driver = run[0], run[1]
                start = time.perf_counter()
                for _ in range(BLOCK):
                    run[2] += 1
                    driver.before_step(run[2])
                    loss = task.train_loss()
                    driver.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    driver.optimizer.step()
                    driver.after_step(run[2], loss.detach())
                per_block[name].append((time.perf_counter() - start) / BLOCK)
    base = per_block["adamw"]
    return {
        "budget": T,
        "ms_per_step": {n: 1e3 * statistics.median(v) for n, v in per_block.items()},
        "ratio_to_adamw": {
            n: statistics.median(a / b for a, b in zip(v, base, strict=True))
            for n, v in per_block.items()
            if n != "adamw"
        },
        "mean_ratio_to_adamw": {
            n: sum(v) / sum(base) for n, v in per_block.items() if n != "adamw"
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="quick", choices=sorted(SUITES))
    parser.add_argument("--tasks", default=None, help="comma-separated task names of the suite")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    tasks = SUITES[args.suite]
    names = args.tasks.split(",") if args.tasks else list(tasks)
    unknown = [n for n in names if n not in tasks]
    if unknown:
        parser.error(f"unknown task(s) {unknown} in suite {args.suite!r}; known: {list(tasks)}")
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, 1 thread")
    print(
        "| task | T | AdamW ms/step | lhopt ms/step | CIAO ms/step | lhopt / AdamW "
        "(median; mean) | CIAO / AdamW |"
    )
    print("|---|---|---|---|---|---|---|")
    out = {}
    for name in names:
        m = measure(tasks[name], args.rounds)
        out[name] = m
        ms, ratio, mean = m["ms_per_step"], m["ratio_to_adamw"], m["mean_ratio_to_adamw"]
        print(
            f"| {name} | {m['budget']} | {ms['adamw']:.3f} | {ms['lhopt']:.3f} | "
            f"{ms['ciao']:.3f} | {ratio['lhopt']:.3f} ({mean['lhopt']:.3f}) | "
            f"{ratio['ciao']:.3f} |",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
