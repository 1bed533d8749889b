"""The `lhopt` command."""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch import nn

from lhopt import CIAO, ActionSpace, FeatureEngine, RestartRegisters


def _teacher_task(seed: int, n: int = 16384, dim: int = 32, classes: int = 10):
    """A classification task labelled by a random two-layer teacher network."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    w1, w2 = torch.randn(dim, 64, generator=g), torch.randn(64, classes, generator=g)
    y = (torch.tanh(x @ w1) @ w2).argmax(1)
    split = n * 3 // 4
    return (x[:split], y[:split]), (x[split:], y[split:])


def demo(steps: int, decisions: int, seed: int, out=sys.stdout) -> list[dict]:
    """Train a small MLP with CIAO and print, at each outer step, the losses and features.

    The controller here always chooses "keep"; the learned policy (a later milestone) is what
    chooses real actions. Returns one record per outer step.
    """
    torch.manual_seed(seed)
    (x, y), (xv, yv) = _teacher_task(seed)
    model = nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                          nn.Linear(128, 10))  # fmt: skip
    opt = CIAO(model.parameters())
    space = ActionSpace()
    engine = FeatureEngine(space.hparam_kinds, space.encoding_names, num_registers=3)
    engine.reset(opt.hparams[0])
    registers = RestartRegisters(3)
    g = torch.Generator().manual_seed(seed + 1)
    every = max(1, steps // decisions)
    records: list[dict] = []
    loss_sum = torch.zeros(())
    start = time.perf_counter()
    print(f"{'step':>6} {'train':>8} {'val':>8} {'val acc':>8} {'clip':>5} "
          f"{'cos(g,m)':>8} {'log|u|/|p|':>10}", file=out)  # fmt: skip
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(x), (64,), generator=g)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_sum += loss.detach()  # accumulated on the device: no host sync per step
        if step % every == 0 or step == steps:
            with torch.no_grad():
                logits = model(xv)
                val = nn.functional.cross_entropy(logits, yv).item()
                acc = (logits.argmax(1) == yv).float().mean().item()
            train = loss_sum.item() / every
            loss_sum.zero_()
            stats = opt.pop_step_stats()
            features = engine.observe(
                progress=step / steps, step_stats=stats, train_loss=train, val_loss=val,
                hparams=opt.hparams[0], prev_action=space.encode(space.keep),
                registers=registers.info(),
            )  # fmt: skip
            space.apply_hparams(opt.param_groups, space.keep)
            records.append({"step": step, "train_loss": train, "val_loss": val, "val_acc": acc,
                            "features": features})  # fmt: skip
            print(f"{step:>6} {train:>8.4f} {val:>8.4f} {acc:>8.3f} {stats['clip_rate']:>5.2f} "
                  f"{stats['cos_grad_momentum']:>8.3f} {stats['log_update_to_param_norm']:>10.2f}",
                  file=out)  # fmt: skip
    print(f"{steps} steps in {time.perf_counter() - start:.1f} s; "
          f"{engine.size} features per decision", file=out)  # fmt: skip
    return records


def meta_train(args, parser) -> int:
    from pathlib import Path

    from lhopt.meta import config as meta_config
    from lhopt.meta.train import MetaTrainer

    try:
        cfg = meta_config.load(args.config)
    except ValueError as e:
        parser.error(f"{args.config}: {e}")
    out = Path(args.out)
    if not args.resume and (out / "checkpoint.pt").exists():
        parser.error(f"{out} already holds a run: pass --resume to continue it, or another --out")
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
    (out / "config.toml").write_text(Path(args.config).read_text())
    trainer.train(log_progress=lambda line: print(line, flush=True))
    print(f"done: {trainer.iteration} iterations; policy at {out / 'policy.pt'}")
    return 0


def describe_tasks() -> str:
    """Markdown: each family's parameters (from its schema) and each suite's tasks."""
    from lhopt.tasks import FAMILIES, FAMILY_NAMES, SUITES, task_budget

    lines = ["## Families", ""]
    for name, (schema, task_cls) in FAMILIES.items():
        module_doc = (sys.modules[task_cls.__module__].__doc__ or "").strip()
        training = name in FAMILY_NAMES
        if not training:
            module_doc += "\n\nOut of distribution: only in the `ood` suite, never sampled."
        column = "sampled for meta-training" if training else "range a config may use"
        lines += [f"### {name}", "", module_doc, "",
                  f"| parameter | {column} | doc |", "|---|---|---|"]  # fmt: skip
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
        lines += [f"## Suite `{suite_name}`", "", "| task | family | T | config |",
                  "|---|---|---|---|"]  # fmt: skip
        for name, c in tasks.items():
            params = ", ".join(f"{k}={v}" for k, v in c.params)
            lines.append(f"| {name} | {c.family} | {task_budget(c)} | {params} |")
        lines.append("")
    return "\n".join(lines)


DEFAULT_OPTIMIZERS = ("lhopt", "adamw", "adamw-cosine", "adamw-cosine-tuned", "schedulefree",
                      "prodigy")  # fmt: skip


def bench(args, parser) -> int:
    from pathlib import Path

    from lhopt.bench import check_request, run_benchmark
    from lhopt.bench.benchmark import check_policy
    from lhopt.bench.report import summary_table, task_table, write

    def names(csv: str) -> list[str]:
        return [x.strip() for x in csv.split(",") if x.strip()]

    optimizers = names(args.optimizers)
    tasks = None if args.tasks is None else names(args.tasks)
    try:
        check_request(args.suite, optimizers, args.seeds, tasks)
        if args.policy is not None:
            check_policy(args.policy, optimizers)
    except ValueError as e:
        parser.error(str(e))
    doc = run_benchmark(args.suite, optimizers, args.seeds, address=args.address,
                        workers=args.workers, progress=not args.no_progress,
                        use_cache=not args.no_cache, policy=args.policy,
                        tasks=tasks)  # fmt: skip
    paths = write(doc, Path(args.out))
    print(f"\nsuite {args.suite}: {len(doc['tasks'])} tasks, {args.seeds} seed(s), "
          f"{doc['wall_time_s']:.0f} s")  # fmt: skip
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
    p = sub.add_parser("demo", help="train a small model with the inner optimizer (CIAO)")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--decisions", type=int, default=15, help="outer steps (lines printed)")
    p.add_argument("--seed", type=int, default=0)
    b = sub.add_parser("bench", help="run a suite with several optimizers, measure speedups")
    b.add_argument("--suite", default="quick", help="quick, validation or ood")
    b.add_argument("--optimizers", default=",".join(DEFAULT_OPTIMIZERS),
                   help="comma-separated names (default: %(default)s)")  # fmt: skip
    b.add_argument("--tasks", default=None,
                   help="comma-separated tasks of the suite (default: all of them)")  # fmt: skip
    b.add_argument("--seeds", type=int, default=1)
    b.add_argument("--out", default="out/bench", help="folder for results.json, report, figures")
    b.add_argument("--address", default=None, help="Ray cluster address (default: local)")
    b.add_argument("--workers", type=int, default=None, help="local Ray CPUs (default: all)")
    b.add_argument("--policy", default=None,
                   help="policy file for lhopt (default: the shipped one), e.g. a checkpoint's "
                        "policy.pt")  # fmt: skip
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
