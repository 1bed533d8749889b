"""Byte-level language modelling on texts no other task reads, for the `unseen5` suite.

The texts come out of the archive `charlm` reads (Open Shakespeare 0.6), from the folders it
never trains or evaluates on: Milton's verse (Paradise Lost, Paradise Regained) and prose
(Areopagitica) under `miltondata/`, and the 1911 Encyclopaedia Britannica's article on
Shakespeare under `ancillary/` (OCR text with page markers). Each is split once: the first 90%
to train on, the rest halved into validation and test text. The models are `charlm`'s (GRU,
LSTM, decoder-only transformer); what differs is the text: another author, another century's
prose, encyclopaedic prose. Never sampled by meta-training, never used to choose snapshots.
"""

from __future__ import annotations

import torch

from lhopt.tasks.base import Task, TaskConfig
from lhopt.tasks.charlm import SHAKESPEARE, ByteRNN, ByteTransformer, CharLMTask, strip_gutenberg
from lhopt.tasks.data import fetch, read_members
from lhopt.tasks.schema import Param, Schema

# corpus -> the archive member (its path's end) that holds it
TEXTS = {
    "paradise-lost": "miltondata/texts/paradise_lost_(no_introduction)_gut.txt",
    "paradise-regained": "miltondata/texts/paradise_regained_gut.txt",
    "areopagitica": "miltondata/texts/areopagitica_gut.txt",
    "britannica": "ancillary/britannica-11th.txt",
}
TRAIN_FRACTION = 0.9

SCHEMA = Schema(
    "texts",
    {
        "corpus": Param("choice", choices=tuple(TEXTS), doc="the text (module doc)"),
        "arch": Param("choice", choices=("gru", "lstm", "transformer")),
        "layers": Param("int", 1, 3),
        "d_model": Param("int", 32, 128, log=True),
        "context": Param("int", 16, 128, log=True),
        "dropout": Param("float", 0.0, 0.2),
        "batch": Param("int", 16, 64, log=True),
        "budget": Param("int", 500, 5000, log=True, doc="steps T", limits=(20, 100_000)),
    },
)

_TEXTS: dict[str, bytes] = {}


def load_text(corpus: str) -> bytes:
    """The text of `corpus`, with Unix line ends and any Project Gutenberg boilerplate removed."""
    if corpus not in TEXTS:
        raise ValueError(f"unknown texts corpus {corpus!r}; valid: {list(TEXTS)}")
    if corpus not in _TEXTS:
        members = read_members(fetch(SHAKESPEARE), TEXTS[corpus])
        if len(members) != 1:
            raise RuntimeError(
                f"the archive {SHAKESPEARE.filename} holds {len(members)} members named like "
                f"{TEXTS[corpus]!r}, not one"
            )
        (raw,) = members.values()
        _TEXTS[corpus] = strip_gutenberg(raw.replace(b"\r\n", b"\n").rstrip(b"\x1a\n"))
    return _TEXTS[corpus]


def text_splits(corpus: str) -> dict[str, torch.Tensor]:
    text = torch.frombuffer(bytearray(load_text(corpus)), dtype=torch.uint8).long()
    cut = int(TRAIN_FRACTION * len(text))
    half = cut + (len(text) - cut) // 2
    return {"train": text[:cut], "val": text[cut:half], "test": text[half:]}


class TextsTask(CharLMTask):
    """`charlm`'s task on a `texts` corpus: the same models, losses and test metrics."""

    family = "texts"

    def __init__(self, config: TaskConfig, seed: int) -> None:
        Task.__init__(self, config, seed)  # not CharLMTask's: its corpora are Shakespeare's
        p = config.p
        torch.manual_seed(seed)
        if p["arch"] == "transformer":
            self.model = ByteTransformer(p["layers"], p["d_model"], p["context"], p["dropout"])
        else:
            self.model = ByteRNN(p["arch"], p["layers"], p["d_model"], p["dropout"])
        self.text = text_splits(p["corpus"])
        self.windows = {s: self._fixed_windows(self.text[s]) for s in ("val", "test")}
