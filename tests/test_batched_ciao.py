"""BatchedCIAO against CIAO, member by member.

Each member of a BatchedCIAO must step as a CIAO of its own (one param group, the member's
hyperparameters) fed the same gradients: parameters within 1e-12 of their largest magnitude in
float64 (1e-5 in float32) after every step, statistics within 1e-9 at every pop. The first
step's `log_grad_noise_scale` is left out: it is a difference that cancels exactly, whose sign
in CIAO is a rounding error (test_ciao_reference.py leaves it out for the same reason).
Each member's state (moments, scale, bias-correction products, rolling max norm, counters)
is held to its CIAO's as well, and Controllers with restart registers must take the same
decisions driving the members as driving the CIAOs.
"""

import copy
import math

import pytest
import torch
from torch import nn

from lhopt.control import Controller, load_policy
from lhopt.optim import CIAO, STEP_STAT_NAMES
from lhopt.optim.batched import BatchedCIAO

N = 4
SHAPES = [(7, 5), (7,), (3, 7), (3,)]  # two Linear layers: weight, bias, weight, bias
PARAM_RTOL = {torch.float64: 1e-12, torch.float32: 1e-5}
STAT_TOL = {torch.float64: 1e-9, torch.float32: 1e-5}

HPARAMS = [
    dict(lr=3e-2, ombeta1=0.1, ombeta2=1e-2, epsilon=1e-8, weight_decay=0.0, clip_fraction=None),
    dict(lr=1e-2, ombeta1=0.3, ombeta2=0.2, epsilon=1e-3, weight_decay=0.05, clip_fraction=0.8),
    dict(lr=5e-3, ombeta1=0.05, ombeta2=1e-3, epsilon=1e-6, weight_decay=0.5, clip_fraction=0.3,
         grad_clip_ombeta=0.2),
    dict(lr=2e-2, ombeta1=0.6, ombeta2=0.05, epsilon=1e-5, weight_decay=1e-3, clip_fraction=1e-4,
         grad_clip_ombeta=0.05),
]  # fmt: skip


