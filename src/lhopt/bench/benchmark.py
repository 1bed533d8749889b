"""`lhopt bench`: run a suite with several optimizers and seeds, measure every speedup.

Plan: every optimizer X is run for its budget T; every baseline B for what docs/evaluation.md asks
(2T for a budget-independent one, T, 1.5T and 2T for a scheduled one). `adamw-cosine-tuned` runs
`adamw-cosine` at the five learning rates for T, picks the best by final validation loss, then
runs that lr for 1.5T and 2T (a second phase). Identical runs are run once; `adamw` runs come
from the baseline curve cache when it has them.
"""

from __future__ import annotations

import math
import os
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from lhopt.bench import optimizers as registry
from lhopt.bench.runner import execute, job_key
from lhopt.curves import cache
from lhopt.curves.speedup import (
    best_by,
    geometric_mean,
    pick_lr,
    seed_interval,
    speedup_budget_dependent,
    speedup_budget_independent,
    tie_speedup,
)
from lhopt.extras import start_ray
from lhopt.tasks import TaskConfig, build_task, suite, task_budget

MULTIPLES = (1.0, 1.5, 2.0)


def select_tasks(suite_name: str, names: Sequence[str] | None = None) -> dict[str, TaskConfig]:
    """The suite's tasks, or only those named (in the suite's order); unknown names fail."""
    tasks = suite(suite_name)
    if names is None:
        return tasks
    if not names:
        raise ValueError(f"no tasks given; suite {suite_name!r} has {list(tasks)}")
    for name in names:
        if name not in tasks:
            raise ValueError(f"unknown task {name!r} in suite {suite_name!r}; valid: {list(tasks)}")
    if len(set(names)) != len(names):
        raise ValueError(f"tasks {list(names)} repeat a name")
    return {k: v for k, v in tasks.items() if k in names}


def check_request(
    suite_name: str, optimizers: Sequence[str], seeds: int, tasks: Sequence[str] | None = None
) -> None:
    """Fail before any work on an unknown suite, task or optimizer, or a bad seed count."""
    select_tasks(suite_name, tasks)
    if not optimizers:
        raise ValueError(f"no optimizers given; valid: {registry.names()}")
    for name in optimizers:
        spec = registry.get(name)
        if spec.check is not None:
            spec.check()
    if len(set(optimizers)) != len(optimizers):
        raise ValueError(f"optimizers {list(optimizers)} repeat a name")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds={seeds!r} is not allowed: expected an int >= 1")


def check_out(out: str | Path) -> Path:
    """The results folder `out`, created, once it is known to take the results: fail before any
    work if a file stands in its place (or in a folder's above it) or it cannot be written."""
    out = Path(out)
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                what = "is a file" if p == out else f"is under {str(p)!r}, a file"
                raise ValueError(f"--out {str(out)!r} {what}: the results need a folder")
            break
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".lhopt-write-test.{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ValueError(
            f"--out {str(out)!r} is not a folder lhopt can write: {e.strerror or e}"
        ) from e
    for name in ("results.json", "report.md"):
        if (out / name).is_dir():
            raise ValueError(f"--out {str(out)!r} holds a folder {name!r} where a file goes")
    return out


def check_policy(policy: str, optimizers: Sequence[str]) -> str:
    """The absolute path of a loadable policy file for `lhopt` and `lhopt-trainloss`, or
    "default" (the shipped one) as it is (errors say what is wrong)."""
    from lhopt.bench.optimizers import LEARNED
    from lhopt.control import load_policy

    if not set(LEARNED) & set(optimizers):
        raise ValueError(
            f"--policy {policy!r} is for the optimizers {list(LEARNED)}, none of "
            f"which is among {list(optimizers)}"
        )
    load_policy(policy)  # missing, corrupt, another layout: a ValueError naming the file
    return policy if policy == "default" else str(Path(policy).resolve())


def _lr(optimizer: str, lr: float | None) -> float | None:
    # adamw and adamw-cosine at the default lr are the same run, whoever asked for it.
    if optimizer in ("adamw", "adamw-cosine") and lr is None:
        return registry.DEFAULT_LR
    return lr


def _job(task: str, config: TaskConfig, seed: int, optimizer: str, lr, multiple: float) -> dict:
    return {
        "task": task,
        "config": config.to_dict(),
        "seed": seed,
        "optimizer": optimizer,
        "lr": _lr(optimizer, lr),
        "multiple": multiple,
    }


