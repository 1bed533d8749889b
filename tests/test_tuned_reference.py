"""The control problem measured against the practitioner's schedule: the tuned-cosine reward,
the schedule under the policy, the progress embedding, and policy files that record them."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import lhopt
from lhopt.control import ActionSpace, FeatureEngine, load_policy, save_policy_file
from lhopt.control.features import PROGRESS_TAUS
from lhopt.control.policy_file import ControlSpec, actor_layout, layout_hash
from lhopt.curves.drivers import TUNED_LR_GRID
from lhopt.meta.config import MetaConfig, from_dict
from lhopt.meta.episode import (
    WIDE_LR_GRID,
    EpisodeConfig,
    bracketed_lr,
    reward_reference,
    run_episode,
    tuned_cosine,
)
from lhopt.meta.reward import TunedCosine, terminal_rewards
from lhopt.meta.train import new_policy
from lhopt.optim import schedules
from lhopt.tasks import TaskConfig

# A policy file made before files recorded a schedule: stage 6's (shipped until stage 15).
CONSTANT = Path(__file__).resolve().parents[1] / "runs" / "default-stage6" / "policy-0010.pt"

T = 100
STEPS = list(range(0, T + 1, 10))


def cosine_runs(final: float) -> dict:
    """A scheduled baseline whose T run falls linearly to `final`, and longer runs lower."""
    curve = [2.0 - (2.0 - final) * s / T for s in STEPS]
    return {
        1.0: (STEPS, curve),
        1.5: ([int(s * 1.5) for s in STEPS], [v - 0.1 for v in curve]),
        2.0: ([2 * s for s in STEPS], [v - 0.2 for v in curve]),
    }


def test_the_tuned_reference_scores_as_the_benchmark_measures():
    ref = TunedCosine(1e-3, cosine_runs(1.0), T)
    assert ref.log_speedup(1.0) == pytest.approx(0.0)  # as good as the tuned schedule at T
    assert ref.log_speedup(1.5) == pytest.approx(math.log(0.5))  # reached half-way by it
    assert ref.log_speedup(0.9) == pytest.approx(math.log(1.5))  # its 1.5 T run gets there
    assert ref.log_speedup(0.5) == pytest.approx(math.log(2.0))  # never: capped at 2
    extended = []
    lazy = TunedCosine(
        1e-3, {1.0: cosine_runs(1.0)[1.0]}, T, lambda m: extended.append(m) or cosine_runs(1.0)[m]
    )
    assert lazy.log_speedup(1.5) == pytest.approx(math.log(0.5)) and extended == []
    assert lazy.log_speedup(0.9) == pytest.approx(math.log(1.5)) and extended == [1.5, 2.0]
    assert ref.log_speedup(math.nan) == -3.0
    assert terminal_rewards(ref, [1.8, 1.2, 1.0], 3.0) == [0.0, 0.0, pytest.approx(0.0)]
    assert terminal_rewards(ref, [1.8, 1.5, 2.0], 3.0)[-1] == pytest.approx(math.log(0.5))
    assert terminal_rewards(ref, [1.8, 0.9, math.nan], 3.0) == [0.0, 0.0, -3.0]


class RaiseAndHold:
    """A scripted policy: doubles the lr at its first `raises` decisions, then keeps."""

    def __init__(self, raises: int) -> None:
        self.space, self.raises = ActionSpace(), raises

    def initial_state(self):
        return 0

    def act(self, obs, state, generator=None, greedy=False):
        action = list(self.space.keep)
        if state < self.raises:
            action[0] = self.space.heads[0].choices.index(2.0)
        return tuple(action), 0.0, state + 1


# Small data: the validation loss turns up within the budget, where a decay (or a lower lr) pays.
SMALL_DATA = TaskConfig.make(
    "mnist1d",
    arch="mlp",
    depth=2,
    width=32,
    norm="none",
    activation="relu",
    dropout=0.0,
    loss="ce",
    batch=32,
    epochs=3,
    train_samples=500,
    budget=200,
)


def test_raising_the_lr_and_holding_it_scores_below_the_tuned_schedule(tmp_cache):
    """On a small-data task a decay (or a lower lr) pays; a policy that only raises the lr and
    holds it ends worse than the tuned cosine schedule: below 0."""
    cfg = EpisodeConfig(
        min_outer_steps=10,
        max_outer_steps=10,
        lr_perturbation=1,
        other_perturbation=1,
        reward_reference="tuned-cosine",
    )
    ep = run_episode(RaiseAndHold(3), SMALL_DATA, 0, cfg, np.random.default_rng(0))
    assert ep["info"]["lr_trace"][-1] == pytest.approx(8e-3)
    assert ep["info"]["return"] < 0
    assert ep["rewards"][:-1].tolist() == [0.0] * 9  # only the end is scored
    ref = tuned_cosine(SMALL_DATA, 0)
    assert ref.lr in (1e-4, 3e-4, 1e-3, 3e-3, 1e-2) and set(ref.runs) == {1.0}
    ref.log_speedup(0.0)  # a loss the T run never reaches: the longer runs are needed
    assert set(ref.runs) == {1.0, 1.5, 2.0} and ref.runs[2.0][0][-1] == 2 * 200
    assert ep["info"]["return"] == pytest.approx(ref.log_speedup(ep["info"]["best_val"]))


@pytest.mark.parametrize(
    "best, tried",
    [
        (1e-3, TUNED_LR_GRID),  # inside the grid: nothing added
        (1e-1, TUNED_LR_GRID + (3e-2, 1e-1, 3e-1)),  # past the top: until a larger lr is worse
        (3e-5, (3e-5, 1e-5) + TUNED_LR_GRID),  # past the bottom
        (1e2, TUNED_LR_GRID + (3e-2, 1e-1, 3e-1, 1.0)),  # at most the wide grid's end
    ],
)
def test_a_bracketed_tuning_goes_on_past_the_end_its_best_lr_is_at(best, tried):
    asked = []

    def curve(lr):
        asked.append(lr)
        return [5.0, (math.log10(lr) - math.log10(best)) ** 2]

    lr, curves = bracketed_lr(curve)
    assert set(TUNED_LR_GRID) <= set(WIDE_LR_GRID)
    assert sorted(asked) == sorted(tried) and set(curves) == set(tried)
    assert lr == min(best, 1.0)


def test_the_bracketed_reference_is_tuned_where_the_grid_is_too_narrow(tmp_cache):
    """A short quadratic wants more than the grid's largest lr: the bracketed reference finds
    it, ends lower than the benchmark's grid, and is scored the same way."""
    task = TaskConfig.make("quadratic", dim=10, condition=100.0, noise=0.1, batch=64, budget=100)
    plain, wide = tuned_cosine(task, 0), tuned_cosine(task, 0, bracketed=True)
    assert plain.lr == 1e-2 and wide.lr == 3e-1  # interior: 1.0 was tried, and is worse
    assert wide.runs[1.0][1][-1] < plain.runs[1.0][1][-1]
    cfg = EpisodeConfig(reward_reference="tuned-cosine-bracketed")
    assert from_dict({"episode": {"reward_reference": "tuned-cosine-bracketed"}})
    assert reward_reference(task, 0, cfg).lr == wide.lr