class Pair:
    """A BatchedCIAO over stacked parameters and, for each member, a CIAO over copies of its
    rows: `step(grads)` feeds both the same gradients."""

    def __init__(
        self,
        hparams=HPARAMS,
        dtype=torch.float64,
        feature_every=4,
        stat_samples=8,
        shapes=SHAPES,
        scales=None,
    ):
        gen = torch.Generator().manual_seed(0)
        n = len(hparams)
        scales = scales or [1.0] * len(shapes)
        self.params = [
            (c * torch.randn((n, *s), generator=gen, dtype=torch.float64))
            .to(dtype)
            .requires_grad_()
            for s, c in zip(shapes, scales, strict=True)
        ]
        self.batched = BatchedCIAO(
            self.params, hparams, feature_every=feature_every, stat_samples=stat_samples
        )
        self.member_params = [
            [p[i].detach().clone().requires_grad_() for p in self.params] for i in range(n)
        ]
        self.ciaos = [
            CIAO(ps, **h, feature_every=feature_every, stat_samples=stat_samples)
            for ps, h in zip(self.member_params, hparams, strict=True)
        ]

    def step(self, grads):
        """`grads`: one stacked tensor (or None) per parameter."""
        for p, g in zip(self.params, grads, strict=True):
            p.grad = None if g is None else g.clone()
        for i, ps in enumerate(self.member_params):
            for p, g in zip(ps, grads, strict=True):
                p.grad = None if g is None else g[i].clone()
        self.batched.step()
        for opt in self.ciaos:
            opt.step()

    def save(self, i):
        """Member i's state on both sides and its parameters (copies)."""
        return (
            copy.deepcopy(self.batched.members[i].state_dict()),
            copy.deepcopy(self.ciaos[i].state_dict()),
            [p[i].detach().clone() for p in self.params],
        )

    def restore(self, i, saved):
        """Load what `save(i)` returned into member i on both sides."""
        batched, ciao, params = saved
        self.batched.members[i].load_state_dict(copy.deepcopy(batched))
        self.ciaos[i].load_state_dict(copy.deepcopy(ciao))
        with torch.no_grad():
            for p, q, s in zip(self.params, self.member_params[i], params, strict=True):
                p[i] = s
                q.copy_(s)

    def set_hparam(self, i, key, value):
        self.batched.members[i].param_groups[0][key] = value
        self.ciaos[i].param_groups[0][key] = value

    def assert_params_close(self, members=None):
        rtol = PARAM_RTOL[self.params[0].dtype]
        for i in range(self.batched.N) if members is None else members:
            for k, (p, q) in enumerate(zip(self.params, self.member_params[i], strict=True)):
                a, b = p[i].detach().double(), q.detach().double()
                err, scale = (a - b).abs().max(), b.abs().max()
                assert err <= rtol * scale, f"member {i}, tensor {k}: {err:.3g} > {rtol} * {scale}"

    def assert_state_close(self):
        """Each member's state as its CIAO's: moments (the first as scale and m_tilde), bias
        correction products, rolling max gradient norm, counters."""
        rtol = PARAM_RTOL[self.params[0].dtype]
        # float32 norms: CIAO's per tensor in float32, BatchedCIAO's in float64.
        scalar_rtol = {torch.float64: 1e-12, torch.float32: 1e-6}[self.params[0].dtype]
        for i, (member, opt) in enumerate(zip(self.batched.members, self.ciaos, strict=True)):
            got = member.state_dict()
            for k, p in enumerate(self.member_params[i]):
                want = opt.state.get(p)
                if not want:  # never had a gradient: the batched state is CIAO's initial one
                    want = dict(exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                    want.update(exp_avg_scale=1.0, beta1_product=1.0, beta2_product=1.0)
                for key in ("exp_avg", "exp_avg_sq"):
                    a, b = got[key][k].double(), want[key].double()
                    err, scale = (a - b).abs().max(), b.abs().max()
                    assert err <= rtol * scale, f"member {i}, tensor {k}, {key}"
                for key in ("exp_avg_scale", "beta1_product", "beta2_product"):
                    a, b = got[key][k].item(), want[key]
                    same = math.isclose(a, b, rel_tol=scalar_rtol)
                    assert same, f"member {i}, tensor {k}, {key}: {a!r} against CIAO's {b!r}"
                # LAMB's state, where CIAO has one (else the batched one is still initial).
                ema, product = (
                    float(want.get("update_norm_ema", 0.0)),
                    want.get("update_norm_product", 1.0),
                )
                for key, b in (("update_norm_ema", ema), ("update_norm_product", product)):
                    a = got[key][k].item()
                    same = math.isclose(a, b, rel_tol=scalar_rtol)
                    assert same, f"member {i}, tensor {k}, {key}: {a!r} against CIAO's {b!r}"
            norm_max = got["group_norm_max"].item()
            same = math.isclose(norm_max, opt._group_norm_max[0], rel_tol=scalar_rtol)
            assert same, f"member {i}: rolling max norm {norm_max!r}"
            assert got["steps"] == opt.steps
            assert got["skipped_steps"].item() == opt.skipped_steps

    def assert_stats_close(self, skip_noise=False):
        tol = STAT_TOL[self.params[0].dtype]
        for i, (member, opt) in enumerate(zip(self.batched.members, self.ciaos, strict=True)):
            got, want = member.pop_step_stats(), opt.pop_step_stats()
            assert set(got) == set(want) == set(STEP_STAT_NAMES)
            for name in STEP_STAT_NAMES:
                if skip_noise and name == "log_grad_noise_scale":
                    continue
                a, b = got[name], want[name]
                same = (math.isnan(a) and math.isnan(b)) or math.isclose(
                    a, b, rel_tol=tol, abs_tol=tol
                )
                assert same, f"member {i}, {name}: batched {a!r}, CIAO {b!r}"


def random_grads(gen, n=N, dtype=torch.float64, spread=1.0):
    """Per-member gradients of varying size (so that clipping triggers now and then)."""
    sizes = torch.exp(spread * torch.randn(n, generator=gen, dtype=torch.float64))
    grads = []
    for s in SHAPES:
        g = torch.randn((n, *s), generator=gen, dtype=torch.float64)
        grads.append((g * sizes.view(-1, *[1] * len(s))).to(dtype))
    return grads


def run(pair, steps, gen, *, on_step=None, pop_every=8):
    """Step both `steps` times, comparing parameters after every step and statistics after the
    first step (its noise statistic left out) and every `pop_every` steps."""
    for t in range(steps):
        grads = random_grads(gen, pair.batched.N, pair.params[0].dtype)
        if on_step is not None:
            on_step(t, grads)
        for i in range(pair.batched.N):  # a schedule's factor, as Controller.before_step sets
            pair.set_hparam(i, "lr_factor", 1.0 - t / 40)
        pair.step(grads)
        pair.assert_params_close()
        pair.assert_state_close()
        if t == 0 or t % pop_every == pop_every - 1:
            pair.assert_stats_close(skip_noise=t == 0)


def change_hparams(pair):
    """What controllers do, each to its own member, between steps."""

    def on_step(t, grads):
        if t == 6:
            pair.set_hparam(0, "ombeta1", 0.3)
            pair.set_hparam(1, "lr", 3e-2)
            pair.set_hparam(2, "clip_fraction", None)
        if t == 13:
            pair.set_hparam(0, "clip_fraction", 0.5)
            pair.set_hparam(3, "epsilon", 1e-8)
            pair.set_hparam(3, "ombeta2", 0.3)
            pair.set_hparam(1, "weight_decay", 0.0)
        if t == 21:
            pair.set_hparam(2, "grad_clip_ombeta", 0.5)
            pair.set_hparam(2, "clip_fraction", 0.9)

    return on_step


def random_hparams(seed):
    """Each member's hyperparameters drawn log-uniformly; one member without clipping."""
    gen = torch.Generator().manual_seed(seed)

    def draw(low, high):
        u = torch.rand((), generator=gen, dtype=torch.float64).item()
        return math.exp(math.log(low) + u * (math.log(high) - math.log(low)))

    out = [
        dict(
            lr=draw(1e-4, 1e-1),
            ombeta1=draw(1e-3, 0.9),
            ombeta2=draw(1e-4, 0.5),
            epsilon=draw(1e-10, 1e-2),
            weight_decay=draw(1e-4, 1.0),
            clip_fraction=draw(1e-3, 1.0),
            grad_clip_ombeta=draw(1e-3, 0.5),
        )
        for _ in range(N)
    ]
    out[seed % N]["clip_fraction"] = None
    return out


@pytest.mark.parametrize("hparams", ["fixed", 0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_members_match_ciao_with_hyperparameters_changing(dtype, hparams):
    pair = Pair(HPARAMS if hparams == "fixed" else random_hparams(hparams), dtype=dtype)
    run(pair, 30, torch.Generator().manual_seed(1), on_step=change_hparams(pair))
    assert [m.steps for m in pair.batched.members] == [opt.steps for opt in pair.ciaos] == [30] * N


def lamb_hparams(hparams):
    """`hparams` with LAMB's trust ratio on for members 1-3 (of several powers, floors and
    norm EMAs) and off for member 0."""
    out = [dict(h) for h in hparams]
    out[1].update(lamb_power=1.0)
    out[2].update(lamb_power=0.5, lamb_min_trust=0.2, lamb_update_norm_ombeta=0.3)
    out[3].update(lamb_power=2.0, lamb_min_trust=1e-3, lamb_update_norm_ombeta=1.0)
    return out


@pytest.mark.parametrize("hparams", ["fixed", 0])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_members_with_lamb_match_ciao(dtype, hparams):
    """Members under LAMB's trust ratio beside one without, with the trust ratio switched off
    and on again, its EMA's rate moved as its head moves it, and a NaN skipping a member."""
    base = HPARAMS if hparams == "fixed" else random_hparams(hparams)
    pair = Pair(lamb_hparams(base), dtype=dtype)
    changes = change_hparams(pair)

    def on_step(t, grads):
        changes(t, grads)
        if t == 4:
            pair.set_hparam(1, "lamb_power", 0.0)
            pair.set_hparam(0, "lamb_power", 1.0)
        if t == 9:
            pair.set_hparam(1, "lamb_power", 1.0)
            pair.set_hparam(2, "lamb_update_norm_ombeta", 0.45)
        if t == 11:
            grads[0][3, 1, 2] = math.nan

    run(pair, 24, torch.Generator().manual_seed(21), on_step=on_step, pop_every=4)
    assert [m.skipped_steps for m in pair.batched.members] == [0, 0, 0, 1]


def test_lamb_statistics_match_ciao_reading_every_element():
    pair = Pair(lamb_hparams(HPARAMS), feature_every=1, stat_samples=2048)
    run(pair, 12, torch.Generator().manual_seed(22), pop_every=4)


def test_lamb_member_state_round_trip_and_tensor_without_gradient():
    pair = Pair(lamb_hparams(HPARAMS))
    gen = torch.Generator().manual_seed(23)
    run(pair, 6, gen)
    saved = pair.save(2)
    for _ in range(4):
        pair.step(random_grads(gen))
    pair.restore(2, saved)
    for t in range(8):
        grads = random_grads(gen)
        if t % 3 == 1:
            grads[2] = None  # the second weight matrix left out: its EMA stays
        pair.step(grads)
        pair.assert_params_close()
        pair.assert_state_close()
    pair.assert_stats_close()


def test_statistics_match_ciao_reading_every_element():
    pair = Pair(feature_every=1, stat_samples=2048)
    run(pair, 12, torch.Generator().manual_seed(2), pop_every=4)


def test_non_finite_gradient_skips_only_that_member():
    pair = Pair()
    before = {}

    def on_step(t, grads):
        if t == 0:  # a zero gradient while the rolling max is 0: clip scale 1, as in CIAO
            for g in grads:
                g[1] = 0.0
        if t == 4:
            grads[2][1, 0, 3] = math.nan
        if t == 9:  # finite, but its square overflows: skipped as CIAO skips it
            grads[0][3] *= 1e160
        if t == 11:
            grads[1][0, 2] = math.inf
            grads[1][2, 2] = -math.inf
        before[t] = [p.detach().clone() for p in pair.params]

    gen = torch.Generator().manual_seed(3)
    for t in range(16):
        grads = random_grads(gen)
        on_step(t, grads)
        pair.step(grads)
        pair.assert_params_close()
        pair.assert_state_close()
        skipped = {4: [1], 9: [3], 11: [0, 2]}.get(t, [])
        for p, q in zip(pair.params, before[t], strict=True):
            for i in range(N):
                assert torch.equal(p[i], q[i]) == (i in skipped), (t, i)
        if t in (0, 7, 15):
            pair.assert_stats_close(skip_noise=t == 0)
    assert [m.skipped_steps for m in pair.batched.members] == [1, 1, 1, 1]
    assert [opt.skipped_steps for opt in pair.ciaos] == [1, 1, 1, 1]


def test_gradient_spike_is_clipped_as_ciao_clips_it():
    hparams = [dict(h, clip_fraction=0.5, grad_clip_ombeta=0.3) for h in HPARAMS]
    hparams[3]["clip_fraction"] = None
    pair = Pair(hparams)
    gen = torch.Generator().manual_seed(4)
    for t in range(12):
        grads = random_grads(gen, spread=0.0)
        if t == 7:
            for g in grads:
                g[:3] *= 100.0  # members 0..2 clip it to half of it; member 3 has clipping off
        pair.step(grads)
        pair.assert_params_close()
        pair.assert_state_close()
        if t in (0, 6):
            pair.assert_stats_close(skip_noise=t == 0)
        if t == 7:
            rates = [m.pop_step_stats()["clip_rate"] for m in pair.batched.members]
            assert rates == [opt.pop_step_stats()["clip_rate"] for opt in pair.ciaos]
            assert rates == [1.0, 1.0, 1.0, 0.0]
    pair.assert_stats_close()


def test_tensor_without_gradient_is_left_out_as_ciao_leaves_it_out():
    pair = Pair()

    def on_step(t, grads):
        if t % 3 == 1:
            grads[3] = None
        if t == 5:
            grads[0] = None

    run(pair, 20, torch.Generator().manual_seed(5), on_step=on_step)
    pair.step([None] * len(SHAPES))  # no gradient at all: counted, nothing changes
    pair.assert_params_close()
    pair.assert_stats_close()


def test_member_state_round_trip_continues_as_ciao_does():
    pair = Pair()
    gen = torch.Generator().manual_seed(6)
    run(pair, 8, gen, on_step=change_hparams(pair))
    for _ in range(2):
        pair.step(random_grads(gen))  # the period (steps 9, 10) is part of the saved state
    i = 1
    saved = pair.save(i)
    for _ in range(5):
        pair.step(random_grads(gen))
        pair.set_hparam(i, "lr", 0.1)
    pair.restore(i, saved)
    assert pair.batched.members[i].hparams == pair.ciaos[i].hparams
    assert pair.batched.members[i].steps == 10
    # Member 1 is now 5 steps behind the others: it measures on other steps than they do.
    for t in range(14):
        pair.step(random_grads(gen))
        pair.assert_params_close()
        pair.assert_state_close()
        if t in (5, 13):
            pair.assert_stats_close()


def test_member_state_of_other_shapes_is_refused_and_changes_nothing():
    pair = Pair()
    gen = torch.Generator().manual_seed(7)
    run(pair, 5, gen)
    member = pair.batched.members[2]
    before = member.state_dict()
    other = BatchedCIAO([torch.zeros(N, 6, 5, dtype=torch.float64, requires_grad=True)], HPARAMS)
    with pytest.raises(ValueError, match="shapes"):
        member.load_state_dict(other.members[2].state_dict())
    wider = copy.deepcopy(before)
    wider["exp_avg"][0] = torch.zeros(8, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match="shapes"):
        member.load_state_dict(wider)
    after = member.state_dict()
    for key, value in before.items():
        if isinstance(value, list):
            assert all(torch.equal(a, b) for a, b in zip(value, after[key], strict=True)), key
        elif isinstance(value, torch.Tensor):
            assert torch.equal(value, after[key]), key
        elif key != "stats":
            assert value == after[key], key
    run(pair, 6, gen)  # still in step with CIAO


def assert_step_refused(pair, gen, message: str, steps: int) -> None:
    """The next step raises `message` and changes nothing: parameters and step counts."""
    before = [p.detach().clone() for p in pair.params]
    for p, g in zip(pair.params, random_grads(gen), strict=True):
        p.grad = g
    with pytest.raises(ValueError, match=message):
        pair.batched.step()
    assert all(torch.equal(p, q) for p, q in zip(pair.params, before, strict=True))
    assert [m.steps for m in pair.batched.members] == [steps] * N


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"adamax": True}, "member 2: adamax=True: batched CIAO supports the AdamW path.*CIAO"),
        ({"decay_in_update": True}, "member 2: decay_in_update=True"),
        ({"lamb_norm_floor": 11.0}, r"member 2: lamb_norm_floor=11\.0 is out of range"),
        ({"lamb_free_below": 1.5}, r"member 2: lamb_free_below=1\.5 is out of range"),
        ({"lr": -1.0}, r"member 2: lr=-1\.0 is out of range"),
        ({"ombeta1": 2.0}, r"member 2: ombeta1=2\.0 is out of range"),
        ({"clip_fraction": "x"}, "member 2: clip_fraction='x' is not allowed"),
    ],
)
def test_refused_hyperparameters_name_member_key_and_value(change, message):
    hparams = [dict(h) for h in HPARAMS]
    hparams[2].update(change)
    params = [torch.zeros(N, 3, dtype=torch.float64, requires_grad=True)]
    with pytest.raises(ValueError, match=message):
        BatchedCIAO(params, hparams)

    # Written into a member's group between steps: the step refuses it and changes nothing.
    pair = Pair()
    gen = torch.Generator().manual_seed(8)
    run(pair, 3, gen)
    pair.batched.members[2].param_groups[0].update(change)
    assert_step_refused(pair, gen, message, steps=3)


