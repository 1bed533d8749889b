"""Documented parameter ranges of a task family: checks configs and samples them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def _round_sig(x: float, digits: int = 3) -> float:
    return float(f"{x:.{digits}g}")


@dataclass(frozen=True)
class Param:
    """An int or float sampled in [low, high] (log-uniformly if `log`), or one of `choices`.

    A config may hold any value within `limits` (default: the sampling range): a budget outside
    the training distribution is still a valid task."""

    kind: str  # "int", "float" or "choice"
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: Sequence[Any] = ()
    doc: str = ""
    limits: tuple[float, float] | None = None

    @property
    def bounds(self) -> tuple[float, float]:
        return self.limits or (self.low, self.high)

    def describe(self) -> str:
        if self.kind == "choice":
            return f"one of {list(self.choices)}"
        lo, hi = self.bounds
        return f"{self.kind} in [{lo:g}, {hi:g}]"

    def check(self, name: str, value: Any) -> None:
        if self.kind == "choice":
            if value not in self.choices:
                raise ValueError(f"{name}={value!r} is not allowed: {self.describe()}")
            return
        ok_type = isinstance(value, int) if self.kind == "int" else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok_type:
            raise ValueError(f"{name}={value!r} is not allowed: {self.describe()}")
        lo, hi = self.bounds
        if not (math.isfinite(value) and lo <= value <= hi):
            raise ValueError(f"{name}={value!r} is out of range: {self.describe()}")

    def sample(self, rng: np.random.Generator) -> Any:
        if self.kind == "choice":
            return self.choices[int(rng.integers(len(self.choices)))]
        if self.log:
            x = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            x = rng.uniform(self.low, self.high)
        if self.kind == "int":
            return int(min(max(round(x), self.low), self.high))
        return _round_sig(x)


@dataclass(frozen=True)
class Schema:
    """The parameters of a family; `fixed` ones are allowed in configs but not sampled."""

    family: str
    params: dict[str, Param]
    fixed: dict[str, Param] | None = None

    def all_params(self) -> dict[str, Param]:
        return {**self.params, **(self.fixed or {})}

    def check(self, config: dict) -> None:
        allowed = self.all_params()
        unknown = sorted(set(config) - set(allowed) - {"family", "name"})
        if unknown:
            raise ValueError(
                f"unknown parameter(s) {unknown} for task family {self.family!r}; valid: "
                + "; ".join(f"{k}: {p.describe()}" for k, p in allowed.items())
            )
        missing = sorted(set(self.params) - set(config))
        if missing:
            raise ValueError(f"task family {self.family!r} needs parameter(s) {missing}")
        for k, v in config.items():
            if k in allowed:
                allowed[k].check(k, v)

    def sample(self, rng: np.random.Generator) -> dict:
        return {k: p.sample(rng) for k, p in self.params.items()}
