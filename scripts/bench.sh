#!/usr/bin/env bash
# The main job: install lhopt, then run the quick benchmark: the shipped policy (`lhopt`) against
# the five baselines on the `quick` suite; the table is printed, results and figures go to
# out/quick. Extra arguments go to `lhopt bench`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$(bash "$root/scripts/setup.sh" bench | tail -n 1)"
cd "$root"
"$venv/bin/lhopt" bench --suite quick --out out/quick "$@"