def test_refused_parameters():
    hp = [{}] * 2
    with pytest.raises(ValueError, match="float32 and float64 only"):
        BatchedCIAO([torch.zeros(2, 3, dtype=torch.float16, requires_grad=True)], hp)
    with pytest.raises(ValueError, match="one dtype"):
        BatchedCIAO([torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.float64)], hp)
    with pytest.raises(ValueError, match="meta"):
        BatchedCIAO([torch.zeros(2, 3), torch.zeros(2, 3, device="meta")], hp)
    with pytest.raises(ValueError, match=r"expected \(2, \.\.\.\)"):
        BatchedCIAO([torch.zeros(3, 3)], hp)
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        BatchedCIAO([torch.zeros(2, 3)], [{}, {"momentum": 0.9}])


def test_pop_is_one_batched_pop_shared_by_the_members():
    pair = Pair()
    gen = torch.Generator().manual_seed(9)
    for _ in range(5):
        pair.step(random_grads(gen))
    calls = []
    stats = pair.batched._stats
    pop = stats.pop
    stats.pop = lambda: calls.append(1) or pop()
    rows = pair.batched.pop_step_stats()
    assert len(calls) == 1 and len(rows) == N
    want = [opt.pop_step_stats() for opt in pair.ciaos]
    assert [r["clip_rate"] for r in rows] == [w["clip_rate"] for w in want]
    for _ in range(4):  # steps 6..9, of which 9 is measured
        pair.step(random_grads(gen))
    # Member 0 pops twice before a step: the second time an empty period, as CIAO gives,
    # and the other members' rows are kept for them.
    members = pair.batched.members
    assert members[0].pop_step_stats()["clip_rate"] == pair.ciaos[0].pop_step_stats()["clip_rate"]
    again = members[0].pop_step_stats()
    assert again == pytest.approx(pair.ciaos[0].pop_step_stats(), nan_ok=True)
    assert math.isnan(again["cos_grad_momentum"]) and again["clip_rate"] == 0.0
    for i in (1, 2, 3):
        got, want = members[i].pop_step_stats(), pair.ciaos[i].pop_step_stats()
        assert got == pytest.approx(want, rel=1e-9, abs=1e-9), i
    assert len(calls) == 3


