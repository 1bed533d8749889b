"""Classification of synthetic token sequences with a planted rule, by embedding models.

The sequences are drawn by the code from a fixed seed (`DATA_SEED`; nothing is downloaded), the
same for every task seed: `train_samples` training sequences, 1,000 validation and 2,000 test
sequences of 32 tokens over a vocabulary of 2,000. Background tokens follow a Zipf law; each of
the 4 classes owns 50 cue tokens that never occur in the background. A sequence of class c
holds 2-4 cue tokens of c and fewer (0-2) of one other class, at random positions; the label is
flipped to a random class for 5% of the sequences (so the best test accuracy is about 96%).
Models: `bag`, the mean of the tokens' embeddings (an EmbeddingBag) and a linear layer; `cnn`,
embeddings, a width-3 convolution over positions, ReLU, max over positions and a linear layer.
Loss: cross-entropy. Test metrics: accuracy and loss. It differs from every training family in
its architecture (a large embedding table: each step updates the rows of the tokens it reads)
and its data (a few thousand sequences over a 2,000-token vocabulary, most tokens rare).
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
    "tokens",
    {
        "arch": Param("choice", choices=("bag", "cnn")),
        "dim": Param("int", 8, 128, log=True, doc="embedding size (and CNN channels)"),
        "train_samples": Param("int", 200, 20_000, log=True, doc="training sequences"),
        "batch": Param("int", 16, 256, log=True),
        "budget": Param("int", 300, 3000, log=True, doc="steps T", limits=(20, 100_000)),
    },
)
VOCAB, LENGTH, CLASSES, CUES = 2000, 32, 4, 50
LABEL_NOISE = 0.05
N_VAL, N_TEST, N_MAX_TRAIN = 1000, 2000, 20_000
DATA_SEED = 4242


def make_sequences(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n sequences (n, LENGTH) of token ids and their labels (n,)."""
    perm = np.random.default_rng(DATA_SEED).permutation(VOCAB)  # fixed: which tokens are cues
    cues = perm[: CLASSES * CUES].reshape(CLASSES, CUES)
    background = perm[CLASSES * CUES :]
    zipf = 1.0 / np.arange(1, len(background) + 1) ** 1.1
    tokens = rng.choice(background, size=(n, LENGTH), p=zipf / zipf.sum())
    labels = rng.integers(CLASSES, size=n)
    for i in range(n):
        c = labels[i]
        other = (c + rng.integers(1, CLASSES)) % CLASSES
        k = int(rng.integers(2, 5))
        j = int(rng.integers(0, k - 1))
        pos = rng.choice(LENGTH, size=k + j, replace=False)
        tokens[i, pos[:k]] = rng.choice(cues[c], size=k)
        tokens[i, pos[k:]] = rng.choice(cues[other], size=j)
    flip = rng.random(n) < LABEL_NOISE
    labels[flip] = rng.integers(CLASSES, size=int(flip.sum()))
    return tokens, labels


_DATA: dict = {}


def load_tokens(train_samples: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The fixed splits; the training set is a prefix of the largest one."""
    if not _DATA:
        x, y = make_sequences(N_VAL + N_TEST + N_MAX_TRAIN, np.random.default_rng(DATA_SEED))
        x, y = torch.from_numpy(x).long(), torch.from_numpy(y).long()
        a, b = N_VAL, N_VAL + N_TEST
        _DATA.update(val=(x[:a], y[:a]), test=(x[a:b], y[a:b]), train=(x[b:], y[b:]))
    x, y = _DATA["train"]
    return {**_DATA, "train": (x[:train_samples], y[:train_samples])}


class BagClassifier(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.embed = nn.EmbeddingBag(VOCAB, dim, mode="mean")
        self.head = nn.Linear(dim, CLASSES)

    def forward(self, x):
        return self.head(self.embed(x))


class ConvClassifier(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.conv = nn.Conv1d(dim, dim, 3, padding=1)
        self.head = nn.Linear(dim, CLASSES)

    def forward(self, x):
        h = torch.relu(self.conv(self.embed(x).transpose(1, 2)))
        return self.head(h.amax(-1))


class TokensTask(SplitClassificationTask):
    family = "tokens"

    def __init__(self, config: TaskConfig, seed: int) -> None:
        super().__init__(config, seed)
        p = config.p
        torch.manual_seed(seed)
        self.model = (BagClassifier if p["arch"] == "bag" else ConvClassifier)(p["dim"])
        self.data = load_tokens(p["train_samples"])

    def descriptor_extras(self) -> list[float]:
        p = self.config.p
        return [
            float(p["arch"] == "cnn"),
            math.log2(p["dim"]) / 8,
            math.log10(p["train_samples"]) / 4,
        ]
