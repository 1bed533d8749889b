"""One training run of a task under a driver, recorded as the curves and metrics reports need.

A job is a plain dict so that it travels to Ray workers and into results.json unchanged:
    {"task": name, "config": {...}, "seed": int, "optimizer": name, "lr": float | None,
     "multiple": budget as a multiple of the task's T (1.0, 1.5 or 2.0)}
Its result records the validation curve, the test metrics at T (and at the end), training wall
time, the hyperparameter trajectory, and whether it diverged or crashed.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable

import torch

from lhopt.curves.drivers import Driver
from lhopt.tasks import build_task


def run_job(job: dict, make: Callable[..., Driver]) -> dict:
    """Train once with the driver `make(model, total_steps, lr, **extra)` gives and record
    everything a report needs. Raises on a crash."""
    task = build_task(job["config"], job["seed"])
    T = task.budget
    total = round(job["multiple"] * T)
    torch.manual_seed(job["seed"])
    extra = {"policy": job["policy"]} if job.get("policy") else {}  # `lhopt` with another policy
    driver = make(task.model, total, job["lr"], **extra)
    eval_steps = task.eval_steps(total)
    result = {
        "steps": [],
        "val": [],
        "hparams": {},
        "diverged": False,
        "error": None,
        "budget": T,
        "total_steps": total,
        "num_params": task.num_params(),
    }

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


def run_job_safe(job: dict, make: Callable[..., Driver]) -> dict:
    """`run_job`, with a crash turned into a result that says so."""
    start = time.perf_counter()
    try:
        result = run_job(job, make)
    except Exception as e:  # noqa: BLE001 - reported, never dropped
        result = {
            "error": f"{type(e).__name__}: {e}",
            "traceback": traceback.format_exc(),
            "steps": [],
            "val": [],
            "diverged": False,
        }
    result["job"] = job
    result["wall_time"] = time.perf_counter() - start
    return result
