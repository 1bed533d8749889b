"""Average several policy files' networks into one file (a "soup", issue 19): the weights and
the input normalisers' statistics of networks continued from one parent, averaged entry by
entry, under the members' common spec and start. Continuations of one network spread by about
0.1 per suite from seed to seed (docs/experiments.md); their average asks what they share.

Usage: python benchmarks/soup_policy.py DST SRC [SRC ...] [--weights W ...]
(`--weights`: one non-negative number per SRC, normalised to sum 1; equal by default.) The
members must share the architecture, the feature/action layout, the spec and the start; the
file written records its members' paths and sha256 under `soup`.
"""

from __future__ import annotations

import argparse
import hashlib
import math
from pathlib import Path

from lhopt.control.policy_file import load_policy, save_policy_file


def soup(paths: list[str], weights: list[float] | None = None):
    """The members' networks averaged (weights normalised to sum 1); a ValueError names the
    first member that differs from the first in architecture, spec, start or entries."""
    if not paths:
        raise ValueError("soup: no policy files given")
    weights = [1.0] * len(paths) if weights is None else list(weights)
    if len(weights) != len(paths):
        raise ValueError(f"soup: {len(weights)} weights for {len(paths)} policy files")
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"soup: weights {weights} must be finite, >= 0 and not all 0")
    members = [load_policy(p) for p in paths]
    first = members[0]
    for path, m in zip(paths[1:], members[1:], strict=True):
        for what, a, b in (
            ("architecture", first.architecture(), m.architecture()),
            ("spec", first.spec, m.spec),
            ("start (initial)", first.initial, m.initial),
            ("entries", list(first.state_dict()), list(m.state_dict())),
            ("input mask", first.input_mask.tolist(), m.input_mask.tolist()),
        ):
            if a != b:
                raise ValueError(f"soup: {path!r} differs from {paths[0]!r} in its {what}")
    total = sum(weights)
    states = [m.state_dict() for m in members]
    averaged = {
        key: sum(w / total * s[key].double() for w, s in zip(weights, states, strict=True)).to(
            value.dtype
        )
        for key, value in states[0].items()
    }
    first.load_state_dict(averaged)
    return first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dst", help="the policy file written")
    parser.add_argument("src", nargs="+", help="the policy files averaged")
    parser.add_argument("--weights", nargs="+", type=float, default=None)
    args = parser.parse_args()
    try:
        policy = soup(args.src, args.weights)
    except ValueError as e:
        parser.error(str(e))
    record = [
        {"path": p, "sha256": hashlib.sha256(Path(p).read_bytes()).hexdigest()} for p in args.src
    ]
    save_policy_file(policy, args.dst, {"soup": record})
    print(f"wrote {args.dst}: the average of {len(args.src)} networks, start {policy.initial}")


if __name__ == "__main__":
    main()
