"""Task families by name: checking configs, building tasks, sampling the training distribution."""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import torch

from lhopt.tasks import (
    algorithmic,
    autoencoder,
    bpr,
    charlm,
    decoder,
    gpt,
    linear,
    mnist1d,
    ncf,
    photos,
    quadratic,
    recsys,
    regression,
    seqattn,
    shapes,
    speech,
    tabular,
    teacher,
    texts,
    tokens,
)
from lhopt.tasks.base import Task, TaskConfig, check_device
from lhopt.tasks.schema import Schema

FAMILIES: dict[str, tuple[Schema, type[Task]]] = {
    "quadratic": (quadratic.SCHEMA, quadratic.QuadraticTask),
    "algorithmic": (algorithmic.SCHEMA, algorithmic.AlgorithmicTask),
    "mnist1d": (mnist1d.SCHEMA, mnist1d.MNIST1DTask),
    "charlm": (charlm.SCHEMA, charlm.CharLMTask),
    # Further training families: sampled only where a config names them (`[run] families`).
    "linear": (linear.SCHEMA, linear.LinearTask),
    "seqattn": (seqattn.SCHEMA, seqattn.SeqAttnTask),
    "teacher": (teacher.SCHEMA, teacher.TeacherTask),
    "decoder": (decoder.SCHEMA, decoder.DecoderTask),
    "photos": (photos.SCHEMA, photos.PhotosTask),
    "bpr": (bpr.SCHEMA, bpr.BPRTask),
    # Out-of-distribution families: only in the `ood` suite, never sampled by meta-training.
    "ncf": (ncf.SCHEMA, ncf.NCFTask),
    "speech": (speech.SCHEMA, speech.SpeechTask),
    # Selection families: only in the `selection` suite (where checkpoints and the shipped policy
    # are chosen), never sampled by meta-training.
    "shapes": (shapes.SCHEMA, shapes.ShapesTask),
    "regression": (regression.SCHEMA, regression.RegressionTask),
    "autoencoder": (autoencoder.SCHEMA, autoencoder.AutoencoderTask),
    "tokens": (tokens.SCHEMA, tokens.TokensTask),
    "recsys": (recsys.SCHEMA, recsys.RecsysTask),
    # Unseen families: only in the `unseen` suites, for head-to-heads of candidates that were
    # chosen elsewhere; never sampled, never used to choose snapshots.
    "tabular": (tabular.SCHEMA, tabular.TabularTask),
    "texts": (texts.SCHEMA, texts.TextsTask),
    "gpt": (gpt.SCHEMA, gpt.GPTTask),
}
# Meta-training's default families; the task descriptor's one-hot is over these four.
FAMILY_NAMES = ("quadratic", "algorithmic", "mnist1d", "charlm")
# Training families a config may add to them (kinds the four lack: a convex model on data,
# attention, an MLP fitted to a small table, a GPT-2-style decoder, a CNN on photographs, a
# factorization of implicit feedback); they leave the defaults, and so every earlier run's
# distribution, as they were.
EXTRA_FAMILIES = ("linear", "seqattn", "teacher", "decoder", "photos", "bpr")
TRAINING_FAMILIES = FAMILY_NAMES + EXTRA_FAMILIES
SELECTION_FAMILIES = ("shapes", "regression", "autoencoder", "tokens", "recsys")
UNSEEN_FAMILIES = ("tabular", "texts", "gpt")
OOD_FAMILIES = tuple(
    f for f in FAMILIES if f not in TRAINING_FAMILIES + SELECTION_FAMILIES + UNSEEN_FAMILIES
)


def check_config(config: TaskConfig) -> None:
    """Raise ValueError naming what is wrong (and what is valid) with `config`."""
    if config.family not in FAMILIES:
        raise ValueError(f"unknown task family {config.family!r}; valid: {list(FAMILIES)}")
    FAMILIES[config.family][0].check(config.p)


def task_budget(config: TaskConfig) -> int:
    """The budget T of a config without building its task."""
    check_config(config)
    if config.family == "mnist1d":
        return mnist1d.budget_for(config.p)
    return int(config.p["budget"])


def build_task(config: TaskConfig | dict, seed: int) -> Task:
    if isinstance(config, dict):
        config = TaskConfig.from_dict(config)
    check_config(config)
    return FAMILIES[config.family][1](config, seed)


# What one pass over a family's training data is, read from its built task: the number of
# training examples (a batch draws `batch` of them), or None where every batch is drawn fresh.
# Kept here rather than on the task classes, whose source keys the cached baseline curves.
_TRAIN_EXAMPLES = {
    "quadratic": lambda t: None,
    "algorithmic": lambda t: None,
    "seqattn": lambda t: None,
    "mnist1d": lambda t: len(t.train_set[0]),
    **{  # windows of context
        f: (lambda t: len(t.text["train"]) / t.config.p["context"])
        for f in ("charlm", "texts", "gpt", "decoder")
    },
    **{f: (lambda t: len(t.train_pairs)) for f in ("ncf", "recsys", "bpr")},
    "autoencoder": lambda t: len(t.data["train"]),
    **{
        f: (lambda t: len(t.data["train"][0]))
        for f in (
            "linear",
            "speech",
            "shapes",
            "regression",
            "tokens",
            "tabular",
            "teacher",
            "photos",
        )
    },
}


