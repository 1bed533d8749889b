import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from lhopt import CIAO, ActionSpace, RestartRegisters
from lhopt.control import OFFICIAL_HEADS, Head
from lhopt.optim import HPARAMS


def test_official_heads_and_keep():
    space = ActionSpace()
    assert space.nvec == (7, 3, 3, 3, 3, 3, 3, 5, 10)
    groups = [
        {
            "lr": 1e-3,
            "weight_decay": 0.01,
            "epsilon": 1e-6,
            "ombeta1": 0.1,
            "ombeta2": 0.01,
            "grad_clip_ombeta": 0.01,
            "lamb_update_norm_ombeta": 0.01,
            "clip_fraction": 0.8,
        }
    ]
    before = copy.deepcopy(groups)
    space.apply_hparams(groups, space.keep)
    assert groups == before
    assert space.register_op(space.keep) == ("none", None)
    assert len(space.encode(space.keep)) == space.encoding_dim


def test_ten_thousand_random_actions_never_leave_the_bounds():
    space = ActionSpace()
    rng = np.random.default_rng(0)
    bounds = {h.hparam: (h.low, h.high) for h in space.heads}
    for start in range(5):
        if start == 0:
            group = {h: HPARAMS[h].default for h in bounds}
        else:  # random starting values inside the bounds
            group = {
                h: math.exp(rng.uniform(math.log(lo), math.log(hi)))
                for h, (lo, hi) in bounds.items()
            }
        for _ in range(2000):
            space.apply_hparams([group], space.sample(rng))
            for name, (lo, hi) in bounds.items():
                assert lo <= group[name] <= hi, (name, group[name])


def test_scaling_and_logit_shift_are_relative():
    lr_head, clip_head = OFFICIAL_HEADS[0], OFFICIAL_HEADS[-1]
    assert lr_head.apply(1e-3, lr_head.choices.index(2.0)) == pytest.approx(2e-3)
    assert lr_head.apply(0.8, lr_head.choices.index(2.0)) == 1.0  # clipped to the bound
    shifted = clip_head.apply(0.5, clip_head.choices.index(1.0))
    assert shifted == pytest.approx(1 / (1 + math.exp(-1.0)))
    assert lr_head.apply(None, 0) is None  # a switched-off feature stays off
    assert OFFICIAL_HEADS[1].apply(0.0, 2) == 0.0  # so does a zero weight decay


def test_register_head_decodes():
    space = ActionSpace(num_registers=3)
    action = list(space.keep)
    expected = {1: ("save", 0), 2: ("load", 0), 3: ("swap", 0), 8: ("load", 2)}
    for choice, want in expected.items():
        action[-1] = choice
        assert space.register_op(action) == want


def test_bad_actions_and_heads_are_refused():
    space = ActionSpace()
    with pytest.raises(ValueError, match="not valid"):
        space.check([0] * 3)
    with pytest.raises(ValueError, match="not valid"):
        space.check([7] + list(space.keep[1:]))
    with pytest.raises(ValueError, match="must lie in"):
        ActionSpace([Head("ombeta2", "scale", (0.5, 1.0, 2.0), 1e-5, 2.0)])
    with pytest.raises(ValueError, match="keep"):
        ActionSpace([Head("lr", "scale", (0.5, 2.0), 1e-8, 1.0)])
    with pytest.raises(ValueError, match="not a numeric"):
        ActionSpace([Head("adamax", "scale", (1.0,), 0.1, 1.0)])


def test_actions_drive_a_live_optimizer():
    model = nn.Linear(3, 1)
    opt = CIAO(model.parameters())
    space = ActionSpace()
    action = list(space.keep)
    action[0] = OFFICIAL_HEADS[0].choices.index(0.5)
    space.apply_hparams(opt.param_groups, action)
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-4)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()


def setup_run(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1)).double()
    opt = CIAO(model.parameters(), lr=1e-2, feature_every=2)
    g = torch.Generator().manual_seed(seed)
    data = [
        (torch.randn(8, 4, generator=g).double(), torch.randn(8, 1, generator=g).double())
        for _ in range(40)
    ]
    return model, opt, data


def run(model, opt, data):
    for x, y in data:
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()


def params(model):
    return [p.detach().clone() for p in model.parameters()]


def test_load_restores_bit_identically_and_training_continues_from_it():
    model, opt, data = setup_run()
    regs = RestartRegisters(3)
    run(model, opt, data[:10])
    regs.save(1, model, opt, loss=0.5, progress=0.25)
    at_save = params(model)
    run(model, opt, data[10:20])
    continued = params(model)
    opt.param_groups[0]["lr"] = 0.5  # a bad phase: a much larger lr, then divergence
    run(model, opt, data[20:30])

    assert regs.load(1, model, opt)
    assert all(torch.equal(a, b) for a, b in zip(params(model), at_save, strict=True))
    assert opt.param_groups[0]["lr"] == 1e-2
    run(model, opt, data[10:20])
    assert all(torch.equal(a, b) for a, b in zip(params(model), continued, strict=True))
    # The register was not written through by training after the load.
    regs.load(1, model, opt)
    assert all(torch.equal(a, b) for a, b in zip(params(model), at_save, strict=True))
    assert regs.info()[1] == (True, 0.5, 0.25)
    assert regs.info()[0] == (False, None, None)


def test_swap_exchanges_current_and_saved_state():
    model, opt, data = setup_run(1)
    regs = RestartRegisters(2)
    assert not regs.load(0, model, opt) and not regs.swap(0, model, opt)
    run(model, opt, data[:5])
    regs.save(0, model, opt, loss=1.0, progress=0.1)
    a = params(model)
    run(model, opt, data[5:10])
    b = params(model)
    assert regs.apply("swap", 0, model, opt, loss=2.0, progress=0.2)
    assert all(torch.equal(x, y) for x, y in zip(params(model), a, strict=True))
    regs.swap(0, model, opt, loss=1.0, progress=0.1)
    assert all(torch.equal(x, y) for x, y in zip(params(model), b, strict=True))
    with pytest.raises(ValueError, match="register 5 does not exist"):
        regs.save(5, model, opt)


def test_registers_state_dict_round_trip():
    model, opt, data = setup_run(2)
    regs = RestartRegisters(2)
    run(model, opt, data[:3])
    regs.save(0, model, opt, loss=0.3, progress=0.5)
    other = RestartRegisters(2)
    other.load_state_dict(copy.deepcopy(regs.state_dict()))
    saved = params(model)
    run(model, opt, data[3:6])
    other.load(0, model, opt)
    assert all(torch.equal(x, y) for x, y in zip(params(model), saved, strict=True))
    with pytest.raises(ValueError, match="expected 3"):
        RestartRegisters(3).load_state_dict(regs.state_dict())
