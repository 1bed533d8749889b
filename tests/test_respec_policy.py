"""`benchmarks/respec_policy.py` writes the same network under another spec or normaliser
(docs/experiments.md's reads of stages under the shipped start-over rule stand on it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from lhopt.control import load_policy
from lhopt.control.policy_file import default_policy_path

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "respec_policy.py"


def test_the_network_is_kept_and_the_spec_or_normaliser_changed(tmp_path):
    shipped = load_policy("default")
    other = load_policy("default")
    with torch.no_grad():
        other.obs_norm.mean.add_(1.0)
    torch.save(
        {**torch.load(default_policy_path(), weights_only=True), "state_dict": other.state_dict()},
        tmp_path / "other.pt",
    )
    out = tmp_path / "out.pt"
    cmd = [sys.executable, str(SCRIPT), str(default_policy_path()), str(out)]
    subprocess.run([*cmd, "--overfit-gap", "0.5"], check=True, capture_output=True)
    written = load_policy(out)
    assert written.spec.overfit_gap == 0.5 and written.initial == shipped.initial
    pairs = zip(written.state_dict().items(), shipped.state_dict().values(), strict=True)
    for (name, a), b in pairs:
        assert torch.equal(a, b), name

    subprocess.run([*cmd, "--hide-val", "true"], check=True, capture_output=True)
    assert load_policy(out).spec.hide_val and not shipped.spec.hide_val

    subprocess.run([*cmd, "--schedule", "linear"], check=True, capture_output=True)
    assert load_policy(out).spec.schedule == "linear" != shipped.spec.schedule
    bad = subprocess.run([*cmd, "--schedule", "step"], capture_output=True, text=True)
    assert bad.returncode == 2 and "step" in bad.stderr

    subprocess.run([*cmd, "--horizon-power", "0.7"], check=True, capture_output=True)
    assert load_policy(out).spec.horizon_power == 0.7 != shipped.spec.horizon_power
    bad = subprocess.run([*cmd, "--horizon-power", "-1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "-1" in bad.stderr

    subprocess.run([*cmd, "--no-decay-vectors", "true"], check=True, capture_output=True)
    assert load_policy(out).spec.no_decay_vectors is True
    subprocess.run([*cmd, "--no-decay-vectors", "false"], check=True, capture_output=True)
    assert not load_policy(out).spec.no_decay_vectors

    subprocess.run([*cmd, "--table-decay", "1"], check=True, capture_output=True)
    assert load_policy(out).spec.table_decay_factor == 1.0 != shipped.spec.table_decay_factor
    bad = subprocess.run([*cmd, "--table-decay", "11"], capture_output=True, text=True)
    assert bad.returncode == 2 and "table_decay_factor=11" in bad.stderr

    subprocess.run([*cmd, "--fallback-cut", "0.5"], check=True, capture_output=True)
    assert load_policy(out).spec.fallback_cut == 0.5
    bad = subprocess.run(
        [*cmd, "--fallback-cut", "0.5", "--overfit-gap", "0"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "fallback_cut=0.5 with overfit_gap=0" in bad.stderr

    subprocess.run([*cmd, "--norm-from", str(tmp_path / "other.pt")], check=True)
    written = load_policy(out)
    assert written.spec.overfit_gap == shipped.spec.overfit_gap
    assert torch.equal(written.obs_norm.mean, shipped.obs_norm.mean + 1.0)
    assert torch.equal(written.pre[0].weight, shipped.pre[0].weight)


def test_initial_entries_are_replaced_and_bad_ones_named(tmp_path):
    shipped = load_policy("default")
    out = tmp_path / "out.pt"
    cmd = [sys.executable, str(SCRIPT), str(default_policy_path()), str(out)]
    subprocess.run([*cmd, "--initial", "lamb_power=0.5"], check=True, capture_output=True)
    assert load_policy(out).initial == {**shipped.initial, "lamb_power": 0.5}
    bad = subprocess.run([*cmd, "--initial", "lamb_pow=0.5"], capture_output=True, text=True)
    assert bad.returncode == 2 and "lamb_pow" in bad.stderr
    bad = subprocess.run([*cmd, "--initial", "lamb_power"], capture_output=True, text=True)
    assert bad.returncode == 2 and "NAME=VALUE" in bad.stderr
