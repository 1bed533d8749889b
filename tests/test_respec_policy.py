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


def test_spec_from_runs_one_file_s_network_under_another_s_spec_and_start(tmp_path):
    shipped = load_policy("default")
    cmd = [sys.executable, str(SCRIPT), str(default_policy_path())]
    spec_file, net_file = tmp_path / "spec.pt", tmp_path / "net.pt"
    subprocess.run([*cmd, str(spec_file), "--table-decay", "1", "--initial", "lr=0.01"], check=True)
    other = load_policy("default")
    with torch.no_grad():
        other.pre[0].weight.add_(1.0)
    data = torch.load(default_policy_path(), weights_only=True)
    torch.save(
        {**data, "state_dict": other.state_dict(), "meta": {**data["meta"], "iteration": 7}},
        net_file,
    )
    out = tmp_path / "out.pt"
    script = [sys.executable, str(SCRIPT), str(net_file), str(out)]
    subprocess.run([*script, "--spec-from", str(spec_file)], check=True)
    written = load_policy(out)
    assert written.spec.table_decay_factor == 1.0 != shipped.spec.table_decay_factor
    assert written.initial == {**shipped.initial, "lr": 0.01}
    assert torch.equal(written.pre[0].weight, shipped.pre[0].weight + 1.0)
    assert torch.load(out, weights_only=True)["meta"]["iteration"] == 7  # the network's run
    subprocess.run([*script, "--spec-from", str(spec_file), "--fallback-cut", "0.5"], check=True)
    assert load_policy(out).spec.fallback_cut == 0.5  # the other options apply after

    from dataclasses import replace

    from lhopt.control.policy_file import save_policy_file

    unreadable = tmp_path / "epochs.pt"  # two more features: the network would read others
    save_policy_file(shipped, unreadable, spec=replace(shipped.spec, epochs=True))
    bad = subprocess.run([*script, "--spec-from", str(unreadable)], capture_output=True, text=True)
    assert bad.returncode == 2 and "other features or actions" in bad.stderr


def test_keep_margin_raises_only_the_lr_head_s_keep_logit(tmp_path):
    shipped = load_policy("default")
    out = tmp_path / "out.pt"
    cmd = [sys.executable, str(SCRIPT), str(default_policy_path()), str(out)]
    subprocess.run([*cmd, "--keep-margin", "1.5"], check=True, capture_output=True)
    written = load_policy(out)
    keep = 3  # the lr head's choices: 0.5, 0.707, 0.9, 1.0, 1.1, 1.414, 2.0
    diff = written.heads.bias - shipped.heads.bias
    assert torch.allclose(diff[keep], torch.tensor(1.5))
    assert torch.count_nonzero(diff) == 1
    assert written.spec == shipped.spec and written.initial == shipped.initial
    bad = subprocess.run([*cmd, "--keep-margin", "nan"], capture_output=True, text=True)
    assert bad.returncode == 2 and "nan" in bad.stderr
