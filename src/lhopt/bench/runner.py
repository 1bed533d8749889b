"""Runs: one (task, seed, optimizer, lr, budget) training run as a job, executed on Ray.

A job is a plain dict so that it travels to Ray workers and into results.json unchanged:
    {"task": name, "config": {...}, "seed": int, "optimizer": name, "lr": float | None,
     "multiple": budget as a multiple of the task's T (1.0, 1.5 or 2.0)}
Its result records the validation curve, the test metrics at T (and at the end), training wall
time, the hyperparameter trajectory, and whether it diverged or crashed. A job that raises, or
whose worker dies, is returned as a result with `error` set; it never stops the other jobs.
"""

from __future__ import annotations

import math
import os
import time
import traceback
from collections.abc import Callable, Sequence

import torch

from lhopt.optim import baselines
from lhopt.tasks import build_task


def job_key(job: dict) -> tuple:
    return (job["task"], job["seed"], job["optimizer"], job["lr"], job["multiple"])


def run_job(job: dict) -> dict:
    """Train once and record everything the report needs. Raises on a crash."""
    task = build_task(job["config"], job["seed"])
    T = task.budget
    total = round(job["multiple"] * T)
    spec = baselines.get(job["optimizer"])
    torch.manual_seed(job["seed"])
    extra = {"policy": job["policy"]} if job.get("policy") else {}  # `lhopt` with another policy
    driver = spec.make(task.model.parameters(), total, job["lr"], **extra)
    eval_steps = task.eval_steps(total)
    result = {"steps": [], "val": [], "hparams": {}, "diverged": False, "error": None,
              "budget": T, "total_steps": total, "num_params": task.num_params()}  # fmt: skip

    def evaluate(step: int) -> float:
        with driver.evaluation():
            val = task.val_loss()
            if step == T:
                result["test_at_T"] = task.test_metrics()
                result["train_time_at_T"] = train_time
            if step == total:
                result["test_final"] = task.test_metrics()
        result["steps"].append(step)
        result["val"].append(val)
        for k, v in driver.hparams().items():
            result["hparams"].setdefault(k, []).append(v)
        driver.on_eval(step, val)
        return val

    train_time = 0.0
    evaluate(0)
    next_eval = 1
    for step in range(1, total + 1):
        start = time.perf_counter()
        driver.before_step(step)
        loss = task.train_loss()
        driver.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        driver.optimizer.step()
        driver.after_step(step, loss.detach())
        train_time += time.perf_counter() - start
        if next_eval < len(eval_steps) and step == eval_steps[next_eval]:
            next_eval += 1
            if not math.isfinite(evaluate(step)):
                result["diverged"] = True
                break
    result["train_time"] = train_time
    return result


def run_job_safe(job: dict) -> dict:
    """`run_job`, with a crash turned into a result that says so."""
    start = time.perf_counter()
    try:
        result = run_job(job)
    except Exception as e:  # noqa: BLE001 - reported, never dropped
        result = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(),
                  "steps": [], "val": [], "diverged": False}  # fmt: skip
    result["job"] = job
    result["wall_time"] = time.perf_counter() - start
    return result


def _ray_job(job: dict) -> dict:
    torch.set_num_threads(1)  # one core per job: jobs run side by side
    return run_job_safe(job)


def start_ray(address: str | None = None, workers: int | None = None) -> None:
    """Join the cluster at `address`, or start an embedded local instance."""
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=workers or os.cpu_count(), include_dashboard=False,
                 log_to_driver=False, configure_logging=False)  # fmt: skip


def execute(jobs: Sequence[dict], *, progress: bool = True, desc: str = "runs",
            on_result: Callable[[dict, dict], None] | None = None) -> list[dict]:  # fmt: skip
    """Run `jobs` on Ray (started with `start_ray`), one CPU each; results in job order.
    `on_result(job, result)` is called as each one arrives (to save it before the others end)."""
    import ray
    from tqdm.auto import tqdm

    if not jobs:
        return []
    remote = ray.remote(num_cpus=1, max_retries=0)(_ray_job)
    refs = {remote.remote(job): i for i, job in enumerate(jobs)}
    results: list[dict | None] = [None] * len(jobs)
    pending = list(refs)
    with tqdm(total=len(jobs), desc=desc, disable=not progress, unit="run") as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            i = refs[done[0]]
            try:
                results[i] = ray.get(done[0])
            except Exception as e:  # noqa: BLE001 - a dead worker: report it, go on
                results[i] = {"error": f"worker failed: {type(e).__name__}: {e}", "steps": [],
                              "val": [], "diverged": False, "job": jobs[i]}  # fmt: skip
            if on_result is not None:
                on_result(jobs[i], results[i])
            bar.update(1)
    return results
