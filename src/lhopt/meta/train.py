"""`lhopt meta-train`: PPO over the task distribution, rollouts on Ray, checkpoints that resume.

The learner (this process) keeps every rollout worker busy with one episode at a time, always
with the latest policy weights; when `min_new_transitions` have arrived since the last update it
runs one PPO iteration while the workers go on. Every iteration appends a JSON line to
`OUT/log.jsonl`; every `checkpoint_every` iterations the whole learner state (policy, its Polyak
average, Adam, the input normalisers, the replay buffer, RNG states, counters) is written to
`OUT/checkpoint.pt` atomically (a temporary file, then a rename), with `OUT/policy.pt` (the
shippable Polyak policy) and `OUT/progress.png`. `--resume` continues from the checkpoint: only
the iteration in flight when the run stopped is lost.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
import traceback
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from lhopt.control import ActionSpace, Policy, save_policy_file
from lhopt.control.policy import PolicyConfig
from lhopt.control.policy_file import (
    ControlSpec,
    actor_layout,
    atomic_save,
    file_layout,
)
from lhopt.extras import require, start_ray
from lhopt.meta.clone import LevelReadout, clone_loss, clone_step
from lhopt.meta.config import MetaConfig, RunConfig
from lhopt.meta.episode import PRIVILEGED_NAMES, EpisodeConfig, evaluation_config, run_episodes
from lhopt.meta.ppo import (
    ReplayBuffer,
    group_advantages,
    make_optimizer,
    make_polyak,
    update,
)
from lhopt.tasks import TaskConfig, sample_training_config, sample_training_set, suite
from lhopt.tasks.batched import batchable


def checkpoint_layout_hash(spec: ControlSpec | None = None) -> str:
    """What a learner checkpoint must agree with: the actor's features, heads and schedule, and
    the critic's privileged inputs (a resumed critic reads them)."""
    spec = spec or ControlSpec()
    actor = actor_layout(spec)
    layout = {
        "features": actor["features"],
        "nvec": actor["nvec"],
        "privileged": list(PRIVILEGED_NAMES),
    }
    if spec.schedule != ControlSpec.schedule:
        layout["schedule"] = spec.schedule
    return hashlib.sha256(json.dumps(layout, sort_keys=True).encode()).hexdigest()[:16]


def _fit_inputs(weights: dict, policy: Policy) -> dict:
    """`weights` of a policy that reads a prefix of `policy`'s features, widened to them: each
    tensor over the observation keeps its entries, the new inputs get zero weight and a unit
    normaliser, so the widened policy acts exactly as the original (used by `warm_start`)."""
    target = policy.state_dict()
    out = dict(weights)
    for key, value in weights.items():
        want = target[key].shape
        if value.shape == want or value.dim() == 0 or value.shape[:-1] != want[:-1]:
            continue
        if value.shape[-1] > want[-1]:
            continue  # a narrower target: load_state_dict reports it
        fill = 1.0 if key in ("obs_norm.sq", "input_mask") else 0.0
        wide = torch.full(want, fill, dtype=value.dtype)
        wide[..., : value.shape[-1]] = value
        out[key] = wide
    return out


def new_policy(cfg: MetaConfig) -> Policy:
    """A fresh policy for `cfg`; its `spec` (schedule, features) and its episodes' fixed start
    (`[episode] fixed_initial`, `LearnedOptimizer`'s default then) go into its policy files."""
    layout, space = actor_layout(cfg.episode.spec), ActionSpace()
    policy = Policy(
        len(layout["features"]), len(PRIVILEGED_NAMES), layout["nvec"], cfg.policy, keep=space.keep
    )
    policy.read_only(layout["features"], cfg.policy.read)
    policy.spec = cfg.episode.spec
    policy.initial = dict(cfg.episode.fixed_initial)
    return policy


def _episode_safe(policy, spec: dict, episode_cfg: EpisodeConfig) -> dict:
    """The episode of `spec`, or a dict with its error (the learner logs it and goes on)."""
    return _episodes_safe(policy, spec, episode_cfg)[0]


