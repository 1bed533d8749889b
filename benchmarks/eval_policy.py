"""Score policy files as meta-training's periodic evaluation does: greedy, default initial
hyperparameters, on a suite, by the config's reward (mean final clipped log speedup over adamw).

For comparing checkpoints of different runs on one measure, e.g. the default run's policies under
the horizon-2 reward of configs/experiments/horizon2.toml (best score per task log 2 = 0.69).

Usage: python benchmarks/eval_policy.py --config CONFIG.toml [--trace TASK] POLICY.pt [...]
  --trace TASK: instead, one greedy episode of that suite task per policy (seed 0), with the
  learning rate after each decision and the final hyperparameters.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import numpy as np
import torch

from lhopt.control import load_policy
from lhopt.meta import config as meta_config
from lhopt.meta.episode import evaluation_config, run_episode
from lhopt.meta.ppo import make_polyak
from lhopt.meta.train import MetaTrainer
from lhopt.tasks import suite


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--seeds", type=int, default=None, help="default: the config's")
    parser.add_argument("--trace", default=None, help="a task of the config's eval suite")
    parser.add_argument("policies", nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = meta_config.load(args.config)
    cfg.run.workers, cfg.run.init_from = 0, ""
    if args.seeds:
        cfg.run.eval_seeds = args.seeds
    if args.trace:
        task = suite(cfg.run.eval_suite)[args.trace]
        ep = evaluation_config(cfg.episode)
        for path in args.policies:
            r = run_episode(load_policy(path), task, 0, ep, np.random.default_rng(0), greedy=True)
            info = r["info"]
            print(
                json.dumps(
                    {
                        "policy": path,
                        "return": round(info["return"], 3),
                        "lr": [float(f"{x:.3g}") for x in info["lr_trace"]],
                        "final": {k: float(f"{v:.3g}") for k, v in info["final_hparams"].items()},
                    }
                )
            )
        return
    for path in args.policies:
        with tempfile.TemporaryDirectory() as out:
            trainer = MetaTrainer(cfg, out)
            trainer.avg = make_polyak(load_policy(path))
            scores = trainer.evaluate()
        print(json.dumps({"policy": path, **{k: round(v, 3) for k, v in scores.items()}}))


if __name__ == "__main__":
    main()
