"""What do the counterfactual labels of a branched run say? (issue 19, stage 20)

A run with `[episode] branch = true` keeps, in its checkpoint, every episode that carries a
label (DAgger's aggregate): at one decision, whether halving the lr there (and keeping it
after) ended lower than keeping it (`lhopt.meta.episode._Branches`). This reads them and
reports, per family and overall: how many, the share that say "cut", how often the stall
rule (`lhopt.meta.clone.stall_choices`, eps 0.01, on the same validation losses) agrees, and
how often "cut" coincides with a base lr above the task's tuned one (the reward reference's):
whether the labels say something the stall rule does not, and whether it is the level.

Usage: python benchmarks/branch_labels.py runs/default-stage20
"""

from __future__ import annotations

import argparse
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
        for at in np.flatnonzero(branch >= 0):
            val = np.asarray(e["val"], dtype=np.float64)
            stall = stall_choices(head, val, 0.01, len(val))
            info = e["info"]
            lr = float(np.asarray(e["lr"])[at])
            out.append(
                {
                    "family": info["family"],
                    "progress": at / len(val),
                    "cut": head.choices[int(branch[at])] < 1.0,
                    "stall_cut": head.choices[int(stall[at])] < 1.0,
                    "above_tuned": info["tuned_lr"] is not None and lr > info["tuned_lr"],
                }
            )
    return out


def summary(label: str, rs: list[dict]) -> str:
    n = len(rs)
    if not n:
        return f"| {label} | 0 | | | |"

    def share(f) -> str:
        return f"{sum(f(r) for r in rs) / n:.2f}"

    return (
        f"| {label} | {n} | {share(lambda r: r['cut'])} "
        f"| {share(lambda r: r['cut'] == r['stall_cut'])} "
        f"| {share(lambda r: r['cut'] == r['above_tuned'])} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder whose checkpoint.pt holds them")
    args = parser.parse_args()
    rs = rows(args.run)
    if not rs:
        raise SystemExit(f"{args.run}/checkpoint.pt holds no branch labels (not a branched run?)")
    by = defaultdict(list)
    for r in rs:
        by[r["family"]].append(r)
    print("| family | labels | cut | agrees with stall | cut = lr above tuned |")
    print("|---|---|---|---|---|")
    for family in sorted(by):
        print(summary(family, by[family]))
    print(summary("first half", [r for r in rs if r["progress"] < 0.5]))
    print(summary("second half", [r for r in rs if r["progress"] >= 0.5]))
    print(summary("all", rs))


if __name__ == "__main__":
    main()
