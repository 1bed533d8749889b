"""Algorithmic sequence tasks with a small Transformer encoder (attention, no recurrence).

- `reverse`: a sequence of random tokens; at each position predict the token at the mirrored
  position.
- `sort`: at each position predict the token the sorted sequence has there.
Both read the whole sequence at every position, which attention does in one layer and the
`algorithmic` family's recurrent networks cannot (they see only the past). Per-position
classification with cross-entropy over the `vocab` tokens; the test metric is the per-token
accuracy. Training batches are drawn fresh each step; validation and test sets are fixed. The
model: token and learned position embeddings of width `heads` x `head_width`, `layers` pre-norm
encoder layers with `heads` heads and a feed-forward four times as wide, a linear read-out.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lhopt.tasks.base import Task, TaskConfig, splits_to
from lhopt.tasks.schema import Param, Schema

SCHEMA = Schema(
    "seqattn",
    {
        "problem": Param("choice", choices=("reverse", "sort")),
        "vocab": Param("int", 4, 32, log=True, doc="tokens"),
        "length": Param("int", 4, 16, doc="sequence length"),
        "heads": Param("choice", choices=(1, 2, 4)),
        "head_width": Param("int", 8, 32, log=True, doc="embedding width per head"),
        "layers": Param("int", 1, 2),
        "dropout": Param("float", 0.0, 0.2),
        "batch": Param("int", 16, 128, log=True),
        "budget": Param("int", 200, 800, log=True, limits=(20, 100_000)),
    },
)
EVAL_SIZE = 512


def make_batch(problem: str, n: int, vocab: int, length: int, g: torch.Generator):
    """Tokens (n, length) and per-position targets (n, length)."""
    x = torch.randint(0, vocab, (n, length), generator=g)
    y = x.flip(1) if problem == "reverse" else x.sort(1).values
    return x, y


class Encoder(nn.Module):
    def __init__(self, vocab: int, length: int, width: int, heads: int, layers: int, dropout):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(torch.randn(length, width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)

    def forward(self, x):
        return self.head(self.norm(self.encoder(self.embed(x) + self.position)))


class SeqAttnTask(Task):
    family = "seqattn"
    movable = True

    def __init__(self, config: TaskConfig, seed: int) -> None:
        super().__init__(config, seed)
        p = config.p
        torch.manual_seed(seed)
        width = p["heads"] * p["head_width"]
        self.model = Encoder(p["vocab"], p["length"], width, p["heads"], p["layers"], p["dropout"])
        g = torch.Generator().manual_seed(20_000 + seed)
        self.splits = {s: self._batch(EVAL_SIZE, g) for s in ("val", "test")}

    def _batch(self, n: int, g: torch.Generator):
        p = self.config.p
        return make_batch(p["problem"], n, p["vocab"], p["length"], g)

    def _loss(self, x, y):
        return nn.functional.cross_entropy(self.model(x).flatten(0, 1), y.flatten())

    def train_loss(self) -> torch.Tensor:
        return self._loss(
            *self.on_device(*self._batch(self.config.p["batch"], self.batch_generator))
        )

    def _data_to(self, device: torch.device) -> None:
        self.splits = splits_to(self.splits, device)

    def _eval_loss(self, split: str) -> float:
        return float(self._loss(*self.splits[split]))

    def _test_metrics(self) -> dict[str, float]:
        x, y = self.splits["test"]
        accuracy = (self.model(x).argmax(-1) == y).float().mean()
        return {"accuracy": float(accuracy), "loss": self._eval_loss("test")}

    def descriptor_extras(self) -> list[float]:
        p = self.config.p
        return [float(p["layers"]), math.log2(p["vocab"]) / 5, p["length"] / 16]
