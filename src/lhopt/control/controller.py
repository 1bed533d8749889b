"""The controller: observe -> act -> apply, the one loop every user of a policy runs.

`LearnedOptimizer`, meta-training episodes, `lhopt demo` and the benchmarks all steer CIAO
through a `Controller`, so what a policy learned on is what users run. At each decision it reads
the features of the period that ended (CIAO's step statistics, the losses it is given, the
hyperparameters relative to their initial values, the previous action, the registers), asks the
policy for an action, carries out its register operation, then applies its relative
hyperparameter changes to every param group. Before every optimizer step it sets the factor of
the schedule shape the policy was trained with (`before_step`): the policy steers the base lr
under that shape.

Restart registers save and restore `module.state_dict()` (parameters and buffers, e.g.
batch-norm statistics) and the optimizer's state, so give the controller the model being
trained wherever there is one.

Starting over (`ControlSpec.overfit_gap` g > 0): a run whose lr is far too high for its data
fits noise within its first tenth, and a lower lr from there cannot undo it. At each decision
up to `OVERFIT_UNTIL` of T the controller reads the generalisation gap, (validation loss - the
period's mean training loss) / (first validation loss - best so far). Where it is above g at
this decision and the one before, the validation loss is above its best and the period's
training loss fell below the period's before (the gap then grows), the run starts over: the
model and optimizer state from before the first decision come back (the hyperparameters the
run started with, before the policy's first action), the registers are emptied, the policy's
recurrent state and features start afresh, and the lr CIAO applies is multiplied by
`OVERFIT_CUT` (history's `restarts` counts the starts), at most `OVERFIT_RESTARTS` times.
A gap that grows while the validation loss still falls is a run that generalises more slowly
than it fits, which a high lr may still serve; one whose training loss rises with it is a spike
of an unstable step; a validation set unlike the training data keeps a gap while both fall.
The rule needs a validation loss at the first decision (before any step), from which the gain
is measured; without one it stays off. A spec with `start_over_batch_norm` False keeps it off for a
model with batch norm, whose training loss (batch statistics) and validation loss (running
statistics) part early at a high lr without overfitting.
The copy of the first state is kept until `OVERFIT_UNTIL` or the last start, and not taken
where fewer than two decisions fall before `OVERFIT_UNTIL`; adding a param group drops it (the
rule is then off). Meta-training episodes do not run the rule: the policy is trained without
it, and its file's spec adds it.

Falling back (`ControlSpec.fallback_cut` c > 0, with g > 0): past `OVERFIT_UNTIL` a run that
overfits has its best state already, and what it lacks is a lower lr from there. Where the
start-over rule's test holds after that share of T (read on its own record of the losses since
the run's start or its last start over) and the validation loss has risen at each of the last
`FALLBACK_RISES` evaluations (a value given again at a decision is none; a spike's recovery
falls, a noisy loss seldom rises three times in a row, a model fitting noise does), the model
and optimizer state saved at the decision of the best validation loss come back and the lr
CIAO applies is multiplied by c, at most `FALLBACKS` times (history's `fallbacks` counts
them); the policy's recurrent state and the registers go on. A copy of the model's and the
optimizer's state is kept from the first decision on, taken again at each new best validation
loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lhopt.control.actions import ActionSpace
from lhopt.control.features import _finite, check_steps_per_epoch, run_features
from lhopt.control.policy import Policy
from lhopt.control.policy_file import ControlSpec
from lhopt.control.registers import RestartRegisters, Snapshot, restore, snapshot
from lhopt.optim import schedules
from lhopt.optim.hparams import HPARAMS

DEFAULT_DECISIONS = 20
# Starting over (module doc): until this share of T, the applied lr's factor at each start, how
# many starts at most.
OVERFIT_UNTIL = 0.3
OVERFIT_CUT = 0.1
OVERFIT_RESTARTS = 2
# Falling back (module doc): how many times at most, and after how many rises in a row of the
# validation loss (at the default 20 decisions, 15% of T).
FALLBACKS = 2
FALLBACK_RISES = 3
# What the rule tracks since the run's start: the first and best validation loss, the last gap
# and the last period's training loss.
_NO_GAP = {"first": None, "best": None, "prev": None, "train": None}
# Falling back reads the same, and the last validation loss and its rises in a row.
_NO_FALL = {**_NO_GAP, "last": None, "rises": 0}
# Features recorded in `history` (the whole vector is in `Decision.features`).
HISTORY_FEATURES = (
    "train/tanh_log_ratio_prev",
    "val/cdf@5",
    "stat/cos_grad_momentum",
    "stat/log_update_to_param_norm",
    "stat/clip_rate",
)


def _overfits(track: dict, g: float, train_loss: float, val_loss: float) -> bool:
    """Read a decision's gap into `track` (`_NO_GAP`'s keys, the best already holding this
    validation loss); whether the run overfits by the start-over test (module doc)."""
    gain = track["first"] - track["best"]
    now = (val_loss - train_loss) / gain if gain > 0 else None
    prev, track["prev"] = track["prev"], now
    fell = track["train"] is not None and train_loss < track["train"]
    track["train"] = train_loss
    return not (
        now is None
        or prev is None
        or min(now, prev) <= g
        or val_loss <= track["best"]  # still falling: the run generalises, more slowly
        or not fell  # both rose: a spike of an unstable step, not overfitting
    )


def decide_together(
    controllers: list[Controller],
    step: int,
    modules: list,
    train_losses: list[float | None],
    val_losses: list[float | None],
    forced: list | None = None,
) -> list[Decision]:
    """`Controller.decide` for several controllers of one policy at the same step, the policy
    run once on the batch of their features (batched meta-training episodes).

    `forced[i]`, where given, replaces controller i's sampled action: an action tuple, or an
    int j for controller j's action at this step (j's own, not forced); its log-probability is
    NaN. The policy's recurrent state advances as for a sampled action."""
    features = [
        c.observe(step, train_loss=t, val_loss=v)
        for c, t, v in zip(controllers, train_losses, val_losses, strict=True)
    ]
    policy = controllers[0].policy
    acted = policy.act_batch(
        torch.from_numpy(np.stack(features)),
        [c.hidden for c in controllers],
        [c.generator for c in controllers],
        greedy=controllers[0].greedy,
        **controllers[0].held(),
    )
    if forced is not None:
        if len(forced) != len(controllers):
            raise ValueError(f"{len(forced)} forced actions for {len(controllers)} controllers")
        own = [a for a, _, _ in acted]
        acted = [
            (a, logp, hidden)
            if f is None
            else ((own[f] if isinstance(f, int) else tuple(f)), math.nan, hidden)
            for (a, logp, hidden), f in zip(acted, forced, strict=True)
        ]
    return [
        c.carry_out(step, m, f, action, logp, hidden, train_loss=t, val_loss=v)
        for c, m, f, (action, logp, hidden), t, v in zip(
            controllers, modules, features, acted, train_losses, val_losses, strict=True
        )
    ]


