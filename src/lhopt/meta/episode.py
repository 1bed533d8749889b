"""One meta-training episode: an inner training run controlled by the policy.

The run is split into K outer steps (K drawn per episode, at most budget / 4 so that each outer
step sees the statistics of at least one measured step). Before each of them the controller reads
the features, and the policy chooses one action (all heads at once): decision k happens after
round(k T / K) inner steps, for k = 0 .. K-1. The reward of decision k is the change of the
clipped log speedup over the chunk it governed (lhopt.meta.reward).

The initial hyperparameters are perturbed per episode (lr by a log-uniform factor in
[1e-2, 1e2], ombeta1, ombeta2, epsilon and weight_decay in [0.1, 10]) so that the policy learns
to correct bad starting points; the perturbation is a privileged feature of the critic.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from lhopt.control import ActionSpace, Controller
from lhopt.control.controller import decide_together
from lhopt.control.policy_file import ControlSpec
from lhopt.curves import cache, drivers
from lhopt.curves.run import run_job_safe
from lhopt.curves.speedup import pick_lr
from lhopt.meta.reward import (
    TunedCosine,
    anchored_curve,
    fit_power_law,
    log_speedup,
    outer_step_rewards,
    scored_loss,
    terminal_rewards,
)
from lhopt.optim import CIAO, DEFAULTS, HPARAMS
from lhopt.optim.batched import UNBATCHED_HPARAMS, BatchedCIAO
from lhopt.optim.groups import split_vectors
from lhopt.tasks import FAMILY_NAMES, TaskConfig, build_task, task_device
from lhopt.tasks.batched import BatchedTask, batchable
from lhopt.tasks.registry import steps_per_epoch

PERTURBED = ("lr", "ombeta1", "ombeta2", "epsilon", "weight_decay")
# The largest lr units (`EpisodeConfig.lr_scale`): lr_factor's bound, as schedules stay <= 1.
LR_SCALE_MAX = HPARAMS["lr_factor"].high
BRANCH_TIES = ("none", "keep")  # `EpisodeConfig.branch_ties`
PRIVILEGED_NAMES = (
    tuple(f"descriptor/{i}" for i in range(len(FAMILY_NAMES) + 6))
    + tuple(f"perturbation/{h}" for h in PERTURBED)
    + ("return_so_far", "log_train_loss", "log_val_loss", "progress")
)


@dataclass
class EpisodeConfig:
    min_outer_steps: int = 2
    max_outer_steps: int = 128
    lr_perturbation: float = 100.0  # lr times a log-uniform factor in [1/x, x]
    other_perturbation: float = 10.0
    reward_clip: float = 3.0
    fit_points: int = 14
    reward_horizon: float = 0.0  # H >= 1: reference capped at H x budget (lhopt.meta.reward)
    reward_loss: str = "best"  # "best": best validation loss so far; "last": the latest one
    reward_asymptote: bool = True  # False (with a horizon): extrapolate without a floor
    fixed_initial: dict = field(default_factory=dict)  # e.g. {"lr": 1e-5}: no perturbation
    # What the reward measures against: "adamw" (constant, lr 1e-3; the paper's setting) or
    # "tuned-cosine" (lhopt.meta.reward.TunedCosine: the practitioner's schedule), or
    # "tuned-cosine-bracketed" (the same, its grid extended past an end the best lr is at).
    reward_reference: str = "adamw"
    schedule: str = "constant"  # the shape under the policy's base lr (lhopt.optim.schedules)
    progress_taus: list = field(default_factory=list)  # progress embedding of the features
    noise_floor: float = 0.0  # of the gradient noise statistic (ControlSpec)
    # The members of a batch (`run_episodes` with several seeds) start from one draw of initial
    # hyperparameters, so that with one seed they differ only in their sampled actions.
    shared_start: bool = False
    heads: list = field(default_factory=list)  # heads the policy controls (ControlSpec); [] all
    # Counterfactual labels (`_Branches`): the members of a batch form groups of 1 +
    # len(branch_factors), one run until a random decision, where one keeps the hyperparameter
    # of a head drawn for the group from `branch_heads` and each other scales it by its factor
    # (a choice of every head named).
    branch: bool = False
    branch_factors: list = field(default_factory=lambda: [0.5, 2.0])
    branch_heads: list = field(default_factory=lambda: ["lr"])
    branch_margin: float = 0.02  # a choice wins by this much log speedup over every other
    # Where no choice wins: "none", no label; "keep", keep where it is within the margin of the
    # best (a move must pay by the margin to be taught; at a flat optimum they tie).
    branch_ties: str = "none"
    # The branch's decision is drawn among the run's first `branch_until` share of decisions
    # (at least one): where the level is set, before the schedule has decayed what a move does.
    branch_until: float = 1.0
    # The task's lr units: the lr CIAO applies is the policy's times a factor drawn per episode,
    # log-uniform in [lo, hi] (`draw_lr_scale`), so that a task's level varies apart from its
    # kind. A factor c makes the task one whose tuned lr is its own divided by c, its reference
    # runs unchanged (the same runs at the grid's lrs divided by c); the policy's features see
    # the applied step (as they would see smaller parameters), never c.
    lr_scale: list = field(default_factory=lambda: [1.0, 1.0])
    # The features read the run's passes over its training data (ControlSpec `epochs`); each
    # episode (each branched group) is told them with probability `epochs_known`, so that a
    # policy also learns to act where a user does not give `steps_per_epoch`.
    epochs: bool = False
    epochs_known: float = 1.0
    run_length: bool = False  # the features read log T (ControlSpec `run_length`)
    horizon_power: float = 0.0  # the applied lr times (T / 1000)^-p (ControlSpec)
    # ... and times (1 + E / 10)^-q, E the run's epochs where the episode is told them
    epochs_power: float = 0.0
    # Tensors of one dimension (biases, norms) in a second param group without weight decay,
    # as users of AdamW and the Hugging Face integration give them; episodes then run serially
    # (`BatchedCIAO` holds one group per member).
    no_decay_vectors: bool = False

    @property
    def group(self) -> int:
        """Members per branched group."""
        return 1 + len(self.branch_factors)

    @property
    def spec(self) -> ControlSpec:
        return ControlSpec(
            self.schedule,
            tuple(self.progress_taus),
            self.noise_floor,
            tuple(self.heads),
            self.epochs,
            self.run_length,
            self.horizon_power,
            self.epochs_power,
            no_decay_vectors=self.no_decay_vectors,
        )


def evaluation_config(cfg: EpisodeConfig) -> EpisodeConfig:
    """`cfg` for evaluation episodes: the default initial hyperparameters, no perturbation, no
    branches, the tasks' own lr units."""
    return EpisodeConfig(
        **{
            **vars(cfg),
            "lr_perturbation": 1.0,
            "other_perturbation": 1.0,
            "branch": False,
            "lr_scale": [1.0, 1.0],
            "epochs_known": 1.0,
        }
    )


