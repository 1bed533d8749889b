"""Writing a benchmark's results: results.json, report.md, and figures (docs/bench.md)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from lhopt.bench.benchmark import main_run
from lhopt.bench.runner import job_key
from lhopt.extras import require


def _fmt(v, lower=False, digits=2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return (">" if lower else "") + f"{v:.{digits}f}"


def summary_table(doc: dict) -> str:
    """Rows: optimizers; columns: baselines; cells: geomean speedup [its 90% seed-bootstrap
    interval] (min, tasks below 1)."""
    bases = doc["baselines"]
    lines = [
        "| optimizer | " + " | ".join(f"vs {b}" for b in bases) + " |",
        "|---|" + "---|" * len(bases),
    ]
    for x in doc["optimizers"]:
        cells = []
        for b in bases:
            s = doc["summary"][x].get(b)
            if s is None:
                cells.append("—")
                continue
            flag = "*" if s["lower_bounds"] else ""
            band = s.get("interval")  # absent from results written before it existed
            spread = f" [{band[0]:.2f}, {band[1]:.2f}]" if band else ""
            cells.append(
                f"{_fmt(s['geomean'])}{flag}{spread} "
                f"(min {_fmt(s['min'])}, {s['below_1']}/{s['tasks']} <1)"
            )
        lines.append(f"| {x} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def task_table(doc: dict, base: str = "adamw") -> str:
    """Per task: each optimizer's speedup and wall-clock speedup over `base`, and test metric."""
    lines = [
        f"| task | optimizer | speedup vs {base} | wall-clock vs {base} | test metrics at T "
        "| status |",
        "|---|---|---|---|---|---|",
    ]
    for name, t in doc["tasks"].items():
        for x, o in t["optimizers"].items():
            over = o["over"].get(base)
            sp = "—" if over is None else _fmt(over["speedup"], over["lower_bound"])
            wall = "—" if over is None else _fmt(over["wall_speedup"], over["lower_bound"])
            test = o["test_at_T"] or {}
            metrics = ", ".join(f"{k} {v:.4g}" for k, v in test.items()) or "n/a"
            status = ",".join(sorted(set(o["status"])))
            lines.append(f"| {name} | {x} | {sp} | {wall} | {metrics} | {status} |")
    return "\n".join(lines)


