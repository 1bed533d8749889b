"""`benchmarks/tie_read.py` reads `lhopt`'s speedups beside the ties (the tie itself:
tests/test_bench.py, tests/test_speedup.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

_PATH = Path(__file__).parent.parent / "benchmarks" / "tie_read.py"
_SPEC = importlib.util.spec_from_file_location("tie_read", _PATH)
tie_read = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(tie_read)


def test_lhopt_speedups_are_read_from_bench_reports(tmp_path):
    doc = {
        "tasks": {
            "a": {"optimizers": {"lhopt": {"over": {"adamw-cosine-tuned": {"speedup": 0.7}}}}},
            "b": {"optimizers": {"adamw": {"over": {}}}},
        }
    }
    (tmp_path / "results.json").write_text(json.dumps(doc))
    assert tie_read.lhopt_speedups([str(tmp_path)]) == {"a": 0.7}
