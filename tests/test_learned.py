import copy
import io
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import lhopt
from lhopt.control import LearnedOptimizer, default_policy_path, layout_hash, load_policy


def setup(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 1))
    g = torch.Generator().manual_seed(seed)
    data = [(torch.randn(16, 6, generator=g), torch.randn(16, 1, generator=g)) for _ in range(80)]
    return model, data


def train(model, opt, data, after_step=None):
    for x, y in data:
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        opt.report(train_loss=loss)
        if after_step is not None:
            after_step()


def test_drop_in_use_makes_decisions_and_records_them(policy_file):
    model, data = setup()
    x_val, y_val = torch.randn(64, 6), torch.randn(64, 1)

    def val_loss():
        with torch.no_grad():
            return nn.functional.mse_loss(model(x_val), y_val).item()

    opt = lhopt.LearnedOptimizer(
        model.parameters(),
        total_steps=80,
        val_loss_fn=val_loss,
        policy=policy_file,
        decisions=10,
        sample=True,
    )
    assert isinstance(opt, torch.optim.Optimizer)
    train(model, opt, data)
    assert [h["step"] for h in opt.history] == list(range(0, 80, 8))
    assert opt.history[1]["val_loss"] is not None and opt.history[1]["train_loss"] is not None
    assert {"lr", "weight_decay", "clip_fraction"} <= set(opt.history[-1]["hparams"])
    lrs = {h["hparams"]["lr"] for h in opt.history}
    assert len(lrs) > 1  # the policy moved the learning rate
    assert opt.hparams[0]["lr"] == opt.history[-1]["hparams"]["lr"]
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_resumed_run_decides_exactly_as_the_uninterrupted_one(policy_file):
    model, data = setup(1)
    opt = LearnedOptimizer(
        model.parameters(), total_steps=80, policy=policy_file, decisions=16, sample=True, seed=3
    )
    train(model, opt, data[:37])  # stop mid-period, with train losses accumulated
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    train(model, opt, data[37:])

    resumed_model, _ = setup(1)
    resumed = LearnedOptimizer(
        resumed_model.parameters(),
        total_steps=80,
        policy=policy_file,
        decisions=16,
        sample=True,
        seed=99,
    )
    buf.seek(0)
    saved = torch.load(buf, weights_only=False)
    resumed_model.load_state_dict(saved["model"])
    resumed.load_state_dict(saved["opt"])
    train(resumed_model, resumed, data[37:])
    assert resumed.history == opt.history
    for p, q in zip(model.parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_a_group_added_mid_run_is_steered_and_restored_by_the_registers(policy_file):
    from lhopt.control.learned import _CIAOState

    model, data = setup(4)
    opt = LearnedOptimizer(model[0].parameters(), total_steps=80, policy=policy_file)
    train(model, opt, data[:20])
    opt.controller.registers.apply("save", 0, opt._module, _CIAOState(opt))
    opt.add_param_group({"params": model[2].parameters()})  # e.g. a layer unfrozen mid-run
    assert opt.controller.registers.info()[0][0] is False  # saved without the new layer: emptied
    train(model, opt, data[20:40])
    opt.controller.registers.apply("save", 1, opt._module, _CIAOState(opt))
    saved = [p.detach().clone() for p in model.parameters()]
    train(model, opt, data[40:])
    assert opt.controller.registers.apply("load", 1, opt._module, _CIAOState(opt))
    for p, q in zip(model.parameters(), saved, strict=True):
        assert torch.equal(p, q)  # the added layer too
    assert opt.param_groups[1]["lr"] != 1e-3  # the policy steers the added group too


def test_works_without_validation_loss_and_with_a_closure(policy_file):
    model, data = setup(2)
    opt = LearnedOptimizer(model.parameters(), total_steps=40, policy=policy_file)
    for x, y in data[:40]:

        def closure(x=x, y=y):
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            return loss

        opt.step(closure)
    assert len(opt.history) == 10  # at most total_steps / 4 decisions
    assert all(h["val_loss"] is None for h in opt.history)
    assert opt.history[-1]["train_loss"] is not None  # the closure's losses were recorded


def test_a_loop_that_never_reports_the_loss_is_warned_once(policy_file):
    model, data = setup(4)
    opt = LearnedOptimizer(model.parameters(), total_steps=40, policy=policy_file)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for x, y in data[:40]:
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()  # no report(), no closure
    missing = [w for w in caught if "no train loss was reported" in str(w.message)]
    assert len(missing) == 1 and missing[0].filename == __file__  # points at the user's step()
    reporting = LearnedOptimizer(model.parameters(), total_steps=40, policy=policy_file)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(model, reporting, data[:40])
    assert not [w for w in caught if "no train loss" in str(w.message)]


def test_a_run_without_a_validation_loss_is_warned_once_past_the_start_over_window(policy_file):
    from lhopt.control.controller import OVERFIT_UNTIL

    model, data = setup(6)
    opt = LearnedOptimizer(model.parameters(), total_steps=80, policy=policy_file)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(model, opt, data[:20])  # still inside the window: no warning yet
        early = [w for w in caught if "no validation loss" in str(w.message)]
        train(model, opt, data[20:80])
    missing = [w for w in caught if "no validation loss" in str(w.message)]
    assert not early and len(missing) == 1 and missing[0].filename == __file__
    assert "of 80" in str(missing[0].message) and 20 <= OVERFIT_UNTIL * 80 < 80
    # a validation loss reported late (an integration's first evaluation) is enough, as is one
    # from val_loss_fn; data passed over at most once (fresh, or one epoch) need none
    fresh, one_pass = {"steps_per_epoch": float("inf")}, {"steps_per_epoch": 80}
    cases = (({}, True), ({"val_loss_fn": lambda: 1.0}, False), (fresh, False), (one_pass, False))
    for kwargs, late in cases:
        model, data = setup(6)
        opt = LearnedOptimizer(model.parameters(), total_steps=80, policy=policy_file, **kwargs)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train(model, opt, data[:20])
            if late:
                opt.report(val_loss=1.0)
            train(model, opt, data[20:80])
        assert not [w for w in caught if "no validation loss" in str(w.message)]


def test_an_lr_scheduler_fighting_the_policy_is_warned_once(policy_file):
    model, data = setup(5)
    opt = LearnedOptimizer(model.parameters(), total_steps=80, policy=policy_file)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (1 + t))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(model, opt, data, after_step=sched.step)
    fights = [w for w in caught if "changed between decisions" in str(w.message)]
    assert len(fights) == 1 and "LR scheduler" in str(fights[0].message)
    assert fights[0].filename == __file__

    plain = LearnedOptimizer(model.parameters(), total_steps=40, policy=policy_file)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(model, plain, data[:20])
        plain.param_groups[0]["lr"] *= 3  # by hand
        train(model, plain, data[20:40])
    fights = [w for w in caught if "changed between decisions" in str(w.message)]
    assert len(fights) == 1 and "outside the policy" in str(fights[0].message)

    quiet = LearnedOptimizer(model.parameters(), total_steps=40, policy=policy_file)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(model, quiet, data[:40])
    assert not [w for w in caught if "changed between decisions" in str(w.message)]


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_training_past_the_budget_warns_once_and_keeps_the_hyperparameters(
    tmp_path, make_policy_file, schedule
):
    policy = make_policy_file(tmp_path / f"{schedule}.pt", schedule=schedule)
    model, data = setup(3)
    opt = LearnedOptimizer(model.parameters(), total_steps=20, policy=policy)
    train(model, opt, data[:20])
    hp = copy.deepcopy(opt.hparams)
    before = [p.detach().clone() for p in model.parameters()]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(model, opt, data[20:40])
    past = [str(w.message) for w in caught if "past total_steps" in str(w.message)]
    assert len(past) == 1 and opt.hparams == hp
    moved = any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    if schedule == "cosine":  # the lr is 0 from step T on: what the warning says
        assert "'cosine' schedule has brought the lr to 0" in past[0] and not moved
    else:
        assert "stay as the policy last set them" in past[0] and moved


