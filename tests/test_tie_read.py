"""`benchmarks/tie_read.py`: a run identical to the tuned schedule reads s* / T, the share of T
at which the schedule's own best validation loss comes, by the benchmark's speedup."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

_PATH = Path(__file__).parent.parent / "benchmarks" / "tie_read.py"
_SPEC = importlib.util.spec_from_file_location("tie_read", _PATH)
tie_read = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(tie_read)


def _runs(val_t):
    steps = [0, 25, 50, 75, 100]
    # the longer budgets end lower, as a cosine over more steps does
    return {
        1.0: (steps, val_t),
        1.5: ([0, 75, 150], [1.0, 0.5, 0.05]),
        2.0: ([0, 100, 200], [1.0, 0.5, 0.01]),
    }


def test_a_loss_that_falls_to_the_end_ties_at_one():
    assert tie_read.tie_speedup(_runs([1.0, 0.6, 0.4, 0.3, 0.2]), 100) == (1.0, 1.0)


def test_an_early_best_reads_where_it_came():
    # best at step 50, then the run overfits: a tie reads a half, however the rest goes
    value, at = tie_read.tie_speedup(_runs([1.0, 0.6, 0.3, 0.35, 0.5]), 100)
    assert value == pytest.approx(0.5)
    assert at == pytest.approx(0.5)


def test_lhopt_speedups_are_read_from_bench_reports(tmp_path):
    doc = {
        "tasks": {
            "a": {"optimizers": {"lhopt": {"over": {"adamw-cosine-tuned": {"speedup": 0.7}}}}},
            "b": {"optimizers": {"adamw": {"over": {}}}},
        }
    }
    (tmp_path / "results.json").write_text(json.dumps(doc))
    assert tie_read.lhopt_speedups([str(tmp_path)]) == {"a": 0.7}
