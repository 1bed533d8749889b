"""Do the policy's features carry a task's lr level? A supervised probe (issue 19).

Each task (stage 10's pool: `--sample/--seed/--families/--budget-scale/--data-scale`, and the
`selection` suite) runs, seed 0, under the do-nothing controller (every action "keep", stage 10's
spec: cosine shape, progress embedding, noise floor 1e-5) started at lr = tuned
x 10^u for each u of `--offsets` (the other hyperparameters at their defaults), where tuned is
the bracketed tuned lr of the reward's reference (`lhopt.meta.episode.tuned_cosine`, cached).
The features of decisions 1..D (`--decisions`) side by side are the input, u the target:
ridge regression on standardised inputs, leave-one-task-out over the pool, then fitted on the
whole pool and evaluated on `selection`. Besides the policy's features, two candidate
lr-response statistics measured in the same runs, as period means: cos(g_t, d_{t-1}) with
d_{t-1} = theta_t - theta_{t-1} the step just taken (the hypergradient's direction: negative
while steps are too short, positive once they overshoot), and cos(g_t, m_{t-1}).

Prints R^2 and Spearman for each input set; the runs are kept in `--out` (JSON), which
`--analyse` reads again without running anything.

Usage: python benchmarks/lr_probe.py --workers 2 --out out/lr_probe.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np

OFFSETS = (-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5)
CANDIDATES = ("cos_grad_prev_step", "cos_grad_prev_momentum", "log_lr_sharpness")
POWER_ITERATIONS = 20


class KeepPolicy:
    """A policy that always keeps every hyperparameter and register as it is."""

    def __init__(self, keep: tuple[int, ...]) -> None:
        self.keep = keep

    def initial_state(self, batch: int = 1):
        return ()

    def act(self, features, hidden, generator, greedy=True):
        return self.keep, 0.0, hidden


def _cos(dot: float, a: float, b: float) -> float:
    return dot / math.sqrt(max(a * b, 1e-300))


def preconditioned_sharpness(loss, params: list, opt, iterations: int = POWER_ITERATIONS) -> float:
    """lambda_max of D^-1/2 H D^-1/2 on one batch's loss, D = sqrt(v_hat) + eps (Adam's
    preconditioner): lr times it is where the step sits against the stability threshold
    (about 38 for beta1 = 0.9, Cohen et al. 2022). Power iteration on Hessian-vector products;
    NaN where the model has no double backward or the optimizer no state yet."""
    import torch

    params = [p for p in params if p.requires_grad]
    if not all(p in opt.state and "exp_avg_sq" in opt.state[p] for p in params):
        return float("nan")
    group = opt.param_groups[0]
    try:
        grads = torch.autograd.grad(loss, params, create_graph=True)
    except RuntimeError:
        return float("nan")
    inv_sqrt_d = []
    for p in params:
        s = opt.state[p]
        bc2 = 1.0 - s.get("beta2_product", 0.0)
        d = (s["exp_avg_sq"] / max(bc2, 1e-12)).sqrt() + group["epsilon"]
        inv_sqrt_d.append(d.rsqrt())
    x = [torch.randn_like(p) for p in params]
    norm = torch.sqrt(sum((v * v).sum() for v in x))
    x = [v / norm for v in x]
    lam = float("nan")
    for _ in range(iterations):
        y = [v * w for v, w in zip(x, inv_sqrt_d, strict=True)]
        try:
            hy = torch.autograd.grad(grads, params, grad_outputs=y, retain_graph=True)
        except RuntimeError:
            return float("nan")
        z = [h.detach() * w for h, w in zip(hy, inv_sqrt_d, strict=True)]
        lam = float(sum((a * b).sum() for a, b in zip(x, z, strict=True)))
        norm = torch.sqrt(sum((v * v).sum() for v in z))
        if not torch.isfinite(norm) or float(norm) == 0.0:
            return float("nan")
        x = [v / norm for v in z]
    return lam


def probe_runs(config_dict: dict, tuned: float, offsets, spec_dict: dict, last: int) -> list:
    """Runs of one task at tuned x 10^u for each offset, up to decision `last` (inclusive)."""
    import torch

    from lhopt.control.actions import ActionSpace
    from lhopt.control.controller import Controller
    from lhopt.control.policy_file import ControlSpec
    from lhopt.optim import CIAO
    from lhopt.tasks import TaskConfig, build_task

    torch.set_num_threads(1)
    config = TaskConfig.from_dict(config_dict)
    spec = ControlSpec(**spec_dict)
    lo, hi = next((h.low, h.high) for h in ActionSpace().heads if h.hparam == "lr")
    out = []
    for u in offsets:
        task = build_task(config, 0)
        lr = min(max(tuned * 10**u, lo), hi)
        opt = CIAO(task.model.parameters(), lr=lr)
        policy = KeepPolicy(ActionSpace().keep)
        ctl = Controller(policy, opt, task.budget, 20, spec=spec)
        steps = [*ctl.decision_steps, task.budget]
        params = list(task.model.parameters())
        prev = None
        feats, cands, val, train_mean = [], [], task.val_loss(), None
        for k in range(last + 1):
            d = ctl.decide(steps[k], task.model, train_loss=train_mean, val_loss=val)
            feats.append(d.features.tolist())
            if k == last:
                break
            sums, n, loss_sum = np.zeros(2), 0, 0.0  # the two cosines' period sums
            for t in range(steps[k], steps[k + 1]):
                loss = task.train_loss()
                opt.zero_grad()
                loss.backward()
                loss_sum += float(loss.detach())
                with torch.no_grad():
                    now = [p.detach().clone() for p in params]
                    if prev is not None and opt.state:
                        gg = sum(
                            float((p.grad * p.grad).sum()) for p in params if p.grad is not None
                        )
                        dots = np.zeros(4)  # g.d, d.d, g.m, m.m
                        for p, q in zip(params, prev, strict=True):
                            if p.grad is None:
                                continue
                            step = p - q
                            s = opt.state[p]
                            m = s["exp_avg"] * s["exp_avg_scale"]
                            dots += [
                                float((p.grad * step).sum()),
                                float((step * step).sum()),
                                float((p.grad * m).sum()),
                                float((m * m).sum()),
                            ]
                        sums += [_cos(dots[0], gg, dots[1]), _cos(dots[2], gg, dots[3])]
                        n += 1
                    prev = now
                ctl.before_step(t)
                opt.step()
            lam = preconditioned_sharpness(task.train_loss(), params, opt)
            lr_now = opt.param_groups[0]["lr"] * opt.param_groups[0].get("lr_factor", 1.0)
            sharp = math.log10(lr_now * lam) if lam > 0 and lr_now > 0 else float("nan")
            cands.append([*(sums / max(n, 1)).tolist(), sharp])
            train_mean = loss_sum / max(steps[k + 1] - steps[k], 1)
            if not math.isfinite(train_mean):
                train_mean = float("nan")
            val = task.val_loss()
        out.append({"u": u, "lr": lr, "features": feats, "candidates": cands})
    return out


def _ridge_fit(x: np.ndarray, y: np.ndarray, alpha: float):
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    w = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (y - y.mean()))
    return lambda q: ((q - mu) / sd) @ w + y.mean()


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    return 1.0 - float(((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def inputs(run: dict, decisions: list[int], which: str) -> list[float]:
    """One run's input vector: the policy's features and/or the candidates at `decisions`."""
    x = []
    for k in decisions:
        if which in ("features", "both", "features+sharpness"):
            x += run["features"][k]
        period = run["candidates"][k - 1]  # the period that ended at decision k
        if which in ("candidates", "both"):
            x += period
        if which in ("sharpness", "features+sharpness"):
            x += period[2:3]
    return x


def analyse(doc: dict, decisions: list[int], alpha: float) -> None:
    from scipy.stats import spearmanr

    pool = {t: r for t, r in doc["runs"].items() if not t.startswith("sel-")}
    sel = {t: r for t, r in doc["runs"].items() if t.startswith("sel-")}
    print(f"pool {len(pool)} tasks, selection {len(sel)} tasks, decisions {decisions}")
    print("| inputs | pool held-out R^2 | pool Spearman | selection R^2 | selection Spearman |")
    print("|---|---|---|---|---|")
    kinds = ("features", "candidates", "both", "sharpness", "features+sharpness")
    width = len(next(iter(doc["runs"].values()))[0]["candidates"][0])
    for which in kinds if width == len(CANDIDATES) else kinds[:3]:

        def xy(runs, which=which):
            x = np.array([inputs(r, decisions, which) for rs in runs for r in rs])
            y = np.array([r["u"] for rs in runs for r in rs])
            return np.nan_to_num(x), y

        names = sorted(pool)
        preds, ys = [], []
        for held in names:
            x, y = xy([pool[t] for t in names if t != held])
            xh, yh = xy([pool[held]])
            preds.append(_ridge_fit(x, y, alpha)(xh))
            ys.append(yh)
        pred, y = np.concatenate(preds), np.concatenate(ys)
        row = [_r2(y, pred), spearmanr(pred, y).statistic]
        if sel:
            x, yy = xy(list(pool.values()))
            xs, ys_ = xy(list(sel.values()))
            ps = _ridge_fit(x, yy, alpha)(xs)
            row += [_r2(ys_, ps), spearmanr(ps, ys_).statistic]
        print(f"| {which} | " + " | ".join(f"{v:.2f}" for v in row) + " |")


def analyse_fixed_start(doc: dict, decisions: list[int], alpha: float, start: float) -> None:
    """The read applied as a policy would need it: from each task's run started nearest `start`
    (one lr for every task), predict log10 of the task's tuned lr; against one level for all."""
    from scipy.stats import spearmanr

    tuned = doc["tuned"]
    pool = {t: r for t, r in doc["runs"].items() if not t.startswith("sel-")}
    sel = {t: r for t, r in doc["runs"].items() if t.startswith("sel-")}
    level = float(np.mean([math.log10(tuned[t]) for t in pool]))  # one level for every task

    def nearest(task: str) -> dict:
        u = math.log10(start / tuned[task])
        return min(doc["runs"][task], key=lambda r: abs(r["u"] - u))

    def fit(names):
        x = np.array([inputs(r, decisions, "features") for t in names for r in pool[t]])
        y = np.array([r["u"] for t in names for r in pool[t]])
        return _ridge_fit(np.nan_to_num(x), y, alpha)

    def read(f, task: str) -> float:  # log10 tuned lr = log10 lr - u
        r = nearest(task)
        return math.log10(r["lr"]) - float(
            f(np.nan_to_num(np.array([inputs(r, decisions, "features")])))[0]
        )

    names = sorted(pool)
    sets = {"pool (held out)": [(t, read(fit([n for n in names if n != t]), t)) for t in names]}
    if sel:
        f = fit(names)
        sets["selection"] = [(t, read(f, t)) for t in sorted(sel)]
    print(f"from lr {start:g}, decisions {decisions}, alpha {alpha:g}; one level: 10^{level:.2f}")
    print("| tasks | Spearman (read, tuned) | RMSE of the read (decades) | RMSE of one level |")
    print("|---|---|---|---|")
    for label, rows in sets.items():
        pred = np.array([p for _, p in rows])
        true = np.array([math.log10(tuned[t]) for t, _ in rows])
        rmse = math.sqrt(float(np.mean((pred - true) ** 2)))
        flat = math.sqrt(float(np.mean((level - true) ** 2)))
        rho = spearmanr(pred, true).statistic
        print(f"| {label} ({len(rows)}) | {rho:.2f} | {rmse:.2f} | {flat:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--families", nargs="+", default=["quadratic", "mnist1d"])
    parser.add_argument("--budget-scale", type=float, default=10.0)
    parser.add_argument("--data-scale", type=float, default=30.0)
    parser.add_argument("--suite", default="selection", help="tasks also probed ('' for none)")
    parser.add_argument("--offsets", type=float, nargs="+", default=list(OFFSETS))
    parser.add_argument("--decisions", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--alpha", type=float, default=10.0, help="ridge penalty")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="out/lr_probe.json")
    parser.add_argument("--analyse", action="store_true", help="read --out, run nothing")
    parser.add_argument(
        "--fixed-start",
        type=float,
        default=None,
        help="with --analyse: predict each task's tuned lr from its run started nearest this lr",
    )
    args = parser.parse_args()
    if args.workers < 1:
        parser.error(f"--workers={args.workers}: expected >= 1")
    if args.analyse:
        with open(args.out) as f:
            doc = json.load(f)
        if args.fixed_start is not None:
            analyse_fixed_start(doc, args.decisions, args.alpha, args.fixed_start)
        else:
            analyse(doc, args.decisions, args.alpha)
        return

    from lhopt.control.features import PROGRESS_TAUS
    from lhopt.meta.episode import tuned_cosine
    from lhopt.tasks import sample_training_set, suite

    configs = sample_training_set(
        args.seed, args.sample, tuple(args.families), args.budget_scale, args.data_scale
    )
    tasks = {f"sampled-{i:02d}-{c.family}": c for i, c in enumerate(configs)}
    if args.suite:
        tasks.update(suite(args.suite))
    tuned = {name: tuned_cosine(c, 0, bracketed=True).lr for name, c in tasks.items()}
    # Stage 10's spec (configs/default-stage10.toml).
    spec = {"schedule": "cosine", "progress_taus": PROGRESS_TAUS, "noise_floor": 1e-5}
    last = max(args.decisions)
    with ProcessPoolExecutor(args.workers) as pool:
        futures = {
            name: pool.submit(probe_runs, c.to_dict(), tuned[name], args.offsets, spec, last)
            for name, c in tasks.items()
        }
        runs = {name: f.result() for name, f in futures.items()}
    doc = {"args": vars(args), "tuned": tuned, "runs": runs}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(doc, f)
    analyse(doc, args.decisions, args.alpha)


if __name__ == "__main__":
    main()
