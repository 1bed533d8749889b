"""Optimizers by name, as the benchmark compares them (`../shared/design/EVALUATION.md`).

Each name maps to an `OptimizerSpec` whose `make(params, budget, lr)` returns a `Driver`: the
optimizer plus what a run needs around it (a schedule, a switch to evaluation weights, the
hyperparameters to plot). The learned optimizer registers itself here under "lhopt".
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch

# LHOPT's initial hyperparameters, which the adamw baselines use (EVALUATION.md).
ADAMW_KW = dict(betas=(0.9, 0.99), eps=1e-6, weight_decay=1e-2)
DEFAULT_LR = 1e-3
TUNED_LR_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
WARMUP_FRACTION = 0.05


class Driver:
    """An optimizer and the hooks a training run calls around it."""

    def __init__(self, optimizer: torch.optim.Optimizer,
                 lr_at: Callable[[int], float] | None = None) -> None:  # fmt: skip
        self.optimizer = optimizer
        self.lr_at = lr_at

    def before_step(self, step: int) -> None:
        """Called before optimizer step number `step` (1-based)."""
        if self.lr_at is not None:
            lr = self.lr_at(step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr

    def after_step(self, step: int, loss: torch.Tensor) -> None:
        """Called after the step with the (detached) training loss of that step."""

    def on_eval(self, step: int, val_loss: float) -> None:
        """Called after each evaluation of the validation loss."""

    @contextlib.contextmanager
    def evaluation(self) -> Iterator[None]:
        """Context in which the model holds the weights to evaluate."""
        yield

    def hparams(self) -> dict[str, float]:
        """Current hyperparameters worth plotting."""
        return {"lr": float(self.optimizer.param_groups[0]["lr"])}


class ScheduleFreeDriver(Driver):
    """Schedule-Free evaluates at its averaged point x, trains at y: switch modes around evals."""

    def __init__(self, optimizer) -> None:
        super().__init__(optimizer)
        optimizer.train()

    @contextlib.contextmanager
    def evaluation(self) -> Iterator[None]:
        self.optimizer.eval()
        try:
            yield
        finally:
            self.optimizer.train()

    def hparams(self) -> dict[str, float]:
        group = self.optimizer.param_groups[0]
        return {"lr": float(group.get("scheduled_lr", group["lr"]))}


class ProdigyDriver(Driver):
    def hparams(self) -> dict[str, float]:
        group = self.optimizer.param_groups[0]
        return {"lr": float(group["d"] * group["lr"])}  # the effective step size d * lr


def warmup_cosine(lr: float, budget: int) -> Callable[[int], float]:
    """Linear warm-up over the first 5% of the budget, then cosine decay to zero at the end."""
    warm = max(1, round(WARMUP_FRACTION * budget))

    def lr_at(step: int) -> float:
        if step <= warm:
            return lr * step / warm
        progress = (step - warm) / max(1, budget - warm)
        return lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return lr_at


@dataclass(frozen=True)
class OptimizerSpec:
    name: str
    make: Callable[[Iterable, int, float | None], Driver]
    budget_dependent: bool  # its schedule depends on the budget it is given
    doc: str
    tuned_from: str | None = None  # run as `tuned_from` over `lr_grid`, best by validation
    lr_grid: tuple[float, ...] = field(default=())
    check: Callable[[], object] | None = None  # raises ValueError if it cannot run here


def _adamw(params, budget, lr):
    return Driver(torch.optim.AdamW(params, lr=lr or DEFAULT_LR, **ADAMW_KW))


def _adamw_cosine(params, budget, lr):
    lr = lr or DEFAULT_LR
    return Driver(torch.optim.AdamW(params, lr=lr, **ADAMW_KW), warmup_cosine(lr, budget))


def _schedulefree(params, budget, lr):
    import schedulefree

    return ScheduleFreeDriver(schedulefree.AdamWScheduleFree(params))


def _prodigy(params, budget, lr):
    from prodigyopt import Prodigy

    return ProdigyDriver(Prodigy(params, lr=1.0))


OPTIMIZERS: dict[str, OptimizerSpec] = {}
BASELINES = ("adamw", "adamw-cosine", "adamw-cosine-tuned", "schedulefree", "prodigy")


def register(spec: OptimizerSpec) -> None:
    OPTIMIZERS[spec.name] = spec


for _spec in (
    OptimizerSpec("adamw", _adamw, False,
                  "AdamW at LHOPT's initial hyperparameters (lr 1e-3, betas (0.9, 0.99), "
                  "eps 1e-6, wd 1e-2), constant"),
    OptimizerSpec("adamw-cosine", _adamw_cosine, True,
                  "adamw with 5% linear warm-up and cosine decay to zero"),
    OptimizerSpec("adamw-cosine-tuned", _adamw_cosine, True,
                  "adamw-cosine with lr picked from {1e-4, 3e-4, 1e-3, 3e-3, 1e-2} by final "
                  "validation loss (five times the compute)",
                  tuned_from="adamw-cosine", lr_grid=TUNED_LR_GRID),
    OptimizerSpec("schedulefree", _schedulefree, False,
                  "Schedule-Free AdamW (package schedulefree) at its defaults"),
    OptimizerSpec("prodigy", _prodigy, False, "Prodigy (package prodigyopt), lr 1.0"),
):  # fmt: skip
    register(_spec)


def get(name: str) -> OptimizerSpec:
    _load_plugins()
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid: {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[name]


def names() -> list[str]:
    _load_plugins()
    return list(OPTIMIZERS)


def _load_plugins() -> None:
    """Import the modules that register optimizers of their own (the learned one, once shipped)."""
    import importlib

    with contextlib.suppress(ImportError):
        importlib.import_module("lhopt.control.learned")
