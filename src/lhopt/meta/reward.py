"""The speedup reward: how much faster than the Adam baseline the controlled run trains.

The baseline (`adamw` on the same task and seed, budget T) gives a validation curve. A power law
L(t) = c + a t^(-b) is fitted to its running minimum (`fit_points` evenly spaced evaluations, the
paper's 14), which extends it smoothly to 2T and beyond, and can be inverted: t_B(L) is the
number of baseline steps needed to reach loss L. After the controlled run has used t steps and
reached a best validation loss L, its log speedup so far is

    s(t) = clip(log(t_B(L) / t), -clip, +clip)        (clip = 3, as in the official config)

The reward of outer step k is s(t_k) - s(t_{k-1}) (with s(t_0) = 0): dense, and summing over an
episode to its final log speedup, the quantity meta-training maximises (gamma = 1). A run
twice as fast as the baseline ends with a return of log 2. A non-finite validation loss counts
as no progress; a run whose loss is non-finite at the end scores -clip.

With a reward horizon H (`[episode] reward_horizon`; 2 in configs/experiments/horizon2.toml, as
the paper extrapolates "to 2x the budget"), t_B comes from the baseline's own best-so-far curve
wherever it reaches L (linear interpolation, as the benchmark measures), and beyond its last
evaluation from the power law shifted to pass through that evaluation, capped at H T. A run that
ends at least H times as fast as the baseline then scores log H, no more. Without a horizon (0,
the default, the rule of the shipped policy's run), the unshifted power law alone gives t_B,
unbounded: its fit misses the end of the curve, so merely matching the baseline scores well above
0 and beating it by a few percent at the end often scores the full +3
(`benchmarks/reward_calibration.py`, figures in docs/meta.md). With a horizon and
`[episode] reward_asymptote = false`, the extrapolation past the last evaluation has no asymptote
(a pure power law through that evaluation with the slope of the curve's second half), so a lower
final loss is always worth more, up to log H, instead of the full score past a fitted floor.

Which loss L is: `[episode] reward_loss = "best"` (the default, and the rule of the shipped
policy's stages 1 and 2) takes the best validation loss so far, as the benchmark does; "last"
takes the latest evaluation, so a run that gets worse gives back what it had scored: with "best"
a run whose early best already scores the clip loses nothing by blowing up later (short of a
non-finite end), which rewards recklessness.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from lhopt.curves.speedup import best_so_far, first_reach, speedup_budget_dependent
from lhopt.extras import require

REWARD_LOSSES = ("best", "last")
REWARD_REFERENCES = ("adamw", "tuned-cosine", "tuned-cosine-bracketed")


def scored_loss(best: float, latest: float, rule: str) -> float:
    """The loss a run is scored by under `[episode] reward_loss` (see the module doc)."""
    if rule not in REWARD_LOSSES:
        raise ValueError(f"loss={rule!r} is not allowed: expected one of {REWARD_LOSSES}")
    return best if rule == "best" else latest


@dataclass(frozen=True)
class PowerLaw:
    """L(t) = c + a * t ** (-b), with a > 0, b > 0, c >= 0."""

    a: float
    b: float
    c: float

    def loss(self, t: float) -> float:
        return self.c + self.a * t ** (-self.b)

    def steps_to(self, loss: float) -> float:
        """Steps the baseline needs to reach `loss` (inf at or below the asymptote c)."""
        if not math.isfinite(loss):
            return 0.0 if loss > 0 else math.inf
        if loss <= self.c:
            return math.inf
        log_t = (math.log(self.a) - math.log(loss - self.c)) / self.b
        return math.exp(log_t) if log_t < 700 else math.inf


def fit_power_law(
    steps: Sequence[float], losses: Sequence[float], fit_points: int = 14
) -> PowerLaw:
    """Fit L(t) = c + a t^-b to the running minimum of a curve (evaluations at t > 0)."""
    curve_fit = require("scipy.optimize", "meta").curve_fit

    pts = [(s, v) for s, v in zip(steps, losses, strict=True) if s > 0 and math.isfinite(v)]
    if len(pts) < 3:
        raise ValueError(f"a power law needs at least 3 finite evaluations after step 0, got {pts}")
    t = np.array([s for s, _ in pts], dtype=float)
    y = np.minimum.accumulate(np.array([v for _, v in pts], dtype=float))
    if fit_points and len(t) > fit_points:
        idx = np.unique(np.round(np.linspace(0, len(t) - 1, fit_points)).astype(int))
        t, y = t[idx], y[idx]
    lo = float(y.min())

    # Fit in log-loss space so that late, small differences weigh as much as early drops.
    def model(tt, log_a, b, c_frac):
        return np.log(c_frac * lo + np.exp(log_a) * tt ** (-b))

    scale = t / t[0]
    try:
        (log_a, b, c_frac), _ = curve_fit(
            model,
            scale,
            np.log(np.maximum(y, 1e-12)),
            p0=(math.log(max(y[0] - 0.5 * lo, 1e-12)), 0.5, 0.5),
            bounds=([-60.0, 1e-3, 0.0], [60.0, 5.0, 0.999]),
            maxfev=5000,
        )
        a = math.exp(log_a) * t[0] ** b  # undo the rescaling of t
        return PowerLaw(a, float(b), float(c_frac * lo))
    except (RuntimeError, ValueError):
        # No convergence: a straight line in log-log through the first and last points.
        b = max(1e-3, math.log(y[0] / max(y[-1], 1e-12)) / math.log(t[-1] / t[0]))
        return PowerLaw(float(y[0] * t[0] ** b), b, 0.0)


@dataclass(frozen=True)
class AnchoredCurve:
    """The baseline's best-so-far curve, then a power law through its last point, up to H T."""

    steps: tuple[float, ...]
    best: tuple[float, ...]
    law: PowerLaw
    horizon: float

    def steps_to(self, loss: float) -> float:
        T, last = self.steps[-1], self.best[-1]
        cap = self.horizon * T
        if not math.isfinite(loss):
            return 0.0 if loss > 0 else cap
        reached = first_reach(self.steps, self.best, loss)
        if reached is not None:
            return reached
        c, b = self.law.c, self.law.b
        if loss <= c:
            return cap
        log_t = math.log(T) + math.log((last - c) / (loss - c)) / b  # b may be tiny: stay in logs
        return cap if log_t >= math.log(cap) else math.exp(log_t)


