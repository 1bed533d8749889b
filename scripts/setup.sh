#!/usr/bin/env bash
# Creates (or reuses) the virtual environment and installs lhopt into it, from nothing.
# torch is pinned first: a bare torch requirement on a machine without it pulls a CUDA build.
# LHOPT_VENV chooses the environment's folder (default: .venv in the repository).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${LHOPT_VENV:-$root/.venv}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root[dev]"
echo "$venv"
