"""`benchmarks/pilot_read.py` moves the pilot's lr along the grid and picks the lr tuned once
per task from the other seeds' final losses."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

_PATH = Path(__file__).parent.parent / "benchmarks" / "pilot_read.py"
_SPEC = importlib.util.spec_from_file_location("pilot_read", _PATH)
pilot_read = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(pilot_read)

GRID = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]


def test_a_shift_moves_along_the_grid_and_stops_at_its_ends():
    assert pilot_read.shifted(GRID, 1e-3, -1) == 3e-4
    assert pilot_read.shifted(GRID, 1e-3, 1) == 3e-3
    assert pilot_read.shifted(GRID, 1e-2, 1) == 1e-2
    assert pilot_read.shifted(GRID, 1e-4, -2) == 1e-4


def test_the_cv_choice_averages_the_other_seeds_final_losses_and_never_takes_a_divergence():
    finals = {lr: [1.0, 1.0] for lr in GRID}
    finals[3e-3] = [0.5, 0.9]  # mean 0.7: lowest
    finals[1e-2] = [0.1, math.inf]  # one seed diverged
    assert pilot_read.cv_lr(GRID, finals) == 3e-3
    assert pilot_read.final_loss([1.0, math.nan]) == math.inf
    assert pilot_read.final_loss([1.0, 0.4]) == 0.4