def perturbed_hparams(rng: np.random.Generator, cfg: EpisodeConfig) -> tuple[dict, list[float]]:
    """Initial hyperparameters and the log factors applied (the critic sees them)."""
    space = ActionSpace()
    bounds = {h.hparam: (h.low, h.high) for h in space.heads}
    init, logs = {}, []
    for name in PERTURBED:
        spread = cfg.lr_perturbation if name == "lr" else cfg.other_perturbation
        factor = math.exp(rng.uniform(-math.log(spread), math.log(spread))) if spread > 1 else 1.0
        lo, hi = bounds[name]
        value = min(max(DEFAULTS[name] * factor, lo), hi)
        if name in cfg.fixed_initial:
            value = float(cfg.fixed_initial[name])
        init[name] = value
        logs.append(math.log(value / DEFAULTS[name]))
    for name, value in cfg.fixed_initial.items():  # the rest are set, never perturbed
        init.setdefault(name, value)
    return init, logs


def draw_lr_scale(rng: np.random.Generator, cfg: EpisodeConfig) -> float:
    """The episode's lr units (`EpisodeConfig.lr_scale`): log-uniform in [lo, hi]; lo, drawing
    nothing, where the range is one value."""
    lo, hi = (float(x) for x in cfg.lr_scale)
    if hi <= lo:
        return lo
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def cached_run(task_config: TaskConfig, seed: int, name: str, lr: float, multiple: float, make):
    """A baseline's run of this task and seed from the curve cache (run and stored if missing)."""
    job = {
        "task": "meta",
        "config": task_config.to_dict(),
        "seed": seed,
        "optimizer": name,
        "lr": lr,
        "multiple": multiple,
    }
    result = cache.lookup(job)
    if result is None:
        result = run_job_safe(job, make)
        if result.get("error"):
            raise RuntimeError(f"baseline run failed: {result['error']}")
        cache.store(job, result)
    return result


