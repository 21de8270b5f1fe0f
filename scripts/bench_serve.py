#!/usr/bin/env python3
"""Load test for a running ``vecrank serve``: latency percentiles and throughput per concurrency.

Run it as its own process next to the service (loopback), for example::

    vecrank serve --port 8080 --no-auth --rate-limit 0 &      # or with keys: --api-key below
    python scripts/bench_serve.py --api http://127.0.0.1:8080 --users-range 1:610 --concurrency 1,8,32

For each concurrency level C, C closed-loop clients (one keep-alive HTTP/1.1 connection each,
asyncio, so the load generator itself stays light) send ``GET /recommendations?user=U&k=K`` for
users drawn in turn from the list, first ``--warmup`` requests that are not measured, then until
``--requests`` are done or ``--seconds`` have passed, whichever comes first. Reported per level:
requests, errors (any status other than 200, or a broken connection), p50/p90/p99/max latency
measured at the client, and throughput (completed requests / wall time). The load average before
and after each level is recorded, so a busy machine shows in the results.

``--searches FILE`` (a search log, as ``vecrank evaluate --task search`` reads it) gives every
request one of the log's queries as well (``&query=``, cycled over the users: the search page's
profile+query path). ``--baseline FILE``, the ``--json`` output of a run against the baseline
(for example the commit before a change, served on the same node in the same session), adds the
ratios against it: saturated throughput (the best level's) and each level's throughput and p99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any


class Connection:
    """One keep-alive HTTP/1.1 connection; ``get`` returns (status, body bytes)."""

    def __init__(self, host: str, port: int, api_key: str | None = None):
        self.host, self.port = host, port
        self.auth = f"Authorization: Bearer {api_key}\r\n" if api_key else ""
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def get(self, path: str) -> tuple[int, bytes]:
        if self.writer is None:
            await self._open()
        self.writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\nAccept: application/json\r\n{self.auth}\r\n".encode()
        )
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("connection closed by the server")
        status = int(status_line.split()[1])
        length, close = 0, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value.strip())
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        body = await self.reader.readexactly(length) if length else b""
        if close:
            await self.close()
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(round(q / 100 * len(sorted_values) + 0.5))))
    return sorted_values[rank - 1]


async def run_level(
    host: str,
    port: int,
    paths: list[str],
    *,
    concurrency: int,
    warmup: int,
    max_requests: int,
    max_seconds: float,
    api_key: str | None = None,
) -> dict[str, Any]:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    counter = {"next": 0, "warm": 0}
    conns = [Connection(host, port, api_key) for _ in range(concurrency)]

    def next_path() -> str:
        i = counter["next"]
        counter["next"] += 1
        return paths[i % len(paths)]

    async def warm(conn: Connection) -> None:
        while counter["warm"] < warmup:
            counter["warm"] += 1
            try:
                await conn.get(next_path())
            except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError):
                await conn.close()

    await asyncio.gather(*(warm(c) for c in conns))
    started = time.perf_counter()
    deadline = started + max_seconds
    done = {"n": 0}

    async def worker(conn: Connection) -> None:
        while done["n"] < max_requests and time.perf_counter() < deadline:
            done["n"] += 1
            t = time.perf_counter()
            try:
                status, _ = await conn.get(next_path())
                if status != 200:
                    errors[f"HTTP {status}"] = errors.get(f"HTTP {status}", 0) + 1
            except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                await conn.close()
                continue
            latencies.append((time.perf_counter() - t) * 1000)

    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - started
    for c in conns:
        await c.close()
    lat = sorted(latencies)
    return {
        "concurrency": concurrency,
        "requests": len(lat) + sum(errors.values()),
        "ok": len(lat),
        "errors": errors,
        "seconds": round(elapsed, 2),
        "throughput_rps": round(len(lat) / elapsed, 1) if elapsed else None,
        "p50_ms": round(percentile(lat, 50), 1),
        "p90_ms": round(percentile(lat, 90), 1),
        "p99_ms": round(percentile(lat, 99), 1),
        "max_ms": round(lat[-1], 1) if lat else None,
        "mean_ms": round(statistics.fmean(lat), 1) if lat else None,
    }


def ratios(results: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """This run against the baseline's: the saturated throughput (each run's best level) and,
    for every concurrency both measured, the throughput and p99 ratios.

    Example:
        >>> run = {"levels": [{"concurrency": 8, "throughput_rps": 120.0, "p99_ms": 90.0}]}
        >>> base = {"levels": [{"concurrency": 8, "throughput_rps": 48.0, "p99_ms": 300.0}]}
        >>> ratios(run, base)
        {'saturated_throughput_ratio': 2.5, 'levels': [{'concurrency': 8, 'throughput_ratio': 2.5, 'p99_ratio': 0.3}]}
    """
    best = lambda r: max((lvl["throughput_rps"] or 0.0) for lvl in r["levels"])  # noqa: E731 - a one-line helper
    theirs = {lvl["concurrency"]: lvl for lvl in baseline["levels"]}
    levels = []
    for lvl in results["levels"]:
        other = theirs.get(lvl["concurrency"])
        if other and other["throughput_rps"] and other["p99_ms"]:
            levels.append(
                {
                    "concurrency": lvl["concurrency"],
                    "throughput_ratio": round((lvl["throughput_rps"] or 0.0) / other["throughput_rps"], 2),
                    "p99_ratio": round(lvl["p99_ms"] / other["p99_ms"], 2),
                }
            )
    base = best(baseline)
    return {"saturated_throughput_ratio": round(best(results) / base, 2) if base else None, "levels": levels}


def _queries(path: str) -> list[str]:
    """The distinct queries of a search log, in a fixed order."""
    # lazy: the log's reader is vecrank's (one parser of search logs); only --searches needs it
    from vecrank.rank.search_eval import normalise_query, read_searches

    return sorted({normalise_query(s.query) for s in read_searches(path)})


def _users(args) -> list[str]:
    if args.users_file:
        return [line.strip() for line in Path(args.users_file).read_text().splitlines() if line.strip()]
    lo, _, hi = args.users_range.partition(":")
    return [str(u) for u in range(int(lo), int(hi) + 1)]


def _health(host: str, port: int) -> dict[str, Any]:
    async def once():
        conn = Connection(host, port)
        try:
            status, body = await conn.get("/health")
            return {**json.loads(body), "http_status": status}
        finally:
            await conn.close()

    return asyncio.run(once())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", default="http://127.0.0.1:8080")
    parser.add_argument("--users-range", default="1:610", help="LO:HI numeric user ids [1:610, MovieLens]")
    parser.add_argument("--users-file", default=None, help="one user id per line (instead of --users-range)")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated levels")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=50, help="unmeasured requests per level")
    parser.add_argument("--requests", type=int, default=2000, help="at most this many measured requests per level")
    parser.add_argument("--seconds", type=float, default=60.0, help="at most this long per level")
    parser.add_argument("--json", dest="json_out", default=None, help="also write the results here")
    parser.add_argument(
        "--searches",
        default=None,
        help="a search log: each request also carries one of its queries (the profile+query path)",
    )
    parser.add_argument("--baseline", default=None, help="a --json output of the baseline's run: adds the ratios")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("VECRANK_SERVE_API_KEY"),
        help="an API key with the recommend scope [env VECRANK_SERVE_API_KEY]; none for a service "
        "run with --no-auth. Serve with --rate-limit 0, or the per-key limit is what is measured",
    )
    args = parser.parse_args(argv)

    url = urllib.parse.urlsplit(args.api)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    users = _users(args)
    queries = _queries(args.searches) if args.searches else [None]
    paths = [
        "/recommendations?"
        + urllib.parse.urlencode({"user": u, "k": args.k, **({"query": q} if q is not None else {})})
        for u, q in ((users[i % len(users)], queries[i % len(queries)]) for i in range(max(len(users), len(queries))))
    ]
    baseline = json.loads(Path(args.baseline).read_text()) if args.baseline else None
    health = _health(host, port)
    if health.get("http_status") != 200:
        print(f"error: {args.api}/health answered {health.get('http_status')}: {health}", file=sys.stderr)
        return 1
    results = {
        "api": args.api,
        "users": len(users),
        "k": args.k,
        "queries": len(queries) if args.searches else 0,
        "cpus": os.cpu_count(),
        "default_model": health.get("default_model"),
        "experiment": (health.get("experiment") or {}).get("id"),
        "levels": [],
    }
    for level in (int(x) for x in args.concurrency.split(",")):
        before = os.getloadavg()[0]
        out = asyncio.run(
            run_level(
                host,
                port,
                paths,
                concurrency=level,
                warmup=args.warmup,
                max_requests=args.requests,
                max_seconds=args.seconds,
                api_key=args.api_key,
            )
        )
        out["loadavg_1m_before"], out["loadavg_1m_after"] = round(before, 2), round(os.getloadavg()[0], 2)
        results["levels"].append(out)
        print(
            f"c={level:>3}  {out['ok']:>6} ok  {sum(out['errors'].values()):>4} errors  "
            f"p50 {out['p50_ms']:>7.1f} ms  p90 {out['p90_ms']:>7.1f}  p99 {out['p99_ms']:>7.1f}  "
            f"max {out['max_ms']:>7.1f}  {out['throughput_rps']:>6.1f} req/s  "
            f"(load {out['loadavg_1m_before']:.2f} -> {out['loadavg_1m_after']:.2f})",
            flush=True,
        )
    if baseline is not None:
        results["against_baseline"] = ratios(results, baseline)
        print(json.dumps(results["against_baseline"]), flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))
    return 0 if all(not lvl["errors"] for lvl in results["levels"]) else 1


if __name__ == "__main__":
    sys.exit(main())
