#!/usr/bin/env bash
# Run the whole test suite (CI runs exactly this). Sets up what is missing first; starts a local
# Elasticsearch for the tests unless VECRANK_ES_URL points at one or Docker answers.
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not slow" -x
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/bootstrap.sh
bash scripts/lint.sh
# tests/test_page.py drives the search page in Debian's chromium (through chromium-driver): install
# both where this script can (root with apt-get); VECRANK_TEST_NO_BROWSER=1 skips that test instead.
if [ "${VECRANK_TEST_NO_BROWSER:-}" != 1 ] && ! { command -v chromium && command -v chromedriver; } >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing chromium and chromium-driver for the search page test (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq chromium chromium-driver >/dev/null \
      || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; } \
      || echo "warning: chromium could not be installed; tests/test_page.py will fail" >&2
  else
    echo "warning: chromium and chromium-driver are missing and this script cannot install them (it needs root" \
         "and apt-get); tests/test_page.py will fail: apt-get install chromium chromium-driver, or set" \
         "VECRANK_TEST_NO_BROWSER=1 to skip it" >&2
  fi
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python -m pytest "$@"
