"""Can an in-run search find a task's lr level? Hand-written searches, and a policy (issue 19).

`benchmarks/lr_probe.py --fixed-start` finds that a run's features, from a fixed starting lr, do
not tell the task's tuned lr (no better than one level for every task); a level has to be found
by acting. Two searches with AdamW alone, and a policy from another start (`--method`):
- `range-test`, Smith's lr range test where the warm-up is: the lr rises geometrically from `--lo`
  to `--hi` over the first `--frac` of the budget T while an exponential average of the training
  loss is tracked; the test ends when the average is back above where it started, or, a decade
  past its minimum, has climbed back `--rise` of the way from the minimum to the start (either by
  more than three standard deviations of the average), or at `--frac` T. Weights and AdamW's
  state return to the snapshot at the average's minimum, and the rest of the run is a cosine from
  lr* / k to 0 at T (lr* the lr at that minimum; k from `--ks`). The steps spent past the minimum
  count against the run, as they would for a user.
- `policy-start`: the shipped policy (or `--policy`) through the benchmark's `LearnedOptimizer`
  driver, started at the lr k instead of CIAO's default 1e-3 (and at `--ciao`'s other initial
  hyperparameters; with `--wd-below E0 WD`, at a weight decay of WD where the run passes over
  its data fewer than E0 times; with `--no-decay-vectors`, biases and norms in a group without
  weight decay); its level is its base lr's geometric mean.
- `stall-decay`: warm-up + cosine at a level that starts at lr0 (from `--ks`) and halves at each
  of the 19 points where the controller would decide (every 5% of T) if the period's gain in best
  validation loss was under `--eps` of all the gain so far (points past `--until` T halve
  nothing; with `--confirm`, only where the period's mean cosine between each gradient and the
  step before it is above 0: the steps overshoot; with `--overfit`, only where the period's mean
  training loss still fell by more than `--eps` of all its fall so far: the run fits its data
  and stopped generalising (with both flags, where either holds); with `--climb c`, stalls are
  ignored and the level halves where that mean is above c and doubles where it is below -c);
  its level is reported as its geometric mean over the run.
- `prodigy-cosine`: Prodigy (package `prodigyopt`) at lr k times the warm-up + cosine shape,
  betas (0.9, 0.99), decoupled weight decay 1e-2, `safeguard_warmup`; its level is d k at the
  end (d, Prodigy's distance estimate, only grows).

With `--relative`, a value of `--ks` for `policy-start` and `stall-decay` is a multiple of the
task's tuned lr (per seed) rather than an lr: from the tuned lr itself (1), what the moves cost.

For each task of the suites, seed and value of `--ks`, the speedup over `adamw-cosine-tuned` (its
runs from the benchmark's cache, run when missing) and over `adamw`, as `lhopt bench` measures
them, and the level found beside the tuned lr.

Usage: python benchmarks/level_search.py --method range-test --suites validation-long selection
    --ks 1 3 10 30
"""

from __future__ import annotations

import argparse
import json
import math
import os
from concurrent.futures import ProcessPoolExecutor

import torch

from lhopt.bench.optimizers import LearnedDriver
from lhopt.curves.drivers import ADAMW_KW, Driver
from lhopt.optim import schedules
from lhopt.tasks import TaskConfig
from lhopt.tasks.registry import config_steps_per_epoch


