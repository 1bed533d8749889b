"""Noisy quadratic models: L(x) = 1/2 sum_i h_i (x_i - xi_i)^2 with noisy targets xi ~ N(0, s^2).

Curvatures h_i are log-spaced from 1 down to 1/condition, so the condition number is exact. The
stochastic gradient h_i (x_i - xi_i) has noise proportional to the curvature, as in the noisy
quadratic model of Zhang et al. (2019). The validation and test losses are the exact expected
loss without the noise floor, 1/2 sum_i h_i x_i^2, so they are deterministic.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lhopt.tasks.base import Task, TaskConfig
from lhopt.tasks.schema import Param, Schema

SCHEMA = Schema(
    "quadratic",
    {
        "dim": Param("int", 10, 2000, log=True, doc="number of coordinates"),
        "condition": Param("float", 1e2, 3e4, log=True, doc="largest / smallest curvature"),
        "noise": Param("float", 0.1, 3.0, log=True, doc="std of the noisy targets"),
        "batch": Param("int", 1, 64, log=True, doc="noisy targets averaged per step"),
        "budget": Param("int", 200, 800, log=True, doc="steps T", limits=(20, 100_000)),
    },
)


class QuadraticTask(Task):
    family = "quadratic"
    movable = True

    def __init__(self, config: TaskConfig, seed: int) -> None:
        super().__init__(config, seed)
        p = config.p
        dim = p["dim"]
        g = torch.Generator().manual_seed(seed)
        self.h = torch.logspace(0, -math.log10(p["condition"]), dim)
        self.h = self.h[torch.randperm(dim, generator=g)]
        self.noise = p["noise"] / math.sqrt(p["batch"])
        self.model = nn.Module()
        self.model.x = nn.Parameter(torch.randn(dim, generator=g))

    def train_loss(self) -> torch.Tensor:
        xi, h = self.next_batch()
        return 0.5 * (h * (self.model.x - xi) ** 2).sum()

    def _eval_loss(self, split: str) -> float:
        return float(0.5 * (self.h * self.model.x**2).sum())

    @classmethod
    def batchable(cls, config: TaskConfig) -> bool:
        return True

    def next_batch(self) -> tuple[torch.Tensor, ...]:
        xi = self.noise * torch.randn(self.h.shape, generator=self.batch_generator)
        (xi,) = self.on_device(xi)
        return xi, self.h

    def _data_to(self, device: torch.device) -> None:
        self.h = self.h.to(device)

    def eval_inputs(self, split: str) -> tuple[torch.Tensor, ...]:
        return (self.h,)

    def stacked_loss(self, state: dict, batch: tuple) -> torch.Tensor:
        xi, h = batch
        return 0.5 * (h * (state["x"] - xi) ** 2).sum(-1)

    def stacked_eval(self, state: dict, inputs: tuple) -> torch.Tensor:
        (h,) = inputs
        return 0.5 * (h * state["x"] ** 2).sum(-1)

    def _test_metrics(self) -> dict[str, float]:
        return {"loss": self._eval_loss("test")}

    def descriptor_extras(self) -> list[float]:
        p = self.config.p
        return [math.log10(p["condition"]), math.log10(p["noise"]), 0.0]
