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
DEVICE_TYPES = ("cpu", "cuda")  # where tasks run (`check_device`)


def check_device(device: torch.device | str | None) -> torch.device:
    """`device` (default the CPU) as a `torch.device` tasks can run on; ValueError naming it
    where it is not a device, is neither the CPU nor a CUDA device, or is not on this machine."""
    if device is None:
        return torch.device("cpu")
    try:
        out = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"device {device!r} is not a torch device (e.g. 'cpu', 'cuda', 'cuda:1')"
        ) from None
    if out.type not in DEVICE_TYPES:
        raise ValueError(f"device {device!r}: tasks run on {' or '.join(DEVICE_TYPES)} only")
    if out.type == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA"
            raise ValueError(
                f"device {device!r}: CUDA is not available here (torch {torch.__version__}, "
                f"built with {build})"
            )
        if out.index is not None and out.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
        if out.index is None:  # one name per device: tensors report theirs with its index
            out = torch.device("cuda", torch.cuda.current_device())
    return out


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device`, copied to a GPU without waiting: a plain copy from pageable
    memory waits for the stream, a host sync per batch (tasks sit below `lhopt.optim`, whose
    batched optimizer copies its tables the same way)."""
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def on_device(tensors: tuple[torch.Tensor, ...], device: torch.device) -> tuple[torch.Tensor, ...]:
    """Host `tensors` on `device`, copied to a GPU without a host sync per batch."""
    if device.type == "cpu":
        return tensors
    return tuple(to_device(t, device) for t in tensors)


def splits_to(splits: dict, device: torch.device) -> dict:
    """A task's data splits (name -> tensor or tuple of tensors) with every tensor on `device`."""
    return {
        k: v.to(device) if isinstance(v, torch.Tensor) else tuple(t.to(device) for t in v)
        for k, v in splits.items()
    }


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
    """One training problem; subclasses build `self.model` and implement the three losses.

    A task is built on the CPU; `to(device)` moves it where its family allows (`movable`)."""

    family: str = ""
    # Whether `to` may move the family's tasks off the CPU: the family moves every tensor its
    # losses read (`_data_to`) and puts each batch drawn on the task's device (`on_device`).
    # Set on the meta-training families, the ones episodes on a GPU run; the others (the
    # suites' held-out kinds) have only ever run on the CPU.
    movable: bool = False
    device = torch.device("cpu")

    def __init__(self, config: TaskConfig, seed: int) -> None:
        self.config = config
        self.seed = seed
        self.budget = int(config.p["budget"])
        if self.budget < NUM_EVALS:
            raise ValueError(f"budget={self.budget} is too small: at least {NUM_EVALS} steps")
        self.batch_generator = torch.Generator().manual_seed(seed * 7919 + 1)
        self.model: nn.Module

    # -- the device ------------------------------------------------------------------------

    def to(self, device: torch.device | str) -> Task:
        """The task with its model and the data its losses read on `device`; returns it.
        Batches are still drawn on the CPU, from the task's generator, and moved as drawn, so
        a seed trains on the same data on every device."""
        device = check_device(device)
        if device == self.device:
            return self
        if not self.movable:
            raise ValueError(
                f"tasks of the {self.family!r} family run on the CPU only, not {device}"
            )
        self.model.to(device)
        self._data_to(device)
        self.device = device
        return self

    def _data_to(self, device: torch.device) -> None:
        """Move the tensors the losses read to `device` (the families that are `movable`)."""
        raise NotImplementedError(f"the {self.family!r} family does not move its data")

    def on_device(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """`tensors` (drawn on the CPU) on the task's device."""
        return on_device(tensors, self.device)

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
