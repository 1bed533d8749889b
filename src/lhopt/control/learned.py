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
import hashlib
import logging
import math
import numbers
import operator
import os
import sys
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lhopt.control import distributed
from lhopt.control.controller import DEFAULT_DECISIONS, OVERFIT_UNTIL, Controller
from lhopt.control.features import check_steps_per_epoch
from lhopt.control.policy_file import load_policy
from lhopt.optim import schedules
from lhopt.optim.ciao import CIAO
from lhopt.optim.groups import split_vectors
from lhopt.optim.hparams import DEFAULTS, describe_value

_log = logging.getLogger("lhopt")


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


_LOSS_ALLOWED = (
    "a loss is a real number or a one-element real tensor (NaN and inf are allowed: they tell "
    "the policy that the run diverged)"
)


def _loss_value(what: str, value) -> torch.Tensor | float:
    """`value` checked as a loss: a float, or a one-element real tensor as a detached float32
    scalar on its device (no host sync). Anything else (a string, None, a tensor of several
    elements, a complex or bool value) is a ValueError that starts with `what`."""
    if torch.is_tensor(value):
        if value.numel() == 1 and not value.is_complex() and value.dtype != torch.bool:
            return value.detach().float().reshape(())
    elif isinstance(value, np.ndarray):
        if value.size == 1 and value.dtype.kind in "fiu":
            return float(value.reshape(()))
    elif isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_):
        return float(value)
    raise ValueError(f"{what}{describe_value(value)} is not allowed: {_LOSS_ALLOWED}")


class _CheckedValLossFn:
    """A `val_loss_fn` as decisions call it: its result checked as a loss and made a float, so
    that a wrong return value is a ValueError naming `val_loss_fn` (the function itself is
    `__wrapped__`)."""

    def __init__(self, fn: Callable) -> None:
        self.__wrapped__ = fn

    def __call__(self) -> float:
        return float(_loss_value("val_loss_fn() returned ", self.__wrapped__()))

    def __repr__(self) -> str:
        return f"checked({self.__wrapped__!r})"