def baseline_law(
    task_config: TaskConfig,
    seed: int,
    fit_points: int,
    horizon: float = 0.0,
    asymptote: bool = True,
):
    """The reference for the reward from the cached `adamw` curve of this task and seed (computed
    if missing): a power law fitted to it, or with a horizon the anchored curve."""
    result = cached_run(task_config, seed, "adamw", drivers.DEFAULT_LR, 1.0, drivers.adamw)
    if horizon:
        curve = anchored_curve(result["steps"], result["val"], fit_points, horizon, asymptote)
        return curve, result
    return fit_power_law(result["steps"], result["val"], fit_points), result


# The lrs a bracketed tuning may add beyond the benchmark's grid (`TUNED_LR_GRID`, a subset).
WIDE_LR_GRID = (1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)


def bracketed_lr(curve_at, grid=drivers.TUNED_LR_GRID, wide=WIDE_LR_GRID) -> tuple:
    """The lr of `grid` whose run ends lowest (`pick_lr`), then, while that lr is the largest
    (smallest) one tried, the next larger (smaller) lr of `wide` is tried too: the pick is
    interior, or at an end of `wide`. `curve_at(lr)` is the validation curve of a run at lr.
    Returns (lr, {lr: curve} of every lr tried)."""
    curves = {lr: curve_at(lr) for lr in grid}
    while True:
        lr = pick_lr(sorted(curves), curves)
        i = wide.index(lr)
        if lr == max(curves) and i + 1 < len(wide):
            curves[wide[i + 1]] = curve_at(wide[i + 1])
        elif lr == min(curves) and i > 0:
            curves[wide[i - 1]] = curve_at(wide[i - 1])
        else:
            return lr, curves


def tuned_cosine(task_config: TaskConfig, seed: int, bracketed: bool = False) -> TunedCosine:
    """The tuned schedule's runs of this task and seed (cached): the grid at T, and (when a run
    needs them) 1.5 T and 2 T at the lr that ended lowest, as the benchmark runs
    `adamw-cosine-tuned`. `bracketed`: the grid goes on past an end while the best lr is there
    (`bracketed_lr`), so that the reference is tuned on tasks that want an lr beyond it."""

    def run(lr: float, multiple: float) -> dict:
        return cached_run(task_config, seed, "adamw-cosine", lr, multiple, drivers.adamw_cosine)

    def longer(multiple: float) -> tuple:
        result = run(lr, multiple)
        return result["steps"], result["val"]

    at_t = {}

    def curve(lr: float) -> list:
        at_t[lr] = run(lr, 1.0)
        return at_t[lr]["val"]

    # Not bracketed: the grid is its own wide grid, so nothing lies past its ends.
    lr, _ = bracketed_lr(curve, wide=WIDE_LR_GRID if bracketed else drivers.TUNED_LR_GRID)
    best = at_t[lr]
    return TunedCosine(lr, {1.0: (best["steps"], best["val"])}, best["budget"], longer)


def _finite_log(x: float | None) -> float:
    return math.log(x) if x is not None and math.isfinite(x) and x > 0 else 0.0


