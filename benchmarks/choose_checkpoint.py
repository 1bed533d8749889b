"""Choose a policy checkpoint by the criterion of docs/model-card.md ("Choosing a checkpoint").

Each candidate is a folder of `lhopt bench` outputs: CANDIDATE/validation/results.json and
CANDIDATE/validation-long/results.json, both run with `--policy FILE --optimizers
lhopt,adamw,adamw-cosine-tuned` (same seeds for every candidate). The criterion:
  1. eligible: no `validation` task below 1 over adamw, and on `validation` a geometric mean of
     at least 1.5 over adamw and 1.0 over adamw-cosine-tuned (the issue's targets);
  2. among the eligible, the largest score sqrt(G_adamw * G_tuned), G the geometric mean of the
     speedups over all tasks of both suites (capped speedups count at their cap); ties: the first
     candidate given.

Usage: python benchmarks/choose_checkpoint.py CANDIDATE_DIR [CANDIDATE_DIR ...]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from lhopt.curves.speedup import geometric_mean

SUITES = ("validation", "validation-long")
BASES = ("adamw", "adamw-cosine-tuned")


def speedups(results: dict, base: str) -> dict[str, float]:
    out = {}
    for name, task in results["tasks"].items():
        over = task["optimizers"]["lhopt"]["over"].get(base)
        if over is None or over["speedup"] is None:
            raise ValueError(f"{results['suite']}: task {name} has no lhopt speedup over {base}")
        out[name] = over["speedup"]
    return out


def evaluate(folder: Path) -> dict:
    results = {}
    for suite in SUITES:
        path = folder / suite / "results.json"
        if not path.is_file():
            raise ValueError(f"{path} is missing: run `lhopt bench --suite {suite}` into it")
        results[suite] = json.loads(path.read_text())
    val = {b: speedups(results["validation"], b) for b in BASES}
    lng = {b: speedups(results["validation-long"], b) for b in BASES}
    g_val = {b: geometric_mean(list(val[b].values())) for b in BASES}
    g_long = {b: geometric_mean(list(lng[b].values())) for b in BASES}
    g_both = {b: geometric_mean([*val[b].values(), *lng[b].values()]) for b in BASES}
    eligible = (
        min(val["adamw"].values()) >= 1.0
        and g_val["adamw"] >= 1.5
        and g_val["adamw-cosine-tuned"] >= 1.0
    )
    return {
        "candidate": str(folder),
        "policy": results["validation"].get("policy"),
        "val_adamw": g_val["adamw"],
        "val_min_adamw": min(val["adamw"].values()),
        "val_tuned": g_val["adamw-cosine-tuned"],
        "long_adamw": g_long["adamw"],
        "long_tuned": g_long["adamw-cosine-tuned"],
        "eligible": eligible,
        "score": math.sqrt(g_both["adamw"] * g_both["adamw-cosine-tuned"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidates", nargs="+", type=Path)
    args = parser.parse_args()
    rows = [evaluate(folder) for folder in args.candidates]
    print(
        "| candidate | validation: adamw (min) / tuned | validation-long: adamw / tuned "
        "| eligible | score |"
    )
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['candidate']} | {r['val_adamw']:.2f} ({r['val_min_adamw']:.2f}) / "
            f"{r['val_tuned']:.2f} | {r['long_adamw']:.2f} / {r['long_tuned']:.2f} | "
            f"{'yes' if r['eligible'] else 'no'} | {r['score']:.3f} |"
        )
    eligible = [r for r in rows if r["eligible"]]
    if not eligible:
        print("no eligible candidate")
        return
    best = max(eligible, key=lambda r: r["score"])  # max keeps the first of equal scores
    print(f"chosen: {best['candidate']} (policy {best['policy']}, score {best['score']:.3f})")


if __name__ == "__main__":
    main()
