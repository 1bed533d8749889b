"""What a run is before it starts: its passes over the training data, as a policy reads them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lhopt import LearnedOptimizer
from lhopt.control import load_policy
from lhopt.control.features import (
    EPOCHS_FEATURES,
    LENGTH_FEATURE,
    check_steps_per_epoch,
    run_features,
)
from lhopt.control.policy_file import ControlSpec, actor_layout
from lhopt.meta import config as meta_config
from lhopt.meta.episode import EpisodeConfig, evaluation_config, run_episode
from lhopt.tasks import FAMILIES, SUITES, TaskConfig, build_task
from lhopt.tasks.registry import _TRAIN_EXAMPLES, steps_per_epoch

# 500 training points in batches of 25: 20 steps per epoch, 3 epochs in its budget of 60
LINEAR = TaskConfig.make(
    "linear",
    dim=10,
    classes=3,
    condition=10.0,
    label_noise=0.1,
    train_samples=500,
    batch=25,
    budget=60,
)
SEQATTN = TaskConfig.make(
    "seqattn",
    problem="sort",
    vocab=6,
    length=6,
    heads=2,
    head_width=8,
    layers=1,
    dropout=0.0,
    batch=16,
    budget=40,
)


@pytest.fixture(scope="module")
def epochs_policy(tmp_path_factory, make_policy_file):
    """A small policy file that reads the run features."""
    return make_policy_file(tmp_path_factory.mktemp("epochs") / "p.pt", epochs=True)


def test_run_features_are_the_runs_length_and_epochs_and_say_when_unknown():
    def epochs(t, spe):
        f = run_features(t, spe)
        return f["run/epochs_known"], f["run/log1p_epochs"]

    assert epochs(60, 20.0) == (1.0, math.log(4.0))
    assert epochs(60, math.inf) == (1.0, 0.0)  # fresh data: nothing is passed over twice
    assert epochs(60, None) == (0.0, 0.0)
    assert epochs(600, 200.0) == epochs(60, 20.0)  # a ratio of the run's counts
    assert run_features(600, None)[LENGTH_FEATURE] == math.log(600)


@pytest.mark.parametrize("bad", [0, -3.0, math.nan, "20", True, [20]])
def test_a_bad_steps_per_epoch_is_refused_by_name(bad):
    with pytest.raises(ValueError, match=r"steps_per_epoch=.*a number > 0"):
        check_steps_per_epoch(bad)
    model = torch.nn.Linear(3, 1)
    with pytest.raises(ValueError, match="steps_per_epoch="):
        LearnedOptimizer(model.parameters(), 10, steps_per_epoch=bad)
    opt = LearnedOptimizer(model.parameters(), 10, steps_per_epoch=5)
    with pytest.raises(ValueError, match="steps_per_epoch="):
        opt.steps_per_epoch = bad
    assert opt.steps_per_epoch == 5.0  # the bad assignment left it as it was
    opt.steps_per_epoch = None
    assert opt.steps_per_epoch is None


def test_every_family_says_what_an_epoch_is():
    """One config of each family: a stream of fresh data (inf) or its training examples over
    the batch."""
    assert set(_TRAIN_EXAMPLES) == set(FAMILIES)
    teacher = TaskConfig.make(
        "teacher",
        **{**FAMILIES["teacher"][0].sample(np.random.default_rng(0)), "train_samples": 300},
    )
    extra = ("decoder", "photos", "bpr")
    sampled = {
        f: TaskConfig.make(f, **FAMILIES[f][0].sample(np.random.default_rng(0))) for f in extra
    }
    configs = {"linear": LINEAR, "seqattn": SEQATTN, "teacher": teacher, **sampled}
    for tasks in SUITES.values():
        for config in tasks.values():
            configs.setdefault(config.family, config)
    assert set(configs) == set(FAMILIES)
    streams = {"quadratic", "algorithmic", "seqattn"}
    for family, config in configs.items():
        task = build_task(config, 0)
        spe = steps_per_epoch(task)
        if family in streams:
            assert spe == math.inf, family
        else:
            assert 1 <= spe < 10_000, (family, spe)
            windows = family in ("charlm", "texts", "gpt", "decoder")  # text / context
            examples = spe * config.p["batch"]  # a count of examples, up to rounding
            assert abs(examples - round(examples)) < 1e-9 or windows, family
    assert steps_per_epoch(build_task(LINEAR, 0)) == 20.0
    assert steps_per_epoch(build_task(teacher, 0)) == 300 / teacher.p["batch"]


def test_the_layout_ends_with_the_run_features_only_when_asked(epochs_policy):
    plain, read = actor_layout(ControlSpec()), actor_layout(ControlSpec(epochs=True))
    assert read["features"] == plain["features"] + list(EPOCHS_FEATURES)
    both = actor_layout(ControlSpec(epochs=True, run_length=True))
    assert both["features"] == read["features"] + [LENGTH_FEATURE]
    assert actor_layout(ControlSpec(run_length=True))["features"][-1] == LENGTH_FEATURE
    assert "epochs" not in plain  # files made before the option keep their layout and hash
    assert "run_length" not in plain
    net = load_policy(epochs_policy)
    assert net.spec.epochs and net.obs_dim == len(read["features"])
    with pytest.raises(ValueError, match="epochs="):
        ControlSpec(epochs="yes")
    with pytest.raises(ValueError, match="run_length="):
        ControlSpec(run_length=1)


def _train(opt, task):
    for _ in range(task.budget):
        loss = task.train_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
        opt.report(train_loss=loss)


def test_meta_training_and_learned_optimizer_read_the_same_run(
    tmp_path, make_policy_file, tmp_cache
):
    """An episode tells the controller its task's steps per epoch and length; a user passing
    the same to `LearnedOptimizer` gets the same decisions, and the features carry them."""
    run = {"epochs": True, "run_length": True, "horizon_power": 0.5}
    path = make_policy_file(tmp_path / "p.pt", **run)
    net = load_policy(path)
    cfg = evaluation_config(EpisodeConfig(min_outer_steps=6, max_outer_steps=6, **run))
    ep = run_episode(net, LINEAR, 0, cfg, np.random.default_rng(0), greedy=True)
    run = [1.0, pytest.approx(math.log(4.0)), pytest.approx(math.log(60))]
    assert ep["obs"][:, -3:].tolist() == [run] * 6

    task = build_task(LINEAR, 0)
    opt = LearnedOptimizer(
        task.model.parameters(),
        total_steps=task.budget,
        val_loss_fn=task.val_loss,
        policy=path,
        decisions=6,
        model=task.model,
        steps_per_epoch=steps_per_epoch(task),
    )
    _train(opt, task)
    assert ep["info"]["lr_trace"] == [h["hparams"]["lr"] for h in opt.history]


def test_an_episode_is_told_the_epochs_with_the_configured_probability(epochs_policy, tmp_cache):
    net = load_policy(epochs_policy)
    told = []
    for seed in range(12):
        cfg = EpisodeConfig(min_outer_steps=3, max_outer_steps=3, epochs=True, epochs_known=0.5)
        ep = run_episode(net, LINEAR, seed, cfg, np.random.default_rng(seed))
        flags = set(ep["obs"][:, -2].tolist())
        assert len(flags) == 1  # told for the whole run or not at all
        told.append(flags.pop())
    assert 0 < sum(told) < len(told)
    cfg = EpisodeConfig(min_outer_steps=3, max_outer_steps=3, epochs=True, epochs_known=0.0)
    ep = run_episode(net, LINEAR, 0, cfg, np.random.default_rng(0))
    assert not ep["obs"][:, -2:].any()


def test_a_policy_without_the_run_features_ignores_steps_per_epoch(policy_file):
    """Any policy runs with `steps_per_epoch` given: one that does not read it decides as
    without it."""
    histories = []
    for spe in (None, 20):
        task = build_task(LINEAR, 0)
        opt = LearnedOptimizer(
            task.model.parameters(), task.budget, policy=policy_file, steps_per_epoch=spe
        )
        _train(opt, task)
        histories.append([h["hparams"] for h in opt.history])
    assert histories[0] == histories[1]


@pytest.mark.parametrize(
    "episode, words",
    [
        ({"epochs_known": 0.5}, "epochs_known = 0.5 is read only with epochs = true"),
        ({"epochs": True, "epochs_known": 1.5}, "epochs_known = 1.5 is not allowed"),
    ],
)
def test_the_config_checks_the_epochs_options(episode, words):
    with pytest.raises(ValueError, match=words):
        meta_config.from_dict({"episode": episode})


def test_the_horizon_scales_the_applied_lr_by_the_runs_length(tmp_path, make_policy_file):
    """`horizon_power` p: the lr CIAO applies is the base lr times the schedule's factor times
    (T / 1000)^-p, in every controller; the base lr the policy steers is left alone."""
    assert ControlSpec(horizon_power=0.5).horizon_factor(4000) == 0.5
    assert ControlSpec(horizon_power=0.5).horizon_factor(1000) == 1.0
    assert ControlSpec().horizon_factor(4000) == 1.0
    for bad in (-0.1, 3.0, "0.5", True, math.nan):
        with pytest.raises(ValueError, match="horizon_power="):
            ControlSpec(horizon_power=bad)
    assert "horizon_power" not in actor_layout(ControlSpec())
    path = make_policy_file(tmp_path / "h.pt", horizon_power=0.5)
    plain = make_policy_file(tmp_path / "plain.pt")
    assert load_policy(path).spec.horizon_power == 0.5
    factors = []
    for policy in (plain, path):
        opt = LearnedOptimizer(torch.nn.Linear(3, 1).parameters(), 4000, policy=policy)
        opt.controller.before_step(1999)
        factors.append(opt.param_groups[0]["lr_factor"])
        assert opt.param_groups[0]["lr"] == 1e-3  # the base lr: the start, unscaled
        state = opt.state_dict()
    assert factors[1] == pytest.approx(0.5 * factors[0])
    with pytest.raises(ValueError, match="total_steps=4000, this optimizer's is 1000"):
        LearnedOptimizer(torch.nn.Linear(3, 1).parameters(), 1000, policy=path).load_state_dict(
            state
        )
    resumed = LearnedOptimizer(torch.nn.Linear(3, 1).parameters(), 4000, policy=path)
    resumed.load_state_dict(state)  # its horizon factor comes back with it
    resumed.controller.before_step(1999)
    assert resumed.param_groups[0]["lr_factor"] == factors[1]


def test_the_epochs_power_scales_the_applied_lr_by_the_runs_passes_over_its_data(
    tmp_path, make_policy_file
):
    """`epochs_power` q: the applied lr is also scaled by (1 + E / 10)^-q, E = T /
    `steps_per_epoch`; nothing where that is not given or infinite; setting it between steps
    takes effect at the next step and is kept in the state."""
    spec = ControlSpec(horizon_power=0.5, epochs_power=0.5)
    assert spec.horizon_factor(4000, 40) == pytest.approx(0.5 * 11**-0.5)  # 100 epochs
    assert spec.horizon_factor(4000) == spec.horizon_factor(4000, math.inf) == 0.5
    assert ControlSpec(epochs_power=1.0).horizon_factor(1000, 100) == 0.5  # 10 epochs
    for bad in (-0.1, 3.0, "0.5", True, math.nan):
        with pytest.raises(ValueError, match="epochs_power="):
            ControlSpec(epochs_power=bad)
    assert "epochs_power" not in actor_layout(ControlSpec(horizon_power=0.5))
    path = make_policy_file(tmp_path / "e.pt", epochs_power=1.0)
    assert load_policy(path).spec.epochs_power == 1.0
    model = torch.nn.Linear(3, 1)
    opt = LearnedOptimizer(model.parameters(), 1000, policy=path)
    model(torch.ones(1, 3)).sum().backward()
    with pytest.warns(UserWarning, match="steps_per_epoch is not set"):
        opt.step()

    def factor():
        opt.controller.before_step(499)
        return opt.param_groups[0]["lr_factor"]

    untold = factor()
    opt.steps_per_epoch = 100  # 10 epochs: halved
    assert factor() == pytest.approx(0.5 * untold)
    resumed = LearnedOptimizer(model.parameters(), 1000, policy=path)
    resumed.load_state_dict(opt.state_dict())
    resumed.controller.before_step(499)
    assert resumed.param_groups[0]["lr_factor"] == factor()
    with pytest.raises(ValueError, match="steps_per_epoch=-1"):
        opt.steps_per_epoch = -1
    assert opt.steps_per_epoch == 100 and factor() == pytest.approx(0.5 * untold)  # as it was
    opt.steps_per_epoch = math.inf  # fresh data: no passes over it
    assert factor() == untold
    with pytest.raises(ValueError, match="steps_per_epoch=0"):
        resumed.load_state_dict(
            {
                **opt.state_dict(),
                "controller": {**opt.state_dict()["controller"], "steps_per_epoch": 0},
            }
        )
    with pytest.raises(ValueError, match="steps_per_epoch=0"):
        spec.horizon_factor(1000, 0)


def test_a_horizon_that_scales_the_lr_past_its_bound_is_refused_by_name(tmp_path, make_policy_file):
    path = make_policy_file(tmp_path / "h2.pt", horizon_power=2.0)
    model = torch.nn.Linear(3, 1)
    with pytest.raises(ValueError, match=r"total_steps=40 with horizon_power=2.*lr_factor allows"):
        LearnedOptimizer(model.parameters(), 40, policy=path)
    opt = LearnedOptimizer(model.parameters(), 1000, policy=path)
    state = opt.controller.state_dict()
    with pytest.raises(ValueError, match="total_steps=40"):
        opt.controller.load_state_dict({**state, "total_steps": 40})
    assert opt.total_steps == 1000 and opt.controller.horizon == 1.0  # left as it was


def test_a_resumed_run_keeps_the_steps_per_epoch_it_was_told(epochs_policy):
    model = torch.nn.Linear(3, 1)
    opt = LearnedOptimizer(model.parameters(), 100, policy=epochs_policy, steps_per_epoch=10)
    resumed = LearnedOptimizer(model.parameters(), 100, policy=epochs_policy)
    resumed.load_state_dict(opt.state_dict())
    assert resumed.steps_per_epoch == 10.0
    assert check_steps_per_epoch(np.int64(7)) == 7.0  # numpy counts are numbers too


def test_counting_a_tasks_steps_per_epoch_leaves_the_global_rng_alone():
    """The bench counts them while a run is set up (its model built, its dropout masks still to
    draw): a run must not depend on whether the count was cached."""
    from lhopt.tasks.registry import config_steps_per_epoch

    config = TaskConfig.make("linear", **{**LINEAR.p, "train_samples": 121})  # not cached yet
    torch.manual_seed(5)
    state = torch.get_rng_state()
    assert config_steps_per_epoch(config) == 121 / LINEAR.p["batch"]
    assert torch.equal(torch.get_rng_state(), state)


def test_the_benchmark_tells_a_learned_optimizer_its_tasks_steps_per_epoch():
    from lhopt.bench import runner

    job = {"optimizer": "lhopt", "config": LINEAR.to_dict()}
    driver = runner._make(job)(torch.nn.Linear(3, 1), 60, None)
    assert driver.optimizer.steps_per_epoch == 20.0
    plain = runner._make({"optimizer": "adamw", "config": LINEAR.to_dict()})
    assert plain is runner.optimizers.get("adamw").make  # baselines are not told