class RangeTestCosine(Driver):
    """AdamW: a geometric lr range test in place of the warm-up, then a cosine from lr* / k."""

    def __init__(
        self,
        params,
        budget: int,
        k: float,
        frac: float,
        lo: float,
        hi: float,
        rise: float,
        beta: float = 0.9,
    ) -> None:
        self.params = [p for p in params if p.requires_grad]
        super().__init__(torch.optim.AdamW(self.params, lr=lo, **ADAMW_KW))
        self.budget, self.k, self.lo, self.hi, self.rise, self.beta = budget, k, lo, hi, rise, beta
        self.test_steps = max(2, round(frac * budget))
        self.burn_in = max(1, self.test_steps // 10)
        self.ema = None
        self.first = None
        self.best = math.inf
        self.best_lr = lo
        self.searching = True
        self.start = None  # step from which the cosine runs
        self.peak = None
        self.lr = lo
        self._save()  # the start, in case the loss is not finite before any minimum

    def _test_lr(self, step: int) -> float:
        return self.lo * (self.hi / self.lo) ** min(1.0, (step - 1) / (self.test_steps - 1))

    def before_step(self, step: int) -> None:
        if self.searching:
            self.lr = self._test_lr(step)
        else:
            span = max(1, self.budget - self.start)
            self.lr = (
                self.peak * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - self.start) / span)))
            )
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr

    def _save(self) -> None:
        self.snapshot = (
            [p.detach().clone() for p in self.params],
            {
                k: {n: v.clone() if torch.is_tensor(v) else v for n, v in s.items()}
                for k, s in self.optimizer.state.items()
            },
        )

    def _end_search(self, step: int) -> None:
        params, state = self.snapshot
        with torch.no_grad():
            for p, q in zip(self.params, params, strict=True):
                p.copy_(q)
        self.optimizer.state.clear()
        self.optimizer.state.update(state)
        self.searching = False
        self.start = step
        self.peak = self.best_lr / self.k

    def after_step(self, step: int, loss: torch.Tensor) -> None:
        if not self.searching:
            return
        value = float(loss)
        if not math.isfinite(value):
            self._end_search(step)
            return
        if self.ema is None:
            self.ema, self.var = value, 0.0
        else:
            self.var = self.beta * self.var + (1 - self.beta) * (value - self.ema) ** 2
            self.ema = self.beta * self.ema + (1 - self.beta) * value
        if step < self.burn_in:  # the lr is still tiny: the average settles at the start's level
            return
        if self.first is None:
            self.first = self.ema
        if self.ema < self.best:
            self.best, self.best_lr = self.ema, self.lr
            self._save()
        # Back above where it started, or climbed back `rise` of the way a decade past the
        # minimum (nearer the minimum, a climb that size is the noise of the batches); either by
        # more than the average's own noise.
        noise = 3 * math.sqrt(self.var * (1 - self.beta) / (1 + self.beta))  # 3 sd of the average
        back = self.ema > self.first + noise
        climbed = self.lr >= 10 * self.best_lr and self.ema - self.best > max(
            self.rise * (self.first - self.best), noise
        )
        if back or climbed or step >= self.test_steps:
            self._end_search(step)

    def hparams(self) -> dict[str, float]:
        return {"lr": self.lr}


