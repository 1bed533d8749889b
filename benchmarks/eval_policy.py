"""Score policy files as meta-training's periodic evaluation does: greedy, default initial
hyperparameters, on a suite, by the config's reward (mean final clipped log speedup over adamw).

For comparing checkpoints of different runs on one measure, e.g. stage 1's shipped policy under
stage 2's reward horizon: with horizon 2 the best score per task is log 2 = 0.69.

Usage: python benchmarks/eval_policy.py --config configs/default.toml POLICY.pt [POLICY.pt ...]
"""

from __future__ import annotations

import argparse
import json
import tempfile

import torch

from lhopt.control.learned import load_policy
from lhopt.meta import config as meta_config
from lhopt.meta.policy import make_polyak
from lhopt.meta.train import MetaTrainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--seeds", type=int, default=None, help="default: the config's")
    parser.add_argument("policies", nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = meta_config.load(args.config)
    cfg.run.workers, cfg.run.init_from = 0, ""
    if args.seeds:
        cfg.run.eval_seeds = args.seeds
    for path in args.policies:
        with tempfile.TemporaryDirectory() as out:
            trainer = MetaTrainer(cfg, out)
            trainer.avg = make_polyak(load_policy(path))
            scores = trainer.evaluate()
        print(json.dumps({"policy": path, **{k: round(v, 3) for k, v in scores.items()}}))


if __name__ == "__main__":
    main()