def test_the_progress_embedding_is_appended_and_squashed():
    space = ActionSpace()
    plain = FeatureEngine(space.hparam_kinds, space.encoding_names)
    engine = FeatureEngine(space.hparam_kinds, space.encoding_names, progress_taus=PROGRESS_TAUS)
    assert engine.names[: plain.size] == plain.names
    assert engine.names[plain.size :] == tuple(f"progress/tanh@{t:g}" for t in PROGRESS_TAUS)
    engine.reset({"lr": 1e-3})
    f = engine.observe(
        progress=0.5,
        step_stats={},
        train_loss=1.0,
        hparams={"lr": 1e-3},
        prev_action=space.encode(space.keep),
        registers=[(False, None, None)] * 3,
    )
    emb = f[plain.size :]
    assert emb == pytest.approx([math.tanh(10 * (0.5 - t)) for t in PROGRESS_TAUS], abs=1e-6)
    with pytest.raises(ValueError, match="progress_taus"):
        FeatureEngine(space.hparam_kinds, space.encoding_names, progress_taus=(math.nan,))


def test_policy_files_record_their_schedule_and_features(tmp_path):
    cfg = from_dict({"episode": {"schedule": "cosine", "progress_taus": list(PROGRESS_TAUS)}})
    net = new_policy(cfg)
    assert net.obs_dim == len(actor_layout(cfg.episode.spec)["features"])
    path = tmp_path / "p.pt"
    save_policy_file(net, path)
    loaded = load_policy(path)
    assert loaded.spec == ControlSpec("cosine", PROGRESS_TAUS)
    assert load_policy(CONSTANT).spec == ControlSpec()  # files without one: the defaults
    assert layout_hash(actor_layout(loaded.spec)) != layout_hash()
    data = torch.load(path, weights_only=True)
    torch.save({**data, "layout": {**data["layout"], "schedule": "step"}}, tmp_path / "q.pt")
    with pytest.raises(ValueError, match="another feature/action layout"):
        load_policy(tmp_path / "q.pt")
    with pytest.raises(ValueError, match=r"\[episode\] schedule 'step' is not allowed"):
        from_dict({"episode": {"schedule": "step"}})
    with pytest.raises(ValueError, match="reward_reference"):
        from_dict({"episode": {"reward_reference": "prodigy"}})
    assert MetaConfig().episode.spec == ControlSpec()


