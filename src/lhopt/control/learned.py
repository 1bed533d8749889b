"""`lhopt.LearnedOptimizer`: CIAO driven by a meta-trained policy, as a drop-in optimizer.

    opt = lhopt.LearnedOptimizer(model.parameters(), total_steps=T)
    for step in range(T):
        loss = criterion(model(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
        opt.report(train_loss=loss)          # a tensor or a float; no host sync per step

Before steps 0, T/K, 2T/K, ... (K = `decisions`, default 20) the controller reads the features of
the period that ended (CIAO's statistics, the mean reported train loss, the validation loss from
`val_loss_fn` or the last one reported), asks the policy, and applies its action: relative changes
of every hyperparameter and a restart-register operation. Everything the decisions depend on is in
`state_dict()`, so a resumed run decides exactly as the uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import operator
import os
import sys
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from lhopt.control import distributed
from lhopt.control.controller import DEFAULT_DECISIONS, Controller
from lhopt.control.policy_file import load_policy
from lhopt.optim.ciao import CIAO


def _positive_int(name: str, value) -> int:
    """`value` as a Python int if it is a positive integer (NumPy and 0-d torch integers too, which
    array arithmetic gives); bools, floats and strings are refused."""
    try:
        n = operator.index(value)  # ints and integer scalars; not floats, strings
    except TypeError:
        n = None
    if isinstance(value, bool) or n is None or n < 1:
        raise ValueError(f"{name}={value!r} is not allowed: a positive int")
    return n


# torch's and lhopt's folders, and contextlib's file (not the whole standard library)
_INTERNAL = (
    *(str(Path(m.__file__).parent) + os.sep for m in (torch, sys.modules["lhopt"])),
    contextlib.__file__,
)


def _user_stacklevel() -> int:
    """The `stacklevel` that points a warning at the first caller outside lhopt, torch (the
    optimizer's step hooks, GradScaler) and contextlib (`torch.no_grad`'s wrapper)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1
    return level


class _ParamsModule(nn.Module):
    """The optimizer's parameters as a module, for the registers when no model was given."""

    def __init__(self, params: list[torch.Tensor]) -> None:
        super().__init__()
        self.params = nn.ParameterList(params)


class _CIAOState:
    """What a restart register saves of a LearnedOptimizer: its CIAO state, not the controller's
    (which holds the registers themselves)."""

    def __init__(self, opt: CIAO) -> None:
        self.opt = opt

    def state_dict(self) -> dict:
        return CIAO.state_dict(self.opt)

    def load_state_dict(self, state: dict) -> None:
        CIAO.load_state_dict(self.opt, state)


