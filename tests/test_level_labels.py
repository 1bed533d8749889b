"""`benchmarks/level_labels.py` reads the seeds' agreement on a task's best fixed level and the
regret of one label per task."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).parent.parent / "benchmarks" / "level_labels.py"
_SPEC = importlib.util.spec_from_file_location("level_labels", _PATH)
level_labels = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(level_labels)


def _runs(bests: dict[str, list[float]], first: float = 1.0) -> dict:
    """{K: {seed: run}} from each K's best losses by seed."""
    return {k: {s: {"first": first, "best": b} for s, b in enumerate(v)} for k, v in bests.items()}


def test_agreement_and_regret_of_one_label():
    runs = {
        # both seeds best at 0.015: the same K, no regret
        "a": _runs({"0.0075": [0.5, 0.5], "0.015": [0.2, 0.3], "0.03": [0.4, 0.4]}),
        # seed 0 best at 0.0075, seed 1 at 0.015: within a factor 2; the label (best on the
        # mean) is 0.015, which gives up 0.1 of seed 0's gain of 0.8
        "b": _runs({"0.0075": [0.2, 0.6], "0.015": [0.3, 0.2], "0.03": [0.9, 0.9]}),
        # two factors of 2 apart
        "c": _runs({"0.0075": [0.1, 0.9], "0.015": [0.5, 0.5], "0.03": [0.8, 0.1]}),
    }
    out = level_labels.summarise(runs)
    assert (out["tasks"], out["same"], out["within_factor_2"]) == (3, 1, 2)
    assert out["labels"]["b"] == {"label": "0.015", "per_seed": {0: "0.0075", 1: "0.015"}}
    # c's label is 0.03 (the lowest mean, 0.45): it gives up 0.7 of seed 0's gain of 0.9
    assert out["labels"]["c"]["label"] == "0.03"
    regrets = [0, 0, 0.1 / 0.8, 0, 0.7 / 0.9, 0]
    assert out["mean_regret"] == pytest.approx(sum(regrets) / 6)
    assert out["max_regret"] == pytest.approx(0.7 / 0.9)