class _Serial:
    """N tasks of one config, each with its CIAO, stepped one after another: an episode alone,
    or the members of a branched episode (`_Branches`) that cannot run batched. With `group`
    > 1 the members of a group draw the same global random numbers (dropout masks) at each
    step, so a group stays one run until its branch and differs in nothing else after."""

    def __init__(
        self,
        task_config: TaskConfig,
        seeds: list[int],
        group: int = 1,
        device=None,
        no_decay_vectors: bool = False,
    ) -> None:
        self.no_decay_vectors = no_decay_vectors
        self.tasks = [build_task(task_config, s).to(device) for s in seeds]
        self.device = self.tasks[0].device
        self.group = group
        self.budget = self.tasks[0].budget
        self.steps_per_epoch = steps_per_epoch(self.tasks[0])
        self.modules = [t.model for t in self.tasks]
        self.descriptors = [t.descriptor().tolist() for t in self.tasks]

    def start(self, inits: list[dict]) -> None:
        self.optimizers = [
            CIAO(
                split_vectors(t.model.parameters())
                if self.no_decay_vectors
                else t.model.parameters(),
                **init,
            )
            for t, init in zip(self.tasks, inits, strict=True)
        ]

    def val_losses(self) -> list[float]:
        return [t.val_loss() for t in self.tasks]

    def step(self, t: int, controllers: list[Controller]) -> torch.Tensor:
        losses = []
        state = None
        for i, (task, opt, c) in enumerate(
            zip(self.tasks, self.optimizers, controllers, strict=True)
        ):
            if self.group > 1:  # alone, the random stream is left as it runs
                if i % self.group == 0:
                    state = _rng_state(self.device)
                else:
                    _set_rng_state(self.device, state)
            loss = task.train_loss()
            opt.zero_grad()
            loss.backward()
            c.before_step(t)
            opt.step()
            losses.append(loss.detach())
        return torch.stack(losses)


def _rng_state(device: torch.device) -> tuple:
    """The global random states dropout draws from on `device`: the CPU's, and a GPU's own."""
    gpu = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), gpu


def _set_rng_state(device: torch.device, state: tuple) -> None:
    cpu, gpu = state
    torch.set_rng_state(cpu)
    if gpu is not None:
        torch.cuda.set_rng_state(gpu, device)


class _Batched:
    """N tasks of one config stacked (`BatchedTask`) and their `BatchedCIAO`."""

    def __init__(self, task_config: TaskConfig, seeds: list[int], device=None) -> None:
        self.task = BatchedTask(task_config, seeds, device)
        self.budget = self.task.budget
        self.steps_per_epoch = steps_per_epoch(self.task.tasks[0])
        self.modules = [self.task.member(i) for i in range(len(seeds))]
        self.descriptors = [t.descriptor().tolist() for t in self.task.tasks]

    def start(self, inits: list[dict]) -> None:
        self.optimizer = BatchedCIAO(self.task.parameters(), inits)
        self.optimizers = self.optimizer.members

    def val_losses(self) -> list[float]:
        return self.task.val_losses()

    def step(self, t: int, controllers: list[Controller]) -> torch.Tensor:
        losses = self.task.train_loss()
        self.optimizer.zero_grad()
        losses.sum().backward()
        for c in controllers:
            c.before_step(t)
        self.optimizer.step()
        return losses.detach()


def _decide(controllers, step, modules, train_losses, val_losses, forced=None):
    """The members' decisions: alone as `LearnedOptimizer` decides, together in one policy
    pass for a batch (`forced`: `decide_together`'s)."""
    if len(controllers) == 1 and forced is None:
        return [
            controllers[0].decide(
                step, modules[0], train_loss=train_losses[0], val_loss=val_losses[0]
            )
        ]
    return decide_together(controllers, step, modules, train_losses, val_losses, forced)


def reward_reference(task_config: TaskConfig, seed: int, cfg: EpisodeConfig):
    """What the reward of an episode of this task and seed measures against (cached runs)."""
    if cfg.reward_reference.startswith("tuned-cosine"):
        return tuned_cosine(task_config, seed, cfg.reward_reference == "tuned-cosine-bracketed")
    law, _ = baseline_law(
        task_config, seed, cfg.fit_points, cfg.reward_horizon, cfg.reward_asymptote
    )
    return law


