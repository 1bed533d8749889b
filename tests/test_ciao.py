import copy
import io
import math

import pytest
import torch
from torch import nn

from lhopt import CIAO
from lhopt.optim import STEP_STAT_NAMES

ADAMW_EQUIVALENT = dict(clip_fraction=None, lamb_power=0.0, adamax=False, decay_in_update=False)


class GRUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(5, 16, num_layers=2, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        out, _ = self.gru(x)
        return self.head(out[:, -1])


def make_mlp():
    layers = [nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3)]
    return nn.Sequential(*layers)


def batches(kind, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randn(16, 8, generator=g) if kind == "mlp" else torch.randn(16, 7, 5, generator=g)
        yield x.double(), torch.randint(0, 3, (16,), generator=g)


def train(model, opt, data):
    for x, y in data:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("kind", ["mlp", "gru"])
def test_extras_off_is_adamw(kind):
    torch.manual_seed(0)
    model = (make_mlp() if kind == "mlp" else GRUNet()).double()
    ref = copy.deepcopy(model)
    train(model, CIAO(model.parameters(), **ADAMW_EQUIVALENT), batches(kind, 200))
    adamw = torch.optim.AdamW(
        ref.parameters(), lr=1e-3, betas=(0.9, 0.99), eps=1e-6, weight_decay=1e-2
    )
    train(ref, adamw, batches(kind, 200))
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        assert (p - q).abs().max() <= 1e-6 * q.abs().max()
        assert not torch.equal(p, torch.zeros_like(p))


def test_param_groups_match_adamw_groups():
    torch.manual_seed(1)
    model = make_mlp().double()
    ref = copy.deepcopy(model)
    groups = lambda m: [  # noqa: E731
        {"params": m[0].parameters(), "lr": 3e-3, "weight_decay": 0.0},
        {"params": list(m[2].parameters()) + list(m[4].parameters())},
    ]
    train(model, CIAO(groups(model), **ADAMW_EQUIVALENT), batches("mlp", 50))
    train(
        ref,
        torch.optim.AdamW(groups(ref), betas=(0.9, 0.99), eps=1e-6, weight_decay=1e-2),
        batches("mlp", 50),
    )
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        assert torch.allclose(p, q, rtol=1e-9, atol=1e-12)


def test_adamws_argument_names_carry_over():
    """`betas` and `eps`, as AdamW names them, in the constructor and in a param group: the same
    run as AdamW's with the same arguments; a clash or a bad pair is a ValueError naming it."""
    torch.manual_seed(2)
    model = make_mlp().double()
    ref = copy.deepcopy(model)
    kw = dict(lr=2e-3, betas=(0.8, 0.95), eps=1e-7, weight_decay=0.05)
    groups = lambda m: [  # noqa: E731
        {"params": m[0].parameters(), "betas": (0.85, 0.9)},
        {"params": list(m[2].parameters()) + list(m[4].parameters())},
    ]
    train(model, CIAO(groups(model), **ADAMW_EQUIVALENT, **kw), batches("mlp", 50))
    train(ref, torch.optim.AdamW(groups(ref), **kw), batches("mlp", 50))
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        assert torch.allclose(p, q, rtol=1e-9, atol=1e-12)
    params = list(make_mlp().parameters())
    for bad, words in (
        ({"betas": (0.9,)}, r"betas=\(0\.9,\) is not allowed: a pair"),
        ({"betas": (0.9, 1.0)}, r"each in \[0, 1\)"),
        ({"betas": (0.9, 0.99), "ombeta1": 0.2}, "betas=.* and ombeta1=0.2 set the same"),
        ({"eps": 1e-8, "epsilon": 1e-7}, "eps=1e-08 and epsilon=1e-07 set the same"),
    ):
        with pytest.raises(ValueError, match=words):
            CIAO(params, **bad)
    with pytest.raises(ValueError, match="eps=1e-08 and epsilon=0.001 set the same"):
        CIAO([{"params": params, "eps": 1e-8, "epsilon": 1e-3}])


def reference_adam_changing_betas(p0, grads, schedule, lr=1e-2, eps=1e-6):
    """Adam written out for one tensor, with betas that change every step."""
    p, m, v = p0.clone(), torch.zeros_like(p0), torch.zeros_like(p0)
    prod1 = prod2 = 1.0
    for g, (b1, b2) in zip(grads, schedule, strict=True):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        prod1, prod2 = prod1 * b1, prod2 * b2
        p = p - lr * (m / (1 - prod1)) / ((v / (1 - prod2)).sqrt() + eps)
    return p


def test_betas_may_change_between_steps():
    torch.manual_seed(2)
    p0 = torch.randn(10, dtype=torch.float64)
    grads = [torch.randn(10, dtype=torch.float64) for _ in range(12)]
    schedule = [(0.9, 0.99)] * 4 + [(0.5, 0.999)] * 4 + [(0.95, 0.9)] * 4
    p = nn.Parameter(p0.clone())
    opt = CIAO([p], lr=1e-2, weight_decay=0.0, **{**ADAMW_EQUIVALENT})
    for g, (b1, b2) in zip(grads, schedule, strict=True):
        opt.param_groups[0]["ombeta1"] = 1 - b1
        opt.param_groups[0]["ombeta2"] = 1 - b2
        p.grad = g.clone()
        opt.step()
    expected = reference_adam_changing_betas(p0, grads, schedule)
    assert torch.allclose(p.detach(), expected, rtol=1e-10, atol=1e-12)


def test_closure_and_zero_grad():
    model = make_mlp().double()
    opt = CIAO(model.parameters())
    x, y = next(batches("mlp", 1))

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    first = opt.step(closure)
    for _ in range(20):
        last = opt.step(closure)
    assert last < first
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(
    "extras",
    [{}, {"lamb_power": 1.0, "adamax": True}, {"decay_in_update": True, "lamb_power": 0.5}],
)
def test_state_dict_resume_is_bit_identical(extras):
    torch.manual_seed(3)
    model = make_mlp().double()
    opt = CIAO(model.parameters(), lr=3e-3, feature_every=3, **extras)
    data = list(batches("mlp", 60))
    train(model, opt, data[:30])
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)

    train(model, opt, data[30:])
    stats_uninterrupted = opt.pop_step_stats()

    resumed = make_mlp().double()
    ropt = CIAO(resumed.parameters())
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    resumed.load_state_dict(saved["model"])
    ropt.load_state_dict(saved["opt"])
    assert ropt.param_groups[0]["lr"] == 3e-3 and ropt.feature_every == 3
    train(resumed, ropt, data[30:])
    for p, q in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)
    assert ropt.pop_step_stats() == stats_uninterrupted


