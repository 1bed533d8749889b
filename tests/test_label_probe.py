"""The read of `benchmarks/label_probe.py` scores what its figures in docs/experiments.md say:
a label an input tells is read on a family left out, a label no input tells is not."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

_PATH = Path(__file__).parent.parent / "benchmarks" / "label_probe.py"
_SPEC = importlib.util.spec_from_file_location("label_probe", _PATH)
label_probe = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(label_probe)


def test_a_read_transfers_to_a_left_out_family_only_where_an_input_tells_the_label():
    rng = np.random.default_rng(0)
    n = 600
    x = rng.normal(size=(n, 5))
    fams = np.repeat(np.arange(3), n // 3)
    held = fams == 2
    told = (x[:, 1] + 0.1 * rng.normal(size=n) > 0).astype(np.float64)
    read, majority = label_probe.accuracy(~held, held, x, told, 1e-2)
    assert read > 0.9 and majority < 0.6
    noise = (rng.random(n) < 0.5).astype(np.float64)
    read, _ = label_probe.accuracy(~held, held, x, noise, 1e-2)
    assert read < max(noise[held].mean(), 1 - noise[held].mean()) + 0.08
