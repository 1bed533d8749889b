"""What do the counterfactual labels of a branched run say? (issue 19, stage 20)

A run with `[episode] branch = true` keeps, in its checkpoint, every episode that carries a
label (DAgger's aggregate): at one decision, which of keeping the lr and scaling it by each of
`[episode] branch_factors` (and keeping it after) paid most by the end of the run
(`lhopt.meta.episode._Branches`). This reads them and reports, per family and per half of the
run: how many, the share of each choice, how often the stall rule
(`lhopt.meta.clone.stall_choices`, eps 0.01, on the same validation losses) makes the same
choice, and how often the label moves the lr toward the task's tuned lr (the reward
reference's; "keep" counts as toward when the lr is within a factor 2 of it): whether the
labels say something the stall rule does not, and whether it is the level. Where the episodes
carry `branch_stakes` (stage 32 on), a second table gives, per share of the run, the labels'
mean stakes (the spread of their branched runs' returns) and each choice's share weighed by
them, as `[ppo] clone_weight = "stakes"` weighs them.

Usage: python benchmarks/branch_labels.py runs/default-stage20b
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from lhopt.control.actions import ActionSpace
from lhopt.meta.clone import stall_choices


def rows(run: Path) -> list[dict]:
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    head = next(h for h in ActionSpace().heads if h.hparam == "lr")
    out = []
    for e in state.get("clone_data", []):
        branch = np.asarray(e["branch"])
        info = e["info"]
        if (info.get("branch_head") or "lr") != "lr":
            continue  # a weight-decay label: a choice of another head
        for at in np.flatnonzero(branch >= 0):
            val = np.asarray(e["val"], dtype=np.float64)
            stall = stall_choices(head, val, 0.01, info["outer_steps"])
            factor = head.choices[int(branch[at])]
            gap = math.log(info["tuned_lr"] / float(np.asarray(e["lr"])[at]))
            toward = abs(gap) <= math.log(2) if factor == 1.0 else gap * math.log(factor) > 0
            out.append(
                {
                    "family": info["family"],
                    "progress": at / info["outer_steps"],
                    "factor": factor,
                    "stall": head.choices[int(stall[at])] == factor,
                    "toward": toward,
                    "stakes": float(
                        np.asarray(e.get("branch_stakes", [math.nan] * len(branch)))[at]
                    ),
                }
            )
    return out


def summary(label: str, rs: list[dict], factors: list[float]) -> str:
    n = len(rs)
    if not n:
        return f"| {label} | 0 |" + " |" * (len(factors) + 2)

    def share(f) -> str:
        return f"{sum(f(r) for r in rs) / n:.2f}"

    cells = [share(lambda r, x=x: r["factor"] == x) for x in factors]
    cells += [share(lambda r: r["stall"]), share(lambda r: r["toward"])]
    return f"| {label} | {n} | " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder whose checkpoint.pt holds them")
    args = parser.parse_args()
    rs = rows(args.run)
    if not rs:
        raise SystemExit(f"{args.run}/checkpoint.pt holds no branch labels (not a branched run?)")
    factors = sorted({r["factor"] for r in rs})
    by = defaultdict(list)
    for r in rs:
        by[r["family"]].append(r)
    head = " | ".join(f"x{x:g}" for x in factors)
    print(f"| labels of | n | {head} | = stall rule | toward tuned lr |")
    print("|---|---" + "|---" * (len(factors) + 2) + "|")
    for family in sorted(by):
        print(summary(family, by[family], factors))
    print(summary("first half", [r for r in rs if r["progress"] < 0.5], factors))
    print(summary("second half", [r for r in rs if r["progress"] >= 0.5], factors))
    print(summary("all", rs, factors))
    if all(math.isfinite(r["stakes"]) for r in rs):
        print()
        print(f"| share of the run | n | mean stakes | {head} (weighed by stakes) |")
        print("|---|---|---" + "|---" * len(factors) + "|")
        for lo, hi in ((0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 1.01)):
            part = [r for r in rs if lo <= r["progress"] < hi]
            if part:
                total = max(sum(r["stakes"] for r in part), 1e-12)
                weighed = [
                    sum(r["stakes"] for r in part if r["factor"] == x) / total for x in factors
                ]
                cells = " | ".join(f"{w:.2f}" for w in weighed)
                mean = np.mean([r["stakes"] for r in part])
                print(f"| [{lo:g}, {min(hi, 1):g}) | {len(part)} | {mean:.3f} | {cells} |")


if __name__ == "__main__":
    main()
