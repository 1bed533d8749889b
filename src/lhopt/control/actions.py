"""The action space: discrete, relative changes to the inner optimizer's hyperparameters.

One categorical head per hyperparameter, all applied together at each outer step, plus one head
for the restart registers. Each head either multiplies its hyperparameter by a factor ("scale") or
shifts its logit ("logit", for values in (0, 1)); the result is clipped to the head's bounds.
Every head includes "keep", which leaves the value exactly as it is. A value of 0 (the feature
switched off, e.g. weight_decay=0) stays 0 under scaling, and a hyperparameter set to None
(clipping off) is left alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lhopt.optim.hparams import HPARAMS


@dataclass(frozen=True)
class Head:
    hparam: str
    kind: str  # "scale" or "logit"
    choices: tuple[float, ...]
    low: float
    high: float

    @property
    def keep_index(self) -> int:
        return self.choices.index(1.0 if self.kind == "scale" else 0.0)

    def apply(self, value: float | None, choice: int) -> float | None:
        c = self.choices[choice]
        if value is None or choice == self.keep_index:
            return value
        if self.kind == "scale":
            if value == 0.0:
                return 0.0
            new = value * c
        else:
            p = min(max(value, 1e-12), 1 - 1e-12)
            new = 1.0 / (1.0 + math.exp(-(math.log(p / (1 - p)) + c)))
        return min(max(new, self.low), self.high)

    def encode(self, choice: int) -> float:
        """The relative change a choice makes: log of the factor, or the logit shift."""
        c = self.choices[choice]
        return math.log(c) if self.kind == "scale" else c


# docs/method.md, section 3, from the official configuration.
OFFICIAL_HEADS: tuple[Head, ...] = (
    Head("lr", "scale", (0.5, 0.707, 0.9, 1.0, 1.1, 1.414, 2.0), 1e-8, 1.0),
    Head("weight_decay", "scale", (0.5, 1.0, 2.0), 1e-8, 1.0),
    Head("epsilon", "scale", (0.5, 1.0, 2.0), 1e-8, 1.0),
    Head("ombeta1", "scale", (0.5, 1.0, 2.0), 1e-5, 1.0),
    Head("ombeta2", "scale", (0.5, 1.0, 2.0), 1e-5, 0.1),
    Head("grad_clip_ombeta", "scale", (0.5, 1.0, 2.0), 1e-4, 0.5),
    Head("lamb_update_norm_ombeta", "scale", (1 / 1.5, 1.0, 1.5), 1e-3, 1.0),
    Head("clip_fraction", "logit", (-1.0, -0.3, 0.0, 0.3, 1.0), 1e-3, 1 - 1e-3),
)

REGISTER_OPS = ("none", "save", "load", "swap")


class ActionSpace:
    """Multi-discrete action space over hyperparameter heads and a restart-register head.

    An action is a sequence of ints, one per head in `nvec` order: the hyperparameter heads, then
    the register head, whose choice 0 does nothing and 1 + 3k + j applies op j (save, load,
    swap) to register k.
    """

    def __init__(self, heads: Sequence[Head] = OFFICIAL_HEADS, num_registers: int = 3) -> None:
        if num_registers < 0:
            raise ValueError(f"num_registers={num_registers} is out of range: allowed >= 0")
        names = [h.hparam for h in heads]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate heads in {names}")
        for h in heads:
            spec = HPARAMS.get(h.hparam)
            if spec is None or spec.boolean:
                raise ValueError(f"head {h.hparam!r} is not a numeric CIAO hyperparameter")
            if h.kind not in ("scale", "logit"):
                raise ValueError(f"head {h.hparam!r} has kind {h.kind!r}: use 'scale' or 'logit'")
            inside = (h.low > spec.low or (h.low == spec.low and not spec.low_open)) and (
                h.high <= spec.high
            )
            if not (h.low < h.high and inside):
                raise ValueError(
                    f"head {h.hparam!r} bounds [{h.low:g}, {h.high:g}] must lie in "
                    f"{spec.describe()}"
                )
            if (1.0 if h.kind == "scale" else 0.0) not in h.choices:
                raise ValueError(f"head {h.hparam!r} has no 'keep' choice in {h.choices}")
        self.heads = tuple(heads)
        self.num_registers = num_registers

    @property
    def nvec(self) -> tuple[int, ...]:
        """Number of choices of each head (hyperparameter heads, then the register head)."""
        return tuple(len(h.choices) for h in self.heads) + (1 + 3 * self.num_registers,)

    @property
    def keep(self) -> tuple[int, ...]:
        """The action that changes nothing."""
        return tuple(h.keep_index for h in self.heads) + (0,)

    @property
    def hparam_kinds(self) -> dict[str, str]:
        return {h.hparam: ("logit" if h.kind == "logit" else "log") for h in self.heads}

    @property
    def encoding_names(self) -> tuple[str, ...]:
        """Names of the entries of `encode`: one per head, then the one-hot register op."""
        return tuple(h.hparam for h in self.heads) + tuple(f"register_{op}" for op in REGISTER_OPS)

    @property
    def encoding_dim(self) -> int:
        return len(self.encoding_names)

    def check(self, action: Sequence[int]) -> tuple[int, ...]:
        action = tuple(int(a) for a in action)
        if len(action) != len(self.nvec) or any(
            not 0 <= a < n for a, n in zip(action, self.nvec, strict=True)
        ):
            raise ValueError(f"action {action} is not valid: head sizes are {self.nvec}")
        return action

    def apply_hparams(self, param_groups: Sequence[dict], action: Sequence[int]) -> None:
        """Apply the hyperparameter part of `action` to every param group, in place."""
        action = self.check(action)
        for group in param_groups:
            for head, choice in zip(self.heads, action, strict=False):
                if head.hparam in group:
                    group[head.hparam] = head.apply(group[head.hparam], choice)

    def register_op(self, action: Sequence[int]) -> tuple[str, int | None]:
        """(op, register index) of the register head; ("none", None) when it does nothing."""
        choice = self.check(action)[-1]
        if choice == 0:
            return "none", None
        k, j = divmod(choice - 1, 3)
        return REGISTER_OPS[1 + j], k

    def encode(self, action: Sequence[int]) -> list[float]:
        """Previous-action features: each head's relative change, then a one-hot register op."""
        action = self.check(action)
        out = [h.encode(a) for h, a in zip(self.heads, action, strict=False)]
        op, _ = self.register_op(action)
        return out + [float(op == name) for name in REGISTER_OPS]

    def sample(self, rng: np.random.Generator) -> tuple[int, ...]:
        return tuple(int(rng.integers(n)) for n in self.nvec)
