"""Collaborative filtering of synthetic implicit feedback: the `ncf` family's models, splits and
losses on interactions the code draws, not on MovieLens.

Users and items get latent factors (Gaussian, `rank` dimensions) and items a popularity that
falls with their popularity rank as a power law (`popularity`, the exponent); a user's affinity
for an item is `affinity` times the factors' dot product plus the item's log-popularity. Each user
interacts with a number of items drawn log-normally around `interactions` (at least 4, at most a
fifth of the items), picked without replacement in proportion to exp(affinity) (Gumbel top-k),
in a random order that stands for time. From there on it is `lhopt.tasks.ncf`: leave-one-out
splits by that order, 4 sampled negatives per positive in training, the validation and test
cross-entropy against fixed never-seen items, hit ratio and NDCG at 10 among 99.

The interactions depend on the config's data parameters alone (`data_seed` among them), never on
the run's seed: every seed of a config trains on the same data, as on MovieLens.
"""

from __future__ import annotations

import numpy as np

from lhopt.tasks import ncf
from lhopt.tasks.ncf import EVAL_NEGATIVES, NCFTask
from lhopt.tasks.schema import Param, Schema

MIN_INTERACTIONS = 4  # a train item, the validation item and the test item, and one to spare

SCHEMA = Schema(
    "recsys",
    ncf.SCHEMA.params,  # the models and the batch are `ncf`'s
    fixed={
        **ncf.SCHEMA.fixed,
        "users": Param("int", 100, 3000, log=True),
        "items": Param("int", 200, 3000, log=True),
        "interactions": Param("int", 10, 200, log=True, doc="median interactions per user"),
        "rank": Param("int", 2, 32, log=True, doc="dimensions of the true factors"),
        "affinity": Param("float", 0.5, 5.0, doc="weight of the factors against popularity"),
        "popularity": Param("float", 0.0, 1.5, doc="power-law exponent of item popularity"),
        "data_seed": Param("int", 0, 2**31 - 1),
    },
)
DATA_DEFAULTS = {
    "users": 1000,
    "items": 1500,
    "interactions": 60,
    "rank": 8,
    "affinity": 2.0,
    "popularity": 0.8,
    "data_seed": 0,
}


def draw_interactions(
    users: int,
    items: int,
    interactions: int,
    rank: int,
    affinity: float,
    popularity: float,
    data_seed: int,
) -> np.ndarray:
    """(n, 4) int64 rows (user, item, 1, time), ids from 1, as `ncf.leave_one_out` reads them."""
    if items < interactions + EVAL_NEGATIVES + 1:
        raise ValueError(
            f"items={items} is too few for interactions={interactions}: at least "
            f"{interactions + EVAL_NEGATIVES + 1} (each user's test item is ranked among "
            f"{EVAL_NEGATIVES} items it never interacted with)"
        )
    rng = np.random.default_rng(data_seed)
    u = rng.standard_normal((users, rank)) / np.sqrt(rank)
    v = rng.standard_normal((items, rank))
    log_pop = -popularity * np.log1p(rng.permutation(items))
    scores = affinity * (u @ v.T) + log_pop
    counts = np.exp(np.log(interactions) + 0.5 * rng.standard_normal(users)).round()
    counts = np.clip(counts, MIN_INTERACTIONS, items // 5).astype(int)
    rows = []
    for user in range(users):
        keys = scores[user] + rng.gumbel(size=items)  # Gumbel top-k: sampling without replacement
        chosen = np.argpartition(-keys, counts[user])[: counts[user]]
        times = rng.permutation(counts[user])
        rows.append(
            np.stack([np.full_like(chosen, user + 1), chosen + 1, np.ones_like(chosen), times], 1)
        )
    return np.concatenate(rows).astype(np.int64)


def data_params(p: dict) -> dict:
    return {k: p.get(k, d) for k, d in DATA_DEFAULTS.items()}


class RecsysTask(NCFTask):
    family = "recsys"

    def _interactions(self) -> tuple[np.ndarray, int, int]:
        data = data_params(self.config.p)
        return draw_interactions(**data), data["users"], data["items"]
