#!/usr/bin/env bash
# Static checks of the Python tree (scripts/test.sh, hence CI, runs this first): ruff's lint rules
# and its formatting, as configured under [tool.ruff] in pyproject.toml. Fix with
#   .venv/bin/ruff format . && .venv/bin/ruff check --fix .
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
ruff="${RUFF:-.venv/bin/ruff}"
echo "==> lint: ruff check"
"$ruff" check .
echo "==> lint: ruff format --check"
"$ruff" format --check .
