"""`benchmarks/screen_read.py`: the protocol's screen of two level_search reads by loss."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).parent.parent / "benchmarks" / "screen_read.py"
_SPEC = importlib.util.spec_from_file_location("screen_read", _PATH)
screen_read = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(screen_read)


def _read(curves: dict[str, list[list[float]]]) -> dict:
    """A level_search document of one suite: per task, one validation curve per seed, evaluated
    at steps 0, 5 and 10 of a budget of 10."""
    return {
        "suites": {
            "s": {
                "0.03": {
                    task: [
                        {"seed": i, "steps": [0, 5, 10], "val": v, "budget": 10}
                        for i, v in enumerate(vals)
                    ]
                    for task, vals in curves.items()
                }
            }
        }
    }


BASE = _read({"a": [[2.0, 1.0, 1.5], [2.0, 1.2, 1.2]], "b": [[3.0, 2.0, 2.0]]})


def test_a_probe_lower_on_every_pair_passes_and_its_shares_are_of_the_gain():
    probe = _read({"a": [[2.0, 0.9, 1.3], [2.0, 1.1, 1.1]], "b": [[3.0, 1.9, 1.9]]})
    read = screen_read.compare(BASE, probe)
    assert read["count"] == {"best": [3, 0], "T": [3, 0]}
    assert screen_read.passes(read)
    # task a: gains 1.0 and 0.8; best -0.1 each; at T -0.2 and -0.1
    best, at = read["means"][("s", "a")]
    assert best == pytest.approx((-0.1 / 1.0 - 0.1 / 0.8) / 2)
    assert at == pytest.approx((-0.2 / 1.0 - 0.1 / 0.8) / 2)
    assert not any(read["left"].values()) and read["ks"] == (["0.03"], ["0.03"])


def test_an_identical_read_does_not_pass_and_flags_nothing():
    read = screen_read.compare(BASE, BASE)
    assert read["count"] == {"best": [0, 0], "T": [0, 0]}
    assert not screen_read.passes(read)
    assert all(m == (0.0, 0.0) for m in read["means"].values())


def test_a_rise_above_the_bound_is_flagged_and_a_diverged_run_counts_higher():
    probe = _read({"a": [[2.0, 1.2, 1.5], [2.0, 1.2, 1.2]], "b": [[3.0, math.nan, math.nan]]})
    read = screen_read.compare(BASE, probe)
    assert read["means"][("s", "a")][0] == pytest.approx(0.1)  # +0.2 of a gain of 1.0, halved
    assert read["means"][("s", "b")][0] == pytest.approx(1.0)  # its best is its first loss
    assert read["per"][("s", "b")][0][1] == math.inf  # at T: diverged where the base did not
    assert read["count"]["T"] == [0, 1] and read["count"]["best"] == [0, 2]
    assert screen_read.flagged(read, 0.05) == [("s", "a"), ("s", "b")]


def test_a_crashed_run_is_left_out_and_counted_not_read_as_harm_or_gain():
    crashed = {"seed": 0, "steps": [], "val": [], "budget": None, "error": "RuntimeError: x"}
    probe = _read({"a": [[2.0, 0.9, 0.9], [2.0, 1.1, 1.1]], "b": [[3.0, 1.9, 1.9]]})
    probe["suites"]["s"]["0.03"]["b"] = [crashed]
    read = screen_read.compare(BASE, probe)
    assert ("s", "b") not in read["per"] and read["left"]["probe crashed"] == 1
    assert read["count"]["best"] == [2, 0]
    base = _read({"a": [[2.0, 1.0, 1.5], [2.0, 1.2, 1.2]], "b": [[3.0, 2.0, 2.0]]})
    base["suites"]["s"]["0.03"]["a"][0] = crashed
    back = screen_read.compare(base, probe)
    assert back["left"]["base crashed"] == 1 and len(back["per"][("s", "a")]) == 1
    assert screen_read.flagged(back, 0.05) == []


def test_a_base_that_gained_nothing_or_diverged_gives_the_sign_of_the_change():
    base = _read({"a": [[2.0, 2.1, 2.2], [2.0, math.nan, math.nan]]})
    probe = _read({"a": [[2.0, 1.5, 1.4], [2.0, math.nan, math.nan]]})
    read = screen_read.compare(base, probe)
    # seed 0: no gain, the probe lower (-inf); seed 1: both diverged the same way (0)
    assert read["per"][("s", "a")] == [(-math.inf, -math.inf), (0.0, 0.0)]
    assert read["means"][("s", "a")] == (0.0, 0.0)  # over the finite shares
    assert screen_read.flagged(read, 0.05) == []
    assert screen_read.share(1.0, math.inf, 0.5) == math.inf
    assert screen_read.share(1.0, 1.2, 0.5) == pytest.approx(0.4)


def test_runs_only_one_read_holds_are_counted_and_the_ks_reported():
    probe = _read({"a": [[2.0, 0.9, 1.4]]})
    probe["suites"]["s"] = {"0.0301": probe["suites"]["s"]["0.03"]}
    read = screen_read.compare(BASE, probe)
    assert read["left"]["base only"] == 2 and read["left"]["probe only"] == 0
    lines = screen_read.summary("probe", read, 0.05)
    assert "base only 2" in lines[-2] and "['0.0301'], the base at ['0.03']" in lines[-1]


def test_the_sign_test_is_two_sided():
    assert screen_read.sign_p(5, 5) == 1.0
    assert screen_read.sign_p(10, 0) == pytest.approx(2 / 2**10)
    assert screen_read.sign_p(0, 10) == screen_read.sign_p(10, 0)
    assert math.isnan(screen_read.sign_p(0, 0))


def test_the_command_prints_the_verdict_and_refuses_a_bad_bound(tmp_path):
    base, probe = tmp_path / "base.json", tmp_path / "probe.json"
    base.write_text(json.dumps(BASE))
    probe.write_text(json.dumps(_read({"a": [[2.0, 0.9, 1.4]]})))
    run = [sys.executable, str(_PATH), str(base), str(probe)]
    out = subprocess.run([*run, "--null", str(base)], capture_output=True, text=True, check=True)
    assert "screen: passes" in out.stdout and "null at T: 0 of 0" in out.stdout
    bad = subprocess.run([*run, "--bound", "-1"], capture_output=True, text=True)
    assert bad.returncode != 0 and "--bound -1.0" in bad.stderr
    other = tmp_path / "other.json"
    other.write_text(json.dumps(_read({"z": [[1.0, 0.5, 0.5]]})))
    none = subprocess.run([*run[:2], str(base), str(other)], capture_output=True, text=True)
    assert none.returncode != 0 and "share no task" in none.stderr
