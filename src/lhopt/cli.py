"""The `lhopt` command."""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch import nn

from lhopt import LearnedOptimizer
from lhopt.extras import MissingExtra, require


def _teacher_task(seed: int, n: int = 16384, dim: int = 32, classes: int = 10):
    """A classification task labelled by a random two-layer teacher network."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    w1, w2 = torch.randn(dim, 64, generator=g), torch.randn(64, classes, generator=g)
    y = (torch.tanh(x @ w1) @ w2).argmax(1)
    split = n * 3 // 4
    return (x[:split], y[:split]), (x[split:], y[split:])


def demo(steps: int, decisions: int, seed: int, out=sys.stdout) -> list[dict]:
    """Train a small MLP with `LearnedOptimizer` (the shipped policy) and print, at each of its
    decisions, the losses it saw, a few of its features and the hyperparameters it chose.
    Returns the optimizer's decision records (`history`), each with its validation accuracy."""
    torch.manual_seed(seed)
    (x, y), (xv, yv) = _teacher_task(seed)
    model = nn.Sequential(
        nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)
    )
    accuracy: list[float] = []

    def val_loss() -> float:
        with torch.no_grad():
            logits = model(xv)
            accuracy.append((logits.argmax(1) == yv).float().mean().item())
            return nn.functional.cross_entropy(logits, yv).item()

    opt = LearnedOptimizer(
        model.parameters(),
        total_steps=steps,
        steps_per_epoch=len(x) / 64,  # batches of 64 drawn from the training set
        val_loss_fn=val_loss,
        decisions=decisions,
        model=model,
    )
    g = torch.Generator().manual_seed(seed + 1)
    start = time.perf_counter()
    print(
        f"{'step':>6} {'train':>8} {'val':>8} {'val acc':>8} {'cos(g,m)':>8} "
        f"{'log|u|/|p|':>10} {'lr':>9} {'wd':>9} {'register':>8}",
        file=out,
    )
    shown = 0
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=g)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        opt.report(train_loss=loss)  # accumulated on the device: no host sync per step
        for record in opt.history[shown:]:
            f, h = record["features"], record["hparams"]
            train = "-" if record["train_loss"] is None else f"{record['train_loss']:.4f}"
            print(
                f"{record['step']:>6} {train:>8} {record['val_loss']:>8.4f} "
                f"{accuracy[-1]:>8.3f} {f['stat/cos_grad_momentum']:>8.3f} "
                f"{f['stat/log_update_to_param_norm']:>10.2f} {h['lr']:>9.2e} "
                f"{h['weight_decay']:>9.2e} {record['register']:>8}",
                file=out,
            )
        shown = len(opt.history)
    print(
        f"{steps} steps in {time.perf_counter() - start:.1f} s; "
        f"{len(opt.history)} decisions of the shipped policy",
        file=out,
    )
    return [{**r, "val_acc": a} for r, a in zip(opt.history, accuracy, strict=True)]


def meta_train(args, parser) -> int:
    from pathlib import Path

    from lhopt.meta import config as meta_config
    from lhopt.meta.train import MetaTrainer

    try:
        cfg = meta_config.load(args.config)
    except ValueError as e:
        parser.error(f"{args.config}: {e}")
    out = Path(args.out)
    # A run's files: its checkpoint, or the log of one killed before its first checkpoint.
    held = [n for n in ("checkpoint.pt", "log.jsonl") if (out / n).exists()]
    if held == ["log.jsonl"] and not (out / "log.jsonl").read_text().strip():
        held = []  # killed before its first iteration ended: nothing logged
    if not args.resume and held:  # before anything is written there
        how = (
            "pass --resume to continue it, or another --out"
            if "checkpoint.pt" in held
            else "it stopped before its first checkpoint, so there is nothing to resume: pass "
            "another --out (or delete the folder)"
        )
        parser.error(f"{out} already holds a run ({', '.join(held)}): {how}")
    trainer = MetaTrainer(cfg, out, address=args.address)
    if args.resume:
        try:
            trainer.resume()
        except ValueError as e:
            parser.error(str(e))
        print(f"resumed at iteration {trainer.iteration}")
    elif cfg.run.init_from:
        try:
            trainer.warm_start(cfg.run.init_from)
        except ValueError as e:
            parser.error(str(e))
        print(f"policy initialised from {cfg.run.init_from}")
    if cfg.run.init_labels and not args.resume:
        try:
            trainer.start_labels(cfg.run.init_labels)
        except ValueError as e:
            parser.error(str(e))
        print(f"{len(trainer.clone_data.episodes)} labelled episodes from {cfg.run.init_labels}")
    (out / "config.toml").write_text(meta_config.dumps(cfg))  # resolved: `extends` applied
    trainer.train(log_progress=lambda line: print(line, flush=True))
    print(f"done: {trainer.iteration} iterations; policy at {out / 'policy.pt'}")
    return 0


