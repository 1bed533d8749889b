"""Shape recognition in small 2-D images with a convolution + max-pooling + batch-norm network.

The images are drawn by the code from a fixed seed (`DATA_SEED`; nothing is downloaded): 16x16
greyscale, one of six shapes (disk, ring, square, triangle, cross, bar) at a random position,
size, rotation and brightness, on a background of Gaussian noise (`noise`, its std). The data
set is the same for every task seed: `train_samples` training images, 1,000 validation and 2,000
test images. The model: `blocks` of [3x3 convolution, batch norm, ReLU, 2x2 max-pool] with
`width`, 2x `width`, ... channels, then a linear layer on the flattened features; cross-entropy.
Test metrics: accuracy and loss. It differs from every training family in its input (2-D
images; the training families read 1-D signals, bits or bytes) and its architecture (2-D
convolutions with max-pooling).
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
    "shapes",
    {
        "blocks": Param("int", 1, 3, doc="conv + batch norm + ReLU + max-pool blocks"),
        "width": Param("int", 8, 64, log=True, doc="channels of the first block (doubling)"),
        "noise": Param("float", 0.1, 0.6, doc="std of the background noise"),
        "train_samples": Param("int", 200, 10_000, log=True, doc="training images"),
        "batch": Param("int", 16, 256, log=True),
        "budget": Param("int", 300, 3000, log=True, doc="steps T", limits=(20, 100_000)),
    },
)
SIZE = 16
CLASSES = ("disk", "ring", "square", "triangle", "cross", "bar")
N_VAL, N_TEST = 1000, 2000
DATA_SEED = 1616


def _inside(kind: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether the points (u, v), in the shape's own frame (unit size), are inside it."""
    rho2 = u**2 + v**2
    if kind == 0:
        return rho2 <= 1.0
    if kind == 1:
        return (rho2 <= 1.0) & (rho2 >= 0.4)
    if kind == 2:
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if kind == 3:
        return (v >= -0.5) & (v <= 1.0 - math.sqrt(3.0) * np.abs(u))
    if kind == 4:
        arm = 0.3
        return ((np.abs(u) <= arm) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= arm) & (np.abs(u) <= 1.0))
    return (np.abs(u) <= 1.0) & (np.abs(v) <= 0.35)


def make_images(n: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n images (n, 1, SIZE, SIZE) float32 and their labels (n,)."""
    labels = rng.integers(len(CLASSES), size=n)
    radius = rng.uniform(3.0, 6.5, size=n)
    cx = rng.uniform(-1.5, 1.5, size=n) * (SIZE / 2 - radius) / 1.5 + (SIZE - 1) / 2
    cy = rng.uniform(-1.5, 1.5, size=n) * (SIZE / 2 - radius) / 1.5 + (SIZE - 1) / 2
    angle = rng.uniform(0.0, 2 * math.pi, size=n)
    bright = rng.uniform(0.5, 1.0, size=n)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    dx = (xs[None] - cx[:, None, None]) / radius[:, None, None]
    dy = (ys[None] - cy[:, None, None]) / radius[:, None, None]
    c, s = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u, v = c * dx + s * dy, -s * dx + c * dy
    images = np.zeros((n, SIZE, SIZE))
    for kind in range(len(CLASSES)):
        m = labels == kind
        images[m] = _inside(kind, u[m], v[m]) * bright[m, None, None]
    images += noise * rng.standard_normal(images.shape)
    return images[:, None].astype(np.float32), labels


_DATA: dict = {}


def load_shapes(noise: float, train_samples: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The fixed splits for a noise level; the training set is a prefix of the largest one."""
    key = round(noise, 6)
    if key not in _DATA:
        rng = np.random.default_rng([DATA_SEED, int(key * 1e6)])
        x, y = make_images(N_VAL + N_TEST + 10_000, noise, rng)
        x, y = torch.from_numpy(x), torch.from_numpy(y).long()
        _DATA[key] = {
            "val": (x[:N_VAL], y[:N_VAL]),
            "test": (x[N_VAL : N_VAL + N_TEST], y[N_VAL : N_VAL + N_TEST]),
            "train": (x[N_VAL + N_TEST :], y[N_VAL + N_TEST :]),
        }
    d = _DATA[key]
    x, y = d["train"]
    return {**d, "train": (x[:train_samples], y[:train_samples])}


def build_model(blocks: int, width: int) -> nn.Module:
    layers: list[nn.Module] = []
    channels, size = 1, SIZE
    for i in range(blocks):
        out = width * 2**i
        layers += [
            nn.Conv2d(channels, out, 3, padding=1),
            nn.BatchNorm2d(out),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]
        channels, size = out, size // 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * size * size, len(CLASSES)))


class ShapesTask(SplitClassificationTask):
    family = "shapes"

    def __init__(self, config: TaskConfig, seed: int) -> None:
        super().__init__(config, seed)
        p = config.p
        torch.manual_seed(seed)
        self.model = build_model(p["blocks"], p["width"])
        self.data = load_shapes(p["noise"], p["train_samples"])

    def descriptor_extras(self) -> list[float]:
        p = self.config.p
        return [float(p["blocks"]), p["noise"], math.log10(p["train_samples"]) / 4]
