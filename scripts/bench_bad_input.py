#!/usr/bin/env python3
"""Good requests' p99 with a slow Elasticsearch, alone and while bad input arrives at 200 requests/s.

The goal of issue 13: *with Elasticsearch slow (a delaying proxy on loopback), good requests keep
their p99 within 1.2x while bad input arrives at 200 requests/s*. In one run this script

1. puts :class:`slowproxy.SlowProxy` in front of the cluster (each answer held ``--delay`` s);
2. starts ``vecrank serve`` as a child process (``--no-auth --rate-limit 0``) on that proxy, over
   ``--prefix`` (an index prefix with items and users), or over a small catalog it makes itself
   (``--items`` items, ``--users`` users with ten ratings each; deleted afterwards);
3. measures ``--concurrency`` closed-loop clients sending ``GET /recommendations?user=U&k=10``
   (the connection code of ``bench_serve.py``) in three phases of ``--seconds`` each: alone,
   with bad input, alone again. The bad input comes from a separate process, open loop at
   ``--bad-rps``, each request on a new connection, cycling through :data:`BAD`: a malformed
   JSON body, wrong types, unknown fields and parameters, over-long ids, an unknown event type,
   a body over the size limit, a filter value that does not fit its field;
4. prints p50/p99 of each phase and ``ratio = p99(with bad input) / p99(alone, both phases)``,
   with the statuses the bad input got (4xx; a 503 is a refusal at the worker's ``max_in_flight``
   before validation) and the bad rate achieved; ``met`` is the ratio goal alone.

Example::

    python scripts/bench_bad_input.py --delay 0.05 --seconds 20 --json > bad-input.json

Cluster settings come as for ``vecrank`` (``VECRANK_*`` variables, the config file, the local
node); the child service gets the cluster's credentials in its environment, never on its command
line, and nothing here prints them.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import Connection, percentile  # noqa: E402
from slowproxy import SlowProxy  # noqa: E402

_JSON = "Content-Type: application/json\r\n"


def _post(path: str, body: bytes, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\n{_JSON}Content-Length: {len(body)}\r\n{extra}"
        f"Connection: close\r\n\r\n"
    ).encode() + body


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode()


#: The bad requests, sent in turn: what a broken or hostile client sends. Each must get a 4xx.
BAD: list[tuple[str, bytes]] = [
    ("k not a number", _get("/recommendations?k=ten")),
    ("unknown parameter", _get("/recommendations?k=1&sort=asc")),
    ("id over 512 bytes", _get("/recommendations?k=1&user=" + "u" * 600)),
    ("filter value of the wrong type", _get("/recommendations?k=1&filter=item_id>=abc&filter=available=maybe")),
    ("malformed JSON", _post("/recommendations", b'{"k": 1, "user": ')),
    ("unknown field", _post("/recommendations", b'{"k": 1, "colour": "red"}')),
    ("k of the wrong type", _post("/recommendations", b'{"k": "10"}')),
    ("event without item", _post("/events", b'{"events": [{"user": "u1", "type": "click"}]}')),
    ("unknown event type", _post("/events", b'{"events": [{"user": "u1", "item": "i1", "type": "teleport"}]}')),
    ("event user over 512 bytes", _post("/events", b'{"events": [{"user": "' + b"x" * 600 + b'", "item": "i1"}]}')),
    (
        "body over the limit (Content-Length)",
        b"POST /events HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2000000\r\nConnection: close\r\n\r\n",
    ),
]


async def _send_bad(host: str, port: int, raw: bytes) -> int | str:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
    except (OSError, TimeoutError) as exc:
        return type(exc).__name__
    try:
        writer.write(raw)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 10)
        return int(line.split()[1]) if line.startswith(b"HTTP/") else "no answer"
    except (OSError, TimeoutError, ValueError, IndexError) as exc:
        return type(exc).__name__
    finally:
        writer.close()


def bad_input(host: str, port: int, rps: float, seconds: float, out: Any) -> None:
    """Open loop: one bad request every 1/rps s for ``seconds`` (run in its own process); puts
    ``{"sent", "rps", "statuses"}`` on the queue ``out``."""

    async def run() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        tasks: list[asyncio.Task] = []
        n = 0
        while loop.time() - started < seconds:
            due = started + n / rps
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            tasks.append(asyncio.create_task(_send_bad(host, port, BAD[n % len(BAD)][1])))
            n += 1
        elapsed = loop.time() - started
        statuses = await asyncio.gather(*tasks)
        by_kind: dict[str, Counter] = {}
        for i, status in enumerate(statuses):
            by_kind.setdefault(BAD[i % len(BAD)][0], Counter())[str(status)] += 1
        return {
            "sent": n,
            "rps": round(n / elapsed, 1),
            "statuses": dict(Counter(str(s) for s in statuses)),
            "by_kind": {k: dict(v) for k, v in by_kind.items()},
        }

    out.put(asyncio.run(run()))


async def good_load(host: str, port: int, paths: list[str], concurrency: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors: Counter = Counter()
    stop = time.monotonic() + seconds
    counter = iter(range(10**9))

    async def client() -> None:
        conn = Connection(host, port)
        try:
            while time.monotonic() < stop:
                path = paths[next(counter) % len(paths)]
                started = time.perf_counter()
                try:
                    status, _ = await conn.get(path)
                except (OSError, ConnectionError, asyncio.IncompleteReadError) as exc:
                    errors[type(exc).__name__] += 1
                    await conn.close()
                    continue
                if status == 200:
                    latencies.append((time.perf_counter() - started) * 1000)
                else:
                    errors[str(status)] += 1
        finally:
            await conn.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    latencies.sort()
    return {"latencies": latencies, "errors": dict(errors)}


def _summary(latencies: list[float], errors: dict[str, int], seconds: float) -> dict[str, Any]:
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": round(len(latencies) / seconds, 1),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "max_ms": round(latencies[-1], 1) if latencies else None,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make_world(client, settings, items: int, users: int) -> list[str]:
    """A catalog of ``items`` and ``users`` users with ten ratings each; returns the user ids."""
    from vecrank.ingest.embed import Embedder
    from vecrank.ingest.events import ingest_events
    from vecrank.ingest.items import ItemSource, ingest_items
    from vecrank.rank.store import refresh_profiles

    words = ["space", "love", "war", "crime", "ghost", "dog", "music", "sport", "sea", "city", "robot", "magic"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "items.jsonl"
        with path.open("w") as f:
            for i in range(items):
                a, b = words[i % len(words)], words[(i * 7) % len(words)]
                f.write(json.dumps({"id": f"i{i}", "title": f"A {a} story with {b} number {i}"}) + "\n")
        ingest_items(client, settings, path, ItemSource(template="{title}"), embedder=Embedder(), progress=False)
        events = Path(tmp) / "events.jsonl"
        t0 = int(time.time()) - 86_400
        with events.open("w") as f:
            for u in range(users):
                for j in range(10):
                    row = {"user": f"u{u}", "item": f"i{(u * 13 + j * 31) % items}", "type": "rating"}
                    f.write(json.dumps({**row, "value": 1 + (u + j) % 5, "timestamp": t0 + u * 60 + j}) + "\n")
        ingest_events(client, settings, events, progress=False, refresh_states=refresh_profiles)
    return [f"u{u}" for u in range(users)]


def _child_env(settings, es_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VECRANK_ES_")}
    env.update({"VECRANK_ES_URL": es_url, "VECRANK_INDEX_PREFIX": settings.index_prefix, "HF_HUB_OFFLINE": "1"})
    for name in ("es_api_key", "es_user", "es_password", "es_ca_certs"):
        value = getattr(settings, name)
        if value:
            env[settings.env_name(name)] = str(value)
    if not settings.es_verify_certs:
        env["VECRANK_ES_VERIFY_CERTS"] = "false"
    return env


def _wait_healthy(port: int, child: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"vecrank serve exited with {child.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError("vecrank serve did not become healthy")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from vecrank.client import make_client
    from vecrank.settings import Settings

    base = Settings.load()
    client = make_client(base)
    prefix = args.prefix or f"bench-bad-{uuid.uuid4().hex[:8]}"
    settings = dataclasses.replace(base, index_prefix=prefix)
    made = args.prefix is None
    url = urllib.parse.urlsplit(settings.es_url)
    proxy = SlowProxy(url.hostname, url.port or (443 if url.scheme == "https" else 9200))
    child = None
    try:
        if made:
            print(f"making {args.items} items and {args.users} users under prefix {prefix}", file=sys.stderr)
            users = _make_world(client, settings, args.items, args.users)
        else:
            users = [f"{u}" for u in range(1, args.users + 1)]
        port = _free_port()
        command = [sys.executable, "-m", "vecrank", "serve", "--port", str(port), "--no-auth", "--rate-limit", "0"]
        command += ["--threads", str(args.threads), "--no-exposures", "--no-feature-log"]
        child = subprocess.Popen(
            command,
            env=_child_env(settings, f"{url.scheme}://127.0.0.1:{proxy.port}"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE if args.quiet_service else None,
        )
        _wait_healthy(port, child)
        paths = [f"/recommendations?{urllib.parse.urlencode({'user': u, 'k': 10})}" for u in users]
        proxy.delay = args.delay
        asyncio.run(good_load("127.0.0.1", port, paths, args.concurrency, args.warmup))  # not measured
        print(f"phase 1/3: good requests alone ({args.seconds:g} s)", file=sys.stderr)
        alone1 = asyncio.run(good_load("127.0.0.1", port, paths, args.concurrency, args.seconds))
        print(f"phase 2/3: with bad input at {args.bad_rps:g}/s", file=sys.stderr)
        queue = multiprocessing.get_context("spawn").Queue()
        sender = multiprocessing.get_context("spawn").Process(
            target=bad_input, args=("127.0.0.1", port, args.bad_rps, args.seconds, queue)
        )
        sender.start()
        time.sleep(0.5)  # the sender's interpreter starts
        mixed = asyncio.run(good_load("127.0.0.1", port, paths, args.concurrency, args.seconds - 0.5))
        bad = queue.get(timeout=args.seconds + 60)
        sender.join(30)
        print("phase 3/3: good requests alone again", file=sys.stderr)
        alone2 = asyncio.run(good_load("127.0.0.1", port, paths, args.concurrency, args.seconds))
    finally:
        if child is not None:
            child.terminate()
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
        proxy.close()
        if made and not args.keep:
            names = list(client.indices.get(index=f"{prefix}-*", expand_wildcards="all", ignore_unavailable=True))
            if names:
                client.indices.delete(index=",".join(names))
        client.close()
    pooled = sorted(alone1["latencies"] + alone2["latencies"])
    alone = _summary(pooled, {**alone1["errors"], **alone2["errors"]}, 2 * args.seconds)
    with_bad = _summary(mixed["latencies"], mixed["errors"], args.seconds - 0.5)
    ratio = with_bad["p99_ms"] / alone["p99_ms"] if alone["p99_ms"] else float("nan")
    bad_4xx = sum(n for s, n in bad["statuses"].items() if s.isdigit() and 400 <= int(s) < 500)
    bad_503 = bad["statuses"].get("503", 0)
    return {
        "setup": {
            "delay_s": args.delay,
            "concurrency": args.concurrency,
            "seconds_per_phase": args.seconds,
            "bad_rps_target": args.bad_rps,
            "threads": args.threads,
            "users": len(users),
            "prefix": prefix if not made else None,
            "cpus": os.cpu_count(),
            "load_avg": os.getloadavg(),
        },
        "alone": alone,
        "alone_phases_p99_ms": [
            round(percentile(alone1["latencies"], 99), 1),
            round(percentile(alone2["latencies"], 99), 1),
        ],
        "with_bad_input": with_bad,
        # 503: refused at the worker's max-in-flight limit before validation (Retry-After: 1)
        "bad_input": {**bad, "answered_4xx": bad_4xx, "refused_503": bad_503},
        "p99_ratio": round(ratio, 3),
        "goal": "p99_ratio <= 1.2",
        "met": bool(ratio <= 1.2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delay", type=float, default=0.05, help="seconds the proxy holds each answer [0.05]")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each measured phase [20]")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds first [5]")
    parser.add_argument("--concurrency", type=int, default=4, help="closed-loop good clients [4]")
    parser.add_argument("--bad-rps", type=float, default=200.0, help="bad requests per second [200]")
    parser.add_argument("--threads", type=int, default=8, help="the service's --threads [8]")
    parser.add_argument("--prefix", default=None, help="an index prefix with items and users 1..--users")
    parser.add_argument("--items", type=int, default=300, help="items of the catalog made without --prefix")
    parser.add_argument("--users", type=int, default=100, help="users (made without --prefix) [100]")
    parser.add_argument("--keep", action="store_true", help="keep the catalog made without --prefix")
    parser.add_argument("--quiet-service", action="store_true", help="hide the service's log")
    parser.add_argument("--json", dest="as_json", action="store_true", help="print the result as JSON on stdout")
    args = parser.parse_args(argv)
    result = run(args)
    if args.as_json:
        print(json.dumps(result, indent=2))
        return 0
    a, b = result["alone"], result["with_bad_input"]
    print(f"Elasticsearch behind a {args.delay * 1000:g} ms proxy; {args.concurrency} good clients")
    print(f"alone:          {a['requests']} requests, p50 {a['p50_ms']} ms, p99 {a['p99_ms']} ms, errors {a['errors']}")
    print(f"with bad input: {b['requests']} requests, p50 {b['p50_ms']} ms, p99 {b['p99_ms']} ms, errors {b['errors']}")
    bad = result["bad_input"]
    print(f"bad input: {bad['sent']} sent at {bad['rps']}/s, statuses {bad['statuses']}")
    print(f"p99 ratio {result['p99_ratio']} (goal <= 1.2): {'met' if result['met'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
