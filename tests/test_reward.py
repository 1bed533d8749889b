import math

import numpy as np
import pytest

from lhopt.meta.reward import PowerLaw, fit_power_law, log_speedup, outer_step_rewards

T = 400


def baseline_curve(t):
    return 1.0 + 10.0 * np.asarray(t, dtype=float) ** -0.5


def test_power_law_fit_recovers_a_power_law_and_extrapolates_to_2T():
    steps = np.arange(20, T + 1, 20)
    fit = fit_power_law(steps, baseline_curve(steps))
    for t in (50, 400, 800):
        assert fit.loss(t) == pytest.approx(float(baseline_curve(t)), rel=1e-3)
    assert fit.steps_to(float(baseline_curve(600))) == pytest.approx(600, rel=0.02)


def test_a_run_twice_as_fast_as_the_baseline_earns_log_2():
    steps = np.arange(20, T + 1, 20)
    fit = fit_power_law(steps, baseline_curve(steps))
    outer = list(range(40, T + 1, 40))
    twice_as_fast = [float(baseline_curve(2 * t)) for t in outer]  # L_X(t) = L_B(2t)
    rewards = outer_step_rewards(fit, outer, twice_as_fast)
    assert sum(rewards) == pytest.approx(math.log(2), abs=0.01)
    as_fast = [float(baseline_curve(t)) for t in outer]
    assert sum(outer_step_rewards(fit, outer, as_fast)) == pytest.approx(0.0, abs=0.01)
    half = [float(baseline_curve(t / 2)) for t in outer]
    assert sum(outer_step_rewards(fit, outer, half)) == pytest.approx(-math.log(2), abs=0.01)


def test_clipping_divergence_and_noisy_curves():
    law = PowerLaw(10.0, 0.5, 1.0)
    assert log_speedup(law, 0.5, 100) == 3.0  # below the asymptote: clipped
    assert log_speedup(law, math.nan, 100) == -3.0
    assert log_speedup(law, 1e9, 100) == -3.0  # no better than the start
    rewards = outer_step_rewards(law, [10, 20, 30], [3.0, 2.5, math.nan])
    assert sum(rewards) == pytest.approx(-3.0)
    rng = np.random.default_rng(0)
    steps = np.arange(20, T + 1, 20)
    noisy = baseline_curve(steps) * (1 + 0.05 * rng.standard_normal(len(steps)))
    fit = fit_power_law(steps, noisy)
    assert fit.a > 0 and fit.b > 0 and fit.c >= 0
    assert fit.steps_to(float(np.minimum.accumulate(noisy)[-1])) == pytest.approx(T, rel=0.3)
    with pytest.raises(ValueError, match="at least 3"):
        fit_power_law([0, 10], [1.0, 0.5])


def test_anchored_curve_with_a_horizon_of_2():
    from lhopt.meta.reward import anchored_curve

    steps = [0, *range(20, T + 1, 20)]
    losses = [20.0, *baseline_curve(steps[1:])]
    ref = anchored_curve(steps, losses, horizon=2.0)
    outer = list(range(40, T + 1, 40))
    # Matching the baseline scores 0 exactly (its own curve, no fit in between).
    as_fast = [float(baseline_curve(t)) for t in outer]
    assert sum(outer_step_rewards(ref, outer, as_fast)) == pytest.approx(0.0, abs=1e-9)
    half = [float(baseline_curve(t / 2)) for t in outer]
    assert sum(outer_step_rewards(ref, outer, half)) == pytest.approx(-math.log(2), abs=0.01)
    # Beyond T the power law through the last point; 1.5x faster reads as 1.5x.
    faster = [float(baseline_curve(1.5 * t)) for t in outer]
    assert sum(outer_step_rewards(ref, outer, faster)) == pytest.approx(math.log(1.5), abs=0.02)
    # At most 2x at the end, however low the loss: log 2, never +3.
    assert ref.steps_to(0.0) == 2 * T
    assert sum(outer_step_rewards(ref, outer, [0.5] * len(outer))) == pytest.approx(math.log(2))
    assert log_speedup(ref, 0.5, T / 4) == pytest.approx(math.log(8))  # early: 2T / t
    flat = anchored_curve(steps, [20.0, *([5.0] * (len(steps) - 1))], horizon=2.0)
    assert flat.steps_to(4.0) == 2 * T  # a flat curve (power-law exponent ~0): no overflow
    # Worse than the start, or diverged: -clip.
    assert log_speedup(ref, 25.0, 100) == -3.0
    assert sum(outer_step_rewards(ref, outer[:3], [3.0, 2.5, math.nan])) == pytest.approx(-3.0)
    with pytest.raises(ValueError, match="horizon"):
        anchored_curve(steps, losses, horizon=0.5)


