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


def runs(doc: dict) -> tuple[dict[tuple[str, str, int], dict], list[str]]:
    """Every run of a read by (suite, task, seed), and the `--ks` value each suite's runs were
    read at (the first where a read holds several)."""
    out, ks = {}, []
    for suite, by_k in doc["suites"].items():
        for k, tasks in list(by_k.items())[:1]:
            ks.append(k)
            for name, rs in tasks.items():
                for i, r in enumerate(rs):
                    out[(suite, name, r.get("seed", i))] = r
    return out, ks


def errored(run: dict) -> bool:
    """A run that crashed (not one that diverged): it kept no curve to compare."""
    return bool(run.get("error")) or not run.get("val") or not run.get("budget")


def losses(run: dict) -> tuple[float, float, float]:
    """(first, best by T, at T) validation loss of a run that did not crash; a diverged run's
    loss at T (and best, if it never had a finite one) is inf."""
    val, steps, T = run["val"], run.get("steps") or [], run["budget"]
    finite = [x for x in val if x is not None and math.isfinite(x)]
    if not finite:
        return math.nan, math.inf, math.inf
    at = [x for s, x in zip(steps, val, strict=True) if s <= T]
    last = at[-1] if at and at[-1] is not None and math.isfinite(at[-1]) else math.inf
    return finite[0], best_by(steps, val, T), last


def share(x: float, y: float, gain: float) -> float:
    """The change from the base's loss x to the probe's y as a share of the base's gain: 0 where
    equal, +-inf where either is non-finite or the base gained nothing (the sign of the change),
    else (y - x) / gain."""
    if x == y:
        return 0.0
    if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(gain) and gain > 0):
        return math.inf if y > x else -math.inf
    return (y - x) / gain


def _mean(values: list[float]) -> float:
    """The mean of the finite shares (nan if none); the non-finite ones are counted apart."""
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def compare(base: dict, probe: dict) -> dict:
    """Per task the base-gain shares of the changes (one per seed, in seed order), their means
    over the finite ones, and the pair counts (see module doc). Pairs with a crashed run, and
    runs only one read holds, are left out and counted."""
    (a, ka), (b, kb) = runs(base), runs(probe)
    per: dict[tuple[str, str], list[tuple[float, float]]] = {}
    count = {"best": [0, 0], "T": [0, 0]}
    left = {
        "base crashed": 0,
        "probe crashed": 0,
        "base only": len(a.keys() - b.keys()),
        "probe only": len(b.keys() - a.keys()),
    }
    for key in sorted(a.keys() & b.keys()):
        if errored(a[key]) or errored(b[key]):
            left["base crashed"] += errored(a[key])
            left["probe crashed"] += errored(b[key])
            continue
        (first, best_a, at_a), (_, best_b, at_b) = losses(a[key]), losses(b[key])
        gain = first - best_a
        per.setdefault(key[:2], []).append((share(best_a, best_b, gain), share(at_a, at_b, gain)))
        for name, x, y in (("best", best_a, best_b), ("T", at_a, at_b)):
            count[name][0] += y < x
            count[name][1] += y > x
    means = {
        task: (_mean([d[0] for d in ds]), _mean([d[1] for d in ds])) for task, ds in per.items()
    }
    return {"per": per, "means": means, "count": count, "left": left, "ks": (ka, kb)}


def flagged(read: dict, bound: float) -> list[tuple[str, str]]:
    """Tasks whose mean best-loss share rose above `bound`, or with a run whose best loss the
    probe left non-finite or raised where the base gained nothing."""
    return sorted(
        task
        for task, (best, _) in read["means"].items()
        if best > bound or any(d[0] == math.inf for d in read["per"][task])
    )


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
    flags = flagged(read, bound)
    lines.append(
        f"{label}: tasks whose mean best loss rose by more than {bound:g} of its gain: "
        + (", ".join(f"{s}/{t}" for s, t in flags) or "none")
    )
    left = {k: v for k, v in read["left"].items() if v}
    if left:
        lines.append(f"{label}: runs left out: " + ", ".join(f"{k} {v}" for k, v in left.items()))
    ka, kb = read["ks"]
    lines.append(f"{label}: read at ks {sorted(set(kb))}, the base at {sorted(set(ka))}")
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
        raise SystemExit(
            f"{args.base} and {args.probe} share no task and seed with a curve in both"
        )
    flags = set(flagged(read, args.bound))
    print("per task: the best loss's change per seed (in seed order) as a share of the base's gain")
    for (suite, task), ds in sorted(read["per"].items()):
        best, at = read["means"][(suite, task)]
        cells = " ".join(f"{d[0]:+.3f}" for d in ds)
        flag = "  <- above the bound" if (suite, task) in flags else ""
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