def tail_power_law(steps: Sequence[float], best: Sequence[float]) -> PowerLaw:
    """L(t) = a t^-b through the last point of a best-so-far curve, b its log-log slope over the
    second half of the run (at least 1e-3): the extrapolation without an asymptote."""
    T, last = float(steps[-1]), float(best[-1])
    pts = [(s, v) for s, v in zip(steps, best, strict=True) if s >= T / 2 and s > 0 and v > 0]
    b = 1e-3
    if len(pts) >= 2 and last > 0:
        x = np.log([s for s, _ in pts])
        y = np.log([v for _, v in pts])
        b = max(1e-3, -float(np.polyfit(x, y, 1)[0]))
    return PowerLaw(max(last, 1e-300) * T**b, b, 0.0)


def anchored_curve(
    steps: Sequence[float],
    losses: Sequence[float],
    fit_points: int = 14,
    horizon: float = 2.0,
    asymptote: bool = True,
) -> AnchoredCurve:
    """The baseline reference with a reward horizon (see the module doc). `asymptote=False`
    extrapolates with `tail_power_law` instead of the fitted law, so that below the baseline's
    final loss every lower loss is worth more steps, up to the cap, instead of the cap as soon
    as it passes the fitted asymptote."""
    if horizon < 1:
        raise ValueError(f"reward horizon must be >= 1 (a multiple of the budget), got {horizon}")
    pts = [(float(s), v) for s, v in zip(steps, losses, strict=True) if math.isfinite(v)]
    best = best_so_far([v for _, v in pts])
    kept = tuple(s for s, _ in pts)
    law = fit_power_law(steps, losses, fit_points) if asymptote else tail_power_law(kept, best)
    return AnchoredCurve(kept, tuple(best), law, float(horizon))