def tuned_table(doc: dict) -> str:
    """Per task: what a tie with `adamw-cosine-tuned` reads over it, beside each optimizer's
    speedup over it (docs/bench.md, "What a tie reads")."""
    base = "adamw-cosine-tuned"
    xs = [x for x in doc["optimizers"] if x != base]
    lines = [
        "| task | a tie | " + " | ".join(xs) + " |",
        "|---|---|" + "---|" * len(xs),
    ]
    for name, t in doc["tasks"].items():
        cells = []
        for x in xs:
            over = t["optimizers"][x]["over"].get(base)
            cells.append("—" if over is None else _fmt(over["speedup"], over["lower_bound"]))
        tie = _fmt((t.get("tie") or {}).get("speedup"))
        lines.append(f"| {name} | {tie} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(doc: dict) -> str:
    seeds = len(doc["seeds"])
    parts = [
        f"# Benchmark: suite `{doc['suite']}`",
        "",
        f"{len(doc['tasks'])} tasks, {seeds} seed(s), optimizers {', '.join(doc['optimizers'])}; "
        f"wall time {doc['wall_time_s']:.0f} s."
        + (
            f" `lhopt` policy: `{doc['policy']}`."
            if doc.get("policy", "default") != "default"
            else ""
        ),
        "",
        "## Speedups (geometric mean over tasks of the per-task geometric mean over seeds)",
        "",
        "Speedup of the row over the column baseline (docs/evaluation.md): the baseline's steps to "
        "reach the row's best validation loss at T, over T. * = some task's baseline never got "
        "there within 2T (counted as 2, a lower bound). [a, b] = the 90% interval of that "
        "figure over the seeds (each task's seeds resampled): what a rerun with other seeds, or "
        "on another CPU, may read. `adamw-cosine-tuned` costs five times the compute of the "
        "others.",
        "",
        summary_table(doc),
        "",
    ]
    tie = doc.get("tie")  # absent from results written before it existed
    if tie and tie["tasks"]:
        parts += [
            "## Per task, against adamw-cosine-tuned",
            "",
            "A tie = what a run identical to `adamw-cosine-tuned` reads over it: the share of T "
            "at which its best validation loss comes, since the speedup charges T wherever the "
            "row reached its best (docs/bench.md). Over this suite a tie reads "
            f"{_fmt(tie['geomean'])} (min {_fmt(tie['min'])}, {tie['below_1']}/{tie['tasks']} "
            "<1).",
            "",
            tuned_table(doc),
            "",
        ]
    if "adamw" in doc["baselines"]:
        parts += ["## Per task, against adamw", "", task_table(doc, "adamw"), ""]
    if doc["errors"]:
        parts += ["## Runs that crashed", ""]
        parts += [
            f"- {e['job']['task']} seed {e['job']['seed']} {e['job']['optimizer']} "
            f"(lr {e['job']['lr']}, x{e['job']['multiple']}): {e['error']}"
            for e in doc["errors"]
        ]
        parts.append("")
    parts += [
        "Figures: `curves.png` (validation loss; T marked), `hparams.png` (every hyperparameter "
        "a run moved: the learning rates, and what the policy steers).",
        "",
    ]
    return "\n".join(parts)


def _mark_budget(ax, T: int) -> None:
    """The task's budget T: a dotted line, labelled."""
    ax.axvline(T, color="grey", ls=":", lw=0.8, label="T (budget)")
    ax.text(T, 0.98, " T", transform=ax.get_xaxis_transform(), va="top", fontsize=8, color="grey")


def moved_hparams(doc: dict) -> list[str]:
    """The hyperparameters some run of the report changed over its steps (the lr always)."""
    names = ["lr"]
    for r in doc["runs"]:
        for k, v in (r.get("hparams") or {}).items():
            if k == "adamw_lr":  # drawn in the lr column
                continue
            finite = [x for x in v if x is not None and math.isfinite(x)]
            if k not in names and finite and min(finite) != max(finite):
                names.append(k)
    return names


def figures(doc: dict, out: Path) -> list[Path]:
    """`curves.png`: each task's validation loss per optimizer; `hparams.png`: one row per task,
    one column per hyperparameter some run moved (`moved_hparams`), each optimizer that records
    it. T is marked on both."""
    require("matplotlib", "bench").use("Agg")
    plt = require("matplotlib.pyplot", "bench")

    results = {job_key(r["job"]): r for r in doc["runs"]}
    names = list(doc["tasks"])
    runs = {
        name: {
            x: run
            for x in doc["optimizers"]
            if (run := main_run(results, name, doc["seeds"][0], x)) and not run.get("error")
        }
        for name in names
    }
    paths = []

    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        for x, run in runs[name].items():
            ax.plot(run["steps"], run["val"], label=x, lw=1.2)
        _mark_budget(ax, doc["tasks"][name]["budget"])
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.set_ylabel("validation loss")
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    paths.append(_save(plt, fig, axes.flat[0], out / "curves.png"))

    hparams = moved_hparams(doc)
    fig, axes = plt.subplots(
        len(names), len(hparams), figsize=(3.2 * len(hparams), 2.4 * len(names)), squeeze=False
    )
    for row, name in zip(axes, names, strict=True):
        for ax, h in zip(row, hparams, strict=True):
            for i, x in enumerate(doc["optimizers"]):
                recorded = runs[name].get(x, {}).get("hparams", {})
                values = recorded.get(h)
                # A learned run's lr under the trust ratio is relative (dashed); its lr in
                # AdamW's units is the one that compares with the baselines' (solid).
                relative = h == "lr" and "adamw_lr" in recorded
                if relative:
                    v = [math.nan if y is None else y for y in recorded["adamw_lr"]]
                    ax.plot(runs[name][x]["steps"], v, label=x, lw=1.2, color=f"C{i}")
                if values:
                    v = [math.nan if y is None else y for y in values]
                    style = {"lw": 0.8, "ls": "--"} if relative else {"lw": 1.2, "label": x}
                    ax.plot(runs[name][x]["steps"], v, color=f"C{i}", **style)
            _mark_budget(ax, doc["tasks"][name]["budget"])
            both = h == "lr" and any(
                "adamw_lr" in r.get("hparams", {}) for r in runs[name].values()
            )
            title = "lr (dashed: relative to the weights)" if both else h
            ax.set_title(f"{name}: {title}", fontsize=8)
            ax.set_xlabel("step", fontsize=8)
            finite = [y for line in ax.get_lines()[:-1] for y in line.get_ydata() if y > 0]
            if h != "clip_fraction" and finite:
                ax.set_yscale("log")
    paths.append(_save(plt, fig, axes.flat[0], out / "hparams.png"))
    return paths


def _save(plt, fig, first_ax, path: Path) -> Path:
    handles, labels = first_ax.get_legend_handles_labels()
    # as many entries per row as the figure's width holds (about 1.6 inches each)
    ncol = max(1, min(len(labels), int(fig.get_figwidth() / 1.6)))
    rows = math.ceil(len(labels) / ncol)
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8)
    fig.tight_layout(rect=(0, min(0.6, 0.3 * rows / fig.get_figheight() + 0.01), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(doc: dict, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"results": out / "results.json", "report": out / "report.md"}
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1, default=float))
    tmp.replace(paths["results"])
    paths["report"].write_text(markdown(doc))
    for p in figures(doc, out):
        paths[p.stem] = p
    return paths
