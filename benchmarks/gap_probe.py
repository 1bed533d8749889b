"""Does a run's early generalisation gap tell where a stronger weight decay pays? (issue 19)

Reads two `benchmarks/level_search.py` results of the same suites: `START`, whose runs recorded
the gap at each evaluation ((val - mean training loss since the evaluation before) over the
validation loss's gain so far; `policy-start` records it), and `OTHER`, the same start with
something changed (e.g. `--ciao weight_decay=0.1`). Per task: the gap at the first evaluation
at or past `--share` of T (mean over seeds), and the log of OTHER's speedup over START's (over
`adamw-cosine-tuned`, geometric means over seeds); last, their Spearman correlation over all
tasks.

Usage: python benchmarks/gap_probe.py out/wd0.01-gap.json out/wd0.1-all.json --share 0.1
"""

from __future__ import annotations

import argparse
import json
import math

from scipy.stats import spearmanr

from lhopt.curves.speedup import geometric_mean


def gap_at(seeds_out: list[dict], share: float) -> float:
    """The mean over seeds of the gap at the first evaluation at or past share * T."""
    found = []
    for r in seeds_out:
        later = [g for step, g in r.get("gaps") or [] if step >= share * r["budget"]]
        if later:
            found.append(later[0])
    return sum(found) / len(found) if found else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("start")
    parser.add_argument("other")
    parser.add_argument("--share", type=float, default=0.1)
    args = parser.parse_args()
    docs = []
    for path in (args.start, args.other):
        with open(path) as f:
            docs.append(json.load(f)["suites"])
    start, other = docs
    gaps, gains = [], []
    print("| suite | task | gap | log(other / start) |")
    print("|---|---|---|---|")
    for suite, by_k in start.items():
        if suite not in other:
            continue
        (a,), (b,) = by_k.values(), other[suite].values()
        for task, seeds_out in a.items():
            g = gap_at(seeds_out, args.share)
            gain = math.log(
                geometric_mean([max(r["adamw-cosine-tuned"], 1e-3) for r in b[task]])
                / geometric_mean([max(r["adamw-cosine-tuned"], 1e-3) for r in seeds_out])
            )
            print(f"| {suite} | {task} | {g:.3f} | {gain:+.2f} |")
            if math.isfinite(g):
                gaps.append(g)
                gains.append(gain)
    rho = spearmanr(gaps, gains).statistic
    print(
        f"spearman (gap at {args.share:g} T vs the change's log gain, {len(gaps)} tasks): {rho:.2f}"
    )


if __name__ == "__main__":
    main()
