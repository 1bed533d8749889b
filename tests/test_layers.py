"""The package's layers: imports flow one way, and the optimizer a user imports is light."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import torch

import lhopt
from lhopt.control import default_policy_path, layout_hash, load_policy

SRC = Path(lhopt.__file__).parent
# Each layer and the lhopt packages it may import (besides itself and `lhopt.extras`, the
# optional-dependency helper every layer may use).
ALLOWED = {
    "optim": set(),
    "control": {"optim"},
    "tasks": set(),
    "curves": {"optim", "tasks"},
    "bench": {"optim", "control", "tasks", "curves"},
    "meta": {"optim", "control", "tasks", "curves"},
    "integrations": {"optim", "control"},
}


def _lhopt_imports(path: Path) -> set[str]:
    """The lhopt subpackages a source file imports (at any depth: lazy imports count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "lhopt" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_imports_flow_one_way():
    wrong = []
    for layer, allowed in ALLOWED.items():
        for path in sorted((SRC / layer).rglob("*.py")):
            extra = _lhopt_imports(path) - allowed - {layer, "extras"}
            if extra:
                wrong.append(f"{path.relative_to(SRC)} imports {sorted(extra)}")
    assert not wrong, "\n".join(wrong)
    packages = {p.name for p in SRC.iterdir() if (p / "__init__.py").is_file()}
    assert packages <= set(ALLOWED), f"a package without a layer: {packages - set(ALLOWED)}"


def test_the_learned_optimizer_loads_no_benchmark_meta_training_task_or_ray_module():
    code = """
import json, sys
import torch
import lhopt
model = torch.nn.Linear(3, 1)
opt = lhopt.LearnedOptimizer(model.parameters(), total_steps=8)
for _ in range(8):
    loss = model(torch.ones(2, 3)).pow(2).mean()
    opt.zero_grad(); loss.backward(); opt.step(); opt.report(train_loss=loss)
print(json.dumps(sorted(sys.modules)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout.splitlines()[-1])
    heavy = ("ray", "scipy", "matplotlib", "lhopt.meta", "lhopt.bench", "lhopt.tasks")
    heavy += ("lhopt.curves",)
    assert not [m for m in loaded if m.split(".")[0] in heavy or m.startswith(heavy)]


def test_the_layout_covers_what_the_actor_reads_not_the_critics_inputs(monkeypatch):
    """Adding a training family widens the critic's privileged inputs; shipped policies keep
    loading, and their layout hash is unchanged."""
    import lhopt.meta.episode as episode
    import lhopt.tasks as tasks

    before = layout_hash()
    more = (*tasks.FAMILY_NAMES, "a-new-family")
    monkeypatch.setattr(tasks, "FAMILY_NAMES", more)
    monkeypatch.setattr(
        episode, "PRIVILEGED_NAMES", (*episode.PRIVILEGED_NAMES, "descriptor/extra")
    )
    assert layout_hash() == before
    net = load_policy(default_policy_path())
    assert net.priv_dim != len(episode.PRIVILEGED_NAMES)  # the file's critic, not today's


def test_loading_a_policy_leaves_the_global_rng_alone():
    params = list(torch.nn.Linear(2, 1).parameters())
    state = torch.get_rng_state()
    load_policy("default")
    lhopt.LearnedOptimizer(params, total_steps=8)
    assert torch.equal(torch.get_rng_state(), state)


def test_a_missing_extra_is_named_before_any_work(monkeypatch, capsys):
    import importlib

    import lhopt.extras
    from lhopt.cli import main

    real = importlib.import_module

    def without_ray(name, *args):
        if name.split(".")[0] == "ray":
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real(name, *args)

    monkeypatch.setattr(lhopt.extras.importlib, "import_module", without_ray)
    assert main(["bench", "--suite", "quick", "--out", "/nonexistent/never-written"]) == 2
    err = capsys.readouterr().err
    assert "'ray' is not installed" in err and "pip install 'lhopt[bench]'" in err
    assert main(["meta-train", "--config", "configs/smoke.toml", "--out", "/nonexistent/x"]) == 2
    assert "pip install 'lhopt[meta]'" in capsys.readouterr().err
