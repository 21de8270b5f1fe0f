#!/usr/bin/env bash
# One command from a fresh checkout: set everything up, start a local Elasticsearch and run the
# main job against it. Today the job is: node up, cluster status. Later steps (ingest the public
# MovieLens + TMDB data, train, evaluate) join here as they land.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/bootstrap.sh
vecrank=.venv/bin/vecrank
echo "==> starting the local Elasticsearch"
$vecrank es up
echo "==> cluster status"
$vecrank es status
echo
echo "Done. Stop the node with: .venv/bin/vecrank es down"
