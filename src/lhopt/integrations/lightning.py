"""PyTorch Lightning with `LearnedOptimizer` (docs/integrations.md).

    from lhopt.integrations.lightning import LHOPTCallback, learned_optimizer

    class Model(lightning.LightningModule):
        def configure_optimizers(self):
            return learned_optimizer(self)        # total_steps = trainer.estimated_stepping_batches

        def validation_step(self, batch, i):
            self.log("val_loss", self.loss(batch))   # what the callback reports

    trainer = lightning.Trainer(..., callbacks=[LHOPTCallback()])

`learned_optimizer` builds the optimizer for the Trainer's number of optimizer steps (gradient
accumulation included) and its optimizer steps per epoch (`steps_per_epoch`, where the data
loader has a length), with the restart registers holding the module. `LHOPTCallback` gives the
policy the train loss of every optimizer step (the mean of its micro-batches' `training_step`
losses, unscaled from Lightning's division by `accumulate_grad_batches`) and the logged validation
loss each time validation ends (the sanity check excluded). Return no LR scheduler from
`configure_optimizers`: the policy sets the learning rate.
"""

from __future__ import annotations

import math
import warnings

import torch

from lhopt.control.learned import LearnedOptimizer
from lhopt.extras import require

pl = require("lightning.pytorch", "integrations")


def learned_optimizer(module, params=None, **kwargs) -> LearnedOptimizer:
    """A `LearnedOptimizer` for `module`'s run, to return from `configure_optimizers`:
    `total_steps` is `module.trainer.estimated_stepping_batches`, `steps_per_epoch` its
    optimizer steps per epoch (None where the data loader has no length), `model` the module.
    `params` defaults to the module's parameters; `kwargs` go to `LearnedOptimizer` (a
    `steps_per_epoch` there wins)."""
    total = module.trainer.estimated_stepping_batches
    if not math.isfinite(total) or total < 1:
        raise ValueError(
            f"learned_optimizer: the Trainer's run has {total} optimizer steps; LearnedOptimizer "
            "needs a finite budget: set max_steps or max_epochs"
        )
    params = module.parameters() if params is None else params
    if "steps_per_epoch" not in kwargs:
        kwargs["steps_per_epoch"] = _steps_per_epoch(module.trainer)
    return LearnedOptimizer(params, total_steps=int(total), model=module, **kwargs)


def _steps_per_epoch(trainer) -> float | None:
    """Optimizer steps per epoch of the Trainer's run (its training batches per epoch over
    the gradient accumulation), None where its data loader has no length."""
    if trainer.train_dataloader is None:  # a run set by max_steps alone has not loaded it
        trainer.fit_loop.setup_data()
    batches = trainer.num_training_batches
    if trainer.train_dataloader is None or not math.isfinite(batches) or batches < 1:
        return None
    return float(math.ceil(batches / trainer.accumulate_grad_batches))


class LHOPTCallback(pl.Callback):
    """Reports a Lightning run's losses to its `LearnedOptimizer` (see the module doc).

    Args:
        val_key: the logged metric reported as the validation loss when validation ends.
        train_key: None (default): each step's loss is the `loss` `training_step` returned; a
            name: the logged metric of that name, read after each training batch (for manual
            optimization, whose outputs Lightning does not collect).
    """

    def __init__(self, val_key: str = "val_loss", train_key: str | None = None) -> None:
        self.val_key = val_key
        self.train_key = train_key
        self.optimizer: LearnedOptimizer | None = None
        self._warned_val = False
        self._reset()

    def _reset(self) -> None:
        self._pending: torch.Tensor | None = None  # micro-batch losses of the step under way
        self._pending_n = 0
        self._period: torch.Tensor | None = None  # per-step losses since the last decision
        self._period_n = 0

    def on_train_start(self, trainer, pl_module) -> None:
        found = [o for o in trainer.optimizers if isinstance(o, LearnedOptimizer)]
        if len(found) != 1:
            raise ValueError(
                f"LHOPTCallback: configure_optimizers must return one LearnedOptimizer, got "
                f"{[type(o).__name__ for o in trainer.optimizers]}"
            )
        opt = found[0]
        total = trainer.estimated_stepping_batches
        if opt.total_steps != total:
            raise ValueError(
                f"LHOPTCallback: the LearnedOptimizer was built for total_steps={opt.total_steps}, "
                f"the Trainer takes {total} optimizer steps: build it with "
                "lhopt.integrations.lightning.learned_optimizer(self)"
            )
        for config in trainer.lr_scheduler_configs:
            if config.scheduler.optimizer is opt:
                raise ValueError(
                    "LHOPTCallback: an LR scheduler is attached to the LearnedOptimizer; the "
                    "policy sets the learning rate: return the optimizer alone"
                )
        self.optimizer = opt
        self._reset()
        self._steps = trainer.global_step
        opt.train_loss_fn = self._period_loss  # this account, not the closure's scaled loss

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.optimizer is None:
            return
        if self.train_key is not None:
            loss = trainer.callback_metrics.get(self.train_key)
        else:
            loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
            if torch.is_tensor(loss):  # Lightning divided it by accumulate_grad_batches
                loss = loss.detach().float() * trainer.accumulate_grad_batches
        if torch.is_tensor(loss) or isinstance(loss, float | int):
            loss = torch.as_tensor(loss, dtype=torch.float32).detach()
            self._pending = loss if self._pending is None else self._pending + loss
            self._pending_n += 1
        if trainer.global_step != self._steps:  # an optimizer step was taken in this batch
            self._steps = trainer.global_step
            if self._pending_n:
                step = self._pending / self._pending_n
                self._period = step if self._period is None else self._period + step
                self._period_n += 1
            self._pending, self._pending_n = None, 0

    def _period_loss(self) -> float | None:
        """The mean train loss of the optimizer steps since the last decision (one host sync)."""
        if not self._period_n:
            return None
        value = float(self._period) / self._period_n
        self._period, self._period_n = None, 0
        return value

    def on_validation_end(self, trainer, pl_module) -> None:
        if self.optimizer is None or trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.val_key)
        if value is None:
            if not self._warned_val:
                warnings.warn(
                    f"LHOPTCallback: no logged metric {self.val_key!r} after validation (logged: "
                    f"{sorted(trainer.callback_metrics)}); log it with self.log({self.val_key!r}, "
                    "loss) in validation_step, or pass val_key=",
                    stacklevel=2,
                )
                self._warned_val = True
            return
        self.optimizer.report(val_loss=float(value))

    def on_train_end(self, trainer, pl_module) -> None:
        if self.optimizer is not None and self.optimizer.train_loss_fn == self._period_loss:
            self.optimizer.train_loss_fn = None
