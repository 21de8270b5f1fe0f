#!/usr/bin/env python3
"""What `vecrank cf fit` costs: fitting, and rewriting every item into the next index version.

A synthetic catalog of ``--items`` items (random unit text vectors of the model's dimensions, a
title) and ``--events`` click events from ``--users`` users is written into a throw-away index
prefix; then, in the same run:

* baseline — ``vecrank index reindex`` of that catalog with the same model (every document and
  its text vector copied into the next version, the HNSW graph rebuilt): the cost of any full
  rewrite of the items;
* ``cf fit`` — the ALS fit and the neighbour lists, then the rewrite with the collaborative
  vectors and neighbours added (a second HNSW graph).

It prints items per second for both, their ratio, and the time a 1M-item catalog would take at
the measured rate (the rewrite scales linearly with the items; HNSW construction a little worse).
``--json`` for scripts. Run on a local node: ``vecrank es up`` first.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from dataclasses import replace

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from elasticsearch import helpers

    from vecrank.client import make_client
    from vecrank.ingest import indices
    from vecrank.ingest.cf import CFConfig, fit_index
    from vecrank.ingest.items import packs_vectors, vector_value
    from vecrank.ingest.reindex import reindex
    from vecrank.settings import Settings

    settings = replace(Settings.load(), index_prefix=f"bench-cf-{uuid.uuid4().hex[:8]}")
    client = make_client(settings)
    rng = np.random.default_rng(args.seed)
    model_name = "synthetic"
    spec = indices.IndexSpec(model=model_name, dims=args.dims, template="{title}")
    live = indices.create_version(client, settings, spec)
    packed = packs_vectors(client)
    vectors = rng.normal(size=(args.items, args.dims)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

    def docs():
        for n in range(args.items):
            yield {
                "_index": live,
                "_id": f"i{n}",
                "_source": {
                    "item_id": f"i{n}",
                    "title": f"item {n}",
                    "text": f"item {n}",
                    "embedding": vector_value(vectors[n], packed),
                },
            }

    helpers.bulk(client, docs(), chunk_size=1000)
    client.indices.refresh(index=live)
    # Zipf-like popularity so that the neighbour lists look like a real catalog's.
    popularity = 1.0 / np.arange(1, args.items + 1) ** 0.8
    items = rng.choice(args.items, size=args.events, p=popularity / popularity.sum())
    users = rng.integers(0, args.users, size=args.events)
    events = [
        {"user_id": f"u{u}", "item_id": f"i{i}", "type": "click", "value": None, "timestamp": 1_600_000_000_000 + t}
        for t, (u, i) in enumerate(zip(users, items))
    ]

    class _Same:  # the live model, for a reindex that copies every vector
        similarity = "cosine"

        def __init__(self, name: str, dims: int):
            self.model_name, self.dimensions = name, dims

        def encode(self, texts, **_):
            raise AssertionError("a same-model reindex copies vectors; nothing is embedded")

    try:
        started = time.monotonic()
        reindex(client, settings, embedder=_Same(model_name, args.dims), verify_sample=0)
        baseline_s = time.monotonic() - started
        started = time.monotonic()
        summary = fit_index(client, settings, CFConfig(), events=events)
        cf_s = time.monotonic() - started
    finally:
        for name in client.indices.get(index=f"{settings.index_prefix}-*"):
            client.indices.delete(index=name)
    result = {
        "items": args.items,
        "events": args.events,
        "users": args.users,
        "dims": args.dims,
        "baseline_reindex_s": round(baseline_s, 2),
        "baseline_items_per_s": round(args.items / baseline_s, 1),
        "cf_fit_s": round(cf_s, 2),
        "cf_fit_model_s": summary.seconds_fit,
        "cf_write_s": summary.seconds_write,
        "cf_items_per_s": round(args.items / cf_s, 1),
        "ratio_to_baseline": round(cf_s / baseline_s, 3),
        "with_vector": summary.with_vector,
        "estimated_1m_items_hours": round(cf_s / args.items * 1_000_000 / 3600, 2),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:28s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
