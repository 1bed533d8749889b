"""Meta-training configuration: TOML files, checked up front against typed defaults.

Sections: [run], [policy], [ppo], [episode]; every key is optional and defaults to the official
configuration (docs/meta.md). An unknown section or key, or a value of the wrong type, is an
error that names it and what is allowed.

A file may start from another: a top-level `extends = "base.toml"` (a path relative to the file)
loads the base first, then the file's keys override it section by section, key by key; a value
(a list, the `task` table) replaces the base's whole. Bases may extend others; a cycle or a
missing base is an error naming the files. So a stage of meta-training is its few changed keys.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lhopt.control.policy import PolicyConfig, unmatched_patterns
from lhopt.meta.episode import BRANCH_TIES, LR_SCALE_MAX, EpisodeConfig
from lhopt.meta.ppo import ADVANTAGES, CLONE_ORACLES, CLONE_WEIGHTS, PPOConfig
from lhopt.meta.reward import REWARD_LOSSES, REWARD_REFERENCES
from lhopt.optim.hparams import HPARAMS, check_value
from lhopt.tasks import FAMILY_NAMES, TRAINING_FAMILIES
from lhopt.tasks.base import DEVICE_TYPES
from lhopt.tasks.registry import check_scale


@dataclass
class RunConfig:
    seed: int = 0
    iterations: int = 1000
    workers: int = 2  # Ray rollout workers; 0 runs episodes in this process (deterministic)
    min_new_transitions: int = 128  # collected since the last update before the next one
    checkpoint_every: int = 5  # iterations
    eval_every: int = 0  # iterations between evaluations on `eval_suite` (0: never)
    eval_suite: str = "validation"
    eval_seeds: int = 1
    families: list = field(default_factory=lambda: list(FAMILY_NAMES))
    task: dict = field(default_factory=dict)  # a fixed task config (family, params): seeds vary
    task_pool: int = 0  # 0: a new sampled task per episode; N: cycle through N sampled tasks
    # 0: the pool is drawn from the run's own random stream as episodes need tasks; S > 0: the
    # pool is the `task_pool` configs `lhopt.tasks.sample_training_set(S, ...)` draws, the
    # sample `benchmarks/schedule_incentive.py --seed S` measures.
    pool_seed: int = 0
    # N > 0 (with `pool_seed`): the pool also holds the N configs `sample_training_set(S, N,
    # pool_extra_families)` draws, so that a stage adds families to its parent's pool without
    # redrawing (and re-running the references of) the tasks it had.
    pool_extra: int = 0
    pool_extra_families: list = field(default_factory=list)
    # Further groups after those, each {n = N, families = [...], budget_scale = S (optional: the
    # run's), seed = R (optional: pool_seed)}: the N configs `sample_training_set(R, N,
    # families, S)` draws, so that a later stage adds a family (at its own range of budgets, or
    # fresh draws of one already there under another seed) and keeps its parent's pool.
    pool_groups: list = field(default_factory=list)
    # Seeds an episode's task is drawn from: 0 any (a new one each time); N: 0..N-1, so that
    # the reward's reference runs (per task and seed, cached) are reused across episodes.
    task_seeds: int = 0
    init_from: str = ""  # a checkpoint.pt or policy file whose weights start this run (a stage)
    # A checkpoint.pt of a cloning run whose DAgger aggregate (every labelled episode it cloned
    # on) starts this run's, so that the first updates fit its labels with the new ones
    # instead of the first few new ones alone ("": none).
    init_labels: str = ""
    budget_scale: float = 1.0  # sampled budgets times a log-uniform factor in [1, budget_scale]
    data_scale: float = 1.0  # MNIST-1D training sets divided by a log-uniform factor in [1, it]
    # Episodes per rollout: N seeds of one sampled task, run as one batched computation where
    # the family allows it (lhopt.tasks.batched), one after another otherwise. 1: one episode.
    batch: int = 1
    # Where the rollouts' inner tasks train: "cpu", or "cuda" / "cuda:i" on a worker with a GPU
    # (`lhopt.tasks.base.check_device`; families that cannot move stay on the CPU, with a
    # warning). The policy, the learner and the evaluation episodes stay on the CPU.
    device: str = "cpu"


@dataclass
class MetaConfig:
    run: RunConfig = field(default_factory=RunConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    episode: EpisodeConfig = field(default_factory=EpisodeConfig)

    def to_dict(self) -> dict:
        return {f.name: dataclasses.asdict(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _check_value(section: str, key: str, value, default):
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ValueError(f"[{section}] {key} = {value!r} must be of type {expected.__name__}")
    if expected is float and not math.isfinite(value):
        raise ValueError(f"[{section}] {key} = {value!r} must be a finite number")
    if expected in (int, float) and value < 0:
        raise ValueError(f"[{section}] {key} = {value!r} must be >= 0")
    return value


def from_dict(data: dict) -> MetaConfig:
    cfg = MetaConfig()
    sections = {f.name for f in dataclasses.fields(MetaConfig)}
    unknown = sorted(set(data) - sections)
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; valid: {sorted(sections)}")
    for section, values in data.items():
        if not isinstance(values, dict):
            raise ValueError(f"[{section}] must be a table of keys, got {values!r}")
        target = getattr(cfg, section)
        fields = {f.name: getattr(target, f.name) for f in dataclasses.fields(target)}
        for key, value in values.items():
            if key not in fields:
                raise ValueError(f"[{section}] unknown key {key!r}; valid: {sorted(fields)}")
            fields[key] = _check_value(section, key, value, fields[key])
        setattr(cfg, section, type(target)(**fields))
    _check_semantics(cfg)
    return cfg


def _check_semantics(cfg: MetaConfig) -> None:
    from lhopt.tasks import TaskConfig, check_config, suite

    run, ep, ppo = cfg.run, cfg.episode, cfg.ppo
    try:  # the name only: the GPU may be on the rollout workers, not on this machine
        device = torch.device(run.device)
    except (RuntimeError, TypeError, ValueError):
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise ValueError(
            f"[run] device = {run.device!r}: expected one of {list(DEVICE_TYPES)}, or 'cuda:i'"
        )
    bad = [f for f in run.families if f not in TRAINING_FAMILIES]
    if bad or not run.families:
        raise ValueError(
            f"[run] families = {run.families!r}: valid names are {list(TRAINING_FAMILIES)}"
        )
    if run.task:
        try:
            check_config(TaskConfig.from_dict(dict(run.task)))
        except ValueError as e:
            raise ValueError(f"[run] task: {e}") from e
    suite(run.eval_suite)
    try:
        check_scale(run.budget_scale)
        check_scale(run.data_scale, "data_scale")
    except ValueError as e:
        raise ValueError(f"[run] {e}") from e
    _require(cfg, "run", "iterations", lambda v: v >= 1, ">= 1")
    _require(cfg, "run", "checkpoint_every", lambda v: v >= 1, ">= 1")
    _require(cfg, "run", "min_new_transitions", lambda v: v >= 1, ">= 1 (transitions per update)")
    _require(cfg, "run", "eval_seeds", lambda v: v >= 1, ">= 1")
    _require(cfg, "run", "batch", lambda v: v >= 1, ">= 1 (episodes per rollout)")
    if run.pool_seed and not run.task_pool:
        raise ValueError(
            f"[run] pool_seed = {run.pool_seed} draws a task pool: set [run] task_pool to its "
            "size (> 0)"
        )
    if run.pool_extra < 0 or (run.pool_extra and not run.pool_seed):
        raise ValueError(
            f"[run] pool_extra = {run.pool_extra}: expected 0, or N > 0 with [run] pool_seed "
            "set (the extra configs are drawn from it)"
        )
    bad = [f for f in run.pool_extra_families if f not in TRAINING_FAMILIES]
    if bad or bool(run.pool_extra) != bool(run.pool_extra_families):
        raise ValueError(
            f"[run] pool_extra_families = {run.pool_extra_families!r}: with pool_extra > 0, "
            f"a non-empty list of {list(TRAINING_FAMILIES)}; empty otherwise"
        )
    if run.pool_extra and set(run.pool_extra_families) == set(run.families):
        raise ValueError(
            f"[run] pool_extra_families = {run.pool_extra_families!r} is [run] families: drawn "
            "from the same pool_seed, the extra configs would repeat the pool's first ones; "
            "raise task_pool instead"
        )
    _check_pool_groups(run)
    if run.batch > 1 and ep.noise_floor == 0:
        raise ValueError(
            f"[run] batch = {run.batch} needs [episode] noise_floor > 0 (e.g. 1e-5): without "
            "it the noise feature of a run's first step is rounding error, which a batched "
            "step sums in another order than CIAO, so a policy would train on features it is "
            "not deployed with"
        )
    if ppo.advantage not in ADVANTAGES:
        raise ValueError(f"[ppo] advantage = {ppo.advantage!r}: expected one of {list(ADVANTAGES)}")
    if ppo.advantage.startswith("group") and run.batch < 2:
        raise ValueError(
            f"[ppo] advantage = {ppo.advantage!r} compares the members of a batch: set [run] "
            f"batch >= 2 (got {run.batch})"
        )
    tuned_oracle = ppo.clone_oracle == "tuned"
    if ppo.clone_iterations and tuned_oracle and not ep.reward_reference.startswith("tuned-cosine"):
        raise ValueError(
            f"[ppo] clone_iterations = {ppo.clone_iterations} clones an oracle that moves the lr "
            "toward the tuned reference's: set [episode] reward_reference = 'tuned-cosine' or "
            f"'tuned-cosine-bracketed' (got {ep.reward_reference!r})"
        )
    if ppo.clone_steps < 0 or (ppo.clone_steps and not ppo.clone_iterations):
        raise ValueError(
            f"[ppo] clone_steps = {ppo.clone_steps}: >= 0, and > 0 only with clone_iterations "
            f"> 0 (got clone_iterations = {ppo.clone_iterations})"
        )
    if ppo.clone_iterations and ep.heads and "lr" not in ep.heads:
        raise ValueError(
            f"[ppo] clone_iterations = {ppo.clone_iterations} trains the lr head, which "
            f"[episode] heads = {ep.heads!r} holds: add 'lr' to it"
        )
    if run.init_labels and not (ppo.clone_iterations and ppo.clone_steps):
        raise ValueError(
            f"[run] init_labels = {run.init_labels!r} starts this run's cloning aggregate: it "
            f"needs [ppo] clone_iterations > 0 and clone_steps > 0 (got {ppo.clone_iterations} "
            f"and {ppo.clone_steps})"
        )
    _require(cfg, "ppo", "clone_coef", lambda v: v >= 0, ">= 0")
    _require(cfg, "ppo", "level_coef", lambda v: v >= 0, ">= 0")
    if ppo.level_coef and not (
        ppo.clone_iterations and ep.reward_reference.startswith("tuned-cosine")
    ):
        raise ValueError(
            f"[ppo] level_coef = {ppo.level_coef} reads the level during cloning against the "
            "reward reference's tuned lr: it needs [ppo] clone_iterations > 0 (got "
            f"{ppo.clone_iterations}) and a 'tuned-cosine' [episode] reward_reference (got "
            f"{ep.reward_reference!r})"
        )
    if ppo.clone_coef and tuned_oracle and not ep.reward_reference.startswith("tuned-cosine"):
        raise ValueError(
            f"[ppo] clone_coef = {ppo.clone_coef} keeps an oracle that moves the lr toward the "
            "tuned reference's: set [episode] reward_reference = 'tuned-cosine' or "
            f"'tuned-cosine-bracketed' (got {ep.reward_reference!r}), or clone_oracle = 'stall'"
        )
    if ppo.clone_coef and ep.heads and "lr" not in ep.heads:
        raise ValueError(
            f"[ppo] clone_coef = {ppo.clone_coef} trains the lr head, which [episode] heads = "
            f"{ep.heads!r} holds: add 'lr' to it"
        )
    if ppo.clone_oracle not in CLONE_ORACLES:
        raise ValueError(
            f"[ppo] clone_oracle = {ppo.clone_oracle!r}: expected one of {list(CLONE_ORACLES)}"
        )
    _require(cfg, "ppo", "clone_stall_eps", lambda v: 0 < v < 1, "in (0, 1)")
    _require(cfg, "ppo", "keep_prior", lambda v: v >= 0, ">= 0")
    if ppo.keep_prior and ppo.clone_oracle != "branch":
        raise ValueError(
            f"[ppo] keep_prior = {ppo.keep_prior} weighs 'keep' on the decisions the branch "
            f"oracle leaves unlabelled; every decision of the {ppo.clone_oracle!r} oracle has a "
            "label: set clone_oracle = 'branch' or keep_prior = 0"
        )
    if ppo.clone_weight not in CLONE_WEIGHTS:
        raise ValueError(
            f"[ppo] clone_weight = {ppo.clone_weight!r}: expected one of {list(CLONE_WEIGHTS)}"
        )
    if ppo.clone_weight != "none" and ppo.clone_oracle != "branch":
        raise ValueError(
            f"[ppo] clone_weight = {ppo.clone_weight!r} weighs the branch oracle's labels by "
            f"their branched runs; the {ppo.clone_oracle!r} oracle has none: set clone_oracle = "
            "'branch' or clone_weight = 'none'"
        )
    if (ppo.clone_oracle == "branch") != ep.branch:
        raise ValueError(
            f"[episode] branch = {str(ep.branch).lower()} with [ppo] clone_oracle = "
            f"{ppo.clone_oracle!r}: branched episodes are the 'branch' oracle's labels, and "
            "only it reads them; set both or neither"
        )
    from lhopt.control.actions import ActionSpace

    space = {h.hparam: h for h in ActionSpace().heads if h.kind == "scale"}
    names = ep.branch_heads
    if not names or len(set(names)) < len(names) or not set(names) <= set(space):
        raise ValueError(
            f"[episode] branch_heads = {names!r}: distinct names of scale heads, at least "
            f"one; allowed {list(space)}"
        )
    if ep.branch:
        if ep.heads and not set(names) <= set(ep.heads):
            raise ValueError(
                f"[episode] branch_heads = {names!r} moves heads that [episode] heads = "
                f"{ep.heads!r} leaves fixed: add {sorted(set(names) - set(ep.heads))} to it"
            )
        factors = ep.branch_factors
        allowed = set.intersection(*(set(space[n].choices) - {1.0} for n in names))
        if not factors or len(set(factors)) < len(factors) or not set(factors) <= allowed:
            raise ValueError(
                f"[episode] branch_factors = {factors!r}: distinct choices other than keep of "
                f"every head of branch_heads = {names!r}, at least one; allowed "
                f"{sorted(allowed)}"
            )
        if run.batch % ep.group or run.task_seeds != 1:
            raise ValueError(
                f"[episode] branch = true groups the members of a batch {ep.group} at a time "
                f"on one seed: set [run] batch to a multiple of {ep.group} and task_seeds = 1 "
                f"(got batch = {run.batch}, task_seeds = {run.task_seeds})"
            )
        if not ppo.clone_steps:
            raise ValueError(
                "[episode] branch = true labels one decision in a group of episodes: set [ppo] "
                "clone_steps > 0 so that cloning learns from every labelled episode so far"
            )
        if ppo.clone_iterations < run.iterations or ppo.clone_coef:
            raise ValueError(
                "[episode] branch = true forces the actions of half the episodes, which PPO "
                "cannot learn from: set [ppo] clone_iterations >= [run] iterations (got "
                f"{ppo.clone_iterations} < {run.iterations}) and clone_coef = 0 (got "
                f"{ppo.clone_coef})"
            )
    _require(cfg, "episode", "branch_margin", lambda v: v >= 0, ">= 0")
    _require(cfg, "episode", "branch_until", lambda v: 0 < v <= 1, "in (0, 1]")
    _require(cfg, "episode", "epochs_known", lambda v: 0 <= v <= 1, "in [0, 1]")
    if ep.epochs_known < 1 and not ep.epochs:
        raise ValueError(
            f"[episode] epochs_known = {ep.epochs_known!r} is read only with epochs = true "
            "(the features then hold the run's passes over its data)"
        )
    if ep.branch_ties not in BRANCH_TIES:
        raise ValueError(
            f"[episode] branch_ties = {ep.branch_ties!r}: expected one of {list(BRANCH_TIES)}"
        )
    scale = ep.lr_scale
    if not (
        isinstance(scale, list | tuple)
        and len(scale) == 2
        and all(isinstance(x, int | float) and math.isfinite(x) for x in scale)
        and 0 < scale[0] <= scale[1] <= LR_SCALE_MAX
    ):
        raise ValueError(
            f"[episode] lr_scale = {scale!r}: expected [lo, hi] with 0 < lo <= hi <= "
            f"{LR_SCALE_MAX:g} (the factor of the applied lr, drawn per episode)"
        )
    _require(cfg, "ppo", "lr", lambda v: v > 0, "> 0")
    _require(cfg, "ppo", "beta2", lambda v: v < 1, "in [0, 1)")
    _require(cfg, "ppo", "max_grad_norm", lambda v: v > 0, "> 0")
    _require(cfg, "ppo", "max_sample_reuse", lambda v: v >= 1, ">= 1")
    _require(cfg, "policy", "input_clip", lambda v: v > 0, "> 0")
    _require(cfg, "policy", "norm_beta", lambda v: v < 1, "in [0, 1)")
    _require(cfg, "episode", "reward_clip", lambda v: v > 0, "> 0")
    startable = [n for n in HPARAMS if n != "lr_factor"]  # the schedule sets lr_factor
    for name, value in ep.fixed_initial.items():
        if name not in startable:
            raise ValueError(
                f"[episode] fixed_initial: unknown hyperparameter {name!r}; valid: {startable}"
            )
        try:
            check_value(name, value)
        except ValueError as e:
            raise ValueError(f"[episode] fixed_initial: {e}") from e
    if not 2 <= ep.min_outer_steps <= ep.max_outer_steps:
        raise ValueError(
            f"[episode] outer steps [{ep.min_outer_steps}, {ep.max_outer_steps}] must satisfy "
            "2 <= min_outer_steps <= max_outer_steps"
        )
    if ep.reward_horizon and ep.reward_horizon < 1:
        raise ValueError(
            f"[episode] reward_horizon = {ep.reward_horizon!r}: 0 (none) or a multiple >= 1 of "
            "the budget"
        )
    if not ep.reward_asymptote and not ep.reward_horizon:
        raise ValueError(
            "[episode] reward_asymptote = false needs a reward_horizon >= 1 (the cap of the "
            "extrapolation without a floor); got reward_horizon = 0"
        )
    if ep.reward_loss not in REWARD_LOSSES:
        raise ValueError(
            f"[episode] reward_loss = {ep.reward_loss!r}: expected one of {list(REWARD_LOSSES)}"
        )
    if ep.reward_reference not in REWARD_REFERENCES:
        raise ValueError(
            f"[episode] reward_reference = {ep.reward_reference!r}: expected one of "
            f"{list(REWARD_REFERENCES)}"
        )
    try:
        ep.spec  # noqa: B018 - checks schedule, progress_taus and noise_floor
    except (ValueError, TypeError) as e:
        raise ValueError(f"[episode] {e}") from e
    if ep.lr_perturbation < 1 or ep.other_perturbation < 1:
        raise ValueError("[episode] lr_perturbation and other_perturbation must be >= 1")
    if not 0 < ppo.clip < 1 or not 0 <= ppo.gae_lambda <= 1 or not 0 < ppo.gamma <= 1:
        raise ValueError("[ppo] need 0 < clip < 1, 0 <= gae_lambda <= 1, 0 < gamma <= 1")
    if ppo.batch < 1 or ppo.batches_per_iteration < 1 or ppo.buffer < ppo.batch:
        raise ValueError("[ppo] need batch >= 1, batches_per_iteration >= 1, buffer >= batch")
    if cfg.policy.hidden < 1 or not 0 <= cfg.policy.polyak < 1:
        raise ValueError("[policy] need hidden >= 1 and 0 <= polyak < 1")
    if cfg.policy.read:
        from lhopt.control.policy_file import actor_layout

        features = actor_layout(ep.spec)["features"]
        bad = unmatched_patterns(features, cfg.policy.read)
        if bad:
            raise ValueError(
                f"[policy] read = {bad!r}: each must be a pattern matching a feature name; "
                f"features: {features}"
            )


def _require(cfg: MetaConfig, section: str, key: str, ok, allowed: str) -> None:
    value = getattr(getattr(cfg, section), key)
    if not ok(value):
        raise ValueError(f"[{section}] {key} = {value!r} is not allowed: {allowed}")


def load(path: str | Path) -> MetaConfig:
    return from_dict(load_dict(path))


def load_dict(path: str | Path) -> dict:
    """The file's sections with its `extends` chain merged in, not yet checked."""
    return _read(Path(path), ())