class LearnedOptimizer(CIAO):
    """CIAO whose hyperparameters a learned policy controls. See the module doc.

    Args:
        params: parameters or param groups.
        total_steps: the training budget T (a positive int); decisions are spread over it.
        val_loss_fn: optional ``() -> float`` called at each decision point. Without it the
            controller uses the last `report(val_loss=...)`, or runs on train-loss features alone
            (the validation features then read "not available", which the policy saw rarely in
            meta-training: expect smaller gains; see docs/learned.md).
        policy: "default" (shipped with lhopt) or the path of a policy file.
        decisions: number of decisions over `total_steps` (default 20, at most T / 4).
        sample: sample each action from the policy (seeded by `seed`) instead of taking the most
            likely one. Default False: the greedy actions are what meta-training evaluates.
        seed: seed of the policy's action sampling.
        model: the module being trained (optional). Restart registers then save and restore
            its parameters and buffers (batch-norm statistics), as in meta-training; without
            it they restore the parameters alone.
        sync_ranks: when `torch.distributed` is initialised with more than one rank (DDP), every
            rank takes rank 0's decision from the losses averaged over the ranks, and gets rank
            0's hyperparameters (`lhopt.control.distributed`). False: each rank decides alone
            (ranks training different models).
        **kwargs: CIAO's hyperparameters (their initial values; default the official ones).
    """

    def __init__(
        self,
        params: Iterable,
        total_steps: int,
        val_loss_fn: Callable | None = None,
        policy: str | Path = "default",
        decisions: int = DEFAULT_DECISIONS,
        sample: bool = False,
        seed: int = 0,
        model: nn.Module | None = None,
        sync_ranks: bool = True,
        **kwargs,
    ) -> None:
        total_steps = _positive_int("total_steps", total_steps)
        decisions = _positive_int("decisions", decisions)
        if val_loss_fn is not None and not callable(val_loss_fn):
            raise ValueError(f"val_loss_fn={val_loss_fn!r} must be callable or None")
        if model is not None and not isinstance(model, nn.Module):
            raise ValueError(f"model={model!r} is not allowed: an nn.Module or None")
        policy_net = load_policy(policy)
        super().__init__(params, **kwargs)
        self.model = model
        self._check_model()
        self.total_steps = total_steps
        self.val_loss_fn = val_loss_fn
        self.sync_ranks = bool(sync_ranks)
        self.controller = Controller(
            policy_net,
            self,
            total_steps,
            decisions,
            greedy=not sample,
            seed=seed,
            register_target=_CIAOState(self),
        )
        self._decide_at = set(self.controller.decision_steps)  # checked every step
        self._loss_sum: torch.Tensor | None = None
        self._loss_count = 0
        self._val_loss: float | None = None
        self._taken = 0  # optimizer steps taken through this controller
        self._warned = False
        self._warned_no_loss = False
        self._warned_lr = False
        self._lrs_set: list[float] | None = None  # each group's lr as the last decision left it

    @property
    def policy_net(self):
        return self.controller.policy

    @property
    def decision_steps(self) -> list[int]:
        return self.controller.decision_steps

    @property
    def history(self) -> list[dict]:
        """One record per decision: step, losses, a few features, the action, the register op
        and the hyperparameters it left (param group 0)."""
        return self.controller.history

    # -- what users call ------------------------------------------------------------------

    def report(self, train_loss=None, val_loss=None) -> None:
        """Record the latest losses. A train-loss tensor is accumulated on its device."""
        if train_loss is not None:
            loss = (
                train_loss.detach().float()
                if torch.is_tensor(train_loss)
                else torch.tensor(float(train_loss))
            )
            self._loss_sum = (
                loss if self._loss_sum is None else self._loss_sum + loss.to(self._loss_sum.device)
            )
            self._loss_count += 1
        if val_loss is not None:
            self._val_loss = float(val_loss)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
            self.report(train_loss=loss)
        if self._taken >= self.total_steps and not self._warned:
            warnings.warn(
                f"LearnedOptimizer: training past total_steps={self.total_steps}; the "
                "hyperparameters stay as the policy last set them",
                stacklevel=_user_stacklevel(),
            )
            self._warned = True
        if self._taken in self._decide_at:
            self._decide()
        super().step()
        self._taken += 1
        return loss

    def add_param_group(self, param_group: dict) -> None:
        """Add a group (e.g. layers unfrozen mid-run); the controller then steers it too.

        The restart registers are emptied: what they hold was saved without the new parameters,
        so loading it could not restore the whole model."""
        if getattr(self, "model", None) is not None and isinstance(param_group, dict):
            params = param_group.get("params", [])
            params = [params] if torch.is_tensor(params) else list(params)
            param_group = {**param_group, "params": params}
            self._check_model(params)  # before adding: a refused group leaves nothing behind
        super().add_param_group(param_group)
        if hasattr(self, "controller"):  # not during __init__, which adds the first groups
            self.controller.empty_registers()
            if self._lrs_set is not None:
                self._lrs_set.append(self.param_groups[-1]["lr"])

    def _check_model(self, params=None) -> None:
        if self.model is None:
            return
        owned = {id(p) for p in self.model.parameters()}
        if params is None:
            params = [p for g in self.param_groups for p in g["params"]]
        if any(id(p) not in owned for p in params):
            raise ValueError(
                "model= must hold every parameter the optimizer updates (the registers restore "
                "the model): pass the module whose parameters you optimise, or no model"
            )

    @property
    def _module(self) -> nn.Module:
        """What the registers save and restore: the model, or every parameter of every group."""
        if self.model is not None:
            return self.model
        return _ParamsModule([p for g in self.param_groups for p in g["params"]])

    # -- the controller ---------------------------------------------------------------------

    def _check_lr_untouched(self) -> None:
        """Warn once if a group's lr changed since the last decision: something else (an LR
        scheduler, the loop itself) is moving what the policy steers, and each decision scales
        whatever value it finds."""
        if self._warned_lr or self._lrs_set is None:
            return
        now = [g["lr"] for g in self.param_groups]
        if now == self._lrs_set:
            return
        i = next(i for i, (a, b) in enumerate(zip(now, self._lrs_set, strict=True)) if a != b)
        scheduled = "initial_lr" in self.param_groups[i]  # torch's LR schedulers add it
        cause = "an LR scheduler is attached" if scheduled else "something outside the policy"
        warnings.warn(
            f"LearnedOptimizer: the lr of param group {i} changed between decisions "
            f"({self._lrs_set[i]:.3g} -> {now[i]:.3g}, before step {self._taken}): {cause}. The "
            "policy sets the learning rate itself; it scales whatever value it finds, so an LR "
            "scheduler or manual changes fight it. Use LearnedOptimizer without one",
            stacklevel=_user_stacklevel(),
        )
        self._warned_lr = True

    def _decide(self) -> None:
        self._check_lr_untouched()
        train, total, count = None, 0.0, self._loss_count
        if self._loss_sum is not None and self._loss_count:
            total = float(self._loss_sum)  # the one sync of this period
            train = total / self._loss_count
        self._loss_sum, self._loss_count = None, 0
        if train is None and self._taken > 0 and not self._warned_no_loss:
            warnings.warn(
                f"LearnedOptimizer: no train loss was reported between the last decision and step "
                f"{self._taken}; call opt.report(train_loss=loss) after each step (or pass a "
                "closure to step()): without it the policy decides blind to the loss",
                stacklevel=_user_stacklevel(),
            )
            self._warned_no_loss = True
        if self.val_loss_fn is not None:
            self._val_loss = float(self.val_loss_fn())
        val, sync = self._val_loss, None
        if self.sync_ranks and distributed.active():  # every rank takes rank 0's decision
            sync = distributed.RankSync()
            train, val = sync.losses(total, count, val)
        self.controller.decide(self._taken, self._module, train_loss=train, val_loss=val, sync=sync)
        self._lrs_set = [g["lr"] for g in self.param_groups]

    # -- saving and loading ----------------------------------------------------------------

    def state_dict(self) -> dict:
        sd = super().state_dict()
        sd["controller"] = {
            **self.controller.state_dict(),
            "taken": self._taken,
            "loss_sum": None if self._loss_sum is None else self._loss_sum.clone(),
            "loss_count": self._loss_count,
            "val_loss": self._val_loss,
            "warned": self._warned,
            "warned_no_loss": self._warned_no_loss,
            "warned_lr": self._warned_lr,
            "lrs_set": None if self._lrs_set is None else list(self._lrs_set),
        }
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        c = state_dict.get("controller")
        if c is None:
            raise ValueError("not a LearnedOptimizer state_dict: the 'controller' entry is missing")
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "controller"})
        self.controller.load_state_dict(c)
        self.total_steps = c["total_steps"]
        self._decide_at = set(self.controller.decision_steps)
        self._taken = c["taken"]
        self._loss_sum = None if c["loss_sum"] is None else c["loss_sum"].clone()
        self._loss_count = c["loss_count"]
        self._val_loss = c["val_loss"]
        self._warned = c["warned"]
        self._warned_no_loss = c.get("warned_no_loss", False)  # saved before the warning existed
        self._warned_lr = c.get("warned_lr", False)
        lrs = c.get("lrs_set")  # absent before the check existed: it starts at the next decision
        self._lrs_set = None if lrs is None else list(lrs)


__all__ = ["DEFAULT_DECISIONS", "LearnedOptimizer"]
