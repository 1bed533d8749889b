"""The feature engine: everything the policy sees at an outer step, as one fixed-layout vector.

Every feature is invariant to the scale of the task: fractions, cosines, log-ratios, flags,
CDF features, and hyperparameters relative to their initial values (never absolute values).
`FeatureEngine.names` documents the layout; docs/features.md explains each entry.
The vector is always finite: a NaN or Inf input becomes 0 and raises its flag.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

import numpy as np

from lhopt.control.cdf import EWMACDF
from lhopt.optim.ciao import STEP_STAT_NAMES

DEFAULT_CDF_SCALES = (1.25, 2.5, 5.0, 10.0, 20.0)
# Step statistics whose history (as CDF features) says something: is the update shrinking,
# is the noise rising, is momentum still aligned with the gradient.
CDF_STATS = ("log_update_to_param_norm", "log_grad_noise_scale", "cos_grad_momentum")
_CLIP = 10.0  # bound of every raw (unsquashed) value
PROGRESS_TAUS = (0.03, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1)
_LOSS_FLOOR = 1e-12
EPOCHS_FEATURES = ("run/epochs_known", "run/log1p_epochs")
LENGTH_FEATURE = "run/log_total_steps"


def run_features(total_steps: int, steps_per_epoch: float | None) -> dict[str, float]:
    """What a run is before it starts, by feature name: its length, log T (optimal lrs fall
    with the horizon), and whether its passes over the training data are known and
    log(1 + epochs), epochs = T / `steps_per_epoch` (0 for data drawn fresh at every step,
    `steps_per_epoch` = inf; known 0 and epochs 0 when `steps_per_epoch` is None)."""
    return {
        EPOCHS_FEATURES[0]: float(steps_per_epoch is not None),
        EPOCHS_FEATURES[1]: math.log1p(passes(total_steps, steps_per_epoch)),
        LENGTH_FEATURE: math.log(total_steps),
    }


def passes(total_steps: int, steps_per_epoch: float | None) -> float:
    """A run's passes over its data, T / `steps_per_epoch`: 0 where that is not given (None)
    or infinite (fresh data)."""
    return 0.0 if steps_per_epoch is None else total_steps / steps_per_epoch  # inf: 0


def check_steps_per_epoch(value: object) -> float | None:
    """`value` as a float (inf allowed: fresh data at every step) or None; a ValueError naming
    it otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(
            f"steps_per_epoch={value!r} is not allowed: a number > 0 (the optimizer steps of "
            "one pass over the training data; math.inf for data drawn fresh at every step) "
            "or None (not known)"
        )
    return float(value)


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _log_ratio(a: float | None, b: float | None) -> float:
    """log(a / b) for positive finite losses (floored), 0 when either is missing or not finite."""
    if not (_finite(a) and _finite(b)):
        return 0.0
    return math.log(max(a, _LOSS_FLOOR)) - math.log(max(b, _LOSS_FLOOR))


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


class _LossTracker:
    """History of one loss series: first, previous and best finite values, and its CDF."""

    def __init__(self, scales: Sequence[float]) -> None:
        self.cdf = EWMACDF(scales)
        self.first: float | None = None
        self.prev: float | None = None
        self.best: float | None = None

    def features(self, loss: float | None) -> list[float]:
        available = loss is not None
        nan = available and math.isnan(loss)
        inf = available and math.isinf(loss)
        ok = _finite(loss)
        to_prev = _log_ratio(loss, self.prev)
        to_first = _log_ratio(loss, self.first)
        to_best = _log_ratio(loss, self.best)
        cdf = self.cdf(math.log(max(loss, _LOSS_FLOOR)) if ok else math.nan)
        if ok:
            self.first = loss if self.first is None else self.first
            self.prev = loss
            self.best = loss if self.best is None else min(self.best, loss)
        return [
            float(available),
            float(nan),
            float(inf),
            float(np.clip(to_prev, -_CLIP, _CLIP)),
            math.tanh(to_prev),
            math.tanh(to_first),
            math.tanh(to_best),
            *cdf.tolist(),
        ]

    def state_dict(self) -> dict:
        return {
            "cdf": self.cdf.state_dict(),
            "first": self.first,
            "prev": self.prev,
            "best": self.best,
        }

    def load_state_dict(self, state: dict) -> None:
        self.cdf.load_state_dict(state["cdf"])
        self.first, self.prev, self.best = state["first"], state["prev"], state["best"]


