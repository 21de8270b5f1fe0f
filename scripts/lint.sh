#!/usr/bin/env bash
# Static checks of the Python tree (scripts/test.sh, hence CI, runs this first): ruff's lint rules
# and its formatting, as configured under [tool.ruff] in pyproject.toml, then mypy's type check
# ([tool.mypy]: the vecrank package). Fix with
#   .venv/bin/ruff format . && .venv/bin/ruff check --fix .
# RUFF= and MYPY= point at other executables (another checkout's venv, say).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
ruff="${RUFF:-.venv/bin/ruff}"
mypy="${MYPY:-.venv/bin/mypy}"
echo "==> lint: ruff check"
"$ruff" check .
echo "==> lint: ruff format --check"
"$ruff" format --check .
echo "==> lint: mypy"
"$mypy"
