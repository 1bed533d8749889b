import copy

import numpy as np
import pytest
import torch

from lhopt import CIAO
from lhopt.tasks import (
    FAMILIES,
    FAMILY_NAMES,
    NUM_EVALS,
    SUITES,
    TaskConfig,
    build_task,
    held_out_keys,
    mnist1d,
    registry,
    sample_training_config,
    task_budget,
)


def small(config: TaskConfig, **over) -> TaskConfig:
    return TaskConfig.make(config.family, **{**config.p, **over})


SMALL = {
    "quadratic": TaskConfig.make(
        "quadratic", dim=20, condition=100.0, noise=0.5, batch=2, budget=40
    ),
    "algorithmic": TaskConfig.make(
        "algorithmic",
        problem="addition",
        cell="lstm",
        layers=2,
        hidden=16,
        dropout=0.1,
        length=4,
        batch=32,
        budget=40,
    ),
    "mnist1d": TaskConfig.make(
        "mnist1d",
        arch="cnn",
        depth=2,
        width=32,
        norm="batch",
        activation="gelu",
        dropout=0.1,
        loss="huber",
        batch=32,
        epochs=1,
        budget=40,
    ),
    "charlm": TaskConfig.make(
        "charlm",
        arch="transformer",
        layers=1,
        d_model=32,
        context=16,
        dropout=0.0,
        batch=16,
        budget=40,
        corpus="poems",
    ),
    "linear": TaskConfig.make(
        "linear",
        dim=20,
        classes=3,
        condition=100.0,
        label_noise=0.1,
        train_samples=500,
        batch=32,
        budget=40,
    ),
    "seqattn": TaskConfig.make(
        "seqattn",
        problem="sort",
        vocab=6,
        length=6,
        heads=2,
        head_width=8,
        layers=1,
        dropout=0.0,
        batch=32,
        budget=40,
    ),
    "bpr": TaskConfig.make(
        "bpr",
        users=200,
        items=300,
        interactions=8,
        clusters=3,
        spread=0.5,
        rank=4,
        popularity=0.8,
        factors=8,
        negatives=2,
        batch=64,
        budget=40,
    ),
    "teacher": TaskConfig.make(
        "teacher",
        problem="regression",
        inputs=6,
        skew=0.3,
        teacher_width=8,
        noise=0.2,
        classes=2,
        depth=2,
        width=32,
        activation="silu",
        norm="layer",
        train_samples=200,
        batch=16,
        budget=40,
    ),
    "decoder": TaskConfig.make(
        "decoder", layers=1, d_model=32, context=16, dropout=0.0, batch=16, budget=40
    ),
    "photos": TaskConfig.make("photos", depth=1, width=8, train_samples=300, batch=32, budget=40),
    "ncf": TaskConfig.make("ncf", arch="neumf", factors=8, mlp_layers=2, batch=128, budget=40),
    "speech": TaskConfig.make("speech", channels=4, hidden=16, layers=1, batch=8, budget=40),
}


# The selection suite's families are tested in tests/test_selection.py, the unseen suite's in
# tests/test_unseen.py.
NON_SELECTION = [
    f for f in FAMILIES if f not in registry.SELECTION_FAMILIES + registry.UNSEEN_FAMILIES
]


def train(task, steps):
    opt = CIAO(task.model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        loss = task.train_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("family", NON_SELECTION)
def test_each_family_trains_and_reports(family):
    task = build_task(SMALL[family], seed=0)
    before = task.val_loss()
    train(task, 40)
    after = task.val_loss()
    assert np.isfinite([before, after]).all() and after < before
    metrics = task.test_metrics()
    assert metrics and all(np.isfinite(list(metrics.values())))
    d = task.descriptor()
    assert d.shape == (len(FAMILY_NAMES) + 6,) and np.isfinite(d).all()
    # the one-hot covers the meta-training families; out-of-distribution ones are all zeros
    assert d[: len(FAMILY_NAMES)].tolist() == [float(f == family) for f in FAMILY_NAMES]
    assert task.model.training  # evaluation put the model back in training mode


@pytest.mark.parametrize("family", NON_SELECTION)
def test_a_seed_gives_the_same_run(family):
    runs = []
    for _ in range(2):
        task = build_task(SMALL[family], seed=3)
        losses = train(task, 15)
        runs.append((losses, [p.detach().clone() for p in task.model.parameters()]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1], strict=True))
    other = train(build_task(SMALL[family], seed=4), 15)
    assert other != runs[0][0]


