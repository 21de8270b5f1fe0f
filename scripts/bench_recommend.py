"""End-to-end ``Ranker.recommend()`` latency: retrieval, features and model, per request.

Runs on indices that already hold a catalog, events and an active model (for example those that
``bench_retrieve.py --keep`` and ``vecrank --index-prefix benchret evaluate --activate`` leave):
at least 1,000 requests over the users, cycled, after a warm-up; prints p50/p95/p99 of the total
and the mean split across retrieval, features and model, next to the same requests' candidate
retrieval alone (the baseline measured in the same run).

Usage:
    .venv/bin/python scripts/bench_recommend.py --prefix vecrank [--requests 1220] [--pool 100] [--rerank auto|python|plugin] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", default="benchret")
    parser.add_argument("--model-id", default="vecrank")
    parser.add_argument("--requests", type=int, default=1220)
    parser.add_argument("--pool", type=int, default=100)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--rerank", choices=["auto", "python", "plugin"], default="auto")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from elasticsearch import helpers

    from vecrank.client import make_client
    from vecrank.rank import Recommender
    from vecrank.rank.model import Registry
    from vecrank.rank.ranker import Ranker
    from vecrank.settings import Settings

    settings = dataclasses.replace(Settings.load(), index_prefix=args.prefix)
    client = make_client(settings)
    model = Registry(client, settings).get(args.model_id)
    users = sorted(h["_id"] for h in helpers.scan(client, index=settings.index("users"), size=500, _source=False))
    ranker = Ranker(Recommender(client, settings), model, pool=args.pool, rerank=args.rerank)
    for user in users[:50]:
        ranker.recommend(user=user, k=args.k)
    parts: dict[str, list[float]] = {"total": [], "retrieval": [], "features": [], "model": []}
    for i in range(args.requests):
        t = ranker.recommend(user=users[i % len(users)], k=args.k).timings_ms
        for key in parts:
            parts[key].append(t[key])
    baseline = []
    rec = Recommender(client, settings)
    for i in range(args.requests):
        baseline.append(rec.candidates(user=users[i % len(users)], k=args.k).timings_ms["total"])
    q = np.percentile(parts["total"], [50, 95, 99])
    result = {"requests": args.requests, "users": len(users), "pool": args.pool, "k": args.k, "rerank": args.rerank,
              "model": f"{model.model_id}@{model.version}", "p50_ms": round(float(q[0]), 2),
              "p95_ms": round(float(q[1]), 2), "p99_ms": round(float(q[2]), 2),
              "mean_split_ms": {k: round(statistics.mean(v), 2) for k, v in parts.items()},
              "candidates_only_k_p50_ms": round(float(np.percentile(baseline, 50)), 2),
              "machine": f"{os.cpu_count()} cores"}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        s = result["mean_split_ms"]
        print(f"recommend(): {args.requests} requests over {len(users)} users, pool {args.pool}, k {args.k}, "
              f"model {result['model']}, rerank {args.rerank}")
        print(f"  p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms, p99 {result['p99_ms']} ms")
        print(f"  mean split: retrieval {s['retrieval']} ms, features {s['features']} ms, model {s['model']} ms "
              f"(total {s['total']} ms)")
        print(f"  baseline, candidates(k={args.k}) alone: p50 {result['candidates_only_k_p50_ms']} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
