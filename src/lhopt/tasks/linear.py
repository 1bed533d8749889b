"""Softmax regression on synthetic data with correlated inputs: a convex training task.

The data are drawn by the code (nothing is downloaded) from a seed fixed by the config's data
parameters, the same for every task seed. Inputs x = Q diag(s) z with z ~ N(0, I), Q a random
rotation and s log-spaced from 1 down to 1 / sqrt(`condition`), so the input covariance has
exactly that condition number and is not diagonal (Adam's per-coordinate scaling does not undo
it). Labels: the argmax of a random linear teacher's logits plus Gumbel noise (a softmax
teacher of temperature 1), then a fraction `label_noise` replaced by uniform random classes.
`train_samples` training points (a few hundred in a thousand dimensions overfit; many epochs
within T), 1,000 validation and 2,000 test points. The model is one linear layer; the loss is
cross-entropy, the test metrics accuracy and loss. No other family is linear or convex in its
parameters but the quadratics, whose gradient noise is synthetic; this one's comes from data.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from lhopt.tasks.base import TaskConfig
from lhopt.tasks.classification import SplitClassificationTask
from lhopt.tasks.schema import Param, Schema

SCHEMA = Schema(
    "linear",
    {
        "dim": Param("int", 10, 1000, log=True, doc="input dimension"),
        "classes": Param("int", 2, 20, log=True),
        "condition": Param("float", 1.0, 1e4, log=True, doc="input covariance condition number"),
        "label_noise": Param("float", 0.0, 0.3, doc="fraction of labels made uniform"),
        "train_samples": Param("int", 100, 10_000, log=True, doc="training points"),
        "batch": Param("int", 16, 256, log=True),
        "budget": Param("int", 200, 2000, log=True, doc="steps T", limits=(20, 100_000)),
    },
)
N_VAL, N_TEST = 1000, 2000
DATA_SEED = 1958  # Cox (1958), on the regression analysis of binary sequences


def make_data(p: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The fixed splits of a config: drawn from its data parameters alone."""
    dim, classes = p["dim"], p["classes"]
    seed = [DATA_SEED, dim, classes, round(p["condition"] * 1000), round(p["label_noise"] * 1e6)]
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    scales = np.logspace(0.0, -0.5 * math.log10(p["condition"]), dim)
    teacher = rng.standard_normal((dim, classes)) * (3.0 / math.sqrt(dim))
    n = N_VAL + N_TEST + p["train_samples"]
    x = (rng.standard_normal((n, dim)) * scales) @ q.T
    logits = (x / scales.mean()) @ teacher
    y = (logits + rng.gumbel(size=logits.shape)).argmax(1)
    flip = rng.random(n) < p["label_noise"]
    y[flip] = rng.integers(0, classes, int(flip.sum()))
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.long)
    a, b = N_VAL, N_VAL + N_TEST
    return {"val": (x[:a], y[:a]), "test": (x[a:b], y[a:b]), "train": (x[b:], y[b:])}


class LinearTask(SplitClassificationTask):
    family = "linear"
    movable = True

    def __init__(self, config: TaskConfig, seed: int) -> None:
        super().__init__(config, seed)
        p = config.p
        torch.manual_seed(seed)
        self.model = nn.Linear(p["dim"], p["classes"])
        self.data = make_data(p)

    def descriptor_extras(self) -> list[float]:
        p = self.config.p
        return [
            math.log10(p["condition"]) / 4,
            p["label_noise"],
            math.log10(p["train_samples"] / p["dim"]) / 3,
        ]