def draw_outer_steps(rng: np.random.Generator, budget: int, cfg: EpisodeConfig) -> int:
    """The number of decisions K of an episode: log-uniform in [min, max] outer steps, at most
    budget / 4."""
    hi = max(cfg.min_outer_steps, min(cfg.max_outer_steps, budget // 4))
    K = int(round(math.exp(rng.uniform(math.log(cfg.min_outer_steps), math.log(hi + 0.5)))))
    return min(max(K, cfg.min_outer_steps), hi)


def run_episode(
    policy,
    task_config: TaskConfig,
    seed: int,
    cfg: EpisodeConfig,
    rng: np.random.Generator,
    greedy: bool = False,
    outer_steps: int | None = None,
    device: torch.device | str | None = None,
) -> dict:
    """Run one episode with `policy` (a `lhopt.control.Policy`) and return its trajectory."""
    return run_episodes(policy, task_config, [seed], cfg, [rng], greedy, outer_steps, device)[0]


def run_episodes(
    policy,
    task_config: TaskConfig,
    seeds: list[int],
    cfg: EpisodeConfig,
    rngs: list[np.random.Generator],
    greedy: bool = False,
    outer_steps: int | None = None,
    device: torch.device | str | None = None,
) -> list[dict]:
    """One episode per seed of `task_config`, as one batched computation when there are several
    and the family is batchable (`lhopt.tasks.batched`), one at a time otherwise; their
    trajectories, in order.

    Episode i draws its initial hyperparameters (all from `rngs[0]` with `cfg.shared_start`)
    and its action-sampling seed from `rngs[i]`;
    the number of decisions K (one for all: they decide at the same steps) is `outer_steps`, or
    drawn from `rngs[0]` before them. With one seed this is the serial path, draw for draw.

    The tasks train on `device` (default the CPU; `lhopt.tasks.task_device`: the CPU for a
    family that cannot move), their batches drawn as on the CPU; the policy runs on the CPU."""
    if len(seeds) != len(rngs) or not seeds:
        raise ValueError(f"{len(seeds)} seeds and {len(rngs)} rngs: give one rng per seed")
    device = task_device(task_config, device)
    if cfg.branch:
        _check_groups(seeds, cfg.group)
    # BatchedCIAO runs the AdamW path and LAMB's: a start on CIAO's other paths runs serially.
    together = (
        batchable(task_config)
        and all(cfg.fixed_initial.get(k, DEFAULTS[k]) == DEFAULTS[k] for k in UNBATCHED_HPARAMS)
        and not cfg.no_decay_vectors
    )
    if len(seeds) > 1 and not together and not cfg.branch:
        return [
            run_episode(policy, task_config, s, cfg, r, greedy, outer_steps, device)
            for s, r in zip(seeds, rngs, strict=True)
        ]
    start = time.perf_counter()
    laws = [reward_reference(task_config, s, cfg) for s in seeds]
    if len(seeds) > 1 and together and not (cfg.branch and task_config.p.get("dropout", 0.0)):
        members = _Batched(task_config, seeds, device)
    else:  # alone, or a branched batch whose members would draw different dropout masks stacked
        members = _Serial(
            task_config, seeds, cfg.group if cfg.branch else 1, device, cfg.no_decay_vectors
        )
    T, N = members.budget, len(seeds)
    K = outer_steps if outer_steps is not None else draw_outer_steps(rngs[0], T, cfg)

    if cfg.shared_start:
        drawn = [perturbed_hparams(rngs[0], cfg)] * N
        scales = [draw_lr_scale(rngs[0], cfg)] * N
    else:
        drawn = [perturbed_hparams(r, cfg) for r in rngs]
        scales = [draw_lr_scale(r, cfg) for r in rngs]
    if cfg.branch:  # a group is one run until its branch
        drawn = [drawn[i - i % cfg.group] for i in range(N)]
        scales = [scales[i - i % cfg.group] for i in range(N)]
    told = [True] * N  # whether a member's controller is told its steps per epoch
    if cfg.epochs and cfg.epochs_known < 1:
        told = [bool(r.random() < cfg.epochs_known) for r in rngs]
        if cfg.shared_start:
            told = [told[0]] * N
        elif cfg.branch:
            told = [told[i - i % cfg.group] for i in range(N)]
    members.start([init for init, _ in drawn])
    # The critic's perturbation of the lr is the start against the task's own units.
    starts = [
        [logs[0] + math.log(c), *logs[1:]] for (_, logs), c in zip(drawn, scales, strict=True)
    ]
    controllers = [
        Controller(
            policy,
            opt,
            T,
            K,
            greedy=greedy,
            seed=int(r.integers(2**31)),
            spec=cfg.spec,
            lr_units=scale,
            steps_per_epoch=members.steps_per_epoch if known else None,
        )
        for opt, r, scale, known in zip(members.optimizers, rngs, scales, told, strict=True)
    ]
    boundaries = [*controllers[0].decision_steps, T]
    branches = None
    if cfg.branch:
        decisions = max(1, math.ceil(cfg.branch_until * (len(boundaries) - 1)))
        at = [int(r.integers(decisions)) for r in rngs[:: cfg.group]]
        heads = cfg.branch_heads
        # the head is drawn after the decision, so that with one head the draws are as before
        named = [
            heads[int(r.integers(len(heads)))] if len(heads) > 1 else heads[0]
            for r in rngs[:: cfg.group]
        ]
        branches = _Branches(at, controllers[0].space, cfg.branch_factors, named)

    runs = [_Record() for _ in range(N)]
    vals = members.val_losses()
    for r, val in zip(runs, vals, strict=True):
        r.val_start = val
    for k, begin in enumerate(controllers[0].decision_steps):
        alive = [i for i in range(N) if not runs[i].diverged]
        for i in alive:  # the base lr each decision starts from (lhopt.meta.clone reads it)
            runs[i].lrs.append(members.optimizers[i].param_groups[0]["lr"])
        forced = None
        if branches is not None:
            every = branches.forced(k)
            forced = [_remap(every[i], alive) for i in alive]
        decisions = _decide(
            [controllers[i] for i in alive],
            begin,
            [members.modules[i] for i in alive],
            [runs[i].train_mean for i in alive],
            [vals[i] for i in alive],
            forced,
        )
        for i, decision in zip(alive, decisions, strict=True):
            r = runs[i]
            privileged = (
                members.descriptors[i]
                + starts[i]
                + [r.return_so_far, _finite_log(r.train_mean), _finite_log(vals[i]), begin / T]
            )
            r.obs.append(decision.features)
            r.priv.append(np.nan_to_num(np.asarray(privileged, dtype=np.float32)))
            r.actions.append(decision.action)
            r.logps.append(decision.logp)

        loss_sum, n = torch.zeros(N, device=device), 0  # read once per period (a host sync)
        for t in range(begin, boundaries[k + 1]):
            loss_sum += members.step(t, controllers)
            n += 1
        means = [x / max(n, 1) for x in loss_sum.tolist()]
        vals = members.val_losses()
        for i, r in enumerate(runs):
            if r.diverged:
                continue
            r.train_mean, val = means[i], vals[i]
            r.steps_done = boundaries[k + 1]
            r.vals_at.append(val)
            if math.isfinite(val):
                r.best = min(r.best, val)
            if isinstance(laws[i], TunedCosine):  # only the end is scored; the critic sees it
                r.return_so_far = laws[i].log_speedup(r.best, cfg.reward_clip)
            else:
                reached = scored_loss(r.best, val, cfg.reward_loss)
                r.return_so_far = log_speedup(laws[i], reached, r.steps_done, cfg.reward_clip)
            r.diverged = not math.isfinite(val)
        if all(r.diverged for r in runs):
            break
    wall = (time.perf_counter() - start) / N
    scored = [_trajectory(r, laws[i], boundaries, cfg) for i, r in enumerate(runs)]
    if branches is not None:
        lengths = [len(r.obs) for r in runs]
        labelled = branches.labels(
            [total for _, total in scored], lengths, cfg.branch_margin, cfg.branch_ties
        )
        stakes = branches.stakes([total for _, total in scored], lengths)
        for (trajectory, _), label, stake in zip(scored, labelled, stakes, strict=True):
            trajectory["branch"] = label
            trajectory["branch_stakes"] = stake
    out = []
    for i, r in enumerate(runs):
        trajectory, total = scored[i]
        trajectory["info"] = {
            "family": task_config.family,
            "config": task_config.to_dict(),
            "seed": seeds[i],
            "outer_steps": len(controllers[i].decision_steps),
            "inner_steps": r.steps_done,
            "budget": T,
            "return": total,
            "speedup": math.exp(total),
            "diverged": r.diverged,
            "final_val": r.vals_at[-1],
            "best_val": r.best,
            "initial": drawn[i][0],
            "final_hparams": {
                k: v for k, v in members.optimizers[i].hparams[0].items() if k in PERTURBED
            },
            # The tuned reference's lr in the policy's units (None for another reference), and
            # the lr chosen at each decision; the applied lr is `lr_scale` times the policy's.
            "tuned_lr": laws[i].lr / scales[i] if isinstance(laws[i], TunedCosine) else None,
            "lr_scale": scales[i],
            "lr_trace": [d["hparams"]["lr"] for d in controllers[i].history],
            "wall_time": wall,  # the batch's, divided among its members
            # Where a branched group parted (`_Branches`): its members' decision, else None.
            "branch_at": None if branches is None else branches.at[i // cfg.group],
            # and the head whose hyperparameter it moved (its labels are that head's choices)
            "branch_head": None if branches is None else branches.heads[i // cfg.group],
        }
        out.append(trajectory)
    return out


def _check_groups(seeds: list[int], group: int) -> None:
    groups = [seeds[i : i + group] for i in range(0, len(seeds), group)]
    if len(seeds) < group or len(seeds) % group or any(len(set(g)) > 1 for g in groups):
        raise ValueError(
            f"seeds={seeds}: branched episodes come in groups of {group} members of one seed "
            "([run] batch a multiple of it and task_seeds = 1)"
        )


def _remap(f, alive: list[int]):
    """A forced action naming member j's choice, as an index among the `alive` members (None,
    the policy's own, where j is gone)."""
    if not isinstance(f, int):
        return f
    return alive.index(f) if f in alive else None


class _Branches:
    """Counterfactual labels, a group of members at a time.

    The members of group j (G of them, G = 1 + len(`factors`)) start alike and take its first
    member's sampled actions up to decision `at[j]`, drawn uniformly; there the first keeps
    every hyperparameter and member i scales that of the group's head (`heads[j]`, a name:
    "lr" by default) by `factors[i - 1]`, and all keep every hyperparameter from then on (under
    the schedule shape). The first member's state at `at[j]` is labelled with the choice (of
    that head) whose run has the highest return (the reward's log speedup: a run that
    diverged scores worst), where it beat every other by more than `margin`; where none did
    (the runs tie: the best loss came before the branch, or all are clipped), it carries no
    label. So each label says which choice there pays by the end of the run, judged on runs
    that differ in nothing else."""

    def __init__(self, at: list[int], space, factors, heads: list[str] | None = None) -> None:
        self.at = at
        self.factors = list(factors)
        self.heads = heads or ["lr"] * len(at)
        per_head = {name: self._moves(space, name, factors) for name in set(self.heads)}
        # per group: its head's choice indices (keep first) and the members' actions there
        self.choices = [per_head[name][0] for name in self.heads]
        self.actions = [per_head[name][1] for name in self.heads]
        self.keep = tuple(space.keep)

    @staticmethod
    def _moves(space, name: str, factors) -> tuple[list[int], list[tuple]]:
        index = next((i for i, h in enumerate(space.heads) if h.hparam == name), None)
        if index is None:
            names = [h.hparam for h in space.heads]
            raise ValueError(f"branch head {name!r}: not a head of {names}")
        head = space.heads[index]
        missing = [f for f in factors if f not in head.choices]
        if missing:
            raise ValueError(
                f"branch factors {missing} are not choices of the {name!r} head "
                f"{list(head.choices)}"
            )
        choices = [head.keep_index] + [head.choices.index(f) for f in factors]
        actions = []
        for c in choices:
            action = list(space.keep)
            action[index] = c
            actions.append(tuple(action))
        return choices, actions

    def forced(self, k: int) -> list:
        G, out = 1 + len(self.factors), []
        for j, at in enumerate(self.at):
            if k < at:
                out += [None] + [G * j] * (G - 1)
            elif k == at:
                out += self.actions[j]
            else:
                out += [self.keep] * G
        return out

    def labels(
        self, returns: list[float], lengths: list[int], margin: float, ties: str = "none"
    ) -> list[np.ndarray]:
        """Per member, its label at each of its `lengths` decisions (-1: none), from the
        members' `returns`; `ties` as `EpisodeConfig.branch_ties`."""
        G, out = 1 + len(self.factors), []
        for j, at in enumerate(self.at):
            scores = np.asarray(returns[G * j : G * (j + 1)], dtype=np.float64)
            labels = [np.full(n, -1, dtype=np.int64) for n in lengths[G * j : G * (j + 1)]]
            best = int(np.argmax(scores))
            if all(at < len(x) for x in labels):
                if (scores[best] - np.delete(scores, best) > margin).all():
                    labels[0][at] = self.choices[j][best]
                elif ties == "keep" and scores[best] - scores[0] <= margin:
                    labels[0][at] = self.choices[j][0]  # the first member keeps
            out += labels
        return out

    def stakes(self, returns: list[float], lengths: list[int]) -> list[np.ndarray]:
        """Per member, at each of its `lengths` decisions, what the branched choice was worth:
        at the first member's decision `at[j]`, the spread (highest minus lowest) of its
        group's returns, where every member reached it; NaN elsewhere."""
        G, out = 1 + len(self.factors), []
        for j, at in enumerate(self.at):
            scores = np.asarray(returns[G * j : G * (j + 1)], dtype=np.float64)
            stakes = [np.full(n, np.nan) for n in lengths[G * j : G * (j + 1)]]
            if all(at < len(x) for x in stakes):
                stakes[0][at] = scores.max() - scores.min()
            out += stakes
        return out


@dataclass
class _Record:
    """What one episode gathered so far."""

    obs: list = field(default_factory=list)
    priv: list = field(default_factory=list)
    actions: list = field(default_factory=list)
    logps: list = field(default_factory=list)
    lrs: list = field(default_factory=list)
    vals_at: list = field(default_factory=list)
    val_start: float = math.nan
    train_mean: float | None = None
    steps_done: int = 0
    diverged: bool = False
    return_so_far: float = 0.0
    best: float = math.inf


def _trajectory(r: _Record, law, boundaries: list[int], cfg: EpisodeConfig) -> tuple[dict, float]:
    """The arrays PPO learns from, and the return (the sum of the rewards)."""
    if isinstance(law, TunedCosine):
        rewards = terminal_rewards(law, r.vals_at, cfg.reward_clip)
    else:
        rewards = outer_step_rewards(
            law,
            boundaries[1 : len(r.vals_at) + 1],
            r.vals_at,
            cfg.reward_clip,
            loss=cfg.reward_loss,
        )
    return {
        "obs": np.stack(r.obs).astype(np.float32),
        "priv": np.stack(r.priv).astype(np.float32),
        "actions": np.asarray(r.actions, dtype=np.int64),
        "logp": np.asarray(r.logps, dtype=np.float32),
        "lr": np.asarray(r.lrs, dtype=np.float64),
        # The validation loss each decision saw (before training, then after each period).
        "val": np.asarray([r.val_start, *r.vals_at][: len(r.obs)], dtype=np.float64),
        "rewards": np.asarray(rewards, dtype=np.float32),
    }, float(sum(rewards))
