"""Batched episodes: N seeds of one task as one computation decide and train as each alone."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lhopt.control import Controller, load_policy, save_policy_file
from lhopt.control.policy_file import ControlSpec, actor_layout
from lhopt.meta import config as meta_config
from lhopt.meta.episode import EpisodeConfig, run_episode, run_episodes
from lhopt.meta.train import MetaTrainer
from lhopt.optim import CIAO
from lhopt.tasks import TaskConfig, build_task
from lhopt.tasks.batched import BatchedTask, batchable

QUAD = TaskConfig.make("quadratic", dim=20, condition=100.0, noise=0.1, batch=8, budget=200)
MLP = TaskConfig.make(
    "mnist1d",
    arch="mlp",
    depth=2,
    width=32,
    norm="layer",
    activation="tanh",
    dropout=0.0,
    loss="ce",
    batch=32,
    epochs=1,
    budget=120,
)
CNN = TaskConfig.make(**{**MLP.to_dict(), "arch": "cnn"})
GRU = TaskConfig.make(
    "algorithmic",
    problem="xor",
    cell="gru",
    layers=1,
    hidden=16,
    dropout=0.0,
    length=4,
    batch=32,
    budget=100,
)


# above the gate width that runs batched (lhopt.tasks.algorithmic.MAX_BATCHED_GATE_WIDTH)
TEACHER = TaskConfig.make(
    "teacher",
    problem="classification",
    inputs=5,
    skew=0.2,
    teacher_width=8,
    noise=0.3,
    classes=3,
    depth=2,
    width=16,
    activation="tanh",
    norm="layer",
    train_samples=120,
    batch=16,
    budget=200,
)
TEACHER_REG = TaskConfig.make(**{**TEACHER.to_dict(), "problem": "regression", "norm": "none"})
LSTM = TaskConfig.make(**{**GRU.to_dict(), "cell": "lstm", "hidden": 32})
BN_MLP = TaskConfig.make(**{**MLP.to_dict(), "norm": "batch", "loss": "huber"})


LSTM2 = TaskConfig.make(**{**GRU.to_dict(), "problem": "addition", "cell": "lstm", "layers": 2})
RNN2 = TaskConfig.make(**{**GRU.to_dict(), "cell": "rnn", "layers": 2, "hidden": 24})


@pytest.mark.parametrize(
    "config",
    [QUAD, MLP, BN_MLP, GRU, LSTM2, RNN2],
    ids=["quadratic", "mlp", "mlp-batchnorm", "gru", "lstm-2-layers", "rnn-2-layers"],
)
def test_a_batched_task_gives_each_member_its_own_losses_and_gradients(config, tmp_cache):
    seeds = [4, 1, 9]
    batched = BatchedTask(config, seeds)
    alone = [build_task(config, s) for s in seeds]
    for _ in range(3):  # the batches drawn stay in step
        losses = batched.train_loss()
        expected = [t.train_loss() for t in alone]
    torch.testing.assert_close(losses.detach(), torch.stack(expected).detach())
    losses.sum().backward()
    for i, task in enumerate(alone):
        task.model.zero_grad()
        expected[i].backward()
        for name, p in task.model.named_parameters():
            torch.testing.assert_close(batched.params[name].grad[i], p.grad)
    for i, task in enumerate(alone):  # buffers too (batch-norm statistics)
        for name, b in task.model.named_buffers():
            torch.testing.assert_close(batched.buffers[name][i], b)
    np.testing.assert_allclose(batched.val_losses(), [t.val_loss() for t in alone], rtol=1e-5)


def test_a_batched_recurrent_task_applies_dropout_between_layers_only_in_training(tmp_cache):
    config = TaskConfig.make(**{**RNN2.to_dict(), "dropout": 0.3})
    batched = BatchedTask(config, [2, 5])
    alone = [build_task(config, s) for s in (2, 5)]
    np.testing.assert_allclose(batched.val_losses(), [t.val_loss() for t in alone], rtol=1e-5)
    task, inputs = batched.tasks[0], batched.tasks[0].eval_inputs("val")
    first = task.stacked_loss(batched._stacked, inputs)
    again = task.stacked_loss(batched._stacked, inputs)
    assert not torch.allclose(first, again)  # masks drawn in training mode


def test_a_member_module_saves_and_restores_its_slice_only(tmp_cache):
    batched = BatchedTask(MLP, [0, 1])
    member = batched.member(1)
    saved = {k: v.clone() for k, v in member.state_dict().items()}
    before0 = {k: v[0].clone() for k, v in batched.params.items()}
    with torch.no_grad():
        for p in batched.params.values():
            p.add_(1.0)
    member.load_state_dict(saved)
    for name, p in batched.params.items():
        torch.testing.assert_close(p[1], saved[name])
        torch.testing.assert_close(p[0], before0[name] + 1.0)
    bad = {**saved, "0.weight": saved["0.weight"][:1]}
    with pytest.raises(ValueError, match="0.weight"):
        member.load_state_dict(bad)


def test_configs_without_a_stacked_form_are_refused_by_name():
    assert batchable(QUAD) and batchable(MLP) and batchable(GRU)
    assert not batchable(LSTM) and not batchable(CNN)
    with pytest.raises(ValueError, match="'algorithmic' family has no stacked form"):
        BatchedTask(LSTM, [0, 1])


def test_a_recurrent_layer_without_a_stacked_form_is_an_error():
    from lhopt.tasks.stacked import stacked_recurrent

    rnn = torch.nn.GRU(2, 4, batch_first=True, bidirectional=True)
    state = {f"rnn.{k}": torch.stack([v, v]) for k, v in rnn.state_dict().items()}
    with pytest.raises(TypeError, match="GRU has a stacked form only with batch_first=True, one"):
        stacked_recurrent(rnn, state, "rnn.", torch.zeros(2, 3, 5, 2))


def test_a_layer_without_a_stacked_form_is_an_error():
    from lhopt.tasks.stacked import stacked_forward

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Softmax(-1))
    state = {k: torch.stack([v, v]) for k, v in model.state_dict().items()}
    with pytest.raises(TypeError, match="layer 1 .Softmax. has no stacked form"):
        stacked_forward(model, state, torch.zeros(2, 3, 4))


@pytest.mark.parametrize(
    "config",
    [QUAD, MLP, GRU, TEACHER, TEACHER_REG],
    ids=["quadratic", "mlp", "gru", "teacher", "teacher-regression"],
)
def test_a_member_of_a_batch_decides_and_trains_as_the_episode_alone(
    config, policy_file, tmp_cache
):
    """Fixed policy, seeds and greedy actions: the same decisions and validation curves; the
    losses agree to float32 rounding (the batched kernels sum in another order). The features
    read the noise statistic with a floor (`ControlSpec.noise_floor`): without it, a run's
    first step gives rounding error that another summation order changes by orders of
    magnitude, enough to flip a decision."""
    policy = load_policy(policy_file)
    cfg = EpisodeConfig(min_outer_steps=8, max_outer_steps=8, noise_floor=1e-5)
    seeds = [0, 3, 5]
    batch = run_episodes(
        policy,
        config,
        seeds,
        cfg,
        [np.random.default_rng(100 + s) for s in seeds],
        greedy=True,
        outer_steps=8,
    )
    assert len(batch) == len(seeds)
    for seed, member in zip(seeds, batch, strict=True):
        alone = run_episode(
            policy, config, seed, cfg, np.random.default_rng(100 + seed), True, outer_steps=8
        )
        assert member["info"]["seed"] == seed
        assert member["info"]["initial"] == alone["info"]["initial"]
        np.testing.assert_array_equal(member["actions"], alone["actions"])
        np.testing.assert_allclose(member["obs"], alone["obs"], rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(member["rewards"], alone["rewards"], rtol=1e-4, atol=1e-5)
        assert member["info"]["final_val"] == pytest.approx(alone["info"]["final_val"], rel=1e-4)
        assert member["info"]["lr_trace"] == pytest.approx(alone["info"]["lr_trace"])
    # Different seeds and perturbations: the members are not copies of one another.
    assert len({m["info"]["final_val"] for m in batch}) == len(seeds)


def test_a_batch_of_an_unbatchable_family_runs_its_episodes_one_by_one(policy_file, tmp_cache):
    policy = load_policy(policy_file)
    cfg = EpisodeConfig(min_outer_steps=4, max_outer_steps=4)
    rngs = [np.random.default_rng(s) for s in (0, 1)]
    batch = run_episodes(policy, LSTM, [0, 1], cfg, rngs, greedy=True, outer_steps=4)
    alone = run_episode(policy, LSTM, 1, cfg, np.random.default_rng(1), True, outer_steps=4)
    np.testing.assert_array_equal(batch[1]["obs"], alone["obs"])
    np.testing.assert_array_equal(batch[1]["rewards"], alone["rewards"])


def test_meta_training_with_batches_counts_every_member(tmp_path, tmp_cache):
    cfg = meta_config.from_dict(
        {
            "run": {
                "workers": 0,
                "iterations": 1,
                "batch": 3,
                "min_new_transitions": 20,
                "task": QUAD.to_dict(),
            },
            "policy": {"hidden": 16},
            "ppo": {"batch": 16, "buffer": 64, "batches_per_iteration": 1},
            "episode": {"min_outer_steps": 4, "max_outer_steps": 4, "noise_floor": 1e-5},
        }
    )
    trainer = MetaTrainer(cfg, tmp_path / "run")
    trainer.train(log_progress=lambda s: None)
    assert trainer.counters["episodes"] % 3 == 0 and trainer.counters["episodes"] >= 3
    assert trainer.counters["transitions"] == 4 * trainer.counters["episodes"]
    assert trainer.counters["errors"] == 0


def test_the_noise_floor_makes_the_first_steps_noise_statistic_exact():
    """On a first step the noise is 0 (v_hat = g^2, m_hat = g): what CIAO computes is rounding
    error, which the floor replaces by the floor itself."""
    values = []
    for floor in (0.0, 1e-5):
        torch.manual_seed(0)
        p = torch.nn.Parameter(torch.randn(300))
        opt = CIAO([p], feature_every=1)
        opt.noise_floor = floor
        p.grad = torch.randn(300)
        opt.step()
        values.append(opt.pop_step_stats()["log_grad_noise_scale"])
    assert values[0] < -30  # rounding error of a cancellation
    assert values[1] == pytest.approx(math.log(1e-5), rel=1e-5)


def test_a_policy_file_keeps_its_noise_floor(policy_file, tmp_path):
    net = load_policy(policy_file)
    assert net.spec.noise_floor == 0.0
    save_policy_file(net, tmp_path / "p.pt", spec=ControlSpec(noise_floor=1e-5))
    again = load_policy(tmp_path / "p.pt")
    assert again.spec.noise_floor == 1e-5
    assert actor_layout(again.spec) != actor_layout(net.spec)
    opt = CIAO([torch.nn.Parameter(torch.zeros(3))])
    Controller(again, opt, total_steps=100)
    assert opt.noise_floor == 1e-5
    with pytest.raises(ValueError, match="noise_floor"):
        ControlSpec(noise_floor=1.5)


def test_the_batch_key_is_checked():
    with pytest.raises(ValueError, match=r"\[run\] batch"):
        meta_config.from_dict({"run": {"batch": 0}})
    with pytest.raises(ValueError, match=r"needs \[episode\] noise_floor > 0"):
        meta_config.from_dict({"run": {"batch": 4}})
    meta_config.from_dict({"run": {"batch": 4}, "episode": {"noise_floor": 1e-5}})


def test_a_failing_member_run_alone_fails_alone(policy_file, monkeypatch):
    import lhopt.meta.train as train_mod

    real = train_mod.run_episodes

    def flaky(policy, config, seeds, *args, **kwargs):
        if seeds == [1]:
            raise RuntimeError("inner run crashed")
        return real(policy, config, seeds, *args, **kwargs)

    monkeypatch.setattr(train_mod, "run_episodes", flaky)
    spec = {"config": LSTM.to_dict(), "seed": 0, "rng_seed": 0, "seeds": [0, 1, 2]}
    spec["rng_seeds"] = [0, 1, 2]
    cfg = EpisodeConfig(min_outer_steps=4, max_outer_steps=4)
    out = train_mod._episodes_safe(load_policy(policy_file), spec, cfg)
    assert ["error" in e for e in out] == [False, True, False]
    monkeypatch.setattr(train_mod, "run_episodes", lambda *a, **k: 1 / 0)
    spec["config"] = QUAD.to_dict()
    out = train_mod._episodes_safe(load_policy(policy_file), spec, cfg)
    assert len(out) == 3 and all("ZeroDivisionError" in e["error"] for e in out)


LSTM_DROP = TaskConfig.make(**{**LSTM.to_dict(), "dropout": 0.3})
MLP_DROP = TaskConfig.make(**{**MLP.to_dict(), "dropout": 0.3})


@pytest.mark.parametrize(
    "config", [QUAD, LSTM_DROP, MLP_DROP], ids=["batched", "serial", "batchable-dropout"]
)
def test_branched_groups_are_one_run_until_their_branch_and_label_it(
    config, policy_file, tmp_cache
):
    """The members of a group take its first's sampled actions until one decision, where the
    first keeps the lr and the others halve and double it; all keep every hyperparameter
    after. Until then they see the same features and validation losses (dropout masks
    included). The first's state there is labelled with the choice that ended lowest by the
    margin, or none; no other decision carries one."""
    policy = load_policy(policy_file)
    cfg = EpisodeConfig(noise_floor=1e-5, branch=True, lr_perturbation=30.0)
    rngs = [np.random.default_rng(s) for s in range(20, 29)]
    batch = run_episodes(policy, config, [0] * 9, cfg, rngs, outer_steps=6)
    space = Controller(policy, CIAO([torch.zeros(1, requires_grad=True)]), 60, 6).space
    lr_head = space.heads[0]
    choices = [lr_head.keep_index, lr_head.choices.index(0.5), lr_head.choices.index(2.0)]
    for j in range(3):
        group = batch[3 * j : 3 * j + 3]
        at = group[0]["info"]["branch_at"]
        assert all(e["info"]["branch_at"] == at for e in group)
        assert all(e["info"]["initial"] == group[0]["info"]["initial"] for e in group)
        assert all((e["branch"] == -1).all() for e in group[1:])
        assert all(i == at or x == -1 for i, x in enumerate(group[0]["branch"]))
        trace = group[0]["info"]["lr_trace"]
        before = trace[at - 1] if at else group[0]["info"]["initial"]["lr"]
        for e, factor in zip(group, (1.0, 0.5, 2.0), strict=True):
            np.testing.assert_array_equal(e["actions"][:at], group[0]["actions"][:at])
            np.testing.assert_allclose(
                e["obs"][: at + 1], group[0]["obs"][: at + 1], rtol=1e-4, atol=1e-5
            )
            np.testing.assert_allclose(e["val"][: at + 1], group[0]["val"][: at + 1], rtol=1e-5)
            assert e["info"]["lr_trace"][:at] == pytest.approx(trace[:at])
            after = e["info"]["lr_trace"][at:]
            assert after == pytest.approx([before * factor] * len(after))
            assert all(tuple(x) == space.keep for x in e["actions"][at + 1 :])
        scores = [e["info"]["return"] for e in group]
        best = int(np.argmax(scores))
        wins = all(scores[best] - s > cfg.branch_margin for i, s in enumerate(scores) if i != best)
        assert group[0]["branch"][at] == (choices[best] if wins else -1)
    # The groups sampled their own prefixes.
    assert len({tuple(e["actions"].ravel()) for e in batch[::3]}) == 3


def test_a_group_branches_the_head_drawn_for_it(policy_file, tmp_cache):
    """With `branch_heads = ["lr", "weight_decay"]` each group moves one head, drawn for it:
    at its branch the others scale that head's hyperparameter by 0.5 and 2 and leave the other
    one as the first member has it; the label is a choice of that head."""
    policy = load_policy(policy_file)
    cfg = EpisodeConfig(noise_floor=1e-5, branch=True, branch_heads=["lr", "weight_decay"])
    rngs = [np.random.default_rng(s) for s in range(40, 58)]
    batch = run_episodes(policy, QUAD, [0] * 18, cfg, rngs, outer_steps=4)
    space = Controller(policy, CIAO([torch.zeros(1, requires_grad=True)]), 60, 6).space
    seen = set()
    for j in range(6):
        group = batch[3 * j : 3 * j + 3]
        name = group[0]["info"]["branch_head"]
        seen.add(name)
        assert all(e["info"]["branch_head"] == name for e in group)
        other = "weight_decay" if name == "lr" else "lr"
        ends = [e["info"]["final_hparams"] for e in group]
        assert ends[1][name] == pytest.approx(0.5 * ends[0][name])
        assert ends[2][name] == pytest.approx(2.0 * ends[0][name])
        assert ends[1][other] == pytest.approx(ends[0][other])
        assert ends[2][other] == pytest.approx(ends[0][other])
        head = next(h for h in space.heads if h.hparam == name)
        at = group[0]["info"]["branch_at"]
        label = group[0]["branch"][at]
        assert label == -1 or head.choices[label] in (0.5, 1.0, 2.0)
    assert seen == {"lr", "weight_decay"}


@pytest.mark.parametrize("until, last", [(0.25, 1), (0.5, 3), (1.0, 7)])
def test_the_branch_is_drawn_among_the_first_share_of_decisions(
    until, last, policy_file, tmp_cache
):
    """With 8 decisions, `branch_until` 0.25 branches at decision 0 or 1, 0.5 at 0 to 3, and 1
    anywhere; over 12 groups each draw reaches its share's last decision or near it."""
    policy = load_policy(policy_file)
    cfg = EpisodeConfig(noise_floor=1e-5, branch=True, branch_until=until)
    rngs = [np.random.default_rng(s) for s in range(36)]
    batch = run_episodes(policy, QUAD, [0] * 36, cfg, rngs, outer_steps=8)
    ats = [e["info"]["branch_at"] for e in batch[::3]]
    assert max(ats) <= last and max(ats) >= last - 1, ats