def test_state_lives_on_param_device_and_dtype():
    model = make_mlp().float()
    opt = CIAO(model.parameters())
    train(model, opt, ((x.float(), y) for x, y in batches("mlp", 3)))
    for p in model.parameters():
        assert opt.state[p]["exp_avg"].device == p.device
        assert opt.state[p]["exp_avg"].dtype == p.dtype


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda():
    model = make_mlp().cuda()
    opt = CIAO(model.parameters(), feature_every=1, lamb_power=1.0)
    for x, y in batches("mlp", 5):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x.float().cuda()), y.cuda()).backward()
        opt.step()
    stats = opt.pop_step_stats()
    assert all(math.isfinite(stats[k]) for k in STEP_STAT_NAMES)
    assert opt.state[model[0].weight]["exp_avg"].is_cuda


def test_sparse_gradients_are_refused():
    emb = nn.Embedding(10, 4, sparse=True)
    opt = CIAO(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"lr": -1.0}, ["lr", "-1", "[0, 10]"]),
        ({"ombeta1": 0.0}, ["ombeta1", "0", "[1e-12, 1]"]),
        ({"ombeta1": 1e-17}, ["ombeta1", "1e-17", "[1e-12, 1]"]),
        ({"ombeta2": 2.0}, ["ombeta2", "2", "[1e-12, 1]"]),
        ({"epsilon": math.nan}, ["epsilon", "nan"]),
        ({"clip_fraction": 1.5}, ["clip_fraction", "1.5", "or None"]),
        ({"lamb_power": -1}, ["lamb_power", "-1"]),
        ({"adamax": 1}, ["adamax", "True or False"]),
        ({"feature_every": -2}, ["feature_every", "-2"]),
    ],
)
def test_bad_hyperparameters_name_value_and_range(kwargs, words):
    with pytest.raises(ValueError) as info:
        CIAO(make_mlp().parameters(), **kwargs)
    for w in words:
        assert w in str(info.value)


