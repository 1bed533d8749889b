"""lhopt: learned hyperparameter optimizers for PyTorch."""

from lhopt.control import (
    ActionSpace,
    Controller,
    FeatureEngine,
    LearnedOptimizer,
    RestartRegisters,
    load_policy,
    plot_history,
)
from lhopt.optim import CIAO

__version__ = "0.1.0"

__all__ = [
    "CIAO",
    "ActionSpace",
    "Controller",
    "FeatureEngine",
    "LearnedOptimizer",
    "RestartRegisters",
    "__version__",
    "load_policy",
    "plot_history",
]
