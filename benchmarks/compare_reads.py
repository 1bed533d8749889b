"""Set `level_search.py` reads side by side: per suite and task, the geometric mean over seeds of
the speedup over `adamw-cosine-tuned`, one column per file, and each suite's geometric mean
over its tasks (issue 19's read 1), then each later file's suite figure over the first's with
its 90% interval, each read's seeds resampled (`lhopt.curves.speedup.ratio_interval`), per
suite and over every task of the suites pooled: an interval that holds 1 does not tell the
two apart. Where the reads ran the same seeds, also the paired ratio (`paired_ratio`: per task
and seed, one read's speedup over the other's, against the same baseline curve; its interval
resamples tasks) and the share of task-seed pairs where the later read's best validation loss
by T is the lower (ties left out): the decision statistics of docs/experiments.md's paired
protocol, whose verdict ends the pooled paired line.

    python benchmarks/compare_reads.py out/base-unseen.json out/s53-unseen.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from lhopt.curves.speedup import (
    best_by,
    geometric_mean,
    paired_ratio,
    ratio_interval,
    suite_figure,
)

FLOOR = 1e-3  # level_search's floor for a speedup of 0 (a run that never reached the target)


def _speedup(run: dict) -> float | None:
    """The run's speedup over adamw-cosine-tuned, floored; None for a `--losses-only` read."""
    x = run.get("adamw-cosine-tuned")
    return None if x is None else max(x, FLOOR)


def by_seed(doc: dict, suite: str) -> dict[str, dict[int, tuple[float, float]]]:
    """Per task and seed: (speedup over adamw-cosine-tuned floored, None without baselines;
    best validation loss by T, nan where the read kept no curve)."""
    rows = next(iter(doc["suites"].get(suite, {}).values()), {})
    out = {}
    for name, runs in rows.items():
        out[name] = {}
        for i, r in enumerate(runs):
            loss = math.nan
            if r.get("val") and r.get("budget"):
                loss = best_by(r["steps"], r["val"], r["budget"])
            out[name][r.get("seed", i)] = (_speedup(r), loss)
    return out


def per_seed(doc: dict, suite: str) -> dict[str, list[float]]:
    """Per task, its seeds' speedups (tasks read without baselines left out)."""
    out = {name: [x for x, _ in seeds.values()] for name, seeds in by_seed(doc, suite).items()}
    return {name: v for name, v in out.items() if None not in v}


def paired(a: dict, b: dict) -> tuple[list[list[float]], list[list[float]], int, int]:
    """The two reads' speedups on the tasks and seeds both ran (tasks either read without
    baselines left out), and of the task-seed pairs whose losses differ, how many the second
    read's is the lower, and how many there are."""
    xs, ys, lower, differ = [], [], 0, 0
    for name in a:
        seeds = sorted(set(a[name]) & set(b.get(name, {})))
        if not seeds:
            continue
        x, y = [a[name][s][0] for s in seeds], [b[name][s][0] for s in seeds]
        if None not in x and None not in y:
            xs.append(x)
            ys.append(y)
        for s in seeds:
            la, lb = a[name][s][1], b[name][s][1]
            if math.isfinite(la) and math.isfinite(lb) and la != lb:
                differ += 1
                lower += lb < la
    return xs, ys, lower, differ


def verdict(band: tuple[float, float] | None, lower: int, differ: int) -> str:
    """The paired protocol's criterion (docs/experiments.md): better where the interval lies
    above 1 and the later read's loss is the lower on more than half the differing pairs,
    worse where the interval lies below 1, else not told apart."""
    if band and band[0] > 1 and 2 * lower > differ:
        return "better"
    if band and band[1] < 1:
        return "worse"
    return "not told apart"


def sign_p(lower: int, differ: int) -> float:
    """One-sided sign test: the chance of `lower` or more of `differ` pairs lower by luck."""
    return sum(math.comb(differ, k) for k in range(lower, differ + 1)) / 2**differ


def _paired_line(label: str, a: dict, b: dict, judge: bool = False) -> str:
    xs, ys, lower, differ = paired(a, b)
    share = (
        f"{lower}/{differ} pairs lower (sign test p {sign_p(lower, differ):.3g})"
        if differ
        else "no losses to compare"
    )
    if not xs:
        return f"  {label} paired: no speedups; best validation loss {share}"
    point, band = paired_ratio(xs, ys)
    spread = f" [{band[0]:.2f}, {band[1]:.2f}]" if band else ""
    line = f"  {label} paired: {point:.2f}{spread}; best validation loss {share}"
    return line + (f": {verdict(band, lower, differ)}" if judge else "")


def per_task(doc: dict, suite: str) -> dict[str, float]:
    return {name: geometric_mean(v) for name, v in per_seed(doc, suite).items()}


def _ratio_line(label: str, a: list[list[float]], b: list[list[float]]) -> str:
    ratio = suite_figure(b) / suite_figure(a)
    band = ratio_interval(a, b)
    spread = f" [{band[0]:.2f}, {band[1]:.2f}]" if band else ""
    return f"  {label}: {ratio:.2f}{spread} ({len(a)} tasks)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reads", nargs="+", help="level_search.py --out files")
    args = parser.parse_args()
    docs = [json.loads(Path(p).read_text()) for p in args.reads]
    pooled: dict[str, tuple[list, list]] = {p: ([], []) for p in args.reads[1:]}
    pooled_pairs: dict[str, tuple[dict, dict]] = {p: ({}, {}) for p in args.reads[1:]}
    for suite in docs[0]["suites"]:
        columns = [per_task(d, suite) for d in docs]
        print(f"## {suite}")
        for name in columns[0]:
            cells = "  ".join(f"{c[name]:.2f}" if name in c else "  -  " for c in columns)
            print(f"  {name:45s} {cells}")
        cells = "  ".join(
            f"{geometric_mean(list(c.values())):.2f}" if c else "  -  " for c in columns
        )
        print(f"  {'suite':45s} {cells}")
        first = per_seed(docs[0], suite)
        for path, doc in zip(args.reads[1:], docs[1:], strict=True):
            seeds = per_seed(doc, suite)
            names = [n for n in first if n in seeds]
            if names:
                a, b = [first[n] for n in names], [seeds[n] for n in names]
                pooled[path][0].extend(a)
                pooled[path][1].extend(b)
                print(_ratio_line(f"{path} over {args.reads[0]}", a, b))
            mine, theirs = by_seed(docs[0], suite), by_seed(doc, suite)
            print(_paired_line(f"{path} over {args.reads[0]}", mine, theirs))
            pooled_pairs[path][0].update({f"{suite}/{n}": v for n, v in mine.items()})
            pooled_pairs[path][1].update({f"{suite}/{n}": v for n, v in theirs.items()})
    if len(docs[0]["suites"]) > 1:
        print("## every task of the suites pooled")
        for path, (a, b) in pooled.items():
            if a:
                print(_ratio_line(f"{path} over {args.reads[0]}", a, b))
            if pooled_pairs[path][0]:
                label = f"{path} over {args.reads[0]}"
                print(_paired_line(label, *pooled_pairs[path], judge=True))


if __name__ == "__main__":
    main()