def test_unknown_hyperparameter_is_refused():
    with pytest.raises(ValueError, match="unknown hyperparameter.*'beta1'.*known"):
        CIAO([{"params": make_mlp().parameters(), "beta1": 0.9}])


def test_bad_value_written_into_a_group_is_caught_at_step():
    model = make_mlp().double()
    opt = CIAO(model.parameters())
    opt.param_groups[0]["lr"] = float("inf")
    x, y = next(batches("mlp", 1))
    nn.functional.cross_entropy(model(x), y).backward()
    with pytest.raises(ValueError, match="lr=inf"):
        opt.step()


def snapshot(model, opt):
    return copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()["state"])


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_gradients_skip_the_step(bad):
    torch.manual_seed(4)
    model = make_mlp().double()
    opt = CIAO(model.parameters(), feature_every=1)
    data = list(batches("mlp", 4))
    train(model, opt, data[:3])
    opt.pop_step_stats()
    before = snapshot(model, opt)
    x, y = data[3]
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    model[2].weight.grad[0, 0] = bad
    opt.step()
    after = snapshot(model, opt)
    for k in before[0]:
        assert torch.equal(before[0][k], after[0][k])
    for k in before[1]:
        for name, value in before[1][k].items():
            new = after[1][k][name]
            assert torch.equal(value, new) if torch.is_tensor(value) else value == new, name
    assert opt.skipped_steps == 1
    stats = opt.pop_step_stats()
    assert stats["skip_rate"] == 1.0
    assert all(torch.isfinite(p).all() for p in model.parameters())
    train(model, opt, data[:2])  # and training goes on
    assert opt.skipped_steps == 1


def test_clipping_scales_spikes_to_a_fraction_of_the_rolling_max():
    p = nn.Parameter(torch.zeros(4, dtype=torch.float64))
    opt = CIAO([p], clip_fraction=0.5, grad_clip_ombeta=0.1, weight_decay=0.0)
    g = torch.tensor([1.0, 2.0, 2.0, 4.0], dtype=torch.float64)  # norm 5
    p.grad = g.clone()
    opt.step()  # the first norm is the max: clipped to 0.5 of itself

    def momentum():
        return opt.state[p]["exp_avg_scale"] * opt.state[p]["exp_avg"]

    m1 = momentum()
    assert torch.allclose(m1, 0.1 * 0.5 * g)
    p.grad = 0.1 * g  # norm 0.5, below 0.5 * 0.9 * 5: not clipped
    opt.step()
    assert torch.allclose(momentum(), 0.9 * m1 + 0.1 * 0.1 * g)
    stats = opt.pop_step_stats()
    assert stats["clip_rate"] == 0.5


