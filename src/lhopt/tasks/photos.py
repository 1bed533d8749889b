"""Small CNNs classifying where a patch of a photograph comes from: a training family (issue 19).

The data are the two colour photographs scikit-learn ships (`china.jpg`, a temple, and
`flower.jpg`, both 427x640, CC BY 2.0, read out of the scikit-learn 1.9.1 wheel as `tabular`'s
files are; decoded by Pillow, of the `bench` extra), halved to 213x320 by 2x2 averaging.
A sample is a 12x12 RGB patch; its label, one of 6, is the photograph and which third of its
height the patch's centre lies in. The columns are split once into stripes 32 pixels wide: the
validation part's patches lie in the fourth stripe of each photograph, the test part's in the
eighth, the training part's in the other eight, so no two parts share a pixel and each part
spans the photographs' full height. Patches are cut at a stride of 2 pixels; the validation
and test parts are 1,000 patches each, the training part's first `train_samples` of a fixed
permutation (`DATA_SEED`). Inputs are centred by the training part's per-channel mean and
scaled by its std.

The model: `depth` blocks of [3x3 convolution, ReLU] with `width` channels, a 2x2 max-pool,
then a linear layer; cross-entropy. Test metrics: accuracy and loss. It gives meta-training the
kind of the small image classifiers users train (the `tabular` digits CNN of the fresh suites is
the same architecture), on real images no suite reads; unlike the selection family `shapes`, it
has no batch norm and its images are photographs, not drawn shapes.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from torch import nn

from lhopt.extras import require
from lhopt.tasks.base import TaskConfig
from lhopt.tasks.classification import SplitClassificationTask
from lhopt.tasks.data import fetch, read_members
from lhopt.tasks.schema import Param, Schema
from lhopt.tasks.tabular import SKLEARN_WHEEL

SCHEMA = Schema(
    "photos",
    {
        "depth": Param("int", 1, 3, doc="[3x3 convolution, ReLU] blocks"),
        "width": Param("int", 8, 32, log=True, doc="channels of each block"),
        "train_samples": Param("int", 200, 5000, log=True, doc="training patches"),
        "batch": Param("int", 16, 128, log=True),
        "budget": Param("int", 200, 800, log=True, doc="steps T", limits=(20, 100_000)),
    },
)
PHOTOS = ("china.jpg", "flower.jpg")
PATCH, STRIDE, BANDS = 12, 2, 3
CLASSES = len(PHOTOS) * BANDS
STRIPE, STRIPES = 32, {"val": (3,), "test": (7,)}  # the training part: the other stripes
N_EVAL = 1000
DATA_SEED = 2011  # the year the photographs were retrieved for scikit-learn

_DATA: dict | None = None


def load_photos() -> list[np.ndarray]:
    """The two photographs as float arrays (height, width, 3) in [0, 1], halved by 2x2 means."""
    image = require("PIL.Image", "bench")
    members = read_members(fetch(SKLEARN_WHEEL), ".jpg", contains="sklearn/datasets/images/")
    photos = []
    for name in PHOTOS:
        (raw,) = [v for k, v in members.items() if k.endswith("/" + name)]
        a = np.asarray(image.open(io.BytesIO(raw)).convert("RGB"), dtype=np.float64) / 255.0
        h, w = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
        photos.append(a[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3)))
    return photos


def _patches(photos: list[np.ndarray], split: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for k, a in enumerate(photos):
        h, w, _ = a.shape
        held = {i for part in STRIPES.values() for i in part}
        stripes = STRIPES.get(split) or [i for i in range(w // STRIPE) if i not in held]
        for r in range(0, h - PATCH + 1, STRIDE):
            band = min((r + PATCH // 2) * BANDS // h, BANDS - 1)
            for i in stripes:
                for c in range(i * STRIPE, (i + 1) * STRIPE - PATCH + 1, STRIDE):
                    xs.append(a[r : r + PATCH, c : c + PATCH])
                    ys.append(k * BANDS + band)
    return np.stack(xs), np.asarray(ys)


def load_data(train_samples: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The three parts (module doc), the training part cut to `train_samples`."""
    global _DATA
    if _DATA is None:
        photos = load_photos()
        rng = np.random.default_rng(DATA_SEED)
        parts = {}
        for split in ("train", "val", "test"):
            x, y = _patches(photos, split)
            order = rng.permutation(len(x))
            keep = order if split == "train" else order[:N_EVAL]
            parts[split] = (x[keep], y[keep])
        mean = parts["train"][0].mean(axis=(0, 1, 2))
        std = parts["train"][0].std(axis=(0, 1, 2))
        _DATA = {
            split: (
                torch.tensor(((x - mean) / std).transpose(0, 3, 1, 2), dtype=torch.float32),
                torch.tensor(y, dtype=torch.long),
            )
            for split, (x, y) in parts.items()
        }
    x, y = _DATA["train"]
    if train_samples > len(x):
        raise ValueError(f"photos: train_samples = {train_samples}, at most {len(x)}")
    return {**_DATA, "train": (x[:train_samples], y[:train_samples])}


def build_model(depth: int, width: int) -> nn.Module:
    layers: list[nn.Module] = []
    channels = 3
    for _ in range(depth):
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
        channels = width
    size = PATCH // 2
    return nn.Sequential(
        *layers, nn.MaxPool2d(2), nn.Flatten(), nn.Linear(channels * size * size, CLASSES)
    )


class PhotosTask(SplitClassificationTask):
    family = "photos"

    def __init__(self, config: TaskConfig, seed: int) -> None:
        super().__init__(config, seed)
        p = config.p
        torch.manual_seed(seed)
        self.model = build_model(p["depth"], p["width"])
        self.data = load_data(p["train_samples"])

    def descriptor_extras(self) -> list[float]:
        p = self.config.p
        return [float(p["depth"]), math.log2(p["width"]) / 5, math.log10(p["train_samples"]) / 4]
