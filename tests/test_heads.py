"""A policy that controls some of the heads (`ControlSpec.heads`): the others are held at
"keep" in episodes and in `LearnedOptimizer`, and PPO learns from the chosen heads alone."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lhopt import LearnedOptimizer
from lhopt.control import ActionSpace, load_policy, save_policy_file
from lhopt.control.policy_file import ControlSpec, actor_layout, layout_hash
from lhopt.meta.config import MetaConfig, from_dict
from lhopt.meta.episode import PRIVILEGED_NAMES, EpisodeConfig, run_episode
from lhopt.meta.ppo import PPOConfig, ppo_step
from lhopt.meta.train import new_policy
from lhopt.tasks import TaskConfig

QUAD = {"family": "quadratic", "dim": 20, "condition": 100.0, "noise": 0.1, "batch": 8}


@pytest.fixture(autouse=True)
def _cache(tmp_cache):
    return tmp_cache


def _noisy_policy(heads=()):
    """A small policy whose heads prefer something other than "keep"."""
    cfg = MetaConfig()
    cfg.policy = from_dict({"policy": {"hidden": 16}}).policy
    cfg.episode = EpisodeConfig(heads=list(heads))
    torch.manual_seed(0)
    net = new_policy(cfg)
    with torch.no_grad():
        net.heads.weight.normal_(0, 1.0)
        net.heads.bias.normal_(0, 3.0)
    return net


@pytest.mark.parametrize(
    "heads, words",
    [(("lrr",), ["'lrr'", "'lr'", "'register'"]), (("lr", "lr"), ["distinct"])],
)
def test_unknown_or_repeated_heads_are_refused(heads, words):
    with pytest.raises(ValueError) as info:
        ControlSpec(heads=heads)
    for w in words:
        assert w in str(info.value)
    with pytest.raises(ValueError, match=r"\[episode\] heads"):
        from_dict({"episode": {"heads": list(heads)}})


def test_the_layout_records_heads_only_when_set():
    assert "heads" not in actor_layout(ControlSpec())
    assert layout_hash(actor_layout(ControlSpec())) == layout_hash()
    assert actor_layout(ControlSpec(heads=("lr",)))["heads"] == ["lr"]
    assert layout_hash(actor_layout(ControlSpec(heads=("lr",)))) != layout_hash()


def test_held_heads_keep_their_values_in_an_episode_and_in_learned_optimizer(tmp_path):
    net = _noisy_policy(heads=("lr",))
    path = tmp_path / "p.pt"
    save_policy_file(net, path)
    assert load_policy(path).spec.heads == ("lr",)

    cfg = EpisodeConfig(heads=["lr"], lr_perturbation=1.0, other_perturbation=1.0)
    task = TaskConfig.from_dict({**QUAD, "budget": 80})
    for greedy in (True, False):
        ep = run_episode(net, task, 0, cfg, np.random.default_rng(0), greedy, outer_steps=10)
        keep = ActionSpace().keep
        assert (ep["actions"][:, 1:] == keep[1:]).all()  # every head but lr held
        assert ep["info"]["final_hparams"]["ombeta1"] == ep["info"]["initial"]["ombeta1"]
        assert len(set(ep["info"]["lr_trace"])) > 1  # the lr head still acts

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = LearnedOptimizer(model.parameters(), total_steps=40, policy=path, decisions=10)
    before = {k: v for k, v in opt.param_groups[0].items() if k in ("ombeta2", "epsilon")}
    for _ in range(40):
        opt.zero_grad()
        loss = model(torch.randn(8, 4)).square().mean()
        loss.backward()
        opt.step()
        opt.report(train_loss=loss.item())
    assert {k: opt.param_groups[0][k] for k in before} == before
    assert opt.param_groups[0]["lr"] != 1e-3


def test_the_log_probability_is_that_of_the_chosen_heads():
    net = _noisy_policy()
    obs = torch.randn(net.obs_dim)
    fixed = ControlSpec(heads=("lr",)).fixed_actions(ActionSpace())
    action, logp, _ = net.act(obs, net.initial_state(), greedy=True, fixed=fixed)
    with torch.no_grad():
        logits, _ = net.step(obs[None], net.initial_state())
    lr_logp = float(torch.log_softmax(logits[0][0], -1)[action[0]])
    assert logp == pytest.approx(lr_logp, abs=1e-5)
    assert action[1:] == ActionSpace().keep[1:]
    generator = torch.Generator().manual_seed(0)
    action, logp, _ = net.act(obs, net.initial_state(), generator, fixed=fixed)
    assert logp == pytest.approx(float(torch.log_softmax(logits[0][0], -1)[action[0]]), abs=1e-5)
    assert math.isfinite(logp)


def test_ppo_leaves_the_held_heads_alone():
    net = _noisy_policy(heads=("lr",))
    episodes = []
    for sign in (1.0, -1.0):
        episodes.append(
            {
                "obs": np.random.default_rng(1).normal(size=(5, net.obs_dim)).astype(np.float32),
                "priv": np.zeros((5, len(PRIVILEGED_NAMES)), np.float32),
                "actions": np.tile(np.array(ActionSpace().keep), (5, 1)),
                "logp": np.full(5, -1.0, np.float32),
                "rewards": np.array([0, 0, 0, 0, sign], np.float32),
                "group_advantage": sign,
            }
        )
    episodes[0]["actions"][:, 0] = 6  # lr x2 in the better episode
    before = net.heads.bias.detach().clone()
    cfg = PPOConfig(advantage="group", value_coef=0.0)
    fixed = ControlSpec(heads=("lr",)).fixed_actions(ActionSpace())
    ppo_step(net, torch.optim.Adam(net.parameters(), lr=1e-2), episodes, cfg, fixed)
    moved = (net.heads.bias.detach() - before).abs()
    lr_rows = net.nvec[0]
    assert moved[:lr_rows].max() > 0
    assert moved[lr_rows:].max() == 0  # no gradient reaches a held head