def test_anchored_curve_without_an_asymptote_pays_every_lower_loss():
    from lhopt.meta.reward import anchored_curve, tail_power_law

    steps = [0, *range(20, T + 1, 20)]
    pure = [20.0, *(10.0 * np.asarray(steps[1:], dtype=float) ** -0.5)]  # c = 0: exact
    law = tail_power_law(steps[1:], pure[1:])
    assert (law.b, law.c) == (pytest.approx(0.5), 0.0)
    assert law.steps_to(10.0 * 1600**-0.5) == pytest.approx(1600)
    # With an asymptote (c = 1) a loss below the fitted floor reads as the cap; without one,
    # lower losses buy more steps, monotonically, until the cap.
    losses = [20.0, *baseline_curve(steps[1:])]
    floored = anchored_curve(steps, losses, horizon=20.0)
    floorless = anchored_curve(steps, losses, horizon=20.0, asymptote=False)
    final = float(baseline_curve(T))
    assert floorless.steps_to(final) == pytest.approx(T)  # matching the baseline: 1x
    assert floored.steps_to(0.99) == 20 * T
    got = [floorless.steps_to(f * final) for f in (0.99, 0.95, 0.9)]
    assert T < got[0] < got[1] < got[2] < 20 * T
    assert floorless.steps_to(0.1 * final) == 20 * T
    flat = anchored_curve(steps, [20.0, *([5.0] * (len(steps) - 1))], 14, 20.0, asymptote=False)
    assert flat.steps_to(4.0) == 20 * T  # a flat tail: slope floored, no overflow


def test_reward_asymptote_needs_a_horizon():
    from lhopt.meta import config as meta_config

    cfg = meta_config.from_dict({"episode": {"reward_horizon": 20, "reward_asymptote": False}})
    assert cfg.episode.reward_asymptote is False
    with pytest.raises(ValueError, match=r"reward_asymptote = false needs a reward_horizon"):
        meta_config.from_dict({"episode": {"reward_asymptote": False}})
    with pytest.raises(ValueError, match="reward_asymptote"):
        meta_config.from_dict({"episode": {"reward_asymptote": "no"}})


def test_reward_horizon_in_episode_config():
    from lhopt.meta import config as meta_config

    assert meta_config.from_dict({"episode": {"reward_horizon": 2}}).episode.reward_horizon == 2.0
    with pytest.raises(ValueError, match=r"\[episode\] reward_horizon = 0.5"):
        meta_config.from_dict({"episode": {"reward_horizon": 0.5}})


def test_reward_of_the_last_loss_gives_back_a_late_blow_up():
    law = PowerLaw(10.0, 0.5, 1.0)  # t_B(L) = (10 / (L - 1))^2
    steps, vals = [25, 50, 100], [3.0, 2.0, 5.0]  # best at 50, worse at the end
    best = outer_step_rewards(law, steps, vals, loss="best")
    last = outer_step_rewards(law, steps, vals, loss="last")
    assert best[:2] == pytest.approx(last[:2])  # identical while the loss improves
    assert sum(best) == pytest.approx(math.log(100 / 100))  # t_B(2.0) = 100 at step 100
    assert sum(last) == pytest.approx(math.log(6.25 / 100))  # t_B(5.0) = 6.25
    assert sum(outer_step_rewards(law, [10, 20], [3.0, math.nan], loss="last")) == -3.0
    with pytest.raises(ValueError, match="loss='final'"):
        outer_step_rewards(law, steps, vals, loss="final")

    from lhopt.meta import config as meta_config

    assert meta_config.from_dict({"episode": {"reward_loss": "last"}}).episode.reward_loss == "last"
    with pytest.raises(ValueError, match=r"\[episode\] reward_loss = 'final'"):
        meta_config.from_dict({"episode": {"reward_loss": "final"}})
