"""CIAO's fast path against its per-tensor reference (lhopt.optim.reference).

Tolerances: in float64 the parameters agree to 1e-12 of their largest magnitude and the
statistics to 1e-10 relative (1e-12 absolute) after 30 steps; what separates the two is rounding
(the fast path folds the bias corrections into scalars and stores the first moment scaled).
In float32 and float16 the parameters agree to a few units in the last place of the dtype.
"""

import math

import pytest
import torch
from torch import nn

from lhopt.optim import CIAO, STEP_STAT_NAMES
from lhopt.optim.reference import ReferenceCIAO

PARAM_RTOL = {torch.float64: 1e-12, torch.float32: 5e-6, torch.float16: 1e-3}
STAT_REL, STAT_ABS = 1e-10, 1e-12
STEPS = 30

SETTINGS = {
    "adamw": dict(clip_fraction=None),
    "clipping": dict(clip_fraction=0.8, grad_clip_ombeta=0.1),
    "lamb": dict(lamb_power=1.0, clip_fraction=None),
    "lamb_clipping_decay_in_update": dict(lamb_power=0.5, decay_in_update=True, weight_decay=0.1),
    "adamax_lamb": dict(adamax=True, lamb_power=2.0, lamb_min_trust=0.1),
    "decay_in_update": dict(decay_in_update=True, weight_decay=0.05, clip_fraction=None),
    "no_decay_large_lr": dict(weight_decay=0.0, lr=3e-2),
    "matrix_decay": dict(lamb_power=1.0, weight_decay=0.1, lr=3e-2, matrix_decay_factor=0.1),
    # c ~ 1e-4 every step: the first moment's scale is folded back in every few steps.
    "heavy_clipping": dict(clip_fraction=1e-4, ombeta1=0.5, lamb_power=1.0),
}


def make_model(dtype=torch.float64):
    torch.manual_seed(0)
    layers = [nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)]
    return nn.Sequential(*layers).to(dtype)


def one_group(model, **hp):
    return [{"params": model.parameters(), **hp}]


def three_groups(model, **hp):
    """Three groups, each with something of its own on top of `hp`."""
    return [
        {"params": model[0].parameters(), **hp, "lr": 3e-3, "weight_decay": 0.0},
        {"params": model[2].parameters(), **hp, "lamb_power": 1.0, "clip_fraction": None},
        {"params": model[4].parameters(), **hp, "adamax": not hp.get("adamax", False)},
    ]


def batches(n, dtype, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(32, 6, generator=g).to(dtype), torch.randint(0, 3, (32,), generator=g))
        for _ in range(n)
    ]


def run_pair(groups, dtype=torch.float64, steps=STEPS, every_step=None, feature_every=1):
    """Train the same model with CIAO and ReferenceCIAO; returns both models and the
    statistics each popped every 10 steps (the first step's pop is left out: its noise
    statistic is a difference that cancels exactly, 0 against rounding)."""
    fast_model, ref_model = make_model(dtype), make_model(dtype)
    # stat_samples above every tensor's size: the fast path reads every element, as the
    # reference does.
    fast = CIAO(groups(fast_model), feature_every=feature_every, stat_samples=10**6)
    ref = ReferenceCIAO(groups(ref_model), feature_every=feature_every)
    pops = []
    for t, (x, y) in enumerate(batches(steps, dtype)):
        for model, opt in ((fast_model, fast), (ref_model, ref)):
            if every_step is not None:
                every_step(t, model, opt)
            opt.zero_grad()
            nn.functional.cross_entropy(model(x).double(), y).backward()
            opt.step()
        if t == 0 or t % 10 == 9:
            pops.append((fast.pop_step_stats(), ref.pop_step_stats()))
    return fast_model, ref_model, pops[1:], (fast, ref)


def assert_params_close(fast_model, ref_model, rtol):
    for (name, p), q in zip(fast_model.named_parameters(), ref_model.parameters(), strict=True):
        scale = q.detach().double().abs().max()
        err = (p.detach().double() - q.detach().double()).abs().max()
        assert err <= rtol * scale, f"{name}: |fast - reference| = {err:.3g} > {rtol} * {scale}"