class StallDecayCosine(Driver):
    """AdamW: warm-up + cosine from a high `lr0`, the level halved (`factor`) at each of
    `decisions` evenly spaced points where the best validation loss of the period that ended
    improved on the best before it by less than `eps` of all the improvement so far."""

    def __init__(
        self,
        params,
        budget: int,
        lr0: float,
        eps: float,
        until: float = 1.0,
        confirm: bool = False,
        climb: float | None = None,
        overfit: bool = False,
        factor: float = 0.5,
        decisions: int = 20,
    ) -> None:
        self.params = [p for p in params if p.requires_grad]
        super().__init__(torch.optim.AdamW(self.params, lr=lr0, **ADAMW_KW))
        self.budget, self.level, self.eps, self.factor = budget, lr0, eps, factor
        self.confirm = confirm or climb is not None
        self.climb = climb
        self.overfit = overfit
        self._train_sum, self._train_n = 0.0, 0
        self._train_first = self._train_last = None  # the first step's loss, the last period's mean
        self._prev = self._step = None
        self._cos_sum, self._cos_n = 0.0, 0
        self.points = {
            round(budget * i / decisions) for i in range(1, decisions) if i / decisions <= until
        }
        self.first = None
        self.best = math.inf
        self.best_at_last = None
        self.lr = 0.0
        self.peak = lr0  # the level's geometric mean so far: the search's answer
        self._log_sum = 0.0

    def after_step(self, step: int, loss: torch.Tensor) -> None:
        """cos(g_t, d_{t-1}), the gradient against the step before it: above 0 the steps
        overshoot (the loss's hypergradient in the lr is positive), below 0 they fall short."""
        if self.overfit:  # the period's mean training loss, which only `overfit` reads
            value = float(loss)
            if math.isfinite(value):
                self._train_first = value if self._train_first is None else self._train_first
                self._train_sum += value
                self._train_n += 1
        if not self.confirm:
            return
        with torch.no_grad():
            now = [p.detach().clone() for p in self.params]
            if self._prev is not None and self._step is not None:
                dot = gg = dd = 0.0
                for p, d in zip(self.params, self._step, strict=True):
                    if p.grad is not None:
                        dot += float((p.grad * d).sum())
                        gg += float((p.grad * p.grad).sum())
                        dd += float((d * d).sum())
                if gg > 0 and dd > 0:
                    self._cos_sum += dot / math.sqrt(gg * dd)
                    self._cos_n += 1
            if self._prev is not None:
                self._step = [a - b for a, b in zip(now, self._prev, strict=True)]
            self._prev = now

    def on_eval(self, step: int, val_loss: float) -> None:
        if math.isfinite(val_loss):
            self.first = val_loss if self.first is None else self.first
            self.best = min(self.best, val_loss)

    def before_step(self, step: int) -> None:
        if step - 1 in self.points and self.best_at_last is not None and math.isfinite(self.best):
            gained = self.best_at_last - self.best
            stalled = gained <= self.eps * max(self.first - self.best, 1e-12)
            cos = self._cos_sum / max(self._cos_n, 1)
            fits = False  # the training loss still falls while the validation loss stalls
            if self._train_n and self._train_first is not None:
                mean = self._train_sum / self._train_n
                last = self._train_first if self._train_last is None else self._train_last
                fits = last - mean > self.eps * max(self._train_first - mean, 1e-12)
                self._train_last = mean
            self._train_sum, self._train_n = 0.0, 0
            if self.climb is not None:  # the hypergradient's sign alone, both ways
                if cos > self.climb:
                    self.level *= self.factor
                elif cos < -self.climb:
                    self.level /= self.factor
            elif stalled and (
                (self.confirm and cos > 0)
                or (self.overfit and fits)
                or not (self.confirm or self.overfit)
            ):
                self.level *= self.factor
            self._cos_sum, self._cos_n = 0.0, 0
        if step - 1 in self.points or self.best_at_last is None:
            self.best_at_last = self.best
        self._log_sum += math.log(self.level)
        self.peak = math.exp(self._log_sum / step)  # the level's geometric mean over the run
        self.lr = self.level * schedules.warmup_cosine(step, self.budget)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr

    def hparams(self) -> dict[str, float]:
        return {"lr": self.lr}


class ProdigyCosine(Driver):
    """Prodigy (package prodigyopt) at lr k under the warm-up + cosine shape, the baselines'
    betas and decoupled weight decay; its level is d k, Prodigy's distance estimate times k."""

    def __init__(self, params, budget: int, k: float) -> None:
        from lhopt.extras import require

        Prodigy = require("prodigyopt", "bench").Prodigy
        opt = Prodigy(
            params,
            lr=k,
            betas=ADAMW_KW["betas"],
            weight_decay=ADAMW_KW["weight_decay"],
            safeguard_warmup=True,
        )
        super().__init__(opt, lambda step: k * schedules.warmup_cosine(step, budget))
        self.k = k

    @property
    def peak(self) -> float:
        return float(self.optimizer.param_groups[0]["d"]) * self.k

    def hparams(self) -> dict[str, float]:
        group = self.optimizer.param_groups[0]
        return {"lr": float(group["d"] * group["lr"])}