def describe_tasks() -> str:
    """Markdown: each family's parameters (from its schema) and each suite's tasks."""
    from lhopt.tasks import (
        EXTRA_FAMILIES,
        FAMILIES,
        SELECTION_FAMILIES,
        SUITES,
        TRAINING_FAMILIES,
        UNSEEN_FAMILIES,
        task_budget,
    )

    lines = ["## Families", ""]
    for name, (schema, task_cls) in FAMILIES.items():
        module_doc = (sys.modules[task_cls.__module__].__doc__ or "").strip()
        training = name in TRAINING_FAMILIES
        if name in EXTRA_FAMILIES:
            module_doc += (
                "\n\nSampled for meta-training only where a config names it (`[run] families`, "
                "`[run] pool_extra_families` or `[run] pool_groups`)."
            )
        if name in SELECTION_FAMILIES:
            module_doc += "\n\nSelection: only in the selection suites, never sampled."
        elif name in UNSEEN_FAMILIES:
            module_doc += (
                "\n\nUnseen: only in the `unseen` suites (head-to-heads of candidates chosen "
                "elsewhere), never sampled nor used to choose snapshots."
            )
        elif not training:
            module_doc += "\n\nOut of distribution: only in the `ood` suite, never sampled."
        column = "sampled for meta-training" if training else "range a config may use"
        lines += [
            f"### {name}",
            "",
            module_doc,
            "",
            f"| parameter | {column} | doc |",
            "|---|---|---|",
        ]
        for k, p in schema.params.items():
            if p.kind == "choice":
                sampled = p.describe()
            elif training:
                sampled = f"{p.kind} in [{p.low:g}, {p.high:g}]" + (
                    ", log-uniform" if p.log else ""
                )
                if p.limits:
                    sampled += f" (a config may use [{p.bounds[0]:g}, {p.bounds[1]:g}])"
            else:
                sampled = f"{p.kind} in [{p.bounds[0]:g}, {p.bounds[1]:g}]"
            lines.append(f"| `{k}` | {sampled} | {p.doc} |")
        for k, p in (schema.fixed or {}).items():
            lines.append(f"| `{k}` | not sampled: {p.describe()} | {p.doc} |")
        lines.append("")
    for suite_name, tasks in SUITES.items():
        lines += [
            f"## Suite `{suite_name}`",
            "",
            "| task | family | T | config |",
            "|---|---|---|---|",
        ]
        for name, c in tasks.items():
            params = ", ".join(f"{k}={v}" for k, v in c.params)
            lines.append(f"| {name} | {c.family} | {task_budget(c)} | {params} |")
        lines.append("")
    return "\n".join(lines)


DEFAULT_OPTIMIZERS = (
    "lhopt",
    "adamw",
    "adamw-cosine",
    "adamw-cosine-tuned",
    "schedulefree",
    "prodigy",
)


