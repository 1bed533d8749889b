"""Does the policy find each task's learning rate? Rank correlation between the lr level `lhopt`
settles on and the lr that `adamw-cosine-tuned` picks, per task (issue 19, item 6).

Reads `results.json` files of `lhopt bench` runs that include `lhopt` and `adamw-cosine-tuned`
(e.g. the `validation` and `selection` suites). Per task and seed: the policy's level is the
geometric mean of the base lr it held at the run's evaluations (times the cut where a run
started over, `ControlSpec.overfit_gap`) times the policy's horizon factor for the run's length
and passes over its data (for a policy with a schedule under it, the
level under the shape, comparable with the tuned schedule's peak lr; the factor read from the
results' policy file as it is now, "default" the shipped one); the tuned lr
is the grid value whose T run ended lowest (`lhopt.curves.speedup.pick_lr`, as the benchmark
picks it). Per task, both are geometric means over seeds. Prints a table and, last,
`spearman (policy lr level vs tuned lr, N tasks): R`; where the runs record "adamw_lr" (the lr in
AdamW's units, `CIAO.adamw_lrs`), the level times the run's mean trust-ratio factor is a second
column and a second Spearman line: under LAMB's trust ratio the base lr is a step relative to the
weights' norms, not an lr in the tuned schedule's units.

With `--fixed`, also the ceiling of that measure in the policy's parametrisation: `lhopt bench`
runs of the do-nothing (the policy file with its lr head held at "keep", `python
benchmarks/respec_policy.py src/lhopt/policies/default.pt out/keep-K.pt --keep-margin 100
--initial lr=K`) at several fixed starts K; per task the best fixed level is the level of the K
whose runs end with the lowest mean best validation loss by T (over seeds). Prints each task's
best level, the Spearman of the best levels with the tuned lr (what a policy that found every
task's best fixed level would read above) and the Spearman of the policy's levels with them.

Usage: python benchmarks/lr_adaptation.py out/validation/results.json out/selection/results.json
    [--fixed out/keep-K1-validation/results.json out/keep-K1-selection/results.json ...]
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict

from scipy.stats import spearmanr

from lhopt.curves.drivers import TUNED_LR_GRID
from lhopt.curves.speedup import best_by, pick_lr
from lhopt.tasks import TaskConfig
from lhopt.tasks.registry import config_steps_per_epoch


def _gmean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def _cuts(run: dict, spec, total: int, horizon: float) -> list[float]:
    """Per evaluation, the factor a run that started over applies below its base lr (a power of
    `OVERFIT_CUT`): the applied lr over the base times the shape and the horizon factor, read
    where the shape is not near 0 (carried over where it is), rounded to a power of the cut."""
    from lhopt.control.controller import OVERFIT_CUT
    from lhopt.optim import schedules

    shape = schedules.get(spec.schedule)
    out, cut = [], 1.0
    for step, lr, base in zip(
        run["steps"], run["hparams"]["lr"], run["hparams"]["base_lr"], strict=True
    ):
        factor = shape(max(step, 1), total) * horizon
        if factor > 0.05 * horizon and base > 0 and lr > 0:
            cut = OVERFIT_CUT ** round(math.log(lr / (base * factor)) / math.log(OVERFIT_CUT))
        out.append(cut)
    return out


def levels(doc: dict, optimizer: str = "lhopt") -> dict[str, tuple[float, float]]:
    """task -> (policy lr level, tuned lr), each a geometric mean over seeds."""
    from lhopt.control import load_policy

    spec = load_policy(doc.get("policy") or "default").spec
    policy, finals, in_adamw_units = defaultdict(list), defaultdict(dict), defaultdict(list)
    for run in doc["runs"]:
        job = run["job"]
        hp = run.get("hparams") or {}
        base = hp.get("base_lr") or hp.get("lr")  # results written before "base_lr": lr is base
        if job["optimizer"] == optimizer and base:
            # the bench tells learned optimizers their steps per epoch
            spe = (
                config_steps_per_epoch(TaskConfig.from_dict(job["config"]))
                if spec.epochs_power
                else None
            )
            total = run.get("total_steps") or run["budget"]
            horizon = spec.horizon_factor(total, spe)
            cuts = _cuts(run, spec, total, horizon) if spec.overfit_gap else [1.0] * len(base)
            level = horizon * _gmean([x * c for x, c in zip(base, cuts, strict=True) if x > 0])
            policy[job["task"]].append(level)
            # the trust ratio's factor over the run: "adamw_lr" over the lr the update used,
            # from the first evaluation after a step (before one the ratio is not known)
            pairs = zip(run["steps"], hp.get("adamw_lr") or [], hp.get("lr") or [], strict=False)
            trust = [a / b for step, a, b in pairs if step > 0 and a > 0 and b > 0]
            if trust:
                in_adamw_units[job["task"]].append(level * _gmean(trust))
        if job["optimizer"] == "adamw-cosine" and job["multiple"] == 1.0 and job["lr"]:
            finals[(job["task"], job["seed"])][job["lr"]] = run.get("val")
    tuned = defaultdict(list)
    for (task, _seed), curves in finals.items():
        if set(curves) >= set(TUNED_LR_GRID):
            tuned[task].append(pick_lr(TUNED_LR_GRID, curves))
    return {
        t: (
            _gmean(policy[t]),
            _gmean(tuned[t]),
            _gmean(in_adamw_units[t]) if len(in_adamw_units[t]) == len(policy[t]) else None,
        )
        for t in policy
        if t in tuned
    }


def best_fixed(docs: list[dict]) -> dict[str, tuple[float, float, float | None]]:
    """task -> (level, tuned lr, level in AdamW's units) of the do-nothing run whose fixed start
    ends with the lowest mean best validation loss by T over seeds, from `lhopt bench` results
    of the do-nothing at several starts (one start per file; files of one start pooled)."""
    from lhopt.control import load_policy

    by_start: dict[float, list[dict]] = defaultdict(list)
    for doc in docs:
        by_start[load_policy(doc["policy"]).initial["lr"]].append(doc)
    if len(by_start) < 2:
        raise SystemExit(f"--fixed: runs at {len(by_start)} start(s); expected at least two")
    best: dict[str, tuple[float, tuple]] = {}
    for group in by_start.values():
        rows, losses = {}, defaultdict(list)
        for doc in group:
            rows.update(levels(doc))
            for run in doc["runs"]:
                if run["job"]["optimizer"] == "lhopt":
                    losses[run["job"]["task"]].append(
                        best_by(run["steps"], run["val"], run["total_steps"] or run["budget"])
                    )
        for task, row in rows.items():
            mean = sum(losses[task]) / len(losses[task])
            if task not in best or mean < best[task][0]:
                best[task] = (mean, row)
    return {task: row for task, (_, row) in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="results.json of lhopt bench runs")
    parser.add_argument("--optimizer", default="lhopt")
    parser.add_argument(
        "--fixed",
        nargs="+",
        default=[],
        metavar="RESULTS",
        help="results.json of the do-nothing at fixed starts (several starts): the best fixed "
        "level per task",
    )
    args = parser.parse_args()
    rows = {}
    for path in args.results:
        with open(path) as f:
            rows.update(levels(json.load(f), args.optimizer))
    print("| task | policy lr level | in AdamW's units | tuned lr |\n|---|---|---|---|")
    for task, (mine, tuned, adamw) in sorted(rows.items()):
        print(f"| {task} | {mine:.2e} | {'-' if adamw is None else f'{adamw:.2e}'} | {tuned:.0e} |")
    rho = spearmanr([v[0] for v in rows.values()], [v[1] for v in rows.values()]).statistic
    print(f"spearman (policy lr level vs tuned lr, {len(rows)} tasks): {rho:.2f}")
    known = [v for v in rows.values() if v[2] is not None]
    if len(known) > 2:  # results written before "adamw_lr" have none
        rho = spearmanr([v[2] for v in known], [v[1] for v in known]).statistic
        what = "policy lr level in AdamW's units vs tuned lr"
        print(f"spearman ({what}, {len(known)} tasks): {rho:.2f}")
    if not args.fixed:
        return
    docs = []
    for path in args.fixed:
        with open(path) as f:
            docs.append(json.load(f))
    best = best_fixed(docs)
    tasks = sorted(t for t in best if t in rows)
    print("\n| task | best fixed level | in AdamW's units | tuned lr |\n|---|---|---|---|")
    for t in tasks:
        lvl, tuned, adamw = best[t]
        print(f"| {t} | {lvl:.2e} | {'-' if adamw is None else f'{adamw:.2e}'} | {tuned:.0e} |")
    pairs = [
        ("best fixed level vs tuned lr", [best[t][0] for t in tasks], [best[t][1] for t in tasks]),
        (
            "policy lr level vs best fixed level",
            [rows[t][0] for t in tasks],
            [best[t][0] for t in tasks],
        ),
    ]
    if all(best[t][2] is not None and rows[t][2] is not None for t in tasks):
        pairs += [
            (
                "best fixed level in AdamW's units vs tuned lr",
                [best[t][2] for t in tasks],
                [best[t][1] for t in tasks],
            ),
            (
                "policy lr level vs best fixed level, both in AdamW's units",
                [rows[t][2] for t in tasks],
                [best[t][2] for t in tasks],
            ),
        ]
    for what, xs, ys in pairs:
        print(f"spearman ({what}, {len(tasks)} tasks): {spearmanr(xs, ys).statistic:.2f}")


if __name__ == "__main__":
    main()
