"""Small tabular data sets labelled by a random teacher network, fitted by an MLP.

What a practitioner most often trains: an MLP on a few hundred rows of standardised
measurements, for many epochs, a regression (squared error) or a classification. The data are
drawn by the code (nothing is downloaded) from a seed fixed by the config's data parameters, the
same for every task seed. Inputs: `inputs` Gaussian features, a fraction `skew` of them
exponentiated (log-normal, as counts and amounts are), all standardised by the training part.
The teacher: a random tanh network with one hidden layer of `teacher_width` units (a larger one
is a rougher function). `regression`: its output scaled to unit variance plus Gaussian noise of
std `noise`, then standardised, so the validation loss's floor is about noise^2 / (1 + noise^2).
`classification`: the argmax over `classes` of its unit-variance outputs plus Gumbel noise of
scale `noise`. `train_samples` training points, 1,000 validation and 2,000 test points.

The student: `depth` hidden layers of `width` units, an `activation`, optional layer norm. Test
metrics: the loss and R^2 (regression) or accuracy (classification).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import nn

from lhopt.tasks import stacked
from lhopt.tasks.base import Task, TaskConfig, splits_to
from lhopt.tasks.schema import Param, Schema

SCHEMA = Schema(
    "teacher",
    {
        "problem": Param("choice", choices=("regression", "classification")),
        "inputs": Param("int", 2, 64, log=True, doc="input features"),
        "skew": Param("float", 0.0, 0.5, doc="fraction of inputs made log-normal"),
        "teacher_width": Param("int", 4, 64, log=True, doc="hidden units of the teacher"),
        "noise": Param("float", 0.05, 1.0, log=True, doc="label noise (std or Gumbel scale)"),
        "classes": Param("int", 2, 8, doc="classification only (ignored for regression)"),
        "depth": Param("int", 1, 4, doc="hidden layers of the student"),
        "width": Param("int", 16, 256, log=True, doc="hidden units of the student"),
        "activation": Param("choice", choices=("relu", "tanh", "silu")),
        "norm": Param("choice", choices=("none", "layer")),
        "train_samples": Param("int", 50, 2000, log=True, doc="training points"),
        "batch": Param("int", 8, 128, log=True),
        "budget": Param("int", 200, 2000, log=True, doc="steps T", limits=(20, 100_000)),
    },
)
N_VAL, N_TEST = 1000, 2000
DATA_SEED = 1943  # McCulloch and Pitts (1943)
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU}


DATA_PARAMS = ("problem", "inputs", "skew", "teacher_width", "noise", "classes", "train_samples")


def make_data(p: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The fixed splits of a config: drawn from its data parameters alone (one copy shared by
    the tasks of every seed)."""
    if p["problem"] == "regression":
        p = {**p, "classes": 1}  # ignored: one output
    return _make_data(tuple(p[k] for k in DATA_PARAMS))


@functools.lru_cache(maxsize=8)
def _make_data(values: tuple) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    p = dict(zip(DATA_PARAMS, values, strict=True))
    regression = p["problem"] == "regression"
    classes = p["classes"]
    d, h = p["inputs"], p["teacher_width"]
    rng = np.random.default_rng(
        [
            DATA_SEED,
            d,
            h,
            classes,
            round(p["skew"] * 1e6),
            round(p["noise"] * 1e6),
            p["train_samples"],
        ]
    )
    n = N_VAL + N_TEST + p["train_samples"]
    x = rng.standard_normal((n, d))
    skewed = rng.random(d) < p["skew"]
    x[:, skewed] = np.exp(x[:, skewed])
    train = slice(N_VAL + N_TEST, n)
    x = (x - x[train].mean(0)) / x[train].std(0)
    w1 = rng.standard_normal((d, h)) * (2.0 / math.sqrt(d))
    b1 = rng.standard_normal(h) * 0.5
    w2 = rng.standard_normal((h, classes)) / math.sqrt(h)
    f = np.tanh(x @ w1 + b1) @ w2
    f = (f - f.mean(0)) / f.std(0)
    if regression:
        y = f + p["noise"] * rng.standard_normal(f.shape)
        y = torch.tensor((y - y[train].mean()) / y[train].std(), dtype=torch.float32)
    else:
        y = torch.tensor((f + p["noise"] * rng.gumbel(size=f.shape)).argmax(1), dtype=torch.long)
    x = torch.tensor(x, dtype=torch.float32)
    a, b = N_VAL, N_VAL + N_TEST
    return {"val": (x[:a], y[:a]), "test": (x[a:b], y[a:b]), "train": (x[b:], y[b:])}


