"""CIAO's `matrix_decay_factor` and `ControlSpec.matrix_decay_below`: dense matrices decay by a
fraction of the weight decay, tables and vectors by all of it, in runs of few passes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lhopt import LearnedOptimizer
from lhopt.control.policy_file import ControlSpec, actor_layout, file_spec
from lhopt.optim import CIAO
from lhopt.optim.batched import BatchedCIAO


def _tensors() -> list[torch.Tensor]:
    torch.manual_seed(0)
    matrix = torch.randn(4, 3, requires_grad=True)
    vector = torch.randn(4, requires_grad=True)
    table = torch.randn(5, 3, requires_grad=True)
    return [matrix, vector, table]


def _one_step(factor: float) -> list[torch.Tensor]:
    params = _tensors()
    opt = CIAO(params, lr=0.1, weight_decay=0.5, lamb_power=0.0, matrix_decay_factor=factor)
    grads = [torch.ones(4, 3), torch.ones(4), torch.ones(5, 3)]
    grads[2][1] = 0.0  # a row its batch did not read: row-sparse, a table
    for p, g in zip(params, grads, strict=True):
        p.grad = g
    opt.step()
    return [p.detach() for p in params]


def test_only_dense_matrices_decay_by_the_factor():
    start = [p.detach() for p in _tensors()]
    full, part = _one_step(1.0), _one_step(0.25)
    # the adaptive step is the same; the decay differs by lr * wd * (1 - factor) * p
    assert torch.allclose(part[0] - full[0], 0.1 * 0.5 * 0.75 * start[0], atol=1e-6)
    assert torch.equal(part[1], full[1]) and torch.equal(part[2], full[2])
    assert not torch.equal(part[0], full[0])


def test_the_factor_is_checked_and_a_state_saved_without_it_loads():
    with pytest.raises(ValueError, match=r"matrix_decay_factor=-1.*\[0, 10\]"):
        CIAO(_tensors(), matrix_decay_factor=-1.0)
    opt = CIAO(_tensors(), matrix_decay_factor=0.5)
    state = opt.state_dict()
    for group in state["param_groups"]:
        del group["matrix_decay_factor"]
    opt.load_state_dict(state)
    assert opt.param_groups[0]["matrix_decay_factor"] == 1.0


def test_batched_ciao_refuses_a_factor_other_than_one():
    params = [torch.zeros(2, 3, 2, requires_grad=True)]  # two members' (3, 2) matrices
    BatchedCIAO(params, [{"matrix_decay_factor": 1.0}] * 2)
    with pytest.raises(ValueError, match=r"member 1: matrix_decay_factor=0.5.*use CIAO"):
        BatchedCIAO(params, [{}, {"matrix_decay_factor": 0.5}])


def test_the_spec_checks_its_fields_and_layouts_hold_them_only_when_set():
    with pytest.raises(ValueError, match="matrix_decay_below=-1"):
        ControlSpec(matrix_decay_below=-1)
    with pytest.raises(ValueError, match="matrix_decay_factor=20"):
        ControlSpec(matrix_decay_below=5, matrix_decay_factor=20)
    with pytest.raises(ValueError, match="matrix_decay_factor=0.1 with matrix_decay_below=0"):
        ControlSpec(matrix_decay_factor=0.1)
    assert "matrix_decay_below" not in actor_layout(ControlSpec())
    spec = ControlSpec(matrix_decay_below=20, matrix_decay_factor=0.1)
    layout = actor_layout(spec)
    assert (layout["matrix_decay_below"], layout["matrix_decay_factor"]) == (20.0, 0.1)
    assert file_spec({"layout": layout}) == spec
    assert spec.matrix_decay(1000, 100) == 0.1  # 10 passes
    assert spec.matrix_decay(1000, 50) == 1.0  # 20 passes
    assert spec.matrix_decay(1000, math.inf) == 0.1  # fresh data
    assert spec.matrix_decay(1000) == 1.0  # not known: as without the rule
    assert ControlSpec().matrix_decay(1000, 100) is None


@pytest.fixture
def policy_file(tmp_path, shipped_policy_with):
    return shipped_policy_with(tmp_path / "md.pt", matrix_decay_below=20, matrix_decay_factor=0.1)


def _factors(opt: LearnedOptimizer, model: nn.Module) -> list[float]:
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    return [g["matrix_decay_factor"] for g in opt.param_groups]


def test_learned_optimizer_sets_the_factor_by_the_runs_passes(policy_file, shipped_policy_with):
    model = nn.Linear(3, 2)
    unknown = LearnedOptimizer(model.parameters(), total_steps=100, policy=policy_file)
    with pytest.warns(UserWarning, match=r"fewer than 20 passes.*steps_per_epoch is not set"):
        assert _factors(unknown, model) == [1.0]  # steps per epoch not given: not applied
    fresh = LearnedOptimizer(
        model.parameters(), total_steps=100, policy=policy_file, steps_per_epoch=math.inf
    )
    assert _factors(fresh, model) == [0.1]
    many = LearnedOptimizer(
        model.parameters(), total_steps=100, policy=policy_file, steps_per_epoch=2
    )
    assert _factors(many, model) == [1.0]  # 50 passes
    many.steps_per_epoch = 10  # 10 passes, as an integration sets it
    assert _factors(many, model) == [0.1]
    plain = shipped_policy_with(
        policy_file.with_name("plain.pt"), matrix_decay_below=0, matrix_decay_factor=1
    )
    given = LearnedOptimizer(
        model.parameters(), total_steps=100, policy=plain, matrix_decay_factor=0.3
    )
    assert _factors(given, model) == [0.3]  # a policy without the rule leaves it as given


def test_the_shipped_policy_sets_the_factor_below_20_passes():
    model = nn.Linear(3, 2)
    few = LearnedOptimizer(model.parameters(), total_steps=100, steps_per_epoch=10)
    many = LearnedOptimizer(model.parameters(), total_steps=100, steps_per_epoch=4)
    assert (_factors(few, model), _factors(many, model)) == ([0.1], [1.0])


def test_a_resumed_run_takes_the_factor_of_the_passes_it_saved(policy_file):
    model = nn.Linear(3, 2)
    saved = LearnedOptimizer(
        model.parameters(), total_steps=100, policy=policy_file, steps_per_epoch=2
    )
    assert _factors(saved, model) == [1.0]
    resumed = LearnedOptimizer(model.parameters(), total_steps=100, policy=policy_file)
    resumed.load_state_dict(saved.state_dict())
    assert _factors(resumed, model) == [1.0]


def test_a_factor_given_beside_a_policy_that_sets_it_is_refused(policy_file):
    model = nn.Linear(3, 2)
    refused = r"matrix_decay_factor is set by policy .*md.pt"
    for params, kwargs in (
        (model.parameters(), {"matrix_decay_factor": 0.5}),
        ([{"params": model.parameters(), "matrix_decay_factor": 0.5}], {}),
    ):
        with pytest.raises(ValueError, match=refused):
            LearnedOptimizer(params, total_steps=100, policy=policy_file, **kwargs)
    opt = LearnedOptimizer([model.weight], total_steps=100, policy=policy_file, steps_per_epoch=10)
    with pytest.raises(ValueError, match=refused):
        opt.add_param_group({"params": [model.bias], "matrix_decay_factor": 0.5})
    opt.add_param_group({"params": [model.bias]})  # the controller's factor then
    assert _factors(opt, model) == [0.1, 0.1]
