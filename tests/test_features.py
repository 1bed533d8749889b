import math

import numpy as np
import pytest

from lhopt import ActionSpace, FeatureEngine
from lhopt.control import EWMACDF, normal_cdf
from lhopt.optim import STEP_STAT_NAMES


def test_normal_cdf_known_values():
    assert normal_cdf(0.0) == 0.5
    assert normal_cdf(1.959963984540054) == pytest.approx(0.975)
    assert normal_cdf(-1.0) == pytest.approx(1 - normal_cdf(1.0))


def test_cdf_of_a_constant_series_is_one_half():
    cdf = EWMACDF((1.25, 5.0, 20.0))
    for _ in range(50):
        out = cdf(3.7)
    np.testing.assert_allclose(out, 0.5)


def test_cdf_of_a_rising_series_is_high_and_of_a_falling_one_low():
    rising, falling = EWMACDF((2.5, 10.0)), EWMACDF((2.5, 10.0))
    for t in range(40):
        up = rising(0.1 * t)
        down = falling(-0.1 * t)
    assert (up > 0.85).all()  # a steady ramp settles at a fixed z-score above 1
    assert (down < 0.15).all()
    np.testing.assert_allclose(up, 1 - down)


def test_cdf_ignores_non_finite_values_and_starts_at_one_half():
    cdf = EWMACDF((5.0,))
    assert cdf(1.0)[0] == 0.5  # no history yet
    state = cdf.state_dict()
    assert cdf(math.nan)[0] == 0.5 and cdf(math.inf)[0] == 0.5
    assert cdf.state_dict() == state
    with pytest.raises(ValueError, match="scales"):
        EWMACDF((0.5,))


def make_engine():
    space = ActionSpace()
    return space, FeatureEngine(space.hparam_kinds, space.encoding_names, num_registers=3)


def observe(engine, space, *, loss=1.0, val=1.2, hparams=None, stats=None, progress=0.5):
    hp = hparams or {"lr": 1e-3, "clip_fraction": 0.8, "ombeta1": 0.1}
    return engine.observe(
        progress=progress,
        step_stats=stats if stats is not None else dict.fromkeys(STEP_STAT_NAMES, 0.25),
        train_loss=loss,
        val_loss=val,
        hparams=hp,
        prev_action=space.encode(space.keep),
        registers=[(False, None, None)] * 3,
    )


def test_layout_is_fixed_and_named():
    space, engine = make_engine()
    engine.reset({"lr": 1e-3, "clip_fraction": 0.8})
    vec = observe(engine, space)
    assert vec.shape == (engine.size,) == (len(engine.names),)
    assert len(set(engine.names)) == engine.size
    assert vec.dtype == np.float32
    assert vec[engine.names.index("progress")] == 0.5


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_vector_is_finite_whatever_comes_in(bad):
    space, engine = make_engine()
    engine.reset({"lr": 1e-3})
    observe(engine, space)
    stats = dict.fromkeys(STEP_STAT_NAMES, bad)
    vec = observe(engine, space, loss=bad, val=bad, stats=stats, hparams={"lr": bad})
    assert np.isfinite(vec).all()
    name = "is_nan" if math.isnan(bad) else "is_inf"
    assert vec[engine.names.index(f"train/{name}")] == 1.0
    assert vec[engine.names.index(f"val/{name}")] == 1.0
    assert vec[engine.names.index("stats_available")] == 0.0


def test_loss_log_ratios_and_missing_validation():
    space, engine = make_engine()
    engine.reset({})
    observe(engine, space, loss=2.0, val=None)
    vec = observe(engine, space, loss=1.0, val=None)
    n = engine.names
    assert vec[n.index("train/log_ratio_prev")] == pytest.approx(math.log(0.5))
    assert vec[n.index("train/tanh_log_ratio_first")] == pytest.approx(math.tanh(math.log(0.5)))
    assert vec[n.index("val/available")] == 0.0
    assert vec[n.index("train/cdf@20")] < 0.5  # falling loss: low against its own history


def test_hyperparameters_are_seen_relative_to_their_initial_values():
    space, engine = make_engine()
    engine.reset({"lr": 1e-3, "clip_fraction": 0.8, "ombeta1": 0.1})
    vec = observe(engine, space, hparams={"lr": 2e-3, "clip_fraction": 0.8, "ombeta1": 0.05})
    n = engine.names
    assert vec[n.index("hparam/lr")] == pytest.approx(math.log(2))
    assert vec[n.index("hparam/ombeta1")] == pytest.approx(math.log(0.5))
    assert vec[n.index("hparam/clip_fraction")] == pytest.approx(0.0)


def test_features_are_invariant_to_loss_scale_and_absolute_hyperparameters():
    space, a = make_engine()
    _, b = make_engine()
    a.reset({"lr": 1e-3, "clip_fraction": 0.8})
    b.reset({"lr": 0.5, "clip_fraction": 0.8})
    for t, loss in enumerate([3.0, 2.0, 1.5, 1.4, 1.6]):
        va = observe(a, space, loss=loss, val=loss * 1.1, hparams={"lr": 1e-3 * 2**t})
        vb = observe(b, space, loss=loss * 1e4, val=loss * 1.1e4, hparams={"lr": 0.5 * 2**t})
        np.testing.assert_allclose(va, vb, rtol=1e-5, atol=1e-6)


def test_state_dict_round_trip_gives_the_same_next_vector():
    space, engine = make_engine()
    engine.reset({"lr": 1e-3})
    for loss in (3.0, 2.5, 2.0):
        observe(engine, space, loss=loss)
    _, other = make_engine()
    other.load_state_dict(engine.state_dict())
    np.testing.assert_array_equal(observe(engine, space, loss=1.7), observe(other, space, loss=1.7))


def test_wrong_lengths_are_refused():
    space, engine = make_engine()
    with pytest.raises(ValueError, match="prev_action"):
        engine.observe(
            progress=0,
            step_stats={},
            train_loss=1.0,
            hparams={},
            prev_action=[0.0],
            registers=[(False, None, None)] * 3,
        )
    with pytest.raises(ValueError, match="kinds"):
        FeatureEngine({"lr": "linear"}, ())