def _read(path: Path, chain: tuple[Path, ...]) -> dict:
    if not path.is_file():
        via = f" (extended by {str(chain[-1])!r})" if chain else ""
        raise ValueError(f"config file {str(path)!r} does not exist{via}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"config file {str(path)!r} is not valid TOML: {e}") from e
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise ValueError(f"config file {str(path)!r}: extends = {base!r} must be a file path")
    seen = (*chain, path)
    target = path.parent / base
    if any(target.resolve() == p.resolve() for p in seen):
        cycle = " -> ".join(str(p) for p in (*seen, target))
        raise ValueError(f"config file {str(path)!r}: extends forms a cycle: {cycle}")
    return _merge(_read(target, seen), data)


POOL_GROUP_KEYS = ("n", "families", "budget_scale", "seed")


def _check_pool_groups(run: RunConfig) -> None:
    """`[run] pool_groups`: tables of a count, training families, an optional budget scale and
    an optional seed, each drawing configs the pool does not hold yet (another family list or
    another seed than the pool's, the extras' and the other groups')."""
    if run.pool_groups and not run.pool_seed:
        raise ValueError(
            f"[run] pool_groups = {run.pool_groups!r}: needs [run] pool_seed (the groups' "
            "configs are drawn from it)"
        )
    seen = [(set(run.families), run.pool_seed)]
    if run.pool_extra:
        seen.append((set(run.pool_extra_families), run.pool_seed))
    for k, group in enumerate(run.pool_groups):
        where = f"[run] pool_groups[{k}] = {group!r}"
        if not isinstance(group, dict):
            raise ValueError(f"{where}: expected a table with keys {list(POOL_GROUP_KEYS)}")
        unknown = sorted(set(group) - set(POOL_GROUP_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; valid: {list(POOL_GROUP_KEYS)}")
        n, families = group.get("n"), group.get("families")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"{where}: n must be an int >= 1 (configs in the group)")
        if (
            not isinstance(families, list)
            or not families
            or any(f not in TRAINING_FAMILIES for f in families)
        ):
            raise ValueError(
                f"{where}: families must be a non-empty list of {list(TRAINING_FAMILIES)}"
            )
        if "budget_scale" in group:
            try:
                check_scale(group["budget_scale"])
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from e
        seed = group.get("seed", run.pool_seed)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 1:
            raise ValueError(f"{where}: seed must be an int >= 1 (the group's draw seed)")
        if (set(families), seed) in seen:
            raise ValueError(
                f"{where}: its families are the pool's, the extras' or an earlier group's: "
                f"drawn from the same seed ({seed}), its configs would repeat theirs (at another "
                "budget_scale only their budgets would differ); raise that count or give the "
                "group another seed"
            )
        seen.append((set(families), seed))


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for section, values in override.items():
        if isinstance(values, dict) and isinstance(merged.get(section), dict):
            merged[section] = {**merged[section], **values}
        else:  # from_dict reports a section that is not a table
            merged[section] = values
    return merged


def dumps(cfg: MetaConfig) -> str:
    """The whole configuration as TOML, every key resolved (what a run folder records, so that
    it reads alone, without the files it extended)."""
    lines = []
    for section, values in cfg.to_dict().items():
        lines += ["", f"[{section}]"] if lines else [f"[{section}]"]
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)  # Python's int and float literals (inf, nan too) are TOML's
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items())
        return "{" + items + "}"
    raise TypeError(f"no TOML form for {value!r}")