def _policy_fingerprint(policy: nn.Module) -> str:
    """A hash of a policy's weights and buffers: which policy a saved state was made with."""
    h = hashlib.sha256()
    for name, t in sorted(policy.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# torch's and lhopt's folders, and contextlib's file (not the whole standard library)
_INTERNAL = (
    *(str(Path(m.__file__).parent) + os.sep for m in (torch, sys.modules["lhopt"])),
    contextlib.__file__,
)


def _same(a, b) -> bool:
    """Equal, or equal floats up to rounding (1 - 0.9 against 0.1)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9)
    return a == b


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
        verbose: print one line per decision to stderr (step, losses, hyperparameters, register
            op). Either way the line goes to the `logging` logger "lhopt" at INFO level (from
            rank 0 only when ranks are synced).
        train_loss_fn: optional ``() -> float | None`` called at each decision for the mean train
            loss of the period that ended, in place of the losses given to `report` (and returned
            by a `step` closure). For framework integrations that keep their own account
            (`lhopt.integrations.lightning`); also settable as an attribute.
        schedule: the schedule shape under the policy's base lr ("constant" or "cosine",
            `lhopt.optim.schedules`). The policy file records the shape it was trained with,
            which is the default; another one is refused.
        steps_per_epoch: optimizer steps per pass over the training data (e.g.
            ``len(train_loader)``; ``math.inf`` when every batch is fresh data), or None (not
            known, the default). A policy trained to read it (its file's spec has `epochs`)
            tells from it, at the first decision, a run long for its data (that will overfit)
            from a short one (that underfits); a policy with an `epochs_power` scales its lr
            by the run's passes over the data, and one with `matrix_decay_below` (the shipped
            one) decays dense matrices less in a run of few passes; the others ignore it. Also
            settable as an attribute; the framework integrations pass it.
        decay_vectors: False: each group's tensors of one dimension or none (biases, norms'
            gains) are moved to a copy of the group with ``weight_decay=0.0``
            (`lhopt.optim.groups.split_vectors`), as AdamW recipes build by hand, so a group
            given as i is not group i of `param_groups`. True: the groups as given. None (the
            default): the policy file's setting (its spec's `no_decay_vectors`). Groups added
            later by `add_param_group` are taken as given, as torch's optimizers take them.
        **kwargs: CIAO's hyperparameters (their initial values; `matrix_decay_factor` is the
            controller's where the policy file's spec sets it by the run's passes over its
            data, `ControlSpec.matrix_decay_below`, and `table_decay_factor` where the spec
            sets `table_decay_factor`). Default: the ones the policy
            file records that its training episodes started from (`policy_net.initial`, e.g.
            lr 1e-2 for a policy that searches from above), else CIAO's official ones.
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
        verbose: bool = False,
        train_loss_fn: Callable | None = None,
        schedule: str | None = None,
        steps_per_epoch: float | None = None,
        decay_vectors: bool | None = None,
        **kwargs,
    ) -> None:
        total_steps = _positive_int("total_steps", total_steps)
        steps_per_epoch = check_steps_per_epoch(steps_per_epoch)
        decisions = _positive_int("decisions", decisions)
        if val_loss_fn is not None and not callable(val_loss_fn):
            raise ValueError(f"val_loss_fn={val_loss_fn!r} must be callable or None")
        if model is not None and not isinstance(model, nn.Module):
            raise ValueError(f"model={model!r} is not allowed: an nn.Module or None")
        if schedule is not None:
            schedules.get(schedule)  # a ValueError naming the allowed shapes
        if decay_vectors is not None and not isinstance(decay_vectors, bool):
            raise ValueError(f"decay_vectors={decay_vectors!r} is not allowed: True, False or None")
        policy_net = load_policy(policy)
        if decay_vectors is None:
            decay_vectors = not policy_net.spec.no_decay_vectors
        self.decay_vectors = decay_vectors
        if not decay_vectors:
            params = split_vectors(params)
        if schedule is not None and schedule != policy_net.spec.schedule:
            raise ValueError(
                f"schedule={schedule!r} is not allowed with policy {str(policy)!r}: it was "
                f"trained with schedule {policy_net.spec.schedule!r} (leave schedule unset)"
            )
        # where the policy's spec sets a decay factor, a value given is refused
        # (`add_param_group` checks the groups)
        spec = policy_net.spec
        self._decay_rules: dict[str, str] = {}
        if spec.matrix_decay_below:
            self._decay_rules["matrix_decay_factor"] = (
                f"matrix_decay_factor is set by policy {str(policy)!r} from the run's passes "
                f"over its data (below {spec.matrix_decay_below:g} passes: "
                f"{spec.matrix_decay_factor:g}, else 1): leave it unset"
            )
        if spec.table_decay_factor != 1.0:
            self._decay_rules["table_decay_factor"] = (
                f"table_decay_factor is set by policy {str(policy)!r} "
                f"({spec.table_decay_factor:g}): leave it unset"
            )
        for name, rule in self._decay_rules.items():
            if name in kwargs:
                raise ValueError(rule)
        start = dict(policy_net.initial)
        for alias, names in (("betas", ("ombeta1", "ombeta2")), ("eps", ("epsilon",))):
            if kwargs.get(alias) is not None:  # AdamW's name, given: it replaces the start
                for name in names:
                    start.pop(name, None)
        super().__init__(params, **{**start, **kwargs})
        # what the call moved off the file's start (under AdamW's names too)
        moved = {
            k: self.defaults[k]
            for k, v in policy_net.initial.items()
            if not _same(self.defaults[k], v)
        }
        if moved:  # e.g. an AdamW lr carried over: the policy never started there
            given = ", ".join(f"{k}={v!r}" for k, v in moved.items())
            trained = ", ".join(f"{k}={policy_net.initial[k]!r}" for k in moved)
            warnings.warn(
                f"LearnedOptimizer: {given} overrides the start this policy was trained from "
                f"({trained}); it then acts outside what it saw. Leave them unset to start "
                "where it was trained",
                stacklevel=_user_stacklevel(),
            )
        trained_lr = policy_net.initial.get("lr", DEFAULTS["lr"])
        own = [
            (i, g["lr"])
            for i, g in enumerate(self.param_groups)
            if g["lr"] != self.defaults["lr"] and not _same(g["lr"], trained_lr)
        ]
        if own:  # e.g. a per-group lr of an AdamW fine-tuning recipe
            given = ", ".join(f"group {i} lr={lr!r}" for i, lr in own)
            relative = (
                " (under LAMB's trust ratio its lr is a step relative to the weights, not AdamW's)"
                if self.defaults["lamb_power"] > 0
                else ""
            )
            warnings.warn(
                f"LearnedOptimizer: {given} differs from the lr this policy was trained to start "
                f"from ({trained_lr!r}); it then acts outside what it saw{relative}. "
                "Leave 'lr' out of the param groups to start them where it was trained",
                stacklevel=_user_stacklevel(),
            )
        self.model = model
        self._check_model()
        self.val_loss_fn = val_loss_fn
        self.sync_ranks = bool(sync_ranks)
        self.verbose = bool(verbose)
        if train_loss_fn is not None and not callable(train_loss_fn):
            raise ValueError(f"train_loss_fn={train_loss_fn!r} must be callable or None")
        self.train_loss_fn = train_loss_fn
        self.controller = Controller(
            policy_net,
            self,
            total_steps,
            decisions,
            greedy=not sample,
            seed=seed,
            register_target=_CIAOState(self),
            steps_per_epoch=steps_per_epoch,
        )
        self._decide_at = set(self.controller.decision_steps)  # checked every step
        self._loss_sum: torch.Tensor | None = None
        self._loss_count = 0
        self._val_loss: float | None = None
        self._taken = 0  # optimizer steps taken through this controller
        self._warned = False
        self._warned_no_loss = False
        self._warned_no_val = False
        self._warned_lr = False
        self._lrs_set: list[float] | None = None  # each group's lr as the last decision left it
        self._decided: int | None = None  # the step before which the last decision was taken
        self._policy_id: str | None = None  # `_policy_fingerprint`, computed when first needed

    @property
    def policy_net(self):
        return self.controller.policy

    @property
    def total_steps(self) -> int:
        """The training budget T the decisions are spread over."""
        return self.controller.total_steps

    @property
    def steps_per_epoch(self) -> float | None:
        """Optimizer steps per pass over the training data (None: not known); see the class."""
        return self.controller.steps_per_epoch

    @steps_per_epoch.setter
    def steps_per_epoch(self, value: float | None) -> None:
        self.controller.steps_per_epoch = value  # checked there

    @property
    def decision_steps(self) -> list[int]:
        return self.controller.decision_steps

    @property
    def val_loss_fn(self) -> Callable[[], float] | None:
        """What decisions call for the validation loss: the function given, its result checked
        as a loss (a ValueError naming `val_loss_fn` otherwise); the function is `.__wrapped__`."""
        return self._val_loss_fn

    @val_loss_fn.setter
    def val_loss_fn(self, fn: Callable | None) -> None:
        if fn is not None and not callable(fn):
            raise ValueError(f"val_loss_fn={fn!r} must be callable or None")
        if fn is not None and not isinstance(fn, _CheckedValLossFn):
            fn = _CheckedValLossFn(fn)
        self._val_loss_fn = fn

    @property
    def history(self) -> list[dict]:
        """One record per decision: step, losses, a few features, the action, the register op,
        the hyperparameters it left in param group 0 ("hparams") and in every group ("groups",
        a list). `lhopt.plot_history(opt.history, path)` draws them."""
        return self.controller.history

    # -- what users call ------------------------------------------------------------------

    def report(self, train_loss=None, val_loss=None) -> None:
        """Record the latest losses: real numbers or one-element tensors. A train-loss tensor is
        accumulated on its device (no host sync). NaN and inf are recorded: the policy sees the
        divergence. Anything else (a string, a tensor of several elements) is a ValueError
        naming the argument, and nothing is recorded."""
        train = None if train_loss is None else _loss_value("train_loss=", train_loss)
        val = None if val_loss is None else float(_loss_value("val_loss=", val_loss))
        if train is not None:
            loss = train if torch.is_tensor(train) else torch.tensor(train)
            self._loss_sum = (
                loss if self._loss_sum is None else self._loss_sum + loss.to(self._loss_sum.device)
            )
            self._loss_count += 1
        if val is not None:
            self._val_loss = val

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
            if loss is not None:
                _loss_value("train_loss=", loss)  # checked before anything moves
        if self._taken >= self.total_steps and not self._warned:
            T = self.total_steps
            ended = self.controller.shape(T, T) == 0.0
            warnings.warn(
                f"LearnedOptimizer: training past total_steps={T}: "
                + (
                    f"the policy's {self.controller.spec.schedule!r} schedule has brought the "
                    "lr to 0 there, so further steps change nothing"
                    if ended
                    else "the hyperparameters stay as the policy last set them"
                )
                + "; construct the optimizer with the run's full length as total_steps",
                stacklevel=_user_stacklevel(),
            )
            self._warned = True
        if self._taken in self._decide_at and self._decided != self._taken:
            self._decide_or_restore()
        self.controller.before_step(self._taken)
        self._ciao_step()
        self._taken += 1
        if loss is not None:  # as a loop that reports after step(): in the period it ends
            self.report(train_loss=loss)
        return loss

    def _decide_or_restore(self) -> None:
        """`_decide`; if it raises (e.g. `val_loss_fn` returned no loss), the losses reported
        since the last decision are kept, so the next `step()` decides with them."""
        saved = (self._loss_sum, self._loss_count, self._val_loss, self._warned_no_loss)
        try:
            self._decide()
        except BaseException:
            self._loss_sum, self._loss_count, self._val_loss, self._warned_no_loss = saved
            raise
        self._decided = self._taken

    def _ciao_step(self) -> None:
        """CIAO's step; one that raises (a sparse gradient, a hyperparameter set out of range)
        leaves the step counters as they were."""
        counters = (self.steps, self.skipped_steps, dict(self._stats.period))
        try:
            super().step()
        except BaseException:
            self.steps, self.skipped_steps, self._stats.period = counters
            raise

    def add_param_group(self, param_group: dict) -> None:
        """Add a group (e.g. layers unfrozen mid-run); the controller then steers it too.

        The restart registers are emptied: what they hold was saved without the new parameters,
        so loading it could not restore the whole model."""
        for name, rule in getattr(self, "_decay_rules", {}).items():
            if isinstance(param_group, dict) and name in param_group:
                raise ValueError(rule)
        if getattr(self, "model", None) is not None and isinstance(param_group, dict):
            params = param_group.get("params", [])
            params = [params] if torch.is_tensor(params) else list(params)
            param_group = {**param_group, "params": params}
            # (name, tensor) pairs, as torch's optimizers take them, are checked by their tensor
            tensors = [p[1] if isinstance(p, tuple) and len(p) == 2 else p for p in params]
            self._check_model(tensors)  # before adding: a refused group leaves nothing behind
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

    def _warn_if_no_val_loss(self, val: float | None) -> None:
        """Warn once when the part of the run in which the controller may start it over has
        passed with no validation loss (`val`, after the ranks' sync): the rule could not act
        (what that costs: docs/learned.md). Not earlier: integrations evaluate on their own
        schedule; not on data a run passes over at most once (`steps_per_epoch` at least T, or
        `math.inf` for fresh data), which it cannot overfit."""
        # a validation loss, once given, stays: `val` is None only while none has come
        if self._warned_no_val or val is not None:
            return
        total = self.controller.total_steps
        spe = self.steps_per_epoch
        if self._taken <= OVERFIT_UNTIL * total or (spe is not None and spe >= total):
            return
        warnings.warn(
            f"LearnedOptimizer: no validation loss by step {self._taken} of {total}, so the "
            "policy could not start a run that overfits over, which on small data costs most of "
            "its gain (see 'Without val_loss_fn' in docs/learned.md). Pass val_loss_fn, or call "
            "opt.report(val_loss=...) (validate at least every 30% of the run); where every "
            "batch is fresh data, pass steps_per_epoch=math.inf",
            stacklevel=_user_stacklevel(),
        )
        self._warned_no_val = True

    def _decide(self) -> None:
        self._check_lr_untouched()
        spec = self.controller.spec
        if self._taken == 0 and self.steps_per_epoch is None:  # what the policy cannot apply
            if spec.epochs_power:
                warnings.warn(
                    "LearnedOptimizer: this policy scales its lr by the run's passes over its "
                    f"data (epochs_power={spec.epochs_power:g}), but steps_per_epoch is not set: "
                    "its lr is left unscaled; pass steps_per_epoch (math.inf for fresh data)",
                    stacklevel=_user_stacklevel(),
                )
            if spec.matrix_decay_below:
                warnings.warn(
                    "LearnedOptimizer: this policy decays dense matrices less in a run of fewer "
                    f"than {spec.matrix_decay_below:g} passes over its data, but steps_per_epoch "
                    "is not set: dense matrices keep the full weight decay; pass steps_per_epoch "
                    "(e.g. len(train_loader); math.inf for fresh data)",
                    stacklevel=_user_stacklevel(),
                )
        train, total, count = None, 0.0, self._loss_count
        if self.train_loss_fn is not None:  # an integration's own account of the period
            t = self.train_loss_fn()
            train, total, count = (None, 0.0, 0) if t is None else (float(t), float(t), 1)
        elif self._loss_sum is not None and self._loss_count:
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
        self._warn_if_no_val_loss(val)
        self.controller.decide(self._taken, self._module, train_loss=train, val_loss=val, sync=sync)
        if sync is None or torch.distributed.get_rank() == 0:
            line = self.controller.describe()
            _log.info(line)
            if self.verbose:
                print(line, file=sys.stderr, flush=True)
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
            "decay_vectors": self.decay_vectors,
            "warned": self._warned,
            "warned_no_loss": self._warned_no_loss,
            "warned_lr": self._warned_lr,
            "warned_no_val": self._warned_no_val,
            "lrs_set": None if self._lrs_set is None else list(self._lrs_set),
            "decided": self._decided,
            "policy": self._policy_fingerprint(),
        }
        return sd

    def _policy_fingerprint(self) -> str:
        if self._policy_id is None:
            self._policy_id = _policy_fingerprint(self.controller.policy)
        return self._policy_id

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a state saved by `state_dict()`. One made for other parameters (their number or
        shapes), with another policy or for another feature layout is refused with a ValueError
        before anything changes: the optimizer goes on as it was."""
        c = state_dict.get("controller") if isinstance(state_dict, dict) else None
        if c is None:
            raise ValueError("not a LearnedOptimizer state_dict: the 'controller' entry is missing")
        self._check_loadable(state_dict, c)
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "controller"})
        self.controller.load_state_dict(c)
        self._decide_at = set(self.controller.decision_steps)
        self._taken = c["taken"]
        self._loss_sum = None if c["loss_sum"] is None else c["loss_sum"].clone()
        self._loss_count = c["loss_count"]
        self._val_loss = c["val_loss"]
        self._warned = c["warned"]
        self._warned_no_loss = c.get("warned_no_loss", False)  # saved before the warning existed
        self._warned_lr = c.get("warned_lr", False)
        self._warned_no_val = c.get("warned_no_val", False)  # absent before the warning existed
        lrs = c.get("lrs_set")  # absent before the check existed: it starts at the next decision
        self._lrs_set = None if lrs is None else list(lrs)
        self._decided = c.get("decided")

    def _check_loadable(self, state_dict: dict, c: dict) -> None:
        """Raise a ValueError if `state_dict` was not made for this optimizer and its policy."""
        needed = {"total_steps", "hidden", "prev_action", "registers", "taken", "loss_count"}
        missing = needed - set(c)
        if missing:
            raise ValueError(
                f"not a LearnedOptimizer state_dict: its 'controller' entry lacks {sorted(missing)}"
            )
        policy = c.get("policy")  # absent in states saved before it was recorded
        if policy is not None and policy != self._policy_fingerprint():
            raise ValueError(
                f"state_dict was made with another policy (weights {policy}, this optimizer's "
                f"{self._policy_fingerprint()}): construct the LearnedOptimizer with the policy "
                "that made it"
            )
        hidden = [tuple(t.shape) for t in c["hidden"]]
        expected = [tuple(t.shape) for t in self.controller.policy.initial_state()]
        if hidden != expected or len(c["prev_action"]) != len(self.controller.space.nvec):
            raise ValueError(
                f"state_dict was made with another policy (LSTM state {hidden}, this policy's "
                f"{expected}): construct the LearnedOptimizer with the policy that made it"
            )
        saved = c.get("decay_vectors")  # absent in states saved before it was recorded
        if saved is not None and saved != self.decay_vectors:
            raise ValueError(
                f"state_dict was saved by a run of decay_vectors={saved}, this optimizer's is "
                f"{self.decay_vectors}: their param groups differ, so construct the "
                f"LearnedOptimizer with decay_vectors={saved} to resume it"
            )
        if c["total_steps"] != self.total_steps:
            raise ValueError(
                f"state_dict was saved by a run of total_steps={c['total_steps']}, this "
                f"optimizer's is {self.total_steps}: the schedule and the decisions are spread "
                f"over the saved run's length, so construct the LearnedOptimizer with "
                f"total_steps={c['total_steps']} to resume it"
            )
        self._check_param_shapes(state_dict)
        # The controller's state on a scratch controller: what it refuses changes nothing here.
        scratch = Controller(
            self.controller.policy,
            self,
            _positive_int("the saved total_steps", c["total_steps"]),
            num_registers=len(self.controller.registers),
        )
        try:
            scratch.load_state_dict(c)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
            raise ValueError(
                f"state_dict's controller state does not fit this optimizer: {e}"
            ) from e
        shapes = {k: tuple(v.shape) for k, v in self._module.state_dict().items()}
        held = [
            (f"restart register {k}", slot)
            for k, slot in enumerate(c["registers"].get("slots", []))
        ]
        held.append(("copy of the run's start (kept to start over from)", c.get("start")))
        held.append(("copy of the run's best state (kept to fall back to)", c.get("best")))
        for what, slot in held:
            saved = slot and {n: tuple(v.shape) for n, v in slot["model"].items()}
            if saved and saved != shapes:
                raise ValueError(
                    f"state_dict's {what} holds another model (its tensors and shapes differ "
                    "from this optimizer's): it was made for other parameters, or with model= "
                    "where this optimizer has none (or the reverse): construct it as the one "
                    "that saved it was"
                )

    def _check_param_shapes(self, state_dict: dict) -> None:
        groups, state = state_dict.get("param_groups"), state_dict.get("state")
        if not isinstance(groups, list) or not isinstance(state, dict):
            raise ValueError("not an optimizer state_dict: 'param_groups' or 'state' is missing")
        if len(groups) != len(self.param_groups):
            raise ValueError(
                f"state_dict has {len(groups)} param groups, this optimizer "
                f"{len(self.param_groups)}: it was made for other parameters"
            )
        for gi, (saved, group) in enumerate(zip(groups, self.param_groups, strict=True)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"state_dict's param group {gi} has {len(saved['params'])} parameters, this "
                    f"optimizer's {len(group['params'])}: it was made for other parameters"
                )
            for pi, (sid, p) in enumerate(zip(saved["params"], group["params"], strict=True)):
                for key, value in state.get(sid, {}).items():
                    if torch.is_tensor(value) and value.dim() and value.shape != p.shape:
                        raise ValueError(
                            f"state_dict was made for other parameters: parameter {pi} of param "
                            f"group {gi} has shape {tuple(p.shape)}, its saved {key!r} "
                            f"{tuple(value.shape)}"
                        )


__all__ = ["DEFAULT_DECISIONS", "LearnedOptimizer"]
