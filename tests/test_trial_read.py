"""`benchmarks/trial_read.py` picks, per task and seed, the start whose early validation loss
is lowest, and charges the discarded branches."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

_PATH = Path(__file__).parent.parent / "benchmarks" / "trial_read.py"
_SPEC = importlib.util.spec_from_file_location("trial_read", _PATH)
trial_read = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(trial_read)


def _run(seed, early, late, speedup):
    # validation at steps 0, 10 (inside a tenth of T = 100), 50 and 100
    return {
        "seed": seed,
        "budget": 100,
        "steps": [0, 10, 50, 100],
        "val": [1.0, early, late, late],
        "adamw-cosine-tuned": speedup,
        "adamw": 2 * speedup,
    }


def test_the_trial_follows_the_early_loss_and_the_oracle_the_whole_run():
    suite = {
        "0.01": {"t": [_run(0, 0.9, 0.1, 1.6), _run(1, 0.5, 0.2, 0.5)]},
        "0.03": {"t": [_run(0, 0.5, 0.3, 0.8), _run(1, 0.9, 0.3, 1.0)]},
    }
    out = trial_read.read(suite, 0.1)
    assert out["start 0.01"]["adamw-cosine-tuned"] == pytest.approx(math.sqrt(1.6 * 0.5))
    assert out["oracle"]["adamw-cosine-tuned"] == pytest.approx(math.sqrt(1.6 * 1.0))
    # seed 0's early loss picks 0.03 (0.8), seed 1's picks 0.01 (0.5)
    assert out["trial"]["adamw-cosine-tuned"] == pytest.approx(math.sqrt(0.8 * 0.5))
    assert out["trial"]["adamw"] == pytest.approx(2 * math.sqrt(0.8 * 0.5))
    assert out["trial with cost"]["adamw-cosine-tuned"] == pytest.approx(math.sqrt(0.8 * 0.5) / 1.1)


def test_a_single_start_is_refused_by_name(tmp_path, capsys, monkeypatch):
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"suites": {"s": {"0.03": {"t": [_run(0, 0.5, 0.2, 1.0)]}}}}))
    monkeypatch.setattr("sys.argv", ["trial_read.py", str(path)])
    with pytest.raises(SystemExit):
        trial_read.main()
    assert "a trial needs at least two" in capsys.readouterr().err
