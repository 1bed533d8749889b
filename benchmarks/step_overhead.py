"""Cost of CIAO's step (statistics on, every 4 steps) next to torch.optim.AdamW(foreach=True).

The optimizers run in one process, interleaved block by block (paired, alternating order), so
that the ratios survive a shared, noisy machine. Reported per model (medians of paired ratios):
  - step ratio: CIAO's step / AdamW's step (parameters with fixed gradients);
  - overhead of a full step: CIAO's full step / AdamW's full step - 1, where a full step is
    forward + backward + optimizer step on a real batch.
`--learned` adds LearnedOptimizer with the shipped policy (a decision every 20 steps, the train
loss reported each step as a tensor, as docs/integrations.md shows): its full step / AdamW's - 1,
the controller's cost included. `--device cuda` runs everything on the GPU; each timed block
ends with `torch.cuda.synchronize()`, so a host-device sync the optimizer forces shows up.

Usage: python benchmarks/step_overhead.py [--reps 30] [--device cpu|cuda] [--learned]
       [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from torch import nn

from lhopt import CIAO, LearnedOptimizer
from lhopt.tasks.base import check_device


def mlp(device) -> tuple[nn.Module, callable]:
    model = nn.Sequential(
        nn.Linear(512, 1536),
        nn.GELU(),
        nn.Linear(1536, 1536),
        nn.GELU(),
        nn.Linear(1536, 1536),
        nn.GELU(),
        nn.Linear(1536, 10),
    )
    x = torch.randn(128, 512, device=device)
    y = torch.randint(0, 10, (128,), device=device)
    return model.to(device), lambda m: nn.functional.cross_entropy(m(x), y)


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


def transformer(device) -> tuple[nn.Module, callable]:
    model = TinyLM().to(device)
    tokens = torch.randint(0, 2000, (16, 65), device=device)
    x, y = tokens[:, :-1], tokens[:, 1:]
    return model, lambda m: nn.functional.cross_entropy(m(x).flatten(0, 1), y.flatten())


def make_optimizers(model, learned: bool):
    opts = {
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
    if learned:
        # A budget long enough for every timed step, a decision every 20 of them.
        opts["lhopt"] = LearnedOptimizer(model.parameters(), total_steps=100_000, decisions=5_000)
    return opts


def time_block(fn, n: int, device: torch.device) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    sync()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    sync()
    return (time.perf_counter() - start) / n


def measure(build, reps: int, device: torch.device, learned: bool, block: int = 8) -> dict:
    """Paired timings: each repetition times AdamW, CIAO (and LearnedOptimizer with `learned`)
    in turn, the order reversed every other repetition; the ratios reported are medians of the
    per-pair ratios to AdamW, which cancel the drift of a shared machine better than a ratio of
    medians."""
    torch.manual_seed(0)
    model, loss_fn = build(device)
    opts = make_optimizers(model, learned)
    loss_fn(model).backward()  # fixed gradients for the step-only timing

    def full_step(opt):
        opt.zero_grad(set_to_none=False)
        loss = loss_fn(model)
        loss.backward()
        opt.step()
        if isinstance(opt, LearnedOptimizer):
            opt.report(train_loss=loss.detach())

    step_only = {k: v for k, v in opts.items() if k != "lhopt"}  # its step decides: full only
    for opt in opts.values():  # warm-up: allocate state, fill caches
        if opt in step_only.values():
            time_block(opt.step, block, device)
        time_block(lambda o=opt: full_step(o), 2, device)
    step = {name: [] for name in step_only}
    full = {name: [] for name in opts}
    for rep in range(reps):
        order = list(opts) if rep % 2 == 0 else list(reversed(opts))
        for name in order:
            if name in step:
                step[name].append(time_block(opts[name].step, block, device))
        for name in order:
            full[name].append(time_block(lambda o=opts[name]: full_step(o), 2, device))
        opts["ciao"].pop_step_stats()

    def paired(times, name="ciao"):
        return statistics.median(c / a for a, c in zip(times["adamw"], times[name], strict=True))

    med = {k: statistics.median(v) for k, v in step.items()}
    full_med = {k: statistics.median(v) for k, v in full.items()}
    extra = {}
    if learned:
        extra = {
            "lhopt_full_step_ms": 1e3 * full_med["lhopt"],
            "lhopt_full_step_overhead": paired(full, "lhopt") - 1.0,
        }
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "tensors": len(list(model.parameters())),
        "adamw_step_ms": 1e3 * med["adamw"],
        "ciao_step_ms": 1e3 * med["ciao"],
        "step_ratio": paired(step),
        "adamw_full_step_ms": 1e3 * full_med["adamw"],
        "ciao_full_step_ms": 1e3 * full_med["ciao"],
        "full_step_overhead": paired(full) - 1.0,
        **extra,
    }


def _device(text: str) -> torch.device:
    """`--device`: a device on this machine (`check_device`), or argparse's error naming it."""
    try:
        return check_device(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--device", type=_device, default="cpu", help="cpu (default) or cuda[:i]")
    parser.add_argument(
        "--learned", action="store_true", help="also time LearnedOptimizer's full step"
    )
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    device = args.device
    results = {
        name: measure(build, args.reps, device, args.learned)
        for name, build in (("mlp", mlp), ("transformer", transformer))
    }
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {where}")
    learned = " | lhopt full step ms | lhopt full-step overhead" if args.learned else ""
    print(
        "| model | params | tensors | AdamW step ms | CIAO step ms | step ratio "
        f"| AdamW full step ms | CIAO full step ms | full-step overhead{learned} |"
    )
    print("|---" * (9 + 2 * args.learned) + "|")
    for name, r in results.items():
        row = (
            f"| {name} | {r['params'] / 1e6:.2f}M | {r['tensors']} | {r['adamw_step_ms']:.2f} "
            f"| {r['ciao_step_ms']:.2f} | {r['step_ratio']:.2f}x | {r['adamw_full_step_ms']:.1f} "
            f"| {r['ciao_full_step_ms']:.1f} | {100 * r['full_step_overhead']:+.1f}%"
        )
        if args.learned:
            row += f" | {r['lhopt_full_step_ms']:.1f} | {100 * r['lhopt_full_step_overhead']:+.1f}%"
        print(row + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