def test_branched_episodes_need_groups_of_one_seed(policy_file, tmp_cache):
    policy = load_policy(policy_file)
    cfg = EpisodeConfig(noise_floor=1e-5, branch=True)
    for seeds in ([0, 0], [0, 0, 0, 0], [0, 0, 1]):
        rngs = [np.random.default_rng(s) for s in seeds]
        with pytest.raises(ValueError, match="groups of 3 members of one seed"):
            run_episodes(policy, QUAD, seeds, cfg, rngs, outer_steps=4)


def test_branched_groups_of_an_unbatchable_family_run_through_the_trainer(policy_file):
    """The rollout path keeps a branched batch together where it would otherwise run members
    one by one (a group is one computation's)."""
    from lhopt.meta import train as train_mod

    spec = {"config": LSTM.to_dict(), "seeds": [0] * 6, "rng_seeds": list(range(6)), "seed": 0}
    spec["rng_seed"] = 0
    cfg = EpisodeConfig(noise_floor=1e-5, branch=True, min_outer_steps=4, max_outer_steps=4)
    out = train_mod._episodes_safe(load_policy(policy_file), spec, cfg)
    assert not any("error" in e for e in out), [e.get("error") for e in out]
    assert [e["info"]["branch_at"] is not None for e in out] == [True] * 6
    assert all((e["branch"] == -1).all() for i, e in enumerate(out) if i % 3)


