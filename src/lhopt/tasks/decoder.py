"""GPT-2-style byte-level decoders on Shakespeare's plays: a training family (issue 19).

The model is `gpt`'s (pre-norm blocks of causal self-attention and a GELU MLP, learned
positions, GPT-2's initialisation at std 0.02, which puts every matrix of a narrow model far
below PyTorch's default scale); the data, windows, losses and test metrics are `charlm`'s on its
`plays` corpus. Meta-training otherwise sees no decoder initialised this way, a kind users train
and the fresh suites hold (`gpt`); those read Milton's texts and the Britannica article, never
the plays. Sizes and budgets are kept small enough for episodes on a CPU.
"""

from __future__ import annotations

import torch

from lhopt.tasks.base import Task, TaskConfig
from lhopt.tasks.charlm import CharLMTask, corpus_splits
from lhopt.tasks.gpt import GPT
from lhopt.tasks.schema import Param, Schema

SCHEMA = Schema(
    "decoder",
    {
        "layers": Param("int", 1, 2),
        "d_model": Param("int", 32, 64, log=True),
        "context": Param("int", 16, 32, log=True),
        "dropout": Param("float", 0.0, 0.2),
        "batch": Param("int", 16, 32, log=True),
        "budget": Param("int", 150, 500, log=True, doc="steps T", limits=(20, 100_000)),
    },
)


class DecoderTask(CharLMTask):
    """`charlm`'s task on the `plays` corpus with `gpt`'s GPT-2-style model."""

    family = "decoder"

    def __init__(self, config: TaskConfig, seed: int) -> None:
        Task.__init__(self, config, seed)  # not CharLMTask's: its model is another
        p = config.p
        torch.manual_seed(seed)
        self.model = GPT(p["layers"], p["d_model"], p["context"], p["dropout"])
        self.text = corpus_splits("plays")
        self.windows = {s: self._fixed_windows(self.text[s]) for s in ("val", "test")}
