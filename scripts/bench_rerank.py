"""Reranking in Python against reranking inside Elasticsearch (the vecrank plugin), end to end.

For each window (the pool the model ranks, its trained pool scaled to 100, 500, 1,000 items by
default; the features stay the model's) the same users' requests go through ``Ranker.recommend``
twice, ``rerank="python"`` (the pool's vectors and fields come back to Python, which computes the
features and runs XGBoost) and ``rerank="plugin"`` (the one pool search carries a ``rescore``
section and Elasticsearch ranks every candidate). It prints p50/p99
latency and the bytes sent and received per request (request bodies as serialized, responses by
their Content-Length, else re-serialized), and the plugin/Python ratios measured in the same run.

Needs indices with a catalog, events, signals and an active model registered while the plugin was
installed (``scripts/quickstart.sh`` then ``vecrank plugin install`` and ``vecrank plugin attach
vecrank``, or a model registered after the install).

Usage:
    .venv/bin/python scripts/bench_rerank.py [--prefix vecrank] [--windows 100,500,1000] [--requests 300] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_recommend import connect  # noqa: E402


class WireCounter:
    """Counts the bytes a client sends and receives, by wrapping its ``perform_request``."""

    def __init__(self, client):
        import orjson

        self.sent = self.received = 0
        inner = client.perform_request

        def counted(method, path, **kwargs):
            body = kwargs.get("body")
            if body is not None:
                self.sent += len(body) if isinstance(body, (bytes, str)) else len(orjson.dumps(body))
            response = inner(method, path, **kwargs)
            length = response.meta.headers.get("content-length")
            self.received += int(length) if length else len(orjson.dumps(response.body))
            return response

        client.perform_request = counted

    def take(self) -> tuple[int, int]:
        out = (self.sent, self.received)
        self.sent = self.received = 0
        return out


def scaled_pool(pool, window: int):
    """The model's pool with every source scaled so that the sizes add up to about ``window``."""
    factor = window / max(1, pool.size)
    return dataclasses.replace(
        pool, **{f.name: max(0, round(getattr(pool, f.name) * factor)) for f in dataclasses.fields(pool)}
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", default="vecrank")
    parser.add_argument("--model-id", default="vecrank")
    parser.add_argument("--windows", default="100,500,1000")
    parser.add_argument("--requests", type=int, default=300, help="Requests per window and mode (users cycled).")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    settings, client, model, users = connect(args.prefix, args.model_id)

    from vecrank.rank import Recommender
    from vecrank.rank.ranker import Ranker

    wire = WireCounter(client)
    rows = []
    for window in [int(w) for w in args.windows.split(",")]:
        ranker = Ranker(Recommender(client, settings), model)
        ranker.config = dataclasses.replace(ranker.config, pool=scaled_pool(ranker.config.pool, window))
        if not ranker.plugin_usable():
            print(
                "error: the plugin is not installed, or the model has no plugin_features "
                "(vecrank plugin install; vecrank plugin attach MODEL)",
                file=sys.stderr,
            )
            return 1
        row: dict = {"window": window}
        for mode in ("python", "plugin"):
            for user in users[:20]:  # warm-up: caches, JIT, the plugin's model cache
                ranker.recommend(user=user, k=args.k, rerank=mode)
            wire.take()
            times, sent, received = [], 0, 0
            for i in range(args.requests):
                started = time.perf_counter()
                rec = ranker.recommend(user=users[i % len(users)], k=args.k, rerank=mode)
                times.append((time.perf_counter() - started) * 1000)
                s, r = wire.take()
                sent, received = sent + s, received + r
                assert rec.rerank == mode or rec.path not in model.training.get("paths", [rec.path])
            q = np.percentile(times, [50, 99])
            row[mode] = {
                "p50_ms": round(float(q[0]), 2),
                "p99_ms": round(float(q[1]), 2),
                "sent_kb": round(sent / args.requests / 1024, 1),
                "received_kb": round(received / args.requests / 1024, 1),
            }
        row["p50_ratio_plugin_vs_python"] = round(row["plugin"]["p50_ms"] / row["python"]["p50_ms"], 3)
        row["bytes_ratio_plugin_vs_python"] = round(
            (row["plugin"]["sent_kb"] + row["plugin"]["received_kb"])
            / (row["python"]["sent_kb"] + row["python"]["received_kb"]),
            3,
        )
        rows.append(row)
        if not args.json:
            p, e = row["python"], row["plugin"]
            print(
                f"window {window}: python p50 {p['p50_ms']} ms p99 {p['p99_ms']} ms, "
                f"{p['sent_kb']} KiB out / {p['received_kb']} KiB in | plugin p50 {e['p50_ms']} ms "
                f"p99 {e['p99_ms']} ms, {e['sent_kb']} KiB out / {e['received_kb']} KiB in | "
                f"plugin/python p50 {row['p50_ratio_plugin_vs_python']}, bytes {row['bytes_ratio_plugin_vs_python']}",
                flush=True,
            )
    result = {
        "model": f"{model.model_id}@{model.version}",
        "requests_per_cell": args.requests,
        "users": len(users),
        "k": args.k,
        "machine": f"{os.cpu_count()} cores",
        "windows": rows,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
