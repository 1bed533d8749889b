"""lhopt: learned hyperparameter optimizers for PyTorch."""

from lhopt.control import ActionSpace, RestartRegisters
from lhopt.control.learned import LearnedOptimizer
from lhopt.features import FeatureEngine
from lhopt.optim import CIAO

__version__ = "0.1.0"

__all__ = [
    "CIAO",
    "ActionSpace",
    "FeatureEngine",
    "LearnedOptimizer",
    "RestartRegisters",
    "__version__",
]