def log_speedup(
    baseline: PowerLaw | AnchoredCurve, best_loss: float, steps_used: float, clip: float = 3.0
) -> float:
    """clip(log(t_B(best_loss) / steps_used)); -clip when best_loss is not finite."""
    if not math.isfinite(best_loss):
        return -clip
    t_b = baseline.steps_to(best_loss)
    if t_b <= 0:
        return -clip
    return float(np.clip(math.log(t_b / steps_used) if math.isfinite(t_b) else clip, -clip, clip))


def outer_step_rewards(
    baseline: PowerLaw | AnchoredCurve,
    steps: Sequence[int],
    val_losses: Sequence[float],
    clip: float = 3.0,
    loss: str = "best",
) -> list[float]:
    """Reward of each outer step (see the module doc); they sum to the final log speedup.

    `loss`: "best" scores the best validation loss so far (what the benchmark measures), "last"
    the latest one, so that a run which gets worse (a late blow-up, overfitting) gives back what
    it had scored and a run ends scored by the loss of the model it ends with."""
    scored_loss(math.inf, math.inf, loss)  # an unknown rule fails even with no steps
    rewards, prev, best = [], 0.0, math.inf
    for t, v in zip(steps, val_losses, strict=True):
        if math.isfinite(v):
            best = min(best, v)
        s = log_speedup(baseline, scored_loss(best, v, loss), t, clip)
        rewards.append(s - prev)
        prev = s
    if val_losses and not math.isfinite(val_losses[-1]):
        rewards[-1] += -clip - prev  # a run that ends diverged scores -clip in total
    return rewards


@dataclass(frozen=True)
class TunedCosine:
    """The reference of `[episode] reward_reference = "tuned-cosine"`: AdamW with warm-up and
    cosine decay at the lr of the tuning grid that ends lowest at the task's budget T, run for T,
    1.5 T and 2 T steps (the `adamw-cosine-tuned` baseline of the benchmark).

    The log speedup of a run that reached best validation loss L by T is the benchmark's
    (`speedup_budget_dependent`): below 0 when the tuned schedule gets to L sooner than T,
    log 2 at most, clipped below at -clip. The longer runs are needed only when the T run never
    reaches L: `extend(multiple)` gives them then (steps, losses), once."""

    lr: float
    runs: dict  # budget multiple -> (steps, validation losses); 1.0 always
    budget: int
    extend: Callable[[float], tuple] | None = field(default=None, compare=False, repr=False)

    def log_speedup(self, best_loss: float, clip: float = 3.0) -> float:
        if not math.isfinite(best_loss):
            return -clip
        if self.extend is not None and first_reach(*self.runs[1.0], best_loss) is None:
            for multiple in (1.5, 2.0):
                if multiple not in self.runs:
                    self.runs[multiple] = self.extend(multiple)
        value = speedup_budget_dependent(self.runs, best_loss, self.budget).value
        return max(math.log(value), -clip) if value > 0 else -clip


def terminal_rewards(reference: TunedCosine, val_losses: Sequence[float], clip: float) -> list:
    """0 at every outer step but the last, which gets the run's final log speedup against
    `reference` (best validation loss over the run; -clip if the run ends non-finite)."""
    if not val_losses:
        return []
    finite = [v for v in val_losses if math.isfinite(v)]
    ends_finite = math.isfinite(val_losses[-1])
    last = reference.log_speedup(min(finite), clip) if finite and ends_finite else -clip
    return [0.0] * (len(val_losses) - 1) + [last]