def _episodes_safe(policy, spec: dict, episode_cfg: EpisodeConfig) -> list[dict]:
    """The episodes of `spec` (one per member seed: `run_episodes`), each replaced by a dict
    with the error where it failed: a failed batch is N failed episodes, and members run one
    after another fail alone."""
    torch.set_num_threads(1)
    seeds = spec.get("seeds", [spec["seed"]])
    rng_seeds = spec.get("rng_seeds", [spec["rng_seed"]])

    def attempt(members: list[int]) -> list[dict]:
        try:
            return run_episodes(
                policy,
                TaskConfig.from_dict(spec["config"]),
                [seeds[i] for i in members],
                episode_cfg,
                [np.random.default_rng(rng_seeds[i]) for i in members],
                greedy=spec.get("greedy", False),
                device=spec.get("device"),
            )
        except Exception as e:  # noqa: BLE001 - the learner logs it and goes on
            error = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
            return [{**error, "spec": spec} for _ in members]

    every = list(range(len(seeds)))
    try:
        together = batchable(TaskConfig.from_dict(spec["config"]))
    except ValueError:
        together = True  # the attempt reports the bad config
    if len(every) > 1 and not together and not episode_cfg.branch:  # a branched group runs as one
        return [episode for i in every for episode in attempt([i])]
    return attempt(every)


def _set_group_advantages(episodes: list[dict], scaled: bool) -> None:
    """`group_advantage` of each episode of one rollout (a batch: one task, seed and, with
    `shared_start`, start), over the members that did not fail."""
    ok = [e for e in episodes if "error" not in e]
    for e, a in zip(ok, group_advantages([e["info"]["return"] for e in ok], scaled), strict=True):
        e["group_advantage"] = a


class _RolloutWorker:
    """A Ray actor: holds a policy network, runs one spec's episodes per call with given
    weights."""

    def __init__(self, arch: dict, episode_cfg: dict) -> None:
        torch.set_num_threads(1)
        self.policy = Policy.from_architecture(arch)
        self.episode_cfg = EpisodeConfig(**episode_cfg)

    def run(self, weights: dict, spec: dict) -> list[dict]:
        self.policy.load_state_dict(weights)
        return _episodes_safe(self.policy, spec, self.episode_cfg)


def _logged(lines: list[str]) -> list[float]:
    """The iteration of each log line; a line a killed writer left unfinished counts as later
    than any (inf): it belongs to no saved state."""
    out = []
    for line in lines:
        try:
            out.append(json.loads(line).get("iteration", 0) if line.strip() else 0)
        except ValueError:
            out.append(math.inf)
    return out


def _episodes_to_state(episodes: list[dict]) -> list[dict]:
    """Episodes as a checkpoint holds them: their arrays as tensors (`torch.save`'s safe types)."""
    return [
        {k: (torch.tensor(v) if isinstance(v, np.ndarray) else v) for k, v in e.items()}
        for e in episodes
    ]


def _episodes_from_state(episodes: list[dict]) -> list[dict]:
    return [{k: (v.numpy() if torch.is_tensor(v) else v) for k, v in e.items()} for e in episodes]


def _labelled_prefix(episode: dict) -> dict | None:
    """A branched episode up to its last labelled decision (what cloning reads: the recurrent
    state runs over the prefix, the label ends it), its return to go kept by moving the later
    rewards onto its last step; None without a label (nothing to learn)."""
    labelled = np.flatnonzero(episode["branch"] >= 0)
    if not len(labelled):
        return None
    end = int(labelled[-1]) + 1
    n = len(episode["rewards"])
    out = {
        k: (v[:end] if isinstance(v, np.ndarray) and len(v) == n else v) for k, v in episode.items()
    }
    out["rewards"] = out["rewards"].copy()
    out["rewards"][-1] += episode["rewards"][end:].sum()
    return out


def _load_start(path: Path, key: str, what: str):
    """The file `[run] key` names, loaded; a ValueError naming the key where it cannot be."""
    try:
        return torch.load(path, weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"[run] {key} = {str(path)!r}: not a readable {what} ({e})") from e


