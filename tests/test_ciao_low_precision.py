"""float16 and bfloat16 parameters, and epsilons near the bottom of a dtype's range.

CIAO keeps the state of low-precision parameters in float32 and computes their update there
(docs/optimizer.md, "Low-precision parameters"); the epsilon term of the denominator never falls
below the smallest normal number of the state's dtype, so an element whose gradient has always
been 0 gets an update of 0, never 0 / 0.
"""

import io

import pytest
import torch
from torch import nn

from lhopt.optim import CIAO


def linear_with_a_dead_input(dtype, seed=0):
    """nn.Linear(8, 1) whose input column 3 is always 0: that weight's moments stay 0."""
    torch.manual_seed(seed)
    return nn.Linear(8, 1).to(dtype)


def dead_input_batches(n, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randn(32, 8, generator=g)
        x[:, 3] = 0.0
        yield x.to(dtype)


def train(model, opt, n, dtype, every_step=None):
    for t, x in enumerate(dead_input_batches(n, dtype)):
        if every_step is not None:
            every_step(t, opt)
        opt.zero_grad()
        model(x).float().pow(2).mean().backward()
        opt.step()


def halve_epsilon(t, opt):
    """What the policy does at its decisions: 1e-6 halved down to 6.25e-8 and below."""
    if t % 4 == 3:
        opt.param_groups[0]["epsilon"] *= 0.5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("schedule", ["epsilon=1e-7", "epsilon halved"])
def test_low_precision_parameters_stay_finite_with_small_epsilon(dtype, schedule):
    model = linear_with_a_dead_input(dtype)
    if schedule == "epsilon=1e-7":
        opt, every_step = CIAO(model.parameters(), epsilon=1e-7), None
    else:
        opt, every_step = CIAO(model.parameters()), halve_epsilon
    start = model.weight.detach().clone()
    train(model, opt, 40, dtype, every_step)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert opt.skipped_steps == 0
    assert model.weight.dtype == dtype
    # It trained (the live weights moved) and the dead weight moved by weight decay only.
    assert not torch.equal(model.weight[0, :3], start[0, :3])
    assert abs(model.weight[0, 3].item()) <= abs(start[0, 3].item())


def test_torch_adamw_stays_finite_there_too():
    # The behaviour a user compares against: AdamW(eps=1e-7) on the same float16 problem.
    model = linear_with_a_dead_input(torch.float16)
    train(model, torch.optim.AdamW(model.parameters(), eps=1e-7), 40, torch.float16)
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("epsilon", [1e-40, 1e-300])
@pytest.mark.parametrize("adamax", [False, True])
def test_epsilon_below_the_dtypes_range_gives_no_nan(epsilon, adamax):
    # Inside the documented range (0, 1], but below float32's smallest normal number.
    model = linear_with_a_dead_input(torch.float32)
    opt = CIAO(model.parameters(), epsilon=epsilon, adamax=adamax, feature_every=1)
    train(model, opt, 10, torch.float32)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert opt.skipped_steps == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_state_is_float32(dtype):
    model = nn.Sequential(nn.Linear(8, 4), nn.Tanh(), nn.Linear(4, 1)).to(dtype)
    opt = CIAO(model.parameters(), lamb_power=1.0, feature_every=1)
    train(model, opt, 3, dtype)
    for p in model.parameters():
        assert p.dtype == dtype
        state = opt.state[p]
        assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.float32
        if p.dim() > 1:
            assert state["update_norm_ema"].dtype == torch.float32
    assert all(v == v for v in opt.pop_step_stats().values())  # measured: no NaN


def test_float16_gradient_norm_above_65504_is_not_a_skip():
    # Each element is finite in float16; only their norm (94868) is beyond float16's range.
    p = nn.Parameter(torch.zeros(100_000, dtype=torch.float16))
    opt = CIAO([p], clip_fraction=None, weight_decay=0.0)
    p.grad = torch.full_like(p, 300.0)
    opt.step()
    assert opt.skipped_steps == 0
    assert torch.all(p < 0)


def test_low_precision_state_survives_saving_and_loading():
    dtype = torch.float16
    model = nn.Sequential(nn.Linear(8, 4), nn.Tanh(), nn.Linear(4, 1)).to(dtype)
    opt = CIAO(model.parameters(), lamb_power=1.0, feature_every=2)
    train(model, opt, 5, dtype)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    train(model, opt, 5, dtype)

    resumed = nn.Sequential(nn.Linear(8, 4), nn.Tanh(), nn.Linear(4, 1)).to(dtype)
    ropt = CIAO(resumed.parameters())
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    resumed.load_state_dict(saved["model"])
    ropt.load_state_dict(saved["opt"])
    # torch's loader would cast the state to float16; it stays float32, unrounded.
    for q in resumed.parameters():
        assert ropt.state[q]["exp_avg_sq"].dtype == torch.float32
    train(resumed, ropt, 5, dtype)
    for p, q in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)
    assert ropt.pop_step_stats() == opt.pop_step_stats()


def test_a_state_saved_in_float16_loads_as_float32():
    # States whose moments were kept in the parameters' float16 still load, widened.
    model = linear_with_a_dead_input(torch.float16)
    opt = CIAO(model.parameters())
    train(model, opt, 3, torch.float16)
    sd = opt.state_dict()
    for state in sd["state"].values():
        for key in ("exp_avg", "exp_avg_sq"):
            state[key] = state[key].half()
    fresh = CIAO(model.parameters())
    fresh.load_state_dict(sd)
    for index, p in enumerate(model.parameters()):
        saved = sd["state"][index]["exp_avg"]
        assert fresh.state[p]["exp_avg"].dtype == torch.float32
        assert torch.equal(fresh.state[p]["exp_avg"], saved.float())
    train(model, fresh, 3, torch.float16)
    assert all(torch.isfinite(p).all() for p in model.parameters())
