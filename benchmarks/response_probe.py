"""Does a cut's short-run answer tell its long-run label? (issue 19)

`benchmarks/label_probe.py` finds that the inputs at a branched decision tell its label ("halve
or keep pays by the end") on a family they were not fitted on barely better than the schedule
(progress, the lr, the last move). A controller could provoke a measurement its inputs lack: cut
for a while and read the loss's answer. This asks whether that answer carries the label before
anything is built: it runs branched groups of a meta-training config (keep, and halve then
keep, from one state, `lhopt.meta.episode._Branches`), and for each takes the label and the
short-run answer, the log ratio of the halving run's validation loss to the keeping run's
at the decisions `--shares` of the run after the branch (default 5% and 10% of it: one and two
periods at 20 decisions). It then scores, as `label_probe.py` does (leave-one-family-out,
against each held-out family's own best constant), a read of the schedule's inputs, the same
with the answer, all inputs, and all inputs with the answer.

Usage: python benchmarks/response_probe.py configs/default-stage32.toml
    --policy runs/default-stage32/checkpoint.pt --specs 40 --workers 2
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from label_probe import by_family, matching
from lhopt.control.actions import ActionSpace
from lhopt.meta import config as meta_config
from lhopt.meta.train import MetaTrainer, _episodes_safe

SCHEDULE = ("progress*", "hparam/lr", "prev_action/lr")
HALVE = next(h for h in ActionSpace().heads if h.hparam == "lr").choices.index(0.5)


def _trainer(config: str, policy: str, seed: int) -> MetaTrainer:
    cfg = meta_config.load(config)
    cfg.run.seed = seed
    cfg.episode.branch_heads = ["lr"]  # the probe reads what halving the lr answers
    trainer = MetaTrainer(cfg, tempfile.mkdtemp(prefix="response-probe-"))
    trainer.warm_start(policy)
    return trainer


def _groups(job: tuple[str, str, int, dict, list[float]]) -> list[dict]:
    """The branched groups of one spec: label, answers, inputs at the branch, family."""
    config, policy, seed, spec, shares = job
    trainer = _trainer(config, policy, seed)
    episodes = _episodes_safe(trainer.avg, spec, trainer.cfg.episode)
    G = trainer.cfg.episode.group
    out = []
    for j in range(0, len(episodes), G):
        keep, halve = episodes[j], episodes[j + 1]
        if "error" in keep or "error" in halve:
            continue
        at = keep["info"]["branch_at"]
        label = int(keep["branch"][at]) if at < len(keep["branch"]) else -1
        answers = []
        for share in shares:
            k = at + max(1, round(share * keep["info"]["outer_steps"]))
            ok = k < min(len(keep["val"]), len(halve["val"]))
            a = math.log(halve["val"][k] / keep["val"][k]) if ok else math.nan
            answers.append(a if math.isfinite(a) else math.nan)
        if label < 0 or not all(math.isfinite(a) for a in answers):
            continue
        out.append(
            {
                "family": keep["info"]["family"],
                "halve": label == HALVE,
                "progress": at / keep["info"]["outer_steps"],
                "answers": answers,
                "obs": np.asarray(keep["obs"][at], dtype=np.float64).tolist(),
            }
        )
    return out


def score(rows: list[dict], names: list[str], l2: float) -> dict[str, float]:
    """Leave-one-family-out accuracy minus each held-out family's own constant, mean over
    families, for the four reads."""
    x_all = np.asarray([r["obs"] for r in rows])
    answer = np.asarray([r["answers"] for r in rows])
    y = np.asarray([r["halve"] for r in rows], dtype=np.float64)
    fams = np.asarray([r["family"] for r in rows])
    sched = matching(names, SCHEDULE)
    reads = {
        "schedule": x_all[:, sched],
        "schedule + answer": np.hstack([x_all[:, sched], answer]),
        "all inputs": x_all,
        "all inputs + answer": np.hstack([x_all, answer]),
        "answer alone": answer,
    }
    return {
        name: float(np.mean([r["read"] - r["own"] for r in by_family(x, y, fams, l2)]))
        for name, x in reads.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="a branched meta-training config")
    parser.add_argument("--policy", required=True, help="a checkpoint or policy file")
    parser.add_argument("--specs", type=int, default=40, help="rollouts (each [run] batch)")
    parser.add_argument(
        "--shares", type=float, nargs="+", default=[0.05, 0.1], help="answers read, run shares"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--l2", type=float, default=1e-2)
    parser.add_argument("--out", default="out/response_probe.json")
    args = parser.parse_args()
    trainer = _trainer(args.config, args.policy, args.seed)
    if not trainer.cfg.episode.branch or trainer.cfg.episode.branch_factors != [0.5]:
        raise SystemExit(f"{args.config}: expected [episode] branch = true, branch_factors [0.5]")
    specs = [trainer.next_spec() for _ in range(args.specs)]
    jobs = [(args.config, args.policy, args.seed, s, args.shares) for s in specs]
    rows = []
    # Spawned: a fork of a process whose torch threads already ran can hang in the child.
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.workers, mp_context=spawn) as pool:
        for i, got in enumerate(pool.map(_groups, jobs)):
            rows += got
            print(f"  spec {i + 1}/{len(specs)}: {len(rows)} labelled groups", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows))
    names = torch.load(args.policy, weights_only=False)
    names = names["layout"]["features"] if "layout" in names else None
    if names is None:  # a checkpoint: its policy file beside it
        names = torch.load(Path(args.policy).with_name("policy.pt"), weights_only=False)
        names = names["layout"]["features"]
    y = np.asarray([r["halve"] for r in rows], dtype=np.float64)
    a1 = np.asarray([r["answers"][0] for r in rows])
    print(
        f"{len(rows)} labelled groups, halve {y.mean():.2f}; families "
        f"{sorted(set(r['family'] for r in rows))}"
    )
    print(
        f"first answer (log val ratio, halve / keep): mean {a1[y == 1].mean():+.3f} where "
        f"halve won, {a1[y == 0].mean():+.3f} where keep won"
    )
    print("| read | leave-one-family-out accuracy - own constant |")
    print("|---|---|")
    for name, gain in score(rows, names, args.l2).items():
        print(f"| {name} | {gain:+.3f} |")


if __name__ == "__main__":
    main()
