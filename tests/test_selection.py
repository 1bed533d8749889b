"""The selection suite's families: they build, train, repeat for a seed, and meta-training never
samples them (nor does the `ood` suite use them)."""

import numpy as np
import pytest
import torch

from lhopt.tasks import (
    FAMILIES,
    FAMILY_NAMES,
    SUITES,
    TaskConfig,
    build_task,
    held_out_keys,
    registry,
    sample_training_config,
    task_budget,
)
from lhopt.tasks.registry import OOD_FAMILIES, SELECTION_FAMILIES

# Suites that may run the selection families: chosen on, or fixed for one decision each.
SELECTION_SUITES = (
    "selection",
    "selection-long",
    "confirm",
    "confirm2",
    "confirm3",
    "confirm4",
    "confirm5",
    "confirm6",
    "confirm7",
    "confirm8",
)

Q = TaskConfig.make
SMALL = {
    "shapes": Q("shapes", blocks=2, width=8, noise=0.2, train_samples=200, batch=16, budget=40),
    "regression/friedman": Q(
        "regression",
        problem="friedman",
        depth=2,
        width=32,
        train_samples=100,
        batch=16,
        budget=40,
    ),
    "regression/heteroscedastic": Q(
        "regression",
        problem="heteroscedastic",
        depth=2,
        width=32,
        train_samples=100,
        batch=16,
        budget=40,
    ),
    "autoencoder": Q(
        "autoencoder",
        depth=1,
        width=32,
        code=4,
        noise=0.1,
        train_samples=500,
        batch=32,
        budget=40,
    ),
    "tokens/bag": Q("tokens", arch="bag", dim=16, train_samples=500, batch=32, budget=40),
    "tokens/cnn": Q("tokens", arch="cnn", dim=16, train_samples=500, batch=32, budget=40),
    "recsys/gmf": Q("recsys", arch="gmf", factors=8, batch=128, budget=40, users=100, items=200),
    "recsys/neumf": Q(
        "recsys", arch="neumf", factors=8, mlp_layers=2, batch=128, budget=40, users=100, items=200
    ),
}


def train(task, steps, lr=1e-2):
    opt = torch.optim.AdamW(task.model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = task.train_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_every_selection_family_is_registered_and_tested_here():
    assert {k.split("/")[0] for k in SMALL} == set(SELECTION_FAMILIES)
    assert set(SELECTION_FAMILIES) <= set(FAMILIES)
    assert not set(SELECTION_FAMILIES) & set(FAMILY_NAMES)
    assert not set(SELECTION_FAMILIES) & set(OOD_FAMILIES)


@pytest.mark.parametrize("name", list(SMALL))
def test_each_family_trains_finitely_and_reports(name):
    task = build_task(SMALL[name], seed=0)
    before = task.val_loss()
    losses = train(task, 40)
    after = task.val_loss()
    assert np.isfinite(losses).all() and np.isfinite([before, after]).all()
    assert after < before
    metrics = task.test_metrics()
    assert metrics and all(np.isfinite(list(metrics.values())))
    d = task.descriptor()
    assert d.shape == (len(FAMILY_NAMES) + 6,) and np.isfinite(d).all()
    assert not d[: len(FAMILY_NAMES)].any()  # not a training family: the one-hot is all zeros
    assert task.model.training
    assert task.eval_steps()[-1] == task.budget == 40


@pytest.mark.parametrize("name", list(SMALL))
def test_a_seed_gives_the_same_run(name):
    runs = []
    for _ in range(2):
        task = build_task(SMALL[name], seed=3)
        losses = train(task, 10)
        runs.append(
            (losses, task.val_loss(), [p.detach().clone() for p in task.model.parameters()])
        )
    assert runs[0][0] == runs[1][0] and runs[0][1] == runs[1][1]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][2], runs[1][2], strict=True))
    assert train(build_task(SMALL[name], seed=4), 10) != runs[0][0]


def test_the_data_is_fixed_and_the_training_set_a_prefix():
    """Every seed and optimizer sees the same splits; fewer `train_samples` take a prefix."""
    for name in ("shapes", "tokens/bag", "regression/friedman"):
        a = build_task(SMALL[name], seed=0)
        big = SMALL[name].p | {"train_samples": 300}
        b = build_task(Q(SMALL[name].family, **big), seed=1)
        for split in ("val", "test"):
            assert all(torch.equal(u, v) for u, v in zip(a.data[split], b.data[split], strict=True))
        xa, xb = a.data["train"][0], b.data["train"][0]
        assert len(xa) == SMALL[name].p["train_samples"] and len(xb) == 300
        n = min(len(xa), len(xb))
        assert torch.equal(xa[:n], xb[:n])