def plan_phase1(tasks: dict[str, TaskConfig], optimizers: Sequence[str], seeds: Sequence[int]):
    jobs: dict[tuple, dict] = {}
    for name, config in tasks.items():
        for seed in seeds:
            for opt in optimizers:
                spec = registry.get(opt)
                if spec.tuned_from:
                    wanted = [(spec.tuned_from, lr, 1.0) for lr in spec.lr_grid]
                elif spec.budget_dependent:
                    ms = MULTIPLES if opt in registry.BASELINES else (1.0,)
                    wanted = [(opt, None, m) for m in ms]
                else:
                    m = 2.0 if opt in registry.BASELINES else 1.0
                    wanted = [(opt, None, m)]
                for o, lr, m in wanted:
                    job = _job(name, config, seed, o, lr, m)
                    jobs.setdefault(job_key(job), job)
    return list(jobs.values())


def chosen_lr(results: dict[tuple, dict], task: str, seed: int) -> float:
    """The tuned baseline's lr: best final validation loss of the T runs (`pick_lr`)."""
    spec = registry.get("adamw-cosine-tuned")
    runs = {lr: results.get((task, seed, spec.tuned_from, lr, 1.0)) for lr in spec.lr_grid}
    return pick_lr(spec.lr_grid, {lr: r.get("val") for lr, r in runs.items() if r})


def plan_phase2(tasks, optimizers, seeds, results) -> list[dict]:
    if "adamw-cosine-tuned" not in optimizers:
        return []
    jobs = []
    for name, config in tasks.items():
        for seed in seeds:
            lr = chosen_lr(results, name, seed)
            for m in MULTIPLES[1:]:
                job = _job(name, config, seed, "adamw-cosine", lr, m)
                if job_key(job) not in results:
                    jobs.append(job)
    return jobs


def run_jobs(
    jobs: list[dict], *, progress: bool, desc: str, use_cache: bool = True
) -> dict[tuple, dict]:
    """Results by job key: from the cache where possible (and allowed), the rest on Ray."""
    out, todo = {}, []
    for job in jobs:
        hit = cache.lookup(job) if use_cache else None
        if hit is not None:
            out[job_key(job)] = hit
        else:
            todo.append(job)
    for job, result in zip(
        todo, execute(todo, progress=progress, desc=desc, on_result=cache.store), strict=True
    ):
        out[job_key(job)] = result
    return out


def _prefetch_data(tasks: dict[str, TaskConfig]) -> None:
    """Load each data set once in the driver, so workers never fetch it side by side."""
    seen = set()
    for config in tasks.values():
        if config.family not in seen:
            seen.add(config.family)
            build_task(config, 0)


# ---------------------------------------------------------------------------------------------
# From runs to speedups
# ---------------------------------------------------------------------------------------------


def main_run(results, task, seed, opt) -> dict | None:
    """The run that stands for `opt`'s own T-budget result (and its curve in the figures)."""
    spec = registry.get(opt)
    if spec.tuned_from:
        return results.get((task, seed, spec.tuned_from, chosen_lr(results, task, seed), 1.0))
    if spec.budget_dependent or opt not in registry.BASELINES:
        return results.get((task, seed, opt, _lr(opt, None), 1.0))
    return results.get((task, seed, opt, _lr(opt, None), 2.0))


def x_outcome(run: dict | None, T: int) -> dict:
    """L_X, whether X ended finite at T, its test metrics and training time at T."""
    if run is None or run.get("error"):
        return {"status": "crashed", "error": (run or {}).get("error", "missing run")}
    steps, val = run["steps"], run["val"]
    at_t = [v for s, v in zip(steps, val, strict=True) if s <= T]
    finite_end = bool(at_t) and math.isfinite(at_t[-1]) and steps[len(at_t) - 1] == T
    return {
        "status": "ok" if finite_end else "diverged",
        "L": best_by(steps, val, T),
        "test": run.get("test_at_T"),
        "time_T": run.get("train_time_at_T"),
        "cached": bool(run.get("cached")),
    }


