"""The speedup of an optimizer X over a baseline B, as `docs/evaluation.md` defines it.

Validation curves are taken as their running minimum (what early stopping would keep). With L_X
the best validation loss X reached by step T:
- a budget-independent baseline (one run of 2T steps): t_B is the first step at which its
  best-so-far curve reaches L_X, linearly interpolated between evaluations;
- a budget-dependent baseline (full runs with budgets T, 1.5T and 2T): if the T run reaches L_X,
  t_B is the first step at which it does; otherwise t_B is the budget at which the best loss
  reaches L_X, interpolated between the budgets.
speedup = t_B / T; a baseline that does not reach L_X within 2T gives 2, flagged as a lower bound;
an X that ends with a non-finite loss gets 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

CAP = 2.0


@dataclass(frozen=True)
class Speedup:
    value: float
    lower_bound: bool  # the baseline never reached L_X: the true speedup is at least `value`
    t_b: float | None  # baseline steps to reach L_X (None if it never did)

    def label(self) -> str:
        return f">{self.value:.2f}" if self.lower_bound else f"{self.value:.2f}"


def best_so_far(values: Sequence[float]) -> list[float]:
    """Running minimum over the finite values (inf until the first finite one)."""
    out, best = [], math.inf
    for v in values:
        if v is not None and math.isfinite(v):
            best = min(best, v)
        out.append(best)
    return out


def best_by(steps: Sequence[int], values: Sequence[float], t: int) -> float:
    """Best finite validation loss among evaluations at steps <= t (inf if none)."""
    finite = [v for s, v in zip(steps, values, strict=True) if s <= t and _finite(v)]
    return min(finite, default=math.inf)


def first_reach(steps: Sequence[int], values: Sequence[float], target: float) -> float | None:
    """First step at which the best-so-far curve reaches `target`, linearly interpolated between
    the evaluation before and the one at which it gets there; None if it never does."""
    best = best_so_far(values)
    for i, b in enumerate(best):
        if b <= target:
            if i == 0 or not math.isfinite(best[i - 1]):
                return float(steps[i])
            b0, s0, s1 = best[i - 1], steps[i - 1], steps[i]
            return s0 + (s1 - s0) * (b0 - target) / (b0 - b)
    return None


def _finite(v) -> bool:
    return v is not None and math.isfinite(v)


def final_is_finite(values: Sequence[float]) -> bool:
    return bool(values) and _finite(values[-1])


def speedup_budget_independent(
    steps: Sequence[int], values: Sequence[float], target: float, budget: int
) -> Speedup:
    """Speedup against one run of 2T steps of a baseline whose behaviour ignores the budget."""
    t_b = first_reach(steps, values, target) if math.isfinite(target) else None
    if t_b is None or t_b > CAP * budget:
        return Speedup(CAP, True, None)
    return Speedup(t_b / budget, False, t_b)


def speedup_budget_dependent(
    runs: Mapping[float, tuple[Sequence[int], Sequence[float]]], target: float, budget: int
) -> Speedup:
    """Speedup against full runs of a scheduled baseline, keyed by budget multiple (1, 1.5, 2)."""
    if not math.isfinite(target):
        return Speedup(CAP, True, None)
    multiples = sorted(runs)
    if multiples[0] != 1.0:
        raise ValueError(f"budget-dependent runs need the T budget; got multiples {multiples}")
    steps, values = runs[1.0]
    t_b = first_reach(steps, values, target)
    if t_b is not None:
        return Speedup(t_b / budget, False, t_b)
    # Best loss of each budget's full run; a longer budget is credited with a shorter one's best
    # (one could always have stopped there), so the curve over budgets is monotone.
    prev_m, prev_best = multiples[0], best_by(steps, values, math.inf)
    for m in multiples[1:]:
        s, v = runs[m]
        best = min(prev_best, best_by(s, v, math.inf))
        if best <= target:
            frac = (
                1.0 if not math.isfinite(prev_best) else (prev_best - target) / (prev_best - best)
            )
            t_b = budget * (prev_m + (m - prev_m) * frac)
            return Speedup(t_b / budget, False, t_b)
        prev_m, prev_best = m, best
    return Speedup(CAP, True, None)


def tie_speedup(
    runs: Mapping[float, tuple[Sequence[int], Sequence[float]]], budget: int
) -> Speedup:
    """What a run identical to a scheduled baseline reads over it: its speedup against the
    baseline's own runs (`speedup_budget_dependent`), L_X being the T run's best loss by T.
    X is charged T wherever it reached its best, so this is s*/T, s* the step of that best: 1
    where the loss falls to the end, less where it overfits or is flat at the end
    (docs/bench.md, "What a tie reads"). A T run that does not end finite at T scores 0, as an
    X that ends so does."""
    steps, values = runs[1.0]
    at_t = [v for t, v in zip(steps, values, strict=True) if t <= budget]
    if not at_t or steps[len(at_t) - 1] != budget or not math.isfinite(at_t[-1]):
        return Speedup(0.0, False, None)
    return speedup_budget_dependent(runs, best_by(steps, values, budget), budget)


def geometric_mean(values: Sequence[float]) -> float:
    """Geometric mean; 0 if any value is 0 (a diverged run is not averaged away)."""
    if not values:
        return math.nan
    if any(v <= 0 for v in values):
        return 0.0
    return math.exp(sum(math.log(v) for v in values) / len(values))


def suite_figure(per_task: Sequence[Sequence[float]]) -> float:
    """A suite's figure: the geometric mean over tasks of each task's geometric mean over
    seeds (the number `seed_draws` resamples)."""
    return geometric_mean([geometric_mean(v) for v in per_task])


def seed_draws(per_task: Sequence[Sequence[float]], draws: int, rng) -> np.ndarray:
    """`draws` bootstrap draws of a suite's figure, the geometric mean over tasks of each task's
    geometric mean over seeds: each draw resamples every task's seeds with replacement (a
    diverged seed drawn makes the draw 0, as it makes the mean 0). `rng`: a numpy Generator."""
    tasks = [np.asarray(v, dtype=float) for v in per_task if len(v)]
    logs = np.zeros(draws)
    zero = np.zeros(draws, dtype=bool)
    for v in tasks:
        picks = v[rng.integers(0, len(v), size=(draws, len(v)))]
        zero |= (picks <= 0).any(axis=1)
        logs += np.log(np.where(picks > 0, picks, 1.0)).mean(axis=1)
    return np.where(zero, 0.0, np.exp(logs / max(len(tasks), 1)))


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level {level!r} is not allowed: a coverage in (0, 1)")


def _has_spread(per_task: Sequence[Sequence[float]]) -> bool:
    return any(len(v) >= 2 for v in per_task)


def seed_interval(
    per_task: Sequence[Sequence[float]],
    level: float = 0.9,
    draws: int = 2000,
    seed: int = 0,
) -> tuple[float, float] | None:
    """A bootstrap interval for a suite's figure (`seed_draws`). It is the spread a rerun with
    other seeds would show, and the spread of a rerun on another CPU, whose kernels round
    differently and send chaotic runs elsewhere as a seed does; not the error of the tasks'
    choice. None when no task has two seeds. Deterministic (`seed`)."""
    _check_level(level)
    if not _has_spread(per_task):
        return None
    means = seed_draws(per_task, draws, np.random.default_rng(seed))
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def ratio_interval(
    base: Sequence[Sequence[float]],
    other: Sequence[Sequence[float]],
    level: float = 0.9,
    draws: int = 2000,
    seed: int = 0,
) -> tuple[float, float] | None:
    """A bootstrap interval for `other`'s suite figure over `base`'s, the same tasks in the same
    order, each read's seeds resampled on their own: an interval that holds 1 does not tell
    the two apart. Speedups must be > 0 (floor them first). None when neither has two seeds."""
    _check_level(level)
    if len(base) != len(other):
        raise ValueError(f"{len(base)} tasks against {len(other)}: the same tasks are compared")
    if any(x <= 0 for v in (*base, *other) for x in v):
        raise ValueError("speedups must be > 0 for a ratio: floor a 0 first")
    if not (_has_spread(base) or _has_spread(other)):
        return None
    rng = np.random.default_rng(seed)
    ratios = seed_draws(other, draws, rng) / seed_draws(base, draws, rng)
    lo, hi = np.quantile(ratios, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def paired_ratio(
    base: Sequence[Sequence[float]],
    other: Sequence[Sequence[float]],
    level: float = 0.9,
    draws: int = 2000,
    seed: int = 0,
) -> tuple[float, tuple[float, float] | None]:
    """`other` over `base` where both ran the same tasks and seeds, each seed's speedups against
    the same baseline curve: the geometric mean over tasks of each task's geometric mean over
    seeds of other / base, and a bootstrap interval that resamples tasks, then seeds within
    each task. The baseline's own noise cancels in each pair, which `ratio_interval` (each
    read's seeds resampled on their own) keeps. Speedups must be > 0 (floor them first); the
    interval is None for fewer than two tasks. Deterministic (`seed`)."""
    _check_level(level)
    if len(base) != len(other):
        raise ValueError(f"{len(base)} tasks against {len(other)}: the same tasks are compared")
    for i, (a, b) in enumerate(zip(base, other, strict=True)):
        if len(a) != len(b) or not len(a):
            raise ValueError(
                f"task {i}: {len(a)} seeds against {len(b)}: each task needs the same seeds, "
                "at least one"
            )
    if any(x <= 0 for v in (*base, *other) for x in v):
        raise ValueError("speedups must be > 0 for a ratio: floor a 0 first")
    logs = [
        np.log(np.asarray(b, float)) - np.log(np.asarray(a, float))
        for a, b in zip(base, other, strict=True)
    ]
    point = float(np.exp(np.mean([v.mean() for v in logs]))) if logs else math.nan
    if len(logs) < 2:
        return point, None
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(logs), size=(draws, len(logs)))
    task_means = np.empty((draws, len(logs)))
    for j, v in enumerate(logs):
        # every draw's resample of task j's seeds, read wherever task j is picked
        task_means[:, j] = v[rng.integers(0, len(v), size=(draws, len(v)))].mean(axis=1)
    means = np.take_along_axis(task_means, picks, axis=1).mean(axis=1)
    lo, hi = np.quantile(np.exp(means), [(1 - level) / 2, (1 + level) / 2])
    return point, (float(lo), float(hi))


def final_loss(values: Sequence[float] | None) -> float:
    """A run's last validation loss as `pick_lr` ranks it: inf where none or non-finite."""
    v = values[-1] if values else math.nan
    return v if _finite(v) else math.inf


def pick_lr(grid: Sequence[float], curves: Mapping[float, Sequence[float]]) -> float:
    """The tuned baseline's lr: the grid value whose run ends with the lowest finite validation
    loss (the first on ties; a run ending non-finite never wins)."""
    return min(grid, key=lambda lr: final_loss(curves.get(lr)))
