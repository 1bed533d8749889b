"""`benchmarks/level_search.py`'s pieces that its figures in docs/experiments.md rest on: the test
metric comparison's directions, and the Prodigy driver's schedule and level."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from lhopt.optim import schedules

_PATH = Path(__file__).parent.parent / "benchmarks" / "level_search.py"
_SPEC = importlib.util.spec_from_file_location("level_search", _PATH)
level_search = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(level_search)


def _seed(test, tuned):
    return {"test": test, "tuned_test": tuned}


def test_the_comparison_reads_each_metric_in_its_direction():
    per_task = {
        "clf": [_seed({"loss": 0.9, "accuracy": 0.80}, {"loss": 0.5, "accuracy": 0.70})],
        "reg": [_seed({"loss": 0.2, "mse": 0.2}, {"loss": 0.1, "mse": 0.1})],
        "lm": [_seed({"loss": 2.0}, {"loss": 2.1})],
        "none": [_seed(None, {"loss": 1.0})],
    }
    out = level_search.test_comparison(per_task)
    # accuracy up is better although the loss is worse; mse up is worse; loss alone: lower
    assert "clf: test accuracy 0.8 (tuned 0.7)\n" in out + "\n"
    assert "reg: test mse 0.2 (tuned 0.1) worse" in out
    assert "lm: test loss 2 (tuned 2.1)\n" in out + "\n"
    assert "none: no test metrics" in out
    assert out.endswith("on 2/3 tasks")


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
