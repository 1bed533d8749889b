"""What does a tie with the bar read? The speedup over `adamw-cosine-tuned` of a run that is the
tuned schedule itself (issue 19).

The speedup (docs/evaluation.md) is t_B / T: the step at which the baseline's best-so-far reaches
X's best validation loss by T, over T. X gets no credit for reaching its best before T, so a run
identical to the tuned schedule reads s* / T, where s* is the step of the tuned run's best loss:
1 where that best comes at T (a loss that falls to the end), less where it comes earlier (a task
that overfits, or whose loss is flat at the end). This script computes that figure from the
tuned schedule's own runs (the benchmark's baseline curve cache; nothing else runs where the
cache holds them): per task, the geometric mean over seeds of s* / T as the speedup measures it,
and per suite the geometric mean over tasks, the minimum and the tasks below 0.8 and 1. It is
the figure an optimizer that matches the bar exactly would read, with no noise; beside it, with
`--results`, each task's `lhopt` speedup over the tuned schedule from `lhopt bench` reports.

Usage: python benchmarks/tie_read.py --suites selection unseen9 [--results out/readme-S ...]
    [--seeds 3] [--workers 2] [--out out/tie.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def lhopt_speedups(dirs: list[str]) -> dict[str, float]:
    """Task -> `lhopt`'s speedup over the tuned schedule (geometric mean over seeds), from the
    `results.json` of `lhopt bench` output folders."""
    out = {}
    for d in dirs:
        doc = json.loads((Path(d) / "results.json").read_text())
        for task, t in doc["tasks"].items():
            over = t["optimizers"].get("lhopt", {}).get("over", {}).get("adamw-cosine-tuned")
            if over and over.get("speedup") is not None:
                out[task] = over["speedup"]
    return out


def _runs(bench, jobs: list[dict], tasks: dict, workers: int) -> dict:
    """The tuned schedule's runs, from the curve cache; Ray starts only for runs it lacks."""
    if any(bench.cache.lookup(j) is None for j in jobs):
        bench._prefetch_data(tasks)  # each data set loaded once, before workers fetch it
        bench.start_ray(None, workers)
    return bench.run_jobs(jobs, progress=False, desc="adamw-cosine-tuned")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suites", nargs="+", required=True)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--results", nargs="*", default=[], help="`lhopt bench` output folders")
    parser.add_argument("--out", default=None, help="the figures as JSON")
    args = parser.parse_args()
    if args.seeds < 1 or args.workers < 1:
        parser.error(f"--seeds {args.seeds} --workers {args.workers}: expected at least 1 each")

    from lhopt.bench import benchmark as bench

    for d in args.results:
        if not (Path(d) / "results.json").is_file():
            parser.error(f"--results {d}: no results.json there (an `lhopt bench --out` folder)")
    ours = lhopt_speedups(args.results)
    seeds = list(range(args.seeds))
    bases = ["adamw-cosine-tuned"]
    doc = {"args": vars(args), "suites": {}}
    for suite in args.suites:
        tasks = bench.select_tasks(suite)
        phase1 = bench.plan_phase1(tasks, bases, seeds)
        results = _runs(bench, phase1, tasks, args.workers)
        results.update(
            _runs(bench, bench.plan_phase2(tasks, bases, seeds, results), tasks, args.workers)
        )
        rows = {}
        for name, config in tasks.items():
            tie = bench.task_tie(results, name, seeds, bench.task_budget(config))
            rows[name] = {**tie, "lhopt": ours.get(name)}
        summary = bench.suite_tie(list(rows.values()))
        summary["below_0.8"] = sum(
            r["speedup"] is not None and r["speedup"] < 0.8 for r in rows.values()
        )
        doc["suites"][suite] = {"tasks": rows, "summary": summary}
        print(f"\n## {suite}\n| task | a tie (per seed) | lhopt over tuned |")
        print("|---|---|---|")
        for name, r in rows.items():
            each = ", ".join("n/a" if v is None else f"{v:.2f}" for v in r["seeds"])
            tie = "n/a" if r["speedup"] is None else f"{r['speedup']:.2f}"
            mine = f"{r['lhopt']:.2f}" if r["lhopt"] is not None else "-"
            print(f"| {name} | {tie} ({each}) | {mine} |")
        print(
            f"{suite}: a tie reads {summary['geomean']:.2f} (min {summary['min']:.2f}; "
            f"{summary['below_0.8']}/{summary['tasks']} below 0.8, "
            f"{summary['below_1']}/{summary['tasks']} below 1)"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
