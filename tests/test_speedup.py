import math

import pytest

from lhopt.curves.speedup import (
    best_so_far,
    first_reach,
    geometric_mean,
    speedup_budget_dependent,
    speedup_budget_independent,
    tie_speedup,
)

T = 100
STEPS_2T = list(range(0, 2 * T + 1, 10))


def linear_curve(steps, start=10.0, slope=0.02):
    return [start - slope * s for s in steps]


def test_running_minimum_ignores_rises_and_non_finite_values():
    assert best_so_far([3.0, 2.0, 2.5, math.nan, 1.0]) == [3.0, 2.0, 2.0, 2.0, 1.0]
    assert best_so_far([math.inf, 4.0]) == [math.inf, 4.0]


def test_first_reach_interpolates_between_evaluations():
    assert first_reach([0, 10, 20], [5.0, 3.0, 1.0], 2.0) == pytest.approx(15.0)
    assert first_reach([0, 10, 20], [5.0, 3.0, 1.0], 5.0) == 0.0
    assert first_reach([0, 10, 20], [5.0, 3.0, 1.0], 0.5) is None


def test_a_baseline_half_as_fast_gives_two_and_a_faster_one_less_than_one():
    # Baseline loss falls linearly from 10 by 0.02 per step: it reaches 8 at step 100.
    base = linear_curve(STEPS_2T)
    s = speedup_budget_independent(STEPS_2T, base, target=7.0, budget=T)  # reached at 150
    assert s.value == pytest.approx(1.5) and not s.lower_bound
    s = speedup_budget_independent(STEPS_2T, base, target=9.0, budget=T)  # reached at 50
    assert s.value == pytest.approx(0.5)
    s = speedup_budget_independent(STEPS_2T, base, target=1.0, budget=T)  # never within 2T
    assert s.value == 2.0 and s.lower_bound and s.t_b is None


def test_an_overfitting_baseline_is_taken_at_its_best():
    steps = [0, 50, 100, 150, 200]
    base = [10.0, 6.0, 9.0, 12.0, 15.0]  # best 6 at step 50, then overfits
    assert speedup_budget_independent(steps, base, 6.0, T).value == pytest.approx(0.5)


def test_budget_dependent_baseline_uses_the_T_run_then_interpolates_budgets():
    def run(mult, final):
        steps = list(range(0, int(mult * T) + 1, 10))
        return steps, [10.0 - (10.0 - final) * s / steps[-1] for s in steps]

    runs = {1.0: run(1.0, 4.0), 1.5: run(1.5, 3.0), 2.0: run(2.0, 2.5)}
    # Reached inside the T run: the step at which it was reached.
    assert speedup_budget_dependent(runs, 7.0, T).value == pytest.approx(0.5)
    # Between the T run's best (4.0) and the 1.5T run's best (3.0): halfway -> 1.25T.
    assert speedup_budget_dependent(runs, 3.5, T).value == pytest.approx(1.25)
    # Between 1.5T (3.0) and 2T (2.5): 2.75 is halfway -> 1.75T.
    assert speedup_budget_dependent(runs, 2.75, T).value == pytest.approx(1.75)
    s = speedup_budget_dependent(runs, 2.0, T)
    assert s.value == 2.0 and s.lower_bound


def test_a_tie_with_a_scheduled_baseline_reads_where_its_best_came():
    longer = {1.5: ([0, 150], [10.0, 1.0]), 2.0: ([0, 200], [10.0, 0.5])}
    falling = {1.0: ([0, 50, 100], [10.0, 5.0, 2.0]), **longer}
    assert tie_speedup(falling, T).value == pytest.approx(1.0)
    # best at half of T, then it overfits: a run identical to it reads a half over it
    overfit = {1.0: ([0, 50, 100], [10.0, 2.0, 3.0]), **longer}
    tie = tie_speedup(overfit, T)
    assert tie.value == pytest.approx(0.5) and not tie.lower_bound
    # a T run that does not end finite scores 0, as an X ending so does (not 2, not s*/T)
    for val in ([10.0, 2.0, math.nan], [math.nan] * 3):
        assert tie_speedup({1.0: ([0, 50, 100], val), **longer}, T).value == 0.0


def test_non_finite_target_and_geometric_mean():
    assert speedup_budget_independent(STEPS_2T, linear_curve(STEPS_2T), math.inf, T).lower_bound
    assert geometric_mean([2.0, 0.5]) == pytest.approx(1.0)
    assert geometric_mean([2.0, 0.0]) == 0.0
    assert math.isnan(geometric_mean([]))


