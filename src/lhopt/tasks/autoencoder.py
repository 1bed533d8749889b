"""An MLP autoencoder of MNIST-1D signals, trained on their reconstruction.

The signals (40 samples each) are MNIST-1D's (the `mnist1d` family's data, generated locally by
the `mnist1d` package), without their labels: the first `train_samples` of its 7,000 training
signals, its 1,000 validation and 2,000 test signals. The encoder maps a signal through `depth`
hidden layers of `width` units (GELU) to a `code` of a few numbers; the decoder mirrors it. With
`noise` > 0 the input is corrupted by Gaussian noise of that std during training (a denoising
autoencoder); validation and test reconstruct clean inputs. Loss: the mean squared error of the
reconstruction. Test metrics: that error and the fraction of the signals' variance explained.
It differs from every training family in its loss and its output (unsupervised reconstruction of
a 40-dimensional signal through a bottleneck, not classification or next-token prediction).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lhopt.tasks.base import Task, TaskConfig
from lhopt.tasks.mnist1d import N_TRAIN, load_mnist1d
from lhopt.tasks.schema import Param, Schema

SCHEMA = Schema(
    "autoencoder",
    {
        "depth": Param("int", 1, 3, doc="hidden layers of the encoder (and of the decoder)"),
        "width": Param("int", 32, 256, log=True, doc="hidden units"),
        "code": Param("int", 2, 16, log=True, doc="size of the bottleneck"),
        "noise": Param("float", 0.0, 0.5, doc="std of the input noise in training (denoising)"),
        "train_samples": Param("int", 100, N_TRAIN, log=True, doc="training signals"),
        "batch": Param("int", 16, 256, log=True),
        "budget": Param("int", 300, 3000, log=True, doc="steps T", limits=(20, 100_000)),
    },
)
SIGNAL = 40


def build_model(depth: int, width: int, code: int) -> nn.Module:
    def tower(fan_in: int, out: int) -> list[nn.Module]:
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Linear(fan_in, width), nn.GELU()]
            fan_in = width
        return [*layers, nn.Linear(fan_in, out)]

    return nn.Sequential(*tower(SIGNAL, code), *tower(code, SIGNAL))


class AutoencoderTask(Task):
    family = "autoencoder"

    def __init__(self, config: TaskConfig, seed: int) -> None:
        super().__init__(config, seed)
        p = config.p
        torch.manual_seed(seed)
        self.model = build_model(p["depth"], p["width"], p["code"])
        data = load_mnist1d()
        self.data = {
            "train": data["train"][0][: p["train_samples"]],
            "val": data["val"][0],
            "test": data["test"][0],
        }

    def train_loss(self) -> torch.Tensor:
        x = self.data["train"]
        idx = torch.randint(0, len(x), (self.config.p["batch"],), generator=self.batch_generator)
        x = x[idx]
        noisy = x
        if self.config.p["noise"] > 0:
            noisy = x + self.config.p["noise"] * torch.randn(
                x.shape, generator=self.batch_generator
            )
        return nn.functional.mse_loss(self.model(noisy), x)

    def _eval_loss(self, split: str) -> float:
        x = self.data[split]
        return float(nn.functional.mse_loss(self.model(x), x))

    def _test_metrics(self) -> dict[str, float]:
        x = self.data["test"]
        mse = float(nn.functional.mse_loss(self.model(x), x))
        return {"mse": mse, "explained_variance": 1.0 - mse / float(x.var())}

    def descriptor_extras(self) -> list[float]:
        p = self.config.p
        return [float(p["depth"]), p["noise"], math.log2(p["code"]) / 4]