class GapLog(LearnedDriver):
    """The benchmark's `LearnedDriver`, recording at each validation loss the generalisation
    gap: (val - the mean training loss since the evaluation before) over all the validation
    loss's gain so far (first - best), a scale-free number that any kind of task shows."""

    def __init__(self, optimizer) -> None:
        super().__init__(optimizer)
        self.first = self.best = None
        self._sum, self._n = 0.0, 0
        self.gaps: list[tuple[int, float]] = []

    def after_step(self, step: int, loss: torch.Tensor) -> None:
        value = float(loss)
        if math.isfinite(value):
            self._sum, self._n = self._sum + value, self._n + 1
        super().after_step(step, loss)

    def on_eval(self, step: int, val_loss: float) -> None:
        if math.isfinite(val_loss):
            if self.first is None:
                self.first = self.best = val_loss
            self.best = min(self.best, val_loss)
            if self._n and self.first > self.best:
                gap = (val_loss - self._sum / self._n) / (self.first - self.best)
                self.gaps.append((step, gap))
        self._sum, self._n = 0.0, 0
        super().on_eval(step, val_loss)


class OverfitWeightDecay(GapLog):
    """At each validation loss above the best before it by more than `eps` of all the gain so
    far (the run has begun to overfit), every group's weight decay times `factor`, up to
    `most`. The policy's moves leave the weight decay alone (its heads are the lr's)."""

    def __init__(self, optimizer, factor: float, most: float, eps: float) -> None:
        super().__init__(optimizer)
        self.factor, self.most, self.eps = factor, most, eps

    def on_eval(self, step: int, val_loss: float) -> None:
        turned = (
            math.isfinite(val_loss)
            and self.first is not None
            and val_loss - self.best > self.eps * max(self.first - self.best, 1e-12)
        )
        if turned:
            for group in self.optimizer.param_groups:
                group["weight_decay"] = min(group["weight_decay"] * self.factor, self.most)
        super().on_eval(step, val_loss)


def _power_groups(params, scale: float, power: float) -> list[dict]:
    """The matrices whose rms at the start is at least `scale` / sqrt(fan_in) (PyTorch's default
    layers sit at about 0.58, GPT-2's std 0.02 at about 0.2 for widths 64-96) in a group at
    `lamb_power` `power`; the other tensors in a group of the start's."""
    params = list(params)

    def full(p) -> bool:
        fan_in = p[0].numel() if p.dim() > 1 else 0
        return fan_in > 0 and float(p.detach().pow(2).mean().sqrt()) * math.sqrt(fan_in) >= scale

    groups = [
        {"params": [p for p in params if not full(p)]},
        {"params": [p for p in params if full(p)], "lamb_power": power},
    ]
    return [g for g in groups if g["params"]]


def _run(job: dict, method: str, k: float, args: dict) -> dict:
    from lhopt.curves.run import run_job_safe

    torch.set_num_threads(1)
    drivers = []

    def make(model, total, lr):
        params = model.parameters()
        if method == "policy-start":  # the shipped policy (LearnedOptimizer) from lr k
            from lhopt.control import LearnedOptimizer

            spe = config_steps_per_epoch(TaskConfig.from_dict(job["config"]))
            ciao = dict(args["ciao"])
            if args.get("wd_below"):  # the start's weight decay by the passes over the data
                e0, low = args["wd_below"]
                if (total / spe if math.isfinite(spe) else 0.0) < e0:
                    ciao["weight_decay"] = low
            if args.get("power_by_scale"):  # full-scale matrices in a group at another power
                params = _power_groups(params, *args["power_by_scale"])
            opt = LearnedOptimizer(
                params,
                total_steps=total,
                lr=k,
                policy=args["policy"],
                steps_per_epoch=None if args.get("no_epochs") else spe,
                # the usual no-decay group of biases and norms, or the policy file's setting
                decay_vectors=False if args.get("no_decay_vectors") else None,
                model=model,  # as the README's usage: start-overs restore buffers too
                **ciao,
            )
            if args.get("wd_rule"):
                d = OverfitWeightDecay(opt, args["wd_rule"], args["wd_max"], args["wd_eps"])
            else:
                d = GapLog(opt)
            drivers.append(d)
            return d
        if method == "prodigy-cosine":
            d = ProdigyCosine(params, total, k)
        elif method == "range-test":
            d = RangeTestCosine(
                params, total, k, args["frac"], args["lo"], args["hi"], args["rise"]
            )
        else:
            d = StallDecayCosine(
                params,
                total,
                k,
                args["eps"],
                args["until"],
                args["confirm"],
                args["climb"],
                args["overfit"],
            )
        drivers.append(d)
        return d

    result = run_job_safe(job, make)
    d = drivers[0] if drivers else None
    base = result.get("hparams", {}).get("base_lr")  # a policy's: its base lr's geometric mean
    if base:
        result["peak"] = math.exp(sum(math.log(v) for v in base) / len(base))
    else:
        result["peak"] = getattr(d, "peak", None)
    result["search_end"] = getattr(d, "start", None)
    result["gaps"] = getattr(d, "gaps", None)
    return result


