#!/usr/bin/env bash
# Run the whole test suite (CI runs exactly this). Sets up what is missing first; starts a local
# Elasticsearch for the tests unless VECRANK_ES_URL points at one or Docker answers.
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not slow" -x
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/bootstrap.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python -m pytest "$@"