def test_the_seed_interval_holds_the_figure_and_spans_the_seeds_spread():
    from lhopt.curves.speedup import geometric_mean, seed_interval

    per_task = [[0.5, 1.0, 2.0], [1.0, 1.0, 1.0], [0.8, 1.6, 1.2]]
    figure = geometric_mean([geometric_mean(v) for v in per_task])
    lo, hi = seed_interval(per_task)
    assert lo < figure < hi
    # no draw can go past every task at its worst or best seed
    assert lo >= geometric_mean([0.5, 1.0, 0.8]) and hi <= geometric_mean([2.0, 1.0, 1.6])
    assert seed_interval(per_task) == (lo, hi)  # deterministic
    wide = seed_interval(per_task, level=0.99)
    assert wide[0] <= lo and wide[1] >= hi
    # seeds that agree leave no spread; one seed per task gives no interval
    assert seed_interval([[1.3, 1.3], [0.7, 0.7]]) == pytest.approx((0.91**0.5, 0.91**0.5))
    assert seed_interval([[1.3], [0.7]]) is None


def test_a_diverged_seed_drawn_makes_the_draw_zero_as_the_mean_does():
    from lhopt.curves.speedup import seed_interval

    lo, hi = seed_interval([[0.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    assert lo == 0.0 and hi == 1.0
    with pytest.raises(ValueError, match="coverage"):
        seed_interval([[1.0, 2.0]], level=1.0)


def test_the_ratio_interval_holds_one_for_two_draws_of_one_spread_and_not_for_a_shift():
    from lhopt.curves.speedup import ratio_interval

    a = [[0.8, 1.0, 1.25], [0.9, 1.1, 1.0], [1.0, 1.2, 0.7]]
    lo, hi = ratio_interval(a, a)
    assert lo < 1.0 < hi
    shifted = [[3 * x for x in v] for v in a]
    lo, hi = ratio_interval(a, shifted)
    assert 1.0 < lo < 3.0 < hi
    assert ratio_interval([[1.0], [2.0]], [[1.5], [2.5]]) is None
    with pytest.raises(ValueError, match="same tasks"):
        ratio_interval(a, a[:2])
    with pytest.raises(ValueError, match="floor"):
        ratio_interval(a, [[0.0, 1.0, 1.0], *a[1:]])


def test_the_paired_ratio_cancels_the_baselines_spread_that_the_unpaired_interval_keeps():
    from lhopt.curves.speedup import paired_ratio, ratio_interval

    # per-seed speedups that spread fourfold (a flat baseline curve), the other read 1.2x each
    base = [[0.5, 2.0, 1.0], [0.4, 1.6, 0.8], [2.0, 0.5, 1.0], [1.0, 0.25, 1.0]]
    other = [[1.2 * x for x in v] for v in base]
    lo, hi = ratio_interval(base, other)
    assert lo < 1.0 < hi  # unpaired: not told apart
    point, (lo, hi) = paired_ratio(base, other)
    assert point == pytest.approx(1.2) and lo == pytest.approx(1.2) and hi == pytest.approx(1.2)
    # the same read against itself, and pairs that move both ways
    assert paired_ratio(base, base) == (
        pytest.approx(1.0),
        (pytest.approx(1.0), pytest.approx(1.0)),
    )
    mixed = [[x * f for x, f in zip(v, (1.5, 1 / 1.5, 1.0), strict=True)] for v in base]
    point, (lo, hi) = paired_ratio(base, mixed)
    assert point == pytest.approx(1.0) and lo < 1.0 < hi
    assert paired_ratio(base, mixed) == paired_ratio(base, mixed)  # deterministic
    # one task: a point, no interval
    assert paired_ratio([[1.0, 2.0]], [[2.0, 4.0]]) == (pytest.approx(2.0), None)


def test_the_paired_ratio_names_what_it_cannot_pair():
    from lhopt.curves.speedup import paired_ratio

    with pytest.raises(ValueError, match="same tasks"):
        paired_ratio([[1.0], [1.0]], [[1.0]])
    with pytest.raises(ValueError, match="task 1: 2 seeds against 1"):
        paired_ratio([[1.0], [1.0, 2.0]], [[1.0], [1.0]])
    with pytest.raises(ValueError, match="floor"):
        paired_ratio([[1.0], [0.0]], [[1.0], [1.0]])
    with pytest.raises(ValueError, match="coverage"):
        paired_ratio([[1.0], [1.0]], [[1.0], [1.0]], level=0.0)
