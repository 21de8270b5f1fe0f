#!/usr/bin/env bash
# One command from a fresh checkout: set everything up, start a local Elasticsearch and run the
# main job on the public MovieLens + TMDB data (read from ../shared/data, or --data-dir):
#   build and install the rescorer plugin -> prepare the generic files -> ingest the catalog (embedded)
#   -> ingest the ratings as events (users' histories and states) -> refresh the behavioural signals
#   -> fit the collaborative vectors and neighbours (next items version) -> evaluate the ranker with
#   rolling refits against the baselines (table, JSON and PNG in vecrank-eval/), train the serving
#   model on everything and activate it -> the same for search (the tags as a search log; the
#   search model) -> ranked recommendations and searches. Safe to run again: unchanged items are
#   skipped.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
data_dir="${1:-$root/../shared/data}"
bash scripts/bootstrap.sh
vecrank=.venv/bin/vecrank
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error

echo "==> starting the local Elasticsearch"
$vecrank es up
echo "==> building the vecrank rescorer plugin and restarting the node with it (the first build fetches Maven artifacts)"
$vecrank plugin install
echo "==> preparing MovieLens + TMDB from $data_dir"
summary="$(.venv/bin/python scripts/prepare_movielens.py --data-dir "$data_dir" --out-dir data-prepared --json)"
field() { echo "$summary" | .venv/bin/python -c "import json, sys; s = json.load(sys.stdin); print($1)"; }
template="$(field 's["template"]')"
read -r -a field_flags <<< "$(field '" ".join(f"--field {k}={v}" for k, v in s["field_types"].items())')"
live_template="$($vecrank index list --json | .venv/bin/python -c 'import json, sys; print(next((r["template"] for r in json.load(sys.stdin) if r["live"]), ""))')"
if [ -n "$live_template" ] && [ "$live_template" != "$template" ]; then
  echo "==> the live items index was built with the template '$live_template': building the next version with this one"
  $vecrank index reindex --template "$template" "${field_flags[@]}"
fi
echo "==> ingesting the catalog (the first run embeds ~9,700 movies on the CPU: a few minutes)"
$vecrank ingest items data-prepared/items.jsonl --template "$template" "${field_flags[@]}"
echo "==> ingesting the ratings as events"
$vecrank ingest events data-prepared/events.jsonl
echo "==> refreshing the signals"
$vecrank signals refresh
echo "==> fitting the collaborative vectors and neighbours (the next items version, then every user's state)"
$vecrank cf fit
echo "==> evaluating the ranker with rolling refits against the baselines, then training the serving model on everything"
$vecrank evaluate --facet genres --item-field year --item-field released --activate --out vecrank-eval
echo "==> evaluating search on the MovieLens tags (a search log) against BM25, the query kNN and their hybrid, then training the search model on everything and activating it"
$vecrank evaluate --task search --searches data-prepared/searches.jsonl --facet genres --item-field year --item-field released --activate --out vecrank-eval
echo "==> recommendations for user 1 (ranked in Python and explained, then ranked inside Elasticsearch), then user 1 searching \"space adventure\", then a cold start"
$vecrank recommend --user 1 -k 5 --show title,year,genres --explain
$vecrank recommend --user 1 -k 5 --show title,year,genres --rerank plugin
$vecrank recommend --user 1 --query "space adventure" -k 5 --show title,year,genres
$vecrank recommend --query "a heartwarming story about a dog" -k 5 --show title,year,genres
echo
echo "Done. Stop the node with: .venv/bin/vecrank es down"
