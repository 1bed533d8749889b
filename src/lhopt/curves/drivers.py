"""Reference optimizers as `Driver`s: AdamW (constant, or warm-up + cosine), Schedule-Free
AdamW and Prodigy, with the hooks a training run calls around an optimizer.

Their curves are what speedups are measured against (docs/evaluation.md), by the benchmark and by
meta-training's reward alike; `lhopt.bench.optimizers` names them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

from lhopt.extras import require
from lhopt.optim import schedules

# LHOPT's initial hyperparameters, which the adamw baselines use (docs/evaluation.md).
ADAMW_KW = dict(betas=(0.9, 0.99), eps=1e-6, weight_decay=1e-2)
DEFAULT_LR = 1e-3
TUNED_LR_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)  # the tuned baseline's grid


class Driver:
    """An optimizer and the hooks a training run calls around it."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, lr_at: Callable[[int], float] | None = None
    ) -> None:
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
    """lr x `lhopt.optim.schedules.warmup_cosine`: 5% linear warm-up, cosine decay to zero."""
    return lambda step: lr * schedules.warmup_cosine(step, budget)


# Driver factories: `make(model, budget, lr)`, the module trained, its run's total steps and the
# lr a grid gives (None: the optimizer's own).


def adamw(model, budget, lr):
    return Driver(torch.optim.AdamW(model.parameters(), lr=lr or DEFAULT_LR, **ADAMW_KW))


def adamw_cosine(model, budget, lr):
    lr = lr or DEFAULT_LR
    return Driver(
        torch.optim.AdamW(model.parameters(), lr=lr, **ADAMW_KW), warmup_cosine(lr, budget)
    )


def schedulefree(model, budget, lr):
    schedulefree = require("schedulefree", "bench")

    return ScheduleFreeDriver(schedulefree.AdamWScheduleFree(model.parameters()))


def prodigy(model, budget, lr):
    Prodigy = require("prodigyopt", "bench").Prodigy

    return ProdigyDriver(Prodigy(model.parameters(), lr=1.0))