def test_a_branch_label_is_the_choice_that_beat_every_other_by_the_margin():
    """The label is the choice of the highest return where it beats every other by the margin
    (returns score a diverged run as worst); otherwise there is none."""
    from lhopt.control.actions import ActionSpace
    from lhopt.meta.episode import _Branches

    space = ActionSpace()
    head = space.heads[0]
    branches = _Branches([1], space, [0.5, 2.0])

    def label(*returns):
        out = branches.labels(list(returns), [3, 3, 3], 0.02)
        assert all((x == -1).all() for x in out[1:])
        return list(out[0])

    keep, cut, up = head.keep_index, head.choices.index(0.5), head.choices.index(2.0)
    assert label(-3.0, 0.1, -0.2) == [-1, cut, -1]
    assert label(0.3, 0.1, -3.0) == [-1, keep, -1]
    assert label(-0.5, -0.4, 0.2) == [-1, up, -1]
    assert label(-0.5, 0.2, 0.19) == [-1, -1, -1]  # within the margin
    assert label(-3.0, -3.0, -3.0) == [-1, -1, -1]
    assert branches.labels([0.0, 1.0, 0.0], [1, 1, 1], 0.02)[0].tolist() == [-1]  # ended early

    # branch_ties = "keep": keep where no move beats it by the margin.
    def tie(*returns):
        return branches.labels(list(returns), [3, 3, 3], 0.02, "keep")[0].tolist()

    assert tie(-0.5, 0.2, 0.19) == [-1, -1, -1]  # two moves tie, both well above keep
    assert tie(0.19, 0.2, -1.0) == [-1, keep, -1]  # a move gains less than the margin
    assert tie(-3.0, -3.0, -3.0) == [-1, keep, -1]
    assert tie(-3.0, 0.1, -0.2) == [-1, cut, -1]  # a win is a win

    # What the branched decision was worth: the spread of the group's returns, NaN elsewhere.
    stakes = branches.stakes([-0.5, 0.2, 0.19], [3, 3, 3])
    assert stakes[0][1] == pytest.approx(0.7) and np.isnan(stakes[0][[0, 2]]).all()
    assert all(np.isnan(x).all() for x in stakes[1:])
    assert np.isnan(branches.stakes([0.0, 1.0, 0.0], [1, 1, 1])[0]).all()  # ended early
    assert branches.labels([0.0, 0.0, 0.0], [1, 1, 1], 0.02, "keep")[0].tolist() == [-1]