def test_selection_families_are_never_sampled_for_meta_training():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        assert sample_training_config(rng).family in FAMILY_NAMES
    for family in SELECTION_FAMILIES:
        with pytest.raises(ValueError, match=rf"\['{family}'\] cannot be sampled.*selection suite"):
            sample_training_config(np.random.default_rng(0), ("quadratic", family))


def test_the_selection_suite_and_the_ood_suite():
    sel = SUITES["selection"]
    assert len(sel) >= 6
    long = SUITES["selection-long"]
    assert {c.family for c in (sel | long).values()} - {"charlm"} == set(SELECTION_FAMILIES)
    assert {c.key() for c in long.values()} <= held_out_keys()
    assert all(task_budget(c) >= 2000 for c in long.values())
    assert {c.key() for c in sel.values()} <= held_out_keys()
    for config in sel.values():
        registry.check_config(config)
        assert 300 <= task_budget(config) <= 3000
    # ood is untouched: none of its tasks belongs to a selection or training-only family
    ood_families = {c.family for c in SUITES["ood"].values()}
    assert ood_families == {"charlm", "ncf", "speech"}
    assert set(OOD_FAMILIES) == {"ncf", "speech"}
    seen = set(long.values())
    for name in (
        "confirm2",
        "confirm3",
        "confirm4",
        "confirm5",
        "confirm6",
        "confirm7",
    ):  # recommenders no other suite runs
        assert {c.family for c in SUITES[name].values()} == {"recsys"}
        assert all(1000 <= task_budget(c) <= 4000 for c in SUITES[name].values())
        assert not set(SUITES[name].values()) & seen, name
        seen |= set(SUITES[name].values())
    for name, tasks in SUITES.items():
        if name not in SELECTION_SUITES:
            assert not {c.family for c in tasks.values()} & set(SELECTION_FAMILIES)


def test_confirm8_holds_batch_norm_models_no_other_suite_runs():
    from torch import nn

    others = {c for name, t in SUITES.items() if name != "confirm8" for c in t.values()}
    for name, config in SUITES["confirm8"].items():
        assert config not in others, name
        model = build_task(config, seed=0).model
        assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()), name
        assert 300 <= task_budget(config) <= 3000


def test_recsys_data_depend_on_the_config_alone():
    from lhopt.tasks import recsys

    kw = dict(users=50, items=300, interactions=20, rank=4, affinity=2.0, popularity=0.8)
    a = recsys.draw_interactions(**kw, data_seed=0)
    assert np.array_equal(a, recsys.draw_interactions(**kw, data_seed=0))
    assert not np.array_equal(a, recsys.draw_interactions(**kw, data_seed=1))
    counts = np.bincount(a[:, 0])[1:]
    assert len(counts) == 50 and counts.min() >= recsys.MIN_INTERACTIONS
    assert counts.max() <= 300 // 5
    assert len(np.unique(a[:, :2], axis=0)) == len(a)  # an item at most once per user
    assert a[:, 1].min() >= 1 and a[:, 1].max() <= 300
    # every seed of a config trains on the same splits
    config = SMALL["recsys/gmf"]
    t0, t1 = build_task(config, seed=0), build_task(config, seed=1)
    assert torch.equal(t0.train_pairs, t1.train_pairs)
    assert all(
        torch.equal(x, y) for x, y in zip(t0.eval_sets["val"], t1.eval_sets["val"], strict=True)
    )


def test_recsys_popular_items_are_picked_more_and_the_factors_matter():
    from lhopt.tasks import recsys

    kw = dict(users=400, items=500, interactions=30, rank=4, data_seed=0)
    flat = recsys.draw_interactions(**kw, affinity=0.5, popularity=0.0)
    skewed = recsys.draw_interactions(**kw, affinity=0.5, popularity=1.5)

    def top_share(a):  # the share of all interactions on the 25 most picked items
        return np.sort(np.bincount(a[:, 1], minlength=501))[-25:].sum() / len(a)

    assert top_share(skewed) > 2 * top_share(flat)


def test_recsys_rejects_too_few_items():
    from lhopt.tasks import recsys

    with pytest.raises(ValueError, match=r"items=120 is too few for interactions=30"):
        recsys.draw_interactions(120, 120, 30, 4, 2.0, 0.8, 0)
    with pytest.raises(ValueError, match="items"):
        build_task(Q("recsys", arch="gmf", factors=8, batch=128, budget=40, items=100), 0)
