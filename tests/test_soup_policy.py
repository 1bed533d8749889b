"""`benchmarks/soup_policy.py` averages policy files' networks entry by entry and refuses
members that are not the same network under the same spec and start."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lhopt.control import load_policy
from lhopt.control.policy_file import default_policy_path, save_policy_file

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "soup_policy.py"


def _shifted(tmp_path: Path, name: str, by: float, **spec_changes) -> Path:
    net = load_policy("default")
    with torch.no_grad():
        net.pre[0].weight.add_(by)
        net.obs_norm.mean.add_(by)
    path = tmp_path / name
    save_policy_file(net, path, spec=dataclasses.replace(net.spec, **spec_changes))
    return path


def test_the_average_is_entry_by_entry_under_the_members_spec_and_start(tmp_path):
    shipped = load_policy("default")
    up = _shifted(tmp_path, "up.pt", 3.0)
    out = tmp_path / "soup.pt"
    cmd = [sys.executable, str(SCRIPT), str(out), str(default_policy_path()), str(up)]
    subprocess.run(cmd, check=True, capture_output=True)
    written = load_policy(out)
    assert written.spec == shipped.spec and written.initial == shipped.initial
    assert torch.allclose(written.pre[0].weight, shipped.pre[0].weight + 1.5, atol=1e-5)
    assert torch.allclose(written.obs_norm.mean, shipped.obs_norm.mean + 1.5, atol=1e-5)
    assert torch.equal(written.heads.weight, shipped.heads.weight)
    record = torch.load(out, weights_only=True)["soup"]
    assert [r["path"] for r in record] == [str(default_policy_path()), str(up)]

    subprocess.run([*cmd, "--weights", "3", "1"], check=True, capture_output=True)
    written = load_policy(out)
    assert torch.allclose(written.pre[0].weight, shipped.pre[0].weight + 0.75, atol=1e-5)


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--weights", "1"], "1 weights for 2"), (["--weights", "1", "-1"], "must be finite")],
)
def test_bad_weights_are_named(tmp_path, extra, message):
    up = _shifted(tmp_path, "up.pt", 1.0)
    cmd = [sys.executable, str(SCRIPT), str(tmp_path / "o.pt"), str(default_policy_path()), str(up)]
    bad = subprocess.run([*cmd, *extra], capture_output=True, text=True)
    assert bad.returncode == 2 and message in bad.stderr


def test_a_member_under_another_spec_is_refused_by_name(tmp_path):
    other = _shifted(tmp_path, "other.pt", 0.0, overfit_gap=0.5)
    out = tmp_path / "o.pt"
    cmd = [sys.executable, str(SCRIPT), str(out), str(default_policy_path()), str(other)]
    bad = subprocess.run(cmd, capture_output=True, text=True)
    assert bad.returncode == 2 and "other.pt" in bad.stderr and "spec" in bad.stderr
    assert not out.exists()