def test_clipped_steps_equal_adam_on_clipped_gradients():
    # The scaled first moment must give exactly Adam run on the clipped gradients.
    torch.manual_seed(6)
    p = nn.Parameter(torch.randn(5, dtype=torch.float64))
    q = nn.Parameter(p.detach().clone())
    opt = CIAO([p], clip_fraction=0.3, grad_clip_ombeta=0.05, feature_every=1)
    ref = CIAO([q], clip_fraction=None)
    for t in range(300):
        g = torch.randn(5, dtype=torch.float64) * (10.0 if t % 7 == 0 else 1.0)
        p.grad = g.clone()
        norm_max = max(opt._group_norm_max[0] * 0.95, g.norm().item())
        q.grad = g * min(1.0, 0.3 * norm_max / g.norm().item())
        opt.step()
        ref.step()
    assert torch.allclose(p, q, rtol=1e-10, atol=1e-12)
    assert opt.pop_step_stats()["clip_rate"] > 0.1


def test_clipping_off_never_clips():
    p = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = CIAO([p], clip_fraction=None)
    for scale in (1.0, 100.0, 1e4):
        p.grad = torch.full((3,), scale, dtype=torch.float64)
        opt.step()
    assert opt.pop_step_stats()["clip_rate"] == 0.0


def test_adamax_denominator_is_a_running_max():
    p = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = CIAO([p], adamax=True, clip_fraction=None)
    for g in ([3.0, -1.0], [1.0, -2.0]):
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    expected = torch.tensor([max(0.99 * 3.0, 1.0), max(0.99 * 1.0, 2.0)], dtype=torch.float64)
    assert torch.allclose(opt.state[p]["exp_avg_sq"], expected)


def test_lamb_scales_matrices_and_leaves_biases_alone():
    torch.manual_seed(5)
    lin = nn.Linear(6, 4).double()
    ref = copy.deepcopy(lin)
    w_init = lin.weight.detach().clone()
    plain = {**ADAMW_EQUIVALENT, "weight_decay": 0.0}
    opt = CIAO(lin.parameters(), feature_every=1, **{**plain, "lamb_power": 1.0})
    ropt = CIAO(ref.parameters(), **plain)
    x = torch.randn(8, 6, dtype=torch.float64)
    for o, m in ((opt, lin), (ropt, ref)):
        m(x).pow(2).sum().backward()
        o.step()
    assert torch.equal(lin.bias, ref.bias)
    assert not torch.allclose(lin.weight, ref.weight)
    # First step: the EMA of ||u|| is ||u|| itself, so W moves by lr * ||W|| in the direction of u.
    step = w_init - lin.weight.detach()
    adam_step = w_init - ref.weight.detach()
    assert torch.isclose(step.norm(), 1e-3 * w_init.norm(), rtol=1e-9)
    assert torch.allclose(step / step.norm(), adam_step / adam_step.norm())
    assert opt.pop_step_stats()["log_trust_ratio"] == pytest.approx(
        math.log(w_init.norm() / (adam_step.norm() / 1e-3))
    )


def test_adamw_lrs_weigh_each_tensors_trust_ratio_by_its_size():
    torch.manual_seed(6)
    lin = nn.Linear(6, 4).double()
    ref = copy.deepcopy(lin)
    plain = {**ADAMW_EQUIVALENT, "weight_decay": 0.0, "lr_factor": 0.5}
    opt = CIAO(lin.parameters(), **{**plain, "lamb_power": 1.0})
    ropt = CIAO(ref.parameters(), **plain)
    assert math.isnan(opt.adamw_lrs()[0])  # no step yet: the ratio is not known
    assert ropt.adamw_lrs() == [pytest.approx(5e-4)]  # without the trust ratio it is
    w_init = lin.weight.detach().clone()
    x = torch.randn(8, 6, dtype=torch.float64)
    for o, m in ((opt, lin), (ropt, ref)):
        m(x).pow(2).sum().backward()
        o.step()
    u_norm = (w_init - ref.weight.detach()).norm() / 5e-4  # AdamW's direction, unscaled
    trust = lin.weight.detach().norm() / u_norm  # the bias (4 of 28 entries) has none
    assert opt.adamw_lrs() == [pytest.approx(5e-4 * math.exp(24 / 28 * math.log(trust)))]
    assert ropt.adamw_lrs() == [pytest.approx(5e-4)]  # lamb_power 0: the lr itself
    # a tensor that never gets a gradient (an unused layer) takes no step and weighs nothing
    unused = nn.Linear(6, 4).double()
    both = CIAO([*lin.parameters(), *unused.parameters()], **{**plain, "lamb_power": 1.0})
    lin(x).pow(2).sum().backward()
    both.step()
    assert math.isfinite(both.adamw_lrs()[0])