def bench(args, parser) -> int:
    from lhopt.bench import check_request, run_benchmark
    from lhopt.bench.benchmark import check_out, check_policy
    from lhopt.bench.report import summary_table, task_table, write

    def names(csv: str) -> list[str]:
        return [x.strip() for x in csv.split(",") if x.strip()]

    optimizers = names(args.optimizers)
    tasks = None if args.tasks is None else names(args.tasks)
    try:
        check_request(args.suite, optimizers, args.seeds, tasks)
        if args.policy is not None:
            check_policy(args.policy, optimizers)
        if args.workers is not None and args.workers < 1:
            raise ValueError(f"--workers {args.workers} is not allowed: a number of CPUs >= 1")
        out = check_out(args.out)  # before any work: a bad --out loses nothing
    except ValueError as e:
        parser.error(str(e))
    doc = run_benchmark(
        args.suite,
        optimizers,
        args.seeds,
        address=args.address,
        workers=args.workers,
        progress=not args.no_progress,
        use_cache=not args.no_cache,
        policy=args.policy,
        tasks=tasks,
    )
    paths = write(doc, out)
    print(
        f"\nsuite {args.suite}: {len(doc['tasks'])} tasks, {args.seeds} seed(s), "
        f"{doc['wall_time_s']:.0f} s"
    )
    print(summary_table(doc))
    if "adamw" in doc["baselines"]:
        print()
        print(task_table(doc, "adamw"))
    if doc["errors"]:
        print(f"\n{len(doc['errors'])} run(s) crashed: see {paths['report']}")
    print(f"\nwrote {', '.join(str(p) for p in paths.values())}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lhopt", description="Learned hyperparameter optimizers")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="train a small model with lhopt, print its decisions")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--decisions", type=int, default=15, help="decisions (lines printed)")
    p.add_argument("--seed", type=int, default=0)
    b = sub.add_parser("bench", help="run a suite with several optimizers, measure speedups")
    from lhopt.tasks.suites import SUITES

    b.add_argument("--suite", default="quick", help=f"one of {', '.join(SUITES)}")
    b.add_argument(
        "--optimizers",
        default=",".join(DEFAULT_OPTIMIZERS),
        help="comma-separated names (default: %(default)s)",
    )
    b.add_argument(
        "--tasks", default=None, help="comma-separated tasks of the suite (default: all of them)"
    )
    b.add_argument("--seeds", type=int, default=1)
    b.add_argument("--out", default="out/bench", help="folder for results.json, report, figures")
    b.add_argument("--address", default=None, help="Ray cluster address (default: local)")
    b.add_argument("--workers", type=int, default=None, help="local Ray CPUs (default: all)")
    b.add_argument(
        "--policy",
        default=None,
        help="policy file for lhopt (default: the shipped one), e.g. a checkpoint's policy.pt",
    )
    b.add_argument("--no-progress", action="store_true")
    b.add_argument(
        "--no-cache",
        action="store_true",
        help="run every baseline again (wall-clock speedups need runs timed together)",
    )
    sub.add_parser("tasks", help="list the task families, their parameter ranges and the suites")
    m = sub.add_parser("meta-train", help="train a policy with PPO over the task distribution")
    m.add_argument("--config", required=True, help="TOML file (see docs/meta.md)")
    m.add_argument("--out", required=True, help="folder for logs, checkpoints, policy.pt")
    m.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    m.add_argument("--address", default=None, help="Ray cluster address (default: local)")
    args = parser.parse_args(argv)
    try:
        return _run(args, parser)
    except MissingExtra as e:
        print(f"lhopt {args.command}: {e}", file=sys.stderr)
        return 2


# What each command needs beyond torch and numpy, checked before any work.
_NEEDS = {
    "bench": ("bench", ("ray", "tqdm", "matplotlib", "schedulefree", "prodigyopt")),
    "meta-train": ("meta", ("ray", "tqdm", "matplotlib", "scipy")),
}


def _run(args, parser) -> int:
    if args.command in _NEEDS:
        extra, modules = _NEEDS[args.command]
        for module in modules:
            require(module, extra)
    if args.command == "meta-train":
        return meta_train(args, parser)
    if args.command == "tasks":
        print(describe_tasks())
        return 0
    if args.command == "bench":
        return bench(args, parser)
    if args.command == "demo":
        if args.steps < 1 or args.decisions < 1:
            parser.error(f"--steps={args.steps} and --decisions={args.decisions} must be >= 1")
        demo(args.steps, args.decisions, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