def assert_stats_close(pops):
    for fast, ref in pops:
        assert set(fast) == set(ref) == set(STEP_STAT_NAMES)
        for name in STEP_STAT_NAMES:
            assert fast[name] == pytest.approx(ref[name], rel=STAT_REL, abs=STAT_ABS), name


@pytest.mark.parametrize("groups", [one_group, three_groups])
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_fast_path_matches_reference(setting, groups):
    fast_model, ref_model, pops, _ = run_pair(lambda m: groups(m, **SETTINGS[setting]))
    assert_params_close(fast_model, ref_model, PARAM_RTOL[torch.float64])
    assert_stats_close(pops)


def change_hyperparameters(t, model, opt):
    """What a controller does: any hyperparameter of any group, between any two steps."""
    g = opt.param_groups
    if t % 5 == 4:
        for group in g:
            group["lr"] *= 0.7
            group["epsilon"] *= 0.5
    changes = {
        6: {"ombeta1": 0.05, "ombeta2": 0.002},
        9: {"lamb_power": 1.0},  # LAMB joins: its update-norm EMA starts here
        12: {"clip_fraction": None, "weight_decay": 0.05},
        15: {"decay_in_update": True},
        18: {"adamax": True, "lamb_power": 0.0},
        21: {"clip_fraction": 0.3, "lamb_power": 2.0},  # LAMB again: the EMA resumes
        24: {"decay_in_update": False, "adamax": False, "ombeta2": 0.05},
    }
    g[t % len(g)].update(changes.get(t, {}))


@pytest.mark.parametrize("groups", [one_group, three_groups])
def test_hyperparameters_changing_mid_run_match_reference(groups):
    fast_model, ref_model, pops, _ = run_pair(groups, every_step=change_hyperparameters)
    assert_params_close(fast_model, ref_model, PARAM_RTOL[torch.float64])
    assert_stats_close(pops)


def test_skipped_steps_and_frozen_parameters_match_reference():
    fast_model, ref_model = make_model(), make_model()
    fast = CIAO(three_groups(fast_model), feature_every=2, stat_samples=10**6)
    ref = ReferenceCIAO(three_groups(ref_model), feature_every=2)
    pops = []
    for t, (x, y) in enumerate(batches(STEPS, torch.float64)):
        for model, opt in ((fast_model, fast), (ref_model, ref)):
            model[4].requires_grad_(t % 3 != 0)
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            if t in (4, 11, 12):
                model[2].weight.grad[0, 1] = math.nan
            opt.step()
        if t == 0 or t % 10 == 9:
            pops.append((fast.pop_step_stats(), ref.pop_step_stats()))
    assert fast.skipped_steps == ref.skipped_steps == 3
    assert pops[-2][0]["skip_rate"] == pytest.approx(2 / 10)
    assert_params_close(fast_model, ref_model, PARAM_RTOL[torch.float64])
    assert_stats_close(pops[1:])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("setting", ["clipping", "lamb_clipping_decay_in_update", "adamax_lamb"])
def test_low_precision_fast_path_matches_reference(setting, dtype):
    # Both compute in float32 (float16 parameters keep float32 state) and round the parameters
    # to their dtype once per step.
    fast_model, ref_model, _, _ = run_pair(
        lambda m: one_group(m, **SETTINGS[setting], epsilon=1e-7), dtype=dtype, steps=10
    )
    assert_params_close(fast_model, ref_model, PARAM_RTOL[dtype])