def test_statistics_have_known_values_on_a_known_problem():
    # Loss 0.5 ||p||^2 + p . c with c orthogonal to p: the gradient is p + c.
    p = nn.Parameter(torch.tensor([3.0, 0.0, 0.0, 0.0], dtype=torch.float64))
    c = torch.tensor([0.0, 4.0, 0.0, 0.0], dtype=torch.float64)
    opt = CIAO([p], feature_every=1, clip_fraction=None, weight_decay=0.0, epsilon=1e-12)
    p.grad = p.detach() + c
    opt.step()
    s = opt.pop_step_stats()
    assert set(s) == set(STEP_STAT_NAMES)
    assert s["cos_grad_momentum"] == pytest.approx(1.0)
    assert s["cos_grad_param"] == pytest.approx(3.0 / 5.0)
    # First Adam update is sign(g) on the non-zero entries, zero elsewhere.
    assert s["cos_grad_update"] == pytest.approx((3 + 4) / (5 * math.sqrt(2)))
    assert s["frac_vhat_above_eps"] == pytest.approx(0.5)
    assert s["log_update_to_param_norm"] == pytest.approx(math.log(1e-3 * math.sqrt(2) / 3.0))
    assert s["clip_rate"] == 0.0 and s["skip_rate"] == 0.0

    q = nn.Parameter(torch.tensor([1.0, 0.0], dtype=torch.float64))
    opt = CIAO([q], feature_every=1)
    q.grad = torch.tensor([0.0, 2.0], dtype=torch.float64)  # orthogonal to the parameter
    opt.step()
    assert opt.pop_step_stats()["cos_grad_param"] == pytest.approx(0.0, abs=1e-12)


def test_statistics_are_measured_every_feature_every_steps_only():
    model = make_mlp().double()
    never = CIAO(model.parameters(), feature_every=0)
    train(model, never, batches("mlp", 5))
    stats = never.pop_step_stats()
    assert math.isnan(stats["cos_grad_momentum"]) and stats["skip_rate"] == 0.0
    opt = CIAO(model.parameters(), feature_every=4)
    train(model, opt, batches("mlp", 8))
    assert opt._stats.count == 2  # steps 1 and 5
    stats = opt.pop_step_stats()
    assert all(math.isfinite(v) for v in stats.values())
    assert opt.pop_step_stats()["clip_rate"] == 0.0  # popped: the period starts afresh