def test_controllers_and_registers_drive_members_as_they_drive_ciaos(policy_file):
    policy = load_policy(policy_file)
    pair = Pair(HPARAMS[:3], stat_samples=2048)
    n, steps = 3, 60
    gen = torch.Generator().manual_seed(10)
    x = torch.randn(n, 16, 5, generator=gen, dtype=torch.float64)

    def losses(ws):  # a two-layer net per member; ws: stacked (N, ...) or one member's
        h = torch.tanh(x @ ws[0].transpose(-1, -2) + ws[1].unsqueeze(-2))
        return ((h @ ws[2].transpose(-1, -2) + ws[3].unsqueeze(-2)) ** 2).mean(dim=(-1, -2))

    def controllers(optimizers):
        return [
            Controller(policy, opt, steps, 10, greedy=False, seed=i)
            for i, opt in enumerate(optimizers)
        ]

    batched, alone = controllers(pair.batched.members), controllers(pair.ciaos)
    module = nn.Module()  # the registers save and restore the optimizers' state only
    registers = set()
    for t in range(steps):
        if t in batched[0].decision_steps:
            with torch.no_grad():
                train = losses(pair.params).tolist()
            for i in range(n):
                got = batched[i].decide(t, module, train_loss=train[i], val_loss=None)
                want = alone[i].decide(t, module, train_loss=train[i], val_loss=None)
                assert got.action == want.action, (t, i)
                registers.add(got.register[0])
        pair.batched.zero_grad()
        losses(pair.params).sum().backward()
        grads = [p.grad for p in pair.params]
        for c in batched + alone:
            c.before_step(t)
        for i in range(n):
            for p, g in zip(pair.member_params[i], grads, strict=True):
                p.grad = g[i].clone()
            pair.ciaos[i].step()
        pair.batched.step()
        pair.assert_params_close()
    assert {"save", "load"} <= registers
    assert [m.hparams for m in pair.batched.members] == [o.hparams for o in pair.ciaos]


