#!/usr/bin/env bash
# The main job: install lhopt, then run the quick demonstration.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$(bash "$root/scripts/setup.sh" | tail -n 1)"
"$venv/bin/lhopt" demo "$@"