def test_statistics_of_a_long_period_are_the_mean_of_its_steps():
    # Raw sums are formed into statistics in batches (at the pop, or every 64 measured
    # group-steps): a period of 100 steps over two groups must average like 100 single pops.
    torch.manual_seed(5)
    model = make_mlp().double()
    twin = make_mlp().double()
    twin.load_state_dict(model.state_dict())

    def groups(m):
        params = list(m.parameters())
        return [{"params": params[:2]}, {"params": params[2:], "lr": 3e-3, "weight_decay": 0.1}]

    once, each = CIAO(groups(model), feature_every=1), CIAO(groups(twin), feature_every=1)
    per_step = []
    for x, y in batches("mlp", 100):
        for m, opt in ((model, once), (twin, each)):
            loss = nn.functional.cross_entropy(m(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        per_step.append(each.pop_step_stats())
    stats = once.pop_step_stats()
    for name in STEP_STAT_NAMES[:-2]:
        mean = sum(s[name] for s in per_step) / len(per_step)
        assert stats[name] == pytest.approx(mean, rel=1e-9, abs=1e-12), name


def test_statistics_do_not_depend_on_how_the_tensors_are_grouped():
    # One model in one group, and the same model with its biases in a second group at the same
    # hyperparameters, measure the same; a group of a few biases weighs what its elements weigh.
    runs = []
    for split in (False, True):
        torch.manual_seed(6)
        model = make_mlp().double()
        if split:
            matrices = [p for p in model.parameters() if p.dim() > 1]
            biases = [p for p in model.parameters() if p.dim() == 1]
            groups = [{"params": matrices}, {"params": biases}]
        else:
            groups = model.parameters()
        # no clipping, which is per group and so would part the two runs' steps
        opt = CIAO(groups, feature_every=2, clip_fraction=None, lamb_power=1.0, weight_decay=0.1)
        opt.noise_floor = 1e-5  # as a policy sets it: the first step's zero noise reads alike
        train(model, opt, batches("mlp", 9))
        runs.append(opt.pop_step_stats())
    for name in STEP_STAT_NAMES:
        assert runs[1][name] == pytest.approx(runs[0][name], rel=1e-9, abs=1e-12), name


def test_pooled_statistics_see_each_groups_own_step():
    # Two copies of a model, the second at twice the lr: the step-to-weight statistic pools
    # the two applied steps, sqrt((1 + 4) / 2) times the first copy's alone.
    torch.manual_seed(6)
    alone, pair = make_mlp().double(), [make_mlp().double(), make_mlp().double()]
    for m in pair:
        m.load_state_dict(alone.state_dict())
    opt_alone = CIAO(alone.parameters(), feature_every=1)
    opt_pair = CIAO(
        [{"params": pair[0].parameters()}, {"params": pair[1].parameters(), "lr": 2e-3}],
        feature_every=1,
        weight_decay=0.0,
    )
    opt_alone.param_groups[0]["weight_decay"] = 0.0
    x, y = next(iter(batches("mlp", 1)))
    for models, opt in (([alone], opt_alone), (pair, opt_pair)):
        opt.zero_grad()
        sum(nn.functional.cross_entropy(m(x), y) for m in models).backward()
        opt.step()
    single, pooled = opt_alone.pop_step_stats(), opt_pair.pop_step_stats()
    ratio = pooled["log_update_to_param_norm"] - single["log_update_to_param_norm"]
    assert ratio == pytest.approx(0.5 * math.log(2.5), rel=1e-9)
    assert pooled["cos_grad_update"] == pytest.approx(single["cos_grad_update"], rel=1e-9)


def test_lr_factor_multiplies_the_lr_in_the_update_and_the_statistics():
    """A schedule's factor under the lr the policy steers: lr 2e-3 at factor 0.5 takes exactly
    the steps of lr 1e-3, and the statistics see the lr actually used."""
    runs = []
    for lr, factor in ((1e-3, 1.0), (2e-3, 0.5)):
        torch.manual_seed(0)
        model = make_mlp().double()
        opt = CIAO(model.parameters(), lr=lr, lr_factor=factor, feature_every=1)
        train(model, opt, batches("mlp", 12))
        runs.append(([p.detach().clone() for p in model.parameters()], opt.pop_step_stats()))
    assert all(torch.equal(a, b) for a, b in zip(runs[0][0], runs[1][0], strict=True))
    assert runs[0][1] == runs[1][1]
    with pytest.raises(ValueError, match="lr_factor"):
        CIAO(make_mlp().parameters(), lr_factor=-1.0)


def test_a_refused_step_counts_nothing():
    model = make_mlp()
    opt = CIAO(model.parameters())
    nn.functional.cross_entropy(model(torch.randn(4, 8)), torch.tensor([0, 1, 2, 0])).backward()
    opt.param_groups[0]["lr"] = -1.0  # an invalid value written between steps
    with pytest.raises(ValueError, match="lr"):
        opt.step()
    assert opt.steps == 0 and opt.skipped_steps == 0
    opt.param_groups[0]["lr"] = 1e-3
    opt.step()
    assert opt.steps == 1


@pytest.mark.parametrize(
    "floors, ceilings",
    [
        (None, None),
        ([0.0, 0.0, 50.0, 0.0, 0.1], None),
        (None, [0.5, 0.0, 0.0, 0.0, 100.0]),
        ([0.0, 0.0, 50.0, 0.0, 0.1], [0.5, 0.0, 20.0, 0.0, 100.0]),
    ],
)
def test_the_trust_ratios_batched_for_a_gpu_equal_the_per_tensor_ones(floors, ceilings):
    from lhopt.optim.ciao import _trust_ratios_batched, lamb_trust_ratios

    g = torch.Generator().manual_seed(0)
    shapes = [(8, 4), (4,), (16, 8), (3, 3, 2), (5, 6)]
    params = [torch.randn(s, generator=g) for s in shapes]
    params[3].zero_()  # a zero norm: trust 1
    updates = [1e-3 * torch.randn(s, generator=g) for s in shapes]

    def emas():  # a vector (no trust ratio) between matrices, one EMA still at 0
        return [torch.tensor(0.5), None, torch.tensor(0.0), torch.tensor(0.2), torch.tensor(3.0)]

    corrections = [0.1, 0.0, 0.19, 0.5, 0.9]
    kw = dict(ombeta=0.1, power=0.7, min_trust=1e-3)
    a_emas, b_emas = emas(), emas()
    per_tensor = lamb_trust_ratios(
        params, updates, a_emas, corrections, norm_floors=floors, norm_ceilings=ceilings, **kw
    )
    on = [i for i, e in enumerate(b_emas) if e is not None]
    batched = _trust_ratios_batched(
        params,
        updates,
        b_emas,
        corrections,
        on,
        **kw,
        floors=floors or [0.0] * len(params),
        ceilings=ceilings,
    )
    plain = lamb_trust_ratios(params, updates, emas(), corrections, **kw)
    if floors:  # the floored tensor's ratio is its floor's (above a lower ceiling), the one
        # above its floor its own
        assert per_tensor[2] > 2 * plain[2] and per_tensor[4] == plain[4]
    if ceilings:  # the capped tensor's ratio is its ceiling's, the one below it its own
        assert per_tensor[0] < 0.5 * plain[0]
    assert (
        [t is None for t in batched]
        == [t is None for t in per_tensor]
        == [e is None for e in emas()]
    )
    for a, b in zip(per_tensor, batched, strict=True):
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-6, atol=0)
    for a, b in zip(a_emas, b_emas, strict=True):
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-6, atol=0)
    assert batched[3] == 1.0 and per_tensor[3] == 1.0