def without_host_reads(pair):
    """The step as it runs on an accelerator, where reading a flag off the device would wait
    for it: every mask and selection is applied, even where it changes nothing."""
    pair.batched._host_reads = False
    return pair


@pytest.mark.parametrize("host_reads", [True, False])
def test_heavy_clipping_folds_the_scale_as_ciao_does(host_reads):
    hparams = [dict(h, ombeta1=0.5, clip_fraction=1e-4, grad_clip_ombeta=1e-3) for h in HPARAMS]
    hparams[0]["clip_fraction"] = None  # its scale stays 1: nothing to fold
    pair = Pair(hparams)
    if not host_reads:
        without_host_reads(pair)
    gen = torch.Generator().manual_seed(11)
    folded = set()
    for t in range(24):
        pair.step(random_grads(gen, spread=0.0))
        pair.assert_params_close()
        pair.assert_state_close()
        scales = [m.state_dict()["exp_avg_scale"][0].item() for m in pair.batched.members]
        folded |= {i for i, s in enumerate(scales) if s == 1.0 and i > 0}
        if t == 0 or t % 8 == 7:
            pair.assert_stats_close(skip_noise=t == 0)
    assert folded == {1, 2, 3}  # each clipped member's scale fell below 1e-3 and was folded


@pytest.mark.parametrize("lamb", [False, True], ids=["adamw", "lamb"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_steps_without_host_reads_match_ciao(dtype, lamb):
    """The accelerator's form of the step, run on the CPU, with skips and changes."""
    hparams = lamb_hparams(HPARAMS) if lamb else HPARAMS
    pair = without_host_reads(Pair(hparams, dtype=dtype))
    run(pair, 20, torch.Generator().manual_seed(12), on_step=change_hparams(pair))
    skipping = without_host_reads(Pair(hparams, dtype=dtype))
    gen = torch.Generator().manual_seed(13)
    for t in range(6):
        grads = random_grads(gen, dtype=dtype)
        if t == 3:
            grads[2][1, 0, 3] = math.nan
        skipping.step(grads)
        skipping.assert_params_close()
        skipping.assert_state_close()
    assert [m.skipped_steps for m in skipping.batched.members] == [0, 1, 0, 0]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("lr_factor", True, "member 1: lr_factor=True is not allowed"),
        ("lr_factor", 101.0, r"member 1: lr_factor=101\.0 is out of range"),
        ("lr_factor", math.nan, "member 1: lr_factor=nan is out of range"),
        ("lr_factor", -0.5, "member 1: lr_factor=-0.5 is out of range"),
        ("adamax", 0, "member 1: adamax=0 is not allowed"),  # == False, but not a bool
        ("weight_decay", True, "member 1: weight_decay=True is not allowed"),
    ],
)
def test_changed_value_or_type_is_validated_at_the_next_step(key, value, message):
    """lr_factor changes every step and is checked apart from the other values; a value
    replaced by an equal one of another type is checked too."""
    hparams = [dict(h) for h in HPARAMS]
    hparams[1]["weight_decay"] = 1.0  # == True
    pair = Pair(hparams)
    gen = torch.Generator().manual_seed(14)
    run(pair, 3, gen)
    group = pair.batched.members[1].param_groups[0]
    was = group[key]
    group[key] = value
    assert_step_refused(pair, gen, message, steps=3)
    pair.set_hparam(1, key, was)
    run(pair, 3, gen)  # still in step with CIAO