# Test metrics where higher is better; every other metric (loss, mse, perplexity, error
# rates) is better lower.
HIGHER_IS_BETTER = ("accuracy", "r2", "explained_variance", "hr@10", "ndcg@10")


def test_comparison(per_task: dict) -> str:
    """Per task, the primary test metric at T (the first that is not `loss`, else `loss`),
    mean over seeds, against the tuned schedule's run at its chosen lr; and on how many tasks
    the run is no worse (issue 19, item 7's third target)."""
    lines, no_worse, counted = [], 0, 0
    for name, seeds_out in per_task.items():
        pairs = [(r["test"], r["tuned_test"]) for r in seeds_out if r["test"] and r["tuned_test"]]
        if not pairs:
            lines.append(f"  {name}: no test metrics")
            continue
        metric = next((m for m in pairs[0][0] if m != "loss"), "loss")
        x = sum(a[metric] for a, _ in pairs) / len(pairs)
        t = sum(b[metric] for _, b in pairs) / len(pairs)
        ok = x >= t if metric in HIGHER_IS_BETTER else x <= t
        counted += 1
        no_worse += ok
        lines.append(f"  {name}: test {metric} {x:.4g} (tuned {t:.4g}){'' if ok else ' worse'}")
    return "\n".join(
        lines
        + [f"  test metric at T no worse than the tuned schedule's on {no_worse}/{counted} tasks"]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", nargs="+", default=["validation"])
    parser.add_argument(
        "--method",
        choices=["range-test", "stall-decay", "policy-start", "prodigy-cosine"],
        default="range-test",
    )
    parser.add_argument(
        "--ks",
        type=float,
        nargs="+",
        required=True,
        help="range-test: lr* / k starts the cosine; stall-decay and policy-start: the starting lr",
    )
    parser.add_argument("--policy", default="default", help="policy-start: the policy file")
    parser.add_argument(
        "--no-epochs",
        action="store_true",
        help="policy-start: do not tell the policy the task's steps per epoch",
    )
    parser.add_argument(
        "--no-decay-vectors",
        action="store_true",
        help="policy-start: tensors of one dimension (biases, norms) in a group without weight "
        "decay",
    )
    parser.add_argument(
        "--power-by-scale",
        nargs=2,
        type=float,
        default=None,
        metavar=("R", "P"),
        help="policy-start: matrices whose rms at the start is at least R / sqrt(fan_in) in a "
        "group at lamb_power P",
    )
    parser.add_argument(
        "--wd-below",
        nargs=2,
        type=float,
        default=None,
        metavar=("E0", "WD"),
        help="policy-start: start at weight decay WD where the run passes over its data fewer "
        "than E0 times (fresh data: 0 passes)",
    )
    parser.add_argument(
        "--ciao",
        nargs="+",
        default=[],
        metavar="NAME=VALUE",
        help="policy-start: CIAO hyperparameters' initial values (a number, true, false or none)",
    )
    parser.add_argument(
        "--relative",
        action="store_true",
        help="policy-start and stall-decay: --ks are multiples of each task's tuned lr",
    )
    parser.add_argument("--eps", type=float, default=0.01, help="stall-decay: the stall")
    parser.add_argument(
        "--confirm",
        action="store_true",
        help="stall-decay: halve only where the period's mean cos(g_t, d_t-1) is above 0",
    )
    parser.add_argument(
        "--overfit",
        action="store_true",
        help="stall-decay: halve only where the period's mean training loss still fell by more "
        "than --eps of all its fall so far (with --confirm: where either holds)",
    )
    parser.add_argument(
        "--climb",
        type=float,
        default=None,
        help="stall-decay: ignore stalls; halve where the period's mean cos(g_t, d_t-1) is above "
        "this, double where it is below minus this",
    )
    parser.add_argument(
        "--until", type=float, default=1.0, help="stall-decay: no halving past this share of T"
    )
    parser.add_argument(
        "--wd-rule",
        type=float,
        default=None,
        metavar="FACTOR",
        help="policy-start: at each validation loss above the best before it by more than "
        "--wd-eps of the gain so far, the weight decay times FACTOR (up to --wd-max)",
    )
    parser.add_argument(
        "--losses-only",
        action="store_true",
        help="run no baseline: record each run's curve and test metrics, no speedup (what "
        "compare_reads.py's share of lower best losses reads)",
    )
    parser.add_argument("--wd-max", type=float, default=0.1)
    parser.add_argument("--wd-eps", type=float, default=0.05)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1"
    )
    parser.add_argument("--frac", type=float, default=0.1, help="range test's share of T")
    parser.add_argument("--lo", type=float, default=1e-4)
    parser.add_argument("--hi", type=float, default=1.0)
    parser.add_argument("--rise", type=float, default=0.2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=None, help="results (JSON; out/level_search-METHOD.json)")
    args = parser.parse_args()
    args.out = args.out or f"out/level_search-{args.method}.json"
    for name in ("frac", "rise"):
        if not 0 < getattr(args, name) <= 1:
            parser.error(f"--{name}={getattr(args, name)}: expected in (0, 1]")
    if not 0 < args.lo < args.hi:
        parser.error(f"--lo={args.lo}, --hi={args.hi}: expected 0 < lo < hi")
    if args.relative and args.losses_only:
        parser.error("--relative: expected no --losses-only (it reads each task's tuned lr)")
    if args.relative and args.method == "range-test":
        parser.error(
            "--relative: expected --method policy-start or stall-decay (range-test's "
            "k divides the lr it finds)"
        )
    if args.wd_below is not None:
        e0, wd = args.wd_below
        if (
            args.method != "policy-start"
            or not (e0 > 0 and math.isfinite(e0))
            or not (0 <= wd < math.inf)
        ):
            parser.error(
                f"--wd-below {e0:g} {wd:g}: expected --method policy-start, E0 > 0 and a finite "
                "WD >= 0"
            )
    ciao = {}
    for item in args.ciao:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--ciao {item!r}: expected NAME=VALUE")
        words = {"none": None, "true": True, "false": False}
        ciao[name] = words[value.lower()] if value.lower() in words else float(value)
    args.ciao = ciao
    if not all(k > 0 and math.isfinite(k) for k in args.ks):
        parser.error(f"--ks={args.ks}: expected positive finite values")

    from scipy.stats import spearmanr

    from lhopt.bench import benchmark as bench
    from lhopt.curves.speedup import best_by, geometric_mean

    if args.seeds < 1 or args.first_seed < 0:
        parser.error(f"--seeds={args.seeds} --first-seed={args.first_seed}: expected >= 1, >= 0")
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    doc = {"args": vars(args), "suites": {}}
    if not args.losses_only:  # the baselines run on Ray, the reads on a process pool
        bench.start_ray(None, args.workers)
    for suite in args.suites:
        tasks = bench.select_tasks(suite)
        bases = ["adamw", "adamw-cosine-tuned"]
        results = {}
        if not args.losses_only:
            results = bench.run_jobs(
                bench.plan_phase1(tasks, bases, seeds), progress=False, desc="baselines"
            )
            results.update(
                bench.run_jobs(
                    bench.plan_phase2(tasks, bases, seeds, results), progress=False, desc="tuned"
                )
            )
        jobs = [
            (bench._job(name, c, s, args.method, None, 1.0), k)
            for name, c in tasks.items()
            for s in seeds
            for k in args.ks
        ]
        with ProcessPoolExecutor(args.workers) as pool:
            futures = []
            for job, k in jobs:
                unit = bench.chosen_lr(results, job["task"], job["seed"]) if args.relative else 1
                futures.append(pool.submit(_run, job, args.method, k * unit, vars(args)))
            runs = [f.result() for f in futures]
        rows = {}
        for (job, k), run in zip(jobs, runs, strict=True):
            name, seed, T = job["task"], job["seed"], run.get("budget")
            if args.losses_only:
                over = {b: {"speedup": None} for b in bases}
            elif run.get("error") or T is None:
                over = {b: {"speedup": 0.0, "lower_bound": False} for b in bases}
            else:
                target = best_by(run["steps"], run["val"], T)
                if not math.isfinite(target):
                    over = {b: {"speedup": 0.0, "lower_bound": False} for b in bases}
                else:
                    over = {
                        b: bench.baseline_speedup(results, name, seed, b, target, T) for b in bases
                    }
            tuned_lr = None if args.losses_only else bench.chosen_lr(results, name, seed)
            rows.setdefault(k, {}).setdefault(name, []).append(
                {
                    "seed": seed,
                    "peak": run.get("peak"),
                    "search_end": run.get("search_end"),
                    "tuned_lr": tuned_lr,
                    "test": run.get("test_at_T"),
                    "gaps": run.get("gaps"),
                    "steps": run.get("steps"),
                    "val": run.get("val"),
                    "budget": T,
                    "tuned_test": (
                        results.get((name, seed, "adamw-cosine", tuned_lr, 1.0)) or {}
                    ).get("test_at_T"),
                    "error": run.get("error"),
                    **{b: over[b].get("speedup", 0.0) for b in bases},
                }
            )
        doc["suites"][suite] = rows
        print(f"\n## {suite}")
        if args.losses_only:
            continue
        for k, per_task in rows.items():
            print(
                f"\nk = {k:g}: | task | over adamw-cosine-tuned | over adamw | level | tuned lr |"
            )
            means = {b: [] for b in bases}
            levels = []
            for name, seeds_out in per_task.items():
                g = {b: geometric_mean([max(r[b], 1e-3) for r in seeds_out]) for b in bases}
                for b in bases:
                    means[b].append(g[b])
                peaks = [r["peak"] for r in seeds_out if r["peak"]]
                peak = math.exp(sum(map(math.log, peaks)) / len(peaks)) if peaks else float("nan")
                tuned = math.exp(sum(math.log(r["tuned_lr"]) for r in seeds_out) / len(seeds_out))
                levels.append((peak, tuned))
                print(
                    f"| {name} | {g['adamw-cosine-tuned']:.2f} | {g['adamw']:.2f} | "
                    f"{peak:.1e} | {tuned:.1e} |"
                )
            summary = " ; ".join(
                f"over {b}: {geometric_mean(v):.2f} (min {min(v):.2f}, "
                f"{sum(x < 1 for x in v)}/{len(v)} <1)"
                for b, v in means.items()
            )
            rho = (
                spearmanr([p for p, _ in levels], [t for _, t in levels]).statistic
                if len(levels) > 2
                else float("nan")
            )
            print(f"{suite} k={k:g}: {summary} ; Spearman (level, tuned lr) {rho:.2f}")
            print(test_comparison(per_task))
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(doc, f)


if __name__ == "__main__":
    main()