@pytest.mark.parametrize("lamb_power", [0.0, 1.0])
def test_an_empty_parameter_changes_nothing(lamb_power):
    """A parameter with no elements (a layer of width 0) steps and weighs nothing in the
    statistics: the run is the run without it."""

    def run(with_empty):
        torch.manual_seed(0)
        w = nn.Parameter(torch.randn(3, 4))
        params = [nn.Parameter(torch.zeros(0, 4)), w] if with_empty else [w]
        opt = CIAO(params, feature_every=1, lamb_power=lamb_power)
        for _ in range(3):
            loss = (w.sin().sum() + sum(p.sum() for p in params)) ** 2
            opt.zero_grad()
            loss.backward()
            opt.step()
        return w.detach(), opt.pop_step_stats(), opt.adamw_lrs()

    (w_a, stats_a, lrs_a), (w_b, stats_b, lrs_b) = run(True), run(False)
    assert torch.equal(w_a, w_b) and lrs_a == lrs_b
    assert stats_a == pytest.approx(stats_b, rel=1e-6, abs=1e-12)


@pytest.mark.parametrize(
    ("options", "dtype"),
    [
        ({}, torch.float64),
        ({"lamb_power": 1.0, "weight_decay": 0.1, "lamb_norm_floor": 1.0}, torch.float64),
        ({"lamb_power": 0.5, "decay_in_update": True}, torch.float64),
        ({"decay_in_update": True, "weight_decay": 0.1}, torch.float64),
        ({"adamax": True}, torch.float64),
        ({"lamb_power": 1.0}, torch.bfloat16),  # buffers of the float32 working copies
    ],
)
def test_cpu_scratch_buffers_change_no_value_and_are_not_state(options, dtype, monkeypatch):
    """On the CPU the denominators and updates of tensors of 1 MiB or more (in the state's
    dtype) are written into buffers kept between steps, per parameter (a new tensor that large
    costs page faults every step); the run is the one with new tensors to the bit, its
    statistics too, and nothing of them is saved."""
    import lhopt.optim.ciao as ciao

    def wide():  # a 600 x 600 matrix (1.4 MiB in float32) among small ones
        layers = [nn.Linear(8, 600), nn.Tanh(), nn.Linear(600, 600), nn.ReLU(), nn.Linear(600, 3)]
        return nn.Sequential(*layers).to(dtype)

    def data(n, seed=0):
        return [(x.to(dtype), y) for x, y in batches("mlp", n, seed)]

    written = []  # (the buffers given, the tensors returned) of each call

    def spy(fn, pick):
        def call(*args, out=None, **kwargs):
            result = fn(*args, out=out, **kwargs)
            written.append((out, pick(result)))
            return result

        return call

    monkeypatch.setattr(ciao, "denominators", spy(ciao.denominators, lambda r: r[0]))
    monkeypatch.setattr(ciao, "adaptive_updates", spy(ciao.adaptive_updates, lambda r: r))

    def run():
        torch.manual_seed(0)
        model = wide()
        opt = CIAO(model.parameters(), lr=1e-2, feature_every=2, **options)
        train(model, opt, data(12))
        return model, opt, torch.tensor(list(opt.pop_step_stats().values()))

    with monkeypatch.context() as without:
        without.setattr(CIAO, "_scratch_for", lambda self, bucket, tensors: None)
        fresh_model, _, fresh_stats = run()
    written.clear()
    model, opt, stats = run()
    used = [(o, r) for o, r in written if o is not None and any(b is not None for b in o)]
    assert used
    assert all(b is None or t is b for o, r in used for b, t in zip(o, r, strict=True))
    for p, q in zip(model.parameters(), fresh_model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert torch.equal(stats.nan_to_num(nan=7.0), fresh_stats.nan_to_num(nan=7.0))
    updates = options.get("lamb_power") or options.get("decay_in_update")
    kinds = {"denoms", "updates"} if updates else {"denoms"}
    params = list(model.parameters())
    entries = [opt._scratch[id(p)] for p in params]
    assert all(set(e) - {"like"} == kinds for e in entries)
    big = [p.numel() >= 600 * 600 for p in params]
    assert [e["denoms"] is not None for e in entries] == big
    kept = [e[k].data_ptr() for e in entries for k in kinds if e[k] is not None]
    train(model, opt, data(2, seed=1))
    assert [e[k].data_ptr() for e in entries for k in kinds if e[k] is not None] == kept
    saved = io.BytesIO()
    torch.save(opt.state_dict(), saved)
    state_bytes = 2 * sum(p.numel() * max(p.element_size(), 4) for p in params)
    assert saved.tell() < state_bytes + 64_000  # the moments; no buffer
    # a parameter without a gradient at some steps keeps its one entry; one that leaves, none
    params[2].grad = None
    opt.step()
    train(model, opt, data(1, seed=2))
    assert len(opt._scratch) == len(params)
    opt.param_groups[0]["params"] = params[:-1]
    train(model, opt, data(1, seed=3))
    assert set(opt._scratch) == {id(p) for p in params[:-1]}