def fixed_pool(run: RunConfig) -> list[TaskConfig]:
    """The task pool a run with `pool_seed` draws: `task_pool` configs of its families, then
    `pool_extra` of `pool_extra_families`, then each of `pool_groups` (from its own seed where
    it names one; all from `sample_training_set`, so a measured sample and a stage's pool are
    the same list)."""
    pool = sample_training_set(
        run.pool_seed, run.task_pool, tuple(run.families), run.budget_scale, run.data_scale
    )
    extra = [{"n": run.pool_extra, "families": run.pool_extra_families}] if run.pool_extra else []
    for group in extra + run.pool_groups:
        pool += sample_training_set(
            group.get("seed", run.pool_seed),
            group["n"],
            tuple(group["families"]),
            group.get("budget_scale", run.budget_scale),
            run.data_scale,
        )
    return pool


class MetaTrainer:
    def __init__(self, cfg: MetaConfig, out: str | Path, address: str | None = None) -> None:
        self.cfg, self.out, self.address = cfg, Path(out), address
        self.out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.run.seed)
        self.rng = np.random.default_rng(cfg.run.seed)
        self.policy = new_policy(cfg)
        self.avg = make_polyak(self.policy)
        self.optimizer = make_optimizer(self.policy, cfg.ppo)
        self.level = None
        if cfg.ppo.level_coef > 0:
            self.level = LevelReadout(cfg.policy.hidden)
            self.optimizer.add_param_group({"params": list(self.level.parameters())})
        self.buffer = ReplayBuffer(cfg.ppo)
        # DAgger's aggregate: every episode of the cloning iterations, when `clone_steps` > 0.
        self.clone_data = ReplayBuffer(replace(cfg.ppo, buffer=sys.maxsize))
        self.iteration = 0
        self.version = 0
        self.counters = {
            "episodes": 0,
            "transitions": 0,
            "inner_steps": 0,
            "errors": 0,
            "episode_seconds": 0.0,
            "wall_seconds": 0.0,
        }
        self.pool: list[dict] = []
        self._workers: list = []

    # -- state ----------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            "config": self.cfg.to_dict(),
            "iteration": self.iteration,
            "version": self.version,
            "counters": dict(self.counters),
            "policy": self.policy.state_dict(),
            "avg": self.avg.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "numpy_rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "buffer": _episodes_to_state(self.buffer.episodes),
            "pool": list(self.pool),
            "clone_data": _episodes_to_state(self.clone_data.episodes),
            "layout_hash": checkpoint_layout_hash(self.cfg.episode.spec),
        } | ({"level": self.level.state_dict()} if self.level is not None else {})

    def load_state_dict(self, state: dict) -> None:
        if state["layout_hash"] != checkpoint_layout_hash(self.cfg.episode.spec):
            raise ValueError("checkpoint was made for another feature/action layout")
        from lhopt.meta.config import from_dict

        # Keys added since the checkpoint was written take their defaults.
        if from_dict(state["config"]).to_dict() != self.cfg.to_dict():
            raise ValueError(
                "checkpoint was made with another configuration; resume with the "
                "same config file, or start a new --out folder"
            )
        self.iteration, self.version = state["iteration"], state["version"]
        self.counters = dict(state["counters"])
        self.policy.load_state_dict(state["policy"])
        self.avg.load_state_dict(state["avg"])
        if self.level is not None:
            self.level.load_state_dict(state["level"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        self.buffer.episodes = _episodes_from_state(state["buffer"])
        self.pool = list(state["pool"])
        self.clone_data.episodes = _episodes_from_state(state.get("clone_data", []))

    def warm_start(self, path: str | Path) -> None:
        """Start from another run's checkpoint (its policy and Polyak average) or from a policy
        file (a snapshot or a shipped policy: both networks start as it); the PPO state,
        buffer, counters and task pool start fresh."""
        path = Path(path)
        state = _load_start(path, "init_from", "checkpoint or policy file")
        if isinstance(state, dict) and "state_dict" in state and "format" in state:
            layout = file_layout(state)
            expected = actor_layout(self.cfg.episode.spec)
            same = layout is not None and layout["nvec"] == expected["nvec"]
            if same and layout["features"] != expected["features"]:
                # Features added at the end of the layout (e.g. a progress embedding): the new
                # inputs start with no influence, so the policy starts acting as the file's.
                n = len(layout["features"])
                same = layout["features"] == expected["features"][:n]
            policy, avg = state["state_dict"], state["state_dict"]  # a policy file
            beta = (state.get("architecture") or {}).get("config", {}).get("norm_beta")
        elif isinstance(state, dict) and "policy" in state and "avg" in state:
            policy, avg = state["policy"], state["avg"]
            same = state.get("layout_hash") == checkpoint_layout_hash(self.cfg.episode.spec)
            beta = (state.get("config") or {}).get("policy", {}).get("norm_beta")
        else:
            raise ValueError(
                f"[run] init_from = {str(path)!r}: not a meta-training checkpoint or policy file"
            )
        if not same:
            raise ValueError(
                f"[run] init_from = {str(path)!r}: made for another feature/action layout"
            )
        try:
            policy, avg = _fit_inputs(policy, self.policy), _fit_inputs(avg, self.avg)
            self.policy.load_state_dict(policy)
            self.avg.load_state_dict(avg)
        except RuntimeError as e:
            raise ValueError(
                f"[run] init_from = {str(path)!r}: another policy architecture ({e})"
            ) from e
        beta = PolicyConfig.norm_beta if beta is None else float(beta)
        for net in (self.policy, self.avg):  # this run's [policy] norm_beta, not the start's
            net.obs_norm.carry_over(beta)
            net.priv_norm.carry_over(beta)
        features = actor_layout(self.cfg.episode.spec)["features"]
        for net in (self.policy, self.avg):  # this run's [policy] read, not the start's
            before = net.input_mask.clone()
            net.read_only(features, self.cfg.policy.read)
            # Inputs the start did not read never trained their weights: they start at zero,
            # so the policy starts acting as the file's (as `_fit_inputs` does for new ones).
            opened = (before == 0) & (net.input_mask == 1)
            with torch.no_grad():
                net.pre[0].weight[:, opened] = 0.0

    def start_labels(self, path: str | Path) -> None:
        """Start the cloning aggregate as another run's (`[run] init_labels`): its labelled
        episodes, one dataset with the new ones (their uses counted afresh)."""
        path = Path(path)
        state = _load_start(path, "init_labels", "checkpoint")
        labels = state.get("clone_data") if isinstance(state, dict) else None
        if not labels:
            raise ValueError(
                f"[run] init_labels = {str(path)!r} holds no labelled episodes: it must be the "
                "checkpoint.pt of a run in its cloning iterations with clone_steps > 0"
            )
        if state.get("layout_hash") != checkpoint_layout_hash(self.cfg.episode.spec):
            raise ValueError(
                f"[run] init_labels = {str(path)!r}: its episodes have another feature layout"
            )
        self.clone_data.episodes = [
            {**e, "version": 0, "uses": 0} for e in _episodes_from_state(labels)
        ]

    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    def save_checkpoint(self) -> None:
        atomic_save(self.state_dict(), self.checkpoint_path)
        save_policy_file(
            self.avg,
            self.out / "policy.pt",
            {"meta": {"iteration": self.iteration, **self.counters}},
        )

    def resume(self) -> None:
        if not self.checkpoint_path.exists():
            dead = (
                " (its run stopped before the first checkpoint: nothing to resume; start "
                "it again in another --out)"
                if (self.out / "log.jsonl").exists()
                else ""
            )
            raise ValueError(f"--resume: no checkpoint at {self.checkpoint_path}{dead}")
        try:
            state = torch.load(self.checkpoint_path, weights_only=False)
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"--resume: {self.checkpoint_path} is unreadable ({e})") from e
        self.load_state_dict(state)
        # Log lines of iterations after the checkpoint belong to the lost run: drop them.
        log = self.out / "log.jsonl"
        if log.exists():
            lines = [x for x in log.read_text().splitlines() if x.strip()]
            keep = [x for x, i in zip(lines, _logged(lines), strict=True) if i <= self.iteration]
            log.write_text("".join(line + "\n" for line in keep))

    def _check_log(self) -> None:
        """A run appends to no other run's log: refuse a `log.jsonl` that holds iterations after
        this trainer's (a dead run's that was not resumed), so no iteration is logged twice."""
        log = self.out / "log.jsonl"
        if not log.exists():
            return
        later = [i for i in _logged(log.read_text().splitlines()) if i > self.iteration]
        if later:
            raise ValueError(
                f"{self.out} holds the log of another run (log.jsonl reaches iteration "
                f"{max(later)}; this run is at {self.iteration}): continue it with --resume if it "
                "left a checkpoint, or start in another --out"
            )

    # -- episodes ---------------------------------------------------------------------------

    def next_spec(self, greedy: bool = False) -> dict:
        run = self.cfg.run

        def sample() -> TaskConfig:
            families = tuple(run.families)
            return sample_training_config(self.rng, families, run.budget_scale, run.data_scale)

        if run.task:
            config = TaskConfig.from_dict(dict(run.task))
        elif run.task_pool:
            if run.pool_seed and not self.pool:
                self.pool = [c.to_dict() for c in fixed_pool(run)]
            if len(self.pool) < run.task_pool:
                self.pool.append(sample().to_dict())
                config = TaskConfig.from_dict(self.pool[-1])
            else:
                config = TaskConfig.from_dict(self.pool[int(self.rng.integers(len(self.pool)))])
        else:
            config = sample()
        seeds, rng_seeds = [], []
        for _ in range(run.batch):
            seeds.append(int(self.rng.integers(run.task_seeds or 1_000_000)))
            rng_seeds.append(int(self.rng.integers(2**62)))
        spec = {"config": config.to_dict(), "seed": seeds[0], "rng_seed": rng_seeds[0]}
        if run.device != "cpu":
            spec["device"] = run.device
        if run.batch > 1:
            spec |= {"seeds": seeds, "rng_seeds": rng_seeds}
        return spec | {"greedy": greedy}

    def _start_workers(self) -> None:
        if self.cfg.run.workers == 0 or self._workers:
            return
        ray = require("ray", "meta")
        start_ray(self.address, None if self.address else max(self.cfg.run.workers, 1), "meta")
        actor = ray.remote(num_cpus=1)(_RolloutWorker)
        arch, ep = self.policy.architecture(), vars(self.cfg.episode)
        self._workers = [actor.remote(arch, ep) for _ in range(self.cfg.run.workers)]

    # -- the loop ---------------------------------------------------------------------------

    def train(self, log_progress=print) -> None:
        run = self.cfg.run
        self._check_log()
        self._start_workers()
        new_transitions, new_episodes, started = 0, [], time.perf_counter()
        wall_before = self.counters["wall_seconds"]
        in_flight: dict = {}
        weights_ref = None

        def submit(worker_index):
            nonlocal weights_ref
            import ray

            if weights_ref is None:
                weights_ref = ray.put(self.policy.state_dict())
            ref = self._workers[worker_index].run.remote(weights_ref, self.next_spec())
            in_flight[ref] = (worker_index, self.version)

        def receive() -> tuple[list[dict], int, int | None]:
            if not self._workers:
                spec = self.next_spec()
                return _episodes_safe(self.policy, spec, self.cfg.episode), self.version, None
            import ray

            done, _ = ray.wait(list(in_flight), num_returns=1)
            worker_index, version = in_flight.pop(done[0])
            try:
                result = ray.get(done[0])
            except Exception as e:  # noqa: BLE001 - a dead worker: replace it, go on
                actor = ray.remote(num_cpus=1)(_RolloutWorker)
                self._workers[worker_index] = actor.remote(
                    self.policy.architecture(), vars(self.cfg.episode)
                )
                error = f"worker died: {type(e).__name__}: {e}"
                result = [{"error": error} for _ in range(run.batch)]  # the batch's episodes
            return result, version, worker_index

        for i in range(len(self._workers)):
            submit(i)
        while self.iteration < run.iterations:
            episodes, version, worker_index = receive()
            if self.cfg.ppo.advantage.startswith("group"):
                _set_group_advantages(episodes, self.cfg.ppo.advantage == "group-scaled")
            for episode in episodes:
                self._process(episode, version, new_episodes, log_progress)
                if "error" not in episode:
                    new_transitions += len(episode["rewards"])
            if new_transitions >= run.min_new_transitions:
                stats, self.version = self._update()
                weights_ref = None  # the next submissions carry the new weights
                self.iteration += 1
                self.counters["wall_seconds"] = wall_before + (time.perf_counter() - started)
                self._finish_iteration(stats, new_episodes, log_progress)
                new_transitions, new_episodes = 0, []
            if worker_index is not None and self.iteration < run.iterations:
                submit(worker_index)

    def _update(self) -> tuple[list[dict], int]:
        """One iteration's learning: cloning the lr oracle for the first `clone_iterations`
        (lhopt.meta.clone), PPO after them (with the cloning loss as a prior where
        `clone_coef` > 0)."""
        ppo, space = self.cfg.ppo, ActionSpace()
        cloning = self.iteration < ppo.clone_iterations
        aggregate = cloning and ppo.clone_steps > 0  # DAgger: steps on every cloning episode
        buffer = self.clone_data if aggregate else self.buffer
        common = (self.policy, self.avg, self.optimizer, buffer, self.version, ppo, self.rng)
        index = next(i for i, h in enumerate(space.heads) if h.hparam == "lr")
        branch_heads = {
            name: next((i, h) for i, h in enumerate(space.heads) if h.hparam == name)
            for name in self.cfg.episode.branch_heads
        }
        if cloning:
            step = partial(
                clone_step,
                self.policy,
                self.optimizer,
                cfg=ppo,
                head_index=index,
                head=space.heads[index],
                level=self.level,
                branch_heads=branch_heads,
            )
            steps = ppo.clone_steps if aggregate else None
            return update(
                *common, self.cfg.policy.polyak, step=step, steps=steps, prune=not aggregate
            )
        prior = None
        if ppo.clone_coef > 0:
            prior = partial(
                clone_loss,
                cfg=ppo,
                head_index=index,
                head=space.heads[index],
                branch_heads=branch_heads,
            )
        fixed = self.cfg.episode.spec.fixed_actions(space)
        return update(*common, self.cfg.policy.polyak, fixed, prior=prior)

    def _process(self, episode: dict, version: int, new_episodes: list, log_progress) -> None:
        if "error" in episode:
            self.counters["errors"] += 1
            log_progress(f"episode failed (dropped): {episode['error']}")
            return
        self.buffer.add(episode, version)
        if self.cfg.ppo.clone_steps and self.iteration < self.cfg.ppo.clone_iterations:
            kept = _labelled_prefix(episode) if "branch" in episode else episode
            if kept is not None:
                self.clone_data.add(kept, version)
        elif self.clone_data.episodes:
            self.clone_data.episodes = []  # cloning is over: PPO needs none of it
        self.policy.obs_norm.update(torch.tensor(episode["obs"]))  # a copy: Ray's are read-only
        self.policy.priv_norm.update(torch.tensor(episode["priv"]))
        info = episode["info"]
        new_episodes.append(info)
        self.counters["episodes"] += 1
        self.counters["transitions"] += len(episode["rewards"])
        self.counters["inner_steps"] += info["inner_steps"]
        self.counters["episode_seconds"] += info["wall_time"]

    def _finish_iteration(self, stats: list[dict], episodes: list[dict], log_progress) -> None:
        run = self.cfg.run
        record = self._record(stats, episodes)
        if run.eval_every and self.iteration % run.eval_every == 0:
            record["eval"] = self.evaluate()
            # The evaluated Polyak policy, kept for checkpoint selection (not committed).
            save_policy_file(
                self.avg,
                self.out / "snapshots" / f"policy-{self.iteration:04d}.pt",
                {"meta": {"iteration": self.iteration, **self.counters}},
            )
        # The log line goes before the checkpoint: a kill between the two leaves a line the
        # checkpoint lacks, which `resume` drops and the redone iteration writes again; the
        # other order would leave a checkpointed iteration with no line, lost for good.
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self.iteration % run.checkpoint_every == 0 or self.iteration == run.iterations:
            self.save_checkpoint()
            self.plot()
        log_progress(
            f"iter {self.iteration}: return {record['return_mean']:+.3f} "
            f"speedup {record['speedup_geomean']:.2f} entropy {record['entropy']:.2f} "
            f"kl {record['kl']:.4f} episodes/h {record['episodes_per_hour']:.0f}"
            + (
                f" clone accuracy {record['clone_accuracy']:.2f}"
                if "clone_accuracy" in record
                else ""
            )
            + (f" final lr gap {record['final_lr_gap']:.2f}" if "final_lr_gap" in record else "")
        )

    def _record(self, stats: list[dict], episodes: list[dict]) -> dict:
        def mean(key, rows):
            vals = [r[key] for r in rows if key in r]  # the level's: steps with a target
            return float(np.mean(vals)) if vals else math.nan

        c = self.counters
        wall = max(c["wall_seconds"], 1e-9)
        returns = [e["return"] for e in episodes]
        return {
            "iteration": self.iteration,
            "version": self.version,
            "episodes": len(episodes),
            "return_mean": float(np.mean(returns)),
            "speedup_geomean": float(np.exp(np.mean(returns))),
            "diverged": sum(e["diverged"] for e in episodes),
            "families": {
                f: sum(e["family"] == f for e in episodes)
                for f in sorted({e["family"] for e in episodes})
            },
            **{
                k: mean(k, stats)
                for k in (
                    "policy_loss",
                    "value_loss",
                    "entropy",
                    "kl",
                    "clip_fraction",
                    "grad_norm",
                )
            },
            **{
                k: mean(k, stats)
                for k in ("clone_accuracy", "final_lr_gap", "clone_loss", "level_loss", "level_r2")
                if any(k in r for r in stats)
            },
            "buffer_transitions": self.buffer.transitions(),
            "episodes_total": c["episodes"],
            "inner_steps_total": c["inner_steps"],
            "errors_total": c["errors"],
            "episodes_per_hour": 3600 * c["episodes"] / wall,
            "inner_steps_per_second": c["inner_steps"] / wall,
            "cpu_hours": c["episode_seconds"] / 3600,
            "wall_seconds": c["wall_seconds"],
        }

    def evaluate(self) -> dict:
        """The Polyak policy, greedy, on the evaluation suite from the default initial
        hyperparameters: mean log speedup over `adamw` per task."""
        cfg = evaluation_config(self.cfg.episode)
        out = {}
        for name, config in suite(self.cfg.run.eval_suite).items():
            returns = []
            for seed in range(self.cfg.run.eval_seeds):
                spec = {"config": config.to_dict(), "seed": seed, "rng_seed": seed, "greedy": True}
                r = _episode_safe(self.avg, spec, cfg)
                returns.append(r["info"]["return"] if "info" in r else -cfg.reward_clip)
            out[name] = float(np.mean(returns))
        out["mean"] = float(np.mean(list(out.values())))
        return out

    def plot(self) -> None:
        require("matplotlib", "meta").use("Agg")
        plt = require("matplotlib.pyplot", "meta")

        rows = [json.loads(x) for x in (self.out / "log.jsonl").read_text().splitlines() if x]
        if not rows:
            return
        it = [r["iteration"] for r in rows]
        keys = [
            ("return_mean", "mean return (log speedup)"),
            ("entropy", "entropy"),
            ("value_loss", "value loss"),
            ("kl", "KL"),
        ]
        fig, axes = plt.subplots(1, len(keys) + 1, figsize=(4 * (len(keys) + 1), 3))
        for ax, (k, label) in zip(axes, keys, strict=False):
            ax.plot(it, [r[k] for r in rows], lw=1)
            ax.set_title(label, fontsize=9)
            ax.set_xlabel("iteration")
        ev = [(r["iteration"], r["eval"]["mean"]) for r in rows if "eval" in r]
        axes[-1].plot([e[0] for e in ev], [math.exp(e[1]) for e in ev], "o-", lw=1)
        axes[-1].set_title("validation speedup (geomean)", fontsize=9)
        axes[-1].set_xlabel("iteration")
        fig.tight_layout()
        fig.savefig(self.out / "progress.png", dpi=100)
        plt.close(fig)
