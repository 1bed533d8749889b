"""Does an MNIST-1D task overfit within its budget when `train_samples` is cut? (Stage 6's premise.)

Trains a 2-hidden-layer MLP (width 128, ReLU, cross-entropy, batch 64) with AdamW at constant
learning rates on the first N training samples and prints the validation loss every 500 steps.

Usage: python benchmarks/small_data_overfit.py [--samples 7000,700,300] [--lrs 1e-3,8e-3]
       [--steps 3000]
"""

from __future__ import annotations

import argparse

import torch

from lhopt.tasks import TaskConfig, build_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", default="7000,700,300")
    parser.add_argument("--lrs", default="1e-3,8e-3")
    parser.add_argument("--steps", type=int, default=3000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| train samples | lr | validation loss every 500 steps |")
    print("|---|---|---|")
    for n in (int(x) for x in args.samples.split(",")):
        for lr in (float(x) for x in args.lrs.split(",")):
            config = TaskConfig.make(
                "mnist1d",
                arch="mlp",
                depth=2,
                width=128,
                norm="none",
                activation="relu",
                dropout=0.0,
                loss="ce",
                batch=64,
                epochs=3,
                budget=args.steps,
                train_samples=n,
            )
            task = build_task(config, seed=0)
            opt = torch.optim.AdamW(task.model.parameters(), lr=lr)
            losses = []
            for step in range(1, args.steps + 1):
                loss = task.train_loss()
                opt.zero_grad()
                loss.backward()
                opt.step()
                if step % 500 == 0:
                    losses.append(f"{task.val_loss():.2f}")
            print(f"| {n} | {lr:g} | {' '.join(losses)} |", flush=True)


if __name__ == "__main__":
    main()