def build_model(p: dict, outputs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    fan_in = p["inputs"]
    for _ in range(p["depth"]):
        layers.append(nn.Linear(fan_in, p["width"]))
        if p["norm"] == "layer":
            layers.append(nn.LayerNorm(p["width"]))
        layers.append(ACTIVATIONS[p["activation"]]())
        fan_in = p["width"]
    return nn.Sequential(*layers, nn.Linear(fan_in, outputs))


class TeacherTask(Task):
    family = "teacher"
    movable = True

    def __init__(self, config: TaskConfig, seed: int) -> None:
        super().__init__(config, seed)
        p = config.p
        self.regression = p["problem"] == "regression"
        self.data = make_data(p)
        torch.manual_seed(seed)
        self.model = build_model(p, 1 if self.regression else p["classes"])

    def _data_to(self, device: torch.device) -> None:
        self.data = splits_to(self.data, device)

    def _loss(self, out: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        if self.regression:
            return nn.functional.mse_loss(out, y, reduction=reduction)
        return nn.functional.cross_entropy(out, y, reduction=reduction)

    def next_batch(self) -> tuple[torch.Tensor, ...]:
        x, y = self.data["train"]
        idx = torch.randint(0, len(x), (self.config.p["batch"],), generator=self.batch_generator)
        (idx,) = self.on_device(idx)
        return x[idx], y[idx]

    @staticmethod
    def next_batches(tasks: list[TeacherTask]) -> tuple[torch.Tensor, ...]:
        x, y = tasks[0].data["train"]
        batch = tasks[0].config.p["batch"]
        idx = torch.stack(
            [torch.randint(0, len(x), (batch,), generator=t.batch_generator) for t in tasks]
        )
        (idx,) = tasks[0].on_device(idx)
        return x[idx], y[idx]  # the members share the data (drawn from the config alone)

    def train_loss(self) -> torch.Tensor:
        x, y = self.next_batch()
        return self._loss(self.model(x), y)

    def _eval_loss(self, split: str) -> float:
        x, y = self.data[split]
        return float(self._loss(self.model(x), y))

    def eval_inputs(self, split: str) -> tuple[torch.Tensor, ...]:
        return self.data[split]

    @classmethod
    def batchable(cls, config: TaskConfig) -> bool:
        return True  # Linear, LayerNorm and elementwise layers: `lhopt.tasks.stacked` runs them

    def stacked_loss(self, state: dict, batch: tuple) -> torch.Tensor:
        x, y = batch
        out = stacked.stacked_forward(self.model, state, x)
        n, b, c = out.shape
        if y.dim() < out.dim() - (not self.regression):  # one split for all (evaluation)
            y = y.expand(n, *y.shape)
        if self.regression:
            per_sample = self._loss(out, y, "none")
        else:
            per_sample = self._loss(out.reshape(n * b, c), y.reshape(-1), "none")
        return per_sample.reshape(n, -1).mean(1)

    stacked_eval = stacked_loss

    def _test_metrics(self) -> dict[str, float]:
        x, y = self.data["test"]
        out = self.model(x)
        loss = float(self._loss(out, y))
        if self.regression:
            return {"loss": loss, "r2": 1.0 - loss / float(y.var(unbiased=False))}
        return {"accuracy": float((out.argmax(-1) == y).float().mean()), "loss": loss}

    def descriptor_extras(self) -> list[float]:
        p = self.config.p
        return [float(p["depth"]), float(self.regression), math.log10(p["train_samples"]) / 4]
