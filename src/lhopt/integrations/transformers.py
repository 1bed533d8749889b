"""Hugging Face `Trainer` with `LearnedOptimizer` (docs/integrations.md).

    from lhopt.integrations.transformers import LHOPTTrainer

    trainer = LHOPTTrainer(model=model, args=args, train_dataset=train, eval_dataset=val)
    trainer.train()
    trainer.lhopt_optimizer.history      # what the policy did

`LHOPTTrainer` is a `transformers.Trainer` that

- builds a `LearnedOptimizer` with `total_steps` = the Trainer's max steps (optimizer steps,
  gradient accumulation included) and `steps_per_epoch` = its optimizer steps per epoch (where
  the data loader has a length; transformers >= 4.49), over the Trainer's usual param groups
  (no weight decay on biases and norms), with the restart registers holding the model;
- attaches a scheduler that never changes the lr (`lr_scheduler_type`, `warmup_*` and
  `learning_rate` of the `TrainingArguments` are not used: the policy sets the learning rate);
- reports the train loss of every optimizer step: the sum of its micro-batches' losses as the
  Trainer computes them (each scaled for gradient accumulation), i.e. the loss the Trainer logs;
- reports the validation loss (`eval_loss`, or `val_metric`) whenever the Trainer evaluates,
  and, for a policy that starts a run over where it overfits (`ControlSpec.overfit_gap`),
  evaluates once before the first step, from which that rule measures the gain.

The optimizer's options go in `lhopt={...}` (`policy`, `decisions`, `lr`, `val_loss_fn`, ...).
"""

from __future__ import annotations

import torch

from lhopt.control.learned import LearnedOptimizer
from lhopt.extras import require

transformers = require("transformers", "integrations")


class _PolicyLR(torch.optim.lr_scheduler.LRScheduler):
    """The Trainer's scheduler slot, filled with one that leaves every lr as the policy set it;
    `get_last_lr()` (which the Trainer logs) reads the lrs the optimizer holds."""

    def get_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def step(self, epoch=None) -> None:
        self.last_epoch += 1
        self._last_lr = self.get_lr()

    def get_last_lr(self) -> list[float]:
        return self.get_lr()


class _Report(transformers.TrainerCallback):
    """Feeds the optimizer: each optimizer step's train loss, each evaluation's loss."""

    def __init__(self, trainer: LHOPTTrainer) -> None:
        self.trainer = trainer

    def on_optimizer_step(self, args, state, control, **kwargs):
        t = self.trainer
        if t.lhopt_optimizer is not None and t._lhopt_step_loss is not None:
            t.lhopt_optimizer.report(train_loss=t._lhopt_step_loss)
        t._lhopt_step_loss = None

    def on_train_begin(self, args, state, control, **kwargs):
        t = self.trainer
        opt = t.lhopt_optimizer
        if (
            state.global_step == 0  # not on a resume: the controller's state has its start
            and opt is not None
            and opt.controller.spec.overfit_gap
            and opt.val_loss_fn is None
            and t.eval_dataset is not None
            and args.eval_strategy != "no"
        ):
            t.evaluate()  # reported by on_evaluate before the first decision

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        t = self.trainer
        if t.lhopt_optimizer is None or not metrics:
            return
        value = metrics.get(t.lhopt_val_metric)
        if value is not None:  # NaN and inf too: the policy sees the divergence
            t.lhopt_optimizer.report(val_loss=float(value))


class LHOPTTrainer(transformers.Trainer):
    """A `transformers.Trainer` whose optimizer is a `LearnedOptimizer` (see the module doc).

    Args:
        lhopt: keyword arguments of `LearnedOptimizer` (not `params`, `total_steps` or `model`,
            which the Trainer gives).
        val_metric: the metric of `evaluate()` reported as the validation loss.
        *args, **kwargs: those of `transformers.Trainer` (not `optimizers`).
    """

    def __init__(
        self, *args, lhopt: dict | None = None, val_metric: str = "eval_loss", **kwargs
    ) -> None:
        optimizers = kwargs.get("optimizers") or (None, None)
        if any(o is not None for o in optimizers) or kwargs.get("optimizer_cls_and_kwargs"):
            raise ValueError(
                "LHOPTTrainer builds its LearnedOptimizer itself (total_steps from the Trainer, "
                "no LR scheduler): pass its options as lhopt={...}, not optimizers="
            )
        self.lhopt_options = dict(lhopt or {})
        given = {"params", "total_steps", "model"} & set(self.lhopt_options)
        if given:
            raise ValueError(f"lhopt={{...}} must not set {sorted(given)}: the Trainer gives them")
        self.lhopt_val_metric = val_metric
        self.lhopt_optimizer: LearnedOptimizer | None = None
        self._lhopt_step_loss: torch.Tensor | None = None
        self._lhopt_steps_per_epoch: float | None = None
        super().__init__(*args, **kwargs)
        self.add_callback(_Report(self))

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            opt_model = self.model if model is None else model
            decay = set(self.get_decay_parameter_names(opt_model))
            named = [(n, p) for n, p in opt_model.named_parameters() if p.requires_grad]
            groups = [
                {"params": [p for n, p in named if n in decay]},
                {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0},
            ]
            total = self.state.max_steps
            if not total or total < 1:
                raise ValueError(
                    "LHOPTTrainer: the Trainer's max steps are not known yet; it creates the "
                    "optimizer from train()"
                )
            options = {"steps_per_epoch": self._lhopt_steps_per_epoch, **self.lhopt_options}
            self.lhopt_optimizer = LearnedOptimizer(
                [g for g in groups if g["params"]],
                total_steps=total,
                model=opt_model,
                **options,
            )
            self.optimizer = self.lhopt_optimizer
        return self.optimizer

    def set_initial_training_values(self, args, dataloader, *rest, **kwargs):
        """The Trainer's counts for `train()`; records its optimizer steps per epoch for the
        policy (`steps_per_epoch`), where its data loader has a length. The Trainer has this
        method from transformers 4.49 on; before, `steps_per_epoch` is passed only when given
        in `lhopt={...}`."""
        self._lhopt_steps_per_epoch = None
        values = super().set_initial_training_values(args, dataloader, *rest, **kwargs)
        if transformers.trainer_utils.has_length(dataloader):
            self._lhopt_steps_per_epoch = float(values[1])  # num_update_steps_per_epoch
        return values

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            opt = self.lhopt_optimizer
            if opt is not None and opt.total_steps != num_training_steps:
                raise ValueError(
                    f"LHOPTTrainer: the optimizer was built for {opt.total_steps} steps, the "
                    f"Trainer runs {num_training_steps}"
                )
            self.lr_scheduler = _PolicyLR(self.optimizer if optimizer is None else optimizer)
            self._created_lr_scheduler = True
        return self.lr_scheduler

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        # The Trainer's micro-batch losses are scaled for gradient accumulation: their sum over
        # one optimizer step is that step's loss (what the Trainer logs).
        step, before = loss.detach().float(), self._lhopt_step_loss
        self._lhopt_step_loss = step if before is None else before + step
        return loss
