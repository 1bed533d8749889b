"""Small-data regression of known nonlinear functions with noise, by an MLP.

The data are drawn by the code from a fixed seed (`DATA_SEED`; nothing is downloaded), the same
for every task seed: `train_samples` training points, 1,000 validation and 2,000 test points.
- `friedman`: Friedman's function #1, y = 10 sin(pi x1 x2) + 20 (x3 - 1/2)^2 + 10 x4 + 5 x5 +
  N(0, 1) for x uniform in [0, 1]^10 (five inputs are irrelevant); targets standardised (by the
  noise-free mean and std, so the noise floor of the MSE is 1 / 24.1). Loss: mean squared error.
- `heteroscedastic`: x uniform in [-3, 3], y = sin(2x) + x / 3 + N(0, (0.05 + 0.25 |x| / 3)^2);
  the network outputs a mean and a log-variance, trained with the Gaussian negative
  log-likelihood, a loss whose scale the network sets itself (its validation curve is noisy at
  large learning rates).
The MLP: `depth` hidden layers of `width` units, SiLU. Test metrics: the loss and the mean
squared error of the mean, and (friedman) R^2. It differs from every training family in its loss
(regression of real targets: squared error, Gaussian likelihood), its data (tabular, a few
hundred points, many epochs within T) and its inputs.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from lhopt.tasks.base import Task, TaskConfig
from lhopt.tasks.schema import Param, Schema

SCHEMA = Schema(
    "regression",
    {
        "problem": Param("choice", choices=("friedman", "heteroscedastic")),
        "depth": Param("int", 1, 4, doc="hidden layers"),
        "width": Param("int", 16, 256, log=True, doc="hidden units"),
        "train_samples": Param("int", 50, 5000, log=True, doc="training points"),
        "batch": Param("int", 8, 128, log=True),
        "budget": Param("int", 300, 3000, log=True, doc="steps T", limits=(20, 100_000)),
    },
)
N_VAL, N_TEST, N_MAX_TRAIN = 1000, 2000, 5000
DATA_SEED = 1991  # Friedman (1991)
FRIEDMAN_MEAN, FRIEDMAN_STD = 14.413, 4.9085  # of the noise-free function, x ~ U[0, 1]^10


def _friedman(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.uniform(0.0, 1.0, size=(n, 10))
    f = 10 * np.sin(np.pi * x[:, 0] * x[:, 1]) + 20 * (x[:, 2] - 0.5) ** 2
    f += 10 * x[:, 3] + 5 * x[:, 4]
    y = (f + rng.standard_normal(n) - FRIEDMAN_MEAN) / FRIEDMAN_STD
    return x, y[:, None]


def _heteroscedastic(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.uniform(-3.0, 3.0, size=(n, 1))
    std = 0.05 + 0.25 * np.abs(x) / 3
    return x, np.sin(2 * x) + x / 3 + std * rng.standard_normal((n, 1))


_DATA: dict = {}


def load_regression(problem: str, train_samples: int) -> dict:
    """The fixed splits of a problem; the training set is a prefix of the largest one."""
    if problem not in _DATA:
        make = _friedman if problem == "friedman" else _heteroscedastic
        rng = np.random.default_rng([DATA_SEED, 0 if problem == "friedman" else 1])
        x, y = make(N_VAL + N_TEST + N_MAX_TRAIN, rng)
        x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
        a, b = N_VAL, N_VAL + N_TEST
        _DATA[problem] = {"val": (x[:a], y[:a]), "test": (x[a:b], y[a:b]), "train": (x[b:], y[b:])}
    d = _DATA[problem]
    x, y = d["train"]
    return {**d, "train": (x[:train_samples], y[:train_samples])}


def build_model(inputs: int, outputs: int, depth: int, width: int) -> nn.Module:
    layers: list[nn.Module] = []
    fan_in = inputs
    for _ in range(depth):
        layers += [nn.Linear(fan_in, width), nn.SiLU()]
        fan_in = width
    return nn.Sequential(*layers, nn.Linear(fan_in, outputs))


class RegressionTask(Task):
    family = "regression"

    def __init__(self, config: TaskConfig, seed: int) -> None:
        super().__init__(config, seed)
        p = config.p
        self.nll = p["problem"] == "heteroscedastic"
        torch.manual_seed(seed)
        inputs = 1 if self.nll else 10
        self.model = build_model(inputs, 2 if self.nll else 1, p["depth"], p["width"])
        self.data = load_regression(p["problem"], p["train_samples"])

    def _loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not self.nll:
            return nn.functional.mse_loss(out, y)
        mean, log_var = out[:, :1], out[:, 1:]
        return (
            0.5 * (log_var + (y - mean) ** 2 * torch.exp(-log_var) + math.log(2 * math.pi)).mean()
        )

    def train_loss(self) -> torch.Tensor:
        x, y = self.data["train"]
        idx = torch.randint(0, len(x), (self.config.p["batch"],), generator=self.batch_generator)
        return self._loss(self.model(x[idx]), y[idx])

    def _eval_loss(self, split: str) -> float:
        x, y = self.data[split]
        return float(self._loss(self.model(x), y))

    def _test_metrics(self) -> dict[str, float]:
        x, y = self.data["test"]
        out = self.model(x)
        mse = float(((out[:, :1] - y) ** 2).mean())
        metrics = {"loss": float(self._loss(out, y)), "mse": mse}
        if not self.nll:
            metrics["r2"] = 1.0 - mse / float(y.var())
        return metrics

    def descriptor_extras(self) -> list[float]:
        p = self.config.p
        return [float(p["depth"]), float(self.nll), math.log10(p["train_samples"]) / 4]
