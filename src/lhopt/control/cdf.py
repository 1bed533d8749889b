"""CDF features: where a value sits relative to its own history in this run, at several scales.

For a series x_1, x_2, ... and a time scale s (in outer steps), an exponentially weighted mean and
variance with decay beta = 1 - 1/s summarise the history; the feature of a new value is
Phi((x - mean) / std), the standard normal CDF of its z-score against the history *before* it.
The answer is a number in [0, 1] that says "high or low for this run" and hides the magnitude:
a constant series gives 0.5, a steadily rising one settles well above 0.5 (about 0.9), a
falling one as far below, and a jump gives nearly 1 or 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

_VAR_FLOOR = 1e-8  # absolute, since the tracked quantities are logs and cosines of order 1


def normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


class EWMACDF:
    """Debiased EWMA mean/variance at several time scales and the CDF of new values against them."""

    def __init__(self, scales: Sequence[float]) -> None:
        if not scales or any(not (s >= 1.0) for s in scales):
            raise ValueError(f"CDF time scales {list(scales)!r} must be a non-empty list of >= 1")
        self.scales = tuple(float(s) for s in scales)
        self.betas = np.array([1.0 - 1.0 / s for s in self.scales])
        self.reset()

    def reset(self) -> None:
        n = len(self.scales)
        self.weight = np.zeros(n)  # total weight of the history, for debiasing
        self.mean_acc = np.zeros(n)
        self.sq_acc = np.zeros(n)

    def __call__(self, x: float) -> np.ndarray:
        """The CDF feature of `x` at each scale (0.5 with no history or a non-finite x)."""
        out = np.full(len(self.scales), 0.5)
        if not math.isfinite(x):
            return out
        seen = self.weight > 0
        if seen.any():
            mean = self.mean_acc[seen] / self.weight[seen]
            var = np.maximum(self.sq_acc[seen] / self.weight[seen] - mean**2, 0.0)
            z = (x - mean) / np.sqrt(var + _VAR_FLOOR)
            out[seen] = [normal_cdf(float(v)) for v in z]
        b = self.betas
        self.weight = b * self.weight + (1 - b)
        self.mean_acc = b * self.mean_acc + (1 - b) * x
        self.sq_acc = b * self.sq_acc + (1 - b) * x * x
        return out

    def state_dict(self) -> dict:
        return {
            "scales": list(self.scales),
            "weight": self.weight.tolist(),
            "mean_acc": self.mean_acc.tolist(),
            "sq_acc": self.sq_acc.tolist(),
        }

    def load_state_dict(self, state: dict) -> None:
        if tuple(state["scales"]) != self.scales:
            raise ValueError(f"CDF scales {state['scales']} do not match {list(self.scales)}")
        self.weight = np.array(state["weight"], dtype=float)
        self.mean_acc = np.array(state["mean_acc"], dtype=float)
        self.sq_acc = np.array(state["sq_acc"], dtype=float)