def test_evaluation_schedule():
    task = build_task(SMALL["quadratic"], seed=0)
    assert task.eval_steps() == [0] + [2 * i for i in range(1, NUM_EVALS + 1)]
    assert len(task.eval_steps(80)) == 2 * NUM_EVALS + 1
    assert len(task.eval_steps(60)) == 31


def test_sampled_configs_are_valid_and_never_held_out():
    rng = np.random.default_rng(0)
    held = held_out_keys()
    families = set()
    for _ in range(3000):
        config = sample_training_config(rng)
        registry.check_config(config)
        assert config.key() not in held
        assert config.p.get("corpus", "plays") == "plays"  # no held-out text in training
        families.add(config.family)
    assert families == set(FAMILY_NAMES)


def test_budget_scale_lengthens_sampled_budgets_within_the_limits():
    plain = [sample_training_config(np.random.default_rng(s)) for s in range(200)]
    again = [sample_training_config(np.random.default_rng(s), budget_scale=1.0) for s in range(200)]
    assert [c.key() for c in plain] == [c.key() for c in again]  # 1: the earlier sequence
    ratios = []
    for s, base in enumerate(plain):
        scaled = sample_training_config(np.random.default_rng(s), budget_scale=8.0)
        registry.check_config(scaled)
        # The same task as without the scale (drawn first), only a longer budget.
        assert {k: v for k, v in scaled.p.items() if k != "budget"} == {
            k: v for k, v in base.p.items() if k != "budget"
        }
        ratios.append(registry.task_budget(scaled) / registry.task_budget(base))
    assert min(ratios) >= 0.99 and max(ratios) <= 8.01
    assert np.median(ratios) > 2 and max(ratios) > 6
    for bad in (0.5, 1000, "8"):
        with pytest.raises(ValueError, match="budget_scale"):
            sample_training_config(np.random.default_rng(0), budget_scale=bad)


def test_data_scale_shrinks_only_mnist1d_training_sets():
    plain = [sample_training_config(np.random.default_rng(s)) for s in range(200)]
    sizes = []
    for s, base in enumerate(plain):
        shrunk = sample_training_config(np.random.default_rng(s), data_scale=10.0)
        registry.check_config(shrunk)
        rest = {k: v for k, v in shrunk.p.items() if k != "train_samples"}
        assert rest == base.p  # the same task (drawn first), only its training set cut
        if shrunk.family == "mnist1d":
            sizes.append(shrunk.p["train_samples"])
        else:
            assert "train_samples" not in shrunk.p
    assert min(sizes) >= 700 and max(sizes) <= 7000 and np.median(sizes) < 3000
    with pytest.raises(ValueError, match=r"data_scale = 0.5: expected a number in \[1, 100\]"):
        sample_training_config(np.random.default_rng(0), data_scale=0.5)


def test_mnist1d_train_samples_is_a_prefix_of_the_training_set():
    full = build_task(SMALL["mnist1d"], seed=0)
    cut = build_task(small(SMALL["mnist1d"], train_samples=300), seed=0)
    assert len(cut.train_set[0]) == 300 and len(full.train_set[0]) == 7000
    assert torch.equal(cut.train_set[0], full.train_set[0][:300])
    assert cut.val_loss() == full.val_loss()  # same model, same validation set
    with pytest.raises(ValueError, match=r"train_samples=50 is out of range: int in \[100, 7000\]"):
        build_task(small(SMALL["mnist1d"], train_samples=50), seed=0)