@pytest.mark.parametrize("seeds", [[0], [0, 3]], ids=["alone", "batched"])
def test_lr_units_are_the_task_at_a_scaled_lr(seeds, policy_file, tmp_cache):
    """An episode in lr units c (`EpisodeConfig.lr_scale`) from lr x is the episode from lr c x
    in the task's own units, decision for decision: the features see the applied step, not c;
    the reward is the same; the tuned lr reads c times smaller in the policy's units."""
    policy = load_policy(policy_file)
    c, x = 4.0, 1e-3
    base = dict(
        min_outer_steps=6,
        max_outer_steps=6,
        noise_floor=1e-5,
        reward_reference="tuned-cosine",
        schedule="cosine",
    )
    scaled_cfg = EpisodeConfig(**base, fixed_initial={"lr": x}, lr_scale=[c, c])
    own_cfg = EpisodeConfig(**base, fixed_initial={"lr": c * x})

    def run(cfg):
        rngs = [np.random.default_rng(7 + s) for s in seeds]
        return run_episodes(policy, QUAD, seeds, cfg, rngs, greedy=True, outer_steps=6)

    for scaled, own in zip(run(scaled_cfg), run(own_cfg), strict=True):
        np.testing.assert_array_equal(scaled["actions"], own["actions"])
        np.testing.assert_allclose(scaled["obs"], own["obs"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(scaled["priv"], own["priv"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(scaled["rewards"], own["rewards"], rtol=1e-4, atol=1e-6)
        a, b = scaled["info"], own["info"]
        assert a["best_val"] == pytest.approx(b["best_val"], rel=1e-5)
        assert a["lr_scale"] == c and b["lr_scale"] == 1.0
        assert a["tuned_lr"] == pytest.approx(b["tuned_lr"] / c)
        assert [c * lr for lr in a["lr_trace"]] == pytest.approx(b["lr_trace"])


def test_lr_units_are_drawn_per_group_and_shared_by_its_members(policy_file, tmp_cache):
    policy = load_policy(policy_file)
    cfg = EpisodeConfig(
        min_outer_steps=4,
        max_outer_steps=4,
        noise_floor=1e-5,
        branch=True,
        reward_reference="tuned-cosine",
        lr_scale=[1.0, 30.0],
    )
    seeds = [0, 0, 0, 1, 1, 1]
    out = run_episodes(policy, QUAD, seeds, cfg, [np.random.default_rng(s) for s in range(6)])
    scales = [e["info"]["lr_scale"] for e in out]
    assert scales[0] == scales[1] == scales[2] and scales[3] == scales[4] == scales[5]
    assert scales[0] != scales[3] and all(1.0 <= s <= 30.0 for s in scales)
    # Evaluation runs the tasks in their own units.
    from lhopt.meta.episode import evaluation_config

    assert evaluation_config(cfg).lr_scale == [1.0, 1.0]


def _fixed_start_runner(policy_file, monkeypatch):
    """(run(fixed_initial, seeds): greedy 4-decision episodes of `MLP` from that start, the
    list each batched run appends to)."""
    import lhopt.meta.episode as episode_mod

    policy = load_policy(policy_file)
    base = dict(min_outer_steps=4, max_outer_steps=4, noise_floor=1e-5)

    def run(fixed_initial, seeds):
        cfg = EpisodeConfig(**base, fixed_initial=fixed_initial)
        rngs = [np.random.default_rng(7 + s) for s in seeds]
        return run_episodes(policy, MLP, seeds, cfg, rngs, greedy=True, outer_steps=4)

    batches = []
    real = episode_mod._Batched
    monkeypatch.setattr(episode_mod, "_Batched", lambda *a: batches.append(1) or real(*a))
    return run, batches


def test_a_start_on_lamb_runs_batched_as_each_member_alone(policy_file, tmp_cache, monkeypatch):
    """`fixed_initial` may set a hyperparameter the episodes never perturb. LAMB's trust ratio
    runs in the batch (BatchedCIAO has it), each member deciding and training as it does
    alone; a start on a path BatchedCIAO lacks (AdaMax) runs the members one at a time."""
    run, batches = _fixed_start_runner(policy_file, monkeypatch)
    lamb = {"lr": 1e-2, "lamb_power": 1.0}
    adam = {"lr": 1e-2}
    adamax = {"lr": 1e-3, "adamax": True}
    together = run(lamb, [0, 3])
    assert batches == [1]
    alone = [run(lamb, [s])[0] for s in (0, 3)]
    for a, b, c in zip(together, alone, run(adam, [0, 3]), strict=True):
        assert a["info"]["initial"]["lamb_power"] == 1.0
        np.testing.assert_array_equal(a["actions"], b["actions"])
        np.testing.assert_allclose(a["rewards"], b["rewards"], rtol=1e-4, atol=1e-5)
        assert a["info"]["best_val"] == pytest.approx(b["info"]["best_val"], rel=1e-4)
        assert a["info"]["best_val"] != pytest.approx(c["info"]["best_val"], rel=1e-3)
    batches.clear()
    serial = run(adamax, [0, 3])
    assert batches == [] and all(e["info"]["initial"]["adamax"] for e in serial)
    assert serial[1]["info"]["best_val"] == run(adamax, [3])[0]["info"]["best_val"]


@pytest.mark.parametrize(
    ("option", "value"),
    [("lamb_free_below", 1.0), ("lamb_norm_floor", 10.0), ("lamb_norm_ceiling", 0.01)],
)
def test_a_start_with_a_trust_ratio_option_runs_batched_as_each_member_alone(
    option, value, policy_file, tmp_cache, monkeypatch
):
    """`lamb_free_below`, `lamb_norm_floor` or `lamb_norm_ceiling` in `fixed_initial` runs in
    the batch, each member training as it does alone, and the option changes the run
    (`lamb_free_below` at 1 frees each member's matrix below the median of its three; the floor
    at 10 is above every matrix's norm, the ceiling at 0.01 below it)."""
    run, batches = _fixed_start_runner(policy_file, monkeypatch)
    lamb = {"lr": 1e-2, "lamb_power": 1.0}
    start = {**lamb, option: value}
    together = run(start, [0, 3])
    assert batches == [1]
    alone = [run(start, [s])[0] for s in (0, 3)]
    plain = run(lamb, [0, 3])
    for a, b, c in zip(together, alone, plain, strict=True):
        assert a["info"]["initial"][option] == value
        np.testing.assert_array_equal(a["actions"], b["actions"])
        assert a["info"]["best_val"] == pytest.approx(b["info"]["best_val"], rel=1e-4)
        assert a["info"]["best_val"] != pytest.approx(c["info"]["best_val"], rel=1e-6)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def exact_cuda(monkeypatch):
    """float32 matrix products and cuDNN kernels in full precision (no TF32), as on the CPU."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)


@cuda
@pytest.mark.parametrize("seeds", [[0, 3, 5], [3]], ids=["batched", "alone"])
@pytest.mark.parametrize(
    "config", [QUAD, MLP, BN_MLP, GRU], ids=["quadratic", "mlp", "mlp-batchnorm", "gru"]
)
def test_an_episode_on_cuda_decides_and_trains_as_on_the_cpu(
    config, seeds, policy_file, tmp_cache, exact_cuda
):
    """The tasks on the GPU draw the batches they draw on the CPU: fixed policy, seeds and
    greedy actions give the same decisions and validation curves, to float32 rounding (the
    kernels sum in another order; the noise floor as in the batched test above)."""
    policy = load_policy(policy_file)
    cfg = EpisodeConfig(min_outer_steps=8, max_outer_steps=8, noise_floor=1e-5)

    def run(device):
        rngs = [np.random.default_rng(100 + s) for s in seeds]
        return run_episodes(
            policy, config, seeds, cfg, rngs, greedy=True, outer_steps=8, device=device
        )

    torch.cuda.reset_accumulated_memory_stats()
    on_gpu = run("cuda")
    assert torch.cuda.memory_stats()["allocation.all.allocated"] > 0  # the tasks were there
    for gpu, cpu in zip(on_gpu, run("cpu"), strict=True):
        np.testing.assert_array_equal(gpu["actions"], cpu["actions"])
        np.testing.assert_allclose(gpu["val"], cpu["val"], rtol=1e-4)
        # Under batch norm the layers before it are scale-free, their updates near 0, and the
        # mean log |update| reads their rounding: up to 0.023 apart on an H200.
        loose = np.zeros(gpu["obs"].shape[1], dtype=bool)
        if config.p.get("norm") == "batch":
            loose[actor_layout(cfg.spec)["features"].index("stat/mean_log_abs_update")] = True
        np.testing.assert_allclose(
            gpu["obs"][:, ~loose], cpu["obs"][:, ~loose], rtol=1e-3, atol=1e-4
        )
        np.testing.assert_allclose(gpu["obs"][:, loose], cpu["obs"][:, loose], rtol=1e-3, atol=5e-2)
        np.testing.assert_allclose(gpu["rewards"], cpu["rewards"], rtol=1e-4, atol=1e-5)
        assert gpu["info"]["final_val"] == pytest.approx(cpu["info"]["final_val"], rel=1e-4)
        assert gpu["info"]["lr_trace"] == pytest.approx(cpu["info"]["lr_trace"])


@cuda
def test_branched_groups_with_dropout_on_cuda_share_their_masks_until_the_branch(
    policy_file, tmp_cache
):
    """Dropout on the GPU draws from its own generator: a group's members (run one after
    another, `_Serial`) replay its state, so they stay one run until their branch."""
    policy = load_policy(policy_file)
    cfg = EpisodeConfig(noise_floor=1e-5, branch=True, lr_perturbation=30.0)
    rngs = [np.random.default_rng(s) for s in range(27, 30)]
    torch.cuda.reset_accumulated_memory_stats()
    group = run_episodes(policy, MLP_DROP, [0] * 3, cfg, rngs, outer_steps=6, device="cuda")
    assert torch.cuda.memory_stats()["allocation.all.allocated"] > 0  # the tasks were there
    at = group[0]["info"]["branch_at"]
    assert at == 4  # drawn as on the CPU: four periods of training to compare
    for e in group[1:]:
        np.testing.assert_array_equal(e["actions"][:at], group[0]["actions"][:at])
        np.testing.assert_allclose(e["val"][: at + 1], group[0]["val"][: at + 1], rtol=1e-5)


def test_a_device_is_checked_by_name():
    from lhopt.tasks.base import check_device

    assert check_device(None) == torch.device("cpu") == check_device("cpu")
    with pytest.raises(ValueError, match="device 'gpu' is not a torch device"):
        check_device("gpu")
    with pytest.raises(ValueError, match="device 'meta': tasks run on cpu or cuda only"):
        check_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda': CUDA is not available here"):
            check_device("cuda")
    with pytest.raises(ValueError, match="device 'gpu'"):
        run_episodes(None, QUAD, [0], EpisodeConfig(), [np.random.default_rng(0)], device="gpu")


def test_a_family_that_cannot_move_runs_on_the_cpu_with_a_warning(monkeypatch):
    import lhopt.tasks.base as base
    import lhopt.tasks.registry as registry
    from lhopt.tasks import FAMILIES, task_device
    from lhopt.tasks.quadratic import QuadraticTask

    gpu = torch.device("cuda", 0)  # as check_device gives it on a machine with one
    monkeypatch.setattr(registry, "check_device", lambda device: gpu)
    assert task_device(QUAD, "cuda") == gpu
    shapes = TaskConfig.make("shapes", **FAMILIES["shapes"][0].sample(np.random.default_rng(0)))
    with pytest.warns(UserWarning, match="'shapes' family cannot leave the CPU"):
        assert task_device(shapes, "cuda") == torch.device("cpu")
    monkeypatch.setattr(base, "check_device", lambda device: gpu)
    monkeypatch.setattr(QuadraticTask, "movable", False)
    with pytest.raises(ValueError, match="'quadratic' family run on the CPU only, not cuda:0"):
        build_task(QUAD, 0).to("cuda")


def test_the_throughput_benchmark_names_a_bad_device(capsys, monkeypatch):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parent.parent / "benchmarks" / "meta_throughput.py"
    spec = importlib.util.spec_from_file_location("meta_throughput", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr("sys.argv", ["meta_throughput.py", "--device", "nonsense"])
    with pytest.raises(SystemExit) as exit_info:
        module.main()
    assert exit_info.value.code == 2
    assert "argument --device: device 'nonsense' is not a torch device" in capsys.readouterr().err


@pytest.mark.parametrize(
    "family", ["quadratic", "mnist1d", "algorithmic", "linear", "seqattn", "teacher"]
)
def test_a_movable_task_moves_every_tensor_its_losses_read(family, monkeypatch, tmp_cache):
    """On the 'meta' device (shapes, no data; allowed here for the test) a moved task holds no
    CPU tensor, and the batches it draws land there too: what a GPU needs, checked without one.
    (The language-model family moves the same way; its corpus is a download, so not here.)"""
    import lhopt.tasks.base as base
    import lhopt.tasks.mnist1d as mnist1d
    from lhopt.tasks import FAMILIES

    meta = torch.device("meta")
    monkeypatch.setattr(base, "check_device", lambda device: meta)
    monkeypatch.setattr(mnist1d, "check_device", lambda device: meta)
    monkeypatch.setattr(mnist1d, "_ON_DEVICE", {})
    schema, cls = FAMILIES[family]
    assert cls.movable
    config = TaskConfig.make(family, **schema.sample(np.random.default_rng(3)))
    task = build_task(config, 0).to("meta")

    def tensors(value):
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, dict):
            for v in value.values():
                yield from tensors(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                yield from tensors(v)

    held = list(tensors(vars(task))) + list(task.model.parameters()) + list(task.model.buffers())
    assert held and all(t.device == meta for t in held)
    if cls.batchable(config):  # a stacked form: its batches are drawn apart from the loss
        assert all(t.device == meta for t in task.next_batch())
    assert task.train_loss().device == meta


def test_episodes_without_decay_on_vectors_run_one_by_one_with_a_no_decay_group(
    policy_file, tmp_cache
):
    from lhopt.optim.groups import split_vectors

    model = build_task(MLP, 0).model
    groups = split_vectors(model.parameters())
    assert [p.dim() > 1 for p in groups[0]["params"]] == [True] * len(groups[0]["params"])
    assert groups[1]["weight_decay"] == 0.0 and all(p.dim() == 1 for p in groups[1]["params"])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    quad = build_task(QUAD, 0).model.parameters()
    assert split_vectors(quad)[0]["weight_decay"] == 0.0  # vectors only
    opt = CIAO(groups, weight_decay=0.1)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]

    policy = load_policy(policy_file)
    rngs = lambda: [np.random.default_rng(s) for s in (0, 1)]  # noqa: E731
    cfg = EpisodeConfig(min_outer_steps=4, max_outer_steps=4, no_decay_vectors=True)
    batch = run_episodes(policy, MLP, [0, 1], cfg, rngs(), greedy=True, outer_steps=4)
    alone = run_episode(policy, MLP, 1, cfg, np.random.default_rng(1), True, outer_steps=4)
    np.testing.assert_array_equal(batch[1]["obs"], alone["obs"])  # the serial path, exactly
    np.testing.assert_array_equal(batch[1]["rewards"], alone["rewards"])
    plain = EpisodeConfig(min_outer_steps=4, max_outer_steps=4)
    decayed = run_episode(policy, MLP, 1, plain, np.random.default_rng(1), True, outer_steps=4)
    assert alone["info"]["final_val"] != decayed["info"]["final_val"]
    assert meta_config.from_dict({"episode": {"no_decay_vectors": True}}).episode.no_decay_vectors
    with pytest.raises(ValueError, match="no_decay_vectors"):
        meta_config.from_dict({"episode": {"no_decay_vectors": 1}})
