"""`benchmarks/readme_rows.py` writes the README's results rows from `lhopt bench` results."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).parent.parent / "benchmarks" / "readme_rows.py"
_SPEC = importlib.util.spec_from_file_location("readme_rows", _PATH)
readme_rows = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(readme_rows)


def _doc(suite="unseen12", lower=True):
    over = {
        b: {
            "geomean": 1.0 + i / 10,
            "lower_bounds": lower and i == 0,
            "min": 0.5 + i / 100,
            "below_1": i,
            "tasks": 2,
            "interval": [0.9, 1.2],
        }
        for i, b in enumerate(readme_rows.COLUMNS)
    }
    tie = {"geomean": 0.74, "min": 0.41, "below_1": 1, "tasks": 2}
    return {"suite": suite, "tasks": {"a": {}, "b": {}}, "summary": {"lhopt": over}, "tie": tie}


def test_a_row_reads_lhopt_over_the_baselines_in_the_readme_order():
    assert readme_rows.row(_doc()) == (
        "| unseen12 (2) | 1.00* (min 0.50, 0/2 <1; a tie 0.74) | 1.10 (min 0.51, 1/2 <1) | "
        "1.20 (min 0.52, 2/2 <1) | 1.30 (min 0.53, 3/2 <1) | 1.40 (min 0.54, 4/2 <1) |"
    )
    doc = _doc()
    del doc["summary"]["lhopt"]["prodigy"]
    with pytest.raises(ValueError, match=r"no `lhopt` speedup over \['prodigy'\]"):
        readme_rows.row(doc)
    doc = _doc()
    del doc["tie"]
    with pytest.raises(ValueError, match="no tie with the tuned schedule"):
        readme_rows.row(doc)


def test_the_shipped_readme_names_its_suites_and_only_their_rows_are_replaced():
    readme = (_PATH.parents[1] / "README.md").read_text()
    suites = readme_rows.readme_suites(readme)
    assert {"validation", "selection", "ood", "unseen12"} <= set(suites)
    new = readme_rows.replace_rows(readme, {"unseen12": readme_rows.row(_doc())})
    changed = [(a, b) for a, b in zip(readme.splitlines(), new.splitlines(), strict=True) if a != b]
    assert len(changed) == 1 and changed[0][1].startswith("| unseen12 (2) | 1.00*")
    with pytest.raises(ValueError, match=r"suites \['nowhere'\]"):
        readme_rows.replace_rows(readme, {"nowhere": "| nowhere (1) |"})


def test_the_command_line_prints_rows_and_names_a_bad_folder(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(_doc()))
    (run / "report.md").write_text("# Benchmark\n\n2 tasks.\n")
    out = subprocess.run(
        [sys.executable, str(_PATH), str(run)], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("| unseen12 (2) | 1.00*")
    bad = subprocess.run(
        [sys.executable, str(_PATH), str(tmp_path / "none")], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "none" in bad.stderr
    assert readme_rows.report_with("# B\n\n2 tasks.\n\nrest\n", "About.") == (
        "# B\n\n2 tasks. About.\n\nrest\n"
    )
