"""MNIST-1D classification (Greydanus 2020) with MLPs and 1-D CNNs.

The data set is generated locally by the `mnist1d` package from its templates (no download) and
cached as .npz in the lhopt cache. 10,000 samples: 7,000 train, 1,000 validation, 2,000 test.
The losses: cross-entropy, or MSE / MAE / Huber between the logits and one-hot targets.
`train_samples` (not sampled; all 7,000 by default) trains on the first N training samples only,
the same validation and test sets: small data for overfitting within a budget.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from torch import nn

from lhopt.extras import require
from lhopt.tasks import stacked
from lhopt.tasks.base import Task, TaskConfig, check_device, splits_to
from lhopt.tasks.data import cache_dir
from lhopt.tasks.schema import Param, Schema

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
}
SCHEMA = Schema(
    "mnist1d",
    {
        "arch": Param("choice", choices=("mlp", "cnn")),
        "depth": Param("int", 1, 7, doc="hidden layers (MLP) or conv layers (CNN, at most 3)"),
        "width": Param("int", 32, 256, log=True, doc="hidden units or channels"),
        "norm": Param("choice", choices=("none", "batch", "layer")),
        "activation": Param("choice", choices=tuple(ACTIVATIONS)),
        "dropout": Param("float", 0.0, 0.3),
        "loss": Param("choice", choices=("ce", "mse", "mae", "huber")),
        "batch": Param("int", 32, 256, log=True),
        "epochs": Param("int", 1, 5),
    },
    fixed={
        "budget": Param("int", 20, 100_000, doc="steps T; default from epochs and batch"),
        "train_samples": Param("int", 100, 7000, doc="the first N training samples (all 7,000)"),
    },
)
N_TRAIN, N_VAL, N_TEST = 7000, 1000, 2000
MIN_BUDGET, MAX_BUDGET = 100, 1500


def budget_for(config: dict) -> int:
    """Default budget: the epochs over the full training set, kept within [100, 1500] steps
    (with fewer `train_samples` the same budget passes over them more often)."""
    if "budget" in config:
        return config["budget"]
    steps = config["epochs"] * N_TRAIN // config["batch"]
    return int(min(max(steps, MIN_BUDGET), MAX_BUDGET))


_DATA: dict | None = None
_ON_DEVICE: dict[torch.device, dict] = {}  # copies of _DATA off the CPU, one per device


def load_mnist1d(
    device: torch.device | None = None,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The fixed MNIST-1D splits, generated once (about 3 s) and cached; on `device` (default
    the CPU), one copy per device, which every task there shares."""
    global _DATA
    if device is not None and device.type != "cpu":
        device = check_device(device)  # one key per device: "cuda" is "cuda:0"
        if device not in _ON_DEVICE:
            _ON_DEVICE[device] = splits_to(load_mnist1d(), device)
        return _ON_DEVICE[device]
    if _DATA is None:
        path = cache_dir() / "mnist1d-10000-seed42.npz"
        if not path.exists():
            mnist1d = require("mnist1d.data", "bench")
            args = mnist1d.get_dataset_args()
            args.num_samples, args.train_split, args.seed = 10_000, 0.8, 42
            d = mnist1d.make_dataset(args)
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
            np.savez(tmp, x=d["x"], y=d["y"], x_test=d["x_test"], y_test=d["y_test"])
            tmp.replace(path)
        d = np.load(path)
        x, y = torch.tensor(d["x"], dtype=torch.float32), torch.tensor(d["y"], dtype=torch.long)
        xt, yt = torch.tensor(d["x_test"], dtype=torch.float32), torch.tensor(d["y_test"])
        _DATA = {
            "train": (x[:N_TRAIN], y[:N_TRAIN]),
            "val": (x[N_TRAIN:], y[N_TRAIN:]),
            "test": (xt, yt.long()),
        }
    return _DATA


def _norm(kind: str, width: int, conv: bool) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm1d(width)
    if kind == "layer":
        return nn.GroupNorm(1, width) if conv else nn.LayerNorm(width)
    return nn.Identity()