def test_schedule_shapes():
    assert schedules.get("constant")(7, 100) == 1.0
    cos = schedules.get("cosine")
    assert cos(1, 100) == pytest.approx(0.2) and cos(5, 100) == 1.0
    assert cos(100, 100) == pytest.approx(0.0, abs=1e-12) and cos(150, 100) == 0.0
    assert cos(52, 100) == pytest.approx(0.5 * (1 + math.cos(math.pi * 47 / 95)))
    lin = schedules.get("linear")
    assert lin(1, 100) == pytest.approx(0.2) and lin(5, 100) == 1.0
    assert lin(100, 100) == 0.0 and lin(150, 100) == 0.0
    assert lin(52, 100) == pytest.approx(1 - 47 / 95)
    assert lin(30, 100) < cos(30, 100) and lin(80, 100) > cos(80, 100)
    with pytest.raises(ValueError, match="schedule 'step' is not allowed"):
        schedules.get("step")


def test_the_learned_optimizer_runs_the_policys_schedule_under_its_base_lr(tmp_path):
    cfg = from_dict({"episode": {"schedule": "cosine"}})
    path = tmp_path / "cosine.pt"
    save_policy_file(new_policy(cfg), path)
    model = torch.nn.Linear(4, 1)
    opt = lhopt.LearnedOptimizer(model.parameters(), total_steps=40, policy=path)
    factors = []
    for _ in range(40):
        loss = model(torch.ones(8, 4)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        opt.report(train_loss=loss)
        factors.append(opt.param_groups[0]["lr_factor"])
    assert factors == [schedules.warmup_cosine(t, 40) for t in range(1, 41)]
    assert opt.hparams[0]["lr"] == opt.history[-1]["hparams"]["lr"]  # the base: the policy's
    with pytest.raises(ValueError, match="trained with schedule 'cosine'"):
        lhopt.LearnedOptimizer(model.parameters(), total_steps=40, policy=path, schedule="constant")
    with pytest.raises(ValueError, match="trained with schedule 'constant'"):
        lhopt.LearnedOptimizer(
            model.parameters(), total_steps=40, policy=CONSTANT, schedule="cosine"
        )
    with pytest.raises(ValueError, match="schedule 'step' is not allowed"):
        lhopt.LearnedOptimizer(model.parameters(), total_steps=40, schedule="step")
    plain = lhopt.LearnedOptimizer(
        model.parameters(), total_steps=40, policy=CONSTANT, schedule="constant"
    )
    assert plain.controller.spec == ControlSpec()


def test_a_policy_warm_started_with_more_features_acts_as_before(tmp_path):
    """Features appended to the layout (a progress embedding) start with no influence: a
    policy file without them, widened, takes the file's actions."""
    cfg = from_dict(
        {
            "run": {"workers": 0, "task_seeds": 2, "task_pool": 4},
            "policy": {"hidden": 256, "keep_bias": 2.0},
            "episode": {"schedule": "cosine", "progress_taus": list(PROGRESS_TAUS)},
        }
    )
    from lhopt.meta.train import MetaTrainer

    trainer = MetaTrainer(cfg, tmp_path)
    trainer.warm_start(CONSTANT)
    shipped = load_policy(CONSTANT)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        obs = torch.randn(shipped.obs_dim, generator=g) * 3
        wide = torch.cat([obs, torch.randn(len(PROGRESS_TAUS), generator=g)])
        a, logp, _ = shipped.act(obs, shipped.initial_state(), greedy=True)
        b, logq, _ = trainer.avg.act(wide, trainer.avg.initial_state(), greedy=True)
        assert a == b and logp == pytest.approx(logq, abs=1e-5)
    assert {trainer.next_spec()["seed"] for _ in range(20)} <= {0, 1}
