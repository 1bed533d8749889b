"""Would a trial of starts early in a run pick a task's start? (issue 19)

Reads a `benchmarks/level_search.py --method policy-start` result with several `--ks` (each
run's validation curve recorded) and, per suite, prints the geometric mean over tasks of the
per-task geometric mean over seeds, over `adamw-cosine-tuned` and over `adamw`, of:
- each start alone;
- oracle: per task and seed, the start that read best over the whole run;
- trial: per task and seed, the start whose best validation loss in (0, `--at` T] is lowest;
- trial with its cost: the trial's speedup over 1 + (starts - 1) `--at` (the discarded
  branches' steps counted).

Usage: python benchmarks/trial_read.py out/trial.json [--at 0.1]
"""

from __future__ import annotations

import argparse
import json
import math

from lhopt.curves.speedup import geometric_mean

BASES = ("adamw-cosine-tuned", "adamw")


def early_best(record: dict, at: float) -> float:
    """The lowest finite validation loss at steps in (0, at T]; inf if none."""
    limit = at * record["budget"]
    vals = [
        v
        for s, v in zip(record["steps"], record["val"], strict=True)
        if 0 < s <= limit and v is not None and math.isfinite(v)
    ]
    return min(vals, default=math.inf)


def read(suite: dict, at: float) -> dict[str, dict[str, float]]:
    """Per rule (each start, oracle, trial, trial with cost), the suite's geometric means."""
    ks = sorted(suite, key=float)
    cost = 1.0 + (len(ks) - 1) * at
    per_rule: dict[str, dict[str, list[float]]] = {}
    for name in suite[ks[0]]:
        by_seed = {
            r["seed"]: {k: next(x for x in suite[k][name] if x["seed"] == r["seed"]) for k in ks}
            for r in suite[ks[0]][name]
        }
        picks: dict[str, list[dict]] = {}
        for runs in by_seed.values():
            for k in ks:
                picks.setdefault(f"start {float(k):g}", []).append(runs[k])
            picks.setdefault("oracle", []).append(
                max(runs.values(), key=lambda r: r["adamw-cosine-tuned"])
            )
            usable = [k for k in ks if runs[k].get("val")]
            trial = min(usable, key=lambda k: early_best(runs[k], at)) if usable else ks[0]
            picks.setdefault("trial", []).append(runs[trial])
        for rule, chosen in picks.items():
            for b in BASES:
                g = geometric_mean([max(r[b], 1e-3) for r in chosen])
                per_rule.setdefault(rule, {}).setdefault(b, []).append(g)
                if rule == "trial":
                    per_rule.setdefault("trial with cost", {}).setdefault(b, []).append(g / cost)
    return {
        rule: {b: geometric_mean(v) for b, v in means.items()} for rule, means in per_rule.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="a level_search.py result (policy-start, several --ks)")
    parser.add_argument("--at", type=float, default=0.1, help="the trial's share of T")
    args = parser.parse_args()
    if not 0 < args.at < 1:
        parser.error(f"--at {args.at}: expected in (0, 1)")
    with open(args.path) as f:
        doc = json.load(f)
    for suite_name, suite in doc["suites"].items():
        if len(suite) < 2:
            parser.error(f"{suite_name}: {len(suite)} start(s); a trial needs at least two")
        print(f"## {suite_name} (over {' / '.join(BASES)})")
        for rule, means in read(suite, args.at).items():
            print(f"  {rule:<18}" + " / ".join(f"{means[b]:.2f}" for b in BASES))


if __name__ == "__main__":
    main()