def test_lr_factor_of_any_accepted_type_steps_as_ciao():
    pair = Pair()
    gen = torch.Generator().manual_seed(15)
    for t, factor in enumerate([1, 2, 0.5, 0, 1.0, 3]):
        for i in range(N):
            pair.set_hparam(i, "lr_factor", factor if i % 2 == 0 else 1.0 - t / 10)
        pair.step(random_grads(gen))
        pair.assert_params_close()
        pair.assert_state_close()


@pytest.mark.parametrize("set_to_none", [True, False])
def test_gradients_from_backward_after_zero_grad_either_way(set_to_none):
    """Gradients accumulated by backward after `zero_grad(set_to_none)`: with True a tensor
    the loss leaves out has no gradient and is left out of the step; with False its gradient
    is zeros, and it steps, as CIAO steps it after the same zero_grad."""
    pair = Pair()
    gen = torch.Generator().manual_seed(16)
    x = torch.randn(N, 16, 5, generator=gen, dtype=torch.float64)

    def losses(ws, with_bias):
        h = torch.tanh(x @ ws[0].transpose(-1, -2) + ws[1].unsqueeze(-2)) @ ws[2].transpose(-1, -2)
        return ((h + ws[3].unsqueeze(-2) if with_bias else h) ** 2).mean(dim=(-1, -2))

    for t in range(12):
        with_bias = t % 3 != 1
        pair.batched.zero_grad(set_to_none=set_to_none)
        for opt in pair.ciaos:
            opt.zero_grad(set_to_none=set_to_none)
        if t > 0:
            for p in pair.params:
                assert (p.grad is None) if set_to_none else bool((p.grad == 0).all())
        losses(pair.params, with_bias).sum().backward()
        for i, ps in enumerate(pair.member_params):
            for p, q in zip(ps, pair.params, strict=True):
                if q.grad is not None:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    p.grad.add_(q.grad[i])
        assert (pair.params[3].grad is None) == (set_to_none and not with_bias)
        pair.batched.step()
        for opt in pair.ciaos:
            opt.step()
        pair.assert_params_close()
        pair.assert_state_close()


