import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lhopt.control import Policy, PolicyConfig, layout_hash, load_policy
from lhopt.control.policy import RunningNorm
from lhopt.meta import config as meta_config
from lhopt.meta.episode import PRIVILEGED_NAMES, EpisodeConfig, run_episode, run_episodes
from lhopt.meta.ppo import (
    PPOConfig,
    ReplayBuffer,
    gae,
    group_advantages,
    make_optimizer,
    make_polyak,
    pad,
    polyak_update,
    ppo_step,
)
from lhopt.meta.train import MetaTrainer, new_policy
from lhopt.tasks import TaskConfig

QUAD = {
    "family": "quadratic",
    "dim": 20,
    "condition": 100.0,
    "noise": 0.1,
    "batch": 8,
    "budget": 200,
}


@pytest.fixture(autouse=True)
def _cache(tmp_cache):
    return tmp_cache


def small_config(ppo_lr=3e-3, episode=None, **run):
    return meta_config.from_dict(
        {
            "run": {
                "workers": 0,
                "min_new_transitions": 40,
                "checkpoint_every": 1,
                "task": QUAD,
                **run,
            },
            "policy": {"hidden": 32},
            "ppo": {"lr": ppo_lr, "batch": 40, "buffer": 160},
            "episode": {
                "min_outer_steps": 10,
                "max_outer_steps": 10,
                "fixed_initial": {"lr": 1e-5},
                "other_perturbation": 1.0,
                **(episode or {}),
            },
        }
    )


@pytest.mark.parametrize(
    "data, words",
    [
        ({"ppo": {"clp": 0.2}}, ["[ppo]", "'clp'", "clip"]),
        ({"ppo": {"lr": "fast"}}, ["[ppo] lr", "float"]),
        ({"run": {"workers": -1}}, ["[run] workers", ">= 0"]),
        ({"optimizer": {}}, ["unknown section", "'optimizer'"]),
        ({"run": {"families": ["images"]}}, ["families", "quadratic"]),
        ({"episode": {"min_outer_steps": 1}}, ["outer steps"]),
        ({"run": {"task": {**QUAD, "dim": 3}}}, ["[run] task", "dim=3"]),
        ({"run": {"budget_scale": 0.5}}, ["[run] budget_scale = 0.5", "[1, 100]"]),
        ({"run": {"data_scale": 200}}, ["[run] data_scale = 200", "[1, 100]"]),
        ({"run": {"pool_seed": 3}}, ["[run] pool_seed = 3", "task_pool"]),
        ({"run": {"pool_extra": 4}}, ["[run] pool_extra = 4", "pool_seed"]),
        (
            {"run": {"task_pool": 4, "pool_seed": 3, "pool_extra": 2}},
            ["pool_extra_families = []", "non-empty", "teacher"],
        ),
        (
            {
                "run": {
                    "task_pool": 4,
                    "pool_seed": 3,
                    "pool_extra": 2,
                    "pool_extra_families": ["quadratic", "algorithmic", "mnist1d", "charlm"],
                }
            },
            ["is [run] families", "repeat the pool's first ones", "task_pool"],
        ),
        (
            {"run": {"pool_extra_families": ["teacher"]}},
            ["pool_extra_families = ['teacher']", "empty otherwise"],
        ),
        (
            {
                "run": {
                    "task_pool": 4,
                    "pool_seed": 3,
                    "pool_extra": 2,
                    "pool_extra_families": ["x"],
                }
            },
            ["pool_extra_families = ['x']", "teacher"],
        ),
        (
            {"run": {"pool_groups": [{"n": 2, "families": ["charlm"]}]}},
            ["[run] pool_groups", "needs [run] pool_seed"],
        ),
        (
            {"run": {"task_pool": 4, "pool_seed": 3, "pool_groups": [{"n": 0, "families": ["x"]}]}},
            ["pool_groups[0]", "n must be an int >= 1"],
        ),
        (
            {"run": {"task_pool": 4, "pool_seed": 3, "pool_groups": [{"n": 2, "families": ["x"]}]}},
            ["pool_groups[0]", "non-empty list", "teacher"],
        ),
        (
            {"run": {"task_pool": 4, "pool_seed": 3, "pool_groups": [{"n": 2, "fams": []}]}},
            ["pool_groups[0]", "unknown key(s) ['fams']", "valid: ['n', 'families'"],
        ),
        (
            {
                "run": {
                    "task_pool": 4,
                    "pool_seed": 3,
                    "pool_groups": [{"n": 2, "families": ["charlm"], "budget_scale": 500}],
                }
            },
            ["pool_groups[0]", "budget_scale = 500", "[1, 100]"],
        ),
        (
            {
                "run": {
                    "task_pool": 4,
                    "pool_seed": 3,
                    "pool_extra": 2,
                    "pool_extra_families": ["teacher"],
                    "pool_groups": [{"n": 2, "families": ["teacher"]}],
                }
            },
            ["pool_groups[0]", "the extras'", "same seed (3)", "would repeat", "another seed"],
        ),
        (
            {
                "run": {
                    "task_pool": 4,
                    "pool_seed": 3,
                    "pool_groups": [{"n": 2, "families": ["teacher"], "seed": 0}],
                }
            },
            ["pool_groups[0]", "seed must be an int >= 1"],
        ),
        ({"ppo": {"advantage": "grpo"}}, ["[ppo] advantage = 'grpo'", "gae", "group-scaled"]),
        ({"ppo": {"advantage": "group"}}, ["[ppo] advantage = 'group'", "batch >= 2", "got 1"]),
        ({"ppo": {"clone_iterations": 5}}, ["clone_iterations = 5", "reward_reference", "'adamw'"]),
        ({"ppo": {"clone_steps": 8}}, ["clone_steps = 8", "clone_iterations = 0"]),
        ({"ppo": {"clone_steps": -1}}, ["clone_steps = -1", ">= 0"]),
        ({"run": {"init_labels": "a.pt"}}, ["init_labels = 'a.pt'", "clone_iterations > 0"]),
        (
            {"ppo": {"clone_oracle": "best"}},
            ["clone_oracle = 'best'", "['tuned', 'stall', 'branch']"],
        ),
        ({"ppo": {"clone_stall_eps": 0.0}}, ["clone_stall_eps", "in (0, 1)"]),
        ({"episode": {"lr_scale": [3.0, 1.0]}}, ["lr_scale = [3.0, 1.0]", "0 < lo <= hi <= 100"]),
        ({"episode": {"lr_scale": [0.0, 1.0]}}, ["lr_scale = [0.0, 1.0]", "[lo, hi]"]),
        ({"episode": {"lr_scale": [1.0, 300.0]}}, ["lr_scale = [1.0, 300.0]", "<= 100"]),
        ({"episode": {"lr_scale": 2.0}}, ["lr_scale = 2.0", "list"]),
        ({"episode": {"branch_ties": "best"}}, ["branch_ties = 'best'", "['none', 'keep']"]),
        ({"ppo": {"clone_coef": -1.0}}, ["[ppo] clone_coef = -1.0", ">= 0"]),
        ({"ppo": {"keep_prior": -0.1}}, ["[ppo] keep_prior = -0.1", ">= 0"]),
        ({"ppo": {"keep_prior": 0.3}}, ["keep_prior = 0.3", "'tuned'", "'branch'"]),
        ({"ppo": {"clone_weight": "margin"}}, ["clone_weight = 'margin'", "['none', 'stakes']"]),
        ({"run": {"device": "gpu"}}, ["[run] device = 'gpu'", "['cpu', 'cuda']", "'cuda:i'"]),
        ({"ppo": {"clone_weight": "stakes"}}, ["clone_weight = 'stakes'", "'tuned'", "'branch'"]),
        ({"ppo": {"clone_coef": 0.5}}, ["clone_coef = 0.5", "reward_reference", "'stall'"]),
        (
            {"ppo": {"clone_coef": 0.5, "clone_oracle": "stall"}, "episode": {"heads": ["wd"]}},
            ["clone_coef = 0.5", "['wd']", "'lr'"],
        ),
        (
            {
                "ppo": {"clone_iterations": 5},
                "episode": {"reward_reference": "tuned-cosine", "heads": ["epsilon"]},
            },
            ["clone_iterations = 5", "['epsilon']", "'lr'"],
        ),
    ],
)
def test_config_errors_name_the_key(data, words):
    with pytest.raises(ValueError) as info:
        meta_config.from_dict(data)
    for w in words:
        assert w in str(info.value)


