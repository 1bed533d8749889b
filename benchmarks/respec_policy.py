"""Write a policy file's network under another start-over threshold, or with another file's
input normaliser (issue 19): what a stage's network reads as under the shipped spec's
`overfit_gap`, and how much of a read is the normaliser's.

Usage: python benchmarks/respec_policy.py SRC DST [--overfit-gap G] [--norm-from FILE]
(`--overfit-gap` defaults to the shipped policy's.)
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from lhopt.control.policy_file import load_policy, save_policy_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="the policy file whose network is read")
    parser.add_argument("dst", help="the policy file written")
    parser.add_argument("--overfit-gap", type=float, default=None)
    parser.add_argument("--norm-from", default=None, help="a policy file whose normaliser to use")
    args = parser.parse_args()
    policy = load_policy(args.src)
    gap = load_policy("default").spec.overfit_gap if args.overfit_gap is None else args.overfit_gap
    if args.norm_from:
        other = load_policy(args.norm_from)
        for name in ("obs_norm", "priv_norm"):
            getattr(policy, name).load_state_dict(getattr(other, name).state_dict())
    meta = torch.load(args.src, map_location="cpu", weights_only=True).get("meta")
    spec = replace(policy.spec, overfit_gap=gap)
    save_policy_file(policy, args.dst, {"meta": meta} if meta else None, spec=spec)
    print(f"wrote {args.dst}: overfit_gap {gap:g}, normaliser from {args.norm_from or args.src}")


if __name__ == "__main__":
    main()
