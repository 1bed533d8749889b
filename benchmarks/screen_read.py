"""The screen of docs/experiments.md's protocol: two `level_search.py` reads of the same tasks
and seeds (`--losses-only` is enough), paired by validation loss.

Per task it prints the mean change of the best validation loss by T and of the loss at T, each
as a share of the base run's gain (its first loss minus its best), and flags a task whose mean
best loss rose by more than `--bound` of its gain. Over every pair it counts the pairs whose
loss at T (and best loss) is lower in the probe, with a two-sided sign test. The screen passes
where more than half of the differing pairs are lower at T.

A null read (`--null`: the base run again under a change that cannot matter, e.g. a start
0.3% higher) gives the same statistics for scale: on the 58-task pool such a read flags two
tasks and reads 56% of the pairs lower at T (docs/experiments.md, "how often the screen's harm
bound trips by chance"), so a flag is chance there and only the decision on banked tasks
judges harm.

    python benchmarks/screen_read.py BASE.json PROBE.json --null NULL.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from lhopt.curves.speedup import best_by

BOUND = 0.05  # a task's mean best-loss rise, as a share of its gain, that is flagged


def runs(doc: dict) -> dict[tuple[str, str, int], dict]:
    """Every run of a read by (suite, task, seed); a read of several `--ks` keeps the first."""
    out = {}
    for suite, by_k in doc["suites"].items():
        for tasks in list(by_k.values())[:1]:
            for name, rs in tasks.items():
                for i, r in enumerate(rs):
                    out[(suite, name, r.get("seed", i))] = r
    return out


def losses(run: dict) -> tuple[float, float, float]:
    """(first, best by T, at T) validation loss of a run; inf where it kept none finite."""
    val, steps, T = run.get("val") or [], run.get("steps") or [], run.get("budget")
    finite = [x for x in val if x is not None and math.isfinite(x)]
    if not finite or not T:
        return math.nan, math.inf, math.inf
    at = [x for s, x in zip(steps, val, strict=True) if s <= T]
    last = at[-1] if at and at[-1] is not None and math.isfinite(at[-1]) else math.inf
    return finite[0], best_by(steps, val, T), last


def compare(base: dict, probe: dict) -> dict:
    """Per task the base-gain shares of the changes, and the pair counts (see module doc)."""
    a, b = runs(base), runs(probe)
    per: dict[tuple[str, str], list[tuple[float, float]]] = {}
    count = {"best": [0, 0], "T": [0, 0]}
    for key in sorted(a.keys() & b.keys()):
        (first, best_a, at_a), (_, best_b, at_b) = losses(a[key]), losses(b[key])
        gain = first - best_a
        if math.isfinite(gain) and gain > 0 and math.isfinite(best_b):
            d = ((best_b - best_a) / gain, (at_b - at_a) / gain)
        else:
            d = (0.0, 0.0) if best_a == best_b else (math.inf, math.inf)
        per.setdefault(key[:2], []).append(d)
        for name, x, y in (("best", best_a, best_b), ("T", at_a, at_b)):
            count[name][0] += y < x
            count[name][1] += y > x
    means = {
        task: (sum(d[0] for d in ds) / len(ds), sum(d[1] for d in ds) / len(ds))
        for task, ds in per.items()
    }
    return {"per": per, "means": means, "count": count}


def sign_p(lower: int, higher: int) -> float:
    """Two-sided sign test of `lower` against `higher` pairs."""
    n, k = lower + higher, min(lower, higher)
    if not n:
        return math.nan
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


def summary(label: str, read: dict, bound: float) -> list[str]:
    lines = []
    for name in ("T", "best"):
        lo, hi = read["count"][name]
        lines.append(
            f"{label} at {name}: {lo} of {lo + hi} differing pairs lower, {hi} higher "
            f"(sign test p {sign_p(lo, hi):.3g})"
        )
    flagged = sorted(t for t, m in read["means"].items() if m[0] > bound)
    lines.append(
        f"{label}: tasks whose mean best loss rose by more than {bound:g} of its gain: "
        + (", ".join(f"{s}/{t}" for s, t in flagged) or "none")
    )
    return lines


def passes(read: dict) -> bool:
    lo, hi = read["count"]["T"]
    return 2 * lo > lo + hi


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", help="level_search.py --out of the base")
    parser.add_argument("probe", help="level_search.py --out of the change, same tasks and seeds")
    parser.add_argument("--null", help="level_search.py --out of a change that cannot matter")
    parser.add_argument("--bound", type=float, default=BOUND, help="the flag's share of a gain")
    args = parser.parse_args()
    if not (math.isfinite(args.bound) and args.bound > 0):
        parser.error(f"--bound {args.bound!r}: expected a finite share > 0")
    base = json.loads(Path(args.base).read_text())
    read = compare(base, json.loads(Path(args.probe).read_text()))
    null = compare(base, json.loads(Path(args.null).read_text())) if args.null else None
    if not read["per"]:
        raise SystemExit(f"{args.base} and {args.probe} share no task and seed")
    for (suite, task), ds in sorted(read["per"].items()):
        best, at = read["means"][(suite, task)]
        cells = " ".join(f"{d[0]:+.3f}" for d in ds)
        flag = "  <- above the bound" if best > args.bound else ""
        scale = ""
        if null and (suite, task) in null["means"]:
            scale = f" | null best {null['means'][(suite, task)][0]:+.3f}"
        print(
            f"{suite:14s} {task:36s} best {cells} mean {best:+.3f} | T mean {at:+.3f}{scale}{flag}"
        )
    print(*summary("probe", read, args.bound), sep="\n")
    if null:
        print(*summary("null", null, args.bound), sep="\n")
    print(
        "screen: "
        + ("passes" if passes(read) else "does not pass")
        + " (more than half of the differing pairs lower at T)"
    )


if __name__ == "__main__":
    main()