def test_a_pool_seed_makes_the_measured_sample_the_task_pool(tmp_path):
    from lhopt.tasks import sample_training_set

    families = ["quadratic", "mnist1d"]
    cfg = small_config(task={}, task_pool=5, pool_seed=7, families=families, budget_scale=3.0)
    trainer = MetaTrainer(cfg, tmp_path)
    drawn = [c.to_dict() for c in sample_training_set(7, 5, tuple(families), 3.0, 1.0)]
    seen = [trainer.next_spec()["config"] for _ in range(60)]
    assert trainer.pool == drawn
    assert all(c in drawn for c in seen) and all(c in seen for c in drawn)
    # The same list for the same arguments, another for another seed.
    assert drawn == [c.to_dict() for c in sample_training_set(7, 5, tuple(families), 3.0, 1.0)]
    assert drawn != [c.to_dict() for c in sample_training_set(8, 5, tuple(families), 3.0, 1.0)]


def test_pool_extra_adds_configs_of_other_families_to_the_parents_pool(tmp_path):
    from lhopt.tasks import sample_training_set

    families = ["quadratic", "mnist1d"]
    cfg = small_config(
        task={},
        task_pool=5,
        pool_seed=7,
        families=families,
        pool_extra=3,
        pool_extra_families=["teacher"],
    )
    trainer = MetaTrainer(cfg, tmp_path)
    trainer.next_spec()
    parent = [c.to_dict() for c in sample_training_set(7, 5, tuple(families), 1.0, 1.0)]
    extra = [c.to_dict() for c in sample_training_set(7, 3, ("teacher",), 1.0, 1.0)]
    assert trainer.pool == parent + extra
    assert {c["family"] for c in extra} == {"teacher"}


def test_pool_groups_add_families_at_their_own_budgets_after_the_extras(tmp_path):
    from lhopt.meta.train import fixed_pool
    from lhopt.tasks import sample_training_set

    families = ["quadratic", "mnist1d"]
    group = {"n": 3, "families": ["charlm"], "budget_scale": 10.0}
    cfg = small_config(
        task={},
        task_pool=5,
        pool_seed=7,
        families=families,
        pool_extra=2,
        pool_extra_families=["teacher"],
        pool_groups=[group, {"n": 2, "families": ["linear"]}],
    )
    cfg = meta_config.from_dict(cfg.to_dict())  # checked, and as a file would give it
    parent = sample_training_set(7, 5, tuple(families), 1.0, 1.0)
    extra = sample_training_set(7, 2, ("teacher",), 1.0, 1.0)
    charlm = sample_training_set(7, 3, ("charlm",), 10.0, 1.0)
    linear = sample_training_set(7, 2, ("linear",), 1.0, 1.0)
    assert fixed_pool(cfg.run) == parent + extra + charlm + linear
    assert {c.family for c in charlm} == {"charlm"}
    # the group's own budget scale: longer runs than the family's sampled range
    assert max(c.p["budget"] for c in charlm) > max(
        c.p["budget"] for c in sample_training_set(7, 3, ("charlm",), 1.0, 1.0)
    )
    assert "pool_groups = [{" in meta_config.dumps(cfg)  # a run folder records it


def test_a_pool_group_with_its_own_seed_draws_more_of_a_family_the_pool_has(tmp_path):
    from lhopt.meta.train import fixed_pool
    from lhopt.tasks import sample_training_set

    longer = {"n": 3, "families": ["teacher"], "budget_scale": 4.0, "seed": 8}
    cfg = small_config(
        task={},
        task_pool=2,
        pool_seed=7,
        families=["quadratic"],
        pool_extra=2,
        pool_extra_families=["teacher"],
        pool_groups=[longer],
    )
    cfg = meta_config.from_dict(cfg.to_dict())
    pool = fixed_pool(cfg.run)
    drawn = sample_training_set(8, 3, ("teacher",), 4.0, 1.0)
    assert pool[4:] == drawn
    assert pool[2:4] == sample_training_set(7, 2, ("teacher",), 1.0, 1.0)
    assert all(c not in pool[2:4] for c in drawn)  # fresh configs, not the extras again
    unseeded = cfg.to_dict()
    unseeded["run"]["pool_groups"] = [{k: v for k, v in longer.items() if k != "seed"}]
    with pytest.raises(ValueError, match="would repeat"):
        meta_config.from_dict(unseeded)  # the extras' draw again, at longer budgets