def test_row_sparse_tensors_match_ciao_with_and_without_their_trust_ratio():
    """The first weight matrix is row-sparse in members 0 and 2 (rows of zeros in its first
    gradient, as an embedding table's); members 0 and 1 keep the trust ratio off such tensors
    (lamb_sparse=False), and member 2 switches it off mid-run."""
    hparams = [{**h, "lamb_sparse": i > 1} for i, h in enumerate(lamb_hparams(HPARAMS))]
    hparams[0]["lamb_power"] = 1.0
    pair = Pair(hparams)

    def on_step(t, grads):
        if t == 0:
            grads[0][0, 2] = 0.0
            grads[0][2, 4] = 0.0
        if t == 7:
            pair.set_hparam(2, "lamb_sparse", False)
            pair.set_hparam(3, "lamb_sparse", False)  # no row-sparse tensor: changes nothing

    run(pair, 14, torch.Generator().manual_seed(24), on_step=on_step, pop_every=4)
    sparse = [m.state_dict()["row_sparse"].tolist() for m in pair.batched.members]
    assert sparse == [[True, False, False, False], [False] * 4, [True, False, False, False],
                      [False] * 4]  # fmt: skip
    assert [pair.ciaos[i].state[pair.member_params[i][0]]["row_sparse"] for i in range(N)] == [
        True,
        False,
        True,
        False,
    ]


