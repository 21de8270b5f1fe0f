"""Retrieval benchmark: kNN recall against exact search, and the latency of ``candidates()``.

On the MovieLens + TMDB catalog (9,742 movies, prepared by ``scripts/prepare_movielens.py``) and
its 610 users' ratings, on whichever Elasticsearch the vecrank settings point at (the local node
by default):

1. **Recall@k of the Elasticsearch kNN against exact search** (numpy, brute force over the same
   stored vectors, measured in the same run), with the users' profile vectors as queries, for
   several ``num_candidates`` and for the default index type (int8_hnsw) and the alternatives
   (each built as a new version by ``reindex`` without moving the alias: vectors are copied).
2. **Latency of ``Recommender.candidates(user=...)``** over at least 1,000 requests (the 610
   users, cycled), with the default settings: p50/p95/p99 and the share of the time spent in
   Elasticsearch calls versus Python.

Usage:
    .venv/bin/python scripts/bench_retrieve.py [--json] [--requests 1220] [--keep]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TYPES = ("int8_hnsw", "hnsw", "int4_hnsw", "bbq_hnsw")
DEFAULT_CANDIDATES = (100, 200, 400, 500, 1000)


def _adapter():
    spec = importlib.util.spec_from_file_location("prepare_movielens", REPO / "scripts" / "prepare_movielens.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load(client, settings, data_dir: Path, work: Path) -> dict:
    """Ingest the prepared catalog and ratings under ``settings.index_prefix`` (reused if present)."""
    from vecrank.ingest import indices
    from vecrank.ingest.cache import EmbeddingCache
    from vecrank.ingest.embed import Embedder
    from vecrank.ingest.events import ingest_events
    from vecrank.ingest.items import ItemSource, ingest_items
    from vecrank.localnode.paths import cache_dir
    from vecrank.rank.store import refresh_profiles

    adapter = _adapter()
    prepared = adapter.prepare(data_dir, work)
    if (
        indices.live_index(client, settings) is not None
        and client.count(index=settings.index("items"))["count"] == prepared["movies"]
    ):
        return prepared
    source = ItemSource(template=prepared["template"], field_types=prepared["field_types"])
    with EmbeddingCache(cache_dir() / "embeddings.sqlite") as cache:
        items = ingest_items(
            client, settings, prepared["items_path"], source, embedder=Embedder(), cache=cache, progress=False
        )
    events = ingest_events(client, settings, prepared["events_path"], progress=False, refresh_states=refresh_profiles)
    print(
        f"loaded {items.written} items ({items.embedded} embedded, {items.from_cache} from cache) and "
        f"{events.written} events for {prepared['users']} users",
        file=sys.stderr,
    )
    return prepared


def all_vectors(client, index: str) -> tuple[list[str], np.ndarray]:
    from elasticsearch import helpers

    ids, vecs = [], []
    for hit in helpers.scan(
        client, index=index, query={"query": {"match_all": {}}}, size=1000, _source=False, fields=["embedding"]
    ):
        ids.append(hit["_id"])
        vecs.append(hit["fields"]["embedding"])
    return ids, np.asarray(vecs, dtype=np.float32)


def profile_vectors(client, settings) -> list[tuple[str, np.ndarray]]:
    from elasticsearch import helpers

    out = []
    for hit in helpers.scan(client, index=settings.index("users"), size=500):
        interests = (hit["_source"].get("profile") or {}).get("interests") or []
        if interests:
            out.append((hit["_id"], np.asarray(interests[0]["vector"], dtype=np.float32)))
    return sorted(out)


def recall_table(
    client, settings, queries: list[tuple[str, np.ndarray]], *, k: int, candidates: list[int], types: list[str]
) -> list[dict]:
    """Recall@k of each index type and num_candidates against exact cosine top-k."""
    from vecrank.ingest import indices
    from vecrank.ingest.embed import Embedder
    from vecrank.ingest.reindex import reindex

    live = indices.live_index(client, settings)
    ids, matrix = all_vectors(client, live)
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    qs = np.stack([q for _, q in queries])
    qs = qs / np.linalg.norm(qs, axis=1, keepdims=True)
    started = time.perf_counter()
    exact_top = np.argsort(-(qs @ unit.T), axis=1)[:, :k]
    exact_ms = (time.perf_counter() - started) * 1000 / len(qs)
    truth = [{ids[j] for j in row} for row in exact_top]

    versions = {indices.spec_of(client, live).index_options.type: live}
    for name in indices.versions(client, settings).values():  # reuse versions a --keep run left
        kind = indices.spec_of(client, name).index_options.type
        if client.count(index=name)["count"] == len(ids):
            versions.setdefault(kind, name)
    model = indices.spec_of(client, live).model
    for kind in types:
        if kind in versions:
            continue
        options = indices.VectorIndexOptions(type=kind)
        summary = reindex(
            client, settings, embedder=Embedder(model), index_options=options, switch=False, verify_sample=0
        )
        versions[kind] = summary.target
    rows = []
    for kind in types:
        index = versions[kind]
        client.indices.forcemerge(index=index, max_num_segments=1)
        for num in candidates:
            if num < k:
                continue
            recalls, took = [], []
            for (_, q), want in zip(queries, truth):
                t = time.perf_counter()
                resp = client.search(
                    index=index,
                    knn={"field": "embedding", "query_vector": q.tolist(), "k": k, "num_candidates": num},
                    size=k,
                    source=False,
                )
                took.append((time.perf_counter() - t) * 1000)
                got = {h["_id"] for h in resp["hits"]["hits"]}
                recalls.append(len(got & want) / k)
            rows.append(
                {
                    "index_type": kind,
                    "num_candidates": num,
                    f"recall@{k}": round(statistics.mean(recalls), 4),
                    "min_recall": round(min(recalls), 3),
                    "p50_ms": round(statistics.median(took), 2),
                    "exact_numpy_ms_per_query": round(exact_ms, 3),
                }
            )
    return rows


def latency(client, settings, users: list[str], requests: int) -> dict:
    from vecrank.rank import Recommender

    rec = Recommender(client, settings)
    for user in users[:50]:  # warm caches and connections
        rec.candidates(user=user)
    totals, es_share, paths = [], [], {}
    for i in range(requests):
        result = rec.candidates(user=users[i % len(users)])
        totals.append(result.timings_ms["total"])
        es_share.append(result.timings_ms["elasticsearch"] / max(result.timings_ms["total"], 1e-9))
        paths[result.path] = paths.get(result.path, 0) + 1
    q = np.percentile(totals, [50, 95, 99])
    return {
        "requests": requests,
        "distinct_users": len(users),
        "k": rec.config.k,
        "num_candidates": rec.config.candidates_for(rec.config.k),
        "p50_ms": round(float(q[0]), 2),
        "p95_ms": round(float(q[1]), 2),
        "p99_ms": round(float(q[2]), 2),
        "elasticsearch_share": round(statistics.mean(es_share), 3),
        "python_share": round(1 - statistics.mean(es_share), 3),
        "paths": paths,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--prefix", default="benchret", help="index prefix for the benchmark's indices")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--candidates", default=",".join(map(str, DEFAULT_CANDIDATES)))
    parser.add_argument("--types", default=",".join(DEFAULT_TYPES))
    parser.add_argument("--requests", type=int, default=1220, help="candidates() calls timed (users cycled)")
    parser.add_argument("--keep", action="store_true", help="keep the indices for another run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no weight-loading progress bars

    from vecrank.client import make_client
    from vecrank.settings import Settings

    settings = dataclasses.replace(Settings.load(), index_prefix=args.prefix)
    client = make_client(settings)
    with tempfile.TemporaryDirectory() as work:
        load(client, settings, args.data_dir, Path(work))
    queries = profile_vectors(client, settings)
    recall = recall_table(
        client,
        settings,
        queries,
        k=args.k,
        candidates=[int(c) for c in args.candidates.split(",")],
        types=args.types.split(","),
    )
    lat = latency(client, settings, [u for u, _ in queries], args.requests)
    result = {"queries": len(queries), "recall": recall, "latency": lat, "machine": f"{os.cpu_count()} cores"}
    if not args.keep:
        names = list(client.indices.get(index=f"{args.prefix}-*", expand_wildcards="all"))
        if names:
            client.indices.delete(index=",".join(names))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"kNN recall@{args.k} against exact numpy search, {len(queries)} user-profile queries")
    print(f"{'index type':<11} {'num_cand':>8} {'recall':>7} {'min':>6} {'p50 ms':>7}")
    for row in recall:
        print(
            f"{row['index_type']:<11} {row['num_candidates']:>8} {row[f'recall@{args.k}']:>7.4f} "
            f"{row['min_recall']:>6.3f} {row['p50_ms']:>7.2f}"
        )
    print(f"exact numpy search: {recall[0]['exact_numpy_ms_per_query']:.3f} ms/query")
    print(
        f"candidates(user): {lat['requests']} requests over {lat['distinct_users']} users, k={lat['k']}, "
        f"num_candidates={lat['num_candidates']}: p50 {lat['p50_ms']} ms, p95 {lat['p95_ms']} ms, "
        f"p99 {lat['p99_ms']} ms; {lat['elasticsearch_share']:.0%} in Elasticsearch calls, "
        f"{lat['python_share']:.0%} in Python; paths {lat['paths']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
