"""End-to-end ``Ranker.recommend()`` latency: retrieval, features and model, per request.

Runs on indices that already hold a catalog, events and an active model (for example those that
``bench_retrieve.py --keep`` and ``vecrank --index-prefix benchret evaluate --activate`` leave):
at least 1,000 requests over the users, cycled, after a warm-up; prints p50/p95/p99 of the total
and the mean split across retrieval, features and model, next to the same requests' candidate
retrieval alone (the baseline measured in the same run), their ratios, and the Elasticsearch
round trips per request (the client's calls, counted). The pool is the one the model was trained
with (its ``training.config.pool``). With ``--searches FILE`` (a search log, as
``evaluate --task search`` reads) every request also carries search text, the log's queries
cycled over the users: the profile+query path, ranked by the active search model
(``<model-id>-search``), against ``candidates(user, query, k)`` alone.

Usage:
    .venv/bin/python scripts/bench_recommend.py --prefix vecrank [--requests 1220] [--rerank auto|python|plugin]
        [--searches data-prepared/searches.jsonl] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys

import numpy as np


def connect(prefix: str, model_id: str):
    """``(settings, client, model, users)`` for the indices of ``prefix``: the active version of
    ``model_id`` and every user id, sorted (the requests cycle over them)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from elasticsearch import helpers

    from vecrank.client import make_client
    from vecrank.rank.model import Registry
    from vecrank.settings import Settings

    settings = dataclasses.replace(Settings.load(), index_prefix=prefix)
    client = make_client(settings)
    model = Registry(client, settings).get(model_id)
    users = sorted(h["_id"] for h in helpers.scan(client, index=settings.index("users"), size=500, _source=False))
    return settings, client, model, users


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", default="benchret")
    parser.add_argument("--model-id", default="vecrank")
    parser.add_argument("--requests", type=int, default=1220)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--rerank", choices=["auto", "python", "plugin"], default="auto")
    parser.add_argument("--searches", default=None, help="a search log: requests with its queries (profile+query)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    settings, client, model, users = connect(args.prefix, args.model_id)

    from vecrank.rank import Recommender
    from vecrank.rank.model import Registry, search_model_id
    from vecrank.rank.ranker import Ranker
    from vecrank.rank.search_eval import normalise_query, read_searches

    search = Registry(client, settings).get(search_model_id(args.model_id)) if args.searches else None
    texts = sorted({normalise_query(s.query) for s in read_searches(args.searches)}) if args.searches else [None]
    ranker = Ranker(Recommender(client, settings), model, rerank=args.rerank, search_model=search)

    def query(i: int) -> str | None:
        return texts[i % len(texts)]

    calls = [0]
    # Counted at the transport, which every client.options(...) copy shares.
    inner = client.transport.perform_request

    def counted(*a, **kw):
        calls[0] += 1
        return inner(*a, **kw)

    for i, user in enumerate(users[:50]):
        ranker.recommend(user=user, query=query(i), k=args.k)
    client.transport.perform_request = counted
    parts: dict[str, list[float]] = {"total": [], "retrieval": [], "features": [], "model": []}
    paths: dict[str, int] = {}
    ranked_by: dict[str, int] = {}
    for i in range(args.requests):
        out = ranker.recommend(user=users[i % len(users)], query=query(i), k=args.k)
        paths[out.path] = paths.get(out.path, 0) + 1
        ranked_by[str(out.ranked_by)] = ranked_by.get(str(out.ranked_by), 0) + 1
        for key in parts:
            parts[key].append(out.timings_ms[key])
    round_trips = calls[0] / args.requests
    client.transport.perform_request = inner
    baseline = []
    rec = Recommender(client, settings)
    for i in range(args.requests):
        baseline.append(rec.candidates(user=users[i % len(users)], query=query(i), k=args.k).timings_ms["total"])
    q = np.percentile(parts["total"], [50, 95, 99])
    b = np.percentile(baseline, [50, 99])
    result = {
        "requests": args.requests,
        "users": len(users),
        "pool": ranker.config.pool.to_dict(),
        "k": args.k,
        "rerank": args.rerank,
        "paths": paths,
        "round_trips_per_request": round(round_trips, 2),
        "model": f"{model.model_id}@{model.version}",
        "search_model": f"{search.model_id}@{search.version}" if search is not None else None,
        "ranked_by": ranked_by,
        "p50_ms": round(float(q[0]), 2),
        "p95_ms": round(float(q[1]), 2),
        "p99_ms": round(float(q[2]), 2),
        "mean_split_ms": {k: round(statistics.mean(v), 2) for k, v in parts.items()},
        "candidates_only_k_p50_ms": round(float(b[0]), 2),
        "candidates_only_k_p99_ms": round(float(b[1]), 2),
        "p50_ratio": round(float(q[0] / b[0]), 2),
        "p99_ratio": round(float(q[2] / b[1]), 2),
        "machine": f"{os.cpu_count()} cores",
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        s = result["mean_split_ms"]
        print(
            f"recommend(): {args.requests} requests over {len(users)} users ({paths}), pool "
            f"{sum(result['pool'].values())}, k {args.k}, model {result['model']}, rerank {args.rerank}, "
            f"{result['round_trips_per_request']} round trips per request"
        )
        print(f"  p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms, p99 {result['p99_ms']} ms")
        print(
            f"  mean split: retrieval {s['retrieval']} ms, features {s['features']} ms, model {s['model']} ms "
            f"(total {s['total']} ms)"
        )
        print(
            f"  baseline, candidates(k={args.k}) alone: p50 {result['candidates_only_k_p50_ms']} ms, p99 "
            f"{result['candidates_only_k_p99_ms']} ms; ratios p50 {result['p50_ratio']}x, p99 {result['p99_ratio']}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
