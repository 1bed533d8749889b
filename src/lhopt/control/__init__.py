"""Control of CIAO by a policy: features, actions, restart registers, the policy network and its
file, the `Controller`, and `LearnedOptimizer` (what users import)."""

from lhopt.control.actions import OFFICIAL_HEADS, REGISTER_OPS, ActionSpace, Head
from lhopt.control.cdf import EWMACDF, normal_cdf
from lhopt.control.controller import DEFAULT_DECISIONS, Controller, Decision, decision_steps
from lhopt.control.features import CDF_STATS, DEFAULT_CDF_SCALES, FeatureEngine
from lhopt.control.learned import LearnedOptimizer
from lhopt.control.plot import plot_history
from lhopt.control.policy import Policy, PolicyConfig
from lhopt.control.policy_file import (
    default_policy_path,
    layout_hash,
    load_policy,
    save_policy_file,
)
from lhopt.control.registers import RestartRegisters, Snapshot

__all__ = [
    "CDF_STATS",
    "DEFAULT_CDF_SCALES",
    "DEFAULT_DECISIONS",
    "EWMACDF",
    "OFFICIAL_HEADS",
    "REGISTER_OPS",
    "ActionSpace",
    "Controller",
    "Decision",
    "FeatureEngine",
    "Head",
    "LearnedOptimizer",
    "Policy",
    "PolicyConfig",
    "RestartRegisters",
    "Snapshot",
    "decision_steps",
    "default_policy_path",
    "layout_hash",
    "load_policy",
    "normal_cdf",
    "plot_history",
    "save_policy_file",
]
