"""The inner optimizer's hyperparameters: names, defaults and allowed ranges.

One table serves the constructor, every `step()` (a controller or a user may have written a new
value into a param group) and the action space (whose bounds must lie inside these ranges).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class HParamSpec:
    """One hyperparameter: its default and the interval it must lie in."""

    default: float | bool | None
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False  # True: the value must be strictly greater than `low`
    optional: bool = False  # True: None is allowed and switches the feature off
    boolean: bool = False
    doc: str = ""

    def describe(self) -> str:
        if self.boolean:
            return "True or False"
        left = "(" if self.low_open else "["
        text = f"{left}{self.low:g}, {self.high:g}]"
        return text + (" or None" if self.optional else "")


# Defaults follow the official LHOPT configuration (see docs/optimizer.md).
HPARAMS: dict[str, HParamSpec] = {
    "lr": HParamSpec(1e-3, 0.0, 10.0, doc="learning rate"),
    "lr_factor": HParamSpec(
        1.0,
        0.0,
        100.0,
        doc="multiplies lr in the update: a schedule's factor, which a controller sets before "
        "each step (the policy steers lr, the base)",
    ),
    # The betas' floor: below ~1.1e-16, 1 - ombeta rounds to 1 and the bias correction
    # 1 - prod(beta) is 0 for good.
    "ombeta1": HParamSpec(0.1, 1e-12, 1.0, doc="1 - beta1 (momentum)"),
    "ombeta2": HParamSpec(1e-2, 1e-12, 1.0, doc="1 - beta2 (second moment)"),
    "epsilon": HParamSpec(1e-6, 0.0, 1.0, low_open=True, doc="added to the denominator"),
    "weight_decay": HParamSpec(1e-2, 0.0, 10.0, doc="decoupled weight decay coefficient"),
    "matrix_decay_factor": HParamSpec(
        1.0,
        0.0,
        10.0,
        doc="the decoupled weight decay of dense matrices (two or more dimensions, not "
        "row-sparse as an embedding table's first gradient is) is weight_decay times this; "
        "1: no change for dense matrices",
    ),
    "table_decay_factor": HParamSpec(
        1.0,
        0.0,
        10.0,
        doc="the decoupled weight decay of embedding tables (row-sparse, at an rms at their "
        "first step of at least 0.5 and twice PyTorch's default for their shape, as "
        "nn.Embedding initialises them) is weight_decay times this; 1: as every tensor",
    ),
    "clip_fraction": HParamSpec(
        0.8,
        0.0,
        1.0,
        low_open=True,
        optional=True,
        doc="clip the group's gradient norm to this fraction of its rolling maximum; "
        "None switches clipping off",
    ),
    "grad_clip_ombeta": HParamSpec(
        1e-2, 0.0, 1.0, low_open=True, doc="per-step decay of the rolling maximum gradient norm"
    ),
    "lamb_power": HParamSpec(
        0.0, 0.0, 4.0, doc="exponent of the LAMB trust ratio; 0 switches LAMB off"
    ),
    "lamb_min_trust": HParamSpec(
        1e-3, 0.0, 1.0, low_open=True, doc="trust ratio is clamped to [min, 1/min]"
    ),
    # The betas' floor again: the EMA's bias correction 1 - prod(1 - ombeta) is 0 below it.
    "lamb_update_norm_ombeta": HParamSpec(
        1e-2, 1e-12, 1.0, doc="1 - decay of the EMA of each tensor's update norm"
    ),
    "lamb_sparse": HParamSpec(
        True,
        boolean=True,
        doc="apply the trust ratio also to row-sparse tensors (a first gradient with an all-zero "
        "row, as an embedding table's); False steps them as AdamW does",
    ),
    "adamax": HParamSpec(False, boolean=True, doc="infinity-norm (AdaMax) denominator"),
    "decay_in_update": HParamSpec(
        False,
        boolean=True,
        doc="add weight decay to the adaptive update (scaled by the trust ratio) "
        "instead of decoupling it",
    ),
    "lamb_free_below": HParamSpec(
        0.0,
        0.0,
        1.0,
        doc="a dense matrix whose rms, at its first step under the trust ratio, is below this "
        "fraction of the (upper) median rms of its group's dense matrices stepping then steps "
        "without the trust ratio for good (as AdamW's), as a positional table initialised far "
        "smaller than the weights beside it; 0: no tensor is decided (one freed stays freed)",
    ),
    "lamb_norm_floor": HParamSpec(
        0.0,
        0.0,
        10.0,
        doc="the trust ratio counts a dense matrix's norm as at least this multiple of the norm "
        "PyTorch's default initialisation gives its shape (rms 1 / sqrt(3 fan-in)), so that a "
        "matrix initialised far smaller (GPT-2's std 0.02 in a narrow layer) is not slowed by "
        "its scale alone; row-sparse tables are not floored; 0: off",
    ),
    "lamb_norm_ceiling": HParamSpec(
        0.0,
        0.0,
        1000.0,
        doc="the trust ratio counts a dense matrix's norm as at most this multiple of the norm "
        "PyTorch's default initialisation gives its shape (at least the floor's), so that a "
        "matrix whose scale the model leaves free (a read-out beside the tables it multiplies) "
        "grows by steps of a fixed size past it rather than compounding its own growth; "
        "row-sparse tables are not capped; 0: off",
    ),
}

DEFAULTS: dict[str, float | bool | None] = {name: spec.default for name, spec in HPARAMS.items()}

# Keys torch itself or its LR schedulers may add to a param group; never reported as unknown.
_TOLERATED_KEYS = {"params", "initial_lr", "name"}


def describe_value(value: object) -> str:
    """A short description of a value for an error message (a tensor by its shape and dtype)."""
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):
        return f"a tensor of shape {tuple(shape)} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_value(name: str, value: object) -> None:
    """Raise ValueError naming `name`, `value` and the allowed range if `value` is not allowed."""
    spec = HPARAMS[name]
    if spec.boolean:
        if not isinstance(value, bool):
            raise ValueError(f"{name}={value!r} is not allowed: expected {spec.describe()}")
        return
    if value is None:
        if spec.optional:
            return
        raise ValueError(f"{name}=None is not allowed: expected a number in {spec.describe()}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}={value!r} is not allowed: expected a number in {spec.describe()}")
    v = float(value)
    too_low = v <= spec.low if spec.low_open else v < spec.low
    if not math.isfinite(v) or too_low or v > spec.high:
        raise ValueError(f"{name}={value!r} is out of range: allowed {spec.describe()}")


def check_group(group: dict, *, unknown_ok: bool = False) -> None:
    """Validate every known hyperparameter of a param group; reject unknown keys unless told."""
    if not unknown_ok:
        unknown = sorted(set(group) - set(HPARAMS) - _TOLERATED_KEYS)
        if unknown:
            raise ValueError(
                f"unknown hyperparameter(s) {unknown} for CIAO; known: {sorted(HPARAMS)}"
            )
    for name in HPARAMS:
        if name in group:
            check_value(name, group[name])