def build_model(p: dict) -> nn.Module:
    act, width, drop = ACTIVATIONS[p["activation"]], p["width"], p["dropout"]
    layers: list[nn.Module] = []
    if p["arch"] == "mlp":
        fan_in = 40
        for _ in range(p["depth"]):
            layers += [
                nn.Linear(fan_in, width),
                _norm(p["norm"], width, False),
                act(),
                nn.Dropout(drop),
            ]
            fan_in = width
        return nn.Sequential(*layers, nn.Linear(fan_in, 10))
    channels = 1
    for _ in range(min(p["depth"], 3)):
        layers += [
            nn.Conv1d(channels, width, 5, padding=2, stride=2),
            _norm(p["norm"], width, True),
            act(),
            nn.Dropout(drop),
        ]
        channels = width
    return nn.Sequential(
        nn.Unflatten(1, (1, 40)),
        *layers,
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(channels, 10),
    )


def classification_loss(
    kind: str, logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """The loss of `kind` (see the schema); with `reduction="none"`, one value per row of
    `logits` (the regression losses averaged over the classes)."""
    if kind == "ce":
        return nn.functional.cross_entropy(logits, y, reduction=reduction)
    target = nn.functional.one_hot(y, logits.shape[-1]).to(logits.dtype)
    fn = {
        "mse": nn.functional.mse_loss,
        "mae": nn.functional.l1_loss,
        "huber": nn.functional.huber_loss,
    }[kind]
    out = fn(logits, target, reduction=reduction)
    return out if reduction == "mean" else out.mean(-1)


class MNIST1DTask(Task):
    family = "mnist1d"
    movable = True

    def __init__(self, config: TaskConfig, seed: int) -> None:
        config = TaskConfig.make(config.family, **{**config.p, "budget": budget_for(config.p)})
        super().__init__(config, seed)
        torch.manual_seed(seed)
        self.model = build_model(config.p)
        self._data_to(self.device)

    def _data_to(self, device: torch.device) -> None:
        self.data = load_mnist1d(device)
        n = self.config.p.get("train_samples", N_TRAIN)
        x, y = self.data["train"]
        self.train_set = (x[:n], y[:n])

    def train_loss(self) -> torch.Tensor:
        x, y = self.next_batch()
        return classification_loss(self.config.p["loss"], self.model(x), y)

    def _eval_loss(self, split: str) -> float:
        x, y = self.data[split]
        return float(classification_loss(self.config.p["loss"], self.model(x), y))

    def next_batch(self) -> tuple[torch.Tensor, ...]:
        x, y = self.train_set
        idx = torch.randint(0, len(x), (self.config.p["batch"],), generator=self.batch_generator)
        (idx,) = self.on_device(idx)
        return x[idx], y[idx]

    @staticmethod
    def next_batches(tasks: list[MNIST1DTask]) -> tuple[torch.Tensor, ...] | None:
        x, y = tasks[0].train_set
        if any(
            t.train_set[0].data_ptr() != x.data_ptr() or len(t.train_set[0]) != len(x)
            for t in tasks
        ):
            return None
        batch = tasks[0].config.p["batch"]
        idx = torch.stack(
            [torch.randint(0, len(x), (batch,), generator=t.batch_generator) for t in tasks]
        )
        (idx,) = tasks[0].on_device(idx)
        return x[idx], y[idx]  # one gather for every member

    def eval_inputs(self, split: str) -> tuple[torch.Tensor, ...]:
        return self.data[split]

    @classmethod
    def batchable(cls, config: TaskConfig) -> bool:
        return config.p["arch"] == "mlp"  # the MLPs are what `lhopt.tasks.stacked` runs

    def stacked_loss(self, state: dict, batch: tuple) -> torch.Tensor:
        x, y = batch
        logits = stacked.stacked_forward(self.model, state, x)
        n, b, c = logits.shape
        per_sample = classification_loss(
            self.config.p["loss"], logits.reshape(n * b, c), y.expand(n, b).reshape(-1), "none"
        )
        return per_sample.view(n, -1).mean(1)

    stacked_eval = stacked_loss

    def _test_metrics(self) -> dict[str, float]:
        x, y = self.data["test"]
        acc = (self.model(x).argmax(-1) == y).float().mean()
        return {"accuracy": float(acc), "loss": self._eval_loss("test")}

    def descriptor_extras(self) -> list[float]:
        p = self.config.p
        return [float(p["depth"]), p["dropout"], math.log2(p["width"]) / 8]