class FeatureEngine:
    """Turns step statistics, losses and controller state into the policy's input vector.

    Args:
        hparam_kinds: for each controlled hyperparameter, ``"log"`` (its feature is
            log(value / initial)) or ``"logit"`` (logit(value) - logit(initial)), in layout order.
        action_names: names of the entries of the previous-action encoding
            (`ActionSpace.encoding_names`).
        num_registers: number of restart registers.
        cdf_scales: time scales, in outer steps, of the CDF features.
        progress_taus: a multi-timescale embedding of progress p, tanh(10 (p - tau)) for each
            tau (as VeLO and Celo embed it), so that a policy can place a change at a point of
            the run; empty (the default) for none. `PROGRESS_TAUS` is the usual set.
        epochs: add what the run is before it starts: its passes over the training data
            (`run_features`), so that a policy can tell a run long for its data (which overfits
            and wants regularising) from a short one (which underfits) at the first decision.
        run_length: add the run's length, log T (`run_features`): the lr a run wants falls
            with its horizon.
    """

    def __init__(
        self,
        hparam_kinds: Mapping[str, str],
        action_names: Sequence[str],
        num_registers: int = 3,
        cdf_scales: Sequence[float] = DEFAULT_CDF_SCALES,
        progress_taus: Sequence[float] = (),
        epochs: bool = False,
        run_length: bool = False,
    ) -> None:
        bad = {k: v for k, v in hparam_kinds.items() if v not in ("log", "logit")}
        if bad:
            raise ValueError(f"hyperparameter kinds {bad} are not allowed: use 'log' or 'logit'")
        if num_registers < 0:
            raise ValueError(f"num_registers={num_registers} is out of range: allowed >= 0")
        self.hparam_kinds = dict(hparam_kinds)
        self.action_names = tuple(action_names)
        self.num_registers = num_registers
        self.cdf_scales = tuple(cdf_scales)
        self.progress_taus = tuple(float(t) for t in progress_taus)
        if any(not math.isfinite(t) for t in self.progress_taus):
            raise ValueError(f"progress_taus={tuple(progress_taus)!r}: expected finite numbers")
        # the run's features the layout ends with (`run_features` gives each by name)
        self.run_names = (EPOCHS_FEATURES if epochs else ()) + (
            (LENGTH_FEATURE,) if run_length else ()
        )
        self.names = self._layout()
        self.reset({})

    def _layout(self) -> tuple[str, ...]:
        s = [f"{x:g}" for x in self.cdf_scales]
        names = ["progress", "stats_available"]
        names += [f"stat/{n}" for n in STEP_STAT_NAMES]
        names += [f"stat_cdf/{n}@{x}" for n in CDF_STATS for x in s]
        for loss in ("train", "val"):
            names += [
                f"{loss}/available",
                f"{loss}/is_nan",
                f"{loss}/is_inf",
                f"{loss}/log_ratio_prev",
                f"{loss}/tanh_log_ratio_prev",
                f"{loss}/tanh_log_ratio_first",
                f"{loss}/tanh_log_ratio_best",
            ]
            names += [f"{loss}/cdf@{x}" for x in s]
        names.append("val_train/tanh_log_ratio")
        names += [f"hparam/{h}" for h in self.hparam_kinds]
        names += [f"prev_action/{a}" for a in self.action_names]
        for r in range(self.num_registers):
            names += [
                f"register{r}/filled",
                f"register{r}/tanh_log_loss_ratio",
                f"register{r}/progress_since",
            ]
        names += [f"progress/tanh@{t:g}" for t in self.progress_taus]
        return tuple(names + list(self.run_names))

    @property
    def size(self) -> int:
        return len(self.names)

    def reset(self, initial_hparams: Mapping[str, float | None]) -> None:
        """Start a new run whose hyperparameters start at `initial_hparams`."""
        self.initial_hparams = dict(initial_hparams)
        self.stat_cdfs = {name: EWMACDF(self.cdf_scales) for name in CDF_STATS}
        self.losses = {"train": _LossTracker(self.cdf_scales), "val": _LossTracker(self.cdf_scales)}

    def _hparam_feature(self, name: str, value: float | None) -> float:
        initial = self.initial_hparams.get(name)
        if not (_finite(value) and _finite(initial)) or value <= 0 or initial <= 0:
            return 0.0
        if self.hparam_kinds[name] == "logit":
            return _logit(value) - _logit(initial)
        return math.log(value / initial)

    def observe(
        self,
        *,
        progress: float,
        step_stats: Mapping[str, float],
        train_loss: float | None,
        val_loss: float | None = None,
        hparams: Mapping[str, float | None],
        prev_action: Sequence[float] = (),
        registers: Sequence[tuple[bool, float | None, float | None]] = (),
        run: Mapping[str, float] | None = None,
    ) -> np.ndarray:
        """The feature vector (float32, finite, layout `names`) for one outer step.

        `registers` holds, per restart register, (filled, loss when saved, progress when saved);
        `run` the run's `run_features` (those the layout has are read; 0 where missing).
        """
        if len(prev_action) != len(self.action_names):
            raise ValueError(
                f"prev_action has {len(prev_action)} values, expected {len(self.action_names)}"
            )
        if len(registers) != self.num_registers:
            raise ValueError(
                f"registers has {len(registers)} entries, expected {self.num_registers}"
            )
        stats = [step_stats.get(n, math.nan) for n in STEP_STAT_NAMES]
        measured = [step_stats.get(n, math.nan) for n in STEP_STAT_NAMES[:-2]]
        f: list[float] = [progress, float(any(_finite(v) for v in measured))]
        f += [v if _finite(v) else 0.0 for v in stats]
        for name in CDF_STATS:
            f += self.stat_cdfs[name](step_stats.get(name, math.nan)).tolist()
        f += self.losses["train"].features(train_loss)
        f += self.losses["val"].features(val_loss)
        f.append(math.tanh(_log_ratio(val_loss, train_loss)))
        f += [self._hparam_feature(n, hparams.get(n)) for n in self.hparam_kinds]
        f += [float(a) for a in prev_action]
        for filled, saved_loss, saved_progress in registers:
            f += [
                float(filled),
                math.tanh(_log_ratio(train_loss, saved_loss)) if filled else 0.0,
                progress - saved_progress if filled and _finite(saved_progress) else 0.0,
            ]
        f += [math.tanh(10.0 * (progress - t)) for t in self.progress_taus]
        f += [float((run or {}).get(n, 0.0)) for n in self.run_names]
        vec = np.asarray(f, dtype=np.float64)
        vec = np.clip(np.nan_to_num(vec, nan=0.0, posinf=_CLIP, neginf=-_CLIP), -_CLIP, _CLIP)
        return vec.astype(np.float32)

    def state_dict(self) -> dict:
        return {
            "names": list(self.names),
            "initial_hparams": dict(self.initial_hparams),
            "stat_cdfs": {k: v.state_dict() for k, v in self.stat_cdfs.items()},
            "losses": {k: v.state_dict() for k, v in self.losses.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        if tuple(state["names"]) != self.names:
            raise ValueError("feature state was saved for another feature layout")
        self.initial_hparams = dict(state["initial_hparams"])
        for k, v in state["stat_cdfs"].items():
            self.stat_cdfs[k].load_state_dict(v)
        for k, v in state["losses"].items():
            self.losses[k].load_state_dict(v)
