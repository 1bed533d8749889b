#!/usr/bin/env bash
# Creates (or reuses) the virtual environment and installs lhopt into it, from nothing.
# Usage: setup.sh [EXTRAS]   (default "dev": everything and the test tools; "bench" for the
# benchmark alone). torch is pinned first: a bare torch requirement pulls a CUDA build.
# LHOPT_VENV chooses the environment's folder (default: .venv in the repository). pip runs only
# when pyproject.toml or the extras changed since the last install into that environment.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${LHOPT_VENV:-$root/.venv}"
extras="${1:-dev}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
stamp="$venv/.lhopt-install-$extras"
want="$(cat "$root/pyproject.toml" | sha256sum | cut -d' ' -f1) $root"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! "$venv/bin/python" -c "import lhopt" 2>/dev/null; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "torch==2.13.0" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root[$extras]" >&2
    echo "$want" > "$stamp"
fi
echo "$venv"