def baseline_speedup(results, task, seed, base, target, T) -> dict:
    spec = registry.get(base)
    if spec.budget_dependent:
        if spec.tuned_from:
            opt, lr = spec.tuned_from, chosen_lr(results, task, seed)
        else:
            opt, lr = base, _lr(base, None)
        runs = {m: results.get((task, seed, opt, lr, m)) for m in MULTIPLES}
        if any(r is None or r.get("error") for r in runs.values()):
            return {"error": "baseline run missing or crashed"}
        timed = not any(r.get("cached") for r in runs.values())
        s = speedup_budget_dependent(
            {m: (r["steps"], r["val"]) for m, r in runs.items()}, target, T
        )
        per_step = None
        if s.t_b is not None:
            m = min((m for m in MULTIPLES if m * T >= s.t_b), default=2.0)
            per_step = runs[m]["train_time"] / runs[m]["total_steps"]
    else:
        r = results.get((task, seed, base, _lr(base, None), 2.0))
        if r is None or r.get("error"):
            return {"error": "baseline run missing or crashed"}
        s = speedup_budget_independent(r["steps"], r["val"], target, T)
        per_step = r["train_time"] / r["total_steps"]
        timed = not r.get("cached")
    # A cached run was timed in another invocation, under whatever load the machine had then:
    # its time is not comparable side by side, so no wall-clock speedup is claimed from it.
    if not timed:
        per_step = None
    to_target = None if s.t_b is None or not timed else s.t_b * per_step
    return {
        "speedup": s.value,
        "lower_bound": s.lower_bound,
        "t_b": s.t_b,
        "untimed": not timed,
        "base_time_to_target": to_target,
    }


def _wall_speedup(sp: dict, x: dict) -> float | None:
    """Baseline's time to reach L_X over X's time for T steps; None unless both were timed in
    this invocation (see baseline_speedup). A lower-bound speedup stands for itself."""
    if x["cached"] or sp["untimed"]:
        return None
    if sp["base_time_to_target"] and x["time_T"]:
        return sp["base_time_to_target"] / x["time_T"]
    return sp["speedup"] if sp["lower_bound"] else None


def analyse(tasks, optimizers, seeds, results) -> dict:
    bases = [b for b in optimizers if b in registry.BASELINES]
    per_task: dict[str, dict] = {}
    for name, config in tasks.items():
        T = task_budget(config)
        entry = {"config": config.to_dict(), "budget": T, "optimizers": {}}
        for x in optimizers:
            seeds_out = []
            for seed in seeds:
                out = x_outcome(main_run(results, name, seed, x), T)
                out["seed"] = seed
                out["over"] = {}
                for b in bases:
                    if b == x:
                        continue
                    if out["status"] != "ok":
                        out["over"][b] = {
                            "speedup": 0.0,
                            "lower_bound": False,
                            "t_b": None,
                            "wall_speedup": 0.0,
                        }
                        continue
                    sp = baseline_speedup(results, name, seed, b, out["L"], T)
                    if "error" not in sp:
                        sp["wall_speedup"] = _wall_speedup(sp, out)
                    out["over"][b] = sp
                seeds_out.append(out)
            entry["optimizers"][x] = {"seeds": seeds_out, **_task_summary(seeds_out, bases, x)}
        if "adamw-cosine-tuned" in bases:
            entry["tie"] = task_tie(results, name, seeds, T)
        per_task[name] = entry
    out = {"tasks": per_task, "summary": _suite_summary(per_task, optimizers, bases)}
    if "adamw-cosine-tuned" in bases:
        out["tie"] = suite_tie([t["tie"] for t in per_task.values()])
    return out


def suite_tie(task_ties: list[dict]) -> dict:
    """A suite's tie from its tasks' (`task_tie`): the geometric mean, the minimum and the
    tasks below 1, over the tasks whose runs were there."""
    ties = [t["speedup"] for t in task_ties if t["speedup"] is not None]
    return {
        "geomean": geometric_mean(ties) if ties else None,
        "min": min(ties) if ties else None,
        "below_1": sum(v < 1 for v in ties),
        "tasks": len(ties),
    }


def task_tie(results: dict, name: str, seeds, T: int) -> dict:
    """What a run identical to `adamw-cosine-tuned` reads over it on this task, per seed and
    as their geometric mean (`tie_speedup`; None for a seed whose runs are missing)."""
    spec = registry.get("adamw-cosine-tuned")
    values = []
    for seed in seeds:
        lr = chosen_lr(results, name, seed)
        runs = {m: results.get((name, seed, spec.tuned_from, lr, m)) for m in MULTIPLES}
        ok = not any(r is None or r.get("error") for r in runs.values())
        values.append(
            tie_speedup({m: (r["steps"], r["val"]) for m, r in runs.items()}, T).value
            if ok
            else None
        )
    ok = [v for v in values if v is not None]
    return {"seeds": values, "speedup": geometric_mean(ok) if ok else None}