def test_a_closure_returning_what_is_not_a_loss_takes_no_step(policy_file):
    model, data = setup(6)
    opt = LearnedOptimizer(model.parameters(), total_steps=40, policy=policy_file)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = data[0]

    def closure():
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss, "logits"

    with pytest.raises(ValueError, match="train_loss="):
        opt.step(closure)
    assert opt.steps == 0 and opt.state_dict()["controller"]["taken"] == 0 and not opt.history
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    opt.step(lambda: closure()[0])  # a good closure goes on from there
    assert opt.steps == 1 and len(opt.history) == 1


def test_a_closure_decides_as_a_loop_that_reports_after_step(policy_file):
    """step(closure) records the closure's loss in the period its step ends, as `report` after
    `step` does: the same batches give the same decisions and parameters."""
    runs = []
    for use_closure in (False, True):
        model, data = setup(4)
        opt = LearnedOptimizer(model.parameters(), total_steps=40, policy=policy_file)
        for x, y in data[:40]:

            def closure(x=x, y=y, model=model, opt=opt):
                opt.zero_grad()
                loss = nn.functional.mse_loss(model(x), y)
                loss.backward()
                return loss

            if use_closure:
                opt.step(closure)
            else:
                loss = closure()
                opt.step()
                opt.report(train_loss=loss)
        runs.append((opt.history, [p.detach().clone() for p in model.parameters()]))
    (plain, p1), (closed, p2) = runs
    assert plain[0]["train_loss"] is None and closed[0]["train_loss"] is None
    assert [h["train_loss"] for h in plain] == [h["train_loss"] for h in closed]
    assert [h["action"] for h in plain] == [h["action"] for h in closed]
    assert all(torch.equal(a, b) for a, b in zip(p1, p2, strict=True))


