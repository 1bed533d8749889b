"""Inner tasks: the families meta-training samples from, their data, and the fixed suites."""

from lhopt.tasks.base import NUM_EVALS, Task, TaskConfig
from lhopt.tasks.registry import (
    EXTRA_FAMILIES,
    FAMILIES,
    FAMILY_NAMES,
    SELECTION_FAMILIES,
    TRAINING_FAMILIES,
    UNSEEN_FAMILIES,
    build_task,
    check_config,
    sample_training_config,
    sample_training_set,
    task_budget,
    task_device,
)
from lhopt.tasks.suites import SUITES, held_out_keys, suite

__all__ = [
    "EXTRA_FAMILIES",
    "FAMILIES",
    "FAMILY_NAMES",
    "NUM_EVALS",
    "SELECTION_FAMILIES",
    "SUITES",
    "TRAINING_FAMILIES",
    "Task",
    "TaskConfig",
    "UNSEEN_FAMILIES",
    "build_task",
    "check_config",
    "held_out_keys",
    "sample_training_config",
    "sample_training_set",
    "suite",
    "task_budget",
    "task_device",
]
