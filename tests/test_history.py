"""Seeing what the policy did: per-group history, the decision log, plot_history, the bench's
figures."""

from __future__ import annotations

import logging
import struct

import pytest
import torch
from torch import nn

import lhopt
from lhopt.control.actions import OFFICIAL_HEADS

HEADS = [h.hparam for h in OFFICIAL_HEADS]


def run(policy, steps=40, decisions=10, **kwargs):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    groups = [
        {"params": model[0].parameters()},
        {"params": model[2].parameters(), "lr": 3e-3, "weight_decay": 0.0},
    ]
    opt = lhopt.LearnedOptimizer(
        groups, total_steps=steps, policy=policy, decisions=decisions, sample=True, **kwargs
    )
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.randn(8, 4, generator=g)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        opt.report(train_loss=loss, val_loss=loss.item())
    return opt


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_history_records_every_param_group(policy_file):
    opt = run(policy_file)
    for r in opt.history:
        assert len(r["groups"]) == 2 and set(r["groups"][0]) == set(HEADS)
        assert r["hparams"] == r["groups"][0]  # the old key keeps its meaning
    last = opt.history[-1]["groups"]
    for g, rec in zip(opt.param_groups, last, strict=True):
        assert {h: g[h] for h in HEADS} == rec
    assert last[1]["weight_decay"] == 0.0  # switched off in group 1, and left off
    lrs = [r["groups"][1]["lr"] / r["groups"][0]["lr"] for r in opt.history]
    assert lrs == pytest.approx([3.0] * len(lrs))  # one action, applied to both groups


def test_one_line_per_decision_on_the_lhopt_logger_and_with_verbose(policy_file, caplog, capsys):
    with caplog.at_level(logging.INFO, logger="lhopt"):
        opt = run(policy_file, verbose=True)
    lines = [r.getMessage() for r in caplog.records if r.name == "lhopt"]
    assert len(lines) == len(opt.history) == 10
    assert lines[3].startswith("lhopt step 12/40: train ") and "| lr " in lines[3]
    assert "register " in lines[3]
    assert capsys.readouterr().err.splitlines() == lines  # verbose prints the same lines
    run(policy_file)
    assert capsys.readouterr().err == ""  # quiet by default


def test_plot_history_draws_every_hyperparameter(policy_file, tmp_path):
    opt = run(policy_file)
    path = lhopt.plot_history(opt.history, tmp_path / "h.png", total_steps=40, title="t")
    w, h = png_size(path)
    # 1 loss panel + 8 hyperparameters on a grid of 3 columns: 3 x 3 panels of 4.2 x 2.8 in
    assert (w, h) == (round(3 * 4.2 * 110), round(3 * 2.8 * 110))
    old = [{k: v for k, v in r.items() if k != "groups"} for r in opt.history]
    assert lhopt.plot_history(old, tmp_path / "old.svg").stat().st_size > 10_000
    with pytest.raises(ValueError, match="empty"):
        lhopt.plot_history([], tmp_path / "x.png")


def test_bench_hparams_figure_has_a_column_per_moved_hyperparameter(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from lhopt.bench import report

    steps = [0, 5, 10, 20]
    runs = {
        "adamw": {"steps": steps, "val": [1.0, 0.8, 0.7, 0.6], "hparams": {"lr": [1e-3] * 4}},
        "lhopt": {
            "steps": steps,
            "val": [1.0, 0.7, 0.6, 0.5],
            "hparams": {
                "lr": [1e-3, 2e-3, 1e-3, 5e-4],
                "weight_decay": [1e-2] * 4,  # never moved: no column
                "epsilon": [1e-6, 5e-7, 5e-7, 5e-7],
                "clip_fraction": [0.8, 0.85, None, 0.9],
            },
        },
    }
    doc = {
        "tasks": {"a": {"budget": 10}, "b": {"budget": 10}},
        "optimizers": ["adamw", "lhopt"],
        "seeds": [0],
        "runs": [
            {"job": {"task": "a", "seed": 0, "optimizer": x, "lr": None, "multiple": 1.0}, **r}
            for x, r in runs.items()
        ],
    }
    monkeypatch.setattr(report, "main_run", lambda results, task, seed, x: runs[x])
    assert report.moved_hparams(doc) == ["lr", "epsilon", "clip_fraction"]
    paths = report.figures(doc, tmp_path)
    assert [p.name for p in paths] == ["curves.png", "hparams.png"]
    assert png_size(paths[1]) == (round(3 * 3.2 * 110), round(2 * 2.4 * 110))
    assert "every hyperparameter" in report.markdown(
        {**doc, "suite": "s", "wall_time_s": 1.0, "baselines": [], "summary": {}, "errors": []}
    )
