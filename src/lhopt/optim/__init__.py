"""Inner optimizers: CIAO, the controllable AdamW-family optimizer, and its hyperparameters."""

from lhopt.optim.ciao import CIAO, STEP_STAT_NAMES, TENSOR_STAT_NAMES
from lhopt.optim.hparams import DEFAULTS, HPARAMS, HParamSpec

__all__ = ["CIAO", "DEFAULTS", "HPARAMS", "HParamSpec", "STEP_STAT_NAMES", "TENSOR_STAT_NAMES"]
