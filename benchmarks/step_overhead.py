"""Cost of CIAO's step (statistics on, every 4 steps) next to torch.optim.AdamW(foreach=True).

Both optimizers run in one process, interleaved block by block (paired, alternating order), so
that the ratios survive a shared, noisy machine. Reported per model (medians of paired ratios):
  - step ratio: CIAO's step / AdamW's step (parameters with fixed gradients);
  - overhead of a full step: CIAO's full step / AdamW's full step - 1, where a full step is
    forward + backward + optimizer step on a real batch.

Usage: python benchmarks/step_overhead.py [--reps 30] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from torch import nn

from lhopt import CIAO


def mlp() -> tuple[nn.Module, callable]:
    model = nn.Sequential(
        nn.Linear(512, 1536),
        nn.GELU(),
        nn.Linear(1536, 1536),
        nn.GELU(),
        nn.Linear(1536, 1536),
        nn.GELU(),
        nn.Linear(1536, 10),
    )
    x, y = torch.randn(128, 512), torch.randint(0, 10, (128,))
    return model, lambda m: nn.functional.cross_entropy(m(x), y)


class TinyLM(nn.Module):
    def __init__(self, vocab=2000, d=256, layers=4, context=64):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(context, d))
        block = nn.TransformerEncoderLayer(d, 4, 4 * d, dropout=0.0, batch_first=True)
        self.body = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(context))

    def forward(self, tokens):
        h = self.emb(tokens) + self.pos[: tokens.shape[1]]
        return self.head(self.norm(self.body(h, mask=self.mask, is_causal=True)))


def transformer() -> tuple[nn.Module, callable]:
    model = TinyLM()
    tokens = torch.randint(0, 2000, (16, 65))
    x, y = tokens[:, :-1], tokens[:, 1:]
    return model, lambda m: nn.functional.cross_entropy(m(x).flatten(0, 1), y.flatten())


def make_optimizers(model):
    return {
        "adamw": torch.optim.AdamW(
            model.parameters(),
            lr=1e-4,
            betas=(0.9, 0.99),
            eps=1e-6,
            weight_decay=1e-2,
            foreach=True,
        ),
        "ciao": CIAO(model.parameters(), lr=1e-4, feature_every=4),
    }


def time_block(fn, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def measure(build, reps: int, block: int = 8) -> dict:
    """Paired timings: each repetition times AdamW then CIAO (order alternating between
    repetitions); the ratios reported are medians of the per-pair ratios, which cancel the
    drift of a shared machine better than a ratio of medians."""
    torch.manual_seed(0)
    model, loss_fn = build()
    opts = make_optimizers(model)
    loss_fn(model).backward()  # fixed gradients for the step-only timing

    def full_step(opt):
        opt.zero_grad(set_to_none=False)
        loss_fn(model).backward()
        opt.step()

    for opt in opts.values():  # warm-up: allocate state, fill caches
        time_block(opt.step, block)
        time_block(lambda o=opt: full_step(o), 2)
    step = {name: [] for name in opts}
    full = {name: [] for name in opts}
    for rep in range(reps):
        order = list(opts) if rep % 2 == 0 else list(reversed(opts))
        for name in order:
            step[name].append(time_block(opts[name].step, block))
        for name in order:
            full[name].append(time_block(lambda o=opts[name]: full_step(o), 2))
        opts["ciao"].pop_step_stats()

    def paired(times):
        return statistics.median(c / a for a, c in zip(times["adamw"], times["ciao"], strict=True))

    med = {k: statistics.median(v) for k, v in step.items()}
    full_med = {k: statistics.median(v) for k, v in full.items()}
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "tensors": len(list(model.parameters())),
        "adamw_step_ms": 1e3 * med["adamw"],
        "ciao_step_ms": 1e3 * med["ciao"],
        "step_ratio": paired(step),
        "adamw_full_step_ms": 1e3 * full_med["adamw"],
        "ciao_full_step_ms": 1e3 * full_med["ciao"],
        "full_step_overhead": paired(full) - 1.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    results = {"mlp": measure(mlp, args.reps), "transformer": measure(transformer, args.reps)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor()}")
    print(
        "| model | params | tensors | AdamW step ms | CIAO step ms | step ratio "
        "| AdamW full step ms | CIAO full step ms | full-step overhead |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['params'] / 1e6:.2f}M | {r['tensors']} | {r['adamw_step_ms']:.2f} "
            f"| {r['ciao_step_ms']:.2f} | {r['step_ratio']:.2f}x | {r['adamw_full_step_ms']:.1f} "
            f"| {r['ciao_full_step_ms']:.1f} | {100 * r['full_step_overhead']:+.1f}% |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
