"""Byte-level GPT-2-style language models on the `texts` corpora, for the `unseen7` suite.

The model is the decoder users build with Hugging Face's GPT-2 or nanoGPT: pre-norm blocks of
causal self-attention (one fused query/key/value projection) and a GELU MLP, learned positions,
and GPT-2's initialisation: every matrix and embedding at std 0.02, the two projections back
into the residual stream at 0.02 / sqrt(2 layers), biases at zero. In a narrow model that puts
every matrix far below PyTorch's default scale (rms 1 / sqrt(3 fan-in): 0.072 at width 64),
which `charlm`'s transformer (PyTorch's layers) never is. Data, losses and test metrics are
`texts`'s. Never sampled by meta-training, never used to choose snapshots.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lhopt.tasks.base import Task, TaskConfig
from lhopt.tasks.schema import Param, Schema
from lhopt.tasks.texts import TEXTS, TextsTask, text_splits

INIT_STD = 0.02  # GPT-2's

SCHEMA = Schema(
    "gpt",
    {
        "corpus": Param("choice", choices=tuple(TEXTS), doc="the text (`texts`)"),
        "layers": Param("int", 1, 4),
        "d_model": Param("int", 32, 128, log=True),
        "context": Param("int", 16, 128, log=True),
        "dropout": Param("float", 0.0, 0.2),
        "batch": Param("int", 16, 64, log=True),
        "budget": Param("int", 500, 5000, log=True, doc="steps T", limits=(20, 100_000)),
    },
)


class Block(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.attn_proj = nn.Linear(d, d)
        self.fc = nn.Linear(d, 4 * d)
        self.mlp_proj = nn.Linear(4 * d, d)
        self.heads, self.dropout = heads, dropout
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = (
            t.view(b, n, self.heads, d // self.heads).transpose(1, 2)
            for t in self.qkv(self.norm1(x)).split(d, dim=2)
        )
        p = self.dropout if self.training else 0.0
        y = nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        x = x + self.drop(self.attn_proj(y.transpose(1, 2).reshape(b, n, d)))
        return x + self.drop(self.mlp_proj(nn.functional.gelu(self.fc(self.norm2(x)))))


class GPT(nn.Module):
    """A GPT-2-style decoder over bytes, initialised as GPT-2 is (module doc)."""

    def __init__(self, layers: int, d: int, context: int, dropout: float) -> None:
        super().__init__()
        heads = next(h for h in range(max(1, d // 32), 0, -1) if d % h == 0)  # head size ~32
        self.tokens = nn.Embedding(256, d)
        self.positions = nn.Embedding(context, d)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 256, bias=False)
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                residual = name.endswith("_proj")
                std = INIT_STD / math.sqrt(2 * layers) if residual else INIT_STD
                nn.init.normal_(module.weight, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.drop(self.tokens(tokens) + self.positions.weight[: tokens.shape[1]])
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h))


class GPTTask(TextsTask):
    """`texts`'s task (corpus, split, windows, loss, metrics) with the GPT-2-style model."""

    family = "gpt"

    def __init__(self, config: TaskConfig, seed: int) -> None:
        Task.__init__(self, config, seed)
        p = config.p
        torch.manual_seed(seed)
        self.model = GPT(p["layers"], p["d_model"], p["context"], p["dropout"])
        self.text = text_splits(p["corpus"])
        self.windows = {s: self._fixed_windows(self.text[s]) for s in ("val", "test")}
