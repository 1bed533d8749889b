"""How the two reward rules score runs that match or beat the adamw baseline, on real curves.

Samples training tasks (`sample_training_config`), gets each one's `adamw` curve (T steps, from
the baseline cache or run here, exactly as meta-training gets it), and reports, per rule, the log
speedup the reward gives at step T to a run whose best validation loss is the baseline's own
final best times a factor (1.0 = matching it; 0.9 = 10% lower), and how often that is the
rule's maximum (3 without a horizon, log H with horizon H).

Usage: python benchmarks/reward_calibration.py [--tasks 100] [--seed 0]
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from lhopt.meta.episode import baseline_law
from lhopt.meta.reward import anchored_curve, log_speedup
from lhopt.tasks import FAMILY_NAMES, sample_training_config

FACTORS = (1.05, 1.0, 0.99, 0.97, 0.9, 0.8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    rules = {
        "power law, no horizon (default run)": [],
        "anchored, horizon 2 (experiment)": [],
        "anchored, horizon 20, no asymptote (stage 4)": [],
    }
    tops = (3.0, math.log(2), math.log(20))
    misfit = []
    for _ in range(args.tasks):
        config = sample_training_config(rng, FAMILY_NAMES)
        law, result = baseline_law(config, int(rng.integers(1_000_000)), 14)  # the fitted law
        steps, val = result["steps"], result["val"]
        if not all(math.isfinite(v) for v in val):
            continue
        anchored = anchored_curve(steps, val, 14, 2.0)
        floorless = anchored_curve(steps, val, 14, 20.0, asymptote=False)
        T, best = steps[-1], min(val)
        misfit.append(law.loss(T) / best - 1)
        for rule, ref in zip(rules, (law, anchored, floorless), strict=True):
            rules[rule].append([log_speedup(ref, f * best, T) for f in FACTORS])
    print(
        f"{len(misfit)} tasks with finite adamw curves; power-law fit at T above the real final "
        f"best loss by a median {100 * np.median(misfit):.1f}%"
    )
    print("| rule | " + " | ".join(f"loss x{f}" for f in FACTORS) + " |")
    print("|---|" + "---|" * len(FACTORS))
    for (rule, rows), top in zip(rules.items(), tops, strict=True):
        r = np.array(rows)
        cells = [
            f"{np.median(r[:, i]):+.2f} ({100 * np.mean(r[:, i] >= top - 1e-9):.0f}% max)"
            for i in range(len(FACTORS))
        ]
        print(f"| {rule} | " + " | ".join(cells) + " |")
    print("cells: median log speedup at T (share of tasks at the rule's maximum)")


if __name__ == "__main__":
    main()