def test_named_parameters_are_taken_with_model_in_every_group(policy_file):
    model, data = setup(5)
    first, last = model[0], model[2]
    opt = LearnedOptimizer(
        first.named_parameters(), total_steps=40, policy=policy_file, model=model
    )
    opt.add_param_group({"params": list(last.named_parameters())})
    train(model, opt, data[:10])
    assert len(opt.param_groups) == 2 and opt.param_groups[1]["param_names"] == ["weight", "bias"]
    with pytest.raises(ValueError, match="model= must hold every parameter"):
        opt.add_param_group({"params": list(nn.Linear(2, 2).named_parameters())})
    assert len(opt.param_groups) == 2


@pytest.mark.parametrize("bad", [0, -5, 2.5, "100", True, np.float64(40.0), torch.tensor(-3)])
def test_total_steps_must_be_a_positive_int(policy_file, bad):
    with pytest.raises(ValueError, match="total_steps"):
        LearnedOptimizer(nn.Linear(2, 1).parameters(), total_steps=bad, policy=policy_file)


@pytest.mark.parametrize("steps", [np.int64(40), torch.tensor(40)])
def test_integer_scalars_are_accepted_as_counts(policy_file, steps):
    opt = LearnedOptimizer(
        nn.Linear(2, 1).parameters(), total_steps=steps, policy=policy_file, decisions=np.int32(5)
    )
    assert type(opt.total_steps) is int and opt.total_steps == 40
    assert opt.decision_steps == [0, 8, 16, 24, 32]