def test_config_files(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[ppo]\nlr = 1e-3\n[run]\nworkers = 0\n")
    cfg = meta_config.load(path)
    assert cfg.ppo.lr == 1e-3 and cfg.ppo.clip == 0.2 and cfg.policy.hidden == 256
    path.write_text("[ppo\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        meta_config.load(path)
    with pytest.raises(ValueError, match="does not exist"):
        meta_config.load(tmp_path / "missing.toml")
    files = sorted(Path("configs").rglob("*.toml"))  # every committed config loads
    assert {"default.toml", "smoke.toml", "default-stage6.toml"} <= {f.name for f in files}
    for file in files:
        meta_config.load(file)


def test_warm_start_and_resume_of_a_checkpoint_without_newer_keys(tmp_path):
    first = MetaTrainer(small_config(iterations=1), tmp_path / "a")
    with torch.no_grad():
        for p in first.policy.parameters():
            p.add_(0.01)
        first.avg.load_state_dict(first.policy.state_dict())
    first.save_checkpoint()
    state = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)

    second = MetaTrainer(small_config(iterations=1), tmp_path / "b")
    second.warm_start(tmp_path / "a" / "checkpoint.pt")
    for a, b in zip(second.policy.state_dict().values(), state["policy"].values(), strict=True):
        assert torch.equal(a, b)
    assert second.iteration == 0 and second.counters["episodes"] == 0
    with pytest.raises(ValueError, match="init_from.*not a readable checkpoint"):
        second.warm_start(tmp_path / "missing.pt")
    torch.save({"x": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a meta-training checkpoint"):
        second.warm_start(tmp_path / "other.pt")

    # A policy file (a snapshot, or the shipped policy) starts both networks as its weights.
    third = MetaTrainer(small_config(iterations=1), tmp_path / "c")
    third.warm_start(tmp_path / "a" / "policy.pt")
    for net in (third.policy, third.avg):
        for a, b in zip(net.state_dict().values(), state["avg"].values(), strict=True):
            assert torch.equal(a, b)

    # A checkpoint written before `reward_horizon` existed still resumes (the key's default).
    del state["config"]["episode"]["reward_horizon"]
    torch.save(state, tmp_path / "a" / "checkpoint.pt")
    again = MetaTrainer(small_config(iterations=1), tmp_path / "a")
    again.resume()
    assert again.iteration == first.iteration


def test_a_slower_normaliser_weighs_a_faster_ones_statistics_as_the_rows_they_summarise():
    torch.manual_seed(0)
    fast = RunningNorm(3, beta=0.99)
    fast.update(torch.randn(2000, 3) + 4.0)
    x = torch.tensor([[4.0, 3.0, 5.0]])
    slow = RunningNorm(3, beta=0.9999)
    slow.load_state_dict(fast.state_dict())
    slow.carry_over(0.99)
    # The same normalisation at once: the statistics are re-expressed, not changed.
    torch.testing.assert_close(slow(x), fast(x))
    assert float(slow.weight) == pytest.approx(1 - 0.9999**100, rel=1e-4)
    # Then they count as the ~100 rows they summarise: 10,000 rows near -4 outweigh them.
    slow.update(torch.randn(10000, 3) - 4.0)
    mean = slow.mean / slow.weight
    assert torch.all((mean > -4.0) & (mean < -3.8))
    # A normaliser that saw fewer rows than its window carries only those.
    few = RunningNorm(3, beta=0.99)
    few.update(torch.ones(10, 3))
    slow = RunningNorm(3, beta=0.9999)
    slow.load_state_dict(few.state_dict())
    slow.carry_over(0.99)
    assert float(slow.weight) == pytest.approx(1 - 0.9999**10, rel=1e-3)
    # Same decay, or nothing seen: left as is.
    same = RunningNorm(3, beta=0.99)
    same.load_state_dict(fast.state_dict())
    same.carry_over(0.99)
    assert torch.equal(same.mean, fast.mean) and torch.equal(same.weight, fast.weight)
    empty = RunningNorm(3, beta=0.9999)
    empty.carry_over(0.99)
    assert float(empty.weight) == 0.0


def test_warm_start_carries_the_normaliser_over_to_the_runs_decay(tmp_path):
    first = MetaTrainer(small_config(iterations=1), tmp_path / "a")
    rows = torch.randn(3000, first.policy.obs_dim) * 3 + 1
    for net in (first.policy, first.avg):
        net.obs_norm.update(rows)
    first.save_checkpoint()
    cfg = small_config(iterations=1)
    cfg = meta_config.from_dict({**cfg.to_dict(), "policy": {"hidden": 32, "norm_beta": 0.99999}})
    for start in ("checkpoint.pt", "policy.pt"):
        second = MetaTrainer(cfg, tmp_path / f"b-{start}")
        second.warm_start(tmp_path / "a" / start)
        for net in (second.policy, second.avg):
            norm = net.obs_norm
            assert norm.beta == 0.99999
            assert float(norm.weight) == pytest.approx(1 - 0.99999**1000, rel=1e-3)
            torch.testing.assert_close(norm(rows[:5]), first.avg.obs_norm(rows[:5]))


def test_gae_with_gamma_one_and_lambda_one_is_return_minus_value():
    r = np.array([1.0, 0.0, 2.0], dtype=np.float32)
    v = np.array([0.5, 0.5, 0.5], dtype=np.float32)
    np.testing.assert_allclose(gae(r, v, 1.0, 1.0), [3.0 - 0.5, 2.0 - 0.5, 2.0 - 0.5])
    np.testing.assert_allclose(gae(r, v, 1.0, 0.0), r + np.append(v[1:], 0) - v)


def test_group_advantages_are_returns_minus_the_mean_of_the_others():
    np.testing.assert_allclose(group_advantages([1.0, 2.0, 6.0]), [1 - 4, 2 - 3.5, 6 - 1.5])
    assert group_advantages([5.0]) == [0.0]
    assert sum(group_advantages([0.3, -1.0, 2.5, 0.1])) == pytest.approx(0.0)
    # Scaled: a task whose returns spread 100 times wider weighs the same.
    narrow, wide = group_advantages([0.0, 0.01, 0.02], True), group_advantages([0, 1, 2], True)
    np.testing.assert_allclose(narrow, wide, atol=1e-12)
    np.testing.assert_allclose(wide, np.array([-1.5, 0.0, 1.5]) / np.std([0, 1, 2]))
    assert group_advantages([0.7, 0.7], True) == [0.0, 0.0]


def test_a_shared_start_gives_a_batch_one_draw_of_initial_hyperparameters(parts):
    space, engine = parts
    task = TaskConfig.from_dict({**QUAD, "budget": 40})
    policy = Policy(engine.size, len(PRIVILEGED_NAMES), space.nvec, PolicyConfig(hidden=16))
    rngs = lambda: [np.random.default_rng(s) for s in (1, 2, 3)]  # noqa: E731
    apart = run_episodes(policy, task, [0, 0, 0], EpisodeConfig(noise_floor=1e-5), rngs())
    shared_cfg = EpisodeConfig(noise_floor=1e-5, shared_start=True)
    shared = run_episodes(policy, task, [0, 0, 0], shared_cfg, rngs())
    assert len({json.dumps(e["info"]["initial"]) for e in apart}) == 3
    assert len({json.dumps(e["info"]["initial"]) for e in shared}) == 1
    assert shared[0]["info"]["initial"] == apart[0]["info"]["initial"]  # rngs[0]'s draw
    # The members still sample their own actions.
    assert len({e["actions"].tobytes() for e in shared}) > 1


def test_a_group_advantage_raises_the_better_members_actions(parts):
    """Two episodes that saw the same features and acted differently: with group advantages +1
    and -1, one PPO step makes the first one's actions more likely, the second's less."""
    space, engine = parts
    torch.manual_seed(0)
    policy = Policy(engine.size, len(PRIVILEGED_NAMES), space.nvec, PolicyConfig(hidden=16))
    obs = torch.randn(1, 5, engine.size)
    priv = torch.zeros(1, 5, len(PRIVILEGED_NAMES))
    a = np.zeros((5, len(space.nvec)), np.int64)
    b = np.ones((5, len(space.nvec)), np.int64)

    def logp(actions):
        logits, _ = policy.unroll(obs, priv)
        return sum(
            torch.distributions.Categorical(logits=lg).log_prob(torch.from_numpy(actions[:, k]))
            for k, lg in enumerate(logits)
        ).sum()

    with torch.no_grad():
        before = float(logp(a)), float(logp(b))
    episodes = [
        {
            "obs": obs[0].numpy(),
            "priv": priv[0].numpy(),
            "actions": acts,
            "logp": np.full(5, logp_value / 5, np.float32),
            "rewards": np.array([0, 0, 0, 0, r], np.float32),
            "group_advantage": r,
        }
        for acts, r, logp_value in ((a, 1.0, before[0]), (b, -1.0, before[1]))
    ]
    cfg = PPOConfig(advantage="group", lr=1e-2, entropy_coef=0.0, value_coef=0.0)
    ppo_step(policy, torch.optim.Adam(policy.parameters(), lr=1e-2), episodes, cfg)
    with torch.no_grad():
        after = float(logp(a)), float(logp(b))
    assert after[0] > before[0] and after[1] < before[1], (before, after)


def test_buffer_limits_reuse_staleness_and_size():
    cfg = PPOConfig(batch=4, buffer=10, max_sample_reuse=2, max_staleness=1)
    buf = ReplayBuffer(cfg)
    ep = {"rewards": np.zeros(4, np.float32)}
    for v in range(3):
        buf.add(dict(ep), version=v)
    assert buf.transitions() == 8  # the oldest dropped to stay within 10
    rng = np.random.default_rng(0)
    for _ in range(4):
        buf.prune(version=2)
        buf.sample(rng)
    buf.prune(version=2)
    assert buf.episodes == []  # each used twice: gone
    buf.add(dict(ep), version=0)
    buf.prune(version=2)
    assert buf.episodes == []  # too stale


def test_policy_shapes_hidden_privileges_and_polyak(parts):
    space, engine = parts
    pol = Policy(engine.size, len(PRIVILEGED_NAMES), space.nvec, PolicyConfig(hidden=16))
    obs = torch.randn(3, 5, engine.size)
    priv = torch.randn(3, 5, len(PRIVILEGED_NAMES))
    logits, values = pol.unroll(obs, priv)
    assert [lg.shape for lg in logits] == [(3, 5, n) for n in space.nvec]
    assert values.shape == (3, 5)
    logits2, values2 = pol.unroll(obs, priv * 100)  # privileged inputs: value only
    assert all(torch.equal(a, b) for a, b in zip(logits, logits2, strict=True))
    assert not torch.equal(values, values2)
    action, logp, _ = pol.act(obs[0, 0], pol.initial_state())
    assert len(action) == len(space.nvec)
    assert logp == pytest.approx(-sum(math.log(n) for n in space.nvec), rel=1e-5)
    avg = make_polyak(pol)
    with torch.no_grad():
        for p in pol.parameters():
            p.add_(1.0)
    polyak_update(avg, pol, 0.9)
    a, p = next(avg.parameters()), next(pol.parameters())
    assert torch.allclose(a, p - 0.9, atol=1e-6)


def test_greedy_actions_are_the_most_likely_ones_with_their_log_probability(parts):
    space, engine = parts
    torch.manual_seed(0)
    pol = Policy(engine.size, len(PRIVILEGED_NAMES), space.nvec, PolicyConfig(hidden=16))
    with torch.no_grad():
        pol.heads.weight.normal_()  # untrained heads are all ties: give them preferences
    state = ref_state = pol.initial_state()
    for _ in range(20):
        obs = torch.randn(engine.size) * 3
        action, logp, state = pol.act(obs, state, greedy=True)
        with torch.no_grad():
            logits, ref_state = pol.step(obs[None], ref_state)
        expected = tuple(int(lg[0].argmax()) for lg in logits)
        assert action == expected
        assert logp == pytest.approx(
            sum(
                float(torch.log_softmax(lg[0], -1)[a])
                for lg, a in zip(logits, expected, strict=True)
            ),
            abs=1e-4,
        )
        assert torch.equal(state[0], ref_state[0])


def test_keep_bias_makes_the_untrained_policy_mostly_keep(parts):
    space, engine = parts
    pol = Policy(
        engine.size,
        len(PRIVILEGED_NAMES),
        space.nvec,
        PolicyConfig(hidden=16, keep_bias=3.0),
        keep=space.keep,
    )
    logits, _ = pol.step(torch.zeros(1, engine.size), pol.initial_state())
    for lg, k, n in zip(logits, space.keep, space.nvec, strict=True):
        p = torch.softmax(lg[0], -1)
        assert int(p.argmax()) == k
        assert float(p[k].detach()) == pytest.approx(math.exp(3) / (math.exp(3) + n - 1), rel=1e-5)


def test_an_episode_has_aligned_arrays_and_finite_features(parts):
    space, engine = parts
    pol = Policy(engine.size, len(PRIVILEGED_NAMES), space.nvec, PolicyConfig(hidden=16))
    cfg = EpisodeConfig(min_outer_steps=5, max_outer_steps=5)
    ep = run_episode(pol, TaskConfig.from_dict(QUAD), 0, cfg, np.random.default_rng(0))
    n = ep["info"]["outer_steps"]
    assert n == 5 and ep["obs"].shape == (5, engine.size) and ep["actions"].shape == (5, 9)
    assert ep["priv"].shape == (5, len(PRIVILEGED_NAMES)) and ep["rewards"].shape == (5,)
    assert np.isfinite(ep["obs"]).all() and np.isfinite(ep["priv"]).all()
    assert ep["info"]["return"] == pytest.approx(float(ep["rewards"].sum()), abs=1e-5)
    assert ep["info"]["inner_steps"] == 200
    assert 0 < ep["info"]["wall_time"] < 120  # seconds of this episode (the CPU-hours counter)


def test_an_episode_scored_by_its_last_loss_gives_back_a_late_blow_up(monkeypatch, parts):
    import lhopt.meta.episode as episode_mod
    from lhopt.meta.episode import baseline_law
    from lhopt.meta.reward import log_speedup

    real_build = episode_mod.build_task

    def scripted_build(config, seed):  # the real task, with a scripted validation curve
        task = real_build(config, seed)
        vals = iter([10.0, 1.8, 1.6, 1.45, 1.5, 3.0])  # AdamW: ~1.5 at T
        task.val_loss = lambda: next(vals)
        return task

    monkeypatch.setattr(episode_mod, "build_task", scripted_build)
    space, engine = parts
    pol = Policy(engine.size, len(PRIVILEGED_NAMES), space.nvec, PolicyConfig(hidden=16))
    law, _ = baseline_law(TaskConfig.from_dict(QUAD), 0, 14)
    for rule, loss in (("best", 1.45), ("last", 3.0)):
        cfg = EpisodeConfig(min_outer_steps=5, max_outer_steps=5, reward_loss=rule)
        ep = run_episode(pol, TaskConfig.from_dict(QUAD), 0, cfg, np.random.default_rng(0))
        assert ep["info"]["return"] == pytest.approx(log_speedup(law, loss, 200), abs=1e-5)
        assert ep["priv"][-1][PRIVILEGED_NAMES.index("return_so_far")] == pytest.approx(
            log_speedup(law, 1.5 if rule == "last" else 1.45, 160), abs=1e-5
        )


def test_a_failing_episode_is_dropped_and_training_goes_on(tmp_path, monkeypatch):
    import lhopt.meta.train as train_mod

    real, calls = train_mod.run_episodes, {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] % 3 == 0:
            raise RuntimeError("inner run crashed")
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "run_episodes", flaky)
    trainer = MetaTrainer(small_config(iterations=2), tmp_path / "run")
    trainer.train(log_progress=lambda s: None)
    assert trainer.iteration == 2 and trainer.counters["errors"] >= 1
    rows = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2] and rows[-1]["errors_total"] >= 1


def test_a_dead_rollout_worker_is_replaced_and_training_goes_on(tmp_path):
    import ray

    trainer = MetaTrainer(small_config(iterations=3, workers=1), tmp_path / "run")
    lines = []

    def log(line):
        lines.append(line)
        if len(lines) == 1:  # after the first iteration: the worker dies under its next episode
            ray.kill(trainer._workers[0], no_restart=True)

    try:
        trainer.train(log_progress=log)
    finally:
        ray.shutdown()
    assert trainer.iteration == 3 and trainer.counters["errors"] >= 1
    assert any("worker died" in line for line in lines)


def state_equal(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(state_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(state_equal(x, y) for x, y in zip(a, b, strict=True))
    if torch.is_tensor(a):
        return torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return a == b


def test_sigkill_then_resume_loses_only_the_iteration_in_flight(tmp_path):
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(
        "[run]\nworkers = 0\niterations = 40\nmin_new_transitions = 40\ncheckpoint_every = 1\n"
        f"task = {{ {', '.join(f'{k} = {json.dumps(v)}' for k, v in QUAD.items())} }}\n"
        "[policy]\nhidden = 32\n[ppo]\nbatch = 40\nbuffer = 160\n"
        "[episode]\nmin_outer_steps = 10\nmax_outer_steps = 10\n"
    )
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lhopt.cli",
            "meta-train",
            "--config",
            str(cfg_path),
            "--out",
            str(out),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    log = out / "log.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= 3:
            break
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.2)
    time.sleep(0.5)  # into the next iteration
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    logged = [json.loads(x)["iteration"] for x in log.read_text().splitlines() if x]
    saved = torch.load(out / "checkpoint.pt", weights_only=False)
    # Nothing but the iteration in flight is lost: its line may be written, its checkpoint not.
    assert logged == list(range(1, logged[-1] + 1))
    assert saved["iteration"] in (logged[-1], logged[-1] - 1) and saved["iteration"] >= 2

    trainer = MetaTrainer(meta_config.load(cfg_path), out)
    trainer.resume()
    assert state_equal(trainer.state_dict(), saved)  # policy, Adam, normalisers, RNG, buffer
    trainer.cfg.run.iterations = saved["iteration"] + 2
    trainer.train(log_progress=lambda s: None)
    logged = [json.loads(x)["iteration"] for x in log.read_text().splitlines() if x]
    assert logged == list(range(1, saved["iteration"] + 3))
    shipped = torch.load(out / "policy.pt", weights_only=False)
    assert shipped["layout_hash"] == layout_hash() and shipped["format"] == 1


@pytest.mark.parametrize("killed", ["before", "after"])
def test_a_kill_around_the_checkpoint_loses_no_log_line(tmp_path, monkeypatch, killed):
    """A run killed just before or just after its iteration-2 checkpoint is written, then
    resumed, logs every iteration once."""

    class Killed(BaseException):
        pass

    real = MetaTrainer.save_checkpoint

    def save_checkpoint(self):
        if self.iteration == 2 and killed == "before":
            raise Killed
        real(self)
        if self.iteration == 2 and killed == "after":
            raise Killed

    out = tmp_path / "run"
    monkeypatch.setattr(MetaTrainer, "save_checkpoint", save_checkpoint)
    with pytest.raises(Killed):
        MetaTrainer(small_config(iterations=3), out).train(log_progress=lambda s: None)
    monkeypatch.setattr(MetaTrainer, "save_checkpoint", real)
    trainer = MetaTrainer(small_config(iterations=3), out)
    trainer.resume()
    assert trainer.iteration == (1 if killed == "before" else 2)
    trainer.train(log_progress=lambda s: None)
    logged = [json.loads(x)["iteration"] for x in (out / "log.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3]


def test_it_learns_to_fix_a_learning_rate_100x_too_small(tmp_path):
    """Quadratics started with lr 1e-5 (100x below the baseline's 1e-3): a good schedule exists
    (raise the lr fast). The trained policy's mean return must clearly beat the untrained one's,
    measured on held-out task seeds, for several training seeds."""
    gains = []
    for seed in (0, 1):
        config = small_config(ppo_lr=1e-2, iterations=40, seed=seed, checkpoint_every=40)
        trainer = MetaTrainer(config, tmp_path / f"run{seed}")
        cfg = trainer.cfg.episode

        def mean_return(policy, trainer=trainer, cfg=cfg):
            rng = np.random.default_rng(123)
            task = TaskConfig.from_dict(QUAD)
            return np.mean(
                [run_episode(policy, task, 1000 + s, cfg, rng)["info"]["return"] for s in range(6)]
            )

        before = mean_return(trainer.policy)
        trainer.train(log_progress=lambda s: None)
        after = mean_return(trainer.policy)
        gains.append((before, after))
    for before, after in gains:
        assert after > before + 1.0, gains


def test_group_advantages_learn_to_fix_a_learning_rate_100x_too_small(tmp_path):
    """As above, with batches of 4 members from one start and advantages relative to the batch
    (no critic in the policy's update)."""
    config = small_config(
        ppo_lr=1e-2,
        iterations=30,
        checkpoint_every=30,
        batch=4,
        episode={"noise_floor": 1e-5, "shared_start": True},
    )
    config.ppo.advantage = "group"
    meta_config._check_semantics(config)
    trainer = MetaTrainer(config, tmp_path / "run")
    cfg = trainer.cfg.episode
    task = TaskConfig.from_dict(QUAD)

    def mean_return(policy):
        rng = np.random.default_rng(123)
        return np.mean(
            [run_episode(policy, task, 1000 + s, cfg, rng)["info"]["return"] for s in range(6)]
        )

    before = mean_return(trainer.policy)
    trainer.train(log_progress=lambda s: None)
    after = mean_return(trainer.policy)
    assert after > before + 1.0, (before, after)


def test_periodic_evaluation_on_a_suite_is_logged(tmp_path, monkeypatch):
    from lhopt.tasks import SUITES

    tiny = {
        "tiny-a": TaskConfig.from_dict({**QUAD, "budget": 40}),
        "tiny-b": TaskConfig.from_dict({**QUAD, "dim": 30, "budget": 40}),
    }
    monkeypatch.setitem(SUITES, "tiny", tiny)
    trainer = MetaTrainer(
        small_config(iterations=2, eval_every=2, eval_suite="tiny", eval_seeds=2), tmp_path / "run"
    )
    trainer.train(log_progress=lambda s: None)
    rows = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert "eval" not in rows[0]
    ev = rows[1]["eval"]
    assert set(ev) == {"tiny-a", "tiny-b", "mean"}
    assert ev["mean"] == pytest.approx((ev["tiny-a"] + ev["tiny-b"]) / 2)
    assert all(-3.0 <= v <= 3.0 for v in ev.values())
    assert (tmp_path / "run" / "progress.png").stat().st_size > 10_000


def test_ray_rollout_workers_run_batches_of_episodes(tmp_path):
    """Each rollout returns its N episodes; the learner counts every one."""
    import ray

    cfg = small_config(iterations=1, workers=1, batch=4, episode={"noise_floor": 1e-5})
    trainer = MetaTrainer(cfg, tmp_path / "run")
    try:
        trainer.train(log_progress=lambda s: None)
    finally:
        ray.shutdown()
    assert trainer.counters["errors"] == 0
    assert trainer.counters["episodes"] >= 4 and trainer.counters["episodes"] % 4 == 0
    assert trainer.counters["transitions"] == 10 * trainer.counters["episodes"]


def test_the_oracle_takes_the_lr_choice_nearest_the_gap_in_log():
    from lhopt.control.actions import OFFICIAL_HEADS
    from lhopt.meta.clone import oracle_choices

    lr = OFFICIAL_HEADS[0]  # factors 0.5, 0.707, 0.9, 1, 1.1, 1.414, 2
    gaps = np.log([1.0, 100.0, 0.01, 1.12, 0.88, 1.5, 0.7, 1.02])
    assert oracle_choices(lr, gaps).tolist() == [3, 6, 0, 4, 2, 5, 1, 3]
    with pytest.raises(ValueError, match="clip_fraction"):
        oracle_choices(OFFICIAL_HEADS[-1], gaps)


def test_the_stall_oracle_halves_where_the_best_validation_loss_stopped_gaining():
    from lhopt.control.actions import OFFICIAL_HEADS
    from lhopt.meta.clone import labels, stall_choices

    lr = OFFICIAL_HEADS[0]  # factors 0.5, 0.707, 0.9, 1, 1.1, 1.414, 2: halve 0, keep 3
    # Gains per period: 5, 2, 0.001 (a stall), 1, a rise (no new best: a stall), NaN (a stall).
    vals = np.array([10.0, 5.0, 3.0, 2.999, 1.999, 2.5, np.nan])
    assert stall_choices(lr, vals, 0.01, 20).tolist() == [3, 3, 3, 0, 3, 0, 0]
    # A scale-free rule: shifting and scaling the losses (negative ones too) changes nothing.
    assert stall_choices(lr, 3 * vals - 20, 0.01, 20).tolist() == [3, 3, 3, 0, 3, 0, 0]
    episode = {"val": vals, "info": {"outer_steps": 20}}
    assert labels(episode, lr, "stall", 0.01).tolist() == [3, 3, 3, 0, 3, 0, 0]
    # A first period that did not gain at all is a stall too (a start too high).
    assert stall_choices(lr, np.array([1.0, 1.2, 0.5]), 0.01, 20).tolist() == [3, 0, 3]
    with pytest.raises(ValueError, match="clip_fraction"):
        stall_choices(OFFICIAL_HEADS[-1], vals, 0.01, 20)


def test_the_stall_oracle_does_not_depend_much_on_how_finely_the_run_is_cut():
    from lhopt.control.actions import OFFICIAL_HEADS
    from lhopt.meta.clone import stall_choices

    lr = OFFICIAL_HEADS[0]
    logs = np.log(lr.choices)

    def decay(curve, k):  # the log factor the oracle's cuts multiply the lr by over the run
        return float(logs[stall_choices(lr, curve(np.linspace(0.0, 1000.0, k + 1)), 0.01, k)].sum())

    def steady(t):  # the same gain every step: never a stall
        return 10 - t / 100

    def slowing(t):  # a power law whose late gains are small
        return 1 + 3 / np.sqrt(1 + t / 10)

    assert all(decay(steady, k) == 0 for k in (4, 20, 64, 128))
    cuts = [decay(slowing, k) for k in (10, 20, 40, 80)]
    assert all(c < 0 for c in cuts) and max(cuts) / min(cuts) > 0.5, cuts
    assert stall_choices(lr, slowing(np.linspace(0.0, 1000.0, 41)), 0.01, 40).min() == 1  # 0.707


def test_episodes_record_the_validation_loss_each_decision_saw():
    config = small_config()
    cfg = config.episode
    policy = new_policy(config)
    e = run_episode(policy, TaskConfig.from_dict(QUAD), 0, cfg, np.random.default_rng(0))
    val = e["val"]
    assert len(val) == len(e["obs"]) and np.isfinite(val).all()
    # The first is the loss before training; each later one ended the period before it.
    assert val[0] > val[-1]


def test_cloning_the_oracle_teaches_the_policy_to_find_the_tuned_lr(tmp_path):
    """Quadratics from lrs 100x either side of 1e-3: after cloning the oracle (the lr head
    alone), greedy episodes end much nearer the tuned reference's lr than the untrained
    policy's, on held-out task seeds."""
    config = small_config(
        ppo_lr=1e-2,
        iterations=30,
        checkpoint_every=30,
        episode={
            "fixed_initial": {},
            "lr_perturbation": 100.0,
            "reward_reference": "tuned-cosine",
            "schedule": "cosine",
            "heads": ["lr"],
        },
        task_seeds=1,
    )
    config.ppo.clone_iterations = 30
    meta_config._check_semantics(config)
    trainer = MetaTrainer(config, tmp_path / "run")
    cfg = trainer.cfg.episode
    task = TaskConfig.from_dict(QUAD)

    def mean_gap(policy):
        rng = np.random.default_rng(123)
        gaps = []
        for _ in range(8):
            info = run_episode(policy, task, 0, cfg, rng, greedy=True)["info"]
            gaps.append(abs(math.log(info["tuned_lr"] / info["final_hparams"]["lr"])))
        return float(np.mean(gaps))

    before = mean_gap(trainer.policy)
    trainer.train(log_progress=lambda s: None)
    rows = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all("clone_accuracy" in r for r in rows)
    after = mean_gap(trainer.policy)
    assert after < 0.25 * before, (before, after)


def test_the_clone_kept_as_a_prior_pulls_ppo_toward_the_oracle(tmp_path):
    """`clone_coef` adds the cloning cross-entropy to PPO's loss: the same PPO steps on the same
    episodes bring the lr head to the stall oracle's choices with it, and not without it; the
    trainer logs the prior's loss and accuracy after the cloning iterations."""
    from lhopt.control.actions import ActionSpace
    from lhopt.meta.clone import clone_loss

    config = small_config(episode={"fixed_initial": {"lr": 1e-1}}, iterations=2)
    config.ppo.clone_oracle, config.ppo.clone_iterations = "stall", 1
    meta_config._check_semantics(config)
    heads = ActionSpace().heads
    index = next(i for i, h in enumerate(heads) if h.hparam == "lr")
    rng = np.random.default_rng(0)
    policy = new_policy(config)
    task = TaskConfig.from_dict(QUAD)
    episodes = [run_episode(policy, task, s, config.episode, rng) for s in range(4)]
    _, _, _, _, mask = pad(episodes)

    def prior(logits, eps, m):
        return clone_loss(logits, eps, m, config.ppo, index, heads[index])

    def after(coef):
        torch.manual_seed(0)
        p = new_policy(config)
        p.load_state_dict(policy.state_dict())
        opt = make_optimizer(p, config.ppo)
        config.ppo.clone_coef = coef
        for _ in range(20):
            stats = ppo_step(p, opt, episodes, config.ppo, prior=prior if coef else None)
        obs, priv, *_ = pad(episodes)
        with torch.no_grad():
            return float(prior(p.unroll(obs, priv)[0], episodes, mask)[0]), stats

    with torch.no_grad():
        obs, priv, *_ = pad(episodes)
        before = float(prior(policy.unroll(obs, priv)[0], episodes, mask)[0])
    without, _ = after(0.0)
    with_prior, stats = after(5.0)
    assert "clone_accuracy" in stats and "clone_loss" in stats
    assert with_prior < 0.5 * before and with_prior < 0.5 * without, (before, without, with_prior)

    config.ppo.clone_coef = 1.0
    trainer = MetaTrainer(config, tmp_path / "run")
    trainer.train(log_progress=lambda s: None)
    rows = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and "clone_loss" not in rows[0] and "clone_loss" in rows[1]
    assert math.isnan(rows[0]["kl"]) and not math.isnan(rows[1]["kl"])  # cloning, then PPO
    # Its policy file records the start its episodes had: LearnedOptimizer's default with it.
    assert load_policy(tmp_path / "run" / "policy.pt").initial == {"lr": 1e-1}


def test_dagger_clones_on_the_aggregate_which_a_resume_keeps(tmp_path):
    """With `clone_steps`, every cloning episode is kept and each cloning iteration takes that
    many steps on them; the aggregate is checkpointed, and dropped once PPO takes over."""

    def config(iterations):
        c = small_config(
            iterations=iterations,
            episode={"reward_reference": "tuned-cosine", "schedule": "cosine", "heads": ["lr"]},
            task_seeds=1,
        )
        c.ppo.clone_iterations, c.ppo.clone_steps = 2, 6
        meta_config._check_semantics(c)
        return c

    first = MetaTrainer(config(2), tmp_path / "a")
    first.train(log_progress=lambda s: None)
    kept = first.clone_data.episodes
    assert len(kept) == first.counters["episodes"] > 0
    assert first.version == 2 * 6  # clone_steps gradient steps per cloning iteration

    again = MetaTrainer(config(2), tmp_path / "a")
    again.resume()
    assert len(again.clone_data.episodes) == len(kept)
    for a, b in zip(again.clone_data.episodes, kept, strict=True):
        np.testing.assert_array_equal(a["obs"], b["obs"])
        assert a["info"]["tuned_lr"] == b["info"]["tuned_lr"]

    longer = MetaTrainer(config(3), tmp_path / "b")
    longer.train(log_progress=lambda s: None)
    assert longer.iteration == 3 and not longer.clone_data.episodes

    # A later stage with `init_labels` starts its aggregate as that run's, uses counted
    # afresh; a policy file, or a run that kept none, is an error naming the key.
    stage = config(2)
    stage.run.init_labels = str(tmp_path / "a" / "checkpoint.pt")
    meta_config._check_semantics(stage)
    carried = MetaTrainer(stage, tmp_path / "c")
    carried.start_labels(stage.run.init_labels)
    assert len(carried.clone_data.episodes) == len(kept)
    assert all(e["uses"] == 0 and e["version"] == 0 for e in carried.clone_data.episodes)
    np.testing.assert_array_equal(carried.clone_data.episodes[0]["obs"], kept[0]["obs"])
    for path, words in [
        (tmp_path / "a" / "policy.pt", "holds no labelled episodes"),
        (tmp_path / "b" / "checkpoint.pt", "holds no labelled episodes"),
        (tmp_path / "missing.pt", "not a readable checkpoint"),
    ]:
        with pytest.raises(ValueError, match=f"init_labels = .*{words}"):
            MetaTrainer(stage, tmp_path / "e").start_labels(path)


def test_the_level_read_learns_log_lr_over_tuned_and_a_resume_keeps_it(tmp_path):
    """With `level_coef`, cloning also fits a linear read of the recurrent state to log(lr /
    tuned lr) before each decision; the read's error falls as it trains, it is logged, and it
    is checkpointed with the learner (never in the policy file)."""
    from lhopt.meta.clone import LEVEL_CLIP, level_targets

    def config(level_coef, iterations=2):
        c = small_config(
            iterations=iterations,
            episode={"reward_reference": "tuned-cosine", "schedule": "cosine", "heads": ["lr"]},
            task_seeds=1,
        )
        c.ppo.clone_iterations, c.ppo.clone_steps, c.ppo.level_coef = iterations, 20, level_coef
        meta_config._check_semantics(c)
        return c

    trainer = MetaTrainer(config(1.0), tmp_path / "a")
    trainer.train(log_progress=lambda s: None)
    rows = [json.loads(x) for x in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert all("level_loss" in r and "level_r2" in r for r in rows)
    episodes = trainer.clone_data.episodes
    obs, priv, _, _, mask = pad(episodes)
    target = level_targets(episodes, mask.shape)
    e = episodes[0]
    n, tuned = len(e["rewards"]), e["info"]["tuned_lr"]
    expected = [math.log(x / tuned) for x in [e["info"]["initial"]["lr"], *e["info"]["lr_trace"]]]
    np.testing.assert_allclose(
        target[0, :n].numpy(), np.clip(expected[:n], -LEVEL_CLIP, LEVEL_CLIP), rtol=1e-5
    )
    assert torch.isnan(target[0, n:]).all()
    with torch.no_grad():
        read = trainer.level(trainer.policy.unroll(obs, priv, hidden=True)[2]).squeeze(-1)
    known = mask.bool() & target.isfinite()
    fitted = float(((read - target)[known] ** 2).mean())
    untrained = float(((torch.zeros_like(read) - target)[known] ** 2).mean())
    assert fitted < untrained, (fitted, untrained)  # a read, not the zero it starts near

    again = MetaTrainer(config(1.0), tmp_path / "a")
    again.resume()
    for a, b in zip(again.level.parameters(), trainer.level.parameters(), strict=True):
        assert torch.equal(a, b)
    assert "level" not in torch.load(tmp_path / "a" / "policy.pt", weights_only=False)
    plain = MetaTrainer(config(0.0), tmp_path / "b")
    assert plain.level is None and "level" not in plain.state_dict()


@pytest.mark.parametrize(
    "change, words",
    [
        ({"ppo": {"level_coef": -1.0}}, ["level_coef = -1.0", ">= 0"]),
        ({"ppo": {"level_coef": 1.0}}, ["level_coef = 1.0", "clone_iterations > 0"]),
    ],
)
def test_the_level_read_is_checked_against_the_rest_of_the_config(change, words):
    data = small_config(iterations=2).to_dict()
    for section, values in change.items():
        data[section] |= values
    with pytest.raises(ValueError) as e:
        meta_config.from_dict(data)
    assert all(w in str(e.value) for w in words), str(e.value)


def _branch_config(iterations=2):
    data = small_config(
        iterations=iterations,
        batch=6,
        task_seeds=1,
        episode={"fixed_initial": {"lr": 1e-3}, "noise_floor": 1e-5},
    ).to_dict()
    data["episode"]["branch"] = True
    data["ppo"] |= {"clone_oracle": "branch", "clone_iterations": iterations, "clone_steps": 3}
    return meta_config.from_dict(data)


def test_the_branch_oracle_learns_from_labelled_decisions_only(tmp_path):
    """The cloning loss reads the branch labels alone: logits at unlabelled decisions do not
    change it, and a batch without labels gives 0 (and no accuracy). The trainer's aggregate
    keeps only the episodes that carry a label."""
    from lhopt.control.actions import ActionSpace
    from lhopt.meta.clone import clone_loss

    config = _branch_config()
    heads = ActionSpace().heads
    policy = new_policy(config)
    rngs = [np.random.default_rng(s) for s in range(6)]
    episodes = run_episodes(policy, TaskConfig.from_dict(QUAD), [0] * 6, config.episode, rngs)
    obs, priv, _, _, mask = pad(episodes)
    with torch.no_grad():
        logits = list(policy.unroll(obs, priv)[0])
    loss, accuracy = clone_loss(logits, episodes, mask, config.ppo, 0, heads[0])
    labelled = torch.zeros(mask.shape, dtype=torch.bool)
    for i, e in enumerate(episodes):
        labelled[i, : len(e["branch"])] = torch.from_numpy(e["branch"] >= 0)
    # At most one label per group of 3 (ties carry none); from lr 1e-3 some choice wins.
    assert 1 <= int(labelled.sum()) <= 2 and math.isfinite(float(accuracy))
    noisy = [t.clone() for t in logits]
    noisy[0][~labelled] += 5 * torch.randn_like(noisy[0][~labelled])
    assert float(clone_loss(noisy, episodes, mask, config.ppo, 0, heads[0])[0]) == pytest.approx(
        float(loss)
    )
    bare = [{**e, "branch": np.full_like(e["branch"], -1)} for e in episodes]
    zero, none = clone_loss(logits, bare, mask, config.ppo, 0, heads[0])
    assert float(zero) == 0.0 and math.isnan(float(none))

    trainer = MetaTrainer(config, tmp_path / "run")
    trainer.train(log_progress=lambda s: None)
    kept = trainer.clone_data.episodes
    # Kept up to their label, with their return.
    assert kept and all((e["branch"] >= 0).sum() == 1 and e["branch"][-1] >= 0 for e in kept)
    assert all(len(e["obs"]) == len(e["rewards"]) == len(e["branch"]) for e in kept)
    assert all(
        math.isclose(e["rewards"].sum(), e["info"]["return"], rel_tol=1e-5, abs_tol=1e-6)
        for e in kept
    )
    assert trainer.counters["episodes"] >= 3 * len(kept)  # only a group's first can carry one


def test_the_keep_prior_adds_keep_on_unlabelled_decisions_only():
    """With `[ppo] keep_prior = w` the branch oracle's loss is its labels' cross-entropy plus w
    x the cross-entropy toward "keep" over the unlabelled decisions; a batch without labels is
    the prior alone, and a step on it makes "keep" more likely there."""
    from dataclasses import replace

    from lhopt.control.actions import ActionSpace
    from lhopt.meta.clone import clone_loss

    config = _branch_config()
    heads = ActionSpace().heads
    keep = heads[0].choices.index(1.0)
    policy = new_policy(config)
    rngs = [np.random.default_rng(s) for s in range(6)]
    episodes = run_episodes(policy, TaskConfig.from_dict(QUAD), [0] * 6, config.episode, rngs)
    obs, priv, _, _, mask = pad(episodes)
    logits = list(policy.unroll(obs, priv)[0])
    prior = replace(config.ppo, keep_prior=0.5)
    plain = float(clone_loss(logits, episodes, mask, config.ppo, 0, heads[0])[0].detach())
    both = float(clone_loss(logits, episodes, mask, prior, 0, heads[0])[0].detach())
    unlabelled = mask.bool().clone()
    for i, e in enumerate(episodes):
        unlabelled[i, : len(e["branch"])] &= torch.from_numpy(e["branch"] < 0)
    lg = logits[0][unlabelled]
    to_keep = torch.nn.functional.cross_entropy(lg, torch.full((len(lg),), keep))
    assert both == pytest.approx(plain + 0.5 * float(to_keep.detach()), rel=1e-5)

    bare = [{**e, "branch": np.full_like(e["branch"], -1)} for e in episodes]
    loss, accuracy = clone_loss(logits, bare, mask, prior, 0, heads[0])
    assert math.isnan(float(accuracy)) and float(loss) > 0
    m = mask.bool()
    before = torch.softmax(logits[0][m], -1)[:, keep].mean()
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.5)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        after = torch.softmax(policy.unroll(obs, priv)[0][0][m], -1)[:, keep].mean()
    assert after > before


def test_stakes_weigh_each_label_by_the_spread_of_its_branched_runs():
    """With `[ppo] clone_weight = "stakes"` the branch oracle's cross-entropy is each labelled
    decision's weighted by its `branch_stakes` (the spread of its group's returns, recorded at
    the branched decision only): equal stakes give the plain mean, and a label whose runs tied
    (stakes 0) drops out."""
    from dataclasses import replace

    from lhopt.control.actions import ActionSpace
    from lhopt.meta.clone import clone_loss

    config = _branch_config()
    heads = ActionSpace().heads
    policy = new_policy(config)
    rngs = [np.random.default_rng(s) for s in range(6)]
    config.episode.branch_margin = 0.0
    episodes = run_episodes(policy, TaskConfig.from_dict(QUAD), [0] * 6, config.episode, rngs)
    for e in episodes:  # stakes where, and only where, the first member of a group branched
        finite = np.isfinite(e["branch_stakes"])
        assert (e["branch"][finite] >= 0).all() or (e["branch_stakes"][finite] == 0).all()
        assert finite.sum() <= 1 and (e["branch_stakes"][finite] >= 0).all()
    labelled = [
        (i, int(np.flatnonzero(e["branch"] >= 0)[0]))
        for i, e in enumerate(episodes)
        if (e["branch"] >= 0).any()
    ]
    assert len(labelled) >= 2, "the test needs two labelled groups"
    obs, priv, _, _, mask = pad(episodes)
    logits = list(policy.unroll(obs, priv)[0])
    stakes = replace(config.ppo, clone_weight="stakes")
    plain = float(clone_loss(logits, episodes, mask, config.ppo, 0, heads[0])[0].detach())

    def with_stakes(values):
        out = [{**e, "branch_stakes": np.full(len(e["branch"]), np.nan)} for e in episodes]
        for (i, k), v in zip(labelled, values, strict=True):
            out[i]["branch_stakes"][k] = v
        return float(clone_loss(logits, out, mask, stakes, 0, heads[0])[0].detach())

    assert with_stakes([0.7] * len(labelled)) == pytest.approx(plain, rel=1e-5)
    (i, k), rest = labelled[0], labelled[1:]
    target = torch.tensor([int(episodes[i]["branch"][k])])
    alone = torch.nn.functional.cross_entropy(logits[0][i, k][None], target)
    assert with_stakes([1.0] + [0.0] * len(rest)) == pytest.approx(float(alone.detach()), rel=1e-5)
    with pytest.raises(ValueError, match="branch_stakes|spread"):
        bare = [{k: v for k, v in e.items() if k != "branch_stakes"} for e in episodes]
        clone_loss(logits, bare, mask, stakes, 0, heads[0])


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda c: setattr(c.ppo, "clone_oracle", "stall"), ["branch = true", "'stall'"]),
        (lambda c: setattr(c.run, "batch", 4), ["batch to a multiple of 3", "batch = 4"]),
        (lambda c: setattr(c.episode, "branch_factors", [1.0]), ["branch_factors = [1.0]"]),
        (lambda c: setattr(c.episode, "branch_factors", [0.3]), ["allowed [0.5, 0.707"]),
        (lambda c: setattr(c.episode, "branch_factors", []), ["at least one"]),
        (lambda c: setattr(c.run, "task_seeds", 0), ["task_seeds = 1", "task_seeds = 0"]),
        (lambda c: setattr(c.run, "iterations", 5), ["clone_iterations >= [run] iterations"]),
        (lambda c: setattr(c.episode, "branch_margin", -0.1), ["branch_margin = -0.1", ">= 0"]),
        (lambda c: setattr(c.episode, "branch_until", 0.0), ["branch_until = 0.0", "(0, 1]"]),
        (lambda c: setattr(c.episode, "branch_until", 1.5), ["branch_until = 1.5", "(0, 1]"]),
        (lambda c: setattr(c.ppo, "clone_steps", 0), ["clone_steps > 0"]),
    ],
)
def test_branched_episodes_are_checked_against_the_rest_of_the_config(change, words):
    config = _branch_config()
    change(config)
    with pytest.raises(ValueError) as e:
        meta_config._check_semantics(config)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_labels_of_each_branched_head_train_that_head(tmp_path):
    """With `branch_heads`, an episode's labels are choices of the head it branched
    (`info["branch_head"]`): the loss is the cross-entropy of each head's logits at its own
    labels, and the keep prior reaches each head at every decision but its own labels."""
    from dataclasses import replace

    from lhopt.control.actions import ActionSpace
    from lhopt.meta.clone import clone_loss

    config = _branch_config()
    config.episode.branch_margin = 0.0
    heads = ActionSpace().heads
    named = {"lr": (0, heads[0]), "weight_decay": (1, heads[1])}
    policy = new_policy(config)
    rngs = [np.random.default_rng(s) for s in range(6)]
    episodes = run_episodes(policy, TaskConfig.from_dict(QUAD), [0] * 6, config.episode, rngs)
    assert all(e["info"]["branch_head"] == "lr" for e in episodes)
    # the second group's labels, read as choices of the weight-decay head (0.5, 1, 2)
    episodes = [
        {**e, "info": {**e["info"], "branch_head": "weight_decay"}} if i >= 3 else e
        for i, e in enumerate(episodes)
    ]
    for e in episodes[3:]:
        e["branch"] = np.where(e["branch"] >= 0, 0, -1)  # "halve the weight decay"
    labelled = [(i, k) for i, e in enumerate(episodes) for k in np.flatnonzero(e["branch"] >= 0)]
    assert {i >= 3 for i, _ in labelled} == {False, True}, "the test needs both heads labelled"
    obs, priv, _, _, mask = pad(episodes)
    logits = list(policy.unroll(obs, priv)[0])
    loss = float(clone_loss(logits, episodes, mask, config.ppo, 0, heads[0], named)[0].detach())
    terms = []
    for i, k in labelled:
        head = 1 if i >= 3 else 0
        target = torch.tensor([int(episodes[i]["branch"][k])])
        ce = torch.nn.functional.cross_entropy(logits[head][i, k][None], target)
        terms.append(float(ce.detach()))
    assert loss == pytest.approx(np.mean(terms), rel=1e-5)
    # without the map, the weight-decay episodes are the lr head's, as before branch_heads
    lr_only = [{**e, "info": {**e["info"], "branch_head": None}} for e in episodes]
    alone = float(clone_loss(logits, lr_only, mask, config.ppo, 0, heads[0])[0].detach())
    assert alone == pytest.approx(
        float(clone_loss(logits, lr_only, mask, config.ppo, 0, heads[0], named)[0].detach())
    )
    # the keep prior: each head at every valid decision but its own labels
    prior = replace(config.ppo, keep_prior=0.5)
    both = float(clone_loss(logits, episodes, mask, prior, 0, heads[0], named)[0].detach())
    extra = 0.0
    for name, (index, head) in named.items():
        unlabelled = mask.bool().clone()
        for i, e in enumerate(episodes):
            if e["info"]["branch_head"] == name:
                unlabelled[i, : len(e["branch"])] &= torch.from_numpy(e["branch"] < 0)
        keep = torch.full((int(unlabelled.sum()),), head.keep_index)
        ce = torch.nn.functional.cross_entropy(logits[index][unlabelled], keep)
        extra += 0.5 * float(ce.detach())
    assert both == pytest.approx(loss + extra, rel=1e-5)


@pytest.mark.parametrize(
    "change, words",
    [
        (["lr", "beta"], ["branch_heads = ['lr', 'beta']", "allowed ['lr', 'weight_decay'"]),
        (["clip_fraction"], ["scale heads"]),
        (["lr", "lr"], ["distinct"]),
        ([], ["at least one"]),
    ],
)
def test_branch_heads_are_distinct_scale_heads(change, words):
    config = _branch_config()
    config.episode.branch_heads = change
    with pytest.raises(ValueError) as e:
        meta_config._check_semantics(config)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_a_branch_of_an_unknown_head_or_factor_and_a_stray_label_are_errors():
    from lhopt.control.actions import ActionSpace
    from lhopt.meta.clone import clone_loss
    from lhopt.meta.episode import _Branches

    space = ActionSpace()
    with pytest.raises(
        ValueError, match=r"factors \[0.707\] are not choices of the 'weight_decay'"
    ):
        _Branches([0], space, [0.707], ["weight_decay"])
    with pytest.raises(ValueError, match="branch head 'wd': not a head of"):
        _Branches([0], space, [0.5], ["wd"])
    config = _branch_config()
    policy = new_policy(config)
    rngs = [np.random.default_rng(s) for s in range(3)]
    episodes = run_episodes(policy, TaskConfig.from_dict(QUAD), [0] * 3, config.episode, rngs)
    episodes = [{**e, "info": {**e["info"], "branch_head": "weight_decay"}} for e in episodes]
    obs, priv, _, _, mask = pad(episodes)
    logits = list(policy.unroll(obs, priv)[0])
    with pytest.raises(ValueError, match=r"labelled for heads \['weight_decay'\]"):
        clone_loss(logits, episodes, mask, config.ppo, 0, space.heads[0])


def test_branch_heads_must_be_controlled_and_share_the_factors():
    config = _branch_config()
    config.episode.branch_heads = ["lr", "weight_decay"]
    config.episode.branch_factors = [0.5]
    meta_config._check_semantics(config)  # 0.5 is a choice of both
    config.episode.heads = ["lr"]
    with pytest.raises(ValueError, match=r"leaves fixed: add \['weight_decay'\]"):
        meta_config._check_semantics(config)
    config.episode.heads = ["lr", "weight_decay"]
    config.episode.branch_factors = [0.707]
    with pytest.raises(ValueError, match=r"branch_factors = \[0.707\].*allowed \[0.5, 2.0\]"):
        meta_config._check_semantics(config)


def test_a_policy_reads_only_the_features_of_policy_read(tmp_path):
    from lhopt.control import save_policy_file
    from lhopt.control.policy_file import actor_layout

    read = ["progress*", "stat/cos_grad_*", "val/*"]
    cfg = meta_config.from_dict(
        {**small_config().to_dict(), "policy": {"hidden": 32, "read": read}}
    )
    features = actor_layout(cfg.episode.spec)["features"]
    policy = new_policy(cfg)
    masked = [i for i, f in enumerate(features) if policy.input_mask[i] == 0]
    kept = [i for i, f in enumerate(features) if policy.input_mask[i] == 1]
    assert features.index("stat/cos_grad_update") in kept and features.index("progress") in kept
    assert (
        features.index("stat/log_grad_noise_scale") in masked
        and features.index("hparam/lr") in masked
    )
    with torch.no_grad():
        for p in policy.parameters():
            p.normal_(0, 0.3)
    obs = torch.randn(1, len(features))

    def logits(x):
        return torch.cat(policy.step(x, policy.initial_state(1))[0], -1)

    moved = obs.clone()
    moved[0, masked] += 3.0
    torch.testing.assert_close(logits(moved), logits(obs))  # what it does not read moves nothing
    moved = obs.clone()
    moved[0, kept[0]] += 3.0
    assert not torch.allclose(logits(moved), logits(obs))

    # The policy file carries the mask; a file from before the mask reads every feature.
    policy.spec = cfg.episode.spec
    save_policy_file(policy, tmp_path / "p.pt")
    assert torch.equal(load_policy(tmp_path / "p.pt").input_mask, policy.input_mask)
    old = {k: v for k, v in policy.state_dict().items() if k != "input_mask"}
    fresh = Policy.from_architecture(policy.architecture())
    fresh.load_state_dict(old)
    assert bool((fresh.input_mask == 1).all())

    # A run started from it reads what its own config says, and acts as the file did: the
    # inputs the file did not read start with no weight.
    trainer = MetaTrainer(small_config(iterations=1), tmp_path / "run")
    trainer.warm_start(tmp_path / "p.pt")
    for net in (trainer.policy, trainer.avg):
        assert bool((net.input_mask == 1).all())
    warm = trainer.policy
    torch.testing.assert_close(torch.cat(warm.step(obs, warm.initial_state(1))[0], -1), logits(obs))
    assert hash(cfg.policy) == hash(meta_config.from_dict(cfg.to_dict()).policy)

    with pytest.raises(ValueError, match=r"\[policy\] read = \['stat/nothing\*'\]"):
        meta_config.from_dict({"policy": {"read": ["progress", "stat/nothing*"]}})


def test_the_run_device_reaches_every_rollout(tmp_path):
    """`[run] device` travels in each rollout's spec to `run_episodes`: on a machine without a
    GPU, a rollout asked for one fails with the reason, as an episode error the learner logs."""
    from lhopt.meta.train import _episodes_safe

    config = meta_config.from_dict(
        {"run": {"device": "cuda:0", "task": QUAD, "batch": 2}, "episode": {"noise_floor": 1e-5}}
    )
    trainer = MetaTrainer(config, tmp_path)
    spec = trainer.next_spec()
    assert spec["device"] == "cuda:0"
    assert "device" not in MetaTrainer(meta_config.from_dict({}), tmp_path / "b").next_spec()
    if not torch.cuda.is_available():
        episodes = _episodes_safe(trainer.policy, spec, config.episode)
        assert len(episodes) == 2
        assert all("CUDA is not available" in e["error"] for e in episodes)