def decision_steps(total_steps: int, decisions: int) -> list[int]:
    """The steps before which a run of `total_steps` steps decides: round(i T / K), i < K, with
    K = `decisions` capped at T / 4 (each period then holds at least one measured step)."""
    k = max(1, min(decisions, total_steps // 4))
    return sorted({round(i * total_steps / k) for i in range(k)})


@dataclass
class Decision:
    step: int
    features: np.ndarray
    action: tuple[int, ...]
    logp: float
    register: tuple[str, int | None]


class Controller:
    """Steers one CIAO optimizer with a policy over a run of `total_steps` steps.

    Args:
        policy: the policy network (`load_policy` gives one from a file).
        optimizer: the CIAO optimizer it steers (its statistics are read, its groups changed).
        total_steps: the run's budget T.
        decisions: how many decisions over T (`decision_steps`).
        greedy: take the most likely action (what users run) instead of sampling one.
        seed: seed of the action sampling.
        register_target: what the registers save and restore as the optimizer (default
            `optimizer`; `LearnedOptimizer` passes its CIAO state without the controller's).
        spec: the schedule shape and feature options the policy was trained with (default
            `policy.spec`, which `load_policy` sets from the file).
        lr_units: multiplies the schedule's factor (default 1): the lr CIAO applies is this
            times the base lr the policy steers (meta-training draws it per episode,
            `lhopt.meta.episode.EpisodeConfig.lr_scale`).
        steps_per_epoch: optimizer steps per pass over the training data (inf: data drawn
            fresh at every step; None: not known), read by a policy whose spec has `epochs`
            (`lhopt.control.features.run_features`) or `epochs_power` (the lr's factor) and
            ignored by the others; settable between steps.
    """

    def __init__(
        self,
        policy: Policy,
        optimizer,
        total_steps: int,
        decisions: int = DEFAULT_DECISIONS,
        *,
        greedy: bool = True,
        seed: int = 0,
        num_registers: int = 3,
        register_target=None,
        spec: ControlSpec | None = None,
        lr_units: float = 1.0,
        steps_per_epoch: float | None = None,
    ) -> None:
        if not (math.isfinite(lr_units) and lr_units > 0):
            raise ValueError(f"lr_units={lr_units!r} is out of range: allowed > 0, finite")
        self._steps_per_epoch = check_steps_per_epoch(steps_per_epoch)
        self.lr_units = float(lr_units)
        self.policy = policy
        self.optimizer = optimizer
        self.register_target = optimizer if register_target is None else register_target
        self.total_steps = total_steps
        self.decision_steps = decision_steps(total_steps, decisions)
        self.greedy = greedy
        self.space = ActionSpace(num_registers=num_registers)
        own = getattr(policy, "spec", None)
        self.spec: ControlSpec = spec or own or ControlSpec()
        self.engine = self.spec.engine(self.space)
        width = getattr(policy, "obs_dim", None)
        if width is not None and width != len(self.engine.names):
            # Features the policy cannot read: refuse here rather than at the first decision.
            raise ValueError(
                f"spec={self.spec} gives {len(self.engine.names)} features; this policy reads "
                f"{width} (it was trained with {own}; pass spec=None to use the policy's)"
            )
        self.engine.reset(optimizer.hparams[0])
        optimizer.noise_floor = self.spec.noise_floor  # the statistic as the policy read it
        self.shape = schedules.get(self.spec.schedule)
        self.horizon = self._horizon(total_steps, self._steps_per_epoch)
        self.matrix_decay = self.spec.matrix_decay(total_steps, self._steps_per_epoch)
        self.fixed = self.spec.fixed_actions(self.space)  # heads the policy does not control
        self.registers = RestartRegisters(num_registers)
        self.generator = torch.Generator().manual_seed(seed)
        self.hidden = policy.initial_state()
        self.prev_action = self.space.keep
        self.history: list[dict] = []
        self.restarts = 0  # starts over so far (module doc)
        self._start: Snapshot | None = None
        self._gap = dict(_NO_GAP)
        self.fallbacks = 0  # falls back so far (module doc)
        self._best: Snapshot | None = None
        self._fall = dict(_NO_FALL)

    @property
    def steps_per_epoch(self) -> float | None:
        return self._steps_per_epoch

    @steps_per_epoch.setter
    def steps_per_epoch(self, value: float | None) -> None:
        value = check_steps_per_epoch(value)
        self.horizon = self._horizon(self.total_steps, value)
        self.matrix_decay = self.spec.matrix_decay(self.total_steps, value)
        self._steps_per_epoch = value

    def _horizon(self, total_steps: int, steps_per_epoch: float | None) -> float:
        """The spec's `horizon_factor` for the run; a ValueError naming the values where it
        times `lr_units` exceeds what `lr_factor` allows (a short run under a large power)."""
        horizon = self.spec.horizon_factor(total_steps, steps_per_epoch)
        most = HPARAMS["lr_factor"].high
        if self.lr_units * horizon > most:
            raise ValueError(
                f"total_steps={total_steps} with horizon_power={self.spec.horizon_power:g}, "
                f"steps_per_epoch={steps_per_epoch!r} with epochs_power="
                f"{self.spec.epochs_power:g} and lr_units={self.lr_units:g} scales the lr by "
                f"{self.lr_units * horizon:.3g}, more than lr_factor allows ({most:g}): use a "
                f"longer run or a smaller power"
            )
        return horizon

    def before_step(self, step: int) -> None:
        """Set the schedule's factor for optimizer step `step` (0-based): the lr CIAO uses is
        each group's `lr` (the base the policy steers) times `lr_factor` (the shape's factor,
        times `lr_units` and the spec's `horizon_factor`); and, where the spec sets it by the
        run's passes over its data, CIAO's `matrix_decay_factor`, and where it sets it, CIAO's
        `table_decay_factor`."""
        factor = self.shape(step + 1, self.total_steps) * self.lr_units * self.horizon
        factor *= OVERFIT_CUT**self.restarts
        factor *= self.spec.fallback_cut**self.fallbacks
        for group in self.optimizer.param_groups:
            group["lr_factor"] = factor
            if self.matrix_decay is not None:
                group["matrix_decay_factor"] = self.matrix_decay
            if self.spec.table_decay_factor != 1.0:
                group["table_decay_factor"] = self.spec.table_decay_factor

    def decide(
        self,
        step: int,
        module: nn.Module,
        *,
        train_loss: float | None,
        val_loss: float | None,
        sync=None,
    ) -> Decision:
        """One decision before optimizer step `step` (0-based), given the mean train loss of the
        period that ended and the latest validation loss (None when there is none).

        `sync` (e.g. `lhopt.control.distributed.RankSync`) makes data-parallel ranks agree: its
        `features(f)` and `action(a)` return rank 0's feature vector and action, and
        `hparams(groups, names)` copies rank 0's hyperparameters into every group."""
        features = self.observe(step, train_loss=train_loss, val_loss=val_loss)
        if sync is not None:
            features = sync.features(features)
        action, logp, hidden = self.policy.act(
            torch.from_numpy(features),
            self.hidden,
            self.generator,
            greedy=self.greedy,
            **self.held(),
        )
        if sync is not None:
            action = sync.action(action)
        return self.carry_out(
            step,
            module,
            features,
            action,
            logp,
            hidden,
            train_loss=train_loss,
            val_loss=val_loss,
            sync=sync,
        )

    def held(self) -> dict:
        """The `fixed` argument of the policy's `act` when the spec holds heads (only then:
        a policy that steers every head need not take it)."""
        return {} if self.fixed is None else {"fixed": self.fixed}

    def observe(self, step: int, *, train_loss: float | None, val_loss: float | None) -> np.ndarray:
        """The features of a decision before step `step` (the first half of `decide`)."""
        return self.engine.observe(
            progress=step / self.total_steps,
            step_stats=self.optimizer.pop_step_stats(),
            train_loss=train_loss,
            val_loss=None if self.spec.hide_val else val_loss,
            hparams=self.optimizer.hparams[0],
            prev_action=self.space.encode(self.prev_action),
            registers=self.registers.info(),
            run=run_features(self.total_steps, self.steps_per_epoch),
        )

    def carry_out(
        self,
        step: int,
        module: nn.Module,
        features: np.ndarray,
        action: tuple[int, ...],
        logp: float,
        hidden,
        *,
        train_loss: float | None,
        val_loss: float | None,
        sync=None,
    ) -> Decision:
        """The second half of `decide`: the register op, the hyperparameter changes and the
        record of the policy's `action` (with its log-probability and new recurrent state)."""
        self.hidden = hidden
        progress = step / self.total_steps
        applied = action
        if self._start_over(step, module, train_loss, val_loss):
            # the policy's action, read off the run given up, is recorded but not carried out
            applied, (op, k) = self.space.keep, ("start over", None)
            self._fall.update(_NO_FALL, first=self._fall["first"], best=self._fall["first"])
            self._best = None
        else:
            fall = self._fall_back(step, module, train_loss, val_loss)
            if fall == "fall back":  # the best state stands: no register op undoes it
                op, k = fall, None
            else:
                op, k = self.space.register_op(action)
                self.registers.apply(
                    op, k, module, self.register_target, loss=train_loss, progress=progress
                )
            self.space.apply_hparams(self.optimizer.param_groups, action)
            self.prev_action = action
            if fall == "best" and op in ("none", "save"):
                # the state the next fall back returns to: the one just validated, after this
                # decision's changes of the hyperparameters
                self._best = snapshot(module, self.register_target, None, 0.0)
        if sync is not None:
            sync.hparams(self.optimizer.param_groups, [h.hparam for h in self.space.heads])
        names = self.engine.names
        groups = [
            {h.hparam: g[h.hparam] for h in self.space.heads if h.hparam in g}
            for g in self.optimizer.param_groups
        ]
        self.history.append(
            {
                "step": step,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "features": {n: float(features[names.index(n)]) for n in HISTORY_FEATURES},
                "action": {
                    h.hparam: h.choices[a] for h, a in zip(self.space.heads, applied, strict=False)
                },
                "register": op if k is None else f"{op} {k}",
                "restarts": self.restarts,
                "fallbacks": self.fallbacks,
                "hparams": groups[0],
                "groups": groups,
            }
        )
        return Decision(step, features, action, logp, (op, k))

    def _start_over(self, step: int, module: nn.Module, train_loss, val_loss) -> bool:
        """Starting over (module doc): keep the first state, update the gap, and start over
        where the rule says so; True if it did."""
        g = self.spec.overfit_gap
        if not g:
            return False
        if step / self.total_steps > OVERFIT_UNTIL:
            self._start = None  # frees the copy
            return False
        gap = self._gap
        if not self.history and self.restarts == 0:
            checks = [s for s in self.decision_steps if 0 < s <= OVERFIT_UNTIL * self.total_steps]
            # off without a validation loss to measure the gain from, or fewer than the two
            # decisions the rule reads before OVERFIT_UNTIL, or (by the spec) under batch norm
            batch_norm = not self.spec.start_over_batch_norm and any(
                isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules()
            )
            if _finite(val_loss) and len(checks) >= 2 and not batch_norm:
                self._start = snapshot(module, self.register_target, None, 0.0)
                gap["first"] = gap["best"] = val_loss
            return False
        if self._start is None or not _finite(val_loss):
            return False
        gap["best"] = min(gap["best"], val_loss)
        if not _finite(train_loss) or not _overfits(gap, g, train_loss, val_loss):
            return False
        restore(self._start, module, self.register_target)
        self.registers = RestartRegisters(len(self.registers))
        self.hidden = self.policy.initial_state()
        self.engine.reset(self.optimizer.hparams[0])
        self.prev_action = self.space.keep
        self.restarts += 1
        gap.update(_NO_GAP, first=gap["first"], best=gap["first"])
        if self.restarts >= OVERFIT_RESTARTS:
            self._start = None  # frees the copy: no more starts
        return True

    def _fall_back(self, step: int, module: nn.Module, train_loss, val_loss) -> str | None:
        """Falling back (module doc): update the record of the losses, and fall back where the
        rule says so: "fall back" if it did, "best" at a new best validation loss (the run's
        first included), else None."""
        cut, f = self.spec.fallback_cut, self._fall
        if not cut or not _finite(val_loss):
            return None
        if f["first"] is None:
            if self.history:  # the rule measures the gain from the run's first loss
                return None
            f["first"] = f["best"] = val_loss
            return "best"
        best, f["best"] = f["best"], min(f["best"], val_loss)
        if val_loss != f["last"]:  # a value given again is no new evaluation: neither way
            f["rises"] = f["rises"] + 1 if f["last"] is not None and val_loss > f["last"] else 0
        f["last"] = val_loss
        if (
            step / self.total_steps <= OVERFIT_UNTIL
            or not _finite(train_loss)
            or not _overfits(f, self.spec.overfit_gap, train_loss, val_loss)
            or f["rises"] < FALLBACK_RISES
            or self.fallbacks >= FALLBACKS
            or self._best is None
        ):
            return "best" if val_loss < best else None
        restore(self._best, module, self.register_target)
        self.fallbacks += 1
        f.update(prev=None, train=None, last=None, rises=0)  # counted afresh for the next
        return "fall back"

    def describe(self, record: dict | None = None) -> str:
        """One line about a decision (default the last): step, losses, the hyperparameters it
        left (group 0; a change marked with its factor or logit shift) and the register op."""
        r = self.history[-1] if record is None else record
        losses = {k: r[f"{k}_loss"] for k in ("train", "val")}
        loss = " ".join(f"{k} {'n/a' if v is None else f'{v:.4g}'}" for k, v in losses.items())
        parts = []
        for h in self.space.heads:
            v = r["hparams"].get(h.hparam)
            text = f"{h.hparam} {'off' if v is None else f'{v:.3g}'}"
            c = r["action"][h.hparam]
            if c != (1.0 if h.kind == "scale" else 0.0):
                text += f" (x{c:.3g})" if h.kind == "scale" else f" ({c:+.3g} logit)"
            parts.append(text)
        return (
            f"lhopt step {r['step']}/{self.total_steps}: {loss} | "
            + ", ".join(parts)
            + f" | register {r['register']}"
        )

    def empty_registers(self) -> None:
        """Forget every register (e.g. when parameters were added: a load could not restore
        the whole model any more), and the state a run would start over from, for the same
        reason: the rule is then off for the rest of the run."""
        self.registers = RestartRegisters(len(self.registers))
        self._start = None
        self._best = None

    def state_dict(self) -> dict:
        return {
            "total_steps": self.total_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "decision_steps": list(self.decision_steps),
            "hidden": [t.clone() for t in self.hidden],
            "prev_action": list(self.prev_action),
            "engine": self.engine.state_dict(),
            "registers": self.registers.state_dict(),
            "generator": self.generator.get_state(),
            "history": list(self.history),
            "restarts": self.restarts,
            "start": None if self._start is None else vars(self._start),
            "gap": dict(self._gap),
            "fallbacks": self.fallbacks,
            "best": None if self._best is None else vars(self._best),
            "fall": dict(self._fall),
        }

    def load_state_dict(self, state: dict) -> None:
        steps_per_epoch = check_steps_per_epoch(state.get("steps_per_epoch", self.steps_per_epoch))
        # checked before anything changes
        horizon = self._horizon(state["total_steps"], steps_per_epoch)
        self.total_steps = state["total_steps"]
        self.horizon = horizon
        self.matrix_decay = self.spec.matrix_decay(self.total_steps, steps_per_epoch)
        self._steps_per_epoch = steps_per_epoch
        self.decision_steps = list(state["decision_steps"])
        self.hidden = tuple(t.clone() for t in state["hidden"])
        self.prev_action = tuple(state["prev_action"])
        self.engine.load_state_dict(state["engine"])
        self.registers.load_state_dict(state["registers"])
        self.generator.set_state(state["generator"])
        self.history = list(state["history"])
        self.restarts = state.get("restarts", 0)
        start = state.get("start")
        self._start = None if start is None else Snapshot(**start)
        self._gap = dict(state.get("gap", _NO_GAP))
        self.fallbacks = state.get("fallbacks", 0)
        best = state.get("best")
        self._best = None if best is None else Snapshot(**best)
        self._fall = {**_NO_FALL, **state.get("fall", {})}
