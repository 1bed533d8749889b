"""The in-run level searches of `benchmarks/level_search.py` do what docs/experiments.md says
they do (its figures stand on them), and so do its test-metric comparison, its Prodigy driver
and its weight-decay rule."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from lhopt.optim import schedules
from lhopt.tasks import TaskConfig, build_task, suites

_PATH = Path(__file__).parent.parent / "benchmarks" / "level_search.py"
_SPEC = importlib.util.spec_from_file_location("level_search", _PATH)
level_search = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(level_search)
_CMP = importlib.util.spec_from_file_location("compare_reads", _PATH.with_name("compare_reads.py"))
compare = importlib.util.module_from_spec(_CMP)
_CMP.loader.exec_module(compare)

QUADRATIC = TaskConfig.make("quadratic", dim=20, condition=100.0, noise=0.1, batch=8, budget=400)


def test_the_range_test_returns_to_its_minimum_then_runs_a_cosine_from_lr_star_over_k():
    task = build_task(QUADRATIC, 0)
    driver = level_search.RangeTestCosine(task.model.parameters(), 400, 10.0, 0.25, 1e-4, 10.0, 0.2)
    step, lrs = 0, []
    while driver.searching:
        step += 1
        driver.before_step(step)
        lrs.append(driver.lr)
        loss = task.train_loss()
        driver.optimizer.zero_grad()
        loss.backward()
        driver.optimizer.step()
        driver.after_step(step, loss.detach())
    assert step <= 100  # within its quarter of T
    assert lrs == sorted(lrs) and math.isclose(lrs[0], 1e-4)  # a geometric rise
    assert 1e-4 < driver.best_lr < lrs[-1] and driver.peak == driver.best_lr / 10
    # The weights are the snapshot's, taken at the minimum of the loss's average.
    assert all(torch.equal(p, q) for p, q in zip(driver.params, driver.snapshot[0], strict=True))
    driver.before_step(step + 1)
    assert math.isclose(driver.lr, driver.peak, rel_tol=1e-3)
    driver.before_step(400)
    assert driver.lr < 1e-3 * driver.peak


def test_the_stall_rule_halves_only_where_progress_stalls_and_confirm_reads_the_sign():
    params = list(build_task(QUADRATIC, 0).model.parameters())
    for confirm, cos, halved in ((False, -0.5, True), (True, -0.5, False), (True, 0.5, True)):
        driver = level_search.StallDecayCosine(params, 400, 1e-2, eps=0.05, confirm=confirm)
        driver.on_eval(0, 10.0)
        driver.before_step(1)
        driver.on_eval(20, 5.0)  # the first period gains 5: no halving
        driver.before_step(21)
        assert driver.level == 1e-2
        driver.on_eval(40, 4.99)  # the second gains 0.01, under 5% of all the gain so far
        driver._cos_sum, driver._cos_n = cos, 1
        driver.before_step(41)
        assert driver.level == (5e-3 if halved else 1e-2), (confirm, cos)


def test_the_climb_moves_the_level_both_ways_by_the_sign():
    params = list(build_task(QUADRATIC, 0).model.parameters())
    driver = level_search.StallDecayCosine(params, 400, 1e-3, eps=0.05, climb=0.02)
    driver.on_eval(0, 10.0)
    driver.before_step(1)
    for point, cos, level in ((21, -0.1, 2e-3), (41, 0.01, 2e-3), (61, 0.1, 1e-3)):
        driver.on_eval(point - 1, 1.0)
        driver._cos_sum, driver._cos_n = cos, 1
        driver.before_step(point)
        assert math.isclose(driver.level, level), (point, driver.level)


def test_overfit_halves_a_stall_only_while_the_training_loss_still_falls():
    params = list(build_task(QUADRATIC, 0).model.parameters())
    for train_after, halved in ((3.0, True), (7.5, False)):  # period means 7.375, then this
        driver = level_search.StallDecayCosine(params, 400, 1e-2, eps=0.05, overfit=True)
        driver.on_eval(0, 10.0)
        driver.before_step(1)
        for step in range(1, 21):  # the first period's training loss: 10 falling to 5
            driver.after_step(step, torch.tensor(10.0 - 5.0 * step / 20))
        driver.on_eval(20, 5.0)
        driver.before_step(21)
        assert driver.level == 1e-2  # the validation loss gained: no halving
        for step in range(21, 41):
            driver.after_step(step, torch.tensor(train_after))
        driver.on_eval(40, 4.99)  # a stall of the validation loss
        driver.before_step(41)
        assert driver.level == (5e-3 if halved else 1e-2), train_after


def _seed(test, tuned):
    return {"test": test, "tuned_test": tuned}


def test_the_comparison_reads_each_metric_in_its_direction():
    per_task = {
        "clf": [_seed({"loss": 0.9, "accuracy": 0.80}, {"loss": 0.5, "accuracy": 0.70})],
        "reg": [_seed({"loss": 0.2, "mse": 0.2}, {"loss": 0.1, "mse": 0.1})],
        "lm": [_seed({"loss": 2.0}, {"loss": 2.1})],
        "rec": [_seed({"hr@10": 0.70, "ndcg@10": 0.4}, {"hr@10": 0.72, "ndcg@10": 0.5})],
        "none": [_seed(None, {"loss": 1.0})],
    }
    out = level_search.test_comparison(per_task)
    # accuracy up is better although the loss is worse; mse up is worse; loss alone: lower
    assert "clf: test accuracy 0.8 (tuned 0.7)\n" in out + "\n"
    assert "reg: test mse 0.2 (tuned 0.1) worse" in out
    assert "lm: test loss 2 (tuned 2.1)\n" in out + "\n"
    assert "rec: test hr@10 0.7 (tuned 0.72) worse" in out  # a hit ratio down is worse
    assert "none: no test metrics" in out
    assert out.endswith("on 2/4 tasks")


def test_prodigy_cosine_follows_the_shape_and_its_level_grows_from_d0():
    pytest.importorskip("prodigyopt")
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(20))
    budget, k = 100, 0.3
    d = level_search.ProdigyCosine([w], budget, k)
    start = d.peak
    for step in range(1, budget + 1):
        d.before_step(step)
        assert d.optimizer.param_groups[0]["lr"] == pytest.approx(
            k * schedules.warmup_cosine(step, budget)
        )
        loss = (w**2).sum()
        loss.backward()
        d.optimizer.step()
        d.optimizer.zero_grad()
    assert start == pytest.approx(1e-6 * k)
    assert d.peak > 10 * start  # d only grows, and here it does
    group = d.optimizer.param_groups[0]
    assert d.hparams()["lr"] == pytest.approx(group["d"] * group["lr"])


def test_the_overfit_rule_raises_the_weight_decay_where_the_validation_loss_turns_up():
    from lhopt.control import LearnedOptimizer

    w = torch.nn.Parameter(torch.randn(4))
    with pytest.warns(UserWarning, match="weight_decay=0.01 overrides the start"):
        opt = LearnedOptimizer([w], total_steps=100, weight_decay=1e-2)
    d = level_search.OverfitWeightDecay(opt, factor=3.0, most=0.1, eps=0.05)
    wd = lambda: opt.param_groups[0]["weight_decay"]  # noqa: E731
    for loss in (2.0, 1.0, 0.9, 0.93):  # gain 1.1: 0.93 is within 5% of it above the best
        d.on_eval(0, loss)
    assert wd() == pytest.approx(1e-2)
    d.on_eval(0, 1.0)  # 0.1 above the best: 9% of the gain
    assert wd() == pytest.approx(3e-2)
    for _ in range(3):
        d.on_eval(0, 1.2)
    assert wd() == pytest.approx(0.1)  # capped
    d.on_eval(0, float("nan"))  # a non-finite loss changes nothing here
    assert wd() == pytest.approx(0.1)


def test_the_gap_log_reads_the_validation_loss_over_the_training_losses_before_it():
    from lhopt.control import LearnedOptimizer

    w = torch.nn.Parameter(torch.randn(4))
    d = level_search.GapLog(LearnedOptimizer([w], total_steps=100))
    d.on_eval(0, 4.0)  # before training: nothing to compare
    for loss in (3.0, 1.0):
        d.after_step(1, torch.tensor(loss))
    d.on_eval(2, 3.0)  # val 3 over the mean training loss 2, all the gain so far 1
    d.after_step(3, torch.tensor(float("nan")))  # a non-finite loss is not averaged
    d.after_step(4, torch.tensor(2.5))
    d.on_eval(4, 2.0)  # val 2 under the training loss 2.5, the gain 2
    assert d.gaps == [(2, pytest.approx(1.0)), (4, pytest.approx(-0.25))]


def test_compare_reads_prints_each_files_geometric_means(tmp_path, capsys, monkeypatch):
    def read(a, b):
        t1 = [{"adamw-cosine-tuned": a}, {"adamw-cosine-tuned": 4 * a}]
        runs = {"t1": t1, "t2": [{"adamw-cosine-tuned": b}]}
        return {"suites": {"s": {"0.03": runs}}}

    for name, doc in (("a.json", read(1.0, 4.0)), ("b.json", read(0.5, 0.0))):
        (tmp_path / name).write_text(json.dumps(doc))
    monkeypatch.setattr("sys.argv", ["x", str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    compare.main()
    lines = capsys.readouterr().out.splitlines()
    # t1: sqrt(1 * 4) = 2 and sqrt(0.5 * 2) = 1; t2: 4 and the floor 0.001; suites: their means
    assert lines[1].split()[1:] == ["2.00", "1.00"] and lines[2].split()[1:] == ["4.00", "0.00"]
    assert lines[3].split()[1:] == ["2.83", f"{math.sqrt(1e-3):.2f}"]
    # b's figure over a's, with its interval over the resampled seeds
    ratio = lines[4].split(" over ")[1].split()
    assert ratio[1] == f"{math.sqrt(1e-3) / 2.83:.2f}" and ratio[2].startswith("[")


def test_compare_reads_pools_every_task_of_the_suites(tmp_path, capsys, monkeypatch):
    def read(x):
        runs = {"t": [{"adamw-cosine-tuned": x}, {"adamw-cosine-tuned": 2 * x}]}
        return {"suites": {"s1": {"0.03": runs}, "s2": {"0.03": runs}}}

    for name, doc in (("a.json", read(0.5)), ("b.json", read(1.0))):
        (tmp_path / name).write_text(json.dumps(doc))
    monkeypatch.setattr("sys.argv", ["x", str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    compare.main()
    out = capsys.readouterr().out.split("## every task of the suites pooled\n")[1]
    assert ": 2.00 [" in out and "(2 tasks)" in out


def test_compare_reads_pairs_the_seeds_both_reads_ran_and_counts_lower_losses(
    tmp_path, capsys, monkeypatch
):
    def run(seed, speedup, best):
        curve = {"steps": [0, 5, 10, 15], "val": [1.0, best, best + 0.1, 2.0], "budget": 10}
        return {"seed": seed, "adamw-cosine-tuned": speedup, **curve}

    a = {"t1": [run(0, 0.5, 0.4), run(1, 2.0, 0.3)], "t2": [run(0, 1.0, 0.5), run(1, 1.0, 0.5)]}
    # the later read: 1.5x on every pair, lower on three pairs, the same loss on one; a seed
    # only it ran is left out
    b = {
        "t1": [run(0, 0.75, 0.35), run(1, 3.0, 0.2), run(2, 9.0, 0.1)],
        "t2": [run(0, 1.5, 0.45), run(1, 1.5, 0.5)],
    }
    for name, runs in (("a.json", a), ("b.json", b)):
        (tmp_path / name).write_text(json.dumps({"suites": {"s": {"0.03": runs}}}))
    monkeypatch.setattr("sys.argv", ["x", str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    compare.main()
    lines = [line for line in capsys.readouterr().out.splitlines() if " paired: " in line]
    assert lines and all(
        "paired: 1.50 [1.50, 1.50]; best validation loss 3/3 pairs lower" in line for line in lines
    )


def test_compare_reads_verdict_is_the_paired_protocols_criterion():
    assert compare.verdict((1.01, 1.2), 6, 10) == "better"
    assert compare.verdict((1.01, 1.2), 5, 10) == "not told apart"  # half the losses lower
    assert compare.verdict((0.98, 1.2), 9, 10) == "not told apart"
    assert compare.verdict((0.8, 0.99), 9, 10) == "worse"
    assert compare.verdict(None, 9, 10) == "not told apart"


def test_compare_reads_reads_losses_alone_where_no_baseline_ran(tmp_path, capsys, monkeypatch):
    def run(seed, best):  # as `level_search.py --losses-only` records a run
        curve = {"steps": [0, 10], "val": [1.0, best], "budget": 10}
        return {"seed": seed, "adamw-cosine-tuned": None, "adamw": None, **curve}

    a = {"t1": [run(0, 0.5), run(1, 0.5)], "t2": [run(0, 0.5), run(1, 0.5)]}
    b = {"t1": [run(0, 0.4), run(1, 0.4)], "t2": [run(0, 0.4), run(1, 0.6)]}
    for name, runs in (("a.json", a), ("b.json", b)):
        doc = {"suites": {"s1": {"0.03": runs}, "s2": {"0.03": runs}}}
        (tmp_path / name).write_text(json.dumps(doc))
    monkeypatch.setattr("sys.argv", ["x", str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    compare.main()
    out = capsys.readouterr().out
    pooled = out.split("## every task of the suites pooled\n")[1]
    # 6 of 8 pairs lower: P(X >= 6) for X ~ Binomial(8, 1/2) = 37/256
    assert (
        f"paired: no speedups; best validation loss 6/8 pairs lower (sign test p {37 / 256:.3g})"
        in pooled
    )
    assert compare.sign_p(3, 3) == 0.125 and compare.sign_p(0, 4) == 1.0


def test_losses_only_records_each_runs_curve_and_no_speedup(tmp_path, monkeypatch):
    # the pool pickles `_run` by its module's name; forked workers inherit this entry
    monkeypatch.setitem(sys.modules, "level_search", level_search)
    tiny = TaskConfig.make("quadratic", dim=20, condition=100.0, noise=0.1, batch=8, budget=40)
    monkeypatch.setitem(suites.SUITES, "tiny", {"tiny-quadratic": tiny})
    out = tmp_path / "read.json"
    argv = ["x", "--method", "policy-start", "--ks", "0.03", "--suites", "tiny"]
    argv += ["--seeds", "2", "--workers", "1", "--losses-only", "--out", str(out)]
    monkeypatch.setattr("sys.argv", argv)
    level_search.main()
    runs = json.loads(out.read_text())["suites"]["tiny"]["0.03"]["tiny-quadratic"]
    assert [r["seed"] for r in runs] == [0, 1]
    for r in runs:
        assert r["error"] is None and r["budget"] == 40 and r["tuned_lr"] is None
        assert r["adamw-cosine-tuned"] is None and r["adamw"] is None
        assert len(r["steps"]) == len(r["val"]) > 1 and r["steps"][-1] <= 40
        assert min(r["val"]) < r["val"][0]  # the policy trained the quadratic
        assert r["peak"] > 0  # its base lr's geometric mean


def test_the_start_s_weight_decay_options_change_the_run_and_are_checked(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "level_search", level_search)
    tiny = TaskConfig.make("quadratic", dim=20, condition=100.0, noise=0.1, batch=8, budget=40)
    monkeypatch.setitem(suites.SUITES, "tiny", {"tiny-quadratic": tiny})
    base = ["x", "--method", "policy-start", "--ks", "0.03", "--suites", "tiny", "--seeds", "1"]
    base += ["--workers", "1", "--losses-only"]
    vals = {}
    for name, extra in {
        "plain": [],
        "low": ["--wd-below", "1", "0.0"],  # fresh data: 0 passes, below 1
        "vectors": ["--no-decay-vectors"],
    }.items():
        out = tmp_path / f"{name}.json"
        monkeypatch.setattr("sys.argv", [*base, *extra, "--out", str(out)])
        level_search.main()
        vals[name] = json.loads(out.read_text())["suites"]["tiny"]["0.03"]["tiny-quadratic"][0]
    assert vals["low"]["val"] != vals["plain"]["val"]  # the decay of 0.1 taken off
    # the quadratic's one tensor is a vector: no decay on vectors is no decay at all
    assert vals["vectors"]["val"] == vals["low"]["val"]
    for bad in (["--wd-below", "0", "0.01"], ["--wd-below", "20", "-1"]):
        monkeypatch.setattr("sys.argv", [*base, *bad])
        with pytest.raises(SystemExit):
            level_search.main()


def test_power_by_scale_puts_only_matrices_at_pytorch_s_scale_in_the_other_group():
    default = torch.nn.Linear(32, 16)  # rms about 0.58 / sqrt(fan_in)
    small = torch.nn.Linear(32, 16)
    torch.nn.init.normal_(small.weight, std=0.02)  # GPT-2's: 0.02 * sqrt(32) = 0.11
    params = [default.weight, default.bias, small.weight, small.bias]
    groups = level_search._power_groups(iter(params), 0.3, 0.5)
    assert [[id(p) for p in g["params"]] for g in groups] == [
        [id(default.bias), id(small.weight), id(small.bias)],
        [id(default.weight)],
    ]
    assert "lamb_power" not in groups[0] and groups[1]["lamb_power"] == 0.5
    assert len(level_search._power_groups([small.weight], 0.3, 0.5)) == 1  # as shipped
