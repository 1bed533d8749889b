"""`benchmarks/lr_adaptation.py` reads a policy's level with the cut of a run that started over
(item 6's figure stands on it)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from lhopt.control.policy_file import ControlSpec
from lhopt.optim import schedules

_PATH = Path(__file__).parent.parent / "benchmarks" / "lr_adaptation.py"
_SPEC = importlib.util.spec_from_file_location("lr_adaptation", _PATH)
lr_adaptation = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(lr_adaptation)


def test_the_level_carries_the_cut_of_a_run_that_started_over():
    spec = ControlSpec(schedule="cosine", horizon_power=0.5, overfit_gap=0.2)
    total, horizon = 1000, spec.horizon_factor(1000)
    shape = schedules.get("cosine")
    steps = list(range(0, total + 1, 50))
    cut_at = [1.0 if s <= 200 else 0.1 for s in steps]  # started over at 20% of the run
    base = [0.03] * len(steps)
    lr = [
        b * shape(max(s, 1), total) * horizon * c
        for s, b, c in zip(steps, base, cut_at, strict=True)
    ]
    run = {"steps": steps, "hparams": {"lr": lr, "base_lr": base}}
    assert lr_adaptation._cuts(run, spec, total, horizon) == pytest.approx(cut_at)


def test_the_level_in_adamw_units_carries_the_runs_trust_factor():
    from lhopt.control import load_policy
    from lhopt.curves.drivers import TUNED_LR_GRID

    spec = load_policy("default").spec
    total, horizon = 1000, spec.horizon_factor(1000)
    shape = schedules.get(spec.schedule)
    steps = list(range(0, total + 1, 100))
    base = [0.02] * len(steps)
    lr = [b * shape(max(s, 1), total) * horizon for s, b in zip(steps, base, strict=True)]
    job = {"task": "t", "seed": 0, "multiple": 1.0}
    learned = {"lr": lr, "base_lr": base, "adamw_lr": [x * 0.1 for x in lr]}
    lhopt = {"optimizer": "lhopt", "lr": None}
    runs = [{"job": {**job, **lhopt}, "hparams": learned, "steps": steps, "budget": total}]
    for g in TUNED_LR_GRID:  # the grid's lowest final validation loss at 3e-3
        val = [1.0, 0.5 + abs(g - 3e-3)]
        runs.append({"job": {**job, "optimizer": "adamw-cosine", "lr": g}, "val": val})
    level, tuned, in_adamw_units = lr_adaptation.levels({"runs": runs})["t"]
    assert tuned == pytest.approx(3e-3)
    assert level == pytest.approx(0.02 * horizon)
    assert in_adamw_units == pytest.approx(0.002 * horizon)
    del learned["adamw_lr"]  # results written before it: no level in AdamW's units
    assert lr_adaptation.levels({"runs": runs})["t"][2] is None


def test_the_best_fixed_level_is_the_start_whose_runs_end_lowest(tmp_path):
    from lhopt.control import load_policy
    from lhopt.control.policy_file import save_policy_file
    from lhopt.curves.drivers import TUNED_LR_GRID

    shipped = load_policy("default")
    spec = shipped.spec
    total, horizon = 1000, spec.horizon_factor(1000)
    shape = schedules.get(spec.schedule)
    steps = list(range(0, total + 1, 100))
    docs = []
    for k, final in ((0.01, 0.2), (0.03, 0.3), (0.1, 0.25)):
        path = tmp_path / f"keep-{k}.pt"
        save_policy_file(shipped, path, spec=spec, initial={**shipped.initial, "lr": k})
        runs = []
        for seed in (0, 1):
            job = {"task": "t", "seed": seed, "multiple": 1.0}
            base = [k] * len(steps)
            lr = [b * shape(max(s, 1), total) * horizon for s, b in zip(steps, base, strict=True)]
            val = [1.0] * (len(steps) - 1) + [final + 0.01 * seed]
            runs.append(
                {
                    "job": {**job, "optimizer": "lhopt", "lr": None},
                    "hparams": {"lr": lr, "base_lr": base},
                    "steps": steps,
                    "val": val,
                    "budget": total,
                    "total_steps": total,
                }
            )
            for g in TUNED_LR_GRID:
                tuned_val = [1.0, 0.5 + abs(g - 3e-3)]
                runs.append(
                    {"job": {**job, "optimizer": "adamw-cosine", "lr": g}, "val": tuned_val}
                )
        docs.append({"policy": str(path), "runs": runs})
    level, tuned, _ = lr_adaptation.best_fixed(docs)["t"]
    assert level == pytest.approx(0.01 * horizon) and tuned == pytest.approx(3e-3)
    with pytest.raises(SystemExit, match="at least two"):
        lr_adaptation.best_fixed(docs[:1])