def _task_summary(seeds_out, bases, x) -> dict:
    over = {}
    for b in bases:
        if b == x:
            continue
        vals = [s["over"][b].get("speedup") for s in seeds_out]
        walls = [s["over"][b].get("wall_speedup") for s in seeds_out]
        ok = [v for v in vals if v is not None]
        ok_w = [v for v in walls if v is not None]
        over[b] = {
            "speedup": geometric_mean(ok) if ok else None,
            "wall_speedup": geometric_mean(ok_w) if ok_w else None,
            "lower_bound": any(s["over"][b].get("lower_bound") for s in seeds_out),
            "errors": sum("error" in s["over"][b] for s in seeds_out),
        }
    tests = [s["test"] for s in seeds_out if s.get("test")]
    test_mean = {k: sum(t[k] for t in tests) / len(tests) for k in tests[0]} if tests else None
    status = [s["status"] for s in seeds_out]
    return {"over": over, "test_at_T": test_mean, "status": status}


def _suite_summary(per_task, optimizers, bases) -> dict:
    summary = {}
    for x in optimizers:
        summary[x] = {}
        for b in bases:
            if b == x:
                continue
            vals = [t["optimizers"][x]["over"][b]["speedup"] for t in per_task.values()]
            walls = [t["optimizers"][x]["over"][b]["wall_speedup"] for t in per_task.values()]
            ok = [v for v in vals if v is not None]
            ok_w = [v for v in walls if v is not None]
            summary[x][b] = {
                "geomean": geometric_mean(ok) if ok else None,
                "min": min(ok) if ok else None,
                "below_1": sum(v < 1 for v in ok),
                "tasks": len(ok),
                "lower_bounds": sum(
                    t["optimizers"][x]["over"][b]["lower_bound"] for t in per_task.values()
                ),
                "wall_geomean": geometric_mean(ok_w) if ok_w else None,
                "interval": seed_interval(
                    [
                        [
                            s["over"][b]["speedup"]
                            for s in t["optimizers"][x]["seeds"]
                            if s["over"][b].get("speedup") is not None
                        ]
                        for t in per_task.values()
                    ]
                ),
            }
    return summary


def run_benchmark(
    suite_name: str,
    optimizers: Sequence[str],
    seeds: int,
    *,
    address: str | None = None,
    workers: int | None = None,
    progress: bool = True,
    use_cache: bool = True,
    policy: str | None = None,
    tasks: Sequence[str] | None = None,
) -> dict:
    """Run the whole benchmark and return the results document (see docs/bench.md).
    `policy`: a policy file for `lhopt` instead of the shipped default (e.g. a checkpoint);
    `tasks`: only these tasks of the suite (default: all)."""
    from lhopt.bench.optimizers import LEARNED

    check_request(suite_name, optimizers, seeds, tasks)
    if policy is not None:
        policy = check_policy(policy, optimizers)
    tasks = select_tasks(suite_name, tasks)
    seed_list = list(range(seeds))
    started = time.perf_counter()
    _prefetch_data(tasks)
    start_ray(address, workers)
    jobs = plan_phase1(tasks, optimizers, seed_list)
    for job in jobs:
        if policy is not None and job["optimizer"] in LEARNED:
            job["policy"] = policy
    results = run_jobs(jobs, progress=progress, desc=f"{suite_name}: runs", use_cache=use_cache)
    results.update(
        run_jobs(
            plan_phase2(tasks, optimizers, seed_list, results),
            progress=progress,
            desc=f"{suite_name}: tuned lr",
            use_cache=use_cache,
        )
    )
    analysis = analyse(tasks, optimizers, seed_list, results)
    runs = list(results.values())
    compute = defaultdict(int)
    for r in runs:
        if not r.get("cached"):
            compute[r["job"]["optimizer"]] += r.get("total_steps", 0) or 0
    return {
        "schema": 1,
        "suite": suite_name,
        "optimizers": list(optimizers),
        "baselines": [b for b in optimizers if b in registry.BASELINES],
        "seeds": seed_list,
        "policy": policy or "default",
        "wall_time_s": time.perf_counter() - started,
        "runs": runs,
        "errors": [{"job": r["job"], "error": r["error"]} for r in runs if r.get("error")],
        "steps_run": dict(compute),
        **analysis,
    }
