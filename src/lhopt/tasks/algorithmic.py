"""Algorithmic sequence tasks with recurrent networks.

- `xor`: a stream of random bits; at each position predict the parity (running xor) so far.
- `addition`: two random binary numbers, least significant bit first, one bit of each per step
  (plus a final step of zeros); at each position predict that bit of their sum.
Both are per-position binary classification with cross-entropy; the test metric is the per-bit
accuracy. Training batches are drawn fresh each step; validation and test sets are fixed.
"""

from __future__ import annotations

import torch
from torch import nn

from lhopt.tasks import stacked
from lhopt.tasks.base import Task, TaskConfig, splits_to
from lhopt.tasks.schema import Param, Schema

SCHEMA = Schema(
    "algorithmic",
    {
        "problem": Param("choice", choices=("xor", "addition")),
        "cell": Param("choice", choices=("rnn", "gru", "lstm")),
        "layers": Param("int", 1, 2),
        "hidden": Param("int", 16, 128, log=True),
        "dropout": Param("float", 0.0, 0.3),
        "length": Param("int", 4, 16, doc="sequence length (bits per number)"),
        "batch": Param("int", 32, 128, log=True),
        "budget": Param("int", 200, 800, log=True, limits=(20, 100_000)),
    },
)
EVAL_SIZE = 512
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
MAX_BATCHED_GATE_WIDTH = 96


def make_batch(problem: str, n: int, length: int, g: torch.Generator):
    """Inputs (n, steps, 2) and per-step 0/1 targets (n, steps)."""
    if problem == "xor":
        bits = torch.randint(0, 2, (n, length), generator=g)
        x = torch.stack([bits, torch.zeros_like(bits)], -1).float()
        return x, torch.cumsum(bits, 1) % 2
    a = torch.randint(0, 2, (n, length), generator=g)
    b = torch.randint(0, 2, (n, length), generator=g)
    pad = torch.zeros(n, 1, dtype=a.dtype)
    a, b = torch.cat([a, pad], 1), torch.cat([b, pad], 1)
    out, carry = [], torch.zeros(n, dtype=a.dtype)
    for i in range(length + 1):
        s = a[:, i] + b[:, i] + carry
        out.append(s % 2)
        carry = s // 2
    return torch.stack([a, b], -1).float(), torch.stack(out, 1)


class RecurrentClassifier(nn.Module):
    def __init__(self, cell: str, layers: int, hidden: int, dropout: float) -> None:
        super().__init__()
        rnn = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[cell]
        self.rnn = rnn(
            2, hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0
        )
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, 2)

    def forward(self, x):
        h, _ = self.rnn(x)
        return self.head(self.drop(h))


class AlgorithmicTask(Task):
    family = "algorithmic"
    movable = True

    def __init__(self, config: TaskConfig, seed: int) -> None:
        super().__init__(config, seed)
        p = config.p
        torch.manual_seed(seed)
        self.model = RecurrentClassifier(p["cell"], p["layers"], p["hidden"], p["dropout"])
        g = torch.Generator().manual_seed(10_000 + seed)
        self.splits = {
            s: make_batch(p["problem"], EVAL_SIZE, p["length"], g) for s in ("val", "test")
        }

    def _loss(self, x, y):
        return nn.functional.cross_entropy(self.model(x).flatten(0, 1), y.flatten())

    def train_loss(self) -> torch.Tensor:
        return self._loss(*self.next_batch())

    def next_batch(self) -> tuple[torch.Tensor, ...]:
        p = self.config.p
        return self.on_device(
            *make_batch(p["problem"], p["batch"], p["length"], self.batch_generator)
        )

    def _data_to(self, device: torch.device) -> None:
        self.splits = splits_to(self.splits, device)

    def eval_inputs(self, split: str) -> tuple[torch.Tensor, ...]:
        return self.splits[split]

    @classmethod
    def batchable(cls, config: TaskConfig) -> bool:
        # Every cell has a stacked form (`lhopt.tasks.stacked.stacked_recurrent`), but above a
        # gate width of 96 a CPU step is arithmetic, which PyTorch's fused recurrent kernels do
        # faster than the stacked loop (docs/benchmarks.md, "Batched episodes").
        p = config.p
        return GATES[p["cell"]] * p["hidden"] <= MAX_BATCHED_GATE_WIDTH

    def stacked_loss(self, state: dict, batch: tuple) -> torch.Tensor:
        x, y = batch
        n = next(iter(state.values())).shape[0]
        if x.dim() == 3:  # shared by every member
            x = x.expand(n, *x.shape)
        if y.dim() == 2:
            y = y.expand(n, *y.shape)
        h = stacked.stacked_recurrent(self.model.rnn, state, "rnn.", x)
        h = nn.functional.dropout(h, self.model.drop.p, self.model.training)
        _, b, t, width = h.shape
        logits = torch.baddbmm(
            state["head.bias"][:, None], h.reshape(n, b * t, width), state["head.weight"].mT
        )
        per_step = nn.functional.cross_entropy(
            logits.reshape(n * b * t, -1), y.reshape(-1), reduction="none"
        )
        return per_step.view(n, -1).mean(1)

    stacked_eval = stacked_loss

    def _eval_loss(self, split: str) -> float:
        return float(self._loss(*self.splits[split]))

    def _test_metrics(self) -> dict[str, float]:
        x, y = self.splits["test"]
        acc = (self.model(x).argmax(-1) == y).float().mean()
        return {"accuracy": float(acc), "loss": self._eval_loss("test")}

    def descriptor_extras(self) -> list[float]:
        p = self.config.p
        return [float(p["layers"]), p["dropout"], p["length"] / 16]
