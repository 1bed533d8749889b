"""Optimizers by name, as the benchmark compares them (docs/evaluation.md).

Each name maps to an `OptimizerSpec` whose `make(model, budget, lr)` returns a `Driver`: the
optimizer plus what a run needs around it (a schedule, a switch to evaluation weights, the
hyperparameters to plot). The baselines are `lhopt.curves.drivers`; `lhopt` and
`lhopt-trainloss` are `LearnedOptimizer` with the shipped policy (or `--policy`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from lhopt.control import LearnedOptimizer, load_policy
from lhopt.curves import drivers
from lhopt.curves.drivers import DEFAULT_LR, TUNED_LR_GRID, Driver


@dataclass(frozen=True)
class OptimizerSpec:
    name: str
    make: Callable[..., Driver]  # (model, budget, lr, **extra) -> Driver
    budget_dependent: bool  # its schedule depends on the budget it is given
    doc: str
    tuned_from: str | None = None  # run as `tuned_from` over `lr_grid`, best by validation
    lr_grid: tuple[float, ...] = field(default=())
    check: Callable[[], object] | None = None  # raises ValueError if it cannot run here


class LearnedDriver(Driver):
    """How the benchmark drives `LearnedOptimizer`: train losses and each validation loss are
    reported."""

    def after_step(self, step: int, loss: torch.Tensor) -> None:
        self.optimizer.report(train_loss=loss)

    def on_eval(self, step: int, val_loss: float) -> None:
        self.optimizer.report(val_loss=val_loss)

    def hparams(self) -> dict[str, float]:
        """The hyperparameters of the first group: "lr" as the update uses it (the policy's base
        lr times the schedule's factor; under LAMB's trust ratio a step relative to each
        tensor's norm), "adamw_lr" that lr in AdamW's units (`CIAO.adamw_lrs`: what compares
        with a baseline's lr) and "base_lr" as the policy steers it."""
        group = self.optimizer.param_groups[0]
        return {
            "lr": float(group["lr"] * group["lr_factor"]),
            "adamw_lr": float(self.optimizer.adamw_lrs()[0]),
            "base_lr": float(group["lr"]),
        } | {
            h: float(group[h])
            for h in (
                "weight_decay",
                "epsilon",
                "ombeta1",
                "ombeta2",
                "grad_clip_ombeta",
                "lamb_update_norm_ombeta",
                "clip_fraction",
            )
            if group[h] is not None
        }


class TrainLossDriver(LearnedDriver):
    """Train losses only: the validation losses the benchmark computes are not passed on, as when
    a user gives no `val_loss_fn` (what that costs is measured by `lhopt-trainloss`)."""

    def on_eval(self, step: int, val_loss: float) -> None:
        pass


def _learned(driver: type[LearnedDriver]):
    def make(
        model: torch.nn.Module,
        budget: int,
        lr: float | None,
        policy: str = "default",
        steps_per_epoch: float | None = None,
    ):
        # model= as the README's usage passes it: registers and start-overs restore the whole
        # module, buffers (batch norm's running statistics) included
        return driver(
            LearnedOptimizer(
                model.parameters(),
                total_steps=budget,
                policy=policy,
                steps_per_epoch=steps_per_epoch,
                model=model,
            )
        )

    return make


OPTIMIZERS: dict[str, OptimizerSpec] = {}
BASELINES = ("adamw", "adamw-cosine", "adamw-cosine-tuned", "schedulefree", "prodigy")
LEARNED = ("lhopt", "lhopt-trainloss")  # what `lhopt bench --policy` applies to


def register(spec: OptimizerSpec) -> None:
    OPTIMIZERS[spec.name] = spec


for _spec in (
    OptimizerSpec(
        "adamw",
        drivers.adamw,
        False,
        "AdamW at LHOPT's initial hyperparameters (lr 1e-3, betas (0.9, 0.99), "
        "eps 1e-6, wd 1e-2), constant",
    ),
    OptimizerSpec(
        "adamw-cosine",
        drivers.adamw_cosine,
        True,
        "adamw with 5% linear warm-up and cosine decay to zero",
    ),
    OptimizerSpec(
        "adamw-cosine-tuned",
        drivers.adamw_cosine,
        True,
        "adamw-cosine with lr picked from {1e-4, 3e-4, 1e-3, 3e-3, 1e-2} by final "
        "validation loss (five times the compute)",
        tuned_from="adamw-cosine",
        lr_grid=TUNED_LR_GRID,
    ),
    OptimizerSpec(
        "schedulefree",
        drivers.schedulefree,
        False,
        "Schedule-Free AdamW (package schedulefree) at its defaults",
    ),
    OptimizerSpec("prodigy", drivers.prodigy, False, "Prodigy (package prodigyopt), lr 1.0"),
    OptimizerSpec(
        "lhopt",
        _learned(LearnedDriver),
        True,
        "the shipped default policy driving CIAO, no tuning",
        check=lambda: load_policy("default"),
    ),
    OptimizerSpec(
        "lhopt-trainloss",
        _learned(TrainLossDriver),
        True,
        "lhopt without a validation loss (no val_loss_fn): train-loss features only",
        check=lambda: load_policy("default"),
    ),
):
    register(_spec)


def get(name: str) -> OptimizerSpec:
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid: {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[name]


def names() -> list[str]:
    return list(OPTIMIZERS)


__all__ = [
    "BASELINES",
    "DEFAULT_LR",
    "LEARNED",
    "OPTIMIZERS",
    "TUNED_LR_GRID",
    "OptimizerSpec",
    "get",
    "names",
    "register",
]
