"""Write a policy file's network under another start-over threshold, with another file's
input normaliser, or from other initial hyperparameters (issue 19): what a stage's network
reads as under the shipped spec's `overfit_gap` or with the validation loss hidden from its
features, how much of a read is the normaliser's, and a
network run under a CIAO setting or a schedule shape it was not trained with (`--initial
lamb_power=0.5`, `--schedule linear`).

Usage: python benchmarks/respec_policy.py SRC DST [--overfit-gap G] [--fallback-cut C]
    [--hide-val true|false]
    [--schedule SHAPE] [--horizon-power P] [--matrix-decay E0 FACTOR] [--table-decay FACTOR]
    [--start-over-batch-norm true|false] [--norm-from FILE] [--spec-from FILE]
    [--initial NAME=VALUE ...] [--keep-margin M]
(`--overfit-gap` defaults to the shipped policy's, `--hide-val` to SRC's; `--initial` replaces
those entries of the file's `initial`. `--spec-from FILE`: FILE's spec and start with SRC's
network, normaliser and training counters, the other options applied after: how a stage's
network is read, and shipped, as the shipped file runs. `--keep-margin M` adds M to the lr
head's "keep" logit: the greedy policy then moves the lr only where a move's logit beats keep's
by more than M.)
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace

import torch

from lhopt.control.actions import ActionSpace
from lhopt.control.policy_file import actor_layout, load_policy, save_policy_file
from lhopt.optim import schedules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="the policy file whose network is read")
    parser.add_argument("dst", help="the policy file written")
    parser.add_argument("--overfit-gap", type=float, default=None)
    parser.add_argument(
        "--fallback-cut",
        type=float,
        default=None,
        metavar="C",
        help="past the start-over window, fall back to the best state at C times the lr "
        "(0: off; default: SRC's)",
    )
    parser.add_argument(
        "--hide-val",
        choices=("true", "false"),
        default=None,
        help="the policy's features read no validation loss (only the start-over rule does)",
    )
    parser.add_argument(
        "--schedule",
        choices=sorted(schedules.SCHEDULES),
        default=None,
        help="the schedule shape under the policy's base lr (default: SRC's)",
    )
    parser.add_argument(
        "--horizon-power",
        type=float,
        default=None,
        help="p of the lr's factor (T / 1000)^-p (default: SRC's)",
    )
    parser.add_argument(
        "--no-decay-vectors",
        choices=("true", "false"),
        default=None,
        help="biases and norms start in a group without weight decay (default: SRC's)",
    )
    parser.add_argument(
        "--matrix-decay",
        nargs=2,
        type=float,
        default=None,
        metavar=("E0", "FACTOR"),
        help="below E0 passes over the data, dense matrices decay by FACTOR times the weight "
        "decay (E0 0: off; default: SRC's)",
    )
    parser.add_argument(
        "--table-decay",
        type=float,
        default=None,
        metavar="FACTOR",
        help="embedding tables decay by FACTOR times the weight decay (1: off; default: SRC's)",
    )
    parser.add_argument(
        "--start-over-batch-norm",
        choices=("true", "false"),
        default=None,
        help="false: the start-over rule stays off for a model with batch norm (default: SRC's)",
    )
    parser.add_argument("--norm-from", default=None, help="a policy file whose normaliser to use")
    parser.add_argument(
        "--spec-from",
        default=None,
        metavar="FILE",
        help="a policy file whose spec and start SRC's network runs under (default: SRC's own)",
    )
    parser.add_argument(
        "--initial",
        nargs="+",
        default=[],
        metavar="NAME=VALUE",
        help="CIAO hyperparameters the policy starts from (a number, true or false)",
    )
    parser.add_argument(
        "--keep-margin",
        type=float,
        default=0.0,
        metavar="M",
        help="add M to the lr head's 'keep' logit (a move must beat keep by more than M)",
    )
    args = parser.parse_args()
    if not math.isfinite(args.keep_margin):
        parser.error(f"--keep-margin {args.keep_margin}: expected a finite number")
    changes = {}
    for item in args.initial:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--initial {item!r}: expected NAME=VALUE")
        words = {"true": True, "false": False}
        try:
            changes[name] = words[value.lower()] if value.lower() in words else float(value)
        except ValueError:
            parser.error(f"--initial {item!r}: expected a number, true or false")
    policy = load_policy(args.src)
    if args.spec_from:
        other = load_policy(args.spec_from)
        mine, theirs = actor_layout(policy.spec), actor_layout(other.spec)
        if any(mine[k] != theirs[k] for k in ("features", "nvec")):
            parser.error(
                f"--spec-from {args.spec_from}: its spec gives the network other features or "
                f"actions than {args.src}'s"
            )
        policy.spec, policy.initial = other.spec, dict(other.initial)
        default_gap = other.spec.overfit_gap
    else:
        default_gap = load_policy("default").spec.overfit_gap
    gap = default_gap if args.overfit_gap is None else args.overfit_gap
    if args.norm_from:
        other = load_policy(args.norm_from)
        for name in ("obs_norm", "priv_norm"):
            getattr(policy, name).load_state_dict(getattr(other, name).state_dict())
    meta = torch.load(args.src, map_location="cpu", weights_only=True).get("meta")
    cut = {} if args.fallback_cut is None else {"fallback_cut": args.fallback_cut}
    try:  # the spec checks the ranges, and that a cut has a gap to read
        spec = replace(policy.spec, overfit_gap=gap, **cut)
    except ValueError as e:
        parser.error(f"--overfit-gap / --fallback-cut: {e}")
    if args.hide_val is not None:
        spec = replace(spec, hide_val=args.hide_val == "true")
    if args.schedule is not None:
        spec = replace(spec, schedule=args.schedule)
    if args.no_decay_vectors is not None:
        spec = replace(spec, no_decay_vectors=args.no_decay_vectors == "true")
    if args.matrix_decay is not None:
        below, factor = args.matrix_decay
        try:  # the spec checks the ranges
            spec = replace(spec, matrix_decay_below=below, matrix_decay_factor=factor)
        except ValueError as e:
            parser.error(f"--matrix-decay: {e}")
    if args.table_decay is not None:
        try:  # the spec checks the range
            spec = replace(spec, table_decay_factor=args.table_decay)
        except ValueError as e:
            parser.error(f"--table-decay: {e}")
    if args.start_over_batch_norm is not None:
        spec = replace(spec, start_over_batch_norm=args.start_over_batch_norm == "true")
    if args.horizon_power is not None:
        try:  # the spec checks its range
            spec = replace(spec, horizon_power=args.horizon_power)
        except ValueError as e:
            parser.error(f"--horizon-power: {e}")
    if args.keep_margin:
        if spec.heads and "lr" not in spec.heads:  # empty: every head is controlled
            parser.error(f"--keep-margin: {args.src}'s spec controls no lr head ({spec.heads})")
        space = ActionSpace()
        if tuple(policy.nvec) != space.nvec:
            parser.error(f"--keep-margin: {args.src}'s actions {policy.nvec} are not {space.nvec}")
        names = [head.hparam for head in space.heads]
        lr = names.index("lr")
        with torch.no_grad():
            policy.heads.bias[sum(space.nvec[:lr]) + space.heads[lr].keep_index] += args.keep_margin
    initial = {**policy.initial, **changes}
    try:
        save_policy_file(
            policy, args.dst, {"meta": meta} if meta else None, spec=spec, initial=initial
        )
    except ValueError as e:
        parser.error(f"--initial: {e}")
    print(
        f"wrote {args.dst}: overfit_gap {gap:g}, fallback_cut {spec.fallback_cut:g}, "
        f"hide_val {spec.hide_val}, "
        f"schedule {spec.schedule}, horizon_power {spec.horizon_power:g}, "
        f"no_decay_vectors {spec.no_decay_vectors}, "
        f"matrix_decay below {spec.matrix_decay_below:g} at {spec.matrix_decay_factor:g}, "
        f"table_decay {spec.table_decay_factor:g}, "
        f"start_over_batch_norm {spec.start_over_batch_norm}, "
        f"normaliser from {args.norm_from or args.src}, "
        f"initial {initial}"
    )


if __name__ == "__main__":
    main()