def test_out_of_distribution_families_are_never_sampled():
    ood = set(FAMILIES) - set(registry.TRAINING_FAMILIES) - set(registry.SELECTION_FAMILIES)
    ood -= set(registry.UNSEEN_FAMILIES)
    assert ood == set(registry.OOD_FAMILIES) == {"ncf", "speech"}
    with pytest.raises(ValueError, match=r"\['speech'\] cannot be sampled.*ood suite"):
        sample_training_config(np.random.default_rng(0), ("quadratic", "speech"))


def test_extra_families_are_sampled_only_when_named():
    # The default distribution (and so every earlier run's) is unchanged by them.
    assert not set(registry.EXTRA_FAMILIES) & set(FAMILY_NAMES)
    assert not set(registry.EXTRA_FAMILIES) & set(registry.SELECTION_FAMILIES)
    assert not set(registry.EXTRA_FAMILIES) & set(registry.OOD_FAMILIES)
    rng = np.random.default_rng(2)
    named = {sample_training_config(rng, registry.TRAINING_FAMILIES).family for _ in range(300)}
    assert named == set(registry.TRAINING_FAMILIES)


def test_linear_data_are_fixed_by_the_config_and_have_its_condition_number():
    from lhopt.tasks.linear import make_data

    p = dict(SMALL["linear"].p, dim=50, condition=400.0, train_samples=5000)
    a, b = make_data(p), make_data(p)
    assert all(torch.equal(a[k][0], b[k][0]) and torch.equal(a[k][1], b[k][1]) for k in a)
    x = torch.cat([a[k][0] for k in a]).double()
    eig = torch.linalg.eigvalsh(torch.cov(x.T))
    assert 300 < float(eig[-1] / eig[0]) < 530  # 400, up to sampling error
    other = make_data(dict(p, condition=10.0))
    assert not torch.equal(other["val"][0], a["val"][0])


def test_teacher_data_are_fixed_by_the_config_and_standardised():
    from lhopt.tasks.teacher import make_data

    p = dict(SMALL["teacher"].p, train_samples=2000, noise=0.5)
    a = make_data(dict(p))
    b = make_data(dict(p, depth=4, width=200))  # the student's parameters do not draw the data
    assert all(a[k][0] is b[k][0] and a[k][1] is b[k][1] for k in a)
    x, y = a["train"]
    assert x.shape == (2000, 6) and y.shape == (2000, 1)
    assert x.mean(0).abs().max() < 1e-4 and (x.std(0, unbiased=False) - 1).abs().max() < 1e-3
    assert abs(float(y.var()) - 1) < 0.01  # targets standardised by the training part
    c = make_data(dict(p, problem="classification", classes=5))
    labels = torch.cat([c[k][1] for k in c])
    assert c["train"][1].dtype == torch.int64 and set(labels.unique().tolist()) == set(range(5))
    assert not torch.equal(make_data(dict(p, noise=0.1))["val"][1], a["val"][1])


def test_photos_parts_share_no_patch_and_hold_every_class():
    from lhopt.tasks.photos import CLASSES, load_data

    data = load_data(5000)
    seen = {bytes(x.numpy()) for x in load_data(17_000)["train"][0]}
    for split in ("val", "test"):
        x, y = data[split]
        assert x.shape == (1000, 3, 12, 12) and set(y.tolist()) == set(range(CLASSES))
        assert not {bytes(p.numpy()) for p in x} & seen
    x, y = data["train"]
    assert len(x) == 5000 and abs(float(x.mean())) < 0.05 and torch.bincount(y).min() > 600
    assert torch.equal(load_data(300)["train"][0], x[:300])  # a prefix of one permutation
    with pytest.raises(ValueError, match="train_samples = 90000, at most"):
        load_data(90_000)


def test_seqattn_targets():
    from lhopt.tasks.seqattn import make_batch

    g = torch.Generator().manual_seed(0)
    x, y = make_batch("reverse", 4, 9, 7, g)
    assert torch.equal(y, x.flip(1))
    x, y = make_batch("sort", 4, 9, 7, g)
    assert torch.equal(y, x.sort(1).values) and (y.diff(dim=1) >= 0).all()


