"""`lhopt.optim.groups.split_vectors` and `LearnedOptimizer(decay_vectors=...)`."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from lhopt import LearnedOptimizer
from lhopt.control import load_policy
from lhopt.control.policy_file import save_policy_file
from lhopt.optim import CIAO
from lhopt.optim.groups import split_vectors


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 8), nn.LayerNorm(8), nn.Linear(8, 1))


def test_a_flat_list_becomes_the_matrices_and_a_no_decay_group_of_the_rest():
    m = _model()
    groups = split_vectors(m.parameters())
    assert [len(g["params"]) for g in groups] == [2, 4]
    assert all(p.dim() == 2 for p in groups[0]["params"]) and "weight_decay" not in groups[0]
    assert all(p.dim() == 1 for p in groups[1]["params"]) and groups[1]["weight_decay"] == 0.0
    named = split_vectors(m.named_parameters())
    assert [n for n, _ in named[1]["params"]] == ["0.bias", "1.weight", "1.bias", "2.bias"]
    scalar = nn.Parameter(torch.tensor(1.0))
    assert split_vectors([scalar]) == [{"params": [scalar], "weight_decay": 0.0}]


def test_each_group_keeps_its_settings_and_an_emptied_group_is_dropped():
    m = _model()
    groups = split_vectors(
        [
            {"params": m[0].parameters(), "lr": 0.5, "weight_decay": 0.3},
            {"params": m[1].parameters()},
            {"params": m[2].weight, "lr": 0.2},
        ]
    )
    got = [(len(g["params"]), g.get("lr"), g.get("weight_decay")) for g in groups]
    assert got == [(1, 0.5, 0.3), (1, 0.5, 0.0), (2, None, 0.0), (1, 0.2, None)]


@pytest.mark.parametrize(
    "bad, match",
    [
        ([], "empty"),
        (["w"], "'w'"),
        ([{"lr": 1.0}], "'lr'"),
        ([{"params": [1.0]}], "1.0"),
        (torch.zeros(3, 2), r"a tensor of shape \(3, 2\)"),
        ({torch.zeros(2)}, "an iterable"),
        (3, "3 is not allowed"),
    ],
)
def test_bad_parameters_are_named(bad, match):
    with pytest.raises(ValueError, match=match):
        split_vectors(bad)


def test_the_no_decay_group_is_not_decayed():
    m = _model()
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    before = [p.detach().clone() for p in m.parameters()]
    opt = CIAO(split_vectors(m.parameters()), lr=0.1, weight_decay=0.5, lamb_power=0.0)
    opt.step()
    for p, b in zip(m.parameters(), before, strict=True):
        assert torch.equal(p, b) == (p.dim() <= 1), p.shape  # zero grads: only decay moves


def test_learned_optimizer_follows_the_policy_file_unless_told(tmp_path):
    m = _model()
    shipped = load_policy("default")
    own = LearnedOptimizer(m.parameters(), total_steps=100)
    assert not shipped.spec.no_decay_vectors  # the shipped file decays every tensor
    assert own.decay_vectors and len(own.param_groups) == 1
    off = LearnedOptimizer(m.parameters(), total_steps=100, decay_vectors=False)
    assert [g["weight_decay"] for g in off.param_groups] == [off.defaults["weight_decay"], 0.0]
    on = LearnedOptimizer(m.parameters(), total_steps=100, decay_vectors=True)
    assert len(on.param_groups) == 1

    path = tmp_path / "nodv.pt"
    spec = dataclasses.replace(shipped.spec, no_decay_vectors=True)
    save_policy_file(shipped, path, spec=spec)
    assert load_policy(path).spec.no_decay_vectors
    by_file = LearnedOptimizer(m.parameters(), total_steps=100, policy=path)
    assert not by_file.decay_vectors and len(by_file.param_groups) == 2
    told = LearnedOptimizer(m.parameters(), total_steps=100, policy=path, decay_vectors=True)
    assert len(told.param_groups) == 1


def test_named_parameters_and_a_resume_under_the_other_setting(tmp_path):
    m = _model()
    named = LearnedOptimizer(m.named_parameters(), total_steps=100, decay_vectors=False)
    assert [len(g["params"]) for g in named.param_groups] == [2, 4]
    assert named.param_groups[1]["param_names"] == ["0.bias", "1.weight", "1.bias", "2.bias"]
    saved = LearnedOptimizer(m.parameters(), total_steps=100, decay_vectors=False).state_dict()
    other = LearnedOptimizer(m.parameters(), total_steps=100, decay_vectors=True)
    before = other.state_dict()
    with pytest.raises(ValueError, match="decay_vectors=False"):
        other.load_state_dict(saved)
    assert other.state_dict()["param_groups"] == before["param_groups"]  # left as it was
    same = LearnedOptimizer(m.parameters(), total_steps=100, decay_vectors=False)
    same.load_state_dict(saved)


def test_a_bad_decay_vectors_is_named():
    with pytest.raises(ValueError, match="decay_vectors='no'"):
        LearnedOptimizer(_model().parameters(), total_steps=10, decay_vectors="no")


def test_meta_training_records_the_setting_in_its_policy_files():
    from lhopt.meta.episode import EpisodeConfig

    assert EpisodeConfig(no_decay_vectors=True).spec.no_decay_vectors
    assert not EpisodeConfig().spec.no_decay_vectors