class TableModel(nn.Module):
    """An embedding table (its rows of tokens a batch did not read get zero gradients) and a
    dense read-out: a row-sparse tensor beside dense ones."""

    def __init__(self):
        super().__init__()
        self.table = nn.Embedding(40, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        return self.out(self.table(x).mean(1))


def run_tables(make_opt, steps=20, model_class=None):
    torch.manual_seed(0)
    model = (model_class or TableModel)().double()
    opt = make_opt(model)
    g = torch.Generator().manual_seed(3)
    for _ in range(steps):
        x, y = torch.randint(0, 30, (16, 4), generator=g), torch.randint(0, 3, (16,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model, opt


@pytest.mark.parametrize("lamb_sparse", [True, False])
def test_row_sparse_table_matches_reference(lamb_sparse):
    hp = dict(lamb_power=1.0, lamb_sparse=lamb_sparse, lr=3e-2)
    fast, opt = run_tables(lambda m: CIAO(m.parameters(), **hp, stat_samples=10**6))
    ref, _ = run_tables(lambda m: ReferenceCIAO(m.parameters(), **hp))
    assert_params_close(fast, ref, PARAM_RTOL[torch.float64])
    assert opt.state[fast.table.weight]["row_sparse"]  # rows 30-39 are never read
    assert not opt.state[fast.out.weight]["row_sparse"]


@pytest.mark.parametrize("lamb_power", [0.0, 1.0])
def test_table_decay_matches_reference(lamb_power):
    hp = dict(lamb_power=lamb_power, lr=3e-2, weight_decay=0.1, table_decay_factor=3.0)
    hp["matrix_decay_factor"] = 0.1
    fast, opt = run_tables(lambda m: CIAO(m.parameters(), **hp, stat_samples=10**6))
    ref, _ = run_tables(lambda m: ReferenceCIAO(m.parameters(), **hp))
    assert_params_close(fast, ref, PARAM_RTOL[torch.float64])
    assert opt.state[fast.table.weight]["embedding"]  # row-sparse at nn.Embedding's scale
    plain, _ = run_tables(lambda m: CIAO(m.parameters(), **{**hp, "table_decay_factor": 1.0}))
    assert not torch.allclose(plain.table.weight, fast.table.weight)


def test_lamb_sparse_false_steps_the_table_as_adamw_and_the_rest_under_the_trust_ratio():
    def trained(**hp):  # one step from the same point: the same gradients
        return run_tables(lambda m: CIAO(m.parameters(), lr=3e-2, **hp), steps=1)[0]

    dense_only = trained(lamb_power=1.0, lamb_sparse=False)
    adamw, lamb = trained(lamb_power=0.0), trained(lamb_power=1.0)
    # The AdamW path forms the step in another order: equal to rounding.
    same = lambda a, b: torch.allclose(a, b, rtol=1e-12, atol=0)  # noqa: E731
    assert same(dense_only.table.weight, adamw.table.weight)
    assert not same(dense_only.table.weight, lamb.table.weight)
    assert same(dense_only.out.weight, lamb.out.weight)
    assert not same(dense_only.out.weight, adamw.out.weight)


class PosModel(nn.Module):
    """A row-sparse embedding table (std 1), a positional table far smaller than the weights
    beside it (std 0.01, as a transformer's), and two dense layers (PyTorch's default init)."""

    def __init__(self):
        super().__init__()
        self.table = nn.Embedding(40, 8)
        self.pos = nn.Parameter(0.01 * torch.randn(4, 8))
        self.hidden = nn.Linear(8, 16)
        self.out = nn.Linear(16, 3)

    def forward(self, x):
        return self.out(torch.tanh(self.hidden((self.table(x) + self.pos).mean(1))))


def run_pos(make_opt, steps=20):
    return run_tables(make_opt, steps, model_class=PosModel)


def test_lamb_free_tensors_picks_small_dense_matrices_only():
    from lhopt.optim.ciao import lamb_free_tensors

    def full(value, *shape):  # a tensor of rms `value` exactly
        return torch.full(shape, value)

    weights = [full(0.1, 16, 16) for _ in range(3)]
    small, zero, empty, vector = (
        full(0.01, 8, 16),
        torch.zeros(4, 4),
        torch.zeros(0, 4),
        full(1e-4, 16),
    )
    params = [*weights, small, zero, empty, vector, full(1.0, 40, 8)]
    sparse = [False] * 7 + [True]
    assert lamb_free_tensors(params, sparse, 1 / 3) == [False] * 3 + [True, True] + [False] * 3
    # Tables neither set the median nor are freed: counted, three tables at rms 1 would put the
    # floor at 1/3 and free the 0.1 matrix too. The median is the upper one: the lower, 0.03,
    # would free nothing.
    params = [full(0.1, 3, 3), full(0.03, 3, 3), *(full(1.0, 5, 3) for _ in range(3))]
    assert lamb_free_tensors(params, [False, False, True, True, True], 1 / 3) == [
        False,
        True,
        False,
        False,
        False,
    ]
    assert lamb_free_tensors([full(0.1, 2, 2)], [False], 0.99) == [False]  # alone: its own median
    assert lamb_free_tensors([vector], [False], 0.5) == [False]  # nothing dense: nothing freed


def test_lamb_free_below_matches_reference():
    hp = dict(lamb_power=1.0, lamb_free_below=1 / 3, lr=3e-2)
    fast, opt = run_pos(lambda m: CIAO(m.parameters(), **hp, stat_samples=10**6))
    ref, ref_opt = run_pos(lambda m: ReferenceCIAO(m.parameters(), **hp))
    assert_params_close(fast, ref, PARAM_RTOL[torch.float64])
    freed = {n: opt.state[p].get("lamb_free") for n, p in fast.named_parameters()}
    assert freed == {
        "table.weight": False,
        "pos": True,
        "hidden.weight": False,
        "hidden.bias": False,
        "out.weight": False,
        "out.bias": False,
    }
    assert [ref_opt.state[p]["lamb_free"] for p in ref.parameters()] == list(freed.values())


def test_a_freed_matrix_steps_as_adamw_and_the_others_under_the_trust_ratio():
    def trained(**hp):  # one step from the same point: the same gradients
        return run_pos(lambda m: CIAO(m.parameters(), lr=3e-2, **hp), steps=1)

    (freed, opt), (adamw, _), (lamb, _) = (
        trained(lamb_power=1.0, lamb_free_below=1 / 3),
        trained(lamb_power=0.0),
        trained(lamb_power=1.0),
    )
    same = lambda a, b: torch.allclose(a, b, rtol=1e-12, atol=0)  # noqa: E731
    assert same(freed.pos, adamw.pos) and not same(freed.pos, lamb.pos)
    for name in ("hidden", "out"):
        w_freed, w_lamb, w_adamw = (getattr(m, name).weight for m in (freed, lamb, adamw))
        assert torch.equal(w_freed, w_lamb) and not same(w_freed, w_adamw)
    # The freed table takes no trust ratio into the lr in AdamW's units: the others do.
    lamb_opt = trained(lamb_power=1.0)[1]
    assert opt.adamw_lrs()[0] != lamb_opt.adamw_lrs()[0]
    # At 0 (the default) nothing is decided.
    _, off = trained(lamb_power=1.0, lamb_free_below=0.0)
    assert not any("lamb_free" in s for s in off.state.values())


def test_the_free_decision_is_made_once_saved_and_taken_by_a_late_tensor_at_its_first_step():
    model = PosModel().double()
    late = nn.Parameter(torch.full((8, 8), 0.001, dtype=torch.float64))  # no gradient at first
    opt = CIAO([*model.parameters(), late], lamb_power=1.0, lamb_free_below=1 / 3)
    x, y = torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, dtype=torch.long)

    def step(extra=0.0):
        opt.zero_grad()
        (nn.functional.cross_entropy(model(x), y) + extra).backward()
        opt.step()

    step()
    assert "lamb_free" not in opt.state[late] and opt.state[model.pos]["lamb_free"]
    with torch.no_grad():
        model.pos.mul_(100.0)  # now far above the floor: stays free
    step((late**2).sum())  # the late tensor's first gradient: decided now, against the median
    assert opt.state[model.pos]["lamb_free"] and opt.state[late]["lamb_free"]
    assert not opt.state[model.hidden.weight]["lamb_free"]

    again = CIAO([*model.parameters(), late], lamb_power=1.0, lamb_free_below=1 / 3)
    again.load_state_dict(opt.state_dict())
    assert [again.state[p]["lamb_free"] for p in (model.pos, late, model.hidden.weight)] == [
        True,
        True,
        False,
    ]


def test_a_skipped_first_step_decides_nothing():
    model = PosModel().double()
    opt = CIAO(model.parameters(), lamb_power=1.0, lamb_free_below=1 / 3)
    for p in model.parameters():
        p.grad = torch.full_like(p, math.nan)
    opt.step()
    assert opt.skipped_steps == 1 and not opt.state


def test_a_state_dict_saved_without_the_option_loads_and_steps():
    model, opt = run_pos(lambda m: CIAO(m.parameters(), lamb_power=1.0), steps=2)
    saved = opt.state_dict()
    for group in saved["param_groups"]:
        del group["lamb_free_below"]  # as one saved before the option existed
    again = CIAO(model.parameters(), lamb_power=1.0)
    again.load_state_dict(saved)
    assert again.param_groups[0]["lamb_free_below"] == 0.0
    again.zero_grad()
    nn.functional.cross_entropy(
        model(torch.zeros(2, 4, dtype=torch.long)), torch.zeros(2).long()
    ).backward()
    again.step()
    assert again.hparams[0]["lamb_free_below"] == 0.0


def test_learned_optimizer_passes_the_option_to_ciao():
    from lhopt import LearnedOptimizer

    model = PosModel()
    opt = LearnedOptimizer(model.parameters(), total_steps=50, lamb_free_below=1 / 3)
    opt.zero_grad()
    nn.functional.cross_entropy(
        model(torch.zeros(2, 4, dtype=torch.long)), torch.zeros(2).long()
    ).backward()
    opt.step()
    assert opt.state[model.pos]["lamb_free"] and not opt.state[model.hidden.weight]["lamb_free"]


@pytest.mark.parametrize("value", [-0.1, 1.5, None])
def test_lamb_free_below_out_of_range_is_refused(value):
    with pytest.raises(ValueError, match=rf"lamb_free_below={value!r} is "):
        CIAO(PosModel().parameters(), lamb_free_below=value)


class GPT2Like(PosModel):
    """PosModel with every dense matrix at GPT-2's std 0.02 (far below PyTorch's default scale
    for fan-ins 8 and 16) and the embedding table small too (row-sparse: never floored)."""

    def __init__(self, scale=0.02):
        super().__init__()
        with torch.no_grad():
            for p in (self.table.weight, self.pos, self.hidden.weight, self.out.weight):
                p.normal_(0.0, scale)


def test_default_init_norm_is_pytorchs_linear_and_conv_scale():
    from lhopt.optim.ciao import default_init_norm

    torch.manual_seed(0)
    for layer in (nn.Linear(256, 512), nn.Conv2d(16, 64, 3)):
        w = layer.weight.detach()
        assert default_init_norm(w) == pytest.approx(float(w.norm()), rel=0.02)
    assert default_init_norm(torch.zeros(0, 4)) == 0.0


def _one_step(model_class, **hp):
    """Each parameter's change in one step of CIAO (lr 3e-2, the trust ratio, no decay) from
    the same start and gradients as any other call's, the start, and the optimizer and model."""
    torch.manual_seed(0)  # run_tables seeds 0 before building its model: the same start
    start = dict(model_class().double().named_parameters())
    model, opt = run_tables(
        lambda m: CIAO(m.parameters(), lr=3e-2, weight_decay=0.0, lamb_power=1.0, **hp),
        steps=1,
        model_class=model_class,
    )
    changes = {n: (p - start[n]).detach() for n, p in model.named_parameters()}
    return changes, {n: p.detach() for n, p in start.items()}, opt, model


def test_the_floor_steps_a_small_matrix_as_at_its_default_scale_and_leaves_the_rest():
    from lhopt.optim.ciao import default_init_norm

    (floored, start, _, _), (plain, _, _, _) = (
        _one_step(GPT2Like, lamb_norm_floor=1.0),
        _one_step(GPT2Like),
    )
    for name in ("pos", "hidden.weight", "out.weight"):  # at 0.02: all below their floors
        p = start[name]
        ratio = float(floored[name].norm() / plain[name].norm())
        assert ratio == pytest.approx(default_init_norm(p) / float(p.norm()), rel=1e-9), name
        assert ratio > 3, name
    # The row-sparse table is not floored; vectors take no trust ratio at all.
    for name in ("table.weight", "hidden.bias", "out.bias"):
        assert torch.equal(floored[name], plain[name]), name


def test_adamw_lrs_count_the_floor():
    def trained(**hp):  # one step from the same point: the same gradients
        return run_tables(
            lambda m: CIAO(m.parameters(), lr=3e-2, weight_decay=0.0, lamb_power=1.0, **hp),
            steps=1,
            model_class=GPT2Like,
        )

    (floored, f_opt), (plain, p_opt) = trained(lamb_norm_floor=1.0), trained()
    torch.manual_seed(0)
    start = dict(GPT2Like().double().named_parameters())
    plain = dict(plain.named_parameters())
    for name, p in floored.named_parameters():  # the floored matrices step 3-10x further
        if p.dim() > 1 and name != "table.weight":
            assert (p - start[name]).norm() > 3 * (plain[name] - start[name]).norm(), name
    assert f_opt.adamw_lrs()[0] > 2 * p_opt.adamw_lrs()[0]


def test_lamb_norm_floor_leaves_matrices_above_their_floor_alone():
    def trained(**hp):
        return run_tables(
            lambda m: CIAO(m.parameters(), lr=1e-3, lamb_power=1.0, **hp),
            steps=3,
            model_class=lambda: GPT2Like(scale=1.0),
        )[0]

    a, b = trained(lamb_norm_floor=1.0), trained()
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name


def test_learned_optimizer_starts_from_the_policys_floor_and_passes_a_given_one():
    from lhopt import LearnedOptimizer
    from lhopt.control import load_policy

    opt = LearnedOptimizer(GPT2Like().parameters(), total_steps=50)
    assert (
        opt.param_groups[0]["lamb_norm_floor"]
        == load_policy("default").initial["lamb_norm_floor"]
        == 1.0
    )
    with pytest.warns(UserWarning, match="lamb_norm_floor=0.5 overrides the start"):
        opt = LearnedOptimizer(GPT2Like().parameters(), total_steps=50, lamb_norm_floor=0.5)
    assert opt.param_groups[0]["lamb_norm_floor"] == 0.5


@pytest.mark.parametrize("value", [-0.5, 11.0, float("nan"), None])
def test_lamb_norm_floor_out_of_range_is_refused(value):
    with pytest.raises(ValueError, match="lamb_norm_floor="):
        CIAO(PosModel().parameters(), lamb_norm_floor=value)


class Grown(PosModel):
    """PosModel with its two dense matrices at five times PyTorch's default scale, past a
    ceiling of three times it; its table (std 1) is at about five times that scale too, but
    row-sparse: never capped."""

    def __init__(self, scale=5.0):
        super().__init__()
        with torch.no_grad():
            for p in (self.hidden.weight, self.out.weight):
                p.mul_(scale)


@pytest.mark.parametrize(
    "model_class, hp",
    [
        (GPT2Like, dict(lamb_norm_floor=1.0)),
        (Grown, dict(lamb_norm_ceiling=3.0, lamb_norm_floor=1.0)),
    ],
)
def test_the_norm_floor_and_ceiling_match_reference(model_class, hp):
    hp = dict(lamb_power=1.0, lr=3e-2, **hp)
    fast, _ = run_tables(
        lambda m: CIAO(m.parameters(), **hp, stat_samples=10**6), model_class=model_class
    )
    ref, _ = run_tables(lambda m: ReferenceCIAO(m.parameters(), **hp), model_class=model_class)
    assert_params_close(fast, ref, PARAM_RTOL[torch.float64])
    off, _ = run_tables(
        lambda m: CIAO(m.parameters(), lamb_power=1.0, lr=3e-2), model_class=model_class
    )
    assert not torch.allclose(fast.hidden.weight, off.hidden.weight)


def test_the_ceiling_steps_a_grown_matrix_as_at_the_ceiling_and_leaves_the_rest():
    from lhopt.optim.ciao import default_init_norm

    (capped, start, opt, model), (plain, _, plain_opt, _) = (
        _one_step(Grown, lamb_norm_ceiling=3.0),
        _one_step(Grown),
    )
    for name in ("hidden.weight", "out.weight"):  # both past 3 times their scale
        p = start[name]
        ratio = float(capped[name].norm() / plain[name].norm())
        assert ratio == pytest.approx(3 * default_init_norm(p) / float(p.norm()), rel=1e-9), name
        assert ratio < 0.8, name
    table = start["table.weight"]
    assert opt.state[model.table.weight]["row_sparse"]
    assert float(table.norm()) > 3 * default_init_norm(table)  # capped, were it dense
    # The row-sparse table is not capped, the small positional table is below its ceiling, and
    # vectors take no trust ratio at all.
    for name in ("table.weight", "pos", "hidden.bias", "out.bias"):
        assert torch.equal(capped[name], plain[name]), name
    assert opt.adamw_lrs()[0] < plain_opt.adamw_lrs()[0]  # the lr in AdamW's units reads it


@pytest.mark.parametrize("floor", [0.0, 1.0, 4.0])
def test_adamw_lrs_reads_the_norm_the_ceiling_and_floor_count(floor):
    """The lr in AdamW's units, computed by hand from the state: a dense matrix's norm capped at
    3 times its default-initialisation norm, then floored (a floor of 4 wins over the cap); the
    row-sparse table's norm as it is."""
    import math

    from lhopt.optim.ciao import default_init_norm

    _, _, opt, model = _one_step(Grown, lamb_norm_ceiling=3.0, lamb_norm_floor=floor)
    group = opt.param_groups[0]
    logs, sizes = [], []
    for p in group["params"]:
        state = opt.state[p]
        sizes.append(p.numel())
        if p.dim() < 2:
            logs.append(0.0)
            continue
        norm, unit = float(p.norm()), default_init_norm(p)
        if not state["row_sparse"]:
            norm = max(min(norm, 3.0 * unit), floor * unit)
        ema_hat = float(state["update_norm_ema"]) / (1.0 - state["update_norm_product"])
        lo = group["lamb_min_trust"]
        logs.append(math.log(min(max(norm / ema_hat, lo), 1.0 / lo)))
    mean = sum(n * x for n, x in zip(sizes, logs, strict=True)) / sum(sizes)
    expected = group["lr"] * group["lr_factor"] * math.exp(mean)
    assert opt.adamw_lrs()[0] == pytest.approx(expected, rel=1e-9)
    assert opt.state[model.table.weight]["row_sparse"]


def test_a_floor_above_the_ceiling_wins():
    def trained(make=CIAO, **hp):
        return run_tables(
            lambda m: make(m.parameters(), lr=1e-3, lamb_power=1.0, **hp),
            steps=3,
            model_class=Grown,
        )[0]

    # at five times their scale the matrices count as four times it under either ceiling
    a, b = (
        trained(lamb_norm_floor=4.0, lamb_norm_ceiling=3.0),
        trained(lamb_norm_floor=4.0, lamb_norm_ceiling=4.0),
    )
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name
    assert not torch.equal(a.hidden.weight, trained(lamb_norm_floor=4.0).hidden.weight)
    ref = trained(ReferenceCIAO, lamb_norm_floor=4.0, lamb_norm_ceiling=3.0)
    assert_params_close(a, ref, PARAM_RTOL[torch.float64])


def test_lamb_norm_ceiling_leaves_matrices_below_it_alone():
    def trained(**hp):
        return run_tables(
            lambda m: CIAO(m.parameters(), lr=1e-3, lamb_power=1.0, **hp),
            steps=3,
            model_class=PosModel,
        )[0]

    a, b = trained(lamb_norm_ceiling=10.0), trained()
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name


def test_learned_optimizer_passes_the_norm_ceiling_to_ciao():
    from lhopt import LearnedOptimizer

    opt = LearnedOptimizer(Grown().parameters(), total_steps=50, lamb_norm_ceiling=10.0)
    assert opt.param_groups[0]["lamb_norm_ceiling"] == 10.0


@pytest.mark.parametrize("value", [-0.5, 1001.0, float("nan"), None])
def test_lamb_norm_ceiling_out_of_range_is_refused(value):
    with pytest.raises(ValueError, match="lamb_norm_ceiling="):
        CIAO(PosModel().parameters(), lamb_norm_ceiling=value)