def steps_per_epoch(task: Task) -> float:
    """Optimizer steps of one pass over `task`'s training data (inf where every batch is
    drawn fresh): what a user gives `LearnedOptimizer` as `steps_per_epoch`."""
    examples = _TRAIN_EXAMPLES[task.family](task)
    return math.inf if examples is None else examples / task.config.p["batch"]


@functools.cache
def config_steps_per_epoch(config: TaskConfig) -> float:
    """`steps_per_epoch` of `config`'s task (built with seed 0, which does not change it),
    without touching the global RNG: counting it where a run is being set up must not change
    the run (its dropout masks draw from that RNG)."""
    with torch.random.fork_rng(devices=[]):
        return steps_per_epoch(build_task(config, 0))


def task_device(config: TaskConfig, device: torch.device | str | None = None) -> torch.device:
    """Where tasks of `config` run when asked for `device` (default the CPU; `check_device`):
    there, or on the CPU, with a warning, for a family whose tasks cannot move (`Task.movable`)."""
    device = check_device(device)
    check_config(config)
    if device.type != "cpu" and not FAMILIES[config.family][1].movable:
        warnings.warn(
            f"tasks of the {config.family!r} family cannot leave the CPU: they run there, "
            f"not on {device}",
            stacklevel=2,
        )
        return torch.device("cpu")
    return device


MAX_BUDGET_SCALE = 100  # `budget_scale` at most: a task at most 100x its sampled budget


def check_scale(value, name: str = "budget_scale") -> None:
    """`budget_scale` and `data_scale`: a number in [1, MAX_BUDGET_SCALE]."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not (ok and 1 <= value <= MAX_BUDGET_SCALE):
        raise ValueError(f"{name} = {value!r}: expected a number in [1, {MAX_BUDGET_SCALE}]")


def _log_uniform(rng: np.random.Generator, scale: float) -> float:
    return math.exp(rng.uniform(0.0, math.log(scale)))


def sample_training_config(
    rng: np.random.Generator,
    families: tuple[str, ...] = FAMILY_NAMES,
    budget_scale: float = 1.0,
    data_scale: float = 1.0,
) -> TaskConfig:
    """A configuration of the meta-training distribution: a family chosen uniformly, then its
    parameters from the documented ranges. Configurations of the `validation` and `ood` suites
    are never returned (they are rejected and drawn again).

    `budget_scale` > 1 multiplies the budget T by a log-uniform factor in [1, budget_scale]
    (within the family's limits on the budget): longer runs, nearer convergence or
    overfitting, the regimes where a decay or a response to a rising validation loss pays.
    `data_scale` > 1 divides the training set of the families that allow it (a `train_samples`
    parameter: MNIST-1D, `linear`, `teacher`, `photos`; for the last three this replaces their
    sampled size) by a log-uniform factor in [1, data_scale]: the same budget then
    passes over less data, and the validation loss turns up within the run. At 1 (the
    defaults) nothing is drawn, so a seed samples the same configs with or without these keys."""
    from lhopt.tasks.suites import held_out_keys

    unknown = [f for f in families if f not in TRAINING_FAMILIES]
    if unknown:
        raise ValueError(
            f"task families {unknown} cannot be sampled for meta-training; valid: "
            f"{list(TRAINING_FAMILIES)} ({list(OOD_FAMILIES)} are kept for the ood suite, "
            f"{list(SELECTION_FAMILIES)} for the selection suites, {list(UNSEEN_FAMILIES)} for "
            "the unseen suites)"
        )
    check_scale(budget_scale)
    check_scale(data_scale, "data_scale")
    held_out = held_out_keys()
    while True:
        family = families[int(rng.integers(len(families)))]
        config = TaskConfig.make(family, **FAMILIES[family][0].sample(rng))
        params = FAMILIES[family][0].all_params()
        if budget_scale > 1:
            lo, hi = params["budget"].bounds
            budget = task_budget(config) * _log_uniform(rng, budget_scale)
            config = TaskConfig.make(
                family, **{**config.p, "budget": int(min(hi, max(lo, round(budget))))}
            )
        if data_scale > 1 and "train_samples" in params:
            lo, hi = params["train_samples"].bounds
            n = int(max(lo, round(hi / _log_uniform(rng, data_scale))))
            config = TaskConfig.make(family, **{**config.p, "train_samples": n})
        if config.key() not in held_out:
            return config


def sample_training_set(
    seed: int,
    n: int,
    families: tuple[str, ...] = FAMILY_NAMES,
    budget_scale: float = 1.0,
    data_scale: float = 1.0,
) -> list[TaskConfig]:
    """`n` configurations of `sample_training_config` drawn from `seed`: the same list for the
    same arguments, so a measured sample (`benchmarks/schedule_incentive.py --seed`) can be a
    stage's task pool (`[run] pool_seed`)."""
    rng = np.random.default_rng(seed)
    return [sample_training_config(rng, families, budget_scale, data_scale) for _ in range(n)]
