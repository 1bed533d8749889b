"""CIAO's `table_decay_factor` and `ControlSpec.table_decay_factor`: embedding tables (row-sparse
at `nn.Embedding`'s scale) decay by a multiple of the weight decay; a hidden layer that a dead
unit marks row-sparse, and a table initialised small, do not."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lhopt import LearnedOptimizer
from lhopt.control.policy_file import ControlSpec, actor_layout, file_spec
from lhopt.optim import CIAO
from lhopt.optim.batched import BatchedCIAO
from lhopt.optim.ciao import is_embedding


def _tensors() -> list[torch.Tensor]:
    torch.manual_seed(0)
    table = torch.randn(6, 3)  # nn.Embedding's N(0, 1)
    dead = 0.05 * torch.randn(6, 3)  # a hidden layer at PyTorch's scale
    small = 0.02 * torch.randn(6, 3)  # a table initialised as GPT-2's
    matrix, vector = 0.05 * torch.randn(4, 3), torch.randn(4)
    return [t.requires_grad_() for t in (table, dead, small, matrix, vector)]


def _one_step(**factors) -> list[torch.Tensor]:
    params = _tensors()
    opt = CIAO(params, lr=0.1, weight_decay=0.5, lamb_power=0.0, **factors)
    for p in params:
        p.grad = torch.ones_like(p)
    for p in params[:3]:
        p.grad[2] = 0.0  # a row its batch did not read, or a dead unit's: row-sparse
    opt.step()
    return [p.detach() for p in params]


def test_only_embedding_tables_decay_by_the_factor():
    start = [p.detach() for p in _tensors()]
    full, more = _one_step(), _one_step(table_decay_factor=3.0)
    # the adaptive step is the same; the decay differs by lr * wd * (factor - 1) * p
    assert torch.allclose(full[0] - more[0], 0.1 * 0.5 * 2.0 * start[0], atol=1e-6)
    for k in range(1, 5):
        assert torch.equal(more[k], full[k])
    both = _one_step(table_decay_factor=3.0, matrix_decay_factor=0.1)
    assert torch.equal(both[0], more[0]) and torch.equal(both[1], full[1])
    assert not torch.equal(both[3], full[3])  # the dense matrix takes the matrices' factor


def test_an_embedding_is_told_by_its_scale_against_pytorchs_default():
    assert is_embedding(torch.randn(100, 16))  # nn.Embedding's N(0, 1)
    assert not is_embedding(nn.Linear(16, 100).weight)  # a hidden layer, rms 0.14
    assert not is_embedding(nn.Linear(1, 64).weight)  # one input: rms 0.58, PyTorch's scale
    assert not is_embedding(0.02 * torch.randn(100, 16))  # GPT-2's table
    assert not is_embedding(torch.randn(100, 1))  # not above PyTorch's default for its shape
    assert not is_embedding(torch.zeros(0, 4))
    assert is_embedding(torch.randn(100, 16, dtype=torch.bfloat16))


def test_the_factor_is_checked_and_refused_by_batched_ciao():
    with pytest.raises(ValueError, match=r"table_decay_factor=-1.*\[0, 10\]"):
        CIAO(_tensors(), table_decay_factor=-1.0)
    params = [torch.zeros(2, 3, 4, requires_grad=True)]
    with pytest.raises(ValueError, match=r"member 0: table_decay_factor=3.*use CIAO"):
        BatchedCIAO(params, [{"table_decay_factor": 3.0}, {}])


def test_the_spec_records_the_factor_and_checks_it():
    with pytest.raises(ValueError, match="table_decay_factor=20"):
        ControlSpec(table_decay_factor=20)
    assert "table_decay_factor" not in actor_layout(ControlSpec())
    spec = ControlSpec(table_decay_factor=3)
    layout = actor_layout(spec)
    assert layout["table_decay_factor"] == 3.0
    assert file_spec({"layout": layout}) == spec


@pytest.fixture
def policy_file(tmp_path, shipped_policy_with):
    return shipped_policy_with(tmp_path / "td.pt", table_decay_factor=3.0)


class _Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.table, self.out = nn.Embedding(10, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.out(self.table(x))


def test_learned_optimizer_sets_the_factor_and_refuses_another(policy_file, shipped_policy_with):
    model = _Model()
    opt = LearnedOptimizer(
        model.parameters(), total_steps=100, policy=policy_file, steps_per_epoch=10
    )
    model(torch.tensor([1, 2])).sum().backward()
    opt.step()
    assert [g["table_decay_factor"] for g in opt.param_groups] == [3.0]
    assert opt.state[model.table.weight]["embedding"]
    with pytest.raises(ValueError, match="table_decay_factor is set by policy"):
        LearnedOptimizer(
            model.parameters(), total_steps=100, policy=policy_file, table_decay_factor=2.0
        )
    extra = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="table_decay_factor is set by policy"):
        opt.add_param_group({"params": extra.parameters(), "table_decay_factor": 2.0})
    opt.add_param_group({"params": extra.parameters()})  # the failed call changed nothing
    opt.zero_grad()
    (model(torch.tensor([3])).sum() + extra(torch.ones(2)).sum()).backward()
    opt.step()
    assert [g["table_decay_factor"] for g in opt.param_groups] == [3.0, 3.0]
    plain = shipped_policy_with(policy_file.with_name("plain.pt"), table_decay_factor=1.0)
    given = LearnedOptimizer(
        model.parameters(), total_steps=100, policy=plain, table_decay_factor=2.0
    )
    assert given.param_groups[0]["table_decay_factor"] == 2.0  # a file without the rule


def test_the_shipped_policy_decays_embedding_tables_at_three_times():
    model = _Model()
    opt = LearnedOptimizer(model.parameters(), total_steps=100, steps_per_epoch=10)
    model(torch.tensor([1, 2])).sum().backward()
    opt.step()
    assert opt.param_groups[0]["table_decay_factor"] == 3.0
    with pytest.raises(ValueError, match="table_decay_factor is set by policy 'default'"):
        LearnedOptimizer(model.parameters(), total_steps=100, table_decay_factor=2.0)


def test_a_state_saved_before_tables_were_told_tells_them_when_loaded():
    params = _tensors()
    opt = CIAO(params, lr=0.1, weight_decay=0.5, lamb_power=0.0, table_decay_factor=3.0)
    for p in params:
        p.grad = torch.ones_like(p)
    for p in params[:3]:
        p.grad[2] = 0.0
    opt.step()
    saved = opt.state_dict()
    for state in saved["state"].values():
        state.pop("embedding", None)
    for group in saved["param_groups"]:
        del group["table_decay_factor"]
    resumed = CIAO(params, lr=0.1, weight_decay=0.5, lamb_power=0.0)
    resumed.load_state_dict(saved)
    assert resumed.param_groups[0]["table_decay_factor"] == 1.0  # the default then
    told = [resumed.state[p].get("embedding") for p in params]
    assert told == [True, False, False, None, None]  # by the rms now; dense ones not asked
    resumed.param_groups[0]["table_decay_factor"] = 3.0
    resumed.step()
    again = CIAO(params, lr=0.1, weight_decay=0.5, lamb_power=0.0, table_decay_factor=3.0)
    again.load_state_dict(opt.state_dict())
    assert again.state[params[0]]["embedding"]
