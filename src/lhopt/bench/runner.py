"""Jobs (one training run each, `lhopt.curves.run`) executed on Ray, optimizers by name.

A job that raises is returned as a result with `error` set; it never stops the other jobs. A job
whose worker process dies (killed, out of memory) is run once more, from the start; if that one
dies too, it is returned with `error` set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from lhopt.bench import optimizers
from lhopt.curves import run
from lhopt.extras import require
from lhopt.tasks import TaskConfig
from lhopt.tasks.registry import config_steps_per_epoch

WORKER_DEATH_RETRIES = 1  # runs of a job again after its worker process died


def job_key(job: dict) -> tuple:
    return (job["task"], job["seed"], job["optimizer"], job["lr"], job["multiple"])


def _make(job: dict):
    """The driver factory of `job`'s optimizer; a learned one is told the task's steps per
    epoch, as a user who knows their data loader's length tells `LearnedOptimizer` (counted
    when the run starts, so that a failure is the job's error result)."""
    make = optimizers.get(job["optimizer"]).make
    if job["optimizer"] not in optimizers.LEARNED:
        return make

    def told(*args, **kwargs):
        spe = config_steps_per_epoch(TaskConfig.from_dict(job["config"]))
        return make(*args, steps_per_epoch=spe, **kwargs)

    return told


def run_job(job: dict) -> dict:
    """Run `job` with the optimizer its name gives; raises on a crash."""
    return run.run_job(job, _make(job))


def run_job_safe(job: dict) -> dict:
    """`run_job`, with a crash turned into a result that says so."""
    return run.run_job_safe(job, _make(job))


def _ray_job(job: dict) -> dict:
    torch.set_num_threads(1)  # one core per job: jobs run side by side
    return run_job_safe(job)


def execute(
    jobs: Sequence[dict],
    *,
    progress: bool = True,
    desc: str = "runs",
    on_result: Callable[[dict, dict], None] | None = None,
) -> list[dict]:
    """Run `jobs` on Ray (started with `start_ray`), one CPU each; results in job order.
    `on_result(job, result)` is called as each one arrives (to save it before the others end)."""
    ray = require("ray", "bench")
    tqdm = require("tqdm.auto", "bench").tqdm

    if not jobs:
        return []
    # Ray retries a task whose worker died (not one that raised: run_job_safe catches those).
    remote = ray.remote(num_cpus=1, max_retries=WORKER_DEATH_RETRIES)(_ray_job)
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
                results[i] = {
                    "error": f"worker failed: {type(e).__name__}: {e}",
                    "steps": [],
                    "val": [],
                    "diverged": False,
                    "job": jobs[i],
                }
            if on_result is not None:
                on_result(jobs[i], results[i])
            bar.update(1)
    return results