def test_policy_files_are_checked(tmp_path, policy_file):
    with pytest.raises(ValueError, match="does not exist"):
        load_policy(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a policy")
    with pytest.raises(ValueError, match="corrupt"):
        load_policy(corrupt)
    data = torch.load(policy_file, weights_only=True)
    other = tmp_path / "other.pt"
    layout = {**data["layout"], "features": data["layout"]["features"][:-1]}
    torch.save({**data, "layout": layout}, other)
    with pytest.raises(ValueError, match="another feature/action layout"):
        load_policy(other)
    torch.save({**data, "layout": {**data["layout"], "schedule": "cosine"}}, other)
    assert load_policy(other).spec.schedule == "cosine"  # a known shape: the file's own
    torch.save({**data, "layout": {**data["layout"], "schedule": "step"}}, other)
    with pytest.raises(ValueError, match="another feature/action layout"):
        load_policy(other)
    torch.save({k: v for k, v in data.items() if k != "architecture"}, other)
    with pytest.raises(ValueError, match="no 'architecture' entry"):
        load_policy(other)
    torch.save({**data, "format": 99}, other)
    with pytest.raises(ValueError, match="format 99"):
        load_policy(other)
    assert data["layout_hash"] == layout_hash()


def test_a_policy_starts_where_its_file_says_its_episodes_started(tmp_path, policy_file):
    """A file recording `initial` (a policy trained from lr 1e-2) makes that the default start;
    an lr given by the user wins; a bad record is a ValueError naming the file and the entry."""
    net = load_policy(policy_file)
    assert net.initial == {}  # the fixture's file records none: CIAO's defaults
    high = tmp_path / "high.pt"
    lhopt.control.save_policy_file(net, high, initial={"lr": 1e-2})
    assert load_policy(high).initial == {"lr": 1e-2}
    model, _ = setup()
    assert LearnedOptimizer(model.parameters(), 10, policy=high).param_groups[0]["lr"] == 1e-2
    with pytest.warns(UserWarning, match=r"lr=0.003 overrides the start .*\(lr=0.01\)"):
        given = LearnedOptimizer(model.parameters(), 10, policy=high, lr=3e-3)
    assert given.param_groups[0]["lr"] == 3e-3
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # its own start, or a hyperparameter it does not record
        LearnedOptimizer(model.parameters(), 10, policy=high, lr=1e-2, weight_decay=0.3)
        # a group's own setting of another hyperparameter (a table without the trust ratio, a
        # no-decay group) is not a start the policy learned from, and is left alone
        LearnedOptimizer(
            [
                {"params": model[0].parameters(), "weight_decay": 0.0},
                {"params": model[2].parameters()},
            ],
            10,
            policy=high,
        )
    # AdamW's names replace the file's start of the same hyperparameters
    eps_start = tmp_path / "eps.pt"
    lhopt.control.save_policy_file(net, eps_start, initial={"lr": 1e-2, "epsilon": 1e-6})
    with pytest.warns(UserWarning, match=r"epsilon=1e-08 overrides the start .*\(epsilon=1e-06\)"):
        opt = LearnedOptimizer(model.parameters(), 10, policy=eps_start, eps=1e-8)
    assert opt.param_groups[0]["epsilon"] == 1e-8
    # a per-group lr (an AdamW fine-tuning recipe's) is warned as the keyword is
    groups = [{"params": model[0].parameters(), "lr": 1e-4}, {"params": model[2].parameters()}]
    with pytest.warns(UserWarning, match=r"group 0 lr=0.0001 differs from the lr .*from \(0.01\)"):
        given = LearnedOptimizer(groups, 10, policy=high)
    assert [g["lr"] for g in given.param_groups] == [1e-4, 1e-2]
    assert (
        LearnedOptimizer(model.parameters(), 10, policy=policy_file).param_groups[0]["lr"] == 1e-3
    )
    data = torch.load(high, weights_only=True)
    for bad, words in (({"lr": -1.0}, ["lr=-1.0", "out of range"]), ({"rate": 1.0}, ["'rate'"])):
        torch.save({**data, "initial": bad}, tmp_path / "bad.pt")
        with pytest.raises(ValueError) as info:
            load_policy(tmp_path / "bad.pt")
        for w in ("bad.pt", "records a bad start", *words):
            assert w in str(info.value)
    with pytest.raises(ValueError, match="'rate'"):
        lhopt.control.save_policy_file(net, tmp_path / "x.pt", initial={"rate": 1.0})


def test_greedy_by_default_and_deterministic(policy_file):
    runs = []
    for seed in (0, 1):
        model, data = setup(4)
        opt = LearnedOptimizer(model.parameters(), total_steps=40, policy=policy_file, seed=seed)
        train(model, opt, data[:40])
        runs.append([h["action"] for h in opt.history])
    assert runs[0] == runs[1]  # the sampling seed plays no part in greedy decisions


def test_the_shipped_default_policy_loads_and_trains():
    assert default_policy_path().stat().st_size < 5_000_000  # a few MB at most
    model, data = setup(5)
    opt = LearnedOptimizer(model.parameters(), total_steps=80)  # policy="default"
    train(model, opt, data)
    assert len(opt.history) == 20
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_the_shipped_policy_records_the_meta_training_run_it_came_from():
    """The shipped file carries the counters of the `lhopt meta-train` iteration that wrote it,
    and that run's committed log holds the same iteration (its provenance, docs/model-card.md)."""
    import json
    from pathlib import Path

    meta = torch.load(default_policy_path(), weights_only=True)["meta"]
    assert meta["episodes"] > 0 and meta["inner_steps"] > 0
    root = Path(__file__).resolve().parents[1]
    matches = []
    for log in sorted(root.glob("runs/*/log.jsonl")):
        for line in log.read_text().splitlines():
            row = json.loads(line)
            same = (row.get("iteration"), row.get("episodes_total"), row.get("inner_steps_total"))
            if same == (meta["iteration"], meta["episodes"], meta["inner_steps"]):
                matches.append(log)
    assert matches, "no committed runs/*/log.jsonl has the shipped policy's iteration"


def test_a_policy_with_overfit_gap_starts_over_where_a_small_noisy_set_is_memorised(tmp_path):
    """24 noisy points, a wide MLP at the shipped policy's start of 3e-2: the training loss
    goes to 0 while the validation loss turns up; the run starts over at a tenth of the lr
    and then reaches a lower validation loss than before (what the rule is for). A run saved
    before the restart and resumed decides as the uninterrupted one."""
    import dataclasses

    from lhopt.control.policy_file import save_policy_file

    net = load_policy("default")
    path = tmp_path / "og.pt"
    save_policy_file(net, path, spec=dataclasses.replace(net.spec, overfit_gap=0.2))
    torch.manual_seed(0)
    w = torch.randn(8, 1)

    def data(n):
        x = torch.randn(n, 8)
        return x, x @ w + 2.0 * torch.randn(n, 1)

    (xt, yt), (xv, yv) = data(24), data(500)
    init = nn.Sequential(
        nn.Linear(8, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 1)
    )

    def make(state=None):
        model = copy.deepcopy(init)
        opt = LearnedOptimizer(
            model.parameters(),
            total_steps=400,
            policy=str(path),
            model=model,
            val_loss_fn=lambda: float(nn.functional.mse_loss(model(xv), yv)),
            steps_per_epoch=1,
        )
        if state is not None:
            model.load_state_dict(state[0])
            opt.load_state_dict(state[1])
        return model, opt

    def train(model, opt, steps):
        for _ in range(steps):
            loss = nn.functional.mse_loss(model(xt), yt)
            opt.zero_grad()
            loss.backward()
            opt.step()
            opt.report(train_loss=loss)

    model, opt = make()
    train(model, opt, 400)
    marks = [i for i, h in enumerate(opt.history) if h["register"] == "start over"]
    assert len(marks) == 1 and opt.controller.restarts == 1
    assert opt.history[marks[0]]["step"] > 50
    before = min(h["val_loss"] for h in opt.history[: marks[0] + 1])
    after = min(h["val_loss"] for h in opt.history[marks[0] + 1 :])
    assert after < before
    model2, opt2 = make()
    train(model2, opt2, 50)
    buf = io.BytesIO()
    torch.save((model2.state_dict(), opt2.state_dict()), buf)
    buf.seek(0)
    model3, opt3 = make(torch.load(buf, weights_only=False))
    train(model3, opt3, 350)
    assert [h["val_loss"] for h in opt3.history] == [h["val_loss"] for h in opt.history]


@pytest.mark.filterwarnings("ignore:LearnedOptimizer. no validation loss")
def test_hide_val_keeps_the_validation_loss_from_the_policy_not_from_the_rule(tmp_path):
    """With `hide_val` the policy decides as in a run given no validation loss (same features,
    same actions, where nothing starts over), while the start-over rule still reads it and
    starts over where the small noisy set is memorised."""
    import dataclasses

    from lhopt.control.policy_file import save_policy_file

    net = load_policy("default")
    path = tmp_path / "hv.pt"
    save_policy_file(net, path, spec=dataclasses.replace(net.spec, hide_val=True))
    assert load_policy(path).spec.hide_val and net.spec.overfit_gap > 0

    def run(policy, n_train, with_val, steps=200):
        torch.manual_seed(0)
        w = torch.randn(8, 1)
        x = torch.randn(n_train + 500, 8)
        y = x @ w + 2.0 * torch.randn(n_train + 500, 1)
        (xt, yt), (xv, yv) = (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])
        model = nn.Sequential(
            nn.Linear(8, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 1)
        )

        def val_loss():
            return float(nn.functional.mse_loss(model(xv), yv))

        opt = LearnedOptimizer(
            model.parameters(),
            total_steps=steps,
            policy=policy,
            model=model,
            val_loss_fn=val_loss if with_val else None,
            steps_per_epoch=1,
        )
        train(model, opt, [(xt, yt)] * steps)
        return opt

    # the noisy set memorised: the rule starts over with the validation loss hidden too
    hidden = run(str(path), 24, True)
    assert hidden.controller.restarts >= 1
    assert any(h["register"] == "start over" for h in hidden.history)
    # where nothing starts over, the hidden run decides exactly as the run without one
    hidden = run(str(path), 4000, True)
    alone = run("default", 4000, False)
    assert hidden.controller.restarts == 0
    assert [h["features"] for h in hidden.history] == [h["features"] for h in alone.history]
    assert [h["hparams"] for h in hidden.history] == [h["hparams"] for h in alone.history]
    assert all(h["val_loss"] is not None for h in hidden.history)
    shown = run("default", 4000, True)  # the shipped file reads it: its features differ
    assert [h["features"] for h in shown.history] != [h["features"] for h in alone.history]


def test_adding_a_param_group_turns_starting_over_off(tmp_path):
    """The state a run would start over from lacks the new group: the rule is off after it
    (a restore would fail halfway)."""
    import dataclasses

    from lhopt.control.policy_file import save_policy_file

    net = load_policy("default")
    path = tmp_path / "og.pt"
    save_policy_file(net, path, spec=dataclasses.replace(net.spec, overfit_gap=0.2))
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 1))
    opt = LearnedOptimizer(
        model[0].parameters(),
        total_steps=100,
        policy=str(path),
        model=model,
        val_loss_fn=lambda: 1.0,
    )
    x = torch.randn(8, 4)
    loss = model(x).pow(2).mean()
    loss.backward()
    opt.step()
    assert opt.controller._start is not None
    opt.add_param_group({"params": list(model[1].parameters())})
    assert opt.controller._start is None
    for t, v in [(0.5, 0.6), (0.3, 0.65)]:  # what would start a run over
        opt._val_loss, opt.val_loss_fn = None, (lambda v=v: v)
        for _ in range(5):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
            opt.report(train_loss=t)
    assert opt.controller.restarts == 0