def test_lamb_free_below_steps_each_member_as_its_ciao():
    """Members under the trust ratio with `lamb_free_below` off, at 1/3 and at 0.9, and one
    without the ratio: each decides which matrices to free as its CIAO does (at its first
    step that is not skipped), steps as it, and keeps the decision through a save and load."""
    shapes, scales = [(6, 5), (6, 5), (4, 6), (6,)], [1.0, 0.05, 0.5, 1.0]
    extra = [
        dict(lamb_power=1.0),
        dict(lamb_power=1.0, lamb_free_below=1 / 3),
        dict(lamb_power=1.0, lamb_free_below=0.9),
        dict(lamb_power=0.0, lamb_free_below=0.5),
    ]
    hparams = [{**h, **e} for h, e in zip(HPARAMS, extra, strict=True)]
    pair = Pair(hparams, shapes=shapes, scales=scales)
    gen = torch.Generator().manual_seed(5)
    for t in range(12):
        grads = [torch.randn((N, *s), generator=gen, dtype=torch.float64) for s in shapes]
        if t == 0:
            grads[0][1] = math.nan  # member 1 skips its first step: it decides at its second
        pair.step(grads)
        pair.assert_params_close()
        if t == 5:
            saved = pair.save(1)
        if t == 8:
            pair.restore(1, saved)
    flags = [
        [bool(pair.ciaos[i].state[p].get("lamb_free", False)) for p in pair.member_params[i]]
        for i in range(N)
    ]
    assert flags == [
        [False] * 4,
        [False, True, False, False],  # rms 0.05 under a third of the median, 0.5
        [False, True, False, False],  # 0.5 is the median itself
        [False] * 4,  # no trust ratio: nothing decided
    ]
    for i, member in enumerate(pair.batched.members):
        assert member.state_dict()["lamb_free"].tolist() == flags[i]


def _trained(hparams, shapes, scales):
    """A Pair stepped ten times on random gradients, each member checked against its CIAO at
    every step; the first tensor row-sparse for members 0 and 2 (its row 0 of the first
    gradient zero)."""
    pair = Pair(hparams, shapes=shapes, scales=scales)
    gen = torch.Generator().manual_seed(7)
    for t in range(10):
        grads = [torch.randn((N, *s), generator=gen, dtype=torch.float64) for s in shapes]
        if t == 0:
            grads[0][::2, 0] = 0.0
        pair.step(grads)
        pair.assert_params_close()
    return pair


def test_lamb_norm_ceiling_steps_each_member_as_its_ciao():
    """Members under the trust ratio with the ceiling off, at 3, at 3 under a floor of 4
    (which wins), and one without the ratio, their first tensor (grown past the ceiling)
    row-sparse for some (never capped): each steps as its CIAO."""
    shapes, scales = [(6, 5), (6, 5), (4, 6), (6,)], [5.0, 5.0, 0.1, 1.0]
    extra = [
        dict(lamb_power=1.0),
        dict(lamb_power=1.0, lamb_norm_ceiling=3.0),
        dict(lamb_power=1.0, lamb_norm_ceiling=3.0, lamb_norm_floor=4.0),
        dict(lamb_power=0.0, lamb_norm_ceiling=3.0),
    ]
    hparams = [{**h, **e} for h, e in zip(HPARAMS, extra, strict=True)]

    pair = _trained(hparams, shapes, scales)
    plain = _trained([{**h, "lamb_norm_ceiling": 0.0} for h in hparams], shapes, scales)
    moved = [
        [not torch.allclose(a[i], b[i]) for a, b in zip(pair.params, plain.params, strict=True)]
        for i in range(N)
    ]
    assert moved[1][0] and moved[2][1]  # the grown dense matrices are capped
    assert not moved[2][0]  # a row-sparse table is not
    assert not moved[3][0] and not moved[1][3]  # no ratio, no cap; vectors take none


def test_lamb_norm_floor_steps_each_member_as_its_ciao():
    """Members under the trust ratio with the floor off, at 1 and at 3, and one without the
    ratio, their first tensor row-sparse for some (never floored): each steps as its CIAO."""
    shapes, scales = [(6, 5), (6, 5), (4, 6), (6,)], [0.02, 0.02, 1.0, 1.0]
    extra = [
        dict(lamb_power=1.0),
        dict(lamb_power=1.0, lamb_norm_floor=1.0),
        dict(lamb_power=1.0, lamb_norm_floor=3.0),
        dict(lamb_power=0.0, lamb_norm_floor=1.0),
    ]
    hparams = [{**h, **e} for h, e in zip(HPARAMS, extra, strict=True)]

    pair = _trained(hparams, shapes, scales)
    plain = _trained([{**h, "lamb_norm_floor": 0.0} for h in hparams], shapes, scales)
    moved = [
        not torch.allclose(a, b)
        for a, b in zip(
            [p[1].detach() for p in pair.params], [p[1].detach() for p in plain.params], strict=True
        )
    ]
    assert moved[1] and not moved[3]  # the small dense matrix is floored, the vector is not