@pytest.mark.parametrize("family", registry.TRAINING_FAMILIES)
def test_sampled_configs_build_and_take_a_step(family):
    rng = np.random.default_rng(1)
    for i in range(25):
        task = build_task(sample_training_config(rng, (family,)), seed=i)
        task.train_loss().backward()


def test_held_out_configs_are_rejected_by_the_sampler(monkeypatch):
    first = sample_training_config(np.random.default_rng(7))
    monkeypatch.setattr("lhopt.tasks.suites.held_out_keys", lambda: {first.key()})
    again = sample_training_config(np.random.default_rng(7))
    assert again.key() != first.key()


def test_suites_are_valid_and_big_enough():
    assert len(SUITES["validation"]) >= 8
    assert {c.family for c in SUITES["validation"].values()} == set(FAMILY_NAMES)
    long = SUITES["validation-long"].values()
    assert {c.family for c in long} == set(FAMILY_NAMES)
    for c in long:  # longer than the default distribution's budgets, or on a fraction of data
        high = registry.FAMILIES[c.family][0].all_params()["budget"]
        default_high = mnist1d.MAX_BUDGET if c.family == "mnist1d" else high.high
        assert task_budget(c) > default_high or c.p.get("train_samples", 7000) < 7000
    ood = SUITES["ood"].values()
    assert {c.family for c in ood} >= {"charlm", "ncf", "speech"} and len(SUITES["ood"]) >= 4
    longest_training_lm = registry.FAMILIES["charlm"][0].params["budget"].high
    assert max(task_budget(c) for c in ood if c.family == "charlm") >= 10 * longest_training_lm
    for tasks in SUITES.values():
        for config in tasks.values():
            registry.check_config(config)
            assert task_budget(config) >= NUM_EVALS
    names = [n for tasks in SUITES.values() for n in tasks]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    "config, words",
    [
        ({"family": "images"}, ["unknown task family 'images'", "quadratic"]),
        ({**SMALL["quadratic"].to_dict(), "depth": 3}, ["unknown parameter", "'depth'", "dim"]),
        ({**SMALL["quadratic"].to_dict(), "dim": 5}, ["dim=5", "[10, 2000]"]),
        ({**SMALL["algorithmic"].to_dict(), "cell": "tcn"}, ["cell='tcn'", "'gru'"]),
        ({k: v for k, v in SMALL["charlm"].to_dict().items() if k != "context"}, ["context"]),
    ],
)
def test_malformed_configs_say_what_is_valid(config, words):
    with pytest.raises(ValueError) as info:
        build_task(copy.deepcopy(config), seed=0)
    for w in words:
        assert w in str(info.value)


def test_config_round_trip_and_key():
    c = SMALL["mnist1d"]
    assert TaskConfig.from_dict(c.to_dict()) == c
    assert (
        TaskConfig.make(
            "quadratic", dim=20, condition=100.00000001, noise=0.5, batch=2, budget=40
        ).key()
        == SMALL["quadratic"].key()
    )


def test_bpr_data_are_fixed_by_the_config_and_leave_test_negatives():
    from lhopt.tasks.bpr import EVAL_NEGATIVES, draw_interactions

    p = dict(SMALL["bpr"].p, interactions=80)
    rows = draw_interactions(p)
    assert np.array_equal(rows, draw_interactions(dict(p)))
    assert not np.array_equal(rows, draw_interactions(dict(p, clusters=4)))
    users, counts = np.unique(rows[:, 0], return_counts=True)
    assert len(users) == 200 and counts.min() >= 3
    assert counts.max() <= 300 - EVAL_NEGATIVES - 1  # 99 never-picked items left for the test
    pairs = {(u, i) for u, i in rows[:, :2]}
    assert len(pairs) == len(rows)  # without replacement
    task = build_task(SMALL["bpr"], seed=0)
    users, pos, negs = task.eval_sets["test"]
    assert not task.rated[users[:, None], negs].any()  # the test ranks never-picked items
    assert task.rated[users, pos].all()
