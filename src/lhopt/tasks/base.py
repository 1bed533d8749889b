"""The task interface: a model, its data, a loss, a budget and an evaluation schedule.

A task is built from a `TaskConfig` (a family name and its parameters) and a seed; the same
config and seed give the same run on one machine. The training loop is the caller's:

    task = build_task(config, seed)
    for step in range(1, task.budget + 1):
        loss = task.train_loss()          # loss on the next training batch
        opt.zero_grad(); loss.backward(); opt.step()
        if task.is_eval_step(step): task.val_loss()
    task.test_metrics()                   # on the test split, which no controller sees
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

NUM_EVALS = 20  # evaluations of the validation loss per budget T, evenly spaced


@dataclass(frozen=True)
class TaskConfig:
    """A family name and its parameters (JSON-able scalars), hashable and canonically keyed."""

    family: str
    params: tuple[tuple[str, Any], ...]

    @classmethod
    def make(cls, family: str, **params: Any) -> TaskConfig:
        return cls(family, tuple(sorted(params.items())))

    @classmethod
    def from_dict(cls, data: dict) -> TaskConfig:
        if not isinstance(data, dict) or "family" not in data:
            raise ValueError(f"task config {data!r} must be a dict with a 'family' key")
        params = {k: v for k, v in data.items() if k != "family"}
        return cls.make(data["family"], **params)

    def to_dict(self) -> dict:
        return {"family": self.family, **dict(self.params)}

    @property
    def p(self) -> dict:
        return dict(self.params)

    def key(self) -> str:
        """Canonical text of the config (floats to 6 significant digits)."""

        def canon(v):
            return float(f"{v:.6g}") if isinstance(v, float) else v

        return json.dumps({k: canon(v) for k, v in self.to_dict().items()}, sort_keys=True)

    def name(self) -> str:
        """A short readable name."""
        p = self.p
        return p.get("name") or f"{self.family}-" + "-".join(
            f"{v}" for k, v in self.params if k not in ("name",)
        )


class Task(ABC):
    """One training problem; subclasses build `self.model` and implement the three losses."""

    family: str = ""

    def __init__(self, config: TaskConfig, seed: int) -> None:
        self.config = config
        self.seed = seed
        self.budget = int(config.p["budget"])
        if self.budget < NUM_EVALS:
            raise ValueError(f"budget={self.budget} is too small: at least {NUM_EVALS} steps")
        self.batch_generator = torch.Generator().manual_seed(seed * 7919 + 1)
        self.model: nn.Module

    # -- the schedule ---------------------------------------------------------------------

    @property
    def eval_interval(self) -> float:
        return self.budget / NUM_EVALS

    def eval_steps(self, total: int | None = None) -> list[int]:
        """Steps after which the validation loss is measured (0 = before training), up to
        `total` steps (default the budget), at the spacing budget / NUM_EVALS."""
        total = self.budget if total is None else total
        n = int(math.floor(total / self.eval_interval + 1e-9))
        return [0] + [round(i * self.eval_interval) for i in range(1, n + 1)]

    # -- what a subclass provides -----------------------------------------------------------

    @abstractmethod
    def train_loss(self) -> torch.Tensor:
        """Loss on the next training batch (the model in training mode)."""

    @abstractmethod
    def _eval_loss(self, split: str) -> float:
        """Loss over the whole `split` ("val" or "test"), model in eval mode, no grad."""

    @abstractmethod
    def _test_metrics(self) -> dict[str, float]:
        """The family's quality metrics on the test split."""

    def descriptor_extras(self) -> list[float]:
        """Family-specific entries of the task descriptor (see `descriptor`)."""
        return [0.0, 0.0, 0.0]

    # -- the stacked form, for batched meta-training (lhopt.tasks.batched) ---------------------
    # A config whose class says `batchable` runs N seeds as one computation; the others run one
    # task at a time. `state` maps the model's parameter and buffer names to the members'
    # tensors stacked along dim 0.

    @classmethod
    def batchable(cls, config: TaskConfig) -> bool:
        """Whether tasks of `config` provide the stacked form below."""
        return False

    def next_batch(self) -> tuple[torch.Tensor, ...]:
        """The tensors the next `train_loss` would use, drawn as it draws them."""
        raise NotImplementedError(f"the {self.family!r} family has no stacked form")

    @staticmethod
    def next_batches(tasks: list[Task]) -> tuple[torch.Tensor, ...] | None:
        """Optionally, the next batches of several tasks of one config at once, stacked,
        drawn as each task's `next_batch` draws it; None: one `next_batch` per task."""
        return None

    def eval_inputs(self, split: str) -> tuple[torch.Tensor, ...]:
        """The tensors the loss over `split` reads (the same objects each call)."""
        raise NotImplementedError(f"the {self.family!r} family has no stacked form")

    def stacked_loss(self, state: dict, batch: tuple) -> torch.Tensor:
        """The N members' `train_loss` (shape (N,)) in one computation, `batch` stacked along
        dim 0 (a tensor every member shares given once, unstacked)."""
        raise NotImplementedError(f"the {self.family!r} family has no stacked form")

    def stacked_eval(self, state: dict, inputs: tuple) -> torch.Tensor:
        """The N members' loss over a split given `eval_inputs(split)` (eval mode, no grad)."""
        raise NotImplementedError(f"the {self.family!r} family has no stacked form")

    # -- what callers use -----------------------------------------------------------------

    def val_loss(self) -> float:
        return self._evaluate(lambda: self._eval_loss("val"))

    def test_loss(self) -> float:
        return self._evaluate(lambda: self._eval_loss("test"))

    def test_metrics(self) -> dict[str, float]:
        return self._evaluate(self._test_metrics)

    def _evaluate(self, fn):
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                return fn()
        finally:
            self.model.train(was_training)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def descriptor(self) -> np.ndarray:
        """Small numeric description of the task, for the critic (never for the policy):
        family one-hot, log10 parameters, log2 batch, log10 budget, then 3 family extras."""
        from lhopt.tasks.registry import FAMILY_NAMES

        onehot = [float(self.family == f) for f in FAMILY_NAMES]
        batch = float(self.config.p.get("batch", 1))
        extras = self.descriptor_extras()
        return np.array(
            onehot
            + [math.log10(self.num_params()), math.log2(batch), math.log10(self.budget)]
            + extras,
            dtype=np.float32,
        )
