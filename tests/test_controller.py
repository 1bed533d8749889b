"""One controller for meta-training and deployment: same decisions, same registers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lhopt import LearnedOptimizer
from lhopt.control import decision_steps, load_policy
from lhopt.meta.episode import EpisodeConfig, evaluation_config, run_episode
from lhopt.tasks import TaskConfig, build_task

# meta-training's test task, with its T of 200 steps
QUAD = TaskConfig.make("quadratic", dim=20, condition=100.0, noise=0.1, batch=8, budget=200)
TRACE = Path(__file__).parent / "data" / "shipped_policy_decisions.json"


@pytest.mark.parametrize("policy", ["default", "file"])
def test_meta_training_and_learned_optimizer_take_the_same_decisions(
    policy, policy_file, tmp_cache
):
    path = "default" if policy == "default" else policy_file
    config = QUAD
    net = load_policy(path)
    spec = net.spec  # the episode runs under the schedule and features the policy was trained with
    cfg = evaluation_config(
        EpisodeConfig(
            min_outer_steps=10,
            max_outer_steps=10,
            schedule=spec.schedule,
            progress_taus=list(spec.progress_taus),
            noise_floor=spec.noise_floor,
            heads=list(spec.heads),
            epochs=spec.epochs,
            run_length=spec.run_length,
            horizon_power=spec.horizon_power,
            fixed_initial=dict(net.initial),  # the start LearnedOptimizer takes from the file
        )
    )
    ep = run_episode(net, config, 0, cfg, np.random.default_rng(0), greedy=True)
    assert ep["info"]["outer_steps"] == 10

    task = build_task(config, 0)
    opt = LearnedOptimizer(
        task.model.parameters(),
        total_steps=task.budget,
        val_loss_fn=task.val_loss,
        policy=path,
        decisions=10,
        model=task.model,
    )
    for _ in range(task.budget):
        loss = task.train_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
        opt.report(train_loss=loss)
    assert ep["info"]["lr_trace"] == [h["hparams"]["lr"] for h in opt.history]
    assert ep["info"]["final_hparams"] == {
        k: opt.hparams[0][k] for k in ep["info"]["final_hparams"]
    }
    unmoved = {k: v for k, v in net.initial.items() if k not in ep["info"]["final_hparams"]}
    assert all(opt.hparams[0][k] == v for k, v in unmoved.items())  # the file's start
    chosen = [tuple(h["action"].values()) for h in opt.history]
    heads = opt.controller.space.heads
    assert chosen == [
        tuple(h.choices[a] for h, a in zip(heads, row, strict=False))
        for row in ep["actions"].tolist()
    ]
    assert len({c[0] for c in chosen}) > 1 or policy == "default"  # the file's policy acts


def test_a_controller_refuses_a_spec_whose_features_its_policy_cannot_read():
    from lhopt.control.controller import Controller
    from lhopt.control.policy_file import ControlSpec
    from lhopt.optim import CIAO

    net = load_policy("default")
    opt = CIAO(nn.Linear(3, 1).parameters())
    other = ControlSpec(schedule="constant")  # no progress embedding: 12 features fewer
    with pytest.raises(ValueError, match="trained with") as err:
        Controller(net, opt, 100, spec=other)
    assert "81 features" in str(err.value) and "reads 93" in str(err.value)
    assert Controller(net, opt, 100, spec=net.spec).spec == net.spec  # its own is fine
    assert Controller(net, opt, 100).spec == net.spec


def test_lr_units_multiply_the_schedules_factor_and_are_checked():
    from lhopt.control.controller import Controller
    from lhopt.optim import CIAO

    net = load_policy("default")
    opt = CIAO(nn.Linear(3, 1).parameters())
    for bad in (0.0, -2.0, float("nan")):
        with pytest.raises(ValueError, match=f"lr_units={bad!r}.*> 0"):
            Controller(net, opt, 100, lr_units=bad)
    plain, scaled = Controller(net, opt, 100), Controller(net, opt, 100, lr_units=4.0)
    plain.before_step(50)
    factor = opt.param_groups[0]["lr_factor"]
    scaled.before_step(50)
    assert factor > 0 and opt.param_groups[0]["lr_factor"] == 4.0 * factor


def test_the_shipped_policy_decides_as_recorded():
    """Decisions of the shipped policy on small fixed runs, recorded when it was shipped:
    refactors must not change them (a new shipped policy records them again)."""
    recorded = json.loads(TRACE.read_text())
    for key, expected in recorded.items():
        seed, with_val = int(key[4]), key.endswith("-val")
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 1))
        g = torch.Generator().manual_seed(seed)
        data = [
            (torch.randn(16, 6, generator=g), torch.randn(16, 1, generator=g)) for _ in range(120)
        ]
        xv, yv = torch.randn(64, 6, generator=g), torch.randn(64, 1, generator=g)

        def val(m=model, x=xv, y=yv):
            return nn.functional.mse_loss(m(x), y).item()

        fn = val if with_val else None
        opt = LearnedOptimizer(model.parameters(), total_steps=120, val_loss_fn=fn)
        for x, y in data:
            loss = nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            opt.report(train_loss=loss)
        got = [
            {
                "step": h["step"],
                "action": h["action"],
                "register": h["register"],
                "hparams": h["hparams"],
            }
            for h in opt.history
        ]
        assert [r["action"] for r in got] == [r["action"] for r in expected], key
        assert [r["register"] for r in got] == [r["register"] for r in expected], key
        for a, b in zip(got, expected, strict=True):
            assert a["hparams"] == pytest.approx(b["hparams"], rel=1e-12), key


def test_registers_restore_buffers_when_given_the_model(policy_file):
    from lhopt.control.learned import _CIAOState

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))
    opt = LearnedOptimizer(model.parameters(), total_steps=40, policy=policy_file, model=model)
    x = torch.randn(32, 4)

    def train_steps(n):
        for _ in range(n):
            loss = model(x).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            opt.report(train_loss=loss)

    train_steps(3)
    registers, target = opt.controller.registers, _CIAOState(opt)
    registers.apply("save", 0, opt._module, target)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    train_steps(5)
    assert not torch.equal(model[1].running_mean, saved["1.running_mean"])
    assert registers.apply("load", 0, opt._module, target)
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), k  # batch-norm statistics included


def test_a_model_must_hold_the_optimized_parameters(policy_file):
    model, other = nn.Linear(3, 1), nn.Linear(3, 1)
    with pytest.raises(ValueError, match="model= must hold every parameter"):
        LearnedOptimizer(other.parameters(), total_steps=40, policy=policy_file, model=model)
    with pytest.raises(ValueError, match="model=3 is not allowed"):
        LearnedOptimizer(model.parameters(), total_steps=40, policy=policy_file, model=3)
    opt = LearnedOptimizer(model.parameters(), total_steps=40, policy=policy_file, model=model)
    with pytest.raises(ValueError, match="model= must hold every parameter"):
        opt.add_param_group({"params": other.parameters()})
    assert len(opt.param_groups) == 1  # the refused group was not added


def test_decision_steps_spread_k_decisions_over_the_run_at_most_one_per_four_steps():
    assert decision_steps(100, 4) == [0, 25, 50, 75]
    assert decision_steps(10, 20) == [0, 5]  # capped at T / 4
    assert decision_steps(3, 20) == [0]
    assert decision_steps(7, 3) == [0]
    assert decision_steps(120, 20) == list(range(0, 120, 6))


def _overfit_controller(total_steps=100, gap=0.2, model=None, opt=None, cut=0.0):
    import dataclasses

    from lhopt.control.controller import Controller
    from lhopt.optim import CIAO

    net = load_policy("default")
    model = model or nn.Linear(3, 1)
    opt = opt or CIAO(model.parameters(), lr=0.03)
    spec = dataclasses.replace(net.spec, overfit_gap=gap, fallback_cut=cut)
    return Controller(net, opt, total_steps, spec=spec), model, opt


def _train_a_little(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)


def test_a_growing_generalisation_gap_starts_the_run_over_at_a_tenth_of_the_lr():
    from lhopt.control.controller import OVERFIT_CUT

    c, model, opt = _overfit_controller()
    first = {k: v.clone() for k, v in model.state_dict().items()}
    c.before_step(10)
    plain = opt.param_groups[0]["lr_factor"]
    c.decide(0, model, train_loss=None, val_loss=1.0)
    _train_a_little(model)
    c.decide(5, model, train_loss=0.5, val_loss=0.6)  # gap 0.25: one is not enough
    assert c.restarts == 0 and c.history[-1]["register"] != "start over"
    c.registers.save(0, model, opt)
    _train_a_little(model)
    d = c.decide(10, model, train_loss=0.3, val_loss=0.65)  # 0.88, val up, train down: start
    assert c.restarts == 1 and c.history[-1]["register"] == "start over"
    assert d.register == ("start over", None) and np.isfinite(d.logp)  # PPO can read it
    assert all(torch.equal(v, first[k]) for k, v in model.state_dict().items())
    assert not any(filled for filled, _, _ in c.registers.info())
    assert c.history[-1]["hparams"]["lr"] == pytest.approx(0.03)  # the action not carried out
    c.before_step(10)
    assert opt.param_groups[0]["lr_factor"] == pytest.approx(OVERFIT_CUT * plain)


def test_starting_over_needs_a_gap_that_grows_early_with_a_validation_loss():
    cases = {  # (train, val) at decisions 0, 5, 10
        "a spike": [(None, 1.0), (0.5, 0.6), (0.6, 0.9)],  # 0.25, 0.75; both rose
        "no validation loss": [(1.0, None), (0.5, None), (0.3, None)],
        "none at the first decision": [(None, None), (0.9, 1.0), (0.5, 0.6), (0.3, 0.65)],
        "small": [(None, 1.0), (0.5, 0.55), (0.3, 0.35)],  # 0.11 then 0.08
        "validation loss still falling": [(None, 1.0), (0.5, 0.6), (0.3, 0.55)],  # 0.25, 0.56
    }
    for name, losses in cases.items():
        c, model, _ = _overfit_controller()
        for i, (t, v) in enumerate(losses):
            c.decide(5 * i, model, train_loss=t, val_loss=v)
        assert c.restarts == 0, name
    c, model, _ = _overfit_controller(total_steps=20)  # decisions 0, 5, 10 pass 30% of T
    for step, (t, v) in zip((0, 5, 10), [(None, 1.0), (0.5, 0.6), (0.3, 0.65)], strict=True):
        c.decide(step, model, train_loss=t, val_loss=v)
    assert c.restarts == 0 and c._start is None  # the copy of the first state is freed
    c, model, _ = _overfit_controller(total_steps=100)
    c.decision_steps = [0, 25, 50, 75]  # one decision before 30% of T: the rule cannot fire
    c.decide(0, model, train_loss=None, val_loss=1.0)
    assert c._start is None  # so no copy is taken
    c, model, _ = _overfit_controller(gap=0.0)  # off
    for step, (t, v) in zip((0, 5, 10), [(None, 1.0), (0.5, 0.6), (0.3, 0.65)], strict=True):
        c.decide(step, model, train_loss=t, val_loss=v)
    assert c.restarts == 0 and c._start is None


def test_starting_over_happens_at_most_twice_and_survives_a_resume():
    from lhopt.control.controller import OVERFIT_RESTARTS

    c, model, opt = _overfit_controller(total_steps=1000)
    first = {k: v.clone() for k, v in model.state_dict().items()}
    c.decide(0, model, train_loss=None, val_loss=1.0)
    step = 0
    for _ in range(OVERFIT_RESTARTS + 1):
        for t, v in [(0.5, 0.6), (0.3, 0.65)]:
            _train_a_little(model)
            step += 50
            c.decide(step, model, train_loss=t, val_loss=v)
        if step == 100:  # resume mid-way into a fresh controller
            state = c.state_dict()
            c, _, _ = _overfit_controller(total_steps=1000, model=model, opt=opt)
            c.load_state_dict(state)
            assert c.restarts == 1
    assert c.restarts == OVERFIT_RESTARTS  # the third growing gap is left alone
    assert c._start is None and c.history[-1]["restarts"] == OVERFIT_RESTARTS  # copy freed
    _train_a_little(model)
    assert all(torch.allclose(v, first[k] + 3) for k, v in model.state_dict().items())


RISING = ((0.5, 0.6), (0.45, 0.65), (0.4, 0.7), (0.35, 0.75))


def _late_overfit(c, model, first_step=40, losses=RISING):
    """Decisions 0, then every 10 steps from `first_step` (past 30% of T = 100): the
    validation loss at its best 0.6 at the first of `losses`, then (by default) overfitting:
    gaps 0.25, 0.5, 0.75 and 1 of the gain 0.4, the validation loss rising three times in a
    row, the training loss falling."""
    c.decide(0, model, train_loss=None, val_loss=1.0)
    best = None
    for i, (t, v) in enumerate(losses):
        _train_a_little(model)
        c.decide(first_step + 10 * i, model, train_loss=t, val_loss=v)
        if i == 0:
            best = {k: v.clone() for k, v in model.state_dict().items()}
    return best


def test_a_run_that_overfits_late_falls_back_to_its_best_state_at_a_lower_lr():
    c, model, opt = _overfit_controller(cut=0.3)
    c.before_step(60)
    plain = opt.param_groups[0]["lr_factor"]
    best = _late_overfit(c, model)
    assert c.fallbacks == 1 and c.restarts == 0 and c.history[-1]["fallbacks"] == 1
    assert all(torch.equal(v, best[k]) for k, v in model.state_dict().items())
    c.before_step(60)
    assert opt.param_groups[0]["lr_factor"] == pytest.approx(0.3 * plain)
    # off without the cut: the same losses change nothing
    c, model, opt = _overfit_controller(cut=0.0)
    first = {k: v.clone() for k, v in model.state_dict().items()}
    _late_overfit(c, model)
    assert c.fallbacks == 0 and c._best is None and c.history[-1]["fallbacks"] == 0
    # the weights are the run's own (four steps of +1 from the first): nothing came back
    assert all(torch.allclose(v, first[k] + 4) for k, v in model.state_dict().items())


def test_falling_back_needs_an_overfitting_run_past_the_window_at_most_twice():
    from lhopt.control.controller import FALLBACKS

    cases = {  # (train, val) at decisions 40, 50, 60, 70 after (None, 1.0) at 0
        "both rose": ((0.5, 0.6), (0.6, 0.65), (0.7, 0.7), (0.8, 0.75)),
        "still falling": ((0.5, 0.6), (0.3, 0.55), (0.2, 0.5), (0.1, 0.45)),
        "small": ((0.5, 0.55), (0.49, 0.56), (0.485, 0.565), (0.48, 0.566)),  # gaps <= 0.2
        "no validation loss": ((0.5, None), (0.4, None), (0.3, None), (0.2, None)),
        "rose twice": ((0.5, 0.6), (0.45, 0.65), (0.4, 0.7), (0.35, 0.68)),
        "down from a spike": ((0.5, 0.6), (0.45, 0.9), (0.4, 0.8), (0.35, 0.7)),
    }
    for name, losses in cases.items():
        c, model, _ = _overfit_controller(cut=0.3)
        _late_overfit(c, model, losses=losses)
        assert c.fallbacks == 0, name
    c, model, _ = _overfit_controller(cut=0.3)  # the same growth inside the window starts over
    _late_overfit(c, model, first_step=5, losses=RISING[:2])
    assert c.restarts == 1 and c.fallbacks == 0 and c._best is None  # the best is forgotten
    c, model, _ = _overfit_controller(total_steps=200, cut=0.3)
    c.decision_steps = [0, 70, 140]  # no copy to start over from: nothing in the window
    _late_overfit(c, model, first_step=5, losses=(*RISING, (0.3, 0.8)))  # to 45: in 30% of T
    assert c.restarts == 0 and c.fallbacks == 0
    c, model, _ = _overfit_controller(cut=0.3)  # no loss at the first decision: off
    c.decide(0, model, train_loss=None, val_loss=None)
    for i, (t, v) in enumerate(RISING):
        c.decide(40 + 10 * i, model, train_loss=t, val_loss=v)
    assert c.fallbacks == 0 and c._best is None
    c, model, opt = _overfit_controller(total_steps=1000, cut=0.3)
    c.decide(0, model, train_loss=None, val_loss=1.0)
    step, seen = 300, []
    for _ in range(FALLBACKS + 1):
        for t, v in RISING:
            _train_a_little(model)
            step += 10
            c.decide(step, model, train_loss=t, val_loss=v)
        seen.append(c.fallbacks)
        if len(seen) == 1:  # resume mid-way into a fresh controller
            state = c.state_dict()
            c, _, _ = _overfit_controller(total_steps=1000, model=model, opt=opt, cut=0.3)
            c.load_state_dict(state)
            assert c.fallbacks == 1 and c._best is not None
    assert seen == [1, 2, 2]  # the third is left alone


def test_a_fall_back_stands_against_a_register_op_and_a_loaded_state_is_not_the_best():
    c, model, opt = _overfit_controller(cut=0.3)
    load0 = (*c.space.keep[:-1], 2)  # the register head's "load 0"
    assert c.space.register_op(load0) == ("load", 0)
    c.decide(0, model, train_loss=None, val_loss=1.0)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    c.registers.save(0, model, opt)
    _train_a_little(model)
    features = c.observe(40, train_loss=0.5, val_loss=0.6)  # a new best, then a load
    c.carry_out(40, model, features, load0, 0.0, c.hidden, train_loss=0.5, val_loss=0.6)
    # the state loaded was not the one validated: the copy to fall back to is still the first
    assert all(torch.equal(v, start[k]) for k, v in c._best.model.items())
    c, model, opt = _overfit_controller(cut=0.3)
    c.decide(0, model, train_loss=None, val_loss=1.0)
    c.registers.save(0, model, opt)
    best = None
    for i, (t, v) in enumerate(RISING):
        _train_a_little(model)
        if i < 3:
            c.decide(40 + 10 * i, model, train_loss=t, val_loss=v)
            best = best or {k: w.clone() for k, w in model.state_dict().items()}
        else:  # the policy asks for a load as the rule falls back: the fall back stands
            features = c.observe(70, train_loss=t, val_loss=v)
            c.carry_out(70, model, features, load0, 0.0, c.hidden, train_loss=t, val_loss=v)
    assert c.fallbacks == 1 and c.history[-1]["register"] == "fall back"
    assert all(torch.equal(v, best[k]) for k, v in model.state_dict().items())


def test_a_validation_loss_given_again_neither_rises_nor_falls():
    c, model, _ = _overfit_controller(cut=0.3)
    c.decide(0, model, train_loss=None, val_loss=1.0)
    losses = [(0.5, 0.6), (0.45, 0.65), (0.42, 0.65), (0.4, 0.7), (0.35, 0.75)]
    seen = []
    for i, (t, v) in enumerate(losses):  # 0.65 twice: one evaluation, three rises by 0.75
        _train_a_little(model)
        c.decide(40 + 10 * i, model, train_loss=t, val_loss=v)
        seen.append(c.fallbacks)
    assert seen == [0, 0, 0, 0, 1]


def test_fallback_cut_is_checked_and_recorded_only_when_set():
    from lhopt.control.policy_file import ControlSpec, actor_layout, file_spec

    for bad in (-0.1, 1.0, float("nan"), True, "0.3"):
        with pytest.raises(ValueError, match="fallback_cut="):
            ControlSpec(overfit_gap=0.2, fallback_cut=bad)
    with pytest.raises(ValueError, match="fallback_cut=0.3 with overfit_gap=0"):
        ControlSpec(fallback_cut=0.3)
    assert "fallback_cut" not in actor_layout(ControlSpec(overfit_gap=0.2))
    layout = actor_layout(ControlSpec(overfit_gap=0.2, fallback_cut=0.3))
    assert layout["fallback_cut"] == 0.3
    assert file_spec({"layout": layout}).fallback_cut == 0.3


def test_hide_val_is_checked_and_recorded_only_when_set():
    from lhopt.control.policy_file import ControlSpec, actor_layout, file_spec

    for bad in (1, "yes", None):
        with pytest.raises(ValueError, match="hide_val="):
            ControlSpec(hide_val=bad)
    assert "hide_val" not in actor_layout(ControlSpec())
    layout = actor_layout(ControlSpec(hide_val=True))
    assert layout["hide_val"] is True
    assert file_spec({"layout": layout}).hide_val is True
    assert file_spec({"layout": actor_layout(ControlSpec())}).hide_val is False


def test_overfit_gap_is_checked_and_recorded_only_when_set():
    from lhopt.control.policy_file import ControlSpec, actor_layout, file_spec

    assert not hasattr(EpisodeConfig(), "overfit_gap")  # episodes never run the rule

    for bad in (-0.1, float("inf"), float("nan"), True, "0.2"):
        with pytest.raises(ValueError, match="overfit_gap="):
            ControlSpec(overfit_gap=bad)
    assert "overfit_gap" not in actor_layout(ControlSpec())
    layout = actor_layout(ControlSpec(overfit_gap=0.2))
    assert layout["overfit_gap"] == 0.2
    assert file_spec({"layout": layout}).overfit_gap == 0.2


def test_a_spec_without_start_over_batch_norm_keeps_the_rule_off_for_batch_norm():
    import dataclasses

    from lhopt.control.controller import Controller
    from lhopt.control.policy_file import ControlSpec, actor_layout, file_spec
    from lhopt.optim import CIAO

    losses = [(None, 1.0), (0.5, 0.6), (0.3, 0.65)]  # starts over where the rule is on
    net = load_policy("default")
    for layers, allowed, starts in (
        ((nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1)), False, 0),
        ((nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1)), True, 1),
        ((nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 1)), False, 1),
    ):
        model = nn.Sequential(*layers)
        opt = CIAO(model.parameters(), lr=0.03)
        spec = dataclasses.replace(net.spec, overfit_gap=0.2, start_over_batch_norm=allowed)
        c = Controller(net, opt, 100, spec=spec)
        for i, (t, v) in enumerate(losses):
            _train_a_little(model)
            c.decide(5 * i, model, train_loss=t, val_loss=v)
        assert c.restarts == starts, (layers[1], allowed)
    with pytest.raises(ValueError, match="start_over_batch_norm="):
        ControlSpec(start_over_batch_norm=0)
    assert "start_over_batch_norm" not in actor_layout(ControlSpec())  # old hashes stay
    layout = actor_layout(ControlSpec(start_over_batch_norm=False))
    assert layout["start_over_batch_norm"] is False
    assert file_spec({"layout": layout}).start_over_batch_norm is False
