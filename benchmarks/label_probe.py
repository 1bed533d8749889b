"""Do the inputs at a branched decision tell its label on a family they were not fitted on?

Reads every branch label kept by keep-or-halve runs (`[episode] branch = true`: their
checkpoints' cloning aggregates, `lhopt.meta.episode._Branches`) and the actor's inputs at the
labelled decision, and fits an L2-regularised logistic read of "halve" on the standardised
inputs. Reported: leave-one-family-out accuracy against the majority label of the training
folds (does the read transfer to another kind of task?), and 5-fold accuracy within the pooled
families (does it fit at all?), each beside the held-out family's own best constant (an
oracle of its label share, the bar a read that adds nothing task-specific cannot pass). With
`--read`, the read sees only the inputs matching those patterns (as `[policy] read`), e.g. the
schedule's own (progress, the lr and the last move), which tell no task from another. Only the
current decision's inputs are read, where the policy's recurrent state may hold more; `--lags k`
adds the inputs of the k decisions before it (does history help?).

Usage: python benchmarks/label_probe.py runs/default-stage29 runs/default-stage32
"""

from __future__ import annotations

import argparse
import fnmatch
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from lhopt.control.actions import ActionSpace


def gather(runs: list[Path], lags: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs, halve?, family) of every labelled decision of `runs`; with `lags`, the inputs
    of the `lags` decisions before it too (zeros before the first)."""
    halve = next(h for h in ActionSpace().heads if h.hparam == "lr").choices.index(0.5)
    xs, ys, fams = [], [], []
    for run in runs:
        state = torch.load(run / "checkpoint.pt", weights_only=False)
        for e in state.get("clone_data", []):
            if (e["info"].get("branch_head") or "lr") != "lr":
                continue  # the lr head's labels only
            branch = np.asarray(e["branch"])
            obs = np.asarray(e["obs"], dtype=np.float64)
            for at in np.flatnonzero(branch >= 0):
                past = [obs[at - j] if at >= j else np.zeros_like(obs[at]) for j in range(lags + 1)]
                xs.append(np.concatenate(past))
                ys.append(int(branch[at]) == halve)
                fams.append(e["info"]["family"])
    if not xs:
        raise SystemExit("no branch labels in these runs' checkpoints (not branched runs?)")
    return np.stack(xs), np.asarray(ys, dtype=np.float64), np.asarray(fams)


def fit(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """Logistic regression by L-BFGS: weights and bias."""
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt)
        loss = loss + l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), float(b.detach())


def accuracy(train: np.ndarray, test: np.ndarray, x, y, l2: float) -> tuple[float, float]:
    """(the read's accuracy, the training folds' majority label's accuracy) on `test`."""
    mu, sd = x[train].mean(0), x[train].std(0) + 1e-8
    w, b = fit((x[train] - mu) / sd, y[train], l2)
    pred = ((x[test] - mu) / sd) @ w + b > 0
    majority = y[train].mean() >= 0.5
    return float((pred == y[test]).mean()), float((majority == y[test]).mean())


def matching(names: list[str], patterns: list[str]) -> list[int]:
    """The indices of the input `names` that match any of the fnmatch `patterns`."""
    return [i for i, n in enumerate(names) if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def by_family(x: np.ndarray, y: np.ndarray, fams: np.ndarray, l2: float) -> list[dict]:
    """Per held-out family (leave-one-family-out): its size, its "halve" share, the read's
    accuracy there, the training folds' majority's, and its own best constant's."""
    out = []
    for fam in sorted(set(fams)):
        test = fams == fam
        acc, base = accuracy(~test, test, x, y, l2)
        share = float(y[test].mean())
        out.append(
            {
                "family": fam,
                "n": int(test.sum()),
                "halve": share,
                "read": acc,
                "majority": base,
                "own": max(share, 1 - share),
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders with a checkpoint.pt")
    parser.add_argument("--l2", type=float, default=1e-2, help="weight decay of the read")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--read", nargs="+", help="fnmatch patterns of the inputs read (all)")
    parser.add_argument(
        "--lags", type=int, default=0, help="also read the inputs of this many decisions before"
    )
    args = parser.parse_args()
    x, y, fams = gather(args.runs, args.lags)
    if args.read:
        names = torch.load(args.runs[0] / "policy.pt", weights_only=False)["layout"]["features"]
        keep = matching(names, args.read)
        if not keep:
            raise SystemExit(f"--read {args.read}: no input matches")
        x = x[:, [j * len(names) + i for j in range(args.lags + 1) for i in keep]]
    print(f"{len(y)} labels, halve {y.mean():.2f}; {x.shape[1]} inputs; l2 {args.l2}")
    print("| held-out family | n | halve | read | majority | own constant | read - own |")
    print("|---|---|---|---|---|---|---|")
    gains, owns = [], []
    for r in by_family(x, y, fams, args.l2):
        gains.append(r["read"] - r["majority"])
        owns.append(r["read"] - r["own"])
        print(
            f"| {r['family']} | {r['n']} | {r['halve']:.2f} | {r['read']:.2f} | "
            f"{r['majority']:.2f} | {r['own']:.2f} | {r['read'] - r['own']:+.2f} |"
        )
    print(
        f"leave-one-family-out, mean over families: read - majority {np.mean(gains):+.3f}, "
        f"read - own constant {np.mean(owns):+.3f}"
    )
    order = np.random.default_rng(args.seed).permutation(len(y))
    folds = defaultdict(list)
    for i, j in enumerate(order):
        folds[i % 5].append(j)
    accs, bases = [], []
    for k in range(5):
        test = np.zeros(len(y), dtype=bool)
        test[folds[k]] = True
        acc, base = accuracy(~test, test, x, y, args.l2)
        accs.append(acc)
        bases.append(base)
    print(
        f"5-fold within the pooled families: read {np.mean(accs):.3f}, majority "
        f"{np.mean(bases):.3f}, read - majority {np.mean(accs) - np.mean(bases):+.3f}"
    )


if __name__ == "__main__":
    main()
