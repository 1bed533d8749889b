"""Implicit feedback ranked by matrix factorization with Bayesian personalized ranking (Rendle et
al. 2009): two embedding tables that each step reads sparsely, and a pairwise loss on sampled
negatives.

The kind of run no other training family is, and the one the `recsys` selection family and the
`ncf` one are (they share the kind, not the model, the loss or the data): most parameters sit in
tables of which a batch reads a few rows, the negatives are drawn afresh at every step, and the
gradient's norm grows with the embeddings' for most of the run. The interactions are drawn by the
code from the config's data parameters alone (the same for every task seed): `users` users, each
near one of `clusters` tastes (a Gaussian centre, `spread` the users' scatter around it), and
`items` items with Gaussian factors (`rank` dimensions) and a popularity that falls with its rank
as a power law (`popularity`, the exponent). A user picks a number of items drawn log-normally
around `interactions`, without replacement and in proportion to exp(taste . factors +
log-popularity), in a random order that stands for time; the last is the test item, the one before
it the validation item.

The model: user and item embeddings of `factors` dimensions and an item bias; a user's score of
an item is their dot product plus the bias. Training draws `batch` training interactions and, for
each, `negatives` items the user never picked; the loss is -log sigmoid(positive score - negative
score), averaged. The validation loss is the same on each user's validation item against 4 fixed
never-picked items; the test metrics rank each user's test item among 99 fixed never-picked items
(hit ratio and NDCG at 10) and give the same loss on it.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import nn

from lhopt.tasks.base import Task, TaskConfig
from lhopt.tasks.ncf import leave_one_out, ranking_metrics, rated_matrix, sample_negatives
from lhopt.tasks.schema import Param, Schema

SCHEMA = Schema(
    "bpr",
    {
        "users": Param("int", 200, 2000, log=True),
        "items": Param("int", 300, 2500, log=True),
        "interactions": Param("int", 8, 80, log=True, doc="median items a user picks"),
        "clusters": Param("int", 2, 30, log=True, doc="tastes the users gather around"),
        "spread": Param("float", 0.2, 1.0, doc="users' scatter around their taste"),
        "rank": Param("int", 2, 16, log=True, doc="dimensions of the true factors"),
        "popularity": Param("float", 0.0, 1.5, doc="power-law exponent of item popularity"),
        "factors": Param("int", 8, 64, log=True, doc="embedding size"),
        "negatives": Param("int", 1, 8, log=True, doc="sampled negatives per positive"),
        "batch": Param("int", 64, 1024, log=True, doc="positives per batch"),
        "budget": Param("int", 500, 3000, log=True, doc="steps T", limits=(20, 100_000)),
    },
)
EVAL_NEGATIVES, VAL_NEGATIVES = 99, 4
DATA_SEED = 2009  # Rendle et al. (2009)
EVAL_SEED = 1999
DATA_PARAMS = ("users", "items", "interactions", "clusters", "spread", "rank", "popularity")


def draw_interactions(p: dict) -> np.ndarray:
    """(n, 4) int64 rows (user, item, 1, time), ids from 1, as `ncf.leave_one_out` reads them."""
    return _draw(tuple(p[k] for k in DATA_PARAMS))


@functools.lru_cache(maxsize=8)
def _draw(values: tuple) -> np.ndarray:
    p = dict(zip(DATA_PARAMS, values, strict=True))
    users, items, rank = p["users"], p["items"], p["rank"]
    rng = np.random.default_rng(
        [DATA_SEED, users, items, p["interactions"], p["clusters"], rank]
        + [round(p[k] * 1e6) for k in ("spread", "popularity")]
    )
    centres = rng.standard_normal((p["clusters"], rank))
    tastes = centres[rng.integers(0, p["clusters"], users)]
    tastes = (tastes + p["spread"] * rng.standard_normal((users, rank))) / math.sqrt(rank)
    factors = rng.standard_normal((items, rank))
    log_pop = -p["popularity"] * np.log1p(rng.permutation(items))
    scores = 2.0 * tastes @ factors.T + log_pop
    most = items - EVAL_NEGATIVES - 1  # each user keeps 99 never-picked items for the test
    counts = np.exp(np.log(p["interactions"]) + 0.5 * rng.standard_normal(users)).round()
    counts = np.clip(counts, 3, min(most, items // 4)).astype(int)
    rows = []
    for user in range(users):
        keys = scores[user] + rng.gumbel(size=items)  # Gumbel top-k: without replacement
        chosen = np.argpartition(-keys, counts[user])[: counts[user]]
        rows.append(
            np.stack(
                [
                    np.full_like(chosen, user + 1),
                    chosen + 1,
                    np.ones_like(chosen),
                    rng.permutation(counts[user]),
                ],
                1,
            )
        )
    return np.concatenate(rows).astype(np.int64)


class MatrixFactorization(nn.Module):
    def __init__(self, users: int, items: int, factors: int) -> None:
        super().__init__()
        self.user = nn.Embedding(users, factors)
        self.item = nn.Embedding(items, factors)
        self.item_bias = nn.Embedding(items, 1)
        for emb in (self.user, self.item):
            nn.init.normal_(emb.weight, std=0.01)
        nn.init.zeros_(self.item_bias.weight)

    def forward(self, u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        return (self.user(u) * self.item(i)).sum(-1) + self.item_bias(i).squeeze(-1)


class BPRTask(Task):
    family = "bpr"

    def __init__(self, config: TaskConfig, seed: int) -> None:
        super().__init__(config, seed)
        p = config.p
        ratings = draw_interactions(p)
        split = leave_one_out(ratings)
        self.rated = rated_matrix(ratings, p["users"], p["items"])
        self.train_pairs = torch.as_tensor(split["train"])
        g = torch.Generator().manual_seed(EVAL_SEED)  # the same evaluation items for every run
        self.eval_sets = {}
        for name in ("val", "test"):
            pos = torch.as_tensor(split[name])
            negs = sample_negatives(self.rated, pos[:, 0], EVAL_NEGATIVES, g)
            self.eval_sets[name] = (pos[:, 0], pos[:, 1], negs)
        torch.manual_seed(seed)
        self.model = MatrixFactorization(p["users"], p["items"], p["factors"])

    def _bpr(self, users: torch.Tensor, pos: torch.Tensor, negs: torch.Tensor) -> torch.Tensor:
        margin = self.model(users, pos)[:, None] - self.model(users[:, None].expand_as(negs), negs)
        return nn.functional.softplus(-margin).mean()

    def train_loss(self) -> torch.Tensor:
        p = self.config.p
        idx = torch.randint(0, len(self.train_pairs), (p["batch"],), generator=self.batch_generator)
        users, pos = self.train_pairs[idx].unbind(1)
        negs = sample_negatives(self.rated, users, p["negatives"], self.batch_generator)
        return self._bpr(users, pos, negs)

    def _eval_loss(self, split: str) -> float:
        users, pos, negs = self.eval_sets[split]
        return float(self._bpr(users, pos, negs[:, :VAL_NEGATIVES]))

    def _test_metrics(self) -> dict[str, float]:
        users, pos, negs = self.eval_sets["test"]
        positive = self.model(users, pos)[:, None]
        rank = (self.model(users[:, None].expand_as(negs), negs) > positive).sum(1)
        return {**ranking_metrics(rank), "loss": self._eval_loss("test")}

    def descriptor_extras(self) -> list[float]:
        p = self.config.p
        return [math.log2(p["negatives"]) / 3, 0.0, math.log2(p["factors"]) / 6]
