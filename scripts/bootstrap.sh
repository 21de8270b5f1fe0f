#!/usr/bin/env bash
# Set up a checkout: a virtualenv in .venv with vecrank and its pinned dependencies, and the
# pinned Elasticsearch distribution (fetched with mvn, checksum-verified, cached per user).
# Safe to run again: it only does what is missing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "error: Python >= 3.11 needed ($python)" >&2; exit 1; }
command -v mvn >/dev/null || { echo "error: mvn (Maven) is needed to fetch Elasticsearch" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$python" -m venv .venv
fi
stamp=".venv/.vecrank-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  echo "==> installing vecrank and its pinned dependencies (the first time pulls torch, ~3 GB)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[test]"
  touch "$stamp"
fi
echo "==> Elasticsearch distribution"
.venv/bin/vecrank es install
