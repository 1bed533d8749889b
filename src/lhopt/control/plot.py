"""`lhopt.plot_history`: what the policy did in a run, in one figure.

    opt = lhopt.LearnedOptimizer(model.parameters(), total_steps=T)
    ...  # train
    lhopt.plot_history(opt.history, "schedule.png", total_steps=T)

The first panel holds the losses each decision saw (mean train loss of the period that ended,
latest validation loss) with the restart-register loads and swaps marked; then one panel per
controlled hyperparameter, each param group's value held from one decision to the next.
matplotlib comes with lhopt's `bench` extra; it is imported only when a figure is drawn.
"""

from __future__ import annotations

import math
from pathlib import Path

from lhopt.control.actions import OFFICIAL_HEADS
from lhopt.extras import require

_KINDS = {h.hparam: h.kind for h in OFFICIAL_HEADS}


def _groups(record: dict) -> list[dict]:
    return record.get("groups") or [record["hparams"]]  # records saved before "groups" existed


def _value(v) -> float:
    return math.nan if v is None else float(v)


def plot_history(
    history: list[dict], path: str | Path, *, total_steps: int | None = None, title: str = ""
) -> Path:
    """Draw every controlled hyperparameter of every param group over the steps, with the losses,
    into the image `path` (any format matplotlib writes: .png, .pdf, .svg). `history` is
    `LearnedOptimizer.history` (or `Controller.history`); `total_steps` extends the last values
    to the end of the run. Returns the path."""
    if not history:
        raise ValueError("history is empty: no decision was taken yet")
    require("matplotlib", "bench")
    from matplotlib.figure import Figure  # no pyplot: the user's backend is left alone

    steps = [r["step"] for r in history]
    end = total_steps if total_steps is not None and total_steps > steps[-1] else None
    xs = steps + ([end] if end is not None else [])

    def held(values: list[float]) -> list[float]:
        return values + ([values[-1]] if end is not None else [])

    names = list(dict.fromkeys(k for r in history for g in _groups(r) for k in g))
    n_groups = max(len(_groups(r)) for r in history)
    panels = 1 + len(names)
    cols = min(3, panels)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(4.2 * cols, 2.8 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).flat

    ax = axes[0]
    for key, label in (("train_loss", "train loss (period mean)"), ("val_loss", "val loss")):
        values = [_value(r.get(key)) for r in history]
        if any(math.isfinite(v) for v in values):
            ax.plot(steps, values, marker=".", label=label)
    for r in history:
        op = str(r.get("register", "none")).split()[0]
        if op in ("load", "swap"):
            ax.axvline(r["step"], color="tab:red" if op == "load" else "tab:purple", lw=0.6)
    ax.set_title("losses (red: register load, purple: swap)", fontsize=9)
    ax.set_xlabel("step")
    if ax.has_data():
        ax.legend(fontsize=7)

    for ax, name in zip(axes[1:], names, strict=False):
        for gi in range(n_groups):
            values = [
                _value(_groups(r)[gi].get(name)) if gi < len(_groups(r)) else math.nan
                for r in history
            ]
            label = f"group {gi}" if n_groups > 1 else None
            ax.plot(xs, held(values), drawstyle="steps-post", label=label)
        finite = [
            _value(g.get(name))
            for r in history
            for g in _groups(r)
            if math.isfinite(_value(g.get(name)))
        ]
        if _KINDS.get(name, "scale") == "scale" and finite and min(finite) > 0:
            ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        if n_groups > 1:
            ax.legend(fontsize=7)
    for ax in axes[panels:]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path
